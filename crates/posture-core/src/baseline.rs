//! Baselines (benchmark controls): the YAML format of SPEC section 2, loaded
//! into a [`Catalog`] with every error reported as `file:line: control: what`.

use crate::check::{Check, Expected, Leaf, Op, Scalar, Tri};
use crate::types::{Category, ControlIdx, Micros, OnMissing, Remediation, MICROS_PER_POINT};
use crate::version::{parse_version, VersionRange};
use crate::yaml::{self, Kind, Node};
use regex::Regex;
use std::collections::HashMap;
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
        let mut b = Builder {
            cat: Catalog::default(),
            errors: Vec::new(),
            leaf_index: HashMap::new(),
            first_seen: HashMap::new(),
        };
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

struct Builder {
    cat: Catalog,
    errors: Vec<BaselineError>,
    leaf_index: HashMap<String, u32>,
    first_seen: HashMap<String, (String, usize)>,
}

/// Context for errors inside one control.
struct Ctx<'a> {
    file: &'a str,
    control: Option<&'a str>,
}

impl Builder {
    fn err(&mut self, ctx: &Ctx, line: usize, msg: impl Into<String>) {
        self.errors.push(BaselineError {
            file: ctx.file.to_string(),
            line,
            item: ctx.control.map(|c| format!("control {c}")),
            message: msg.into(),
        });
    }

    fn unknown_fields(&mut self, ctx: &Ctx, node: &Node, allowed: &[&str], what: &str) {
        if let Kind::Map(entries) = &node.kind {
            for (k, v) in entries {
                if !allowed.contains(&k.as_str()) {
                    self.err(
                        ctx,
                        v.line,
                        format!("unknown field {k:?} in {what} (allowed: {})", allowed.join(", ")),
                    );
                }
            }
        }
    }

    fn string(&mut self, ctx: &Ctx, node: &Node, field: &str) -> Option<String> {
        match node.get(field) {
            None => None,
            Some(Node { kind: Kind::Str(s), .. }) => Some(s.clone()),
            Some(
                n @ Node {
                    kind: Kind::Int(_) | Kind::Float(_),
                    ..
                },
            ) if field == "version" => Some(scalar_text(n)),
            Some(n) => {
                self.err(
                    ctx,
                    n.line,
                    format!("{field} must be a string, found {}", n.type_name()),
                );
                None
            }
        }
    }

    fn string_list(&mut self, ctx: &Ctx, node: &Node, field: &str) -> Vec<String> {
        match node.get(field) {
            None => Vec::new(),
            Some(Node {
                kind: Kind::Seq(items),
                line,
            }) => {
                let mut out = Vec::new();
                for i in items {
                    match &i.kind {
                        Kind::Str(s) if !s.is_empty() => out.push(s.clone()),
                        _ => self.err(ctx, i.line, format!("{field} must be a list of non-empty strings")),
                    }
                }
                if out.is_empty() && self.errors.last().is_none_or(|e| e.line != *line) {
                    self.err(ctx, *line, format!("{field} is an empty list"));
                }
                out
            }
            Some(n) => {
                self.err(
                    ctx,
                    n.line,
                    format!("{field} must be a list of strings, found {}", n.type_name()),
                );
                Vec::new()
            }
        }
    }

