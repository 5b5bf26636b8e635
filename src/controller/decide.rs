//! The pure heart of the controller: from a resource and the latest answer from Azure, the next
//! step, the status to record, the events to publish and when to look again.
//!
//! No I/O and no clock: `now` is an input, so every state and every Azure answer is a table row.
//! Neither are the vault grants: what they allow the resource is an input too ([`Access`],
//! from [`grants`](super::grants)), and so is the cluster's name in owner tags (`Settings`).
//!
//! The controller runs a short loop per reconcile, never sleeping:
//!
//! ```text
//! let mut observation = Observation::None;
//! loop (a few steps at most) {
//!     let d = decide(&obj, &observation, now, &settings, &access);
//!     if let Some(s) = d.status { obj.status = Some(s) }    // write now, or once at the end
//!     publish(d.events);
//!     observation = match d.action {
//!         Action::None => return d.requeue,
//!         Action::AddFinalizer => { add it; Observation::None }
//!         Action::RemoveFinalizer => { remove it; return d.requeue }
//!         Action::GetInstance(id) => Observation::Instance(..) or Observation::Failed{..},
//!         Action::Validate / Put / Delete / StopProtection / Sync => Observation::Started{..} or Failed,
//!         Action::Poll{..} => Observation::Polled{..}, Failed{..} or PollRefused{..},
//!     }
//! }
//! ```
//!
//! `Decision::status` is `Some` only when something changed. The controller writes it before an
//! Azure write that can change something (it records the intent: the instance's name and ID, the
//! operation as `Pending`; a validation changes nothing and records none) and right after an
//! operation other than a PUT started (its poll URL); other changes only at the end of a
//! reconcile. A started PUT's poll URL stays in the controller's memory: after a crash, a
//! `Pending` intent makes the next reconcile GET the instance before acting again, and an
//! instance found is the intended write's outcome.
//!
//! Everything the next step depends on is in the status (the intent or the operation in flight
//! with its poll URL, the conditions), so a restarted controller resumes where the last one
//! stopped. The controller must not reconcile on its own status writes (filter watch events by
//! generation, letting finalizer and deletion changes through): requeue times here are the only
//! clock.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{
    AzureOperation, BlobBackupInstance, BlobBackupInstanceStatus, Condition, ConditionStatus,
    DeletionPolicy, FINALIZER, MAX_STATUS_MESSAGE_LEN, OperationAction, OperationError,
    OperationPhase, Ownership, SpecError, ValidatedSpec, condition_type, owner_tag, truncate,
};
use dataprotection::ids::{BackupInstanceId, PolicyId, StorageAccountId};
// Azure's error and who can fix it, as the ARM client classifies them.
pub use dataprotection::{AzureErrorDetail, ErrorClass};

/// What the decisions depend on besides the resource and Azure's answer: their timing, and
/// what the configured Azure api-version can do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// Delays and intervals.
    pub timing: Timing,
    /// The ARM client's api-version and what it has.
    pub azure: AzureApi,
    /// The cluster's identity in owner tags (`blobbackup.io/cluster`): the uid of its
    /// `kube-system` namespace, or `--cluster-id`.
    pub cluster_id: String,
}

/// The delays and intervals of decisions (the command line's flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timing {
    /// How often a settled resource is compared with Azure again (drift detection).
    pub resync_interval: Duration,
    /// First retry delay while Stalled; it doubles up to `stalled_retry_max`.
    pub stalled_retry_base: Duration,
    /// Longest retry delay while Stalled (`--stalled-retry-max`).
    pub stalled_retry_max: Duration,
    /// Shortest wait before polling an operation or retrying a transient error.
    pub retry_after_min: Duration,
    /// Longest wait Azure's `Retry-After` may impose, on any answer (`--retry-after-max`).
    pub retry_after_max: Duration,
    /// Wait when Azure gives no `Retry-After`.
    pub retry_after_default: Duration,
    /// How often to look again while Azure configures protection.
    pub protection_poll: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            resync_interval: Duration::from_secs(600),
            stalled_retry_base: Duration::from_secs(10),
            stalled_retry_max: Duration::from_secs(120),
            retry_after_min: Duration::from_secs(1),
            retry_after_max: Duration::from_secs(300),
            retry_after_default: Duration::from_secs(15),
            protection_poll: Duration::from_secs(10),
        }
    }
}

/// What the ARM client's api-version can do, as the decisions need it (the controller takes
/// it from the client: [`AzureApi::of`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureApi {
    /// Whether the api-version has `stopProtection` (needed by `Retain`) and `sync`
    /// (re-syncing after a protection error); both arrived in 2022-01-01.
    pub instance_actions_supported: bool,
    /// The api-version, quoted in messages.
    pub api_version: String,
    /// Whether the api-version has `tags` on backup instances (2021-01-01 has not: ownership
    /// then lives in status only, and adoption is refused).
    pub tags_supported: bool,
}

impl AzureApi {
    /// What `arm`'s api-version can do.
    pub fn of(arm: &dataprotection::ArmClient) -> Self {
        Self {
            instance_actions_supported: arm.supports_instance_actions(),
            api_version: arm.api_version().to_owned(),
            tags_supported: arm.supports_tags(),
        }
    }
}

impl Default for AzureApi {
    fn default() -> Self {
        Self {
            instance_actions_supported: true,
            api_version: dataprotection::DEFAULT_API_VERSION.to_owned(),
            tags_supported: true,
        }
    }
}

/// What the vault grants allow a resource (DESIGN.md section 9), as
/// [`controller::grants`](super::grants) reads them for its namespace and spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Served: `--vault-access open`, or a grant covers the namespace, the vault, the policy
    /// and the deletion policy. `allow_adoption`: an existing instance without owner tags may
    /// be adopted.
    Granted { allow_adoption: bool },
    /// Not served: no Azure call at all (`VaultNotGranted`). `message` says what no grant
    /// covers and who can fix it. `deletion_allowed`: a grant still covers the namespace, the
    /// vault and the deletion policy, so deleting the resource may carry that policy out.
    NotGranted {
        message: String,
        deletion_allowed: bool,
    },
}

impl Access {
    /// `--vault-access open`: every namespace may use every vault, and adopt.
    pub const OPEN: Access = Access::Granted {
        allow_adoption: true,
    };
}

/// The owner tags a resource writes on the backup instance it owns: its cluster, namespace,
/// name and uid (DESIGN.md section 9).
pub fn owner_tags(obj: &BlobBackupInstance, cluster_id: &str) -> BTreeMap<String, String> {
    let meta = &obj.metadata;
    [
        (owner_tag::CLUSTER, cluster_id),
        (
            owner_tag::NAMESPACE,
            meta.namespace.as_deref().unwrap_or_default(),
        ),
        (owner_tag::NAME, meta.name.as_deref().unwrap_or_default()),
        (owner_tag::UID, meta.uid.as_deref().unwrap_or_default()),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value.to_owned()))
    .collect()
}

/// The owner tag `key` of `tags` (ARM tag names are case-insensitive).
fn owner_tag_value<'t>(tags: &'t BTreeMap<String, String>, key: &str) -> Option<&'t str> {
    tags.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v.as_str())
}

/// Who owns an instance, as its tags (or, without tags, the resource's status) say.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Owner {
    /// This resource; `tagged`: the instance carries its owner tags already.
    Us { tagged: bool },
    /// Another resource or cluster, described for a message.
    Other(String),
    /// Nobody: no owner tags, and this resource never created or adopted it.
    Nobody,
}

/// What the controller learnt from Azure in the previous step.
// One exists per reconcile in flight, for one step: the typed IDs' size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    /// Nothing yet in this reconcile.
    None,
    /// Nothing yet in this reconcile, but the intent the status records was not sent: this
    /// controller recorded it, waited for its write's slot in the budget, and has not
    /// restarted since (the fact lives in its memory only).
    Unsent,
    /// The answer to `Action::GetInstance`: the instance, or `None` when Azure said 404.
    Instance(Option<ObservedInstance>),
    /// A long-running operation was accepted. `poll` is `None` when it completed at once
    /// (200/201/204 without a status URL).
    Started {
        /// The operation the action asked for ([`Action::operation`]).
        action: OperationAction,
        /// Where to track it.
        poll: Option<PollHandle>,
    },
    /// The answer to `Action::Poll`.
    Polled {
        /// The operation's state.
        status: PolledStatus,
        /// Azure's `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// The Azure call failed.
    Failed {
        /// Which call.
        call: AzureCall,
        /// What Azure (or the network) said.
        error: ObservedError,
    },
    /// The client refused the poll URL (not on the configured ARM endpoint, or not an operation
    /// of the instance's vault: no request was made, no token sent), or its answer (a redirect,
    /// a body over the size limit): polling it again would fail the same way.
    PollRefused {
        /// Why, naming the URL's host or path, and what to check.
        message: String,
    },
}

