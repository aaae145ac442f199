//! The PVH loader's layout, read back field by field (no KVM needed).

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmc_runtime::boot::layout::{GDT_ADDR, PVH_START_INFO_ADDR};
use vmc_runtime::boot::{self, gdt, BootError, CpuMode, MemoryMapEntry, E820_RAM};
use vmc_runtime::vm::layout::create_guest_memory;

const MIB: u64 = 1 << 20;

fn u32_at(mem: &GuestMemoryMmap, addr: u64) -> u32 {
    mem.read_obj(GuestAddress(addr)).unwrap()
}
fn u64_at(mem: &GuestMemoryMmap, addr: u64) -> u64 {
    mem.read_obj(GuestAddress(addr)).unwrap()
}
fn c_string_at(mem: &GuestMemoryMmap, addr: u64) -> String {
    let mut bytes = Vec::new();
    for i in 0.. {
        let b: u8 = mem.read_obj(GuestAddress(addr + i)).unwrap();
        if b == 0 {
            break;
        }
        bytes.push(b);
    }
    String::from_utf8(bytes).unwrap()
}

#[test]
fn start_info_holds_magic_cmdline_memmap_and_initrd_module() {
    let mem = create_guest_memory(64 * MIB).unwrap();
    let image = vmc_selftest::build_image().unwrap();
    let initrd = vec![0xa5u8; 10_000];
    let loaded = boot::load_kernel(&mem, &image, "console=ttyS0 quiet", Some(&initrd)).unwrap();

    let si = PVH_START_INFO_ADDR;
    assert_eq!(u32_at(&mem, si), 0x336e_c578, "magic");
    assert_eq!(u32_at(&mem, si + 0x04), 1, "version");
    assert_eq!(u32_at(&mem, si + 0x08), 0, "flags");
    assert_eq!(u32_at(&mem, si + 0x0c), 1, "nr_modules");
    assert_eq!(u64_at(&mem, si + 0x20), 0, "rsdp_paddr: no ACPI");
    let cmdline = u64_at(&mem, si + 0x18);
    assert_eq!(c_string_at(&mem, cmdline), "console=ttyS0 quiet");

    let memmap = u64_at(&mem, si + 0x28);
    let entries = u32_at(&mem, si + 0x30);
    assert_eq!(entries, 2);
    let read_entry = |i: u64| {
        let e = memmap + i * 24;
        (u64_at(&mem, e), u64_at(&mem, e + 8), u32_at(&mem, e + 16))
    };
    assert_eq!(read_entry(0), (0, 0x9fc00, E820_RAM));
    assert_eq!(read_entry(1), (0x10_0000, 63 * MIB, E820_RAM));
    assert_eq!(
        loaded.memory_map,
        vec![
            MemoryMapEntry {
                addr: 0,
                size: 0x9fc00,
                kind: E820_RAM
            },
            MemoryMapEntry {
                addr: 0x10_0000,
                size: 63 * MIB,
                kind: E820_RAM
            },
        ]
    );

    let module = u64_at(&mem, si + 0x10);
    let (paddr, size) = (u64_at(&mem, module), u64_at(&mem, module + 8));
    assert_eq!(Some((paddr, size)), loaded.initrd);
    assert_eq!(size, 10_000);
    assert_eq!(paddr % 4096, 0, "page-aligned");
    assert!(paddr >= loaded.kernel_end, "above the kernel");
    assert!(paddr + size <= 64 * MIB, "inside RAM");
    let mut copy = vec![0u8; initrd.len()];
    mem.read_slice(&mut copy, GuestAddress(paddr)).unwrap();
    assert_eq!(copy, initrd);
}

#[test]
fn entry_is_32bit_protected_mode_at_the_elf_note_address() {
    let mem = create_guest_memory(16 * MIB).unwrap();
    let image = vmc_selftest::build_image().unwrap();
    let loaded = boot::load_kernel(&mem, &image, "", None).unwrap();
    let entry = loaded.entry;
    assert_eq!(entry.mode, CpuMode::Protected32);
    assert_eq!(entry.ip, u64::from(vmc_selftest::LOAD_ADDR));
    assert_eq!(entry.rbx, PVH_START_INFO_ADDR);
    assert_eq!(entry.cr3, 0, "paging off");
    assert_eq!(entry.gdt_base, GDT_ADDR);
    for (i, descriptor) in gdt::GDT.iter().enumerate() {
        assert_eq!(u64_at(&mem, GDT_ADDR + 8 * i as u64), *descriptor);
    }
    assert_eq!(loaded.kernel_start, u64::from(vmc_selftest::LOAD_ADDR));
    assert_eq!(u32_at(&mem, PVH_START_INFO_ADDR + 0x0c), 0, "no modules");

    // The image's segment is where its program header says.
    let code = vmc_selftest::build_code().unwrap();
    let mut loaded_code = vec![0u8; code.len()];
    mem.read_slice(&mut loaded_code, GuestAddress(loaded.kernel_start))
        .unwrap();
    assert_eq!(loaded_code, code);
}

#[test]
fn an_elf_without_the_pvh_note_is_refused() {
    let mem = create_guest_memory(16 * MIB).unwrap();
    let mut image = vmc_selftest::build_image().unwrap();
    // The note follows the ELF header and two program headers; change its type.
    let note_type = 64 + 2 * 56 + 8;
    assert_eq!(image[note_type], 18);
    image[note_type] = 17;
    assert!(matches!(
        boot::load_kernel(&mem, &image, "", None),
        Err(BootError::NoPvhEntry)
    ));
}

#[test]
fn bad_images_and_command_lines_are_errors() {
    let mem = create_guest_memory(16 * MIB).unwrap();
    assert!(matches!(
        boot::load_kernel(&mem, b"MZ not a kernel", "", None),
        Err(BootError::UnknownFormat)
    ));
    let image = vmc_selftest::build_image().unwrap();
    assert!(matches!(
        boot::load_kernel(&mem, &image, "a\0b", None),
        Err(BootError::CmdlineHasNul)
    ));
    let long = "x".repeat(0x10000);
    assert!(matches!(
        boot::load_kernel(&mem, &image, &long, None),
        Err(BootError::CmdlineTooLong {
            len: 0x10001,
            max: 0x10000
        })
    ));
    let huge = vec![0u8; 15 * MIB as usize];
    assert!(matches!(
        boot::load_kernel(&mem, &image, "", Some(&huge)),
        Err(BootError::NoRoomForInitrd { .. })
    ));
}

#[test]
fn memory_above_the_hole_is_a_third_memmap_entry() {
    let mem = create_guest_memory(4096 * MIB).unwrap();
    let image = vmc_selftest::build_image().unwrap();
    let loaded = boot::load_kernel(&mem, &image, "", None).unwrap();
    assert_eq!(
        loaded.memory_map,
        vec![
            MemoryMapEntry {
                addr: 0,
                size: 0x9fc00,
                kind: E820_RAM
            },
            MemoryMapEntry {
                addr: 0x10_0000,
                size: 0xbff0_0000,
                kind: E820_RAM
            },
            MemoryMapEntry {
                addr: 0x1_0000_0000,
                size: 0x4000_0000,
                kind: E820_RAM
            },
        ]
    );
    assert_eq!(u32_at(&mem, PVH_START_INFO_ADDR + 0x30), 3);
}
