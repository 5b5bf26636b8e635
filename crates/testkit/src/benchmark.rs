//! The convergence harness shared by `benches/converge.rs` and `tests/fault_run.rs`.
//!
//! It starts the vault emulator in process (N storage accounts, the vault's role granted on
//! each), a Kubernetes API (the in-memory fake apiserver, a real API server started from
//! `KUBEBUILDER_ASSETS`, or a real cluster from a kubeconfig),
//! and the operator binary as a child process pointed at both, so its memory and CPU are its
//! own and it can be SIGKILLed and restarted. It creates N `BlobBackupInstance`s, watches them
//! until all are Ready, and reports time, Azure requests, Kubernetes writes, memory, CPU, a
//! steady-state resync period and, for fault runs, the invariants.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use blob_backup_operator::api::{
    BackupInstanceRef, BlobBackupInstance, BlobBackupInstanceSpec, BlobRestore, BlobRestoreSpec,
    ConditionStatus, DeletionPolicy, PolicyRef, RestorePhase, StorageAccountRef, VaultRef,
    condition_type,
};
use dataprotection::operation_ids as ops;
use futures::StreamExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::runtime::{WatchStreamExt, watcher::Event};
use kube::{CustomResourceExt, ResourceExt};
use serde::Serialize;
use vault_emulator::{
    DEFAULT_SUBSCRIPTION, DEFAULT_TOKEN, DEFAULT_VAULT_ID, EmulatorConfig, FaultSettings,
    RunningEmulator, StorageAccountConfig, ThrottleSettings, VaultConfig,
};

use crate::envtest::{Envtest, Identity};
use crate::fake_apiserver::{FakeApiOptions, FakeApiServer, Verb};
use crate::real_cluster;

/// The calls one instance needs at least: validate + its poll, PUT + its poll, one GET.
pub const MINIMUM_REQUESTS_PER_INSTANCE: f64 = 5.0;
/// The calls one restore needs at least: the restorable ranges, validateRestore + its poll,
/// restore + its poll, one GET of its job.
pub const MINIMUM_REQUESTS_PER_RESTORE: f64 = 6.0;
/// The operations the emulator counts a restore's own requests under: its point checks (the
/// restorable ranges, or the recovery points), validateRestore, restore, the polls of those
/// two, the job GETs. The polls carry no restore mark, and need none: the restores run after
/// every instance is Ready (and the steady-state window), so no backup operation is polled
/// meanwhile; the backups' resync GETs are `BackupInstances_Get`, not counted.
const RESTORE_OPERATIONS: [&str; 7] = [
    ops::FIND_RESTORABLE_TIME_RANGES,
    ops::RECOVERY_POINTS_LIST,
    ops::VALIDATE_FOR_RESTORE,
    ops::TRIGGER_RESTORE,
    ops::OPERATION_STATUS,
    ops::OPERATION_RESULT,
    ops::JOBS_GET,
];
const WRITE_OPERATIONS: [&str; 5] = [
    "BackupInstances_ValidateForBackup",
    "BackupInstances_CreateOrUpdate",
    "BackupInstances_Delete",
    "BackupInstances_StopProtection",
    "BackupInstances_SyncBackupInstance",
];
const DUPLICATE_SENSITIVE: [&str; 2] = ["BackupInstances_CreateOrUpdate", "BackupInstances_Delete"];
const GET_OPERATIONS: [&str; 2] = ["BackupInstances_Get", "BackupInstances_List"];
const NAMESPACE: &str = "bbo-bench";
const PLURAL: &str = "blobbackupinstances";
// /proc/<pid>/stat counts CPU in USER_HZ ticks, which Linux fixes at 100 for user space.
const USER_HZ: f64 = 100.0;

/// Injected trouble for a fault run.
#[derive(Clone, Debug)]
pub struct FaultPlan {
    /// Share of Azure requests failing: split into 500, 503 and dropped connections.
    pub share: f64,
    /// How often the operator is SIGKILLed and restarted.
    pub restarts: usize,
    /// Seed of the fault picks and the kill moments.
    pub seed: u64,
    /// A kill comes this long (uniformly drawn) after the previous (re)start was ready.
    pub kill_after: (Duration, Duration),
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    pub instances: usize,
    /// Subscriptions the instances are spread over (round robin), a vault in each: ARM's
    /// write budget is per subscription.
    pub subscriptions: usize,
    /// How long each emulated Azure operation runs.
    pub latency: Duration,
    /// The operator's `--concurrency`.
    pub concurrency: usize,
    /// The operator's `--resync-interval`, also the steady-state window.
    pub resync: Duration,
    /// The emulator's write token bucket (`None`: unthrottled).
    pub throttle: Option<ThrottleSettings>,
    pub faults: Option<FaultPlan>,
    /// The Kubernetes API the operator works against.
    pub kubernetes: Kubernetes,
    /// The operator binary.
    pub binary: PathBuf,
    /// Give up waiting for Ready after this long.
    pub timeout: Duration,
    /// Run the steady-state resync window after all are Ready.
    pub steady_state: bool,
    /// BlobRestores created (one per instance, from the first) once all are Ready.
    pub restores: usize,
    /// Where the operator's logs go.
    pub work_dir: PathBuf,
}

/// The Kubernetes API of a run.
#[derive(Clone, Debug)]
pub enum Kubernetes {
    /// The in-memory stand-in ([`FakeApiServer`]), which counts every request.
    FakeApiServer,
    /// A real API server (etcd and kube-apiserver) started from this `KUBEBUILDER_ASSETS`
    /// directory ([`Envtest`]), with `crds/` installed.
    Envtest(PathBuf),
    /// A real cluster (the CRD is applied to it).
    Kubeconfig(PathBuf),
}

