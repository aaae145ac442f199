//! The virtio-net device driven as a hostile guest driver would, over a real TAP.
//!
//! The device's transmit and receive paths live in its worker thread, which needs a TAP:
//! the process moves into a network namespace of its own (root), makes one persistent
//! TAP there, and each input attaches to it afresh, so each run starts from an empty TAP
//! queue (detaching purges it) and a fresh device.
//!
//! One run, deterministic: the input's frames are put in the TAP's receive queue (an
//! `AF_PACKET` socket sends them out of the interface, straight to the TAP without a
//! queueing discipline); the driver negotiates, lays out its queues, descriptor tables,
//! headers and frames in guest memory, corrupts what the input says, and sets DRIVER_OK.
//! The worker's first transmit and receive passes run before it waits for anything, and
//! the reset that follows joins the thread, so every chain the input made available is
//! seen before the run ends. Frames the device transmits go to the namespace's kernel,
//! which has no address to answer from.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, OnceLock};

use arbitrary::Arbitrary;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmc_runtime::devices::virtio::features::{bit, has, VERSION_1};
use vmc_runtime::devices::virtio::mmio::reg;
use vmc_runtime::devices::virtio::net::{
    supported_features, tap_offloads_for, unmet_requirement, Net, NetConfig, NetCounters, NetStats,
};
use vmc_runtime::devices::virtio::{status, Interrupt, InterruptReason, MmioTransport};
use vmc_runtime::host::Tap;
use vmc_runtime::devices::bus::BusDevice;

/// The TAP every run attaches to, inside the process's own network namespace.
const TAP_NAME: &str = "vmcfz0";
/// Guest memory: rings below `BUFFERS`, buffers and indirect tables above.
pub const MEM_SIZE: usize = 2 << 20;
const BUFFERS: u64 = 0x2_0000;
/// Largest queue the input may ask for (its rings fit a 64 KiB area).
const MAX_QUEUE_LOG: u8 = 10;

const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
const F_INDIRECT: u16 = 4;

/// Where queue `q`'s descriptor table, available and used rings are.
fn rings(q: usize) -> (u64, u64, u64) {
    let base = q as u64 * 0x1_0000;
    (base, base + 0x4000, base + 0x8000)
}

struct Env {
    /// An `AF_PACKET` socket bound to the TAP: what it sends, the TAP reads.
    packet: OwnedFd,
    ifindex: i32,
    mem: GuestMemoryMmap,
}

// SAFETY (for the ioctls and socket calls below): each passes pointers to live, correctly
// laid out values of the sizes the kernel expects, and checks the result.
fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        // SAFETY: unshare only changes this thread's namespaces; the device's threads
        // start from this one and inherit them.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            panic!(
                "the virtio-net target needs root (a network namespace and a TAP of its own): unshare: {}",
                std::io::Error::last_os_error()
            );
        }
        // Nothing but the input's frames crosses the TAP: no IPv6 chatter, no address.
        for path in ["all", "default"] {
            let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{path}/disable_ipv6"), "1");
        }
        let tap = Tap::create_exclusive(TAP_NAME).unwrap_or_else(|e| panic!("TAP: {e}"));
        // TUNSETPERSIST: the interface outlives this fd; the namespace takes it along
        // when the process ends.
        let persist = vmm_sys_util::ioctl::ioctl_expr(
            vmm_sys_util::ioctl::_IOC_WRITE,
            u32::from(b'T'),
            203,
            std::mem::size_of::<libc::c_int>() as u32,
        );
        assert_eq!(
            unsafe { libc::ioctl(tap.as_raw_fd(), persist as _, 1 as libc::c_ulong) },
            0,
            "TUNSETPERSIST"
        );
        let ifindex = tap.ifindex() as i32;
        drop(tap);
        set_up(TAP_NAME);
        let packet = packet_socket();
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).expect("guest memory");
        Env { packet, ifindex, mem }
    })
}

fn set_up(name: &str) {
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket");
        let fd = OwnedFd::from_raw_fd(fd);
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in name.bytes().enumerate() {
            req.ifr_name[i] = b as libc::c_char;
        }
        assert_eq!(
            libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req),
            0,
            "SIOCGIFFLAGS"
        );
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        assert_eq!(libc::ioctl(fd.as_raw_fd(), libc::SIOCSIFFLAGS, &req), 0, "SIOCSIFFLAGS");
    }
}

