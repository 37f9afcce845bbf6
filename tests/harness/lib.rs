//! Test harness of posture's integration tests: the real test stack, never mocks.
//!
//! `scripts/stack up` starts Tansu (Kafka API) and ClickHouse on loopback; `scripts/test` exports
//! their addresses (`eval "$(scripts/stack env)"`). This crate reads them and hands tests fresh,
//! uniquely named resources so that tests can run in parallel and repeatedly against one stack:
//!
//! * [`kafka_brokers`], [`clickhouse_url`]: the addresses, from `POSTURE_KAFKA_BROKERS` and
//!   `POSTURE_CLICKHOUSE_URL`, defaulting to the stack's defaults.
//! * [`fresh_topic`] / [`fresh_topic_with_partitions`]: a new topic, created with the admin API.
//!   Topics are not deleted: Tansu keeps them in memory until `scripts/stack down`.
//! * [`fresh_database`]: a new ClickHouse database and a [`clickhouse::Client`] pointed at it.
//!   Databases are not dropped (so a failed test leaves its data to look at); ClickHouse starts
//!   with an empty data directory every time `scripts/stack up` starts it.
//! * [`kafka_config`], [`clickhouse_client`]: client settings for the stack.
//! * [`ScratchDir`]: a test's own directory for files (events, logs, a server's data), removed
//!   when the test passes and kept when it fails.
//!
//! A test that cannot reach a server fails (panics) with a message that names what was
//! unreachable and contains [`STACK_HINT`]: "start the test stack with: scripts/stack up".
//! Tests never skip.
//!
//! Everything async here needs a tokio runtime: use `#[tokio::test]`.

#![warn(missing_docs)]

pub mod consistency;
pub mod fleet;
pub mod proxy;
#[path = "../../crates/posture-avro/tests/support/fake_registry.rs"]
pub mod registry;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::metadata::Metadata;
use rdkafka::util::Timeout;

pub use clickhouse;
pub use rdkafka;

/// What every "cannot reach the stack" panic says.
pub const STACK_HINT: &str = "start the test stack with: scripts/stack up";

/// Default Kafka bootstrap address (Tansu started by `scripts/stack up`).
pub const DEFAULT_KAFKA_BROKERS: &str = "127.0.0.1:9092";
/// Default ClickHouse HTTP URL (started by `scripts/stack up`).
pub const DEFAULT_CLICKHOUSE_URL: &str = "http://127.0.0.1:8123";
/// Partitions of a topic made by [`fresh_topic`].
pub const DEFAULT_PARTITIONS: i32 = 3;
/// How long the harness waits for a server before it declares it unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Kafka bootstrap servers: `POSTURE_KAFKA_BROKERS`, else [`DEFAULT_KAFKA_BROKERS`].
pub fn kafka_brokers() -> String {
    env_or("POSTURE_KAFKA_BROKERS", DEFAULT_KAFKA_BROKERS)
}

/// ClickHouse HTTP URL: `POSTURE_CLICKHOUSE_URL`, else [`DEFAULT_CLICKHOUSE_URL`].
pub fn clickhouse_url() -> String {
    env_or("POSTURE_CLICKHOUSE_URL", DEFAULT_CLICKHOUSE_URL)
}

fn env_or(name: &str, default: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v.trim().to_string(),
        _ => default.to_string(),
    }
}

/// A loopback TCP port free right now (bound, noted, closed): for servers a test starts itself,
/// or an address nothing listens on.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind an ephemeral port")
        .local_addr()
        .expect("its address")
        .port()
}

/// A directory of one test's files under the system's temp directory (named by
/// [`unique_name`]), created at once and removed when dropped, unless the thread is panicking:
/// a failed test leaves its logs and data to read, a passing one leaves nothing (the fault tests'
/// servers write tens of MB each run). Derefs to the path.
pub struct ScratchDir(std::path::PathBuf);