/// Everything measured; field names are the JSON keys the issue asks for.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub instances: usize,
    /// Resources that reached Ready.
    pub ready: usize,
    /// Of those, not Ready when the run ended (a transient Azure failure on a resync).
    pub not_ready_at_end: usize,
    pub seconds_to_all_ready: f64,
    pub seconds_to_half_ready: f64,
    pub lower_bound_seconds: f64,
    pub time_ratio: f64,
    /// Azure requests to converge, per instance: all requests until every resource was
    /// Ready, less the resync GETs of the resources that were Ready already.
    pub azure_requests_per_instance: f64,
    pub azure_requests_per_instance_with_resyncs: f64,
    pub resync_gets_during_run: u64,
    pub azure_requests_by_operation_per_instance: BTreeMap<String, f64>,
    pub minimum_requests_per_instance: f64,
    pub request_ratio: f64,
    pub throttled_429: u64,
    pub injected_faults: u64,
    /// Counted by the fake apiserver; on a real API server, by the operator's own metrics
    /// (`bbo_status_writes_total`, `bbo_metadata_writes_total`, `bbo_events_total`).
    pub status_writes_per_instance: Option<f64>,
    pub metadata_writes_per_instance: Option<f64>,
    pub events_per_instance: Option<f64>,
    /// The operator's peak resident memory over the run (steady state included).
    pub peak_rss_mib: f64,
    /// Its peak once ready with no resource yet, and until all were Ready (before the steady
    /// state's resync): where the memory went.
    pub peak_rss_mib_idle: f64,
    pub peak_rss_mib_until_ready: f64,
    pub cpu_seconds: f64,
    pub steady_state_seconds: Option<f64>,
    pub steady_state_writes: Option<u64>,
    pub steady_state_gets: Option<u64>,
    pub steady_state_status_writes: Option<u64>,
    /// From spawning a fresh operator, with the N resources Ready, to `/readyz` and to its
    /// first finished reconcile (`bbo_reconcile_total`); measured after the steady state.
    pub startup_to_ready_seconds: Option<f64>,
    pub startup_to_first_reconcile_seconds: Option<f64>,
    /// Deleting the N resources on a real API server, until the finalizers let them go
    /// (`cleanup_error` says why it did not finish).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cleanup_seconds: Option<f64>,
    /// Of those, until the API server had accepted a DELETE of each resource.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cleanup_deletes_sent_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cleanup_error: Option<String>,
    pub settings: RunSettings,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicate_writes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unexplained_stuck: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub panics: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restarts: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unexpected_exits: Option<usize>,
    /// With restores: how many, how many Succeeded, seconds from their creation until all
    /// had, and Azure requests per restore against the minimum.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restores: Option<RestoreReport>,
    /// Resources that never reached Ready, with their Ready reason (at most 20).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_ready: Vec<String>,
}

/// What the restores of a run measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RestoreReport {
    pub restores: usize,
    pub succeeded: usize,
    pub seconds_to_all_succeeded: f64,
    pub azure_requests_per_restore: f64,
    pub minimum_requests_per_restore: f64,
}

/// The knobs of the run, echoed in the report.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RunSettings {
    pub subscriptions: usize,
    pub latency_ms: u64,
    pub retry_after_seconds: u64,
    pub write_budget: Option<u32>,
    pub write_refill_per_second: Option<f64>,
    pub concurrency: usize,
    pub resync_seconds: f64,
    pub fault_share: f64,
    pub cluster: String,
}

/// A directory for the operator's logs: removed when the guard drops, unless `BBO_KEEP_LOGS`
/// is set (then its path is printed).
pub fn work_dir() -> anyhow::Result<(Option<tempfile::TempDir>, PathBuf)> {
    let dir = tempfile::Builder::new().prefix("bbo-converge-").tempdir()?;
    if std::env::var_os("BBO_KEEP_LOGS").is_some() {
        let path = dir.keep();
        eprintln!("operator logs in {}", path.display());
        return Ok((None, path));
    }
    let path = dir.path().to_owned();
    Ok((Some(dir), path))
}

/// The time the emulator's latency, `Retry-After` and write buckets allow at best, for
/// `instances` spread over `subscriptions` (as [`run`] spreads them: round robin).
///
/// Each instance needs two operations in sequence (validate, then PUT); the controller may
/// not look at an operation before `max(latency, Retry-After)` has passed, so one instance
/// takes at least `2 × P`. Each subscription has its own bucket: the one with the most
/// instances, `n = ⌈N / S⌉`, sends `2n` writes; a bucket of `B` tokens refilled at `r` per
/// second lets write `k` go no earlier than `(k − B) / r`, and the last write (a PUT) still
/// needs `P` to finish: `(2n − B) / r + P`. The bound is the larger of the two. Concurrency
/// does not enter: operations in flight hold no worker.
pub fn lower_bound(
    instances: usize,
    subscriptions: usize,
    latency: Duration,
    retry_after: Duration,
    throttle: Option<&ThrottleSettings>,
) -> f64 {
    let p = latency.max(retry_after).as_secs_f64();
    (2.0 * p).max(paced(2, instances, subscriptions, p, throttle))
}

/// The time the last of `per_instance` writes of each of `instances` (spread over
/// `subscriptions`) can finish, when its operation takes `p`, through a bucket per
/// subscription: `(k − B) / r + P` for the busiest one's `k` writes; 0 when its burst holds
/// them all.
fn paced(
    per_instance: usize,
    instances: usize,
    subscriptions: usize,
    p: f64,
    throttle: Option<&ThrottleSettings>,
) -> f64 {
    let writes = (per_instance * instances.div_ceil(subscriptions.max(1))) as f64;
    throttle
        .filter(|t| t.refill_per_second > 0.0 && writes > f64::from(t.budget))
        .map_or(0.0, |t| {
            (writes - f64::from(t.budget)) / t.refill_per_second + p
        })
}

/// How long deleting the resources of a run may take on a real API server: one DELETE each
/// through the subscriptions' delete buckets (the size of the write buckets) and its
/// operation, twice over for the API server's own work, plus a minute.
fn cleanup_wait(options: &Options, retry_after: Duration) -> Duration {
    let p = options.latency.max(retry_after).as_secs_f64();
    let deletes = paced(
        1,
        options.instances,
        options.subscriptions,
        p,
        options.throttle.as_ref(),
    )
    .max(p);
    Duration::from_secs_f64(2.0 * deletes + 60.0)
}

/// The subscription of resource `index` (from 1): `0000000s-0000-…` for `s` in
/// `0..subscriptions`, the first being the emulator's default subscription.
fn subscription(index: usize, subscriptions: usize) -> String {
    let s = (index - 1) % subscriptions.max(1);
    format!("{s:08x}{}", &DEFAULT_SUBSCRIPTION[8..])
}

/// The vault of a subscription: the emulator's default vault, moved to it.
fn vault_id(subscription: &str) -> String {
    DEFAULT_VAULT_ID.replace(DEFAULT_SUBSCRIPTION, subscription)
}

fn account_id(index: usize, subscriptions: usize) -> String {
    format!(
        "/subscriptions/{}/resourceGroups/RG-BlobBackup/providers/Microsoft.Storage/storageAccounts/bbisa{index:05}",
        subscription(index, subscriptions)
    )
}

fn instance_name(index: usize) -> String {
    format!("bbi-{index:05}")
}

/// A restore of instance `index` to `point` (a time it has been protected at).
fn restore(index: usize, point: jiff::Timestamp) -> BlobRestore {
    let mut object = BlobRestore::new(
        &format!("bbr-{index:05}"),
        BlobRestoreSpec {
            backup_instance_ref: BackupInstanceRef {
                name: instance_name(index),
            },
            point_in_time: Some(point.to_string()),
            recovery_point: None,
            containers: None,
            prefixes: None,
            target_storage_account: None,
        },
    );
    object.metadata.namespace = Some(NAMESPACE.to_owned());
    object
}

