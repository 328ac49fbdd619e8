//! Host constraints as users write them: `zone==a`, `zone!=b`, `zone==eu-*`,
//! `zone=~eu-(west|north)`, `zone!~test.*`, and host names through the reserved key
//! `node` (`node==host-3`, `node!=host-*`).
//!
//! Rules, precisely:
//! - `==` and `!=` compare the whole value. A value holding `*` (any run of
//!   characters, possibly empty) or `?` (exactly one character) is a glob, matched
//!   against the whole value; there is no escape, so a literal `*` cannot be asked for.
//! - `=~` and `!~` take a regular expression (Rust `regex` syntax) that must match
//!   the WHOLE value (it is anchored for you: `a|b` means exactly `a` or exactly `b`).
//! - A host without the label fails `==` and `=~` and passes `!=` and `!~`.
//! - Every constraint of a request must hold (they are ANDed).
//! - Spaces around the operator are allowed; the value runs to the end of the text
//!   (trailing spaces dropped).
//!
//! A constraint that does not parse yields a [`ConstraintError`] naming the column
//! (1-based, in characters) and what was expected there.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The reserved key that matches host names instead of labels.
pub const NODE_KEY: &str = "node";

/// Regular expressions are compiled with this size limit, so a hostile pattern
/// cannot make the server build a huge automaton.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// `==`: equal to a value or matching a glob.
    Eq,
    /// `!=`: the negation of `==`.
    Ne,
    /// `=~`: matching a regular expression.
    Match,
    /// `!~`: the negation of `=~`.
    NotMatch,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "==",
            Op::Ne => "!=",
            Op::Match => "=~",
            Op::NotMatch => "!~",
        }
    }

    /// `!=` and `!~` pass when the positive form fails.
    pub fn is_negated(self) -> bool {
        matches!(self, Op::Ne | Op::NotMatch)
    }
}

#[derive(Debug, Clone)]
enum Matcher {
    Literal,
    Glob,
    Regex(regex::Regex),
}

/// A parsed constraint. Built only by parsing, so it is always valid.
#[derive(Debug, Clone)]
pub struct Constraint {
    key: String,
    op: Op,
    value: String,
    matcher: Matcher,
}

impl PartialEq for Constraint {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key && self.op == other.op && self.value == other.value
    }
}

impl Eq for Constraint {}

/// A constraint that does not parse: where, and what was expected there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("constraint {input:?}: at column {column}, expected {expected}")]
pub struct ConstraintError {
    pub input: String,
    /// 1-based, counted in characters.
    pub column: usize,
    pub expected: String,
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/')
}

