//! Leader election over a `coordination.k8s.io/v1` Lease, so that of several replicas only one
//! runs the controller.
//!
//! Built on `kube-lease-manager`: kube 5 has no leader election of its own (kube-runtime offers
//! none), and this crate is maintained, follows kube 5 / k8s-openapi 0.29, takes a free Lease
//! with server-side apply (a racing acquisition gets a conflict instead of overwriting the
//! holder) and renews a grace period before expiry, which also bounds the clock skew tolerated.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kube::Client;
use kube_lease_manager::{LeaseCreateMode, LeaseManager, LeaseParams};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::telemetry::{HealthState, Metrics, Role};

/// Default time a Lease stays valid after its last renewal.
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);
/// Default time before expiry at which the leader renews the Lease.
pub const DEFAULT_RENEW_GRACE: Duration = Duration::from_secs(5);

/// Whether this replica still leads: the end of its leader term on the monotonic clock, moved
/// on by every successful renewal of the Lease. The controller consults it right before every
/// Azure write, so a replica whose renewals hang stops writing before another replica could
/// take the Lease, even before [`run_as_leader`] has dropped its work. Cheap to clone and to
/// check. The default holds forever (leader election off).
#[derive(Clone, Debug, Default)]
pub struct Fence(Option<Arc<FenceState>>);

#[derive(Debug)]
struct FenceState {
    base: Instant,
    /// Nanoseconds after `base` until which the term holds.
    until: AtomicU64,
    /// Set when the term ended: no renewal extends it again.
    closed: AtomicBool,
}

impl Fence {
    /// A fence that does not hold until a renewal extends it.
    fn closed_until_renewed() -> Self {
        Self(Some(Arc::new(FenceState {
            base: Instant::now(),
            until: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        })))
    }

    /// Whether this replica may act as the leader now.
    pub fn holds(&self) -> bool {
        self.deadline()
            .is_none_or(|deadline| Instant::now() < deadline)
    }

    /// When the term ends unless renewed; `None`: never.
    pub fn deadline(&self) -> Option<Instant> {
        let state = self.0.as_ref()?;
        Some(state.base + Duration::from_nanos(state.until.load(Ordering::Acquire)))
    }

    /// Moves the end of the term to `until`, if later and the term has not ended.
    fn extend_to(&self, until: Instant) {
        let Some(state) = &self.0 else { return };
        if state.closed.load(Ordering::Acquire) {
            return;
        }
        // u64 nanoseconds last 584 years.
        let nanos = u64::try_from(until.saturating_duration_since(state.base).as_nanos())
            .unwrap_or(u64::MAX);
        state.until.fetch_max(nanos, Ordering::AcqRel);
    }

    /// Ends the term for good.
    fn close(&self) {
        if let Some(state) = &self.0 {
            state.closed.store(true, Ordering::Release);
            state.until.store(0, Ordering::Release);
        }
    }
}

/// Where and how replicas elect a leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderElectionConfig {
    /// Namespace of the Lease (the operator's own: `POD_NAMESPACE`).
    pub namespace: String,
    /// Name of the Lease, shared by all replicas.
    pub lease_name: String,
    /// This replica's identity, unique among replicas and restarts (see [`Self::default_identity`]).
    pub identity: String,
    /// How long the Lease stays valid after a renewal; a standby takes over at most this long
    /// after the leader dies. Whole seconds.
    pub lease_duration: Duration,
    /// The leader renews when this much validity is left, so renewals happen every
    /// `lease_duration - renew_grace`. A renewal must succeed within the first half of it or
    /// the leader stops (see [`Fence`]); the second half is the clock skew tolerated between
    /// nodes. Whole seconds, shorter than `lease_duration`.
    pub renew_grace: Duration,
}