impl ScratchDir {
    /// Creates `<temp>/<unique_name(prefix)>`.
    pub fn new(prefix: &str) -> ScratchDir {
        let dir = std::env::temp_dir().join(unique_name(prefix));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        ScratchDir(dir)
    }
}

impl std::ops::Deref for ScratchDir {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::path::Path> for ScratchDir {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A name no other test (in this or another process, now or in an earlier run) uses:
/// `prefix_<pid>_<counter>_<random>`, lower case, only `[a-z0-9_]`, so it is valid both as a
/// Kafka topic or group and as a ClickHouse identifier.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(n);
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    let random = h.finish() & 0xffff_ffff;
    let mut prefix: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if prefix.is_empty() || prefix.starts_with(|c: char| c.is_ascii_digit()) {
        prefix.insert(0, 't');
    }
    format!("{prefix}_{}_{n}_{random:08x}", std::process::id())
}

/// The panic of a test that cannot reach a server of the stack.
fn stack_unreachable(what: &str, detail: impl std::fmt::Display) -> ! {
    panic!("cannot reach {what}: {detail}; {STACK_HINT}")
}

// --- Kafka ---------------------------------------------------------------------------------------

/// Client settings for the stack's Kafka at `brokers`; add `group.id` etc. as needed.
pub fn kafka_config_at(brokers: &str) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", brokers)
        // Keep failures quick and quiet: the harness reports them itself.
        .set("socket.connection.setup.timeout.ms", "5000")
        .set("reconnect.backoff.max.ms", "1000")
        .set("message.timeout.ms", "30000");
    cfg
}

/// Client settings for the stack's Kafka ([`kafka_brokers`]).
pub fn kafka_config() -> ClientConfig {
    kafka_config_at(&kafka_brokers())
}

/// Fetch cluster metadata from `brokers` (optionally for one topic), or panic with
/// [`STACK_HINT`] when no broker answers within [`CONNECT_TIMEOUT`].
pub async fn kafka_metadata_at(brokers: &str, topic: Option<&str>) -> Metadata {
    // Fail fast when nothing listens (librdkafka would retry until the timeout).
    if let Err(e) = tcp_reachable(brokers) {
        stack_unreachable(&format!("Kafka at {brokers}"), e);
    }
    let brokers = brokers.to_string();
    let topic = topic.map(str::to_string);
    let result = tokio::task::spawn_blocking({
        let brokers = brokers.clone();
        move || {
            let consumer: BaseConsumer = kafka_config_at(&brokers).create()?;
            consumer.fetch_metadata(topic.as_deref(), Timeout::After(CONNECT_TIMEOUT))
        }
    })
    .await
    .expect("metadata task panicked");
    match result {
        Ok(md) if !md.brokers().is_empty() => md,
        Ok(_) => stack_unreachable(&format!("Kafka at {brokers}"), "metadata names no broker"),
        Err(e) => stack_unreachable(
            &format!("Kafka at {brokers}"),
            format!("no metadata within {CONNECT_TIMEOUT:?} ({e})"),
        ),
    }
}

/// Ok when at least one of the comma-separated `host:port` addresses accepts a TCP connection.
fn tcp_reachable(addrs: &str) -> Result<(), String> {
    let mut errors = Vec::new();
    for addr in addrs.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        let resolved = match addr.to_socket_addrs() {
            Ok(r) => r.collect::<Vec<_>>(),
            Err(e) => {
                errors.push(format!("{addr}: {e}"));
                continue;
            }
        };
        for sa in resolved {
            match TcpStream::connect_timeout(&sa, Duration::from_secs(2)) {
                Ok(_) => return Ok(()),
                Err(e) => errors.push(format!("{sa}: {e}")),
            }
        }
    }
    if errors.is_empty() {
        errors.push("no address given".to_string());
    }
    Err(errors.join(", "))
}

/// A new topic on [`kafka_brokers`] with [`DEFAULT_PARTITIONS`] partitions; returns its name.
pub async fn fresh_topic(prefix: &str) -> String {
    fresh_topic_at(&kafka_brokers(), prefix, DEFAULT_PARTITIONS).await
}

