//! Importing a benchmark as a posture baseline: the category heuristic (and
//! its override file), the result-to-state mapping, and the baseline YAML.
//!
//! Each selected Rule with role `full` and a weight above 0 becomes a control
//! (id = the rule id, points = 100 x weight) whose check reads the setting
//! `xccdf:<rule id>`:
//!
//! | result | posture state |
//! | --- | --- |
//! | pass, fixed | PASS |
//! | fail | FAIL |
//! | error, unknown | UNKNOWN (or FAIL with [`ErrorAs::Fail`]) |
//! | notapplicable, notchecked, notselected, informational, no result | UNKNOWN (outside every sum) |
//!
//! Unscored, unchecked and weight-0 rules are kept in the scoring tree only
//! (no posture control): the XCCDF models still see them as OpenSCAP does.

use crate::benchmark::{Benchmark, Group, Item, Role, Rule};
use crate::result::{setting_key, XccdfError, XccdfResult};
use crate::tree::{Node, ScoringTree};
use posture_core::{Category, Remediation};
use regex::Regex;
use std::collections::HashMap;
use std::fmt::Write;

/// The category heuristic: for a rule, the groups on its path are tried from
/// the innermost outwards, then the rule itself; the first whose id (the
/// part after `_group_`/`_rule_`) or title contains a keyword decides. Within
/// one candidate the categories are tried in this order. No match: `os`.
pub const CATEGORY_KEYWORDS: [(Category, &[&str]); 5] = [
    (
        Category::SecurityControls,
        &[
            "audit",
            "logging",
            "syslog",
            "journald",
            "logrotate",
            "log_rotation",
            "selinux",
            "apparmor",
            "aide",
            "integrity",
            "fips",
            "crypto",
            "antivirus",
            "endpoint_security",
            "mcafee",
            "intrusion",
            "malware",
        ],
    ),
    (
        Category::Accounts,
        &[
            "account",
            "password",
            "passwd",
            "pam",
            "login",
            "sudo",
            "root_logins",
            "user",
            "shadow",
            "authentication",
            "smart_card",
            "screen_lock",
            "banner",
        ],
    ),
    (
        Category::Network,
        &[
            "network",
            "firewall",
            "iptables",
            "nftables",
            "ufw",
            "ipv6",
            "ipsec",
            "wireless",
            "ssh",
            "ssl",
            "tls",
            "sysctl_net",
            "snmp",
            "tcp",
        ],
    ),
    (
        Category::Application,
        &[
            "service", "software", "http", "ftp", "mail", "postfix", "dovecot", "ldap", "docker", "gnome", "x11",
            "xwindows", "printing", "cups", "samba", "squid", "avahi", "dhcp", "dns", "nfs", "cron", "package",
            "browser", "apt",
        ],
    ),
    (
        Category::Os,
        &[
            "system",
            "kernel",
            "boot",
            "grub",
            "partition",
            "mount",
            "permission",
            "file",
            "sysctl",
            "coredump",
            "updat",
            "entropy",
        ],
    ),
];

/// How a rule's `error` and `unknown` results count in posture's own score.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorAs {
    /// UNKNOWN: outside every sum, like a setting the agent could not read
    /// (the default: an error is no evidence either way).
    Unknown,
    /// FAIL, as the XCCDF models count them.
    Fail,
}

/// A user's category overrides: `PATTERN: category` entries of a YAML
/// mapping, where a pattern is a rule or group id, `*` matching any text.
/// For a rule, its own id is tried first, then its groups from the innermost
/// outwards; the first entry (in file order) matching a candidate wins.
#[derive(Clone, Debug, Default)]
pub struct CategoryMap {
    entries: Vec<(Regex, Category)>,
}

