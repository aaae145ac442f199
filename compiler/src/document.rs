//! The ABI document (`*.abi`): the compiler's output, the runtime's input.
//!
//! * `abi`: every guest-visible value, explicit. Hashed.
//! * `requires`: the host capabilities those values need; derived from `abi`, and
//!   re-derived and compared on every read.
//! * `host`: host-local bindings (VM name, TAP names, boot paths, kernel command line).
//! * `origins`: where each `abi` value came from, for `explain` and `diff`.
//! * `platform`: the platform compiled for (recorded, not hashed).
//! * `hash`: see [`crate::canonical`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{json, Map, Value as Json};

use crate::canonical;
use crate::cpu;
use crate::diagnostic::{Collector, Problem, Problems, SourceFile};
use crate::kdlread::{self, quote, NodeReader};
use crate::machine;
use crate::platform::TapOffload;
use crate::schema::{self, format_mac, Property, Value};

/// The ABI document format. Part of what is hashed.
pub const FORMAT: u64 = 1;

/// The KVM capabilities every ABI needs from the runtime's host.
pub const BASE_KVM_CAPABILITIES: &[&str] = &["ext-cpuid", "user-memory"];

/// The KVM capabilities an ABI with devices needs as well.
pub const DEVICE_KVM_CAPABILITIES: &[&str] = &["irqchip", "irqfd"];

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Written in the spec.
    Spec { file: String, line: usize, column: usize },
    /// The machine type's default.
    MachineType(String),
    /// The platform's default (platform-dependent properties).
    Platform(String),
    /// Computed from other values; the text says from what.
    Derived(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Spec { file, line, column } => write!(f, "spec {file}:{line}:{column}"),
            Origin::MachineType(m) => write!(f, "machine type {m}"),
            Origin::Platform(p) => write!(f, "platform {p}"),
            Origin::Derived(from) => write!(f, "derived from {from}"),
        }
    }
}

/// The guest-visible part: what the hash covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Abi {
    pub machine: String,
    pub cpu: CpuAbi,
    /// Guest memory in bytes.
    pub memory: u64,
    pub devices: Vec<NetDevice>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuAbi {
    pub model: String,
    pub count: u64,
    /// False for `host`: the features are one host's, so the VM can move only to hosts
    /// with at least those, and management tools should not plan migrations for it.
    pub migratable: bool,
    /// Sorted feature names (see `cpu::FEATURES`).
    pub features: Vec<String>,
}

/// A virtio-net device on the virtio-mmio transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetDevice {
    pub id: String,
    pub mmio_base: u64,
    pub mmio_size: u64,
    pub irq: u32,
    /// One value per schema row, in schema order.
    pub properties: Vec<(&'static Property, Value)>,
    /// Every virtio feature bit the device offers, sorted.
    pub device_features: Vec<u32>,
}

impl NetDevice {
    pub const KIND: &'static str = "virtio-net";
    pub const TRANSPORT: &'static str = "virtio-mmio";

    pub fn get(&self, name: &str) -> Option<Value> {
        self.properties.iter().find(|(p, _)| p.name == name).map(|(_, v)| *v)
    }

    pub fn mac(&self) -> [u8; 6] {
        match self.get("mac") {
            Some(Value::Mac(m)) => m,
            _ => unreachable!("every NetDevice holds a mac (checked when built or read)"),
        }
    }

    /// The feature bits as the 64-bit word a virtio transport offers.
    pub fn feature_word(&self) -> u64 {
        self.device_features.iter().fold(0u64, |w, b| w | (1u64 << b))
    }
}

/// Host capabilities the `abi` needs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Requirements {
    pub tap_offloads: BTreeSet<TapOffload>,
    pub kvm_capabilities: BTreeSet<String>,
    pub cpu_features: BTreeSet<String>,
}

impl Requirements {
    /// What a host must provide to run `abi`.
    pub fn of(abi: &Abi) -> Requirements {
        let mut r = Requirements {
            kvm_capabilities: BASE_KVM_CAPABILITIES.iter().map(|s| s.to_string()).collect(),
            cpu_features: abi.cpu.features.iter().cloned().collect(),
            ..Requirements::default()
        };
        if !abi.devices.is_empty() {
            // Device interrupts go through the in-kernel irqchip, signalled by irqfd.
            r.kvm_capabilities
                .extend(DEVICE_KVM_CAPABILITIES.iter().map(|s| s.to_string()));
        }
        for device in &abi.devices {
            for (p, v) in &device.properties {
                if v.is_on() {
                    r.tap_offloads.extend(p.tap_offloads.iter().copied());
                }
            }
        }
        r
    }
}

