//! The `posture` binary on the ClickHouse test cluster (`scripts/stack up --cluster`: ZooKeeper
//! and 2 x 2 ClickHouse 18.16 servers), through a server outage, in both layouts:
//!
//! * replicated: cluster `posture`, the two replicas of shard 1 (every table on both);
//! * sharded: cluster `posture_sharded`, two shards of two replicas (raw tables sharded by source
//!   partition behind Distributed tables, the rollup and small tables on every node).
//!
//! `simulate --seed` writes a fleet to a JSON-lines file and produces the same fleet into Kafka at
//! a steady rate while `run --clickhouse-cluster` takes it into the cluster through node 1 (with
//! the insert quorum of every replica); one server (a replica of the last shard) is stopped as an
//! operator stops it for 30 s in the middle and started again on its data. Then `score` (tenants,
//! a group, a category, three instants) and `recommendations` read from **each** node must equal
//! `evaluate` (embedded mode on the file) exactly, `history` must be the same on every node, every
//! transition must be held exactly once, and the replicas of each shard must hold the same rows.
mod common;
use common::{json, posture};
use posture_tests::{fresh_topic_with_partitions, kafka_brokers, unique_name, ClusterNode};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BASELINES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/baselines");

/// The tests share the cluster's servers and stop one each: one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// (rows, distinct source positions) of `transitions` in `db` read through `url`.
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
    let _one = ONE_AT_A_TIME.lock().await;
    let (urls, cluster) = posture_tests::cluster();
    through_an_outage(&urls, &cluster, urls.len(), "cluster_cli").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_on_a_sharded_cluster_is_exact_on_every_node_through_a_shard_replica_outage() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (urls, cluster, replicas) = posture_tests::sharded_cluster();
    through_an_outage(&urls, &cluster, replicas, "sharded_cli").await;
}

