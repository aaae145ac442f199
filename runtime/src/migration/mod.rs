//! Moving a VM's whole state: snapshot files ([`snapshot`]), live migration between
//! two `vmc run` processes ([`transfer`]), and the control socket that asks a running
//! VM for either ([`api`]).
//!
//! Both carry the same records, in the same versioned format:
//!
//! ```text
//! magic (8 bytes: "VMCSNAP\0" for a file, "VMCMIGR\0" for a stream)
//! format version (u32, little-endian)
//! records, each: kind (1 byte), payload length (u32 LE), payload
//!   'H' header: the ABI hash, the whole ABI document, the guest's memory size
//!   'M' memory: a guest physical address (u64 LE), then that many bytes of RAM
//!   'S' state: every vCPU, the interrupt controllers, the PIT, the clock, the devices
//!   'E' end: the BLAKE3 digest of every byte before this record
//! ```
//!
//! A reader checks the magic and the format version before anything else, then the
//! header's hash against the document it runs, and only then reads state. Every length
//! is bounded before anything is allocated; every memory record must fall inside guest
//! RAM; the end record's digest catches a corrupted or truncated file. A live migration
//! adds two records from the destination: 'A' (the answer to the header: accepted, or
//! refused with the destination's document) and 'K' (the state was applied, or why not).
//!
//! Format versions: a later vmc reads every version this one reads (version 1 now);
//! a record of a later version is refused by an earlier vmc with both version numbers.

pub mod api;
pub mod snapshot;
pub mod transfer;

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use crate::vm::state::{MachineState, VmHandle};

/// The snapshot file format this vmc writes, and the newest it reads.
pub const SNAPSHOT_VERSION: u32 = 1;
/// The oldest snapshot file format this vmc reads.
pub const OLDEST_SNAPSHOT_VERSION: u32 = 1;
/// The migration stream's protocol. Version 2 added the go-ahead ('G') after the
/// destination's acknowledgement, so that at most one side ever runs the guest; a
/// version 1 peer would not wait for it, so it is refused.
pub const STREAM_VERSION: u32 = 2;

/// The format versions written and read after `magic`: `(oldest read, written)`.
pub fn versions(magic: [u8; 8]) -> (u32, u32) {
    if magic == SNAPSHOT_MAGIC {
        (OLDEST_SNAPSHOT_VERSION, SNAPSHOT_VERSION)
    } else {
        (STREAM_VERSION, STREAM_VERSION)
    }
}

/// The first bytes of a snapshot file.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"VMCSNAP\0";
/// The first bytes of a live-migration stream.
pub const STREAM_MAGIC: [u8; 8] = *b"VMCMIGR\0";

/// The most guest memory one 'M' record carries.
pub const MAX_MEMORY_RECORD: u64 = 1 << 20;
/// The most any other record carries (a document, the machine state).
const MAX_RECORD: u32 = 16 << 20;

/// Record kinds.
mod kind {
    pub const HEADER: u8 = b'H';
    pub const MEMORY: u8 = b'M';
    pub const STATE: u8 = b'S';
    pub const END: u8 = b'E';
    pub const ANSWER: u8 = b'A';
    pub const ACK: u8 = b'K';
    pub const GO: u8 = b'G';
}

/// Why a snapshot or stream could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("{what} is not a vmc {expected} (it starts with {found:?})")]
    Magic {
        what: String,
        expected: &'static str,
        found: String,
    },
    #[error(
        "{what} has format version {found}; this vmc reads {}{}",
        if oldest == newest { format!("version {newest}") } else { format!("versions {oldest} to {newest}") },
        if found > newest { " (it was written by a newer vmc)" } else { " (it was written by an older vmc)" }
    )]
    Version {
        what: String,
        found: u32,
        oldest: u32,
        newest: u32,
    },
    #[error("{what} ends early, {context}: it is truncated")]
    Truncated { what: String, context: String },
    #[error("{what}: {why}")]
    Corrupt { what: String, why: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

/// The 'H' record: what VM the rest is the state of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub abi_hash: String,
    /// The ABI document, as `vmc show` prints it.
    pub document: String,
    pub memory_bytes: u64,
}

/// One record read.
#[derive(Debug)]
pub enum Record {
    Header(Header),
    /// A guest physical address and the bytes there.
    Memory(u64, Vec<u8>),
    State(Box<MachineState>),
    /// The digest it carried matched.
    End,
    Answer(Answer),
    Ack(Ack),
    /// The source's go-ahead: it has stopped for good, the destination may run.
    Go,
}

