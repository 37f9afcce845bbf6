//! Reading an XCCDF 1.2 Benchmark, plain or inside a SCAP source data stream:
//! the Group/Rule hierarchy with weights, default selection, roles, titles,
//! idents (CCE, CVE) and the Profiles (select, refine-rule, extends).

use crate::result::{children_x, is_x, line_of, parse_xml, text_of, XccdfError, XCCDF11_NS, XCCDF12_NS};

/// A rule's role (`@role`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Checked and scored (the default).
    Full,
    /// Checked, but left out of every score (OpenSCAP reports `informational`).
    Unscored,
    /// Not checked (OpenSCAP reports `notchecked`).
    Unchecked,
}

impl Role {
    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Full => "full",
            Role::Unscored => "unscored",
            Role::Unchecked => "unchecked",
        }
    }

    /// Parses an attribute value.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "full" => Some(Role::Full),
            "unscored" => Some(Role::Unscored),
            "unchecked" => Some(Role::Unchecked),
            _ => None,
        }
    }
}

/// An `ident` of a rule: a CCE, CVE or other identifier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ident {
    /// The naming system URI (e.g. `https://ncp.nist.gov/cce`).
    pub system: String,
    /// The identifier (e.g. `CCE-80645-5`).
    pub value: String,
}

/// A benchmark Rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// `@id`.
    pub id: String,
    /// First `title`, whitespace collapsed.
    pub title: String,
    /// `@selected` (default true).
    pub selected: bool,
    /// `@weight` (default 1.0).
    pub weight: f64,
    /// `@role` (default full).
    pub role: Role,
    /// `@severity` (default unknown).
    pub severity: String,
    /// `@cluster-id`, for selectors that name a cluster.
    pub cluster_id: Option<String>,
    /// The `ident` elements.
    pub idents: Vec<Ident>,
    /// The `rationale` text, whitespace collapsed.
    pub rationale: String,
}

/// A benchmark Group.
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    /// `@id`.
    pub id: String,
    /// First `title`, whitespace collapsed.
    pub title: String,
    /// `@selected` (default true).
    pub selected: bool,
    /// `@weight` (default 1.0).
    pub weight: f64,
    /// `@cluster-id`.
    pub cluster_id: Option<String>,
    /// Child Groups and Rules, in document order.
    pub items: Vec<Item>,
}

/// A Group or a Rule.
#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    /// A Group and its subtree.
    Group(Group),
    /// A Rule.
    Rule(Rule),
}

impl Item {
    /// The item's id.
    pub fn id(&self) -> &str {
        match self {
            Item::Group(g) => &g.id,
            Item::Rule(r) => &r.id,
        }
    }

    fn cluster_id(&self) -> Option<&str> {
        match self {
            Item::Group(g) => g.cluster_id.as_deref(),
            Item::Rule(r) => r.cluster_id.as_deref(),
        }
    }
}

/// A profile's `refine-rule`.
#[derive(Clone, Debug, PartialEq)]
pub struct RefineRule {
    /// The Rule, Group or cluster it refines.
    pub idref: String,
    /// `@weight`, when given.
    pub weight: Option<f64>,
    /// `@role`, when given.
    pub role: Option<Role>,
    /// `@severity`, when given.
    pub severity: Option<String>,
}

/// A Profile.
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    /// `@id`.
    pub id: String,
    /// First `title`.
    pub title: String,
    /// `@extends`: the profile whose selects and refinements come first.
    pub extends: Option<String>,
    /// `select` elements: (idref, selected), in document order.
    pub selects: Vec<(String, bool)>,
    /// `refine-rule` elements, in document order.
    pub refine_rules: Vec<RefineRule>,
}

/// An XCCDF 1.2 Benchmark.
#[derive(Clone, Debug, PartialEq)]
pub struct Benchmark {
    /// `@id`.
    pub id: String,
    /// First `title`.
    pub title: String,
    /// `version` text.
    pub version: String,
    /// The scoring models the benchmark lists (`model/@system`).
    pub models: Vec<String>,
    /// Profiles, in document order (tailoring profiles appended).
    pub profiles: Vec<Profile>,
    /// Top-level Groups and Rules.
    pub items: Vec<Item>,
}

