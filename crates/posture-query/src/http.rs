//! The HTTP query API, `/api/v1/...`: the same answers as the CLI's query
//! subcommands, as JSON or CSV (`?format=csv` or `Accept: text/csv`).
//!
//! Every route but the OpenAPI document needs a bearer token from the
//! tokens file ([`Tokens`]); a token names the tenants it may read. No or an
//! unknown token: 401 with `WWW-Authenticate: Bearer`; a tenant the token
//! does not cover: 403. Errors are `{"error": "..."}` with 400 (bad
//! parameters), 404 (no such device) or 502 (ClickHouse failed).
//!
//! The router is meant to be merged into the metrics router, so the API
//! shares the port of `/metrics` (SPEC section 4).
//!
//! Why one file of about 670 lines: one handler per route, each a thin translation of query
//! parameters to a [`crate::Query`] call, beside the token checks and quotas they all share.

use crate::now_ms;
use crate::{csv_out, Bucket, Change, Filters, NewException, NewTask, Query, QueryError, Scope};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query as Params, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use posture_core::time::parse_time;
use posture_core::{Category, Remediation};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;

/// The OpenAPI 3.1 document of this API (served at `/api/v1/openapi.json`).
pub const OPENAPI: &str = include_str!("../openapi.json");

/// Bearer tokens and the tenants each may read, from a TOML file:
///
/// ```toml
/// [[token]]
/// name = "soc"             # shown in logs, never the token itself
/// token = "s3cr3t-..."     # the bearer token (at least 16 characters)
/// tenants = ["t1", "t2"]   # or ["*"] for every tenant
/// write = true             # may add/expire exceptions and create tasks (default false: read only)
/// ```
#[derive(Clone, Debug, Default)]
pub struct Tokens {
    by_token: HashMap<String, Grant>,
}

/// What one token may read.
#[derive(Clone, Debug)]
struct Grant {
    name: String,
    tenants: Vec<String>,
    write: bool,
}

impl Grant {
    fn covers(&self, tenant: &str) -> bool {
        self.tenants.iter().any(|t| t == "*" || t == tenant)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    token: Vec<TokenEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    token: String,
    tenants: Vec<String>,
    #[serde(default)]
    write: bool,
}

impl Tokens {
    /// Parses a tokens file; `origin` names it in errors. Tokens are at
    /// least 16 characters, unique, and each grants at least one tenant.
    pub fn parse(origin: &str, text: &str) -> Result<Tokens, String> {
        // toml's Display quotes the offending line, which may hold a token: say where and what,
        // never the text.
        let f: TokensFile = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            match line {
                Some(line) => format!(
                    "{origin}: line {line}: {} (the line is not shown: it may hold a token)",
                    e.message()
                ),
                None => format!("{origin}: {}", e.message()),
            }
        })?;
        let mut by_token = HashMap::new();
        for (i, e) in f.token.into_iter().enumerate() {
            let at = format!("{origin}: token #{} ({:?})", i + 1, e.name);
            if e.token.trim().len() < 16 {
                return Err(format!("{at}: the token is shorter than 16 characters"));
            }
            if e.tenants.is_empty() {
                return Err(format!("{at}: tenants is empty (list tenants, or \"*\" for all)"));
            }
            let grant = Grant {
                name: e.name,
                tenants: e.tenants,
                write: e.write,
            };
            if by_token.insert(e.token.trim().to_string(), grant).is_some() {
                return Err(format!("{at}: the same token appears twice"));
            }
        }
        if by_token.is_empty() {
            return Err(format!("{origin}: no [[token]] entries"));
        }
        Ok(Tokens { by_token })
    }

    fn grant(&self, headers: &HeaderMap) -> Option<&Grant> {
        let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let token = token.trim();
        // Compare every known token in full, so timing does not tell how
        // much of a guess was right.
        let mut found = None;
        for (known, grant) in &self.by_token {
            if posture_metrics::constant_time_eq(known.as_bytes(), token.as_bytes()) {
                found = Some(grant);
            }
        }
        found
    }
}

