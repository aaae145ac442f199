//! `vmc run`: it executes exactly the document, or refuses before creating anything,
//! with the same reasons as `vmc check`. Needs root and /dev/kvm (CI has both).

mod support;

use support::{require_host_access, stderr, stdout, vmc, Scratch};

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
    if !require_host_access("run_boots_the_self_test_guest_and_exits_with_its_code") {
        return;
    }
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
    if !require_host_access("run_and_check_refuse_a_cpu_model_this_host_lacks_with_the_same_reasons") {
        return;
    }
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
    if require_host_access("run_refuses_an_edited_document_and_a_missing_kernel") {
        let o = vmc(&["run", &abi.display().to_string()]);
        assert_eq!(o.status.code(), Some(2));
        assert!(stderr(&o).contains("cannot read the kernel"), "{}", stderr(&o));
    }
}
