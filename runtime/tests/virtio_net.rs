//! The virtio-net device end to end, with real guest memory and a real TAP in a network
//! namespace each test makes: the test is the guest driver (it writes descriptors and
//! rings into guest memory and pokes the virtio-mmio registers), the namespace's kernel
//! is the network.
//!
//! Addresses: the TAP is 10.78.0.1/24 in the namespace, the guest is 10.78.0.2 with MAC
//! 52:54:00:12:34:56, reachable through a permanent neighbour entry (no ARP). IPv6 is off
//! in the namespace so that nothing else crosses the TAP.

mod common;
#[path = "virtio_driver.rs"]
mod driver;

use std::collections::HashMap;
use std::net::{Ipv4Addr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use common::{require, NetNs, XorShift};
use driver::*;
use vmc_runtime::devices::bus::BusDevice;
use vmc_runtime::devices::virtio::net::header::{
    VnetHeader, F_DATA_VALID, F_NEEDS_CSUM, GSO_NONE, GSO_TCPV4, GSO_UDP_L4, HDR_LEN,
};
use vmc_runtime::devices::virtio::net::{feature::*, feature_word, Net, NetConfig, NetCounters, NetStats};
use vmc_runtime::devices::virtio::{status, MmioTransport, QUEUE_NOTIFY_OFFSET};
use vmc_runtime::host::{Tap, TapOffloads};

const TAP: &str = "vmcv0";
const HOST: [u8; 4] = [10, 78, 0, 1];
const GUEST: [u8; 4] = [10, 78, 0, 2];
const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const PORT: u16 = 7788;
const RX: usize = 0;
const TX: usize = 1;

const VERSION_1: u32 = 32;
const INDIRECT_DESC: u32 = 28;
const EVENT_IDX: u32 = 29;

/// What most tests offer and accept: checksum offload both ways, MAC, link status.
fn base() -> Vec<u32> {
    vec![VERSION_1, MAC, STATUS, CSUM, GUEST_CSUM]
}

fn word(extra: &[u32]) -> u64 {
    feature_word(&base()) | feature_word(extra)
}

/// A device on a TAP in a fresh namespace, and a driver for it.
struct Bench {
    // Dropped first: stops the worker and closes the TAP before the namespace goes.
    driver: Driver<Net>,
    irq: Arc<CountingInterrupt>,
    counters: Arc<NetCounters>,
    tap_mac: [u8; 6],
    /// Bound at 10.78.0.1:PORT in the namespace, for what the guest sends.
    socket: UdpSocket,
    tx_slot: u64,
    ns: NetNs,
}

/// A device on a TAP in a namespace of its own; the test has required `common::root()`.
fn bench(offered: u64) -> Bench {
    let ns = NetNs::create();
    let tap = ns.run(|| {
        // Best effort: a kernel without IPv6 has nothing to switch off.
        let _ = std::fs::write("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1");
        Tap::open_or_create(TAP)
    });
    let tap = tap.unwrap_or_else(|error| panic!("TAP: {error}"));
    ns.ip(&["link", "set", TAP, "up"]);
    ns.ip(&["addr", "add", "10.78.0.1/24", "dev", TAP]);
    let guest_mac = "52:54:00:12:34:56";
    ns.ip(&[
        "neigh",
        "add",
        "10.78.0.2",
        "lladdr",
        guest_mac,
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

    let config = NetConfig {
        features: offered,
        mac: GUEST_MAC,
        mtu: 0,
        rx_queue_size: 256,
        tx_queue_size: 256,
    };
    let net = Net::new(config, tap).expect("device");
    let counters = net.counters();
    let mem = guest_memory();
    let irq = Arc::new(CountingInterrupt::default());
    let transport = MmioTransport::new(net, mem.clone(), irq.clone()).expect("transport");
    Bench {
        driver: Driver::new(mem, transport),
        irq,
        counters,
        tap_mac,
        socket,
        tx_slot: 0,
        ns,
    }
}

impl Bench {
    fn stats(&self) -> NetStats {
        self.counters.snapshot()
    }

    fn up(&mut self, features: u64) {
        self.driver.bring_up(features, &[256, 256]);
    }

    /// A fresh 64 KiB transmit buffer in guest memory.
    fn tx_buffer(&mut self) -> u64 {
        self.tx_slot = (self.tx_slot + 1) % 64;
        buffer_area(TX) + self.tx_slot * 0x1_0000
    }

    /// Writes header and frame into guest memory, queues them as one two-descriptor
    /// chain, notifies, and waits for the device to use it. Returns the head.
    fn transmit(&mut self, header: [u8; 12], frame: &[u8]) -> u16 {
        let addr = self.tx_buffer();
        self.driver.write_bytes(addr, &header);
        self.driver.write_bytes(addr + 12, frame);
        let head = self
            .driver
            .add_chain(TX, &[(addr, 12, false), (addr + 12, frame.len() as u32, false)]);
        self.driver.notify(TX);
        let used = self.driver.wait_used(TX, 1);
        assert_eq!(used, [(u32::from(head), 0)], "transmit buffers come back with len 0");
        head
    }

    fn udp_to_host(&self, payload: &[u8], partial_csum: bool) -> Vec<u8> {
        udp_frame(self.tap_mac, GUEST_MAC, GUEST, HOST, PORT, payload, partial_csum)
    }

    /// A plain frame the guest sends must reach the socket: the device still works.
    fn still_transmits(&mut self, tag: &str) {
        let frame = self.udp_to_host(tag.as_bytes(), false);
        self.transmit([0; 12], &frame);
        let mut buf = [0u8; 2048];
        let len = self
            .socket
            .recv(&mut buf)
            .unwrap_or_else(|error| panic!("no datagram after {tag}: {error}"));
        assert_eq!(&buf[..len], tag.as_bytes());
    }

    /// Posts `count` receive chains of `len` bytes each (one descriptor each).
    fn post_rx(&mut self, count: usize, len: u32, buffers: &mut HashMap<u32, (u64, u32)>) {
        for _ in 0..count {
            let addr = buffer_area(RX) + buffers.len() as u64 * 0x1_1000;
            let head = self.driver.add_chain(RX, &[(addr, len, true)]);
            buffers.insert(u32::from(head), (addr, len));
        }
        self.driver.notify(RX);
    }

    /// The next frame the device put in the receive queue: its header, its bytes after
    /// the header, and how many buffers it took.
    fn next_rx_frame(&mut self, buffers: &HashMap<u32, (u64, u32)>) -> (VnetHeader, Vec<u8>, usize) {
        let (id, len) = self.driver.wait_used(RX, 1)[0];
        let (addr, cap) = buffers[&id];
        assert!(len <= cap && len as usize >= HDR_LEN, "used length {len} of {cap}");
        let first = self.driver.read_bytes(addr, len as usize);
        let header = VnetHeader::from_bytes(first[..HDR_LEN].try_into().unwrap());
        let mut data = first[HDR_LEN..].to_vec();
        for _ in 1..header.num_buffers {
            let (id, len) = self.driver.wait_used(RX, 1)[0];
            let (addr, cap) = buffers[&id];
            assert!(len <= cap);
            data.extend(self.driver.read_bytes(addr, len as usize));
        }
        (header, data, usize::from(header.num_buffers))
    }

    /// Like `next_rx_frame`, skipping frames that are not UDP to the guest's PORT.
    fn next_udp_frame(&mut self, buffers: &HashMap<u32, (u64, u32)>) -> (VnetHeader, Vec<u8>, usize) {
        for _ in 0..16 {
            let frame = self.next_rx_frame(buffers);
            if udp_dest_port(&frame.1) == Some(PORT) {
                return frame;
            }
        }
        panic!("16 frames and none was UDP to the guest");
    }

    /// A socket in the namespace that sends to the guest.
    fn sender(&self) -> UdpSocket {
        self.ns
            .run(|| UdpSocket::bind((Ipv4Addr::from(HOST), 0)))
            .expect("bind sender")
    }
}

fn udp_dest_port(frame: &[u8]) -> Option<u16> {
    if frame.get(12..14)? != [0x08, 0x00] || *frame.get(ETH_HLEN + 9)? != 17 {
        return None;
    }
    let ihl = usize::from(frame[ETH_HLEN] & 0x0f) * 4;
    let udp = frame.get(ETH_HLEN + ihl..)?;
    Some(u16::from_be_bytes([*udp.get(2)?, *udp.get(3)?]))
}

fn udp_payload(frame: &[u8]) -> &[u8] {
    let ihl = usize::from(frame[ETH_HLEN] & 0x0f) * 4;
    &frame[ETH_HLEN + ihl + UDP_HLEN..]
}

/// One `send` that the kernel segments every `gso_size` bytes (`UDP_SEGMENT`).
fn send_segmented(socket: &UdpSocket, data: &[u8], gso_size: u16) {
    common::set_udp_segment(socket, gso_size);
    let sent = socket.send_to(data, (Ipv4Addr::from(GUEST), PORT)).expect("send");
    assert_eq!(sent, data.len());
}

const GSO_SIZE: u16 = 1000;

/// Three segments' worth, each byte telling where it belongs.
fn gso_data() -> Vec<u8> {
    (0..3 * usize::from(GSO_SIZE)).map(|i| (i % 251) as u8).collect()
}

// ---- Configuration and offloads -----------------------------------------------------

#[test]
fn the_config_space_holds_the_mac_link_status_and_mtu() {
    require!(common::root());
    let mut b = bench(word(&[]));
    assert_eq!(b.driver.read(reg::DEVICE_ID), 1);
    assert_eq!(b.driver.device_features(), word(&[]));
    let mut config = [0u8; 12];
    for (i, byte) in config.iter_mut().enumerate() {
        let mut one = [0u8; 1];
        b.driver.transport.read(reg::CONFIG + i as u64, &mut one);
        *byte = one[0];
    }
    assert_eq!(config[..6], GUEST_MAC);
    assert_eq!(u16::from_le_bytes([config[6], config[7]]), 1, "VIRTIO_NET_S_LINK_UP");
    assert_eq!(u16::from_le_bytes([config[8], config[9]]), 1, "one queue pair");
    assert_eq!(u16::from_le_bytes([config[10], config[11]]), 0, "no MTU offered");
}

#[test]
fn a_feature_word_the_device_cannot_honour_is_refused() {
    require!(common::root());
    let ns = NetNs::create();
    let config = |features: u64, mtu: u16| NetConfig {
        features,
        mac: GUEST_MAC,
        mtu,
        rx_queue_size: 256,
        tx_queue_size: 256,
    };
    let cases = [
        (config(word(&[17]), 0), "not implemented"),         // CTRL_VQ
        (config(word(&[HOST_USO]) & !1, 0), "needs one of"), // HOST_USO without CSUM
        (config(word(&[MTU]), 0), "MTU"),
        (config(word(&[]), 1500), "MTU"),
        (config(word(&[]) & !(1 << 32), 0), "VERSION_1"),
    ];
    // A TAP per case: a closed TAP's name is freed by the kernel a little later.
    let tap = |i: usize| ns.run(move || Tap::open_or_create(&format!("vmcv{i}"))).expect("TAP");
    for (i, (config, expected)) in cases.into_iter().enumerate() {
        let error = Net::new(config, tap(i)).expect_err("refused");
        assert!(error.to_string().contains(expected), "{error}");
    }
    let tap = tap(9);
    assert!(Net::new(config(word(&[MTU]), 1500), tap).is_ok());
}

#[test]
fn driver_ok_sets_the_tap_offloads_from_what_the_guest_negotiated() {
    let offered = word(&[GUEST_TSO4, GUEST_USO4, GUEST_USO6, HOST_USO]);
    require!(common::root());
    let mut b = bench(offered);
    assert_eq!(b.driver.transport.device().tap_offloads(), TapOffloads::NONE);
    b.up(offered);
    assert_eq!(
        b.driver.transport.device().tap_offloads(),
        TapOffloads::CSUM | TapOffloads::TSO4 | TapOffloads::USO4 | TapOffloads::USO6
    );
    // A guest taking USO4 but not USO6 gets no USO at all: the kernel sets them as a pair.
    b.up(word(&[GUEST_USO4]));
    assert_eq!(b.driver.transport.device().tap_offloads(), TapOffloads::CSUM);
    // A guest without GUEST_CSUM gets no offload.
    b.up(feature_word(&[VERSION_1, MAC]));
    assert_eq!(b.driver.transport.device().tap_offloads(), TapOffloads::NONE);
    // A driver that breaks a feature requirement does not get FEATURES_OK.
    assert!(!b.driver.negotiate(feature_word(&[VERSION_1, GUEST_USO4])));
}

// ---- Transmit -----------------------------------------------------------------------

#[test]
fn a_plain_udp_frame_reaches_a_socket_in_the_namespace() {
    require!(common::root());
    let mut b = bench(word(&[]));
    b.up(word(&[]));
    let packets_before = b.ns.counter(TAP, "rx_packets");
    let frame = b.udp_to_host(b"hello from the guest", false);
    b.transmit([0; 12], &frame);

    let mut buf = [0u8; 2048];
    let (len, from) = b.socket.recv_from(&mut buf).expect("datagram");
    assert_eq!(&buf[..len], b"hello from the guest");
    assert_eq!(from.ip(), Ipv4Addr::from(GUEST));
    assert_eq!(b.ns.counter(TAP, "rx_packets"), packets_before + 1);
    let stats = b.stats();
    assert_eq!((stats.tx_frames, stats.tx_bytes), (1, frame.len() as u64));
    wait_for("a used-buffer interrupt", || b.irq.used() >= 1);
    assert_eq!(b.driver.read(reg::INTERRUPT_STATUS) & 1, 1);
}

#[test]
fn a_uso_frame_is_delivered_by_the_kernel_as_three_datagrams() {
    let features = word(&[HOST_USO]);
    require!(common::root());
    let mut b = bench(features);
    b.up(features);
    let packets_before = b.ns.counter(TAP, "rx_packets");
    let data = gso_data();
    let frame = b.udp_to_host(&data, true);
    let csum_start = (ETH_HLEN + IPV4_HLEN) as u16;
    let header = vnet_header(F_NEEDS_CSUM, GSO_UDP_L4, csum_start + 8, GSO_SIZE, csum_start, 6);
    b.transmit(header, &frame);

    for (i, segment) in data.chunks(usize::from(GSO_SIZE)).enumerate() {
        let mut buf = [0u8; 2048];
        let len = b.socket.recv(&mut buf).expect("segment");
        assert_eq!(&buf[..len], segment, "segment {i}");
    }
    assert_eq!(
        b.ns.counter(TAP, "rx_packets"),
        packets_before + 1,
        "one frame crossed the TAP"
    );
    assert_eq!(b.stats().tx_frames, 1);

    // The same frame with gso_size 0 is refused before the kernel sees it.
    let header = vnet_header(F_NEEDS_CSUM, GSO_UDP_L4, csum_start + 8, 0, csum_start, 6);
    b.transmit(header, &frame);
    assert_eq!(b.stats().tx_dropped_bad_gso, 1);
    assert_eq!(b.ns.counter(TAP, "rx_packets"), packets_before + 1);
    b.still_transmits("after gso_size 0");
}

#[test]
fn a_frame_through_an_indirect_table_is_sent_when_indirect_desc_is_negotiated() {
    let features = word(&[INDIRECT_DESC]);
    require!(common::root());
    let mut b = bench(features);
    b.up(features);
    let frame = b.udp_to_host(b"indirect", false);
    let addr = b.tx_buffer();
    b.driver.write_bytes(addr, &[0; 12]);
    b.driver.write_bytes(addr + 12, &frame);
    let table = b.tx_buffer();
    b.driver.write_desc_at(table, addr, 12, F_NEXT, 1);
    b.driver.write_desc_at(table + 16, addr + 12, frame.len() as u32, 0, 0);
    let head = b.driver.take_descs(TX, 1);
    b.driver.write_desc(TX, head, table, 32, F_INDIRECT, 0);
    b.driver.publish(TX, head);
    b.driver.notify(TX);
    assert_eq!(b.driver.wait_used(TX, 1), [(u32::from(head), 0)]);
    let mut buf = [0u8; 64];
    let len = b.socket.recv(&mut buf).expect("datagram");
    assert_eq!(&buf[..len], b"indirect");
}

#[test]
fn with_event_idx_the_device_interrupts_only_past_used_event() {
    let features = word(&[EVENT_IDX]);
    require!(common::root());
    let mut b = bench(features);
    b.up(features);
    // "Interrupt me after the 6th buffer": the first one used makes no interrupt.
    b.driver.set_used_event(TX, 5);
    let frame = b.udp_to_host(b"quiet", false);
    b.transmit([0; 12], &frame);
    // "Interrupt me after the 2nd": the second one does.
    b.driver.set_used_event(TX, 1);
    b.transmit([0; 12], &frame);
    wait_for("the interrupt for the second buffer", || b.irq.used() >= 1);
    // The worker decides in order, so the first decision was made before the second.
    assert_eq!(b.irq.used(), 1);
    // The device publishes avail_event so that the driver knows when to notify.
    let queue = &b.driver.queues[TX];
    let avail_event_at = queue.used + 4 + 8 * u64::from(queue.size);
    let avail_event = u16::from_le_bytes(b.driver.read_bytes(avail_event_at, 2).try_into().unwrap());
    assert_eq!(avail_event, 2);
}

#[test]
fn an_ioeventfd_style_notification_works_like_the_register_write() {
    require!(common::root());
    let mut b = bench(word(&[]));
    b.up(word(&[]));
    assert_eq!(QUEUE_NOTIFY_OFFSET, 0x50);
    let frame = b.udp_to_host(b"via eventfd", false);
    let addr = b.tx_buffer();
    b.driver.write_bytes(addr, &[0; 12]);
    b.driver.write_bytes(addr + 12, &frame);
    b.driver.add_chain(TX, &[(addr, 12 + frame.len() as u32, false)]);
    // What KVM does for a registered ioeventfd: signal it, no MMIO exit.
    let (_, event) = b
        .driver
        .transport
        .queue_notify_events()
        .find(|(index, _)| *index == TX as u32)
        .unwrap();
    event.write(1).unwrap();
    b.driver.wait_used(TX, 1);
    let mut buf = [0u8; 64];
    let len = b.socket.recv(&mut buf).expect("datagram");
    assert_eq!(&buf[..len], b"via eventfd");
}

/// A transmit case the device must refuse, and the counter that says so.
struct Malformed {
    name: &'static str,
    /// Writes the chain (by hand) and returns its head.
    build: fn(&mut Bench) -> u16,
    counter: fn(&NetStats) -> u64,
}

fn frame_chain(b: &mut Bench, header: [u8; 12], frame: &[u8]) -> u16 {
    let addr = b.tx_buffer();
    b.driver.write_bytes(addr, &header);
    b.driver.write_bytes(addr + 12, frame);
    let head = b.driver.take_descs(TX, 2);
    let size = b.driver.queues[TX].size;
    b.driver.write_desc(TX, head, addr, 12, F_NEXT, (head + 1) % size);
    b.driver
        .write_desc(TX, (head + 1) % size, addr + 12, frame.len() as u32, 0, 0);
    head
}

fn malformed_cases() -> Vec<Malformed> {
    vec![
        Malformed {
            name: "a buffer outside guest memory",
            build: |b| {
                let head = b.driver.take_descs(TX, 1);
                b.driver.write_desc(TX, head, 0x1_0000_0000, 100, 0, 0);
                head
            },
            counter: |s| s.bad_descriptors,
        },
        Malformed {
            name: "a length running past the end of guest memory",
            build: |b| {
                let head = b.driver.take_descs(TX, 1);
                let addr = b.tx_buffer();
                b.driver.write_desc(TX, head, addr, 0xffff_0000, 0, 0);
                head
            },
            counter: |s| s.bad_descriptors,
        },
        Malformed {
            name: "a descriptor loop",
            build: |b| {
                let head = b.driver.take_descs(TX, 2);
                let addr = b.tx_buffer();
                b.driver.write_desc(TX, head, addr, 64, F_NEXT, head + 1);
                b.driver.write_desc(TX, head + 1, addr, 64, F_NEXT, head);
                head
            },
            counter: |s| s.bad_descriptors,
        },
        Malformed {
            name: "a next index outside the queue",
            build: |b| {
                let head = b.driver.take_descs(TX, 1);
                let addr = b.tx_buffer();
                b.driver.write_desc(TX, head, addr, 64, F_NEXT, 999);
                head
            },
            counter: |s| s.bad_descriptors,
        },
        Malformed {
            name: "a write-only descriptor in a transmit chain",
            build: |b| {
                let frame = b.udp_to_host(b"x", false);
                let head = frame_chain(b, [0; 12], &frame);
                let addr = b.driver.read_bytes(b.driver.queues[TX].desc + 16 * u64::from(head), 8);
                let addr = u64::from_le_bytes(addr.try_into().unwrap());
                b.driver.write_desc(TX, head, addr, 12, F_NEXT | F_WRITE, head + 1);
                head
            },
            counter: |s| s.bad_descriptors,
        },
        Malformed {
            name: "an indirect table without INDIRECT_DESC",
            build: |b| {
                let table = b.tx_buffer();
                let frame = b.udp_to_host(b"x", false);
                b.driver.write_bytes(table + 64, &[0; 12]);
                b.driver.write_bytes(table + 76, &frame);
                b.driver.write_desc_at(table, table + 64, 12 + frame.len() as u32, 0, 0);
                let head = b.driver.take_descs(TX, 1);
                b.driver.write_desc(TX, head, table, 16, F_INDIRECT, 0);
                head
            },
            counter: |s| s.bad_descriptors,
        },
        Malformed {
            name: "zero-length descriptors",
            build: |b| {
                let head = b.driver.take_descs(TX, 2);
                let addr = b.tx_buffer();
                b.driver.write_desc(TX, head, addr, 0, F_NEXT, head + 1);
                b.driver.write_desc(TX, head + 1, addr, 0, 0, 0);
                head
            },
            counter: |s| s.tx_dropped_short,
        },
        Malformed {
            name: "a buffer shorter than the 12-byte header",
            build: |b| {
                let head = b.driver.take_descs(TX, 1);
                let addr = b.tx_buffer();
                b.driver.write_desc(TX, head, addr, 8, 0, 0);
                head
            },
            counter: |s| s.tx_dropped_short,
        },
        Malformed {
            name: "USO without HOST_USO negotiated",
            build: |b| {
                let frame = b.udp_to_host(&gso_data(), true);
                frame_chain(b, vnet_header(F_NEEDS_CSUM, GSO_UDP_L4, 42, 1000, 34, 6), &frame)
            },
            counter: |s| s.tx_dropped_bad_gso,
        },
        Malformed {
            name: "TSO4 without HOST_TSO4 negotiated",
            build: |b| {
                let frame = b.udp_to_host(&gso_data(), true);
                frame_chain(b, vnet_header(F_NEEDS_CSUM, GSO_TCPV4, 54, 1448, 34, 16), &frame)
            },
            counter: |s| s.tx_dropped_bad_gso,
        },
        Malformed {
            name: "an unknown GSO type",
            build: |b| {
                let frame = b.udp_to_host(b"x", false);
                frame_chain(b, vnet_header(0, 9, 0, 100, 0, 0), &frame)
            },
            counter: |s| s.tx_dropped_bad_gso,
        },
        Malformed {
            name: "a checksum position beyond the frame",
            build: |b| {
                let frame = b.udp_to_host(b"x", true);
                frame_chain(b, vnet_header(F_NEEDS_CSUM, GSO_NONE, 0, 0, 2000, 6), &frame)
            },
            counter: |s| s.tx_dropped_bad_csum,
        },
        Malformed {
            name: "DATA_VALID set by the driver",
            build: |b| {
                let frame = b.udp_to_host(b"x", false);
                frame_chain(b, vnet_header(F_DATA_VALID, GSO_NONE, 0, 0, 0, 0), &frame)
            },
            counter: |s| s.tx_dropped_bad_flags,
        },
    ]
}

#[test]
fn malformed_transmit_chains_are_dropped_and_counted_and_the_device_goes_on() {
    require!(common::root());
    let mut b = bench(word(&[]));
    b.up(word(&[]));
    let packets_before = b.ns.counter(TAP, "rx_packets");
    for case in malformed_cases() {
        let before = b.stats();
        let head = (case.build)(&mut b);
        b.driver.publish(TX, head);
        b.driver.notify(TX);
        assert_eq!(
            b.driver.wait_used(TX, 1),
            [(u32::from(head), 0)],
            "{}: the chain comes back unused",
            case.name
        );
        let after = b.stats();
        assert_eq!((case.counter)(&after), (case.counter)(&before) + 1, "{}", case.name);
        assert_eq!(after.tx_frames, before.tx_frames, "{}: nothing sent", case.name);
        b.still_transmits(case.name);
    }
    let cases = malformed_cases().len() as u64;
    assert_eq!(
        b.ns.counter(TAP, "rx_packets"),
        packets_before + cases,
        "only the good frames crossed the TAP"
    );
    assert_eq!(b.driver.status() & status::DEVICE_NEEDS_RESET, 0);
    assert_eq!(b.stats().needs_reset_events, 0);
}

#[test]
fn needs_csum_without_csum_negotiated_is_dropped() {
    let features = feature_word(&[VERSION_1, MAC]);
    require!(common::root());
    let mut b = bench(word(&[]));
    b.up(features);
    let frame = b.udp_to_host(b"x", true);
    b.transmit(vnet_header(F_NEEDS_CSUM, GSO_NONE, 0, 0, 34, 6), &frame);
    assert_eq!(b.stats().tx_dropped_bad_csum, 1);
    b.still_transmits("after NEEDS_CSUM");
}

/// A way to break the transmit ring, by name.
type Breaker = (&'static str, fn(&mut Bench));

#[test]
fn a_ring_the_device_cannot_trust_means_needs_reset_and_a_reset_recovers() {
    require!(common::root());
    let mut b = bench(word(&[]));
    // A head index outside the queue, and an available index running ahead by more
    // than the queue size: neither can be answered through the used ring.
    let breakers: [Breaker; 2] = [
        ("head index 300 in a 256-entry queue", |b| b.driver.publish(TX, 300)),
        ("available index 257 ahead", |b| b.driver.set_avail_idx(TX, 257)),
    ];
    for (round, (name, breaker)) in breakers.into_iter().enumerate() {
        b.up(word(&[]));
        let configs_before = b.irq.config();
        breaker(&mut b);
        b.driver.notify(TX);
        wait_for(name, || b.driver.read(reg::STATUS) & status::DEVICE_NEEDS_RESET != 0);
        assert_eq!(b.irq.config(), configs_before + 1, "{name}: config interrupt");
        assert_eq!(b.driver.read(reg::INTERRUPT_STATUS) & 2, 2);
        assert_eq!(b.stats().needs_reset_events, round as u64 + 1);
        // The driver resets; the device comes up again and works.
        b.driver.write(reg::STATUS, 0);
        assert_eq!(b.driver.status(), 0);
        b.up(word(&[]));
        b.still_transmits(name);
    }
}

// ---- Receive ------------------------------------------------------------------------

fn receive_udp_gso(extra: &[u32], mrg: bool) -> Vec<(VnetHeader, Vec<u8>, usize)> {
    let mut features = word(extra);
    if mrg {
        features |= feature_word(&[MRG_RXBUF]);
    }
    let mut b = bench(features);
    b.up(features);
    let mut buffers = HashMap::new();
    if mrg {
        b.post_rx(32, 1024, &mut buffers);
    } else {
        // Without MRG_RXBUF a guest taking GSO frames posts 64 KiB buffers.
        b.post_rx(4, (HDR_LEN + 65550) as u32, &mut buffers);
    }
    let sender = b.sender();
    send_segmented(&sender, &gso_data(), GSO_SIZE);

    let uso = extra.contains(&GUEST_USO4) && extra.contains(&GUEST_USO6);
    let frames = if uso { 1 } else { 3 };
    let received = (0..frames).map(|_| b.next_udp_frame(&buffers)).collect();
    assert_eq!(b.stats().rx_frames, frames as u64);
    received
}

#[test]
fn a_udp_gso_send_arrives_as_one_uso_frame_when_the_guest_took_uso() {
    require!(common::root());
    let frames = receive_udp_gso(&[GUEST_USO4, GUEST_USO6], false);
    let (header, frame, num_buffers) = &frames[0];
    assert_eq!(header.gso_type, GSO_UDP_L4);
    assert_eq!(header.gso_size, GSO_SIZE);
    assert_ne!(header.flags & F_NEEDS_CSUM, 0);
    assert_eq!(*num_buffers, 1, "without MRG_RXBUF num_buffers is 1");
    assert_eq!(udp_payload(frame), gso_data(), "all segments in one frame");
}

#[test]
fn a_uso_frame_spans_merged_buffers_with_mrg_rxbuf() {
    require!(common::root());
    let frames = receive_udp_gso(&[GUEST_USO4, GUEST_USO6], true);
    let (header, frame, num_buffers) = &frames[0];
    assert_eq!(header.gso_type, GSO_UDP_L4);
    let total = HDR_LEN + frame.len();
    assert_eq!(total, HDR_LEN + 42 + 3000);
    assert_eq!(*num_buffers, total.div_ceil(1024), "3054 bytes in 1 KiB buffers");
    assert_eq!(udp_payload(frame), gso_data());
}

#[test]
fn a_udp_gso_send_arrives_as_separate_frames_without_guest_uso() {
    // USO4 alone is not enough: the TAP takes USO4 and USO6 only together.
    require!(common::root());
    let frames = receive_udp_gso(&[GUEST_USO4], false);
    for ((header, frame, num_buffers), segment) in frames.iter().zip(gso_data().chunks(1000)) {
        assert_eq!(header.gso_type, GSO_NONE);
        assert_eq!(*num_buffers, 1);
        assert_eq!(udp_payload(frame), segment, "one segment per frame, in order");
    }
}

#[test]
fn separate_frames_with_mrg_rxbuf_each_say_one_buffer() {
    require!(common::root());
    let frames = receive_udp_gso(&[], true);
    for ((header, frame, num_buffers), segment) in frames.iter().zip(gso_data().chunks(1000)) {
        assert_eq!(header.gso_type, GSO_NONE);
        assert_eq!(*num_buffers, 2, "1042 bytes of frame and header in 1 KiB buffers");
        assert_eq!(udp_payload(frame), segment);
    }
}

#[test]
fn a_frame_waits_for_receive_buffers_instead_of_being_lost() {
    require!(common::root());
    let mut b = bench(word(&[]));
    b.up(word(&[]));
    let sender = b.sender();
    sender.send_to(b"wait for me", (Ipv4Addr::from(GUEST), PORT)).unwrap();
    wait_for("the frame to wait for buffers", || b.stats().rx_waited_for_buffers >= 1);
    assert_eq!(b.stats().rx_frames, 0);

    let mut buffers = HashMap::new();
    b.post_rx(4, 2048, &mut buffers);
    let (header, frame, _) = b.next_udp_frame(&buffers);
    assert_eq!(udp_payload(&frame), b"wait for me");
    assert_eq!(header.num_buffers, 1);
    assert_eq!(b.stats().rx_dropped_too_big, 0);
    wait_for("a used-buffer interrupt", || b.irq.used() >= 1);
}

#[test]
fn a_frame_too_big_for_the_buffer_is_dropped_and_the_buffer_kept() {
    require!(common::root());
    let mut b = bench(word(&[]));
    b.up(word(&[]));
    let mut buffers = HashMap::new();
    b.post_rx(1, 128, &mut buffers);
    let sender = b.sender();
    sender.send_to(&[7u8; 1000], (Ipv4Addr::from(GUEST), PORT)).unwrap();
    wait_for("the drop", || b.stats().rx_dropped_too_big >= 1);
    sender.send_to(b"small", (Ipv4Addr::from(GUEST), PORT)).unwrap();
    let (_, frame, _) = b.next_udp_frame(&buffers);
    assert_eq!(udp_payload(&frame), b"small");
    assert_eq!(b.stats().rx_dropped_too_big, 1);
}

#[test]
fn a_malformed_receive_chain_is_returned_unused_and_the_next_one_is_filled() {
    for mrg in [false, true] {
        let features = word(if mrg { &[MRG_RXBUF] } else { &[] });
        require!(common::root());
        let mut b = bench(features);
        b.up(features);
        let mut buffers = HashMap::new();
        let addr = buffer_area(RX) + 0x80_000;
        let bad = [
            // Device-readable: the wrong direction for a receive buffer.
            b.driver.add_chain(RX, &[(addr, 2048, false)]),
            // Shorter than the 12-byte header.
            b.driver.add_chain(RX, &[(addr, 8, true)]),
            // Outside guest memory.
            b.driver.add_chain(RX, &[(0x1_0000_0000, 2048, true)]),
        ];
        b.post_rx(2, 2048, &mut buffers);
        let sender = b.sender();
        sender
            .send_to(b"after bad chains", (Ipv4Addr::from(GUEST), PORT))
            .unwrap();

        let returned = b.driver.wait_used(RX, 3);
        let expected: Vec<_> = bad.iter().map(|&head| (u32::from(head), 0)).collect();
        assert_eq!(returned, expected, "mrg {mrg}: returned unused, in order");
        let (_, frame, _) = b.next_udp_frame(&buffers);
        assert_eq!(udp_payload(&frame), b"after bad chains");
        assert_eq!(b.stats().bad_descriptors, 3);
        assert_eq!(b.driver.status() & status::DEVICE_NEEDS_RESET, 0);
    }
}

#[test]
fn without_guest_csum_received_headers_carry_no_flags() {
    let features = feature_word(&[VERSION_1, MAC]);
    require!(common::root());
    let mut b = bench(features);
    b.up(features);
    let mut buffers = HashMap::new();
    b.post_rx(4, 2048, &mut buffers);
    let sender = b.sender();
    sender.send_to(b"flags", (Ipv4Addr::from(GUEST), PORT)).unwrap();
    let (header, frame, _) = b.next_udp_frame(&buffers);
    assert_eq!(udp_payload(&frame), b"flags");
    assert_eq!(header.flags, 0);
    assert_eq!(header.gso_type, GSO_NONE);
    assert_eq!(header.num_buffers, 1);
}

#[test]
fn a_tap_deleted_under_the_device_is_counted_once_not_spun_on() {
    require!(common::root());
    let mut b = bench(word(&[]));
    b.up(word(&[]));
    b.ns.ip(&["link", "del", TAP]);
    wait_for("the read error", || b.stats().rx_tap_errors >= 1);
    // The worker serves the transmit queue afterwards: had it kept polling the dead
    // TAP, epoll would have reported the error again on the way.
    let frame = b.udp_to_host(b"into the void", false);
    b.transmit([0; 12], &frame);
    let stats = b.stats();
    assert_eq!(stats.tx_dropped_tap, 1, "the write fails and is counted");
    assert_eq!(stats.rx_tap_errors, 1);
    assert_eq!(b.driver.status() & status::DEVICE_NEEDS_RESET, 0);
}

/// A descriptor's fields: garbage, but often pointing into `area` (or just past the
/// end of guest memory), so that the device gets past its first check.
fn random_descriptor(rng: &mut XorShift, area: std::ops::Range<u64>) -> (u64, u32, u16, u16) {
    let r = rng.next();
    let addr = match r & 3 {
        0 => rng.next(),
        1 => MEM_SIZE as u64 - rng.next() % 0x1000,
        _ => area.start + rng.next() % (area.end - area.start),
    };
    let len = match (r >> 2) & 3 {
        0 => rng.next() as u32,
        1 => 0,
        _ => (rng.next() % 0x2_0000) as u32,
    };
    let flags = ((r >> 4) & 7) as u16; // NEXT, WRITE, INDIRECT in any mix
    let next = ((r >> 8) % 300) as u16; // sometimes outside the queue
    (addr, len, flags, next)
}

#[test]
fn random_descriptor_tables_never_hurt_the_device() {
    let features = word(&[INDIRECT_DESC, EVENT_IDX, MRG_RXBUF]);
    require!(common::root());
    let mut b = bench(features);
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    b.up(features);
    let sender = b.sender();
    for round in 0..20 {
        // Receive buffers only where the rings and transmit buffers are not: the device
        // writes frames there, and a guest that points them at its own rings gets the
        // NEEDS_RESET it asked for (tested above), not this test's point.
        let areas = [buffer_area(RX)..buffer_area(RX) + 0x80_0000, 0..MEM_SIZE as u64];
        for q in [RX, TX] {
            for index in 0..256 {
                let (addr, len, flags, next) = random_descriptor(&mut rng, areas[q].clone());
                b.driver.write_desc(q, index, addr, len, flags, next);
            }
        }
        // Heads inside the queue: every transmit chain must come back, used or refused.
        for _ in 0..64 {
            let head = (rng.next() % 256) as u16;
            b.driver.publish(TX, head);
            // A driver never has more than a ring's worth outstanding.
            let outstanding = b.driver.queues[RX].avail_idx.wrapping_sub(b.driver.used_idx(RX));
            if outstanding < 256 {
                let head = (rng.next() % 256) as u16;
                b.driver.publish(RX, head);
            }
        }
        b.driver.notify(TX);
        b.driver.notify(RX);
        sender
            .send_to(&[round as u8; 300], (Ipv4Addr::from(GUEST), PORT))
            .unwrap();
        b.driver.wait_used(TX, 64);
        // Whatever the receive side made of it, the device still transmits.
        b.still_transmits(&format!("round {round}"));
        b.driver.take_used(RX);
    }
    let stats = b.stats();
    assert_eq!(stats.worker_panics, 0);
    assert_eq!(stats.needs_reset_events, 0, "{stats}");
    assert!(stats.bad_descriptors > 0);
    // And a reset gives a clean device.
    b.driver.write(reg::STATUS, 0);
    b.up(features);
    b.still_transmits("after the reset");
    let mut buffers = HashMap::new();
    b.post_rx(4, 2048, &mut buffers);
    sender.send_to(b"clean again", (Ipv4Addr::from(GUEST), PORT)).unwrap();
    let (_, frame, _) = b.next_udp_frame(&buffers);
    assert_eq!(udp_payload(&frame), b"clean again");
    assert_eq!(b.stats().worker_panics, 0);
}

#[test]
fn a_malformed_chain_in_the_middle_of_a_merged_frame_drops_that_frame_only() {
    let features = word(&[MRG_RXBUF]);
    require!(common::root());
    let mut b = bench(features);
    b.up(features);
    let mut buffers = HashMap::new();
    b.post_rx(1, 1024, &mut buffers);
    let first = *buffers.keys().next().unwrap();
    let bad = b.driver.add_chain(RX, &[(buffer_area(RX) + 0x80_000, 1024, false)]);
    b.post_rx(4, 1024, &mut buffers);
    let sender = b.sender();
    // 12 + 42 + 1400 bytes: two buffers, and the second one offered is malformed.
    sender.send_to(&[1u8; 1400], (Ipv4Addr::from(GUEST), PORT)).unwrap();
    assert_eq!(b.driver.wait_used(RX, 2), [(u32::from(bad), 0), (first, 0)]);
    let stats = b.stats();
    assert_eq!((stats.bad_descriptors, stats.rx_dropped_bad_chain), (1, 1));

    sender.send_to(&[2u8; 1400], (Ipv4Addr::from(GUEST), PORT)).unwrap();
    let (_, frame, num_buffers) = b.next_udp_frame(&buffers);
    assert_eq!(num_buffers, 2);
    assert_eq!(udp_payload(&frame), [2u8; 1400]);
}
