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
    pub topic: String,
    pub brokers: String,
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
