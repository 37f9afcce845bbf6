//! An optional Confluent Schema Registry client: which writer schema does a
//! wire-format schema id name, and can the hot path decode records written
//! with it?
//!
//! [`WireDecoder`](crate::WireDecoder) always decodes with the embedded
//! `posture.v1.ConfigChange` schema and only checks the schema id against a
//! list. With a registry, that list can grow at run time: on a record whose id
//! the decoder does not accept yet, ask [`SchemaRegistry::resolve`] once; if
//! the answer is [`Compatibility::Identical`],
//! [`WireDecoder::allow`](crate::WireDecoder::allow) the id and decode;
//! otherwise dead-letter the record with the reason.
//!
//! ```no_run
//! use posture_avro::registry::{Compatibility, SchemaRegistry, INCOMPATIBLE_SCHEMA};
//! use posture_avro::{schema_id, WireDecoder};
//!
//! async fn on_record(registry: &SchemaRegistry, decoder: &mut WireDecoder, value: &[u8]) {
//!     if let Some(id) = schema_id(value) {
//!         if !decoder.accepts(id) {
//!             match registry.resolve(id).await {
//!                 Ok(Compatibility::Identical) => decoder.allow(id),
//!                 Ok(Compatibility::Resolvable(plan)) => decoder.allow_resolved(id, plan),
//!                 Ok(Compatibility::Incompatible(reason)) => {
//!                     return dead_letter(value, INCOMPATIBLE_SCHEMA, &reason);
//!                 }
//!                 // Transport and HTTP failures are retryable: back off, retry.
//!                 Err(e) if e.is_retryable() => return retry_later(value),
//!                 // Not found, not Avro, unparsable: a permanent answer.
//!                 Err(e) => return dead_letter(value, e.reason(), &e.to_string()),
//!             }
//!         }
//!     }
//!     match decoder.decode(value) {
//!         Ok(_event) => { /* on to the engine */ }
//!         Err(e) => dead_letter(value, e.reason(), &e.to_string()),
//!     }
//! }
//! # fn dead_letter(_: &[u8], _: &str, _: &str) {}
//! # fn retry_later(_: &[u8]) {}
//! ```
//!
//! **Schema evolution.** A writer schema whose Parsing Canonical Form equals
//! that of the embedded schema (docs, defaults, aliases and logical-type
//! annotations aside) is [`Compatibility::Identical`]: the same binary layout,
//! read by the hot path. Any other writer schema that Avro schema resolution
//! can read into `ConfigChange` is [`Compatibility::Resolvable`], with the
//! [`ResolutionPlan`] compiled once for it
//! ([`WireDecoder::allow_resolved`](crate::WireDecoder::allow_resolved)); one
//! that cannot be read is [`Compatibility::Incompatible`], the reason naming
//! the field (see [`crate::resolve`]). Schema references (Confluent
//! `references`) are not resolved.
//!
//! Answers are cached for the life of the client: registry schema ids are
//! immutable, so a schema, a "not found", a non-Avro schema type or an
//! unparsable schema is asked for once. Transport and HTTP failures are not
//! cached. The cache is not bounded: one small entry per distinct id seen.

use crate::resolve::ResolutionPlan;
use crate::schemas;
use apache_avro::Schema;
use posture_stage::reasons;
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// The timeout [`SchemaRegistry::new`] uses, for connecting and for each
/// whole request: a registry lookup blocks a partition's progress, so a hung
/// registry must turn into a retryable error quickly.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest registry response body read; larger ones are
/// [`RegistryError::BadResponse`]. Far above any real schema, and a bound on
/// the memory a misbehaving endpoint can make us use.
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// The dead-letter / metrics reason label for a record whose writer schema is
/// [`Compatibility::Incompatible`], in the style of
/// [`DecodeError::reason`](crate::DecodeError::reason).
pub const INCOMPATIBLE_SCHEMA: &str = reasons::INCOMPATIBLE_SCHEMA;

/// HTTP basic-auth credentials for the registry (Confluent Cloud: API key and
/// secret).
///
/// Neither part is ever printed: `Debug` shows `<redacted>`, there is no
/// `Display`, and no [`RegistryError`] contains them.
#[derive(Clone, PartialEq, Eq)]
pub struct BasicAuth {
    username: String,
    password: String,
}

