//! The pure heart of the BlobRestore controller: (the restore, its source as authorised, what
//! Azure said, now) → the next action, the status, events and when to look again. No I/O.
//!
//! The flow, each step recorded in status before the next (DESIGN.md section 10):
//! 1. the source (the referenced BlobBackupInstance) must be authorised ([`authorise`]);
//! 2. the point is checked against Azure (restorable time ranges, or recovery points) and
//!    recorded (`restorePoint`, `backupInstanceId`);
//! 3. validateRestore (long-running);
//! 4. restore: its intent (`operation: Restore Pending`) is recorded before the request, and a
//!    recorded intent is never sent again: a restart that finds it without Azure's answer
//!    stops with `RestoreOutcomeUnknown`;
//! 5. the job Azure names is followed to its end (`Succeeded` or `Failed`).

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{
    BlobBackupInstance, BlobRestore, BlobRestoreStatus, ConditionStatus, OperationAction,
    OperationPhase, RestorePhase, RestorePointSpec, SpecError, ValidatedRestore, condition_type,
    truncate,
};
use crate::controller::decide::{
    Access, AzureCall, ConditionChange, ErrorClass, EventSpec, EventType, Health, MAX_NOTE,
    ObservedError, PollHandle, PolledStatus, Reason, Requeue, Timing, azure_text, end_operation,
    explain, failed_start, intent, transient_reason, whole_second,
};
use crate::controller::grants::{NotAuthorised, authorise_source};
use crate::controller::pacing::BudgetKey;
use dataprotection::ids::{BackupInstanceId, StorageAccountId, VaultId};
use dataprotection::{
    AzureErrorDetail, BlobRestoreTarget, JobState, RestorableTimeRange, RestoreRequest,
    RestoreSource, WriteKind,
};

/// How far before the point in time the restorable ranges are asked for.
const RANGE_WINDOW: jiff::SignedDuration = jiff::SignedDuration::from_hours(24);

/// The source of a restore, as [`authorise`] judged it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The restore may read this backup instance.
    Authorised(SourceInstance),
    /// It may not (now): why, and what a person should do.
    Refused {
        /// The condition reason.
        reason: Reason,
        /// The message.
        message: String,
    },
}

/// What a restore needs of its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceInstance {
    /// The backup instance in Azure.
    pub instance: BackupInstanceId,
    /// The protected storage account.
    pub account: StorageAccountId,
    /// Its region.
    pub location: String,
    /// The containers of a vaulted backup; `None` for operational backup.
    pub vaulted_containers: Option<Vec<String>>,
}

/// Whether a restore may read `source`, the BlobBackupInstance named `name` it references (in
/// its namespace; `None` when there is none): "a restore is authorised like its source". The
/// source must be Ready for its current generation (its backup instance exists and is
/// protected), own that instance (`status.ownership`), and its vault must be granted to it:
/// `access` is what the vault grants allow the source ([`crate::controller::grants`]; `None`
/// while the grants are not listed yet).
pub fn authorise(
    name: &str,
    source: Option<&BlobBackupInstance>,
    access: Option<&Access>,
) -> Source {
    let refused = |reason: Reason, message: String| Source::Refused { reason, message };
    let not_ready = |message: String| refused(Reason::SourceNotReady, message);
    let Some(source) = source else {
        return not_ready(format!(
            "BlobBackupInstance {name} does not exist in this namespace: create it, or fix spec.backupInstanceRef.name"
        ));
    };
    match access {
        None => {
            return not_ready(
                "the vault grants are not listed yet; looking again shortly".to_owned(),
            );
        }
        Some(access) => {
            if let Err(NotAuthorised(message)) = authorise_source(source, access) {
                let reason = match access {
                    Access::NotGranted { .. } => Reason::VaultNotGranted,
                    Access::Granted { .. } => Reason::SourceNotReady,
                };
                return refused(reason, message);
            }
        }
    }
    let status = source.status.as_ref();
    let ready = status.and_then(|s| {
        s.conditions
            .iter()
            .find(|c| c.type_ == condition_type::READY)
    });
    let current = ready.is_some_and(|c| {
        c.status == ConditionStatus::True && c.observed_generation == source.metadata.generation
    });
    if !current {
        let why = ready
            .map(|c| format!(" ({}: {})", c.reason, c.message))
            .unwrap_or_default();
        return not_ready(format!(
            "BlobBackupInstance {name} is not Ready{why}: a restore reads only a backup that Azure reports protected; it starts once the source is Ready"
        ));
    }
    let instance = status
        .and_then(|s| s.backup_instance_id.as_deref())
        .and_then(|id| BackupInstanceId::parse(id).ok());
    let account = StorageAccountId::parse(&source.spec.storage_account.id).ok();
    match (instance, account) {
        (Some(instance), Some(account)) => Source::Authorised(SourceInstance {
            instance,
            account,
            location: source.spec.storage_account.location.clone(),
            vaulted_containers: source
                .spec
                .vaulted_backup
                .as_ref()
                .map(|v| v.containers.clone()),
        }),
        _ => not_ready(format!(
            "BlobBackupInstance {name} records no valid backup instance or storage account ID"
        )),
    }
}

