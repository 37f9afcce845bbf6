//! Baselines (benchmark controls): the YAML format of SPEC section 2, loaded
//! into a [`Catalog`] with every error reported as `file:line: control: what`.
//!
//! This file holds the catalog's types and lookups; `baseline/build.rs` reads the YAML,
//! validates it and compiles the checks (deduplicated leaves, conditions, scoring).

use crate::check::{Check, Expected, Leaf, Op, Scalar, Tri};
use crate::types::{Category, ControlIdx, Micros, OnMissing, Remediation, MICROS_PER_POINT};
use crate::version::{parse_version, VersionRange};
use crate::yaml::{self, Kind, Node};
use regex::Regex;

mod build;
use build::Builder;
/// The catalog's name indexes: every setting key of every event is looked up here, and
/// foldhash is several times faster than SipHash on such keys (seeded per process as well).
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
use std::fmt;

/// One validation error: where it is and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaselineError {
    /// The file name as given to [`Catalog::from_sources`] or
    /// [`crate::exception::parse_exceptions`].
    pub file: String,
    /// 1-based line of the node the error is about.
    pub line: usize,
    /// What the error is about, e.g. `control win-fw-domain` or `exception exc-1`.
    pub item: Option<String>,
    /// What is wrong, without the location, e.g. `missing field "title"`.
    pub message: String,
}

impl fmt::Display for BaselineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.item {
            Some(c) => write!(f, "{}:{}: {}: {}", self.file, self.line, c, self.message),
            None => write!(f, "{}:{}: {}", self.file, self.line, self.message),
        }
    }
}

/// An `applies_to` condition. All given fields must match; a device with no
/// inventory matches no condition.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Condition {
    /// Any of these OS families (lower case).
    pub os_family: Vec<String>,
    /// A range the device's dotted `os_version` must fall in, e.g. `>=10.0.15063`;
    /// `None`: any version.
    pub os_version: Option<VersionRange>,
    /// Any of these device groups.
    pub groups: Vec<String>,
    /// Any of these tags.
    pub tags: Vec<String>,
}

impl Condition {
    /// Whether an inventory satisfies the condition.
    pub fn matches(
        &self,
        os_family: &str,
        os_version: &str,
        groups: &[impl AsRef<str>],
        tags: &[impl AsRef<str>],
    ) -> bool {
        (self.os_family.is_empty() || self.os_family.iter().any(|f| f == os_family))
            && self.os_version.as_ref().is_none_or(|r| r.matches(os_version))
            && (self.groups.is_empty() || groups.iter().any(|g| self.groups.iter().any(|c| c == g.as_ref())))
            && (self.tags.is_empty() || tags.iter().any(|t| self.tags.iter().any(|c| c == t.as_ref())))
    }
}

/// A benchmark control.
#[derive(Clone, Debug)]
pub struct Control {
    /// Unique across every loaded baseline, non-empty, without white space: the id
    /// transitions, exceptions and the query API name the control by.
    pub id: String,
    /// Short human-readable title, shown with recommendations.
    pub title: String,
    /// The category whose score the control's points count towards.
    pub category: Category,
    /// Maximum points, in micro-points.
    pub points: Micros,
    /// How a FAIL is fixed (the remediation-type filter); default
    /// [`Remediation::ConfigurationChange`].
    pub remediation: Remediation,
    /// Indices into [`Catalog::conditions`] that must all match (the
    /// baseline's and the control's own `applies_to`).
    pub applies_to: Vec<u32>,
    /// The compiled check tree; its leaves index [`Catalog::leaves`].
    pub check: Check,
    /// The state a check that ends MISSING takes: FAIL, UNKNOWN (the default) or
    /// PASS.
    pub on_missing: OnMissing,
    /// CVE ids (`CVE-YYYY-NNNN`) that fixing the control mitigates; often empty.
    pub vulnerabilities: Vec<String>,
    /// Why the control matters (`rationale`, else `description`); may be empty.
    pub rationale: String,
    /// How to fix a FAIL, as free text (`remediation_text`); may be empty.
    pub remediation_text: String,
    /// Index into [`Catalog::baselines`].
    pub baseline: u32,
    /// The file the control is defined in, as given to [`Catalog::from_sources`].
    pub file: String,
    /// 1-based line of the control's entry in [`Control::file`].
    pub line: usize,
}

