//! The vault emulator over real HTTP: the article's flow, its error shapes, and every knob.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use vault_emulator::{
    DEFAULT_STORAGE_ACCOUNT_ID, DEFAULT_SUBSCRIPTION, DEFAULT_VAULT_ID, EmulatorConfig,
    EmulatorError, FaultSettings, InProgressSpelling, RunningEmulator, ThrottleSettings,
};

const V2021: &str = "2021-01-01";
const V2026: &str = "2026-06-01";
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures");

struct Env {
    emulator: RunningEmulator,
    http: reqwest::Client,
    base: String,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
    }

    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }
}

/// Instant operations and no throttling, unless a test wants them.
fn fast_config() -> EmulatorConfig {
    let mut config = EmulatorConfig::default();
    config.behavior.latency = Duration::ZERO;
    config.behavior.throttle = None;
    config
}

fn account_id(name: &str) -> String {
    format!(
        "/subscriptions/{DEFAULT_SUBSCRIPTION}/resourceGroups/RG-BlobBackup/providers/Microsoft.Storage/storageAccounts/{name}"
    )
}

fn policy_id(name: &str) -> String {
    format!("{DEFAULT_VAULT_ID}/backupPolicies/{name}")
}

/// A backup instance body as the article builds it (vaulted when containers are given).
fn instance(account: &str, containers: Option<&[&str]>) -> Value {
    let mut policy = json!({"policyId": policy_id(if containers.is_some() { "BlobVaulted-Policy" } else { "BlobBackup-Policy" })});
    if let Some(list) = containers {
        policy["policyParameters"] = json!({"backupDatasourceParametersList": [
            {"objectType": "BlobBackupDatasourceParameters", "containersList": list}]});
    }
    json!({
        "objectType": "BackupInstance",
        "dataSourceInfo": {
            "datasourceType": "Microsoft.Storage/storageAccounts/blobServices",
            "objectType": "Datasource",
            "resourceID": account_id(account),
            "resourceLocation": "westus",
            "resourceName": account,
            "resourceType": "Microsoft.Storage/storageAccounts",
            "resourceUri": ""
        },
        "policyInfo": policy
    })
}

fn fixture(path: &str) -> Value {
    let text = std::fs::read_to_string(Path::new(FIXTURES).join(path)).unwrap();
    serde_json::from_str(&text).unwrap()
}

impl Env {
    async fn start(config: EmulatorConfig) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let emulator = RunningEmulator::start(config, SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        let base = emulator
            .base_url()
            .as_str()
            .trim_end_matches('/')
            .to_owned();
        Self {
            emulator,
            http: reqwest::Client::new(),
            base,
        }
    }

    async fn fast() -> Self {
        Self::start(fast_config()).await
    }

    fn vault_url(&self, rest: &str, version: &str) -> String {
        format!(
            "{}{DEFAULT_VAULT_ID}{rest}?api-version={version}",
            self.base
        )
    }

    fn instance_url(&self, name: &str, version: &str) -> String {
        self.vault_url(&format!("/backupInstances/{name}"), version)
    }

    async fn raw(&self, request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn call(&self, method: Method, url: &str, body: Option<&Value>) -> Answer {
        let mut request = self
            .http
            .request(method, url)
            .bearer_auth(self.emulator.token());
        if let Some(body) = body {
            request = request.json(body);
        }
        self.raw(request).await
    }

    /// POSTs an (empty) validateForBackup to `url`: its status and the writes left it reports
    /// (empty when none).
    async fn spend_a_write(&self, url: &str) -> (StatusCode, String) {
        let answer = self.call(Method::POST, url, Some(&json!({}))).await;
        let left = answer
            .headers
            .get("x-ms-ratelimit-remaining-subscription-writes")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        (answer.status, left)
    }

    async fn get(&self, url: &str) -> Answer {
        self.call(Method::GET, url, None).await
    }

    /// The `properties` of an instance as GET answers them.
    async fn props(&self, name: &str) -> Value {
        let answer = self.get(&self.instance_url(name, V2026)).await;
        assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
        answer.body["properties"].clone()
    }

    async fn put(&self, name: &str, props: &Value) -> Answer {
        let url = self.instance_url(name, V2026);
        self.call(Method::PUT, &url, Some(&json!({"properties": props})))
            .await
    }

    async fn validate(&self, props: &Value) -> Answer {
        let url = self.vault_url("/validateForBackup", V2026);
        self.call(Method::POST, &url, Some(&json!({"backupInstance": props})))
            .await
    }

    async fn admin(&self, method: Method, path: &str, body: Option<&Value>) -> Answer {
        let mut request = self
            .http
            .request(method, format!("{}/_emulator/{path}", self.base));
        if let Some(body) = body {
            request = request.json(body);
        }
        self.raw(request).await
    }

    /// Polls an Azure-AsyncOperation URL until the operation is no longer running.
    async fn finish(&self, status_url: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let answer = self.get(status_url).await;
            assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
            let status = answer.body["status"].as_str().unwrap().to_owned();
            if status != "Inprogress" && status != "InProgress" {
                return answer.body;
            }
            assert!(Instant::now() < deadline, "operation still running");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// JSON key paths with the type found there (`[]` marks array elements).
fn shape(value: &Value) -> BTreeMap<String, &'static str> {
    fn walk(value: &Value, path: String, out: &mut BTreeMap<String, &'static str>) {
        let kind = match value {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(items) => {
                items.iter().for_each(|i| walk(i, format!("{path}[]"), out));
                "array"
            }
            Value::Object(map) => {
                for (k, v) in map {
                    walk(v, format!("{path}.{k}"), out);
                }
                "object"
            }
        };
        out.insert(path, kind);
    }
    let mut out = BTreeMap::new();
    walk(value, String::new(), &mut out);
    out
}

fn keys(value: &Value) -> BTreeSet<String> {
    shape(value).into_keys().collect()
}

#[tokio::test]
async fn article_flow_end_to_end() {
    // The default config (ARM's write budget) with a short latency.
    let mut config = EmulatorConfig::default();
    config.behavior.latency = Duration::from_millis(150);
    let env = Env::start(config).await;
    let article: Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(FIXTURES).join("azure/article/put-request.json"))
            .unwrap()
            .replace(
                "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxxx",
                DEFAULT_SUBSCRIPTION,
            ),
    )
    .unwrap();
    // The article validates its body with the same properties it later PUTs.
    let validate_url = format!(
        "{}/Subscriptions/{DEFAULT_SUBSCRIPTION}/resourceGroups/TestBkpVaultRG/providers/Microsoft.DataProtection/backupVaults/testBkpVault/validateForBackup?api-version={V2021}",
        env.base
    );
    let request = env
        .http
        .post(&validate_url)
        .bearer_auth(env.emulator.token())
        .header("x-ms-client-request-id", "client-id-1")
        .json(&json!({"backupInstance": article["properties"]}));
    let validate = env.raw(request).await;
    assert_eq!(validate.status, StatusCode::ACCEPTED, "{:?}", validate.body);
    assert_eq!(validate.header("content-length"), "0");
    assert_eq!(
        validate.header("x-ms-correlation-request-id"),
        "client-id-1"
    );
    assert!(!validate.header("x-ms-request-id").is_empty());
    assert_eq!(
        validate.header("x-ms-ratelimit-remaining-subscription-writes"),
        "199"
    );
    assert_eq!(validate.header("retry-after"), "1");
    let status_url = validate.header("azure-asyncoperation").to_owned();
    let location = validate.header("location").to_owned();
    let prefix = format!(
        "{}/subscriptions/{DEFAULT_SUBSCRIPTION}/providers/Microsoft.DataProtection/locations/westus/",
        env.base
    );
    assert!(
        status_url.starts_with(&format!("{prefix}operationStatus/")),
        "{status_url}"
    );
    assert!(
        status_url.ends_with(&format!("==?api-version={V2021}")),
        "{status_url}"
    );
    assert!(
        location.starts_with(&format!("{prefix}operationResults/")),
        "{location}"
    );

