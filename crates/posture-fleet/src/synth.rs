//! Setting values that make a control come out as wanted, synthesised from its check tree:
//! for a leaf, a value on the wanted side of its operator (a version just below a minimum, a
//! string the pattern matches, ...); for `all`/`any`/`none`, every child or one at random, as
//! the wanted outcome needs. Keys several controls share keep the first value given them.

use posture_core::check::{Check, Expected, Op, Scalar};
use posture_core::{Catalog, ControlIdx, Setting, Value};
use std::collections::HashMap;

/// Values that make `check` come out PASS (`want = true`) or FAIL, added to `out` by key index
/// (`None`: the key must be absent). A key already in `out` keeps its value.
pub fn synth(check: &Check, want: bool, cat: &Catalog, rng: &mut fastrand::Rng, out: &mut HashMap<u32, Option<Value>>) {
    match check {
        Check::Leaf(l) => {
            let leaf = &cat.leaves[*l as usize];
            // several `contains` leaves on one list key: the list holds every item
            if let (Op::Contains, true, Expected::Scalar(Scalar::Str(item)), Some(Some(Value::Array(items)))) =
                (leaf.op, want, &leaf.expected, out.get_mut(&leaf.key))
            {
                if !items.contains(item) {
                    items.push(item.clone());
                }
                return;
            }
            out.entry(leaf.key)
                .or_insert_with(|| leaf_value(leaf.op, &leaf.expected, want, rng));
        }
        Check::All(c) => {
            if want {
                c.iter().for_each(|x| synth(x, true, cat, rng, out));
            } else {
                synth(&c[rng.usize(..c.len())], false, cat, rng, out);
            }
        }
        Check::Any(c) => {
            if want {
                synth(&c[rng.usize(..c.len())], true, cat, rng, out);
            } else {
                c.iter().for_each(|x| synth(x, false, cat, rng, out));
            }
        }
        Check::None(c) => {
            if want {
                c.iter().for_each(|x| synth(x, false, cat, rng, out));
            } else {
                synth(&c[rng.usize(..c.len())], true, cat, rng, out);
            }
        }
    }
}

fn scalar_value(s: &Scalar) -> Value {
    match s {
        Scalar::Bool(b) => Value::Bool(*b),
        Scalar::Long(n) => Value::Long(*n),
        Scalar::Double(d) => Value::Double(*d),
        Scalar::Str(x) => Value::String(x.clone()),
    }
}

fn other_value(s: &Scalar) -> Value {
    match s {
        Scalar::Bool(b) => Value::Bool(!b),
        Scalar::Long(n) => Value::Long(n.wrapping_add(1)),
        Scalar::Double(d) => Value::Double(d + 1.0),
        Scalar::Str(x) => Value::String(format!("{x}-other")),
    }
}

fn version_str(v: &[u64]) -> String {
    v.iter().map(u64::to_string).collect::<Vec<_>>().join(".")
}

fn lower(v: &[u64]) -> Vec<u64> {
    let mut v = v.to_vec();
    if let Some(i) = v.iter().rposition(|&c| c > 0) {
        v[i] -= 1;
        for c in v.iter_mut().skip(i + 1) {
            *c = 999;
        }
    }
    v
}

fn higher(v: &[u64]) -> Vec<u64> {
    let mut v = v.to_vec();
    if let Some(last) = v.last_mut() {
        *last += 1;
    }
    v
}

/// A string matching `re` (tries the pattern's literal text and common values).
fn matching_string(re: &regex::Regex) -> Option<String> {
    let pat = re.as_str();
    let literal: String = pat
        .replace("\\.", ".")
        .replace("\\s", " ")
        .chars()
        .filter(|c| !"^$()[]?*+|\\{}".contains(*c))
        .collect();
    let found = [literal.as_str(), "1", "yes", "true", "enabled", "on", "TLS1.2", "no"]
        .into_iter()
        .find(|s| re.is_match(s));
    found.map(str::to_string)
}

