//! The virtio-mmio transport, version 2 (virtio 1.x §4.2.2), as a [`BusDevice`].
//!
//! The transport owns everything the driver negotiates: device status, the feature
//! words, each queue's size and ring addresses. When the driver sets DRIVER_OK it turns
//! that into validated [`Queue`]s and hands them to the [`VirtioDevice`]. It offers
//! exactly the feature word the device was built with: a driver that accepts anything
//! else, or does not accept VERSION_1, does not get FEATURES_OK.
//!
//! Guest accesses that make no sense (unknown offsets, widths other than 32 bits on the
//! register block, writes in the wrong state, values out of range) change nothing and are
//! counted in [`TransportStats::ignored_accesses`]. Nothing a guest writes panics.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use virtio_queue::{Queue, QueueState, QueueT};
use vm_memory::{GuestAddress, GuestMemoryMmap};

use super::features::{self, VERSION_1};
use super::status::*;
use super::{ActivateError, Interrupt, VirtioDevice, VirtioInterrupt};
use crate::devices::bus::BusDevice;

/// Size of one virtio-mmio slot: 0x100 of registers, then the device configuration.
pub const MMIO_SIZE: u64 = 0x200;

/// Offset of QueueNotify, where the VM may register one ioeventfd per queue
/// (4 bytes, datamatch = queue index) in place of the trapped write.
pub const QUEUE_NOTIFY_OFFSET: u64 = reg::QUEUE_NOTIFY;

/// "virt" in little-endian ASCII.
pub const MAGIC_VALUE: u32 = 0x7472_6976;

/// The virtio-mmio version: 2 is the virtio 1.x (non-legacy) register layout.
pub const MMIO_VERSION: u32 = 2;

/// The VendorID register: "QEMU", the value QEMU's virtio-mmio answers, so that the
/// lowered QEMU command line gives the guest the same register block.
pub const VENDOR_ID: u32 = 0x554d_4551;

/// Register offsets (virtio 1.x §4.2.2, "MMIO Device Register Layout"), from Linux's
/// `uapi/linux/virtio_mmio.h`; shared with the self-test guest's driver and the tests.
pub mod reg {
    use virtio_bindings::virtio_mmio as m;

    pub const MAGIC_VALUE: u64 = m::VIRTIO_MMIO_MAGIC_VALUE as u64;
    pub const VERSION: u64 = m::VIRTIO_MMIO_VERSION as u64;
    pub const DEVICE_ID: u64 = m::VIRTIO_MMIO_DEVICE_ID as u64;
    pub const VENDOR_ID: u64 = m::VIRTIO_MMIO_VENDOR_ID as u64;
    pub const DEVICE_FEATURES: u64 = m::VIRTIO_MMIO_DEVICE_FEATURES as u64;
    pub const DEVICE_FEATURES_SEL: u64 = m::VIRTIO_MMIO_DEVICE_FEATURES_SEL as u64;
    pub const DRIVER_FEATURES: u64 = m::VIRTIO_MMIO_DRIVER_FEATURES as u64;
    pub const DRIVER_FEATURES_SEL: u64 = m::VIRTIO_MMIO_DRIVER_FEATURES_SEL as u64;
    pub const QUEUE_SEL: u64 = m::VIRTIO_MMIO_QUEUE_SEL as u64;
    pub const QUEUE_NUM_MAX: u64 = m::VIRTIO_MMIO_QUEUE_NUM_MAX as u64;
    pub const QUEUE_NUM: u64 = m::VIRTIO_MMIO_QUEUE_NUM as u64;
    pub const QUEUE_READY: u64 = m::VIRTIO_MMIO_QUEUE_READY as u64;
    pub const QUEUE_NOTIFY: u64 = m::VIRTIO_MMIO_QUEUE_NOTIFY as u64;
    pub const INTERRUPT_STATUS: u64 = m::VIRTIO_MMIO_INTERRUPT_STATUS as u64;
    pub const INTERRUPT_ACK: u64 = m::VIRTIO_MMIO_INTERRUPT_ACK as u64;
    pub const STATUS: u64 = m::VIRTIO_MMIO_STATUS as u64;
    pub const QUEUE_DESC_LOW: u64 = m::VIRTIO_MMIO_QUEUE_DESC_LOW as u64;
    pub const QUEUE_DESC_HIGH: u64 = m::VIRTIO_MMIO_QUEUE_DESC_HIGH as u64;
    pub const QUEUE_DRIVER_LOW: u64 = m::VIRTIO_MMIO_QUEUE_AVAIL_LOW as u64;
    pub const QUEUE_DRIVER_HIGH: u64 = m::VIRTIO_MMIO_QUEUE_AVAIL_HIGH as u64;
    pub const QUEUE_DEVICE_LOW: u64 = m::VIRTIO_MMIO_QUEUE_USED_LOW as u64;
    pub const QUEUE_DEVICE_HIGH: u64 = m::VIRTIO_MMIO_QUEUE_USED_HIGH as u64;
    pub const CONFIG_GENERATION: u64 = m::VIRTIO_MMIO_CONFIG_GENERATION as u64;
    pub const CONFIG: u64 = m::VIRTIO_MMIO_CONFIG as u64;
}

