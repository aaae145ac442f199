//! The self-test guest's virtio-net driver against the outside reference: QEMU's
//! `virtio-net-device` over a TAP, on `-M microvm` under this host's KVM.
//!
//! Each test makes a network namespace with a persistent TAP (`tap0`, 10.0.2.3/24, a
//! static neighbour entry for the guest), opens a UDP socket and a packet socket on
//! the TAP there, then boots the guest in QEMU inside the namespace. The guest's flow
//! is checked three ways: the guest's own serial report, the frames on the TAP as the
//! host kernel saw them (virtio-net header included, via PACKET_VNET_HDR), and the
//! datagrams the host's UDP socket received.
//!
//! Needs root, /dev/net/tun, /dev/kvm and `qemu-system-x86_64`: without them a test
//! says why and is skipped, except under `CI=true`, where that is a failure.

#[path = "../../runtime/tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{require, test_name, NetNs};

const QEMU: &str = "qemu-system-x86_64";
const TAP: &str = "tap0";
/// The TAP's own MAC: the guest's destination MAC (letters, to exercise hex parsing).
const TAP_MAC: &str = "02:ab:cd:ef:12:34";
const GUEST_MAC: &str = "52:54:00:12:34:56";
/// Not the guest's defaults (10.0.2.15:5000 to 10.0.2.2:5001), so that the flow
/// arrives only if the guest parsed `selftest.src=` and `selftest.dst=`.
const GUEST: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 2, 16), 6000);
const HOST: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 2, 3), 6001);
const HOST_CIDR: &str = "10.0.2.3/24";
/// Bounds on every wait: QEMU boots this guest in well under a second here.
const LINE_TIMEOUT: Duration = Duration::from_secs(30);
const EXIT_TIMEOUT: Duration = Duration::from_secs(60);
const RECV_TIMEOUT: Duration = Duration::from_secs(5);
/// How long "nothing more arrives" is watched: the guest has exited by then.
const QUIET_TIMEOUT: Duration = Duration::from_millis(300);

/// virtio-net header values as Linux reports them on a packet socket.
const NEEDS_CSUM: u8 = 1;
const GSO_NONE: u8 = 0;
const GSO_UDP_L4: u8 = 5;
/// `PACKET_VNET_HDR` (linux/if_packet.h).
const PACKET_VNET_HDR: libc::c_int = 15;

/// Root, TUN, `ip`, KVM and QEMU: a check for [`require!`].
fn prerequisites() -> Result<(), String> {
    common::root()?;
    common::kvm()?;
    let qemu = Command::new(QEMU)
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    common::has(&format!("`{QEMU}`"), qemu)
}

/// The guest image in a file of its own, removed on drop.
struct ImageFile(PathBuf);

impl ImageFile {
    fn new() -> ImageFile {
        static SERIAL: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "vmc-selftest-{}-{}.elf",
            std::process::id(),
            SERIAL.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, vmc_selftest::build_image().expect("self-test image")).expect("write the image");
        ImageFile(path)
    }
}

impl Drop for ImageFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A namespace with the TAP and the host's two sockets in it.
struct Lab {
    udp: UdpSocket,
    packets: OwnedFd,
    // Last: dropped after the sockets and after any QEMU that the test holds.
    ns: NetNs,
}

impl Lab {
    fn new() -> Lab {
        let ns = NetNs::create();
        ns.guest_link(TAP, TAP_MAC, HOST_CIDR, &GUEST.ip().to_string(), GUEST_MAC);
        let (udp, packets) = ns.run(|| {
            let udp = UdpSocket::bind(HOST).expect("bind the host's UDP socket");
            udp.set_read_timeout(Some(RECV_TIMEOUT)).unwrap();
            (udp, packet_socket(TAP))
        });
        Lab { udp, packets, ns }
    }

