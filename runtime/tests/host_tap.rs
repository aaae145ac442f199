//! The TAP backend against the real kernel, each test inside a network namespace of its
//! own: what happens to the interface at drop, which offload sets the kernel takes, and
//! what frames look like on the TAP, including a UDP GSO send that the TAP hands over as
//! one USO frame. That last fact is what the runtime's USO path builds on.

mod common;

use std::io::{IoSlice, IoSliceMut};
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::AsRawFd;

use common::{require, NetNs};
use vmc_runtime::host::{Errno, Tap, TapError, TapOffloads, VNET_HDR_LEN};

const TAP: &str = "vmct0";
const LOCAL: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const PEER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const PEER_MAC: &str = "02:00:00:77:00:02";
const PEER_PORT: u16 = 7777;

/// virtio-net header fields (virtio 1.x, little-endian).
const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
const VIRTIO_NET_HDR_GSO_NONE: u8 = 0;
const VIRTIO_NET_HDR_GSO_UDP_L4: u8 = 5;

const ETH_HLEN: u16 = 14;
const IPV4_HLEN: u16 = 20;
const UDP_CSUM_OFFSET: u16 = 6;

fn open_in(ns: &NetNs, name: &str) -> Tap {
    let name = name.to_string();
    ns.run(move || Tap::open_or_create(&name))
        .unwrap_or_else(|error| panic!("open TAP: {error}"))
}

