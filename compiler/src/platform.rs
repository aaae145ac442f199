//! Platforms: what a host kernel can provide, as data.
//!
//! A platform decides the defaults of platform-dependent properties only (see the
//! schema's `platform_default`), and bounds what a spec may ask for. Built-in platforms
//! are the KDL files in `compiler/platforms/`; a distribution adds its own with
//! `--platform-path`, inheriting from another platform and adding backports.
//!
//! ```kdl
//! platform "linux-6.2" {
//!     inherits "linux-6.1"
//!     description "Linux 6.2: TAP gains UDP segmentation offload"
//!     kernel "6.2"
//!     tap-offloads "uso4" "uso6"   // added to what linux-6.1 has
//! }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use miette::SourceSpan;

use crate::diagnostic::{choices_help, Collector, Problem, Problems, SourceFile};
use crate::kdlread::{self, NodeReader, Spanned};

/// The platform-document format this compiler reads and writes.
pub const PLATFORM_FORMAT: u64 = 1;

/// A TAP offload (a `TUNSETOFFLOAD` flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TapOffload {
    Csum,
    Tso4,
    Tso6,
    TsoEcn,
    Ufo,
    Uso4,
    Uso6,
}

impl TapOffload {
    /// Every offload, in the order of their kernel flag bits.
    pub const ALL: [TapOffload; 7] = [
        TapOffload::Csum,
        TapOffload::Tso4,
        TapOffload::Tso6,
        TapOffload::TsoEcn,
        TapOffload::Ufo,
        TapOffload::Uso4,
        TapOffload::Uso6,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TapOffload::Csum => "csum",
            TapOffload::Tso4 => "tso4",
            TapOffload::Tso6 => "tso6",
            TapOffload::TsoEcn => "tso-ecn",
            TapOffload::Ufo => "ufo",
            TapOffload::Uso4 => "uso4",
            TapOffload::Uso6 => "uso6",
        }
    }

    /// The kernel's flag name, for messages.
    pub fn flag(self) -> &'static str {
        match self {
            TapOffload::Csum => "TUN_F_CSUM",
            TapOffload::Tso4 => "TUN_F_TSO4",
            TapOffload::Tso6 => "TUN_F_TSO6",
            TapOffload::TsoEcn => "TUN_F_TSO_ECN",
            TapOffload::Ufo => "TUN_F_UFO",
            TapOffload::Uso4 => "TUN_F_USO4",
            TapOffload::Uso6 => "TUN_F_USO6",
        }
    }

    /// The kernel's flag value, `TUN_F_*` in Linux `include/uapi/linux/if_tun.h`: the bit
    /// a runtime passes to `TUNSETOFFLOAD`.
    pub const fn tun_flag(self) -> u32 {
        match self {
            TapOffload::Csum => 0x01,
            TapOffload::Tso4 => 0x02,
            TapOffload::Tso6 => 0x04,
            TapOffload::TsoEcn => 0x08,
            TapOffload::Ufo => 0x10,
            TapOffload::Uso4 => 0x20,
            TapOffload::Uso6 => 0x40,
        }
    }

    pub fn from_name(name: &str) -> Option<TapOffload> {
        Self::ALL.into_iter().find(|o| o.name() == name)
    }
}

