//! Machine types: versioned defaults for every property, invariant with respect to the
//! host. A released machine type never changes (each one's full default table is
//! snapshot-tested); a newer one is a delta on the one before.

use crate::schema::{self, Property, Value};

/// How virtio-mmio devices are placed, in the layout of QEMU's `microvm` without ACPI,
/// so that a lowered QEMU command line gives the guest the very same addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioLayout {
    /// Slot 0's base address.
    pub base: u64,
    /// Size (and stride) of one slot.
    pub slot_size: u64,
    pub slots: u32,
    /// Slot 0's IRQ; slot `i` uses `first_irq + i`.
    pub first_irq: u32,
}

impl MmioLayout {
    /// The base and IRQ of the `index`th device: slots are filled from the top, as
    /// QEMU's microvm does.
    pub fn place(&self, index: usize) -> Option<(u64, u32)> {
        let index = u32::try_from(index).ok()?;
        let slot = self.slots.checked_sub(1)?.checked_sub(index)?;
        Some((self.base + u64::from(slot) * self.slot_size, self.first_irq + slot))
    }
}

/// A released machine type, as written: a delta on its base.
#[derive(Debug)]
pub struct MachineDelta {
    pub name: &'static str,
    pub base: Option<&'static str>,
    pub doc: &'static str,
    pub cpus: Option<u64>,
    pub memory: Option<u64>,
    pub cpu_model: Option<&'static str>,
    /// Architectural CPU features every guest gets besides its model's.
    pub cpu_baseline: Option<&'static [&'static str]>,
    pub mmio: Option<MmioLayout>,
    /// Whether the firmware offers an Intel MultiProcessor Specification table (the
    /// processors, the I/O APIC and the ISA interrupts' routing), as QEMU's microvm
    /// firmware does.
    pub mp_table: Option<bool>,
    /// virtio-net defaults that differ from the base (or from the schema's, for the first).
    pub net: &'static [(&'static str, Value)],
}

const MIB: u64 = 1 << 20;

/// Every machine type, oldest first. Never edit a released entry: add a new one.
pub static MACHINE_TYPES: &[MachineDelta] = &[
    MachineDelta {
        name: "microvm-1.0",
        base: None,
        doc: "the first vmc machine type: virtio-mmio devices in QEMU microvm's layout",
        cpus: Some(1),
        memory: Some(256 * MIB),
        cpu_model: Some("x86-64-v2"),
        cpu_baseline: Some(crate::cpu::BASELINE),
        mmio: Some(MmioLayout {
            base: 0xfeb0_0000,
            slot_size: 0x200,
            slots: 8,
            first_irq: 5,
        }),
        mp_table: Some(false),
        net: &[],
    },
    MachineDelta {
        name: "microvm-1.1",
        base: Some("microvm-1.0"),
        doc: "microvm-1.0 with a 1024-entry receive queue (fewer drops under bursts)",
        cpus: None,
        memory: None,
        cpu_model: None,
        cpu_baseline: None,
        mmio: None,
        mp_table: None,
        net: &[("rx-queue-size", Value::Integer(1024))],
    },
    MachineDelta {
        name: "microvm-1.2",
        base: Some("microvm-1.1"),
        doc: "microvm-1.1 with an MP table (Linux finds its CPUs and interrupt routing at \
              once instead of searching the BIOS area)",
        cpus: None,
        memory: None,
        cpu_model: None,
        cpu_baseline: None,
        mmio: None,
        mp_table: Some(true),
        net: &[],
    },
];

/// How a property's default is decided in a machine type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Default {
    /// Fixed by the machine type.
    Fixed(Value),
    /// Decided by the platform (see the schema's `platform_default`).
    Platform,
    /// Derived per VM (the MAC, from the VM name and device id).
    Derived,
}