/// What Azure said in the previous step.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    /// Nothing yet (the first step of a reconcile).
    None,
    /// The restorable time ranges of the operational store.
    Ranges(Vec<RestorableTimeRange>),
    /// The recovery points: name and time.
    RecoveryPoints(Vec<(String, Option<Timestamp>)>),
    /// validateRestore or restore was accepted (`poll`: follow it) or done at once; `job_id`:
    /// the job Azure named.
    Started {
        /// ValidateRestore or Restore.
        action: OperationAction,
        /// Where to follow it; `None` when done at once.
        poll: Option<PollHandle>,
        /// The job Azure named in its answer.
        job_id: Option<String>,
    },
    /// A poll's answer.
    Polled {
        /// The operation's state.
        status: PolledStatus,
        /// Azure's wait.
        retry_after: Option<Duration>,
        /// The job the answer names.
        job_id: Option<String>,
    },
    /// The job's state; `None` when Azure does not know it (404).
    Job(Option<JobState>),
    /// A call failed.
    Failed {
        /// Which call.
        call: AzureCall,
        /// How.
        error: ObservedError,
    },
    /// A write was not sent at all (the leader fence closed, no token): nothing happened in
    /// Azure.
    NotSent {
        /// Which write.
        action: OperationAction,
        /// Why.
        message: String,
    },
    /// The poll URL was refused (not on the ARM endpoint, or not an operation of the vault).
    PollRefused {
        /// Why.
        message: String,
    },
}

/// What to do next.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Nothing: wait for the requeue.
    None,
    /// POST findRestorableTimeRanges of `instance` from `from` to `to`.
    FindRanges {
        /// The backup instance.
        instance: BackupInstanceId,
        /// The window's start.
        from: Timestamp,
        /// The window's end.
        to: Timestamp,
    },
    /// List the recovery points of the instance.
    ListRecoveryPoints(BackupInstanceId),
    /// POST validateRestore.
    ValidateRestore {
        /// The backup instance.
        instance: BackupInstanceId,
        /// The request.
        request: RestoreRequest,
    },
    /// POST restore (sent at most once; its intent is recorded first).
    Restore {
        /// The backup instance.
        instance: BackupInstanceId,
        /// The request.
        request: RestoreRequest,
    },
    /// GET the operation's poll URL.
    Poll {
        /// The URL.
        url: String,
        /// The instance whose vault the operation must belong to.
        instance: BackupInstanceId,
    },
    /// GET the restore job.
    GetJob {
        /// The vault.
        vault: VaultId,
        /// The job's name or ID.
        job: String,
    },
}

impl Action {
    /// The Azure write this action is (its intent is recorded before it is sent).
    pub fn operation(&self) -> Option<OperationAction> {
        match self {
            Action::ValidateRestore { .. } => Some(OperationAction::ValidateRestore),
            Action::Restore { .. } => Some(OperationAction::Restore),
            _ => None,
        }
    }