/// What the API routes share.
#[derive(Clone)]
pub struct ApiState {
    /// Reads (every GET), ideally as a read-only ClickHouse user.
    pub query: Query,
    /// Writes (exceptions and tasks, for write tokens).
    pub writer: Query,
    /// Bearer tokens and the tenants each may read (and write).
    pub tokens: Arc<Tokens>,
    /// Deadline and concurrency bound of every request.
    pub limits: ApiLimits,
    /// Per-tenant request quotas (`None`: none): a request over its tenant's quota is answered
    /// 429 with `Retry-After`.
    pub quotas: Option<Arc<crate::quota::RequestQuotas>>,
    /// Where refusals and failures are counted (`posture_api_refusals_total{reason}`).
    pub metrics: Option<Arc<posture_metrics::Metrics>>,
}

/// Bounds on the API's requests.
#[derive(Clone, Copy, Debug)]
pub struct ApiLimits {
    /// A request that takes longer is answered 503 (and its ClickHouse queries are cut by
    /// `max_execution_time`, set on the client by the caller).
    pub timeout: std::time::Duration,
    /// At most this many requests are served at once; the others wait their turn.
    pub max_in_flight: usize,
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            timeout: std::time::Duration::from_secs(30),
            max_in_flight: 64,
        }
    }
}

/// The `/api/v1` routes. Merge into the metrics router to serve them on the
/// same port.
pub fn api_router(state: ApiState) -> Router {
    let tenant_routes = Router::new()
        .route("/api/v1/tenants/{tenant}/score", get(score))
        .route("/api/v1/tenants/{tenant}/history", get(history))
        .route("/api/v1/tenants/{tenant}/recommendations", get(recommendations))
        .route("/api/v1/tenants/{tenant}/controls/{control}", get(control_info))
        .route(
            "/api/v1/tenants/{tenant}/controls/{control}/devices",
            get(control_devices),
        )
        .route("/api/v1/tenants/{tenant}/devices/{device}", get(device))
        .route("/api/v1/tenants/{tenant}/whatif", get(whatif))
        .route(
            "/api/v1/tenants/{tenant}/exceptions",
            get(exceptions).post(add_exception),
        )
        .route(
            "/api/v1/tenants/{tenant}/exceptions/{id}/expire",
            post(expire_exception),
        )
        .route("/api/v1/tenants/{tenant}/tasks", get(tasks).post(create_task))
        .route("/api/v1/tenants/{tenant}/tasks/report", get(task_report))
        // Innermost first: the bound on requests in flight, then the tokens and quotas (so a
        // request over its quota never waits for a slot), then the deadline around all of it
        // (waiting for a slot included).
        .route_layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            state.limits.max_in_flight.max(1),
        ))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            state.limits.timeout,
        ))
        // Outermost: every refusal and failure is counted, the deadline's included.
        .layer(middleware::from_fn_with_state(state.clone(), count_refusals))
        .with_state(state.clone());
    // whoami: a bound on requests in flight of the same size (its own) and the same deadline as
    // the tenants' routes (for a "*" token it reads the tenants from ClickHouse).
    let whoami_route = Router::new()
        .route("/api/v1/whoami", get(whoami))
        .route_layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            state.limits.max_in_flight.max(1),
        ))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            state.limits.timeout,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), count_refusals))
        .with_state(state);
    Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .merge(whoami_route)
        .merge(tenant_routes)
}

/// 401 with `WWW-Authenticate: Bearer`: no bearer token, or one the tokens file does not name.
fn unauthorized() -> Response {
    let mut r = error(
        StatusCode::UNAUTHORIZED,
        "a bearer token is required (Authorization: Bearer TOKEN)",
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        "Bearer realm=\"posture\"".parse().expect("ASCII"),
    );
    r
}

