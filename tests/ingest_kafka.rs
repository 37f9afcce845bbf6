//! The ingest loop against the real broker (Tansu): events produced to a
//! fresh 3-partition topic, keyed by device, consumed in a consumer group with
//! one engine per partition; what the stage flushed equals embedded mode on
//! the same events, bad records are reported and skipped, and the committed
//! offsets cover every record once its output was flushed.

use posture_core::engine::{ScopeKey, NO_GROUP};
use posture_core::report::{self, Selection};
use posture_core::*;
use posture_ingest::{Ingest, IngestConfig};
use posture_stage::{Skipped, Stage, Undecodable};
use posture_tests::{fresh_topic_with_partitions, kafka_brokers, kafka_config, unique_name};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const BASELINE: &str = r#"
baseline: t
version: 1
controls:
  - { id: fw, title: Firewall, category: network, check: { key: fw, op: eq, value: true }, on_missing: fail }
  - { id: av, title: Antivirus, category: security_controls, check: { key: av, op: eq, value: true } }
  - { id: pw, title: Passwords, category: accounts, points: 50, check: { key: pw, op: ge, value: 14 } }
"#;

/// A scope-control by name: (tenant, group, control id).
type Name = (String, Option<String>, String);
/// Counts by name, summed over every flushed output.
type Counts = BTreeMap<Name, [i64; 5]>;

/// A stage that "writes" outputs to memory on flush, like a sink would.
struct MemoryStage {
    pending: Vec<(Vec<Name>, Output)>,
    pending_rows: usize,
    flushed: Counts,
    absorbed: Arc<AtomicU64>,
}

impl Stage for MemoryStage {
    type Error = std::convert::Infallible;
    fn absorb(&mut self, engine: &Engine, out: &Output) {
        self.absorbed.fetch_add(1, Ordering::SeqCst);
        // resolve names now: indices are per engine
        let names = out
            .scope_deltas
            .iter()
            .map(|d| {
                (
                    engine.tenant_name(d.scope.tenant).to_string(),
                    engine.group_name(d.scope.group).map(str::to_string),
                    engine.catalog().controls[d.control as usize].id.clone(),
                )
            })
            .collect();
        self.pending_rows += out.scope_deltas.len();
        self.pending.push((names, out.clone()));
    }
    fn pending_rows(&self) -> usize {
        self.pending_rows
    }
    async fn flush(&mut self) -> Result<(), Self::Error> {
        for (names, out) in self.pending.drain(..) {
            for (name, d) in names.into_iter().zip(&out.scope_deltas) {
                let v = self.flushed.entry(name).or_insert([0; 5]);
                for (acc, k) in v.iter_mut().zip(d.counts) {
                    *acc += k as i64;
                }
            }
        }
        self.pending_rows = 0;
        Ok(())
    }
}

