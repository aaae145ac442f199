//! Throughput mode (`selftest.blast=<B>`): instead of the one small flow, the driver
//! sends `B` bytes of UDP payload to `selftest.dst` as fast as it can, for benchmarks of
//! the device and the host path behind it, then prints
//!
//! ```text
//! selftest: blast start, <spf> segments of <M> bytes per frame, <C> frames in flight
//! selftest: blast <B> bytes, <F> frames, <S> segments
//! ```
//!
//! and the program goes on as usual (the receive step if asked for, then `selftest:
//! pass`). `M` is `selftest.mss`; the payload is cut into `S = ceil(B / M)` UDP
//! datagrams (the last one shorter when `M` does not divide `B`).
//!
//! **Frames.** With HOST_USO each frame is one USO frame (gso_type UDP_L4, gso_size
//! `M`, NEEDS_CSUM) of `spf` segments: as many as fit one IPv4 datagram (65,507 bytes
//! of UDP payload), and at most [`MAX_SEGMENTS_PER_FRAME`] (64, the kernel's
//! UDP_MAX_SEGMENTS before Linux 6.12: a TAP refuses a UDP_L4 frame of more segments
//! on kernels that check). Without it, one frame per segment (`spf` = 1), with the UDP
//! checksum offloaded (NEEDS_CSUM) when CSUM was negotiated, else 0 (none). A last USO
//! frame of a single segment goes out as a plain frame, as Linux sends it.
//!
//! **Payload.** Byte `j` of datagram `i` (counted over the whole blast from 0) is
//! `(64 * i + j) mod 256`, the scheme of the ordinary flow, so a receiver checks each
//! datagram against `i mod 4` and notices a loss or a reordering of any number of
//! datagrams that is not a multiple of 4. That pattern depends only on `i mod 4`, so
//! the guest writes it once: a buffer of `spf + 3` segments at [`PAYLOAD_BUF`], and
//! frame `k` (whose first datagram is `k * spf`) points at segment `(k * spf) mod 4` of
//! it. Nothing is written per byte while sending.
//!
//! **Rings.** Each frame is a chain of two device-readable descriptors: the 54 bytes of
//! headers (virtio-net, Ethernet, IPv4, UDP; identical for every full frame, so one copy
//! serves them all, and one more for the last frame), then the payload. A queue of `Q`
//! descriptors holds `C = Q / 2` frames in flight. The driver posts `C` frames, publishes
//! the available index once and notifies, then loops: wait until at least `min(C / 4,
//! in flight)` chains were used, take each used entry, and post its chain again for
//! the next frame (one descriptor address and one ring slot per frame: 18 guest
//! instructions, which is what bounds the rate without USO where each guest
//! instruction is emulated); publish, then notify unless the device set
//! VRING_USED_F_NO_NOTIFY (after a full barrier, as the virtio spec asks). The device
//! may return chains in any order. RING_EVENT_IDX is not negotiated (see
//! [`DRIVER_FEATURES`](super::DRIVER_FEATURES)), so a notification goes with every
//! batch: with `vmc run` an ioeventfd takes it, without a VM exit to the VMM.
//!
//! **Bounded wait.** Waiting reads the TSC, no VM exit: when no chain came back for
//! [`STALL_TSC_TICKS`] (2^34 ticks: about 4 s at 4 GHz, 17 s at 1 GHz), the guest prints
//! `selftest: blast stalled, <U> of <F> frames used, <N> in flight`, sets FAILED and
//! exits with [`EXIT_NET_BLAST_STALL`]. A used entry naming no chain the driver posted
//! prints `selftest: net bad used entry in the transmit queue` and exits with
//! `EXIT_NET_DEVICE`; a transmit queue of fewer than 2 descriptors, `selftest: net
//! blast needs a transmit queue of 2 or more` and the same code.
//!
//! Memory: the two header copies and a ramp of bytes 0, 1, 2, … (the pattern's source)
//! at [`TX_BUF`], the payload buffer at [`PAYLOAD_BUF`] (3 MiB, below
//! count mode's region).

use iced_x86::code_asm::*;

use super::{at, fail_device, print_var, reg, Net, MAX_FLOW_PAYLOAD, PAYLOAD, TX_AVAIL, TX_BUF, TX_DESC, TX_USED};
use crate::asm::GuestAsm;

