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
    low_memory_end, memory_map, place_initrd, write_bytes, write_cmdline, write_gdt, BootError, CpuMode, EntryState,
    LoadedKernel, MemoryMapEntry,
};
use crate::vm::layout::HIMEM_START;

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
    let loaded = Elf::load(mem, None, &mut Cursor::new(image), Some(GuestAddress(HIMEM_START)))?;
    let entry = match loaded.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(addr) => addr.0,
        _ => return Err(BootError::NoPvhEntry),
    };
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
