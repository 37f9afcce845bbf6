//! Score-drop alerts on the real stack: events through Kafka and the
//! pipeline into ClickHouse, then the alerter finds the drop, names its root
//! cause, publishes it to Kafka (read back and decoded), and stays quiet for
//! the rest of the window.

use posture_avro::avro_decoder;
use posture_core::*;
use posture_ingest::alerts::{AlertConfig, AlertRule, Alerter, Categories};
use posture_ingest::{Ingest, IngestConfig};
use posture_sink::SinkStage;
use posture_tests::{fresh_database, fresh_topic_with_partitions, kafka_brokers, kafka_config, unique_name};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

const BASELINE: &str = r#"
baseline: alerts
version: 1
controls:
  - { id: fw, title: Firewall, category: network, points: 30, check: { key: fw, op: eq, value: true } }
"#;
const T0: i64 = 1_795_341_600_000;
const MIN: i64 = 60_000;

fn event(i: usize, device: usize, seq: i64, at: i64, fw: bool) -> ConfigChange {
    let kind = if seq == 1 {
        ChangeKind::Snapshot
    } else {
        ChangeKind::Upsert
    };
    ConfigChange::new("t1", format!("dev{device}"), kind, at, seq)
        .with_event_id(format!("e{i}"))
        .with_inventory("windows", "10.0.19045", &[if device < 5 { "red" } else { "blue" }], &[])
        .with_setting("fw", fw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_within_the_window_alerts_once_with_its_causes() {
    // 10 devices pass at T0; at T0+90 min five fail: 100% -> 50% (each failure costs 3 of 30 points).
    let mut evs: Vec<ConfigChange> = (0..10).map(|d| event(d, d, 1, T0 + d as i64, true)).collect();
    evs.extend((0..5).map(|d| event(10 + d, d, 2, T0 + 90 * MIN + d as i64, false)));
    let cat = Arc::new(Catalog::from_sources(&[("alerts.yaml", BASELINE)]).unwrap());
    let topic = fresh_topic_with_partitions("alerts_in", 1).await;
    posture_tests::produce_events(&topic, &evs).await;
    let (client, db) = fresh_database("alerts").await;
    posture_sink::migrate(&client, &db).await.expect("migrate");
    let mut cfg = IngestConfig::new(kafka_brokers(), unique_name("alerts_group"), topic.clone());
    cfg.batch_interval = Duration::from_millis(200);
    let stage = SinkStage::new(posture_sink::Sink::new(client.clone()));
    let mut ingest = Ingest::new(cfg, cat.clone(), EngineConfig::default(), stage, avro_decoder(None)).expect("ingest");
    let progress = ingest.progress();
    let stop = async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while progress.load(Ordering::SeqCst) < 15 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    ingest.run_until(stop, |_, _, _| {}).await.expect("pipeline");
    assert_eq!(ingest.stats().applied, 15);
    assert!(
        ingest.holds_partition_0().load(Ordering::SeqCst),
        "the only instance holds partition 0"
    );

    let alerts_topic = fresh_topic_with_partitions("alerts_out", 1).await;
    let alert_cfg = AlertConfig {
        rules: AlertRule::defaults(5.0, 60 * MIN),
        interval: Duration::from_secs(1),
        topic: alerts_topic.clone(),
        schema_id: 3,
        brokers: kafka_brokers(),
        extra: vec![],
        gauge_groups: vec![],
    };
    let mut alerter = Alerter::new(alert_cfg.clone(), client.clone(), cat.clone()).expect("alerter");
    let alerts = alerter.check().await.expect("check");
    let now = T0 + 90 * MIN + 4;
    assert_eq!(alerts.len(), 2, "the tenant and its network category: {alerts:#?}");
    for (a, category) in alerts.iter().zip([None, Some("network")]) {
        assert_eq!(a.tenant, "t1");
        assert_eq!(a.group, None);
        assert_eq!(a.category.as_deref(), category);
        assert_eq!((a.old_percent, a.new_percent), (100.0, 50.0));
        assert_eq!((a.window_ms, a.at), (60 * MIN, now));
        let causes: Vec<(&str, &str, f64)> = a
            .causes
            .iter()
            .map(|c| (c.control.as_str(), c.device.as_str(), c.points_lost))
            .collect();
        assert_eq!(
            causes,
            vec![
                ("fw", "dev0", 3.0),
                ("fw", "dev1", 3.0),
                ("fw", "dev2", 3.0),
                ("fw", "dev3", 3.0),
                ("fw", "dev4", 3.0)
            ]
        );
    }
    // Once per window, also for a clone (the periodic task and the final check share it).
    assert!(alerter.clone().check().await.expect("check").is_empty());
    // A threshold above the drop (60 points for a 50-point drop) sees nothing.
    let mut strict = Alerter::new(
        AlertConfig {
            rules: AlertRule::defaults(60.0, 60 * MIN),
            ..alert_cfg.clone()
        },
        client.clone(),
        cat.clone(),
    )
    .unwrap();
    assert!(strict.check().await.expect("check").is_empty());
    // Rules per group and category: the five failing devices are the "red" group, which falls
    // 100% -> 0% in its network category; "blue" did not move; tenant t2 does not exist.
    let rule = |tenant: Option<&str>, group: &str, categories, drop_points| AlertRule {
        tenant: tenant.map(str::to_string),
        group: Some(group.to_string()),
        categories,
        drop_points,
        window_ms: 30 * MIN,
    };
    let mut groups = Alerter::new(
        AlertConfig {
            rules: vec![
                rule(Some("t1"), "red", Categories::One(Category::Network), 50.0),
                rule(None, "blue", Categories::Total, 0.01),
                rule(Some("t2"), "red", Categories::Each, 1.0),
            ],
            ..alert_cfg.clone()
        },
        client.clone(),
        cat.clone(),
    )
    .unwrap();
    let by_group = groups.check().await.expect("check");
    assert_eq!(by_group.len(), 1, "{by_group:#?}");
    let red = &by_group[0];
    assert_eq!(
        (red.group.as_deref(), red.category.as_deref()),
        (Some("red"), Some("network"))
    );
    assert_eq!(
        (red.old_percent, red.new_percent, red.window_ms),
        (100.0, 0.0, 30 * MIN)
    );
    // Within the group of five, each failure costs 30 / 5 = 6 points.
    assert_eq!(
        red.causes.iter().map(|c| c.points_lost).collect::<Vec<_>>(),
        vec![6.0; 5]
    );

    // Score gauges: every tenant, plus the configured groups. "red" is allow-listed and gets its
    // own series (0%), "blue" is not and lands in group="_overflow" (100%), "green" has no
    // devices and so no score: no series at all.
    let metrics = Arc::new(posture_metrics::Metrics::with_config(posture_metrics::MetricsConfig {
        score_limits: posture_metrics::ScoreLimits {
            max_tenants: 10,
            groups: vec!["red".into(), "green".into()],
            max_groups: 5,
        },
        ..Default::default()
    }));
    let mut gauged = Alerter::new(
        AlertConfig {
            rules: vec![],
            gauge_groups: vec!["red".into(), "blue".into(), "green".into()],
            ..alert_cfg.clone()
        },
        client.clone(),
        cat.clone(),
    )
    .unwrap()
    .with_metrics(metrics.clone());
    assert!(gauged.check().await.expect("check").is_empty(), "no rules, no alerts");
    let text = metrics.encode().expect("metrics text");
    let mut series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("posture_score_percent{"))
        .collect();
    series.sort();
    assert_eq!(
        series,
        vec![
            r#"posture_score_percent{group="",tenant="t1"} 50"#,
            r#"posture_score_percent{group="_overflow",tenant="t1"} 100"#,
            r#"posture_score_percent{group="red",tenant="t1"} 0"#,
        ]
    );

    alerter.publish(&alerts).await.expect("publish");
    let consumer: StreamConsumer = kafka_config()
        .set("group.id", unique_name("alerts_reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&[&alerts_topic]).unwrap();
    let mut read = Vec::new();
    while read.len() < 2 {
        let m = tokio::time::timeout(Duration::from_secs(20), consumer.recv())
            .await
            .expect("alerts arrive")
            .expect("recv");
        assert_eq!(m.key(), Some(&b"t1"[..]), "keyed by tenant");
        let a = posture_avro::decode_alert(m.payload().unwrap()).expect("ScoreDropAlert decodes");
        let key = m
            .headers()
            .and_then(|h| h.iter().find(|h| h.key == "posture.dedup-key"))
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned());
        assert_eq!(
            key,
            Some(posture_ingest::alerts::alert_dedup_key(&a)),
            "the dedup key header"
        );
        read.push(a);
    }
    drop(consumer);
    assert_eq!(read, alerts);
    assert_eq!(
        posture_ingest::alerts::alert_dedup_key(&read[1]),
        format!("alert/t1//network/{}/{}", 60 * MIN, now)
    );

    // A restarted pipeline (a new alerter: its record of past alerts is gone) would alert on
    // the same drop again; once it has read what is already in the alerts topic, it stays
    // quiet for the window, as the first one does.
    let restarted = Alerter::new(alert_cfg.clone(), client.clone(), cat.clone()).expect("alerter");
    assert_eq!(
        restarted.clone().check().await.expect("check").len(),
        2,
        "without the topic"
    );
    let mut restarted = Alerter::new(alert_cfg.clone(), client.clone(), cat.clone()).expect("alerter");
    assert_eq!(restarted.restore_published().await.expect("restore"), 2);
    assert!(restarted.check().await.expect("check").is_empty());
}
