//! The emit stage: Avro records to Kafka, written durably before offsets are
//! committed.
//!
//! * `posture.score-deltas`: one `posture.v1.ScoreDelta` per transition,
//!   keyed by device, carrying its lineage (source partition and offset).
//! * `posture.dead-letter`: every input record that could not be used
//!   (undecodable bytes, an unknown schema id, invalid content), with its
//!   original key and bytes and the reason in headers.
//!
//! Every record of both carries its **dedup key** in headers ([`lineage_headers`]):
//! `posture.dedup-key` = `<source topic>/<source partition>/<source offset>/<seq>`, `seq`
//! numbering the records one input record caused (from 0; a dead letter is always 0; a score
//! delta's is the `seq` of its `transitions` row in ClickHouse). A replay after a crash (the
//! records since the last snapshot are evaluated again) produces the same records with the same
//! keys, so a consumer that keeps the keys it has seen sees each output once. Kafka
//! transactions would make that unnecessary, but the shipped broker has none.
//!
//! The producer is idempotent (`enable.idempotence=true`, `acks=all`):
//! librdkafka's own retries never duplicate or reorder a record within a
//! partition. [`KafkaStage::flush`] waits for every delivery report; records
//! whose delivery failed are sent again (with backoff) until they are
//! acknowledged or the attempts run out, and only then may the ingest loop
//! commit.

use crate::{DeadLetter, Stage};
use posture_core::{Engine, Output, SourcePos};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use std::time::Duration;

/// The waits between attempts to deliver records again: 400 ms doubling to 6.4 s (the number
/// of attempts is [`EmitConfig::attempts`]).
const RESEND: posture_stage::RetryPolicy = posture_stage::RetryPolicy {
    max_attempts: u32::MAX,
    initial_backoff: Duration::from_millis(400),
    multiplier: 2.0,
    max_backoff: Duration::from_millis(6_400),
    timeout: None,
};

/// Where the emit stage writes. An empty topic name turns that output off.
#[derive(Clone, Debug)]
pub struct EmitConfig {
    /// Kafka bootstrap servers.
    pub brokers: String,
    /// Topic of `ScoreDelta` records (SPEC default `posture.score-deltas`).
    pub score_deltas_topic: String,
    /// Topic of dead letters (default `posture.dead-letter`).
    pub dead_letter_topic: String,
    /// Schema id written in the wire-format header of `ScoreDelta` records.
    pub score_delta_schema_id: u32,
    /// The input topic's name, written into dead-letter headers.
    pub source_topic: String,
    /// Attempts per record when delivery fails (librdkafka retries inside
    /// each attempt until `message.timeout.ms`).
    pub attempts: u32,
    /// Extra librdkafka producer properties (security settings).
    pub extra: Vec<(String, String)>,
}

impl EmitConfig {
    /// The SPEC's topic names, schema id 2 for `ScoreDelta`, 5 attempts.
    pub fn new(brokers: impl Into<String>, source_topic: impl Into<String>) -> EmitConfig {
        EmitConfig {
            brokers: brokers.into(),
            score_deltas_topic: "posture.score-deltas".into(),
            dead_letter_topic: "posture.dead-letter".into(),
            score_delta_schema_id: 2,
            source_topic: source_topic.into(),
            attempts: 5,
            extra: Vec::new(),
        }
    }
}

/// Why an emit flush failed.
#[derive(Debug, thiserror::Error)]
pub enum EmitError {
    /// The idempotent producer could not be created (e.g. an invalid property in
    /// [`EmitConfig::extra`]).
    #[error("cannot create the Kafka producer for {brokers}: {source}")]
    Create {
        /// The Kafka bootstrap servers.
        brokers: String,
        /// What librdkafka reported.
        #[source]
        source: KafkaError,
    },
    /// Records were still not acknowledged after [`EmitConfig::attempts`] attempts. They stay
    /// pending, so the ingest loop does not commit the offsets they came from.
    #[error("{failed} record(s) to {topic} at {brokers} not delivered after {attempts} attempts: {last}")]
    Undelivered {
        /// Records not delivered, both topics together.
        failed: usize,
        /// The topic of the first of them.
        topic: String,
        /// The Kafka bootstrap servers.
        brokers: String,
        /// Attempts made per record.
        attempts: u32,
        /// The last delivery error, as librdkafka reported it.
        last: String,
    },
}