    /// The ARM operation the action calls, for the metrics (`None` for `None`).
    pub fn operation_id(&self) -> Option<&'static str> {
        use dataprotection::operation_ids as ops;
        Some(match self {
            Action::None => return None,
            Action::FindRanges { .. } => ops::FIND_RESTORABLE_TIME_RANGES,
            Action::ListRecoveryPoints(_) => ops::RECOVERY_POINTS_LIST,
            Action::ValidateRestore { .. } => ops::VALIDATE_FOR_RESTORE,
            Action::Restore { .. } => ops::TRIGGER_RESTORE,
            Action::Poll { .. } => ops::OPERATION_STATUS,
            Action::GetJob { .. } => ops::JOBS_GET,
        })
    }

    /// The write budget this action spends: its vault's subscription's writes for each POST
    /// (findRestorableTimeRanges too: ARM counts every request but a GET as a write, and
    /// answers it with `x-ms-ratelimit-remaining-subscription-writes`); `None` for reads.
    pub fn budget(&self) -> Option<BudgetKey> {
        match self {
            Action::FindRanges { instance, .. }
            | Action::ValidateRestore { instance, .. }
            | Action::Restore { instance, .. } => Some(BudgetKey::new(
                instance.vault().subscription(),
                WriteKind::Writes,
            )),
            Action::None
            | Action::ListRecoveryPoints(_)
            | Action::Poll { .. }
            | Action::GetJob { .. } => None,
        }
    }
}

/// The decision: the next action, the status to record when it changed, events, and when to
/// look again.
pub type Decision = crate::controller::decide::Decision<Action, BlobRestoreStatus>;

/// Decides the next step for `restore`.
pub fn decide(
    restore: &BlobRestore,
    source: &Source,
    observation: &Observation,
    now: Timestamp,
    settings: &Timing,
) -> Decision {
    Step::new(restore, now, settings).decide(source, observation)
}

/// A checked spec and the source that serves it.
type Served<'s> = (&'s ValidatedRestore, &'s SourceInstance);

struct Step<'a> {
    restore: &'a BlobRestore,
    /// The time recorded in status: whole seconds.
    now: Timestamp,
    /// The clock's time, to the nanosecond: a point in time of this very second has passed
    /// or not by it, not by `now`.
    clock: Timestamp,
    settings: &'a Timing,
    old: Option<&'a BlobRestoreStatus>,
    status: BlobRestoreStatus,
    events: Vec<EventSpec>,
}

impl<'a> Step<'a> {
    fn new(restore: &'a BlobRestore, now: Timestamp, settings: &'a Timing) -> Self {
        let status = restore.status.clone().unwrap_or_default();
        let old = restore.status.as_ref();
        let clock = now;
        let now = whole_second(now);
        let events = Vec::new();
        Self {
            restore,
            now,
            clock,
            settings,
            old,
            status,
            events,
        }
    }

    fn decide(mut self, source: &Source, observation: &Observation) -> Decision {
        match self.status.phase {
            Some(RestorePhase::Succeeded | RestorePhase::Failed) => {
                return self.finish(Action::None, Requeue::AwaitChange);
            }
            Some(RestorePhase::Restoring) => return self.restoring(observation),
            _ => {}
        }
        if self.status.phase.is_none() {
            self.status.phase = Some(RestorePhase::Pending);
        }
        let spec = match self.restore.spec.validate(self.clock) {
            Ok(spec) => spec,
            Err(error) => return self.invalid_spec(&error),
        };
        let source = match source {
            Source::Authorised(source) => source,
            Source::Refused { reason, message } => return self.stalled(*reason, message),
        };
        if let Err(error) = fits_source(&spec, source) {
            return self.invalid_spec(&error);
        }
        let recorded = self.status.backup_instance_id.as_deref();
        let checked = self.status.restore_point.is_some()
            && recorded.is_some_and(|id| id.eq_ignore_ascii_case(&source.instance.to_string()));
        if !checked {
            return self.check_point((&spec, source), observation);
        }
        self.before_restore((&spec, source), observation)
    }

    // ---- recording ----

    fn set_health(&mut self, health: Health, reason: Reason, message: &str) {
        let generation = self.restore.metadata.generation;
        ConditionChange::new(
            ConditionStatus::Unknown,
            reason,
            message,
            generation,
            self.now,
        )
        .set_health(&mut self.status.conditions, health);
        self.status.observed_generation = generation;
    }

    fn event(&mut self, type_: EventType, reason: Reason, note: &str) {
        self.events.push(EventSpec {
            type_,
            reason,
            note: truncate(note, MAX_NOTE),
        });
    }

    fn old_ready_reason_is(&self, reason: Reason) -> bool {
        self.old
            .and_then(|s| {
                s.conditions
                    .iter()
                    .find(|c| c.type_ == condition_type::READY)
            })
            .is_some_and(|c| c.reason == reason.as_str())
    }

