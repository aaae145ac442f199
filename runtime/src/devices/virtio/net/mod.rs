//! The virtio-net device (virtio 1.x §5.1) over a TAP: one receive queue, one transmit
//! queue, no control queue.
//!
//! - This file: [`NetConfig`] (plain values; the VM fills them from the ABI), the
//!   feature bits the device can honour and their requirements, the configuration space,
//!   and where USO is turned on at the TAP ([`tap_offloads_for`]). Which bits are
//!   implemented, what each requires and which TAP offloads it needs are not restated
//!   here: they are read from the compiler's schema (`vmc_compiler::schema::VIRTIO_NET`),
//!   the table the ABI documents are compiled from.
//! - [`header`]: the 12-byte virtio-net header and the checks a transmitted one passes.
//! - `worker`: the event loop thread that moves frames between the queues and the TAP.
//! - [`counters`]: what the device did, for tests and `vmc run`.
//!
//! The device offers exactly `NetConfig::features`; a word with a bit this device cannot
//! honour, or one that breaks a feature requirement, is refused at construction. When the
//! driver sets DRIVER_OK the TAP's offloads are set from what the guest *negotiated*.
//!
//! A TAP deleted under the running device is survived: the device stops passing frames
//! and keeps serving the guest's queues, the VM goes on, and the VMM is told once through
//! [`Net::set_notice`] (see the worker's module docs for what the kernel does then).

use std::sync::Arc;
use std::thread::JoinHandle;

use virtio_queue::{Queue, QueueState};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use vmc_compiler::schema::{self, Property, Support, VIRTIO_NET};

use super::features::{bit, has, VERSION_1};
use super::{ActivateError, VirtioDevice, VirtioInterrupt};
use crate::dirty::DirtyBitmap;
use crate::host::{Tap, TapOffloads};

pub mod counters;
pub mod header;
mod worker;

pub use counters::{NetCounters, NetStats};

/// How the device tells the VMM, in one line, about a fault it survives: see
/// [`Net::set_notice`].
pub type Notice = Arc<dyn Fn(&str) + Send + Sync>;

/// The virtio device ID of a network card.
pub const DEVICE_ID: u32 = 1;

/// Queue indices.
pub const RX_QUEUE: usize = 0;
pub const TX_QUEUE: usize = 1;

/// virtio-net feature bits (virtio 1.x §5.1.3), from Linux's `uapi/linux/virtio_net.h`.
pub mod feature {
    pub use virtio_bindings::virtio_net::{
        VIRTIO_NET_F_CSUM as CSUM, VIRTIO_NET_F_GUEST_CSUM as GUEST_CSUM, VIRTIO_NET_F_GUEST_ECN as GUEST_ECN,
        VIRTIO_NET_F_GUEST_TSO4 as GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6 as GUEST_TSO6,
        VIRTIO_NET_F_GUEST_UFO as GUEST_UFO, VIRTIO_NET_F_GUEST_USO4 as GUEST_USO4,
        VIRTIO_NET_F_GUEST_USO6 as GUEST_USO6, VIRTIO_NET_F_HOST_ECN as HOST_ECN, VIRTIO_NET_F_HOST_TSO4 as HOST_TSO4,
        VIRTIO_NET_F_HOST_TSO6 as HOST_TSO6, VIRTIO_NET_F_HOST_UFO as HOST_UFO, VIRTIO_NET_F_HOST_USO as HOST_USO,
        VIRTIO_NET_F_MAC as MAC, VIRTIO_NET_F_MRG_RXBUF as MRG_RXBUF, VIRTIO_NET_F_MTU as MTU,
        VIRTIO_NET_F_STATUS as STATUS,
    };
}

use feature::*;

/// The schema rows that offer a feature bit, with their bit.
fn feature_rows() -> impl Iterator<Item = (u32, &'static Property)> {
    VIRTIO_NET.iter().filter_map(|p| Some((p.feature_bit?, p)))
}

