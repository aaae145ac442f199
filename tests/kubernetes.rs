//! Fleets on Kubernetes: `vmc labels` and `vmc affinity` let the scheduler's own label
//! matching admit exactly the hosts `vmc place` accepts.
//!
//! The fleet is several hundred probe files made here: hosts that have everything but one
//! thing (each CPU feature, TAP offload, KVM capability), and hosts from a fixed seed
//! differing in kernel, TAP offloads (with and without USO, backported or not), CPU
//! features (every x86-64 level, some with a feature missing or one of the next level),
//! KVM capabilities, and parts not measured. Node affinities are evaluated by the rules of Kubernetes'
//! scheduler (`k8s.io/component-helpers/scheduling/corev1/nodeaffinity` and
//! `k8s.io/apimachinery/pkg/labels`), written out here rather than taken from vmc.
//!
//! The manifests in `deploy/kubernetes/` are validated against Kubernetes' published
//! schemas with `kubernetes-validate` (installed by `scripts/test.sh`).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use serde_json::{json, Value as Json};
use support::{repo, require, stderr, stdout, vmc, Scratch};
use vmc_compiler::check::{self, Host, Part, Unmeasured};
use vmc_compiler::{cpu, Platform, PlatformRegistry, SourceFile, TapOffload};

/// A node's labels.
type Labels = BTreeMap<String, String>;

/// splitmix64: a fixed seed gives the same fleet on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// True with probability `percent`/100.
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

// ---------------------------------------------------------------------------------------
// Kubernetes' node affinity, as the scheduler evaluates it.

/// Whether a node with `labels` satisfies a pod's `affinity` (its
/// `requiredDuringSchedulingIgnoredDuringExecution`). Node selector terms are OR-ed; an
/// empty term matches no node; the expressions of a term are AND-ed. A malformed
/// requirement is an error (the API server refuses such a pod; the scheduler's parser
/// fails the match).
fn scheduler_admits(affinity: &Json, labels: &Labels) -> Result<bool, String> {
    let terms = affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        .as_array()
        .ok_or("no nodeSelectorTerms")?;
    for term in terms {
        if term.get("matchFields").is_some() {
            return Err("matchFields (metadata.name) is not evaluated here".into());
        }
        let expressions = match term.get("matchExpressions") {
            None | Some(Json::Null) => &Vec::new(),
            Some(e) => e.as_array().ok_or("matchExpressions is not a list")?,
        };
        if expressions.is_empty() {
            continue;
        }
        let mut all = true;
        for e in expressions {
            all &= requirement_matches(e, labels)?;
        }
        if all {
            return Ok(true);
        }
    }
    Ok(false)
}

/// One `NodeSelectorRequirement` against a node's labels, as `labels.Requirement.Matches`.
fn requirement_matches(e: &Json, labels: &Labels) -> Result<bool, String> {
    let key = e["key"].as_str().ok_or("a requirement without a key")?;
    if !label_key_ok(key) {
        return Err(format!("invalid label key `{key}`"));
    }
    let values: Vec<&str> = match e.get("values") {
        None | Some(Json::Null) => Vec::new(),
        Some(v) => v
            .as_array()
            .ok_or("values is not a list")?
            .iter()
            .map(|v| v.as_str().ok_or("a value that is not a string"))
            .collect::<Result<_, _>>()?,
    };
    let value = labels.get(key).map(String::as_str);
    let integer = |text: &str| text.parse::<i64>().ok();
    match e["operator"].as_str().ok_or("a requirement without an operator")? {
        op @ ("In" | "NotIn") => {
            if values.is_empty() {
                return Err(format!("{op} needs values"));
            }
            if let Some(bad) = values.iter().find(|v| !label_value_ok(v)) {
                return Err(format!("invalid label value `{bad}`"));
            }
            let listed = value.is_some_and(|v| values.contains(&v));
            Ok(if op == "In" { listed } else { !listed })
        }
        op @ ("Exists" | "DoesNotExist") => {
            if !values.is_empty() {
                return Err(format!("{op} takes no values"));
            }
            Ok(value.is_some() == (op == "Exists"))
        }
        op @ ("Gt" | "Lt") => {
            let [bound] = values.as_slice() else {
                return Err(format!("{op} takes exactly one value"));
            };
            let bound = integer(bound).ok_or(format!("{op} takes an integer"))?;
            Ok(match value.and_then(integer) {
                None => false,
                Some(n) if op == "Gt" => n > bound,
                Some(n) => n < bound,
            })
        }
        other => Err(format!("unknown operator `{other}`")),
    }
}

/// A label's name part or value (non-empty): Kubernetes' qualified name.
fn label_name_ok(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=63).contains(&b.len())
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c))
}

fn label_value_ok(s: &str) -> bool {
    s.is_empty() || label_name_ok(s)
}