/// `GET /api/v1/whoami`: the token's name, the tenants it may read (for a token of `"*"`, every
/// tenant with data, from the trend store) and whether it may write. The dashboard page asks
/// it right after the login.
async fn whoami(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    let Some(grant) = state.tokens.grant(&headers) else {
        return unauthorized();
    };
    let mut tenants: Vec<String> = grant.tenants.iter().filter(|t| *t != "*").cloned().collect();
    if grant.tenants.iter().any(|t| t == "*") {
        match state.query.tenants_latest().await {
            Ok(all) => tenants.extend(all.into_iter().map(|t| t.tenant)),
            Err(e) => return e.into_response(),
        }
    }
    tenants.sort();
    tenants.dedup();
    Json(serde_json::json!({ "name": grant.name, "tenants": tenants, "write": grant.write })).into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

impl IntoResponse for QueryError {
    fn into_response(self) -> Response {
        match self {
            QueryError::BadRequest(m) => error(StatusCode::BAD_REQUEST, m),
            QueryError::NotFound(m) => error(StatusCode::NOT_FOUND, m),
            QueryError::ClickHouse { query, detail } => {
                // ClickHouse's words name the database, tables, server version and user: they
                // go to the log, the client gets an id to find them there.
                let id = format!("{:016x}", fastrand::u64(..));
                tracing::error!(request_id = %id, "API query {query} failed in ClickHouse: {detail}");
                let mut r = error(
                    StatusCode::BAD_GATEWAY,
                    format!("the query failed in ClickHouse (request id {id}: the server log has the detail)"),
                );
                if let Ok(v) = id.parse() {
                    r.headers_mut().insert("posture-request-id", v);
                }
                r
            }
        }
    }
}

/// A download's file name: letters, digits, `.`, `_` and `-` of `name` (others become `_`), at
/// most 100 of them. Names come from device and control ids, which a producer chooses.
fn file_name(name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect();
    if clean.trim_matches(['.', '_']).is_empty() {
        "export".to_string()
    } else {
        clean
    }
}

/// Counts the answers that refuse or fail a request (`posture_api_refusals_total{reason}`).
async fn count_refusals(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    let r = next.run(req).await;
    if let Some(m) = &state.metrics {
        m.api_refused(r.status().as_u16());
    }
    r
}

/// 401 without a known bearer token, 403 for a tenant it does not cover.
async fn authorize(
    State(state): State<ApiState>,
    Path(params): Path<HashMap<String, String>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(grant) = state.tokens.grant(req.headers()) else {
        return unauthorized();
    };
    let tenant = params.get("tenant").map(String::as_str).unwrap_or_default();
    if !grant.covers(tenant) {
        return error(
            StatusCode::FORBIDDEN,
            format!("token {:?} may not read tenant {tenant:?}", grant.name),
        );
    }
    if let Some(q) = &state.quotas {
        if let Err(whose) = q.allow(&grant.name, tenant, std::time::Instant::now()) {
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "{whose} is over its request quota (tenant {tenant:?}, token {:?}; --api-tenant-requests-per-sec); retry in a second",
                    grant.name
                ),
            );
            r.headers_mut().insert(header::RETRY_AFTER, "1".parse().expect("ASCII"));
            return r;
        }
    }
    if !matches!(*req.method(), axum::http::Method::GET | axum::http::Method::HEAD) && !grant.write {
        return error(
            StatusCode::FORBIDDEN,
            format!(
                "token {:?} is read-only (write = true in the tokens file allows changes)",
                grant.name
            ),
        );
    }
    let caller = Caller(grant.name.clone());
    let mut req = req;
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// Who makes a request: the name of its token in the tokens file. Exceptions and tasks record
/// it as their author (a client does not get to say who it is).
#[derive(Clone, Debug)]
struct Caller(String);

impl Caller {
    /// The author of what the request writes: the token's name. A body's `author` may only
    /// repeat it.
    fn author(&self, given: &str) -> Result<String, QueryError> {
        if !given.is_empty() && given != self.0 {
            return Err(QueryError::BadRequest(format!(
                "author {given:?}: the author is the token's name ({:?}); leave author out",
                self.0
            )));
        }
        Ok(self.0.clone())
    }
}

/// JSON or CSV, from `?format=` or else the Accept header.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Csv,
}

fn format(q: &Common, headers: &HeaderMap) -> Result<Format, QueryError> {
    match q.format.as_deref() {
        Some("json") => Ok(Format::Json),
        Some("csv") => Ok(Format::Csv),
        Some(other) => Err(QueryError::BadRequest(format!(
            "format {other:?}: expected json or csv"
        ))),
        None => {
            let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
            Ok(if accept.contains("text/csv") {
                Format::Csv
            } else {
                Format::Json
            })
        }
    }
}

/// The answer in the format asked for: JSON, or CSV made by `csv` as a download named `name`.
fn respond<T: serde::Serialize>(f: Format, v: &T, csv: impl FnOnce(&T) -> String, name: &str) -> Response {
    match f {
        Format::Json => Json(v).into_response(),
        Format::Csv => csv_response(csv(v), name),
    }
}

