//! A document is valid only if it is a fixed point of the compiler. Anyone can edit a
//! document and recompute its hash (it is a content address, not a signature), so these
//! tests do exactly that, the way an attacker would, and check that every command that
//! reads a document refuses each value the compiler would not write, with the rule and
//! the place named.

mod support;

use support::{compile_text, stderr, vmc, Scratch};
use vmc_compiler::document::Requirements;
use vmc_compiler::schema::{self, Value, ValueKind};
use vmc_compiler::{canonical, AbiDocument, SourceFile};

const TWO_NICS: &str = r#"
vm "web-1" {
    machine "microvm-1.0"
    cpus 2
    cpu-model "x86-64-v1"
    memory "512MiB"
    boot {
        kernel "guest/vmlinuz"
        initrd "guest/initrd.img"
        cmdline "console=ttyS0"
    }
    net "net0" { tap "vmc-a"; }
    net "net1" { tap "vmc-b"; }
}
"#;

/// The document with `edit` applied and everything an attacker can recompute
/// recomputed: the device's feature bits, `requires` and the hash.
fn rehashed(edit: impl FnOnce(&mut AbiDocument)) -> AbiDocument {
    let mut doc = compile_text(TWO_NICS, "linux-6.9").expect("base compiles");
    edit(&mut doc);
    seal(&mut doc);
    doc
}

/// Recomputes what anyone can: `requires` and the hash.
fn seal(doc: &mut AbiDocument) {
    doc.requires = Requirements::of(&doc.abi);
    doc.hash = canonical::hash(&doc.abi);
}

fn set(doc: &mut AbiDocument, device: usize, name: &str, value: Value) {
    let slot = doc.abi.devices[device]
        .properties
        .iter_mut()
        .find(|(p, _)| p.name == name)
        .expect("a property of the machine type");
    slot.1 = value;
    let d = &mut doc.abi.devices[device];
    d.device_features = schema::device_features(&d.properties);
}

