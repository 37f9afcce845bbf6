//! Exceptions: a control excepted for a device, group, tag or whole tenant,
//! with a justification, a start and an optional expiry (SPEC section 3).
//!
//! `third_party_control` and `alternate_mitigation` credit the control (the
//! device-control counts as PASS in the with-exceptions score);
//! `risk_accepted` and `planned_remediation` leave the score unchanged but hide
//! the device from recommendations. Start and expiry take effect at exactly
//! those event-time instants.

use crate::yaml::{self, Kind, Node};
use crate::BaselineError;

/// Why a control is excepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Justification {
    /// `third_party_control`: another product enforces the control; credited.
    ThirdPartyControl,
    /// `alternate_mitigation`: the risk is mitigated another way; credited.
    AlternateMitigation,
    /// `risk_accepted`: the risk is accepted; not credited, hidden from
    /// recommendations.
    RiskAccepted,
    /// `planned_remediation`: a fix is planned; not credited, hidden from
    /// recommendations.
    PlannedRemediation,
}

impl Justification {
    /// Whether the exception credits the control (counts it as PASS).
    pub fn credits(self) -> bool {
        matches!(
            self,
            Justification::ThirdPartyControl | Justification::AlternateMitigation
        )
    }

    /// The name used in files and APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            Justification::ThirdPartyControl => "third_party_control",
            Justification::AlternateMitigation => "alternate_mitigation",
            Justification::RiskAccepted => "risk_accepted",
            Justification::PlannedRemediation => "planned_remediation",
        }
    }

    /// Parses a justification name.
    pub fn parse(s: &str) -> Option<Justification> {
        [
            Justification::ThirdPartyControl,
            Justification::AlternateMitigation,
            Justification::RiskAccepted,
            Justification::PlannedRemediation,
        ]
        .into_iter()
        .find(|j| j.as_str() == s)
    }
}

/// Which devices of the tenant an exception covers.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExceptionScope {
    /// Every device of the tenant (`{tenant: true}`).
    Tenant,
    /// One device, by `device_id` (`{device: ID}`).
    Device(String),
    /// The devices whose current inventory lists this group (`{group: NAME}`).
    Group(String),
    /// The devices whose current inventory lists this tag (`{tag: NAME}`).
    Tag(String),
}

/// An exception for one control.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Exception {
    /// Unique id, by which it is expired; an engine refuses a second exception with
    /// the same id.
    pub id: String,
    /// The tenant whose devices it covers.
    pub tenant: String,
    /// Id of the excepted control ([`crate::Control::id`]); an engine refuses an
    /// unknown one.
    pub control: String,
    /// Which of the tenant's devices it covers.
    pub scope: ExceptionScope,
    /// Why; decides whether the control is credited or only hidden from
    /// recommendations.
    pub justification: Justification,
    /// Event time (ms) from which it applies.
    pub starts_at: i64,
    /// Event time (ms) from which it no longer applies; `None`: never expires.
    pub expires_at: Option<i64>,
    /// Who granted it; empty when not given.
    pub author: String,
    /// Free-text note; empty when not given.
    pub note: String,
}

impl Exception {
    /// Whether the exception is in force at event time `t`.
    pub fn active_at(&self, t: i64) -> bool {
        self.starts_at <= t && self.expires_at.is_none_or(|e| t < e)
    }
}

