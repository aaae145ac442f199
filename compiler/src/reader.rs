//! Reading an ABI document: the one reader every command goes through (`show`, `hash`,
//! `check`, `diff`, `explain`, `place`, `lower`, `run`).
//!
//! The hash is a content address, not a signature: anyone can edit a document and
//! recompute it. So a document is valid only if it is a fixed point of the compiler:
//! the reader turns the document back into a spec that states every value (with the
//! document's spans), compiles that for the document's machine type, and refuses the
//! document unless the result is the very same document. A re-hashed edit therefore
//! meets every rule a spec meets, with the same code and wording, pointing into the
//! document; a value the compiler derives (placement, feature bits, CPU features,
//! `requires`) must be the derived one.

use std::collections::{BTreeMap, BTreeSet};

use miette::SourceSpan;

use crate::canonical::{self, FORMAT};
use crate::cpu;
use crate::diagnostic::{Collector, Problem, Problems, SourceFile};
use crate::document::{
    show_field, Abi, AbiDocument, CpuAbi, HostBindings, NetDevice, Origin, Place, Requirements, DEVICE_FIELDS,
};
use crate::expand;
use crate::kdlread::{self, NodeReader, Spanned};
use crate::machine::{self, MachineType};
use crate::platform::TapOffload;
use crate::schema;
use crate::spec::{self, BootSpec, NetSpec, Spec};

impl AbiDocument {
    /// Reads a document: its structure, every value, the hash, and that the compiler
    /// would write exactly this document (see the module documentation).
    pub fn from_kdl(source: &SourceFile) -> Result<AbiDocument, Problems> {
        let kdl = kdlread::parse(source, "an ABI document (written by `vmc compile`)")?;
        let mut reader = Reader {
            source,
            problems: Collector::default(),
            repeated: kdlread::Capped::default(),
            spans: BTreeMap::new(),
        };
        let parts = reader.document(&kdl);
        let Reader {
            mut problems,
            repeated,
            spans,
            ..
        } = reader;
        for p in repeated.finish() {
            problems.push(p);
        }
        let parts = match parts {
            Some(p) if problems.is_empty() => p,
            _ => return Err(kdlread::at_most(problems.into_problems())),
        };
        if parts.hash.value != canonical::hash(&parts.doc.abi) {
            return Err(Problem::new(
                "vmc::abi::hash-mismatch",
                "the stored hash does not match the document's `abi`",
            )
            .at(source, parts.hash.span)
            .label("stored hash")
            .help("the document was edited or damaged after `vmc compile`; compile the spec again")
            .into());
        }
        fixed_point(source, &parts, &spans).map_err(kdlread::at_most)?;
        Ok(parts.doc)
    }
}

/// A document as read, before the fixed-point check.
struct Parts {
    hash: Spanned<String>,
    /// The stored `requires`, with the span of its block.
    requires: Spanned<Requirements>,
    /// The document, with `hash` and `requires` as stored.
    doc: AbiDocument,
    /// The document restated as a spec that sets every value.
    spec: Spec,
}

