//! Exceptions, stored durably in ClickHouse's `exceptions` table (one row
//! per version; the latest wins) and applied by every running pipeline,
//! which polls them (`exceptions_current`) and hands them to its engines.

use crate::{now_ms, Query, QueryError};
use posture_core::exception::{Exception, ExceptionScope, Justification};
use posture_core::time::format_time;
use serde::{Deserialize, Serialize};

/// A row of `exceptions` (and of the `exceptions_current` query).
#[derive(clickhouse::Row, Serialize, Deserialize, Clone, Debug)]
pub(crate) struct ExceptionRow {
    tenant: String,
    id: String,
    control: String,
    scope_kind: String,
    scope_value: String,
    justification: String,
    starts_at_ms: i64,
    expires_at_ms: Option<i64>,
    author: String,
    note: String,
    created_at_ms: i64,
    version: u64,
}

/// A new exception, as the CLI and `POST /api/v1/tenants/{tenant}/exceptions` take it.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NewException {
    /// Default: generated (`exc-` and a unique suffix).
    #[serde(default)]
    pub id: Option<String>,
    /// Control id the exception is for; it must be in the baselines.
    pub control: String,
    /// `tenant`, `device`, `group` or `tag`.
    pub scope: String,
    /// The device id, group or tag ("" for `tenant`).
    #[serde(default)]
    pub scope_value: String,
    /// `third_party_control`, `alternate_mitigation`, `risk_accepted` or `planned_remediation`.
    pub justification: String,
    /// Event time it starts (RFC 3339 or epoch ms); default now.
    #[serde(default)]
    pub starts_at: Option<String>,
    /// Event time it ends; default never.
    #[serde(default)]
    pub expires_at: Option<String>,
    /// Who adds it (the API sets its token's name).
    #[serde(default)]
    pub author: String,
    #[serde(default)]
    /// Free text on why; at most [`MAX_TEXT_BYTES`] bytes.
    pub note: String,
}

/// An exception as listed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExceptionView {
    /// Tenant id.
    pub tenant: String,
    /// Exception id, unique in the tenant.
    pub id: String,
    /// Control id the exception is for.
    pub control: String,
    /// `tenant`, `device`, `group` or `tag`.
    pub scope: String,
    /// The device id, group or tag the scope names ("" for `tenant`).
    pub scope_value: String,
    /// `third_party_control`, `alternate_mitigation`, `risk_accepted` or `planned_remediation`.
    pub justification: String,
    /// Whether the exception counts the control as PASS (credit) or only
    /// hides the device from recommendations.
    pub credits: bool,
    /// Event time it starts (RFC 3339).
    pub starts_at: String,
    /// Event time it ends (RFC 3339); `None`: never. Expiring it sets this.
    pub expires_at: Option<String>,
    /// Who added it (through the API: the token's name).
    pub author: String,
    /// Free text given when it was added.
    pub note: String,
    /// Wall-clock time it was added (RFC 3339).
    pub created_at: String,
    /// In force at the wall-clock instant of the listing.
    pub in_force_now: bool,
}

impl ExceptionRow {
    fn view(&self, now: i64) -> ExceptionView {
        ExceptionView {
            tenant: self.tenant.clone(),
            id: self.id.clone(),
            control: self.control.clone(),
            scope: self.scope_kind.clone(),
            scope_value: self.scope_value.clone(),
            justification: self.justification.clone(),
            credits: Justification::parse(&self.justification).is_some_and(Justification::credits),
            starts_at: format_time(self.starts_at_ms),
            expires_at: self.expires_at_ms.map(format_time),
            author: self.author.clone(),
            note: self.note.clone(),
            created_at: format_time(self.created_at_ms),
            in_force_now: self.starts_at_ms <= now && self.expires_at_ms.is_none_or(|e| now < e),
        }
    }

