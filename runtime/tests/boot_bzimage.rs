//! The Linux 64-bit boot protocol: zero page, e820, command line, initrd and page
//! tables, read back field by field from a synthetic bzImage (no KVM needed).

#[path = "vm_support.rs"]
mod support;

use linux_loader::loader::bootparam::boot_params;
use support::SETUP_SECTS;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmc_runtime::boot::bzimage::{LOADER_TYPE_UNDEFINED, XLF_KERNEL_64};
use vmc_runtime::boot::layout::{CMDLINE_ADDR, PML4_ADDR, ZERO_PAGE_ADDR};
use vmc_runtime::boot::{self, BootError, CpuMode, E820_RAM};
use vmc_runtime::vm::layout::create_guest_memory;

const MIB: u64 = 1 << 20;
const PAYLOAD: usize = 20_000;

/// A bzImage with a real setup header and a recognisable protected-mode payload.
fn bzimage(version: u16, xloadflags: u16, initrd_addr_max: u32) -> Vec<u8> {
    let payload: Vec<u8> = (0..PAYLOAD).map(|i| (i % 251) as u8).collect();
    support::synthetic_bzimage(version, xloadflags, initrd_addr_max, &payload)
}

fn zero_page(mem: &GuestMemoryMmap) -> boot_params {
    mem.read_obj(GuestAddress(ZERO_PAGE_ADDR)).unwrap()
}

