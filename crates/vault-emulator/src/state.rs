//! The emulated world and its rules. Long-running operations finish by the clock: each
//! records when it is done, and every read settles what has finished by then (no timers).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::ops::Bound;
use std::time::{Duration, Instant};

use base64::Engine as _;
use jiff::Timestamp;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Value, json};

use dataprotection::OperationAction;

use super::EmulatorError;
use super::config::{
    EmulatorConfig, PolicyTier, ServiceBehavior, StorageAccountConfig, ThrottleSettings,
    check_storage_account,
};
use super::keys::{KeyedId, parse_policy_id, parse_storage_account_id, parse_vault_id};
use super::model::{
    ErrorBody, InstanceProblem, UserFacingError, already_protected, as_read, asks_auto_protection,
    missing_permissions, parse_body, read_backup_instance,
};
use dataprotection::models::{
    BackupInstance, BackupInstanceResource, BackupInstanceResourceList, OperationJobExtendedInfo,
    OperationResource, ProtectionStatusDetails,
};

mod restore;

const INSTANCE_TYPE: &str = "Microsoft.DataProtection/backupVaults/backupInstances";
const RECOVERY_POINT_TYPE: &str =
    "Microsoft.DataProtection/backupVaults/backupInstances/recoveryPoints";
/// How often a vaulted instance is backed up (a daily policy, the most frequent Azure allows
/// for vaulted blob backup).
pub const BACKUP_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// Recovery points a vaulted instance keeps (30 days of daily backups).
const RETAINED_RECOVERY_POINTS: u64 = 30;
const BLOB_DATASOURCE_TYPES: [&str; 2] = [
    "Microsoft.Storage/storageAccounts/blobServices",
    "Microsoft.Storage/storageAccounts/adlsBlobServices",
];
/// The service's limit of containers in a vaulted backup instance.
const MAX_CONTAINERS: usize = 100;
/// Finished operations stay readable this long.
const OPERATION_RETENTION: Duration = Duration::from_secs(3600);
const INVALID_PARAMETER: &str = "UserErrorInvalidParameterInRequest";

/// What one request needs to know besides its own path and body.
pub(crate) struct Ctx<'a> {
    /// `http://host:port` for the URLs the emulator hands out.
    pub base: &'a str,
    pub api_version: &'a str,
    /// Echoed as `ActivityId` in user errors (the correlation id, as in the article).
    pub activity_id: &'a str,
    pub now: Instant,
    pub wall: Timestamp,
}

/// Where to follow an operation: what `Azure-AsyncOperation`, `Location` and `Retry-After` say.
#[derive(Debug)]
pub(crate) struct OperationLink {
    /// The operationStatus URL.
    pub status_url: String,
    /// The operationResults URL.
    pub result_url: String,
    pub retry_after: u64,
}

/// What a request did to the world; `reply` turns it into status, headers and body.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// An operation started, or the same one still runs (`None`: it has expired).
    Accepted(Option<OperationLink>),
    /// A PUT: the instance as it is now, new or not, and the operation it runs (if any).
    Put {
        created: bool,
        instance: Option<BackupInstanceResource>,
        operation: Option<OperationLink>,
    },
    Instance(BackupInstanceResource),
    InstancePage(BackupInstanceResourceList),
    /// A page of recovery points (the emulator has no model of them beyond this document).
    RecoveryPointPage(Value),
    /// The restorable time ranges of an instance (a document, as the recovery points).
    RestorableTimeRanges(Value),
    /// A backup job (a document, as the recovery points).
    BackupJob(Value),
    OperationStatus(OperationResource),
    /// The result of a finished create or update: the instance (`None`: gone since).
    InstanceResult(Option<BackupInstanceResource>),
    /// The result of a finished validate, stopProtection or sync.
    Job(OperationJobExtendedInfo),
    /// Nothing to change (stopProtection of a stopped instance).
    Unchanged,
    /// Nothing (left) to delete.
    Gone,
}

/// Why a request changed nothing.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// A vault or backup instance that does not exist (ARM's `ResourceNotFound`).
    ResourceNotFound {
        resource_type: &'static str,
        name: String,
        resource_group: String,
    },
    /// The body is not JSON of the expected shape.
    InvalidContent(String),
    /// The service rejects the request (a `UserError…` code).
    UserError { code: &'static str, message: String },
    /// A policy or storage account the request names does not exist.
    ReferenceNotFound(String),
    /// A different operation runs on the instance.
    AnotherOperationInProgress,
    /// The storage account is protected by another backup instance.
    AlreadyProtected(ErrorBody),
    /// No operation has this id (in this subscription), or it expired.
    OperationNotFound(String),
    /// The operation ended `Failed`: its result is its error.
    OperationFailed(ErrorBody),
}

/// Either way, what a request came to.
pub(crate) type Verdict = Result<Outcome, Refusal>;

struct Operation {
    subscription: String,
    location: String,
    kind: OperationAction,
    instance_key: Option<String>,
    start_wall: Timestamp,
    done_at: Instant,
    duration: Duration,
    failure: Option<ErrorBody>,
    job_id: String,
}

struct Vault {
    id: KeyedId,
    location: String,
    principal_id: String,
    /// Lower-cased policy name => tier.
    policies: HashMap<String, PolicyTier>,
}

struct Account {
    id: KeyedId,
    location: String,
    /// Keys of the vaults whose identity holds the backup role here.
    granted: HashSet<String>,
}

/// Who protects a storage account.
#[derive(Clone)]
enum Holder {
    Instance(String),
    /// Protection outside this emulator's vaults (`protect_elsewhere`).
    External {
        vault_id: String,
        instance_name: String,
    },
}

#[derive(Clone, Debug)]
enum Phase {
    Configured,
    ConfigureFailed(Box<UserFacingError>),
    Stopped,
}

struct Pending {
    op_id: String,
    kind: OperationAction,
    done_at: Instant,
    failure: Option<UserFacingError>,
}

struct Instance {
    id: String,
    name: String,
    vault_key: String,
    account_key: String,
    props: BackupInstance,
    tags: Option<BTreeMap<String, String>>,
    vaulted: bool,
    phase: Phase,
    pending: Option<Pending>,
    protection_error: Option<UserFacingError>,
    /// When protection was first configured: vaulted instances get a recovery point then
    /// and every [`BACKUP_INTERVAL`] after.
    protected_since: Option<Instant>,
}

