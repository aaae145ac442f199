//! Kubernetes: node labels from a host's probe, and a pod's node affinity from a document.
//!
//! A fleet on Kubernetes places VMs with the scheduler's own label matching, so vmc
//! hands it two things: the labels a host's probe implies ([`node_labels`]), and for a
//! document the `nodeAffinity` that admits exactly the hosts able to run it
//! ([`affinity`]).
//!
//! The two are built from the same facts [`check::assess`] judges a host by, one label
//! per fact, so that the guarantee holds by construction: a document needs TAP offloads,
//! KVM capabilities and CPU features (its `requires`, nothing else), and a host can run
//! it exactly when it has every one of them in its probe. So a host gets the label
//! `tap-offload.vmc.dev/uso4=true` exactly when its probe lists the TAP offload `uso4`
//! (likewise `kvm-capability.vmc.dev/…` and `cpu-feature.vmc.dev/…`), and the affinity of
//! a document is one node selector term that asks, with `In ["true"]`, for the label of
//! every capability in its `requires`.
//!
//! A part of a host that was not measured lists nothing (or only what was seen), so it
//! gets no label for what it may have: a document that needs something there is not
//! admitted, as `vmc place` says "cannot tell" rather than "can run". A probe that states
//! no CPU features at all (a kernel platform, not a probe) is refused by the callers, as
//! by `vmc place`: it says nothing about the CPU, so no label could be right.
//!
//! Besides those facts, a host is labelled with the named platforms it supports
//! (`platform.vmc.dev/linux-6.9`) and the parts of it that were not measured
//! (`unmeasured.vmc.dev/kvm-capabilities`), for people and for selectors of their own.
//! The affinity does not use them: a document's platform names the defaults it was
//! compiled with, not what it needs (one compiled for `linux-6.9` with USO off runs on
//! Linux 5.15).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{json, Value as Json};

use crate::check::{self, Host, Part, Verdict};
use crate::document::{AbiDocument, BASE_KVM_CAPABILITIES, DEVICE_KVM_CAPABILITIES};
use crate::platform::{PlatformRegistry, TapOffload};

/// The DNS domain under which vmc's label keys are prefixed.
pub const LABEL_DOMAIN: &str = "vmc.dev";

/// The value of every label vmc sets: the label's presence is the fact. (A selector
/// asks for `In ["true"]` rather than `Exists`, so a label someone sets to `false` by
/// hand does not admit the host.)
pub const TRUE: &str = "true";

/// A kind of fact about a host, each under a prefix of its own: `<group>.vmc.dev/<name>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LabelGroup {
    /// A TAP offload the host's kernel accepts (`tap-offload.vmc.dev/uso4`).
    TapOffload,
    /// A KVM capability (`kvm-capability.vmc.dev/irqfd`).
    KvmCapability,
    /// A CPU feature KVM can give a guest (`cpu-feature.vmc.dev/avx2`).
    CpuFeature,
    /// A named platform the host supports (`platform.vmc.dev/linux-6.9`).
    Platform,
    /// A part of the host its probe did not measure (`unmeasured.vmc.dev/tap-offloads`).
    Unmeasured,
}

impl LabelGroup {
    pub const ALL: [LabelGroup; 5] = [
        LabelGroup::TapOffload,
        LabelGroup::KvmCapability,
        LabelGroup::CpuFeature,
        LabelGroup::Platform,
        LabelGroup::Unmeasured,
    ];

    /// The first label of the key's prefix: `tap-offload`, `kvm-capability`, …
    pub fn name(self) -> &'static str {
        match self {
            LabelGroup::TapOffload => "tap-offload",
            LabelGroup::KvmCapability => "kvm-capability",
            LabelGroup::CpuFeature => "cpu-feature",
            LabelGroup::Platform => "platform",
            LabelGroup::Unmeasured => "unmeasured",
        }
    }

    /// The key's prefix: `tap-offload.vmc.dev`.
    pub fn prefix(self) -> String {
        format!("{}.{LABEL_DOMAIN}", self.name())
    }

    /// The label key for `name` in this group, or `None` when `name` cannot be the name
    /// part of a Kubernetes label key (see [`valid_name`]).
    pub fn key(self, name: &str) -> Option<String> {
        valid_name(name).then(|| format!("{}/{name}", self.prefix()))
    }
}

