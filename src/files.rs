//! Reading and writing the files vmc works on: specs, documents, platform directories,
//! probe files, outputs and standard output.
//!
//! Every file is read and written through [`vmc_runtime::host::files`]: inputs must be
//! regular files no larger than [`kdlread::MAX_INPUT_BYTES`], opened without blocking;
//! an output replaces a regular file atomically, or is written through to a device or
//! FIFO. Each input read is remembered, so that no output overwrites one of them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use vmc_compiler::{kdlread, AbiDocument, PlatformRegistry, SourceFile};
use vmc_runtime::host::files::{read_regular, FileId, OutputTarget};

use crate::{Failure, PlatformPaths};

/// The files this command has read, by identity, with the path they were read as.
static INPUTS: Mutex<Vec<(FileId, PathBuf)>> = Mutex::new(Vec::new());

/// Reads an input file (bounded, regular files only) and remembers it as an input.
fn read_input(path: &Path) -> Result<Vec<u8>, Failure> {
    let input = read_regular(path, kdlread::MAX_INPUT_BYTES as u64)
        .map_err(|e| Failure::Message(format!("cannot read {}: {e}", path.display())))?;
    INPUTS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((input.id, path.to_path_buf()));
    Ok(input.bytes)
}

/// Writes `bytes` to `path`: `-` is standard output; a symbolic link is followed; a
/// regular file is replaced atomically (a failure leaves it as it was); a character
/// device or FIFO is written through; anything else is refused. An output that is one
/// of the files this command read is refused before anything is written.
pub(crate) fn write_output(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    if path == Path::new("-") {
        return stdout_bytes(bytes);
    }
    let target = OutputTarget::resolve(path).map_err(|e| Failure::Message(e.to_string()))?;
    if let Some(id) = target.id() {
        let inputs = INPUTS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, input)) = inputs.iter().find(|(i, _)| *i == id) {
            let same = if input == path {
                String::new()
            } else {
                format!(" (the same file as {})", input.display())
            };
            return Err(Failure::Message(format!(
                "refusing to write {}: it is one of this command's inputs{same}; nothing written (give another -o)",
                path.display()
            )));
        }
    }
    target.write(bytes).map_err(|e| Failure::Message(e.to_string()))
}

pub(crate) fn read_source(path: &Path) -> Result<SourceFile, Failure> {
    let bytes = read_input(path)?;
    Ok(kdlread::source_from_bytes(&path.display().to_string(), &bytes)?)
}

pub(crate) fn read_document(path: &Path) -> Result<AbiDocument, Failure> {
    Ok(AbiDocument::from_kdl(&read_source(path)?)?)
}

pub(crate) fn registry(paths: &PlatformPaths) -> Result<PlatformRegistry, Failure> {
    let mut files = Vec::new();
    for dir in &paths.dirs {
        let entries = std::fs::read_dir(dir)
            .map_err(|e| Failure::Message(format!("cannot read platform directory {}: {e}", dir.display())))?;
        let mut found: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "kdl"))
            .collect();
        found.sort();
        for path in found {
            files.push(vmc_compiler::check::platform_file(&read_source(&path)?)?);
        }
    }
    Ok(PlatformRegistry::with_files(&files)?)
}

pub(crate) fn spec_dir(spec_path: &Path) -> Result<PathBuf, Failure> {
    let dir = spec_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::canonicalize(dir)
        .map_err(|e| Failure::Message(format!("cannot resolve the directory of {}: {e}", spec_path.display())))
}

/// Writes to standard output; the one way the CLI prints there (see the `out!` and
/// `outln!` macros). A failure is [`Failure::Stdout`].
pub(crate) fn stdout_fmt(args: std::fmt::Arguments) -> Result<(), Failure> {
    std::io::stdout().lock().write_fmt(args).map_err(Failure::Stdout)
}

/// Writes bytes to standard output, and flushes them.
pub(crate) fn stdout_bytes(bytes: &[u8]) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes).and_then(|_| out.flush()).map_err(Failure::Stdout)
}

/// Flushes standard output, so that a failure to write it is seen before exiting.
pub(crate) fn flush_stdout() -> Result<(), Failure> {
    std::io::stdout().lock().flush().map_err(Failure::Stdout)
}