    let running = env.get(&status_url).await;
    assert_eq!(running.body["status"], "Inprogress");
    assert_eq!(running.body["endTime"], "0001-01-01T00:00:00");
    assert_eq!(
        shape(&running.body),
        shape(&fixture("azure/article/operation-status-inprogress.json"))
    );
    let pending = env.get(&location).await;
    assert_eq!(pending.status, StatusCode::ACCEPTED);
    assert_eq!(pending.header("location"), location);
    let done = env.finish(&status_url).await;
    assert_eq!(done["status"], "Succeeded");
    assert_eq!(
        shape(&done),
        shape(&fixture("azure/article/operation-status-succeeded.json"))
    );
    let result = env.get(&location).await;
    assert_eq!(result.status, StatusCode::OK);
    // 2021-01-01 answers without objectType, as its example shows.
    assert_eq!(
        keys(&result.body),
        BTreeSet::from([String::new(), ".jobId".into()])
    );

    // PUT with the article's body, including its lower-case `datasourceinfo`.
    let name = "msblobbackup-f2df34eb-5628-4570-87b2-0331d797c67d";
    let url = env.instance_url(name, V2021);
    let created = env.call(Method::PUT, &url, Some(&article)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert!(created.headers.get("location").is_none());
    let put_status = created.header("azure-asyncoperation").to_owned();
    let expected = fixture("azure/article/put-created-201.json")["body"].clone();
    assert_eq!(shape(&created.body), shape(&expected));
    assert_eq!(
        created.body["properties"]["dataSourceInfo"]["resourceID"],
        account_id("msblobbackup")
    );
    for field in [
        "currentProtectionState",
        "provisioningState",
        "protectionStatus",
        "friendlyName",
    ] {
        assert_eq!(
            created.body["properties"][field], expected["properties"][field],
            "{field}"
        );
    }
    let configuring = env.get(&url).await;
    assert_eq!(
        configuring.body["properties"]["currentProtectionState"],
        "ConfiguringProtection"
    );
    assert_eq!(env.finish(&put_status).await["status"], "Succeeded");
    let configured = env.get(&url).await;
    assert_eq!(configured.status, StatusCode::OK);
    assert_eq!(
        configured.body["properties"]["protectionStatus"]["status"],
        "ProtectionConfigured"
    );
    assert_eq!(
        configured.body["properties"]["currentProtectionState"],
        "ProtectionConfigured"
    );
    assert_eq!(
        configured.body["properties"]["provisioningState"],
        "Succeeded"
    );

    let again = env.call(Method::PUT, &url, Some(&article)).await;
    assert_eq!(again.status, StatusCode::OK);
    assert!(again.headers.get("azure-asyncoperation").is_none());

    let deleting = env.call(Method::DELETE, &url, None).await;
    assert_eq!(deleting.status, StatusCode::ACCEPTED);
    assert_eq!(deleting.header("content-length"), "0");
    assert!(
        deleting
            .header("x-ms-ratelimit-remaining-subscription-deletes")
            .parse::<u64>()
            .is_ok()
    );
    assert_eq!(deleting.header("retry-after"), "1");
    let delete_location = deleting.header("location").to_owned();
    assert_eq!(
        env.get(&url).await.body["properties"]["provisioningState"],
        "Deleting"
    );
    assert_eq!(
        env.finish(deleting.header("azure-asyncoperation")).await["status"],
        "Succeeded"
    );
    assert_eq!(
        env.get(&delete_location).await.status,
        StatusCode::NO_CONTENT
    );
    let gone = env.get(&url).await;
    assert_eq!(
        (gone.status, gone.code()),
        (StatusCode::NOT_FOUND, "ResourceNotFound")
    );
    assert_eq!(
        env.call(Method::DELETE, &url, None).await.status,
        StatusCode::NO_CONTENT
    );
    assert!(env.emulator.admin().instances().is_empty());
}

#[tokio::test]
async fn already_protected_answers_like_the_article() {
    let env = Env::fast().await;
    assert_eq!(
        env.put("held", &instance("msblobbackup", None))
            .await
            .status,
        StatusCode::CREATED
    );
    let answer = env.validate(&instance("msblobbackup", None)).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        shape(&answer.body),
        shape(&fixture("azure/article/validate-already-protected-400.json")["body"].clone())
    );
    let info = &answer.body["error"]["additionalInfo"][0]["info"];
    assert_eq!(
        answer.body["error"]["message"],
        format!("Datasource is already protected under the Backup vault {DEFAULT_VAULT_ID}.")
    );
    assert_eq!(
        info["recommendedAction"][0],
        format!(
            "Delete the backup instance held from the Backup vault {DEFAULT_VAULT_ID} to re-protect the datasource in any other vault."
        )
    );
    assert_eq!(
        info["properties"]["ActivityId"],
        answer.header("x-ms-correlation-request-id")
    );
    // A second instance for the same account is refused the same way; the holder may be re-PUT.
    assert_eq!(
        env.put("second", &instance("msblobbackup", None))
            .await
            .code(),
        "UserErrorDppDatasourceAlreadyProtected"
    );
    assert_eq!(
        env.put("held", &instance("msblobbackup", None))
            .await
            .status,
        StatusCode::OK
    );

