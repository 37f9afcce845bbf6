//! Fault injection on the real stack (scripts/stack up), through the
//! `posture` binary: the exactly-once effect of SPEC section 6.
//!
//! The reference is embedded mode (`posture evaluate` on the same events),
//! which equals one uninterrupted pipeline run (crates/posture/tests/
//! pipeline_cli.rs). After each fault scenario, the pipeline's ClickHouse
//! output must equal it exactly: the number of transitions written (no row
//! lost, none twice), and `posture score` / `posture recommendations` at
//! several instants, for the tenant, a group and a category.

use posture_tests::consistency::{Reader, Reference};
use posture_tests::proxy::Proxy;
use posture_tests::{kafka_brokers, kafka_config, unique_name, ScratchDir};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;
use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BASELINES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/baselines");
/// The simulated fleet's day starts here (`posture simulate`'s default start).
const T_DAY: i64 = 1_793_491_200_000; // 2026-11-01T00:00:00Z

/// The shipped baselines as (file name, text).
fn baseline_sources() -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = std::fs::read_dir(BASELINES)
        .expect("deploy/baselines")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .map(|p| (p.display().to_string(), std::fs::read_to_string(&p).expect("baseline")))
        .collect();
    v.sort();
    v
}

fn posture(args: &[&str], env: &[(&str, &str)]) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_posture"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run posture");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "posture {args:?} failed: {stderr}");
    (String::from_utf8(out.stdout).expect("utf-8"), stderr)
}

/// A fleet in a JSON-lines file and, the same events, in a fresh 3-partition topic.
struct Fleet {
    dir: ScratchDir,
    file: String,
    topic: String,
    client: clickhouse::Client,
    env: Vec<(String, String)>,
}

impl Fleet {
    async fn new(name: &str, devices: &str, hours: &str) -> Fleet {
        Fleet::new_at(&kafka_brokers(), name, devices, hours).await
    }

    /// The same with the broker at `brokers`.
    async fn new_at(brokers: &str, name: &str, devices: &str, hours: &str) -> Fleet {
        Fleet::new_with(brokers, &posture_tests::clickhouse_url(), name, devices, hours).await
    }

    /// The same in a topic of `partitions` partitions (3 above).
    async fn new_in(name: &str, devices: &str, hours: &str, partitions: i32) -> Fleet {
        let (brokers, clickhouse) = (kafka_brokers(), posture_tests::clickhouse_url());
        Fleet::create(&brokers, &clickhouse, name, devices, hours, partitions).await
    }

    /// The same with the broker at `brokers` and ClickHouse at `clickhouse`.
    async fn new_with(brokers: &str, clickhouse: &str, name: &str, devices: &str, hours: &str) -> Fleet {
        Fleet::create(brokers, clickhouse, name, devices, hours, 3).await
    }

    async fn create(brokers: &str, clickhouse: &str, name: &str, devices: &str, hours: &str, partitions: i32) -> Fleet {
        let dir = ScratchDir::new(name);
        let file = dir.join("fleet.jsonl").to_str().unwrap().to_string();
        let topic = posture_tests::fresh_topic_at(brokers, name, partitions).await;
        let sim = [
            "simulate",
            "--baselines",
            BASELINES,
            "--devices",
            devices,
            "--hours",
            hours,
            "--seed",
            "11",
        ];
        posture(&[&sim[..], &["--out", &file]].concat(), &[]);
        posture(&[&sim[..], &["--kafka", brokers, "--topic", &topic]].concat(), &[]);
        let (client, database) = posture_tests::fresh_database_at(clickhouse, name).await;
        let env = vec![
            ("POSTURE_CLICKHOUSE_URL".to_string(), clickhouse.to_string()),
            ("POSTURE_CLICKHOUSE_DATABASE".to_string(), database.clone()),
            ("POSTURE_KAFKA_BROKERS".to_string(), brokers.to_string()),
        ];
        let fleet = Fleet {
            dir,
            file,
            topic,
            client,
            env,
        };
        posture(&["migrate"], &fleet.env());
        fleet
    }

    fn env(&self) -> Vec<(&str, &str)> {
        self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
    }

