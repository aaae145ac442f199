//! The virtio-net event loop: one thread per active device, waiting on the TAP, one
//! `EventFd` per queue (QueueNotify writes and ioeventfds both land there) and a stop
//! `EventFd`.
//!
//! Transmit: each chain's header is copied out and checked, then header and frame go to
//! the TAP in one `writev`, the frame straight from guest memory. Receive: a frame is
//! read from the TAP into the worker's buffer, then copied into one chain (or, with
//! MRG_RXBUF, as many as it needs). A frame that finds no buffers stays pending, the TAP
//! is no longer polled, and the next RX queue notification resumes.
//!
//! Guest errors are contained here: a bad chain is returned unused and counted, a bad
//! header drops its frame; only a ring the device can no longer trust (an available
//! index running ahead by more than the queue size, a head index outside the queue, a
//! used ring it cannot write) stops the device with DEVICE_NEEDS_RESET. Every loop is
//! bounded by the queue size.
//!
//! The TAP going away (deleted under the running VM) is not the guest's doing and needs
//! no reset. What the kernel does then (measured on Linux 6.18): the fd stays open, epoll
//! reports EPOLLERR on it for ever (level-triggered, whatever the mask), and every read,
//! write and tun ioctl fails with EBADFD; a TAP that is merely down fails writes with EIO
//! and has nothing to read, which is not this. On the first EBADFD, read or write, the
//! worker counts `tap_gone`, sends the device's notice once (see `Net::set_notice`),
//! takes the TAP out of epoll and never touches it again: transmit chains are still
//! taken, returned and counted as `tx_dropped_tap`; receive buffers stay posted, unused.
//! With STATUS negotiated the link goes down in the configuration space, with a
//! configuration change interrupt.

use std::io::IoSliceMut;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use virtio_bindings::bindings::virtio_ring::{VRING_AVAIL_F_NO_INTERRUPT, VRING_DESC_F_INDIRECT};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueOwnedT, QueueState, QueueT};

use crate::dirty::DirtyBitmap;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::counters::NetCounters;
use super::feature::{GUEST_CSUM, MRG_RXBUF, STATUS};
use super::header::{TxHeaderError, VnetHeader, HDR_LEN, NUM_BUFFERS_OFFSET};
use crate::devices::virtio::features::{has, RING_INDIRECT_DESC};
use crate::devices::virtio::{InterruptReason, VirtioInterrupt};
use crate::host::{Errno, Tap, TapError};

const TOKEN_TAP: u64 = 0;
const TOKEN_RX_QUEUE: u64 = 1;
const TOKEN_TX_QUEUE: u64 = 2;
const TOKEN_STOP: u64 = 3;

/// Which queue, for [`Worker::mark_used_ring`].
const RX: usize = super::RX_QUEUE;
const TX: usize = super::TX_QUEUE;

/// The shortest frame worth sending: an Ethernet header.
const MIN_FRAME_LEN: usize = 14;
/// The longest frame the TAP takes or gives: 64 KiB of GSO payload plus headers
/// (the TAP module's advice for read buffers).
const MAX_FRAME_LEN: usize = 65550;
/// The kernel refuses more iovecs in one `writev`.
const IOV_MAX: usize = 1024;

/// What the worker is handed at DRIVER_OK.
pub(super) struct WorkerParts {
    pub mem: GuestMemoryMmap,
    pub features: u64,
    pub rx: Queue,
    pub tx: Queue,
    pub tap: Arc<Tap>,
    pub interrupt: Arc<VirtioInterrupt>,
    pub counters: Arc<NetCounters>,
    pub rx_event: EventFd,
    pub tx_event: EventFd,
    pub stop: EventFd,
    /// Records the guest pages the worker writes (live migration).
    pub dirty: Option<Arc<DirtyBitmap>>,
    /// Told once, in a line, that the TAP went away.
    pub notice: Option<super::Notice>,
}