impl fmt::Display for LabelGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether `key` is one of vmc's: its prefix is `vmc.dev` or ends in `.vmc.dev`. The node
/// labeller removes such a key when a new probe no longer implies it.
pub fn is_vmc_key(key: &str) -> bool {
    key.split_once('/')
        .is_some_and(|(prefix, _)| prefix == LABEL_DOMAIN || prefix.ends_with(&format!(".{LABEL_DOMAIN}")))
}

/// Kubernetes' limit on the name part of a label key, and on a label value.
pub const MAX_NAME: usize = 63;

/// Kubernetes' limit on a label key's prefix (a DNS subdomain).
pub const MAX_PREFIX: usize = 253;

/// The name part of a label key (Kubernetes' "qualified name"): 1 to 63 characters,
/// alphanumeric at both ends, `-`, `_` and `.` between.
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_NAME
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// A label value: empty, or as [`valid_name`].
pub fn valid_value(value: &str) -> bool {
    value.is_empty() || valid_name(value)
}

/// A key's prefix: a DNS subdomain (RFC 1123) of at most 253 characters, lowercase labels
/// of 1 to 63 characters, alphanumeric at both ends and `-` between, joined by dots.
pub fn valid_prefix(prefix: &str) -> bool {
    prefix.len() <= MAX_PREFIX
        && prefix.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && is_lower_alnum(b[0])
                && is_lower_alnum(b[b.len() - 1])
                && b.iter().all(|&c| is_lower_alnum(c) || c == b'-')
        })
}

fn is_lower_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// A label key: `[prefix/]name`.
pub fn valid_key(key: &str) -> bool {
    match key.split_once('/') {
        Some((prefix, name)) => valid_prefix(prefix) && valid_name(name),
        None => valid_name(key),
    }
}

/// The labels a host's probe implies, and what could not be a label.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeLabels {
    /// Key to value (always [`TRUE`]), sorted by key.
    pub labels: BTreeMap<String, String>,
    /// What the host has that no label can name (a KVM capability or platform name from
    /// a third-party file that breaks the label syntax), as `group name`. No document
    /// needs such a name: the capabilities a document can need are vmc's own, whose
    /// names are valid labels (tested).
    pub unlabelled: Vec<String>,
}

impl NodeLabels {
    fn add(&mut self, group: LabelGroup, name: &str) {
        match group.key(name) {
            Some(key) => {
                self.labels.insert(key, TRUE.to_string());
            }
            None => self.unlabelled.push(format!("{group} {name}")),
        }
    }
}

/// The node labels of `host`: one per TAP offload, KVM capability and CPU feature its
/// probe lists, one per named platform of `registry` it supports (by
/// [`check::platform_fit`]: not when it cannot tell), one per part not measured.
pub fn node_labels(host: &Host, registry: &PlatformRegistry) -> NodeLabels {
    let mut out = NodeLabels::default();
    let p = &host.platform;
    for o in &p.tap_offloads {
        out.add(LabelGroup::TapOffload, o.name());
    }
    for c in &p.kvm_capabilities {
        out.add(LabelGroup::KvmCapability, c);
    }
    for f in p.cpu_features.iter().flatten() {
        out.add(LabelGroup::CpuFeature, f);
    }
    for platform in registry.by_age() {
        if check::platform_fit(platform, host).verdict() == Verdict::CanRun {
            out.add(LabelGroup::Platform, &platform.name);
        }
    }
    for u in &host.unmeasured {
        out.add(LabelGroup::Unmeasured, u.part.name());
    }
    out
}

/// Every key vmc can set on a host whose names it knows: each TAP offload, each CPU
/// feature, the KVM capabilities of every platform in `registry` and of every document,
/// each platform of `registry`, each part of a probe. A labeller removes the ones a new
/// probe does not imply, so that a host that lost a capability (a kernel upgrade, a
/// module no longer loaded) loses its label.
pub fn known_keys(registry: &PlatformRegistry) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut add = |group: LabelGroup, name: &str| keys.extend(group.key(name));
    for o in TapOffload::ALL {
        add(LabelGroup::TapOffload, o.name());
    }
    for f in crate::cpu::FEATURES {
        add(LabelGroup::CpuFeature, f.name);
    }
    for c in BASE_KVM_CAPABILITIES.iter().chain(DEVICE_KVM_CAPABILITIES) {
        add(LabelGroup::KvmCapability, c);
    }
    for p in registry.by_age() {
        for c in &p.kvm_capabilities {
            add(LabelGroup::KvmCapability, c);
        }
        add(LabelGroup::Platform, &p.name);
    }
    for part in Part::ALL {
        add(LabelGroup::Unmeasured, part.name());
    }
    keys
}