/// Every feature bit this device implements, as a word: the bits of the schema's rows
/// marked [`Support::Implemented`] (RING_INDIRECT_DESC and RING_EVENT_IDX among them),
/// and VERSION_1. Anything else is refused at construction.
pub fn supported_features() -> u64 {
    feature_rows()
        .filter(|(_, p)| p.support == Support::Implemented)
        .fold(bit(VERSION_1), |word, (b, _)| word | bit(b))
}

/// Feature requirements (virtio 1.x §5.1.3.1), the schema's `requires` with names
/// resolved to bits: each `(feature, needs)` says the feature needs one of `needs`.
pub fn requirements() -> impl Iterator<Item = (u32, Vec<u32>)> {
    feature_rows().flat_map(|(feature, p)| {
        p.requires.iter().map(move |any_of| {
            let needs = any_of
                .iter()
                .filter_map(|name| schema::property(name).and_then(|p| p.feature_bit))
                .collect();
            (feature, needs)
        })
    })
}

/// Every feature in `word` whose requirement is not met, with what it needs.
pub fn unmet_requirements(word: u64) -> impl Iterator<Item = (u32, Vec<u32>)> {
    requirements().filter(move |(feature, needs)| has(word, *feature) && !needs.iter().any(|n| has(word, *n)))
}

/// The first feature in `word` whose requirement is not met, with what it needs.
pub fn unmet_requirement(word: u64) -> Option<(u32, Vec<u32>)> {
    unmet_requirements(word).next()
}

/// The TAP offloads for what the guest negotiated: what it may receive.
///
/// Each guest receive feature the guest took asks for the TAP offloads its schema row
/// lists (see `schema::is_guest_receive_offload`); the kernel's rules then decide what
/// may be set. Every offload needs GUEST_CSUM (a TAP offload without `TUN_F_CSUM` is
/// refused by the kernel). USO is turned on only when the guest took both GUEST_USO4 and
/// GUEST_USO6: the kernel accepts `TUN_F_USO4`/`TUN_F_USO6` only as a pair, and turning
/// on one the guest did not take would hand it frames it cannot parse. A guest with just
/// one of them therefore receives UDP GSO sends already segmented, which the spec allows.
pub fn tap_offloads_for(negotiated: u64) -> TapOffloads {
    let wanted: TapOffloads = feature_rows()
        .filter(|(b, p)| has(negotiated, *b) && schema::is_guest_receive_offload(p))
        .flat_map(|(_, p)| p.tap_offloads.iter().copied())
        .collect();
    // Kernel (drivers/net/tun.c, set_offload): no offload without TUN_F_CSUM.
    if !wanted.contains(TapOffloads::CSUM) {
        return TapOffloads::NONE;
    }
    let mut offloads = wanted;
    // Kernel: TUN_F_TSO_ECN only counts together with TUN_F_TSO4 or TUN_F_TSO6.
    if !offloads.intersects(TapOffloads::TSO4 | TapOffloads::TSO6) {
        offloads = offloads.difference(TapOffloads::TSO_ECN);
    }
    // Kernel: TUN_F_USO4 and TUN_F_USO6 only as a pair, so both kinds of frame or none.
    if !(has(negotiated, GUEST_USO4) && has(negotiated, GUEST_USO6)) {
        offloads = offloads.difference(TapOffloads::USO4 | TapOffloads::USO6);
    }
    offloads
}

/// The values a virtio-net device is built from; the VM takes them from the ABI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetConfig {
    /// The feature word offered, exactly (VERSION_1 included).
    pub features: u64,
    pub mac: [u8; 6],
    /// The MTU in the configuration space; 0 when MTU is not offered.
    pub mtu: u16,
    pub rx_queue_size: u16,
    pub tx_queue_size: u16,
}

