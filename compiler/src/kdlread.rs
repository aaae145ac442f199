//! Reading KDL 2.0 input safely: size and nesting limits, syntax errors as problems,
//! and small typed accessors that keep spans, shared by specs, platform files and ABI
//! documents.

use kdl::{KdlDocument, KdlEntry, KdlNode, KdlValue};
use miette::SourceSpan;

use crate::diagnostic::{Problem, Problems, SourceFile};

/// Inputs larger than this are not specs, platforms or ABI documents.
pub const MAX_INPUT_BYTES: usize = 4 << 20;
/// Deeper nesting than any vmc format uses; the limit keeps the parser's recursion bounded.
pub const MAX_NESTING: usize = 16;

/// Turns raw bytes into a source, refusing what cannot be a KDL text.
pub fn source_from_bytes(name: &str, bytes: &[u8]) -> Result<SourceFile, Problem> {
    if bytes.len() > MAX_INPUT_BYTES {
        return Err(Problem::new(
            "vmc::input::too-large",
            format!(
                "{name} is {} bytes; vmc reads at most {MAX_INPUT_BYTES} bytes",
                bytes.len()
            ),
        ));
    }
    if bytes.contains(&0) {
        return Err(Problem::new(
            "vmc::input::binary",
            format!("{name} is a binary file (it contains NUL bytes), not KDL text"),
        ));
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => Ok(SourceFile::new(name, text)),
        Err(e) => Err(Problem::new(
            "vmc::input::not-utf8",
            format!(
                "{name} is not valid UTF-8 (first bad byte at offset {})",
                e.valid_up_to()
            ),
        )
        .help("KDL documents are UTF-8 text")),
    }
}

/// Parses a KDL 2.0 document, or says why not (with spans).
pub fn parse(source: &SourceFile, what: &str) -> Result<KdlDocument, Problems> {
    let text = source.text();
    if text.trim().is_empty() {
        return Err(Problem::new(
            "vmc::input::empty",
            format!("{} is empty; expected {what}", source.name()),
        )
        .into());
    }
    if let Some(offset) = too_deep(text) {
        return Err(Problem::new(
            "vmc::input::too-deep",
            format!("nesting deeper than {MAX_NESTING} levels"),
        )
        .at(source, SourceSpan::from((offset, 1)))
        .label("too deep")
        .help(format!("{what} never nests this deeply"))
        .into());
    }
    KdlDocument::parse_v2(text).map_err(|err| {
        let problems: Vec<Problem> = err
            .diagnostics
            .iter()
            .map(|d| {
                let mut p = Problem::new(
                    "vmc::kdl::syntax",
                    d.message
                        .clone()
                        .unwrap_or_else(|| "invalid KDL 2.0 syntax".to_string()),
                )
                .at(source, d.span)
                .label(d.label.clone().unwrap_or_else(|| "here".to_string()));
                if let Some(help) = &d.help {
                    p = p.help(help.clone());
                }
                p
            })
            .collect();
        if problems.is_empty() {
            Problem::new("vmc::kdl::syntax", format!("{} is not valid KDL 2.0", source.name())).into()
        } else {
            Problems(problems)
        }
    })
}

/// The offset of the first `{` nested deeper than [`MAX_NESTING`], looking past strings
/// and comments.
fn too_deep(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => i = skip_quoted(bytes, i),
            b'#' if matches!(bytes.get(i + 1), Some(b'"' | b'#')) => i = skip_raw(bytes, i),
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => i = skip_block_comment(bytes, i),
            b'{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Some(i);
                }
                i += 1;
            }
            b'}' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            _ => i += 1,
        }
    }
    None
}

fn skip_quoted(bytes: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    i
}

fn skip_raw(bytes: &[u8], start: usize) -> usize {
    let hashes = bytes[start..].iter().take_while(|&&b| b == b'#').count();
    let mut i = start + hashes;
    if bytes.get(i) != Some(&b'"') {
        return i;
    }
    i += 1;
    while i < bytes.len() {
        if bytes[i] == b'"' && bytes[i + 1..].iter().take(hashes).filter(|&&b| b == b'#').count() == hashes {
            return i + 1 + hashes;
        }
        i += 1;
    }
    i
}

