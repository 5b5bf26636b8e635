//! The real-API-server harness: one `kube-apiserver` + `etcd` per test binary (testkit's
//! envtest launcher, started on first use, `crds/` installed with the CEL rules stripped), a
//! namespace per test, and the vault emulator over HTTP, with the same helpers as the
//! in-memory [`crate::scenario::Harness`] (the controller task, the emulator, conditions, events
//! are the functions both share), made async because they go through the API.
//!
//! [`RealCluster::start`] returns `None` when `KUBEBUILDER_ASSETS` is unset outside CI, after
//! printing that the test was skipped and how to get the binaries; under `CI=true` it panics.

use std::time::{Duration, Instant};

use crate::checkout::repo;
use crate::envtest::{self, Envtest, Identity, Options, ServiceAccount};
use blob_backup_operator::api::BlobBackupInstance;
use blob_backup_operator::controller::ControllerConfig;
use blob_backup_operator::controller::decide::Timing;
use blob_backup_operator::telemetry::Metrics;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use kube::runtime::wait::await_condition;
use serde_json::Value;
use vault_emulator::{EmulatorConfig, RunningEmulator};

use crate::scenario::{
    ResourceWaits, RunningController, WAIT, arm_client, controller_config_in, note, reasons,
    resource, spawn_controller, start_emulator,
};

/// The namespace and name of the operator's ServiceAccount on the shared server (the chart's
/// release name and namespace in the RBAC test).
pub const OPERATOR_NAMESPACE: &str = "blob-backup-operator";
pub const OPERATOR_NAME: &str = "blob-backup-operator";

/// The launcher's settings for this repository: the operator's ServiceAccount and `crds/`.
pub fn envtest_options() -> Options {
    Options {
        service_account: ServiceAccount::new(OPERATOR_NAMESPACE, OPERATOR_NAME),
        crds: vec![
            repo().join("crds/blobbackupinstances.yaml"),
            repo().join("crds/blobrestores.yaml"),
            repo().join("crds/backupvaultgrants.yaml"),
        ],
    }
}

pub struct RealCluster {
    pub env: &'static Envtest,
    /// This test's namespace.
    pub ns: String,
    /// An admin client (`system:masters`) for the test's own reads and writes.
    pub kube: kube::Client,
    pub emulator: RunningEmulator,
    pub metrics: Metrics,
}

impl RealCluster {
    /// The shared server (started on first use), a fresh namespace named after `test`, and an
    /// emulator with `config`; `None` when the tier is skipped.
    pub async fn start(test: &str, config: EmulatorConfig) -> Option<Self> {
        let env = envtest::shared(test, envtest_options).await?;
        let prefix: String = test
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .take(40)
            .collect();
        let ns = env
            .create_namespace(prefix.trim_matches('-'))
            .await
            .expect("test namespace");
        let kube = env
            .client_in(Identity::Admin, &ns)
            .await
            .expect("admin client");
        Some(Self {
            env,
            kube,
            ns,
            emulator: start_emulator(config).await,
            metrics: Metrics::new(),
        })
    }

    /// A client for `identity` whose default namespace is the test's.
    pub async fn client(&self, identity: Identity) -> kube::Client {
        self.env
            .client_in(identity, &self.ns)
            .await
            .expect("client")
    }

    /// The real controller, as admin, watching the test's namespace; its Azure calls count in
    /// [`RealCluster::metrics`].
    pub fn controller(&self, timing: Timing) -> RunningController {
        self.controller_with(controller_config_in(&self.ns, timing, "test"))
    }

    /// The real controller, as admin, with `config`; its Azure calls count in
    /// [`RealCluster::metrics`].
    pub fn controller_with(&self, config: ControllerConfig) -> RunningController {
        spawn_controller(
            self.kube.clone(),
            arm_client(
                &self.emulator,
                dataprotection::DEFAULT_API_VERSION,
                &self.metrics,
            ),
            config,
            &self.metrics,
        )
    }

