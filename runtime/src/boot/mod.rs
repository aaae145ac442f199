//! Loading a kernel into guest memory and describing the CPU state it starts in.
//!
//! Two entries, both to their published protocols:
//! - [`pvh`]: an ELF kernel with a `XEN_ELFNOTE_PHYS32_ENTRY` note, started in 32-bit
//!   protected mode with `ebx` pointing at `hvm_start_info`.
//! - [`bzimage`]: a bzImage through the Linux 64-bit boot protocol, started in long
//!   mode on identity-mapped page tables with `rsi` pointing at the zero page.
//!
//! The loaders only write guest memory and return an [`EntryState`]; `vm` turns that
//! into vCPU registers. So every structure can be read back and checked without KVM.

pub mod bzimage;
pub mod gdt;
pub mod layout;
pub mod mptable;
pub mod paging;
pub mod pvh;

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::vm::layout::{EBDA_START, HIMEM_START};

/// The processor mode a kernel entry expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuMode {
    /// 32-bit protected mode, paging off, flat segments (PVH).
    Protected32,
    /// 64-bit long mode on the identity-mapped page tables at `cr3`.
    Long64,
}

/// The vCPU state at a kernel's first instruction. Registers not named are zero,
/// `rflags` is 0x2 (interrupts off), segments come from [`gdt::GDT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryState {
    /// Processor mode.
    pub mode: CpuMode,
    /// First instruction (eip/rip).
    pub ip: u64,
    /// Stack pointer (0 when the protocol leaves it unspecified).
    pub sp: u64,
    /// `rbx`: the PVH start_info address.
    pub rbx: u64,
    /// `rsi`: the Linux zero page address.
    pub rsi: u64,
    /// GDT base; the table is [`gdt::GDT`].
    pub gdt_base: u64,
    /// Page-table root; 0 when paging is off.
    pub cr3: u64,
}

/// A kernel, loaded and configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedKernel {
    /// Where the vCPU starts.
    pub entry: EntryState,
    /// First byte of the loaded kernel image.
    pub kernel_start: u64,
    /// End (exclusive) of the loaded kernel image, bss included where known.
    pub kernel_end: u64,
    /// The initrd's guest address and size, if one was given.
    pub initrd: Option<(u64, u64)>,
    /// The memory map handed to the kernel.
    pub memory_map: Vec<MemoryMapEntry>,
}

/// The e820 type of a memory-map entry.
pub const E820_RAM: u32 = 1;
/// The e820 type of a reserved memory-map entry.
pub const E820_RESERVED: u32 = 2;

/// One entry of the memory map given to the guest (PVH memmap or e820).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryMapEntry {
    /// First address.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// [`E820_RAM`] or [`E820_RESERVED`].
    pub kind: u32,
}