/// Status bits a driver may set (DEVICE_NEEDS_RESET is the device's).
const DRIVER_STATUS_BITS: u32 = ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK | FAILED;

/// What the transport did with the guest's accesses, for tests and `vmc run`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Accesses that changed nothing: unknown offset, wrong width, wrong state, bad value.
    pub ignored_accesses: u64,
    /// FEATURES_OK requests refused (features outside the offer, no VERSION_1, or
    /// inconsistent with the device's feature requirements).
    pub features_rejected: u64,
    /// DRIVER_OK transitions that started the device.
    pub activations: u64,
    /// DRIVER_OK transitions the device could not honour (answered with NEEDS_RESET).
    pub activation_failures: u64,
    /// Device resets (Status written with 0).
    pub resets: u64,
}

/// One queue's registers as the driver set them.
#[derive(Debug, Clone, Copy)]
struct QueueRegs {
    max_size: u16,
    size: u16,
    ready: bool,
    desc: u64,
    driver: u64,
    device: u64,
}

impl QueueRegs {
    fn new(max_size: u16) -> QueueRegs {
        QueueRegs {
            max_size,
            size: max_size,
            ready: false,
            desc: 0,
            driver: 0,
            device: 0,
        }
    }

    /// The [`Queue`] these registers describe, checked against guest memory.
    fn build(&self, mem: &GuestMemoryMmap, event_idx: bool) -> Option<Queue> {
        let mut queue = Queue::new(self.max_size).ok()?;
        queue.try_set_size(self.size).ok()?;
        queue.try_set_desc_table_address(GuestAddress(self.desc)).ok()?;
        queue.try_set_avail_ring_address(GuestAddress(self.driver)).ok()?;
        queue.try_set_used_ring_address(GuestAddress(self.device)).ok()?;
        queue.set_event_idx(event_idx);
        queue.set_ready(self.ready);
        queue.is_valid(mem).then_some(queue)
    }
}

/// A queue's registers and, while the device runs, how far it got in the rings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSnapshot {
    pub size: u16,
    pub ready: bool,
    pub desc: u64,
    pub driver: u64,
    pub device: u64,
    /// Next available-ring entry the device reads, next used-ring entry it writes:
    /// `None` while the device is not running.
    pub progress: Option<(u16, u16)>,
}

/// The transport's state with its device's: everything the driver negotiated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransportSnapshot {
    /// The feature word the device offered (checked against the restoring device's).
    pub offered_features: u64,
    pub status: u32,
    pub driver_features: u64,
    pub device_features_sel: u32,
    pub driver_features_sel: u32,
    pub queue_sel: u32,
    pub interrupt_status: u32,
    pub needs_reset: bool,
    pub queues: Vec<QueueSnapshot>,
}

/// Error building a transport.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TransportError {
    #[error("queue {index} has maximum size {size}; virtio needs a power of two in 1..=32768")]
    QueueSize { index: usize, size: u16 },
    #[error("the device offers {offered:#x}, without VERSION_1 (bit 32): vmc devices are virtio 1.x only")]
    NoVersion1 { offered: u64 },
}

/// A virtio device behind a virtio-mmio version 2 register block.
pub struct MmioTransport<D: VirtioDevice> {
    device: D,
    mem: GuestMemoryMmap,
    interrupt: Arc<VirtioInterrupt>,
    queues: Vec<QueueRegs>,
    queue_sel: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    status: u32,
    stats: TransportStats,
    last_error: Option<String>,
    /// While paused: where each queue of the running device stood.
    paused: Option<Vec<QueueState>>,
}