impl fmt::Display for TapOffload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A kernel version, `major.minor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KernelVersion {
    pub major: u32,
    pub minor: u32,
}

impl KernelVersion {
    /// Parses `6.2`, or the start of a release string such as `6.2.0-39-generic`.
    pub fn parse(text: &str) -> Option<KernelVersion> {
        let mut parts = text.split(['.', '-', '+']);
        let major = parts.next()?.parse().ok()?;
        let minor_text = parts.next()?;
        let digits: String = minor_text.chars().take_while(|c| c.is_ascii_digit()).collect();
        let minor = digits.parse().ok()?;
        Some(KernelVersion { major, minor })
    }
}

impl fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Where a platform was defined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlatformSource {
    Builtin,
    File(String),
}

/// A platform with its inheritance resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub name: String,
    pub description: String,
    pub kernel: KernelVersion,
    pub inherits: Option<String>,
    pub tap_offloads: BTreeSet<TapOffload>,
    pub kvm_capabilities: BTreeSet<String>,
    /// The CPU features a guest can be given, when the platform states them (a probed
    /// host does; a named kernel platform does not, as it says nothing about the CPU).
    pub cpu_features: Option<BTreeSet<String>>,
    pub source: PlatformSource,
}

impl Platform {
    pub fn has_offloads(&self, offloads: &[TapOffload]) -> bool {
        offloads.iter().all(|o| self.tap_offloads.contains(o))
    }
}

/// A platform as written in one file, before inheritance.
#[derive(Debug, Clone)]
struct PlatformDecl {
    name: Spanned<String>,
    description: Option<String>,
    kernel: Option<Spanned<KernelVersion>>,
    inherits: Option<Spanned<String>>,
    tap_offloads: Vec<TapOffload>,
    kvm_capabilities: Vec<String>,
    cpu_features: Option<Vec<String>>,
    source: SourceFile,
    origin: PlatformSource,
}

/// Built-in platform files, shipped inside the compiler.
const BUILTIN: &[(&str, &str)] = &[
    ("linux-5.10.kdl", include_str!("../platforms/linux-5.10.kdl")),
    ("linux-5.15.kdl", include_str!("../platforms/linux-5.15.kdl")),
    ("linux-6.1.kdl", include_str!("../platforms/linux-6.1.kdl")),
    ("linux-6.2.kdl", include_str!("../platforms/linux-6.2.kdl")),
    ("linux-6.6.kdl", include_str!("../platforms/linux-6.6.kdl")),
    ("linux-6.9.kdl", include_str!("../platforms/linux-6.9.kdl")),
    ("linux-6.12.kdl", include_str!("../platforms/linux-6.12.kdl")),
];

/// Every known platform, resolved.
#[derive(Debug, Clone)]
pub struct PlatformRegistry {
    platforms: BTreeMap<String, Platform>,
}

impl PlatformRegistry {
    /// The built-in platforms only.
    pub fn builtin() -> PlatformRegistry {
        Self::with_files(&[]).expect("built-in platform files are valid (tested)")
    }

    /// The built-in platforms plus third-party platform files (already read by the
    /// caller: the compiler does no I/O).
    pub fn with_files(files: &[SourceFile]) -> Result<PlatformRegistry, Problems> {
        Self::with_files_all(files).map_err(kdlread::at_most)
    }

    fn with_files_all(files: &[SourceFile]) -> Result<PlatformRegistry, Problems> {
        let mut problems = Collector::default();
        let mut decls: Vec<PlatformDecl> = Vec::new();
        let builtin_sources: Vec<SourceFile> = BUILTIN
            .iter()
            .map(|(name, text)| SourceFile::new(format!("<built-in>/{name}"), *text))
            .collect();
        for (source, origin) in builtin_sources
            .iter()
            .map(|s| (s, PlatformSource::Builtin))
            .chain(files.iter().map(|s| (s, PlatformSource::File(s.name().to_string()))))
        {
            match parse_file(source, origin) {
                Ok(mut d) => decls.append(&mut d),
                Err(p) => problems.extend(p),
            }
        }
        let mut by_name: BTreeMap<String, PlatformDecl> = BTreeMap::new();
        let mut repeated = 0;
        for decl in decls {
            if let Some(first) = by_name.get(&decl.name.value) {
                // Finding a line reads the text up to it: only for the problems shown.
                repeated += 1;
                if repeated > kdlread::MAX_PROBLEMS {
                    problems.push(Problem::new("vmc::platform::duplicate", "duplicate platform"));
                    continue;
                }
                let (l1, c1) = first.source.line_column(first.name.span.offset());
                let (l2, c2) = decl.source.line_column(decl.name.span.offset());
                problems.push(
                    Problem::new(
                        "vmc::platform::duplicate",
                        format!(
                            "duplicate platform `{}`: first in {} at line {l1}, column {c1}, again in {} at line {l2}, column {c2}",
                            decl.name.value,
                            first.source.name(),
                            decl.source.name(),
                        ),
                    )
                    .at(&decl.source, decl.name.span)
                    .label("second definition")
                    .help("give the platform a name of its own, and `inherits` the other"),
                );
                continue;
            }
            by_name.insert(decl.name.value.clone(), decl);
        }
        let platforms = resolve_all(&by_name, &mut problems);
        problems.finish(PlatformRegistry { platforms })
    }

    pub fn get(&self, name: &str) -> Option<&Platform> {
        self.platforms.get(name)
    }

    /// Looks a platform up, or says which ones exist.
    pub fn lookup(&self, name: &str) -> Result<&Platform, Problem> {
        self.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.names().collect();
            Problem::new("vmc::platform::unknown", format!("unknown platform `{name}`")).help(choices_help(
                name,
                &known,
                "known platforms",
            ))
        })
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.platforms.keys().map(String::as_str)
    }

    /// Every platform, oldest kernel first (then by name).
    pub fn by_age(&self) -> Vec<&Platform> {
        let mut all: Vec<&Platform> = self.platforms.values().collect();
        all.sort_by(|a, b| a.kernel.cmp(&b.kernel).then_with(|| a.name.cmp(&b.name)));
        all
    }

    /// A host description (a `vmc probe` file, KDL or JSON) resolved against this
    /// registry, which it may `inherits` from; it is not added to the registry, so many
    /// hosts may share a name.
    pub fn load_host(&self, source: &SourceFile) -> Result<Platform, Problems> {
        let decls = parse_file(source, PlatformSource::File(source.name().to_string())).map_err(kdlread::at_most)?;
        let [decl] = decls.as_slice() else {
            return Err(Problem::new(
                "vmc::platform::host-file",
                format!(
                    "{} describes {} platforms; a host file describes exactly one host",
                    source.name(),
                    decls.len()
                ),
            )
            .into());
        };
        let parent = match &decl.inherits {
            Some(p) => Some(self.get(&p.value).ok_or_else(|| {
                Problem::new(
                    "vmc::platform::unknown-parent",
                    format!("host inherits unknown platform `{}`", p.value),
                )
                .at(source, p.span)
                .label("unknown platform")
            })?),
            None => None,
        };
        Ok(merge(decl, parent)?)
    }

    /// The oldest built-in platform whose TAP has all of `offloads`, to say "since Linux X".
    pub fn first_builtin_with(&self, offloads: &[TapOffload]) -> Option<&Platform> {
        self.by_age()
            .into_iter()
            .find(|p| p.source == PlatformSource::Builtin && p.has_offloads(offloads))
    }
}

/// How many capability and CPU-feature names the resolved platforms may hold in all
/// (each platform holds what it inherits): about 150 MB.
pub const MAX_RESOLVED_NAMES: usize = 2_000_000;

/// How many unknown parents get a "did you mean" (each compares against every name).
const MAX_SUGGESTIONS: usize = 20;

/// Resolves every declaration's inheritance, each once, in time linear in their number:
/// a platform is merged onto its parent's resolved form, which is kept. No recursion,
/// so a chain of any length is resolved. A problem is reported once, where it is (an
/// unknown parent, a cycle, an impossible platform); the platforms that inherit from a
/// refused one are left out without a problem of their own.
fn resolve_all(decls: &BTreeMap<String, PlatformDecl>, problems: &mut Collector) -> BTreeMap<String, Platform> {
    enum State {
        /// On the inheritance path being followed now, at this index.
        OnPath(usize),
        Resolved(Platform),
        Refused,
    }
    let mut states: BTreeMap<&str, State> = BTreeMap::new();
    let mut suggestions = 0;
    let mut held = 0usize;
    for start in decls.keys() {
        // Follow `inherits` up to a platform already settled, a root, or a problem.
        let mut path: Vec<&str> = Vec::new();
        let mut name = start.as_str();
        // The settled platform the path hangs from: `Ok(None)` for a root.
        let parent: Result<Option<&str>, ()> = loop {
            match states.get(name) {
                Some(State::Resolved(_)) => break Ok(Some(name)),
                Some(State::Refused) => break Err(()),
                Some(State::OnPath(i)) => {
                    let i = *i;
                    let decl = &decls[name];
                    let mut names = path[i..].to_vec();
                    names.push(name);
                    problems.push(
                        Problem::new(
                            "vmc::platform::cycle",
                            format!("platforms inherit from each other in a cycle: {}", cycle_text(&names)),
                        )
                        .at(&decl.source, decl.name.span)
                        .label("part of the cycle"),
                    );
                    for n in path.drain(i..) {
                        states.insert(n, State::Refused);
                    }
                    break Err(());
                }
                None => {}
            }
            states.insert(name, State::OnPath(path.len()));
            path.push(name);
            let decl = &decls[name];
            let Some(p) = &decl.inherits else {
                break Ok(None);
            };
            match decls.get_key_value(&p.value) {
                Some((key, _)) => name = key.as_str(),
                None => {
                    let mut problem = Problem::new(
                        "vmc::platform::unknown-parent",
                        format!("platform `{name}` inherits unknown platform `{}`", p.value),
                    )
                    .at(&decl.source, p.span)
                    .label("unknown platform");
                    if suggestions < MAX_SUGGESTIONS {
                        suggestions += 1;
                        problem = problem.suggest(&p.value, decls.keys().map(String::as_str));
                    }
                    problems.push(problem);
                    path.pop();
                    states.insert(name, State::Refused);
                    break Err(());
                }
            }
        };
        // Merge back down the path, from the platform nearest the settled one.
        let mut parent: Option<Platform> = match parent {
            Ok(Some(p)) => match &states[p] {
                State::Resolved(p) => Some(p.clone()),
                _ => unreachable!("a settled parent is resolved"),
            },
            Ok(None) => None,
            Err(()) => {
                for n in path {
                    states.insert(n, State::Refused);
                }
                continue;
            }
        };
        let mut refused = false;
        for name in path.into_iter().rev() {
            if refused {
                states.insert(name, State::Refused);
                continue;
            }
            match merge(&decls[name], parent.as_ref()) {
                Ok(platform) => {
                    held += platform.kvm_capabilities.len() + platform.cpu_features.as_ref().map_or(0, BTreeSet::len);
                    if held > MAX_RESOLVED_NAMES {
                        let decl = &decls[name];
                        problems.push(
                            Problem::new(
                                "vmc::platform::too-many",
                                format!(
                                    "the platforms given hold more than {MAX_RESOLVED_NAMES} capability and CPU-feature names in all, counting what each inherits"
                                ),
                            )
                            .at(&decl.source, decl.name.span)
                            .label("the limit is passed here")
                            .help("describe real hosts: a few platforms, each inheriting a built-in one"),
                        );
                        return BTreeMap::new();
                    }
                    states.insert(name, State::Resolved(platform.clone()));
                    parent = Some(platform);
                }
                Err(problem) => {
                    problems.push(problem);
                    states.insert(name, State::Refused);
                    refused = true;
                }
            }
        }
    }
    states
        .into_iter()
        .filter_map(|(name, state)| match state {
            State::Resolved(p) => Some((name.to_string(), p)),
            _ => None,
        })
        .collect()
}

/// `a -> b -> a`, shortened in the middle when long.
fn cycle_text(names: &[&str]) -> String {
    if names.len() <= 12 {
        return names.join(" -> ");
    }
    format!(
        "{} -> ... ({} more) ... -> {}",
        names[..5].join(" -> "),
        names.len() - 10,
        names[names.len() - 5..].join(" -> ")
    )
}

/// A declaration applied on top of its (resolved) parent, then checked for sense.
fn merge(decl: &PlatformDecl, parent: Option<&Platform>) -> Result<Platform, Problem> {
    let name = &decl.name.value;
    let kernel = match (&decl.kernel, parent) {
        (Some(k), _) => k.value,
        (None, Some(p)) => p.kernel,
        (None, None) => {
            return Err(Problem::new(
                "vmc::platform::no-kernel",
                format!("platform `{name}` says neither its `kernel` version nor what it `inherits`"),
            )
            .at(&decl.source, decl.name.span)
            .help("add `kernel \"6.1\"` (the Linux version it is based on)"))
        }
    };
    if let (Some(k), Some(p)) = (&decl.kernel, parent) {
        if k.value < p.kernel {
            return Err(Problem::new(
                "vmc::platform::impossible",
                format!(
                    "platform `{name}` claims kernel {} but inherits `{}` (kernel {})",
                    k.value, p.name, p.kernel
                ),
            )
            .at(&decl.source, k.span)
            .label("older than its parent")
            .help("a platform inherits only from an older or equal kernel; add backports instead"));
        }
    }
    let mut tap_offloads = parent.map(|p| p.tap_offloads.clone()).unwrap_or_default();
    tap_offloads.extend(decl.tap_offloads.iter().copied());
    let mut kvm_capabilities = parent.map(|p| p.kvm_capabilities.clone()).unwrap_or_default();
    kvm_capabilities.extend(decl.kvm_capabilities.iter().cloned());
    let cpu_features = match (&decl.cpu_features, parent) {
        (Some(f), _) => Some(f.iter().cloned().collect()),
        (None, Some(p)) => p.cpu_features.clone(),
        (None, None) => None,
    };
    let platform = Platform {
        name: name.clone(),
        description: decl
            .description
            .clone()
            .or_else(|| parent.map(|p| p.description.clone()))
            .unwrap_or_default(),
        kernel,
        inherits: decl.inherits.as_ref().map(|p| p.value.clone()),
        tap_offloads,
        kvm_capabilities,
        cpu_features,
        source: decl.origin.clone(),
    };
    if let Some(why) = impossible(&platform) {
        return Err(Problem::new(
            "vmc::platform::impossible",
            format!("platform `{name}` describes an impossible host: {why}"),
        )
        .at(&decl.source, decl.name.span)
        .label("impossible")
        .help("a probe file is written by `vmc probe`; re-probe the host rather than editing it"));
    }
    Ok(platform)
}

