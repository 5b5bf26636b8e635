//! The ARM client against the running vault emulator over real HTTP: every call and every
//! long-running-operation shape, each checked on both sides (the client's typed answer and the
//! emulator's request counts), so the two halves are shown to speak one protocol and not merely
//! their own test doubles.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dataprotection::{
    self, ArmClient, ArmConfig, ArmError, AuthConfig, AzureErrorDetail, BackupInstance,
    BackupInstanceId, BackupInstanceResource, ErrorClass, LroStart, OperationHandle,
    OperationStatus, PolicyId, StorageAccountId, VaultId, operation_ids as ops,
};
use dataprotection::{
    BlobRestoreTarget, JobState, OperationJobExtendedInfo, RestoreRequest, RestoreSource,
};
use url::Url;
use vault_emulator::{
    DEFAULT_PRINCIPAL_ID, DEFAULT_STORAGE_ACCOUNT_ID, DEFAULT_SUBSCRIPTION, DEFAULT_VAULT_ID,
    EmulatorConfig, FaultSettings, InProgressSpelling, RunningEmulator, StorageAccountConfig,
    ThrottleSettings,
};

const V2021: &str = "2021-01-01";
const V2026: &str = "2026-06-01";
/// A vault outside the emulator's world that "already protects" an account.
const OTHER_VAULT: &str = "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/OtherRG/providers/Microsoft.DataProtection/backupVaults/otherVault";
const MISSING_PERMISSIONS: &str = "UserErrorMissingRequiredPermissions";

/// Requests by operation id and status code, as `EmulatorAdmin::request_counts` reports them.
type Counts = BTreeMap<String, BTreeMap<u16, u64>>;

/// The expected counts from `(operation, status, requests)` rows (rows of 0 are left out, as
/// the emulator leaves them out).
fn counts(rows: &[(&str, u16, u64)]) -> Counts {
    let mut out = Counts::new();
    for (operation, status, n) in rows.iter().filter(|row| row.2 > 0) {
        *out.entry((*operation).to_owned())
            .or_default()
            .entry(*status)
            .or_default() += n;
    }
    out
}

/// Instant operations and no throttling, unless a test wants them.
fn fast_config() -> EmulatorConfig {
    let mut config = EmulatorConfig::default();
    config.behavior.latency = Duration::ZERO;
    config.behavior.throttle = None;
    config
}

fn client(base: &Url, api_version: &str, token: &str) -> ArmClient {
    let http = dataprotection::default_http_client().unwrap();
    let auth = AuthConfig::fixed_token(token);
    let credential = dataprotection::credential(&auth, http.clone()).unwrap();
    ArmClient::new(
        ArmConfig::new(base.clone(), api_version),
        http,
        credential,
        None,
    )
    .unwrap()
}