pub(super) struct Worker {
    parts: WorkerParts,
    epoll: Epoll,
    rx_frame: Vec<u8>,
    /// Length of a frame read from the TAP and not yet delivered.
    rx_pending: Option<usize>,
    tap_polled: bool,
    /// Reading the TAP failed: it is no longer polled.
    tap_failed: bool,
    /// The rings cannot be trusted any more: DEVICE_NEEDS_RESET is set.
    broken: bool,
}

/// A guest error the device cannot recover from without a reset.
struct Fatal;

/// A chain taken from the available ring, its descriptors checked.
struct Chain {
    head: u16,
    descs: Vec<Descriptor>,
}

impl Chain {
    fn capacity(&self) -> usize {
        self.descs.iter().map(|d| d.len() as usize).sum()
    }
}

/// What the available ring holds next.
enum Next {
    /// Nothing: the driver has made no more buffers available.
    Empty,
    /// A chain whose descriptors passed the checks.
    Chain(Chain),
    /// A malformed chain (an indirect table that was not negotiated, a loop, a next
    /// index outside the table, a descriptor of the wrong direction or outside guest
    /// memory, more descriptors than the queue has): its head, to return it unused.
    Malformed(u16),
}

/// The next chain on the available ring, taken off it; `Fatal` when the ring itself
/// cannot be trusted (the available index ran ahead, or a head outside the queue).
fn next_chain(queue: &mut Queue, mem: &GuestMemoryMmap, indirect_ok: bool, writable: bool) -> Result<Next, Fatal> {
    let chain = match queue.iter(mem) {
        Ok(mut available) => available.next(),
        // The available index ran more than a queue's length ahead.
        Err(_) => return Err(Fatal),
    };
    let Some(chain) = chain else {
        return Ok(Next::Empty);
    };
    let head = chain.head_index();
    if head >= queue.size() {
        // Not even returnable: the used ring takes only indices inside the queue.
        return Err(Fatal);
    }
    if !indirect_ok {
        // virtio-queue follows indirect tables whether or not they were negotiated.
        let flags_at = GuestAddress(queue.desc_table()).checked_add(u64::from(head) * 16 + 12);
        let flags: Option<u16> = flags_at.and_then(|at| mem.read_obj(at).ok());
        if flags.is_none_or(|flags| u32::from(u16::from_le(flags)) & VRING_DESC_F_INDIRECT != 0) {
            return Ok(Next::Malformed(head));
        }
    }
    let limit = usize::from(queue.size());
    let mut descs = Vec::new();
    let mut last_had_next = false;
    // The crate ends a chain quietly on a loop, a next index outside the table, or an
    // unreadable descriptor: the last descriptor then still says "next".
    for desc in chain.take(limit + 1) {
        last_had_next = desc.has_next();
        descs.push(desc);
    }
    let valid = !descs.is_empty()
        && descs.len() <= limit
        && !last_had_next
        && descs
            .iter()
            .all(|d| d.is_write_only() == writable && GuestMemoryBackend::check_range(mem, d.addr(), d.len() as usize));
    Ok(if valid {
        Next::Chain(Chain { head, descs })
    } else {
        Next::Malformed(head)
    })
}

// Chains are copied by hand rather than with virtio-queue's `Reader`/`Writer`: those are
// built from the chain's iterator, which ends quietly on a loop or a bad next index and
// skips descriptors of the other direction, so the checks above would need a second walk
// of a table the guest can rewrite in between; `Writer` marks pages only in vm-memory's
// own bitmap, not in [`DirtyBitmap`], and tells no guest addresses; and `Reader` copies,
// where transmit hands guest memory to `writev` as it is.

/// Copies `out.len()` bytes from the chain's buffers, starting `offset` bytes in.
fn read_chain(mem: &GuestMemoryMmap, descs: &[Descriptor], offset: usize, out: &mut [u8]) -> bool {
    let mut skip = offset;
    let mut done = 0;
    for desc in descs {
        let len = desc.len() as usize;
        if skip >= len {
            skip -= len;
            continue;
        }
        let n = (len - skip).min(out.len() - done);
        let Some(addr) = desc.addr().checked_add(skip as u64) else {
            return false;
        };
        if mem.read_slice(&mut out[done..done + n], addr).is_err() {
            return false;
        }
        done += n;
        skip = 0;
        if done == out.len() {
            return true;
        }
    }
    done == out.len()
}