/// Why no Linux host could be like this, if so (the kernel's `TUNSETOFFLOAD` rules).
fn impossible(p: &Platform) -> Option<String> {
    use TapOffload::*;
    let has = |o| p.tap_offloads.contains(&o);
    if !has(Csum) && !p.tap_offloads.is_empty() {
        return Some("TAP offloads without csum (the kernel accepts none without TUN_F_CSUM)".into());
    }
    if has(Uso4) != has(Uso6) {
        return Some("only one of uso4 and uso6 (the kernel accepts them only together)".into());
    }
    if has(TsoEcn) && !has(Tso4) && !has(Tso6) {
        return Some("tso-ecn without tso4 or tso6".into());
    }
    None
}

const PLATFORM_NODES: &[&str] = &[
    "inherits",
    "description",
    "kernel",
    "tap-offloads",
    "kvm-capabilities",
    "cpu-features",
];

fn parse_file(source: &SourceFile, origin: PlatformSource) -> Result<Vec<PlatformDecl>, Problems> {
    if source.name().ends_with(".json") {
        return parse_json(source, origin).map(|d| vec![d]);
    }
    let doc = kdlread::parse(source, "a platform document (`platform \"NAME\" { ... }`)")?;
    let has = |name: &str| doc.nodes().iter().any(|n| n.name().value() == name);
    if !has("platform") && (has("vm") || has("abi") || has("hash")) {
        let (what, help) = if has("vm") {
            (
                "a VM spec",
                "a spec is compiled with `vmc compile SPEC`; platform files are written by `vmc probe` (or by hand: `platform \"NAME\" { ... }`)",
            )
        } else {
            (
                "an ABI document",
                "`vmc place DOC PROBE...` takes the ABI document first, then the probe files (`vmc probe` output)",
            )
        };
        return Err(Problem::new(
            "vmc::platform::not-a-platform",
            format!("{} is {what}, not a platform or probe file", source.name()),
        )
        .help(help)
        .into());
    }
    let mut problems = Collector::default();
    // Nothing is read twice: a later node would otherwise quietly win over the first.
    let mut duplicates = kdlread::refuse_duplicates(source, doc.nodes(), &["platform"], "the platform file");
    for node in doc.nodes() {
        duplicates.extend(NodeReader::new(source, node).refuse_duplicate_children(&[]));
    }
    for p in duplicates {
        problems.push(p);
    }
    let mut decls = Vec::new();
    for node in doc.nodes() {
        let r = NodeReader::new(source, node);
        match r.name() {
            "format" => {
                if let Some(v) = problems.ok(r.unsigned()) {
                    if v.value != PLATFORM_FORMAT {
                        problems.push(
                            Problem::new(
                                "vmc::platform::format",
                                format!(
                                    "platform document format {} is not supported (this vmc reads format {PLATFORM_FORMAT})",
                                    v.value
                                ),
                            )
                            .at(source, v.span)
                            .label("unsupported format")
                            .help("produce the file with this vmc version (`vmc probe`), or upgrade vmc"),
                        );
                    }
                }
            }
            "platform" => {
                if let Some(d) = problems.ok(parse_platform(&r, origin.clone())) {
                    decls.push(d);
                }
            }
            other => problems.push(
                r.problem(
                    "vmc::platform::unknown-node",
                    format!("unknown node `{other}` in a platform document"),
                )
                .label("unknown")
                .help("a platform document holds `format 1` and `platform \"NAME\" { ... }` nodes"),
            ),
        }
    }
    if decls.is_empty() && problems.is_empty() {
        problems.push(Problem::new(
            "vmc::platform::empty",
            format!("{} defines no platform", source.name()),
        ));
    }
    problems.finish(decls)
}

