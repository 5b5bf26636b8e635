//! The shared state of all reconciles of `BlobBackupInstance` resources ([`Context`]), and the
//! real world of the loop ([`KubeEffects`]: the Kubernetes API and ARM).

use std::sync::Arc;

use jiff::Timestamp;
use kube::api::Api;
use kube::runtime::events::Reporter;
use kube::runtime::reflector::ObjectRef;
use kube::{Client, Resource, ResourceExt};
use tracing::{debug, warn};

use super::decide::{Action, AzureCall, EventSpec, Observation, Requeue, Settings, has_finalizer};
use super::events::Events;
use super::grants::VaultGrants;
use super::state::States;
use super::status::StatusWriter;
use super::steps::{self, Effects};
use super::{Error, REPORTING_CONTROLLER, azure, finalizer, leader, pacing, requeue};
use crate::api::{BlobBackupInstance, BlobBackupInstanceStatus, FINALIZER};
use crate::telemetry::Metrics;
use dataprotection::ArmClient;

/// Shared state of all reconciles.
pub struct Context {
    pub(super) client: Client,
    arm: ArmClient,
    pub(super) metrics: Metrics,
    events: Events,
    pub(super) settings: Settings,
    states: States<BlobBackupInstance>,
    writes: Arc<pacing::WritePacer>,
    pub(super) requeues: Arc<requeue::Requeues<BlobBackupInstance>>,
    fence: leader::Fence,
    pub(super) grants: VaultGrants,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// The context of [`super::reconcile`]: Kubernetes and Azure clients, metrics, decision
    /// settings, the copy of Azure's write budgets (`writes`, shared with the BlobRestore
    /// controller), Events reported as [`REPORTING_CONTROLLER`] (`reporting_instance`: the pod).
    pub fn new(
        client: Client,
        arm: ArmClient,
        metrics: Metrics,
        settings: Settings,
        writes: Arc<pacing::WritePacer>,
        reporting_instance: Option<String>,
    ) -> Self {
        let reporter = Reporter {
            controller: REPORTING_CONTROLLER.to_owned(),
            instance: reporting_instance,
        };
        Self {
            events: Events::new(client.clone(), reporter),
            client,
            arm,
            metrics,
            settings,
            states: States::new(has_finalizer),
            writes,
            requeues: Arc::default(),
            fence: leader::Fence::default(),
            grants: VaultGrants::open(),
        }
    }

    /// The context serving only what `grants` allow (`--vault-access grants`); without this,
    /// every resource is served.
    pub fn with_grants(mut self, grants: VaultGrants) -> Self {
        self.grants = grants;
        self
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

    /// The effects of one reconcile of the resource `key` in `api`'s namespace.
    pub(super) fn effects(
        &self,
        api: Api<BlobBackupInstance>,
        key: ObjectRef<BlobBackupInstance>,
    ) -> KubeEffects<'_> {
        KubeEffects {
            ctx: self,
            api,
            key,
            remaining: None,
        }
    }

    /// A conflict: the next reconcile of `key` reads the resource afresh.
    pub(super) fn read_fresh_next(&self, key: &ObjectRef<BlobBackupInstance>) {
        self.states.read_fresh_next(key);
    }

    /// Forgets a resource that is gone, everywhere it is kept: its record, its requeue, the
    /// slot it waits for in the write budget. The one call for it: a new per-resource map is
    /// forgotten here. (Its gauges are counted from the watch's store: nothing to forget
    /// there.)
    pub(super) fn forget(&self, key: &ObjectRef<BlobBackupInstance>) {
        self.states.forget(key);
        self.requeues.cancel(key);
        self.writes.forget(&pacing::slot_key(key));
    }

    /// Schedules the resource's next reconcile (see [`requeue`]).
    pub(super) fn requeue(&self, key: &ObjectRef<BlobBackupInstance>, requeue: Requeue) {
        match requeue {
            Requeue::After(delay) => self.requeues.schedule(key, delay),
            Requeue::AwaitChange => self.requeues.cancel(key),
        }
    }
}

/// The loop's effects on the Kubernetes API and Azure, for one reconcile of one resource.
pub struct KubeEffects<'a> {
    ctx: &'a Context,
    api: Api<BlobBackupInstance>,
    key: ObjectRef<BlobBackupInstance>,
    /// What the answer to this reconcile's last Azure write said is left of the budget it
    /// spent: its own answer's figure, which no other reconcile sees.
    remaining: Option<u64>,
}

