//! The options of the pipeline's commands: where ClickHouse and Kafka are and how to
//! authenticate to them (shared by every command that talks to either), and those of
//! `posture migrate` and `posture run` ([`crate::pipeline`] carries them out).
//!
//! Secrets (the ClickHouse password, the Kafka SASL password) come from the
//! environment or from files, never from argv or the configuration file.

use anyhow::{Context, Result};
use std::path::PathBuf;

/// Where ClickHouse is.
#[derive(clap::Args, Clone)]
pub struct ClickHouseArgs {
    /// ClickHouse HTTP URL.
    #[arg(long, env = "POSTURE_CLICKHOUSE_URL", default_value = "http://127.0.0.1:8123")]
    pub(crate) clickhouse_url: String,
    /// Database of posture's tables (created by `posture migrate`).
    #[arg(long, env = "POSTURE_CLICKHOUSE_DATABASE", default_value = "posture")]
    pub(crate) database: String,
    /// ClickHouse user. The password comes from the environment variable
    /// POSTURE_CLICKHOUSE_PASSWORD or from --clickhouse-password-file.
    #[arg(
        long = "clickhouse-user",
        alias = "user",
        env = "POSTURE_CLICKHOUSE_USER",
        default_value = "default"
    )]
    pub(crate) user: String,
    /// File whose first line is the ClickHouse password (used when
    /// POSTURE_CLICKHOUSE_PASSWORD is not set).
    #[arg(long, env = "POSTURE_CLICKHOUSE_PASSWORD_FILE", value_name = "FILE")]
    pub(crate) clickhouse_password_file: Option<PathBuf>,
    /// The ClickHouse cluster posture's tables live on (a name in the servers'
    /// remote_servers, with ZooKeeper configured). `migrate` creates every table ON CLUSTER:
    /// on a cluster of one shard, every table replicated on every node; on several shards, the
    /// raw tables sharded by source partition (replicated tables in <database>_local behind
    /// Distributed tables in <database>) and the rollup, exceptions, tasks and catalogs
    /// replicated whole on every node. `run` writes with an insert quorum (and, sharded,
    /// synchronous Distributed INSERTs). The query commands read any node and do not need it.
    /// Unset: one server.
    #[arg(
        long,
        visible_alias = "cluster",
        env = "POSTURE_CLICKHOUSE_CLUSTER",
        value_name = "NAME"
    )]
    pub(crate) clickhouse_cluster: Option<String>,
    /// With --clickhouse-cluster: how many replicas of a shard must hold each INSERT before it
    /// counts as written (ClickHouse insert_quorum). Default: every replica of a shard (read
    /// from system.clusters), so a read on any replica sees every flush that has returned. 0 or
    /// 1: no quorum: a replica may lag behind what was written, and an instance that takes over
    /// a partition through a lagging replica reads an old snapshot and cut; only for a single
    /// writer that always uses one node. On a sharded cluster the tables every node holds
    /// (score_rollup, baseline_catalogs) always wait for every node, whatever N is.
    #[arg(long, env = "POSTURE_CLICKHOUSE_INSERT_QUORUM", value_name = "N")]
    pub(crate) clickhouse_insert_quorum: Option<u32>,
}

impl ClickHouseArgs {
    /// A client for the server (no database selected).
    pub fn client(&self) -> Result<clickhouse::Client> {
        self.client_as(
            &self.user,
            "POSTURE_CLICKHOUSE_PASSWORD",
            self.clickhouse_password_file.as_deref(),
        )
    }

    /// A client for the server as `user`, its password from the variable `password_env` or
    /// the file `password_file` (no database selected).
    pub fn client_as(
        &self,
        user: &str,
        password_env: &str,
        password_file: Option<&std::path::Path>,
    ) -> Result<clickhouse::Client> {
        let mut c = clickhouse::Client::default()
            .with_url(&self.clickhouse_url)
            .with_user(user)
            // ClickHouse 18.16 lacks the format schema validation uses.
            .with_validation(false);
        if let Some(p) = crate::config::secret(password_env, password_file)? {
            c = c.with_password(p);
        }
        Ok(c)
    }