fn resource(index: usize, subscriptions: usize) -> BlobBackupInstance {
    let mut object = BlobBackupInstance::new(
        &instance_name(index),
        BlobBackupInstanceSpec {
            vault: VaultRef {
                id: vault_id(&subscription(index, subscriptions)),
            },
            policy: PolicyRef {
                name: Some("BlobBackup-Policy".to_owned()),
                id: None,
            },
            storage_account: StorageAccountRef {
                id: account_id(index, subscriptions),
                location: "westus".to_owned(),
            },
            backup_instance_name: None,
            vaulted_backup: None,
            deletion_policy: DeletionPolicy::Delete,
        },
    );
    object.metadata.namespace = Some(NAMESPACE.to_owned());
    object
}

// ---------------------------------------------------------------------------------------------
// Kubernetes: the fake apiserver or a real cluster
// ---------------------------------------------------------------------------------------------

enum Cluster {
    Fake(FakeApiServer),
    Real {
        client: kube::Client,
        /// The API server the run started, stopped when dropped.
        _envtest: Option<Box<Envtest>>,
    },
}

impl Cluster {
    async fn start(options: &Options) -> anyhow::Result<(Self, kube::Client, PathBuf)> {
        let kubeconfig = options.work_dir.join("kubeconfig");
        match &options.kubernetes {
            Kubernetes::Envtest(assets) => {
                let env = Envtest::start(assets, real_cluster::envtest_options()).await?;
                env.ensure_namespace(NAMESPACE).await?;
                env.write_kubeconfig(&kubeconfig, Identity::Admin)?;
                let client = env.client_in(Identity::Admin, NAMESPACE).await?;
                Ok((
                    Self::Real {
                        client: client.clone(),
                        _envtest: Some(Box::new(env)),
                    },
                    client,
                    kubeconfig,
                ))
            }
            Kubernetes::FakeApiServer => {
                let fake = FakeApiServer::start_with(FakeApiOptions {
                    record_requests: false,
                    ..FakeApiOptions::default()
                })
                .await?;
                fake.write_kubeconfig(&kubeconfig)?;
                let client = fake.client_in(NAMESPACE)?;
                Ok((Self::Fake(fake), client, kubeconfig))
            }
            Kubernetes::Kubeconfig(path) => {
                let config = kube::config::Kubeconfig::read_from(path)?;
                let config =
                    kube::Config::from_custom_kubeconfig(config, &Default::default()).await?;
                let client = kube::Client::try_from(config)?;
                install_crd(&client).await?;
                let namespaces: Api<k8s_openapi::api::core::v1::Namespace> =
                    Api::all(client.clone());
                let namespace = serde_json::json!({
                    "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}
                });
                namespaces
                    .patch(
                        NAMESPACE,
                        &PatchParams::apply("bbo-bench").force(),
                        &Patch::Apply(namespace),
                    )
                    .await?;
                Ok((
                    Self::Real {
                        client: client.clone(),
                        _envtest: None,
                    },
                    client,
                    path.clone(),
                ))
            }
        }
    }

    async fn create<K>(&self, objects: Vec<K>) -> anyhow::Result<()>
    where
        K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Serialize
            + serde::de::DeserializeOwned
            + Clone
            + std::fmt::Debug,
    {
        match self {
            Self::Fake(fake) => {
                for object in objects {
                    fake.create(serde_json::to_value(&object)?).map_err(|e| {
                        anyhow::anyhow!("create {}: {}", object.name_any(), e.message)
                    })?;
                }
                Ok(())
            }
            Self::Real { client, .. } => {
                let api: Api<K> = Api::namespaced(client.clone(), NAMESPACE);
                all_answered(objects, |object| {
                    let api = api.clone();
                    async move { api.create(&PostParams::default(), &object).await }
                })
                .await?;
                Ok(())
            }
        }
    }

    /// What the report calls it.
    fn describe(&self) -> String {
        match self {
            Self::Fake(_) => "fake apiserver".to_owned(),
            Self::Real {
                _envtest: Some(env),
                ..
            } => format!("envtest (kube-apiserver {})", env.version()),
            Self::Real { _envtest: None, .. } => "kubeconfig".to_owned(),
        }
    }

    /// How many BlobRestores have Succeeded.
    async fn restores_succeeded(&self) -> anyhow::Result<usize> {
        let phases: Vec<Option<RestorePhase>> = match self {
            Self::Fake(fake) => fake
                .list("blobrestores")
                .into_iter()
                .map(|o| serde_json::from_value(o["status"]["phase"].clone()).ok())
                .collect(),
            Self::Real { client, .. } => Api::<BlobRestore>::namespaced(client.clone(), NAMESPACE)
                .list(&Default::default())
                .await?
                .items
                .into_iter()
                .map(|r| r.status.and_then(|s| s.phase))
                .collect(),
        };
        Ok(phases
            .iter()
            .filter(|p| **p == Some(RestorePhase::Succeeded))
            .count())
    }

    fn fake(&self) -> Option<&FakeApiServer> {
        match self {
            Self::Fake(fake) => Some(fake),
            Self::Real { .. } => None,
        }
    }

    /// Kubernetes writes so far as the fake apiserver counted them: (status writes,
    /// main-resource writes, event writes); `None` on a real API server.
    fn write_counts(&self) -> Option<KubeWrites> {
        let fake = self.fake()?;
        let count = |resource: &str, sub: Option<&str>| {
            [Verb::Patch, Verb::Update, Verb::Create]
                .into_iter()
                .map(|verb| fake.request_count(verb, resource, sub))
                .sum::<u64>()
        };
        Some((
            count(PLURAL, Some("status")),
            count(PLURAL, None),
            count("events", None),
        ))
    }