impl CategoryMap {
    /// Reads a category map file (YAML without aliases: a few lines of anchors and aliases
    /// could expand without bound).
    pub fn parse(file: &str, text: &str) -> Result<CategoryMap, XccdfError> {
        use posture_core::yaml::{self, Kind};
        let docs = yaml::parse(text).map_err(|(line, e)| XccdfError::file(file, format!("line {line}: {e}")))?;
        let mut entries = Vec::new();
        let Some(doc) = docs.first() else {
            return Ok(CategoryMap::default());
        };
        let Kind::Map(h) = &doc.kind else {
            return Err(XccdfError::file(
                file,
                "expected a mapping of rule or group id patterns to categories",
            ));
        };
        for (pat, v) in h {
            let Kind::Str(cat) = &v.kind else {
                return Err(XccdfError::at(
                    file,
                    pat,
                    format!("line {}: the category must be a string", v.line),
                ));
            };
            let category = Category::parse(cat).ok_or_else(|| {
                XccdfError::at(
                    file,
                    pat,
                    format!("unknown category {cat:?} (application, os, network, accounts, security_controls)"),
                )
            })?;
            let re = format!("^{}$", regex::escape(pat).replace(r"\*", ".*"));
            let re = Regex::new(&re)
                .map_err(|e| XccdfError::at(file, pat, format!("line {}: the pattern cannot be used: {e}", v.line)))?;
            entries.push((re, category));
        }
        Ok(CategoryMap { entries })
    }

    fn lookup(&self, id: &str) -> Option<Category> {
        self.entries.iter().find(|(re, _)| re.is_match(id)).map(|(_, c)| *c)
    }
}

/// Where a rule's category came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CategorySource {
    /// The category map file.
    Map,
    /// The keyword heuristic.
    Keyword,
    /// Nothing matched: the default (os).
    Default,
}

fn short_id(id: &str) -> &str {
    for marker in ["_group_", "_rule_"] {
        if let Some(i) = id.find(marker) {
            return &id[i + marker.len()..];
        }
    }
    id
}

fn keyword_category(id: &str, title: &str) -> Option<Category> {
    let text = format!("{} {}", short_id(id), title).to_lowercase();
    CATEGORY_KEYWORDS
        .iter()
        .find(|(_, kws)| kws.iter().any(|k| text.contains(k)))
        .map(|(c, _)| *c)
}

/// A rule's category: the map file first (rule, then groups inside out),
/// then the keyword heuristic (groups inside out, then the rule), else os.
pub fn categorize(rule: &Rule, groups: &[&Group], map: &CategoryMap) -> (Category, CategorySource) {
    if let Some(c) = std::iter::once(rule.id.as_str())
        .chain(groups.iter().rev().map(|g| g.id.as_str()))
        .find_map(|id| map.lookup(id))
    {
        return (c, CategorySource::Map);
    }
    groups
        .iter()
        .rev()
        .map(|g| (g.id.as_str(), g.title.as_str()))
        .chain(std::iter::once((rule.id.as_str(), rule.title.as_str())))
        .find_map(|(id, title)| keyword_category(id, title))
        .map_or((Category::Os, CategorySource::Default), |c| {
            (c, CategorySource::Keyword)
        })
}

fn remediation_of(rule: &Rule, groups: &[&Group]) -> Remediation {
    let text = std::iter::once(short_id(&rule.id))
        .chain(groups.iter().map(|g| short_id(&g.id)))
        .collect::<Vec<_>>()
        .join(" ");
    if ["updating", "patches", "security_patches", "update"]
        .iter()
        .any(|k| text.contains(k))
    {
        Remediation::SoftwareUpdate
    } else {
        Remediation::ConfigurationChange
    }
}

/// Import options.
#[derive(Clone, Debug)]
pub struct ImportOptions {
    /// The profile (None: the benchmark's defaults).
    pub profile: Option<String>,
    /// Apply the profile's refine-rule weights (OpenSCAP 1.3 does not when
    /// it computes scores).
    pub refine_weights: bool,
    /// The baseline id (default: derived from the benchmark and profile).
    pub baseline_id: Option<String>,
    /// How error/unknown results count in posture's score.
    pub error_as: ErrorAs,
    /// Category overrides.
    pub categories: CategoryMap,
    /// The source file name, written in the header comment.
    pub source: String,
}

