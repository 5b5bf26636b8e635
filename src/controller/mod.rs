//! The Kubernetes controller: reconciles `BlobBackupInstance` resources against Azure.
//!
//! - [`decide`](mod@decide): the pure decision (no I/O), table-tested.
//! - this module: the kube-runtime wiring around it. [`run`] watches the resources and calls
//!   [`reconcile`] for each, which runs the observe → decide → act → record loop of
//!   [`decide`](mod@decide)'s docs for a few steps, never waiting for Azure: an operation in flight is
//!   recorded in status (with its poll URL) and looked at again after Azure's `Retry-After`.
//! - [`leader`]: leader election, wrapped around [`run`] by the command line.
//!
//! ```no_run
//! # async fn demo(client: kube::Client, arm: blob_backup_operator::arm::ArmClient) {
//! use blob_backup_operator::controller::{ControllerConfig, run};
//! use blob_backup_operator::telemetry::{HealthState, Metrics};
//! let config = ControllerConfig::default();
//! run(client, arm, config, Metrics::new(), HealthState::default(), async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await;
//! # }
//! ```

mod azure;
pub mod decide;
pub mod leader;
pub mod pacing;
mod requeue;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt, TryStreamExt};
use jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{self, Action as ReconcileAction, Controller};
use kube::runtime::events::{Event, EventType as KubeEventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{Predicate, WatchStreamExt, predicates, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::api::{
    BlobBackupInstance, BlobBackupInstanceStatus, ConditionStatus, FINALIZER, condition_type,
};
use crate::arm::ArmClient;
use crate::telemetry::{HealthState, Metrics};

use decide::{
    Action, EventSpec, EventType, Observation, PolledStatus, Requeue, Settings, decide,
    has_finalizer,
};

/// The field manager of every write the controller makes (status and finalizer).
pub const FIELD_MANAGER: &str = "blob-backup-operator";

/// The `reportingController` of the controller's Events.
pub const REPORTING_CONTROLLER: &str = "blob-backup-operator";

/// Decide/act steps one reconcile may take before it requeues itself. The longest useful
/// chain is add finalizer, GET, start an operation (then stop: the operation is recorded);
/// the bound keeps a misbehaving answer from spinning.
const MAX_STEPS: usize = 8;

/// Attempts at writing a status that records an operation just started (its poll URL must
/// not be lost), and the pause before the first retry (doubling).
const STATUS_WRITE_ATTEMPTS: u32 = 3;
const STATUS_WRITE_RETRY: Duration = Duration::from_millis(200);

/// Events one [`Recorder`] publishes before a fresh one takes over. kube's Recorder keeps
/// every Event it published for six minutes (to patch a repeat into a series) and sweeps
/// that whole cache on each publish: at 10,000 resources × 3 Events that is tens of MiB and
/// quadratic time. A repeat is still aggregated unless a swap fell in between. At 400 the
/// cache's table stays at its 512-slot size (about 1 MiB; 500 doubled it).
const EVENTS_PER_RECORDER: usize = 400;

/// How the controller runs.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// The namespace to watch; `None` (or empty) watches all namespaces.
    pub watch_namespace: Option<String>,
    /// Resources reconciled at once (at least 1; one resource is never reconciled twice at
    /// once).
    pub concurrency: u16,
    /// Timing of decisions (retries, resync). [`run`] sets `instance_actions_supported` and
    /// `api_version` from the ARM client, so those two need not be filled in.
    pub settings: Settings,
    /// `reportingInstance` of Events (the pod name); `None`: the controller name.
    pub reporting_instance: Option<String>,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            watch_namespace: None,
            concurrency: 16,
            settings: Settings::default(),
            reporting_instance: None,
        }
    }
}

