//! The controller test harness: the in-memory Kubernetes API ([`FakeApiServer`]) and the vault
//! emulator over HTTP, with helpers to create `BlobBackupInstance` resources, run the real
//! controller against them and wait for conditions (never sleeps).
//!
//! The free functions below (the emulator, the ARM client, the controller task, the resource
//! body, conditions, events, recorded clients) serve this harness and the real-API-server one
//! ([`crate::real_cluster`]) alike.
//!
//! Timings are shortened (operations take ~100 ms in the emulator, the controller's waits are
//! clamped to a few hundred ms).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use blob_backup_operator::api::FINALIZER;
use blob_backup_operator::controller::decide::Timing;
use blob_backup_operator::controller::grants::VaultAccess;
use blob_backup_operator::controller::leader::{
    LeaderElectionConfig, LeaderElectionError, LeaderOutcome, run_as_leader,
};
use blob_backup_operator::controller::{self, ControllerConfig};
use blob_backup_operator::telemetry::{ExpositionFormat, HealthState, Metrics};
use dataprotection::{ArmClient, ArmConfig, AuthConfig};
use http::Method;
use serde_json::{Value, json};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use vault_emulator::{
    EmulatorConfig, PolicyConfig, PolicyTier, RunningEmulator, StorageAccountConfig,
};

use crate::fake_apiserver::{FakeApiServer, Verb};

pub const NS: &str = "team-a";
pub const RESOURCE: &str = "blobbackupinstances";
pub const SUB: &str = "00000000-0000-0000-0000-000000000000";
pub const VAULT: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/TestBkpVaultRG/providers/Microsoft.DataProtection/backupVaults/testBkpVault";
pub const OTHER_VAULT: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/OtherRG/providers/Microsoft.DataProtection/backupVaults/otherVault";
pub const ACCOUNT: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/RG-BlobBackup/providers/Microsoft.Storage/storageAccounts/msblobbackup";
/// Long enough for a loaded 2-core machine; scenarios normally take a second or two.
pub const WAIT: Duration = Duration::from_secs(20);

/// The ARM id of storage account `name` in the article's resource group.
pub fn account(name: &str) -> String {
    format!(
        "/subscriptions/{SUB}/resourceGroups/RG-BlobBackup/providers/Microsoft.Storage/storageAccounts/{name}"
    )
}

/// Adds storage accounts `names` (westus, the vault's role granted) to `config`.
pub fn add_accounts(config: &mut EmulatorConfig, names: &[&str]) {
    config
        .storage_accounts
        .extend(names.iter().map(|name| StorageAccountConfig {
            id: account(name),
            location: "westus".to_owned(),
            role_assignments: None,
        }));
}

/// The article's world plus a second operational policy and a few more storage accounts,
/// with operations that take `latency`.
pub fn emulator_config(latency: Duration) -> EmulatorConfig {
    let mut config = EmulatorConfig::default();
    config.behavior.latency = latency;
    config.vaults[0].policies.push(PolicyConfig {
        name: "BlobBackup-Policy2".to_owned(),
        tier: PolicyTier::Operational,
    });
    add_accounts(&mut config, &["vaultedacct", "orphanacct"]);
    config
}

/// Decision timings shortened for tests (resync once a minute: never within a test).
pub fn test_timing() -> Timing {
    Timing {
        resync_interval: Duration::from_secs(60),
        stalled_retry_base: Duration::from_millis(200),
        stalled_retry_max: Duration::from_millis(400),
        retry_after_min: Duration::from_millis(50),
        retry_after_max: Duration::from_millis(200),
        retry_after_default: Duration::from_millis(100),
        protection_poll: Duration::from_millis(100),
    }
}

/// The controller's settings in the tests' namespace, reporting Events as `instance`.
pub fn controller_config(timing: Timing, instance: &str) -> ControllerConfig {
    controller_config_in(NS, timing, instance)
}

