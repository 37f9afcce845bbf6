//! The HTTP port end to end: a real server on 127.0.0.1:0, real requests.

use axum::routing::get;
use axum::Router;
use posture_metrics::{
    router, serve, HttpError, HttpServer, HttpState, Metrics, MetricsConfig, Readiness, ScoreLimits, TopicKind,
    METRICS_CONTENT_TYPE,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

/// The contract with dashboards and alert rules: every name and its type.
const EXPECTED: [(&str, &str); 24] = [
    ("posture_events_consumed_total", "counter"),
    ("posture_events_applied_total", "counter"),
    ("posture_events_stale_total", "counter"),
    ("posture_events_dead_lettered_total", "counter"),
    ("posture_transitions_emitted_total", "counter"),
    ("posture_sink_rows_total", "counter"),
    ("posture_sink_batches_total", "counter"),
    ("posture_sink_retries_total", "counter"),
    ("posture_sink_failures_total", "counter"),
    ("posture_sink_batch_duration_seconds", "histogram"),
    ("posture_kafka_produced_total", "counter"),
    ("posture_consumer_lag_records", "gauge"),
    ("posture_devices", "gauge"),
    ("posture_state_bytes", "gauge"),
    ("posture_restore_duration_seconds", "histogram"),
    ("posture_freshness_seconds", "histogram"),
    ("posture_score_percent", "gauge"),
    ("posture_alerts_published_total", "counter"),
    ("posture_last_flush_timestamp_seconds", "gauge"),
    ("posture_build_info", "gauge"),
    ("posture_partitions_assigned", "gauge"),
    ("posture_unassigned_seconds", "gauge"),
    ("posture_group_rejoins_total", "counter"),
    ("posture_api_refusals_total", "counter"),
];

const REASONS: [&str; 15] = posture_metrics::DEAD_LETTER_REASONS;

struct Running {
    base: String,
    metrics: Arc<Metrics>,
    ready: Arc<Readiness>,
    client: reqwest::Client,
}

async fn start_with(config: MetricsConfig, extra: Option<Router>) -> Running {
    let metrics = Arc::new(Metrics::with_config(config));
    let ready = Arc::new(Readiness::new());
    let state = HttpState {
        metrics: metrics.clone(),
        ready: ready.clone(),
        metrics_token: None,
    };
    let server = HttpServer::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0);
    let mut app = router(state);
    if let Some(extra) = extra {
        app = app.merge(extra);
    }
    tokio::spawn(server.run(app));
    Running {
        base: format!("http://{addr}"),
        metrics,
        ready,
        // No proxy: whatever the environment says, these requests stay on loopback.
        client: reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
    }
}

async fn start() -> Running {
    start_with(MetricsConfig::default(), None).await
}

impl Running {
    async fn get(&self, path: &str) -> (u16, String, String) {
        let resp = self.client.get(format!("{}{path}", self.base)).send().await.unwrap();
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (status, ct, resp.text().await.unwrap())
    }

    async fn scrape(&self) -> Exposition {
        let (status, ct, body) = self.get("/metrics").await;
        assert_eq!(status, 200);
        assert_eq!(ct, METRICS_CONTENT_TYPE);
        Exposition::parse(&body)
    }
}

/// A parsed text exposition: HELP and TYPE per family, and every sample.
#[derive(Debug, Default)]
struct Exposition {
    help: BTreeMap<String, String>,
    types: BTreeMap<String, String>,
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Exposition {
    fn parse(text: &str) -> Exposition {
        let mut e = Exposition::default();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').expect("HELP has a text");
                e.help.insert(name.to_owned(), help.to_owned());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, ty) = rest.split_once(' ').expect("TYPE has a type");
                e.types.insert(name.to_owned(), ty.to_owned());
            } else {
                assert!(!line.starts_with('#'), "unexpected comment: {line}");
                let (series, value) = line.rsplit_once(' ').expect("sample has a value");
                let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line}"));
                let (name, labels) = match series.split_once('{') {
                    None => (series, BTreeMap::new()),
                    Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}').expect("labels close"))),
                };
                e.samples.push((name.to_owned(), labels, value));
            }
        }
        e
    }

    /// Every sample of `name` as (labels, value).
    fn series(&self, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        self.samples
            .iter()
            .filter(|(n, _, _)| n == name)
            .map(|(_, l, v)| (l.clone(), *v))
            .collect()
    }

    /// The value of the sample of `name` with exactly `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.samples
            .iter()
            .find(|(n, l, _)| n == name && *l == want)
            .map(|(_, _, v)| *v)
    }
}