/// What a request resolved to after the checks validate and PUT share.
struct Checked {
    account_key: String,
    account_name: String,
    vaulted: bool,
    /// The failure the operation will end with when the vault lacks the role.
    permission_failure: Option<ErrorBody>,
}

/// What a PUT does to an existing (or missing) instance.
enum PutPlan {
    Create,
    /// Same body, configured: answer 200 with no operation.
    Unchanged,
    /// Same body as the operation still running: point at it.
    Running(String),
    /// Changed body: reconfigure (200 + UpdatingProtection).
    Update,
}

/// Which fault to inject into one request.
pub(crate) enum Fault {
    Drop,
    /// 200 with a body cut off mid-document.
    MalformedBody,
    /// 200 announcing JSON with no body at all.
    EmptyBody,
    Slow(Duration),
    /// 500 with this `Retry-After`.
    InternalError(u64),
    /// 503 with this `Retry-After`.
    Unavailable(u64),
}

/// ARM's two per-subscription write budgets: deletes are counted apart from other writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Budget {
    /// PUT and POST.
    Writes,
    /// DELETE.
    Deletes,
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

/// The whole emulated world; one mutex guards it.
pub(crate) struct State {
    pub behavior: ServiceBehavior,
    vaults: HashMap<String, Vault>,
    accounts: HashMap<String, Account>,
    instances: BTreeMap<String, Instance>,
    holders: HashMap<String, Holder>,
    operations: HashMap<String, Operation>,
    operation_order: VecDeque<(Instant, String)>,
    /// The write buckets, one per subscription and [`Budget`], full when first used.
    buckets: HashMap<(String, Budget), Bucket>,
    rng: fastrand::Rng,
    /// First half of every operation id (Azure's ids are base64 of `guid;guid`).
    emulator_guid: uuid::Uuid,
    restores: restore::Restores,
}

/// The ARM path of an operation's `kind` document (operationStatus or operationResults).
fn operation_path(op: &Operation, kind: &str, id: &str) -> String {
    format!(
        "/subscriptions/{}/providers/Microsoft.DataProtection/locations/{}/{kind}/{id}",
        op.subscription, op.location
    )
}

pub(crate) fn instance_key(vault_key: &str, name: &str) -> String {
    format!("{vault_key}/backupinstances/{}", name.to_ascii_lowercase())
}

/// The key of the instance an ARM id names (any casing): [`instance_key`]'s spelling.
pub(crate) fn instance_id_key(instance_id: &str) -> String {
    format!(
        "/{}",
        instance_id.trim().trim_matches('/').to_ascii_lowercase()
    )
}

/// `2021-07-07T12:48:50.3432229Z`, as the status documents print `startTime`.
fn start_time(ts: Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%S%.7fZ").to_string()
}

/// `2021-07-07T12:49:22Z`, as they print `endTime`.
fn end_time(ts: Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Applies a pending operation that has finished; true when the instance is gone.
fn settle(instance: &mut Instance, now: Instant) -> bool {
    let Some(pending) = instance.pending.take_if(|p| now >= p.done_at) else {
        return false;
    };
    match (pending.kind, pending.failure) {
        (OperationAction::Delete, _) => return true,
        (OperationAction::Create | OperationAction::Update, Some(error)) => {
            instance.phase = Phase::ConfigureFailed(Box::new(error));
        }
        (OperationAction::Create | OperationAction::Update, None) => {
            instance.phase = Phase::Configured;
            instance.protection_error = None;
            instance.protected_since.get_or_insert(pending.done_at);
        }
        (OperationAction::StopProtection, None) => instance.phase = Phase::Stopped,
        (OperationAction::Sync, None) => instance.protection_error = None,
        (
            OperationAction::StopProtection
            | OperationAction::Sync
            | OperationAction::Validate
            | OperationAction::ValidateRestore
            | OperationAction::Restore,
            _,
        ) => {}
    }
    false
}

/// How many recovery points a vaulted instance has taken by `now` (one when protection was
/// configured, one every [`BACKUP_INTERVAL`] since); 0 for operational ones. `rp-{n}` names
/// the n-th, the newest [`RETAINED_RECOVERY_POINTS`] of them are kept.
fn recovery_points_taken(instance: &Instance, now: Instant) -> u64 {
    instance
        .protected_since
        .filter(|_| instance.vaulted)
        .map_or(0, |since| {
            let elapsed = now.saturating_duration_since(since);
            (elapsed.as_secs() / BACKUP_INTERVAL.as_secs()).saturating_add(1)
        })
}

/// The resource as GET shows it.
/// The instance as an answer at `ctx`'s api-version: versions without tags (2021-01-01)
/// leave them out.
fn view_at(instance: &Instance, ctx: &Ctx) -> BackupInstanceResource {
    let mut resource = view(instance);
    if !dataprotection::api_version_has_tags(ctx.api_version) {
        resource.tags = None;
    }
    resource
}

fn view(instance: &Instance) -> BackupInstanceResource {
    let mut props = instance.props.clone();
    fn configured(
        error: &Option<UserFacingError>,
        settled: &'static str,
    ) -> (
        &'static str,
        &'static str,
        &'static str,
        Option<UserFacingError>,
    ) {
        match error {
            Some(e) => (
                "ProtectionError",
                "ProtectionError",
                "Succeeded",
                Some(e.clone()),
            ),
            None => (settled, settled, "Succeeded", None),
        }
    }
    let base = match &instance.phase {
        Phase::Configured => configured(&instance.protection_error, "ProtectionConfigured"),
        Phase::Stopped => configured(&instance.protection_error, "ProtectionStopped"),
        Phase::ConfigureFailed(e) => (
            "ConfiguringProtectionFailed",
            "ConfiguringProtectionFailed",
            "Failed",
            Some(e.as_ref().clone()),
        ),
    };
    let (status, current, provisioning, error) = match instance.pending.as_ref().map(|p| p.kind) {
        Some(OperationAction::Create) => (
            "ConfiguringProtection",
            "ConfiguringProtection",
            "Provisioning",
            None,
        ),
        Some(OperationAction::Update) => (
            "ConfiguringProtection",
            "UpdatingProtection",
            "Updating",
            None,
        ),
        Some(OperationAction::Delete) => (base.0, base.1, "Deleting", base.3),
        _ => base,
    };
    let error = error.as_ref().and_then(as_read);
    props.protection_status = Some(ProtectionStatusDetails {
        error_details: error.clone(),
        status: Some(status.to_owned()),
    });
    props.current_protection_state = Some(current.to_owned());
    props.protection_error_details = error;
    props.provisioning_state = Some(provisioning.to_owned());
    BackupInstanceResource {
        id: Some(instance.id.clone()),
        name: Some(instance.name.clone()),
        resource_type: Some(INSTANCE_TYPE.to_owned()),
        tags: instance.tags.clone(),
        properties: Some(props),
    }
}

impl Bucket {
    /// Takes one write: the whole tokens left, or the seconds until one is back.
    fn take(&mut self, limits: &ThrottleSettings, now: Instant) -> Result<u64, u64> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens =
            (self.tokens + elapsed * limits.refill_per_second).min(f64::from(limits.budget));
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(self.tokens.floor() as u64)
        } else if limits.refill_per_second > 0.0 {
            Err((((1.0 - self.tokens) / limits.refill_per_second).ceil() as u64).max(1))
        } else {
            Err(60)
        }
    }
}