/// Copies `data` into the chain's buffers, starting `offset` bytes in; what it writes is
/// marked in `dirty`.
fn write_chain(
    mem: &GuestMemoryMmap,
    dirty: Option<&DirtyBitmap>,
    descs: &[Descriptor],
    offset: usize,
    data: &[u8],
) -> bool {
    let mut skip = offset;
    let mut done = 0;
    for desc in descs {
        if done == data.len() {
            break;
        }
        let len = desc.len() as usize;
        if skip >= len {
            skip -= len;
            continue;
        }
        let n = (len - skip).min(data.len() - done);
        let Some(addr) = desc.addr().checked_add(skip as u64) else {
            return false;
        };
        if mem.write_slice(&data[done..done + n], addr).is_err() {
            return false;
        }
        if let Some(dirty) = dirty {
            dirty.mark(addr.0, n as u64);
        }
        done += n;
        skip = 0;
    }
    done == data.len()
}

/// Signals used buffers unless the driver asked not to be interrupted (EVENT_IDX's
/// `used_event`, or the available ring's NO_INTERRUPT flag without it).
fn notify_used(queue: &mut Queue, mem: &GuestMemoryMmap, interrupt: &VirtioInterrupt) -> Result<(), Fatal> {
    let needed = if queue.event_idx_enabled() {
        queue.needs_notification(mem).map_err(|_| Fatal)?
    } else {
        let flags: u16 = mem.read_obj(GuestAddress(queue.avail_ring())).map_err(|_| Fatal)?;
        u32::from(u16::from_le(flags)) & VRING_AVAIL_F_NO_INTERRUPT == 0
    };
    if needed {
        interrupt.signal(InterruptReason::UsedBuffer);
    }
    Ok(())
}

/// What became of a received frame.
enum Delivery {
    Delivered,
    /// No buffers for it now; keep it.
    NoBuffers,
    /// Dropped and counted.
    Dropped,
}

impl Worker {
    pub(super) fn new(parts: WorkerParts) -> std::io::Result<Worker> {
        let epoll = Epoll::new()?;
        let watch = |fd: i32, token: u64| epoll.ctl(ControlOperation::Add, fd, EpollEvent::new(EventSet::IN, token));
        // A TAP that went away under an earlier worker stays out: epoll would report its
        // error for ever.
        let tap_gone = tap_is_gone(&parts);
        if !tap_gone {
            watch(parts.tap.as_raw_fd(), TOKEN_TAP)?;
        }
        watch(parts.rx_event.as_raw_fd(), TOKEN_RX_QUEUE)?;
        watch(parts.tx_event.as_raw_fd(), TOKEN_TX_QUEUE)?;
        watch(parts.stop.as_raw_fd(), TOKEN_STOP)?;
        Ok(Worker {
            parts,
            epoll,
            rx_frame: vec![0; HDR_LEN + MAX_FRAME_LEN],
            rx_pending: None,
            tap_polled: !tap_gone,
            tap_failed: tap_gone,
            broken: false,
        })
    }

    /// The interrupt the worker signals, for whoever watches the thread.
    pub(super) fn interrupt(&self) -> Arc<VirtioInterrupt> {
        self.parts.interrupt.clone()
    }

    /// Serves the queues until stopped; returns where they stood.
    pub(super) fn run(mut self) -> [QueueState; 2] {
        // Notifications may have come before the thread: their eventfds are still
        // readable, but a pass now costs nothing.
        self.process_tx();
        self.process_rx();
        let mut events = [EpollEvent::default(); 8];
        loop {
            let count = match self.epoll.wait(-1, &mut events) {
                Ok(count) => count,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                // epoll_wait fails only on a bad fd or buffer: say so rather than go
                // quiet. The thread ends, so a reset's join still returns.
                Err(_) => {
                    self.fail();
                    return self.queue_states();
                }
            };
            for event in &events[..count] {
                match event.data() {
                    TOKEN_STOP => return self.queue_states(),
                    TOKEN_TX_QUEUE => {
                        let _ = self.parts.tx_event.read();
                        self.process_tx();
                    }
                    TOKEN_RX_QUEUE => {
                        let _ = self.parts.rx_event.read();
                        self.poll_tap(true);
                        self.process_rx();
                    }
                    TOKEN_TAP => self.process_rx(),
                    _ => {}
                }
            }
        }
    }