impl Benchmark {
    /// The profile with this id.
    pub fn profile(&self, id: &str) -> Option<&Profile> {
        self.profiles.iter().find(|p| p.id == id)
    }

    /// Every item in document order, depth first, with its ancestor groups.
    pub fn walk(&self, f: &mut impl FnMut(&Item, &[&Group])) {
        fn go<'a>(items: &'a [Item], path: &mut Vec<&'a Group>, f: &mut impl FnMut(&Item, &[&Group])) {
            for it in items {
                f(it, path);
                if let Item::Group(g) = it {
                    path.push(g);
                    go(&g.items, path, f);
                    path.pop();
                }
            }
        }
        go(&self.items, &mut Vec::new(), f)
    }

    /// Ids of the items in a cluster (`@cluster-id`).
    pub(crate) fn cluster_members(&self, cluster: &str) -> Vec<String> {
        let mut out = Vec::new();
        self.walk(&mut |it, _| {
            if it.cluster_id() == Some(cluster) {
                out.push(it.id().to_string());
            }
        });
        out
    }

    /// Adds the Profiles of an XCCDF 1.2 Tailoring file (they may extend
    /// the benchmark's profiles).
    pub fn add_tailoring(&mut self, file: &str, text: &str) -> Result<(), XccdfError> {
        let doc = parse_xml(file, text)?;
        let root = doc.root_element();
        let tailoring = if is_x(&root, "Tailoring") {
            root
        } else {
            root.descendants()
                .find(|n| is_x(n, "Tailoring"))
                .ok_or_else(|| XccdfError::file(file, "no XCCDF 1.2 Tailoring element in the file"))?
        };
        for p in children_x(tailoring, "Profile") {
            let profile = parse_profile(file, &doc, p)?;
            self.profiles.retain(|q| q.id != profile.id);
            self.profiles.push(profile);
        }
        Ok(())
    }
}

/// Reads the Benchmark of an XCCDF 1.2 file or SCAP source data stream. With
/// several Benchmarks in one data stream, `benchmark_id` chooses one.
pub fn parse_benchmark(file: &str, text: &str, benchmark_id: Option<&str>) -> Result<Benchmark, XccdfError> {
    let doc = parse_xml(file, text)?;
    let all: Vec<roxmltree::Node> = doc.descendants().filter(|n| is_x(n, "Benchmark")).collect();
    if all.is_empty() {
        if doc
            .descendants()
            .any(|n| n.is_element() && n.tag_name().namespace() == Some(XCCDF11_NS))
        {
            return Err(XccdfError::file(
                file,
                "this is XCCDF 1.1 content; only XCCDF 1.2 is supported (SCAP 1.2/1.3 data streams carry 1.2)",
            ));
        }
        return Err(XccdfError::file(
            file,
            format!("no XCCDF 1.2 Benchmark element (namespace {XCCDF12_NS}) in the file"),
        ));
    }
    let node = match benchmark_id {
        Some(id) => *all.iter().find(|n| n.attribute("id") == Some(id)).ok_or_else(|| {
            XccdfError::file(
                file,
                format!("no Benchmark {id:?} (the file has: {})", ids(&all).join(", ")),
            )
        })?,
        None if all.len() == 1 => all[0],
        None => {
            return Err(XccdfError::file(
                file,
                format!(
                    "{} Benchmarks in the file, choose one ({})",
                    all.len(),
                    ids(&all).join(", ")
                ),
            ))
        }
    };
    let id = required_id(file, &doc, node, "Benchmark")?;
    let mut models = Vec::new();
    for m in children_x(node, "model") {
        if let Some(s) = m.attribute("system") {
            models.push(s.to_string());
        }
    }
    let mut profiles = Vec::new();
    for p in children_x(node, "Profile") {
        profiles.push(parse_profile(file, &doc, p)?);
    }
    let version = children_x(node, "version").next().map(text_of).unwrap_or_default();
    let bench = Benchmark {
        title: title_of(node),
        version,
        models,
        profiles,
        items: parse_items(file, &doc, node, 0)?,
        id,
    };
    Ok(bench)
}