/// The scoring models a baseline can choose (its `scoring.models`): posture's
/// own (SPEC section 3) and the XCCDF 1.2 models, computed by `posture-xccdf`.
pub const SCORING_MODELS: [&str; 5] = [
    "posture",
    "xccdf_default",
    "xccdf_flat",
    "xccdf_flat_unweighted",
    "xccdf_absolute",
];

/// A baseline's optional `scoring` section: which models score it, and the
/// data those models need (for XCCDF models, the benchmark's group tree,
/// weights and selection under `xccdf`), kept as JSON for the crate that
/// implements them.
#[derive(Clone, Debug, PartialEq)]
pub struct Scoring {
    /// Chosen models, names from [`SCORING_MODELS`]; posture's own score is
    /// always computed as well.
    pub models: Vec<String>,
    /// The `xccdf` mapping, if any, as JSON.
    pub xccdf: Option<serde_json::Value>,
    /// Line of the `scoring` section, for errors found later.
    pub line: usize,
}

/// A loaded baseline file.
#[derive(Clone, Debug)]
pub struct BaselineInfo {
    /// The baseline id (its `baseline` field).
    pub id: String,
    /// The `version` field as text (a bare number such as `2026.11` is converted).
    pub version: String,
    /// Human-readable title; empty when the file has none.
    pub title: String,
    /// The file name as given to [`Catalog::from_sources`].
    pub file: String,
    /// The baseline's controls: a contiguous range of [`Catalog::controls`], in file order.
    pub controls: std::ops::Range<ControlIdx>,
    /// The `scoring` section, when the baseline has one.
    pub scoring: Option<Scoring>,
}

/// Every loaded control, with checks compiled to deduplicated leaves and
/// setting keys interned. Immutable once built; shared by engines.
#[derive(Debug, Default)]
pub struct Catalog {
    /// Every loaded baseline, in source order; [`Control::baseline`] indexes it.
    pub baselines: Vec<BaselineInfo>,
    /// Every control of every baseline, indexed by [`ControlIdx`].
    pub controls: Vec<Control>,
    /// The compiled check leaves, deduplicated across the whole catalog (one entry per
    /// distinct key, operator and value, however many controls use it) and indexed by the
    /// ids in [`Check::Leaf`]. A device keeps one 2-bit [`Tri`] result per leaf.
    pub leaves: Vec<Leaf>,
    /// The distinct `applies_to` conditions, indexed by [`Control::applies_to`]; an
    /// engine evaluates each once per distinct device inventory.
    pub conditions: Vec<Condition>,
    key_names: Vec<String>,
    keys: HashMap<String, u32>,
    control_index: HashMap<String, ControlIdx>,
    /// For each key, the leaves that read it.
    pub leaves_by_key: Vec<Vec<u32>>,
    /// For each leaf, the controls that use it.
    pub controls_by_leaf: Vec<Vec<ControlIdx>>,
    /// Each leaf's result when its key is absent.
    pub absent_results: Vec<Tri>,
}

impl Catalog {
    /// Builds a catalog from `(file name, YAML text)` pairs, one baseline per
    /// file. Returns every error found, not just the first.
    pub fn from_sources<S: AsRef<str>, T: AsRef<str>>(sources: &[(S, T)]) -> Result<Catalog, Vec<BaselineError>> {
        let mut b = Builder::new();
        for (file, text) in sources {
            b.load_file(file.as_ref(), text.as_ref());
        }
        if b.errors.is_empty() {
            Ok(b.finish())
        } else {
            Err(b.errors)
        }
    }

    /// The control with this id.
    pub fn control_idx(&self, id: &str) -> Option<ControlIdx> {
        self.control_index.get(id).copied()
    }

    /// The interned index of a setting key, if any control reads it.
    #[inline]
    pub fn key_idx(&self, key: &str) -> Option<u32> {
        self.keys.get(key).copied()
    }

    /// The name of an interned setting key.
    pub fn key_name(&self, idx: u32) -> &str {
        &self.key_names[idx as usize]
    }