/// A backup instance as Azure returned it, reduced to what decisions need.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ObservedInstance {
    /// The instance's ARM ID.
    pub id: ObservedId<BackupInstanceId>,
    /// `properties.dataSourceInfo.resourceID`: the protected storage account.
    pub datasource_id: ObservedId<StorageAccountId>,
    /// `properties.policyInfo.policyId`.
    pub policy_id: ObservedId<PolicyId>,
    /// The vaulted containers (`containersList`), `None` for operational backup.
    pub containers: Option<Vec<String>>,
    /// `properties.protectionStatus.status`.
    pub protection_status: Option<String>,
    /// `properties.currentProtectionState`.
    pub protection_state: Option<String>,
    /// `properties.provisioningState`.
    pub provisioning_state: Option<String>,
    /// `protectionStatus.errorDetails`, else `protectionErrorDetails`.
    pub protection_error: Option<AzureErrorDetail>,
    /// The latest recovery point, for vaulted backup.
    pub last_recovery_point: LastRecoveryPoint,
    /// The instance's ARM tags (empty when it has none, or the api-version has no tags).
    pub tags: BTreeMap<String, String>,
}

/// An ARM ID as Azure sent it: typed when it parses (then compared as ARM compares IDs,
/// case-insensitively), else the text as sent, which equals no ID.
#[derive(Debug, Clone, PartialEq)]
pub enum ObservedId<T> {
    /// A well-formed ID of the expected kind.
    Valid(T),
    /// Anything else (or nothing: empty).
    Invalid(String),
}

impl<T: std::str::FromStr> ObservedId<T> {
    /// `text` as an ID of kind `T`, else kept as text.
    pub fn parse(text: &str) -> Self {
        text.parse()
            .map_or_else(|_| Self::Invalid(text.to_owned()), Self::Valid)
    }
}

impl<T: PartialEq> ObservedId<T> {
    /// Whether this is `id`.
    pub fn is(&self, id: &T) -> bool {
        matches!(self, Self::Valid(observed) if observed == id)
    }
}

impl<T> Default for ObservedId<T> {
    fn default() -> Self {
        Self::Invalid(String::new())
    }
}

impl<T: std::fmt::Display> std::fmt::Display for ObservedId<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Valid(id) => id.fmt(f),
            Self::Invalid(text) => f.write_str(text),
        }
    }
}

/// What the recovery points list said of a vaulted backup instance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LastRecoveryPoint {
    /// Not read: operational backup, or the list failed (the recorded time then stays).
    #[default]
    NotRead,
    /// Read: no recovery point yet.
    NoneYet,
    /// Read: the latest one was taken then.
    At(Timestamp),
}

/// An operation Azure accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollHandle {
    /// Azure-AsyncOperation, else Location.
    pub url: String,
    /// Azure's `Retry-After`.
    pub retry_after: Option<Duration>,
}

/// The state of a polled operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolledStatus {
    InProgress,
    Succeeded,
    Failed(AzureErrorDetail),
    Canceled,
}

/// A failed Azure call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedError {
    pub class: ErrorClass,
    /// The HTTP status, when there was a response.
    pub http_status: Option<u16>,
    pub retry_after: Option<Duration>,
    /// Azure's error; for network, token and decode failures the controller puts the error's
    /// text (with Azure's request ids) into `message` and leaves `code` empty.
    pub azure: AzureErrorDetail,
}

/// The Azure call an observation answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AzureCall {
    Get,
    Start(OperationAction),
    Poll,
}

/// What the controller should do next.
#[derive(Debug, Clone)]
pub enum Action {
    /// Nothing now: wait for `requeue`.
    None,
    /// Add [`FINALIZER`] (before any Azure write).
    AddFinalizer,
    /// Remove [`FINALIZER`]: Azure confirmed, or nothing was written.
    RemoveFinalizer,
    /// GET the backup instance.
    GetInstance(BackupInstanceId),
    /// POST validateForBackup for this target.
    Validate(Target),
    /// PUT the backup instance; `operation` is Create or Update. `tags` go in the body: the
    /// owner tags ([`owner_tags`]), empty on api-versions without tags.
    Put {
        target: Target,
        operation: OperationAction,
        tags: BTreeMap<String, String>,
    },
    /// Poll the operation in flight on `instance` at `url` (the client refuses a URL that is
    /// not an operation of the instance's vault on the ARM endpoint).
    Poll {
        url: String,
        instance: BackupInstanceId,
    },
    /// DELETE the backup instance.
    Delete(BackupInstanceId),
    /// POST stopProtection (keep the recovery points).
    StopProtection(BackupInstanceId),
    /// POST sync (ask Azure to retry a failed protection).
    Sync(BackupInstanceId),
}

impl Action {
    /// The Azure operation this action starts, echoed back in `Observation::Started`.
    pub fn operation(&self) -> Option<OperationAction> {
        match self {
            Action::Validate(_) => Some(OperationAction::Validate),
            Action::Put { operation, .. } => Some(*operation),
            Action::Delete(_) => Some(OperationAction::Delete),
            Action::StopProtection(_) => Some(OperationAction::StopProtection),
            Action::Sync(_) => Some(OperationAction::Sync),
            _ => None,
        }
    }

    /// Whether this action can change something in Azure. validateForBackup cannot: repeating
    /// it after a crash is harmless, so it needs no intent recorded before it is sent.
    pub fn changes_azure(&self) -> bool {
        self.operation()
            .is_some_and(|operation| operation != OperationAction::Validate)
    }
}

/// The backup instance a valid spec asks for: the inputs of validate and PUT requests.
#[derive(Debug, Clone)]
pub struct Target {
    pub instance: BackupInstanceId,
    pub spec: ValidatedSpec,
}

/// When to reconcile again if nothing changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeue {
    After(Duration),
    /// Only when the resource changes.
    AwaitChange,
}

/// The event's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

/// An event to publish about the resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSpec {
    pub type_: EventType,
    pub reason: Reason,
    pub note: String,
}

/// The outcome of one decision (of a BlobBackupInstance by default; the restore controller's
/// has its own action and status).
#[derive(Debug, Clone)]
pub struct Decision<A = Action, S = BlobBackupInstanceStatus> {
    pub action: A,
    /// The status to record, only when something a person cares about changed.
    pub status: Option<S>,
    pub events: Vec<EventSpec>,
    /// When to look again, should the reconcile stop after this step.
    pub requeue: Requeue,
}

