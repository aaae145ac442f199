//! A real Linux 6.12 guest (`scripts/linux-guest`: tinyconfig, Linux's own virtio-net
//! driver, busybox and small static programs in a built-in initramfs) on vmc's virtio-net
//! device, for an ABI compiled for `linux-6.9` (USO in the ABI) and one for `linux-5.15`
//! (no USO). In one boot per platform, under `vmc run`:
//!
//! - Linux reaches user space, and the feature bits its driver negotiated (sysfs) are
//!   exactly the ABI's `device-features` that Linux 6.12's driver knows;
//! - guest to host: one 64400-byte `UDP_SEGMENT` send leaves the TAP as one frame with
//!   USO and as 46 frames without, and arrives as 46 datagrams with the right payload;
//! - host to guest: a `UDP_SEGMENT` send from the namespace reaches the guest as one
//!   frame when it negotiated GUEST_USO4, else as 46, and its socket gets every byte;
//! - ping both ways.
//!
//! And under QEMU, with `vmc lower`'s command line, the same guest negotiates the same bits
//! (one boot per platform).
//!
//! Needs root, /dev/kvm, /dev/net/tun, `ip` and (for the QEMU test) QEMU 10: skipped with
//! a reason by hand without them, failed under CI. The guest kernel comes from
//! `scripts/linux-guest`, cached after the first build (which takes minutes).

#[path = "../runtime/tests/common/mod.rs"]
mod common;
mod support;

use std::collections::BTreeSet;
use std::io::Read;
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::NetNs;
use support::vmm::Vmm;
use support::{require, stderr, vmc, Scratch};
use vmc_compiler::{lower, AbiDocument, SourceFile};

const TAP: &str = "vmc-lx0";
const HOST_MAC: &str = "02:00:00:00:00:01";
const GUEST_MAC: &str = "52:54:00:12:34:56";
const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
const GUEST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
/// guest -> host (the guest's `vmc.txport`) and host -> guest (`vmc.rxport`).
const TO_HOST_PORT: u16 = 5001;
const TO_GUEST_PORT: u16 = 5000;
/// One flow each way: 46 segments of 1400 bytes, the largest multiple of 1400 that fits
/// one UDP datagram (65507 bytes). The guest's init uses the same defaults.
const GSO_SIZE: usize = 1400;
const SEGMENTS: usize = 46;
const FLOW_BYTES: usize = GSO_SIZE * SEGMENTS;

/// How long a boot may take to reach each step, and the whole run. A boot reaches user
/// space in about 40 s on a nested, emulating KVM; seconds elsewhere.
const BOOT_LIMIT: Duration = Duration::from_secs(180);
const RUN_LIMIT: Duration = Duration::from_secs(300);
/// The first build of the guest kernel (cached afterwards) on two busy cores.
const BUILD_LIMIT: Duration = Duration::from_secs(3600);

/// The feature bits Linux 6.12's virtio-net driver can accept: its feature table
/// (`VIRTNET_FEATURES` in drivers/net/virtio_net.c) and the transport bits the virtio
/// core keeps (`vring_transport_features` in drivers/virtio/virtio_ring.c). The driver
/// negotiates the device's offer intersected with these.
const LINUX_6_12_DRIVER: &[u32] = &[
    0,  // CSUM
    1,  // GUEST_CSUM
    2,  // CTRL_GUEST_OFFLOADS
    3,  // MTU
    5,  // MAC
    7,  // GUEST_TSO4
    8,  // GUEST_TSO6
    9,  // GUEST_ECN
    10, // GUEST_UFO
    11, // HOST_TSO4
    12, // HOST_TSO6
    13, // HOST_ECN
    14, // HOST_UFO
    15, // MRG_RXBUF
    16, // STATUS
    17, // CTRL_VQ
    18, // CTRL_RX
    19, // CTRL_VLAN
    21, // GUEST_ANNOUNCE
    22, // MQ
    23, // CTRL_MAC_ADDR
    28, // RING_INDIRECT_DESC
    29, // RING_EVENT_IDX
    32, // VERSION_1
    33, // ACCESS_PLATFORM
    34, // RING_PACKED
    36, // ORDER_PLATFORM
    38, // NOTIFICATION_DATA
    50, // DEVICE_STATS
    52, // VQ_NOTF_COAL
    53, // NOTF_COAL
    54, // GUEST_USO4
    55, // GUEST_USO6
    56, // HOST_USO
    57, // HASH_REPORT
    59, // GUEST_HDRLEN
    60, // RSS
    62, // STANDBY
    63, // SPEED_DUPLEX
];
const USO_BITS: [u32; 3] = [54, 55, 56];

