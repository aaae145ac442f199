//! Faults at the TAP that vmc must survive, against the real kernel, each test in a
//! network namespace of its own:
//! - a persistent TAP (an administrator's) is left exactly as found after vmc attached,
//!   changed its offloads and let go: `tun_flags`, `ip -d link show`, the offload
//!   features (`ethtool -k` where installed, and the ethtool ioctl always) and the vnet
//!   header size are the same before and after;
//! - a TAP deleted under a running virtio-net device: the device stops passing frames,
//!   keeps returning the guest's transmit buffers, does not spin, takes the link down and
//!   sends exactly one notice.
//!
//! Needs root: skipped with a reason by hand without it, failed under `CI=true`.

mod common;
#[path = "virtio_driver.rs"]
mod driver;

use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{require, NetNs};
use driver::*;
use vmc_runtime::devices::virtio::net::{feature::*, feature_word, Net, NetConfig, NetCounters};
use vmc_runtime::devices::virtio::{status, MmioTransport};
use vmc_runtime::host::{tap_offload_features, Errno, Tap, TapOffloads};

const TAP: &str = "vmcf0";

/// Everything the kernel shows of a TAP that vmc could change, as text.
fn observe(ns: &NetNs, tap: &str) -> String {
    let flags = ns.exec(&["cat", &format!("/sys/class/net/{tap}/tun_flags")]);
    let link = ns.ip(&["-d", "link", "show", "dev", tap]);
    let name = tap.to_string();
    let features = ns
        .run(move || tap_offload_features(&name))
        .unwrap_or_else(|error| panic!("offload features: {error}"));
    let mut text = format!("tun_flags {flags}{link}{features:#?}\n");
    if ethtool_installed() {
        text.push_str(&ns.exec(&["ethtool", "-k", tap]));
    }
    text
}

fn ethtool_installed() -> bool {
    Command::new("ethtool")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success())
}

fn attach(ns: &NetNs, tap: &str) -> Tap {
    let name = tap.to_string();
    ns.run(move || Tap::open_or_create(&name))
        .unwrap_or_else(|error| panic!("attach to {tap}: {error}"))
}

/// `tun_flags` of the TAP, as the kernel shows it.
fn tun_flags(ns: &NetNs, tap: &str) -> u16 {
    let text = ns.exec(&["cat", &format!("/sys/class/net/{tap}/tun_flags")]);
    u16::from_str_radix(text.trim().trim_start_matches("0x"), 16).expect("hex tun_flags")
}

/// The flags `TUNSETIFF` replaces (tun.c `TUN_FEATURES`).
const TUN_FEATURES: u16 = 0x1000 | 0x2000 | 0x4000 | 0x0100 | 0x0010 | 0x0020;
const IFF_VNET_HDR: u16 = 0x4000;

/// Attaches to the persistent TAP made with `ip tuntap add dev TAP mode tap ARGS…`,
/// turns on every offload the guest could ask for, lets go, and checks that the kernel
/// shows the TAP as before; then attaches again to check the vnet header size vmc found
/// was the one it started with.
/// The test has required `common::root()`.
fn left_as_found(args: &[&str], prepare: impl FnOnce(&NetNs)) {
    let ns = NetNs::create();
    let mut add = vec!["tuntap", "add", "dev", TAP, "mode", "tap"];
    add.extend_from_slice(args);
    ns.ip(&add);
    ns.ip(&["link", "set", TAP, "up"]);
    prepare(&ns);
    let before = observe(&ns, TAP);
    let flags_before = tun_flags(&ns, TAP);

    let tap = attach(&ns, TAP);
    assert!(!tap.created_by_us());
    let found = tap.found_state().expect("a persistent TAP's state is recorded").clone();
    assert_eq!(found.flags, Some(flags_before & TUN_FEATURES), "{before}");
    assert!(found.offloads.is_some(), "offloads readable");
    let hdr_len = found.vnet_hdr_len.expect("vnet header size readable");
    assert_eq!(
        tun_flags(&ns, TAP) & IFF_VNET_HDR,
        IFF_VNET_HDR,
        "vmc attaches with vnet_hdr"
    );
    tap.set_offload(TapOffloads::CSUM | TapOffloads::TSO4 | TapOffloads::USO4 | TapOffloads::USO6)
        .expect("offloads");
    let during = observe(&ns, TAP);
    assert_ne!(
        during, before,
        "vmc's attach changed nothing visible: the test tests nothing"
    );
    drop(tap);
    assert_eq!(observe(&ns, TAP), before, "the TAP is not as found");

    // The header size is seen by the next process only: attach again and ask.
    let tap = attach(&ns, TAP);
    assert_eq!(tap.found_state().and_then(|f| f.vnet_hdr_len), Some(hdr_len));
    drop(tap);
    assert_eq!(observe(&ns, TAP), before, "the TAP is not as found after a second run");
}

