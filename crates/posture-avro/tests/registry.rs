//! The Schema Registry client against an in-process fake registry: a minimal
//! HTTP/1.1 server on 127.0.0.1 serving Confluent REST responses and
//! recording every request (path and `Authorization` header), so caching and
//! authentication can be checked by what the server saw.

use posture_avro::registry::{
    check_config_change, BasicAuth, Compatibility, RegistryError, SchemaRegistry, INCOMPATIBLE_SCHEMA,
};
use posture_avro::{encode_config_change, schema_id, schemas, DecodeError, WireDecoder};
use posture_core::{ChangeKind, ConfigChange, ConfigSource, Setting, Value};
#[path = "support/fake_registry.rs"]
mod fake_registry;
use fake_registry::FakeRegistry;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

const USER: &str = "sr-key";
const PASSWORD: &str = "s3cret-pa55";
/// base64("sr-key:s3cret-pa55")
const EXPECTED_AUTH: &str = "Basic c3Ita2V5OnMzY3JldC1wYTU1";

fn schema_body(schema: &str) -> String {
    json!({ "schema": schema }).to_string()
}

/// The embedded ConfigChange schema as JSON, to derive variants from.
fn config_change_json() -> serde_json::Value {
    serde_json::from_str(schemas::CONFIG_CHANGE_AVSC).unwrap()
}

fn strip_docs(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            m.remove("doc");
            m.values_mut().for_each(strip_docs);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(strip_docs),
        _ => {}
    }
}

