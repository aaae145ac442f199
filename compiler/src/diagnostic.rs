//! Problems with user input, as values: a sentence, a span in a named source, a fix.
//!
//! Every error the compiler reports about a spec, a platform file or an ABI document is
//! a [`Problem`]; a pass collects as many as it can ([`Problems`]) so a user fixes them
//! in one round rather than one per run.

use std::borrow::Cow;
use std::fmt;
use std::fmt::Write as _;
use std::sync::Arc;

use miette::{Diagnostic, LabeledSpan, NamedSource, SourceCode, SourceSpan};

/// A named text the compiler read: a spec, a platform file, an ABI document.
#[derive(Debug, Clone)]
pub struct SourceFile {
    named: Arc<NamedSource<String>>,
    text: Arc<str>,
}

impl SourceFile {
    pub fn new(name: impl AsRef<str>, text: impl Into<String>) -> Self {
        let text: String = text.into();
        SourceFile {
            text: Arc::from(text.as_str()),
            named: Arc::new(NamedSource::new(name, text)),
        }
    }

    pub fn name(&self) -> &str {
        self.named.name()
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_column(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..floor_char_boundary(&self.text, offset)];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, column)
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// One thing wrong with the input.
#[derive(Debug, Clone)]
pub struct Problem {
    /// A stable identifier of the class of problem, such as `vmc::spec::unknown-node`.
    pub code: &'static str,
    /// One sentence: what is wrong.
    pub message: String,
    pub source: Option<SourceFile>,
    pub span: Option<SourceSpan>,
    /// A few words under the span.
    pub label: Option<String>,
    /// The fix.
    pub help: Option<String>,
    /// More places in the same source, each with a few words (such as where a
    /// duplicate was first written).
    pub related: Vec<(SourceSpan, String)>,
}

impl Problem {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Problem {
            code,
            message: message.into(),
            source: None,
            span: None,
            label: None,
            help: None,
            related: Vec::new(),
        }
    }

    pub fn at(mut self, source: &SourceFile, span: SourceSpan) -> Self {
        self.source = Some(source.clone());
        self.span = Some(span);
        self
    }

    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// Labels another place in the problem's source (call after [`Problem::at`]).
    pub fn also(mut self, span: SourceSpan, label: impl Into<String>) -> Self {
        self.related.push((span, label.into()));
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Adds "did you mean" to the help when a known name is close to `wrong`.
    pub fn suggest<'a>(self, wrong: &str, known: impl IntoIterator<Item = &'a str>) -> Self {
        match did_you_mean(wrong, known) {
            Some(close) => self.help(format!("did you mean `{close}`?")),
            None => self,
        }
    }
}

/// The closest known name, if any is close enough to be a likely typo.
pub fn did_you_mean<'a>(wrong: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    known
        .into_iter()
        .map(|k| (strsim::jaro_winkler(wrong, k), k))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

/// Help for an unknown name: "did you mean `x`?" when a known one is close, then the
/// list of what is known.
pub fn choices_help(wrong: &str, known: &[&str], what: &str) -> String {
    match did_you_mean(wrong, known.iter().copied()) {
        Some(close) => format!("did you mean `{close}`? {what}: {}", known.join(", ")),
        None => format!("{what}: {}", known.join(", ")),
    }
}

/// Help for an unknown name among many: "did you mean `x`?", or else `otherwise`.
pub fn suggestion_or<'a>(wrong: &str, known: impl IntoIterator<Item = &'a str>, otherwise: &str) -> String {
    match did_you_mean(wrong, known) {
        Some(close) => format!("did you mean `{close}`?"),
        None => otherwise.to_string(),
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Problem {}

impl Diagnostic for Problem {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.code))
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help.as_ref().map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.source.as_ref().map(|s| &*s.named as &dyn SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let span = self.span?;
        let primary = if self.related.is_empty() {
            LabeledSpan::new_with_span(self.label.clone(), span)
        } else {
            LabeledSpan::new_primary_with_span(self.label.clone(), span)
        };
        let related = self
            .related
            .iter()
            .map(|(span, label)| LabeledSpan::new_with_span(Some(label.clone()), *span));
        Some(Box::new(std::iter::once(primary).chain(related)))
    }
}