    fn queue_states(&self) -> [QueueState; 2] {
        [self.parts.rx.state(), self.parts.tx.state()]
    }

    /// Starts or stops waiting for TAP frames: stopped while a frame waits for buffers,
    /// so that a readable TAP does not spin the loop, and for good once the TAP fails
    /// (removed from epoll, since epoll reports errors and hang-ups whatever the mask).
    fn poll_tap(&mut self, on: bool) {
        if self.tap_polled == on || (on && (self.broken || self.tap_failed)) {
            return;
        }
        let (operation, events) = if on {
            (ControlOperation::Add, EventSet::IN)
        } else {
            (ControlOperation::Delete, EventSet::empty())
        };
        let event = EpollEvent::new(events, TOKEN_TAP);
        if self.epoll.ctl(operation, self.parts.tap.as_raw_fd(), event).is_ok() {
            self.tap_polled = on;
        }
    }

    fn fail(&mut self) {
        if !self.broken {
            self.broken = true;
            NetCounters::inc(&self.parts.counters.needs_reset_events);
            self.parts.interrupt.signal_needs_reset();
            self.poll_tap(false);
        }
    }

    fn process_tx(&mut self) {
        if self.broken {
            return;
        }
        if self.tx_pass().is_err() {
            self.fail();
        }
        self.mark_used_ring(TX);
        if !self.tap_failed && tap_is_gone(&self.parts) {
            // A write found it gone: stop listening to it too.
            self.tap_failed = true;
            self.poll_tap(false);
        }
    }

    /// Marks a queue's used ring (with `avail_event`) as written, for live migration.
    fn mark_used_ring(&self, which: usize) {
        let Some(dirty) = &self.parts.dirty else {
            return;
        };
        let queue = if which == TX { &self.parts.tx } else { &self.parts.rx };
        // flags, idx, `size` elements of 8 bytes, avail_event.
        dirty.mark(queue.used_ring(), 6 + 8 * u64::from(queue.size()));
    }

    fn tx_pass(&mut self) -> Result<(), Fatal> {
        let p = &mut self.parts;
        let indirect_ok = has(p.features, RING_INDIRECT_DESC);
        // Bounded: a guest that keeps adding cannot hold the thread; the queue's eventfd
        // is signalled again to come back after the other events.
        let mut budget = 4 * usize::from(p.tx.size());
        let mut used = false;
        loop {
            while budget > 0 {
                budget -= 1;
                let head = match next_chain(&mut p.tx, &p.mem, indirect_ok, false)? {
                    Next::Empty => break,
                    Next::Chain(chain) => {
                        transmit(p, &chain);
                        chain.head
                    }
                    Next::Malformed(head) => {
                        NetCounters::inc(&p.counters.bad_descriptors);
                        head
                    }
                };
                p.tx.add_used(&p.mem, head, 0).map_err(|_| Fatal)?;
                used = true;
            }
            if budget == 0 {
                let _ = p.tx_event.write(1);
                break;
            }
            // With EVENT_IDX this publishes avail_event; a chain added meanwhile is seen.
            if !p.tx.enable_notification(&p.mem).map_err(|_| Fatal)? {
                break;
            }
        }
        if used {
            notify_used(&mut p.tx, &p.mem, &p.interrupt)?;
        }
        Ok(())
    }

    fn process_rx(&mut self) {
        if self.broken {
            return;
        }
        if self.rx_pass().is_err() {
            self.fail();
        }
        self.mark_used_ring(RX);
    }

