//! A check of KDL 2.0 syntax that runs before the `kdl` crate's parser sees a text.
//!
//! The parser recurses: into each `{` block, into each nested `/* */` comment and into
//! each piece of one, into chains of `/-`, and once per error it recovers from. Its
//! backtracking around `/-` is also exponential in how deeply commented-out blocks nest.
//! So no text of a few megabytes can be handed to it as it is. This scanner reads the
//! whole grammar in one pass, without recursion, and:
//!
//! * refuses any syntax error itself, with a span and a sentence that says what to
//!   write instead, so the parser only ever sees valid text (and never recovers);
//! * refuses blocks nested deeper than a limit, counting commented-out ones too;
//! * returns the text with every `/* */` comment and every `/-` comment (the `/-` and
//!   what it comments out) overwritten, byte for byte, by one flat `/*   */` comment
//!   (or spaces, when shorter than 4 bytes), so offsets and spans are unchanged and the
//!   parser meets no nesting, and no slashdash (`//` comments stay: the parser reads
//!   them in a loop).
//!
//! It is at least as strict as the parser (where the KDL 2.0 specification and the
//! parser disagree, it follows the stricter), so a text it accepts parses cleanly.

/// A syntax error at a byte range of the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// `vmc::kdl::syntax`, or `vmc::input::too-deep` for nesting.
    pub code: &'static str,
    pub offset: usize,
    pub len: usize,
    pub message: String,
    pub label: String,
    pub help: Option<String>,
}

type Result<T> = std::result::Result<T, Box<SyntaxError>>;

const SYNTAX: &str = "vmc::kdl::syntax";
pub const TOO_DEEP: &str = "vmc::input::too-deep";

/// Checks `text`; on success returns it with comments and slashdashed parts blanked
/// (`None` when there was nothing to blank).
pub fn scan(text: &str, max_depth: usize) -> Result<Option<String>> {
    check_code_points(text)?;
    let mut s = Scanner {
        text,
        b: text.as_bytes(),
        pos: 0,
        blanks: Vec::new(),
    };
    s.document(max_depth)?;
    if s.blanks.is_empty() {
        return Ok(None);
    }
    // Nested and adjacent ranges become one: each maximal range is blanked once.
    let mut ranges = s.blanks;
    ranges.sort_unstable();
    let mut merged: Vec<(usize, usize)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    let mut out = text.as_bytes().to_vec();
    for (start, end) in merged {
        // As a `/* */` comment when there is room: the parser reads a comment's inside
        // in a tighter loop than spaces, and either is whitespace wherever the range was.
        out[start..end].fill(b' ');
        if end - start >= 4 {
            out[start..start + 2].copy_from_slice(b"/*");
            out[end - 2..end].copy_from_slice(b"*/");
        }
    }
    // Only whole characters were replaced, by ASCII.
    Ok(Some(String::from_utf8(out).expect("blanking keeps UTF-8 valid")))
}

fn is_space(c: char) -> bool {
    matches!(
        c,
        '\t' | ' ' | '\u{A0}' | '\u{1680}' | '\u{2000}'..='\u{200A}' | '\u{202F}' | '\u{205F}' | '\u{3000}'
    )
}

fn is_newline(c: char) -> bool {
    matches!(c, '\r' | '\n' | '\u{85}' | '\u{B}' | '\u{C}' | '\u{2028}' | '\u{2029}')
}

fn is_disallowed(c: char) -> bool {
    matches!(
        c,
        '\0'..='\u{8}'
            | '\u{E}'..='\u{1F}'
            | '\u{7F}'
            | '\u{200E}'
            | '\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2066}'..='\u{2069}'
            | '\u{FEFF}'
    )
}

fn is_ident_char(c: char) -> bool {
    !is_space(c)
        && !is_newline(c)
        && !is_disallowed(c)
        && !matches!(
            c,
            '\\' | '/' | '(' | ')' | '{' | '}' | '[' | ']' | ';' | '"' | '#' | '='
        )
}

/// KDL forbids some code points anywhere in a document, comments included.
fn check_code_points(text: &str) -> Result<()> {
    for (i, c) in text.char_indices() {
        if is_disallowed(c) && !(i == 0 && c == '\u{FEFF}') {
            let what = match c {
                '\u{FEFF}' => "a byte order mark, allowed only as the first character",
                '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' => {
                    "a bidirectional text control, which can make text read differently from what it is"
                }
                _ => "a control character",
            };
            return Err(Box::new(SyntaxError {
                code: SYNTAX,
                offset: i,
                len: c.len_utf8(),
                message: format!("U+{:04X} ({what}) may not appear in a KDL document", c as u32),
                label: "not allowed".into(),
                help: Some(format!(
                    "remove it; inside a quoted string it can be written as the escape \\u{{{:x}}}",
                    c as u32
                )),
            }));
        }
    }
    Ok(())
}

/// Where a node is in its grammar, after its name and entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Arguments and properties may still follow.
    Entries,
    /// After a commented-out `/-{ }` block: only blocks may follow.
    AfterSlashdashedBlock,
    /// After the block: only commented-out blocks may follow.
    AfterBlock,
}

#[derive(Debug, Clone, Copy)]
struct Node {
    /// Where the node's `/-` starts, when the whole node is commented out.
    slashdash: Option<usize>,
    phase: Phase,
}

/// An open `{` block and the node it belongs to.
struct Frame {
    open: usize,
    /// Where the block's own `/-` starts, when the block is commented out.
    slashdash: Option<usize>,
    node: Node,
}

