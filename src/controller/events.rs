//! Kubernetes Events, published through a rotating [`Recorder`]. Kind-agnostic: a resource is
//! named by its `ObjectReference`.

use std::sync::Mutex;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tracing::{info, warn};

use super::decide::{self, EventSpec};
use super::state::lock;
use crate::telemetry::Metrics;

/// Events one [`Recorder`] publishes before a fresh one takes over. kube's Recorder keeps
/// every Event it published for six minutes (to patch a repeat into a series) and sweeps
/// that whole cache on each publish: at 10,000 resources × 3 Events that is tens of MiB and
/// quadratic time. A repeat is still aggregated unless a swap fell in between. At 400 the
/// cache's table stays at its 512-slot size (about 1 MiB; 500 doubled it).
const EVENTS_PER_RECORDER: usize = 400;

/// Publishes Events as one reporter.
pub struct Events {
    client: Client,
    reporter: Reporter,
    // The Recorder in use and how many Events it published.
    recorder: Mutex<(Recorder, usize)>,
}

impl Events {
    /// Events reported as `reporter`.
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self {
            recorder: Mutex::new((Recorder::new(client.clone(), reporter.clone()), 0)),
            client,
            reporter,
        }
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

    /// Publishes one Event about `regarding` (action `Reconcile`).
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &str,
        note: &str,
    ) -> Result<(), kube::Error> {
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note.to_owned()),
            action: "Reconcile".to_owned(),
            secondary: None,
        };
        self.recorder().publish(&event, regarding).await
    }

    /// Publishes a decision's Events about `regarding`, each counted in `metrics` and logged;
    /// a failure is logged, never fatal (the status says the same).
    pub async fn publish_all(
        &self,
        regarding: &ObjectReference,
        events: &[EventSpec],
        metrics: &Metrics,
    ) {
        for spec in events {
            let type_ = match spec.type_ {
                decide::EventType::Normal => EventType::Normal,
                decide::EventType::Warning => EventType::Warning,
            };
            let reason = spec.reason.as_str();
            match self.publish(regarding, type_, reason, &spec.note).await {
                Ok(()) => metrics.record_event(reason),
                Err(error) => warn!(reason, %error, "cannot publish an event"),
            }
            info!(reason, "{}", spec.note);
        }
    }
}