// ---------------------------------------------------------------------------------------
// Children bounded in time: each runs in its own process group, killed whole on timeout.

/// Sends SIGKILL to the process group `child` leads.
fn kill_group(child: &Child) {
    // SAFETY: kill() with a negative pid signals the group this test created.
    unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
}

/// One guest boot at a time: on an emulating host a boot keeps a core busy for most of a
/// minute, and boots side by side only slow each other towards their time limits.
fn one_boot_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static BOOT: Mutex<()> = Mutex::new(());
    BOOT.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The guest kernel, built (or found in the cache) once per test binary.
fn guest_kernel() -> PathBuf {
    static KERNEL: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    KERNEL
        .get_or_init(build_guest)
        .clone()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn build_guest() -> Result<PathBuf, String> {
    let script = support::repo().join("scripts/linux-guest");
    let mut child = Command::new(&script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("start {}: {e}", script.display()))?;
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let stdout = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let stderr_text = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + BUILD_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break Some(status);
        }
        if Instant::now() > deadline {
            kill_group(&child);
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let (stdout, stderr_text) = (stdout.join().unwrap(), stderr_text.join().unwrap());
    match status {
        None => Err(format!(
            "scripts/linux-guest did not finish within {BUILD_LIMIT:?}\n{stderr_text}"
        )),
        Some(s) if !s.success() => Err(format!("scripts/linux-guest failed ({s})\n{stderr_text}")),
        Some(_) => {
            let path = PathBuf::from(stdout.lines().last().unwrap_or_default());
            if path.is_file() {
                Ok(path)
            } else {
                Err(format!(
                    "scripts/linux-guest printed no kernel path:\n{stdout}\n{stderr_text}"
                ))
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The ABI and what the guest reports.

/// `specs/linux.kdl` with the built kernel and the given test mode, compiled for
/// `platform`; the document's path.
fn abi_for(s: &Scratch, platform: &str, mode: &str) -> String {
    let kernel = guest_kernel();
    let spec = std::fs::read_to_string(support::repo().join("specs/linux.kdl"))
        .unwrap()
        .replace("\"guest/linux.elf\"", &format!("{:?}", kernel.display().to_string()))
        .replace("vmc.test=net", &format!("vmc.test={mode}"));
    let spec_path = s.write(&format!("linux-{platform}.kdl"), spec);
    let abi = s.path(&format!("linux-{platform}.abi")).display().to_string();
    let o = vmc(&["compile", &spec_path, "--platform", platform, "-o", &abi]);
    assert!(o.status.success(), "{}", stderr(&o));
    abi
}

/// The ABI's `device-features` of its one device, from `vmc show --json`.
fn abi_device_features(abi: &str) -> BTreeSet<u32> {
    let o = vmc(&["show", "--json", abi]);
    assert!(o.status.success(), "{}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    doc["abi"]["devices"][0]["device-features"]
        .as_array()
        .expect("device-features")
        .iter()
        .map(|b| b.as_u64().unwrap() as u32)
        .collect()
}

/// What Linux's driver must negotiate for this ABI.
fn expected_negotiation(abi: &str) -> BTreeSet<u32> {
    abi_device_features(abi)
        .into_iter()
        .filter(|b| LINUX_6_12_DRIVER.contains(b))
        .collect()
}

/// The bits of the guest's `linux: features ...` line, checked against its
/// `linux: features-bits` line (sysfs's string of 0 and 1, bit 0 first).
fn negotiated(output: &str) -> BTreeSet<u32> {
    let line = |prefix: &str| -> &str {
        output
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` line:\n{output}"))
    };
    let listed: BTreeSet<u32> = line("linux: features ")
        .split_whitespace()
        .map(|b| b.parse().expect("a bit number"))
        .collect();
    let from_sysfs: BTreeSet<u32> = line("linux: features-bits ")
        .trim()
        .chars()
        .enumerate()
        .filter(|(_, c)| *c == '1')
        .map(|(i, _)| i as u32)
        .collect();
    assert_eq!(listed, from_sysfs, "{output}");
    listed
}

fn check_negotiation(platform: &str, abi: &str, output: &str, uso: bool) {
    let got = negotiated(output);
    let want = expected_negotiation(abi);
    assert_eq!(
        got, want,
        "{platform}: Linux negotiated {got:?}, the ABI's device-features that Linux's driver knows are {want:?}\n{output}"
    );
    for bit in USO_BITS {
        assert_eq!(got.contains(&bit), uso, "{platform}: bit {bit}\n{output}");
    }
}

// ---------------------------------------------------------------------------------------
// The host's side: frames on the TAP, datagrams, ICMP.

/// Every UDP frame on the TAP to or from the guest's flows: (direction, destination port,
/// frame length), as a packet socket bound to the TAP sees them: a USO frame is one frame
/// of the whole flow's size.
#[derive(Default)]
struct Frames(Vec<(bool, u16, usize)>);

impl Frames {
    /// Frames of the flow to `port`: from the guest (`outgoing` false) or to it.
    fn flow(&self, outgoing: bool, port: u16) -> Vec<usize> {
        self.0
            .iter()
            .filter(|(o, p, _)| *o == outgoing && *p == port)
            .map(|(_, _, len)| *len)
            .collect()
    }
}

/// Captures frames on `TAP` in `ns` on a thread until `stop` is set.
fn capture(ns: &NetNs, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Frames> {
    let socket = ns.run(|| {
        // SAFETY: plain socket calls on a descriptor we own; the buffers outlive them.
        unsafe {
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, (libc::ETH_P_ALL as u16).to_be() as i32);
            assert!(fd >= 0, "packet socket: {}", std::io::Error::last_os_error());
            let fd = OwnedFd::from_raw_fd(fd);
            let name = std::ffi::CString::new(TAP).unwrap();
            let index = libc::if_nametoindex(name.as_ptr());
            assert!(index > 0, "no {TAP}");
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
            addr.sll_ifindex = index as i32;
            let r = libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            );
            assert_eq!(r, 0, "bind: {}", std::io::Error::last_os_error());
            set_recv_timeout(fd.as_raw_fd(), Duration::from_millis(100));
            force_rcvbuf(fd.as_raw_fd());
            fd
        }
    });
    std::thread::spawn(move || {
        let mut frames = Frames::default();
        let mut buf = vec![0u8; 65536 + 256];
        while !stop.load(Ordering::Relaxed) {
            // SAFETY: recvfrom into buffers we own, with their sizes.
            let (n, pkttype) = unsafe {
                let mut from: libc::sockaddr_ll = std::mem::zeroed();
                let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
                let n = libc::recvfrom(
                    socket.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_TRUNC,
                    (&mut from as *mut libc::sockaddr_ll).cast(),
                    &mut len,
                );
                (n, from.sll_pkttype)
            };
            if n < 14 + 20 + 8 {
                continue;
            }
            let n = n as usize;
            let f = &buf[..n.min(buf.len())];
            // IPv4 (0x0800) carrying UDP (17): note the destination port.
            if f[12..14] != [0x08, 0x00] || f[14 + 9] != 17 {
                continue;
            }
            let l4 = 14 + usize::from(f[14] & 0x0f) * 4;
            let port = u16::from_be_bytes([f[l4 + 2], f[l4 + 3]]);
            frames.0.push((pkttype == libc::PACKET_OUTGOING, port, n));
        }
        frames
    })
}

/// How long a receive on `fd` (a raw socket, which std cannot configure) waits.
fn set_recv_timeout(fd: i32, timeout: Duration) {
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: setsockopt reads one timeval from a valid pointer, on a socket we own.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        )
    };
    assert_eq!(r, 0, "SO_RCVTIMEO: {}", std::io::Error::last_os_error());
}

/// A receive buffer for a whole 64 KiB burst, whatever net.core.rmem_max says.
fn force_rcvbuf(fd: i32) {
    let size: libc::c_int = 8 << 20;
    // SAFETY: setsockopt reads one int from a valid pointer, on a socket we own.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as u32,
        )
    };
    assert_eq!(r, 0, "SO_RCVBUFFORCE: {}", std::io::Error::last_os_error());
}

/// Byte `i` of a flow, as the guest's programs write and check it.
fn flow_byte(i: usize) -> u8 {
    (i % 251) as u8
}

/// Pings the guest `count` times from the namespace (a raw ICMP socket: the host may have
/// no ping tool); the number of echo replies.
fn ping_guest(ns: &NetNs, count: u16) -> usize {
    ns.run(move || {
        // SAFETY: plain socket calls on a descriptor we own; the buffers outlive them.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP);
            assert!(fd >= 0, "raw ICMP socket: {}", std::io::Error::last_os_error());
            let fd = OwnedFd::from_raw_fd(fd);
            set_recv_timeout(fd.as_raw_fd(), Duration::from_secs(5));
            let mut to: libc::sockaddr_in = std::mem::zeroed();
            to.sin_family = libc::AF_INET as u16;
            to.sin_addr.s_addr = u32::from(GUEST_IP).to_be();
            let id = (std::process::id() as u16).to_be_bytes();
            let mut replies = 0;
            for seq in 1..=count {
                let mut echo = [
                    8u8,
                    0,
                    0,
                    0,
                    id[0],
                    id[1],
                    (seq >> 8) as u8,
                    seq as u8,
                    b'v',
                    b'm',
                    b'c',
                    0,
                ];
                let sum = internet_checksum(&echo);
                echo[2..4].copy_from_slice(&sum.to_be_bytes());
                libc::sendto(
                    fd.as_raw_fd(),
                    echo.as_ptr().cast(),
                    echo.len(),
                    0,
                    (&to as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as u32,
                );
                // The reply, with its IP header: type 0, our id and sequence.
                let deadline = Instant::now() + Duration::from_secs(5);
                while Instant::now() < deadline {
                    let mut buf = [0u8; 1500];
                    let n = libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0);
                    if n < 28 {
                        break;
                    }
                    let icmp = &buf[usize::from(buf[0] & 0x0f) * 4..n as usize];
                    if icmp[0] == 0 && icmp[4..6] == id && icmp[6..8] == seq.to_be_bytes() {
                        replies += 1;
                        break;
                    }
                }
            }
            replies
        }
    })
}

fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

// ---------------------------------------------------------------------------------------

/// One boot of the guest under `vmc run` in a namespace made for it, with traffic both
/// ways; `uso`: whether the ABI (and so the negotiation) has the USO bits.
fn network_run(platform: &str, uso: bool) {
    let s = Scratch::new(&format!("linux-{platform}"));
    let abi = abi_for(&s, platform, "net");
    let _boot = one_boot_at_a_time();
    let ns = NetNs::create();
    ns.guest_link(TAP, HOST_MAC, "10.0.2.2/24", "10.0.2.15", GUEST_MAC);
    let sock = ns.run(|| UdpSocket::bind((HOST_IP, TO_HOST_PORT)).expect("bind the receiver"));
    force_rcvbuf(sock.as_raw_fd());
    sock.set_read_timeout(Some(BOOT_LIMIT)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let capture = capture(&ns, stop.clone());

    let mut command = Command::new("ip");
    command.args(["netns", "exec", ns.name(), env!("CARGO_BIN_EXE_vmc"), "run", &abi]);
    let started = Instant::now();
    let mut vmm = Vmm::spawn(&mut command);
    vmm.wait_for("linux: userspace", BOOT_LIMIT);
    let to_userspace = started.elapsed();

    // Guest -> host: 46 datagrams, in order, each its part of the flow.
    let mut buf = vec![0u8; 65536];
    let mut offset = 0;
    for i in 0..SEGMENTS {
        let (n, from) = sock
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("datagram {i} of {SEGMENTS}: {e}\n{}", vmm.output()));
        assert_eq!(from.ip(), GUEST_IP, "datagram {i}'s sender");
        assert_eq!(n, GSO_SIZE, "datagram {i}");
        let expected: Vec<u8> = (offset..offset + n).map(flow_byte).collect();
        assert!(buf[..n] == expected[..], "payload of datagram {i}");
        offset += n;
    }
    assert_eq!(offset, FLOW_BYTES);

    // Host -> guest, once the guest's receiver is bound: ping, then one UDP_SEGMENT send.
    vmm.wait_for("linux: rx ready", BOOT_LIMIT);
    let replies = ping_guest(&ns, 3);
    ns.run(|| {
        let sock = UdpSocket::bind((HOST_IP, 0)).expect("bind the sender");
        common::set_udp_segment(&sock, GSO_SIZE as u16);
        let payload: Vec<u8> = (0..FLOW_BYTES).map(flow_byte).collect();
        sock.send_to(&payload, (GUEST_IP, TO_GUEST_PORT))
            .expect("send to the guest");
    });

    let (code, out) = (vmm.wait_within(RUN_LIMIT), vmm.output());
    stop.store(true, Ordering::Relaxed);
    let frames = capture.join().expect("capture");
    eprintln!(
        "{platform}: user space after {:.1} s, run {:.1} s",
        to_userspace.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("linux: done\n"), "{out}");
    check_negotiation(platform, &abi, &out, uso);
    // The newest machine type's firmware: Linux finds the MP table where it looks first
    // (not after searching the BIOS area) and routes interrupts through the I/O APIC.
    assert!(
        out.contains("found SMP MP-table at [mem 0x0009fc00-0x0009fc0f]"),
        "{out}"
    );
    assert!(out.contains("APIC: Switch to symmetric I/O mode setup"), "{out}");
    // No invariant TSC in its CPUID: the guest's clock stays kvm-clock, which migrates.
    assert!(out.contains("clocksource: Switched to clocksource kvm-clock"), "{out}");
    assert!(!out.contains("Switched to clocksource tsc"), "{out}");

    let line = |prefix: &str| -> String {
        out.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` line in:\n{out}"))
            .to_string()
    };
    // Ping, guest -> host and host -> guest.
    assert!(
        line("linux: ping ").contains("3 packets transmitted, 3 packets received"),
        "{out}"
    );
    assert_eq!(replies, 3, "echo replies from the guest\n{out}");

    // Guest -> host: one UDP_SEGMENT send; on the TAP one frame of the whole flow with
    // USO, else one frame per segment. (Linux's driver leaves USO transmit off until
    // asked: the guest turns it on when it negotiated HOST_USO.)
    assert_eq!(out.contains("linux: eth0 tx-udp-segmentation on\n"), uso, "{out}");
    assert_eq!(
        line("linux: tx "),
        format!("linux: tx 1 send, {FLOW_BYTES} bytes, gso_size {GSO_SIZE}")
    );
    let eth_ip_udp = 14 + 20 + 8;
    let from_guest = frames.flow(false, TO_HOST_PORT);
    if uso {
        assert_eq!(from_guest, vec![eth_ip_udp + FLOW_BYTES], "frames from the guest");
    } else {
        assert_eq!(
            from_guest,
            vec![eth_ip_udp + GSO_SIZE; SEGMENTS],
            "frames from the guest"
        );
    }

    // Host -> guest: one USO frame when the guest took GUEST_USO4, else segments; the
    // guest's socket gets the 46 datagrams intact either way.
    let to_guest = frames.flow(true, TO_GUEST_PORT);
    if uso {
        assert_eq!(to_guest, vec![eth_ip_udp + FLOW_BYTES], "frames to the guest");
    } else {
        assert_eq!(to_guest, vec![eth_ip_udp + GSO_SIZE; SEGMENTS], "frames to the guest");
    }
    let sizes = vec![GSO_SIZE.to_string(); SEGMENTS].join(" ");
    assert!(
        out.contains(&format!(
            "linux: rx {SEGMENTS} datagrams, {FLOW_BYTES} bytes, sizes {sizes}, payload ok\n"
        )),
        "{out}"
    );
}

#[test]
fn linux_on_linux_6_9_negotiates_uso_and_sends_and_receives_uso_frames() {
    require!(support::host_access());
    network_run("linux-6.9", true);
}

#[test]
fn linux_on_linux_5_15_negotiates_no_uso_and_segments_every_flow() {
    require!(support::host_access());
    network_run("linux-5.15", false);
}

/// Under QEMU with the lowered command line the same guest negotiates the same bits: one
/// boot per platform, to the feature report (`vmc.test=boot`).
#[test]
fn linux_under_qemu_negotiates_what_it_negotiates_under_vmc() {
    require!(support::qemu());
    for (platform, uso) in [("linux-6.9", true), ("linux-5.15", false)] {
        let s = Scratch::new(&format!("linux-qemu-{platform}"));
        let abi = abi_for(&s, platform, "boot");
        let _boot = one_boot_at_a_time();
        let doc = AbiDocument::from_kdl(&SourceFile::new(&abi, std::fs::read_to_string(&abi).unwrap())).unwrap();
        let ns = NetNs::create();
        ns.guest_link(TAP, HOST_MAC, "10.0.2.2/24", "10.0.2.15", GUEST_MAC);
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", ns.name(), lower::QEMU_BINARY])
            .args(lower::qemu(&doc).expect("lowering"));
        let started = Instant::now();
        let mut vmm = Vmm::spawn(&mut command);
        let (code, out) = (vmm.wait_within(RUN_LIMIT), vmm.output());
        eprintln!("{platform}: QEMU run {:.1} s", started.elapsed().as_secs_f64());
        // QEMU's isa-debug-exit turns the guest's exit code 0 into (0 << 1) | 1.
        assert_eq!(code, Some(1), "{out}");
        assert!(out.contains("linux: userspace"), "{out}");
        check_negotiation(platform, &abi, &out, uso);
    }
}
