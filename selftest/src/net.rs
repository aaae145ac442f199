//! The self-test guest's virtio-net driver: one step of the program, run for the
//! first `virtio_mmio.device=` whose DeviceID is 1 (network card). Each stage is one
//! function: [`parse_args`], [`init`], [`negotiate`], [`setup_queues`], [`transmit`],
//! [`receive`].
//!
//! It speaks virtio 1.x over virtio-mmio version 2 only (no legacy devices), polls the
//! used rings with interrupts off (no handlers: `iret` is an emulation failure under
//! kvm_pvm), and keeps everything in fixed places above [`SCRATCH_ADDR`]:
//!
//! | address                    | what                                            |
//! |----------------------------|-------------------------------------------------|
//! | [`RX_DESC`] `0x200000`     | receive queue (0): descriptors, avail, used (one page each) |
//! | [`TX_DESC`] `0x203000`     | transmit queue (1): descriptors, avail, used    |
//! | [`TX_BUF`] `0x210000`      | transmit frames (≤ 128 KiB)                     |
//! | [`RX_BUF`] `0x240000`      | receive buffers (≤ 512 KiB)                     |
//! | [`BLAST_PAYLOAD_BUF`] `0x300000` | throughput mode's payload (< 256 KiB; its headers at `TX_BUF`) |
//!
//! Printed lines, in order (bit lists are decimal, ascending, space separated):
//!
//! ```text
//! selftest: offered <bits>
//! selftest: negotiated <bits>
//! selftest: tx <F> frames, <S> segments, <B> bytes          (B: UDP payload bytes)
//! selftest: blast start, <spf> segments of <M> bytes per frame, <C> frames in flight
//! selftest: blast <B> bytes, <F> frames, <S> segments       (instead of `tx`, with selftest.blast=B)
//! selftest: rx ready, <n> buffers of <size> bytes           (only with selftest.rx=N, N > 0)
//! selftest: rx frame <len> bytes, flags <f>, gso_type <t>, gso_size <g>, num_buffers <n>
//! selftest: rx <F> frames, <S> segments, <B> bytes
//! ```
//!
//! `rx frame <len>` is the Ethernet frame's length (without the 12-byte virtio-net
//! header; for a merged frame, over all its buffers); `num_buffers` is the header's
//! field as the device wrote it (meaningful only with MRG_RXBUF). A receive test on
//! the host should wait for `rx ready` before it sends, so that the device has
//! buffers and its backend has the negotiated offloads.
//!
//! With `selftest.blast=<B>` the transmit step is throughput mode instead (`blast.rs`):
//! `B` bytes of UDP payload in as many frames as it takes, the ring kept full.

mod blast;

use iced_x86::code_asm::*;

pub use self::blast::{
    EXIT_NET_BLAST_STALL, MAX_BYTES as BLAST_MAX_BYTES, MAX_SEGMENTS_PER_FRAME as BLAST_MAX_SEGMENTS_PER_FRAME,
    PAYLOAD_BUF as BLAST_PAYLOAD_BUF, STALL_TSC_TICKS as BLAST_STALL_TSC_TICKS,
};
use super::asm::GuestAsm;
use super::{cmdline_keys as keys, SCRATCH_ADDR};

// The virtio constants (register offsets, status and feature bits) are the same numbers
// the device uses, from Linux's uapi headers by way of `virtio-bindings`.
use vmc_runtime::devices::virtio::features::VERSION_1;
pub use vmc_runtime::devices::virtio::net::feature;
use vmc_runtime::devices::virtio::{mmio::reg, status};

/// A register offset as an address displacement in the guest's code.
const fn at(offset: u64) -> i32 {
    offset as i32
}

/// Every feature the driver accepts when offered. Left out on purpose: the control
/// queue and multiqueue (one queue pair is all a self-test needs), and
/// RING_INDIRECT_DESC / RING_EVENT_IDX (every buffer is one descriptor, and the driver
/// polls, so neither would be exercised).
pub const DRIVER_FEATURES: u64 = {
    use feature::*;
    let bits = [
        CSUM, GUEST_CSUM, MTU, MAC, GUEST_TSO4, GUEST_TSO6, GUEST_ECN, GUEST_UFO, HOST_TSO4, HOST_TSO6, HOST_ECN,
        HOST_UFO, MRG_RXBUF, STATUS, VERSION_1, GUEST_USO4, GUEST_USO6, HOST_USO,
    ];
    let mut mask = 0u64;
    let mut i = 0;
    while i < bits.len() {
        mask |= 1 << bits[i];
        i += 1;
    }
    mask
};

/// Features that let the device hand the driver frames larger than one MTU; without
/// MRG_RXBUF each receive buffer must then hold 65562 bytes (virtio 1.x §5.1.6.3.1).
const GUEST_GSO_FEATURES: u64 = (1 << feature::GUEST_TSO4)
    | (1 << feature::GUEST_TSO6)
    | (1 << feature::GUEST_UFO)
    | (1 << feature::GUEST_USO4)
    | (1 << feature::GUEST_USO6);

/// Queue indexes (what QueueSel and QueueNotify take).
const RX_QUEUE: u32 = 0;
const TX_QUEUE: u32 = 1;
/// Largest queue the driver uses (rings fit in one page each).
const MAX_QUEUE_SIZE: u32 = 256;

/// Receive queue rings (one 4 KiB page each).
pub const RX_DESC: u32 = SCRATCH_ADDR;
const RX_AVAIL: u32 = RX_DESC + 0x1000;
const RX_USED: u32 = RX_DESC + 0x2000;
/// Transmit queue rings.
pub const TX_DESC: u32 = RX_DESC + 0x3000;
const TX_AVAIL: u32 = TX_DESC + 0x1000;
const TX_USED: u32 = TX_DESC + 0x2000;
/// Transmit frames, one after the other, 16-byte aligned.
pub const TX_BUF: u32 = SCRATCH_ADDR + 0x1_0000;
/// Receive buffers.
pub const RX_BUF: u32 = SCRATCH_ADDR + 0x4_0000;

// The driver's memory: rings below the transmit frames, the largest flow (one
// IPv4 datagram, plus headers and padding for up to a queue's worth of frames)
// below the receive buffers, and everything below 3 MiB; buffers as big as the spec
// asks (1526 bytes, or 65562 with guest GSO and no MRG_RXBUF).
const _: () = assert!(TX_USED + 0x1000 <= TX_BUF);
const _: () = assert!(TX_BUF + MAX_FLOW_PAYLOAD + MAX_QUEUE_SIZE * (PAYLOAD as u32 + 16) <= RX_BUF);
const _: () = assert!(RX_BUF + SMALL_RX_BUFFER * SMALL_RX_BUFFERS <= 0x30_0000);
const _: () = assert!(RX_BUF + BIG_RX_BUFFER * BIG_RX_BUFFERS <= 0x30_0000);
const _: () = assert!(BIG_RX_BUFFER >= 65562 && SMALL_RX_BUFFER >= 1526);

/// Receive buffers without GSO or with MRG_RXBUF: at least 1526 bytes (12-byte
/// header and a 1514-byte frame), rounded up.
const SMALL_RX_BUFFER: u32 = 1536;
const SMALL_RX_BUFFERS: u32 = 64;
/// Receive buffers for GSO without MRG_RXBUF: at least 65562 bytes, rounded up.
const BIG_RX_BUFFER: u32 = 65568;
const BIG_RX_BUFFERS: u32 = 8;

