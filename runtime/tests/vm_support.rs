//! Helpers shared by the boot_* tests here and by the tests that boot a VM, in
//! selftest/tests (through its support module; both include this file with `#[path]`),
//! and the tests of the helpers themselves.
#![allow(dead_code)]

use linux_loader::loader::bootparam::setup_header;
use vm_memory::ByteValued;
use vmc_runtime::boot::bzimage::LOADED_HIGH;

#[path = "../../tests/support/skip.rs"]
mod skip;
#[allow(unused_imports)]
pub(crate) use skip::{available, has, kvm, require, test_name};

/// Setup sectors of [`synthetic_bzimage`]s.
pub const SETUP_SECTS: u8 = 4;

/// A bzImage with a real setup header (loaded high at 1 MiB) whose protected-mode
/// part is `payload`.
pub fn synthetic_bzimage(version: u16, xloadflags: u16, initrd_addr_max: u32, payload: &[u8]) -> Vec<u8> {
    let hdr = setup_header {
        setup_sects: SETUP_SECTS,
        boot_flag: 0xaa55,
        header: 0x5372_6448, // "HdrS"
        version,
        loadflags: LOADED_HIGH,
        code32_start: 0x10_0000,
        initrd_addr_max,
        kernel_alignment: 0x20_0000,
        relocatable_kernel: 1,
        xloadflags,
        cmdline_size: 2047,
        init_size: 0x40_0000,
        ..Default::default()
    };
    let setup_len = (usize::from(SETUP_SECTS) + 1) * 512;
    let mut image = vec![0u8; setup_len];
    image[0x1f1..0x1f1 + std::mem::size_of::<setup_header>()].copy_from_slice(hdr.as_slice());
    image.extend_from_slice(payload);
    image
}

#[test]
fn a_missing_facility_skips_locally_and_fails_under_ci() {
    let name = "a_missing_facility_skips_locally_and_fails_under_ci";
    assert_eq!(test_name!(), name);
    let in_a_closure = || test_name!();
    assert_eq!(in_a_closure(), name, "a closure is not a test");
    assert!(available!(has("thing", true)));
    let under_ci = std::env::var("CI").as_deref() == Ok("true");
    let result = std::panic::catch_unwind(|| available!(has("thing", false)));
    match result {
        Ok(ran) => {
            assert!(!under_ci, "must fail under CI");
            assert!(!ran, "must skip");
        }
        Err(_) => assert!(under_ci, "must only fail under CI"),
    }
}