/// Most bytes `selftest.blast=` takes: 1 GiB.
pub const MAX_BYTES: u32 = 1 << 30;
/// Most segments in one USO frame.
pub const MAX_SEGMENTS_PER_FRAME: u32 = 64;
/// How long the driver waits for the device to return any transmit chain.
pub const STALL_TSC_TICKS: u64 = 1 << 34;
/// Exit code when the device stops returning transmit chains in throughput mode.
pub const EXIT_NET_BLAST_STALL: u8 = 15;

/// The payload buffer: `spf + 3` segments of the pattern (at most 4 × 65,507 bytes).
pub const PAYLOAD_BUF: u32 = 0x30_0000;
/// Headers of every full frame, then of the last one (one cache line each).
const HDR_FULL: u32 = TX_BUF;
const HDR_LAST: u32 = TX_BUF + 0x40;
/// Bytes 0, 1, 2, … (mod 256), 256 + 192 + mss long, rounded up to dwords.
const RAMP: u32 = TX_BUF + 0x100;

/// The TSC is read shifted right this much (so 32 bits of it cover hours).
const TSC_SHIFT: u32 = 20;
const STALL_UNITS: u32 = (STALL_TSC_TICKS >> TSC_SHIFT) as u32;

/// virtq descriptor flag: the chain goes on at `next`.
const VIRTQ_DESC_F_NEXT: u32 = 1;
/// Used ring flag: the device asks not to be notified.
const VRING_USED_F_NO_NOTIFY: u32 = 1;

// The ramp and the headers stay below the receive buffers, the payload buffer below
// count mode's region.
const _: () = assert!(RAMP + 256 + 192 + MAX_FLOW_PAYLOAD + 4 <= super::RX_BUF);
const _: () = assert!(HDR_LAST + PAYLOAD as u32 <= RAMP);
const _: () = assert!(PAYLOAD_BUF >= super::RX_BUF + 0x4_0000 * 2);
const _: () = assert!(PAYLOAD_BUF + 4 * MAX_FLOW_PAYLOAD <= crate::COUNT_BASE);
const _: () = assert!(STALL_UNITS > 0 && (STALL_UNITS as u64) << TSC_SHIFT == STALL_TSC_TICKS);

/// Throughput mode's variables (addresses in the guest's data area).
pub(super) struct Blast {
    /// `selftest.blast=`, 0 when absent.
    pub bytes: u32,
    spf: u32,
    frame_payload: u32,
    segments: u32,
    frames: u32,
    last_frame: u32,
    last_payload: u32,
    last_segments: u32,
    chains: u32,
    batch: u32,
    ring_mask: u32,
    bad_id_mask: u32,
    /// Payload addresses for frames `k` with `k mod 4` = 0, 1, 2, 3.
    variants: u32,
    stall_start: u32,
}

impl Blast {
    pub fn new(g: &mut GuestAsm) -> Blast {
        let mut var = || g.var32();
        Blast {
            bytes: var(),
            spf: var(),
            frame_payload: var(),
            segments: var(),
            frames: var(),
            last_frame: var(),
            last_payload: var(),
            last_segments: var(),
            chains: var(),
            batch: var(),
            ring_mask: var(),
            bad_id_mask: var(),
            variants: g.data(&[0; 16]),
            stall_start: g.var32(),
        }
    }
}

/// Parses `selftest.blast=<B>` (1 to [`MAX_BYTES`]) into `b.bytes`.
pub(super) fn parse(g: &mut GuestAsm, n: &Net, b: &Blast) -> Result<(), IcedError> {
    let bytes = b.bytes;
    super::with_key(g, n, crate::cmdline_keys::NET_BLAST, |g, bad| {
        g.parse_num()?;
        // `parse_num` wraps around 32 bits: a value that may have wrapped is refused.
        // Up to 8 digits cannot (decimal or hex); 9 or 10 can only in hex (a `0x`
        // before them, not the key's `=`), 10 decimal digits only from 4294967296 up:
        // with a leading 1 they fit.
        let mut fits = g.label();
        let a = g.asm();
        a.test(ecx, ecx)?;
        a.jz(bad)?;
        a.cmp(ecx, 8u32)?;
        a.jbe(fits)?;
        a.cmp(ecx, 10u32)?;
        a.ja(bad)?;
        a.mov(edx, esi)?;
        a.sub(edx, ecx)?;
        a.cmp(byte_ptr(edx - 1), b'=' as u32)?;
        a.jne(bad)?;
        a.cmp(ecx, 10u32)?;
        a.jne(fits)?;
        a.cmp(byte_ptr(edx), b'1' as u32)?;
        a.jne(bad)?;
        a.set_label(&mut fits)?;
        a.test(eax, eax)?;
        a.jz(bad)?;
        a.cmp(eax, MAX_BYTES)?;
        a.ja(bad)?;
        a.mov(dword_ptr(bytes), eax)
    })
}