macro_rules! reasons {
    ($($(#[doc = $doc:literal])+ $name:ident,)+) => {
        /// Condition and event reasons: CamelCase and stable (the README lists them).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Reason {
            $($(#[doc = $doc])+ $name,)+
        }

        impl Reason {
            /// Every reason, in declaration order.
            pub const ALL: &'static [Reason] = &[$(Reason::$name,)+];

            /// The reason as written to conditions and events.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$name => stringify!($name),)+
                }
            }
        }
    };
}

reasons! {
    /// Condition. First sight of the resource: nothing is known yet. Wait.
    Initializing,
    /// Condition and event. validateForBackup is running in Azure. Wait.
    Validating,
    /// Condition (Validated=True). Azure accepted the request. Nothing to do.
    ValidationSucceeded,
    /// Condition and event. validateForBackup failed; the message has Azure's code, message and
    /// recommended action. Fix what it says; the operator retries with backoff.
    ValidationFailed,
    /// Condition and event. The backup instance is being created. Wait.
    Creating,
    /// Condition and event. The backup instance is being updated (policy or containers). Wait.
    Updating,
    /// Condition. Azure is configuring protection. Wait.
    ConfiguringProtection,
    /// Condition (Ready=True). Azure reports ProtectionConfigured for the current spec. Nothing to do.
    ProtectionConfigured,
    /// Event. Protection became configured. Nothing to do.
    Protected,
    /// Event. An existing backup instance of the same storage account without owner tags was
    /// taken over (a grant allows adoption, or `--vault-access open`): the operator wrote this
    /// resource's owner tags on it. Nothing to do.
    Adopted,
    /// Event. The backup instance disappeared from Azure and is being recreated. Find out who
    /// deleted it outside Kubernetes.
    DriftDetected,
    /// Condition and event. Azure reports a protection error; the message has Azure's
    /// errorDetails. Fix the cause in Azure; for user errors the operator asks Azure to re-sync.
    ProtectionError,
    /// Condition and event. Asking Azure to re-sync the backup instance. Wait.
    Syncing,
    /// Condition and event. Condition: Azure reports protection stopped, suspended or
    /// soft-deleted; resume protection in Azure, or delete and recreate the resource. Event:
    /// protection was stopped on deletion (Retain); the recovery points stay in the vault.
    ProtectionStopped,
    /// Condition and event. The backup instance is being deleted. Wait.
    Deleting,
    /// Event. The backup instance is gone from Azure; the finalizer is removed.
    Deleted,
    /// Condition and event. Stopping protection, keeping recovery points (Retain). Wait.
    StoppingProtection,
    /// Event. deletionPolicy Orphan: the backup instance was left in Azure untouched.
    Orphaned,
    /// Condition. Azure throttled the operator (429). Nothing to do unless it persists: then
    /// lower `--concurrency`.
    AzureThrottled,
    /// Condition. Azure or the network failed transiently (408, 5xx, connection). The operator
    /// retries; if it persists, check Azure status and the network path to the ARM endpoint.
    AzureUnavailable,
    /// Condition. Someone canceled the Azure operation. The operator starts over.
    OperationCanceled,
    /// Condition and event. A create, update or sync operation failed in Azure; the message has
    /// Azure's error. Fix what it says; the operator retries with backoff.
    OperationFailed,
    /// Condition and event. The spec is invalid; the message names the field. Edit the spec.
    InvalidSpec,
    /// Condition and event. The storage account is already protected by another backup
    /// instance; the message names its vault. Remove that protection or adopt it by name.
    AlreadyProtected,
    /// Condition and event. The vault's identity lacks a permission on the storage account; the
    /// message names the action and scope. Grant the vault's managed identity the Storage Account
    /// Backup Contributor role on the account; the operator retries by itself.
    MissingPermissions,
    /// Condition and event. Azure refused the operator's credentials (401/403). Grant the
    /// operator's identity access to the vault (e.g. Backup Contributor), or fix its credentials.
    AccessDenied,
    /// Condition and event. Azure says the vault, policy or another referenced resource does not
    /// exist (404). Check spec.vault.id and spec.policy.
    AzureResourceNotFound,
    /// Condition and event. Azure rejected a request (4xx); the message has Azure's error. Fix
    /// what it says.
    RequestRejected,
    /// Condition and event. A backup instance of that name protects another storage account.
    /// Set spec.backupInstanceName to a free name.
    InstanceConflict,
    /// Condition and event. The operation's poll URL (status.operation.pollUrl) is not on the
    /// configured ARM endpoint, or not a Microsoft.DataProtection operation of the vault, so it
    /// was not polled and no token was sent to it (or ARM answered the poll with a redirect, not
    /// followed, or a body over 4 MiB): the operation is marked Failed and the
    /// backup instance is read from Azure instead. Check `--arm-endpoint` (sovereign clouds have
    /// their own), and who else writes this resource's status.
    PollUrlRefused,
    /// Condition and event. deletionPolicy Retain needs stopProtection, which the configured
    /// api-version lacks. Run with a newer `--api-version`, or change deletionPolicy.
    StopProtectionUnsupported,
    /// Condition and event. Deleting or stopping protection failed in Azure; the message has
    /// Azure's error. Fix what it says; the finalizer stays until Azure confirms.
    DeletionFailed,
    /// Condition and event. Azure answered something the operator cannot read. Report it with
    /// the message and the request ids in the operator's log.
    UnexpectedAzureResponse,
    /// Condition and event. BlobRestore: the restore point is being checked against Azure
    /// (restorable time ranges, or recovery points); the event says it is restorable. Wait.
    CheckingRestorePoint,
    /// Condition and event. BlobRestore: validateRestore is running in Azure. Wait.
    ValidatingRestore,
    /// Condition and event. BlobRestore: the restore was sent and Azure's restore job is running. Wait.
    Restoring,
    /// Condition (Ready=True) and event. BlobRestore: Azure's restore job completed. Nothing to do.
    Restored,
    /// Condition and event. BlobRestore: Azure's restore job failed or was cancelled; the message
    /// has Azure's error. Fix it, then create a new BlobRestore (a restore is never repeated).
    RestoreFailed,
    /// Condition and event. BlobRestore: Azure refused the restore (validateRestore or the restore
    /// request); the message has Azure's error. Fix what it says; the operator validates again
    /// with backoff, and nothing is restored until Azure accepts.
    RestoreRefused,
    /// Condition and event. BlobRestore: the referenced BlobBackupInstance is missing or not
    /// Ready. Make it Ready; the operator retries by itself, and no restore is sent meanwhile.
    SourceNotReady,
    /// Condition and event. BlobRestore: the point in time is outside the ranges Azure can restore
    /// to, or the recovery point does not exist. Create a BlobRestore with a point Azure lists.
    PointNotRestorable,
    /// Condition and event. BlobRestore: the restore request went out but its answer did not come
    /// back (the operator stopped, or the connection failed). It is never sent twice: look for the
    /// restore job in the vault's Backup jobs, then delete this BlobRestore.
    RestoreOutcomeUnknown,
    /// Condition and event. The backup instance carries the owner tags of another resource or
    /// cluster, named in the message: nothing is written to it, and deleting this resource
    /// leaves it untouched. Name another instance in spec.backupInstanceName, or delete the
    /// resource that owns it.
    OwnedElsewhere,
    /// Condition and event. The backup instance exists without owner tags (created outside
    /// this operator) and no vault grant allows adopting it, or the api-version has no tags.
    /// A cluster administrator sets allowAdoption on the vault's BackupVaultGrant; or name a
    /// free instance in spec.backupInstanceName.
    AdoptionNotAllowed,
    /// Condition and event. No BackupVaultGrant lets this namespace use the vault with this
    /// policy and deletion policy (`--vault-access grants`): no Azure call is made. Ask a cluster
    /// administrator for a grant; it takes effect at once.
    VaultNotGranted,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

// Azure error codes with their own handling.
const CODE_ALREADY_PROTECTED: &str = "UserErrorDppDatasourceAlreadyProtected";
const CODE_MISSING_PERMISSIONS: &str = "UserErrorMissingRequiredPermissions";

// Kubernetes caps event notes at 1 kB; long condition messages only clutter `kubectl get`.
pub(crate) const MAX_NOTE: usize = 1024;
const MAX_MESSAGE: usize = MAX_STATUS_MESSAGE_LEN;

/// Decides the next step for `obj`, given what Azure said in the previous step and what the
/// vault grants allow it.
pub fn decide(
    obj: &BlobBackupInstance,
    observation: &Observation,
    now: Timestamp,
    settings: &Settings,
    access: &Access,
) -> Decision {
    let mut step = Step::new(obj, now, settings, access);
    if obj.metadata.deletion_timestamp.is_some() {
        return step.deletion(observation);
    }
    let target = match step.target() {
        Ok(target) => target,
        Err(e) => return step.invalid_spec(&e),
    };
    step.record_names(&target.spec);
    if let Access::NotGranted { message, .. } = access {
        return step.stalled(Reason::VaultNotGranted, message);
    }
    if !step.has_finalizer() {
        step.set_health(
            Health::Initializing,
            Reason::Initializing,
            "Adding the finalizer",
        );
        return step.finish(Action::AddFinalizer, Requeue::AwaitChange);
    }
    step.apply(&Mode::Apply(&target), observation)
}

/// Whether a person would care about the difference between two statuses.
pub fn status_changed(
    old: Option<&BlobBackupInstanceStatus>,
    new: &BlobBackupInstanceStatus,
) -> bool {
    // Statuses hold no volatile values (times change only with the state), so equality is it.
    old != Some(new)
}

/// Whether the resource carries our [`FINALIZER`].
pub(crate) fn has_finalizer(obj: &BlobBackupInstance) -> bool {
    obj.metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == FINALIZER)
}

/// The Azure operation the status records as running, with the URL to poll it.
pub fn in_flight(status: &BlobBackupInstanceStatus) -> Option<&AzureOperation> {
    status
        .operation
        .as_ref()
        .filter(|op| op.status == OperationPhase::InProgress && op.poll_url.is_some())
}

/// `status.currentOperation`: the operation while in flight, or failed (or canceled) while the
/// resource is not Ready.
pub fn current_operation(status: &BlobBackupInstanceStatus) -> Option<String> {
    let op = status.operation.as_ref()?;
    let ready = status
        .conditions
        .iter()
        .any(|c| c.type_ == condition_type::READY && c.status == ConditionStatus::True);
    let shown = match op.status {
        OperationPhase::Pending | OperationPhase::InProgress => true,
        OperationPhase::Failed | OperationPhase::Canceled => !ready,
        OperationPhase::Succeeded => false,
    };
    shown.then(|| format!("{:?} {:?}", op.action, op.status))
}

/// What the reconcile is working towards.
enum Mode<'t> {
    /// The spec's backup instance, protected.
    Apply(&'t Target),
    /// The resource is being deleted: this instance of this account, handled per policy.
    Delete {
        account: StorageAccountId,
        instance: BackupInstanceId,
        policy: DeletionPolicy,
    },
}

impl Mode<'_> {
    fn instance(&self) -> &BackupInstanceId {
        match self {
            Mode::Apply(target) => &target.instance,
            Mode::Delete { instance, .. } => instance,
        }
    }

    fn account(&self) -> &StorageAccountId {
        match self {
            Mode::Apply(target) => &target.spec.storage_account,
            Mode::Delete { account, .. } => account,
        }
    }
}

impl Timing {
    /// Azure's wait, within the configured bounds (min/max rather than `clamp`, which panics
    /// when the bounds cross).
    pub(crate) fn clamp_retry(&self, retry_after: Option<Duration>) -> Duration {
        retry_after
            .unwrap_or(self.retry_after_default)
            .min(self.retry_after_max)
            .max(self.retry_after_min)
    }

    /// 10s, 10s, 20s, 40s, ... capped: the wait grows with the time already spent Stalled,
    /// which the Stalled condition's lastTransitionTime (`stalled`, before this step)
    /// records across restarts.
    pub(crate) fn stalled_backoff(&self, stalled: Option<&Condition>, now: Timestamp) -> Duration {
        let base = self.stalled_retry_base;
        let max = self.stalled_retry_max.max(base);
        let stalled_for = stalled
            .filter(|c| c.status == ConditionStatus::True)
            .and_then(|c| Duration::try_from(now.duration_since(c.last_transition_time.0)).ok())
            .unwrap_or_default();
        stalled_for.clamp(base, max)
    }
}

/// One condition as a step sets it (every kind's conditions follow the same rules:
/// `lastTransitionTime` moves only when the status flips; every condition carries the
/// generation).
pub(crate) struct ConditionChange<'m> {
    pub status: ConditionStatus,
    pub reason: Reason,
    pub message: &'m str,
    pub generation: Option<i64>,
    pub now: Timestamp,
}