/// What an import produced.
#[derive(Clone, Debug)]
pub struct Imported {
    /// The baseline YAML.
    pub yaml: String,
    /// The resolved scoring tree.
    pub tree: ScoringTree,
    /// Controls written.
    pub controls: usize,
    /// Selected rules kept in the tree only (unscored, unchecked, weight 0).
    pub tree_only: usize,
    /// Controls per category, in [`Category::ALL`] order.
    pub per_category: Vec<(Category, usize)>,
    /// Controls whose category is the default (no keyword, no map entry).
    pub defaulted: usize,
}

/// A YAML value with ordered mappings, for writing baselines.
enum Y {
    S(String),
    N(f64),
    B(bool),
    Seq(Vec<Y>),
    Map(Vec<(&'static str, Y)>),
}

fn s(x: impl Into<String>) -> Y {
    Y::S(x.into())
}

/// A string scalar: plain when it is an identifier-like word YAML reads back
/// as the same string, double-quoted (JSON escapes, valid YAML) otherwise.
fn q(x: &str) -> String {
    let plain = x.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && x.chars().all(|c| c.is_ascii_alphanumeric() || "_-./".contains(c))
        && !["true", "false", "null", "yes", "no", "on", "off", "y", "n"].contains(&x.to_ascii_lowercase().as_str());
    if plain {
        x.to_string()
    } else {
        serde_json::to_string(x).expect("strings serialize")
    }
}

fn num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

/// Whether a value fits on one line as a flow collection.
fn flat(y: &Y) -> bool {
    match y {
        Y::Seq(items) => items.iter().all(|i| matches!(i, Y::S(_) | Y::N(_) | Y::B(_))),
        Y::Map(entries) => entries.iter().all(|(_, v)| match v {
            Y::Seq(_) => flat(v),
            Y::Map(_) => false,
            _ => true,
        }),
        _ => true,
    }
}

fn inline(y: &Y) -> String {
    match y {
        Y::S(x) => q(x),
        Y::N(x) => num(*x),
        Y::B(b) => b.to_string(),
        Y::Seq(items) => format!("[{}]", items.iter().map(inline).collect::<Vec<_>>().join(", ")),
        Y::Map(entries) => format!(
            "{{ {} }}",
            entries
                .iter()
                .map(|(k, v)| format!("{k}: {}", inline(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn emit_map(entries: &[(&'static str, Y)], indent: usize, first_prefix: Option<&str>, out: &mut String) {
    for (i, (k, v)) in entries.iter().enumerate() {
        let pad = match (i, first_prefix) {
            (0, Some(p)) => p.to_string(),
            _ => " ".repeat(indent),
        };
        if flat(v) && !matches!(v, Y::Seq(items) if items.len() > 8) {
            let _ = writeln!(out, "{pad}{k}: {}", inline(v));
        } else {
            let _ = writeln!(out, "{pad}{k}:");
            emit_block(v, indent + 2, out);
        }
    }
}

fn emit_block(y: &Y, indent: usize, out: &mut String) {
    match y {
        Y::Map(entries) => emit_map(entries, indent, None, out),
        Y::Seq(items) => {
            for item in items {
                let pad = " ".repeat(indent);
                match item {
                    Y::Map(entries) if !flat(item) || entries.len() > 3 => {
                        emit_map(entries, indent + 2, Some(&format!("{pad}- ")), out)
                    }
                    other => {
                        let _ = writeln!(out, "{pad}- {}", inline(other));
                    }
                }
            }
        }
        other => {
            let _ = writeln!(out, "{}{}", " ".repeat(indent), inline(other));
        }
    }
}

/// Rule metadata by id, for the tree entries.
fn rule_index(bench: &Benchmark) -> HashMap<String, (Rule, Vec<Group>)> {
    let mut out = HashMap::new();
    bench.walk(&mut |it, path| {
        if let Item::Rule(r) = it {
            let groups = path.iter().map(|g| (*g).clone()).map(strip).collect();
            out.insert(r.id.clone(), (r.clone(), groups));
        }
    });
    out
}

/// A group without its items (the path of a rule needs ids and titles only).
fn strip(mut g: Group) -> Group {
    g.items.clear();
    g
}

fn tree_yaml(nodes: &[Node], rules: &HashMap<String, (Rule, Vec<Group>)>) -> Y {
    Y::Seq(
        nodes
            .iter()
            .map(|n| match n {
                Node::Group {
                    id,
                    title,
                    weight,
                    items,
                } => {
                    let mut e = vec![("group", s(id)), ("title", s(title))];
                    if *weight != 1.0 {
                        e.push(("weight", Y::N(*weight)));
                    }
                    e.push(("items", tree_yaml(items, rules)));
                    Y::Map(e)
                }
                Node::Rule { id, weight, role } => {
                    let mut e = vec![("rule", s(id))];
                    if *weight != 1.0 {
                        e.push(("weight", Y::N(*weight)));
                    }
                    if *role != Role::Full {
                        e.push(("role", s(role.as_str())));
                    }
                    if let Some((r, _)) = rules.get(id) {
                        if r.severity != "unknown" {
                            e.push(("severity", s(&r.severity)));
                        }
                        let idents: Vec<Y> = r.idents.iter().map(|i| s(&i.value)).collect();
                        if !idents.is_empty() {
                            e.push(("idents", Y::Seq(idents)));
                        }
                    }
                    Y::Map(e)
                }
            })
            .collect(),
    )
}

fn default_baseline_id(bench: &Benchmark, profile: Option<&str>) -> String {
    let b = short_after(&bench.id, "_benchmark_").to_lowercase();
    match profile {
        Some(p) => format!("xccdf-{b}-{}", short_after(p, "_profile_")),
        None => format!("xccdf-{b}"),
    }
    .chars()
    .map(|c| {
        if c.is_alphanumeric() || "-_.".contains(c) {
            c
        } else {
            '-'
        }
    })
    .collect()
}

fn short_after<'a>(id: &'a str, marker: &str) -> &'a str {
    id.find(marker).map_or(id, |i| &id[i + marker.len()..])
}

/// Imports a benchmark for a profile: the posture baseline YAML (SPEC
/// section 2, plus a `scoring` section choosing every model and carrying the
/// scoring tree).
pub fn import(file: &str, bench: &Benchmark, opts: &ImportOptions) -> Result<Imported, XccdfError> {
    let tree = crate::tree::resolve(file, bench, opts.profile.as_deref(), opts.refine_weights)?;
    let rules = rule_index(bench);
    let cve = Regex::new(r"^CVE-\d{4}-\d{4,}$").expect("static regex");
    let mut missing: Vec<&str> = Vec::new();
    if opts.error_as == ErrorAs::Unknown {
        missing.extend([XccdfResult::Error, XccdfResult::Unknown].map(XccdfResult::as_str));
    }
    missing.extend(
        [
            XccdfResult::NotApplicable,
            XccdfResult::NotChecked,
            XccdfResult::NotSelected,
            XccdfResult::Informational,
        ]
        .map(XccdfResult::as_str),
    );
    let mut controls = Vec::new();
    let (mut tree_only, mut defaulted) = (0, 0);
    let mut per_category: Vec<(Category, usize)> = Category::ALL.iter().map(|c| (*c, 0)).collect();
    for (id, weight, role) in tree.rules() {
        if role != Role::Full || weight <= 0.0 {
            tree_only += 1;
            continue;
        }
        let (rule, groups) = rules.get(id).expect("tree rules come from the benchmark");
        let group_refs: Vec<&Group> = groups.iter().collect();
        let (category, source) = categorize(rule, &group_refs, &opts.categories);
        if source == CategorySource::Default {
            defaulted += 1;
        }
        per_category
            .iter_mut()
            .find(|(c, _)| *c == category)
            .expect("all categories")
            .1 += 1;
        let title = if rule.title.is_empty() {
            id.to_string()
        } else {
            rule.title.clone()
        };
        let mut e = vec![
            ("id", s(id)),
            ("title", s(title)),
            ("category", s(category.as_str())),
            ("points", Y::N((100.0 * weight * 1e6).round() / 1e6)),
            ("remediation", s(remediation_of(rule, &group_refs).as_str())),
            (
                "check",
                Y::Map(vec![
                    ("key", s(setting_key(id))),
                    ("op", s("in")),
                    ("value", Y::Seq(vec![s("pass"), s("fixed")])),
                    ("missing_values", Y::Seq(missing.iter().map(|m| s(*m)).collect())),
                ]),
            ),
            ("on_missing", s("unknown")),
        ];
        let cves: Vec<Y> = rule
            .idents
            .iter()
            .filter(|i| cve.is_match(&i.value))
            .map(|i| s(&i.value))
            .collect();
        if !cves.is_empty() {
            e.push(("vulnerabilities", Y::Seq(cves)));
        }
        if !rule.rationale.is_empty() {
            e.push(("rationale", s(&rule.rationale)));
        }
        controls.push(Y::Map(e));
    }
    if controls.is_empty() {
        return Err(XccdfError::file(
            file,
            format!(
                "profile {} selects no scored rule with a weight above 0: nothing to import",
                opts.profile.as_deref().unwrap_or("(none)")
            ),
        ));
    }
    let profile_title = opts
        .profile
        .as_deref()
        .and_then(|p| bench.profile(p))
        .map(|p| p.title.clone())
        .unwrap_or_default();
    let title = if profile_title.is_empty() {
        bench.title.clone()
    } else {
        format!("{} ({})", bench.title, profile_title)
    };
    let mut xccdf = vec![
        ("benchmark", s(&tree.benchmark)),
        ("benchmark_version", s(&tree.benchmark_version)),
    ];
    if let Some(p) = &tree.profile {
        xccdf.push(("profile", s(p)));
    }
    xccdf.push(("refine_weights", Y::B(tree.refine_weights)));
    xccdf.push(("tree", tree_yaml(&tree.items, &rules)));
    let n_controls = controls.len();
    let doc = Y::Map(vec![
        (
            "baseline",
            s(opts
                .baseline_id
                .clone()
                .unwrap_or_else(|| default_baseline_id(bench, opts.profile.as_deref()))),
        ),
        ("version", s(&bench.version)),
        ("title", s(title)),
        (
            "scoring",
            Y::Map(vec![
                (
                    "models",
                    Y::Seq(posture_core::baseline::SCORING_MODELS.iter().map(|m| s(*m)).collect()),
                ),
                ("xccdf", Y::Map(xccdf)),
            ]),
        ),
        ("controls", Y::Seq(controls)),
    ]);
    let mut yaml = format!(
        "# Generated by `posture baseline import-xccdf` from {}\n# Benchmark {} {}, profile {}; rule results are read from the settings xccdf:<rule id>.\n",
        opts.source,
        bench.id,
        bench.version,
        opts.profile.as_deref().unwrap_or("(none: benchmark defaults)")
    );
    emit_block(&doc, 0, &mut yaml);
    Ok(Imported {
        yaml,
        tree,
        controls: n_controls,
        tree_only,
        per_category,
        defaulted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::benchmark::parse_benchmark;
    use posture_core::Catalog;

    const B: &str = r#"<Benchmark xmlns="http://checklists.nist.gov/xccdf/1.2" id="xccdf_org.test_benchmark_T1">
  <title>Guide "T1"</title>
  <version>0.9</version>
  <Profile id="xccdf_org.test_profile_std"><title>Standard</title>
    <select idref="xccdf_org.test_rule_fw" selected="true"/>
    <refine-rule idref="xccdf_org.test_rule_pw" weight="2.5"/>
  </Profile>
  <Group id="xccdf_org.test_group_system"><title>System Settings</title>
    <Group id="xccdf_org.test_group_accounts-pam"><title>Protect Accounts by Configuring PAM</title>
      <Rule id="xccdf_org.test_rule_pw" severity="high"><title>Set Password Minimum Length</title>
        <rationale>Long <b>passwords</b>
          resist guessing.</rationale>
        <ident system="https://ncp.nist.gov/cce">CCE-80652-1</ident>
        <ident system="http://cve.mitre.org">CVE-2021-4034</ident>
      </Rule>
      <Rule id="xccdf_org.test_rule_info" role="unscored"><title>Informational</title></Rule>
    </Group>
    <Group id="xccdf_org.test_group_network-firewalld"><title>firewalld</title>
      <Rule id="xccdf_org.test_rule_fw" selected="false"><title>Enable firewalld</title></Rule>
    </Group>
    <Group id="xccdf_org.test_group_misc"><title>Misc</title>
      <Rule id="xccdf_org.test_rule_zzz"><title>Something</title></Rule>
    </Group>
  </Group>
</Benchmark>"#;

    fn opts() -> ImportOptions {
        ImportOptions {
            profile: Some("xccdf_org.test_profile_std".into()),
            refine_weights: true,
            baseline_id: None,
            error_as: ErrorAs::Unknown,
            categories: CategoryMap::default(),
            source: "t1.xml".into(),
        }
    }

    #[test]
    fn imports_a_valid_baseline() {
        let bench = parse_benchmark("t1.xml", B, None).unwrap();
        let imp = import("t1.xml", &bench, &opts()).unwrap();
        assert_eq!((imp.controls, imp.tree_only, imp.defaulted), (3, 1, 0), "{}", imp.yaml);
        let cat = Catalog::from_sources(&[("t1.yaml", imp.yaml.as_str())]).unwrap_or_else(|e| {
            panic!("{}\n{:#?}", imp.yaml, e);
        });
        assert_eq!(cat.baselines[0].id, "xccdf-t1-std");
        assert_eq!(cat.baselines[0].title, "Guide \"T1\" (Standard)");
        let pw = &cat.controls[cat.control_idx("xccdf_org.test_rule_pw").unwrap() as usize];
        assert_eq!(pw.category, Category::Accounts);
        assert_eq!(pw.points, 250_000_000, "100 x refined weight 2.5");
        assert_eq!(pw.vulnerabilities, ["CVE-2021-4034"]);
        assert_eq!(pw.rationale, "Long passwords resist guessing.");
        let fw = &cat.controls[cat.control_idx("xccdf_org.test_rule_fw").unwrap() as usize];
        assert_eq!(fw.category, Category::Network);
        let zzz = &cat.controls[cat.control_idx("xccdf_org.test_rule_zzz").unwrap() as usize];
        assert_eq!(
            zzz.category,
            Category::Os,
            "from the outer group's title \"System Settings\""
        );
        assert!(
            cat.control_idx("xccdf_org.test_rule_info").is_none(),
            "unscored: tree only"
        );
        // the tree read back from the baseline equals the resolved one
        let scoring = cat.baselines[0].scoring.as_ref().unwrap();
        assert_eq!(scoring.models.len(), 5);
        let back = ScoringTree::from_json("t1.yaml", scoring.xccdf.as_ref().unwrap()).unwrap();
        assert_eq!(back, imp.tree);
        assert!(
            imp.yaml.contains("idents: [CCE-80652-1, CVE-2021-4034]"),
            "{}",
            imp.yaml
        );
    }

    #[test]
    fn result_strings_map_to_states() {
        use posture_core::check::Tri;
        let bench = parse_benchmark("t1.xml", B, None).unwrap();
        let eval = |error_as: ErrorAs, value: &str| {
            let imp = import("t1.xml", &bench, &ImportOptions { error_as, ..opts() }).unwrap();
            let cat = Catalog::from_sources(&[("t1.yaml", imp.yaml.as_str())]).unwrap();
            let c = &cat.controls[0];
            let v = posture_core::Value::String(value.into());
            c.check.eval(&|l| cat.leaves[l as usize].eval(Some(&v)))
        };
        use ErrorAs::*;
        assert_eq!(eval(Unknown, "pass"), Tri::Pass);
        assert_eq!(eval(Unknown, "fixed"), Tri::Pass);
        assert_eq!(eval(Unknown, "fail"), Tri::Fail);
        for v in [
            "error",
            "unknown",
            "notapplicable",
            "notchecked",
            "notselected",
            "informational",
        ] {
            assert_eq!(eval(Unknown, v), Tri::Missing, "{v} -> MISSING -> on_missing unknown");
        }
        assert_eq!(eval(Fail, "error"), Tri::Fail);
        assert_eq!(eval(Fail, "unknown"), Tri::Fail);
        assert_eq!(eval(Fail, "notapplicable"), Tri::Missing);
    }

    #[test]
    fn category_map_overrides() {
        let bench = parse_benchmark("t1.xml", B, None).unwrap();
        let map = CategoryMap::parse(
            "map.yaml",
            "xccdf_org.test_rule_pw: security_controls\n\"*_group_system\": application\n",
        )
        .unwrap();
        let imp = import(
            "t1.xml",
            &bench,
            &ImportOptions {
                categories: map,
                ..opts()
            },
        )
        .unwrap();
        let cat = Catalog::from_sources(&[("t1.yaml", imp.yaml.as_str())]).unwrap();
        let get = |id: &str| cat.controls[cat.control_idx(id).unwrap() as usize].category;
        assert_eq!(get("xccdf_org.test_rule_pw"), Category::SecurityControls, "rule entry");
        assert_eq!(
            get("xccdf_org.test_rule_fw"),
            Category::Application,
            "outer group entry"
        );
        let e = CategoryMap::parse("map.yaml", "x: nope\n").unwrap_err().to_string();
        assert_eq!(
            e,
            "map.yaml: x: unknown category \"nope\" (application, os, network, accounts, security_controls)"
        );
    }

    #[test]
    fn category_maps_refuse_aliases_and_huge_patterns() {
        // A "billion laughs": each level repeats the one before ten times.
        let mut bomb = String::from("a: &a [os,os,os,os,os,os,os,os,os,os]\n");
        for i in 1..9 {
            let p = (b'a' + i - 1) as char;
            let c = (b'a' + i) as char;
            bomb += &format!("{c}: &{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n");
        }
        let e = CategoryMap::parse("map.yaml", &bomb).unwrap_err().to_string();
        assert!(e.contains("aliases"), "{e}");
        // A pattern too large for the regex engine is an error, not a panic.
        let huge = format!("? \"{}\"\n: os\n", "*x".repeat(200_000));
        let e = CategoryMap::parse("map.yaml", &huge).unwrap_err().to_string();
        assert!(e.contains("the pattern cannot be used"), "{}", &e[..e.len().min(300)]);
    }

    #[test]
    fn heuristic_keywords() {
        let rule = |id: &str| Rule {
            id: id.into(),
            title: String::new(),
            selected: true,
            weight: 1.0,
            role: Role::Full,
            severity: "unknown".into(),
            cluster_id: None,
            idents: vec![],
            rationale: String::new(),
        };
        let group = |id: &str, title: &str| Group {
            id: id.into(),
            title: title.into(),
            selected: true,
            weight: 1.0,
            cluster_id: None,
            items: vec![],
        };
        let m = CategoryMap::default();
        let (services, ssh) = (
            group("x_group_services", "Services"),
            group("x_group_ssh_server", "SSH Server"),
        );
        assert_eq!(
            categorize(&rule("x_rule_a"), &[&services, &ssh], &m).0,
            Category::Network
        );
        assert_eq!(categorize(&rule("x_rule_a"), &[&services], &m).0, Category::Application);
        let audit = group("x_group_audit_login_events", "Record Login Events");
        assert_eq!(
            categorize(&rule("x_rule_a"), &[&audit], &m).0,
            Category::SecurityControls
        );
        assert_eq!(
            categorize(&rule("x_rule_zz"), &[], &m),
            (Category::Os, CategorySource::Default)
        );
    }

    #[test]
    fn nothing_to_import() {
        // without the profile: pw and zzz deselected, fw unselected by default, info unscored
        let t = B
            .replace(
                "<Rule id=\"xccdf_org.test_rule_pw\"",
                "<Rule selected=\"false\" id=\"xccdf_org.test_rule_pw\"",
            )
            .replace(
                "<Rule id=\"xccdf_org.test_rule_zzz\"",
                "<Rule selected=\"false\" id=\"xccdf_org.test_rule_zzz\"",
            );
        let bench = parse_benchmark("t1.xml", &t, None).unwrap();
        let e = import(
            "t1.xml",
            &bench,
            &ImportOptions {
                profile: None,
                ..opts()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("selects no scored rule"), "{e}");
    }
}