fn packet_socket() -> OwnedFd {
    unsafe {
        // Protocol 0: the socket receives nothing, it only sends.
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
        let fd = OwnedFd::from_raw_fd(fd);
        let one: libc::c_int = 1;
        for option in [libc::PACKET_VNET_HDR, libc::PACKET_QDISC_BYPASS] {
            let ret = libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                option,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
            assert_eq!(ret, 0, "setsockopt {option}");
        }
        fd
    }
}

/// Sends one frame (after a 10-byte virtio-net header for the kernel) out of the TAP's
/// interface, so that the TAP reads it. The kernel may refuse it; that is fine.
fn inject(fd: RawFd, ifindex: i32, vnet: &[u8; 10], frame: &[u8]) {
    let mut bytes = Vec::with_capacity(10 + frame.len());
    bytes.extend_from_slice(vnet);
    bytes.extend_from_slice(frame);
    let protocol = frame.get(12..14).map_or(0, |p| u16::from_ne_bytes([p[0], p[1]]));
    unsafe {
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = protocol;
        addr.sll_ifindex = ifindex;
        addr.sll_halen = 6;
        libc::sendto(
            fd,
            bytes.as_ptr().cast(),
            bytes.len(),
            libc::MSG_DONTWAIT,
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        );
    }
}

struct NoInterrupt;

impl Interrupt for NoInterrupt {
    fn trigger(&self, _reason: InterruptReason) {}
}

/// A guest address: mostly inside the buffer area, sometimes anywhere.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Addr {
    Buffer(u32),
    Raw(u64),
}

impl Addr {
    fn get(self) -> u64 {
        match self {
            Addr::Buffer(offset) => BUFFERS + u64::from(offset) % (MEM_SIZE as u64 - BUFFERS),
            Addr::Raw(addr) => addr,
        }
    }
}

/// The virtio-net header in front of a transmitted frame: the shapes a driver writes,
/// or any bytes.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum TxHeader {
    Plain,
    Csum {
        start: u16,
        offset: u16,
    },
    Gso {
        gso_type: u8,
        hdr_len: u16,
        gso_size: u16,
        csum_start: u16,
        csum_offset: u16,
    },
    Raw([u8; 12]),
}

impl TxHeader {
    pub fn bytes(self) -> [u8; 12] {
        let mut h = [0u8; 12];
        let mut put = |at: usize, v: u16| h[at..at + 2].copy_from_slice(&v.to_le_bytes());
        match self {
            TxHeader::Plain => {}
            TxHeader::Csum { start, offset } => {
                put(6, start);
                put(8, offset);
                h[0] = 1;
            }
            TxHeader::Gso {
                gso_type,
                hdr_len,
                gso_size,
                csum_start,
                csum_offset,
            } => {
                put(2, hdr_len);
                put(4, gso_size);
                put(6, csum_start);
                put(8, csum_offset);
                h[0] = 1;
                h[1] = gso_type;
            }
            TxHeader::Raw(bytes) => h = bytes,
        }
        h
    }
}

/// A frame to transmit: its header and bytes, laid out as one chain split where the
/// input says (or as an indirect table).
#[derive(Arbitrary, Debug)]
pub struct TxPacket {
    pub header: TxHeader,
    pub frame: Vec<u8>,
    /// Repeat the frame's bytes up to this many bytes in all (large and GSO frames).
    pub grow_to: Option<u16>,
    pub splits: Vec<u16>,
    pub indirect: bool,
}

/// A chain of writable receive buffers of these lengths.
#[derive(Arbitrary, Debug)]
pub struct RxChain {
    pub lens: Vec<u16>,
    pub indirect: bool,
}

/// A frame arriving from the host, with the virtio-net header the kernel is handed
/// (GSO frames reach the TAP as such when the guest negotiated the offload).
#[derive(Arbitrary, Debug)]
pub struct RxFrame {
    pub vnet: [u8; 10],
    pub frame: Vec<u8>,
    pub grow_to: Option<u16>,
    /// Buffers for it, made available after `NetInput::rx_chains`.
    pub chain: Option<RxChain>,
}

