//! Confinement of `vmc run` once the VM is built: a seccomp filter per thread role,
//! and dropping root.
//!
//! **Roles.** Each of vmc's threads runs under the allowlist of its role, installed by
//! the thread itself when it starts ([`enter`]); a thread it creates inherits it (and
//! adds its own, so a thread is held to both):
//!
//! - `main`: waits for the VM to stop, then takes it down (joins threads, closes file
//!   descriptors, removes the TAP it created and the control socket);
//! - `vcpu`: runs `KVM_RUN` and the devices' registers (serial output, eventfds), and
//!   starts a network device's worker when the guest's driver does;
//! - `net`: a virtio-net device's worker: the TAP and the queues' eventfds;
//! - `api`: the control socket: pause, resume, snapshot files, migration streams.
//!
//! **Modes** ([`SeccompMode`]). `enforce`: a system call outside the role's list is
//! stopped: the thread gets SIGSYS, vmc says which call and which thread on stderr and
//! exits with [`EXIT_SECCOMP`] (128 + SIGSYS). `log`: the same line, once per call and
//! role, and the call goes on (vmc makes it itself from the signal handler, through one
//! instruction the filter lets through in this mode only). `off`: no filter.
//!
//! **Dropping root** ([`drop_privileges`]): after /dev/kvm, the TAPs and the control
//! socket are open, the process takes the given user and group, no supplementary
//! groups, and no capabilities.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::OnceLock;

use seccompiler::{sock_filter, BpfProgram, SeccompAction, SeccompFilter, TargetArch};
use syscalls::Sysno;

/// The exit status after a system call a role does not allow, under `enforce`: as if
/// killed by SIGSYS.
pub const EXIT_SECCOMP: i32 = 128 + libc::SIGSYS;

/// What a filter does with a system call outside its role's list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SeccompMode {
    /// Stop it (SIGSYS), name it, exit.
    #[default]
    Enforce,
    /// Name it, let it go on.
    Log,
    /// No filters at all.
    Off,
}

impl std::str::FromStr for SeccompMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "enforce" => Ok(SeccompMode::Enforce),
            "log" => Ok(SeccompMode::Log),
            "off" => Ok(SeccompMode::Off),
            other => Err(format!("`{other}` is not a seccomp mode (enforce, log, off)")),
        }
    }
}

/// A kind of vmc thread, with its own allowlist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Main,
    Vcpu,
    Net,
    Api,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Main, Role::Vcpu, Role::Net, Role::Api];

    pub fn name(self) -> &'static str {
        match self {
            Role::Main => "main",
            Role::Vcpu => "vcpu",
            Role::Net => "net",
            Role::Api => "api",
        }
    }

    /// The system calls the role may make.
    #[rustfmt::skip]
    pub fn allowed(self) -> Vec<Sysno> {
        use Sysno::*;
        // Every thread: memory for Rust's allocator, locks, signals (the kick and stop
        // handlers return through rt_sigreturn), time, writing a message, ending.
        let mut calls = vec![
            brk, mmap, munmap, mremap, madvise, mprotect, futex, rt_sigreturn, rt_sigprocmask,
            sigaltstack, clock_gettime, clock_nanosleep, nanosleep, sched_yield, getpid, gettid,
            write, writev, close, exit, exit_group, restart_syscall,
        ];
        // Starting a thread (the standard library's spawn) that takes a role of its own
        // (a filter can only narrow what is allowed, never widen it).
        let spawn = [clone, clone3, set_robust_list, rseq, sched_getaffinity, prctl, getrandom, seccomp];
        // Writing a file safely (see host::files): the exit status, a snapshot.
        let files = [
            openat, fstat, statx, newfstatat, lseek, fsync, fdatasync, fchmod, fchown, rename,
            renameat, renameat2, unlink, unlinkat, readlink, getuid, getgid, geteuid, getcwd,
        ];
        calls.extend(match self {
            Role::Main => {
                let mut v = vec![
                    // Waiting, being woken, kicking and joining the vCPUs.
                    poll, ppoll, read, tgkill, rt_sigaction,
                    // Taking the VM down: the TAP (ioctl, and a netlink request to
                    // remove it), the control socket, the counters.
                    ioctl, socket, bind, sendto, recvfrom, getsockname, fcntl,
                    // The figures of --stats: guest pages resident, peak RSS.
                    mincore, getrusage,
                ];
                v.extend(files);
                v
            }
            Role::Vcpu => {
                let mut v = vec![
                    ioctl, read, poll, ppoll, epoll_create1, epoll_ctl, eventfd2, dup, fcntl,
                    openat, fstat, statx, newfstatat, tgkill,
                ];
                v.extend(spawn);
                // A network device's worker starts on the vCPU thread whose register
                // write started the device, and is held to this list too.
                v.extend(Role::Net.allowed());
                v
            }
            Role::Net => vec![epoll_wait, epoll_pwait, epoll_ctl, read, readv, ioctl, fcntl],
            Role::Api => {
                let mut v = vec![
                    // The control socket and its clients.
                    accept, accept4, poll, ppoll, read, recvfrom, sendto, shutdown, setsockopt,
                    getsockopt, fcntl,
                    // Migration streams: connecting and listening.
                    socket, connect, bind, listen, getsockname, getpeername,
                    // Pausing and saving the VM; restarting a device's worker, which is
                    // then held to this list too.
                    ioctl, tgkill, epoll_create1, epoll_ctl, eventfd2, dup, linkat,
                ];
                v.extend(files);
                v.extend(spawn);
                v.extend(Role::Net.allowed());
                v
            }
        });
        calls.sort_by_key(|s| s.id());
        calls.dedup();
        calls
    }
}