#[test]
fn a_persistent_tap_without_vnet_hdr_is_left_as_found() {
    require!(common::root());
    left_as_found(&[], |_| {});
}

#[test]
fn a_persistent_tap_with_vnet_hdr_is_left_as_found() {
    require!(common::root());
    left_as_found(&["vnet_hdr"], |_| {});
}

#[test]
fn a_persistent_tap_with_packet_info_and_one_queue_is_left_as_found() {
    require!(common::root());
    left_as_found(&["pi", "one_queue"], |_| {});
}

/// Another program attached before, set offloads csum|tso4 and a 20-byte header, and
/// left: vmc puts back those, not the defaults of a new TAP.
#[test]
fn a_persistent_tap_with_offloads_set_by_another_program_is_left_as_found() {
    require!(common::root());
    left_as_found(&["vnet_hdr"], |ns| {
        ns.run(|| {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/net/tun")
                .expect("open /dev/net/tun");
            let mut request = [0u8; 40];
            request[..TAP.len()].copy_from_slice(TAP.as_bytes());
            request[16..18].copy_from_slice(&(0x0002u16 | 0x1000 | 0x4000).to_ne_bytes());
            let fd = file.as_raw_fd();
            // SAFETY: plain tun ioctls on a fd we own, with buffers of their size.
            unsafe {
                assert_eq!(libc::ioctl(fd, 0x4004_54ca, request.as_mut_ptr()), 0, "TUNSETIFF");
                assert_eq!(libc::ioctl(fd, 0x4004_54d0, 0x01 | 0x02), 0, "TUNSETOFFLOAD");
                let len: libc::c_int = 20;
                assert_eq!(libc::ioctl(fd, 0x4004_54d8, &len), 0, "TUNSETVNETHDRSZ");
            }
        });
        let features = ns.run(|| tap_offload_features(TAP)).expect("features");
        let active: Vec<&str> = features.iter().filter(|f| f.active).map(|f| f.name).collect();
        assert_eq!(active, ["tx-checksum-ip-generic", "tx-tcp-segmentation"]);
    });
}

/// vmc attaches single-queue; the kernel refuses a multi-queue TAP before changing it.
#[test]
fn a_multi_queue_tap_is_refused_and_left_as_found() {
    require!(common::root());
    let ns = NetNs::create();
    ns.ip(&["tuntap", "add", "dev", TAP, "mode", "tap", "multi_queue"]);
    let before = observe(&ns, TAP);
    let error = ns.run(|| Tap::open_or_create(TAP)).expect_err("multi_queue");
    assert_eq!(error.errno(), Some(Errno(libc::EINVAL)), "{error}");
    assert_eq!(observe(&ns, TAP), before);
}

/// A persistent TAP deleted while vmc holds it is not made again when vmc lets go.
#[test]
fn a_persistent_tap_deleted_meanwhile_is_not_recreated() {
    require!(common::root());
    let ns = NetNs::create();
    ns.ip(&["tuntap", "add", "dev", TAP, "mode", "tap", "pi"]);
    let tap = attach(&ns, TAP);
    ns.ip(&["link", "del", TAP]);
    drop(tap);
    assert!(!ns.ip_succeeds(&["link", "show", "dev", TAP]), "the TAP came back");
}

const HOST: [u8; 4] = [10, 79, 0, 1];
const GUEST: [u8; 4] = [10, 79, 0, 2];
const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x57];
const PORT: u16 = 7789;
const RX: usize = 0;
const TX: usize = 1;
const VERSION_1: u32 = 32;

/// CPU time (user + system, in clock ticks) of this process's threads named `name`.
fn thread_cpu_ticks(name: &str) -> u64 {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task").flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // After the `(comm)` field: state is field 3, utime 14 and stime 15.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest)
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
        total += field(14) + field(15);
    }
    total
}

