//! What the virtio-net device did, counted: frames and bytes each way, and every frame
//! or buffer it refused, by reason. Updated by the device's worker thread, read by tests
//! and by `vmc run` at exit.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($(#[doc = $doc:literal])+ $name:ident,)*) => {
        /// The live counters, shared with the worker thread.
        #[derive(Debug, Default)]
        pub struct NetCounters {
            $($(#[doc = $doc])+ pub(crate) $name: AtomicU64,)*
        }

        /// A snapshot of [`NetCounters`].
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct NetStats {
            $($(#[doc = $doc])+ pub $name: u64,)*
        }

        impl NetCounters {
            /// The counters now.
            pub fn snapshot(&self) -> NetStats {
                NetStats {
                    $($name: self.$name.load(Ordering::Relaxed),)*
                }
            }
        }

        impl NetStats {
            /// `name=value` pairs, in declaration order, for a one-line report.
            pub fn fields(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name),)*]
            }
        }
    };
}

counters! {
    /// Frames the guest sent that reached the TAP.
    tx_frames,
    /// Their bytes, without the virtio-net header.
    tx_bytes,
    /// Transmit chains shorter than a header plus an Ethernet header.
    tx_dropped_short,
    /// Transmit chains longer than the largest frame a TAP takes.
    tx_dropped_oversize,
    /// Headers with a flag the driver may not set.
    tx_dropped_bad_flags,
    /// Headers with a GSO type not negotiated (or unknown), or gso_size 0.
    tx_dropped_bad_gso,
    /// Headers asking for a checksum without CSUM, or outside the frame.
    tx_dropped_bad_csum,
    /// Frames the TAP refused (write error, or no room), or that found it gone.
    tx_dropped_tap,
    /// Frames delivered into the guest's receive buffers.
    rx_frames,
    /// Their bytes, without the virtio-net header.
    rx_bytes,
    /// Frames that did not fit the guest's buffers.
    rx_dropped_too_big,
    /// Frames dropped half-placed (MRG_RXBUF) because a malformed chain came next.
    rx_dropped_bad_chain,
    /// Errors reading the TAP.
    rx_tap_errors,
    /// 1 once the TAP went away under the running device (deleted: its fd answers
    /// EBADFD); the device then passes no frames.
    tap_gone,
    /// Times a received frame waited for the guest to add buffers.
    rx_waited_for_buffers,
    /// Descriptor chains refused: outside guest memory, broken or looping, wrong
    /// direction, indirect without INDIRECT_DESC, too short for a header.
    bad_descriptors,
    /// Times the device entered DEVICE_NEEDS_RESET on a guest error it cannot recover from.
    needs_reset_events,
    /// Panics of the device's worker thread: a bug in vmc, never the guest's doing. The
    /// device then needs a reset, like after a fatal guest error.
    worker_panics,
}

impl NetCounters {
    pub(crate) fn add(counter: &AtomicU64, value: u64) {
        counter.fetch_add(value, Ordering::Relaxed);
    }

    pub(crate) fn inc(counter: &AtomicU64) {
        Self::add(counter, 1);
    }
}

impl std::fmt::Display for NetStats {
    /// `tx_frames=3 tx_bytes=…`, every counter.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let fields: Vec<String> = self
            .fields()
            .into_iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        f.write_str(&fields.join(" "))
    }
}