/// Every class of value the compiler never writes, as (name, edit, the code of the rule
/// that refuses it, a word the message must hold).
#[allow(clippy::type_complexity)]
fn forged() -> Vec<(
    &'static str,
    Box<dyn FnOnce(&mut AbiDocument)>,
    &'static str,
    &'static str,
)> {
    vec![
        (
            "mmio-base-in-ram",
            Box::new(|d| d.abi.devices[0].mmio_base = 0x1000),
            "vmc::abi::not-derived",
            "devices.net0.mmio-base",
        ),
        (
            "mmio-base-on-lapic",
            Box::new(|d| d.abi.devices[0].mmio_base = 0xfee0_0000),
            "vmc::abi::not-derived",
            "0xfeb00e00",
        ),
        (
            "two-devices-one-slot",
            Box::new(|d| {
                d.abi.devices[1].mmio_base = d.abi.devices[0].mmio_base;
                d.abi.devices[1].irq = d.abi.devices[0].irq;
            }),
            "vmc::abi::not-derived",
            "devices.net1.mmio-base",
        ),
        (
            "irq-of-com1",
            Box::new(|d| d.abi.devices[0].irq = 4),
            "vmc::abi::not-derived",
            "devices.net0.irq",
        ),
        (
            "slot-too-small",
            Box::new(|d| d.abi.devices[0].mmio_size = 0x100),
            "vmc::abi::not-derived",
            "mmio-size",
        ),
        (
            "two-tib",
            Box::new(|d| d.abi.memory = 2 << 40),
            "vmc::spec::range",
            "1 TiB",
        ),
        (
            "memory-not-granular",
            Box::new(|d| d.abi.memory = (512 << 20) + 4096),
            "vmc::spec::range",
            "8 KiB",
        ),
        (
            "no-cpus",
            Box::new(|d| d.abi.cpu.count = 0),
            "vmc::spec::range",
            "1 to 254",
        ),
        (
            "255-cpus",
            Box::new(|d| d.abi.cpu.count = 255),
            "vmc::spec::range",
            "1 to 254",
        ),
        (
            "device-id-with-slash",
            Box::new(|d| {
                d.abi.devices[0].id = "a/b c".into();
                d.host.taps[0].0 = "a/b c".into();
                let origins = std::mem::take(&mut d.origins);
                d.origins = origins
                    .into_iter()
                    .map(|(k, v)| (k.replace("devices.net0.", "devices.a/b c."), v))
                    .collect();
            }),
            "vmc::spec::name",
            "device id",
        ),
        (
            "v4-with-v1-features",
            Box::new(|d| d.abi.cpu.model = "x86-64-v4".into()),
            "vmc::abi::not-derived",
            "cpu.features",
        ),
        (
            "named-model-not-migratable",
            Box::new(|d| d.abi.cpu.migratable = false),
            "vmc::abi::not-derived",
            "cpu.migratable",
        ),
        (
            "unknown-cpu-model",
            Box::new(|d| d.abi.cpu.model = "pentium".into()),
            "vmc::spec::unknown-cpu-model",
            "pentium",
        ),
        (
            "dependency-broken",
            Box::new(|d| set(d, 0, "csum", Value::Bool(false))),
            "vmc::spec::dependency",
            "needs `csum`",
        ),
        (
            "not-implemented-on",
            Box::new(|d| set(d, 0, "ctrl-vq", Value::Bool(true))),
            "vmc::spec::not-implemented",
            "control virtqueue",
        ),
        (
            "same-mac-twice",
            Box::new(|d| {
                let mac = d.abi.devices[0].mac();
                set(d, 1, "mac", Value::Mac(mac));
            }),
            "vmc::spec::duplicate-mac",
            "same MAC",
        ),
        (
            "extra-feature-bit",
            Box::new(|d| {
                d.abi.devices[0].device_features.push(17);
                d.abi.devices[0].device_features.sort_unstable();
            }),
            "vmc::abi::not-derived",
            "device-features",
        ),
        (
            "tap-name-expanded-by-the-kernel",
            Box::new(|d| d.host.taps[0].1 = "tap%d".into()),
            "vmc::spec::tap",
            "`%`",
        ),
        (
            "tap-name-with-comma",
            Box::new(|d| d.host.taps[0].1 = "a,b".into()),
            "vmc::spec::tap",
            "`,`",
        ),
        (
            "same-tap-twice",
            Box::new(|d| d.host.taps[1].1 = d.host.taps[0].1.clone()),
            "vmc::spec::duplicate-tap",
            "same TAP",
        ),
        (
            "kernel-path-with-nul",
            Box::new(|d| d.host.kernel = Some("/srv/vmlinuz\0.evil".into())),
            "vmc::spec::path",
            "U+0000",
        ),
        (
            "initrd-path-with-escape",
            Box::new(|d| d.host.initrd = Some("/srv/\u{1b}[2Jinitrd".into())),
            "vmc::spec::path",
            "U+001B",
        ),
        (
            "cmdline-with-newline",
            Box::new(|d| d.host.cmdline = Some("console=ttyS0\ninit=/bin/sh".into())),
            "vmc::spec::cmdline",
            "U+000A",
        ),
        (
            "initrd-without-kernel",
            Box::new(|d| d.host.kernel = None),
            "vmc::spec::boot",
            "no kernel",
        ),
        (
            "path-not-normalised",
            Box::new(|d| d.host.kernel = Some("/srv/./guest/../guest/vmlinuz".into())),
            "vmc::abi::not-derived",
            "host.kernel",
        ),
        (
            "vm-name-with-escape",
            Box::new(|d| d.host.name = "x\u{1b}]0;PWNED\u{7}".into()),
            "vmc::spec::name",
            "VM name",
        ),
    ]
}

#[test]
fn a_rehashed_document_with_a_value_the_compiler_would_not_write_is_refused() {
    for (name, edit, code, word) in forged() {
        let doc = rehashed(edit);
        let text = doc.to_kdl();
        let problems = match AbiDocument::from_kdl(&SourceFile::new("forged.abi", text.clone())) {
            Ok(_) => panic!("{name}: a forged document was accepted:\n{text}"),
            Err(p) => p,
        };
        let shown = support::render(&problems);
        assert!(problems.has(code), "{name}: expected {code}, got:\n{shown}");
        assert!(shown.contains(word), "{name}: expected `{word}` in:\n{shown}");
        // Never the hash: the hash is right, the value is not.
        assert!(!problems.has("vmc::abi::hash-mismatch"), "{name}:\n{shown}");
        // The problem points into the document, at the value.
        assert!(
            problems.iter().any(|p| p.span.is_some()),
            "{name}: no span in:\n{shown}"
        );
    }
}

