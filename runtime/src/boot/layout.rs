//! Where the loader puts boot structures in low guest memory.
//!
//! ```text
//! 0x0500  GDT (see [`super::gdt`])
//! 0x6000  PVH hvm_start_info
//! 0x6040  PVH module list (one entry: the initrd)
//! 0x6080  PVH memory map (up to PVH_MEMMAP_MAX_ENTRIES entries)
//! 0x7000  Linux zero page (struct boot_params)
//! 0x8ff0  initial stack pointer for the 64-bit Linux entry (grows down)
//! 0x9000  PML4, 0xa000 PDPT, 0xb000..0xf000 four page directories (identity map of 4 GiB)
//! 0x20000 kernel command line (NUL-terminated, at most CMDLINE_MAX_SIZE bytes with the NUL)
//! ```
//!
//! All of this lies below 0x30000, so a guest may use 0x30000..EBDA_START as it likes
//! (the self-test guest puts its stack there). Kernels load at 1 MiB.

/// Guest address of the GDT.
pub const GDT_ADDR: u64 = 0x500;
/// Guest address of the PVH `hvm_start_info` (passed in `ebx`).
pub const PVH_START_INFO_ADDR: u64 = 0x6000;
/// Guest address of the PVH module list.
pub const PVH_MODLIST_ADDR: u64 = 0x6040;
/// Guest address of the PVH memory map.
pub const PVH_MEMMAP_ADDR: u64 = 0x6080;
/// How many memory-map entries fit between the PVH memory map and the zero page.
pub const PVH_MEMMAP_MAX_ENTRIES: usize = ((ZERO_PAGE_ADDR - PVH_MEMMAP_ADDR) / 24) as usize;
/// Guest address of the Linux zero page (`boot_params`, passed in `rsi`).
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
/// Initial stack pointer for the 64-bit Linux entry.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Guest address of the top-level page table (PML4).
pub const PML4_ADDR: u64 = 0x9000;
/// Guest address of the page-directory-pointer table.
pub const PDPT_ADDR: u64 = 0xa000;
/// Guest address of the first of four page directories.
pub const PD_ADDR: u64 = 0xb000;
/// Guest address of the kernel command line.
pub const CMDLINE_ADDR: u64 = 0x20000;
/// Largest command line, NUL included.
pub const CMDLINE_MAX_SIZE: usize = vmc_compiler::limits::MAX_KERNEL_CMDLINE;
/// First address free for the guest's own use.
pub const BOOT_AREA_END: u64 = CMDLINE_ADDR + CMDLINE_MAX_SIZE as u64;
