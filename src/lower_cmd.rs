//! `vmc lower FILE --to qemu [--json]`: the QEMU command line equivalent to a document.

// A Problem carries its source and span; it is built once per error, on the cold path.
#![allow(clippy::result_large_err)]

use std::path::Path;

use vmc_compiler::diagnostic::{unsafe_on_terminal, Problem};
use vmc_compiler::{lower, AbiDocument};

/// The targets `--to` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// QEMU 10, machine microvm: one `qemu-system-x86_64` command line.
    Qemu,
}

/// The lowered command for `doc` (read from `file`, hash already checked): one
/// shell-quoted line starting with `qemu-system-x86_64`, or with `json` the arguments
/// after the binary name as a JSON array of strings. The text ends with a newline.
pub fn run(file: &Path, to: Target, json: bool, doc: &AbiDocument) -> Result<String, Problem> {
    let Target::Qemu = to;
    let args = lower::qemu(doc).map_err(|mut p| {
        p.message = format!("{}: {}", file.display(), p.message);
        p
    })?;
    if json {
        Ok(crate::pretty(&serde_json::json!(args)) + "\n")
    } else {
        Ok(shell_line(&args) + "\n")
    }
}

/// The shell line for `args`, as [`lower::shell_line`] quotes it; an argument holding a
/// character unsafe on a terminal (a path with a bidirectional override) is written in
/// ANSI-C quoting instead (`$'\u202e'`, read back by bash, zsh and ksh as the same
/// argument), so that the line is safe to print and still means what it says.
fn shell_line(args: &[String]) -> String {
    let hostile = |a: &String| a.chars().any(unsafe_on_terminal);
    if !args.iter().any(hostile) {
        return lower::shell_line(args);
    }
    let mut line = lower::shell_line(&[]);
    for arg in args {
        line.push(' ');
        if hostile(arg) {
            line += &ansi_c_quote(arg);
        } else {
            let quoted = lower::shell_line(std::slice::from_ref(arg));
            line += quoted.split_once(' ').map_or(quoted.as_str(), |(_, word)| word);
        }
    }
    line
}

/// `$'...'` with every character unsafe on a terminal, the quote and the backslash
/// escaped (`\xHH` below U+0080, else `\uHHHH`; always all digits).
fn ansi_c_quote(word: &str) -> String {
    let mut out = String::from("$'");
    for c in word.chars() {
        match c {
            '\'' => out.push_str("\\'"),
            '\\' => out.push_str("\\\\"),
            c if unsafe_on_terminal(c) && u32::from(c) < 0x80 => out += &format!("\\x{:02x}", u32::from(c)),
            c if unsafe_on_terminal(c) => out += &format!("\\u{:04x}", u32::from(c)),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_arguments_are_ansi_c_quoted() {
        let args = [
            "-kernel".to_string(),
            "/k\u{202e}x y'\\\u{1b}".to_string(),
            "a b".to_string(),
        ];
        assert_eq!(
            shell_line(&args),
            "qemu-system-x86_64 -kernel $'/k\\u202ex y\\'\\\\\\x1b' 'a b'"
        );
        assert_eq!(shell_line(&args[2..]), lower::shell_line(&args[2..]));
    }
}