#[test]
fn every_command_that_reads_a_document_refuses_a_forged_one() {
    let s = Scratch::new("validity-cli");
    let good = compile_text(TWO_NICS, "linux-6.9").unwrap().to_kdl();
    let good_path = s.write("good.abi", &good);
    let probe = support::repo().join("tests/hosts/new-6.9.json").display().to_string();
    for (name, edit, code, _) in forged() {
        let path = s.write(&format!("{name}.abi"), rehashed(edit).to_kdl());
        let commands: Vec<Vec<&str>> = vec![
            vec!["show", &path],
            vec!["show", "--json", &path],
            vec!["hash", &path],
            vec!["check", &path],
            vec!["explain", &path],
            vec!["diff", &good_path, &path],
            vec!["place", &path, &probe],
            vec!["lower", &path, "--to", "qemu"],
            // `run` reads the document before it probes the host or creates anything,
            // so it refuses here without root or KVM too.
            vec!["run", &path],
        ];
        for args in commands {
            let out = vmc(&args);
            assert_eq!(out.status.code(), Some(2), "{name}: vmc {args:?}: {}", stderr(&out));
            assert!(stderr(&out).contains(code), "{name}: vmc {args:?}: {}", stderr(&out));
            assert!(
                out.stdout.is_empty(),
                "{name}: vmc {args:?} printed {:?}",
                support::stdout(&out)
            );
        }
    }
}

/// The property-by-property form of the contract: a document is accepted exactly when a
/// spec stating all of its values compiles, and then to the same ABI.
#[test]
fn a_document_is_accepted_exactly_when_the_spec_stating_its_values_compiles() {
    let base = compile_text(TWO_NICS, "linux-6.9").unwrap();
    let mut tried = 0;
    for (property, _) in &base.abi.devices[0].properties {
        for candidate in candidates(property.kind) {
            let mut doc = base.clone();
            set(&mut doc, 0, property.name, candidate);
            seal(&mut doc);
            let read = AbiDocument::from_kdl(&SourceFile::new("forged.abi", doc.to_kdl()));
            let spec = spec_stating(&doc);
            let compiled = compile_text(&spec, "linux-6.9");
            match (&read, &compiled) {
                (Ok(r), Ok(c)) => assert_eq!(r.abi, c.abi, "{} = {candidate}", property.name),
                (Err(_), Err(_)) => {}
                _ => panic!(
                    "{} = {candidate}: reading gives {}, compiling the spec gives {}\n{spec}",
                    property.name,
                    outcome(&read),
                    outcome(&compiled)
                ),
            }
            tried += 1;
        }
    }
    assert!(
        tried >= 2 * base.abi.devices[0].properties.len(),
        "{tried} values tried"
    );
}

fn outcome(r: &Result<AbiDocument, vmc_compiler::Problems>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(p) => support::render(p),
    }
}

fn candidates(kind: ValueKind) -> Vec<Value> {
    match kind {
        ValueKind::Bool => vec![Value::Bool(true), Value::Bool(false)],
        ValueKind::Integer { min, max, .. } => [0, 1, min - 1, min, max, max + 1, u64::MAX]
            .into_iter()
            .map(Value::Integer)
            .collect(),
        ValueKind::QueueSize { min, max } => [0, 1, min / 2, min, min + 1, max, max * 2]
            .into_iter()
            .map(Value::Integer)
            .collect(),
        ValueKind::Mac => vec![
            Value::Mac([0x52, 0x54, 0, 0x12, 0x34, 0x56]),
            Value::Mac([0x01, 0, 0x5e, 0, 0, 1]),
            Value::Mac([0; 6]),
        ],
    }
}

/// A spec that sets every value the document holds, device properties included.
fn spec_stating(doc: &AbiDocument) -> String {
    let mut s = format!(
        "vm \"{}\" {{\n    machine \"{}\"\n    cpus {}\n    cpu-model \"{}\"\n    memory {}\n",
        doc.host.name, doc.abi.machine, doc.abi.cpu.count, doc.abi.cpu.model, doc.abi.memory
    );
    s += "    boot {\n";
    for (key, value) in [
        ("kernel", &doc.host.kernel),
        ("initrd", &doc.host.initrd),
        ("cmdline", &doc.host.cmdline),
    ] {
        if let Some(v) = value {
            s += &format!("        {key} \"{v}\"\n");
        }
    }
    s += "    }\n";
    for d in &doc.abi.devices {
        s += &format!(
            "    net \"{}\" {{\n        tap \"{}\"\n",
            d.id,
            doc.host.tap(&d.id).unwrap()
        );
        for (p, v) in &d.properties {
            s += &format!("        {} {v}\n", p.name);
        }
        s += "    }\n";
    }
    s + "}\n"
}

