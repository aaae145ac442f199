//! Live migration between two `vmc run` processes, over a Unix socket or TCP.
//!
//! The source sends the header (ABI hash and document) first; the destination, which
//! already passed `vmc check` on its own host and built the VM from its own document,
//! answers: refused (with its document, so both sides print what differs) before any
//! state moves, or accepted. Then pre-copy: all of guest memory while the guest runs,
//! then the pages written meanwhile (KVM's dirty log and the devices' own writes),
//! round after round until few are left; then stop-and-copy: the guest is paused, the
//! last dirty pages, the machine state and the end record go, and the destination
//! acknowledges that it applied them.
//!
//! Then the hand-over, so that at most one side ever runs the guest, whatever breaks:
//! the source sends its go-ahead and never resumes after that; the destination runs the
//! guest only once it has the go-ahead, and says so. On any failure before the
//! go-ahead left, the source resumes its guest and keeps running, and the destination
//! runs nothing. Once it left, the source stops (exit 0) when the destination confirms;
//! without that confirmation it cannot know whether the destination runs, so its guest
//! stays paused (neither resumed nor thrown away) and it says what to check.

use std::io::{self, BufReader, BufWriter, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use vmc_compiler::AbiDocument;

use super::snapshot::{check_header, header, read_body, SnapshotError};
use super::{differences, Ack, Answer, FormatError, Record, RecordReader, RecordWriter, STREAM_MAGIC};
use crate::vm::state::{page_ranges, StateError, VmHandle};
use crate::vm::{SignalMark, StopReason, Vm};

/// How long a peer may stay silent (or a connection take) before the migration fails.
const PEER_TIMEOUT: Duration = Duration::from_secs(30);
/// Pre-copy ends when what the guest wrote during a round could go in the downtime
/// limit at the round's own rate...
pub const DEFAULT_DOWNTIME_LIMIT: Duration = Duration::from_millis(300);
/// ...or after this many rounds, whatever the guest does.
pub const MAX_ROUNDS: u32 = 12;

/// Where a migration goes: `unix:PATH` or `tcp:HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Unix(PathBuf),
    Tcp(String),
}

impl std::str::FromStr for Address {
    type Err = String;

    fn from_str(s: &str) -> Result<Address, String> {
        if let Some(path) = s.strip_prefix("unix:").filter(|p| !p.is_empty()) {
            return Ok(Address::Unix(PathBuf::from(path)));
        }
        if let Some(addr) = s.strip_prefix("tcp:") {
            if addr
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
            {
                return Ok(Address::Tcp(addr.to_string()));
            }
        }
        Err(format!(
            "`{s}` is not a migration address: use unix:PATH or tcp:HOST:PORT (for example tcp:10.0.0.2:4444)"
        ))
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Unix(p) => write!(f, "unix:{}", p.display()),
            Address::Tcp(a) => write!(f, "tcp:{a}"),
        }
    }
}

/// Why a migration failed. On the source the guest keeps running in every case.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    /// The two ABIs differ: refused before any state moved.
    #[error(
        "migration refused: the destination runs ABI {theirs}, this VM is {ours}; no state was sent. What differs (source -> destination):\n{}",
        differences.join("\n")
    )]
    Refused {
        ours: String,
        theirs: String,
        differences: Vec<String>,
    },
    /// The destination's side of [`MigrationError::Refused`].
    #[error(
        "refused the incoming migration: the source runs ABI {theirs}, this host's document is {ours}; nothing was received. What differs (source -> destination):\n{}",
        differences.join("\n")
    )]
    RefusedIncoming {
        ours: String,
        theirs: String,
        differences: Vec<String>,
    },
    /// The destination refused for another reason.
    #[error("migration refused by the destination: {0}")]
    RefusedBy(String),
    #[error("cannot connect to {address}: {source}")]
    Connect {
        address: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: String,
        #[source]
        source: io::Error,
    },
    #[error("the migration connection failed: {0}")]
    Io(#[source] io::Error),
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Body(#[from] SnapshotError),
    #[error("the destination could not start the VM: {0}")]
    NotStarted(String),
    /// The go-ahead left, but the destination did not confirm that the guest runs there.
    #[error(
        "the destination was told to run the guest but did not confirm it ({0}); so that it never runs twice, \
         the guest stays paused here: resume it here (`vmc resume`) only if the destination's `vmc status` \
         shows no running guest"
    )]
    Unconfirmed(String),
    /// The destination's side: the state was applied, but the source's go-ahead never came.
    #[error(
        "the source did not give the go-ahead after the state was applied ({0}); the guest was not started \
         here and stays with the source"
    )]
    NoGoAhead(String),
    #[error("the peer sent {0} where it should not")]
    Unexpected(&'static str),
    #[error("stopped by signal {0} while waiting for a migration")]
    Signal(i32),
}