/// Host-local bindings: not guest ABI, not hashed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostBindings {
    pub name: String,
    pub kernel: Option<String>,
    pub initrd: Option<String>,
    pub cmdline: Option<String>,
    /// TAP interface name per device id, in device order.
    pub taps: Vec<(String, String)>,
}

impl HostBindings {
    pub fn tap(&self, device: &str) -> Option<&str> {
        self.taps.iter().find(|(d, _)| d == device).map(|(_, t)| t.as_str())
    }
}

/// A complete, hash-checked ABI document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbiDocument {
    pub hash: String,
    pub platform: String,
    pub abi: Abi,
    pub requires: Requirements,
    pub host: HostBindings,
    /// Origin of each value, keyed by its path (see [`Abi::values`]).
    pub origins: BTreeMap<String, Origin>,
}

impl Abi {
    /// The `abi` object of `vmc show --json`; exactly what the hash covers.
    pub fn to_json(&self) -> Json {
        json!({
            "machine": self.machine,
            "cpu": {
                "model": self.cpu.model,
                "count": self.cpu.count,
                "migratable": self.cpu.migratable,
                "features": self.cpu.features,
            },
            "memory": self.memory,
            "devices": self.devices.iter().map(NetDevice::to_json).collect::<Vec<_>>(),
        })
    }

    /// Every guest-visible value by path (`machine`, `cpu.count`,
    /// `devices.net0.host-uso`, …), in document order.
    pub fn values(&self) -> Vec<(String, Json)> {
        let mut out = vec![
            ("machine".to_string(), json!(self.machine)),
            ("cpu.model".to_string(), json!(self.cpu.model)),
            ("cpu.count".to_string(), json!(self.cpu.count)),
            ("cpu.migratable".to_string(), json!(self.cpu.migratable)),
            ("cpu.features".to_string(), json!(self.cpu.features)),
            ("memory".to_string(), json!(self.memory)),
        ];
        for d in &self.devices {
            out.extend(
                d.fields()
                    .into_iter()
                    .map(|(k, v)| (format!("devices.{}.{k}", d.id), v)),
            );
        }
        out
    }
}

/// Device fields that are not schema properties, in document order.
const DEVICE_FIELDS: &[&str] = &["kind", "transport", "mmio-base", "mmio-size", "irq"];

impl NetDevice {
    /// Every value of the device but its id, in document order.
    pub fn fields(&self) -> Vec<(&'static str, Json)> {
        let mut out = vec![
            ("kind", json!(Self::KIND)),
            ("transport", json!(Self::TRANSPORT)),
            ("mmio-base", json!(self.mmio_base)),
            ("mmio-size", json!(self.mmio_size)),
            ("irq", json!(self.irq)),
        ];
        out.extend(self.properties.iter().map(|(p, v)| (p.name, value_json(v))));
        out.push(("device-features", json!(self.device_features)));
        out
    }

    pub fn to_json(&self) -> Json {
        let mut m = Map::new();
        m.insert("id".into(), json!(self.id));
        m.extend(self.fields().into_iter().map(|(k, v)| (k.to_string(), v)));
        Json::Object(m)
    }
}

pub fn value_json(v: &Value) -> Json {
    match v {
        Value::Bool(b) => json!(b),
        Value::Integer(n) => json!(n),
        Value::Mac(m) => json!(format_mac(m)),
    }
}

/// A value as documents and messages show it: KDL literal syntax.
pub fn show_json(v: &Json) -> String {
    match v {
        Json::String(s) => quote(s),
        Json::Bool(b) => format!("#{b}"),
        Json::Array(items) => items.iter().map(show_json).collect::<Vec<_>>().join(" "),
        other => other.to_string(),
    }
}