impl State {
    /// Builds the world of a (validated) config.
    pub fn new(config: &EmulatorConfig) -> Self {
        let mut state = Self {
            behavior: config.behavior.clone(),
            vaults: HashMap::new(),
            accounts: HashMap::new(),
            instances: BTreeMap::new(),
            holders: HashMap::new(),
            operations: HashMap::new(),
            operation_order: VecDeque::new(),
            buckets: HashMap::new(),
            rng: fastrand::Rng::with_seed(config.behavior.faults.seed),
            emulator_guid: uuid::Uuid::new_v4(),
            restores: restore::Restores::default(),
        };
        for vault in &config.vaults {
            let Ok(id) = parse_vault_id(&vault.id) else {
                continue;
            };
            let policies = vault
                .policies
                .iter()
                .map(|p| (p.name.to_ascii_lowercase(), p.tier))
                .collect();
            let principal_id = vault
                .principal_id
                .clone()
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            state.vaults.insert(
                id.key.clone(),
                Vault {
                    id,
                    location: vault.location.clone(),
                    principal_id,
                    policies,
                },
            );
        }
        for account in &config.storage_accounts {
            // Validated configs cannot fail here; a bad entry is skipped rather than fatal.
            let _ = state.add_storage_account(account);
        }
        state
    }

    /// Replaces the knobs; the write buckets refill and the fault generator is re-seeded.
    pub fn set_behavior(&mut self, behavior: ServiceBehavior) {
        self.rng = fastrand::Rng::with_seed(behavior.faults.seed);
        self.behavior = behavior;
        self.buckets.clear();
    }

    /// Picks the fault (if any) for one request of operation `operation_id`.
    pub fn roll_fault(&mut self, operation_id: &str) -> Option<Fault> {
        let faults = &self.behavior.faults;
        if !faults.any()
            || !(faults.operations.is_empty()
                || faults.operations.iter().any(|o| o == operation_id))
        {
            return None;
        }
        let roll = self.rng.f64();
        // In the order of FaultSettings::named_shares: each fault owns the next slice of 0..1.
        let slices = [
            (
                faults.internal_error,
                Fault::InternalError(faults.retry_after),
            ),
            (faults.unavailable, Fault::Unavailable(faults.retry_after)),
            (faults.drop_connection, Fault::Drop),
            (faults.malformed_body, Fault::MalformedBody),
            (faults.empty_body, Fault::EmptyBody),
            (faults.slow, Fault::Slow(faults.slow_delay)),
        ];
        let mut edge = 0.0;
        for (share, fault) in slices {
            edge += share;
            if roll < edge {
                return Some(fault);
            }
        }
        None
    }

    /// Takes one write from the subscription's `budget` (each subscription has its own, as
    /// in ARM): `Ok(remaining)` (`None` when not throttling) or `Err(retry_after_secs)`.
    pub fn take_write(
        &mut self,
        subscription: &str,
        budget: Budget,
        now: Instant,
    ) -> Result<Option<u64>, u64> {
        let Some(limits) = &self.behavior.throttle else {
            return Ok(None);
        };
        // Subscription IDs are GUIDs, compared without regard to case.
        let key = (subscription.to_ascii_lowercase(), budget);
        let bucket = self.buckets.entry(key).or_insert_with(|| Bucket {
            tokens: f64::from(limits.budget),
            last: now,
        });
        bucket.take(limits, now).map(Some)
    }

    fn vault(&self, vault: &KeyedId) -> Result<&Vault, Refusal> {
        self.vaults
            .get(&vault.key)
            .ok_or_else(|| Refusal::ResourceNotFound {
                resource_type: "Microsoft.DataProtection/backupVaults",
                name: vault.name.clone(),
                resource_group: vault.resource_group.clone(),
            })
    }

    /// The instance, with finished operations applied; `None` when it does not exist (any more).
    fn live(&mut self, key: &str, now: Instant) -> Option<&mut Instance> {
        if settle(self.instances.get_mut(key)?, now) {
            self.remove_instance(key);
            return None;
        }
        self.instances.get_mut(key)
    }

    /// Whether an operation on the instance is still running (finished ones are applied first).
    pub fn operation_running(&mut self, vault: &KeyedId, name: &str, now: Instant) -> bool {
        let key = instance_key(&vault.key, name);
        self.live(&key, now).is_some_and(|i| i.pending.is_some())
    }

    fn remove_instance(&mut self, key: &str) -> bool {
        let Some(instance) = self.instances.remove(key) else {
            return false;
        };
        if matches!(self.holders.get(&instance.account_key), Some(Holder::Instance(k)) if k == key)
        {
            self.holders.remove(&instance.account_key);
        }
        true
    }

