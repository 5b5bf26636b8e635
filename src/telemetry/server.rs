use std::future::Future;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;

use super::{ExpositionFormat, HealthState, Metrics, TelemetryError};

#[derive(Clone)]
struct AppState {
    metrics: Metrics,
    health: HealthState,
}

/// The routes `GET /metrics`, `GET /healthz` and `GET /readyz`.
///
/// `/metrics` answers in OpenMetrics 1.0.0 when the `Accept` header asks for
/// `application/openmetrics-text` (Prometheus does by default: its `scrape_protocols` list
/// OpenMetrics first) and in the Prometheus text format 0.0.4 otherwise (`curl`, older agents).
/// Prometheus 3 refuses a scrape whose `Content-Type` it does not know, so each answer carries
/// its format's exact content type.
///
/// `/healthz` is 200 while [`HealthState::is_live`], `/readyz` 200 while
/// [`HealthState::is_ready`]; both are 503 otherwise, with the reason in the body.
pub fn router(metrics: Metrics, health: HealthState) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AppState { metrics, health })
}

/// Serves [`router`] on an already bound listener until `shutdown` completes. The caller
/// binds, so a taken address fails start-up before anything is spawned.
pub async fn serve_on(
    listener: TcpListener,
    metrics: Metrics,
    health: HealthState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), TelemetryError> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    }
    axum::serve(listener, router(metrics, health))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(TelemetryError::Serve)
}

async fn metrics_handler(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = ExpositionFormat::negotiate(accept);
    match state.metrics.encode(format) {
        Ok(body) => ([(header::CONTENT_TYPE, format.content_type())], body).into_response(),
        Err(err) => {
            tracing::error!(error = %err, "cannot encode metrics");
            (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response()
        }
    }
}

async fn healthz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    if state.health.is_live() {
        (StatusCode::OK, "ok\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "controller loop has stopped sending heartbeats\n",
        )
    }
}

async fn readyz(State(state): State<AppState>) -> (StatusCode, String) {
    match state.health.not_ready_reason() {
        None => (StatusCode::OK, "ok\n".to_owned()),
        Some(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
    }
}
