//! `vmc lower FILE --to qemu [--json]`: the QEMU command line equivalent to a document.

// A Problem carries its source and span; it is built once per error, on the cold path.
#![allow(clippy::result_large_err)]

use std::path::Path;

use vmc_compiler::diagnostic::Problem;
use vmc_compiler::{lower, AbiDocument};

/// The targets `--to` accepts.
pub const TARGETS: &[&str] = &["qemu"];

/// The lowered command for `doc` (read from `file`, hash already checked): one
/// shell-quoted line starting with `qemu-system-x86_64`, or with `json` the arguments
/// after the binary name as a JSON array of strings. The text ends with a newline.
pub fn run(file: &Path, to: &str, json: bool, doc: &AbiDocument) -> Result<String, Problem> {
    if !TARGETS.contains(&to) {
        return Err(
            Problem::new("vmc::lower::target", format!("unknown lowering target `{to}`"))
                .help(format!("`--to` takes one of: {}", TARGETS.join(", "))),
        );
    }
    let args = lower::qemu(doc).map_err(|mut p| {
        p.message = format!("{}: {}", file.display(), p.message);
        p
    })?;
    if json {
        let mut text = serde_json::to_string_pretty(&args).expect("a list of strings serializes");
        text.push('\n');
        Ok(text)
    } else {
        Ok(lower::shell_line(&args) + "\n")
    }
}
