//! Reading and writing the host's files that vmc is handed, safely: the one mechanism
//! every command (and `vmc run`'s kernel and initrd) goes through.
//!
//! Reading ([`read_regular`]): the path is opened once, non-blocking (a FIFO does not
//! block) and close-on-exec; the open descriptor is checked (`fstat`, so nothing can be
//! swapped in between) to be a regular file no larger than the limit, and read with a
//! bound, so a file growing underneath still cannot exhaust memory. A FIFO, device,
//! socket or directory is refused, naming its type.
//!
//! Writing ([`OutputTarget`]): a symbolic link is followed to the file it names; a
//! regular file (or a new one) is replaced atomically through a temporary file created
//! exclusively, under a random name, in the target's directory, keeping an existing
//! file's mode and owner (0644 for a new file); a character device (`/dev/null`) or a
//! FIFO is written through, never replaced; a directory, block device or socket is
//! refused. What the target is ([`OutputTarget::id`]) is known before anything is
//! written, so a caller can refuse to overwrite one of its inputs.

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The mode of a newly created output file.
pub const NEW_FILE_MODE: u32 = 0o644;

/// How many symbolic links an output path may go through (Linux's own limit).
const MAX_SYMLINKS: usize = 40;

/// A file's identity on this host: the same identity is the same file, whatever the
/// path (hard links, `./`, symbolic links).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
}

impl FileId {
    /// The identity of the file `meta` describes.
    pub fn of(meta: &Metadata) -> FileId {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// A regular file's contents and identity.
#[derive(Debug)]
pub struct InputFile {
    /// The bytes read (at most the limit).
    pub bytes: Vec<u8>,
    /// Which file they came from.
    pub id: FileId,
}

/// Why a file could not be read. The messages name no path: the caller says which file.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The path could not be opened.
    #[error("{0}")]
    Open(io::Error),
    /// Not a regular file; `kind` is "a FIFO", "a character device", ...
    #[error("it is {kind}, not a regular file; vmc reads only regular files")]
    NotRegular { kind: &'static str },
    /// Larger than the limit, by its size.
    #[error("it is {size} bytes; vmc reads at most {limit} bytes")]
    TooLarge { size: u64, limit: u64 },
    /// Grew past the limit while being read.
    #[error("it grew past {limit} bytes while being read; vmc reads at most {limit} bytes")]
    Grew { limit: u64 },
    /// Reading failed.
    #[error("{0}")]
    Read(io::Error),
}

/// What a file type is called in messages ("a FIFO").
pub fn kind_name(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_file() {
        "a regular file"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}

/// Reads the regular file at `path`, at most `limit` bytes, or says why not (see the
/// module documentation). Memory used is bounded by `limit`, whatever the file does.
pub fn read_regular(path: &Path, limit: u64) -> Result<InputFile, ReadError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY) // std adds O_CLOEXEC
        .open(path)
        .map_err(|e| match std::fs::metadata(path) {
            // A socket cannot be opened (ENXIO): name its type rather than the errno.
            Ok(meta) if !meta.is_file() && !meta.is_dir() => ReadError::NotRegular { kind: kind_name(&meta) },
            _ => ReadError::Open(e),
        })?;
    let meta = file.metadata().map_err(ReadError::Open)?;
    if !meta.is_file() {
        return Err(ReadError::NotRegular { kind: kind_name(&meta) });
    }
    if meta.len() > limit {
        return Err(ReadError::TooLarge {
            size: meta.len(),
            limit,
        });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    (&file)
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(ReadError::Read)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::Grew { limit });
    }
    Ok(InputFile {
        bytes,
        id: FileId::of(&meta),
    })
}