    /// The vault id and instance name protecting an account, unless it is `own_key`.
    fn protected_elsewhere(
        &mut self,
        account_key: &str,
        own_key: Option<&str>,
        now: Instant,
    ) -> Option<(String, String)> {
        match self.holders.get(account_key).cloned()? {
            Holder::External {
                vault_id,
                instance_name,
            } => Some((vault_id, instance_name)),
            Holder::Instance(key) if Some(key.as_str()) == own_key => None,
            Holder::Instance(key) => {
                let instance = self.live(&key, now)?;
                let (vault_key, name) = (instance.vault_key.clone(), instance.name.clone());
                let vault_id = self
                    .vaults
                    .get(&vault_key)
                    .map_or(vault_key, |v| v.id.display.clone());
                Some((vault_id, name))
            }
        }
    }

    /// The checks validateForBackup and PUT share, in the order the service reports them.
    fn check(
        &mut self,
        ctx: &Ctx,
        vault_id: &KeyedId,
        props: &BackupInstance,
        own_key: Option<&str>,
    ) -> Result<Checked, Refusal> {
        let vault_key = vault_id.key.as_str();
        let bad = |code: &'static str, message: String| Refusal::UserError { code, message };
        let not_found = Refusal::ReferenceNotFound;
        let datasource = &props.data_source_info;
        let resource_id = datasource.resource_id.as_str();
        let datasource_type = datasource.datasource_type.as_deref().unwrap_or_default();
        if !BLOB_DATASOURCE_TYPES
            .iter()
            .any(|t| t.eq_ignore_ascii_case(datasource_type))
        {
            return Err(bad(
                INVALID_PARAMETER,
                format!(
                    "dataSourceInfo.datasourceType '{datasource_type}' is not supported; expected {}.",
                    BLOB_DATASOURCE_TYPES.join(" or ")
                ),
            ));
        }
        let policy_id = props.policy_info.policy_id.as_str();
        let (policy_vault, policy_name) =
            parse_policy_id(policy_id).map_err(|m| bad(INVALID_PARAMETER, m))?;
        let account_id =
            parse_storage_account_id(resource_id).map_err(|m| bad(INVALID_PARAMETER, m))?;
        let vault = self.vault(vault_id)?;
        if policy_vault.key != vault.id.key {
            return Err(bad(
                INVALID_PARAMETER,
                format!(
                    "The backup policy {policy_id} does not belong to the Backup vault {}.",
                    vault.id.display
                ),
            ));
        }
        let tier = *vault
            .policies
            .get(&policy_name.to_ascii_lowercase())
            .ok_or_else(|| {
                not_found(format!(
                    "The backup policy '{policy_name}' was not found in the Backup vault {}.",
                    vault.id.display
                ))
            })?;
        let account = self.accounts.get(&account_id.key).ok_or_else(|| {
            not_found(format!(
                "The storage account {} was not found.",
                account_id.display
            ))
        })?;
        if normalize_location(&account.location) != normalize_location(&vault.location) {
            return Err(bad(
                "UserErrorDatasourceAndBackupVaultLocationMismatch",
                format!(
                    "The storage account is in '{}' but the Backup vault is in '{}'; they must be in the same region.",
                    account.location, vault.location
                ),
            ));
        }
        check_tier(props, tier, &policy_name).map_err(|(code, m)| bad(code, m))?;
        let permission_failure = (!account.granted.contains(vault_key)).then(|| {
            missing_permissions(
                if own_key.is_some() {
                    "Configure Protection"
                } else {
                    "Validate for Protection"
                },
                &vault.principal_id,
                &account.id.display,
                ctx.activity_id,
            )
        });
        let checked = Checked {
            account_key: account.id.key.clone(),
            account_name: account.id.name.clone(),
            vaulted: tier == PolicyTier::Vaulted,
            permission_failure,
        };
        if let Some((vault_id, instance_name)) =
            self.protected_elsewhere(&checked.account_key, own_key, ctx.now)
        {
            return Err(Refusal::AlreadyProtected(already_protected(
                &vault_id,
                &instance_name,
                ctx.activity_id,
            )));
        }
        Ok(checked)
    }

    fn status_url(ctx: &Ctx, op: &Operation, id: &str, kind: &str) -> String {
        format!(
            "{}{}?api-version={}",
            ctx.base,
            operation_path(op, kind, id),
            ctx.api_version
        )
    }

    /// Where to follow operation `op_id`; `None` once it has expired.
    fn operation_link(&self, ctx: &Ctx, op_id: &str) -> Option<OperationLink> {
        let op = self.operations.get(op_id)?;
        Some(OperationLink {
            status_url: Self::status_url(ctx, op, op_id, "operationStatus"),
            result_url: Self::status_url(ctx, op, op_id, "operationResults"),
            retry_after: self.behavior.operation_retry_after(),
        })
    }

    fn start_operation(
        &mut self,
        ctx: &Ctx,
        vault_key: &str,
        kind: OperationAction,
        instance_key: Option<String>,
        failure: Option<ErrorBody>,
    ) -> String {
        while let Some((done_at, _)) = self.operation_order.front() {
            if ctx.now.saturating_duration_since(*done_at) < OPERATION_RETENTION {
                break;
            }
            if let Some((_, id)) = self.operation_order.pop_front() {
                self.operations.remove(&id);
            }
        }
        let id = base64::engine::general_purpose::URL_SAFE.encode(format!(
            "{};{}",
            self.emulator_guid,
            uuid::Uuid::new_v4()
        ));
        let (subscription, location) = self
            .vaults
            .get(vault_key)
            .map(|v| (v.id.subscription.clone(), normalize_location(&v.location)))
            .unwrap_or_default();
        let duration = self.behavior.latency;
        let done_at = ctx.now + duration;
        self.operations.insert(
            id.clone(),
            Operation {
                subscription,
                location,
                kind,
                instance_key,
                start_wall: ctx.wall,
                done_at,
                duration,
                failure,
                job_id: uuid::Uuid::new_v4().to_string(),
            },
        );
        self.operation_order.push_back((done_at, id.clone()));
        id
    }

    /// Puts an operation on an instance; it becomes the instance's pending work.
    fn start_instance_operation(
        &mut self,
        ctx: &Ctx,
        key: &str,
        kind: OperationAction,
        failure: Option<ErrorBody>,
    ) -> String {
        let vault_key = self
            .instances
            .get(key)
            .map(|i| i.vault_key.clone())
            .unwrap_or_default();
        let user_failure = failure
            .as_ref()
            .and_then(|f| f.additional_info.as_ref())
            .and_then(|infos| infos.first())
            .map(|i| i.info.clone());
        let op_id = self.start_operation(ctx, &vault_key, kind, Some(key.to_owned()), failure);
        let done_at = self.operations[&op_id].done_at;
        if let Some(instance) = self.instances.get_mut(key) {
            instance.pending = Some(Pending {
                op_id: op_id.clone(),
                kind,
                done_at,
                failure: user_failure,
            });
        }
        op_id
    }

