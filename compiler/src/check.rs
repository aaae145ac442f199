//! Can a host run a document? Can a host stand in for a platform?
//!
//! A host is described as a [`Platform`] (what `vmc probe` measures is one), so the same
//! pure logic serves `vmc run`'s refusal, `vmc check`, `vmc platforms --host` and
//! placement over probe files written elsewhere.

use std::fmt;

use miette::SourceSpan;

use crate::diagnostic::{choices_help, Collector, Problem, Problems, SourceFile};
use crate::document::{AbiDocument, Place};
use crate::kdlread::{self, NodeReader};
use crate::platform::{Platform, PlatformRegistry};

/// The kind of host capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Group {
    Cpu,
    Tap,
    Kvm,
}

impl Group {
    /// Its name in JSON output: `cpu`, `tap`, `kvm`.
    pub fn key(self) -> &'static str {
        match self {
            Group::Cpu => "cpu",
            Group::Tap => "tap",
            Group::Kvm => "kvm",
        }
    }
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

/// A part of a host as a probe measures it; each is a field of a probe file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Part {
    Kernel,
    TapOffloads,
    KvmCapabilities,
    CpuFeatures,
}

impl Part {
    pub const ALL: [Part; 4] = [
        Part::Kernel,
        Part::TapOffloads,
        Part::KvmCapabilities,
        Part::CpuFeatures,
    ];

    /// Its field in a probe file: `kernel`, `tap-offloads`, `kvm-capabilities`, `cpu-features`.
    pub fn name(self) -> &'static str {
        match self {
            Part::Kernel => "kernel",
            Part::TapOffloads => "tap-offloads",
            Part::KvmCapabilities => "kvm-capabilities",
            Part::CpuFeatures => "cpu-features",
        }
    }

    pub fn from_name(name: &str) -> Option<Part> {
        Part::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The part that says whether a host has the capabilities of `group`.
    pub fn of(group: Group) -> Part {
        match group {
            Group::Cpu => Part::CpuFeatures,
            Group::Tap => Part::TapOffloads,
            Group::Kvm => Part::KvmCapabilities,
        }
    }
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A part of a host that could not be measured, and why (such as `cannot open /dev/kvm:
/// EACCES (Permission denied): ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmeasured {
    pub part: Part,
    pub why: String,
}

/// A host as a probe describes it: what it was measured to have, as a platform, and the
/// parts that could not be measured. The list of such a part in `platform` is empty for
/// want of a measurement, not because the host lacks what it would list: a needed
/// capability there is unknown, not missing.
#[derive(Debug, Clone)]
pub struct Host {
    pub platform: Platform,
    pub unmeasured: Vec<Unmeasured>,
    /// The host's RAM in bytes (`MemTotal`), when measured on this host; probe files
    /// do not state it.
    pub memory: Option<u64>,
}

impl Host {
    /// A host measured in full.
    pub fn measured(platform: Platform) -> Host {
        Host {
            platform,
            unmeasured: Vec::new(),
            memory: None,
        }
    }

    /// Why `part` was not measured, if it was not.
    pub fn unmeasured(&self, part: Part) -> Option<&Unmeasured> {
        self.unmeasured.iter().find(|u| u.part == part)
    }
}

/// One capability the host lacks, and the ABI values that need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortfall {
    pub group: Group,
    /// Its name in platform and probe files (`uso4`, `irqfd`, `avx2`).
    pub name: String,
    pub needed_by: Vec<String>,
}

impl Shortfall {
    /// The capability for people: the name, and for a TAP offload its kernel flag
    /// (`uso4 (TUN_F_USO4)`).
    pub fn display(&self) -> String {
        match (self.group, kernel_name(self.group, &self.name)) {
            (Group::Tap, Some(flag)) => format!("{} ({flag})", self.name),
            _ => self.name.clone(),
        }
    }

    /// The shortfall as JSON, as `vmc place --json` and `vmc platforms --host --json`
    /// list it (see [`missing_json`]).
    pub fn to_json(&self) -> serde_json::Value {
        missing_json(self.group, &self.name, &self.needed_by)
    }
}

/// The kernel's name for a capability, where it has one: a TAP offload's `TUN_F_*` flag
/// (`TUN_F_USO4`), a KVM capability's `KVM_CAP_*` constant (`irqfd` is `KVM_CAP_IRQFD`:
/// the names in platform files are those constants, lowercase, `_` written `-`). A CPU
/// feature has none (`None`).
pub fn kernel_name(group: Group, name: &str) -> Option<String> {
    match group {
        Group::Cpu => None,
        Group::Tap => crate::platform::TapOffload::from_name(name).map(|o| o.flag().to_string()),
        Group::Kvm => Some(format!("KVM_CAP_{}", name.to_uppercase().replace('-', "_"))),
    }
}

/// One missing capability as JSON: `{"group": "tap", "name": "uso4", "kernel-name":
/// "TUN_F_USO4", "needed-by": ["devices.net0.host-uso"]}`; `kernel-name` is `null` where
/// the kernel has no name for it (a CPU feature).
pub fn missing_json(group: Group, name: &str, needed_by: &[String]) -> serde_json::Value {
    serde_json::json!({
        "group": group.key(),
        "name": name,
        "kernel-name": kernel_name(group, name),
        "needed-by": needed_by,
    })
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
                    name: f.clone(),
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
                    .map(move |(p, _)| Place::Device(&d.id).path(p.name))
            })
            .collect();
        out.push(Shortfall {
            group: Group::Tap,
            name: o.name().to_string(),
            needed_by,
        });
    }
    for c in &doc.requires.kvm_capabilities {
        if !host.kvm_capabilities.contains(c) {
            out.push(Shortfall {
                group: Group::Kvm,
                name: c.clone(),
                needed_by: vec!["every VM (the runtime uses it)".to_string()],
            });
        }
    }
    out.sort_by_key(|s| s.group);
    out
}

