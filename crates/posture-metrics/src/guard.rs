//! The cardinality guard of `posture_score_percent{tenant,group}`.
//!
//! Tenants and device groups come from the data, so without a bound a large
//! or misbehaving fleet would create an unbounded number of series. The guard
//! admits at most [`ScoreLimits::max_tenants`] tenants (first come, first
//! served, for the life of the process) and per-group series only for the
//! allow-listed groups; everything else is aggregated under the label value
//! [`OVERFLOW`]. The total number of series is at most
//! `(max_tenants + 1) * (max_groups + 2)`.

use std::collections::{HashMap, HashSet};

/// The label value of aggregated series: `tenant="_overflow"` stands for every
/// tenant beyond the cap, `group="_overflow"` for every group that is not
/// allow-listed. Reserved: a tenant or group really named `_overflow` is
/// aggregated too.
pub const OVERFLOW: &str = "_overflow";

/// Limits on the series of `posture_score_percent{tenant,group}` (part of
/// [`MetricsConfig`](crate::MetricsConfig)).
///
/// The defaults (1000 tenants, no groups) give one series per tenant with
/// `group=""`, plus `group="_overflow"` aggregates when group scores are set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScoreLimits {
    /// At most this many distinct tenants get series of their own: the first
    /// ones seen by [`Metrics::set_score`](crate::Metrics::set_score), kept
    /// for the life of the process. Later tenants are aggregated under
    /// `tenant="_overflow"`. Default 1000.
    pub max_tenants: usize,
    /// The allow-list: device groups that may get a series of their own
    /// (per admitted tenant). Other groups are aggregated under
    /// `group="_overflow"`. `""` and `_overflow` are ignored (reserved).
    /// Default empty.
    pub groups: Vec<String>,
    /// At most this many (distinct) groups of [`groups`](Self::groups) are
    /// honoured, the first ones in list order; the rest are treated as not
    /// allow-listed. Default 0: no per-group series at all.
    pub max_groups: usize,
}

impl Default for ScoreLimits {
    fn default() -> Self {
        ScoreLimits {
            max_tenants: 1000,
            groups: Vec::new(),
            max_groups: 0,
        }
    }
}

/// Where one score goes: the label values of its series and the value to set
/// there (the score itself, or the new mean of an aggregated series).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Placement<'a> {
    pub tenant: &'a str,
    pub group: &'a str,
    pub value: f64,
}

/// The members of one aggregated series and their latest scores.
///
/// Scores are kept in integer micro-percent so the running sum is exact: the
/// mean does not drift however many updates it has seen.
#[derive(Default, Debug)]
struct Bucket {
    /// (tenant, group or "") -> micro-percent.
    members: HashMap<(String, String), i64>,
    sum: i128,
}

impl Bucket {
    fn update(&mut self, tenant: &str, group: &str, micro: i64) -> f64 {
        let key = (tenant.to_owned(), group.to_owned());
        let old = self.members.insert(key, micro).unwrap_or(0);
        self.sum += i128::from(micro) - i128::from(old);
        let mean = self.sum as f64 / self.members.len() as f64;
        mean / 1e6
    }
}

/// Decides the series of each score and keeps what aggregated series need.
///
/// Memory: the admitted tenants, plus the latest score of every (tenant,
/// group) that was aggregated. That is proportional to the data (which the
/// engine holds anyway), never to the number of series.
#[derive(Debug)]
pub(crate) struct ScoreGuard {
    max_tenants: usize,
    allowed_groups: HashSet<String>,
    tenants: HashSet<String>,
    /// tenant label -> group label -> bucket.
    buckets: HashMap<String, HashMap<String, Bucket>>,
}

impl ScoreGuard {
    pub(crate) fn new(limits: &ScoreLimits) -> ScoreGuard {
        let mut allowed_groups = HashSet::new();
        for g in &limits.groups {
            if allowed_groups.len() >= limits.max_groups {
                break;
            }
            if !g.is_empty() && g != OVERFLOW {
                allowed_groups.insert(g.clone());
            }
        }
        ScoreGuard {
            max_tenants: limits.max_tenants,
            allowed_groups,
            tenants: HashSet::new(),
            buckets: HashMap::new(),
        }
    }

    /// Whether `tenant` has series of its own, admitting it if there is room.
    fn admit(&mut self, tenant: &str) -> bool {
        if tenant == OVERFLOW {
            return false;
        }
        if self.tenants.contains(tenant) {
            return true;
        }
        if self.tenants.len() < self.max_tenants {
            self.tenants.insert(tenant.to_owned());
            return true;
        }
        false
    }

