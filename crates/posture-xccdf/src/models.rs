//! The XCCDF 1.2 scoring models (NISTIR 7275 rev. 4, section 7.3.2) as pure
//! functions over a [`ScoringTree`] and one device's rule results, and their
//! aggregation over a scope of devices.
//!
//! Result values: pass and fixed score as a pass; fail, error and unknown are
//! counted but score nothing; notapplicable, notchecked, notselected and
//! informational are left out (as is a rule with no result, or with
//! `role="unscored"`/`"unchecked"`).
//!
//! Where OpenSCAP (1.3, `src/XCCDF/result_scoring.c`) and the text of the
//! specification differ, the models follow OpenSCAP, since posture's scores
//! must equal OpenSCAP's on the same results:
//! - default: a group whose counted children all have weight 0 keeps its
//!   un-normalised sum (0) instead of dividing by 0;
//! - flat-unweighted: every counted rule has weight 1, including rules of
//!   weight 0 (the specification keeps those at 0);
//! - absolute: 1 when the flat score equals the flat maximum, which includes
//!   the vacuous case of no counted rule; its reported maximum is the flat one.
//!
//! OpenSCAP computes in single precision; [`score_as`] runs the same
//! arithmetic in `f32` to reproduce its figures digit for digit, [`score`]
//! runs it in `f64`.

use crate::benchmark::Role;
use crate::result::XccdfResult;
use crate::tree::{Node, ScoringTree};
use serde::Serialize;
use std::ops::{Add, Div, Mul};

/// An XCCDF scoring model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Model {
    /// `urn:xccdf:scoring:default`: weighted, normalised per group (0-100).
    Default,
    /// `urn:xccdf:scoring:flat`: sum of the weights of passing rules, out of
    /// the sum of the weights of counted rules.
    Flat,
    /// `urn:xccdf:scoring:flat-unweighted`: passing rules out of counted rules.
    FlatUnweighted,
    /// `urn:xccdf:scoring:absolute`: 1 if every counted rule passes, else 0.
    Absolute,
}

impl Model {
    /// Every model.
    pub const ALL: [Model; 4] = [Model::Default, Model::Flat, Model::FlatUnweighted, Model::Absolute];

    /// The name posture reports the model's scores under (and baselines
    /// choose it by), e.g. `xccdf_default`.
    pub fn name(self) -> &'static str {
        match self {
            Model::Default => "xccdf_default",
            Model::Flat => "xccdf_flat",
            Model::FlatUnweighted => "xccdf_flat_unweighted",
            Model::Absolute => "xccdf_absolute",
        }
    }

    /// The model's URI in XCCDF (`score/@system`, `model/@system`).
    pub fn urn(self) -> &'static str {
        match self {
            Model::Default => "urn:xccdf:scoring:default",
            Model::Flat => "urn:xccdf:scoring:flat",
            Model::FlatUnweighted => "urn:xccdf:scoring:flat-unweighted",
            Model::Absolute => "urn:xccdf:scoring:absolute",
        }
    }

    /// The model named `name` (posture name) or `urn` (XCCDF URI).
    pub fn parse(s: &str) -> Option<Model> {
        Model::ALL.into_iter().find(|m| m.name() == s || m.urn() == s)
    }
}

impl Serialize for Model {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// One device's score under one model, as OpenSCAP writes it in a
/// TestResult's `score` element.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ModelScore {
    /// The score.
    pub score: f64,
    /// The maximum (100 for default; the flat maximum for flat,
    /// flat-unweighted and absolute).
    pub maximum: f64,
}

impl ModelScore {
    /// The score as a percentage: default is one already; flat and
    /// flat-unweighted are `100 * score / maximum` (0 when the maximum is 0);
    /// absolute is 100 or 0.
    pub fn percent(&self, model: Model) -> f64 {
        match model {
            Model::Default => self.score,
            Model::Absolute => 100.0 * self.score,
            Model::Flat | Model::FlatUnweighted => {
                if self.maximum == 0.0 {
                    0.0
                } else {
                    100.0 * self.score / self.maximum
                }
            }
        }
    }
}

