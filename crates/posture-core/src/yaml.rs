//! A YAML tree that remembers the line of every node, so baseline errors can
//! say `file:line`. Built from yaml-rust2's marked event stream.

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// The value of a [`Node`]. Plain scalars are typed as below; a quoted scalar is
/// always [`Kind::Str`], so `'7'` stays text where `7` is a number.
#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    /// A plain `null`, `Null`, `NULL`, `~`, or an empty value.
    Null,
    /// A plain `true` or `false` (also capitalised or all upper case).
    Bool(bool),
    /// A plain scalar that parses as an `i64`.
    Int(i64),
    /// A plain number with at most one `.` and an optional exponent, e.g. `2.5` or `1e3`
    /// (so `version: 2026.11` arrives as a float; `10.0.19045` has two dots and stays a string).
    Float(f64),
    /// A quoted scalar, or a plain one that is none of the above.
    Str(String),
    /// A sequence, items in document order.
    Seq(Vec<Node>),
    /// A mapping, entries in document order. Keys are plain strings (integer and
    /// boolean keys become their text, a null key the empty string); a duplicate
    /// key is a parse error.
    Map(Vec<(String, Node)>),
}

/// One parsed YAML value with the line it starts on, so that baseline and
/// exception errors can point at `file:line`.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// 1-based line where the node starts.
    pub line: usize,
    /// The value: a typed scalar, or a collection of child nodes.
    pub kind: Kind,
}

impl Node {
    /// The value under `key` if this node is a mapping that has it; `None` for a
    /// missing key or a node that is not a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.kind {
            Kind::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// A short name of the node's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            Kind::Null => "null",
            Kind::Bool(_) => "a boolean",
            Kind::Int(_) => "an integer",
            Kind::Float(_) => "a number",
            Kind::Str(_) => "a string",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }
}

enum Frame {
    Seq(usize, Vec<Node>),
    Map(usize, Vec<(String, Node)>, Option<(String, usize)>),
}

struct Builder {
    stack: Vec<Frame>,
    docs: Vec<Node>,
    error: Option<(usize, String)>,
}

impl Builder {
    fn push_node(&mut self, node: Node) {
        match self.stack.last_mut() {
            None => self.docs.push(node),
            Some(Frame::Seq(_, items)) => items.push(node),
            Some(Frame::Map(_, entries, pending)) => match pending.take() {
                None => match node.kind {
                    Kind::Str(s) => *pending = Some((s, node.line)),
                    Kind::Int(i) => *pending = Some((i.to_string(), node.line)),
                    Kind::Bool(b) => *pending = Some((b.to_string(), node.line)),
                    Kind::Null => *pending = Some((String::new(), node.line)),
                    _ => {
                        if self.error.is_none() {
                            self.error = Some((node.line, "mapping keys must be plain strings".into()));
                        }
                    }
                },
                Some((k, _)) => {
                    if entries.iter().any(|(e, _)| *e == k) && self.error.is_none() {
                        self.error = Some((node.line, format!("duplicate key {k:?}")));
                    }
                    entries.push((k, node));
                }
            },
        }
    }
}

fn scalar(v: String, style: TScalarStyle) -> Kind {
    if style != TScalarStyle::Plain {
        return Kind::Str(v);
    }
    match v.as_str() {
        "" | "~" | "null" | "Null" | "NULL" => Kind::Null,
        "true" | "True" | "TRUE" => Kind::Bool(true),
        "false" | "False" | "FALSE" => Kind::Bool(false),
        _ => {
            if let Ok(i) = v.parse::<i64>() {
                Kind::Int(i)
            } else if v.bytes().any(|b| b.is_ascii_digit())
                && v.bytes().all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
                && v.matches('.').count() <= 1
            {
                v.parse::<f64>().map(Kind::Float).unwrap_or(Kind::Str(v))
            } else {
                Kind::Str(v)
            }
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        let line = mark.line();
        match ev {
            Event::Scalar(v, style, _, _) => {
                let kind = scalar(v, style);
                self.push_node(Node { line, kind });
            }
            Event::SequenceStart(..) => self.stack.push(Frame::Seq(line, Vec::new())),
            Event::MappingStart(..) => self.stack.push(Frame::Map(line, Vec::new(), None)),
            Event::SequenceEnd => {
                if let Some(Frame::Seq(l, items)) = self.stack.pop() {
                    self.push_node(Node {
                        line: l,
                        kind: Kind::Seq(items),
                    });
                }
            }
            Event::MappingEnd => {
                if let Some(Frame::Map(l, entries, _)) = self.stack.pop() {
                    self.push_node(Node {
                        line: l,
                        kind: Kind::Map(entries),
                    });
                }
            }
            Event::Alias(_) => {
                // An alias repeats a subtree: a few lines could expand without bound.
                self.error = Some((line, "YAML aliases (*name) are not supported".into()));
            }
            _ => {}
        }
    }
}

/// Parses every document of a YAML source. Errors carry a 1-based line.
pub fn parse(src: &str) -> Result<Vec<Node>, (usize, String)> {
    let mut b = Builder {
        stack: Vec::new(),
        docs: Vec::new(),
        error: None,
    };
    let mut parser = Parser::new_from_str(src);
    if let Err(e) = parser.load(&mut b, true) {
        return Err((e.marker().line(), e.info().to_string()));
    }
    if let Some(e) = b.error {
        return Err(e);
    }
    Ok(b.docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_types() {
        let docs = parse("a: 1\nb:\n  - x\n  - {k: v, n: 2.5, t: true, q: '7'}\n").unwrap();
        let root = &docs[0];
        assert_eq!(root.get("a").unwrap().kind, Kind::Int(1));
        let b = root.get("b").unwrap();
        let Kind::Seq(items) = &b.kind else { panic!() };
        assert_eq!(items[0].line, 3);
        assert_eq!(items[1].line, 4);
        assert_eq!(items[1].get("n").unwrap().kind, Kind::Float(2.5));
        assert_eq!(items[1].get("t").unwrap().kind, Kind::Bool(true));
        assert_eq!(items[1].get("q").unwrap().kind, Kind::Str("7".into()));
    }

    #[test]
    fn errors_have_lines() {
        let (line, msg) = parse("a: 1\na: 2\n").unwrap_err();
        assert_eq!(line, 2);
        assert!(msg.contains("duplicate key"));
        let (line, _) = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(line >= 1);
    }
}
