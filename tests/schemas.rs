//! Every `--json` output is a published contract: `schemas/NAME.schema.json` (JSON Schema
//! draft 2020-12) describes it, and each output is checked against its schema here, over
//! the repository's example inputs (`specs/`, `tests/golden/`, `tests/hosts/`). `vmc
//! status --json` and `vmc migrate --json` are checked against a real VM (root and
//! /dev/kvm: skipped with a reason by hand without them, failed under CI).

#[path = "../runtime/tests/common/mod.rs"]
mod common;
mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use support::vmm::Vmm;
use support::{repo, require, stderr, stdout, vmc, Scratch};

/// The outputs that have a schema: `schemas/NAME.schema.json` for each.
const OUTPUTS: &[&str] = &[
    "show",
    "probe",
    "platforms",
    "platforms-host",
    "place",
    "lower",
    "status",
    "migrate",
    "labels",
    "affinity",
];

fn schema_value(name: &str) -> Value {
    let path = repo().join("schemas").join(format!("{name}.schema.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn validator(name: &str) -> jsonschema::Validator {
    jsonschema::draft202012::new(&schema_value(name)).unwrap_or_else(|e| panic!("{name}.schema.json: {e}"))
}

/// `instance` (the output of `what`) is valid against `schemas/NAME.schema.json`.
fn assert_valid(name: &str, instance: &Value, what: &str) {
    let errors: Vec<String> = validator(name)
        .iter_errors(instance)
        .map(|e| format!("  at {}: {e}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{what} does not match schemas/{name}.schema.json:\n{}\n{}",
        errors.join("\n"),
        serde_json::to_string_pretty(instance).unwrap()
    );
}

/// Runs vmc, expects one of `codes`, and parses its standard output as JSON.
fn json_of(args: &[&str], codes: &[i32]) -> Value {
    let o = vmc(args);
    let code = o.status.code().unwrap_or(-1);
    assert!(
        codes.contains(&code),
        "vmc {}: exit {code}\n{}",
        args.join(" "),
        stderr(&o)
    );
    serde_json::from_str(&stdout(&o)).unwrap_or_else(|e| panic!("vmc {}: {e}\n{}", args.join(" "), stdout(&o)))
}

fn files_in(dir: &str, ext: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(repo().join(dir))
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    out.sort();
    out
}

/// A directory of the repository, as an argument.
fn platforms_dir(dir: &str) -> String {
    path_str(&repo().join(dir))
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// The probe files in tests/hosts that vmc reads (the others are broken on purpose).
fn good_probe_files() -> Vec<PathBuf> {
    let bad = ["future-format.json", "truncated.json", "impossible-uso4-only.json"];
    let mut files: Vec<PathBuf> = files_in("tests/hosts", "json")
        .into_iter()
        .chain(files_in("tests/hosts", "kdl"))
        .filter(|p| !bad.iter().any(|b| p.ends_with(b)))
        .collect();
    files.sort();
    files
}

#[test]
fn every_output_has_a_draft_2020_12_schema_and_nothing_else_is_there() {
    let present: BTreeSet<String> = std::fs::read_dir(repo().join("schemas"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let expected: BTreeSet<String> = OUTPUTS.iter().map(|n| format!("{n}.schema.json")).collect();
    // Other commands' schemas may be added beside these; every one named here must exist.
    for name in &expected {
        assert!(present.contains(name), "schemas/{name} is missing (have {present:?})");
    }
    for file in &present {
        let name = file
            .strip_suffix(".schema.json")
            .unwrap_or_else(|| panic!("schemas/{file}: not NAME.schema.json"));
        let schema = schema_value(name);
        assert_eq!(
            schema["$schema"], "https://json-schema.org/draft/2020-12/schema",
            "schemas/{file}"
        );
        assert!(
            schema["title"].as_str().is_some_and(|t| t.starts_with("vmc ")),
            "schemas/{file}: title"
        );
        if let Err(e) = jsonschema::meta::validate(&schema) {
            panic!("schemas/{file} is not a valid schema: {e}");
        }
        validator(name);
    }
}

/// A missing capability is the same object in `place` and `platforms --host`.
#[test]
fn place_and_platforms_host_describe_a_missing_capability_alike() {
    let place = schema_value("place");
    let host = schema_value("platforms-host");
    assert_eq!(place["$defs"]["missing"], host["$defs"]["missing"]);
    assert_eq!(place["$defs"]["unmeasured"], host["$defs"]["unmeasured"]);
}

/// The device object of `show` names exactly the properties of the property schema,
/// with a type that fits each one's kind.
#[test]
fn show_schema_lists_every_virtio_net_property() {
    use vmc_compiler::schema::{ValueKind, VIRTIO_NET};
    let schema = schema_value("show");
    let device = &schema["$defs"]["virtio-net"];
    let described: BTreeSet<&str> = device["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let placement = [
        "id",
        "kind",
        "transport",
        "mmio-base",
        "mmio-size",
        "irq",
        "device-features",
    ];
    let expected: BTreeSet<&str> = VIRTIO_NET.iter().map(|p| p.name).chain(placement).collect();
    assert_eq!(described, expected);
    let required: BTreeSet<&str> = device["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(required, expected, "every property is required");
    for p in VIRTIO_NET {
        let ty = &device["properties"][p.name]["type"];
        let want = match p.kind {
            ValueKind::Bool => "boolean",
            ValueKind::Integer { .. } | ValueKind::QueueSize { .. } => "integer",
            ValueKind::Mac => "string",
        };
        assert_eq!(ty, want, "{}", p.name);
    }
}

#[test]
fn show_and_lower_of_every_golden_document_match_their_schemas() {
    let documents = files_in("tests/golden/documents", "abi");
    assert!(documents.len() > 50, "{}", documents.len());
    for doc in &documents {
        let path = path_str(doc);
        assert_valid(
            "show",
            &json_of(&["show", "--json", &path], &[0]),
            &format!("show {path}"),
        );
        assert_valid(
            "lower",
            &json_of(&["lower", "--json", &path], &[0]),
            &format!("lower {path}"),
        );
    }
}

#[test]
fn show_of_every_example_spec_for_every_platform_matches_its_schema() {
    let scratch = Scratch::new("schemas-show");
    let third_party = platforms_dir("specs/platforms");
    let platforms = json_of(&["platforms", "--json", "--platform-path", &third_party], &[0]);
    let names: Vec<&str> = platforms
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for spec in files_in("specs", "kdl") {
        for platform in &names {
            let out = scratch.path("vm.abi");
            let o = vmc(&[
                "compile",
                &path_str(&spec),
                "--platform-path",
                &third_party,
                "--platform",
                platform,
                "-o",
                &path_str(&out),
            ]);
            if !o.status.success() {
                // A spec asking for what the platform lacks (host-uso on linux-5.15).
                assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
                continue;
            }
            let what = format!("show of {} for {platform}", spec.display());
            assert_valid("show", &json_of(&["show", "--json", &path_str(&out)], &[0]), &what);
            assert_valid("lower", &json_of(&["lower", "--json", &path_str(&out)], &[0]), &what);
        }
    }
}

#[test]
fn platforms_matches_its_schema() {
    let (third_party, golden) = (
        platforms_dir("specs/platforms"),
        platforms_dir("tests/golden/platforms"),
    );
    for args in [
        vec!["platforms", "--json"],
        vec!["platforms", "--json", "--platform-path", &third_party],
        vec!["platforms", "--json", "--platform-path", &golden],
    ] {
        let v = json_of(&args, &[0]);
        assert!(v.as_array().unwrap().len() >= 7);
        assert_valid("platforms", &v, &args.join(" "));
    }
}

#[test]
fn probe_files_and_the_probe_of_this_host_match_the_probe_schema() {
    // The probe files in the shape `vmc probe --json` writes (vmc also reads files that
    // leave out what it does not need, such as no-avx512-6.9.json).
    for file in ["tests/hosts/new-6.9.json", "tests/hosts/old-5.15.json"] {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(repo().join(file)).unwrap()).unwrap();
        assert_valid("probe", &v, file);
    }
    // A later format version is refused by the schema as by vmc.
    let future: Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("tests/hosts/future-format.json")).unwrap()).unwrap();
    assert!(!validator("probe").is_valid(&future));
    // This host, measured or not: `unmeasured` lists what was not.
    let o = vmc(&["probe", "--json"]);
    assert!(matches!(o.status.code(), Some(0 | 1)), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_valid("probe", &v, "probe --json");
    let v = json_of(&["probe", "--json", "--name", "rack1-a"], &[0, 1]);
    assert_eq!(v["name"], "rack1-a");
    assert_valid("probe", &v, "probe --json --name rack1-a");
}

#[test]
fn platforms_host_matches_its_schema() {
    let s = Scratch::new("schemas-platforms-host");
    // A platform no host has: not supported, its missing capabilities listed.
    s.write(
        "future.kdl",
        "platform \"future\" { inherits \"linux-6.12\"; kernel \"9.0\"; tap-offloads \"uso4\"; kvm-capabilities \"time-travel\" }\n",
    );
    let dir = s.0.display().to_string();
    let v = json_of(&["platforms", "--host", "--json", "--platform-path", &dir], &[0]);
    assert_valid("platforms-host", &v, "platforms --host --json");
    let future = v.as_array().unwrap().iter().find(|p| p["name"] == "future").unwrap();
    if future["verdict"] == "not-supported" {
        assert!(
            future["missing"]
                .as_array()
                .unwrap()
                .contains(&json!({"group": "kvm", "name": "time-travel", "kernel-name": "KVM_CAP_TIME_TRAVEL", "needed-by": ["platform future"]})),
            "{future}"
        );
    }
}

/// Writes a probe file like `tests/hosts/new-6.9.json` whose TAP offloads were not
/// measured, so that `place` says "cannot tell" and lists what is needed there.
fn unmeasured_probe(s: &Scratch) -> String {
    let mut v: Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("tests/hosts/new-6.9.json")).unwrap()).unwrap();
    v["name"] = json!("rack9-unmeasured");
    v["tap-offloads"] = json!([]);
    v["unmeasured"] = json!([{"what": "tap-offloads", "why": "cannot open /dev/net/tun: EACCES (Permission denied)"}]);
    s.write("unmeasured.json", serde_json::to_string_pretty(&v).unwrap())
}

#[test]
fn place_of_every_golden_document_on_every_probe_file_matches_its_schema() {
    let s = Scratch::new("schemas-place");
    let mut hosts: Vec<String> = good_probe_files().iter().map(|p| path_str(p)).collect();
    hosts.push(unmeasured_probe(&s));
    let (mut missing, mut needed) = (0, 0);
    for doc in files_in("tests/golden/documents", "abi") {
        let mut args = vec!["place".to_string(), "--json".to_string(), path_str(&doc)];
        args.extend(hosts.iter().cloned());
        args.extend(["--platform-path".to_string(), platforms_dir("tests/golden/platforms")]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let v = json_of(&args, &[0, 1, 2]);
        assert_valid("place", &v, &format!("place {}", doc.display()));
        for host in v.as_array().unwrap() {
            missing += host["missing"].as_array().unwrap().len();
            needed += host["unmeasured"]
                .as_array()
                .unwrap()
                .iter()
                .map(|u| u["needed"].as_array().unwrap().len())
                .sum::<usize>();
        }
    }
    // The structured objects were exercised, not only empty lists.
    assert!(missing > 0 && needed > 0, "missing {missing}, needed {needed}");
}

/// A VM in count mode with its control socket: `status --json` running and paused,
/// then `migrate --json` to a destination on a Unix socket (in a namespace of its own,
/// for its TAP).
#[test]
fn status_and_migrate_of_a_running_vm_match_their_schemas() {
    require!(support::host_access());
    let s = Scratch::new("schemas-vm");
    let guest = s.path("selftest.elf");
    let o = vmc(&["selftest-guest", "-o", &path_str(&guest)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let spec = std::fs::read_to_string(repo().join("specs/selftest-count.kdl"))
        .unwrap()
        .replace("guest/selftest.elf", "selftest.elf");
    let spec = s.write("count.kdl", spec);
    let abi = path_str(&s.path("count.abi"));
    let o = vmc(&["compile", &spec, "--platform", "linux-5.10", "-o", &abi]);
    assert!(o.status.success(), "{}", stderr(&o));

    let (a, b) = (common::NetNs::create(), common::NetNs::create());
    let sock = path_str(&s.path("api.sock"));
    let incoming = format!("unix:{}", s.path("incoming.sock").display());
    let mut source = Vmm::start(a.name(), &[&abi, "--api-sock", &sock]);
    source.wait_for_count(5);
    let status = json_of(&["status", &sock, "--json"], &[0]);
    assert_eq!(status["state"], "running");
    assert_valid("status", &status, "status --json");
    assert_eq!(vmc(&["pause", &sock]).status.code(), Some(0));
    let status = json_of(&["status", &sock, "--json"], &[0]);
    assert_eq!(status["state"], "paused");
    assert_valid("status", &status, "status --json (paused)");
    assert_eq!(vmc(&["resume", &sock]).status.code(), Some(0));

    let mut destination = Vmm::start(b.name(), &[&abi, "--incoming", &incoming]);
    destination.wait_until("listening", |_, err| err.contains("waiting for a migration"));
    let report = json_of(&["migrate", &sock, "--to", &incoming, "--json"], &[0]);
    assert_valid("migrate", &report, "migrate --json");
    assert_eq!(source.wait(), Some(0), "{}", source.both());
    destination.terminate();
    destination.wait();
}

/// The schemas are strict: the shapes these outputs had before (display text in a data
/// field, a missing capability as a string) are refused.
#[test]
fn the_old_shapes_of_missing_are_refused() {
    let old_place = json!([{
        "file": "old-5.15.json", "host": "rack1-old", "can-run": false, "verdict": "cannot-run",
        "missing": [{"group": "tap", "capability": "uso4 (TUN_F_USO4)", "needed-by": ["devices.net0.host-uso"]}],
        "unmeasured": [],
    }]);
    assert!(!validator("place").is_valid(&old_place));
    let old_host = json!([{
        "name": "linux-6.9", "kernel": "6.9", "supported": false,
        "missing": ["tap uso4"], "unmeasured": ["tap-offloads"],
    }]);
    assert!(!validator("platforms-host").is_valid(&old_host));
}

#[test]
fn labels_of_every_probe_file_and_the_affinity_of_every_golden_document_match_their_schemas() {
    let probes: Vec<String> = good_probe_files().iter().map(|p| path_str(p)).collect();
    let mut args = vec!["labels", "--json"];
    args.extend(probes.iter().map(String::as_str));
    let labels = json_of(&args, &[0]);
    assert_eq!(labels.as_array().map(Vec::len), Some(probes.len()), "{labels}");
    assert_valid("labels", &labels, "vmc labels --json (tests/hosts)");
    for doc in files_in("tests/golden/documents", "abi") {
        let doc = path_str(&doc);
        let affinity = json_of(&["affinity", &doc, "--json"], &[0]);
        assert_valid("affinity", &affinity, &format!("vmc affinity {doc} --json"));
    }
}
