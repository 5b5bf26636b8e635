//! The ARM client over real HTTP against a scripted local server: every call, every
//! long-running-operation shape, Retry-After, throttling, server errors, bad bodies, dropped
//! connections, paging, and poll URLs on foreign hosts (refused with no request made).

// ArmError's contract layout is ~180 bytes; see crates/dataprotection/src/error.rs.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use dataprotection::{
    self, ArmClient, ArmConfig, ArmError, AuthConfig, AuthMode, BackupInstance, BackupInstanceId,
    ErrorClass, LroStart, OperationStatus, PolicyId, RequestObserver, StorageAccountId, VaultId,
};
use serde_json::{Value, json};
use url::Url;

// ---------------------------------------------------------------------------------------
// A scripted HTTP server: answers requests with the queued replies, in order, and records
// every request it receives.

#[derive(Clone)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Send the headers, then break the body off.
    cut_body: bool,
    /// Send a body without end (no Content-Length).
    endless: bool,
}

fn reply(status: u16) -> Reply {
    Reply {
        status,
        headers: Vec::new(),
        body: Vec::new(),
        cut_body: false,
        endless: false,
    }
}

impl Reply {
    fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    fn json(mut self, body: &Value) -> Self {
        self.body = serde_json::to_vec(body).unwrap();
        self.header("content-type", "application/json")
    }

    fn text(mut self, body: &str) -> Self {
        self.body = body.as_bytes().to_vec();
        self
    }
}

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    /// Path and query, exactly as received.
    target: String,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

#[derive(Clone, Default)]
struct Script {
    replies: Arc<Mutex<VecDeque<Reply>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

struct Mock {
    base: Url,
    script: Script,
}

impl Mock {
    async fn start() -> Self {
        let script = Script::default();
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { base, script }
    }

    fn push(&self, reply: Reply) -> &Self {
        self.script.replies.lock().unwrap().push_back(reply);
        self
    }

    fn seen(&self) -> Vec<Seen> {
        self.script.seen.lock().unwrap().clone()
    }

    /// An absolute URL on this server for `path_and_query` (no leading slash).
    fn url(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.base)
    }

    /// `text` with the article's and examples' ARM host replaced by this server, and the
    /// article's placeholder subscription by the tests' (poll URLs must be in the vault's).
    fn rebase(&self, text: &str) -> String {
        text.replace("https://management.azure.com/", self.base.as_str())
            .replace("xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxxx", SUB)
    }

    /// A recorded whole response (tests/fixtures/azure/article/*.json), rebased here.
    fn push_fixture(&self, name: &str) -> &Self {
        let fixture = article(name);
        let mut r = reply(fixture["status"].as_u64().unwrap() as u16);
        for (header, value) in fixture["headers"].as_object().unwrap() {
            if !header.eq_ignore_ascii_case("content-length") {
                r = r.header(header, &self.rebase(value.as_str().unwrap()));
            }
        }
        if !fixture["body"].is_null() {
            r.body = serde_json::to_vec(&fixture["body"]).unwrap();
        }
        self.push(r)
    }
}

async fn answer(State(script): State<Script>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap()
        .to_vec();
    script.seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        target: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers: parts.headers,
        body,
    });
    let next = script.replies.lock().unwrap().pop_front();
    let Some(next) = next else {
        return Response::builder()
            .status(599)
            .body(Body::from("no reply scripted"))
            .unwrap();
    };
    let mut builder = Response::builder().status(next.status);
    for (name, value) in &next.headers {
        builder = builder.header(name, value);
    }
    let body = if next.cut_body {
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![
            Ok(b"{\"properties\":".to_vec()),
            Err(std::io::Error::other("connection dropped")),
        ];
        Body::from_stream(futures::stream::iter(chunks))
    } else if next.endless {
        let chunk = || Ok::<_, std::io::Error>(vec![b' '; 64 * 1024]);
        Body::from_stream(futures::stream::repeat_with(chunk))
    } else {
        Body::from(next.body)
    };
    builder.body(body).unwrap()
}