/// Why an output could not be written. The messages name the path.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The path names a directory.
    #[error("{0} is a directory; give a file name")]
    IsDirectory(PathBuf),
    /// The directory the file would go in does not exist.
    #[error("directory {0} does not exist")]
    NoDirectory(PathBuf),
    /// What should be the file's directory is something else.
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
    /// A type of file vmc does not write to.
    #[error("{path} is {kind}; vmc writes only to regular files, character devices (such as /dev/null) and FIFOs")]
    Refused { path: PathBuf, kind: &'static str },
    /// The path goes through too many symbolic links (or a loop).
    #[error("{0}: too many levels of symbolic links")]
    SymlinkLoop(PathBuf),
    /// A system call failed.
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> WriteError + '_ {
    move |source| WriteError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where an output goes, decided before anything is written.
#[derive(Debug)]
pub enum OutputTarget {
    /// A regular file, replaced atomically (`existing` is its metadata), or created.
    Replace { path: PathBuf, existing: Option<Metadata> },
    /// A character device or FIFO, written through.
    Through { path: PathBuf, meta: Metadata },
}

impl OutputTarget {
    /// Resolves `path` (following symbolic links) to what writing it would touch, or
    /// says why it cannot be written. Creates nothing.
    pub fn resolve(path: &Path) -> Result<OutputTarget, WriteError> {
        if path.as_os_str().is_empty() {
            return Err(WriteError::Io {
                path: path.to_path_buf(),
                source: io::Error::new(io::ErrorKind::InvalidInput, "empty path"),
            });
        }
        // "dir/" names a directory, never a file.
        if path.as_os_str().as_bytes().ends_with(b"/") {
            return Err(match std::fs::metadata(path) {
                Ok(m) if m.is_dir() => WriteError::IsDirectory(path.to_path_buf()),
                Ok(_) => WriteError::NotADirectory(path.to_path_buf()),
                Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => WriteError::NotADirectory(path.to_path_buf()),
                Err(_) => WriteError::NoDirectory(path.to_path_buf()),
            });
        }
        let mut current = path.to_path_buf();
        for _ in 0..=MAX_SYMLINKS {
            let meta = match std::fs::symlink_metadata(&current) {
                Ok(meta) => meta,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    check_directory(&current)?;
                    return Ok(OutputTarget::Replace {
                        path: current,
                        existing: None,
                    });
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
                    return Err(WriteError::NotADirectory(parent_of(&current).to_path_buf()))
                }
                Err(e) => return Err(io_error(&current)(e)),
            };
            let t = meta.file_type();
            if t.is_symlink() {
                let link = std::fs::read_link(&current).map_err(io_error(&current))?;
                current = parent_of(&current).join(link);
            } else if t.is_file() {
                return Ok(OutputTarget::Replace {
                    path: current,
                    existing: Some(meta),
                });
            } else if t.is_dir() {
                return Err(WriteError::IsDirectory(current));
            } else if t.is_char_device() || t.is_fifo() {
                return Ok(OutputTarget::Through { path: current, meta });
            } else {
                return Err(WriteError::Refused {
                    path: current,
                    kind: kind_name(&meta),
                });
            }
        }
        Err(WriteError::SymlinkLoop(path.to_path_buf()))
    }

    /// The file that would be written (after symbolic links).
    pub fn path(&self) -> &Path {
        match self {
            OutputTarget::Replace { path, .. } | OutputTarget::Through { path, .. } => path,
        }
    }

    /// The identity of the existing file that writing would replace or write to.
    pub fn id(&self) -> Option<FileId> {
        match self {
            OutputTarget::Replace { existing, .. } => existing.as_ref().map(FileId::of),
            OutputTarget::Through { meta, .. } => Some(FileId::of(meta)),
        }
    }

    /// Writes `bytes`: atomically for a regular file (all or nothing), through for a
    /// device or FIFO (waiting for a FIFO's reader, as a shell redirection does).
    pub fn write(&self, bytes: &[u8]) -> Result<(), WriteError> {
        self.write_with(|out| out.write_all(bytes))
    }

    /// Writes what `produce` writes, the same way as [`OutputTarget::write`]: for a
    /// regular file nothing is left under its name unless `produce` succeeds, so a
    /// large output (a snapshot) is streamed, never held whole in memory.
    pub fn write_with(&self, produce: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> Result<(), WriteError> {
        match self {
            OutputTarget::Replace { path, existing } => replace(path, existing.as_ref(), produce),
            OutputTarget::Through { path, meta } => write_through(path, meta, produce),
        }
    }
}

/// The directory a path's file is in ("." for a bare name).
fn parent_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

fn check_directory(path: &Path) -> Result<(), WriteError> {
    let dir = parent_of(path);
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(WriteError::NotADirectory(dir.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(WriteError::NoDirectory(dir.to_path_buf())),
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => Err(WriteError::NotADirectory(dir.to_path_buf())),
        Err(e) => Err(io_error(dir)(e)),
    }
}

fn replace(
    path: &Path,
    existing: Option<&Metadata>,
    produce: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<(), WriteError> {
    let fail = io_error(path);
    let dir = parent_of(path);
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(path.file_name().unwrap_or_default());
    prefix.push(".");
    // O_CREAT|O_EXCL under a random name: a planted file or symlink is never followed.
    let tmp = tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(fail)?;
    let result = (|| {
        let file = tmp.as_file();
        let mode = match existing {
            Some(meta) => {
                if meta.uid() != file.metadata()?.uid() || meta.gid() != file.metadata()?.gid() {
                    // Keeps the owner where allowed (as root); otherwise the writer owns it.
                    let _ = std::os::unix::fs::fchown(file, Some(meta.uid()), Some(meta.gid()));
                }
                meta.permissions().mode() & 0o777
            }
            None => NEW_FILE_MODE,
        };
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        let mut out = io::BufWriter::with_capacity(1 << 20, tmp.as_file());
        produce(&mut out)?;
        out.flush()?;
        drop(out);
        tmp.as_file().sync_all()
    })();
    result.map_err(io_error(path))?;
    tmp.persist(path).map_err(|e| io_error(path)(e.error))?;
    // The rename is durable once the directory is (best effort: some file systems refuse).
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn write_through(
    path: &Path,
    expected: &Metadata,
    produce: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<(), WriteError> {
    let fail = io_error(path);
    let mut file = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY)
        .open(path)
        .map_err(fail)?;
    let meta = file.metadata().map_err(io_error(path))?;
    if FileId::of(&meta) != FileId::of(expected) {
        return Err(io_error(path)(io::Error::other("it was replaced while being opened")));
    }
    let mut out = io::BufWriter::with_capacity(1 << 20, &mut file);
    produce(&mut out).and_then(|_| out.flush()).map_err(io_error(path))
}
