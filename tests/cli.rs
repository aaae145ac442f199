//! The command line, end to end: every command, and every class of bad input gives a
//! clear error and exit status 2, never a panic, never a (partial) output file.

mod support;

use support::{stderr, stdout, vmc, Scratch};

fn spec(name: &str) -> String {
    support::repo().join("specs").join(name).display().to_string()
}

/// Compiles a spec into the scratch directory and returns the document's path.
fn compiled(s: &Scratch, spec_file: &str, platform: &str) -> String {
    let out = s.path(&format!("{spec_file}-{platform}.abi")).display().to_string();
    let o = vmc(&["compile", &spec(spec_file), "--platform", platform, "-o", &out]);
    assert!(o.status.success(), "{}", stderr(&o));
    out
}

#[test]
fn compile_writes_the_document_next_to_the_spec_and_prints_the_hash() {
    let s = Scratch::new("compile-default-out");
    let text = std::fs::read_to_string(spec("web.kdl")).unwrap();
    let spec_path = s.write("web.kdl", &text);
    let o = vmc(&["compile", &spec_path, "--platform", "linux-6.9"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let abi = std::fs::read_to_string(s.path("web.abi")).expect("web.abi written");
    let hash = stdout(&o).trim().to_string();
    assert!(hash.starts_with("blake3:") && hash.len() == 7 + 64, "{hash}");
    assert!(abi.contains(&format!("hash \"{hash}\"")));
    // Boot paths are made absolute against the spec's directory.
    let dir = std::fs::canonicalize(&s.0).unwrap();
    assert!(
        abi.contains(&format!("kernel \"{}/guest/vmlinuz\"", dir.display())),
        "{abi}"
    );
    // `-o -` writes to stdout.
    let o = vmc(&["compile", &spec_path, "--platform", "linux-6.9", "-o", "-"]);
    assert_eq!(stdout(&o), abi);
}

#[test]
fn the_done_when_example_uso_differs_between_5_15_and_6_9() {
    let s = Scratch::new("uso-diff");
    let a = compiled(&s, "web.kdl", "linux-5.15");
    let b = compiled(&s, "web.kdl", "linux-6.9");
    let o = vmc(&["diff", &a, &b]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out = stdout(&o);
    let changed: Vec<&str> = out
        .lines()
        .filter(|l| !l.starts_with("---") && !l.starts_with("+++"))
        .map(|l| l.split(':').next().unwrap())
        .collect();
    assert_eq!(
        changed,
        [
            "devices.net0.guest-uso4",
            "devices.net0.guest-uso6",
            "devices.net0.host-uso",
            "devices.net0.device-features"
        ],
        "{out}"
    );
    assert!(out.contains("devices.net0.host-uso: #false (platform linux-5.15) -> #true (platform linux-6.9)"));
    assert!(out.contains("devices.net0.device-features: +54 GUEST_USO4, +55 GUEST_USO6, +56 HOST_USO"));
    // Equal documents: exit 0.
    let o = vmc(&["diff", &a, &a]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).starts_with("no guest-visible difference"));
}

#[test]
fn show_json_has_the_contract_shape() {
    let s = Scratch::new("show-json");
    let abi = compiled(&s, "web.kdl", "linux-6.9");
    let o = vmc(&["show", &abi, "--json"]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("valid JSON");
    assert_eq!(v["format"], 1);
    assert_eq!(v["platform"], "linux-6.9");
    assert!(v["hash"].as_str().unwrap().starts_with("blake3:"));
    let abi_json = &v["abi"];
    assert_eq!(abi_json["machine"], "microvm-1.0");
    assert_eq!(abi_json["cpu"]["model"], "x86-64-v2");
    assert_eq!(abi_json["cpu"]["count"], 2);
    assert!(abi_json["cpu"]["features"]
        .as_array()
        .unwrap()
        .contains(&"sse4.2".into()));
    assert_eq!(abi_json["memory"], 512u64 << 20);
    let dev = &abi_json["devices"][0];
    assert_eq!(dev["id"], "net0");
    assert_eq!(dev["kind"], "virtio-net");
    assert_eq!(dev["host-uso"], true);
    assert_eq!(dev["mac"], "52:54:00:12:34:56");
    assert_eq!(dev["rx-queue-size"], 256);
    assert_eq!(dev["mmio-base"], 0xfeb0_0e00u64);
    assert_eq!(dev["irq"], 12);
    let bits: Vec<u64> = dev["device-features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_u64().unwrap())
        .collect();
    let mut sorted = bits.clone();
    sorted.sort_unstable();
    assert_eq!(bits, sorted);
    assert!(bits.contains(&56) && bits.contains(&32));
    // Every schema property is present under its KDL name.
    for p in vmc_compiler::schema::VIRTIO_NET {
        assert!(dev.get(p.name).is_some(), "{} missing from JSON", p.name);
    }
    // The plain form is the document itself.
    let o = vmc(&["show", &abi]);
    assert_eq!(stdout(&o), std::fs::read_to_string(&abi).unwrap());
}

#[test]
fn hash_recomputes_and_refuses_an_edited_document() {
    let s = Scratch::new("hash");
    let abi = compiled(&s, "web.kdl", "linux-6.9");
    let o = vmc(&["hash", &abi]);
    assert!(o.status.success());
    let text = std::fs::read_to_string(&abi).unwrap();
    assert!(text.contains(&format!("hash \"{}\"", stdout(&o).trim())));
    let edited = s.write("edited.abi", text.replace("memory 536870912", "memory 1073741824"));
    for cmd in ["hash", "show", "explain"] {
        let o = vmc(&[cmd, &edited]);
        assert_eq!(o.status.code(), Some(2), "{cmd}");
        assert!(
            stderr(&o).contains("stored hash does not match"),
            "{cmd}: {}",
            stderr(&o)
        );
    }
    let o = vmc(&["diff", &abi, &edited]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn explain_names_each_value_and_its_origin() {
    let s = Scratch::new("explain");
    let abi = compiled(&s, "web.kdl", "linux-6.9");
    // Values are aligned in columns; compare with runs of spaces collapsed.
    let explain = |args: &[&str]| {
        let o = vmc(&[&["explain", abi.as_str()], args].concat());
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
            .split(' ')
            .filter(|w| !w.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let out = explain(&["host-uso"]);
    assert!(out.contains("devices.net0.host-uso = #true"), "{out}");
    assert!(out.contains("from platform linux-6.9"), "{out}");
    assert!(out.contains("virtio feature bit 56 (HOST_USO)"), "{out}");
    assert!(out.contains("requires csum"), "{out}");
    let out = explain(&["cpu.count"]);
    assert!(out.contains("cpu.count = 2"), "{out}");
    assert!(out.contains("web.kdl:4:10"), "{out}");
    let out = explain(&[]);
    assert!(out.contains("devices.net0.csum = #true"), "{out}");
    assert!(out.contains("from machine type microvm-1.0"));
    let o = vmc(&["explain", &abi, "host-usoo"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("did you mean `host-uso`?"), "{}", stderr(&o));
}

#[test]
fn platforms_lists_builtins_and_third_party_files() {
    let o = vmc(&["platforms"]);
    assert!(o.status.success());
    for name in [
        "linux-5.10",
        "linux-5.15",
        "linux-6.1",
        "linux-6.2",
        "linux-6.6",
        "linux-6.9",
        "linux-6.12",
    ] {
        assert!(stdout(&o).contains(name), "{name}");
    }
    let dir = support::repo().join("specs/platforms").display().to_string();
    let o = vmc(&["platforms", "--json", "--platform-path", &dir]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let acme = v
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "acme-9")
        .expect("acme-9 listed");
    assert_eq!(acme["kernel"], "5.14");
    assert!(acme["tap-offloads"].as_array().unwrap().contains(&"uso4".into()));
    let first = &v[0];
    assert_eq!(first["name"], "linux-5.10", "oldest first");
}

#[test]
fn a_third_party_platform_with_backported_uso_enables_it() {
    let s = Scratch::new("acme");
    let dir = support::repo().join("specs/platforms").display().to_string();
    let out = s.path("router.abi").display().to_string();
    let o = vmc(&[
        "compile",
        &spec("router.kdl"),
        "--platform-path",
        &dir,
        "--platform",
        "acme-9",
        "-o",
        &out,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = vmc(&["explain", &out, "devices.wan.host-uso"]);
    assert!(stdout(&o).contains("= #true"));
    // The same spec on the upstream kernel it is based on is refused.
    let o = vmc(&[
        "compile",
        &spec("router.kdl"),
        "--platform",
        "linux-5.10",
        "-o",
        &s.path("x.abi").display().to_string(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(!s.path("x.abi").exists());
}

#[test]
fn machines_prints_full_default_tables() {
    let o = vmc(&["machines", "microvm-1.1"]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("virtio-net rx-queue-size 1024"));
    assert!(stdout(&o).contains("virtio-net host-uso (platform)"));
    let o = vmc(&["machines", "microvm-9"]);
    assert_eq!(o.status.code(), Some(2));
}

/// Every class of bad input: exit 2, a message naming the problem, no output file.
#[test]
fn bad_input_is_a_clear_error_and_writes_nothing() {
    let s = Scratch::new("bad-input");
    let deep = format!("vm \"x\" {}{}", "{ a ".repeat(5000), "}".repeat(5000));
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("malformed", b"vm \"x\" {\n  cpus 2\n".to_vec(), "vmc::kdl::syntax"),
        ("empty", b"".to_vec(), "is empty"),
        ("binary", b"\x7fELF\x02\x01\x01\x00\x00".to_vec(), "binary file"),
        ("latin1", b"vm \"caf\xe9\"".to_vec(), "not valid UTF-8"),
        ("deep", deep.into_bytes(), "nesting deeper"),
        ("cpus0", b"vm \"x\" { cpus 0 }".to_vec(), "1 to 254 vCPUs"),
        (
            "queue",
            b"vm \"x\" { net \"n\" { rx-queue-size 300 } }".to_vec(),
            "not a power of two",
        ),
        ("negmem", b"vm \"x\" { memory -1 }".to_vec(), "must not be negative"),
        (
            "bigmem",
            b"vm \"x\" { memory \"99999999999999TiB\" }".to_vec(),
            "too large",
        ),
        (
            "hugeint",
            b"vm \"x\" { memory 999999999999999999999999999 }".to_vec(),
            "too large",
        ),
        (
            "oddmem",
            b"vm \"x\" { memory 5000000 }".to_vec(),
            "whole number of 8 KiB",
        ),
        (
            "dupid",
            b"vm \"x\" { net \"n\"; net \"n\" }".to_vec(),
            "device id `n` is used twice",
        ),
        (
            "multicast",
            b"vm \"x\" { net \"n\" { mac \"01:00:5e:00:00:01\" } }".to_vec(),
            "multicast",
        ),
        (
            "badmac",
            b"vm \"x\" { net \"n\" { mac \"52:54:00:zz:00:01\" } }".to_vec(),
            "not two hexadecimal digits",
        ),
        (
            "machine",
            b"vm \"x\" { machine \"microvm-2.0\" }".to_vec(),
            "unknown machine type",
        ),
        (
            "cpumodel",
            b"vm \"x\" { cpu-model \"x86-64-v5\" }".to_vec(),
            "unknown CPU model",
        ),
        (
            "typo",
            b"vm \"x\" { net \"n\" { host-usoo #true } }".to_vec(),
            "did you mean `host-uso`?",
        ),
        (
            "node",
            b"vm \"x\" { memroy \"1GiB\" }".to_vec(),
            "did you mean `memory`?",
        ),
        (
            "type",
            b"vm \"x\" { net \"n\" { csum \"yes\" } }".to_vec(),
            "expects a boolean",
        ),
        (
            "unimpl",
            b"vm \"x\" { net \"n\" { ctrl-vq #true } }".to_vec(),
            "no control virtqueue",
        ),
        (
            "dep",
            b"vm \"x\" { net \"n\" { csum #false; host-tso4 #true } }".to_vec(),
            "`host-tso4` needs `csum`",
        ),
        (
            "uso515",
            b"vm \"x\" { net \"n\" { host-uso #true } }".to_vec(),
            "Linux 6.2+",
        ),
        (
            "toomany",
            format!(
                "vm \"x\" {{ {} }}",
                (0..9).map(|i| format!("net \"n{i}\"")).collect::<Vec<_>>().join("; ")
            )
            .into_bytes(),
            "8 virtio-mmio slots",
        ),
    ];
    for (name, bytes, expect) in cases {
        let spec_path = s.write(&format!("{name}.kdl"), &bytes);
        let out = s.path(&format!("{name}.abi"));
        let o = vmc(&[
            "compile",
            &spec_path,
            "--platform",
            "linux-5.15",
            "-o",
            &out.display().to_string(),
        ]);
        assert_eq!(o.status.code(), Some(2), "{name}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(expect),
            "{name}: expected `{expect}` in:\n{}",
            stderr(&o)
        );
        assert!(!stderr(&o).contains("panicked"), "{name}");
        assert!(!out.exists(), "{name}: an output file was written");
    }
}

#[test]
fn spec_errors_point_at_the_source_with_a_fix() {
    let s = Scratch::new("spans");
    let spec_path = s.write(
        "uso.kdl",
        "vm \"x\" {\n    net \"n\" {\n        host-uso #true\n    }\n}\n",
    );
    let o = vmc(&[
        "compile",
        &spec_path,
        "--platform",
        "linux-5.15",
        "-o",
        &s.path("uso.abi").display().to_string(),
    ]);
    let err = stderr(&o);
    assert!(err.contains("`host-uso` needs TAP offload uso4+uso6"), "{err}");
    assert!(err.contains("platform `linux-5.15` lacks it"), "{err}");
    assert!(err.contains("uso.kdl:3:18"), "{err}");
    assert!(err.contains("host-uso #true"), "the snippet is shown: {err}");
    assert!(
        err.contains("help: compile for a platform that has it (`linux-6.2` or newer), or set `host-uso #false`"),
        "{err}"
    );
}

#[test]
fn platform_errors_name_the_choices() {
    let s = Scratch::new("platform-errors");
    let o = vmc(&[
        "compile",
        &spec("web.kdl"),
        "--platform",
        "linux-6.99",
        "-o",
        &s.path("a.abi").display().to_string(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("unknown platform `linux-6.99`"));
    assert!(
        stderr(&o).contains("known platforms: linux-5.10, linux-5.15"),
        "{}",
        stderr(&o)
    );
    // A broken third-party platform file is reported with its span.
    s.write("bad.kdl", "platform \"broken\" { inherits \"linux-9\" }\n");
    let o = vmc(&["platforms", "--platform-path", &s.0.display().to_string()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("inherits unknown platform `linux-9`"),
        "{}",
        stderr(&o)
    );
    assert!(!s.path("a.abi").exists());
}

#[test]
fn reading_garbage_as_a_document_is_an_error() {
    let s = Scratch::new("garbage-abi");
    for (name, bytes) in [
        ("spec.abi", std::fs::read(spec("web.kdl")).unwrap()),
        ("empty.abi", Vec::new()),
        ("bin.abi", vec![0u8, 1, 2, 3, 255]),
        ("future.abi", b"format 2\nhash \"x\"".to_vec()),
    ] {
        let p = s.write(name, bytes);
        let o = vmc(&["show", &p]);
        assert_eq!(o.status.code(), Some(2), "{name}");
        assert!(!stderr(&o).contains("panicked"), "{name}");
    }
    let o = vmc(&["show", &s.path("missing.abi").display().to_string()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cannot read"));
}

#[test]
fn help_describes_every_command() {
    let o = vmc(&["--help"]);
    for cmd in [
        "compile",
        "show",
        "hash",
        "explain",
        "diff",
        "platforms",
        "machines",
        "labels",
        "affinity",
    ] {
        assert!(stdout(&o).contains(cmd), "{cmd}");
    }
    let o = vmc(&["compile", "--help"]);
    assert!(stdout(&o).contains("--platform-path"));
    // The exit statuses of the top-level help hold for every command.
    let o = vmc(&["--help"]);
    let help = stdout(&o);
    for said in [
        "`check` found",
        "`place` found",
        "`probe`",
        "`diff` found",
        "vmc run --help",
        "Examples:",
    ] {
        assert!(help.contains(said), "{said}: {help}");
    }
    // --to takes a value clap knows, so a wrong one is named with the right ones.
    let o = vmc(&["lower", "x.abi", "--to", "firecracker"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("[possible values: qemu]"), "{}", stderr(&o));
}

/// Every command, as clap knows it (`help` included).
fn every_command() -> Vec<String> {
    let o = vmc(&["--help"]);
    let help = stdout(&o);
    let list = help.split("Commands:\n").nth(1).unwrap().split("\n\n").next().unwrap();
    let names: Vec<String> = list
        .lines()
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    assert!(names.len() > 20 && names.contains(&"man".to_string()), "{names:?}");
    names
}

#[test]
fn completions_for_each_shell_know_every_command() {
    let commands = every_command();
    for shell in ["bash", "zsh", "fish"] {
        let o = vmc(&["completions", shell]);
        assert!(o.status.success(), "{shell}: {}", stderr(&o));
        let script = stdout(&o);
        for c in &commands {
            assert!(script.contains(c.as_str()), "{shell} completion lacks {c}");
        }
        // Options complete too, and --to's values.
        assert!(script.contains("platform-path"), "{shell}");
        assert!(script.contains("qemu"), "{shell}");
    }
    let o = vmc(&["completions", "tcsh"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn man_prints_a_roff_page_that_lists_every_command() {
    let o = vmc(&["man"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let page = stdout(&o);
    assert!(page.contains(".TH vmc 1"), "{page}");
    let subcommands = page.split(".SH SUBCOMMANDS").nth(1).expect("a SUBCOMMANDS section");
    for c in every_command() {
        // roff escapes the `-` of a name: selftest\-guest.
        let roff = format!("vmc\\-{}(1)", c.replace('-', "\\-"));
        assert!(subcommands.contains(&roff), "{roff} missing from the man page");
        if c == "help" {
            continue;
        }
        let o = vmc(&["man", &c]);
        assert!(o.status.success(), "{c}: {}", stderr(&o));
        let sub = stdout(&o);
        assert!(sub.contains(&format!(".TH vmc-{c} 1")), "{c}: {sub}");
    }
    assert!(page.contains("Exit status: 0 success"), "{page}");
    let o = vmc(&["man", "nonsense"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no command `nonsense`"), "{}", stderr(&o));
}

#[test]
fn properties_documents_each_schema_row() {
    let o = vmc(&["properties", "host-uso"]);
    assert!(o.status.success());
    let out = stdout(&o);
    assert!(out.contains("virtio feature bit 56 (HOST_USO)"), "{out}");
    assert!(out.contains("needs TAP offload uso4+uso6"), "{out}");
    let o = vmc(&["properties"]);
    for p in vmc_compiler::schema::VIRTIO_NET {
        assert!(stdout(&o).contains(&format!("{}: ", p.name)), "{}", p.name);
    }
    let o = vmc(&["properties", "host-usoo"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("did you mean `host-uso`?"));
}

#[test]
fn lower_prints_one_shell_line_or_a_json_argument_list() {
    let s = Scratch::new("lower");
    let abi = compiled(&s, "web.kdl", "linux-6.9");
    let o = vmc(&["lower", &abi, "--to", "qemu"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let line = stdout(&o);
    assert_eq!(line.lines().count(), 1);
    assert!(line.starts_with("qemu-system-x86_64 -M microvm,"), "{line}");
    assert!(line.contains("host_uso=on"), "{line}");
    let o = vmc(&["lower", &abi, "--json"]);
    let args: Vec<String> = serde_json::from_str(&stdout(&o)).unwrap();
    let device = args
        .iter()
        .find(|a| a.starts_with("virtio-net-device,"))
        .expect("a virtio-net device");
    // Every schema property is explicit.
    for p in vmc_compiler::schema::VIRTIO_NET {
        assert!(
            device.contains(&format!(",{}=", p.qemu)),
            "{} missing from {device}",
            p.qemu
        );
    }
    let o = vmc(&["lower", &abi, "--to", "firecracker"]);
    assert_eq!(o.status.code(), Some(2));
}