/// `a="x",b="y"` (values without escapes; these tests use none).
fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while !rest.is_empty() {
        let (k, after) = rest.split_once("=\"").expect("label has a value");
        let (v, after) = after.split_once('"').expect("value closes");
        out.insert(k.to_owned(), v.to_owned());
        rest = after.strip_prefix(',').unwrap_or(after);
    }
    out
}

#[tokio::test]
async fn healthz_answers_ok() {
    let s = start().await;
    let (status, ct, body) = s.get("/healthz").await;
    assert_eq!(status, 200);
    assert!(ct.starts_with("text/plain"), "{ct}");
    assert_eq!(body, "ok");
}

#[tokio::test]
async fn metrics_has_every_name_with_help_and_type() {
    let s = start().await;
    // The series of these two come from the running pipeline: set one each.
    s.metrics.set_consumer_lag("posture.events", 3, 42);
    s.metrics.set_score("acme", None, 87.5);
    let e = s.scrape().await;
    for (name, ty) in EXPECTED {
        let help = e.help.get(name).unwrap_or_else(|| panic!("no HELP for {name}"));
        assert!(help.len() > 10, "HELP of {name} says nothing: {help:?}");
        assert_eq!(e.types.get(name).map(String::as_str), Some(ty), "TYPE of {name}");
        let sample_name = if ty == "histogram" {
            format!("{name}_count")
        } else {
            name.to_owned()
        };
        assert!(!e.series(&sample_name).is_empty(), "no sample of {name}");
    }
    // Nothing else is exposed: the set of names is the contract.
    assert_eq!(e.types.len(), EXPECTED.len(), "{:?}", e.types.keys());
    assert_eq!(
        e.value(
            "posture_consumer_lag_records",
            &[("topic", "posture.events"), ("partition", "3")]
        ),
        Some(42.0)
    );
    assert_eq!(
        e.value("posture_score_percent", &[("tenant", "acme"), ("group", "")]),
        Some(87.5)
    );
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(e.value("posture_build_info", &[("version", version)]), Some(1.0));
}

#[tokio::test]
async fn fixed_label_values_are_registered_at_zero() {
    let s = start().await;
    let e = s.scrape().await;
    for reason in REASONS.iter().chain(&["other"]) {
        assert_eq!(
            e.value("posture_events_dead_lettered_total", &[("reason", reason)]),
            Some(0.0),
            "{reason}"
        );
    }
    assert_eq!(e.series("posture_events_dead_lettered_total").len(), REASONS.len() + 1);
    for table in ["transitions", "device_state", "score_rollup", "other"] {
        assert_eq!(
            e.value("posture_sink_rows_total", &[("table", table)]),
            Some(0.0),
            "{table}"
        );
    }
    for kind in ["score_deltas", "dead_letter", "alerts"] {
        assert_eq!(
            e.value("posture_kafka_produced_total", &[("topic_kind", kind)]),
            Some(0.0),
            "{kind}"
        );
    }
    // No score or lag series before the pipeline sets one.
    assert!(e.series("posture_score_percent").is_empty());
    assert!(e.series("posture_consumer_lag_records").is_empty());
}

