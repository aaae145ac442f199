//! A bzImage through the Linux 64-bit boot protocol (Documentation/arch/x86/boot.rst).
//!
//! The protected-mode kernel is loaded at `code32_start` (1 MiB), the zero page
//! (`struct boot_params`) gets the image's setup header, our loader id, the command
//! line pointer, the e820 map and the initrd; the vCPU starts at load address + 0x200
//! in long mode, `rsi` = zero page, on identity-mapped page tables and the boot GDT
//! whose `__BOOT_CS`/`__BOOT_DS` are 0x10/0x18.

use std::io::Cursor;

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::{BzImage, KernelLoader};
use vm_memory::{ByteValued, GuestAddress, GuestMemoryMmap};

use super::layout::{BOOT_STACK_POINTER, ZERO_PAGE_ADDR};
use super::{
    in_ram, low_memory_end, memory_map, paging, place_initrd, ram_text, write_bytes, write_cmdline, write_gdt,
    BootError, CpuMode, EntryState, LoadedKernel,
};
use crate::vm::layout::HIMEM_START;

/// `boot_flag`: the 0xAA55 signature.
pub const BOOT_FLAG: u16 = 0xaa55;
/// `type_of_loader` for a loader without an assigned id.
pub const LOADER_TYPE_UNDEFINED: u8 = 0xff;
/// `loadflags` bit: the protected-mode kernel is loaded at 1 MiB.
pub const LOADED_HIGH: u8 = 0x01;
/// `loadflags` bit: `heap_end_ptr` is valid.
pub const CAN_USE_HEAP: u8 = 0x80;
/// `xloadflags` bit: the kernel has the 64-bit entry at load address + 0x200.
pub const XLF_KERNEL_64: u16 = 0x01;
/// Offset of the 64-bit entry from the load address.
pub const STARTUP_64_OFFSET: u64 = 0x200;
/// `initrd_addr_max` for protocols before 2.03.
pub const DEFAULT_INITRD_ADDR_MAX: u64 = 0x37ff_ffff;
/// `cmdline_size` for protocols before 2.06.
pub const DEFAULT_CMDLINE_SIZE: usize = 256;
/// How many e820 entries the zero page holds.
pub const E820_MAX_ENTRIES: usize = 128;