/// The virtio-net header (virtio 1.x, with num_buffers) and the frame headers the
/// driver writes: Ethernet, IPv4 without options, UDP.
const NET_HDR: i32 = 12;
const ETH: i32 = NET_HDR;
const IP: i32 = ETH + 14;
const UDP: i32 = IP + 20;
const PAYLOAD: i32 = UDP + 8;
/// Ethernet + IPv4 + UDP header bytes: hdr_len, and csum_start is their IP + UDP part.
const L2_L4_HEADERS: u32 = (PAYLOAD - NET_HDR) as u32;
const CSUM_START: u32 = (UDP - NET_HDR) as u32;
/// Offset of the UDP checksum in its header.
const UDP_CSUM_OFFSET: u32 = 6;
/// virtio-net header flags and GSO types.
const VIRTIO_NET_HDR_F_NEEDS_CSUM: u32 = 1;
const VIRTIO_NET_HDR_GSO_UDP_L4: u32 = 5;
const VIRTIO_NET_HDR_GSO_ECN: u32 = 0x80;
/// IPv4 limits: a datagram is at most 65535 bytes, so one flow of UDP payload is at
/// most this (20-byte IP and 8-byte UDP headers).
const MAX_FLOW_PAYLOAD: u32 = 65535 - 28;

/// Source MAC when the device does not offer one (locally administered).
pub const FALLBACK_SOURCE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

/// Poll iterations before `selftest: tx timeout`. Each iteration also reads COM1's
/// line status register (a VM exit), so it costs microseconds whether or not the
/// guest's instructions are emulated: a few seconds in all.
const TX_WAIT_ITERATIONS: u32 = 1_000_000;
/// Default `selftest.rxwait=`: poll iterations for the whole receive step.
pub const DEFAULT_RX_WAIT: u32 = 1_000_000;

/// Exit code for a malformed `selftest.*` network key or an impossible flow.
pub const EXIT_NET_ARGS: u8 = 10;
/// Exit code for a device the driver cannot drive (not version 2, no VERSION_1, no
/// queue, a reset that never completes, a bad used-ring entry).
pub const EXIT_NET_DEVICE: u8 = 11;
/// Exit code when the device does not keep FEATURES_OK.
pub const EXIT_NET_FEATURES: u8 = 12;
/// Exit code when transmitted buffers are not all used in time.
pub const EXIT_NET_TX_TIMEOUT: u8 = 13;
/// Exit code when fewer than `selftest.rx=` segments arrive in time.
pub const EXIT_NET_RX_TIMEOUT: u8 = 14;

/// The driver's variables (addresses in the guest's data area).
struct Net {
    cmdline: u32,
    /// MMIO base of the device, 0 when there is none.
    base: u32,
    offered_lo: u32,
    offered_hi: u32,
    negotiated_lo: u32,
    negotiated_hi: u32,
    /// 1 when HOST_USO / CSUM / MRG_RXBUF / any guest GSO were negotiated.
    uso: u32,
    csum: u32,
    mrg: u32,
    guest_gso: u32,
    /// IPv4 addresses and MACs in network byte order; ports as numbers.
    src_ip: u32,
    src_port: u32,
    dst_ip: u32,
    dst_port: u32,
    dmac: u32,
    smac: u32,
    segments: u32,
    mss: u32,
    rx_want: u32,
    rx_wait: u32,
    rxq_size: u32,
    txq_size: u32,
    // Transmit: frames, UDP payload per frame, segments per frame, frame stride,
    // the frame being built.
    tx_frames: u32,
    tx_payload: u32,
    tx_segments_per_frame: u32,
    tx_stride: u32,
    tx_frame: u32,
    // Receive: buffers posted and their size, ring positions, poll budget, totals,
    // and the frame being read.
    rx_buffers: u32,
    rx_buffer_size: u32,
    rx_ring_mask: u32,
    rx_last_used: u32,
    rx_avail_idx: u32,
    rx_budget: u32,
    rx_frames: u32,
    rx_segments: u32,
    rx_bytes: u32,
    rx_frame_first: u32,
    rx_frame_len: u32,
    rx_frame_buf: u32,
    rx_num_buffers: u32,
    rx_buffers_left: u32,
}

impl Net {
    fn new(g: &mut GuestAsm, cmdline: u32, base: u32) -> Self {
        let mut var = || g.var32();
        let mut net = Net {
            cmdline,
            base,
            offered_lo: var(),
            offered_hi: var(),
            negotiated_lo: var(),
            negotiated_hi: var(),
            uso: var(),
            csum: var(),
            mrg: var(),
            guest_gso: var(),
            src_ip: 0,
            src_port: 0,
            dst_ip: 0,
            dst_port: 0,
            dmac: 0,
            smac: 0,
            segments: 0,
            mss: 0,
            rx_want: 0,
            rx_wait: 0,
            rxq_size: var(),
            txq_size: var(),
            tx_frames: var(),
            tx_payload: var(),
            tx_segments_per_frame: var(),
            tx_stride: var(),
            tx_frame: var(),
            rx_buffers: var(),
            rx_buffer_size: var(),
            rx_ring_mask: var(),
            rx_last_used: var(),
            rx_avail_idx: var(),
            rx_budget: var(),
            rx_frames: var(),
            rx_segments: var(),
            rx_bytes: var(),
            rx_frame_first: var(),
            rx_frame_len: var(),
            rx_frame_buf: var(),
            rx_num_buffers: var(),
            rx_buffers_left: var(),
        };
        // Variables with defaults (overridden by the command line).
        net.src_ip = g.data(&[10, 0, 2, 15]);
        net.src_port = g.data(&5000u32.to_le_bytes());
        net.dst_ip = g.data(&[10, 0, 2, 2]);
        net.dst_port = g.data(&5001u32.to_le_bytes());
        net.dmac = g.data(&[0x02, 0, 0, 0, 0, 0x01, 0, 0]);
        let mut smac = FALLBACK_SOURCE_MAC.to_vec();
        smac.extend_from_slice(&[0, 0]);
        net.smac = g.data(&smac);
        net.segments = g.data(&3u32.to_le_bytes());
        net.mss = g.data(&1000u32.to_le_bytes());
        net.rx_want = g.data(&0u32.to_le_bytes());
        net.rx_wait = g.data(&DEFAULT_RX_WAIT.to_le_bytes());
        net
    }
}

/// Emits the whole step; `base` is a variable holding the device's MMIO base (0: no
/// network device, the step does nothing).
pub fn emit(g: &mut GuestAsm, cmdline: u32, base: u32) -> Result<(), IcedError> {
    let net = Net::new(g, cmdline, base);
    let blast = blast::Blast::new(g);
    let mut skip = g.label();
    let mut no_rx = g.label();
    let mut flow = g.label();
    let mut sent = g.label();
    g.asm().cmp(dword_ptr(base), 0u32)?;
    g.asm().je(skip)?;
    g.asm().pushad()?;
    parse_args(g, &net)?;
    blast::parse(g, &net, &blast)?;
    init(g, &net)?;
    negotiate(g, &net)?;
    setup_queues(g, &net)?;
    // Throughput mode (selftest.blast=) instead of the one flow.
    g.asm().cmp(dword_ptr(blast.bytes), 0u32)?;
    g.asm().je(flow)?;
    blast::emit(g, &net, &blast)?;
    g.asm().jmp(sent)?;
    g.bind(&mut flow)?;
    transmit(g, &net)?;
    g.bind(&mut sent)?;
    g.asm().cmp(dword_ptr(net.rx_want), 0u32)?;
    g.asm().je(no_rx)?;
    receive(g, &net)?;
    g.bind(&mut no_rx)?;
    g.asm().popad()?;
    g.bind(&mut skip)?;
    g.asm().nop()
}

