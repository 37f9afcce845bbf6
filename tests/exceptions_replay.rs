//! Exceptions survive a crash exactly (real stack: scripts/stack up).
//!
//! An exception reaches a running pipeline between two records. The run then crashes with the
//! rows of that change unwritten (ClickHouse hangs behind a proxy; the loop is dropped: no flush,
//! no snapshot, no commit). A second run takes over from the written output. Its ClickHouse
//! tables must equal those of a reference run that never crashed: the exception's effect is
//! written once, not lost in the replay (its rows would be at or below the output watermark)
//! and not written twice.

use posture_avro::avro_decoder;
use posture_core::exception::{Exception, ExceptionScope, Justification};
use posture_core::*;
use posture_ingest::{Ingest, IngestConfig};
use posture_sink::SinkStage;
use posture_sink::SnapshotStore;
use posture_stage::ExceptionSet;
use posture_tests::proxy::Proxy;
use posture_tests::{clickhouse_url, fresh_database, fresh_topic_with_partitions, kafka_brokers, unique_name};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

const BASELINE: &str = r#"
baseline: replay
version: 1
controls:
  - { id: fw, title: Firewall, category: network, points: 30, check: { key: fw, op: eq, value: true } }
"#;
const T0: i64 = 1_795_341_600_000;
const MIN: i64 = 60_000;

fn event(device: &str, at: i64, fw: bool) -> ConfigChange {
    ConfigChange::new("t1", device, ChangeKind::Snapshot, at, 1)
        .with_event_id(format!("{device}-{at}"))
        .with_inventory("windows", "10.0", &["g"], &[])
        .with_setting("fw", fw)
}

/// Credits fw for the whole tenant from T0: when it arrives (after e1, at T0), its start has
/// passed, so it takes effect at once, stamped with the partition's clock and the next record.
fn credit() -> Exception {
    Exception {
        id: "t1/e1".into(),
        tenant: "t1".into(),
        control: "fw".into(),
        scope: ExceptionScope::Tenant,
        justification: Justification::ThirdPartyControl,
        starts_at: T0,
        expires_at: None,
        author: "test".into(),
        note: String::new(),
    }
}

fn ingest(
    topic: &str,
    client: clickhouse::Client,
    set: Arc<ExceptionSet>,
) -> Ingest<SinkStage, impl posture_stage::Decode, SnapshotStore> {
    let cat = Arc::new(Catalog::from_sources(&[("replay.yaml", BASELINE)]).unwrap());
    let mut cfg = IngestConfig::new(kafka_brokers(), unique_name("replay_group"), topic);
    cfg.batch_interval = Duration::from_millis(100);
    // No snapshot during the test: a restart replays from the start of the topic.
    cfg.snapshot_interval = Duration::from_secs(3600);
    cfg.snapshot_records = 1_000_000_000;
    let retry = posture_sink::RetryPolicy {
        max_attempts: u32::MAX,
        ..Default::default()
    };
    let store = SnapshotStore::new(client.clone()).with_retry(retry);
    let stage = SinkStage::new(posture_sink::Sink::new(client).with_retry(retry)).with_watermarks(store.clone());
    Ingest::new(cfg, cat, EngineConfig::default(), stage, avro_decoder(None))
        .expect("ingest")
        .with_state_store(store)
        .with_exceptions(set)
}

async fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the rows of the first `n` events are written: a record counts as consumed before
/// it is applied, so this (not the progress counter) says that the engine is past it.
/// device_inventory has one row per event and is the last table a flush writes.
async fn written(client: &clickhouse::Client, n: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while count(client, "SELECT count() FROM device_inventory").await < n {
        assert!(tokio::time::Instant::now() < deadline, "{n} event(s) never written");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn count(client: &clickhouse::Client, sql: &str) -> u64 {
    client.query(sql).fetch_one::<u64>().await.expect(sql)
}

/// The summed count deltas per control and instant: everything the trend queries read.
/// control, event_time_ms, and the summed pass_with, fail_with, hidden_with, pass_without, fail_without.
type Row = (String, i64, i64, i64, i64, i64, i64);

async fn counts(client: &clickhouse::Client) -> Vec<Row> {
    client
        .query(
            "SELECT control, event_time_ms, toInt64(sum(pass_with)), toInt64(sum(fail_with)), toInt64(sum(hidden_with)), \
             toInt64(sum(pass_without)), toInt64(sum(fail_without)) FROM scope_deltas \
             GROUP BY control, event_time_ms ORDER BY control, event_time_ms",
        )
        .fetch_all()
        .await
        .expect("counts")
}

/// The run after a crash: the current exception set is `current`; `e3` arrives; it stops once
/// it has consumed e1, e2 (again) and e3.
async fn resume(topic: &str, direct: &clickhouse::Client, current: Exception, e3: &ConfigChange) {
    let set = ExceptionSet::new();
    set.replace(vec![current]);
    let mut run = ingest(topic, direct.clone(), set);
    let progress = run.progress();
    posture_tests::produce_events(topic, std::slice::from_ref(e3)).await;
    let done = async {
        wait_for("e1, e2 and e3 again", || progress.load(Ordering::SeqCst) >= 3).await;
    };
    run.run_until(done, |_, _, _| {}).await.expect("second run");
}

/// The crashed and resumed run's tables equal the uninterrupted run's (`want`: its counts).
async fn assert_same_output(direct: &clickhouse::Client, reference: &clickhouse::Client, want: &[Row]) {
    assert_eq!(
        counts(direct).await,
        want,
        "the crashed and resumed run wrote what the uninterrupted one did"
    );
    for table in ["transitions", "device_state FINAL", "scope_deltas"] {
        let sql = format!("SELECT count() FROM {table}");
        assert_eq!(count(direct, &sql).await, count(reference, &sql).await, "{table}");
    }
}

/// A reference run (the exception arrives between e1 and e2), and a run that crashes with e2 and
/// the exception's change unwritten (ClickHouse hangs right after e1 is written). Returns the
/// crashed run's topic and database, the reference database, and e3 (not produced yet).
async fn reference_and_crash() -> (String, clickhouse::Client, clickhouse::Client, ConfigChange) {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let (e1, e2, e3) = (
        event("d1", T0, false),
        event("d2", T0 + 2 * MIN, true),
        event("d3", T0 + 3 * MIN, false),
    );

    // The reference: one uninterrupted run; the exception arrives between e1 and e2.
    let topic = fresh_topic_with_partitions("replay_ref", 1).await;
    let (reference, db) = fresh_database("replay_ref").await;
    posture_sink::migrate(&reference, &db).await.expect("migrate");
    let set = ExceptionSet::new();
    let mut run = ingest(&topic, reference.clone(), set.clone());
    let progress = run.progress();
    posture_tests::produce_events(&topic, std::slice::from_ref(&e1)).await;
    let driver = {
        let (topic, set, progress) = (topic.clone(), set.clone(), progress.clone());
        let (e2, e3) = (e2.clone(), e3.clone());
        let client = reference.clone();
        async move {
            written(&client, 1).await;
            set.replace(vec![credit()]);
            posture_tests::produce_events(&topic, &[e2, e3]).await;
            wait_for("e2 and e3", || progress.load(Ordering::SeqCst) >= 3).await;
        }
    };
    run.run_until(driver, |_, _, _| {}).await.expect("reference run");
    drop(run);

    // The crash: the same, but ClickHouse hangs right after e1 is written, and the run dies
    // with e2 and the exception's change unwritten.
    let topic = fresh_topic_with_partitions("replay_crash", 1).await;
    let (direct, db) = fresh_database("replay_crash").await;
    posture_sink::migrate(&direct, &db).await.expect("migrate");
    let upstream = clickhouse_url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let proxy = Proxy::start(upstream).await;
    let via_proxy = posture_tests::clickhouse_client_at(&format!("http://{}", proxy.addr)).with_database(&db);
    let set = ExceptionSet::new();
    let mut run = ingest(&topic, via_proxy, set.clone());
    let progress = run.progress();
    posture_tests::produce_events(&topic, std::slice::from_ref(&e1)).await;
    let crash = async {
        wait_for("e1", || progress.load(Ordering::SeqCst) >= 1).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        // device_inventory is the last table a flush writes.
        while count(&direct, "SELECT count() FROM device_inventory").await == 0 {
            assert!(tokio::time::Instant::now() < deadline, "e1 was never written");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        proxy.pause(true);
        set.replace(vec![credit()]);
        posture_tests::produce_events(&topic, std::slice::from_ref(&e2)).await;
        wait_for("e2", || progress.load(Ordering::SeqCst) >= 2).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    tokio::select! {
        r = run.run_until(std::future::pending(), |_, _, _| {}) => panic!("the run ended by itself: {r:?}"),
        _ = crash => {}
    }
    drop(run); // kill: no flush, no snapshot, no commit
               // The held INSERTs die with their connections (as with a killed process), not delivered late.
    proxy.down(true);
    proxy.pause(false);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        count(&direct, "SELECT count() FROM scope_deltas WHERE source_offset >= 1").await,
        0,
        "e2's rows were not written"
    );
    assert_eq!(
        count(&direct, "SELECT count() FROM exception_syncs").await,
        0,
        "the change was not written"
    );
    (topic, direct, reference, e3)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exception_in_flight_at_a_crash_is_written_exactly_once() {
    let (topic, direct, reference, e3) = reference_and_crash().await;
    // The next run: the current set has the exception; e3 arrives.
    resume(&topic, &direct, credit(), &e3).await;

    let want = counts(&reference).await;
    assert!(
        want.iter().any(|r| r.1 == T0 && r.2 > 0),
        "the reference credits d1 from T0: {want:?}"
    );
    assert_same_output(&direct, &reference, &want).await;
    assert_eq!(
        count(&direct, "SELECT count() FROM exception_syncs").await,
        1,
        "one recorded change, by the second run"
    );
}

/// The other side: the change was written, but the run died before its next snapshot, and the
/// exception expired (in the past) while it was down. The next run must first take the recorded
/// set (what the written output reflects) through the replay, then the current one: applying the
/// current set from the start would lose the credit's end, which the written rows never saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_written_exception_change_is_replayed_as_it_was() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let (e1, e2, e3) = (
        event("d1", T0, false),
        event("d2", T0 + 2 * MIN, true),
        event("d3", T0 + 3 * MIN, false),
    );
    let expired = || Exception {
        expires_at: Some(T0 + MIN + MIN / 2),
        ..credit()
    };

    // The reference: e1; the credit; e2; the credit expired (at T0+1.5min, already past); e3.
    let topic = fresh_topic_with_partitions("replay2_ref", 1).await;
    let (reference, db) = fresh_database("replay2_ref").await;
    posture_sink::migrate(&reference, &db).await.expect("migrate");
    let set = ExceptionSet::new();
    let mut run = ingest(&topic, reference.clone(), set.clone());
    let progress = run.progress();
    posture_tests::produce_events(&topic, std::slice::from_ref(&e1)).await;
    let driver = {
        let (topic, set, progress) = (topic.clone(), set.clone(), progress.clone());
        let (e2, e3) = (e2.clone(), e3.clone());
        let client = reference.clone();
        async move {
            written(&client, 1).await;
            set.replace(vec![credit()]);
            posture_tests::produce_events(&topic, &[e2]).await;
            written(&client, 2).await;
            set.replace(vec![expired()]);
            posture_tests::produce_events(&topic, &[e3]).await;
            wait_for("e3", || progress.load(Ordering::SeqCst) >= 3).await;
        }
    };
    run.run_until(driver, |_, _, _| {}).await.expect("reference run");
    drop(run);

    // The crash: e1, the credit and e2 are written (no snapshot since), then the run dies.
    let topic = fresh_topic_with_partitions("replay2_crash", 1).await;
    let (direct, db) = fresh_database("replay2_crash").await;
    posture_sink::migrate(&direct, &db).await.expect("migrate");
    let set = ExceptionSet::new();
    let mut run = ingest(&topic, direct.clone(), set.clone());
    posture_tests::produce_events(&topic, std::slice::from_ref(&e1)).await;
    let crash = async {
        written(&direct, 1).await;
        set.replace(vec![credit()]);
        posture_tests::produce_events(&topic, std::slice::from_ref(&e2)).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        // exception_syncs is the last table a flush writes.
        while count(&direct, "SELECT count() FROM exception_syncs").await == 0 {
            assert!(tokio::time::Instant::now() < deadline, "the change was never written");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::select! {
        r = run.run_until(std::future::pending(), |_, _, _| {}) => panic!("the run ended by itself: {r:?}"),
        _ = crash => {}
    }
    drop(run); // kill: no snapshot since the start
    assert_eq!(
        count(&direct, "SELECT count() FROM engine_snapshots").await,
        0,
        "no snapshot was taken"
    );

    // The next run: meanwhile the credit was expired; e3 arrives.
    resume(&topic, &direct, expired(), &e3).await;

    let want = counts(&reference).await;
    assert!(
        want.iter().any(|r| r.1 == T0 + 2 * MIN && r.2 == 0 && r.3 == 2),
        "the reference ends the credit at the clock (T0+2min) before e3: {want:?}"
    );
    assert_same_output(&direct, &reference, &want).await;
}

/// The change was recorded (`exception_syncs` is written first) but the run died before the rows
/// it caused were written. The next run takes the recorded set again right before the record it
/// was taken before (e2), as the crashed run did, so the credit is written once, stamped as in
/// the uninterrupted run. (Taking it at the restore instead, before e1, would put its effect at
/// a replayed, suppressed position: lost.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_change_whose_rows_were_lost_is_made_again_at_its_record() {
    let (topic, direct, reference, e3) = reference_and_crash().await;
    // What the crashed run wrote first: the change, before e2 (offset 1).
    let mut insert = direct
        .insert::<posture_sink::SyncRow>("exception_syncs")
        .await
        .expect("insert");
    insert
        .write(&posture_sink::SyncRow {
            source_partition: 0,
            source_offset: 1,
            exceptions: serde_json::to_string(&vec![credit()]).unwrap(),
            written_at: 0,
        })
        .await
        .expect("write");
    insert.end().await.expect("end");
    resume(&topic, &direct, credit(), &e3).await;
    let want = counts(&reference).await;
    assert_same_output(&direct, &reference, &want).await;
}
