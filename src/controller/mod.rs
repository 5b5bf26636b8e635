//! The Kubernetes controller: reconciles `BlobBackupInstance` resources against Azure.
//!
//! - [`decide`](mod@decide): the pure decision (no I/O), table-tested.
//! - this module: the kube-runtime wiring around it. [`run`] watches the resources and calls
//!   [`reconcile`] for each, which runs the observe → decide → act → record loop of
//!   [`decide`](mod@decide)'s docs for a few steps, never waiting for Azure: an operation in flight is
//!   recorded in status (with its poll URL) and looked at again after Azure's `Retry-After`.
//! - [`leader`]: leader election, wrapped around [`run`] by the command line.
//! - [`kubernetes_version`]: the oldest Kubernetes supported, checked by the command line.
//!
//! ```no_run
//! # async fn demo(client: kube::Client, arm: dataprotection::ArmClient) {
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
pub mod kubernetes_version;
pub mod leader;
pub mod pacing;
mod requeue;
pub mod restore;

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
use crate::telemetry::{HealthState, Metrics};
use dataprotection::ArmClient;

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
#[derive(Clone)]
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
    /// Whether this replica still leads ([`leader::run_as_leader`] hands it to the work):
    /// checked right before every Azure write. The default always holds.
    pub fence: leader::Fence,
    /// The client for the watch, when the one [`run`] gets has a read timeout: a watch waits
    /// for events for minutes, and kube's watcher has an idle timeout of its own (the watch's
    /// server-side timeout plus 5 s). `None`: the same client.
    pub watch_client: Option<Client>,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            watch_namespace: None,
            concurrency: 16,
            settings: Settings::default(),
            reporting_instance: None,
            fence: leader::Fence::default(),
            watch_client: None,
        }
    }
}

impl std::fmt::Debug for ControllerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerConfig")
            .field("watch_namespace", &self.watch_namespace)
            .field("concurrency", &self.concurrency)
            .field("settings", &self.settings)
            .field("reporting_instance", &self.reporting_instance)
            .field("fence", &self.fence)
            .field("separate_watch_client", &self.watch_client.is_some())
            .finish()
    }
}

/// Longest wait to connect to the Kubernetes API.
pub const KUBE_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for an answer from the Kubernetes API (not for watches): a request that hangs
/// (a Lease renewal above all) fails instead of holding up the controller or the election.
pub const KUBE_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The two Kubernetes clients of the operator, from one configuration.
#[derive(Clone)]
pub struct KubeClients {
    /// For every request but watches: connect and read timeouts.
    pub requests: Client,
    /// For watches: a connect timeout only. A read timeout would cut a watch that has no
    /// event to send for longer than it; kube's watcher already reconnects a watch that stays
    /// silent past its server-side timeout (290 s) plus 5 s.
    pub watches: Client,
}

impl KubeClients {
    /// Builds both clients from `config` with these timeouts (see [`KUBE_CONNECT_TIMEOUT`] and
    /// [`KUBE_READ_TIMEOUT`]).
    pub fn new(config: kube::Config, connect: Duration, read: Duration) -> kube::Result<Self> {
        let mut requests = config.clone();
        requests.connect_timeout = Some(connect);
        requests.read_timeout = Some(read);
        // Count the read timeout from when a request is sent, not from when its pooled
        // connection went idle.
        requests.reset_reader_on_write = true;
        let mut watches = config;
        watches.connect_timeout = Some(connect);
        watches.read_timeout = None;
        Ok(Self {
            requests: Client::try_from(requests)?,
            watches: Client::try_from(watches)?,
        })
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

    fn api_status(&self) -> Option<u16> {
        let source = match self {
            Error::AddFinalizer(e)
            | Error::RemoveFinalizer(e)
            | Error::WriteStatus(e)
            | Error::Read(e) => e,
            Error::MissingMetadata(_) | Error::Patch(_) => return None,
        };
        match source {
            kube::Error::Api(status) => Some(status.code),
            _ => None,
        }
    }

    /// Whether someone else changed the resource in between (409: a stale resourceVersion, or
    /// a failed JSON patch `test`): worth retrying at once against the new state.
    pub(crate) fn is_conflict(&self) -> bool {
        self.api_status() == Some(409)
    }

    /// Whether the API server refused the write as invalid (422): retrying the same write at
    /// once would only be refused again.
    fn is_invalid(&self) -> bool {
        self.api_status() == Some(422)
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
    /// A status recording an Azure operation already sent that could not be written (its poll
    /// URL): written before anything else happens to the resource, or the operation would be
    /// sent again. For the resource with this uid.
    unwritten: Option<(String, BlobBackupInstanceStatus)>,
    /// Set by a conflict: the watch cache is behind someone's write, so read afresh.
    read_fresh: bool,
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
    fence: leader::Fence,
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
        let writes = pacing::WritePacer::new(
            settings.write_burst,
            settings.write_refill,
            settings.retry_after_max,
            Instant::now(),
        );
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
            fence: leader::Fence::default(),
        }
    }

