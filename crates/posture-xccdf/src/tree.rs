//! The scoring tree: a benchmark resolved for one profile (selection,
//! effective weights and roles), the data the XCCDF models need. It is what a
//! posture baseline carries in its `scoring.xccdf` section.

use crate::benchmark::{Benchmark, Group, Item, Role};
use crate::result::XccdfError;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

/// A node of the scoring tree: a selected Group (with at least one selected
/// Rule below it) or a selected Rule.
#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    /// A Group.
    Group {
        /// The Group id.
        id: String,
        /// Its title.
        title: String,
        /// Effective weight (refine-rule, else `@weight`).
        weight: f64,
        /// Selected children, in document order.
        items: Vec<Node>,
    },
    /// A Rule; its result is read from the setting `xccdf:<id>`.
    Rule {
        /// The Rule id.
        id: String,
        /// Effective weight.
        weight: f64,
        /// Effective role.
        role: Role,
    },
}

/// A benchmark resolved for one profile.
#[derive(Clone, Debug, PartialEq)]
pub struct ScoringTree {
    /// The Benchmark id.
    pub benchmark: String,
    /// The Benchmark version.
    pub benchmark_version: String,
    /// The profile id (None: the benchmark's own defaults).
    pub profile: Option<String>,
    /// Whether the profile's refine-rule weights were applied.
    pub refine_weights: bool,
    /// The selected top-level nodes.
    pub items: Vec<Node>,
}

impl ScoringTree {
    /// Every rule, depth first, with its weight and role.
    pub fn rules(&self) -> Vec<(&str, f64, Role)> {
        fn go<'a>(items: &'a [Node], out: &mut Vec<(&'a str, f64, Role)>) {
            for n in items {
                match n {
                    Node::Group { items, .. } => go(items, out),
                    Node::Rule { id, weight, role } => out.push((id, *weight, *role)),
                }
            }
        }
        let mut out = Vec::new();
        go(&self.items, &mut out);
        out
    }

    /// The tree as JSON (the `scoring.xccdf` section).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(Raw::from(self)).expect("trees always serialize")
    }

    /// Reads a `scoring.xccdf` section; `file` names the baseline in errors.
    pub fn from_json(file: &str, v: &serde_json::Value) -> Result<ScoringTree, XccdfError> {
        let raw: Raw =
            serde_json::from_value(v.clone()).map_err(|e| XccdfError::at(file, "scoring.xccdf", e.to_string()))?;
        let mut seen = HashSet::new();
        let items = raw
            .tree
            .into_iter()
            .map(|n| node_from_raw(file, n, &mut seen))
            .collect::<Result<_, _>>()?;
        Ok(ScoringTree {
            benchmark: raw.benchmark,
            benchmark_version: raw.benchmark_version,
            profile: raw.profile,
            refine_weights: raw.refine_weights,
            items,
        })
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    benchmark: String,
    #[serde(default)]
    benchmark_version: String,
    #[serde(default)]
    profile: Option<String>,
    #[serde(default = "yes")]
    refine_weights: bool,
    tree: Vec<RawNode>,
}

fn yes() -> bool {
    true
}

fn one() -> f64 {
    1.0
}

fn is_one(w: &f64) -> bool {
    *w == 1.0
}

#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawNode {
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    title: String,
    #[serde(default = "one", skip_serializing_if = "is_one")]
    weight: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    role: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    items: Vec<RawNode>,
    /// Rule metadata written by the importer (severity, CCE/CVE idents);
    /// not used in scoring.
    #[serde(default, rename = "severity", skip_serializing)]
    _severity: Option<String>,
    #[serde(default, rename = "idents", skip_serializing)]
    _idents: Vec<String>,
}

impl From<&ScoringTree> for Raw {
    fn from(t: &ScoringTree) -> Raw {
        fn conv(n: &Node) -> RawNode {
            match n {
                Node::Group {
                    id,
                    title,
                    weight,
                    items,
                } => RawNode {
                    group: Some(id.clone()),
                    title: title.clone(),
                    weight: *weight,
                    items: items.iter().map(conv).collect(),
                    ..Default::default()
                },
                Node::Rule { id, weight, role } => RawNode {
                    rule: Some(id.clone()),
                    weight: *weight,
                    role: (*role != Role::Full).then(|| role.as_str().to_string()),
                    ..Default::default()
                },
            }
        }
        Raw {
            benchmark: t.benchmark.clone(),
            benchmark_version: t.benchmark_version.clone(),
            profile: t.profile.clone(),
            refine_weights: t.refine_weights,
            tree: t.items.iter().map(conv).collect(),
        }
    }
}