    /// POST validateForBackup.
    pub fn validate_for_backup(&mut self, ctx: &Ctx, vault: &KeyedId, body: &[u8]) -> Verdict {
        self.vault(vault)?;
        let mut request: Value = parse_body(body).map_err(Refusal::InvalidContent)?;
        let props = request_instance(&mut request, "backupInstance")?;
        let checked = self.check(ctx, vault, &props, None)?;
        let op = self.start_operation(
            ctx,
            &vault.key,
            OperationAction::Validate,
            None,
            checked.permission_failure,
        );
        Ok(Outcome::Accepted(self.operation_link(ctx, &op)))
    }

    /// PUT backupInstances/{name}.
    pub fn put_instance(&mut self, ctx: &Ctx, vault: &KeyedId, name: &str, body: &[u8]) -> Verdict {
        let vault_display = self.vault(vault)?.id.display.clone();
        let mut request: Value = parse_body(body).map_err(Refusal::InvalidContent)?;
        let mut props = request_instance(&mut request, "properties")?;
        // What is left: the resource's envelope (`tags`; `id`, `name` and `type` are ignored).
        let resource: BackupInstanceResource =
            serde_json::from_value(request).map_err(|e| Refusal::InvalidContent(e.to_string()))?;
        let key = instance_key(&vault.key, name);
        let checked = self.check(ctx, vault, &props, Some(&key))?;
        // Versions without tags ignore any sent: the instance keeps the ones it has.
        let tags = if dataprotection::api_version_has_tags(ctx.api_version) {
            resource.tags
        } else {
            self.live(&key, ctx.now)
                .and_then(|existing| existing.tags.clone())
        };
        if props.friendly_name.is_none() {
            props.friendly_name = Some(checked.account_name.clone());
        }
        let plan = match self.live(&key, ctx.now) {
            None => PutPlan::Create,
            Some(existing) => {
                if existing.account_key != checked.account_key {
                    return Err(Refusal::UserError {
                        code: INVALID_PARAMETER,
                        message: "The datasource of a backup instance cannot be changed; create a new backup instance.".into(),
                    });
                }
                let same = existing.props == props && existing.tags == tags;
                match &existing.pending {
                    Some(p)
                        if same
                            && matches!(
                                p.kind,
                                OperationAction::Create | OperationAction::Update
                            ) =>
                    {
                        PutPlan::Running(p.op_id.clone())
                    }
                    Some(_) => return Err(Refusal::AnotherOperationInProgress),
                    None if same
                        && matches!(existing.phase, Phase::Configured)
                        && existing.protection_error.is_none() =>
                    {
                        PutPlan::Unchanged
                    }
                    None => {
                        existing.props = props.clone();
                        existing.tags = tags.clone();
                        existing.vaulted = checked.vaulted;
                        PutPlan::Update
                    }
                }
            }
        };
        let (created, op_id) = match plan {
            PutPlan::Unchanged => (false, None),
            PutPlan::Running(op) => (false, Some(op)),
            PutPlan::Update => {
                let op = self.start_instance_operation(
                    ctx,
                    &key,
                    OperationAction::Update,
                    checked.permission_failure,
                );
                (false, Some(op))
            }
            PutPlan::Create => {
                self.instances.insert(
                    key.clone(),
                    Instance {
                        id: format!("{vault_display}/backupInstances/{name}"),
                        name: name.to_owned(),
                        vault_key: vault.key.clone(),
                        account_key: checked.account_key.clone(),
                        props,
                        tags,
                        vaulted: checked.vaulted,
                        phase: Phase::Configured,
                        pending: None,
                        protection_error: None,
                        protected_since: None,
                    },
                );
                self.holders
                    .insert(checked.account_key.clone(), Holder::Instance(key.clone()));
                let op = self.start_instance_operation(
                    ctx,
                    &key,
                    OperationAction::Create,
                    checked.permission_failure,
                );
                (true, Some(op))
            }
        };
        Ok(Outcome::Put {
            created,
            instance: self
                .instances
                .get(&key)
                .map(|instance| view_at(instance, ctx)),
            operation: op_id.and_then(|op| self.operation_link(ctx, &op)),
        })
    }

    /// GET backupInstances/{name}.
    pub fn get_instance(&mut self, ctx: &Ctx, vault: &KeyedId, name: &str) -> Verdict {
        self.vault(vault)?;
        let key = instance_key(&vault.key, name);
        match self.live(&key, ctx.now) {
            Some(instance) => Ok(Outcome::Instance(view_at(instance, ctx))),
            None => Err(instance_not_found(vault, name)),
        }
    }

    /// GET backupInstances/{name}/recoveryPoints (one page, newest first; `skip_token` is the
    /// number of points already listed). Vaulted instances have one recovery point from when
    /// protection was configured and one every [`BACKUP_INTERVAL`] since, the newest
    /// [`RETAINED_RECOVERY_POINTS`] kept; operational ones have none.
    pub fn list_recovery_points(
        &mut self,
        ctx: &Ctx,
        vault: &KeyedId,
        name: &str,
        skip_token: Option<&str>,
    ) -> Verdict {
        self.vault(vault)?;
        let page_size = self.behavior.page_size.max(1);
        let key = instance_key(&vault.key, name);
        let Some(instance) = self.live(&key, ctx.now) else {
            return Err(instance_not_found(vault, name));
        };
        let since = instance.protected_since.filter(|_| instance.vaulted);
        let taken = recovery_points_taken(instance, ctx.now);
        let skip: u64 = skip_token.and_then(|t| t.parse().ok()).unwrap_or(0);
        let listed = taken.min(RETAINED_RECOVERY_POINTS);
        let mut value = Vec::new();
        for newest_first in skip..listed.min(skip + page_size as u64) {
            let (Some(since), Some(index)) = (since, taken.checked_sub(newest_first + 1)) else {
                break;
            };
            let offset = BACKUP_INTERVAL * u32::try_from(index).unwrap_or(u32::MAX);
            let age = ctx.now.saturating_duration_since(since + offset);
            let at = ctx.wall - jiff::SignedDuration::try_from(age).unwrap_or_default();
            let at = Timestamp::from_second(at.as_second()).unwrap_or(at);
            value.push(json!({
                "id": format!("{}/recoveryPoints/rp-{index}", instance.id),
                "name": format!("rp-{index}"),
                "type": RECOVERY_POINT_TYPE,
                "properties": {
                    "objectType": "AzureBackupDiscreteRecoveryPoint",
                    "recoveryPointTime": at.to_string(),
                    "recoveryPointType": "Full",
                    "recoveryPointState": "Completed",
                    "recoveryPointDataStoresDetails": [
                        {"id": format!("rp-{index}-vault"), "type": "VaultStore", "creationTime": at.to_string()}
                    ]
                }
            }));
        }
        let next = skip + value.len() as u64;
        let mut body = json!({ "value": value });
        if next < listed {
            body["nextLink"] = json!(format!(
                "{}{}/recoveryPoints?api-version={}&$skipToken={next}",
                ctx.base, instance.id, ctx.api_version
            ));
        }
        Ok(Outcome::RecoveryPointPage(body))
    }