    fn load_file(&mut self, file: &str, text: &str) {
        let ctx = Ctx { file, control: None };
        let docs = match yaml::parse(text) {
            Ok(d) => d,
            Err((line, msg)) => return self.err(&ctx, line, format!("invalid YAML: {msg}")),
        };
        let root = match docs.as_slice() {
            [root @ Node { kind: Kind::Map(_), .. }] => root,
            [] => return self.err(&ctx, 1, "empty file: expected a baseline mapping"),
            [n] => {
                return self.err(
                    &ctx,
                    n.line,
                    format!("expected a baseline mapping, found {}", n.type_name()),
                )
            }
            [_, second, ..] => {
                return self.err(&ctx, second.line, "one baseline per file: found several YAML documents")
            }
        };
        self.unknown_fields(
            &ctx,
            root,
            &[
                "baseline",
                "version",
                "title",
                "description",
                "applies_to",
                "scoring",
                "controls",
            ],
            "the baseline",
        );
        let id = self.string(&ctx, root, "baseline");
        if id.is_none() && root.get("baseline").is_none() {
            self.err(&ctx, root.line, "missing field \"baseline\" (the baseline id)");
        }
        let version = self.string(&ctx, root, "version");
        if root.get("version").is_none() {
            self.err(&ctx, root.line, "missing field \"version\"");
        }
        let title = self.string(&ctx, root, "title").unwrap_or_default();
        let base_cond = root.get("applies_to").and_then(|n| self.condition(&ctx, n));
        let scoring = root.get("scoring").and_then(|n| self.scoring(&ctx, n));
        let baseline_idx = self.cat.baselines.len() as u32;
        let start = self.cat.controls.len() as ControlIdx;
        match root.get("controls") {
            None => self.err(&ctx, root.line, "missing field \"controls\""),
            Some(Node {
                kind: Kind::Seq(items),
                line,
            }) => {
                if items.is_empty() {
                    self.err(&ctx, *line, "controls is empty");
                }
                for item in items {
                    self.control(file, item, baseline_idx, base_cond);
                }
            }
            Some(n) => self.err(
                &ctx,
                n.line,
                format!("controls must be a list, found {}", n.type_name()),
            ),
        }
        let end = self.cat.controls.len() as ControlIdx;
        self.cat.baselines.push(BaselineInfo {
            id: id.unwrap_or_default(),
            version: version.unwrap_or_default(),
            title,
            file: file.to_string(),
            controls: start..end,
            scoring,
        });
    }

    fn scoring(&mut self, ctx: &Ctx, node: &Node) -> Option<Scoring> {
        if !matches!(node.kind, Kind::Map(_)) {
            self.err(
                ctx,
                node.line,
                format!("scoring must be a mapping, found {}", node.type_name()),
            );
            return None;
        }
        self.unknown_fields(ctx, node, &["models", "xccdf"], "scoring");
        let models = self.string_list(ctx, node, "models");
        if node.get("models").is_none() {
            self.err(ctx, node.line, "scoring without \"models\"");
        }
        let line = node.get("models").map_or(node.line, |n| n.line);
        for m in &models {
            if !SCORING_MODELS.contains(&m.as_str()) {
                self.err(
                    ctx,
                    line,
                    format!("unknown scoring model {m:?} (one of: {})", SCORING_MODELS.join(", ")),
                );
            }
        }
        let xccdf = match node.get("xccdf") {
            None => None,
            Some(n @ Node { kind: Kind::Map(_), .. }) => Some(to_json(n)),
            Some(n) => {
                self.err(
                    ctx,
                    n.line,
                    format!("scoring.xccdf must be a mapping, found {}", n.type_name()),
                );
                None
            }
        };
        if xccdf.is_none() && models.iter().any(|m| m.starts_with("xccdf_")) {
            self.err(ctx, line, "the XCCDF models need the benchmark tree in scoring.xccdf");
        }
        Some(Scoring {
            models,
            xccdf,
            line: node.line,
        })
    }

