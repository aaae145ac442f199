//! Reading KDL 2.0 input safely: size and nesting limits, syntax errors as problems,
//! and small typed accessors that keep spans, shared by specs, platform files and ABI
//! documents.

use std::collections::HashMap;

use kdl::{KdlDocument, KdlEntry, KdlNode, KdlValue};
use miette::SourceSpan;

use crate::diagnostic::{Problem, Problems, SourceFile};

mod scan;

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
///
/// The `kdl` crate's parser recurses and backtracks, so it only ever sees a text that
/// [`scan`] has checked (every syntax error is reported from there, with a sentence
/// saying what to write instead) and stripped of comments and `/-` comments (spaces in
/// their place, so spans are unchanged): whatever a text of at most
/// [`MAX_INPUT_BYTES`] holds, parsing it takes linear time and bounded stack.
pub fn parse(source: &SourceFile, what: &str) -> Result<KdlDocument, Problems> {
    let text = source.text();
    if text.trim().is_empty() {
        return Err(Problem::new(
            "vmc::input::empty",
            format!("{} is empty; expected {what}", source.name()),
        )
        .into());
    }
    if let Some(problem) = json_instead(source, what) {
        return Err(problem.into());
    }
    let stripped = scan::scan(text, MAX_NESTING).map_err(|e| {
        let mut p = Problem::new(e.code, e.message)
            .at(source, SourceSpan::from((e.offset, e.len)))
            .label(e.label);
        if e.code == scan::TOO_DEEP {
            p = p.help(format!("{what} never nests this deeply"));
        } else if let Some(help) = e.help {
            p = p.help(help);
        }
        Problems::from(renderable(p))
    })?;
    KdlDocument::parse_v2(stripped.as_deref().unwrap_or(text)).map_err(|err| {
        // Not reached for a text the scan accepts; kept so that a disagreement between
        // the two is still an error with a place, never a panic.
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
            at_most(Problems(problems))
        }
    })
}

/// How far into its line a problem's place may be and still be shown under the line:
/// the terminal renderer cannot indent a label by more than 65,535 columns, and a
/// character may take two.
const MAX_SHOWN_COLUMN: usize = 30_000;

/// `problem`, shown without its source snippet when a place in it is too far along a
/// very long line to be drawn; the message then says where, in words.
pub fn renderable(mut problem: Problem) -> Problem {
    let Some(source) = problem.source.clone() else {
        return problem;
    };
    let text = source.text();
    let too_far = |span: &SourceSpan| {
        let end = (span.offset() + span.len()).min(text.len());
        let line_start = text[..floor_boundary(text, end)].rfind('\n').map_or(0, |i| i + 1);
        text[line_start..floor_boundary(text, end)].chars().count() > MAX_SHOWN_COLUMN
    };
    let primary = problem.span.as_ref().is_some_and(too_far);
    if primary || problem.related.iter().any(|(span, _)| too_far(span)) {
        if let Some(span) = problem.span {
            let (line, column) = source.line_column(span.offset());
            problem.message = format!("{} (line {line}, column {column})", problem.message);
        }
        problem.span = None;
        problem.label = None;
        problem.related.clear();
    }
    problem
}

