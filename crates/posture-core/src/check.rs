//! Check evaluation with three-valued logic (SPEC section 2).
//!
//! A check is a tree of leaves (`key op value`) under `all`/`any`/`none`.
//! Leaves are deduplicated across the whole catalog and evaluated once per
//! setting change; a device stores only each leaf's [`Tri`] result, and a
//! control's state is recomputed from those results.

use crate::event::Value;
use crate::version::cmp_version_str;
use regex::Regex;
use std::cmp::Ordering;

/// A leaf or check result: MISSING is the "unknown" of three-valued logic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Tri {
    /// Undecided: the setting is absent (or null, or one of the leaf's `missing_values`).
    /// A check that ends MISSING takes its control's `on_missing` state.
    Missing = 0,
    /// The leaf or check holds.
    Pass = 1,
    /// The leaf or check does not hold; a leaf also FAILs on a value of the wrong type.
    Fail = 2,
}

impl Tri {
    /// Decodes the 2-bit form stored in device state.
    #[inline]
    pub fn from_bits(b: u8) -> Tri {
        match b & 3 {
            1 => Tri::Pass,
            2 => Tri::Fail,
            _ => Tri::Missing,
        }
    }
}

/// A leaf operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// `eq`: equal. Strings compare case-sensitively, long and double as numbers,
    /// dotted versions per component with `version: true`.
    Eq,
    /// `ne`: not equal; a value of another type still FAILs.
    Ne,
    /// `lt`: less than a number (or a dotted version with `version: true`).
    Lt,
    /// `le`: less than or equal to a number (or a dotted version).
    Le,
    /// `gt`: greater than a number (or a dotted version).
    Gt,
    /// `ge`: greater than or equal to a number (or a dotted version).
    Ge,
    /// `in`: equal to one item of the expected list.
    In,
    /// `not_in`: equal to no item of the expected list; FAIL when no item has a comparable type.
    NotIn,
    /// `contains`: an array value that has the expected string as one of its items.
    Contains,
    /// `matches`: a string value in which the regex finds a match (unanchored search).
    Matches,
    /// `exists`: PASS when the setting is present and not null, FAIL when absent (never MISSING).
    Exists,
    /// `absent`: PASS when the setting is absent or null, FAIL otherwise (never MISSING).
    Absent,
}

impl Op {
    /// Parses an operator name as written in baselines.
    pub fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "eq" => Op::Eq,
            "ne" => Op::Ne,
            "lt" => Op::Lt,
            "le" => Op::Le,
            "gt" => Op::Gt,
            "ge" => Op::Ge,
            "in" => Op::In,
            "not_in" => Op::NotIn,
            "contains" => Op::Contains,
            "matches" => Op::Matches,
            "exists" => Op::Exists,
            "absent" => Op::Absent,
            _ => return None,
        })
    }
}

/// A scalar expected value.
#[derive(Clone, Debug, PartialEq)]
pub enum Scalar {
    /// A boolean; equal only to a boolean setting value.
    Bool(bool),
    /// An integer; compares numerically with long and double values.
    Long(i64),
    /// A floating-point number; compares numerically with long and double values.
    Double(f64),
    /// A string; compares case-sensitively with string values.
    Str(String),
}

/// What a leaf compares the setting value with.
#[derive(Clone, Debug)]
pub enum Expected {
    /// `exists` and `absent`.
    Nothing,
    /// One value: `eq`/`ne`, `lt`/`le`/`gt`/`ge` (a number) and `contains` (a string).
    Scalar(Scalar),
    /// A dotted version (`version: true`).
    Version(Vec<u64>),
    /// `in` / `not_in`.
    List(Vec<Scalar>),
    /// `matches`.
    Regex(Regex),
}

/// A compiled leaf: setting key (interned), operator, expected value.
#[derive(Clone, Debug)]
pub struct Leaf {
    /// The setting key it reads, interned in the catalog ([`crate::Catalog::key_name`]).
    pub key: u32,
    /// How the setting's value is compared with `expected`.
    pub op: Op,
    /// The baseline's `value`, compiled (versions parsed, regexes built).
    pub expected: Expected,
    /// Values that count as if the setting were absent (`missing_values` in
    /// baselines), e.g. a scanner's "notapplicable": the leaf is then
    /// evaluated as on an absent key. Empty for most leaves.
    pub missing_values: Vec<Scalar>,
}

/// A compiled check tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// A leaf, by index into [`crate::Catalog::leaves`] (leaves are deduplicated across the
    /// catalog, so many controls may share one).
    Leaf(u32),
    /// `all: [...]`: FAIL if any child FAILs, else MISSING if any is MISSING, else PASS.
    All(Vec<Check>),
    /// `any: [...]`: PASS if any child PASSes, else MISSING if any is MISSING, else FAIL.
    Any(Vec<Check>),
    /// `none: [...]`: the negation of `any` (PASS and FAIL swap, MISSING stays MISSING).
    None(Vec<Check>),
}