impl<'m> ConditionChange<'m> {
    pub(crate) fn new(
        status: ConditionStatus,
        reason: Reason,
        message: &'m str,
        generation: Option<i64>,
        now: Timestamp,
    ) -> Self {
        Self {
            status,
            reason,
            message,
            generation,
            now,
        }
    }

    /// Sets the condition `type_` in `conditions`.
    pub(crate) fn apply(&self, conditions: &mut Vec<Condition>, type_: &str) {
        let message = truncate(self.message, MAX_MESSAGE);
        match conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(c) => {
                if c.status != self.status {
                    c.status = self.status;
                    c.last_transition_time = Time(self.now);
                }
                c.reason = self.reason.as_str().to_owned();
                c.message = message;
                c.observed_generation = self.generation;
            }
            None => conditions.push(Condition {
                type_: type_.to_owned(),
                status: self.status,
                reason: self.reason.as_str().to_owned(),
                message,
                observed_generation: self.generation,
                last_transition_time: Time(self.now),
            }),
        }
    }

    /// Sets Ready, Reconciling and Stalled as `health` says (this change's status unused).
    pub(crate) fn set_health(self, conditions: &mut Vec<Condition>, health: Health) {
        use ConditionStatus::{False, True, Unknown};
        let (ready, reconciling, stalled) = match health {
            Health::Initializing => (Unknown, True, False),
            Health::Progressing => (False, True, False),
            Health::Ready => (True, False, False),
            Health::Stalled => (False, False, True),
        };
        for (type_, status) in [
            (condition_type::READY, ready),
            (condition_type::RECONCILING, reconciling),
            (condition_type::STALLED, stalled),
        ] {
            Self { status, ..self }.apply(conditions, type_);
        }
    }
}

/// The three kstatus-style conditions move together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Health {
    Initializing,
    Progressing,
    Ready,
    Stalled,
}

/// How Azure's open-ended protection status reads.
enum Protection {
    Configured,
    Configuring,
    Error,
    Stopped,
}

fn protection(instance: &ObservedInstance) -> Protection {
    let is = |value: &Option<String>, names: &[&str]| {
        value
            .as_deref()
            .is_some_and(|v| names.iter().any(|n| v.eq_ignore_ascii_case(n)))
    };
    let (status, state) = (&instance.protection_status, &instance.protection_state);
    if is(status, &["ProtectionError", "ConfiguringProtectionFailed"])
        || is(state, &["ProtectionError", "ConfiguringProtectionFailed"])
    {
        Protection::Error
    } else if is(
        status,
        &["ProtectionStopped", "SoftDeleted", "SoftDeleting"],
    ) || is(
        state,
        &[
            "ProtectionStopped",
            "BackupSchedulesSuspended",
            "RetentionSchedulesSuspended",
            "SoftDeleted",
            "SoftDeleting",
        ],
    ) {
        Protection::Stopped
    } else if is(status, &["ProtectionConfigured"])
        && !is(state, &["ConfiguringProtection", "UpdatingProtection"])
    {
        Protection::Configured
    } else {
        // NotProtected, ConfiguringProtection, UpdatingProtection and values Azure adds later.
        Protection::Configuring
    }
}

struct Step<'a> {
    obj: &'a BlobBackupInstance,
    now: Timestamp,
    settings: &'a Settings,
    access: &'a Access,
    old: Option<&'a BlobBackupInstanceStatus>,
    status: BlobBackupInstanceStatus,
    events: Vec<EventSpec>,
    /// Whether this step judged Ready/Reconciling/Stalled for the current generation.
    health_set: bool,
}

impl<'a> Step<'a> {
    fn new(
        obj: &'a BlobBackupInstance,
        now: Timestamp,
        settings: &'a Settings,
        access: &'a Access,
    ) -> Self {
        let now = whole_second(now);
        let old = obj.status.as_ref();
        Self {
            obj,
            now,
            settings,
            access,
            old,
            status: old.cloned().unwrap_or_default(),
            events: Vec::new(),
            health_set: false,
        }
    }

    fn uid(&self) -> &str {
        self.obj.metadata.uid.as_deref().unwrap_or_default()
    }

    fn has_finalizer(&self) -> bool {
        has_finalizer(self.obj)
    }

    fn target(&self) -> Result<Target, SpecError> {
        let spec = self.obj.spec.validate()?;
        if spec.backup_instance_name.is_none() && self.uid().is_empty() {
            return Err(SpecError {
                field: "metadata.uid",
                problem: "the resource has no uid to name the backup instance after".into(),
                fix: "set spec.backupInstanceName".into(),
            });
        }
        let recorded = self.old.and_then(|s| s.backup_instance_name.as_deref());
        spec.check_recorded_name(self.uid(), recorded)?;
        let instance = spec.backup_instance_id(self.uid());
        Ok(Target { instance, spec })
    }

    // ---- recording ----

    fn condition(&mut self, type_: &str, status: ConditionStatus, reason: Reason, message: &str) {
        let generation = self.obj.metadata.generation;
        let change = ConditionChange::new(status, reason, message, generation, self.now);
        change.apply(&mut self.status.conditions, type_);
    }

    fn set_health(&mut self, health: Health, reason: Reason, message: &str) {
        let generation = self.obj.metadata.generation;
        let change = ConditionChange::new(
            ConditionStatus::Unknown,
            reason,
            message,
            generation,
            self.now,
        );
        change.set_health(&mut self.status.conditions, health);
        self.health_set = true;
    }

    fn set_validated(&mut self, status: ConditionStatus, reason: Reason, message: &str) {
        self.condition(condition_type::VALIDATED, status, reason, message);
    }

    fn event(&mut self, type_: EventType, reason: Reason, note: &str) {
        self.events.push(EventSpec {
            type_,
            reason,
            note: truncate(note, MAX_NOTE),
        });
    }