async fn start_emulator(config: EmulatorConfig) -> RunningEmulator {
    RunningEmulator::start(config, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap()
}

struct Env {
    emulator: RunningEmulator,
    client: ArmClient,
}

impl Env {
    async fn start(config: EmulatorConfig, api_version: &str) -> Self {
        let emulator = start_emulator(config).await;
        let client = client(&emulator.base_url(), api_version, emulator.token());
        Self { emulator, client }
    }

    async fn fast(api_version: &str) -> Self {
        Self::start(fast_config(), api_version).await
    }

    fn counts(&self) -> Counts {
        self.emulator.admin().request_counts()
    }

    #[track_caller]
    fn assert_counts(&self, rows: &[(&str, u16, u64)]) {
        assert_eq!(self.counts(), counts(rows));
    }

    fn reset_counts(&self) {
        self.emulator.admin().reset_counts();
    }

    /// Polls until the operation is over (bounded by a deadline); the terminal status and the
    /// number of polls. Every answer before the last must be "in progress".
    async fn finish(&self, poll_url: &str) -> (OperationStatus, u64) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut polls = 0;
        loop {
            let poll = self.client.poll(poll_url, &poll_scope()).await.unwrap();
            polls += 1;
            if poll.status.is_terminal() {
                return (poll.status, polls);
            }
            assert!(Instant::now() < deadline, "still {:?}", poll.status);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Validates the article's body (operational backup of msblobbackup); it must be accepted.
    async fn validate(&self) -> OperationHandle {
        let body = operational("msblobbackup");
        let start = self
            .client
            .validate_for_backup(&vault(), &body)
            .await
            .result;
        pending(start.unwrap()).0
    }

    /// Polls the operation to its end, which must be success.
    async fn succeeds(&self, handle: &OperationHandle) {
        assert_eq!(
            self.finish(&handle.poll_url).await.0,
            OperationStatus::Succeeded
        );
    }

    /// PUT; it must be answered with success.
    async fn put(
        &self,
        id: &BackupInstanceId,
        body: &BackupInstance,
    ) -> LroStart<BackupInstanceResource> {
        self.client.create_or_update(id, body).await.result.unwrap()
    }

    /// PUT and poll to success; the instance as GET shows it then.
    async fn create(&self, id: &BackupInstanceId, body: &BackupInstance) -> BackupInstanceResource {
        let start = self.put(id, body).await;
        if let Some(handle) = start.handle() {
            assert_eq!(
                self.finish(&handle.poll_url).await.0,
                OperationStatus::Succeeded
            );
        }
        self.client.get(id).await.unwrap().expect("created")
    }

    async fn protection_status(&self, id: &BackupInstanceId) -> String {
        let resource = self.client.get(id).await.unwrap().expect("exists");
        resource.protection_status().unwrap_or_default().to_owned()
    }
}

fn vault() -> VaultId {
    VaultId::parse(DEFAULT_VAULT_ID).unwrap()
}

fn account_id(name: &str) -> StorageAccountId {
    StorageAccountId::parse(&format!(
        "/subscriptions/{DEFAULT_SUBSCRIPTION}/resourceGroups/RG-BlobBackup/providers/Microsoft.Storage/storageAccounts/{name}"
    ))
    .unwrap()
}

/// More protectable accounts in the vault's region (one instance per account).
fn add_accounts(env: &Env, names: &[&str]) {
    let accounts: Vec<StorageAccountConfig> = names
        .iter()
        .map(|name| StorageAccountConfig {
            id: account_id(name).to_string(),
            location: "westus".to_owned(),
            role_assignments: None,
        })
        .collect();
    env.emulator
        .admin()
        .add_storage_accounts(&accounts)
        .unwrap();
}

/// Operational backup of an account, as the article builds it.
fn operational(account: &str) -> BackupInstance {
    let policy = PolicyId::parse(&format!(
        "{DEFAULT_VAULT_ID}/backupPolicies/BlobBackup-Policy"
    ));
    BackupInstance::for_blob_account(&account_id(account), "westus", &policy.unwrap(), None)
}

/// Vaulted backup of some containers of an account.
fn vaulted(account: &str, containers: &[&str]) -> BackupInstance {
    let policy = PolicyId::parse(&format!(
        "{DEFAULT_VAULT_ID}/backupPolicies/BlobVaulted-Policy"
    ));
    let containers: Vec<String> = containers.iter().map(|c| (*c).to_owned()).collect();
    BackupInstance::for_blob_account(
        &account_id(account),
        "westus",
        &policy.unwrap(),
        Some(&containers),
    )
}

fn instance_id(name: &str) -> BackupInstanceId {
    vault().backup_instance(name)
}

/// The instance polls are made for: the emulator puts every operation under
/// `locations/{location}`, so only the vault's subscription matters.
fn poll_scope() -> BackupInstanceId {
    instance_id("msblobbackup")
}

#[track_caller]
fn pending<T: std::fmt::Debug>(start: LroStart<T>) -> (OperationHandle, Option<T>) {
    match start {
        LroStart::Pending { handle, body } => (handle, body),
        done => panic!("expected a pending operation, got {done:?}"),
    }
}

/// The operation's `Location` URL: the emulator names the same operation under
/// `operationResults` (the client follows Azure-AsyncOperation when both are sent).
fn location_of(handle: &OperationHandle) -> String {
    assert!(handle.poll_url.contains("/operationStatus/"), "{handle:?}");
    handle
        .poll_url
        .replace("/operationStatus/", "/operationResults/")
}

/// An Azure error answer's operation, HTTP status and detail.
#[track_caller]
fn azure(error: &ArmError) -> (&'static str, u16, &AzureErrorDetail) {
    match error {
        ArmError::Azure {
            operation,
            status,
            detail,
            ..
        } => (operation, *status, detail),
        other => panic!("expected an Azure error answer, got {other:?}"),
    }
}

fn failed(status: OperationStatus) -> AzureErrorDetail {
    match status {
        OperationStatus::Failed(detail) => detail,
        other => panic!("expected Failed, got {other:?}"),
    }
}

#[tokio::test]
async fn validate_reports_either_in_progress_spelling_and_retry_after_as_sent() {
    let mut config = fast_config();
    // Long enough that the operation cannot finish during the test: the answers below are
    // deterministic without sleeping.
    config.behavior.latency = Duration::from_secs(60);
    config.behavior.retry_after = Some(7);
    let env = Env::start(config, V2026).await;
    let handle = env.validate().await;
    assert_eq!(handle.retry_after, Some(Duration::from_secs(7)));
    let base = env.emulator.base_url().to_string();
    assert!(handle.poll_url.starts_with(&base), "{handle:?}");
    assert!(
        handle.poll_url.ends_with("?api-version=2026-06-01"),
        "{handle:?}"
    );

    let poll = env
        .client
        .poll(&handle.poll_url, &poll_scope())
        .await
        .unwrap();
    assert_eq!(
        poll.status,
        OperationStatus::InProgress {
            raw: "Inprogress".into()
        }
    );
    // The status document carries no Retry-After; the client invents none.
    assert_eq!(poll.retry_after, None);
    env.emulator
        .admin()
        .set_in_progress_status(InProgressSpelling::InProgress)
        .unwrap();
    let poll = env
        .client
        .poll(&handle.poll_url, &poll_scope())
        .await
        .unwrap();
    assert_eq!(
        poll.status,
        OperationStatus::InProgress {
            raw: "InProgress".into()
        }
    );

    // The Location URL answers 202 while running, with the Retry-After the emulator sends.
    let poll = env
        .client
        .poll(&location_of(&handle), &poll_scope())
        .await
        .unwrap();
    assert_eq!(
        poll.status,
        OperationStatus::InProgress {
            raw: "Accepted".into()
        }
    );
    assert_eq!(poll.retry_after, Some(Duration::from_secs(7)));

    env.assert_counts(&[
        (ops::VALIDATE_FOR_BACKUP, 202, 1),
        (ops::OPERATION_STATUS, 200, 2),
        (ops::OPERATION_RESULT, 202, 1),
    ]);
}

#[tokio::test]
async fn validate_runs_to_succeeded_through_either_poll_url() {
    let mut config = fast_config();
    config.behavior.latency = Duration::from_millis(50);
    let env = Env::start(config, V2026).await;
    let handle = env.validate().await;
    // 50 ms rounded up, as the emulator advertises it.
    assert_eq!(handle.retry_after, Some(Duration::from_secs(1)));
    let (status, polls) = env.finish(&handle.poll_url).await;
    assert_eq!(status, OperationStatus::Succeeded);
    // Finished: the Location URL now answers 200 with the job (no `status` field).
    let poll = env
        .client
        .poll(&location_of(&handle), &poll_scope())
        .await
        .unwrap();
    assert_eq!(poll.status, OperationStatus::Succeeded);

    // The same from the Location URL alone: 202s, then 200.
    let handle = env.validate().await;
    let (status, location_polls) = env.finish(&location_of(&handle)).await;
    assert_eq!(status, OperationStatus::Succeeded);
    env.assert_counts(&[
        (ops::VALIDATE_FOR_BACKUP, 202, 2),
        (ops::OPERATION_STATUS, 200, polls),
        (ops::OPERATION_RESULT, 200, 2),
        (ops::OPERATION_RESULT, 202, location_polls - 1),
    ]);
}

#[tokio::test]
async fn missing_permission_fails_the_operation_until_granted() {
    let env = Env::fast(V2026).await;
    let admin = env.emulator.admin();
    admin.revoke_role(DEFAULT_STORAGE_ACCOUNT_ID).unwrap();
    let body = operational("msblobbackup");
    let handle = env.validate().await;
    let detail = failed(
        env.client
            .poll(&handle.poll_url, &poll_scope())
            .await
            .unwrap()
            .status,
    );
    assert_eq!(detail.code, MISSING_PERMISSIONS);
    assert_eq!(
        detail.message,
        "Appropriate permissions to perform the operation is missing."
    );
    assert_eq!(detail.recommended_actions.len(), 1, "{detail:?}");
    assert!(
        detail.recommended_actions[0]
            .contains("https://aka.ms/UserErrorMissingRequiredPermissions")
    );
    let text = detail
        .detail
        .as_deref()
        .expect("DetailedNonLocalisedMessage");
    assert!(
        text.starts_with("Validate for Protection failed."),
        "{text}"
    );
    assert!(text.contains(DEFAULT_PRINCIPAL_ID), "{text}");
    assert!(
        text.contains("'Microsoft.Authorization/roleAssignments/read'"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "over scope '{DEFAULT_STORAGE_ACCOUNT_ID}/providers/Microsoft.Authorization'"
        )),
        "{text}"
    );

    // Through the Location URL, the failure is the operation's error answer.
    let error = env
        .client
        .poll(&location_of(&handle), &poll_scope())
        .await
        .unwrap_err();
    let (operation, status, from_location) = azure(&error);
    assert_eq!((operation, status), (ops::OPERATION_RESULT, 400));
    assert_eq!(from_location, &detail);
    assert_eq!(error.class(), ErrorClass::NeedsPerson);

    admin.grant_role(DEFAULT_STORAGE_ACCOUNT_ID).unwrap();
    let handle = env.validate().await;
    env.succeeds(&handle).await;

    // Revoked again before the PUT: the PUT is accepted and its configuration fails the same
    // way; GET shows the failure.
    admin.revoke_role(DEFAULT_STORAGE_ACCOUNT_ID).unwrap();
    let id = instance_id("bi-permissions");
    let (handle, _) = pending(env.put(&id, &body).await);
    let detail = failed(env.finish(&handle.poll_url).await.0);
    assert_eq!(detail.code, MISSING_PERMISSIONS);
    assert!(
        detail
            .detail
            .unwrap()
            .starts_with("Configure Protection failed.")
    );
    let resource = env.client.get(&id).await.unwrap().unwrap();
    assert_eq!(
        resource.protection_status(),
        Some("ConfiguringProtectionFailed")
    );
    let details = resource.properties.unwrap().protection_status.unwrap();
    assert_eq!(
        details.error_details.unwrap().code.as_deref(),
        Some(MISSING_PERMISSIONS)
    );
    // Granted, the same PUT again reconfigures (200) and now succeeds.
    admin.grant_role(DEFAULT_STORAGE_ACCOUNT_ID).unwrap();
    let (handle, _) = pending(env.put(&id, &body).await);
    env.succeeds(&handle).await;
    assert_eq!(env.protection_status(&id).await, "ProtectionConfigured");

    env.assert_counts(&[
        (ops::VALIDATE_FOR_BACKUP, 202, 2),
        (ops::OPERATION_STATUS, 200, 4),
        (ops::OPERATION_RESULT, 400, 1),
        (ops::CREATE_OR_UPDATE, 201, 1),
        (ops::CREATE_OR_UPDATE, 200, 1),
        (ops::GET, 200, 2),
    ]);
}

#[tokio::test]
async fn already_protected_needs_a_person_and_names_the_holding_vault() {
    let env = Env::fast(V2026).await;
    env.emulator
        .admin()
        .protect_elsewhere(DEFAULT_STORAGE_ACCOUNT_ID, OTHER_VAULT)
        .unwrap();
    let body = operational("msblobbackup");
    let validate = env
        .client
        .validate_for_backup(&vault(), &body)
        .await
        .result
        .unwrap_err();
    let put = env
        .client
        .create_or_update(&instance_id("bi-1"), &body)
        .await
        .result
        .unwrap_err();
    for (error, expected) in [
        (&validate, ops::VALIDATE_FOR_BACKUP),
        (&put, ops::CREATE_OR_UPDATE),
    ] {
        let (operation, status, detail) = azure(error);
        assert_eq!((operation, status), (expected, 400));
        assert_eq!(error.class(), ErrorClass::NeedsPerson);
        assert_eq!(error.code(), Some("UserErrorDppDatasourceAlreadyProtected"));
        assert_eq!(
            detail.message,
            format!("Datasource is already protected under the Backup vault {OTHER_VAULT}.")
        );
        let [action] = detail.recommended_actions.as_slice() else {
            panic!("one recommended action expected: {detail:?}");
        };
        assert!(
            action.starts_with("Delete the backup instance msblobbackup-"),
            "{action}"
        );
        assert!(
            action.contains(&format!("from the Backup vault {OTHER_VAULT}")),
            "{action}"
        );
        let ArmError::Azure {
            request_id,
            correlation_id,
            ..
        } = error
        else {
            unreachable!()
        };
        assert!(
            request_id.is_some() && correlation_id.is_some(),
            "{error:?}"
        );
        let text = error.to_string();
        for part in [OTHER_VAULT, "Recommended action: Delete", "x-ms-request-id"] {
            assert!(text.contains(part), "{part} missing from: {text}");
        }
    }
    env.assert_counts(&[
        (ops::VALIDATE_FOR_BACKUP, 400, 1),
        (ops::CREATE_OR_UPDATE, 400, 1),
    ]);
}

#[tokio::test]
async fn create_get_update() {
    let env = Env::fast(V2026).await;
    let id = instance_id("msblobbackup-f2df34eb-5628-4570-87b2-0331d797c67d");
    assert_eq!(env.client.get(&id).await.unwrap(), None);

    let body = operational("msblobbackup");
    let (handle, created) = pending(env.put(&id, &body).await);
    assert_eq!(handle.retry_after, Some(Duration::ZERO));
    let created = created.expect("201 carries the resource");
    assert_eq!(created.protection_status(), Some("ConfiguringProtection"));
    let props = created.properties.as_ref().unwrap();
    assert_eq!(props.provisioning_state.as_deref(), Some("Provisioning"));
    assert_eq!(
        env.finish(&handle.poll_url).await,
        (OperationStatus::Succeeded, 1)
    );

    let resource = env.client.get(&id).await.unwrap().unwrap();
    assert_eq!(resource.protection_status(), Some("ProtectionConfigured"));
    assert_eq!(
        BackupInstanceId::parse(resource.id.as_deref().unwrap()).unwrap(),
        id
    );
    assert_eq!(resource.name.as_deref(), Some(id.name()));
    let props = resource.properties.as_ref().unwrap();
    assert_eq!(props.storage_account(), Some(account_id("msblobbackup")));
    assert_eq!(props.policy(), body.policy());
    assert_eq!(props.vaulted_containers(), None);

    // The same body again: 200, nothing to wait for.
    match env
        .client
        .create_or_update(&id, &body)
        .await
        .result
        .unwrap()
    {
        LroStart::Done(Some(same)) => {
            assert_eq!(same.protection_status(), Some("ProtectionConfigured"))
        }
        other => panic!("expected 200 done, got {other:?}"),
    }

    // A changed body: 200 with an operation, then the new policy is in place.
    let changed = vaulted("msblobbackup", &["c1", "c2"]);
    let (handle, updating) = pending(env.put(&id, &changed).await);
    let updating = updating.expect("200 carries the resource");
    let props = updating.properties.as_ref().unwrap();
    assert_eq!(
        props.current_protection_state.as_deref(),
        Some("UpdatingProtection")
    );
    env.succeeds(&handle).await;
    let resource = env.client.get(&id).await.unwrap().unwrap();
    assert_eq!(resource.protection_status(), Some("ProtectionConfigured"));
    let props = resource.properties.unwrap();
    assert_eq!(
        props.vaulted_containers(),
        Some(&["c1".to_owned(), "c2".to_owned()][..])
    );
    assert_eq!(props.policy(), changed.policy());

    env.assert_counts(&[
        (ops::GET, 404, 1),
        (ops::GET, 200, 2),
        (ops::CREATE_OR_UPDATE, 201, 1),
        (ops::CREATE_OR_UPDATE, 200, 2),
        (ops::OPERATION_STATUS, 200, 2),
    ]);
}

#[tokio::test]
async fn vaulted_instances_have_a_recovery_point_from_protection_start() {
    let env = Env::fast(V2026).await;
    add_accounts(&env, &["vaultedacct", "opsacct"]);
    let kept = instance_id("bi-vaulted");
    let operational_id = instance_id("bi-operational");
    env.create(&operational_id, &operational("opsacct")).await;
    let before = jiff::Timestamp::now();
    env.create(&kept, &vaulted("vaultedacct", &["c1"])).await;
    env.reset_counts();
    let latest = env.client.latest_recovery_point(&kept).await.unwrap();
    let latest = latest.expect("a vaulted instance is backed up when protection starts");
    let after = jiff::Timestamp::now();
    // Whole seconds, taken between the PUT and now.
    assert!(
        latest.as_second() >= before.as_second() && latest <= after,
        "{before} <= {latest} <= {after}"
    );

    // Operational backup keeps no discrete recovery points; an unknown instance is a 404.
    assert_eq!(
        env.client
            .latest_recovery_point(&operational_id)
            .await
            .unwrap(),
        None
    );
    let missing = env
        .client
        .latest_recovery_point(&instance_id("bi-missing"))
        .await
        .unwrap_err();
    assert_eq!(azure(&missing).1, 404);
    env.assert_counts(&[
        (ops::RECOVERY_POINTS_LIST, 200, 2),
        (ops::RECOVERY_POINTS_LIST, 404, 1),
    ]);
}

#[tokio::test]
async fn list_follows_next_link_pages() {
    let env = Env::fast(V2026).await;
    env.emulator.admin().set_page_size(2).unwrap();
    assert_eq!(env.client.list(&vault()).await.unwrap(), Vec::new());
    let names = ["acct1", "acct2", "acct3", "acct4", "acct5"];
    add_accounts(&env, &names);
    for name in names {
        env.create(&instance_id(&format!("bi-{name}")), &operational(name))
            .await;
    }
    env.reset_counts();
    let listed = env.client.list(&vault()).await.unwrap();
    let listed: Vec<(&str, &str)> = listed
        .iter()
        .map(|r| (r.name.as_deref().unwrap(), r.protection_status().unwrap()))
        .collect();
    let expected: Vec<(String, &str)> = names
        .iter()
        .map(|n| (format!("bi-{n}"), "ProtectionConfigured"))
        .collect();
    let expected: Vec<(&str, &str)> = expected.iter().map(|(n, s)| (n.as_str(), *s)).collect();
    assert_eq!(listed, expected);
    // Pages of 2, 2 and 1.
    env.assert_counts(&[(ops::LIST, 200, 3)]);
}

#[tokio::test]
async fn delete_polls_to_gone_then_is_done_at_once() {
    let env = Env::fast(V2026).await;
    let id = instance_id("bi-delete");
    env.create(&id, &operational("msblobbackup")).await;
    env.reset_counts();

    let (handle, body) = pending(env.client.delete(&id).await.result.unwrap());
    assert_eq!(body, None);
    assert_eq!(handle.retry_after, Some(Duration::ZERO));
    assert_eq!(
        env.finish(&handle.poll_url).await,
        (OperationStatus::Succeeded, 1)
    );
    assert_eq!(env.client.get(&id).await.unwrap(), None);
    assert_eq!(
        env.client.delete(&id).await.result.unwrap(),
        LroStart::Done(None)
    );
    env.assert_counts(&[
        (ops::DELETE, 202, 1),
        (ops::DELETE, 204, 1),
        (ops::OPERATION_STATUS, 200, 1),
        (ops::GET, 404, 1),
    ]);

    // Followed through its Location URL: 202 while running, then 204.
    env.create(&id, &operational("msblobbackup")).await;
    env.emulator
        .admin()
        .set_latency(Duration::from_millis(50))
        .unwrap();
    env.reset_counts();
    let (handle, _) = pending(env.client.delete(&id).await.result.unwrap());
    let (status, polls) = env.finish(&location_of(&handle)).await;
    assert_eq!(status, OperationStatus::Succeeded);
    assert_eq!(env.client.get(&id).await.unwrap(), None);
    env.assert_counts(&[
        (ops::DELETE, 202, 1),
        (ops::OPERATION_RESULT, 202, polls - 1),
        (ops::OPERATION_RESULT, 204, 1),
        (ops::GET, 404, 1),
    ]);
}

#[tokio::test]
async fn stop_protection_and_sync() {
    let env = Env::fast(V2026).await;
    add_accounts(&env, &["vaultedacct"]);
    let kept = instance_id("bi-vaulted");
    let operational_id = instance_id("bi-operational");
    env.create(&kept, &vaulted("vaultedacct", &["c1"])).await;
    env.create(&operational_id, &operational("msblobbackup"))
        .await;
    env.reset_counts();

    let (handle, _) = pending(env.client.stop_protection(&kept).await.result.unwrap());
    env.succeeds(&handle).await;
    assert_eq!(env.protection_status(&kept).await, "ProtectionStopped");

    let error = env
        .client
        .stop_protection(&operational_id)
        .await
        .result
        .unwrap_err();
    let (operation, status, _) = azure(&error);
    assert_eq!((operation, status), (ops::STOP_PROTECTION, 400));
    assert_eq!(
        error.code(),
        Some("UserErrorStopProtectionNotSupportedForBlobOperationalBackup")
    );
    assert_eq!(error.class(), ErrorClass::NeedsPerson);

    env.emulator
        .admin()
        .set_protection_error(&operational_id.to_string(), "UserErrorBackupFailed")
        .unwrap();
    let resource = env.client.get(&operational_id).await.unwrap().unwrap();
    assert_eq!(resource.protection_status(), Some("ProtectionError"));
    let details = resource.properties.unwrap().protection_status.unwrap();
    assert_eq!(
        details.error_details.unwrap().code.as_deref(),
        Some("UserErrorBackupFailed")
    );
    let (handle, _) = pending(env.client.sync(&operational_id).await.result.unwrap());
    env.succeeds(&handle).await;
    assert_eq!(
        env.protection_status(&operational_id).await,
        "ProtectionConfigured"
    );

    env.assert_counts(&[
        (ops::STOP_PROTECTION, 202, 1),
        (ops::STOP_PROTECTION, 400, 1),
        (ops::SYNC, 202, 1),
        (ops::OPERATION_STATUS, 200, 2),
        (ops::GET, 200, 3),
    ]);

    // At 2021-01-01 the client refuses stopProtection itself: nothing reaches the emulator.
    let old = client(&env.emulator.base_url(), V2021, env.emulator.token());
    let error = old
        .stop_protection(&operational_id)
        .await
        .result
        .unwrap_err();
    assert!(matches!(error, ArmError::Config { .. }), "{error:?}");
    let text = error.to_string();
    assert!(
        text.contains("2021-01-01") && text.contains("stopProtection"),
        "{text}"
    );
    assert_eq!(env.counts()[ops::STOP_PROTECTION].values().sum::<u64>(), 2);

    // Likewise sync, which arrived with stopProtection in 2022-01-01.
    let error = old.sync(&operational_id).await.result.unwrap_err();
    assert!(matches!(error, ArmError::Config { .. }), "{error:?}");
    assert!(error.to_string().contains("has no sync"), "{error}");
    assert_eq!(env.counts()[ops::SYNC].values().sum::<u64>(), 1);
}

/// Instant operations, and `budget` writes (and deletes) per subscription, never refilled.
fn budget_without_refill(budget: u32) -> EmulatorConfig {
    let mut config = fast_config();
    config.behavior.throttle = Some(ThrottleSettings {
        budget,
        refill_per_second: 0.0,
    });
    config
}

#[tokio::test]
async fn writes_past_the_budget_are_throttled_with_retry_after() {
    // No refill: the third write is refused with the emulator's fixed 60 s.
    let env = Env::start(budget_without_refill(2), V2026).await;
    let body = operational("msblobbackup");
    for left in [1, 0] {
        let answer = env.client.validate_for_backup(&vault(), &body).await;
        // Its own x-ms-ratelimit-remaining-subscription-writes.
        assert_eq!(answer.remaining, Some(left));
        pending(answer.result.unwrap());
    }
    let answer = env.client.validate_for_backup(&vault(), &body).await;
    assert_eq!(answer.remaining, Some(0), "the 429 says 0");
    let error = answer.result.unwrap_err();
    let (operation, status, _) = azure(&error);
    assert_eq!((operation, status), (ops::VALIDATE_FOR_BACKUP, 429));
    assert_eq!(error.code(), Some("SubscriptionRequestsThrottled"));
    assert_eq!(error.class(), ErrorClass::Transient);
    assert_eq!(error.retry_after(), Some(Duration::from_secs(60)));
    // Reads are not throttled.
    assert_eq!(env.client.get(&instance_id("bi-1")).await.unwrap(), None);
    env.assert_counts(&[
        (ops::VALIDATE_FOR_BACKUP, 202, 2),
        (ops::VALIDATE_FOR_BACKUP, 429, 1),
        (ops::GET, 404, 1),
    ]);
}

/// Each answer carries the remainder of the budget it spent, whatever other writes were
/// answered in between: another subscription's, or a delete (ARM's separate delete budget).
#[tokio::test]
async fn each_write_answer_reports_its_own_budget() {
    let mut config = budget_without_refill(3);
    let other_subscription = "11111111-1111-1111-1111-111111111111";
    let mut other_vault = config.vaults[0].clone();
    other_vault.id = DEFAULT_VAULT_ID.replace(DEFAULT_SUBSCRIPTION, other_subscription);
    config.vaults.push(other_vault.clone());
    let env = Env::start(config, V2026).await;
    let body = operational("msblobbackup");
    let (ours, other) = (vault(), VaultId::parse(&other_vault.id).unwrap());
    let gone = instance_id("bi-1");
    // Sent at once, answered in any order: each answer has its own figure.
    let (ours_answer, theirs, deleted) = tokio::join!(
        env.client.validate_for_backup(&ours, &body),
        env.client.validate_for_backup(&other, &body),
        env.client.delete(&gone),
    );
    assert_eq!(ours_answer.remaining, Some(2));
    assert_eq!(theirs.remaining, Some(2));
    assert_eq!(deleted.remaining, Some(2), "the delete budget's own figure");
    let again = env.client.validate_for_backup(&vault(), &body).await;
    assert_eq!(again.remaining, Some(1));
    let deleted = env.client.delete(&instance_id("bi-2")).await;
    assert_eq!(deleted.remaining, Some(1));
    assert_eq!(
        dataprotection::WriteKind::Deletes.header(),
        "x-ms-ratelimit-remaining-subscription-deletes"
    );
    // A write refused before it is sent has no figure.
    let refused = env
        .client
        .with_write_gate(std::sync::Arc::new(|| false))
        .validate_for_backup(&vault(), &body)
        .await;
    assert_eq!(refused.remaining, None);
    assert!(refused.result.is_err());
}

fn faults_on(operation: &str, faults: FaultSettings) -> FaultSettings {
    FaultSettings {
        operations: vec![operation.to_owned()],
        retry_after: 3,
        ..faults
    }
}

#[tokio::test]
async fn injected_server_errors_are_transient_with_retry_after() {
    let env = Env::fast(V2026).await;
    let admin = env.emulator.admin();
    let id = instance_id("bi-1");
    let body = operational("msblobbackup");
    let internal = FaultSettings {
        internal_error: 1.0,
        ..FaultSettings::default()
    };
    let unavailable = FaultSettings {
        unavailable: 1.0,
        ..FaultSettings::default()
    };

    admin.set_faults(faults_on(ops::GET, internal)).unwrap();
    let error = env.client.get(&id).await.unwrap_err();
    assert_eq!(azure(&error).0, ops::GET);
    assert_eq!(error.http_status(), Some(500));
    assert_eq!(error.code(), Some("InternalServerError"));
    assert_eq!(error.class(), ErrorClass::Transient);
    assert_eq!(error.retry_after(), Some(Duration::from_secs(3)));

    admin
        .set_faults(faults_on(ops::CREATE_OR_UPDATE, unavailable.clone()))
        .unwrap();
    let error = env
        .client
        .create_or_update(&id, &body)
        .await
        .result
        .unwrap_err();
    assert_eq!(azure(&error).0, ops::CREATE_OR_UPDATE);
    assert_eq!(error.http_status(), Some(503));
    assert_eq!(error.code(), Some("ServiceUnavailable"));
    assert_eq!(error.class(), ErrorClass::Transient);
    assert_eq!(error.retry_after(), Some(Duration::from_secs(3)));

    // While polling, too: the operation is still there once the fault is gone.
    admin
        .set_faults(faults_on(ops::OPERATION_STATUS, unavailable))
        .unwrap();
    let handle = env.validate().await;
    let error = env
        .client
        .poll(&handle.poll_url, &poll_scope())
        .await
        .unwrap_err();
    assert_eq!(azure(&error).0, ops::OPERATION_STATUS);
    assert_eq!(error.http_status(), Some(503));
    assert_eq!(error.class(), ErrorClass::Transient);
    assert_eq!(error.retry_after(), Some(Duration::from_secs(3)));
    admin.set_faults(FaultSettings::default()).unwrap();
    env.succeeds(&handle).await;

    env.assert_counts(&[
        (ops::GET, 500, 1),
        (ops::CREATE_OR_UPDATE, 503, 1),
        (ops::VALIDATE_FOR_BACKUP, 202, 1),
        (ops::OPERATION_STATUS, 503, 1),
        (ops::OPERATION_STATUS, 200, 1),
    ]);
}

#[tokio::test]
async fn a_dropped_connection_is_a_transient_network_error() {
    let env = Env::fast(V2026).await;
    let admin = env.emulator.admin();
    let drop = FaultSettings {
        drop_connection: 1.0,
        ..FaultSettings::default()
    };
    let id = instance_id("bi-1");
    admin.set_faults(faults_on(ops::GET, drop.clone())).unwrap();
    let error = env.client.get(&id).await.unwrap_err();
    assert!(
        matches!(error, ArmError::Network { operation, .. } if operation == ops::GET),
        "{error:?}"
    );
    assert_eq!(error.class(), ErrorClass::Transient);
    assert!(
        error
            .to_string()
            .starts_with("BackupInstances_Get: no answer"),
        "{error}"
    );

    admin
        .set_faults(faults_on(ops::CREATE_OR_UPDATE, drop))
        .unwrap();
    let error = env
        .client
        .create_or_update(&id, &operational("msblobbackup"))
        .await
        .result
        .unwrap_err();
    assert!(
        matches!(error, ArmError::Network { operation, .. } if operation == ops::CREATE_OR_UPDATE),
        "{error:?}"
    );
    // Exactly one attempt each: neither side retries behind the caller's back.
    env.assert_counts(&[(ops::GET, 0, 1), (ops::CREATE_OR_UPDATE, 0, 1)]);
    admin.set_faults(FaultSettings::default()).unwrap();
    assert_eq!(env.client.get(&id).await.unwrap(), None);
}

#[tokio::test]
async fn expired_and_unknown_tokens_need_a_person() {
    let mut config = fast_config();
    config.expired_tokens = vec!["expired-token".to_owned()];
    let env = Env::start(config, V2026).await;
    let base = env.emulator.base_url();
    let id = instance_id("bi-1");

    let expired = client(&base, V2026, "expired-token")
        .get(&id)
        .await
        .unwrap_err();
    let (operation, status, detail) = azure(&expired);
    assert_eq!((operation, status), (ops::GET, 401));
    assert_eq!(detail.code, "ExpiredAuthenticationToken");
    assert_eq!(expired.class(), ErrorClass::NeedsPerson);
    let text = expired.to_string();
    assert!(
        text.starts_with("BackupInstances_Get failed with HTTP 401: ExpiredAuthenticationToken: The access token expiry UTC time"),
        "{text}"
    );

    let unknown = client(&base, V2026, "who-knows")
        .validate_for_backup(&vault(), &operational("msblobbackup"))
        .await
        .result
        .unwrap_err();
    let (operation, status, detail) = azure(&unknown);
    assert_eq!((operation, status), (ops::VALIDATE_FOR_BACKUP, 401));
    assert_eq!(detail.code, "InvalidAuthenticationToken");
    assert_eq!(detail.message, "The access token is invalid.");
    assert_eq!(unknown.class(), ErrorClass::NeedsPerson);

    env.assert_counts(&[(ops::GET, 401, 1), (ops::VALIDATE_FOR_BACKUP, 401, 1)]);
}

#[tokio::test]
async fn the_whole_flow_at_both_api_versions() {
    for version in [V2021, V2026] {
        let env = Env::fast(version).await;
        let id = instance_id("msblobbackup-f2df34eb-5628-4570-87b2-0331d797c67d");
        let body = operational("msblobbackup");
        let suffix = format!("?api-version={version}");

        let handle = env.validate().await;
        assert!(handle.poll_url.ends_with(&suffix), "{handle:?}");
        env.succeeds(&handle).await;
        let (handle, _) = pending(env.put(&id, &body).await);
        assert!(handle.poll_url.ends_with(&suffix), "{handle:?}");
        env.succeeds(&handle).await;
        assert_eq!(
            env.protection_status(&id).await,
            "ProtectionConfigured",
            "{version}"
        );
        let listed = env.client.list(&vault()).await.unwrap();
        assert_eq!(listed.len(), 1, "{version}");
        let (handle, _) = pending(env.client.delete(&id).await.result.unwrap());
        assert!(handle.poll_url.ends_with(&suffix), "{handle:?}");
        env.succeeds(&handle).await;
        assert_eq!(env.client.get(&id).await.unwrap(), None, "{version}");
        env.assert_counts(&[
            (ops::VALIDATE_FOR_BACKUP, 202, 1),
            (ops::CREATE_OR_UPDATE, 201, 1),
            (ops::GET, 200, 1),
            (ops::GET, 404, 1),
            (ops::LIST, 200, 1),
            (ops::DELETE, 202, 1),
            (ops::OPERATION_STATUS, 200, 3),
        ]);
    }
}

#[tokio::test]
async fn urls_off_the_endpoint_are_refused_before_any_request() {
    // A second emulator stands for the foreign host: had the client sent anything (and its
    // token) there, it would have counted it.
    let elsewhere = start_emulator(fast_config()).await;
    let mut config = fast_config();
    config.behavior.latency = Duration::from_secs(60);
    let env = Env::start(config, V2026).await;
    let handle = env.validate().await;
    let home = env.emulator.base_url();
    let home_port = home.port().unwrap();
    let foreign_base = elsewhere.base_url().to_string();
    let rewritten = [
        handle.poll_url.replace(home.as_str(), &foreign_base),
        handle.poll_url.replace("127.0.0.1", "localhost"),
        handle.poll_url.replace("http://", "https://"),
        handle.poll_url.replace(&format!(":{home_port}/"), "/"),
        handle.poll_url.replace("http://", "http://user:secret@"),
    ];
    let before = env.counts();
    for url in &rewritten {
        assert_ne!(url, &handle.poll_url);
        let error = env.client.poll(url, &poll_scope()).await.unwrap_err();
        assert!(
            matches!(&error, ArmError::ForeignPollUrl { url: refused, .. } if refused == url),
            "{error:?}"
        );
        assert_eq!(error.class(), ErrorClass::Bug);
        assert!(error.to_string().contains("no token was sent"), "{error}");
    }
    assert_eq!(env.counts(), before);
    assert_eq!(elsewhere.admin().request_counts(), Counts::new());

    // URLs the emulator itself hands out on another host (its publicUrl knob) are refused
    // the same way: the poll URL of a validate and the nextLink of a list.
    let mut config = fast_config();
    config.public_url = Some(foreign_base.clone());
    config.behavior.page_size = 1;
    let env = Env::start(config, V2026).await;
    add_accounts(&env, &["acct1"]);
    let handle = env.validate().await;
    assert!(handle.poll_url.starts_with(&foreign_base), "{handle:?}");
    let error = env
        .client
        .poll(&handle.poll_url, &poll_scope())
        .await
        .unwrap_err();
    assert!(
        matches!(error, ArmError::ForeignPollUrl { .. }),
        "{error:?}"
    );
    for (name, account) in [("bi-1", "msblobbackup"), ("bi-2", "acct1")] {
        env.client
            .create_or_update(&instance_id(name), &operational(account))
            .await
            .result
            .unwrap();
    }
    let error = env.client.list(&vault()).await.unwrap_err();
    assert!(
        matches!(error, ArmError::ForeignPollUrl { .. }),
        "{error:?}"
    );
    env.assert_counts(&[
        (ops::VALIDATE_FOR_BACKUP, 202, 1),
        (ops::CREATE_OR_UPDATE, 201, 2),
        (ops::LIST, 200, 1),
    ]);
    assert_eq!(elsewhere.admin().request_counts(), Counts::new());
}

/// One call of the operation `operation` (polls use `handle`), its result reduced to success.
async fn attempt(env: &Env, operation: &str, handle: &OperationHandle) -> Result<(), ArmError> {
    let id = instance_id("bi-1");
    match operation {
        ops::GET => env.client.get(&id).await.map(drop),
        ops::LIST => env.client.list(&vault()).await.map(drop),
        ops::CREATE_OR_UPDATE => {
            let body = operational("msblobbackup");
            env.client
                .create_or_update(&id, &body)
                .await
                .result
                .map(drop)
        }
        ops::OPERATION_STATUS => env
            .client
            .poll(&handle.poll_url, &poll_scope())
            .await
            .map(drop),
        ops::OPERATION_RESULT => env
            .client
            .poll(&location_of(handle), &poll_scope())
            .await
            .map(drop),
        other => panic!("no call for {other}"),
    }
}

#[tokio::test]
async fn malformed_and_empty_bodies_are_decode_errors_naming_the_operation() {
    let env = Env::fast(V2026).await;
    let admin = env.emulator.admin();
    let handle = env.validate().await;
    env.reset_counts();
    let malformed = FaultSettings {
        malformed_body: 1.0,
        ..FaultSettings::default()
    };
    let empty = FaultSettings {
        empty_body: 1.0,
        ..FaultSettings::default()
    };
    let needs_a_body = [
        ops::GET,
        ops::LIST,
        ops::CREATE_OR_UPDATE,
        ops::OPERATION_STATUS,
    ];
    let cases = needs_a_body
        .iter()
        .map(|op| (malformed.clone(), *op, "not the expected JSON"))
        .chain([(
            malformed.clone(),
            ops::OPERATION_RESULT,
            "not the expected JSON",
        )])
        .chain(needs_a_body.iter().map(|op| (empty.clone(), *op, "empty")));
    let mut expected = Vec::new();
    for (faults, operation, message) in cases {
        admin.set_faults(faults_on(operation, faults)).unwrap();
        let error = attempt(&env, operation, &handle).await.unwrap_err();
        match &error {
            ArmError::Decode {
                operation: named,
                status: 200,
                message: text,
                request_id: Some(_),
            } if *named == operation => assert!(text.contains(message), "{text}"),
            other => panic!("{operation}: expected a Decode error, got {other:?}"),
        }
        assert_eq!(error.class(), ErrorClass::Bug);
        let text = error.to_string();
        assert!(
            text.starts_with(&format!(
                "{operation}: cannot read Azure's answer (HTTP 200)"
            )),
            "{text}"
        );
        expected.push((operation, 200, 1));
    }

    // Bodies the client does not need are not read: a validate answered 200 is done, and an
    // empty 200 from a Location URL is Azure's "finished, nothing to return".
    admin
        .set_faults(faults_on(ops::VALIDATE_FOR_BACKUP, malformed))
        .unwrap();
    let start = env
        .client
        .validate_for_backup(&vault(), &operational("msblobbackup"))
        .await
        .result
        .unwrap();
    assert_eq!(start, LroStart::Done(None));
    admin
        .set_faults(faults_on(ops::OPERATION_RESULT, empty))
        .unwrap();
    let poll = env
        .client
        .poll(&location_of(&handle), &poll_scope())
        .await
        .unwrap();
    assert_eq!(poll.status, OperationStatus::Succeeded);
    expected.extend([
        (ops::VALIDATE_FOR_BACKUP, 200, 1),
        (ops::OPERATION_RESULT, 200, 1),
    ]);
    env.assert_counts(&expected);
}

/// A restore of `account`'s blobs in place.
fn restore_in_place(account: &str, containers: &[&str], prefixes: &[&str]) -> BlobRestoreTarget {
    BlobRestoreTarget {
        source: account_id(account),
        target: account_id(account),
        location: "westus".into(),
        containers: containers.iter().map(|c| c.to_string()).collect(),
        prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
    }
}

impl Env {
    /// Polls a restore's operation to success; the job it names.
    async fn restore_job(&self, start: LroStart<OperationJobExtendedInfo>) -> String {
        let (handle, _) = pending(start);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let poll = self
                .client
                .poll(&handle.poll_url, &poll_scope())
                .await
                .unwrap();
            if poll.status.is_terminal() {
                assert_eq!(poll.status, OperationStatus::Succeeded);
                return poll.job_id.expect("a restore's operation names its job");
            }
            assert!(Instant::now() < deadline, "still {:?}", poll.status);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn job_state(&self, job: &str) -> JobState {
        let job = self.client.job(&vault(), job).await.unwrap().expect("job");
        job.properties.expect("properties").state()
    }
}

#[tokio::test]
async fn operational_restore_validates_runs_and_ends_in_a_completed_job() {
    let env = Env::fast(V2026).await;
    add_accounts(&env, &["opsacct"]);
    let id = instance_id("bi-ops");
    let before = jiff::Timestamp::now();
    env.create(&id, &operational("opsacct")).await;
    env.reset_counts();
    let day = jiff::SignedDuration::from_hours(24);
    // The range starts at the second after protection started: wait until it has begun.
    let deadline = Instant::now() + Duration::from_secs(5);
    let ranges = loop {
        let now = jiff::Timestamp::now();
        let ranges = env
            .client
            .find_restorable_time_ranges(&id, now - day, now + day)
            .await
            .unwrap();
        if !ranges.is_empty() || Instant::now() > deadline {
            break ranges;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(ranges.len(), 1, "{ranges:?}");
    env.reset_counts();
    let start = dataprotection::parse_azure_time(&ranges[0].start_time).unwrap();
    assert!(
        start >= before - jiff::SignedDuration::from_secs(1),
        "{start} {before}"
    );
    assert!(ranges[0].contains(start));
    assert!(!ranges[0].contains(start - day));

    let request = RestoreRequest::for_blobs(
        &RestoreSource::PointInTime(start),
        &restore_in_place("opsacct", &["images"], &["logs/2026/"]),
    );
    let validated = env
        .client
        .validate_restore(&id, &request)
        .await
        .result
        .unwrap();
    env.succeeds(&pending(validated).0).await;
    let job = env
        .restore_job(env.client.restore(&id, &request).await.result.unwrap())
        .await;
    assert_eq!(env.job_state(&job).await, JobState::Completed);

    // A point before protection started is refused at once, and nothing runs.
    let early = RestoreRequest::for_blobs(
        &RestoreSource::PointInTime(start - day),
        &restore_in_place("opsacct", &[], &[]),
    );
    let error = env.client.restore(&id, &early).await.result.unwrap_err();
    let (operation, status, detail) = azure(&error);
    assert_eq!((operation, status), (ops::TRIGGER_RESTORE, 400));
    assert_eq!(detail.code, "UserErrorInvalidRecoveryPointInTime");
    assert_eq!(error.class(), ErrorClass::NeedsPerson);
    assert!(
        env.client
            .job(&vault(), "no-such-job")
            .await
            .unwrap()
            .is_none()
    );
    env.assert_counts(&[
        (ops::VALIDATE_FOR_RESTORE, 202, 1),
        (ops::TRIGGER_RESTORE, 202, 1),
        (ops::TRIGGER_RESTORE, 400, 1),
        (ops::OPERATION_STATUS, 200, 2),
        (ops::JOBS_GET, 200, 1),
        (ops::JOBS_GET, 404, 1),
    ]);
}

#[tokio::test]
async fn vaulted_restore_from_a_listed_recovery_point_and_a_failing_job() {
    let env = Env::fast(V2026).await;
    add_accounts(&env, &["vaultedacct", "otheracct"]);
    let id = instance_id("bi-vaulted");
    env.create(&id, &vaulted("vaultedacct", &["c1", "c2"]))
        .await;
    let points = env.client.recovery_points(&id).await.unwrap();
    assert_eq!(points.len(), 1);
    let point = RestoreSource::RecoveryPoint(points[0].point_name().unwrap().to_owned());

    let request = RestoreRequest::for_blobs(
        &point,
        &restore_in_place("vaultedacct", &["c1"], &["c1/2026/"]),
    );
    let job = env
        .restore_job(env.client.restore(&id, &request).await.result.unwrap())
        .await;
    assert_eq!(env.job_state(&job).await, JobState::Completed);

    // The next job fails, with the error the admin API armed.
    env.emulator
        .admin()
        .fail_next_restore("UserErrorTargetContainersExistOnAccount", "c1 exists");
    let job = env
        .restore_job(env.client.restore(&id, &request).await.result.unwrap())
        .await;
    match env.job_state(&job).await {
        JobState::Failed(detail) => {
            assert_eq!(detail.code, "UserErrorTargetContainersExistOnAccount");
            assert_eq!(detail.message, "c1 exists");
        }
        other => panic!("{other:?}"),
    }

    // Refused at once: an unknown recovery point; prefixes into another account; a container
    // that is not backed up.
    let refused = |point: &RestoreSource, target: BlobRestoreTarget| {
        RestoreRequest::for_blobs(point, &target)
    };
    let elsewhere = BlobRestoreTarget {
        target: account_id("otheracct"),
        ..restore_in_place("vaultedacct", &["c1"], &["c1/2026/"])
    };
    for (request, code) in [
        (
            refused(
                &RestoreSource::RecoveryPoint("rp-99".into()),
                restore_in_place("vaultedacct", &[], &[]),
            ),
            "UserErrorRestorePointNotFoundInBackupVault",
        ),
        (refused(&point, elsewhere), INVALID_PARAMETER),
        (
            refused(&point, restore_in_place("vaultedacct", &["c9"], &[])),
            INVALID_PARAMETER,
        ),
    ] {
        let error = env
            .client
            .validate_restore(&id, &request)
            .await
            .result
            .unwrap_err();
        assert_eq!(azure(&error).2.code, code);
    }

    // Without the vault's role on the target account, the validation fails (and says so).
    let elsewhere = BlobRestoreTarget {
        target: account_id("otheracct"),
        ..restore_in_place("vaultedacct", &["c2"], &[])
    };
    env.emulator
        .admin()
        .revoke_role(&account_id("otheracct").to_string())
        .unwrap();
    let start = env
        .client
        .validate_restore(&id, &RestoreRequest::for_blobs(&point, &elsewhere))
        .await
        .result
        .unwrap();
    let (status, _) = env.finish(&pending(start).0.poll_url).await;
    assert_eq!(failed(status).code, MISSING_PERMISSIONS);
}

const INVALID_PARAMETER: &str = "UserErrorInvalidParameterInRequest";

/// The owner tags go out in the PUT body and come back on GET; an api-version without tags
/// refuses to send them before any request (Azure would drop them silently).
#[tokio::test]
async fn tags_go_out_with_the_put_and_old_api_versions_refuse_them() {
    let env = Env::fast(V2026).await;
    let id = instance_id("tagged");
    let tags: BTreeMap<String, String> =
        [("blobbackup.io/uid".to_string(), "u-1".to_string())].into();
    let body = operational("msblobbackup");
    env.client
        .create_or_update_tagged(&id, &body, &tags)
        .await
        .result
        .unwrap();
    assert_eq!(
        env.client.get(&id).await.unwrap().unwrap().tags,
        Some(tags.clone())
    );
    assert!(env.client.supports_tags());

    let old = client(&env.emulator.base_url(), "2021-01-01", env.emulator.token());
    assert!(!old.supports_tags());
    env.reset_counts();
    let refused = old.create_or_update_tagged(&id, &body, &tags).await.result;
    assert!(
        matches!(&refused, Err(ArmError::Config { message }) if message.contains("2022-05-01")),
        "{refused:?}"
    );
    env.assert_counts(&[]);
    assert_eq!(old.get(&id).await.unwrap().unwrap().tags, None);
}