/// What a successful migration did, as `vmc migrate` prints it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MigrationReport {
    pub bytes: u64,
    pub memory_bytes: u64,
    /// Pre-copy rounds (the first sends all memory), not counting the stop-and-copy.
    pub rounds: u32,
    /// From pausing the guest here to the destination's acknowledgement.
    pub downtime: Duration,
    pub total: Duration,
}

/// A connected stream, either kind.
enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
        })
    }

    fn set_timeouts(&self, limit: Duration) -> io::Result<()> {
        match self {
            Stream::Unix(s) => {
                s.set_read_timeout(Some(limit))?;
                s.set_write_timeout(Some(limit))
            }
            Stream::Tcp(s) => {
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(limit))?;
                s.set_write_timeout(Some(limit))
            }
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.flush(),
            Stream::Tcp(s) => s.flush(),
        }
    }
}

fn connect(to: &Address) -> Result<Stream, MigrationError> {
    let fail = |source| MigrationError::Connect {
        address: to.to_string(),
        source,
    };
    let stream = match to {
        Address::Unix(path) => Stream::Unix(UnixStream::connect(path).map_err(fail)?),
        Address::Tcp(addr) => {
            let mut last = io::Error::new(io::ErrorKind::NotFound, "the name resolves to no address");
            let mut connected = None;
            for a in addr.to_socket_addrs().map_err(fail)? {
                match TcpStream::connect_timeout(&a, PEER_TIMEOUT) {
                    Ok(s) => {
                        connected = Some(s);
                        break;
                    }
                    Err(e) => last = e,
                }
            }
            Stream::Tcp(connected.ok_or_else(|| fail(last))?)
        }
    };
    stream.set_timeouts(PEER_TIMEOUT).map_err(fail)?;
    Ok(stream)
}

/// Sends the running VM behind `vm` (built from `doc`) to `to`. On success the source
/// VM is asked to stop ([`StopReason::Migrated`]); on failure it runs on as before.
pub fn send(
    vm: &VmHandle,
    doc: &AbiDocument,
    to: &Address,
    downtime_limit: Duration,
) -> Result<MigrationReport, MigrationError> {
    let start = Instant::now();
    let stream = connect(to)?;
    let read_half = stream.try_clone().map_err(MigrationError::Io)?;
    let mut writer =
        RecordWriter::start(BufWriter::with_capacity(1 << 20, stream), STREAM_MAGIC).map_err(MigrationError::Io)?;
    writer.header(&header(doc, vm)).map_err(MigrationError::Io)?;
    writer.flush().map_err(MigrationError::Io)?;
    // The destination answers with its own magic and version, then the answer.
    let mut reader = RecordReader::start(BufReader::new(read_half), STREAM_MAGIC, format!("the answer from {to}"))?;
    let answer = match reader.expect("before its answer")? {
        Record::Answer(a) => a,
        _ => return Err(MigrationError::Unexpected("another record than its answer")),
    };
    if !answer.accepted {
        let lines = differences(doc, &answer.document, &to.to_string(), false);
        if lines.is_empty() {
            return Err(MigrationError::RefusedBy(answer.reason));
        }
        return Err(MigrationError::Refused {
            ours: doc.hash.clone(),
            theirs: answer.abi_hash,
            differences: lines,
        });
    }

    vm.log_dirty_pages(true)?;
    let outcome = precopy_and_finish(vm, &mut writer, &mut reader, start, downtime_limit);
    if outcome.is_err() {
        // The guest carries on here; the dirty log is no longer needed.
        let _ = vm.log_dirty_pages(false);
    }
    outcome
}

