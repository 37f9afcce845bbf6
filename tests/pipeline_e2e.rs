//! The vertical slice end to end on the real stack: Avro events (Confluent
//! wire format) produced to a fresh 3-partition topic, keyed by device;
//! consumed by the ingest loop with one engine per partition; rows written to
//! a fresh ClickHouse 18.16 database created by the migrations; the
//! documented `score_at` query, at several instants and for a group, equals
//! embedded mode (one engine over all events) exactly, in micro-points.

use posture_avro::avro_decoder;
use posture_core::engine::{ScopeKey, NO_GROUP};
use posture_core::report::{self, Selection};
use posture_core::*;
use posture_ingest::{Ingest, IngestConfig};
use posture_sink::queries::{self, Param};
use posture_sink::SinkStage;
use posture_stage::Stage;
use posture_tests::fleet::{fleet_events, BASELINE, T0};
use posture_tests::{fresh_database, fresh_topic_with_partitions, kafka_brokers, unique_name};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The production stage, counting the records it absorbed so the test can
/// stop as soon as all arrived.
struct Counting(SinkStage, Arc<AtomicU64>);

impl Stage for Counting {
    type Error = posture_sink::SinkError;
    fn absorb(&mut self, engine: &Engine, out: &Output) {
        self.1.fetch_add(1, Ordering::SeqCst);
        self.0.absorb(engine, out);
    }
    fn observe(&mut self, engine: &Engine, ev: &ConfigChange, source: SourcePos) {
        self.0.observe(engine, ev, source);
    }
    fn pending_rows(&self) -> usize {
        self.0.pending_rows()
    }
    fn settle(&mut self, partition: i32, engine: &Engine) {
        self.0.settle(partition, engine);
    }
    fn progress(&mut self, partition: i32, next_offset: i64, clock_ms: i64) {
        self.0.progress(partition, next_offset, clock_ms);
    }
    fn topic_partitions(&mut self, n: u32) {
        self.0.topic_partitions(n);
    }
    async fn flush(&mut self) -> Result<(), Self::Error> {
        self.0.flush().await
    }
}

/// Embedded mode: one engine over every event, as of `at`.
fn embedded(cat: &Arc<Catalog>, evs: &[ConfigChange], at: i64, group: Option<&str>) -> (Micros, Micros) {
    let mut e = Engine::new(cat.clone(), EngineConfig::default());
    let mut out = Output::default();
    let mut ledger = Ledger::new(Some(at));
    for ev in evs {
        let _ = e.apply(ev, SourcePos::default(), &mut out);
        ledger.record(&out);
        out.clear();
    }
    let scope = ScopeKey {
        tenant: 0,
        group: group.map_or(NO_GROUP, |g| e.group_idx(g).unwrap()),
    };
    let sel = Selection {
        scope,
        category: None,
        remediation: None,
    };
    let s = report::score(&ledger, cat, &sel, "t1", group, None);
    (s.total.points_micros, s.total.max_micros)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_to_clickhouse_equals_embedded_mode() {
    let cat = Arc::new(Catalog::from_sources(&[("e2e.yaml", BASELINE)]).unwrap());
    let evs = fleet_events(900, 60);
    let topic = fresh_topic_with_partitions("e2e", 3).await;
    posture_tests::produce_events(&topic, &evs).await;
    let (client, db) = fresh_database("e2e").await;
    posture_sink::migrate(&client, &db).await.expect("migrate");

    let mut cfg = IngestConfig::new(kafka_brokers(), unique_name("e2e_group"), topic.clone());
    cfg.batch_rows = 500;
    cfg.batch_interval = Duration::from_millis(300);
    let absorbed = Arc::new(AtomicU64::new(0));
    let stage = Counting(
        SinkStage::new(posture_sink::Sink::new(client.clone())),
        absorbed.clone(),
    );
    let mut ingest = Ingest::new(cfg, cat.clone(), EngineConfig::default(), stage, avro_decoder(None)).expect("ingest");
    let total = evs.len() as u64;
    let stop = async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while absorbed.load(Ordering::SeqCst) < total && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    // run_until flushes and commits what is pending when it stops
    ingest.run_until(stop, |_, _, _| {}).await.expect("pipeline run");
    let stats = ingest.stats().clone();
    assert_eq!(stats.records, total, "every record consumed within 60 s: {stats:?}");
    assert_eq!(stats.undecodable, 0);
    assert_eq!(stats.applied + stats.rejected, total);

    let q = queries::get("score_at").expect("documented query score_at");
    let end = T0 + 900 * 60_000;
    for (at, group) in [
        (T0 + 100 * 60_000, None),
        (T0 + 450 * 60_000, None),
        (end, None),
        (end, Some("servers")),
        (T0 + 300 * 60_000, Some("finance")),
    ] {
        let sql = q
            .render(&[
                ("tenant", Param::from("t1")),
                ("group", Param::from(group.unwrap_or(""))),
                ("category", Param::from("")),
                ("at_ms", Param::from(at)),
            ])
            .expect("render score_at");
        let bytes = client
            .query_raw(&sql)
            .fetch_bytes("JSONEachRow")
            .expect("query")
            .collect()
            .await
            .expect("query");
        let row: serde_json::Value =
            serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&bytes)));
        let num = |k: &str| -> i64 {
            let v = &row[k];
            v.as_i64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .unwrap_or_else(|| panic!("{k} in {row}"))
        };
        let (points, max) = embedded(&cat, &evs, at, group);
        assert!(max > 0, "a non-trivial scope");
        assert_eq!(
            (num("score_with"), num("max_score_with")),
            (points, max),
            "score_at {at} group {group:?}"
        );
    }
}