/// `[prefix/]name`, the prefix a DNS subdomain of at most 253 characters.
fn label_key_ok(key: &str) -> bool {
    let Some((prefix, name)) = key.split_once('/') else {
        return label_name_ok(key);
    };
    let dns_label = |l: &str| {
        let b = l.as_bytes();
        let ok = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        (1..=63).contains(&b.len()) && ok(&b[0]) && ok(&b[b.len() - 1]) && b.iter().all(|c| ok(c) || *c == b'-')
    };
    prefix.len() <= 253 && prefix.split('.').all(dns_label) && label_name_ok(name)
}

#[test]
fn the_matcher_follows_the_scheduler_for_every_operator() {
    let labels: Labels = [("zone", "a"), ("cores", "16"), ("name", "x")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let one = |expr: Json| json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [expr]}]}}});
    let admits = |expr: Json| scheduler_admits(&one(expr), &labels);
    let e = |key: &str, op: &str, values: &[&str]| json!({"key": key, "operator": op, "values": values});
    let bare = |key: &str, op: &str| json!({"key": key, "operator": op});
    assert_eq!(admits(e("zone", "In", &["a", "b"])), Ok(true));
    assert_eq!(admits(e("zone", "In", &["b"])), Ok(false));
    assert_eq!(admits(e("missing", "In", &["a"])), Ok(false));
    assert_eq!(admits(e("zone", "NotIn", &["b"])), Ok(true));
    assert_eq!(admits(e("zone", "NotIn", &["a"])), Ok(false));
    assert_eq!(
        admits(e("missing", "NotIn", &["a"])),
        Ok(true),
        "NotIn admits a node without the label"
    );
    assert_eq!(admits(bare("zone", "Exists")), Ok(true));
    assert_eq!(admits(bare("missing", "Exists")), Ok(false));
    assert_eq!(admits(bare("missing", "DoesNotExist")), Ok(true));
    assert_eq!(admits(bare("zone", "DoesNotExist")), Ok(false));
    assert_eq!(admits(e("cores", "Gt", &["8"])), Ok(true));
    assert_eq!(admits(e("cores", "Gt", &["16"])), Ok(false));
    assert_eq!(admits(e("cores", "Lt", &["17"])), Ok(true));
    assert_eq!(admits(e("cores", "Lt", &["16"])), Ok(false));
    assert_eq!(admits(e("name", "Gt", &["1"])), Ok(false), "a value that is no integer");
    assert_eq!(admits(e("missing", "Lt", &["1"])), Ok(false));
    for bad in [
        e("zone", "In", &[]),
        e("zone", "Exists", &["a"]),
        e("cores", "Gt", &["8", "9"]),
        e("cores", "Gt", &["eight"]),
        e("zone", "Near", &["a"]),
        e("-zone", "In", &["a"]),
    ] {
        assert!(admits(bad.clone()).is_err(), "{bad}");
    }
    // Terms are OR-ed, expressions AND-ed, and an empty term admits nothing.
    let terms = |terms: Json| json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}});
    let t = terms(json!([
        {"matchExpressions": [e("zone", "In", &["a"]), e("cores", "Lt", &["4"])]},
        {"matchExpressions": [bare("name", "Exists")]}
    ]));
    assert_eq!(scheduler_admits(&t, &labels), Ok(true));
    let t = terms(json!([{"matchExpressions": [e("zone", "In", &["a"]), e("cores", "Lt", &["4"])]}]));
    assert_eq!(scheduler_admits(&t, &labels), Ok(false));
    assert_eq!(scheduler_admits(&terms(json!([{}])), &labels), Ok(false));
    assert_eq!(
        scheduler_admits(&terms(json!([{"matchExpressions": []}])), &labels),
        Ok(false)
    );
}

// ---------------------------------------------------------------------------------------
// The fleet.

/// How many hosts the synthetic fleet has.
const FLEET: usize = 480;

const KERNELS: &[&str] = &["5.10", "5.14", "5.15", "6.1", "6.2", "6.6", "6.9", "6.12"];
const LEVELS: &[&str] = &["x86-64-v1", "x86-64-v2", "x86-64-v3", "x86-64-v4"];

/// The TAP offloads a host may lack, as the kernel's rules allow: USO4 and USO6 only
/// together; none at all without csum.
const TAP_SHORTFALLS: [&[TapOffload]; 6] = {
    use TapOffload::*;
    [&[Ufo], &[TsoEcn], &[Tso4], &[Tso6], &[Uso4, Uso6], &TapOffload::ALL]
};