/// Error loading a kernel.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// linux-loader refused the image.
    #[error("cannot load the kernel image: {0}")]
    Loader(#[from] linux_loader::loader::Error),
    /// The image is neither an ELF file nor a bzImage.
    #[error("the kernel image is neither an ELF file nor a bzImage")]
    UnknownFormat,
    /// The ELF kernel has no PVH entry note.
    #[error("the ELF kernel has no PVH entry point (no XEN_ELFNOTE_PHYS32_ENTRY note)")]
    NoPvhEntry,
    /// The bzImage cannot be entered in 64-bit mode.
    #[error("the bzImage has no 64-bit entry point (boot protocol {version:#06x}, xloadflags {xloadflags:#x})")]
    No64BitEntry {
        /// Boot protocol version from the header.
        version: u16,
        /// The header's xloadflags.
        xloadflags: u16,
    },
    /// The command line holds a NUL byte.
    #[error("the kernel command line contains a NUL byte")]
    CmdlineHasNul,
    /// The command line does not fit.
    #[error("the kernel command line is {len} bytes; at most {max} fit (terminating NUL included)")]
    CmdlineTooLong {
        /// Length with the NUL.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// There is no room for the initrd where the protocol allows it.
    #[error("no room for an initrd of {size} bytes between the kernel end {kernel_end:#x} and {limit:#x}")]
    NoRoomForInitrd {
        /// Initrd size.
        size: u64,
        /// End of the kernel.
        kernel_end: u64,
        /// Highest usable address (exclusive).
        limit: u64,
    },
    /// The memory map has more entries than the protocol's table holds.
    #[error("the memory map has {0} entries, more than the boot protocol can pass")]
    TooManyMemoryMapEntries(usize),
    /// The ELF kernel's program headers lie past the end of the file.
    #[error(
        "the kernel image is cut short: its program headers ({count} of {size} bytes at offset {offset:#x}) \
         end past the end of the {len}-byte file"
    )]
    ProgramHeadersBeyondFile {
        /// Offset of the table.
        offset: u64,
        /// Number of entries.
        count: u16,
        /// Size of one entry.
        size: u16,
        /// Length of the image.
        len: usize,
    },
    /// The ELF header's entry address is below 1 MiB.
    #[error(
        "the kernel's ELF entry address {0:#x} is below 1 MiB, where vmc puts the boot structures: use a kernel \
         linked to run at 1 MiB (0x100000) or above"
    )]
    ElfEntryInBootArea(u64),
    /// A segment of the ELF kernel lies past the end of the file.
    #[error(
        "the kernel image is cut short: its segment {index} holds {size:#x} bytes at file offset {offset:#x}, \
         past the end of the {len}-byte file"
    )]
    SegmentBeyondFile {
        /// Index of the program header.
        index: usize,
        /// File offset of the segment's data.
        offset: u64,
        /// Bytes of data in the file.
        size: u64,
        /// Length of the image.
        len: usize,
    },
    /// A segment of the kernel is to be loaded where the guest has no RAM.
    #[error(
        "the kernel's segment {index} is {size:#x} bytes at {start:#x}, outside the guest's RAM ({ram}): \
         give the VM more memory, or use a kernel linked to load within it"
    )]
    SegmentOutsideRam {
        /// Index of the program header.
        index: usize,
        /// Guest physical address of the segment.
        start: u64,
        /// Bytes it occupies in memory (bss included).
        size: u64,
        /// The guest's RAM, as text.
        ram: String,
    },
    /// A segment of the kernel is to be loaded below 1 MiB, over the boot structures.
    #[error(
        "the kernel's segment {index} is {size:#x} bytes at {start:#x}, below 1 MiB, where vmc puts the boot \
         structures: use a kernel linked to load at 1 MiB (0x100000) or above"
    )]
    SegmentInBootArea {
        /// Index of the program header.
        index: usize,
        /// Guest physical address of the segment.
        start: u64,
        /// Bytes it occupies in memory.
        size: u64,
    },
    /// The PVH entry point is in the MMIO hole, where there is no RAM.
    #[error(
        "the kernel's PVH entry point {entry:#x} is in the MMIO hole ({hole_start:#x}..{hole_end:#x}), where the \
         guest has devices, not RAM: the vCPU could not run there"
    )]
    PvhEntryInMmioHole {
        /// The entry address.
        entry: u64,
        /// Start of the hole.
        hole_start: u64,
        /// End (exclusive) of the hole.
        hole_end: u64,
    },
    /// The PVH entry point is beyond the guest's RAM.
    #[error("the kernel's PVH entry point {entry:#x} is outside the guest's RAM ({ram})")]
    PvhEntryOutsideRam {
        /// The entry address.
        entry: u64,
        /// The guest's RAM, as text.
        ram: String,
    },
    /// The PVH entry point is in RAM the kernel does not load.
    #[error("the kernel's PVH entry point {entry:#x} is not in any segment the kernel loads ({segments})")]
    PvhEntryNotLoaded {
        /// The entry address.
        entry: u64,
        /// The loaded segments, as text.
        segments: String,
    },
    /// A bzImage does not fit in the guest's RAM.
    #[error(
        "the kernel needs {size:#x} bytes from {start:#x} to load and unpack itself, more than the guest's \
         RAM holds ({ram}): give the VM more memory"
    )]
    KernelOutsideRam {
        /// Load address.
        start: u64,
        /// Bytes needed from there.
        size: u64,
        /// The guest's RAM, as text.
        ram: String,
    },
    /// Writing guest memory failed (the guest is too small for the boot layout).
    #[error("cannot write {what} to guest memory: {source}")]
    Memory {
        /// Which structure.
        what: &'static str,
        /// Why.
        source: vm_memory::GuestMemoryError,
    },
}

pub(crate) fn write_bytes(mem: &GuestMemoryMmap, what: &'static str, addr: u64, bytes: &[u8]) -> Result<(), BootError> {
    mem.write_slice(bytes, GuestAddress(addr))
        .map_err(|source| BootError::Memory { what, source })
}