fn node_from_raw(file: &str, n: RawNode, seen: &mut HashSet<String>) -> Result<Node, XccdfError> {
    let at = |id: &str| format!("scoring.xccdf: {id}");
    let weight_ok = |id: &str, w: f64| {
        if w >= 0.0 && w.is_finite() {
            Ok(w)
        } else {
            Err(XccdfError::at(
                file,
                at(id),
                format!("bad weight {w} (a non-negative number)"),
            ))
        }
    };
    match (n.group, n.rule) {
        (Some(id), None) => {
            if !seen.insert(id.clone()) {
                return Err(XccdfError::at(file, at(&id), "listed twice"));
            }
            if n.role.is_some() {
                return Err(XccdfError::at(file, at(&id), "a group has no role"));
            }
            let weight = weight_ok(&id, n.weight)?;
            let items = n
                .items
                .into_iter()
                .map(|c| node_from_raw(file, c, seen))
                .collect::<Result<_, _>>()?;
            Ok(Node::Group {
                id,
                title: n.title,
                weight,
                items,
            })
        }
        (None, Some(id)) => {
            if !seen.insert(id.clone()) {
                return Err(XccdfError::at(file, at(&id), "listed twice"));
            }
            if !n.items.is_empty() {
                return Err(XccdfError::at(file, at(&id), "a rule has no items"));
            }
            let role = match n.role.as_deref() {
                None => Role::Full,
                Some(r) => Role::parse(r).ok_or_else(|| {
                    XccdfError::at(file, at(&id), format!("bad role {r:?} (full, unscored, unchecked)"))
                })?,
            };
            Ok(Node::Rule {
                weight: weight_ok(&id, n.weight)?,
                id,
                role,
            })
        }
        _ => Err(XccdfError::at(
            file,
            "scoring.xccdf",
            "each tree entry needs exactly one of \"group\" or \"rule\"",
        )),
    }
}

/// Resolves a benchmark for a profile (None: the benchmark's defaults).
///
/// Selection follows XCCDF and OpenSCAP: an item is selected when its parent
/// is selected and the last `select` of the profile chain (`extends` first)
/// naming it, or its cluster, says so, else its own `@selected`; an
/// unselected Group deselects its subtree. Weights and roles come from the
/// profile chain's last `refine-rule` for the item when `refine_weights`
/// (weights; roles always), else from the benchmark. Unselected rules and
/// groups without a selected rule are left out: they contribute to no model.
pub fn resolve(
    file: &str,
    bench: &Benchmark,
    profile: Option<&str>,
    refine_weights: bool,
) -> Result<ScoringTree, XccdfError> {
    let mut selects: HashMap<String, bool> = HashMap::new();
    let mut weights: HashMap<String, f64> = HashMap::new();
    let mut roles: HashMap<String, Role> = HashMap::new();
    if let Some(pid) = profile {
        let mut chain = Vec::new();
        let mut cur = Some(pid.to_string());
        while let Some(id) = cur {
            if chain.contains(&id) {
                return Err(XccdfError::at(
                    file,
                    format!("Profile {pid}"),
                    "extends itself (a cycle)",
                ));
            }
            let p = bench.profile(&id).ok_or_else(|| {
                let names: Vec<&str> = bench.profiles.iter().map(|p| p.id.as_str()).collect();
                XccdfError::at(
                    file,
                    format!("Profile {id}"),
                    format!(
                        "no such profile in Benchmark {} (it has: {})",
                        bench.id,
                        names.join(", ")
                    ),
                )
            })?;
            cur = p.extends.clone();
            chain.push(id);
        }
        for id in chain.iter().rev() {
            let p = bench.profile(id).expect("found above");
            for (idref, sel) in &p.selects {
                let members = bench.cluster_members(idref);
                if members.is_empty() {
                    selects.insert(idref.clone(), *sel);
                } else {
                    for m in members {
                        selects.insert(m, *sel);
                    }
                }
            }
            for r in &p.refine_rules {
                let mut targets = bench.cluster_members(&r.idref);
                targets.push(r.idref.clone());
                for t in targets {
                    if let (true, Some(w)) = (refine_weights, r.weight) {
                        weights.insert(t.clone(), w);
                    }
                    if let Some(role) = r.role {
                        roles.insert(t, role);
                    }
                }
            }
        }
    }
    let ctx = Ctx {
        selects: &selects,
        weights: &weights,
        roles: &roles,
    };
    Ok(ScoringTree {
        benchmark: bench.id.clone(),
        benchmark_version: bench.version.clone(),
        profile: profile.map(str::to_string),
        refine_weights,
        items: resolve_items(&bench.items, &ctx),
    })
}

struct Ctx<'a> {
    selects: &'a HashMap<String, bool>,
    weights: &'a HashMap<String, f64>,
    roles: &'a HashMap<String, Role>,
}