/// The destination's answer to a header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub accepted: bool,
    /// The destination's ABI hash.
    pub abi_hash: String,
    /// The destination's own ABI document, for the source to show what differs.
    pub document: String,
    /// Why not, when refused.
    pub reason: String,
}

/// The destination's word: the state is applied (the first) or the guest runs (the
/// second, after the go-ahead), or why not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub ok: bool,
    pub message: String,
}

/// Writes records, hashing what it writes (for the end record) and counting bytes.
pub struct RecordWriter<W: Write> {
    out: W,
    hasher: blake3::Hasher,
    bytes: u64,
}

impl<W: Write> RecordWriter<W> {
    /// Starts a file or stream: its magic and the format version.
    pub fn start(out: W, magic: [u8; 8]) -> io::Result<RecordWriter<W>> {
        let mut w = RecordWriter {
            out,
            hasher: blake3::Hasher::new(),
            bytes: 0,
        };
        w.put(&magic)?;
        w.put(&versions(magic).1.to_le_bytes())?;
        Ok(w)
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.hasher.update(bytes);
        self.bytes += bytes.len() as u64;
        self.out.write_all(bytes)
    }

    fn record(&mut self, kind: u8, parts: &[&[u8]]) -> io::Result<()> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let len = u32::try_from(len).map_err(|_| io::Error::other("record too large"))?;
        self.put(&[kind])?;
        self.put(&len.to_le_bytes())?;
        for part in parts {
            self.put(part)?;
        }
        Ok(())
    }

    fn encoded(&mut self, kind: u8, value: &impl Serialize) -> io::Result<()> {
        let bytes = postcard::to_stdvec(value).map_err(io::Error::other)?;
        self.record(kind, &[&bytes])
    }

    pub fn header(&mut self, header: &Header) -> io::Result<()> {
        self.encoded(kind::HEADER, header)
    }

    pub fn memory(&mut self, addr: u64, bytes: &[u8]) -> io::Result<()> {
        self.record(kind::MEMORY, &[&addr.to_le_bytes(), bytes])
    }

    /// The guest memory of `ranges`, one record per range (each at most
    /// [`MAX_MEMORY_RECORD`] bytes); returns the bytes of memory sent.
    pub fn memory_ranges(&mut self, vm: &VmHandle, ranges: &[(u64, u64)]) -> io::Result<u64> {
        let mut buffer = vec![0u8; MAX_MEMORY_RECORD as usize];
        let mut sent = 0;
        for &(addr, len) in ranges {
            let chunk = &mut buffer[..len as usize];
            vm.memory()
                .read_slice(chunk, GuestAddress(addr))
                .map_err(|e| io::Error::other(format!("reading guest memory at {addr:#x}: {e}")))?;
            self.memory(addr, chunk)?;
            sent += len;
        }
        Ok(sent)
    }

    pub fn state(&mut self, state: &MachineState) -> io::Result<()> {
        self.encoded(kind::STATE, state)
    }

    /// The end record: the digest of everything written before it.
    pub fn end(&mut self) -> io::Result<()> {
        let digest = *self.hasher.clone().finalize().as_bytes();
        self.record(kind::END, &[&digest])?;
        self.out.flush()
    }

    pub fn answer(&mut self, answer: &Answer) -> io::Result<()> {
        self.encoded(kind::ANSWER, answer)?;
        self.out.flush()
    }

    pub fn ack(&mut self, ack: &Ack) -> io::Result<()> {
        self.encoded(kind::ACK, ack)?;
        self.out.flush()
    }

    pub fn go(&mut self) -> io::Result<()> {
        self.record(kind::GO, &[])?;
        self.out.flush()
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

/// Reads records, checking each length against its kind's bound before reading it.
pub struct RecordReader<R: Read> {
    input: R,
    hasher: blake3::Hasher,
    /// What is being read, for messages ("snapshot /x/y", "the migration stream").
    what: String,
}

impl<R: Read> RecordReader<R> {
    /// Checks the magic and the format version.
    pub fn start(mut input: R, magic: [u8; 8], what: impl Into<String>) -> Result<RecordReader<R>, FormatError> {
        let what = what.into();
        let expected = if magic == SNAPSHOT_MAGIC {
            "snapshot"
        } else {
            "migration stream"
        };
        let mut head = [0u8; 12];
        let got = read_up_to(&mut input, &mut head).map_err(|source| FormatError::Io {
            what: what.clone(),
            source,
        })?;
        if got < 8 || head[..8] != magic {
            return Err(FormatError::Magic {
                what,
                expected,
                found: String::from_utf8_lossy(&head[..got.min(8)]).into_owned(),
            });
        }
        if got < 12 {
            return Err(FormatError::Truncated {
                what,
                context: "in its format version".into(),
            });
        }
        let version = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
        let (oldest, newest) = versions(magic);
        if !(oldest..=newest).contains(&version) {
            return Err(FormatError::Version {
                what,
                found: version,
                oldest,
                newest,
            });
        }
        let mut hasher = blake3::Hasher::new();
        hasher.update(&head);
        Ok(RecordReader { input, hasher, what })
    }

    /// What is being read.
    pub fn what(&self) -> &str {
        &self.what
    }

    fn corrupt(&self, why: impl Into<String>) -> FormatError {
        FormatError::Corrupt {
            what: self.what.clone(),
            why: why.into(),
        }
    }

    fn exact(&mut self, buf: &mut [u8], context: &str) -> Result<(), FormatError> {
        let got = read_up_to(&mut self.input, buf).map_err(|source| FormatError::Io {
            what: self.what.clone(),
            source,
        })?;
        if got < buf.len() {
            return Err(FormatError::Truncated {
                what: self.what.clone(),
                context: context.into(),
            });
        }
        Ok(())
    }

    /// The next record; `None` at a clean end of input (between records).
    pub fn next_record(&mut self) -> Result<Option<Record>, FormatError> {
        let mut head = [0u8; 5];
        let got = read_up_to(&mut self.input, &mut head).map_err(|source| FormatError::Io {
            what: self.what.clone(),
            source,
        })?;
        if got == 0 {
            return Ok(None);
        }
        if got < head.len() {
            return Err(FormatError::Truncated {
                what: self.what.clone(),
                context: "in a record's header".into(),
            });
        }
        let kind = head[0];
        let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]);
        let limit = match kind {
            kind::MEMORY => (MAX_MEMORY_RECORD + 8) as u32,
            kind::END => 32,
            kind::GO => 0,
            kind::HEADER | kind::STATE | kind::ANSWER | kind::ACK => MAX_RECORD,
            other => return Err(self.corrupt(format!("unknown record kind {other:#04x}"))),
        };
        if len > limit {
            return Err(self.corrupt(format!("a '{}' record of {len} bytes (at most {limit})", kind as char)));
        }
        // The digest covers everything before the end record, the end record's own
        // header excluded.
        let before_end = self.hasher.clone();
        self.hasher.update(&head);
        let mut payload = vec![0u8; len as usize];
        let context = format!("in a '{}' record", kind as char);
        self.exact(&mut payload, &context)?;
        if kind != kind::END {
            self.hasher.update(&payload);
        }
        let decode_error =
            |e: postcard::Error| self.corrupt(format!("a '{}' record does not decode: {e}", kind as char));
        Ok(Some(match kind {
            kind::HEADER => Record::Header(postcard::from_bytes(&payload).map_err(decode_error)?),
            kind::STATE => Record::State(Box::new(postcard::from_bytes(&payload).map_err(decode_error)?)),
            kind::ANSWER => Record::Answer(postcard::from_bytes(&payload).map_err(decode_error)?),
            kind::ACK => Record::Ack(postcard::from_bytes(&payload).map_err(decode_error)?),
            kind::GO => Record::Go,
            kind::MEMORY => {
                if payload.len() < 8 {
                    return Err(self.corrupt("a memory record without an address"));
                }
                let data = payload.split_off(8);
                let addr = u64::from_le_bytes(payload.try_into().unwrap_or([0; 8]));
                Record::Memory(addr, data)
            }
            _ => {
                if before_end.finalize().as_bytes()[..] != payload[..] {
                    return Err(self.corrupt("its checksum does not match its contents: it is corrupted"));
                }
                Record::End
            }
        }))
    }

    /// The next record, which must be there.
    pub fn expect(&mut self, context: &str) -> Result<Record, FormatError> {
        self.next_record()?.ok_or_else(|| FormatError::Truncated {
            what: self.what.clone(),
            context: context.into(),
        })
    }

    /// Writes a memory record into guest RAM, refusing one that falls outside it.
    pub fn apply_memory(&self, vm: &VmHandle, addr: u64, data: &[u8]) -> Result<(), FormatError> {
        let inside = vm.memory().check_range(GuestAddress(addr), data.len());
        if !inside {
            return Err(self.corrupt(format!(
                "memory record at {addr:#x} of {} bytes is outside the guest's RAM",
                data.len()
            )));
        }
        vm.memory()
            .write_slice(data, GuestAddress(addr))
            .map_err(|e| self.corrupt(format!("memory record at {addr:#x}: {e}")))
    }
}