    fn old_condition(&self, type_: &str) -> Option<&'a Condition> {
        self.old?.conditions.iter().find(|c| c.type_ == type_)
    }

    fn old_ready_reason_is(&self, reason: Reason) -> bool {
        self.old_condition(condition_type::READY)
            .is_some_and(|c| c.reason == reason.as_str())
    }

    /// Whether the condition `type_` was True for the current generation before this step.
    fn was_true_for_this_generation(&self, type_: &str) -> bool {
        self.old_condition(type_).is_some_and(|c| {
            c.status == ConditionStatus::True
                && c.observed_generation == self.obj.metadata.generation
        })
    }

    fn ready_for_this_generation(&self) -> bool {
        self.was_true_for_this_generation(condition_type::READY)
    }

    fn was_stalled(&self) -> bool {
        self.old_condition(condition_type::STALLED)
            .is_some_and(|c| c.status == ConditionStatus::True)
    }

    /// The short names `kubectl get` shows.
    fn record_names(&mut self, spec: &ValidatedSpec) {
        self.status.vault_name = Some(spec.vault.name().to_owned());
        self.status.storage_account_name = Some(spec.storage_account.name().to_owned());
        self.status.policy_name = Some(spec.policy.name().to_owned());
    }

    fn finish(mut self, action: Action, requeue: Requeue) -> Decision {
        if self.status.conditions.is_empty() {
            self.set_health(Health::Initializing, Reason::Initializing, "Reconciling");
        }
        self.status.current_operation = current_operation(&self.status);
        // A new generation counts as observed once the conditions speak for it, or kstatus
        // readers would take the old Ready=True for the new spec.
        if self.health_set {
            self.status.observed_generation = self.obj.metadata.generation;
        }
        self.status.fit_to_schema();
        let status = status_changed(self.old, &self.status).then_some(self.status);
        Decision {
            action,
            status,
            events: self.events,
            requeue,
        }
    }

    // ---- timing ----

    /// Azure's wait, within the configured bounds (min/max rather than `clamp`, which panics
    /// when the bounds cross).
    fn clamp_retry(&self, retry_after: Option<Duration>) -> Duration {
        self.settings.timing.clamp_retry(retry_after)
    }

    fn stalled_backoff(&self) -> Duration {
        self.settings
            .timing
            .stalled_backoff(self.old_condition(condition_type::STALLED), self.now)
    }

    // ---- outcomes ----

    fn stalled(self, reason: Reason, message: &str) -> Decision {
        self.stalled_with_event(reason, reason, message)
    }

    /// Stalled: a Warning event when it starts (or its reason changes), then retries with
    /// backoff, since a person may fix Azure without touching the resource.
    fn stalled_with_event(mut self, reason: Reason, event: Reason, message: &str) -> Decision {
        if !self.was_stalled() || !self.old_ready_reason_is(reason) {
            self.event(EventType::Warning, event, message);
        }
        let requeue = Requeue::After(self.stalled_backoff());
        self.set_health(Health::Stalled, reason, message);
        self.finish(Action::None, requeue)
    }

    fn invalid_spec(mut self, error: &SpecError) -> Decision {
        let message = format!("Invalid spec: {error}");
        if !self.old_ready_reason_is(Reason::InvalidSpec) {
            self.event(EventType::Warning, Reason::InvalidSpec, &message);
        }
        self.set_health(Health::Stalled, Reason::InvalidSpec, &message);
        // Only an edit of the spec can fix it.
        self.finish(Action::None, Requeue::AwaitChange)
    }

    fn remove_finalizer(mut self, reason: Reason, note: &str) -> Decision {
        self.event(EventType::Normal, reason, note);
        // The resource is about to go: no status write for it.
        Decision {
            action: Action::RemoveFinalizer,
            status: None,
            events: self.events,
            requeue: Requeue::AwaitChange,
        }
    }

    fn get(self, mode: &Mode) -> Decision {
        let requeue = Requeue::After(self.settings.timing.retry_after_min);
        self.finish(Action::GetInstance(mode.instance().clone()), requeue)
    }

    /// Starts `action` (chosen for `mode`): the conditions say so, and the status records the
    /// intent (the instance's name and ID, the operation as Pending), before it is sent. The
    /// controller writes that status before the request: after a crash the next reconcile finds
    /// the intent and looks at the instance before acting again.
    fn start(mut self, mode: &Mode, action: Action) -> Decision {
        let requeue = Requeue::After(self.settings.timing.retry_after_min);
        match action.operation() {
            Some(operation) => {
                // From the first write of the instance itself on, the name is taken: a spec
                // naming another one is refused. A validation creates nothing, so after one
                // fails (say, AlreadyProtected) the spec may still name another instance, e.g.
                // to adopt the one that protects the account.
                if operation != OperationAction::Validate {
                    self.status.backup_instance_name = Some(mode.instance().name().to_owned());
                    self.status.backup_instance_id = Some(mode.instance().to_string());
                }
                // Recorded with the intent: whatever of that name exists after a crash is
                // the outcome of this write, so this resource's own.
                if operation == OperationAction::Create {
                    self.status.ownership = Some(Ownership::Created);
                }
                // The same intent already recorded (say, before the write waited for its slot
                // in the budget) keeps its time: rewriting it for its time alone would cost a
                // status write and say nothing new.
                let mut recorded = intent(operation, self.now);
                if let Some(op) = &self.status.operation
                    && op.action == operation
                    && op.status == OperationPhase::Pending
                {
                    recorded.start_time = op.start_time.clone();
                }
                self.status.operation = Some(recorded);
                self.progressing_for(mode, operation, action, requeue)
            }
            None => self.finish(action, requeue),
        }
    }

    /// PUTs the spec's instance with the owner tags, keeping the other tags of `existing`
    /// (an update replaces the instance's whole tag set).
    fn put(
        self,
        target: &Target,
        operation: OperationAction,
        existing: &BTreeMap<String, String>,
    ) -> Decision {
        let mode = Mode::Apply(target);
        let tags = if self.settings.azure.tags_supported {
            let mut tags: BTreeMap<String, String> = existing
                .iter()
                .filter(|(key, _)| !owner_tag::ALL.iter().any(|o| o.eq_ignore_ascii_case(key)))
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect();
            tags.extend(owner_tags(self.obj, &self.settings.cluster_id));
            tags
        } else {
            BTreeMap::new()
        };
        let action = Action::Put {
            target: target.clone(),
            operation,
            tags,
        };
        self.start(&mode, action)
    }

    /// How the resource came to own its instance, as its status records it. Statuses written
    /// before ownership was recorded count a write of this resource (or an instance seen after
    /// one) as ownership: a Create as `Created`, anything else as `Adopted`.
    fn recorded_ownership(&self) -> Option<Ownership> {
        if let Some(ownership) = self.status.ownership {
            return Some(ownership);
        }
        match &self.status.operation {
            None => self
                .status
                .backup_instance_id
                .is_some()
                .then_some(Ownership::Adopted),
            Some(op) if op.action == OperationAction::Create => Some(Ownership::Created),
            Some(op) => (op.action != OperationAction::Validate
                || self.status.protection_status.is_some())
            .then_some(Ownership::Adopted),
        }
    }

    /// Who owns `instance`: its owner tags say so, or (without them) this resource's status.
    fn owner(&self, instance: &ObservedInstance) -> Owner {
        let tags = &instance.tags;
        let tagged = owner_tag::ALL
            .iter()
            .any(|key| owner_tag_value(tags, key).is_some());
        if self.settings.azure.tags_supported && tagged {
            let tag = |key| owner_tag_value(tags, key).unwrap_or("(no tag)");
            let same_uid = tag(owner_tag::UID).eq_ignore_ascii_case(self.uid());
            let same_cluster = tag(owner_tag::CLUSTER) == self.settings.cluster_id;
            if same_uid && same_cluster {
                return Owner::Us { tagged: true };
            }
            let cluster = if same_cluster {
                "this cluster".to_owned()
            } else {
                format!("cluster {}", tag(owner_tag::CLUSTER))
            };
            return Owner::Other(format!(
                "BlobBackupInstance {}/{} (uid {}) of {cluster}",
                tag(owner_tag::NAMESPACE),
                tag(owner_tag::NAME),
                tag(owner_tag::UID),
            ));
        }
        match self.recorded_ownership() {
            Some(_) => Owner::Us { tagged: false },
            None => Owner::Nobody,
        }
    }

    /// Whether the status records `action` as intended but not answered by Azure.
    fn intended(&self, action: OperationAction) -> bool {
        self.status
            .operation
            .as_ref()
            .is_some_and(|op| op.action == action && op.status == OperationPhase::Pending)
    }

    /// Whether Azure validated the backup request for this generation.
    fn validated_for_this_generation(&self) -> bool {
        self.was_true_for_this_generation(condition_type::VALIDATED)
    }

    // ---- the state machine ----

    fn apply(self, mode: &Mode, observation: &Observation) -> Decision {
        match observation {
            Observation::None => self.next_from_status(mode),
            Observation::Unsent => self.unsent(mode),
            Observation::Instance(instance) => self.on_instance(mode, instance.as_ref()),
            Observation::Started { action, poll } => self.on_started(mode, *action, poll.as_ref()),
            Observation::Polled {
                status,
                retry_after,
            } => self.on_polled(mode, status, *retry_after),
            Observation::Failed { call, error } => self.on_failed(mode, *call, error),
            Observation::PollRefused { message } => self.poll_refused(mode, message),
        }
    }

    fn in_flight(&self) -> Option<&AzureOperation> {
        in_flight(&self.status)
    }

    /// The client would not poll the recorded URL: waiting on it would stall the resource (and
    /// block its deletion) for good, so the operation ends as Failed and Azure's instance, read
    /// afresh, says what to do next (a deletion whose instance is gone completes without a
    /// second DELETE).
    fn poll_refused(mut self, mode: &Mode, message: &str) -> Decision {
        let error = AzureErrorDetail {
            code: Reason::PollUrlRefused.as_str().to_owned(),
            message: message.to_owned(),
            ..AzureErrorDetail::default()
        };
        self.end_operation(OperationPhase::Failed, Some(&error));
        let note = format!(
            "{}; the operation is marked Failed and the backup instance is read from Azure instead",
            error.message
        );
        self.event(EventType::Warning, Reason::PollUrlRefused, &note);
        self.set_health(Health::Progressing, Reason::PollUrlRefused, &note);
        self.get(mode)
    }

    fn next_from_status(self, mode: &Mode) -> Decision {
        if let Some(op) = self.in_flight() {
            let deleting_abandons =
                matches!(mode, Mode::Delete { .. }) && op.action == OperationAction::Validate;
            if !deleting_abandons {
                let url = op.poll_url.clone().unwrap_or_default();
                let (action, requeue) = (
                    op.action,
                    Requeue::After(self.settings.timing.retry_after_min),
                );
                let poll = Action::Poll {
                    url,
                    instance: mode.instance().clone(),
                };
                return self.progressing_for(mode, action, poll, requeue);
            }
        }
        let last = self
            .status
            .operation
            .as_ref()
            .map(|op| (op.action, op.status));
        match (mode, last) {
            (Mode::Apply(target), Some((OperationAction::Validate, OperationPhase::Succeeded))) => {
                self.put(target, OperationAction::Create, &BTreeMap::new())
            }
            (
                Mode::Delete { .. },
                Some((
                    OperationAction::Delete | OperationAction::StopProtection,
                    OperationPhase::Succeeded,
                )),
            ) => self.remove_finalizer(Reason::Deleted, "Azure confirmed the deletion"),
            // Nothing was ever started for this resource and the instance name holds its uid:
            // no backup instance of that name can exist, so skip the GET and validate.
            (Mode::Apply(target), None)
                if target.spec.backup_instance_name.is_none()
                    && self.status.backup_instance_id.is_none() =>
            {
                self.start(mode, Action::Validate((*target).clone()))
            }
            _ => self.get(mode),
        }
    }

    /// The intent recorded was not sent (it waited for its slot in the write budget). A
    /// creation intended after a validation of this spec is sent without looking at the
    /// instance first, as it would have been without the wait, if it was recorded no longer
    /// than `retry_after_max` ago: the view of Azure it was decided on is then no older than
    /// the one a PUT right after a validation's poll acts on (Azure's `Retry-After` may
    /// space those polls that far apart). The GET before a PUT only proves what a crash could
    /// have left unknown (whether the intended PUT went out), and this controller knows.
    /// Anything else is looked at as after any reconcile.
    fn unsent(self, mode: &Mode) -> Decision {
        let recorded = self
            .status
            .operation
            .as_ref()
            .and_then(|op| op.start_time.as_ref())
            .map(|time| time.0);
        let fresh = recorded.is_some_and(|at| {
            Duration::try_from(self.now.duration_since(at))
                .is_ok_and(|age| age <= self.settings.timing.retry_after_max)
        });
        if let Mode::Apply(target) = mode
            && fresh
            && self.intended(OperationAction::Create)
            && self.validated_for_this_generation()
        {
            return self.put(target, OperationAction::Create, &BTreeMap::new());
        }
        self.next_from_status(mode)
    }

    /// Keeps the conditions saying what the operation in flight is doing (they may be stale
    /// after a restart or a new generation).
    fn progressing_for(
        mut self,
        mode: &Mode,
        action: OperationAction,
        next: Action,
        requeue: Requeue,
    ) -> Decision {
        if !self.retrying() {
            let (reason, message) = progress_message(mode, action);
            self.set_health(Health::Progressing, reason, &message);
        }
        self.finish(next, requeue)
    }

    /// Whether this step retries, on its backoff, what left this generation Stalled. A retry
    /// keeps the Stalled conditions (and their lastTransitionTime, the backoff's clock) until
    /// Azure accepts a write or reports progress: until then a person still has to act.
    fn retrying(&self) -> bool {
        self.was_true_for_this_generation(condition_type::STALLED)
    }

    fn on_instance(mut self, mode: &Mode, instance: Option<&ObservedInstance>) -> Decision {
        let Some(instance) = instance else {
            let had_instance = self.status.protection_status.is_some();
            self.status.last_recovery_point_time = None;
            self.status.protection_status = None;
            self.status.protection_state = None;
            self.status.provisioning_state = None;
            return match mode {
                Mode::Delete { .. } => self.remove_finalizer(
                    Reason::Deleted,
                    "The backup instance is not in Azure: nothing left to delete",
                ),
                Mode::Apply(target) => {
                    if had_instance {
                        let note = format!(
                            "Backup instance {} was deleted outside Kubernetes; recreating it",
                            target.instance
                        );
                        self.event(EventType::Warning, Reason::DriftDetected, &note);
                    }
                    // A creation intended after a validation of this spec never reached Azure:
                    // send it now, without validating again.
                    if self.intended(OperationAction::Create)
                        && self.validated_for_this_generation()
                    {
                        return self.put(target, OperationAction::Create, &BTreeMap::new());
                    }
                    self.start(mode, Action::Validate((*target).clone()))
                }
            };
        };

        if !instance.datasource_id.is(mode.account()) {
            let message = format!(
                "Backup instance {} protects {}, not spec.storageAccount.id {}: set spec.backupInstanceName to a free name",
                mode.instance(),
                instance.datasource_id,
                mode.account()
            );
            return match mode {
                Mode::Delete { .. } => {
                    let mut step = self;
                    step.event(
                        EventType::Warning,
                        Reason::InstanceConflict,
                        &format!("{message}; left untouched"),
                    );
                    step.remove_finalizer(
                        Reason::Deleted,
                        "Nothing of this resource to delete in Azure",
                    )
                }
                Mode::Apply(_) => self.stalled(Reason::InstanceConflict, &message),
            };
        }

        // A resource writes only to an instance it owns (DESIGN.md section 9).
        let tagged = match (self.owner(instance), mode) {
            (Owner::Us { tagged }, _) => {
                self.status.ownership.get_or_insert(Ownership::Created);
                // A creation recorded as intended (its poll URL was in the memory of a
                // controller since restarted): the instance found is its outcome.
                if self.intended(OperationAction::Create) {
                    self.end_operation(OperationPhase::Succeeded, None);
                }
                tagged
            }
            (Owner::Other(owner), Mode::Apply(_)) => {
                let message = format!(
                    "Backup instance {} belongs to {owner}, as its owner tags say: this resource writes nothing to it. Name another backup instance in spec.backupInstanceName, or delete the resource that owns it",
                    mode.instance()
                );
                return self.stalled(Reason::OwnedElsewhere, &message);
            }
            (Owner::Other(owner), Mode::Delete { .. }) => {
                let note = format!(
                    "Backup instance {} belongs to {owner}: left untouched",
                    mode.instance()
                );
                self.event(EventType::Warning, Reason::OwnedElsewhere, &note);
                return self.remove_finalizer(
                    Reason::Deleted,
                    "Nothing of this resource to delete in Azure",
                );
            }
            (Owner::Nobody, Mode::Delete { .. }) => {
                let note = format!(
                    "Backup instance {} was never this resource's own (it carries no owner tags of it): left untouched",
                    mode.instance()
                );
                return self.remove_finalizer(Reason::Deleted, &note);
            }
            (Owner::Nobody, Mode::Apply(_)) => {
                let adopt = self.settings.azure.tags_supported
                    && matches!(
                        self.access,
                        Access::Granted {
                            allow_adoption: true
                        }
                    );
                if !adopt {
                    return self.adoption_not_allowed(mode);
                }
                let note = format!(
                    "Adopted the existing backup instance {}: writing this resource's owner tags",
                    mode.instance()
                );
                self.event(EventType::Normal, Reason::Adopted, &note);
                self.status.ownership = Some(Ownership::Adopted);
                false
            }
        };
        self.status.backup_instance_name = Some(mode.instance().name().to_owned());
        self.status.backup_instance_id = Some(mode.instance().to_string());
        self.status.protection_status = instance.protection_status.clone();
        self.status.protection_state = instance.protection_state.clone();
        self.status.provisioning_state = instance.provisioning_state.clone();
        match instance.last_recovery_point {
            LastRecoveryPoint::At(at) => self.status.last_recovery_point_time = Some(Time(at)),
            LastRecoveryPoint::NoneYet => self.status.last_recovery_point_time = None,
            // Operational backup has none; a vaulted one whose list failed keeps its time.
            LastRecoveryPoint::NotRead if instance.containers.is_none() => {
                self.status.last_recovery_point_time = None;
            }
            LastRecoveryPoint::NotRead => {}
        }

        match mode {
            Mode::Apply(target) => {
                let retag = self.settings.azure.tags_supported && !tagged;
                self.compare(target, instance, retag)
            }
            Mode::Delete {
                instance: id,
                policy,
                ..
            } => match policy {
                DeletionPolicy::Retain if !self.settings.azure.instance_actions_supported => {
                    let message = format!(
                        "deletionPolicy Retain needs stopProtection, which api-version {} lacks: run the operator with a newer --api-version, or set deletionPolicy to Delete or Orphan",
                        self.settings.azure.api_version
                    );
                    self.stalled(Reason::StopProtectionUnsupported, &message)
                }
                DeletionPolicy::Retain if matches!(protection(instance), Protection::Stopped) => {
                    self.remove_finalizer(
                        Reason::ProtectionStopped,
                        "Protection is stopped; the recovery points stay in the vault",
                    )
                }
                DeletionPolicy::Retain => self.start(mode, Action::StopProtection(id.clone())),
                DeletionPolicy::Delete | DeletionPolicy::Orphan => {
                    self.start(mode, Action::Delete(id.clone()))
                }
            },
        }
    }

    /// An existing instance without owner tags that this resource may not adopt.
    fn adoption_not_allowed(self, mode: &Mode) -> Decision {
        let why = if self.settings.azure.tags_supported {
            format!(
                "no BackupVaultGrant of vault {} for this namespace allows adoption: a cluster administrator can set allowAdoption: true on the grant",
                mode.instance().vault().name()
            )
        } else {
            format!(
                "api-version {} has no tags to mark it as adopted: run the operator with a newer --api-version",
                self.settings.azure.api_version
            )
        };
        let message = format!(
            "Backup instance {} exists without owner tags (it was created outside this operator) and {why}; or name a free backup instance in spec.backupInstanceName. Nothing is written to it",
            mode.instance()
        );
        self.stalled(Reason::AdoptionNotAllowed, &message)
    }

    /// The instance exists for our account and is ours: bring it to the spec (and its owner
    /// tags, when `retag`), or report how it stands.
    fn compare(mut self, target: &Target, instance: &ObservedInstance, retag: bool) -> Decision {
        let differs = spec_difference(target, instance)
            .or_else(|| retag.then(|| "this resource's owner tags".to_owned()));
        match (protection(instance), differs) {
            (Protection::Configuring, pending) => {
                let mut message = format!(
                    "Azure is configuring protection (status {})",
                    instance
                        .protection_status
                        .as_deref()
                        .unwrap_or("not reported")
                );
                if let Some(change) = pending {
                    message.push_str(&format!("; then {change} will be applied"));
                }
                self.set_health(Health::Progressing, Reason::ConfiguringProtection, &message);
                let requeue = Requeue::After(self.settings.timing.protection_poll);
                self.finish(Action::None, requeue)
            }
            (Protection::Stopped, _) => {
                let message = format!(
                    "Azure reports protection status {} (state {}): resume protection in Azure, or delete and recreate this resource",
                    instance.protection_status.as_deref().unwrap_or("unknown"),
                    instance.protection_state.as_deref().unwrap_or("unknown"),
                );
                self.stalled(Reason::ProtectionStopped, &message)
            }
            (Protection::Configured | Protection::Error, Some(_)) => {
                self.put(target, OperationAction::Update, &instance.tags)
            }
            (Protection::Configured, None) => {
                let message = format!(
                    "Azure reports ProtectionConfigured for storage account {} in vault {} with policy {}",
                    target.spec.storage_account.name(),
                    target.spec.vault.name(),
                    target.spec.policy.name()
                );
                let was_ready = self
                    .old_condition(condition_type::READY)
                    .is_some_and(|c| c.status == ConditionStatus::True);
                if !was_ready {
                    self.event(EventType::Normal, Reason::Protected, &message);
                }
                self.set_health(Health::Ready, Reason::ProtectionConfigured, &message);
                let requeue = Requeue::After(self.settings.timing.resync_interval);
                self.finish(Action::None, requeue)
            }
            (Protection::Error, None) => self.protection_error(target, instance),
        }
    }

    fn protection_error(mut self, target: &Target, instance: &ObservedInstance) -> Decision {
        let error = instance.protection_error.clone().unwrap_or_default();
        let message = format!(
            "Azure reports protection status {}: {}",
            instance
                .protection_status
                .as_deref()
                .unwrap_or("ProtectionError"),
            azure_text(&error)
        );
        // isUserError is unreliable (false even for user errors in Azure's own examples).
        let user_error = error.code.to_ascii_lowercase().contains("usererror");
        if !user_error {
            // Azure's side: it retries by itself; keep watching.
            self.set_health(Health::Progressing, Reason::ProtectionError, &message);
            let requeue = Requeue::After(self.settings.timing.stalled_retry_max);
            return self.finish(Action::None, requeue);
        }
        // Seen before, and a backoff has passed since the last sync: the person may have fixed
        // the cause, so ask Azure to retry.
        let last_sync_ended = self
            .status
            .operation
            .as_ref()
            .filter(|op| op.action == OperationAction::Sync)
            // A sync intended but unanswered may have reached Azure: it counts from then.
            .and_then(|op| match op.status {
                OperationPhase::Pending => op.start_time.as_ref(),
                _ => op.end_time.as_ref(),
            })
            .and_then(|end| Duration::try_from(self.now.duration_since(end.0)).ok());
        let sync_due = last_sync_ended.is_none_or(|since| since >= self.stalled_backoff());
        // `sync` arrived with `stopProtection` (api-version 2022-01-01); without it the person
        // must re-sync in Azure, and the Stalled message says what Azure reports.
        if self.settings.azure.instance_actions_supported
            && self.was_stalled()
            && self.old_ready_reason_is(Reason::ProtectionError)
            && sync_due
        {
            return self.start(&Mode::Apply(target), Action::Sync(target.instance.clone()));
        }
        self.stalled(Reason::ProtectionError, &message)
    }

    fn on_started(
        mut self,
        mode: &Mode,
        action: OperationAction,
        poll: Option<&PollHandle>,
    ) -> Decision {
        let (reason, note) = progress_message(mode, action);
        // Validation and sync can still fail in the operation; an accepted write is progress.
        let write = !matches!(action, OperationAction::Validate | OperationAction::Sync);
        let retrying = self.retrying() && !write;
        if !retrying {
            // A retry while Stalled says nothing new: the Warning when it stalled said it.
            self.event(EventType::Normal, reason, &note);
        }
        if action == OperationAction::Validate && !retrying {
            self.set_validated(
                ConditionStatus::Unknown,
                Reason::Validating,
                "validateForBackup is running",
            );
        }
        self.status.operation = Some(AzureOperation {
            action,
            status: OperationPhase::InProgress,
            poll_url: poll.map(|p| p.url.clone()),
            start_time: Some(Time(self.now)),
            end_time: None,
            error: None,
        });
        match poll {
            Some(handle) => {
                let requeue = Requeue::After(self.clamp_retry(handle.retry_after));
                // What progressing_for says, except that an accepted write ends a Stalled retry.
                if !retrying {
                    self.set_health(Health::Progressing, reason, &note);
                }
                self.finish(Action::None, requeue)
            }
            None => self.succeeded(mode, action),
        }
    }

    fn on_polled(
        mut self,
        mode: &Mode,
        polled: &PolledStatus,
        retry_after: Option<Duration>,
    ) -> Decision {
        let Some(action) = self.in_flight().map(|op| op.action) else {
            // A poll answer with nothing in flight is stale: look at Azure afresh.
            return self.get(mode);
        };
        match polled {
            PolledStatus::InProgress => {
                let requeue = Requeue::After(self.clamp_retry(retry_after));
                self.progressing_for(mode, action, Action::None, requeue)
            }
            PolledStatus::Succeeded => {
                self.end_operation(OperationPhase::Succeeded, None);
                self.succeeded(mode, action)
            }
            PolledStatus::Failed(error) => {
                self.end_operation(OperationPhase::Failed, Some(error));
                self.operation_failed(action, error)
            }
            PolledStatus::Canceled => {
                self.end_operation(OperationPhase::Canceled, None);
                self.set_health(
                    Health::Progressing,
                    Reason::OperationCanceled,
                    &format!("The Azure {action:?} operation was canceled; starting over"),
                );
                let requeue = Requeue::After(self.settings.timing.stalled_retry_base);
                self.finish(Action::None, requeue)
            }
        }
    }

    fn succeeded(mut self, mode: &Mode, action: OperationAction) -> Decision {
        if let Some(op) = self.status.operation.as_mut() {
            op.status = OperationPhase::Succeeded;
            op.end_time.get_or_insert(Time(self.now));
        }
        match (action, mode) {
            (OperationAction::Validate, Mode::Apply(target)) => {
                self.set_validated(
                    ConditionStatus::True,
                    Reason::ValidationSucceeded,
                    "Azure validated the backup request",
                );
                self.put(target, OperationAction::Create, &BTreeMap::new())
            }
            (OperationAction::Delete, _) => {
                self.remove_finalizer(Reason::Deleted, "Azure deleted the backup instance")
            }
            (OperationAction::StopProtection, _) => self.remove_finalizer(
                Reason::ProtectionStopped,
                "Azure stopped protection; the recovery points stay in the vault",
            ),
            _ => self.get(mode),
        }
    }

    fn operation_failed(mut self, action: OperationAction, error: &AzureErrorDetail) -> Decision {
        let fallback = match action {
            OperationAction::Validate => Reason::ValidationFailed,
            OperationAction::Delete | OperationAction::StopProtection => Reason::DeletionFailed,
            OperationAction::Create | OperationAction::Update | OperationAction::Sync => {
                Reason::OperationFailed
            }
            OperationAction::ValidateRestore | OperationAction::Restore => Reason::RestoreRefused,
        };
        let (reason, message) = explain(fallback, error);
        if action == OperationAction::Validate {
            self.set_validated(ConditionStatus::False, reason, &message);
            return self.stalled_with_event(reason, Reason::ValidationFailed, &message);
        }
        self.stalled(reason, &message)
    }

    fn on_failed(mut self, mode: &Mode, call: AzureCall, error: &ObservedError) -> Decision {
        let status = error.http_status;
        if call == AzureCall::Start(OperationAction::Delete) && status == Some(404) {
            return self.remove_finalizer(
                Reason::Deleted,
                "The backup instance is not in Azure: nothing left to delete",
            );
        }
        match error.class {
            // A resync GET without an answer says nothing new about a resource Azure last
            // reported protected for this generation: keep Ready (GitOps health must not flap
            // on a network blip) and look again soon.
            ErrorClass::Transient
                if call == AzureCall::Get
                    && matches!(mode, Mode::Apply(_))
                    && self.ready_for_this_generation() =>
            {
                let requeue = Requeue::After(self.clamp_retry(error.retry_after));
                self.finish(Action::None, requeue)
            }
            ErrorClass::Transient => {
                let (reason, message) = transient_reason(error);
                self.set_health(Health::Progressing, reason, &message);
                // No answer at all (connection reset, timeout): nobody asked us to wait long,
                // so retry after twice the shortest wait instead of the no-Retry-After default.
                let retry_after = error.retry_after.or_else(|| {
                    status
                        .is_none()
                        .then_some(self.settings.timing.retry_after_min * 2)
                });
                let requeue = Requeue::After(self.clamp_retry(retry_after));
                self.finish(Action::None, requeue)
            }
            ErrorClass::Bug => {
                // A poll answer we cannot read says nothing about the operation: keep polling it.
                if call != AzureCall::Poll {
                    self.record_failure(call, &error.azure);
                }
                let message = format!(
                    "Azure answered something the operator cannot read: {}",
                    azure_text(&error.azure)
                );
                self.stalled(Reason::UnexpectedAzureResponse, &message)
            }
            ErrorClass::NeedsPerson => {
                let fallback = match (status, call) {
                    (Some(401 | 403), _) => Reason::AccessDenied,
                    (Some(404), _) => Reason::AzureResourceNotFound,
                    (_, AzureCall::Start(OperationAction::Validate)) => Reason::ValidationFailed,
                    (
                        _,
                        AzureCall::Start(OperationAction::Delete | OperationAction::StopProtection),
                    ) => Reason::DeletionFailed,
                    _ => Reason::RequestRejected,
                };
                let (reason, mut message) = explain(fallback, &error.azure);
                if let Some(s) = status {
                    message.push_str(&format!(" (HTTP {s})"));
                }
                // On a poll: Azure no longer knows the operation; start over after the backoff.
                self.record_failure(call, &error.azure);
                if call == AzureCall::Start(OperationAction::Validate) {
                    self.set_validated(ConditionStatus::False, reason, &message);
                    return self.stalled_with_event(reason, Reason::ValidationFailed, &message);
                }
                if matches!(mode, Mode::Delete { .. }) && reason == Reason::RequestRejected {
                    return self.stalled(Reason::DeletionFailed, &message);
                }
                self.stalled(reason, &message)
            }
        }
    }

    /// Records how the operation in flight ended.
    fn end_operation(&mut self, phase: OperationPhase, error: Option<&AzureErrorDetail>) {
        end_operation(self.status.operation.as_mut(), phase, error, self.now);
    }

    /// Records a call that failed for good as the last operation, so status shows it and a
    /// retry of the same operation keeps the Stalled clock running.
    fn record_failure(&mut self, call: AzureCall, error: &AzureErrorDetail) {
        match call {
            AzureCall::Get => {}
            AzureCall::Poll => self.end_operation(OperationPhase::Failed, Some(error)),
            AzureCall::Start(action) => {
                self.status.operation = Some(failed_start(action, error, self.now));
            }
        }
    }

    // ---- deletion ----

    fn deletion(self, observation: &Observation) -> Decision {
        if !self.has_finalizer() {
            return self.finish_untouched();
        }
        let policy = self.obj.spec.deletion_policy;
        if policy == DeletionPolicy::Orphan {
            return self.remove_finalizer(
                Reason::Orphaned,
                "deletionPolicy Orphan: the backup instance stays in Azure untouched",
            );
        }
        let recorded = self.status.backup_instance_name.as_deref();
        let (account, instance) = match self.obj.spec.instance_ref(self.uid(), recorded) {
            Ok(found) => found,
            Err(_) if self.status.backup_instance_id.is_none() => {
                return self.remove_finalizer(Reason::Deleted, "Nothing was created in Azure");
            }
            Err(e) => return self.invalid_spec(&e),
        };
        // A vault no longer granted: only an instance the resource created may still go.
        if let Access::NotGranted {
            message,
            deletion_allowed: false,
        } = self.access
            && self.recorded_ownership() != Some(Ownership::Created)
        {
            let note = format!(
                "{message}. Nothing is sent to Azure: a backup instance of this resource stays there untouched, as with deletionPolicy Orphan"
            );
            return self.remove_finalizer(Reason::Orphaned, &note);
        }
        let mode = Mode::Delete {
            account,
            instance,
            policy,
        };
        self.apply(&mode, observation)
    }

    fn finish_untouched(self) -> Decision {
        Decision {
            action: Action::None,
            status: None,
            events: Vec::new(),
            requeue: Requeue::AwaitChange,
        }
    }
}