/// Hosts that have everything but one thing: each CPU feature vmc knows, each TAP
/// shortfall, each KVM capability of the built-in platforms. So an affinity that left
/// out any one requirement of a document would admit one of them, which `vmc place`
/// refuses.
fn one_short_hosts(full: &Platform) -> Vec<Host> {
    let mut out = Vec::new();
    let mut short = |change: &dyn Fn(&mut Platform)| {
        let mut p = full.clone();
        change(&mut p);
        out.push(Host::measured(p));
    };
    for f in cpu::FEATURES {
        short(&|p| {
            p.cpu_features.as_mut().unwrap().remove(f.name);
        });
    }
    for gone in TAP_SHORTFALLS {
        short(&|p| p.tap_offloads.retain(|o| !gone.contains(o)));
    }
    for c in &full.kvm_capabilities {
        short(&|p| {
            p.kvm_capabilities.remove(c);
        });
    }
    out
}

/// One synthetic host, as a probe would describe it.
fn synthetic_host(rng: &mut Rng, base: &Platform, name: &str) -> Host {
    let mut p = base.clone();
    p.name = name.to_string();
    p.description = String::new();
    let kernel = *rng.pick(KERNELS);
    p.kernel = vmc_compiler::platform::KernelVersion::parse(kernel).unwrap();
    // USO on TAP since 6.2; a 5.14 distribution kernel may have it backported.
    if kernel.starts_with("6.") && kernel != "6.1" || kernel == "5.14" && rng.chance(50) {
        p.tap_offloads.extend([TapOffload::Uso4, TapOffload::Uso6]);
    }
    // Now and then an offload short, as the kernel's rules allow (USO4 and USO6 only
    // together; none at all without csum).
    if rng.chance(10) {
        let gone = *rng.pick(&TAP_SHORTFALLS);
        p.tap_offloads.retain(|o| !gone.contains(o));
    }
    // The CPU: a psABI level and the machine types' baseline, now and then a feature
    // short or one of the next level.
    let level = rng.below(LEVELS.len());
    let mut features: BTreeSet<String> = cpu::expand(cpu::model(LEVELS[level]).unwrap())
        .into_iter()
        .chain(cpu::BASELINE.iter().copied())
        .map(String::from)
        .collect();
    if rng.chance(15) {
        let all: Vec<String> = features.iter().cloned().collect();
        features.remove(rng.pick(&all));
    }
    if level + 1 < LEVELS.len() && rng.chance(15) {
        let next = cpu::model(LEVELS[level + 1]).unwrap();
        features.insert(rng.pick(next.adds).to_string());
    }
    p.cpu_features = Some(features);
    if rng.chance(12) {
        let all: Vec<String> = p.kvm_capabilities.iter().cloned().collect();
        p.kvm_capabilities.remove(rng.pick(&all));
    }
    let mut host = Host::measured(p);
    // Parts not measured: listed empty, as `vmc probe` writes them; now and then with
    // something listed all the same (a hand-written file), which vmc takes as present.
    if rng.chance(12) {
        let part = *rng.pick(&[
            Part::TapOffloads,
            Part::KvmCapabilities,
            Part::CpuFeatures,
            Part::Kernel,
        ]);
        let keep_some = rng.chance(25);
        let p = &mut host.platform;
        match part {
            Part::TapOffloads if keep_some => p.tap_offloads.retain(|o| *o == TapOffload::Csum),
            Part::TapOffloads => p.tap_offloads.clear(),
            Part::KvmCapabilities if keep_some => {
                p.kvm_capabilities.remove("irqfd");
            }
            Part::KvmCapabilities => p.kvm_capabilities.clear(),
            Part::CpuFeatures if keep_some => {
                let v1 = cpu::expand(cpu::model("x86-64-v1").unwrap());
                p.cpu_features.as_mut().unwrap().retain(|f| v1.contains(&f.as_str()));
            }
            Part::CpuFeatures => p.cpu_features = Some(BTreeSet::new()),
            Part::Kernel => {}
        }
        host.unmeasured.push(Unmeasured {
            part,
            why: "cannot open /dev/kvm: EACCES (Permission denied)".into(),
        });
    }
    host
}

/// A host as a probe file: JSON as `vmc probe --json` writes it, or now and then KDL as
/// `vmc probe` writes it, or KDL that inherits from a built-in platform and lists only
/// what it adds.
fn probe_file(host: &Host, base: &Platform, style: usize) -> (&'static str, String) {
    let p = &host.platform;
    let inherits = p.tap_offloads.is_superset(&base.tap_offloads)
        && p.kvm_capabilities.is_superset(&base.kvm_capabilities)
        && host.unmeasured.is_empty();
    // Mostly JSON: reading KDL costs ten times more in a debug build, and the test
    // stays fast.
    match style % 8 {
        0 => ("kdl", check::probe_kdl(host)),
        4 if inherits => {
            let quoted = |items: Vec<&str>| items.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(" ");
            let mut text = format!(
                "// {}: inherits linux-5.10\nformat 1\nplatform \"{}\" {{\n    inherits \"linux-5.10\"\n    kernel \"{}\"\n",
                p.name, p.name, p.kernel
            );
            let extra: Vec<&str> = p
                .tap_offloads
                .difference(&base.tap_offloads)
                .map(|o| o.name())
                .collect();
            if !extra.is_empty() {
                text += &format!("    tap-offloads {}\n", quoted(extra));
            }
            let features: Vec<&str> = p.cpu_features.iter().flatten().map(String::as_str).collect();
            text += &format!("    cpu-features {}\n}}\n", quoted(features));
            ("kdl", text)
        }
        _ => (
            "json",
            serde_json::to_string_pretty(&json!({
                "format": 1,
                "name": p.name,
                "kernel": p.kernel.to_string(),
                "tap-offloads": p.tap_offloads.iter().map(|o| o.name()).collect::<Vec<_>>(),
                "kvm-capabilities": p.kvm_capabilities,
                "cpu-features": p.cpu_features,
                "unmeasured": check::unmeasured_json(&host.unmeasured),
            }))
            .unwrap(),
        ),
    }
}