/// What a host lacks of what is asked of it, as far as it was measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fit<T> {
    /// What the host lacks, measured.
    pub missing: Vec<T>,
    /// Each part of the host that was not measured and that is needed, with what is
    /// needed there.
    pub unknown: Vec<(Unmeasured, Vec<T>)>,
}

/// Whether a host can run a document: its [`shortfalls`], sorted by measurement.
pub type Assessment = Fit<Shortfall>;

/// What a host lacks of what a platform promises: [`platform_missing`], sorted by
/// measurement.
pub type PlatformFit = Fit<(Group, String)>;

/// The answer of a [`Fit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    CanRun,
    /// The host lacks something needed (whatever was not measured).
    CannotRun,
    /// Nothing measured is missing, but something needed was not measured.
    CannotTell,
}

impl<T> Fit<T> {
    /// `lacking`, each in the part of the host it belongs to (`group_of`): missing where
    /// that part was measured, unknown where it was not.
    fn sort(host: &Host, lacking: impl IntoIterator<Item = T>, group_of: impl Fn(&T) -> Group) -> Fit<T> {
        let mut fit = Fit {
            missing: Vec::new(),
            unknown: Vec::new(),
        };
        for item in lacking {
            match host.unmeasured(Part::of(group_of(&item))) {
                None => fit.missing.push(item),
                Some(u) => match fit.unknown.iter_mut().find(|(k, _)| k.part == u.part) {
                    Some((_, list)) => list.push(item),
                    None => fit.unknown.push((u.clone(), vec![item])),
                },
            }
        }
        fit
    }

    pub fn verdict(&self) -> Verdict {
        if !self.missing.is_empty() {
            Verdict::CannotRun
        } else if !self.unknown.is_empty() {
            Verdict::CannotTell
        } else {
            Verdict::CanRun
        }
    }
}

/// Whether `host` can run `doc`: the [`shortfalls`] of what was measured are missing;
/// those in a part that was not measured are unknown.
pub fn assess(doc: &AbiDocument, host: &Host) -> Assessment {
    Fit::sort(host, shortfalls(doc, &host.platform), |s| s.group)
}

/// [`platform_missing`], for a host that may not have been measured in full.
pub fn platform_fit(platform: &Platform, host: &Host) -> PlatformFit {
    Fit::sort(host, platform_missing(platform, &host.platform), |(group, _)| *group)
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
            items.iter().map(|s| s.display()).collect::<Vec<_>>().join(", ")
        );
        // One line per distinct set of values in need, listing what they lack.
        let mut needs: Vec<(&Vec<String>, Vec<String>)> = Vec::new();
        for s in items {
            match needs.iter_mut().find(|(n, _)| *n == &s.needed_by) {
                Some((_, caps)) => caps.push(s.display()),
                None => needs.push((&s.needed_by, vec![s.display()])),
            }
        }
        for (needed_by, caps) in needs {
            out += &format!("    {} needed by {}\n", caps.join(", "), needed_by.join(", "));
        }
    }
    out
}