/// The reason and message while `action` is under way.
fn progress_message(mode: &Mode, action: OperationAction) -> (Reason, String) {
    let name = mode.instance().name();
    match action {
        OperationAction::Validate => (
            Reason::Validating,
            format!(
                "Validating with Azure that vault {} can protect storage account {}",
                mode.instance().vault().name(),
                mode.account().name()
            ),
        ),
        OperationAction::Create => (Reason::Creating, format!("Creating backup instance {name}")),
        OperationAction::Update => (Reason::Updating, format!("Updating backup instance {name}")),
        OperationAction::Delete => (
            Reason::Deleting,
            format!("Deleting backup instance {name} and its backup data"),
        ),
        OperationAction::StopProtection => (
            Reason::StoppingProtection,
            format!("Stopping protection of backup instance {name}, keeping the recovery points"),
        ),
        OperationAction::Sync => (
            Reason::Syncing,
            format!("Asking Azure to re-sync backup instance {name}"),
        ),
        OperationAction::ValidateRestore => (
            Reason::ValidatingRestore,
            format!("Validating a restore of backup instance {name}"),
        ),
        OperationAction::Restore => (
            Reason::Restoring,
            format!("Restoring backup instance {name}"),
        ),
    }
}

/// What differs between the instance in Azure and the spec, in words; `None` when nothing.
fn spec_difference(target: &Target, instance: &ObservedInstance) -> Option<String> {
    if !instance.policy_id.is(&target.spec.policy) {
        return Some(format!(
            "the policy change to {}",
            target.spec.policy.name()
        ));
    }
    let normalise = |list: Option<&Vec<String>>| {
        let mut list = list.cloned().unwrap_or_default();
        list.sort();
        list.dedup();
        list
    };
    if normalise(instance.containers.as_ref()) != normalise(target.spec.containers.as_ref()) {
        return Some("the container change".to_owned());
    }
    None
}

