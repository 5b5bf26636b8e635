//! What the ARM routes, the admin API and the listener share: the world behind its mutex, the
//! request counts, and the marks the listener reads off a response. The listener builds it;
//! routes and admin only use it, so no module imports its user.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};

use http::header::HOST;

use super::config::EmulatorConfig;
use super::state::State;

/// Marks a response whose connection must be closed without sending it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DropConnection;

/// The ids every answer carries; the correlation id echoes the client's request id.
#[derive(Clone, Debug)]
pub(crate) struct RequestIds {
    pub request_id: String,
    pub correlation_id: String,
}

impl RequestIds {
    pub fn fresh() -> Self {
        Self {
            request_id: uuid::Uuid::new_v4().to_string(),
            correlation_id: uuid::Uuid::new_v4().to_string(),
        }
    }
}

/// Request counts by operation id and status code (0: connection dropped).
pub(crate) type Counts = BTreeMap<&'static str, BTreeMap<u16, u64>>;

/// What the emulator counts of the requests it answers, under one mutex so a reader sees both
/// figures at the same moment.
#[derive(Default)]
pub(crate) struct Tally {
    pub by_operation: Counts,
    /// `BackupInstances_Get` answered 200, by instance key (`state::instance_key`): a
    /// benchmark tells the GETs made after an instance went Ready (resyncs) from the others.
    pub gets_served: HashMap<String, u64>,
}

/// What every handler shares.
pub(crate) struct Shared {
    config: EmulatorConfig,
    local_addr: SocketAddr,
    state: Mutex<State>,
    counts: Mutex<Tally>,
    /// Writes that named a backup instance while an operation on it still ran, by operation
    /// id: counts, not a log, so a long benchmark run holds a few numbers, not every request.
    in_flight_writes: Mutex<BTreeMap<&'static str, u64>>,
}

/// Locks without panicking: a panic elsewhere must not take the emulator down with it.
fn relock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    /// The world of `config`, served on `local_addr`.
    pub fn new(config: EmulatorConfig, local_addr: SocketAddr) -> Self {
        Self {
            state: Mutex::new(State::new(&config)),
            counts: Mutex::new(Tally::default()),
            in_flight_writes: Mutex::new(BTreeMap::new()),
            config,
            local_addr,
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        relock(&self.state)
    }

    pub fn counts(&self) -> MutexGuard<'_, Tally> {
        relock(&self.counts)
    }

    pub fn in_flight_writes(&self) -> MutexGuard<'_, BTreeMap<&'static str, u64>> {
        relock(&self.in_flight_writes)
    }

    /// Counts an answer; `served_get` is the key of the instance a `BackupInstances_Get`
    /// answered 200 for.
    pub fn count(&self, operation: &'static str, status: u16, served_get: Option<String>) {
        let mut counts = self.counts();
        *counts
            .by_operation
            .entry(operation)
            .or_default()
            .entry(status)
            .or_default() += 1;
        if let Some(key) = served_get {
            *counts.gets_served.entry(key).or_default() += 1;
        }
    }

    /// Counts a write of `operation` that arrived while an operation on its instance ran.
    pub fn count_in_flight_write(&self, operation: &'static str) {
        *self.in_flight_writes().entry(operation).or_default() += 1;
    }

    pub fn config(&self) -> &EmulatorConfig {
        &self.config
    }

    /// Replaces the world with the config's again.
    pub fn reset_state(&self) {
        *self.lock() = State::new(&self.config);
    }

    /// Scheme and authority for URLs handed to the client: the configured public URL, else
    /// the Host the client used (so port-forwards and service names keep working).
    pub fn base_url(&self, headers: &http::HeaderMap) -> String {
        if let Some(url) = &self.config.public_url {
            return url.trim_end_matches('/').to_owned();
        }
        headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| {
                !h.is_empty()
                    && h.chars()
                        .all(|c| c.is_ascii_alphanumeric() || ".-_:[]".contains(c))
            })
            .map_or_else(
                || format!("http://{}", self.local_addr),
                |h| format!("http://{h}"),
            )
    }
}
