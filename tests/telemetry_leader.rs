//! Leader election against the in-memory Kubernetes API (crates/testkit/src/fake_apiserver.rs):
//! two replicas never run the controller at once, and the standby takes over when the leader
//! shuts down, is dropped, loses the Lease, or cannot reach the API.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use blob_backup_operator::controller::leader::{
    LeaderElectionConfig, LeaderElectionError, LeaderOutcome, run_as_leader,
};
use blob_backup_operator::telemetry::{ExpositionFormat, HealthState, Metrics, Role};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, Patch, PatchParams};
use testkit::fake_apiserver::FakeApiServer;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const LEASE_DURATION: Duration = Duration::from_secs(2);
/// Slack for scheduling and API round trips on a busy machine.
const SLACK: Duration = Duration::from_millis(1500);

/// Who is running the work right now, and the most that ever ran at once.
#[derive(Default)]
struct Tracker {
    running: AtomicUsize,
    max_running: AtomicUsize,
    current: Mutex<Option<&'static str>>,
}

impl Tracker {
    fn current(&self) -> Option<&'static str> {
        *self.current.lock().unwrap()
    }
}

/// Marks `who` as working until dropped (the work future is dropped when leadership ends).
struct Working(Arc<Tracker>);

impl Working {
    fn start(tracker: &Arc<Tracker>, who: &'static str) -> Self {
        let now = tracker.running.fetch_add(1, Ordering::SeqCst) + 1;
        tracker.max_running.fetch_max(now, Ordering::SeqCst);
        *tracker.current.lock().unwrap() = Some(who);
        Self(tracker.clone())
    }
}