/// Reads the `selftest.*` flow keys (see [`super::cmdline_keys`]) over their
/// defaults, and checks the flow fits one IPv4 datagram.
fn parse_args(g: &mut GuestAsm, n: &Net) -> Result<(), IcedError> {
    key_ipv4_port(g, n, keys::NET_SRC, n.src_ip, n.src_port)?;
    key_ipv4_port(g, n, keys::NET_DST, n.dst_ip, n.dst_port)?;
    key_mac(g, n, keys::NET_DMAC, n.dmac)?;
    key_u32(g, n, keys::NET_SEGMENTS, n.segments)?;
    key_u32(g, n, keys::NET_MSS, n.mss)?;
    key_u32(g, n, keys::NET_RX, n.rx_want)?;
    key_u32(g, n, keys::NET_RX_WAIT, n.rx_wait)?;

    // 1 <= segments, 1 <= mss, segments * mss <= MAX_FLOW_PAYLOAD (checking each
    // first keeps the product within 32 bits); rxwait >= 1.
    let mut bad = g.label();
    let mut ok = g.label();
    let a = g.asm();
    for var in [n.segments, n.mss] {
        a.mov(eax, dword_ptr(var))?;
        a.test(eax, eax)?;
        a.jz(bad)?;
        a.cmp(eax, MAX_FLOW_PAYLOAD)?;
        a.ja(bad)?;
    }
    a.imul_2(eax, dword_ptr(n.segments))?;
    a.cmp(eax, MAX_FLOW_PAYLOAD)?;
    a.ja(bad)?;
    a.cmp(dword_ptr(n.rx_wait), 0u32)?;
    a.jne(ok)?;
    g.bind(&mut bad)?;
    g.print(&format!(
        "selftest: net bad flow: need segments >= 1, mss >= 1, segments * mss <= {MAX_FLOW_PAYLOAD}, rxwait >= 1\n"
    ))?;
    g.exit(EXIT_NET_ARGS)?;
    g.bind(&mut ok)?;
    g.asm().nop()
}

/// §3.1.1 steps 1-3: reset, ACKNOWLEDGE, DRIVER; then reads the offered features
/// and prints `selftest: offered <bits>`.
fn init(g: &mut GuestAsm, n: &Net) -> Result<(), IcedError> {
    let mut version_ok = g.label();
    let mut reset_wait = g.label();
    let mut reset_done = g.label();
    let a = g.asm();
    a.mov(edi, dword_ptr(n.base))?;
    a.mov(eax, dword_ptr(edi + at(reg::VERSION)))?;
    a.cmp(eax, 2u32)?;
    a.je(version_ok)?;
    g.print("selftest: net virtio-mmio version ")?;
    g.print_dec_eax()?;
    g.print(" is not supported (only 2, virtio 1.x)\n")?;
    g.exit(EXIT_NET_DEVICE)?;
    g.bind(&mut version_ok)?;

    // Writing 0 resets; the reset is complete when Status reads back 0.
    let a = g.asm();
    a.mov(dword_ptr(edi + at(reg::STATUS)), 0u32)?;
    a.mov(ecx, 1000u32)?;
    a.set_label(&mut reset_wait)?;
    a.cmp(dword_ptr(edi + at(reg::STATUS)), 0u32)?;
    a.je(reset_done)?;
    a.dec(ecx)?;
    a.jnz(reset_wait)?;
    g.print("selftest: net reset did not complete\n")?;
    g.exit(EXIT_NET_DEVICE)?;
    g.bind(&mut reset_done)?;

    let a = g.asm();
    a.mov(dword_ptr(edi + at(reg::STATUS)), status::ACKNOWLEDGE)?;
    a.mov(dword_ptr(edi + at(reg::STATUS)), status::ACKNOWLEDGE | status::DRIVER)?;
    for (word, var) in [(0u32, n.offered_lo), (1, n.offered_hi)] {
        a.mov(dword_ptr(edi + at(reg::DEVICE_FEATURES_SEL)), word)?;
        a.mov(eax, dword_ptr(edi + at(reg::DEVICE_FEATURES)))?;
        a.mov(dword_ptr(var), eax)?;
    }
    g.print("selftest: offered")?;
    print_feature_words(g, n.offered_lo, n.offered_hi)?;
    g.print("\n")
}

/// §3.1.1 steps 4-6: accepts every offered feature in [`DRIVER_FEATURES`], sets
/// FEATURES_OK and checks the device kept it; prints `selftest: negotiated <bits>`.
/// Reads the device's MAC when MAC was negotiated.
fn negotiate(g: &mut GuestAsm, n: &Net) -> Result<(), IcedError> {
    let mut modern = g.label();
    let mut accepted = g.label();
    let mut no_mac = g.label();
    let a = g.asm();
    a.mov(eax, dword_ptr(n.offered_lo))?;
    a.and(eax, DRIVER_FEATURES as u32)?;
    a.mov(dword_ptr(n.negotiated_lo), eax)?;
    a.mov(eax, dword_ptr(n.offered_hi))?;
    a.and(eax, (DRIVER_FEATURES >> 32) as u32)?;
    a.mov(dword_ptr(n.negotiated_hi), eax)?;
    // A version 2 transport without VERSION_1 is a broken device; this driver has no
    // legacy mode to fall back to.
    a.test(eax, 1u32 << (VERSION_1 - 32))?;
    a.jnz(modern)?;
    g.print("selftest: net device does not offer VERSION_1\n")?;
    fail_device(g, n, EXIT_NET_DEVICE)?;
    g.bind(&mut modern)?;

    let a = g.asm();
    for (word, var) in [(0u32, n.negotiated_lo), (1, n.negotiated_hi)] {
        a.mov(dword_ptr(edi + at(reg::DRIVER_FEATURES_SEL)), word)?;
        a.mov(eax, dword_ptr(var))?;
        a.mov(dword_ptr(edi + at(reg::DRIVER_FEATURES)), eax)?;
    }
    a.mov(
        dword_ptr(edi + at(reg::STATUS)),
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
    )?;
    a.mov(eax, dword_ptr(edi + at(reg::STATUS)))?;
    a.test(eax, status::FEATURES_OK)?;
    a.jnz(accepted)?;
    g.print("selftest: net features not accepted, status ")?;
    g.print_hex_eax()?;
    g.print("\n")?;
    fail_device(g, n, EXIT_NET_FEATURES)?;
    g.bind(&mut accepted)?;
    g.print("selftest: negotiated")?;
    print_feature_words(g, n.negotiated_lo, n.negotiated_hi)?;
    g.print("\n")?;

    // Flags the later steps branch on, 0 or 1.
    flag_from(g, n.uso, n.negotiated_lo, n.negotiated_hi, 1 << feature::HOST_USO)?;
    flag_from(g, n.csum, n.negotiated_lo, n.negotiated_hi, 1 << feature::CSUM)?;
    flag_from(g, n.mrg, n.negotiated_lo, n.negotiated_hi, 1 << feature::MRG_RXBUF)?;
    flag_from(g, n.guest_gso, n.negotiated_lo, n.negotiated_hi, GUEST_GSO_FEATURES)?;

    // The source MAC: the device's (config offset 0, byte by byte as u8[6]).
    let a = g.asm();
    a.test(dword_ptr(n.negotiated_lo), 1u32 << feature::MAC)?;
    a.jz(no_mac)?;
    for i in 0..6 {
        a.mov(al, byte_ptr(edi + at(reg::CONFIG) + i))?;
        a.mov(byte_ptr(n.smac + i as u32), al)?;
    }
    g.bind(&mut no_mac)?;
    g.asm().nop()
}