/// What a node does next: open a block, or end.
enum Next {
    Block(Frame),
    End,
}

/// What a value turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    String,
    Number,
    Keyword,
}

struct Scanner<'a> {
    text: &'a str,
    b: &'a [u8],
    pos: usize,
    blanks: Vec<(usize, usize)>,
}

fn error(offset: usize, len: usize, message: impl Into<String>, label: impl Into<String>) -> Box<SyntaxError> {
    Box::new(SyntaxError {
        code: SYNTAX,
        offset,
        len,
        message: message.into(),
        label: label.into(),
        help: None,
    })
}

trait Help {
    fn help(self, help: impl Into<String>) -> Self;
}

impl Help for Box<SyntaxError> {
    fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

/// A character as messages show it.
fn shown(c: char) -> String {
    if c.is_control() || is_space(c) || is_newline(c) {
        format!("U+{:04X}", c as u32)
    } else {
        format!("`{c}`")
    }
}

/// Text as messages quote it: at most 40 characters.
fn excerpt(text: &str) -> String {
    if text.chars().count() > 40 {
        format!("{}…", text.chars().take(37).collect::<String>())
    } else {
        text.to_string()
    }
}

impl<'a> Scanner<'a> {
    fn at(&self, i: usize) -> Option<char> {
        self.text.get(i..).and_then(|t| t.chars().next())
    }

    fn starts(&self, i: usize, s: &str) -> bool {
        self.b.get(i..).is_some_and(|t| t.starts_with(s.as_bytes()))
    }

    fn eof(&self) -> bool {
        self.pos >= self.b.len()
    }

    /// The length of the newline at `i` (CRLF is one), or 0.
    fn newline_len(&self, i: usize) -> usize {
        match self.at(i) {
            Some('\r') if self.b.get(i + 1) == Some(&b'\n') => 2,
            Some(c) if is_newline(c) => c.len_utf8(),
            _ => 0,
        }
    }

    fn space_len(&self, i: usize) -> usize {
        match self.at(i) {
            Some(c) if is_space(c) => c.len_utf8(),
            _ => 0,
        }
    }

    fn blank(&mut self, start: usize, end: usize) {
        if end > start {
            self.blanks.push((start, end));
        }
    }

    // ---------------------------------------------------------------- documents

    fn document(&mut self, max_depth: usize) -> Result<()> {
        if self.text.starts_with('\u{FEFF}') {
            self.pos = 3;
        }
        let mut stack: Vec<Frame> = Vec::new();
        loop {
            self.line_space()?;
            if self.eof() {
                return match stack.last() {
                    Some(frame) => Err(error(frame.open, 1, "this `{` is never closed", "opened here")
                        .help("add the missing `}` (a block closes with `}` after its last node)")),
                    None => Ok(()),
                };
            }
            let next = if self.b[self.pos] == b'}' {
                let Some(frame) = stack.pop() else {
                    return Err(
                        error(self.pos, 1, "unexpected `}`: no block is open here", "nothing to close")
                            .help("remove it, or look for a `{` missing before it"),
                    );
                };
                self.pos += 1;
                let mut node = frame.node;
                match frame.slashdash {
                    Some(start) => {
                        self.blank(start, self.pos);
                        if node.phase == Phase::Entries {
                            node.phase = Phase::AfterSlashdashedBlock;
                        }
                    }
                    None => node.phase = Phase::AfterBlock,
                }
                self.node_rest(node)?
            } else {
                let slashdash = if self.starts(self.pos, "/-") {
                    let start = self.pos;
                    self.slashdash()?;
                    Some(start)
                } else {
                    None
                };
                self.node_head()?;
                self.node_rest(Node {
                    slashdash,
                    phase: Phase::Entries,
                })?
            };
            if let Next::Block(frame) = next {
                if stack.len() >= max_depth {
                    return Err(Box::new(SyntaxError {
                        code: TOO_DEEP,
                        offset: frame.open,
                        len: 1,
                        message: format!("nesting deeper than {max_depth} levels of blocks"),
                        label: "too deep".into(),
                        help: None,
                    }));
                }
                stack.push(frame);
            }
        }
    }

    /// A node's type annotation and name.
    fn node_head(&mut self) -> Result<()> {
        if self.at(self.pos) == Some('(') {
            self.type_annotation()?;
            self.node_space()?;
        }
        let start = self.pos;
        match self.at(start) {
            Some('{') => Err(error(
                start,
                1,
                "a `{ ... }` block needs a node name before it",
                "no node name",
            )
            .help("write the node's name before the `{`, on the same line")),
            Some(';') => Err(error(
                start,
                1,
                "`;` ends a node, but there is no node before it",
                "nothing to end",
            )
            .help("remove the extra `;`")),
            _ => match self.value("a node name")? {
                Kind::String => Ok(()),
                kind => Err(error(
                    start,
                    self.pos - start,
                    format!(
                        "a node name is a string, and `{}` is {}",
                        excerpt(&self.text[start..self.pos]),
                        if kind == Kind::Number { "a number" } else { "a keyword" }
                    ),
                    "not a name",
                )
                .help(format!(
                    "quote it to use it as a name: \"{}\"",
                    excerpt(&self.text[start..self.pos])
                ))),
            },
        }
    }