fn ids(nodes: &[roxmltree::Node]) -> Vec<String> {
    nodes
        .iter()
        .map(|n| n.attribute("id").unwrap_or("?").to_string())
        .collect()
}

fn title_of(n: roxmltree::Node) -> String {
    children_x(n, "title").next().map(text_of).unwrap_or_default()
}

fn required_id(file: &str, doc: &roxmltree::Document, n: roxmltree::Node, what: &str) -> Result<String, XccdfError> {
    match n.attribute("id") {
        Some(id) if !id.is_empty() => Ok(id.to_string()),
        _ => Err(XccdfError::at(
            file,
            format!("line {}", line_of(doc, n)),
            format!("{what} without an id"),
        )),
    }
}

fn bool_attr(file: &str, n: roxmltree::Node, attr: &str, what: &str, default: bool) -> Result<bool, XccdfError> {
    match n.attribute(attr) {
        None => Ok(default),
        Some("true" | "1") => Ok(true),
        Some("false" | "0") => Ok(false),
        Some(v) => Err(XccdfError::at(file, what, format!("bad {attr} {v:?} (true or false)"))),
    }
}

/// Parses a weight: a non-negative real number (XCCDF `weightType`).
fn weight_attr(file: &str, n: roxmltree::Node, what: &str) -> Result<Option<f64>, XccdfError> {
    match n.attribute("weight") {
        None => Ok(None),
        Some(v) => match v.trim().parse::<f64>() {
            Ok(w) if w >= 0.0 && w.is_finite() => Ok(Some(w)),
            _ => Err(XccdfError::at(
                file,
                what,
                format!("bad weight {v:?} (a non-negative number)"),
            )),
        },
    }
}

/// How deep Groups may nest. Real benchmarks nest a handful of levels (the SCAP Security Guide's
/// deepest is under ten); every walk of the tree recurses once per level.
pub const MAX_GROUP_DEPTH: usize = 64;

fn parse_items(
    file: &str,
    doc: &roxmltree::Document,
    parent: roxmltree::Node,
    depth: usize,
) -> Result<Vec<Item>, XccdfError> {
    let mut items = Vec::new();
    for c in parent.children().filter(|c| c.is_element()) {
        if is_x(&c, "Group") {
            let id = required_id(file, doc, c, "Group")?;
            let what = format!("Group {id}");
            if depth >= MAX_GROUP_DEPTH {
                return Err(XccdfError::at(
                    file,
                    &what,
                    format!("Groups nest deeper than {MAX_GROUP_DEPTH} levels"),
                ));
            }
            items.push(Item::Group(Group {
                title: title_of(c),
                selected: bool_attr(file, c, "selected", &what, true)?,
                weight: weight_attr(file, c, &what)?.unwrap_or(1.0),
                cluster_id: c.attribute("cluster-id").map(str::to_string),
                items: parse_items(file, doc, c, depth + 1)?,
                id,
            }));
        } else if is_x(&c, "Rule") {
            let id = required_id(file, doc, c, "Rule")?;
            let what = format!("Rule {id}");
            let role = match c.attribute("role") {
                None => Role::Full,
                Some(r) => Role::parse(r).ok_or_else(|| {
                    XccdfError::at(file, &what, format!("bad role {r:?} (full, unscored or unchecked)"))
                })?,
            };
            let idents = children_x(c, "ident")
                .map(|i| Ident {
                    system: i.attribute("system").unwrap_or("").to_string(),
                    value: text_of(i),
                })
                .filter(|i| !i.value.is_empty())
                .collect();
            items.push(Item::Rule(Rule {
                title: title_of(c),
                selected: bool_attr(file, c, "selected", &what, true)?,
                weight: weight_attr(file, c, &what)?.unwrap_or(1.0),
                role,
                severity: c.attribute("severity").unwrap_or("unknown").to_string(),
                cluster_id: c.attribute("cluster-id").map(str::to_string),
                idents,
                rationale: children_x(c, "rationale").next().map(text_of).unwrap_or_default(),
                id,
            }));
        }
    }
    Ok(items)
}