    /// A client for writing posture's rows (no database selected): on a cluster, each INSERT
    /// waits for its quorum of replicas (see `--clickhouse-insert-quorum`), and an INSERT into a
    /// Distributed table (a sharded cluster) returns once every shard has its rows. The second
    /// value, on a sharded cluster: the quorum for the tables every node holds whole
    /// (`Sink::with_everywhere_quorum`).
    pub async fn writer(&self) -> Result<(clickhouse::Client, Option<u64>)> {
        let client = self.client()?;
        let Some(cluster) = &self.clickhouse_cluster else {
            return Ok((client, None));
        };
        let (replicas, nodes): (u64, u64) = client
            .query("SELECT countIf(shard_num = 1), count() FROM system.clusters WHERE cluster = ?")
            .bind(cluster.as_str())
            .fetch_one()
            .await
            .with_context(|| format!("reading the replicas of cluster {cluster} from {}", self.clickhouse_url))?;
        anyhow::ensure!(
            replicas > 0,
            "cluster {cluster} is not in system.clusters of {} (check the servers' remote_servers, or --clickhouse-cluster)",
            self.clickhouse_url
        );
        // The tables every node holds always wait for every node: a cut read from a lagging node
        // by an instance restoring a partition would have the replay summed twice.
        let (quorum, everywhere) = match self.clickhouse_insert_quorum {
            Some(n) => (n as u64, nodes),
            None => (replicas, nodes),
        };
        let client = client.with_setting("insert_distributed_sync", "1");
        Ok((
            if quorum > 1 {
                client.with_setting("insert_quorum", quorum.to_string())
            } else {
                client
            },
            (nodes > replicas).then_some(everywhere),
        ))
    }

    /// The cluster named by `--clickhouse-cluster`, if any.
    pub fn cluster(&self) -> Option<&str> {
        self.clickhouse_cluster.as_deref()
    }

    /// The database of posture's tables.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// The URL, for messages.
    pub fn url(&self) -> &str {
        &self.clickhouse_url
    }
}

/// Where Kafka is and how to authenticate.
#[derive(clap::Args, Clone)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "POSTURE_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub(crate) brokers: String,
    #[command(flatten)]
    pub(crate) security: KafkaSecurityArgs,
}

/// How to authenticate to Kafka: the options of every command that talks to it (`run`,
/// `simulate --kafka`, `import-results --kafka`), so none connects without them.
#[derive(clap::Args, Clone)]
pub struct KafkaSecurityArgs {
    /// librdkafka security.protocol: plaintext, ssl, sasl_plaintext or sasl_ssl.
    #[arg(long, env = "POSTURE_KAFKA_SECURITY_PROTOCOL", value_name = "PROTOCOL")]
    kafka_security_protocol: Option<String>,
    /// SASL mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512).
    #[arg(long, env = "POSTURE_KAFKA_SASL_MECHANISM", value_name = "MECHANISM")]
    kafka_sasl_mechanism: Option<String>,
    /// SASL user name. The password comes from the environment variable
    /// POSTURE_KAFKA_SASL_PASSWORD or from --kafka-sasl-password-file.
    #[arg(long, env = "POSTURE_KAFKA_SASL_USERNAME", value_name = "USER")]
    kafka_sasl_username: Option<String>,
    /// File whose first line is the SASL password.
    #[arg(long, env = "POSTURE_KAFKA_SASL_PASSWORD_FILE", value_name = "FILE")]
    kafka_sasl_password_file: Option<PathBuf>,
}

impl KafkaSecurityArgs {
    /// librdkafka properties for security (empty for plaintext).
    pub fn properties(&self) -> Result<Vec<(String, String)>> {
        let mut p = Vec::new();
        if let Some(v) = &self.kafka_security_protocol {
            p.push(("security.protocol".into(), v.clone()));
        }
        if let Some(v) = &self.kafka_sasl_mechanism {
            p.push(("sasl.mechanism".into(), v.clone()));
        }
        if let Some(v) = &self.kafka_sasl_username {
            p.push(("sasl.username".into(), v.clone()));
        }
        if let Some(pw) =
            crate::config::secret("POSTURE_KAFKA_SASL_PASSWORD", self.kafka_sasl_password_file.as_deref())?
        {
            p.push(("sasl.password".into(), pw));
        }
        Ok(p)
    }

