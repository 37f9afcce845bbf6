//! Scanner results streamed through the real pipeline (scripts/stack up):
//! `posture import-results --kafka` turns an XCCDF TestResult into SNAPSHOT
//! events in a fresh topic, `posture run` scores them with the imported
//! baseline into ClickHouse, and `posture score` from ClickHouse must equal
//! embedded mode (`posture evaluate`) on the same events written with
//! `import-results --output`.

mod common;
use common::posture;
use posture_tests::{fresh_database, kafka_brokers, unique_name};
use serde_json::Value;

fn fixture(p: &str) -> String {
    format!("{}/tests/fixtures/xccdf/{p}", env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scanner_results_stream_through_kafka_into_the_score() {
    let dir = posture_tests::ScratchDir::new("xccdf_stream");
    let baselines = dir.join("baselines");
    std::fs::create_dir_all(&baselines).unwrap();
    let baseline = baselines.join("scan.yaml");
    let events = dir.join("scan.jsonl");
    let (b, e) = (baseline.to_str().unwrap(), events.to_str().unwrap());
    let bdir = baselines.to_str().unwrap();
    posture(
        &[
            "baseline",
            "import-xccdf",
            &fixture("benchmark.xml"),
            "--profile",
            "xccdf_org.example_profile_p",
            "--category-map",
            &fixture("categories.yaml"),
            "--output",
            b,
        ],
        &[],
    );
    posture(
        &[
            "import-results",
            &fixture("results.xml"),
            "--tenant",
            "t1",
            "--output",
            e,
        ],
        &[],
    );
    let topic = unique_name("xccdf_in");
    let brokers = kafka_brokers();
    posture(
        &[
            "import-results",
            &fixture("results.xml"),
            "--tenant",
            "t1",
            "--kafka",
            &brokers,
            "--topic",
            &topic,
        ],
        &[],
    );
    let (_client, database) = fresh_database("xccdf").await;
    let env = [
        ("POSTURE_KAFKA_BROKERS", brokers.as_str()),
        ("POSTURE_CLICKHOUSE_DATABASE", database.as_str()),
        ("POSTURE_BASELINES", bdir),
    ];
    posture(&["migrate"], &env);
    posture(
        &[
            "run",
            "--topic",
            &topic,
            "--group",
            &unique_name("xccdf_group"),
            "--alerts-topic",
            "",
            "--score-deltas-topic",
            &format!("{topic}.deltas"),
            "--dead-letter-topic",
            &format!("{topic}.dead"),
            "--http-addr",
            "",
            "--until-idle",
            "3",
        ],
        &env,
    );
    let embedded: Value = serde_json::from_str(&posture(
        &["evaluate", "--events", e, "--tenant", "t1", "--format", "json"],
        &env,
    ))
    .unwrap();
    let at = embedded["score"]["at"]
        .as_str()
        .expect("evaluate names the instant")
        .to_string();
    let mut from_clickhouse: Value = serde_json::from_str(&posture(
        &["score", "--tenant", "t1", "--at", &at, "--format", "json"],
        &env,
    ))
    .unwrap();
    assert!(
        embedded["score"]["max_points"].as_f64().unwrap() > 0.0,
        "the scan scored something: {embedded}"
    );
    common::take_cut(&mut from_clickhouse);
    assert_eq!(
        from_clickhouse, embedded["score"],
        "the streamed scan scores as embedded mode does"
    );
    // r1: pass on host-a, fail on host-b (results.xml); the devices view reads them back.
    let ids = |state: &str| -> Vec<String> {
        let out = posture(
            &[
                "devices",
                "--tenant",
                "t1",
                "--control",
                "xccdf_org.example_rule_r1",
                "--state",
                state,
                "--format",
                "json",
            ],
            &env,
        );
        let v: Value = serde_json::from_str(&out).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|d| d["device"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids("PASS"), ["host-a"]);
    assert_eq!(ids("FAIL"), ["host-b"]);
    let host_b: Value = serde_json::from_str(&posture(
        &["devices", "--tenant", "t1", "--device", "host-b", "--format", "json"],
        &env,
    ))
    .unwrap();
    let r1 = host_b["controls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["control"] == "xccdf_org.example_rule_r1")
        .unwrap();
    assert_eq!(
        r1["settings"]["xccdf:xccdf_org.example_rule_r1"], "fail",
        "the scanner's result string is the evidence"
    );
}
