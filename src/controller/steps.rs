//! The loop that drives [`decide()`]: observe → decide → act → record, for a few steps of one
//! reconcile. Generic over its effects ([`Effects`]: status, finalizer, Events, Azure), so the
//! controller runs it against Kubernetes and ARM and tests run the same loop against a
//! recording double.

use std::future::Future;
use std::time::Duration;

use jiff::Timestamp;
use tracing::debug;

use super::Error;
use super::decide::{
    self, Access, Action, AzureCall, EventSpec, Observation, PolledStatus, Requeue, Settings,
    decide,
};
use super::pacing::BudgetKey;
use crate::api::{
    AzureOperation, BlobBackupInstance, BlobBackupInstanceStatus, OperationAction, OperationPhase,
};

/// Decide/act steps one reconcile may take before it requeues itself. The longest useful
/// chain is add finalizer, GET, start an operation (then stop: the operation is recorded);
/// the bound keeps a misbehaving answer from spinning.
pub const MAX_STEPS: usize = 8;

/// What the loop does to the world. The controller's implementation writes to the Kubernetes
/// API and calls Azure; a test's records and answers.
pub trait Effects: Send {
    /// A slot in Azure's write budget, handed back with the call's answer.
    type Admission: Send;

    /// The time decisions are made at.
    fn now(&self) -> Timestamp;

    /// Whether this replica may still write to Azure (see [`super::leader::Fence`]).
    fn leads(&self) -> bool;

    /// A slot for an Azure write spending `budget` now, or how long to wait for one.
    fn admit_write(&mut self, budget: &BudgetKey) -> Result<Self::Admission, Duration>;

    /// Writes `obj`'s status; `precious`: it records an operation just started, whose poll URL
    /// must not be lost. The resource as written.
    fn write_status(
        &mut self,
        obj: &BlobBackupInstance,
        precious: bool,
    ) -> impl Future<Output = Result<BlobBackupInstance, Error>> + Send;

    /// Keeps `obj`'s status in memory instead of writing it: it differs from `persisted`, the
    /// status the API holds, only by a PUT started from the intent `persisted` records (see
    /// [`kept_in_memory`]). The next reconcile of the resource takes it ([`Self::take_kept`]).
    fn keep_status(
        &mut self,
        obj: &BlobBackupInstance,
        persisted: Option<&BlobBackupInstanceStatus>,
    );

    /// The status kept by [`Self::keep_status`] for `obj`, taken out, if `obj` (as the API
    /// holds it) still has the status it was kept over; otherwise `None` (and it is dropped).
    fn take_kept(&mut self, obj: &BlobBackupInstance) -> Option<BlobBackupInstanceStatus>;

    /// Remembers that `obj`'s status, as just written (or left), records the intent of a write
    /// that was not sent: it waits for its slot in the budget. In memory only: a restart
    /// forgets it, and the intent then reads as possibly sent.
    fn remember_unsent(&mut self, obj: &BlobBackupInstance);

    /// Whether `obj` (as the API holds it) has the status [`Self::remember_unsent`] remembered;
    /// taken out.
    fn take_unsent(&mut self, obj: &BlobBackupInstance) -> bool;

    /// Adds the controller's finalizer; the resource as written (its status as stored).
    fn add_finalizer(
        &mut self,
        obj: &BlobBackupInstance,
    ) -> impl Future<Output = Result<BlobBackupInstance, Error>> + Send;

    /// Removes the controller's finalizer: the resource is done with, and forgotten.
    fn remove_finalizer(
        &mut self,
        obj: &BlobBackupInstance,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Publishes a decision's Events (a failure is logged, never fatal).
    fn publish(
        &mut self,
        obj: &BlobBackupInstance,
        events: &[EventSpec],
    ) -> impl Future<Output = ()> + Send;

    /// Performs an Azure call; `None` for an action that is not one.
    fn call_azure(&mut self, action: &Action) -> impl Future<Output = Option<Observation>> + Send;

    /// Takes note of an Azure answer about `obj` the loop goes on with (metrics, the write
    /// budget).
    fn answered(
        &mut self,
        obj: &BlobBackupInstance,
        observation: &Observation,
        admission: Option<Self::Admission>,
    );
}

/// How a reconcile ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Look again as the decision says.
    Requeue(Requeue),
    /// This replica's leader term ended: whoever leads now goes on from the recorded intent.
    Abandon,
}

