//! SIGTERM stops a running VM cleanly (its own test binary: the signal handler is
//! process-wide, and a signal would stop other tests' VMs).

mod support;

use std::thread;
use std::time::{Duration, Instant};

use support::require;
use vmc_runtime::devices::serial::CaptureBuffer;
use vmc_runtime::vm::{install_stop_signal_handlers, StopReason, Vm, VmConfig};

fn spinning_vm() -> (Vm, CaptureBuffer) {
    let mut vm = Vm::new(&VmConfig::new(16 << 20, 1)).unwrap();
    let serial = CaptureBuffer::new();
    vm.add_legacy_devices(Box::new(serial.clone())).unwrap();
    let image = vmc_selftest::build_image().unwrap();
    vm.load_kernel(&image, "selftest.spin", None).unwrap();
    (vm, serial)
}

#[test]
fn sigterm_stops_the_vm_and_later_vms_still_run() {
    require!(support::kvm());
    install_stop_signal_handlers().unwrap();
    let (mut vm, serial) = spinning_vm();
    let runner = thread::spawn(move || vm.run());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !serial.text().contains("selftest: spinning") {
        assert!(Instant::now() < deadline, "guest never spun: {}", serial.text());
        thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: signalling our own process; the handler is installed above.
    assert_eq!(unsafe { libc::kill(libc::getpid(), libc::SIGTERM) }, 0);
    let outcome = runner.join().unwrap().unwrap();
    assert_eq!(outcome.reason, StopReason::Signal(libc::SIGTERM));
    assert_eq!(outcome.reason.exit_code(), 128 + libc::SIGTERM);

    // The signal was for the VMs running then, not for the next one.
    let run = support::boot_selftest(&VmConfig::new(16 << 20, 1), "");
    assert_eq!(run.outcome.reason, StopReason::DebugExit(0));
}