fn events() -> Vec<String> {
    let mut rng = 7u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let t0 = 1_795_341_600_000i64;
    let mut seq = [0i64; 40];
    let mut lines = Vec::new();
    for i in 0..600u64 {
        let d = (next() % 40) as usize;
        seq[d] += 1;
        let groups = if d.is_multiple_of(3) {
            r#"["servers"]"#
        } else {
            r#"["laptops"]"#
        };
        let kind = if seq[d] == 1 { "SNAPSHOT" } else { "UPSERT" };
        lines.push(format!(
            r#"{{"event_id":"e{i}","tenant_id":"t1","device_id":"dev-{d:02}","observed_at":{},"sequence":{},"source":"AGENT","kind":"{kind}","device":{{"os_family":"windows","os_version":"10.0.19045","groups":{groups},"tags":[]}},"settings":[{{"key":"fw","value":{}}},{{"key":"pw","value":{}}}{}]}}"#,
            t0 + i as i64 * 1000,
            seq[d],
            !next().is_multiple_of(3),
            8 + next() % 10,
            if next().is_multiple_of(2) { r#",{"key":"av","value":true}"# } else { "" }
        ));
        if i.is_multiple_of(97) {
            // a duplicate: same device, same sequence
            lines.push(lines.last().unwrap().clone());
        }
    }
    lines
}

fn embedded(lines: &[String], cat: &Arc<Catalog>) -> (Counts, report::Score) {
    let mut e = Engine::new(cat.clone(), EngineConfig::default());
    let mut out = Output::default();
    let mut ledger = Ledger::new(None);
    for l in lines {
        let _ = e.apply(&ConfigChange::from_json(l).unwrap(), SourcePos::default(), &mut out);
        ledger.record(&out);
        out.clear();
    }
    let mut counts = Counts::new();
    for ((scope, c), cell) in e.aggregate_table() {
        let key = (
            e.tenant_name(scope.tenant).to_string(),
            e.group_name(scope.group).map(str::to_string),
            cat.controls[c as usize].id.clone(),
        );
        counts.insert(key, cell.counts);
    }
    let sel = Selection {
        scope: ScopeKey {
            tenant: 0,
            group: NO_GROUP,
        },
        category: None,
        remediation: None,
    };
    (counts, report::score(&ledger, cat, &sel, "t1", None, None))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_consumes_evaluates_flushes_and_commits() {
    let cat = Arc::new(Catalog::from_sources(&[("t.yaml", BASELINE)]).unwrap());
    let topic = fresh_topic_with_partitions("ingest", 3).await;
    let lines = events();
    let producer: FutureProducer = kafka_config().create().expect("producer");
    for (i, l) in lines.iter().enumerate() {
        let key = ConfigChange::from_json(l).unwrap().device_id;
        producer
            .send(FutureRecord::to(&topic).key(&key).payload(l), Duration::from_secs(10))
            .await
            .unwrap_or_else(|(e, _)| panic!("produce {i}: {e}"));
    }
    // one undecodable record
    producer
        .send(
            FutureRecord::to(&topic).key("dev-00").payload("not json"),
            Duration::from_secs(10),
        )
        .await
        .unwrap_or_else(|(e, _)| panic!("produce garbage: {e}"));
    let total = lines.len() as u64 + 1;

    let group = unique_name("ingest_group");
    let mut cfg = IngestConfig::new(kafka_brokers(), group.clone(), topic.clone());
    cfg.batch_rows = 200;
    cfg.batch_interval = Duration::from_millis(300);
    let absorbed = Arc::new(AtomicU64::new(0));
    let stage = MemoryStage {
        pending: Vec::new(),
        pending_rows: 0,
        flushed: Counts::new(),
        absorbed: absorbed.clone(),
    };
    let decode = |b: &[u8]| -> Result<ConfigChange, Undecodable> {
        Ok(ConfigChange::from_json(
            std::str::from_utf8(b).map_err(|e| e.to_string())?,
        )?)
    };
    let mut ingest = Ingest::new(cfg, cat.clone(), EngineConfig::default(), stage, decode).expect("ingest");
    let mut skipped = Vec::new();
    let counter = absorbed.clone();
    let stop = async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        // every decodable record reaches the stage (absorb is called per applied or rejected event)
        while counter.load(Ordering::SeqCst) < total - 1 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // let the undecodable record (which never reaches the stage) arrive too
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    ingest
        .run_until(stop, |p, o, s| skipped.push((p, o, s.clone())))
        .await
        .expect("ingest run");
    let stats = ingest.stats().clone();
    assert_eq!(stats.records, total, "every record consumed: {stats:?}");
    assert_eq!(stats.undecodable, 1);
    assert_eq!(stats.rejected, 7, "the 7 duplicates are stale");
    assert_eq!(stats.applied, lines.len() as u64 - 7);
    assert!(stats.flushes >= 2, "batches of 200 rows: {stats:?}");
    assert!(skipped.iter().any(|(_, _, s)| matches!(s, Skipped::Undecodable(_))));

    // What was flushed equals embedded mode on the same events, by name.
    let (expected, score) = embedded(&lines, &cat);
    let flushed = std::mem::take(&mut ingest_stage_counts(&mut ingest));
    assert_eq!(flushed, expected);
    assert!(score.total.max_points > 0.0);

    // Offsets: the group's committed offsets reach the end of every partition.
    drop(ingest);
    let c: StreamConsumer = kafka_config().set("group.id", &group).create().expect("consumer");
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition(&topic, p);
    }
    let committed = c.committed_offsets(tpl, Duration::from_secs(10)).expect("committed");
    let mut sum = 0;
    for p in 0..3 {
        let (lo, hi) = c
            .fetch_watermarks(&topic, p, Duration::from_secs(10))
            .expect("watermarks");
        let off = committed
            .find_partition(&topic, p)
            .and_then(|e| e.offset().to_raw())
            .expect("committed offset");
        assert_eq!(off, hi, "partition {p}: committed {off}, end {hi} (start {lo})");
        sum += hi - lo;
    }
    drop(committed);
    assert_eq!(sum as u64, total);
}

/// The counts the memory stage flushed (the ingest owns the stage).
fn ingest_stage_counts<D>(ingest: &mut Ingest<MemoryStage, D>) -> Counts
where
    D: posture_stage::Decode,
{
    ingest.stage_mut().flushed.clone()
}