    fn finish(mut self, action: Action, requeue: Requeue) -> Decision {
        if self.status.conditions.is_empty() {
            self.set_health(Health::Initializing, Reason::Initializing, "Reconciling");
        }
        self.status.fit_to_schema();
        let status = (self.old != Some(&self.status)).then_some(self.status);
        Decision {
            action,
            status,
            events: self.events,
            requeue,
        }
    }

    fn progressing(
        mut self,
        reason: Reason,
        message: &str,
        action: Action,
        requeue: Duration,
    ) -> Decision {
        self.set_health(Health::Progressing, reason, message);
        self.finish(action, Requeue::After(requeue))
    }

    /// A person must act: retried with backoff, since a person may fix things without
    /// touching the resource.
    fn stalled(self, reason: Reason, message: &str) -> Decision {
        let stalled = self.old.and_then(|s| {
            s.conditions
                .iter()
                .find(|c| c.type_ == condition_type::STALLED)
        });
        let backoff = self.settings.stalled_backoff(stalled, self.now);
        self.stall(reason, message, Requeue::After(backoff))
    }

    /// The spec is immutable: nothing but a new BlobRestore fixes it.
    fn invalid_spec(self, error: &SpecError) -> Decision {
        let message = format!("Invalid spec: {error}");
        self.stall(Reason::InvalidSpec, &message, Requeue::AwaitChange)
    }

    /// Stalled for `reason`, with a Warning event when it starts (or its reason changes).
    fn stall(mut self, reason: Reason, message: &str, requeue: Requeue) -> Decision {
        if !self.old_ready_reason_is(reason) {
            self.event(EventType::Warning, reason, message);
        }
        self.set_health(Health::Stalled, reason, message);
        self.finish(Action::None, requeue)
    }

    /// A transient failure: retry after Azure's wait.
    fn transient(self, error: &ObservedError) -> Decision {
        let (reason, message) = transient_reason(error);
        let retry = self.settings.clamp_retry(error.retry_after);
        self.progressing(reason, &message, Action::None, retry)
    }

    /// A call Azure refused, or an answer that cannot be read.
    fn refused(mut self, call: AzureCall, error: &ObservedError) -> Decision {
        if error.class == ErrorClass::Bug {
            let message = format!(
                "Azure answered something the operator cannot read: {}",
                azure_text(&error.azure)
            );
            return self.stalled(Reason::UnexpectedAzureResponse, &message);
        }
        let fallback = match (error.http_status, call) {
            (Some(401 | 403), _) => Reason::AccessDenied,
            (_, AzureCall::Start(_)) => Reason::RestoreRefused,
            (Some(404), _) => Reason::AzureResourceNotFound,
            _ => Reason::RestoreRefused,
        };
        let (reason, mut message) = explain(fallback, &error.azure);
        if let Some(status) = error.http_status {
            message.push_str(&format!(" (HTTP {status})"));
        }
        if let AzureCall::Start(action) = call {
            self.record_failed_start(action, &error.azure);
        }
        self.stalled(reason, &message)
    }

    fn record_failed_start(&mut self, action: OperationAction, error: &AzureErrorDetail) {
        self.status.operation = Some(failed_start(action, error, self.now));
    }

    fn end_operation(&mut self, phase: OperationPhase, error: Option<&AzureErrorDetail>) {
        end_operation(self.status.operation.as_mut(), phase, error, self.now);
    }

    /// Records the intent of `action` (Pending, not yet sent) and sends it.
    fn start(mut self, action: Action, reason: Reason, message: &str) -> Decision {
        let requeue = self.settings.retry_after_min;
        let Some(operation) = action.operation() else {
            return self.finish(action, Requeue::After(requeue));
        };
        self.status.operation = Some(intent(operation, self.now));
        self.event(EventType::Normal, reason, message);
        self.progressing(reason, message, action, requeue)
    }

    // ---- before the restore ----

