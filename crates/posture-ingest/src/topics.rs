//! Kafka clients: the one place their configuration starts ([`client_config`]), and topic
//! administration (create posture's topics when they are missing).

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;
use std::time::Duration;

/// The configuration every Kafka client of posture starts from: the bootstrap servers, then
/// the client's own `defaults`, then `extra` (the security settings, SASL included, and any
/// properties the operator gave, which thus override the defaults). Every consumer, producer
/// and admin client is made here, so none can miss the security settings.
pub fn client_config(brokers: &str, defaults: &[(&str, &str)], extra: &[(String, String)]) -> ClientConfig {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", brokers);
    for (k, v) in defaults {
        cc.set(*k, *v);
    }
    for (k, v) in extra {
        cc.set(k, v);
    }
    cc
}

/// Why a topic could not be made ready.
#[derive(Debug, thiserror::Error)]
#[error("topic {topic} at {brokers}: {detail}")]
pub struct TopicError {
    /// The topic concerned.
    pub topic: String,
    /// The Kafka bootstrap servers.
    pub brokers: String,
    /// What failed: creating the client, the metadata request, creating the topic, reading it.
    pub detail: String,
}

/// Creates `topic` with `partitions` partitions (replication 1 unless the
/// broker's default applies) unless it exists. Returns whether it was
/// created. `extra` are librdkafka properties (security settings).
pub async fn ensure_topic(
    brokers: &str,
    topic: &str,
    partitions: i32,
    extra: &[(String, String)],
) -> Result<bool, TopicError> {
    let err = |detail: String| TopicError {
        topic: topic.to_string(),
        brokers: brokers.to_string(),
        detail,
    };
    let admin: AdminClient<DefaultClientContext> = client_config(brokers, &[], extra)
        .create()
        .map_err(|e| err(format!("cannot create an admin client: {e}")))?;
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .map_err(|e| err(format!("create topic: {e}")))?;
    match results.into_iter().next() {
        Some(Ok(_)) => Ok(true),
        Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) | None => Ok(false),
        Some(Err((_, e))) => Err(err(format!("create topic: {e}"))),
    }
}

/// The number of partitions of `topic`, or `None` when it does not exist.
/// Blocking (metadata request); call it from a blocking context or at
/// start-up.
pub fn partition_count(brokers: &str, topic: &str, extra: &[(String, String)]) -> Result<Option<i32>, TopicError> {
    let err = |detail: String| TopicError {
        topic: topic.to_string(),
        brokers: brokers.to_string(),
        detail,
    };
    let consumer: BaseConsumer = client_config(brokers, &[("allow.auto.create.topics", "false")], extra)
        .create()
        .map_err(|e| err(format!("cannot create a client: {e}")))?;
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| err(format!("metadata: {e}")))?;
    Ok(md
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len() as i32)
        .filter(|&n| n > 0))
}

/// Every record of `topic` as it is now, without a consumer group: each partition read from its
/// start up to the high watermark it had when this was called, and on until nothing arrives for
/// `idle` (Tansu 0.6 reports a high watermark inside the last batch when it holds several
/// records: reading only up to it would miss the rest of the batch); at most `limit`. Blocking.
pub fn read_to_end(
    brokers: &str,
    extra: &[(String, String)],
    topic: &str,
    idle: Duration,
    limit: Duration,
) -> Result<Vec<rdkafka::message::OwnedMessage>, TopicError> {
    use rdkafka::message::Message;
    let err = |detail: String| TopicError {
        topic: topic.to_string(),
        brokers: brokers.to_string(),
        detail,
    };
    let defaults = [
        ("group.id", "posture-read-to-end"),
        ("enable.auto.commit", "false"),
        // An offset deleted by retention meanwhile: start at the earliest still there.
        ("auto.offset.reset", "earliest"),
    ];
    let consumer: BaseConsumer = client_config(brokers, &defaults, extra)
        .create()
        .map_err(|e| err(format!("cannot create a client: {e}")))?;
    let timeout = Duration::from_secs(10);
    let md = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| err(format!("metadata: {e}")))?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    let mut ends = std::collections::BTreeMap::new();
    for t in md.topics().iter().filter(|t| t.name() == topic) {
        for p in t.partitions() {
            let (low, high) = consumer
                .fetch_watermarks(topic, p.id(), timeout)
                .map_err(|e| err(format!("watermarks of partition {}: {e}", p.id())))?;
            if high > low {
                tpl.add_partition_offset(topic, p.id(), rdkafka::Offset::Offset(low))
                    .map_err(|e| err(e.to_string()))?;
                ends.insert(p.id(), high);
            }
        }
    }
    let mut out = Vec::new();
    if ends.is_empty() {
        return Ok(out);
    }
    consumer.assign(&tpl).map_err(|e| err(format!("assign: {e}")))?;
    let deadline = std::time::Instant::now() + limit;
    let mut idle_since = std::time::Instant::now();
    while !ends.is_empty() || idle_since.elapsed() < idle {
        if std::time::Instant::now() > deadline {
            if ends.is_empty() {
                // Every partition was read to its end; records still coming are new ones.
                break;
            }
            return Err(err(format!("partitions {ends:?} not read to their end in {limit:?}")));
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                idle_since = std::time::Instant::now();
                if ends.get(&m.partition()).is_some_and(|&end| m.offset() + 1 >= end) {
                    ends.remove(&m.partition());
                }
                out.push(m.detach());
            }
            Some(Err(e)) => return Err(err(format!("reading: {e}"))),
            None => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_config_puts_security_and_operator_properties_last() {
        let extra = vec![
            ("security.protocol".to_string(), "sasl_ssl".to_string()),
            ("sasl.username".to_string(), "svc".to_string()),
            ("linger.ms".to_string(), "50".to_string()),
        ];
        let cc = client_config("k:9092", &[("linger.ms", "5"), ("acks", "all")], &extra);
        assert_eq!(cc.get("bootstrap.servers"), Some("k:9092"));
        assert_eq!(cc.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(cc.get("sasl.username"), Some("svc"));
        assert_eq!(cc.get("acks"), Some("all"), "a default");
        assert_eq!(
            cc.get("linger.ms"),
            Some("50"),
            "the operator's property wins over a default"
        );
    }
}