/// A node selector operator, as Kubernetes spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
    Gt,
    Lt,
}

impl Operator {
    pub fn name(self) -> &'static str {
        match self {
            Operator::In => "In",
            Operator::NotIn => "NotIn",
            Operator::Exists => "Exists",
            Operator::DoesNotExist => "DoesNotExist",
            Operator::Gt => "Gt",
            Operator::Lt => "Lt",
        }
    }
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    pub values: Vec<String>,
}

impl Requirement {
    fn has(key: String) -> Requirement {
        Requirement {
            key,
            operator: Operator::In,
            values: vec![TRUE.to_string()],
        }
    }

    fn to_json(&self) -> Json {
        let mut m = serde_json::Map::new();
        m.insert("key".into(), json!(self.key));
        m.insert("operator".into(), json!(self.operator.name()));
        if !self.values.is_empty() {
            m.insert("values".into(), json!(self.values));
        }
        Json::Object(m)
    }
}

/// A pod's required node affinity: its node selector terms, OR-ed; the requirements of
/// a term are AND-ed (as the scheduler reads them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Affinity {
    pub terms: Vec<Vec<Requirement>>,
}

/// What a document needs that no label can name. It cannot happen with vmc's own
/// capability names (tested), but an affinity that left a requirement out would admit
/// hosts that cannot run the document, so it is an error rather than a gap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unlabellable(pub String);

impl fmt::Display for Unlabellable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the document needs {}, which cannot be a Kubernetes label name",
            self.0
        )
    }
}

/// The node affinity that admits exactly the hosts that can run `doc`: one term asking
/// for the label of every TAP offload, KVM capability and CPU feature in its
/// `requires`, which are what [`check::assess`] compares with a host. A document always
/// needs KVM capabilities (the runtime's base ones), so the term is never empty (an
/// empty term would match no node).
pub fn affinity(doc: &AbiDocument) -> Result<Affinity, Unlabellable> {
    let r = &doc.requires;
    let wanted = r
        .tap_offloads
        .iter()
        .map(|o| (LabelGroup::TapOffload, o.name()))
        .chain(
            r.kvm_capabilities
                .iter()
                .map(|c| (LabelGroup::KvmCapability, c.as_str())),
        )
        .chain(r.cpu_features.iter().map(|f| (LabelGroup::CpuFeature, f.as_str())));
    let mut term = Vec::new();
    for (group, name) in wanted {
        let key = group
            .key(name)
            .ok_or_else(|| Unlabellable(format!("{group} `{name}`")))?;
        term.push(Requirement::has(key));
    }
    term.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(Affinity { terms: vec![term] })
}