    /// Deletes what the run created on a real cluster (the operator must still run), waiting
    /// at most `wait` for the finalizers to let go; how long it took.
    async fn clean_up(&self, wait: Duration) -> anyhow::Result<Cleanup> {
        let Self::Real { client, .. } = self else {
            return Ok(Cleanup::default());
        };
        let started = Instant::now();
        let api: Api<BlobBackupInstance> = Api::namespaced(client.clone(), NAMESPACE);
        // One DELETE each, as they were created: a delete-collection call is
        // served one object at a time (`--delete-collection-workers` is 1 by default), took
        // about the API server's 60 s request timeout at N=3,000, and failed past it, so it
        // measured the API server rather than the operator.
        let names: Vec<String> = api
            .list_metadata(&Default::default())
            .await?
            .items
            .into_iter()
            .map(|object| object.name_any())
            .collect();
        all_answered(names, |name| {
            let api = api.clone();
            async move {
                match api.delete(&name, &DeleteParams::default()).await {
                    Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
                    other => other.map(|_| ()),
                }
            }
        })
        .await?;
        let deletes_sent = started.elapsed();
        // Listed at least once, however long the deletes took. One name a look: a full list
        // of thousands every half second would load the API server the operator is using.
        let any_left = ListParams::default().limit(1);
        loop {
            if api.list_metadata(&any_left).await?.items.is_empty() {
                return Ok(Cleanup {
                    deletes_sent,
                    gone: started.elapsed(),
                });
            }
            if started.elapsed() >= wait {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let left = api.list_metadata(&Default::default()).await?.items.len();
        bail!(
            "{left} resources in namespace {NAMESPACE} were still there after {:.0} s (sized from N and the delete budget; --timeout-seconds does not change it)",
            wait.as_secs_f64()
        )
    }
}

/// Requests the harness has in flight at once to a real API server (creates, deletes).
const IN_FLIGHT: usize = 32;

/// `call` for each of `items`, [`IN_FLIGHT`] at a time; the first error once all have answered.
async fn all_answered<T, R, F>(
    items: impl IntoIterator<Item = T>,
    call: impl FnMut(T) -> F,
) -> Result<(), kube::Error>
where
    F: std::future::Future<Output = Result<R, kube::Error>>,
{
    let results: Vec<_> = futures::stream::iter(items)
        .map(call)
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    results
        .into_iter()
        .try_for_each(|result| result.map(|_| ()))
}

/// How long deleting every resource took.
#[derive(Clone, Copy, Debug, Default)]
struct Cleanup {
    /// Until the API server had accepted every DELETE.
    deletes_sent: Duration,
    /// Until the last resource was gone (its finalizer removed).
    gone: Duration,
}

async fn install_crd(client: &kube::Client) -> anyhow::Result<()> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in [BlobBackupInstance::crd(), BlobRestore::crd()] {
        install(&crds, crd).await?;
    }
    Ok(())
}

async fn install(
    crds: &Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>,
    crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> anyhow::Result<()> {
    let name = crd.name_any();
    crds.patch(
        &name,
        &PatchParams::apply("bbo-bench").force(),
        &Patch::Apply(crd),
    )
    .await?;
    for _ in 0..100 {
        let established = crds.get(&name).await?.status.is_some_and(|s| {
            s.conditions
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        });
        if established {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("CRD {name} was not established within 10 seconds")
}

// ---------------------------------------------------------------------------------------------
// Watching the resources
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, Default)]
struct Seen {
    ready: bool,
    /// Reconciling=True or Stalled=True: the resource says why it is not Ready.
    explained: bool,
    reason: String,
}

fn seen(object: &BlobBackupInstance) -> Seen {
    let generation = object.metadata.generation;
    let conditions = object
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let is_true = |type_: &str| {
        conditions.iter().any(|c| {
            c.type_ == type_
                && c.status == ConditionStatus::True
                && (c.observed_generation.is_none() || c.observed_generation == generation)
        })
    };
    let reason = conditions
        .iter()
        .find(|c| c.type_ == condition_type::READY)
        .map_or_else(|| "no Ready condition".to_owned(), |c| c.reason.clone());
    Seen {
        ready: is_true(condition_type::READY),
        explained: is_true(condition_type::RECONCILING) || is_true(condition_type::STALLED),
        reason,
    }
}

#[derive(Default)]
struct Tracker {
    objects: HashMap<String, Seen>,
    /// The resources seen Ready, each with its backup instance's id and the GETs of it the
    /// emulator had served then (`None`: no id in its status): every GET after that is a
    /// resync.
    ready: HashMap<String, Option<(String, u64)>>,
}

impl Tracker {
    /// Resources that have reached Ready (a later transient failure may have turned them
    /// Ready=False again; they are still counted).
    fn reached_ready(&self) -> usize {
        self.ready.len()
    }
}

fn watch(
    api: Api<BlobBackupInstance>,
    tracker: Arc<Mutex<Tracker>>,
    emulator: vault_emulator::EmulatorAdmin,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(event) = stream.next().await {
            let Ok(Event::Apply(object) | Event::InitApply(object)) = event else {
                continue;
            };
            let state = seen(&object);
            let mut tracker = tracker.lock().unwrap_or_else(|e| e.into_inner());
            let name = object.name_any();
            if state.ready && !tracker.ready.contains_key(&name) {
                // Ready is written after the GET that found the instance protected, and a
                // resync comes a whole --resync-interval later: read here, the count holds
                // every GET that made the resource Ready and no resync.
                let served = object
                    .status
                    .as_ref()
                    .and_then(|s| s.backup_instance_id.clone())
                    .map(|id| {
                        let gets = emulator.gets_served(&id);
                        (id, gets)
                    });
                tracker.ready.insert(name.clone(), served);
            }
            tracker.objects.insert(name, state);
        }
    })
}

// ---------------------------------------------------------------------------------------------
// The operator process
// ---------------------------------------------------------------------------------------------

struct Operator {
    binary: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log_dir: PathBuf,
    child: Option<tokio::process::Child>,
    logs: Vec<PathBuf>,
    peak_rss_kib: u64,
    cpu_ticks_done: u64,
    unexpected_exits: usize,
    http: reqwest::Client,
    metrics_port: u16,
    /// When the running copy was spawned.
    spawned: Instant,
    /// Kubernetes writes counted by copies killed before this one.
    writes_before: KubeWrites,
}

/// Kubernetes writes: status, metadata (finalizer), Events.
type KubeWrites = (u64, u64, u64);