impl AbiDocument {
    /// Builds a document from its parts, computing `requires` and the hash.
    pub fn new(platform: String, abi: Abi, host: HostBindings, origins: BTreeMap<String, Origin>) -> AbiDocument {
        AbiDocument {
            hash: canonical::hash(&abi),
            requires: Requirements::of(&abi),
            platform,
            abi,
            host,
            origins,
        }
    }

    /// `vmc show --json`.
    pub fn to_json(&self) -> Json {
        let origins: Map<String, Json> = self.origins.iter().map(|(k, o)| (k.clone(), origin_json(o))).collect();
        json!({
            "format": FORMAT,
            "hash": self.hash,
            "platform": self.platform,
            "abi": self.abi.to_json(),
            "requires": {
                "tap-offloads": self.requires.tap_offloads.iter().map(|o| o.name()).collect::<Vec<_>>(),
                "kvm-capabilities": self.requires.kvm_capabilities,
                "cpu-features": self.requires.cpu_features,
            },
            "host": {
                "name": self.host.name,
                "kernel": self.host.kernel,
                "initrd": self.host.initrd,
                "cmdline": self.host.cmdline,
                "taps": self.host.taps.iter().map(|(d, t)| json!({"device": d, "tap": t})).collect::<Vec<_>>(),
            },
            "origins": origins,
        })
    }

    /// The document as KDL text. Deterministic: the same document gives the same bytes.
    pub fn to_kdl(&self) -> String {
        let mut w = String::new();
        w += "// vmc ABI document, written by `vmc compile`. Every read recomputes the hash\n";
        w += "// over `abi` and refuses the document if it differs: edit the spec, not this file.\n";
        w += &format!("format {FORMAT}\n");
        w += &format!("hash {}\n", quote(&self.hash));
        w += &format!("platform {}\n", quote(&self.platform));
        w += "abi {\n";
        w += &format!("    machine {}\n", quote(&self.abi.machine));
        w += "    cpu {\n";
        w += &format!("        model {}\n", quote(&self.abi.cpu.model));
        w += &format!("        count {}\n", self.abi.cpu.count);
        w += &format!("        migratable #{}\n", self.abi.cpu.migratable);
        w += &format!("        features {}\n", list(&self.abi.cpu.features));
        w += "    }\n";
        w += &format!("    memory {}\n", self.abi.memory);
        for d in &self.abi.devices {
            w += &format!("    device {} {{\n", quote(&d.id));
            w += &format!("        kind {}\n", quote(NetDevice::KIND));
            w += &format!("        transport {}\n", quote(NetDevice::TRANSPORT));
            w += &format!("        mmio-base {:#x}\n", d.mmio_base);
            w += &format!("        mmio-size {:#x}\n", d.mmio_size);
            w += &format!("        irq {}\n", d.irq);
            for (p, v) in &d.properties {
                w += &format!("        {} {v}\n", p.name);
            }
            let bits: Vec<String> = d.device_features.iter().map(u32::to_string).collect();
            w += &format!("        device-features {}\n", bits.join(" "));
            w += "    }\n";
        }
        w += "}\n";
        w += "requires {\n";
        let offloads: Vec<String> = self
            .requires
            .tap_offloads
            .iter()
            .map(|o| o.name().to_string())
            .collect();
        if !offloads.is_empty() {
            w += &format!("    tap-offloads {}\n", list(&offloads));
        }
        let caps: Vec<String> = self.requires.kvm_capabilities.iter().cloned().collect();
        w += &format!("    kvm-capabilities {}\n", list(&caps));
        let features: Vec<String> = self.requires.cpu_features.iter().cloned().collect();
        w += &format!("    cpu-features {}\n", list(&features));
        w += "}\n";
        w += "host {\n";
        w += &format!("    name {}\n", quote(&self.host.name));
        for (key, value) in [
            ("kernel", &self.host.kernel),
            ("initrd", &self.host.initrd),
            ("cmdline", &self.host.cmdline),
        ] {
            if let Some(v) = value {
                w += &format!("    {key} {}\n", quote(v));
            }
        }
        for (device, tap) in &self.host.taps {
            w += &format!("    tap {} {}\n", quote(device), quote(tap));
        }
        w += "}\n";
        w += "origins {\n";
        for (path, _) in self.abi.values() {
            if let Some(o) = self.origins.get(&path) {
                w += &format!("    origin {} {}\n", quote(&path), origin_kdl(o));
            }
        }
        w += "}\n";
        w
    }