/// A [`NetConfig`] this device cannot honour.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("virtio-net feature bits {bits:?} are not implemented by vmc's device")]
    UnsupportedFeatures { bits: Vec<u32> },
    #[error("virtio-net feature bit {feature} needs one of {needs:?}, which are not offered")]
    UnmetRequirement { feature: u32, needs: Vec<u32> },
    #[error("VERSION_1 (bit 32) is not offered: vmc devices are virtio 1.x only")]
    NoVersion1,
    #[error("MTU {mtu} with the MTU feature bit {}: offer the bit exactly when the MTU is set (68..=65535)", if *.offered { "offered" } else { "not offered" })]
    Mtu { mtu: u16, offered: bool },
    #[error("{queue} queue size {size} is not a power of two in 2..=32768")]
    QueueSize { queue: &'static str, size: u16 },
    #[error("cannot create the queue notification eventfd: {0}")]
    EventFd(#[source] std::io::Error),
}

/// Size of the configuration space: mac, status, max_virtqueue_pairs, mtu.
const CONFIG_LEN: usize = 12;
/// `status`: the link is up.
const S_LINK_UP: u16 = 1;

struct Running {
    stop: EventFd,
    /// Ends with where the rx and tx queues stood (`None` if the worker panicked).
    thread: JoinHandle<Option<[QueueState; 2]>>,
}

/// A virtio-net device backed by a TAP.
pub struct Net {
    config: NetConfig,
    config_space: [u8; CONFIG_LEN],
    queue_max_sizes: [u16; 2],
    tap: Arc<Tap>,
    queue_events: Vec<EventFd>,
    counters: Arc<NetCounters>,
    running: Option<Running>,
    negotiated: Option<u64>,
    offloads: TapOffloads,
    /// Where the device's guest-memory writes are recorded, for live migration.
    dirty: Option<Arc<DirtyBitmap>>,
    notice: Option<Notice>,
}

impl std::fmt::Debug for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Net")
            .field("config", &self.config)
            .field("tap", &self.tap.name())
            .field("negotiated", &self.negotiated)
            .field("offloads", &self.offloads)
            .finish()
    }
}

impl NetConfig {
    /// Whether the device can honour these values: every feature bit implemented,
    /// VERSION_1 offered, every feature requirement met, an MTU exactly when MTU is
    /// offered, and queue sizes a split ring can have. [`Net::new`] refuses what fails.
    pub fn validate(&self) -> Result<(), NetError> {
        let supported = supported_features();
        let unsupported: Vec<u32> = (0..64)
            .filter(|&b| has(self.features, b) && !has(supported, b))
            .collect();
        if !unsupported.is_empty() {
            return Err(NetError::UnsupportedFeatures { bits: unsupported });
        }
        if !has(self.features, VERSION_1) {
            return Err(NetError::NoVersion1);
        }
        if let Some((feature, needs)) = unmet_requirement(self.features) {
            return Err(NetError::UnmetRequirement { feature, needs });
        }
        let mtu_offered = has(self.features, MTU);
        if mtu_offered != (self.mtu != 0) || (mtu_offered && self.mtu < 68) {
            return Err(NetError::Mtu {
                mtu: self.mtu,
                offered: mtu_offered,
            });
        }
        for (queue, size) in [("receive", self.rx_queue_size), ("transmit", self.tx_queue_size)] {
            if size < 2 || !size.is_power_of_two() || size > 32768 {
                return Err(NetError::QueueSize { queue, size });
            }
        }
        Ok(())
    }
}

impl Net {
    /// A device offering exactly `config.features`, moving frames to and from `tap`.
    pub fn new(config: NetConfig, tap: Tap) -> Result<Net, NetError> {
        config.validate()?;
        let queue_events = (0..2)
            .map(|_| EventFd::new(EFD_NONBLOCK))
            .collect::<Result<Vec<_>, _>>()
            .map_err(NetError::EventFd)?;

        let mut config_space = [0u8; CONFIG_LEN];
        config_space[0..6].copy_from_slice(&config.mac);
        let status = if has(config.features, STATUS) { S_LINK_UP } else { 0 };
        config_space[6..8].copy_from_slice(&status.to_le_bytes());
        config_space[8..10].copy_from_slice(&1u16.to_le_bytes());
        config_space[10..12].copy_from_slice(&config.mtu.to_le_bytes());

        Ok(Net {
            config,
            config_space,
            queue_max_sizes: [config.rx_queue_size, config.tx_queue_size],
            tap: Arc::new(tap),
            queue_events,
            counters: Arc::new(NetCounters::default()),
            running: None,
            negotiated: None,
            offloads: TapOffloads::NONE,
            dirty: None,
            notice: None,
        })
    }