/// §3.1.1 step 7 and DRIVER_OK: receive queue 0 and transmit queue 1.
fn setup_queues(g: &mut GuestAsm, n: &Net) -> Result<(), IcedError> {
    setup_queue(g, n, RX_QUEUE, RX_DESC, n.rxq_size)?;
    setup_queue(g, n, TX_QUEUE, TX_DESC, n.txq_size)?;
    let a = g.asm();
    a.mov(eax, dword_ptr(n.rxq_size))?;
    a.dec(eax)?;
    a.mov(dword_ptr(n.rx_ring_mask), eax)?;
    a.mov(
        dword_ptr(edi + at(reg::STATUS)),
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK,
    )
}

/// One split virtqueue: its descriptor table at `desc`, the driver (avail) ring one
/// page up, the device (used) ring two pages up. The size is the largest power of two
/// (split rings index modulo the size, with 16-bit counters) not above QueueNumMax or
/// [`MAX_QUEUE_SIZE`]; it is stored in `size`.
fn setup_queue(g: &mut GuestAsm, n: &Net, index: u32, desc: u32, size: u32) -> Result<(), IcedError> {
    let avail = desc + 0x1000;
    let used = desc + 0x2000;
    let mut present = g.label();
    let mut halve = g.label();
    let mut sized = g.label();
    let a = g.asm();
    a.mov(dword_ptr(edi + at(reg::QUEUE_SEL)), index)?;
    a.mov(eax, dword_ptr(edi + at(reg::QUEUE_NUM_MAX)))?;
    a.test(eax, eax)?;
    a.jnz(present)?;
    g.print(&format!("selftest: net queue {index} is not available\n"))?;
    fail_device(g, n, EXIT_NET_DEVICE)?;
    g.bind(&mut present)?;
    let a = g.asm();
    a.mov(ecx, MAX_QUEUE_SIZE)?;
    a.set_label(&mut halve)?;
    a.cmp(ecx, eax)?;
    a.jbe(sized)?;
    a.shr(ecx, 1)?;
    a.jmp(halve)?;
    a.set_label(&mut sized)?;
    a.mov(dword_ptr(size), ecx)?;
    a.mov(dword_ptr(edi + at(reg::QUEUE_NUM)), ecx)?;
    // Fresh rings: avail flags = NO_INTERRUPT (the driver polls), both indexes 0.
    a.mov(dword_ptr(avail), 1u32)?;
    a.mov(dword_ptr(used), 0u32)?;
    for (low, high, addr) in [
        (at(reg::QUEUE_DESC_LOW), at(reg::QUEUE_DESC_HIGH), desc),
        (at(reg::QUEUE_DRIVER_LOW), at(reg::QUEUE_DRIVER_HIGH), avail),
        (at(reg::QUEUE_DEVICE_LOW), at(reg::QUEUE_DEVICE_HIGH), used),
    ] {
        a.mov(dword_ptr(edi + low), addr)?;
        a.mov(dword_ptr(edi + high), 0u32)?;
    }
    a.mov(dword_ptr(edi + at(reg::QUEUE_READY)), 1u32)
}

/// Sends the flow: with HOST_USO one frame carrying every segment (the device, or
/// the host kernel behind it, cuts it into `mss`-byte datagrams), otherwise one frame
/// per segment. Each frame is one device-readable descriptor: virtio-net header,
/// Ethernet, IPv4, UDP, payload. Prints `selftest: tx <F> frames, <S> segments, <B> bytes`.
fn transmit(g: &mut GuestAsm, n: &Net) -> Result<(), IcedError> {
    let mut separate = g.label();
    let mut shaped = g.label();
    let mut fits = g.label();
    let mut next_frame = g.label();
    let mut built = g.label();
    let a = g.asm();
    a.cmp(dword_ptr(n.uso), 0u32)?;
    a.je(separate)?;
    a.mov(dword_ptr(n.tx_frames), 1u32)?;
    a.mov(eax, dword_ptr(n.segments))?;
    a.mov(dword_ptr(n.tx_segments_per_frame), eax)?;
    a.imul_2(eax, dword_ptr(n.mss))?;
    a.mov(dword_ptr(n.tx_payload), eax)?;
    a.jmp(shaped)?;
    a.set_label(&mut separate)?;
    a.mov(eax, dword_ptr(n.segments))?;
    a.mov(dword_ptr(n.tx_frames), eax)?;
    a.mov(dword_ptr(n.tx_segments_per_frame), 1u32)?;
    a.mov(eax, dword_ptr(n.mss))?;
    a.mov(dword_ptr(n.tx_payload), eax)?;
    a.set_label(&mut shaped)?;
    a.mov(eax, dword_ptr(n.tx_frames))?;
    a.cmp(eax, dword_ptr(n.txq_size))?;
    a.jbe(fits)?;
    g.print("selftest: net more segments than transmit descriptors\n")?;
    fail_device(g, n, EXIT_NET_ARGS)?;
    g.bind(&mut fits)?;
    let a = g.asm();
    a.mov(eax, dword_ptr(n.tx_payload))?;
    a.add(eax, (PAYLOAD + 15) as u32)?;
    a.and(eax, !15u32)?;
    a.mov(dword_ptr(n.tx_stride), eax)?;

    a.mov(dword_ptr(n.tx_frame), 0u32)?;
    a.set_label(&mut next_frame)?;
    a.mov(eax, dword_ptr(n.tx_frame))?;
    a.cmp(eax, dword_ptr(n.tx_frames))?;
    a.jae(built)?;
    a.imul_2(eax, dword_ptr(n.tx_stride))?;
    a.add(eax, TX_BUF)?;
    a.mov(esi, eax)?;
    build_tx_frame(g, n)?;
    // Descriptor f: the whole frame, device-readable, no chaining; avail slot f.
    let a = g.asm();
    a.mov(eax, dword_ptr(n.tx_frame))?;
    a.mov(ecx, eax)?;
    a.shl(ecx, 4)?;
    a.mov(dword_ptr(ecx + TX_DESC), esi)?;
    a.mov(dword_ptr(ecx + TX_DESC + 4), 0u32)?;
    a.mov(edx, dword_ptr(n.tx_payload))?;
    a.add(edx, PAYLOAD as u32)?;
    a.mov(dword_ptr(ecx + TX_DESC + 8), edx)?;
    a.mov(dword_ptr(ecx + TX_DESC + 12), 0u32)?;
    a.mov(word_ptr(eax * 2 + TX_AVAIL + 4), ax)?;
    a.inc(dword_ptr(n.tx_frame))?;
    a.jmp(next_frame)?;
    a.set_label(&mut built)?;

    // Publish (x86 keeps stores in order, so the ring entries are visible first),
    // kick, and wait until the device has used every frame.
    let mut wait = g.label();
    let mut sent = g.label();
    let a = g.asm();
    a.mov(eax, dword_ptr(n.tx_frames))?;
    a.mov(word_ptr(TX_AVAIL + 2), ax)?;
    a.mov(edi, dword_ptr(n.base))?;
    a.mov(dword_ptr(edi + at(reg::QUEUE_NOTIFY)), TX_QUEUE)?;
    a.mov(ecx, TX_WAIT_ITERATIONS)?;
    a.set_label(&mut wait)?;
    a.movzx(eax, word_ptr(TX_USED + 2))?;
    a.cmp(eax, dword_ptr(n.tx_frames))?;
    a.je(sent)?;
    pace(g)?;
    g.asm().dec(ecx)?;
    g.asm().jnz(wait)?;
    g.print("selftest: tx timeout\n")?;
    fail_device(g, n, EXIT_NET_TX_TIMEOUT)?;
    g.bind(&mut sent)?;
    g.print("selftest: tx ")?;
    print_var(g, n.tx_frames)?;
    g.print(" frames, ")?;
    print_var(g, n.segments)?;
    g.print(" segments, ")?;
    g.asm().mov(eax, dword_ptr(n.segments))?;
    g.asm().imul_2(eax, dword_ptr(n.mss))?;
    g.print_dec_eax()?;
    g.print(" bytes\n")
}

