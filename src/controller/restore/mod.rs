//! The BlobRestore controller: reconciles `BlobRestore` resources (DESIGN.md section 10).
//!
//! - [`decide`](mod@decide): the pure decision, table-tested.
//! - this module: the loop around it. Every reconcile reads the restore afresh (never the
//!   watch cache: a copy older than the controller's own intent write could send a restore
//!   twice), reads and [`authorise`]s its source, then runs decide → act steps. A write's
//!   intent is written (server-side apply on the resourceVersion read, so a replica that
//!   decided on a stale copy gets a 409 instead) and the leader fence checked before it goes
//!   out; what Azure answered to a write is written before anything else happens.
//! - Every POST (findRestorableTimeRanges, validateRestore, restore) first takes a slot in its
//!   subscription's write budget, the copy the BlobBackupInstance controller paces its writes
//!   by ([`WritePacer`]: ARM's budget is the subscription's, whoever spends it); without a free
//!   slot the restore is requeued for its reserved one, with nothing recorded of the write.
//! - A BlobRestore has no finalizer: deleting it never touches Azure (a restore cannot be
//!   cancelled or undone).

mod azure;
pub mod decide;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::{self, Action as ReconcileAction, Controller};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, predicates, reflector, watcher};
use kube::{Client, Resource, ResourceExt};
use tokio::time::Instant;
use tracing::{Instrument, debug, info, info_span, warn};

use super::azure::throttled_for;
use super::decide::{EventSpec, Requeue, Timing, end_operation, whole_second};
use super::events::Events;
use super::grants::VaultGrants;
use super::listing::{reconcile_triggers, watch_config};
use super::pacing::{WritePacer, slot_key};
use super::state::{States, key_of};
use super::status::StatusWriter;
use super::{ControllerConfig, Error, REPORTING_CONTROLLER, leader};
use crate::api::{
    BlobBackupInstance, BlobRestore, BlobRestoreStatus, OperationAction, OperationPhase,
};
use crate::telemetry::Metrics;
use dataprotection::ArmClient;

pub use decide::{Action, Observation, Source, SourceInstance, authorise};

/// Decide/act steps one reconcile may take: check the point, validate, poll, restore, poll,
/// follow the job; the bound keeps a misbehaving answer from spinning.
const MAX_STEPS: usize = 12;

/// Shared state of all restore reconciles.
pub struct RestoreContext {
    client: Client,
    arm: ArmClient,
    metrics: Metrics,
    events: Events,
    // What the shared status writer keeps per restore (a status it could not write).
    states: States<BlobRestore>,
    settings: Timing,
    fence: leader::Fence,
    // What the vault grants allow each source (`--vault-access`).
    grants: VaultGrants,
    // The copy of Azure's write budgets, shared with the BlobBackupInstance controller.
    writes: Arc<WritePacer>,
}

impl RestoreContext {
    /// The context of [`reconcile`] as `config` sets it up: its decision settings, Events
    /// reported as [`REPORTING_CONTROLLER`] (`reporting_instance`: the pod), and Azure writes
    /// only while its fence holds (checked before the intent is recorded, before the call, and
    /// by the ARM client once it has the token); sources judged by what `grants` allow; its
    /// POSTs paced by `writes`, the copy of the write budgets the BlobBackupInstance
    /// controller's writes spend too.
    pub fn new(
        client: Client,
        arm: ArmClient,
        metrics: Metrics,
        config: &ControllerConfig,
        grants: VaultGrants,
        writes: Arc<WritePacer>,
    ) -> Self {
        let reporter = Reporter {
            controller: REPORTING_CONTROLLER.to_owned(),
            instance: config.reporting_instance.clone(),
        };
        let gate = config.fence.clone();
        Self {
            events: Events::new(client.clone(), reporter),
            states: States::new(|_| false),
            arm: arm.with_write_gate(Arc::new(move || gate.holds())),
            client,
            metrics,
            settings: config.timing.clone(),
            fence: config.fence.clone(),
            grants,
            writes,
        }
    }

    async fn publish(&self, obj: &BlobRestore, events: &[EventSpec]) {
        let reference = obj.object_ref(&());
        self.events
            .publish_all(&reference, events, &self.metrics)
            .await;
    }

    /// Writes the status of restore `key` ([`StatusWriter::write`]): one that records an Azure
    /// write's intent or answer (`precious`) is retried, and kept to be written first on the
    /// next reconcile if it still cannot be.
    async fn write_status(
        &self,
        api: &Api<BlobRestore>,
        key: &ObjectRef<BlobRestore>,
        obj: &BlobRestore,
        precious: bool,
    ) -> Result<BlobRestore, Error> {
        self.writer(api, key).write(obj, precious).await
    }