/// Runs up to [`MAX_STEPS`] observe → decide → act steps on `obj`, then records the status
/// (once, and only if it changed; at once before an Azure write that can change something, its
/// intent, and after an operation other than a PUT started, its poll URL; a started PUT's poll
/// URL only in memory) and says when to look again.
pub async fn run_steps<E: Effects>(
    effects: &mut E,
    mut obj: BlobBackupInstance,
    settings: &Settings,
    access: &Access,
) -> Result<Next, Error> {
    let mut persisted = obj.status.clone();
    // An intent recorded by an earlier reconcile that waited for its slot, and not sent.
    let mut observation = match effects.take_unsent(&obj) {
        true => Observation::Unsent,
        false => Observation::None,
    };
    // A PUT's poll URL kept in memory by an earlier reconcile: the API has its intent.
    if let Some(kept) = effects.take_kept(&obj) {
        obj.status = Some(kept);
    }
    let initial = obj.status.clone();
    // Whether Azure answered a call of this reconcile.
    let mut learned = false;
    // Whether this reconcile sent an Azure write that can change something.
    let mut wrote = false;
    // Whether the status left at the end records the intent of the write that waited, and no
    // write went out before it.
    let mut unsent = false;
    let mut requeue = None;
    for _ in 0..MAX_STEPS {
        let decision = decide(&obj, &observation, effects.now(), settings, access);
        // A write waits for its slot in its subscription's write (or delete) budget (neither
        // its status nor its events count before it is sent), so throttling never turns into
        // a herd of 429s.
        let admission = match BudgetKey::of(&decision.action) {
            None => None,
            Some(budget) => match effects.admit_write(&budget) {
                Ok(admission) => Some(admission),
                Err(wait) => {
                    debug!(?wait, "waiting for a slot in Azure's write budget");
                    // Except when Azure just reported an operation's end (a validate, polled or
                    // answered at once, before the PUT): that is recorded now, with what the
                    // decision makes of it, or the next reconcile would poll it again, or
                    // validate again.
                    if operation_ended(&observation) {
                        if let Some(status) = decision.status {
                            obj.status = Some(status);
                        }
                        effects.publish(&obj, &decision.events).await;
                    } else if !learned {
                        // Nothing learned from Azure: what this reconcile decided so far (a
                        // first sight's Initializing) is decided again at the slot, and writing
                        // it now would cost a status write for nothing a person needs.
                        obj.status.clone_from(&initial);
                    }
                    unsent = !wrote
                        && decision.action.operation().is_some_and(|action| {
                            obj.status
                                .as_ref()
                                .and_then(|s| s.operation.as_ref())
                                .is_some_and(|op| {
                                    op.action == action && op.status == OperationPhase::Pending
                                })
                        });
                    requeue = Some(Requeue::After(wait));
                    break;
                }
            },
        };
        if let Some(status) = decision.status {
            obj.status = Some(status);
        }
        // Before an Azure write that can change something, its intent (the instance's name and
        // ID, the operation) goes to the API: after a crash the next reconcile looks at the
        // instance before acting again. A validation changes nothing and records no intent.
        // After an operation started, its poll URL goes to the API before anything else,
        // except a PUT's: its intent is there already, and the next reconcile after a crash
        // finds its outcome with a GET.
        let intent = admission.is_some();
        // A replica whose leader term ended writes nothing more: the next leader takes over.
        if intent && !effects.leads() {
            return Ok(Next::Abandon);
        }
        let started = records_new_operation(persisted.as_ref(), obj.status.as_ref())
            && !kept_in_memory(persisted.as_ref(), obj.status.as_ref());
        if ((intent && decision.action.changes_azure()) || started)
            && let Some(status) = &obj.status
            && decide::status_changed(persisted.as_ref(), status)
        {
            obj = effects.write_status(&obj, started).await?;
            persisted = obj.status.clone();
        }
        effects.publish(&obj, &decision.events).await;
        observation = match &decision.action {
            Action::None => {
                requeue = Some(decision.requeue);
                break;
            }
            Action::AddFinalizer => {
                let mut updated = effects.add_finalizer(&obj).await?;
                // Keep the status decided so far; it is written below.
                updated.status = obj.status.take();
                obj = updated;
                Observation::None
            }
            Action::RemoveFinalizer => {
                effects.remove_finalizer(&obj).await?;
                return Ok(Next::Requeue(decision.requeue));
            }
            action => {
                // The intent write may have taken long: the term may have ended meanwhile.
                if intent && !effects.leads() {
                    return Ok(Next::Abandon);
                }
                wrote |= intent && action.changes_azure();
                let Some(observation) = effects.call_azure(action).await else {
                    requeue = Some(decision.requeue);
                    break;
                };
                // The term ended during the call (the client sends no write once it has: see
                // ArmClient::with_write_gate): whoever leads now goes on from the recorded
                // intent, and this replica records nothing of it.
                if intent
                    && matches!(
                        observation,
                        Observation::Failed {
                            call: AzureCall::Start(_),
                            ..
                        }
                    )
                    && !effects.leads()
                {
                    return Ok(Next::Abandon);
                }
                effects.answered(&obj, &observation, admission);
                learned = true;
                observation
            }
        };
    }

    if let Some(status) = &obj.status
        && decide::status_changed(persisted.as_ref(), status)
    {
        if kept_in_memory(persisted.as_ref(), Some(status)) {
            effects.keep_status(&obj, persisted.as_ref());
        } else {
            obj = effects.write_status(&obj, false).await?;
        }
    }
    if unsent {
        effects.remember_unsent(&obj);
    }
    // Out of steps: carry on soon, from the recorded state.
    Ok(Next::Requeue(requeue.unwrap_or(Requeue::After(
        settings.timing.retry_after_min,
    ))))
}

