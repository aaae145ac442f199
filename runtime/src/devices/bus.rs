//! The address buses a vCPU's exits are dispatched on.
//!
//! The run loop knows devices only through [`BusDevice`]: a read or a write at an
//! offset inside the range the device was inserted at. A VM has two buses, one for
//! port I/O and one for MMIO; both are the same [`Bus`] type.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A device reachable by guest reads and writes on a bus.
///
/// `offset` is relative to the base address the device was inserted at, and
/// `data.len()` is the access width (1, 2, 4 or 8 bytes, as the guest chose).
/// Implementations must accept any offset and width: a misbehaving guest must
/// never be able to panic the VMM.
pub trait BusDevice: Send {
    /// The guest reads `data.len()` bytes at `offset`; fill `data`.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// The guest writes `data` at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// A device shared between the bus and whoever else needs to reach it.
pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

/// Error inserting a device on a bus.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    /// The range is empty or wraps around the address space.
    #[error("invalid bus range {base:#x}+{len:#x}")]
    InvalidRange {
        /// Requested base.
        base: u64,
        /// Requested length.
        len: u64,
    },
    /// The range overlaps one that is already taken.
    #[error("bus range {base:#x}+{len:#x} overlaps a device at {other:#x}")]
    Overlap {
        /// Requested base.
        base: u64,
        /// Requested length.
        len: u64,
        /// Base of the device already there.
        other: u64,
    },
}

struct Slot {
    len: u64,
    device: SharedDevice,
}

/// Address ranges mapped to devices; ranges never overlap.
#[derive(Default)]
pub struct Bus {
    slots: BTreeMap<u64, Slot>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.slots.iter().map(|(&base, s)| base..base + s.len))
            .finish()
    }
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Maps `device` at `[base, base + len)`.
    pub fn insert(&mut self, base: u64, len: u64, device: SharedDevice) -> Result<(), BusError> {
        let end = base
            .checked_add(len)
            .filter(|_| len > 0)
            .ok_or(BusError::InvalidRange { base, len })?;
        // The only candidates for overlap: the last range starting below `end`.
        if let Some((&other, slot)) = self.slots.range(..end).next_back() {
            if other + slot.len > base {
                return Err(BusError::Overlap { base, len, other });
            }
        }
        self.slots.insert(base, Slot { len, device });
        Ok(())
    }

    fn find(&self, addr: u64, width: usize) -> Option<(u64, &SharedDevice)> {
        let (&base, slot) = self.slots.range(..=addr).next_back()?;
        let offset = addr - base;
        // The whole access must fall inside the device's range.
        (offset.checked_add(width as u64)? <= slot.len).then_some((offset, &slot.device))
    }

    /// Dispatches a read; returns `false` (leaving `data` untouched) when no device
    /// covers the access.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((offset, device)) => {
                lock(device).read(offset, data);
                true
            }
            None => false,
        }
    }

    /// Dispatches a write; returns `false` when no device covers the access.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((offset, device)) => {
                lock(device).write(offset, data);
                true
            }
            None => false,
        }
    }
}

/// Locks a device even if a previous holder panicked: device state is plain data,
/// and a VMM that stops serving every later exit would be worse.
fn lock(device: &SharedDevice) -> std::sync::MutexGuard<'_, dyn BusDevice + 'static> {
    device.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Remembers the last write and answers reads with its offset.
    #[derive(Default)]
    struct Probe {
        last_write: Option<(u64, Vec<u8>)>,
    }

    impl BusDevice for Probe {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.last_write = Some((offset, data.to_vec()));
        }
    }

    #[test]
    fn accesses_reach_the_device_at_their_offset() {
        let probe = Arc::new(Mutex::new(Probe::default()));
        let mut bus = Bus::new();
        bus.insert(0x3f8, 8, probe.clone()).unwrap();
        let mut data = [0u8; 1];
        assert!(bus.read(0x3fd, &mut data));
        assert_eq!(data, [5]);
        assert!(bus.write(0x3f8, b"A"));
        assert_eq!(probe.lock().unwrap().last_write, Some((0, b"A".to_vec())));
    }

    #[test]
    fn accesses_outside_or_straddling_a_device_are_unclaimed() {
        let mut bus = Bus::new();
        bus.insert(0x1000, 0x10, Arc::new(Mutex::new(Probe::default())))
            .unwrap();
        let mut data = [0xaau8; 4];
        assert!(!bus.read(0xfff, &mut data));
        assert!(!bus.read(0x1010, &mut data));
        assert!(!bus.read(0x100e, &mut data), "straddles the end");
        assert_eq!(data, [0xaa; 4]);
        assert!(!bus.write(u64::MAX, &[1, 2]));
    }

    #[test]
    fn overlapping_and_empty_ranges_are_refused() {
        let dev = || -> SharedDevice { Arc::new(Mutex::new(Probe::default())) };
        let mut bus = Bus::new();
        bus.insert(0x100, 0x100, dev()).unwrap();
        assert!(matches!(
            bus.insert(0x1ff, 1, dev()),
            Err(BusError::Overlap { other: 0x100, .. })
        ));
        assert!(matches!(bus.insert(0x80, 0x81, dev()), Err(BusError::Overlap { .. })));
        assert!(bus.insert(0x80, 0x80, dev()).is_ok());
        assert!(bus.insert(0x200, 0, dev()).is_err());
        assert!(bus.insert(u64::MAX, 2, dev()).is_err());
    }
}
