//! Problems with user input, as values: a sentence, a span in a named source, a fix.
//!
//! Every error the compiler reports about a spec, a platform file or an ABI document is
//! a [`Problem`]; a pass collects as many as it can ([`Problems`]) so a user fixes them
//! in one round rather than one per run.

use std::fmt;
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
}
