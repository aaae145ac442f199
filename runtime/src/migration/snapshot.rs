//! Snapshot files: a paused VM written whole (header, memory, state, end), and read back
//! into a freshly built VM of the same ABI.

use std::fs::File;
use std::io::{self, BufReader};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use vmc_compiler::AbiDocument;

use super::{differences, FormatError, Header, Record, RecordReader, RecordWriter, SNAPSHOT_MAGIC};
use crate::host::files::{self, OutputTarget, WriteError};
use crate::vm::state::{page_ranges, MachineState, StateError, VmHandle};
use crate::vm::Vm;

/// Why a snapshot could not be taken or restored.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("cannot read the snapshot {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot read the snapshot {path}: it is {kind}, not a regular file")]
    NotRegular { path: String, kind: &'static str },
    /// The snapshot is of another ABI: its values differ from the document's.
    #[error(
        "the snapshot {path} is of ABI {theirs}, not {ours}; nothing was restored. What differs (snapshot -> document):\n{}",
        differences.join("\n")
    )]
    OtherAbi {
        path: String,
        ours: String,
        theirs: String,
        differences: Vec<String>,
    },
    #[error("the snapshot {path} {why}")]
    Incomplete { path: String, why: String },
}

/// What writing a snapshot took.
#[derive(Debug, Clone, Copy)]
pub struct SnapshotReport {
    pub bytes: u64,
    /// How long the guest was paused.
    pub paused: Duration,
}

/// Pauses the VM, writes its snapshot to `path` (atomically: nothing appears under the
/// name unless the whole snapshot was written), and resumes it.
pub fn take(vm: &VmHandle, doc: &AbiDocument, path: &Path) -> Result<SnapshotReport, SnapshotError> {
    let target = OutputTarget::resolve(path)?;
    let start = Instant::now();
    vm.pause()?;
    let result = write(vm, doc, &target);
    // The guest goes on whatever happened to the file.
    let resumed = vm.resume();
    let paused = start.elapsed();
    let bytes = result?;
    resumed?;
    Ok(SnapshotReport { bytes, paused })
}

/// Writes the snapshot of a VM already paused, and leaves it paused.
pub fn take_paused(vm: &VmHandle, doc: &AbiDocument, path: &Path) -> Result<SnapshotReport, SnapshotError> {
    let target = OutputTarget::resolve(path)?;
    let bytes = write(vm, doc, &target)?;
    Ok(SnapshotReport {
        bytes,
        paused: Duration::ZERO,
    })
}

fn write(vm: &VmHandle, doc: &AbiDocument, target: &OutputTarget) -> Result<u64, SnapshotError> {
    let state = vm.save()?;
    let mut bytes = 0;
    target.write_with(|out| {
        let mut w = RecordWriter::start(out, SNAPSHOT_MAGIC)?;
        w.header(&header(doc, vm))?;
        w.memory_ranges(vm, &page_ranges(vm.all_pages(), super::MAX_MEMORY_RECORD))?;
        w.state(&state)?;
        w.end()?;
        bytes = w.bytes();
        Ok(())
    })?;
    Ok(bytes)
}

/// The header of `doc`'s state.
pub(crate) fn header(doc: &AbiDocument, vm: &VmHandle) -> Header {
    Header {
        abi_hash: doc.hash.clone(),
        document: doc.to_kdl(),
        memory_bytes: vm.memory_bytes(),
    }
}

/// Checks a header against the document this process runs: the same hash, else the
/// values that differ.
/// The lines go from the header's document to `doc`.
pub(crate) fn check_header(header: &Header, doc: &AbiDocument, what: &str) -> Result<(), Vec<String>> {
    if header.abi_hash == doc.hash {
        return Ok(());
    }
    let mut lines = differences(doc, &header.document, what, true);
    if lines.is_empty() {
        lines.push(format!(
            "(no value differs, but the hashes do: {} and {})",
            doc.hash, header.abi_hash
        ));
    }
    Err(lines)
}

/// Reads the snapshot at `path` into `vm`, which was built from `doc` and has not run:
/// the format version and the ABI hash are checked first, then memory and state are
/// read, and the state is applied only once the end record's checksum matched.
pub fn restore(vm: &mut Vm, doc: &AbiDocument, path: &Path) -> Result<(), SnapshotError> {
    let shown = path.display().to_string();
    // Non-blocking: a FIFO is refused below instead of waiting for a writer.
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|source| SnapshotError::Open {
            path: shown.clone(),
            source,
        })?;
    let meta = file.metadata().map_err(|source| SnapshotError::Open {
        path: shown.clone(),
        source,
    })?;
    if !meta.is_file() {
        return Err(SnapshotError::NotRegular {
            path: shown,
            kind: files::kind_name(&meta),
        });
    }
    let mut reader = RecordReader::start(
        BufReader::with_capacity(1 << 20, file),
        SNAPSHOT_MAGIC,
        format!("snapshot {shown}"),
    )?;
    let Record::Header(header) = reader.expect("before its header")? else {
        return Err(incomplete(&shown, "does not start with its header"));
    };
    if let Err(differences) = check_header(&header, doc, &shown) {
        return Err(SnapshotError::OtherAbi {
            path: shown,
            ours: doc.hash.clone(),
            theirs: header.abi_hash,
            differences,
        });
    }
    let handle = vm.handle();
    let state = read_body(&mut reader, &handle, &shown)?;
    vm.restore(&state)?;
    Ok(())
}

/// Reads memory records into the VM until the state and the end record; returns the
/// state. Shared by snapshots and live migration.
pub(crate) fn read_body<R: io::Read>(
    reader: &mut RecordReader<R>,
    vm: &VmHandle,
    shown: &str,
) -> Result<MachineState, SnapshotError> {
    let mut state = None;
    loop {
        match reader.expect("before its end record")? {
            Record::Memory(addr, data) => {
                if state.is_some() {
                    return Err(incomplete(shown, "has memory after the machine state"));
                }
                reader.apply_memory(vm, addr, &data)?;
            }
            Record::State(s) if state.is_none() => state = Some(s),
            Record::End => break,
            other => {
                return Err(incomplete(
                    shown,
                    &format!("has an unexpected record {}", record_name(&other)),
                ))
            }
        }
    }
    state
        .map(|s| *s)
        .ok_or_else(|| incomplete(shown, "ends without the machine state"))
}

fn record_name(record: &Record) -> &'static str {
    match record {
        Record::Header(_) => "(a second header)",
        Record::Memory(..) => "(memory)",
        Record::State(_) => "(a second machine state)",
        Record::End => "(end)",
        Record::Answer(_) => "(an answer)",
        Record::Ack(_) => "(an acknowledgement)",
        Record::Go => "(a go-ahead)",
    }
}

fn incomplete(path: &str, why: &str) -> SnapshotError {
    SnapshotError::Incomplete {
        path: path.to_string(),
        why: why.to_string(),
    }
}
