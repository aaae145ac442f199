//! The ABI document (`*.abi`): the compiler's output, the runtime's input.
//!
//! * `abi`: every guest-visible value, explicit. Hashed.
//! * `requires`: the host capabilities those values need; derived from `abi`, and
//!   re-derived and compared on every read.
//! * `host`: host-local bindings (VM name, TAP names, boot paths, kernel command line).
//! * `origins`: where each `abi` value came from, for `explain` and `diff`.
//! * `platform`: the platform compiled for (recorded, not hashed).
//! * `hash`: see [`crate::canonical`].
//!
//! This file is the model; [`crate::writer`] writes it (KDL and JSON), [`crate::reader`]
//! reads it back (the one reader every command uses), both driven by [`Abi::fields`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{json, Map, Value as Json};

use crate::kdlread::quote;
use crate::platform::TapOffload;
use crate::schema::{self, format_mac, Property, Value};

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

    /// The value of the schema row `property` (such as [`schema::HOST_MTU`]).
    pub fn value(&self, property: &Property) -> Option<Value> {
        self.properties.iter().find(|(p, _)| *p == property).map(|(_, v)| *v)
    }

    pub fn mac(&self) -> [u8; 6] {
        match self.value(schema::MAC) {
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

impl AbiDocument {
    /// Every guest-visible value with its place and where it came from, in document
    /// order: what `explain` and `diff` show.
    pub fn sourced_fields(&self) -> Vec<(Field<'_>, Option<&Origin>)> {
        self.abi
            .fields()
            .into_iter()
            .map(|f| {
                let origin = self.origins.get(&f.path());
                (f, origin)
            })
            .collect()
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

    /// Every guest-visible value with its place, in document order: the one field list
    /// the writer, the reader, `explain` and `diff` share.
    pub fn fields(&self) -> Vec<Field<'_>> {
        let mut out = vec![
            Field::new(Place::Top, "machine", json!(self.machine)),
            Field::new(Place::Cpu, "model", json!(self.cpu.model)),
            Field::new(Place::Cpu, "count", json!(self.cpu.count)),
            Field::new(Place::Cpu, "migratable", json!(self.cpu.migratable)),
            Field::new(Place::Cpu, "features", json!(self.cpu.features)),
            Field::new(Place::Top, "memory", json!(self.memory)),
        ];
        for d in &self.devices {
            out.extend(
                d.fields()
                    .into_iter()
                    .map(|(name, value)| Field::new(Place::Device(&d.id), name, value)),
            );
        }
        out
    }

    /// Every guest-visible value by path (`machine`, `cpu.count`,
    /// `devices.net0.host-uso`, …), in document order.
    pub fn values(&self) -> Vec<(String, Json)> {
        self.fields().into_iter().map(|f| (f.path(), f.value)).collect()
    }
}

/// Where a value sits in the `abi` block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place<'a> {
    /// Directly in `abi`.
    Top,
    /// In `abi.cpu`.
    Cpu,
    /// In the `device` block with this id.
    Device(&'a str),
}

impl Place<'_> {
    /// The path of the value `name` here: `memory`, `cpu.count`, `devices.net0.irq`.
    pub fn path(&self, name: &str) -> String {
        match self {
            Place::Top => name.to_string(),
            Place::Cpu => format!("cpu.{name}"),
            Place::Device(id) => format!("devices.{id}.{name}"),
        }
    }
}

/// One guest-visible value.
#[derive(Debug, Clone, PartialEq)]
pub struct Field<'a> {
    pub place: Place<'a>,
    pub name: &'static str,
    pub value: Json,
}

impl<'a> Field<'a> {
    fn new(place: Place<'a>, name: &'static str, value: Json) -> Self {
        Field { place, name, value }
    }

    pub fn path(&self) -> String {
        self.place.path(self.name)
    }
}

/// Fields written in hexadecimal (addresses and sizes), in documents and messages.
pub const HEX_FIELDS: &[&str] = &["mmio-base", "mmio-size"];

/// Device fields that are not schema properties, in document order.
pub const DEVICE_FIELDS: &[&str] = &["kind", "transport", "mmio-base", "mmio-size", "irq"];

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

/// A field's value as documents show it: KDL literal syntax, addresses in hexadecimal.
pub fn show_field(name: &str, v: &Json) -> String {
    match v.as_u64() {
        Some(n) if HEX_FIELDS.contains(&name) => format!("{n:#x}"),
        _ => show_json(v),
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
