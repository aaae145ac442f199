//! Booting the self-test guest, shared by the vm_* tests here (`mod support;`). The
//! skip policy, and the test of it, and the synthetic bzImage come with the runtime's
//! VM test helpers.
#![allow(dead_code)] // each test binary uses its own part

use vmc_runtime::devices::serial::CaptureBuffer;
use vmc_runtime::vm::{RunOutcome, Vm, VmConfig};

#[path = "../../../runtime/tests/vm_support.rs"]
mod vm_support;
#[allow(unused_imports)]
pub(crate) use vm_support::{has, kvm, require, synthetic_bzimage};

/// Result of booting the self-test guest.
pub struct SelftestRun {
    pub outcome: RunOutcome,
    pub serial: String,
    pub vm: Vm,
}

impl SelftestRun {
    /// The report lines, without the `selftest: cpuid` ones: what CPUID shows depends
    /// on the host (tests/run.rs checks it against the ABI).
    pub fn lines(&self) -> Vec<&str> {
        self.serial
            .lines()
            .filter(|l| !l.starts_with("selftest: cpuid "))
            .collect()
    }
}

/// Boots the self-test guest through the PVH loader in a fresh VM.
pub fn boot_selftest(config: &VmConfig, cmdline: &str) -> SelftestRun {
    boot_selftest_in(Vm::new(config).expect("create VM"), cmdline)
}

/// Boots the self-test guest through the PVH loader in `vm` (which may already
/// have devices).
pub fn boot_selftest_in(mut vm: Vm, cmdline: &str) -> SelftestRun {
    let serial = CaptureBuffer::new();
    vm.add_legacy_devices(Box::new(serial.clone())).expect("legacy devices");
    let image = vmc_selftest::build_image().expect("self-test image");
    vm.load_kernel(&image, cmdline, None).expect("load self-test");
    let outcome = vm.run().expect("run");
    SelftestRun {
        outcome,
        serial: serial.text(),
        vm,
    }
}