    /// Everything after a node's name (or after one of its blocks closes), up to its
    /// end or the next block it opens.
    fn node_rest(&mut self, node: Node) -> Result<Next> {
        loop {
            let spaced = self.node_space()?;
            let at = self.pos;
            let ends = match self.at(at) {
                None => true,
                Some(';' | '}') => true,
                Some(_) if self.newline_len(at) > 0 || self.starts(at, "//") => true,
                _ => false,
            };
            if ends {
                if let Some(start) = node.slashdash {
                    let end = if self.at(at) == Some(';') { at + 1 } else { at };
                    self.blank(start, end);
                }
                if self.at(at) == Some(';') {
                    self.pos += 1;
                }
                return Ok(Next::End);
            }
            if self.at(at) == Some('{') {
                if node.phase == Phase::AfterBlock {
                    return Err(error(at, 1, "a node has at most one `{ ... }` block", "second block")
                        .help("put all of the node's children in one block"));
                }
                self.pos += 1;
                return Ok(Next::Block(Frame {
                    open: at,
                    slashdash: None,
                    node,
                }));
            }
            if self.starts(at, "/-") {
                self.slashdash()?;
                if self.at(self.pos) == Some('{') {
                    let open = self.pos;
                    self.pos += 1;
                    return Ok(Next::Block(Frame {
                        open,
                        slashdash: Some(at),
                        node,
                    }));
                }
                self.entry_allowed(node, self.pos)?;
                self.entry()?;
                self.blank(at, self.pos);
                continue;
            }
            if !spaced {
                let c = self.at(at).unwrap_or(' ');
                return Err(match c {
                    '=' => error(
                        at,
                        1,
                        "`=` must follow a property name, as in `key=value`",
                        "no name before `=`",
                    )
                    .help("only a string can be a property name: write `\"key\"=value` or `key=value`"),
                    _ => error(
                        at,
                        c.len_utf8(),
                        format!("{} follows the value before it without a space", shown(c)),
                        "space needed before this",
                    )
                    .help("separate values with whitespace"),
                });
            }
            self.entry_allowed(node, at)?;
            self.entry()?;
        }
    }

    fn entry_allowed(&self, node: Node, at: usize) -> Result<()> {
        if node.phase == Phase::Entries {
            return Ok(());
        }
        let len = self.at(at).map_or(0, char::len_utf8);
        Err(error(
            at,
            len,
            "arguments and properties must come before the node's `{ ... }` block",
            "after a block",
        )
        .help("move it before the `{`; to start another node, end this one with a newline or `;`"))
    }

    /// A `/-` and the whitespace after it; the caller reads what it comments out.
    fn slashdash(&mut self) -> Result<()> {
        let start = self.pos;
        self.pos += 2;
        self.line_space()?;
        if self.starts(self.pos, "/-") {
            return Err(
                error(self.pos, 2, "a `/-` cannot comment out another `/-`", "second `/-`").help("remove one of them"),
            );
        }
        match self.at(self.pos) {
            None | Some('}' | ';' | ')') => Err(error(
                start,
                2,
                "`/-` must be followed by the node, value, property or block it comments out",
                "comments out nothing",
            )),
            _ => Ok(()),
        }
    }

    // ---------------------------------------------------------------- entries

    /// An argument or a property.
    fn entry(&mut self) -> Result<()> {
        let start = self.pos;
        if self.at(start) == Some('(') {
            self.type_annotation()?;
            self.node_space()?;
            self.value("a value")?;
            if self.at(self.pos) == Some('=') {
                return Err(error(
                    start,
                    self.pos - start,
                    "a property name cannot have a type annotation",
                    "typed name",
                )
                .help("put the type on the value instead: `key=(type)value`"));
            }
            return Ok(());
        }
        let kind = self.value("a value")?;
        let after = self.pos;
        self.node_space()?;
        if self.at(self.pos) != Some('=') {
            self.pos = after;
            return Ok(());
        }
        if kind != Kind::String {
            return Err(error(
                start,
                after - start,
                format!(
                    "`{}` cannot be a property name: a name is a string",
                    excerpt(&self.text[start..after])
                ),
                "not a string",
            )
            .help(format!("quote it: \"{}\"=...", excerpt(&self.text[start..after]))));
        }
        let eq = self.pos;
        self.pos += 1;
        self.node_space()?;
        let ends = match self.at(self.pos) {
            None | Some(';' | '}' | '{') => true,
            Some(_) => self.newline_len(self.pos) > 0 || self.starts(self.pos, "//"),
        };
        if ends {
            return Err(error(
                eq,
                1,
                format!(
                    "property `{}` has no value after `=`",
                    excerpt(&self.text[start..after])
                ),
                "no value",
            )
            .help("write the value right after the `=`, on the same line"));
        }
        if self.at(self.pos) == Some('(') {
            self.type_annotation()?;
            self.node_space()?;
        }
        self.value("a property value")?;
        Ok(())
    }

    /// `(type)`, and no second one after it.
    fn type_annotation(&mut self) -> Result<()> {
        self.one_type_annotation()?;
        let after = self.pos;
        self.node_space()?;
        if self.at(self.pos) == Some('(') {
            return Err(error(self.pos, 1, "a second type annotation", "second `(...)`")
                .help("a node name or a value has at most one type annotation, such as `(u8)1`"));
        }
        self.pos = after;
        Ok(())
    }

