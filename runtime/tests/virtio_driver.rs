//! A virtio-mmio driver written for tests: it lays out split virtqueues in real guest
//! memory, writes descriptors and available rings, and pokes the transport's registers
//! through the same `BusDevice` interface a vCPU's MMIO exits use.
//!
//! Included by the `virtio_*` tests with `#[path]`; as a test target of its own it
//! checks that the frame builders produce what the kernel expects.
#![allow(dead_code)] // each test binary uses its own part

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmc_runtime::devices::bus::BusDevice;
use vmc_runtime::devices::virtio::{status, Interrupt, InterruptReason, MmioTransport, VirtioDevice};

pub const MEM_SIZE: usize = 32 << 20;

/// virtio-mmio register offsets (from the transport, which takes them from Linux's headers).
pub use vmc_runtime::devices::virtio::mmio::reg;

pub const F_NEXT: u16 = 1;
pub const F_WRITE: u16 = 2;
pub const F_INDIRECT: u16 = 4;

/// Counts interrupts by reason, as a VM's irqfd would raise them.
#[derive(Default)]
pub struct CountingInterrupt {
    pub used_buffer: AtomicU64,
    pub config_change: AtomicU64,
}

impl Interrupt for CountingInterrupt {
    fn trigger(&self, reason: InterruptReason) {
        match reason {
            InterruptReason::UsedBuffer => self.used_buffer.fetch_add(1, Ordering::SeqCst),
            InterruptReason::ConfigChange => self.config_change.fetch_add(1, Ordering::SeqCst),
        };
    }
}

impl CountingInterrupt {
    pub fn used(&self) -> u64 {
        self.used_buffer.load(Ordering::SeqCst)
    }
    pub fn config(&self) -> u64 {
        self.config_change.load(Ordering::SeqCst)
    }
}

pub fn guest_memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).expect("guest memory")
}

/// Waits for `what` to hold, polling; the bound only turns a hang into a failure.
pub fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// One split virtqueue as the driver sees it.
#[derive(Debug, Clone)]
pub struct DriverQueue {
    pub size: u16,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    next_desc: u16,
    pub avail_idx: u16,
    pub used_seen: u16,
}

/// Where queue `index`'s rings live, and where its data buffers start.
pub fn queue_area(index: usize) -> u64 {
    0x10_0000 + index as u64 * 0x4_0000
}

pub fn buffer_area(index: usize) -> u64 {
    0x40_0000 + index as u64 * 0x80_0000
}

pub struct Driver<D: VirtioDevice> {
    pub mem: GuestMemoryMmap,
    pub transport: MmioTransport<D>,
    pub queues: Vec<DriverQueue>,
}

impl<D: VirtioDevice> Driver<D> {
    pub fn new(mem: GuestMemoryMmap, transport: MmioTransport<D>) -> Self {
        Driver {
            mem,
            transport,
            queues: Vec::new(),
        }
    }

    pub fn read(&mut self, offset: u64) -> u32 {
        let mut data = [0u8; 4];
        self.transport.read(offset, &mut data);
        u32::from_le_bytes(data)
    }

    pub fn write(&mut self, offset: u64, value: u32) {
        self.transport.write(offset, &value.to_le_bytes());
    }

    pub fn status(&mut self) -> u32 {
        self.read(reg::STATUS)
    }

    pub fn device_features(&mut self) -> u64 {
        self.write(reg::DEVICE_FEATURES_SEL, 0);
        let low = self.read(reg::DEVICE_FEATURES);
        self.write(reg::DEVICE_FEATURES_SEL, 1);
        let high = self.read(reg::DEVICE_FEATURES);
        u64::from(low) | (u64::from(high) << 32)
    }