impl BasicAuth {
    /// Credentials sent as an `Authorization: Basic ...` header on every
    /// request.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> BasicAuth {
        BasicAuth {
            username: username.into(),
            password: password.into(),
        }
    }
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuth")
            .field("username", &format_args!("<redacted>"))
            .field("password", &format_args!("<redacted>"))
            .finish()
    }
}

/// Why a registry lookup failed.
///
/// [`NotFound`](RegistryError::NotFound), [`NotAvro`](RegistryError::NotAvro)
/// and [`BadSchema`](RegistryError::BadSchema) are permanent answers about the
/// id (cached; dead-letter the record). [`Http`](RegistryError::Http),
/// [`Transport`](RegistryError::Transport) and
/// [`BadResponse`](RegistryError::BadResponse) are about reaching the registry
/// ([`RegistryError::is_retryable`]; not cached; name the URL).
/// [`InvalidUrl`](RegistryError::InvalidUrl) and
/// [`Client`](RegistryError::Client) come only from construction. No variant
/// ever holds credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The base URL does not parse, is not http(s), carries credentials
    /// (pass [`BasicAuth`] instead), a query or a fragment.
    #[error("invalid schema registry URL: {detail}")]
    InvalidUrl {
        /// What is wrong (never the credentials part of the URL).
        detail: String,
    },
    /// The HTTP client could not be built (TLS initialisation).
    #[error("cannot build the schema registry HTTP client: {detail}")]
    Client {
        /// What went wrong.
        detail: String,
    },
    /// The registry has no schema with this id (HTTP 404 with Confluent
    /// `error_code` 40403).
    #[error("schema id {id} not found in the schema registry")]
    NotFound {
        /// The schema id asked for.
        id: u32,
    },
    /// The id names a schema of another type (`schemaType` PROTOBUF, JSON,
    /// ...), which can never be Avro-decoded.
    #[error("schema id {id} is a {schema_type} schema, not AVRO")]
    NotAvro {
        /// The schema id asked for.
        id: u32,
        /// The `schemaType` the registry reported.
        schema_type: String,
    },
    /// The registry's schema text is not a schema `apache-avro` can parse
    /// (or uses schema references, which are not resolved).
    #[error("schema id {id} is not a valid Avro schema: {detail}")]
    BadSchema {
        /// The schema id asked for.
        id: u32,
        /// The parse error.
        detail: String,
    },
    /// The registry answered with an unexpected HTTP status (5xx, 401, a
    /// 404 that is not Confluent's "schema not found", ...).
    #[error("GET {url}: HTTP {status}: {detail}")]
    Http {
        /// The URL requested.
        url: String,
        /// The HTTP status code.
        status: u16,
        /// The start of the response body (the registry's error message).
        detail: String,
    },
    /// The request did not complete: connection refused, DNS, TLS, timeout,
    /// connection reset while reading.
    #[error("GET {url}: {detail}")]
    Transport {
        /// The URL requested.
        url: String,
        /// What went wrong.
        detail: String,
    },
    /// The registry refused to register a schema under a subject: it is
    /// incompatible with the subject's earlier versions under the subject's
    /// compatibility setting (HTTP 409), or invalid (HTTP 422). Permanent.
    #[error("POST {url}: the registry refused the schema (HTTP {status}): {detail}")]
    Rejected {
        /// The URL requested.
        url: String,
        /// 409 or 422.
        status: u16,
        /// The registry's message.
        detail: String,
    },
    /// HTTP 200 but not a Confluent schema response (not JSON, no `schema`
    /// string, too large).
    #[error("GET {url}: unexpected response: {detail}")]
    BadResponse {
        /// The URL requested.
        url: String,
        /// What is wrong with it.
        detail: String,
    },
}

impl RegistryError {
    /// True when the failure is about reaching the registry, not an answer
    /// about the id: asking again later may succeed. Such errors are never
    /// cached; the caller should back off and retry rather than dead-letter.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            RegistryError::Http { .. } | RegistryError::Transport { .. } | RegistryError::BadResponse { .. }
        )
    }

    /// A short, stable label for metrics and dead-letter headers, like
    /// [`DecodeError::reason`](crate::DecodeError::reason): one of
    /// `registry_config`, `schema_not_found`, `schema_not_avro`,
    /// `bad_schema`, `registry_unavailable`.
    pub fn reason(&self) -> &'static str {
        match self {
            RegistryError::InvalidUrl { .. } | RegistryError::Client { .. } => reasons::REGISTRY_CONFIG,
            RegistryError::NotFound { .. } => reasons::SCHEMA_NOT_FOUND,
            RegistryError::Rejected { .. } => reasons::INCOMPATIBLE_SCHEMA,
            RegistryError::NotAvro { .. } => reasons::SCHEMA_NOT_AVRO,
            RegistryError::BadSchema { .. } => reasons::BAD_SCHEMA,
            RegistryError::Http { .. } | RegistryError::Transport { .. } | RegistryError::BadResponse { .. } => {
                reasons::REGISTRY_UNAVAILABLE
            }
        }
    }
}