    /// Places the score `percent` of `tenant` (whole tenant when `group` is
    /// `None`, else one of its device groups). A non-finite percent is
    /// refused (`None`): it would poison an aggregate.
    pub(crate) fn place<'a>(&mut self, tenant: &'a str, group: Option<&'a str>, percent: f64) -> Option<Placement<'a>> {
        if !percent.is_finite() {
            return None;
        }
        let admitted = self.admit(tenant);
        let group_allowed = group.is_some_and(|g| self.allowed_groups.contains(g));
        let (tenant_label, group_label) = match (admitted, group) {
            (true, None) => (tenant, ""),
            (true, Some(g)) if group_allowed => (tenant, g),
            (true, Some(_)) => (tenant, OVERFLOW),
            (false, None) => (OVERFLOW, ""),
            (false, Some(_)) => (OVERFLOW, OVERFLOW),
        };
        let aggregated = tenant_label == OVERFLOW || group_label == OVERFLOW;
        let value = if aggregated {
            // round() keeps 6 decimals of a percent: far below anything shown.
            let micro = (percent * 1e6).round() as i64;
            let bucket = self.bucket(tenant_label, group_label);
            bucket.update(tenant, group.unwrap_or(""), micro)
        } else {
            percent
        };
        Some(Placement {
            tenant: tenant_label,
            group: group_label,
            value,
        })
    }

    fn bucket(&mut self, tenant_label: &str, group_label: &str) -> &mut Bucket {
        if !self.buckets.contains_key(tenant_label) {
            self.buckets.insert(tenant_label.to_owned(), HashMap::new());
        }
        let groups = self.buckets.get_mut(tenant_label).expect("inserted above");
        groups.entry(group_label.to_owned()).or_default()
    }

    /// How many tenants have series of their own.
    #[cfg(test)]
    fn admitted(&self) -> usize {
        self.tenants.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_tenants: usize, groups: &[&str], max_groups: usize) -> ScoreLimits {
        ScoreLimits {
            max_tenants,
            groups: groups.iter().map(|g| g.to_string()).collect(),
            max_groups,
        }
    }