#[tokio::test]
async fn helpers_record_what_they_say() {
    let s = start().await;
    let m = &s.metrics;
    m.events_consumed(10);
    m.events_applied(7);
    m.events_stale(2);
    m.dead_lettered("bad_magic");
    m.transitions_emitted(5);
    m.sink_rows("transitions", 5);
    m.sink_rows("score_rollup", 3);
    m.sink_batch(Duration::from_millis(20));
    m.sink_batch(Duration::from_secs(40));
    m.sink_retry();
    m.sink_failure();
    m.kafka_produced(TopicKind::ScoreDeltas, 5);
    m.kafka_produced(TopicKind::DeadLetter, 1);
    m.kafka_produced(TopicKind::Alerts, 1);
    m.set_devices(2000);
    m.set_state_bytes(123_456);
    m.observe_restore(Duration::from_millis(1500));
    m.observe_freshness(Duration::from_millis(300));
    m.alerts_published(1);
    m.flushed_at(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    m.set_consumer_lag("posture.events", 0, 9);
    m.set_consumer_lag("posture.events", 1, 4);
    m.remove_consumer_lag("posture.events", 1);
    m.remove_consumer_lag("posture.events", 7); // never set: no effect

    let e = s.scrape().await;
    let v = |name: &str, labels: &[(&str, &str)]| e.value(name, labels).unwrap_or_else(|| panic!("no {name}"));
    assert_eq!(v("posture_events_consumed_total", &[]), 10.0);
    assert_eq!(v("posture_events_applied_total", &[]), 7.0);
    assert_eq!(v("posture_events_stale_total", &[]), 2.0);
    assert_eq!(v("posture_events_dead_lettered_total", &[("reason", "bad_magic")]), 1.0);
    assert_eq!(v("posture_transitions_emitted_total", &[]), 5.0);
    assert_eq!(v("posture_sink_rows_total", &[("table", "transitions")]), 5.0);
    assert_eq!(v("posture_sink_rows_total", &[("table", "score_rollup")]), 3.0);
    assert_eq!(v("posture_sink_batches_total", &[]), 2.0);
    assert_eq!(v("posture_sink_retries_total", &[]), 1.0);
    assert_eq!(v("posture_sink_failures_total", &[]), 1.0);
    assert_eq!(v("posture_sink_batch_duration_seconds_count", &[]), 2.0);
    assert_eq!(v("posture_sink_batch_duration_seconds_bucket", &[("le", "0.005")]), 0.0);
    assert_eq!(v("posture_sink_batch_duration_seconds_bucket", &[("le", "0.025")]), 1.0);
    assert_eq!(v("posture_sink_batch_duration_seconds_bucket", &[("le", "30")]), 1.0);
    assert_eq!(v("posture_sink_batch_duration_seconds_bucket", &[("le", "+Inf")]), 2.0);
    assert_eq!(
        v("posture_kafka_produced_total", &[("topic_kind", "score_deltas")]),
        5.0
    );
    assert_eq!(v("posture_kafka_produced_total", &[("topic_kind", "dead_letter")]), 1.0);
    assert_eq!(v("posture_kafka_produced_total", &[("topic_kind", "alerts")]), 1.0);
    assert_eq!(v("posture_devices", &[]), 2000.0);
    assert_eq!(v("posture_state_bytes", &[]), 123_456.0);
    assert_eq!(v("posture_restore_duration_seconds_bucket", &[("le", "0.01")]), 0.0);
    assert_eq!(v("posture_restore_duration_seconds_bucket", &[("le", "2.5")]), 1.0);
    assert!(e
        .value("posture_restore_duration_seconds_bucket", &[("le", "120")])
        .is_some());
    assert_eq!(v("posture_freshness_seconds_bucket", &[("le", "0.25")]), 0.0);
    assert_eq!(v("posture_freshness_seconds_bucket", &[("le", "0.5")]), 1.0);
    assert!(e.value("posture_freshness_seconds_bucket", &[("le", "60")]).is_some());
    assert_eq!(v("posture_alerts_published_total", &[]), 1.0);
    assert_eq!(v("posture_last_flush_timestamp_seconds", &[]), 1_700_000_000.0);
    assert_eq!(e.series("posture_consumer_lag_records").len(), 1);
    assert_eq!(
        v(
            "posture_consumer_lag_records",
            &[("topic", "posture.events"), ("partition", "0")]
        ),
        9.0
    );
}

#[tokio::test]
async fn unknown_dead_letter_reason_and_table_count_as_other() {
    let s = start().await;
    s.metrics.dead_lettered("some-new-reason");
    s.metrics.dead_lettered("device-42");
    s.metrics.dead_lettered("too_short");
    s.metrics.sink_rows("device_scores", 4);
    let e = s.scrape().await;
    let dl = "posture_events_dead_lettered_total";
    assert_eq!(e.value(dl, &[("reason", "other")]), Some(2.0));
    assert_eq!(e.value(dl, &[("reason", "too_short")]), Some(1.0));
    assert_eq!(e.value(dl, &[("reason", "some-new-reason")]), None);
    assert_eq!(e.series(dl).len(), REASONS.len() + 1, "no new series");
    assert_eq!(e.value("posture_sink_rows_total", &[("table", "other")]), Some(4.0));
    assert_eq!(
        e.series("posture_sink_rows_total").len(),
        posture_metrics::SINK_TABLES.len() + 1
    );
}

#[tokio::test]
async fn tenants_beyond_the_cap_go_to_overflow() {
    let config = MetricsConfig {
        score_limits: ScoreLimits {
            max_tenants: 2,
            groups: vec!["laptops".into()],
            max_groups: 1,
        },
        ..MetricsConfig::default()
    };
    let s = start_with(config, None).await;
    let m = &s.metrics;
    for (i, tenant) in ["t0", "t1", "t2", "t3", "t4"].iter().enumerate() {
        m.set_score(tenant, None, 10.0 * (i as f64 + 1.0));
    }
    m.set_score("t0", Some("laptops"), 55.0);
    m.set_score("t0", Some("servers"), 20.0);
    m.set_score("t0", Some("kiosks"), 30.0);
    m.set_score("t3", Some("laptops"), 99.0);
    let e = s.scrape().await;
    let sp = "posture_score_percent";
    let mut tenants: Vec<String> = e.series(sp).into_iter().map(|(l, _)| l["tenant"].clone()).collect();
    tenants.sort();
    tenants.dedup();
    assert_eq!(tenants, ["_overflow", "t0", "t1"]);
    assert_eq!(e.value(sp, &[("tenant", "t0"), ("group", "")]), Some(10.0));
    assert_eq!(e.value(sp, &[("tenant", "t1"), ("group", "")]), Some(20.0));
    // t2, t3, t4: the mean of 30, 40, 50.
    assert_eq!(e.value(sp, &[("tenant", "_overflow"), ("group", "")]), Some(40.0));
    // The allow-listed group has its own series; others are their mean.
    assert_eq!(e.value(sp, &[("tenant", "t0"), ("group", "laptops")]), Some(55.0));
    assert_eq!(e.value(sp, &[("tenant", "t0"), ("group", "_overflow")]), Some(25.0));
    assert_eq!(
        e.value(sp, &[("tenant", "_overflow"), ("group", "_overflow")]),
        Some(99.0)
    );
    assert_eq!(e.series(sp).len(), 6);
}

#[tokio::test]
async fn default_limits_keep_only_tenant_series() {
    let s = start().await;
    s.metrics.set_score("acme", None, 90.0);
    s.metrics.set_score("acme", Some("laptops"), 80.0);
    let e = s.scrape().await;
    let sp = "posture_score_percent";
    assert_eq!(e.value(sp, &[("tenant", "acme"), ("group", "")]), Some(90.0));
    assert_eq!(e.value(sp, &[("tenant", "acme"), ("group", "laptops")]), None);
    assert_eq!(e.value(sp, &[("tenant", "acme"), ("group", "_overflow")]), Some(80.0));
}

#[tokio::test]
async fn readiness_flips_between_503_and_200() {
    let s = start().await;
    let (status, ct, body) = s.get("/readyz").await;
    assert_eq!(status, 503);
    assert!(ct.starts_with("text/plain"), "{ct}");
    assert_eq!(body, "not ready: starting");

    s.ready.set_not_ready("restoring state of 3 partitions");
    let (status, _, body) = s.get("/readyz").await;
    assert_eq!(
        (status, body.as_str()),
        (503, "not ready: restoring state of 3 partitions")
    );

    s.ready.set_ready();
    assert!(s.ready.is_ready());
    let (status, _, body) = s.get("/readyz").await;
    assert_eq!((status, body.as_str()), (200, "ok"));

    s.ready.set_not_ready("no partitions assigned");
    let (status, _, body) = s.get("/readyz").await;
    assert_eq!((status, body.as_str()), (503, "not ready: no partitions assigned"));
    // Liveness does not depend on readiness.
    assert_eq!(s.get("/healthz").await.0, 200);
}

#[tokio::test]
async fn unknown_paths_are_404_and_other_methods_405() {
    let s = start().await;
    for path in ["/", "/nope", "/metrics/x", "/api/v1/score"] {
        assert_eq!(s.get(path).await.0, 404, "{path}");
    }
    for path in ["/metrics", "/healthz", "/readyz"] {
        for method in [reqwest::Method::POST, reqwest::Method::PUT, reqwest::Method::DELETE] {
            let resp = s
                .client
                .request(method.clone(), format!("{}{path}", s.base))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), 405, "{method} {path}");
        }
    }
}

