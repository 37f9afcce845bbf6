//! The `posture` binary on the ClickHouse test cluster (`scripts/stack up --cluster`: ZooKeeper
//! and two ClickHouse 18.16 replicas of one shard), through a replica outage:
//!
//! `simulate --seed` writes a fleet to a JSON-lines file and produces the same fleet into Kafka at
//! a steady rate while `run --clickhouse-cluster` takes it into the cluster through node 1 (with
//! the insert quorum of both replicas); node 2 is stopped as an operator stops it for 30 s in the
//! middle and started again on its data. Then `score` (tenants, a group, a category, three
//! instants) and `recommendations` read from **each** node must equal `evaluate` (embedded mode on
//! the file) exactly, `history` must be the same on both nodes, and both nodes must hold every
//! transition exactly once.
mod common;
use common::{json, posture};
use posture_tests::{fresh_topic_with_partitions, kafka_brokers, unique_name, ClusterNode};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BASELINES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/baselines");

async fn transitions(url: &str, db: &str) -> (u64, u64) {
    posture_tests::clickhouse_client_at(url)
        .with_database(db)
        .query("SELECT count(), uniqExact(source_partition, source_offset, seq) FROM transitions")
        .fetch_one::<(u64, u64)>()
        .await
        .unwrap_or_else(|e| panic!("counting transitions on {url}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_on_a_cluster_is_exact_on_every_replica_through_a_replica_outage() {
    let (urls, cluster) = posture_tests::cluster();
    let node2 = ClusterNode::of_stack(2);
    assert_eq!(node2.url(), urls[1], "POSTURE_CLUSTER_URLS names the stack's nodes");
    let dir = posture_tests::ScratchDir::new("cluster_cli");
    let file = dir.join("fleet.jsonl");
    let file = file.to_str().unwrap();
    let brokers = kafka_brokers();
    let topic = fresh_topic_with_partitions("cluster_in", 3).await;
    let db = unique_name("cluster_cli");
    let sim = [
        "simulate",
        "--baselines",
        BASELINES,
        "--devices",
        "120",
        "--tenants",
        "2",
        "--hours",
        "12",
        "--seed",
        "11",
    ];
    posture(&[&sim[..], &["--out", file]].concat(), &[]);
    let events = std::fs::read_to_string(file).unwrap().lines().count();

    let env = [
        ("POSTURE_CLICKHOUSE_URL", urls[0].as_str()),
        ("POSTURE_CLICKHOUSE_DATABASE", db.as_str()),
        ("POSTURE_CLICKHOUSE_CLUSTER", cluster.as_str()),
    ];
    let migrated = posture(&["migrate"], &env);
    assert!(migrated.contains("applied"), "{migrated}");

    // The producer at a steady rate (about 35 s), and the pipeline, both in the background.
    let rate = (events / 35).max(10).to_string();
    let mut producer = Command::new(env!("CARGO_BIN_EXE_posture"))
        .args([&sim[..], &["--kafka", &brokers, "--topic", &topic, "--rate", &rate]].concat())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start simulate --kafka");
    let log = dir.join("run.log");
    let mut run = Command::new(env!("CARGO_BIN_EXE_posture"))
        .args([
            "run",
            "--baselines",
            BASELINES,
            "--brokers",
            &brokers,
            "--topic",
            &topic,
            "--group",
            &unique_name("cluster_group"),
            "--batch-ms",
            "300",
            "--until-idle",
            "8",
            "--http-addr",
            "",
        ])
        .envs(env)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start posture run");

    // Once rows arrive, node 2 goes away for 30 s, mid-run.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let written = posture_tests::clickhouse_client_at(&urls[0])
            .with_database(&db)
            .query("SELECT count() FROM transitions")
            .fetch_one::<u64>()
            .await
            .unwrap_or(0);
        if written > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nothing written within 60 s; log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let before = transitions(&urls[0], &db).await.0;
    node2.stop();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let during = transitions(&urls[0], &db).await.0;
    node2.start();

    let produced = producer.wait().expect("simulate --kafka");
    assert!(produced.success(), "simulate --kafka failed");
    let status = run.wait().expect("posture run");
    let run_log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "posture run failed:\n{run_log}");
    let after = transitions(&urls[0], &db).await.0;
    assert!(
        after > during,
        "the run went on after the replica came back ({before} transitions before the outage, {during} at its end, {after} after)"
    );

    // Both replicas: every transition once, the same on both.
    let one = transitions(&urls[0], &db).await;
    posture_tests::clickhouse_client_at(&urls[1])
        .query(&format!("SYSTEM SYNC REPLICA {db}.transitions"))
        .execute()
        .await
        .expect("sync node 2");
    let two = transitions(&urls[1], &db).await;
    assert_eq!(one.0, one.1, "node 1: no transition twice");
    assert_eq!(one, two, "node 2 holds what node 1 holds");

    // Every answer on every node equals embedded mode.
    for (i, url) in urls.iter().enumerate() {
        let env = [
            ("POSTURE_CLICKHOUSE_URL", url.as_str()),
            ("POSTURE_CLICKHOUSE_DATABASE", db.as_str()),
        ];
        let compared = common::assert_reads_equal_embedded(BASELINES, file, &env, &format!("node {}", i + 1));
        assert_eq!(compared, 12);
    }
    let history = |url: &str| {
        let env = [
            ("POSTURE_CLICKHOUSE_URL", url),
            ("POSTURE_CLICKHOUSE_DATABASE", db.as_str()),
        ];
        let args = [
            "history",
            "--baselines",
            BASELINES,
            "--format",
            "json",
            "--tenant",
            "t1",
            "--from",
            "2026-11-01T00:00:00Z",
            "--to",
            "2026-11-01T12:00:00Z",
            "--bucket",
            "hour",
        ];
        json(&posture(&args, &env))
    };
    let (h1, h2) = (history(&urls[0]), history(&urls[1]));
    assert!(h1.to_string().len() > 100, "a history with points: {h1}");
    assert_eq!(h1, h2, "history is the same on both nodes");
}
