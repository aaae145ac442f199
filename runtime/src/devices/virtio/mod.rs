//! Virtio devices and the virtio-mmio transport they are reached through.
//!
//! - [`mmio`]: [`MmioTransport`], the virtio-mmio version 2 register block (virtio 1.x
//!   §4.2.2). It owns the driver-facing state (status, feature negotiation, queue setup)
//!   and is what the VM puts on its MMIO bus.
//! - [`net`]: [`net::Net`], the virtio-net device over a TAP, with its USO offloads.
//!
//! A device knows only its queues, its guest memory and its backend: the transport hands
//! it those through [`VirtioDevice::activate`] once the driver sets DRIVER_OK, and the
//! device signals the guest through a [`VirtioInterrupt`].
//!
//! Wiring a virtio-net device into a VM:
//!
//! ```text
//! let net = Net::new(NetConfig { features, mac, mtu, rx_queue_size, tx_queue_size }, tap)?;
//! let irq = Arc::new(EventFdInterrupt::new()?);      // vm_fd.register_irqfd(irq.eventfd(), gsi)
//! let transport = MmioTransport::new(net, vm.memory().clone(), irq)?;
//! for (index, event) in transport.queue_notify_events() {
//!     // KVM_IOEVENTFD at base + QUEUE_NOTIFY_OFFSET, 4 bytes, datamatch = index
//! }
//! let transport = Arc::new(Mutex::new(transport));
//! vm.add_mmio_device(base, MMIO_SIZE, transport.clone())?; // and keep `transport` for stats
//! ```
//!
//! Without the ioeventfds the QueueNotify write exits to the VMM and reaches the same
//! `EventFd`s through the transport; both paths work.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

pub mod mmio;
pub mod net;

pub use mmio::{
    MmioTransport, QueueSnapshot, TransportError, TransportSnapshot, TransportStats, MMIO_SIZE, QUEUE_NOTIFY_OFFSET,
};

/// Feature bits every transport knows (virtio 1.x §6 "Reserved Feature Bits").
///
/// The numbers come from `virtio-bindings` (Linux's uapi headers), shared by the device
/// and the self-test guest's driver.
pub mod features {
    /// The device and driver speak virtio 1.x; a vmc device offers nothing else.
    pub const VERSION_1: u32 = virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
    /// Descriptors may point at indirect descriptor tables.
    pub const RING_INDIRECT_DESC: u32 = virtio_bindings::virtio_ring::VIRTIO_RING_F_INDIRECT_DESC;
    /// `used_event` / `avail_event` notification suppression.
    pub const RING_EVENT_IDX: u32 = virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;

    /// The feature word with `bit` set.
    pub const fn bit(bit: u32) -> u64 {
        1 << bit
    }

    /// `bit` is set in `word`.
    pub const fn has(word: u64, bit: u32) -> bool {
        word & (1 << bit) != 0
    }
}

/// Device status bits (virtio 1.x §2.1).
pub mod status {
    pub use virtio_bindings::virtio_config::{
        VIRTIO_CONFIG_S_ACKNOWLEDGE as ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER as DRIVER,
        VIRTIO_CONFIG_S_DRIVER_OK as DRIVER_OK, VIRTIO_CONFIG_S_FAILED as FAILED,
        VIRTIO_CONFIG_S_FEATURES_OK as FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET as DEVICE_NEEDS_RESET,
    };
}

/// Why the device interrupts the guest; the bits of the InterruptStatus register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InterruptReason {
    /// The device used buffers in a virtqueue (InterruptStatus bit 0).
    UsedBuffer,
    /// The device configuration (or its status: DEVICE_NEEDS_RESET) changed (bit 1).
    ConfigChange,
}

impl InterruptReason {
    /// The InterruptStatus bit this reason sets.
    pub const fn status_bit(self) -> u32 {
        match self {
            InterruptReason::UsedBuffer => 1,
            InterruptReason::ConfigChange => 2,
        }
    }
}

/// How a device's interrupt reaches the guest: the VM implements it with an irqfd
/// `EventFd` or `KVM_IRQ_LINE`; tests count calls.
pub trait Interrupt: Send + Sync {
    /// Raise the device's interrupt. The InterruptStatus bit is already set when this is
    /// called, so a level-triggered line may simply be asserted.
    fn trigger(&self, reason: InterruptReason);

    /// The driver acknowledged interrupts; `remaining` is InterruptStatus afterwards. A
    /// level-triggered implementation deasserts its line when `remaining` is 0; an
    /// edge-triggered one (irqfd) has nothing to do.
    fn acknowledged(&self, remaining: u32) {
        let _ = remaining;
    }
}

/// An [`Interrupt`] that signals an `EventFd`: register it with `KVM_IRQFD` (edge).
#[derive(Debug)]
pub struct EventFdInterrupt {
    event: EventFd,
}

impl EventFdInterrupt {
    pub fn new() -> std::io::Result<EventFdInterrupt> {
        Ok(EventFdInterrupt {
            event: EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK)?,
        })
    }

    /// The eventfd to hand to `KVM_IRQFD`.
    pub fn eventfd(&self) -> &EventFd {
        &self.event
    }
}

impl Interrupt for EventFdInterrupt {
    fn trigger(&self, _reason: InterruptReason) {
        // EAGAIN only when the counter is saturated: an interrupt is pending anyway.
        let _ = self.event.write(1);
    }
}

