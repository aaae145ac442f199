//! The one skip-or-fail policy for tests that need what a machine may lack (root, /dev/kvm,
//! a TAP, QEMU): run by hand, such a test prints `SKIPPED <test>: <reason>` and returns;
//! under CI (`CI=true`, where all of it must be there) the same absence fails the test.
//!
//! The test's name is the enclosing function's, so no test repeats it. A check says what
//! is missing: a `Result` whose `Err` names it (`kvm()`, `root()`, `has(what, flag)`
//! here; `support::host_access()`, `support::qemu()` and others next to their tests).
//!
//! ```ignore
//! #[test]
//! fn a_tap_we_created_disappears_when_dropped() {
//!     require!(common::root());
//!     …
//! }
//! ```
//!
//! Every test tree includes this file (`tests/support`, `runtime/tests/common`,
//! `runtime/tests/vm_support.rs`, `fuzz/tests`) and re-exports its macros.
#![allow(dead_code, unused_macros, unused_imports)] // each test binary uses its own part

/// The name of the enclosing function (closures inside it do not count): in a test, the
/// test's name.
macro_rules! test_name {
    () => {{
        fn here() {}
        let path = ::std::any::type_name_of_val(&here);
        let path = path.strip_suffix("::here").unwrap_or(path);
        path.rsplit("::").find(|part| *part != "{{closure}}").unwrap_or(path)
    }};
}

/// `true` when `$check` (a `Result<T, String>`) is `Ok`; otherwise skips, printing
/// `SKIPPED <test>: <reason>` and giving `false`, or under `CI=true` fails the test.
/// (Self-contained, like [`require`]: a macro here cannot name another by a path that
/// holds in every test tree.)
macro_rules! available {
    ($check:expr) => {
        match $check {
            Ok(_) => true,
            Err(missing) => {
                let test = {
                    fn here() {}
                    let path = ::std::any::type_name_of_val(&here);
                    let path = path.strip_suffix("::here").unwrap_or(path);
                    path.rsplit("::").find(|part| *part != "{{closure}}").unwrap_or(path)
                };
                if ::std::env::var("CI").as_deref() == Ok("true") {
                    panic!("{test}: {missing}; CI=true, where it must be available, so this fails rather than skips");
                }
                // Straight to stderr: the harness captures `eprintln!` of passing tests,
                // and a skip must be seen.
                use ::std::io::Write as _;
                let _ = writeln!(::std::io::stderr(), "SKIPPED {test}: {missing}");
                false
            }
        }
    };
}

/// The value of `$check` (a `Result<T, String>`) when it is `Ok`; otherwise returns from
/// the calling test: skipped by hand, failed under `CI=true` (see [`available`]).
macro_rules! require {
    ($check:expr) => {
        match $check {
            Ok(value) => value,
            Err(missing) => {
                let test = {
                    fn here() {}
                    let path = ::std::any::type_name_of_val(&here);
                    let path = path.strip_suffix("::here").unwrap_or(path);
                    path.rsplit("::").find(|part| *part != "{{closure}}").unwrap_or(path)
                };
                if ::std::env::var("CI").as_deref() == Ok("true") {
                    panic!("{test}: {missing}; CI=true, where it must be available, so this fails rather than skips");
                }
                use ::std::io::Write as _;
                let _ = writeln!(::std::io::stderr(), "SKIPPED {test}: {missing}");
                return;
            }
        }
    };
}

pub(crate) use {available, require, test_name};

/// The check for something detected by a flag: `what` is missing unless `present`.
pub fn has(what: &str, present: bool) -> Result<(), String> {
    if present {
        Ok(())
    } else {
        Err(format!("{what} is not available on this host"))
    }
}

/// `/dev/kvm` can be opened read-write.
pub fn kvm() -> Result<(), String> {
    match std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        Ok(_) => Ok(()),
        Err(error) => Err(format!("cannot open /dev/kvm ({error})")),
    }
}

/// Root: the effective uid, read from /proc (the tests need no unsafe code for it).
pub fn effective_uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).and_then(|u| u.parse().ok()))
        })
        .unwrap_or(u32::MAX)
}

/// Root (for TAPs and network namespaces), `/dev/net/tun` and the `ip` command.
pub fn root() -> Result<(), String> {
    if effective_uid() != 0 {
        Err("needs root (CAP_NET_ADMIN, network namespaces)".to_string())
    } else if !std::path::Path::new("/dev/net/tun").exists() {
        Err("/dev/net/tun is missing (tun module not loaded)".to_string())
    } else if !std::process::Command::new("ip")
        .arg("-V")
        .output()
        .is_ok_and(|out| out.status.success())
    {
        Err("the `ip` command (iproute2) is missing".to_string())
    } else {
        Ok(())
    }
}

/// Every check that fails, joined: `Ok` only when all pass.
pub fn all(checks: impl IntoIterator<Item = Result<(), String>>) -> Result<(), String> {
    let missing: Vec<String> = checks.into_iter().filter_map(Result::err).collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing.join("; "))
    }
}