fn precopy_and_finish<W: Write, R: Read>(
    vm: &VmHandle,
    writer: &mut RecordWriter<W>,
    reader: &mut RecordReader<R>,
    start: Instant,
    downtime_limit: Duration,
) -> Result<MigrationReport, MigrationError> {
    let io = MigrationError::Io;
    let mut report = MigrationReport::default();
    let mut pages = vm.all_pages();
    // Clears the log: from here on it holds what changes while the memory goes.
    vm.take_dirty_pages()?;
    loop {
        report.rounds += 1;
        let round = Instant::now();
        let ranges = page_ranges(pages, super::MAX_MEMORY_RECORD);
        let sent = writer.memory_ranges(vm, &ranges).map_err(io)?;
        writer.flush().map_err(io)?;
        report.memory_bytes += sent;
        pages = vm.take_dirty_pages()?;
        // What this link carried per second, and so what fits in the downtime limit.
        let rate = sent as f64 / round.elapsed().as_secs_f64().max(1e-6);
        let fits = (rate * downtime_limit.as_secs_f64()) as u64 / crate::dirty::PAGE_SIZE;
        tracing::info!(
            round = report.rounds,
            sent,
            dirty = pages.len(),
            fits,
            "migration: pre-copy round"
        );
        if (pages.len() as u64) <= fits || report.rounds >= MAX_ROUNDS {
            break;
        }
    }

    let paused_at = Instant::now();
    vm.pause()?;
    let finished = (|| -> Result<(), MigrationError> {
        pages.extend(vm.take_dirty_pages()?);
        let ranges = page_ranges(pages, super::MAX_MEMORY_RECORD);
        report.memory_bytes += writer.memory_ranges(vm, &ranges).map_err(io)?;
        let state = vm.save()?;
        writer.state(&state).map_err(io)?;
        writer.end().map_err(io)?;
        match reader.expect("before its acknowledgement")? {
            Record::Ack(Ack { ok: true, .. }) => {}
            Record::Ack(Ack { message, .. }) => return Err(MigrationError::NotStarted(message)),
            _ => return Err(MigrationError::Unexpected("another record than its acknowledgement")),
        }
        // A go-ahead that could not be written did not reach the destination whole,
        // and a partial record is no go-ahead: the guest may still resume here.
        writer.go().map_err(io)
    })();
    if let Err(e) = finished {
        let _ = vm.resume();
        return Err(e);
    }
    // From here on this side never runs the guest again.
    let confirmed = match reader.expect("before it confirmed that the guest runs there") {
        Ok(Record::Ack(Ack { ok: true, .. })) => Ok(()),
        Ok(Record::Ack(Ack { message, .. })) => Err(message),
        Ok(_) => Err("it sent another record than its confirmation".to_string()),
        Err(e) => Err(e.to_string()),
    };
    match confirmed {
        Ok(()) => {
            report.downtime = paused_at.elapsed();
            report.bytes = writer.bytes();
            report.total = start.elapsed();
            // This side ends, and its vCPUs, parked, never enter the guest again.
            vm.control().request_stop(StopReason::Migrated);
            Ok(report)
        }
        Err(why) => Err(MigrationError::Unconfirmed(why)),
    }
}

/// A bound listener for an incoming migration.
pub enum Incoming {
    Unix(UnixListener, PathBuf),
    Tcp(TcpListener),
}

impl Incoming {
    /// Listens on `at`. A Unix socket path must not exist yet (nothing is removed).
    pub fn bind(at: &Address) -> Result<Incoming, MigrationError> {
        let fail = |source| MigrationError::Listen {
            address: at.to_string(),
            source,
        };
        let incoming = match at {
            Address::Unix(path) => Incoming::Unix(UnixListener::bind(path).map_err(fail)?, path.clone()),
            Address::Tcp(addr) => Incoming::Tcp(TcpListener::bind(addr.as_str()).map_err(fail)?),
        };
        match &incoming {
            Incoming::Unix(l, _) => l.set_nonblocking(true),
            Incoming::Tcp(l) => l.set_nonblocking(true),
        }
        .map_err(fail)?;
        Ok(incoming)
    }