/// Emits throughput mode, run instead of the ordinary transmit step when
/// `b.bytes` is not 0 (the caller checks). `edi` need not hold anything.
pub(super) fn emit(g: &mut GuestAsm, n: &Net, b: &Blast) -> Result<(), IcedError> {
    shape(g, n, b)?;
    prepare(g, n, b)?;
    send(g, n, b)
}

/// Segments per frame, frames, the last frame; chains in flight.
fn shape(g: &mut GuestAsm, n: &Net, b: &Blast) -> Result<(), IcedError> {
    let mut single = g.label();
    let mut capped = g.label();
    let mut queue_ok = g.label();
    let a = g.asm();
    a.mov(ecx, 1u32)?;
    a.cmp(dword_ptr(n.uso), 0u32)?;
    a.je(single)?;
    a.mov(eax, MAX_FLOW_PAYLOAD)?;
    a.xor(edx, edx)?;
    a.div(dword_ptr(n.mss))?;
    a.mov(ecx, eax)?;
    a.cmp(ecx, MAX_SEGMENTS_PER_FRAME)?;
    a.jbe(capped)?;
    a.mov(ecx, MAX_SEGMENTS_PER_FRAME)?;
    a.set_label(&mut capped)?;
    a.nop()?;
    a.set_label(&mut single)?;
    a.mov(dword_ptr(b.spf), ecx)?;
    a.mov(eax, ecx)?;
    a.imul_2(eax, dword_ptr(n.mss))?;
    a.mov(dword_ptr(b.frame_payload), eax)?;
    // S = ceil(B / M): B <= 2^30 and M <= 65507, so B + M - 1 fits 32 bits.
    a.mov(eax, dword_ptr(b.bytes))?;
    a.add(eax, dword_ptr(n.mss))?;
    a.dec(eax)?;
    a.xor(edx, edx)?;
    a.div(dword_ptr(n.mss))?;
    a.mov(dword_ptr(b.segments), eax)?;
    // F = ceil(S / spf).
    a.add(eax, dword_ptr(b.spf))?;
    a.dec(eax)?;
    a.xor(edx, edx)?;
    a.div(dword_ptr(b.spf))?;
    a.mov(dword_ptr(b.frames), eax)?;
    // The last frame: index F - 1, payload B - (F - 1) * spf * M, ceil(that / M)
    // segments.
    a.dec(eax)?;
    a.mov(dword_ptr(b.last_frame), eax)?;
    a.imul_2(eax, dword_ptr(b.frame_payload))?;
    a.mov(edx, dword_ptr(b.bytes))?;
    a.sub(edx, eax)?;
    a.mov(dword_ptr(b.last_payload), edx)?;
    a.mov(eax, edx)?;
    a.add(eax, dword_ptr(n.mss))?;
    a.dec(eax)?;
    a.xor(edx, edx)?;
    a.div(dword_ptr(n.mss))?;
    a.mov(dword_ptr(b.last_segments), eax)?;

    // Chains of two descriptors: C = Q / 2 in flight; batches of C / 4 (at least 1).
    a.mov(eax, dword_ptr(n.txq_size))?;
    a.shr(eax, 1)?;
    a.jnz(queue_ok)?;
    g.print("selftest: net blast needs a transmit queue of 2 or more\n")?;
    fail_device(g, n, super::EXIT_NET_DEVICE)?;
    g.bind(&mut queue_ok)?;
    let a = g.asm();
    a.mov(dword_ptr(b.chains), eax)?;
    a.shr(eax, 2)?;
    let mut batch_ok = a.create_label();
    a.jnz(batch_ok)?;
    a.inc(eax)?;
    a.set_label(&mut batch_ok)?;
    a.mov(dword_ptr(b.batch), eax)?;
    a.mov(eax, dword_ptr(n.txq_size))?;
    a.dec(eax)?;
    a.mov(dword_ptr(b.ring_mask), eax)?;
    // A head the driver posts is even and below Q: no bit outside Q - 2 may be set.
    a.dec(eax)?;
    a.not(eax)?;
    a.mov(dword_ptr(b.bad_id_mask), eax)?;

    g.print("selftest: blast start, ")?;
    print_var(g, b.spf)?;
    g.print(" segments of ")?;
    print_var(g, n.mss)?;
    g.print(" bytes per frame, ")?;
    print_var(g, b.chains)?;
    g.print(" frames in flight\n")
}