struct Fleet {
    scratch: Scratch,
    files: Vec<PathBuf>,
}

impl Fleet {
    fn new(name: &str, size: usize) -> Fleet {
        let scratch = Scratch::new(name);
        let mut rng = Rng(0x766d_632d_6b75_6265);
        let registry = PlatformRegistry::builtin();
        let base = registry.get("linux-5.10").unwrap();
        // A host with everything: Linux 6.12, an x86-64-v4 CPU.
        let mut full = registry.get("linux-6.12").unwrap().clone();
        full.cpu_features = Some(cpu::FEATURES.iter().map(|f| f.name.to_string()).collect());
        let mut targeted = one_short_hosts(&full).into_iter();
        let mut files = Vec::new();
        for i in 0..size {
            let name = format!("node-{i:03}");
            let host = match targeted.next() {
                // Only in a fleet big enough to be random as well.
                Some(mut h) if size >= 4 * cpu::FEATURES.len() => {
                    h.platform.name = name;
                    h
                }
                _ => synthetic_host(&mut rng, base, &name),
            };
            let (ext, text) = probe_file(&host, base, i);
            files.push(PathBuf::from(scratch.write(&format!("node-{i:03}.{ext}"), text)));
        }
        Fleet { scratch, files }
    }

    fn args(&self) -> Vec<String> {
        self.files.iter().map(|f| f.display().to_string()).collect()
    }

    /// `vmc labels --json` over the fleet: host name to labels.
    fn labels(&self) -> BTreeMap<String, Labels> {
        let args = self.args();
        let mut argv = vec!["labels", "--json"];
        argv.extend(args.iter().map(String::as_str));
        let o = vmc(&argv);
        assert!(o.status.success(), "{}", stderr(&o));
        let list: Json = serde_json::from_str(&stdout(&o)).unwrap();
        list.as_array()
            .unwrap()
            .iter()
            .map(|h| {
                let labels: Labels = serde_json::from_value(h["labels"].clone()).unwrap();
                (h["host"].as_str().unwrap().to_string(), labels)
            })
            .collect()
    }

    /// The fleet's hosts as `vmc place` reads them (`check::load_host`), by name.
    fn hosts(&self) -> BTreeMap<String, Host> {
        let registry = PlatformRegistry::builtin();
        self.files
            .iter()
            .map(|f| {
                let source = SourceFile::new(f.display().to_string(), std::fs::read_to_string(f).unwrap());
                let host = check::load_host(&registry, &source).unwrap_or_else(|e| panic!("{}: {e:?}", f.display()));
                (host.platform.name.clone(), host)
            })
            .collect()
    }

