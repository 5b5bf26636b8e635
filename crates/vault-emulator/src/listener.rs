//! The HTTP listener: the ARM routes and the admin API in one axum router, served by our own
//! hyper connection loop, because an injected "dropped connection" must close the socket
//! without any answer, which axum::serve (infallible services) cannot do.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::Response;
use http::header::{CACHE_CONTROL, HeaderName, HeaderValue, PRAGMA};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt as _;

use super::EmulatorError;
use super::admin::{self, EmulatorAdmin};
use super::config::EmulatorConfig;
use super::routes;
use super::shared::{DropConnection, RequestIds, Shared};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-ms-request-id");
const CORRELATION_ID: HeaderName = HeaderName::from_static("x-ms-correlation-request-id");
const CLIENT_REQUEST_ID: HeaderName = HeaderName::from_static("x-ms-client-request-id");

/// Adds the ARM ids and cache headers to every answer and logs one line per request.
async fn envelope(mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let client_id = request
        .headers()
        .get(CLIENT_REQUEST_ID)
        .or_else(|| request.headers().get(CORRELATION_ID))
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 200)
        .map(str::to_owned);
    let mut ids = RequestIds::fresh();
    if let Some(client_id) = client_id {
        ids.correlation_id = client_id;
    }
    request.extensions_mut().insert(ids.clone());
    let mut response = next.run(request).await;
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    if response.extensions().get::<DropConnection>().is_some() {
        tracing::info!(%method, %path, status = "dropped", elapsed_ms, "emulator request");
        return response;
    }
    let headers = response.headers_mut();
    for (name, value) in [
        (REQUEST_ID, &ids.request_id),
        (CORRELATION_ID, &ids.correlation_id),
    ] {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    }
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(PRAGMA, HeaderValue::from_static("no-cache"));
    tracing::info!(%method, %path, status = response.status().as_u16(), elapsed_ms, "emulator request");
    response
}

/// The service failed on purpose: hyper then closes the connection without an answer.
#[derive(Debug, thiserror::Error)]
#[error("connection dropped by an injected fault")]
struct InjectedDrop;

/// An emulator serving on a loopback (or any) address until shut down or dropped.
pub struct RunningEmulator {
    base_url: url::Url,
    token: String,
    admin: EmulatorAdmin,
    shutdown: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RunningEmulator {
    /// Binds `listen` (port 0 picks a free port) and starts serving `config`'s world.
    pub async fn start(config: EmulatorConfig, listen: SocketAddr) -> Result<Self, EmulatorError> {
        config.validate()?;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| EmulatorError::Bind {
                addr: listen,
                source,
            })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| EmulatorError::Bind {
                addr: listen,
                source,
            })?;
        let base_url = url::Url::parse(&format!("http://{local_addr}"))
            .map_err(|e| EmulatorError::Invalid(format!("listen address {local_addr}: {e}")))?;
        let token = config
            .tokens
            .iter()
            .find(|t| !t.trim().is_empty())
            .cloned()
            .unwrap_or_default();
        let shared = Arc::new(Shared::new(config, local_addr));
        let router = Router::new()
            .nest("/_emulator", admin::router())
            .fallback(routes::arm)
            .layer(middleware::from_fn(envelope))
            .with_state(shared.clone());
        let (shutdown, signal) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, router, signal));
        tracing::info!(url = %base_url, "vault emulator listening");
        Ok(Self {
            base_url,
            token,
            admin: EmulatorAdmin::new(shared),
            shutdown,
            task: Some(task),
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> url::Url {
        self.base_url.clone()
    }

    /// A bearer token the emulator accepts.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// In-process access to the admin powers (same as the `/_emulator/` HTTP API).
    pub fn admin(&self) -> &EmulatorAdmin {
        &self.admin
    }

    /// Stops accepting, lets open connections finish their request, and waits for that.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RunningEmulator {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn accept_loop(listener: TcpListener, router: Router, mut signal: watch::Receiver<bool>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = signal.changed() => break,
        };
        // Reap finished connection tasks so the set does not grow without bound.
        while connections.try_join_next().is_some() {}
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Typically out of file descriptors: wait a little instead of spinning.
                tracing::warn!(error = %e, "emulator accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let mut signal = signal.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(
                move |request: hyper::Request<hyper::body::Incoming>| {
                    let router = router.clone();
                    async move {
                        let response = match router.oneshot(request).await {
                            Ok(response) => response,
                            Err(never) => match never {},
                        };
                        if response.extensions().get::<DropConnection>().is_some() {
                            Err(InjectedDrop)
                        } else {
                            Ok(response)
                        }
                    }
                },
            );
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "emulator connection ended");
                    }
                }
                _ = signal.changed() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
    while connections.join_next().await.is_some() {}
}