#[test]
fn zero_page_carries_header_loader_cmdline_and_e820() {
    let mem = create_guest_memory(64 * MIB).unwrap();
    let image = bzimage(0x020f, XLF_KERNEL_64, 0x7fff_ffff);
    let loaded = boot::load_kernel(&mem, &image, "console=ttyS0 root=/dev/vda", None).unwrap();
    let zp = zero_page(&mem);

    assert_eq!({ zp.hdr.header }, 0x5372_6448);
    assert_eq!({ zp.hdr.boot_flag }, 0xaa55);
    assert_eq!({ zp.hdr.version }, 0x020f);
    assert_eq!(zp.hdr.type_of_loader, LOADER_TYPE_UNDEFINED);
    assert_eq!({ zp.hdr.code32_start }, 0x10_0000);
    assert_eq!({ zp.hdr.cmd_line_ptr }, CMDLINE_ADDR as u32);
    assert_eq!({ zp.ext_cmd_line_ptr }, 0);
    let mut cmdline = vec![0u8; 28];
    mem.read_slice(&mut cmdline, GuestAddress(CMDLINE_ADDR)).unwrap();
    assert_eq!(&cmdline, b"console=ttyS0 root=/dev/vda\0");
    assert_eq!({ zp.hdr.ramdisk_image }, 0);
    assert_eq!({ zp.hdr.ramdisk_size }, 0);

    assert_eq!(zp.e820_entries, 2);
    let e820: Vec<(u64, u64, u32)> = zp.e820_table[..2]
        .iter()
        .map(|e| ({ e.addr }, { e.size }, { e.r#type }))
        .collect();
    assert_eq!(e820, [(0, 0x9fc00, E820_RAM), (0x10_0000, 63 * MIB, E820_RAM)]);

    // The protected-mode kernel (everything after the setup sectors) is at 1 MiB.
    let mut payload = vec![0u8; PAYLOAD];
    mem.read_slice(&mut payload, GuestAddress(0x10_0000)).unwrap();
    assert_eq!(payload, image[(usize::from(SETUP_SECTS) + 1) * 512..]);
    assert_eq!(loaded.kernel_start, 0x10_0000);
    assert_eq!(loaded.kernel_end, 0x10_0000 + PAYLOAD as u64);
}

#[test]
fn entry_is_long_mode_at_startup_64_with_rsi_at_the_zero_page() {
    let mem = create_guest_memory(64 * MIB).unwrap();
    let loaded = boot::load_kernel(&mem, &bzimage(0x020f, XLF_KERNEL_64, 0x7fff_ffff), "", None).unwrap();
    let e = loaded.entry;
    assert_eq!(e.mode, CpuMode::Long64);
    assert_eq!(e.ip, 0x10_0200, "load address + 0x200");
    assert_eq!(e.rsi, ZERO_PAGE_ADDR);
    assert_eq!(e.cr3, PML4_ADDR);
    assert!(e.sp != 0);
}

#[test]
fn page_tables_identity_map_the_first_4gib_with_2mib_pages() {
    let mem = create_guest_memory(16 * MIB).unwrap();
    let loaded = boot::load_kernel(&mem, &bzimage(0x020f, XLF_KERNEL_64, 0x7fff_ffff), "", None).unwrap();
    let read = |addr: u64| -> u64 { mem.read_obj(GuestAddress(addr)).unwrap() };
    // Walk the tables by hand for a few addresses, the device window included.
    for vaddr in [0u64, 0x10_0200, 0x3fff_ffff, 0xfeb0_0e00, 0xffff_ffff] {
        let pml4e = read(loaded.entry.cr3 + 8 * ((vaddr >> 39) & 0x1ff));
        assert_eq!(pml4e & 1, 1, "PML4E present for {vaddr:#x}");
        let pdpte = read((pml4e & !0xfff) + 8 * ((vaddr >> 30) & 0x1ff));
        assert_eq!(pdpte & 1, 1, "PDPTE present for {vaddr:#x}");
        let pde = read((pdpte & !0xfff) + 8 * ((vaddr >> 21) & 0x1ff));
        assert_eq!(pde & 0x83, 0x83, "present, writable, 2 MiB page for {vaddr:#x}");
        let paddr = (pde & !0x1f_ffff & 0x000f_ffff_ffff_f000) | (vaddr & 0x1f_ffff);
        assert_eq!(paddr, vaddr);
    }
}

#[test]
fn initrd_goes_as_high_as_the_header_allows_page_aligned() {
    let mem = create_guest_memory(256 * MIB).unwrap();
    let initrd: Vec<u8> = (0..50_000u32).map(|i| (i * 7) as u8).collect();
    // initrd_addr_max below the end of RAM: it is the limit.
    let image = bzimage(0x020f, XLF_KERNEL_64, 0x07ff_ffff);
    let loaded = boot::load_kernel(&mem, &image, "", Some(&initrd)).unwrap();
    let zp = zero_page(&mem);
    let (addr, size) = (u64::from(zp.hdr.ramdisk_image), u64::from(zp.hdr.ramdisk_size));
    assert_eq!(Some((addr, size)), loaded.initrd);
    assert_eq!(size, initrd.len() as u64);
    assert_eq!(addr % 4096, 0);
    assert!(addr + size <= 0x0800_0000, "whole initrd at or below initrd_addr_max");
    assert!(addr + size > 0x0800_0000 - 4096, "as high as possible");
    assert_eq!({ zp.ext_ramdisk_image }, 0);
    let mut copy = vec![0u8; initrd.len()];
    mem.read_slice(&mut copy, GuestAddress(addr)).unwrap();
    assert_eq!(copy, initrd);

    // RAM smaller than initrd_addr_max: the end of RAM is the limit.
    let mem = create_guest_memory(32 * MIB).unwrap();
    let image = bzimage(0x020f, XLF_KERNEL_64, 0x7fff_ffff);
    let loaded = boot::load_kernel(&mem, &image, "", Some(&initrd)).unwrap();
    let (addr, size) = loaded.initrd.unwrap();
    assert!(addr + size <= 32 * MIB && addr + size > 32 * MIB - 4096);
}

#[test]
fn kernels_without_a_64bit_entry_are_refused() {
    let mem = create_guest_memory(16 * MIB).unwrap();
    assert!(matches!(
        boot::load_kernel(&mem, &bzimage(0x020f, 0, 0x7fff_ffff), "", None),
        Err(BootError::No64BitEntry {
            version: 0x020f,
            xloadflags: 0
        })
    ));
    assert!(matches!(
        boot::load_kernel(&mem, &bzimage(0x020a, XLF_KERNEL_64, 0x7fff_ffff), "", None),
        Err(BootError::No64BitEntry { .. })
    ));
}

#[test]
fn the_command_line_must_fit_the_headers_cmdline_size() {
    let mem = create_guest_memory(16 * MIB).unwrap();
    let image = bzimage(0x020f, XLF_KERNEL_64, 0x7fff_ffff);
    assert!(boot::load_kernel(&mem, &image, &"y".repeat(2047), None).is_ok());
    assert!(matches!(
        boot::load_kernel(&mem, &image, &"y".repeat(2048), None),
        Err(BootError::CmdlineTooLong { len: 2049, max: 2048 })
    ));
}