/// An assessment for people: what is missing ([`render`]), then each part not measured,
/// why, and what is needed there.
pub fn render_assessment(assessment: &Assessment, host: &str) -> String {
    let mut out = render(&assessment.missing, host);
    for (u, needed) in &assessment.unknown {
        let caps: Vec<String> = needed.iter().map(Shortfall::display).collect();
        out += &format!("{host}: {} not measured: {}\n", u.part, u.why);
        out += &format!(
            "    so cannot tell whether it has the {} needed: {}\n",
            count(caps.len(), &needed[0].group.to_string()),
            caps.join(", ")
        );
    }
    out
}

/// "1 CPU capability", "28 CPU capabilities".
fn count(n: usize, group: &str) -> String {
    format!("{n} {group} capabilit{}", if n == 1 { "y" } else { "ies" })
}

/// A warning when the guest's memory is more than the host's RAM (`None` when it fits,
/// or when the host's RAM is not known). Such a VM still runs, its memory overcommitted
/// (as with QEMU), until the guest touches more than the host can give.
pub fn memory_warning(doc: &AbiDocument, host: &Host) -> Option<String> {
    let ram = host.memory?;
    (doc.abi.memory > ram).then(|| {
        format!(
            "the guest's memory, {}, is more than this host's RAM, {}: the VM runs only while the guest uses no more than the host can give",
            size_text(doc.abi.memory),
            size_text(ram)
        )
    })
}

/// A size for people: `1 TiB (1099511627776 bytes)`, `23.5 GiB (25276502016 bytes)`.
pub fn size_text(bytes: u64) -> String {
    const UNITS: [(&str, u32); 4] = [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)];
    let (unit, shift) = UNITS
        .into_iter()
        .find(|&(_, shift)| bytes >= 1 << shift)
        .unwrap_or(("bytes", 0));
    if shift == 0 {
        return format!("{bytes} bytes");
    }
    let whole = bytes >> shift;
    let tenths = ((bytes & ((1 << shift) - 1)) * 10) >> shift;
    if bytes.is_multiple_of(1 << shift) {
        format!("{whole} {unit} ({bytes} bytes)")
    } else {
        format!("{whole}.{tenths} {unit} ({bytes} bytes)")
    }
}

/// The node of a platform in a KDL probe file that lists the parts not measured:
/// `unmeasured { cpu-features "why"; ... }`.
const UNMEASURED: &str = "unmeasured";

/// A probe file (KDL or JSON, as `vmc probe` writes it) as a host. The parts it records
/// as not measured are read here, the rest by [`PlatformRegistry::load_host`]: in KDL, an
/// `unmeasured { PART "why" ... }` block in the platform; in JSON, `"unmeasured": [{"what":
/// PART, "why": "..."}]` (a plain sentence, as earlier versions wrote, counts as every
/// part not measured). PART is `kernel`, `tap-offloads`, `kvm-capabilities` or
/// `cpu-features`.
pub fn load_host(registry: &PlatformRegistry, source: &SourceFile) -> Result<Host, Problems> {
    if source.name().ends_with(".json") {
        let platform = registry.load_host(source)?;
        let unmeasured = json_unmeasured(source)?;
        return Ok(Host {
            platform,
            unmeasured,
            memory: None,
        });
    }
    let (platform_text, unmeasured, _) = kdl_unmeasured(source)?;
    let platform = registry.load_host(&platform_text)?;
    Ok(Host {
        platform,
        unmeasured,
        memory: None,
    })
}

