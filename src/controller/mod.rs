//! The Kubernetes controller: reconciles `BlobBackupInstance` resources against Azure.
//!
//! - [`decide`](mod@decide): the pure decision (no I/O), table-tested.
//! - [`steps`]: the observe → decide → act → record loop of [`decide`](mod@decide)'s docs, run
//!   for a few steps per reconcile and generic over its effects ([`steps::Effects`]), never
//!   waiting for Azure: an operation in flight is recorded in status (with its poll URL) and
//!   looked at again after Azure's `Retry-After`.
//! - this module: the kube-runtime wiring. [`run`] watches the resources and calls
//!   [`reconcile`] for each, which runs the loop with [`KubeEffects`] (the Kubernetes API and
//!   ARM, in `context.rs`, with the shared [`Context`]).
//! - shared machinery, generic over the kind where a second controller can reuse it:
//!   [`state`] (one record per resource, the stale-cache guard), [`status`] (status writes),
//!   `finalizer.rs`, `events.rs` (the Recorder rotation), `requeue.rs`, [`pacing`] (Azure's
//!   write budget).
//! - [`grants`]: vault grants (which namespaces may use which vault), their watches and status.
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
mod changes;
mod context;
pub mod decide;
mod events;
mod finalizer;
pub mod grants;
pub mod kubernetes_version;
pub mod leader;
mod listing;
pub mod pacing;
mod requeue;
pub mod restore;
pub mod state;
pub mod status;
pub mod steps;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use kube::api::Api;
use kube::runtime::controller::{self, Action as ReconcileAction, Controller};
use kube::runtime::reflector;
use kube::runtime::{Predicate, WatchStreamExt, predicates, watcher};
use kube::{Client, ResourceExt};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::api::{BlobBackupInstance, FINALIZER};
use crate::telemetry::{HealthState, Metrics};
use dataprotection::ArmClient;

pub use context::{Context, KubeEffects};
use decide::{AzureApi, Requeue, Settings, Timing};
pub use listing::LIST_PAGE_SIZE;
use state::{key_of, lock};
pub use status::apply_status;
use steps::Next;

/// The field manager of every write the controller makes (status and finalizer).
pub const FIELD_MANAGER: &str = "blob-backup-operator";

/// The `reportingController` of the controller's Events.
pub const REPORTING_CONTROLLER: &str = "blob-backup-operator";

/// How the controller runs.
#[derive(Clone)]
pub struct ControllerConfig {
    /// The namespace to watch; `None` (or empty) watches all namespaces.
    pub watch_namespace: Option<String>,
    /// Resources reconciled at once (at least 1; one resource is never reconciled twice at
    /// once).
    pub concurrency: u16,
    /// Timing of decisions (retries, resync); what the api-version can do comes from the ARM
    /// client [`run`] gets.
    pub timing: Timing,
    /// The client-side copy of Azure's write budget.
    pub write_budget: WriteBudget,
    /// `reportingInstance` of Events (the pod name); `None`: the controller name.
    pub reporting_instance: Option<String>,
    /// Whether this replica still leads ([`leader::run_as_leader`] hands it to the work):
    /// checked right before every Azure write. The default always holds.
    pub fence: leader::Fence,
    /// The client for the watch, when the one [`run`] gets has a read timeout: a watch waits
    /// for events for minutes, and kube's watcher has an idle timeout of its own (the watch's
    /// server-side timeout plus 5 s). `None`: the same client.
    pub watch_client: Option<Client>,
    /// Which vaults a namespace may use (`--vault-access`): `Grants` (the default) serves a
    /// resource only when a BackupVaultGrant matches it.
    pub vault_access: grants::VaultAccess,
    /// The cluster's identity in owner tags (`--cluster-id`); `None`: the uid of the
    /// `kube-system` namespace, read by [`run`].
    pub cluster_id: Option<String>,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            watch_namespace: None,
            concurrency: 16,
            timing: Timing::default(),
            write_budget: WriteBudget::default(),
            reporting_instance: None,
            fence: leader::Fence::default(),
            watch_client: None,
            vault_access: grants::VaultAccess::default(),
            cluster_id: None,
        }
    }
}