/// Whether `current` records an operation in flight that `persisted` does not: its poll URL
/// must reach the API before anything else happens.
fn records_new_operation(
    persisted: Option<&BlobBackupInstanceStatus>,
    current: Option<&BlobBackupInstanceStatus>,
) -> bool {
    fn poll_url(status: Option<&BlobBackupInstanceStatus>) -> Option<&str> {
        status
            .and_then(decide::in_flight)
            .and_then(|op| op.poll_url.as_deref())
    }
    let now = poll_url(current);
    now.is_some() && now != poll_url(persisted)
}

/// Whether `current` differs from `persisted` (the status the API holds) only by a PUT of a new
/// instance started from the intent `persisted` records: then `current` may stay in memory
/// (its poll URL) and cost no status write. A crash loses it, and that is safe: the next
/// reconcile finds the intent `Pending` and GETs the instance before anything else; an instance
/// found is that PUT's outcome, so no second PUT is sent.
fn kept_in_memory(
    persisted: Option<&BlobBackupInstanceStatus>,
    current: Option<&BlobBackupInstanceStatus>,
) -> bool {
    let (Some(persisted), Some(current)) = (persisted, current) else {
        return false;
    };
    let Some(intent) = &persisted.operation else {
        return false;
    };
    let creating = |op: &AzureOperation| op.action == OperationAction::Create;
    let started = decide::in_flight(current).is_some_and(creating);
    if !(started && creating(intent) && intent.status == OperationPhase::Pending) {
        return false;
    }
    // Nothing else changed: the conditions, names and all are the ones written with the intent.
    let mut rest = current.clone();
    rest.operation.clone_from(&persisted.operation);
    rest.current_operation
        .clone_from(&persisted.current_operation);
    rest == *persisted
}

/// What of `current` a status [`kept_in_memory`] keeps: its operation, alone (the rest is
/// `persisted`'s, which the API holds). A whole status is kilobytes of strings (conditions,
/// ids), and thousands of PUTs are in flight at once at 10,000 resources (BENCHMARKS.md,
/// "Memory").
pub(crate) fn kept_part(current: &BlobBackupInstanceStatus) -> BlobBackupInstanceStatus {
    BlobBackupInstanceStatus {
        operation: current.operation.clone(),
        current_operation: current.current_operation.clone(),
        ..BlobBackupInstanceStatus::default()
    }
}

/// The status [`kept_part`] took `part` from, given the status the API still holds.
pub(crate) fn with_kept_part(
    persisted: Option<&BlobBackupInstanceStatus>,
    part: BlobBackupInstanceStatus,
) -> BlobBackupInstanceStatus {
    BlobBackupInstanceStatus {
        operation: part.operation,
        current_operation: part.current_operation,
        ..persisted.cloned().unwrap_or_default()
    }
}