    /// Number of distinct setting keys read by any control.
    pub fn key_count(&self) -> usize {
        self.key_names.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
baseline: test
version: 2026.11
applies_to: { os_family: [windows] }
controls:
  - id: fw
    title: Firewall on
    category: network
    check: { key: fw.enabled, op: eq, value: true }
    on_missing: fail
    vulnerabilities: [CVE-2020-0001]
  - id: build
    title: Recent build
    category: os
    points: 50
    remediation: software_update
    applies_to: { os_version: ">=10.0.15063" }
    check: { key: os.build, op: ge, value: "10.0.19045", version: true }
  - id: combo
    title: Combination
    category: accounts
    check:
      all:
        - { key: fw.enabled, op: eq, value: true }
        - any: [ { key: pw.len, op: ge, value: 14 }, { key: pw.mode, op: in, value: [a, b] } ]
        - none: [ { key: pkgs, op: contains, value: telnet } ]
"#;

    #[test]
    fn loads_and_dedups_leaves() {
        let cat = Catalog::from_sources(&[("good.yaml", GOOD)]).unwrap();
        assert_eq!(cat.controls.len(), 3);
        assert_eq!(cat.controls[0].points, 100 * MICROS_PER_POINT);
        assert_eq!(cat.controls[1].points, 50 * MICROS_PER_POINT);
        assert_eq!(cat.controls[1].remediation, Remediation::SoftwareUpdate);
        assert_eq!(cat.controls[1].applies_to.len(), 2, "baseline and control conditions");
        assert_eq!(cat.baselines[0].version, "2026.11");
        // fw.enabled eq true is shared by two controls
        assert_eq!(cat.leaves.len(), 5);
        let fw_leaf = cat.leaves_by_key[cat.key_idx("fw.enabled").unwrap() as usize][0];
        assert_eq!(cat.controls_by_leaf[fw_leaf as usize], vec![0, 2]);
        assert_eq!(cat.controls[0].line, 6);
    }

    fn errors(src: &str) -> Vec<String> {
        Catalog::from_sources(&[("b.yaml", src)])
            .unwrap_err()
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn reports_every_error_with_file_line_and_control() {
        let src = r#"baseline: bad
version: "1"
controls:
  - id: a
    title: A
    category: netwrok
    points: 0
    check: { key: k, op: equals, value: 1 }
  - id: a
    title: dup
    category: os
    check: { key: k, op: eq, value: 1 }
  - id: c
    title: C
    category: os
    check: { op: eq, value: 1 }
  - id: d
    title: D
    category: os
    check: { key: k, op: matches, value: "([" }
  - id: e
    title: E
    category: os
    applies_to: { os_version: ">=ten" }
    check: { key: k, op: lt, value: "x" }
  - id: f
    title: F
    category: os
    on_mising: fail
    check: { all: [] }
"#;
        let errs = errors(src);
        let expect = [
            "b.yaml:6: control a: bad category \"netwrok\"",
            "b.yaml:7: control a: points must be a number > 0",
            "b.yaml:8: control a: unknown operator \"equals\"",
            "b.yaml:9: control a: duplicate control id (first defined at b.yaml:4)",
            "b.yaml:16: control c: check without \"key\"",
            "b.yaml:20: control d: bad regex \"([\"",
            "b.yaml:24: control e: bad os_version range: bad version \"ten\"",
            "b.yaml:25: control e: lt needs a number",
            "b.yaml:29: control f: unknown field \"on_mising\"",
            "b.yaml:30: control f: all is an empty list",
        ];
        for e in expect {
            assert!(errs.iter().any(|x| x.starts_with(e)), "missing {e:?} in {errs:#?}");
        }
        assert_eq!(errs.len(), expect.len(), "{errs:#?}");
    }

    #[test]
    fn file_level_errors() {
        assert!(errors("")[0].starts_with("b.yaml:1: empty file"));
        assert!(errors("baseline: x\n  bad: [\n")[0].contains("invalid YAML"));
        let e = errors("baseline: x\nversion: 1\n");
        assert!(e[0].contains("missing field \"controls\""), "{e:?}");
        let e = errors("version: 1\ncontrols: []\n");
        assert!(e.iter().any(|x| x.contains("missing field \"baseline\"")), "{e:?}");
        assert!(e.iter().any(|x| x.contains("controls is empty")), "{e:?}");
    }

    #[test]
    fn duplicate_ids_across_files() {
        let a =
            "baseline: a\nversion: 1\ncontrols:\n  - {id: x, title: X, category: os, check: {key: k, op: exists}}\n";
        let b =
            "baseline: b\nversion: 1\ncontrols:\n  - {id: x, title: X, category: os, check: {key: k, op: absent}}\n";
        let errs = Catalog::from_sources(&[("a.yaml", a), ("b.yaml", b)]).unwrap_err();
        assert_eq!(
            errs[0].to_string(),
            "b.yaml:4: control x: duplicate control id (first defined at a.yaml:4)"
        );
    }

    #[test]
    fn scoring_section_and_missing_values() {
        let src = r#"baseline: x
version: 1
scoring:
  models: [posture, xccdf_default, xccdf_flat]
  xccdf: { benchmark: b, tree: [ { rule: r1, weight: 2.5 } ] }
controls:
  - id: r1
    title: R1
    category: os
    check: { key: "xccdf:r1", op: in, value: [pass, fixed], missing_values: [notapplicable, error] }
"#;
        let cat = Catalog::from_sources(&[("x.yaml", src)]).unwrap();
        let s = cat.baselines[0].scoring.as_ref().unwrap();
        assert_eq!(s.models, vec!["posture", "xccdf_default", "xccdf_flat"]);
        assert_eq!(s.line, 4);
        let x = s.xccdf.as_ref().unwrap();
        assert_eq!(x["benchmark"], "b");
        assert_eq!(x["tree"][0]["weight"], 2.5);
        let leaf = &cat.leaves[0];
        assert_eq!(leaf.missing_values.len(), 2);
        assert_eq!(leaf.eval(Some(&crate::Value::String("error".into()))), Tri::Missing);
        assert_eq!(leaf.eval(Some(&crate::Value::String("fail".into()))), Tri::Fail);
        // a baseline without the section has none
        let cat = Catalog::from_sources(&[("good.yaml", GOOD)]).unwrap();
        assert!(cat.baselines[0].scoring.is_none());
    }

    #[test]
    fn scoring_errors() {
        let mk = |scoring: &str| {
            format!(
                "baseline: a\nversion: 1\nscoring: {scoring}\ncontrols:\n  - {{id: x, title: X, category: os, check: {{key: k, op: exists}}}}\n"
            )
        };
        assert!(errors(&mk("{models: [xccdf_fancy]}"))[0].contains("b.yaml:3: unknown scoring model \"xccdf_fancy\""));
        assert!(errors(&mk("{models: [xccdf_flat]}"))[0].contains("need the benchmark tree"));
        assert!(errors(&mk("{models: [posture], extra: 1}"))[0].contains("unknown field \"extra\" in scoring"));
        assert!(errors(&mk("{models: [posture], xccdf: [1]}"))[0].contains("scoring.xccdf must be a mapping"));
        assert!(errors(&mk("[posture]"))[0].contains("scoring must be a mapping"));
        let bad_mv = "baseline: a\nversion: 1\ncontrols:\n  - {id: x, title: X, category: os, check: {key: k, op: eq, value: 1, missing_values: []}}\n";
        assert!(errors(bad_mv)[0].contains("missing_values must be a non-empty list"));
    }

    #[test]
    fn value_shape_errors() {
        let mk = |check: &str| {
            format!(
                "baseline: a\nversion: 1\ncontrols:\n  - id: x\n    title: X\n    category: os\n    check: {check}\n"
            )
        };
        assert!(errors(&mk("{key: k, op: exists, value: 1}"))[0].contains("takes no value"));
        assert!(errors(&mk("{key: k, op: eq}"))[0].contains("needs a value"));
        assert!(errors(&mk("{key: k, op: in, value: []}"))[0].contains("non-empty list"));
        assert!(errors(&mk("{key: k, op: contains, value: [a]}"))[0].contains("contains needs a string"));
        assert!(errors(&mk("{key: k, op: ge, value: \"1.x\", version: true}"))[0].contains("bad version"));
        assert!(errors(&mk("{key: k, op: in, value: [a], version: true}"))[0].contains("version: true works with"));
        assert!(errors(&mk("{key: k, op: eq, value: 1, extra: 2}"))[0].contains("unknown field \"extra\""));
    }
}