/// Parses an exceptions file:
///
/// ```yaml
/// exceptions:
///   - id: exc-1
///     tenant: t1
///     control: win-fw-domain
///     scope: { group: servers }     # or { device: d1 }, { tag: kiosk }, { tenant: true }
///     justification: third_party_control
///     starts_at: 2026-11-01T00:00:00Z
///     expires_at: 2026-12-01T00:00:00Z   # optional
///     author: alice                      # optional
///     note: covered by the network firewall   # optional
/// ```
pub fn parse_exceptions(file: &str, text: &str) -> Result<Vec<Exception>, Vec<BaselineError>> {
    let mut errors = Vec::new();
    let mut err = |line: usize, id: Option<&str>, msg: String| {
        errors.push(BaselineError {
            file: file.into(),
            line,
            item: id.map(|i| format!("exception {i}")),
            message: msg,
        })
    };
    let docs = match yaml::parse(text) {
        Ok(d) => d,
        Err((line, msg)) => {
            err(line, None, format!("invalid YAML: {msg}"));
            return Err(errors);
        }
    };
    let Some(items) = docs.first().and_then(|d| d.get("exceptions")) else {
        err(1, None, "expected a mapping with an \"exceptions\" list".into());
        return Err(errors);
    };
    let Kind::Seq(items) = &items.kind else {
        err(items.line, None, "exceptions must be a list".into());
        return Err(errors);
    };
    let mut out = Vec::new();
    let str_of = |n: &Node, f: &str| -> Option<String> {
        match n.get(f).map(|v| &v.kind) {
            Some(Kind::Str(s)) if !s.is_empty() => Some(s.clone()),
            Some(Kind::Int(i)) => Some(i.to_string()),
            _ => None,
        }
    };
    for item in items {
        let id = str_of(item, "id");
        let idr = id.as_deref();
        if let Kind::Map(entries) = &item.kind {
            for (k, v) in entries {
                let allowed = [
                    "id",
                    "tenant",
                    "control",
                    "scope",
                    "justification",
                    "starts_at",
                    "expires_at",
                    "author",
                    "note",
                ];
                if !allowed.contains(&k.as_str()) {
                    err(
                        v.line,
                        idr,
                        format!("unknown field {k:?} (allowed: {})", allowed.join(", ")),
                    );
                }
            }
        } else {
            err(item.line, None, "each exception must be a mapping".into());
            continue;
        }
        let mut need = |f: &str| {
            let v = str_of(item, f);
            if v.is_none() {
                err(item.line, idr, format!("missing or empty field {f:?}"));
            }
            v
        };
        let (id_v, tenant, control, just, starts) = (
            need("id"),
            need("tenant"),
            need("control"),
            need("justification"),
            need("starts_at"),
        );
        let justification = just.as_deref().and_then(|j| {
            let p = Justification::parse(j);
            if p.is_none() {
                err(item.line, idr, format!("bad justification {j:?} (third_party_control, alternate_mitigation, risk_accepted, planned_remediation)"));
            }
            p
        });
        let mut time = |f: &str, v: Option<String>| -> Option<i64> {
            let v = v?;
            match crate::time::parse_time(&v) {
                Ok(t) => Some(t),
                Err(e) => {
                    err(item.get(f).map_or(item.line, |n| n.line), idr, format!("{f}: {e}"));
                    None
                }
            }
        };
        let starts_at = time("starts_at", starts);
        let expires_at = time("expires_at", str_of(item, "expires_at"));
        let scope = match item.get("scope") {
            Some(n) => match &n.kind {
                Kind::Map(e) if e.len() == 1 => match (e[0].0.as_str(), &e[0].1.kind) {
                    ("tenant", Kind::Bool(true)) => Some(ExceptionScope::Tenant),
                    ("device", Kind::Str(s)) => Some(ExceptionScope::Device(s.clone())),
                    ("group", Kind::Str(s)) => Some(ExceptionScope::Group(s.clone())),
                    ("tag", Kind::Str(s)) => Some(ExceptionScope::Tag(s.clone())),
                    _ => None,
                },
                _ => None,
            },
            None => None,
        };
        if scope.is_none() {
            err(
                item.get("scope").map_or(item.line, |n| n.line),
                idr,
                "scope must be one of {tenant: true}, {device: ID}, {group: NAME}, {tag: NAME}".into(),
            );
        }
        if let (Some(s), Some(e)) = (starts_at, expires_at) {
            if e <= s {
                err(item.line, idr, "expires_at must be after starts_at".into());
            }
        }
        if let (Some(id), Some(tenant), Some(control), Some(scope), Some(justification), Some(starts_at)) =
            (id_v, tenant, control, scope, justification, starts_at)
        {
            out.push(Exception {
                id,
                tenant,
                control,
                scope,
                justification,
                starts_at,
                expires_at,
                author: str_of(item, "author").unwrap_or_default(),
                note: str_of(item, "note").unwrap_or_default(),
            });
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_validates() {
        let ok = "exceptions:\n  - id: e1\n    tenant: t1\n    control: c\n    scope: { group: servers }\n    justification: risk_accepted\n    starts_at: 2026-11-01T00:00:00Z\n    expires_at: 2026-12-01T00:00:00Z\n";
        let ex = parse_exceptions("x.yaml", ok).unwrap();
        assert_eq!(ex[0].scope, ExceptionScope::Group("servers".into()));
        assert!(!ex[0].justification.credits());
        assert!(ex[0].active_at(ex[0].starts_at));
        assert!(!ex[0].active_at(ex[0].expires_at.unwrap()));
        let bad = "exceptions:\n  - id: e1\n    tenant: t1\n    control: c\n    scope: { owner: x }\n    justification: because\n    starts_at: soon\n";
        let errs: Vec<String> = parse_exceptions("x.yaml", bad)
            .unwrap_err()
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(errs.len(), 3, "{errs:#?}");
        assert!(errs.iter().any(|e| e.contains("bad justification")));
        assert!(errs.iter().any(|e| e.starts_with("x.yaml:7: exception e1: starts_at")));
        assert!(errs
            .iter()
            .any(|e| e.starts_with("x.yaml:5:") && e.contains("scope must be")));
    }
}
