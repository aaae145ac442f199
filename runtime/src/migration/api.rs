//! The control socket of a running VM (`vmc run FILE --api-sock PATH`): one JSON
//! request per connection, one line, answered with one JSON line.
//!
//! ```text
//! {"op":"status"}                        -> {"ok":true,"state":"running","abi_hash":"blake3:…","vcpus":1,"memory_bytes":67108864}
//! {"op":"pause"}                         -> {"ok":true,"state":"paused"}
//! {"op":"resume"}                        -> {"ok":true,"state":"running"}
//! {"op":"snapshot","path":"/abs/file"}   -> {"ok":true,"bytes":…,"paused_ms":…}
//! {"op":"migrate","to":"tcp:host:port"[,"downtime_limit_ms":300]}
//!                                        -> {"ok":true,"bytes":…,"memory_bytes":…,"rounds":…,"downtime_ms":…,"total_ms":…}
//! any failure                            -> {"ok":false,"error":"…"[,"differences":["…",…]]}
//! ```
//!
//! One snapshot or migration at a time: a second is refused while one is under way
//! (`"busy"`). A paused VM stays paused through a snapshot; a refused or failed
//! migration leaves the VM as it was. The socket file is created when the VM is built
//! (a path that exists is refused: nothing is removed), mode 0600, and removed when it
//! stops.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{json, Value};
use vmc_compiler::AbiDocument;

use super::snapshot;
use super::transfer::{self, Address, MigrationError};
use crate::vm::state::VmHandle;

/// The longest request line read.
const MAX_REQUEST: u64 = 64 * 1024;
/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What the VM is doing, as the control socket sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Activity {
    Running,
    Paused,
    Snapshotting { was_paused: bool },
    Migrating,
}

impl Activity {
    fn name(self) -> &'static str {
        match self {
            Activity::Running => "running",
            Activity::Paused => "paused",
            Activity::Snapshotting { .. } => "snapshotting",
            Activity::Migrating => "migrating",
        }
    }
}

struct Shared {
    vm: VmHandle,
    doc: AbiDocument,
    activity: Mutex<Activity>,
}

/// A control socket created, not yet served (see [`ApiServer::bind`]).
pub struct BoundSocket {
    /// Removed on drop unless the server took it over.
    path: Option<PathBuf>,
    listener: UnixListener,
}

impl Drop for BoundSocket {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl BoundSocket {
    /// Serves requests for `vm` (built from `doc`) on its own thread, under the `api`
    /// seccomp role.
    pub fn serve(mut self, vm: VmHandle, doc: AbiDocument) -> io::Result<ApiServer> {
        let shared = Arc::new(Shared {
            vm,
            doc,
            activity: Mutex::new(Activity::Running),
        });
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop_seen = stop.clone();
        let listener = self.listener.try_clone()?;
        let (ready, confined) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new().name("vmc-api".into()).spawn(move || {
            let entered = crate::confine::enter(crate::confine::Role::Api);
            let ok = entered.is_ok();
            let _ = ready.send(entered);
            if ok {
                serve(&listener, &shared, &stop_seen);
            }
        })?;
        let server = ApiServer {
            path: self.path.take().unwrap_or_default(),
            stop,
            thread: Some(thread),
        };
        match confined.recv() {
            Ok(Ok(())) => Ok(server),
            Ok(Err(e)) => Err(io::Error::other(e.to_string())),
            Err(_) => Err(io::Error::other("the control socket's thread ended at once")),
        }
    }
}

/// The control socket's server; stops (and removes the socket file) when dropped.
pub struct ApiServer {
    path: PathBuf,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ApiServer {
    /// Creates the socket at `path` and serves requests for `vm` (built from `doc`).
    pub fn start(path: &Path, vm: VmHandle, doc: AbiDocument) -> io::Result<ApiServer> {
        ApiServer::bind(path, None)?.serve(vm, doc)
    }

    /// Creates the socket at `path`, mode 0600, owned by `owner` (user, group) if given:
    /// the user `vmc run --user` becomes, so that it can still be reached.
    pub fn bind(path: &Path, owner: Option<(u32, u32)>) -> io::Result<BoundSocket> {
        if std::fs::symlink_metadata(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists; remove it if no vmc uses it", path.display()),
            ));
        }
        let listener = UnixListener::bind(path)?;
        // Whoever can connect can snapshot the guest's memory to a file of their
        // choosing, as this process's user: only that user may.
        let bound = BoundSocket {
            path: Some(path.to_path_buf()),
            listener,
        };
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
        }
        bound.listener.set_nonblocking(true)?;
        Ok(bound)
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn serve(listener: &UnixListener, shared: &Arc<Shared>, stop: &std::sync::atomic::AtomicBool) {
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        let mut pfd = libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, and its count.
        unsafe { libc::poll(&mut pfd, 1, 100) };
        let Ok((stream, _)) = listener.accept() else {
            continue;
        };
        let shared = shared.clone();
        // Each client on its own thread: a status request is answered while a
        // migration runs (and a second migration refused).
        let _ = std::thread::Builder::new()
            .name("vmc-api-client".into())
            .spawn(move || {
                let _ = handle(stream, &shared);
            });
    }
}

fn handle(stream: UnixStream, shared: &Shared) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    let mut line = String::new();
    BufReader::new((&stream).take(MAX_REQUEST)).read_line(&mut line)?;
    let reply = match serde_json::from_str::<Value>(&line) {
        Ok(request) => answer(&request, shared),
        Err(e) => failure(format!("the request is not one line of JSON: {e}")),
    };
    let mut out = &stream;
    writeln!(out, "{reply}")?;
    out.flush()
}