    /// Reset, ACKNOWLEDGE, DRIVER, the feature word, FEATURES_OK; true if it stuck.
    pub fn negotiate(&mut self, features: u64) -> bool {
        self.write(reg::STATUS, 0);
        self.write(reg::STATUS, status::ACKNOWLEDGE);
        self.write(reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        self.write(reg::DRIVER_FEATURES_SEL, 0);
        self.write(reg::DRIVER_FEATURES, features as u32);
        self.write(reg::DRIVER_FEATURES_SEL, 1);
        self.write(reg::DRIVER_FEATURES, (features >> 32) as u32);
        let s = self.status();
        self.write(reg::STATUS, s | status::FEATURES_OK);
        self.status() & status::FEATURES_OK != 0
    }

    /// Sets up every queue at its area with `sizes[i]` entries and marks it ready.
    pub fn setup_queues(&mut self, sizes: &[u16]) {
        self.queues.clear();
        for (index, &size) in sizes.iter().enumerate() {
            let base = queue_area(index);
            let queue = DriverQueue {
                size,
                desc: base,
                avail: base + 0x1_0000,
                used: base + 0x2_0000,
                next_desc: 0,
                avail_idx: 0,
                used_seen: 0,
            };
            // Fresh rings: zeroed, as a driver's allocation would be.
            let zeros = vec![0u8; 0x3_0000];
            self.mem.write_slice(&zeros, GuestAddress(base)).unwrap();
            self.write(reg::QUEUE_SEL, index as u32);
            assert_eq!(self.read(reg::QUEUE_READY), 0);
            self.write(reg::QUEUE_NUM, u32::from(size));
            for (low, addr) in [
                (reg::QUEUE_DESC_LOW, queue.desc),
                (reg::QUEUE_DRIVER_LOW, queue.avail),
                (reg::QUEUE_DEVICE_LOW, queue.used),
            ] {
                self.write(low, addr as u32);
                self.write(low + 4, (addr >> 32) as u32);
            }
            self.write(reg::QUEUE_READY, 1);
            self.queues.push(queue);
        }
    }

    pub fn driver_ok(&mut self) {
        let s = self.status();
        self.write(reg::STATUS, s | status::DRIVER_OK);
    }

    /// The whole bring-up; panics if FEATURES_OK does not stick.
    pub fn bring_up(&mut self, features: u64, sizes: &[u16]) {
        assert!(self.negotiate(features), "FEATURES_OK refused for {features:#x}");
        self.setup_queues(sizes);
        self.driver_ok();
        assert_eq!(
            self.status() & status::DEVICE_NEEDS_RESET,
            0,
            "device refused DRIVER_OK: {:?}",
            self.transport.last_error()
        );
    }

    /// Writes descriptor `index` of queue `q` as given, raw.
    pub fn write_desc(&mut self, q: usize, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let at = self.queues[q].desc + u64::from(index) * 16;
        self.write_desc_at(at, addr, len, flags, next);
    }

    pub fn write_desc_at(&mut self, at: u64, addr: u64, len: u32, flags: u16, next: u16) {
        let mut raw = [0u8; 16];
        raw[0..8].copy_from_slice(&addr.to_le_bytes());
        raw[8..12].copy_from_slice(&len.to_le_bytes());
        raw[12..14].copy_from_slice(&flags.to_le_bytes());
        raw[14..16].copy_from_slice(&next.to_le_bytes());
        self.mem.write_slice(&raw, GuestAddress(at)).unwrap();
    }

    /// Puts `head` in the available ring and publishes it.
    pub fn publish(&mut self, q: usize, head: u16) {
        let queue = &mut self.queues[q];
        let slot = queue.avail + 4 + 2 * u64::from(queue.avail_idx % queue.size);
        self.mem.write_obj(head.to_le(), GuestAddress(slot)).unwrap();
        queue.avail_idx = queue.avail_idx.wrapping_add(1);
        let idx = queue.avail_idx;
        self.set_avail_idx(q, idx);
    }

    /// Writes the available ring's index as is (a test may lie with it).
    pub fn set_avail_idx(&mut self, q: usize, idx: u16) {
        let at = GuestAddress(self.queues[q].avail + 2);
        self.mem.store(idx.to_le(), at, Ordering::Release).unwrap();
    }

    /// `used_event` (EVENT_IDX): interrupt me when the used index passes this.
    pub fn set_used_event(&mut self, q: usize, value: u16) {
        let queue = &self.queues[q];
        let at = queue.avail + 4 + 2 * u64::from(queue.size);
        self.mem.write_obj(value.to_le(), GuestAddress(at)).unwrap();
    }

    /// A chain of buffers `(addr, len, writable)` on fresh descriptors; published.
    pub fn add_chain(&mut self, q: usize, buffers: &[(u64, u32, bool)]) -> u16 {
        let size = self.queues[q].size;
        let head = self.queues[q].next_desc;
        for (i, &(addr, len, writable)) in buffers.iter().enumerate() {
            let index = (head + i as u16) % size;
            let last = i + 1 == buffers.len();
            let flags = if writable { F_WRITE } else { 0 } | if last { 0 } else { F_NEXT };
            self.write_desc(q, index, addr, len, flags, (index + 1) % size);
        }
        self.queues[q].next_desc = (head + buffers.len() as u16) % size;
        self.publish(q, head);
        head
    }

    /// Reserves `count` descriptor slots, for hand-written chains; returns the first.
    pub fn take_descs(&mut self, q: usize, count: u16) -> u16 {
        let first = self.queues[q].next_desc;
        self.queues[q].next_desc = (first + count) % self.queues[q].size;
        first
    }

    pub fn notify(&mut self, q: usize) {
        self.write(reg::QUEUE_NOTIFY, q as u32);
    }

    pub fn used_idx(&self, q: usize) -> u16 {
        let at = GuestAddress(self.queues[q].used + 2);
        u16::from_le(self.mem.load(at, Ordering::Acquire).unwrap())
    }

    /// Waits until `count` more used entries appeared and returns them `(id, len)`.
    pub fn wait_used(&mut self, q: usize, count: u16) -> Vec<(u32, u32)> {
        let target = self.queues[q].used_seen.wrapping_add(count);
        wait_for(&format!("{count} used buffers on queue {q}"), || {
            self.used_idx(q).wrapping_sub(self.queues[q].used_seen) >= count
        });
        let mut entries = Vec::new();
        let queue = &mut self.queues[q];
        while queue.used_seen != target {
            let at = queue.used + 4 + 8 * u64::from(queue.used_seen % queue.size);
            let id: u32 = self.mem.read_obj(GuestAddress(at)).unwrap();
            let len: u32 = self.mem.read_obj(GuestAddress(at + 4)).unwrap();
            entries.push((u32::from_le(id), u32::from_le(len)));
            queue.used_seen = queue.used_seen.wrapping_add(1);
        }
        entries
    }

    /// Used entries that appeared so far and were not yet seen.
    pub fn take_used(&mut self, q: usize) -> Vec<(u32, u32)> {
        let new = self.used_idx(q).wrapping_sub(self.queues[q].used_seen);
        if new == 0 {
            return Vec::new();
        }
        self.wait_used(q, new)
    }

    pub fn read_bytes(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        self.mem.read_slice(&mut out, GuestAddress(addr)).unwrap();
        out
    }

    pub fn write_bytes(&self, addr: u64, data: &[u8]) {
        self.mem.write_slice(data, GuestAddress(addr)).unwrap();
    }
}

// ---- Frames -------------------------------------------------------------------------

pub const ETH_HLEN: usize = 14;
pub const IPV4_HLEN: usize = 20;
pub const UDP_HLEN: usize = 8;

/// One's-complement sum of 16-bit big-endian words, folded, not complemented.
pub fn ones_sum(data: &[u8], mut sum: u32) -> u16 {
    for pair in data.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// An Ethernet + IPv4 + UDP frame. With `partial_csum` the UDP checksum field holds the
/// pseudo-header sum (what a driver leaves for NEEDS_CSUM); otherwise it is 0 (none).
pub fn udp_frame(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    dst_port: u16,
    payload: &[u8],
    partial_csum: bool,
) -> Vec<u8> {
    let udp_len = (UDP_HLEN + payload.len()) as u16;
    let ip_len = IPV4_HLEN as u16 + udp_len;
    let mut frame = Vec::new();
    frame.extend_from_slice(&dst_mac);
    frame.extend_from_slice(&src_mac);
    frame.extend_from_slice(&0x0800u16.to_be_bytes());
    let mut ip = [0u8; IPV4_HLEN];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&dst);
    let check = !ones_sum(&ip, 0);
    ip[10..12].copy_from_slice(&check.to_be_bytes());
    frame.extend_from_slice(&ip);
    let check = if partial_csum {
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&src);
        pseudo.extend_from_slice(&dst);
        pseudo.extend_from_slice(&[0, 17]);
        pseudo.extend_from_slice(&udp_len.to_be_bytes());
        ones_sum(&pseudo, 0)
    } else {
        0
    };
    frame.extend_from_slice(&40000u16.to_be_bytes());
    frame.extend_from_slice(&dst_port.to_be_bytes());
    frame.extend_from_slice(&udp_len.to_be_bytes());
    frame.extend_from_slice(&check.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// A 12-byte virtio-net header.
pub fn vnet_header(
    flags: u8,
    gso_type: u8,
    hdr_len: u16,
    gso_size: u16,
    csum_start: u16,
    csum_offset: u16,
) -> [u8; 12] {
    let mut h = [0u8; 12];
    h[0] = flags;
    h[1] = gso_type;
    h[2..4].copy_from_slice(&hdr_len.to_le_bytes());
    h[4..6].copy_from_slice(&gso_size.to_le_bytes());
    h[6..8].copy_from_slice(&csum_start.to_le_bytes());
    h[8..10].copy_from_slice(&csum_offset.to_le_bytes());
    h
}

pub fn parse_mac(text: &str) -> [u8; 6] {
    let bytes: Vec<u8> = text
        .trim()
        .split(':')
        .map(|part| u8::from_str_radix(part, 16).expect("MAC byte"))
        .collect();
    bytes.try_into().expect("6 MAC bytes")
}

#[test]
fn a_udp_frame_has_a_valid_ipv4_header_checksum() {
    let frame = udp_frame([2; 6], [4; 6], [10, 0, 0, 2], [10, 0, 0, 1], 9, b"hi", false);
    assert_eq!(frame.len(), ETH_HLEN + IPV4_HLEN + UDP_HLEN + 2);
    assert_eq!(ones_sum(&frame[ETH_HLEN..ETH_HLEN + IPV4_HLEN], 0), 0xffff);
}