    /// The core's exception, or why the stored row is not one.
    fn to_core(&self) -> Result<Exception, String> {
        let scope = match (self.scope_kind.as_str(), self.scope_value.as_str()) {
            ("tenant", _) => ExceptionScope::Tenant,
            ("device", v) if !v.is_empty() => ExceptionScope::Device(v.to_string()),
            ("group", v) if !v.is_empty() => ExceptionScope::Group(v.to_string()),
            ("tag", v) if !v.is_empty() => ExceptionScope::Tag(v.to_string()),
            (k, v) => {
                return Err(format!(
                    "scope {k:?} {v:?}: expected tenant, or device/group/tag with a value"
                ))
            }
        };
        let justification = Justification::parse(&self.justification)
            .ok_or_else(|| format!("justification {:?} is not one of the four", self.justification))?;
        // Written before ids were checked: an id with '/' could stand for another tenant's
        // (other characters the old API allowed are harmless, and such exceptions must stay
        // expirable).
        if self.id.contains('/') {
            return Err(format!(
                "tenant {:?}: exception id {:?} contains '/', which could name another tenant's exception",
                self.tenant, self.id
            ));
        }
        Ok(Exception {
            // The engine knows every tenant's exceptions by id alone: qualify it with the tenant,
            // so two tenants may use the same id.
            id: format!("{}/{}", self.tenant, self.id),
            tenant: self.tenant.clone(),
            control: self.control.clone(),
            scope,
            justification,
            starts_at: self.starts_at_ms,
            expires_at: self.expires_at_ms,
            author: self.author.clone(),
            note: self.note.clone(),
        })
    }
}

fn time(name: &str, v: &Option<String>) -> Result<Option<i64>, QueryError> {
    v.as_deref()
        .map(|s| posture_core::time::parse_time(s).map_err(|e| QueryError::BadRequest(format!("{name}: {e}"))))
        .transpose()
}

/// At most this many exceptions (or tasks) per tenant, expired or not: one write token cannot
/// fill the tables or slow every tenant's exception polling.
pub const MAX_PER_TENANT: usize = 10_000;
/// The longest note, justification text or task notes (bytes).
pub const MAX_TEXT_BYTES: usize = 4_096;
/// The longest author, scope value or id (bytes).
pub const MAX_NAME_BYTES: usize = 256;

/// An exception or task id: 1 to 128 letters, digits, `.`, `_` or `-`. No `/`: the engine knows
/// an exception as `<tenant>/<id>`, which is then unambiguous whatever the tenant's name.
pub fn check_id(what: &str, id: &str) -> Result<(), QueryError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(QueryError::BadRequest(format!(
            "{what} id {:?}: 1 to 128 letters, digits, '.', '_' or '-'",
            id.chars().take(140).collect::<String>()
        )))
    }
}

/// `value` (the field `what`) is at most `max` bytes.
pub fn check_len(what: &str, value: &str, max: usize) -> Result<(), QueryError> {
    if value.len() > max {
        return Err(QueryError::BadRequest(format!(
            "{what} is {} bytes, more than {max}",
            value.len()
        )));
    }
    Ok(())
}

/// A version number above `previous` that also orders writers by time.
pub(crate) fn next_version(previous: u64) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    now.max(previous + 1)
}

impl Query {
    async fn exception_rows(&self, tenant: &str) -> Result<Vec<ExceptionRow>, QueryError> {
        self.rows("exceptions_current", &[("tenant", tenant.into())]).await
    }

    /// The exceptions of `tenant` (every version's latest), by id.
    pub async fn exceptions(&self, tenant: &str) -> Result<Vec<ExceptionView>, QueryError> {
        let now = now_ms();
        Ok(self.exception_rows(tenant).await?.iter().map(|r| r.view(now)).collect())
    }

    /// Every tenant's exceptions as the engine takes them (what a running
    /// pipeline applies), plus the rows that are not valid exceptions (with
    /// why), which the pipeline logs and skips.
    pub async fn engine_exceptions(&self) -> Result<(Vec<Exception>, Vec<String>), QueryError> {
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for r in self.exception_rows("").await? {
            match r.to_core() {
                Ok(e) if self.catalog.control_idx(&e.control).is_some() => good.push(e),
                Ok(e) => bad.push(format!(
                    "exception {} of tenant {}: control {:?} is not in the baselines",
                    e.id, e.tenant, e.control
                )),
                Err(why) => bad.push(format!("exception {} of tenant {}: {why}", r.id, r.tenant)),
            }
        }
        Ok((good, bad))
    }

