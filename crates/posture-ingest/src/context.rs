//! The consumer's rdkafka context: rebalance callbacks (revoked partitions noted for the loop,
//! assignments logged) and librdkafka's statistics (consumer lag).

use posture_metrics::Metrics;
use std::sync::Arc;

/// The consumer's context: notes revoked partitions, which the loop drops
/// before it writes anything more (the callback runs inside `recv`).
#[derive(Default)]
pub struct IngestContext {
    pub(crate) revoked: std::sync::Mutex<Vec<i32>>,
    pub(crate) metrics: std::sync::OnceLock<Arc<Metrics>>,
}

impl rdkafka::ClientContext for IngestContext {
    /// librdkafka's statistics (every `statistics.interval.ms`): the
    /// consumer lag of each assigned partition.
    fn stats(&self, statistics: rdkafka::Statistics) {
        let Some(m) = self.metrics.get() else {
            return;
        };
        for (topic, t) in &statistics.topics {
            for (&partition, p) in &t.partitions {
                if partition >= 0 && p.consumer_lag >= 0 {
                    m.set_consumer_lag(topic, partition, p.consumer_lag);
                }
            }
        }
    }
}

impl rdkafka::consumer::ConsumerContext for IngestContext {
    fn pre_rebalance(&self, _: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &rdkafka::consumer::Rebalance<'_>) {
        if let rdkafka::consumer::Rebalance::Revoke(tpl) = rebalance {
            let mut r = self.revoked.lock().expect("not poisoned");
            r.extend(tpl.elements().iter().map(|e| e.partition()));
        }
    }

    fn post_rebalance(&self, _: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &rdkafka::consumer::Rebalance<'_>) {
        if let rdkafka::consumer::Rebalance::Assign(tpl) = rebalance {
            let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            if partitions.is_empty() {
                tracing::info!("the consumer group assigned no partition to this instance");
            } else {
                tracing::info!("the consumer group assigned partitions {partitions:?}");
            }
        }
    }
}
