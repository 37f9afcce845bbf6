//! Real content against OpenSCAP: scans this machine with `oscap xccdf eval`
//! (SCAP Security Guide for Debian, a tailored profile), imports the same
//! benchmark and profile as a posture baseline, turns the TestResult into a
//! SNAPSHOT event, and checks that every model OpenSCAP wrote a score for
//! gives the same figure in posture (digit for digit in single precision, as
//! OpenSCAP computes; within 1e-4 in double precision), and that posture's
//! own per-device score agrees with the rule results.
//!
//! Needs the Debian packages `openscap-scanner` and `ssg-debian`
//! (`scripts/stack install` installs them); fails, never skips, without them.

use posture_core::{Catalog, ControlState, Engine, EngineConfig, Output, SourcePos};
use posture_xccdf::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

const CONTENT: &str = "/usr/share/xml/scap/ssg/content/ssg-debian11-ds.xml";
const P: &str = "xccdf_org.ssgproject.content_";
const PROFILE: &str = "xccdf_org.posture_profile_tailored";

/// A tailoring of the "standard" profile: more rules that evaluate in a
/// container (and the groups holding them, which "standard" deselects), one
/// refine-rule weight (OpenSCAP 1.3 writes it in the rule result but does not
/// score with it) and one rule made unscored.
fn tailoring() -> String {
    let select = |r: &str| format!("<xccdf:select idref=\"{P}{r}\" selected=\"true\"/>\n    ");
    let rules = [
        "group_sudo",
        "rule_sudo_remove_nopasswd",
        "rule_sudo_require_authentication",
        "group_apt",
        "rule_apt_sources_list_official",
        "group_avahi",
        "group_avahi_configuration",
        "rule_avahi_disable_publishing",
        "group_dhcp",
        "group_dhcp_client_configuration",
        "rule_dhcp_client_restrict_options",
        "group_permissions_var_log_dir",
        "rule_file_groupowner_var_log",
    ];
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<xccdf:Tailoring xmlns:xccdf="http://checklists.nist.gov/xccdf/1.2" id="xccdf_org.posture_tailoring_test">
  <xccdf:version time="2026-11-23T00:00:00">1</xccdf:version>
  <xccdf:Profile id="{PROFILE}" extends="{P}profile_standard">
    <xccdf:title>posture test: standard plus container-checkable rules</xccdf:title>
    {}<xccdf:refine-rule idref="{P}rule_file_owner_etc_shadow" weight="4"/>
    <xccdf:refine-rule idref="{P}rule_package_nis_removed" role="unscored"/>
  </xccdf:Profile>
</xccdf:Tailoring>
"#,
        rules.map(select).concat()
    )
}

/// The SSG data stream, edited so that the scan means something here: the
/// Debian 11 platform requirement is dropped (this machine may run a later
/// Debian; rule-level platforms still apply), the four scoring models are
/// listed (each on its own line: OpenSCAP 1.3 skips every other one of
/// adjacent `model` elements), and some rules and groups get weights.
fn edited_content(src: &str) -> String {
    let mut s = src.to_string();
    let mut edit = |from: &str, to: &str| {
        assert!(s.contains(from), "{CONTENT} changed: {from:?} not found");
        s = s.replacen(from, to, 1);
    };
    edit(r#"<xccdf-1.2:platform idref="cpe:/o:debian:debian_linux:11"/>"#, "");
    let models: String = Model::ALL
        .iter()
        .map(|m| format!("<xccdf-1.2:model system=\"{}\"/>\n      ", m.urn()))
        .collect();
    edit("<xccdf-1.2:Profile ", &format!("{models}<xccdf-1.2:Profile "));
    for (item, weight) in [
        ("rule_file_permissions_systemmap", "5"),
        ("rule_sudo_require_authentication", "2.5"),
        ("rule_package_telnetd_removed", "0"),
        ("group_permissions", "3"),
        ("group_services", "0.5"),
        ("group_sudo", "2"),
    ] {
        let id = format!(" id=\"{P}{item}\"");
        edit(&id, &format!("{id} weight=\"{weight}\""));
    }
    s
}

fn oscap_or_fail() {
    let hint = "install the Debian packages openscap-scanner and ssg-debian \
                (apt-get install -y openscap-scanner ssg-debian, or scripts/stack install)";
    match Command::new("oscap").arg("--version").output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!("oscap --version failed ({}): {hint}", o.status),
        Err(e) => panic!("cannot run oscap ({e}): {hint}"),
    }
    assert!(Path::new(CONTENT).exists(), "{CONTENT} is missing: {hint}");
}