fn route(path: &str) -> (&'static str, String) {
    const OK: &str = "200 OK";
    match path {
        // Our schema, verbatim.
        "/schemas/ids/1" => (OK, schema_body(schemas::CONFIG_CHANGE_AVSC)),
        // Another record.
        "/schemas/ids/2" => (
            OK,
            schema_body(r#"{"type":"record","name":"Bar","namespace":"foo","fields":[{"name":"x","type":"long"}]}"#),
        ),
        // Not Avro.
        "/schemas/ids/3" => (
            OK,
            json!({"schema": "syntax = \"proto3\"; message Bar { int64 x = 1; }", "schemaType": "PROTOBUF"})
                .to_string(),
        ),
        // Our schema without docs, minified, with an explicit AVRO type: the same layout.
        "/schemas/ids/4" => {
            let mut s = config_change_json();
            strip_docs(&mut s);
            (OK, json!({"schema": s.to_string(), "schemaType": "AVRO"}).to_string())
        }
        "/schemas/ids/5" => (
            "500 Internal Server Error",
            r#"{"error_code":50001,"message":"Error in the backend data store"}"#.to_owned(),
        ),
        // Our record with one more field (with a default): evolution, read by resolution.
        "/schemas/ids/6" => {
            let mut s = config_change_json();
            s["fields"]
                .as_array_mut()
                .unwrap()
                .push(json!({"name": "region", "type": "string", "default": ""}));
            (OK, schema_body(&s.to_string()))
        }
        // Not a valid Avro schema (a record without a name).
        "/schemas/ids/7" => (OK, schema_body(r#"{"type":"record","fields":[]}"#)),
        // Our record with `sequence` as an int: a different binary layout, promoted to long.
        "/schemas/ids/8" => {
            let mut s = config_change_json();
            s["fields"][4]["type"] = json!("int");
            (OK, schema_body(&s.to_string()))
        }
        // Our record with `sequence` as a string: a type Avro does not promote to long.
        "/schemas/ids/11" => {
            let mut s = config_change_json();
            s["fields"][4]["type"] = json!("string");
            (OK, schema_body(&s.to_string()))
        }
        "/schemas/ids/9" => (
            "404 Not Found",
            r#"{"error_code":40403,"message":"Schema not found"}"#.to_owned(),
        ),
        // 200 but not a schema response.
        "/schemas/ids/10" => (OK, "<html>hello</html>".to_owned()),
        // Anything else: a 404 that is not the registry's (a wrong base URL).
        _ => ("404 Not Found", "<html>no such page</html>".to_owned()),
    }
}

fn event() -> ConfigChange {
    ConfigChange {
        event_id: "e1".into(),
        tenant_id: "t1".into(),
        device_id: "d1".into(),
        observed_at: 1_795_341_600_000,
        sequence: 3,
        source: ConfigSource::Agent,
        kind: ChangeKind::Upsert,
        device: None,
        settings: vec![Setting {
            key: "windows.firewall.domain.enabled".into(),
            value: Value::Bool(true),
        }],
    }
}

#[tokio::test]
async fn identical_schema_is_accepted_and_cached() {
    let reg = FakeRegistry::start(route).await;
    let client = SchemaRegistry::new(&reg.url(), None).unwrap();

    let schema = client.schema(1).await.unwrap();
    assert_eq!(check_config_change(&schema), Compatibility::Identical);
    assert_eq!(client.resolve(1).await.unwrap(), Compatibility::Identical);
    assert!(client.resolve(1).await.unwrap().is_compatible());
    let again = client.schema(1).await.unwrap();
    assert!(Arc::ptr_eq(&schema, &again));
    assert_eq!(
        reg.count("/schemas/ids/1"),
        1,
        "one request for id 1: {:?}",
        reg.requests()
    );

    // Docs stripped, minified, explicit schemaType AVRO: still identical.
    assert_eq!(client.resolve(4).await.unwrap(), Compatibility::Identical);
    // No auth configured, none sent.
    assert!(reg.requests().iter().all(|s| s.authorization.is_none()));
}

#[tokio::test]
async fn other_schemas_resolve_or_are_incompatible_naming_the_field() {
    let reg = FakeRegistry::start(route).await;
    let client = SchemaRegistry::new(&reg.url(), None).unwrap();

    let Compatibility::Incompatible(reason) = client.resolve(2).await.unwrap() else {
        panic!("id 2 is another record");
    };
    assert_eq!(
        reason,
        "schema id 2 cannot be read as posture.v1.ConfigChange: the record: writer record Bar cannot be read as record ConfigChange"
    );
    let Compatibility::Incompatible(reason) = check_config_change(&client.schema(2).await.unwrap()) else {
        panic!("id 2 is another record");
    };
    assert!(reason.starts_with("writer schema cannot be read"), "{reason}");

    // One more field: skipped. `sequence` as an int: promoted. Records of both decode.
    for (id, skipped, converted) in [(6, vec!["region"], vec![]), (8, vec![], vec!["sequence"])] {
        let Compatibility::Resolvable(plan) = client.resolve(id).await.unwrap() else {
            panic!("id {id} resolves");
        };
        assert_eq!(plan.summary().skipped, skipped, "id {id}");
        assert_eq!(plan.summary().converted, converted, "id {id}");
        assert!(client.resolve(id).await.unwrap().is_compatible());
        let mut dec = WireDecoder::new(Some(vec![]));
        dec.allow_resolved(id, plan);
        assert!(dec.accepts(id));
        let writer = client.schema(id).await.unwrap();
        let mut value = posture_avro::reference::to_value(&event());
        if let apache_avro::types::Value::Record(fields) = &mut value {
            if id == 6 {
                fields.push(("region".into(), apache_avro::types::Value::String("eu".into())));
            } else {
                fields[4].1 = apache_avro::types::Value::Int(3);
            }
        }
        let mut rec = vec![0, 0, 0, 0, id as u8];
        rec.extend(apache_avro::to_avro_datum(&writer, value).unwrap());
        assert_eq!(dec.decode(&rec).unwrap(), event(), "id {id}");
        assert_eq!(dec.decode_reference(&rec).unwrap(), event(), "id {id}");
    }
    assert_eq!(reg.count("/schemas/ids/8"), 1);

    let Compatibility::Incompatible(reason) = client.resolve(11).await.unwrap() else {
        panic!("id 11 has sequence as a string");
    };
    assert_eq!(
        reason,
        "schema id 11 cannot be read as posture.v1.ConfigChange: field sequence: writer type string cannot be read as long"
    );
    assert!(!client.resolve(11).await.unwrap().is_compatible());

    // Not a record at all.
    let Compatibility::Incompatible(reason) = check_config_change(&apache_avro::Schema::parse_str("\"long\"").unwrap())
    else {
        panic!("a long is not a record");
    };
    assert_eq!(
        reason,
        "writer schema cannot be read as posture.v1.ConfigChange: the record: writer type long cannot be read as record ConfigChange"
    );
    assert_eq!(INCOMPATIBLE_SCHEMA, "incompatible_schema");
}

#[tokio::test]
async fn permanent_failures_are_typed_and_cached() {
    let reg = FakeRegistry::start(route).await;
    let client = SchemaRegistry::new(&reg.url(), None).unwrap();

    for _ in 0..3 {
        assert_eq!(client.schema(9).await.unwrap_err(), RegistryError::NotFound { id: 9 });
        assert_eq!(client.resolve(9).await.unwrap_err(), RegistryError::NotFound { id: 9 });
    }
    assert_eq!(reg.count("/schemas/ids/9"), 1, "404 cached");
    let e = client.schema(9).await.unwrap_err();
    assert!(!e.is_retryable());
    assert_eq!(e.reason(), "schema_not_found");
    assert_eq!(e.to_string(), "schema id 9 not found in the schema registry");

    let e = client.schema(3).await.unwrap_err();
    assert_eq!(
        e,
        RegistryError::NotAvro {
            id: 3,
            schema_type: "PROTOBUF".into()
        }
    );
    assert_eq!(e.reason(), "schema_not_avro");
    assert_eq!(client.resolve(3).await.unwrap_err(), e);
    assert_eq!(reg.count("/schemas/ids/3"), 1);

    let e = client.schema(7).await.unwrap_err();
    assert!(
        matches!(&e, RegistryError::BadSchema { id: 7, detail } if !detail.is_empty()),
        "{e:?}"
    );
    assert_eq!(e.reason(), "bad_schema");
    assert!(!e.is_retryable());
    client.schema(7).await.unwrap_err();
    assert_eq!(reg.count("/schemas/ids/7"), 1);
}

#[tokio::test]
async fn http_errors_are_retryable_not_cached_and_name_the_url() {
    let reg = FakeRegistry::start(route).await;
    let client = SchemaRegistry::new(&format!("{}/", reg.url()), None).unwrap();
    assert_eq!(client.base_url(), reg.url(), "trailing slash dropped");

    let url = format!("{}/schemas/ids/5", reg.url());
    let e = client.schema(5).await.unwrap_err();
    let RegistryError::Http {
        url: got,
        status,
        detail,
    } = &e
    else {
        panic!("{e:?}");
    };
    assert_eq!((got.as_str(), *status), (url.as_str(), 500));
    assert!(detail.contains("Error in the backend data store"), "{detail}");
    assert!(e.to_string().contains(&url), "{e}");
    assert!(e.is_retryable());
    assert_eq!(e.reason(), "registry_unavailable");
    client.resolve(5).await.unwrap_err();
    assert_eq!(reg.count("/schemas/ids/5"), 2, "500 not cached");

    let e = client.schema(10).await.unwrap_err();
    assert!(
        matches!(&e, RegistryError::BadResponse { url, .. } if url.ends_with("/schemas/ids/10")),
        "{e:?}"
    );
    assert!(e.is_retryable());

    // A wrong base URL: a 404 that is not Confluent's 40403 is not "not found".
    let wrong = SchemaRegistry::new(&format!("{}/wrong-prefix", reg.url()), None).unwrap();
    let e = wrong.schema(1).await.unwrap_err();
    assert!(
        matches!(&e, RegistryError::Http { status: 404, url, .. } if url.ends_with("/wrong-prefix/schemas/ids/1")),
        "{e:?}"
    );
    assert!(e.is_retryable());
}

#[tokio::test]
async fn concurrent_lookups_share_one_request() {
    let reg = FakeRegistry::start(route).await;
    let client = SchemaRegistry::new(&reg.url(), None).unwrap();
    let (a, b, c, d) = tokio::join!(client.schema(2), client.schema(2), client.resolve(2), client.resolve(2));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(c.unwrap(), d.unwrap());
    assert_eq!(reg.count("/schemas/ids/2"), 1);
}

#[tokio::test]
async fn basic_auth_is_sent_and_never_shown() {
    let reg = FakeRegistry::start(route).await;
    let auth = BasicAuth::new(USER, PASSWORD);
    let shown = format!("{auth:?}");
    assert!(!shown.contains(PASSWORD) && !shown.contains(USER), "{shown}");

    let client = SchemaRegistry::new(&reg.url(), Some(auth)).unwrap();
    assert_eq!(client.resolve(1).await.unwrap(), Compatibility::Identical);
    let seen = reg.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].authorization.as_deref(), Some(EXPECTED_AUTH));

    let shown = format!("{client:?} {client:#?}");
    assert!(!shown.contains(PASSWORD) && !shown.contains(USER), "{shown}");
    assert!(shown.contains(&reg.url()), "{shown}");

    let mut errors = Vec::new();
    for id in [3, 5, 7, 9, 10] {
        errors.push(client.schema(id).await.unwrap_err());
    }
    let unreachable = SchemaRegistry::new(&dead_url().await, Some(BasicAuth::new(USER, PASSWORD))).unwrap();
    errors.push(unreachable.schema(1).await.unwrap_err());
    for e in errors {
        let text = format!("{e} {e:?}");
        assert!(!text.contains(PASSWORD) && !text.contains(USER), "{text}");
    }
    assert!(reg
        .requests()
        .iter()
        .all(|s| s.authorization.as_deref() == Some(EXPECTED_AUTH)));
}

#[tokio::test]
async fn credentials_in_the_url_are_refused_without_echoing_them() {
    let e = SchemaRegistry::new(&format!("http://{USER}:{PASSWORD}@127.0.0.1:8081"), None).unwrap_err();
    assert!(matches!(e, RegistryError::InvalidUrl { .. }), "{e:?}");
    let text = format!("{e} {e:?}");
    assert!(!text.contains(PASSWORD) && !text.contains(USER), "{text}");
    assert!(text.contains("127.0.0.1:8081"), "{text}");

    let e = SchemaRegistry::new(&format!("not a url {PASSWORD}"), None).unwrap_err();
    assert!(matches!(e, RegistryError::InvalidUrl { .. }), "{e:?}");
    assert!(!format!("{e} {e:?}").contains(PASSWORD));

    for bad in ["ftp://127.0.0.1/", "http://127.0.0.1:8081/?x=1", "mailto:a@b"] {
        let e = SchemaRegistry::new(bad, None).unwrap_err();
        assert_eq!(e.reason(), "registry_config", "{bad}: {e}");
    }
}

/// A URL on which nothing listens: a port bound, then released.
async fn dead_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

#[tokio::test]
async fn unreachable_registry_is_a_transport_error_naming_the_url() {
    let base = dead_url().await;
    let client = SchemaRegistry::with_timeout(&base, None, Duration::from_secs(2)).unwrap();
    let url = format!("{base}/schemas/ids/1");
    for _ in 0..2 {
        let e = client.resolve(1).await.unwrap_err();
        let RegistryError::Transport { url: got, detail } = &e else {
            panic!("{e:?}");
        };
        assert_eq!(got, &url);
        assert!(!detail.is_empty());
        assert!(e.to_string().starts_with(&format!("GET {url}: ")), "{e}");
        assert!(e.is_retryable());
        assert_eq!(e.reason(), "registry_unavailable");
    }
}

#[tokio::test]
async fn hung_registry_times_out() {
    // Accepts connections and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    let client = SchemaRegistry::with_timeout(&format!("http://{addr}"), None, Duration::from_millis(300)).unwrap();
    let started = std::time::Instant::now();
    let e = client.schema(1).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        matches!(&e, RegistryError::Transport { detail, .. } if detail.contains("timed out")),
        "{e:?}"
    );
}