    /// Sets what the device calls, once per device and from its worker thread, when its
    /// TAP goes away under it (deleted while the VM runs), with one line such as
    /// `TAP vmc-st0 went away (read: EBADFD (File descriptor in bad state)); the device
    /// passes no more frames`. The line names the TAP, not the device, which does not
    /// know its ID: the VMM prefixes that (`vmc: net0: …`). The VM keeps running; the
    /// `tap_gone` counter says the same. Takes effect at the next activation.
    pub fn set_notice(&mut self, notice: Notice) {
        self.notice = Some(notice);
    }

    /// Records every guest page the device writes in `dirty` (see
    /// [`DirtyBitmap`]); takes effect at the next activation.
    pub fn track_writes(&mut self, dirty: Arc<DirtyBitmap>) {
        self.dirty = Some(dirty);
    }

    /// The TAP the device uses.
    pub fn tap(&self) -> &Tap {
        &self.tap
    }

    /// The counters now.
    pub fn stats(&self) -> NetStats {
        self.counters.snapshot()
    }

    /// The live counters, to read after the device is gone or from another thread.
    pub fn counters(&self) -> Arc<NetCounters> {
        self.counters.clone()
    }

    /// The offloads set on the TAP at DRIVER_OK (NONE while inactive).
    pub fn tap_offloads(&self) -> TapOffloads {
        self.offloads
    }

    /// The TAP went away under the device (see [`Net::set_notice`]).
    pub fn tap_gone(&self) -> bool {
        self.counters.tap_gone.load(std::sync::atomic::Ordering::Relaxed) != 0
    }

    /// Stops the worker; returns where its queues stood, if it was running (and did
    /// not panic).
    fn stop_worker(&mut self) -> Option<[QueueState; 2]> {
        let mut states = None;
        if let Some(running) = self.running.take() {
            // If the write fails the thread is already gone; join returns at once.
            let _ = running.stop.write(1);
            states = running.thread.join().ok().flatten();
        }
        // Notifications that arrived for the old queues mean nothing to new ones, and a
        // worker that continues the same queues makes a pass over both when it starts.
        for event in &self.queue_events {
            let _ = event.read();
        }
        states
    }
}

impl VirtioDevice for Net {
    fn device_id(&self) -> u32 {
        DEVICE_ID
    }

    fn offered_features(&self) -> u64 {
        self.config.features
    }

    fn accepts_features(&self, driver_features: u64) -> bool {
        unmet_requirement(driver_features).is_none()
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_max_sizes
    }