/// The sum of the samples of the series `name` (any labels) in a Prometheus text exposition.
fn metric_sum(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// `(VmHWM in KiB, utime + stime in ticks)` of a live process.
fn process_stats(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some((hwm, ticks))
}

impl Operator {
    fn new(options: &Options, kubeconfig: &Path, arm_endpoint: &str) -> anyhow::Result<Self> {
        dataprotection::install_crypto_provider();
        let mut args = vec![
            "run".to_owned(),
            "--arm-endpoint".to_owned(),
            arm_endpoint.to_owned(),
            "--azure-auth".to_owned(),
            "static-token".to_owned(),
            "--concurrency".to_owned(),
            options.concurrency.to_string(),
            "--resync-interval".to_owned(),
            humantime::format_duration(options.resync).to_string(),
            // Convergence, not tenancy: every vault open (the grants tier has its own tests).
            "--vault-access".to_owned(),
            "open".to_owned(),
        ];
        match options.kubernetes {
            Kubernetes::FakeApiServer => {}
            Kubernetes::Kubeconfig(_) => {
                args.extend(["--watch-namespace".to_owned(), NAMESPACE.to_owned()]);
            }
            // envtest's kube-apiserver is v1.19, older than the operator supports.
            Kubernetes::Envtest(_) => args.extend(
                [
                    "--watch-namespace",
                    NAMESPACE,
                    "--allow-unsupported-kubernetes",
                ]
                .map(str::to_owned),
            ),
        }
        // The operator is told the subscription's write budget, as it would be told a real
        // subscription's: the emulator's bucket when it throttles, else ARM's defaults. In a
        // fault run it is told twice the refill rate, as when another client shares the
        // subscription: the writes left that Azure reports keep it near the budget but not
        // under it, so 429s and the recovery from them are part of the run.
        if let Some(throttle) = &options.throttle {
            let rate_factor = if options.faults.is_some() { 2.0 } else { 1.0 };
            args.extend([
                "--azure-write-burst".to_owned(),
                throttle.budget.to_string(),
                "--azure-write-rate".to_owned(),
                (throttle.refill_per_second * rate_factor).to_string(),
            ]);
        }
        let env = vec![
            ("KUBECONFIG".to_owned(), kubeconfig.display().to_string()),
            ("AZURE_ACCESS_TOKEN".to_owned(), DEFAULT_TOKEN.to_owned()),
            (
                "RUST_LOG".to_owned(),
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_owned()),
            ),
        ];
        Ok(Self {
            binary: options.binary.clone(),
            args,
            env,
            log_dir: options.work_dir.clone(),
            child: None,
            logs: Vec::new(),
            peak_rss_kib: 0,
            cpu_ticks_done: 0,
            unexpected_exits: 0,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()?,
            metrics_port: 0,
            spawned: Instant::now(),
            writes_before: (0, 0, 0),
        })
    }

    /// Spawns the operator and waits until its `/readyz` answers 200.
    async fn start(&mut self) -> anyhow::Result<()> {
        self.spawn()?;
        self.until_started(false).await.map(|_| ())
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        self.metrics_port = free_port()?;
        let log = self
            .log_dir
            .join(format!("operator-{}.log", self.logs.len() + 1));
        let file = std::fs::File::create(&log)?;
        let mut command = tokio::process::Command::new(&self.binary);
        command
            .args(&self.args)
            .args([
                "--metrics-addr",
                &format!("127.0.0.1:{}", self.metrics_port),
            ])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env_remove("BBO_WATCH_NAMESPACE")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .kill_on_drop(true);
        self.spawned = Instant::now();
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {}", self.binary.display()))?;
        self.child = Some(child);
        self.logs.push(log);
        Ok(())
    }

    /// Looks every 5 ms, from the spawn, until `/readyz` answers 200 and (with `reconciled`)
    /// `bbo_reconcile_total` is above 0, each looked at until it first holds: how long after
    /// the spawn `/readyz` first answered 200, and the first reconcile ended. Neither waits
    /// for the other (reconciles may start before the watch has listed everything).
    async fn until_started(
        &mut self,
        reconciled: bool,
    ) -> anyhow::Result<(Duration, Option<Duration>)> {
        let url = format!("http://127.0.0.1:{}/readyz", self.metrics_port);
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut ready = None;
        let mut first_reconcile = None;
        while Instant::now() < deadline {
            if ready.is_none()
                && let Ok(response) = self.http.get(&url).send().await
                && response.status().is_success()
            {
                ready = Some(self.spawned.elapsed());
            }
            if reconciled
                && first_reconcile.is_none()
                && let Ok(text) = self.metrics().await
                && metric_sum(&text, "bbo_reconcile_total") > 0
            {
                first_reconcile = Some(self.spawned.elapsed());
            }
            if let Some(ready) = ready
                && (!reconciled || first_reconcile.is_some())
            {
                return Ok((ready, first_reconcile));
            }
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "the operator exited during start-up ({status}); see {}",
                    self.logs
                        .last()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        match ready {
            None => bail!("the operator did not become ready within 60 s at {url}"),
            Some(_) => bail!("the restarted operator finished no reconcile within 60 s"),
        }
    }

    fn sample(&mut self) -> u64 {
        let Some(pid) = self.child.as_ref().and_then(|c| c.id()) else {
            return 0;
        };
        match process_stats(pid) {
            Some((hwm, ticks)) => {
                self.peak_rss_kib = self.peak_rss_kib.max(hwm);
                ticks
            }
            None => 0,
        }
    }

    /// Restarts the operator if it died by itself (counted as an unexpected exit).
    async fn check_alive(&mut self) -> anyhow::Result<()> {
        let exited = match self.child.as_mut() {
            Some(child) => child.try_wait()?.is_some(),
            None => false,
        };
        if exited {
            self.unexpected_exits += 1;
            self.child = None;
            self.start().await?;
        }
        Ok(())
    }

    /// The running copy's `/metrics`.
    async fn metrics(&self) -> anyhow::Result<String> {
        let url = format!("http://127.0.0.1:{}/metrics", self.metrics_port);
        Ok(self.http.get(&url).send().await?.text().await?)
    }

    /// Kubernetes writes as the operator counted them, over all its copies.
    async fn kube_writes(&self) -> anyhow::Result<KubeWrites> {
        let text = if self.child.is_some() {
            self.metrics().await?
        } else {
            String::new()
        };
        let (status, metadata, events) = self.writes_before;
        Ok((
            status + metric_sum(&text, "bbo_status_writes_total"),
            metadata + metric_sum(&text, "bbo_metadata_writes_total"),
            events + metric_sum(&text, "bbo_events_total"),
        ))
    }

    /// Spawns a fresh copy and measures its start: until `/readyz`, and until its first
    /// reconcile has finished (polled every 5 ms).
    async fn restart_timed(&mut self) -> anyhow::Result<(Duration, Duration)> {
        self.kill().await?;
        self.spawn()?;
        match self.until_started(true).await? {
            (ready, Some(first_reconcile)) => Ok((ready, first_reconcile)),
            (_, None) => bail!("until_started(true) returned without a first reconcile"),
        }
    }

    /// SIGKILL, after taking its memory, CPU and Kubernetes write figures.
    async fn kill(&mut self) -> anyhow::Result<()> {
        if self.child.is_some()
            && let Ok(writes) = self.kube_writes().await
        {
            self.writes_before = writes;
        }
        let ticks = self.sample();
        if let Some(mut child) = self.child.take() {
            self.cpu_ticks_done += ticks;
            child.kill().await?;
        }
        Ok(())
    }

    fn cpu_seconds(&mut self) -> f64 {
        let live = self.sample();
        (self.cpu_ticks_done + live) as f64 / USER_HZ
    }

    fn panics(&self) -> usize {
        self.logs
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .map(|text| text.matches("panicked at").count())
            .sum()
    }
}

// ---------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------

fn emulator_config(options: &Options) -> EmulatorConfig {
    let default = EmulatorConfig::default();
    let vaults = (1..=options.subscriptions.max(1))
        .flat_map(|i| {
            default.vaults.iter().map(move |vault| VaultConfig {
                id: vault_id(&subscription(i, options.subscriptions)),
                ..vault.clone()
            })
        })
        .collect();
    let mut config = EmulatorConfig {
        vaults,
        storage_accounts: (1..=options.instances)
            .map(|i| StorageAccountConfig {
                id: account_id(i, options.subscriptions),
                location: "westus".to_owned(),
                // None: every configured vault holds the backup role on it.
                role_assignments: None,
            })
            .collect(),
        ..EmulatorConfig::default()
    };
    config.behavior.latency = options.latency;
    config.behavior.throttle = options.throttle.clone();
    if let Some(plan) = &options.faults {
        // 500, 503 and dropped connections in equal parts.
        config.behavior.faults = FaultSettings {
            seed: plan.seed,
            internal_error: plan.share / 3.0,
            unavailable: plan.share / 3.0,
            drop_connection: plan.share / 3.0,
            ..FaultSettings::default()
        };
    }
    config
}

type Counts = BTreeMap<String, BTreeMap<u16, u64>>;

/// Kubernetes writes so far: the fake apiserver's counts, or on a real API server, the
/// operator's own metrics (`None` if they cannot be read).
async fn kube_writes(cluster: &Cluster, operator: &Operator) -> Option<KubeWrites> {
    match cluster.write_counts() {
        Some(counts) => Some(counts),
        None => operator.kube_writes().await.ok(),
    }
}

fn total(counts: &Counts, filter: impl Fn(&str, u16) -> bool) -> u64 {
    counts
        .iter()
        .flat_map(|(op, by_status)| by_status.iter().map(move |(s, n)| (op.as_str(), *s, *n)))
        .filter(|(op, status, _)| filter(op, *status))
        .map(|(_, _, n)| n)
        .sum()
}

/// The restores' own requests among `counts` (any status: 429s and faults are requests too),
/// comparable with [`MINIMUM_REQUESTS_PER_RESTORE`]: see [`RESTORE_OPERATIONS`].
fn restore_requests(counts: &Counts) -> u64 {
    total(counts, |op, _| RESTORE_OPERATIONS.contains(&op))
}

/// Runs one measurement; errors are set-up failures, not unmet targets.
pub async fn run(options: &Options) -> anyhow::Result<Report> {
    std::fs::create_dir_all(&options.work_dir)?;
    let n = options.instances;
    let emulator = RunningEmulator::start(emulator_config(options), "127.0.0.1:0".parse()?)
        .await
        .context("cannot start the vault emulator")?;
    let admin = emulator.admin().clone();
    let behavior = admin.behavior();
    let retry_after = Duration::from_secs(behavior.operation_retry_after());
    let (cluster, client, kubeconfig) = Cluster::start(options).await?;
    let endpoint = emulator.base_url().to_string();
    let mut operator = Operator::new(options, &kubeconfig, endpoint.trim_end_matches('/'))?;
    operator.start().await?;
    operator.sample();
    let idle_rss_kib = operator.peak_rss_kib;

    let tracker = Arc::new(Mutex::new(Tracker::default()));
    let watch_task = watch(
        Api::namespaced(client.clone(), NAMESPACE),
        tracker.clone(),
        admin.clone(),
    );

    let mut rng = fastrand::Rng::with_seed(options.faults.as_ref().map_or(0, |f| f.seed));
    let draw = |rng: &mut fastrand::Rng, plan: &FaultPlan| {
        let (low, high) = plan.kill_after;
        low + (high.saturating_sub(low)).mul_f64(rng.f64())
    };
    let mut next_kill = options
        .faults
        .as_ref()
        .map(|plan| Instant::now() + draw(&mut rng, plan));
    let mut restarts = 0;

    let started = Instant::now();
    cluster
        .create(
            (1..=n)
                .map(|i| resource(i, options.subscriptions))
                .collect(),
        )
        .await?;
    let deadline = started + options.timeout;
    let mut half_ready = None;
    let all_ready = loop {
        let ready = tracker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .reached_ready();
        if half_ready.is_none() && ready * 2 >= n {
            half_ready = Some(started.elapsed());
        }
        if ready == n {
            operator.sample();
            break Some(started.elapsed());
        }
        if Instant::now() >= deadline {
            break None;
        }
        if let (Some(plan), Some(at)) = (&options.faults, next_kill)
            && Instant::now() >= at
        {
            operator.kill().await?;
            operator.start().await?;
            restarts += 1;
            next_kill = (restarts < plan.restarts).then(|| Instant::now() + draw(&mut rng, plan));
        }
        operator.check_alive().await?;
        operator.sample();
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Kills still due happen now, so a fault run always has its restarts.
    while let Some(plan) = &options.faults
        && restarts < plan.restarts
    {
        tokio::time::sleep(draw(&mut rng, plan)).await;
        operator.kill().await?;
        operator.start().await?;
        restarts += 1;
    }
    // Resources Ready early are resynced (one GET each --resync-interval) while the rest
    // converge: the GETs the emulator served each instance since its resource was seen Ready,
    // read at the same moment as the counts.
    let (counts, resync_gets) = {
        let tracker = tracker.lock().unwrap_or_else(|e| e.into_inner());
        let (counts, gets_now) = admin.request_counts_and_gets_served(
            tracker.ready.values().flatten().map(|(id, _)| id.as_str()),
        );
        let gets_at_ready: u64 = tracker.ready.values().flatten().map(|(_, gets)| gets).sum();
        (counts, gets_now.saturating_sub(gets_at_ready))
    };
    let k8s_writes = kube_writes(&cluster, &operator).await;
    let until_ready_rss_kib = operator.peak_rss_kib;
    // A second PUT or DELETE of an instance while its operation runs: the operator lost track
    // of the operation it started.
    let duplicate_writes = options.faults.as_ref().map(|_| {
        admin
            .in_flight_writes()
            .iter()
            .filter(|(operation, _)| DUPLICATE_SENSITIVE.contains(&operation.as_str()))
            .map(|(_, count)| count)
            .sum::<u64>()
    });

    // Steady state: one resync period with nothing changed.
    let steady = if options.steady_state && all_ready.is_some() {
        admin.reset_counts();
        let before = kube_writes(&cluster, &operator).await;
        let window = Instant::now();
        tokio::time::sleep(options.resync).await;
        let counts = admin.request_counts();
        let after = kube_writes(&cluster, &operator).await;
        Some((
            window.elapsed().as_secs_f64(),
            total(&counts, |op, _| WRITE_OPERATIONS.contains(&op)),
            total(&counts, |op, _| GET_OPERATIONS.contains(&op)),
            before.zip(after).map(|(b, a)| a.0 - b.0),
        ))
    } else {
        None
    };

    let restores = if options.restores > 0 && all_ready.is_some() {
        Some(run_restores(options, &cluster, &admin).await?)
    } else {
        None
    };

    // (name, state now, whether it ever was Ready)
    let snapshot: Vec<(String, Seen, bool)> = {
        let tracker = tracker.lock().unwrap_or_else(|e| e.into_inner());
        tracker
            .objects
            .iter()
            .map(|(k, v)| (k.clone(), v.clone(), tracker.ready.contains_key(k)))
            .collect()
    };
    let ready = snapshot.iter().filter(|(_, _, reached)| *reached).count();
    let not_ready_at_end = snapshot.iter().filter(|(_, s, _)| !s.ready).count();
    let mut not_ready: Vec<String> = snapshot
        .iter()
        .filter(|(_, _, reached)| !reached)
        .map(|(name, s, _)| format!("{name}: {}", s.reason))
        .collect();
    // Objects the watch never saw are stuck without any explanation.
    let unseen = n.saturating_sub(snapshot.len());
    let unexplained = snapshot
        .iter()
        .filter(|(_, s, reached)| !reached && !s.explained)
        .count()
        + unseen;
    not_ready.sort();
    not_ready.truncate(20);

    let cpu_seconds = operator.cpu_seconds();
    let mib = |kib: u64| kib as f64 / 1024.0;
    let peak_rss_mib = mib(operator.peak_rss_kib);
    // A fresh copy with every resource there: how soon it reconciles.
    let startup = if all_ready.is_some() {
        Some(operator.restart_timed().await?)
    } else {
        None
    };
    let panics = operator.panics();
    let cleanup = match options.kubernetes {
        Kubernetes::FakeApiServer => None,
        _ => Some(
            cluster
                .clean_up(cleanup_wait(options, retry_after))
                .await
                .map_err(|error| format!("{error:#}")),
        ),
    };
    operator.kill().await?;
    watch_task.abort();

    let per = |x: u64| x as f64 / n as f64;
    let azure_total = total(&counts, |_, _| true);
    let seconds = all_ready.unwrap_or(options.timeout).as_secs_f64();
    let bound = lower_bound(
        n,
        options.subscriptions,
        options.latency,
        retry_after,
        options.throttle.as_ref(),
    );
    let per_instance = per(azure_total.saturating_sub(resync_gets));
    let by_operation = counts
        .iter()
        .map(|(op, by_status)| (op.clone(), per(by_status.values().sum())))
        .collect();
    let faulted = options.faults.is_some();
    let report = Report {
        instances: n,
        ready,
        not_ready_at_end,
        seconds_to_all_ready: seconds,
        seconds_to_half_ready: half_ready.map_or(seconds, |d| d.as_secs_f64()),
        lower_bound_seconds: bound,
        time_ratio: seconds / bound,
        azure_requests_per_instance: per_instance,
        azure_requests_per_instance_with_resyncs: per(azure_total),
        resync_gets_during_run: resync_gets,
        azure_requests_by_operation_per_instance: by_operation,
        minimum_requests_per_instance: MINIMUM_REQUESTS_PER_INSTANCE,
        request_ratio: per_instance / MINIMUM_REQUESTS_PER_INSTANCE,
        throttled_429: total(&counts, |_, status| status == 429),
        injected_faults: total(&counts, |_, status| matches!(status, 0 | 500 | 503)),
        status_writes_per_instance: k8s_writes.map(|w| per(w.0)),
        metadata_writes_per_instance: k8s_writes.map(|w| per(w.1)),
        events_per_instance: k8s_writes.map(|w| per(w.2)),
        peak_rss_mib,
        peak_rss_mib_idle: mib(idle_rss_kib),
        peak_rss_mib_until_ready: mib(until_ready_rss_kib),
        cpu_seconds,
        steady_state_seconds: steady.map(|s| s.0),
        steady_state_writes: steady.map(|s| s.1),
        steady_state_gets: steady.map(|s| s.2),
        steady_state_status_writes: steady.and_then(|s| s.3),
        startup_to_ready_seconds: startup.map(|s| s.0.as_secs_f64()),
        startup_to_first_reconcile_seconds: startup.map(|s| s.1.as_secs_f64()),
        cleanup_seconds: cleanup
            .as_ref()
            .and_then(|c| c.as_ref().ok())
            .map(|c| c.gone.as_secs_f64()),
        cleanup_deletes_sent_seconds: cleanup
            .as_ref()
            .and_then(|c| c.as_ref().ok())
            .map(|c| c.deletes_sent.as_secs_f64()),
        cleanup_error: cleanup.and_then(Result::err),
        settings: RunSettings {
            subscriptions: options.subscriptions,
            latency_ms: options.latency.as_millis() as u64,
            retry_after_seconds: retry_after.as_secs(),
            write_budget: options.throttle.as_ref().map(|t| t.budget),
            write_refill_per_second: options.throttle.as_ref().map(|t| t.refill_per_second),
            concurrency: options.concurrency,
            resync_seconds: options.resync.as_secs_f64(),
            fault_share: options.faults.as_ref().map_or(0.0, |f| f.share),
            cluster: cluster.describe(),
        },
        duplicate_writes,
        unexplained_stuck: faulted.then_some(unexplained),
        panics: faulted.then_some(panics),
        restarts: faulted.then_some(restarts),
        unexpected_exits: faulted.then_some(operator.unexpected_exits),
        restores,
        not_ready,
    };
    emulator.shutdown().await;
    if let Cluster::Fake(fake) = cluster {
        fake.shutdown().await;
    }
    Ok(report)
}

/// Creates `options.restores` BlobRestores (of the first instances, to a second after all
/// were Ready: in every instance's restorable range) and waits until all have Succeeded.
async fn run_restores(
    options: &Options,
    cluster: &Cluster,
    admin: &vault_emulator::EmulatorAdmin,
) -> anyhow::Result<RestoreReport> {
    let n = options.restores.min(options.instances);
    // Restorable ranges start at a whole second after protection started.
    let point = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    admin.reset_counts();
    let started = Instant::now();
    cluster
        .create((1..=n).map(|i| restore(i, point)).collect())
        .await?;
    let deadline = started + options.timeout;
    let mut succeeded = 0;
    while succeeded < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        succeeded = cluster.restores_succeeded().await?;
    }
    let per_restore = restore_requests(&admin.request_counts()) as f64 / n.max(1) as f64;
    Ok(RestoreReport {
        restores: n,
        succeeded,
        seconds_to_all_succeeded: started.elapsed().as_secs_f64(),
        azure_requests_per_restore: per_restore,
        minimum_requests_per_restore: MINIMUM_REQUESTS_PER_RESTORE,
    })
}

/// The report as an aligned two-column table.
pub fn table(report: &Report) -> String {
    let mut rows: Vec<(String, String)> = Vec::new();
    let mut row = |k: &str, v: String| rows.push((k.to_owned(), v));
    let opt = |v: Option<f64>| v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.2}"));
    let s = &report.settings;
    row(
        "emulator",
        format!(
            "{} subscription(s), latency {} ms, Retry-After {} s, write bucket {} each, faults {:.0}%",
            s.subscriptions,
            s.latency_ms,
            s.retry_after_seconds,
            match (s.write_budget, s.write_refill_per_second) {
                (Some(b), Some(r)) => format!("{b} + {r}/s"),
                _ => "off".to_owned(),
            },
            s.fault_share * 100.0
        ),
    );
    row(
        "operator",
        format!(
            "--concurrency {} --resync-interval {}s; {}",
            s.concurrency, s.resync_seconds, s.cluster
        ),
    );
    row(
        "instances (reached Ready; not Ready at end)",
        format!(
            "{} ({}; {})",
            report.instances, report.ready, report.not_ready_at_end
        ),
    );
    row(
        "seconds to all Ready (half)",
        format!(
            "{:.2} ({:.2})",
            report.seconds_to_all_ready, report.seconds_to_half_ready
        ),
    );
    row(
        "lower bound seconds",
        format!("{:.2}", report.lower_bound_seconds),
    );
    row("time ratio", format!("{:.3}", report.time_ratio));
    row(
        "Azure requests / instance",
        format!(
            "{:.3} (minimum {})",
            report.azure_requests_per_instance, report.minimum_requests_per_instance
        ),
    );
    row(
        "  with resync GETs of Ready ones",
        format!(
            "{:.3} ({} resync GETs)",
            report.azure_requests_per_instance_with_resyncs, report.resync_gets_during_run
        ),
    );
    for (op, per) in &report.azure_requests_by_operation_per_instance {
        row(&format!("  {op}"), format!("{per:.3}"));
    }
    row("request ratio", format!("{:.3}", report.request_ratio));
    row("429s provoked", report.throttled_429.to_string());
    row(
        "injected faults (500/503/drop)",
        report.injected_faults.to_string(),
    );
    row(
        "status writes / instance",
        opt(report.status_writes_per_instance),
    );
    row(
        "metadata writes / instance",
        opt(report.metadata_writes_per_instance),
    );
    row("event writes / instance", opt(report.events_per_instance));
    row(
        "peak RSS MiB (idle; until all Ready)",
        format!(
            "{:.1} ({:.1}; {:.1})",
            report.peak_rss_mib, report.peak_rss_mib_idle, report.peak_rss_mib_until_ready
        ),
    );
    row("CPU seconds", format!("{:.2}", report.cpu_seconds));
    let num = |v: Option<u64>| v.map_or_else(|| "n/a".to_owned(), |v| v.to_string());
    row("steady state (window s)", opt(report.steady_state_seconds));
    row("  Azure writes", num(report.steady_state_writes));
    row("  Azure GETs", num(report.steady_state_gets));
    row("  status writes", num(report.steady_state_status_writes));
    row(
        "restart: s to /readyz (first reconcile)",
        format!(
            "{} ({})",
            opt(report.startup_to_ready_seconds),
            opt(report.startup_to_first_reconcile_seconds)
        ),
    );
    if let Some(seconds) = report.cleanup_seconds {
        row(
            "cleanup seconds (of which sending the deletes)",
            format!(
                "{seconds:.2} ({})",
                opt(report.cleanup_deletes_sent_seconds)
            ),
        );
    }
    if let Some(error) = &report.cleanup_error {
        row("cleanup failed", error.clone());
    }
    if let Some(d) = report.duplicate_writes {
        row("duplicate writes in flight", d.to_string());
    }
    for (key, value) in [
        ("unexplained stuck", report.unexplained_stuck),
        ("panics", report.panics),
        ("restarts", report.restarts),
        ("unexpected exits", report.unexpected_exits),
    ] {
        if let Some(v) = value {
            row(key, v.to_string());
        }
    }
    if let Some(r) = &report.restores {
        row(
            "restores (Succeeded)",
            format!("{} ({})", r.restores, r.succeeded),
        );
        row(
            "  seconds to all Succeeded",
            format!("{:.2}", r.seconds_to_all_succeeded),
        );
        row(
            "  Azure requests / restore (minimum)",
            format!(
                "{:.2} ({})",
                r.azure_requests_per_restore, r.minimum_requests_per_restore
            ),
        );
    }
    for name in &report.not_ready {
        row("not ready", name.clone());
    }
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(k, v)| format!("{k:<width$}  {v}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_of_a_spread_is_that_of_its_busiest_subscription() {
        let second = Duration::from_secs(1);
        let arm = ThrottleSettings {
            budget: 200,
            refill_per_second: 10.0,
        };
        let bound = |n, s| lower_bound(n, s, second, second, Some(&arm));
        // BENCHMARKS.md's figures: (2000 - 200) / 10 + 1, and 2 × P when the burst holds all.
        assert_eq!(bound(1000, 1), 181.0);
        assert_eq!(bound(100, 1), 2.0);
        // 1,000 over 4: 250 each, (500 - 200) / 10 + 1; over 3, the busiest has 334.
        assert_eq!(bound(1000, 4), 31.0);
        assert_eq!(bound(1000, 3), (668.0 - 200.0) / 10.0 + 1.0);
        // Round robin puts resource i in subscription (i - 1) mod S.
        assert_eq!(subscription(1, 4), DEFAULT_SUBSCRIPTION);
        assert_eq!(subscription(6, 4), "00000001-0000-0000-0000-000000000000");
        assert_eq!(subscription(12, 12), "0000000b-0000-0000-0000-000000000000");
    }

    #[test]
    fn kubernetes_writes_are_read_from_the_operators_metrics() {
        let text = "# TYPE bbo_events_total counter\n\
            bbo_events_total{reason=\"Protected\"} 3\n\
            bbo_events_total{reason=\"Deleted\"} 2\n\
            bbo_status_writes_total 7\n\
            bbo_status_writes_total_created 1.7e9\n\
            # EOF\n";
        assert_eq!(metric_sum(text, "bbo_events_total"), 5);
        assert_eq!(metric_sum(text, "bbo_status_writes_total"), 7);
        assert_eq!(metric_sum(text, "bbo_metadata_writes_total"), 0);
    }

    #[test]
    fn the_cleanup_wait_follows_n_and_the_delete_budget() {
        let options = |instances, subscriptions| Options {
            instances,
            subscriptions,
            latency: Duration::from_secs(1),
            concurrency: 16,
            resync: Duration::from_secs(10),
            throttle: Some(ThrottleSettings {
                budget: 200,
                refill_per_second: 10.0,
            }),
            faults: None,
            kubernetes: Kubernetes::FakeApiServer,
            binary: PathBuf::new(),
            timeout: Duration::from_secs(1),
            steady_state: true,
            work_dir: PathBuf::new(),
            restores: 0,
        };
        let wait = |n, s| cleanup_wait(&options(n, s), Duration::from_secs(1)).as_secs_f64();
        // 3,000 deletes: (3000 - 200) / 10 + 1 = 281 s, twice, plus a minute; not 2 minutes.
        assert_eq!(wait(3000, 1), 622.0);
        assert_eq!(wait(3000, 4), 2.0 * 56.0 + 60.0);
        assert_eq!(wait(100, 1), 62.0);
    }

    /// A restore's own requests, as the emulator counts them during the restores: the resync
    /// GETs of the Ready instances meanwhile are not the restores'.
    #[test]
    fn requests_per_restore_leave_out_the_resyncs_meanwhile() {
        let counts: Counts = [
            (ops::GET, [(200, 100)].as_slice()),
            (ops::FIND_RESTORABLE_TIME_RANGES, &[(200, 2)]),
            (ops::VALIDATE_FOR_RESTORE, &[(202, 2)]),
            (ops::TRIGGER_RESTORE, &[(202, 2)]),
            (ops::OPERATION_STATUS, &[(200, 4), (429, 1)]),
            (ops::JOBS_GET, &[(200, 2)]),
        ]
        .into_iter()
        .map(|(op, by_status)| (op.to_owned(), by_status.iter().copied().collect()))
        .collect();
        assert_eq!(restore_requests(&counts), 13);
        let with_points: Counts =
            [(ops::RECOVERY_POINTS_LIST.to_owned(), [(200, 1)].into())].into();
        assert_eq!(restore_requests(&with_points), 1);
    }
}