/// The cut an answer reflects, in headers (the JSON arrays of history and recommendations
/// have no room for it): `Posture-Complete-Through` and `Posture-Cut`.
fn with_cut(mut r: Response, cut: &posture_core::report::Cut) -> Response {
    let h = r.headers_mut();
    if let Some(t) = cut.complete_through.as_deref().and_then(|t| t.parse().ok()) {
        h.insert("posture-complete-through", t);
    }
    let parts: Vec<String> = cut
        .partitions
        .iter()
        .map(|p| format!("{}:{}", p.partition, p.last_offset))
        .collect();
    if let Ok(v) = parts.join(",").parse() {
        h.insert("posture-cut", v);
    }
    r
}

fn csv_response(body: String, name: &str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{}.csv\"", file_name(name)),
            ),
        ],
        body,
    )
        .into_response()
}

/// Query parameters most routes take.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Common {
    group: Option<String>,
    category: Option<String>,
    remediation: Option<String>,
    os: Option<String>,
    at: Option<String>,
    from: Option<String>,
    to: Option<String>,
    bucket: Option<String>,
    top: Option<usize>,
    state: Option<String>,
    control: Option<String>,
    exception: Option<String>,
    format: Option<String>,
}

impl Common {
    fn scope(&self, tenant: &str) -> Scope {
        Scope {
            tenant: tenant.to_string(),
            group: self.group.clone().filter(|g| !g.is_empty()),
        }
    }

    fn time(name: &str, v: &Option<String>) -> Result<Option<i64>, QueryError> {
        v.as_deref()
            .map(|s| parse_time(s).map_err(|e| QueryError::BadRequest(format!("{name}: {e}"))))
            .transpose()
    }

    fn at(&self) -> Result<i64, QueryError> {
        Ok(Common::time("at", &self.at)?.unwrap_or_else(now_ms))
    }

    fn category(&self) -> Result<Option<Category>, QueryError> {
        self.category
            .as_deref()
            .map(|c| {
                Category::parse(c).ok_or_else(|| {
                    QueryError::BadRequest(format!(
                        "category {c:?}: expected application, os, network, accounts or security_controls"
                    ))
                })
            })
            .transpose()
    }

    fn remediation(&self) -> Result<Option<Remediation>, QueryError> {
        self.remediation
            .as_deref()
            .map(|r| {
                Remediation::parse(r).ok_or_else(|| {
                    QueryError::BadRequest(format!(
                        "remediation {r:?}: expected configuration_change or software_update"
                    ))
                })
            })
            .transpose()
    }
}

type Answer = Result<Response, QueryError>;

async fn score(
    State(s): State<ApiState>,
    Path(tenant): Path<String>,
    Params(p): Params<Common>,
    headers: HeaderMap,
) -> Answer {
    let f = format(&p, &headers)?;
    let score = s.query.score(&p.scope(&tenant), p.category()?, p.at()?).await?;
    let cut = score.cut.clone().unwrap_or_default();
    Ok(with_cut(respond(f, &score, csv_out::score, "score"), &cut))
}

async fn history(
    State(s): State<ApiState>,
    Path(tenant): Path<String>,
    Params(p): Params<Common>,
    headers: HeaderMap,
) -> Answer {
    let f = format(&p, &headers)?;
    let to = Common::time("to", &p.to)?.unwrap_or_else(now_ms);
    let from = Common::time("from", &p.from)?.unwrap_or(to - 30 * 86_400_000);
    let bucket = Bucket::parse(p.bucket.as_deref().unwrap_or("day")).map_err(QueryError::BadRequest)?;
    let (h, cut) = s
        .query
        .history(&p.scope(&tenant), p.category()?, from, to, bucket)
        .await?;
    Ok(with_cut(respond(f, &h, |x| csv_out::history(x), "history"), &cut))
}

async fn recommendations(
    State(s): State<ApiState>,
    Path(tenant): Path<String>,
    Params(p): Params<Common>,
    headers: HeaderMap,
) -> Answer {
    let f = format(&p, &headers)?;
    let filters = Filters {
        category: p.category()?,
        remediation: p.remediation()?,
        os: p.os.as_deref(),
    };
    let (mut recs, cut) = s.query.recommendations(&p.scope(&tenant), filters, p.at()?).await?;
    if let Some(top) = p.top {
        recs.truncate(top);
    }
    Ok(with_cut(
        respond(f, &recs, |x| csv_out::recommendations(x), "recommendations"),
        &cut,
    ))
}