fn skip_block_comment(bytes: &[u8], start: usize) -> usize {
    let mut depth = 0usize;
    let mut i = start;
    while i + 1 < bytes.len() {
        if bytes[i] == b'/' && bytes[i + 1] == b'*' {
            depth += 1;
            i += 2;
        } else if bytes[i] == b'*' && bytes[i + 1] == b'/' {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    bytes.len()
}

/// A value with the span it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spanned<T> {
    pub value: T,
    pub span: SourceSpan,
}

impl<T> Spanned<T> {
    pub fn new(value: T, span: SourceSpan) -> Self {
        Spanned { value, span }
    }
}

/// Typed access to one node, reporting problems against its source.
pub struct NodeReader<'a> {
    pub source: &'a SourceFile,
    pub node: &'a KdlNode,
}

impl<'a> NodeReader<'a> {
    pub fn new(source: &'a SourceFile, node: &'a KdlNode) -> Self {
        NodeReader { source, node }
    }

    pub fn name(&self) -> &'a str {
        self.node.name().value()
    }

    pub fn problem(&self, code: &'static str, message: impl Into<String>) -> Problem {
        Problem::new(code, message).at(self.source, self.node.span())
    }

    fn entry_problem(&self, entry: &KdlEntry, message: impl Into<String>) -> Problem {
        Problem::new("vmc::kdl::value", message).at(self.source, entry.span())
    }

    /// The node's positional arguments; properties (`key=value`) are refused.
    pub fn arguments(&self) -> Result<Vec<&'a KdlEntry>, Problem> {
        if let Some(prop) = self.node.entries().iter().find(|e| e.name().is_some()) {
            return Err(self
                .entry_problem(prop, format!("`{}` takes no `key=value` properties", self.name()))
                .label("unexpected property")
                .help(format!("write the value as an argument: `{} <value>`", self.name())));
        }
        Ok(self.node.entries().iter().collect())
    }

    /// The one positional argument of a `name value` node.
    pub fn single(&self) -> Result<&'a KdlEntry, Problem> {
        let args = self.arguments()?;
        match args.as_slice() {
            [one] => Ok(one),
            [] => Err(self
                .problem("vmc::kdl::arity", format!("`{}` needs a value", self.name()))
                .label("no value")
                .help(format!("write `{} <value>`", self.name()))),
            [_, extra, ..] => Err(self
                .entry_problem(extra, format!("`{}` takes exactly one value", self.name()))
                .label("extra value")),
        }
    }

    pub fn string_of(&self, entry: &'a KdlEntry) -> Result<Spanned<String>, Problem> {
        match entry.value() {
            KdlValue::String(s) => Ok(Spanned::new(s.clone(), entry.span())),
            other => Err(self
                .entry_problem(
                    entry,
                    format!("`{}` expects a string, found {}", self.name(), kind_of(other)),
                )
                .label("not a string")),
        }
    }

    pub fn string(&self) -> Result<Spanned<String>, Problem> {
        self.string_of(self.single()?)
    }

    /// Every argument as a string (for lists such as `features "a" "b"`).
    pub fn strings(&self) -> Result<Vec<Spanned<String>>, Problem> {
        self.arguments()?.into_iter().map(|e| self.string_of(e)).collect()
    }

    pub fn unsigned_of(&self, entry: &'a KdlEntry) -> Result<Spanned<u64>, Problem> {
        match entry.value() {
            KdlValue::Integer(n) => u64::try_from(*n).map(|v| Spanned::new(v, entry.span())).map_err(|_| {
                self.entry_problem(
                    entry,
                    if *n < 0 {
                        format!("`{}` must not be negative", self.name())
                    } else {
                        format!("`{}` is too large (at most {})", self.name(), u64::MAX)
                    },
                )
                .label("out of range")
            }),
            other => Err(self
                .entry_problem(
                    entry,
                    format!("`{}` expects an integer, found {}", self.name(), kind_of(other)),
                )
                .label("not an integer")),
        }
    }

    pub fn unsigned(&self) -> Result<Spanned<u64>, Problem> {
        self.unsigned_of(self.single()?)
    }

    /// Every argument as an unsigned integer.
    pub fn unsigneds(&self) -> Result<Vec<Spanned<u64>>, Problem> {
        self.arguments()?.into_iter().map(|e| self.unsigned_of(e)).collect()
    }

    pub fn boolean(&self) -> Result<Spanned<bool>, Problem> {
        let entry = self.single()?;
        match entry.value() {
            KdlValue::Bool(b) => Ok(Spanned::new(*b, entry.span())),
            other => Err(self
                .entry_problem(
                    entry,
                    format!("`{}` expects #true or #false, found {}", self.name(), kind_of(other)),
                )
                .label("not a boolean")),
        }
    }

    /// A `key=value` property of the node, if present.
    pub fn property(&self, key: &str) -> Option<&'a KdlEntry> {
        self.node
            .entries()
            .iter()
            .find(|e| e.name().map(|n| n.value()) == Some(key))
    }

    /// Refuses a `{ ... }` block on a node that takes none.
    pub fn no_children(&self) -> Result<(), Problem> {
        match self.node.children() {
            Some(_) => Err(self
                .problem(
                    "vmc::kdl::children",
                    format!("`{}` takes no `{{ ... }}` block", self.name()),
                )
                .label("unexpected block")),
            None => Ok(()),
        }
    }

    /// The node's children (an empty list without a block).
    pub fn children(&self) -> &'a [KdlNode] {
        self.node.children().map_or(&[], |d| d.nodes())
    }
}

