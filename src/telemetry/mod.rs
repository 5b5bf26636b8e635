//! Logging, metrics and the `/metrics`, `/healthz`, `/readyz` endpoints.
//!
//! - [`init_logging`] installs the global `tracing` subscriber (text or JSON, `RUST_LOG` filter).
//! - [`Metrics`] holds the Prometheus registry and the operator's series; it also implements
//!   [`dataprotection::RequestObserver`] so the ARM client counts and times its requests.
//! - [`HealthState`] answers liveness and readiness; [`serve_on`] exposes both and the metrics.

mod health;
mod logging;
mod metrics;
mod process;
mod server;

pub use health::{HealthState, Role};
pub use logging::{DEFAULT_LOG_FILTER, LogFormat, init_logging};
pub use metrics::{ExpositionFormat, Metrics, WatchedInstances};
pub use server::{router, serve_on};

/// Errors from setting up logging or the metrics server.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// `RUST_LOG` is set but is not a valid filter.
    #[error("invalid RUST_LOG filter {filter:?}: {message}")]
    InvalidLogFilter { filter: String, message: String },
    /// A global `tracing` subscriber was already installed.
    #[error("cannot install the logger: {0}")]
    LoggerInstalled(String),
    /// The metrics server stopped with an I/O error.
    #[error("metrics server failed: {0}")]
    Serve(#[source] std::io::Error),
    /// The registry could not be encoded.
    #[error("cannot encode metrics: {0}")]
    Encode(#[from] std::fmt::Error),
}