/// `GET /api/v1/tenants/{t}/controls/{c}`: the control as its baseline describes it (title,
/// category, points, remediation type and text, rationale, vulnerabilities, check): what a
/// recommendation's detail shows beside the tenant's figures.
async fn control_info(State(s): State<ApiState>, Path((_tenant, control)): Path<(String, String)>) -> Answer {
    let cat = s.query.catalog();
    let Some((i, c)) = cat.controls.iter().enumerate().find(|(_, c)| c.id == control) else {
        return Err(QueryError::NotFound(format!("no control {control:?} in the baselines")));
    };
    Ok(Json(serde_json::json!({
        "control": c.id,
        "title": c.title,
        "category": c.category.as_str(),
        "points": posture_core::types::micros_to_points(c.points),
        "remediation": c.remediation.as_str(),
        "remediation_text": c.remediation_text,
        "rationale": c.rationale,
        "vulnerabilities": c.vulnerabilities,
        "check": crate::check_text(cat, i as posture_core::ControlIdx),
    }))
    .into_response())
}

async fn control_devices(
    State(s): State<ApiState>,
    Path((tenant, control)): Path<(String, String)>,
    Params(p): Params<Common>,
    headers: HeaderMap,
) -> Answer {
    let f = format(&p, &headers)?;
    let state = p.state.as_deref().unwrap_or("FAIL");
    let group = p.group.as_deref().filter(|g| !g.is_empty());
    let v = s
        .query
        .control_devices(&tenant, &control, state, group, p.os.as_deref())
        .await?;
    Ok(respond(
        f,
        &v,
        |x| csv_out::device_controls(x),
        &format!("{control}-devices"),
    ))
}

async fn device(
    State(s): State<ApiState>,
    Path((tenant, device)): Path<(String, String)>,
    Params(p): Params<Common>,
    headers: HeaderMap,
) -> Answer {
    let f = format(&p, &headers)?;
    let d = s.query.device(&tenant, &device, p.at()?).await?;
    Ok(respond(
        f,
        &d,
        |d| csv_out::device_controls(&d.controls),
        &format!("{device}-controls"),
    ))
}

async fn whatif(
    State(s): State<ApiState>,
    Path(tenant): Path<String>,
    Params(p): Params<Common>,
    headers: HeaderMap,
) -> Answer {
    let f = format(&p, &headers)?;
    let control = p
        .control
        .as_deref()
        .ok_or_else(|| QueryError::BadRequest("control is required (?control=ID)".into()))?;
    let change = match &p.exception {
        None => Change::Fix,
        Some(j) => Change::Exception {
            justification: j.clone(),
        },
    };
    let applied = p.scope(&tenant);
    let at = p.at()?;
    let mut answers = vec![
        s.query
            .whatif(&Scope::tenant(&tenant), &applied, control, change.clone(), at)
            .await?,
    ];
    if applied.group.is_some() {
        answers.push(s.query.whatif(&applied, &applied, control, change, at).await?);
    }
    Ok(respond(f, &answers, |x| csv_out::whatif(x), "whatif"))
}

fn body<T>(b: Result<Json<T>, JsonRejection>) -> Result<T, QueryError> {
    b.map(|Json(v)| v)
        .map_err(|e| QueryError::BadRequest(format!("the request body: {}", e.body_text())))
}

async fn exceptions(
    State(s): State<ApiState>,
    Path(tenant): Path<String>,
    Params(p): Params<Common>,
    headers: HeaderMap,
) -> Answer {
    let f = format(&p, &headers)?;
    let v = s.query.exceptions(&tenant).await?;
    Ok(respond(f, &v, |x| csv_out::exceptions(x), "exceptions"))
}

async fn add_exception(
    State(s): State<ApiState>,
    Path(tenant): Path<String>,
    axum::Extension(caller): axum::Extension<Caller>,
    b: Result<Json<NewException>, JsonRejection>,
) -> Answer {
    let mut new = body(b)?;
    new.author = caller.author(&new.author)?;
    let e = s.writer.add_exception(&tenant, new).await?;
    Ok((StatusCode::CREATED, Json(e)).into_response())
}

