//! A stop signal that arrives while `vmc run` is still starting (reading a large initrd)
//! is honoured: vmc exits with 128 + the signal, the guest never runs, no TAP is left.
//! Needs root, /dev/kvm and `ip` (CI has them).

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{require, vmc, Scratch};

/// The TAP the spec names, inside the test's own network namespace.
const TAP: &str = "vmcsig0";

/// A network namespace for one test, removed when dropped.
struct NetNs(String);

impl NetNs {
    fn create(name: &str) -> NetNs {
        let name = format!("{name}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "delete", &name]).output();
        let o = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .expect("run ip");
        assert!(
            o.status.success(),
            "ip netns add {name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        NetNs(name)
    }

    fn has_link(&self, link: &str) -> bool {
        Command::new("ip")
            .args(["netns", "exec", &self.0, "ip", "link", "show", link])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run ip")
            .success()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.0]).output();
    }
}

/// Whether process `pid` catches `signal` (its handler is installed).
fn catches(pid: u32, signal: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (signal - 1)) != 0)
}

#[test]
fn sigterm_while_vmc_run_starts_exits_143_without_running_the_guest_or_leaving_a_tap() {
    require!(support::host_access());
    let s = Scratch::new("startup-sigterm");
    let o = vmc(&["selftest-guest", "-o", &s.path("selftest.elf").display().to_string()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // 200 MB, sparse: reading it and copying it into guest memory takes a while.
    let initrd = std::fs::File::create(s.path("initrd.img")).expect("initrd");
    initrd.set_len(200 << 20).expect("size the initrd");
    drop(initrd);
    let spec = s.write(
        "vm.kdl",
        format!(
            "vm \"st\" {{\n    cpu-model \"x86-64-v1\"\n    memory \"512MiB\"\n    boot {{\n        kernel \"selftest.elf\"\n        initrd \"initrd.img\"\n        cmdline \"console=ttyS0\"\n    }}\n    net \"net0\" {{\n        tap \"{TAP}\"\n    }}\n}}\n"
        ),
    );
    let ns = NetNs::create("vmc-startsig");

    // `ip netns exec` execs vmc: the child's pid is vmc's.
    let mut child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.0,
            env!("CARGO_BIN_EXE_vmc"),
            "run",
            &spec,
            "--stats",
        ])
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start vmc run");
    let pid = child.id();
    // As soon as vmc catches SIGTERM (it has begun to start the VM), send it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !catches(pid, 15) {
        if let Some(status) = child.try_wait().unwrap() {
            let o = child.wait_with_output().unwrap();
            panic!(
                "vmc run ended ({status}) before catching SIGTERM:\n{}\n{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
        }
        assert!(Instant::now() < deadline, "vmc run never installed its SIGTERM handler");
        std::thread::sleep(Duration::from_millis(1));
    }
    let sent = Instant::now();
    assert!(Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success());

    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "vmc run did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(10));
    }
    let o = child.wait_with_output().unwrap();
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    eprintln!("vmc run stopped {:?} after SIGTERM; stderr:\n{err}", sent.elapsed());
    assert_eq!(o.status.code(), Some(128 + 15), "stdout:\n{out}\nstderr:\n{err}");
    assert!(!out.contains("selftest:"), "the guest ran:\n{out}");
    assert!(err.contains("Signal(15)"), "{err}");
    assert!(!ns.has_link(TAP), "vmc run left its TAP {TAP} behind");
}