fn leaf_value(op: Op, exp: &Expected, want: bool, _rng: &mut fastrand::Rng) -> Option<Value> {
    let v = match (op, exp) {
        (Op::Exists, _) => return want.then_some(Value::Bool(true)),
        (Op::Absent, _) => return (!want).then_some(Value::Bool(true)),
        (op, Expected::Version(v)) => {
            let pass_fail = match op {
                Op::Eq | Op::Ge | Op::Le => (v.clone(), if op == Op::Le { higher(v) } else { lower(v) }),
                Op::Ne => (higher(v), v.clone()),
                Op::Gt => (higher(v), v.clone()),
                Op::Lt => (lower(v), v.clone()),
                _ => (v.clone(), lower(v)),
            };
            Value::String(version_str(if want { &pass_fail.0 } else { &pass_fail.1 }))
        }
        (Op::Eq, Expected::Scalar(s)) => {
            if want {
                scalar_value(s)
            } else {
                other_value(s)
            }
        }
        (Op::Ne, Expected::Scalar(s)) => {
            if want {
                other_value(s)
            } else {
                scalar_value(s)
            }
        }
        (Op::Ge | Op::Le, Expected::Scalar(s)) if want => scalar_value(s),
        (Op::Gt | Op::Ge, Expected::Scalar(s)) => match (s, want) {
            (Scalar::Long(n), true) => Value::Long(n + 1),
            (Scalar::Long(n), false) => Value::Long(n - 1),
            (Scalar::Double(d), true) => Value::Double(d + 1.0),
            (Scalar::Double(d), false) => Value::Double(d - 1.0),
            _ => return None,
        },
        (Op::Lt | Op::Le, Expected::Scalar(s)) => match (s, want) {
            (Scalar::Long(n), true) => Value::Long(n - 1),
            (Scalar::Long(n), false) => Value::Long(n + 1),
            (Scalar::Double(d), true) => Value::Double(d - 1.0),
            (Scalar::Double(d), false) => Value::Double(d + 1.0),
            _ => return None,
        },
        (Op::In, Expected::List(l)) => {
            if want {
                scalar_value(&l[0])
            } else {
                other_value(&l[0])
            }
        }
        (Op::NotIn, Expected::List(l)) => {
            if want {
                other_value(&l[0])
            } else {
                scalar_value(&l[0])
            }
        }
        (Op::Contains, Expected::Scalar(Scalar::Str(s))) => Value::Array(if want { vec![s.clone()] } else { vec![] }),
        (Op::Matches, Expected::Regex(re)) => {
            if want {
                Value::String(matching_string(re)?)
            } else {
                Value::String("~no-match~".into())
            }
        }
        _ => return None,
    };
    Some(v)
}

/// The settings that make each of `controls` come out as wanted (`(control, true)`: PASS),
/// sorted by key.
pub fn settings_for(cat: &Catalog, controls: &[(ControlIdx, bool)], rng: &mut fastrand::Rng) -> Vec<Setting> {
    let mut values: HashMap<u32, Option<Value>> = HashMap::new();
    for &(c, want) in controls {
        synth(&cat.controls[c as usize].check, want, cat, rng, &mut values);
    }
    let mut keys: Vec<(u32, Option<Value>)> = values.into_iter().collect();
    keys.sort_by_key(|(k, _)| *k);
    keys.into_iter()
        .filter_map(|(k, v)| {
            v.map(|value| Setting {
                key: cat.key_name(k).to_string(),
                value,
            })
        })
        .collect()
}

/// (key index, value) pairs, by key (`None`: the key absent).
type KeyValues = Vec<(u32, Option<Value>)>;

/// Each control's PASS and FAIL settings, synthesised once ([`synth`]): the fast source of
/// values for large fleets (a SNAPSHOT of 300 controls is filled from it without a map per
/// device). Where a check has a choice (which child of an `all` fails), the table holds one.
pub struct ValueTable {
    /// Per control: the values that make it PASS, then FAIL.
    pass_fail: Vec<[KeyValues; 2]>,
}

