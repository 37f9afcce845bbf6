//! The demo's story on the real stack (scripts/stack up), so that the main job cannot go flat:
//! `posture demo` starts `posture run`, plays the scripted day (a bad policy push to finance at
//! 09:00, remediation waves from 12:00) and acts on the pipeline's alert through the API. Then:
//!
//! - the pipeline published exactly one score-drop alert, for group finance, whose causes are
//!   finance devices, most of their points lost by pushed controls, at an instant between the
//!   push and the pause;
//! - the tasks opened from it were confirmed by the pipeline (their completed rows are in
//!   ClickHouse), each within the remediation wave that fixed its control;
//! - the tenant and finance dip and recover, and the exception separates "with" from "without";
//! - the scores read from ClickHouse before the push, at the alert and at the end equal embedded
//!   mode's on the same events and exception, for the tenant and for finance.
mod common;
use common::{json, posture, take_cut};
use posture_tests::{fresh_database, kafka_brokers, read_topic_to_end, unique_name};
use rdkafka::message::Message;
use std::collections::{BTreeMap, BTreeSet};

const BASELINES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/baselines");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_tells_the_drop_the_alert_the_tasks_and_the_recovery() {
    let dir = posture_tests::ScratchDir::new("story");
    std::fs::create_dir_all(&dir).unwrap();
    let (client, database) = fresh_database("story").await;
    let ch = posture_tests::clickhouse_url();
    let env = [
        ("POSTURE_CLICKHOUSE_URL", ch.as_str()),
        ("POSTURE_CLICKHOUSE_DATABASE", database.as_str()),
    ];
    posture(&["migrate"], &env);
    let topic = unique_name("story_in");
    let alerts_topic = format!("{topic}.alerts");
    let addr = format!("127.0.0.1:{}", posture_tests::free_port());
    let brokers = kafka_brokers();
    let told = posture(
        &[
            "demo",
            "--baselines",
            BASELINES,
            "--devices",
            "3000",
            "--seed",
            "42",
            "--rate",
            "0",
            "--topic",
            &topic,
            "--alerts-topic",
            &alerts_topic,
            "--http-addr",
            &addr,
            "--brokers",
            &brokers,
            "--dir",
            dir.to_str().unwrap(),
        ],
        &env,
    );
    let story = json(&std::fs::read_to_string(dir.join("story.json")).unwrap());
    let group = story["push"]["group"].as_str().unwrap().to_string();
    assert_eq!(group, "finance");
    let pushed: BTreeSet<&str> = story["push"]["controls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();

    // The devices of finance, from their snapshots.
    let events = std::fs::read_to_string(dir.join("events.jsonl")).unwrap();
    let finance: BTreeSet<String> = events
        .lines()
        .map(json)
        .filter(|e| {
            e["device"]["groups"]
                .as_array()
                .is_some_and(|g| g.iter().any(|x| x == group.as_str()))
        })
        .map(|e| e["device_id"].as_str().unwrap().to_string())
        .collect();
    assert!(finance.len() > 250, "{}", finance.len());

    // Exactly one alert, for finance, caused by the push.
    let alerts: Vec<posture_avro::ScoreDropAlert> = read_topic_to_end(&alerts_topic)
        .await
        .iter()
        .map(|m| posture_avro::decode_alert(m.payload().unwrap()).expect("an alert"))
        .collect();
    assert_eq!(alerts.len(), 1, "one alert: {alerts:?}\n{told}");
    let alert = &alerts[0];
    assert_eq!(alert.tenant, "t1");
    assert_eq!(alert.group.as_deref(), Some("finance"), "{alert:?}");
    assert_eq!(alert.category, None);
    assert!(alert.old_percent - alert.new_percent >= 10.0, "{alert:?}");
    let (push_at, pause_at) = (
        story["push"]["at"].as_i64().unwrap(),
        story["pause_at"].as_i64().unwrap(),
    );
    assert!(alert.at >= push_at && alert.at <= pause_at, "{alert:?}");
    assert!(!alert.causes.is_empty());
    for c in &alert.causes {
        assert!(finance.contains(&c.device), "{c:?} is not a finance device");
        assert!(c.points_lost > 0.0, "{c:?}");
    }
    // Mostly the push: drift in the same hour can cost a device as much as a pushed control, and
    // ties are ordered by control, so a cause may be drift; most of the points are the push's.
    let lost = |pushed_only: bool| -> f64 {
        alert
            .causes
            .iter()
            .filter(|c| !pushed_only || pushed.contains(c.control.as_str()))
            .map(|c| c.points_lost)
            .sum()
    };
    assert!(
        lost(true) * 2.0 > lost(false),
        "the causes are mostly the push: {alert:?}"
    );
    assert_eq!(
        story["alert"]["at"].as_i64(),
        Some(alert.at),
        "the demo told this alert"
    );

    // The tasks: opened at the alert, confirmed by the pipeline within the wave that fixed them.
    let tasks = story["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 3, "{told}");
    #[derive(clickhouse::Row, serde::Deserialize, Debug)]
    struct Done {
        id: String,
        completed_at_ms: Option<i64>,
    }
    let rows: Vec<Done> = client
        .query("SELECT id, completed_at_ms FROM tasks WHERE status = 'completed'")
        .fetch_all()
        .await
        .unwrap();
    let confirmed: BTreeMap<String, i64> = rows
        .into_iter()
        .map(|r| (r.id, r.completed_at_ms.expect("a completion instant")))
        .collect();
    let waves = story["remediation"].as_array().unwrap();
    for t in tasks {
        let (id, control) = (
            t["task"]["id"].as_str().unwrap(),
            t["task"]["control"].as_str().unwrap(),
        );
        assert_eq!(t["task"]["group"], "finance");
        assert!(
            pushed.contains(control),
            "{control}: the top recommendations are pushed controls"
        );
        let done = *confirmed
            .get(id)
            .unwrap_or_else(|| panic!("task {id} was not confirmed by the pipeline: {confirmed:?}"));
        let wave = waves
            .iter()
            .find(|w| w["controls"].as_array().unwrap().iter().any(|c| c == control))
            .unwrap_or_else(|| panic!("no wave fixes {control}"));
        let from = wave["at"].as_i64().unwrap();
        let to = from + wave["minutes"].as_i64().unwrap() * 60_000;
        assert!(
            done >= from && done <= to,
            "task {id} ({control}) done at {done}, its wave {from}..{to}"
        );
    }

    // The dip and the recovery, and the exception's effect.
    let pct = |path: [&str; 2]| story["scores"][path[0]][path[1]]["percent"].as_f64().unwrap();
    let (morning, dip, end) = (
        pct(["tenant", "morning"]),
        pct(["tenant", "alert"]),
        pct(["tenant", "end"]),
    );
    assert!(morning - dip >= 2.0, "the tenant dips: {morning} -> {dip}");
    assert!(end > morning, "and recovers: {morning} -> {end}");
    let (g_morning, g_dip, g_end) = (
        pct(["group", "morning"]),
        pct(["group", "alert"]),
        pct(["group", "end"]),
    );
    assert!(
        g_morning - g_dip >= 10.0 && g_end > g_morning,
        "{g_morning} {g_dip} {g_end}"
    );
    let without = story["scores"]["tenant"]["end"]["without_exceptions"]["percent"]
        .as_f64()
        .unwrap();
    assert!(end > without, "the exception credits: {end} with, {without} without");
    assert!(story["silent_devices"].as_u64().unwrap() > 0 && story["retirements"].as_u64().unwrap() > 0);

    // ClickHouse equals embedded mode at the three instants, for the tenant and for finance.
    let events_file = dir.join("events.jsonl");
    let exceptions_file = dir.join("exceptions.yaml");
    for at in [push_at - 1, alert.at, story["end_ms"].as_i64().unwrap()] {
        let at = at.to_string();
        for scope in [&[][..], &["--group", "finance"][..]] {
            let q = [
                &[
                    "--baselines",
                    BASELINES,
                    "--tenant",
                    "t1",
                    "--at",
                    &at,
                    "--format",
                    "json",
                ][..],
                scope,
            ]
            .concat();
            let mut stored = json(&posture(&[&["score"][..], &q].concat(), &env));
            take_cut(&mut stored);
            let embedded = json(&posture(
                &[
                    &[
                        "evaluate",
                        "--events",
                        events_file.to_str().unwrap(),
                        "--exceptions",
                        exceptions_file.to_str().unwrap(),
                        "--inactivity-days",
                        "1",
                    ][..],
                    &q,
                ]
                .concat(),
                &[],
            ));
            assert_eq!(stored, embedded["score"], "at {at} {scope:?}");
        }
    }
}