    /// `vmc place --json DOC` over the fleet: host name to verdict.
    fn place(&self, doc: &str) -> BTreeMap<String, String> {
        let args = self.args();
        let mut argv = vec!["place", "--json", doc];
        argv.extend(args.iter().map(String::as_str));
        let o = vmc(&argv);
        assert!(matches!(o.status.code(), Some(0..=2)), "{}", stderr(&o));
        let list: Json = serde_json::from_str(&stdout(&o)).unwrap_or_else(|e| panic!("{e}: {}", stderr(&o)));
        list.as_array()
            .unwrap()
            .iter()
            .map(|h| {
                (
                    h["host"].as_str().unwrap().to_string(),
                    h["verdict"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }
}

/// Compiles `spec` with `args` (a platform or a pool) into the fleet's directory.
fn compile(fleet: &Fleet, name: &str, spec: &str, args: &[&str]) -> String {
    let spec_path = fleet.scratch.write(&format!("{name}.kdl"), spec);
    let out = fleet.scratch.path(&format!("{name}.abi")).display().to_string();
    let mut argv = vec!["compile", spec_path.as_str(), "-o", out.as_str()];
    argv.extend(args);
    let o = vmc(&argv);
    assert!(o.status.success(), "{name}: {}", stderr(&o));
    out
}

#[test]
fn the_scheduler_admits_exactly_the_hosts_vmc_place_accepts() {
    let started = std::time::Instant::now();
    let fleet = Fleet::new("kube-fleet", FLEET);
    let labels = fleet.labels();
    assert_eq!(labels.len(), FLEET);
    for (host, l) in &labels {
        for (k, v) in l {
            assert!(label_key_ok(k) && label_value_ok(v), "{host}: {k}={v}");
        }
    }

    // Documents of several platforms, CPU models, machine types and device settings.
    let mut docs: Vec<(String, String)> = Vec::new();
    for platform in ["linux-5.10", "linux-6.2", "linux-6.12"] {
        for model in LEVELS {
            let name = format!("{model}-{platform}");
            let spec = format!("vm \"vm\" {{\n    cpu-model \"{model}\"\n    net \"net0\"\n}}\n");
            docs.push((name.clone(), compile(&fleet, &name, &spec, &["--platform", platform])));
        }
    }
    let extra = [
        ("no-devices", "vm \"vm\" { cpu-model \"x86-64-v2\" }", "linux-6.9"),
        (
            "uso-off",
            "vm \"vm\" { cpu-model \"x86-64-v3\"; net \"net0\" { host-uso #false; guest-uso4 #false; guest-uso6 #false } }",
            "linux-6.9",
        ),
        (
            "host-uso-only",
            "vm \"vm\" { cpu-model \"x86-64-v1\"; net \"net0\" { guest-uso4 #false; guest-uso6 #false } }",
            "linux-6.6",
        ),
        (
            "two-nics-no-tso",
            "vm \"vm\" { net \"a\" { host-tso4 #false; host-tso6 #false; host-ecn #false; guest-tso4 #false; guest-tso6 #false; guest-ecn #false }; net \"b\" }",
            "linux-5.15",
        ),
        (
            "microvm-1.0",
            "vm \"vm\" { machine \"microvm-1.0\"; cpu-model \"x86-64-v2\"; net \"net0\" }",
            "linux-6.9",
        ),
    ];
    for (name, spec, platform) in extra {
        docs.push((name.to_string(), compile(&fleet, name, spec, &["--platform", platform])));
    }
    // `cpu-model "host"`: the features of one host of the fleet (measured in full, with
    // AVX2), its probe file a platform in a directory of its own.
    let donor = fleet
        .files
        .iter()
        .find(|f| {
            let l = &labels[f.file_stem().unwrap().to_str().unwrap()];
            f.extension().is_some_and(|e| e == "kdl")
                && l.contains_key("platform.vmc.dev/linux-5.10")
                && l.contains_key("cpu-feature.vmc.dev/avx2")
                && !l.keys().any(|k| k.starts_with("unmeasured."))
        })
        .unwrap();
    let donor_dir = fleet.scratch.path("donor");
    std::fs::create_dir(&donor_dir).unwrap();
    std::fs::copy(donor, donor_dir.join(donor.file_name().unwrap())).unwrap();
    docs.push((
        "host-model".into(),
        compile(
            &fleet,
            "host-model",
            "vm \"vm\" { cpu-model \"host\"; net \"net0\" }",
            &[
                "--platform-path",
                &donor_dir.display().to_string(),
                "--platform",
                donor.file_stem().unwrap().to_str().unwrap(),
            ],
        ),
    ));

    let generated = started.elapsed();

    // The verdicts of `vmc place`: through the library for every document (what the
    // command calls: `check::load_host`, then `check::assess`), and through the command
    // itself for one with USO, which must agree (the command, in a debug build, takes
    // seconds over the fleet).
    let hosts = fleet.hosts();
    let verdict_name = |v: check::Verdict| match v {
        check::Verdict::CanRun => "can-run",
        check::Verdict::CannotRun => "cannot-run",
        check::Verdict::CannotTell => "cannot-tell",
    };
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (name, doc) in &docs {
        let document =
            vmc_compiler::AbiDocument::from_kdl(&SourceFile::new(doc.clone(), std::fs::read_to_string(doc).unwrap()))
                .unwrap();
        let verdicts: BTreeMap<String, String> = hosts
            .iter()
            .map(|(host, h)| {
                (
                    host.clone(),
                    verdict_name(check::assess(&document, h).verdict()).to_string(),
                )
            })
            .collect();
        if name == "x86-64-v2-linux-6.2" {
            assert_eq!(
                fleet.place(doc),
                verdicts,
                "{name}: vmc place and check::assess disagree"
            );
        }
        assert_eq!(verdicts.len(), FLEET, "{name}");
        let o = vmc(&["affinity", "--json", doc]);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let affinity: Json = serde_json::from_str(&stdout(&o)).unwrap();
        let mut admitted = 0;
        for (host, verdict) in &verdicts {
            let admits = scheduler_admits(&affinity, &labels[host]).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                admits,
                verdict == "can-run",
                "{name}: the scheduler {} {host}, which vmc place says {verdict}\nlabels: {:?}",
                if admits { "admits" } else { "refuses" },
                labels[host]
            );
            admitted += usize::from(admits);
            *seen.entry(verdict.clone()).or_default() += 1;
        }
        // Each document splits the fleet: some hosts can run it, some cannot.
        assert!(
            admitted > 0 && admitted < FLEET,
            "{name}: {admitted} of {FLEET} admitted"
        );
    }
    // Every kind of verdict was met, "cannot tell" included.
    for verdict in ["can-run", "cannot-run", "cannot-tell"] {
        assert!(
            seen.get(verdict).is_some_and(|n| *n > 0),
            "no host was `{verdict}`: {seen:?}"
        );
    }
    eprintln!(
        "{} documents over {FLEET} hosts: {seen:?}; fleet, labels and documents in {generated:.1?}, all in {:.1?}",
        docs.len(),
        started.elapsed()
    );
}

/// Applies one `kubectl label node NAME --overwrite K=V... K-...` command, as kubectl
/// does, to a node's labels.
fn apply_kubectl_label(command: &str, node: &mut Labels) -> String {
    let words: Vec<&str> = command.split_whitespace().filter(|w| *w != "\\").collect();
    assert_eq!(&words[..3], ["kubectl", "label", "node"], "{command}");
    assert_eq!(words[4], "--overwrite");
    for w in &words[5..] {
        if let Some((k, v)) = w.split_once('=') {
            node.insert(k.to_string(), v.to_string());
        } else {
            let k = w.strip_suffix('-').unwrap_or_else(|| panic!("`{w}`"));
            node.remove(k);
        }
    }
    words[3].to_string()
}

#[test]
fn labels_as_commands_set_the_probe_s_labels_and_drop_stale_ones() {
    let fleet = Fleet::new("kube-commands", 24);
    let json = fleet.labels();
    let args = fleet.args();
    let mut argv = vec!["labels"];
    argv.extend(args.iter().map(String::as_str));
    let o = vmc(&argv);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o).replace(" \\\n", " ");
    let commands: Vec<&str> = text.lines().collect();
    assert_eq!(commands.len(), 24);
    for command in commands {
        // A node that had every label a new host can have, and one of its own.
        let mut node: Labels = [
            ("tap-offload.vmc.dev/uso4", "true"),
            ("tap-offload.vmc.dev/uso6", "true"),
            ("cpu-feature.vmc.dev/avx512f", "true"),
            ("platform.vmc.dev/linux-6.12", "true"),
            ("unmeasured.vmc.dev/kvm-capabilities", "true"),
            ("kubernetes.io/hostname", "x"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let name = apply_kubectl_label(command, &mut node);
        let mut want = json[&name].clone();
        want.insert("kubernetes.io/hostname".into(), "x".into());
        assert_eq!(node, want, "{name}");
    }
}

#[test]
fn labels_refuse_a_file_that_states_no_cpu_features_as_place_does() {
    let s = Scratch::new("kube-no-cpu");
    let file = s.write(
        "kernel-only.kdl",
        "format 1\nplatform \"k\" {\n    inherits \"linux-6.9\"\n    kernel \"6.9\"\n}\n",
    );
    let o = vmc(&["labels", &file]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("states no cpu-features"), "{}", stderr(&o));
}

#[test]
fn a_host_not_measured_in_full_is_labelled_with_what_was_measured_and_said() {
    let o = vmc(&[
        "labels",
        "--json",
        &repo().join("tests/hosts/new-6.9.json").display().to_string(),
    ]);
    assert!(o.status.success());
    assert_eq!(stderr(&o), "");
    let s = Scratch::new("kube-unmeasured");
    let text = std::fs::read_to_string(repo().join("tests/hosts/new-6.9.json"))
        .unwrap()
        .replace(
            "\"unmeasured\": []",
            "\"unmeasured\": [{\"what\": \"tap-offloads\", \"why\": \"no /dev/net/tun\"}]",
        )
        .replace(
            "\"tap-offloads\": [\"csum\", \"tso4\", \"tso6\", \"tso-ecn\", \"ufo\", \"uso4\", \"uso6\"]",
            "\"tap-offloads\": []",
        );
    let file = s.write("partial.json", text);
    let o = vmc(&["labels", "--json", &file]);
    assert!(o.status.success());
    assert!(
        stderr(&o).contains("was not measured in full")
            && stderr(&o).contains("tap-offloads not measured: no /dev/net/tun"),
        "{}",
        stderr(&o)
    );
    let list: Json = serde_json::from_str(&stdout(&o)).unwrap();
    let labels = list[0]["labels"].as_object().unwrap();
    assert_eq!(labels["unmeasured.vmc.dev/tap-offloads"], "true");
    assert!(!labels
        .keys()
        .any(|k| k.starts_with("tap-offload.") || k.starts_with("platform.")));
    assert!(labels.contains_key("kvm-capability.vmc.dev/irqfd"));
}

// ---------------------------------------------------------------------------------------
// The manifests.

fn deploy() -> PathBuf {
    repo().join("deploy/kubernetes")
}

fn manifests() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(deploy())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    out.sort();
    assert!(out.len() >= 2, "{out:?}");
    out
}

/// The `kubernetes-validate` program (PyPI's `kubernetes-validate`, which carries
/// Kubernetes' published JSON schemas and needs no network): $KUBERNETES_VALIDATE, the
/// one `scripts/test.sh` installs under target/, or one on PATH; or what is missing, a
/// check for [`support::require!`].
fn kubernetes_validate() -> Result<PathBuf, String> {
    let candidates = std::env::var_os("KUBERNETES_VALIDATE")
        .map(PathBuf::from)
        .into_iter()
        .chain([repo().join("target/kubernetes-validate/bin/kubernetes-validate")])
        .chain(std::env::var_os("PATH").into_iter().flat_map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("kubernetes-validate"))
                .collect::<Vec<_>>()
        }));
    for c in candidates {
        if Command::new(&c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Ok(c);
        }
    }
    Err("kubernetes-validate is not installed (scripts/test.sh installs it)".to_string())
}