/// Builds transmit frame `tx_frame` at `esi` (preserved): header, Ethernet, IPv4
/// (checksummed here), UDP, payload. Payload byte `j` of segment `i` (counted over the
/// whole flow) is `(64 * i + j) mod 256`, so every datagram says which one it is.
fn build_tx_frame(g: &mut GuestAsm, n: &Net) -> Result<(), IcedError> {
    build_tx_headers(g, n)?;

    // Payload: the frame's segments, mss bytes each.
    let mut segment = g.label();
    let mut byte = g.label();
    let a = g.asm();
    a.mov(ebx, dword_ptr(n.tx_frame))?;
    a.imul_2(ebx, dword_ptr(n.tx_segments_per_frame))?;
    a.mov(ecx, dword_ptr(n.tx_segments_per_frame))?;
    a.lea(edi, ptr(esi + PAYLOAD))?;
    a.set_label(&mut segment)?;
    a.mov(eax, ebx)?;
    a.shl(eax, 6)?;
    a.mov(edx, dword_ptr(n.mss))?;
    a.set_label(&mut byte)?;
    a.mov(byte_ptr(edi), al)?;
    a.inc(edi)?;
    a.inc(eax)?;
    a.dec(edx)?;
    a.jnz(byte)?;
    a.inc(ebx)?;
    a.dec(ecx)?;
    a.jnz(segment)
}

/// Writes the [`PAYLOAD`] bytes of headers in front of a frame at `esi` (preserved):
/// virtio-net header, Ethernet, IPv4 (checksummed here), UDP, for `tx_payload` bytes of
/// UDP payload (a USO frame when HOST_USO was negotiated), with `tx_frame` as the IPv4
/// identification.
fn build_tx_headers(g: &mut GuestAsm, n: &Net) -> Result<(), IcedError> {
    let mut not_gso = g.label();
    let mut header_done = g.label();
    let mut no_udp_csum = g.label();
    let a = g.asm();
    // virtio-net header (all little-endian): zero, then the offload requests.
    for offset in [0, 4, 8] {
        a.mov(dword_ptr(esi + offset), 0u32)?;
    }
    a.cmp(dword_ptr(n.uso), 0u32)?;
    a.je(not_gso)?;
    // One UDP segmentation request: the device splits the payload into gso_size
    // pieces and copies the first hdr_len bytes in front of each.
    a.mov(byte_ptr(esi + 1), VIRTIO_NET_HDR_GSO_UDP_L4)?;
    a.mov(word_ptr(esi + 2), L2_L4_HEADERS)?;
    a.mov(eax, dword_ptr(n.mss))?;
    a.mov(word_ptr(esi + 4), ax)?;
    needs_csum(a)?;
    a.jmp(header_done)?;
    a.set_label(&mut not_gso)?;
    a.cmp(dword_ptr(n.csum), 0u32)?;
    a.je(header_done)?;
    needs_csum(a)?;
    a.set_label(&mut header_done)?;

    // Ethernet: destination, source, type IPv4.
    a.mov(eax, dword_ptr(n.dmac))?;
    a.mov(dword_ptr(esi + ETH), eax)?;
    a.mov(ax, word_ptr(n.dmac + 4))?;
    a.mov(word_ptr(esi + ETH + 4), ax)?;
    a.mov(eax, dword_ptr(n.smac))?;
    a.mov(dword_ptr(esi + ETH + 6), eax)?;
    a.mov(ax, word_ptr(n.smac + 4))?;
    a.mov(word_ptr(esi + ETH + 10), ax)?;
    a.mov(word_ptr(esi + ETH + 12), 0x0008u32)?; // bytes 08 00

    // IPv4: version 4, 5 words, total length of this (super-)datagram, the frame
    // number as identification, no fragmentation, TTL 64, UDP. For a GSO frame the
    // total length covers every segment, as Linux builds it (each segment gets its
    // own length and checksum when it is cut).
    a.mov(word_ptr(esi + IP), 0x0045u32)?;
    a.mov(eax, dword_ptr(n.tx_payload))?;
    a.add(eax, 28u32)?;
    g.store_be16(esi, IP + 2)?;
    let a = g.asm();
    a.mov(eax, dword_ptr(n.tx_frame))?;
    g.store_be16(esi, IP + 4)?;
    let a = g.asm();
    a.mov(word_ptr(esi + IP + 6), 0u32)?;
    a.mov(word_ptr(esi + IP + 8), 0x1140u32)?; // TTL 64, protocol 17
    a.mov(word_ptr(esi + IP + 10), 0u32)?;
    a.mov(eax, dword_ptr(n.src_ip))?;
    a.mov(dword_ptr(esi + IP + 12), eax)?;
    a.mov(eax, dword_ptr(n.dst_ip))?;
    a.mov(dword_ptr(esi + IP + 16), eax)?;
    a.push(esi)?;
    a.add(esi, IP)?;
    a.mov(ecx, 20u32)?;
    a.xor(eax, eax)?;
    g.checksum()?;
    let a = g.asm();
    a.pop(esi)?;
    a.not(eax)?;
    a.mov(word_ptr(esi + IP + 10), ax)?;

    // UDP: ports, length (of the whole flow for a GSO frame), checksum.
    a.mov(eax, dword_ptr(n.src_port))?;
    g.store_be16(esi, UDP)?;
    g.asm().mov(eax, dword_ptr(n.dst_port))?;
    g.store_be16(esi, UDP + 2)?;
    let a = g.asm();
    a.mov(eax, dword_ptr(n.tx_payload))?;
    a.add(eax, 8u32)?;
    g.store_be16(esi, UDP + 4)?;
    // With the checksum offloaded (NEEDS_CSUM) the field holds the pseudo-header
    // sum, not inverted (Linux's CHECKSUM_PARTIAL): the device adds the UDP header
    // and payload and stores the complement. Without CSUM, 0: "no checksum" (IPv4).
    let a = g.asm();
    a.mov(word_ptr(esi + UDP + 6), 0u32)?;
    a.mov(eax, dword_ptr(n.uso))?;
    a.or(eax, dword_ptr(n.csum))?;
    a.jz(no_udp_csum)?;
    // Pseudo-header: source and destination addresses, protocol, UDP length; in the
    // byte-swapped form `checksum` works in (see asm.rs).
    a.movzx(eax, word_ptr(esi + UDP + 4))?;
    a.add(eax, 0x1100u32)?; // protocol 17 as a big-endian word, loaded little-endian
    a.push(esi)?;
    a.add(esi, IP + 12)?;
    a.mov(ecx, 8u32)?;
    g.checksum()?;
    let a = g.asm();
    a.pop(esi)?;
    a.mov(word_ptr(esi + UDP + 6), ax)?;
    a.set_label(&mut no_udp_csum)?;
    a.nop()
}