    /// The UDP datagrams that arrived for the host, until none came for a while.
    fn datagrams(&self, expected: usize) -> Vec<(SocketAddrV4, Vec<u8>)> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65536];
        while out.len() < expected {
            match self.udp.recv_from(&mut buf) {
                Ok((len, std::net::SocketAddr::V4(from))) => out.push((from, buf[..len].to_vec())),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        out
    }

    /// Every frame the packet socket has queued: those the guest sent (`from_guest`)
    /// or those the host sent to it.
    fn frames(&self, from_guest: bool) -> Vec<TapFrame> {
        let mut frames = Vec::new();
        let mut buf = vec![0u8; 70000];
        loop {
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut from_len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: a buffer and a sockaddr_ll we own, with their sizes.
            let n = unsafe {
                libc::recvfrom(
                    self.packets.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                    (&mut from as *mut libc::sockaddr_ll).cast(),
                    &mut from_len,
                )
            };
            if n < 0 {
                break;
            }
            let outgoing = from.sll_pkttype == libc::PACKET_OUTGOING;
            if outgoing != from_guest {
                frames.push(TapFrame::parse(&buf[..n as usize]));
            }
        }
        frames
    }
}

/// `socket(AF_PACKET, SOCK_RAW)` on `device`, with the virtio-net header in front of
/// each frame.
fn packet_socket(device: &str) -> OwnedFd {
    let all = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket calls on values we own; every result is checked.
    unsafe {
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(all));
        assert!(fd >= 0, "packet socket: {}", std::io::Error::last_os_error());
        let fd = OwnedFd::from_raw_fd(fd);
        let on: libc::c_int = 1;
        let ret = libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            PACKET_VNET_HDR,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of_val(&on) as libc::socklen_t,
        );
        assert_eq!(ret, 0, "PACKET_VNET_HDR: {}", std::io::Error::last_os_error());
        let name = std::ffi::CString::new(device).unwrap();
        let index = libc::if_nametoindex(name.as_ptr());
        assert_ne!(index, 0, "no interface {device}");
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = all;
        addr.sll_ifindex = index as i32;
        let ret = libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of_val(&addr) as libc::socklen_t,
        );
        assert_eq!(ret, 0, "bind to {device}: {}", std::io::Error::last_os_error());
        fd
    }
}

/// A frame seen on the TAP: its virtio-net header (10 bytes, as the host kernel
/// fills it for a packet socket) and the Ethernet frame.
#[derive(Debug)]
struct TapFrame {
    flags: u8,
    gso_type: u8,
    gso_size: u16,
    csum_start: u16,
    csum_offset: u16,
    frame: Vec<u8>,
}

impl TapFrame {
    fn parse(bytes: &[u8]) -> TapFrame {
        let le16 = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
        TapFrame {
            flags: bytes[0],
            gso_type: bytes[1],
            gso_size: le16(4),
            csum_start: le16(6),
            csum_offset: le16(8),
            frame: bytes[10..].to_vec(),
        }
    }

    fn is_udp_ipv4(&self) -> bool {
        self.frame.len() >= 42 && self.frame[12..14] == [8, 0] && self.frame[23] == 17
    }

    fn be16(&self, at: usize) -> u16 {
        u16::from_be_bytes([self.frame[at], self.frame[at + 1]])
    }
}

