//! Expansion: machine type, then platform, then spec; every value explicit and
//! remembering where it came from. Then validation: ranges, virtio feature
//! dependencies, what the runtime implements, and what the platform can provide.
//!
//! Defaults that would break a dependency because the spec turned a feature off follow
//! it off (recorded as derived); a value the spec sets explicitly is never changed: a
//! conflict is an error.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use miette::SourceSpan;

use crate::cpu;
use crate::diagnostic::{choices_help, Collector, Problem, Problems, SourceFile};
use crate::document::{Abi, AbiDocument, CpuAbi, HostBindings, NetDevice, Origin, Place};
use crate::kdlread::Spanned;
use crate::limits::{self, MAX_CPUS, MAX_MEMORY, MEMORY_GRANULE, MIN_MEMORY};
use crate::machine::{self, Default, MachineType};
use crate::platform::{Platform, PlatformRegistry};
use crate::schema::{self, Property, Support, Value};
use crate::spec::{self, NetSpec, Spec};

/// What the compiler needs besides the spec text. The compiler does no I/O: the caller
/// reads files and probes hosts.
pub struct CompileInput<'a> {
    pub spec: &'a SourceFile,
    pub platform: &'a Platform,
    /// Every known platform, to name the first one that has a missing capability.
    pub registry: &'a PlatformRegistry,
    /// The absolute directory that relative boot paths in the spec start from.
    pub base_dir: Option<&'a Path>,
    /// The CPU features of the host being compiled on, when it was probed: what
    /// `cpu-model "host"` expands to (otherwise the platform's, if it states them).
    pub host_cpu_features: Option<&'a std::collections::BTreeSet<String>>,
}

/// Compiles a spec for a platform into an ABI document.
pub fn compile(input: &CompileInput<'_>) -> Result<AbiDocument, Problems> {
    let spec = spec::parse(input.spec)?;
    Expander {
        spec: &spec,
        input,
        problems: Collector::default(),
        origins: BTreeMap::new(),
    }
    .run()
}

/// For the compiler's own tests: `text` compiled for the built-in platform `platform`,
/// which must succeed.
#[cfg(test)]
pub(crate) fn compile_for_test(text: &str, platform: &str) -> AbiDocument {
    let registry = PlatformRegistry::builtin();
    compile(&CompileInput {
        spec: &crate::SourceFile::new("t.kdl", text),
        platform: registry.get(platform).unwrap(),
        registry: &registry,
        base_dir: None,
        host_cpu_features: None,
    })
    .unwrap()
}

/// Compiles a spec that states every value, as the reader restates a document (with
/// the document's spans), for the document's machine type. The platform takes no part:
/// every TAP offload counts as available and the CPU features are the document's own,
/// so what remains are the rules of the compiler, which the result must satisfy.
pub(crate) fn rederive(
    spec: &Spec,
    platform_name: &str,
    cpu_features: &std::collections::BTreeSet<String>,
) -> Result<AbiDocument, Problems> {
    let platform = Platform {
        name: platform_name.to_string(),
        description: String::new(),
        kernel: crate::platform::KernelVersion { major: 0, minor: 0 },
        inherits: None,
        tap_offloads: crate::platform::TapOffload::ALL.into_iter().collect(),
        kvm_capabilities: std::collections::BTreeSet::new(),
        cpu_features: None,
        source: crate::platform::PlatformSource::Builtin,
    };
    // Only messages about missing offloads consult the registry, and none arise here.
    static BUILTIN: std::sync::OnceLock<PlatformRegistry> = std::sync::OnceLock::new();
    let input = CompileInput {
        spec: &spec.source,
        platform: &platform,
        registry: BUILTIN.get_or_init(PlatformRegistry::builtin),
        base_dir: None,
        host_cpu_features: Some(cpu_features),
    };
    Expander {
        spec,
        input: &input,
        problems: Collector::default(),
        origins: BTreeMap::new(),
    }
    .run()
}