/// The interrupt side shared by a transport and its device: the InterruptStatus
/// register, the DEVICE_NEEDS_RESET flag, and the line to the guest.
///
/// The device's worker thread uses it without taking the transport's lock.
pub struct VirtioInterrupt {
    status: AtomicU32,
    needs_reset: AtomicBool,
    line: Arc<dyn Interrupt>,
}

impl std::fmt::Debug for VirtioInterrupt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioInterrupt")
            .field("status", &self.status())
            .field("needs_reset", &self.needs_reset())
            .finish()
    }
}

impl VirtioInterrupt {
    pub fn new(line: Arc<dyn Interrupt>) -> VirtioInterrupt {
        VirtioInterrupt {
            status: AtomicU32::new(0),
            needs_reset: AtomicBool::new(false),
            line,
        }
    }

    /// Sets the InterruptStatus bit of `reason` and raises the interrupt.
    pub fn signal(&self, reason: InterruptReason) {
        self.status.fetch_or(reason.status_bit(), Ordering::SeqCst);
        self.line.trigger(reason);
    }

    /// The device met a guest error it cannot recover from: DEVICE_NEEDS_RESET, and a
    /// configuration-change interrupt so that the driver looks (virtio 1.x §2.1.2).
    /// Returns false if the flag was already set (nothing new to signal).
    pub fn signal_needs_reset(&self) -> bool {
        if self.needs_reset.swap(true, Ordering::SeqCst) {
            return false;
        }
        self.signal(InterruptReason::ConfigChange);
        true
    }

    /// The InterruptStatus register.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// The DEVICE_NEEDS_RESET flag.
    pub fn needs_reset(&self) -> bool {
        self.needs_reset.load(Ordering::SeqCst)
    }

    /// InterruptACK: clears `bits`.
    pub(crate) fn acknowledge(&self, bits: u32) {
        let remaining = self.status.fetch_and(!bits, Ordering::SeqCst) & !bits;
        self.line.acknowledged(remaining);
    }

    /// A saved InterruptStatus and NEEDS_RESET flag; a pending interrupt is raised again
    /// (the interrupt controller's state came with it, so this only re-asserts it).
    pub(crate) fn restore(&self, status: u32, needs_reset: bool) {
        self.needs_reset.store(needs_reset, Ordering::SeqCst);
        self.status.store(status & 0b11, Ordering::SeqCst);
        if status & 0b11 != 0 {
            self.line.trigger(InterruptReason::UsedBuffer);
        }
    }

    /// Device reset: no pending interrupt, no NEEDS_RESET.
    pub(crate) fn reset(&self) {
        self.needs_reset.store(false, Ordering::SeqCst);
        let had = self.status.swap(0, Ordering::SeqCst);
        if had != 0 {
            self.line.acknowledged(0);
        }
    }
}

/// Why a device could not start when the driver set DRIVER_OK. The transport answers
/// with DEVICE_NEEDS_RESET; the error is kept for the VMM to report.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    #[error("the device expects {expected} queues, the transport has {got}")]
    QueueCount { expected: usize, got: usize },
    #[error("queue {index} is not ready or does not fit in guest memory")]
    InvalidQueue { index: usize },
    #[error("cannot set the TAP offloads the guest negotiated ({offloads}): {source}")]
    TapOffload {
        offloads: crate::host::TapOffloads,
        source: crate::host::TapError,
    },
    #[error("cannot start the device's event loop: {0}")]
    EventLoop(#[from] std::io::Error),
}

/// A virtio device as the transport sees it (virtio 1.x §2 "Basic Facilities").
pub trait VirtioDevice: Send {
    /// The virtio device ID (1 for a network card).
    fn device_id(&self) -> u32;

    /// The feature word the device offers, exactly; VERSION_1 included.
    fn offered_features(&self) -> u64;

    /// Whether the driver's choice (already known to be a subset of the offer with
    /// VERSION_1) is consistent: the device's "feature bit requirements".
    fn accepts_features(&self, driver_features: u64) -> bool {
        let _ = driver_features;
        true
    }

    /// The maximum size of each virtqueue, in queue order.
    fn queue_max_sizes(&self) -> &[u16];

    /// One `EventFd` per queue, signalled on every notification of that queue (by the
    /// transport's QueueNotify register or by an ioeventfd the VM registers).
    fn queue_events(&self) -> &[EventFd];

    /// Reads the device configuration space at `offset`; bytes beyond it read as 0.
    fn read_config(&self, offset: u64, data: &mut [u8]);

    /// The driver writes the configuration space; returns false if the write is refused
    /// (the transport counts it).
    fn write_config(&mut self, offset: u64, data: &[u8]) -> bool {
        let _ = (offset, data);
        false
    }

    /// The driver set DRIVER_OK: start serving `queues` (validated, in queue order) with
    /// the negotiated `features`.
    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        features: u64,
        queues: Vec<Queue>,
        interrupt: Arc<VirtioInterrupt>,
    ) -> Result<(), ActivateError>;

    /// Stop serving the queues and forget all negotiated state; the device must be as
    /// if freshly constructed afterwards (its queue `EventFd`s stay the same).
    fn reset(&mut self);

    /// Stop serving the queues but keep them: returns where each stood, for
    /// [`VirtioDevice::activate`] to continue from. `None` when the device is not
    /// running (nothing to keep).
    fn pause(&mut self) -> Option<Vec<virtio_queue::QueueState>> {
        None
    }

    /// Whether the device is serving its queues now.
    fn is_running(&self) -> bool {
        false
    }
}