    fn one_type_annotation(&mut self) -> Result<()> {
        let open = self.pos;
        self.pos += 1;
        self.node_space()?;
        let start = self.pos;
        if self.at(start) == Some(')') {
            return Err(error(open, 2, "an empty type annotation `()`", "empty")
                .help("write a type name inside, such as `(u8)`, or remove the parentheses"));
        }
        if self.value("a type name")? != Kind::String {
            return Err(error(
                start,
                self.pos - start,
                "a type annotation holds a name (a string)",
                "not a name",
            ));
        }
        self.node_space()?;
        if self.at(self.pos) != Some(')') {
            return Err(
                error(open, 1, "this `(` type annotation is not closed by `)`", "unclosed")
                    .help("a type annotation is one name in parentheses, such as `(u8)`"),
            );
        }
        self.pos += 1;
        Ok(())
    }

    /// A string, number or keyword.
    fn value(&mut self, what: &str) -> Result<Kind> {
        let start = self.pos;
        let Some(c) = self.at(start) else {
            return Err(error(
                start,
                0,
                format!("the text ends where {what} was expected"),
                "ends here",
            ));
        };
        match c {
            '"' => {
                self.quoted()?;
                Ok(Kind::String)
            }
            '#' => {
                let hashes = self.b[start..].iter().take_while(|&&b| b == b'#').count();
                if self.at(start + hashes) == Some('"') {
                    self.raw(hashes)?;
                    Ok(Kind::String)
                } else if hashes == 1 {
                    self.keyword()?;
                    Ok(Kind::Keyword)
                } else {
                    Err(
                        error(start, hashes, "`#` starts a keyword or a raw string", "not a value")
                            .help("a raw string is written #\"text\"#, a keyword as #true, #false or #null"),
                    )
                }
            }
            c if is_ident_char(c) => self.word(),
            _ => Err(self.unexpected(start, c, what)),
        }
    }

    fn unexpected(&self, at: usize, c: char, what: &str) -> Box<SyntaxError> {
        let e = error(
            at,
            c.len_utf8(),
            format!("{} where {what} was expected", shown(c)),
            "unexpected",
        );
        match c {
            '[' | ']' => e.help("KDL has no `[ ]` lists: write the values one after another, separated by spaces"),
            '{' => e.help("a block belongs to a node: write the node's name before it"),
            ')' => e.help("remove it, or look for a missing `(`"),
            '\\' => {
                e.help("outside a string, `\\` only continues a node on the next line; inside a string, write `\\\\`")
            }
            _ => e,
        }
    }

    /// An identifier string or a number.
    fn word(&mut self) -> Result<Kind> {
        let start = self.pos;
        let mut end = start;
        while let Some(c) = self.at(end).filter(|&c| is_ident_char(c)) {
            end += c.len_utf8();
        }
        let word = &self.text[start..end];
        let bytes = word.as_bytes();
        let digit = |i: usize| bytes.get(i).is_some_and(u8::is_ascii_digit);
        let signed = matches!(bytes[0], b'+' | b'-');
        let numeric = digit(0)
            || (signed && digit(1))
            || (signed && bytes.get(1) == Some(&b'.') && digit(2))
            || (bytes[0] == b'.' && digit(1));
        if numeric {
            if let Err(why) = check_number(word) {
                return Err(error(start, end - start, why.message, "invalid number").help(why.help));
            }
            self.pos = end;
            return Ok(Kind::Number);
        }
        match word {
            "true" | "false" | "null" => {
                return Err(error(
                    start,
                    end - start,
                    format!("bare `{word}` is KDL 1; KDL 2.0 writes it `#{word}`"),
                    "KDL 1 keyword",
                )
                .help(format!(
                "write `#{word}` (KDL 2.0 keywords are #true, #false and #null); for the string, quote it: \"{word}\""
            )))
            }
            "inf" | "-inf" | "nan" => {
                return Err(error(
                    start,
                    end - start,
                    format!("bare `{word}` is not allowed; the number is written `#{word}`"),
                    "reserved word",
                )
                .help(format!("write `#{word}`, or quote it for the string: \"{word}\"")))
            }
            "r" if matches!(self.at(end), Some('"' | '#')) => {
                return Err(error(start, 1, "`r\"...\"` is a KDL 1 raw string", "KDL 1 syntax")
                    .help("KDL 2.0 writes raw strings as #\"text\"# (one or more `#` on each side)"))
            }
            _ => {}
        }
        self.pos = end;
        Ok(Kind::String)
    }

    /// `#true`, `#false`, `#null`, `#inf`, `#-inf`, `#nan`.
    fn keyword(&mut self) -> Result<()> {
        let start = self.pos;
        let mut end = start + 1;
        while let Some(c) = self.at(end).filter(|&c| is_ident_char(c)) {
            end += c.len_utf8();
        }
        match &self.text[start + 1..end] {
            "true" | "false" | "null" | "inf" | "-inf" | "nan" => {
                self.pos = end;
                Ok(())
            }
            other => Err(error(
                start,
                end - start,
                format!("`#{}` is not a KDL keyword", excerpt(other)),
                "unknown keyword",
            )
            .help("the keywords are #true, #false, #null, #inf, #-inf and #nan; for a string, quote it")),
        }
    }

    // ---------------------------------------------------------------- strings