/// Which topic a pending record goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Topic {
    ScoreDeltas,
    DeadLetter,
}

/// A record sent but not yet acknowledged.
struct Pending {
    topic: Topic,
    key: Vec<u8>,
    payload: Vec<u8>,
    headers: Option<OwnedHeaders>,
    delivery: Option<DeliveryFuture>,
}

/// Counters of the emit stage.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EmitStats {
    /// `ScoreDelta` records acknowledged by the broker.
    pub score_deltas: u64,
    /// Dead letters acknowledged by the broker.
    pub dead_letters: u64,
    /// Records sent again after a failed delivery.
    pub resent: u64,
}

/// A [`Stage`] producing `ScoreDelta` records and dead letters.
pub struct KafkaStage {
    cfg: EmitConfig,
    producer: FutureProducer,
    pending: Vec<Pending>,
    stats: EmitStats,
    metrics: Option<std::sync::Arc<posture_metrics::Metrics>>,
}

/// The lineage headers of an output record caused by the input record at `source` of
/// `source_topic`, the `seq`-th output of that record (from 0): `posture.source.topic`,
/// `.partition`, `.offset`, `.seq`, and `posture.dedup-key`, all four joined by `/` (Kafka topic
/// names cannot contain `/`). The key is stable across replays: the same input gives the same
/// outputs in the same order.
pub fn lineage_headers(source_topic: &str, source: SourcePos, seq: u32) -> OwnedHeaders {
    let (partition, offset, seq) = (source.partition.to_string(), source.offset.to_string(), seq.to_string());
    let key = format!("{source_topic}/{partition}/{offset}/{seq}");
    OwnedHeaders::new_with_capacity(5)
        .insert(Header {
            key: "posture.source.topic",
            value: Some(source_topic),
        })
        .insert(Header {
            key: "posture.source.partition",
            value: Some(&partition),
        })
        .insert(Header {
            key: "posture.source.offset",
            value: Some(&offset),
        })
        .insert(Header {
            key: "posture.source.seq",
            value: Some(&seq),
        })
        .insert(Header {
            key: DEDUP_KEY_HEADER,
            value: Some(&key),
        })
}

/// The header that holds an output record's dedup key (see [`lineage_headers`]).
pub const DEDUP_KEY_HEADER: &str = "posture.dedup-key";

impl KafkaStage {
    /// Creates the idempotent producer.
    pub fn new(cfg: EmitConfig) -> Result<KafkaStage, EmitError> {
        let defaults = [
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("linger.ms", "5"),
            ("compression.type", "lz4"),
        ];
        let producer = crate::topics::client_config(&cfg.brokers, &defaults, &cfg.extra)
            .create()
            .map_err(|source| EmitError::Create {
                brokers: cfg.brokers.clone(),
                source,
            })?;
        Ok(KafkaStage {
            cfg,
            producer,
            pending: Vec::new(),
            stats: EmitStats::default(),
            metrics: None,
        })
    }

    /// Reports the records acknowledged per topic.
    pub fn with_metrics(mut self, metrics: std::sync::Arc<posture_metrics::Metrics>) -> KafkaStage {
        self.metrics = Some(metrics);
        self
    }

    /// Counters so far.
    pub fn stats(&self) -> &EmitStats {
        &self.stats
    }

    fn topic_name(&self, t: Topic) -> &str {
        match t {
            Topic::ScoreDeltas => &self.cfg.score_deltas_topic,
            Topic::DeadLetter => &self.cfg.dead_letter_topic,
        }
    }