    /// Forgets a restore that is gone, everywhere it is kept: its record (a status it could
    /// not write) and the slot it waits for in the write budget. (Its requeue is kube's.)
    fn forget(&self, key: &ObjectRef<BlobRestore>) {
        self.states.forget(key);
        self.writes.forget(&slot_key(key));
    }

    fn writer<'a>(
        &'a self,
        api: &'a Api<BlobRestore>,
        key: &'a ObjectRef<BlobRestore>,
    ) -> StatusWriter<'a, BlobRestore> {
        StatusWriter {
            api,
            key,
            states: &self.states,
            metrics: &self.metrics,
        }
    }
}

/// Whether `current` records something of Azure's answer to a write that `persisted` lacks
/// (a poll URL, a job, how the operation went): it must reach the API before anything else
/// happens, and is kept to be written first should that fail. An intent (an operation still
/// `Pending`) is no answer: if it cannot be written, nothing is sent, and it is decided again.
fn records_answer(
    persisted: Option<&BlobRestoreStatus>,
    current: Option<&BlobRestoreStatus>,
) -> bool {
    let answer = |status: Option<&BlobRestoreStatus>| {
        status.map(|s| {
            (
                s.operation.as_ref().and_then(|op| op.poll_url.clone()),
                s.operation.as_ref().map(|op| op.status),
                s.job_id.clone(),
            )
        })
    };
    let pending = current
        .and_then(|s| s.operation.as_ref())
        .is_some_and(|op| op.status == OperationPhase::Pending);
    !pending && answer(current) != answer(persisted)
}

/// Reconciles one BlobRestore.
pub async fn reconcile(
    obj: Arc<BlobRestore>,
    ctx: Arc<RestoreContext>,
) -> Result<ReconcileAction, Error> {
    let span = info_span!(
        "restore",
        resource = %obj.name_any(),
        namespace = %obj.namespace().unwrap_or_default(),
    );
    let namespace = obj.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    restore_steps(&obj, &namespace, &ctx).instrument(span).await
}