/// The controller's settings watching `namespace`, reporting Events as `instance`.
pub fn controller_config_in(namespace: &str, timing: Timing, instance: &str) -> ControllerConfig {
    ControllerConfig {
        watch_namespace: Some(namespace.to_owned()),
        concurrency: 4,
        timing,
        reporting_instance: Some(instance.to_owned()),
        // Scenarios of other behaviour: every vault open, and a cluster id without reading
        // kube-system (the grant scenarios set their own).
        vault_access: VaultAccess::Open,
        cluster_id: Some(TEST_CLUSTER.to_owned()),
        ..ControllerConfig::default()
    }
}

/// The cluster id of the test controllers' owner tags.
pub const TEST_CLUSTER: &str = "test-cluster";

pub struct RunningController {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// Starts the emulator with `config` on a free loopback port.
pub async fn start_emulator(config: EmulatorConfig) -> RunningEmulator {
    dataprotection::install_crypto_provider();
    RunningEmulator::start(config, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .expect("emulator starts")
}

/// An ARM client for `emulator` whose requests count in `metrics`.
pub fn arm_client(emulator: &RunningEmulator, api_version: &str, metrics: &Metrics) -> ArmClient {
    let http = dataprotection::default_http_client().unwrap();
    let auth = AuthConfig::fixed_token(emulator.token());
    let credential = dataprotection::credential(&auth, http.clone()).unwrap();
    let config = ArmConfig::new(emulator.base_url(), api_version);
    ArmClient::new(config, http, credential, Some(Arc::new(metrics.clone()))).unwrap()
}

/// Spawns the real controller (`controller::run`) with `client` and `arm`.
pub fn spawn_controller(
    client: kube::Client,
    arm: ArmClient,
    config: ControllerConfig,
    metrics: &Metrics,
) -> RunningController {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(controller::run(
        client,
        arm,
        config,
        metrics.clone(),
        HealthState::default(),
        async move {
            let _ = stopped.await;
        },
    ));
    RunningController { stop, task }
}

/// A `BlobBackupInstance` named `name` in `namespace` with `spec`.
pub fn resource(name: &str, namespace: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "dataprotection.blobbackup.io/v1alpha1",
        "kind": "BlobBackupInstance",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    })
}