    /// GET backupInstances (one page; `skip_token` continues after the named instance).
    pub fn list_instances(
        &mut self,
        ctx: &Ctx,
        vault: &KeyedId,
        skip_token: Option<&str>,
    ) -> Verdict {
        let vault_display = self.vault(vault)?.id.display.clone();
        let prefix = format!("{}/backupinstances/", vault.key);
        let start = match skip_token {
            Some(token) => Bound::Excluded(format!("{prefix}{}", token.to_ascii_lowercase())),
            None => Bound::Included(prefix.clone()),
        };
        let page_size = self.behavior.page_size;
        let mut value = Vec::new();
        let mut gone = Vec::new();
        let mut more = false;
        for (key, instance) in self.instances.range_mut((start, Bound::Unbounded)) {
            if !key.starts_with(&prefix) {
                break;
            }
            if value.len() == page_size {
                more = true;
                break;
            }
            if settle(instance, ctx.now) {
                gone.push(key.clone());
            } else {
                value.push(view_at(instance, ctx));
            }
        }
        for key in gone {
            self.remove_instance(&key);
        }
        let next_link = more
            .then(|| value.last().and_then(|v| v.name.clone()))
            .flatten()
            .map(|last| {
                format!(
                    "{}{vault_display}/backupInstances?api-version={}&$skipToken={}",
                    ctx.base,
                    ctx.api_version,
                    utf8_percent_encode(&last.to_ascii_lowercase(), NON_ALPHANUMERIC)
                )
            });
        Ok(Outcome::InstancePage(BackupInstanceResourceList {
            value,
            next_link,
        }))
    }

    /// DELETE backupInstances/{name}.
    pub fn delete_instance(&mut self, ctx: &Ctx, vault: &KeyedId, name: &str) -> Verdict {
        self.vault(vault)?;
        let key = instance_key(&vault.key, name);
        let Some(instance) = self.live(&key, ctx.now) else {
            return Ok(Outcome::Gone);
        };
        let op = match &instance.pending {
            Some(p) if p.kind == OperationAction::Delete => p.op_id.clone(),
            Some(_) => return Err(Refusal::AnotherOperationInProgress),
            None => self.start_instance_operation(ctx, &key, OperationAction::Delete, None),
        };
        Ok(Outcome::Accepted(self.operation_link(ctx, &op)))
    }

    /// POST stopProtection and POST sync.
    pub fn instance_action(
        &mut self,
        ctx: &Ctx,
        vault: &KeyedId,
        name: &str,
        stop: bool,
    ) -> Verdict {
        self.vault(vault)?;
        let key = instance_key(&vault.key, name);
        let kind = if stop {
            OperationAction::StopProtection
        } else {
            OperationAction::Sync
        };
        let Some(instance) = self.live(&key, ctx.now) else {
            return Err(instance_not_found(vault, name));
        };
        if stop && !instance.vaulted {
            return Err(Refusal::UserError {
                code: "UserErrorStopProtectionNotSupportedForBlobOperationalBackup",
                message: "Stop protection is not supported for operational tier blob backups."
                    .into(),
            });
        }
        let op = match &instance.pending {
            Some(p) if p.kind == kind => p.op_id.clone(),
            Some(_) => return Err(Refusal::AnotherOperationInProgress),
            None if stop && matches!(instance.phase, Phase::Stopped) => {
                return Ok(Outcome::Unchanged);
            }
            None => self.start_instance_operation(ctx, &key, kind, None),
        };
        Ok(Outcome::Accepted(self.operation_link(ctx, &op)))
    }

    fn operation(&self, subscription: &str, id: &str) -> Result<&Operation, Refusal> {
        self.operations
            .get(id)
            .filter(|op| op.subscription.eq_ignore_ascii_case(subscription))
            .ok_or_else(|| Refusal::OperationNotFound(id.to_owned()))
    }

    /// GET locations/{loc}/operationStatus/{id} (the Azure-AsyncOperation document).
    pub fn operation_status(&self, ctx: &Ctx, subscription: &str, id: &str) -> Verdict {
        let op = self.operation(subscription, id)?;
        let done = ctx.now >= op.done_at;
        let (status, error, end) = match (done, &op.failure) {
            (false, _) => (
                self.behavior.in_progress_status.as_str(),
                None,
                // .NET's default DateTime, as Azure prints it while running.
                "0001-01-01T00:00:00".to_owned(),
            ),
            (true, failure) => (
                if failure.is_some() {
                    "Failed"
                } else {
                    "Succeeded"
                },
                failure.clone(),
                end_time(
                    op.start_wall
                        .checked_add(op.duration)
                        .unwrap_or(op.start_wall),
                ),
            ),
        };
        Ok(Outcome::OperationStatus(OperationResource {
            id: Some(operation_path(op, "operationStatus", id)),
            name: Some(id.to_owned()),
            status: Some(status.to_owned()),
            error: error.as_ref().and_then(as_read),
            start_time: Some(start_time(op.start_wall)),
            end_time: Some(end),
            // A restore names its job once Azure has created it.
            properties: (done && op.failure.is_none() && op.kind == OperationAction::Restore)
                .then(|| {
                    serde_json::to_value(OperationJobExtendedInfo {
                        object_type: Some("OperationJobExtendedInfo".to_owned()),
                        job_id: Some(op.job_id.clone()),
                    })
                    .ok()
                })
                .flatten(),
        }))
    }

