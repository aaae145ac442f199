//! End to end: `vmc run` of the self-test guest on a TAP inside a network namespace made
//! for the test, for an ABI compiled for `linux-6.9` (USO negotiated) and one for
//! `linux-5.15` (no USO). Guest to host: one UDP flow of 3 segments arrives as 3
//! datagrams at a socket in the namespace, from one USO frame (6.9) or three frames
//! (5.15), as the TAP's rx_packets shows. Host to guest: a UDP_SEGMENT send arrives in
//! the guest as one UDP_L4 GSO frame when it negotiated GUEST_USO4, else as 3 frames.
//!
//! Needs root and /dev/kvm: skipped with a reason by hand without them, failed under CI.

#[path = "../runtime/tests/common/mod.rs"]
mod common;
mod support;

use std::net::UdpSocket;
use std::time::Duration;

use common::NetNs;
use support::vmm::Vmm;
use support::{require, stderr, vmc, Scratch};

const TAP: &str = "vmc-st0";
const HOST_MAC: &str = "02:00:00:00:00:01";
const GUEST_MAC: &str = "52:54:00:12:34:56";
const SEGMENTS: usize = 3;
const MSS: usize = 1000;

/// The self-test spec with a command line that also waits for `SEGMENTS` from the host.
fn abi_for(s: &Scratch, platform: &str) -> String {
    let o = vmc(&["selftest-guest", "-o", &s.path("selftest.elf").display().to_string()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let spec = std::fs::read_to_string(support::repo().join("specs/selftest.kdl"))
        .unwrap()
        .replace("guest/selftest.elf", "selftest.elf")
        .replace(
            "selftest.dmac=02:00:00:00:00:01",
            &format!("selftest.dmac={HOST_MAC} selftest.rx={SEGMENTS}"),
        );
    let spec_path = s.write(&format!("selftest-{platform}.kdl"), spec);
    let abi = s.path(&format!("selftest-{platform}.abi")).display().to_string();
    let o = vmc(&["compile", &spec_path, "--platform", platform, "-o", &abi]);
    assert!(o.status.success(), "{}", stderr(&o));
    abi
}

/// A persistent TAP in the namespace, addressed and with a static neighbour entry for
/// the guest, so traffic flows before and without ARP.
fn network(ns: &NetNs) {
    ns.guest_link(TAP, HOST_MAC, "10.0.2.2/24", "10.0.2.15", GUEST_MAC);
}

/// Sends `SEGMENTS` x `MSS` bytes to the guest in one `UDP_SEGMENT` send.
fn send_uso(ns: &NetNs) {
    ns.run(|| {
        let sock = UdpSocket::bind("10.0.2.2:5002").expect("bind sender");
        common::set_udp_segment(&sock, MSS as u16);
        let payload: Vec<u8> = (0..SEGMENTS * MSS).map(|i| (i % 251) as u8).collect();
        sock.send_to(&payload, "10.0.2.15:5000").expect("send to the guest");
    });
}

fn run_selftest(platform: &str, uso: bool) {
    let s = Scratch::new(&format!("e2e-{platform}"));
    let abi = abi_for(&s, platform);
    let ns = NetNs::create();
    network(&ns);
    let sock = ns.run(|| UdpSocket::bind("10.0.2.2:5001").expect("bind receiver"));
    sock.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let rx_before = ns.counter(TAP, "rx_packets");

    let mut vmm = Vmm::start(ns.name(), &[&abi]);

    // Guest -> host: the kernel delivers each segment as its own datagram.
    let mut buf = [0u8; 65536];
    for i in 0..SEGMENTS {
        let (n, from) = sock
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("datagram {i} of {SEGMENTS}: {e}"));
        assert_eq!(n, MSS, "datagram {i}");
        assert_eq!(from.to_string(), "10.0.2.15:5000");
        let expected: Vec<u8> = (0..MSS).map(|j| ((64 * i + j) % 256) as u8).collect();
        assert_eq!(&buf[..n], &expected[..], "payload of datagram {i}");
    }
    // Host -> guest, once the guest has posted its receive buffers.
    vmm.wait_for("selftest: rx ready", Duration::from_secs(60));
    send_uso(&ns);

    let code = vmm.wait_within(Duration::from_secs(120));
    let out = &vmm.output();
    assert_eq!(code, Some(0), "{out}");
    let line = |prefix: &str| -> String {
        out.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` line in:\n{out}"))
            .to_string()
    };
    let bits = |l: String| -> Vec<u32> { l.split_whitespace().skip(2).map(|b| b.parse().unwrap()).collect() };
    let offered = bits(line("selftest: offered "));
    let negotiated = bits(line("selftest: negotiated "));
    // The guest is offered exactly the ABI's device-features.
    let doc = vmc(&["show", "--json", &abi]);
    let doc: serde_json::Value = serde_json::from_slice(&doc.stdout).unwrap();
    let abi_bits: Vec<u32> = doc["abi"]["devices"][0]["device-features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_u64().unwrap() as u32)
        .collect();
    assert_eq!(offered, abi_bits, "{out}");
    assert_eq!(negotiated.contains(&56), uso, "HOST_USO negotiated: {out}");
    assert_eq!(negotiated.contains(&54), uso, "GUEST_USO4 negotiated: {out}");
    let frames = if uso { 1 } else { SEGMENTS };
    assert_eq!(
        line("selftest: tx "),
        format!(
            "selftest: tx {frames} frames, {SEGMENTS} segments, {} bytes",
            SEGMENTS * MSS
        )
    );
    assert_eq!(
        ns.counter(TAP, "rx_packets") - rx_before,
        frames as u64,
        "frames through the TAP"
    );
    let rx_frames: Vec<&str> = out.lines().filter(|l| l.starts_with("selftest: rx frame ")).collect();
    if uso {
        assert_eq!(rx_frames.len(), 1, "{out}");
        assert!(rx_frames[0].contains(&format!("gso_type 5, gso_size {MSS}")), "{out}");
    } else {
        assert_eq!(rx_frames.len(), SEGMENTS, "{out}");
        assert!(rx_frames.iter().all(|l| l.contains("gso_type 0")), "{out}");
    }
    assert!(
        out.contains(&format!(
            "selftest: rx {} frames, {SEGMENTS} segments, {} bytes",
            rx_frames.len(),
            SEGMENTS * MSS
        )),
        "{out}"
    );
    assert!(out.contains("selftest: pass"), "{out}");
}

#[test]
fn uso_end_to_end_on_linux_6_9() {
    require!(support::host_access());
    run_selftest("linux-6.9", true);
}

#[test]
fn no_uso_end_to_end_on_linux_5_15() {
    require!(support::host_access());
    run_selftest("linux-5.15", false);
}