#[tokio::test]
async fn pipeline_flow_allows_a_vouched_id() {
    let reg = FakeRegistry::start(route).await;
    let client = SchemaRegistry::new(&reg.url(), None).unwrap();
    let mut decoder = WireDecoder::new(Some(vec![]));

    let record = encode_config_change(&event(), 1);
    assert_eq!(schema_id(&record), Some(1));
    assert_eq!(schema_id(&record[..4]), None);
    assert_eq!(schema_id(&[1, 0, 0, 0, 1]), None);
    assert!(!decoder.accepts(1));
    assert_eq!(
        decoder.decode(&record).unwrap_err(),
        DecodeError::UnknownSchemaId { id: 1 }
    );

    assert_eq!(client.resolve(1).await.unwrap(), Compatibility::Identical);
    decoder.allow(1);
    decoder.allow(1);
    assert_eq!(decoder.accepted_ids(), Some(&[1][..]));
    assert!(decoder.accepts(1));
    assert_eq!(decoder.decode(&record).unwrap(), event());

    // An incompatible id stays out.
    let record = encode_config_change(&event(), 2);
    assert!(!client.resolve(2).await.unwrap().is_compatible());
    assert!(!decoder.accepts(2));

    // Without a list every id is accepted; allow is a no-op.
    let mut any = WireDecoder::default();
    any.allow(7);
    assert_eq!(any.accepted_ids(), None);
    assert!(any.accepts(2));
    assert_eq!(any.decode(&record).unwrap(), event());
}

