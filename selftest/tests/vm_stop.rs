//! Stopping a running VM from the host.

mod support;

use std::thread;
use std::time::{Duration, Instant};

use support::require;
use vmc_runtime::devices::serial::CaptureBuffer;
use vmc_runtime::vm::{StopReason, Vm, VmConfig, VmError};

/// Polls `serial` until it contains `text`; gives up (returning false) after a
/// generous deadline so a broken guest fails the test instead of hanging it.
pub fn wait_for(serial: &CaptureBuffer, text: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if serial.text().contains(text) {
            return true;
        }
        thread::sleep(Duration::from_millis(5));
    }
    false
}

/// Boots the self-test guest with `cmdline`, waits for `text` on its console, asks
/// the VM to stop from this thread and returns why it stopped. `None` when the test
/// needs the in-kernel irqchip (`vcpus > 1` or `needs_irqchip`) and the host has none.
fn stop_after(vcpus: u8, needs_irqchip: bool, cmdline: &str, text: &str) -> Option<StopReason> {
    let mut vm = match Vm::new(&VmConfig::new(16 << 20, vcpus)) {
        // Several vCPUs need the irqchip; refused without it.
        Err(VmError::InvalidConfig(_)) if vcpus > 1 => return None,
        created => created.unwrap(),
    };
    if (vcpus > 1 || needs_irqchip) && !vm.features().irqchip {
        return None;
    }
    let serial = CaptureBuffer::new();
    vm.add_legacy_devices(Box::new(serial.clone())).unwrap();
    let image = vmc_selftest::build_image().unwrap();
    vm.load_kernel(&image, cmdline, None).unwrap();
    let control = vm.control();
    let runner = thread::spawn(move || vm.run());

    assert!(wait_for(&serial, text), "{}", serial.text());
    assert!(!control.is_stopping());
    control.request_stop(StopReason::Stopped);
    // A later request does not replace the first reason.
    control.request_stop(StopReason::Reset);
    Some(runner.join().unwrap().unwrap().reason)
}

#[test]
fn request_stop_ends_a_spinning_guest() {
    require!(support::kvm());
    for vcpus in [1, 2] {
        if let Some(reason) = stop_after(vcpus, false, "selftest.spin", "selftest: spinning\n") {
            assert_eq!(reason, StopReason::Stopped);
            assert_eq!(reason.exit_code(), 0);
        }
    }
}

#[test]
fn request_stop_ends_a_guest_halted_in_the_kernels_irqchip() {
    require!(support::kvm());
    // With the in-kernel irqchip, hlt never comes back to user space: only the kick
    // signal gets the vCPU thread out.
    if let Some(reason) = stop_after(1, true, "selftest.hlt", "selftest: halting\n") {
        assert_eq!(reason, StopReason::Stopped);
    } else {
        require!(support::has("the in-kernel irqchip", false));
    }
}
