//! The harness itself, on the test stack: `posture-bench --quick` runs
//! every part at small sizes (figures meaningless) and its JSON holds every
//! figure the README's table quotes, each consistent with the others. The
//! previous-release comparison and callgrind's instruction counts run too,
//! with this very binary standing in for the previous release (building a
//! release from its tag takes minutes; scripts/bench does that).

use std::path::Path;
use std::process::Command;

#[test]
fn quick_run_measures_every_part() {
    let bench = env!("CARGO_BIN_EXE_posture-bench");
    let posture = Path::new(bench).with_file_name("posture");
    assert!(
        posture.exists(),
        "no posture binary at {}: build it with cargo build -p posture (cargo test --workspace does)",
        posture.display()
    );
    let dir = std::env::temp_dir().join(format!("posture-bench-quick-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("bench.json");
    let md = dir.join("bench.md");
    let out = Command::new(bench)
        .args(["--quick", "--posture"])
        .arg(&posture)
        .arg("--work")
        .arg(&dir)
        .arg("--json")
        .arg(&json)
        .arg("--markdown")
        .arg(&md)
        .args(["--against", "self", "--against-bin", bench, "--callgrind-events", "200"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "posture-bench --quick failed (is the stack up? scripts/stack up):\n{stderr}"
    );
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();

    let e = &v["evaluator_2000"];
    assert_eq!(e["devices"], 2000);
    assert_eq!(e["controls"], 300);
    assert!(e["events_per_sec"].as_f64().unwrap() > 0.0);
    // Every pass is fresh drift: each makes transitions at a similar rate (a replay of the same
    // events would make almost none).
    let per_event: Vec<f64> = e["transitions_per_event"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_f64().unwrap())
        .collect();
    assert_eq!(per_event.len(), 2, "one pass with and one without rows: {e}");
    assert!(
        per_event.iter().all(|&t| t > 0.5),
        "drift made too few transitions: {e}"
    );
    assert!(per_event[1] > 0.7 * per_event[0], "the second pass did less work: {e}");
    let bytes = e["state_bytes_per_device"].as_f64().unwrap();
    assert!((100.0..1024.0).contains(&bytes), "state bytes per device {bytes}");
    assert!(e["snapshot_bytes"].as_u64().unwrap() > 2000 * 100);

    // The stand-in previous release, measured in its own process beside this one.
    let p = &v["previous_release_evaluator_2000"];
    assert_eq!(p["rev"], "self");
    assert!(p["events_per_sec"].as_f64().unwrap() > 0.0 && p["events_per_sec_with_rows"].as_f64().unwrap() > 0.0);
    // Callgrind: the same binary counts the same instructions per event (the fleet and its drift
    // are seeded), the rows cost more, and an event costs thousands of instructions, not a few.
    let i = &v["instructions"];
    let (this, prev) = (&i["this"], &i["previous"]);
    let n = this["per_event"].as_f64().unwrap();
    assert!((1_000.0..1_000_000.0).contains(&n), "instructions per event {n}");
    assert!(this["per_event_with_rows"].as_f64().unwrap() > n, "{i}");
    let m = prev["per_event"].as_f64().unwrap();
    assert!(
        (n - m).abs() < 0.02 * n,
        "the same binary counted {n} and {m} instructions per event"
    );

    let s = &v["stack"];
    assert_eq!(s["snapshots"]["records"], 200);
    assert_eq!(s["backlog"], 2000);
    assert_eq!(s["pipeline"]["records"], 2000);
    assert_eq!(s["pipeline"]["applied"], 2000);
    assert!(s["bare_records_per_sec"].as_f64().unwrap() > 0.0);
    assert!(s["pipeline"]["records_per_sec"].as_f64().unwrap() > 0.0);
    assert!(s["pipeline"]["peak_rss_bytes"].as_u64().unwrap() > 1 << 20);
    assert!(s["pipeline"]["cpu_secs"].as_f64().unwrap() > 0.0);
    assert!(
        s["clickhouse_cpu_secs"].as_f64().unwrap() >= 0.0,
        "clickhouse-server not found in /proc"
    );
    let rate = &s["rates"][0];
    assert_eq!(rate["events"], 2000);
    // The warm-up events count too.
    assert_eq!(rate["summary"]["freshness_ms"]["events"], 2060);
    // Produced at the asked rate (the harness paces), and the pipeline kept up at 1,000/s.
    let produced = rate["produced_rate"].as_f64().unwrap();
    assert!((900.0..1100.0).contains(&produced), "produced at {produced}/s");
    assert!(rate["drain_secs"].as_f64().unwrap() < 30.0);
    let i = &s["insert"];
    let per_table: u64 = i["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t[1].as_u64().unwrap())
        .sum();
    assert_eq!(per_table, i["rows"].as_u64().unwrap());
    assert!(i["sink_secs"].as_f64().unwrap() > 0.0 && i["client_secs"].as_f64().unwrap() > 0.0);
    let start = i["client_start_secs"].as_f64().unwrap();
    assert!(start > 0.0 && start < 5.0, "clickhouse-client start-up {start} s");

    let table = std::fs::read_to_string(&md).unwrap();
    for row in [
        "evaluator, decode + evaluate + emit",
        "state per device",
        "restore, 2,000 devices",
        "bare rdkafka consumer",
        "end to end / bare consumer",
        "where the time went",
        "freshness at 1,000 events/s",
        "peak resident memory",
        "sink (tables concurrently) / clickhouse-client",
        "previous release self, decode + evaluate + emit, 2,000 devices",
        "instructions per event (callgrind), plus the ClickHouse rows, 300 devices, against self",
    ] {
        assert!(table.contains(row), "the table lacks {row:?}:\n{table}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