/// Output schemas are registered under `<topic>-value` as a registry keeps them: one id per
/// schema, the same id again for the same schema, a BACKWARD-incompatible version refused.
#[tokio::test]
async fn output_schemas_register_under_their_subjects() {
    let reg = FakeRegistry::start(route).await;
    let client = SchemaRegistry::new(&reg.url(), Some(BasicAuth::new(USER, PASSWORD))).unwrap();
    let deltas = client
        .register("posture.score-deltas-value", schemas::SCORE_DELTA_AVSC)
        .await
        .unwrap();
    assert_eq!(
        client
            .register("posture.score-deltas-value", schemas::SCORE_DELTA_AVSC)
            .await
            .unwrap(),
        deltas,
        "the same schema keeps its id"
    );
    let alerts = client
        .register("posture.alerts-value", schemas::ALERT_AVSC)
        .await
        .unwrap();
    assert_ne!(alerts, deltas);
    assert_eq!(reg.versions("posture.score-deltas-value"), [deltas]);
    // A consumer looks the id up and gets our schema.
    let served = client.schema(deltas).await.unwrap();
    assert_eq!(served.canonical_form(), schemas::score_delta().canonical_form());
    assert!(reg.registered(alerts).is_some());
    let posts: Vec<_> = reg.requests().into_iter().filter(|s| s.method == "POST").collect();
    assert_eq!(posts.len(), 3);
    assert!(posts.iter().all(|s| s.authorization.as_deref() == Some(EXPECTED_AUTH)));
    assert_eq!(posts[0].path, "/subjects/posture.score-deltas-value/versions");

    // Evolving the output: a new field with a default is BACKWARD compatible, one without is not.
    let mut evolved: serde_json::Value = serde_json::from_str(schemas::SCORE_DELTA_AVSC).unwrap();
    evolved["fields"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "note", "type": ["null", "string"], "default": null}));
    let v2 = client
        .register("posture.score-deltas-value", &evolved.to_string())
        .await
        .unwrap();
    assert_eq!(reg.versions("posture.score-deltas-value"), [deltas, v2]);
    evolved["fields"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "required_note", "type": "string"}));
    let e = client
        .register("posture.score-deltas-value", &evolved.to_string())
        .await
        .unwrap_err();
    assert!(matches!(e, RegistryError::Rejected { status: 409, .. }), "{e}");
    assert!(!e.is_retryable());
    assert!(e.to_string().contains("incompatible with an earlier schema"), "{e}");
    assert!(!e.to_string().contains(PASSWORD));

    let e = client.register("bad subject/..", "\"long\"").await.unwrap_err();
    assert!(matches!(e, RegistryError::InvalidUrl { .. }), "{e}");
}