fn floor_boundary(text: &str, mut i: usize) -> usize {
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The problem code of a JSON text where KDL was expected.
pub const JSON_INSTEAD: &str = "vmc::input::json";

/// A JSON text given where vmc reads KDL: which JSON it looks like, and what reads it.
/// (A KDL document never starts with `{` or `[`.)
fn json_instead(source: &SourceFile, what: &str) -> Option<Problem> {
    let start = source
        .text()
        .char_indices()
        .find(|(_, c)| !c.is_whitespace() && *c != '\u{FEFF}')?
        .0;
    if !source.text()[start..].starts_with(['{', '[']) {
        return None;
    }
    // serde_json stops at 128 levels of nesting, so this is bounded too.
    let value: Option<serde_json::Value> = serde_json::from_str(source.text()).ok();
    let object = value.as_ref().and_then(|v| v.as_object());
    let has = |key: &str| object.is_some_and(|o| o.contains_key(key));
    let help = if has("abi") && has("hash") {
        "this is `vmc show --json` output, the machine interface; vmc reads the ABI document \
         it was printed from (the .abi file `vmc compile` wrote)"
    } else if has("kernel") || has("tap-offloads") || has("cpu-features") {
        "this looks like a probe file (`vmc probe --json`): `vmc place DOC PROBE.json...` and \
         `vmc compile SPEC --pool PROBE.json...` read it, as JSON when its name ends in .json; \
         for --platform-path, write the platform as KDL with `vmc probe`"
    } else {
        "vmc reads JSON only in probe files (from `vmc probe --json`, named *.json), for `vmc place` and \
         `vmc compile --pool`; specs, ABI documents and platform files are KDL 2.0"
    };
    let kind = if value.is_some() {
        "JSON"
    } else {
        "JSON (or meant to be)"
    };
    Some(
        Problem::new(
            JSON_INSTEAD,
            format!("{} is {kind}, not KDL: expected {what}", source.name()),
        )
        .at(source, SourceSpan::from((start, 1)))
        .label("JSON starts here")
        .help(help),
    )
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
            other => {
                let written = self.written(entry);
                let p = self
                    .entry_problem(
                        entry,
                        format!(
                            "`{}` expects a string, found {} `{written}`",
                            self.name(),
                            kind_of(other)
                        ),
                    )
                    .label("not a string");
                Err(match other {
                    KdlValue::Integer(_) | KdlValue::Float(_) => p.help(format!(
                        "quote it: `{} \"{written}\"` (unquoted, it is read as a number)",
                        self.name()
                    )),
                    _ => p,
                })
            }
        }
    }

    /// An entry's value as written in the source (`6.10`, not the number 6.1).
    pub fn written(&self, entry: &KdlEntry) -> String {
        let span = entry.span();
        let text = self
            .source
            .text()
            .get(span.offset()..span.offset() + span.len())
            .unwrap_or_default();
        // A property's span covers its key too.
        let value = match entry.name() {
            Some(_) => text.split_once('=').map_or(text, |(_, v)| v),
            None => text,
        };
        let value = value.trim();
        if value.chars().count() > 40 {
            format!("{}…", value.chars().take(37).collect::<String>())
        } else {
            value.to_string()
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
        let name = self.name();
        let written = self.written(entry);
        match entry.value() {
            KdlValue::Integer(n) => u64::try_from(*n).map(|v| Spanned::new(v, entry.span())).map_err(|_| {
                if *n < 0 {
                    self.entry_problem(entry, format!("`{name}` must not be negative, and is `{written}`"))
                        .label("negative")
                        .help(format!(
                            "write a whole number from 0 up, such as `{name} {}`",
                            n.unsigned_abs()
                        ))
                } else {
                    self.entry_problem(entry, format!("`{name}` is too large (at most {})", u64::MAX))
                        .label("out of range")
                }
            }),
            KdlValue::Float(f) => {
                let p = self
                    .entry_problem(entry, format!("`{name}` takes a whole number, not `{written}`"))
                    .label("not a whole number");
                Err(if f.fract() == 0.0 && *f >= 0.0 && *f < 1e15 {
                    p.help(format!(
                        "write it without a decimal point or exponent: `{name} {}`",
                        *f as u64
                    ))
                } else {
                    p.help("write a whole number, without a decimal point")
                })
            }
            KdlValue::String(s) => {
                let p = self
                    .entry_problem(
                        entry,
                        format!("`{name}` expects a number, found the string `{written}`"),
                    )
                    .label("not a number");
                Err(match s.trim().parse::<u64>() {
                    Ok(n) => p.help(format!("write it without quotes: `{name} {n}`")),
                    Err(_) => p,
                })
            }
            other => Err(self
                .entry_problem(
                    entry,
                    format!("`{name}` expects a whole number, found {} `{written}`", kind_of(other)),
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
            other => Err(boolean_problem(
                self.source,
                self.name(),
                entry,
                other,
                &self.written(entry),
            )),
        }
    }

    /// Refuses `key=value` properties on a node whose settings are child nodes in its
    /// block, saying where the setting goes; `head` is the node as written in the
    /// example (`net "net0"`).
    pub fn settings_in_block(&self, head: &str) -> Result<(), Problem> {
        let Some(prop) = self.node.entries().iter().find(|e| e.name().is_some()) else {
            return Ok(());
        };
        let key = prop.name().map_or("", |k| k.value());
        let value = self.written(prop);
        Err(self
            .entry_problem(
                prop,
                format!(
                    "`{key}={value}` is a property, but the settings of `{}` are nodes in its `{{ ... }}` block",
                    self.name()
                ),
            )
            .label("property")
            .help(format!("write `{head} {{ {key} {value} }}`")))
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

    /// [`refuse_duplicates`] over this node's children, naming the block after the node
    /// (`platform "acme"`, `device "net0"`, `abi`).
    pub fn refuse_duplicate_children(&self, repeatable: &[&str]) -> Vec<Problem> {
        refuse_duplicates(
            self.source,
            self.children(),
            repeatable,
            &format!("`{}`", head_text(self.node)),
        )
    }
}

/// The problem code of a repeated node, key or property, in any input vmc reads.
pub const DUPLICATE: &str = "vmc::input::duplicate";

/// A repeated `what` (such as "`kernel`" or "key `format`") in `within` (such as
/// "`platform \"acme\"`" or "the top-level object"): both places are labelled, and both
/// positions are in the message, so that it reads alone.
pub fn duplicate_problem(
    source: &SourceFile,
    what: &str,
    within: &str,
    first: SourceSpan,
    again: SourceSpan,
) -> Problem {
    let (l1, c1) = source.line_column(first.offset());
    let (l2, c2) = source.line_column(again.offset());
    Problem::new(
        DUPLICATE,
        format!("duplicate {what} in {within}: first at line {l1}, column {c1}, again at line {l2}, column {c2}"),
    )
    .at(source, again)
    .label("again")
    .also(first, "first")
    .help("keep only one: vmc refuses rather than guess which was meant")
}

/// Every repetition among sibling nodes (one block's children, or a document's top
/// level), as problems naming both places:
///
/// * a node name written twice, unless it is `repeatable` (such as `device`, `origin`,
///   `tap`, `platform`);
/// * a repeatable node whose key, its first argument, is written twice (two
///   `device "net0"`, two `origin "cpu.count"`);
/// * a property written twice on one node (`line=1 line=2`).
///
/// `block` names the siblings' parent in messages ("`abi`", "the document"). The check
/// covers one level: call it for each block read, children are not visited.
pub fn refuse_duplicates(source: &SourceFile, nodes: &[KdlNode], repeatable: &[&str], block: &str) -> Vec<Problem> {
    let mut problems = Capped::default();
    let mut names: HashMap<&str, SourceSpan> = HashMap::new();
    let mut keys: HashMap<(&str, &KdlValue), SourceSpan> = HashMap::new();
    for node in nodes {
        let name = node.name().value();
        if repeatable.contains(&name) {
            if let Some(key) = node.entries().iter().find(|e| e.name().is_none()) {
                let span = head_span(node);
                match keys.get(&(name, key.value())) {
                    Some(first) => problems.push(|| {
                        duplicate_problem(
                            source,
                            &format!("`{name} {}`", value_text(key.value())),
                            block,
                            *first,
                            span,
                        )
                    }),
                    None => {
                        keys.insert((name, key.value()), span);
                    }
                }
            }
        } else {
            let span = head_span(node);
            match names.get(name) {
                Some(first) => problems.push(|| duplicate_problem(source, &format!("`{name}`"), block, *first, span)),
                None => {
                    names.insert(name, span);
                }
            }
        }
        let mut properties: HashMap<&str, SourceSpan> = HashMap::new();
        for entry in node.entries() {
            let Some(key) = entry.name() else { continue };
            match properties.get(key.value()) {
                Some(first) => problems.push(|| {
                    duplicate_problem(
                        source,
                        &format!("property `{}`", key.value()),
                        &format!("`{}`", head_text(node)),
                        *first,
                        entry.span(),
                    )
                }),
                None => {
                    properties.insert(key.value(), entry.span());
                }
            }
        }
    }
    problems.finish()
}

/// At most this many problems are reported from one pass over an input: each names a
/// place in a text of up to [`MAX_INPUT_BYTES`], which costs time to find and to show,
/// and a user fixes the first ones first anyway.
pub const MAX_PROBLEMS: usize = 50;

/// The problem code of the note that more problems were found than are shown.
pub const MORE_PROBLEMS: &str = "vmc::input::more-problems";

fn more_problems(more: usize) -> Problem {
    Problem::new(
        MORE_PROBLEMS,
        format!("... and {more} more problems like these, not shown (vmc shows the first {MAX_PROBLEMS})"),
    )
    .help("fix the ones shown, and run again")
}

/// Problems kept up to [`MAX_PROBLEMS`], the rest counted, never built.
#[derive(Default)]
pub struct Capped {
    problems: Vec<Problem>,
    more: usize,
}

impl Capped {
    pub fn push(&mut self, make: impl FnOnce() -> Problem) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(make());
        } else {
            self.more += 1;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.problems.is_empty()
    }

    pub fn finish(mut self) -> Vec<Problem> {
        if self.more > 0 {
            self.problems.push(more_problems(self.more));
        }
        self.problems
    }
}

/// `problems`, with any beyond [`MAX_PROBLEMS`] replaced by a count of them, each
/// [`renderable`].
pub fn at_most(problems: Problems) -> Problems {
    let mut all = problems.0;
    if all.len() <= MAX_PROBLEMS {
        return Problems(all.into_iter().map(renderable).collect());
    }
    // A count already made is added to.
    let counted: usize = all
        .iter()
        .filter(|p| p.code == MORE_PROBLEMS)
        .filter_map(|p| p.message.split_whitespace().nth(2)?.parse::<usize>().ok())
        .sum();
    all.retain(|p| p.code != MORE_PROBLEMS);
    let more = all.len().saturating_sub(MAX_PROBLEMS) + counted;
    all.truncate(MAX_PROBLEMS);
    if more > 0 {
        all.push(more_problems(more));
    }
    Problems(all.into_iter().map(renderable).collect())
}

/// A node's name and entries, without its block: where a duplicate is pointed at.
fn head_span(node: &KdlNode) -> SourceSpan {
    let start = node.name().span().offset();
    let end = node
        .entries()
        .iter()
        .map(|e| e.span().offset() + e.span().len())
        .chain(std::iter::once(start + node.name().span().len()))
        .max()
        .unwrap_or(start);
    SourceSpan::from((start, end - start))
}

/// A node as messages name it: its name, and its key when the first argument is one.
fn head_text(node: &KdlNode) -> String {
    match node.entries().first().filter(|e| e.name().is_none()) {
        Some(key) => format!("{} {}", node.name().value(), value_text(key.value())),
        None => node.name().value().to_string(),
    }
}

fn value_text(value: &KdlValue) -> String {
    match value {
        KdlValue::String(s) if s.chars().count() > 64 => {
            format!(
                "{}…",
                quote(&s.chars().take(60).collect::<String>()).trim_end_matches('"')
            )
        }
        KdlValue::String(s) => quote(s),
        other => other.to_string(),
    }
}

/// A value where `#true` or `#false` belongs: what was written, and how to write it.
pub fn boolean_problem(source: &SourceFile, name: &str, entry: &KdlEntry, value: &KdlValue, written: &str) -> Problem {
    Problem::new(
        "vmc::kdl::value",
        format!("`{name}` expects #true or #false, found {} `{written}`", kind_of(value)),
    )
    .at(source, entry.span())
    .label("not a boolean")
    .help(boolean_help(name, value))
}

/// How to write the boolean that `value` was probably meant to be.
pub fn boolean_help(name: &str, value: &KdlValue) -> String {
    let truthy = match value {
        KdlValue::String(s) if ["true", "yes", "on"].iter().any(|t| s.eq_ignore_ascii_case(t)) => Some(true),
        KdlValue::String(s) if ["false", "no", "off"].iter().any(|t| s.eq_ignore_ascii_case(t)) => Some(false),
        KdlValue::Integer(1) => Some(true),
        KdlValue::Integer(0) => Some(false),
        _ => None,
    };
    match truthy {
        Some(b) => format!("write `{name} #{b}` (KDL 2.0 booleans are #true and #false)"),
        None => format!("write `{name} #true` or `{name} #false`"),
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
        let too_deep =
            |text: &str| parse(&SourceFile::new("d.kdl", text), "a test").is_err_and(|p| p.has("vmc::input::too-deep"));
        let deep = "a {".repeat(MAX_NESTING + 1) + &"}".repeat(MAX_NESTING + 1);
        assert!(too_deep(&deep));
        let shallow_with_braces = r##"a "{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{" /* {{{{{{{{{{{{{{{{{{{{{{{{{{{{{ */ // {{{{{{{{{{{{{{{{{{{{{{{{{{
b #"{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{"#"##;
        assert!(parse(&SourceFile::new("d.kdl", shallow_with_braces), "a test").is_ok());
    }

    #[test]
    fn json_where_kdl_belongs_is_named_with_what_reads_it() {
        let json = |text: &str| {
            let p = parse(&SourceFile::new("x.abi", text), "an ABI document")
                .unwrap_err()
                .0
                .remove(0);
            assert_eq!(p.code, JSON_INSTEAD);
            assert!(p.message.starts_with("x.abi is JSON"), "{}", p.message);
            p.help.unwrap()
        };
        assert!(json("{\"format\": 1, \"hash\": \"blake3:0\", \"abi\": {}}")
            .starts_with("this is `vmc show --json` output"));
        assert!(json("\n  {\"format\": 1, \"kernel\": \"6.9\"}").starts_with("this looks like a probe file"));
        assert!(json("[1, 2]").starts_with("vmc reads JSON only in probe files"));
        let deep = "[".repeat(1 << 20);
        assert!(json(&deep).starts_with("vmc reads JSON only"));
    }

    #[test]
    fn problems_beyond_the_first_fifty_are_counted() {
        let text = "n 1\n".repeat(300);
        let p = duplicates(&text, &[]);
        assert_eq!(p.len(), MAX_PROBLEMS + 1);
        assert_eq!(p[MAX_PROBLEMS].code, MORE_PROBLEMS);
        let mut all = p;
        all.extend((0..10).map(|i| Problem::new("x", format!("{i}"))));
        let kept = at_most(Problems(all));
        assert_eq!(kept.0.len(), MAX_PROBLEMS + 1);
        assert_eq!(
            kept.0[MAX_PROBLEMS].message,
            "... and 259 more problems like these, not shown (vmc shows the first 50)"
        );
    }

    #[test]
    fn a_place_far_along_a_long_line_is_given_in_words() {
        let text = format!("vm \"a\" {{{} cpuz 1 }}", " ".repeat(70_000));
        let p =
            renderable(Problem::new("x", "unknown").at(&SourceFile::new("l.kdl", text), SourceSpan::from((70_010, 4))));
        assert_eq!(p.message, "unknown (line 1, column 70011)");
        assert_eq!(p.span, None);
        let near =
            renderable(Problem::new("x", "near").at(&SourceFile::new("l.kdl", "a\nb"), SourceSpan::from((2, 1))));
        assert_eq!(
            (near.message.as_str(), near.span),
            ("near", Some(SourceSpan::from((2, 1))))
        );
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

    fn duplicates(text: &str, repeatable: &[&str]) -> Vec<Problem> {
        let source = SourceFile::new("d.kdl", text);
        let doc = parse(&source, "a test").unwrap();
        let mut all = refuse_duplicates(&source, doc.nodes(), repeatable, "the document");
        for node in doc.nodes() {
            all.extend(NodeReader::new(&source, node).refuse_duplicate_children(repeatable));
        }
        all
    }

    #[test]
    fn a_repeated_node_names_itself_the_block_and_both_places() {
        let p = duplicates(
            "platform \"acme\" {\n    kernel \"6.1\"\n    kernel \"6.2\"\n}\n",
            &["platform"],
        );
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].code, DUPLICATE);
        assert_eq!(
            p[0].message,
            "duplicate `kernel` in `platform \"acme\"`: first at line 2, column 5, again at line 3, column 5"
        );
        // The label covers the node's name and values, not the lines around it.
        assert_eq!(p[0].span, Some(SourceSpan::from((39, 12))));
        assert_eq!(p[0].related, vec![(SourceSpan::from((22, 12)), "first".to_string())]);
        let rendered = format!("{:?}", miette::Report::new(p[0].clone()));
        assert!(rendered.contains("duplicate `kernel`"), "{rendered}");
    }

    #[test]
    fn every_kind_of_repeat_is_found() {
        let cases: &[(&str, &[&str], &str)] = &[
            ("format 1\nformat 1", &[], "duplicate `format` in the document"),
            ("abi { memory 1; memory 2 }", &[], "duplicate `memory` in `abi`"),
            (
                "abi { cpu { count 1 }; cpu { count 1 } }",
                &[],
                "duplicate `cpu` in `abi`",
            ),
            ("a { b { c 1; c 2 } }", &[], ""),
            (
                "abi { device \"net0\"; device \"net1\"; device \"net0\" }",
                &["device"],
                "duplicate `device \"net0\"` in `abi`",
            ),
            (
                "origins { origin \"cpu.count\" derived=\"x\"; origin \"cpu.count\" derived=\"y\" }",
                &["origin"],
                "duplicate `origin \"cpu.count\"` in `origins`",
            ),
            (
                "host { tap \"net0\" \"a\"; tap \"net0\" \"b\" }",
                &["tap"],
                "duplicate `tap \"net0\"` in `host`",
            ),
            (
                "platform \"x\"\nplatform \"x\"",
                &["platform"],
                "duplicate `platform \"x\"` in the document",
            ),
            (
                "origins { origin \"p\" line=1 line=2 }",
                &["origin"],
                "duplicate property `line` in `origin \"p\"`",
            ),
            ("n 1 k=1 k=#true", &[], "duplicate property `k` in `n 1`"),
            ("n 1; n 2; n 3", &[], "duplicate `n` in the document"),
            ("\"n\" 1; n 2", &[], "duplicate `n` in the document"),
        ];
        for (text, repeatable, message) in cases {
            let p = duplicates(text, repeatable);
            if message.is_empty() {
                // Only one level is checked per call: `c` is two levels down.
                assert!(p.is_empty(), "{text}: {p:?}");
                continue;
            }
            assert!(!p.is_empty(), "{text}: nothing found");
            assert!(
                p.iter().all(|p| p.message.starts_with(message) && p.code == DUPLICATE),
                "{text}: {p:?}"
            );
        }
        // Three copies: two problems, each naming the first.
        let p = duplicates("n 1; n 2; n 3", &[]);
        assert_eq!(p.len(), 2);
        assert!(p.iter().all(|p| p.related[0].0 == SourceSpan::from((0, 3))));
    }

    #[test]
    fn what_may_repeat_is_not_a_duplicate() {
        for (text, repeatable) in [
            ("abi { device \"net0\"; device \"net1\" }", &["device"][..]),
            ("a { x 1 }; b { x 1 }", &[]),
            ("host { tap \"net0\" \"t\"; tap \"net1\" \"t\" }", &["tap"]),
            ("n \"a\" k=1; n \"b\" k=1", &["n"]),
            ("n 1 a=1 b=1 c=1", &[]),
            // A repeatable node without a key is for its reader to refuse.
            ("abi { device; device }", &["device"]),
            // Keys differ by type: 1 is not "1".
            ("n 1; n \"1\"", &["n"]),
        ] {
            assert!(duplicates(text, repeatable).is_empty(), "{text}");
        }
    }

    #[test]
    fn long_keys_are_shortened_in_messages() {
        let long = "k".repeat(500);
        let p = duplicates(&format!("n \"{long}\"; n \"{long}\""), &["n"]);
        assert_eq!(p.len(), 1);
        assert!(p[0].message.len() < 200, "{}", p[0].message);
    }
}
