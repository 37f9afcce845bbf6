//! The query API and the dashboard page on the HTTP port: their routes (for `posture run`) and
//! `posture serve`, which serves them without consuming (for dashboards and analysts next to
//! the pipeline: any number of instances, each reading ClickHouse).

use crate::args::{ApiArgs, ClickHouseArgs, ServeArgs};
use anyhow::{Context, Result};
use posture_metrics::{router, HttpServer, HttpState, Metrics, MetricsConfig, Readiness};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// The query API's routes, and whether they are on: with a tokens file, every
/// route; without, only the OpenAPI document (every other route answers 401).
pub(crate) fn api_router(
    ch: &ClickHouseArgs,
    args: &ApiArgs,
    catalog: Arc<posture_core::Catalog>,
    metrics: Arc<Metrics>,
) -> Result<(axum::Router, bool)> {
    let tokens = match &args.api_tokens_file {
        None => posture_query::http::Tokens::default(),
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            posture_query::http::Tokens::parse(&path.display().to_string(), &text).map_err(anyhow::Error::msg)?
        }
    };
    let timeout = Duration::from_secs(args.api_timeout_secs.max(1));
    let limit = |c: clickhouse::Client| {
        c.with_database(&ch.database)
            .with_setting("max_execution_time", timeout.as_secs().to_string())
    };
    let writer = limit(ch.client()?);
    let reader = match &args.api_clickhouse_user {
        None => writer.clone(),
        Some(user) => limit(ch.client_as(
            user,
            "POSTURE_API_CLICKHOUSE_PASSWORD",
            args.api_clickhouse_password_file.as_deref(),
        )?),
    };
    let state = posture_query::http::ApiState {
        query: posture_query::Query::new(reader, catalog.clone()),
        writer: posture_query::Query::new(writer, catalog),
        tokens: Arc::new(tokens),
        limits: posture_query::http::ApiLimits {
            timeout,
            max_in_flight: args.api_max_in_flight,
        },
        metrics: Some(metrics),
        quotas: (args.api_tenant_requests_per_sec > 0.0).then(|| {
            Arc::new(posture_query::quota::RequestQuotas::new(
                args.api_tenant_requests_per_sec,
            ))
        }),
    };
    Ok((posture_query::http::api_router(state), args.api_tokens_file.is_some()))
}

/// The dashboard page's routes when the API is on (`api_on`), else none: the page is of no use
/// without the API it reads.
pub(crate) fn page(api_on: bool) -> axum::Router {
    if api_on {
        posture_web::router()
    } else {
        axum::Router::new()
    }
}

/// `posture serve`: the dashboard page, the query API, /metrics, /healthz and /readyz, until
/// SIGTERM or Ctrl-C. Ready once ClickHouse answers.
pub fn serve(args: ServeArgs) -> Result<ExitCode> {
    anyhow::ensure!(
        args.api.api_tokens_file.is_some(),
        "posture serve needs --api-tokens-file (or POSTURE_API_TOKENS_FILE): the page and the API answer only the tokens it names (see the README, \"The query API\")"
    );
    let catalog = Arc::new(crate::baselines::load_or_fail(&args.baselines)?);
    let addr: std::net::SocketAddr = args
        .http_addr
        .parse()
        .with_context(|| format!("--http-addr {:?}: expected HOST:PORT", args.http_addr))?;
    crate::pipeline::runtime()?.block_on(async move {
        let metrics = Arc::new(Metrics::with_config(MetricsConfig::default()));
        let ready = Arc::new(Readiness::new());
        ready.set_not_ready("ClickHouse has not answered yet");
        let (api, _) = api_router(&args.ch, &args.api, catalog, metrics.clone())?;
        let metrics_token = crate::config::secret("POSTURE_METRICS_TOKEN", args.metrics_token_file.as_deref())?
            .filter(|t| !t.is_empty())
            .map(Arc::<str>::from);
        let app = router(HttpState {
            metrics,
            ready: ready.clone(),
            metrics_token,
        })
        .merge(api)
        .merge(page(true));
        let server = HttpServer::bind(addr).await?;
        // The address on stdout (tests and scripts read it; port 0 picks a free one).
        println!("posture serve: the dashboard on http://{}/", server.local_addr());
        tracing::info!(
            "posture serve: the dashboard page at /, the query API at /api/v1, /metrics, /healthz, /readyz on http://{}",
            server.local_addr()
        );
        let client = args.ch.client()?;
        let url = args.ch.url().to_string();
        tokio::spawn(async move {
            loop {
                match client.query("SELECT 1").fetch_one::<u8>().await {
                    Ok(_) => {
                        ready.set_ready();
                        return;
                    }
                    Err(e) => {
                        ready.set_not_ready(format!("ClickHouse at {url}: {e}"));
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        // SIGTERM and Ctrl-C stop it; requests in flight are answered first.
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        let stop = async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            tracing::info!("posture serve: stopping");
        };
        server.run_until(app, stop).await.context("the HTTP server stopped")?;
        Ok(ExitCode::SUCCESS)
    })
}
