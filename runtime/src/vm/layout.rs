//! Guest physical address map of a vmc VM (x86-64, microvm-like).
//!
//! ```text
//! 0x0000_0000 .. 0x0009_fc00   RAM (low memory; boot structures live here, see `boot::layout`)
//! 0x0009_fc00 .. 0x0010_0000   legacy EBDA / VGA / BIOS window: not reported as RAM
//! 0x0010_0000 .. RAM_32BIT_END RAM (kernels load at 1 MiB)
//! 0xc000_0000 .. 0x1_0000_0000 the 32-bit MMIO hole: never RAM
//!     0xfeb0_0000 .. 0xfeb0_1000  virtio-mmio device window (8 slots of 0x200)
//!     0xfec0_0000                 IOAPIC (in-kernel irqchip)
//!     0xfee0_0000                 local APIC
//!     0xfffb_c000                 KVM identity-map page (1 page)
//!     0xfffb_d000 .. 0xfffc_0000  KVM TSS (3 pages)
//! 0x1_0000_0000 .. (top)       RAM above 4 GiB, when memory exceeds 3 GiB
//! ```
//!
//! The hole starts at 3 GiB. That leaves the whole top GiB for device windows,
//! the APICs and KVM's private pages, so a VM's RAM layout never depends on
//! which devices it has: memory of `n` bytes is split at 3 GiB, always.

use vm_memory::{GuestAddress, GuestMemoryMmap};

/// First address of the 32-bit MMIO hole; RAM below 4 GiB ends here.
pub const MMIO_HOLE_START: u64 = 0xc000_0000;
/// End of the 32-bit MMIO hole (4 GiB), where high RAM starts.
pub const MMIO_HOLE_END: u64 = 0x1_0000_0000;

/// The virtio-mmio device window (QEMU microvm's placement, 8 slots of 512 bytes).
pub const VIRTIO_MMIO_WINDOW_START: u64 = 0xfeb0_0000;
/// End (exclusive) of the virtio-mmio device window.
pub const VIRTIO_MMIO_WINDOW_END: u64 = 0xfeb0_1000;

/// KVM's identity-map page (`KVM_SET_IDENTITY_MAP_ADDR`), one page inside the hole.
pub const KVM_IDENTITY_MAP_ADDR: u64 = 0xfffb_c000;
/// KVM's TSS area (`KVM_SET_TSS_ADDR`), three pages inside the hole.
pub const KVM_TSS_ADDR: u64 = 0xfffb_d000;

/// Start of the legacy EBDA; low RAM reported to the guest ends here.
pub const EBDA_START: u64 = 0x0009_fc00;
/// Start of "high" memory (1 MiB), where kernels are loaded.
pub const HIMEM_START: u64 = 0x0010_0000;

/// Smallest VM vmc builds: enough for the boot structures and a small kernel at 1 MiB.
pub const MIN_MEMORY_BYTES: u64 = 2 << 20;

/// The RAM ranges `(start, length)` for a VM with `memory_bytes` of memory:
/// one range below the hole, and one above 4 GiB for what does not fit below.
pub fn ram_ranges(memory_bytes: u64) -> Vec<(u64, u64)> {
    let low = memory_bytes.min(MMIO_HOLE_START);
    let mut ranges = vec![(0, low)];
    if memory_bytes > MMIO_HOLE_START {
        ranges.push((MMIO_HOLE_END, memory_bytes - MMIO_HOLE_START));
    }
    ranges
}

/// Error creating guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The requested size is below [`MIN_MEMORY_BYTES`] or not page-aligned.
    #[error(
        "guest memory of {0} bytes is invalid: it must be a multiple of 4096 and at least {MIN_MEMORY_BYTES} bytes"
    )]
    InvalidSize(u64),
    /// The host refused the mapping.
    #[error("cannot map {bytes} bytes of guest memory: {source}")]
    Mmap {
        /// Requested size.
        bytes: u64,
        /// Why the mapping failed.
        source: vm_memory::mmap::FromRangesError,
    },
}

/// Anonymous, zero-filled guest memory laid out by [`ram_ranges`].
pub fn create_guest_memory(memory_bytes: u64) -> Result<GuestMemoryMmap, MemoryError> {
    if memory_bytes < MIN_MEMORY_BYTES || !memory_bytes.is_multiple_of(4096) {
        return Err(MemoryError::InvalidSize(memory_bytes));
    }
    let mut ranges = Vec::new();
    for (start, len) in ram_ranges(memory_bytes) {
        let len = usize::try_from(len).map_err(|_| MemoryError::InvalidSize(memory_bytes))?;
        ranges.push((GuestAddress(start), len));
    }
    GuestMemoryMmap::from_ranges(&ranges).map_err(|source| MemoryError::Mmap {
        bytes: memory_bytes,
        source,
    })
}

/// How many bytes of guest RAM are resident in the host's memory (`mincore`): what
/// the guest touched. 0 where the kernel cannot tell.
pub fn resident_bytes(memory: &GuestMemoryMmap) -> u64 {
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
    // SAFETY: sysconf has no memory effects.
    let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let mut resident = 0;
    for region in memory.iter() {
        let pages = usize::try_from(region.len().div_ceil(page)).unwrap_or(0);
        let mut map = vec![0u8; pages];
        // SAFETY: the region is a live mapping of `region.len()` bytes, and `map` has one
        // byte per page of it.
        let ret = unsafe { libc::mincore(region.as_ptr().cast(), region.len() as usize, map.as_mut_ptr()) };
        if ret == 0 {
            resident += map.iter().filter(|&&b| b & 1 != 0).count() as u64 * page;
        }
    }
    resident
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_memory_is_one_range_below_the_hole() {
        assert_eq!(ram_ranges(512 << 20), vec![(0, 512 << 20)]);
    }

    #[test]
    fn memory_above_three_gib_continues_at_four_gib() {
        assert_eq!(
            ram_ranges(4 << 30),
            vec![(0, MMIO_HOLE_START), (MMIO_HOLE_END, 1 << 30)]
        );
    }

    #[test]
    fn device_window_and_kvm_pages_are_inside_the_hole() {
        for addr in [
            VIRTIO_MMIO_WINDOW_START,
            VIRTIO_MMIO_WINDOW_END - 1,
            KVM_IDENTITY_MAP_ADDR,
            KVM_TSS_ADDR + 3 * 4096 - 1,
        ] {
            assert!((MMIO_HOLE_START..MMIO_HOLE_END).contains(&addr), "{addr:#x}");
        }
    }

    #[test]
    fn odd_sizes_are_refused() {
        assert!(matches!(create_guest_memory(4096), Err(MemoryError::InvalidSize(4096))));
        assert!(matches!(
            create_guest_memory((8 << 20) + 1),
            Err(MemoryError::InvalidSize(_))
        ));
    }
}