/// Whether, and how, records written with a writer schema can be decoded
/// into the embedded `posture.v1.ConfigChange`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compatibility {
    /// Same Parsing Canonical Form as the embedded schema: same binary
    /// layout, read by the hot path as is.
    Identical,
    /// Another schema that Avro resolution reads into ours (fields added or
    /// removed with defaults, promotions, enum symbols mapped), with its plan.
    Resolvable(Arc<ResolutionPlan>),
    /// A schema that cannot be read, with a short human-readable reason
    /// naming the field.
    Incompatible(String),
}

impl Compatibility {
    /// True unless [`Compatibility::Incompatible`].
    pub fn is_compatible(&self) -> bool {
        !matches!(self, Compatibility::Incompatible(_))
    }
}

/// Checks whether records written with `schema` can be decoded:
/// [`Compatibility::Identical`] when its Parsing Canonical Form equals that of
/// the embedded `ConfigChange` schema, [`Compatibility::Resolvable`] when
/// [`ResolutionPlan::compile`] reads it, otherwise
/// [`Compatibility::Incompatible`] with the plan's reason.
pub fn check_config_change(schema: &Schema) -> Compatibility {
    check_as(schema, "writer schema")
}

fn check_as(schema: &Schema, subject: &str) -> Compatibility {
    if schema.canonical_form() == config_change_canonical_form() {
        return Compatibility::Identical;
    }
    match ResolutionPlan::compile(schema) {
        Ok(plan) => Compatibility::Resolvable(Arc::new(plan)),
        Err(e) => Compatibility::Incompatible(format!("{subject} cannot be read as posture.v1.ConfigChange: {e}")),
    }
}

fn config_change_canonical_form() -> &'static str {
    static PCF: OnceLock<String> = OnceLock::new();
    PCF.get_or_init(|| schemas::config_change().canonical_form())
}

/// A permanent answer about one id, as cached.
#[derive(Clone)]
enum Lookup {
    Found(Arc<Schema>),
    Failed(RegistryError),
}

/// The cache entry of one id: the lookup (single-flight: concurrent askers
/// wait for one request) and, once computed, its compatibility.
#[derive(Default)]
struct Slot {
    lookup: tokio::sync::OnceCell<Lookup>,
    compatibility: OnceLock<Compatibility>,
}

/// The body of `GET /schemas/ids/{id}`.
#[derive(Deserialize)]
struct SchemaResponse {
    schema: String,
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<serde_json::Value>,
}

/// The body of a Confluent error response.
#[derive(Deserialize)]
struct ErrorResponse {
    error_code: i64,
}

/// A client of a Confluent Schema Registry (or a compatible one: Karapace,
/// Redpanda, Apicurio's ccompat API), for looking up writer schemas by the
/// id in the wire-format header.
///
/// Every answer about an id is cached in memory (see the
/// [module docs](self)), so the registry is asked about each id at most once
/// unless it was unreachable. `Send + Sync`; share one behind an `Arc`.
/// `Debug` shows the base URL, never the credentials.
pub struct SchemaRegistry {
    client: reqwest::Client,
    base_url: String,
    auth: Option<BasicAuth>,
    timeout: Duration,
    cache: Mutex<HashMap<u32, Arc<Slot>>>,
}

impl fmt::Debug for SchemaRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SchemaRegistry")
            .field("base_url", &self.base_url)
            .field("auth", &self.auth)
            .field("timeout", &self.timeout)
            .field(
                "cached_ids",
                &self.lock_cache().values().filter(|s| s.lookup.initialized()).count(),
            )
            .finish()
    }
}

