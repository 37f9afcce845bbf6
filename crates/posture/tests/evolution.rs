//! Schema evolution end to end on the real stack (scripts/stack up): agents of
//! three versions on one topic, written by an independent Avro client.
//!
//! `simulate` writes a fleet to a file; `evolution_agents.py` (Python, fastavro
//! and confluent-kafka, not posture's code) produces every event into a fresh
//! topic with its device's writer schema: version 1 (schema id 1), version 2
//! (id 2: fields added and removed, the new source symbol EDR; an upgrading
//! cohort switches from 1 to 2 halfway), or a broken build's schema posture
//! cannot read (id 3: a ChangeKind symbol without a reader default). It also
//! writes what fastavro's own resolution reads back with the version-1 reader
//! schema. A fake registry serves the three schemas under their ids.
//!
//! `run --until-idle` then takes the topic into ClickHouse, and the test checks:
//! * scores and recommendations equal embedded mode (`evaluate`) over the
//!   version-1 equivalents of the records of ids 1 and 2;
//! * every record of id 3 is in the dead-letter topic once, its reason
//!   `incompatible_schema` and its error naming the field `kind`;
//! * none lost or doubled: the run consumed every record produced, applied and
//!   ignored exactly what embedded mode did, and refused only the id-3 records;
//! * the registry was asked once per id, and posture registered its output
//!   schemas there: every score delta carries the registered id and decodes
//!   with the schema the registry serves for it.
mod common;
use common::posture;
use posture_tests::registry::FakeRegistry;
use posture_tests::{fresh_database, fresh_topic_with_partitions, kafka_brokers, read_topic, unique_name};
use rdkafka::message::{Headers, Message};
use std::collections::BTreeMap;
use std::process::Command;