    /// Waits for the source; a stop signal after `mark` ends the wait.
    fn accept(&self, mark: SignalMark) -> Result<Stream, MigrationError> {
        let fd = match self {
            Incoming::Unix(l, _) => l.as_raw_fd(),
            Incoming::Tcp(l) => l.as_raw_fd(),
        };
        loop {
            if let Some(signal) = mark.pending() {
                return Err(MigrationError::Signal(signal));
            }
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd, and its count.
            unsafe { libc::poll(&mut pfd, 1, 100) };
            let accepted = match self {
                Incoming::Unix(l, _) => l.accept().map(|(s, _)| Stream::Unix(s)),
                Incoming::Tcp(l) => l.accept().map(|(s, _)| Stream::Tcp(s)),
            };
            match accepted {
                Ok(stream) => {
                    match &stream {
                        Stream::Unix(s) => s.set_nonblocking(false),
                        Stream::Tcp(s) => s.set_nonblocking(false),
                    }
                    .map_err(MigrationError::Io)?;
                    stream.set_timeouts(PEER_TIMEOUT).map_err(MigrationError::Io)?;
                    return Ok(stream);
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
                Err(e) => return Err(MigrationError::Io(e)),
            }
        }
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if let Incoming::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// What the destination received.
#[derive(Debug, Clone, Copy)]
pub struct ReceiveReport {
    /// From the connection to the state applied.
    pub elapsed: Duration,
}

/// The destination's side: waits for one source, checks its header against `doc` (this
/// host's own document, which `vm` was built from), and on equality fills `vm` with
/// the guest's memory and state, ready to run. On a different ABI both sides learn what
/// differs and nothing is received.
pub fn receive(
    vm: &mut Vm,
    doc: &AbiDocument,
    incoming: &Incoming,
    mark: SignalMark,
) -> Result<ReceiveReport, MigrationError> {
    let stream = incoming.accept(mark)?;
    let start = Instant::now();
    let mut writer = RecordWriter::start(
        BufWriter::new(stream.try_clone().map_err(MigrationError::Io)?),
        STREAM_MAGIC,
    )
    .map_err(MigrationError::Io)?;
    let refuse = |writer: &mut RecordWriter<_>, reason: String| {
        let _ = writer.answer(&Answer {
            accepted: false,
            abi_hash: doc.hash.clone(),
            document: doc.to_kdl(),
            reason,
        });
    };
    let mut reader = match RecordReader::start(
        BufReader::with_capacity(1 << 20, stream),
        STREAM_MAGIC,
        "the migration stream",
    ) {
        Ok(r) => r,
        Err(e) => {
            refuse(&mut writer, e.to_string());
            return Err(e.into());
        }
    };
    let header = match reader.expect("before its header")? {
        Record::Header(h) => h,
        _ => {
            refuse(&mut writer, "the stream does not start with a header".into());
            return Err(MigrationError::Unexpected("another record than a header"));
        }
    };
    if let Err(lines) = check_header(&header, doc, "the source") {
        refuse(
            &mut writer,
            format!("this host runs ABI {}, not {}", doc.hash, header.abi_hash),
        );
        return Err(MigrationError::RefusedIncoming {
            ours: doc.hash.clone(),
            theirs: header.abi_hash,
            differences: lines,
        });
    }
    writer
        .answer(&Answer {
            accepted: true,
            abi_hash: doc.hash.clone(),
            document: String::new(),
            reason: String::new(),
        })
        .map_err(MigrationError::Io)?;
    let handle = vm.handle();
    let applied = read_body(&mut reader, &handle, "the migration stream")
        .map_err(MigrationError::from)
        .and_then(|state| vm.restore(&state).map_err(MigrationError::from));
    let ack = match &applied {
        Ok(()) => Ack {
            ok: true,
            message: String::new(),
        },
        Err(e) => Ack {
            ok: false,
            message: e.to_string(),
        },
    };
    let told = writer.ack(&ack);
    applied?;
    told.map_err(MigrationError::Io)?;
    // The guest runs here only with the source's go-ahead: after it the source never
    // resumes its copy. Without it (a lost connection, a source that failed or resumed)
    // this side starts nothing.
    match reader.expect("before its go-ahead") {
        Ok(Record::Go) => {}
        Ok(_) => return Err(MigrationError::NoGoAhead("it sent another record".into())),
        Err(e) => return Err(MigrationError::NoGoAhead(e.to_string())),
    }
    // The source waits for this to end; if it is lost the source keeps its copy paused.
    let _ = writer.ack(&Ack {
        ok: true,
        message: String::new(),
    });
    Ok(ReceiveReport {
        elapsed: start.elapsed(),
    })
}