/// A new topic on [`kafka_brokers`] with `partitions` partitions; returns its name.
pub async fn fresh_topic_with_partitions(prefix: &str, partitions: i32) -> String {
    fresh_topic_at(&kafka_brokers(), prefix, partitions).await
}

/// A new topic named `prefix_...` with `partitions` partitions (replication 1) on `brokers`.
/// Waits until the metadata shows every partition with a leader. Panics with [`STACK_HINT`] when
/// Kafka is unreachable, and with the broker's error when it refuses the topic.
pub async fn fresh_topic_at(brokers: &str, prefix: &str, partitions: i32) -> String {
    assert!(partitions > 0, "a topic needs at least one partition");
    // Fails with the stack hint when nothing answers.
    kafka_metadata_at(brokers, None).await;

    let name = unique_name(prefix);
    let admin: AdminClient<DefaultClientContext> = kafka_config_at(brokers)
        .create()
        .unwrap_or_else(|e| panic!("cannot create a Kafka admin client for {brokers}: {e}"));
    let opts = AdminOptions::new()
        .request_timeout(Some(Timeout::After(CONNECT_TIMEOUT)))
        .operation_timeout(Some(Timeout::After(CONNECT_TIMEOUT)));
    let results = admin
        .create_topics(&[NewTopic::new(&name, partitions, TopicReplication::Fixed(1))], &opts)
        .await
        .unwrap_or_else(|e| stack_unreachable(&format!("Kafka at {brokers}"), format!("create topic {name}: {e}")));
    for r in results {
        match r {
            Ok(_) => {}
            Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => {
                panic!("topic {topic} already exists: unique_name() is not unique")
            }
            Err((topic, code)) => {
                panic!("Kafka at {brokers} refused to create topic {topic}: {code}")
            }
        }
    }

    // Wait until the topic is visible with all partitions led.
    let deadline = tokio::time::Instant::now() + CONNECT_TIMEOUT;
    loop {
        let md = kafka_metadata_at(brokers, Some(&name)).await;
        let ready = md.topics().iter().any(|t| {
            t.name() == name
                && t.error().is_none()
                && t.partitions().len() == partitions as usize
                && t.partitions().iter().all(|p| p.leader() >= 0)
        });
        if ready {
            return name;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("topic {name} was created on {brokers} but its {partitions} partitions did not show up in the metadata within {CONNECT_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Produces `events` to `topic` of the stack's Kafka as Avro (Confluent wire format, schema id
/// 1), keyed by device, and waits until every one is acknowledged (panics otherwise).
pub async fn produce_events(topic: &str, events: &[posture_core::ConfigChange]) {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = kafka_config().create().expect("producer");
    let sends: Vec<_> = events
        .iter()
        .map(|e| {
            let payload = posture_avro::encode_config_change(e, 1);
            producer
                .send_result(FutureRecord::to(topic).key(&e.device_id).payload(&payload))
                .map_err(|(err, _)| format!("queueing {}: {err}", e.event_id))
        })
        .collect();
    for s in sends {
        s.expect("queued").await.expect("delivery report").expect("delivered");
    }
}

/// Every record of `topic` (from the start of a new consumer group) until none arrives for a
/// few seconds (15 s before the first one).
pub async fn read_topic(topic: &str) -> Vec<rdkafka::message::OwnedMessage> {
    use rdkafka::consumer::StreamConsumer;
    let consumer: StreamConsumer = kafka_config()
        .set("group.id", unique_name("reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut out = Vec::new();
    loop {
        let idle = Duration::from_secs(if out.is_empty() { 15 } else { 4 });
        match tokio::time::timeout(idle, consumer.recv()).await {
            Ok(Ok(m)) => out.push(m.detach()),
            Ok(Err(e)) => panic!("reading {topic}: {e}"),
            Err(_) => break,
        }
    }
    drop(consumer);
    out
}

/// Every record of `topic` as it is now, read to its end without a consumer group (the
/// product's [`posture_ingest::topics::read_to_end`]: on until the topic is idle for 3 s, at
/// most 120 s).
pub async fn read_topic_to_end(topic: &str) -> Vec<rdkafka::message::OwnedMessage> {
    let (brokers, topic) = (kafka_brokers(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        posture_ingest::topics::read_to_end(&brokers, &[], &topic, Duration::from_secs(3), Duration::from_secs(120))
            .unwrap_or_else(|e| panic!("reading {topic}: {e}; {STACK_HINT}"))
    })
    .await
    .expect("reader thread")
}

// --- ClickHouse ----------------------------------------------------------------------------------

/// A client for the ClickHouse at `url`, with row validation off: the stack's ClickHouse 18.16
/// does not know the `RowBinaryWithNamesAndTypes` format that validation uses.
pub fn clickhouse_client_at(url: &str) -> clickhouse::Client {
    clickhouse::Client::default().with_url(url).with_validation(false)
}

/// A client for the stack's ClickHouse ([`clickhouse_url`]), database `default`.
pub fn clickhouse_client() -> clickhouse::Client {
    clickhouse_client_at(&clickhouse_url())
}

/// Check that ClickHouse at `url` answers `SELECT 1`; panic with [`STACK_HINT`] otherwise.
pub async fn check_clickhouse_at(url: &str) {
    let client = clickhouse_client_at(url);
    let answer = tokio::time::timeout(CONNECT_TIMEOUT, client.query("SELECT 1").fetch_one::<u8>()).await;
    match answer {
        Ok(Ok(1)) => {}
        Ok(Ok(other)) => panic!("ClickHouse at {url} answered SELECT 1 with {other}"),
        Ok(Err(e)) => stack_unreachable(&format!("ClickHouse at {url}"), e),
        Err(_) => stack_unreachable(
            &format!("ClickHouse at {url}"),
            format!("no answer to SELECT 1 within {CONNECT_TIMEOUT:?}"),
        ),
    }
}

/// A new database on [`clickhouse_url`] and a client pointed at it; see [`fresh_database_at`].
pub async fn fresh_database(prefix: &str) -> (clickhouse::Client, String) {
    fresh_database_at(&clickhouse_url(), prefix).await
}

/// `CREATE DATABASE prefix_...` on the ClickHouse at `url`; returns a client whose default
/// database is the new one, and its name. The database is left behind (not dropped); it goes
/// away when `scripts/stack up` next starts ClickHouse. Panics with [`STACK_HINT`] when
/// ClickHouse is unreachable.
pub async fn fresh_database_at(url: &str, prefix: &str) -> (clickhouse::Client, String) {
    check_clickhouse_at(url).await;
    let name = unique_name(prefix);
    let client = clickhouse_client_at(url);
    client
        .query(&format!("CREATE DATABASE {name}"))
        .execute()
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name} on ClickHouse at {url} failed: {e}"));
    (client.with_database(name.clone()), name)
}

/// The test cluster's node URLs and its name (`POSTURE_CLUSTER_URLS`, `POSTURE_CLUSTER_NAME`,
/// exported by `scripts/stack env` after `scripts/stack up --cluster`); panics with how to start it
/// when they are not set.
pub fn cluster() -> (Vec<String>, String) {
    let hint = "start the test cluster with: scripts/stack up --cluster, then eval \"$(scripts/stack env)\"";
    let urls: Vec<String> = std::env::var("POSTURE_CLUSTER_URLS")
        .unwrap_or_else(|_| panic!("POSTURE_CLUSTER_URLS is not set: {hint}"))
        .split(',')
        .map(|u| u.trim().to_string())
        .filter(|u| !u.is_empty())
        .collect();
    assert!(
        urls.len() >= 2,
        "POSTURE_CLUSTER_URLS names {} servers, a cluster needs 2: {hint}",
        urls.len()
    );
    let name =
        std::env::var("POSTURE_CLUSTER_NAME").unwrap_or_else(|_| panic!("POSTURE_CLUSTER_NAME is not set: {hint}"));
    (urls, name)
}

/// The test cluster's nodes as one sharded cluster: their URLs in shard order (the replicas of
/// shard 1 first), the cluster's name and the replicas per shard (`POSTURE_SHARDED_CLUSTER_URLS`,
/// `POSTURE_SHARDED_CLUSTER_NAME`, `POSTURE_CLUSTER_REPLICAS`, exported by `scripts/stack env`
/// after `scripts/stack up --cluster`); panics with how to start it when they are not set.
pub fn sharded_cluster() -> (Vec<String>, String, usize) {
    let hint = "start the test cluster with: scripts/stack up --cluster, then eval \"$(scripts/stack env)\"";
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} is not set: {hint}"));
    let urls: Vec<String> = var("POSTURE_SHARDED_CLUSTER_URLS")
        .split(',')
        .map(|u| u.trim().to_string())
        .filter(|u| !u.is_empty())
        .collect();
    let replicas: usize = var("POSTURE_CLUSTER_REPLICAS")
        .parse()
        .unwrap_or_else(|e| panic!("POSTURE_CLUSTER_REPLICAS: {e}: {hint}"));
    assert!(
        replicas >= 1 && urls.len() >= 2 * replicas && urls.len().is_multiple_of(replicas),
        "POSTURE_SHARDED_CLUSTER_URLS names {} servers, not 2 or more shards of {replicas} replicas: {hint}",
        urls.len()
    );
    (urls, var("POSTURE_SHARDED_CLUSTER_NAME"), replicas)
}

/// A server of the stack's test cluster, stopped and started again as an operator does: SIGTERM,
/// waited for; then the same command line on the same data, its pid recorded where
/// `scripts/stack down` finds it.
pub struct ClusterNode {
    dir: std::path::PathBuf,
    url: String,
    cmdline: Vec<String>,
}

impl ClusterNode {
    /// Node `i` (1-based) of the cluster `scripts/stack up --cluster` started in this checkout.
    pub fn of_stack(i: usize) -> ClusterNode {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(".stack/cluster")
            .join(format!("node{i}"));
        let hint = "start the test cluster with: scripts/stack up --cluster";
        let pid = std::fs::read_to_string(dir.join("clickhouse.pid"))
            .unwrap_or_else(|e| panic!("cluster node {i}: no pid file in {} ({e}): {hint}", dir.display()));
        let port = std::fs::read_to_string(dir.join("port"))
            .unwrap_or_else(|e| panic!("cluster node {i}: no port file in {} ({e}): {hint}", dir.display()));
        let cmdline: Vec<String> = std::fs::read(format!("/proc/{}/cmdline", pid.trim()))
            .unwrap_or_else(|e| panic!("cluster node {i}: process {} is gone ({e}): {hint}", pid.trim()))
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        assert!(
            cmdline.iter().any(|a| a.contains("clickhouse-server")),
            "cluster node {i}: pid {} is not a clickhouse-server: {cmdline:?}",
            pid.trim()
        );
        ClusterNode {
            dir,
            url: format!("http://127.0.0.1:{}", port.trim()),
            cmdline,
        }
    }

    /// Its HTTP URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn pid(&self) -> String {
        std::fs::read_to_string(self.dir.join("clickhouse.pid"))
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// Stops the server (SIGTERM) and waits until its process is gone.
    pub fn stop(&self) {
        let pid = self.pid();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {pid} failed");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        // Gone, or a zombie (a server this test started is its child, reaped only at exit).
        let running = |pid: &str| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                stat.rsplit(')')
                    .next()
                    .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
            })
        };
        while running(&pid) {
            assert!(
                std::time::Instant::now() < deadline,
                "clickhouse-server {pid} did not stop within 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts the server again with its command line and data, and waits until it answers.
    // The server outlives the test on purpose (as the stack's own servers do; `scripts/stack down`
    // stops it by its pid file), so its child handle is not waited for.
    #[allow(clippy::zombie_processes)]
    pub fn start(&self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("log/stdout.log"))
            .expect("the node's log");
        let child = std::process::Command::new("setsid")
            .args(&self.cmdline)
            .current_dir(&self.dir)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start clickhouse-server");
        std::fs::write(self.dir.join("clickhouse.pid"), format!("{}\n", child.id())).expect("write the pid file");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let answered = std::process::Command::new("curl")
                .args(["-sS", "--max-time", "2", &format!("{}/?query=SELECT%201", self.url)])
                .output()
                .is_ok_and(|o| o.stdout == b"1\n");
            if answered {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "cluster node {} did not answer within 60 s after its restart",
                self.url
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The stack's Python (`$POSTURE_PYTHON`, else the stack's venv), which has chdb-core
/// (ClickHouse 26 in-process), fastavro and confluent-kafka: the independent clients some
/// tests check posture against.
pub fn stack_python() -> String {
    chdb_python()
}

/// The python with chdb: `$POSTURE_PYTHON`, else the stack's venv.
pub fn chdb_python() -> String {
    let py = std::env::var("POSTURE_PYTHON")
        .ok()
        .filter(|p| !p.trim().is_empty())
        .unwrap_or_else(|| {
            let cache = std::env::var("POSTURE_CACHE")
                .ok()
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| format!("{}/.cache/posture", std::env::var("HOME").unwrap_or_default()));
            format!("{cache}/venv/bin/python")
        });
    if !std::path::Path::new(&py).exists() {
        panic!("cannot find the python with chdb (ClickHouse 26) at {py} ($POSTURE_PYTHON); {STACK_HINT}");
    }
    py
}

/// Runs setup statements and queries on ClickHouse 26 in a fresh chdb session (through
/// `tests/chdb_run.py` and [`chdb_python`]); returns the server version and one JSONEachRow
/// answer per query, as text. Panics with the statement that failed.
pub fn run_chdb(setup: &[String], queries: &[String]) -> (String, Vec<String>) {
    let job = serde_json::json!({"database": unique_name("chdb"), "setup": setup, "queries": queries});
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/chdb_run.py");
    let mut child = std::process::Command::new(chdb_python())
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {script}: {e}; {STACK_HINT}"));
    let input = job.to_string();
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, input.as_bytes()));
    let out = child.wait_with_output().expect("chdb_run.py");
    writer.join().expect("writer thread").expect("write to chdb_run.py");
    assert!(
        out.status.success(),
        "chdb_run.py failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("chdb_run.py prints JSON");
    let version = answer["version"].as_str().unwrap_or_default().to_string();
    let results = answer["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r.as_str().expect("result text").to_string())
        .collect();
    (version, results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_differ_and_are_identifiers() {
        let a = unique_name("Smoke-Test");
        let b = unique_name("Smoke-Test");
        assert_ne!(a, b);
        for n in [&a, &b] {
            assert!(n.starts_with("smoke_test_"), "{n}");
            assert!(
                n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{n}"
            );
        }
        assert!(unique_name("9lives").starts_with("t9lives_"));
        assert!(unique_name("").starts_with("t_"));
    }
}

#[cfg(test)]
mod manifest {
    /// The test files live directly in tests/ and are listed one by one in tests/Cargo.toml
    /// (`autotests` would look in tests/tests/): a file not listed would never run, silently.
    #[test]
    fn every_test_file_is_listed_in_the_manifest() {
        let dir = env!("CARGO_MANIFEST_DIR");
        let manifest = std::fs::read_to_string(format!("{dir}/Cargo.toml")).unwrap();
        let mut unlisted = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            if name.ends_with(".rs") && !manifest.contains(&format!("path = \"{name}\"")) {
                unlisted.push(name);
            }
        }
        assert!(
            unlisted.is_empty(),
            "add a [[test]] entry to tests/Cargo.toml for: {unlisted:?}"
        );
    }
}