impl LeaderElectionConfig {
    /// Settings with a fresh [`default_identity`](Self::default_identity) and the default
    /// durations (15s lease, renewed 5s before expiry).
    pub fn new(namespace: impl Into<String>, lease_name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            lease_name: lease_name.into(),
            identity: Self::default_identity(),
            lease_duration: DEFAULT_LEASE_DURATION,
            renew_grace: DEFAULT_RENEW_GRACE,
        }
    }

    /// `<pod name>_<random uuid>`: the pod name (`POD_NAME`, else `HOSTNAME`) says who leads in
    /// `kubectl get lease`, the random part keeps a restarted pod from mistaking its previous
    /// incarnation's Lease for its own.
    pub fn default_identity() -> String {
        let host = ["POD_NAME", "HOSTNAME"]
            .into_iter()
            .find_map(|var| std::env::var(var).ok().filter(|v| !v.trim().is_empty()))
            .unwrap_or_else(|| "blob-backup-operator".to_owned());
        format!("{}_{}", host.trim(), uuid::Uuid::new_v4())
    }

    fn lease_params(&self) -> Result<LeaseParams, LeaderElectionError> {
        let invalid = |message: String| Err(LeaderElectionError::Config(message));
        if self.namespace.is_empty() || self.lease_name.is_empty() || self.identity.is_empty() {
            return invalid("namespace, lease name and identity must not be empty".to_owned());
        }
        let whole_secs = |d: Duration| (d.subsec_nanos() == 0).then_some(d.as_secs());
        let (Some(duration), Some(grace)) = (
            whole_secs(self.lease_duration),
            whole_secs(self.renew_grace),
        ) else {
            return invalid("lease duration and renew grace must be whole seconds".to_owned());
        };
        // LeaseParams::new panics on these, so they are checked here.
        if grace == 0 || duration <= grace || i32::try_from(duration).is_err() {
            return invalid(format!(
                "need 0s < renew grace ({grace}s) < lease duration ({duration}s)"
            ));
        }
        Ok(LeaseParams::new(self.identity.clone(), duration, grace))
    }

    /// How long a term lasts after the renewal that was sent at its start: the renewal is due
    /// `renew_grace` before the Lease expires, and must have succeeded halfway through that
    /// grace, or this replica stops acting before another could take the Lease (the other
    /// half absorbs clock skew and the time to stop).
    fn term(&self) -> Duration {
        self.lease_duration.saturating_sub(self.renew_grace / 2)
    }
}

/// Errors from [`run_as_leader`]. Kubernetes API failures are not among them: they are logged
/// and retried for as long as the process runs.
#[derive(Debug, thiserror::Error)]
pub enum LeaderElectionError {
    /// The settings are unusable (empty names, durations not whole seconds or out of order).
    #[error("invalid leader election settings: {0}")]
    Config(String),
}

/// How [`run_as_leader`] ended.
#[derive(Debug, PartialEq, Eq)]
pub enum LeaderOutcome<T> {
    /// The work future finished by itself, with this output (the Lease was released).
    Finished(T),
    /// The shutdown future completed (the work was stopped and the Lease released).
    Shutdown,
}