/// The mode, once [`configure`] ran: 0 off, 1 enforce, 2 log.
static MODE: AtomicU8 = AtomicU8::new(0);
/// Each role's compiled filter.
static FILTERS: OnceLock<BTreeMap<Role, BpfProgram>> = OnceLock::new();
/// Which calls `log` mode already named (by number), per role, so each is named once.
static LOGGED: [[AtomicU64; 8]; 4] = [const { [const { AtomicU64::new(0) }; 8] }; 4];

thread_local! {
    /// This thread's role, for the SIGSYS handler's message.
    static THREAD_ROLE: std::cell::Cell<Option<Role>> = const { std::cell::Cell::new(None) };
}

/// Why confinement could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    #[error("cannot build the seccomp filter of the {role} role: {why}")]
    Filter { role: &'static str, why: String },
    #[error("cannot install the seccomp filter of the {role} role: {why}")]
    Install { role: &'static str, why: String },
    #[error("cannot install the SIGSYS handler: {0}")]
    Handler(std::io::Error),
    #[error("cannot drop to user {uid} and group {gid}: {step} failed: {source}")]
    Drop {
        uid: u32,
        gid: u32,
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("dropped to user {uid}, but the process still has capabilities ({caps:#x})")]
    CapabilitiesLeft { uid: u32, caps: u64 },
}

// The one system call instruction `log` mode lets through unfiltered: the SIGSYS
// handler makes the call it caught from here. Arguments as for a C function
// (nr, a0, …, a5), the sixth on the stack.
std::arch::global_asm!(
    ".pushsection .text.vmc_seccomp_call,\"ax\",@progbits",
    ".globl vmc_seccomp_call",
    "vmc_seccomp_call:",
    "mov rax, rdi",
    "mov rdi, rsi",
    "mov rsi, rdx",
    "mov rdx, rcx",
    "mov r10, r8",
    "mov r8, r9",
    "mov r9, [rsp + 8]",
    "syscall",
    ".globl vmc_seccomp_call_end",
    "vmc_seccomp_call_end:",
    "ret",
    ".popsection",
);

extern "C" {
    fn vmc_seccomp_call(nr: i64, a0: i64, a1: i64, a2: i64, a3: i64, a4: i64, a5: i64) -> i64;
    /// The address just after the `syscall` instruction above: what the kernel reports
    /// as the instruction pointer of a call made there.
    static vmc_seccomp_call_end: u8;
}

/// Compiles every role's filter for `mode` and installs the SIGSYS handler; threads then
/// take their filter with [`enter`]. Call once, before any thread of the VM starts.
pub fn configure(mode: SeccompMode) -> Result<(), ConfineError> {
    if mode == SeccompMode::Off {
        MODE.store(0, Ordering::SeqCst);
        return Ok(());
    }
    let mut filters = BTreeMap::new();
    for role in Role::ALL {
        filters.insert(role, compile(role, mode)?);
    }
    let _ = FILTERS.set(filters);
    install_sigsys_handler().map_err(ConfineError::Handler)?;
    MODE.store(if mode == SeccompMode::Enforce { 1 } else { 2 }, Ordering::SeqCst);
    Ok(())
}

/// The mode [`configure`] set.
pub fn mode() -> SeccompMode {
    match MODE.load(Ordering::SeqCst) {
        1 => SeccompMode::Enforce,
        2 => SeccompMode::Log,
        _ => SeccompMode::Off,
    }
}

fn compile(role: Role, mode: SeccompMode) -> Result<BpfProgram, ConfineError> {
    let fail = |why: String| ConfineError::Filter { role: role.name(), why };
    let rules = role
        .allowed()
        .into_iter()
        .map(|s| (i64::from(s.id()), Vec::new()))
        .collect();
    let filter = SeccompFilter::new(rules, SeccompAction::Trap, SeccompAction::Allow, TargetArch::x86_64)
        .map_err(|e| fail(e.to_string()))?;
    let mut program: BpfProgram = filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| fail(e.to_string()))?;
    if mode == SeccompMode::Log {
        // In front: a call made from the handler's own instruction is allowed (it was
        // named already). Only in `log` mode: under `enforce` no address is trusted.
        // Only the address of the symbol is taken.
        let at = std::ptr::addr_of!(vmc_seccomp_call_end) as u64;
        const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
        const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
        const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
        // seccomp_data: nr (4), arch (4), instruction_pointer (8, little-endian).
        let prefix = [
            sock_filter {
                code: LD_W_ABS,
                jt: 0,
                jf: 0,
                k: 8,
            },
            sock_filter {
                code: JEQ_K,
                jt: 0,
                jf: 3,
                k: at as u32,
            },
            sock_filter {
                code: LD_W_ABS,
                jt: 0,
                jf: 0,
                k: 12,
            },
            sock_filter {
                code: JEQ_K,
                jt: 0,
                jf: 1,
                k: (at >> 32) as u32,
            },
            sock_filter {
                code: RET_K,
                jt: 0,
                jf: 0,
                k: libc::SECCOMP_RET_ALLOW,
            },
        ];
        program.splice(0..0, prefix);
    }
    Ok(program)
}