    /// Reads a document, checking its structure, every value, `requires`, and the hash.
    pub fn from_kdl(source: &SourceFile) -> Result<AbiDocument, Problems> {
        let doc = kdlread::parse(source, "an ABI document (written by `vmc compile`)")?;
        let mut reader = DocReader {
            source,
            problems: Collector::default(),
        };
        let parsed = reader.document(&doc);
        let problems = reader.problems;
        let (stored_hash, stored_requires, doc) = match parsed {
            Some(p) if problems.is_empty() => p,
            _ => return Err(problems.into_problems()),
        };
        let recomputed = canonical::hash(&doc.abi);
        if stored_hash.value != recomputed {
            return Err(Problem::new(
                "vmc::abi::hash-mismatch",
                format!(
                    "the stored hash does not match the document's `abi`: stored {}, recomputed {recomputed}",
                    stored_hash.value
                ),
            )
            .at(source, stored_hash.span)
            .label("stored hash")
            .help("the document was edited or damaged after `vmc compile`; compile the spec again")
            .into());
        }
        if let Some(stored) = stored_requires {
            if stored.value != doc.requires {
                return Err(Problem::new(
                    "vmc::abi::requires-mismatch",
                    "`requires` does not match what `abi` needs",
                )
                .at(source, stored.span)
                .label("edited")
                .help("`requires` is derived from `abi`; compile the spec again")
                .into());
            }
        }
        Ok(doc)
    }
}

fn list(items: &[String]) -> String {
    items.iter().map(|s| quote(s)).collect::<Vec<_>>().join(" ")
}

fn origin_kdl(o: &Origin) -> String {
    match o {
        Origin::Spec { file, line, column } => {
            format!("spec={} line={line} column={column}", quote(file))
        }
        Origin::MachineType(m) => format!("machine-type={}", quote(m)),
        Origin::Platform(p) => format!("platform={}", quote(p)),
        Origin::Derived(from) => format!("derived={}", quote(from)),
    }
}

fn origin_json(o: &Origin) -> Json {
    match o {
        Origin::Spec { file, line, column } => {
            json!({"kind": "spec", "file": file, "line": line, "column": column})
        }
        Origin::MachineType(m) => json!({"kind": "machine-type", "name": m}),
        Origin::Platform(p) => json!({"kind": "platform", "name": p}),
        Origin::Derived(from) => json!({"kind": "derived", "from": from}),
    }
}

/// Reads the KDL form back, collecting problems.
struct DocReader<'a> {
    source: &'a SourceFile,
    problems: Collector,
}

type Parsed = (
    kdlread::Spanned<String>,
    Option<kdlread::Spanned<Requirements>>,
    AbiDocument,
);

impl<'a> DocReader<'a> {
    fn missing(&mut self, at: &NodeReader<'_>, what: &str) {
        self.problems.push(
            at.problem("vmc::abi::missing", format!("the document lacks `{what}`"))
                .label("in this block")
                .help("an ABI document lists every value; compile the spec again with this vmc"),
        );
    }

    fn unknown(&mut self, r: &NodeReader<'_>, block: &str) {
        self.problems.push(
            r.problem(
                "vmc::abi::unknown-node",
                format!("unknown node `{}` in `{block}`", r.name()),
            )
            .label("unknown")
            .help("the document was edited, or written by another vmc version"),
        );
    }