/// Guest memory written after the layout, as a driver that lies would.
#[derive(Arbitrary, Debug)]
pub enum Corruption {
    Bytes {
        at: u32,
        bytes: Vec<u8>,
    },
    Descriptor {
        queue: bool,
        index: u16,
        addr: Addr,
        len: u32,
        flags: u16,
        next: u16,
    },
    AvailEntry {
        queue: bool,
        slot: u16,
        head: u16,
    },
    AvailIdx {
        queue: bool,
        idx: u16,
    },
    AvailFlags {
        queue: bool,
        flags: u16,
    },
    UsedEvent {
        queue: bool,
        value: u16,
    },
}

#[derive(Arbitrary, Debug)]
pub struct NetInput {
    /// Offered features (masked to what the device implements; requirements added).
    pub offered: u64,
    /// The driver's choice (masked to the offer; requirements resolved).
    pub driver: u64,
    /// Use `offered` and `driver` exactly as given.
    pub raw_features: bool,
    pub mtu: u16,
    /// Maximum queue sizes, as powers of two, and the sizes the driver sets.
    pub max_log: [u8; 2],
    pub size_log: [u8; 2],
    pub tx: Vec<TxPacket>,
    pub rx_chains: Vec<RxChain>,
    pub rx_frames: Vec<RxFrame>,
    pub corruptions: Vec<Corruption>,
}

/// `word` with every unmet feature requirement resolved: a needed bit from `allowed`
/// is added, or else the feature that needs it is dropped.
fn resolve_requirements(mut word: u64, allowed: u64) -> u64 {
    for _ in 0..128 {
        let Some((feature, needs)) = unmet_requirement(word) else {
            break;
        };
        match needs.iter().find(|&&n| has(allowed, n)) {
            Some(&n) => word |= bit(n),
            None => word &= !bit(feature),
        }
    }
    word
}

/// Lays out guest memory as a driver does and keeps track of where things went.
struct Layout<'a> {
    mem: &'a GuestMemoryMmap,
    sizes: [u16; 2],
    /// The next free descriptor (chains never share one).
    next_desc: [u16; 2],
    avail_idx: [u16; 2],
    /// Next free byte in the buffer area (wraps: later buffers may overlap earlier ones).
    cursor: u64,
}

impl Layout<'_> {
    fn alloc(&mut self, len: u64) -> u64 {
        let space = MEM_SIZE as u64 - BUFFERS;
        let len = len.min(space);
        if self.cursor + len > MEM_SIZE as u64 {
            self.cursor = BUFFERS;
        }
        let at = self.cursor;
        self.cursor = (self.cursor + len + 15) & !15;
        at
    }

    fn write(&self, at: u64, bytes: &[u8]) {
        let _ = self.mem.write_slice(bytes, GuestAddress(at));
    }

    fn desc_bytes(addr: u64, len: u32, flags: u16, next: u16) -> [u8; 16] {
        let mut raw = [0u8; 16];
        raw[0..8].copy_from_slice(&addr.to_le_bytes());
        raw[8..12].copy_from_slice(&len.to_le_bytes());
        raw[12..14].copy_from_slice(&flags.to_le_bytes());
        raw[14..16].copy_from_slice(&next.to_le_bytes());
        raw
    }

    /// A chain of `(addr, len)` buffers on queue `q`, direct or through an indirect
    /// table; published in the available ring. Stops when the table is full.
    fn chain(&mut self, q: usize, buffers: &[(u64, u32)], writable: bool, indirect: bool) {
        let size = self.sizes[q];
        // Each chain on descriptors of its own: no more than the table holds.
        let needed = if indirect { 1 } else { buffers.len() };
        if buffers.is_empty() || needed > usize::from(size - self.next_desc[q]) {
            return;
        }
        let write = if writable { F_WRITE } else { 0 };
        let (desc_table, avail, _) = rings(q);
        let head = self.next_desc[q];
        if indirect {
            let table = self.alloc(16 * buffers.len() as u64);
            for (i, &(addr, len)) in buffers.iter().enumerate() {
                let last = i + 1 == buffers.len();
                let flags = write | if last { 0 } else { F_NEXT };
                self.write(table + 16 * i as u64, &Self::desc_bytes(addr, len, flags, i as u16 + 1));
            }
            let len = 16 * buffers.len() as u32;
            self.write(
                desc_table + 16 * u64::from(head),
                &Self::desc_bytes(table, len, F_INDIRECT, 0),
            );
            self.next_desc[q] = head + 1;
        } else {
            for (i, &(addr, len)) in buffers.iter().enumerate() {
                let index = head + i as u16;
                let last = i + 1 == buffers.len();
                let flags = write | if last { 0 } else { F_NEXT };
                self.write(
                    desc_table + 16 * u64::from(index),
                    &Self::desc_bytes(addr, len, flags, index + 1),
                );
            }
            self.next_desc[q] = head + buffers.len() as u16;
        }
        let slot = avail + 4 + 2 * u64::from(self.avail_idx[q]);
        self.write(slot, &head.to_le_bytes());
        self.avail_idx[q] += 1;
        self.write(avail + 2, &self.avail_idx[q].to_le_bytes());
    }
}

