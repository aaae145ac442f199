//! The host probe against this real host: it reports what the kernel says, and whatever it
//! cannot measure becomes an error inside the result, never a failed probe.

mod common;

use std::os::unix::process::CommandExt;
use std::process::Command;

use common::{require, run, test_name, NetNs};
use vmc_runtime::host::{
    CpuidReg, Errno, HostProbe, KernelRelease, KvmProbe, ProbeError, TapError, TapOffloads, TapProbe,
};

#[test]
fn the_kernel_release_is_what_uname_r_prints() {
    let release = KernelRelease::measure().expect("uname works on any Linux");
    let uname_r = run("uname", &["-r"]);
    assert_eq!(release.release, uname_r.trim());

    let mut numbers = uname_r.trim().split(['.', '-']);
    let mut next = || numbers.next().and_then(|n| n.parse::<u32>().ok());
    assert_eq!((next(), next()), (Some(release.major), Some(release.minor)));
}

#[test]
fn tap_offloads_are_measured_on_a_throwaway_tap_that_is_removed_afterwards() {
    require!(common::root());
    let ns = NetNs::create();
    let links_before = ns.ip(&["-o", "link", "show"]);
    let tap = ns
        .run(TapProbe::measure)
        .unwrap_or_else(|error| panic!("TAP probe: {error}"));
    assert_eq!(
        ns.ip(&["-o", "link", "show"]),
        links_before,
        "the probe TAP must be gone"
    );

    assert!(tap.driver_features.vnet_hdr());
    assert!(tap.vnet_hdr());
    let offloads = tap.offloads.unwrap_or_else(|error| panic!("offload probe: {error}"));
    println!(
        "accepted offloads: {} (uso needs both: {})",
        offloads.accepted, offloads.uso_needs_both
    );
    assert!(offloads.accepted.contains(TapOffloads::CSUM));

    let kernel = KernelRelease::measure().expect("uname");
    let uso = TapOffloads::USO4 | TapOffloads::USO6;
    if kernel.at_least(6, 2) {
        assert!(
            offloads.accepted.contains(uso),
            "Linux {}.{} has USO on TAP (since 6.2), probe found {}",
            kernel.major,
            kernel.minor,
            offloads.accepted
        );
    } else {
        assert!(!offloads.accepted.intersects(uso), "USO before Linux 6.2?");
    }
}

#[test]
fn kvm_speaks_api_version_12_with_irqchip_and_ioeventfd() {
    require!(common::kvm());
    let kvm = KvmProbe::measure().unwrap_or_else(|error| panic!("KVM probe: {error}"));
    println!("KVM capabilities present: {}", kvm.present().join(" "));
    assert_eq!(kvm.api_version, 12);
    for capability in ["irqchip", "ioeventfd", "irqfd", "user-memory"] {
        assert!(kvm.has(capability), "{capability} missing");
    }
    assert!(kvm.capability("max-vcpus").is_some_and(|n| n >= 1));
    assert_eq!(kvm.capability("no-such-capability"), None);
}

#[test]
fn supported_cpuid_is_kept_raw_and_answers_bit_lookups() {
    require!(common::kvm());
    let kvm = KvmProbe::measure().unwrap_or_else(|error| panic!("KVM probe: {error}"));
    let cpuid = kvm
        .supported_cpuid
        .as_ref()
        .unwrap_or_else(|error| panic!("KVM_GET_SUPPORTED_CPUID: {error}"));

    // KVM passes the CPU vendor through: leaf 0 spells it in ebx, edx, ecx.
    let leaf0 = cpuid.entry(0, 0).expect("leaf 0");
    let vendor: Vec<u8> = [leaf0.ebx, leaf0.edx, leaf0.ecx]
        .iter()
        .flat_map(|reg| reg.to_le_bytes())
        .collect();
    let host = std::arch::x86_64::__cpuid(0);
    let host_vendor: Vec<u8> = [host.ebx, host.edx, host.ecx]
        .iter()
        .flat_map(|reg| reg.to_le_bytes())
        .collect();
    assert_eq!(String::from_utf8_lossy(&vendor), String::from_utf8_lossy(&host_vendor));

    // KVM emulates x2APIC whatever the host has, so leaf 1 ecx bit 21 is always offered;
    // and the lookup agrees with the raw entry bit for bit.
    assert!(kvm.has_cpuid_bit(1, 0, CpuidReg::Ecx, 21));
    let leaf1 = cpuid.entry(1, 0).expect("leaf 1");
    for bit in 0..32 {
        assert_eq!(kvm.has_cpuid_bit(1, 0, CpuidReg::Edx, bit), leaf1.edx & (1 << bit) != 0);
    }
    assert!(!kvm.has_cpuid_bit(0x7fff_ffff, 0, CpuidReg::Eax, 0));
}

/// The whole probe, run as an unprivileged user: it still answers, and says why each part
/// it could not measure failed. The test re-runs itself as `nobody` to get there.
#[test]
fn an_unprivileged_probe_still_answers_and_names_what_it_could_not_measure() {
    const CHILD: &str = "VMC_TEST_UNPRIVILEGED_PROBE_CHILD";
    if std::env::var_os(CHILD).is_some() {
        unprivileged_child();
        return;
    }
    require!(common::root());
    let exe = std::env::current_exe().expect("own path");
    let output = Command::new(&exe)
        .args(["--exact", test_name!(), "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .uid(65534)
        .gid(65534)
        .output()
        .expect("run the test binary as nobody");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the unprivileged probe failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("probe as nobody:"), "the child did not run:\n{stdout}");
}

fn unprivileged_child() {
    let probe = HostProbe::measure();
    println!("probe as nobody: {probe:#?}");

    assert!(probe.kernel.is_ok(), "uname needs no privilege");

    // /dev/net/tun may be closed to us (mode 0600) or open (0666): then making the
    // throwaway TAP needs CAP_NET_ADMIN, which we lack.
    match &probe.tap {
        Err(ProbeError::Tap(TapError::OpenTun { errno, hint })) => {
            assert_eq!(*errno, Errno(libc::EACCES));
            assert!(hint.contains("permission"), "{hint}");
        }
        Ok(tap) => match &tap.offloads {
            Err(error @ ProbeError::Tap(TapError::Ioctl { ioctl: "TUNSETIFF", .. })) => {
                assert!(error.to_string().contains("CAP_NET_ADMIN"), "{error}");
            }
            other => panic!("offloads measured without CAP_NET_ADMIN? {other:?}"),
        },
        Err(other) => panic!("unexpected TAP error {other}"),
    }

    // /dev/kvm may be open to everyone (0666) or to root only.
    match &probe.kvm {
        Ok(kvm) => assert_eq!(kvm.api_version, 12),
        Err(error @ ProbeError::OpenKvm { errno, .. }) => {
            assert_eq!(*errno, Errno(libc::EACCES));
            assert!(error.to_string().contains("no permission on /dev/kvm"), "{error}");
        }
        Err(other) => panic!("unexpected KVM error {other}"),
    }
}