/// Headers, the payload buffer, the payload addresses per frame, the descriptors.
fn prepare(g: &mut GuestAsm, n: &Net, b: &Blast) -> Result<(), IcedError> {
    // The headers: every full frame's, then the last frame's (identification 0 for
    // all: the copies are shared, and nothing here is fragmented).
    let a = g.asm();
    a.mov(dword_ptr(n.tx_frame), 0u32)?;
    a.mov(eax, dword_ptr(b.frame_payload))?;
    a.mov(dword_ptr(n.tx_payload), eax)?;
    a.mov(esi, HDR_FULL)?;
    super::build_tx_headers(g, n)?;
    let mut several = g.label();
    let a = g.asm();
    a.mov(eax, dword_ptr(b.last_payload))?;
    a.mov(dword_ptr(n.tx_payload), eax)?;
    a.mov(esi, HDR_LAST)?;
    super::build_tx_headers(g, n)?;
    let a = g.asm();
    // A last frame of one segment is no GSO frame: gso_type, hdr_len and gso_size 0
    // (its checksum request stays).
    a.cmp(dword_ptr(b.last_segments), 1u32)?;
    a.jne(several)?;
    a.mov(byte_ptr(esi + 1), 0u32)?;
    a.mov(dword_ptr(esi + 2), 0u32)?;
    a.set_label(&mut several)?;

    // The ramp: 0..255 as dwords, then copied onto itself 256 bytes on (a forward
    // `rep movsd` over an overlap repeats the period) until it is 256 + 192 + M long.
    let mut ramp = a.create_label();
    a.mov(edi, RAMP)?;
    a.mov(eax, 0x0302_0100u32)?;
    a.mov(ecx, 64u32)?;
    a.set_label(&mut ramp)?;
    a.stosd()?;
    a.add(eax, 0x0404_0404u32)?;
    a.dec(ecx)?;
    a.jnz(ramp)?;
    a.mov(esi, RAMP)?;
    a.mov(ecx, dword_ptr(n.mss))?;
    a.add(ecx, 192 + 3)?;
    a.shr(ecx, 2)?;
    a.rep().movsd()?;

    // The payload buffer: segment i (0 <= i < spf + 3) is the ramp from 64 * (i mod 4),
    // M bytes.
    let mut segment = a.create_label();
    a.mov(edi, PAYLOAD_BUF)?;
    a.xor(ebx, ebx)?;
    a.mov(edx, dword_ptr(b.spf))?;
    a.add(edx, 3)?;
    a.set_label(&mut segment)?;
    a.mov(esi, ebx)?;
    a.and(esi, 3)?;
    a.shl(esi, 6)?;
    a.add(esi, RAMP)?;
    a.mov(ecx, dword_ptr(n.mss))?;
    a.shr(ecx, 2)?;
    a.rep().movsd()?;
    a.mov(ecx, dword_ptr(n.mss))?;
    a.and(ecx, 3)?;
    a.rep().movsb()?;
    a.inc(ebx)?;
    a.dec(edx)?;
    a.jnz(segment)?;

    // Frame k starts with datagram k * spf: its payload is segment (k * spf) mod 4 of
    // the buffer, which depends on k mod 4 only.
    for q in 0..4u32 {
        a.mov(eax, dword_ptr(b.spf))?;
        a.imul_3(eax, eax, q as i32)?;
        a.and(eax, 3)?;
        a.imul_2(eax, dword_ptr(n.mss))?;
        a.add(eax, PAYLOAD_BUF)?;
        a.mov(dword_ptr(b.variants + 4 * q), eax)?;
    }

    // Chain c: descriptor 2c the full frame's headers, NEXT to 2c + 1, the payload
    // (its address set when a frame is posted on it).
    let mut chain = a.create_label();
    a.xor(ecx, ecx)?;
    a.mov(edx, TX_DESC)?;
    a.set_label(&mut chain)?;
    a.mov(dword_ptr(edx), HDR_FULL)?;
    a.mov(dword_ptr(edx + 4), 0u32)?;
    a.mov(dword_ptr(edx + 8), PAYLOAD as u32)?;
    a.lea(eax, ptr(ecx * 2 + 1))?;
    a.shl(eax, 16)?;
    a.or(eax, VIRTQ_DESC_F_NEXT)?;
    a.mov(dword_ptr(edx + 12), eax)?;
    a.mov(dword_ptr(edx + 16), PAYLOAD_BUF)?;
    a.mov(dword_ptr(edx + 20), 0u32)?;
    a.mov(eax, dword_ptr(b.frame_payload))?;
    a.mov(dword_ptr(edx + 24), eax)?;
    a.mov(dword_ptr(edx + 28), 0u32)?;
    a.add(edx, 32)?;
    a.inc(ecx)?;
    a.cmp(ecx, dword_ptr(b.chains))?;
    a.jb(chain)
}

