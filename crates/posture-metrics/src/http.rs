//! The HTTP port: `/metrics`, `/healthz`, `/readyz`, as an axum router that
//! the query API (`/api/v1/...`) is merged into.

use crate::metrics::Metrics;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;

/// The content type of `GET /metrics`: the Prometheus text exposition
/// format, version 0.0.4.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// Whether the process is ready to serve (`GET /readyz`), and why not.
///
/// Liveness (`/healthz`) only says the process runs; readiness says the
/// pipeline is doing its job, e.g. partitions are assigned and their state
/// restored. Starts not ready, with the reason `starting`. Share it as
/// `Arc<Readiness>` between the pipeline (which flips it) and the server.
#[derive(Debug)]
pub struct Readiness {
    ready: AtomicBool,
    reason: Mutex<String>,
}

impl Default for Readiness {
    fn default() -> Self {
        Readiness::new()
    }
}

impl Readiness {
    /// Not ready, reason `starting`.
    pub fn new() -> Readiness {
        Readiness {
            ready: AtomicBool::new(false),
            reason: Mutex::new("starting".to_owned()),
        }
    }

    /// Ready: `/readyz` answers 200.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Not ready because of `reason` (e.g. "restoring state of 3 partitions"):
    /// `/readyz` answers 503 with the reason.
    pub fn set_not_ready(&self, reason: impl Into<String>) {
        // The reason first, so a reader that sees "not ready" sees it too.
        *self.reason.lock().unwrap_or_else(|e| e.into_inner()) = reason.into();
        self.ready.store(false, Ordering::Release);
    }

    /// Whether the process is ready.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// `Ok` when ready, else the reason given to the last
    /// [`set_not_ready`](Self::set_not_ready).
    pub fn status(&self) -> Result<(), String> {
        if self.is_ready() {
            Ok(())
        } else {
            Err(self.reason.lock().unwrap_or_else(|e| e.into_inner()).clone())
        }
    }
}

/// What the handlers of [`router`] read: the metrics to serve, the
/// readiness flag and the token `/metrics` asks for. Cheap to clone.
#[derive(Clone)]
pub struct HttpState {
    /// The metrics served on `/metrics`.
    pub metrics: Arc<Metrics>,
    /// The flag answered on `/readyz`.
    pub ready: Arc<Readiness>,
    /// When set, `/metrics` answers only requests with `Authorization: Bearer <token>` (401
    /// otherwise); `/healthz` and `/readyz` stay open for probes.
    pub metrics_token: Option<Arc<str>>,
}

impl std::fmt::Debug for HttpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpState")
            .field("ready", &self.ready)
            .field("metrics_token", &self.metrics_token.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// Whether `a` equals `b`, in a time that does not depend on where they differ (for tokens).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why the HTTP server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The address could not be bound (in use, not local, no permission).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The bound listener failed while serving.
    #[error("HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// The routes of the operational port, with `state` applied:
///
/// - `GET /metrics`: every metric in the Prometheus text format 0.0.4
///   ([`METRICS_CONTENT_TYPE`]); with [`HttpState::metrics_token`], only for
///   `Authorization: Bearer <token>` (else 401);
/// - `GET /healthz`: 200 `ok` while the process runs;
/// - `GET /readyz`: 200 `ok` when [`Readiness`] is set, else 503
///   `not ready: <reason>`.
///
/// Other methods on these paths answer 405 (GET also answers HEAD), other
/// paths 404. Further routes (the query API) are added with
/// [`Router::merge`]; this router sets no fallback, so the merged one may.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn metrics(State(state): State<HttpState>, headers: axum::http::HeaderMap) -> Response {
    if let Some(token) = &state.metrics_token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if !constant_time_eq(given.as_bytes(), token.as_bytes()) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "a bearer token is required for /metrics (--metrics-token-file)",
            )
                .into_response();
        }
    }
    match state.metrics.encode() {
        Ok(body) => ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot encode metrics: {e}")).into_response(),
    }
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<HttpState>) -> Response {
    match state.ready.status() {
        Ok(()) => "ok".into_response(),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {reason}")).into_response(),
    }
}

/// A bound listener, not yet serving: binding first tells the caller the
/// actual address (bind `127.0.0.1:0` in tests, then read
/// [`local_addr`](Self::local_addr)) and reports an address in use before
/// anything else starts.
#[derive(Debug)]
pub struct HttpServer {
    listener: TcpListener,
    local_addr: SocketAddr,
}

impl HttpServer {
    /// Binds `addr` (port 0: any free port).
    pub async fn bind(addr: SocketAddr) -> Result<HttpServer, HttpError> {
        let bind_err = |source| HttpError::Bind { addr, source };
        let listener = TcpListener::bind(addr).await.map_err(bind_err)?;
        let local_addr = listener.local_addr().map_err(bind_err)?;
        Ok(HttpServer { listener, local_addr })
    }

    /// The address actually bound (with the port chosen for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves `app` (e.g. [`router`], with more routes merged in) until the
    /// listener fails.
    pub async fn run(self, app: Router) -> Result<(), HttpError> {
        axum::serve(self.listener, app).await.map_err(HttpError::Serve)
    }

    /// Serves `app` until `shutdown` completes, then stops accepting and
    /// returns once the connections in flight are done.
    pub async fn run_until<F>(self, app: Router, shutdown: F) -> Result<(), HttpError>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(HttpError::Serve)
    }
}

/// Binds `addr` and serves [`router`]`(state)` on it until the listener
/// fails. To learn the bound port or merge more routes, use [`HttpServer`].
pub async fn serve(addr: SocketAddr, state: HttpState) -> Result<(), HttpError> {
    HttpServer::bind(addr).await?.run(router(state)).await
}
