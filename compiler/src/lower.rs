//! Lowering an ABI document to the equivalent QEMU 10 command line.
//!
//! "The command line is the ABI": every guest-visible choice QEMU would otherwise make
//! by default is written out, so that a newer QEMU with other defaults still gives the
//! guest the same machine, and so that what QEMU offers can be compared bit for bit with
//! the document (tests/qemu.rs does that through QMP).
//!
//! What is pinned, and why:
//!
//! * Machine: `microvm` without ACPI, whose virtio-mmio layout vmc's machine types copy
//!   (8 slots of 512 bytes from `0xfeb00000`, IRQ 5 + slot). The legacy devices vmc's
//!   runtime has are on (in-kernel PIC and PIT, the COM1 UART), the ones it lacks are off
//!   (RTC, PCIe, USB, second IOAPIC, SMM, graphics). The firmware's option ROMs stay on
//!   (the configuration measured to boot a PVH kernel); the kernel command line gets one
//!   `virtio_mmio.device=512@<base>:<irq>` per device, which is how a Linux guest finds
//!   them. `microvm` has no versioned variants, so these options are the only pin.
//! * Accelerator: KVM with the full in-kernel irqchip (vmc's runtime uses
//!   `KVM_CREATE_IRQCHIP`; QEMU's microvm default is the split irqchip, whose userspace
//!   IOAPIC reports a different version).
//! * CPU: `qemu64-v1` (a versioned model, so a later QEMU cannot move it) with every
//!   feature vmc knows (`cpu::FEATURES`) explicitly `+` or `-` as the ABI says, and
//!   `enforce`: QEMU refuses to start rather than drop a feature the host lacks. CPUID
//!   bits vmc does not name are those of `qemu64-v1` under KVM.
//! * Topology: one socket of `count` cores, one thread each.
//! * Devices: each virtio-net device on the virtio-mmio bus of its slot
//!   (`bus=virtio-mmio-bus.N`, which microvm maps at `0xfeb00000 + N * 0x200`, IRQ
//!   `5 + N`), with every schema property explicit, plus the feature properties QEMU has
//!   that vmc's schema lacks, set to what vmc offers (off). The transports are modern
//!   only (`force-legacy=false`), so QEMU adds VIRTIO_F_VERSION_1 as vmc does.
//! * TAP: `vnet_hdr=on` (QEMU fails instead of silently dropping every offload when the
//!   TAP has no virtio-net header), `vhost=off` (vmc's device model is in userspace).
//!   QEMU 10 still clears the UFO and USO bits by itself when the TAP cannot do them;
//!   `vmc check` refuses such a host first, and the QEMU tests measure the offered bits.
//!
//! Pure: no I/O. Paths are passed through as the document holds them.

use crate::cpu;
use crate::diagnostic::Problem;
use crate::document::{AbiDocument, NetDevice};
use crate::machine::{self, MmioLayout};
use crate::schema::{format_mac, Value};

/// The QEMU binary the command line is for.
pub const QEMU_BINARY: &str = "qemu-system-x86_64";

/// QEMU's microvm virtio-mmio layout without ACPI (hw/i386/microvm.c: 8 transports of
/// 512 bytes from `VIRTIO_MMIO_BASE`, IRQs from 5).
pub const QEMU_MICROVM_MMIO: MmioLayout = MmioLayout {
    base: 0xfeb0_0000,
    slot_size: 0x200,
    slots: 8,
    first_irq: 5,
};

/// The `-M` value. See the module documentation for why each option is set.
pub const MACHINE: &str = "microvm,acpi=off,pic=on,pit=on,rtc=off,isa-serial=on,pcie=off,ioapic2=off,\
usb=off,smm=off,graphics=off,x-option-roms=on,auto-kernel-cmdline=on";

/// The `-accel` value.
pub const ACCEL: &str = "kvm,kernel-irqchip=on";

/// The QEMU CPU model the ABI's features are applied to.
pub const CPU_BASE_MODEL: &str = "qemu64-v1";