/// Whether the observation is an operation's end: a poll that found it finished, or a call
/// Azure completed synchronously (validateForBackup may answer 200).
fn operation_ended(observation: &Observation) -> bool {
    match observation {
        Observation::Polled { status, .. } => *status != PolledStatus::InProgress,
        Observation::Started { poll, .. } => poll.is_none(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_operation(status: OperationPhase, url: Option<&str>) -> BlobBackupInstanceStatus {
        BlobBackupInstanceStatus {
            operation: Some(AzureOperation {
                action: OperationAction::Create,
                status,
                poll_url: url.map(str::to_owned),
                start_time: None,
                end_time: None,
                error: None,
            }),
            ..BlobBackupInstanceStatus::default()
        }
    }

    #[test]
    fn a_started_operation_is_written_at_once() {
        let started = with_operation(OperationPhase::InProgress, Some("https://arm/op/1"));
        assert!(records_new_operation(None, Some(&started)));
        assert!(!records_new_operation(Some(&started), Some(&started)));
        let next = with_operation(OperationPhase::InProgress, Some("https://arm/op/2"));
        assert!(records_new_operation(Some(&started), Some(&next)));
        let done = with_operation(OperationPhase::Succeeded, Some("https://arm/op/1"));
        assert!(!records_new_operation(Some(&started), Some(&done)));
        let no_url = with_operation(OperationPhase::InProgress, None);
        assert!(!records_new_operation(None, Some(&no_url)));
    }

    /// Only a started PUT of a new instance, over its own Pending intent with nothing else
    /// changed, stays in memory; every other operation's poll URL is written.
    #[test]
    fn only_a_started_create_over_its_intent_stays_in_memory() {
        let url = Some("https://arm/op/1");
        let of = |action, phase, url: Option<&str>| BlobBackupInstanceStatus {
            operation: Some(AzureOperation {
                action,
                ..with_operation(phase, url).operation.unwrap()
            }),
            ..BlobBackupInstanceStatus::default()
        };
        let intent = of(OperationAction::Create, OperationPhase::Pending, None);
        let running = of(OperationAction::Create, OperationPhase::InProgress, url);
        assert!(kept_in_memory(Some(&intent), Some(&running)));
        assert!(!kept_in_memory(None, Some(&running)), "no intent written");
        assert!(!kept_in_memory(Some(&intent), Some(&intent)));
        let mut more = running.clone();
        more.protection_status = Some("ConfiguringProtection".into());
        assert!(!kept_in_memory(Some(&intent), Some(&more)), "more news");
        for action in [
            OperationAction::Validate,
            OperationAction::Update,
            OperationAction::Delete,
            OperationAction::StopProtection,
            OperationAction::Sync,
        ] {
            let intent = of(action, OperationPhase::Pending, None);
            let running = of(action, OperationPhase::InProgress, url);
            assert!(!kept_in_memory(Some(&intent), Some(&running)), "{action:?}");
        }
    }

    /// A kept status is its operation alone, and comes back whole over the status it was
    /// kept over.
    #[test]
    fn a_kept_status_is_its_operation_and_comes_back_whole() {
        let intent = BlobBackupInstanceStatus {
            backup_instance_id: Some("/subscriptions/s/.../backupInstances/bi".into()),
            current_operation: Some("Create Pending".into()),
            ..with_operation(OperationPhase::Pending, None)
        };
        let running = BlobBackupInstanceStatus {
            current_operation: Some("Create InProgress".into()),
            ..with_operation(OperationPhase::InProgress, Some("https://arm/op/1"))
        };
        let running = BlobBackupInstanceStatus {
            backup_instance_id: intent.backup_instance_id.clone(),
            ..running
        };
        assert!(kept_in_memory(Some(&intent), Some(&running)));
        let part = kept_part(&running);
        assert_eq!(part.backup_instance_id, None, "the API holds the rest");
        assert_eq!(with_kept_part(Some(&intent), part), running);
    }

    /// What a reconcile records when the next write must wait for the write budget: a
    /// validation Azure answered synchronously (200) is an end like a finished poll, or the
    /// status would keep the validation Pending and the next reconcile would validate again,
    /// spending the slot reserved for the PUT on it, over and over.
    #[test]
    fn a_synchronous_answer_ends_the_operation_like_a_finished_poll() {
        let sync = Observation::Started {
            action: OperationAction::Validate,
            poll: None,
        };
        assert!(operation_ended(&sync));
        let polled = Observation::Polled {
            status: PolledStatus::Succeeded,
            retry_after: None,
        };
        assert!(operation_ended(&polled));
        let running = Observation::Started {
            action: OperationAction::Validate,
            poll: Some(decide::PollHandle {
                url: "https://arm/op/1".into(),
                retry_after: None,
            }),
        };
        assert!(!operation_ended(&running));
        let still = Observation::Polled {
            status: PolledStatus::InProgress,
            retry_after: None,
        };
        assert!(!operation_ended(&still));
        assert!(!operation_ended(&Observation::None));
    }
}