/// Every problem found in one input; never empty.
#[derive(Debug, Clone)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    pub fn one(problem: Problem) -> Self {
        Problems(vec![problem])
    }

    pub fn iter(&self) -> impl Iterator<Item = &Problem> {
        self.0.iter()
    }

    /// Whether any problem is of this class.
    pub fn has(&self, code: &str) -> bool {
        self.0.iter().any(|p| p.code == code)
    }
}

impl From<Problem> for Problems {
    fn from(p: Problem) -> Self {
        Problems::one(p)
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// Collects problems while a pass goes on, so one run reports all of them.
#[derive(Debug, Default)]
pub struct Collector(Vec<Problem>);

impl Collector {
    pub fn push(&mut self, p: Problem) {
        self.0.push(p);
    }

    /// Keeps the value, or records the problem and returns `None`.
    pub fn ok<T>(&mut self, r: Result<T, Problem>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(p) => {
                self.push(p);
                None
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn extend(&mut self, problems: Problems) {
        self.0.extend(problems.0);
    }

    pub fn finish<T>(self, value: T) -> Result<T, Problems> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(Problems(self.0))
        }
    }

    pub fn into_problems(self) -> Problems {
        Problems(self.0)
    }
}

/// Whether a character must not reach a terminal as it is: a control character (C0 but
/// the newline, DEL, C1), which can move the cursor, clear the screen or retitle the
/// window, or a bidirectional formatting character (the marks, embeddings, overrides
/// and isolates, and the BOM), which can make a line read other than it is. The set
/// [`crate::kdlread::quote`] escapes in the documents vmc writes.
pub fn unsafe_on_terminal(c: char) -> bool {
    (c.is_control() && c != '\n')
        || matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

/// `text` with every character [`unsafe_on_terminal`] written as `\u{…}` (lowercase hex,
/// as in Rust and KDL), so that text from an input shows what it holds and does nothing
/// to the terminal. Newlines stay: they are the structure of a message.
pub fn escape_for_terminal(text: &str) -> Cow<'_, str> {
    if !text.chars().any(unsafe_on_terminal) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if unsafe_on_terminal(c) {
            push_escape(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

fn push_escape(out: &mut String, c: char) {
    let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
}

/// JSON text with every character [`unsafe_on_terminal`] written as a JSON escape
/// (`\u001b`): the same JSON value, spelled so that it is safe to print. Outside strings
/// JSON has only space, tab, CR and LF, which are left as they are.
pub fn escape_json_for_terminal(json: &str) -> Cow<'_, str> {
    if !json.chars().any(|c| unsafe_on_terminal(c) && !matches!(c, '\t' | '\r')) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if unsafe_on_terminal(c) && !matches!(c, '\t' | '\r') {
            // Every such character is in the Basic Multilingual Plane: one UTF-16 unit.
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Copies of `problems` that are safe to print on a terminal (see
/// [`escape_for_terminal`]): message, labels and help escaped, and each source too, its
/// name and text, with the spans moved to the same text in the escaped copy. A renderer
/// such as miette prints source lines as they are; these have nothing left to escape,
/// so its own colours stay. Each source is escaped once, however many problems point
/// into it.
pub fn for_terminal(problems: &[Problem]) -> Vec<Problem> {
    let mut sources: Vec<(*const u8, EscapedSource)> = Vec::new();
    problems
        .iter()
        .map(|p| {
            let source = p.source.as_ref().map(|s| {
                let key = s.text.as_ptr();
                match sources.iter().position(|(k, _)| *k == key) {
                    Some(i) => i,
                    None => {
                        sources.push((key, EscapedSource::new(s)));
                        sources.len() - 1
                    }
                }
            });
            let escaped = source.map(|i| &sources[i].1);
            let span = |span: SourceSpan| escaped.map_or(span, |e| e.span(span));
            let shown = Problem {
                code: p.code,
                message: escape_for_terminal(&p.message).into_owned(),
                source: escaped.map(|e| e.file.clone()),
                span: p.span.map(span),
                label: p.label.as_deref().map(|l| escape_for_terminal(l).into_owned()),
                help: p.help.as_deref().map(|h| escape_for_terminal(h).into_owned()),
                related: p
                    .related
                    .iter()
                    .map(|(s, l)| (span(*s), escape_for_terminal(l).into_owned()))
                    .collect(),
            };
            without_long_lines(shown)
        })
        .collect()
}

/// Longest source line shown as a snippet. A renderer prints a problem's whole line (a
/// one-line 4 MiB input would fill the terminal) and miette panics on a label past column
/// 65,535; past this the place is given in words instead.
const MAX_SNIPPET_LINE: usize = 4096;

/// `p` with its snippet replaced by "at line L, column C" when a place it labels is on a
/// line longer than [`MAX_SNIPPET_LINE`].
fn without_long_lines(mut p: Problem) -> Problem {
    let (Some(file), Some(span)) = (&p.source, p.span) else {
        return p;
    };
    let text = file.text();
    let long = |s: &SourceSpan| {
        let at = floor_char_boundary(text, s.offset().min(text.len()));
        let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
        let end = text[at..].find('\n').map_or(text.len(), |i| at + i);
        end - start > MAX_SNIPPET_LINE || s.len() > MAX_SNIPPET_LINE
    };
    if long(&span) || p.related.iter().any(|(s, _)| long(s)) {
        let (line, column) = file.line_column(span.offset());
        p.message = format!("{} (at line {line}, column {column} of {})", p.message, file.name());
        p.source = None;
        p.span = None;
        p.related.clear();
    }
    p
}

/// A source with its name and text escaped for a terminal, and where its text moved.
struct EscapedSource {
    file: SourceFile,
    /// For each escaped character: the offset just past it in the original text, and
    /// how many bytes longer the copy is up to there.
    growth: Vec<(usize, usize)>,
}

impl EscapedSource {
    fn new(source: &SourceFile) -> EscapedSource {
        let text = source.text();
        let name = escape_for_terminal(source.name());
        // Tabs stay (a renderer expands them), and so do CRLF line ends (it splits lines
        // at them); a lone CR would return the cursor, so it is escaped.
        let bytes = text.as_bytes();
        let escape =
            |i: usize, c: char| unsafe_on_terminal(c) && c != '\t' && !(c == '\r' && bytes.get(i + 1) == Some(&b'\n'));
        if !text.char_indices().any(|(i, c)| escape(i, c)) {
            let file = match name {
                Cow::Borrowed(_) => source.clone(),
                Cow::Owned(name) => SourceFile::new(name, text),
            };
            return EscapedSource {
                file,
                growth: Vec::new(),
            };
        }
        let mut out = String::with_capacity(text.len() + 64);
        let mut growth = Vec::new();
        for (i, c) in text.char_indices() {
            if escape(i, c) {
                let before = out.len();
                push_escape(&mut out, c);
                let total = growth.last().map_or(0, |&(_, g)| g) + (out.len() - before) - c.len_utf8();
                growth.push((i + c.len_utf8(), total));
            } else {
                out.push(c);
            }
        }
        EscapedSource {
            file: SourceFile::new(name, out),
            growth,
        }
    }

    /// Where an offset of the original text is in the copy.
    fn offset(&self, offset: usize) -> usize {
        let before = self.growth.partition_point(|&(end, _)| end <= offset);
        offset + before.checked_sub(1).map_or(0, |i| self.growth[i].1)
    }

    fn span(&self, span: SourceSpan) -> SourceSpan {
        let start = self.offset(span.offset());
        let end = self.offset(span.offset() + span.len());
        SourceSpan::from((start, end - start))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_count_characters() {
        let f = SourceFile::new("x.kdl", "ab\ncé d\n");
        assert_eq!(f.line_column(0), (1, 1));
        assert_eq!(f.line_column(3), (2, 1));
        // "é" is two bytes: byte 6 is the space after it, the third character.
        assert_eq!(f.line_column(6), (2, 3));
        assert_eq!(f.line_column(1000), (3, 1));
    }

    #[test]
    fn did_you_mean_finds_typos_only() {
        let known = ["host-uso", "guest-uso4", "csum"];
        assert_eq!(did_you_mean("host-usoo", known), Some("host-uso"));
        assert_eq!(did_you_mean("completely-different", known), None);
    }

    const HOSTILE: &str = "\u{1b}]0;PWNED\u{7}\u{1b}[2J";

    #[test]
    fn terminal_escapes_cover_controls_and_bidi_but_keep_newlines() {
        assert_eq!(escape_for_terminal(HOSTILE), r"\u{1b}]0;PWNED\u{7}\u{1b}[2J");
        assert_eq!(
            escape_for_terminal("a\tb\rc\u{7f}d\u{85}e\u{9b}f\u{202e}g\u{2066}h\u{feff}i"),
            r"a\u{9}b\u{d}c\u{7f}d\u{85}e\u{9b}f\u{202e}g\u{2066}h\u{feff}i"
        );
        assert_eq!(escape_for_terminal("two\nlines é ✓"), "two\nlines é ✓");
        assert!(matches!(escape_for_terminal("plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn json_escapes_keep_the_value() {
        let value = serde_json::json!({ "name": format!("{HOSTILE}\u{85}\u{202e}\u{7f}") });
        let text = serde_json::to_string_pretty(&value).unwrap();
        let safe = escape_json_for_terminal(&text);
        assert!(!safe.chars().any(|c| unsafe_on_terminal(c) && c != '\t'), "{safe}");
        assert_eq!(serde_json::from_str::<serde_json::Value>(&safe).unwrap(), value);
    }

    #[test]
    fn problems_for_terminal_escape_text_and_move_spans() {
        // A raw ESC and a right-to-left override before the span, a tab and CRLF kept.
        let text = "a \u{1b}[2J\u{202e} {\r\n\tbad \"\u{7}\"\r\n}\u{85}\n";
        let source = SourceFile::new("/tmp/\u{1b}]0;x\u{7}.kdl", text);
        let at = text.find("bad").unwrap();
        let p = Problem::new("vmc::test", format!("unknown node `{HOSTILE}`"))
            .at(&source, SourceSpan::from((at, "bad \"\u{7}\"".len())))
            .label(format!("here {HOSTILE}"))
            .also(SourceSpan::from((0, 1)), "\u{9b}first")
            .help("\u{202e}fix");
        let other = Problem::new("vmc::test", "second").at(&source, SourceSpan::from((text.len(), 0)));
        let safe = for_terminal(&[p, other]);
        let s = &safe[0];
        assert_eq!(s.message, r"unknown node `\u{1b}]0;PWNED\u{7}\u{1b}[2J`");
        assert_eq!(s.help.as_deref(), Some(r"\u{202e}fix"));
        assert_eq!(s.related[0].1, r"\u{9b}first");
        let copy = s.source.as_ref().unwrap();
        assert_eq!(copy.name(), r"/tmp/\u{1b}]0;x\u{7}.kdl");
        assert!(!copy
            .text()
            .chars()
            .any(|c| unsafe_on_terminal(c) && !matches!(c, '\t' | '\r')));
        assert!(copy.text().contains("\r\n\tbad"));
        let span = s.span.unwrap();
        assert_eq!(
            &copy.text()[span.offset()..span.offset() + span.len()],
            r#"bad "\u{7}""#
        );
        assert_eq!(&copy.text()[..1], "a");
        assert_eq!(s.related[0].0, SourceSpan::from((0, 1)));
        // Both problems share one escaped copy; an offset at the end stays at the end.
        let end = safe[1].span.unwrap();
        assert_eq!(end.offset(), safe[1].source.as_ref().unwrap().text().len());
    }
}