#[test]
fn a_tap_deleted_under_a_running_device_is_told_once_and_the_queues_keep_moving() {
    require!(common::root());
    let ns = NetNs::create();
    let tap = ns
        .run(|| {
            let _ = std::fs::write("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1");
            Tap::open_or_create(TAP)
        })
        .unwrap_or_else(|error| panic!("TAP: {error}"));
    ns.ip(&["link", "set", TAP, "up"]);
    ns.ip(&["addr", "add", "10.79.0.1/24", "dev", TAP]);
    ns.ip(&[
        "neigh",
        "add",
        "10.79.0.2",
        "lladdr",
        "52:54:00:12:34:57",
        "dev",
        TAP,
        "nud",
        "permanent",
    ]);
    let tap_mac = parse_mac(&ns.exec(&["cat", &format!("/sys/class/net/{TAP}/address")]));
    let socket = ns
        .run(|| UdpSocket::bind((Ipv4Addr::from(HOST), PORT)))
        .expect("bind in the namespace");
    socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();

    let features = feature_word(&[VERSION_1, MAC, STATUS, CSUM, GUEST_CSUM]);
    let config = NetConfig {
        features,
        mac: GUEST_MAC,
        mtu: 0,
        rx_queue_size: 256,
        tx_queue_size: 256,
    };
    let mut net = Net::new(config, tap).expect("device");
    let notices = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = notices.clone();
    net.set_notice(Arc::new(move |line: &str| sink.lock().unwrap().push(line.to_string())));
    let counters: Arc<NetCounters> = net.counters();
    let mem = guest_memory();
    let irq = Arc::new(CountingInterrupt::default());
    let transport = MmioTransport::new(net, mem.clone(), irq.clone()).expect("transport");
    let mut driver = Driver::new(mem, transport);
    driver.bring_up(features, &[256, 256]);
    // Receive buffers posted, as a driver does; they must simply stay unused.
    for i in 0..8 {
        driver.add_chain(RX, &[(buffer_area(RX) + i * 0x1_1000, 2048, true)]);
    }
    driver.notify(RX);

    let mut sent = 0u64;
    let mut transmit = |driver: &mut Driver<Net>, payload: &[u8]| {
        let frame = udp_frame(tap_mac, GUEST_MAC, GUEST, HOST, PORT, payload, false);
        let addr = buffer_area(TX) + (sent % 64) * 0x1_0000;
        sent += 1;
        driver.write_bytes(addr, &[0; 12]);
        driver.write_bytes(addr + 12, &frame);
        let head = driver.add_chain(TX, &[(addr, 12, false), (addr + 12, frame.len() as u32, false)]);
        driver.notify(TX);
        assert_eq!(driver.wait_used(TX, 1), [(u32::from(head), 0)], "the chain comes back");
    };

    // The device works.
    transmit(&mut driver, b"before");
    let mut buf = [0u8; 2048];
    let len = socket.recv(&mut buf).expect("the first datagram");
    assert_eq!(&buf[..len], b"before");
    let status_link = |driver: &mut Driver<Net>| driver.read(reg::CONFIG + 6) & 0xffff;
    assert_eq!(status_link(&mut driver), 1, "link up");
    let config_interrupts = irq.config();

    ns.ip(&["link", "del", TAP]);
    wait_for("the notice", || !notices.lock().unwrap().is_empty());
    assert_eq!(
        *notices.lock().unwrap(),
        [format!(
            "TAP {TAP} went away (read: EBADFD (File descriptor in bad state)); the device passes no more frames"
        )]
    );
    assert_eq!(counters.snapshot().tap_gone, 1);
    assert_eq!(
        status_link(&mut driver),
        0,
        "the link is down in the configuration space"
    );
    assert_eq!(
        irq.config(),
        config_interrupts + 1,
        "one configuration change interrupt"
    );

    // Transmit buffers still come back, their frames dropped and counted.
    let before = counters.snapshot();
    for i in 0..40 {
        transmit(&mut driver, format!("into the void {i}").as_bytes());
    }
    let after = counters.snapshot();
    assert_eq!(after.tx_dropped_tap - before.tx_dropped_tap, 40);
    assert_eq!(after.tx_frames, before.tx_frames);
    assert_eq!(after.rx_tap_errors, 1, "the dead TAP was read once");
    assert_eq!(driver.take_used(RX), [], "no receive buffer used");

    // Idle, the worker costs nothing: epoll would report the dead fd's error for ever
    // had it stayed watched.
    let ticks = thread_cpu_ticks("virtio-net");
    std::thread::sleep(Duration::from_millis(500));
    let spent = thread_cpu_ticks("virtio-net") - ticks;
    assert!(spent <= 5, "the worker spent {spent} ticks idle: it spins");

    // A reset and a new bring-up (a new worker) neither tells again nor spins.
    driver.bring_up(features, &[256, 256]);
    transmit(&mut driver, b"after a reset");
    let ticks = thread_cpu_ticks("virtio-net");
    std::thread::sleep(Duration::from_millis(300));
    assert!(thread_cpu_ticks("virtio-net") - ticks <= 5, "the new worker spins");
    assert_eq!(notices.lock().unwrap().len(), 1, "the notice came once");
    assert_eq!(status_link(&mut driver), 0);
    assert_eq!(driver.status() & status::DEVICE_NEEDS_RESET, 0, "no reset needed");
    assert_eq!(counters.snapshot().worker_panics, 0);
}