/// A machine type with its deltas applied.
#[derive(Debug, Clone)]
pub struct MachineType {
    pub name: &'static str,
    pub doc: &'static str,
    pub cpus: u64,
    pub memory: u64,
    pub cpu_model: &'static str,
    pub cpu_baseline: &'static [&'static str],
    pub mmio: MmioLayout,
    /// The firmware offers an MP table.
    pub mp_table: bool,
    /// One entry per schema row, in schema order.
    pub net: Vec<(&'static Property, Default)>,
}

pub fn names() -> impl Iterator<Item = &'static str> {
    MACHINE_TYPES.iter().map(|m| m.name)
}

pub fn newest() -> MachineType {
    let last = MACHINE_TYPES.last().expect("at least one machine type");
    resolve(last.name).expect("the newest machine type resolves (tested)")
}

/// The machine type called `name`, with every delta down to the first applied.
pub fn resolve(name: &str) -> Option<MachineType> {
    resolve_in(MACHINE_TYPES, schema::VIRTIO_NET, name)
}

/// The machine type called `name` among `machines`, whose devices have the rows of
/// `schema` introduced by it or an earlier machine type (`Property::since`).
pub fn resolve_in(machines: &[MachineDelta], schema: &'static [Property], name: &str) -> Option<MachineType> {
    let delta = machines.iter().find(|m| m.name == name)?;
    let mut resolved = match delta.base {
        Some(base) => resolve_in(machines, schema, base)?,
        None => MachineType {
            name: delta.name,
            doc: delta.doc,
            cpus: delta.cpus?,
            memory: delta.memory?,
            cpu_model: delta.cpu_model?,
            cpu_baseline: delta.cpu_baseline?,
            mmio: delta.mmio?,
            mp_table: delta.mp_table?,
            net: Vec::new(),
        },
    };
    // The rows this machine type introduces join with their first default (a delta may
    // then change it); the base's rows are there already.
    resolved
        .net
        .extend(schema.iter().filter(|p| p.since == delta.name).map(|p| {
            let default = match (p.platform_default, p.default) {
                (Some(_), _) => Default::Platform,
                (None, Some(v)) => Default::Fixed(v),
                (None, None) => Default::Derived,
            };
            (p, default)
        }));
    // Schema order, so documents list properties the same way in every machine type.
    resolved
        .net
        .sort_by_key(|(p, _)| schema.iter().position(|q| q.name == p.name));
    resolved.name = delta.name;
    resolved.doc = delta.doc;
    resolved.cpus = delta.cpus.unwrap_or(resolved.cpus);
    resolved.memory = delta.memory.unwrap_or(resolved.memory);
    resolved.cpu_model = delta.cpu_model.unwrap_or(resolved.cpu_model);
    resolved.cpu_baseline = delta.cpu_baseline.unwrap_or(resolved.cpu_baseline);
    resolved.mmio = delta.mmio.unwrap_or(resolved.mmio);
    resolved.mp_table = delta.mp_table.unwrap_or(resolved.mp_table);
    for (name, value) in delta.net {
        let slot = resolved.net.iter_mut().find(|(p, _)| p.name == *name)?;
        slot.1 = Default::Fixed(*value);
    }
    Some(resolved)
}