impl Check {
    /// Evaluates the tree given each leaf's result.
    pub fn eval(&self, leaf: &impl Fn(u32) -> Tri) -> Tri {
        match self {
            Check::Leaf(i) => leaf(*i),
            Check::All(children) => {
                let mut missing = false;
                for c in children {
                    match c.eval(leaf) {
                        Tri::Fail => return Tri::Fail,
                        Tri::Missing => missing = true,
                        Tri::Pass => {}
                    }
                }
                if missing {
                    Tri::Missing
                } else {
                    Tri::Pass
                }
            }
            Check::Any(children) => any(children, leaf),
            Check::None(children) => match any(children, leaf) {
                Tri::Pass => Tri::Fail,
                Tri::Fail => Tri::Pass,
                Tri::Missing => Tri::Missing,
            },
        }
    }

    /// Calls `f` on every leaf index in the tree.
    pub fn for_each_leaf(&self, f: &mut impl FnMut(u32)) {
        match self {
            Check::Leaf(i) => f(*i),
            Check::All(c) | Check::Any(c) | Check::None(c) => c.iter().for_each(|c| c.for_each_leaf(f)),
        }
    }
}

fn any(children: &[Check], leaf: &impl Fn(u32) -> Tri) -> Tri {
    let mut missing = false;
    for c in children {
        match c.eval(leaf) {
            Tri::Pass => return Tri::Pass,
            Tri::Missing => missing = true,
            Tri::Fail => {}
        }
    }
    if missing {
        Tri::Missing
    } else {
        Tri::Fail
    }
}

/// Whether `actual` equals `expected`; `None` when the types cannot be compared.
fn scalar_eq(actual: &Value, expected: &Scalar) -> Option<bool> {
    match (actual, expected) {
        (Value::Bool(a), Scalar::Bool(b)) => Some(a == b),
        (Value::String(a), Scalar::Str(b)) => Some(a == b),
        (Value::Long(_) | Value::Double(_), Scalar::Long(_) | Scalar::Double(_)) => {
            num_cmp(actual, expected).map(|o| o == Ordering::Equal)
        }
        _ => None,
    }
}

/// Numeric comparison of long/double values; `None` for non-numbers and NaN.
fn num_cmp(actual: &Value, expected: &Scalar) -> Option<Ordering> {
    match (actual, expected) {
        (Value::Long(a), Scalar::Long(b)) => Some(a.cmp(b)),
        (Value::Long(a), Scalar::Double(b)) => (*a as f64).partial_cmp(b),
        (Value::Double(a), Scalar::Long(b)) => a.partial_cmp(&(*b as f64)),
        (Value::Double(a), Scalar::Double(b)) => a.partial_cmp(b),
        _ => None,
    }
}

impl Op {
    /// Whether a comparison operator holds for `actual.cmp(expected) == o`
    /// (false for the non-comparison operators).
    pub fn holds(self, o: Ordering) -> bool {
        match self {
            Op::Eq => o == Ordering::Equal,
            Op::Ne => o != Ordering::Equal,
            Op::Lt => o == Ordering::Less,
            Op::Le => o != Ordering::Greater,
            Op::Gt => o == Ordering::Greater,
            Op::Ge => o != Ordering::Less,
            _ => false,
        }
    }
}

fn pass_if(b: bool) -> Tri {
    if b {
        Tri::Pass
    } else {
        Tri::Fail
    }
}

