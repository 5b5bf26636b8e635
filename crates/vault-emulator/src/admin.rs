//! The emulator's admin powers, in process (`EmulatorAdmin`) and over HTTP under
//! `/_emulator/` (no token; never counted, throttled or faulted).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::EmulatorError;
use super::config::{
    FaultSettings, InProgressSpelling, ServiceBehavior, StorageAccountConfig, ThrottleSettings,
    duration_text,
};
use super::shared::{Shared, Tally};
use super::state::instance_id_key;

/// Test and demo controls of a running emulator. Cheap to clone.
#[derive(Clone)]
pub struct EmulatorAdmin {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for EmulatorAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmulatorAdmin").finish_non_exhaustive()
    }
}

impl EmulatorAdmin {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Grants "Storage Account Backup Contributor" on the account to every vault's identity.
    pub fn grant_role(&self, storage_account_id: &str) -> Result<(), EmulatorError> {
        self.set_role_assignment(storage_account_id, None, true)
    }

    /// Revokes the backup role on the account from every vault's identity.
    pub fn revoke_role(&self, storage_account_id: &str) -> Result<(), EmulatorError> {
        self.set_role_assignment(storage_account_id, None, false)
    }

    /// Grants or revokes the backup role of one vault (`None`: all vaults) on an account.
    pub fn set_role_assignment(
        &self,
        storage_account_id: &str,
        vault_id: Option<&str>,
        granted: bool,
    ) -> Result<(), EmulatorError> {
        self.shared
            .lock()
            .set_role(storage_account_id, vault_id, granted)
    }

    /// Requests counted for one operation id (e.g. `BackupInstances_CreateOrUpdate`), any status.
    pub fn request_count(&self, operation_id: &str) -> u64 {
        self.shared
            .counts()
            .by_operation
            .get(operation_id)
            .map_or(0, |by_status| by_status.values().sum())
    }

    /// Requests by operation id and status code (0 counts dropped connections); requests that
    /// match no operation are counted under `Unknown`.
    pub fn request_counts(&self) -> BTreeMap<String, BTreeMap<u16, u64>> {
        by_operation(&self.shared.counts())
    }

    /// `BackupInstances_Get` requests answered 200 for the instance named by an ARM id (any
    /// casing) since the counts were last reset; injected faults and 429s are not among them.
    pub fn gets_served(&self, instance_id: &str) -> u64 {
        let key = instance_id_key(instance_id);
        self.shared
            .counts()
            .gets_served
            .get(&key)
            .copied()
            .unwrap_or(0)
    }