/// Puts the calling thread under `role`'s filter (nothing when seccomp is off).
pub fn enter(role: Role) -> Result<(), ConfineError> {
    if mode() == SeccompMode::Off {
        return Ok(());
    }
    THREAD_ROLE.with(|r| r.set(Some(role)));
    let Some(program) = FILTERS.get().and_then(|f| f.get(&role)) else {
        return Ok(());
    };
    seccompiler::apply_filter(program).map_err(|e| ConfineError::Install {
        role: role.name(),
        why: e.to_string(),
    })
}

fn install_sigsys_handler() -> std::io::Result<()> {
    // SAFETY: a zeroed sigaction with a valid handler and flags; the handler only calls
    // async-signal-safe functions.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigsys as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(libc::SIGSYS, &action, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Writes `parts` to stderr with one `write` per part; async-signal-safe.
fn say(parts: &[&[u8]]) {
    for part in parts {
        // SAFETY: write(2) on fd 2 with a valid buffer.
        unsafe { libc::write(2, part.as_ptr().cast(), part.len()) };
    }
}

/// `n` in decimal, into `buf`; returns the digits.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

extern "C" fn on_sigsys(_: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    // siginfo for SIGSYS (asm-generic/siginfo.h): the call's number is an int at 24.
    // SAFETY: the kernel passes a valid siginfo for SIGSYS.
    let nr = unsafe { *(info.cast::<u8>().add(24).cast::<i32>()) };
    let name = Sysno::new(nr as usize).map_or("an unknown system call", |s| s.name());
    // A thread that has not taken a role of its own is held to its creator's.
    let role = THREAD_ROLE.with(|r| r.get()).map_or("new", Role::name);
    let mut digits = [0u8; 20];
    let number = decimal(nr.max(0) as u64, &mut digits);
    let log = mode() == SeccompMode::Log;
    if log {
        let role_index = THREAD_ROLE.with(|r| r.get()).map_or(0, |r| r as usize);
        let (word, bit) = ((nr.max(0) as usize / 64) % 8, nr.max(0) as u64 % 64);
        let seen = LOGGED[role_index][word].fetch_or(1 << bit, Ordering::Relaxed) & (1 << bit) != 0;
        if !seen {
            say(&[
                b"vmc: seccomp (log): a ",
                role.as_bytes(),
                b" thread called ",
                name.as_bytes(),
                b" (system call ",
                number,
                b"), which its role does not allow; allowed in log mode\n",
            ]);
        }
        // Make the call, and hand its result back as if it had run.
        // SAFETY: the kernel passes the interrupted thread's ucontext.
        unsafe {
            let uc = &mut *context.cast::<libc::ucontext_t>();
            let g = &mut uc.uc_mcontext.gregs;
            let arg = |r: i32| g[r as usize];
            let result = vmc_seccomp_call(
                i64::from(nr),
                arg(libc::REG_RDI),
                arg(libc::REG_RSI),
                arg(libc::REG_RDX),
                arg(libc::REG_R10),
                arg(libc::REG_R8),
                arg(libc::REG_R9),
            );
            g[libc::REG_RAX as usize] = result;
        }
        return;
    }
    say(&[
        b"vmc: seccomp: a ",
        role.as_bytes(),
        b" thread called ",
        name.as_bytes(),
        b" (system call ",
        number,
        b"), which its role does not allow; vmc stops (run with --seccomp log to let it through)\n",
    ]);
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(EXIT_SECCOMP) };
}