    fn rx_pass(&mut self) -> Result<(), Fatal> {
        let mut used = false;
        // Bounded like transmit; the TAP stays readable, so epoll brings us back.
        for _ in 0..2 * usize::from(self.parts.rx.size()) {
            let len = match self.rx_pending {
                Some(len) => len,
                None => match self.read_tap() {
                    Some(len) => len,
                    None => break,
                },
            };
            match self.deliver(len, &mut used)? {
                Delivery::Delivered | Delivery::Dropped => self.rx_pending = None,
                Delivery::NoBuffers => {
                    self.rx_pending = Some(len);
                    let p = &mut self.parts;
                    // Buffers added since we looked? Otherwise wait for the notification.
                    if p.rx.enable_notification(&p.mem).map_err(|_| Fatal)? {
                        continue;
                    }
                    NetCounters::inc(&p.counters.rx_waited_for_buffers);
                    self.poll_tap(false);
                    break;
                }
            }
        }
        if used {
            let p = &mut self.parts;
            notify_used(&mut p.rx, &p.mem, &p.interrupt)?;
        }
        Ok(())
    }

    /// Reads one frame from the TAP into the worker's buffer; `None` when there is none,
    /// or the TAP failed.
    fn read_tap(&mut self) -> Option<usize> {
        if self.tap_failed {
            return None;
        }
        let counters = &self.parts.counters;
        // Bounded: each pass consumes a frame, and the TAP queue is finite.
        for _ in 0..64 {
            match self.parts.tap.read_frame(&mut [IoSliceMut::new(&mut self.rx_frame)]) {
                Ok(Some(len)) if len >= HDR_LEN => return Some(len),
                // Not a frame with a header: skip it.
                Ok(Some(_)) => NetCounters::inc(&counters.rx_tap_errors),
                Ok(None) => return None,
                Err(error) => {
                    // The interface went away (EBADFD) or broke: stop listening to it
                    // rather than spin on its error.
                    NetCounters::inc(&counters.rx_tap_errors);
                    tap_failed(&self.parts, "read", &error);
                    self.tap_failed = true;
                    self.poll_tap(false);
                    return None;
                }
            }
        }
        None
    }