    fn document(&mut self, doc: &'a kdl::KdlDocument) -> Option<Parsed> {
        let src = self.source;
        let mut format = None;
        let mut hash = None;
        let mut platform = None;
        let mut abi = None;
        let mut requires = None;
        let mut host = None;
        let mut origins = BTreeMap::new();
        for node in doc.nodes() {
            let r = NodeReader::new(src, node);
            match r.name() {
                "format" => format = self.problems.ok(r.unsigned()),
                "hash" => hash = self.problems.ok(r.string()),
                "platform" => platform = self.problems.ok(r.string()),
                "abi" => abi = self.abi(&r),
                "requires" => requires = self.requires(&r),
                "host" => host = self.host(&r),
                "origins" => origins = self.origins(&r),
                _ => self.unknown(&r, "document"),
            }
        }
        match &format {
            Some(f) if f.value != FORMAT => {
                self.problems.push(
                    Problem::new(
                        "vmc::abi::format",
                        format!(
                            "ABI document format {} is not supported (this vmc reads format {FORMAT})",
                            f.value
                        ),
                    )
                    .at(src, f.span)
                    .label("unsupported format")
                    .help("compile the spec again with this vmc"),
                );
                return None;
            }
            Some(_) => {}
            None => {
                self.problems.push(
                    Problem::new(
                        "vmc::abi::missing",
                        format!("{} has no `format` node: is it an ABI document?", src.name()),
                    )
                    .help("ABI documents are written by `vmc compile`"),
                );
                return None;
            }
        }
        let (Some(hash), Some(platform), Some(abi), Some(host)) = (hash, platform, abi, host) else {
            if self.problems.is_empty() {
                self.problems.push(
                    Problem::new(
                        "vmc::abi::missing",
                        format!(
                            "{} lacks one of `hash`, `platform`, `abi`, `host`: it is truncated or not an ABI document",
                            src.name()
                        ),
                    )
                    .help("compile the spec again"),
                );
            }
            return None;
        };
        let derived = Requirements::of(&abi);
        let doc = AbiDocument {
            hash: hash.value.clone(),
            platform: platform.value,
            requires: derived,
            abi,
            host,
            origins,
        };
        if let Some((path, _)) = doc.abi.values().into_iter().find(|(p, _)| !doc.origins.contains_key(p)) {
            self.problems.push(
                Problem::new(
                    "vmc::abi::missing",
                    format!("{} has no origin for `{path}`: it is truncated or edited", src.name()),
                )
                .help("compile the spec again"),
            );
        }
        if requires.is_none() {
            self.problems.push(
                Problem::new("vmc::abi::missing", format!("{} lacks `requires`", src.name()))
                    .help("compile the spec again"),
            );
        }
        Some((hash, requires, doc))
    }

    fn abi(&mut self, r: &NodeReader<'a>) -> Option<Abi> {
        let mut machine = None;
        let mut cpu = None;
        let mut memory = None;
        let mut devices = Vec::new();
        for child in r.children() {
            let c = NodeReader::new(self.source, child);
            match c.name() {
                "machine" => {
                    machine = self.problems.ok(c.string().and_then(|m| {
                        if machine::resolve(&m.value).is_some() {
                            Ok(m.value)
                        } else {
                            Err(
                                Problem::new("vmc::abi::machine", format!("unknown machine type `{}`", m.value))
                                    .at(self.source, m.span)
                                    .help(format!(
                                        "this vmc knows: {}",
                                        machine::names().collect::<Vec<_>>().join(", ")
                                    )),
                            )
                        }
                    }))
                }
                "cpu" => cpu = self.cpu(&c),
                "memory" => memory = self.problems.ok(c.unsigned()).map(|m| m.value),
                "device" => {
                    if let Some(d) = self.device(&c) {
                        devices.push(d);
                    }
                }
                _ => self.unknown(&c, "abi"),
            }
        }
        for (present, what) in [
            (machine.is_some(), "abi.machine"),
            (cpu.is_some(), "abi.cpu"),
            (memory.is_some(), "abi.memory"),
        ] {
            if !present {
                self.missing(r, what);
            }
        }
        Some(Abi {
            machine: machine?,
            cpu: cpu?,
            memory: memory?,
            devices,
        })
    }