/// Takes user `uid` and group `gid` for good, with no supplementary groups and no
/// capabilities; refuses to go on if any capability is left.
pub fn drop_privileges(uid: u32, gid: u32) -> Result<(), ConfineError> {
    let step = |step: &'static str, ret: libc::c_int| {
        if ret == 0 {
            Ok(())
        } else {
            Err(ConfineError::Drop {
                uid,
                gid,
                step,
                source: std::io::Error::last_os_error(),
            })
        }
    };
    // SAFETY: plain system calls with valid arguments; glibc applies the id changes to
    // every thread of the process.
    unsafe {
        step("setgroups", libc::setgroups(0, std::ptr::null()))?;
        step("setresgid", libc::setresgid(gid, gid, gid))?;
        step("setresuid", libc::setresuid(uid, uid, uid))?;
        // No regaining anything through exec (set-user-ID files, file capabilities).
        step(
            "prctl(PR_SET_NO_NEW_PRIVS)",
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0),
        )?;
    }
    let caps = capabilities();
    if caps != 0 {
        return Err(ConfineError::CapabilitiesLeft { uid, caps });
    }
    Ok(())
}

/// The effective, permitted and inheritable capability sets, or-ed (from /proc).
pub fn capabilities() -> u64 {
    let status = std::fs::read_to_string("/proc/thread-self/status").unwrap_or_default();
    status
        .lines()
        .filter_map(|l| {
            let (key, value) = l.split_once(':')?;
            matches!(key, "CapEff" | "CapPrm" | "CapInh").then(|| u64::from_str_radix(value.trim(), 16).ok())?
        })
        .fold(0, |a, b| a | b)
}

/// A `--user` value: `UID[:GID]` (numbers; the group defaults to the user's number).
pub fn parse_user(s: &str) -> Result<(u32, u32), String> {
    let bad = || format!("`{s}` is not UID[:GID] (numbers, for example 65534:65534)");
    let (u, g) = s.split_once(':').unwrap_or((s, s));
    let uid = u.parse::<u32>().map_err(|_| bad())?;
    let gid = g.parse::<u32>().map_err(|_| bad())?;
    if uid == u32::MAX || gid == u32::MAX {
        return Err(bad());
    }
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_compiles_and_allows_what_all_threads_need() {
        for role in Role::ALL {
            for mode in [SeccompMode::Enforce, SeccompMode::Log] {
                compile(role, mode).unwrap();
            }
            assert!(role.allowed().contains(&Sysno::futex), "{}", role.name());
        }
    }

    #[test]
    fn users_parse() {
        assert_eq!(parse_user("65534:65534"), Ok((65534, 65534)));
        assert_eq!(parse_user("1000"), Ok((1000, 1000)));
        for bad in ["", "nobody", "1:", ":1", "-1", "4294967295", "1:2:3"] {
            assert!(parse_user(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn numbers_print_in_decimal() {
        let mut b = [0; 20];
        assert_eq!(decimal(0, &mut b), b"0");
        assert_eq!(decimal(435, &mut b), b"435");
    }
}
