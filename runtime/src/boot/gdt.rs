//! The boot GDT and the segment registers derived from it.
//!
//! The same table serves both entries: PVH starts in 32-bit protected mode with the
//! flat 32-bit code segment; the Linux 64-bit boot protocol asks for `__BOOT_CS`
//! (0x10) and `__BOOT_DS` (0x18), so those selectors hold the 64-bit code segment and
//! the flat data segment.

use kvm_bindings::kvm_segment;

/// Selector of the flat 32-bit code segment (PVH entry).
pub const CODE32_SELECTOR: u16 = 0x08;
/// Selector of the 64-bit code segment (Linux `__BOOT_CS`).
pub const CODE64_SELECTOR: u16 = 0x10;
/// Selector of the flat read/write data segment (Linux `__BOOT_DS`).
pub const DATA_SELECTOR: u16 = 0x18;
/// Selector of the 32-bit TSS that `TR` points to.
pub const TSS_SELECTOR: u16 = 0x20;

/// Builds a segment descriptor from its parts: `flags` is the 12 bits
/// `G D/B L AVL | P DPL S TYPE` (bits 55..52 and 47..40 of the descriptor).
pub const fn descriptor(flags: u16, base: u32, limit: u32) -> u64 {
    let base = base as u64;
    let limit = limit as u64;
    let flags = flags as u64;
    ((base & 0xff00_0000) << 32)
        | ((flags & 0xf0ff) << 40)
        | ((limit & 0x000f_0000) << 32)
        | ((base & 0x00ff_ffff) << 16)
        | (limit & 0xffff)
}

/// The boot GDT, indexed by selector / 8.
pub const GDT: [u64; 5] = [
    0,
    descriptor(0xc09b, 0, 0xfffff), // 0x08: code, 32-bit, 4 GiB, execute/read
    descriptor(0xa09b, 0, 0xfffff), // 0x10: code, 64-bit (L), execute/read
    descriptor(0xc093, 0, 0xfffff), // 0x18: data, 4 GiB, read/write
    descriptor(0x008b, 0, 0x67),    // 0x20: 32-bit TSS, busy
];

/// The `kvm_segment` a CPU holds after loading `selector` from [`GDT`].
pub fn segment(selector: u16) -> kvm_segment {
    let desc = GDT[usize::from(selector >> 3)];
    let granular = (desc >> 55) & 1 == 1;
    let raw_limit = (((desc >> 32) & 0x000f_0000) | (desc & 0xffff)) as u32;
    kvm_segment {
        base: ((desc >> 16) & 0x00ff_ffff) | ((desc >> 32) & 0xff00_0000),
        limit: if granular { (raw_limit << 12) | 0xfff } else { raw_limit },
        selector,
        type_: ((desc >> 40) & 0xf) as u8,
        present: ((desc >> 47) & 1) as u8,
        dpl: ((desc >> 45) & 3) as u8,
        db: ((desc >> 54) & 1) as u8,
        s: ((desc >> 44) & 1) as u8,
        l: ((desc >> 53) & 1) as u8,
        g: granular as u8,
        avl: ((desc >> 52) & 1) as u8,
        unusable: 0,
        padding: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_code32_segment_covers_4gib() {
        let cs = segment(CODE32_SELECTOR);
        assert_eq!((cs.base, cs.limit), (0, 0xffff_ffff));
        assert_eq!((cs.type_, cs.s, cs.present, cs.db, cs.l, cs.g), (0xb, 1, 1, 1, 0, 1));
    }

    #[test]
    fn code64_segment_is_long_mode() {
        let cs = segment(CODE64_SELECTOR);
        assert_eq!((cs.l, cs.db, cs.type_), (1, 0, 0xb));
    }

    #[test]
    fn tss_is_a_busy_32bit_tss_of_0x68_bytes() {
        let tr = segment(TSS_SELECTOR);
        assert_eq!((tr.type_, tr.s, tr.present, tr.limit, tr.g), (0xb, 0, 1, 0x67, 0));
    }

    #[test]
    fn descriptor_matches_the_well_known_flat_segments() {
        assert_eq!(GDT[1], 0x00cf_9b00_0000_ffff);
        assert_eq!(GDT[2], 0x00af_9b00_0000_ffff);
        assert_eq!(GDT[3], 0x00cf_9300_0000_ffff);
    }
}
