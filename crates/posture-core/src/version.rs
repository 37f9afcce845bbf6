//! Dotted versions ("10.0.19045") compared per numeric component, missing
//! components counting as 0, and version ranges (">=10.0.15063, <11").

use crate::check::Op;
use std::cmp::Ordering;

/// Parses a dotted version: one or more non-empty all-digit components.
pub fn parse_version(s: &str) -> Option<Vec<u64>> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    s.split('.')
        .map(|c| {
            if c.is_empty() || !c.bytes().all(|b| b.is_ascii_digit()) {
                None
            } else {
                c.parse::<u64>().ok()
            }
        })
        .collect()
}

/// Compares a dotted version string against a parsed version without
/// allocating. `None` when `actual` is not a dotted version.
pub fn cmp_version_str(actual: &str, expected: &[u64]) -> Option<Ordering> {
    // One pass over the bytes (checks run on every event's version settings): each
    // component must be 1 to 19 ASCII digits (19 always fit a u64), separated by single dots.
    let b = actual.as_bytes();
    let (mut pos, mut done) = (0usize, false);
    let mut i = 0;
    let mut result = Ordering::Equal;
    loop {
        let a = if done {
            None
        } else {
            let start = pos;
            let mut v = 0u64;
            while pos < b.len() && b[pos] != b'.' {
                let d = b[pos];
                if !d.is_ascii_digit() || pos - start == 19 {
                    return None;
                }
                v = v * 10 + u64::from(d - b'0');
                pos += 1;
            }
            if pos == start {
                return None;
            }
            if pos == b.len() {
                done = true;
            } else {
                pos += 1;
            }
            Some(v)
        };
        let e = expected.get(i).copied();
        if a.is_none() && e.is_none() {
            break;
        }
        if result == Ordering::Equal {
            result = a.unwrap_or(0).cmp(&e.unwrap_or(0));
        }
        i += 1;
    }
    Some(result)
}