/// The debug-exit port vmc's runtime gives every VM (runtime `devices::debug_exit`).
pub const DEBUG_EXIT: &str = "isa-debug-exit,iobase=0xf4,iosize=0x1";

/// Feature properties of QEMU 10's `virtio-net-device` that vmc's schema has no row for,
/// each with the value that offers what vmc offers (nothing). Without them QEMU's
/// defaults would decide.
pub const QEMU_ONLY_FEATURES: &[(&str, &str)] = &[
    // VIRTIO_F_ACCESS_PLATFORM (33)
    ("iommu_platform", "off"),
    // VIRTIO_F_IN_ORDER (35)
    ("in_order", "off"),
    // VIRTIO_NET_F_RSC_EXT (61)
    ("guest_rsc_ext", "off"),
    // VIRTIO_NET_F_STANDBY (62)
    ("failover", "off"),
];

/// The largest transmit queue QEMU gives a device without vhost-user; it silently caps
/// larger values (hw/net/virtio-net.c).
const QEMU_MAX_TX_QUEUE: u64 = 256;

/// QEMU rounds `-m` up to a multiple of this (the compiler refuses any other size).
const QEMU_RAM_ALIGN: u64 = crate::limits::MEMORY_GRANULE;

fn problem(code: &'static str, message: impl Into<String>) -> Problem {
    Problem::new(code, message)
}

/// The QEMU 10 argument list (without the binary name) that gives the guest exactly the
/// document's ABI, with its host bindings (TAP names, kernel, initrd, command line).
pub fn qemu(doc: &AbiDocument) -> Result<Vec<String>, Problem> {
    let abi = &doc.abi;
    let mut args: Vec<String> = Vec::new();
    let mut push = |a: &str, b: String| {
        args.push(a.to_string());
        args.push(b);
    };

    check_machine(&abi.machine)?;
    push("-M", MACHINE.to_string());
    push("-accel", ACCEL.to_string());
    push("-global", "virtio-mmio.force-legacy=false".to_string());
    push("-m", memory(abi.memory)?);
    push("-smp", smp(abi.cpu.count)?);
    push("-cpu", cpu_flags(&abi.cpu.features)?);
    args.extend(["-nodefaults", "-no-user-config"].map(String::from));
    let mut push = |a: &str, b: String| {
        args.push(a.to_string());
        args.push(b);
    };
    push("-display", "none".to_string());
    push("-serial", "stdio".to_string());
    push("-device", DEBUG_EXIT.to_string());

    match (&doc.host.kernel, &doc.host.initrd, &doc.host.cmdline) {
        (Some(kernel), initrd, cmdline) => {
            push("-kernel", kernel.clone());
            if let Some(initrd) = initrd {
                push("-initrd", initrd.clone());
            }
            if let Some(cmdline) = cmdline {
                push("-append", cmdline.clone());
            }
        }
        (None, None, None) => {}
        (None, initrd, _) => {
            let what = if initrd.is_some() {
                "an initrd"
            } else {
                "a kernel command line"
            };
            return Err(problem(
                "vmc::lower::boot",
                format!("the document has {what} but no kernel; QEMU accepts -initrd and -append only with -kernel"),
            )
            .help("add `kernel` to the spec's `boot` node, or remove the initrd and command line"));
        }
    }

    // A device id is not guest-visible, so ids QEMU cannot take are replaced, all of them
    // at once so that a replacement never meets a device's own id: `vmc-netN`, by slot.
    let ids_as_written = abi.devices.iter().all(|d| qemu_id_wellformed(&d.id));
    let mut used_slots: Vec<(u32, &str)> = Vec::new();
    for device in &abi.devices {
        let slot = slot_of(device)?;
        if let Some((_, other)) = used_slots.iter().find(|(s, _)| *s == slot) {
            return Err(problem(
                "vmc::lower::placement",
                format!("devices `{other}` and `{}` are both at MMIO base {:#x}; QEMU gives each virtio-mmio slot one device", device.id, device.mmio_base),
            ));
        }
        used_slots.push((slot, &device.id));
        let tap = doc.host.tap(&device.id).ok_or_else(|| {
            problem(
                "vmc::lower::tap",
                format!(
                    "device `{}` has no TAP interface in the document's `host` section",
                    device.id
                ),
            )
            .help("compile the spec again: every device gets a TAP name")
        })?;
        let id = if ids_as_written {
            device.id.clone()
        } else {
            format!("vmc-net{slot}")
        };
        let id = id.as_str();
        check_option_value(&format!("the TAP name of device `{}`", device.id), tap)?;
        push(
            "-netdev",
            format!("tap,id={id},ifname={tap},script=no,downscript=no,vhost=off,vnet_hdr=on"),
        );
        push("-device", net_device(device, id, slot)?);
    }
    Ok(args)
}

