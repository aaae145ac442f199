//! What could not be measured is said as such, never taken as absent: `vmc probe` as an
//! unprivileged user lists it, `check` and `run` cannot tell (exit 2, with the reason),
//! `place`, `compile --pool` and `platforms --host` say so for probe files and for this
//! host. And a guest larger than this host's RAM is warned about.
//!
//! The unprivileged runs use `setpriv` to drop from root to nobody (65534), so they need
//! root; without it they print `SKIPPED <test>: needs root` (and fail under CI=true).

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

use support::{repo, require, stderr, stdout, vmc, Scratch};

/// A spec with a virtio-net device: it needs TAP offloads, which nobody can measure (a
/// TAP cannot be created without CAP_NET_ADMIN).
const NET_SPEC: &str = "vm \"n\" {\n    cpu-model \"x86-64-v1\"\n    net \"net0\"\n}\n";
/// A spec without devices: it needs only KVM and CPU features.
const PLAIN_SPEC: &str = "vm \"p\" {\n    cpu-model \"x86-64-v1\"\n}\n";

/// Whether this test can run vmc as an unprivileged user: it needs root (to drop to
/// nobody) and `setpriv`. A check for [`require!`].
fn can_drop_privileges() -> Result<(), String> {
    if support::effective_uid() != 0 {
        Err("needs root".to_string())
    } else if Command::new("setpriv").arg("--version").output().is_err() {
        Err("needs setpriv (util-linux)".to_string())
    } else {
        Ok(())
    }
}

/// Runs vmc as nobody, with no supplementary groups.
fn vmc_as_nobody(args: &[&str]) -> Output {
    Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            env!("CARGO_BIN_EXE_vmc"),
        ])
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run vmc through setpriv")
}

/// Whether nobody can open this device (read and write for others).
fn open_to_all(device: &str) -> bool {
    std::fs::metadata(device).is_ok_and(|m| m.permissions().mode() & 0o006 == 0o006)
}