/// The Kubernetes versions whose schemas the manifests must satisfy: the oldest still
/// in wide use, and a recent one.
const KUBERNETES_VERSIONS: &[&str] = &["1.30.0", "1.34.0"];

#[test]
fn the_manifests_validate_against_kubernetes_schemas() {
    let validator = require!(kubernetes_validate());
    for version in KUBERNETES_VERSIONS {
        let o = Command::new(&validator)
            .args(["--strict", "--kubernetes-version", version])
            .args(manifests())
            .output()
            .unwrap();
        let out = format!("{}{}", stdout(&o), stderr(&o));
        assert!(o.status.success(), "Kubernetes {version}:\n{out}");
        // Each resource was checked against its schema (none skipped as unknown).
        for resource in [
            "namespace/vmc-system",
            "serviceaccount/vmc-node-labeller",
            "clusterrole/vmc-node-labeller",
            "clusterrolebinding/vmc-node-labeller",
            "configmap/vmc-node-labeller",
            "daemonset/vmc-node-labeller",
            "configmap/example-vm",
            "pod/example-vm",
        ] {
            assert!(
                out.contains(&format!("passed for resource {resource} ")),
                "Kubernetes {version}: {resource}:\n{out}"
            );
        }
        assert!(!out.contains("WARN"), "Kubernetes {version}:\n{out}");
    }
    // A broken manifest is refused: the validator does validate.
    let s = Scratch::new("kube-validate");
    let bad = s.write(
        "bad.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\nspec:\n  containers:\n  - name: a\n    image: vmc\n    affinity: {}\n",
    );
    let o = Command::new(&validator).args(["--strict", &bad]).output().unwrap();
    assert!(!o.status.success(), "{}", stdout(&o));
}