    fn check_point(mut self, (spec, source): Served, observation: &Observation) -> Decision {
        let instance = source.instance.clone();
        match (observation, &spec.point) {
            (Observation::Ranges(ranges), RestorePointSpec::PointInTime(at)) => {
                if ranges.iter().any(|r| r.contains(*at)) {
                    return self.point_found(source, at.to_string());
                }
                let listed: Vec<String> = ranges
                    .iter()
                    .map(|r| format!("{} to {}", r.start_time, r.end_time))
                    .collect();
                let message = format!(
                    "spec.pointInTime {at} is outside the times Azure can restore backup instance {} to ({}); create a BlobRestore with a point in a listed range",
                    instance.name(),
                    if listed.is_empty() {
                        "none".to_owned()
                    } else {
                        listed.join(", ")
                    }
                );
                self.stalled(Reason::PointNotRestorable, &message)
            }
            (Observation::RecoveryPoints(points), RestorePointSpec::Latest) => {
                let newest = points
                    .iter()
                    .max_by_key(|(_, at)| *at)
                    .map(|(name, _)| name.clone());
                match newest {
                    Some(name) => self.point_found(source, name),
                    None => {
                        let message = format!(
                            "spec.recoveryPoint latest: backup instance {} has no recovery point yet; the operator looks again with backoff",
                            instance.name()
                        );
                        self.stalled(Reason::PointNotRestorable, &message)
                    }
                }
            }
            (Observation::RecoveryPoints(points), RestorePointSpec::RecoveryPoint(wanted)) => {
                match points
                    .iter()
                    .find(|(name, _)| name.eq_ignore_ascii_case(wanted))
                {
                    Some((name, _)) => self.point_found(source, name.clone()),
                    None => {
                        let message = format!(
                            "spec.recoveryPoint {wanted} is not a recovery point of backup instance {} ({} listed); create a BlobRestore naming a listed one, or latest",
                            instance.name(),
                            points.len()
                        );
                        self.stalled(Reason::PointNotRestorable, &message)
                    }
                }
            }
            (Observation::Failed { call, error }, _) => match error.class {
                ErrorClass::Transient => self.transient(error),
                _ => self.refused(*call, error),
            },
            (_, point) => {
                self.status.phase = Some(RestorePhase::Pending);
                let (action, what) = match point {
                    RestorePointSpec::PointInTime(at) => (
                        Action::FindRanges {
                            instance: instance.clone(),
                            from: *at - RANGE_WINDOW,
                            // The clock, not the whole second: ranges asked up to the second
                            // end before a point taken earlier in it.
                            to: self.clock,
                        },
                        format!(
                            "Checking that Azure can restore backup instance {} to {at}",
                            instance.name()
                        ),
                    ),
                    RestorePointSpec::Latest | RestorePointSpec::RecoveryPoint(_) => (
                        Action::ListRecoveryPoints(instance.clone()),
                        format!(
                            "Looking up the recovery points of backup instance {}",
                            instance.name()
                        ),
                    ),
                };
                let requeue = self.settings.retry_after_min;
                self.progressing(Reason::CheckingRestorePoint, &what, action, requeue)
            }
        }
    }

    /// Records the checked point; validation comes next (its intent is written with it).
    fn point_found(mut self, source: &SourceInstance, point: String) -> Decision {
        self.status.restore_point = Some(point);
        self.status.backup_instance_id = Some(source.instance.to_string());
        self.status.operation = None;
        let message = format!(
            "Restore point {} of backup instance {} is restorable",
            self.status.restore_point.as_deref().unwrap_or_default(),
            source.instance.name()
        );
        self.event(EventType::Normal, Reason::CheckingRestorePoint, &message);
        let requeue = self.settings.retry_after_min;
        carry_on(self.progressing(
            Reason::CheckingRestorePoint,
            &message,
            Action::None,
            requeue,
        ))
    }