/// A scratch directory nobody can read, with a document compiled from `spec`.
fn compiled(name: &str, spec: &str) -> (Scratch, String) {
    let s = Scratch::new(name);
    std::fs::set_permissions(&s.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = s.write("vm.kdl", spec);
    let o = vmc(&["compile", &path, "--platform", "linux-6.9"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let abi = s.path("vm.abi").display().to_string();
    std::fs::set_permissions(&abi, std::fs::Permissions::from_mode(0o644)).unwrap();
    (s, abi)
}

#[test]
fn probe_as_an_unprivileged_user_lists_what_it_could_not_measure() {
    require!(can_drop_privileges());
    let o = vmc_as_nobody(&["probe", "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let parts: Vec<&str> = v["unmeasured"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["what"].as_str().unwrap())
        .collect();
    assert!(parts.contains(&"tap-offloads"), "{v}");
    assert_eq!(v["tap-offloads"], serde_json::json!([]));
    let err = stderr(&o);
    assert!(err.contains("this host: tap-offloads not measured: "), "{err}");
    if !open_to_all("/dev/kvm") {
        assert!(
            parts.contains(&"kvm-capabilities") && parts.contains(&"cpu-features"),
            "{v}"
        );
        let why = v["unmeasured"][1]["why"].as_str().unwrap();
        assert!(why.starts_with("cannot open /dev/kvm: EACCES"), "{why}");
        assert!(
            err.contains("kvm-capabilities not measured: cannot open /dev/kvm"),
            "{err}"
        );
    }
    // The same in KDL: an `unmeasured` block, each part with why.
    let kdl = vmc_as_nobody(&["probe"]);
    assert_eq!(kdl.status.code(), Some(1), "{}", stderr(&kdl));
    let text = stdout(&kdl);
    assert!(text.contains("    unmeasured {\n        tap-offloads \""), "{text}");

    // Both probe files say "cannot tell" to place, and compile --pool refuses them.
    let (s, abi) = compiled("unmeasured-probe", NET_SPEC);
    let json_probe = s.write("nobody.json", stdout(&o));
    let kdl_probe = s.write("nobody.kdl", &text);
    for probe in [&json_probe, &kdl_probe] {
        let o = vmc(&["place", &abi, probe]);
        assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
        assert!(
            // The probe is named after this host (its hostname, else `host`).
            stdout(&o).contains("): cannot tell: not measured: "),
            "{}",
            stdout(&o)
        );
        assert!(stdout(&o).contains("tap-offloads not measured: "), "{}", stdout(&o));
        assert!(!stdout(&o).contains("cannot run"), "{}", stdout(&o));
        let out = s.path("pool.abi").display().to_string();
        let o = vmc(&[
            "compile",
            &s.path("vm.kdl").display().to_string(),
            "--pool",
            probe,
            "-o",
            &out,
        ]);
        assert_eq!(o.status.code(), Some(2));
        assert!(
            stderr(&o).contains("cannot tell which platform every host of the pool supports"),
            "{}",
            stderr(&o)
        );
        assert!(!s.path("pool.abi").exists());
    }
    // A probe not measured in full is no platform for --platform-path.
    let dir = s.path("platforms");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("nobody.kdl"), &text).unwrap();
    let o = vmc(&["platforms", "--platform-path", &dir.display().to_string()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("was not measured in full"), "{}", stderr(&o));
}

#[test]
fn check_and_run_as_an_unprivileged_user_cannot_tell() {
    require!(can_drop_privileges());
    let (_s, abi) = compiled("unmeasured-check", NET_SPEC);
    let o = vmc_as_nobody(&["check", &abi]);
    assert_eq!(o.status.code(), Some(2), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).is_empty(), "{}", stdout(&o));
    let err = stderr(&o);
    assert!(err.contains("cannot tell whether this host can run"), "{err}");
    assert!(err.contains("this host: tap-offloads not measured: "), "{err}");
    assert!(!err.contains("lacks"), "{err}");
    let o = vmc_as_nobody(&["run", &abi]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stdout(&o).is_empty(), "the guest must not start: {}", stdout(&o));
    assert!(
        stderr(&o).contains("not measured; nothing was started"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("tap-offloads not measured: "), "{}", stderr(&o));

    // Without access to /dev/kvm, a VM without devices cannot be told either.
    if open_to_all("/dev/kvm") {
        eprintln!("NOTE: /dev/kvm is open to all here; its part is measured");
        return;
    }
    let (_s, abi) = compiled("unmeasured-check-kvm", PLAIN_SPEC);
    for command in ["check", "run"] {
        let o = vmc_as_nobody(&[command, &abi]);
        assert_eq!(o.status.code(), Some(2), "{command}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains("cpu-features not measured: cannot open /dev/kvm: EACCES (Permission denied)"),
            "{command}: {err}"
        );
        assert!(err.contains("kvm-capabilities not measured"), "{command}: {err}");
        assert!(!err.contains("lacks"), "{command}: {err}");
    }
    // As root the same documents can be checked (the probe measures everything).
    let o = vmc(&["check", &abi]);
    assert_ne!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn platforms_host_and_compile_as_an_unprivileged_user_cannot_tell() {
    require!(can_drop_privileges());
    let o = vmc_as_nobody(&["platforms", "--host"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("linux-6.9   cannot tell: not measured: tap-offloads"),
        "{out}"
    );
    assert!(!out.contains("not supported"), "{out}");
    assert!(stderr(&o).contains("tap-offloads not measured: "), "{}", stderr(&o));
    let o = vmc_as_nobody(&["platforms", "--host", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let row = v.as_array().unwrap().iter().find(|p| p["name"] == "linux-6.9").unwrap();
    assert_eq!(row["supported"], false);
    assert_eq!(row["missing"], serde_json::json!([]));
    assert_eq!(row["verdict"], "cannot-tell");
    let unmeasured = row["unmeasured"].as_array().unwrap();
    let tap = unmeasured
        .iter()
        .find(|u| u["what"] == "tap-offloads")
        .expect("tap-offloads unmeasured");
    assert!(tap["why"].as_str().is_some_and(|w| !w.is_empty()), "{row}");
    assert!(
        tap["needed"].as_array().unwrap().iter().any(|n| n["name"] == "uso4"),
        "{row}"
    );

    let s = Scratch::new("unmeasured-compile");
    std::fs::set_permissions(&s.0, std::fs::Permissions::from_mode(0o777)).unwrap();
    let spec = s.write("vm.kdl", NET_SPEC);
    for command in ["compile", "run"] {
        let o = vmc_as_nobody(&[command, &spec]);
        assert_eq!(o.status.code(), Some(2), "{command}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains("cannot tell which platform this host supports"),
            "{command}: {err}"
        );
        assert!(err.contains("tap-offloads not measured: "), "{command}: {err}");
    }
    assert!(!s.path("vm.abi").exists());
    // Naming the platform compiles as before.
    let o = vmc_as_nobody(&["compile", &spec, "--platform", "linux-6.9"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

/// `new-6.9.json` (a host that can run anything the specs here ask for) with `part` not
/// measured: its list emptied, and an `unmeasured` entry.
fn unmeasured_json(part: &str, entry: serde_json::Value) -> String {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("tests/hosts/new-6.9.json")).unwrap()).unwrap();
    v[part] = serde_json::json!([]);
    v["unmeasured"] = serde_json::json!([entry]);
    serde_json::to_string_pretty(&v).unwrap()
}

/// The same host in KDL, with an `unmeasured` block.
fn unmeasured_kdl(part: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("tests/hosts/new-6.9.json")).unwrap()).unwrap();
    let list = |key: &str| {
        if key == part {
            return String::new();
        }
        v[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| format!(" {s}"))
            .collect::<String>()
    };
    format!(
        "format 1\nplatform \"rack9\" {{\n    kernel \"6.9\"\n    tap-offloads{}\n    kvm-capabilities{}\n    cpu-features{}\n    unmeasured {{\n        {part} \"cannot open /dev/net/tun: EACCES (Permission denied)\"\n    }}\n}}\n",
        list("tap-offloads"),
        list("kvm-capabilities"),
        list("cpu-features")
    )
}

#[test]
fn probe_files_with_unmeasured_parts_cannot_tell_in_place_and_pools() {
    let s = Scratch::new("unmeasured-files");
    let web = repo().join("specs/web.kdl").display().to_string();
    let doc = s.path("web.abi").display().to_string();
    assert!(vmc(&["compile", &web, "--platform", "linux-6.9", "-o", &doc])
        .status
        .success());
    let why = "cannot open /dev/net/tun: EACCES (Permission denied)";
    let files = [
        (
            "tap.json",
            unmeasured_json("tap-offloads", serde_json::json!({"what": "tap-offloads", "why": why})),
        ),
        ("tap.kdl", unmeasured_kdl("tap-offloads")),
        (
            "cpu.json",
            unmeasured_json("cpu-features", serde_json::json!({"what": "cpu-features", "why": why})),
        ),
        ("cpu.kdl", unmeasured_kdl("cpu-features")),
        // As earlier versions wrote it: a sentence, for every part.
        (
            "sentence.json",
            unmeasured_json("kvm-capabilities", serde_json::json!(format!("KVM: {why}"))),
        ),
    ];
    let good = repo().join("tests/hosts/new-6.9.json").display().to_string();
    let old = repo().join("tests/hosts/old-5.15.json").display().to_string();
    for (name, text) in &files {
        let probe = s.write(name, text);
        let part = if name.starts_with("cpu") {
            "cpu-features"
        } else if name.starts_with("tap") {
            "tap-offloads"
        } else {
            "kvm-capabilities"
        };
        // Alone: cannot tell, naming the part and why; exit 2.
        let o = vmc(&["place", &doc, &probe]);
        assert_eq!(o.status.code(), Some(2), "{name}: {}", stdout(&o));
        let out = stdout(&o);
        assert!(
            out.contains(&format!("{name} (")) && out.contains("): cannot tell: not measured: "),
            "{name}: {out}"
        );
        assert!(
            out.contains(&format!("host: {part} not measured: ")) && out.contains(why),
            "{name}: {out}"
        );
        assert!(out.contains("so cannot tell whether it has the"), "{name}: {out}");
        assert!(!out.contains("cannot run"), "{name}: {out}");
        let o = vmc(&["place", "--json", &doc, &probe]);
        assert_eq!(o.status.code(), Some(2));
        let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        assert_eq!(v[0]["verdict"], "cannot-tell", "{name}");
        assert_eq!(v[0]["can-run"], false);
        assert_eq!(v[0]["missing"], serde_json::json!([]));
        assert!(
            v[0]["unmeasured"].as_array().unwrap().iter().any(|u| u["what"] == part),
            "{name}: {v}"
        );
        // With a host that can run it: exit 0. With one that cannot: still cannot tell.
        let o = vmc(&["place", &doc, &probe, &good]);
        assert_eq!(o.status.code(), Some(0), "{name}: {}", stdout(&o));
        let o = vmc(&["place", &doc, &probe, &old]);
        assert_eq!(o.status.code(), Some(2), "{name}: {}", stdout(&o));
        assert!(stdout(&o).contains("(rack1-old): cannot run it"), "{}", stdout(&o));
        // A pool refuses it, naming the file, the part and why; nothing written.
        let out_path = s.path("pool.abi").display().to_string();
        let o = vmc(&["compile", &web, "--pool", &good, &probe, "-o", &out_path]);
        assert_eq!(o.status.code(), Some(2), "{name}");
        let err = stderr(&o);
        assert!(
            err.contains(&format!("{name} (")) && err.contains(&format!("{part} not measured: ")),
            "{name}: {err}"
        );
        assert!(!s.path("pool.abi").exists());
    }
    // A part not measured that the document does not need changes nothing.
    let plain = s.write("plain.kdl", PLAIN_SPEC);
    let plain_doc = s.path("plain.abi").display().to_string();
    assert!(vmc(&["compile", &plain, "--platform", "linux-6.9", "-o", &plain_doc])
        .status
        .success());
    let o = vmc(&[
        "place",
        &plain_doc,
        &s.path("tap.json").display().to_string(),
        &s.path("tap.kdl").display().to_string(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert_eq!(stdout(&o).matches(": can run blake3:").count(), 2, "{}", stdout(&o));
    // A malformed entry is refused with where it is.
    let bad = s.write(
        "bad.json",
        unmeasured_json("tap-offloads", serde_json::json!({"what": "memory", "why": why})),
    );
    let o = vmc(&["place", &doc, &bad]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("unknown part `memory` in `unmeasured`"),
        "{}",
        stderr(&o)
    );
    let bad = s.write(
        "bad.kdl",
        unmeasured_kdl("tap-offloads").replace("tap-offloads \"cannot", "tap-offload \"cannot"),
    );
    let o = vmc(&["place", &doc, &bad]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("unknown part `tap-offload`"), "{}", stderr(&o));
}

/// This host's RAM, from /proc/meminfo.
fn host_ram() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.trim().strip_suffix("kB"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap();
    kib * 1024
}

#[test]
fn check_and_run_warn_when_guest_memory_exceeds_host_ram() {
    require!(support::host_access());
    let ram = host_ram();
    let s = Scratch::new("memory-warning");
    let mut codes = Vec::new();
    for (size, bytes) in [("1TiB", 1u64 << 40), ("64GiB", 64 << 30), ("512MiB", 512 << 20)] {
        let spec = s.write(
            &format!("{size}.kdl"),
            format!("vm \"m\" {{\n    cpu-model \"x86-64-v1\"\n    memory \"{size}\"\n}}\n"),
        );
        let o = vmc(&["compile", &spec, "--platform", "linux-6.9"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let abi = s.path(&format!("{size}.abi")).display().to_string();
        let check = vmc(&["check", &abi]);
        codes.push(check.status.code());
        // A document without a kernel: run stops at that, after the warning.
        let run = vmc(&["run", &abi]);
        assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
        assert!(stderr(&run).contains("names no kernel"), "{}", stderr(&run));
        for (command, o) in [("check", &check), ("run", &run)] {
            let err = stderr(o);
            if bytes > ram {
                assert!(err.contains("warning: the guest's memory, "), "{command} {size}: {err}");
                assert!(err.contains(&format!("({bytes} bytes)")), "{command} {size}: {err}");
                assert!(
                    err.contains("this host's RAM, ") && err.contains(&format!("({ram} bytes)")),
                    "{command} {size}: {err}"
                );
            } else {
                assert!(!err.contains("warning: the guest's memory"), "{command} {size}: {err}");
            }
        }
        if bytes <= ram && bytes > 512 << 20 {
            eprintln!("NOTE: this host has {ram} bytes of RAM, not less than {size}: no warning expected");
        }
    }
    // The warning changes no exit status: every size gets the same answer.
    assert!(codes.iter().all(|c| *c == codes[2]), "{codes:?}");
    assert!(matches!(codes[2], Some(0) | Some(1)), "{codes:?}");
}

#[test]
fn an_unprivileged_check_still_warns_about_memory() {
    require!(can_drop_privileges());
    let (_s, abi) = compiled("memory-nobody", &PLAIN_SPEC.replace("}\n", "    memory \"1TiB\"\n}\n"));
    let o = vmc_as_nobody(&["check", &abi]);
    let err = stderr(&o);
    if host_ram() < 1 << 40 {
        assert!(
            err.contains("warning: the guest's memory, 1 TiB (1099511627776 bytes), is more than this host's RAM"),
            "{err}"
        );
    }
    // The answer is unchanged by it: what nobody can measure decides.
    let expected = if open_to_all("/dev/kvm") {
        vmc(&["check", &abi]).status.code()
    } else {
        Some(2)
    };
    assert_eq!(o.status.code(), expected, "{err}");
}
