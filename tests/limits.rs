//! One set of limits: each refusal of `vmc run` (the runtime) and `vmc lower` (the QEMU
//! lowering) is a refusal of `vmc compile` first. Each case below gives the runtime or the
//! lowering the raw value directly (bypassing the compiler and the document reader) and
//! shows it refuses, then shows the compiler refuses a spec asking for the same value,
//! with a span and the rule.

mod support;

use std::path::Path;

use support::compile_text;
use vmc_compiler::document::{Abi, AbiDocument, CpuAbi, HostBindings, Requirements};
use vmc_compiler::{limits, lower, machine};
use vmc_runtime::boot;
use vmc_runtime::host::{files, Tap};
use vmc_runtime::vm::{Vm, VmConfig};

/// A document built by hand, as a caller of the runtime or the lowering could.
fn raw(edit: impl FnOnce(&mut AbiDocument)) -> AbiDocument {
    let mut doc = AbiDocument {
        hash: String::new(),
        platform: "linux-6.9".into(),
        abi: Abi {
            machine: "microvm-1.1".into(),
            cpu: CpuAbi {
                model: "x86-64-v1".into(),
                count: 1,
                migratable: true,
                features: vec!["fpu".into()],
            },
            memory: 64 << 20,
            devices: Vec::new(),
        },
        requires: Requirements::default(),
        host: HostBindings {
            name: "x".into(),
            kernel: Some("/k".into()),
            ..HostBindings::default()
        },
        origins: Default::default(),
    };
    edit(&mut doc);
    doc
}

/// The spec's refusal: its code, and that it points into the spec.
fn compile_refuses(spec: &str, code: &str) {
    let problems = compile_text(spec, "linux-6.9").expect_err(spec);
    assert!(
        problems.has(code),
        "{spec}: expected {code}:\n{}",
        support::render(&problems)
    );
    assert!(
        problems.iter().any(|p| p.code == code && p.span.is_some()),
        "{spec}: no span:\n{}",
        support::render(&problems)
    );
}

#[test]
fn vcpus_beyond_what_the_runtime_numbers_are_refused_by_compile() {
    // The runtime refuses before it opens /dev/kvm.
    let refused = Vm::new(&VmConfig::new(64 << 20, 255));
    assert!(format!("{:?}", refused.err()).contains("1 to 254"));
    compile_refuses("vm \"x\" { cpus 255 }", "vmc::spec::range");
    assert!(compile_text("vm \"x\" { cpus 254 }", "linux-6.9").is_ok());
    // QEMU's microvm takes more, so the lowering never meets a count the compiler allows.
    let ok = raw(|d| d.abi.cpu.count = limits::MAX_CPUS);
    assert!(lower::qemu(&ok).is_ok());
}

#[test]
fn memory_qemu_would_round_is_refused_by_compile() {
    let odd = raw(|d| d.abi.memory = (64 << 20) + 4096);
    assert_eq!(lower::qemu(&odd).unwrap_err().code, "vmc::lower::memory");
    compile_refuses(
        &format!("vm \"x\" {{ memory {} }}", (64 << 20) + 4096),
        "vmc::spec::range",
    );
    compile_refuses("vm \"x\" { memory \"2TiB\" }", "vmc::spec::range");
    compile_refuses("vm \"x\" { memory \"1MiB\" }", "vmc::spec::range");
}

#[test]
fn tap_names_the_kernel_or_qemu_would_change_are_refused_by_compile() {
    for bad in ["tap%d", "a/b", "a:b", "a b", "much-too-long-name", ".", "é"] {
        // The runtime refuses before it opens /dev/net/tun.
        match Tap::open_or_create(bad) {
            Err(vmc_runtime::host::TapError::InvalidName { .. }) => {}
            other => panic!("{bad:?}: the runtime took it: {other:?}"),
        }
        compile_refuses(
            &format!("vm \"x\" {{ net \"n\" {{ tap \"{bad}\" }} }}"),
            "vmc::spec::tap",
        );
    }
    // A comma splits QEMU's -netdev option list.
    let comma = raw(|d| {
        let spec = "vm \"x\" { machine \"microvm-1.1\"; net \"n\" }";
        let mut doc = compile_text(spec, "linux-6.9").unwrap();
        doc.host.taps[0].1 = "a,b".into();
        *d = doc;
    });
    assert_eq!(lower::qemu(&comma).unwrap_err().code, "vmc::lower::value");
    compile_refuses("vm \"x\" { net \"n\" { tap \"a,b\" } }", "vmc::spec::tap");
}