fn grown(bytes: &[u8], grow_to: Option<u16>) -> Vec<u8> {
    match grow_to {
        Some(len) if !bytes.is_empty() && usize::from(len) > bytes.len() => {
            bytes.iter().copied().cycle().take(usize::from(len)).collect()
        }
        _ => bytes.to_vec(),
    }
}

fn read_reg<D: vmc_runtime::devices::virtio::VirtioDevice>(t: &mut MmioTransport<D>, offset: u64) -> u32 {
    let mut data = [0u8; 4];
    t.read(offset, &mut data);
    u32::from_le_bytes(data)
}

fn write_reg<D: vmc_runtime::devices::virtio::VirtioDevice>(t: &mut MmioTransport<D>, offset: u64, value: u32) {
    t.write(offset, &value.to_le_bytes());
}

/// One run of the device on `input`. Panics only where vmc does.
pub fn run(input: &NetInput) {
    run_with_stats(input);
}

/// [`run`], and what the device counted, when it got as far as DRIVER_OK.
pub fn run_with_stats(input: &NetInput) -> Option<NetStats> {
    let env = env();
    let supported = supported_features();
    let (offered, driver) = if input.raw_features {
        (input.offered, input.driver)
    } else {
        let offered = resolve_requirements((input.offered & supported) | bit(VERSION_1), supported);
        let driver = resolve_requirements((input.driver & offered) | bit(VERSION_1), offered);
        (offered, driver)
    };
    let mtu_bit = vmc_runtime::devices::virtio::net::feature::MTU;
    let mtu = if input.raw_features {
        input.mtu
    } else if has(offered, mtu_bit) {
        input.mtu.max(68)
    } else {
        0
    };
    let max = input.max_log.map(|l| 1u16 << (1 + l % MAX_QUEUE_LOG));
    let config = NetConfig {
        features: offered,
        mac: [0x52, 0x54, 0, 0x12, 0x34, 0x56],
        mtu,
        rx_queue_size: max[0],
        tx_queue_size: max[1],
    };
    let tap = Tap::open_or_create(TAP_NAME).unwrap_or_else(|e| panic!("attaching the fuzz TAP: {e}"));
    let Ok(net) = Net::new(config, tap) else {
        return None;
    };
    let counters: Arc<NetCounters> = net.counters();
    let mem = env.mem.clone();
    let zeros = vec![0u8; MEM_SIZE];
    mem.write_slice(&zeros, GuestAddress(0)).expect("zero guest memory");
    let Ok(mut t) = MmioTransport::new(net, mem.clone(), Arc::new(NoInterrupt)) else {
        return None;
    };

    // Negotiation.
    write_reg(&mut t, reg::STATUS, status::ACKNOWLEDGE);
    write_reg(&mut t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    for sel in 0..2u32 {
        write_reg(&mut t, reg::DRIVER_FEATURES_SEL, sel);
        write_reg(&mut t, reg::DRIVER_FEATURES, (driver >> (32 * sel)) as u32);
    }
    write_reg(
        &mut t,
        reg::STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
    );
    if read_reg(&mut t, reg::STATUS) & status::FEATURES_OK == 0 {
        return None;
    }
    // What activation will set; set now so that the input's GSO frames reach the TAP
    // whole, as they would once the device runs.
    let _ = t.device().tap().set_offload(tap_offloads_for(driver));

    // Queues.
    let mut sizes = [0u16; 2];
    for q in 0..2 {
        let size = (1u16 << (1 + input.size_log[q] % MAX_QUEUE_LOG)).min(max[q]);
        sizes[q] = size;
        let (desc, avail, used) = rings(q);
        write_reg(&mut t, reg::QUEUE_SEL, q as u32);
        write_reg(&mut t, reg::QUEUE_NUM, u32::from(size));
        for (low, addr) in [
            (reg::QUEUE_DESC_LOW, desc),
            (reg::QUEUE_DRIVER_LOW, avail),
            (reg::QUEUE_DEVICE_LOW, used),
        ] {
            write_reg(&mut t, low, addr as u32);
            write_reg(&mut t, low + 4, (addr >> 32) as u32);
        }
        write_reg(&mut t, reg::QUEUE_READY, 1);
    }

    // Transmit chains: header and frame contiguous, split into descriptors.
    let mut layout = Layout {
        mem: &mem,
        sizes,
        next_desc: [0; 2],
        avail_idx: [0; 2],
        cursor: BUFFERS,
    };
    for packet in &input.tx {
        let mut bytes = packet.header.bytes().to_vec();
        bytes.extend_from_slice(&grown(&packet.frame, packet.grow_to));
        let at = layout.alloc(bytes.len() as u64);
        layout.write(at, &bytes);
        let mut cuts: Vec<u64> = packet
            .splits
            .iter()
            .take(64)
            .map(|&s| u64::from(s) % (bytes.len() as u64 + 1))
            .collect();
        cuts.push(0);
        cuts.push(bytes.len() as u64);
        cuts.sort_unstable();
        cuts.dedup();
        let buffers: Vec<(u64, u32)> = cuts.windows(2).map(|w| (at + w[0], (w[1] - w[0]) as u32)).collect();
        layout.chain(1, &buffers, false, packet.indirect);
    }
    // Receive chains.
    let frame_chains = input.rx_frames.iter().filter_map(|f| f.chain.as_ref());
    for chain in input.rx_chains.iter().chain(frame_chains) {
        let buffers: Vec<(u64, u32)> = chain
            .lens
            .iter()
            .take(64)
            .map(|&len| (layout.alloc(u64::from(len)), u32::from(len)))
            .collect();
        layout.chain(0, &buffers, true, chain.indirect);
    }
    for c in &input.corruptions {
        let q = |queue: &bool| usize::from(*queue);
        match c {
            Corruption::Bytes { at, bytes } => layout.write(u64::from(*at) % MEM_SIZE as u64, bytes),
            Corruption::Descriptor {
                queue,
                index,
                addr,
                len,
                flags,
                next,
            } => {
                let (desc, ..) = rings(q(queue));
                let index = u64::from(*index % sizes[q(queue)]);
                layout.write(desc + 16 * index, &Layout::desc_bytes(addr.get(), *len, *flags, *next));
            }
            Corruption::AvailEntry { queue, slot, head } => {
                let (_, avail, _) = rings(q(queue));
                let slot = u64::from(*slot % sizes[q(queue)]);
                layout.write(avail + 4 + 2 * slot, &head.to_le_bytes());
            }
            Corruption::AvailIdx { queue, idx } => layout.write(rings(q(queue)).1 + 2, &idx.to_le_bytes()),
            Corruption::AvailFlags { queue, flags } => layout.write(rings(q(queue)).1, &flags.to_le_bytes()),
            Corruption::UsedEvent { queue, value } => {
                let (_, avail, _) = rings(q(queue));
                layout.write(avail + 4 + 2 * u64::from(sizes[q(queue)]), &value.to_le_bytes());
            }
        }
    }

    // Frames from the host, then the device runs its first passes and is reset.
    for frame in input.rx_frames.iter().take(64) {
        inject(
            env.packet.as_raw_fd(),
            env.ifindex,
            &frame.vnet,
            &grown(&frame.frame, frame.grow_to),
        );
    }
    let s = read_reg(&mut t, reg::STATUS);
    write_reg(&mut t, reg::STATUS, s | status::DRIVER_OK);
    write_reg(&mut t, reg::STATUS, 0);
    let stats = counters.snapshot();
    assert_eq!(stats.worker_panics, 0, "the virtio-net worker panicked");
    Some(stats)
}