    fn control(&mut self, file: &str, node: &Node, baseline: u32, base_cond: Option<u32>) {
        let outer = Ctx { file, control: None };
        if !matches!(node.kind, Kind::Map(_)) {
            return self.err(
                &outer,
                node.line,
                format!("each control must be a mapping, found {}", node.type_name()),
            );
        }
        let id = match node.get("id") {
            Some(Node { kind: Kind::Str(s), .. }) if !s.is_empty() && !s.contains(char::is_whitespace) => s.clone(),
            Some(n) => return self.err(&outer, n.line, "control id must be a non-empty string without spaces"),
            None => return self.err(&outer, node.line, "control without \"id\""),
        };
        let ctx = Ctx {
            file,
            control: Some(&id),
        };
        self.unknown_fields(
            &ctx,
            node,
            &[
                "id",
                "title",
                "category",
                "points",
                "remediation",
                "applies_to",
                "check",
                "on_missing",
                "vulnerabilities",
                "rationale",
                "remediation_text",
                "description",
            ],
            "a control",
        );
        if let Some((f, l)) = self.first_seen.get(&id) {
            let msg = format!("duplicate control id (first defined at {f}:{l})");
            return self.err(&ctx, node.line, msg);
        }
        self.first_seen.insert(id.clone(), (file.to_string(), node.line));
        let title = self.string(&ctx, node, "title");
        if node.get("title").is_none() {
            self.err(&ctx, node.line, "missing field \"title\"");
        }
        let category = match node.get("category") {
            None => {
                self.err(&ctx, node.line, "missing field \"category\"");
                None
            }
            Some(n) => match &n.kind {
                Kind::Str(s) => Category::parse(s).or_else(|| {
                    self.err(
                        &ctx,
                        n.line,
                        format!("bad category {s:?} (one of: application, os, network, accounts, security_controls)"),
                    );
                    None
                }),
                _ => {
                    self.err(&ctx, n.line, "category must be a string");
                    None
                }
            },
        };
        let points = match node.get("points") {
            None => Some(100 * MICROS_PER_POINT),
            Some(n) => {
                let p = match n.kind {
                    Kind::Int(i) => Some(i as f64),
                    Kind::Float(f) => Some(f),
                    _ => None,
                };
                match p {
                    Some(p) if p > 0.0 && p <= 1_000_000.0 && (p * MICROS_PER_POINT as f64).round() >= 1.0 => {
                        Some((p * MICROS_PER_POINT as f64).round() as Micros)
                    }
                    _ => {
                        self.err(
                            &ctx,
                            n.line,
                            format!(
                                "points must be a number > 0 (at most 1000000), found {}",
                                scalar_text(n)
                            ),
                        );
                        None
                    }
                }
            }
        };
        let remediation = match self.string(&ctx, node, "remediation") {
            None => Some(Remediation::ConfigurationChange),
            Some(s) => Remediation::parse(&s).or_else(|| {
                let line = node.get("remediation").map_or(node.line, |n| n.line);
                self.err(
                    &ctx,
                    line,
                    format!("bad remediation {s:?} (configuration_change or software_update)"),
                );
                None
            }),
        };
        let on_missing = match self.string(&ctx, node, "on_missing").as_deref() {
            None | Some("unknown") => Some(OnMissing::Unknown),
            Some("fail") => Some(OnMissing::Fail),
            Some("pass") => Some(OnMissing::Pass),
            Some(other) => {
                let line = node.get("on_missing").map_or(node.line, |n| n.line);
                self.err(&ctx, line, format!("bad on_missing {other:?} (fail, unknown or pass)"));
                None
            }
        };
        let mut applies_to: Vec<u32> = base_cond.into_iter().collect();
        if let Some(n) = node.get("applies_to") {
            applies_to.extend(self.condition(&ctx, n));
        }
        let vulnerabilities = self.string_list(&ctx, node, "vulnerabilities");
        if let Some(n) = node.get("vulnerabilities") {
            let cve = Regex::new(r"^CVE-\d{4}-\d{4,}$").expect("static regex");
            for v in &vulnerabilities {
                if !cve.is_match(v) {
                    self.err(
                        &ctx,
                        n.line,
                        format!("vulnerability {v:?} is not a CVE id (CVE-YYYY-NNNN)"),
                    );
                }
            }
        }
        let rationale = self
            .string(&ctx, node, "rationale")
            .or_else(|| self.string(&ctx, node, "description"))
            .unwrap_or_default();
        let remediation_text = self.string(&ctx, node, "remediation_text").unwrap_or_default();
        let check = match node.get("check") {
            None => {
                self.err(&ctx, node.line, "missing field \"check\"");
                None
            }
            Some(n) => self.check(&ctx, n),
        };
        if let (Some(title), Some(category), Some(points), Some(remediation), Some(on_missing), Some(check)) =
            (title, category, points, remediation, on_missing, check)
        {
            let idx = self.cat.controls.len() as ControlIdx;
            self.cat.control_index.insert(id.clone(), idx);
            self.cat.controls.push(Control {
                id,
                title,
                category,
                points,
                remediation,
                applies_to,
                check,
                on_missing,
                vulnerabilities,
                rationale,
                remediation_text,
                baseline,
                file: file.to_string(),
                line: node.line,
            });
        }
    }

