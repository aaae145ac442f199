//! Can a host run a document? Can a host stand in for a platform?
//!
//! A host is described as a [`Platform`] (what `vmc probe` measures is one), so the same
//! pure logic serves `vmc run`'s refusal, `vmc check`, `vmc platforms --host` and
//! placement over probe files written elsewhere.

use std::fmt;

use crate::document::AbiDocument;
use crate::platform::{Platform, PlatformRegistry};

/// The kind of host capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Group {
    Cpu,
    Tap,
    Kvm,
}

impl fmt::Display for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Group::Cpu => "CPU",
            Group::Tap => "TAP",
            Group::Kvm => "KVM",
        })
    }
}

/// One capability the host lacks, and the ABI values that need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortfall {
    pub group: Group,
    pub capability: String,
    pub needed_by: Vec<String>,
}

/// Everything `doc` needs that `host` lacks, grouped CPU, TAP, KVM; empty when the host
/// can run it. A host that states no CPU features (a named kernel platform) is not
/// checked for CPU features.
pub fn shortfalls(doc: &AbiDocument, host: &Platform) -> Vec<Shortfall> {
    let mut out = Vec::new();
    if let Some(available) = &host.cpu_features {
        for f in &doc.requires.cpu_features {
            if !available.contains(f) {
                let from_model =
                    crate::cpu::model(&doc.abi.cpu.model).is_none_or(|m| crate::cpu::expand(m).contains(&f.as_str()));
                out.push(Shortfall {
                    group: Group::Cpu,
                    capability: f.clone(),
                    needed_by: vec![if from_model {
                        format!("cpu.model {}", doc.abi.cpu.model)
                    } else {
                        format!("the CPU baseline of machine type {}", doc.abi.machine)
                    }],
                });
            }
        }
    }
    for o in &doc.requires.tap_offloads {
        if host.tap_offloads.contains(o) {
            continue;
        }
        let needed_by = doc
            .abi
            .devices
            .iter()
            .flat_map(|d| {
                d.properties
                    .iter()
                    .filter(|(p, v)| v.is_on() && p.tap_offloads.contains(o))
                    .map(move |(p, _)| format!("devices.{}.{}", d.id, p.name))
            })
            .collect();
        out.push(Shortfall {
            group: Group::Tap,
            capability: format!("{} ({})", o.name(), o.flag()),
            needed_by,
        });
    }
    for c in &doc.requires.kvm_capabilities {
        if !host.kvm_capabilities.contains(c) {
            out.push(Shortfall {
                group: Group::Kvm,
                capability: c.clone(),
                needed_by: vec!["every VM (the runtime uses it)".to_string()],
            });
        }
    }
    out.sort_by_key(|s| s.group);
    out
}

/// What `host` lacks of what `platform` promises; empty when the host satisfies it.
pub fn platform_missing(platform: &Platform, host: &Platform) -> Vec<(Group, String)> {
    let mut out = Vec::new();
    if let (Some(wanted), Some(have)) = (&platform.cpu_features, &host.cpu_features) {
        out.extend(wanted.difference(have).map(|f| (Group::Cpu, f.clone())));
    }
    out.extend(
        platform
            .tap_offloads
            .difference(&host.tap_offloads)
            .map(|o| (Group::Tap, o.name().to_string())),
    );
    out.extend(
        platform
            .kvm_capabilities
            .difference(&host.kvm_capabilities)
            .map(|c| (Group::Kvm, c.clone())),
    );
    out
}

/// The platform to compile for when a VM must run on every one of `hosts`: among the
/// named platforms every host satisfies, those with the most capabilities (they give the
/// guest the most); of those, the newest whose kernel is no newer than the oldest
/// host's, or else the oldest (a distribution kernel with backports satisfies platforms
/// newer than itself; name the first one that matches what it has).
pub fn choose_platform<'a>(registry: &'a PlatformRegistry, hosts: &[&Platform]) -> Option<&'a Platform> {
    let satisfied: Vec<&Platform> = registry
        .by_age()
        .into_iter()
        .filter(|p| hosts.iter().all(|h| platform_missing(p, h).is_empty()))
        .collect();
    let weight = |p: &Platform| p.tap_offloads.len() + p.kvm_capabilities.len();
    let best = satisfied.iter().map(|p| weight(p)).max()?;
    let candidates: Vec<&Platform> = satisfied.into_iter().filter(|p| weight(p) == best).collect();
    let oldest_kernel = hosts.iter().map(|h| h.kernel).min()?;
    candidates
        .iter()
        .rev()
        .find(|p| p.kernel <= oldest_kernel)
        .or_else(|| candidates.first())
        .copied()
}