    // Protection in a vault the emulator does not hold.
    let other_vault = "/subscriptions/99999999-9999-9999-9999-999999999999/resourceGroups/other/providers/Microsoft.DataProtection/backupVaults/elsewhere";
    env.admin(
        Method::POST,
        "storage-accounts",
        Some(&json!({"id": account_id("taken"), "location": "West US"})),
    )
    .await;
    let protect = json!({"storageAccountId": account_id("taken"), "vaultId": other_vault, "instanceName": "theirs"});
    assert_eq!(
        env.admin(Method::POST, "external-protections", Some(&protect))
            .await
            .status,
        StatusCode::OK
    );
    let answer = env.validate(&instance("taken", None)).await;
    assert!(
        answer.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(other_vault)
    );
    assert!(
        answer.body["error"]["additionalInfo"][0]["info"]["recommendedAction"][0]
            .as_str()
            .unwrap()
            .contains("theirs")
    );
    let url = format!(
        "external-protections?storageAccountId={}",
        account_id("taken")
    );
    assert_eq!(
        env.admin(Method::DELETE, &url, None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        env.validate(&instance("taken", None)).await.status,
        StatusCode::ACCEPTED
    );
}

#[tokio::test]
async fn missing_permission_fails_the_operation_until_granted() {
    let env = Env::fast().await;
    env.emulator
        .admin()
        .revoke_role(DEFAULT_STORAGE_ACCOUNT_ID)
        .unwrap();
    let answer = env.validate(&instance("msblobbackup", None)).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    let failed = env.finish(answer.header("azure-asyncoperation")).await;
    assert_eq!(failed["status"], "Failed");
    assert_eq!(
        shape(&failed),
        shape(&fixture(
            "azure/article/operation-status-failed-missing-permissions.json"
        ))
    );
    let detail = failed["error"]["additionalInfo"][0]["info"]["innerError"]["additionalInfo"]["DetailedNonLocalisedMessage"]
        .as_str()
        .unwrap();
    assert!(
        detail.contains("'Microsoft.Authorization/roleAssignments/read'"),
        "{detail}"
    );
    assert!(
        detail.contains(&format!(
            "{DEFAULT_STORAGE_ACCOUNT_ID}/providers/Microsoft.Authorization"
        )),
        "{detail}"
    );
    assert!(
        detail.contains("a8b24f84-f43c-45b3-aa54-e3f6d54d31a6"),
        "{detail}"
    );
    let result = env.get(answer.header("location")).await;
    assert_eq!(
        (result.status, result.code()),
        (
            StatusCode::BAD_REQUEST,
            "UserErrorMissingRequiredPermissions"
        )
    );

    // A PUT without the role creates the instance, whose configuration then fails.
    let created = env.put("bi", &instance("msblobbackup", None)).await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_eq!(
        env.finish(created.header("azure-asyncoperation")).await["status"],
        "Failed"
    );
    let status = &env.props("bi").await["protectionStatus"];
    assert_eq!(status["status"], "ConfiguringProtectionFailed");
    assert_eq!(
        status["errorDetails"]["code"],
        "UserErrorMissingRequiredPermissions"
    );

    let grant = json!({"storageAccountId": DEFAULT_STORAGE_ACCOUNT_ID});
    assert_eq!(
        env.admin(Method::POST, "role-assignments", Some(&grant))
            .await
            .status,
        StatusCode::OK
    );
    let retried = env.put("bi", &instance("msblobbackup", None)).await;
    assert_eq!(retried.status, StatusCode::OK);
    assert_eq!(
        env.finish(retried.header("azure-asyncoperation")).await["status"],
        "Succeeded"
    );
    let status = &env.props("bi").await["protectionStatus"];
    assert_eq!(status["status"], "ProtectionConfigured");
    assert!(status.get("errorDetails").is_none());
    env.call(Method::DELETE, &env.instance_url("bi", V2026), None)
        .await;
    let answer = env.validate(&instance("msblobbackup", None)).await;
    assert_eq!(
        env.finish(answer.header("azure-asyncoperation")).await["status"],
        "Succeeded"
    );
    let result = env.get(answer.header("location")).await;
    assert_eq!(result.body["objectType"], "OperationJobExtendedInfo");
}

#[tokio::test]
async fn tokens_are_required() {
    let mut config = fast_config();
    config.expired_tokens = vec!["old-token".into()];
    let env = Env::start(config).await;
    let url = env.instance_url("x", V2026);
    let missing = env.raw(env.http.get(&url)).await;
    assert_eq!(
        (missing.status, missing.code()),
        (StatusCode::UNAUTHORIZED, "AuthenticationFailed")
    );
    assert!(
        missing
            .header("www-authenticate")
            .starts_with("Bearer authorization_uri=")
    );
    let expired = env.raw(env.http.get(&url).bearer_auth("old-token")).await;
    assert_eq!(
        (expired.status, expired.code()),
        (StatusCode::UNAUTHORIZED, "ExpiredAuthenticationToken")
    );
    assert!(expired.header("www-authenticate").contains("expired"));
    let wrong = env.raw(env.http.get(&url).bearer_auth("nope")).await;
    assert_eq!(wrong.code(), "InvalidAuthenticationToken");
    let basic = env.raw(env.http.get(&url).basic_auth("u", Some("p"))).await;
    assert_eq!(basic.code(), "AuthenticationFailed");
    assert_eq!(env.get(&url).await.status, StatusCode::NOT_FOUND);
    let counts = env.emulator.admin().request_counts();
    assert_eq!(counts["BackupInstances_Get"][&401], 4);
}

#[tokio::test]
async fn api_versions_and_routes() {
    let env = Env::fast().await;
    let base = format!("{}{DEFAULT_VAULT_ID}/backupInstances/x", env.base);
    let missing = env.get(&base).await;
    assert_eq!(
        (missing.status, missing.code()),
        (StatusCode::BAD_REQUEST, "MissingApiVersionParameter")
    );
    let unknown = env.get(&format!("{base}?api-version=2020-01-01")).await;
    assert_eq!(unknown.code(), "InvalidApiVersionParameter");
    let message = unknown.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("2020-01-01") && message.contains("2026-06-01") && message.contains(V2021),
        "{message}"
    );
    for version in vault_emulator::SUPPORTED_API_VERSIONS {
        assert_eq!(
            env.get(&env.instance_url("x", version)).await.status,
            StatusCode::NOT_FOUND
        );
    }
    // Operational instance: stopProtection is refused by the service, except at 2021-01-01,
    // which had no such action.
    env.put("x", &instance("msblobbackup", None)).await;
    let stop_2021 = env
        .call(
            Method::POST,
            &env.vault_url("/backupInstances/x/stopProtection", V2021),
            None,
        )
        .await;
    assert_eq!(
        (stop_2021.status, stop_2021.code()),
        (StatusCode::NOT_FOUND, "InvalidResourceType")
    );
    let sync_2021 = env
        .call(
            Method::POST,
            &env.vault_url("/backupInstances/x/sync", V2021),
            None,
        )
        .await;
    assert_eq!(sync_2021.code(), "InvalidResourceType");
    let upper = env
        .get(&format!(
            "{}?api-version={V2026}",
            base.to_uppercase().replace("HTTP://", "http://")
        ))
        .await;
    assert_eq!(
        upper.status,
        StatusCode::OK,
        "ARM paths are case-insensitive"
    );
    let patch = env
        .call(
            Method::PATCH,
            &env.instance_url("x", V2026),
            Some(&json!({})),
        )
        .await;
    assert_eq!(patch.status, StatusCode::METHOD_NOT_ALLOWED);
    let policies = env.get(&env.vault_url("/backupPolicies", V2026)).await;
    assert_eq!(policies.code(), "InvalidResourceType");
    let other_vault = env.get(&format!("{}/subscriptions/{DEFAULT_SUBSCRIPTION}/resourceGroups/rg/providers/Microsoft.DataProtection/backupVaults/none/backupInstances?api-version={V2026}", env.base)).await;
    assert_eq!(
        (other_vault.status, other_vault.code()),
        (StatusCode::NOT_FOUND, "ResourceNotFound")
    );
    assert_eq!(env.emulator.admin().request_count("Unknown"), 2);
}