/// Re-derives the document from its own values and compares.
fn fixed_point(source: &SourceFile, parts: &Parts, spans: &BTreeMap<String, SourceSpan>) -> Result<(), Problems> {
    let doc = &parts.doc;
    let host_features: BTreeSet<String> = doc.abi.cpu.features.iter().cloned().collect();
    let derived = expand::rederive(&parts.spec, &doc.platform, &host_features)?;
    let at = |path: &str| spans.get(path).copied().unwrap_or_else(|| SourceSpan::from(0));
    let mut problems = Collector::default();
    let derived_values: BTreeMap<String, (String, serde_json::Value)> = derived
        .abi
        .fields()
        .into_iter()
        .map(|f| (f.path(), (f.name.to_string(), f.value)))
        .collect();
    for field in doc.abi.fields() {
        let path = field.path();
        let Some((name, value)) = derived_values.get(&path) else {
            continue;
        };
        if *value != field.value {
            let from = derived
                .origins
                .get(&path)
                .map(|o| format!(" ({o})"))
                .unwrap_or_default();
            let message = match (field.value.as_array(), value.as_array()) {
                // Lists (CPU features, feature bits): what is missing and what is extra.
                (Some(stored), Some(wanted)) => {
                    let only = |a: &Vec<serde_json::Value>, b: &Vec<serde_json::Value>| {
                        let items: Vec<String> = a
                            .iter()
                            .filter(|x| !b.contains(x))
                            .map(|x| show_field(name, x))
                            .collect();
                        items.join(" ")
                    };
                    let (lacks, extra) = (only(wanted, stored), only(stored, wanted));
                    let mut parts = Vec::new();
                    if !lacks.is_empty() {
                        parts.push(format!("lacks {lacks}"));
                    }
                    if !extra.is_empty() {
                        parts.push(format!("has {extra} too"));
                    }
                    format!(
                        "`{path}` is not what the compiler writes{from}: it {}",
                        parts.join(", and ")
                    )
                }
                _ => format!(
                    "`{path}` is {}, but the compiler writes {}{from}",
                    show_field(name, &field.value),
                    show_field(name, value)
                ),
            };
            problems.push(
                Problem::new("vmc::abi::not-derived", message)
                    .at(source, at(&path))
                    .label("not what the compiler writes")
                    .help("a document is valid only as `vmc compile` writes it; compile the spec again"),
            );
        }
    }
    let host_values = |h: &HostBindings| {
        [
            ("host.kernel", h.kernel.clone()),
            ("host.initrd", h.initrd.clone()),
            ("host.cmdline", h.cmdline.clone()),
        ]
    };
    for ((path, stored), (_, wanted)) in host_values(&doc.host).into_iter().zip(host_values(&derived.host)) {
        if stored != wanted {
            problems.push(
                Problem::new(
                    "vmc::abi::not-derived",
                    format!(
                        "`{path}` is {:?}, but the compiler writes {:?}",
                        stored.unwrap_or_default(),
                        wanted.unwrap_or_default()
                    ),
                )
                .at(source, at(path))
                .label("not what the compiler writes")
                .help("paths in documents are written normalised (no `.` or `..` parts); compile the spec again"),
            );
        }
    }
    if parts.requires.value != derived.requires {
        problems.push(
            Problem::new(
                "vmc::abi::requires-mismatch",
                "`requires` does not match what `abi` needs",
            )
            .at(source, parts.requires.span)
            .label("edited")
            .help("`requires` is derived from `abi`; compile the spec again"),
        );
    }
    let paths: BTreeSet<String> = doc.abi.values().into_iter().map(|(p, _)| p).collect();
    for path in &paths {
        if !doc.origins.contains_key(path) {
            problems.push(
                Problem::new(
                    "vmc::abi::missing",
                    format!(
                        "{} has no origin for `{path}`: it is truncated or edited",
                        source.name()
                    ),
                )
                .help("compile the spec again"),
            );
        }
    }
    for path in doc.origins.keys().filter(|p| !paths.contains(*p)) {
        problems.push(
            Problem::new(
                "vmc::abi::value",
                format!("an origin names `{path}`, which is not a value of `abi`"),
            )
            .at(source, at(&format!("origins.{path}")))
            .label("no such value")
            .help("the document was edited; compile the spec again"),
        );
    }
    problems.finish(())
}

/// Reads the KDL form, collecting problems, and keeps the span of every value.
struct Reader<'a> {
    source: &'a SourceFile,
    problems: Collector,
    /// Problems a hostile document can repeat without end (unknown, missing and repeated
    /// nodes): the first ones are kept, the rest only counted, so that neither building
    /// nor showing them grows with the document.
    repeated: kdlread::Capped,
    /// The span of each value by path (`devices.net0.irq`, `host.kernel`,
    /// `origins.cpu.count`), for messages.
    spans: BTreeMap<String, SourceSpan>,
}