/// The text under `key: |` in a YAML file, its indentation removed.
fn block_scalar(yaml: &str, key: &str) -> String {
    let mut lines = yaml.lines().skip_while(|l| l.trim() != format!("{key}: |"));
    let head = lines.next().unwrap_or_else(|| panic!("no `{key}: |`"));
    let indent = head.len() - head.trim_start().len() + 2;
    let mut out = String::new();
    for line in lines {
        if !line.trim().is_empty() && line.len() - line.trim_start().len() < indent {
            break;
        }
        out += line.get(indent..).unwrap_or("");
        out += "\n";
    }
    out.trim_end().to_string() + "\n"
}

#[test]
fn the_example_pod_runs_the_example_document_with_its_affinity() {
    let s = Scratch::new("kube-example");
    let abi = s.path("vm.abi").display().to_string();
    // As deploy/kubernetes/example-vm.sh names it: the document records where its
    // values came from. (Tests run in the repository's root.)
    let spec = "deploy/kubernetes/example-vm.kdl";
    let o = vmc(&["compile", spec, "--platform", "linux-6.9", "-o", &abi]);
    assert!(o.status.success(), "{}", stderr(&o));
    let pod = std::fs::read_to_string(deploy().join("example-vm.yaml")).unwrap();
    let regenerate = "regenerate with deploy/kubernetes/example-vm.sh";
    // The document in the ConfigMap is the spec's, compiled for linux-6.9.
    assert_eq!(
        block_scalar(&pod, "vm.abi"),
        std::fs::read_to_string(&abi).unwrap(),
        "{regenerate}"
    );
    // The pod's affinity is `vmc affinity`'s, under `affinity:`.
    let o = vmc(&["affinity", &abi]);
    assert!(o.status.success(), "{}", stderr(&o));
    let indented: String = stdout(&o).lines().map(|l| format!("    {l}\n")).collect();
    assert!(
        pod.contains(&format!("  affinity:\n{indented}")),
        "{regenerate}; the affinity:\n{indented}"
    );
    assert!(pod.contains("vmc run /etc/vmc/vm.abi") || pod.contains("\"/etc/vmc/vm.abi\""));
}

