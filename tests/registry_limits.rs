//! The production decoder against hostile schema ids and a registry that is down: bounded
//! memory, bounded lookups, and records dead-lettered at once instead of one stall each. The
//! registry is the harness's in-process fake (no real registry runs on these machines).

use posture_avro::decoder::{AvroDecoder, MAX_LOOKUPS_PER_MINUTE, MAX_REMEMBERED_IDS};
use posture_avro::SchemaRegistry;
use posture_core::ConfigChange;
use posture_stage::Decode;
use posture_tests::registry::FakeRegistry;
use std::time::Duration;

/// A record in the Confluent wire format with schema id `id`.
fn record(id: u32) -> Vec<u8> {
    let ev = ConfigChange::from_json(
        r#"{"event_id":"e","tenant_id":"t1","device_id":"d","kind":"UPSERT","source":"AGENT","observed_at":"2026-11-01T01:00:00Z","sequence":1,"settings":[]}"#,
    )
    .unwrap();
    posture_avro::encode_config_change(&ev, id)
}

/// What the ingest loop does with a record: decode, on an unknown id learn and decode again.
async fn decode(d: &mut AvroDecoder, id: u32) -> Result<(), (String, String)> {
    let bytes = record(id);
    let first = d.decode(&bytes);
    let again = match first {
        Err(u) if u.unknown_schema_id.is_some() => {
            d.learn(id).await;
            d.decode(&bytes)
        }
        other => other,
    };
    again.map(|_| ()).map_err(|u| (u.reason.to_string(), u.detail))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_schema_ids_cost_bounded_lookups_and_memory() {
    // A registry that knows no id: every lookup is a 404.
    let registry = FakeRegistry::start(|_| {
        (
            "404 Not Found",
            r#"{"error_code":40403,"message":"Schema not found"}"#.to_string(),
        )
    })
    .await;
    let mut d = AvroDecoder::new(Some(vec![1]), Some(SchemaRegistry::new(&registry.url(), None).unwrap()));
    let n = MAX_LOOKUPS_PER_MINUTE as u32 + 500;
    let mut reasons = std::collections::BTreeMap::<String, usize>::new();
    for id in 1_000..1_000 + n {
        let (reason, _) = decode(&mut d, id).await.unwrap_err();
        *reasons.entry(reason).or_default() += 1;
    }
    assert_eq!(
        registry.requests().len(),
        MAX_LOOKUPS_PER_MINUTE,
        "one lookup per new id, up to the budget"
    );
    assert_eq!(reasons.get("schema_not_found"), Some(&MAX_LOOKUPS_PER_MINUTE));
    assert_eq!(reasons.get("unknown_schema_id"), Some(&500), "{reasons:?}");
    // A refused id is not asked about again.
    assert_eq!(decode(&mut d, 1_000).await.unwrap_err().0, "schema_not_found");
    assert_eq!(registry.requests().len(), MAX_LOOKUPS_PER_MINUTE);
    // The accepted id still decodes.
    decode(&mut d, 1).await.unwrap();
    assert!(d.remembered_refusals() <= MAX_REMEMBERED_IDS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_is_down_stalls_once_not_per_record() {
    let registry = FakeRegistry::start(|_| ("503 Service Unavailable", "{}".to_string())).await;
    let mut d = AvroDecoder::new(Some(vec![1]), Some(SchemaRegistry::new(&registry.url(), None).unwrap()))
        .with_registry_patience(Duration::from_millis(500));
    let (reason, detail) = decode(&mut d, 7).await.unwrap_err();
    assert_eq!(reason, "registry_unavailable", "{detail}");
    let asked = registry.requests().len();
    assert!(asked >= 2, "retried within its patience: {asked}");
    // Meanwhile every record of an unknown id is dead-lettered at once, without a lookup.
    assert_eq!(decode(&mut d, 7).await.unwrap_err().0, "registry_unavailable");
    for id in [8, 9, 10, 11] {
        let (reason, detail) = decode(&mut d, id).await.unwrap_err();
        assert_eq!(reason, "registry_unavailable");
        assert!(detail.contains("not looked up"), "{detail}");
    }
    assert_eq!(registry.requests().len(), asked, "no lookup during the pause");
    decode(&mut d, 1).await.unwrap();
}

/// Whether the fake registry of the next test answers (it starts down).
static REGISTRY_UP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_first_met_while_the_registry_is_down_is_taken_once_it_is_back() {
    let registry = FakeRegistry::start(|path| {
        if !REGISTRY_UP.load(std::sync::atomic::Ordering::SeqCst) {
            return ("503 Service Unavailable", "{}".to_string());
        }
        match path {
            "/schemas/ids/5" => (
                "200 OK",
                serde_json::json!({ "schema": posture_avro::schemas::CONFIG_CHANGE_AVSC }).to_string(),
            ),
            _ => (
                "404 Not Found",
                r#"{"error_code":40403,"message":"Schema not found"}"#.to_string(),
            ),
        }
    })
    .await;
    let mut d = AvroDecoder::new(Some(vec![1]), Some(SchemaRegistry::new(&registry.url(), None).unwrap()))
        .with_registry_patience(Duration::from_millis(300))
        .with_registry_pause(Duration::from_millis(500));
    assert_eq!(decode(&mut d, 5).await.unwrap_err().0, "registry_unavailable");
    assert_eq!(
        decode(&mut d, 5).await.unwrap_err().0,
        "registry_unavailable",
        "during the pause"
    );
    REGISTRY_UP.store(true, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(600)).await;
    // After the pause the id is asked about again: the registry vouches for it, it decodes.
    decode(&mut d, 5).await.unwrap();
    decode(&mut d, 5).await.unwrap();
}
