//! `vmc run`: it executes exactly the document, or refuses before creating anything,
//! with the same reasons as `vmc check`. Needs root and /dev/kvm (CI has both).

mod support;

use support::{available, require, stderr, stdout, vmc, Scratch};

/// A scratch directory holding the self-test guest and a spec that boots it.
fn selftest_dir(name: &str, cpu_model: &str, extra: &str) -> (Scratch, String) {
    let s = Scratch::new(name);
    let o = vmc(&["selftest-guest", "-o", &s.path("selftest.elf").display().to_string()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let spec = s.write(
        "vm.kdl",
        format!(
            "vm \"st\" {{\n    cpu-model \"{cpu_model}\"\n    memory \"64MiB\"\n    boot {{\n        kernel \"selftest.elf\"\n        cmdline \"console=ttyS0{extra}\"\n    }}\n}}\n"
        ),
    );
    (s, spec)
}

#[test]
fn run_boots_the_self_test_guest_and_exits_with_its_code() {
    require!(support::host_access());
    let (s, spec) = selftest_dir("run-plain", "x86-64-v1", "");
    let o = vmc(&["run", &spec, "--stats"]);
    assert_eq!(o.status.code(), Some(0), "{}\n{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("selftest: hello"));
    assert!(stdout(&o).ends_with("selftest: pass\n"), "{}", stdout(&o));
    assert!(stderr(&o).contains("running blake3:"), "{}", stderr(&o));
    assert!(stderr(&o).contains("VM exits"), "{}", stderr(&o));
    // A compiled document runs the same way; the guest's exit code is vmc's.
    let (_s2, spec) = selftest_dir("run-exit", "x86-64-v1", " selftest.exit=7");
    let abi = spec.replace(".kdl", ".abi");
    let o = vmc(&["compile", &spec, "--platform", "linux-6.9"]);
    assert!(o.status.success());
    let o = vmc(&["run", &abi]);
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    drop(s);
}

#[test]
fn run_and_check_refuse_a_cpu_model_this_host_lacks_with_the_same_reasons() {
    require!(support::host_access());
    let (_s, spec) = selftest_dir("run-v4", "x86-64-v4", "");
    let o = vmc(&["compile", &spec, "--platform", "linux-6.9"]);
    assert!(o.status.success());
    let abi = spec.replace(".kdl", ".abi");
    let check = vmc(&["check", &abi]);
    assert_eq!(check.status.code(), Some(1));
    let run = vmc(&["run", &abi]);
    assert_eq!(run.status.code(), Some(2));
    assert!(stdout(&run).is_empty(), "the guest must not start: {}", stdout(&run));
    let reasons = stdout(&check);
    assert!(reasons.contains("avx512f"), "{reasons}");
    assert!(stderr(&run).contains("nothing was started"), "{}", stderr(&run));
    assert!(
        stderr(&run).contains(reasons.trim()),
        "run:\n{}\ncheck:\n{reasons}",
        stderr(&run)
    );
}

#[test]
fn run_refuses_an_edited_document_and_a_missing_kernel() {
    let s = Scratch::new("run-bad");
    let spec = s.write(
        "vm.kdl",
        "vm \"x\" { cpu-model \"x86-64-v1\"; boot { kernel \"missing.elf\" } }\n",
    );
    let o = vmc(&["compile", &spec, "--platform", "linux-6.9"]);
    assert!(o.status.success());
    let abi = s.path("vm.abi");
    let text = std::fs::read_to_string(&abi).unwrap();
    let edited = s.write("edited.abi", text.replace("memory 268435456", "memory 536870912"));
    let o = vmc(&["run", &edited]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("stored hash does not match"), "{}", stderr(&o));
    if available!(support::host_access()) {
        let o = vmc(&["run", &abi.display().to_string()]);
        assert_eq!(o.status.code(), Some(2));
        assert!(stderr(&o).contains("cannot read the kernel"), "{}", stderr(&o));
    }
}

#[test]
fn the_guest_sees_the_abi_cpu_features_and_none_kvm_was_told_to_hide() {
    require!(support::host_access());
    let (_s, spec) = selftest_dir("run-cpuid", "x86-64-v1", "");
    let abi = spec.replace(".kdl", ".abi");
    assert!(vmc(&["compile", &spec, "--platform", "linux-6.9"]).status.success());
    let o = vmc(&["run", &abi]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let seen = support::guest_cpu_features(&stdout(&o));
    let doc: serde_json::Value = serde_json::from_slice(&vmc(&["show", "--json", &abi]).stdout).unwrap();
    let wanted: Vec<&str> = doc["abi"]["cpu"]["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    for f in &wanted {
        assert!(seen.contains(f), "the ABI's `{f}` is missing in the guest: {seen:?}");
    }
    // What KVM can give a guest but the ABI does not list, the guest must not see. (Bits
    // KVM does not manage at all are out of vmc's reach: a software-assisted nested KVM
    // such as kvm_pvm passes some of the real CPU's through regardless.)
    let probe: serde_json::Value = serde_json::from_slice(&vmc(&["probe", "--json"]).stdout).unwrap();
    let hidden: Vec<&str> = probe["cpu-features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .filter(|f| !wanted.contains(f))
        .collect();
    assert!(
        !hidden.is_empty(),
        "this test needs a feature KVM offers beyond x86-64-v1: {probe}"
    );
    for f in &hidden {
        assert!(
            !seen.contains(f),
            "`{f}` is outside the ABI but the guest sees it: {seen:?}"
        );
    }
}

#[test]
fn sigterm_stops_a_running_vm_cleanly_with_128_plus_the_signal() {
    require!(support::host_access());
    let (_s, spec) = selftest_dir("run-sigterm", "x86-64-v1", " selftest.spin");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_vmc"))
        .args(["run", &spec])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start vmc run");
    // Wait until the guest spins, then ask vmc to stop.
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        let n = std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
        assert!(n > 0, "the guest ended before spinning:\n{seen}");
        seen.push_str(&line);
        if line.starts_with("selftest: spinning") {
            break;
        }
    }
    let pid = child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "vmc run did not stop on SIGTERM");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(128 + 15), "{seen}");
}