/// Header fields asking for the UDP checksum: NEEDS_CSUM from the UDP header on,
/// result into its checksum field.
fn needs_csum(a: &mut CodeAssembler) -> Result<(), IcedError> {
    a.mov(byte_ptr(esi), VIRTIO_NET_HDR_F_NEEDS_CSUM)?;
    a.mov(word_ptr(esi + 6), CSUM_START)?;
    a.mov(word_ptr(esi + 8), UDP_CSUM_OFFSET)
}

/// Posts receive buffers, prints `selftest: rx ready`, then reads frames until
/// `selftest.rx=` UDP segments' worth arrived, printing one line per frame and the
/// totals. A frame spans `num_buffers` used entries with MRG_RXBUF, one otherwise.
/// Used buffers go straight back to the avail ring, so any number of frames fits.
fn receive(g: &mut GuestAsm, n: &Net) -> Result<(), IcedError> {
    let mut small = g.label();
    let mut capped = g.label();
    let mut fill = g.label();
    let mut filled = g.label();
    let a = g.asm();
    // Buffer size: with MRG_RXBUF a big frame spreads over several small buffers;
    // without it, any guest GSO feature needs each buffer to hold 65562 bytes.
    a.mov(dword_ptr(n.rx_buffer_size), SMALL_RX_BUFFER)?;
    a.mov(eax, SMALL_RX_BUFFERS)?;
    a.cmp(dword_ptr(n.mrg), 0u32)?;
    a.jne(small)?;
    a.cmp(dword_ptr(n.guest_gso), 0u32)?;
    a.je(small)?;
    a.mov(dword_ptr(n.rx_buffer_size), BIG_RX_BUFFER)?;
    a.mov(eax, BIG_RX_BUFFERS)?;
    a.set_label(&mut small)?;
    a.cmp(eax, dword_ptr(n.rxq_size))?;
    a.jbe(capped)?;
    a.mov(eax, dword_ptr(n.rxq_size))?;
    a.set_label(&mut capped)?;
    a.mov(dword_ptr(n.rx_buffers), eax)?;

    // Descriptor i: buffer i, device-writable; avail slot i.
    a.xor(ecx, ecx)?;
    a.set_label(&mut fill)?;
    a.cmp(ecx, dword_ptr(n.rx_buffers))?;
    a.jae(filled)?;
    a.mov(eax, ecx)?;
    a.imul_2(eax, dword_ptr(n.rx_buffer_size))?;
    a.add(eax, RX_BUF)?;
    a.mov(edx, ecx)?;
    a.shl(edx, 4)?;
    a.mov(dword_ptr(edx + RX_DESC), eax)?;
    a.mov(dword_ptr(edx + RX_DESC + 4), 0u32)?;
    a.mov(eax, dword_ptr(n.rx_buffer_size))?;
    a.mov(dword_ptr(edx + RX_DESC + 8), eax)?;
    a.mov(dword_ptr(edx + RX_DESC + 12), 2u32)?; // VIRTQ_DESC_F_WRITE, no next
    a.mov(word_ptr(ecx * 2 + RX_AVAIL + 4), cx)?;
    a.inc(ecx)?;
    a.jmp(fill)?;
    a.set_label(&mut filled)?;
    a.mov(word_ptr(RX_AVAIL + 2), cx)?;
    a.mov(dword_ptr(n.rx_avail_idx), ecx)?;
    a.mov(edi, dword_ptr(n.base))?;
    a.mov(dword_ptr(edi + at(reg::QUEUE_NOTIFY)), RX_QUEUE)?;
    g.print("selftest: rx ready, ")?;
    print_var(g, n.rx_buffers)?;
    g.print(" buffers of ")?;
    print_var(g, n.rx_buffer_size)?;
    g.print(" bytes\n")?;

    let a = g.asm();
    for var in [n.rx_frames, n.rx_segments, n.rx_bytes, n.rx_last_used] {
        a.mov(dword_ptr(var), 0u32)?;
    }
    a.mov(eax, dword_ptr(n.rx_wait))?;
    a.mov(dword_ptr(n.rx_budget), eax)?;

    let mut next_frame = g.label();
    let mut more_buffers = g.label();
    let mut complete = g.label();
    let mut finished = g.label();
    let mut timeout = g.label();
    let mut bad_entry = g.label();
    let a = g.asm();
    a.set_label(&mut next_frame)?;
    a.mov(eax, dword_ptr(n.rx_segments))?;
    a.cmp(eax, dword_ptr(n.rx_want))?;
    a.jae(finished)?;
    a.mov(eax, dword_ptr(n.rx_last_used))?;
    a.mov(dword_ptr(n.rx_frame_first), eax)?;
    // The frame's first buffer: its header says how many buffers the frame has.
    wait_rx_used(g, n, timeout)?;
    take_rx_used(g, n, bad_entry)?;
    let a = g.asm();
    a.mov(dword_ptr(n.rx_frame_len), ecx)?;
    a.mov(dword_ptr(n.rx_frame_buf), esi)?;
    a.movzx(eax, word_ptr(esi + 10))?;
    a.mov(dword_ptr(n.rx_num_buffers), eax)?;
    let mut one = g.label();
    let mut counted = g.label();
    let a = g.asm();
    a.cmp(dword_ptr(n.mrg), 0u32)?;
    a.je(one)?;
    a.test(eax, eax)?;
    a.jnz(counted)?;
    a.set_label(&mut one)?;
    a.mov(eax, 1u32)?;
    a.set_label(&mut counted)?;
    a.mov(dword_ptr(n.rx_buffers_left), eax)?;
    a.set_label(&mut more_buffers)?;
    a.dec(dword_ptr(n.rx_buffers_left))?;
    a.jz(complete)?;
    wait_rx_used(g, n, timeout)?;
    take_rx_used(g, n, bad_entry)?;
    g.asm().add(dword_ptr(n.rx_frame_len), ecx)?;
    g.asm().jmp(more_buffers)?;
    g.bind(&mut complete)?;
    report_rx_frame(g, n)?;
    count_rx_segments(g, n)?;
    recycle_rx_buffers(g, n)?;
    g.asm().inc(dword_ptr(n.rx_frames))?;
    g.asm().jmp(next_frame)?;

    g.bind(&mut finished)?;
    g.print("selftest: rx ")?;
    print_var(g, n.rx_frames)?;
    g.print(" frames, ")?;
    print_var(g, n.rx_segments)?;
    g.print(" segments, ")?;
    print_var(g, n.rx_bytes)?;
    g.print(" bytes\n")?;
    let mut done = g.label();
    g.asm().jmp(done)?;

    g.bind(&mut timeout)?;
    g.print("selftest: rx timeout after ")?;
    print_var(g, n.rx_frames)?;
    g.print(" frames\n")?;
    fail_device(g, n, EXIT_NET_RX_TIMEOUT)?;
    g.bind(&mut bad_entry)?;
    g.print("selftest: net bad used entry in the receive queue\n")?;
    fail_device(g, n, EXIT_NET_DEVICE)?;
    g.bind(&mut done)?;
    g.asm().nop()
}

