//! The self-test guest, booted through the real PVH path in a real KVM VM.

#[path = "vm_support.rs"]
mod support;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use support::{boot_selftest, boot_selftest_in, kvm_usable};
use vmc_runtime::vm::{BusDevice, StopReason, Vm, VmConfig, VmError};

const MIB: u64 = 1 << 20;

/// Just the identification registers of a virtio-mmio device.
struct FakeVirtioMmio {
    device_id: u32,
}

impl BusDevice for FakeVirtioMmio {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value: u32 = match offset {
            0x000 => 0x7472_6976, // "virt"
            0x004 => 2,           // version
            0x008 => self.device_id,
            _ => 0,
        };
        let bytes = value.to_le_bytes();
        let n = data.len().min(4);
        data[..n].copy_from_slice(&bytes[..n]);
    }
    fn write(&mut self, _offset: u64, _data: &[u8]) {}
}

#[test]
fn selftest_guest_reports_hello_cmdline_memmap_mmio_and_passes() {
    if !kvm_usable("selftest_guest_reports_hello_cmdline_memmap_mmio_and_passes") {
        return;
    }
    let cmdline = "console=ttyS0 virtio_mmio.device=512@0xfeb00e00:12 \
                   virtio_mmio.device=512@0xfeb00c00:11";
    let created = Instant::now();
    let mut vm = Vm::new(&VmConfig::new(64 * MIB, 1)).unwrap();
    let features = vm.features();
    vm.add_mmio_device(
        0xfeb0_0e00,
        0x200,
        Arc::new(Mutex::new(FakeVirtioMmio { device_id: 1 })),
    )
    .unwrap();
    let run = boot_selftest_in(vm, cmdline);
    // Measurements for the log, never asserted.
    eprintln!(
        "self-test guest: {:?} from Vm::new to exit, {} exits {:?}, host {:?}",
        created.elapsed(),
        run.outcome.exits.total(),
        run.outcome.exits,
        features
    );
    assert_eq!(
        run.lines(),
        [
            "selftest: hello".to_string(),
            format!("selftest: cmdline {cmdline}"),
            "selftest: memmap 2 entries".into(),
            "selftest: memmap entry 0x0 size 0x9fc00 type 1".into(),
            "selftest: memmap entry 0x100000 size 0x3f00000 type 1".into(),
            "selftest: mmio 0xfeb00e00 magic ok device 1".into(),
            "selftest: mmio 0xfeb00c00 absent".into(),
            "selftest: pass".into(),
        ]
    );
    assert_eq!(run.outcome.reason, StopReason::DebugExit(0));
    assert_eq!(run.outcome.reason.exit_code(), 0);
    assert_eq!(run.outcome.exits.unclaimed, 1, "only the empty slot's magic read");
}

#[test]
fn guest_chooses_its_exit_code_through_the_debug_exit_port() {
    if !kvm_usable("guest_chooses_its_exit_code_through_the_debug_exit_port") {
        return;
    }
    let run = boot_selftest(&VmConfig::new(16 * MIB, 1), "selftest.exit=7");
    assert!(run.serial.ends_with("selftest: pass\n"), "{}", run.serial);
    assert_eq!(run.outcome.reason, StopReason::DebugExit(7));
    assert_eq!(run.outcome.reason.exit_code(), 7);
}

#[test]
fn an_empty_command_line_is_reported_empty() {
    if !kvm_usable("an_empty_command_line_is_reported_empty") {
        return;
    }
    let run = boot_selftest(&VmConfig::new(16 * MIB, 1), "");
    assert_eq!(run.lines()[1], "selftest: cmdline ");
    assert_eq!(run.outcome.reason, StopReason::DebugExit(0));
}

#[test]
fn memory_beyond_3gib_continues_above_4gib_in_the_guests_memory_map() {
    if !kvm_usable("memory_beyond_3gib_continues_above_4gib_in_the_guests_memory_map") {
        return;
    }
    let run = boot_selftest(&VmConfig::new(3584 * MIB, 1), "");
    let lines = run.lines();
    assert_eq!(
        lines[2..6],
        [
            "selftest: memmap 3 entries",
            "selftest: memmap entry 0x0 size 0x9fc00 type 1",
            "selftest: memmap entry 0x100000 size 0xbff00000 type 1",
            "selftest: memmap entry 0x100000000 size 0x20000000 type 1",
        ]
    );
    assert_eq!(run.outcome.reason, StopReason::DebugExit(0));
}

#[test]
fn a_second_vcpu_waits_for_startup_while_the_first_runs_the_guest() {
    if !kvm_usable("a_second_vcpu_waits_for_startup_while_the_first_runs_the_guest") {
        return;
    }
    let vm = Vm::new(&VmConfig::new(16 * MIB, 2)).unwrap();
    if !support::host_has(
        "the in-kernel irqchip",
        vm.features().irqchip,
        "a_second_vcpu_waits_for_startup_while_the_first_runs_the_guest",
    ) {
        return;
    }
    let run = boot_selftest_in(vm, "");
    assert_eq!(run.outcome.reason, StopReason::DebugExit(0));
    assert!(run.serial.ends_with("selftest: pass\n"));
}

#[test]
fn without_the_irqchip_hlt_ends_the_run() {
    if !kvm_usable("without_the_irqchip_hlt_ends_the_run") {
        return;
    }
    let config = VmConfig {
        irqchip: false,
        ..VmConfig::new(16 * MIB, 1)
    };
    let run = boot_selftest(&config, "selftest.hlt");
    assert!(!run.vm.features().irqchip);
    assert!(run.serial.ends_with("selftest: halting\n"), "{}", run.serial);
    assert_eq!(run.outcome.reason, StopReason::Halted);
}

#[test]
fn several_vcpus_without_the_irqchip_are_refused() {
    if !kvm_usable("several_vcpus_without_the_irqchip_are_refused") {
        return;
    }
    let config = VmConfig {
        irqchip: false,
        ..VmConfig::new(16 * MIB, 2)
    };
    assert!(matches!(Vm::new(&config), Err(VmError::InvalidConfig(_))));
}

#[test]
fn the_serial_interrupt_reaches_the_guest_through_irqfd() {
    let test = "the_serial_interrupt_reaches_the_guest_through_irqfd";
    if !kvm_usable(test) {
        return;
    }
    let vm = Vm::new(&VmConfig::new(16 * MIB, 1)).unwrap();
    if !support::host_has("KVM irqfd", vm.features().irqfd, test) {
        return;
    }
    let run = boot_selftest_in(vm, "selftest.irq");
    eprintln!("{}", run.serial);
    assert!(run.lines().contains(&"selftest: irq serial ok"), "{}", run.serial);
    assert_eq!(run.outcome.reason, StopReason::DebugExit(0));
}