impl<D: VirtioDevice> std::fmt::Debug for MmioTransport<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmioTransport")
            .field("device_id", &self.device.device_id())
            .field("status", &self.status)
            .field("driver_features", &self.driver_features)
            .field("stats", &self.stats)
            .finish()
    }
}

impl<D: VirtioDevice> MmioTransport<D> {
    /// Puts `device` behind a register block; `line` is how its interrupt reaches the
    /// guest, `mem` the guest memory its queues live in.
    pub fn new(device: D, mem: GuestMemoryMmap, line: Arc<dyn Interrupt>) -> Result<MmioTransport<D>, TransportError> {
        let offered = device.offered_features();
        if !features::has(offered, VERSION_1) {
            return Err(TransportError::NoVersion1 { offered });
        }
        let mut queues = Vec::new();
        for (index, &size) in device.queue_max_sizes().iter().enumerate() {
            if Queue::new(size).is_err() {
                return Err(TransportError::QueueSize { index, size });
            }
            queues.push(QueueRegs::new(size));
        }
        Ok(MmioTransport {
            device,
            mem,
            interrupt: Arc::new(VirtioInterrupt::new(line)),
            queues,
            queue_sel: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            status: 0,
            stats: TransportStats::default(),
            last_error: None,
            paused: None,
        })
    }

    /// Stops the device's work (its worker thread) and keeps where its queues stood;
    /// nothing happens for a device that is not running.
    pub fn pause(&mut self) {
        if self.paused.is_none() {
            self.paused = self.device.pause();
        }
    }

    /// Restarts a paused device from where its queues stood.
    pub fn resume(&mut self) -> Result<(), String> {
        let Some(states) = self.paused.take() else {
            return Ok(());
        };
        let mut queues = Vec::with_capacity(states.len());
        for (index, state) in states.into_iter().enumerate() {
            let queue = Queue::try_from(state)
                .ok()
                .filter(|q| q.is_valid(&self.mem))
                .ok_or_else(|| format!("queue {index} does not fit in guest memory"))?;
            queues.push(queue);
        }
        self.device
            .activate(self.mem.clone(), self.driver_features, queues, self.interrupt.clone())
            .map_err(|e| {
                self.interrupt.signal_needs_reset();
                e.to_string()
            })
    }

    /// The transport's and device's state; the device must be paused (or not running).
    pub fn snapshot(&self) -> Result<TransportSnapshot, String> {
        if self.device.is_running() {
            return Err("the device is running: pause it first".into());
        }
        let progress = |i: usize| {
            self.paused
                .as_ref()
                .and_then(|p| p.get(i))
                .map(|q| (q.next_avail, q.next_used))
        };
        Ok(TransportSnapshot {
            offered_features: self.device.offered_features(),
            status: self.status,
            driver_features: self.driver_features,
            device_features_sel: self.device_features_sel,
            driver_features_sel: self.driver_features_sel,
            queue_sel: self.queue_sel,
            interrupt_status: self.interrupt.status(),
            needs_reset: self.interrupt.needs_reset(),
            queues: self
                .queues
                .iter()
                .enumerate()
                .map(|(i, q)| QueueSnapshot {
                    size: q.size,
                    ready: q.ready,
                    desc: q.desc,
                    driver: q.driver,
                    device: q.device,
                    progress: progress(i),
                })
                .collect(),
        })
    }