impl SchemaRegistry {
    /// A client of the registry at `base_url` (e.g. `https://sr.example:8081`
    /// or with a path prefix), with optional basic auth and
    /// [`DEFAULT_TIMEOUT`]. No request is made here.
    ///
    /// The URL must be http(s) without credentials, query or fragment
    /// ([`RegistryError::InvalidUrl`]); credentials go in `auth`.
    pub fn new(base_url: &str, auth: Option<BasicAuth>) -> Result<SchemaRegistry, RegistryError> {
        SchemaRegistry::with_timeout(base_url, auth, DEFAULT_TIMEOUT)
    }

    /// As [`SchemaRegistry::new`], with `timeout` for connecting and for each
    /// whole request instead of [`DEFAULT_TIMEOUT`].
    pub fn with_timeout(
        base_url: &str,
        auth: Option<BasicAuth>,
        timeout: Duration,
    ) -> Result<SchemaRegistry, RegistryError> {
        let url = Url::parse(base_url.trim()).map_err(|e| RegistryError::InvalidUrl {
            // The parse error only: the text may hold a password.
            detail: e.to_string(),
        })?;
        let invalid = |what: &str| {
            let mut shown = url.clone();
            let _ = shown.set_username("");
            let _ = shown.set_password(None);
            shown.set_query(None);
            shown.set_fragment(None);
            RegistryError::InvalidUrl {
                detail: format!("{shown}: {what}"),
            }
        };
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(invalid("the scheme must be http or https"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid("credentials in the URL are not accepted, pass BasicAuth"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid("a query or fragment is not accepted"));
        }
        if url.cannot_be_a_base() || url.host().is_none() {
            return Err(invalid("not a base URL with a host"));
        }
        let client = reqwest::Client::builder()
            .connect_timeout(timeout)
            .timeout(timeout)
            .user_agent(concat!("posture-avro/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| RegistryError::Client {
                detail: error_chain(&e.without_url()),
            })?;
        Ok(SchemaRegistry {
            client,
            base_url: url.as_str().trim_end_matches('/').to_owned(),
            auth,
            timeout,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The base URL, normalised (no trailing `/`): for logs.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The writer schema registered under `id` (`GET {base}/schemas/ids/{id}`),
    /// parsed. Cached: a schema, or a permanent failure (not found, not Avro,
    /// unparsable), is fetched once; retryable failures are not cached.
    /// Concurrent calls for the same id share one request.
    pub async fn schema(&self, id: u32) -> Result<Arc<Schema>, RegistryError> {
        self.schema_in(&self.slot(id), id).await
    }

    async fn schema_in(&self, slot: &Slot, id: u32) -> Result<Arc<Schema>, RegistryError> {
        match slot.lookup.get_or_try_init(|| self.fetch(id)).await? {
            Lookup::Found(schema) => Ok(Arc::clone(schema)),
            Lookup::Failed(e) => Err(e.clone()),
        }
    }

    /// Whether, and how, records with schema id `id` can be decoded:
    /// [`SchemaRegistry::schema`] then [`check_config_change`], with the
    /// verdict cached and the reason naming the id. `Err` only for a failed
    /// lookup: retryable ones ([`RegistryError::is_retryable`]) mean "ask
    /// again later", the others that the id can never be decoded.
    pub async fn resolve(&self, id: u32) -> Result<Compatibility, RegistryError> {
        let slot = self.slot(id);
        let schema = self.schema_in(&slot, id).await?;
        Ok(slot
            .compatibility
            .get_or_init(|| check_as(&schema, &format!("schema id {id}")))
            .clone())
    }

    /// Registers `schema` (Avro schema text) under `subject`
    /// (`POST {base}/subjects/{subject}/versions`) and returns its global id:
    /// how posture publishes the schemas of its output topics, under
    /// `<topic>-value` (TopicNameStrategy). Registering a schema the subject
    /// already has returns its existing id. The registry checks the subject's
    /// compatibility setting first: a refusal is
    /// [`RegistryError::Rejected`]; transport and other HTTP failures are
    /// retryable. Not cached.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        if subject.is_empty()
            || !subject
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(RegistryError::InvalidUrl {
                detail: format!(
                    "subject {subject:?}: only letters, digits, '.', '_' and '-' (a topic name and -value)"
                ),
            });
        }
        let url = format!("{}/subjects/{subject}/versions", self.base_url);
        let body = serde_json::json!({ "schema": schema, "schemaType": "AVRO" }).to_string();
        let mut req = self
            .client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/vnd.schemaregistry.v1+json")
            .header(
                reqwest::header::ACCEPT,
                "application/vnd.schemaregistry.v1+json, application/json; qs=0.5",
            )
            .body(body);
        if let Some(auth) = &self.auth {
            req = req.basic_auth(&auth.username, Some(&auth.password));
        }
        let resp = req.send().await.map_err(|e| self.transport(&url, e))?;
        let status = resp.status();
        let body = self.read_body(&url, resp).await?;
        if status == StatusCode::CONFLICT || status == StatusCode::UNPROCESSABLE_ENTITY {
            return Err(RegistryError::Rejected {
                url,
                status: status.as_u16(),
                detail: snippet(&body),
            });
        }
        if !status.is_success() {
            return Err(RegistryError::Http {
                url,
                status: status.as_u16(),
                detail: snippet(&body),
            });
        }
        #[derive(Deserialize)]
        struct Registered {
            id: u32,
        }
        serde_json::from_slice::<Registered>(&body)
            .map(|r| r.id)
            .map_err(|e| RegistryError::BadResponse {
                url,
                detail: format!("not a registration response ({e}): {}", snippet(&body)),
            })
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Arc<Slot>>> {
        // The lock is never held across a panic-prone call; recover anyway.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn slot(&self, id: u32) -> Arc<Slot> {
        Arc::clone(self.lock_cache().entry(id).or_default())
    }

    /// One request. `Ok` holds a cacheable answer; `Err` a retryable failure.
    async fn fetch(&self, id: u32) -> Result<Lookup, RegistryError> {
        let url = format!("{}/schemas/ids/{id}", self.base_url);
        let mut req = self.client.get(&url).header(
            reqwest::header::ACCEPT,
            "application/vnd.schemaregistry.v1+json, application/vnd.schemaregistry+json; qs=0.9, application/json; qs=0.5",
        );
        if let Some(auth) = &self.auth {
            req = req.basic_auth(&auth.username, Some(&auth.password));
        }
        let resp = req.send().await.map_err(|e| self.transport(&url, e))?;
        let status = resp.status();
        let body = self.read_body(&url, resp).await?;
        if status == StatusCode::NOT_FOUND {
            if let Ok(ErrorResponse { error_code: 40403 }) = serde_json::from_slice(&body) {
                return Ok(Lookup::Failed(RegistryError::NotFound { id }));
            }
        }
        if !status.is_success() {
            return Err(RegistryError::Http {
                url,
                status: status.as_u16(),
                detail: snippet(&body),
            });
        }
        let parsed: SchemaResponse = serde_json::from_slice(&body).map_err(|e| RegistryError::BadResponse {
            url: url.clone(),
            detail: format!("not a schema response ({e})"),
        })?;
        if let Some(t) = parsed.schema_type.as_deref() {
            if !t.eq_ignore_ascii_case("AVRO") {
                return Ok(Lookup::Failed(RegistryError::NotAvro {
                    id,
                    schema_type: t.chars().take(40).collect(),
                }));
            }
        }
        Ok(match crate::resolve::parse_writer_schema(&parsed.schema) {
            Ok(schema) => Lookup::Found(Arc::new(schema)),
            Err(e) => {
                let mut detail = e.to_string();
                if !parsed.references.is_empty() {
                    detail.push_str(" (the schema has references, which are not supported)");
                }
                Lookup::Failed(RegistryError::BadSchema { id, detail })
            }
        })
    }

    async fn read_body(&self, url: &str, mut resp: reqwest::Response) -> Result<Vec<u8>, RegistryError> {
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.transport(url, e))? {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(RegistryError::BadResponse {
                    url: url.to_owned(),
                    detail: format!("response body larger than {MAX_RESPONSE_BYTES} bytes"),
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    fn transport(&self, url: &str, e: reqwest::Error) -> RegistryError {
        let detail = if e.is_timeout() {
            format!("timed out after {:?}", self.timeout)
        } else {
            error_chain(&e.without_url())
        };
        RegistryError::Transport {
            url: url.to_owned(),
            detail,
        }
    }
}

/// An error and its sources, `: `-separated (reqwest's own `Display` is often
/// just "error sending request").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// The start of a response body, for error messages.
fn snippet(body: &[u8]) -> String {
    const MAX: usize = 200;
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(empty body)".to_owned();
    }
    match text.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_owned(),
    }
}