    fn before_restore(mut self, (spec, source): Served, observation: &Observation) -> Decision {
        let instance = source.instance.clone();
        let Some(request) = self.request(spec, source) else {
            let message = "status.restorePoint is not a time a point-in-time restore can use: delete and recreate the BlobRestore";
            return self.stalled(Reason::UnexpectedAzureResponse, message);
        };
        let op = self.status.operation.clone();
        let validation = op
            .as_ref()
            .filter(|op| op.action == OperationAction::ValidateRestore);
        match observation {
            Observation::Started {
                action: OperationAction::ValidateRestore,
                poll,
                ..
            } => {
                return match poll {
                    Some(poll) => {
                        if let Some(op) = self.status.operation.as_mut() {
                            op.status = OperationPhase::InProgress;
                            op.poll_url = Some(poll.url.clone());
                        }
                        let retry = self.settings.clamp_retry(poll.retry_after);
                        let message = format!(
                            "Azure is validating the restore of backup instance {}",
                            instance.name()
                        );
                        self.progressing(Reason::ValidatingRestore, &message, Action::None, retry)
                    }
                    None => {
                        self.end_operation(OperationPhase::Succeeded, None);
                        self.restore(instance, request)
                    }
                };
            }
            Observation::Polled {
                status,
                retry_after,
                ..
            } => {
                return match status {
                    PolledStatus::InProgress => {
                        let retry = self.settings.clamp_retry(*retry_after);
                        let message = format!(
                            "Azure is validating the restore of backup instance {}",
                            instance.name()
                        );
                        self.progressing(Reason::ValidatingRestore, &message, Action::None, retry)
                    }
                    PolledStatus::Succeeded => {
                        self.end_operation(OperationPhase::Succeeded, None);
                        self.restore(instance, request)
                    }
                    PolledStatus::Failed(error) => {
                        self.end_operation(OperationPhase::Failed, Some(error));
                        let (reason, message) = explain(Reason::RestoreRefused, error);
                        self.stalled(reason, &message)
                    }
                    PolledStatus::Canceled => {
                        self.end_operation(OperationPhase::Canceled, None);
                        let message =
                            "Someone canceled the validation of the restore; validating again";
                        let retry = self.settings.retry_after_min;
                        self.progressing(Reason::OperationCanceled, message, Action::None, retry)
                    }
                };
            }
            Observation::Failed { call, error } => {
                return match error.class {
                    ErrorClass::Transient => self.transient(error),
                    _ => self.refused(*call, error),
                };
            }
            Observation::PollRefused { message } => {
                self.end_operation(OperationPhase::Failed, None);
                return self.stalled(Reason::PollUrlRefused, message);
            }
            _ => {}
        }
        match validation {
            Some(op) if op.status == OperationPhase::InProgress && op.poll_url.is_some() => {
                let url = op.poll_url.clone().unwrap_or_default();
                let message = format!(
                    "Azure is validating the restore of backup instance {}",
                    instance.name()
                );
                let requeue = self.settings.retry_after_min;
                self.progressing(
                    Reason::ValidatingRestore,
                    &message,
                    Action::Poll { url, instance },
                    requeue,
                )
            }
            Some(op) if op.status == OperationPhase::Succeeded => self.restore(instance, request),
            // Not validated yet, validation failed (retried after the backoff), a validation
            // whose answer was lost (validating has no effect in Azure: ask again), or a
            // restore Azure refused before taking it (validate again first).
            _ => {
                self.status.phase = Some(RestorePhase::Validating);
                let message = self.about("Validating with Azure a restore of", &instance);
                let action = Action::ValidateRestore { instance, request };
                self.start(action, Reason::ValidatingRestore, &message)
            }
        }
    }

    /// Records the restore's intent and sends it: from here on it is never sent again.
    fn restore(mut self, instance: BackupInstanceId, request: RestoreRequest) -> Decision {
        self.status.phase = Some(RestorePhase::Restoring);
        self.status.start_time = Some(Time(self.now));
        let message = self.about("Restoring", &instance);
        self.start(
            Action::Restore { instance, request },
            Reason::Restoring,
            &message,
        )
    }

    /// "<what> backup instance <name> from <restore point>".
    fn about(&self, what: &str, instance: &BackupInstanceId) -> String {
        format!(
            "{what} backup instance {} from {}",
            instance.name(),
            self.status.restore_point.as_deref().unwrap_or_default()
        )
    }

    /// The request for the recorded point.
    fn request(&self, spec: &ValidatedRestore, source: &SourceInstance) -> Option<RestoreRequest> {
        let recorded = self.status.restore_point.as_deref()?;
        let point = match spec.point {
            RestorePointSpec::PointInTime(_) => RestoreSource::PointInTime(recorded.parse().ok()?),
            RestorePointSpec::Latest | RestorePointSpec::RecoveryPoint(_) => {
                RestoreSource::RecoveryPoint(recorded.to_owned())
            }
        };
        let (target, location) = spec
            .target
            .clone()
            .unwrap_or_else(|| (source.account.clone(), source.location.clone()));
        let target = BlobRestoreTarget {
            source: source.account.clone(),
            target,
            location,
            containers: spec.containers.clone(),
            prefixes: spec.prefixes.clone(),
        };
        Some(RestoreRequest::for_blobs(&point, &target))
    }

    // ---- after the restore was sent ----