fn failure(error: impl Into<String>) -> Value {
    json!({"ok": false, "error": error.into()})
}

fn answer(request: &Value, shared: &Shared) -> Value {
    let op = request.get("op").and_then(Value::as_str).unwrap_or("");
    let activity = || *shared.activity.lock().unwrap_or_else(|p| p.into_inner());
    let set = |a: Activity| *shared.activity.lock().unwrap_or_else(|p| p.into_inner()) = a;
    // Takes the VM for a long operation, or says what holds it.
    let claim = |next: Activity| -> Result<Activity, Value> {
        let mut current = shared.activity.lock().unwrap_or_else(|p| p.into_inner());
        match *current {
            before @ (Activity::Running | Activity::Paused) => {
                *current = next;
                Ok(before)
            }
            busy => Err(failure(format!(
                "busy: the VM is {} now; try again when it is done",
                busy.name()
            ))),
        }
    };
    if shared.vm.control().is_stopping() {
        return failure("the VM is stopping");
    }
    match op {
        "status" => json!({
            "ok": true,
            "state": activity().name(),
            "abi_hash": shared.doc.hash,
            "vcpus": shared.doc.abi.cpu.count,
            "memory_bytes": shared.doc.abi.memory,
        }),
        "pause" => match claim(Activity::Paused) {
            Ok(Activity::Paused) => json!({"ok": true, "state": "paused"}),
            Ok(_) => match shared.vm.pause() {
                Ok(()) => json!({"ok": true, "state": "paused"}),
                Err(e) => {
                    set(Activity::Running);
                    failure(e.to_string())
                }
            },
            Err(busy) => busy,
        },
        "resume" => match claim(Activity::Running) {
            Ok(Activity::Running) => json!({"ok": true, "state": "running"}),
            Ok(_) => match shared.vm.resume() {
                Ok(()) => json!({"ok": true, "state": "running"}),
                Err(e) => failure(e.to_string()),
            },
            Err(busy) => busy,
        },
        "snapshot" => {
            let Some(path) = request
                .get("path")
                .and_then(Value::as_str)
                .filter(|p| Path::new(p).is_absolute())
            else {
                return failure("snapshot needs an absolute \"path\"");
            };
            let before = match claim(Activity::Snapshotting { was_paused: false }) {
                Ok(before) => before,
                Err(busy) => return busy,
            };
            let result = if before == Activity::Paused {
                // Already paused: written as it is, and left paused.
                snapshot::take_paused(&shared.vm, &shared.doc, Path::new(path))
            } else {
                snapshot::take(&shared.vm, &shared.doc, Path::new(path))
            };
            set(before);
            match result {
                Ok(r) => json!({"ok": true, "bytes": r.bytes, "paused_ms": r.paused.as_secs_f64() * 1e3}),
                Err(e) => failure(e.to_string()),
            }
        }
        "migrate" => {
            let to = match request.get("to").and_then(Value::as_str).map(str::parse::<Address>) {
                Some(Ok(to)) => to,
                Some(Err(e)) => return failure(e),
                None => return failure("migrate needs \"to\": unix:PATH or tcp:HOST:PORT"),
            };
            match claim(Activity::Migrating) {
                Ok(Activity::Running) => {}
                Ok(before) => {
                    set(before);
                    return failure("the VM is paused: resume it before migrating");
                }
                Err(busy) => return busy,
            }
            let limit = match request.get("downtime_limit_ms").map(Value::as_u64) {
                None => transfer::DEFAULT_DOWNTIME_LIMIT,
                Some(Some(ms)) => Duration::from_millis(ms),
                Some(None) => {
                    set(Activity::Running);
                    return failure("\"downtime_limit_ms\" must be a whole number of milliseconds");
                }
            };
            let result = transfer::send(&shared.vm, &shared.doc, &to, limit);
            // A hand-over the destination did not confirm leaves the guest paused here.
            set(match result {
                Err(MigrationError::Unconfirmed(_)) => Activity::Paused,
                _ => Activity::Running,
            });
            match result {
                Ok(r) => json!({
                    "ok": true,
                    "bytes": r.bytes,
                    "memory_bytes": r.memory_bytes,
                    "rounds": r.rounds,
                    "downtime_ms": r.downtime.as_secs_f64() * 1e3,
                    "total_ms": r.total.as_secs_f64() * 1e3,
                }),
                Err(MigrationError::Refused {
                    ours,
                    theirs,
                    differences,
                }) => json!({
                    "ok": false,
                    "error": format!("migration refused: the destination runs ABI {theirs}, this VM is {ours}; no state was sent. What differs (source -> destination):"),
                    "differences": differences,
                }),
                Err(e) => failure(e.to_string()),
            }
        }
        "" => failure("the request has no \"op\" (status, pause, resume, snapshot, migrate)"),
        other => failure(format!(
            "unknown op `{other}` (status, pause, resume, snapshot, migrate)"
        )),
    }
}

/// Sends one request to the control socket at `path` and returns its answer. `limit`
/// bounds the wait (a migration may take long).
pub fn request(path: &Path, request: &Value, limit: Duration) -> io::Result<Value> {
    let stream = UnixStream::connect(path)?;
    stream.set_read_timeout(Some(limit))?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let mut out = &stream;
    writeln!(out, "{request}")?;
    out.flush()?;
    let mut line = String::new();
    BufReader::new((&stream).take(16 << 20)).read_line(&mut line)?;
    if line.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the VM closed the control socket without answering",
        ));
    }
    serde_json::from_str(&line).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}