    /// The same settings as the environment variables of these options, for a child `posture`
    /// process (the password itself stays in its own variable or file, never in argv).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let mut e = Vec::new();
        let mut put = |k: &'static str, v: Option<String>| {
            if let Some(v) = v {
                e.push((k, v));
            }
        };
        put("POSTURE_KAFKA_SECURITY_PROTOCOL", self.kafka_security_protocol.clone());
        put("POSTURE_KAFKA_SASL_MECHANISM", self.kafka_sasl_mechanism.clone());
        put("POSTURE_KAFKA_SASL_USERNAME", self.kafka_sasl_username.clone());
        put(
            "POSTURE_KAFKA_SASL_PASSWORD_FILE",
            self.kafka_sasl_password_file.as_ref().map(|f| f.display().to_string()),
        );
        e
    }
}

#[derive(clap::Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub(crate) ch: ClickHouseArgs,
}

/// `posture serve`: the query API and the dashboard page, without consuming.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// Directory of baseline YAML files (titles, points, categories of the controls); the same
    /// baselines the pipeline runs with.
    #[arg(long, env = "POSTURE_BASELINES", value_name = "DIR")]
    pub(crate) baselines: PathBuf,
    #[command(flatten)]
    pub(crate) ch: ClickHouseArgs,
    /// Address of the HTTP port: the dashboard page at /, the query API at /api/v1, /metrics,
    /// /healthz and /readyz. Loopback by default; 0.0.0.0:9465 to be reached from elsewhere.
    #[arg(
        long,
        env = "POSTURE_SERVE_ADDR",
        default_value = "127.0.0.1:9465",
        value_name = "ADDR"
    )]
    pub(crate) http_addr: String,
    /// File whose first line is the bearer token /metrics asks for (or the environment
    /// variable POSTURE_METRICS_TOKEN).
    #[arg(long, env = "POSTURE_METRICS_TOKEN_FILE", value_name = "FILE")]
    pub(crate) metrics_token_file: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) api: ApiArgs,
}

/// The query API and the dashboard page on the HTTP port (`posture run` and `posture serve`).
#[derive(clap::Args)]
pub struct ApiArgs {
    /// TOML file of bearer tokens for the query API `/api/v1` on the HTTP
    /// port, each with the tenants it may read (see the README). Without
    /// it, the API is off (only its OpenAPI document is served).
    #[arg(long, env = "POSTURE_API_TOKENS_FILE", value_name = "FILE")]
    pub(crate) api_tokens_file: Option<PathBuf>,
    /// An API request that takes longer is answered 503; its ClickHouse
    /// queries are stopped too (max_execution_time).
    #[arg(long, env = "POSTURE_API_TIMEOUT_SECS", default_value_t = 30, value_name = "SECS")]
    pub(crate) api_timeout_secs: u64,
    /// At most this many API requests are served at once (the others wait).
    #[arg(long, env = "POSTURE_API_MAX_IN_FLIGHT", default_value_t = 64, value_name = "N")]
    pub(crate) api_max_in_flight: usize,
    /// ClickHouse user of the query API's reads (a read-only user, readonly=2
    /// in its profile: see docs/SECURITY.md); its password comes from
    /// POSTURE_API_CLICKHOUSE_PASSWORD or --api-clickhouse-password-file.
    /// Writes (exceptions, tasks) go through --clickhouse-user. Default:
    /// --clickhouse-user for both.
    #[arg(long, env = "POSTURE_API_CLICKHOUSE_USER", value_name = "USER")]
    pub(crate) api_clickhouse_user: Option<String>,
    /// File whose first line is the password of --api-clickhouse-user.
    #[arg(long, env = "POSTURE_API_CLICKHOUSE_PASSWORD_FILE", value_name = "FILE")]
    pub(crate) api_clickhouse_password_file: Option<PathBuf>,
    /// API requests per second one tenant may make on average (bursts of
    /// twice as many); beyond, 429 with Retry-After (0: no quota).
    #[arg(
        long,
        env = "POSTURE_API_TENANT_REQUESTS_PER_SEC",
        default_value_t = 20.0,
        value_name = "N"
    )]
    pub(crate) api_tenant_requests_per_sec: f64,
}