    fn cpu(&mut self, r: &NodeReader<'a>) -> Option<CpuAbi> {
        let (mut model, mut count, mut migratable, mut features) = (None, None, None, None);
        for child in r.children() {
            let c = NodeReader::new(self.source, child);
            match c.name() {
                "model" => model = self.problems.ok(c.string()).map(|m| m.value),
                "count" => {
                    count = self.problems.ok(c.unsigned().and_then(|n| {
                        if n.value == 0 {
                            Err(Problem::new("vmc::abi::value", "`cpu.count` is 0").at(self.source, n.span))
                        } else {
                            Ok(n.value)
                        }
                    }))
                }
                "migratable" => migratable = self.problems.ok(c.boolean()).map(|b| b.value),
                "features" => {
                    let list = self.problems.ok(c.strings())?;
                    let mut names = Vec::new();
                    for f in list {
                        if cpu::feature(&f.value).is_none() {
                            self.problems.push(
                                Problem::new("vmc::abi::value", format!("unknown CPU feature `{}`", f.value))
                                    .at(self.source, f.span)
                                    .label("unknown"),
                            );
                        }
                        names.push(f.value);
                    }
                    let mut sorted = names.clone();
                    sorted.sort();
                    sorted.dedup();
                    if sorted != names {
                        self.problems.push(
                            c.problem("vmc::abi::value", "`cpu.features` is not sorted and unique")
                                .help("the document was edited; compile the spec again"),
                        );
                    }
                    features = Some(names);
                }
                _ => self.unknown(&c, "cpu"),
            }
        }
        for (present, what) in [
            (model.is_some(), "cpu.model"),
            (count.is_some(), "cpu.count"),
            (migratable.is_some(), "cpu.migratable"),
            (features.is_some(), "cpu.features"),
        ] {
            if !present {
                self.missing(r, what);
            }
        }
        Some(CpuAbi {
            model: model?,
            count: count?,
            migratable: migratable?,
            features: features?,
        })
    }

    fn device(&mut self, r: &NodeReader<'a>) -> Option<NetDevice> {
        let id = self.problems.ok(r.string())?.value;
        let mut fields: BTreeMap<&str, u64> = BTreeMap::new();
        let mut values: BTreeMap<&'static str, Value> = BTreeMap::new();
        let mut features = None;
        for child in r.children() {
            let c = NodeReader::new(self.source, child);
            match c.name() {
                "kind" | "transport" => {
                    let expected = if c.name() == "kind" {
                        NetDevice::KIND
                    } else {
                        NetDevice::TRANSPORT
                    };
                    if let Some(v) = self.problems.ok(c.string()) {
                        if v.value != expected {
                            self.problems.push(
                                Problem::new(
                                    "vmc::abi::value",
                                    format!("unsupported device {} `{}`", c.name(), v.value),
                                )
                                .at(self.source, v.span)
                                .help(format!("this vmc knows `{expected}` only")),
                            );
                        }
                    }
                    fields.insert(c.name(), 0);
                }
                "mmio-base" | "mmio-size" | "irq" => {
                    if let Some(v) = self.problems.ok(c.unsigned()) {
                        fields.insert(c.name(), v.value);
                    }
                }
                "device-features" => {
                    features = self
                        .problems
                        .ok(c.unsigneds())
                        .map(|v| v.into_iter().map(|b| b.value).collect::<Vec<u64>>())
                }
                name => {
                    let Some(p) = schema::property(name) else {
                        self.unknown(&c, "device");
                        continue;
                    };
                    if let Some(v) = self.problems.ok(read_value(&c, p)) {
                        values.insert(p.name, v);
                    }
                }
            }
        }
        let mut complete = true;
        for field in DEVICE_FIELDS {
            if !fields.contains_key(field) {
                self.missing(r, &format!("devices.{id}.{field}"));
                complete = false;
            }
        }
        let mut properties = Vec::new();
        for p in schema::VIRTIO_NET {
            match values.get(p.name) {
                Some(v) => properties.push((p, *v)),
                None => {
                    self.missing(r, &format!("devices.{id}.{}", p.name));
                    complete = false;
                }
            }
        }
        let Some(features) = features else {
            self.missing(r, &format!("devices.{id}.device-features"));
            return None;
        };
        if !complete {
            return None;
        }
        let derived = schema::device_features(&properties);
        if features != derived.iter().map(|&b| u64::from(b)).collect::<Vec<_>>() {
            self.problems.push(
                r.problem(
                    "vmc::abi::value",
                    format!("`devices.{id}.device-features` does not match the device's properties"),
                )
                .help(format!(
                    "the properties offer {}",
                    derived.iter().map(u32::to_string).collect::<Vec<_>>().join(" ")
                )),
            );
            return None;
        }
        let irq = match u32::try_from(fields["irq"]) {
            Ok(irq) => irq,
            Err(_) => {
                self.problems
                    .push(r.problem("vmc::abi::value", format!("`devices.{id}.irq` is out of range")));
                return None;
            }
        };
        Some(NetDevice {
            id,
            mmio_base: fields["mmio-base"],
            mmio_size: fields["mmio-size"],
            irq,
            properties,
            device_features: derived,
        })
    }