impl ValueTable {
    /// The table of every control of `cat`.
    pub fn new(cat: &Catalog, rng: &mut fastrand::Rng) -> ValueTable {
        let pass_fail = cat
            .controls
            .iter()
            .map(|c| {
                [true, false].map(|want| {
                    let mut values = HashMap::new();
                    synth(&c.check, want, cat, rng, &mut values);
                    let mut values: KeyValues = values.into_iter().collect();
                    values.sort_by_key(|(k, _)| *k);
                    values
                })
            })
            .collect();
        ValueTable { pass_fail }
    }

    /// Sets `out` to the settings that make each of `controls` come out as wanted (`true`:
    /// PASS), sorted by key; a key several of them share keeps the first value given it.
    /// `out`'s allocations are reused.
    pub fn fill(&self, cat: &Catalog, controls: impl IntoIterator<Item = (ControlIdx, bool)>, out: &mut Vec<Setting>) {
        let mut chosen: Vec<(u32, usize, &Option<Value>)> = Vec::new();
        for (c, want) in controls {
            for (k, v) in &self.pass_fail[c as usize][usize::from(!want)] {
                chosen.push((*k, chosen.len(), v));
            }
        }
        // By key, the first given first; then one per key.
        chosen.sort_unstable_by_key(|&(k, order, _)| (k, order));
        chosen.dedup_by_key(|&mut (k, _, _)| k);
        let mut n = 0;
        for (k, _, v) in chosen {
            let Some(v) = v else { continue };
            if n == out.len() {
                out.push(Setting {
                    key: String::new(),
                    value: Value::Null,
                });
            }
            let s = &mut out[n];
            s.key.clear();
            s.key.push_str(cat.key_name(k));
            s.value.clone_from(v);
            n += 1;
        }
        out.truncate(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use posture_core::{ConfigChange, Engine, EngineConfig, Output, SourcePos};

    const BASELINE: &str = r#"
baseline: t
version: 1
controls:
  - { id: b, title: B, category: network, check: { key: fw, op: eq, value: true } }
  - { id: n, title: N, category: accounts, check: { all: [ { key: pw, op: ge, value: 14 }, { key: age, op: lt, value: 90 } ] } }
  - { id: v, title: V, category: os, check: { key: build, op: ge, value: "10.0.19045", version: true } }
  - { id: r, title: R, category: application, check: { key: tls, op: matches, value: "^TLS1\\.[23]$" } }
  - { id: a, title: A, category: security_controls, check: { any: [ { key: av, op: eq, value: on }, { key: edr, op: exists } ] } }
"#;

    /// Values from the table, and from `settings_for`, make every control come out as wanted
    /// when an engine evaluates them.
    #[test]
    fn synthesised_values_give_the_wanted_outcome() {
        let cat = std::sync::Arc::new(Catalog::from_sources(&[("t.yaml", BASELINE)]).unwrap());
        let mut rng = fastrand::Rng::with_seed(3);
        let table = ValueTable::new(&cat, &mut rng);
        let n = cat.controls.len() as ControlIdx;
        for round in 0..64u32 {
            let want: Vec<(ControlIdx, bool)> = (0..n).map(|c| (c, (round >> c) & 1 == 1)).collect();
            let mut from_table = Vec::new();
            table.fill(&cat, want.iter().copied(), &mut from_table);
            for settings in [from_table, settings_for(&cat, &want, &mut rng)] {
                let mut engine = Engine::new(cat.clone(), EngineConfig::default());
                let ev = ConfigChange::new("t1", "d", posture_core::ChangeKind::Snapshot, 1_795_341_600_000, 1)
                    .with_inventory("windows", "10.0.22631", &["g"], &[])
                    .with_settings(settings.clone());
                engine.apply(&ev, SourcePos::default(), &mut Output::default()).unwrap();
                let dev = engine.device_idx("t1", "d").unwrap();
                for &(c, w) in &want {
                    let state = engine.cells_of(dev).nth(c as usize).unwrap().state();
                    assert_eq!(
                        state == posture_core::ControlState::Pass,
                        w,
                        "control {} wanted {w}: {state:?} from {settings:?}",
                        cat.controls[c as usize].id
                    );
                }
            }
        }
    }
}
