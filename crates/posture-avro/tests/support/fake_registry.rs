//! A fake Confluent Schema Registry for tests: a tiny HTTP server in the test process.
//!
//! It lives with posture-avro's tests (which need it without the Kafka-linked test harness) and
//! is the harness's `posture_tests::registry` too (included there by path): one copy.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request as the fake registry saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The request path.
    pub path: String,
    /// The `Authorization` header, if sent.
    pub authorization: Option<String>,
}

/// A minimal HTTP/1.1 server answering each `GET` with `route(path)`
/// (status line, JSON body) and recording what it saw: the Confluent REST
/// responses a test tells it to serve. Registrations
/// (`POST /subjects/{subject}/versions`) are kept as a registry keeps them:
/// ids from 100 up, the same schema in a subject keeps its id, a new version
/// must be BACKWARD compatible with the subject's latest (Confluent's default:
/// the new schema reads what the latest wrote, checked with apache-avro),
/// else HTTP 409 with error code 409; registered ids are then served by
/// `GET /schemas/ids/{id}`.
pub struct FakeRegistry {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    store: Arc<Mutex<Store>>,
}

/// What was registered.
#[derive(Default)]
struct Store {
    /// id -> schema text.
    schemas: BTreeMap<u32, String>,
    /// subject -> ids of its versions, oldest first.
    subjects: BTreeMap<String, Vec<u32>>,
}

/// The answer to a request path: status (e.g. `"200 OK"`) and body.
pub type Route = fn(&str) -> (&'static str, String);

impl FakeRegistry {
    /// Starts the server on an ephemeral port; it lives as long as the test's
    /// runtime.
    pub async fn start(route: Route) -> FakeRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let store = Arc::new(Mutex::new(Store::default()));
        let (log, kept) = (Arc::clone(&seen), Arc::clone(&store));
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(serve(sock, Arc::clone(&log), Arc::clone(&kept), route));
            }
        });
        FakeRegistry { addr, seen, store }
    }

    /// The ids registered under `subject`, oldest first.
    pub fn versions(&self, subject: &str) -> Vec<u32> {
        self.store
            .lock()
            .unwrap()
            .subjects
            .get(subject)
            .cloned()
            .unwrap_or_default()
    }

    /// The schema text registered under `id`.
    pub fn registered(&self, id: u32) -> Option<String> {
        self.store.lock().unwrap().schemas.get(&id).cloned()
    }

    /// Base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// How many requests asked for `path`.
    pub fn count(&self, path: &str) -> usize {
        self.requests().iter().filter(|s| s.path == path).count()
    }
}

/// Reads one request, records it, writes one response and closes.
async fn serve(mut sock: TcpStream, log: Arc<Mutex<Vec<Seen>>>, store: Arc<Mutex<Store>>, route: Route) {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match sock.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
        if data.len() > 64 * 1024 {
            return;
        }
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let method = request_line.split(' ').next().unwrap_or_default().to_owned();
    let path = request_line.split(' ').nth(1).unwrap_or_default().to_owned();
    let header = |name: &str| {
        head.split("\r\n").skip(1).find_map(|l| {
            let (n, value) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| value.trim().to_owned())
        })
    };
    let authorization = header("authorization");
    let length: usize = header("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
    while data.len() < head_end + length {
        match sock.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
    }
    let body = String::from_utf8_lossy(&data[head_end..head_end + length]).into_owned();
    log.lock().unwrap().push(Seen {
        method: method.clone(),
        path: path.clone(),
        authorization,
    });
    let registered_id = path
        .strip_prefix("/schemas/ids/")
        .and_then(|id| id.parse::<u32>().ok())
        .and_then(|id| store.lock().unwrap().schemas.get(&id).cloned());
    let (status, body) = match (method.as_str(), path.strip_prefix("/subjects/")) {
        ("POST", Some(rest)) if rest.ends_with("/versions") => {
            register(&store, rest.trim_end_matches("/versions"), &body)
        }
        _ => match registered_id {
            Some(schema) => ("200 OK", serde_json::json!({ "schema": schema }).to_string()),
            None => route(&path),
        },
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/vnd.schemaregistry.v1+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = sock.write_all(response.as_bytes()).await;
    let _ = sock.shutdown().await;
}

/// `POST /subjects/{subject}/versions` as a registry with BACKWARD compatibility answers it.
fn register(store: &Mutex<Store>, subject: &str, body: &str) -> (&'static str, String) {
    let error = |status, code: u32, message: String| {
        (
            status,
            serde_json::json!({ "error_code": code, "message": message }).to_string(),
        )
    };
    let Some(text) = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["schema"].as_str().map(str::to_owned))
    else {
        return error(
            "422 Unprocessable Entity",
            42201,
            "Invalid schema: no schema string".into(),
        );
    };
    let new = match apache_avro::Schema::parse_str(&text) {
        Ok(s) => s,
        Err(e) => return error("422 Unprocessable Entity", 42201, format!("Invalid schema: {e}")),
    };
    let mut store = store.lock().unwrap();
    let versions = store.subjects.get(subject).cloned().unwrap_or_default();
    for id in &versions {
        let old = apache_avro::Schema::parse_str(&store.schemas[id]).unwrap();
        if old.canonical_form() == new.canonical_form() {
            return ("200 OK", serde_json::json!({ "id": id }).to_string());
        }
    }
    if let Some(latest) = versions.last() {
        let old = apache_avro::Schema::parse_str(&store.schemas[latest]).unwrap();
        if let Err(e) = apache_avro::schema_compatibility::SchemaCompatibility::can_read(&old, &new) {
            return error(
                "409 Conflict",
                409,
                format!(
                    "Schema being registered is incompatible with an earlier schema for subject \"{subject}\": {e}"
                ),
            );
        }
    }
    let id = 100 + store.schemas.len() as u32;
    store.schemas.insert(id, text);
    store.subjects.entry(subject.to_owned()).or_default().push(id);
    ("200 OK", serde_json::json!({ "id": id }).to_string())
}