/// A value and where it came from.
#[derive(Debug, Clone)]
struct Sourced<T> {
    value: T,
    origin: Origin,
    /// The spec span, when the spec set it.
    span: Option<SourceSpan>,
}

struct Expander<'a> {
    spec: &'a Spec,
    input: &'a CompileInput<'a>,
    problems: Collector,
    origins: BTreeMap<String, Origin>,
}

impl<'a> Expander<'a> {
    fn source(&self) -> &SourceFile {
        &self.spec.source
    }

    fn spec_value<T: Clone>(&self, s: &Spanned<T>) -> Sourced<T> {
        let (line, column) = self.source().line_column(s.span.offset());
        Sourced {
            value: s.value.clone(),
            origin: Origin::Spec {
                file: self.source().name().to_string(),
                line,
                column,
            },
            span: Some(s.span),
        }
    }

    fn machine_value<T>(&self, value: T, m: &MachineType) -> Sourced<T> {
        Sourced {
            value,
            origin: Origin::MachineType(m.name.to_string()),
            span: None,
        }
    }

    /// Keeps the origin of the value `name` at `place`, and gives the value.
    fn record<T>(&mut self, place: Place<'_>, name: &str, s: Sourced<T>) -> T {
        self.origins.insert(place.path(name), s.origin);
        s.value
    }

    fn origin(&mut self, place: Place<'_>, name: &str, origin: Origin) {
        self.origins.insert(place.path(name), origin);
    }

    fn run(mut self) -> Result<AbiDocument, Problems> {
        let machine = self.machine();
        let Some(machine) = machine else {
            return Err(self.problems.into_problems());
        };
        let cpu = self.cpu(&machine);
        let memory = self.memory(&machine);
        let mut devices = Vec::new();
        let mut taps = Vec::new();
        for (index, net) in self.spec.nets.iter().enumerate() {
            if let Some((device, tap)) = self.net(index, net, &machine) {
                devices.push(device);
                taps.push((net.id.value.clone(), tap));
            }
        }
        self.unique_macs_and_taps(&devices, &taps);
        let host = self.host(taps);
        let (Some(cpu), Some(memory)) = (cpu, memory) else {
            return Err(self.problems.into_problems());
        };
        if !self.problems.is_empty() {
            return Err(self.problems.into_problems());
        }
        let abi = Abi {
            machine: machine.name.to_string(),
            cpu,
            memory,
            devices,
        };
        self.check_kernel_cmdline(&abi, &host);
        if !self.problems.is_empty() {
            return Err(self.problems.into_problems());
        }
        Ok(AbiDocument::new(
            self.input.platform.name.clone(),
            abi,
            host,
            self.origins,
        ))
    }

    fn machine(&mut self) -> Option<MachineType> {
        let chosen = match &self.spec.machine {
            Some(name) => match machine::resolve(&name.value) {
                Some(m) => self.spec_value(&Spanned::new(m, name.span)),
                None => {
                    let known: Vec<&str> = machine::names().collect();
                    self.problems.push(
                        Problem::new(
                            "vmc::spec::unknown-machine",
                            format!("unknown machine type `{}`", name.value),
                        )
                        .at(self.source(), name.span)
                        .label("unknown machine type")
                        .help(choices_help(&name.value, &known, "known machine types")),
                    );
                    return None;
                }
            },
            None => Sourced {
                value: machine::newest(),
                origin: Origin::Derived("the newest machine type (the spec names none)".to_string()),
                span: None,
            },
        };
        Some(self.record(Place::Top, "machine", chosen))
    }