/// Reads until `buf` is full or the input ends; returns how much was read.
fn read_up_to(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match input.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// The lines `vmc diff FROM TO` prints, `from` being the side the state comes from
/// (`theirs_first`: the document in `theirs_text`, else `ours`), or why the other side's
/// document could not be read.
pub fn differences(
    ours: &vmc_compiler::AbiDocument,
    theirs_text: &str,
    theirs_name: &str,
    theirs_first: bool,
) -> Vec<String> {
    let source = vmc_compiler::diagnostic::SourceFile::new(theirs_name, theirs_text);
    match vmc_compiler::AbiDocument::from_kdl(&source) {
        Ok(theirs) => {
            let (from, to) = if theirs_first { (&theirs, ours) } else { (ours, &theirs) };
            vmc_compiler::diff::diff(from, to).iter().map(|d| d.render()).collect()
        }
        Err(problems) => vec![format!(
            "{theirs_name} is not a valid ABI document ({} problems, the first: {})",
            problems.0.len(),
            problems.0.first().map(|p| p.to_string()).unwrap_or_default()
        )],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            abi_hash: "blake3:00".into(),
            document: "vm".into(),
            memory_bytes: 1 << 21,
        }
    }

    fn written() -> Vec<u8> {
        let mut w = RecordWriter::start(Vec::new(), SNAPSHOT_MAGIC).unwrap();
        w.header(&header()).unwrap();
        w.memory(0x1000, &[7u8; 16]).unwrap();
        w.end().unwrap();
        w.into_inner()
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<Record>, FormatError> {
        let mut r = RecordReader::start(bytes, SNAPSHOT_MAGIC, "test")?;
        let mut out = Vec::new();
        while let Some(record) = r.next_record()? {
            out.push(record);
        }
        Ok(out)
    }

    #[test]
    fn records_come_back_as_written() {
        let records = read_all(&written()).unwrap();
        assert!(matches!(&records[0], Record::Header(h) if *h == header()));
        assert!(matches!(&records[1], Record::Memory(0x1000, d) if d == &[7u8; 16]));
        assert!(matches!(records[2], Record::End));
    }

    #[test]
    fn the_encoding_of_format_version_1_does_not_change() {
        // Guards the layout a later vmc must still read: magic, version, then each
        // record as kind, length, payload.
        let bytes = written();
        assert_eq!(&bytes[..12], b"VMCSNAP\0\x01\0\0\0");
        assert_eq!(&bytes[12..17], &[b'H', 17, 0, 0, 0], "header record: kind and length");
        // postcard: strings as a varint length and the bytes, integers as varints.
        assert_eq!(&bytes[17..34], b"\x09blake3:00\x02vm\x80\x80\x80\x01");
        assert_eq!(&bytes[34..39], &[b'M', 24, 0, 0, 0]);
        assert_eq!(&bytes[39..47], &0x1000u64.to_le_bytes());
        assert_eq!(&bytes[63..68], &[b'E', 32, 0, 0, 0]);
        assert_eq!(&bytes[68..], blake3::hash(&bytes[..63]).as_bytes());
    }

    #[test]
    fn every_flipped_byte_and_every_truncation_is_refused() {
        let good = written();
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x55;
            assert!(read_all(&bad).is_err(), "byte {i} flipped was accepted");
        }
        for len in 0..good.len() {
            let result = read_all(&good[..len]);
            // Cut between records, the reader sees a clean end without an end record:
            // the callers require the end record, so only whole-record cuts pass here.
            if let Ok(records) = result {
                assert!(!records.iter().any(|r| matches!(r, Record::End)), "cut at {len}");
            }
        }
    }

    #[test]
    fn a_foreign_file_and_a_later_version_are_named() {
        let e = read_all(b"\x7fELF\x02\x01\x01\0\0\0\0\0").err().unwrap().to_string();
        assert!(e.contains("not a vmc snapshot"), "{e}");
        let mut later = written();
        later[8] = 2;
        let e = read_all(&later).err().unwrap().to_string();
        assert!(e.contains("format version 2") && e.contains("newer vmc"), "{e}");
    }

    #[test]
    fn a_stream_speaks_version_2_and_names_a_version_1_peer_as_older() {
        let mut w = RecordWriter::start(Vec::new(), STREAM_MAGIC).unwrap();
        w.go().unwrap();
        let bytes = w.into_inner();
        assert_eq!(&bytes[..12], b"VMCMIGR\0\x02\0\0\0");
        assert_eq!(&bytes[12..], &[b'G', 0, 0, 0, 0], "the go-ahead: kind, no payload");
        let mut r = RecordReader::start(&bytes[..], STREAM_MAGIC, "stream").unwrap();
        assert!(matches!(r.next_record().unwrap(), Some(Record::Go)));
        let mut v1 = bytes.clone();
        v1[8] = 1;
        let e = RecordReader::start(&v1[..], STREAM_MAGIC, "the stream")
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("format version 1; this vmc reads version 2 (it was written by an older vmc)"),
            "{e}"
        );
        // A go-ahead carries nothing: one with a payload is refused.
        let mut long = bytes[..12].to_vec();
        long.extend_from_slice(&[b'G', 1, 0, 0, 0, 0]);
        let mut r = RecordReader::start(&long[..], STREAM_MAGIC, "stream").unwrap();
        assert!(r.next_record().is_err());
    }

    /// The machine state's encoding in format version 1, frozen: a field added, removed
    /// or reordered changes it, and then the format version must change too (with a
    /// reader for version 1 kept).
    #[test]
    fn the_machine_state_of_format_version_1_does_not_change() {
        use crate::devices::serial::SerialSnapshot;
        use crate::devices::virtio::{QueueSnapshot, TransportSnapshot};
        use crate::vm::state::{FpuState, IrqchipState, VcpuState};
        let state = MachineState {
            vcpus: vec![VcpuState {
                regs: Default::default(),
                sregs: Default::default(),
                fpu: FpuState::from(&kvm_bindings::kvm_fpu::default()),
                xsave: Some(Default::default()),
                xcrs: Some(Default::default()),
                debugregs: Default::default(),
                lapic: Some(Default::default()),
                msrs: vec![(0x10, 1)],
                mp_state: Default::default(),
                events: Default::default(),
            }],
            irqchip: Some(IrqchipState {
                pic_master: Default::default(),
                pic_slave: Default::default(),
                ioapic: Default::default(),
            }),
            pit: Some(Default::default()),
            clock: Default::default(),
            serial: Some(SerialSnapshot {
                baud_divisor_low: 1,
                baud_divisor_high: 0,
                interrupt_enable: 0,
                interrupt_identification: 1,
                line_control: 3,
                line_status: 0x60,
                modem_control: 8,
                modem_status: 0xb0,
                scratch: 0,
                in_buffer: vec![b'x'],
            }),
            net: vec![(
                "net0".into(),
                TransportSnapshot {
                    offered_features: 1 << 32,
                    status: 15,
                    driver_features: 1 << 32,
                    device_features_sel: 0,
                    driver_features_sel: 1,
                    queue_sel: 1,
                    interrupt_status: 1,
                    needs_reset: false,
                    queues: vec![QueueSnapshot {
                        size: 256,
                        ready: true,
                        desc: 0x20_0000,
                        driver: 0x20_1000,
                        device: 0x20_2000,
                        progress: Some((3, 3)),
                    }],
                },
            )],
        };
        let bytes = postcard::to_stdvec(&state).unwrap();
        assert_eq!(
            (bytes.len(), blake3::hash(&bytes).to_hex().to_string()),
            (
                8359,
                "98425612286fabbce4341a0c63165b1b287926f42be92f861a98fb91f159ca92".to_string()
            ),
            "the encoding of the machine state changed"
        );
        let back: MachineState = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(postcard::to_stdvec(&back).unwrap(), bytes);
    }

    #[test]
    fn lengths_are_bounded_before_anything_is_allocated() {
        let mut bytes = written()[..12].to_vec();
        bytes.extend_from_slice(&[b'S', 0xff, 0xff, 0xff, 0xff]);
        let e = read_all(&bytes).err().unwrap().to_string();
        assert!(e.contains("at most"), "{e}");
    }
}