    /// GET locations/{loc}/operationResults/{id} (the Location answer).
    pub fn operation_result(&mut self, ctx: &Ctx, subscription: &str, id: &str) -> Verdict {
        let op = self.operation(subscription, id)?;
        if ctx.now < op.done_at {
            return Ok(Outcome::Accepted(self.operation_link(ctx, id)));
        }
        if let Some(error) = &op.failure {
            return Err(Refusal::OperationFailed(error.clone()));
        }
        let job = OperationJobExtendedInfo {
            object_type: (ctx.api_version != "2021-01-01")
                .then(|| "OperationJobExtendedInfo".to_owned()),
            job_id: Some(op.job_id.clone()),
        };
        match op.kind {
            OperationAction::Delete => Ok(Outcome::Gone),
            OperationAction::Create | OperationAction::Update => {
                let key = op.instance_key.clone().unwrap_or_default();
                Ok(Outcome::InstanceResult(
                    self.live(&key, ctx.now).map(|i| view_at(i, ctx)),
                ))
            }
            OperationAction::Validate
            | OperationAction::StopProtection
            | OperationAction::Sync
            | OperationAction::ValidateRestore
            | OperationAction::Restore => Ok(Outcome::Job(job)),
        }
    }

    // ----- admin powers -----

    /// Adds (or replaces) a storage account.
    pub fn add_storage_account(
        &mut self,
        account: &StorageAccountConfig,
    ) -> Result<(), EmulatorError> {
        let vault_keys: Vec<String> = self.vaults.keys().cloned().collect();
        let id = check_storage_account(account, &vault_keys)
            .map_err(|(field, m)| EmulatorError::Invalid(format!("{field}: {m}")))?;
        let granted = match &account.role_assignments {
            None => vault_keys.into_iter().collect(),
            Some(list) => list
                .iter()
                .filter_map(|v| parse_vault_id(v).ok().map(|id| id.key))
                .collect(),
        };
        self.accounts.insert(
            id.key.clone(),
            Account {
                id,
                location: account.location.clone(),
                granted,
            },
        );
        Ok(())
    }

    /// Grants or revokes the backup role of `vault_id` (every vault when `None`) on an account.
    pub fn set_role(
        &mut self,
        account_id: &str,
        vault_id: Option<&str>,
        granted: bool,
    ) -> Result<(), EmulatorError> {
        let account_key = parse_storage_account_id(account_id)
            .map_err(EmulatorError::Invalid)?
            .key;
        let vaults: Vec<String> = match vault_id {
            Some(v) => {
                let key = parse_vault_id(v).map_err(EmulatorError::Invalid)?.key;
                if !self.vaults.contains_key(&key) {
                    return Err(EmulatorError::NotFound(format!("vault '{v}'")));
                }
                vec![key]
            }
            None => self.vaults.keys().cloned().collect(),
        };
        let account = self
            .accounts
            .get_mut(&account_key)
            .ok_or_else(|| EmulatorError::NotFound(format!("storage account '{account_id}'")))?;
        for vault in vaults {
            if granted {
                account.granted.insert(vault);
            } else {
                account.granted.remove(&vault);
            }
        }
        Ok(())
    }

    /// Every backup instance as GET would show it.
    pub fn instance_views(&mut self, now: Instant) -> Vec<Value> {
        let keys: Vec<String> = self.instances.keys().cloned().collect();
        keys.iter()
            .filter_map(|k| {
                self.live(k, now)
                    .map(|i| serde_json::to_value(view(i)).unwrap_or_default())
            })
            .collect()
    }

    /// The live instance named by an ARM id (any casing).
    fn instance_by_id(
        &mut self,
        instance_id: &str,
        now: Instant,
    ) -> Result<(String, &mut Instance), EmulatorError> {
        let key = instance_id_key(instance_id);
        match self.live(&key, now) {
            Some(instance) => Ok((key, instance)),
            None => Err(EmulatorError::NotFound(format!(
                "backup instance '{instance_id}'"
            ))),
        }
    }

    /// Removes an instance at once, as if someone deleted it outside the operator.
    pub fn delete_out_of_band(
        &mut self,
        instance_id: &str,
        now: Instant,
    ) -> Result<(), EmulatorError> {
        let (key, _) = self.instance_by_id(instance_id, now)?;
        self.remove_instance(&key);
        Ok(())
    }

    /// Puts an instance into ProtectionError (a later successful sync or PUT clears it).
    pub fn set_protection_error(
        &mut self,
        instance_id: &str,
        code: &str,
        message: &str,
        now: Instant,
    ) -> Result<(), EmulatorError> {
        let (_, instance) = self.instance_by_id(instance_id, now)?;
        let error = UserFacingError::new(code, message, &uuid::Uuid::new_v4().to_string())
            .recommend("Resolve the issue and trigger a sync of the backup instance.");
        instance.protection_error = Some(error);
        Ok(())
    }

    /// Marks an account as protected by an instance in another vault.
    pub fn protect_elsewhere(
        &mut self,
        account_id: &str,
        vault_id: &str,
        instance_name: Option<&str>,
        now: Instant,
    ) -> Result<(), EmulatorError> {
        let account = parse_storage_account_id(account_id).map_err(EmulatorError::Invalid)?;
        let vault = parse_vault_id(vault_id).map_err(EmulatorError::Invalid)?;
        if let Some((_, holder)) = self.protected_elsewhere(&account.key, None, now) {
            return Err(EmulatorError::Invalid(format!(
                "storage account '{account_id}' is already protected by backup instance {holder}"
            )));
        }
        let instance_name = instance_name
            .map(str::to_owned)
            .unwrap_or_else(|| format!("{}-{}", account.name, uuid::Uuid::new_v4()));
        self.holders.insert(
            account.key,
            Holder::External {
                vault_id: vault.display,
                instance_name,
            },
        );
        Ok(())
    }