#[tokio::test]
async fn extra_routes_merge_into_the_same_port() {
    let api = Router::new().route("/api/v1/ping", get(|| async { "pong" }));
    let s = start_with(MetricsConfig::default(), Some(api)).await;
    let (status, _, body) = s.get("/api/v1/ping").await;
    assert_eq!((status, body.as_str()), (200, "pong"));
    assert_eq!(s.get("/metrics").await.0, 200);
    assert_eq!(s.get("/api/v1/other").await.0, 404);
}

#[tokio::test]
async fn serve_reports_an_address_in_use() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let state = HttpState {
        metrics: Arc::new(Metrics::new()),
        ready: Arc::new(Readiness::new()),
        metrics_token: None,
    };
    match serve(addr, state).await {
        Err(e @ HttpError::Bind { .. }) => assert!(e.to_string().contains(&addr.to_string()), "{e}"),
        other => panic!("expected a bind error, got {other:?}"),
    }
}

#[tokio::test]
async fn run_until_stops_on_shutdown() {
    let state = HttpState {
        metrics: Arc::new(Metrics::new()),
        ready: Arc::new(Readiness::new()),
        metrics_token: None,
    };
    let server = HttpServer::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run_until(router(state), async move {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let resp = client.get(format!("http://{addr}/healthz")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    drop(client);
    stop.send(()).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("stops");
    result.unwrap().unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "still listening");
}

#[tokio::test]
async fn a_metrics_token_guards_metrics_but_not_the_probes() {
    let metrics = Arc::new(Metrics::new());
    let ready = Arc::new(Readiness::new());
    ready.set_ready();
    let state = HttpState {
        metrics,
        ready,
        metrics_token: Some(Arc::from("s3cret-token")),
    };
    assert!(
        !format!("{state:?}").contains("s3cret"),
        "the token is not in Debug output"
    );
    let server = HttpServer::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let base = format!("http://{}", server.local_addr());
    tokio::spawn(server.run(router(state)));
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let get = |path: &str, token: Option<&str>| {
        let mut req = client.get(format!("{base}{path}"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let challenge = resp
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap().to_string());
            (status, challenge, resp.text().await.unwrap())
        }
    };
    let (status, challenge, body) = get("/metrics", None).await;
    assert_eq!((status, challenge.as_deref()), (401, Some("Bearer")), "{body}");
    assert!(!body.contains("posture_"), "nothing leaks: {body}");
    assert_eq!(get("/metrics", Some("wrong")).await.0, 401);
    assert_eq!(get("/metrics", Some("s3cret-token-longer")).await.0, 401);
    let (status, _, body) = get("/metrics", Some("s3cret-token")).await;
    assert_eq!(status, 200);
    assert!(body.contains("posture_events_consumed_total"), "{body}");
    assert_eq!(get("/healthz", None).await.0, 200);
    assert_eq!(get("/readyz", None).await.0, 200);
}