async fn restore_steps(
    cached: &BlobRestore,
    namespace: &str,
    ctx: &RestoreContext,
) -> Result<ReconcileAction, Error> {
    let api: Api<BlobRestore> = Api::namespaced(ctx.client.clone(), namespace);
    let Some(mut obj) = api.get_opt(&cached.name_any()).await.map_err(Error::Read)? else {
        ctx.forget(&key_of(cached));
        return Ok(ReconcileAction::await_change());
    };
    let key = key_of(&obj);
    // Azure's answer to a write that could not be recorded: recorded before anything else.
    if let Some(written) = ctx.writer(&api, &key).write_unwritten(&obj).await? {
        obj = written;
    }
    if obj.metadata.deletion_timestamp.is_some() {
        // Nothing to undo in Azure; the object goes by itself (no finalizer).
        return Ok(ReconcileAction::await_change());
    }
    let sources: Api<BlobBackupInstance> = Api::namespaced(ctx.client.clone(), namespace);
    let source_name = &obj.spec.backup_instance_ref.name;
    let source = sources.get_opt(source_name).await.map_err(Error::Read)?;
    let access = source.as_ref().and_then(|s| ctx.grants.access_for(s));
    let source = authorise(source_name, source.as_ref(), access.as_ref());

    let mut persisted = obj.status.clone();
    let mut observation = Observation::None;
    let mut requeue = None;
    for _ in 0..MAX_STEPS {
        let now = Timestamp::now();
        let decision = decide::decide(&obj, &source, &observation, now, &ctx.settings);
        // A POST waits for its slot in its subscription's write budget, before anything of it
        // is recorded: the decision's status holds the write's intent, and an intent recorded
        // for a write never sent would read as one whose outcome is unknown (a restore's is
        // never sent again). What the steps before it decided is written below.
        let admission = match decision.action.budget() {
            None => None,
            Some(budget) => match ctx.writes.admit(&budget, &slot_key(&key), Instant::now()) {
                Ok(admission) => Some(admission),
                Err(wait) => {
                    debug!(?wait, "waiting for a slot in Azure's write budget");
                    // A restore comes only from a validation that succeeded: when Azure just
                    // said so, that is recorded, or the slot would be spent validating again.
                    if matches!(decision.action, Action::Restore { .. }) {
                        let validation = obj
                            .status
                            .as_mut()
                            .and_then(|s| s.operation.as_mut())
                            .filter(|op| {
                                op.action == OperationAction::ValidateRestore
                                    && op.status != OperationPhase::Succeeded
                            });
                        end_operation(
                            validation,
                            OperationPhase::Succeeded,
                            None,
                            whole_second(now),
                        );
                    }
                    requeue = Some(Requeue::After(wait));
                    break;
                }
            },
        };
        if let Some(status) = decision.status {
            obj.status = Some(status);
        }
        let intent = decision.action.operation().is_some();
        // A replica whose leader term ended writes nothing more: the next leader takes over.
        if intent && !ctx.fence.holds() {
            return Ok(ReconcileAction::await_change());
        }
        let answered = records_answer(persisted.as_ref(), obj.status.as_ref());
        if (intent || answered) && obj.status != persisted {
            let written = ctx.write_status(&api, &key, &obj, answered).await?;
            persisted = written.status.clone();
            obj = written;
        }
        ctx.publish(&obj, &decision.events).await;
        if decision.action == Action::None {
            if decision.requeue == Requeue::After(Duration::ZERO) {
                observation = Observation::None;
                continue;
            }
            requeue = Some(decision.requeue);
            break;
        }
        // The intent write may have taken long: the term may have ended meanwhile.
        if intent && !ctx.fence.holds() {
            return Ok(ReconcileAction::await_change());
        }
        let Some(performed) = azure::perform(&ctx.arm, &decision.action).await else {
            observation = Observation::None;
            continue;
        };
        observation = performed.observation;
        // A 429 counts in bbo_throttling_waits_total, as the backups' do, and goes to the
        // pacer with a write's answer (the writes its budget has left).
        let throttled = match &observation {
            Observation::Failed { error, .. } => throttled_for(error, ctx.settings.retry_after_min),
            _ => None,
        };
        if throttled.is_some()
            && let Some(operation) = decision.action.operation_id()
        {
            ctx.metrics.record_throttling_wait(operation);
        }
        if let Some(admission) = &admission {
            ctx.writes
                .answered(admission, performed.remaining, throttled, Instant::now());
        }
        // The client refused to send it because the term ended: the next leader goes on from
        // the recorded intent.
        if matches!(observation, Observation::NotSent { .. }) && !ctx.fence.holds() {
            return Ok(ReconcileAction::await_change());
        }
    }
    if obj.status != persisted {
        let precious = records_answer(persisted.as_ref(), obj.status.as_ref());
        ctx.write_status(&api, &key, &obj, precious).await?;
    }
    Ok(match requeue {
        Some(Requeue::After(delay)) => ReconcileAction::requeue(delay),
        Some(Requeue::AwaitChange) => ReconcileAction::await_change(),
        // Out of steps: carry on soon, from the recorded state.
        None => ReconcileAction::requeue(ctx.settings.retry_after_min),
    })
}

/// What to do after a failed reconcile: look again soon (a conflict at once: someone wrote in
/// between, and the next reconcile reads afresh).
pub fn error_policy(
    obj: Arc<BlobRestore>,
    error: &Error,
    ctx: Arc<RestoreContext>,
) -> ReconcileAction {
    let delay = if error.is_conflict() {
        ctx.settings.retry_after_min
    } else {
        ctx.settings.retry_after_default
    };
    warn!(
        resource = %obj.name_any(),
        namespace = %obj.namespace().unwrap_or_default(),
        retry_in = ?delay,
        "restore reconcile failed: {error}"
    );
    ReconcileAction::requeue(delay)
}

