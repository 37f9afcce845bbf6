//! Reading XCCDF TestResults (an `oscap xccdf eval --results` file, an ARF
//! report, or a bare TestResult) and turning them into posture SNAPSHOT
//! events, one per TestResult.

use crate::models::{Model, ModelScore};
use crate::result::{children_x, is_x, parse_xml, setting_key, text_of, XccdfError, XccdfResult};
use posture_core::{ChangeKind, ConfigChange, ConfigSource, Setting, Value};

/// One `rule-result`.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleResult {
    /// `@idref`: the Rule.
    pub rule: String,
    /// The `result` value.
    pub result: XccdfResult,
}

/// One TestResult.
#[derive(Clone, Debug, PartialEq)]
pub struct TestResult {
    /// `@id`.
    pub id: String,
    /// The profile it evaluated (`profile/@idref`), if any.
    pub profile: Option<String>,
    /// The first `target` (host name).
    pub target: String,
    /// `target-address` values.
    pub addresses: Vec<String>,
    /// `@end-time` (or `@start-time`), as written.
    pub end_time: String,
    /// The rule results, in document order.
    pub rules: Vec<RuleResult>,
    /// The `score` elements: (model URI, score).
    pub scores: Vec<(String, ModelScore)>,
}

impl TestResult {
    /// The score the scanner wrote for a model, if any.
    pub fn score(&self, model: Model) -> Option<ModelScore> {
        self.scores.iter().find(|(s, _)| s == model.urn()).map(|(_, v)| *v)
    }

    /// A rule's result.
    pub fn result(&self, rule: &str) -> Option<XccdfResult> {
        self.rules.iter().find(|r| r.rule == rule).map(|r| r.result)
    }
}

/// Reads every XCCDF 1.2 TestResult in a document (results file, ARF, or a
/// lone TestResult), in document order.
pub fn parse_test_results(file: &str, text: &str) -> Result<Vec<TestResult>, XccdfError> {
    let doc = parse_xml(file, text)?;
    let mut out = Vec::new();
    for tr in doc.descendants().filter(|n| is_x(n, "TestResult")) {
        let id = tr.attribute("id").unwrap_or("").to_string();
        let what = format!("TestResult {id}");
        let mut rules = Vec::new();
        for rr in children_x(tr, "rule-result") {
            let rule = rr
                .attribute("idref")
                .ok_or_else(|| XccdfError::at(file, &what, "rule-result without idref"))?;
            let text = children_x(rr, "result").next().map(text_of).unwrap_or_default();
            let result = XccdfResult::parse(&text).ok_or_else(|| {
                XccdfError::at(
                    file,
                    format!("{what}: rule-result {rule}"),
                    format!("bad result {text:?} (pass, fail, error, unknown, notapplicable, notchecked, notselected, informational, fixed)"),
                )
            })?;
            rules.push(RuleResult {
                rule: rule.to_string(),
                result,
            });
        }
        let mut scores = Vec::new();
        for s in children_x(tr, "score") {
            let system = s.attribute("system").unwrap_or("urn:xccdf:scoring:default").to_string();
            let num = |v: &str, which: &str| {
                v.trim()
                    .parse::<f64>()
                    .map_err(|_| XccdfError::at(file, &what, format!("bad {which} {v:?} in score {system}")))
            };
            let score = num(&text_of(s), "score")?;
            let maximum = match s.attribute("maximum") {
                Some(m) => num(m, "maximum")?,
                None => 100.0,
            };
            scores.push((system, ModelScore { score, maximum }));
        }
        out.push(TestResult {
            profile: children_x(tr, "profile")
                .next()
                .and_then(|p| p.attribute("idref"))
                .map(str::to_string),
            target: children_x(tr, "target").next().map(text_of).unwrap_or_default(),
            addresses: children_x(tr, "target-address").map(text_of).collect(),
            end_time: tr
                .attribute("end-time")
                .or_else(|| tr.attribute("start-time"))
                .unwrap_or("")
                .to_string(),
            rules,
            scores,
            id,
        });
    }
    if out.is_empty() {
        return Err(XccdfError::file(
            file,
            "no XCCDF 1.2 TestResult in the file (expected `oscap xccdf eval --results` or `--results-arf` output)",
        ));
    }
    Ok(out)
}

/// Parses an XCCDF `dateTime` into epoch milliseconds; without a UTC offset
/// it is taken as UTC.
pub fn parse_xccdf_time(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(ms) = posture_core::time::parse_time(s) {
        return Some(ms);
    }
    posture_core::time::parse_time(&format!("{s}Z")).ok()
}

/// How TestResults become events.
#[derive(Clone, Debug)]
pub struct EventOptions {
    /// The tenant of every event.
    pub tenant: String,
    /// The device id; None: the TestResult's target.
    pub device: Option<String>,
}