/// The body of `POST .../exceptions/{id}/expire`: when (default now).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Expire {
    at: Option<String>,
}

async fn expire_exception(
    State(s): State<ApiState>,
    Path((tenant, id)): Path<(String, String)>,
    b: Option<Json<Expire>>,
) -> Answer {
    let at = Common::time("at", &b.unwrap_or_default().0.at)?;
    Ok(Json(s.writer.expire_exception(&tenant, &id, at).await?).into_response())
}

async fn tasks(
    State(s): State<ApiState>,
    Path(tenant): Path<String>,
    Params(p): Params<Common>,
    headers: HeaderMap,
) -> Answer {
    let f = format(&p, &headers)?;
    let v = s.query.tasks(&tenant).await?;
    Ok(respond(f, &v, |x| csv_out::tasks(x), "tasks"))
}

async fn create_task(
    State(s): State<ApiState>,
    Path(tenant): Path<String>,
    axum::Extension(caller): axum::Extension<Caller>,
    b: Result<Json<NewTask>, JsonRejection>,
) -> Answer {
    let mut new = body(b)?;
    new.author = caller.author(&new.author)?;
    let t = s.writer.create_task(&tenant, new).await?;
    Ok((StatusCode::CREATED, Json(t)).into_response())
}

async fn task_report(State(s): State<ApiState>, Path(tenant): Path<String>) -> Answer {
    Ok(Json(s.query.task_report(&tenant).await?).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clickhouse_errors_reach_the_log_not_the_client() {
        let e = QueryError::ClickHouse {
            query: "score_at",
            detail:
                "Code: 60. DB::Exception: Table posture_prod.transitions doesn't exist (version 18.16.1), user admin"
                    .into(),
        };
        let r = e.into_response();
        assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
        let id = r.headers()["posture-request-id"].to_str().unwrap().to_string();
        let body = futures_body(r);
        assert!(body.contains(&id), "{body}");
        for secret in ["DB::Exception", "posture_prod", "18.16", "admin", "score_at"] {
            assert!(!body.contains(secret), "{secret} leaks: {body}");
        }
    }

    /// The API router over a one-control catalog (`fw`, network, 10 points) with the tokens of
    /// `tokens_toml` and no ClickHouse behind it: a request that reaches ClickHouse fails (502).
    fn router_without_clickhouse(
        tokens_toml: &str,
        quotas: Option<f64>,
        metrics: Option<Arc<posture_metrics::Metrics>>,
    ) -> Router {
        let catalog = Arc::new(
            posture_core::Catalog::from_sources(&[(
                "q.yaml",
                "baseline: q\nversion: 1\ncontrols:\n  - { id: fw, title: F, category: network, points: 10, check: { key: fw, op: eq, value: true } }\n",
            )])
            .unwrap(),
        );
        let nowhere = Query::new(clickhouse::Client::default().with_url("http://127.0.0.1:9"), catalog);
        api_router(ApiState {
            query: nowhere.clone(),
            writer: nowhere,
            tokens: Arc::new(Tokens::parse("t", tokens_toml).unwrap()),
            limits: ApiLimits::default(),
            quotas: quotas.map(|q| Arc::new(crate::quota::RequestQuotas::new(q))),
            metrics,
        })
    }

    /// `GET path` through `app` with the bearer `token`, on `rt`.
    fn get_as(rt: &tokio::runtime::Runtime, app: &Router, path: &str, token: &str) -> Response {
        use tower::ServiceExt;
        let req = axum::http::Request::get(path)
            .header("authorization", format!("Bearer {token}"))
            .body(axum::body::Body::empty())
            .unwrap();
        rt.block_on(app.clone().oneshot(req)).unwrap()
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn a_tenant_over_its_quota_gets_429_and_others_do_not() {
        let rt = runtime();
        let token = "reader-token-0123456789";
        // Requests that pass the quota fail at ClickHouse (502), the others never get that
        // far (429).
        let metrics = Arc::new(posture_metrics::Metrics::new());
        let app = router_without_clickhouse(
            &format!("[[token]]\nname = \"r\"\ntoken = \"{token}\"\ntenants = [\"*\"]\n"),
            Some(1.5),
            Some(metrics.clone()),
        );
        let status = |tenant: &str| {
            let r = get_as(&rt, &app, &format!("/api/v1/tenants/{tenant}/exceptions"), token);
            (
                r.status().as_u16(),
                r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string()),
            )
        };
        let a: Vec<u16> = (0..5).map(|_| status("a").0).collect();
        assert_eq!(a, [502, 502, 502, 429, 429], "a burst of 3, then 429");
        assert_eq!(status("a").1.as_deref(), Some("1"), "Retry-After");
        assert_eq!(status("b").0, 502, "another tenant has its own quota");
        // Every refusal and failure is counted by reason.
        let text = metrics.encode().unwrap();
        for (reason, n) in [("over_quota", 3), ("clickhouse", 4)] {
            let line = format!("posture_api_refusals_total{{reason=\"{reason}\"}} {n}");
            assert!(text.contains(&line), "{line} in:\n{text}");
        }
    }

    #[test]
    fn whoami_names_the_tokens_tenants_and_right_and_refuses_a_wrong_token() {
        let rt = runtime();
        // A token with named tenants needs no ClickHouse (only "*" lists the tenants with data).
        let app = router_without_clickhouse(
            "[[token]]\nname = \"soc\"\ntoken = \"soc-token-0123456789\"\ntenants = [\"t2\", \"t1\"]\nwrite = true\n",
            None,
            None,
        );
        let ask = |path: &str, token: &str| {
            let r = get_as(&rt, &app, path, token);
            (r.status().as_u16(), futures_body(r))
        };
        let (status, body) = ask("/api/v1/whoami", "soc-token-0123456789");
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"name": "soc", "tenants": ["t1", "t2"], "write": true})
        );
        let (status, body) = ask("/api/v1/whoami", "soc-token-0123456789-not");
        assert_eq!(status, 401, "{body}");

        // A control as its baseline describes it (the page's recommendation detail).
        let control = |path: &str| ask(path, "soc-token-0123456789");
        let (status, body) = control("/api/v1/tenants/t1/controls/fw");
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["title"], "F");
        assert_eq!(v["category"], "network");
        assert_eq!(v["points"], 10.0);
        assert_eq!(v["check"], "fw eq true");
        assert_eq!(control("/api/v1/tenants/t1/controls/nope").0, 404);
        assert_eq!(control("/api/v1/tenants/t9/controls/fw").0, 403, "another tenant");
    }

    #[test]
    fn download_names_are_sanitized() {
        assert_eq!(file_name("fw-devices"), "fw-devices");
        assert_eq!(
            file_name("evil\"; filename=x.exe\r\nX: y"),
            "evil___filename_x.exe__X__y"
        );
        assert_eq!(file_name("../../etc/passwd"), ".._.._etc_passwd");
        assert_eq!(file_name("ü/"), "export");
        assert_eq!(file_name(&"a".repeat(500)).len(), 100);
    }

    fn futures_body(r: Response) -> String {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let bytes = rt.block_on(axum::body::to_bytes(r.into_body(), 1 << 20)).unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[test]
    fn a_broken_tokens_file_is_reported_without_its_text() {
        let secret = "very-secret-token-0123456789";
        for text in [
            format!("[[token]]\nname = \"ops\"\ntoken = \"{secret}\ntenants = [\"*\"]\n"),
            format!("[[token]]\nname = \"ops\"\ntoken = {secret}\ntenants = [\"*\"]\n"),
            format!("[[token]]\nname = \"ops\"\ntoken = \"{secret}\"\ntenants = [\"*\"]\nextra = 1\n"),
        ] {
            let err = Tokens::parse("tokens.toml", &text).unwrap_err();
            assert!(!err.contains("very-secret"), "the token leaks: {err}");
            assert!(err.starts_with("tokens.toml: "), "{err}");
        }
        let err = Tokens::parse("tokens.toml", &format!("[[token]]\nname = \"ops\"\ntoken = {secret}\n")).unwrap_err();
        assert!(err.contains("line 3"), "where: {err}");
        let ok = format!("[[token]]\nname = \"ops\"\ntoken = \"{secret}\"\ntenants = [\"*\"]\n");
        assert!(Tokens::parse("tokens.toml", &ok).is_ok());
    }
}
