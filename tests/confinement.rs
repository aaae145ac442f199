//! `vmc run` confined and under faults: the self-test guest passes under the default
//! seccomp filters with root dropped (`--user 65534:65534`), and every thread runs as
//! that user, without capabilities, under a filter; `--timeout`; `--exit-status`; a
//! console whose reader goes away; and guests that triple-fault, spin with interrupts
//! off, or write arbitrary values to every device register. vmc never hangs, and each
//! ending has its own exit status.
//!
//! Needs root and /dev/kvm: skipped with a reason by hand without them, failed under CI.

#[path = "../runtime/tests/common/mod.rs"]
mod common;
mod support;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::NetNs;
use support::vmm::{last_count, Vmm};
use support::{require, stderr, stdout, vmc, Scratch};

/// The self-test guest's spec (`count`: the count-mode one) with `extra` on its command
/// line, compiled for linux-6.9.
fn abi(s: &Scratch, name: &str, count: bool, extra: &str) -> String {
    let guest = s.path("selftest.elf");
    if !guest.exists() {
        let o = vmc(&["selftest-guest", "-o", &guest.display().to_string()]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let spec = if count {
        "specs/selftest-count.kdl"
    } else {
        "specs/selftest.kdl"
    };
    let text = std::fs::read_to_string(support::repo().join(spec))
        .unwrap()
        .replace("guest/selftest.elf", "selftest.elf")
        .replace(
            "selftest.dmac=02:00:00:00:00:01",
            &format!("selftest.dmac=02:00:00:00:00:01 {extra}"),
        );
    let spec_path = s.write(&format!("{name}.kdl"), text);
    let abi = s.path(&format!("{name}.abi")).display().to_string();
    let o = vmc(&["compile", &spec_path, "--platform", "linux-6.9", "-o", &abi]);
    assert!(o.status.success(), "{}", stderr(&o));
    abi
}

/// `vmc run ARGS` in `ns`, to the end (bounded); (exit code, stdout, stderr, seconds).
fn run(ns: &NetNs, args: &[&str]) -> (Option<i32>, String, String, f64) {
    let started = Instant::now();
    let mut vmm = Vmm::start(ns.name(), args);
    let code = vmm.wait();
    (code, vmm.out(), vmm.err(), started.elapsed().as_secs_f64())
}

fn json(path: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.ends_with('\n') && text.lines().count() == 1, "{text:?}");
    serde_json::from_str(&text).unwrap()
}

/// One line of /proc/PID/task/TID/status.
fn status_field(status: &str, key: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in\n{status}"))
        .trim()
        .to_string()
}

#[test]
fn the_selftest_passes_confined_as_nobody_and_every_thread_is_confined() {
    require!(support::host_access());
    let s = Scratch::new("confined");
    let ns = NetNs::create();
    let plain = abi(&s, "plain", false, "");
    let (code, out, err, _) = run(&ns, &[&plain, "--seccomp", "enforce", "--user", "65534:65534"]);
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("selftest: tx 1 frames, 3 segments, 3000 bytes"), "{out}");
    assert!(out.contains("selftest: pass"), "{out}");
    assert!(
        err.contains("running as user 65534, group 65534, without capabilities"),
        "{err}"
    );
    assert!(!err.contains("seccomp"), "{err}");
    // -v says what vmc did and decided.
    let (code, _, err, _) = run(&ns, &[&plain, "-v"]);
    assert_eq!(code, Some(0), "{err}");
    for said in [
        "probed this host",
        "this host can run the document",
        "TAP created",
        "virtio-net: the driver set DRIVER_OK",
        "the VM stopped reason=DebugExit(0)",
    ] {
        assert!(err.contains(said), "no `{said}` in\n{err}");
    }

    // A VM that keeps running, looked at from outside: every thread of it.
    let counting = abi(&s, "count", true, "");
    let sock = s.path("api.sock").display().to_string();
    let mut vmm = Vmm::start(ns.name(), &[&counting, "--user", "65534:65534", "--api-sock", &sock]);
    vmm.wait_for_count(20);
    // The control socket belongs to the user now, and still answers.
    let o = vmc(&["status", &sock]);
    assert!(stdout(&o).starts_with("running "), "{}", stderr(&o));
    let tasks = format!("/proc/{}/task", vmm.child.id());
    let mut roles = Vec::new();
    for task in std::fs::read_dir(&tasks).unwrap() {
        let dir = task.unwrap().path();
        let status = std::fs::read_to_string(dir.join("status")).unwrap();
        let name = status_field(&status, "Name");
        assert_eq!(status_field(&status, "Uid"), "65534\t65534\t65534\t65534", "{name}");
        assert_eq!(status_field(&status, "Gid"), "65534\t65534\t65534\t65534", "{name}");
        assert_eq!(status_field(&status, "Groups"), "", "{name}");
        for caps in ["CapEff", "CapPrm", "CapInh"] {
            assert_eq!(status_field(&status, caps), "0000000000000000", "{name} {caps}");
        }
        assert_eq!(status_field(&status, "NoNewPrivs"), "1", "{name}");
        // 2: a seccomp filter.
        assert_eq!(status_field(&status, "Seccomp"), "2", "{name}");
        roles.push(name);
    }
    roles.sort();
    for thread in ["vcpu0", "virtio-net", "vmc-api"] {
        assert!(roles.iter().any(|r| r == thread), "no {thread} thread among {roles:?}");
    }
    vmm.terminate();
    assert_eq!(vmm.wait(), Some(143));
}