/// The floating-point type the models compute in: `f64`, or `f32` as
/// OpenSCAP does.
pub trait Real: Copy + PartialEq + Add<Output = Self> + Mul<Output = Self> + Div<Output = Self> {
    /// Converts from `f64` (weights).
    fn of(x: f64) -> Self;
    /// Converts to `f64` (reports).
    fn to_f64(self) -> f64;
}

impl Real for f64 {
    fn of(x: f64) -> f64 {
        x
    }
    fn to_f64(self) -> f64 {
        self
    }
}

impl Real for f32 {
    fn of(x: f64) -> f32 {
        x as f32
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
}

/// A rule's result as the models see it: None when it is left out.
fn counted_result(role: Role, result: Option<XccdfResult>) -> Option<XccdfResult> {
    if role != Role::Full {
        return None;
    }
    result.filter(|r| r.counted())
}

/// Default model of a node: (score, count, weighted score).
fn default_node<R: Real>(node: &Node, results: &impl Fn(&str) -> Option<XccdfResult>) -> Option<(R, u32, R)> {
    match node {
        Node::Rule { id, weight, role } => {
            let r = counted_result(*role, results(id))?;
            let score = R::of(if r.passed() { 100.0 } else { 0.0 });
            Some((score, 1, score * R::of(*weight)))
        }
        Node::Group { weight, items, .. } => {
            let (score, count) = default_children::<R>(items, results);
            Some((score, count, score * R::of(*weight)))
        }
    }
}

/// Normalised score and count of a group's (or the benchmark's) children.
fn default_children<R: Real>(items: &[Node], results: &impl Fn(&str) -> Option<XccdfResult>) -> (R, u32) {
    let zero = R::of(0.0);
    let (mut score, mut count, mut acc) = (zero, 0u32, zero);
    for child in items {
        let Some((_, c, weighted)) = default_node::<R>(child, results) else {
            continue;
        };
        if c == 0 {
            continue;
        }
        score = score + weighted;
        count += 1;
        acc = acc + R::of(node_weight(child));
    }
    if count > 0 && acc != zero {
        score = score / acc;
    }
    (score, count)
}

fn node_weight(n: &Node) -> f64 {
    match n {
        Node::Group { weight, .. } | Node::Rule { weight, .. } => *weight,
    }
}

/// Flat model: (score, maximum) of a list of nodes.
fn flat<R: Real>(items: &[Node], unweighted: bool, results: &impl Fn(&str) -> Option<XccdfResult>) -> (R, R) {
    let zero = R::of(0.0);
    let (mut score, mut max) = (zero, zero);
    for n in items {
        let (s, m) = match n {
            Node::Rule { id, weight, role } => {
                let Some(r) = counted_result(*role, results(id)) else {
                    continue;
                };
                let w = R::of(if unweighted { 1.0 } else { *weight });
                (if r.passed() { w } else { zero }, w)
            }
            Node::Group { items, .. } => flat::<R>(items, unweighted, results),
        };
        if m == zero {
            continue;
        }
        score = score + s;
        max = max + m;
    }
    (score, max)
}

/// One device's score under `model`, computed in `R` (`f32` reproduces
/// OpenSCAP's single-precision figures). `results` gives a rule's result.
pub fn score_as<R: Real>(
    tree: &ScoringTree,
    model: Model,
    results: &impl Fn(&str) -> Option<XccdfResult>,
) -> ModelScore {
    match model {
        Model::Default => ModelScore {
            score: default_children::<R>(&tree.items, results).0.to_f64(),
            maximum: 100.0,
        },
        Model::Flat | Model::FlatUnweighted => {
            let (s, m) = flat::<R>(&tree.items, model == Model::FlatUnweighted, results);
            ModelScore {
                score: s.to_f64(),
                maximum: m.to_f64(),
            }
        }
        Model::Absolute => {
            let (s, m) = flat::<R>(&tree.items, false, results);
            ModelScore {
                score: if s == m { 1.0 } else { 0.0 },
                maximum: m.to_f64(),
            }
        }
    }
}

/// One device's score under `model`, in double precision.
pub fn score(tree: &ScoringTree, model: Model, results: &impl Fn(&str) -> Option<XccdfResult>) -> ModelScore {
    score_as::<f64>(tree, model, results)
}

/// One device's scores under every model, and how many rules were counted.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeviceScores {
    /// Rules with a counted result (pass, fixed, fail, error, unknown) and
    /// role full: the device is left out of scope scores when 0.
    pub counted_rules: usize,
    /// (model, score) for each model of [`Model::ALL`].
    pub scores: Vec<(Model, ModelScore)>,
}

