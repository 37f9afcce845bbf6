//! Score-drop alerts: when a tenant's percent (or one category's) falls by at
//! least `drop_points` within `window`, publish a `posture.v1.ScoreDropAlert`
//! to `posture.alerts` with its root cause: the device-control transitions
//! that cost the most points, largest first.
//!
//! A tenant's devices are spread over every partition (and so over every
//! instance of the consumer group), so no single engine sees a tenant's
//! score. The alerter therefore reads the merged truth, ClickHouse: scores
//! through the query layer (the trend store, read at one committed cut:
//! never half a flush), the latest event per tenant (`tenants_latest`) and
//! the causes (`drop_causes`), every `interval`; and only the instance that
//! holds partition 0 of the input topic runs it, so a group of instances
//! publishes each alert once.
//!
//! Time is event time: "now" for a tenant is its latest score delta, but never
//! later than the cut's `complete_through` (every partition consumed up to
//! there), and the window ends there: a backlog replayed hours later alerts on
//! what happened, when it happened, and a partition that lags behind delays an
//! alert instead of causing one. After an alert, the same scope is quiet until
//! a full window has passed (in event time).
//!
//! The quiet periods survive a restart and a change of leader: an instance that becomes the
//! leader first reads the alerts already in the alerts topic ([`Alerter::restore_published`]),
//! so a drop alerted before a crash is not alerted again by the restarted (or the next)
//! instance. Each alert also carries a dedup key in its `posture.dedup-key` header:
//! `alert/<tenant>/<group>/<category>/<window ms>/<at ms>` (empty group or category: the whole
//! tenant, all categories).

use posture_avro::{decode_alert, encode_alert, AlertCause, ScoreDropAlert};
use posture_core::report::Cut;
use posture_core::Category;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Which categories of a scope a rule watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Categories {
    /// The scope's total score (all categories together).
    Total,
    /// Each category's score, separately.
    Each,
    /// One category's score.
    One(Category),
}

/// One alert rule: a scope (every tenant or one; the whole tenant or one
/// group), which of its scores, and what counts as a drop.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertRule {
    /// `None`: every tenant.
    pub tenant: Option<String>,
    /// `None`: the whole tenant; else one device group of it.
    pub group: Option<String>,
    /// Which scores of the scope.
    pub categories: Categories,
    /// Alert when the percent falls by at least this many points ...
    pub drop_points: f64,
    /// ... within this much event time (ms).
    pub window_ms: i64,
}

impl AlertRule {
    /// The rules without a rules file: every tenant's total and each of
    /// its categories, with one threshold and window.
    pub fn defaults(drop_points: f64, window_ms: i64) -> Vec<AlertRule> {
        [Categories::Total, Categories::Each]
            .into_iter()
            .map(|categories| AlertRule {
                tenant: None,
                group: None,
                categories,
                drop_points,
                window_ms,
            })
            .collect()
    }

    fn category_list(&self) -> Vec<Option<Category>> {
        match self.categories {
            Categories::Total => vec![None],
            Categories::Each => Category::ALL.iter().map(|c| Some(*c)).collect(),
            Categories::One(c) => vec![Some(c)],
        }
    }
}

/// What counts as a drop and where alerts go.
#[derive(Clone, Debug)]
pub struct AlertConfig {
    /// The rules; a scope and category watched by several rules alerts
    /// under each (suppression is per scope, category and window).
    pub rules: Vec<AlertRule>,
    /// How often to check.
    pub interval: Duration,
    /// Topic of alerts ("" = alerts off).
    pub topic: String,
    /// Schema id in the wire-format header of alert records.
    pub schema_id: u32,
    /// Kafka bootstrap servers.
    pub brokers: String,
    /// Extra librdkafka producer properties (security).
    pub extra: Vec<(String, String)>,
    /// Device groups whose score (per tenant) each check also sets in the
    /// `posture_score_percent{tenant,group}` gauge, when metrics are
    /// attached. The metrics' cardinality guard still applies.
    pub gauge_groups: Vec<String>,
}

/// Why a check failed (it is retried at the next interval).
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    /// Reading ClickHouse failed: a score through the trend store, the latest event per tenant,
    /// or the causes of a drop.
    #[error("alert query {query}: {detail}")]
    Query {
        /// The documented query that failed (`rollup_counts`, `tenants_latest`, `drop_causes`).
        query: &'static str,
        /// What went wrong.
        detail: String,
    },
    /// The alert producer could not be created, or an alert was not acknowledged by the broker.
    #[error("publishing alerts to {topic}: {detail}")]
    Publish {
        /// The alerts topic.
        topic: String,
        /// What went wrong.
        detail: String,
    },
    /// The alerts already in the topic could not be read ([`Alerter::restore_published`]): an
    /// alert published before may then be published again.
    #[error("reading the alerts already published to {topic}: {detail}")]
    Restore {
        /// The alerts topic.
        topic: String,
        /// What went wrong.
        detail: String,
    },
}