/// A platform file that may be a probe file: the source to read as a platform. A probe
/// of a host that was not measured in full is refused, as its lists are short of what
/// the host has; an empty `unmeasured` block is dropped.
pub fn platform_file(source: &SourceFile) -> Result<SourceFile, Problems> {
    let (text, unmeasured, block) = kdl_unmeasured(source)?;
    let Some(block) = block.filter(|_| !unmeasured.is_empty()) else {
        return Ok(text);
    };
    let parts: Vec<&str> = unmeasured.iter().map(|u| u.part.name()).collect();
    Err(Problem::new(
        "vmc::platform::unmeasured",
        format!(
            "{} is a probe of a host that was not measured in full ({}), so it cannot serve as a platform: its lists are short of what the host has",
            source.name(),
            parts.join(", ")
        ),
    )
    .at(source, block)
    .label("not measured")
    .help("probe the host again where vmc can open /dev/kvm and /dev/net/tun and create a TAP (as root)")
    .into())
}

/// The parts a KDL probe file lists as not measured, the file without that block
/// (blanked, so that every other span stays where it was), and where the block was.
fn kdl_unmeasured(source: &SourceFile) -> Result<(SourceFile, Vec<Unmeasured>, Option<SourceSpan>), Problems> {
    // A file that does not parse is left for the platform reader to refuse.
    let Ok(doc) = kdlread::parse(source, "a probe file") else {
        return Ok((source.clone(), Vec::new(), None));
    };
    let mut problems = Collector::default();
    let mut unmeasured = Vec::new();
    let mut blocks = Vec::new();
    for platform in doc.nodes().iter().filter(|n| n.name().value() == "platform") {
        let blocks_before = blocks.len();
        for node in NodeReader::new(source, platform).children() {
            if node.name().value() != UNMEASURED {
                continue;
            }
            let r = NodeReader::new(source, node);
            if blocks.len() > blocks_before {
                problems.push(
                    r.problem(kdlread::DUPLICATE, "`unmeasured` is written twice in one platform")
                        .label("again")
                        .help("list every part not measured in one `unmeasured { ... }` block"),
                );
            }
            blocks.push(node.span());
            if let Some(entry) = node.entries().first() {
                problems.push(
                    Problem::new("vmc::platform::unmeasured", "`unmeasured` takes no values")
                        .at(source, entry.span())
                        .label("unexpected value")
                        .help("write one node per part not measured: `unmeasured { cpu-features \"why\" }`"),
                );
            }
            for p in r.refuse_duplicate_children(&[]) {
                problems.push(p);
            }
            for child in r.children() {
                let c = NodeReader::new(source, child);
                let Some(part) = Part::from_name(c.name()) else {
                    let known: Vec<&str> = Part::ALL.iter().map(|p| p.name()).collect();
                    problems.push(
                        c.problem(
                            "vmc::platform::unmeasured",
                            format!("unknown part `{}` in `unmeasured`", c.name()),
                        )
                        .label("unknown part")
                        .help(choices_help(c.name(), &known, "the parts a probe measures")),
                    );
                    continue;
                };
                let why = c.no_children().and_then(|_| c.string());
                if let Some(why) = problems.ok(why) {
                    unmeasured.push(Unmeasured { part, why: why.value });
                }
            }
        }
    }
    problems.finish(())?;
    let Some(&first) = blocks.first() else {
        return Ok((source.clone(), unmeasured, None));
    };
    let mut bytes = source.text().as_bytes().to_vec();
    for span in blocks {
        let mut end = (span.offset() + span.len()).min(bytes.len());
        // The block's `;`, if it has one, goes with it.
        let spaces = bytes[end..].iter().take_while(|b| matches!(b, b' ' | b'\t')).count();
        if bytes.get(end + spaces) == Some(&b';') {
            end += spaces + 1;
        }
        for b in &mut bytes[span.offset()..end] {
            if *b != b'\n' {
                *b = b' ';
            }
        }
    }
    let text = String::from_utf8(bytes).expect("whole characters were blanked with ASCII spaces");
    Ok((SourceFile::new(source.name(), text), unmeasured, Some(first)))
}