/// Errors of one reconcile: Kubernetes API writes and reads. Azure failures are not among
/// them: they are recorded in the resource's status and retried by the decision.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The resource has no name or namespace (the API never sends one without).
    #[error("the resource has no {0}")]
    MissingMetadata(&'static str),
    /// Adding the finalizer failed (a conflicting change is retried at once).
    #[error("cannot add the finalizer: {0}")]
    AddFinalizer(#[source] kube::Error),
    /// Removing the finalizer failed.
    #[error("cannot remove the finalizer: {0}")]
    RemoveFinalizer(#[source] kube::Error),
    /// Writing the status failed.
    #[error("cannot write the status: {0}")]
    WriteStatus(#[source] kube::Error),
    /// Reading the resource failed.
    #[error("cannot read the resource: {0}")]
    Read(#[source] kube::Error),
    /// A finalizer patch could not be built.
    #[error("cannot build the finalizer patch: {0}")]
    Patch(#[source] serde_json::Error),
}

impl Error {
    /// Every reason [`Error::metric_reason`] gives, in variant order.
    pub const METRIC_REASONS: [&'static str; 6] = [
        "InvalidObject",
        "AddFinalizerFailed",
        "RemoveFinalizerFailed",
        "StatusWriteFailed",
        "ReadFailed",
        "PatchBuildFailed",
    ];

    /// The CamelCase reason counted in `bbo_reconcile_errors_total`.
    pub fn metric_reason(&self) -> &'static str {
        let [invalid, add, remove, write, read, patch] = Self::METRIC_REASONS;
        match self {
            Error::MissingMetadata(_) => invalid,
            Error::AddFinalizer(_) => add,
            Error::RemoveFinalizer(_) => remove,
            Error::WriteStatus(_) => write,
            Error::Read(_) => read,
            Error::Patch(_) => patch,
        }
    }

    /// Whether someone else changed the resource in between (409, or a failed JSON patch
    /// `test`): worth retrying at once against the new state.
    fn is_conflict(&self) -> bool {
        let source = match self {
            Error::AddFinalizer(e)
            | Error::RemoveFinalizer(e)
            | Error::WriteStatus(e)
            | Error::Read(e) => e,
            Error::MissingMetadata(_) | Error::Patch(_) => return false,
        };
        matches!(source, kube::Error::Api(status) if status.code == 409 || status.code == 422)
    }
}

/// What the controller remembers about a resource between reconciles.
#[derive(Debug, Default)]
struct Memory {
    /// The resource's uid when last written.
    uid: String,
    /// Whether its finalizer was on after our last write.
    finalized: bool,
    /// A fingerprint of the status after our last write ([`status_fingerprint`]): a copy
    /// of every status would be most of the controller's memory at 10,000 resources.
    status: u64,
}

/// Shared state of all reconciles.
pub struct Context {
    client: Client,
    arm: ArmClient,
    metrics: Metrics,
    reporter: Reporter,
    // The Recorder in use and how many Events it published.
    recorder: Mutex<(Recorder, usize)>,
    settings: Settings,
    // Keyed by "namespace/name".
    memory: Mutex<HashMap<String, Memory>>,
    writes: pacing::WritePacer,
    requeues: Arc<requeue::Requeues>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

// A panic elsewhere while holding a lock leaves plain maps behind; keep using them.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Context {
    /// The context of [`reconcile`]: Kubernetes and Azure clients, metrics, decision
    /// settings, Events reported as [`REPORTING_CONTROLLER`] (`reporting_instance`: the pod).
    pub fn new(
        client: Client,
        arm: ArmClient,
        metrics: Metrics,
        settings: Settings,
        reporting_instance: Option<String>,
    ) -> Self {
        let reporter = Reporter {
            controller: REPORTING_CONTROLLER.to_owned(),
            instance: reporting_instance,
        };
        let writes =
            pacing::WritePacer::new(settings.write_burst, settings.write_refill, Instant::now());
        Self {
            recorder: Mutex::new((Recorder::new(client.clone(), reporter.clone()), 0)),
            reporter,
            client,
            arm,
            metrics,
            settings,
            memory: Mutex::new(HashMap::new()),
            writes,
            requeues: Arc::default(),
        }
    }

    /// The decision settings in use.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The resource to reconcile: the watch cache's copy, unless it is older than our own
    /// last write (the watch event of a status write can arrive after a short requeue fires),
    /// then a fresh read. Without this a requeue could act on a status without the operation
    /// it just started, and start it twice. `None` when the resource is gone.
    async fn current(
        &self,
        api: &Api<BlobBackupInstance>,
        key: &str,
        cached: &BlobBackupInstance,
    ) -> Result<Option<BlobBackupInstance>, Error> {
        let stale = lock(&self.memory).get(key).is_some_and(|memory| {
            cached.metadata.uid.as_deref() == Some(memory.uid.as_str())
                && (memory.status != status_fingerprint(cached.status.as_ref())
                    || memory.finalized != has_finalizer(cached))
        });
        if !stale {
            return Ok(Some(cached.clone()));
        }
        debug!("the watch cache is behind our last write; reading the resource");
        let fresh = api.get_opt(&cached.name_any()).await.map_err(Error::Read)?;
        if let Some(fresh) = &fresh {
            self.remember_write(key, fresh);
        }
        Ok(fresh)
    }

    fn remember_write(&self, key: &str, written: &BlobBackupInstance) {
        let mut memory = lock(&self.memory);
        let entry = memory.entry(key.to_owned()).or_default();
        entry.uid = written.metadata.uid.clone().unwrap_or_default();
        entry.finalized = has_finalizer(written);
        entry.status = status_fingerprint(written.status.as_ref());
    }

    /// The Recorder for the next Event (see [`EVENTS_PER_RECORDER`]).
    fn recorder(&self) -> Recorder {
        let mut current = lock(&self.recorder);
        if current.1 >= EVENTS_PER_RECORDER {
            *current = (Recorder::new(self.client.clone(), self.reporter.clone()), 0);
        }
        current.1 += 1;
        current.0.clone()
    }

    /// Publishes the decision's Events; a failure is logged, never fatal (the status says
    /// the same).
    async fn publish(&self, obj: &BlobBackupInstance, events: &[EventSpec]) {
        if events.is_empty() {
            return;
        }
        let reference = obj.object_ref(&());
        for spec in events {
            let event = Event {
                type_: match spec.type_ {
                    EventType::Normal => KubeEventType::Normal,
                    EventType::Warning => KubeEventType::Warning,
                },
                reason: spec.reason.as_str().to_owned(),
                note: Some(spec.note.clone()),
                action: "Reconcile".to_owned(),
                secondary: None,
            };
            match self.recorder().publish(&event, &reference).await {
                Ok(()) => self.metrics.record_event(spec.reason.as_str()),
                Err(error) => warn!(reason = %spec.reason, %error, "cannot publish an event"),
            }
            info!(reason = %spec.reason, "{}", spec.note);
        }
    }

    /// Adds the finalizer with a JSON patch whose `test` fails if the finalizers changed
    /// since we read them (the apiserver does not deduplicate finalizers).
    ///
    /// Not kube's `finalizer` helper: it removes the finalizer as soon as one cleanup
    /// reconcile returns, but here the finalizer may go only once Azure has confirmed the
    /// deletion, which takes several reconciles that `decide` tracks in status.
    async fn add_finalizer(
        &self,
        api: &Api<BlobBackupInstance>,
        obj: &BlobBackupInstance,
    ) -> Result<BlobBackupInstance, Error> {
        let operations = match &obj.metadata.finalizers {
            None => json!([
                {"op": "test", "path": "/metadata/finalizers", "value": null},
                {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]},
            ]),
            Some(finalizers) => json!([
                {"op": "test", "path": "/metadata/finalizers", "value": finalizers},
                {"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER},
            ]),
        };
        self.patch_finalizers(api, obj, operations)
            .await
            .map_err(Error::AddFinalizer)
    }

    /// Removes the finalizer, testing that it is still at the index we read.
    async fn remove_finalizer(
        &self,
        api: &Api<BlobBackupInstance>,
        obj: &BlobBackupInstance,
    ) -> Result<(), Error> {
        let Some(index) = obj
            .finalizers()
            .iter()
            .position(|finalizer| finalizer == FINALIZER)
        else {
            return Ok(());
        };
        let path = format!("/metadata/finalizers/{index}");
        let operations = json!([
            {"op": "test", "path": path, "value": FINALIZER},
            {"op": "remove", "path": path},
        ]);
        match self.patch_finalizers(api, obj, operations).await {
            Ok(_) => Ok(()),
            // Removing the last finalizer lets the apiserver delete the object; an already
            // deleted object needs nothing more.
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(error) => Err(Error::RemoveFinalizer(error)),
        }
    }

    async fn patch_finalizers(
        &self,
        api: &Api<BlobBackupInstance>,
        obj: &BlobBackupInstance,
        operations: serde_json::Value,
    ) -> Result<BlobBackupInstance, kube::Error> {
        let patch: json_patch::Patch =
            serde_json::from_value(operations).map_err(kube::Error::SerdeError)?;
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        api.patch(&obj.name_any(), &params, &Patch::Json::<()>(patch))
            .await
    }

    /// Writes `obj.status` by server-side apply on the status subresource, as the one field
    /// manager of the status (forced: the status is ours alone). A status that records an
    /// operation just started is retried a few times, since losing its poll URL would mean
    /// starting the operation again.
    async fn write_status(
        &self,
        api: &Api<BlobBackupInstance>,
        obj: &BlobBackupInstance,
        precious: bool,
    ) -> Result<BlobBackupInstance, Error> {
        let body = json!({
            "apiVersion": BlobBackupInstance::api_version(&()),
            "kind": BlobBackupInstance::kind(&()),
            "status": obj.status,
        });
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let attempts = if precious { STATUS_WRITE_ATTEMPTS } else { 1 };
        let mut pause = STATUS_WRITE_RETRY;
        let mut attempt = 1;
        loop {
            match api
                .patch_status(&obj.name_any(), &params, &Patch::Apply(&body))
                .await
            {
                Ok(written) => {
                    self.metrics.record_status_write();
                    return Ok(written);
                }
                Err(error) if attempt < attempts => {
                    warn!(%error, attempt, "cannot record the Azure operation just started; retrying");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                    attempt += 1;
                }
                Err(error) => return Err(Error::WriteStatus(error)),
            }
        }
    }

    /// Updates the per-resource gauges from the status now in effect.
    fn observe(&self, key: &str, status: Option<&BlobBackupInstanceStatus>) {
        let ready = status.is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == condition_type::READY && c.status == ConditionStatus::True)
        });
        let protection = status.and_then(|s| s.protection_status.as_deref());
        let reason = status
            .and_then(|s| {
                s.conditions
                    .iter()
                    .find(|c| c.type_ == condition_type::READY)
            })
            .map(|c| c.reason.as_str());
        let in_flight = status.and_then(decide::in_flight).map(|op| op.action);
        self.metrics
            .observe_instance(key, protection, ready, reason, in_flight);
    }

    /// Forgets a resource that is gone: its gauges and what we remembered of it.
    fn forget(&self, key: &str) {
        self.metrics.forget_instance(key);
        self.requeues.cancel(key);
        lock(&self.memory).remove(key);
    }

    /// Forgets every resource the watch no longer lists (deleted while it was not watching).
    fn forget_all_but(&self, store: &Store<BlobBackupInstance>) {
        let listed: std::collections::HashSet<String> =
            store.state().iter().map(|obj| object_key(obj)).collect();
        self.metrics.retain_instances(|key| listed.contains(key));
        self.requeues.retain(|key| listed.contains(key));
        lock(&self.memory).retain(|key, _| listed.contains(key));
    }

    /// Schedules the resource's next reconcile (see [`requeue`]); kube only waits for a
    /// change.
    fn requeue(&self, key: &str, requeue: Requeue) -> ReconcileAction {
        match requeue {
            Requeue::After(delay) => self.requeues.schedule(key, delay),
            Requeue::AwaitChange => self.requeues.cancel(key),
        }
        ReconcileAction::await_change()
    }
}

/// A hash of the status as the API would serialize it (no allocation): enough to tell whether
/// the watch cache has caught up with our last write.
fn status_fingerprint(status: Option<&BlobBackupInstanceStatus>) -> u64 {
    use std::hash::{DefaultHasher, Hasher};
    // serde_json writes into any io::Write; this one feeds the bytes to the hasher.
    struct HashWriter(DefaultHasher);
    impl std::io::Write for HashWriter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.write(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut writer = HashWriter(DefaultHasher::new());
    // Serializing plain data into a writer that never fails cannot fail either.
    let _ = serde_json::to_writer(&mut writer, &status);
    writer.0.finish()
}

fn object_key(obj: &BlobBackupInstance) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
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

/// Whether the observation is a poll that found the operation finished.
fn operation_ended(observation: &Observation) -> bool {
    matches!(observation, Observation::Polled { status, .. } if *status != PolledStatus::InProgress)
}

/// Reconciles one resource: up to a few observe → decide → act steps, then records the
/// status (once, and only if it changed; at once when an Azure operation was started) and
/// says when to look again.
pub async fn reconcile(
    obj: Arc<BlobBackupInstance>,
    ctx: Arc<Context>,
) -> Result<ReconcileAction, Error> {
    let started = Instant::now();
    let span = info_span!(
        "reconcile",
        resource = %obj.name_any(),
        namespace = %obj.namespace().unwrap_or_default(),
    );
    let result = reconcile_steps(&obj, &ctx).instrument(span).await;
    ctx.metrics.record_reconcile(
        started.elapsed(),
        result.as_ref().err().map(Error::metric_reason),
    );
    result
}

async fn reconcile_steps(
    cached: &BlobBackupInstance,
    ctx: &Context,
) -> Result<ReconcileAction, Error> {
    let namespace = cached
        .namespace()
        .ok_or(Error::MissingMetadata("namespace"))?;
    if cached.metadata.name.is_none() {
        return Err(Error::MissingMetadata("name"));
    }
    let key = object_key(cached);
    let api: Api<BlobBackupInstance> = Api::namespaced(ctx.client.clone(), &namespace);
    let Some(mut obj) = ctx.current(&api, &key, cached).await? else {
        ctx.forget(&key);
        return Ok(ReconcileAction::await_change());
    };

    let mut persisted = obj.status.clone();
    let mut observation = Observation::None;
    let mut requeue = None;
    for _ in 0..MAX_STEPS {
        let decision = decide(&obj, &observation, Timestamp::now(), &ctx.settings);
        // A write waits for its slot in Azure's write budget (neither its status nor its
        // events count before it is sent), so throttling never turns into a herd of 429s.
        let admission = decision
            .action
            .operation()
            .map(|_| ctx.writes.admit(&key, Instant::now()));
        if let Some(Err(wait)) = admission {
            debug!(?wait, "waiting for a slot in Azure's write budget");
            // Except when Azure just reported an operation's end (a validate, before the
            // PUT): that is recorded now, with what the decision makes of it, or the next
            // reconcile would find the operation still in flight and poll it again.
            if operation_ended(&observation) {
                if let Some(status) = decision.status {
                    obj.status = Some(status);
                }
                ctx.publish(&obj, &decision.events).await;
            }
            requeue = Some(Requeue::After(wait));
            break;
        }
        if let Some(status) = decision.status {
            obj.status = Some(status);
        }
        // An operation just started: its poll URL goes to the API before anything else.
        if records_new_operation(persisted.as_ref(), obj.status.as_ref()) {
            let written = ctx.write_status(&api, &obj, true).await?;
            ctx.remember_write(&key, &written);
            persisted = written.status.clone();
            obj = written;
        }
        ctx.publish(&obj, &decision.events).await;
        observation = match &decision.action {
            Action::None => {
                requeue = Some(decision.requeue);
                break;
            }
            Action::AddFinalizer => {
                let mut updated = ctx.add_finalizer(&api, &obj).await?;
                ctx.remember_write(&key, &updated);
                // Keep the status decided so far; it is written below.
                updated.status = obj.status.take();
                obj = updated;
                Observation::None
            }
            Action::RemoveFinalizer => {
                ctx.remove_finalizer(&api, &obj).await?;
                ctx.forget(&key);
                return Ok(ctx.requeue(&key, decision.requeue));
            }
            action => {
                let Some(observation) = azure::perform(&ctx.arm, action).await else {
                    requeue = Some(decision.requeue);
                    break;
                };
                if matches!(observation, Observation::Instance(_)) {
                    ctx.metrics.record_check(&key);
                }
                // The client keeps the last figure any write was answered with: with other
                // reconciles' writes in between it may be theirs, which makes the correction
                // a little too strong or too weak. It only ever lowers the copy, and the next
                // answer corrects it again.
                if let Some(Ok(admission)) = admission
                    && let Some(remaining) = ctx.arm.take_remaining_writes()
                {
                    ctx.writes.reported_remaining(remaining, admission);
                }
                if let Some(operation) = azure::throttled_operation(&observation) {
                    ctx.metrics.record_throttling_wait(operation);
                    if let Observation::Failed {
                        call: decide::AzureCall::Start(_),
                        error,
                    } = &observation
                    {
                        let retry_after = error.retry_after.unwrap_or(ctx.settings.retry_after_min);
                        ctx.writes.throttled(retry_after, Instant::now());
                    }
                }
                observation
            }
        };
    }

    if let Some(status) = &obj.status
        && decide::status_changed(persisted.as_ref(), status)
    {
        let written = ctx.write_status(&api, &obj, false).await?;
        ctx.remember_write(&key, &written);
        obj = written;
    }
    ctx.observe(&key, obj.status.as_ref());
    Ok(match requeue {
        Some(requeue) => ctx.requeue(&key, requeue),
        // Out of steps: carry on soon, from the recorded state.
        None => ctx.requeue(&key, Requeue::After(ctx.settings.retry_after_min)),
    })
}

/// What to do after a failed reconcile: conflicts are retried at once (against the new
/// state), other Kubernetes API trouble after the default Azure retry delay.
pub fn error_policy(
    obj: Arc<BlobBackupInstance>,
    error: &Error,
    ctx: Arc<Context>,
) -> ReconcileAction {
    warn!(
        resource = %obj.name_any(),
        namespace = %obj.namespace().unwrap_or_default(),
        "reconcile failed: {error}"
    );
    let delay = if error.is_conflict() {
        ctx.settings.retry_after_min
    } else {
        ctx.settings.retry_after_default
    };
    ctx.requeue(&object_key(&obj), Requeue::After(delay))
}

/// `Some(1)` while the resource is being deleted: with the generation and the finalizers,
/// what should wake the controller up.
fn deletion_requested(obj: &BlobBackupInstance) -> Option<u64> {
    Some(u64::from(obj.metadata.deletion_timestamp.is_some()))
}

/// A hash of the finalizers other than ours. Adding ours needs no wake-up: the reconcile
/// that adds it carries on in the same loop, and a second reconcile right after it would
/// only poll Azure early and lose the operation's `Retry-After`.
fn other_finalizers(obj: &BlobBackupInstance) -> Option<u64> {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hasher = DefaultHasher::new();
    obj.finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .for_each(|f| f.hash(&mut hasher));
    Some(hasher.finish())
}

/// Runs the controller until `shutdown` completes, then lets the reconciles in flight finish
/// (none is started after) and returns.
///
/// Watches `BlobBackupInstance` resources (in `config.watch_namespace`, or all namespaces)
/// and reconciles a resource when its generation, its other controllers' finalizers or its
/// deletion change (never on the controller's own writes) and when a decision's requeue
/// time comes. Up to `config.concurrency` resources are reconciled at once. Azure calls go
/// through `arm` (whose api-version decides whether `Retain` is possible); `metrics` gets
/// the controller's series; `health` is told when the watch has listed the resources
/// (`set_watching(true)`, reset on return) and gets heartbeats while the loop runs.
///
/// The command line wraps this in [`leader::run_as_leader`]; tests and benchmarks call it
/// directly. Kubernetes API trouble (a missing CRD, RBAC) is logged and retried with backoff,
/// so this returns only on shutdown.
pub async fn run(
    client: Client,
    arm: ArmClient,
    config: ControllerConfig,
    metrics: Metrics,
    health: HealthState,
    shutdown: impl Future<Output = ()>,
) {
    // Declared first, dropped last: after the reconciles, however the loop ends (on
    // shutdown, or dropped when a leader term is lost).
    let _forget_instances = ForgetInstancesOnDrop(metrics.clone());
    let mut settings = config.settings.clone();
    settings.instance_actions_supported = arm.supports_instance_actions();
    settings.api_version = arm.api_version().to_owned();
    let ctx = Arc::new(Context::new(
        client.clone(),
        arm,
        metrics,
        settings,
        config.reporting_instance.clone(),
    ));

    let api: Api<BlobBackupInstance> = match config.watch_namespace.as_deref() {
        Some(namespace) if !namespace.is_empty() => Api::namespaced(client, namespace),
        _ => Api::all(client),
    };
    let (reader, writer) = reflector::store();
    let watch_ctx = ctx.clone();
    let watch_reader = reader.clone();
    let predicate = predicates::generation
        .combine(other_finalizers)
        .combine(deletion_requested);
    let triggers = watcher(api, watcher::Config::default())
        .default_backoff()
        // The cache keeps every resource: without managedFields (which decisions never read
        // and which server-side apply makes as large as the status) it is about half the size.
        // Annotations are never read either, and `kubectl apply` puts a copy of the whole
        // object in one.
        .modify(|obj| {
            obj.managed_fields_mut().clear();
            obj.annotations_mut().clear();
        })
        .reflect(writer)
        .inspect_ok(move |event| match event {
            watcher::Event::Delete(obj) => watch_ctx.forget(&object_key(obj)),
            watcher::Event::InitDone => watch_ctx.forget_all_but(&watch_reader),
            _ => {}
        })
        .applied_objects()
        .predicate_filter(predicate, Default::default());

    let (stop, stopped) = futures::channel::oneshot::channel::<()>();
    let controller = Controller::for_stream(triggers, reader.clone())
        .reconcile_on(ctx.requeues.clone().due())
        .with_config(controller::Config::default().concurrency(config.concurrency.max(1)))
        .graceful_shutdown_on(stopped.map(|_| ()))
        .run(reconcile, error_policy, ctx)
        .for_each(|result| {
            match result {
                Ok(_) => {}
                // Logged by error_policy.
                Err(controller::Error::ReconcilerFailed(..)) => {}
                Err(controller::Error::ObjectNotFound(obj)) => {
                    debug!(object = %obj, "resource gone before its reconcile")
                }
                Err(error) => {
                    warn!(%error, "watching BlobBackupInstance resources failed; retrying")
                }
            }
            std::future::ready(())
        });
    let synced = async {
        if reader.wait_until_ready().await.is_ok() {
            info!("watching BlobBackupInstance resources");
            health.set_watching(true);
        }
        std::future::pending::<()>().await
    };

    // Beats while this loop turns, so /healthz fails if it wedges.
    let mut heartbeat = tokio::time::interval(health.heartbeat_interval());
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(controller, shutdown, synced);
    let mut stop = Some(stop);
    loop {
        tokio::select! {
            () = &mut controller => break,
            _ = heartbeat.tick() => health.heartbeat(),
            () = &mut shutdown, if stop.is_some() => {
                info!("shutting down: letting the reconciles in flight finish");
                if let Some(stop) = stop.take() {
                    let _ = stop.send(());
                }
            }
            () = &mut synced => {}
        }
    }
    health.set_watching(false);
    info!("controller stopped");
}

/// Forgets every resource in the instance gauges when the controller stops: another replica
/// (or the next leader term here) reports them from its own watch.
struct ForgetInstancesOnDrop(Metrics);

impl Drop for ForgetInstancesOnDrop {
    fn drop(&mut self) {
        self.0.retain_instances(|_| false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AzureOperation, BlobBackupInstanceStatus, OperationAction, OperationPhase};

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
}