    fn restoring(mut self, observation: &Observation) -> Decision {
        let Some(instance) = self
            .status
            .backup_instance_id
            .as_deref()
            .and_then(|id| BackupInstanceId::parse(id).ok())
        else {
            let message = "status.backupInstanceId is missing or malformed, so the restore cannot be followed: look for the restore job in the vault's Backup jobs";
            return self.stalled(Reason::RestoreOutcomeUnknown, message);
        };
        let job_wait = self.settings.protection_poll;
        match observation {
            Observation::Started { poll, job_id, .. } => {
                if let Some(op) = self.status.operation.as_mut() {
                    op.status = OperationPhase::InProgress;
                    op.poll_url = poll.as_ref().map(|p| p.url.clone());
                }
                if let Some(job) = job_id {
                    self.status.job_id = Some(job.clone());
                }
                if poll.is_none() {
                    self.end_operation(OperationPhase::Succeeded, None);
                }
                let retry = self
                    .settings
                    .clamp_retry(poll.as_ref().and_then(|p| p.retry_after));
                let message = format!(
                    "Azure accepted the restore of backup instance {}",
                    instance.name()
                );
                return self.progressing(Reason::Restoring, &message, Action::None, retry);
            }
            Observation::Polled {
                status,
                retry_after,
                job_id,
            } => {
                if let Some(job) = job_id {
                    self.status.job_id = Some(job.clone());
                }
                match status {
                    PolledStatus::InProgress => {
                        let retry = self.settings.clamp_retry(*retry_after);
                        let message = format!(
                            "Azure is starting the restore of backup instance {}",
                            instance.name()
                        );
                        return self.progressing(Reason::Restoring, &message, Action::None, retry);
                    }
                    PolledStatus::Succeeded => self.end_operation(OperationPhase::Succeeded, None),
                    PolledStatus::Failed(error) => {
                        self.end_operation(OperationPhase::Failed, Some(error));
                        return self.failed(error);
                    }
                    PolledStatus::Canceled => {
                        self.end_operation(OperationPhase::Canceled, None);
                        return self.failed(&canceled());
                    }
                }
            }
            Observation::Job(Some(JobState::Running { raw })) => {
                let message = format!("Azure's restore job is {raw}");
                return self.progressing(Reason::Restoring, &message, Action::None, job_wait);
            }
            Observation::Job(Some(JobState::Completed)) => {
                self.status.phase = Some(RestorePhase::Succeeded);
                self.status.end_time = Some(Time(self.now));
                let message = format!(
                    "Azure restored backup instance {} from {} (job {})",
                    instance.name(),
                    self.status.restore_point.as_deref().unwrap_or_default(),
                    self.status.job_id.as_deref().unwrap_or_default()
                );
                self.event(EventType::Normal, Reason::Restored, &message);
                self.set_health(Health::Ready, Reason::Restored, &message);
                return self.finish(Action::None, Requeue::AwaitChange);
            }
            Observation::Job(Some(JobState::Failed(error))) => return self.failed(error),
            Observation::Job(Some(JobState::Cancelled)) => return self.failed(&canceled()),
            Observation::Job(None) => {
                let message = "Azure does not list the restore job yet; looking again";
                return self.progressing(Reason::Restoring, message, Action::None, job_wait);
            }
            Observation::Failed { call, error } => {
                return match (call, error.class) {
                    // The request's fate is known only from an answer; none came back, or a
                    // 5xx that may have come after Azure took it.
                    (AzureCall::Start(_), ErrorClass::Transient)
                        if error.http_status != Some(429) =>
                    {
                        self.outcome_unknown(&azure_text(&error.azure))
                    }
                    // Throttled (429) or refused (4xx): Azure did not take it. It is sent again
                    // only after a new validation.
                    (AzureCall::Start(_), _) => {
                        self.status.phase = Some(RestorePhase::Validating);
                        self.status.start_time = None;
                        match error.class {
                            ErrorClass::Transient => {
                                self.record_failed_start(OperationAction::Restore, &error.azure);
                                self.transient(error)
                            }
                            _ => self.refused(*call, error),
                        }
                    }
                    (_, ErrorClass::Transient) => self.transient(error),
                    _ => self.refused(*call, error),
                };
            }
            Observation::NotSent { message, .. } => {
                self.status.phase = Some(RestorePhase::Validating);
                self.status.start_time = None;
                self.status.operation = None;
                let message = format!("The restore was not sent ({message}); validating again");
                let retry = self.settings.retry_after_min;
                return self.progressing(Reason::ValidatingRestore, &message, Action::None, retry);
            }
            Observation::PollRefused { message } => {
                self.end_operation(OperationPhase::Failed, None);
                return self.stalled(Reason::PollUrlRefused, message);
            }
            _ => {}
        }
        // From status alone.
        if let Some(job) = self.status.job_id.clone() {
            let message = format!("Following Azure's restore job {job}");
            let vault = instance.vault().clone();
            return self.progressing(
                Reason::Restoring,
                &message,
                Action::GetJob { vault, job },
                job_wait,
            );
        }
        let op = self.status.operation.clone();
        match op {
            Some(op) if op.action == OperationAction::Restore => match (op.status, op.poll_url) {
                (OperationPhase::InProgress, Some(url)) => {
                    let message = format!("Azure is starting the restore of backup instance {}", instance.name());
                    let requeue = self.settings.retry_after_min;
                    self.progressing(Reason::Restoring, &message, Action::Poll { url, instance }, requeue)
                }
                (OperationPhase::Pending, _) => self.outcome_unknown(
                    "the operator stopped after recording the restore and before recording Azure's answer",
                ),
                _ => {
                    let message = "Azure's restore operation ended without naming a job: look for the restore job in the vault's Backup jobs";
                    self.stalled(Reason::RestoreOutcomeUnknown, message)
                }
            },
            _ => self.outcome_unknown("status.operation does not record the restore"),
        }
    }