    /// A quoted string, single- or multi-line; at `"`.
    fn quoted(&mut self) -> Result<()> {
        let open = self.pos;
        if self.starts(open, "\"\"\"") {
            let nl = self.newline_len(open + 3);
            if nl == 0 {
                return Err(error(open, 3, "`\"\"\"` starts a multi-line string, and must end its line", "multi-line string")
                    .help("put the text on the next lines and the closing `\"\"\"` on a line of its own; a one-line string is written \"text\""));
            }
            return self.multiline_quoted(open, open + 3 + nl);
        }
        let mut i = open + 1;
        loop {
            match self.at(i) {
                None => {
                    return Err(error(open, 1, "this string is never closed", "opened here")
                        .help("end it with `\"`"))
                }
                Some('"') => {
                    self.pos = i + 1;
                    return Ok(());
                }
                Some('\\') => i = self.escape(i)?,
                Some(c) if is_newline(c) => {
                    return Err(error(open, i - open, "this string is not closed on its line", "unclosed string")
                        .help("end it with `\"` on the same line; for a line break in the value write `\\n`, or use a multi-line string (`\"\"\"` on lines of their own)"))
                }
                Some(c) => i += c.len_utf8(),
            }
        }
    }

    /// The length of a whitespace escape (`\` and the spaces and newlines after it) at
    /// `i`, or 0.
    fn ws_escape_len(&self, i: usize) -> usize {
        if self.b.get(i) != Some(&b'\\') {
            return 0;
        }
        let mut j = i + 1;
        loop {
            let n = self.space_len(j).max(self.newline_len(j));
            if n == 0 {
                break;
            }
            j += n;
        }
        if j > i + 1 {
            j - i
        } else {
            0
        }
    }

    /// A `\` escape (or whitespace escape) at `i`; returns the offset after it.
    fn escape(&self, i: usize) -> Result<usize> {
        let ws = self.ws_escape_len(i);
        if ws > 0 {
            return Ok(i + ws);
        }
        match self.at(i + 1) {
            Some('"' | '\\' | 'b' | 'f' | 'n' | 'r' | 't' | 's') => Ok(i + 2),
            Some('u') => {
                let digits_at = i + 3;
                let digits = self.b[digits_at.min(self.b.len())..]
                    .iter()
                    .take(6)
                    .take_while(|b| b.is_ascii_hexdigit())
                    .count();
                let valid = self.b.get(i + 2) == Some(&b'{')
                    && digits > 0
                    && self.b.get(digits_at + digits) == Some(&b'}')
                    && u32::from_str_radix(&self.text[digits_at..digits_at + digits], 16)
                        .ok()
                        .and_then(char::from_u32)
                        .is_some();
                if valid {
                    Ok(digits_at + digits + 1)
                } else {
                    Err(error(i, 2, "invalid `\\u` escape", "bad escape")
                        .help("write a Unicode scalar value as 1 to 6 hex digits in braces, such as \\u{e9}"))
                }
            }
            None => Err(error(i, 1, "the text ends inside a string", "unclosed")),
            Some(c) => Err(error(
                i,
                1 + c.len_utf8(),
                format!("`\\{c}` is not an escape in KDL 2.0"),
                "unknown escape",
            )
            .help("the escapes are \\n \\r \\t \\\\ \\\" \\b \\f \\s and \\u{...}: write `\\\\` for a backslash, or use a raw string #\"...\"# in which `\\` is plain text")),
        }
    }

    /// After `"""` and its newline. Follows the `kdl` crate's reading exactly: first the
    /// closing line and its indentation, then every line against that indentation.
    fn multiline_quoted(&mut self, open: usize, body: usize) -> Result<()> {
        let mut p = body;
        let prefix = loop {
            if let Some(prefix) = self.quoted_closing(p) {
                break prefix;
            }
            p = self.quoted_line(p, open)?;
        };
        let mut p = body;
        loop {
            if self.starts(p, &prefix) {
                let mut q = p + prefix.len();
                loop {
                    let n = self.ws_escape_len(q);
                    if n == 0 {
                        break;
                    }
                    q += n;
                }
                if self.starts(q, "\"\"\"") {
                    self.pos = q + 3;
                    return Ok(());
                }
                p += prefix.len();
            } else if self.empty_line(p).is_none() {
                return Err(self.indentation_error(p, "\"\"\""));
            }
            p = match self.empty_line(p) {
                Some(end) => end,
                None => self.quoted_line(p, open)?,
            };
        }
    }

    /// At a line start: the indentation before a closing `"""`, if the line closes.
    fn quoted_closing(&self, p: usize) -> Option<String> {
        let mut q = p;
        let mut prefix = String::new();
        loop {
            if let Some(c) = self.at(q).filter(|&c| is_space(c)) {
                prefix.push(c);
                q += c.len_utf8();
            } else {
                let n = self.ws_escape_len(q);
                if n == 0 {
                    break;
                }
                q += n;
            }
        }
        self.starts(q, "\"\"\"").then_some(prefix)
    }

    /// One line of a multi-line string; returns the offset after its newline.
    fn quoted_line(&self, mut p: usize, open: usize) -> Result<usize> {
        loop {
            let nl = self.newline_len(p);
            if nl > 0 {
                return Ok(p + nl);
            }
            match self.at(p) {
                None => return Err(self.unclosed_multiline(open, "\"\"\"")),
                Some('\\') => p = self.escape(p)?,
                Some('"') if self.starts(p, "\"\"\"") => {
                    return Err(error(p, 3, "`\"\"\"` inside a multi-line string", "closes nothing")
                        .help("the closing `\"\"\"` goes on a line of its own, after only whitespace; in the text, escape a quote as `\\\"`"))
                }
                Some(c) => p += c.len_utf8(),
            }
        }
    }

