//! The production decoder of the pipeline ([`posture_stage::Decode`]): the Confluent wire
//! format through the hot-path [`WireDecoder`], with a schema registry's policy for schema ids it
//! does not know yet.

use crate::registry::{Compatibility, SchemaRegistry, INCOMPATIBLE_SCHEMA};
use crate::{DecodeError, WireDecoder};
use posture_core::ConfigChange;
use posture_stage::{Decode, Undecodable};
use std::collections::HashMap;
use std::time::Duration;

/// A decoder of Confluent-framed Avro `ConfigChange` records; `schema_ids`
/// limits the accepted schema ids (`None`: any).
pub fn avro_decoder(schema_ids: Option<Vec<u32>>) -> impl FnMut(&[u8]) -> Result<ConfigChange, Undecodable> {
    let decoder = WireDecoder::new(schema_ids);
    move |bytes| decoder.decode(bytes).map_err(undecodable)
}

/// The production decoder: the hot-path [`WireDecoder`], and optionally a
/// Confluent Schema Registry that is asked once about every schema id the
/// decoder does not know. An id whose writer schema is the embedded
/// `ConfigChange` schema is then read by the hot path, and one whose writer
/// schema resolves into it by its [`ResolutionPlan`](crate::resolve::ResolutionPlan);
/// any other answer (a schema that cannot be read, not found, not Avro)
/// dead-letters the id's records with the reason, which names the field. While the registry is unreachable the lookup is retried with
/// backoff for up to `registry_patience`, then the record is dead-lettered
/// as `registry_unavailable`; for [`REGISTRY_DOWN_PAUSE`] after that, records
/// of unknown ids are dead-lettered the same way at once (one stall, not one
/// per record), and then one lookup, without retries, says whether it is back.
///
/// Hostile ids are bounded: refusals are remembered for at most
/// [`MAX_REMEMBERED_IDS`] ids (the oldest forgotten first), and at most
/// [`MAX_LOOKUPS_PER_MINUTE`] lookups are made per minute; past that, records
/// of ids not yet known are dead-lettered as `unknown_schema_id` without one.
pub struct AvroDecoder {
    wire: WireDecoder,
    registry: Option<SchemaRegistry>,
    refused: HashMap<u32, (&'static str, String)>,
    /// The ids of `refused`, oldest first (to forget the oldest when full).
    refused_order: std::collections::VecDeque<u32>,
    /// Why the last lookup failed without being remembered (registry down, over budget).
    transient: Option<(u32, &'static str, String)>,
    /// Until when unknown ids are dead-lettered without a lookup: the registry was down.
    down_until: Option<std::time::Instant>,
    /// When the lookups of the last minute were made.
    lookups: std::collections::VecDeque<std::time::Instant>,
    registry_patience: Duration,
    registry_pause: Duration,
}

/// At most this many refused schema ids are remembered (each record of a refused id is then
/// dead-lettered without a lookup); beyond, the oldest are forgotten (and asked about again).
pub const MAX_REMEMBERED_IDS: usize = 10_000;
/// At most this many schema registry lookups per minute: a producer writing random schema ids
/// costs one lookup each, so past this budget their records are dead-lettered without one.
pub const MAX_LOOKUPS_PER_MINUTE: usize = 1_000;
/// After the registry was found unreachable, how long unknown ids are dead-lettered as
/// `registry_unavailable` without asking it.
pub const REGISTRY_DOWN_PAUSE: Duration = Duration::from_secs(30);

impl AvroDecoder {
    /// Accepts `schema_ids` (`None`: any id, unless a registry is given, in
    /// which case the ids it approves).
    pub fn new(schema_ids: Option<Vec<u32>>, registry: Option<SchemaRegistry>) -> AvroDecoder {
        let ids = match (&registry, schema_ids) {
            (Some(_), ids) => Some(ids.unwrap_or_default()),
            (None, ids) => ids,
        };
        AvroDecoder {
            wire: WireDecoder::new(ids),
            registry,
            refused: HashMap::new(),
            refused_order: std::collections::VecDeque::new(),
            transient: None,
            down_until: None,
            lookups: std::collections::VecDeque::new(),
            registry_patience: Duration::from_secs(60),
            registry_pause: REGISTRY_DOWN_PAUSE,
        }
    }

    /// How long a lookup is retried while the registry is unreachable.
    pub fn with_registry_patience(mut self, patience: Duration) -> AvroDecoder {
        self.registry_patience = patience;
        self
    }

    /// How long unknown ids are dead-lettered without a lookup after the registry was found
    /// unreachable (default [`REGISTRY_DOWN_PAUSE`]).
    pub fn with_registry_pause(mut self, pause: Duration) -> AvroDecoder {
        self.registry_pause = pause;
        self
    }

    /// How many refused ids are remembered (at most [`MAX_REMEMBERED_IDS`]).
    pub fn remembered_refusals(&self) -> usize {
        self.refused.len()
    }

    fn remember_refusal(&mut self, id: u32, reason: &'static str, detail: String) {
        if self.refused.insert(id, (reason, detail)).is_none() {
            self.refused_order.push_back(id);
            while self.refused_order.len() > MAX_REMEMBERED_IDS {
                if let Some(old) = self.refused_order.pop_front() {
                    self.refused.remove(&old);
                }
            }
        }
    }

    /// Whether one more lookup fits the budget of the last minute (and counts it if so).
    fn lookup_allowed(&mut self, now: std::time::Instant) -> bool {
        while self
            .lookups
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
        {
            self.lookups.pop_front();
        }
        if self.lookups.len() >= MAX_LOOKUPS_PER_MINUTE {
            return false;
        }
        self.lookups.push_back(now);
        true
    }
}

impl AvroDecoder {
    /// Why a record is refused: the registry's reason for a refused schema
    /// id, or the decoder's error.
    fn refusal(&self, e: DecodeError) -> Undecodable {
        match e {
            DecodeError::UnknownSchemaId { id } if self.refused.contains_key(&id) => {
                let (reason, detail) = &self.refused[&id];
                Undecodable {
                    reason,
                    detail: detail.clone(),
                    unknown_schema_id: None,
                }
            }
            DecodeError::UnknownSchemaId { id } if self.transient.as_ref().is_some_and(|t| t.0 == id) => {
                // Not remembered: the id stays unknown, so the next record of it asks `learn`
                // again (which answers at once during the pause or over the budget, and looks
                // it up once the registry is back).
                let (_, reason, detail) = self.transient.as_ref().expect("checked");
                Undecodable {
                    reason,
                    detail: detail.clone(),
                    unknown_schema_id: Some(id),
                }
            }
            e => undecodable(e),
        }
    }
}

impl Decode for AvroDecoder {
    fn decode(&mut self, bytes: &[u8]) -> Result<ConfigChange, Undecodable> {
        self.wire.decode(bytes).map_err(|e| self.refusal(e))
    }

    fn decode_into(&mut self, bytes: &[u8], ev: &mut ConfigChange) -> Result<(), Undecodable> {
        self.wire.decode_into(bytes, ev).map_err(|e| self.refusal(e))
    }

    async fn learn(&mut self, schema_id: u32) -> bool {
        if self.registry.is_none() {
            return false;
        }
        self.transient = None;
        let started = std::time::Instant::now();
        // Just found down: no lookup until the pause is over, then one without retries.
        let patience = match self.down_until {
            Some(until) if started < until => {
                self.transient = Some((
                    schema_id,
                    posture_stage::reasons::REGISTRY_UNAVAILABLE,
                    format!(
                        "schema id {schema_id} not looked up: the schema registry was unreachable less than {} s ago",
                        self.registry_pause.as_secs()
                    ),
                ));
                return false;
            }
            Some(_) => Duration::ZERO,
            None => self.registry_patience,
        };
        if !self.lookup_allowed(started) {
            self.transient = Some((
                schema_id,
                posture_stage::reasons::UNKNOWN_SCHEMA_ID,
                format!(
                    "schema id {schema_id} not looked up: more than {MAX_LOOKUPS_PER_MINUTE} schema registry lookups in the last minute"
                ),
            ));
            return false;
        }
        let registry = self.registry.as_ref().expect("checked");
        let mut attempt = 0;
        loop {
            match registry.resolve(schema_id).await {
                Ok(Compatibility::Identical) => {
                    self.down_until = None;
                    self.wire.allow(schema_id);
                    return true;
                }
                Ok(Compatibility::Resolvable(plan)) => {
                    self.down_until = None;
                    tracing::info!(
                        "schema id {schema_id}: another writer schema, read by Avro schema resolution ({})",
                        plan.summary()
                    );
                    self.wire.allow_resolved(schema_id, plan);
                    return true;
                }
                Ok(Compatibility::Incompatible(reason)) => {
                    self.down_until = None;
                    self.remember_refusal(schema_id, INCOMPATIBLE_SCHEMA, reason);
                    return false;
                }
                Err(e) if e.is_retryable() && started.elapsed() < patience => {
                    attempt += 1;
                    tracing::warn!(
                        "schema registry lookup of id {schema_id} failed (attempt {attempt}), retrying: {e}"
                    );
                    tokio::time::sleep(posture_stage::STATE_RETRY.backoff(attempt)).await;
                }
                Err(e) if e.is_retryable() => {
                    // Not remembered: a record with this id asks again once the pause is over.
                    tracing::error!(
                        "schema registry unavailable for id {schema_id}, dead-lettering (and every unknown id for {} s): {e}",
                        self.registry_pause.as_secs()
                    );
                    self.down_until = Some(std::time::Instant::now() + self.registry_pause);
                    self.transient = Some((schema_id, e.reason(), e.to_string()));
                    return false;
                }
                Err(e) => {
                    self.down_until = None;
                    self.remember_refusal(schema_id, e.reason(), e.to_string());
                    return false;
                }
            }
        }
    }
}

/// The ingest loop's view of an Avro decode error.
pub fn undecodable(e: DecodeError) -> Undecodable {
    Undecodable {
        reason: e.reason(),
        unknown_schema_id: match e {
            DecodeError::UnknownSchemaId { id } => Some(id),
            _ => None,
        },
        detail: e.to_string(),
    }
}
