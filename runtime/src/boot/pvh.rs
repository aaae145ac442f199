//! The PVH entry (Xen's "x86/HVM direct boot ABI", also used by QEMU, Firecracker and
//! Cloud Hypervisor): an ELF kernel names a 32-bit physical entry point in a
//! `XEN_ELFNOTE_PHYS32_ENTRY` (type 18) note; the loader puts `hvm_start_info`
//! (magic 0x336ec578, version 1) in memory and starts the vCPU at that entry in 32-bit
//! protected mode, paging off, with `ebx` = the start_info address.
//!
//! `hvm_start_info` layout (all little-endian):
//! `0x00 magic u32, 0x04 version u32, 0x08 flags u32, 0x0c nr_modules u32,
//!  0x10 modlist_paddr u64, 0x18 cmdline_paddr u64, 0x20 rsdp_paddr u64,
//!  0x28 memmap_paddr u64, 0x30 memmap_entries u32, 0x34 reserved u32`.
//! A memmap entry is `addr u64, size u64, type u32, reserved u32` (24 bytes); a module
//! entry is `paddr u64, size u64, cmdline_paddr u64, reserved u64`. An initrd is
//! passed as module 0.

use std::io::Cursor;

use linux_loader::loader::elf::start_info::{hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info};
use linux_loader::loader::{Elf, KernelLoader, PvhBootCapability};
use vm_memory::{ByteValued, GuestAddress, GuestMemoryMmap};

use super::layout::{CMDLINE_MAX_SIZE, PVH_MEMMAP_ADDR, PVH_MEMMAP_MAX_ENTRIES, PVH_MODLIST_ADDR, PVH_START_INFO_ADDR};
use super::{
    in_ram, low_memory_end, memory_map, place_initrd, ram_text, write_bytes, write_cmdline, write_gdt, BootError,
    CpuMode, EntryState, LoadedKernel, MemoryMapEntry,
};
use crate::vm::layout::{HIMEM_START, MMIO_HOLE_END, MMIO_HOLE_START};

/// `hvm_start_info.magic`.
pub const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;
/// The ELF note type naming the 32-bit PVH entry point.
pub const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

/// Loads an ELF kernel and lays out everything the PVH entry needs.
pub fn load(
    mem: &GuestMemoryMmap,
    image: &[u8],
    cmdline: &str,
    initrd: Option<&[u8]>,
) -> Result<LoadedKernel, BootError> {
    let segments = check_segments(mem, image)?;
    let loaded = Elf::load(mem, None, &mut Cursor::new(image), Some(GuestAddress(HIMEM_START)))?;
    let entry = match loaded.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(addr) => addr.0,
        _ => return Err(BootError::NoPvhEntry),
    };
    check_entry(mem, entry, &segments)?;
    let kernel_end = loaded.kernel_end;
    let initrd = match initrd {
        Some(bytes) => {
            let size = bytes.len() as u64;
            let addr = place_initrd(size, kernel_end, low_memory_end(mem))?;
            write_bytes(mem, "the initrd", addr, bytes)?;
            Some((addr, size))
        }
        None => None,
    };
    let cmdline_addr = write_cmdline(mem, cmdline, CMDLINE_MAX_SIZE)?;
    let map = memory_map(mem);
    write_start_info(mem, cmdline_addr, &map, initrd)?;
    let gdt_base = write_gdt(mem)?;
    Ok(LoadedKernel {
        entry: EntryState {
            mode: CpuMode::Protected32,
            ip: entry,
            sp: 0,
            rbx: PVH_START_INFO_ADDR,
            rsi: 0,
            gdt_base,
            cr3: 0,
        },
        kernel_start: loaded.kernel_load.0,
        kernel_end,
        initrd,
        memory_map: map,
    })
}

/// `PT_LOAD`.
const PT_LOAD: u32 = 1;
/// Size of an ELF64 header.
const EHDR_SIZE: usize = 64;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// A loadable segment: where it goes in guest memory, and how many bytes it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Guest physical address (`p_paddr`).
    pub start: u64,
    /// Bytes in memory (`p_memsz`, bss included).
    pub size: u64,
}