fn parse_profile(file: &str, doc: &roxmltree::Document, p: roxmltree::Node) -> Result<Profile, XccdfError> {
    let id = required_id(file, doc, p, "Profile")?;
    let what = format!("Profile {id}");
    let mut selects = Vec::new();
    for s in children_x(p, "select") {
        let idref = s
            .attribute("idref")
            .ok_or_else(|| XccdfError::at(file, &what, "select without idref"))?;
        let sel = bool_attr(file, s, "selected", &format!("{what}: select {idref}"), true)?;
        selects.push((idref.to_string(), sel));
    }
    let mut refine_rules = Vec::new();
    for r in children_x(p, "refine-rule") {
        let idref = r
            .attribute("idref")
            .ok_or_else(|| XccdfError::at(file, &what, "refine-rule without idref"))?;
        let at = format!("{what}: refine-rule {idref}");
        let role = match r.attribute("role") {
            None => None,
            Some(v) => Some(Role::parse(v).ok_or_else(|| XccdfError::at(file, &at, format!("bad role {v:?}")))?),
        };
        refine_rules.push(RefineRule {
            idref: idref.to_string(),
            weight: weight_attr(file, r, &at)?,
            role,
            severity: r.attribute("severity").map(str::to_string),
        });
    }
    Ok(Profile {
        title: title_of(p),
        extends: p.attribute("extends").map(str::to_string),
        selects,
        refine_rules,
        id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const SMALL: &str = r#"<?xml version="1.0"?>
<Benchmark xmlns="http://checklists.nist.gov/xccdf/1.2" id="xccdf_t_benchmark_b" resolved="1">
  <status>draft</status>
  <title>Test benchmark</title>
  <version>1.0</version>
  <model system="urn:xccdf:scoring:default"/>
  <Profile id="xccdf_t_profile_p">
    <title>P</title>
    <select idref="xccdf_t_rule_r3" selected="true"/>
    <refine-rule idref="xccdf_t_rule_r1" weight="4"/>
  </Profile>
  <Group id="xccdf_t_group_g1" weight="2">
    <title>Accounts</title>
    <Rule id="xccdf_t_rule_r1" severity="high">
      <title>R1</title>
      <ident system="https://ncp.nist.gov/cce">CCE-1-1</ident>
      <ident system="http://cve.mitre.org">CVE-2020-1234</ident>
    </Rule>
    <Rule id="xccdf_t_rule_r2" weight="0.5" role="unscored"><title>R2</title></Rule>
  </Group>
  <Rule id="xccdf_t_rule_r3" selected="false"><title>R3</title></Rule>
</Benchmark>"#;

    #[test]
    fn groups_nest_at_most_64_deep() {
        let nested = |levels: usize| {
            let mut xml = String::from(
                r#"<?xml version="1.0"?><Benchmark xmlns="http://checklists.nist.gov/xccdf/1.2" id="xccdf_t_benchmark_b"><status>draft</status><version>1</version>"#,
            );
            for i in 0..levels {
                xml += &format!(r#"<Group id="xccdf_t_group_g{i}"><title>G</title>"#);
            }
            xml += r#"<Rule id="xccdf_t_rule_r"><title>R</title></Rule>"#;
            xml += &"</Group>".repeat(levels);
            xml + "</Benchmark>"
        };
        assert!(parse_benchmark("b.xml", &nested(MAX_GROUP_DEPTH), None).is_ok());
        let e = parse_benchmark("b.xml", &nested(MAX_GROUP_DEPTH + 1), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("Groups nest deeper than 64 levels"), "{e}");
        // Far deeper: an error, not a stack overflow (the XML parser stops first, or we do).
        assert!(parse_benchmark("b.xml", &nested(100_000), None).is_err());
    }

    #[test]
    fn reads_a_benchmark() {
        let b = parse_benchmark("b.xml", SMALL, None).unwrap();
        assert_eq!(b.id, "xccdf_t_benchmark_b");
        assert_eq!(b.version, "1.0");
        assert_eq!(b.models, ["urn:xccdf:scoring:default"]);
        let Item::Group(g) = &b.items[0] else { panic!() };
        assert_eq!((g.weight, g.title.as_str()), (2.0, "Accounts"));
        let Item::Rule(r1) = &g.items[0] else { panic!() };
        assert_eq!(r1.idents.len(), 2);
        assert_eq!(r1.severity, "high");
        let Item::Rule(r2) = &g.items[1] else { panic!() };
        assert_eq!((r2.weight, r2.role), (0.5, Role::Unscored));
        let Item::Rule(r3) = &b.items[1] else { panic!() };
        assert!(!r3.selected);
        let p = b.profile("xccdf_t_profile_p").unwrap();
        assert_eq!(p.selects, [("xccdf_t_rule_r3".to_string(), true)]);
        assert_eq!(p.refine_rules[0].weight, Some(4.0));
    }

    #[test]
    fn reads_a_data_stream() {
        let body = SMALL.trim_start_matches(r#"<?xml version="1.0"?>"#);
        let ds = format!(
            r#"<ds:data-stream-collection xmlns:ds="http://scap.nist.gov/schema/scap/source/1.2">
  <ds:component id="c1">{body}</ds:component>
</ds:data-stream-collection>"#
        );
        let b = parse_benchmark("ds.xml", &ds, None).unwrap();
        assert_eq!(b.id, "xccdf_t_benchmark_b");
        let two = format!(
            r#"<ds:data-stream-collection xmlns:ds="http://scap.nist.gov/schema/scap/source/1.2">
  <ds:component id="c1">{body}</ds:component><ds:component id="c2">{}</ds:component>
</ds:data-stream-collection>"#,
            body.replace("xccdf_t_benchmark_b", "xccdf_t_benchmark_c")
        );
        let e = parse_benchmark("ds.xml", &two, None).unwrap_err().to_string();
        assert!(e.contains("2 Benchmarks in the file, choose one"), "{e}");
        let b = parse_benchmark("ds.xml", &two, Some("xccdf_t_benchmark_c")).unwrap();
        assert_eq!(b.id, "xccdf_t_benchmark_c");
    }

    #[test]
    fn errors_name_file_and_item() {
        let bad = SMALL.replace(r#"weight="0.5""#, r#"weight="-1""#);
        let e = parse_benchmark("b.xml", &bad, None).unwrap_err().to_string();
        assert_eq!(
            e,
            "b.xml: Rule xccdf_t_rule_r2: bad weight \"-1\" (a non-negative number)"
        );
        let e = parse_benchmark("x.xml", "<a><b></a>", None).unwrap_err().to_string();
        assert!(e.starts_with("x.xml: not well-formed XML"), "{e}");
        let e = parse_benchmark(
            "x.xml",
            "<Benchmark xmlns='http://checklists.nist.gov/xccdf/1.1'/>",
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("XCCDF 1.1"), "{e}");
        let e = parse_benchmark("b.xml", SMALL, Some("nope")).unwrap_err().to_string();
        assert!(
            e.contains("no Benchmark \"nope\" (the file has: xccdf_t_benchmark_b)"),
            "{e}"
        );
    }

    #[test]
    fn tailoring_adds_profiles() {
        let mut b = parse_benchmark("b.xml", SMALL, None).unwrap();
        let t = r#"<Tailoring xmlns="http://checklists.nist.gov/xccdf/1.2" id="t">
          <Profile id="xccdf_t_profile_tailored" extends="xccdf_t_profile_p">
            <select idref="xccdf_t_rule_r1" selected="false"/>
          </Profile></Tailoring>"#;
        b.add_tailoring("t.xml", t).unwrap();
        let p = b.profile("xccdf_t_profile_tailored").unwrap();
        assert_eq!(p.extends.as_deref(), Some("xccdf_t_profile_p"));
    }
}