    fn api(&self) -> Api<DynamicObject> {
        let resource = ApiResource::erase::<BlobBackupInstance>(&());
        Api::namespaced_with(self.kube.clone(), &self.ns, &resource)
    }

    pub async fn create(&self, name: &str, spec: Value) -> Value {
        self.try_create(name, spec)
            .await
            .unwrap_or_else(|e| panic!("create {name}: {e}"))
    }

    /// Creates the resource; the server's refusal as it is.
    pub async fn try_create(&self, name: &str, spec: Value) -> kube::Result<Value> {
        let object: DynamicObject = serde_json::from_value(resource(name, &self.ns, spec)).unwrap();
        let created = self.api().create(&PostParams::default(), &object).await?;
        Ok(serde_json::to_value(created).unwrap())
    }

    pub async fn get(&self, name: &str) -> Option<Value> {
        let object = self.api().get_opt(name).await.expect("get");
        object.map(|o| serde_json::to_value(o).unwrap())
    }

    /// A JSON merge patch of the resource (as `kubectl patch --type=merge`).
    pub async fn merge_patch(&self, name: &str, patch: Value) {
        self.api()
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .unwrap_or_else(|e| panic!("patch {name}: {e}"));
    }

    pub async fn delete(&self, name: &str) {
        self.api()
            .delete(name, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("delete {name}: {e}"));
    }

    /// Waits until the resource is gone (its finalizer removed).
    pub async fn wait_gone(&self, name: &str) {
        let gone = |o: Option<&DynamicObject>| o.is_none();
        if !matches!(
            tokio::time::timeout(WAIT, await_condition(self.api(), name, gone)).await,
            Ok(Ok(_))
        ) {
            panic!(
                "{name} not deleted; now {:#}\nevents: {:?}",
                self.get(name).await.unwrap_or(Value::Null),
                self.event_reasons(name).await
            );
        }
    }

    /// The events.k8s.io/v1 Events about resource `name`, as JSON.
    pub async fn events(&self, name: &str) -> Vec<Value> {
        let events: Api<Event> = Api::namespaced(self.kube.clone(), &self.ns);
        let list = events.list(&ListParams::default()).await.expect("events");
        list.items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .map(|e| serde_json::to_value(e).unwrap())
            .collect()
    }

    pub async fn event_reasons(&self, name: &str) -> Vec<String> {
        reasons(self.events(name).await)
    }

    pub async fn event_note(&self, name: &str, reason: &str) -> String {
        note(&self.events(name).await, reason)
    }

    /// Waits until an Event with `reason` about `name` exists.
    pub async fn wait_event(&self, name: &str, reason: &str) {
        let deadline = Instant::now() + WAIT;
        while !self.event_reasons(name).await.iter().any(|r| r == reason) {
            assert!(
                Instant::now() < deadline,
                "{name}: no {reason} event; events: {:?}",
                self.event_reasons(name).await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Requests the emulator has served for Azure operation `operation`.
    pub fn azure(&self, operation: &str) -> u64 {
        self.emulator.admin().request_count(operation)
    }
}

impl ResourceWaits for RealCluster {
    /// On a watch of the resource.
    async fn wait_for(
        &self,
        name: &str,
        what: &str,
        done: impl Fn(&Value) -> bool + Send + Sync,
    ) -> Value {
        let condition = move |o: Option<&DynamicObject>| {
            o.is_some_and(|o| done(&serde_json::to_value(o).unwrap()))
        };
        match tokio::time::timeout(WAIT, await_condition(self.api(), name, condition)).await {
            Ok(Ok(Some(object))) => serde_json::to_value(object).unwrap(),
            outcome => panic!(
                "{name}: {what} not reached ({outcome:?}); now {:#}\nevents: {:?}",
                self.get(name).await.unwrap_or(Value::Null),
                self.event_reasons(name).await
            ),
        }
    }
}