    /// Puts the pending frame (`len` bytes, header included) into the guest's buffers.
    fn deliver(&mut self, len: usize, used: &mut bool) -> Result<Delivery, Fatal> {
        let p = &mut self.parts;
        let frame = &mut self.rx_frame[..len];
        if !has(p.features, GUEST_CSUM) {
            // Without GUEST_CSUM the device must leave flags zero (the TAP may still say
            // DATA_VALID); the frame itself is fully checksummed.
            frame[0] = 0;
        }
        let indirect_ok = has(p.features, RING_INDIRECT_DESC);
        let size = usize::from(p.rx.size());
        let counters = &p.counters;

        if !has(p.features, MRG_RXBUF) {
            // One chain per frame, num_buffers 1. Malformed chains are returned unused.
            frame[NUM_BUFFERS_OFFSET..HDR_LEN].copy_from_slice(&1u16.to_le_bytes());
            for _ in 0..size {
                let chain = match next_chain(&mut p.rx, &p.mem, indirect_ok, true)? {
                    Next::Empty => return Ok(Delivery::NoBuffers),
                    // Not even room for the header: malformed, not merely small.
                    Next::Chain(chain) if chain.capacity() >= HDR_LEN => chain,
                    Next::Chain(Chain { head, .. }) | Next::Malformed(head) => {
                        NetCounters::inc(&counters.bad_descriptors);
                        p.rx.add_used(&p.mem, head, 0).map_err(|_| Fatal)?;
                        *used = true;
                        continue;
                    }
                };
                if chain.capacity() < len {
                    // Leave the chain for a frame that fits.
                    p.rx.go_to_previous_position();
                    NetCounters::inc(&counters.rx_dropped_too_big);
                    return Ok(Delivery::Dropped);
                }
                if !write_chain(&p.mem, p.dirty.as_deref(), &chain.descs, 0, frame) {
                    NetCounters::inc(&counters.bad_descriptors);
                    p.rx.add_used(&p.mem, chain.head, 0).map_err(|_| Fatal)?;
                    *used = true;
                    continue;
                }
                p.rx.add_used(&p.mem, chain.head, len as u32).map_err(|_| Fatal)?;
                *used = true;
                NetCounters::inc(&counters.rx_frames);
                NetCounters::add(&counters.rx_bytes, (len - HDR_LEN) as u64);
                return Ok(Delivery::Delivered);
            }
            return Ok(Delivery::NoBuffers);
        }

        // MRG_RXBUF: as many chains as the frame needs, num_buffers says how many. The
        // chains are consumed only once the whole frame is placed.
        let mut taken: Vec<(Chain, usize)> = Vec::new();
        let mut written = 0;
        let mut attempts = 0;
        while written < len {
            attempts += 1;
            if taken.len() >= size || attempts > 2 * size {
                for _ in 0..taken.len() {
                    p.rx.go_to_previous_position();
                }
                NetCounters::inc(&counters.rx_dropped_too_big);
                return Ok(Delivery::Dropped);
            }
            let (head, chain) = match next_chain(&mut p.rx, &p.mem, indirect_ok, true)? {
                Next::Empty => {
                    for _ in 0..taken.len() {
                        p.rx.go_to_previous_position();
                    }
                    return Ok(Delivery::NoBuffers);
                }
                // The header must fit in the first buffer; every buffer holds something.
                Next::Chain(chain) if chain.capacity() >= if taken.is_empty() { HDR_LEN } else { 1 } => {
                    (chain.head, Some(chain))
                }
                Next::Chain(chain) => (chain.head, None),
                Next::Malformed(head) => (head, None),
            };
            let Some(chain) = chain else {
                // A malformed chain: return it unused. The ring has moved past it, so a
                // frame already partly placed cannot wait any more: drop it, returning
                // its buffers unused too.
                NetCounters::inc(&counters.bad_descriptors);
                p.rx.add_used(&p.mem, head, 0).map_err(|_| Fatal)?;
                *used = true;
                if !taken.is_empty() {
                    for (chain, _) in &taken {
                        p.rx.add_used(&p.mem, chain.head, 0).map_err(|_| Fatal)?;
                    }
                    NetCounters::inc(&counters.rx_dropped_bad_chain);
                    return Ok(Delivery::Dropped);
                }
                continue;
            };
            let n = chain.capacity().min(len - written);
            if !write_chain(
                &p.mem,
                p.dirty.as_deref(),
                &chain.descs,
                0,
                &frame[written..written + n],
            ) {
                // check_range passed, so this is not expected; treat like a bad chain.
                NetCounters::inc(&counters.bad_descriptors);
                p.rx.add_used(&p.mem, chain.head, 0).map_err(|_| Fatal)?;
                for (chain, _) in &taken {
                    p.rx.add_used(&p.mem, chain.head, 0).map_err(|_| Fatal)?;
                }
                *used = true;
                NetCounters::inc(&counters.rx_dropped_bad_chain);
                return Ok(Delivery::Dropped);
            }
            written += n;
            taken.push((chain, n));
        }
        let num_buffers = taken.len() as u16;
        if !write_chain(
            &p.mem,
            p.dirty.as_deref(),
            &taken[0].0.descs,
            NUM_BUFFERS_OFFSET,
            &num_buffers.to_le_bytes(),
        ) {
            return Err(Fatal);
        }
        for (chain, n) in &taken {
            p.rx.add_used(&p.mem, chain.head, *n as u32).map_err(|_| Fatal)?;
        }
        *used = true;
        NetCounters::inc(&counters.rx_frames);
        NetCounters::add(&counters.rx_bytes, (len - HDR_LEN) as u64);
        Ok(Delivery::Delivered)
    }
}

/// Whether the TAP went away, under this worker or an earlier one.
fn tap_is_gone(p: &WorkerParts) -> bool {
    p.counters.tap_gone.load(Ordering::Relaxed) != 0
}