/// The dedup key of an alert (see the module documentation).
pub fn alert_dedup_key(a: &ScoreDropAlert) -> String {
    format!(
        "alert/{}/{}/{}/{}/{}",
        a.tenant,
        a.group.as_deref().unwrap_or_default(),
        a.category.as_deref().unwrap_or_default(),
        a.window_ms,
        a.at
    )
}

/// Whether a scope's change is an alert: the percent fell by at least
/// `drop_points`, and the scope's previous alert (if any) is at least a
/// window old.
pub fn is_alert(old: f64, new: f64, drop_points: f64, last_alert: Option<i64>, now: i64, window_ms: i64) -> bool {
    // Percents have two decimals; compare in hundredths so 70.00 -> 65.00 is a 5-point drop.
    let fell = ((old - new) * 100.0).round() >= (drop_points * 100.0).round();
    fell && old > new && last_alert.is_none_or(|t| now - t >= window_ms)
}

/// When each (tenant, group, category, window) last alerted (event time).
type LastAlerts = HashMap<(String, Option<String>, Option<&'static str>, i64), i64>;

/// The alerter: checks every interval, publishes what it finds. Clones share
/// the record of past alerts (so a final check does not repeat the periodic
/// task's alerts).
#[derive(Clone)]
pub struct Alerter {
    cfg: AlertConfig,
    /// Every read: scores, the tenants' latest event times, drop causes.
    query: posture_query::Query,
    producer: FutureProducer,
    last: Arc<std::sync::Mutex<LastAlerts>>,
    metrics: Option<Arc<posture_metrics::Metrics>>,
}

impl Alerter {
    /// An alerter reading through `client` (its database set), scoring with `catalog` (the
    /// pipeline's baselines).
    pub fn new(
        cfg: AlertConfig,
        client: clickhouse::Client,
        catalog: Arc<posture_core::Catalog>,
    ) -> Result<Alerter, AlertError> {
        let defaults = [("enable.idempotence", "true"), ("acks", "all")];
        let producer = crate::topics::client_config(&cfg.brokers, &defaults, &cfg.extra)
            .create()
            .map_err(|e| AlertError::Publish {
                topic: cfg.topic.clone(),
                detail: e.to_string(),
            })?;
        Ok(Alerter {
            cfg,
            query: posture_query::Query::new(client, catalog),
            producer,
            last: Arc::default(),
            metrics: None,
        })
    }

    /// Reports each tenant's score (with exceptions) at every check, and the
    /// alerts published.
    pub fn with_metrics(mut self, metrics: Arc<posture_metrics::Metrics>) -> Alerter {
        self.metrics = Some(metrics);
        self
    }

    async fn percent(
        &self,
        tenant: &str,
        group: Option<&str>,
        category: Option<&str>,
        at: i64,
    ) -> Result<f64, AlertError> {
        Ok(self.scored(tenant, group, category, at).await?.0.unwrap_or(0.0))
    }

    /// The scope's percents at `from` and at `now`, read at one cut: both reads are repeated
    /// (a few times) until they reflect the same input, so a flush landing between them cannot
    /// make a drop that no prefix of the input has. Returns (old, new, the cut).
    async fn pair(
        &self,
        tenant: &str,
        group: Option<&str>,
        category: Option<&str>,
        from: i64,
        now: i64,
    ) -> Result<(f64, f64, Cut), AlertError> {
        for _ in 0..10 {
            let (old, a) = self.scored(tenant, group, category, from).await?;
            let (new, b) = self.scored(tenant, group, category, now).await?;
            if a == b {
                return Ok((old.unwrap_or(0.0), new.unwrap_or(0.0), b));
            }
        }
        Err(AlertError::Query {
            query: "rollup_counts",
            detail: "the pipeline kept writing between the two reads of a pair (10 tries); checked next time".into(),
        })
    }

    /// The scope's percent at `at` with exceptions, or `None` when it has no
    /// maximum (no device with a PASS or FAIL: no score to show); and the cut read.
    async fn scored(
        &self,
        tenant: &str,
        group: Option<&str>,
        category: Option<&str>,
        at: i64,
    ) -> Result<(Option<f64>, Cut), AlertError> {
        let scope = posture_query::Scope {
            tenant: tenant.to_string(),
            group: group.map(str::to_string),
        };
        let category = category.and_then(Category::parse);
        let s = self
            .query
            .score(&scope, category, at)
            .await
            .map_err(|e| AlertError::Query {
                query: "rollup_counts",
                detail: e.to_string(),
            })?;
        Ok((
            (s.total.max_micros > 0).then_some(s.total.percent),
            s.cut.unwrap_or_default(),
        ))
    }

    /// One check over every tenant and category: the alerts due now.
    pub async fn check(&mut self) -> Result<Vec<ScoreDropAlert>, AlertError> {
        Ok(self.check_with_cuts().await?.into_iter().map(|(a, _)| a).collect())
    }

    /// [`Alerter::check`], with the cut each alert's two percents were read at (both at the
    /// same one; the alert's instant is at or before its `complete_through`).
    pub async fn check_with_cuts(&mut self) -> Result<Vec<(ScoreDropAlert, Cut)>, AlertError> {
        let mut out = Vec::new();
        let rules = self.cfg.rules.clone();
        // Only instants every partition has passed: a lagging partition delays an alert.
        let cut = self.query.cut().await.map_err(|e| AlertError::Query {
            query: "rollup_counts",
            detail: e.to_string(),
        })?;
        let Some(complete_through) = cut.complete_through_ms else {
            return Ok(out);
        };
        let tenants = self.query.tenants_latest().await.map_err(|e| AlertError::Query {
            query: "tenants_latest",
            detail: e.to_string(),
        })?;
        for t in tenants {
            let tenant = t.tenant;
            let now = t.latest_ms.min(complete_through);
            if let Some(m) = &self.metrics {
                let total = self.percent(&tenant, None, None, now).await?;
                m.set_score(&tenant, None, total);
                for g in &self.cfg.gauge_groups {
                    if let (Some(p), _) = self.scored(&tenant, Some(g), None, now).await? {
                        m.set_score(&tenant, Some(g), p);
                    }
                }
            }
            for rule in rules.iter().filter(|r| r.tenant.as_ref().is_none_or(|x| *x == tenant)) {
                let from = now - rule.window_ms;
                let group = rule.group.as_deref();
                for category in rule.category_list() {
                    let category = category.map(Category::as_str);
                    let (old, new, cut) = self.pair(&tenant, group, category, from, now).await?;
                    let key = (tenant.clone(), group.map(str::to_string), category, rule.window_ms);
                    let last = self.last.lock().expect("not poisoned").get(&key).copied();
                    if !is_alert(old, new, rule.drop_points, last, now, rule.window_ms) {
                        continue;
                    }
                    let scope = posture_query::Scope {
                        tenant: tenant.clone(),
                        group: group.map(str::to_string),
                    };
                    let causes = self
                        .query
                        .drop_causes(&scope, category.and_then(Category::parse), from, now)
                        .await
                        .map_err(|e| AlertError::Query {
                            query: "drop_causes",
                            detail: e.to_string(),
                        })?
                        .into_iter()
                        .map(|c| AlertCause {
                            control: c.control,
                            device: c.device,
                            points_lost: c.points_lost_micros as f64 / 1_000_000.0,
                        })
                        .collect();
                    self.last.lock().expect("not poisoned").insert(key, now);
                    out.push((
                        ScoreDropAlert {
                            tenant: tenant.clone(),
                            group: group.map(str::to_string),
                            category: category.map(str::to_string),
                            old_percent: old,
                            new_percent: new,
                            window_ms: rule.window_ms,
                            at: now,
                            causes,
                        },
                        cut,
                    ));
                }
            }
        }
        Ok(out)
    }

    /// Produces `alerts` (keyed by tenant) and waits until each is acknowledged.
    pub async fn publish(&self, alerts: &[ScoreDropAlert]) -> Result<(), AlertError> {
        let err = |detail: String| AlertError::Publish {
            topic: self.cfg.topic.clone(),
            detail,
        };
        for a in alerts {
            let payload = encode_alert(a, self.cfg.schema_id);
            let key = alert_dedup_key(a);
            let headers = OwnedHeaders::new().insert(Header {
                key: crate::emit::DEDUP_KEY_HEADER,
                value: Some(&key),
            });
            self.producer
                .send(
                    FutureRecord::to(&self.cfg.topic)
                        .key(&a.tenant)
                        .payload(&payload)
                        .headers(headers),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|(e, _)| err(e.to_string()))?;
            if let Some(m) = &self.metrics {
                m.alerts_published(1);
            }
        }
        Ok(())
    }

    /// One check; every alert found is logged and published. Returns how
    /// many.
    pub async fn check_and_publish(&mut self) -> Result<usize, AlertError> {
        let alerts = self.check().await?;
        for a in &alerts {
            tracing::warn!(
                "score-drop alert: tenant {}{} {}: {:.2}% at {} -> {:.2}% at {} ({} min)",
                a.tenant,
                a.group.as_deref().map(|g| format!(" group {g}")).unwrap_or_default(),
                a.category.as_deref().unwrap_or("(all categories)"),
                a.old_percent,
                posture_core::time::format_time(a.at - a.window_ms),
                a.new_percent,
                posture_core::time::format_time(a.at),
                a.window_ms / 60_000
            );
        }
        self.publish(&alerts).await?;
        Ok(alerts.len())
    }

    /// Reads every alert already in the alerts topic and keeps, per scope, category and window,
    /// the latest one's instant as that scope's last alert (a later one than this alerter's own
    /// record wins). Returns how many alerts were read. Alerts that do not decode (another
    /// writer's records) are skipped.
    pub async fn restore_published(&self) -> Result<usize, AlertError> {
        let cfg = self.cfg.clone();
        let payloads = tokio::task::spawn_blocking(move || read_topic(&cfg))
            .await
            .map_err(|e| AlertError::Restore {
                topic: self.cfg.topic.clone(),
                detail: e.to_string(),
            })??;
        let mut last = self.last.lock().expect("not poisoned");
        let mut read = 0;
        for payload in payloads {
            let Ok(a) = decode_alert(&payload) else {
                continue;
            };
            let category = match a.category.as_deref() {
                None => None,
                Some(c) => match Category::parse(c) {
                    Some(c) => Some(c.as_str()),
                    None => continue,
                },
            };
            let at = last.entry((a.tenant, a.group, category, a.window_ms)).or_insert(a.at);
            *at = (*at).max(a.at);
            read += 1;
        }
        Ok(read)
    }

    /// Checks and publishes every interval while `leader` is set (this
    /// instance holds partition 0), forever; failures are logged and retried.
    /// On becoming the leader it first reads the alerts already published
    /// ([`Alerter::restore_published`]).
    pub async fn run(mut self, leader: Arc<AtomicBool>) {
        let mut restored = false;
        loop {
            tokio::time::sleep(self.cfg.interval).await;
            if !leader.load(Ordering::Relaxed) {
                restored = false;
                continue;
            }
            if !restored {
                // Once per leadership. A failure does not hold the checks up: an alert may then
                // repeat one published before (consumers can drop it by its dedup key).
                restored = true;
                match self.restore_published().await {
                    Ok(n) => tracing::info!(
                        "alerts: read {n} alert(s) already in {}: their scopes stay quiet for their window",
                        self.cfg.topic
                    ),
                    Err(e) => tracing::warn!("{e}: alerts published before may be published again"),
                }
            }
            let result = self.check_and_publish().await;
            if let Err(e) = result {
                tracing::warn!("alert check failed (retrying in {:?}): {e}", self.cfg.interval);
            }
        }
    }
}

/// The payload of every record of the alerts topic ([`crate::topics::read_to_end`], idle 1 s,
/// at most 30 s).
fn read_topic(cfg: &AlertConfig) -> Result<Vec<Vec<u8>>, AlertError> {
    let records = crate::topics::read_to_end(
        &cfg.brokers,
        &cfg.extra,
        &cfg.topic,
        Duration::from_secs(1),
        Duration::from_secs(30),
    )
    .map_err(|e| AlertError::Restore {
        topic: cfg.topic.clone(),
        detail: e.detail,
    })?;
    Ok(records
        .into_iter()
        .map(|m| m.payload().unwrap_or_default().to_vec())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::is_alert;

    #[test]
    fn drops_of_at_least_the_threshold_alert_once_per_window() {
        assert!(is_alert(70.0, 65.0, 5.0, None, 1_000, 600));
        assert!(!is_alert(70.0, 65.01, 5.0, None, 1_000, 600), "4.99 points is not 5");
        assert!(!is_alert(65.0, 70.0, 5.0, None, 1_000, 600), "a rise is not a drop");
        assert!(
            !is_alert(70.0, 60.0, 5.0, Some(500), 1_000, 600),
            "alerted 500 ms ago, window 600"
        );
        assert!(is_alert(70.0, 60.0, 5.0, Some(400), 1_000, 600), "a window has passed");
        assert!(
            !is_alert(0.0, 0.0, 0.0, None, 1_000, 600),
            "no change is never an alert"
        );
    }
}