    fn condition(&mut self, ctx: &Ctx, node: &Node) -> Option<u32> {
        if !matches!(node.kind, Kind::Map(_)) {
            self.err(
                ctx,
                node.line,
                format!("applies_to must be a mapping, found {}", node.type_name()),
            );
            return None;
        }
        self.unknown_fields(ctx, node, &["os_family", "os_version", "groups", "tags"], "applies_to");
        let os_family = self.string_list(ctx, node, "os_family");
        let groups = self.string_list(ctx, node, "groups");
        let tags = self.string_list(ctx, node, "tags");
        let os_version = match node.get("os_version") {
            None => None,
            Some(n) => match &n.kind {
                Kind::Str(s) => match VersionRange::parse(s) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        self.err(ctx, n.line, format!("bad os_version range: {e}"));
                        return None;
                    }
                },
                Kind::Int(_) | Kind::Float(_) => Some(VersionRange::parse(&scalar_text(n)).ok()?),
                _ => {
                    self.err(ctx, n.line, "os_version must be a range string like \">=10.0.15063\"");
                    return None;
                }
            },
        };
        let cond = Condition {
            os_family,
            os_version,
            groups,
            tags,
        };
        if let Some(i) = self.cat.conditions.iter().position(|c| *c == cond) {
            return Some(i as u32);
        }
        self.cat.conditions.push(cond);
        Some(self.cat.conditions.len() as u32 - 1)
    }

    fn check(&mut self, ctx: &Ctx, node: &Node) -> Option<Check> {
        let Kind::Map(entries) = &node.kind else {
            self.err(
                ctx,
                node.line,
                format!("check must be a mapping, found {}", node.type_name()),
            );
            return None;
        };
        for comb in ["all", "any", "none"] {
            if let Some(children) = node.get(comb) {
                if entries.len() != 1 {
                    self.err(ctx, node.line, format!("a {comb:?} check takes no other fields"));
                    return None;
                }
                let Kind::Seq(items) = &children.kind else {
                    self.err(ctx, children.line, format!("{comb} must be a list of checks"));
                    return None;
                };
                if items.is_empty() {
                    self.err(ctx, children.line, format!("{comb} is an empty list"));
                    return None;
                }
                let compiled: Vec<Option<Check>> = items.iter().map(|i| self.check(ctx, i)).collect();
                let compiled: Option<Vec<Check>> = compiled.into_iter().collect();
                return compiled.map(|c| match comb {
                    "all" => Check::All(c),
                    "any" => Check::Any(c),
                    _ => Check::None(c),
                });
            }
        }
        self.unknown_fields(
            ctx,
            node,
            &["key", "op", "value", "version", "missing_values"],
            "a check (or use all/any/none)",
        );
        let key = match node.get("key") {
            Some(Node { kind: Kind::Str(s), .. }) if !s.is_empty() => s.clone(),
            Some(n) => {
                self.err(ctx, n.line, "key must be a non-empty string");
                return None;
            }
            None => {
                self.err(
                    ctx,
                    node.line,
                    "check without \"key\" (a leaf needs key and op; or use all/any/none)",
                );
                return None;
            }
        };
        let op = match node.get("op") {
            Some(Node {
                kind: Kind::Str(s),
                line,
            }) => match Op::parse(s) {
                Some(op) => op,
                None => {
                    self.err(ctx, *line, format!("unknown operator {s:?} (eq, ne, lt, le, gt, ge, in, not_in, contains, matches, exists, absent)"));
                    return None;
                }
            },
            Some(n) => {
                self.err(ctx, n.line, "op must be a string");
                return None;
            }
            None => {
                self.err(ctx, node.line, "check without \"op\"");
                return None;
            }
        };
        let version = match node.get("version") {
            None => false,
            Some(Node {
                kind: Kind::Bool(b), ..
            }) => *b,
            Some(n) => {
                self.err(ctx, n.line, "version must be true or false");
                return None;
            }
        };
        let missing_values = match node.get("missing_values") {
            None => Vec::new(),
            Some(n) => match &n.kind {
                Kind::Seq(items) if !items.is_empty() => {
                    match items.iter().map(to_scalar).collect::<Option<Vec<_>>>() {
                        Some(v) => v,
                        None => {
                            self.err(
                                ctx,
                                n.line,
                                "missing_values must be a list of booleans, numbers or strings",
                            );
                            return None;
                        }
                    }
                }
                _ => {
                    self.err(ctx, n.line, "missing_values must be a non-empty list");
                    return None;
                }
            },
        };
        let value = node.get("value");
        let vline = value.map_or(node.line, |v| v.line);
        if version && !matches!(op, Op::Eq | Op::Ne | Op::Lt | Op::Le | Op::Gt | Op::Ge) {
            self.err(
                ctx,
                vline,
                format!("version: true works with eq, ne, lt, le, gt and ge, not {op:?}"),
            );
            return None;
        }
        let expected = match (op, value) {
            (Op::Exists | Op::Absent, None) => Expected::Nothing,
            (Op::Exists | Op::Absent, Some(v)) => {
                self.err(ctx, v.line, format!("{op:?} takes no value").to_lowercase());
                return None;
            }
            (_, None) => {
                self.err(
                    ctx,
                    node.line,
                    format!("operator {:?} needs a value", format!("{op:?}").to_lowercase()),
                );
                return None;
            }
            (_, Some(v)) if version => match &v.kind {
                Kind::Str(_) | Kind::Int(_) | Kind::Float(_) => match parse_version(&scalar_text(v)) {
                    Some(parsed) => Expected::Version(parsed),
                    None => {
                        self.err(
                            ctx,
                            v.line,
                            format!(
                                "bad version {:?}: expected dotted numbers like \"10.0.19045\"",
                                scalar_text(v)
                            ),
                        );
                        return None;
                    }
                },
                _ => {
                    self.err(ctx, v.line, "a version value must be a dotted version string");
                    return None;
                }
            },
            (Op::Eq | Op::Ne, Some(v)) => match to_scalar(v) {
                Some(s) => Expected::Scalar(s),
                None => {
                    self.err(
                        ctx,
                        v.line,
                        format!("eq/ne need a boolean, number or string, found {}", v.type_name()),
                    );
                    return None;
                }
            },
            (Op::Lt | Op::Le | Op::Gt | Op::Ge, Some(v)) => match v.kind {
                Kind::Int(i) => Expected::Scalar(Scalar::Long(i)),
                Kind::Float(f) => Expected::Scalar(Scalar::Double(f)),
                _ => {
                    self.err(
                        ctx,
                        v.line,
                        format!(
                            "{} needs a number, or a dotted version string with version: true; found {}",
                            format!("{op:?}").to_lowercase(),
                            v.type_name()
                        ),
                    );
                    return None;
                }
            },
            (Op::In | Op::NotIn, Some(v)) => match &v.kind {
                Kind::Seq(items) if !items.is_empty() => {
                    let scalars: Option<Vec<Scalar>> = items.iter().map(to_scalar).collect();
                    match scalars {
                        Some(s) => Expected::List(s),
                        None => {
                            self.err(ctx, v.line, "in/not_in need a list of booleans, numbers or strings");
                            return None;
                        }
                    }
                }
                _ => {
                    self.err(ctx, v.line, "in/not_in need a non-empty list");
                    return None;
                }
            },
            (Op::Contains, Some(v)) => match &v.kind {
                Kind::Str(s) => Expected::Scalar(Scalar::Str(s.clone())),
                _ => {
                    self.err(ctx, v.line, format!("contains needs a string, found {}", v.type_name()));
                    return None;
                }
            },
            (Op::Matches, Some(v)) => match &v.kind {
                Kind::Str(s) => match Regex::new(s) {
                    Ok(re) => Expected::Regex(re),
                    Err(e) => {
                        let first = e.to_string().lines().last().unwrap_or("").trim().to_string();
                        self.err(ctx, v.line, format!("bad regex {s:?}: {first}"));
                        return None;
                    }
                },
                _ => {
                    self.err(ctx, v.line, "matches needs a regex string");
                    return None;
                }
            },
        };
        Some(Check::Leaf(self.leaf(key, op, expected, missing_values)))
    }

    fn leaf(&mut self, key: String, op: Op, expected: Expected, missing_values: Vec<Scalar>) -> u32 {
        let canonical = format!("{key}\u{1}{op:?}\u{1}{expected:?}\u{1}{missing_values:?}");
        if let Some(&i) = self.leaf_index.get(&canonical) {
            return i;
        }
        let k = match self.cat.keys.get(&key) {
            Some(&k) => k,
            None => {
                let k = self.cat.key_names.len() as u32;
                self.cat.key_names.push(key.clone());
                self.cat.keys.insert(key, k);
                k
            }
        };
        let i = self.cat.leaves.len() as u32;
        self.cat.leaves.push(Leaf {
            key: k,
            op,
            expected,
            missing_values,
        });
        self.leaf_index.insert(canonical, i);
        i
    }

    fn finish(mut self) -> Catalog {
        let cat = &mut self.cat;
        cat.leaves_by_key = vec![Vec::new(); cat.key_names.len()];
        cat.controls_by_leaf = vec![Vec::new(); cat.leaves.len()];
        for (i, leaf) in cat.leaves.iter().enumerate() {
            cat.leaves_by_key[leaf.key as usize].push(i as u32);
        }
        for (c, control) in cat.controls.iter().enumerate() {
            let by_leaf = &mut cat.controls_by_leaf;
            control.check.for_each_leaf(&mut |l| {
                let v = &mut by_leaf[l as usize];
                if v.last() != Some(&(c as u32)) {
                    v.push(c as u32);
                }
            });
        }
        cat.absent_results = cat.leaves.iter().map(|l| l.eval(None)).collect();
        self.cat
    }
}