/// The ones' complement sum of big-endian words, folded, not inverted.
fn ones_complement_sum(bytes: &[u8], start: u32) -> u16 {
    let mut sum = start;
    for pair in bytes.chunks(2) {
        sum += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The UDP/IPv4 pseudo-header sum for a frame: what the checksum field holds when
/// the checksum is left to the device (CHECKSUM_PARTIAL).
fn pseudo_header_sum(frame: &TapFrame) -> u16 {
    ones_complement_sum(&frame.frame[26..34], 17 + u32::from(frame.be16(38)))
}

/// The payload of datagram `i` of a flow of `mss`-byte segments.
fn segment_pattern(i: usize, mss: usize) -> Vec<u8> {
    (0..mss).map(|j| (64 * i + j) as u8).collect()
}

/// QEMU running the guest in the lab's namespace; killed on drop.
struct Qemu {
    child: Child,
    lines: Receiver<String>,
    serial: Arc<Mutex<String>>,
    started: Instant,
    _image: ImageFile,
}

impl Qemu {
    /// Boots the guest with `append` as its command line (microvm adds the
    /// `virtio_mmio.device=` entry) and `props` added to `virtio-net-device`.
    fn start(lab: &Lab, props: &str, append: &str) -> Qemu {
        let image = ImageFile::new();
        let kernel = image.0.to_str().unwrap().to_string();
        let netdev = format!("tap,id=n0,ifname={TAP},script=no,downscript=no,vhost=off");
        let mut device = format!("virtio-net-device,netdev=n0,mac={GUEST_MAC}");
        if !props.is_empty() {
            device = format!("{device},{props}");
        }
        let mut child = Command::new("ip")
            .args(["netns", "exec", lab.ns.name(), QEMU])
            .args([
                "-M",
                "microvm,acpi=off,x-option-roms=off,rtc=off",
                "-accel",
                "kvm",
                "-m",
                "64M",
            ])
            .args(["-nodefaults", "-no-user-config", "-nographic", "-serial", "stdio"])
            .args(["-kernel", &kernel, "-append", append])
            .args(["-netdev", &netdev, "-device", &device])
            .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=1"])
            .args(["-global", "virtio-mmio.force-legacy=false"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start QEMU");
        let started = Instant::now();
        let serial = Arc::new(Mutex::new(String::new()));
        let (send, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let copy = Arc::clone(&serial);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                copy.lock().unwrap().push_str(&format!("{line}\n"));
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Qemu {
            child,
            lines,
            serial,
            started,
            _image: image,
        }
    }

    /// Waits for a serial line starting with `prefix`.
    fn wait_for_line(&self, prefix: &str) -> String {
        let deadline = Instant::now() + LINE_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => panic!("no `{prefix}` line in {LINE_TIMEOUT:?}:\n{}", self.serial()),
                Err(RecvTimeoutError::Disconnected) => panic!("QEMU ended without `{prefix}`:\n{}", self.serial()),
            }
        }
    }

    /// Waits for QEMU to end; returns its status, the guest's serial output and the
    /// wall time from start.
    fn finish(mut self) -> (ExitStatus, String, Duration) {
        let deadline = Instant::now() + EXIT_TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for QEMU") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "QEMU still runs after {EXIT_TIMEOUT:?}:\n{}",
                self.serial()
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        let elapsed = self.started.elapsed();
        let mut stderr = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            let _ = err.read_to_string(&mut stderr);
        }
        if !stderr.is_empty() {
            eprintln!("QEMU stderr: {stderr}");
        }
        // The reader thread finishes at end of file; let it flush the last lines.
        while self.lines.recv_timeout(Duration::from_secs(2)).is_ok() {}
        (status, self.serial(), elapsed)
    }

    fn serial(&self) -> String {
        self.serial.lock().unwrap().clone()
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        // `ip netns exec` execs QEMU, so this is QEMU's own pid.
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The guest's exit code from QEMU's status: isa-debug-exit exits with `code << 1 | 1`.
fn guest_exit_code(status: ExitStatus) -> Option<i32> {
    status.code().filter(|code| code & 1 == 1).map(|code| code >> 1)
}

/// The guest's command line for a flow of `segments` x `mss` (and `rx` segments back).
fn flow_cmdline(segments: usize, mss: usize, rx: usize) -> String {
    format!(
        "console=ttyS0 selftest.src={GUEST} selftest.dst={HOST} selftest.dmac={TAP_MAC} \
         selftest.segments={segments} selftest.mss={mss} selftest.rx={rx}"
    )
}

/// Features in a `selftest: offered|negotiated` line.
fn feature_bits(serial: &str, what: &str) -> Vec<u32> {
    let prefix = format!("selftest: {what}");
    let line = serial
        .lines()
        .find(|line| line.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` line:\n{serial}"));
    line[prefix.len()..]
        .split_whitespace()
        .map(|bit| bit.parse().unwrap())
        .collect()
}

/// The host received exactly the flow: `segments` datagrams of `mss` bytes from the
/// guest's address, in order, each with its segment's pattern.
fn assert_host_received_the_flow(lab: &Lab, segments: usize, mss: usize, serial: &str) {
    let datagrams = lab.datagrams(segments);
    assert_eq!(datagrams.len(), segments, "datagrams received by the host\n{serial}");
    for (i, (from, payload)) in datagrams.iter().enumerate() {
        assert_eq!(*from, GUEST, "datagram {i}'s source");
        assert_eq!(payload.len(), mss, "datagram {i}'s size");
        assert!(*payload == segment_pattern(i, mss), "datagram {i}'s payload");
    }
    lab.udp.set_read_timeout(Some(QUIET_TIMEOUT)).unwrap();
    assert!(lab.datagrams(1).is_empty(), "nothing more arrives");
}

/// The IPv4 header checksum of a frame on the TAP is right, and its UDP checksum
/// field holds the pseudo-header sum over `udp_len` (what NEEDS_CSUM asks for).
fn assert_headers(frame: &TapFrame, udp_len: u16) {
    assert_eq!(
        ones_complement_sum(&frame.frame[14..34], 0),
        0xffff,
        "IPv4 header checksum"
    );
    assert_eq!(frame.be16(16), udp_len + 20, "IPv4 total length");
    assert_eq!(frame.be16(38), udp_len, "UDP length");
    assert_eq!(&frame.frame[6..12], &mac_bytes(GUEST_MAC), "source MAC: the device's");
    assert_eq!(
        &frame.frame[0..6],
        &mac_bytes(TAP_MAC),
        "destination MAC: selftest.dmac"
    );
}

fn mac_bytes(text: &str) -> Vec<u8> {
    text.split(':')
        .map(|byte| u8::from_str_radix(byte, 16).unwrap())
        .collect()
}

#[test]
fn with_host_uso_the_guest_sends_one_uso_frame_that_reaches_the_host_as_datagrams() {
    let test = test_name!();
    require!(prerequisites());
    let lab = Lab::new();
    let qemu = Qemu::start(&lab, "", &flow_cmdline(3, 1000, 0));
    let (status, serial, elapsed) = qemu.finish();
    eprintln!("{test}: QEMU ran {elapsed:?}\n{serial}");
    assert_eq!(guest_exit_code(status), Some(0), "{status}\n{serial}");
    let offered = feature_bits(&serial, "offered");
    assert!(
        offered.contains(&56),
        "QEMU offers HOST_USO over a TAP that can do it: {offered:?}"
    );
    let negotiated = feature_bits(&serial, "negotiated");
    for bit in [0, 1, 5, 32, 54, 55, 56] {
        assert!(negotiated.contains(&bit), "bit {bit} negotiated: {negotiated:?}");
    }
    assert!(negotiated.iter().all(|bit| offered.contains(bit)), "only offered bits");
    assert!(
        serial.contains("selftest: tx 1 frames, 3 segments, 3000 bytes\n"),
        "{serial}"
    );
    assert!(serial.ends_with("selftest: pass\n"), "{serial}");

    // On the TAP: one GSO frame with the guest's header, as Linux understood it.
    let frames: Vec<TapFrame> = lab.frames(true).into_iter().filter(TapFrame::is_udp_ipv4).collect();
    assert_eq!(frames.len(), 1, "{frames:?}");
    let frame = &frames[0];
    assert_eq!(frame.gso_type, GSO_UDP_L4);
    assert_eq!(frame.gso_size, 1000);
    assert_eq!(frame.flags & NEEDS_CSUM, NEEDS_CSUM);
    assert_eq!((frame.csum_start, frame.csum_offset), (34, 6));
    assert_eq!(frame.frame.len(), 42 + 3000);
    assert_headers(frame, 3008);
    assert_eq!(
        frame.be16(40),
        pseudo_header_sum(frame),
        "UDP checksum field: the pseudo-header sum"
    );

    assert_host_received_the_flow(&lab, 3, 1000, &serial);
}

#[test]
fn without_host_uso_the_guest_sends_one_frame_per_segment_with_the_checksum_offloaded() {
    let test = test_name!();
    require!(prerequisites());
    let lab = Lab::new();
    let qemu = Qemu::start(
        &lab,
        "host_uso=off,guest_uso4=off,guest_uso6=off",
        &flow_cmdline(4, 1200, 0),
    );
    let (status, serial, elapsed) = qemu.finish();
    eprintln!("{test}: QEMU ran {elapsed:?}\n{serial}");
    assert_eq!(guest_exit_code(status), Some(0), "{status}\n{serial}");
    let negotiated = feature_bits(&serial, "negotiated");
    assert!(negotiated.contains(&0) && !negotiated.contains(&56), "{negotiated:?}");
    assert!(
        serial.contains("selftest: tx 4 frames, 4 segments, 4800 bytes\n"),
        "{serial}"
    );

    let frames: Vec<TapFrame> = lab.frames(true).into_iter().filter(TapFrame::is_udp_ipv4).collect();
    assert_eq!(frames.len(), 4, "{frames:?}");
    for frame in &frames {
        assert_eq!(frame.gso_type, GSO_NONE);
        assert_eq!(frame.flags & NEEDS_CSUM, NEEDS_CSUM);
        assert_headers(frame, 1208);
        assert_eq!(frame.be16(40), pseudo_header_sum(frame));
    }
    assert_host_received_the_flow(&lab, 4, 1200, &serial);
}

#[test]
fn without_csum_the_guest_sends_frames_without_a_udp_checksum() {
    let test = test_name!();
    require!(prerequisites());
    let lab = Lab::new();
    let qemu = Qemu::start(
        &lab,
        "csum=off,host_uso=off,host_tso4=off,host_tso6=off,host_ufo=off",
        &flow_cmdline(2, 500, 0),
    );
    let (status, serial, elapsed) = qemu.finish();
    eprintln!("{test}: QEMU ran {elapsed:?}\n{serial}");
    assert_eq!(guest_exit_code(status), Some(0), "{status}\n{serial}");
    assert!(!feature_bits(&serial, "negotiated").contains(&0));
    assert!(
        serial.contains("selftest: tx 2 frames, 2 segments, 1000 bytes\n"),
        "{serial}"
    );
    let frames: Vec<TapFrame> = lab.frames(true).into_iter().filter(TapFrame::is_udp_ipv4).collect();
    assert_eq!(frames.len(), 2, "{frames:?}");
    for frame in &frames {
        assert_eq!((frame.flags, frame.gso_type), (0, GSO_NONE));
        assert_headers(frame, 508);
        assert_eq!(frame.be16(40), 0, "no UDP checksum");
    }
    assert_host_received_the_flow(&lab, 2, 500, &serial);
}

/// Boots the guest with `selftest.rx=<all segments>`, and once it is ready sends it
/// one `UDP_SEGMENT` send per `(segments, mss)` in `sends`. Returns the guest's
/// serial output and the frames the host put on the TAP.
fn receive_segmented_sends(test: &str, props: &str, sends: &[(usize, usize)]) -> (String, Vec<TapFrame>) {
    let lab = Lab::new();
    let total: usize = sends.iter().map(|(segments, _)| segments).sum();
    let qemu = Qemu::start(&lab, props, &flow_cmdline(1, 100, total));
    qemu.wait_for_line("selftest: rx ready");
    for &(segments, mss) in sends {
        common::set_udp_segment(&lab.udp, u16::try_from(mss).expect("mss fits a u16"));
        let payload: Vec<u8> = (0..segments).flat_map(|i| segment_pattern(i, mss)).collect();
        lab.udp.send_to(&payload, GUEST).expect("send to the guest");
    }
    let (status, serial, elapsed) = qemu.finish();
    eprintln!("{test}: QEMU ran {elapsed:?}\n{serial}");
    assert_eq!(guest_exit_code(status), Some(0), "{status}\n{serial}");
    assert!(serial.ends_with("selftest: pass\n"), "{serial}");
    let frames = lab.frames(false).into_iter().filter(TapFrame::is_udp_ipv4).collect();
    (serial, frames)
}

/// `receive_segmented_sends` of one send of 3 x 1000 bytes.
fn receive_a_segmented_send(test: &str, props: &str) -> (String, Vec<TapFrame>) {
    receive_segmented_sends(test, props, &[(3, 1000)])
}

/// The guest's `selftest: rx frame` lines.
fn rx_frame_lines(serial: &str) -> Vec<&str> {
    serial
        .lines()
        .filter(|line| line.starts_with("selftest: rx frame"))
        .collect()
}

#[test]
fn with_guest_uso_a_segmented_send_reaches_the_guest_as_one_uso_frame() {
    let test = test_name!();
    require!(prerequisites());
    let (serial, frames) = receive_a_segmented_send(test, "");
    assert!(feature_bits(&serial, "negotiated").contains(&15), "MRG_RXBUF");
    assert!(
        serial.contains("selftest: rx ready, 64 buffers of 1536 bytes\n"),
        "{serial}"
    );
    assert_eq!(frames.len(), 1, "the host sent one GSO frame: {frames:?}");
    assert_eq!((frames[0].gso_type, frames[0].gso_size), (GSO_UDP_L4, 1000));
    let frame_lines = rx_frame_lines(&serial);
    assert_eq!(frame_lines.len(), 1, "{serial}");
    assert!(
        frame_lines[0].starts_with("selftest: rx frame 3042 bytes, flags "),
        "{serial}"
    );
    assert!(
        frame_lines[0].contains(", gso_type 5, gso_size 1000, num_buffers "),
        "{serial}"
    );
    assert!(
        serial.contains("selftest: rx 1 frames, 3 segments, 3000 bytes\n"),
        "{serial}"
    );
}

#[test]
fn without_mergeable_buffers_a_uso_frame_lands_in_one_big_buffer() {
    let test = test_name!();
    require!(prerequisites());
    let (serial, frames) = receive_a_segmented_send(test, "mrg_rxbuf=off");
    assert!(!feature_bits(&serial, "negotiated").contains(&15), "no MRG_RXBUF");
    assert!(
        serial.contains("selftest: rx ready, 8 buffers of 65568 bytes\n"),
        "{serial}"
    );
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert!(serial.contains(", gso_type 5, gso_size 1000, num_buffers "), "{serial}");
    assert!(
        serial.contains("selftest: rx 1 frames, 3 segments, 3000 bytes\n"),
        "{serial}"
    );
}

#[test]
fn without_guest_uso_a_segmented_send_reaches_the_guest_as_separate_frames() {
    let test = test_name!();
    require!(prerequisites());
    let (serial, frames) = receive_a_segmented_send(test, "guest_uso4=off,guest_uso6=off");
    assert_eq!(frames.len(), 3, "the host kernel segmented the send: {frames:?}");
    assert!(frames.iter().all(|frame| frame.gso_type == GSO_NONE));
    let frame_lines = rx_frame_lines(&serial);
    assert_eq!(frame_lines.len(), 3, "{serial}");
    for line in frame_lines {
        assert!(line.starts_with("selftest: rx frame 1042 bytes, flags "), "{line}");
        assert!(line.contains(", gso_type 0, gso_size "), "{line}");
    }
    assert!(
        serial.contains("selftest: rx 3 frames, 3 segments, 3000 bytes\n"),
        "{serial}"
    );
}

#[test]
fn with_nothing_to_receive_the_guest_reports_a_timeout() {
    let test = test_name!();
    require!(prerequisites());
    let lab = Lab::new();
    let qemu = Qemu::start(&lab, "", &format!("{} selftest.rxwait=2000", flow_cmdline(1, 10, 1)));
    let (status, serial, elapsed) = qemu.finish();
    eprintln!("{test}: QEMU ran {elapsed:?}\n{serial}");
    assert!(serial.ends_with("selftest: rx timeout after 0 frames\n"), "{serial}");
    assert_eq!(
        guest_exit_code(status),
        Some(i32::from(vmc_selftest::EXIT_NET_RX_TIMEOUT))
    );
}

#[test]
fn a_malformed_flow_key_is_reported_and_ends_the_guest() {
    require!(prerequisites());
    let lab = Lab::new();
    let qemu = Qemu::start(&lab, "", "selftest.dst=10.0.2:5001");
    let (status, serial, _) = qemu.finish();
    assert!(serial.ends_with("selftest: net bad selftest.dst=\n"), "{serial}");
    assert_eq!(guest_exit_code(status), Some(i32::from(vmc_selftest::EXIT_NET_ARGS)));
}

#[test]
fn a_flow_of_45_segments_goes_out_as_one_uso_frame() {
    let test = test_name!();
    require!(prerequisites());
    let lab = Lab::new();
    let qemu = Qemu::start(&lab, "", &flow_cmdline(45, 1400, 0));
    let (status, serial, elapsed) = qemu.finish();
    eprintln!("{test}: QEMU ran {elapsed:?}\n{serial}");
    assert_eq!(guest_exit_code(status), Some(0), "{status}\n{serial}");
    assert!(
        serial.contains("selftest: tx 1 frames, 45 segments, 63000 bytes\n"),
        "{serial}"
    );
    let frames: Vec<TapFrame> = lab.frames(true).into_iter().filter(TapFrame::is_udp_ipv4).collect();
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!((frames[0].gso_type, frames[0].gso_size), (GSO_UDP_L4, 1400));
    assert_headers(&frames[0], 63008);
    assert_eq!(frames[0].be16(40), pseudo_header_sum(&frames[0]));
    assert_host_received_the_flow(&lab, 45, 1400, &serial);
}

#[test]
fn a_big_uso_frame_is_merged_from_many_receive_buffers() {
    let test = test_name!();
    require!(prerequisites());
    let (serial, frames) = receive_segmented_sends(test, "", &[(45, 1400)]);
    assert_eq!(frames.len(), 1, "{frames:?}");
    let frame_lines = rx_frame_lines(&serial);
    assert_eq!(frame_lines.len(), 1, "{serial}");
    // 12 + 63042 bytes in 1536-byte buffers.
    assert!(
        frame_lines[0].starts_with("selftest: rx frame 63042 bytes, flags ")
            && frame_lines[0].ends_with(", gso_type 5, gso_size 1400, num_buffers 42"),
        "{serial}"
    );
    assert!(
        serial.contains("selftest: rx 1 frames, 45 segments, 63000 bytes\n"),
        "{serial}"
    );
}

#[test]
fn more_frames_than_receive_buffers_arrive_because_buffers_are_reposted() {
    let test = test_name!();
    require!(prerequisites());
    // Without guest USO the host cuts each send into datagrams: 100 frames for 64
    // posted buffers.
    let (serial, frames) = receive_segmented_sends(test, "guest_uso4=off,guest_uso6=off", &[(50, 1000), (50, 1000)]);
    assert_eq!(frames.len(), 100);
    assert_eq!(rx_frame_lines(&serial).len(), 100, "{serial}");
    assert!(
        serial.contains("selftest: rx 100 frames, 100 segments, 100000 bytes\n"),
        "{serial}"
    );
}
