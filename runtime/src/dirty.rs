//! Guest pages written behind KVM's back. vCPUs' writes are in KVM's dirty log
//! (`KVM_MEM_LOG_DIRTY_PAGES`); devices write guest memory from vmc's own threads (a
//! received frame, a used ring), which KVM cannot see, and record those writes in a
//! [`DirtyBitmap`]. The VM's state (`vm::state`) reads both for live migration. A module
//! of its own, beside `devices` and `vm`, because both use it and the devices import
//! nothing from the VM.

use std::sync::atomic::{AtomicU64, Ordering};

/// Size of a guest page as KVM's dirty log, and so [`DirtyBitmap`], counts them.
pub const PAGE_SIZE: u64 = 4096;

/// Guest pages written by vmc's own threads (devices), one bit per page of guest
/// physical address space; KVM's dirty log does not see these writes.
#[derive(Debug)]
pub struct DirtyBitmap {
    words: Vec<AtomicU64>,
}

impl DirtyBitmap {
    /// A bitmap for guest physical addresses below `end`.
    pub fn new(end: u64) -> DirtyBitmap {
        let pages = end.div_ceil(PAGE_SIZE);
        DirtyBitmap {
            words: (0..pages.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Records a write of `len` bytes at `addr` (outside the bitmap: ignored).
    pub fn mark(&self, addr: u64, len: u64) {
        if len == 0 {
            return;
        }
        let first = addr / PAGE_SIZE;
        let last = addr.saturating_add(len - 1) / PAGE_SIZE;
        for page in first..=last {
            match self.words.get((page / 64) as usize) {
                Some(word) => {
                    word.fetch_or(1 << (page % 64), Ordering::Relaxed);
                }
                None => return,
            }
        }
    }

    /// The pages marked since the last call (as page numbers), clearing them.
    pub fn take(&self) -> Vec<u64> {
        let mut pages = Vec::new();
        for (i, word) in self.words.iter().enumerate() {
            let mut bits = word.swap(0, Ordering::Relaxed);
            while bits != 0 {
                let bit = bits.trailing_zeros();
                pages.push(i as u64 * 64 + u64::from(bit));
                bits &= bits - 1;
            }
        }
        pages
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bitmap_gives_back_each_marked_page_once() {
        let bitmap = DirtyBitmap::new(1 << 20);
        bitmap.mark(0x1ff0, 0x20); // pages 1 and 2
        bitmap.mark(0x1000, 1);
        bitmap.mark(0x20_0000, 8); // beyond: ignored
        bitmap.mark(0x5000, 0);
        assert_eq!(bitmap.take(), vec![1, 2]);
        assert_eq!(bitmap.take(), Vec::<u64>::new());
    }
}
