//! Reading and writing the files vmc works on: specs, documents, platform directories.

use std::path::{Path, PathBuf};

use vmc_compiler::{kdlread, AbiDocument, PlatformRegistry, SourceFile};

use crate::{Failure, PlatformPaths};

/// Writes through a temporary file and a rename, so a failure never leaves a partial document.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    let file_name = path
        .file_name()
        .ok_or_else(|| Failure::Message(format!("{} is not a file path", path.display())))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let result = std::fs::write(&tmp, bytes).and_then(|_| std::fs::rename(&tmp, path));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Failure::Message(format!("cannot write {}: {e}", path.display())));
    }
    Ok(())
}

pub(crate) fn read_source(path: &Path) -> Result<SourceFile, Failure> {
    let bytes = std::fs::read(path).map_err(|e| Failure::Message(format!("cannot read {}: {e}", path.display())))?;
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
            files.push(read_source(&path)?);
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