/// The reasons of `events`, oldest first.
pub fn reasons(mut events: Vec<Value>) -> Vec<String> {
    events.sort_by_key(|e| e["eventTime"].as_str().unwrap_or_default().to_owned());
    events
        .iter()
        .map(|e| e["reason"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The note of the first of `events` with `reason` (empty when there is none).
pub fn note(events: &[Value], reason: &str) -> String {
    events
        .iter()
        .find(|e| e["reason"] == reason)
        .and_then(|e| e["note"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// What a wait for condition `type_` = `status` (`reason`) looks for, and how it reads.
pub fn condition_check(
    type_: &str,
    status: &str,
    reason: &str,
) -> (String, impl Fn(&Value) -> bool + Send + Sync + 'static) {
    let what = format!("{type_}={status} ({reason})");
    let (type_, status, reason) = (type_.to_owned(), status.to_owned(), reason.to_owned());
    let check = move |o: &Value| {
        condition(o, &type_).is_some_and(|c| c["status"] == *status && c["reason"] == *reason)
    };
    (what, check)
}

/// Waits on a `BlobBackupInstance` in the test's namespace, the same way on the in-memory API
/// ([`Harness`]) and on the real server ([`crate::real_cluster::RealCluster`]).
// The waits run on the test's own runtime, never spawned, so their futures need not be Send.
#[allow(async_fn_in_trait)]
pub trait ResourceWaits {
    /// Waits until resource `name` satisfies `done`, and returns it; after [`WAIT`], panics
    /// naming `what` and showing the resource and its events.
    fn wait_for(
        &self,
        name: &str,
        what: &str,
        done: impl Fn(&Value) -> bool + Send + Sync,
    ) -> impl Future<Output = Value>;

    async fn wait_condition(&self, name: &str, type_: &str, status: &str, reason: &str) -> Value {
        let (what, check) = condition_check(type_, status, reason);
        self.wait_for(name, &what, check).await
    }

    async fn wait_ready(&self, name: &str) -> Value {
        self.wait_condition(name, "Ready", "True", "ProtectionConfigured")
            .await
    }
}

impl ResourceWaits for Harness {
    fn wait_for(
        &self,
        name: &str,
        what: &str,
        done: impl Fn(&Value) -> bool + Send + Sync,
    ) -> impl Future<Output = Value> {
        Harness::wait_for(self, name, what, done)
    }
}

impl RunningController {
    /// Asks for a graceful shutdown and waits until `run` has returned.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("run returns after shutdown")
            .expect("the controller task does not panic");
    }

    /// Kills the controller mid-flight, as a crash or a lost node would.
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

pub struct Harness {
    pub api: FakeApiServer,
    pub emulator: RunningEmulator,
    pub metrics: Metrics,
}

impl Harness {
    pub async fn start(config: EmulatorConfig) -> Self {
        let api = FakeApiServer::start().await.expect("fake apiserver starts");
        let emulator = start_emulator(config).await;
        Self {
            api,
            emulator,
            metrics: Metrics::new(),
        }
    }

    /// The world of [`emulator_config`] (operations of 100 ms) plus storage accounts `names`.
    pub async fn with_accounts(names: &[&str]) -> Self {
        let mut config = emulator_config(Duration::from_millis(100));
        add_accounts(&mut config, names);
        Self::start(config).await
    }

    /// An ARM client for the emulator whose requests count in [`Harness::metrics`].
    pub fn arm(&self, api_version: &str) -> ArmClient {
        self.arm_observed_by(api_version, &self.metrics)
    }

    /// An ARM client for the emulator whose requests count in `metrics`.
    pub fn arm_observed_by(&self, api_version: &str, metrics: &Metrics) -> ArmClient {
        arm_client(&self.emulator, api_version, metrics)
    }

    pub fn controller(&self, timing: Timing) -> RunningController {
        self.controller_with(timing, dataprotection::DEFAULT_API_VERSION)
    }

    pub fn controller_with(&self, timing: Timing, api_version: &str) -> RunningController {
        self.controller_configured(controller_config(timing, "test"), api_version)
    }

    /// The real controller configured with `config`, speaking `api_version` to the emulator.
    pub fn controller_configured(
        &self,
        config: ControllerConfig,
        api_version: &str,
    ) -> RunningController {
        spawn_controller(
            self.api.client_in(NS).unwrap(),
            self.arm(api_version),
            config,
            &self.metrics,
        )
    }

    pub fn create(&self, name: &str, spec: Value) -> Value {
        self.api.create(resource(name, NS, spec)).expect("created")
    }

    pub fn get(&self, name: &str) -> Option<Value> {
        self.api.get(RESOURCE, NS, name)
    }

    pub async fn wait_for(
        &self,
        name: &str,
        what: &str,
        done: impl FnMut(&Value) -> bool,
    ) -> Value {
        match self
            .api
            .wait_for_object(RESOURCE, NS, name, WAIT, done)
            .await
        {
            Ok(object) => object,
            Err(_) => panic!(
                "{name}: {what} not reached; now {:#}\nevents: {:?}",
                self.get(name).unwrap_or(Value::Null),
                self.event_reasons(name)
            ),
        }
    }

    /// [`ResourceWaits::wait_condition`], without importing the trait.
    pub async fn wait_condition(
        &self,
        name: &str,
        type_: &str,
        status: &str,
        reason: &str,
    ) -> Value {
        ResourceWaits::wait_condition(self, name, type_, status, reason).await
    }

    /// [`ResourceWaits::wait_ready`], without importing the trait.
    pub async fn wait_ready(&self, name: &str) -> Value {
        ResourceWaits::wait_ready(self, name).await
    }

    pub async fn wait_gone(&self, name: &str) {
        if self
            .api
            .wait_for_absent(RESOURCE, NS, name, WAIT)
            .await
            .is_err()
        {
            panic!(
                "{name} not deleted; now {:#}\nevents: {:?}",
                self.get(name).unwrap_or(Value::Null),
                self.event_reasons(name)
            );
        }
    }

    pub fn event_reasons(&self, name: &str) -> Vec<String> {
        reasons(self.api.events_for(NS, name))
    }

    pub fn event_note(&self, name: &str, reason: &str) -> String {
        note(&self.api.events_for(NS, name), reason)
    }

    /// Requests the emulator has served for Azure operation `operation`.
    pub fn azure(&self, operation: &str) -> u64 {
        self.emulator.admin().request_count(operation)
    }

    pub fn status_writes(&self, name: &str) -> u64 {
        self.api
            .request_count_for(Verb::Patch, RESOURCE, Some("status"), NS, name)
    }

    /// Waits until the metrics show every one of `lines` (they are updated just after the
    /// status write a test waits for).
    pub async fn wait_metrics(&self, lines: &[&str]) {
        let text = || {
            self.metrics
                .encode(ExpositionFormat::PrometheusText)
                .unwrap()
        };
        let found = self
            .api
            .wait_for(WAIT, |_| lines.iter().all(|line| text().contains(line)))
            .await;
        assert!(found.is_ok(), "{lines:?} not all in\n{}", text());
    }
}

/// Whether the resource's status records the intent of a PUT of its new instance, not yet
/// answered: the controller writes it before the PUT is sent (the PUT's poll URL stays in its
/// memory until the next status write).
pub fn put_intended(object: &Value) -> bool {
    object["status"]["operation"]["action"] == "Create"
        && object["status"]["operation"]["status"] == "Pending"
}

/// Waits until `done` holds, looking every 20 ms, for what no watch reports (the emulator's
/// request counts); panics naming `what` after [`WAIT`].
pub async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} not reached within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A future that completes once `stop` holds `true` (or its sender is gone): a shutdown signal
/// that can be handed to several tasks, as `run` hands SIGTERM to the election and the controller.
pub fn stopped(stop: &watch::Receiver<bool>) -> impl Future<Output = ()> + use<> {
    let mut stop = stop.clone();
    async move {
        let _ = stop.wait_for(|stop| *stop).await;
    }
}

/// Spawns the operator as `run` wires it: `controller::run` under `run_as_leader` (`election`
/// `None`: leader election off), both stopping once `stop` turns true.
pub fn spawn_operator(
    client: kube::Client,
    arm: ArmClient,
    election: Option<LeaderElectionConfig>,
    config: ControllerConfig,
    metrics: &Metrics,
    health: &HealthState,
    stop: &watch::Receiver<bool>,
) -> JoinHandle<Result<LeaderOutcome<()>, LeaderElectionError>> {
    let work = {
        let (client, metrics, health, stop) = (
            client.clone(),
            metrics.clone(),
            health.clone(),
            stop.clone(),
        );
        move |fence| {
            controller::run(
                client.clone(),
                arm.clone(),
                ControllerConfig {
                    fence,
                    ..config.clone()
                },
                metrics.clone(),
                health.clone(),
                stopped(&stop),
            )
        }
    };
    tokio::spawn(run_as_leader(
        client,
        election,
        metrics.clone(),
        health.clone(),
        stopped(stop),
        work,
    ))
}

/// Name of the leader election Lease replicas share in tests.
pub const LEASE: &str = "blob-backup-operator";
/// The Lease duration of test replicas (renewed with 1 s left).
pub const LEASE_DURATION: Duration = Duration::from_secs(2);

/// One operator process as `run --leader-elect` starts it (`spawn_operator` with an election),
/// with its own recorded Kubernetes client, its own metrics (its ARM client reports there) and
/// its own `reportingInstance`, so every write and Azure call can be traced to it.
pub struct Replica {
    pub name: &'static str,
    pub requests: RequestLog,
    pub metrics: Metrics,
    pub health: HealthState,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<LeaderOutcome<()>, LeaderElectionError>>,
}

impl Replica {
    /// A replica against the in-memory API, its Lease in the tests' namespace.
    pub fn start(h: &Harness, name: &'static str) -> Self {
        Self::spawn(name, h.api.client_in(NS).unwrap(), NS, NS, &h.emulator)
    }

    /// A replica with `client` watching `namespace`, its Lease [`LEASE`] in `lease_namespace`,
    /// Azure being `emulator`.
    pub fn spawn(
        name: &'static str,
        client: kube::Client,
        namespace: &str,
        lease_namespace: &str,
        emulator: &RunningEmulator,
    ) -> Self {
        let config = controller_config_in(namespace, test_timing(), name);
        Self::spawn_with(name, client, namespace, lease_namespace, emulator, config)
    }

    /// [`Replica::spawn`] with the controller's `config` (its namespace is `namespace`'s).
    pub fn spawn_with(
        name: &'static str,
        client: kube::Client,
        namespace: &str,
        lease_namespace: &str,
        emulator: &RunningEmulator,
        config: ControllerConfig,
    ) -> Self {
        let requests = RequestLog::default();
        let client = recording(client, namespace, requests.clone());
        let metrics = Metrics::new();
        let health = HealthState::default();
        let election = LeaderElectionConfig {
            identity: name.to_owned(),
            lease_duration: LEASE_DURATION,
            renew_grace: Duration::from_secs(1),
            ..LeaderElectionConfig::new(lease_namespace, LEASE)
        };
        let (stop, stop_rx) = watch::channel(false);
        let task = spawn_operator(
            client,
            arm_client(emulator, dataprotection::DEFAULT_API_VERSION, &metrics),
            Some(election),
            config,
            &metrics,
            &health,
            &stop_rx,
        );
        Self {
            name,
            requests,
            metrics,
            health,
            stop,
            task,
        }
    }

    pub fn exposition(&self) -> String {
        self.metrics
            .encode(ExpositionFormat::PrometheusText)
            .unwrap()
    }

    pub fn leads(&self) -> bool {
        self.exposition().lines().any(|l| l == "bbo_leader 1")
    }

    /// Whether its ARM client has sent any request at all.
    pub fn called_azure(&self) -> bool {
        self.exposition()
            .lines()
            .any(|l| l.starts_with("bbo_azure_requests_total{"))
    }

    pub async fn shut_down(self) -> LeaderOutcome<()> {
        self.stop.send_replace(true);
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("run_as_leader returns after shutdown")
            .expect("no panic")
            .expect("valid election settings")
    }
}

/// The requests one replica's Kubernetes client sent: method and path.
#[derive(Clone, Default)]
pub struct RequestLog(Arc<Mutex<Vec<(Method, String)>>>);

impl RequestLog {
    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Requests (from the `skip`th on) whose path contains `fragment`.
    pub fn touching(&self, skip: usize, fragment: &str) -> Vec<(Method, String)> {
        self.0.lock().unwrap()[skip..]
            .iter()
            .filter(|(_, path)| path.contains(fragment))
            .cloned()
            .collect()
    }
}

pub fn is_write(method: &Method) -> bool {
    [Method::POST, Method::PUT, Method::PATCH, Method::DELETE].contains(method)
}

/// A client that logs each request before `client` sends it (default namespace `namespace`).
pub fn recording(client: kube::Client, namespace: &str, log: RequestLog) -> kube::Client {
    let service = tower::service_fn(move |request: http::Request<kube::client::Body>| {
        log.0
            .lock()
            .unwrap()
            .push((request.method().clone(), request.uri().path().to_owned()));
        let client = client.clone();
        async move {
            client
                .send(request)
                .await
                .map_err(Box::<dyn std::error::Error + Send + Sync>::from)
        }
    });
    kube::Client::new(service, namespace)
}

pub fn condition<'v>(object: &'v Value, type_: &str) -> Option<&'v Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// The spec of a resource protecting `account_id` in the test vault under `policy`.
pub fn spec(account_id: &str, policy: &str) -> Value {
    json!({
        "vault": {"id": VAULT},
        "policy": {"name": policy},
        "storageAccount": {"id": account_id, "location": "westus"},
    })
}

pub fn has_finalizer(object: &Value) -> bool {
    object["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| f.iter().any(|f| f == FINALIZER))
}