    /// Hands a pending record to librdkafka (which copies it). A full local
    /// queue is waited out by polling: the stage never drops a record.
    fn send(&self, p: &mut Pending) -> Result<(), KafkaError> {
        loop {
            let mut rec = FutureRecord::to(self.topic_name(p.topic))
                .key(&p.key)
                .payload(&p.payload);
            if let Some(h) = &p.headers {
                rec = rec.headers(h.clone());
            }
            match self.producer.send_result(rec) {
                Ok(f) => {
                    p.delivery = Some(f);
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    self.producer.poll(Duration::from_millis(20));
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    fn push(&mut self, topic: Topic, key: Vec<u8>, payload: Vec<u8>, headers: Option<OwnedHeaders>) {
        let mut p = Pending {
            topic,
            key,
            payload,
            headers,
            delivery: None,
        };
        // A record that cannot even be queued (e.g. larger than
        // message.max.bytes) is retried in flush, which reports it.
        let _ = self.send(&mut p);
        self.pending.push(p);
    }
}

impl Stage for KafkaStage {
    type Error = EmitError;

    fn absorb(&mut self, engine: &Engine, out: &Output) {
        if self.cfg.score_deltas_topic.is_empty() {
            return;
        }
        // Every transition one input record causes (its exception catch-up included) comes in
        // one output, so `seq` numbers them here from 0, as the sink numbers its rows.
        let mut last: Option<(SourcePos, u32)> = None;
        for t in &out.transitions {
            let mut payload = Vec::with_capacity(160);
            posture_avro::encode_engine_delta_into(
                engine,
                t,
                out.deltas_of(t),
                self.cfg.score_delta_schema_id,
                &mut payload,
            );
            let key = engine.device_name(t.device).as_bytes().to_vec();
            let seq = match last {
                Some((pos, seq)) if pos == t.source => seq + 1,
                _ => 0,
            };
            last = Some((t.source, seq));
            let headers = lineage_headers(&self.cfg.source_topic, t.source, seq);
            self.push(Topic::ScoreDeltas, key, payload, Some(headers));
        }
    }

    fn dead_letter(&mut self, d: &DeadLetter<'_>) {
        if self.cfg.dead_letter_topic.is_empty() {
            return;
        }
        let source = SourcePos {
            partition: d.partition,
            offset: d.offset,
        };
        let headers = lineage_headers(&self.cfg.source_topic, source, 0)
            .insert(Header {
                key: "posture.reason",
                value: Some(d.reason),
            })
            .insert(Header {
                key: "posture.error",
                value: Some(d.detail),
            });
        self.push(
            Topic::DeadLetter,
            d.key.unwrap_or_default().to_vec(),
            d.payload.to_vec(),
            Some(headers),
        );
    }

    fn pending_rows(&self) -> usize {
        self.pending.len()
    }

    async fn flush(&mut self) -> Result<(), EmitError> {
        let mut attempt = 1;
        loop {
            let mut failed: Vec<Pending> = Vec::new();
            let mut last = String::new();
            for mut p in std::mem::take(&mut self.pending) {
                let outcome = match p.delivery.take() {
                    Some(f) => match f.await {
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err((e, _))) => Err(e.to_string()),
                        Err(_) => Err("delivery report lost (producer closed)".to_string()),
                    },
                    None => Err("not queued".to_string()),
                };
                match outcome {
                    Ok(()) => {
                        let kind = match p.topic {
                            Topic::ScoreDeltas => {
                                self.stats.score_deltas += 1;
                                posture_metrics::TopicKind::ScoreDeltas
                            }
                            Topic::DeadLetter => {
                                self.stats.dead_letters += 1;
                                posture_metrics::TopicKind::DeadLetter
                            }
                        };
                        if let Some(m) = &self.metrics {
                            m.kafka_produced(kind, 1);
                        }
                    }
                    Err(e) => {
                        last = e;
                        failed.push(p);
                    }
                }
            }
            if failed.is_empty() {
                return Ok(());
            }
            if attempt >= self.cfg.attempts {
                let topic = self.topic_name(failed[0].topic).to_string();
                let n = failed.len();
                self.pending = failed;
                return Err(EmitError::Undelivered {
                    failed: n,
                    topic,
                    brokers: self.cfg.brokers.clone(),
                    attempts: attempt,
                    last,
                });
            }
            tracing::warn!(
                "{} record(s) not delivered (attempt {attempt} of {}), sending again: {last}",
                failed.len(),
                self.cfg.attempts
            );
            tokio::time::sleep(RESEND.backoff(attempt)).await;
            attempt += 1;
            for p in &mut failed {
                self.stats.resent += 1;
                if let Err(e) = self.send(p) {
                    last = e.to_string();
                }
            }
            self.pending = failed;
        }
    }
}

impl Drop for KafkaStage {
    fn drop(&mut self) {
        let _ = self.producer.flush(Duration::from_secs(5));
    }
}