    /// [`Self::request_counts`] and the sum of [`Self::gets_served`] over `instance_ids`, read
    /// at the same moment: no request is counted in one and not the other.
    pub fn request_counts_and_gets_served<'a>(
        &self,
        instance_ids: impl IntoIterator<Item = &'a str>,
    ) -> (BTreeMap<String, BTreeMap<u16, u64>>, u64) {
        let counts = self.shared.counts();
        let gets = instance_ids
            .into_iter()
            .filter_map(|id| counts.gets_served.get(&instance_id_key(id)))
            .sum();
        (by_operation(&counts), gets)
    }

    /// Every backup instance, as `BackupInstances_Get` would answer it.
    pub fn instances(&self) -> Vec<Value> {
        self.shared.lock().instance_views(Instant::now())
    }

    /// Deletes an instance at once, behind the operator's back (drift).
    pub fn delete_instance_out_of_band(&self, instance_id: &str) -> Result<(), EmulatorError> {
        self.shared
            .lock()
            .delete_out_of_band(instance_id, Instant::now())
    }

    /// Makes a storage account "already protected" by an instance in another vault.
    pub fn protect_elsewhere(
        &self,
        storage_account_id: &str,
        other_vault_id: &str,
    ) -> Result<(), EmulatorError> {
        self.shared.lock().protect_elsewhere(
            storage_account_id,
            other_vault_id,
            None,
            Instant::now(),
        )
    }

    /// Undoes `protect_elsewhere`.
    pub fn unprotect_elsewhere(&self, storage_account_id: &str) -> Result<(), EmulatorError> {
        self.shared.lock().unprotect_elsewhere(storage_account_id)
    }

    /// Puts an instance into `ProtectionError` with this error code (drift); a successful
    /// sync or PUT clears it.
    pub fn set_protection_error(&self, instance_id: &str, code: &str) -> Result<(), EmulatorError> {
        self.set_protection_error_message(instance_id, code, "Backup failed for the datasource.")
    }

    /// `set_protection_error` with a chosen message.
    pub fn set_protection_error_message(
        &self,
        instance_id: &str,
        code: &str,
        message: &str,
    ) -> Result<(), EmulatorError> {
        self.shared
            .lock()
            .set_protection_error(instance_id, code, message, Instant::now())
    }

    /// Makes the job of the next restore end `Failed` with this error (the restore request
    /// itself is accepted, as Azure accepts one that fails later).
    pub fn fail_next_restore(&self, code: &str, message: &str) {
        self.shared.lock().fail_next_restore(code, message);
    }

    /// Adds storage accounts (or replaces ones with the same id); returns how many.
    pub fn add_storage_accounts(
        &self,
        accounts: &[StorageAccountConfig],
    ) -> Result<usize, EmulatorError> {
        let mut state = self.shared.lock();
        for account in accounts {
            state.add_storage_account(account)?;
        }
        Ok(accounts.len())
    }

    /// The current knobs.
    pub fn behavior(&self) -> ServiceBehavior {
        self.shared.lock().behavior.clone()
    }

    /// Replaces all knobs (checked first).
    pub fn set_behavior(&self, behavior: ServiceBehavior) -> Result<(), EmulatorError> {
        behavior.validate().map_err(EmulatorError::Invalid)?;
        self.shared.lock().set_behavior(behavior);
        Ok(())
    }

    fn update(&self, change: impl FnOnce(&mut ServiceBehavior)) -> Result<(), EmulatorError> {
        let mut behavior = self.behavior();
        change(&mut behavior);
        self.set_behavior(behavior)
    }

    /// Sets the injected faults (re-seeds their random generator).
    pub fn set_faults(&self, faults: FaultSettings) -> Result<(), EmulatorError> {
        self.update(|s| s.faults = faults)
    }

    /// Sets how long operations started from now on take.
    pub fn set_latency(&self, latency: Duration) -> Result<(), EmulatorError> {
        self.update(|s| s.latency = latency)
    }

    /// Sets (or, with `None`, lifts) write throttling; the bucket starts full.
    pub fn set_throttle(&self, throttle: Option<ThrottleSettings>) -> Result<(), EmulatorError> {
        self.update(|s| s.throttle = throttle)
    }

    /// Sets the spelling of the running operation status.
    pub fn set_in_progress_status(
        &self,
        spelling: InProgressSpelling,
    ) -> Result<(), EmulatorError> {
        self.update(|s| s.in_progress_status = spelling)
    }

    /// Sets the page size of list answers.
    pub fn set_page_size(&self, page_size: usize) -> Result<(), EmulatorError> {
        self.update(|s| s.page_size = page_size)
    }

    /// Writes (PUT, DELETE, stopProtection, sync) that named a backup instance while an
    /// operation on it was still running, by operation id: a client that lost track of the
    /// operation it started sends such a second write (benchmarks count them).
    pub fn in_flight_writes(&self) -> BTreeMap<String, u64> {
        self.shared
            .in_flight_writes()
            .iter()
            .map(|(op, count)| ((*op).to_owned(), *count))
            .collect()
    }

    /// Clears the request counts and the in-flight write counts.
    pub fn reset_counts(&self) {
        *self.shared.counts() = Tally::default();
        self.shared.in_flight_writes().clear();
    }

    /// Back to the start: the config's world and knobs, no instances, no operations, no counts.
    pub fn reset(&self) {
        self.shared.reset_state();
        self.reset_counts();
    }
}