#[test]
fn a_tap_we_created_disappears_when_dropped() {
    require!(common::root());
    let ns = NetNs::create();
    let tap = open_in(&ns, TAP);
    assert!(tap.created_by_us());
    assert_eq!(tap.name(), TAP);
    assert!(ns.ip_succeeds(&["link", "show", "dev", TAP]));
    let sysfs_index = ns.exec(&["cat", &format!("/sys/class/net/{TAP}/ifindex")]);
    assert_eq!(sysfs_index.trim(), tap.ifindex().to_string());

    drop(tap);
    // The fd is close-on-exec, but a child another test thread forks at this moment
    // holds a copy until its exec: the interface goes once the last copy closes.
    let gone = (0..50).any(|_| {
        let present = ns.ip_succeeds(&["link", "show", "dev", TAP]);
        if present {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        !present
    });
    assert!(gone, "a non-persistent TAP must vanish when its fd closes");
}

#[test]
fn a_persistent_tap_is_opened_and_survives_drop() {
    require!(common::root());
    let ns = NetNs::create();
    ns.ip(&["tuntap", "add", "dev", TAP, "mode", "tap", "vnet_hdr"]);

    let tap = open_in(&ns, TAP);
    assert!(!tap.created_by_us());
    tap.set_offload(TapOffloads::CSUM)
        .expect("a persistent TAP takes offloads like any other");
    drop(tap);

    assert!(
        ns.ip_succeeds(&["link", "show", "dev", TAP]),
        "an administrator's TAP must stay"
    );
}

#[test]
fn creating_exclusively_refuses_an_existing_interface() {
    require!(common::root());
    let ns = NetNs::create();
    ns.ip(&["tuntap", "add", "dev", TAP, "mode", "tap", "vnet_hdr"]);
    let error = ns.run(|| Tap::create_exclusive(TAP)).expect_err("the name is taken");
    assert_eq!(error.errno(), Some(Errno(libc::EBUSY)));
    assert!(error.to_string().contains("already exists"), "{error}");
}

#[test]
fn csum_with_uso4_and_uso6_is_accepted() {
    require!(common::root());
    let ns = NetNs::create();
    let tap = open_in(&ns, TAP);
    tap.set_offload(TapOffloads::CSUM | TapOffloads::USO4 | TapOffloads::USO6)
        .unwrap_or_else(|error| panic!("USO (Linux 6.2+) refused: {error}"));
}

#[test]
fn uso4_without_csum_is_rejected_with_a_clear_error() {
    require!(common::root());
    let ns = NetNs::create();
    let tap = open_in(&ns, TAP);
    let error = tap
        .set_offload(TapOffloads::USO4)
        .expect_err("every offload needs csum");
    assert!(
        matches!(
            &error,
            TapError::Ioctl {
                ioctl: "TUNSETOFFLOAD",
                errno: Errno(libc::EINVAL),
                ..
            }
        ),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("TUNSETOFFLOAD") && message.contains("EINVAL"),
        "{message}"
    );
    assert!(message.contains("needs csum"), "{message}");
}

#[test]
fn a_frame_written_with_a_vnet_header_is_received_by_the_interface() {
    require!(common::root());
    let ns = NetNs::create();
    let tap = open_in(&ns, TAP);
    ns.ip(&["link", "set", TAP, "up"]);
    let packets_before = ns.counter(TAP, "rx_packets");
    let bytes_before = ns.counter(TAP, "rx_bytes");

    let header = [0u8; VNET_HDR_LEN]; // flags 0, gso_type NONE
    let mut frame = Vec::new();
    frame.extend_from_slice(&[0xff; 6]); // broadcast
    frame.extend_from_slice(&[0x02, 0, 0, 0x77, 0, 0x01]);
    frame.extend_from_slice(&0x88b5_u16.to_be_bytes()); // local experimental ethertype
    frame.resize(60, 0x5a);
    let written = tap
        .write_frame(&[IoSlice::new(&header), IoSlice::new(&frame)])
        .expect("writev");
    assert_eq!(written, Some(VNET_HDR_LEN + frame.len()));

    assert_eq!(ns.counter(TAP, "rx_packets"), packets_before + 1);
    assert_eq!(ns.counter(TAP, "rx_bytes"), bytes_before + frame.len() as u64);
}

#[test]
fn a_udp_datagram_arrives_with_a_complete_checksum_when_the_tap_has_no_offloads() {
    require!(common::root());
    let net = Wired::new(TapOffloads::NONE);
    let payload = b"hello from the vmc tap test";
    net.socket.send_to(payload, (PEER, PEER_PORT)).expect("send");

    let frame = net.next_udp_frame();
    assert_eq!(frame.header.gso_type, VIRTIO_NET_HDR_GSO_NONE);
    assert_eq!(frame.header.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM, 0);
    assert_eq!(frame.udp_payload(), payload);
    assert!(frame.udp_checksum_is_valid(), "the stack completed the checksum");
}

#[test]
fn a_udp_datagram_arrives_with_a_partial_checksum_when_the_tap_takes_csum() {
    require!(common::root());
    let net = Wired::new(TapOffloads::CSUM);
    let payload = b"checksum left to the device";
    net.socket.send_to(payload, (PEER, PEER_PORT)).expect("send");

    let frame = net.next_udp_frame();
    assert_eq!(frame.header.gso_type, VIRTIO_NET_HDR_GSO_NONE);
    assert_ne!(frame.header.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM, 0);
    assert_eq!(frame.header.csum_start, ETH_HLEN + IPV4_HLEN);
    assert_eq!(frame.header.csum_offset, UDP_CSUM_OFFSET);
    assert_eq!(frame.udp_payload(), payload);
}

#[test]
fn a_udp_gso_send_arrives_as_one_uso_frame_when_the_tap_takes_uso() {
    require!(common::root());
    let net = Wired::new(TapOffloads::CSUM | TapOffloads::USO4 | TapOffloads::USO6);
    let data = gso_data();
    net.send_segmented(&data, GSO_SIZE);

    let frame = net.next_udp_frame();
    assert_eq!(frame.header.gso_type, VIRTIO_NET_HDR_GSO_UDP_L4);
    assert_eq!(frame.header.gso_size, GSO_SIZE);
    assert_ne!(frame.header.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM, 0);
    assert_eq!(frame.header.csum_start, ETH_HLEN + IPV4_HLEN);
    assert_eq!(frame.header.csum_offset, UDP_CSUM_OFFSET);
    assert_eq!(frame.udp_payload(), &data[..], "all segments in one frame");
}

#[test]
fn a_udp_gso_send_arrives_as_separate_frames_when_the_tap_lacks_uso() {
    require!(common::root());
    let net = Wired::new(TapOffloads::CSUM);
    let data = gso_data();
    net.send_segmented(&data, GSO_SIZE);

    let mut received = Vec::new();
    for chunk in data.chunks(GSO_SIZE.into()) {
        let frame = net.next_udp_frame();
        assert_eq!(frame.header.gso_type, VIRTIO_NET_HDR_GSO_NONE);
        assert_eq!(frame.udp_payload(), chunk, "one segment per frame, in order");
        received.extend_from_slice(frame.udp_payload());
    }
    assert_eq!(received, data);
}

const GSO_SIZE: u16 = 1000;

/// Three segments' worth, each byte telling where it belongs.
fn gso_data() -> Vec<u8> {
    (0..3 * usize::from(GSO_SIZE)).map(|i| (i % 251) as u8).collect()
}

/// A namespace with a TAP at 10.77.0.1/24, a peer 10.77.0.2 reachable through it by a
/// static neighbour entry (no ARP), and a UDP socket bound there. IPv6 is off in the
/// namespace so that no router solicitations share the TAP; other frames are skipped.
struct Wired {
    tap: Tap,
    socket: UdpSocket,
    _ns: NetNs,
}

impl Wired {
    fn new(offloads: TapOffloads) -> Wired {
        let ns = NetNs::create();
        let tap = ns.run(move || {
            // Best effort: a kernel without IPv6 has nothing to switch off.
            let _ = std::fs::write("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1");
            let tap = Tap::open_or_create(TAP)?;
            tap.set_offload(offloads)?;
            Ok::<_, TapError>(tap)
        });
        let tap = tap.unwrap_or_else(|error| panic!("TAP setup: {error}"));
        ns.ip(&["link", "set", TAP, "up"]);
        ns.ip(&["addr", "add", &format!("{LOCAL}/24"), "dev", TAP]);
        let peer = PEER.to_string();
        ns.ip(&[
            "neigh",
            "add",
            &peer,
            "lladdr",
            PEER_MAC,
            "dev",
            TAP,
            "nud",
            "permanent",
        ]);
        let socket = ns
            .run(|| UdpSocket::bind((LOCAL, 0)))
            .expect("bind a UDP socket in the namespace");
        Wired { tap, socket, _ns: ns }
    }

    /// One `send` that the kernel segments every `gso_size` bytes (`UDP_SEGMENT`).
    fn send_segmented(&self, data: &[u8], gso_size: u16) {
        common::set_udp_segment(&self.socket, gso_size);
        let sent = self.socket.send_to(data, (PEER, PEER_PORT)).expect("send");
        assert_eq!(sent, data.len());
    }

    /// The next frame on the TAP that is UDP to the peer's port. Waits at most 10 s for
    /// each frame, only so that a broken kernel path fails instead of hanging.
    fn next_udp_frame(&self) -> TapFrame {
        for _ in 0..64 {
            let mut pollfd = libc::pollfd {
                fd: self.tap.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let ready = unsafe { libc::poll(&mut pollfd, 1, 10_000) };
            assert!(ready > 0, "no frame on the TAP (poll returned {ready})");

            let mut header = [0u8; VNET_HDR_LEN];
            let mut frame = vec![0u8; 65_550];
            let len = self
                .tap
                .read_frame(&mut [IoSliceMut::new(&mut header), IoSliceMut::new(&mut frame)])
                .expect("readv")
                .expect("poll said a frame is waiting");
            assert!(len >= VNET_HDR_LEN, "short read {len}");
            frame.truncate(len - VNET_HDR_LEN);
            let frame = TapFrame {
                header: VnetHeader::parse(&header),
                frame,
            };
            if frame.is_udp_to(PEER_PORT) {
                return frame;
            }
        }
        panic!("64 frames on the TAP and none was our UDP datagram");
    }
}

#[derive(Debug)]
struct VnetHeader {
    flags: u8,
    gso_type: u8,
    gso_size: u16,
    csum_start: u16,
    csum_offset: u16,
}

impl VnetHeader {
    fn parse(bytes: &[u8; VNET_HDR_LEN]) -> VnetHeader {
        let le16 = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
        VnetHeader {
            flags: bytes[0],
            gso_type: bytes[1],
            gso_size: le16(4),
            csum_start: le16(6),
            csum_offset: le16(8),
        }
    }
}

/// An Ethernet frame read from the TAP, with its virtio-net header.
struct TapFrame {
    header: VnetHeader,
    frame: Vec<u8>,
}

impl TapFrame {
    fn ipv4(&self) -> Option<&[u8]> {
        let ethertype = self.frame.get(12..14)?;
        (ethertype == [0x08, 0x00]).then(|| &self.frame[14..])
    }

    fn udp(&self) -> Option<&[u8]> {
        let ip = self.ipv4()?;
        let header_len = usize::from(ip.first()? & 0x0f) * 4;
        (*ip.get(9)? == 17).then(|| ip.get(header_len..)).flatten()
    }

    fn is_udp_to(&self, port: u16) -> bool {
        self.udp()
            .and_then(|udp| udp.get(2..4))
            .is_some_and(|dest| dest == port.to_be_bytes())
    }

    fn udp_payload(&self) -> &[u8] {
        let udp = self.udp().expect("a UDP frame");
        let len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
        assert!(len >= 8 && len <= udp.len(), "UDP length {len} of {}", udp.len());
        &udp[8..len]
    }

    /// The UDP checksum over the IPv4 pseudo-header verifies.
    fn udp_checksum_is_valid(&self) -> bool {
        let ip = self.ipv4().expect("IPv4");
        let udp = self.udp().expect("UDP");
        let len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&ip[12..20]); // source and destination address
        pseudo.extend_from_slice(&[0, 17]);
        pseudo.extend_from_slice(&(len as u16).to_be_bytes());
        pseudo.extend_from_slice(&udp[..len]);
        ones_complement_sum(&pseudo) == 0xffff
    }
}

fn ones_complement_sum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}