/// Posts frame `ebx` (then increments it) on the chain whose head is `edx` (even,
/// below Q; preserved): its payload address and the next slot of the available ring
/// (not yet published). For every frame but the last; clobbers `eax` and `ecx`.
fn post(g: &mut GuestAsm, b: &Blast) -> Result<(), IcedError> {
    let a = g.asm();
    a.mov(ecx, edx)?;
    a.shl(ecx, 4)?;
    a.mov(eax, ebx)?;
    a.and(eax, 3)?;
    a.mov(eax, dword_ptr(eax * 4 + b.variants))?;
    a.mov(dword_ptr(ecx + (TX_DESC + 16)), eax)?;
    a.mov(eax, ebx)?;
    a.and(eax, dword_ptr(b.ring_mask))?;
    a.mov(word_ptr(eax * 2 + (TX_AVAIL + 4)), dx)?;
    a.inc(ebx)
}

/// Posts the last frame like [`post`], with the last frame's headers and length (it is
/// posted once, so its chain needs no restoring after).
fn post_last(g: &mut GuestAsm, b: &Blast) -> Result<(), IcedError> {
    let a = g.asm();
    a.mov(ecx, edx)?;
    a.shl(ecx, 4)?;
    a.mov(dword_ptr(ecx + TX_DESC), HDR_LAST)?;
    a.mov(eax, dword_ptr(b.last_payload))?;
    a.mov(dword_ptr(ecx + (TX_DESC + 16 + 8)), eax)?;
    post(g, b)
}

/// Takes the used entry `ebp` (then increments it): `edx` = the head it returns. One
/// naming no chain jumps to `bad`. Clobbers `eax`.
fn take(g: &mut GuestAsm, b: &Blast, bad: CodeLabel) -> Result<(), IcedError> {
    let a = g.asm();
    a.mov(eax, ebp)?;
    a.and(eax, dword_ptr(b.ring_mask))?;
    a.mov(edx, dword_ptr(eax * 8 + (TX_USED + 4)))?;
    a.test(dword_ptr(b.bad_id_mask), edx)?;
    a.jnz(bad)?;
    a.inc(ebp)
}

/// Publishes the available index (`ebx` frames posted in all) and notifies the
/// transmit queue unless the device said not to.
fn publish(g: &mut GuestAsm, n: &Net) -> Result<(), IcedError> {
    let mut quiet = g.label();
    let a = g.asm();
    // x86 keeps stores in order: the slots are visible before the index.
    a.mov(word_ptr(TX_AVAIL + 2), bx)?;
    // The index must be visible before the device's flags are read (a store then a
    // load may pass each other): a locked instruction is a full barrier.
    a.lock().or(dword_ptr(esp), 0)?;
    a.test(word_ptr(TX_USED), VRING_USED_F_NO_NOTIFY)?;
    a.jnz(quiet)?;
    a.mov(eax, dword_ptr(n.base))?;
    a.mov(dword_ptr(eax + at(reg::QUEUE_NOTIFY)), super::TX_QUEUE)?;
    a.set_label(&mut quiet)?;
    a.nop()
}