fn by_operation(tally: &Tally) -> BTreeMap<String, BTreeMap<u16, u64>> {
    tally
        .by_operation
        .iter()
        .map(|(op, by_status)| ((*op).to_owned(), by_status.clone()))
        .collect()
}

// ----- HTTP -----

struct AdminError(EmulatorError);

impl From<EmulatorError> for AdminError {
    fn from(e: EmulatorError) -> Self {
        Self(e)
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let (status, code) = match &self.0 {
            EmulatorError::NotFound(_) => (StatusCode::NOT_FOUND, "NotFound"),
            _ => (StatusCode::BAD_REQUEST, "BadRequest"),
        };
        let body = json!({"error": {"code": code, "message": self.0.to_string()}});
        (status, axum::Json(body)).into_response()
    }
}

type AdminResult = Result<Response, AdminError>;

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, AdminError> {
    serde_json::from_slice(body)
        .map_err(|e| AdminError(EmulatorError::Invalid(format!("request body: {e}"))))
}

fn ok(value: Value) -> AdminResult {
    Ok(axum::Json(value).into_response())
}

pub(crate) fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/requests", get(requests))
        .route("/reset", post(reset))
        .route("/role-assignments", post(grant).delete(revoke))
        .route("/instances", get(instances).delete(delete_instance))
        .route("/protection-error", post(protection_error))
        .route("/restore-failure", post(restore_failure))
        .route("/storage-accounts", post(storage_accounts))
        .route(
            "/external-protections",
            post(protect_elsewhere).delete(unprotect_elsewhere),
        )
        .route("/settings", get(get_behavior).put(put_behavior))
        .fallback(unknown_admin_route)
}

async fn unknown_admin_route() -> AdminResult {
    Err(EmulatorError::NotFound(
        "admin route; the admin API has /_emulator/ requests, reset, role-assignments, instances, protection-error, restore-failure, storage-accounts, external-protections and settings".into(),
    )
    .into())
}

fn admin(shared: Arc<Shared>) -> EmulatorAdmin {
    EmulatorAdmin::new(shared)
}

async fn requests(State(shared): State<Arc<Shared>>) -> AdminResult {
    ok(json!(admin(shared).request_counts()))
}

#[derive(Deserialize)]
struct ResetQuery {
    scope: Option<String>,
}