impl Constraint {
    pub fn parse(input: &str) -> Result<Constraint, ConstraintError> {
        let chars: Vec<(usize, char)> = input.char_indices().collect();
        let error = |at: usize, expected: String| ConstraintError {
            input: input.to_owned(),
            column: at + 1,
            expected,
        };
        let mut at = 0;
        while at < chars.len() && chars[at].1.is_whitespace() {
            at += 1;
        }
        let key_start = at;
        while at < chars.len() && is_key_char(chars[at].1) {
            at += 1;
        }
        if at == key_start {
            let expected = match chars.get(at) {
                None => "a label key or `node`, then an operator (==, !=, =~ or !~) and a value"
                    .to_owned(),
                Some((_, '=' | '!')) => "a label key or `node` before the operator".to_owned(),
                Some((_, c)) => format!(
                    "a label key (letters, digits, '.', '_', '-', '/') or `node`, found {c:?}"
                ),
            };
            return Err(error(at, expected));
        }
        let key = &input[chars[key_start].0..byte_at(&chars, input, at)];
        while at < chars.len() && chars[at].1.is_whitespace() {
            at += 1;
        }
        let op = match (chars.get(at).map(|c| c.1), chars.get(at + 1).map(|c| c.1)) {
            (Some('='), Some('=')) => Op::Eq,
            (Some('!'), Some('=')) => Op::Ne,
            (Some('='), Some('~')) => Op::Match,
            (Some('!'), Some('~')) => Op::NotMatch,
            (None, _) => {
                return Err(error(
                    at,
                    "an operator (==, !=, =~ or !~) after the key".to_owned(),
                ))
            }
            (Some(c), _) => {
                return Err(error(
                    at,
                    format!("an operator (==, !=, =~ or !~), found {c:?}"),
                ))
            }
        };
        at += 2;
        while at < chars.len() && chars[at].1.is_whitespace() {
            at += 1;
        }
        let value = input[byte_at(&chars, input, at)..].trim_end();
        if value.is_empty() {
            return Err(error(at, format!("a value after {}", op.as_str())));
        }
        let matcher = match op {
            Op::Eq | Op::Ne if value.contains(['*', '?']) => Matcher::Glob,
            Op::Eq | Op::Ne => Matcher::Literal,
            Op::Match | Op::NotMatch => {
                let compile = |pattern: &str| {
                    regex::RegexBuilder::new(pattern)
                        .size_limit(REGEX_SIZE_LIMIT)
                        .build()
                };
                // Compile the pattern alone first: wrapping an unbalanced pattern
                // such as `a)|(b` could otherwise turn it into a valid but different one.
                let anchored = compile(value)
                    .and_then(|_| compile(&format!("^(?:{value})$")))
                    .map_err(|e| {
                        let detail = e.to_string();
                        let detail = detail.lines().last().unwrap_or("").trim();
                        error(at, format!("a valid regular expression ({detail})"))
                    })?;
                Matcher::Regex(anchored)
            }
        };
        Ok(Constraint {
            key: key.to_owned(),
            op,
            value: value.to_owned(),
            matcher,
        })
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn op(&self) -> Op {
        self.op
    }

    pub fn value(&self) -> &str {
        &self.value
    }

    /// True for constraints on host names (`node==…`); those are checked per host,
    /// not per class.
    pub fn is_node_name(&self) -> bool {
        self.key == NODE_KEY
    }

    /// True for `==` with a plain value (no glob characters).
    pub fn is_literal_eq(&self) -> bool {
        self.op == Op::Eq && matches!(self.matcher, Matcher::Literal)
    }

    /// True for `==` / `!=` with a plain value: decided by one lookup.
    pub(crate) fn is_literal(&self) -> bool {
        matches!(self.matcher, Matcher::Literal)
    }

    pub fn is_glob(&self) -> bool {
        matches!(self.matcher, Matcher::Glob)
    }

    /// Whether the positive form (`==` / `=~`) matches `value`.
    fn positive_match(&self, value: &str) -> bool {
        match &self.matcher {
            Matcher::Literal => value == self.value,
            Matcher::Glob => glob_match(&self.value, value),
            Matcher::Regex(re) => re.is_match(value),
        }
    }

    /// Whether the constraint holds for a label value (`None`: the label is missing).
    pub fn matches_value(&self, value: Option<&str>) -> bool {
        let positive = value.is_some_and(|v| self.positive_match(v));
        positive != self.op.is_negated()
    }

    /// Whether the constraint holds for a host with this name and these labels.
    pub fn matches(&self, name: &str, labels: &std::collections::BTreeMap<String, String>) -> bool {
        if self.is_node_name() {
            self.matches_value(Some(name))
        } else {
            self.matches_value(labels.get(&self.key).map(String::as_str))
        }
    }

    /// How hosts that FAIL this constraint are described, singular then plural verb
    /// phrase: ("lacks label gpu=true", "lack label gpu=true").
    pub(crate) fn failure_phrase(&self, plural: bool) -> String {
        let (k, v) = (&self.key, &self.value);
        let pick = |one: &str, many: &str| {
            if plural {
                many.to_owned()
            } else {
                one.to_owned()
            }
        };
        let negated = self.op.is_negated();
        match (&self.matcher, self.is_node_name(), negated) {
            (Matcher::Literal, false, false) => format!("{} label {k}={v}", pick("lacks", "lack")),
            (Matcher::Literal, false, true) => format!("{} label {k}={v}", pick("has", "have")),
            (Matcher::Glob, false, false) => {
                format!("{} a label {k} matching {v}", pick("lacks", "lack"))
            }
            (Matcher::Glob, false, true) => {
                format!("{} a label {k} matching {v}", pick("has", "have"))
            }
            (Matcher::Regex(_), false, false) => {
                format!("{} a label {k} matching regex {v}", pick("lacks", "lack"))
            }
            (Matcher::Regex(_), false, true) => {
                format!("{} a label {k} matching regex {v}", pick("has", "have"))
            }
            (Matcher::Literal, true, false) => format!("{} not {v}", pick("is", "are")),
            (Matcher::Literal, true, true) => format!("{} {v}", pick("is", "are")),
            (Matcher::Glob, true, false) => {
                format!("{} not matching {v}", pick("has a name", "have names"))
            }
            (Matcher::Glob, true, true) => {
                format!("{} matching {v}", pick("has a name", "have names"))
            }
            (Matcher::Regex(_), true, false) => {
                format!(
                    "{} not matching regex {v}",
                    pick("has a name", "have names")
                )
            }
            (Matcher::Regex(_), true, true) => {
                format!("{} matching regex {v}", pick("has a name", "have names"))
            }
        }
    }
}

fn byte_at(chars: &[(usize, char)], input: &str, at: usize) -> usize {
    chars.get(at).map_or(input.len(), |c| c.0)
}

/// Whole-string glob match: `*` any run (possibly empty), `?` one character.
/// Linear backtracking over the last `*`, so no pattern is exponential.
pub(crate) fn glob_match(pattern: &str, text: &str) -> bool {
    let p = pattern.as_bytes();
    let t = text.as_bytes();
    let (mut pi, mut ti) = (0usize, 0usize);
    // Where the last `*` was, and where in the text it started matching.
    let mut star: Option<(usize, usize)> = None;
    let char_len = |i: usize| text[i..].chars().next().map_or(1, char::len_utf8);
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == b'?' {
            pi += 1;
            ti += char_len(ti);
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((star_pi, star_ti)) = star {
            // Let the last `*` swallow one more character and retry from there.
            let next = star_ti + char_len(star_ti);
            star = Some((star_pi, next));
            pi = star_pi + 1;
            ti = next;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

impl FromStr for Constraint {
    type Err = ConstraintError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Constraint::parse(s)
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{}", self.key, self.op.as_str(), self.value)
    }
}

impl Serialize for Constraint {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Constraint {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Constraint::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn parse(s: &str) -> Constraint {
        Constraint::parse(s).unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
    }

    fn err(s: &str) -> ConstraintError {
        match Constraint::parse(s) {
            Ok(c) => panic!("{s:?} should not parse, got {c}"),
            Err(e) => e,
        }
    }

    #[test]
    fn operators_parse_and_print_back() {
        for (text, op) in [
            ("zone==a", Op::Eq),
            ("zone!=a", Op::Ne),
            ("zone=~a|b", Op::Match),
            ("zone!~a|b", Op::NotMatch),
            ("kubernetes.io/arch==arm64", Op::Eq),
        ] {
            let c = parse(text);
            assert_eq!(c.op(), op);
            assert_eq!(c.to_string(), text);
        }
        let spaced = parse("  zone ==  eu west  ");
        assert_eq!((spaced.key(), spaced.value()), ("zone", "eu west"));
        assert!(parse("node==host-3").is_node_name());
    }

    #[test]
    fn errors_say_where_and_what() {
        let e = err("zone=a");
        assert_eq!(e.column, 5);
        assert!(e.expected.contains("operator"), "{e}");
        assert_eq!(
            e.to_string(),
            "constraint \"zone=a\": at column 5, expected an operator (==, !=, =~ or !~), found '='"
        );
        let e = err("==a");
        assert_eq!((e.column, e.expected.contains("key")), (1, true));
        let e = err("zone==");
        assert_eq!((e.column, e.expected.as_str()), (7, "a value after =="));
        let e = err("");
        assert_eq!(e.column, 1);
        let e = err("zone");
        assert_eq!(e.column, 5);
        let e = err("zö==a");
        assert_eq!(e.column, 2, "columns count characters: {e}");
        let e = err("zone=~(a");
        assert_eq!(e.column, 7);
        assert!(e.expected.starts_with("a valid regular expression"), "{e}");
        // Unbalanced in a way that wrapping would have hidden.
        let e = err("zone=~a)|(b");
        assert_eq!(e.column, 7);
    }

    #[test]
    fn missing_labels_fail_positive_and_pass_negative_forms() {
        let labels = BTreeMap::new();
        assert!(!parse("gpu==true").matches("h", &labels));
        assert!(!parse("gpu=~t.*").matches("h", &labels));
        assert!(parse("gpu!=true").matches("h", &labels));
        assert!(parse("gpu!~t.*").matches("h", &labels));
    }

    #[test]
    fn globs_and_regexes_match_the_whole_value() {
        let labels: BTreeMap<String, String> =
            [("role".to_owned(), "web-frontend".to_owned())].into();
        assert!(parse("role==web-*").matches("h", &labels));
        assert!(parse("role==*front*").matches("h", &labels));
        assert!(!parse("role==web").matches("h", &labels));
        assert!(!parse("role==web-?").matches("h", &labels));
        assert!(parse("role!=db-*").matches("h", &labels));
        assert!(parse("role=~web-.*").matches("h", &labels));
        assert!(!parse("role=~web").matches("h", &labels), "anchored");
        assert!(parse("role!~web").matches("h", &labels));
        assert!(parse("node==host-?").matches("host-3", &labels));
        assert!(!parse("node==host-?").matches("host-33", &labels));
        assert!(parse("node!=host-3").matches("host-4", &labels));
    }

    #[test]
    fn glob_edge_cases() {
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "abxbc"));
        assert!(!glob_match("a*b*c", "abxbd"));
        assert!(glob_match("?é?", "xéy"));
        assert!(glob_match("é*", "éte"));
        assert!(glob_match("**a", "ba"));
        assert!(!glob_match("a?", "a"));
    }

    #[test]
    fn serde_round_trips_through_text_and_rejects_bad_text() {
        let c = parse("zone=~a|b");
        let json = serde_json::to_string(&c).expect("serialize");
        assert_eq!(json, "\"zone=~a|b\"");
        let back: Constraint = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, c);
        assert!(serde_json::from_str::<Constraint>("\"zone=a\"").is_err());
    }

    #[test]
    fn failure_phrases_read_naturally() {
        assert_eq!(
            parse("gpu==true").failure_phrase(false),
            "lacks label gpu=true"
        );
        assert_eq!(
            parse("gpu==true").failure_phrase(true),
            "lack label gpu=true"
        );
        assert_eq!(parse("node==host-3").failure_phrase(true), "are not host-3");
        assert_eq!(
            parse("zone=~a|b").failure_phrase(false),
            "lacks a label zone matching regex a|b"
        );
    }
}
