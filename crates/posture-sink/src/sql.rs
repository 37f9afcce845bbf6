//! Small SQL helpers: splitting a file into statements, quoting literals and identifiers.

/// Splits SQL text into statements at top-level `;`, skipping `--` and `/* */` comments and
/// respecting quoted strings and identifiers. Returns the trimmed, non-empty statements
/// (comments inside a statement are kept, comments between statements dropped).
pub fn split_statements(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = text.chars().peekable();
    let mut has_code = false;
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' | '`' => {
                has_code = true;
                cur.push(c);
                while let Some(d) = chars.next() {
                    cur.push(d);
                    if d == '\\' {
                        if let Some(e) = chars.next() {
                            cur.push(e);
                        }
                    } else if d == c {
                        break;
                    }
                }
            }
            '-' if chars.peek() == Some(&'-') => {
                // Line comment: keep it only inside a statement.
                let mut comment = String::from("-");
                for d in chars.by_ref() {
                    if d == '\n' {
                        break;
                    }
                    comment.push(d);
                }
                if has_code {
                    cur.push_str(&comment);
                    cur.push('\n');
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut prev = ' ';
                for d in chars.by_ref() {
                    if prev == '*' && d == '/' {
                        break;
                    }
                    prev = d;
                }
                cur.push(' ');
            }
            ';' => {
                if has_code {
                    out.push(cur.trim().to_string());
                }
                cur.clear();
                has_code = false;
            }
            c => {
                if !c.is_whitespace() {
                    has_code = true;
                }
                if has_code {
                    cur.push(c);
                }
            }
        }
    }
    if has_code && !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

/// A ClickHouse string literal: `'...'` with `\` and `'` escaped.
pub fn quote_string(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('\'');
    for c in s.chars() {
        match c {
            '\\' => q.push_str("\\\\"),
            '\'' => q.push_str("\\'"),
            '\n' => q.push_str("\\n"),
            '\r' => q.push_str("\\r"),
            '\t' => q.push_str("\\t"),
            '\0' => q.push_str("\\0"),
            c => q.push(c),
        }
    }
    q.push('\'');
    q
}

/// Whether `name` is a plain identifier (`[A-Za-z_][A-Za-z0-9_]*`), safe to use unquoted.
pub fn is_identifier(name: &str) -> bool {
    let mut cs = name.chars();
    matches!(cs.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && cs.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_statements() {
        let text = "-- header; not a statement\nCREATE TABLE a (x String DEFAULT ';') ENGINE = Log;\n\n\
                    /* block; */ SELECT 1 -- trailing; comment\n; SELECT 'it\\'s;' ;  \n-- end\n";
        assert_eq!(
            split_statements(text),
            vec![
                "CREATE TABLE a (x String DEFAULT ';') ENGINE = Log".to_string(),
                "SELECT 1 -- trailing; comment".to_string(),
                "SELECT 'it\\'s;'".to_string(),
            ]
        );
        assert!(split_statements("-- only a comment\n").is_empty());
        assert_eq!(split_statements("SELECT 2"), vec!["SELECT 2".to_string()]);
    }

    #[test]
    fn quotes_and_identifiers() {
        assert_eq!(quote_string("a'b\\c"), "'a\\'b\\\\c'");
        assert!(is_identifier("posture_1"));
        assert!(is_identifier("_x"));
        assert!(!is_identifier("1abc"));
        assert!(!is_identifier("a-b"));
        assert!(!is_identifier(""));
        assert!(!is_identifier("a`; DROP"));
    }
}