/// The sending loop. Registers: `ebx` frames posted, `ebp` used entries taken (both
/// counted from 0 over the whole blast; their low 16 bits are the rings' indexes).
/// Per frame, the guest takes one used entry and posts its chain again: 18
/// instructions, the counts of each kind worked out once per round.
fn send(g: &mut GuestAsm, n: &Net, b: &Blast) -> Result<(), IcedError> {
    let mut first = g.label();
    let mut first_regular = g.label();
    let mut first_next = g.label();
    let mut first_done = g.label();
    let mut round = g.label();
    let mut capped = g.label();
    let mut ready = g.label();
    let mut poll = g.label();
    let mut finished = g.label();
    let mut stalled = g.label();
    let mut bad_entry = g.label();

    // The first C frames (or all, if fewer) on chains 0, 2, 4, …
    let a = g.asm();
    a.xor(ebx, ebx)?;
    a.xor(ebp, ebp)?;
    a.xor(edx, edx)?;
    a.set_label(&mut first)?;
    a.cmp(ebx, dword_ptr(b.frames))?;
    a.jae(first_done)?;
    a.cmp(ebx, dword_ptr(b.chains))?;
    a.jae(first_done)?;
    a.cmp(ebx, dword_ptr(b.last_frame))?;
    a.jne(first_regular)?;
    post_last(g, b)?;
    g.asm().jmp(first_next)?;
    g.bind(&mut first_regular)?;
    post(g, b)?;
    g.bind(&mut first_next)?;
    g.asm().add(edx, 2)?;
    g.asm().jmp(first)?;
    g.bind(&mut first_done)?;
    publish(g, n)?;

    let a = g.asm();
    a.set_label(&mut round)?;
    a.cmp(ebp, dword_ptr(b.frames))?;
    a.jae(finished)?;
    // Wait for min(batch, in flight) used entries (in flight >= 1 here: every used
    // chain is posted again while frames remain).
    a.mov(ecx, ebx)?;
    a.sub(ecx, ebp)?;
    a.cmp(ecx, dword_ptr(b.batch))?;
    a.jbe(capped)?;
    a.mov(ecx, dword_ptr(b.batch))?;
    a.set_label(&mut capped)?;
    a.movzx(esi, word_ptr(TX_USED + 2))?;
    a.sub(esi, ebp)?;
    a.and(esi, 0xffffu32)?;
    a.cmp(esi, ecx)?;
    a.jae(ready)?;
    // Not yet: poll, reading the TSC (no VM exit) to bound the wait. After the bound,
    // take whatever came back; nothing at all is a stall.
    a.rdtsc()?;
    a.shrd(eax, edx, TSC_SHIFT)?;
    a.mov(dword_ptr(b.stall_start), eax)?;
    a.set_label(&mut poll)?;
    a.movzx(esi, word_ptr(TX_USED + 2))?;
    a.sub(esi, ebp)?;
    a.and(esi, 0xffffu32)?;
    a.cmp(esi, ecx)?;
    a.jae(ready)?;
    a.rdtsc()?;
    a.shrd(eax, edx, TSC_SHIFT)?;
    a.sub(eax, dword_ptr(b.stall_start))?;
    a.cmp(eax, STALL_UNITS)?;
    a.jb(poll)?;
    a.test(esi, esi)?;
    a.jz(stalled)?;
    a.set_label(&mut ready)?;

    // `esi` used entries: the first min(esi, last_frame - ebx) post frames before the
    // last; then maybe the last frame; the rest are only taken.
    let mut no_regular = g.label();
    let mut regular = g.label();
    let mut only_take = g.label();
    let mut take_rest = g.label();
    let mut round_done = g.label();
    let a = g.asm();
    a.mov(edi, ebx)?;
    a.mov(ecx, dword_ptr(b.last_frame))?;
    a.sub(ecx, ebx)?;
    a.jbe(no_regular)?;
    a.cmp(ecx, esi)?;
    a.jbe(regular)?;
    a.mov(ecx, esi)?;
    a.set_label(&mut regular)?;
    a.sub(esi, ecx)?;
    a.push(esi)?;
    a.mov(esi, ecx)?;
    let mut hot = g.label();
    g.bind(&mut hot)?;
    take(g, b, bad_entry)?;
    post(g, b)?;
    let a = g.asm();
    a.dec(esi)?;
    a.jnz(hot)?;
    a.pop(esi)?;
    a.set_label(&mut no_regular)?;
    a.test(esi, esi)?;
    a.jz(round_done)?;
    a.cmp(ebx, dword_ptr(b.last_frame))?;
    a.jne(only_take)?;
    take(g, b, bad_entry)?;
    post_last(g, b)?;
    g.asm().dec(esi)?;
    g.asm().jz(round_done)?;
    g.bind(&mut only_take)?;
    g.asm().nop()?;
    g.bind(&mut take_rest)?;
    take(g, b, bad_entry)?;
    let a = g.asm();
    a.dec(esi)?;
    a.jnz(take_rest)?;
    // Anything posted this round: publish and notify.
    a.set_label(&mut round_done)?;
    a.cmp(edi, ebx)?;
    a.je(round)?;
    publish(g, n)?;
    g.asm().jmp(round)?;

    g.bind(&mut stalled)?;
    g.print("selftest: blast stalled, ")?;
    g.asm().mov(eax, ebp)?;
    g.print_dec_eax()?;
    g.print(" of ")?;
    print_var(g, b.frames)?;
    g.print(" frames used, ")?;
    g.asm().mov(eax, ebx)?;
    g.asm().sub(eax, ebp)?;
    g.print_dec_eax()?;
    g.print(" in flight\n")?;
    fail_device(g, n, EXIT_NET_BLAST_STALL)?;

    g.bind(&mut bad_entry)?;
    g.print("selftest: net bad used entry in the transmit queue\n")?;
    fail_device(g, n, super::EXIT_NET_DEVICE)?;

    g.bind(&mut finished)?;
    g.print("selftest: blast ")?;
    print_var(g, b.bytes)?;
    g.print(" bytes, ")?;
    print_var(g, b.frames)?;
    g.print(" frames, ")?;
    print_var(g, b.segments)?;
    g.print(" segments\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the guest computes, in Rust: (segments per frame, segments, frames, last
    /// frame's payload, last frame's segments).
    fn shape(bytes: u32, mss: u32, uso: bool) -> (u32, u32, u32, u32, u32) {
        let spf = if uso {
            (MAX_FLOW_PAYLOAD / mss).min(MAX_SEGMENTS_PER_FRAME)
        } else {
            1
        };
        let segments = bytes.div_ceil(mss);
        let frames = segments.div_ceil(spf);
        let last = bytes - (frames - 1) * spf * mss;
        (spf, segments, frames, last, last.div_ceil(mss))
    }

    #[test]
    fn frames_hold_at_most_64_segments_and_one_ipv4_datagram() {
        assert_eq!(shape(16 << 20, 1000, true), (64, 16778, 263, 9216, 10));
        assert_eq!(shape(16 << 20, 1472, true), (44, 11398, 260, 2304, 2));
        assert_eq!(shape(16 << 20, 1000, false), (1, 16778, 16778, 216, 1));
        assert_eq!(shape(100, 1000, true), (64, 1, 1, 100, 1));
        assert_eq!(shape(MAX_BYTES, 1, true), (64, MAX_BYTES, MAX_BYTES / 64, 64, 64));
        for mss in [1, 2, 3, 100, 1000, 1023, 1472, 8000, 32754, MAX_FLOW_PAYLOAD] {
            let (spf, ..) = shape(1 << 20, mss, true);
            assert!(spf * mss <= MAX_FLOW_PAYLOAD && spf <= MAX_SEGMENTS_PER_FRAME);
            // The payload buffer holds spf + 3 segments.
            assert!(PAYLOAD_BUF + (spf + 3) * mss <= crate::COUNT_BASE);
        }
    }

    #[test]
    fn the_exit_code_is_distinct_from_the_others() {
        use crate::*;
        let others = [
            EXIT_BAD_START_INFO,
            EXIT_EXCEPTION,
            EXIT_NET_ARGS,
            EXIT_NET_DEVICE,
            EXIT_NET_FEATURES,
            EXIT_NET_TX_TIMEOUT,
            EXIT_NET_RX_TIMEOUT,
            EXIT_COUNT_MEMORY,
            EXIT_COUNT_DEVICE,
            EXIT_COUNT_ARGS,
        ];
        assert!(!others.contains(&EXIT_NET_BLAST_STALL));
    }

    #[test]
    fn the_stall_bound_is_2_to_the_34_tsc_ticks() {
        assert_eq!(STALL_UNITS, 1 << 14);
    }
}