/// Keys of a platform in JSON (`vmc probe --json`); the informational ones are read and
/// not kept.
const JSON_KEYS: &[&str] = &[
    "format",
    "name",
    "description",
    "inherits",
    "kernel",
    "tap-offloads",
    "kvm-capabilities",
    "cpu-features",
    "kernel-release",
    "kvm-api-version",
    "unmeasured",
];

/// Where each JSON string literal first appears in `text` (the offset of its opening
/// quote), by its raw contents.
fn string_offsets(text: &str) -> std::collections::HashMap<&str, usize> {
    let bytes = text.as_bytes();
    let mut offsets = std::collections::HashMap::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'"' {
            i += 1;
            continue;
        }
        let start = i;
        i += 1;
        while i < bytes.len() && bytes[i] != b'"' {
            // An escape takes the next byte with it (`\"` does not end the string).
            i += if bytes[i] == b'\\' { 2 } else { 1 };
        }
        if let Some(raw) = text.get(start + 1..i.min(bytes.len())) {
            offsets.entry(raw).or_insert(start);
        }
        i += 1;
    }
    offsets
}

/// A platform written as JSON, as `vmc probe --json` prints it.
fn parse_json(source: &SourceFile, origin: PlatformSource) -> Result<PlatformDecl, Problems> {
    use serde_json::Value as Json;
    let text = source.text();
    // JSON parsing keeps no spans: point at a value by where its string first appears
    // in the text, from one pass over it (a search per value would make reading a
    // fleet's probe files quadratic in their size).
    let strings = string_offsets(text);
    let span_of = |needle: &str| -> SourceSpan {
        strings
            .get(needle)
            .map_or(SourceSpan::from((0, 0)), |&i| SourceSpan::from((i, needle.len() + 2)))
    };
    let fail = |code: &'static str, message: String, at: SourceSpan| Problem::new(code, message).at(source, at);
    let value: Json = serde_json::from_str(text).map_err(|e| {
        let line_start: usize = text.lines().take(e.line().saturating_sub(1)).map(|l| l.len() + 1).sum();
        let offset = (line_start + e.column().saturating_sub(1)).min(text.len());
        fail(
            "vmc::platform::json",
            format!("{} is not valid JSON: {e}", source.name()),
            SourceSpan::from((offset, 0)),
        )
    })?;
    // serde_json keeps the last of two equal keys; a probe file says each thing once.
    let duplicates = crate::jsonread::duplicate_keys(source);
    if !duplicates.is_empty() {
        return Err(Problems(duplicates));
    }
    let obj = value.as_object().ok_or_else(|| {
        Problem::new(
            "vmc::platform::json",
            format!(
                "{} is JSON {}, not a probe file: a probe file is one JSON object",
                source.name(),
                json_kind(&value)
            ),
        )
        .help("write it with `vmc probe --json` on the host it describes")
    })?;
    if obj.contains_key("abi") && obj.contains_key("hash") {
        return Err(Problem::new(
            "vmc::platform::not-a-platform",
            format!("{} is `vmc show --json` output (an ABI document), not a probe file", source.name()),
        )
        .help("`vmc place DOC PROBE...` takes the ABI document (the .abi file) first, then probe files from `vmc probe --json`")
        .into());
    }
    if let Some(key) = obj.keys().find(|k| !JSON_KEYS.contains(&k.as_str())) {
        return Err(fail(
            "vmc::platform::json",
            format!("unknown key `{key}` in a platform file"),
            span_of(key),
        )
        .help(format!("known keys: {}", JSON_KEYS.join(", ")))
        .into());
    }
    match obj.get("format").and_then(Json::as_u64) {
        Some(PLATFORM_FORMAT) => {}
        Some(other) => {
            return Err(fail(
                "vmc::platform::format",
                format!("platform document format {other} is not supported (this vmc reads format {PLATFORM_FORMAT})"),
                span_of("format"),
            )
            .help("produce the file with this vmc version (`vmc probe --json`), or upgrade vmc")
            .into())
        }
        None => {
            return Err(match obj.get("format") {
                Some(other) => fail(
                    "vmc::platform::format",
                    format!(
                        "`format` is a whole number ({PLATFORM_FORMAT}), not {}",
                        json_kind(other)
                    ),
                    span_of("format"),
                )
                .help(format!("write \"format\": {PLATFORM_FORMAT}")),
                None => Problem::new(
                    "vmc::platform::format",
                    format!("{} has no `format` number: is it a probe file?", source.name()),
                )
                .help("a probe file is written by `vmc probe --json`, and starts with \"format\": 1"),
            }
            .into())
        }
    }
    let string = |key: &str| -> Result<Option<Spanned<String>>, Problem> {
        match obj.get(key) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::String(s)) => Ok(Some(Spanned::new(s.clone(), span_of(s)))),
            Some(other) => Err(fail(
                "vmc::platform::json",
                format!("`{key}` must be a string, not {}", json_kind(other)),
                span_of(key),
            )
            .help(match other {
                Json::Number(n) => format!("quote it: \"{key}\": \"{n}\""),
                _ => format!("write \"{key}\": \"...\""),
            })),
        }
    };
    let strings = |key: &str| -> Result<Option<Vec<Spanned<String>>>, Problem> {
        match obj.get(key) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::Array(items)) => items
                .iter()
                .map(|i| match i {
                    Json::String(s) => Ok(Spanned::new(s.clone(), span_of(s))),
                    other => Err(fail(
                        "vmc::platform::json",
                        format!("`{key}` must list strings, and lists {}", json_kind(other)),
                        span_of(key),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(other) => Err(fail(
                "vmc::platform::json",
                format!("`{key}` must be a list of strings, not {}", json_kind(other)),
                span_of(key),
            )
            .help(format!("write \"{key}\": [\"...\", \"...\"]"))),
        }
    };
    let name = string("name")?
        .ok_or_else(|| Problem::new("vmc::platform::json", format!("{} has no `name`", source.name())))?;
    check_platform_name(source, &name)?;
    let kernel = match string("kernel")? {
        Some(k) => Some(Spanned::new(
            KernelVersion::parse(&k.value).ok_or_else(|| {
                fail(
                    "vmc::platform::kernel",
                    format!("`{}` is not a kernel version", k.value),
                    k.span,
                )
            })?,
            k.span,
        )),
        None => None,
    };
    let tap_offloads = strings("tap-offloads")?
        .unwrap_or_default()
        .iter()
        .map(|o| offload(source, o))
        .collect::<Result<_, _>>()?;
    let cpu_features = match strings("cpu-features")? {
        Some(list) => Some(
            list.iter()
                .map(|f| cpu_feature(source, f))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        None => None,
    };
    Ok(PlatformDecl {
        name,
        description: string("description")?.map(|d| d.value),
        kernel,
        inherits: string("inherits")?,
        tap_offloads,
        kvm_capabilities: strings("kvm-capabilities")?
            .unwrap_or_default()
            .into_iter()
            .map(|s| s.value)
            .collect(),
        cpu_features,
        source: source.clone(),
        origin,
    })
}

/// A JSON value as messages name it.
fn json_kind(value: &serde_json::Value) -> String {
    use serde_json::Value as Json;
    match value {
        Json::Null => "null".to_string(),
        Json::Bool(b) => format!("the boolean {b}"),
        Json::Number(n) => format!("the number {n}"),
        Json::String(s) if s.chars().count() > 40 => "a string".to_string(),
        Json::String(s) => format!("the string {}", serde_json::Value::String(s.clone())),
        Json::Array(_) => "a list".to_string(),
        Json::Object(_) => "an object".to_string(),
    }
}

fn offload(source: &SourceFile, s: &Spanned<String>) -> Result<TapOffload, Problem> {
    TapOffload::from_name(&s.value).ok_or_else(|| {
        let known: Vec<&str> = TapOffload::ALL.iter().map(|o| o.name()).collect();
        Problem::new("vmc::platform::offload", format!("unknown TAP offload `{}`", s.value))
            .at(source, s.span)
            .label("unknown offload")
            .help(choices_help(&s.value, &known, "known offloads"))
    })
}

fn cpu_feature(source: &SourceFile, s: &Spanned<String>) -> Result<String, Problem> {
    match crate::cpu::feature(&s.value) {
        Some(_) => Ok(s.value.clone()),
        None => Err(Problem::new(
            "vmc::platform::cpu-feature",
            format!("unknown CPU feature `{}`", s.value),
        )
        .at(source, s.span)
        .label("unknown feature")
        .suggest(&s.value, crate::cpu::FEATURES.iter().map(|f| f.name))),
    }
}

fn parse_platform(r: &NodeReader<'_>, origin: PlatformSource) -> Result<PlatformDecl, Problem> {
    let head = match r.node.entries().iter().find(|e| e.name().is_none()).map(|e| e.value()) {
        Some(kdl::KdlValue::String(name)) => format!("platform {}", kdlread::quote(name)),
        _ => "platform \"NAME\"".to_string(),
    };
    r.settings_in_block(&head)?;
    if r.node.entries().is_empty() {
        return Err(r
            .problem("vmc::kdl::arity", "the `platform` has no name")
            .label("no name")
            .help("write `platform \"NAME\" { ... }`, such as `platform \"acme-9\" { inherits \"linux-6.1\" }`"));
    }
    let name = r.string()?;
    check_platform_name(r.source, &name)?;
    let mut decl = PlatformDecl {
        name,
        description: None,
        kernel: None,
        inherits: None,
        tap_offloads: Vec::new(),
        kvm_capabilities: Vec::new(),
        cpu_features: None,
        source: r.source.clone(),
        origin,
    };
    for child in r.children() {
        let c = NodeReader::new(r.source, child);
        c.no_children()?;
        match c.name() {
            "inherits" => decl.inherits = Some(c.string()?),
            "description" => decl.description = Some(c.string()?.value),
            "kernel" => {
                let text = c.string()?;
                let version = KernelVersion::parse(&text.value).ok_or_else(|| {
                    Problem::new(
                        "vmc::platform::kernel",
                        format!("`{}` is not a kernel version", text.value),
                    )
                    .at(r.source, text.span)
                    .label("expected MAJOR.MINOR")
                    .help("write it as `kernel \"6.2\"`")
                })?;
                decl.kernel = Some(Spanned::new(version, text.span));
            }
            "tap-offloads" => {
                for s in c.strings()? {
                    decl.tap_offloads.push(offload(r.source, &s)?);
                }
            }
            "kvm-capabilities" => {
                decl.kvm_capabilities.extend(c.strings()?.into_iter().map(|s| s.value));
            }
            "cpu-features" => {
                let features = c.strings()?;
                decl.cpu_features = Some(
                    features
                        .iter()
                        .map(|f| cpu_feature(r.source, f))
                        .collect::<Result<Vec<_>, _>>()?,
                );
            }
            other => {
                return Err(c
                    .problem(
                        "vmc::platform::unknown-node",
                        format!("unknown platform setting `{other}`"),
                    )
                    .label("unknown")
                    .suggest(other, PLATFORM_NODES.iter().copied()))
            }
        }
    }
    Ok(decl)
}

/// Whether `name` can name a platform: 1 to 64 ASCII letters, digits, `-`, `.` or `_`.
pub fn is_platform_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

fn check_platform_name(source: &SourceFile, name: &Spanned<String>) -> Result<(), Problem> {
    if is_platform_name(&name.value) {
        Ok(())
    } else {
        Err(Problem::new(
            "vmc::platform::name",
            format!("`{}` is not a valid platform name", name.value),
        )
        .at(source, name.span)
        .label("invalid name")
        .help("use 1 to 64 letters, digits, `-`, `.` or `_`, such as `linux-6.9` or `acme-9.4`"))
    }
}

/// Renders a platform as a platform document (the `vmc probe` output shape).
pub fn to_kdl(p: &Platform) -> String {
    use kdlread::quote;
    let mut out = format!("format {PLATFORM_FORMAT}\nplatform {} {{\n", quote(&p.name));
    if !p.description.is_empty() {
        out += &format!("    description {}\n", quote(&p.description));
    }
    out += &format!("    kernel {}\n", quote(&p.kernel.to_string()));
    let list = |items: Vec<String>| items.iter().map(|s| quote(s)).collect::<Vec<_>>().join(" ");
    if !p.tap_offloads.is_empty() {
        out += &format!(
            "    tap-offloads {}\n",
            list(p.tap_offloads.iter().map(|o| o.name().to_string()).collect())
        );
    }
    if !p.kvm_capabilities.is_empty() {
        out += &format!(
            "    kvm-capabilities {}\n",
            list(p.kvm_capabilities.iter().cloned().collect())
        );
    }
    if let Some(features) = &p.cpu_features {
        out += &format!("    cpu-features {}\n", list(features.iter().cloned().collect()));
    }
    out += "}\n";
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_resolve_and_uso_arrives_in_6_2() {
        let reg = PlatformRegistry::builtin();
        for name in [
            "linux-5.10",
            "linux-5.15",
            "linux-6.1",
            "linux-6.2",
            "linux-6.6",
            "linux-6.9",
            "linux-6.12",
        ] {
            assert!(reg.get(name).is_some(), "{name} missing");
        }
        let uso = [TapOffload::Uso4, TapOffload::Uso6];
        assert!(!reg.get("linux-6.1").unwrap().has_offloads(&uso));
        assert!(reg.get("linux-6.2").unwrap().has_offloads(&uso));
        assert!(reg.get("linux-6.12").unwrap().has_offloads(&uso));
        assert_eq!(reg.first_builtin_with(&uso).unwrap().name, "linux-6.2");
        assert_eq!(reg.by_age().last().unwrap().name, "linux-6.12");
    }

    #[test]
    fn third_party_platforms_inherit_and_add_backports() {
        let file = SourceFile::new(
            "acme.kdl",
            "platform \"acme-9\" {\n inherits \"linux-5.10\"\n kernel \"5.14\"\n tap-offloads \"uso4\" \"uso6\"\n}\n",
        );
        let reg = PlatformRegistry::with_files(&[file]).unwrap();
        let p = reg.get("acme-9").unwrap();
        assert_eq!(p.kernel, KernelVersion { major: 5, minor: 14 });
        assert!(p.has_offloads(&[TapOffload::Csum, TapOffload::Uso4, TapOffload::Uso6]));
        assert_eq!(p.source, PlatformSource::File("acme.kdl".into()));
    }

    #[test]
    fn bad_platform_files_are_problems() {
        let cases = [
            (
                "platform \"a\" { inherits \"linux-9.99\" }",
                "vmc::platform::unknown-parent",
            ),
            (
                "platform \"a\" { inherits \"b\" }\nplatform \"b\" { inherits \"a\" }",
                "vmc::platform::cycle",
            ),
            ("platform \"linux-6.2\" { kernel \"6.2\" }", "vmc::platform::duplicate"),
            ("platform \"a\" { kernel \"6.x\" }", "vmc::platform::kernel"),
            (
                "platform \"a\" { kernel \"6.1\"; tap-offloads \"usoo\" }",
                "vmc::platform::offload",
            ),
            ("platform \"a\" { kernal \"6.1\" }", "vmc::platform::unknown-node"),
            ("platform \"a\" { }", "vmc::platform::no-kernel"),
            ("format 2\nplatform \"a\" { kernel \"6.1\" }", "vmc::platform::format"),
            (
                "platform \"a\" { inherits \"linux-6.9\"; kernel \"5.4\" }",
                "vmc::platform::impossible",
            ),
            ("platform \"a b\" { kernel \"6.1\" }", "vmc::platform::name"),
        ];
        for (text, code) in cases {
            let err = PlatformRegistry::with_files(&[SourceFile::new("t.kdl", text)]).unwrap_err();
            assert!(err.has(code), "{text}: expected {code}, got {err:?}");
        }
    }

    fn chain(n: usize, root: &str) -> String {
        let mut text = format!("platform \"p0\" {{ inherits \"{root}\" }}\n");
        for i in 1..n {
            text += &format!(
                "platform \"p{i}\" {{ inherits \"p{}\"; kvm-capabilities \"c{}\" }}\n",
                i - 1,
                i % 3
            );
        }
        text
    }

    #[test]
    fn a_long_inheritance_chain_resolves_each_platform_once() {
        let reg = PlatformRegistry::with_files(&[SourceFile::new("chain.kdl", chain(3000, "linux-6.2"))]).unwrap();
        let last = reg.get("p2999").unwrap();
        assert_eq!(last.kernel, KernelVersion { major: 6, minor: 2 });
        assert!(last.has_offloads(&[TapOffload::Uso4]));
        assert!(["c0", "c1", "c2", "irqchip"]
            .iter()
            .all(|c| last.kvm_capabilities.contains(*c)));
    }

    #[test]
    fn a_cycle_or_an_unknown_parent_is_reported_once_not_by_every_heir() {
        let text =
            "platform \"a\" { inherits \"b\" }\nplatform \"b\" { inherits \"c\" }\nplatform \"c\" { inherits \"a\" }\n\
                    platform \"d\" { inherits \"a\" }\nplatform \"e\" { inherits \"d\" }\n\
                    platform \"f\" { inherits \"nowhere\" }\nplatform \"g\" { inherits \"f\" }\n\
                    platform \"h\" { inherits \"linux-6.9\"; kernel \"5.4\" }\nplatform \"i\" { inherits \"h\" }\n\
                    platform \"ok\" { inherits \"linux-6.9\" }";
        let err = refused(&[("t.kdl", text)]);
        let messages: Vec<&str> = err.iter().map(|p| p.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                "platforms inherit from each other in a cycle: a -> b -> c -> a",
                "platform `f` inherits unknown platform `nowhere`",
                "platform `h` claims kernel 5.4 but inherits `linux-6.9` (kernel 6.9)",
            ],
            "{err:?}"
        );
        let long: String = (0..50)
            .map(|i| format!("platform \"q{i}\" {{ inherits \"q{}\" }}\n", (i + 1) % 50))
            .collect();
        let err = refused(&[("t.kdl", &long)]);
        assert_eq!(err.0.len(), 1);
        assert_eq!(
            err.0[0].message,
            "platforms inherit from each other in a cycle: q0 -> q1 -> q2 -> q3 -> q4 -> ... (41 more) ... -> q46 -> q47 -> q48 -> q49 -> q0"
        );
    }

    #[test]
    fn what_inheritance_would_hold_in_all_is_bounded() {
        // Each heir holds the base's CPU features and capabilities again.
        let mut base = String::from("platform \"base\" { kernel \"6.1\"; cpu-features");
        for f in crate::cpu::FEATURES {
            base += &format!(" \"{}\"", f.name);
        }
        base += "; kvm-capabilities";
        for i in 0..1000 {
            base += &format!(" \"cap{i}\"");
        }
        base += " }\n";
        let heirs = MAX_RESOLVED_NAMES / (1000 + crate::cpu::FEATURES.len()) + 10;
        let err = refused(&[("t.kdl", &(base.clone() + &chain(heirs, "base")))]);
        assert!(err.has("vmc::platform::too-many"), "{err:?}");
        assert!(PlatformRegistry::with_files(&[SourceFile::new("t.kdl", base + &chain(heirs - 20, "base"))]).is_ok());
    }

    #[test]
    fn a_platform_file_that_is_not_one_or_is_miswritten_says_what_to_write() {
        let reg = PlatformRegistry::builtin();
        let host = |name: &str, text: &str| reg.load_host(&SourceFile::new(name, text)).unwrap_err().0.remove(0);
        for (name, text, message, help) in [
            (
                "h.kdl",
                "vm \"a\" { }",
                "h.kdl is a VM spec, not a platform or probe file",
                "vmc compile",
            ),
            (
                "h.kdl",
                "format 1\nhash \"x\"\nabi { }",
                "h.kdl is an ABI document, not a platform",
                "vmc place DOC PROBE",
            ),
            (
                "h.kdl",
                "platform \"h\" kernel=\"6.2\"",
                "`kernel=\"6.2\"` is a property, but the settings of `platform` are nodes in its `{ ... }` block",
                "write `platform \"h\" { kernel \"6.2\" }`",
            ),
            (
                "h.kdl",
                "platform { kernel \"6.2\" }",
                "the `platform` has no name",
                "platform \"NAME\"",
            ),
            (
                "h.kdl",
                "platform \"h\" { kernel 6.10 }",
                "`kernel` expects a string, found a floating-point number `6.10`",
                "quote it: `kernel \"6.10\"`",
            ),
            (
                "h.kdl",
                "format \"1\"\nplatform \"h\" { kernel \"6.2\" }",
                "`format` expects a number",
                "`format 1`",
            ),
            (
                "h.kdl",
                "{\"format\": 1, \"name\": \"h\", \"kernel\": \"6.2\"}",
                "h.kdl is JSON, not KDL",
                "read it, as JSON when its name ends in .json",
            ),
            (
                "h.json",
                "{\"format\": \"1\", \"name\": \"h\"}",
                "`format` is a whole number (1), not the string \"1\"",
                "\"format\": 1",
            ),
            (
                "h.json",
                "{\"format\": 1, \"name\": \"h\", \"kernel\": 6.2}",
                "`kernel` must be a string, not the number 6.2",
                "quote it: \"kernel\": \"6.2\"",
            ),
            (
                "h.json",
                "[{\"name\": \"h\"}]",
                "h.json is JSON a list, not a probe file",
                "vmc probe --json",
            ),
            (
                "h.json",
                "{\"format\": 1, \"hash\": \"x\", \"abi\": {}}",
                "h.json is `vmc show --json` output (an ABI document), not a probe file",
                "vmc place DOC PROBE",
            ),
            (
                "h.json",
                "{\"format\": 1, \"name\": \"h\", \"tap-offloads\": \"csum\"}",
                "`tap-offloads` must be a list of strings, not the string \"csum\"",
                "[\"...\", \"...\"]",
            ),
        ] {
            let p = host(name, text);
            assert!(p.message.contains(message), "{text}: {p:?}");
            assert!(p.help.as_deref().unwrap_or_default().contains(help), "{text}: {p:?}");
        }
    }

    #[test]
    fn a_rendered_platform_reads_back_identically() {
        let reg = PlatformRegistry::builtin();
        let mut p = reg.get("linux-6.9").unwrap().clone();
        p.name = "probed".into();
        p.inherits = None;
        p.cpu_features = Some(["sse2".to_string(), "avx".to_string()].into_iter().collect());
        let again = PlatformRegistry::with_files(&[SourceFile::new("p.kdl", to_kdl(&p))]).unwrap();
        let mut back = again.get("probed").unwrap().clone();
        back.source = PlatformSource::Builtin;
        p.source = PlatformSource::Builtin;
        assert_eq!(back, p);
    }

    #[test]
    fn tap_offloads_are_listed_in_the_order_of_their_distinct_kernel_flags() {
        let flags: Vec<u32> = TapOffload::ALL.iter().map(|o| o.tun_flag()).collect();
        assert!(flags.iter().all(|f| f.is_power_of_two()));
        assert!(flags.windows(2).all(|w| w[0] < w[1]));
        let mut sorted = TapOffload::ALL;
        sorted.sort();
        assert_eq!(sorted, TapOffload::ALL, "Ord follows the flag order");
    }

    #[test]
    fn kernel_versions_parse_from_release_strings() {
        assert_eq!(KernelVersion::parse("6.2"), Some(KernelVersion { major: 6, minor: 2 }));
        assert_eq!(
            KernelVersion::parse("6.18.44-fc-v669"),
            Some(KernelVersion { major: 6, minor: 18 })
        );
        assert_eq!(KernelVersion::parse("6"), None);
    }

    fn refused(files: &[(&str, &str)]) -> Problems {
        let sources: Vec<SourceFile> = files.iter().map(|(n, t)| SourceFile::new(*n, *t)).collect();
        PlatformRegistry::with_files(&sources).unwrap_err()
    }

    #[test]
    fn a_platform_file_says_each_thing_once() {
        let cases = [
            (
                "platform \"a\" {\n kernel \"6.1\"\n kernel \"6.9\"\n}",
                "duplicate `kernel` in `platform \"a\"`: first at line 2, column 2, again at line 3, column 2",
            ),
            (
                "platform \"a\" {\n kernel \"6.1\"\n tap-offloads \"csum\"\n tap-offloads \"tso4\"\n}",
                "duplicate `tap-offloads` in `platform \"a\"`: first at line 3, column 2, again at line 4, column 2",
            ),
            (
                "platform \"a\" { inherits \"linux-6.1\"; inherits \"linux-6.9\" }",
                "duplicate `inherits` in `platform \"a\"`",
            ),
            (
                "platform \"a\" { kernel \"6.1\"; description \"x\"; description \"y\" }",
                "duplicate `description`",
            ),
            (
                "platform \"a\" { kernel \"6.1\"; kvm-capabilities \"irqchip\"; kvm-capabilities \"pit2\" }",
                "duplicate `kvm-capabilities`",
            ),
            (
                "platform \"a\" { kernel \"6.1\"; cpu-features \"sse2\"; cpu-features }",
                "duplicate `cpu-features`",
            ),
            (
                "format 1\nformat 1\nplatform \"a\" { kernel \"6.1\" }",
                "duplicate `format` in the platform file: first at line 1, column 1, again at line 2, column 1",
            ),
            (
                "platform \"a\" { kernel \"6.1\" }\nplatform \"a\" { kernel \"6.9\" }",
                "duplicate `platform \"a\"` in the platform file: first at line 1, column 1, again at line 2, column 1",
            ),
            (
                "platform \"a\" k=1 k=2 { kernel \"6.1\" }",
                "duplicate property `k` in `platform \"a\"`",
            ),
            (
                "platform \"a\" { kernel \"6.1\" v=1 v=2 }",
                "duplicate property `v` in `kernel \"6.1\"`",
            ),
        ];
        for (text, message) in cases {
            let err = refused(&[("t.kdl", text)]);
            let found: Vec<&Problem> = err.iter().filter(|p| p.code == kdlread::DUPLICATE).collect();
            assert_eq!(found.len(), 1, "{text}: {err:?}");
            assert!(found[0].message.starts_with(message), "{text}: {}", found[0].message);
            // Both places are labelled.
            assert_eq!(found[0].related.len(), 1, "{text}");
            // A repeated platform is reported once, not again as a clash between files.
            assert!(!err.has("vmc::platform::duplicate"), "{text}: {err:?}");
        }
    }

    #[test]
    fn a_platform_defined_in_two_files_names_both_places() {
        let err = refused(&[
            ("a.kdl", "platform \"acme\" { kernel \"6.1\" }"),
            ("b.kdl", "// acme again\nplatform \"acme\" { kernel \"6.9\" }"),
        ]);
        assert_eq!(err.0.len(), 1, "{err:?}");
        assert_eq!(
            err.0[0].message,
            "duplicate platform `acme`: first in a.kdl at line 1, column 10, again in b.kdl at line 2, column 10"
        );
        let err = refused(&[("b.kdl", "platform \"linux-6.2\" { kernel \"6.2\" }")]);
        let message = &err.0[0].message;
        assert!(
            message.starts_with("duplicate platform `linux-6.2`: first in <built-in>/linux-6.2.kdl at line ")
                && message.ends_with(", again in b.kdl at line 1, column 10"),
            "{message}"
        );
    }

    #[test]
    fn a_probe_file_with_a_repeat_is_refused_kdl_or_json() {
        let reg = PlatformRegistry::builtin();
        let host = |name: &str, text: &str| reg.load_host(&SourceFile::new(name, text));
        let good_json =
            r#"{"format": 1, "name": "h", "kernel": "6.9", "tap-offloads": ["csum"], "cpu-features": ["sse2"]}"#;
        assert!(host("h.json", good_json).is_ok());
        for (name, text, message) in [
            (
                "h.kdl",
                "format 1\nplatform \"h\" {\n    kernel \"6.9\"\n    kernel \"5.15\"\n}\n",
                "duplicate `kernel` in `platform \"h\"`: first at line 3, column 5, again at line 4, column 5",
            ),
            (
                "h.kdl",
                "format 1\nplatform \"h\" { kernel \"6.9\"; cpu-features \"sse2\" }\nplatform \"h\" { kernel \"5.15\" }\n",
                "duplicate `platform \"h\"` in the platform file",
            ),
            (
                "h.json",
                "{\"format\": 1, \"name\": \"h\",\n \"kernel\": \"6.9\",\n \"kernel\": \"5.15\"}",
                "duplicate key `kernel` in the top-level object: first at line 2, column 2, again at line 3, column 2",
            ),
            (
                "h.json",
                r#"{"format": 1, "name": "h", "kernel": "6.9", "tap-offloads": ["csum"], "tap-offloads": []}"#,
                "duplicate key `tap-offloads` in the top-level object",
            ),
            (
                "h.json",
                r#"{"format": 1, "format": 1, "name": "h", "kernel": "6.9"}"#,
                "duplicate key `format`",
            ),
            (
                "h.json",
                r#"{"format": 1, "name": "h", "kernel": "6.9", "unmeasured": [{"what": "a", "what": "b"}]}"#,
                "duplicate key `what` in the object `unmeasured[0]`",
            ),
        ] {
            let err = host(name, text).unwrap_err();
            assert!(err.has(kdlread::DUPLICATE), "{text}: {err:?}");
            assert!(err.0[0].message.starts_with(message), "{text}: {}", err.0[0].message);
        }
    }
}