/// Scores a device under every model, in double precision.
pub fn score_device(tree: &ScoringTree, results: &impl Fn(&str) -> Option<XccdfResult>) -> DeviceScores {
    score_device_as::<f64>(tree, results)
}

/// Scores a device under every model, computing in `R`.
pub fn score_device_as<R: Real>(tree: &ScoringTree, results: &impl Fn(&str) -> Option<XccdfResult>) -> DeviceScores {
    let counted_rules = tree
        .rules()
        .iter()
        .filter(|(id, _, role)| counted_result(*role, results(id)).is_some())
        .count();
    DeviceScores {
        counted_rules,
        scores: Model::ALL
            .iter()
            .map(|&m| (m, score_as::<R>(tree, m, results)))
            .collect(),
    }
}

/// A scope's score under one model: the mean of its devices' scores.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ScopeScore {
    /// The model.
    pub model: Model,
    /// Devices with at least one counted rule (the others have no score).
    pub devices: usize,
    /// Mean of the device scores.
    pub mean_score: f64,
    /// Mean of the device maxima.
    pub mean_maximum: f64,
    /// default: the mean score; flat, flat-unweighted: 100 * mean score /
    /// mean maximum (= 100 * sum of scores / sum of maxima); absolute: the
    /// percentage of devices on which every counted rule passes.
    pub percent: f64,
}

