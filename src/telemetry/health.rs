use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Default time without a heartbeat after which `/healthz` fails.
const DEFAULT_LIVENESS_TIMEOUT: Duration = Duration::from_secs(30);

/// What this replica is doing, as far as readiness is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Role {
    /// Not yet talking to the Kubernetes API (no Lease seen, controller not started).
    Starting = 0,
    /// Leader election is on and another replica holds the Lease; this one waits to take over.
    Standby = 1,
    /// Running the controller: it holds the Lease, or leader election is off.
    Leader = 2,
}

impl Role {
    fn from_u8(value: u8) -> Self {
        match value {
            1 => Self::Standby,
            2 => Self::Leader,
            _ => Self::Starting,
        }
    }
}

/// Liveness and readiness of the process, shared by the controller loop and the HTTP server
/// (cheap to clone; clones share the state).
///
/// **Liveness** (`/healthz`): the loop that drives the controller calls [`heartbeat`]
/// (`run_as_leader` does so on a timer, in standby too); the process is live while the last
/// heartbeat is younger than the liveness timeout. A wedged loop stops the heartbeats and the
/// kubelet restarts the pod.
///
/// **Readiness** (`/readyz`):
/// - `Starting`: not ready.
/// - `Standby`: **ready**. As in controller-runtime, a standby is healthy and useful (it takes
///   over when the leader goes), so it must count as available or a rolling update of a
///   two-replica Deployment could never proceed. Whether a replica leads is visible in the
///   `bbo_leader` metric and in the Lease, not in readiness.
/// - `Leader`: ready once the controller reports that its watches have listed their resources
///   ([`set_watching`]`(true)`), so a leader that cannot read its resources (RBAC, CRD missing)
///   shows as not ready.
///
/// [`heartbeat`]: HealthState::heartbeat
/// [`set_watching`]: HealthState::set_watching
#[derive(Clone, Debug)]
pub struct HealthState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    epoch: Instant,
    liveness_timeout: Duration,
    // Milliseconds since `epoch`: an atomic instead of a lock on the hot path.
    last_heartbeat_ms: AtomicU64,
    role: AtomicU8,
    watching: AtomicBool,
}

impl Default for HealthState {
    fn default() -> Self {
        Self::new(DEFAULT_LIVENESS_TIMEOUT)
    }
}

impl HealthState {
    /// A state that is live for `liveness_timeout` after creation and after each heartbeat.
    pub fn new(liveness_timeout: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                epoch: Instant::now(),
                liveness_timeout,
                last_heartbeat_ms: AtomicU64::new(0),
                role: AtomicU8::new(Role::Starting as u8),
                watching: AtomicBool::new(false),
            }),
        }
    }

    /// Records that the controller loop is making progress.
    pub fn heartbeat(&self) {
        self.inner
            .last_heartbeat_ms
            .store(self.elapsed_ms(), Ordering::Relaxed);
    }

    /// How often the loop should call [`heartbeat`](Self::heartbeat) (a third of the timeout).
    pub fn heartbeat_interval(&self) -> Duration {
        (self.inner.liveness_timeout / 3).max(Duration::from_millis(10))
    }

    /// Sets this replica's role (leader election sets it; see the type's documentation).
    pub fn set_role(&self, role: Role) {
        self.inner.role.store(role as u8, Ordering::Relaxed);
    }

    /// This replica's role.
    pub fn role(&self) -> Role {
        Role::from_u8(self.inner.role.load(Ordering::Relaxed))
    }

    /// The controller calls `set_watching(true)` once its watches have listed their resources;
    /// it is reset to `false` whenever the controller stops.
    pub fn set_watching(&self, watching: bool) {
        self.inner.watching.store(watching, Ordering::Relaxed);
    }

    /// True while heartbeats are recent.
    pub fn is_live(&self) -> bool {
        let last = self.inner.last_heartbeat_ms.load(Ordering::Relaxed);
        let silent = Duration::from_millis(self.elapsed_ms().saturating_sub(last));
        silent <= self.inner.liveness_timeout
    }

    /// True when this replica can do its job in its current role.
    pub fn is_ready(&self) -> bool {
        self.not_ready_reason().is_none()
    }

    /// Why the replica is not ready, for the `/readyz` body; `None` when ready.
    pub fn not_ready_reason(&self) -> Option<&'static str> {
        match self.role() {
            Role::Starting => Some("starting: not yet connected to the Kubernetes API"),
            Role::Standby => None,
            Role::Leader if self.inner.watching.load(Ordering::Relaxed) => None,
            Role::Leader => Some("leading, but the controller's watches have not synced yet"),
        }
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.inner.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_follows_role_and_watch() {
        let health = HealthState::default();
        assert!(!health.is_ready());
        health.set_role(Role::Standby);
        assert!(health.is_ready(), "standbys are ready");
        health.set_role(Role::Leader);
        assert!(!health.is_ready(), "a leader is ready only once watching");
        health.set_watching(true);
        assert!(health.is_ready());
        health.set_watching(false);
        assert!(health.not_ready_reason().is_some());
    }

    #[test]
    fn liveness_expires_without_heartbeats() {
        let health = HealthState::new(Duration::from_millis(40));
        assert!(health.is_live());
        std::thread::sleep(Duration::from_millis(60));
        assert!(!health.is_live());
        health.heartbeat();
        assert!(health.is_live());
    }
}