/// The guest's RAM as the boot protocols describe it: low memory up to the EBDA,
/// then everything from 1 MiB, then RAM above 4 GiB.
pub fn memory_map(mem: &GuestMemoryMmap) -> Vec<MemoryMapEntry> {
    let ram = |addr, size| MemoryMapEntry {
        addr,
        size,
        kind: E820_RAM,
    };
    let mut map = Vec::new();
    for region in mem.iter() {
        let start = region.start_addr().0;
        let end = start + region.len();
        if start == 0 {
            map.push(ram(0, end.min(EBDA_START)));
            if end > HIMEM_START {
                map.push(ram(HIMEM_START, end - HIMEM_START));
            }
        } else {
            map.push(ram(start, end - start));
        }
    }
    map
}

/// Writes the NUL-terminated command line at [`layout::CMDLINE_ADDR`].
/// `max` is the protocol's limit, NUL included.
pub fn write_cmdline(mem: &GuestMemoryMmap, cmdline: &str, max: usize) -> Result<u64, BootError> {
    if cmdline.as_bytes().contains(&0) {
        return Err(BootError::CmdlineHasNul);
    }
    let max = max.min(layout::CMDLINE_MAX_SIZE);
    let len = cmdline.len() + 1;
    if len > max {
        return Err(BootError::CmdlineTooLong { len, max });
    }
    let mut bytes = Vec::with_capacity(len);
    bytes.extend_from_slice(cmdline.as_bytes());
    bytes.push(0);
    write_bytes(mem, "the command line", layout::CMDLINE_ADDR, &bytes)?;
    Ok(layout::CMDLINE_ADDR)
}

/// Writes [`gdt::GDT`] at [`layout::GDT_ADDR`].
pub fn write_gdt(mem: &GuestMemoryMmap) -> Result<u64, BootError> {
    let bytes: Vec<u8> = gdt::GDT.iter().flat_map(|d| d.to_le_bytes()).collect();
    write_bytes(mem, "the GDT", layout::GDT_ADDR, &bytes)?;
    Ok(layout::GDT_ADDR)
}

/// Loads `image`, choosing the entry from its format: an ELF file boots through PVH,
/// anything else must be a bzImage.
pub fn load_kernel(
    mem: &GuestMemoryMmap,
    image: &[u8],
    cmdline: &str,
    initrd: Option<&[u8]>,
) -> Result<LoadedKernel, BootError> {
    if image.starts_with(b"\x7fELF") {
        pvh::load(mem, image, cmdline, initrd)
    } else if image.len() > 0x206 && image[0x202..0x206] == *b"HdrS" {
        bzimage::load(mem, image, cmdline, initrd)
    } else {
        Err(BootError::UnknownFormat)
    }
}

/// Where an initrd goes: as high as possible below `limit` (exclusive), page-aligned,
/// and above `kernel_end`.
pub(crate) fn place_initrd(size: u64, kernel_end: u64, limit: u64) -> Result<u64, BootError> {
    let no_room = BootError::NoRoomForInitrd {
        size,
        kernel_end,
        limit,
    };
    let addr = limit.checked_sub(size).ok_or(no_room)? & !0xfff;
    if addr < kernel_end || addr < HIMEM_START {
        return Err(BootError::NoRoomForInitrd {
            size,
            kernel_end,
            limit,
        });
    }
    Ok(addr)
}

/// End (exclusive) of the RAM region that starts at 0.
pub(crate) fn low_memory_end(mem: &GuestMemoryMmap) -> u64 {
    mem.iter().find(|r| r.start_addr().0 == 0).map(|r| r.len()).unwrap_or(0)
}

/// Whether `[start, start + size)` lies within one RAM region of the guest.
pub(crate) fn in_ram(mem: &GuestMemoryMmap, start: u64, size: u64) -> bool {
    let Some(end) = start.checked_add(size) else {
        return false;
    };
    mem.iter().any(|r| {
        let (r_start, r_end) = (r.start_addr().0, r.start_addr().0 + r.len());
        r_start <= start && end <= r_end
    })
}

/// The guest's RAM as messages give it: its size and where it is.
pub(crate) fn ram_text(mem: &GuestMemoryMmap) -> String {
    let total: u64 = mem.iter().map(|r| r.len()).sum();
    let ranges: Vec<String> = mem
        .iter()
        .map(|r| format!("{:#x}..{:#x}", r.start_addr().0, r.start_addr().0 + r.len()))
        .collect();
    let size = if total.is_multiple_of(1 << 20) {
        format!("{} MiB", total >> 20)
    } else {
        format!("{total} bytes")
    };
    format!("{size} at {}", ranges.join(" and "))
}