    fn queue_events(&self) -> &[EventFd] {
        &self.queue_events
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let mut config_space = self.config_space;
        if self.tap_gone() {
            // The link is down for good once the TAP is gone (status, bytes 6..8).
            config_space[6..8].copy_from_slice(&0u16.to_le_bytes());
        }
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = offset
                .checked_add(i as u64)
                .and_then(|at| usize::try_from(at).ok())
                .and_then(|at| config_space.get(at))
                .copied()
                .unwrap_or(0);
        }
    }

    // write_config: the default refuses. With VERSION_1 every virtio-net field is
    // read-only to the driver (the MAC changes only through the control queue).

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        features: u64,
        queues: Vec<Queue>,
        interrupt: Arc<VirtioInterrupt>,
    ) -> Result<(), ActivateError> {
        self.stop_worker();
        let got = queues.len();
        let Ok::<[Queue; 2], _>([rx, tx]) = queues.try_into() else {
            return Err(ActivateError::QueueCount { expected: 2, got });
        };
        let offloads = tap_offloads_for(features);
        // A TAP that went away takes no offloads (EBADFD), and passes no frames anyway:
        // the guest still gets a device that serves its queues.
        if !self.tap_gone() {
            self.tap
                .set_offload(offloads)
                .map_err(|source| ActivateError::TapOffload { offloads, source })?;
        }
        self.offloads = offloads;

        let stop = EventFd::new(EFD_NONBLOCK)?;
        let worker = worker::Worker::new(worker::WorkerParts {
            mem,
            features,
            rx,
            tx,
            tap: self.tap.clone(),
            interrupt,
            counters: self.counters.clone(),
            rx_event: self.queue_events[RX_QUEUE].try_clone()?,
            tx_event: self.queue_events[TX_QUEUE].try_clone()?,
            stop: stop.try_clone()?,
            dirty: self.dirty.clone(),
            notice: self.notice.clone(),
        })?;
        let (counters, interrupt) = (self.counters.clone(), worker.interrupt());
        let thread = std::thread::Builder::new().name("virtio-net".into()).spawn(move || {
            // Its own seccomp role, on top of that of the thread that started it.
            if let Err(e) = crate::confine::enter(crate::confine::Role::Net) {
                eprintln!("vmc: virtio-net worker: {e}");
                interrupt.signal_needs_reset();
                return None;
            }
            // A bug here must not take the VMM down with it, nor leave the guest
            // with a device that silently stopped: count it and ask for a reset.
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| worker.run()));
            if outcome.is_err() {
                NetCounters::inc(&counters.worker_panics);
                interrupt.signal_needs_reset();
            }
            outcome.ok()
        })?;
        self.running = Some(Running { stop, thread });
        self.negotiated = Some(features);
        tracing::info!(
            tap = self.tap.name(),
            negotiated = format_args!("{features:#x}"),
            offloads = %offloads,
            "virtio-net: the driver set DRIVER_OK; the worker serves the queues, TAP offloads set"
        );
        Ok(())
    }

    fn pause(&mut self) -> Option<Vec<QueueState>> {
        // The offloads and the negotiated features stay: the same guest continues.
        self.stop_worker().map(Vec::from)
    }

    fn is_running(&self) -> bool {
        self.running.is_some()
    }

    fn reset(&mut self) {
        self.stop_worker();
        if self.negotiated.take().is_some() && !self.offloads.is_empty() {
            // Best effort: nothing reads the TAP until the next DRIVER_OK sets them again.
            let _ = self.tap.set_offload(TapOffloads::NONE);
        }
        self.offloads = TapOffloads::NONE;
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.stop_worker();
    }
}