/// Aggregates device scores over a scope: for every model, the mean of the
/// device scores and of the device maxima, over the devices with at least
/// one counted rule.
///
/// Why the mean: XCCDF defines its scores per target, and two of the four
/// models have no additive maximum (default is normalised to 0-100 per
/// device, absolute is 0 or 1), so the mean of device scores is the one
/// aggregation that means the same for all four; each device counts once,
/// whatever the number of rules that apply to it. For flat models the ratio
/// of the means is the ratio of the sums; for absolute the mean is the share
/// of fully compliant devices.
pub fn aggregate(devices: &[DeviceScores]) -> Vec<ScopeScore> {
    let counted: Vec<&DeviceScores> = devices.iter().filter(|d| d.counted_rules > 0).collect();
    let n = counted.len();
    Model::ALL
        .iter()
        .map(|&model| {
            let (mut s, mut m) = (0.0, 0.0);
            for d in &counted {
                if let Some((_, ms)) = d.scores.iter().find(|(x, _)| *x == model) {
                    s += ms.score;
                    m += ms.maximum;
                }
            }
            let (mean_score, mean_maximum) = if n == 0 {
                (0.0, 0.0)
            } else {
                (s / n as f64, m / n as f64)
            };
            let percent = ModelScore {
                score: mean_score,
                maximum: mean_maximum,
            }
            .percent(model);
            ScopeScore {
                model,
                devices: n,
                mean_score,
                mean_maximum,
                percent,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn rule(id: &str, weight: f64) -> Node {
        Node::Rule {
            id: id.into(),
            weight,
            role: Role::Full,
        }
    }

    fn group(id: &str, weight: f64, items: Vec<Node>) -> Node {
        Node::Group {
            id: id.into(),
            title: String::new(),
            weight,
            items,
        }
    }

    fn tree(items: Vec<Node>) -> ScoringTree {
        ScoringTree {
            benchmark: "b".into(),
            benchmark_version: String::new(),
            profile: None,
            refine_weights: true,
            items,
        }
    }

    /// Benchmark
    /// ├── G1 (weight 2)
    /// │   ├── r1 (w 1)  pass
    /// │   ├── r2 (w 3)  fail
    /// │   └── G2 (weight 1)
    /// │       ├── r3 (w 1) pass
    /// │       └── r4 (w 1) notapplicable
    /// ├── r5 (w 0.5) error
    /// └── G3 (weight 4)
    ///     └── r6 (w 1) notchecked
    fn nested() -> (ScoringTree, HashMap<&'static str, XccdfResult>) {
        use XccdfResult::*;
        let t = tree(vec![
            group(
                "G1",
                2.0,
                vec![
                    rule("r1", 1.0),
                    rule("r2", 3.0),
                    group("G2", 1.0, vec![rule("r3", 1.0), rule("r4", 1.0)]),
                ],
            ),
            rule("r5", 0.5),
            group("G3", 4.0, vec![rule("r6", 1.0)]),
        ]);
        let r = HashMap::from([
            ("r1", Pass),
            ("r2", Fail),
            ("r3", Pass),
            ("r4", NotApplicable),
            ("r5", Error),
            ("r6", NotChecked),
        ]);
        (t, r)
    }

    fn run(t: &ScoringTree, r: &HashMap<&'static str, XccdfResult>, m: Model) -> ModelScore {
        score(t, m, &|id: &str| r.get(id).copied())
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn default_model_nested() {
        let (t, r) = nested();
        // G2: only r3 counts: (100*1)/1 = 100; weighted by G2's weight 1 -> 100.
        // G1: children r1 (100*1), r2 (0*3), G2 (100*1): (100 + 0 + 100) / (1 + 3 + 1) = 40;
        //     weighted by 2 -> 80.
        // r5: error counts, 0 * 0.5 = 0.  G3: r6 notchecked -> count 0 -> left out.
        // Benchmark: (80 + 0) / (2 + 0.5) = 32.
        let s = run(&t, &r, Model::Default);
        assert!(close(s.score, 32.0), "{s:?}");
        assert_eq!(s.maximum, 100.0);
    }

    #[test]
    fn flat_models_nested() {
        let (t, r) = nested();
        // counted: r1 (1, pass), r2 (3, fail), r3 (1, pass), r5 (0.5, error)
        // flat: score 1 + 1 = 2, maximum 1 + 3 + 1 + 0.5 = 5.5
        let s = run(&t, &r, Model::Flat);
        assert_eq!((s.score, s.maximum), (2.0, 5.5));
        assert!(close(s.percent(Model::Flat), 200.0 / 5.5));
        // flat-unweighted: 2 passes of 4 counted rules
        let s = run(&t, &r, Model::FlatUnweighted);
        assert_eq!((s.score, s.maximum), (2.0, 4.0));
        // absolute: 2 != 5.5 -> 0, maximum 5.5
        let s = run(&t, &r, Model::Absolute);
        assert_eq!((s.score, s.maximum), (0.0, 5.5));
    }

    #[test]
    fn fixed_is_pass_and_all_pass_is_absolute() {
        use XccdfResult::*;
        let (t, _) = nested();
        let r = HashMap::from([("r1", Pass), ("r2", Fixed), ("r3", Pass), ("r5", Pass)]);
        // every counted rule passes: default 100, flat 5.5/5.5, absolute 1
        assert!(close(run(&t, &r, Model::Default).score, 100.0));
        assert_eq!(run(&t, &r, Model::Flat).score, 5.5);
        assert_eq!(run(&t, &r, Model::Absolute).score, 1.0);
        // nothing counted: default 0, flat 0/0, absolute 1 (vacuous, as OpenSCAP)
        let none: HashMap<&str, XccdfResult> = HashMap::from([("r1", NotApplicable), ("r2", Informational)]);
        assert_eq!(run(&t, &none, Model::Default).score, 0.0);
        assert_eq!(
            run(&t, &none, Model::Flat),
            ModelScore {
                score: 0.0,
                maximum: 0.0
            }
        );
        assert_eq!(run(&t, &none, Model::Absolute).score, 1.0);
    }

    #[test]
    fn weights_zero_and_unscored() {
        use XccdfResult::*;
        // Benchmark
        // ├── G (weight 1): a (w 0) pass, b (w 0) fail
        // ├── c (w 2) fail
        // └── d (w 1, unscored) pass
        let mut t = tree(vec![
            group("G", 1.0, vec![rule("a", 0.0), rule("b", 0.0)]),
            rule("c", 2.0),
            rule("d", 1.0),
        ]);
        if let Node::Rule { role, .. } = &mut t.items[2] {
            *role = Role::Unscored;
        }
        let r = HashMap::from([("a", Pass), ("b", Fail), ("c", Fail), ("d", Pass)]);
        // default: G's children weigh 0 -> G keeps its sum 100*0 + 0*0 = 0 (no division),
        //          count 2, weighted 0 * 1 = 0. Benchmark: (0 + 0) / (1 + 2) = 0.
        assert_eq!(run(&t, &r, Model::Default).score, 0.0);
        // flat: a and b weigh 0 (left out), c counts: 0 / 2
        assert_eq!(
            run(&t, &r, Model::Flat),
            ModelScore {
                score: 0.0,
                maximum: 2.0
            }
        );
        // flat-unweighted counts a and b with weight 1 (OpenSCAP): 1 / 3; d is unscored
        assert_eq!(
            run(&t, &r, Model::FlatUnweighted),
            ModelScore {
                score: 1.0,
                maximum: 3.0
            }
        );
        // a device where only weight-0 rules pass: default G = 0 / 0 -> 0
        let r2 = HashMap::from([("a", Pass)]);
        assert_eq!(run(&t, &r2, Model::Default).score, 0.0);
        assert_eq!(run(&t, &r2, Model::Absolute).score, 1.0, "flat 0 == max 0");
    }

    #[test]
    fn single_precision_matches_the_float_arithmetic() {
        // Benchmark: r1..r3 (w 1), results pass, fail, fail: 100/3 in f32
        use XccdfResult::*;
        let t = tree(vec![rule("r1", 1.0), rule("r2", 1.0), rule("r3", 1.0)]);
        let r = HashMap::from([("r1", Pass), ("r2", Fail), ("r3", Fail)]);
        let s32 = score_as::<f32>(&t, Model::Default, &|id| r.get(id).copied());
        assert_eq!(s32.score, (100.0f32 / 3.0f32) as f64);
        assert_eq!(format!("{:.6}", s32.score), "33.333332", "what OpenSCAP prints");
        assert_eq!(format!("{:.6}", run(&t, &r, Model::Default).score), "33.333333");
    }

    #[test]
    fn scope_is_the_mean_of_devices() {
        use XccdfResult::*;
        // one rule r (w 2): device A pass, B fail, C notapplicable (no score)
        let t = tree(vec![rule("r", 2.0)]);
        let dev = |res: XccdfResult| {
            let m = HashMap::from([("r", res)]);
            score_device(&t, &|id: &str| m.get(id).copied())
        };
        let scopes = aggregate(&[dev(Pass), dev(Fail), dev(NotApplicable)]);
        let get = |m: Model| *scopes.iter().find(|s| s.model == m).unwrap();
        // default: (100 + 0) / 2 = 50
        let d = get(Model::Default);
        assert_eq!((d.devices, d.mean_score, d.percent), (2, 50.0, 50.0));
        // flat: mean score (2 + 0) / 2 = 1, mean maximum 2 -> 50 %
        let f = get(Model::Flat);
        assert_eq!((f.mean_score, f.mean_maximum, f.percent), (1.0, 2.0, 50.0));
        // absolute: one of two devices fully compliant -> 50 %
        let a = get(Model::Absolute);
        assert_eq!((a.mean_score, a.percent), (0.5, 50.0));
        assert_eq!(aggregate(&[])[0].devices, 0);
    }

    #[test]
    fn model_names() {
        for m in Model::ALL {
            assert_eq!(Model::parse(m.name()), Some(m));
            assert_eq!(Model::parse(m.urn()), Some(m));
        }
        for name in posture_core::baseline::SCORING_MODELS
            .iter()
            .filter(|n| n.starts_with("xccdf_"))
        {
            assert!(Model::parse(name).is_some(), "{name}");
        }
    }
}