    /// A line of only whitespace (and whitespace escapes): the offset after it.
    fn empty_line(&self, p: usize) -> Option<usize> {
        let mut q = p;
        loop {
            let n = self.space_len(q).max(self.ws_escape_len(q));
            if n == 0 {
                break;
            }
            q += n;
        }
        let nl = self.newline_len(q);
        (nl > 0).then_some(q + nl)
    }

    fn indentation_error(&self, p: usize, close: &str) -> Box<SyntaxError> {
        let line_end = (p..self.b.len())
            .find(|&i| self.newline_len(i) > 0)
            .unwrap_or(self.b.len());
        error(
            p,
            line_end - p,
            "this line of a multi-line string is not indented like its closing line",
            "indentation differs",
        )
        .help(format!(
            "every line of the string must start with exactly the whitespace before its closing `{close}`: the same characters, tabs and spaces alike"
        ))
    }

    fn unclosed_multiline(&self, open: usize, close: &str) -> Box<SyntaxError> {
        error(open, 3, "this multi-line string is never closed", "opened here").help(format!(
            "close it with `{close}` on a line of its own, after only whitespace"
        ))
    }

    /// A raw string, single- or multi-line; at its first `#`.
    fn raw(&mut self, hashes: usize) -> Result<()> {
        let open = self.pos;
        let quote = open + hashes;
        let tail = &self.text[open..quote];
        if self.starts(quote, "\"\"\"") {
            let nl = self.newline_len(quote + 3);
            if nl == 0 {
                return Err(error(open, hashes + 3, "`#\"\"\"` starts a multi-line raw string, and must end its line", "multi-line string")
                    .help("put the text on the next lines and the closing `\"\"\"#` on a line of its own; a one-line raw string is written #\"text\"#"));
            }
            return self.multiline_raw(open, quote + 3 + nl, &format!("\"\"\"{tail}"));
        }
        let close = format!("\"{tail}");
        let mut i = quote + 1;
        loop {
            if self.starts(i, &close) {
                self.pos = i + close.len();
                return Ok(());
            }
            match self.at(i) {
                None => {
                    return Err(
                        error(open, hashes + 1, "this raw string is never closed", "opened here")
                            .help(format!("end it with `{close}`")),
                    )
                }
                Some(c) if is_newline(c) => {
                    return Err(error(
                        open,
                        i - open,
                        "this raw string is not closed on its line",
                        "unclosed string",
                    )
                    .help(format!(
                        "end it with `{close}` on the same line, or use a multi-line raw string"
                    )))
                }
                Some(c) => i += c.len_utf8(),
            }
        }
    }

    fn multiline_raw(&mut self, open: usize, body: usize, close: &str) -> Result<()> {
        let spaces = |s: &Self, mut q: usize| {
            while s.space_len(q) > 0 {
                q += s.space_len(q);
            }
            q
        };
        let line = |s: &Self, mut p: usize| -> Result<(usize, usize)> {
            let start = p;
            loop {
                let nl = s.newline_len(p);
                if nl > 0 {
                    return Ok((p - start, p + nl));
                }
                match s.at(p) {
                    None => return Err(s.unclosed_multiline(open, close)),
                    Some(_) if s.starts(p, close) => {
                        return Err(error(
                            p,
                            close.len(),
                            format!("`{close}` inside a multi-line raw string"),
                            "closes nothing",
                        )
                        .help(format!(
                            "the closing `{close}` goes on a line of its own, after only whitespace"
                        )))
                    }
                    Some(c) => p += c.len_utf8(),
                }
            }
        };
        let mut p = body;
        let prefix = loop {
            let q = spaces(self, p);
            if self.starts(q, close) {
                break self.text[p..q].to_string();
            }
            p = line(self, p)?.1;
        };
        let mut p = body;
        // A raw string's text may not be a lone `"` (the `kdl` crate refuses it).
        let mut lines = 0;
        let mut lone_quote = false;
        loop {
            if self.starts(p, &prefix) {
                let q = spaces(self, p + prefix.len());
                if self.starts(q, close) {
                    if lines == 1 && lone_quote {
                        return Err(error(
                            open,
                            q + close.len() - open,
                            "a raw string cannot be just `\"`",
                            "lone quote",
                        )
                        .help("write it as a quoted string: \"\\\"\""));
                    }
                    self.pos = q + close.len();
                    return Ok(());
                }
                p += prefix.len();
            } else if self.empty_line(p).is_none() {
                return Err(self.indentation_error(p, close));
            }
            lines += 1;
            p = match self.empty_line(p) {
                Some(end) => {
                    lone_quote = false;
                    end
                }
                None => {
                    let (len, end) = line(self, p)?;
                    lone_quote = len == 1 && self.b[p] == b'"';
                    end
                }
            };
        }
    }

    // ---------------------------------------------------------------- whitespace

    /// `/* ... */`, nested; at `/*`.
    fn block_comment(&mut self) -> Result<()> {
        let start = self.pos;
        let mut depth = 0usize;
        let mut i = start;
        loop {
            if self.starts(i, "/*") {
                depth += 1;
                i += 2;
            } else if self.starts(i, "*/") {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    break;
                }
            } else if i >= self.b.len() {
                return Err(error(start, 2, "this `/*` comment is never closed", "opened here")
                    .help("close it with `*/`; comments nest, so each `/*` inside it needs its own `*/`"));
            } else {
                i += 1;
            }
        }
        self.blank(start, i);
        self.pos = i;
        Ok(())
    }