impl Affinity {
    /// `{"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
    /// {"nodeSelectorTerms": [{"matchExpressions": [...]}]}}}`: a pod's `affinity`.
    pub fn to_json(&self) -> Json {
        let terms: Vec<Json> = self
            .terms
            .iter()
            .map(|t| json!({ "matchExpressions": t.iter().map(Requirement::to_json).collect::<Vec<_>>() }))
            .collect();
        json!({
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": { "nodeSelectorTerms": terms }
            }
        })
    }

    /// The same as YAML, to go under a pod's `affinity:` (indented by the caller). Keys
    /// and values are label syntax, which YAML takes plain; `"true"` is quoted, as a
    /// label value is a string.
    pub fn to_yaml(&self) -> String {
        let mut out =
            String::from("nodeAffinity:\n  requiredDuringSchedulingIgnoredDuringExecution:\n    nodeSelectorTerms:\n");
        for term in &self.terms {
            out += "    - matchExpressions:\n";
            for r in term {
                out += &format!("      - key: {}\n        operator: {}\n", r.key, r.operator.name());
                if !r.values.is_empty() {
                    let values: Vec<String> = r.values.iter().map(|v| format!("\"{v}\"")).collect();
                    out += &format!("        values: [{}]\n", values.join(", "));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Unmeasured;

    fn doc(text: &str, platform: &str) -> AbiDocument {
        crate::expand::compile_for_test(text, platform)
    }

    /// A host measured in full: a built-in platform with the CPU features of `model`.
    fn host(platform: &str, model: &str) -> Host {
        let mut p = PlatformRegistry::builtin().get(platform).unwrap().clone();
        p.name = "node-1".into();
        let features = crate::cpu::expand(crate::cpu::model(model).unwrap());
        p.cpu_features = Some(
            features
                .iter()
                .chain(crate::cpu::BASELINE)
                .map(|s| s.to_string())
                .collect(),
        );
        Host::measured(p)
    }

    /// Whether `labels` satisfy `affinity`, for the operators vmc writes.
    fn admits(affinity: &Affinity, labels: &BTreeMap<String, String>) -> bool {
        affinity.terms.iter().any(|t| {
            !t.is_empty()
                && t.iter().all(|r| {
                    assert_eq!(r.operator, Operator::In);
                    labels.get(&r.key).is_some_and(|v| r.values.contains(v))
                })
        })
    }

    #[test]
    fn label_syntax_follows_kubernetes() {
        for ok in ["a", "sse4.1", "tsc-deadline", "A_b.c-9", &"x".repeat(63)] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", ".a", "a b", "a/b", "é", &"x".repeat(64)] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert!(valid_value("") && valid_value("true") && !valid_value("a b"));
        assert!(valid_key("cpu-feature.vmc.dev/sse4.2") && valid_key("plain"));
        for bad in ["Vmc.dev/a", "vmc..dev/a", "-vmc.dev/a", "vmc.dev/", "/a", "a/b/c"] {
            assert!(!valid_key(bad), "{bad}");
        }
        let long_prefix = ["a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(61)].join(".");
        assert_eq!(long_prefix.len(), 253);
        assert!(valid_prefix(&long_prefix) && !valid_prefix(&format!("{long_prefix}e")));
        // A blake3 hash in hex is 64 characters: it does not fit in a value.
        assert!(!valid_value(&"0".repeat(64)));
    }

    #[test]
    fn every_name_a_document_can_need_is_a_valid_label() {
        let registry = PlatformRegistry::builtin();
        for key in known_keys(&registry) {
            assert!(valid_key(&key), "{key}");
            assert!(is_vmc_key(&key), "{key}");
        }
        for group in LabelGroup::ALL {
            assert!(valid_prefix(&group.prefix()), "{group}");
        }
        assert!(known_keys(&registry).contains("tap-offload.vmc.dev/uso6"));
        assert!(known_keys(&registry).contains("kvm-capability.vmc.dev/irqfd"));
        assert!(known_keys(&registry).contains("cpu-feature.vmc.dev/avx512vl"));
        assert!(known_keys(&registry).contains("platform.vmc.dev/linux-6.12"));
        assert!(!is_vmc_key("node.kubernetes.io/instance-type") && !is_vmc_key("xvmc.dev/a"));
    }

    #[test]
    fn a_host_is_labelled_with_what_its_probe_lists() {
        let registry = PlatformRegistry::builtin();
        let h = host("linux-6.9", "x86-64-v3");
        let l = node_labels(&h, &registry).labels;
        assert_eq!(l.get("tap-offload.vmc.dev/uso4").map(String::as_str), Some("true"));
        assert_eq!(l.get("kvm-capability.vmc.dev/irqfd").map(String::as_str), Some("true"));
        assert!(l.contains_key("cpu-feature.vmc.dev/avx2"));
        assert!(!l.contains_key("cpu-feature.vmc.dev/avx512f"));
        let platforms: Vec<&str> = l.keys().filter_map(|k| k.strip_prefix("platform.vmc.dev/")).collect();
        assert_eq!(
            platforms,
            [
                "linux-5.10",
                "linux-5.15",
                "linux-6.1",
                "linux-6.12",
                "linux-6.2",
                "linux-6.6",
                "linux-6.9"
            ]
        );
        assert!(l.keys().all(|k| known_keys(&registry).contains(k)), "{l:?}");
        let old = node_labels(&host("linux-5.15", "x86-64-v3"), &registry).labels;
        assert!(!old.contains_key("tap-offload.vmc.dev/uso4"));
        assert!(!old.contains_key("platform.vmc.dev/linux-6.2"));
        assert!(old.contains_key("platform.vmc.dev/linux-6.1"));
    }

    #[test]
    fn what_was_not_measured_gives_no_label_and_admits_nothing_that_needs_it() {
        let registry = PlatformRegistry::builtin();
        let d = doc("vm \"a\" { cpu-model \"x86-64-v1\"; net \"n\" }", "linux-6.9");
        let mut h = host("linux-6.9", "x86-64-v1");
        let a = affinity(&d).unwrap();
        assert!(admits(&a, &node_labels(&h, &registry).labels));
        h.platform.tap_offloads.clear();
        h.unmeasured = vec![Unmeasured {
            part: Part::TapOffloads,
            why: "cannot open /dev/net/tun".into(),
        }];
        assert_eq!(check::assess(&d, &h).verdict(), Verdict::CannotTell);
        let l = node_labels(&h, &registry).labels;
        assert!(l.contains_key("unmeasured.vmc.dev/tap-offloads"));
        assert!(!l
            .keys()
            .any(|k| k.starts_with("tap-offload.") || k.starts_with("platform.")));
        assert!(!admits(&a, &l));
        // A document that needs nothing there still runs: without devices, no TAP.
        let bare = doc("vm \"a\" { cpu-model \"x86-64-v1\" }", "linux-6.9");
        assert_eq!(check::assess(&bare, &h).verdict(), Verdict::CanRun);
        assert!(admits(&affinity(&bare).unwrap(), &l));
    }

    #[test]
    fn the_affinity_asks_for_every_requirement_and_nothing_else() {
        let d = doc("vm \"a\" { cpu-model \"x86-64-v2\"; net \"n\" }", "linux-6.9");
        let a = affinity(&d).unwrap();
        assert_eq!(a.terms.len(), 1);
        let keys: BTreeSet<&str> = a.terms[0].iter().map(|r| r.key.as_str()).collect();
        let r = &d.requires;
        assert_eq!(
            keys.len(),
            r.tap_offloads.len() + r.kvm_capabilities.len() + r.cpu_features.len()
        );
        assert!(keys.contains("tap-offload.vmc.dev/uso6"));
        assert!(keys.contains("cpu-feature.vmc.dev/sse4.2"));
        assert!(keys.contains("kvm-capability.vmc.dev/user-memory"));
        assert!(!keys.iter().any(|k| k.starts_with("platform.")));
        // USO off: no USO needed, and a 5.15 host with the CPU is admitted.
        let off = doc(
            "vm \"a\" { cpu-model \"x86-64-v2\"; net \"n\" { host-uso #false; guest-uso4 #false; guest-uso6 #false } }",
            "linux-6.9",
        );
        let registry = PlatformRegistry::builtin();
        let old = node_labels(&host("linux-5.15", "x86-64-v2"), &registry).labels;
        assert!(admits(&affinity(&off).unwrap(), &old));
        assert!(!admits(&a, &old));
        // A v2 document does not go to a v1 host.
        let v1 = node_labels(&host("linux-6.9", "x86-64-v1"), &registry).labels;
        assert!(!admits(&a, &v1));
    }

    #[test]
    fn the_affinity_prints_as_json_and_yaml() {
        let d = doc("vm \"a\" { cpu-model \"x86-64-v1\" }", "linux-5.15");
        let a = affinity(&d).unwrap();
        let j = a.to_json();
        let term = &j["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0];
        assert_eq!(
            term["matchExpressions"][0],
            json!({"key": "cpu-feature.vmc.dev/apic", "operator": "In", "values": ["true"]})
        );
        let y = a.to_yaml();
        assert!(
            y.starts_with(
                "nodeAffinity:\n  requiredDuringSchedulingIgnoredDuringExecution:\n    nodeSelectorTerms:\n    - matchExpressions:\n      - key: cpu-feature.vmc.dev/apic\n        operator: In\n        values: [\"true\"]\n"
            ),
            "{y}"
        );
        assert_eq!(y.matches("- key: ").count(), a.terms[0].len());
    }

    #[test]
    fn a_name_that_cannot_be_a_label_is_left_out_and_said() {
        let registry = PlatformRegistry::builtin();
        let mut h = host("linux-6.9", "x86-64-v1");
        h.platform.kvm_capabilities.insert("has space".into());
        let l = node_labels(&h, &registry);
        assert_eq!(l.unlabelled, ["kvm-capability has space"]);
        assert!(l.labels.keys().all(|k| valid_key(k)));
    }
}