    /// Removes a protection made by `protect_elsewhere`.
    pub fn unprotect_elsewhere(&mut self, account_id: &str) -> Result<(), EmulatorError> {
        let account = parse_storage_account_id(account_id).map_err(EmulatorError::Invalid)?;
        match self.holders.get(&account.key) {
            Some(Holder::External { .. }) => {
                self.holders.remove(&account.key);
                Ok(())
            }
            _ => Err(EmulatorError::NotFound(format!(
                "protection of storage account '{account_id}' outside the emulator's vaults"
            ))),
        }
    }
}

/// ARM's casing and spacing of regions vary ("West US", "westus", "westUS").
fn normalize_location(location: &str) -> String {
    location
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase()
}

/// The vaulted/operational rules of the request's backup datasource parameters.
fn check_tier(
    props: &BackupInstance,
    tier: PolicyTier,
    policy: &str,
) -> Result<(), (&'static str, String)> {
    let params = props
        .policy_info
        .policy_parameters
        .as_ref()
        .and_then(|p| p.backup_datasource_parameters_list.as_deref())
        .unwrap_or_default();
    let mut containers = None;
    let mut auto_protection = false;
    for p in params {
        if let Some(list) = p.containers() {
            containers.get_or_insert_with(Vec::new).extend(list.iter());
        }
        auto_protection |= asks_auto_protection(p);
    }
    if let Some(list) = &containers {
        if list.is_empty() || list.iter().any(|c| c.trim().is_empty()) {
            return Err((
                "UserErrorNoContainersSelectedForOperation",
                "No containers were selected for the operation; select at least one container."
                    .into(),
            ));
        }
        if list.len() > MAX_CONTAINERS {
            return Err((
                INVALID_PARAMETER,
                format!(
                    "{} containers were selected; at most {MAX_CONTAINERS} are supported.",
                    list.len()
                ),
            ));
        }
    }
    let has_parameters = containers.is_some() || auto_protection;
    match (tier, has_parameters) {
        (PolicyTier::Operational, true) => Err((
            INVALID_PARAMETER,
            format!(
                "The backup policy '{policy}' is an operational-tier policy; backupDatasourceParametersList (containersList) is only valid with a vaulted policy."
            ),
        )),
        (PolicyTier::Vaulted, false) => Err((
            INVALID_PARAMETER,
            format!(
                "The backup policy '{policy}' has a vault-tier backup rule; policyInfo.policyParameters.backupDatasourceParametersList with a containersList is required."
            ),
        )),
        _ => Ok(()),
    }
}

/// Takes the backup instance at `field` of a request body (`properties` of a PUT,
/// `backupInstance` of validateForBackup) and reads it as the service does.
fn request_instance(request: &mut Value, field: &str) -> Result<BackupInstance, Refusal> {
    let properties = request
        .get_mut(field)
        .map(Value::take)
        .filter(|v| !v.is_null())
        .ok_or_else(|| Refusal::InvalidContent(format!("{field} is required")))?;
    read_backup_instance(properties).map_err(|problem| match problem {
        InstanceProblem::Missing(name) => Refusal::UserError {
            code: INVALID_PARAMETER,
            message: format!("{name} is required."),
        },
        InstanceProblem::Invalid(detail) => Refusal::InvalidContent(detail),
    })
}

fn instance_not_found(vault: &KeyedId, name: &str) -> Refusal {
    Refusal::ResourceNotFound {
        resource_type: INSTANCE_TYPE,
        name: format!("{}/{name}", vault.name),
        resource_group: vault.resource_group.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills_and_reports_retry_after() {
        let limits = ThrottleSettings {
            budget: 2,
            refill_per_second: 0.5,
        };
        let t0 = Instant::now();
        let mut bucket = Bucket {
            tokens: 2.0,
            last: t0,
        };
        assert_eq!(bucket.take(&limits, t0), Ok(1));
        assert_eq!(bucket.take(&limits, t0), Ok(0));
        assert_eq!(bucket.take(&limits, t0), Err(2));
        assert_eq!(bucket.take(&limits, t0 + Duration::from_secs(2)), Ok(0));
        // Never above the budget, however long it waited.
        assert_eq!(bucket.take(&limits, t0 + Duration::from_secs(100)), Ok(1));
    }

    #[test]
    fn timestamps_print_like_the_article() {
        let ts: Timestamp = "2021-07-07T12:48:50.3432229Z".parse().unwrap();
        assert_eq!(start_time(ts), "2021-07-07T12:48:50.3432229Z");
        assert_eq!(end_time(ts), "2021-07-07T12:48:50Z");
    }

    #[test]
    fn requests_come_to_outcomes_and_refusals_without_http() {
        let config = EmulatorConfig::default();
        let mut state = State::new(&config);
        let ctx = Ctx {
            base: "http://emulator",
            api_version: "2026-06-01",
            activity_id: "a",
            now: Instant::now(),
            wall: Timestamp::now(),
        };
        let vault = parse_vault_id(crate::DEFAULT_VAULT_ID).unwrap();
        assert!(matches!(
            state.delete_instance(&ctx, &vault, "missing"),
            Ok(Outcome::Gone)
        ));
        assert!(matches!(
            state.get_instance(&ctx, &vault, "missing"),
            Err(Refusal::ResourceNotFound {
                resource_type: INSTANCE_TYPE,
                ..
            })
        ));
        assert!(matches!(
            state.put_instance(&ctx, &vault, "x", b"{}"),
            Err(Refusal::InvalidContent(_))
        ));
        assert!(matches!(
            state.operation_status(&ctx, &vault.subscription, "nope"),
            Err(Refusal::OperationNotFound(id)) if id == "nope"
        ));
    }

    #[test]
    fn faults_follow_the_seed() {
        let mut config = EmulatorConfig::default();
        config.behavior.faults.unavailable = 0.5;
        config.behavior.faults.seed = 7;
        let picks = |config: &EmulatorConfig| {
            let mut state = State::new(config);
            (0..32)
                .map(|_| {
                    state
                        .roll_fault(dataprotection::operation_ids::GET)
                        .is_some()
                })
                .collect::<Vec<_>>()
        };
        let first = picks(&config);
        assert_eq!(first, picks(&config));
        assert!(first.contains(&true) && first.contains(&false));
        config.behavior.faults.operations = vec![dataprotection::operation_ids::LIST.into()];
        assert!(!picks(&config).contains(&true));
    }
}