/// Waits (within the shared `rx_budget`) until the used ring has an entry past
/// `rx_last_used`; jumps to `timeout` when the budget runs out.
fn wait_rx_used(g: &mut GuestAsm, n: &Net, timeout: CodeLabel) -> Result<(), IcedError> {
    let mut wait = g.label();
    let mut ready = g.label();
    let a = g.asm();
    a.set_label(&mut wait)?;
    a.movzx(eax, word_ptr(RX_USED + 2))?;
    a.cmp(eax, dword_ptr(n.rx_last_used))?;
    a.jne(ready)?;
    pace(g)?;
    let a = g.asm();
    a.dec(dword_ptr(n.rx_budget))?;
    a.jnz(wait)?;
    a.jmp(timeout)?;
    a.set_label(&mut ready)?;
    Ok(())
}

/// Takes the used entry at `rx_last_used`: `esi` = its buffer, `ecx` = bytes written;
/// advances `rx_last_used`. An id that names no posted buffer, or a length beyond
/// the buffer, jumps to `bad`.
fn take_rx_used(g: &mut GuestAsm, n: &Net, bad: CodeLabel) -> Result<(), IcedError> {
    let a = g.asm();
    a.mov(eax, dword_ptr(n.rx_last_used))?;
    a.and(eax, dword_ptr(n.rx_ring_mask))?;
    a.mov(edx, dword_ptr(eax * 8 + RX_USED + 4))?; // id
    a.mov(ecx, dword_ptr(eax * 8 + RX_USED + 8))?; // len
    a.cmp(edx, dword_ptr(n.rx_buffers))?;
    a.jae(bad)?;
    a.cmp(ecx, dword_ptr(n.rx_buffer_size))?;
    a.ja(bad)?;
    a.mov(esi, edx)?;
    a.imul_2(esi, dword_ptr(n.rx_buffer_size))?;
    a.add(esi, RX_BUF)?;
    a.mov(eax, dword_ptr(n.rx_last_used))?;
    a.inc(eax)?;
    a.and(eax, 0xffffu32)?; // the ring's index is 16 bits
    a.mov(dword_ptr(n.rx_last_used), eax)
}

/// `selftest: rx frame <len> bytes, flags <f>, gso_type <t>, gso_size <g>, num_buffers <n>`.
fn report_rx_frame(g: &mut GuestAsm, n: &Net) -> Result<(), IcedError> {
    g.print("selftest: rx frame ")?;
    let a = g.asm();
    a.mov(esi, dword_ptr(n.rx_frame_buf))?;
    a.mov(eax, dword_ptr(n.rx_frame_len))?;
    a.sub(eax, NET_HDR as u32)?;
    g.print_dec_eax()?;
    g.print(" bytes, flags ")?;
    g.asm().movzx(eax, byte_ptr(esi))?;
    g.print_dec_eax()?;
    g.print(", gso_type ")?;
    g.asm().movzx(eax, byte_ptr(esi + 1))?;
    g.print_dec_eax()?;
    g.print(", gso_size ")?;
    g.asm().movzx(eax, word_ptr(esi + 4))?;
    g.print_dec_eax()?;
    g.print(", num_buffers ")?;
    print_var(g, n.rx_num_buffers)?;
    g.print("\n")
}

/// Adds the frame's UDP payload (from the IPv4 total length, which for a GSO frame
/// covers all its segments) to `rx_bytes`, and its segments to `rx_segments`:
/// `ceil(payload / gso_size)` for a GSO frame, else 1. Other frames count nothing.
fn count_rx_segments(g: &mut GuestAsm, n: &Net) -> Result<(), IcedError> {
    let mut not_udp = g.label();
    let mut single = g.label();
    let mut done = g.label();
    let a = g.asm();
    a.mov(esi, dword_ptr(n.rx_frame_buf))?;
    a.cmp(word_ptr(esi + ETH + 12), 0x0008u32)?; // IPv4
    a.jne(not_udp)?;
    a.movzx(ecx, byte_ptr(esi + IP))?;
    a.mov(edx, ecx)?;
    a.shr(edx, 4)?;
    a.cmp(edx, 4u32)?;
    a.jne(not_udp)?;
    a.and(ecx, 0xfu32)?;
    a.shl(ecx, 2)?; // IPv4 header bytes
    a.cmp(byte_ptr(esi + IP + 9), 17u32)?;
    a.jne(not_udp)?;
    a.movzx(eax, byte_ptr(esi + IP + 2))?;
    a.shl(eax, 8)?;
    a.movzx(edx, byte_ptr(esi + IP + 3))?;
    a.or(eax, edx)?;
    a.sub(eax, ecx)?;
    a.jb(not_udp)?;
    a.sub(eax, 8u32)?;
    a.jb(not_udp)?;
    a.add(dword_ptr(n.rx_bytes), eax)?;
    a.movzx(edx, byte_ptr(esi + 1))?;
    a.and(edx, !VIRTIO_NET_HDR_GSO_ECN & 0xff)?;
    a.jz(single)?;
    a.movzx(ecx, word_ptr(esi + 4))?;
    a.test(ecx, ecx)?;
    a.jz(single)?;
    a.add(eax, ecx)?;
    a.dec(eax)?;
    a.xor(edx, edx)?;
    a.div(ecx)?;
    a.add(dword_ptr(n.rx_segments), eax)?;
    a.jmp(done)?;
    a.set_label(&mut single)?;
    a.inc(dword_ptr(n.rx_segments))?;
    a.jmp(done)?;
    a.set_label(&mut not_udp)?;
    a.nop()?;
    a.set_label(&mut done)?;
    a.nop()
}

/// Gives the frame's buffers (used entries `rx_frame_first` up to `rx_last_used`)
/// back to the device and kicks the receive queue.
fn recycle_rx_buffers(g: &mut GuestAsm, n: &Net) -> Result<(), IcedError> {
    let mut next = g.label();
    let mut done = g.label();
    let a = g.asm();
    a.mov(ecx, dword_ptr(n.rx_frame_first))?;
    a.set_label(&mut next)?;
    a.cmp(ecx, dword_ptr(n.rx_last_used))?;
    a.je(done)?;
    a.mov(eax, ecx)?;
    a.and(eax, dword_ptr(n.rx_ring_mask))?;
    a.mov(edx, dword_ptr(eax * 8 + RX_USED + 4))?;
    a.mov(eax, dword_ptr(n.rx_avail_idx))?;
    a.and(eax, dword_ptr(n.rx_ring_mask))?;
    a.mov(word_ptr(eax * 2 + RX_AVAIL + 4), dx)?;
    a.inc(dword_ptr(n.rx_avail_idx))?;
    a.inc(ecx)?;
    a.and(ecx, 0xffffu32)?;
    a.jmp(next)?;
    a.set_label(&mut done)?;
    a.mov(eax, dword_ptr(n.rx_avail_idx))?;
    a.mov(word_ptr(RX_AVAIL + 2), ax)?;
    a.mov(edi, dword_ptr(n.base))?;
    a.mov(dword_ptr(edi + at(reg::QUEUE_NOTIFY)), RX_QUEUE)
}