#[tokio::test]
async fn requests_are_checked_like_the_service() {
    let env = Env::fast().await;
    env.admin(
        Method::POST,
        "storage-accounts",
        Some(&json!([
            {"id": account_id("east"), "location": "eastus"},
            {"id": account_id("vaulted"), "location": "westus"}
        ])),
    )
    .await;
    let mut no_policy = instance("msblobbackup", None);
    no_policy["policyInfo"]["policyId"] = json!(policy_id("missing"));
    let cases = [
        (
            no_policy,
            StatusCode::NOT_FOUND,
            "UserErrorResourceNotFound",
        ),
        (
            instance("unknownaccount", None),
            StatusCode::NOT_FOUND,
            "UserErrorResourceNotFound",
        ),
        (
            instance("east", None),
            StatusCode::BAD_REQUEST,
            "UserErrorDatasourceAndBackupVaultLocationMismatch",
        ),
        (
            json!({"objectType": "BackupInstance"}),
            StatusCode::BAD_REQUEST,
            "UserErrorInvalidParameterInRequest",
        ),
    ];
    for (body, status, code) in cases {
        let answer = env.validate(&body).await;
        assert_eq!((answer.status, answer.code()), (status, code), "{body}");
    }
    // Vaulted rules: containers go with a vaulted policy, and only with one.
    let mut operational_with_containers = instance("vaulted", Some(&["c1"]));
    operational_with_containers["policyInfo"]["policyId"] = json!(policy_id("BlobBackup-Policy"));
    let mut vaulted_without = instance("vaulted", None);
    vaulted_without["policyInfo"]["policyId"] = json!(policy_id("BlobVaulted-Policy"));
    let cases = [
        (
            operational_with_containers,
            "UserErrorInvalidParameterInRequest",
        ),
        (vaulted_without, "UserErrorInvalidParameterInRequest"),
        (
            instance("vaulted", Some(&[])),
            "UserErrorNoContainersSelectedForOperation",
        ),
    ];
    for (body, code) in cases {
        let answer = env.put("v", &body).await;
        assert_eq!(
            (answer.status, answer.code()),
            (StatusCode::BAD_REQUEST, code),
            "{body}"
        );
        assert_eq!(
            answer.body["error"]["additionalInfo"][0]["type"],
            "UserFacingError"
        );
    }
    let bad_json = env
        .raw(
            env.http
                .put(env.instance_url("v", V2026))
                .bearer_auth(env.emulator.token())
                .body("{not json"),
        )
        .await;
    assert_eq!(bad_json.code(), "InvalidRequestContent");

    let created = env.put("v", &instance("vaulted", Some(&["c1"]))).await;
    assert_eq!(created.status, StatusCode::CREATED);
    // Read-only properties sent back are ignored; a changed container list is an update.
    let mut changed = created.body["properties"].clone();
    changed["policyInfo"]["policyParameters"]["backupDatasourceParametersList"][0]["containersList"] =
        json!(["c1", "c2"]);
    env.emulator
        .admin()
        .set_latency(Duration::from_secs(30))
        .unwrap();
    let updated = env.put("v", &changed).await;
    assert_eq!(updated.status, StatusCode::OK, "{:?}", updated.body);
    assert_eq!(
        updated.body["properties"]["currentProtectionState"],
        "UpdatingProtection"
    );
    assert!(updated.headers.contains_key("azure-asyncoperation"));
    let same_again = env.put("v", &changed).await;
    assert_eq!(
        same_again.header("azure-asyncoperation"),
        updated.header("azure-asyncoperation")
    );
    let conflicting = env.put("v", &instance("vaulted", Some(&["c3"]))).await;
    assert_eq!(
        (conflicting.status, conflicting.code()),
        (StatusCode::CONFLICT, "AnotherOperationInProgress")
    );
    let moved = env.put("v", &instance("msblobbackup", None)).await;
    assert_eq!(moved.code(), "UserErrorInvalidParameterInRequest");
}