    /// Adds an exception for `tenant` after checking it: a known control, a
    /// scope, one of the four justifications, an expiry after the start, an
    /// unused id.
    pub async fn add_exception(&self, tenant: &str, new: NewException) -> Result<ExceptionView, QueryError> {
        let bad = |m: String| Err(QueryError::BadRequest(m));
        if tenant.is_empty() {
            return bad("the tenant is empty".into());
        }
        if self.catalog.control_idx(&new.control).is_none() {
            return bad(format!("control {:?} is not in the baselines", new.control));
        }
        if Justification::parse(&new.justification).is_none() {
            return bad(format!(
                "justification {:?}: expected third_party_control, alternate_mitigation, risk_accepted or planned_remediation",
                new.justification
            ));
        }
        match new.scope.as_str() {
            "tenant" => {}
            "device" | "group" | "tag" if !new.scope_value.trim().is_empty() => {}
            "device" | "group" | "tag" => {
                return bad(format!(
                    "a {} exception needs its {} (scope_value)",
                    new.scope, new.scope
                ))
            }
            other => return bad(format!("scope {other:?}: expected tenant, device, group or tag")),
        }
        if new.author.trim().is_empty() {
            return bad("author is required".into());
        }
        check_len("author", &new.author, MAX_NAME_BYTES)?;
        check_len("scope_value", &new.scope_value, MAX_NAME_BYTES)?;
        check_len("note", &new.note, MAX_TEXT_BYTES)?;
        let now = now_ms();
        let starts = time("starts_at", &new.starts_at)?.unwrap_or(now);
        let expires = time("expires_at", &new.expires_at)?;
        if expires.is_some_and(|e| e <= starts) {
            return bad("expires_at must be after starts_at".into());
        }
        let id = new
            .id
            .filter(|i| !i.trim().is_empty())
            .unwrap_or_else(|| format!("exc-{}-{:04x}", now, fastrand::u16(..)));
        check_id("exception", &id)?;
        let rows = self.exception_rows(tenant).await?;
        if rows.iter().any(|r| r.id == id) {
            return bad(format!(
                "exception {id:?} already exists in tenant {tenant:?} (expire it, or pick another id)"
            ));
        }
        if rows.len() >= MAX_PER_TENANT {
            return bad(format!(
                "tenant {tenant:?} has {MAX_PER_TENANT} exceptions, the most one tenant may have"
            ));
        }
        let row = ExceptionRow {
            tenant: tenant.to_string(),
            id,
            control: new.control,
            scope_kind: new.scope,
            scope_value: if new.scope_value.is_empty() {
                String::new()
            } else {
                new.scope_value.trim().to_string()
            },
            justification: new.justification,
            starts_at_ms: starts,
            expires_at_ms: expires,
            author: new.author,
            note: new.note,
            created_at_ms: now,
            version: next_version(0),
        };
        self.insert("exceptions", &row).await?;
        Ok(row.view(now))
    }

    /// Ends an exception at event time `at` (default now): a new version of
    /// its row. An exception that already ended earlier keeps its expiry.
    pub async fn expire_exception(&self, tenant: &str, id: &str, at: Option<i64>) -> Result<ExceptionView, QueryError> {
        let now = now_ms();
        let Some(mut row) = self.exception_rows(tenant).await?.into_iter().find(|r| r.id == id) else {
            return Err(QueryError::NotFound(format!(
                "tenant {tenant:?} has no exception {id:?}"
            )));
        };
        let at = at.unwrap_or(now).max(row.starts_at_ms);
        if row.expires_at_ms.is_some_and(|e| e <= at) {
            return Ok(row.view(now));
        }
        row.expires_at_ms = Some(at);
        row.version = next_version(row.version);
        self.insert("exceptions", &row).await?;
        Ok(row.view(now))
    }
}