fn article(name: &str) -> Value {
    let path = format!(
        "{}/../../tests/fixtures/azure/article/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

// ---------------------------------------------------------------------------------------
// The client under test.

#[derive(Default)]
struct Observed(Mutex<Vec<(&'static str, Option<u16>)>>);

impl RequestObserver for Observed {
    fn observe(&self, operation: &'static str, status: Option<u16>, _elapsed: Duration) {
        self.0.lock().unwrap().push((operation, status));
    }
}

impl Observed {
    fn take(&self) -> Vec<(&'static str, Option<u16>)> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

const TOKEN: &str = "test-token";
const SUB: &str = "00000000-0000-0000-0000-000000000000";
/// An operation status path of the tests' vault (no leading slash).
const OPERATION: &str = "subscriptions/00000000-0000-0000-0000-000000000000/providers/Microsoft.DataProtection/locations/westus/operationStatus/op";

/// The operator's own HTTP client (no redirects, its timeouts).
fn http() -> reqwest::Client {
    dataprotection::default_http_client().unwrap()
}

fn client_for(base: &Url, api_version: &str, observer: Arc<Observed>) -> ArmClient {
    let auth = AuthConfig::fixed_token(TOKEN);
    let credential = dataprotection::credential(&auth, http()).unwrap();
    ArmClient::new(
        ArmConfig::new(base.clone(), api_version),
        http(),
        credential,
        Some(observer),
    )
    .unwrap()
}

struct Setup {
    mock: Mock,
    client: ArmClient,
    observed: Arc<Observed>,
}

async fn setup(api_version: &str) -> Setup {
    let mock = Mock::start().await;
    let observed = Arc::new(Observed::default());
    let client = client_for(&mock.base, api_version, observed.clone());
    Setup {
        mock,
        client,
        observed,
    }
}

fn vault() -> VaultId {
    VaultId::new(SUB, "TestBkpVaultRG", "testBkpVault").unwrap()
}

fn instance_id() -> BackupInstanceId {
    vault().backup_instance("msblobbackup-f2df34eb-5628-4570-87b2-0331d797c67d")
}

fn instance() -> BackupInstance {
    BackupInstance::for_blob_account(
        &StorageAccountId::parse(&format!(
            "/subscriptions/{SUB}/resourceGroups/RG-BlobBackup/providers/Microsoft.Storage/storageAccounts/msblobbackup"
        ))
        .unwrap(),
        "westus",
        &PolicyId::parse(&format!("{}/backupPolicies/BlobBackup-Policy", vault())).unwrap(),
        None,
    )
}

fn resource_json() -> Value {
    article("put-created-201.json")["body"].clone()
}

fn header<'a>(seen: &'a Seen, name: &str) -> &'a str {
    seen.headers
        .get(name)
        .unwrap_or_else(|| panic!("{name} missing"))
        .to_str()
        .unwrap()
}

fn azure_error(result: Result<impl std::fmt::Debug, ArmError>) -> ArmError {
    let error = result.expect_err("an error");
    assert!(matches!(error, ArmError::Azure { .. }), "{error:?}");
    error
}

// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn article_flow_on_2021_01_01() {
    let Setup {
        mock,
        client,
        observed,
    } = setup("2021-01-01").await;
    assert_eq!(client.api_version(), "2021-01-01");

    // validateForBackup: 202 with both headers; Azure-AsyncOperation wins.
    mock.push_fixture("validate-accepted-202.json");
    let start = client
        .validate_for_backup(&vault(), &instance())
        .await
        .result
        .unwrap();
    let LroStart::Pending { handle, body: None } = start else {
        panic!("{start:?}")
    };
    assert!(
        handle.poll_url.contains("/operationStatus/"),
        "{}",
        handle.poll_url
    );
    assert_eq!(handle.retry_after, Some(Duration::from_secs(10)));

    // Poll: Inprogress, then Failed (missing permissions), then Succeeded.
    for body in [
        "operation-status-inprogress.json",
        "operation-status-failed-missing-permissions.json",
        "operation-status-succeeded.json",
    ] {
        mock.push(reply(200).json(&article(body)).header("retry-after", "15"));
    }
    let poll = client.poll(&handle.poll_url, &instance_id()).await.unwrap();
    assert_eq!(
        poll.status,
        OperationStatus::InProgress {
            raw: "Inprogress".into()
        }
    );
    assert_eq!(poll.retry_after, Some(Duration::from_secs(15)));
    match client
        .poll(&handle.poll_url, &instance_id())
        .await
        .unwrap()
        .status
    {
        OperationStatus::Failed(detail) => {
            assert_eq!(detail.code, "UserErrorMissingRequiredPermissions");
            assert!(detail.detail.unwrap().contains("roleAssignments/read"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        client
            .poll(&handle.poll_url, &instance_id())
            .await
            .unwrap()
            .status,
        OperationStatus::Succeeded
    );

    // PUT: 201 with Azure-AsyncOperation and the resource.
    mock.push_fixture("put-created-201.json");
    let start = client
        .create_or_update(&instance_id(), &instance())
        .await
        .result
        .unwrap();
    let LroStart::Pending {
        handle,
        body: Some(resource),
    } = start
    else {
        panic!("{start:?}")
    };
    assert_eq!(handle.retry_after, Some(Duration::from_secs(15)));
    assert_eq!(resource.protection_status(), Some("ConfiguringProtection"));
    mock.push(reply(200).json(&article("put-operation-status-succeeded.json")));
    assert_eq!(
        client
            .poll(&handle.poll_url, &instance_id())
            .await
            .unwrap()
            .status,
        OperationStatus::Succeeded
    );

    // GET, then DELETE 202 and its poll.
    mock.push(reply(200).json(&resource_json()));
    let got = client.get(&instance_id()).await.unwrap().unwrap();
    assert_eq!(got.name.as_deref(), Some(instance_id().name()));
    mock.push_fixture("delete-accepted-202.json");
    let start = client.delete(&instance_id()).await.result.unwrap();
    let handle = start.handle().unwrap().clone();
    assert_eq!(handle.retry_after, Some(Duration::from_secs(30)));
    mock.push(reply(200).json(&article("delete-operation-status-succeeded.json")));
    assert_eq!(
        client
            .poll(&handle.poll_url, &instance_id())
            .await
            .unwrap()
            .status,
        OperationStatus::Succeeded
    );

    // What went over the wire.
    let seen = mock.seen();
    let calls: Vec<(String, String)> = seen
        .iter()
        .map(|s| (s.method.clone(), s.target.clone()))
        .collect();
    let vault_path = format!(
        "/subscriptions/{SUB}/resourceGroups/TestBkpVaultRG/providers/Microsoft.DataProtection/backupVaults/testBkpVault"
    );
    let instance_path = format!("{vault_path}/backupInstances/{}", instance_id().name());
    // The article's subscription placeholder, as its headers name it.
    let status_prefix = format!(
        "/subscriptions/{SUB}/providers/Microsoft.DataProtection/locations/westus/operationStatus/"
    );
    assert_eq!(
        calls[0],
        (
            "POST".into(),
            format!("{vault_path}/validateForBackup?api-version=2021-01-01")
        )
    );
    assert_eq!(
        calls[4],
        (
            "PUT".into(),
            format!("{instance_path}?api-version=2021-01-01")
        )
    );
    assert_eq!(
        calls[6],
        (
            "GET".into(),
            format!("{instance_path}?api-version=2021-01-01")
        )
    );
    assert_eq!(
        calls[7],
        (
            "DELETE".into(),
            format!("{instance_path}?api-version=2021-01-01")
        )
    );
    for i in [1, 2, 3, 5, 8] {
        assert_eq!(calls[i].0, "GET");
        assert!(calls[i].1.starts_with(&status_prefix), "{:?}", calls[i]);
        // The poll URL is used as given: its own api-version, none added.
        assert_eq!(
            calls[i].1.matches("api-version").count(),
            1,
            "{:?}",
            calls[i]
        );
    }
    assert_eq!(seen.len(), 9);

    // Bodies: the PUT sends {"properties": ...}, validate {"backupInstance": ...}.
    let validate: Value = serde_json::from_slice(&seen[0].body).unwrap();
    assert_eq!(
        validate,
        json!({"backupInstance": serde_json::to_value(instance()).unwrap()})
    );
    let put: Value = serde_json::from_slice(&seen[4].body).unwrap();
    assert_eq!(
        put,
        json!({"properties": serde_json::to_value(instance()).unwrap()})
    );
    assert_eq!(header(&seen[0], "content-type"), "application/json");

    // Headers on every request: the token, a fresh client request id, our User-Agent.
    let mut ids = std::collections::HashSet::new();
    for s in &seen {
        assert_eq!(header(s, "authorization"), format!("Bearer {TOKEN}"));
        let id = header(s, "x-ms-client-request-id");
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
        ids.insert(id.to_string());
        assert!(header(s, "user-agent").starts_with("blob-backup-operator/"));
    }
    assert_eq!(ids.len(), seen.len());

    // The observer saw every request with Azure's operation names.
    assert_eq!(
        observed.take(),
        vec![
            ("BackupInstances_ValidateForBackup", Some(202)),
            ("OperationStatus_Get", Some(200)),
            ("OperationStatus_Get", Some(200)),
            ("OperationStatus_Get", Some(200)),
            ("BackupInstances_CreateOrUpdate", Some(201)),
            ("OperationStatus_Get", Some(200)),
            ("BackupInstances_Get", Some(200)),
            ("BackupInstances_Delete", Some(202)),
            ("OperationStatus_Get", Some(200)),
        ]
    );
}

#[tokio::test]
async fn validate_already_protected_is_a_needs_person_error_with_ids() {
    let Setup { mock, client, .. } = setup("2021-01-01").await;
    mock.push_fixture("validate-already-protected-400.json");
    let error = azure_error(
        client
            .validate_for_backup(&vault(), &instance())
            .await
            .result,
    );
    assert_eq!(error.class(), ErrorClass::NeedsPerson);
    assert_eq!(error.code(), Some("UserErrorDppDatasourceAlreadyProtected"));
    assert_eq!(error.http_status(), Some(400));
    let ArmError::Azure {
        operation,
        detail,
        request_id,
        correlation_id,
        ..
    } = &error
    else {
        unreachable!()
    };
    assert_eq!(*operation, "BackupInstances_ValidateForBackup");
    assert!(detail.recommended_actions[0].contains("msblobbackuptemp"));
    // The article's x-ms-request-id is empty: no id rather than an empty one.
    assert_eq!(request_id, &None);
    assert_eq!(
        correlation_id.as_deref(),
        Some("f36eb67a-8932-42a8-8aba-c5ee2443aa2e")
    );
    let text = error.to_string();
    assert!(
        text.contains("Recommended action: Delete the backup instance msblobbackuptemp"),
        "{text}"
    );
    assert!(
        text.contains("x-ms-correlation-request-id: f36eb67a"),
        "{text}"
    );
}

#[tokio::test]
async fn put_answers_200_201_202_and_bad_bodies() {
    let Setup { mock, client, .. } = setup(dataprotection::DEFAULT_API_VERSION).await;
    let id = instance_id();
    let status_url = mock.url("subscriptions/00000000-0000-0000-0000-000000000000/providers/Microsoft.DataProtection/locations/westus/operationStatus/op==2026-06-01");
    let result_url = mock.url("subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/TestBkpVaultRG/providers/Microsoft.DataProtection/backupVaults/v/backupInstances/bi/operationResults/op==2026-06-01");

    // 200: done, with the resource.
    mock.push(reply(200).json(&resource_json()));
    let start = client
        .create_or_update(&id, &instance())
        .await
        .result
        .unwrap();
    assert!(matches!(start, LroStart::Done(Some(_))), "{start:?}");

    // 200 with Azure-AsyncOperation: an update still being applied; pending, with the body.
    // A Location header alone on a 200 is not something to poll.
    mock.push(
        reply(200)
            .json(&resource_json())
            .header("Azure-AsyncOperation", &status_url)
            .header("Retry-After", "15"),
    );
    let start = client
        .create_or_update(&id, &instance())
        .await
        .result
        .unwrap();
    let LroStart::Pending {
        handle,
        body: Some(_),
    } = start
    else {
        panic!("{start:?}")
    };
    assert_eq!(handle.poll_url, status_url);
    assert_eq!(handle.retry_after, Some(Duration::from_secs(15)));
    mock.push(
        reply(200)
            .json(&resource_json())
            .header("Location", &result_url),
    );
    let start = client
        .create_or_update(&id, &instance())
        .await
        .result
        .unwrap();
    assert!(matches!(start, LroStart::Done(Some(_))), "{start:?}");

    // 201 without a poll URL: done (the resource's protection status tells the rest).
    mock.push(reply(201).json(&resource_json()));
    assert!(matches!(
        client
            .create_or_update(&id, &instance())
            .await
            .result
            .unwrap(),
        LroStart::Done(Some(_))
    ));

    // 202 with both headers: Azure-AsyncOperation wins; no body.
    mock.push(
        reply(202)
            .header("Location", &result_url)
            .header("Azure-AsyncOperation", &status_url)
            .header("Retry-After", "60"),
    );
    let start = client
        .create_or_update(&id, &instance())
        .await
        .result
        .unwrap();
    let LroStart::Pending { handle, body: None } = start else {
        panic!("{start:?}")
    };
    assert_eq!(handle.poll_url, status_url);
    assert_eq!(handle.retry_after, Some(Duration::from_secs(60)));

    // 202 with Location only.
    mock.push(reply(202).header("Location", &result_url));
    let start = client
        .create_or_update(&id, &instance())
        .await
        .result
        .unwrap();
    assert_eq!(start.handle().unwrap().poll_url, result_url);
    assert_eq!(start.handle().unwrap().retry_after, None);

    // 202 naming nothing to follow, malformed JSON and an empty body where the resource is
    // required: Decode errors naming the operation and status.
    mock.push(reply(202));
    mock.push(reply(200).text("{\"properties\": "));
    mock.push(reply(201).header("Azure-AsyncOperation", &status_url));
    for (status, what) in [
        (202, "without an Azure-AsyncOperation or Location"),
        (200, "not the expected JSON"),
        (201, "empty"),
    ] {
        let error = client
            .create_or_update(&id, &instance())
            .await
            .result
            .unwrap_err();
        match &error {
            ArmError::Decode {
                operation,
                status: s,
                message,
                ..
            } => {
                assert_eq!(*operation, "BackupInstances_CreateOrUpdate");
                assert_eq!(*s, status);
                assert!(message.contains(what), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(error.class(), ErrorClass::Bug);
        let text = error.to_string();
        assert!(
            text.contains("BackupInstances_CreateOrUpdate")
                && text.contains(&format!("HTTP {status}")),
            "{text}"
        );
    }
    assert_eq!(
        mock.seen()[0].target,
        format!(
            "{}?api-version=2026-06-01",
            mock.seen()[0].target.split('?').next().unwrap()
        )
    );
}

#[tokio::test]
async fn get_list_and_their_errors() {
    let Setup { mock, client, .. } = setup(dataprotection::DEFAULT_API_VERSION).await;
    let id = instance_id();

    mock.push(reply(404).json(&json!({"error": {"code": "ResourceNotFound", "message": "gone"}})));
    assert_eq!(client.get(&id).await.unwrap(), None);

    // Unknown fields and another casing of dataSourceInfo are fine.
    let mut body = resource_json();
    let ds = body["properties"]
        .as_object_mut()
        .unwrap()
        .remove("dataSourceInfo")
        .unwrap();
    body["properties"]["datasourceinfo"] = ds;
    body["properties"]["brandNewField"] = json!(true);
    mock.push(reply(200).json(&body));
    let got = client.get(&id).await.unwrap().unwrap();
    assert_eq!(
        got.properties
            .unwrap()
            .data_source_info
            .resource_name
            .as_deref(),
        Some("msblobbackup")
    );

    mock.push(reply(200).text("<html>not json</html>"));
    assert!(matches!(
        client.get(&id).await.unwrap_err(),
        ArmError::Decode { status: 200, .. }
    ));
    mock.push(reply(200));
    assert!(matches!(
        client.get(&id).await.unwrap_err(),
        ArmError::Decode { status: 200, .. }
    ));

    // A 500 without a CloudError body still says what happened.
    mock.push(reply(500).text("upstream exploded"));
    let error = azure_error(client.get(&id).await);
    assert_eq!(error.class(), ErrorClass::Transient);
    assert_eq!(error.code(), Some("InternalServerError"));
    assert!(error.to_string().contains("upstream exploded"));

    // list follows nextLink (used as given) across pages.
    let next = mock.url(&format!(
        "subscriptions/{SUB}/resourceGroups/TestBkpVaultRG/providers/Microsoft.DataProtection/backupVaults/testBkpVault/backupInstances?api-version=2026-06-01&$skiptoken=abc%3D%3D"
    ));
    let item = resource_json();
    mock.push(reply(200).json(&json!({"value": [item, item], "nextLink": next})));
    mock.push(reply(200).json(&json!({"value": [item], "nextLink": ""})));
    let before = mock.seen().len();
    let all = client.list(&vault()).await.unwrap();
    assert_eq!(all.len(), 3);
    let seen = mock.seen();
    assert_eq!(seen.len(), before + 2);
    assert!(
        seen[before]
            .target
            .ends_with("/backupVaults/testBkpVault/backupInstances?api-version=2026-06-01")
    );
    assert!(
        seen[before + 1].target.ends_with("&$skiptoken=abc%3D%3D"),
        "{}",
        seen[before + 1].target
    );

    // A page with no value is an empty page; a list answering 403 is an error.
    mock.push(reply(200).json(&json!({})));
    assert!(client.list(&vault()).await.unwrap().is_empty());
    mock.push(reply(403).json(&json!({"error": {"code": "AuthorizationFailed", "message": "no"}})));
    let error = azure_error(client.list(&vault()).await);
    assert_eq!(error.class(), ErrorClass::NeedsPerson);
    assert_eq!(error.code(), Some("AuthorizationFailed"));
}

/// The official `RecoveryPoints_List` example (api-version 2025-09-01, the shape 2026-06-01
/// references), copied under tests/fixtures/azure.
fn official_recovery_points() -> Value {
    let path = format!(
        "{}/../../tests/fixtures/azure/2025-09-01/examples/BackupInstanceOperations/ListRecoveryPoints.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let example: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(example["operationId"], "RecoveryPoints_List");
    example["responses"]["200"]["body"].clone()
}

#[tokio::test]
async fn latest_recovery_point_reads_every_page_of_the_official_shape() {
    let Setup { mock, client, .. } = setup(dataprotection::DEFAULT_API_VERSION).await;
    // Page 1: the official example (both points at 2019-03-01T13:00:00Z); page 2: a later
    // one without a zone (UTC) and an entry without a time.
    let mut first = official_recovery_points();
    let next = mock.url(&format!(
        "subscriptions/{SUB}/resourceGroups/TestBkpVaultRG/providers/Microsoft.DataProtection/backupVaults/testBkpVault/backupInstances/bi/recoveryPoints?api-version=2026-06-01&$skipToken=2"
    ));
    first["nextLink"] = json!(next);
    mock.push(reply(200).json(&first));
    mock.push(reply(200).json(&json!({"value": [
        {"properties": {"objectType": "AzureBackupDiscreteRecoveryPoint", "recoveryPointTime": "2019-03-02T01:30:00.1234567"}},
        {"properties": {"objectType": "AzureBackupDiscreteRecoveryPoint"}}
    ]})));
    let before = mock.seen().len();
    let latest = client.latest_recovery_point(&instance_id()).await.unwrap();
    assert_eq!(
        latest,
        Some("2019-03-02T01:30:00.1234567Z".parse().unwrap())
    );
    let seen = mock.seen();
    assert_eq!(seen.len(), before + 2);
    assert!(
        seen[before]
            .target
            .ends_with("/backupInstances/msblobbackup-f2df34eb-5628-4570-87b2-0331d797c67d/recoveryPoints?api-version=2026-06-01"),
        "{}",
        seen[before].target
    );
    assert!(seen[before + 1].target.ends_with("&$skipToken=2"));

    // The official example alone; then none at all.
    mock.push(reply(200).json(&official_recovery_points()));
    assert_eq!(
        client.latest_recovery_point(&instance_id()).await.unwrap(),
        Some("2019-03-01T13:00:00Z".parse().unwrap())
    );
    mock.push(reply(200).json(&json!({"value": []})));
    assert_eq!(
        client.latest_recovery_point(&instance_id()).await.unwrap(),
        None
    );
    mock.push(reply(404).json(&json!({"error": {"code": "ResourceNotFound", "message": "no"}})));
    assert!(client.latest_recovery_point(&instance_id()).await.is_err());
}

#[tokio::test]
async fn delete_stop_protection_and_sync() {
    let Setup {
        mock,
        client,
        observed,
    } = setup(dataprotection::DEFAULT_API_VERSION).await;
    let id = instance_id();
    let status_url = mock.url("s/operationStatus/x");

    for status in [200, 204, 404] {
        mock.push(reply(status));
        assert_eq!(
            client.delete(&id).await.result.unwrap(),
            LroStart::Done(None),
            "{status}"
        );
    }
    mock.push(reply(202).header("Azure-AsyncOperation", &status_url));
    assert_eq!(
        client
            .delete(&id)
            .await
            .result
            .unwrap()
            .handle()
            .unwrap()
            .poll_url,
        status_url
    );

    assert!(client.supports_instance_actions());
    mock.push(
        reply(202)
            .header("Azure-AsyncOperation", &status_url)
            .header("Retry-After", "60"),
    );
    let start = client.stop_protection(&id).await.result.unwrap();
    assert_eq!(
        start.handle().unwrap().retry_after,
        Some(Duration::from_secs(60))
    );
    mock.push(reply(200).json(&json!({})));
    assert_eq!(client.sync(&id).await.result.unwrap(), LroStart::Done(None));

    let seen = mock.seen();
    let stop = &seen[4];
    assert_eq!(stop.method, "POST");
    assert!(stop.target.ends_with(&format!(
        "/backupInstances/{}/stopProtection?api-version=2026-06-01",
        id.name()
    )));
    assert_eq!(header(stop, "content-length"), "0");
    assert!(stop.body.is_empty());
    let sync = &seen[5];
    assert!(sync.target.ends_with("/sync?api-version=2026-06-01"));
    assert_eq!(
        serde_json::from_slice::<Value>(&sync.body).unwrap(),
        json!({"syncType": "Default"})
    );
    let names: Vec<&str> = observed.take().iter().map(|(op, _)| *op).collect();
    assert_eq!(
        &names[4..],
        [
            "BackupInstances_StopProtection",
            "BackupInstances_SyncBackupInstance"
        ]
    );

    // 2021-01-01 has no stopProtection: refused before any request.
    let old = client_for(&mock.base, "2021-01-01", Arc::new(Observed::default()));
    assert!(!old.supports_instance_actions());
    let before = mock.seen().len();
    let error = old.stop_protection(&id).await.result.unwrap_err();
    assert!(matches!(error, ArmError::Config { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .contains("2021-01-01 has no stopProtection"),
        "{error}"
    );
    assert_eq!(mock.seen().len(), before);
}

#[tokio::test]
async fn poll_shapes() {
    let Setup {
        mock,
        client,
        observed,
    } = setup(dataprotection::DEFAULT_API_VERSION).await;
    // Opaque URLs: `==2026-06-01` junk without a query, a foreign api-version with more
    // parameters, and one over 4 KB.
    let junk = mock.url("subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/TestBkpVaultRG/providers/Microsoft.DataProtection/backupVaults/testBkpVault/operationStatus/ZTA4YjQ0==2026-06-01");
    let deployments = mock.url("subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/TestBkpVaultRG/providers/Microsoft.Resources/deployments/ConfigureProtection-2097/operationStatuses/0858?api-version=2022-12-01&t=638749912006014742&c=MIIHhzCCBm");
    let long = mock.url(&format!(
        "subscriptions/00000000-0000-0000-0000-000000000000/providers/Microsoft.DataProtection/locations/westus/operationStatus/{}",
        "A".repeat(5000)
    ));
    let result = mock.url("subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/TestBkpVaultRG/providers/Microsoft.DataProtection/operationResults/op?api-version=2026-06-01");

    let cases: Vec<(&String, Reply, OperationStatus)> = vec![
        (
            &junk,
            reply(200).json(&json!({"status": "InProgress"})),
            OperationStatus::InProgress {
                raw: "InProgress".into(),
            },
        ),
        (
            &deployments,
            reply(200).json(&json!({"status": "Cancelled"})),
            OperationStatus::Canceled,
        ),
        (
            &long,
            reply(200).json(&json!({"Status": "canceled"})),
            OperationStatus::Canceled,
        ),
        (
            &junk,
            reply(200).json(&json!({"status": "Finalizing", "extra": {}})),
            OperationStatus::InProgress {
                raw: "Finalizing".into(),
            },
        ),
        (
            &junk,
            reply(200).json(&json!({"status": "succeeded"})),
            OperationStatus::Succeeded,
        ),
        (
            &result,
            reply(202),
            OperationStatus::InProgress {
                raw: "Accepted".into(),
            },
        ),
        (
            &result,
            reply(200).json(&resource_json()),
            OperationStatus::Succeeded,
        ),
        (&result, reply(200), OperationStatus::Succeeded),
        (&result, reply(204), OperationStatus::Succeeded),
        (&junk, reply(204), OperationStatus::Succeeded),
        (
            &junk,
            reply(202).json(&json!({"status": "Running"})),
            OperationStatus::InProgress {
                raw: "Running".into(),
            },
        ),
        (
            &junk,
            reply(202).json(&json!({"status": "Succeeded"})),
            OperationStatus::InProgress {
                raw: "Accepted".into(),
            },
        ),
    ];
    for (url, r, expected) in cases {
        mock.push(r);
        let poll = client.poll(url, &instance_id()).await.unwrap();
        assert_eq!(poll.status, expected, "{url}");
    }
    let targets: Vec<String> = mock.seen().iter().map(|s| s.target.clone()).collect();
    assert_eq!(targets[0], Url::parse(&junk).unwrap().path());
    assert_eq!(
        format!("{}{}", mock.base.as_str().trim_end_matches('/'), targets[1]),
        deployments
    );
    assert!(targets[2].len() > 5000);
    let names: Vec<&str> = observed.take().iter().map(|(op, _)| *op).collect();
    assert_eq!(names[0], "OperationStatus_Get");
    assert_eq!(names[5], "OperationResult_Get");

    // Retry-After as an HTTP date.
    let in_two_minutes = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
    mock.push(reply(202).header("Retry-After", &in_two_minutes));
    let poll = client.poll(&result, &instance_id()).await.unwrap();
    let wait = poll.retry_after.unwrap();
    assert!(
        wait > Duration::from_secs(100) && wait <= Duration::from_secs(120),
        "{wait:?}"
    );

    // A status document must be there and readable.
    mock.push(reply(200));
    mock.push(reply(200).text("{\"status\": "));
    mock.push(reply(200).json(&json!({"id": "x"})));
    for _ in 0..3 {
        match client.poll(&junk, &instance_id()).await.unwrap_err() {
            ArmError::Decode {
                operation, status, ..
            } => {
                assert_eq!((operation, status), ("OperationStatus_Get", 200));
            }
            other => panic!("{other:?}"),
        }
    }
    // A result URL answering malformed JSON is not taken for success either.
    mock.push(reply(200).text("{oops"));
    assert!(matches!(
        client.poll(&result, &instance_id()).await.unwrap_err(),
        ArmError::Decode {
            operation: "OperationResult_Get",
            ..
        }
    ));
}

#[tokio::test]
async fn throttling_and_server_errors_are_transient() {
    let Setup { mock, client, .. } = setup(dataprotection::DEFAULT_API_VERSION).await;
    let url = mock.url(
        "subscriptions/00000000-0000-0000-0000-000000000000/providers/Microsoft.DataProtection/locations/westus/operationStatus/op",
    );
    mock.push(
        reply(429)
            .header("Retry-After", "7")
            .header("x-ms-request-id", "req-429")
            .json(&json!({"error": {"code": "TooManyRequests", "message": "slow down"}})),
    );
    mock.push(reply(503).header("Retry-After", "30"));
    mock.push(reply(500).json(&json!({"error": {"code": "InternalError", "message": "oops"}})));
    mock.push(reply(408));
    let expected = [
        (429, Some(7), "TooManyRequests"),
        (503, Some(30), "ServiceUnavailable"),
        (500, None, "InternalError"),
        (408, None, "RequestTimeout"),
    ];
    for (status, retry, code) in expected {
        let error = azure_error(client.poll(&url, &instance_id()).await);
        assert_eq!(error.class(), ErrorClass::Transient, "{error}");
        assert_eq!(error.http_status(), Some(status));
        assert_eq!(error.retry_after(), retry.map(Duration::from_secs));
        assert_eq!(error.code(), Some(code));
    }
    // The same for a call, with the request id kept for the ticket.
    mock.push(
        reply(429)
            .header("Retry-After", "3")
            .header("x-ms-request-id", "req-put")
            .json(&json!({"error": {"code": "TooManyRequests", "message": "slow down"}})),
    );
    let error = azure_error(
        client
            .create_or_update(&instance_id(), &instance())
            .await
            .result,
    );
    assert_eq!(error.retry_after(), Some(Duration::from_secs(3)));
    assert!(
        error.to_string().contains("x-ms-request-id: req-put"),
        "{error}"
    );
    assert!(error.to_string().contains("Retry after 3s"), "{error}");
}

#[tokio::test]
async fn foreign_poll_urls_are_refused_without_a_request() {
    let Setup {
        mock,
        client,
        observed,
    } = setup(dataprotection::DEFAULT_API_VERSION).await;
    let foreign = Mock::start().await;
    let port = mock.base.port().unwrap();
    let urls = [
        // Same host, another port: the second server.
        foreign.url("subscriptions/s/operationStatus/op"),
        // Another scheme.
        format!("https://127.0.0.1:{port}/subscriptions/s/operationStatus/op"),
        // Another host name for the same address.
        format!("http://localhost:{port}/subscriptions/s/operationStatus/op"),
        // Credentials smuggled into the URL.
        format!("http://user@127.0.0.1:{port}/subscriptions/s/operationStatus/op"),
        "https://evil.example/operationStatus/op".to_string(),
        "/relative/operationStatus".to_string(),
    ];
    for url in &urls {
        let error = client.poll(url, &instance_id()).await.unwrap_err();
        assert!(
            matches!(error, ArmError::ForeignPollUrl { .. }),
            "{url}: {error:?}"
        );
        assert!(error.to_string().contains("no token was sent"), "{error}");
    }
    // A nextLink elsewhere is refused the same way.
    mock.push(reply(200).json(&json!({"value": [], "nextLink": foreign.url("page2")})));
    assert!(matches!(
        client.list(&vault()).await.unwrap_err(),
        ArmError::ForeignPollUrl { .. }
    ));
    assert!(foreign.seen().is_empty());
    assert_eq!(mock.seen().len(), 1);
    assert_eq!(observed.take().len(), 1);
}

#[tokio::test]
async fn poll_urls_must_be_operations_of_the_instances_vault() {
    let Setup {
        mock,
        client,
        observed,
    } = setup(dataprotection::DEFAULT_API_VERSION).await;
    let group = format!("subscriptions/{SUB}/resourceGroups/TestBkpVaultRG/providers");
    let refused = [
        // Any other ARM path on the endpoint, with the operator's token.
        (
            format!("{group}/Microsoft.Storage/storageAccounts/msblobbackup/listKeys?api-version=2023-05-01"),
            "names providers \"Microsoft.Storage\"",
        ),
        (
            format!("subscriptions/{SUB}/resourceGroups/TestBkpVaultRG"),
            "segment 4; \"providers\" is missing",
        ),
        // An operation of another subscription's, or another vault's.
        (
            "subscriptions/11111111-1111-1111-1111-111111111111/providers/Microsoft.DataProtection/locations/westus/operationStatus/op".to_owned(),
            "names subscriptions \"11111111-1111-1111-1111-111111111111\"",
        ),
        (
            format!("{group}/Microsoft.DataProtection/backupVaults/otherVault/operationStatus/op"),
            "names backupVaults \"otherVault\"",
        ),
        // The instance itself, not an operation.
        (
            format!("{group}/Microsoft.DataProtection/backupVaults/testBkpVault/backupInstances/{}?api-version=2026-06-01", instance_id().name()),
            "not in {operationStatus|",
        ),
    ];
    for (path, says) in &refused {
        let error = client
            .poll(&mock.url(path), &instance_id())
            .await
            .unwrap_err();
        assert!(
            matches!(error, ArmError::PollPathRefused { .. }),
            "{path}: {error:?}"
        );
        assert_eq!(error.class(), ErrorClass::Bug);
        let text = error.to_string();
        assert!(text.contains(says), "{path}: {text}");
        assert!(text.contains("no token was sent"), "{text}");
        assert!(
            !text.contains("api-version"),
            "the query is left out: {text}"
        );
    }
    assert!(mock.seen().is_empty(), "{:?}", mock.seen());
    assert!(observed.take().is_empty());

    // Azure's own shapes, in any casing, are polled.
    for path in [
        OPERATION.to_lowercase(),
        format!(
            "{group}/Microsoft.DataProtection/backupVaults/testBkpVault/operationStatus/ZTA4YjQ0==2026-06-01"
        ),
        format!(
            "{group}/microsoft.dataprotection/backupInstances/{}/operationResults/op",
            instance_id().name()
        ),
        format!(
            "{group}/Microsoft.Resources/deployments/ConfigureProtection-2097/operationStatuses/0858?api-version=2022-12-01&t=6&c=M"
        ),
    ] {
        mock.push(reply(200).json(&json!({"status": "Succeeded"})));
        let poll = client.poll(&mock.url(&path), &instance_id()).await.unwrap();
        assert_eq!(poll.status, OperationStatus::Succeeded, "{path}");
    }
    assert_eq!(mock.seen().len(), 4);
}

#[tokio::test]
async fn redirects_are_refused_naming_the_host_and_nothing_is_sent_again() {
    let Setup {
        mock,
        client,
        observed,
    } = setup(dataprotection::DEFAULT_API_VERSION).await;
    let target = Mock::start().await;
    let target_host = format!("127.0.0.1:{}", target.base.port().unwrap());
    let location = target.url("collect?code=secret-in-the-query");
    for status in [307, 308, 302] {
        mock.push(
            reply(status)
                .header("location", &location)
                .header("x-ms-request-id", "req-3xx"),
        );
    }
    let put = client
        .create_or_update(&instance_id(), &instance())
        .await
        .result;
    let validate = client
        .validate_for_backup(&vault(), &instance())
        .await
        .result;
    let get = client.get(&instance_id()).await;
    for error in [put.unwrap_err(), validate.unwrap_err(), get.unwrap_err()] {
        assert!(matches!(error, ArmError::Redirected { .. }), "{error:?}");
        assert_eq!(error.class(), ErrorClass::Bug);
        let text = error.to_string();
        assert!(
            text.contains(&format!("redirect to host {target_host}")),
            "{text}"
        );
        assert!(!text.contains("secret-in-the-query"), "{text}");
        assert!(text.contains("x-ms-request-id: req-3xx"), "{text}");
    }
    assert!(target.seen().is_empty(), "{:?}", target.seen());
    assert_eq!(mock.seen().len(), 3);
    assert_eq!(
        observed.take(),
        vec![
            ("BackupInstances_CreateOrUpdate", Some(307)),
            ("BackupInstances_ValidateForBackup", Some(308)),
            ("BackupInstances_Get", Some(302)),
        ]
    );
}

/// Sends the token requests meant for Entra ID to a local server instead (azure_identity
/// insists on an https authority), through the operator's identity transport.
#[derive(Debug)]
struct ToLocal {
    base: Url,
    inner: dataprotection::transport::IdentityHttpClient,
}

#[async_trait::async_trait]
impl azure_core::http::HttpClient for ToLocal {
    async fn execute_request(
        &self,
        request: &azure_core::http::Request,
    ) -> azure_core::Result<azure_core::http::AsyncRawResponse> {
        let mut local = request.clone();
        let mut url = self.base.join(request.url().path()).unwrap();
        url.set_query(request.url().query());
        *local.url_mut() = url;
        self.inner.execute_request(&local).await
    }
}

/// The operator's identity transport, with Entra ID at `base`.
fn to_local(base: &Url) -> azure_core::http::Transport {
    azure_core::http::Transport::new(Arc::new(ToLocal {
        base: base.clone(),
        inner: dataprotection::transport::IdentityHttpClient::new(http()),
    }))
}

/// Client-secret settings, with the secret in a file that lives as long as this does.
struct SecretConfig {
    auth: AuthConfig,
    _dir: tempfile::TempDir,
}

fn client_secret_config() -> SecretConfig {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("client-secret");
    std::fs::write(&secret_file, "s3cret").unwrap();
    let auth = AuthConfig {
        mode: AuthMode::ClientSecret,
        client_id: Some("app".into()),
        tenant_id: Some("72f988bf-86f1-41af-91ab-2d7cd011db47".into()),
        client_secret_file: Some(secret_file),
        ..AuthConfig::default()
    };
    SecretConfig { auth, _dir: dir }
}

/// An error and its sources, as one line.
fn error_text(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

#[tokio::test]
async fn token_requests_are_not_redirected() {
    let entra = Mock::start().await;
    let target = Mock::start().await;
    entra.push(reply(307).header("location", &target.url("steal")));
    let config = client_secret_config();
    let credential =
        dataprotection::auth::credential_with_transport(&config.auth, to_local(&entra.base))
            .unwrap();
    let error = credential
        .get_token(&["https://management.azure.com/.default"], None)
        .await
        .unwrap_err();
    let text = error_text(&error);
    let target_host = format!("127.0.0.1:{}", target.base.port().unwrap());
    assert!(
        text.contains(&format!("redirect to host {target_host}")),
        "{text}"
    );
    // The secret went to the token endpoint once, and nowhere else.
    assert_eq!(entra.seen().len(), 1);
    assert!(String::from_utf8_lossy(&entra.seen()[0].body).contains("s3cret"));
    assert!(target.seen().is_empty(), "{:?}", target.seen());
}

/// The error of a GET from a fresh client for `base`, with what the observer saw.
async fn get_error(base: &Url) -> (ArmError, Arc<Observed>) {
    let observed = Arc::new(Observed::default());
    let client = client_for(base, dataprotection::DEFAULT_API_VERSION, observed.clone());
    (client.get(&instance_id()).await.unwrap_err(), observed)
}

/// A server that answers every request with `head` (status line and headers) and then
/// keeps the connection open without sending the body.
async fn declaring(head: &'static str) -> Url {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                let _ = socket.write_all(head.as_bytes()).await;
                // Hold the connection until the client gives up on it.
                let _ = socket.read(&mut request).await;
            });
        }
    });
    base
}

#[tokio::test]
async fn oversized_answers_are_refused_naming_the_operation_and_the_size() {
    // A Content-Length of 10 GiB: refused before reading anything.
    let base = declaring(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-ms-request-id: req-big\r\ncontent-length: 10737418240\r\n\r\n{",
    )
    .await;
    let (error, observed) = get_error(&base).await;
    assert!(
        matches!(
            error,
            ArmError::ResponseTooLarge {
                operation: "BackupInstances_Get",
                status: 200,
                ..
            }
        ),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(text.starts_with("BackupInstances_Get: "), "{text}");
    assert!(
        text.contains("10737418240 bytes (Content-Length)"),
        "{text}"
    );
    assert!(
        text.contains(&dataprotection::transport::MAX_RESPONSE_BYTES.to_string()),
        "{text}"
    );
    assert!(text.contains("x-ms-request-id: req-big"), "{text}");
    assert_eq!(observed.take(), vec![("BackupInstances_Get", Some(200))]);

    // No Content-Length and no end: reading stops just past the limit.
    let Setup { mock, client, .. } = setup(dataprotection::DEFAULT_API_VERSION).await;
    let mut endless = reply(200).header("content-type", "application/json");
    endless.endless = true;
    mock.push(endless.clone());
    mock.push(endless);
    for error in [
        client.get(&instance_id()).await.unwrap_err(),
        client
            .poll(&mock.url(OPERATION), &instance_id())
            .await
            .unwrap_err(),
    ] {
        let ArmError::ResponseTooLarge { size, .. } = &error else {
            panic!("{error:?}");
        };
        assert!(
            matches!(size, dataprotection::transport::Oversize::Streamed(read)
                if *read > dataprotection::transport::MAX_RESPONSE_BYTES
                    && *read <= dataprotection::transport::MAX_RESPONSE_BYTES + 1024 * 1024),
            "{size:?}"
        );
        assert!(
            error.to_string().contains("reading stopped after"),
            "{error}"
        );
    }
}

#[tokio::test]
async fn oversized_token_answers_are_refused() {
    let config = client_secret_config();
    for answer in ["declared", "endless"] {
        let entra = Mock::start().await;
        let base = if answer == "declared" {
            declaring("HTTP/1.1 200 OK\r\ncontent-length: 10737418240\r\n\r\n").await
        } else {
            let mut endless = reply(200).header("content-type", "application/json");
            endless.endless = true;
            entra.push(endless);
            entra.base.clone()
        };
        let credential =
            dataprotection::auth::credential_with_transport(&config.auth, to_local(&base)).unwrap();
        let error = credential
            .get_token(&["https://management.azure.com/.default"], None)
            .await
            .unwrap_err();
        let text = error_text(&error);
        assert!(
            text.contains(&format!(
                "more than the {} bytes",
                dataprotection::transport::MAX_RESPONSE_BYTES
            )) || text.contains(&format!(
                "past the {} bytes",
                dataprotection::transport::MAX_RESPONSE_BYTES
            )),
            "{answer}: {text}"
        );
    }
}

#[tokio::test]
async fn expired_token_is_a_clear_needs_person_error() {
    let Setup { mock, client, .. } = setup(dataprotection::DEFAULT_API_VERSION).await;
    mock.push(
        reply(401)
            .header("WWW-Authenticate", "Bearer authorization_uri=\"https://login.windows.net/\", error=\"invalid_token\", error_description=\"The access token expiry UTC time is earlier than current UTC time.\"")
            .json(&json!({"error": {
                "code": "ExpiredAuthenticationToken",
                "message": "The access token expiry UTC time '11/23/2026 5:00:00 PM' is earlier than current UTC time '11/23/2026 6:00:00 PM'."
            }})),
    );
    let error = azure_error(client.get(&instance_id()).await);
    assert_eq!(error.class(), ErrorClass::NeedsPerson);
    assert_eq!(error.code(), Some("ExpiredAuthenticationToken"));
    let text = error.to_string();
    assert!(text.starts_with("BackupInstances_Get failed with HTTP 401: ExpiredAuthenticationToken: The access token expiry"), "{text}");

    // A 401 without a body falls back to the WWW-Authenticate challenge.
    mock.push(reply(401).header("WWW-Authenticate", "Bearer error=\"invalid_token\""));
    let error = azure_error(client.get(&instance_id()).await);
    assert_eq!(error.code(), Some("Unauthorized"));
    assert!(error.to_string().contains("invalid_token"), "{error}");
}

#[tokio::test]
async fn dropped_connections_are_network_errors() {
    // A server that accepts and closes at once.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            drop(socket);
        }
    });
    let (error, observed) = get_error(&base).await;
    assert!(
        matches!(
            error,
            ArmError::Network {
                operation: "BackupInstances_Get",
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(error.class(), ErrorClass::Transient);
    assert_eq!(observed.take(), vec![("BackupInstances_Get", None)]);

    // Headers arrive, then the body breaks off.
    let Setup { mock, client, .. } = setup(dataprotection::DEFAULT_API_VERSION).await;
    let mut cut = reply(200).header("content-type", "application/json");
    cut.cut_body = true;
    mock.push(cut);
    let error = client.get(&instance_id()).await.unwrap_err();
    assert!(matches!(error, ArmError::Network { .. }), "{error:?}");
}

#[tokio::test]
async fn token_failures_stop_the_request() {
    let mock = Mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "file-token\n").unwrap();
    let auth = AuthConfig {
        mode: AuthMode::StaticToken,
        token_file: Some(token_file.clone()),
        ..AuthConfig::default()
    };
    let credential = dataprotection::credential(&auth, http()).unwrap();
    let client = ArmClient::new(
        ArmConfig::new(mock.base.clone(), "2026-06-01"),
        http(),
        credential,
        None,
    )
    .unwrap();
    mock.push(reply(404));
    assert_eq!(client.get(&instance_id()).await.unwrap(), None);
    assert_eq!(
        header(&mock.seen()[0], "authorization"),
        "Bearer file-token"
    );

    // The token file is re-read on each request: rotated, then gone.
    std::fs::write(&token_file, "rotated").unwrap();
    mock.push(reply(404));
    client.get(&instance_id()).await.unwrap();
    assert_eq!(header(&mock.seen()[1], "authorization"), "Bearer rotated");
    std::fs::remove_file(&token_file).unwrap();
    let error = client.get(&instance_id()).await.unwrap_err();
    assert!(matches!(error, ArmError::Auth { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .contains(&token_file.display().to_string()),
        "{error}"
    );
    assert_eq!(mock.seen().len(), 2);
}

#[tokio::test]
async fn a_closed_write_gate_sends_no_write_but_reads_go_on() {
    let Setup { mock, client, .. } = setup(dataprotection::DEFAULT_API_VERSION).await;
    let open = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let gate = open.clone();
    let client = client.with_write_gate(Arc::new(move || {
        gate.load(std::sync::atomic::Ordering::SeqCst)
    }));
    let id = instance_id();
    mock.push(reply(204));
    client.delete(&id).await.result.unwrap();
    assert_eq!(mock.seen().len(), 1, "an open gate lets the write through");

    // The leader term ended (here: before the call; in the controller, while the token was
    // fetched): no write goes out, whatever the call.
    open.store(false, std::sync::atomic::Ordering::SeqCst);
    for error in [
        client.delete(&id).await.result.unwrap_err(),
        client.stop_protection(&id).await.result.unwrap_err(),
        client.sync(&id).await.result.unwrap_err(),
        client
            .create_or_update(&id, &instance())
            .await
            .result
            .unwrap_err(),
        client
            .validate_for_backup(&vault(), &instance())
            .await
            .result
            .unwrap_err(),
    ] {
        assert!(
            matches!(error, ArmError::WriteGateClosed { .. }),
            "{error:?}"
        );
        assert_eq!(error.class(), ErrorClass::Transient, "{error}");
        assert!(error.to_string().contains("leader term ended"), "{error}");
    }
    assert_eq!(mock.seen().len(), 1, "nothing was sent");
    mock.push(reply(404));
    assert_eq!(client.get(&id).await.unwrap(), None);
    assert_eq!(mock.seen().len(), 2, "a read still goes out");
}

#[test]
fn endpoint_and_api_version_validation() {
    let ok = |endpoint: &str, version: &str| {
        ArmConfig::new(Url::parse(endpoint).unwrap(), version).validate()
    };
    for endpoint in [
        "https://management.azure.com",
        "https://management.usgovcloudapi.net/",
        "http://127.0.0.1:8090",
        "http://127.3.4.5:1",
        "http://[::1]:8080",
        "http://localhost:8080",
    ] {
        ok(endpoint, "2026-06-01").unwrap_or_else(|e| panic!("{endpoint}: {e}"));
    }
    for (endpoint, text) in [
        ("http://management.azure.com", "only for loopback hosts"),
        ("http://10.0.0.1:8080", "only for loopback hosts"),
        ("http://[::2]:8080", "only for loopback hosts"),
        ("ftp://management.azure.com", "scheme \"ftp\""),
        ("https://u:p@management.azure.com", "credentials"),
        ("https://management.azure.com/?x=1", "query"),
    ] {
        let error = ok(endpoint, "2026-06-01").unwrap_err();
        assert!(matches!(error, ArmError::Config { .. }));
        assert!(error.to_string().contains(text), "{endpoint}: {error}");
    }
    for version in ["2021-01-01", "2026-04-01-preview"] {
        ok("https://management.azure.com", version).unwrap();
    }
    for version in [
        "",
        "latest",
        "2026-6-1",
        "2026-06-01preview",
        "2026-06-01&x=1",
    ] {
        assert!(
            ok("https://management.azure.com", version).is_err(),
            "{version:?}"
        );
    }
    assert_eq!(
        ArmConfig::new(
            Url::parse("https://management.azure.com").unwrap(),
            "2026-06-01"
        )
        .token_scope(),
        "https://management.azure.com/.default"
    );
    // ArmClient::new refuses an invalid configuration.
    dataprotection::install_crypto_provider();
    let credential = dataprotection::credential(&AuthConfig::fixed_token("t"), http()).unwrap();
    let result = ArmClient::new(
        ArmConfig::new(Url::parse("http://example.com").unwrap(), "2026-06-01"),
        http(),
        credential,
        None,
    );
    assert!(matches!(result, Err(ArmError::Config { .. })));
}