/// The reason and message for an Azure error, with the specifics of known codes.
pub(crate) fn explain(fallback: Reason, error: &AzureErrorDetail) -> (Reason, String) {
    let code = error.code.as_str();
    if code.eq_ignore_ascii_case(CODE_ALREADY_PROTECTED) {
        let holder = arm_id_in(&error.message)
            .map(|vault| format!("Backup vault {vault}"))
            .unwrap_or_else(|| "another Backup vault".to_owned());
        let message = format!(
            "The storage account is already protected by {holder}. {}",
            azure_text(error)
        );
        return (Reason::AlreadyProtected, message);
    }
    if code.eq_ignore_ascii_case(CODE_MISSING_PERMISSIONS) {
        let text = error.detail.as_deref().unwrap_or(&error.message);
        let lacks = match (
            quoted_after(text, "action '"),
            quoted_after(text, "scope '"),
        ) {
            (Some(action), Some(scope)) => format!("permission {action} on {scope}"),
            (Some(action), None) => format!("permission {action}"),
            _ => "a required permission".to_owned(),
        };
        let message = format!(
            "The Backup vault's managed identity lacks {lacks}: grant it the Storage Account Backup Contributor role on the storage account (assignments can take up to 30 minutes to apply; the operator retries by itself). {}",
            azure_text(error)
        );
        return (Reason::MissingPermissions, message);
    }
    (fallback, azure_text(error))
}