    /// Puts a transport that the guest has not used yet in a saved state, checked as
    /// the registers are when a driver writes them; a running device is left paused,
    /// for [`MmioTransport::resume`] to start. Guest memory must already be restored.
    pub fn restore(&mut self, s: &TransportSnapshot) -> Result<(), String> {
        let offered = self.device.offered_features();
        if s.offered_features != offered {
            return Err(format!(
                "it offered features {:#x}, this device offers {offered:#x}",
                s.offered_features
            ));
        }
        if s.queues.len() != self.queues.len() {
            return Err(format!(
                "{} queues, the device has {}",
                s.queues.len(),
                self.queues.len()
            ));
        }
        let status = s.status;
        if status & !DRIVER_STATUS_BITS != 0 {
            return Err(format!("status {status:#x} has bits no driver sets"));
        }
        let negotiated = status & FEATURES_OK != 0;
        if negotiated
            && (s.driver_features & !offered != 0
                || !features::has(s.driver_features, VERSION_1)
                || !self.device.accepts_features(s.driver_features))
        {
            return Err(format!(
                "negotiated features {:#x} are not acceptable for an offer of {offered:#x}",
                s.driver_features
            ));
        }
        let running = status & DRIVER_OK != 0 && !s.needs_reset;
        let event_idx = features::has(s.driver_features, features::RING_EVENT_IDX);
        let mut regs = Vec::with_capacity(s.queues.len());
        let mut paused = Vec::new();
        for (index, (q, max)) in s.queues.iter().zip(&self.queues).enumerate() {
            if q.size == 0 || !q.size.is_power_of_two() || q.size > max.max_size {
                return Err(format!(
                    "queue {index} has size {}, at most {} possible",
                    q.size, max.max_size
                ));
            }
            let r = QueueRegs {
                max_size: max.max_size,
                size: q.size,
                ready: q.ready,
                desc: q.desc,
                driver: q.driver,
                device: q.device,
            };
            if running {
                let (next_avail, next_used) = q
                    .progress
                    .ok_or_else(|| format!("queue {index} of a running device has no ring positions"))?;
                let mut queue = r
                    .build(&self.mem, event_idx)
                    .ok_or_else(|| format!("queue {index} is not ready or does not fit in guest memory"))?;
                queue.set_next_avail(next_avail);
                queue.set_next_used(next_used);
                paused.push(queue.state());
            }
            regs.push(r);
        }
        self.device.reset();
        self.queues = regs;
        self.queue_sel = s.queue_sel;
        self.device_features_sel = s.device_features_sel;
        self.driver_features_sel = s.driver_features_sel;
        self.driver_features = s.driver_features;
        self.status = status;
        self.interrupt.restore(s.interrupt_status, s.needs_reset);
        self.paused = running.then_some(paused);
        Ok(())
    }

    /// The device behind the transport.
    pub fn device(&self) -> &D {
        &self.device
    }

    /// What the transport did with the guest's accesses so far.
    pub fn stats(&self) -> TransportStats {
        self.stats
    }

    /// The Status register as the driver reads it (DEVICE_NEEDS_RESET included).
    pub fn status(&self) -> u32 {
        let needs_reset = if self.interrupt.needs_reset() {
            DEVICE_NEEDS_RESET
        } else {
            0
        };
        self.status | needs_reset
    }

    /// The features the driver accepted (meaningful once FEATURES_OK is set).
    pub fn driver_features(&self) -> u64 {
        self.driver_features
    }

    /// Why the last DRIVER_OK failed, if it did.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// The interrupt state shared with the device.
    pub fn interrupt(&self) -> &Arc<VirtioInterrupt> {
        &self.interrupt
    }

    /// `(queue index, EventFd)` for each queue: register each as an ioeventfd at
    /// `base + QUEUE_NOTIFY_OFFSET`, 4 bytes, datamatch = the index.
    pub fn queue_notify_events(&self) -> impl Iterator<Item = (u32, &vmm_sys_util::eventfd::EventFd)> {
        self.device
            .queue_events()
            .iter()
            .enumerate()
            .map(|(index, event)| (index as u32, event))
    }

    fn ignore(&mut self) {
        self.stats.ignored_accesses += 1;
    }

    fn selected_queue(&self) -> Option<&QueueRegs> {
        self.queues.get(self.queue_sel as usize)
    }

    /// The driver may set up the selected queue: after FEATURES_OK, before DRIVER_OK,
    /// while the queue is not ready (virtio 1.x §4.2.3.2).
    fn queue_setup_allowed(&self) -> bool {
        self.status & FEATURES_OK != 0
            && self.status & DRIVER_OK == 0
            && self.selected_queue().is_some_and(|queue| !queue.ready)
    }