    fn cpu(&mut self, m: &MachineType) -> Option<CpuAbi> {
        let count = match &self.spec.cpus {
            Some(c) => self.spec_value(c),
            None => self.machine_value(m.cpus, m),
        };
        if !(1..=MAX_CPUS).contains(&count.value) {
            self.problems.push(
                Problem::new(
                    "vmc::spec::range",
                    format!("`cpus` is {}; a VM has 1 to {MAX_CPUS} vCPUs", count.value),
                )
                .at(self.source(), count.span.unwrap_or(SourceSpan::from(0)))
                .label("out of range"),
            );
        }
        let count = self.record(Place::Cpu, "count", count);
        let model_name = match &self.spec.cpu_model {
            Some(c) => self.spec_value(c),
            None => self.machine_value(m.cpu_model.to_string(), m),
        };
        let platform = self.input.platform;
        let features: Vec<String> = if model_name.value == cpu::HOST_MODEL {
            match self.input.host_cpu_features.or(platform.cpu_features.as_ref()) {
                Some(have) => have.iter().cloned().collect(),
                None => {
                    let mut p = Problem::new(
                        "vmc::spec::host-cpu-model",
                        format!(
                            "`cpu-model \"host\"` takes a probed host's CPU features, but platform `{}` is a kernel platform that states none",
                            platform.name
                        ),
                    )
                    .help("compile on the host without --platform (vmc probes it), or name its probe file's platform (`vmc probe` output in a --platform-path directory)");
                    if let Some(span) = model_name.span {
                        p = p.at(self.source(), span).label("needs a probed platform");
                    }
                    self.problems.push(p);
                    return None;
                }
            }
        } else if let Some(model) = cpu::model(&model_name.value) {
            let mut features: Vec<&str> = cpu::expand(model);
            features.extend(m.cpu_baseline);
            features.sort_unstable();
            features.dedup();
            features.into_iter().map(str::to_string).collect()
        } else {
            let mut known: Vec<&str> = cpu::MODELS.iter().map(|m| m.name).collect();
            known.push(cpu::HOST_MODEL);
            self.problems.push(
                Problem::new(
                    "vmc::spec::unknown-cpu-model",
                    format!("unknown CPU model `{}`", model_name.value),
                )
                .at(self.source(), model_name.span.unwrap_or(SourceSpan::from(0)))
                .label("unknown CPU model")
                .help(choices_help(&model_name.value, &known, "known CPU models")),
            );
            return None;
        };
        if let Some(available) = &self.input.platform.cpu_features {
            let missing: Vec<&str> = features
                .iter()
                .filter(|f| !available.contains(*f))
                .map(String::as_str)
                .collect();
            if !missing.is_empty() {
                let mut p = Problem::new(
                    "vmc::platform::missing-cpu-features",
                    format!(
                        "CPU model `{}` needs {} that platform `{}` cannot give a guest: {}",
                        model_name.value,
                        if missing.len() == 1 { "a feature" } else { "features" },
                        self.input.platform.name,
                        missing.join(", ")
                    ),
                )
                .help("choose an older CPU model (`cpu-model \"x86-64-v2\"`), or a platform whose hosts have these features");
                if let Some(span) = model_name.span {
                    p = p.at(self.source(), span).label("needs features the platform lacks");
                }
                self.problems.push(p);
            }
        }
        let origin = model_name.origin.clone();
        let model_name = self.record(Place::Cpu, "model", model_name);
        self.origin(
            Place::Cpu,
            "features",
            Origin::Derived(format!(
                "CPU model {model_name} ({origin}) and the CPU baseline of machine type {}",
                m.name
            )),
        );
        self.origin(
            Place::Cpu,
            "migratable",
            Origin::Derived(format!("CPU model {model_name}: only `host` is not migratable")),
        );
        Some(CpuAbi {
            migratable: model_name != cpu::HOST_MODEL,
            model: model_name,
            count,
            features,
        })
    }