#[test]
fn duplicates_in_a_document_are_refused_naming_both_places() {
    let text = compile_text(TWO_NICS, "linux-6.9").unwrap().to_kdl();
    let abi_block = &text[text.find("abi {").unwrap()..text.find("requires {").unwrap()];
    let cases = [
        ("second abi block", format!("{text}{abi_block}")),
        ("second hash", format!("{text}hash \"blake3:00\"\n")),
        (
            "second platform",
            text.replacen("platform ", "platform \"linux-5.15\"\nplatform ", 1),
        ),
        (
            "second memory",
            text.replacen("    memory ", "    memory 1\n    memory ", 1),
        ),
        (
            "second cpu count",
            text.replacen("        count 2", "        count 2\n        count 4", 1),
        ),
        (
            "second property",
            text.replacen("        csum #true", "        csum #true\n        csum #false", 1),
        ),
        ("second device", {
            let start = text.find("    device \"net0\"").unwrap();
            let end = start + text[start..].find("\n    }\n").unwrap() + 7;
            let mut t = text.clone();
            t.insert_str(end, &text[start..end]);
            t
        }),
        (
            "second kernel",
            text.replacen("    kernel ", "    kernel \"/x\"\n    kernel ", 1),
        ),
        (
            "second tap",
            text.replacen("    tap \"net0\"", "    tap \"net0\" \"other\"\n    tap \"net0\"", 1),
        ),
        (
            "second origin",
            text.replacen(
                "    origin \"memory\"",
                "    origin \"memory\" derived=\"x\"\n    origin \"memory\"",
                1,
            ),
        ),
        ("second origin line", text.replacen(" line=", " line=1 line=", 1)),
    ];
    for (name, forged) in cases {
        assert_ne!(forged, text, "{name}: the edit applies");
        let problems = AbiDocument::from_kdl(&SourceFile::new("dup.abi", forged)).unwrap_err();
        let shown = support::render(&problems);
        assert!(problems.has("vmc::input::duplicate"), "{name}:\n{shown}");
        assert!(
            shown.contains("first at line") && shown.contains("again at line"),
            "{name}:\n{shown}"
        );
    }
}

#[test]
fn a_spec_given_where_a_document_belongs_is_named_as_such() {
    let s = Scratch::new("validity-spec");
    let path = s.write("web.kdl", TWO_NICS);
    for cmd in ["show", "hash", "check", "explain"] {
        let out = vmc(&[cmd, &path]);
        assert_eq!(out.status.code(), Some(2));
        assert!(
            stderr(&out).contains("is a VM spec, not an ABI document"),
            "{}",
            stderr(&out)
        );
        assert!(stderr(&out).contains("vmc compile"), "{}", stderr(&out));
    }
}

#[test]
fn origins_name_exactly_the_values_of_abi() {
    let text = compile_text(TWO_NICS, "linux-6.9").unwrap().to_kdl();
    let extra = text.replacen(
        "origins {\n",
        "origins {\n    origin \"devices.net9.csum\" derived=\"nothing\"\n",
        1,
    );
    let problems = AbiDocument::from_kdl(&SourceFile::new("o.abi", extra)).unwrap_err();
    assert!(problems.has("vmc::abi::value"), "{}", support::render(&problems));
    assert!(support::render(&problems).contains("devices.net9.csum"));
    let start = text.find("    origin \"memory\"").unwrap();
    let end = start + text[start..].find('\n').unwrap() + 1;
    let missing = format!("{}{}", &text[..start], &text[end..]);
    let problems = AbiDocument::from_kdl(&SourceFile::new("o.abi", missing)).unwrap_err();
    assert!(problems.has("vmc::abi::missing"), "{}", support::render(&problems));
}

/// A document repeating a node without end gets the first problems and a count, and
/// more device blocks than slots are one problem: the work does not grow with the repeats.
#[test]
fn floods_of_problems_in_a_document_are_cut_short() {
    let text = compile_text(TWO_NICS, "linux-6.9").unwrap().to_kdl();
    let device = {
        let start = text.find("    device \"net0\"").unwrap();
        let end = start + text[start..].find("\n    }\n").unwrap() + 7;
        text[start..end].to_string()
    };
    let many_devices: String = (0..200)
        .map(|i| device.replace("\"net0\"", &format!("\"d{i}\"")))
        .collect();
    let cases = [
        (
            "repeated",
            text.replacen("abi {\n", &format!("abi {{\n{}", "    memory 1\n".repeat(20_000)), 1),
        ),
        (
            "unknown",
            text.replacen("abi {\n", &format!("abi {{\n{}", "    zzz 1\n".repeat(20_000)), 1),
        ),
        (
            "devices",
            text.replacen("    device \"net0\"", &format!("{many_devices}    device \"net0\""), 1),
        ),
    ];
    for (name, forged) in cases {
        let problems = AbiDocument::from_kdl(&SourceFile::new("flood.abi", forged)).unwrap_err();
        assert!(problems.0.len() <= 51, "{name}: {} problems", problems.0.len());
        let shown = support::render(&problems);
        if name == "devices" {
            assert!(problems.has("vmc::spec::too-many-devices"), "{name}:\n{shown}");
        } else {
            assert!(
                shown.contains("more problems like these, not shown"),
                "{name}:\n{shown}"
            );
        }
    }
}
