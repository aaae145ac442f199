//! `vmc run` stopped by SIGTERM while its network device is busy: a clean exit (143),
//! and the administrator's persistent TAP exactly as it was before the run.
//!
//! The self-test guest sends one UDP flow and no more (at most 65,507 bytes: here 65
//! frames of 1,000 bytes, on `linux-5.15`, which has no USO), so it cannot keep its
//! transmit queue busy; the test takes what it can: the guest sends its flow, then waits
//! to receive, and the host floods it with datagrams, so the device's worker is moving
//! frames (and returning buffers) when the signal comes.
//!
//! Needs root and /dev/kvm: skipped with a reason by hand without them, failed under CI.

#[path = "../runtime/tests/common/mod.rs"]
mod common;
mod support;

use std::net::UdpSocket;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::NetNs;
use support::vmm::Vmm;
use support::{require, stderr, vmc, Scratch};
use vmc_runtime::host::tap_offload_features;

const TAP: &str = "vmc-st0";
const HOST_MAC: &str = "02:00:00:00:00:01";
const GUEST_MAC: &str = "52:54:00:12:34:56";
const SEGMENTS: usize = 65;
const MSS: usize = 1000;

/// What the kernel shows of the TAP that vmc could change, as text.
fn observe(ns: &NetNs) -> String {
    let flags = ns.exec(&["cat", &format!("/sys/class/net/{TAP}/tun_flags")]);
    let link = ns.ip(&["-d", "link", "show", "dev", TAP]);
    let features = ns
        .run(|| tap_offload_features(TAP))
        .unwrap_or_else(|error| panic!("offload features: {error}"));
    let mut text = format!("tun_flags {flags}{link}{features:#?}\n");
    let ethtool = Command::new("ethtool").arg("--version").output();
    if ethtool.is_ok_and(|out| out.status.success()) {
        text.push_str(&ns.exec(&["ethtool", "-k", TAP]));
    }
    text
}

/// The self-test spec, compiled for `linux-5.15`: the guest sends SEGMENTS frames, then
/// waits (practically for ever) to receive.
fn abi(s: &Scratch) -> String {
    let o = vmc(&["selftest-guest", "-o", &s.path("selftest.elf").display().to_string()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let spec = std::fs::read_to_string(support::repo().join("specs/selftest.kdl"))
        .unwrap()
        .replace("guest/selftest.elf", "selftest.elf")
        .replace(
            "selftest.dmac=02:00:00:00:00:01",
            &format!(
                "selftest.dmac={HOST_MAC} selftest.segments={SEGMENTS} selftest.mss={MSS} \
                 selftest.rx=4000000000 selftest.rxwait=4000000000"
            ),
        );
    let spec_path = s.write("selftest.kdl", spec);
    let abi = s.path("selftest.abi").display().to_string();
    let o = vmc(&["compile", &spec_path, "--platform", "linux-5.15", "-o", &abi]);
    assert!(o.status.success(), "{}", stderr(&o));
    abi
}

#[test]
fn sigterm_while_frames_flow_exits_143_and_leaves_the_tap_as_found() {
    require!(support::host_access());
    require!(support::root());
    let s = Scratch::new("tap-faults-sigterm");
    let abi = abi(&s);
    let ns = NetNs::create();
    ns.exec(&[
        "sysctl",
        "-qw",
        "net.ipv6.conf.default.disable_ipv6=1",
        "net.ipv6.conf.all.disable_ipv6=1",
    ]);
    // An administrator's TAP without vnet_hdr: vmc must turn it on, and then off again.
    ns.ip(&["tuntap", "add", "dev", TAP, "mode", "tap"]);
    ns.ip(&["link", "set", TAP, "address", HOST_MAC]);
    ns.ip(&["addr", "add", "10.0.2.2/24", "dev", TAP]);
    ns.ip(&["link", "set", TAP, "up"]);
    let neigh = ["neigh", "replace", "10.0.2.15", "lladdr", GUEST_MAC, "dev", TAP];
    ns.ip(&[&neigh[..], &["nud", "permanent"]].concat());
    let before = observe(&ns);
    let receiver = ns.run(|| UdpSocket::bind("10.0.2.2:5001").expect("bind receiver"));
    receiver.set_read_timeout(Some(Duration::from_secs(60))).unwrap();

    // `ip netns exec` execs vmc itself: the child's pid is vmc's.
    let mut vmm = Vmm::start(ns.name(), &[&abi]);

    // The guest's flow arrives: the device transmits.
    let mut buf = [0u8; 2048];
    for i in 0..SEGMENTS {
        if let Err(error) = receiver.recv(&mut buf) {
            panic!("datagram {i} of {SEGMENTS}: {error}\n{}", vmm.output());
        }
    }
    vmm.wait_for("selftest: rx ready", Duration::from_secs(60));
    let during = observe(&ns);
    assert_ne!(
        during, before,
        "vmc's attach changed nothing visible: the test tests nothing"
    );

    // Flood the guest until the VMM is gone.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let sender = ns.run(|| UdpSocket::bind("10.0.2.2:5002").expect("bind sender"));
    let flood = {
        let (stop, sent) = (stop.clone(), sent.clone());
        std::thread::spawn(move || {
            let payload = [0x5a_u8; 1400];
            while !stop.load(Ordering::Relaxed) {
                if sender.send_to(&payload, "10.0.2.15:5000").is_ok() {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let pid = vmm.child.id();
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    assert_eq!(comm.trim(), "vmc", "the child is vmc itself");
    // SAFETY: kill(2) on our own child's pid, which it still is (not yet waited for).
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) }, 0);

    // Within 20 s of SIGTERM, or the test fails.
    let code = vmm.wait_within(Duration::from_secs(20));
    stop.store(true, Ordering::Relaxed);
    flood.join().unwrap();
    let out = vmm.output();
    assert!(sent.load(Ordering::Relaxed) > 100, "the flood sent little: {out}");
    assert_eq!(code, Some(143), "{out}");
    assert_eq!(observe(&ns), before, "the TAP is not as found:\n{out}");
}