    fn requires(&mut self, r: &NodeReader<'a>) -> Option<kdlread::Spanned<Requirements>> {
        let mut req = Requirements::default();
        for child in r.children() {
            let c = NodeReader::new(self.source, child);
            let items = self.problems.ok(c.strings())?;
            match c.name() {
                "tap-offloads" => {
                    for s in items {
                        match TapOffload::from_name(&s.value) {
                            Some(o) => {
                                req.tap_offloads.insert(o);
                            }
                            None => self.problems.push(
                                Problem::new("vmc::abi::value", format!("unknown TAP offload `{}`", s.value))
                                    .at(self.source, s.span),
                            ),
                        }
                    }
                }
                "kvm-capabilities" => req.kvm_capabilities.extend(items.into_iter().map(|s| s.value)),
                "cpu-features" => req.cpu_features.extend(items.into_iter().map(|s| s.value)),
                _ => self.unknown(&c, "requires"),
            }
        }
        Some(kdlread::Spanned::new(req, r.node.span()))
    }

    fn host(&mut self, r: &NodeReader<'a>) -> Option<HostBindings> {
        let mut host = HostBindings::default();
        let mut name = None;
        for child in r.children() {
            let c = NodeReader::new(self.source, child);
            match c.name() {
                "name" => name = self.problems.ok(c.string()).map(|s| s.value),
                "kernel" => host.kernel = self.problems.ok(c.string()).map(|s| s.value),
                "initrd" => host.initrd = self.problems.ok(c.string()).map(|s| s.value),
                "cmdline" => host.cmdline = self.problems.ok(c.string()).map(|s| s.value),
                "tap" => {
                    if let Some(v) = self.problems.ok(c.strings()) {
                        match v.as_slice() {
                            [device, tap] => host.taps.push((device.value.clone(), tap.value.clone())),
                            _ => self
                                .problems
                                .push(c.problem("vmc::abi::value", "`tap` takes a device id and an interface name")),
                        }
                    }
                }
                _ => self.unknown(&c, "host"),
            }
        }
        match name {
            Some(n) => host.name = n,
            None => self.missing(r, "host.name"),
        }
        Some(host)
    }

    fn origins(&mut self, r: &NodeReader<'a>) -> BTreeMap<String, Origin> {
        let mut out = BTreeMap::new();
        for child in r.children() {
            let c = NodeReader::new(self.source, child);
            if c.name() != "origin" {
                self.unknown(&c, "origins");
                continue;
            }
            let Some(path) = c.node.entries().first().filter(|e| e.name().is_none()) else {
                self.problems
                    .push(c.problem("vmc::abi::value", "`origin` needs a value path"));
                continue;
            };
            let Some(path) = self.problems.ok(c.string_of(path)) else {
                continue;
            };
            let text = |key: &str| -> Option<String> {
                c.property(key).and_then(|e| e.value().as_string()).map(str::to_string)
            };
            let number = |key: &str| -> Option<usize> {
                c.property(key)
                    .and_then(|e| e.value().as_integer())
                    .and_then(|n| usize::try_from(n).ok())
            };
            let origin = if let Some(file) = text("spec") {
                number("line")
                    .zip(number("column"))
                    .map(|(line, column)| Origin::Spec { file, line, column })
            } else if let Some(m) = text("machine-type") {
                Some(Origin::MachineType(m))
            } else if let Some(p) = text("platform") {
                Some(Origin::Platform(p))
            } else {
                text("derived").map(Origin::Derived)
            };
            match origin {
                Some(o) => {
                    out.insert(path.value, o);
                }
                None => self.problems.push(c.problem(
                    "vmc::abi::value",
                    "`origin` needs spec=… line=… column=…, machine-type=…, platform=… or derived=…",
                )),
            }
        }
        out
    }
}

/// Reads one property value from an ABI document, checked as in a spec.
fn read_value(c: &NodeReader<'_>, p: &'static Property) -> Result<Value, Problem> {
    crate::spec::property_value(c, p)
        .map(|v| v.value)
        .map_err(|mut problem| {
            problem.code = "vmc::abi::value";
            problem
        })
}