fn resolve_items(items: &[Item], ctx: &Ctx) -> Vec<Node> {
    let mut out = Vec::new();
    for it in items {
        let own = match it {
            Item::Group(g) => g.selected,
            Item::Rule(r) => r.selected,
        };
        if !ctx.selects.get(it.id()).copied().unwrap_or(own) {
            continue;
        }
        match it {
            Item::Group(Group {
                id,
                title,
                weight,
                items,
                ..
            }) => {
                let children = resolve_items(items, ctx);
                if !children.is_empty() {
                    out.push(Node::Group {
                        id: id.clone(),
                        title: title.clone(),
                        weight: ctx.weights.get(id).copied().unwrap_or(*weight),
                        items: children,
                    });
                }
            }
            Item::Rule(r) => out.push(Node::Rule {
                id: r.id.clone(),
                weight: ctx.weights.get(&r.id).copied().unwrap_or(r.weight),
                role: ctx.roles.get(&r.id).copied().unwrap_or(r.role),
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::benchmark::parse_benchmark;

    const B: &str = r#"<Benchmark xmlns="http://checklists.nist.gov/xccdf/1.2" id="b">
  <version>2</version>
  <Profile id="base"><select idref="r3" selected="true"/><refine-rule idref="r1" weight="4"/></Profile>
  <Profile id="child" extends="base"><select idref="g2" selected="false"/><refine-rule idref="g1" weight="3" /><refine-rule idref="r2" role="unscored"/></Profile>
  <Profile id="cluster"><select idref="c1" selected="false"/></Profile>
  <Group id="g1" weight="2">
    <Rule id="r1"/>
    <Rule id="r2" weight="0.5"/>
  </Group>
  <Group id="g2"><Rule id="r3" selected="false"/><Rule id="r4" cluster-id="c1"/></Group>
  <Group id="g3" selected="false"><Rule id="r5"/></Group>
</Benchmark>"#;

    fn rules(t: &ScoringTree) -> Vec<(String, f64, Role)> {
        t.rules().into_iter().map(|(i, w, r)| (i.to_string(), w, r)).collect()
    }

    #[test]
    fn selection_weights_roles() {
        let b = parse_benchmark("b.xml", B, None).unwrap();
        let t = resolve("b.xml", &b, None, true).unwrap();
        // defaults: r3 unselected, g3 deselects r5
        assert_eq!(
            rules(&t),
            [
                ("r1".into(), 1.0, Role::Full),
                ("r2".into(), 0.5, Role::Full),
                ("r4".into(), 1.0, Role::Full)
            ]
        );
        let t = resolve("b.xml", &b, Some("base"), true).unwrap();
        assert_eq!(rules(&t).len(), 4, "r3 selected by the profile");
        assert_eq!(rules(&t)[0].1, 4.0, "refine-rule weight");
        let t = resolve("b.xml", &b, Some("base"), false).unwrap();
        assert_eq!(rules(&t)[0].1, 1.0, "benchmark weight when refine weights are off");
        let t = resolve("b.xml", &b, Some("child"), true).unwrap();
        // g2 deselected; r1 keeps base's weight 4; g1 weight 3; r2 unscored
        assert_eq!(
            rules(&t),
            [("r1".into(), 4.0, Role::Full), ("r2".into(), 0.5, Role::Unscored)]
        );
        let Node::Group { weight, .. } = &t.items[0] else {
            panic!()
        };
        assert_eq!(*weight, 3.0);
        let t = resolve("b.xml", &b, Some("cluster"), true).unwrap();
        assert_eq!(rules(&t).len(), 2, "r4 deselected through its cluster");
        let e = resolve("b.xml", &b, Some("nope"), true).unwrap_err().to_string();
        assert!(
            e.starts_with("b.xml: Profile nope: no such profile in Benchmark b (it has: base, child, cluster)"),
            "{e}"
        );
    }

    #[test]
    fn json_round_trip_and_errors() {
        let b = parse_benchmark("b.xml", B, None).unwrap();
        let t = resolve("b.xml", &b, Some("child"), true).unwrap();
        let back = ScoringTree::from_json("x.yaml", &t.to_json()).unwrap();
        assert_eq!(back, t);
        let bad = serde_json::json!({"benchmark": "b", "tree": [{"rule": "r", "group": "g"}]});
        let e = ScoringTree::from_json("x.yaml", &bad).unwrap_err().to_string();
        assert!(e.contains("exactly one of"), "{e}");
        let bad = serde_json::json!({"benchmark": "b", "tree": [{"rule": "r", "weight": -1.0}]});
        let e = ScoringTree::from_json("x.yaml", &bad).unwrap_err().to_string();
        assert_eq!(e, "x.yaml: scoring.xccdf: r: bad weight -1 (a non-negative number)");
        let bad = serde_json::json!({"benchmark": "b", "tree": [{"rule": "r"}, {"rule": "r"}]});
        assert!(ScoringTree::from_json("x.yaml", &bad)
            .unwrap_err()
            .to_string()
            .contains("listed twice"));
        let bad = serde_json::json!({"benchmark": "b", "tree": [], "extra": 1});
        assert!(ScoringTree::from_json("x.yaml", &bad)
            .unwrap_err()
            .to_string()
            .contains("unknown field"));
    }
}
