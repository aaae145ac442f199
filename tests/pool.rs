//! Migration pools and placement over checked-in probe files (`tests/hosts/`) that
//! describe different hosts: an old kernel without TAP USO, a new one with it, a CPU
//! without AVX-512, a distribution kernel with USO backported.

mod support;

use support::{stderr, stdout, vmc, Scratch};

fn host(name: &str) -> String {
    support::repo().join("tests/hosts").join(name).display().to_string()
}

fn spec(name: &str) -> String {
    support::repo().join("specs").join(name).display().to_string()
}

fn compile(args: &[&str]) -> (std::process::Output, String) {
    let o = vmc(&[&["compile"], args].concat());
    (o.clone(), stdout(&o).trim().to_string())
}

#[test]
fn a_pool_of_5_15_and_6_9_compiles_like_linux_5_15() {
    let s = Scratch::new("pool-5.15-6.9");
    let pool_out = s.path("pool.abi").display().to_string();
    let (o, pool_hash) = compile(&[
        &spec("web.kdl"),
        "--pool",
        &host("old-5.15.json"),
        &host("new-6.9.json"),
        "-o",
        &pool_out,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("pool of 2 hosts: compiling for `linux-5.15`"),
        "{}",
        stderr(&o)
    );
    let plain_out = s.path("plain.abi").display().to_string();
    let (o, plain_hash) = compile(&[&spec("web.kdl"), "--platform", "linux-5.15", "-o", &plain_out]);
    assert!(o.status.success());
    assert_eq!(pool_hash, plain_hash);
    // The pool's document records the platform chosen.
    assert!(std::fs::read_to_string(&pool_out)
        .unwrap()
        .contains("platform \"linux-5.15\""));
    // Both hosts can run it.
    let o = vmc(&["place", &pool_out, &host("old-5.15.json"), &host("new-6.9.json")]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(stdout(&o).matches(": can run blake3:").count(), 2, "{}", stdout(&o));
}

#[test]
fn a_pool_refuses_a_cpu_model_one_host_lacks_naming_host_and_features() {
    let s = Scratch::new("pool-cpu");
    let spec_path = s.write(
        "v4.kdl",
        "vm \"fast\" {\n    cpu-model \"x86-64-v4\"\n    net \"net0\"\n}\n",
    );
    let out = s.path("v4.abi");
    let (o, _) = compile(&[
        &spec_path,
        "--pool",
        &host("new-6.9.json"),
        &host("no-avx512-6.9.json"),
        "-o",
        &out.display().to_string(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("no-avx512-6.9.json (rack3-noavx512) lacks 5 CPU capabilities: avx512bw, avx512cd, avx512dq, avx512f, avx512vl"), "{err}");
    assert!(!err.contains("rack2-new"), "the capable host is not blamed: {err}");
    assert!(!out.exists());
    // Without the AVX-512-less host, the pool takes it.
    let (o, _) = compile(&[
        &spec_path,
        "--pool",
        &host("new-6.9.json"),
        "-o",
        &out.display().to_string(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("compiling for `linux-6.9`"));
}

#[test]
fn a_backported_host_gets_the_first_platform_with_uso() {
    let s = Scratch::new("pool-backport");
    let out = s.path("web.abi").display().to_string();
    let (o, _) = compile(&[&spec("web.kdl"), "--pool", &host("backport-5.14.kdl"), "-o", &out]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("compiling for `linux-6.2`"), "{}", stderr(&o));
    let o = vmc(&["explain", &out, "host-uso"]);
    assert!(stdout(&o).contains("#true"));
}

#[test]
fn place_says_which_hosts_can_run_an_abi_and_exactly_why_not() {
    let s = Scratch::new("place");
    let out = s.path("web.abi").display().to_string();
    let (o, hash) = compile(&[&spec("web.kdl"), "--platform", "linux-6.9", "-o", &out]);
    assert!(o.status.success());
    let hosts = [host("old-5.15.json"), host("new-6.9.json"), host("no-avx512-6.9.json")];
    let o = vmc(&[
        &["place", out.as_str()][..],
        &hosts.iter().map(String::as_str).collect::<Vec<_>>(),
    ]
    .concat());
    assert_eq!(o.status.code(), Some(0));
    let text = stdout(&o);
    assert!(
        text.contains(&format!("new-6.9.json (rack2-new): can run {hash}")),
        "{text}"
    );
    assert!(
        text.contains(&format!("no-avx512-6.9.json (rack3-noavx512): can run {hash}")),
        "{text}"
    );
    assert!(text.contains("old-5.15.json (rack1-old): cannot run it"), "{text}");
    assert!(
        text.contains("lacks 2 TAP capabilities: uso4 (TUN_F_USO4), uso6 (TUN_F_USO6)"),
        "{text}"
    );
    assert!(
        text.contains("needed by devices.net0.guest-uso4, devices.net0.guest-uso6, devices.net0.host-uso"),
        "{text}"
    );

    let o = vmc(&["place", &out, "--json", &host("old-5.15.json"), &host("new-6.9.json")]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v[0]["host"], "rack1-old");
    assert_eq!(v[0]["can-run"], false);
    assert_eq!(v[0]["missing"][0]["group"], "tap");
    assert_eq!(v[0]["missing"][0]["name"], "uso4");
    assert_eq!(v[0]["missing"][0]["kernel-name"], "TUN_F_USO4");
    assert_eq!(
        v[0]["missing"][0]["needed-by"],
        serde_json::json!([
            "devices.net0.guest-uso4",
            "devices.net0.guest-uso6",
            "devices.net0.host-uso"
        ])
    );
    assert_eq!(v[1]["can-run"], true);
    assert_eq!(v[1]["missing"], serde_json::json!([]));
    // No host can run it: exit 1.
    let o = vmc(&["place", &out, &host("old-5.15.json")]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn bad_probe_files_are_clear_errors() {
    let s = Scratch::new("bad-probes");
    let out = s.path("x.abi");
    for (file, expect) in [
        (
            "impossible-uso4-only.json",
            "impossible host: only one of uso4 and uso6",
        ),
        ("future-format.json", "platform document format 2 is not supported"),
        ("truncated.json", "is not valid JSON"),
    ] {
        let (o, _) = compile(&[
            &spec("web.kdl"),
            "--pool",
            &host(file),
            "-o",
            &out.display().to_string(),
        ]);
        assert_eq!(o.status.code(), Some(2), "{file}");
        assert!(stderr(&o).contains(expect), "{file}: {}", stderr(&o));
        assert!(!out.exists());
    }
    let named = s.write(
        "named.json",
        r#"{"format": 1, "name": "x", "kernel": "6.9", "tap-offloads": ["csum"], "kvm-capabilities": []}"#,
    );
    let (o, _) = compile(&[&spec("web.kdl"), "--pool", &named, "-o", &out.display().to_string()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("states no cpu-features"), "{}", stderr(&o));
    let typo = s.write(
        "typo.json",
        r#"{"format": 1, "name": "x", "kernel": "6.9", "tap-ofloads": []}"#,
    );
    let (o, _) = compile(&[&spec("web.kdl"), "--pool", &typo, "-o", &out.display().to_string()]);
    assert!(stderr(&o).contains("unknown key `tap-ofloads`"), "{}", stderr(&o));
}