    fn read_register(&mut self, offset: u64) -> Option<u32> {
        let value = match offset {
            reg::MAGIC_VALUE => MAGIC_VALUE,
            reg::VERSION => MMIO_VERSION,
            reg::DEVICE_ID => self.device.device_id(),
            reg::VENDOR_ID => VENDOR_ID,
            reg::DEVICE_FEATURES => {
                let offered = self.device.offered_features();
                match self.device_features_sel {
                    0 => offered as u32,
                    1 => (offered >> 32) as u32,
                    _ => 0,
                }
            }
            reg::QUEUE_NUM_MAX => self.selected_queue().map_or(0, |q| q.max_size.into()),
            reg::QUEUE_READY => self.selected_queue().map_or(0, |q| q.ready.into()),
            reg::INTERRUPT_STATUS => self.interrupt.status(),
            reg::STATUS => self.status(),
            reg::QUEUE_DESC_LOW => self.selected_queue().map_or(0, |q| q.desc as u32),
            reg::QUEUE_DESC_HIGH => self.selected_queue().map_or(0, |q| (q.desc >> 32) as u32),
            reg::QUEUE_DRIVER_LOW => self.selected_queue().map_or(0, |q| q.driver as u32),
            reg::QUEUE_DRIVER_HIGH => self.selected_queue().map_or(0, |q| (q.driver >> 32) as u32),
            reg::QUEUE_DEVICE_LOW => self.selected_queue().map_or(0, |q| q.device as u32),
            reg::QUEUE_DEVICE_HIGH => self.selected_queue().map_or(0, |q| (q.device >> 32) as u32),
            // The configuration never changes under the driver: one generation.
            reg::CONFIG_GENERATION => 0,
            _ => return None,
        };
        Some(value)
    }

    fn write_register(&mut self, offset: u64, value: u32) -> bool {
        match offset {
            reg::DEVICE_FEATURES_SEL => self.device_features_sel = value,
            reg::DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            reg::DRIVER_FEATURES => {
                // Only while negotiating: DRIVER set, FEATURES_OK not yet.
                if self.status & DRIVER == 0 || self.status & FEATURES_OK != 0 {
                    return false;
                }
                match self.driver_features_sel {
                    0 => self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(value),
                    1 => self.driver_features = (self.driver_features & 0xffff_ffff) | (u64::from(value) << 32),
                    // No feature bits beyond 63 exist; a driver accepting one asks for
                    // something not offered.
                    _ => return value == 0,
                }
            }
            reg::QUEUE_SEL => self.queue_sel = value,
            reg::QUEUE_NUM => {
                let allowed = self.queue_setup_allowed();
                let Some(queue) = self.queues.get_mut(self.queue_sel as usize) else {
                    return false;
                };
                let Ok(size) = u16::try_from(value) else {
                    return false;
                };
                if !allowed || size == 0 || !size.is_power_of_two() || size > queue.max_size {
                    return false;
                }
                queue.size = size;
            }
            reg::QUEUE_READY => {
                let in_setup = self.status & FEATURES_OK != 0 && self.status & DRIVER_OK == 0;
                let Some(queue) = self.queues.get_mut(self.queue_sel as usize) else {
                    return false;
                };
                match value {
                    0 | 1 if in_setup => queue.ready = value == 1,
                    _ => return false,
                }
            }
            reg::QUEUE_NOTIFY => {
                let Some(event) = self.device.queue_events().get(value as usize) else {
                    return false;
                };
                // Same path as an ioeventfd: the device's event loop picks it up.
                if event.write(1).is_err() {
                    return false;
                }
            }
            reg::INTERRUPT_ACK => self.interrupt.acknowledge(value),
            reg::STATUS => return self.write_status(value),
            reg::QUEUE_DESC_LOW
            | reg::QUEUE_DESC_HIGH
            | reg::QUEUE_DRIVER_LOW
            | reg::QUEUE_DRIVER_HIGH
            | reg::QUEUE_DEVICE_LOW
            | reg::QUEUE_DEVICE_HIGH => {
                if !self.queue_setup_allowed() {
                    return false;
                }
                let Some(queue) = self.queues.get_mut(self.queue_sel as usize) else {
                    return false;
                };
                let field = match offset {
                    reg::QUEUE_DESC_LOW | reg::QUEUE_DESC_HIGH => &mut queue.desc,
                    reg::QUEUE_DRIVER_LOW | reg::QUEUE_DRIVER_HIGH => &mut queue.driver,
                    _ => &mut queue.device,
                };
                *field = if offset & 4 == 0 {
                    (*field & !0xffff_ffff) | u64::from(value)
                } else {
                    (*field & 0xffff_ffff) | (u64::from(value) << 32)
                };
            }
            _ => return false,
        }
        true
    }

