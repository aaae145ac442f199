//! A guest cannot hurt the VMM: unknown ports and MMIO, resets, and misuse of the API.

mod support;

use kvm_ioctls::{IoEventAddress, NoDatamatch};
use support::{boot_selftest, boot_selftest_in, require};
use vmc_runtime::vm::{StopReason, Vm, VmConfig, VmError};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

const MIB: u64 = 1 << 20;

#[test]
fn garbage_at_unknown_ports_and_mmio_is_absorbed() {
    require!(support::kvm());
    let run = boot_selftest(&VmConfig::new(16 * MIB, 1), "selftest.garbage");
    let lines = run.lines();
    assert!(lines.contains(&"selftest: garbage done"), "{}", run.serial);
    assert_eq!(lines.last(), Some(&"selftest: pass"));
    assert_eq!(run.outcome.reason, StopReason::DebugExit(0));
    // Ports 0x80, 0xcf8, 0xfff0: 5 accesses each. Port 0x3ff is COM1's last
    // register: its byte accesses reach the UART, but the word and dword ones
    // straddle the end of COM1 and are nobody's (3). Four MMIO addresses x 4.
    assert_eq!(run.outcome.exits.unclaimed, 15 + 3 + 16, "{:?}", run.outcome.exits);
}

#[test]
fn the_i8042_reset_line_ends_the_vm() {
    require!(support::kvm());
    let run = boot_selftest(&VmConfig::new(16 * MIB, 1), "selftest.reset");
    assert!(run.serial.ends_with("selftest: reset\n"), "{}", run.serial);
    assert_eq!(run.outcome.reason, StopReason::Reset);
    assert_eq!(run.outcome.reason.exit_code(), 0);
}

#[test]
fn an_mmio_write_with_an_ioeventfd_is_absorbed_by_the_kernel() {
    require!(support::kvm());
    let vm = Vm::new(&VmConfig::new(16 * MIB, 1)).unwrap();
    require!(support::has("KVM ioeventfd", vm.features().ioeventfd));
    let evt = EventFd::new(EFD_NONBLOCK).unwrap();
    // The garbage step writes a dword at 0xd000_0000 first.
    vm.vm_fd()
        .register_ioevent(&evt, &IoEventAddress::Mmio(0xd000_0000), NoDatamatch)
        .unwrap();
    let run = boot_selftest_in(vm, "selftest.garbage");
    assert_eq!(run.outcome.reason, StopReason::DebugExit(0));
    assert!(evt.read().unwrap() >= 1, "the eventfd counted the write");
}

#[test]
fn a_triple_fault_ends_the_vm_with_shutdown() {
    require!(support::kvm());
    // ud2 with the loader's empty IDT: #UD, #GP, double fault, triple fault.
    let ud2 = [0x0f, 0x0b];
    let image = vmc_selftest::elf::pvh_elf(0x10_0000, 0x10_0000, &ud2, 0);
    let mut vm = Vm::new(&VmConfig::new(16 * MIB, 1)).unwrap();
    vm.load_kernel(&image, "", None).unwrap();
    let outcome = vm.run().unwrap();
    assert_eq!(outcome.reason, StopReason::Shutdown);
    assert_eq!(outcome.reason.exit_code(), 3);
}

#[test]
fn a_vm_runs_only_once() {
    require!(support::kvm());
    let mut run = boot_selftest(&VmConfig::new(16 * MIB, 1), "");
    assert!(matches!(run.vm.run(), Err(VmError::AlreadyRan)));
}

#[test]
fn running_without_a_kernel_is_an_error() {
    require!(support::kvm());
    let mut vm = Vm::new(&VmConfig::new(16 * MIB, 1)).unwrap();
    assert!(matches!(vm.run(), Err(VmError::InvalidConfig(_))));
}

#[test]
fn impossible_configurations_are_refused() {
    require!(support::kvm());
    assert!(matches!(
        Vm::new(&VmConfig::new(16 * MIB, 0)),
        Err(VmError::InvalidConfig(_))
    ));
    assert!(matches!(
        Vm::new(&VmConfig::new(16 * MIB + 1, 1)),
        Err(VmError::Memory(_))
    ));
}

#[test]
fn guest_memory_stays_readable_after_the_run() {
    require!(support::kvm());
    use vm_memory::{Bytes, GuestAddress};
    let run = boot_selftest(&VmConfig::new(16 * MIB, 1), "");
    let mut magic = [0u8; 4];
    run.vm.memory().read_slice(&mut magic, GuestAddress(0x6000)).unwrap();
    assert_eq!(u32::from_le_bytes(magic), 0x336e_c578);
    let code = vmc_selftest::build_code().unwrap();
    let mut loaded = vec![0u8; code.len()];
    run.vm
        .memory()
        .read_slice(&mut loaded, GuestAddress(u64::from(vmc_selftest::LOAD_ADDR)))
        .unwrap();
    // The guest writes its variables in the data area; the code itself is intact.
    let data = vmc_selftest::DATA_OFFSET as usize;
    assert_eq!(loaded[..data], code[..data]);
}
