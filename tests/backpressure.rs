//! Backpressure on the real stack: when ClickHouse stops answering, the
//! pipeline stops consuming (it does not buffer), and when ClickHouse
//! answers again it resumes by itself and writes exactly what an
//! uninterrupted run writes.
//!
//! ClickHouse is made slow by a TCP proxy in front of the real server that
//! the test pauses: paused, it keeps every connection open but forwards no
//! byte (a hung server, as under a lock or SIGSTOP, without disturbing the
//! other tests that share the server).

use posture_avro::avro_decoder;
use posture_core::*;
use posture_ingest::{Ingest, IngestConfig};
use posture_sink::SinkStage;
use posture_tests::fleet::{fleet_events, BASELINE};
use posture_tests::proxy::Proxy;
use posture_tests::{clickhouse_url, fresh_database, fresh_topic_with_partitions, kafka_brokers, unique_name};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_clickhouse_pauses_consumption_and_the_run_resumes_exactly() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    const EVENTS: u64 = 20_000;
    const BATCH: usize = 500;
    let cat = Arc::new(Catalog::from_sources(&[("bp.yaml", BASELINE)]).unwrap());
    let evs = fleet_events(EVENTS, 400);
    let topic = fresh_topic_with_partitions("bp", 1).await;
    posture_tests::produce_events(&topic, &evs).await;
    let (client, db) = fresh_database("bp").await;
    posture_sink::migrate(&client, &db).await.expect("migrate");

    // The pipeline writes through the proxy.
    let upstream = clickhouse_url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let proxy = Arc::new(Proxy::start(upstream).await);
    let via_proxy = posture_tests::clickhouse_client_at(&format!("http://{}", proxy.addr)).with_database(&db);
    let mut cfg = IngestConfig::new(kafka_brokers(), unique_name("bp_group"), topic.clone());
    cfg.batch_rows = BATCH;
    cfg.batch_interval = Duration::from_millis(200);
    // Bound librdkafka's prefetch too (the default is 64 MiB per partition).
    cfg.extra.push(("queued.max.messages.kbytes".into(), "1024".into()));
    // As `posture run` does by default: retry until ClickHouse answers again (a hung connection
    // may also be closed by ClickHouse's keep-alive timeout, which is retried like any error).
    let retry = posture_sink::RetryPolicy {
        max_attempts: u32::MAX,
        ..Default::default()
    };
    let stage = SinkStage::new(posture_sink::Sink::new(via_proxy).with_retry(retry));
    let mut ingest = Ingest::new(cfg, cat.clone(), EngineConfig::default(), stage, avro_decoder(None)).expect("ingest");
    let progress = ingest.progress();

    let observer = {
        let progress = progress.clone();
        // The test keeps the proxy alive after the observer ends (the last flush goes through it).
        let proxy = proxy.clone();
        async move {
            // Let it consume a little, then hang ClickHouse.
            while progress.load(Ordering::SeqCst) < 2_000 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            proxy.pause(true);
            let at_pause = progress.load(Ordering::SeqCst);
            // Within one batch the loop must block on the flush.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let stalled_at = progress.load(Ordering::SeqCst);
            let rss_before = rss_kib();
            tokio::time::sleep(Duration::from_secs(6)).await;
            let after_wait = progress.load(Ordering::SeqCst);
            let rss_after = rss_kib();
            // The hung server comes back as a restarted one: held connections are cut, new
            // ones work (the sink retries).
            proxy.down(true);
            proxy.pause(false);
            tokio::time::sleep(Duration::from_millis(200)).await;
            proxy.down(false);
            // Then it resumes by itself and drains the topic.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
            while progress.load(Ordering::SeqCst) < EVENTS && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (at_pause, stalled_at, after_wait, rss_before, rss_after)
        }
    };
    // The observer runs as its own task: the loop does not poll its stop future while a flush
    // is blocked, which is the point.
    let observer = tokio::spawn(observer);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let stop = async move {
        let r = observer.await.expect("observer task");
        let _ = tx.send(r);
    };
    ingest.run_until(stop, |_, _, _| {}).await.expect("pipeline run");
    let (at_pause, stalled_at, after_wait, rss_before, rss_after) = rx.await.unwrap();
    eprintln!(
        "paused at {at_pause} records; stalled at {stalled_at}; {after_wait} after 6 s more; RSS {rss_before} -> {rss_after} KiB"
    );
    // The loop goes on until its next flush (at most one batch of rows, or the 200 ms timer);
    // records that change nothing add no rows, hence the slack.
    assert!(
        stalled_at - at_pause <= 5 * BATCH as u64,
        "consumption went on for {} records after ClickHouse hung (batch {BATCH} rows)",
        stalled_at - at_pause
    );
    assert_eq!(after_wait, stalled_at, "nothing consumed while ClickHouse hangs");
    assert!(stalled_at < EVENTS, "the pause came before the end");
    assert!(
        rss_after <= rss_before + 16 * 1024,
        "resident memory grew by {} KiB while paused",
        rss_after - rss_before
    );
    let stats = ingest.stats().clone();
    assert_eq!(stats.records, EVENTS, "{stats:?}");

    // Exactly what one engine over every event produces.
    let mut engine = Engine::new(cat.clone(), EngineConfig::default());
    let mut out = Output::default();
    let (mut transitions, mut deltas) = (0u64, 0u64);
    for e in &evs {
        let _ = engine.apply(e, SourcePos::default(), &mut out);
        transitions += out.transitions.len() as u64;
        deltas += out.scope_deltas.len() as u64;
        out.clear();
    }
    let count = |table: &'static str| {
        let client = client.clone();
        async move {
            client
                .query(&format!("SELECT count() FROM {table}"))
                .fetch_one::<u64>()
                .await
                .expect("count")
        }
    };
    assert_eq!(count("transitions").await, transitions);
    assert_eq!(
        count("scope_deltas").await,
        deltas,
        "every scope delta, carried by its transition's row"
    );
    assert_eq!(count("score_deltas").await, 0, "no score_deltas row any more");
}
