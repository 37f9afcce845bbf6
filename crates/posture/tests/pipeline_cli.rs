//! The `posture` binary end to end on the real stack (scripts/stack up):
//!
//! `simulate --seed` writes a fleet to a JSON-lines file and the same fleet
//! to a fresh Kafka topic; garbage records are mixed in; `migrate` and
//! `run --until-idle` take the topic into a fresh ClickHouse database and
//! produce score deltas and dead letters; then `score` and
//! `recommendations` (read from ClickHouse) must equal `evaluate` (embedded
//! mode on the file) exactly, for the tenant, a group and a category at
//! several instants; every garbage record must be in the dead-letter topic
//! with its reason; and the score-delta topic must hold one record per
//! transition written to ClickHouse, with its lineage.
mod common;
use common::posture;
use posture_tests::registry::FakeRegistry;
use posture_tests::{
    fresh_database, fresh_topic_with_partitions, kafka_brokers, kafka_config, read_topic, unique_name,
};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::BTreeMap;
use std::time::Duration;

const BASELINES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/baselines");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_runs_the_pipeline_and_reads_the_score_from_clickhouse() {
    let dir = posture_tests::ScratchDir::new("pipeline_cli");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("fleet.jsonl");
    let file = file.to_str().unwrap();
    let brokers = kafka_brokers();
    let topic = fresh_topic_with_partitions("cli_in", 3).await;
    let (client, database) = fresh_database("cli").await;
    let deltas_topic = unique_name("cli_deltas");
    let dead_topic = unique_name("cli_dead");
    let sim = [
        "simulate",
        "--baselines",
        BASELINES,
        "--devices",
        "150",
        "--tenants",
        "2",
        "--hours",
        "12",
        "--seed",
        "7",
    ];
    // The same seed gives the same events: once into a file, once into Kafka.
    posture(&[&sim[..], &["--out", file]].concat(), &[]);
    posture(
        &[&sim[..], &["--kafka", &brokers, "--topic", &topic, "--schema-id", "1"]].concat(),
        &[],
    );

    // Garbage, each with the reason it must be dead-lettered with.
    let garbage: Vec<(&str, Vec<u8>, &str)> = vec![
        ("junk-1", b"\x07not avro at all".to_vec(), "bad_magic"),
        ("junk-2", vec![0, 0, 0, 0, 99, 2, 4], "schema_not_found"),
        ("junk-6", vec![0, 0, 0, 0, 2, 2, 4], "incompatible_schema"),
        ("junk-3", vec![0, 0, 0, 0, 1, 0x80], "malformed_avro"),
        ("junk-4", vec![0, 0], "too_short"),
        ("junk-5", invalid_event(), "invalid_event"),
    ];
    let producer: FutureProducer = kafka_config().create().expect("producer");
    for (key, payload, _) in &garbage {
        producer
            .send(
                FutureRecord::to(&topic).key(*key).payload(payload),
                Duration::from_secs(10),
            )
            .await
            .expect("garbage delivered");
    }

    let ch_env = [("POSTURE_CLICKHOUSE_URL", posture_tests::clickhouse_url())];
    let ch_env: Vec<(&str, &str)> = ch_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut env = ch_env.clone();
    env.push(("POSTURE_CLICKHOUSE_DATABASE", &database));
    let migrated = posture(&["migrate"], &env);
    assert!(migrated.contains("applied"), "{migrated}");
    // The configuration file carries some settings (the environment and options the rest).
    // Schema ids are looked up in a (fake) Schema Registry: 1 is ConfigChange, 2 another record.
    let registry = FakeRegistry::start(registry_route).await;
    let config = dir.join("posture.toml");
    std::fs::write(
        &config,
        format!(
            "batch-rows = 2000\nbatch-ms = 300\nschema-registry-url = \"{}\"\ndead-letter-topic = \"{dead_topic}\"\n",
            registry.url()
        ),
    )
    .unwrap();
    posture(
        &[
            "run",
            "--config",
            config.to_str().unwrap(),
            "--baselines",
            BASELINES,
            "--brokers",
            &brokers,
            "--topic",
            &topic,
            "--group",
            &unique_name("cli_group"),
            "--score-deltas-topic",
            &deltas_topic,
            "--until-idle",
            "4",
            "--http-addr",
            "127.0.0.1:0",
        ],
        &env,
    );

    assert_eq!(registry.count("/schemas/ids/1"), 1, "asked once, then cached");
    assert_eq!(registry.count("/schemas/ids/2"), 1);

    // Scores: ClickHouse (score, recommendations) against embedded mode (evaluate).
    let compared = common::assert_reads_equal_embedded(BASELINES, file, &env, "ClickHouse");
    assert_eq!(compared, 12);

    // Dead letters: every garbage record, with its reason and source.
    let dead = read_topic(&dead_topic).await;
    let mut got: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for m in &dead {
        let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
        let mut h = BTreeMap::new();
        for hd in m.headers().expect("headers").iter() {
            h.insert(
                hd.key.to_string(),
                String::from_utf8_lossy(hd.value.unwrap_or_default()).into_owned(),
            );
        }
        got.insert(key, h);
    }
    assert_eq!(dead.len(), garbage.len(), "dead letters: {got:?}");
    for (key, payload, reason) in &garbage {
        let h = &got[*key];
        assert_eq!(h["posture.reason"], *reason, "{key}: {h:?}");
        assert_eq!(h["posture.source.topic"], topic);
        assert!(!h["posture.error"].is_empty());
        let m = dead.iter().find(|m| m.key() == Some(key.as_bytes())).unwrap();
        assert_eq!(m.payload(), Some(&payload[..]), "{key}: the original bytes are kept");
    }

    // Score deltas: one per transition in ClickHouse, with lineage.
    let deltas = read_topic(&deltas_topic).await;
    let transitions: u64 = client
        .query("SELECT count() FROM transitions")
        .fetch_one()
        .await
        .expect("count transitions");
    assert!(transitions > 1000, "{transitions}");
    assert_eq!(deltas.len() as u64, transitions);
    let mut lineage = std::collections::BTreeSet::new();
    for m in &deltas {
        let d = posture_avro::decode_score_delta(m.payload().unwrap()).expect("ScoreDelta decodes");
        assert_eq!(m.key(), Some(d.device.as_bytes()), "keyed by device");
        assert!(d.source_partition >= 0 && d.source_offset >= 0);
        lineage.insert((d.source_partition, d.source_offset));
    }
    assert!(lineage.len() > 100, "lineage varies: {}", lineage.len());
}

/// The Confluent REST answers of the fake registry.
fn registry_route(path: &str) -> (&'static str, String) {
    let schema = |s: &str| serde_json::json!({ "schema": s }).to_string();
    match path {
        "/schemas/ids/1" => ("200 OK", schema(posture_avro::schemas::CONFIG_CHANGE_AVSC)),
        "/schemas/ids/2" => (
            "200 OK",
            schema(r#"{"type":"record","name":"Other","fields":[{"name":"x","type":"long"}]}"#),
        ),
        _ => (
            "404 Not Found",
            r#"{"error_code":40403,"message":"Schema not found"}"#.to_string(),
        ),
    }
}

/// A record that decodes (Confluent wire format, schema id 1) but breaks the
/// contract: an empty device id.
fn invalid_event() -> Vec<u8> {
    let ev = posture_core::ConfigChange::from_json(
        r#"{"event_id":"e-bad","tenant_id":"t1","device_id":"","kind":"UPSERT","source":"AGENT","observed_at":"2026-11-01T00:00:00Z","sequence":1,"settings":[]}"#,
    )
    .expect("the JSON form parses");
    posture_avro::encode_config_change(&ev, 1)
}