/// One poll's pause: a read of COM1's line status register, i.e. one VM exit, so that
/// an iteration count is roughly a time on any host, emulated or not.
fn pace(g: &mut GuestAsm) -> Result<(), IcedError> {
    let a = g.asm();
    a.push(eax)?;
    a.push(edx)?;
    a.mov(dx, super::asm::COM1 + 5)?;
    a.in_(al, dx)?;
    a.pop(edx)?;
    a.pop(eax)
}

/// Prints the feature bits of two 32-bit words (bits 0-31, then 32-63).
fn print_feature_words(g: &mut GuestAsm, low: u32, high: u32) -> Result<(), IcedError> {
    g.asm().mov(eax, dword_ptr(low))?;
    g.asm().xor(ecx, ecx)?;
    g.print_bits()?;
    g.asm().mov(eax, dword_ptr(high))?;
    g.asm().mov(ecx, 32u32)?;
    g.print_bits()
}

/// `flag = 1` if any bit of `mask` is in the 64-bit feature set `(low, high)`, else 0.
fn flag_from(g: &mut GuestAsm, flag: u32, low: u32, high: u32, mask: u64) -> Result<(), IcedError> {
    let mut store = g.label();
    let a = g.asm();
    a.mov(eax, dword_ptr(low))?;
    a.and(eax, mask as u32)?;
    a.mov(edx, dword_ptr(high))?;
    a.and(edx, (mask >> 32) as u32)?;
    a.or(eax, edx)?;
    a.jz(store)?;
    a.mov(eax, 1u32)?;
    a.set_label(&mut store)?;
    a.mov(dword_ptr(flag), eax)
}

/// Prints a variable in decimal.
fn print_var(g: &mut GuestAsm, var: u32) -> Result<(), IcedError> {
    g.asm().push(eax)?;
    g.asm().mov(eax, dword_ptr(var))?;
    g.print_dec_eax()?;
    g.asm().pop(eax)
}

/// Sets FAILED in the device status (virtio 1.x §3.1.1: the driver gave up), then
/// exits with `code`.
fn fail_device(g: &mut GuestAsm, n: &Net, code: u8) -> Result<(), IcedError> {
    let a = g.asm();
    a.mov(edi, dword_ptr(n.base))?;
    a.mov(eax, dword_ptr(edi + at(reg::STATUS)))?;
    a.or(eax, status::FAILED)?;
    a.mov(dword_ptr(edi + at(reg::STATUS)), eax)?;
    g.exit(code)
}

/// Runs `parse` with `esi` just after `key` when the command line has it; a
/// malformed value prints `selftest: net bad <key>` and exits.
fn with_key(
    g: &mut GuestAsm,
    n: &Net,
    key: &str,
    parse: impl FnOnce(&mut GuestAsm, CodeLabel) -> Result<(), IcedError>,
) -> Result<(), IcedError> {
    let key_addr = g.cstr(key);
    let mut absent = g.label();
    let mut bad = g.label();
    let mut ok = g.label();
    g.asm().mov(esi, dword_ptr(n.cmdline))?;
    g.asm().test(esi, esi)?;
    g.asm().jz(absent)?;
    g.find_token(key_addr)?;
    g.asm().test(eax, eax)?;
    g.asm().jz(absent)?;
    parse(g, bad)?;
    // The value must end the token.
    let a = g.asm();
    a.mov(dl, byte_ptr(esi))?;
    a.cmp(dl, b' ' as u32)?;
    a.je(ok)?;
    a.test(dl, dl)?;
    a.jz(ok)?;
    g.bind(&mut bad)?;
    g.print(&format!("selftest: net bad {key}\n"))?;
    g.exit(EXIT_NET_ARGS)?;
    g.bind(&mut ok)?;
    g.asm().nop()?;
    g.bind(&mut absent)?;
    g.asm().nop()
}

/// `key<number>` (decimal or 0x hex) into `var`.
fn key_u32(g: &mut GuestAsm, n: &Net, key: &str, var: u32) -> Result<(), IcedError> {
    with_key(g, n, key, |g, bad| {
        g.parse_num()?;
        let a = g.asm();
        a.test(ecx, ecx)?;
        a.jz(bad)?;
        a.mov(dword_ptr(var), eax)
    })
}

/// `key<a>.<b>.<c>.<d>:<port>` into `ip` (4 bytes, network order) and `port`.
fn key_ipv4_port(g: &mut GuestAsm, n: &Net, key: &str, ip: u32, port: u32) -> Result<(), IcedError> {
    with_key(g, n, key, |g, bad| {
        for (i, separator) in [b'.', b'.', b'.', b':'].into_iter().enumerate() {
            g.parse_num()?;
            let a = g.asm();
            a.test(ecx, ecx)?;
            a.jz(bad)?;
            a.cmp(eax, 255u32)?;
            a.ja(bad)?;
            a.mov(byte_ptr(ip + i as u32), al)?;
            a.cmp(byte_ptr(esi), u32::from(separator))?;
            a.jne(bad)?;
            a.inc(esi)?;
        }
        g.parse_num()?;
        let a = g.asm();
        a.test(ecx, ecx)?;
        a.jz(bad)?;
        a.cmp(eax, 0xffffu32)?;
        a.ja(bad)?;
        a.mov(dword_ptr(port), eax)
    })
}

/// `key<xx>:<xx>:<xx>:<xx>:<xx>:<xx>` (hex) into `mac` (6 bytes).
fn key_mac(g: &mut GuestAsm, n: &Net, key: &str, mac: u32) -> Result<(), IcedError> {
    with_key(g, n, key, |g, bad| {
        for i in 0..6u32 {
            g.parse_hex()?;
            let a = g.asm();
            a.test(ecx, ecx)?;
            a.jz(bad)?;
            a.cmp(ecx, 2u32)?;
            a.ja(bad)?;
            a.mov(byte_ptr(mac + i), al)?;
            if i < 5 {
                a.cmp(byte_ptr(esi), b':' as u32)?;
                a.jne(bad)?;
                a.inc(esi)?;
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_driver_accepts_exactly_the_listed_net_features() {
        let bits: Vec<u32> = (0..64).filter(|bit| DRIVER_FEATURES & (1 << bit) != 0).collect();
        assert_eq!(bits, [0, 1, 3, 5, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 32, 54, 55, 56]);
    }

    #[test]
    fn the_header_offsets_are_those_of_an_untagged_udp_ipv4_frame() {
        assert_eq!(L2_L4_HEADERS, 42);
        assert_eq!(CSUM_START, 34);
        assert_eq!(PAYLOAD, 54);
    }
}
