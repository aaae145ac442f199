//! Stopping a running VM: why it stopped, who asked, and how vCPU threads are kicked
//! out of `KVM_RUN`.
//!
//! Anything may ask a VM to stop: a device (the debug-exit port, the i8042 reset
//! line), a vCPU (triple fault), another thread ([`RunControl::request_stop`]) or
//! SIGINT/SIGTERM (after [`install_stop_signal_handlers`]). Each request wakes the
//! thread in `Vm::run`, which sets the stop flag, kicks every vCPU thread and joins
//! them. The first reason given wins.
//!
//! Kicking follows the KVM API's recipe: the kick signal's handler sets the vCPU's
//! `kvm_run.immediate_exit`, so a signal that lands just before `KVM_RUN` is not lost
//! (`KVM_RUN` then returns `EINTR` at once), and one that lands inside it interrupts it.

use std::cell::Cell;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use libc::{c_int, c_void, siginfo_t};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vmm_sys_util::signal::{register_signal_handler, SIGRTMIN};

/// Why a VM stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The guest wrote `code` to the debug-exit port ([`crate::devices::debug_exit::DEBUG_EXIT_PORT`]).
    DebugExit(u8),
    /// The guest pulsed the reset line through the i8042 (port 0x64, command 0xfe)
    /// or KVM reported a reset system event. vmc does not reboot; the VM ends.
    Reset,
    /// The vCPU shut down (triple fault) or KVM reported a shutdown system event.
    Shutdown,
    /// The only way on was an interrupt that can never come: `hlt` without the
    /// in-kernel irqchip.
    Halted,
    /// The host asked ([`RunControl::request_stop`]).
    Stopped,
    /// The process received this signal (SIGINT, SIGTERM).
    Signal(i32),
    /// The VM moved to another host: the destination runs it now.
    Migrated,
    /// It ran longer than its time limit (`vmc run --timeout`).
    Timeout,
    /// The console's reader went away (its pipe closed): nobody sees the guest any more.
    ConsoleClosed,
}

impl StopReason {
    /// The process exit code `vmc run` should end with.
    ///
    /// Convention: a debug-exit write of `v` gives exit code `v` (so the guest's 0 is
    /// success; QEMU's isa-debug-exit would report `(v << 1) | 1` instead). A reset
    /// or host-requested stop is a clean end: 0. A halted vCPU is 0 too (the guest
    /// chose to stop). A triple fault is 3. A signal `n` gives `128 + n`, the shell's
    /// convention.
    pub fn exit_code(&self) -> i32 {
        match *self {
            StopReason::DebugExit(v) => i32::from(v),
            StopReason::Reset | StopReason::Stopped | StopReason::Halted | StopReason::Migrated => 0,
            StopReason::Shutdown => 3,
            StopReason::Signal(n) => 128 + n,
            StopReason::Timeout => EXIT_TIMEOUT,
            StopReason::ConsoleClosed => EXIT_CONSOLE_CLOSED,
        }
    }

    /// Who ended the run: `guest`, `host` (vmc itself, or a signal), as `--exit-status`
    /// reports it, and why, in one word.
    pub fn describe(&self) -> (&'static str, &'static str) {
        match self {
            StopReason::DebugExit(_) => ("guest", "debug-exit"),
            StopReason::Reset => ("guest", "reset"),
            StopReason::Shutdown => ("guest", "triple-fault"),
            StopReason::Halted => ("guest", "halted"),
            StopReason::Stopped => ("host", "stopped"),
            StopReason::Signal(_) => ("host", "signal"),
            StopReason::Migrated => ("host", "migrated"),
            StopReason::Timeout => ("host", "timeout"),
            StopReason::ConsoleClosed => ("host", "console-closed"),
        }
    }
}

/// `vmc run`'s exit status when the guest ran past `--timeout` (as timeout(1)'s).
pub const EXIT_TIMEOUT: i32 = 124;
/// `vmc run`'s exit status when the console's reader went away: as if killed by SIGPIPE.
pub const EXIT_CONSOLE_CLOSED: i32 = 128 + libc::SIGPIPE;

/// The shared stop state of one VM.
#[derive(Debug)]
pub struct RunControl {
    stopping: AtomicBool,
    reason: Mutex<Option<StopReason>>,
    wake: EventFd,
    pause: Mutex<PauseState>,
    /// Signalled whenever `pause` changes.
    pause_changed: Condvar,
    /// The running vCPU threads, to kick out of `KVM_RUN` for a pause.
    vcpu_threads: Mutex<Vec<libc::pthread_t>>,
}

/// Whether the vCPUs should be parked, and how many are.
#[derive(Debug, Default)]
struct PauseState {
    requested: bool,
    parked: usize,
}

/// Why a pause did not take effect.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PauseError {
    /// The VM is stopping (or stopped): there is nothing left to pause.
    #[error("the VM is stopping")]
    Stopping,
    /// Some vCPU did not leave the guest in time.
    #[error("{parked} of {vcpus} vCPUs paused within {waited:?}")]
    Timeout {
        parked: usize,
        vcpus: usize,
        waited: Duration,
    },
}

