//! # posture-metrics
//!
//! Operational metrics of the posture pipeline and the HTTP port they are
//! served on (SPEC section 4: one port with `/metrics`, `/healthz`,
//! `/readyz` and, later, the query API under `/api/v1/...`).
//!
//! ```text
//! the Step (per record, through posture_stage::StepMetrics), the ingest loop, the sinks, the API
//!   ─► Metrics (typed helpers, bounded labels) ─► /metrics ─► Prometheus ─► alert rules, Grafana
//! ```
//!
//! - [`Metrics`] owns a [`prometheus::Registry`] with every metric of the
//!   pipeline registered at construction, under names that dashboards and
//!   alert rules rely on (see [`names`]). Callers record through typed helper
//!   methods ([`Metrics::dead_lettered`], [`Metrics::sink_rows`],
//!   [`Metrics::set_score`], ...) and never format label values themselves.
//! - Label cardinality is bounded by construction: every label value is either
//!   one of a fixed set (unknown values collapse to `other`), a Kafka topic and
//!   partition, or a tenant / device group admitted by the
//!   [`ScoreLimits`] guard (the rest aggregated under `_overflow`).
//!   **A device id is never a label value**: no method takes one, and none
//!   must be added; per-device data belongs in ClickHouse, not in Prometheus.
//! - [`router`] builds the axum [`Router`](axum::Router) for `/metrics`,
//!   `/healthz` and `/readyz`; other routes (the query API) are
//!   [`merge`](axum::Router::merge)d into it. [`serve`] and [`HttpServer`]
//!   run it.
//!
//! ```no_run
//! use std::sync::Arc;
//! use posture_metrics::{router, HttpServer, HttpState, Metrics, Readiness};
//!
//! # async fn run() -> Result<(), posture_metrics::HttpError> {
//! let metrics = Arc::new(Metrics::new());
//! let ready = Arc::new(Readiness::new());
//! let state = HttpState { metrics: metrics.clone(), ready: ready.clone(), metrics_token: None };
//! let server = HttpServer::bind("127.0.0.1:9464".parse().unwrap()).await?;
//! println!("serving on {}", server.local_addr());
//! let app = router(state); // .merge(query_api_router)
//! tokio::spawn(server.run(app));
//! metrics.events_consumed(1);
//! ready.set_ready();
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod guard;
mod http;
mod metrics;

pub use guard::{ScoreLimits, OVERFLOW};
pub use http::{constant_time_eq, router, serve, HttpError, HttpServer, HttpState, Readiness, METRICS_CONTENT_TYPE};
pub use metrics::{
    names, FreshnessSummary, Metrics, MetricsConfig, TopicKind, API_REFUSAL_REASONS, DEAD_LETTER_REASONS,
    FRESHNESS_BUCKETS, OTHER, RESTORE_BUCKETS, SINK_BATCH_BUCKETS, SINK_TABLES,
};