/// `args` as one POSIX shell command line, starting with the QEMU binary. Every word that
/// is not made only of characters the shell never interprets is single-quoted.
pub fn shell_line(args: &[String]) -> String {
    std::iter::once(QEMU_BINARY.to_string())
        .chain(args.iter().map(|a| shell_quote(a)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=,+@%".contains(&b));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

fn check_machine(name: &str) -> Result<(), Problem> {
    let m = machine::resolve(name).ok_or_else(|| {
        problem("vmc::lower::machine", format!("unknown machine type `{name}`"))
            .help("compile the spec again with this vmc")
    })?;
    if m.mmio != QEMU_MICROVM_MMIO {
        return Err(problem(
            "vmc::lower::machine",
            format!(
                "machine type `{name}` places virtio-mmio devices at {:#x} (+{:#x} per slot, {} slots, IRQ {}+), \
                 which QEMU's microvm cannot: it has {} slots at {:#x} (+{:#x}), IRQ {}+",
                m.mmio.base,
                m.mmio.slot_size,
                m.mmio.slots,
                m.mmio.first_irq,
                QEMU_MICROVM_MMIO.slots,
                QEMU_MICROVM_MMIO.base,
                QEMU_MICROVM_MMIO.slot_size,
                QEMU_MICROVM_MMIO.first_irq
            ),
        ));
    }
    Ok(())
}

/// `-m`: exact, in the largest binary unit that divides it.
fn memory(bytes: u64) -> Result<String, Problem> {
    if bytes == 0 || !bytes.is_multiple_of(QEMU_RAM_ALIGN) {
        return Err(problem(
            "vmc::lower::memory",
            format!("memory of {bytes} bytes is not a multiple of {QEMU_RAM_ALIGN}; QEMU would round it up"),
        )
        .help(format!(
            "give the spec a memory size that is a multiple of {} KiB",
            QEMU_RAM_ALIGN / 1024
        )));
    }
    for (shift, unit) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
        if bytes.is_multiple_of(1u64 << shift) {
            return Ok(format!("{}{unit}", bytes >> shift));
        }
    }
    Ok(format!("{bytes}B"))
}

/// QEMU 10's `x86_64` machines take at most this many vCPUs (microvm's `max_cpus`).
const QEMU_MICROVM_MAX_CPUS: u64 = 288;

fn smp(count: u64) -> Result<String, Problem> {
    if count == 0 || count > QEMU_MICROVM_MAX_CPUS {
        return Err(problem(
            "vmc::lower::cpus",
            format!("{count} vCPUs: QEMU's microvm takes 1 to {QEMU_MICROVM_MAX_CPUS}"),
        ));
    }
    Ok(format!(
        "cpus={count},maxcpus={count},sockets=1,dies=1,cores={count},threads=1"
    ))
}

/// `-cpu`: the base model, then every feature vmc knows as `+name` or `-name`, then
/// `enforce`.
fn cpu_flags(features: &[String]) -> Result<String, Problem> {
    if let Some(unknown) = features.iter().find(|f| cpu::feature(f).is_none()) {
        return Err(problem(
            "vmc::lower::cpu",
            format!("CPU feature `{unknown}` has no QEMU flag known to this vmc"),
        ));
    }
    let mut out = String::from(CPU_BASE_MODEL);
    for f in cpu::FEATURES {
        let sign = if features.iter().any(|name| name == f.name) {
            '+'
        } else {
            '-'
        };
        out.push(',');
        out.push(sign);
        out.push_str(f.qemu);
    }
    out.push_str(",enforce");
    Ok(out)
}

/// The microvm slot a device's placement is, or why QEMU cannot place it there.
fn slot_of(device: &NetDevice) -> Result<u32, Problem> {
    let layout = QEMU_MICROVM_MMIO;
    let fail = |why: String| {
        Err(problem(
            "vmc::lower::placement",
            format!(
                "device `{}` is at MMIO base {:#x} (size {:#x}, IRQ {}), which QEMU's microvm cannot give it: {why}",
                device.id, device.mmio_base, device.mmio_size, device.irq
            ),
        )
        .help(format!(
            "microvm has {} virtio-mmio slots at {:#x} + N * {:#x}, IRQ {} + N",
            layout.slots, layout.base, layout.slot_size, layout.first_irq
        )))
    };
    let offset = match device.mmio_base.checked_sub(layout.base) {
        Some(o) if o.is_multiple_of(layout.slot_size) && o / layout.slot_size < u64::from(layout.slots) => o,
        _ => return fail("no slot starts there".to_string()),
    };
    let slot = (offset / layout.slot_size) as u32;
    if device.mmio_size != layout.slot_size {
        return fail(format!("its slots are {:#x} bytes", layout.slot_size));
    }
    if device.irq != layout.first_irq + slot {
        return fail(format!("slot {slot} uses IRQ {}", layout.first_irq + slot));
    }
    Ok(slot)
}

/// A QEMU id: a letter, then letters, digits, `-`, `.` or `_` (QEMU's `id_wellformed`).
fn qemu_id_wellformed(id: &str) -> bool {
    let mut bytes = id.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

/// Option values are comma-separated: a value with a comma would be split.
fn check_option_value(what: &str, value: &str) -> Result<(), Problem> {
    if value.is_empty() || value.contains(',') {
        return Err(problem(
            "vmc::lower::value",
            format!("{what} (`{value}`) cannot be written in a QEMU option list"),
        ));
    }
    Ok(())
}

fn net_device(device: &NetDevice, id: &str, slot: u32) -> Result<String, Problem> {
    let mut out = format!("virtio-net-device,id={id},netdev={id},bus=virtio-mmio-bus.{slot}");
    for (p, v) in &device.properties {
        let value = match v {
            Value::Bool(b) => (if *b { "on" } else { "off" }).to_string(),
            Value::Integer(n) => {
                if p.name == "tx-queue-size" && *n > QEMU_MAX_TX_QUEUE {
                    return Err(problem(
                        "vmc::lower::value",
                        format!(
                            "device `{}` has tx-queue-size {n}; QEMU caps a TAP device's transmit queue at {QEMU_MAX_TX_QUEUE}",
                            device.id
                        ),
                    ));
                }
                n.to_string()
            }
            Value::Mac(m) => format_mac(m),
        };
        out.push_str(&format!(",{}={value}", p.qemu));
    }
    for (name, value) in QEMU_ONLY_FEATURES {
        out.push_str(&format!(",{name}={value}"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::{Abi, CpuAbi, HostBindings};
    use crate::schema::{self, VIRTIO_NET};
    use std::collections::BTreeMap;

    fn device(id: &str, index: usize, overrides: &[(&str, Value)]) -> NetDevice {
        let (mmio_base, irq) = QEMU_MICROVM_MMIO.place(index).unwrap();
        let properties: Vec<_> = VIRTIO_NET
            .iter()
            .map(|p| {
                let v = overrides
                    .iter()
                    .find(|(n, _)| *n == p.name)
                    .map(|(_, v)| *v)
                    .or(p.default)
                    .unwrap_or(match p.kind {
                        schema::ValueKind::Mac => Value::Mac([0x52, 0x54, 0, 0, 0, index as u8 + 1]),
                        _ => Value::Bool(true),
                    });
                (p, v)
            })
            .collect();
        NetDevice {
            id: id.to_string(),
            mmio_base,
            mmio_size: 0x200,
            irq,
            device_features: schema::device_features(&properties),
            properties,
        }
    }

    fn doc(devices: Vec<NetDevice>) -> AbiDocument {
        let taps = devices
            .iter()
            .map(|d| (d.id.clone(), format!("tap-{}", d.id)))
            .collect();
        AbiDocument::new(
            "linux-6.9".to_string(),
            Abi {
                machine: "microvm-1.0".to_string(),
                cpu: CpuAbi {
                    model: "x86-64-v2".to_string(),
                    count: 2,
                    migratable: true,
                    features: cpu::expand(cpu::model("x86-64-v2").unwrap())
                        .iter()
                        .map(|s| s.to_string())
                        .collect(),
                },
                memory: 512 << 20,
                devices,
            },
            HostBindings {
                name: "web-1".to_string(),
                kernel: Some("/boot/vm linuz".to_string()),
                initrd: None,
                cmdline: Some("console=ttyS0".to_string()),
                taps,
            },
            BTreeMap::new(),
        )
    }

    fn value_of<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn every_schema_property_and_every_qemu_only_feature_is_explicit() {
        let args = qemu(&doc(vec![device("net0", 0, &[])])).unwrap();
        let devices = value_of(&args, "-device");
        let net = devices.iter().find(|d| d.starts_with("virtio-net-device")).unwrap();
        for p in VIRTIO_NET {
            assert!(net.contains(&format!(",{}=", p.qemu)), "{} missing from {net}", p.qemu);
        }
        for (name, value) in QEMU_ONLY_FEATURES {
            assert!(net.contains(&format!(",{name}={value}")), "{name} missing");
        }
        assert!(
            net.contains(",host_uso=on,") && net.contains(",ctrl_vq=off,") && net.contains(",rx_queue_size=256,"),
            "{net}"
        );
        assert!(
            net.contains(",host_mtu=0,") && net.contains(",mac=52:54:00:00:00:01,"),
            "{net}"
        );
        assert_eq!(
            value_of(&args, "-netdev"),
            ["tap,id=net0,ifname=tap-net0,script=no,downscript=no,vhost=off,vnet_hdr=on"]
        );
    }

    #[test]
    fn devices_land_on_the_slot_of_their_abi_placement() {
        let args = qemu(&doc(vec![device("wan", 0, &[]), device("lan", 1, &[])])).unwrap();
        let nets: Vec<_> = value_of(&args, "-device")
            .into_iter()
            .filter(|d| d.starts_with("virtio-net"))
            .collect();
        assert!(nets[0].starts_with("virtio-net-device,id=wan,netdev=wan,bus=virtio-mmio-bus.7,"));
        assert!(nets[1].starts_with("virtio-net-device,id=lan,netdev=lan,bus=virtio-mmio-bus.6,"));
    }

    #[test]
    fn a_placement_microvm_lacks_is_refused_naming_the_device() {
        for (base, size, irq, why) in [
            (0xfeb0_0e10, 0x200, 12, "no slot starts there"),
            (0xfeb0_1000, 0x200, 13, "no slot starts there"),
            (0xfeb0_0e00, 0x1000, 12, "bytes"),
            (0xfeb0_0e00, 0x200, 7, "slot 7 uses IRQ 12"),
        ] {
            let mut d = device("net0", 0, &[]);
            (d.mmio_base, d.mmio_size, d.irq) = (base, size, irq);
            let p = qemu(&doc(vec![d])).unwrap_err();
            assert_eq!(p.code, "vmc::lower::placement");
            assert!(
                p.message.contains("device `net0`") && p.message.contains(why),
                "{}",
                p.message
            );
        }
        let p = qemu(&doc(vec![device("a", 0, &[]), device("b", 0, &[])])).unwrap_err();
        assert!(p.message.contains("`a` and `b`"), "{}", p.message);
    }

    #[test]
    fn cpu_names_every_known_feature_with_a_sign_and_enforces() {
        let args = qemu(&doc(vec![])).unwrap();
        let cpu = value_of(&args, "-cpu")[0];
        assert!(cpu.starts_with("qemu64-v1,") && cpu.ends_with(",enforce"), "{cpu}");
        assert!(
            cpu.contains(",+pni,") && cpu.contains(",+sse4.2,") && cpu.contains(",+lahf-lm,"),
            "{cpu}"
        );
        assert!(
            cpu.contains(",-avx2,") && cpu.contains(",-abm,") && cpu.contains(",-avx512f,"),
            "{cpu}"
        );
        assert_eq!(cpu.matches(',').count(), cpu::FEATURES.len() + 1);
    }

    #[test]
    fn machine_memory_smp_and_boot() {
        let args = qemu(&doc(vec![])).unwrap();
        assert!(value_of(&args, "-M")[0].starts_with("microvm,acpi=off,"));
        assert_eq!(value_of(&args, "-accel"), ["kvm,kernel-irqchip=on"]);
        assert_eq!(value_of(&args, "-global"), ["virtio-mmio.force-legacy=false"]);
        assert_eq!(value_of(&args, "-m"), ["512M"]);
        assert_eq!(
            value_of(&args, "-smp"),
            ["cpus=2,maxcpus=2,sockets=1,dies=1,cores=2,threads=1"]
        );
        assert_eq!(value_of(&args, "-kernel"), ["/boot/vm linuz"]);
        assert_eq!(value_of(&args, "-append"), ["console=ttyS0"]);
        assert!(value_of(&args, "-initrd").is_empty());
        assert!(args.contains(&"-nodefaults".to_string()));
        assert_eq!(memory(3 << 29).unwrap(), "1536M");
        assert_eq!(memory(8192 * 3).unwrap(), "24K");
        assert_eq!(memory(4095).unwrap_err().code, "vmc::lower::memory");
    }

    #[test]
    fn boot_without_kernel_omits_it_or_refuses_an_orphan_initrd() {
        let mut d = doc(vec![]);
        d.host.kernel = None;
        d.host.cmdline = None;
        let args = qemu(&d).unwrap();
        assert!(!args.iter().any(|a| a == "-kernel" || a == "-append" || a == "-initrd"));
        d.host.initrd = Some("/i".into());
        assert_eq!(qemu(&d).unwrap_err().code, "vmc::lower::boot");
    }

    #[test]
    fn what_qemu_cannot_express_is_a_problem_naming_it() {
        let d = doc(vec![device("0net", 0, &[]), device("net1", 1, &[])]);
        let args = qemu(&d).unwrap();
        let netdevs = value_of(&args, "-netdev");
        assert!(netdevs[0].starts_with("tap,id=vmc-net7,"), "{netdevs:?}");
        assert!(netdevs[1].starts_with("tap,id=vmc-net6,"), "{netdevs:?}");
        let mut d = doc(vec![device("net0", 0, &[])]);
        d.host.taps.clear();
        assert_eq!(qemu(&d).unwrap_err().code, "vmc::lower::tap");
        let mut d = doc(vec![]);
        d.abi.cpu.features.push("sse5".into());
        assert!(qemu(&d).unwrap_err().message.contains("`sse5`"));
        let mut d = doc(vec![]);
        d.abi.cpu.count = 1000;
        assert_eq!(qemu(&d).unwrap_err().code, "vmc::lower::cpus");
    }

    #[test]
    fn shell_line_quotes_only_what_needs_it() {
        let args: Vec<String> = [
            "-kernel",
            "/boot/vm linuz",
            "-append",
            "console=ttyS0 it's",
            "-m",
            "512M",
            "",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            shell_line(&args),
            r"qemu-system-x86_64 -kernel '/boot/vm linuz' -append 'console=ttyS0 it'\''s' -m 512M ''"
        );
    }
}