    /// `// ...` up to (not including) the newline; at `//`. Kept as it is: the parser
    /// reads one in a loop, and a node's span ends before it.
    fn line_comment(&mut self) {
        let mut i = self.pos + 2;
        while let Some(c) = self.at(i) {
            if is_newline(c) {
                break;
            }
            i += c.len_utf8();
        }
        self.pos = i;
    }

    /// Spaces and block comments; whether any were read.
    fn ws(&mut self) -> Result<bool> {
        let start = self.pos;
        loop {
            let n = self.space_len(self.pos);
            if n > 0 {
                self.pos += n;
            } else if self.starts(self.pos, "/*") {
                self.block_comment()?;
            } else {
                return Ok(self.pos > start);
            }
        }
    }

    /// Whitespace inside a node: spaces, block comments and line continuations.
    fn node_space(&mut self) -> Result<bool> {
        let start = self.pos;
        loop {
            self.ws()?;
            if self.at(self.pos) != Some('\\') {
                return Ok(self.pos > start);
            }
            let backslash = self.pos;
            self.pos += 1;
            self.ws()?;
            if self.starts(self.pos, "//") {
                self.line_comment();
            }
            let nl = self.newline_len(self.pos);
            if nl > 0 {
                self.pos += nl;
            } else if !self.eof() {
                return Err(error(
                    backslash,
                    1,
                    "a `\\` outside a string continues the node on the next line, so only whitespace or a comment may follow it",
                    "line continuation",
                )
                .help("remove the `\\`, or move what follows it to the next line; inside a string, write `\\\\`"));
            }
        }
    }

    /// Whitespace between nodes: node whitespace, newlines and line comments.
    fn line_space(&mut self) -> Result<()> {
        loop {
            self.node_space()?;
            let nl = self.newline_len(self.pos);
            if nl > 0 {
                self.pos += nl;
            } else if self.starts(self.pos, "//") {
                self.line_comment();
            } else {
                return Ok(());
            }
        }
    }
}

struct NumberError {
    message: String,
    help: String,
}

/// Checks a word that starts like a number, as KDL 2.0 and the `kdl` crate read it
/// (which keeps integers and the parts of decimals in an `i128`).
fn check_number(word: &str) -> std::result::Result<(), NumberError> {
    let shown = excerpt(word);
    let fail = |message: String, help: String| Err(NumberError { message, help });
    let unsigned = word.strip_prefix(['+', '-']).unwrap_or(word);
    if unsigned.starts_with('.') {
        return fail(
            format!("`{shown}` is not a number: a decimal needs a digit before its `.`"),
            format!("write `{}0{}`", &word[..word.len() - unsigned.len()], unsigned),
        );
    }
    let digits_of = |text: &str, radix: u32| -> Option<String> {
        let first = text.chars().next()?;
        if !first.is_digit(radix) || !text.chars().all(|c| c == '_' || c.is_digit(radix)) {
            return None;
        }
        Some(text.replace('_', ""))
    };
    let fits = |digits: &str, radix: u32| i128::from_str_radix(digits, radix).is_ok();
    let too_large = || {
        fail(
            format!("`{shown}` is too large for a KDL number here"),
            "vmc reads integers of at most 39 digits".to_string(),
        )
    };
    for (prefix, radix, name) in [("0x", 16, "hexadecimal"), ("0o", 8, "octal"), ("0b", 2, "binary")] {
        if let Some(rest) = unsigned.strip_prefix(prefix) {
            return match digits_of(rest, radix) {
                Some(d) if fits(&d, radix) => Ok(()),
                Some(_) => too_large(),
                None => fail(
                    format!("`{shown}` is not a valid {name} number"),
                    format!("after `{prefix}` come {name} digits, which `_` may separate (not lead)"),
                ),
            };
        }
    }
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(i) => (&unsigned[..i], Some(&unsigned[i + 1..])),
        None => (unsigned, None),
    };
    let (integer, fraction) = match mantissa.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (mantissa, None),
    };
    let exponent = exponent.map(|e| e.strip_prefix(['+', '-']).unwrap_or(e));
    let parts = [Some(integer), fraction, exponent];
    let mut valid = true;
    let mut large = false;
    for part in parts.into_iter().flatten() {
        match digits_of(part, 10) {
            Some(d) => large |= !fits(&d, 10),
            None => valid = false,
        }
    }
    if valid && !large {
        return Ok(());
    }
    if valid {
        return too_large();
    }
    // What it was probably meant to be.
    let unit_at = unsigned
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(unsigned.len());
    let (number, unit) = unsigned.split_at(unit_at);
    let help = if word.ends_with(',') {
        "KDL separates values with spaces, not commas".to_string()
    } else if !number.is_empty() && !unit.is_empty() && unit.chars().all(|c| c.is_ascii_alphabetic()) {
        format!("a number with a unit is a string: write \"{shown}\"")
    } else {
        format!(
            "a value that starts with a digit is a number (such as 42, -7, 1.5, 0x2a); for a string, quote it: \"{shown}\""
        )
    };
    fail(format!("`{shown}` is not a number"), help)
}