    /// The device status state machine (virtio 1.x §3.1.1). Returns false when the write
    /// is ignored.
    fn write_status(&mut self, value: u32) -> bool {
        if value == 0 {
            self.reset();
            return true;
        }
        // A driver sets bits with read-modify-write, so DEVICE_NEEDS_RESET comes back
        // with the rest: it is the device's bit, not the driver's.
        let value = value & !DEVICE_NEEDS_RESET;
        if value & !DRIVER_STATUS_BITS != 0 {
            return false;
        }
        // Bits are only ever added, in order, until a reset.
        if self.status & !value != 0 {
            return false;
        }
        let (mut value, added) = (value, value & !self.status);
        let have = |bit| value & bit != 0;
        if (have(DRIVER) && !have(ACKNOWLEDGE))
            || (have(FEATURES_OK) && !have(DRIVER))
            // DRIVER_OK only after the driver saw FEATURES_OK stick.
            || (added & DRIVER_OK != 0 && self.status & FEATURES_OK == 0)
        {
            return false;
        }
        if added & FEATURES_OK != 0 && !self.features_acceptable() {
            // The spec's answer: FEATURES_OK does not stick, the driver sees it unset.
            self.stats.features_rejected += 1;
            value &= !FEATURES_OK;
        }
        self.status = value;
        if added & DRIVER_OK != 0 {
            self.activate();
        }
        true
    }

    fn features_acceptable(&self) -> bool {
        let offered = self.device.offered_features();
        self.driver_features & !offered == 0
            && features::has(self.driver_features, VERSION_1)
            && self.device.accepts_features(self.driver_features)
    }

    fn activate(&mut self) {
        let event_idx = features::has(self.driver_features, features::RING_EVENT_IDX);
        let mut queues = Vec::with_capacity(self.queues.len());
        let mut result = Ok(());
        for (index, regs) in self.queues.iter().enumerate() {
            match regs.build(&self.mem, event_idx) {
                Some(queue) => queues.push(queue),
                None => {
                    result = Err(ActivateError::InvalidQueue { index });
                    break;
                }
            }
        }
        let result = result.and_then(|()| {
            self.device
                .activate(self.mem.clone(), self.driver_features, queues, self.interrupt.clone())
        });
        match result {
            Ok(()) => {
                self.stats.activations += 1;
                self.last_error = None;
            }
            Err(error) => {
                self.stats.activation_failures += 1;
                tracing::warn!(device = self.device.device_id(), %error, "virtio-mmio: DRIVER_OK failed; DEVICE_NEEDS_RESET");
                self.last_error = Some(error.to_string());
                self.interrupt.signal_needs_reset();
            }
        }
    }

    /// Back to the state after construction (virtio 1.x §2.4 "Device Reset").
    fn reset(&mut self) {
        tracing::debug!(
            device = self.device.device_id(),
            "virtio-mmio: the driver reset the device"
        );
        self.paused = None;
        self.device.reset();
        for queue in &mut self.queues {
            *queue = QueueRegs::new(queue.max_size);
        }
        self.queue_sel = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.status = 0;
        self.interrupt.reset();
        self.stats.resets += 1;
    }
}

impl<D: VirtioDevice> BusDevice for MmioTransport<D> {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if offset >= reg::CONFIG {
            if matches!(data.len(), 1 | 2 | 4) {
                self.device.read_config(offset - reg::CONFIG, data);
            } else {
                self.ignore();
            }
            return;
        }
        if data.len() != 4 || !offset.is_multiple_of(4) {
            self.ignore();
            return;
        }
        match self.read_register(offset) {
            Some(value) => data.copy_from_slice(&value.to_le_bytes()),
            None => self.ignore(),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= reg::CONFIG {
            let accepted = matches!(data.len(), 1 | 2 | 4) && self.device.write_config(offset - reg::CONFIG, data);
            if !accepted {
                self.ignore();
            }
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            self.ignore();
            return;
        };
        if !offset.is_multiple_of(4) || !self.write_register(offset, u32::from_le_bytes(bytes)) {
            self.ignore();
        }
    }
}

impl<D: VirtioDevice> Drop for MmioTransport<D> {
    fn drop(&mut self) {
        // Stops the device's worker, if any, before the guest memory goes away.
        self.device.reset();
    }
}