impl std::fmt::Debug for ControllerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerConfig")
            .field("watch_namespace", &self.watch_namespace)
            .field("concurrency", &self.concurrency)
            .field("timing", &self.timing)
            .field("write_budget", &self.write_budget)
            .field("reporting_instance", &self.reporting_instance)
            .field("fence", &self.fence)
            .field("separate_watch_client", &self.watch_client.is_some())
            .field("vault_access", &self.vault_access)
            .field("cluster_id", &self.cluster_id)
            .finish()
    }
}

/// Azure writes (validate, PUT, stopProtection, sync) the controller sends at once to one
/// subscription before pacing itself ([`pacing::WritePacer`]): ARM's write bucket of a
/// subscription; its DELETEs have a bucket of this size of their own, as in ARM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteBudget {
    /// The bucket's size: writes sent at once.
    pub burst: u32,
    /// Time one write of that bucket takes to come back (ARM: 10 per second).
    pub refill: Duration,
}

impl Default for WriteBudget {
    fn default() -> Self {
        // ARM's token bucket for subscription writes: 200, refilled at 10 per second.
        Self {
            burst: 200,
            refill: Duration::from_millis(100),
        }
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
    fn is_conflict(&self) -> bool {
        self.api_status() == Some(409)
    }

    /// Whether the API server refused the write as invalid (422): retrying the same write at
    /// once would only be refused again.
    fn is_invalid(&self) -> bool {
        self.api_status() == Some(422)
    }
}

/// Reconciles one resource: up to a few observe → decide → act steps
/// ([`steps::run_steps`]), then records the status and says when to look again.
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
    let key = key_of(cached);
    let api: Api<BlobBackupInstance> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut effects = ctx.effects(api, key.clone());
    let Some(mut obj) = effects.current(cached).await? else {
        ctx.forget(&key);
        return Ok(ReconcileAction::await_change());
    };
    // An operation sent but not recorded: record it before deciding anything.
    if let Some(written) = effects.write_unwritten(&obj).await? {
        obj = written;
    }
    // Reconciles start with the first page of resources, maybe before the (smaller) grant
    // and namespace lists have ended: worth a short wait rather than a requeue.
    let access = match ctx.grants.access_for(&obj) {
        Some(access) => Some(access),
        None => {
            let wait = ctx.settings.timing.retry_after_min;
            let _ = tokio::time::timeout(wait, ctx.grants.listed()).await;
            ctx.grants.access_for(&obj)
        }
    };
    let Some(access) = access else {
        debug!("the vault grants are not listed yet; looking again shortly");
        ctx.requeue(&key, Requeue::After(ctx.settings.timing.retry_after_min));
        return Ok(ReconcileAction::await_change());
    };
    match steps::run_steps(&mut effects, obj, &ctx.settings, &access).await? {
        Next::Requeue(requeue) => ctx.requeue(&key, requeue),
        Next::Abandon => {}
    }
    // Requeues are ours (see [`requeue`]); kube only waits for a change.
    Ok(ReconcileAction::await_change())
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
    let key = key_of(obj.as_ref());
    let delay = if error.is_conflict() {
        // Against the new state: the watch cache may not have it yet.
        ctx.read_fresh_next(&key);
        ctx.settings.timing.retry_after_min
    } else if error.is_invalid() {
        ctx.settings.timing.stalled_retry_max
    } else {
        ctx.settings.timing.retry_after_default
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
    ctx.requeue(&key, Requeue::After(delay));
    ReconcileAction::await_change()
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
    tokio::pin!(shutdown);
    let cluster_id = match config.cluster_id.clone() {
        Some(id) => id,
        None => {
            let cluster = grants::cluster_uid(&client);
            tokio::select! {
                id = cluster => id,
                () = &mut shutdown => return,
            }
        }
    };
    info!(cluster = %cluster_id, vault_access = ?config.vault_access, "owner tags name this cluster");
    let settings = Settings {
        timing: config.timing.clone(),
        azure: AzureApi::of(&arm),
        cluster_id,
    };

    let watch_client = config.watch_client.clone().unwrap_or(client.clone());
    let namespace = config
        .watch_namespace
        .as_deref()
        .filter(|ns| !ns.is_empty());
    let api: Api<BlobBackupInstance> = match namespace {
        Some(namespace) => Api::namespaced(watch_client.clone(), namespace),
        None => Api::all(watch_client.clone()),
    };
    let (reader, writer) = reflector::store();
    let (vault_grants, grant_triggers, grant_status) = match config.vault_access {
        grants::VaultAccess::Open => (
            grants::VaultGrants::open(),
            futures::stream::pending().boxed(),
            None,
        ),
        grants::VaultAccess::Grants => {
            let (vault_grants, triggers, changes) =
                grants::VaultGrants::watch(watch_client.clone(), namespace, reader.clone());
            let status = grants::run_grant_status(client.clone(), vault_grants.clone(), changes);
            (vault_grants, triggers, Some(status))
        }
    };
    // Runs as long as the controller (it ends only with it).
    let grant_status = async move {
        if let Some(status) = grant_status {
            status.await;
        }
        std::future::pending::<()>().await
    };
    // BlobRestore resources have a controller of their own, run and stopped with this one.
    let (stop_restores, restores_stopped) = futures::channel::oneshot::channel::<()>();
    let mut stop_restores = Some(stop_restores);
    // One copy of Azure's write budgets for both controllers: they spend the same ones.
    let writes = Arc::new(pacing::WritePacer::new(
        config.write_budget.burst,
        config.write_budget.refill,
        config.timing.retry_after_max,
    ));
    let restores = restore::run(
        client.clone(),
        arm.clone(),
        config.clone(),
        metrics.clone(),
        vault_grants.clone(),
        writes.clone(),
        restores_stopped.map(|_| ()),
    );
    let mut restores_done = false;
    let ctx = Arc::new(
        Context::new(
            client.clone(),
            arm,
            metrics,
            settings,
            writes,
            config.reporting_instance.clone(),
        )
        .with_fence(config.fence.clone())
        .with_grants(vault_grants),
    );
    // The resource gauges count what the watch lists, until this loop ends (declared before
    // the loop, dropped after it: however it ends, on shutdown or when a leader term is lost).
    let _gauges = ctx.metrics.watch_instances(reader.clone());
    let watch_ctx = ctx.clone();
    let predicate = predicates::generation
        .combine(other_finalizers)
        .combine(deletion_requested);
    let listed_health = health.clone();
    let events = watcher(api, listing::watch_config())
        .default_backoff()
        // The cache keeps every resource: without managedFields (which decisions never read
        // and which server-side apply makes as large as the status) it is about half the size.
        // Annotations are never read either, and `kubectl apply` puts a copy of the whole
        // object in one.
        .modify(|obj| {
            obj.managed_fields_mut().clear();
            obj.annotations_mut().clear();
        });
    // Reconciles start with the first page of the first list; ready once it has ended.
    let triggers = listing::reconcile_triggers(
        events,
        reader.clone(),
        writer,
        move || {
            info!("watching BlobBackupInstance resources");
            listed_health.set_watching(true);
        },
        move |obj| watch_ctx.forget(&key_of(obj)),
        predicate,
    );

    let (stop, stopped) = futures::channel::oneshot::channel::<()>();
    let controller = Controller::for_stream(triggers, reader.clone())
        .reconcile_on(ctx.requeues.clone().due())
        .reconcile_on(grant_triggers)
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

    // Beats while this loop turns, so /healthz fails if it wedges.
    let mut heartbeat = tokio::time::interval(health.heartbeat_interval());
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(controller, grant_status, restores);
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
            () = &mut grant_status => {}
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