const BASELINES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/baselines");
const SCHEMAS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas/avro");
const BAD_SCHEMA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/config_change_bad_kind.avsc"
);
const AGENTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/evolution_agents.py");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_of_three_schema_versions_on_one_topic() {
    let dir = posture_tests::ScratchDir::new("evolution");
    std::fs::create_dir_all(&dir).unwrap();
    let path = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    let (fleet, expected, summary) = (path("fleet.jsonl"), path("expected.jsonl"), path("summary.json"));
    let brokers = kafka_brokers();
    let topic = fresh_topic_with_partitions("evolution_in", 3).await;
    let (_client, database) = fresh_database("evolution").await;
    let dead_topic = unique_name("evolution_dead");
    let deltas_topic = unique_name("evolution_deltas");
    let alerts_topic = unique_name("evolution_alerts");
    posture(
        &[
            "simulate",
            "--baselines",
            BASELINES,
            "--devices",
            "300",
            "--tenants",
            "2",
            "--hours",
            "12",
            "--seed",
            "25",
            "--out",
            &fleet,
        ],
        &[],
    );

    // The agents: an independent Avro client produces the topic.
    let v1 = format!("{SCHEMAS}/config_change.avsc");
    let v2 = format!("{SCHEMAS}/config_change.v2.avsc");
    let python = posture_tests::stack_python();
    let out = Command::new(&python)
        .args([
            AGENTS,
            "--brokers",
            &brokers,
            "--topic",
            &topic,
            "--events",
            &fleet,
            "--v1",
            &v1,
            "--v2",
            &v2,
            "--bad",
            BAD_SCHEMA,
            "--v1-id",
            "1",
            "--v2-id",
            "2",
            "--bad-id",
            "3",
            "--expected",
            &expected,
            "--summary",
            &summary,
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}; {}", posture_tests::STACK_HINT));
    assert!(
        out.status.success(),
        "evolution_agents.py failed (its venv needs fastavro and confluent-kafka; {}):\n{}",
        posture_tests::STACK_HINT,
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    let by_id = |id: &str| summary["by_schema_id"][id].as_u64().unwrap();
    let (n1, n2, n3) = (by_id("1"), by_id("2"), by_id("3"));
    let produced = summary["records"].as_u64().unwrap();
    assert_eq!(n1 + n2 + n3, produced);
    // Every cohort is there, and so is every kind of change version 2 brings.
    assert!(n1 > 300 && n2 > 300 && n3 > 20, "{summary}");
    assert!(summary["edr"].as_u64().unwrap() > 20, "{summary}");
    assert!(summary["upgraded_devices"].as_u64().unwrap() > 10, "{summary}");

    let registry = FakeRegistry::start(registry_route).await;
    let ch_env = [("POSTURE_CLICKHOUSE_URL", posture_tests::clickhouse_url())];
    let mut env: Vec<(&str, &str)> = ch_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.push(("POSTURE_CLICKHOUSE_DATABASE", &database));
    posture(&["migrate"], &env);
    let group = unique_name("evolution_group");
    let registry_url = registry.url();
    let run = Command::new(env!("CARGO_BIN_EXE_posture"))
        .args([
            "run",
            "--baselines",
            BASELINES,
            "--brokers",
            &brokers,
            "--topic",
            &topic,
            "--group",
            &group,
            "--schema-registry-url",
            &registry_url,
            "--dead-letter-topic",
            &dead_topic,
            "--score-deltas-topic",
            &deltas_topic,
            "--alerts-topic",
            &alerts_topic,
            "--until-idle",
            "4",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .envs(env.iter().copied())
        .output()
        .expect("run posture");
    let log = String::from_utf8_lossy(&run.stderr).into_owned();
    assert!(run.status.success(), "posture run failed: {log}");
    for id in 1..=3 {
        let asked = registry
            .requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path == format!("/schemas/ids/{id}"))
            .count();
        assert_eq!(asked, 1, "id {id}: asked once");
    }
    assert!(
        log.contains("schema id 2: another writer schema, read by Avro schema resolution"),
        "the resolution of id 2 is logged: {log}"
    );

    assert_output_schemas_registered(&registry, &deltas_topic, &alerts_topic, &log).await;

    // Scores: ClickHouse against embedded mode over the version-1 equivalents.
    let compared = common::assert_reads_equal_embedded(BASELINES, &expected, &env, "ClickHouse");
    assert_eq!(compared, 12);

    // None lost or doubled: the run's counts against embedded mode's.
    let embedded = Command::new(env!("CARGO_BIN_EXE_posture"))
        .args([
            "evaluate",
            "--events",
            &expected,
            "--baselines",
            BASELINES,
            "--format",
            "json",
        ])
        .output()
        .expect("evaluate");
    let embedded_stderr = String::from_utf8_lossy(&embedded.stderr).into_owned();
    // The summary line (lines before it name single events).
    let embedded_log = embedded_stderr
        .lines()
        .find(|l| l.starts_with("posture: ") && l.contains("events read"))
        .unwrap_or_else(|| panic!("no summary line: {embedded_stderr}"))
        .to_owned();
    let (read, applied, stale, invalid) = (
        count(&embedded_log, "events read"),
        count(&embedded_log, "applied"),
        count(&embedded_log, "stale or duplicate"),
        count(&embedded_log, "invalid"),
    );
    assert_eq!(read, n1 + n2, "{embedded_log}");
    let stopped = log
        .lines()
        .find(|l| l.contains("stopped after"))
        .expect("the run's summary line");
    assert_eq!(
        count(stopped, "records,"),
        produced,
        "every record consumed once: {stopped}"
    );
    assert_eq!(count(stopped, "applied"), applied, "{stopped}\n{embedded_log}");
    assert_eq!(count(stopped, "stale or duplicate"), stale, "{stopped}\n{embedded_log}");
    assert_eq!(count(stopped, "invalid"), invalid, "{stopped}\n{embedded_log}");
    assert_eq!(
        count(stopped, "undecodable"),
        n3,
        "only the broken build's records: {stopped}"
    );
    assert_eq!(
        count(stopped, "score deltas"),
        count(&embedded_log, "transitions"),
        "{stopped}\n{embedded_log}"
    );
    eprintln!("produced {produced}: {n1} v1, {n2} v2, {n3} broken; run: {stopped}\nembedded: {embedded_log}");

    // Dead letters: each id-3 record once, naming the field.
    let dead = read_topic(&dead_topic).await;
    assert_eq!(dead.len() as u64, n3);
    let mut keys = BTreeMap::<String, usize>::new();
    for m in &dead {
        let mut h = BTreeMap::new();
        for hd in m.headers().expect("headers").iter() {
            h.insert(
                hd.key.to_string(),
                String::from_utf8_lossy(hd.value.unwrap_or_default()).into_owned(),
            );
        }
        assert_eq!(h["posture.reason"], "incompatible_schema", "{h:?}");
        assert!(
            h["posture.error"].contains("field kind: writer enum symbol QUARANTINE"),
            "the error names the field: {h:?}"
        );
        assert_eq!(m.payload().map(|p| p[4]), Some(3), "the original bytes, schema id 3");
        *keys
            .entry(String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned())
            .or_default() += 1;
    }
    let mut want = BTreeMap::<String, usize>::new();
    for k in summary["bad_keys"].as_array().unwrap() {
        *want.entry(k.as_str().unwrap().to_owned()).or_default() += 1;
    }
    assert_eq!(keys, want, "the broken build's records, each once");
}

/// What a consumer of the output topics sees: both output schemas registered under
/// `<topic>-value`, every score delta carrying the registered id and decoding with the schema
/// the registry serves for it.
async fn assert_output_schemas_registered(registry: &FakeRegistry, deltas_topic: &str, alerts_topic: &str, log: &str) {
    let deltas = registry.versions(&format!("{deltas_topic}-value"));
    assert_eq!(deltas.len(), 1, "ScoreDelta registered once");
    assert_eq!(
        registry.versions(&format!("{alerts_topic}-value")).len(),
        1,
        "ScoreDropAlert registered"
    );
    assert!(
        log.contains(&format!("ScoreDelta records carry schema id {}", deltas[0])),
        "{log}"
    );
    let served = registry.registered(deltas[0]).unwrap();
    let writer = apache_avro::Schema::parse_str(&served).unwrap();
    let records = read_topic(deltas_topic).await;
    assert!(records.len() > 1000, "{}", records.len());
    for m in records.iter().step_by(97) {
        let payload = m.payload().unwrap();
        assert_eq!(payload[0], 0);
        assert_eq!(u32::from_be_bytes(payload[1..5].try_into().unwrap()), deltas[0]);
        let mut body = &payload[5..];
        let v = apache_avro::from_avro_datum(&writer, &mut body, None).expect("decodes with the registered schema");
        assert!(body.is_empty());
        assert!(matches!(v, apache_avro::types::Value::Record(_)));
    }
}

/// The number before `label` in a summary line (`613 events read`, `12 applied`).
fn count(text: &str, label: &str) -> u64 {
    let at = text.find(label).unwrap_or_else(|| panic!("no '{label}' in: {text}"));
    let before = text[..at].trim_end();
    let digits: String = before
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_digit())
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no number before '{label}' in: {text}"))
}

/// The fake registry: version 1, version 2 and the broken build under ids 1, 2, 3.
fn registry_route(path: &str) -> (&'static str, String) {
    let schema = |s: &str| serde_json::json!({ "schema": s, "schemaType": "AVRO" }).to_string();
    match path {
        "/schemas/ids/1" => ("200 OK", schema(posture_avro::schemas::CONFIG_CHANGE_AVSC)),
        "/schemas/ids/2" => ("200 OK", schema(posture_avro::schemas::CONFIG_CHANGE_V2_AVSC)),
        "/schemas/ids/3" => ("200 OK", schema(&std::fs::read_to_string(BAD_SCHEMA).unwrap())),
        _ => (
            "404 Not Found",
            r#"{"error_code":40403,"message":"Schema not found"}"#.to_string(),
        ),
    }
}