#[derive(clap::Args)]
pub struct RunArgs {
    /// Directory of baseline YAML files.
    #[arg(long, env = "POSTURE_BASELINES", value_name = "DIR")]
    pub(crate) baselines: PathBuf,
    #[command(flatten)]
    pub(crate) kafka: KafkaArgs,
    /// Input topic of Avro ConfigChange events (Confluent wire format).
    #[arg(long, env = "POSTURE_TOPIC", default_value = "posture.config-changes")]
    pub(crate) topic: String,
    /// Consumer group; instances in one group split the partitions.
    #[arg(long, env = "POSTURE_GROUP", default_value = "posture")]
    pub(crate) group: String,
    /// Accepted schema ids of input records, comma-separated (default: any
    /// id, read with the embedded ConfigChange schema).
    #[arg(long, env = "POSTURE_SCHEMA_IDS", value_delimiter = ',')]
    pub(crate) schema_ids: Option<Vec<u32>>,
    /// Confluent Schema Registry URL: schema ids not in --schema-ids are
    /// looked up there once; ids of the ConfigChange schema are read as is,
    /// other writer schemas through Avro schema resolution, and schemas that
    /// cannot be read are dead-lettered with the reason (naming the field).
    /// posture also registers its output schemas there (see
    /// --score-delta-schema-id). The password comes from
    /// POSTURE_SCHEMA_REGISTRY_PASSWORD or --schema-registry-password-file.
    #[arg(long, env = "POSTURE_SCHEMA_REGISTRY_URL", value_name = "URL")]
    pub(crate) schema_registry_url: Option<String>,
    /// Schema Registry basic-auth user (e.g. a Confluent Cloud API key).
    #[arg(long, env = "POSTURE_SCHEMA_REGISTRY_USERNAME", value_name = "USER")]
    pub(crate) schema_registry_username: Option<String>,
    /// File whose first line is the Schema Registry password.
    #[arg(long, env = "POSTURE_SCHEMA_REGISTRY_PASSWORD_FILE", value_name = "FILE")]
    pub(crate) schema_registry_password_file: Option<PathBuf>,
    /// Address of the HTTP port: /metrics (Prometheus), /healthz, /readyz
    /// and the query API ("" = no HTTP port). Loopback by default: set
    /// 0.0.0.0:9464 to be scraped from elsewhere (the shipped Kubernetes
    /// manifests and compose file do).
    #[arg(
        long,
        env = "POSTURE_HTTP_ADDR",
        default_value = "127.0.0.1:9464",
        value_name = "ADDR"
    )]
    pub(crate) http_addr: String,
    /// File whose first line is the bearer token /metrics asks for (or the
    /// environment variable POSTURE_METRICS_TOKEN). Without either, /metrics
    /// is open to whoever reaches the port; /healthz and /readyz always are.
    #[arg(long, env = "POSTURE_METRICS_TOKEN_FILE", value_name = "FILE")]
    pub(crate) metrics_token_file: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) api: ApiArgs,
    /// Topic of ScoreDelta records, one per transition ("" = off).
    #[arg(long, env = "POSTURE_SCORE_DELTAS_TOPIC", default_value = "posture.score-deltas")]
    pub(crate) score_deltas_topic: String,
    /// Schema id written in the header of ScoreDelta records. With
    /// --schema-registry-url, posture registers the ScoreDelta schema under
    /// the subject `<score-deltas-topic>-value` at start and uses the id the
    /// registry gives instead (unless --no-register-output-schemas).
    #[arg(long, env = "POSTURE_SCORE_DELTA_SCHEMA_ID", default_value_t = 2)]
    pub(crate) score_delta_schema_id: u32,
    /// With --schema-registry-url: do not register the output schemas
    /// (ScoreDelta, ScoreDropAlert); write --score-delta-schema-id and
    /// --alert-schema-id as given. For registries posture may only read.
    #[arg(long, env = "POSTURE_NO_REGISTER_OUTPUT_SCHEMAS")]
    pub(crate) no_register_output_schemas: bool,
    /// Topic of records that could not be used, with the reason in headers
    /// ("" = off: they are then only counted and logged).
    #[arg(long, env = "POSTURE_DEAD_LETTER_TOPIC", default_value = "posture.dead-letter")]
    pub(crate) dead_letter_topic: String,
    /// Topic of score-drop alerts ("" = no alerts).
    #[arg(long, env = "POSTURE_ALERTS_TOPIC", default_value = "posture.alerts")]
    pub(crate) alerts_topic: String,
    /// Alert when a tenant's percent (or one category's) falls by at least
    /// this many points ...
    #[arg(
        long,
        env = "POSTURE_ALERT_DROP_POINTS",
        default_value_t = 5.0,
        value_name = "POINTS"
    )]
    pub(crate) alert_drop_points: f64,
    /// ... within this many minutes of event time.
    #[arg(
        long,
        env = "POSTURE_ALERT_WINDOW_MINS",
        default_value_t = 60,
        value_name = "MINUTES"
    )]
    pub(crate) alert_window_mins: i64,
    /// TOML file of alert rules per tenant, group and category (see the
    /// README); without it, every tenant's total and each category use
    /// --alert-drop-points and --alert-window-mins.
    #[arg(long, env = "POSTURE_ALERT_RULES", value_name = "FILE")]
    pub(crate) alert_rules: Option<PathBuf>,
    /// How often the instance holding partition 0 checks for drops.
    #[arg(long, env = "POSTURE_ALERT_INTERVAL_SECS", default_value_t = 30, value_name = "SECS")]
    pub(crate) alert_interval_secs: u64,
    /// Schema id written in the header of alert records (with a registry:
    /// the id it gives the ScoreDropAlert schema under `<alerts-topic>-value`,
    /// as for --score-delta-schema-id).
    #[arg(long, env = "POSTURE_ALERT_SCHEMA_ID", default_value_t = 3)]
    pub(crate) alert_schema_id: u32,
    /// Device groups that get their own `posture_score_percent{tenant,group}`
    /// gauge (comma-separated), refreshed with each alert check. Without
    /// it, only tenants get gauges.
    #[arg(
        long,
        env = "POSTURE_SCORE_GAUGE_GROUPS",
        value_delimiter = ',',
        value_name = "GROUP,..."
    )]
    pub(crate) score_gauge_groups: Vec<String>,
    /// At most this many of --score-gauge-groups get series; the rest are
    /// aggregated under group="_overflow".
    #[arg(long, env = "POSTURE_SCORE_GAUGE_MAX_GROUPS", default_value_t = 50, value_name = "N")]
    pub(crate) score_gauge_max_groups: usize,
    /// At most this many tenants get score gauges of their own, labelled
    /// with the tenant's name (first seen first); the rest are aggregated
    /// under tenant="_overflow". 0 (the default): no tenant name on /metrics,
    /// only the mean over all tenants. The shipped deployments set 1000 for
    /// the PostureScoreDrop alert rule.
    #[arg(long, env = "POSTURE_SCORE_GAUGE_MAX_TENANTS", default_value_t = 0, value_name = "N")]
    pub(crate) score_gauge_max_tenants: usize,
    /// Flush outputs when a batch holds this many rows.
    #[arg(long, env = "POSTURE_BATCH_ROWS", default_value_t = 100_000)]
    pub(crate) batch_rows: usize,
    /// Flush outputs at least this often (milliseconds).
    #[arg(long, env = "POSTURE_BATCH_MS", default_value_t = 1000)]
    pub(crate) batch_ms: u64,
    /// Consumer group session timeout (ms): how long a crashed instance
    /// holds its partitions before the group gives them to the others.
    #[arg(
        long,
        env = "POSTURE_KAFKA_SESSION_TIMEOUT_MS",
        default_value_t = 10_000,
        value_name = "MS"
    )]
    pub(crate) kafka_session_timeout_ms: u32,
    /// The longest a flush may block consumption (ms) before the instance
    /// leaves the group (librdkafka max.poll.interval.ms, also the group's
    /// rebalance timeout: how long a rebalance waits for a member that
    /// crashed, on brokers that wait for it).
    #[arg(
        long,
        env = "POSTURE_KAFKA_MAX_POLL_INTERVAL_MS",
        default_value_t = 300_000,
        value_name = "MS"
    )]
    pub(crate) kafka_max_poll_interval_ms: u32,
    /// Extra librdkafka consumer properties, KEY=VALUE, repeatable or
    /// comma-separated (e.g. fetch.max.bytes=52428800). Not for secrets.
    #[arg(
        long,
        env = "POSTURE_KAFKA_CONSUMER_PROPERTY",
        value_name = "KEY=VALUE",
        value_delimiter = ','
    )]
    pub(crate) kafka_consumer_property: Vec<String>,
    /// Holding no partition of the topic for this long (after the start or
    /// a revocation) is reported: a warning naming the group and the likely
    /// cause, /readyz failing with the reason, posture_unassigned_seconds on
    /// /metrics (0: never report).
    #[arg(
        long,
        env = "POSTURE_ASSIGNMENT_TIMEOUT_SECS",
        default_value_t = 30,
        value_name = "SECS"
    )]
    pub(crate) assignment_timeout_secs: u64,
    /// When no partition is held for --assignment-timeout-secs, leave and
    /// re-join the consumer group (again at doubling intervals, up to 10
    /// minutes): this clears a group that a crashed member keeps stuck
    /// (Tansu 0.6); on Kafka it costs one rebalance of the group. Turn it off
    /// for deliberate standby instances (more instances than partitions).
    #[arg(
        long,
        env = "POSTURE_KAFKA_REJOIN_UNASSIGNED",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_name = "BOOL"
    )]
    pub(crate) kafka_rejoin_unassigned: bool,
    /// Most input bytes librdkafka may prefetch per partition queue (KiB):
    /// bounds memory while the sink is slow.
    #[arg(long, env = "POSTURE_PREFETCH_KIB", default_value_t = 16_384)]
    pub(crate) prefetch_kib: u64,
    /// Days without an event after which a device leaves the score.
    #[arg(long, env = "POSTURE_INACTIVITY_DAYS", default_value_t = 30)]
    pub(crate) inactivity_days: u32,
    /// Where partition state lives: "clickhouse" (snapshots in the
    /// engine_snapshots table: state survives restarts and follows
    /// partitions on rebalance, and a replay writes nothing twice) or
    /// "memory" (lost on restart; at-least-once).
    #[arg(long, env = "POSTURE_STATE", default_value = "clickhouse", value_parser = ["clickhouse", "memory"])]
    pub(crate) state: String,
    /// Snapshot each partition's state at least this often (seconds); its
    /// offset is committed with the snapshot, so a restart replays at most
    /// this much input.
    #[arg(long, env = "POSTURE_SNAPSHOT_SECS", default_value_t = 30)]
    pub(crate) snapshot_secs: u64,
    /// How often to read the exceptions from ClickHouse (seconds); a change
    /// reaches each partition's engine before its next record.
    #[arg(
        long,
        env = "POSTURE_EXCEPTIONS_POLL_SECS",
        default_value_t = 10,
        value_name = "SECS"
    )]
    pub(crate) exceptions_poll_secs: u64,
    /// How often the instance holding partition 0 confirms remediation
    /// tasks (marks completed those whose scope no longer fails).
    #[arg(long, env = "POSTURE_TASKS_CONFIRM_SECS", default_value_t = 60, value_name = "SECS")]
    pub(crate) tasks_confirm_secs: u64,
    /// ... or after this many records of the partition.
    #[arg(long, env = "POSTURE_SNAPSHOT_RECORDS", default_value_t = 1_000_000)]
    pub(crate) snapshot_records: u64,
    /// Attempts per ClickHouse INSERT on transient errors before the
    /// pipeline stops (0: retry until ClickHouse is back; consumption pauses
    /// meanwhile).
    #[arg(long, env = "POSTURE_SINK_ATTEMPTS", default_value_t = 0)]
    pub(crate) sink_attempts: u32,
    #[command(flatten)]
    pub(crate) limits: crate::limits::InputLimits,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long, env = "POSTURE_DURATION_SECS")]
    pub(crate) duration_secs: Option<u64>,
    /// Stop once no record has arrived and no batch has been written for this
    /// many seconds (after the first record): for backfills and demos. A flush
    /// waiting for ClickHouse (down, or a replica missing) is not idleness: the
    /// run goes on reading once it is written.
    #[arg(long, env = "POSTURE_UNTIL_IDLE", value_name = "SECS")]
    pub(crate) until_idle: Option<u64>,
    /// When the run stops, write its summary here as JSON: the counters,
    /// the busy time and throughput, the time spent flushing, the freshness
    /// percentiles (exact), the CPU time used and the peak resident memory.
    /// For benchmarks and batch jobs.
    #[arg(long, env = "POSTURE_SUMMARY_JSON", value_name = "FILE")]
    pub(crate) summary_json: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) ch: ClickHouseArgs,
}