/// The full default table of a machine type, one line per value, for snapshots and
/// `vmc machines`.
pub fn default_table(m: &MachineType) -> String {
    let mut out = format!("machine {}\n", m.name);
    out += &format!("cpus {}\ncpu-model {}\nmemory {}\n", m.cpus, m.cpu_model, m.memory);
    out += &format!("cpu-baseline {}\n", m.cpu_baseline.join(" "));
    out += &format!(
        "virtio-mmio slots={} base={:#x} slot-size={:#x} first-irq={}\n",
        m.mmio.slots, m.mmio.base, m.mmio.slot_size, m.mmio.first_irq
    );
    // Only where offered, so the tables of the machine types before it read as released.
    if m.mp_table {
        out += "firmware mp-table\n";
    }
    for (p, d) in &m.net {
        let shown = match d {
            Default::Fixed(v) => v.to_string(),
            Default::Platform => "(platform)".to_string(),
            Default::Derived => "(derived)".to_string(),
        };
        out += &format!("virtio-net {} {}\n", p.name, shown);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_machine_type_resolves_and_deltas_name_real_properties() {
        for m in MACHINE_TYPES {
            let r = resolve(m.name).unwrap_or_else(|| panic!("{} does not resolve", m.name));
            for (name, value) in m.net {
                let p = schema::property(name).unwrap();
                assert_eq!(p.kind.check(value), Ok(()));
                assert!(p.platform_default.is_none(), "{name} is platform-dependent");
            }
            assert!(crate::cpu::model(r.cpu_model).is_some());
        }
    }

    #[test]
    fn placement_fills_slots_from_the_top() {
        let m = resolve("microvm-1.0").unwrap();
        assert_eq!(m.mmio.place(0), Some((0xfeb0_0e00, 12)));
        assert_eq!(m.mmio.place(1), Some((0xfeb0_0c00, 11)));
        assert_eq!(m.mmio.place(7), Some((0xfeb0_0000, 5)));
        assert_eq!(m.mmio.place(8), None);
    }

    #[test]
    fn microvm_1_1_changes_the_receive_queue_only() {
        let a = resolve("microvm-1.0").unwrap();
        let b = resolve("microvm-1.1").unwrap();
        let changed: Vec<_> = a
            .net
            .iter()
            .zip(&b.net)
            .filter(|(x, y)| x.1 != y.1)
            .map(|(x, _)| x.0.name)
            .collect();
        assert_eq!(changed, ["rx-queue-size"]);
    }

    #[test]
    fn microvm_1_2_adds_the_mp_table_only() {
        let b = resolve("microvm-1.1").unwrap();
        let c = resolve("microvm-1.2").unwrap();
        assert!(!resolve("microvm-1.0").unwrap().mp_table && !b.mp_table && c.mp_table);
        let without = default_table(&MachineType {
            name: b.name,
            mp_table: false,
            ..c.clone()
        });
        assert_eq!(without, default_table(&b), "nothing else differs");
        assert_eq!(newest().name, "microvm-1.2");
    }

    #[test]
    fn every_property_belongs_to_a_machine_type() {
        let newest = newest();
        for p in schema::VIRTIO_NET {
            assert!(
                names().any(|m| m == p.since),
                "{} names unknown machine type {}",
                p.name,
                p.since
            );
            assert!(newest.net.iter().any(|(q, _)| q.name == p.name), "{}", p.name);
        }
    }

    /// What adding a property looks like: a row with `.since("microvm-9.0")` and a
    /// machine type of that name. The released machine types keep exactly their table.
    #[test]
    fn a_new_property_arrives_only_with_its_machine_type() {
        let mut rows: Vec<Property> = schema::VIRTIO_NET.to_vec();
        rows.push(schema::VIRTIO_NET[1].clone().since("microvm-9.0"));
        let last = rows.len() - 1;
        rows[last].name = "guest-future";
        let rows: &'static [Property] = Box::leak(rows.into_boxed_slice());
        let mut machines: Vec<MachineDelta> = Vec::new();
        for m in MACHINE_TYPES {
            machines.push(MachineDelta { ..*m });
        }
        machines.push(MachineDelta {
            name: "microvm-9.0",
            base: Some("microvm-1.1"),
            doc: "a machine type of the future",
            cpus: None,
            memory: None,
            cpu_model: None,
            cpu_baseline: None,
            mmio: None,
            mp_table: None,
            net: &[],
        });
        for released in names() {
            let before = resolve(released).unwrap();
            let after = resolve_in(&machines, rows, released).unwrap();
            assert_eq!(default_table(&before), default_table(&after), "{released} changed");
        }
        let future = resolve_in(&machines, rows, "microvm-9.0").unwrap();
        assert_eq!(future.net.len(), schema::VIRTIO_NET.len() + 1);
        assert_eq!(future.net.last().map(|(p, _)| p.name), Some("guest-future"));
    }
}