#[tokio::test]
async fn stop_protection_and_sync() {
    let env = Env::fast().await;
    env.emulator
        .admin()
        .add_storage_accounts(&[vault_emulator::StorageAccountConfig {
            id: account_id("vaulted"),
            location: "westus".into(),
            role_assignments: None,
        }])
        .unwrap();
    env.put("ops", &instance("msblobbackup", None)).await;
    env.put("vlt", &instance("vaulted", Some(&["c1"]))).await;
    let stop =
        |name: &str| env.vault_url(&format!("/backupInstances/{name}/stopProtection"), V2026);
    let refused = env.call(Method::POST, &stop("ops"), None).await;
    assert_eq!(
        (refused.status, refused.code()),
        (
            StatusCode::BAD_REQUEST,
            "UserErrorStopProtectionNotSupportedForBlobOperationalBackup"
        )
    );
    let missing = env.call(Method::POST, &stop("none"), None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let stopping = env.call(Method::POST, &stop("vlt"), Some(&json!({}))).await;
    assert_eq!(stopping.status, StatusCode::ACCEPTED);
    assert!(stopping.headers.contains_key("location"));
    assert_eq!(
        env.finish(stopping.header("azure-asyncoperation")).await["status"],
        "Succeeded"
    );
    let stopped = env.props("vlt").await;
    assert_eq!(stopped["protectionStatus"]["status"], "ProtectionStopped");
    assert_eq!(
        env.call(Method::POST, &stop("vlt"), None).await.status,
        StatusCode::OK
    );

    // Drift: the service reports a protection error until a sync succeeds.
    let id = env.get(&env.instance_url("ops", V2026)).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let inject = json!({"instanceId": id.to_lowercase(), "code": "UserErrorBlobVersionDeletedDuringBackup", "message": "versions deleted"});
    assert_eq!(
        env.admin(Method::POST, "protection-error", Some(&inject))
            .await
            .status,
        StatusCode::OK
    );
    let broken = env.props("ops").await;
    assert_eq!(broken["protectionStatus"]["status"], "ProtectionError");
    assert_eq!(broken["currentProtectionState"], "ProtectionError");
    let details = &broken["protectionStatus"]["errorDetails"];
    assert_eq!(details["message"], "versions deleted");
    assert_eq!(broken["protectionErrorDetails"], *details);
    let sync = env
        .call(
            Method::POST,
            &env.vault_url("/backupInstances/ops/sync", V2026),
            Some(&json!({"syncType": "Default"})),
        )
        .await;
    assert_eq!(sync.status, StatusCode::ACCEPTED);
    assert_eq!(
        env.get(sync.header("location")).await.body["objectType"],
        "OperationJobExtendedInfo"
    );
    let healed = env.props("ops").await;
    assert_eq!(healed["protectionStatus"]["status"], "ProtectionConfigured");
    assert!(healed.get("protectionErrorDetails").is_none());
    assert!(
        env.emulator
            .admin()
            .set_protection_error("/nope", "X")
            .is_err()
    );
}

#[tokio::test]
async fn list_pages_through_next_link() {
    let env = Env::fast().await;
    let accounts: Vec<Value> = (0..25)
        .map(|i| json!({"id": account_id(&format!("acct{i:02}")), "location": "westus"}))
        .collect();
    let added = env
        .admin(
            Method::POST,
            "storage-accounts",
            Some(&Value::Array(accounts)),
        )
        .await;
    assert_eq!(added.body["added"], 25);
    for i in 0..25 {
        let created = env
            .put(
                &format!("bi-{i:02}"),
                &instance(&format!("acct{i:02}"), None),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED);
    }
    env.admin(Method::PUT, "settings", Some(&json!({"pageSize": 10})))
        .await;
    let mut url = Some(env.vault_url("/backupInstances", V2026));
    let mut names = Vec::new();
    let mut pages = 0;
    while let Some(next) = url {
        let page = env.get(&next).await;
        assert_eq!(page.status, StatusCode::OK);
        pages += 1;
        for item in page.body["value"].as_array().unwrap() {
            names.push(item["name"].as_str().unwrap().to_owned());
        }
        url = page.body["nextLink"].as_str().map(str::to_owned);
    }
    assert_eq!(pages, 3);
    let expected: Vec<String> = (0..25).map(|i| format!("bi-{i:02}")).collect();
    assert_eq!(names, expected);
    assert_eq!(
        env.emulator.admin().request_count("BackupInstances_List"),
        3
    );
}

#[tokio::test]
async fn write_budget_runs_out_with_429() {
    let env = Env::fast().await;
    env.emulator
        .admin()
        .set_throttle(Some(ThrottleSettings {
            budget: 3,
            refill_per_second: 0.5,
        }))
        .unwrap();
    let url = env.instance_url("x", V2026);
    for remaining in ["2", "1", "0"] {
        let answer = env.call(Method::DELETE, &url, None).await;
        assert_eq!(answer.status, StatusCode::NO_CONTENT);
        assert_eq!(
            answer.header("x-ms-ratelimit-remaining-subscription-deletes"),
            remaining
        );
        assert!(
            answer
                .headers
                .get("x-ms-ratelimit-remaining-subscription-writes")
                .is_none(),
            "a delete reports the delete budget only, as ARM's DELETE transcript"
        );
    }
    let throttled = env.call(Method::DELETE, &url, None).await;
    assert_eq!(
        (throttled.status, throttled.code()),
        (
            StatusCode::TOO_MANY_REQUESTS,
            "SubscriptionRequestsThrottled"
        )
    );
    assert!(
        throttled.body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Number of 'delete' requests for subscription"),
        "{}",
        throttled.body
    );
    assert_eq!(throttled.header("retry-after"), "2");
    assert_eq!(
        throttled.header("x-ms-ratelimit-remaining-subscription-deletes"),
        "0"
    );
    // Deletes spent their own budget: the write budget is still full.
    let validate = env.vault_url("/validateForBackup", V2026);
    assert_eq!(env.spend_a_write(&validate).await.1, "2");
    assert_eq!(
        env.get(&url).await.status,
        StatusCode::NOT_FOUND,
        "reads are not throttled"
    );
    let counts = env.admin(Method::GET, "requests", None).await.body;
    assert_eq!(
        counts["BackupInstances_Delete"],
        json!({"204": 3, "429": 1})
    );
    env.admin(Method::PUT, "settings", Some(&json!({"throttle": null})))
        .await;
    let unthrottled = env.call(Method::DELETE, &url, None).await;
    assert_eq!(unthrottled.status, StatusCode::NO_CONTENT);
    assert_eq!(
        unthrottled.header("x-ms-ratelimit-remaining-subscription-deletes"),
        "14999"
    );
    assert_eq!(env.spend_a_write(&validate).await.1, "1199");
}

/// ARM counts writes per subscription: one subscription spending its budget leaves another's
/// whole. A bucket is made on a subscription's first write (the other subscription has no
/// vault here: throttling comes before the provider, as in ARM).
#[tokio::test]
async fn each_subscription_has_its_own_write_budget() {
    let env = Env::fast().await;
    env.emulator
        .admin()
        .set_throttle(Some(ThrottleSettings {
            budget: 2,
            refill_per_second: 0.1,
        }))
        .unwrap();
    let other_subscription = "11111111-1111-1111-1111-111111111111";
    let other = env
        .vault_url("/validateForBackup", V2026)
        .replace(DEFAULT_SUBSCRIPTION, other_subscription);
    let ours = env.vault_url("/validateForBackup", V2026);
    for left in ["1", "0"] {
        assert_eq!(
            env.spend_a_write(&ours).await,
            (StatusCode::BAD_REQUEST, left.into())
        );
    }
    let spent = env.call(Method::POST, &ours, Some(&json!({}))).await;
    assert_eq!(spent.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        spent.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(DEFAULT_SUBSCRIPTION)
    );
    // The other subscription's bucket is full; its subscription ID in another casing is the
    // same subscription.
    assert_eq!(env.spend_a_write(&other).await.1, "1");
    let upper = other.replace(other_subscription, &other_subscription.to_uppercase());
    assert_eq!(env.spend_a_write(&upper).await.1, "0");
    assert_eq!(
        env.spend_a_write(&other).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn injected_faults() {
    let env = Env::fast().await;
    let url = env.instance_url("x", V2026);
    let admin = env.emulator.admin();
    for (faults, status) in [
        (
            FaultSettings {
                internal_error: 1.0,
                ..FaultSettings::default()
            },
            StatusCode::INTERNAL_SERVER_ERROR,
        ),
        (
            FaultSettings {
                unavailable: 1.0,
                retry_after: 7,
                ..FaultSettings::default()
            },
            StatusCode::SERVICE_UNAVAILABLE,
        ),
    ] {
        let retry_after = faults.retry_after.to_string();
        admin.set_faults(faults).unwrap();
        let answer = env.get(&url).await;
        assert_eq!(answer.status, status);
        assert_eq!(answer.header("retry-after"), retry_after);
        assert!(answer.body["error"]["code"].is_string());
    }
    admin
        .set_faults(FaultSettings {
            drop_connection: 1.0,
            ..FaultSettings::default()
        })
        .unwrap();
    let dropped = env
        .http
        .get(&url)
        .bearer_auth(env.emulator.token())
        .send()
        .await;
    assert!(dropped.is_err(), "{dropped:?}");
    // The admin API is never faulted.
    assert_eq!(
        env.admin(Method::GET, "settings", None).await.status,
        StatusCode::OK
    );
    let slow = json!({"faults": {"slow": 1.0, "slowDelay": "150ms", "operations": ["BackupInstances_Get"]}});
    env.admin(Method::PUT, "settings", Some(&slow)).await;
    let started = Instant::now();
    assert_eq!(env.get(&url).await.status, StatusCode::NOT_FOUND);
    assert!(started.elapsed() >= Duration::from_millis(150));
    let started = Instant::now();
    env.get(&env.vault_url("/backupInstances", V2026)).await;
    assert!(
        started.elapsed() < Duration::from_millis(150),
        "only the listed operation is slowed"
    );
    let counts = admin.request_counts();
    assert_eq!(
        counts["BackupInstances_Get"],
        BTreeMap::from([(0, 1), (404, 1), (500, 1), (503, 1)])
    );
    let half = FaultSettings {
        unavailable: 0.5,
        seed: 3,
        ..FaultSettings::default()
    };
    let mut runs = Vec::new();
    for _ in 0..2 {
        admin.set_faults(half.clone()).unwrap();
        let mut statuses = Vec::new();
        for _ in 0..16 {
            statuses.push(env.get(&url).await.status.as_u16());
        }
        runs.push(statuses);
    }
    assert_eq!(runs[0], runs[1], "same seed, same faults");
    assert!(runs[0].contains(&503) && runs[0].contains(&404));
}

#[tokio::test]
async fn injected_bad_bodies() {
    let env = Env::fast().await;
    let url = env.instance_url("x", V2026);
    for knob in ["malformedBody", "emptyBody"] {
        let settings = json!({"faults": {knob: 1.0, "operations": ["BackupInstances_Get"]}});
        let answer = env.admin(Method::PUT, "settings", Some(&settings)).await;
        assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
        let response = env
            .http
            .get(&url)
            .bearer_auth(env.emulator.token())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let content_type = response.headers()["content-type"].to_str().unwrap();
        assert!(
            content_type.starts_with("application/json"),
            "{content_type}"
        );
        let text = response.text().await.unwrap();
        if knob == "emptyBody" {
            assert_eq!(text, "");
        } else {
            assert!(text.starts_with('{'), "{text}");
            assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");
        }
        // Only the listed operation is affected.
        let list = env.get(&env.vault_url("/backupInstances", V2026)).await;
        assert_eq!(list.status, StatusCode::OK);
    }
    assert_eq!(
        env.emulator.admin().request_counts()["BackupInstances_Get"],
        BTreeMap::from([(200, 2)])
    );
    let bad = json!({"faults": {"malformedBody": 0.6, "emptyBody": 0.6}});
    let answer = env.admin(Method::PUT, "settings", Some(&bad)).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn in_progress_spelling_is_a_knob() {
    let mut config = fast_config();
    config.behavior.latency = Duration::from_secs(30);
    let env = Env::start(config).await;
    let accepted = env.validate(&instance("msblobbackup", None)).await;
    let url = accepted.header("azure-asyncoperation").to_owned();
    assert_eq!(accepted.header("retry-after"), "30");
    assert_eq!(env.get(&url).await.body["status"], "Inprogress");
    let answer = env
        .admin(
            Method::PUT,
            "settings",
            Some(&json!({"inProgressStatus": "InProgress", "retryAfter": 2})),
        )
        .await;
    assert_eq!(answer.body["inProgressStatus"], "InProgress");
    assert_eq!(env.get(&url).await.body["status"], "InProgress");
    env.emulator
        .admin()
        .set_in_progress_status(InProgressSpelling::Inprogress)
        .unwrap();
    assert_eq!(env.get(&url).await.body["status"], "Inprogress");
    let bad = env
        .admin(Method::PUT, "settings", Some(&json!({"pageSize": 0})))
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let unknown = env
        .admin(Method::PUT, "settings", Some(&json!({"pagesize": 3})))
        .await;
    assert!(
        unknown.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("pagesize")
    );
}

#[tokio::test]
async fn admin_counts_reset_and_out_of_band_delete() {
    let env = Env::fast().await;
    env.put("bi", &instance("msblobbackup", None)).await;
    env.get(&env.instance_url("bi", V2026)).await;
    let listed = env.admin(Method::GET, "instances", None).await.body;
    let id = listed[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        listed[0]["properties"]["protectionStatus"]["status"],
        "ProtectionConfigured"
    );
    let admin = env.emulator.admin();
    assert_eq!(admin.request_count("BackupInstances_CreateOrUpdate"), 1);
    assert_eq!(admin.request_count("BackupInstances_Get"), 1);
    assert_eq!(admin.gets_served(&id), 1);
    env.get(&env.instance_url("bi", V2026)).await;
    env.get(&env.instance_url("other", V2026)).await;
    assert_eq!(
        admin.gets_served(&id.to_ascii_uppercase()),
        2,
        "any casing of the id; a 404 is not served"
    );
    let (counts, gets) = admin.request_counts_and_gets_served([id.as_str(), "/nowhere"]);
    assert_eq!(
        counts["BackupInstances_Get"],
        BTreeMap::from([(200, 2), (404, 1)])
    );
    assert_eq!(gets, 2);
    admin
        .set_faults(FaultSettings {
            malformed_body: 1.0,
            ..FaultSettings::default()
        })
        .unwrap();
    let injected = env
        .http
        .get(env.instance_url("bi", V2026))
        .bearer_auth(env.emulator.token())
        .send()
        .await
        .unwrap();
    assert_eq!(injected.status(), StatusCode::OK);
    assert_eq!(admin.gets_served(&id), 2, "an injected 200 is not served");
    admin.set_faults(FaultSettings::default()).unwrap();
    let reset = env.admin(Method::POST, "reset?scope=counts", None).await;
    assert_eq!(reset.status, StatusCode::OK);
    assert!(admin.request_counts().is_empty());
    assert_eq!(admin.gets_served(&id), 0);
    assert_eq!(admin.instances().len(), 1, "counts-only reset keeps state");

    let deleted = env
        .admin(Method::DELETE, &format!("instances?id={id}"), None)
        .await;
    assert_eq!(deleted.status, StatusCode::OK);
    assert_eq!(
        env.get(&env.instance_url("bi", V2026)).await.status,
        StatusCode::NOT_FOUND
    );
    let again = env
        .admin(Method::DELETE, &format!("instances?id={id}"), None)
        .await;
    assert_eq!(
        (again.status, again.code()),
        (StatusCode::NOT_FOUND, "NotFound")
    );

    env.put("bi", &instance("msblobbackup", None)).await;
    admin.revoke_role(DEFAULT_STORAGE_ACCOUNT_ID).unwrap();
    env.admin(Method::POST, "reset", None).await;
    assert!(admin.instances().is_empty());
    assert!(admin.request_counts().is_empty());
    let validate = env.validate(&instance("msblobbackup", None)).await;
    assert_eq!(
        env.finish(validate.header("azure-asyncoperation")).await["status"],
        "Succeeded",
        "role restored from config"
    );
    let unknown = json!({"storageAccountId": account_id("nope")});
    assert_eq!(
        env.admin(Method::POST, "role-assignments", Some(&unknown))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let nowhere = env.admin(Method::GET, "nowhere", None).await;
    assert_eq!(
        (nowhere.status, nowhere.code()),
        (StatusCode::NOT_FOUND, "NotFound")
    );
    let bad = env
        .admin(
            Method::POST,
            "role-assignments",
            Some(&json!({"storageAccountId": "/bad"})),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn config_files_load_or_say_what_is_wrong() {
    let dir = Path::new(FIXTURES).join("emulator/config");
    let config = EmulatorConfig::from_yaml_file(dir.join("full.yaml")).unwrap();
    assert_eq!(config.vaults.len(), 2);
    let env = Env::start(config).await;
    assert_eq!(env.emulator.admin().behavior().page_size, 2);
    let second = env
        .raw(
            env.http
                .get(env.instance_url("x", V2026))
                .bearer_auth("second-token"),
        )
        .await;
    assert_eq!(second.status, StatusCode::NOT_FOUND);
    let east = "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/east-rg/providers/Microsoft.DataProtection/backupVaults/eastVault";
    let body = json!({"backupInstance": {
        "objectType": "BackupInstance",
        "dataSourceInfo": {"datasourceType": "Microsoft.Storage/storageAccounts/blobServices",
            "resourceID": "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/east-rg/providers/Microsoft.Storage/storageAccounts/eastaccount"},
        "policyInfo": {"policyId": format!("{east}/backupPolicies/ops")}}});
    let url = format!("{}{east}/validateForBackup?api-version={V2026}", env.base);
    let accepted = env.call(Method::POST, &url, Some(&body)).await;
    assert_eq!(
        accepted.status,
        StatusCode::ACCEPTED,
        "'East US' matches 'eastus': {:?}",
        accepted.body
    );
    assert!(
        accepted
            .header("azure-asyncoperation")
            .contains("/locations/eastus/operationStatus/")
    );
    let failed = env.finish(accepted.header("azure-asyncoperation")).await;
    assert_eq!(
        failed["error"]["code"], "UserErrorMissingRequiredPermissions",
        "roleAssignments: [] grants nothing"
    );

    let error = |file: &str| match EmulatorConfig::from_yaml_file(dir.join(file)) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("{file} loaded"),
    };
    let bad_yaml = error("bad_yaml.yaml");
    assert!(
        bad_yaml.contains("bad_yaml.yaml") && bad_yaml.contains("line 3"),
        "{bad_yaml}"
    );
    let unknown = error("unknown_field.yaml");
    assert!(
        unknown.contains("unknown field `polices`") && unknown.contains("line 4"),
        "{unknown}"
    );
    let bad_value = error("bad_value.yaml");
    assert!(
        bad_value.contains("storageAccounts[0].roleAssignments") && bad_value.contains("nope"),
        "{bad_value}"
    );
    let missing = EmulatorConfig::from_yaml_file(dir.join("absent.yaml")).unwrap_err();
    assert!(
        matches!(missing, EmulatorError::ConfigRead { .. }),
        "{missing}"
    );
}

/// Every key the emulator answers with is one the official examples use, and the examples'
/// main keys are all there.
#[tokio::test]
async fn bodies_use_the_official_field_names() {
    let mut config = fast_config();
    config
        .storage_accounts
        .push(vault_emulator::StorageAccountConfig {
            id: account_id("vaulted"),
            location: "westus".into(),
            role_assignments: None,
        });
    let env = Env::start(config).await;
    let azure = |path: &str| fixture(&format!("azure/{path}"));
    let example_keys = |files: &[&str], pointer: &str| -> BTreeSet<String> {
        files
            .iter()
            .flat_map(|f| keys(azure(f).pointer(pointer).unwrap()))
            .collect()
    };
    let instance_examples = example_keys(
        &[
            "2026-06-01/examples/BackupInstanceOperations/GetBackupInstance.json",
            "2026-06-01/examples/BackupInstanceOperations/GetBackupInstance_BlobBackupAutoProtection.json",
            "2026-06-01/examples/BackupInstanceOperations/GetBackupInstance_ADLSBlobBackupDatasourceParameters.json",
            "2021-01-01/examples/BackupInstanceOperations/GetBackupInstance.json",
        ],
        "/responses/200/body",
    );
    // The PUT's answer is the instance too (the examples of a PUT answer as a GET does).
    for created in [
        env.put("ops", &instance("msblobbackup", None)).await,
        env.put("vlt", &instance("vaulted", Some(&["c1", "c2"])))
            .await,
    ] {
        assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
        let foreign: Vec<_> = keys(&created.body)
            .into_iter()
            .filter(|k| !instance_examples.contains(k))
            .collect();
        assert!(foreign.is_empty(), "PUT: not in the examples: {foreign:?}");
    }
    for name in ["ops", "vlt"] {
        let got = env.get(&env.instance_url(name, V2026)).await.body;
        let ours = keys(&got);
        let foreign: Vec<_> = ours.difference(&instance_examples).collect();
        assert!(foreign.is_empty(), "not in the examples: {foreign:?}");
        for key in [
            ".id",
            ".name",
            ".type",
            ".properties.dataSourceInfo.resourceID",
            ".properties.policyInfo.policyId",
            ".properties.protectionStatus.status",
            ".properties.currentProtectionState",
            ".properties.provisioningState",
            ".properties.objectType",
            ".properties.friendlyName",
            ".properties.dataSourceInfo.datasourceType",
        ] {
            assert!(ours.contains(key), "{name} lacks {key}");
        }
    }
    let list_examples = example_keys(
        &["2026-06-01/examples/BackupInstanceOperations/ListBackupInstances.json"],
        "/responses/200/body",
    );
    let listed = env
        .get(&env.vault_url("/backupInstances", V2026))
        .await
        .body;
    assert_eq!(listed["value"].as_array().unwrap().len(), 2);
    let list_top: BTreeSet<String> = keys(&listed)
        .into_iter()
        .filter(|k| !k.starts_with(".value[]."))
        .collect();
    assert!(list_top.is_subset(&list_examples), "{list_top:?}");
    let listed_instances: BTreeSet<String> = keys(&listed)
        .iter()
        .filter_map(|k| k.strip_prefix(".value[]"))
        .map(str::to_owned)
        .collect();
    let foreign: Vec<_> = listed_instances.difference(&instance_examples).collect();
    assert!(
        foreign.is_empty(),
        "listed: not in the examples: {foreign:?}"
    );

    let status_examples = example_keys(
        &[
            "2026-06-01/examples/GetOperationStatus.json",
            "2021-01-01/examples/GetOperationStatus.json",
        ],
        "/responses/200/body",
    );
    let accepted = env.validate(&instance("msblobbackup", None)).await;
    assert_eq!(
        accepted.status,
        StatusCode::BAD_REQUEST,
        "already protected by 'ops'"
    );
    env.call(Method::DELETE, &env.instance_url("ops", V2026), None)
        .await;
    let accepted = env.validate(&instance("msblobbackup", None)).await;
    let status = env.finish(accepted.header("azure-asyncoperation")).await;
    assert_eq!(keys(&status), status_examples);
    let result_examples = example_keys(
        &["2026-06-01/examples/GetOperationResult.json"],
        "/responses/200/body",
    );
    assert_eq!(
        keys(&env.get(accepted.header("location")).await.body),
        result_examples
    );
}

/// Restore answers in the official examples' field names: the restorable ranges, the restore's
/// operation status naming its job, and the job itself (the required `AzureBackupJob`
/// properties, no name the examples and the schema lack).
#[tokio::test]
async fn restore_bodies_use_the_official_field_names() {
    let env = Env::fast().await;
    let azure = |path: &str| fixture(&format!("azure/{path}"));
    let created = env.put("ops", &instance("msblobbackup", None)).await;
    env.finish(created.header("azure-asyncoperation")).await;
    let ranges_url = env.vault_url("/backupInstances/ops/findRestorableTimeRanges", V2026);
    let find = json!({"sourceDataStoreType": "OperationalStore"});
    let deadline = Instant::now() + Duration::from_secs(5);
    let ranges = loop {
        let answer = env.call(Method::POST, &ranges_url, Some(&find)).await;
        assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
        let found = &answer.body["properties"]["restorableTimeRanges"];
        if found.as_array().is_some_and(|r| !r.is_empty()) || Instant::now() > deadline {
            break answer.body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let example =
        azure("2025-09-01/examples/BackupInstanceOperations/FindRestorableTimeRanges.json");
    assert_eq!(keys(&ranges), keys(&example["responses"]["200"]["body"]));
    let point = ranges["properties"]["restorableTimeRanges"][0]["endTime"].clone();

    // The request in another casing (Azure binds property names case-insensitively).
    let target = json!({"objectType": "Datasource", "resourceID": DEFAULT_STORAGE_ACCOUNT_ID,
        "datasourceType": "Microsoft.Storage/storageAccounts/blobServices"});
    let request = json!({
        "objecttype": "AzureBackupRecoveryTimeBasedRestoreRequest",
        "recoveryPointTime": point,
        "sourceDataStoreType": "OperationalStore",
        "sourceResourceId": DEFAULT_STORAGE_ACCOUNT_ID,
        "restoreTargetInfo": {"objectType": "RestoreTargetInfo", "recoveryOption": "FailIfExists",
            "restoreLocation": "westus", "datasourceinfo": target},
    });
    let url = env.vault_url("/backupInstances/ops/restore", V2026);
    let accepted = env.call(Method::POST, &url, Some(&request)).await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{:?}", accepted.body);
    let example = azure("2026-06-01/examples/BackupInstanceOperations/TriggerRestore.json");
    let example_headers: BTreeSet<String> = example["responses"]["202"]["headers"]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.to_ascii_lowercase())
        .collect();
    for header in &example_headers {
        accepted.header(header);
    }
    let status = env.finish(accepted.header("azure-asyncoperation")).await;
    assert_eq!(status["status"], "Succeeded");
    assert_eq!(
        status["properties"]["objectType"],
        "OperationJobExtendedInfo"
    );
    let job_id = status["properties"]["jobId"].as_str().unwrap().to_owned();

    let job = env
        .get(&env.vault_url(&format!("/backupJobs/{job_id}"), V2026))
        .await;
    assert_eq!(job.status, StatusCode::OK, "{:?}", job.body);
    assert_eq!(job.body["properties"]["operation"], "Restore");
    assert_eq!(job.body["properties"]["status"], "Completed");
    let ours = keys(&job.body);
    let mut known =
        keys(&azure("2026-06-01/examples/JobCRUD/GetJob.json")["responses"]["200"]["body"]);
    // In the schema, not in the example (a running backup job): a finished job's end, and
    // the errors of a failed one.
    known.extend([
        ".properties.endTime".to_owned(),
        ".properties.errorDetails".to_owned(),
    ]);
    let foreign: Vec<_> = ours.difference(&known).collect();
    assert!(
        foreign.is_empty(),
        "not in the example or schema: {foreign:?}"
    );
    for required in [
        "activityID",
        "backupInstanceFriendlyName",
        "dataSourceId",
        "dataSourceLocation",
        "dataSourceName",
        "dataSourceType",
        "isUserTriggered",
        "operation",
        "operationCategory",
        "progressEnabled",
        "sourceResourceGroup",
        "sourceSubscriptionID",
        "startTime",
        "status",
        "subscriptionId",
        "supportedActions",
        "vaultName",
    ] {
        assert!(
            ours.contains(&format!(".properties.{required}")),
            "lacks {required}"
        );
    }
}

/// Tags are kept and returned as sent (the operator's ownership rests on them); 2021-01-01 has
/// none: it neither takes nor returns them, and a PUT at it keeps the instance's tags.
#[tokio::test]
async fn tags_are_stored_and_returned_as_sent_except_at_2021_01_01() {
    let env = Env::fast().await;
    let tags = json!({"blobbackup.io/uid": "u-1", "CostCenter": "42"});
    let body = json!({"properties": instance("msblobbackup", None), "tags": tags});
    let created = env
        .call(Method::PUT, &env.instance_url("tagged", V2026), Some(&body))
        .await;
    assert!(created.status.is_success(), "{:?}", created.body);
    assert_eq!(created.body["tags"], tags);
    assert_eq!(
        env.get(&env.instance_url("tagged", V2026)).await.body["tags"],
        tags
    );

    let old = env.get(&env.instance_url("tagged", V2021)).await;
    assert_eq!(old.status, StatusCode::OK);
    assert!(old.body.get("tags").is_none(), "{:#}", old.body);
    let retagged = json!({"properties": instance("msblobbackup", None), "tags": {"other": "x"}});
    let put = env
        .call(
            Method::PUT,
            &env.instance_url("tagged", V2021),
            Some(&retagged),
        )
        .await;
    assert!(put.status.is_success(), "{:?}", put.body);
    assert!(put.body.get("tags").is_none(), "{:#}", put.body);
    assert_eq!(
        env.get(&env.instance_url("tagged", V2026)).await.body["tags"],
        tags,
        "a PUT at 2021-01-01 changed the tags"
    );

    // A PUT at a version with tags replaces them, like ARM's.
    let replaced = json!({"properties": instance("msblobbackup", None), "tags": {"only": "this"}});
    env.call(
        Method::PUT,
        &env.instance_url("tagged", V2026),
        Some(&replaced),
    )
    .await;
    assert_eq!(
        env.get(&env.instance_url("tagged", V2026)).await.body["tags"],
        json!({"only": "this"})
    );
}