impl KubeEffects<'_> {
    fn status_writer(&self) -> StatusWriter<'_, BlobBackupInstance> {
        StatusWriter {
            api: &self.api,
            key: &self.key,
            states: &self.ctx.states,
            metrics: &self.ctx.metrics,
        }
    }

    /// The resource to reconcile: the watch cache's copy, unless it is older than our own
    /// last write (see [`States::is_stale`]), then a fresh read. `None` when it is gone.
    pub(super) async fn current(
        &self,
        cached: &BlobBackupInstance,
    ) -> Result<Option<BlobBackupInstance>, Error> {
        if !self.ctx.states.is_stale(&self.key, cached) {
            return Ok(Some(cached.clone()));
        }
        debug!("the watch cache is behind our last write; reading the resource");
        let fresh = self
            .api
            .get_opt(&cached.name_any())
            .await
            .map_err(Error::Read)?;
        match &fresh {
            Some(fresh) => self.ctx.states.remember_write(&self.key, fresh),
            None => self.ctx.states.read_gone(&self.key),
        }
        Ok(fresh)
    }

    /// An operation sent but not recorded: records it before anything is decided (see
    /// [`StatusWriter::write_unwritten`]).
    pub(super) async fn write_unwritten(
        &self,
        obj: &BlobBackupInstance,
    ) -> Result<Option<BlobBackupInstance>, Error> {
        self.status_writer().write_unwritten(obj).await
    }
}

impl Effects for KubeEffects<'_> {
    type Admission = pacing::Admission;

    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    fn leads(&self) -> bool {
        let leads = self.ctx.fence.holds();
        if !leads {
            warn!("the leader term ended: no more Azure writes from this replica");
        }
        leads
    }

    fn admit_write(
        &mut self,
        budget: &pacing::BudgetKey,
    ) -> Result<pacing::Admission, std::time::Duration> {
        self.ctx.writes.admit(
            budget,
            &pacing::slot_key(&self.key),
            tokio::time::Instant::now(),
        )
    }

    async fn write_status(
        &mut self,
        obj: &BlobBackupInstance,
        precious: bool,
    ) -> Result<BlobBackupInstance, Error> {
        self.status_writer().write(obj, precious).await
    }

    fn keep_status(
        &mut self,
        obj: &BlobBackupInstance,
        persisted: Option<&BlobBackupInstanceStatus>,
    ) {
        if let Some(status) = &obj.status {
            self.ctx
                .states
                .keep(&self.key, obj, persisted, steps::kept_part(status));
        }
    }

    fn take_kept(&mut self, obj: &BlobBackupInstance) -> Option<BlobBackupInstanceStatus> {
        // Taken only while the API still holds the status it was kept over.
        let part = self.ctx.states.take_kept(&self.key, obj)?;
        Some(steps::with_kept_part(obj.status.as_ref(), part))
    }

    fn remember_unsent(&mut self, obj: &BlobBackupInstance) {
        self.ctx.states.remember_unsent(&self.key, obj);
    }

    fn take_unsent(&mut self, obj: &BlobBackupInstance) -> bool {
        self.ctx.states.take_unsent(&self.key, obj)
    }

    async fn add_finalizer(
        &mut self,
        obj: &BlobBackupInstance,
    ) -> Result<BlobBackupInstance, Error> {
        let updated = finalizer::add(&self.api, obj, FINALIZER)
            .await
            .map_err(Error::AddFinalizer)?;
        self.ctx.metrics.record_metadata_write();
        self.ctx.states.remember_write(&self.key, &updated);
        Ok(updated)
    }

    async fn remove_finalizer(&mut self, obj: &BlobBackupInstance) -> Result<(), Error> {
        finalizer::remove(&self.api, obj, FINALIZER)
            .await
            .map_err(Error::RemoveFinalizer)?;
        // Counted as one write also when there was nothing to remove or the resource was gone.
        self.ctx.metrics.record_metadata_write();
        self.ctx.forget(&self.key);
        Ok(())
    }

    async fn publish(&mut self, obj: &BlobBackupInstance, events: &[EventSpec]) {
        if events.is_empty() {
            return;
        }
        let reference = obj.object_ref(&());
        let metrics = &self.ctx.metrics;
        self.ctx
            .events
            .publish_all(&reference, events, metrics)
            .await;
    }

    async fn call_azure(&mut self, action: &Action) -> Option<Observation> {
        let performed = azure::perform(&self.ctx.arm, action).await?;
        self.remaining = performed.remaining;
        Some(performed.observation)
    }

    fn answered(
        &mut self,
        obj: &BlobBackupInstance,
        observation: &Observation,
        admission: Option<pacing::Admission>,
    ) {
        let ctx = self.ctx;
        if matches!(observation, Observation::Instance(_)) {
            ctx.metrics.record_check(obj);
        }
        if let Some(operation) = azure::throttled_operation(observation) {
            ctx.metrics.record_throttling_wait(operation);
        }
        if let Some(admission) = &admission {
            // This write's own answer's figure of the writes left in the budget it spent, and
            // whether Azure throttled it.
            let throttled = match observation {
                Observation::Failed {
                    call: AzureCall::Start(_),
                    error,
                } => azure::throttled_for(error, ctx.settings.timing.retry_after_min),
                _ => None,
            };
            ctx.writes.answered(
                admission,
                self.remaining.take(),
                throttled,
                tokio::time::Instant::now(),
            );
        }
    }
}