#[test]
fn the_labeller_relabels_a_node_whose_host_changed() {
    // The DaemonSet's script, with `vmc probe` answered from a file and `kubectl` a fake
    // that keeps the node's labels in a file.
    let daemonset = std::fs::read_to_string(deploy().join("node-labeller.yaml")).unwrap();
    let script = block_scalar(&daemonset, "label-node.sh");
    let s = Scratch::new("kube-labeller");
    let bin = s.path("bin");
    std::fs::create_dir(&bin).unwrap();
    let write_exec = |name: &str, text: String| {
        let p = bin.join(name);
        std::fs::write(&p, text).unwrap();
        let mut perm = std::fs::metadata(&p).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
        std::fs::set_permissions(&p, perm).unwrap();
    };
    let state = s.path("node-labels");
    let probe = s.path("host.json");
    write_exec(
        "vmc",
        format!(
            "#!/bin/sh\nif [ \"$1\" = probe ]; then cat '{}'; exit 0; fi\nexec '{}' \"$@\"\n",
            probe.display(),
            env!("CARGO_BIN_EXE_vmc")
        ),
    );
    // `kubectl get node N -o go-template=...` prints the keys; `kubectl label node N
    // --overwrite K=V K-` changes them; each call is logged.
    write_exec(
        "kubectl",
        format!(
            r#"#!/bin/sh
state='{state}'
echo "$*" >> '{log}'
touch "$state"
case "$1" in
get) cut -d= -f1 "$state" ;;
label)
    shift 3
    for a in "$@"; do
        case "$a" in
        --*) ;;
        *=*) k=${{a%%=*}}; grep -v "^$k=" "$state" > "$state.new"; echo "$a" >> "$state.new"; mv "$state.new" "$state" ;;
        *-) k=${{a%-}}; grep -v "^$k=" "$state" > "$state.new"; mv "$state.new" "$state" ;;
        esac
    done ;;
*) echo "kubectl: unexpected $*" >&2; exit 1 ;;
esac
"#,
            state = state.display(),
            log = s.path("kubectl.log").display()
        ),
    );
    let run_once = |probe_text: &str| {
        std::fs::write(&probe, probe_text).unwrap();
        let o = Command::new("sh")
            .arg("-c")
            .arg(&script)
            .env("PATH", format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()))
            .env("NODE_NAME", "node-a")
            .env("VMC_LABELLER_ONCE", "1")
            .env("VMC_LABELLER_DIR", s.path("").display().to_string())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
        let mut labels: Vec<String> = std::fs::read_to_string(&state)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        labels.sort();
        labels
    };
    // A stale key of vmc's that this vmc no longer writes, and one of someone else.
    std::fs::write(&state, "vmc.dev/retired=true\nkubernetes.io/hostname=node-a\n").unwrap();
    let new = std::fs::read_to_string(repo().join("tests/hosts/new-6.9.json"))
        .unwrap()
        .replace("rack2-new", "node-a");
    let labels = run_once(&new);
    assert!(
        labels.contains(&"tap-offload.vmc.dev/uso4=true".to_string()),
        "{labels:?}"
    );
    assert!(labels.contains(&"kubernetes.io/hostname=node-a".to_string()));
    assert!(!labels.iter().any(|l| l.starts_with("vmc.dev/retired")), "{labels:?}");
    // A kernel upgrade that lost USO: the labels go.
    let without_uso = new.replace(", \"uso4\", \"uso6\"", "").replace("\"6.9\"", "\"6.10\"");
    let labels = run_once(&without_uso);
    assert!(!labels.iter().any(|l| l.contains("uso")), "{labels:?}");
    assert!(
        labels.contains(&"tap-offload.vmc.dev/csum=true".to_string()),
        "{labels:?}"
    );
    assert!(
        !labels.iter().any(|l| l.starts_with("platform.vmc.dev/linux-6.9")),
        "{labels:?}"
    );
    assert!(
        labels.contains(&"platform.vmc.dev/linux-6.1=true".to_string()),
        "{labels:?}"
    );
    let json_labels: Vec<String> = {
        let s2 = Scratch::new("kube-labeller-json");
        let f = s2.write("p.json", &without_uso);
        let o = vmc(&["labels", "--json", &f]);
        let list: Json = serde_json::from_str(&stdout(&o)).unwrap();
        list[0]["labels"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap()))
            .collect()
    };
    let vmc_labels: Vec<String> = labels.iter().filter(|l| l.contains("vmc.dev/")).cloned().collect();
    let mut want = json_labels;
    want.sort();
    assert_eq!(vmc_labels, want);
}