/// The test of the module's documentation on the cluster `cluster` of the nodes `urls` (node i
/// of the stack is `urls[i - 1]`), `replicas` per shard.
async fn through_an_outage(urls: &[String], cluster: &str, replicas: usize, name: &str) {
    let shards = urls.len() / replicas;
    let stopped = ClusterNode::of_stack(urls.len());
    assert_eq!(
        stopped.url(),
        urls[urls.len() - 1],
        "the cluster's URLs name the stack's nodes"
    );
    let dir = posture_tests::ScratchDir::new(name);
    let file = dir.join("fleet.jsonl");
    let file = file.to_str().unwrap();
    let brokers = kafka_brokers();
    let topic = fresh_topic_with_partitions(&format!("{name}_in"), 3).await;
    let db = unique_name(name);
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
        ("POSTURE_CLICKHOUSE_CLUSTER", cluster),
    ];
    let migrated = posture(&["migrate"], &env);
    assert!(migrated.contains("applied"), "{migrated}");
    // The same topic into one server beside it (another consumer group): the reference for every
    // read that embedded mode does not answer.
    let single_url = posture_tests::clickhouse_url();
    let single_db = unique_name(&format!("{name}_one"));
    let single_env = [
        ("POSTURE_CLICKHOUSE_URL", single_url.as_str()),
        ("POSTURE_CLICKHOUSE_DATABASE", single_db.as_str()),
    ];
    posture(&["migrate"], &single_env);
    let layout = if shards > 1 { "several shards" } else { "one shard" };
    assert!(migrated.contains(layout), "{migrated}");

    // The producer at a steady rate (about 35 s), and the pipeline, both in the background.
    let rate = (events / 35).max(10).to_string();
    let mut producer = Command::new(env!("CARGO_BIN_EXE_posture"))
        .args([&sim[..], &["--kafka", &brokers, "--topic", &topic, "--rate", &rate]].concat())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start simulate --kafka");
    let start_run = |env: &[(&str, &str)], log: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_posture"))
            .args([
                "run",
                "--baselines",
                BASELINES,
                "--brokers",
                &brokers,
                "--topic",
                &topic,
                "--group",
                &unique_name(&format!("{name}_group")),
                "--batch-ms",
                "300",
                "--until-idle",
                "8",
                "--http-addr",
                "",
            ])
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("start posture run")
    };
    let log = dir.join("run.log");
    let mut run = start_run(&env, &log);
    let single_log = dir.join("run-one-server.log");
    let mut single_run = start_run(&single_env, &single_log);

    // Once rows arrive, the last node goes away for 30 s, mid-run.
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
    stopped.stop();
    tokio::time::sleep(Duration::from_secs(30)).await;
    // Read through a replica of the stopped node's shard that is up (node 1's Distributed
    // tables may pick the stopped one).
    let during = transitions(&urls[urls.len() - 2], &db).await.0;
    stopped.start();

    let produced = producer.wait().expect("simulate --kafka");
    assert!(produced.success(), "simulate --kafka failed");
    let status = run.wait().expect("posture run");
    let run_log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "posture run failed:\n{run_log}");
    let single_status = single_run.wait().expect("posture run (one server)");
    assert!(
        single_status.success(),
        "posture run (one server) failed:\n{}",
        std::fs::read_to_string(&single_log).unwrap_or_default()
    );
    let retried = run_log
        .lines()
        .filter(|l| l.contains("insert failed, retrying"))
        .count();
    let resent = run_log.lines().filter(|l| l.contains("sending the rest")).count();
    eprintln!("{name}: {retried} INSERTs retried during the outage, {resent} sent again in part");
    assert!(
        retried > 0,
        "the outage stopped writes for a while (quorum):\n{run_log}"
    );

    // Every node: every transition once; every replica of a shard: the same rows as the others.
    let local = if shards > 1 {
        posture_sink::cluster::local_database(&db)
    } else {
        db.clone()
    };
    for url in urls {
        posture_tests::clickhouse_client_at(url)
            .query(&format!("SYSTEM SYNC REPLICA {local}.transitions"))
            .execute()
            .await
            .unwrap_or_else(|e| panic!("sync {url}: {e}"));
    }
    let all = transitions(&urls[0], &db).await;
    assert_eq!(all.0, all.1, "no transition twice");
    assert!(
        all.0 > during && during >= before,
        "the run went on after the node came back ({before} transitions before the outage, {during} at its end, {} after)",
        all.0
    );
    let mut summed = 0;
    for shard in urls.chunks(replicas) {
        let held: Vec<(u64, u64)> = {
            let mut v = Vec::new();
            for url in shard {
                v.push(transitions(url, &local).await);
            }
            v
        };
        assert!(
            held.iter().all(|h| *h == held[0]),
            "the replicas of a shard differ: {shard:?} {held:?}"
        );
        assert!(held[0].0 > 0, "every shard holds rows: {shard:?}");
        summed += held[0].0;
    }
    assert_eq!(summed, all.0, "the shards together hold every transition once");
    for url in urls {
        assert_eq!(transitions(url, &db).await, all, "{url} reads every transition");
    }

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
    let first = history(&urls[0]);
    assert!(first.to_string().len() > 100, "a history with points: {first}");
    for url in &urls[1..] {
        assert_eq!(history(url), first, "history on {url} is the one on {}", urls[0]);
    }

    // The reads embedded mode does not answer, on every node, equal one server's.
    let read = |url: &str, database: &str, args: &[&str]| {
        let env = [
            ("POSTURE_CLICKHOUSE_URL", url),
            ("POSTURE_CLICKHOUSE_DATABASE", database),
        ];
        json(&posture(
            &[args, &["--baselines", BASELINES, "--format", "json"]].concat(),
            &env,
        ))
    };
    let recs = read(&single_url, &single_db, &["recommendations", "--tenant", "t1"]);
    let control = recs[0]["control"].as_str().expect("a recommendation").to_string();
    let failing = read(
        &single_url,
        &single_db,
        &["devices", "--tenant", "t1", "--control", &control],
    );
    let device = first_device(&failing).unwrap_or_else(|| panic!("a misconfigured device of {control}: {failing}"));
    let reads: Vec<Vec<&str>> = vec![
        vec![
            "history",
            "--tenant",
            "t2",
            "--from",
            "2026-11-01T00:00:00Z",
            "--to",
            "2026-11-01T12:00:00Z",
            "--bucket",
            "day",
        ],
        vec!["devices", "--tenant", "t1", "--control", &control],
        vec!["devices", "--tenant", "t1", "--control", &control, "--state", "PASS"],
        vec!["devices", "--tenant", "t1", "--device", &device],
        vec![
            "whatif",
            "--tenant",
            "t1",
            "--control",
            &control,
            "--at",
            "2026-11-01T11:59:59.999Z",
        ],
        vec![
            "whatif",
            "--tenant",
            "t1",
            "--control",
            &control,
            "--group",
            "finance",
            "--at",
            "2026-11-01T06:00:00Z",
        ],
    ];
    for args in &reads {
        let want = read(&single_url, &single_db, args);
        for (i, url) in urls.iter().enumerate() {
            assert_eq!(read(url, &db, args), want, "node {}: {args:?}", i + 1);
        }
    }
}

/// The first value of a `device` key anywhere in `v`.
fn first_device(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::Object(o) => o
            .get("device")
            .and_then(|d| d.as_str().map(str::to_string))
            .or_else(|| o.values().find_map(first_device)),
        serde_json::Value::Array(a) => a.iter().find_map(first_device),
        _ => None,
    }
}