/// A TestResult as a SNAPSHOT event of its device, source SCANNER: one
/// setting `xccdf:<rule id>` per rule-result, valued with the result string
/// (notselected results are left out: an absent result counts the same).
/// The event time and the sequence are the TestResult's end time in
/// milliseconds (a later scan of a device is a later snapshot); the event id
/// is `xccdf:<device>:<TestResult id>:<end time>`.
pub fn to_event(file: &str, tr: &TestResult, opts: &EventOptions) -> Result<ConfigChange, XccdfError> {
    let what = format!("TestResult {}", tr.id);
    let device = match &opts.device {
        Some(d) => d.clone(),
        None if !tr.target.is_empty() => tr.target.clone(),
        None => {
            return Err(XccdfError::at(
                file,
                &what,
                "no target in the TestResult; give the device id with --device",
            ))
        }
    };
    let at = parse_xccdf_time(&tr.end_time).ok_or_else(|| {
        XccdfError::at(
            file,
            &what,
            format!("bad end-time {:?} (expected an XCCDF dateTime)", tr.end_time),
        )
    })?;
    let settings: Vec<Setting> = tr
        .rules
        .iter()
        .filter(|r| r.result != XccdfResult::NotSelected)
        .map(|r| Setting {
            key: setting_key(&r.rule),
            value: Value::String(r.result.as_str().to_string()),
        })
        .collect();
    Ok(
        ConfigChange::new(opts.tenant.clone(), device.clone(), ChangeKind::Snapshot, at, at)
            .with_event_id(format!("xccdf:{device}:{}:{at}", tr.id))
            .with_source(ConfigSource::Scanner)
            .with_settings(settings),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const RES: &str = r#"<Benchmark xmlns="http://checklists.nist.gov/xccdf/1.2" id="b">
  <TestResult id="xccdf_org.open-scap_testresult_p" start-time="2026-11-23T17:25:20+00:00" end-time="2026-11-23T17:25:21+00:00">
    <profile idref="p"/>
    <target>vm</target>
    <target-address>127.0.0.1</target-address>
    <rule-result idref="r1" role="full"><result>pass</result></rule-result>
    <rule-result idref="r2"><result>notselected</result></rule-result>
    <rule-result idref="r3"><result>notapplicable</result></rule-result>
    <score system="urn:xccdf:scoring:default" maximum="100.000000">75.000000</score>
    <score system="urn:xccdf:scoring:flat" maximum="18.000000">17.000000</score>
  </TestResult>
</Benchmark>"#;

    #[test]
    fn reads_results_and_scores() {
        let trs = parse_test_results("r.xml", RES).unwrap();
        assert_eq!(trs.len(), 1);
        let tr = &trs[0];
        assert_eq!((tr.target.as_str(), tr.profile.as_deref()), ("vm", Some("p")));
        assert_eq!(tr.result("r1"), Some(XccdfResult::Pass));
        assert_eq!(
            tr.score(Model::Flat),
            Some(ModelScore {
                score: 17.0,
                maximum: 18.0
            })
        );
        assert_eq!(tr.score(Model::Absolute), None);
    }

    #[test]
    fn reads_an_arf_report() {
        // oscap --results-arf: the TestResult sits inside arf:report/arf:content
        let arf = format!(
            r#"<arf:asset-report-collection xmlns:arf="http://scap.nist.gov/schema/asset-reporting-format/1.1">
  <arf:reports><arf:report id="r1"><arf:content>{}</arf:content></arf:report></arf:reports>
</arf:asset-report-collection>"#,
            &RES[RES.find("<TestResult").unwrap()..RES.find("</Benchmark>").unwrap()].replace(
                "<TestResult ",
                "<TestResult xmlns=\"http://checklists.nist.gov/xccdf/1.2\" "
            )
        );
        let trs = parse_test_results("arf.xml", &arf).unwrap();
        assert_eq!(trs.len(), 1);
        assert_eq!(trs[0].rules.len(), 3);
        assert_eq!(trs[0].score(Model::Default).unwrap().score, 75.0);
    }

    #[test]
    fn events() {
        let tr = &parse_test_results("r.xml", RES).unwrap()[0];
        let opts = EventOptions {
            tenant: "t1".into(),
            device: None,
        };
        let e = to_event("r.xml", tr, &opts).unwrap();
        assert_eq!(e.device_id, "vm");
        assert_eq!(e.kind, ChangeKind::Snapshot);
        assert_eq!(e.source, ConfigSource::Scanner);
        assert_eq!(e.observed_at, 1_795_454_721_000);
        assert_eq!(e.sequence, e.observed_at);
        let keys: Vec<_> = e.settings.iter().map(|s| s.key.as_str()).collect();
        assert_eq!(keys, ["xccdf:r1", "xccdf:r3"]);
        assert_eq!(e.settings[1].value, Value::String("notapplicable".into()));
        let e = to_event(
            "r.xml",
            tr,
            &EventOptions {
                tenant: "t1".into(),
                device: Some("host-7".into()),
            },
        )
        .unwrap();
        assert_eq!(e.device_id, "host-7");
        assert_eq!(parse_xccdf_time("2026-11-23T17:25:21"), Some(1_795_454_721_000));
    }

    #[test]
    fn errors() {
        let e = parse_test_results("r.xml", "<Benchmark xmlns='http://checklists.nist.gov/xccdf/1.2'/>")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no XCCDF 1.2 TestResult"), "{e}");
        let bad = RES.replace("<result>pass</result>", "<result>PASSED</result>");
        let e = parse_test_results("r.xml", &bad).unwrap_err().to_string();
        assert!(
            e.starts_with("r.xml: TestResult xccdf_org.open-scap_testresult_p: rule-result r1: bad result \"PASSED\""),
            "{e}"
        );
        let mut tr = parse_test_results("r.xml", RES).unwrap().remove(0);
        tr.target.clear();
        let opts = EventOptions {
            tenant: "t".into(),
            device: None,
        };
        assert!(to_event("r.xml", &tr, &opts)
            .unwrap_err()
            .to_string()
            .contains("--device"));
    }
}