async fn reset(State(shared): State<Arc<Shared>>, Query(query): Query<ResetQuery>) -> AdminResult {
    let admin = admin(shared);
    match query.scope.as_deref() {
        None | Some("all") => admin.reset(),
        Some("counts") => admin.reset_counts(),
        Some(other) => {
            return Err(EmulatorError::Invalid(format!(
                "scope '{other}' is not one of: all, counts"
            ))
            .into());
        }
    }
    ok(json!({"reset": query.scope.as_deref().unwrap_or("all")}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RoleAssignment {
    storage_account_id: String,
    vault_id: Option<String>,
}

async fn set_role(shared: Arc<Shared>, body: Bytes, granted: bool) -> AdminResult {
    let request: RoleAssignment = parse(&body)?;
    admin(shared).set_role_assignment(
        &request.storage_account_id,
        request.vault_id.as_deref(),
        granted,
    )?;
    ok(json!({"storageAccountId": request.storage_account_id, "granted": granted}))
}

async fn grant(State(shared): State<Arc<Shared>>, body: Bytes) -> AdminResult {
    set_role(shared, body, true).await
}

async fn revoke(State(shared): State<Arc<Shared>>, body: Bytes) -> AdminResult {
    set_role(shared, body, false).await
}

async fn instances(State(shared): State<Arc<Shared>>) -> AdminResult {
    ok(Value::Array(admin(shared).instances()))
}

#[derive(Deserialize)]
struct IdQuery {
    id: String,
}

async fn delete_instance(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<IdQuery>,
) -> AdminResult {
    admin(shared).delete_instance_out_of_band(&query.id)?;
    ok(json!({"deleted": query.id}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ProtectionError {
    instance_id: String,
    code: String,
    message: Option<String>,
}

async fn protection_error(State(shared): State<Arc<Shared>>, body: Bytes) -> AdminResult {
    let request: ProtectionError = parse(&body)?;
    let admin = admin(shared);
    match &request.message {
        Some(message) => {
            admin.set_protection_error_message(&request.instance_id, &request.code, message)?
        }
        None => admin.set_protection_error(&request.instance_id, &request.code)?,
    }
    ok(json!({"instanceId": request.instance_id, "code": request.code}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RestoreFailure {
    code: String,
    message: String,
}

async fn restore_failure(State(shared): State<Arc<Shared>>, body: Bytes) -> AdminResult {
    let request: RestoreFailure = parse(&body)?;
    admin(shared).fail_next_restore(&request.code, &request.message);
    ok(json!({"code": request.code}))
}

/// One account or a list of them.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    Many(Vec<StorageAccountConfig>),
    One(StorageAccountConfig),
}

async fn storage_accounts(State(shared): State<Arc<Shared>>, body: Bytes) -> AdminResult {
    let accounts = match parse::<OneOrMany>(&body)? {
        OneOrMany::Many(accounts) => accounts,
        OneOrMany::One(account) => vec![account],
    };
    let added = admin(shared).add_storage_accounts(&accounts)?;
    ok(json!({"added": added}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ExternalProtection {
    storage_account_id: String,
    vault_id: String,
    instance_name: Option<String>,
}

async fn protect_elsewhere(State(shared): State<Arc<Shared>>, body: Bytes) -> AdminResult {
    let request: ExternalProtection = parse(&body)?;
    shared.lock().protect_elsewhere(
        &request.storage_account_id,
        &request.vault_id,
        request.instance_name.as_deref(),
        Instant::now(),
    )?;
    ok(json!({"storageAccountId": request.storage_account_id, "vaultId": request.vault_id}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AccountQuery {
    storage_account_id: String,
}

async fn unprotect_elsewhere(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<AccountQuery>,
) -> AdminResult {
    admin(shared).unprotect_elsewhere(&query.storage_account_id)?;
    ok(json!({"storageAccountId": query.storage_account_id}))
}

async fn get_behavior(State(shared): State<Arc<Shared>>) -> AdminResult {
    ok(serde_json::to_value(admin(shared).behavior()).unwrap_or_default())
}

/// A partial `ServiceBehavior`: only the knobs present change (`throttle: null` lifts throttling).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct BehaviorPatch {
    #[serde(default, deserialize_with = "some_duration")]
    latency: Option<Duration>,
    #[serde(default, deserialize_with = "some")]
    retry_after: Option<Option<u64>>,
    in_progress_status: Option<InProgressSpelling>,
    page_size: Option<usize>,
    #[serde(default, deserialize_with = "some")]
    throttle: Option<Option<ThrottleSettings>>,
    faults: Option<FaultSettings>,
}

/// Present (even as `null`) => `Some`, so `null` can mean "turn off" and absence "unchanged".
fn some<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

fn some_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration_text::deserialize(d).map(Some)
}

async fn put_behavior(State(shared): State<Arc<Shared>>, body: Bytes) -> AdminResult {
    let patch: BehaviorPatch = parse(&body)?;
    let admin = admin(shared);
    admin.update(|s| {
        if let Some(v) = patch.latency {
            s.latency = v;
        }
        if let Some(v) = patch.retry_after {
            s.retry_after = v;
        }
        if let Some(v) = patch.in_progress_status {
            s.in_progress_status = v;
        }
        if let Some(v) = patch.page_size {
            s.page_size = v;
        }
        if let Some(v) = patch.throttle {
            s.throttle = v;
        }
        if let Some(v) = patch.faults {
            s.faults = v;
        }
    })?;
    ok(serde_json::to_value(admin.behavior()).unwrap_or_default())
}