    /// The context of a leader term: Azure writes only while `fence` holds, checked before
    /// the intent is recorded, before the call, and by the ARM client once it has the token.
    pub fn with_fence(mut self, fence: leader::Fence) -> Self {
        let gate = fence.clone();
        self.arm = self.arm.with_write_gate(Arc::new(move || gate.holds()));
        self.fence = fence;
        self
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
            memory.read_fresh
                || (cached.metadata.uid.as_deref() == Some(memory.uid.as_str())
                    && (memory.status != status_fingerprint(cached.status.as_ref())
                        || memory.finalized != has_finalizer(cached)))
        });
        if !stale {
            return Ok(Some(cached.clone()));
        }
        debug!("the watch cache is behind our last write; reading the resource");
        let fresh = api.get_opt(&cached.name_any()).await.map_err(Error::Read)?;
        match &fresh {
            Some(fresh) => self.remember_write(key, fresh),
            None => {
                if let Some(memory) = lock(&self.memory).get_mut(key) {
                    memory.read_fresh = false;
                }
            }
        }
        Ok(fresh)
    }

    fn remember_write(&self, key: &str, written: &BlobBackupInstance) {
        let mut memory = lock(&self.memory);
        let entry = memory.entry(key.to_owned()).or_default();
        entry.uid = written.metadata.uid.clone().unwrap_or_default();
        entry.finalized = has_finalizer(written);
        entry.status = status_fingerprint(written.status.as_ref());
        entry.read_fresh = false;
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
        let reference = obj.object_ref(&());
        publish_events(
            || self.recorder(),
            &self.metrics,
            &reference,
            events,
            "Reconcile",
        )
        .await;
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

    /// Writes `obj.status` (see [`apply_status`]). A status that records an operation just
    /// started (`precious`) is retried a few times on transient trouble, and if it still cannot
    /// be written it is kept in memory and written first on the next reconcile: losing its
    /// poll URL would mean sending the operation again.
    async fn write_status(
        &self,
        api: &Api<BlobBackupInstance>,
        obj: &BlobBackupInstance,
        precious: bool,
    ) -> Result<BlobBackupInstance, Error> {
        match apply_status_retrying(api, obj, &obj.status, precious, &self.metrics).await {
            Ok(written) => Ok(written),
            Err(error) => {
                if precious && let Some(status) = &obj.status {
                    warn!(%error, "cannot record the Azure operation just started; keeping it to write first on the next reconcile");
                    let uid = obj.metadata.uid.clone().unwrap_or_default();
                    lock(&self.memory)
                        .entry(object_key(obj))
                        .or_default()
                        .unwritten = Some((uid, status.clone()));
                }
                Err(Error::WriteStatus(error))
            }
        }
    }

    /// Writes the status kept by a failed `precious` [`Self::write_status`], onto a fresh read
    /// of the resource (its resourceVersion), before anything else is decided. `Ok(None)`:
    /// nothing was kept, or the resource is gone.
    async fn write_unwritten(
        &self,
        api: &Api<BlobBackupInstance>,
        key: &str,
        obj: &BlobBackupInstance,
    ) -> Result<Option<BlobBackupInstance>, Error> {
        let kept = lock(&self.memory)
            .get_mut(key)
            .and_then(|memory| memory.unwritten.take());
        let Some((uid, status)) = kept else {
            return Ok(None);
        };
        if obj.metadata.uid.as_deref() != Some(uid.as_str()) {
            // Another resource of the same name: the kept status is not about it.
            return Ok(None);
        }
        let Some(mut fresh) = api.get_opt(&obj.name_any()).await.map_err(|error| {
            lock(&self.memory)
                .entry(key.to_owned())
                .or_default()
                .unwritten = Some((uid.clone(), status.clone()));
            Error::Read(error)
        })?
        else {
            return Ok(None);
        };
        info!("writing the status of an Azure operation that could not be recorded before");
        fresh.status = Some(status);
        let written = self.write_status(api, &fresh, true).await?;
        self.remember_write(key, &written);
        Ok(Some(written))
    }

    /// Updates the per-resource gauges from the status now in effect.
    fn observe(&self, key: &str, status: Option<&BlobBackupInstanceStatus>) {
        let ready_condition = status.and_then(|s| {
            s.conditions
                .iter()
                .find(|c| c.type_ == condition_type::READY)
        });
        let ready = ready_condition.is_some_and(|c| c.status == ConditionStatus::True);
        let reason = ready_condition.map(|c| c.reason.as_str());
        let protection = status.and_then(|s| s.protection_status.as_deref());
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

    /// Whether this replica may still write to Azure (see [`leader::Fence`]).
    fn leads(&self) -> bool {
        let leads = self.fence.holds();
        if !leads {
            warn!("the leader term ended: no more Azure writes from this replica");
        }
        leads
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

/// Applies `status` to `obj` ([`apply_status_of`]). A status that records an Azure write
/// (`precious`: its intent or its poll URL) is retried a few times on transient trouble: a
/// refusal (409: a stale resourceVersion, 422: invalid) would only be refused again; network
/// trouble, 429 and 5xx may pass on a second try.
pub(crate) async fn apply_status_retrying<K>(
    api: &Api<K>,
    obj: &K,
    status: &impl serde::Serialize,
    precious: bool,
    metrics: &Metrics,
) -> Result<K, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let attempts = if precious { STATUS_WRITE_ATTEMPTS } else { 1 };
    let mut pause = STATUS_WRITE_RETRY;
    let mut attempt = 1;
    loop {
        match apply_status_of(api, obj, status).await {
            Ok(written) => {
                metrics.record_status_write();
                return Ok(written);
            }
            Err(error) if attempt < attempts && !is_refusal(&error) => {
                warn!(%error, attempt, "cannot record the Azure operation's state; retrying");
                tokio::time::sleep(pause).await;
                pause *= 2;
                attempt += 1;
            }
            Err(error) => return Err(error),
        }
    }
}

/// Publishes `events` about `reference` (Kubernetes Events, each through the Recorder
/// `recorder` hands out, counted in `metrics`, and logged); a failure is logged, never fatal.
pub(crate) async fn publish_events(
    recorder: impl Fn() -> Recorder,
    metrics: &Metrics,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    events: &[EventSpec],
    action: &str,
) {
    for spec in events {
        let event = Event {
            type_: match spec.type_ {
                EventType::Normal => KubeEventType::Normal,
                EventType::Warning => KubeEventType::Warning,
            },
            reason: spec.reason.as_str().to_owned(),
            note: Some(spec.note.clone()),
            action: action.to_owned(),
            secondary: None,
        };
        match recorder().publish(&event, reference).await {
            Ok(()) => metrics.record_event(spec.reason.as_str()),
            Err(error) => warn!(reason = %spec.reason, %error, "cannot publish an event"),
        }
        info!(reason = %spec.reason, "{}", spec.note);
    }
}

/// Writes `obj.status` by server-side apply on the status subresource, as the one field manager
/// of the status (forced: the status is ours alone). The apply carries the resourceVersion the
/// status was decided on, so a writer that decided on a stale copy (a replica that lost its
/// lease, a cache behind a spec edit) gets a 409 Conflict instead of overwriting newer state.
pub async fn apply_status(
    api: &Api<BlobBackupInstance>,
    obj: &BlobBackupInstance,
) -> Result<BlobBackupInstance, kube::Error> {
    apply_status_of(api, obj, &obj.status).await
}

/// [`apply_status`] for any kind: `status` applied to `obj` (on its resourceVersion).
pub(crate) async fn apply_status_of<K>(
    api: &Api<K>,
    obj: &K,
    status: &impl serde::Serialize,
) -> Result<K, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut body = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    if let Some(version) = &obj.meta().resource_version {
        body["metadata"] = json!({"resourceVersion": version});
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch_status(&obj.name_any(), &params, &Patch::Apply(&body))
        .await
}

/// Whether the API server refused a request for what it asked (4xx other than 429): sending
/// it again unchanged cannot succeed.
fn is_refusal(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if (400..500).contains(&status.code) && status.code != 429)
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

/// Whether the observation is an operation's end: a poll that found it finished, or a call
/// Azure completed synchronously (validateForBackup may answer 200).
fn operation_ended(observation: &Observation) -> bool {
    match observation {
        Observation::Polled { status, .. } => *status != PolledStatus::InProgress,
        Observation::Started { poll, .. } => poll.is_none(),
        _ => false,
    }
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
    // An operation sent but not recorded: record it before deciding anything.
    if let Some(written) = ctx.write_unwritten(&api, &key, &obj).await? {
        obj = written;
    }

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
            // Except when Azure just reported an operation's end (a validate, polled or
            // answered at once, before the PUT): that is recorded now, with what the decision
            // makes of it, or the next reconcile would poll it again, or validate again.
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
        // Before an Azure write, its intent (the instance's name and ID, the operation) goes
        // to the API: after a crash the next reconcile looks at the instance before acting
        // again. After an operation started, its poll URL goes to the API before anything else.
        let intent = decision.action.operation().is_some();
        // A replica whose leader term ended writes nothing more: the next leader takes over.
        if intent && !ctx.leads() {
            return Ok(ReconcileAction::await_change());
        }
        let started = records_new_operation(persisted.as_ref(), obj.status.as_ref());
        if (intent || started)
            && let Some(status) = &obj.status
            && decide::status_changed(persisted.as_ref(), status)
        {
            let written = ctx.write_status(&api, &obj, started).await?;
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
                // The intent write may have taken long: the term may have ended meanwhile.
                if intent && !ctx.leads() {
                    return Ok(ReconcileAction::await_change());
                }
                let Some(observation) = azure::perform(&ctx.arm, action).await else {
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
                            call: decide::AzureCall::Start(_),
                            ..
                        }
                    )
                    && !ctx.leads()
                {
                    return Ok(ReconcileAction::await_change());
                }
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
/// state), a write the API server refused as invalid after the longest Stalled backoff (it
/// takes a person: a CRD of another version, or a bug), other Kubernetes API trouble after
/// the default Azure retry delay.
pub fn error_policy(
    obj: Arc<BlobBackupInstance>,
    error: &Error,
    ctx: Arc<Context>,
) -> ReconcileAction {
    let key = object_key(&obj);
    let delay = if error.is_conflict() {
        // Against the new state: the watch cache may not have it yet.
        lock(&ctx.memory).entry(key.clone()).or_default().read_fresh = true;
        ctx.settings.retry_after_min
    } else if error.is_invalid() {
        ctx.settings.stalled_retry_max
    } else {
        ctx.settings.retry_after_default
    };
    let hint = if error.is_invalid() {
        " (the API server refused a write as invalid, HTTP 422: check that the installed CRD is the one of this operator version, crds/ of its release)"
    } else {
        ""
    };
    warn!(
        resource = %obj.name_any(),
        namespace = %obj.namespace().unwrap_or_default(),
        retry_in = ?delay,
        "reconcile failed: {error}{hint}"
    );
    ctx.requeue(&key, Requeue::After(delay))
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
    // BlobRestore resources have a controller of their own, run and stopped with this one.
    let (stop_restores, restores_stopped) = futures::channel::oneshot::channel::<()>();
    let mut stop_restores = Some(stop_restores);
    let restores = restore::run(
        client.clone(),
        arm.clone(),
        config.clone(),
        metrics.clone(),
        restores_stopped.map(|_| ()),
    );
    let mut restores_done = false;
    let ctx = Arc::new(
        Context::new(
            client.clone(),
            arm,
            metrics,
            settings,
            config.reporting_instance.clone(),
        )
        .with_fence(config.fence.clone()),
    );

    let watch_client = config.watch_client.clone().unwrap_or(client);
    let api: Api<BlobBackupInstance> = match config.watch_namespace.as_deref() {
        Some(namespace) if !namespace.is_empty() => Api::namespaced(watch_client, namespace),
        _ => Api::all(watch_client),
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
    tokio::pin!(controller, shutdown, synced, restores);
    let mut stop = Some(stop);
    loop {
        tokio::select! {
            () = &mut controller => break,
            () = &mut restores, if !restores_done => restores_done = true,
            _ = heartbeat.tick() => health.heartbeat(),
            () = &mut shutdown, if stop.is_some() => {
                info!("shutting down: letting the reconciles in flight finish");
                if let Some(stop) = stop.take() {
                    let _ = stop.send(());
                }
                if let Some(stop) = stop_restores.take() {
                    let _ = stop.send(());
                }
            }
            () = &mut synced => {}
        }
    }
    if let Some(stop) = stop_restores.take() {
        let _ = stop.send(());
    }
    if !restores_done {
        restores.await;
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
