//! What score-drop alerts read besides scores: each tenant's latest event time (the alerts' "now")
//! and the transitions that cost a scope the most points in a window (an alert's causes). The
//! scores themselves come from [`Query::score`], as for every other reader.

use crate::{Query, QueryError, Scope};
use posture_core::Category;
use posture_sink::queries::Param;
use serde::Deserialize;

/// A tenant with score deltas, and the event time of its latest one.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, clickhouse::Row)]
pub struct TenantLatest {
    /// Tenant id.
    pub tenant: String,
    /// Event time of the tenant's latest score delta, ms since the epoch.
    pub latest_ms: i64,
}

/// One device-control whose transitions cost a scope's score points in a window.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, clickhouse::Row)]
pub struct DropCause {
    /// Control id, as the baselines name it.
    pub control: String,
    /// Device id.
    pub device: String,
    /// The points the scope lost through it, micro-points (1 point = 1,000,000), positive.
    pub points_lost_micros: i64,
}

impl Query {
    /// Every tenant with score deltas and the event time of its latest one (the documented
    /// query `tenants_latest`: it reads the raw log only from the trend store's latest hours).
    pub async fn tenants_latest(&self) -> Result<Vec<TenantLatest>, QueryError> {
        self.rows("tenants_latest", &[]).await
    }

    /// The device-controls that cost `scope` (in `category`, or all) the most points in
    /// (`from_ms`, `to_ms`], largest first, at most 10 (the documented query `drop_causes`).
    pub async fn drop_causes(
        &self,
        scope: &Scope,
        category: Option<Category>,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<DropCause>, QueryError> {
        self.rows(
            "drop_causes",
            &[
                ("tenant", scope.tenant.as_str().into()),
                ("group", scope.group_param()),
                ("category", category.map_or("", |c| c.as_str()).into()),
                ("from_ms", Param::from(from_ms)),
                ("to_ms", Param::from(to_ms)),
            ],
        )
        .await
    }
}
