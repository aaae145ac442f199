//! The Linux 64-bit boot protocol entry, run for real: a synthetic bzImage whose
//! 64-bit entry checks what the protocol promises (long mode, `__BOOT_CS`/`__BOOT_DS`,
//! `rsi` = zero page, a usable stack) and prints the command line it finds there.
//! Here rather than in runtime/tests because that entry is assembled with iced-x86,
//! which only this crate depends on.

mod support;

use iced_x86::code_asm::*;
use support::require;
use vmc_runtime::boot::bzimage::XLF_KERNEL_64;
use vmc_runtime::devices::serial::CaptureBuffer;
use vmc_runtime::vm::{StopReason, Vm, VmConfig};

/// Exit codes of the probe kernel.
const BAD_HEADER: u32 = 1;
const BAD_SEGMENTS: u32 = 2;
const NOT_LONG_MODE: u32 = 3;

/// The protected-mode part of the kernel: 0x200 bytes of `ud2` padding (the 32-bit
/// entry, unused), then 64-bit code at load address + 0x200.
fn probe_kernel_payload() -> Result<Vec<u8>, IcedError> {
    let mut a = CodeAssembler::new(64)?;
    let mut print_cstr = a.create_label();
    let mut next = a.create_label();
    let mut done = a.create_label();
    let mut fail = a.create_label();

    a.mov(ecx, BAD_HEADER)?;
    a.cmp(dword_ptr(rsi + 0x202), 0x5372_6448u32)?; // "HdrS" in the zero page
    a.jne(fail)?;
    a.mov(ecx, BAD_SEGMENTS)?;
    a.mov(eax, cs)?;
    a.cmp(eax, 0x10u32)?;
    a.jne(fail)?;
    a.mov(eax, ds)?;
    a.cmp(eax, 0x18u32)?;
    a.jne(fail)?;
    // A 64-bit-only instruction form: a 64-bit immediate into a 64-bit register.
    a.mov(ecx, NOT_LONG_MODE)?;
    a.mov(rax, 0x1234_5678_9abc_def0u64)?;
    a.shr(rax, 32)?;
    a.cmp(eax, 0x1234_5678u32)?;
    a.jne(fail)?;
    a.mov(ebx, dword_ptr(rsi + 0x228))?; // cmd_line_ptr
    a.call(print_cstr)?; // uses the stack the loader gave
    a.mov(al, b'\n' as u32)?;
    a.mov(dx, 0x3f8u32)?;
    a.out(dx, al)?;
    a.xor(ecx, ecx)?;
    a.set_label(&mut fail)?;
    a.mov(eax, ecx)?;
    a.out(0xf4u32, al)?;
    let mut spin = a.create_label();
    a.set_label(&mut spin)?;
    a.jmp(spin)?;

    // print_cstr: rbx = string.
    a.set_label(&mut print_cstr)?;
    a.mov(dx, 0x3f8u32)?;
    a.set_label(&mut next)?;
    a.mov(al, byte_ptr(rbx))?;
    a.test(al, al)?;
    a.jz(done)?;
    a.out(dx, al)?;
    a.inc(rbx)?;
    a.jmp(next)?;
    a.set_label(&mut done)?;
    a.ret()?;

    let code = a.assemble(0x10_0200)?;
    let mut payload = [0x0f, 0x0b].repeat(0x100); // ud2
    payload.extend_from_slice(&code);
    Ok(payload)
}

#[test]
fn a_bzimage_starts_in_long_mode_with_the_zero_page_in_rsi() {
    require!(support::kvm());
    let image = support::synthetic_bzimage(0x020f, XLF_KERNEL_64, 0x7fff_ffff, &probe_kernel_payload().unwrap());
    let mut vm = Vm::new(&VmConfig::new(64 << 20, 1)).unwrap();
    let serial = CaptureBuffer::new();
    vm.add_legacy_devices(Box::new(serial.clone())).unwrap();
    vm.load_kernel(&image, "console=ttyS0 bzimage-probe", None).unwrap();
    let outcome = vm.run().unwrap();
    assert_eq!(outcome.reason, StopReason::DebugExit(0), "{}", serial.text());
    assert_eq!(serial.text(), "console=ttyS0 bzimage-probe\n");
}