impl Leaf {
    /// Evaluates the leaf against a setting value (`None` or `Null`: absent).
    ///
    /// Absent: MISSING, except `exists` (FAIL) and `absent` (PASS). A value of
    /// the wrong type for the operator: FAIL. A value listed in
    /// `missing_values` counts as absent.
    pub fn eval(&self, value: Option<&Value>) -> Tri {
        let value = match value {
            Some(v)
                if !self.missing_values.is_empty()
                    && self.missing_values.iter().any(|m| scalar_eq(v, m) == Some(true)) =>
            {
                None
            }
            other => other,
        };
        let v = match value {
            None | Some(Value::Null) => {
                return match self.op {
                    Op::Exists => Tri::Fail,
                    Op::Absent => Tri::Pass,
                    _ => Tri::Missing,
                }
            }
            Some(v) => v,
        };
        match (self.op, &self.expected) {
            (Op::Exists, _) => Tri::Pass,
            (Op::Absent, _) => Tri::Fail,
            (op, Expected::Version(expected)) => {
                let o = match v {
                    Value::String(s) => cmp_version_str(s, expected),
                    Value::Long(n) if *n >= 0 => Some(crate::version::cmp_versions(&[*n as u64], expected)),
                    _ => None,
                };
                o.map_or(Tri::Fail, |o| pass_if(op.holds(o)))
            }
            (Op::Eq, Expected::Scalar(e)) => scalar_eq(v, e).map_or(Tri::Fail, pass_if),
            (Op::Ne, Expected::Scalar(e)) => scalar_eq(v, e).map_or(Tri::Fail, |b| pass_if(!b)),
            (op @ (Op::Lt | Op::Le | Op::Gt | Op::Ge), Expected::Scalar(e)) => {
                num_cmp(v, e).map_or(Tri::Fail, |o| pass_if(op.holds(o)))
            }
            (op @ (Op::In | Op::NotIn), Expected::List(list)) => {
                let mut comparable = false;
                let mut found = false;
                for e in list {
                    if let Some(eq) = scalar_eq(v, e) {
                        comparable = true;
                        if eq {
                            found = true;
                            break;
                        }
                    }
                }
                if !comparable {
                    Tri::Fail
                } else {
                    pass_if(found == (op == Op::In))
                }
            }
            (Op::Contains, Expected::Scalar(Scalar::Str(e))) => match v {
                Value::Array(items) => pass_if(items.iter().any(|i| i == e)),
                _ => Tri::Fail,
            },
            (Op::Matches, Expected::Regex(re)) => match v {
                Value::String(s) => pass_if(re.is_match(s)),
                _ => Tri::Fail,
            },
            // The loader never builds other combinations.
            _ => Tri::Fail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(op: Op, expected: Expected) -> Leaf {
        Leaf {
            key: 0,
            op,
            expected,
            missing_values: Vec::new(),
        }
    }
    fn s(x: &str) -> Value {
        Value::String(x.into())
    }
    use Tri::*;

    #[test]
    fn absent_values() {
        let eq = leaf(Op::Eq, Expected::Scalar(Scalar::Bool(true)));
        assert_eq!(eq.eval(None), Missing);
        assert_eq!(eq.eval(Some(&Value::Null)), Missing, "null counts as absent");
        assert_eq!(leaf(Op::Exists, Expected::Nothing).eval(None), Fail);
        assert_eq!(leaf(Op::Absent, Expected::Nothing).eval(Some(&Value::Null)), Pass);
        assert_eq!(
            leaf(Op::Exists, Expected::Nothing).eval(Some(&Value::Bool(false))),
            Pass
        );
        assert_eq!(leaf(Op::Absent, Expected::Nothing).eval(Some(&s(""))), Fail);
    }

    #[test]
    fn missing_values_count_as_absent() {
        let mut l = leaf(
            Op::In,
            Expected::List(vec![Scalar::Str("pass".into()), Scalar::Str("fixed".into())]),
        );
        l.missing_values = vec![Scalar::Str("notapplicable".into()), Scalar::Str("error".into())];
        assert_eq!(l.eval(Some(&s("pass"))), Pass);
        assert_eq!(l.eval(Some(&s("fixed"))), Pass);
        assert_eq!(l.eval(Some(&s("fail"))), Fail);
        assert_eq!(l.eval(Some(&s("notapplicable"))), Missing);
        assert_eq!(l.eval(Some(&s("error"))), Missing);
        assert_eq!(l.eval(Some(&Value::Long(1))), Fail, "other types still fail");
        let mut ex = leaf(Op::Exists, Expected::Nothing);
        ex.missing_values = vec![Scalar::Str("n/a".into())];
        assert_eq!(ex.eval(Some(&s("n/a"))), Fail, "exists on a missing value");
    }

    #[test]
    fn eq_ne() {
        let eq = leaf(Op::Eq, Expected::Scalar(Scalar::Bool(true)));
        assert_eq!(eq.eval(Some(&Value::Bool(true))), Pass);
        assert_eq!(eq.eval(Some(&Value::Bool(false))), Fail);
        assert_eq!(eq.eval(Some(&s("true"))), Fail, "wrong type fails");
        let ne = leaf(Op::Ne, Expected::Scalar(Scalar::Str("yes".into())));
        assert_eq!(ne.eval(Some(&s("no"))), Pass);
        assert_eq!(ne.eval(Some(&s("yes"))), Fail);
        assert_eq!(ne.eval(Some(&s("YES"))), Pass, "case-sensitive");
        assert_eq!(ne.eval(Some(&Value::Long(1))), Fail, "wrong type fails even for ne");
        let eq5 = leaf(Op::Eq, Expected::Scalar(Scalar::Long(5)));
        assert_eq!(
            eq5.eval(Some(&Value::Double(5.0))),
            Pass,
            "long and double compare as numbers"
        );
        assert_eq!(eq5.eval(Some(&Value::Array(vec![]))), Fail);
    }

    #[test]
    fn ordering_numbers_and_versions() {
        let ge = leaf(Op::Ge, Expected::Scalar(Scalar::Long(14)));
        assert_eq!(ge.eval(Some(&Value::Long(14))), Pass);
        assert_eq!(ge.eval(Some(&Value::Double(13.9))), Fail);
        assert_eq!(ge.eval(Some(&s("15"))), Fail, "strings are not numbers");
        assert_eq!(ge.eval(Some(&Value::Double(f64::NAN))), Fail);
        let lt = leaf(Op::Lt, Expected::Scalar(Scalar::Double(0.5)));
        assert_eq!(lt.eval(Some(&Value::Long(0))), Pass);
        assert_eq!(
            leaf(Op::Le, Expected::Scalar(Scalar::Long(3))).eval(Some(&Value::Long(3))),
            Pass
        );
        assert_eq!(
            leaf(Op::Gt, Expected::Scalar(Scalar::Long(3))).eval(Some(&Value::Long(3))),
            Fail
        );
        let v = leaf(Op::Ge, Expected::Version(vec![10, 0, 19045]));
        assert_eq!(v.eval(Some(&s("10.0.22621"))), Pass);
        assert_eq!(v.eval(Some(&s("10.0.9999"))), Fail, "per numeric component");
        assert_eq!(v.eval(Some(&s("10.0.19045.0"))), Pass, "missing components are 0");
        assert_eq!(v.eval(Some(&s("ten"))), Fail);
        assert_eq!(v.eval(Some(&Value::Bool(true))), Fail);
        let veq = leaf(Op::Eq, Expected::Version(vec![14, 2]));
        assert_eq!(veq.eval(Some(&s("14.2.0"))), Pass);
        assert_eq!(
            leaf(Op::Lt, Expected::Version(vec![11])).eval(Some(&Value::Long(10))),
            Pass
        );
    }

    #[test]
    fn in_not_in_contains_matches() {
        let list = vec![Scalar::Str("no".into()), Scalar::Str("prohibit-password".into())];
        let i = leaf(Op::In, Expected::List(list.clone()));
        assert_eq!(i.eval(Some(&s("no"))), Pass);
        assert_eq!(i.eval(Some(&s("yes"))), Fail);
        assert_eq!(i.eval(Some(&Value::Long(1))), Fail, "wrong type");
        let ni = leaf(Op::NotIn, Expected::List(list));
        assert_eq!(ni.eval(Some(&s("yes"))), Pass);
        assert_eq!(ni.eval(Some(&s("no"))), Fail);
        assert_eq!(ni.eval(Some(&Value::Bool(true))), Fail, "wrong type");
        let nums = leaf(Op::In, Expected::List(vec![Scalar::Long(1), Scalar::Long(2)]));
        assert_eq!(nums.eval(Some(&Value::Double(2.0))), Pass);
        let c = leaf(Op::Contains, Expected::Scalar(Scalar::Str("telnet".into())));
        assert_eq!(c.eval(Some(&Value::Array(vec!["vim".into(), "telnet".into()]))), Pass);
        assert_eq!(c.eval(Some(&Value::Array(vec![]))), Fail);
        assert_eq!(c.eval(Some(&s("telnet"))), Fail, "contains needs an array");
        let m = leaf(Op::Matches, Expected::Regex(Regex::new("TLS1\\.[23]").unwrap()));
        assert_eq!(m.eval(Some(&s("ciphers: TLS1.3 only"))), Pass, "unanchored search");
        assert_eq!(m.eval(Some(&s("TLS1.0"))), Fail);
        assert_eq!(m.eval(Some(&Value::Long(3))), Fail);
    }

    #[test]
    fn combinators_three_valued() {
        let results = [Pass, Fail, Missing];
        let f = |i: u32| results[i as usize];
        let (p, x, m) = (Check::Leaf(0), Check::Leaf(1), Check::Leaf(2));
        assert_eq!(Check::All(vec![p.clone(), m.clone()]).eval(&f), Missing);
        assert_eq!(Check::All(vec![x.clone(), m.clone()]).eval(&f), Fail);
        assert_eq!(Check::All(vec![p.clone(), p.clone()]).eval(&f), Pass);
        assert_eq!(Check::Any(vec![x.clone(), m.clone()]).eval(&f), Missing);
        assert_eq!(Check::Any(vec![p.clone(), m.clone()]).eval(&f), Pass);
        assert_eq!(Check::Any(vec![x.clone(), x.clone()]).eval(&f), Fail);
        assert_eq!(Check::None(vec![x.clone(), x.clone()]).eval(&f), Pass);
        assert_eq!(Check::None(vec![p.clone(), m.clone()]).eval(&f), Fail);
        assert_eq!(Check::None(vec![x.clone(), m.clone()]).eval(&f), Missing);
        let nested = Check::All(vec![p, Check::None(vec![x]), Check::Any(vec![m])]);
        assert_eq!(nested.eval(&f), Missing);
    }
}