/// Checks, before anything is written, that the protected-mode kernel fits in RAM at
/// its load address, with the room it says it needs to unpack itself (`init_size`,
/// boot protocol 2.10 and later). A header the loader refuses is left to it.
pub fn check_fits(mem: &GuestMemoryMmap, image: &[u8]) -> Result<(), BootError> {
    let u8_at = |at: usize| image.get(at).copied();
    let u16_at = |at: usize| Some(u16::from_le_bytes(image.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(image.get(at..at + 4)?.try_into().ok()?));
    let (Some(setup_sects), Some(version), Some(code32_start)) = (u8_at(0x1f1), u16_at(0x206), u32_at(0x214)) else {
        return Ok(());
    };
    let setup = (usize::from(if setup_sects == 0 { 4 } else { setup_sects }) + 1) * 512;
    let Some(payload) = image.len().checked_sub(setup) else {
        return Ok(());
    };
    let init_size = if version >= 0x020a {
        u32_at(0x260).unwrap_or(0)
    } else {
        0
    };
    let start = u64::from(code32_start);
    let size = (payload as u64).max(u64::from(init_size));
    if start >= HIMEM_START && !in_ram(mem, start, size) {
        return Err(BootError::KernelOutsideRam {
            start,
            size,
            ram: ram_text(mem),
        });
    }
    Ok(())
}

/// Loads a bzImage and lays out the zero page, command line, e820 map, initrd and
/// page tables for the 64-bit entry.
pub fn load(
    mem: &GuestMemoryMmap,
    image: &[u8],
    cmdline: &str,
    initrd: Option<&[u8]>,
) -> Result<LoadedKernel, BootError> {
    check_fits(mem, image)?;
    let loaded = BzImage::load(mem, None, &mut Cursor::new(image), Some(GuestAddress(HIMEM_START)))?;
    // The loader always returns the header for a bzImage.
    let mut params = boot_params {
        hdr: loaded.setup_header.unwrap_or_default(),
        ..Default::default()
    };
    let version = params.hdr.version;
    let xloadflags = params.hdr.xloadflags;
    if version < 0x020c || xloadflags & XLF_KERNEL_64 == 0 {
        return Err(BootError::No64BitEntry { version, xloadflags });
    }

    params.hdr.type_of_loader = LOADER_TYPE_UNDEFINED;
    params.hdr.boot_flag = BOOT_FLAG;
    // No real-mode setup code runs, so there is no heap to speak of.
    params.hdr.loadflags &= !CAN_USE_HEAP;

    let cmdline_size = match params.hdr.cmdline_size {
        0 => DEFAULT_CMDLINE_SIZE,
        // cmdline_size excludes the terminating NUL.
        n => n as usize + 1,
    };
    let cmdline_addr = write_cmdline(mem, cmdline, cmdline_size)?;
    params.hdr.cmd_line_ptr = cmdline_addr as u32;
    params.ext_cmd_line_ptr = (cmdline_addr >> 32) as u32;

    let kernel_end = loaded.kernel_end;
    let initrd = match initrd {
        Some(bytes) => {
            let size = bytes.len() as u64;
            let addr_max = match params.hdr.initrd_addr_max {
                0 => DEFAULT_INITRD_ADDR_MAX,
                n => u64::from(n),
            };
            // initrd_addr_max is the highest address the initrd may *occupy*.
            let limit = low_memory_end(mem).min(addr_max + 1);
            let addr = place_initrd(size, kernel_end, limit)?;
            write_bytes(mem, "the initrd", addr, bytes)?;
            params.hdr.ramdisk_image = addr as u32;
            params.hdr.ramdisk_size = size as u32;
            params.ext_ramdisk_image = (addr >> 32) as u32;
            params.ext_ramdisk_size = (size >> 32) as u32;
            Some((addr, size))
        }
        None => None,
    };

    let map = memory_map(mem);
    if map.len() > E820_MAX_ENTRIES {
        return Err(BootError::TooManyMemoryMapEntries(map.len()));
    }
    for (slot, e) in params.e820_table.iter_mut().zip(&map) {
        *slot = boot_e820_entry {
            addr: e.addr,
            size: e.size,
            r#type: e.kind,
        };
    }
    params.e820_entries = map.len() as u8;
    write_bytes(mem, "the zero page", ZERO_PAGE_ADDR, params.as_slice())?;

    let gdt_base = write_gdt(mem)?;
    let cr3 = paging::write_identity_map(mem)?;
    Ok(LoadedKernel {
        entry: EntryState {
            mode: CpuMode::Long64,
            ip: loaded.kernel_load.0 + STARTUP_64_OFFSET,
            sp: BOOT_STACK_POINTER,
            rbx: 0,
            rsi: ZERO_PAGE_ADDR,
            gdt_base,
            cr3,
        },
        kernel_start: loaded.kernel_load.0,
        kernel_end,
        initrd,
        memory_map: map,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::layout::create_guest_memory;

    const MIB: u64 = 1 << 20;

    /// A bzImage header (protocol 2.12, 64-bit entry) and `payload` bytes of kernel.
    fn bzimage(payload: usize, init_size: u32) -> Vec<u8> {
        let setup_sects = 4u8;
        let mut image = vec![0u8; (usize::from(setup_sects) + 1) * 512 + payload];
        image[0x1f1] = setup_sects;
        image[0x202..0x206].copy_from_slice(b"HdrS");
        image[0x206..0x208].copy_from_slice(&0x020cu16.to_le_bytes());
        image[0x211] = LOADED_HIGH;
        image[0x214..0x218].copy_from_slice(&0x10_0000u32.to_le_bytes());
        image[0x236..0x238].copy_from_slice(&XLF_KERNEL_64.to_le_bytes());
        image[0x260..0x264].copy_from_slice(&init_size.to_le_bytes());
        image
    }

    #[test]
    fn a_kernel_larger_than_ram_is_named_with_its_size_and_the_rams() {
        let mem = create_guest_memory(8 * MIB).unwrap();
        assert!(load(&mem, &bzimage(4096, 0), "", None).is_ok());
        let err = load(&mem, &bzimage(8 * MIB as usize, 0), "", None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the kernel needs 0x800000 bytes from 0x100000 to load and unpack itself, more than the guest's RAM \
             holds (8 MiB at 0x0..0x800000): give the VM more memory"
        );
        // The room it needs to unpack counts, not only the file.
        let err = load(&mem, &bzimage(4096, 16 << 20), "", None).unwrap_err();
        assert!(
            matches!(err, BootError::KernelOutsideRam { size: 0x100_0000, .. }),
            "{err:?}"
        );
    }
}
