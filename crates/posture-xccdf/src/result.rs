//! XCCDF rule results (`ResultEnumType`), errors, and the XML helpers shared
//! by the benchmark and TestResult readers.

use std::fmt;

/// The XCCDF 1.2 namespace.
pub const XCCDF12_NS: &str = "http://checklists.nist.gov/xccdf/1.2";
/// The XCCDF 1.1 namespace (not supported, recognised for a clear error).
pub const XCCDF11_NS: &str = "http://checklists.nist.gov/xccdf/1.1";

/// Prefix of the setting keys that carry scanner results: the setting
/// `xccdf:<rule id>` holds the rule's result string.
pub const SETTING_PREFIX: &str = "xccdf:";

/// The setting key of a rule's result.
pub fn setting_key(rule_id: &str) -> String {
    format!("{SETTING_PREFIX}{rule_id}")
}

/// A rule result (XCCDF 1.2 `ResultEnumType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum XccdfResult {
    /// The target satisfied the rule.
    Pass,
    /// The target did not satisfy the rule.
    Fail,
    /// The checking engine could not complete the evaluation.
    Error,
    /// The result is unknown (the engine could not tell).
    Unknown,
    /// The rule does not apply to the target (platform mismatch).
    NotApplicable,
    /// The rule was not evaluated (no check, or a manual one).
    NotChecked,
    /// The rule was not selected in the profile.
    NotSelected,
    /// The rule was checked but is not scored (`role="unscored"`).
    Informational,
    /// The rule failed and was fixed by remediation; scored as pass.
    Fixed,
}

impl XccdfResult {
    /// Every result value, in specification order.
    pub const ALL: [XccdfResult; 9] = [
        XccdfResult::Pass,
        XccdfResult::Fail,
        XccdfResult::Error,
        XccdfResult::Unknown,
        XccdfResult::NotApplicable,
        XccdfResult::NotChecked,
        XccdfResult::NotSelected,
        XccdfResult::Informational,
        XccdfResult::Fixed,
    ];