pub fn kind_of(value: &KdlValue) -> &'static str {
    match value {
        KdlValue::String(_) => "a string",
        KdlValue::Integer(_) => "an integer",
        KdlValue::Float(_) => "a floating-point number",
        KdlValue::Bool(_) => "a boolean",
        KdlValue::Null => "#null",
    }
}

/// A KDL 2.0 quoted string literal. Always quoted (never a bare identifier), so that
/// documents read the same to people whatever the value looks like.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control()
                || matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}') =>
            {
                out.push_str(&format!("\\u{{{:x}}}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_limit_looks_past_strings_and_comments() {
        let deep = "a {".repeat(MAX_NESTING + 1) + &"}".repeat(MAX_NESTING + 1);
        assert!(too_deep(&deep).is_some());
        let shallow_with_braces = r##"a "{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{" /* {{{{{{{{{{{{{{{{{{{{{{{{{{{{{ */ // {{{{{{{{{{{{{{{{{{{{{{{{{{
b #"{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{"#"##;
        assert_eq!(too_deep(shallow_with_braces), None);
    }

    #[test]
    fn quoted_strings_read_back_exactly() {
        for text in [
            "plain",
            "with \"quotes\" and \\",
            "line\nbreak\ttab",
            "bell\u{7}",
            "é ü 中",
            "",
            "#true",
            "123",
        ] {
            let doc = kdl::KdlDocument::parse_v2(&format!("n {}", quote(text))).unwrap();
            assert_eq!(doc.nodes()[0].entries()[0].value().as_string(), Some(text), "{text:?}");
        }
    }

    #[test]
    fn bad_bytes_are_refused_with_a_reason() {
        assert_eq!(
            source_from_bytes("x", b"vm \"a\"\0").unwrap_err().code,
            "vmc::input::binary"
        );
        assert_eq!(
            source_from_bytes("x", b"vm \xff").unwrap_err().code,
            "vmc::input::not-utf8"
        );
        assert!(source_from_bytes("x", b"vm \"a\"").is_ok());
    }

    #[test]
    fn empty_and_malformed_documents_are_problems() {
        let empty = SourceFile::new("e.kdl", "  \n\t\n");
        assert!(parse(&empty, "a spec").unwrap_err().has("vmc::input::empty"));
        let bad = SourceFile::new("b.kdl", "vm \"x\" {\n  cpus 2\n");
        assert!(parse(&bad, "a spec").unwrap_err().has("vmc::kdl::syntax"));
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        let text = "a {".repeat(100_000) + &"}".repeat(100_000);
        let src = SourceFile::new("d.kdl", text);
        assert!(parse(&src, "a spec").unwrap_err().has("vmc::input::too-deep"));
    }
}