#[test]
fn timeouts_exit_statuses_and_a_closed_console_are_told_apart() {
    require!(support::host_access());
    let s = Scratch::new("endings");
    let ns = NetNs::create();
    let status = s.path("status.json");
    let status_arg = status.display().to_string();

    // --timeout: the guest counts on, vmc ends it.
    let counting = abi(&s, "count", true, "");
    let (code, out, err, secs) = run(&ns, &[&counting, "--timeout", "1500ms", "--exit-status", &status_arg]);
    assert_eq!(code, Some(124), "{err}");
    assert!(last_count(&out) > 0, "{out}");
    assert!((1.5..10.0).contains(&secs), "{secs} s");
    assert!(err.contains("ran past --timeout"), "{err}");
    assert_eq!(
        json(&status),
        serde_json::json!({"ended_by": "host", "reason": "timeout", "exit_code": 124})
    );

    // The guest's own code 2 is not vmc's failure 2: the exit status says whose it is.
    let two = abi(&s, "two", false, "selftest.exit=2");
    let (code, _, err, _) = run(&ns, &[&two, "--exit-status", &status_arg]);
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(
        json(&status),
        serde_json::json!({"ended_by": "guest", "reason": "debug-exit", "guest_code": 2, "exit_code": 2})
    );
    let missing = s.path("missing.abi").display().to_string();
    let (code, _, err, _) = run(&ns, &[&missing, "--exit-status", &status_arg]);
    assert_eq!(code, Some(2), "{err}");
    let v = json(&status);
    assert_eq!(
        (v["ended_by"].as_str(), v["reason"].as_str()),
        (Some("vmc"), Some("error")),
        "{v}"
    );
    assert!(v["error"].as_str().unwrap().contains("missing.abi"), "{v}");

    // The console's reader goes away: the VM is stopped, and vmc says so.
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns.name(), env!("CARGO_BIN_EXE_vmc"), "run", &counting])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 20];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    // The pipe's read end is closed here, as `vmc run … | head -c 20` closes it.
    let out = wait_output(child, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(141), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the console's reader went away"),
        "{}",
        stderr(&out)
    );

    // Bad values for the new flags are named.
    for (flag, value, expected) in [
        ("--timeout", "soon", "not a duration"),
        ("--timeout", "0s", "not a duration"),
        ("--user", "nobody", "not UID[:GID]"),
        ("--seccomp", "strict", "not a seccomp mode"),
    ] {
        let o = vmc(&["run", &counting, flag, value]);
        assert_eq!(o.status.code(), Some(2), "{flag} {value}");
        assert!(stderr(&o).contains(expected), "{flag} {value}: {}", stderr(&o));
    }
}

fn wait_output(mut child: std::process::Child, limit: Duration) -> std::process::Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("vmc run did not stop within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn hostile_guests_end_cleanly_or_are_stopped_and_vmc_never_hangs() {
    require!(support::host_access());
    let s = Scratch::new("hostile");
    let ns = NetNs::create();
    let status = s.path("status.json");
    let status_arg = status.display().to_string();

    // A triple fault: its own exit status, 3.
    let triple = abi(&s, "triple", false, "selftest.triple-fault");
    let (code, out, err, _) = run(&ns, &[&triple, "--exit-status", &status_arg]);
    assert_eq!(code, Some(3), "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("selftest: triple fault"), "{out}");
    assert_eq!(json(&status)["reason"], "triple-fault");

    // Arbitrary values in every register of the network device and the UART: the
    // guest goes on to its end.
    let scribble = abi(&s, "scribble", false, "selftest.scribble");
    let (code, out, err, _) = run(&ns, &[&scribble]);
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains("selftest: scribble done") && out.contains("selftest: pass"),
        "{out}"
    );

    // The TAP deleted under the running VM: one line says so, the guest goes on.
    let counting = abi(&s, "count", true, "");
    let mut vmm = Vmm::start(ns.name(), &[&counting]);
    vmm.wait_for_count(20);
    ns.ip(&["link", "del", "vmc-st0"]);
    let gone = "vmc: net0: TAP vmc-st0 went away (";
    vmm.wait_until("the TAP's notice", |_, err| err.contains(gone));
    let at = last_count(&vmm.out());
    vmm.wait_for_count(at + 50);
    vmm.terminate();
    assert_eq!(vmm.wait(), Some(143));
    assert_eq!(vmm.err().matches(gone).count(), 1, "{}", vmm.err());
    assert!(vmm.err().contains("the device passes no more frames"), "{}", vmm.err());

    // Spinning with interrupts off: SIGTERM still stops it at once, and so does
    // --timeout.
    let spin = abi(&s, "spin", false, "selftest.spin");
    let mut vmm = Vmm::start(ns.name(), &[&spin]);
    vmm.wait_until("spinning", |out, _| out.contains("selftest: spinning"));
    std::thread::sleep(Duration::from_millis(300));
    let asked = Instant::now();
    vmm.terminate();
    assert_eq!(vmm.wait(), Some(143));
    assert!(asked.elapsed() < Duration::from_secs(5), "{:?}", asked.elapsed());
    let (code, _, err, secs) = run(&ns, &[&spin, "--timeout", "1"]);
    assert_eq!(code, Some(124), "{err}");
    assert!(secs < 10.0, "{secs} s");
}