/// Runs `make_work(fence)` while this replica leads, until `shutdown` completes.
///
/// With `config` `None` (leader election off) the work starts at once, with a [`Fence`] that
/// always holds. Otherwise the replica waits (standby) until it holds the Lease
/// `config.lease_name`, then runs the work with a [`Fence`] that holds while the Lease is
/// renewed in time. If it loses the Lease (another replica took it, or no renewal succeeded
/// within the term: a renewal that hangs counts as failed), the fence closes and the work
/// future is dropped at once, and the replica goes back to standby, calling `make_work` again
/// when it leads again. The work must therefore stop everything it
/// started when dropped (a kube-runtime `Controller` stream does).
///
/// On shutdown, or when the work finishes by itself, the work is dropped and the Lease
/// released, so a standby takes over within one lease duration instead of waiting for expiry.
/// If this future is dropped instead, the Lease is still released in the background.
///
/// Keeps `health` current: it heartbeats on a timer (see [`HealthState::heartbeat_interval`])
/// and sets the [`Role`] (`Starting` until the Lease can be read, then `Standby` or `Leader`);
/// it resets `set_watching(false)` whenever the work stops. `bbo_leader` is 1 while leading.
pub async fn run_as_leader<F, Fut>(
    client: Client,
    config: Option<LeaderElectionConfig>,
    metrics: Metrics,
    health: HealthState,
    shutdown: impl Future<Output = ()>,
    mut make_work: F,
) -> Result<LeaderOutcome<Fut::Output>, LeaderElectionError>
where
    F: FnMut(Fence) -> Fut,
    Fut: Future,
{
    let mut heartbeat = tokio::time::interval(health.heartbeat_interval());
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);

    let Some(config) = config else {
        health.set_role(Role::Leader);
        metrics.set_leader(true);
        let work = make_work(Fence::default());
        tokio::pin!(work);
        let outcome = loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break LeaderOutcome::Shutdown,
                out = &mut work => break LeaderOutcome::Finished(out),
                _ = heartbeat.tick() => health.heartbeat(),
            }
        };
        metrics.set_leader(false);
        health.set_watching(false);
        return Ok(outcome);
    };

    let params = config.lease_params()?;
    let retry = Retry::new(config.renew_grace);
    health.set_role(Role::Starting);
    metrics.set_leader(false);

    loop {
        let fence = Fence::closed_until_renewed();
        let lease_client = renewals_extend(client.clone(), &config, fence.clone());
        let mut lease = LeaseTask::spawn(lease_client, &config, params.clone(), retry);

        // Standby until the Lease is ours and a write of it succeeded: a fresh manager reads a
        // Lease that still names this replica (after a term lost to hung renewals) as its own,
        // and leads only once its next renewal gets through.
        let mut held = false;
        let acquired = loop {
            tokio::select! {
                biased;
                () = &mut shutdown => {
                    lease.stop(config.renew_grace).await;
                    return Ok(LeaderOutcome::Shutdown);
                }
                _ = heartbeat.tick() => health.heartbeat(),
                event = lease.events.recv() => match event {
                    Some(LeaseEvent::Ready) => health.set_role(Role::Standby),
                    Some(LeaseEvent::Leading(leading)) => {
                        held = leading;
                        if held && fence.holds() {
                            break true;
                        }
                    }
                    Some(LeaseEvent::Error) => {}
                    None => break false,
                },
                () = tokio::time::sleep(retry.first), if held => {
                    if fence.holds() {
                        break true;
                    }
                }
            }
        };
        if !acquired {
            warn!("leader election task ended unexpectedly; restarting it");
            tokio::time::sleep(retry.first).await;
            continue;
        }

        info!(identity = %config.identity, lease = %config.lease_name, "became leader; starting the controller");
        health.set_role(Role::Leader);
        health.set_watching(false);
        metrics.set_leader(true);
        // Boxed so it can be dropped (cancelled) here, before the Lease is released.
        let mut work = Box::pin(make_work(fence.clone()));
        let end = loop {
            let term_end = fence.deadline().map(tokio::time::Instant::from_std);
            tokio::select! {
                biased;
                () = &mut shutdown => break End::Shutdown,
                event = lease.events.recv() => match event {
                    Some(LeaseEvent::Leading(false)) => break End::Lost("another replica holds the Lease"),
                    None => break End::Lost("the leader election task ended"),
                    // Logged by the task; the term's end decides.
                    Some(LeaseEvent::Error | LeaseEvent::Ready | LeaseEvent::Leading(true)) => {}
                },
                // A renewal may have moved the end since this sleep began: look again.
                () = sleep_until_some(term_end) => {
                    if !fence.holds() {
                        break End::Lost("the Lease was not renewed in time");
                    }
                }
                out = &mut work => break End::Finished(out),
                _ = heartbeat.tick() => health.heartbeat(),
            }
        };
        fence.close();
        drop(work);
        metrics.set_leader(false);
        health.set_watching(false);

        match end {
            End::Shutdown => {
                info!("shutting down: controller stopped, releasing the Lease");
                lease.stop(config.renew_grace).await;
                return Ok(LeaderOutcome::Shutdown);
            }
            End::Finished(out) => {
                info!("controller finished; releasing the Lease");
                lease.stop(config.renew_grace).await;
                return Ok(LeaderOutcome::Finished(out));
            }
            End::Lost(why) => {
                warn!(
                    reason = why,
                    "lost leadership; controller stopped, back to standby"
                );
                health.set_role(Role::Standby);
                // A fresh manager: the old one may still believe it leads.
                lease.stop(config.renew_grace).await;
            }
        }
    }
}