/// The nodes of a document's top level.
const TOP_NODES: &[&str] = &["format", "hash", "platform", "abi", "requires", "host", "origins"];

/// The nodes of one block by name, each at most once.
struct Block<'a> {
    nodes: Vec<NodeReader<'a>>,
}

impl<'a> Block<'a> {
    fn get(&self, name: &str) -> Option<&NodeReader<'a>> {
        self.nodes.iter().find(|n| n.name() == name)
    }
}

impl<'a> Reader<'a> {
    fn no_problems(&self) -> bool {
        self.problems.is_empty() && self.repeated.is_empty()
    }

    fn missing(&mut self, at: &NodeReader<'_>, what: &str) {
        self.repeated.push(|| {
            at.problem("vmc::abi::missing", format!("the document lacks `{what}`"))
                .label("in this block")
                .help("an ABI document lists every value; compile the spec again with this vmc")
        });
    }

    fn unknown(&mut self, r: &NodeReader<'_>, block: &str) {
        self.repeated.push(|| {
            r.problem(
                "vmc::abi::unknown-node",
                format!("unknown node `{}` in `{block}`", r.name()),
            )
            .label("unknown")
            .help("the document was edited, or written by another vmc version")
        });
    }

    /// Sorts the children of `parent` (the document's top level when `None`). Repeats are
    /// reported by the one duplicate check every reader uses
    /// ([`kdlread::refuse_duplicates`], naming both places) and only the first is kept.
    /// Nodes named in `repeatable` come back in order (one per key, their first
    /// argument), the others named in `known` in the [`Block`]; `unknown` is told of the
    /// rest.
    fn children(
        &mut self,
        parent: Option<&NodeReader<'a>>,
        nodes: &'a [kdl::KdlNode],
        known: &[&str],
        repeatable: &[&str],
        mut unknown: impl FnMut(&mut Self, &NodeReader<'a>),
    ) -> (Block<'a>, Vec<NodeReader<'a>>) {
        let repeats = match parent {
            Some(r) => r.refuse_duplicate_children(repeatable),
            None => kdlread::refuse_duplicates(self.source, nodes, repeatable, "the document"),
        };
        for p in repeats {
            self.problems.push(p);
        }
        let mut once: Vec<NodeReader<'a>> = Vec::new();
        let mut repeated: Vec<NodeReader<'a>> = Vec::new();
        let mut keys: BTreeSet<String> = BTreeSet::new();
        for node in nodes {
            let c = NodeReader::new(self.source, node);
            if !known.contains(&c.name()) {
                unknown(self, &c);
            } else if repeatable.contains(&c.name()) {
                let key = node
                    .entries()
                    .iter()
                    .find(|e| e.name().is_none())
                    .map(|e| e.value().to_string())
                    .unwrap_or_default();
                if keys.insert(key) {
                    repeated.push(c);
                }
            } else if !once.iter().any(|n| n.name() == c.name()) {
                once.push(c);
            }
        }
        (Block { nodes: once }, repeated)
    }

    /// [`Self::children`] of a block whose nodes each appear once, the rest unknown.
    fn block(&mut self, r: &NodeReader<'a>, path: &str, known: &[&str]) -> Block<'a> {
        self.children(Some(r), r.children(), known, &[], |me, c| me.unknown(c, path))
            .0
    }

    /// A value node: no block, then read by `read`; its span is kept under `path`.
    fn value<T>(
        &mut self,
        node: Option<&NodeReader<'a>>,
        path: &str,
        read: impl FnOnce(&NodeReader<'a>) -> Result<Spanned<T>, Problem>,
    ) -> Option<Spanned<T>> {
        let n = node?;
        let v = self.problems.ok(n.no_children().and_then(|_| read(n)))?;
        self.spans.insert(path.to_string(), v.span);
        Some(v)
    }

    fn document(&mut self, kdl: &'a kdl::KdlDocument) -> Option<Parts> {
        let src = self.source;
        if let Some(vm) = kdl.nodes().iter().find(|n| n.name().value() == "vm") {
            self.problems.push(
                NodeReader::new(src, vm)
                    .problem(
                        "vmc::abi::is-spec",
                        format!("{} is a VM spec, not an ABI document", src.name()),
                    )
                    .help("compile it first: `vmc compile SPEC` writes the ABI document"),
            );
            return None;
        }
        let (top, _) = self.children(None, kdl.nodes(), TOP_NODES, &[], |me, c| me.unknown(c, "document"));
        let format = self.value(top.get("format"), "format", |n| n.unsigned());
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
                if self.no_problems() {
                    self.problems.push(
                        Problem::new(
                            "vmc::abi::missing",
                            format!("{} has no `format` node: is it an ABI document?", src.name()),
                        )
                        .help("ABI documents are written by `vmc compile`"),
                    );
                }
                return None;
            }
        }
        let hash = self.value(top.get("hash"), "hash", |n| n.string());
        let platform = self.value(top.get("platform"), "platform", |n| n.string());
        let abi = top.get("abi").map(|r| self.abi(r));
        let requires = top.get("requires").map(|r| self.requires(r));
        let devices: Vec<String> = match &abi {
            Some(Some((abi, _))) => abi.devices.iter().map(|d| d.id.clone()).collect(),
            _ => Vec::new(),
        };
        let host = top.get("host").map(|r| self.host(r, &devices));
        let origins = match top.get("origins") {
            Some(r) => self.origins(r),
            None => BTreeMap::new(),
        };
        let (
            Some(hash),
            Some(platform),
            Some(Some((abi, abi_spec))),
            Some(Some(requires)),
            Some(Some((host, boot, taps))),
        ) = (hash, platform, abi, requires, host)
        else {
            if self.no_problems() {
                self.problems.push(
                    Problem::new(
                        "vmc::abi::missing",
                        format!(
                            "{} lacks one of `hash`, `platform`, `abi`, `requires`, `host`: it is truncated or not an ABI document",
                            src.name()
                        ),
                    )
                    .help("compile the spec again"),
                );
            }
            return None;
        };
        let name = self.spans.get("host.name").copied().unwrap_or(SourceSpan::from(0));
        let name = self.problems.ok(spec::check_name(
            src,
            Spanned::new(host.name.clone(), name),
            "VM name",
            64,
        ))?;
        let AbiSpec {
            machine,
            cpus,
            cpu_model,
            memory,
            mut nets,
        } = abi_spec;
        for net in &mut nets {
            net.tap = taps.get(&net.id.value).cloned();
        }
        let spec = Spec {
            source: src.clone(),
            name,
            machine: Some(machine),
            cpus: Some(cpus),
            cpu_model: Some(cpu_model),
            memory: Some(memory),
            boot: Some(boot),
            nets,
        };
        Some(Parts {
            doc: AbiDocument {
                hash: hash.value.clone(),
                platform: platform.value,
                requires: requires.value.clone(),
                abi,
                host,
                origins,
            },
            hash,
            requires,
            spec,
        })
    }

    fn abi(&mut self, r: &NodeReader<'a>) -> Option<(Abi, AbiSpec)> {
        // `device` repeats, keyed by its id; everything else is once.
        let (block, devices) = self.children(
            Some(r),
            r.children(),
            &["machine", "cpu", "memory", "device"],
            &["device"],
            |me, c| me.unknown(c, "abi"),
        );
        for (name, what) in [("machine", "abi.machine"), ("cpu", "abi.cpu"), ("memory", "abi.memory")] {
            if block.get(name).is_none() {
                self.missing(r, what);
            }
        }
        let machine_name = self.value(block.get("machine"), "machine", |n| n.string());
        let machine = machine_name.as_ref().and_then(|m| match machine::resolve(&m.value) {
            Some(machine) => Some(machine),
            None => {
                self.problems.push(
                    Problem::new("vmc::abi::machine", format!("unknown machine type `{}`", m.value))
                        .at(self.source, m.span)
                        .help(format!(
                            "this vmc knows: {}",
                            machine::names().collect::<Vec<_>>().join(", ")
                        )),
                );
                None
            }
        });
        let memory = self.value(block.get("memory"), "memory", |n| n.unsigned());
        let cpu = block.get("cpu").and_then(|c| self.cpu(c));
        let mut nets: Vec<NetSpec> = Vec::new();
        let mut net_devices: Vec<NetDevice> = Vec::new();
        // More devices than slots can never be valid; saying so once keeps the work
        // bounded, however many `device` blocks a document holds.
        if let Some(m) = &machine {
            if devices.len() > m.mmio.slots as usize {
                self.problems.push(
                    devices[m.mmio.slots as usize]
                        .problem(
                            "vmc::spec::too-many-devices",
                            format!(
                                "machine type {} has {} virtio-mmio slots; the document has {} devices",
                                m.name,
                                m.mmio.slots,
                                devices.len()
                            ),
                        )
                        .label("no slot left"),
                );
                return None;
            }
        }
        for d in &devices {
            let Some((net, device)) = machine.as_ref().and_then(|m| self.device(d, m)) else {
                continue;
            };
            nets.push(net);
            net_devices.push(device);
        }
        let (machine_name, machine, memory, (cpu, cpu_spec)) = (machine_name?, machine?, memory?, cpu?);
        if nets.len() != devices.len() {
            return None;
        }
        let CpuSpec {
            count: cpus,
            model: cpu_model,
        } = cpu_spec;
        Some((
            Abi {
                machine: machine.name.to_string(),
                cpu,
                memory: memory.value,
                devices: net_devices,
            },
            AbiSpec {
                machine: machine_name,
                cpus,
                cpu_model,
                memory,
                nets,
            },
        ))
    }

    fn cpu(&mut self, r: &NodeReader<'a>) -> Option<(CpuAbi, CpuSpec)> {
        let block = self.block(r, "cpu", &["model", "count", "migratable", "features"]);
        for name in ["model", "count", "migratable", "features"] {
            if block.get(name).is_none() {
                self.missing(r, &Place::Cpu.path(name));
            }
        }
        let model = self.value(block.get("model"), "cpu.model", |n| n.string());
        let count = self.value(block.get("count"), "cpu.count", |n| n.unsigned());
        let migratable = self.value(block.get("migratable"), "cpu.migratable", |n| n.boolean());
        let features = self.value(block.get("features"), "cpu.features", |n| {
            let list = n.strings()?;
            for f in &list {
                if cpu::feature(&f.value).is_none() {
                    return Err(
                        Problem::new("vmc::abi::value", format!("unknown CPU feature `{}`", f.value))
                            .at(n.source, f.span)
                            .label("unknown"),
                    );
                }
            }
            Ok(Spanned::new(
                list.into_iter().map(|f| f.value).collect::<Vec<_>>(),
                n.node.span(),
            ))
        });
        let (model, count, migratable, features) = (model?, count?, migratable?, features?);
        Some((
            CpuAbi {
                model: model.value.clone(),
                count: count.value,
                migratable: migratable.value,
                features: features.value,
            },
            CpuSpec { count, model },
        ))
    }

    /// One `device "ID" { ... }` block: exactly the machine type's properties.
    fn device(&mut self, r: &NodeReader<'a>, m: &MachineType) -> Option<(NetSpec, NetDevice)> {
        let id = self.problems.ok(r.string())?;
        let id = self.problems.ok(spec::check_name(self.source, id, "device id", 32))?;
        let place = Place::Device(&id.value);
        let mut known: Vec<&str> = DEVICE_FIELDS.to_vec();
        known.extend(m.net.iter().map(|(p, _)| p.name));
        known.push("device-features");
        let device = format!("device \"{}\"", id.value);
        let (block, _) = self.children(Some(r), r.children(), &known, &[], |me, c| {
            match schema::property(c.name()) {
                Some(p) => me.repeated.push(|| {
                    c.problem(
                        "vmc::abi::not-in-machine-type",
                        format!(
                            "`{}` arrives with machine type {}; this document's machine type {} does not have it",
                            c.name(),
                            p.since,
                            m.name
                        ),
                    )
                    .label(format!("not in {}", m.name))
                    .help("the document was edited; compile the spec again")
                }),
                None => me.unknown(c, &device),
            }
        });
        let mut complete = true;
        for name in &known {
            if block.get(name).is_none() {
                self.missing(r, &place.path(name));
                complete = false;
            }
        }
        let text = |expected: &'static str| {
            move |n: &NodeReader<'a>| {
                let v = n.string()?;
                if v.value == expected {
                    Ok(v)
                } else {
                    Err(Problem::new(
                        "vmc::abi::value",
                        format!("unsupported device {} `{}`", n.name(), v.value),
                    )
                    .at(n.source, v.span)
                    .help(format!("this vmc knows `{expected}` only")))
                }
            }
        };
        let kind = self.value(block.get("kind"), &place.path("kind"), text(NetDevice::KIND));
        let transport = self.value(
            block.get("transport"),
            &place.path("transport"),
            text(NetDevice::TRANSPORT),
        );
        let mmio_base = self.value(block.get("mmio-base"), &place.path("mmio-base"), |n| n.unsigned());
        let mmio_size = self.value(block.get("mmio-size"), &place.path("mmio-size"), |n| n.unsigned());
        let irq = self.value(block.get("irq"), &place.path("irq"), |n| {
            let v = n.unsigned()?;
            let irq = u32::try_from(v.value)
                .map_err(|_| Problem::new("vmc::abi::value", "`irq` is out of range").at(n.source, v.span))?;
            Ok(Spanned::new(irq, v.span))
        });
        let features = self.value(block.get("device-features"), &place.path("device-features"), |n| {
            let bits = n.unsigneds()?;
            let bits: Result<Vec<u32>, Problem> = bits
                .into_iter()
                .map(|b| {
                    u32::try_from(b.value).ok().filter(|&bit| bit < 64).ok_or_else(|| {
                        Problem::new(
                            "vmc::abi::value",
                            format!("feature bit {} is out of range (0..=63)", b.value),
                        )
                        .at(n.source, b.span)
                    })
                })
                .collect();
            Ok(Spanned::new(bits?, n.node.span()))
        });
        let mut properties = Vec::new();
        let mut spec_properties = Vec::new();
        for (p, _) in &m.net {
            let path = place.path(p.name);
            // Checked as in a spec: the same rule, code and wording.
            if let Some(v) = self.value(block.get(p.name), &path, |n| spec::property_value(n, p)) {
                properties.push((*p, v.value));
                spec_properties.push((*p, v));
            }
        }
        if !complete || properties.len() != m.net.len() {
            return None;
        }
        let (_, _, mmio_base, mmio_size, irq, features) = (kind?, transport?, mmio_base?, mmio_size?, irq?, features?);
        Some((
            NetSpec {
                id: id.clone(),
                span: r.node.span(),
                tap: None,
                properties: spec_properties,
            },
            NetDevice {
                id: id.value,
                mmio_base: mmio_base.value,
                mmio_size: mmio_size.value,
                irq: irq.value,
                properties,
                device_features: features.value,
            },
        ))
    }

    fn requires(&mut self, r: &NodeReader<'a>) -> Option<Spanned<Requirements>> {
        let block = self.block(r, "requires", &["tap-offloads", "kvm-capabilities", "cpu-features"]);
        let mut req = Requirements::default();
        for c in &block.nodes {
            let items = self.problems.ok(c.no_children().and_then(|_| c.strings()))?;
            match c.name() {
                "tap-offloads" => {
                    for s in items {
                        match TapOffload::from_name(&s.value) {
                            Some(o) => {
                                req.tap_offloads.insert(o);
                            }
                            None => {
                                let source = self.source;
                                self.repeated.push(|| {
                                    Problem::new("vmc::abi::value", format!("unknown TAP offload `{}`", s.value))
                                        .at(source, s.span)
                                })
                            }
                        }
                    }
                }
                "kvm-capabilities" => req.kvm_capabilities.extend(items.into_iter().map(|s| s.value)),
                _ => req.cpu_features.extend(items.into_iter().map(|s| s.value)),
            }
        }
        Some(Spanned::new(req, r.node.span()))
    }

    /// The `host` block: the bindings, the spec's `boot`, and each device's TAP.
    #[allow(clippy::type_complexity)]
    fn host(
        &mut self,
        r: &NodeReader<'a>,
        devices: &[String],
    ) -> Option<(HostBindings, BootSpec, BTreeMap<String, Spanned<String>>)> {
        let (block, tap_nodes) = self.children(
            Some(r),
            r.children(),
            &["name", "kernel", "initrd", "cmdline", "tap"],
            &["tap"],
            |me, c| me.unknown(c, "host"),
        );
        let mut taps: BTreeMap<String, Spanned<String>> = BTreeMap::new();
        let mut bindings = HostBindings::default();
        for c in &tap_nodes {
            let Some(v) = self.problems.ok(c.no_children().and_then(|_| c.strings())) else {
                continue;
            };
            let [device, tap] = v.as_slice() else {
                self.problems
                    .push(c.problem("vmc::abi::value", "`tap` takes a device id and an interface name"));
                continue;
            };
            if !devices.contains(&device.value) {
                let source = self.source;
                self.repeated.push(|| {
                    Problem::new(
                        "vmc::abi::value",
                        format!("`tap` names device `{}`, which `abi` does not have", device.value),
                    )
                    .at(source, device.span)
                    .label("no such device")
                });
            } else {
                self.spans.insert(format!("host.tap.{}", device.value), tap.span);
                taps.insert(device.value.clone(), tap.clone());
                bindings.taps.push((device.value.clone(), tap.value.clone()));
            }
        }
        if block.get("name").is_none() {
            self.missing(r, "host.name");
        }
        for device in devices {
            if !taps.contains_key(device) {
                self.missing(r, &format!("host.tap \"{device}\""));
            }
        }
        let name = self.value(block.get("name"), "host.name", |n| n.string());
        let boot = BootSpec {
            kernel: self.value(block.get("kernel"), "host.kernel", |n| n.string()),
            initrd: self.value(block.get("initrd"), "host.initrd", |n| n.string()),
            cmdline: self.value(block.get("cmdline"), "host.cmdline", |n| n.string()),
        };
        bindings.name = name?.value;
        bindings.kernel = boot.kernel.as_ref().map(|v| v.value.clone());
        bindings.initrd = boot.initrd.as_ref().map(|v| v.value.clone());
        bindings.cmdline = boot.cmdline.as_ref().map(|v| v.value.clone());
        // Device order, as the compiler writes them.
        bindings.taps.sort_by_key(|(d, _)| devices.iter().position(|x| x == d));
        Some((bindings, boot, taps))
    }

    fn origins(&mut self, r: &NodeReader<'a>) -> BTreeMap<String, Origin> {
        // Repeated origins, and repeated `line=` and such on one origin.
        for p in r.refuse_duplicate_children(&["origin"]) {
            self.problems.push(p);
        }
        let mut out: BTreeMap<String, Origin> = BTreeMap::new();
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
            let key = format!("origins.{}", path.value);
            if self.spans.contains_key(&key) {
                continue; // reported above
            }
            self.spans.insert(key, path.span);
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

/// `abi.cpu`'s values as a spec states them.
struct CpuSpec {
    count: Spanned<u64>,
    model: Spanned<String>,
}

/// The `abi` block restated as spec values, with the document's spans.
struct AbiSpec {
    machine: Spanned<String>,
    cpus: Spanned<u64>,
    cpu_model: Spanned<String>,
    memory: Spanned<u64>,
    nets: Vec<NetSpec>,
}