/// A TAP read or write failed: if the TAP went away (EBADFD), the first to see it counts
/// it, takes the link down and sends the notice; later calls do nothing.
fn tap_failed(p: &WorkerParts, op: &str, error: &TapError) {
    let Some(errno @ Errno(libc::EBADFD)) = error.errno() else {
        return;
    };
    if p.counters
        .tap_gone
        .compare_exchange(0, 1, Ordering::Relaxed, Ordering::Relaxed)
        .is_err()
    {
        return;
    }
    if has(p.features, STATUS) {
        // The configuration space now says the link is down (Net::read_config).
        p.interrupt.signal(InterruptReason::ConfigChange);
    }
    if let Some(notice) = &p.notice {
        notice(&format!(
            "TAP {} went away ({op}: {errno}); the device passes no more frames",
            p.tap.name()
        ));
    }
}

/// Sends one transmit chain to the TAP, or drops it and counts why.
fn transmit(p: &WorkerParts, chain: &Chain) {
    let counters = &p.counters;
    if tap_is_gone(p) {
        // Nothing to write to: the chain is returned like any other, its frame dropped.
        NetCounters::inc(&counters.tx_dropped_tap);
        return;
    }
    let total = chain.capacity();
    if total < HDR_LEN + MIN_FRAME_LEN {
        NetCounters::inc(&counters.tx_dropped_short);
        return;
    }
    if total > HDR_LEN + MAX_FRAME_LEN {
        NetCounters::inc(&counters.tx_dropped_oversize);
        return;
    }
    let frame_len = total - HDR_LEN;
    // The header is checked and sent from our copy, so the guest cannot change it
    // between the check and the write.
    let mut header = [0u8; HDR_LEN];
    if !read_chain(&p.mem, &chain.descs, 0, &mut header) {
        NetCounters::inc(&counters.bad_descriptors);
        return;
    }
    if let Err(error) = VnetHeader::from_bytes(&header).validate_tx(p.features, frame_len) {
        let counter = match error {
            TxHeaderError::Flags => &counters.tx_dropped_bad_flags,
            TxHeaderError::Gso => &counters.tx_dropped_bad_gso,
            TxHeaderError::Csum => &counters.tx_dropped_bad_csum,
        };
        NetCounters::inc(counter);
        return;
    }

    let mut iovecs = Vec::with_capacity(chain.descs.len() + 1);
    iovecs.push(libc::iovec {
        iov_base: header.as_mut_ptr().cast(),
        iov_len: HDR_LEN,
    });
    let mut skip = HDR_LEN;
    for desc in &chain.descs {
        let len = desc.len() as usize;
        if skip >= len {
            skip -= len;
            continue;
        }
        let Some(addr) = desc.addr().checked_add(skip as u64) else {
            NetCounters::inc(&counters.bad_descriptors);
            return;
        };
        for slice in GuestMemoryBackend::get_slices(&p.mem, addr, len - skip) {
            let Ok(slice) = slice else {
                NetCounters::inc(&counters.bad_descriptors);
                return;
            };
            iovecs.push(libc::iovec {
                iov_base: slice.ptr_guard().as_ptr() as *mut libc::c_void,
                iov_len: slice.len(),
            });
        }
        skip = 0;
    }
    if iovecs.len() > IOV_MAX {
        NetCounters::inc(&counters.tx_dropped_oversize);
        return;
    }
    // SAFETY: the first iovec is `header`, alive for the call; the others are slices
    // of guest memory that vm-memory checked, mapped for as long as `p.mem` lives.
    match unsafe { p.tap.write_frame_raw(&iovecs) } {
        Ok(Some(_)) => {
            NetCounters::inc(&counters.tx_frames);
            NetCounters::add(&counters.tx_bytes, frame_len as u64);
        }
        Ok(None) => NetCounters::inc(&counters.tx_dropped_tap),
        Err(error) => {
            NetCounters::inc(&counters.tx_dropped_tap);
            tap_failed(p, "write", &error);
        }
    }
}