/// The feature word with all of `bits` set.
pub fn feature_word(bits: &[u32]) -> u64 {
    bits.iter().fold(0, |word, &b| word | bit(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uso_is_set_at_the_tap_only_for_both_uso_bits_with_guest_csum() {
        let word = |bits: &[u32]| feature_word(bits);
        let uso = TapOffloads::CSUM | TapOffloads::USO4 | TapOffloads::USO6;
        assert_eq!(tap_offloads_for(word(&[GUEST_CSUM, GUEST_USO4, GUEST_USO6])), uso);
        assert_eq!(tap_offloads_for(word(&[GUEST_CSUM, GUEST_USO4])), TapOffloads::CSUM);
        assert_eq!(tap_offloads_for(word(&[GUEST_USO4, GUEST_USO6])), TapOffloads::NONE);
        assert_eq!(
            tap_offloads_for(word(&[GUEST_CSUM, GUEST_TSO4, GUEST_ECN, GUEST_UFO])),
            TapOffloads::CSUM | TapOffloads::TSO4 | TapOffloads::TSO_ECN | TapOffloads::UFO
        );
    }

    #[test]
    fn requirements_follow_the_spec() {
        assert_eq!(
            unmet_requirement(feature_word(&[HOST_USO])),
            Some((HOST_USO, vec![CSUM]))
        );
        assert_eq!(unmet_requirement(feature_word(&[HOST_USO, CSUM])), None);
        assert!(unmet_requirement(feature_word(&[GUEST_CSUM, GUEST_ECN])).is_some());
        assert!(unmet_requirement(feature_word(&[GUEST_CSUM, GUEST_TSO6, GUEST_ECN])).is_none());
    }

    fn config(features: u64) -> NetConfig {
        NetConfig {
            features,
            mac: [0x52, 0x54, 0, 0x12, 0x34, 0x56],
            mtu: if has(features, MTU) { 1500 } else { 0 },
            rx_queue_size: 256,
            tx_queue_size: 256,
        }
    }

    fn schema_implements(b: u32) -> bool {
        b == schema::VERSION_1
            || VIRTIO_NET
                .iter()
                .any(|p| p.feature_bit == Some(b) && p.support == Support::Implemented)
    }

    /// `b` with, recursively, the first feature of each of its requirements.
    fn with_requirements(b: u32) -> u64 {
        requirements()
            .filter(|(feature, _)| *feature == b)
            .fold(bit(b), |word, (_, needs)| word | with_requirements(needs[0]))
    }

    #[test]
    fn exactly_the_bits_the_schema_marks_implemented_are_offered() {
        for b in 0..64 {
            let result = config(bit(VERSION_1) | bit(b)).validate();
            if schema_implements(b) {
                assert!(
                    !matches!(result, Err(NetError::UnsupportedFeatures { .. })),
                    "bit {b} is implemented in the schema but refused: {result:?}"
                );
            } else {
                assert!(
                    matches!(&result, Err(NetError::UnsupportedFeatures { bits }) if *bits == [b]),
                    "bit {b} is not implemented in the schema but not refused: {result:?}"
                );
            }
        }
    }

    #[test]
    fn every_implemented_schema_feature_is_accepted() {
        for (b, p) in feature_rows().filter(|(_, p)| p.support == Support::Implemented) {
            let word = bit(VERSION_1) | with_requirements(b);
            assert_eq!(config(word).validate().ok(), Some(()), "{}", p.name);
        }
        let all = config(supported_features());
        assert_eq!(all.validate().ok(), Some(()));
        assert_eq!(unmet_requirement(all.features), None);
    }

    #[test]
    fn the_requirement_check_is_the_schemas_for_every_row() {
        let name_of = |b: u32| feature_rows().find(|(bit, _)| *bit == b).map(|(_, p)| p.name);
        for (b, p) in feature_rows() {
            let alone: Vec<_> = unmet_requirements(bit(b)).collect();
            let unmet_names: Vec<Vec<&str>> = alone
                .iter()
                .map(|(feature, needs)| {
                    assert_eq!(*feature, b, "{}", p.name);
                    needs.iter().map(|n| name_of(*n).expect("a schema row")).collect()
                })
                .collect();
            let required: Vec<Vec<&str>> = p.requires.iter().map(|any_of| any_of.to_vec()).collect();
            assert_eq!(unmet_names, required, "{} alone", p.name);
            for (any_of, (_, needs)) in p.requires.iter().zip(&alone) {
                assert_eq!(
                    needs.len(),
                    any_of.len(),
                    "{}: every required feature has a bit",
                    p.name
                );
                for need in needs {
                    assert!(
                        unmet_requirements(bit(b) | bit(*need)).all(|(f, n)| f != b || n != *needs),
                        "{} with {need}",
                        p.name
                    );
                }
            }
        }
    }

    #[test]
    fn the_feature_constants_name_the_schemas_bits() {
        let named = [
            (CSUM, "CSUM"),
            (GUEST_CSUM, "GUEST_CSUM"),
            (MTU, "MTU"),
            (MAC, "MAC"),
            (GUEST_TSO4, "GUEST_TSO4"),
            (GUEST_TSO6, "GUEST_TSO6"),
            (GUEST_ECN, "GUEST_ECN"),
            (GUEST_UFO, "GUEST_UFO"),
            (HOST_TSO4, "HOST_TSO4"),
            (HOST_TSO6, "HOST_TSO6"),
            (HOST_ECN, "HOST_ECN"),
            (HOST_UFO, "HOST_UFO"),
            (MRG_RXBUF, "MRG_RXBUF"),
            (STATUS, "STATUS"),
            (GUEST_USO4, "GUEST_USO4"),
            (GUEST_USO6, "GUEST_USO6"),
            (HOST_USO, "HOST_USO"),
            (VERSION_1, "VERSION_1"),
            (super::super::features::RING_INDIRECT_DESC, "RING_INDIRECT_DESC"),
            (super::super::features::RING_EVENT_IDX, "RING_EVENT_IDX"),
        ];
        for (b, name) in named {
            assert_eq!(schema::feature_name(b), Some(name), "bit {b}");
        }
    }
}
