//! Shared by the `host_*` tests, and with `#[path]` by the root tests and the self-test
//! guest's (selftest/tests): the skip-or-fail policy for privileged tests (see
//! `tests/support/skip.rs`), and a network namespace each test makes for itself.
#![allow(dead_code)] // each test binary uses its own part

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

// The root tests that include this file have skip.rs through their own support module
// too: two copies of a module without state, of which they use one.
#[allow(clippy::duplicate_mod)]
#[path = "../../../tests/support/skip.rs"]
mod skip;
#[allow(unused_imports)]
pub(crate) use skip::{all, available, has, kvm, require, root, test_name};

/// Runs a command and returns its stdout; panics with its stderr if it fails.
pub fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("cannot run {program}: {error}"));
    assert!(
        output.status.success(),
        "`{program} {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Makes every later `send` on `socket` a UDP GSO send: the kernel cuts the payload into
/// datagrams of `gso_size` bytes (`UDP_SEGMENT`, Linux 4.18+), or hands it whole to a
/// device that can segment it (a TAP with USO).
pub fn set_udp_segment(socket: &std::net::UdpSocket, gso_size: u16) {
    let size = libc::c_int::from(gso_size);
    // SAFETY: setsockopt reads one int from a valid pointer, on a socket we own.
    let ret = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_UDP,
            libc::UDP_SEGMENT,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(ret, 0, "UDP_SEGMENT: {}", std::io::Error::last_os_error());
}

/// A network namespace made for one test (`vmc-test-<pid>-<n>`), deleted on drop even if
/// the test fails, with everything in it.
pub struct NetNs {
    name: String,
}

static NETNS_SERIAL: AtomicU32 = AtomicU32::new(0);

impl NetNs {
    pub fn create() -> NetNs {
        let serial = NETNS_SERIAL.fetch_add(1, Ordering::Relaxed);
        let name = format!("vmc-test-{}-{serial}", std::process::id());
        run("ip", &["netns", "add", &name]);
        NetNs { name }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n <ns> ARGS…`, which must succeed.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// `ip -n <ns> ARGS…` succeeded.
    pub fn ip_succeeds(&self, args: &[&str]) -> bool {
        Command::new("ip")
            .args(["-n", &self.name])
            .args(args)
            .output()
            .is_ok_and(|out| out.status.success())
    }

    /// Runs a command inside the namespace (`ip netns exec`, which also mounts a /sys
    /// that shows the namespace's interfaces); returns its stdout.
    pub fn exec(&self, args: &[&str]) -> String {
        let mut all = vec!["netns", "exec", &self.name];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// The host end of a guest's link: a persistent TAP (so it can be set up before the
    /// VMM attaches to it) with the host's MAC and address, up, a permanent neighbour
    /// entry for the guest (which answers no ARP), and no IPv6 (its neighbour discovery
    /// and MLD frames would reach the guest too).
    pub fn guest_link(&self, tap: &str, host_mac: &str, host_cidr: &str, guest_ip: &str, guest_mac: &str) {
        self.exec(&[
            "sysctl",
            "-qw",
            "net.ipv6.conf.default.disable_ipv6=1",
            "net.ipv6.conf.all.disable_ipv6=1",
        ]);
        self.ip(&["tuntap", "add", "dev", tap, "mode", "tap", "vnet_hdr"]);
        self.ip(&["link", "set", tap, "address", host_mac]);
        self.ip(&["addr", "add", host_cidr, "dev", tap]);
        self.ip(&["link", "set", tap, "up"]);
        self.ip(&[
            "neigh",
            "replace",
            guest_ip,
            "lladdr",
            guest_mac,
            "dev",
            tap,
            "nud",
            "permanent",
        ]);
    }

    /// A counter of an interface in the namespace, from `/sys/class/net/<dev>/statistics`.
    pub fn counter(&self, device: &str, counter: &str) -> u64 {
        let path = format!("/sys/class/net/{device}/statistics/{counter}");
        let text = self.exec(&["cat", &path]);
        text.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{path} holds {text:?}, not a number"))
    }

    /// Runs `f` on a new thread that has joined the namespace. Network namespace
    /// membership is per thread, and whatever `f` creates there (a TAP, a socket) stays
    /// in the namespace wherever it is used afterwards.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.name);
        let thread = std::thread::spawn(move || {
            let namespace = File::open(&path).unwrap_or_else(|error| panic!("open {path}: {error}"));
            // SAFETY: setns on an fd we own; it changes only this thread's namespace.
            let ret = unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(ret, 0, "setns({path}): {}", std::io::Error::last_os_error());
            f()
        });
        match thread.join() {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let deleted = Command::new("ip").args(["netns", "del", &self.name]).output();
        if !deleted.is_ok_and(|out| out.status.success()) {
            eprintln!("warning: could not delete network namespace {}", self.name);
        }
    }
}

/// A fixed-seed generator (xorshift64): the same "random" inputs on every run, so a
/// failure names a reproducible case.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}