/// Compares two parsed versions per component, missing components as 0.
pub fn cmp_versions(a: &[u64], b: &[u64]) -> Ordering {
    let n = a.len().max(b.len());
    for i in 0..n {
        let o = a.get(i).unwrap_or(&0).cmp(b.get(i).unwrap_or(&0));
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

/// A conjunction of version constraints, e.g. `>=10.0.15063, <11`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionRange {
    /// Each constraint: a comparison operator (eq, ne, lt, le, gt, ge) and a version.
    pub constraints: Vec<(Op, Vec<u64>)>,
}

impl VersionRange {
    /// Parses `">=10.0.15063"`, `">=13, <15"`, `"=14.2"` or a bare `"14.2"`
    /// (meaning equal). Errors say which part is wrong.
    pub fn parse(s: &str) -> Result<VersionRange, String> {
        let mut constraints = Vec::new();
        for part in s.split(',') {
            let p = part.trim();
            if p.is_empty() {
                return Err(format!("empty constraint in version range {s:?}"));
            }
            let (op, rest) = if let Some(r) = p.strip_prefix(">=") {
                (Op::Ge, r)
            } else if let Some(r) = p.strip_prefix("<=") {
                (Op::Le, r)
            } else if let Some(r) = p.strip_prefix("!=") {
                (Op::Ne, r)
            } else if let Some(r) = p.strip_prefix("==") {
                (Op::Eq, r)
            } else if let Some(r) = p.strip_prefix('>') {
                (Op::Gt, r)
            } else if let Some(r) = p.strip_prefix('<') {
                (Op::Lt, r)
            } else if let Some(r) = p.strip_prefix('=') {
                (Op::Eq, r)
            } else {
                (Op::Eq, p)
            };
            let v = parse_version(rest).ok_or_else(|| {
                format!(
                    "bad version {:?} in range {s:?}: expected dotted numbers like 10.0.19045",
                    rest.trim()
                )
            })?;
            constraints.push((op, v));
        }
        Ok(VersionRange { constraints })
    }

    /// Whether a version string satisfies every constraint; a string that is
    /// not a dotted version satisfies none.
    pub fn matches(&self, version: &str) -> bool {
        self.constraints
            .iter()
            .all(|(op, v)| cmp_version_str(version, v).is_some_and(|o| op.holds(o)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_per_component_with_missing_as_zero() {
        assert_eq!(cmp_version_str("10.0.19045", &[10, 0, 15063]), Some(Ordering::Greater));
        assert_eq!(cmp_version_str("10.0", &[10, 0, 0]), Some(Ordering::Equal));
        assert_eq!(cmp_version_str("10", &[10, 0, 1]), Some(Ordering::Less));
        // numeric, not lexicographic: 9 < 10
        assert_eq!(cmp_version_str("9.9", &[10]), Some(Ordering::Less));
        assert_eq!(cmp_version_str("10.0.x", &[10]), None);
        assert_eq!(cmp_version_str("", &[10]), None);
        assert_eq!(cmp_version_str("1..2", &[1]), None);
        assert_eq!(cmp_versions(&[1, 2], &[1, 2, 0]), Ordering::Equal);
        assert_eq!(cmp_versions(&[1, 10], &[1, 9, 9]), Ordering::Greater);
    }

    /// The one-pass comparison answers exactly what the split-and-parse one it replaced
    /// answered, on random strings of digits, dots and other bytes, and at the 19/20-digit edge.
    #[test]
    fn equals_the_split_and_parse_comparison() {
        fn reference(actual: &str, expected: &[u64]) -> Option<Ordering> {
            let mut parts = actual.split('.');
            let mut i = 0;
            let mut result = Ordering::Equal;
            let mut seen_any = false;
            loop {
                let a = match parts.next() {
                    Some(c) => {
                        if c.is_empty() || c.len() > 19 || !c.bytes().all(|b| b.is_ascii_digit()) {
                            return None;
                        }
                        seen_any = true;
                        Some(c.parse::<u64>().ok()?)
                    }
                    None => None,
                };
                let e = expected.get(i).copied();
                if a.is_none() && e.is_none() {
                    break;
                }
                if result == Ordering::Equal {
                    result = a.unwrap_or(0).cmp(&e.unwrap_or(0));
                }
                i += 1;
            }
            seen_any.then_some(result)
        }
        let mut rng = fastrand::Rng::with_seed(21);
        let alphabet = b"0123456789..x-9 ";
        for _ in 0..200_000 {
            let len = rng.usize(0..12);
            let s: String = (0..len)
                .map(|_| alphabet[rng.usize(..alphabet.len())] as char)
                .collect();
            let expected: Vec<u64> = (0..rng.usize(0..4)).map(|_| rng.u64(0..12)).collect();
            assert_eq!(
                cmp_version_str(&s, &expected),
                reference(&s, &expected),
                "{s:?} vs {expected:?}"
            );
        }
        for s in [
            "9999999999999999999",
            "99999999999999999999",
            "1.9999999999999999999.2",
            "\u{e9}.1",
            "1.2\u{e9}",
        ] {
            assert_eq!(cmp_version_str(s, &[1]), reference(s, &[1]), "{s:?}");
        }
    }

    #[test]
    fn ranges() {
        let r = VersionRange::parse(">=10.0.15063, <11").unwrap();
        assert!(r.matches("10.0.19045"));
        assert!(r.matches("10.0.15063"));
        assert!(!r.matches("10.0.14393"));
        assert!(!r.matches("11.0"));
        assert!(!r.matches("garbage"));
        assert!(VersionRange::parse("14.2").unwrap().matches("14.2.0"));
        assert!(VersionRange::parse("!=14.2").unwrap().matches("14.3"));
        assert!(VersionRange::parse(">").unwrap_err().contains("bad version"));
        assert!(VersionRange::parse(">=1,").unwrap_err().contains("empty constraint"));
        assert!(VersionRange::parse(">=1.x").is_err());
    }
}