/// Runs the BlobRestore controller until `shutdown` completes, then lets the reconciles in
/// flight finish. Watches `BlobRestore` resources (in `config.watch_namespace`, or all) and
/// reconciles one when it is created (its spec cannot change) and when a decision's requeue
/// time comes; its Azure writes go out only while `config.fence` holds, each in a slot of
/// `writes` (the write budgets' copy the BlobBackupInstance controller spends too).
pub async fn run(
    client: Client,
    arm: ArmClient,
    config: ControllerConfig,
    metrics: Metrics,
    grants: VaultGrants,
    writes: Arc<WritePacer>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let watch_client = config.watch_client.clone().unwrap_or(client.clone());
    let api: Api<BlobRestore> = match config.watch_namespace.as_deref() {
        Some(namespace) if !namespace.is_empty() => Api::namespaced(watch_client, namespace),
        _ => Api::all(watch_client),
    };
    let ctx = Arc::new(RestoreContext::new(
        client, arm, metrics, &config, grants, writes,
    ));
    let (reader, writer) = reflector::store();
    let watch_ctx = ctx.clone();
    let events = watcher(api, watch_config()).default_backoff();
    // As for backups: reconciles start with the first page, and a restore deleted while the
    // watch was down gets a Delete at the relist's end.
    let triggers = reconcile_triggers(
        events,
        reader.clone(),
        writer,
        || {},
        move |obj| watch_ctx.forget(&key_of(obj)),
        predicates::generation,
    );
    Controller::for_stream(triggers, reader)
        .with_config(controller::Config::default().concurrency(config.concurrency.max(1)))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| {
            match result {
                Ok(_) | Err(controller::Error::ReconcilerFailed(..)) => {}
                Err(controller::Error::ObjectNotFound(obj)) => {
                    debug!(object = %obj, "restore gone before its reconcile")
                }
                Err(error) => warn!(%error, "watching BlobRestore resources failed; retrying"),
            }
            std::future::ready(())
        })
        .await;
    info!("restore controller stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::AzureOperation;
    use crate::controller::pacing::BudgetKey;
    use dataprotection::WriteKind;

    /// A deleted restore leaves nothing: neither its record nor the slot it waited for; a
    /// relist that no longer lists it does the same, and leaves another kind's slot alone.
    #[tokio::test(start_paused = true)]
    async fn a_deleted_restore_leaves_nothing_behind() {
        let (client, arm) = crate::controller::context::offline_clients();
        let second = Duration::from_secs(1);
        let writes = Arc::new(WritePacer::new(1, second, second));
        let config = ControllerConfig::default();
        let ctx = RestoreContext::new(
            client,
            arm,
            Metrics::new(),
            &config,
            VaultGrants::open(),
            writes.clone(),
        );
        let key = ObjectRef::<BlobRestore>::new("gone").within("ns");
        let budget = BudgetKey::new("s", WriteKind::Writes);
        let remember = || {
            let mut obj = BlobRestore::new(
                "gone",
                serde_json::from_value(serde_json::json!({
                    "backupInstanceRef": {"name": "bbi"}, "recoveryPoint": "latest"
                }))
                .unwrap(),
            );
            obj.metadata.uid = Some("uid".into());
            ctx.states.remember_write(&key, &obj);
            let now = Instant::now();
            let _ = writes.admit(&budget, "someone else", now);
            assert!(writes.admit(&budget, &slot_key(&key), now).is_err());
        };
        remember();
        assert_eq!((ctx.states.len(), writes.waiting()), (1, 1));
        ctx.forget(&key);
        assert_eq!((ctx.states.len(), writes.waiting()), (0, 0));

        // A backup of the same name keeps its slot.
        tokio::time::advance(Duration::from_secs(5)).await;
        remember();
        let backup = ObjectRef::<BlobBackupInstance>::new("gone").within("ns");
        assert!(
            writes
                .admit(&budget, &slot_key(&backup), Instant::now())
                .is_err()
        );
        ctx.forget(&key);
        assert_eq!(
            (ctx.states.len(), writes.waiting()),
            (0, 1),
            "the backup's slot stays"
        );
    }

    fn with(status: OperationPhase, url: Option<&str>, job: Option<&str>) -> BlobRestoreStatus {
        BlobRestoreStatus {
            operation: Some(AzureOperation {
                action: OperationAction::Restore,
                status,
                poll_url: url.map(str::to_owned),
                start_time: None,
                end_time: None,
                error: None,
            }),
            job_id: job.map(str::to_owned),
            ..BlobRestoreStatus::default()
        }
    }

    /// Azure's answer is kept until written (or the restore would be reported as sent with
    /// its outcome unknown); an intent is not (kept and written later, it would report a
    /// restore that was never sent as one whose outcome is unknown).
    #[test]
    fn only_azures_answers_are_kept_until_written() {
        let validated = BlobRestoreStatus {
            operation: Some(AzureOperation {
                action: OperationAction::ValidateRestore,
                ..with(OperationPhase::Succeeded, Some("https://arm/op/1"), None)
                    .operation
                    .unwrap()
            }),
            ..BlobRestoreStatus::default()
        };
        let intent = with(OperationPhase::Pending, None, None);
        assert!(!records_answer(Some(&validated), Some(&intent)));
        let accepted = with(OperationPhase::InProgress, Some("https://arm/op/2"), None);
        assert!(records_answer(Some(&intent), Some(&accepted)));
        let named = with(
            OperationPhase::Succeeded,
            Some("https://arm/op/2"),
            Some("job"),
        );
        assert!(records_answer(Some(&accepted), Some(&named)));
        assert!(!records_answer(Some(&named), Some(&named)));
    }
}