/// Reads an ELF64 kernel's loadable segments and checks that each lies in the file and
/// in guest RAM at or above 1 MiB, before anything is written: a kernel that does not
/// fit is refused with its segment's address and size and the RAM's, rather than with
/// the loader's "unable to read kernel image". A header the loader itself refuses
/// (another class or byte order) is left to it.
pub fn check_segments(mem: &GuestMemoryMmap, image: &[u8]) -> Result<Vec<Segment>, BootError> {
    if image.len() < EHDR_SIZE || image[4] != 2 || image[5] != 1 {
        return Ok(Vec::new());
    }
    let (Some(entry), Some(phoff), Some(phentsize), Some(phnum)) = (
        u64_at(image, 0x18),
        u64_at(image, 0x20),
        u16_at(image, 0x36),
        u16_at(image, 0x38),
    ) else {
        return Ok(Vec::new());
    };
    if entry < HIMEM_START {
        return Err(BootError::ElfEntryInBootArea(entry));
    }
    let table_end = u64::from(phentsize)
        .checked_mul(u64::from(phnum))
        .and_then(|n| n.checked_add(phoff));
    if phnum > 0 && (phentsize < 56 || table_end.is_none_or(|end| end > image.len() as u64)) {
        return Err(BootError::ProgramHeadersBeyondFile {
            offset: phoff,
            count: phnum,
            size: phentsize,
            len: image.len(),
        });
    }
    let mut segments = Vec::new();
    for index in 0..usize::from(phnum) {
        let at = phoff as usize + index * usize::from(phentsize);
        let field = |off: usize| u64_at(image, at + off).unwrap_or(0);
        if u32_at(image, at) != Some(PT_LOAD) {
            continue;
        }
        let (offset, start, filesz, memsz) = (field(8), field(24), field(32), field(40));
        if filesz > 0 && offset.checked_add(filesz).is_none_or(|end| end > image.len() as u64) {
            return Err(BootError::SegmentBeyondFile {
                index,
                offset,
                size: filesz,
                len: image.len(),
            });
        }
        let size = memsz.max(filesz);
        if size == 0 {
            continue;
        }
        if start < HIMEM_START {
            return Err(BootError::SegmentInBootArea { index, start, size });
        }
        if !in_ram(mem, start, size) {
            return Err(BootError::SegmentOutsideRam {
                index,
                start,
                size,
                ram: ram_text(mem),
            });
        }
        segments.push(Segment { start, size });
    }
    Ok(segments)
}

/// Checks that the PVH entry point is code the kernel loaded, in RAM: the vCPU starts
/// there, and anywhere else it would fault at once.
pub fn check_entry(mem: &GuestMemoryMmap, entry: u64, segments: &[Segment]) -> Result<(), BootError> {
    if (MMIO_HOLE_START..MMIO_HOLE_END).contains(&entry) {
        return Err(BootError::PvhEntryInMmioHole {
            entry,
            hole_start: MMIO_HOLE_START,
            hole_end: MMIO_HOLE_END,
        });
    }
    if !in_ram(mem, entry, 1) {
        return Err(BootError::PvhEntryOutsideRam {
            entry,
            ram: ram_text(mem),
        });
    }
    if !segments.iter().any(|s| (s.start..s.start + s.size).contains(&entry)) {
        let list: Vec<String> = segments
            .iter()
            .map(|s| format!("{:#x}..{:#x}", s.start, s.start + s.size))
            .collect();
        return Err(BootError::PvhEntryNotLoaded {
            entry,
            segments: if list.is_empty() {
                "none".to_string()
            } else {
                list.join(", ")
            },
        });
    }
    Ok(())
}