    fn labels<'a>(p: &Option<Placement<'a>>) -> (&'a str, &'a str) {
        let p = p.as_ref().expect("placed");
        (p.tenant, p.group)
    }

    #[test]
    fn defaults_are_1000_tenants_and_no_groups() {
        let l = ScoreLimits::default();
        assert_eq!(l.max_tenants, 1000);
        assert!(l.groups.is_empty());
        assert_eq!(l.max_groups, 0);
    }

    #[test]
    fn tenants_within_the_cap_get_their_own_series() {
        let mut g = ScoreGuard::new(&limits(2, &[], 0));
        assert_eq!(labels(&g.place("a", None, 10.0)), ("a", ""));
        assert_eq!(labels(&g.place("b", None, 20.0)), ("b", ""));
        // Admitted tenants stay admitted.
        assert_eq!(labels(&g.place("a", None, 11.0)), ("a", ""));
        assert_eq!(g.place("a", None, 11.0).unwrap().value, 11.0);
        assert_eq!(g.admitted(), 2);
    }

    #[test]
    fn tenants_beyond_the_cap_are_aggregated_under_overflow() {
        let mut g = ScoreGuard::new(&limits(1, &[], 0));
        assert_eq!(labels(&g.place("a", None, 10.0)), ("a", ""));
        let c = g.place("c", None, 40.0).unwrap();
        assert_eq!((c.tenant, c.group, c.value), (OVERFLOW, "", 40.0));
        // The aggregate is the mean of the latest score of each member.
        let d = g.place("d", None, 60.0).unwrap();
        assert_eq!((d.tenant, d.value), (OVERFLOW, 50.0));
        let c = g.place("c", None, 80.0).unwrap();
        assert_eq!(c.value, 70.0);
        // Still only one tenant of its own, and "a" keeps its series.
        assert_eq!(g.admitted(), 1);
        assert_eq!(labels(&g.place("a", None, 1.0)), ("a", ""));
    }

    #[test]
    fn zero_tenant_cap_aggregates_everything() {
        let mut g = ScoreGuard::new(&limits(0, &["g1"], 1));
        assert_eq!(labels(&g.place("a", None, 10.0)), (OVERFLOW, ""));
        assert_eq!(labels(&g.place("a", Some("g1"), 10.0)), (OVERFLOW, OVERFLOW));
    }

    #[test]
    fn reserved_tenant_name_is_aggregated() {
        let mut g = ScoreGuard::new(&limits(10, &[], 0));
        assert_eq!(labels(&g.place(OVERFLOW, None, 10.0)), (OVERFLOW, ""));
        assert_eq!(g.admitted(), 0);
    }

    #[test]
    fn by_default_groups_are_aggregated_per_tenant() {
        let mut g = ScoreGuard::new(&ScoreLimits::default());
        let p = g.place("a", Some("laptops"), 30.0).unwrap();
        assert_eq!((p.tenant, p.group, p.value), ("a", OVERFLOW, 30.0));
        let p = g.place("a", Some("servers"), 50.0).unwrap();
        assert_eq!((p.tenant, p.group, p.value), ("a", OVERFLOW, 40.0));
        // Another tenant's groups have their own aggregate.
        let p = g.place("b", Some("laptops"), 90.0).unwrap();
        assert_eq!((p.tenant, p.group, p.value), ("b", OVERFLOW, 90.0));
        // The tenant-level series is untouched by group scores.
        assert_eq!(g.place("a", None, 77.0).unwrap().value, 77.0);
    }

    #[test]
    fn allow_listed_groups_get_series_up_to_the_cap() {
        let mut g = ScoreGuard::new(&limits(10, &["laptops", "servers", "kiosks"], 2));
        assert_eq!(labels(&g.place("a", Some("laptops"), 1.0)), ("a", "laptops"));
        assert_eq!(labels(&g.place("a", Some("servers"), 1.0)), ("a", "servers"));
        // Third in the list: beyond max_groups.
        assert_eq!(labels(&g.place("a", Some("kiosks"), 1.0)), ("a", OVERFLOW));
        // Not in the list at all.
        assert_eq!(labels(&g.place("a", Some("phones"), 1.0)), ("a", OVERFLOW));
    }

    #[test]
    fn reserved_and_duplicate_group_names_do_not_use_the_cap() {
        let mut g = ScoreGuard::new(&limits(10, &["", OVERFLOW, "laptops", "laptops", "servers"], 2));
        assert_eq!(labels(&g.place("a", Some("laptops"), 1.0)), ("a", "laptops"));
        assert_eq!(labels(&g.place("a", Some("servers"), 1.0)), ("a", "servers"));
        assert_eq!(labels(&g.place("a", Some(""), 1.0)), ("a", OVERFLOW));
        assert_eq!(labels(&g.place("a", Some(OVERFLOW), 1.0)), ("a", OVERFLOW));
    }

    #[test]
    fn groups_of_overflow_tenants_are_aggregated_together() {
        let mut g = ScoreGuard::new(&limits(1, &["laptops"], 1));
        g.place("a", None, 1.0);
        let p = g.place("b", Some("laptops"), 20.0).unwrap();
        assert_eq!((p.tenant, p.group, p.value), (OVERFLOW, OVERFLOW, 20.0));
        let p = g.place("c", Some("servers"), 40.0).unwrap();
        assert_eq!((p.tenant, p.group, p.value), (OVERFLOW, OVERFLOW, 30.0));
    }

    #[test]
    fn aggregates_do_not_drift() {
        let mut g = ScoreGuard::new(&limits(0, &[], 0));
        for i in 0..10_000 {
            g.place("a", None, f64::from(i % 97) + 0.33);
            g.place("b", None, f64::from(i % 89) + 0.01);
        }
        g.place("a", None, 12.34);
        let p = g.place("b", None, 56.78).unwrap();
        assert_eq!(p.value, 34.56);
    }

    #[test]
    fn non_finite_scores_are_refused() {
        let mut g = ScoreGuard::new(&limits(0, &[], 0));
        assert!(g.place("a", None, f64::NAN).is_none());
        assert!(g.place("a", None, f64::INFINITY).is_none());
        assert_eq!(g.place("a", None, 10.0).unwrap().value, 10.0);
    }

    #[test]
    fn series_count_is_bounded() {
        let mut g = ScoreGuard::new(&limits(3, &["g0", "g1"], 2));
        let mut series = HashSet::new();
        for t in 0..100 {
            let tenant = format!("t{t}");
            for grp in 0..10 {
                let group = format!("g{grp}");
                let p = g.place(&tenant, Some(&group), 50.0).unwrap();
                series.insert((p.tenant.to_owned(), p.group.to_owned()));
            }
            let p = g.place(&tenant, None, 50.0).unwrap();
            series.insert((p.tenant.to_owned(), p.group.to_owned()));
        }
        assert!(series.len() <= (3 + 1) * (2 + 2), "{} series", series.len());
    }
}