    /// The result string as written in XCCDF and in posture settings.
    pub fn as_str(self) -> &'static str {
        match self {
            XccdfResult::Pass => "pass",
            XccdfResult::Fail => "fail",
            XccdfResult::Error => "error",
            XccdfResult::Unknown => "unknown",
            XccdfResult::NotApplicable => "notapplicable",
            XccdfResult::NotChecked => "notchecked",
            XccdfResult::NotSelected => "notselected",
            XccdfResult::Informational => "informational",
            XccdfResult::Fixed => "fixed",
        }
    }

    /// Parses a result string (exact, lower case as in XCCDF).
    pub fn parse(s: &str) -> Option<XccdfResult> {
        XccdfResult::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Whether the XCCDF models count the result (every model leaves out
    /// notapplicable, notchecked, notselected and informational).
    pub fn counted(self) -> bool {
        !matches!(
            self,
            XccdfResult::NotApplicable
                | XccdfResult::NotChecked
                | XccdfResult::NotSelected
                | XccdfResult::Informational
        )
    }

    /// Whether the result scores as a pass (pass and fixed).
    pub fn passed(self) -> bool {
        matches!(self, XccdfResult::Pass | XccdfResult::Fixed)
    }
}

impl fmt::Display for XccdfResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error reading XCCDF content or a posture XCCDF section: the file, the
/// element or item it is about, and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XccdfError {
    /// The file (or other source name) the error is in.
    pub file: String,
    /// What the error is about, e.g. `Rule xccdf_..._rule_x` or `line 12`.
    pub at: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl XccdfError {
    /// An error about the whole file.
    pub fn file(file: &str, message: impl Into<String>) -> XccdfError {
        XccdfError {
            file: file.to_string(),
            at: None,
            message: message.into(),
        }
    }

    /// An error about one element or item.
    pub fn at(file: &str, at: impl Into<String>, message: impl Into<String>) -> XccdfError {
        XccdfError {
            file: file.to_string(),
            at: Some(at.into()),
            message: message.into(),
        }
    }
}

impl fmt::Display for XccdfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.at {
            Some(at) => write!(f, "{}: {}: {}", self.file, at, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for XccdfError {}

/// How deep elements may nest in an XCCDF, ARF or results file. Real files nest a few dozen
/// levels; the XML parser recurses once per level, so a file of 100,000 nested elements (a few
/// hundred KB) would overflow the stack.
pub const MAX_XML_DEPTH: usize = 512;

/// Parses an XML document (no DTD, at most [`MAX_XML_DEPTH`] levels), naming the file and line
/// on error.
pub(crate) fn parse_xml<'a>(file: &str, text: &'a str) -> Result<roxmltree::Document<'a>, XccdfError> {
    if let Some(line) = nested_deeper_than(text, MAX_XML_DEPTH) {
        return Err(XccdfError::file(
            file,
            format!("line {line}: elements nest deeper than {MAX_XML_DEPTH} levels"),
        ));
    }
    let opts = roxmltree::ParsingOptions {
        allow_dtd: false,
        ..Default::default()
    };
    roxmltree::Document::parse_with_options(text, opts)
        .map_err(|e| XccdfError::file(file, format!("not well-formed XML: {e}")))
}

/// The line where elements first nest deeper than `max`, if they do: a scan of the tags that
/// skips comments, CDATA, processing instructions and declarations, and quoted attribute values.
/// Not a validation (the parser does that), only a bound it can be run under.
fn nested_deeper_than(text: &str, max: usize) -> Option<usize> {
    let b = text.as_bytes();
    let skip_to = |from: usize, end: &[u8]| -> usize {
        b[from..]
            .windows(end.len())
            .position(|w| w == end)
            .map_or(b.len(), |p| from + p + end.len())
    };
    let (mut i, mut depth) = (0, 0usize);
    while let Some(p) = b[i..].iter().position(|&c| c == b'<') {
        i += p;
        let rest = &b[i..];
        if rest.starts_with(b"<!--") {
            i = skip_to(i + 4, b"-->");
        } else if rest.starts_with(b"<![CDATA[") {
            i = skip_to(i + 9, b"]]>");
        } else if rest.starts_with(b"<?") {
            i = skip_to(i + 2, b"?>");
        } else if rest.starts_with(b"<!") || rest.starts_with(b"</") {
            depth = depth.saturating_sub(usize::from(rest.starts_with(b"</")));
            i = skip_to(i + 2, b">");
        } else {
            // A start tag: to its '>' outside quotes; "/>" closes it at once.
            let mut j = i + 1;
            let mut quote = None;
            while j < b.len() {
                match (quote, b[j]) {
                    (None, q @ (b'"' | b'\'')) => quote = Some(q),
                    (Some(q), c) if c == q => quote = None,
                    (None, b'>') => break,
                    _ => {}
                }
                j += 1;
            }
            if j < b.len() && b[j - 1] != b'/' {
                depth += 1;
                if depth > max {
                    return Some(text[..i].matches('\n').count() + 1);
                }
            }
            i = j + 1;
        }
        if i >= b.len() {
            break;
        }
    }
    None
}

/// Whether a node is the XCCDF 1.2 element `name`.
pub(crate) fn is_x(n: &roxmltree::Node, name: &str) -> bool {
    n.is_element() && n.tag_name().name() == name && n.tag_name().namespace() == Some(XCCDF12_NS)
}

/// The XCCDF 1.2 child elements called `name`.
pub(crate) fn children_x<'a, 'input: 'a>(
    n: roxmltree::Node<'a, 'input>,
    name: &'a str,
) -> impl Iterator<Item = roxmltree::Node<'a, 'input>> + 'a {
    n.children().filter(move |c| is_x(c, name))
}

/// The text of an element and its descendants, whitespace collapsed.
pub(crate) fn text_of(n: roxmltree::Node) -> String {
    let mut out = String::new();
    for d in n.descendants().filter(|d| d.is_text()) {
        out.push_str(d.text().unwrap_or(""));
        out.push(' ');
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The line of a node, for errors.
pub(crate) fn line_of(doc: &roxmltree::Document, n: roxmltree::Node) -> u32 {
    doc.text_pos_at(n.range().start).row
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_strings_round_trip() {
        for r in XccdfResult::ALL {
            assert_eq!(XccdfResult::parse(r.as_str()), Some(r));
        }
        assert_eq!(XccdfResult::parse("PASS"), None);
        let counted: Vec<_> = XccdfResult::ALL.into_iter().filter(|r| r.counted()).collect();
        assert_eq!(
            counted,
            [
                XccdfResult::Pass,
                XccdfResult::Fail,
                XccdfResult::Error,
                XccdfResult::Unknown,
                XccdfResult::Fixed
            ]
        );
        assert!(XccdfResult::Fixed.passed() && !XccdfResult::Error.passed());
    }
}

#[cfg(test)]
mod depth_tests {
    use super::nested_deeper_than;

    #[test]
    fn the_depth_scan_counts_elements_only() {
        assert_eq!(nested_deeper_than("<a><b><c/></b></a>", 2), None);
        assert_eq!(nested_deeper_than("<a><b><c></c></b></a>", 2), Some(1));
        // Comments, CDATA, instructions, quoted '>' and "/>" do not nest.
        let text = "<?xml version=\"1.0\"?>\n<!-- <x><y><z> -->\n<a t=\"1>2\" u='/>'><![CDATA[<p><q><r>]]><b/></a>";
        assert_eq!(nested_deeper_than(text, 1), None);
        assert_eq!(nested_deeper_than("<a>\n<b>\n<c>", 2), Some(3));
    }
}