    fn outcome_unknown(self, why: &str) -> Decision {
        let message = format!(
            "The restore request was sent but its answer was not recorded ({why}). It is never sent twice: look for the restore job in the vault's Backup jobs, then delete this BlobRestore"
        );
        self.stalled(Reason::RestoreOutcomeUnknown, &message)
    }

    fn failed(mut self, error: &AzureErrorDetail) -> Decision {
        self.status.phase = Some(RestorePhase::Failed);
        self.status.end_time = Some(Time(self.now));
        let message = format!(
            "The restore failed in Azure{}: {}. Fix the cause, then create a new BlobRestore",
            self.status
                .job_id
                .as_deref()
                .map(|job| format!(" (job {job})"))
                .unwrap_or_default(),
            azure_text(error)
        );
        self.event(EventType::Warning, Reason::RestoreFailed, &message);
        self.set_health(Health::Stalled, Reason::RestoreFailed, &message);
        self.finish(Action::None, Requeue::AwaitChange)
    }
}

/// Carries on at once (a step that only recorded something).
fn carry_on(mut decision: Decision) -> Decision {
    decision.requeue = Requeue::After(Duration::ZERO);
    decision
}

fn canceled() -> AzureErrorDetail {
    AzureErrorDetail {
        code: "Cancelled".into(),
        message: "the restore was cancelled in Azure".into(),
        ..AzureErrorDetail::default()
    }
}

/// Refuses a spec the source cannot serve: a recovery point of an operational backup, or
/// containers a vaulted backup does not include.
fn fits_source(spec: &ValidatedRestore, source: &SourceInstance) -> Result<(), SpecError> {
    let vaulted = matches!(
        spec.point,
        RestorePointSpec::Latest | RestorePointSpec::RecoveryPoint(_)
    );
    match (&source.vaulted_containers, vaulted) {
        (None, true) => Err(SpecError {
            field: "spec.recoveryPoint",
            problem: "the source uses operational backup, which keeps no recovery points".into(),
            fix: "create a BlobRestore with spec.pointInTime instead".into(),
        }),
        (Some(backed_up), true) => {
            let prefix_containers = spec.prefixes.iter().filter_map(|p| p.split('/').next());
            let asked = spec
                .containers
                .iter()
                .map(String::as_str)
                .chain(prefix_containers);
            for container in asked {
                if !backed_up.iter().any(|c| c == container) {
                    return Err(SpecError {
                        field: if spec.containers.iter().any(|c| c == container) {
                            "spec.containers"
                        } else {
                            "spec.prefixes"
                        },
                        problem: format!(
                            "container {container} is not in the source's vaulted backup ({})",
                            backed_up.join(", ")
                        ),
                        fix: "restore containers the BlobBackupInstance's spec.vaultedBackup.containers lists".into(),
                    });
                }
            }
            Ok(())
        }
        (_, false) => Ok(()),
    }
}