    /// `posture run` as a child process in consumer group `group`, logging to a file.
    fn spawn_run(&self, group: &str, extra_env: &[(&str, &str)], extra_args: &[&str], log: &str) -> Child {
        let log = std::fs::File::create(self.dir.join(log)).unwrap();
        Command::new(env!("CARGO_BIN_EXE_posture"))
            .args([
                "run",
                "--baselines",
                BASELINES,
                "--topic",
                &self.topic,
                "--group",
                group,
                "--score-deltas-topic",
                &format!("{}.deltas", self.topic),
                "--dead-letter-topic",
                &format!("{}.dead", self.topic),
                "--alerts-topic",
                "",
                "--batch-rows",
                "2000",
                "--batch-ms",
                "200",
                "--snapshot-secs",
                "1",
                "--kafka-session-timeout-ms",
                "6000",
            ])
            .args(if extra_args.contains(&"--http-addr") {
                &[][..]
            } else {
                &["--http-addr", "127.0.0.1:0"][..]
            })
            .args(extra_args)
            .envs(self.env().iter().copied())
            .envs(extra_env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn posture run")
    }

    /// Waits until the run logging to `log` has been assigned partitions by its consumer group,
    /// at most 60 s after `spawned` (the bound the README promises after a kill -9); returns how
    /// long that took.
    async fn wait_for_assignment(&self, log: &str, spawned: Instant) -> Duration {
        loop {
            let text = self.log(log);
            if text.contains("the consumer group assigned partitions [") {
                return spawned.elapsed();
            }
            assert!(
                spawned.elapsed() < Duration::from_secs(60),
                "no partition assigned within 60 s of the start; log:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Engine snapshots written so far.
    async fn snapshots(&self) -> u64 {
        self.client
            .query("SELECT count() FROM engine_snapshots")
            .fetch_one()
            .await
            .expect("count snapshots")
    }

    /// Whether some partition has a snapshot before its end (records remain after it): a run
    /// started after it restores that snapshot (a snapshot at a partition's end is never
    /// restored by a run in the same group: the partition is not fetched again).
    async fn has_mid_partition_snapshot(&self) -> bool {
        let snaps: Vec<(i32, i64)> = self
            .client
            .query("SELECT partition, max(next_offset) FROM engine_snapshots GROUP BY partition")
            .fetch_all()
            .await
            .expect("snapshot offsets");
        let topic = self.topic.clone();
        let ends = tokio::task::spawn_blocking(move || {
            use rdkafka::consumer::{BaseConsumer, Consumer};
            let c: BaseConsumer = kafka_config()
                .set("group.id", unique_name("ends"))
                .create()
                .expect("consumer");
            (0..3)
                .map(|p| {
                    c.fetch_watermarks(&topic, p, Duration::from_secs(10))
                        .expect("watermarks")
                        .1
                })
                .collect::<Vec<i64>>()
        })
        .await
        .expect("watermarks thread");
        snaps
            .iter()
            .any(|&(p, next)| ends.get(p as usize).is_some_and(|&end| next < end))
    }

    /// Transitions written so far.
    async fn transitions(&self) -> u64 {
        self.client
            .query("SELECT count() FROM transitions")
            .fetch_one()
            .await
            .expect("count transitions")
    }

    /// Embedded mode's transition count (its summary line on stderr).
    fn reference_transitions(&self) -> u64 {
        let (_, stderr) = posture(
            &[
                "evaluate",
                "--baselines",
                BASELINES,
                "--events",
                &self.file,
                "--format",
                "json",
            ],
            &[],
        );
        let line = stderr
            .lines()
            .find(|l| l.contains(" transitions"))
            .expect("summary line");
        let before = line.split(" transitions").next().unwrap();
        before.rsplit(' ').next().unwrap().parse().expect("a count")
    }

    /// Waits until ClickHouse holds `want` transitions (and no more arrive).
    async fn wait_for(&self, want: u64, limit: Duration) -> u64 {
        let deadline = Instant::now() + limit;
        loop {
            let n = self.transitions().await;
            if n >= want || Instant::now() > deadline {
                tokio::time::sleep(Duration::from_secs(3)).await;
                return self.transitions().await;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// `score` and `recommendations` from ClickHouse equal `evaluate`, exactly.
    fn check_scores(&self) {
        let env = self.env();
        let mut compared = 0;
        for at in ["2026-11-01T00:20:00Z", "2026-11-01T09:00:00Z", "2026-11-01T23:59:59Z"] {
            let scopes: [&[&str]; 3] = [
                &["--tenant", "t1"],
                &["--tenant", "t1", "--group", "engineering"],
                &["--tenant", "t1", "--category", "os"],
            ];
            for scope in scopes {
                let common = [&["--baselines", BASELINES, "--format", "json", "--at", at][..], scope].concat();
                let (e, _) = posture(&[&["evaluate", "--events", &self.file][..], &common].concat(), &[]);
                let embedded: Value = serde_json::from_str(&e).unwrap();
                let (s, _) = posture(&[&["score"][..], &common].concat(), &env);
                let (r, _) = posture(&[&["recommendations"][..], &common].concat(), &env);
                let mut score: Value = serde_json::from_str(&s).unwrap();
                let recs: Value = serde_json::from_str(&r).unwrap();
                // What the answer reflects: after the run, every partition it wrote.
                let cut = score.as_object_mut().and_then(|o| o.remove("cut")).expect("score.cut");
                assert!(cut["complete_through"].is_string(), "{cut}");
                assert_eq!(score, embedded["score"], "score {scope:?} at {at}");
                assert_eq!(recs, embedded["recommendations"], "recommendations {scope:?} at {at}");
                assert!(score["max_points"].as_f64().unwrap() > 0.0);
                compared += 1;
            }
        }
        assert_eq!(compared, 9);
    }

    /// Starts reading scores of random scopes at random instants of the fleet's day from the
    /// trend store in a loop (the way a dashboard refreshes), directly from ClickHouse.
    fn start_reader(&self, seed: u64) -> Reader {
        let catalog = Arc::new(posture_core::Catalog::from_sources(&baseline_sources()).expect("baselines"));
        Reader::start(
            posture_query::Query::new(self.client.clone(), catalog),
            &["t1"],
            &["engineering", "finance", "sales"],
            (T_DAY - 3_600_000, T_DAY + 25 * 3_600_000),
            seed,
        )
    }

    /// Stops `reader` and checks every answer it read against embedded mode over the prefix of
    /// each partition the answer says it reflects (its cut). Returns (answers, partial ones,
    /// failed reads).
    async fn check_reads(&self, reader: Reader) -> (usize, usize, usize) {
        let (answers, failed) = reader.finish().await;
        let catalog = Arc::new(posture_core::Catalog::from_sources(&baseline_sources()).expect("baselines"));
        let reference = Reference::of_topic(catalog, &self.topic).await;
        let partial = reference.check(&answers);
        (answers.len(), partial, failed)
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }
}

/// A crashed member holds up a rebalance until its session or the rebalance timeout (the
/// members' max.poll.interval.ms) runs out; the test broker waits for the latter.
const FAST_REBALANCE: &[&str] = &["--kafka-max-poll-interval-ms", "8000"];

/// A partition of the test fleets (about 600 records) takes a second or two: snapshots every 200
/// records, so that a restart after a kill restores one mid-partition (with the same consumer
/// group, a finished partition is not fetched again, so its last snapshot is never restored).
const SNAPSHOT_OFTEN: &[&str] = &["--snapshot-records", "200"];

/// A plain HTTP/1.1 GET: status and body.
fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the HTTP port");
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn kill(child: &mut Child) {
    // SIGKILL: no clean shutdown, no final flush or snapshot.
    child.kill().expect("kill -9");
    child.wait().expect("reaped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_six_times_with_garbage_restarting_in_the_same_group_is_exact() {
    let fleet = Fleet::new("kill9", "250", "24").await;
    // 1% garbage: undecodable records and valid Avro with invalid content, spread over the partitions.
    let lines = std::fs::read_to_string(&fleet.file).unwrap().lines().count();
    let producer: FutureProducer = kafka_config().create().expect("producer");
    let mut garbage = BTreeSet::new();
    for i in 0..lines / 100 {
        let payload = if i % 3 == 0 {
            format!("\u{1}garbage {i}").into_bytes()
        } else if i % 3 == 1 {
            // An inventory over the bound (64 groups by default): invalid, not a stall.
            let groups: Vec<String> = (0..1000).map(|g| format!("\"g{g}\"")).collect();
            let ev = posture_core::ConfigChange::from_json(&format!(
                r#"{{"event_id":"g{i}","tenant_id":"t1","device_id":"junk-{i}","kind":"UPSERT","source":"AGENT","observed_at":"2026-11-01T01:00:00Z","sequence":1,"device":{{"os_family":"windows","os_version":"10","groups":[{}]}},"settings":[]}}"#,
                groups.join(",")
            ))
            .unwrap();
            posture_avro::encode_config_change(&ev, 1)
        } else {
            let ev = posture_core::ConfigChange::from_json(&format!(
                r#"{{"event_id":"g{i}","tenant_id":"t1","device_id":"","kind":"UPSERT","source":"AGENT","observed_at":"2026-11-01T01:00:00Z","sequence":1,"settings":[]}}"#
            ))
            .unwrap();
            posture_avro::encode_config_change(&ev, 1)
        };
        let key = format!("junk-{i}");
        let delivery = producer
            .send(
                FutureRecord::to(&fleet.topic).key(&key).payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .expect("garbage delivered");
        garbage.insert((delivery.partition, delivery.offset));
    }
    assert!(garbage.len() >= 15, "{} garbage records", garbage.len());

    let reference = fleet.reference_transitions();
    // The runs reach ClickHouse through a proxy, so that a kill can land inside a given request.
    let upstream = posture_tests::clickhouse_url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let proxy = Proxy::start(upstream).await;
    let via_proxy = [("POSTURE_CLICKHOUSE_URL", proxy.url())];
    let via_proxy: Vec<(&str, &str)> = via_proxy.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut rng = fastrand::Rng::with_seed(5);
    let mut progress = Vec::new();
    let mut assigned_after = Vec::new();
    // Every restart joins the same consumer group, as a systemd unit or a Kubernetes pod
    // restart does, with the shipped defaults for the assignment watch (30 s).
    let group = unique_name("kill9_group");
    let mut written = 0;
    // A dashboard reads all along: every answer must be exact for what it says it reflects.
    let reader = fleet.start_reader(9);
    for round in 0..6 {
        let log = format!("run-{round}.log");
        let spawned = Instant::now();
        let snapshots_before = fleet.snapshots().await;
        let mut child = fleet.spawn_run(&group, &via_proxy, SNAPSHOT_OFTEN, &log);
        assigned_after.push(fleet.wait_for_assignment(&log, spawned).await);
        let moment = match round {
            1 | 3 => {
                // Inside a flush (its INSERT INTO transitions) or a snapshot (its INSERT INTO
                // engine_snapshots): the proxy holds that request and the process dies in it.
                let (table, what) = if round == 1 {
                    ("transitions", "during a flush")
                } else {
                    ("engine_snapshots", "during a snapshot")
                };
                let sprung = proxy.trap(&["INSERT", table]);
                tokio::time::timeout(Duration::from_secs(60), sprung)
                    .await
                    .unwrap_or_else(|_| panic!("no INSERT INTO {table} in 60 s; log:\n{}", fleet.log(&log)))
                    .expect("trap");
                what
            }
            _ => {
                // At a random moment once this run has written something; in rounds 2 and 4 once
                // it has also saved a snapshot (otherwise every kill may come before the first
                // snapshot of the partition being worked on, and no later run would restore one).
                let deadline = Instant::now() + Duration::from_secs(60);
                while fleet.transitions().await <= written && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                if round % 2 == 0 && round > 0 {
                    // In round 2 (well before the end) one of a partition with records left, for
                    // a later run to restore (an end snapshot is never restored in the same group).
                    while (fleet.snapshots().await <= snapshots_before
                        || (round == 2 && !fleet.has_mid_partition_snapshot().await))
                        && Instant::now() < deadline
                    {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(rng.u64(0..800))).await;
                "at a random moment"
            }
        };
        kill(&mut child);
        proxy.clear_trap();
        written = fleet.transitions().await;
        eprintln!(
            "run {round}: partitions assigned {:.1} s after the start; killed {moment} with {written} transitions written",
            assigned_after[round].as_secs_f64()
        );
        progress.push(written);
    }
    eprintln!("transitions after each kill: {progress:?} of {reference}");
    assert!(progress[0] > 0, "the first run wrote something before it was killed");
    // At least five kills (the one in a flush and the one in a snapshot among them) came while
    // work remained; the sixth may come after the end, which still tests a restart.
    assert!(
        progress[4] < reference,
        "the kills came before the end: {progress:?} of {reference}"
    );
    let spawned = Instant::now();
    let mut last = fleet.spawn_run(&group, &via_proxy, SNAPSHOT_OFTEN, "run-final.log");
    assigned_after.push(fleet.wait_for_assignment("run-final.log", spawned).await);
    let got = fleet.wait_for(reference, Duration::from_secs(180)).await;
    kill(&mut last);
    let logs: String =
        (0..6).map(|r| fleet.log(&format!("run-{r}.log"))).collect::<String>() + &fleet.log("run-final.log");
    let rejoins = logs.matches("leaving and re-joining the group").count();
    eprintln!(
        "partitions assigned after each start (s): {:?}; {rejoins} re-join(s) of a stuck group",
        assigned_after
            .iter()
            .map(|d| (d.as_secs_f64() * 10.0).round() / 10.0)
            .collect::<Vec<_>>()
    );
    let (answers, partial, failed) = fleet.check_reads(reader).await;
    eprintln!(
        "{answers} scores read across six kill -9 and restarts ({partial} of a partial cut, {failed} reads failed): \
         each equal to embedded mode over its cut"
    );
    assert!(partial >= 10, "too few answers read mid-run ({partial} of {answers})");
    assert_eq!(
        got, reference,
        "transitions written (no loss, no duplicate); logs:\n{logs}"
    );
    assert!(logs.contains("restored"), "the runs restored snapshots:\n{logs}");
    fleet.check_scores();

    // Kafka outputs: a replay produces again what the killed run had produced since its last
    // snapshot, with the same dedup keys and the same bytes. Deduplicated by key, every dead
    // letter is there once (one per garbage record, with its reason), and every score delta once
    // (one per transition row in ClickHouse, under the same source position and seq).
    let dead = posture_tests::read_topic_to_end(&format!("{}.dead", fleet.topic)).await;
    let dead_keys = dedup_by_key(&dead);
    let mut lineage = BTreeSet::new();
    for m in dead_keys.values() {
        let reason = header(m, "posture.reason");
        assert!(
            ["bad_magic", "invalid_event"].contains(&reason.as_str()),
            "reason {reason:?}"
        );
        lineage.insert((
            header(m, "posture.source.partition").parse::<i32>().unwrap(),
            header(m, "posture.source.offset").parse::<i64>().unwrap(),
        ));
    }
    let oversized = dead_keys
        .values()
        .filter(|m| header(m, "posture.error").contains("device.groups lists 1000 names, more than the limit of 64"))
        .count();
    assert_eq!(
        oversized,
        (0..garbage.len()).filter(|i| i % 3 == 1).count(),
        "the oversized inventories, with the reason"
    );
    assert_eq!(
        lineage,
        garbage,
        "dead letters by source position; the dead-letter topic {}.dead holds (partition, offset, dedup key): {:?}",
        fleet.topic,
        dead.iter()
            .map(|m| (
                m.partition(),
                m.offset(),
                header(m, posture_ingest::emit::DEDUP_KEY_HEADER)
            ))
            .collect::<Vec<_>>()
    );
    let deltas = posture_tests::read_topic_to_end(&format!("{}.deltas", fleet.topic)).await;
    let delta_keys = dedup_by_key(&deltas);
    let rows: Vec<(i32, i64, u32)> = fleet
        .client
        .query("SELECT source_partition, source_offset, seq FROM transitions")
        .fetch_all()
        .await
        .expect("transition lineage");
    let want: BTreeSet<String> = rows
        .iter()
        .map(|(p, o, s)| format!("{}/{p}/{o}/{s}", fleet.topic))
        .collect();
    eprintln!(
        "Kafka outputs: {} dead letters for {} garbage records, {} score deltas for {} transitions (the rest: replays, \
         dropped by the dedup key)",
        dead.len(),
        garbage.len(),
        deltas.len(),
        reference
    );
    assert_eq!(want.len() as u64, reference, "one lineage per transition row");
    let got_keys: BTreeSet<String> = delta_keys.keys().cloned().collect();
    assert_eq!(
        got_keys.len(),
        want.len(),
        "score deltas after dedup: {} keys not in ClickHouse, {} rows without a delta",
        got_keys.difference(&want).count(),
        want.difference(&got_keys).count()
    );
    assert_eq!(got_keys, want, "score deltas after dedup = the transitions, key by key");
}

/// The header `name` of `m` as text ("" when absent).
fn header(m: &rdkafka::message::OwnedMessage, name: &str) -> String {
    m.headers()
        .and_then(|h| h.iter().find(|h| h.key == name))
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default()
}

/// Output records by their dedup key (`posture.dedup-key`), as a consumer that drops repeats
/// sees them. Every record has a key, and records with the same key are the same record (key,
/// payload and headers): a replay, not a different output.
fn dedup_by_key(
    records: &[rdkafka::message::OwnedMessage],
) -> std::collections::BTreeMap<String, &rdkafka::message::OwnedMessage> {
    let mut out = std::collections::BTreeMap::new();
    for m in records {
        let key = header(m, posture_ingest::emit::DEDUP_KEY_HEADER);
        assert!(!key.is_empty(), "a record without a dedup key: {m:?}");
        if let Some(first) = out.insert(key.clone(), m) {
            assert_eq!(
                (first.key(), first.payload(), header(first, "posture.reason")),
                (m.key(), m.payload(), header(m, "posture.reason")),
                "two different records under the dedup key {key}"
            );
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_without_partitions_says_so_in_the_log_metrics_and_readyz() {
    // One partition, two instances in one group: one of them (the group's assignor picks which)
    // gets nothing. Both report after 3 s and do not re-join (that would only move the partition).
    let fleet = Fleet::new_in("idle", "20", "1", 1).await;
    let group = unique_name("idle_group");
    let addrs = [0, 1].map(|_| format!("127.0.0.1:{}", posture_tests::free_port()));
    let logs = ["a.log", "b.log"];
    let mut runs: Vec<Child> = (0..2)
        .map(|i| {
            let args = [
                "--http-addr",
                &addrs[i],
                "--assignment-timeout-secs",
                "3",
                "--kafka-rejoin-unassigned",
                "false",
            ];
            fleet.spawn_run(&group, &[], &args, logs[i])
        })
        .collect();
    // Wait until one holds the partition and the other has reported holding none.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (idle, busy) = loop {
        let text = logs.map(|l| fleet.log(l));
        let holds = |i: usize| text[i].rfind("assigned partitions [0]") > text[i].rfind("assigned no partition");
        let reported = |i: usize| text[i].contains("no partition of");
        if holds(0) && !holds(1) && reported(1) {
            break (1, 0);
        }
        if holds(1) && !holds(0) && reported(0) {
            break (0, 1);
        }
        assert!(
            Instant::now() < deadline,
            "no idle instance reported; logs:\n{}\n---\n{}",
            text[0],
            text[1]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The report: a warning that names the group, the topic and the likely causes; /readyz
    // failing with the reason; the gauges.
    let log = fleet.log(logs[idle]);
    let warning = log.lines().rfind(|l| l.contains("no partition of")).unwrap();
    assert!(warning.contains("WARN"), "{warning}");
    assert!(warning.contains(&group), "the warning names the group: {warning}");
    assert!(warning.contains(&fleet.topic), "and the topic: {warning}");
    assert!(
        warning.contains("died without leaving") && warning.contains("more members than the topic has partitions"),
        "and the likely causes: {warning}"
    );
    assert!(warning.contains("not re-joining"), "{warning}");
    let (status, body) = http_get(&addrs[idle], "/readyz");
    assert_eq!(status, 503, "/readyz: {body}");
    assert!(
        body.contains("no partition of") && body.contains(&group),
        "/readyz says why: {body}"
    );
    let (_, metrics) = http_get(&addrs[idle], "/metrics");
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("no {name} in /metrics"))
            .trim()
            .parse()
            .unwrap()
    };
    assert_eq!(value("posture_partitions_assigned"), 0.0);
    assert!(value("posture_unassigned_seconds") >= 3.0, "{metrics}");
    assert_eq!(
        value("posture_group_rejoins_total"),
        0.0,
        "--kafka-rejoin-unassigned false"
    );
    let (status, _) = http_get(&addrs[busy], "/readyz");
    assert_eq!(status, 200, "the instance holding the partition is ready");

    // The holder stops (SIGTERM: it leaves the group): the idle one gets the partition, says
    // so, and is ready again.
    let status = Command::new("kill")
        .args(["-TERM", &runs[busy].id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(status.success());
    runs[busy].wait().expect("reaped");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !fleet
        .log(logs[idle])
        .contains("the consumer group assigned partitions [0]")
    {
        assert!(
            Instant::now() < deadline,
            "the idle instance never got the partition; log:\n{}",
            fleet.log(logs[idle])
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = http_get(&addrs[idle], "/readyz");
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz after the assignment: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, metrics) = http_get(&addrs[idle], "/metrics");
    assert!(metrics.contains("\nposture_partitions_assigned 1\n"), "{metrics}");
    assert!(metrics.contains("\nposture_unassigned_seconds 0\n"), "{metrics}");
    assert!(
        fleet.log(logs[idle]).contains("without any"),
        "the recovery is logged:\n{}",
        fleet.log(logs[idle])
    );
    kill(&mut runs[idle]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_one_stopped_one_added_is_exact() {
    let fleet = Fleet::new("group3", "250", "24").await;
    let reference = fleet.reference_transitions();
    let group = unique_name("group3_group");
    let args = FAST_REBALANCE;
    // Joined one after the other, as instances of a deployment start.
    let a = fleet.spawn_run(&group, &[], args, "a.log");
    let deadline = Instant::now() + Duration::from_secs(60);
    while fleet.transitions().await == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let b = fleet.spawn_run(&group, &[], args, "b.log");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let c = fleet.spawn_run(&group, &[], args, "c.log");
    tokio::time::sleep(Duration::from_secs(2)).await;
    while fleet.transitions().await < reference / 5 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Stop an instance that is working on a partition (the group's assignment decides which)
    // with SIGTERM, as an orchestrator does. (A kill -9 of a member that holds partitions
    // strands them on the test broker: Tansu 0.6 does not evict a silent member on its session
    // timeout. Crash recovery of kill -9 is the test above.)
    // Working: it started partitions (restored or fresh) and has not had them all revoked since.
    let working = |log: &str| {
        let text = fleet.log(log);
        let started = text.matches(": restored ").count() + text.matches(": no snapshot").count();
        started > text.matches(": revoked;").count()
    };
    let settle = Instant::now() + Duration::from_secs(60);
    // The first instance may have written a fifth of the fleet before the others joined, and had
    // its partitions revoked by their joining: wait until someone holds partitions again.
    while !["b.log", "c.log", "a.log"].into_iter().any(&working) && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let victim = ["b.log", "c.log", "a.log"]
        .into_iter()
        .find(|l| working(l))
        .expect("someone works");
    let before_kill = fleet.transitions().await;
    let mut survivors = Vec::new();
    for (name, mut child) in [("a.log", a), ("b.log", b), ("c.log", c)] {
        if name == victim {
            let status = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .expect("kill -TERM");
            assert!(status.success());
            let exit = child.wait().expect("reaped");
            assert!(exit.success(), "a SIGTERM stop is clean: {exit:?}");
        } else {
            survivors.push(child);
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    survivors.push(fleet.spawn_run(&group, &[], args, "d.log"));
    let got = fleet.wait_for(reference, Duration::from_secs(180)).await;
    for child in &mut survivors {
        kill(child);
    }
    eprintln!("transitions: {before_kill} when {victim} was killed, {got} at the end, reference {reference}");
    assert!(before_kill < reference, "killed mid-run");
    let logs = ["a.log", "b.log", "c.log", "d.log"]
        .map(|l| fleet.log(l))
        .join("\n---\n");
    assert_eq!(got, reference, "transitions written; logs:\n{logs}");
    assert!(
        logs.contains("restored"),
        "partitions moved with their snapshots:\n{logs}"
    );
    fleet.check_scores();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_down_for_30_seconds_is_exact_with_bounded_memory() {
    let fleet = Fleet::new("chdown", "250", "24").await;
    let reference = fleet.reference_transitions();
    let upstream = posture_tests::clickhouse_url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let proxy = Proxy::start(upstream).await;
    let url = proxy.url();
    let mut child = fleet.spawn_run(
        &unique_name("chdown_group"),
        &[("POSTURE_CLICKHOUSE_URL", url.as_str())],
        &["--kafka-max-poll-interval-ms", "90000"],
        "run.log",
    );
    let pid = child.id();
    let reader = fleet.start_reader(17);
    let rss = || -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    // Let it write something, then take ClickHouse away for 30 s.
    let deadline = Instant::now() + Duration::from_secs(60);
    while fleet.transitions().await == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    proxy.down(true);
    // An INSERT whose request had reached the server before the cut may still commit: let those
    // finish before counting.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let at_outage = fleet.transitions().await;
    let mut peak = 0;
    let rss_start = rss();
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        peak = peak.max(rss());
    }
    let during = fleet.transitions().await;
    // The HTTP port tells what is happening: retries counted, still alive.
    let log = fleet.log("run.log");
    let addr = log
        .lines()
        .filter(|l| l.contains("posture run: serving"))
        .find_map(|l| l.split(" on http://").nth(1))
        .expect("the HTTP address in the log")
        .trim()
        .to_string();
    let (status, metrics) = http_get(&addr, "/metrics");
    assert_eq!(status, 200);
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && !l.starts_with('#'))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in /metrics:\n{metrics}"))
    };
    assert!(
        value("posture_sink_retries_total") > 0.0,
        "retries while ClickHouse is down"
    );
    assert!(value("posture_events_consumed_total") > 0.0);
    assert_eq!(http_get(&addr, "/healthz").0, 200);
    proxy.down(false);
    let got = fleet.wait_for(reference, Duration::from_secs(180)).await;
    kill(&mut child);
    let (answers, partial, failed) = fleet.check_reads(reader).await;
    eprintln!(
        "{answers} scores read before, during and after the outage ({partial} of a partial cut, {failed} reads failed): \
         each equal to embedded mode over its cut"
    );
    assert!(partial >= 10, "too few answers read mid-run ({partial} of {answers})");
    let log = fleet.log("run.log");
    eprintln!(
        "transitions {at_outage} at the outage, {during} after it, {got} at the end (reference {reference}); \
         RSS {rss_start} KiB at the outage, peak {peak} KiB during it"
    );
    assert!(at_outage < reference, "the outage came mid-run");
    assert_eq!(during, at_outage, "nothing was written while ClickHouse was down");
    assert!(peak > 0, "RSS measured");
    assert!(
        peak <= rss_start + 64 * 1024 && peak <= 512 * 1024,
        "resident memory bounded during the outage: {rss_start} -> {peak} KiB"
    );
    assert_eq!(got, reference, "transitions written; log:\n{log}");
    fleet.check_scores();
}

/// A Tansu broker of our own (the stack's binary) with libsql storage in
/// `dir`, on a free port, so it can be killed and restarted without
/// disturbing the other tests.
struct OwnBroker {
    dir: ScratchDir,
    port: u16,
    child: Option<Child>,
}

impl OwnBroker {
    fn binary() -> std::path::PathBuf {
        let cache = std::env::var_os("POSTURE_CACHE")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| std::path::PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/posture"));
        let bin = cache.join("tansu-0.6.0/bin/tansu");
        assert!(
            bin.exists(),
            "no Tansu binary at {}; {}",
            bin.display(),
            posture_tests::STACK_HINT
        );
        bin
    }

    fn start() -> OwnBroker {
        let dir = ScratchDir::new("own_broker");
        let port = posture_tests::free_port();
        let mut b = OwnBroker { dir, port, child: None };
        b.restart();
        b
    }

    fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn restart(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("tansu.log"))
            .unwrap();
        let child = Command::new(Self::binary())
            .current_dir(&self.dir)
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start tansu");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not come up on {}", self.port);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill(&mut c);
        }
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_mid_run_is_exact() {
    let mut broker = OwnBroker::start();
    let fleet = Fleet::new_at(&broker.brokers(), "brokerrestart", "250", "24").await;
    let reference = fleet.reference_transitions();
    let mut run = fleet.spawn_run(&unique_name("restart_group"), &[], FAST_REBALANCE, "run.log");
    let deadline = Instant::now() + Duration::from_secs(60);
    while fleet.transitions().await < reference / 5 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // kill -9 the broker, keep it down for 5 s, start it again on the same storage.
    broker.kill();
    let at_kill = fleet.transitions().await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    broker.restart();
    let got = fleet.wait_for(reference, Duration::from_secs(180)).await;
    kill(&mut run);
    let log = fleet.log("run.log");
    eprintln!("transitions: {at_kill} when the broker was killed, {got} at the end, reference {reference}");
    assert!(at_kill < reference, "the broker went down mid-run");
    assert!(run_alive_until_the_end(&log), "the pipeline kept running:\n{log}");
    assert_eq!(got, reference, "transitions written; log:\n{log}");
    fleet.check_scores();
}

/// A ClickHouse server of our own (the stack's `clickhouse-server`, a config like
/// `scripts/stack`'s) with its data in `dir`, on free ports, so it can be killed and started
/// again on the same data without disturbing the other tests.
struct OwnClickHouse {
    dir: ScratchDir,
    http: u16,
    child: Option<Child>,
}

impl OwnClickHouse {
    fn start() -> OwnClickHouse {
        let dir = ScratchDir::new("own_clickhouse");
        for sub in ["data", "tmp", "log", "user_files", "format_schemas"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let (http, tcp) = (posture_tests::free_port(), posture_tests::free_port());
        let d = dir.display();
        std::fs::write(
            dir.join("config.xml"),
            format!(
                "<?xml version=\"1.0\"?>\n<yandex>\n<logger><level>information</level>\
                 <log>{d}/log/server.log</log><errorlog>{d}/log/server.err.log</errorlog></logger>\n\
                 <http_port>{http}</http_port><tcp_port>{tcp}</tcp_port><listen_host>127.0.0.1</listen_host>\n\
                 <max_connections>256</max_connections><keep_alive_timeout>3</keep_alive_timeout>\n\
                 <mark_cache_size>268435456</mark_cache_size><path>{d}/data/</path><tmp_path>{d}/tmp/</tmp_path>\n\
                 <user_files_path>{d}/user_files/</user_files_path><format_schema_path>{d}/format_schemas/</format_schema_path>\n\
                 <users_config>{d}/users.xml</users_config><default_profile>default</default_profile>\n\
                 <default_database>default</default_database><timezone>UTC</timezone><mlock_executable>false</mlock_executable>\n\
                 </yandex>\n"
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("users.xml"),
            "<?xml version=\"1.0\"?>\n<yandex><profiles><default><max_memory_usage>4000000000</max_memory_usage></default></profiles>\
             <users><default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks>\
             <profile>default</profile><quota>default</quota></default></users>\
             <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors>\
             <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas></yandex>\n",
        )
        .unwrap();
        let mut ch = OwnClickHouse { dir, http, child: None };
        ch.restart();
        ch
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http)
    }

    /// Starts the server on its data (after a kill: as an operator restarts it).
    fn restart(&mut self) {
        let bin = ["/usr/bin/clickhouse-server", "/usr/sbin/clickhouse-server"]
            .into_iter()
            .find(|b| std::path::Path::new(b).exists())
            .unwrap_or_else(|| panic!("no clickhouse-server; {}", posture_tests::STACK_HINT));
        let log = std::fs::File::create(self.dir.join("log/stdout.log")).unwrap();
        let child = Command::new(bin)
            .current_dir(&self.dir)
            .arg(format!("--config-file={}", self.dir.join("config.xml").display()))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start clickhouse-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !clickhouse_answers(self.http) {
            assert!(
                Instant::now() < deadline,
                "clickhouse-server did not come up on {}: {}",
                self.http,
                std::fs::read_to_string(self.dir.join("log/server.err.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill(&mut c);
        }
    }
}

impl Drop for OwnClickHouse {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether the ClickHouse HTTP port `port` answers `SELECT 1` (no panic when it is down).
fn clickhouse_answers(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if write!(
        s,
        "GET /?query=SELECT%201 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return false;
    }
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.starts_with("HTTP/1.1 200")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clickhouse_restart_mid_run_is_exact_for_every_read() {
    let mut ch = OwnClickHouse::start();
    let fleet = Fleet::new_with(&kafka_brokers(), &ch.url(), "chrestart", "250", "24").await;
    let reference = fleet.reference_transitions();
    let mut run = fleet.spawn_run(&unique_name("chrestart_group"), &[], &[], "run.log");
    let reader = fleet.start_reader(23);
    let deadline = Instant::now() + Duration::from_secs(60);
    while fleet.transitions().await < reference / 5 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // kill -9 the server mid-write, keep it down for 5 s, start it again on the same data.
    ch.kill();
    tokio::time::sleep(Duration::from_secs(5)).await;
    ch.restart();
    let got = fleet.wait_for(reference, Duration::from_secs(180)).await;
    kill(&mut run);
    let (answers, partial, failed) = fleet.check_reads(reader).await;
    let log = fleet.log("run.log");
    eprintln!(
        "{answers} scores read around a kill -9 and restart of ClickHouse ({partial} of a partial cut, \
         {failed} reads failed while it was down): each equal to embedded mode over its cut"
    );
    assert!(failed > 0, "reads failed while the server was down");
    assert!(partial >= 10, "too few answers read mid-run ({partial} of {answers})");
    assert!(run_alive_until_the_end(&log), "the pipeline kept running:\n{log}");
    assert_eq!(got, reference, "transitions written; log:\n{log}");
    fleet.check_scores();
}

/// The run did not stop on its own (no "stopped after" summary, no error exit line).
fn run_alive_until_the_end(log: &str) -> bool {
    !log.contains("stopped after") && !log.contains("posture: error")
}