enum End<T> {
    Shutdown,
    Finished(T),
    Lost(&'static str),
}

/// Completes at `at`, or never when `None`.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// `client`, except that every successful write of the Lease (taking or renewing it) extends
/// `fence` to the term after the moment the write was sent (a monotonic clock: the Lease's
/// own renewTime is another node's wall clock to the replicas that read it).
fn renewals_extend(client: Client, config: &LeaderElectionConfig, fence: Fence) -> Client {
    let lease_path = format!(
        "/namespaces/{}/leases/{}",
        config.namespace, config.lease_name
    );
    let term = config.term();
    let namespace = client.default_namespace().to_owned();
    let service = tower::service_fn(move |request: http::Request<kube::client::Body>| {
        let renewal =
            request.method() == http::Method::PATCH && request.uri().path().ends_with(&lease_path);
        let (client, fence) = (client.clone(), fence.clone());
        let sent = Instant::now();
        async move {
            let response = client.send(request).await?;
            if renewal && response.status().is_success() {
                fence.extend_to(sent + term);
            }
            Ok::<_, kube::Error>(response)
        }
    });
    Client::new(service, namespace)
}

/// Delays between retries after Kubernetes API errors: doubling, from a fraction of the grace
/// period (so a failed renewal is retried well before the Lease expires) up to 30s.
#[derive(Clone, Copy, Debug)]
struct Retry {
    first: Duration,
}

impl Retry {
    const MAX: Duration = Duration::from_secs(30);

    fn new(grace: Duration) -> Self {
        Self {
            first: (grace / 4).clamp(Duration::from_millis(50), Duration::from_millis(500)),
        }
    }

    fn next(self, current: Duration) -> Duration {
        (current * 2).min(Self::MAX)
    }
}

#[derive(Debug)]
enum LeaseEvent {
    /// The Lease exists and can be read: this replica is a candidate.
    Ready,
    /// Leadership changed (true: this replica now holds the Lease).
    Leading(bool),
    /// Reading or renewing the Lease failed (already logged).
    Error,
}

/// A task owning one `LeaseManager`: it keeps the Lease renewed while held, reports changes,
/// and releases the Lease when stopped or dropped.
struct LeaseTask {
    stop: Option<oneshot::Sender<()>>,
    events: mpsc::UnboundedReceiver<LeaseEvent>,
    handle: Option<JoinHandle<()>>,
}

impl LeaseTask {
    fn spawn(
        client: Client,
        config: &LeaderElectionConfig,
        params: LeaseParams,
        retry: Retry,
    ) -> Self {
        let (stop, stopped) = oneshot::channel();
        let (events, receiver) = mpsc::unbounded_channel();
        let handle = tokio::spawn(lease_loop(
            client,
            config.namespace.clone(),
            config.lease_name.clone(),
            params,
            retry,
            config.renew_grace,
            events,
            stopped,
        ));
        Self {
            stop: Some(stop),
            events: receiver,
            handle: Some(handle),
        }
    }

    /// Stops the task and waits (bounded) until it has released the Lease.
    async fn stop(&mut self, release_timeout: Duration) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(handle) = self.handle.take() {
            // The task bounds its own release; the extra second covers scheduling.
            let _ = tokio::time::timeout(release_timeout + Duration::from_secs(1), handle).await;
        }
    }
}