impl RunControl {
    pub(crate) fn new() -> io::Result<Self> {
        Ok(Self {
            stopping: AtomicBool::new(false),
            reason: Mutex::new(None),
            wake: EventFd::new(EFD_NONBLOCK)?,
            pause: Mutex::new(PauseState::default()),
            pause_changed: Condvar::new(),
            vcpu_threads: Mutex::new(Vec::new()),
        })
    }

    fn pause_state(&self) -> std::sync::MutexGuard<'_, PauseState> {
        self.pause.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Parks every vCPU outside the guest, with its pending I/O completed, so that its
    /// state can be read or written; returns once all `vcpus` are parked. Devices are
    /// not touched (see `VmHandle::pause`).
    pub fn pause_vcpus(&self, vcpus: usize, limit: Duration) -> Result<(), PauseError> {
        if self.is_stopping() {
            return Err(PauseError::Stopping);
        }
        self.pause_state().requested = true;
        self.kick_vcpus();
        let deadline = Instant::now() + limit;
        let mut state = self.pause_state();
        while state.parked < vcpus {
            if self.is_stopping() {
                drop(state);
                self.resume_vcpus();
                return Err(PauseError::Stopping);
            }
            let now = Instant::now();
            if now >= deadline {
                let parked = state.parked;
                drop(state);
                self.resume_vcpus();
                return Err(PauseError::Timeout {
                    parked,
                    vcpus,
                    waited: limit,
                });
            }
            // Short waits: a stop does not signal this condition variable.
            let wait = (deadline - now).min(Duration::from_millis(20));
            state = self
                .pause_changed
                .wait_timeout(state, wait)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        Ok(())
    }

    /// Lets parked vCPUs enter the guest again.
    pub fn resume_vcpus(&self) {
        self.pause_state().requested = false;
        self.pause_changed.notify_all();
    }

    /// Whether the vCPUs were asked to park.
    pub(crate) fn pause_requested(&self) -> bool {
        self.pause_state().requested
    }

    /// Called by a vCPU thread that saw a pause request: stays parked until the VM is
    /// resumed or stops.
    pub(crate) fn park(&self) {
        let mut state = self.pause_state();
        state.parked += 1;
        self.pause_changed.notify_all();
        while state.requested && !self.is_stopping() {
            state = self
                .pause_changed
                .wait_timeout(state, Duration::from_millis(50))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        state.parked -= 1;
        self.pause_changed.notify_all();
    }

    pub(crate) fn set_vcpu_threads(&self, threads: Vec<libc::pthread_t>) {
        *self.vcpu_threads.lock().unwrap_or_else(|p| p.into_inner()) = threads;
    }

    fn kick_vcpus(&self) {
        for &thread in self.vcpu_threads.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            // SAFETY: the ids are of vCPU threads that `Vm::run` joins only after the
            // list is cleared, so each names a live (or joinable) thread.
            unsafe { libc::pthread_kill(thread, kick_signal()) };
        }
    }

    /// Asks the VM to stop for `reason`; the first reason given is kept.
    /// Safe to call from any thread, any number of times.
    pub fn request_stop(&self, reason: StopReason) {
        {
            let mut slot = self.reason.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert(reason);
        }
        self.stopping.store(true, Ordering::SeqCst);
        self.wake();
        self.pause_changed.notify_all();
    }

    /// Marks the VM as stopping without giving a reason (a vCPU failed; its error
    /// is what `Vm::run` reports).
    pub(crate) fn begin_stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.pause_changed.notify_all();
    }

