//! Building a [`Catalog`] from baseline files: the YAML read into nodes, every field validated
//! (each error with its `file:line` and control), checks compiled into deduplicated leaves,
//! `applies_to` conditions interned, the scoring settings read. One pass over the files; every
//! error is collected, not just the first.
//!
//! Why one file of this length: the validation of each field and the compilation it feeds are
//! one walk over the YAML sharing the builder's state (the leaf index, the ids already seen);
//! split by field they would only pass that state around.

use super::*;

pub(super) struct Builder {
    cat: Catalog,
    pub(super) errors: Vec<BaselineError>,
    leaf_index: HashMap<String, u32>,
    first_seen: HashMap<String, (String, usize)>,
}

/// Context for errors inside one control.
struct Ctx<'a> {
    file: &'a str,
    control: Option<&'a str>,
}

impl Builder {
    /// An empty catalog, no error yet.
    pub(super) fn new() -> Builder {
        Builder {
            cat: Catalog::default(),
            errors: Vec::new(),
            leaf_index: HashMap::default(),
            first_seen: HashMap::default(),
        }
    }

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

    pub(super) fn load_file(&mut self, file: &str, text: &str) {
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

    pub(super) fn finish(mut self) -> Catalog {
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