/// A Kubernetes and an ARM client that never connect, for tests of what the controllers keep
/// (the contexts need clients; nothing calls out). Inside a Tokio runtime.
#[cfg(test)]
pub(super) fn offline_clients() -> (Client, ArmClient) {
    use dataprotection::{ArmConfig, AuthConfig};
    dataprotection::install_crypto_provider();
    let nowhere = "http://127.0.0.1:9";
    let client = Client::try_from(kube::Config::new(nowhere.parse().unwrap())).expect("a client");
    let http = dataprotection::default_http_client().unwrap();
    let credential =
        dataprotection::credential(&AuthConfig::fixed_token("token"), http.clone()).unwrap();
    let config = ArmConfig::new(nowhere.parse().unwrap(), "2025-09-01");
    let arm = ArmClient::new(config, http, credential, None).unwrap();
    (client, arm)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::api::BlobRestore;
    use dataprotection::WriteKind;

    /// A context whose clients never connect (nothing here calls out), with a write budget
    /// of one write: the second waits in a slot.
    fn context() -> Context {
        let (client, arm) = offline_clients();
        let second = Duration::from_secs(1);
        let writes = Arc::new(pacing::WritePacer::new(1, second, second));
        Context::new(
            client,
            arm,
            Metrics::new(),
            Settings::default(),
            writes,
            None,
        )
    }

    /// `key` remembered in every per-resource map: a record, a requeue, a slot it waits for.
    fn remember_everywhere(ctx: &Context, key: &ObjectRef<BlobBackupInstance>) {
        let mut obj = BlobBackupInstance::new(
            &key.name,
            serde_json::from_value(serde_json::json!({
                "vault": {"id": ""}, "policy": {}, "storageAccount": {"id": "", "location": ""}
            }))
            .unwrap(),
        );
        obj.metadata.uid = Some(format!("uid-{}", key.name));
        ctx.states.remember_write(key, &obj);
        ctx.requeue(key, Requeue::After(Duration::from_secs(60)));
        let budget = pacing::BudgetKey::new("s", WriteKind::Writes);
        let now = tokio::time::Instant::now();
        let _ = ctx.writes.admit(&budget, "someone else", now);
        assert!(
            ctx.writes
                .admit(&budget, &pacing::slot_key(key), now)
                .is_err()
        );
    }

    /// Everything kept of a resource, in the three maps.
    fn kept(ctx: &Context) -> (usize, usize, usize) {
        (ctx.states.len(), ctx.requeues.len(), ctx.writes.waiting())
    }

    #[tokio::test(start_paused = true)]
    async fn a_deleted_resource_leaves_nothing_behind() {
        let ctx = context();
        let key = ObjectRef::new("gone").within("ns");
        remember_everywhere(&ctx, &key);
        assert_eq!(kept(&ctx), (1, 1, 1));
        ctx.forget(&key);
        assert_eq!(kept(&ctx), (0, 0, 0));

        // Another kind's slot of the same name stays.
        tokio::time::advance(Duration::from_secs(5)).await;
        remember_everywhere(&ctx, &key);
        let restore = pacing::slot_key(&ObjectRef::<BlobRestore>::new("gone").within("ns"));
        let budget = pacing::BudgetKey::new("s", WriteKind::Writes);
        assert!(
            ctx.writes
                .admit(&budget, &restore, tokio::time::Instant::now())
                .is_err()
        );
        ctx.forget(&key);
        assert_eq!(kept(&ctx), (0, 0, 1), "the BlobRestore's slot stays");
    }
}