#[cfg(test)]
mod agree;

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Option<String> {
        match scan(text, 16) {
            Ok(out) => out,
            Err(e) => panic!("{text:?}: {e:?}"),
        }
    }

    fn err(text: &str) -> SyntaxError {
        match scan(text, 16) {
            Ok(_) => panic!("{text:?} was accepted"),
            Err(e) => *e,
        }
    }

    #[test]
    fn comments_and_slashdashes_are_blanked_in_place() {
        assert_eq!(ok("a 1"), None);
        assert_eq!(ok("a /* x */ 1 // y\nb").as_deref(), Some("a /*   */ 1 // y\nb"));
        assert_eq!(ok("a /* /* x */ */ 1").as_deref(), Some("a /*         */ 1"));
        assert_eq!(ok("/-a 1; b").as_deref(), Some("/*  */ b"));
        assert_eq!(
            ok("a /-1 2 /-k=v /-{ c } { d /-{ } }").as_deref(),
            Some("a     2 /* */ /*   */ { d /* */ }")
        );
        assert_eq!(ok("a /-\n 1 2").as_deref(), Some("a /* */ 2"));
        assert_eq!(ok("a /* é */ 1").as_deref(), Some("a /*    */ 1"));
        assert_eq!(ok("a /**//-1 2").as_deref(), Some("a /*   */ 2"));
    }

    #[test]
    fn valid_kdl_2_is_accepted() {
        for text in [
            "",
            "\u{FEFF}a",
            "a;b;c",
            "a {\n}\n",
            "a{b{c}}",
            "a 1 {}",
            "\"quoted name\" \"value\" key=\"v\" k2 = 3",
            "a #true #false #null #inf #-inf #nan",
            "a 1 -1 +1 1_000 1.5 -0.5e10 1E+3 0x1f 0o17 0b1010 -0x1_f",
            "a #\"raw \\ \"# ##\"with \"# inside\"##",
            "a \"esc \\n \\t \\\" \\\\ \\u{1F600} \\s\"",
            "a \"ws \\\n   escape\"",
            "(t)a (u8)1 k=(t)\"v\"",
            "a \\\n  1 \\ // continued\n  2",
            "a \"\"\"\n  line one\n    two\n  \"\"\"",
            "a #\"\"\"\n  raw \\ line\n  \"\"\"#",
            "a \"\"\"\n\"\"\"",
            "a\rb\r\nc\u{85}d\u{2028}e\u{2029}f\u{b}g\u{c}h",
            "- -- .x -.y +z a.b 'q' a,b",
            "a /* /* nested */ */ 1",
            "a /-{ x } { y } /-{ z }",
            "a {\n b\n}",
            "/- kdl-version 2\na",
            "a 1 // comment at end",
            "a \\",
        ] {
            ok(text);
        }
    }

    #[test]
    fn errors_point_at_the_problem() {
        for (text, offset, message) in [
            ("a true", 2, "bare `true` is KDL 1"),
            ("a k=null", 4, "bare `null` is KDL 1"),
            ("a nan", 2, "bare `nan`"),
            ("a \"x", 2, "never closed"),
            ("a \"x\ny\"", 2, "not closed on its line"),
            ("a {", 2, "never closed"),
            ("a }", 2, "unexpected `}`"),
            ("a /* x", 2, "never closed"),
            ("a \"\\q\"", 3, "`\\q` is not an escape"),
            ("a 512MiB", 2, "not a number"),
            ("a 1.", 2, "not a number"),
            ("a .5", 2, "not a number"),
            ("a 0x", 2, "not a valid hexadecimal"),
            ("a 1 2=3", 4, "cannot be a property name"),
            ("a k=", 3, "no value"),
            ("a \"x\"y", 5, "without a space"),
            ("a {} 1", 5, "must come before"),
            ("a {} {}", 5, "at most one"),
            ("a /- /- 1", 5, "another `/-`"),
            ("a /-", 2, "must be followed by"),
            ("{ a }", 0, "needs a node name"),
            ("a;;", 2, "no node before"),
            ("1 a", 0, "a node name is a string"),
            ("a [1]", 2, "KDL has no"),
            ("a \\ x", 2, "continues the node"),
            ("a r\"x\"", 2, "KDL 1 raw string"),
            ("a #yes", 2, "not a KDL keyword"),
            ("a (t) (u)1", 6, "a second type annotation"),
            ("(t)(u)a", 3, "a second type annotation"),
            ("a \"\"\"x\"\"\"", 2, "must end its line"),
            ("a \"\"\"\n  x\n y\n  \"\"\"", 10, "not indented like"),
            ("a \"\"\"\n  x \"\"\" y\n  \"\"\"", 10, "inside a multi-line string"),
            ("a \u{7}", 2, "control character"),
            ("a \"\u{202e}\"", 3, "bidirectional"),
            ("a 1\u{feff}", 3, "byte order mark"),
            ("a 99999999999999999999999999999999999999999", 2, "too large"),
        ] {
            let e = err(text);
            assert_eq!(e.offset, offset, "{text:?}: {e:?}");
            let help = e.help.clone().unwrap_or_default();
            assert!(e.message.contains(message) || help.contains(message), "{text:?}: {e:?}");
        }
    }

    #[test]
    fn depth_counts_every_block_commented_out_or_not() {
        let nested = |n: usize, open: &str| format!("a {}{}", open.repeat(n), "}".repeat(n));
        ok(&nested(16, "b {"));
        assert_eq!(err(&nested(17, "b {")).code, TOO_DEEP);
        assert_eq!(err(&nested(17, "b /-{")).code, TOO_DEEP);
        assert_eq!(err(&nested(17, "/-b {")).code, TOO_DEEP);
        assert_eq!(err(&nested(17, "b {")).offset, 2 + 16 * 3 + 2);
    }
}