/// The shortfalls for people: one line per group, then each capability with what needs it.
pub fn render(shortfalls: &[Shortfall], host: &str) -> String {
    let mut out = String::new();
    for group in [Group::Cpu, Group::Tap, Group::Kvm] {
        let items: Vec<&Shortfall> = shortfalls.iter().filter(|s| s.group == group).collect();
        if items.is_empty() {
            continue;
        }
        out += &format!(
            "{host} lacks {} {group} capabilit{}: {}\n",
            items.len(),
            if items.len() == 1 { "y" } else { "ies" },
            items
                .iter()
                .map(|s| s.capability.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        // One line per distinct set of values in need, listing what they lack.
        let mut needs: Vec<(&Vec<String>, Vec<&str>)> = Vec::new();
        for s in items {
            match needs.iter_mut().find(|(n, _)| *n == &s.needed_by) {
                Some((_, caps)) => caps.push(&s.capability),
                None => needs.push((&s.needed_by, vec![&s.capability])),
            }
        }
        for (needed_by, caps) in needs {
            out += &format!("    {} needed by {}\n", caps.join(", "), needed_by.join(", "));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::TapOffload;
    use crate::{compile, CompileInput, SourceFile};

    fn doc(text: &str, platform: &str) -> AbiDocument {
        let registry = PlatformRegistry::builtin();
        compile(&CompileInput {
            spec: &SourceFile::new("t.kdl", text),
            platform: registry.get(platform).unwrap(),
            registry: &registry,
            base_dir: None,
            host_cpu_features: None,
        })
        .unwrap()
    }

    fn host(offloads: &[TapOffload], cpu: &[&str], kvm: &[&str]) -> Platform {
        let mut h = PlatformRegistry::builtin().get("linux-5.10").unwrap().clone();
        h.name = "host".into();
        h.tap_offloads = offloads.iter().copied().collect();
        h.cpu_features = Some(cpu.iter().chain(crate::cpu::BASELINE).map(|s| s.to_string()).collect());
        h.kvm_capabilities = kvm.iter().map(|s| s.to_string()).collect();
        h
    }

    #[test]
    fn every_missing_capability_is_named_with_what_needs_it() {
        let d = doc("vm \"a\" { cpu-model \"x86-64-v4\"; net \"n\" }", "linux-6.9");
        let v3: Vec<&str> = crate::cpu::expand(crate::cpu::model("x86-64-v3").unwrap());
        let old = host(
            &[
                TapOffload::Csum,
                TapOffload::Tso4,
                TapOffload::Tso6,
                TapOffload::TsoEcn,
                TapOffload::Ufo,
            ],
            &v3,
            &["user-memory", "irqchip"],
        );
        let s = shortfalls(&d, &old);
        let names: Vec<(Group, &str)> = s.iter().map(|s| (s.group, s.capability.as_str())).collect();
        assert_eq!(
            names,
            [
                (Group::Cpu, "avx512bw"),
                (Group::Cpu, "avx512cd"),
                (Group::Cpu, "avx512dq"),
                (Group::Cpu, "avx512f"),
                (Group::Cpu, "avx512vl"),
                (Group::Tap, "uso4 (TUN_F_USO4)"),
                (Group::Tap, "uso6 (TUN_F_USO6)"),
                (Group::Kvm, "ext-cpuid"),
                (Group::Kvm, "irqfd"),
            ]
        );
        let uso = s.iter().find(|s| s.capability.starts_with("uso4")).unwrap();
        assert_eq!(
            uso.needed_by,
            ["devices.n.guest-uso4", "devices.n.guest-uso6", "devices.n.host-uso"]
        );
        let text = render(&s, "this host");
        assert!(text.contains("this host lacks 5 CPU capabilities: avx512bw, avx512cd, avx512dq, avx512f, avx512vl"));
        assert!(text.contains("needed by cpu.model x86-64-v4"));
    }

    #[test]
    fn a_capable_host_has_no_shortfall() {
        let d = doc("vm \"a\" { net \"n\" }", "linux-6.9");
        let v2: Vec<&str> = crate::cpu::expand(crate::cpu::model("x86-64-v2").unwrap());
        let h = host(&TapOffload::ALL, &v2, &["user-memory", "ext-cpuid", "irqchip", "irqfd"]);
        assert_eq!(shortfalls(&d, &h), []);
    }

    #[test]
    fn platform_missing_compares_capabilities() {
        let reg = PlatformRegistry::builtin();
        let old = reg.get("linux-5.15").unwrap();
        let new = reg.get("linux-6.9").unwrap();
        assert_eq!(platform_missing(old, new), []);
        assert_eq!(
            platform_missing(new, old),
            [(Group::Tap, "uso4".to_string()), (Group::Tap, "uso6".to_string())]
        );
        // A 5.15 host is named linux-5.15 (6.1 has the same capabilities, but a newer kernel).
        assert_eq!(choose_platform(&reg, &[old]).unwrap().name, "linux-5.15");
        assert_eq!(choose_platform(&reg, &[new]).unwrap().name, "linux-6.9");
        assert_eq!(choose_platform(&reg, &[old, new]).unwrap().name, "linux-5.15");
        // A 5.14 kernel with USO backported: the first platform with USO.
        let mut backport = old.clone();
        backport.kernel = crate::platform::KernelVersion { major: 5, minor: 14 };
        backport.tap_offloads.extend([TapOffload::Uso4, TapOffload::Uso6]);
        assert_eq!(choose_platform(&reg, &[&backport]).unwrap().name, "linux-6.2");
        assert_eq!(choose_platform(&reg, &[&backport, old]).unwrap().name, "linux-5.10");
    }
}