fn to_scalar(n: &Node) -> Option<Scalar> {
    Some(match &n.kind {
        Kind::Bool(b) => Scalar::Bool(*b),
        Kind::Int(i) => Scalar::Long(*i),
        Kind::Float(f) => Scalar::Double(*f),
        Kind::Str(s) => Scalar::Str(s.clone()),
        _ => return None,
    })
}

/// A YAML node as JSON (mapping keys keep no order).
fn to_json(n: &Node) -> serde_json::Value {
    use serde_json::Value as J;
    match &n.kind {
        Kind::Null => J::Null,
        Kind::Bool(b) => J::Bool(*b),
        Kind::Int(i) => J::from(*i),
        Kind::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        Kind::Str(s) => J::String(s.clone()),
        Kind::Seq(items) => J::Array(items.iter().map(to_json).collect()),
        Kind::Map(entries) => J::Object(entries.iter().map(|(k, v)| (k.clone(), to_json(v))).collect()),
    }
}

fn scalar_text(n: &Node) -> String {
    match &n.kind {
        Kind::Str(s) => s.clone(),
        Kind::Int(i) => i.to_string(),
        Kind::Float(f) => f.to_string(),
        Kind::Bool(b) => b.to_string(),
        Kind::Null => "null".into(),
        Kind::Seq(_) => "a list".into(),
        Kind::Map(_) => "a mapping".into(),
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