/// The parts a JSON probe file lists as not measured.
fn json_unmeasured(source: &SourceFile) -> Result<Vec<Unmeasured>, Problem> {
    use serde_json::Value as Json;
    // A probe of a host measured in full has no such key: no second parse for it.
    let Some(at) = source.text().find("\"unmeasured\"") else {
        return Ok(Vec::new());
    };
    let at = SourceSpan::from((at, "\"unmeasured\"".len()));
    let Ok(value) = serde_json::from_str::<Json>(source.text()) else {
        return Ok(Vec::new());
    };
    let fail = |message: String| {
        Problem::new("vmc::platform::unmeasured", message)
            .at(source, at)
            .help(r#"write `"unmeasured": [{"what": "cpu-features", "why": "..."}]`, as `vmc probe --json` does"#)
    };
    let items = match value.get(UNMEASURED) {
        None | Some(Json::Null) => return Ok(Vec::new()),
        Some(Json::Array(items)) => items,
        Some(_) => return Err(fail("`unmeasured` must be a list".into())),
    };
    let mut out = Vec::new();
    for item in items {
        match item {
            Json::String(why) => out.extend(Part::ALL.into_iter().map(|part| Unmeasured { part, why: why.clone() })),
            Json::Object(o) => {
                if let Some(key) = o.keys().find(|k| !matches!(k.as_str(), "what" | "why")) {
                    return Err(fail(format!("unknown key `{key}` in an entry of `unmeasured`")));
                }
                let what = o
                    .get("what")
                    .and_then(Json::as_str)
                    .ok_or_else(|| fail("an entry of `unmeasured` names the part not measured in `what`".into()))?;
                let part = Part::from_name(what).ok_or_else(|| {
                    let known: Vec<&str> = Part::ALL.iter().map(|p| p.name()).collect();
                    fail(format!(
                        "unknown part `{what}` in `unmeasured`; the parts a probe measures: {}",
                        known.join(", ")
                    ))
                })?;
                let why = o.get("why").and_then(Json::as_str).ok_or_else(|| {
                    fail(format!(
                        "the entry of `unmeasured` for `{what}` says why in `why`, a string"
                    ))
                })?;
                out.push(Unmeasured {
                    part,
                    why: why.to_string(),
                });
            }
            _ => {
                return Err(fail(
                    "`unmeasured` must list objects `{\"what\": PART, \"why\": \"...\"}`".into(),
                ))
            }
        }
    }
    Ok(out)
}

/// A host as a probe file in KDL: the platform document ([`crate::platform::to_kdl`]),
/// with an `unmeasured` block in the platform when some part was not measured.
pub fn probe_kdl(host: &Host) -> String {
    let text = crate::platform::to_kdl(&host.platform);
    if host.unmeasured.is_empty() {
        return text;
    }
    let mut block = String::from("    unmeasured {\n");
    for u in &host.unmeasured {
        block += &format!("        {} {}\n", u.part, kdlread::quote(&u.why));
    }
    block += "    }\n";
    let end = text.rfind('}').unwrap_or(text.len());
    format!("{}{block}{}", &text[..end], &text[end..])
}

/// A host's parts not measured as JSON: `[{"what": PART, "why": "..."}]`.
pub fn unmeasured_json(unmeasured: &[Unmeasured]) -> serde_json::Value {
    unmeasured
        .iter()
        .map(|u| serde_json::json!({ "what": u.part.name(), "why": u.why }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::TapOffload;
    use crate::SourceFile;

    fn doc(text: &str, platform: &str) -> AbiDocument {
        crate::expand::compile_for_test(text, platform)
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
        let shown: Vec<(Group, String)> = s.iter().map(|s| (s.group, s.display())).collect();
        let names: Vec<(Group, &str)> = shown.iter().map(|(g, n)| (*g, n.as_str())).collect();
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
        let uso = s.iter().find(|s| s.name == "uso4").unwrap();
        assert_eq!(
            uso.needed_by,
            ["devices.n.guest-uso4", "devices.n.guest-uso6", "devices.n.host-uso"]
        );
        let text = render(&s, "this host");
        assert!(text.contains("this host lacks 5 CPU capabilities: avx512bw, avx512cd, avx512dq, avx512f, avx512vl"));
        assert!(text.contains("needed by cpu.model x86-64-v4"));
    }

    #[test]
    fn a_shortfall_as_json_is_data_and_its_display_text_is_only_for_people() {
        let uso4 = Shortfall {
            group: Group::Tap,
            name: "uso4".into(),
            needed_by: vec!["devices.net0.host-uso".into()],
        };
        assert_eq!(
            uso4.to_json(),
            serde_json::json!({"group": "tap", "name": "uso4", "kernel-name": "TUN_F_USO4", "needed-by": ["devices.net0.host-uso"]})
        );
        assert_eq!(uso4.display(), "uso4 (TUN_F_USO4)");
        assert_eq!(
            kernel_name(Group::Kvm, "set-identity-map-addr").as_deref(),
            Some("KVM_CAP_SET_IDENTITY_MAP_ADDR")
        );
        assert_eq!(kernel_name(Group::Cpu, "avx2"), None);
        assert_eq!(
            missing_json(Group::Cpu, "avx2", &[])["kernel-name"],
            serde_json::Value::Null
        );
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

    fn v1_host() -> Host {
        let v1: Vec<&str> = crate::cpu::expand(crate::cpu::model("x86-64-v1").unwrap());
        Host::measured(host(
            &TapOffload::ALL,
            &v1,
            &["user-memory", "ext-cpuid", "irqchip", "irqfd"],
        ))
    }

    #[test]
    fn what_was_not_measured_is_unknown_not_missing() {
        let d = doc("vm \"a\" { cpu-model \"x86-64-v1\"; net \"n\" }", "linux-6.9");
        let mut h = v1_host();
        assert_eq!(assess(&d, &h).verdict(), Verdict::CanRun);
        // No /dev/kvm: no KVM capability and no CPU feature measured.
        h.platform.kvm_capabilities.clear();
        h.platform.cpu_features = Some(Default::default());
        let why = "cannot open /dev/kvm: EACCES (Permission denied)";
        h.unmeasured = vec![
            Unmeasured {
                part: Part::KvmCapabilities,
                why: why.into(),
            },
            Unmeasured {
                part: Part::CpuFeatures,
                why: why.into(),
            },
        ];
        let a = assess(&d, &h);
        assert_eq!(a.verdict(), Verdict::CannotTell);
        assert_eq!(a.missing, []);
        let parts: Vec<Part> = a.unknown.iter().map(|(u, _)| u.part).collect();
        assert_eq!(parts, [Part::CpuFeatures, Part::KvmCapabilities]);
        let text = render_assessment(&a, "this host");
        assert!(
            text.contains("this host: cpu-features not measured: cannot open /dev/kvm"),
            "{text}"
        );
        assert!(
            text.contains(
                "so cannot tell whether it has the 4 KVM capabilities needed: ext-cpuid, irqchip, irqfd, user-memory"
            ),
            "{text}"
        );
        assert!(!text.contains("lacks"), "{text}");
        // What was measured and is missing still makes it a "no".
        h.platform
            .tap_offloads
            .retain(|o| !matches!(o, TapOffload::Uso4 | TapOffload::Uso6));
        let a = assess(&d, &h);
        assert_eq!(a.verdict(), Verdict::CannotRun);
        assert_eq!(a.missing.len(), 2);
        let text = render_assessment(&a, "this host");
        assert!(
            text.contains("this host lacks 2 TAP capabilities") && text.contains("not measured"),
            "{text}"
        );
        // A platform's fit says the same.
        let reg = PlatformRegistry::builtin();
        let fit = platform_fit(reg.get("linux-5.15").unwrap(), &h);
        assert_eq!(fit.verdict(), Verdict::CannotTell);
        assert_eq!(fit.unknown[0].0.part, Part::KvmCapabilities);
        assert_eq!(
            platform_fit(reg.get("linux-6.9").unwrap(), &h).verdict(),
            Verdict::CannotRun
        );
    }

    #[test]
    fn probe_files_keep_what_was_not_measured_in_kdl_and_json() {
        let reg = PlatformRegistry::builtin();
        let mut h = v1_host();
        h.platform.kvm_capabilities.clear();
        h.unmeasured = vec![Unmeasured {
            part: Part::KvmCapabilities,
            why: "cannot open /dev/kvm: \"denied\"".into(),
        }];
        let text = probe_kdl(&h);
        assert!(
            text.contains(
                "    unmeasured {\n        kvm-capabilities \"cannot open /dev/kvm: \\\"denied\\\"\"\n    }\n}\n"
            ),
            "{text}"
        );
        let back = load_host(&reg, &SourceFile::new("h.kdl", text.clone())).unwrap();
        assert_eq!(back.unmeasured, h.unmeasured);
        assert_eq!(back.platform.tap_offloads, h.platform.tap_offloads);
        // Not a platform for --platform-path; without entries it is.
        assert!(platform_file(&SourceFile::new("h.kdl", text.clone())).is_err());
        let empty = text.replace(
            "        kvm-capabilities \"cannot open /dev/kvm: \\\"denied\\\"\"\n",
            "",
        );
        assert!(PlatformRegistry::with_files(&[platform_file(&SourceFile::new("h.kdl", empty)).unwrap()]).is_ok());
        // Spans after the block stay right: an error there points at its text.
        let bad = text.replace("    }\n}", "    }\n    kernel \"x\"\n}");
        let p = load_host(&reg, &SourceFile::new("h.kdl", bad.clone())).unwrap_err();
        let span = p.0[0].span.unwrap();
        assert_eq!(
            &bad[span.offset()..span.offset() + span.len()],
            "kernel \"x\"",
            "{:?}",
            p.0[0]
        );

        // On one line, between semicolons.
        let one_line =
            "format 1\nplatform \"h\" { kernel \"6.9\"; unmeasured { kernel \"x\"; }; cpu-features \"fpu\"; }\n";
        let back = load_host(&reg, &SourceFile::new("h.kdl", one_line)).unwrap();
        assert_eq!(
            back.unmeasured,
            [Unmeasured {
                part: Part::Kernel,
                why: "x".into()
            }]
        );

        let json = |unmeasured: &str| {
            SourceFile::new(
                "h.json",
                format!(
                    r#"{{"format": 1, "name": "h", "kernel": "6.9", "cpu-features": [], "unmeasured": {unmeasured}}}"#
                ),
            )
        };
        let back = load_host(&reg, &json(r#"[{"what": "tap-offloads", "why": "no TAP"}]"#)).unwrap();
        assert_eq!(
            back.unmeasured,
            [Unmeasured {
                part: Part::TapOffloads,
                why: "no TAP".into()
            }]
        );
        assert_eq!(load_host(&reg, &json("[]")).unwrap().unmeasured, []);
        // A sentence, as earlier versions wrote: every part.
        assert_eq!(load_host(&reg, &json(r#"["KVM: no"]"#)).unwrap().unmeasured.len(), 4);
        for (bad, says) in [
            (r#"{"what": "x"}"#, "must be a list"),
            (r#"[{"what": "memory", "why": "x"}]"#, "unknown part `memory`"),
            (r#"[{"what": "kernel"}]"#, "says why"),
            (r#"[{"what": "kernel", "why": "x", "how": 1}]"#, "unknown key `how`"),
            ("[1]", "must list objects"),
        ] {
            let p = load_host(&reg, &json(bad)).unwrap_err();
            assert!(p.0[0].message.contains(says), "{bad}: {}", p.0[0].message);
        }
        for (bad, says) in [
            ("unmeasured { memory \"x\" }", "unknown part `memory`"),
            ("unmeasured 1 { kernel \"x\" }", "takes no values"),
            ("unmeasured { kernel \"x\"; kernel \"y\" }", "kernel"),
            ("unmeasured { kernel 1 }", "string"),
            ("unmeasured { kernel \"x\" }; unmeasured { }", "written twice"),
        ] {
            let text = format!("format 1\nplatform \"h\" {{\n    kernel \"6.9\"\n    {bad}\n}}\n");
            let p = load_host(&reg, &SourceFile::new("h.kdl", text)).unwrap_err();
            assert!(p.0.iter().any(|p| p.message.contains(says)), "{bad}: {:?}", p.0);
        }
    }

    #[test]
    fn guest_memory_beyond_the_host_ram_is_warned_about() {
        let big = doc("vm \"a\" { memory \"1TiB\" }", "linux-6.9");
        let small = doc("vm \"a\" { memory \"512MiB\" }", "linux-6.9");
        let mut h = v1_host();
        assert_eq!(memory_warning(&big, &h), None);
        h.memory = Some(24_684_084 * 1024);
        let w = memory_warning(&big, &h).unwrap();
        assert!(
            w.contains("1 TiB (1099511627776 bytes)") && w.contains("23.5 GiB (25276502016 bytes)"),
            "{w}"
        );
        assert_eq!(memory_warning(&small, &h), None);
        assert_eq!(size_text(512 << 20), "512 MiB (536870912 bytes)");
        assert_eq!(size_text(1000), "1000 bytes");
    }
}
