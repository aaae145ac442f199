//! The commands that measure this host: probe, platforms --host, check, and compile's
//! default platform. They run as root on a host with /dev/kvm (CI does).

mod support;

use support::{require, stderr, stdout, vmc, Scratch};

const V1_SPEC: &str = "vm \"small\" {\n    cpu-model \"x86-64-v1\"\n    net \"net0\"\n}\n";

#[test]
fn probe_prints_a_platform_document_of_this_host() {
    require!(support::host_access());
    let o = vmc(&["probe", "--name", "this-host"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    let uname = std::process::Command::new("uname").arg("-r").output().unwrap();
    let release = String::from_utf8_lossy(&uname.stdout).trim().to_string();
    assert!(text.contains(&format!("// kernel release {release}")), "{text}");
    assert!(text.contains("platform \"this-host\""));
    // This host's kernel (6.x, >= 6.2) has TAP USO, measured by a real TUNSETOFFLOAD.
    assert!(text.contains("\"uso4\" \"uso6\""), "{text}");
    assert!(text.contains("\"irqchip\""), "{text}");

    // The probe is a platform document: compile against it with --platform-path.
    let s = Scratch::new("probe-as-platform");
    std::fs::create_dir(s.path("platforms")).unwrap();
    s.write("platforms/this-host.kdl", &text);
    let spec = s.write("small.kdl", V1_SPEC);
    let dir = s.path("platforms").display().to_string();
    let out = s.path("small.abi").display().to_string();
    let o = vmc(&[
        "compile",
        &spec,
        "--platform-path",
        &dir,
        "--platform",
        "this-host",
        "-o",
        &out,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = vmc(&["explain", &out, "host-uso"]);
    assert!(stdout(&o).contains("from platform this-host"), "{}", stdout(&o));

    let o = vmc(&["probe", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["kernel-release"], release.as_str());
    assert_eq!(v["kvm-api-version"], 12);
    assert_eq!(v["unmeasured"], serde_json::json!([]));
    // Without --name, the probe is named after this host.
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let hostname = hostname.trim_end();
    let expected = if vmc_compiler::platform::is_platform_name(hostname) {
        hostname
    } else {
        "host"
    };
    assert_eq!(v["name"], expected);
    let o = vmc(&["probe", "--name", "rack1/a"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("use 1 to 64 letters"), "{}", stderr(&o));
}

#[test]
fn platforms_host_says_which_platforms_this_host_supports() {
    require!(support::host_access());
    let s = Scratch::new("platforms-host");
    // A platform no host has: it must be reported unsupported, with what is missing.
    s.write(
        "future.kdl",
        "platform \"future\" { inherits \"linux-6.12\"; kernel \"9.0\"; kvm-capabilities \"time-travel\" }\n",
    );
    let o = vmc(&[
        "platforms",
        "--host",
        "--json",
        "--platform-path",
        &s.0.display().to_string(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let find = |n: &str| v.as_array().unwrap().iter().find(|p| p["name"] == n).cloned().unwrap();
    assert_eq!(find("linux-6.9")["supported"], true);
    assert_eq!(find("linux-6.9")["missing"], serde_json::json!([]));
    assert_eq!(find("future")["supported"], false);
    assert_eq!(find("future")["verdict"], "not-supported");
    assert_eq!(
        find("future")["missing"],
        serde_json::json!([{
            "group": "kvm",
            "name": "time-travel",
            "kernel-name": "KVM_CAP_TIME_TRAVEL",
            "needed-by": ["platform future"],
        }])
    );
}

#[test]
fn compile_without_a_platform_uses_the_newest_this_host_supports() {
    require!(support::host_access());
    let s = Scratch::new("default-platform");
    let spec = s.write("small.kdl", V1_SPEC);
    let o = vmc(&["compile", &spec]);
    assert!(o.status.success(), "{}", stderr(&o));
    let chosen = stderr(&o)
        .split("no --platform given: compiling for `")
        .nth(1)
        .and_then(|rest| rest.split('`').next())
        .unwrap_or_else(|| panic!("no platform named: {}", stderr(&o)))
        .to_string();
    let abi = std::fs::read_to_string(s.path("small.abi")).unwrap();
    assert!(abi.contains(&format!("platform \"{chosen}\"")));
    // It is one this host supports; on a host newer than every platform and supporting
    // them all (as CI's is), the newest.
    let platforms: serde_json::Value = serde_json::from_slice(&vmc(&["platforms", "--host", "--json"]).stdout).unwrap();
    let list = platforms.as_array().unwrap();
    let row = list
        .iter()
        .find(|p| p["name"] == chosen.as_str())
        .expect("the chosen platform is listed");
    assert_eq!(row["supported"], true, "{platforms}");
    let uname = std::process::Command::new("uname").arg("-r").output().unwrap();
    let kernel = vmc_compiler::platform::KernelVersion::parse(String::from_utf8_lossy(&uname.stdout).trim()).unwrap();
    let version = |p: &serde_json::Value| vmc_compiler::platform::KernelVersion::parse(p["kernel"].as_str().unwrap());
    if list
        .iter()
        .all(|p| p["supported"] == true && version(p).is_some_and(|v| v <= kernel))
    {
        assert_eq!(list.last().unwrap()["name"], chosen.as_str(), "{platforms}");
    }
}

#[test]
fn check_names_every_missing_cpu_feature_and_accepts_what_the_host_can_run() {
    require!(support::host_access());
    let s = Scratch::new("check");
    let v4 = s.write("v4.kdl", V1_SPEC.replace("x86-64-v1", "x86-64-v4"));
    let v1 = s.write("v1.kdl", V1_SPEC);
    for spec in [&v4, &v1] {
        let o = vmc(&["compile", spec, "--platform", "linux-6.9"]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let o = vmc(&["check", &s.path("v4.abi").display().to_string()]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let out = stdout(&o);
    for f in ["avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"] {
        assert!(out.contains(f), "{f} not named:\n{out}");
    }
    assert!(out.contains("needed by cpu.model x86-64-v4"), "{out}");
    let o = vmc(&["check", &s.path("v1.abi").display().to_string()]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(stdout(&o).starts_with("this host can run"));
}

#[test]
fn the_host_cpu_model_takes_the_probed_features_and_is_not_migratable() {
    let s = Scratch::new("host-model");
    let spec = s.write("host.kdl", "vm \"pinned\" {\n    cpu-model \"host\"\n}\n");
    // A named kernel platform says nothing about CPUs: refused, with the way out.
    let o = vmc(&["compile", &spec, "--platform", "linux-6.9"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("takes a probed host's CPU features"),
        "{}",
        stderr(&o)
    );
    require!(support::host_access());
    let o = vmc(&["compile", &spec]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = vmc(&["show", "--json", &s.path("host.abi").display().to_string()]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["abi"]["cpu"]["model"], "host");
    assert_eq!(v["abi"]["cpu"]["migratable"], false);
    let probe = vmc(&["probe", "--json"]);
    let p: serde_json::Value = serde_json::from_str(&stdout(&probe)).unwrap();
    assert_eq!(v["abi"]["cpu"]["features"], p["cpu-features"]);
    // This host can run its own model.
    let o = vmc(&["check", &s.path("host.abi").display().to_string()]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
}
