//! A fake Confluent Schema Registry for tests: a tiny HTTP server in the test process.
//!
//! It lives with posture-avro's tests (which need it without the Kafka-linked test harness) and
//! is the harness's `posture_tests::registry` too (included there by path): one copy.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request as the fake registry saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// The request path.
    pub path: String,
    /// The `Authorization` header, if sent.
    pub authorization: Option<String>,
}

/// A minimal HTTP/1.1 server answering each request with `route(path)`
/// (status line, JSON body) and recording what it saw. Not a registry: it
/// serves the Confluent REST responses a test tells it to.
pub struct FakeRegistry {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
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
        let log = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(serve(sock, Arc::clone(&log), route));
            }
        });
        FakeRegistry { addr, seen }
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

/// Reads one request head, records it, writes one response and closes.
async fn serve(mut sock: TcpStream, log: Arc<Mutex<Vec<Seen>>>, route: Route) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match sock.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 64 * 1024 {
            return;
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let path = request_line.split(' ').nth(1).unwrap_or_default().to_owned();
    let authorization = lines.find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("authorization")
            .then(|| value.trim().to_owned())
    });
    log.lock().unwrap().push(Seen {
        path: path.clone(),
        authorization,
    });
    let (status, body) = route(&path);
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/vnd.schemaregistry.v1+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = sock.write_all(response.as_bytes()).await;
    let _ = sock.shutdown().await;
}