    fn memory(&mut self, m: &MachineType) -> Option<u64> {
        let memory = match &self.spec.memory {
            Some(c) => self.spec_value(c),
            None => self.machine_value(m.memory, m),
        };
        let why = if memory.value < MIN_MEMORY {
            Some(format!(
                "{} bytes is too little: a VM needs at least 2 MiB",
                memory.value
            ))
        } else if memory.value > MAX_MEMORY {
            Some(format!("{} bytes is more than vmc supports (1 TiB)", memory.value))
        } else if memory.value % MEMORY_GRANULE != 0 {
            Some(format!(
                "{} bytes is not a whole number of 8 KiB (QEMU's RAM granularity, so that a lowered command line gives the guest the same size)",
                memory.value
            ))
        } else {
            None
        };
        if let Some(why) = why {
            self.problems.push(
                Problem::new("vmc::spec::range", format!("`memory`: {why}"))
                    .at(self.source(), memory.span.unwrap_or(SourceSpan::from(0)))
                    .label("out of range")
                    .help("write a size such as \"512MiB\" or \"2GiB\""),
            );
            return None;
        }
        Some(self.record(Place::Top, "memory", memory))
    }

    /// One virtio-net device: every property from spec, machine type or platform, then
    /// dependency and capability checks.
    fn net(&mut self, index: usize, net: &NetSpec, m: &MachineType) -> Option<(NetDevice, String)> {
        let id = &net.id.value;
        let place = Place::Device(id);
        let Some((mmio_base, irq)) = m.mmio.place(index) else {
            self.problems.push(
                Problem::new(
                    "vmc::spec::too-many-devices",
                    format!(
                        "machine type {} has {} virtio-mmio slots; device `{id}` would be number {}",
                        m.name,
                        m.mmio.slots,
                        index + 1
                    ),
                )
                .at(self.source(), net.id.span)
                .label("no slot left"),
            );
            return None;
        };
        let placement = Origin::Derived(format!(
            "device order (device {} of machine type {})",
            index + 1,
            m.name
        ));
        self.origin(place, "mmio-base", placement.clone());
        self.origin(place, "irq", placement);
        self.origin(place, "kind", Origin::Derived("the `net` node".to_string()));
        for field in ["transport", "mmio-size"] {
            self.origin(place, field, Origin::MachineType(m.name.to_string()));
        }

        for (p, v) in &net.properties {
            if !m.net.iter().any(|(q, _)| q.name == p.name) {
                self.problems.push(
                    Problem::new(
                        "vmc::spec::not-in-machine-type",
                        format!(
                            "`{}` arrives with machine type {}; machine type {} does not have it",
                            p.name, p.since, m.name
                        ),
                    )
                    .at(self.source(), v.span)
                    .label(format!("not in {}", m.name))
                    .help(format!(
                        "use `machine \"{}\"` or newer, or remove `{}`",
                        p.since, p.name
                    )),
                );
            }
        }
        let platform = self.input.platform;
        let mut values: Vec<(&'static Property, Sourced<Value>)> = Vec::new();
        for (p, default) in &m.net {
            let set = net.properties.iter().find(|(sp, _)| sp.name == p.name);
            let sourced = match (set, default) {
                (Some((_, v)), _) => self.spec_value(v),
                (None, Default::Fixed(v)) => self.machine_value(*v, m),
                (None, Default::Platform) => Sourced {
                    value: Value::Bool(p.platform_default.is_some_and(|o| platform.has_offloads(o))),
                    origin: Origin::Platform(platform.name.clone()),
                    span: None,
                },
                (None, Default::Derived) => Sourced {
                    value: Value::Mac(derive_mac(&self.spec.name.value, id)),
                    origin: Origin::Derived("the VM name and device id".to_string()),
                    span: None,
                },
            };
            values.push((p, sourced));
        }

        self.check_support(net, &values);
        self.follow_dependencies(&mut values);
        self.check_dependencies(net, &values);
        self.check_platform(net, &values, m);

        let properties: Vec<(&'static Property, Value)> = values
            .into_iter()
            .map(|(p, s)| (p, self.record(place, p.name, s)))
            .collect();
        let device_features = schema::device_features(&properties);
        self.origin(
            place,
            "device-features",
            Origin::Derived("the device's properties (plus VERSION_1)".to_string()),
        );
        let tap = match &net.tap {
            Some(t) => {
                if let Some(why) = limits::interface_name_problem(&t.value) {
                    self.problems.push(
                        Problem::new(
                            "vmc::spec::tap",
                            format!("`{}` cannot be a TAP interface name: {why}", t.value),
                        )
                        .at(self.source(), t.span)
                        .label("invalid interface name")
                        .help("leave `tap` out to derive a name from the VM name and device id"),
                    );
                }
                t.value.clone()
            }
            None => derive_tap(&self.spec.name.value, id),
        };
        Some((
            NetDevice {
                id: id.clone(),
                mmio_base,
                mmio_size: m.mmio.slot_size,
                irq,
                properties,
                device_features,
            },
            tap,
        ))
    }

    /// Asking for a feature the runtime does not implement is an error.
    fn check_support(&mut self, net: &NetSpec, values: &[(&'static Property, Sourced<Value>)]) {
        for (p, s) in values {
            if let (Support::NotImplemented(why), true) = (p.support, s.value.is_on()) {
                let mut problem = Problem::new(
                    "vmc::spec::not-implemented",
                    format!("`{}` cannot be turned on: {why}", p.name),
                )
                .help(format!(
                    "remove `{}` from device `{}` (it stays off)",
                    p.name, net.id.value
                ));
                if let Some(span) = s.span {
                    problem = problem.at(self.source(), span).label("not implemented");
                }
                self.problems.push(problem);
            }
        }
    }

    /// Defaults whose requirements the spec turned off follow them off.
    fn follow_dependencies(&mut self, values: &mut [(&'static Property, Sourced<Value>)]) {
        loop {
            let mut changed = false;
            for i in 0..values.len() {
                let (p, s) = &values[i];
                if s.span.is_some() || !s.value.is_on() || !matches!(s.value, Value::Bool(_)) {
                    continue;
                }
                if let Some(missing) = unmet(p, values) {
                    let cause = values
                        .iter()
                        .find(|(q, _)| q.name == missing[0])
                        .map(|(_, s)| s.origin.to_string());
                    values[i].1 = Sourced {
                        value: Value::Bool(false),
                        origin: Origin::Derived(format!(
                            "`{}` being off ({}), which it needs",
                            missing.join("` or `"),
                            cause.unwrap_or_default()
                        )),
                        span: None,
                    };
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
    }

    /// An explicitly enabled feature whose requirement is off is an error.
    fn check_dependencies(&mut self, net: &NetSpec, values: &[(&'static Property, Sourced<Value>)]) {
        for (p, s) in values {
            if !s.value.is_on() {
                continue;
            }
            let Some(missing) = unmet(p, values) else {
                continue;
            };
            let span = s.span.unwrap_or(net.span);
            self.problems.push(
                Problem::new(
                    "vmc::spec::dependency",
                    format!(
                        "`{}` needs `{}`, which is off (virtio feature bit requirements)",
                        p.name,
                        missing.join("` or `")
                    ),
                )
                .at(self.source(), span)
                .label(format!("needs {}", missing.join(" or ")))
                .help(format!("set `{} #true`, or turn `{}` off", missing[0], p.name)),
            );
        }
    }

    /// Everything on must be possible on the platform; the platform never turns an
    /// explicit or machine-type value off.
    fn check_platform(&mut self, net: &NetSpec, values: &[(&'static Property, Sourced<Value>)], m: &MachineType) {
        let platform = self.input.platform;
        for (p, s) in values {
            if !s.value.is_on() || platform.has_offloads(p.tap_offloads) {
                continue;
            }
            let missing: Vec<_> = p
                .tap_offloads
                .iter()
                .filter(|o| !platform.tap_offloads.contains(o))
                .collect();
            let names = missing.iter().map(|o| o.name()).collect::<Vec<_>>().join("+");
            let flags = missing.iter().map(|o| o.flag()).collect::<Vec<_>>().join("|");
            let first = self.input.registry.first_builtin_with(p.tap_offloads);
            let since = first.map(|f| format!(", Linux {}+", f.kernel)).unwrap_or_default();
            let elsewhere = first
                .map(|f| format!("compile for a platform that has it (`{}` or newer)", f.name))
                .unwrap_or_else(|| "compile for a platform that has it".to_string());
            let (message, help) = match s.span {
                Some(_) => (
                    format!(
                        "`{}` needs TAP offload {names} ({flags}{since}); platform `{}` lacks it",
                        p.name, platform.name
                    ),
                    format!("{elsewhere}, or set `{} #false`", p.name),
                ),
                None => (
                    format!(
                        "machine type {} turns `{}` on, which needs TAP offload {names} ({flags}{since}); platform `{}` lacks it",
                        m.name, p.name, platform.name
                    ),
                    format!("set `{} #false` in device `{}`, or {elsewhere}", p.name, net.id.value),
                ),
            };
            self.problems.push(
                Problem::new("vmc::platform::missing-offload", message)
                    .at(self.source(), s.span.unwrap_or(net.span))
                    .label(format!("platform {} lacks {names}", platform.name))
                    .help(help),
            );
        }
    }

    fn unique_macs_and_taps(&mut self, devices: &[NetDevice], taps: &[(String, String)]) {
        for (i, d) in devices.iter().enumerate() {
            if let Some(other) = devices[..i].iter().find(|o| o.mac() == d.mac()) {
                let net = &self
                    .spec
                    .nets
                    .iter()
                    .find(|n| n.id.value == d.id)
                    .expect("device from spec");
                self.problems.push(
                    Problem::new(
                        "vmc::spec::duplicate-mac",
                        format!(
                            "devices `{}` and `{}` have the same MAC {}",
                            other.id,
                            d.id,
                            schema::format_mac(&d.mac())
                        ),
                    )
                    .at(self.source(), net.span)
                    .help("give each device its own `mac`, or leave it out to derive one"),
                );
            }
        }
        for (i, (id, tap)) in taps.iter().enumerate() {
            if let Some((other, _)) = taps[..i].iter().find(|(_, t)| t == tap) {
                let net = self
                    .spec
                    .nets
                    .iter()
                    .find(|n| &n.id.value == id)
                    .expect("device from spec");
                self.problems.push(
                    Problem::new(
                        "vmc::spec::duplicate-tap",
                        format!("devices `{other}` and `{id}` use the same TAP `{tap}`"),
                    )
                    .at(self.source(), net.tap.as_ref().map_or(net.span, |t| t.span))
                    .help("give each device a TAP of its own"),
                );
            }
        }
    }

    /// The host bindings, within what `run` and `lower` can carry out (see `limits`).
    fn host(&mut self, taps: Vec<(String, String)>) -> HostBindings {
        let boot = self.spec.boot.clone().unwrap_or_default();
        let mut path = |what: &str, p: Option<&Spanned<String>>| {
            let p = p?;
            let resolved = resolve_path(self.input.base_dir, &p.value);
            if let Some(why) = limits::path_problem(&p.value).or_else(|| limits::path_problem(&resolved)) {
                self.problems.push(
                    Problem::new("vmc::spec::path", format!("the {what} path cannot be used: {why}"))
                        .at(self.source(), p.span)
                        .label("invalid path"),
                );
            }
            Some(resolved)
        };
        let kernel = path("kernel", boot.kernel.as_ref());
        let initrd = path("initrd", boot.initrd.as_ref());
        if let Some(c) = &boot.cmdline {
            if let Some(why) = limits::cmdline_problem(&c.value) {
                self.problems.push(
                    Problem::new("vmc::spec::cmdline", format!("`cmdline` cannot be used: {why}"))
                        .at(self.source(), c.span)
                        .label("invalid command line")
                        .help("write the command line as one line; KDL escapes such as `\\n` put control characters in it"),
                );
            }
        }
        if kernel.is_none() {
            // Both boot protocols, and QEMU's -initrd and -append, need a kernel to hand
            // them to.
            for (what, value) in [("an initrd", &boot.initrd), ("a command line", &boot.cmdline)] {
                if let Some(v) = value {
                    self.problems.push(
                        Problem::new("vmc::spec::boot", format!("`boot` has {what} but no kernel"))
                            .at(self.source(), v.span)
                            .label("needs a kernel")
                            .help("add `kernel \"PATH\"` to `boot`, or remove this"),
                    );
                }
            }
        }
        HostBindings {
            name: self.spec.name.value.clone(),
            kernel,
            initrd,
            cmdline: boot.cmdline.map(|c| c.value),
            taps,
        }
    }

    /// The command line the guest gets (the spec's plus one `virtio_mmio.device=` per
    /// device) must fit the area the runtime reserves for it.
    fn check_kernel_cmdline(&mut self, abi: &Abi, host: &HostBindings) {
        let len = limits::kernel_cmdline(abi, host).len() + 1;
        if len > limits::MAX_KERNEL_CMDLINE {
            let mut p = Problem::new(
                "vmc::spec::cmdline",
                format!(
                    "the kernel command line would be {len} bytes (with one `virtio_mmio.device=` per device and the final NUL); vmc passes at most {}",
                    limits::MAX_KERNEL_CMDLINE
                ),
            )
            .help("shorten `cmdline`");
            if let Some(c) = self.spec.boot.as_ref().and_then(|b| b.cmdline.as_ref()) {
                p = p.at(self.source(), c.span).label("too long");
            }
            self.problems.push(p);
        }
    }
}

/// The first requirement group of `p` with no member on, if any.
fn unmet(p: &Property, values: &[(&'static Property, Sourced<Value>)]) -> Option<&'static [&'static str]> {
    p.requires.iter().copied().find(|group| {
        !group
            .iter()
            .any(|name| values.iter().any(|(q, s)| q.name == *name && s.value.is_on()))
    })
}

/// A locally administered unicast MAC, stable for a VM name and device id.
pub fn derive_mac(vm: &str, device: &str) -> [u8; 6] {
    let h = blake3::hash(format!("vmc mac\0{vm}\0{device}").as_bytes());
    let b = h.as_bytes();
    [(b[0] & 0xfc) | 0x02, b[1], b[2], b[3], b[4], b[5]]
}

/// A TAP name (11 characters) stable for a VM name and device id.
pub fn derive_tap(vm: &str, device: &str) -> String {
    let h = blake3::hash(format!("vmc tap\0{vm}\0{device}").as_bytes());
    format!("vmc{}", &h.to_hex()[..8])
}

/// Joins a spec-relative path onto the spec's directory, lexically (no file system).
fn resolve_path(base: Option<&Path>, path: &str) -> String {
    let joined: PathBuf = match base {
        Some(base) if Path::new(path).is_relative() => base.join(path),
        _ => PathBuf::from(path),
    };
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_macs_are_unicast_locally_administered_and_stable() {
        let a = derive_mac("web-1", "net0");
        assert_eq!(a[0] & 0x01, 0);
        assert_eq!(a[0] & 0x02, 0x02);
        assert_eq!(a, derive_mac("web-1", "net0"));
        assert_ne!(a, derive_mac("web-1", "net1"));
        assert_ne!(a, derive_mac("web-2", "net0"));
    }

    #[test]
    fn paths_join_lexically() {
        let base = Path::new("/srv/vms");
        assert_eq!(resolve_path(Some(base), "guest/vmlinuz"), "/srv/vms/guest/vmlinuz");
        assert_eq!(resolve_path(Some(base), "../k/./vmlinuz"), "/srv/k/vmlinuz");
        assert_eq!(resolve_path(Some(base), "/boot/vmlinuz"), "/boot/vmlinuz");
        assert_eq!(resolve_path(None, "k"), "k");
        assert!(derive_tap("web-1", "net0").len() <= 15);
    }
}