impl Drop for Working {
    fn drop(&mut self) {
        *self.0.current.lock().unwrap() = None;
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Replica {
    metrics: Metrics,
    health: HealthState,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<LeaderOutcome<()>, LeaderElectionError>>,
}

impl Replica {
    fn start(client: kube::Client, lease: &str, who: &'static str, tracker: &Arc<Tracker>) -> Self {
        let config = LeaderElectionConfig {
            identity: who.to_owned(),
            lease_duration: LEASE_DURATION,
            renew_grace: Duration::from_secs(1),
            ..LeaderElectionConfig::new("default", lease)
        };
        let metrics = Metrics::new();
        let health = HealthState::new(Duration::from_secs(3));
        let (stop, stopped) = oneshot::channel::<()>();
        let tracker = tracker.clone();
        let task = tokio::spawn(run_as_leader(
            client,
            Some(config),
            metrics.clone(),
            health.clone(),
            async {
                let _ = stopped.await;
            },
            move |_| {
                let tracker = tracker.clone();
                async move {
                    let _working = Working::start(&tracker, who);
                    std::future::pending::<()>().await
                }
            },
        ));
        Self {
            metrics,
            health,
            stop: Some(stop),
            task,
        }
    }

    fn leader_gauge(&self) -> bool {
        let text = self.metrics.encode(ExpositionFormat::OpenMetrics).unwrap();
        text.lines().any(|l| l == "bbo_leader 1")
    }

    async fn shut_down(mut self) -> LeaderOutcome<()> {
        self.stop.take().unwrap().send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("run_as_leader returns promptly on shutdown")
            .unwrap()
            .unwrap()
    }
}

async fn wait_for(what: &str, within: Duration, cond: impl Fn() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < within,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

/// Starts replica `a`, waits for it to lead, then starts `b` as its standby.
async fn leader_and_standby(
    a_client: kube::Client,
    b_client: kube::Client,
    lease: &str,
    tracker: &Arc<Tracker>,
) -> (Replica, Replica) {
    let a = Replica::start(a_client, lease, "replica-a", tracker);
    wait_for("replica-a to lead", LEASE_DURATION + SLACK, || {
        tracker.current() == Some("replica-a")
    })
    .await;
    let b = Replica::start(b_client, lease, "replica-b", tracker);
    wait_for("replica-b to become a standby", SLACK, || {
        b.health.role() == Role::Standby
    })
    .await;
    (a, b)
}

#[tokio::test]
async fn one_leader_at_a_time_and_shutdown_hands_over() {
    let api = FakeApiServer::start().await.expect("fake apiserver");
    let tracker = Arc::new(Tracker::default());
    let (a, b) = leader_and_standby(
        api.client().expect("client"),
        api.client().expect("client"),
        "handover",
        &tracker,
    )
    .await;

    // Several renewals later the leader still leads and the standby only waits.
    tokio::time::sleep(LEASE_DURATION * 2).await;
    assert_eq!(tracker.current(), Some("replica-a"));
    assert!(a.leader_gauge() && !b.leader_gauge());
    assert!(
        a.health.role() == Role::Leader && !a.health.is_ready(),
        "not ready until watching"
    );
    assert!(b.health.is_ready(), "a standby is ready");
    assert!(
        a.health.is_live() && b.health.is_live(),
        "both loops heartbeat"
    );

    assert_eq!(a.shut_down().await, LeaderOutcome::Shutdown);
    assert_eq!(
        tracker.current(),
        None,
        "the work stopped before run_as_leader returned"
    );
    let leases: Api<Lease> = Api::namespaced(api.client().expect("client"), "default");
    let holder = |lease: Lease| lease.spec.and_then(|s| s.holder_identity);
    let after_shutdown = holder(leases.get("handover").await.unwrap());
    assert_ne!(
        after_shutdown.as_deref(),
        Some("replica-a"),
        "released on shutdown"
    );
    let took = wait_for("replica-b to take over", LEASE_DURATION + SLACK, || {
        tracker.current() == Some("replica-b")
    })
    .await;
    assert!(took <= LEASE_DURATION + SLACK, "handover took {took:?}");
    assert!(b.leader_gauge());
    assert_eq!(b.health.role(), Role::Leader);

    let now_holding = holder(leases.get("handover").await.unwrap());
    assert_eq!(now_holding.as_deref(), Some("replica-b"));
    assert_eq!(b.shut_down().await, LeaderOutcome::Shutdown);
    assert_eq!(tracker.max_running.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn dropping_the_leader_releases_the_lease() {
    let api = FakeApiServer::start().await.expect("fake apiserver");
    let tracker = Arc::new(Tracker::default());
    let (a, b) = leader_and_standby(
        api.client().expect("client"),
        api.client().expect("client"),
        "dropped",
        &tracker,
    )
    .await;

    // Dropping the run_as_leader future (here: aborting its task) drops the work at once.
    a.task.abort();
    wait_for("replica-a's work to be dropped", SLACK, || {
        tracker.current() != Some("replica-a")
    })
    .await;
    let took = wait_for("replica-b to take over", LEASE_DURATION + SLACK, || {
        tracker.current() == Some("replica-b")
    })
    .await;
    assert!(took <= LEASE_DURATION + SLACK, "handover took {took:?}");
    b.shut_down().await;
    assert_eq!(tracker.max_running.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_stolen_lease_stops_the_work() {
    let api = FakeApiServer::start().await.expect("fake apiserver");
    let tracker = Arc::new(Tracker::default());
    let a = Replica::start(
        api.client().expect("client"),
        "stolen",
        "replica-a",
        &tracker,
    );
    wait_for("replica-a to lead", LEASE_DURATION + SLACK, || {
        tracker.current() == Some("replica-a")
    })
    .await;

    // Someone else writes itself into the Lease (as a replica that judged it expired would).
    let leases: Api<Lease> = Api::namespaced(api.client().expect("client"), "default");
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
        k8s_openapi::jiff::Timestamp::now(),
    );
    let steal = serde_json::json!({
        "spec": { "holderIdentity": "intruder", "renewTime": now, "acquireTime": now,
                  "leaseDurationSeconds": 60 }
    });
    leases
        .patch("stolen", &PatchParams::default(), &Patch::Strategic(steal))
        .await
        .unwrap();

    // The leader notices at its next renewal (every lease duration - grace) and stops.
    wait_for("replica-a to stop working", LEASE_DURATION + SLACK, || {
        tracker.current().is_none()
    })
    .await;
    assert!(!a.leader_gauge());
    assert_eq!(a.health.role(), Role::Standby);
    // And it does not come back while the intruder's Lease is valid.
    tokio::time::sleep(LEASE_DURATION).await;
    assert_eq!(tracker.current(), None);
    a.shut_down().await;
}

/// A client whose requests fail while `cut` is set: a replica partitioned from the API server.
fn partitionable(client: kube::Client, cut: Arc<AtomicBool>) -> kube::Client {
    let service = tower::service_fn(move |request: http::Request<kube::client::Body>| {
        let client = client.clone();
        let cut = cut.clone();
        async move {
            if cut.load(Ordering::SeqCst) {
                return Err::<
                    http::Response<kube::client::Body>,
                    Box<dyn std::error::Error + Send + Sync>,
                >("network partition".into());
            }
            Ok(client.send(request).await?)
        }
    });
    kube::Client::new(service, "default")
}

#[tokio::test]
async fn a_partitioned_leader_stops_before_the_standby_starts() {
    let api = FakeApiServer::start().await.expect("fake apiserver");
    let tracker = Arc::new(Tracker::default());
    let cut = Arc::new(AtomicBool::new(false));
    let a_client = partitionable(api.client().expect("client"), cut.clone());
    let (a, b) = leader_and_standby(
        a_client,
        api.client().expect("client"),
        "partition",
        &tracker,
    )
    .await;

    cut.store(true, Ordering::SeqCst);
    // The leader cannot renew: it stops its work before the Lease expires, and the standby
    // (which still reaches the API) takes over once it has expired; never both at once.
    let took = wait_for("replica-b to take over", LEASE_DURATION + SLACK * 2, || {
        tracker.current() == Some("replica-b")
    })
    .await;
    assert!(
        took >= Duration::from_millis(500),
        "took over before expiry: {took:?}"
    );
    assert_eq!(tracker.max_running.load(Ordering::SeqCst), 1);
    assert!(!a.leader_gauge());

    b.shut_down().await;
    // The partitioned replica cannot release anything, but still shuts down promptly.
    a.shut_down().await;
}

fn offline_client() -> kube::Client {
    // Never contacted: with leader election off nothing talks to the API.
    let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
    kube::Client::try_from(config).unwrap()
}

async fn run_without_election<Fut: Future>(
    shutdown: impl Future<Output = ()>,
    work: Fut,
    health: &HealthState,
    metrics: &Metrics,
) -> LeaderOutcome<Fut::Output> {
    let mut work = Some(work);
    run_as_leader(
        offline_client(),
        None,
        metrics.clone(),
        health.clone(),
        shutdown,
        move |_| work.take().unwrap(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn without_election_the_work_just_runs() {
    let health = HealthState::default();
    let metrics = Metrics::new();
    let outcome =
        run_without_election(std::future::pending(), async { 7 }, &health, &metrics).await;
    assert_eq!(outcome, LeaderOutcome::Finished(7));

    let (stop, stopped) = oneshot::channel::<()>();
    let observed = (health.clone(), metrics.clone());
    let work = async move {
        assert_eq!(observed.0.role(), Role::Leader);
        let text = observed.1.encode(ExpositionFormat::OpenMetrics).unwrap();
        assert!(text.lines().any(|l| l == "bbo_leader 1"));
        stop.send(()).unwrap();
        std::future::pending::<()>().await
    };
    let shutdown = async {
        let _ = stopped.await;
    };
    let outcome = run_without_election(shutdown, work, &health, &metrics).await;
    assert_eq!(outcome, LeaderOutcome::Shutdown);
}