    /// Whether a stop was requested.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// The reason the VM stops, once one was given.
    pub fn reason(&self) -> Option<StopReason> {
        *self.reason.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn wake(&self) {
        // Failure means the counter is saturated: the waiter is woken anyway.
        let _ = self.wake.write(1);
    }

    /// Blocks until something asks the VM to stop (or a vCPU thread ends), or until
    /// `deadline`, which stops it with [`StopReason::Timeout`].
    pub(crate) fn wait(&self, signals: &SignalRegistration, deadline: Option<Instant>) {
        let mut pfd = libc::pollfd {
            fd: self.wake.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        loop {
            if let Some(signal) = signals.pending_signal() {
                self.request_stop(StopReason::Signal(signal));
            }
            if self.is_stopping() {
                return;
            }
            let timeout = match deadline {
                Some(at) => {
                    let left = at.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        self.request_stop(StopReason::Timeout);
                        continue;
                    }
                    // Rounded up, so the deadline is passed when poll returns.
                    i32::try_from(left.as_millis() + 1).unwrap_or(i32::MAX)
                }
                None => -1,
            };
            // SAFETY: one valid pollfd, and its count.
            let ret = unsafe { libc::poll(&mut pfd, 1, timeout) };
            if ret > 0 {
                let _ = self.wake.read();
            }
            // Woken, or EINTR: look again at what happened.
        }
    }
}

// ----- SIGINT / SIGTERM ------------------------------------------------------------

/// Running VMs' wake eventfds, for the async-signal-safe handler (which may only
/// load atomics and call `write`). -1 marks a free slot.
const MAX_RUNNING_VMS: usize = 64;
static STOP_FDS: [AtomicI32; MAX_RUNNING_VMS] = [const { AtomicI32::new(-1) }; MAX_RUNNING_VMS];
/// The last SIGINT/SIGTERM received, and how many were received in all.
static LAST_SIGNAL: AtomicI32 = AtomicI32::new(0);
static SIGNAL_COUNT: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_stop_signal(num: c_int, _: *mut siginfo_t, _: *mut c_void) {
    LAST_SIGNAL.store(num, Ordering::SeqCst);
    SIGNAL_COUNT.fetch_add(1, Ordering::SeqCst);
    let one = 1u64.to_ne_bytes();
    for slot in &STOP_FDS {
        let fd = slot.load(Ordering::SeqCst);
        if fd >= 0 {
            // SAFETY: write(2) is async-signal-safe; the buffer is 8 valid bytes.
            unsafe { libc::write(fd, one.as_ptr().cast(), one.len()) };
        }
    }
}

/// Makes SIGINT and SIGTERM stop every running VM cleanly (each `Vm::run` returns
/// with [`StopReason::Signal`]) instead of killing the process. Call once, as early as
/// possible: a signal received before is not seen, and one received after, while the
/// VM is still being built, is seen by [`SignalMark::pending`] and by `Vm::run` (see
/// [`crate::vm::Vm::stop_on_signals_since`]).
pub fn install_stop_signal_handlers() -> io::Result<()> {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        register_signal_handler(signal, on_stop_signal).map_err(io::Error::from)?;
    }
    Ok(())
}

/// A point in the stop signals (SIGINT, SIGTERM) this process received through the
/// handlers of [`install_stop_signal_handlers`]: [`SignalMark::pending`] tells whether
/// one arrived after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignalMark(u64);

impl SignalMark {
    /// Before any signal: every stop signal since the handlers were installed counts.
    pub const START: SignalMark = SignalMark(0);

    /// Now: only the signals from here on count.
    pub fn now() -> SignalMark {
        SignalMark(SIGNAL_COUNT.load(Ordering::SeqCst))
    }

    /// The last stop signal received after this mark, if any.
    pub fn pending(self) -> Option<i32> {
        (SIGNAL_COUNT.load(Ordering::SeqCst) > self.0).then(|| LAST_SIGNAL.load(Ordering::SeqCst))
    }
}

/// A running VM's entry in [`STOP_FDS`]; removed on drop.
pub(crate) struct SignalRegistration {
    slot: Option<usize>,
    /// Only signals after this mark stop the VM.
    since: SignalMark,
}

impl SignalRegistration {
    /// Registers `control` so that stop signals after `since` wake it. With every slot
    /// taken the VM still runs; it just cannot be stopped by a signal.
    pub(crate) fn new(control: &RunControl, since: SignalMark) -> Self {
        let fd = control.wake.as_raw_fd();
        let slot = STOP_FDS.iter().position(|slot| {
            slot.compare_exchange(-1, fd, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        });
        Self { slot, since }
    }

    /// A stop signal received after the mark, if any.
    pub(crate) fn pending_signal(&self) -> Option<i32> {
        self.since.pending()
    }
}

impl Drop for SignalRegistration {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            STOP_FDS[i].store(-1, Ordering::SeqCst);
        }
    }
}

// ----- kicking vCPU threads --------------------------------------------------------

thread_local! {
    /// This vCPU thread's `kvm_run.immediate_exit`, for the kick handler.
    static IMMEDIATE_EXIT: Cell<*mut u8> = const { Cell::new(std::ptr::null_mut()) };
}

/// The signal that kicks a vCPU thread out of `KVM_RUN`.
pub(crate) fn kick_signal() -> c_int {
    SIGRTMIN()
}

extern "C" fn on_kick(_: c_int, _: *mut siginfo_t, _: *mut c_void) {
    let flag = IMMEDIATE_EXIT.with(Cell::get);
    if !flag.is_null() {
        // SAFETY: the pointer is this thread's mapped kvm_run, set by
        // `set_immediate_exit_target` for as long as the vCPU lives on this thread.
        unsafe { std::ptr::write_volatile(flag, 1) };
    }
}

/// Installs the kick handler (idempotent).
pub(crate) fn install_kick_handler() -> io::Result<()> {
    register_signal_handler(kick_signal(), on_kick).map_err(io::Error::from)
}

/// Points this thread's kick handler at its vCPU's `immediate_exit` (null to clear).
pub(crate) fn set_immediate_exit_target(flag: *mut u8) {
    IMMEDIATE_EXIT.with(|cell| cell.set(flag));
}