struct Scan {
    dir: PathBuf,
    content: String,
    tailoring: String,
    results: String,
}

/// Runs the scan once (about 3 s).
fn scan() -> Scan {
    oscap_or_fail();
    let dir = std::env::temp_dir().join(format!("posture-xccdf-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let content = edited_content(&std::fs::read_to_string(CONTENT).unwrap());
    let tailoring = tailoring();
    std::fs::write(dir.join("ds.xml"), &content).unwrap();
    std::fs::write(dir.join("tailoring.xml"), &tailoring).unwrap();
    let started = std::time::Instant::now();
    let out = Command::new("oscap")
        .args(["xccdf", "eval", "--profile", PROFILE, "--tailoring-file"])
        .arg(dir.join("tailoring.xml"))
        .arg("--results")
        .arg(dir.join("results.xml"))
        .arg(dir.join("ds.xml"))
        .output()
        .expect("oscap runs");
    // oscap exits 2 when a rule fails; 1 is an error.
    assert!(
        matches!(out.status.code(), Some(0 | 2)),
        "oscap xccdf eval failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("oscap xccdf eval: {:.1} s", started.elapsed().as_secs_f64());
    let results = std::fs::read_to_string(dir.join("results.xml")).unwrap();
    Scan {
        dir,
        content,
        tailoring,
        results,
    }
}

#[test]
fn scores_equal_openscap() {
    let scan = scan();
    let mut bench = parse_benchmark("ds.xml", &scan.content, None).unwrap();
    bench.add_tailoring("tailoring.xml", &scan.tailoring).unwrap();
    let trs = parse_test_results("results.xml", &scan.results).unwrap();
    assert_eq!(trs.len(), 1);
    let tr = &trs[0];
    assert_eq!(tr.profile.as_deref(), Some(PROFILE));
    let mut counts = std::collections::BTreeMap::new();
    for r in &tr.rules {
        *counts.entry(r.result.as_str()).or_insert(0) += 1;
    }
    eprintln!("rule results: {counts:?}");
    assert!(
        counts.contains_key("pass") && counts.contains_key("fail"),
        "the scan should pass and fail some rules: {counts:?}"
    );

    // OpenSCAP scores with the benchmark's weights, not the profile's
    // refine-rule weights (it does write them into the rule results).
    let weight_of = |rule: &str| {
        let at = scan
            .results
            .find(&format!("<rule-result idref=\"{P}rule_{rule}\""))
            .unwrap();
        let tail = &scan.results[at..];
        let w = tail.find("weight=\"").unwrap() + 8;
        tail[w..w + tail[w..].find('"').unwrap()].parse::<f64>().unwrap()
    };
    assert_eq!(weight_of("file_owner_etc_shadow"), 4.0);

    let opts = ImportOptions {
        profile: Some(PROFILE.into()),
        refine_weights: false,
        baseline_id: None,
        error_as: ErrorAs::Unknown,
        categories: CategoryMap::default(),
        source: CONTENT.into(),
    };
    let imported = import("ds.xml", &bench, &opts).unwrap();
    std::fs::write(scan.dir.join("baseline.yaml"), &imported.yaml).unwrap();
    let catalog = Catalog::from_sources(&[("baseline.yaml", imported.yaml.as_str())])
        .unwrap_or_else(|e| panic!("the imported baseline is invalid: {e:?}"));
    eprintln!(
        "imported: {} controls, {} tree-only rules, categories {:?}",
        imported.controls, imported.tree_only, imported.per_category
    );
    // The tree the baseline carries, not the one in memory.
    let tree = ScoringTree::from_json(
        "baseline.yaml",
        catalog.baselines[0].scoring.as_ref().unwrap().xccdf.as_ref().unwrap(),
    )
    .unwrap();

    // Results travel as an event, as they would through Kafka.
    let event = to_event(
        "results.xml",
        tr,
        &EventOptions {
            tenant: "t1".into(),
            device: None,
        },
    )
    .unwrap();
    let json = event.to_json();
    let event = posture_core::ConfigChange::from_json(&json).unwrap();
    let mut replay = Replay::default();
    replay.apply(&event);
    let (_, device) = replay.active(i64::MAX).next().unwrap();
    let results = |rule: &str| device.result(rule);

    let mut compared = 0;
    for model in Model::ALL {
        let Some(theirs) = tr.score(model) else {
            continue;
        };
        compared += 1;
        let single = score_as::<f32>(&tree, model, &results);
        let double = score(&tree, model, &results);
        eprintln!(
            "{:<22} OpenSCAP {:.6} / {:.6}   posture f32 {:.6} / {:.6}   f64 {:.6} / {:.6}",
            model.name(),
            theirs.score,
            theirs.maximum,
            single.score,
            single.maximum,
            double.score,
            double.maximum
        );
        assert_eq!(
            (format!("{:.6}", single.score), format!("{:.6}", single.maximum)),
            (format!("{:.6}", theirs.score), format!("{:.6}", theirs.maximum)),
            "{} differs from OpenSCAP",
            model.name()
        );
        assert!(
            (double.score - theirs.score).abs() < 1e-4,
            "{}: {double:?} vs {theirs:?}",
            model.name()
        );
        assert!((double.maximum - theirs.maximum).abs() < 1e-4, "{}", model.name());
    }
    assert_eq!(compared, 4, "OpenSCAP should have written all four models");

    // With the refine-rule weights (the specification's reading), flat differs.
    let refined = import(
        "ds.xml",
        &bench,
        &ImportOptions {
            refine_weights: true,
            ..opts.clone()
        },
    )
    .unwrap();
    let flat_refined = score(&refined.tree, Model::Flat, &results);
    let flat_openscap = tr.score(Model::Flat).unwrap();
    eprintln!("xccdf_flat with refine-rule weights: {flat_refined:?} (OpenSCAP {flat_openscap:?})");
    assert_eq!(
        flat_refined.maximum,
        flat_openscap.maximum + 3.0,
        "file_owner_etc_shadow weighs 4, not 1"
    );

    // posture's own per-device score: points over PASS, maximum over PASS +
    // FAIL; error and unknown results are UNKNOWN.
    let mut engine = Engine::new(Arc::new(catalog), EngineConfig::default());
    let mut out = Output::default();
    engine.apply(&event, SourcePos::default(), &mut out).unwrap();
    let dev = engine.device_idx("t1", &event.device_id).unwrap();
    let (counted, cells) = engine.device_cells(dev);
    assert!(counted);
    let cat = engine.catalog().clone();
    let (mut points, mut max) = (0i64, 0i64);
    for (c, cell) in cells.iter().enumerate() {
        let p = cat.controls[c].points;
        match cell.state() {
            ControlState::Pass => {
                points += p;
                max += p;
            }
            ControlState::Fail => max += p,
            _ => {}
        }
    }
    // expected from the rule results: 100 x weight per pass / per pass + fail
    let (mut want_points, mut want_max) = (0.0, 0.0);
    for (rule, weight, role) in tree.rules() {
        if role != benchmark::Role::Full || weight <= 0.0 {
            continue;
        }
        match tr.result(rule) {
            Some(XccdfResult::Pass | XccdfResult::Fixed) => {
                want_points += 100.0 * weight;
                want_max += 100.0 * weight;
            }
            Some(XccdfResult::Fail) => want_max += 100.0 * weight,
            _ => {}
        }
    }
    let pts = |m: i64| m as f64 / 1e6;
    eprintln!(
        "posture: {} / {} points ({:.2} %)",
        pts(points),
        pts(max),
        100.0 * points as f64 / max as f64
    );
    assert_eq!((pts(points), pts(max)), (want_points, want_max));
    std::fs::remove_dir_all(&scan.dir).ok();
}