#[allow(clippy::too_many_arguments)] // one task's inputs, passed once
async fn lease_loop(
    client: Client,
    namespace: String,
    lease_name: String,
    params: LeaseParams,
    retry: Retry,
    release_timeout: Duration,
    events: mpsc::UnboundedSender<LeaseEvent>,
    mut stop: oneshot::Receiver<()>,
) {
    // `stop` completes when told to, or when the LeaseTask is dropped.
    let mut delay = retry.first;
    let manager = loop {
        let create = LeaseManager::new(
            client.clone(),
            &lease_name,
            &namespace,
            params.clone(),
            LeaseCreateMode::AutoCreate,
        );
        let failure = tokio::select! {
            biased;
            _ = &mut stop => return,
            created = create => match created {
                Ok(manager) => break manager,
                Err(error) => error,
            },
        };
        warn!(error = %failure, %namespace, lease = %lease_name, "cannot read or create the leader Lease; retrying");
        tokio::select! {
            biased;
            _ = &mut stop => return,
            () = tokio::time::sleep(delay) => delay = retry.next(delay),
        }
    };
    if events.send(LeaseEvent::Ready).is_err() {
        return;
    }

    delay = retry.first;
    loop {
        let changed = tokio::select! {
            biased;
            _ = &mut stop => break,
            changed = manager.changed() => changed,
        };
        let failed = changed.is_err();
        let event = match changed {
            Ok(leading) => {
                delay = retry.first;
                LeaseEvent::Leading(leading)
            }
            Err(error) => {
                warn!(%error, lease = %lease_name, "leader Lease update failed; retrying");
                LeaseEvent::Error
            }
        };
        if events.send(event).is_err() {
            break;
        }
        if failed {
            tokio::select! {
                biased;
                _ = &mut stop => break,
                () = tokio::time::sleep(delay) => delay = retry.next(delay),
            }
        }
    }

    // Free the Lease now so a standby does not have to wait for it to expire.
    match tokio::time::timeout(release_timeout, manager.release()).await {
        Ok(Ok(())) => debug!(lease = %lease_name, "released the leader Lease"),
        Ok(Err(error)) => {
            warn!(%error, lease = %lease_name, "cannot release the leader Lease; it will expire")
        }
        Err(_) => {
            warn!(lease = %lease_name, "timed out releasing the leader Lease; it will expire")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(duration: u64, grace: u64) -> LeaderElectionConfig {
        LeaderElectionConfig {
            lease_duration: Duration::from_secs(duration),
            renew_grace: Duration::from_secs(grace),
            ..LeaderElectionConfig::new("ns", "lease")
        }
    }

    #[test]
    fn settings_are_checked_before_the_crate_would_panic() {
        assert!(config(15, 5).lease_params().is_ok());
        for (d, g) in [(5, 5), (5, 0), (0, 0), (3, 4)] {
            let err = config(d, g).lease_params().unwrap_err();
            assert!(err.to_string().contains("renew grace"), "{err}");
        }
        let fractional = LeaderElectionConfig {
            lease_duration: Duration::from_millis(2500),
            ..config(15, 5)
        };
        assert!(fractional.lease_params().is_err());
        let unnamed = LeaderElectionConfig {
            lease_name: String::new(),
            ..config(15, 5)
        };
        assert!(unnamed.lease_params().is_err());
    }

    #[test]
    fn identities_are_unique_and_name_the_pod() {
        let a = LeaderElectionConfig::default_identity();
        let b = LeaderElectionConfig::default_identity();
        assert_ne!(a, b);
        let (host, suffix) = a.rsplit_once('_').unwrap();
        assert!(!host.is_empty());
        assert!(uuid::Uuid::parse_str(suffix).is_ok());
    }

    #[test]
    fn a_fence_holds_only_within_its_renewed_term() {
        assert!(Fence::default().holds());
        assert_eq!(Fence::default().deadline(), None);

        let fence = Fence::closed_until_renewed();
        assert!(!fence.holds(), "no renewal yet");
        let later = Instant::now() + Duration::from_secs(60);
        fence.extend_to(later);
        assert!(fence.holds());
        fence.extend_to(Instant::now());
        assert_eq!(fence.deadline(), Some(later), "never moved back");
        let shared = fence.clone();
        fence.close();
        assert!(!shared.holds(), "closing ends the term for every copy");
        shared.extend_to(later + Duration::from_secs(60));
        assert!(
            !shared.holds(),
            "a late renewal does not reopen an ended term"
        );

        let passed = Fence::closed_until_renewed();
        passed.extend_to(Instant::now());
        assert!(!passed.holds(), "a term whose end has passed");
    }

    #[test]
    fn a_term_ends_halfway_through_the_renewal_grace() {
        assert_eq!(config(15, 5).term(), Duration::from_millis(12_500));
    }

    #[test]
    fn retries_start_well_inside_the_grace_period() {
        let retry = Retry::new(Duration::from_secs(5));
        assert_eq!(retry.first, Duration::from_millis(500));
        assert_eq!(
            Retry::new(Duration::from_secs(1)).first,
            Duration::from_millis(250)
        );
        assert_eq!(retry.next(Duration::from_secs(20)), Retry::MAX);
    }
}
