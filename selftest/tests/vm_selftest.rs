//! The self-test guest, booted through the real PVH path in a real KVM VM.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use support::{boot_selftest, boot_selftest_in, require};
use vmc_runtime::devices::bus::BusDevice;
use vmc_runtime::vm::{StopReason, Vm, VmConfig, VmError};

const MIB: u64 = 1 << 20;

/// The identification registers of a virtio-mmio device, plus just enough of the
/// feature and status registers to watch a driver negotiate: the device offers
/// `features`, records what the driver accepts, and never keeps FEATURES_OK.
struct FakeVirtioMmio {
    device_id: u32,
    features: u64,
    features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    status: u32,
}

impl FakeVirtioMmio {
    fn new(device_id: u32, features: u64) -> Self {
        FakeVirtioMmio {
            device_id,
            features,
            features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            status: 0,
        }
    }
}

/// virtio-mmio registers and status bits the fake knows.
const STATUS_FEATURES_OK: u32 = 8;
const STATUS_FAILED: u32 = 0x80;

impl BusDevice for FakeVirtioMmio {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value: u32 = match offset {
            0x000 => 0x7472_6976, // "virt"
            0x004 => 2,           // version
            0x008 => self.device_id,
            0x010 => (self.features >> (32 * self.features_sel.min(1))) as u32,
            0x070 => self.status,
            _ => 0,
        };
        let bytes = value.to_le_bytes();
        let n = data.len().min(4);
        data[..n].copy_from_slice(&bytes[..n]);
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        let mut bytes = [0u8; 4];
        let n = data.len().min(4);
        bytes[..n].copy_from_slice(&data[..n]);
        let value = u32::from_le_bytes(bytes);
        match offset {
            0x014 => self.features_sel = value,
            0x024 => self.driver_features_sel = value,
            0x020 => {
                let shift = 32 * self.driver_features_sel.min(1);
                self.driver_features &= !(0xffff_ffffu64 << shift);
                self.driver_features |= u64::from(value) << shift;
            }
            0x070 => self.status = value & !STATUS_FEATURES_OK,
            _ => {}
        }
    }
}

#[test]
fn selftest_guest_reports_hello_cmdline_memmap_mmio_and_passes() {
    require!(support::kvm());
    let cmdline = "console=ttyS0 virtio_mmio.device=512@0xfeb00e00:12 \
                   virtio_mmio.device=512@0xfeb00c00:11";
    let created = Instant::now();
    let mut vm = Vm::new(&VmConfig::new(64 * MIB, 1)).unwrap();
    let features = vm.features();
    vm.add_mmio_device(
        0xfeb0_0e00,
        0x200,
        // A block device: identified by the probe, left alone by the network driver.
        Arc::new(Mutex::new(FakeVirtioMmio::new(2, 0))),
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
            "selftest: mmio 0xfeb00e00 magic ok device 2".into(),
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
    require!(support::kvm());
    let run = boot_selftest(&VmConfig::new(16 * MIB, 1), "selftest.exit=7");
    assert!(run.serial.ends_with("selftest: pass\n"), "{}", run.serial);
    assert_eq!(run.outcome.reason, StopReason::DebugExit(7));
    assert_eq!(run.outcome.reason.exit_code(), 7);
}

#[test]
fn an_empty_command_line_is_reported_empty() {
    require!(support::kvm());
    let run = boot_selftest(&VmConfig::new(16 * MIB, 1), "");
    assert_eq!(run.lines()[1], "selftest: cmdline ");
    assert_eq!(run.outcome.reason, StopReason::DebugExit(0));
}

#[test]
fn memory_beyond_3gib_continues_above_4gib_in_the_guests_memory_map() {
    require!(support::kvm());
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
    require!(support::kvm());
    let vm = Vm::new(&VmConfig::new(16 * MIB, 2)).unwrap();
    require!(support::has("the in-kernel irqchip", vm.features().irqchip));
    let run = boot_selftest_in(vm, "");
    assert_eq!(run.outcome.reason, StopReason::DebugExit(0));
    assert!(run.serial.ends_with("selftest: pass\n"));
}

#[test]
fn without_the_irqchip_hlt_ends_the_run() {
    require!(support::kvm());
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
    require!(support::kvm());
    let config = VmConfig {
        irqchip: false,
        ..VmConfig::new(16 * MIB, 2)
    };
    assert!(matches!(Vm::new(&config), Err(VmError::InvalidConfig(_))));
}

#[test]
fn the_serial_interrupt_reaches_the_guest_through_irqfd() {
    require!(support::kvm());
    let vm = Vm::new(&VmConfig::new(16 * MIB, 1)).unwrap();
    require!(support::has("KVM irqfd", vm.features().irqfd));
    let run = boot_selftest_in(vm, "selftest.irq");
    eprintln!("{}", run.serial);
    assert!(run.lines().contains(&"selftest: irq serial ok"), "{}", run.serial);
    assert_eq!(run.outcome.reason, StopReason::DebugExit(0));
}

/// Boots the guest with a fake network device offering `features` at 0xfeb00e00.
fn boot_with_fake_net(features: u64) -> (support::SelftestRun, Arc<Mutex<FakeVirtioMmio>>) {
    let mut vm = Vm::new(&VmConfig::new(16 * MIB, 1)).unwrap();
    let device = Arc::new(Mutex::new(FakeVirtioMmio::new(1, features)));
    vm.add_mmio_device(0xfeb0_0e00, 0x200, device.clone()).unwrap();
    let run = boot_selftest_in(vm, "virtio_mmio.device=512@0xfeb00e00:12");
    (run, device)
}

#[test]
fn the_net_driver_refuses_a_device_without_version_1() {
    require!(support::kvm());
    let (run, device) = boot_with_fake_net(1 << 0);
    assert_eq!(
        run.lines()[run.lines().len() - 3..],
        [
            "selftest: mmio 0xfeb00e00 magic ok device 1",
            "selftest: offered 0",
            "selftest: net device does not offer VERSION_1",
        ]
    );
    assert_eq!(run.outcome.reason, StopReason::DebugExit(vmc_selftest::EXIT_NET_DEVICE));
    assert_ne!(
        device.lock().unwrap().status & STATUS_FAILED,
        0,
        "the driver set FAILED"
    );
}

#[test]
fn the_net_driver_accepts_only_its_features_and_gives_up_without_features_ok() {
    require!(support::kvm());
    // CSUM, CTRL_VQ (17, not for this driver), RING_EVENT_IDX (29, left out),
    // VERSION_1, HOST_USO.
    let offered = (1 << 0) | (1 << 17) | (1 << 29) | (1 << 32) | (1 << 56);
    let (run, device) = boot_with_fake_net(offered);
    assert_eq!(
        run.lines()[run.lines().len() - 2..],
        [
            "selftest: offered 0 17 29 32 56",
            // ACKNOWLEDGE | DRIVER, as the device left it.
            "selftest: net features not accepted, status 0x3",
        ]
    );
    assert_eq!(
        run.outcome.reason,
        StopReason::DebugExit(vmc_selftest::EXIT_NET_FEATURES)
    );
    let device = device.lock().unwrap();
    assert_eq!(device.driver_features, (1 << 0) | (1 << 32) | (1 << 56));
    assert_eq!(vmc_selftest::NET_DRIVER_FEATURES & offered, device.driver_features);
    assert_ne!(device.status & STATUS_FAILED, 0, "the driver set FAILED");
}