#[test]
fn boot_files_the_runtime_cannot_open_are_refused_by_compile() {
    // A NUL ends a path early in every system call; the runtime cannot open it.
    assert!(files::read_regular(Path::new("/srv/vmlinuz\0x"), 1 << 20).is_err());
    for (node, bad) in [("kernel", "/srv/vmlinuz\\u{0}x"), ("initrd", "/srv/\\u{1b}[2Ji")] {
        let spec = format!("vm \"x\" {{ boot {{ kernel \"/k\"; {node} \"{bad}\" }} }}").replacen(
            "kernel \"/k\"; kernel",
            "kernel",
            1,
        );
        compile_refuses(&spec, "vmc::spec::path");
    }
}

#[test]
fn command_lines_the_boot_protocols_cannot_carry_are_refused_by_compile() {
    let mem = vm_memory::GuestMemoryMmap::<()>::from_ranges(&[(vm_memory::GuestAddress(0), 2 << 20)]).unwrap();
    assert!(boot::write_cmdline(&mem, "console=ttyS0\0init=/x", 4096).is_err());
    compile_refuses(
        "vm \"x\" { boot { kernel \"/k\"; cmdline \"console=ttyS0\\u{0}init=/x\" } }",
        "vmc::spec::cmdline",
    );
    compile_refuses(
        "vm \"x\" { boot { kernel \"/k\"; cmdline \"a\\nb\" } }",
        "vmc::spec::cmdline",
    );
    // Too long once the devices' `virtio_mmio.device=` are added.
    let long = "a".repeat(limits::MAX_KERNEL_CMDLINE);
    assert!(boot::write_cmdline(&mem, &long, boot::layout::CMDLINE_MAX_SIZE).is_err());
    let almost = "a".repeat(limits::MAX_KERNEL_CMDLINE - 2);
    assert!(compile_text(
        &format!("vm \"x\" {{ boot {{ kernel \"/k\"; cmdline \"{almost}\" }} }}"),
        "linux-6.9"
    )
    .is_ok());
    compile_refuses(
        &format!("vm \"x\" {{ boot {{ kernel \"/k\"; cmdline \"{almost}\" }}; net \"n\" }}"),
        "vmc::spec::cmdline",
    );
}

#[test]
fn an_initrd_or_command_line_without_a_kernel_is_refused_by_compile() {
    let orphan = raw(|d| {
        d.host.kernel = None;
        d.host.initrd = Some("/i".into());
    });
    assert_eq!(lower::qemu(&orphan).unwrap_err().code, "vmc::lower::boot");
    let orphan = raw(|d| {
        d.host.kernel = None;
        d.host.cmdline = Some("quiet".into());
    });
    assert_eq!(lower::qemu(&orphan).unwrap_err().code, "vmc::lower::boot");
    compile_refuses("vm \"x\" { boot { initrd \"/i\" } }", "vmc::spec::boot");
    compile_refuses("vm \"x\" { boot { cmdline \"quiet\" } }", "vmc::spec::boot");
}

#[test]
fn every_machine_type_places_devices_where_qemu_microvm_can() {
    for name in machine::names() {
        let m = machine::resolve(name).unwrap();
        assert_eq!(m.mmio, lower::QEMU_MICROVM_MMIO, "{name}");
        for slot in 0..m.mmio.slots as usize {
            let (base, _) = m.mmio.place(slot).unwrap();
            assert!(
                (0xc000_0000..0x1_0000_0000).contains(&base),
                "{name}: slot {slot} outside the MMIO hole"
            );
        }
    }
}

#[test]
fn device_ids_qemu_cannot_take_are_renamed_not_refused() {
    let doc = compile_text("vm \"x\" { net \"0net\"; net \"eth-1\" }", "linux-6.9").unwrap();
    let args = lower::qemu(&doc).unwrap();
    let netdevs: Vec<&String> = args.windows(2).filter(|w| w[0] == "-netdev").map(|w| &w[1]).collect();
    assert!(netdevs[0].starts_with("tap,id=vmc-net7,"), "{netdevs:?}");
    assert!(netdevs[1].starts_with("tap,id=vmc-net6,"), "{netdevs:?}");
}