/// Writes `hvm_start_info`, its memory map and (with an initrd) its module list.
pub fn write_start_info(
    mem: &GuestMemoryMmap,
    cmdline_addr: u64,
    map: &[MemoryMapEntry],
    initrd: Option<(u64, u64)>,
) -> Result<(), BootError> {
    if map.len() > PVH_MEMMAP_MAX_ENTRIES {
        return Err(BootError::TooManyMemoryMapEntries(map.len()));
    }
    let mut entries = Vec::new();
    for e in map {
        let entry = hvm_memmap_table_entry {
            addr: e.addr,
            size: e.size,
            type_: e.kind,
            reserved: 0,
        };
        entries.extend_from_slice(entry.as_slice());
    }
    write_bytes(mem, "the PVH memory map", PVH_MEMMAP_ADDR, &entries)?;

    let mut info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: 1,
        cmdline_paddr: cmdline_addr,
        memmap_paddr: PVH_MEMMAP_ADDR,
        memmap_entries: map.len() as u32,
        ..Default::default()
    };
    if let Some((paddr, size)) = initrd {
        let module = hvm_modlist_entry {
            paddr,
            size,
            ..Default::default()
        };
        write_bytes(mem, "the PVH module list", PVH_MODLIST_ADDR, module.as_slice())?;
        info.nr_modules = 1;
        info.modlist_paddr = PVH_MODLIST_ADDR;
    }
    write_bytes(mem, "hvm_start_info", PVH_START_INFO_ADDR, info.as_slice())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::load_kernel;
    use crate::vm::layout::create_guest_memory;

    const MIB: u64 = 1 << 20;

    fn load(memory: u64, image: &[u8]) -> Result<LoadedKernel, BootError> {
        let mem = create_guest_memory(memory).unwrap();
        load_kernel(&mem, image, "", None)
    }

    /// A kernel of `size` bytes of `hlt` loaded at `at` (`bss` more bytes in memory),
    /// entered at `entry`, laid out as a linker would: the ELF64 header, a PT_LOAD and a
    /// PT_NOTE with the `Xen` note naming the entry, and the code at 4 KiB.
    fn kernel(at: u32, entry: u32, size: usize, bss: u64) -> Vec<u8> {
        const PHDR_SIZE: u16 = 56;
        const CODE_OFFSET: u64 = 0x1000;
        let mut note = Vec::new();
        for word in [4, 4, XEN_ELFNOTE_PHYS32_ENTRY] {
            note.extend(word.to_le_bytes()); // namesz, descsz, type
        }
        note.extend(b"Xen\0");
        note.extend(entry.to_le_bytes());

        let mut elf = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0".to_vec(); // ELFCLASS64, little-endian
        elf.extend(2u16.to_le_bytes()); // ET_EXEC
        elf.extend(62u16.to_le_bytes()); // EM_X86_64
        elf.extend(1u32.to_le_bytes()); // EV_CURRENT
        for word in [u64::from(entry), EHDR_SIZE as u64, 0] {
            elf.extend(word.to_le_bytes()); // e_entry, e_phoff, e_shoff
        }
        elf.extend(0u32.to_le_bytes()); // e_flags
        for half in [EHDR_SIZE as u16, PHDR_SIZE, 2, 64, 0, 0] {
            elf.extend(half.to_le_bytes()); // e_ehsize, e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx
        }
        let (size, note_len) = (size as u64, note.len() as u64);
        let note_offset = EHDR_SIZE as u64 + 2 * u64::from(PHDR_SIZE);
        // (type, flags, offset, address, bytes in the file, bytes in memory, alignment)
        for (kind, flags, offset, addr, filesz, memsz, align) in [
            (PT_LOAD, 7u32, CODE_OFFSET, u64::from(at), size, size + bss, 0x1000), // read, write, execute
            (4, 4, note_offset, 0, note_len, note_len, 4),                         // PT_NOTE, read
        ] {
            elf.extend(kind.to_le_bytes());
            elf.extend(flags.to_le_bytes());
            for word in [offset, addr, addr, filesz, memsz, align] {
                elf.extend(word.to_le_bytes()); // p_vaddr = p_paddr
            }
        }
        elf.extend(note);
        elf.resize(CODE_OFFSET as usize, 0);
        elf.resize(elf.len() + size as usize, 0xf4);
        elf
    }

    #[test]
    fn a_kernel_that_fits_loads() {
        let loaded = load(16 * MIB, &kernel(0x10_0000, 0x10_0010, 4096, 0)).unwrap();
        assert_eq!(loaded.entry.ip, 0x10_0010);
    }

    #[test]
    fn a_segment_outside_ram_is_named_with_its_place_and_the_rams() {
        let err = load(16 * MIB, &kernel(0xf0_0000, 0xf0_0000, 2 * MIB as usize, 0)).unwrap_err();
        assert!(
            matches!(
                err,
                BootError::SegmentOutsideRam {
                    index: 0,
                    start: 0xf0_0000,
                    size: 0x20_0000,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "the kernel's segment 0 is 0x200000 bytes at 0xf00000, outside the guest's RAM (16 MiB at 0x0..0x1000000): \
             give the VM more memory, or use a kernel linked to load within it"
        );
        // Its bss counts: the kernel uses that memory as soon as it runs.
        let err = load(16 * MIB, &kernel(0x10_0000, 0x10_0000, 4096, 64 * MIB)).unwrap_err();
        assert!(
            matches!(err, BootError::SegmentOutsideRam { size: 0x400_1000, .. }),
            "{err:?}"
        );
        // In the MMIO hole, or above 4 GiB with no RAM there.
        for at in [0xc000_0000u32, 0xfeb0_0000] {
            let err = load(16 * MIB, &kernel(at, at, 4096, 0)).unwrap_err();
            assert!(matches!(err, BootError::SegmentOutsideRam { .. }), "{at:#x}: {err:?}");
        }
    }

    #[test]
    fn a_segment_below_one_mib_would_overwrite_the_boot_structures() {
        let err = load(16 * MIB, &kernel(0x8000, 0x10_0000, 4096, 0)).unwrap_err();
        assert!(
            matches!(err, BootError::SegmentInBootArea { start: 0x8000, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn a_pvh_entry_outside_what_was_loaded_is_refused_before_running() {
        let err = load(16 * MIB, &kernel(0x10_0000, 0xfeb0_0000, 4096, 0)).unwrap_err();
        assert!(
            matches!(err, BootError::PvhEntryInMmioHole { entry: 0xfeb0_0000, .. }),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .contains("0xfeb00000 is in the MMIO hole (0xc0000000..0x100000000)"),
            "{err}"
        );
        let err = load(16 * MIB, &kernel(0x10_0000, 0x2000_0000, 4096, 0)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the kernel's PVH entry point 0x20000000 is outside the guest's RAM (16 MiB at 0x0..0x1000000)"
        );
        let err = load(16 * MIB, &kernel(0x10_0000, 0x80_0000, 4096, 0)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the kernel's PVH entry point 0x800000 is not in any segment the kernel loads (0x100000..0x101000)"
        );
        let mut image = kernel(0x10_0000, 0x500, 4096, 0);
        let err = load(16 * MIB, &image).unwrap_err();
        assert!(matches!(err, BootError::ElfEntryInBootArea(0x500)), "{err:?}");
        // The ELF header's entry is where a 64-bit loader would start; PVH has its own.
        image[0x18..0x20].copy_from_slice(&0x10_0000u64.to_le_bytes());
        let err = load(16 * MIB, &image).unwrap_err();
        assert!(
            matches!(err, BootError::PvhEntryNotLoaded { entry: 0x500, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn a_truncated_image_says_so() {
        let image = kernel(0x10_0000, 0x10_0000, 8192, 0);
        let err = load(16 * MIB, &image[..image.len() - 100]).unwrap_err();
        assert!(matches!(err, BootError::SegmentBeyondFile { index: 0, .. }), "{err:?}");
        let mut image = kernel(0x10_0000, 0x10_0000, 8192, 0);
        image[0x38..0x3a].copy_from_slice(&500u16.to_le_bytes());
        let err = load(16 * MIB, &image).unwrap_err();
        assert!(
            matches!(err, BootError::ProgramHeadersBeyondFile { count: 500, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn ram_above_the_hole_is_ram() {
        let mem = create_guest_memory(4096 * MIB).unwrap();
        assert!(in_ram(&mem, 0x1_0000_0000, MIB));
        assert!(!in_ram(&mem, 0xbfff_f000, 0x2000));
        assert_eq!(
            ram_text(&mem),
            "4096 MiB at 0x0..0xc0000000 and 0x100000000..0x140000000"
        );
        let segments = [Segment {
            start: 0x1_0000_0000,
            size: MIB,
        }];
        assert!(check_entry(&mem, 0x1_0000_0000, &segments).is_ok());
    }
}
