//! Seccomp per thread role: a system call outside a role's list is stopped under
//! `enforce` (SIGSYS: vmc names the call and the role on stderr and exits 159), and
//! named once and let through under `log`. A filter is for the life of a process, so
//! each case runs in a child: this test binary, run again with the case in its
//! environment.

use std::process::Command;

use vmc_runtime::confine::{self, Role, SeccompMode, EXIT_SECCOMP};

const CASE: &str = "VMC_CONFINE_CASE";

/// In the child: a `net` thread calls getppid (not on its list) twice, and prints what
/// it got.
fn child(mode: SeccompMode) {
    confine::configure(mode).unwrap();
    let got = std::thread::spawn(|| {
        confine::enter(Role::Net).unwrap();
        // SAFETY: getppid has no arguments and cannot fail.
        let first = unsafe { libc::getppid() };
        let second = unsafe { libc::getppid() };
        (first, second)
    })
    .join()
    .unwrap();
    println!("getppid {} {}", got.0, got.1);
    std::process::exit(0);
}

/// Runs `test` again in a child with `mode`; returns (exit code, stdout, stderr).
fn run_child(test: &str, mode: &str) -> (Option<i32>, String, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CASE, mode)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn enforce_stops_a_call_outside_the_role_naming_it() {
    if std::env::var(CASE).as_deref() == Ok("enforce") {
        child(SeccompMode::Enforce);
    }
    let (code, out, err) = run_child("enforce_stops_a_call_outside_the_role_naming_it", "enforce");
    assert_eq!(code, Some(EXIT_SECCOMP), "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        err.contains(
            "vmc: seccomp: a net thread called getppid (system call 110), which its role does not allow; vmc stops"
        ),
        "{err}"
    );
    assert!(!out.contains("getppid "), "the call went through: {out}");
}

#[test]
fn log_names_a_call_outside_the_role_once_and_lets_it_through() {
    if std::env::var(CASE).as_deref() == Ok("log") {
        child(SeccompMode::Log);
    }
    let (code, out, err) = run_child("log_names_a_call_outside_the_role_once_and_lets_it_through", "log");
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    let line = "vmc: seccomp (log): a net thread called getppid (system call 110), which its role does not allow";
    assert_eq!(err.matches(line).count(), 1, "{err}");
    // The call was made for real: the child's parent is this process.
    let me = std::process::id();
    assert!(out.contains(&format!("getppid {me} {me}")), "{out}");
}

#[test]
fn off_installs_nothing() {
    if std::env::var(CASE).as_deref() == Ok("off") {
        child(SeccompMode::Off);
    }
    let (code, out, err) = run_child("off_installs_nothing", "off");
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert!(!err.contains("seccomp"), "{err}");
}

#[test]
fn every_role_allows_what_every_thread_needs_and_not_what_none_does() {
    for role in Role::ALL {
        let allowed = role.allowed();
        for needed in [
            syscalls::Sysno::futex,
            syscalls::Sysno::exit,
            syscalls::Sysno::rt_sigreturn,
        ] {
            assert!(allowed.contains(&needed), "{} lacks {needed}", role.name());
        }
        // Nothing of vmc's starts programs, traces, or loads kernel code.
        for never in [
            syscalls::Sysno::execve,
            syscalls::Sysno::execveat,
            syscalls::Sysno::ptrace,
            syscalls::Sysno::init_module,
            syscalls::Sysno::finit_module,
            syscalls::Sysno::bpf,
            syscalls::Sysno::mount,
            syscalls::Sysno::setuid,
            syscalls::Sysno::kexec_load,
        ] {
            assert!(!allowed.contains(&never), "{} allows {never}", role.name());
        }
    }
}

/// The README says how many system calls each role allows: it stays true.
#[test]
fn the_readme_counts_each_roles_system_calls() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    for role in Role::ALL {
        let line = format!("| `{}` | {} |", role.name(), role.allowed().len());
        assert!(readme.contains(&line), "README lacks the line starting `{line}`");
    }
}