/// `now` to the whole second. Kubernetes times have whole seconds; keeping the status's times
/// so makes re-reads compare equal. Shared by every controller that writes a status.
pub(crate) fn whole_second(now: Timestamp) -> Timestamp {
    Timestamp::from_second(now.as_second()).unwrap_or(now)
}

/// Records how the operation in flight (`operation`) ended, at `now`.
pub(crate) fn end_operation(
    operation: Option<&mut AzureOperation>,
    phase: OperationPhase,
    error: Option<&AzureErrorDetail>,
    now: Timestamp,
) {
    if let Some(op) = operation {
        op.status = phase;
        op.end_time = Some(Time(now));
        op.error = error.map(operation_error);
    }
}

/// The intent of an operation about to be sent at `now`: Pending (Azure may not have it).
pub(crate) fn intent(action: OperationAction, now: Timestamp) -> AzureOperation {
    AzureOperation {
        action,
        status: OperationPhase::Pending,
        poll_url: None,
        start_time: Some(Time(now)),
        end_time: None,
        error: None,
    }
}

/// The record of an operation Azure refused at once (`now`).
pub(crate) fn failed_start(
    action: OperationAction,
    error: &AzureErrorDetail,
    now: Timestamp,
) -> AzureOperation {
    AzureOperation {
        action,
        status: OperationPhase::Failed,
        poll_url: None,
        start_time: Some(Time(now)),
        end_time: Some(Time(now)),
        error: Some(operation_error(error)),
    }
}

/// The reason and message of a transient failure: throttled (429), or unavailable.
pub(crate) fn transient_reason(error: &ObservedError) -> (Reason, String) {
    let status = error.http_status;
    let reason = if status == Some(429) {
        Reason::AzureThrottled
    } else {
        Reason::AzureUnavailable
    };
    let message = format!(
        "Azure call failed transiently{}: {}; retrying",
        status.map(|s| format!(" (HTTP {s})")).unwrap_or_default(),
        azure_text(&error.azure)
    );
    (reason, message)
}

/// "Azure: <code>: <message> Recommended action: <actions>".
pub(crate) fn azure_text(error: &AzureErrorDetail) -> String {
    let mut text = match (error.code.is_empty(), error.message.is_empty()) {
        (true, true) => "Azure gave no details".to_owned(),
        (true, false) => format!("Azure: {}", error.message),
        (false, true) => format!("Azure: {}", error.code),
        (false, false) => format!("Azure: {}: {}", error.code, error.message),
    };
    if !error.recommended_actions.is_empty() {
        text.push_str(" Recommended action: ");
        text.push_str(&error.recommended_actions.join(" "));
    }
    text
}

pub(crate) fn operation_error(error: &AzureErrorDetail) -> OperationError {
    OperationError {
        code: error.code.clone(),
        message: truncate(&error.message, MAX_MESSAGE),
        recommended_actions: error.recommended_actions.clone(),
    }
}

/// The text between `marker` and the next `'`, as in Azure's "... action 'X' over scope 'Y'".
fn quoted_after<'t>(text: &'t str, marker: &str) -> Option<&'t str> {
    let start = text.find(marker)? + marker.len();
    let len = text[start..].find('\'')?;
    Some(&text[start..start + len]).filter(|s| !s.is_empty())
}

/// The first ARM ID in Azure's prose, e.g. the vault in "already protected under the Backup
/// vault /subscriptions/.../backupVaults/v."
fn arm_id_in(text: &str) -> Option<&str> {
    let start = text.find("/subscriptions/")?;
    let id = text[start..].split_whitespace().next()?;
    Some(id.trim_end_matches(['.', ',', ';']))
}
