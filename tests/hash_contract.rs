//! The hash contract (the README, "The hash, exactly"), driven through the property
//! schema so that every new property is covered without editing this file.
//!
//! * Same guest-visible values -> same hash, whatever the spelling of the spec.
//! * Any guest-visible difference -> a different hash.
//! * Deterministic; and a document whose `abi` was edited is refused.

mod support;

use support::compile_text;
use vmc_compiler::schema::{self, Support, Value, ValueKind};
use vmc_compiler::{AbiDocument, SourceFile};

const BASE: &str = r#"
vm "web-1" {
    machine "microvm-1.1"
    cpus 2
    cpu-model "x86-64-v2"
    memory "512MiB"
    boot {
        kernel "guest/vmlinuz"
        cmdline "console=ttyS0"
    }
    net "net0" {
        tap "vmc-tap0"
        mac "52:54:00:12:34:56"
    }
}
"#;

fn hash(text: &str, platform: &str) -> String {
    match compile_text(text, platform) {
        Ok(doc) => doc.hash,
        Err(p) => panic!("does not compile:\n{text}\n{}", support::render(&p)),
    }
}

/// The base spec with one more line inside `net "net0" { ... }`.
fn with_net_line(line: &str) -> String {
    BASE.replace(
        "        mac \"52:54:00:12:34:56\"\n",
        &format!("        mac \"52:54:00:12:34:56\"\n        {line}\n"),
    )
}

#[test]
fn spelling_leaves_the_hash_alone() {
    let base = hash(BASE, "linux-6.9");
    let respelled = r#"
// Same VM, written differently: comments, order, number spelling, slashdash.
vm "web-1" {
    net "net0" { mac "52:54:00:12:34:56"; tap "vmc-tap0" }   /* inline comment */
    memory 536870912
    /- memory "1GiB"
    cpu-model "x86-64-v2"
    cpus 0x2
    machine "microvm-1.1"
    boot { cmdline "console=ttyS0"; kernel "guest/vmlinuz" }
}
"#;
    assert_eq!(hash(respelled, "linux-6.9"), base);
    assert_eq!(hash(&BASE.replace("\"512MiB\"", "\"524288KiB\""), "linux-6.9"), base);
}

#[test]
fn host_bindings_and_the_platform_name_leave_the_hash_alone() {
    let base = hash(BASE, "linux-6.9");
    assert_eq!(
        hash(&BASE.replace("vmc-tap0", "other-tap"), "linux-6.9"),
        base,
        "TAP name"
    );
    assert_eq!(
        hash(&BASE.replace("guest/vmlinuz", "/boot/other"), "linux-6.9"),
        base,
        "kernel path"
    );
    assert_eq!(
        hash(&BASE.replace("console=ttyS0", "quiet"), "linux-6.9"),
        base,
        "kernel command line"
    );
    // With an explicit MAC, the VM's name is not guest-visible.
    assert_eq!(hash(&BASE.replace("web-1", "web-2"), "linux-6.9"), base, "VM name");
    // Platforms that give the same values give the same hash.
    for platform in ["linux-6.2", "linux-6.6", "linux-6.12"] {
        assert_eq!(hash(BASE, platform), base, "{platform}");
    }
    assert_eq!(hash(BASE, "linux-5.10"), hash(BASE, "linux-5.15"));
}

#[test]
fn writing_any_default_explicitly_leaves_the_hash_alone() {
    let doc = compile_text(BASE, "linux-6.9").unwrap();
    let base = doc.hash.clone();
    for (p, value) in &doc.abi.devices[0].properties {
        let spec = with_net_line(&format!("{} {value}", p.name));
        let spec = if p.name == "mac" { BASE.to_string() } else { spec };
        assert_eq!(hash(&spec, "linux-6.9"), base, "{} {value}", p.name);
    }
}

/// Another valid value for a property, if its kind has one.
fn other_value(kind: ValueKind, current: Value) -> Option<Value> {
    match (kind, current) {
        (ValueKind::Bool, Value::Bool(b)) => Some(Value::Bool(!b)),
        (ValueKind::Integer { min, .. }, Value::Integer(n)) => {
            Some(Value::Integer(if n == min { min + 1 } else { min }))
        }
        (ValueKind::QueueSize { min, max }, Value::Integer(n)) => {
            let next = if n * 2 <= max { n * 2 } else { n / 2 };
            (next >= min && next != n).then_some(Value::Integer(next))
        }
        (ValueKind::Mac, Value::Mac(mut m)) => {
            m[5] ^= 1;
            Some(Value::Mac(m))
        }
        _ => None,
    }
}

#[test]
fn changing_any_one_property_changes_the_hash_or_is_refused_with_a_reason() {
    let doc = compile_text(BASE, "linux-6.9").unwrap();
    let base = doc.hash.clone();
    let mut changed = 0;
    for (p, current) in &doc.abi.devices[0].properties {
        let Some(other) = other_value(p.kind, *current) else {
            // Only a property with a single allowed value may have no alternative.
            assert!(
                matches!(p.kind, ValueKind::QueueSize { min, max } if min == max),
                "{} has no other value",
                p.name
            );
            continue;
        };
        let spec = if p.name == "mac" {
            BASE.replace(
                "52:54:00:12:34:56",
                &schema::format_mac(match &other {
                    Value::Mac(m) => m,
                    _ => unreachable!(),
                }),
            )
        } else {
            with_net_line(&format!("{} {other}", p.name))
        };
        match compile_text(&spec, "linux-6.9") {
            Ok(d) => {
                assert_ne!(d.hash, base, "{} {other} did not change the hash", p.name);
                changed += 1;
            }
            Err(problems) => {
                // Refusals are explained: unimplemented features, and turning on a
                // feature whose requirement is off by default.
                let ok = problems.has("vmc::spec::not-implemented") || problems.has("vmc::spec::dependency");
                assert!(
                    ok,
                    "{} {other}: unexpected refusal\n{}",
                    p.name,
                    support::render(&problems)
                );
                if problems.has("vmc::spec::not-implemented") {
                    assert!(
                        matches!(p.support, Support::NotImplemented(_)),
                        "{} is implemented",
                        p.name
                    );
                }
            }
        }
    }
    assert!(changed >= 15, "only {changed} properties could be changed");
}

#[test]
fn changing_machine_cpu_or_memory_changes_the_hash() {
    let base = hash(BASE, "linux-6.9");
    let variants = [
        BASE.replace("microvm-1.1", "microvm-1.0"),
        BASE.replace("cpus 2", "cpus 3"),
        BASE.replace("x86-64-v2", "x86-64-v3"),
        BASE.replace("512MiB", "513MiB"),
        BASE.replace(
            "    net \"net0\" {",
            "    net \"net1\" { tap \"t1\"; mac \"52:54:00:00:00:01\"; }\n    net \"net0\" {",
        ),
        BASE.replace("net \"net0\"", "net \"eth0\""),
    ];
    for v in &variants {
        assert_ne!(hash(v, "linux-6.9"), base, "{v}");
    }
    // Without an explicit MAC the name feeds the derived MAC, so it is guest-visible.
    let no_mac = BASE.replace("        mac \"52:54:00:12:34:56\"\n", "");
    assert_ne!(
        hash(&no_mac, "linux-6.9"),
        hash(&no_mac.replace("web-1", "web-2"), "linux-6.9")
    );
    // The platform decides USO, so 5.15 and 6.9 differ.
    assert_ne!(hash(BASE, "linux-5.15"), base);
}

#[test]
fn compiling_twice_is_byte_identical_and_reads_back_identically() {
    let a = compile_text(BASE, "linux-6.9").unwrap();
    let b = compile_text(BASE, "linux-6.9").unwrap();
    assert_eq!(a.to_kdl(), b.to_kdl());
    let back = AbiDocument::from_kdl(&SourceFile::new("web.abi", a.to_kdl())).unwrap();
    assert_eq!(back, a);
    assert_eq!(back.to_kdl(), a.to_kdl());
}

#[test]
fn the_hash_is_blake3_of_the_documented_canonical_json() {
    let doc = compile_text(BASE, "linux-6.9").unwrap();
    // Rebuild it the way another tool would, from `vmc show --json` alone.
    let shown = doc.to_json();
    let wrapped = serde_json::json!({"format": shown["format"], "abi": shown["abi"]});
    let mut canonical = String::new();
    vmc_compiler::canonical::write(&wrapped, &mut canonical);
    assert!(canonical.starts_with("{\"abi\":{\"cpu\":{\"count\":2,"), "{canonical}");
    assert!(!canonical.contains(' ') && !canonical.contains('\n'));
    assert_eq!(
        doc.hash,
        format!("blake3:{}", blake3::hash(canonical.as_bytes()).to_hex())
    );
}

#[test]
fn an_edited_document_is_refused() {
    let text = compile_text(BASE, "linux-6.9").unwrap().to_kdl();
    let read = |t: String| AbiDocument::from_kdl(&SourceFile::new("web.abi", t));
    // A guest-visible value changed by hand.
    let edited = text.replace("count 2", "count 3");
    assert!(read(edited).unwrap_err().has("vmc::abi::hash-mismatch"));
    // A property edited without the hash.
    let edited = text.replace("host-uso #true", "host-uso #false");
    assert!(read(edited).unwrap_err().has("vmc::abi::hash-mismatch"));
    // The stored hash edited.
    let edited = text.replacen("hash \"blake3:", "hash \"blake3:0", 1);
    assert!(read(edited).unwrap_err().has("vmc::abi::hash-mismatch"));
    // `requires` edited to hide a need.
    let edited = text.replace("tap-offloads \"csum\"", "tap-offloads");
    assert!(read(edited).unwrap_err().has("vmc::abi::requires-mismatch"));
    // Truncated anywhere: an error, never a panic.
    let complete = text.trim_end().len();
    for cut in (0..complete).step_by(61) {
        if let Ok(doc) = read(text[..cut].to_string()) {
            panic!("a document cut at {cut} was accepted: {doc:?}");
        }
    }
    // Host bindings are not hashed, so editing them is allowed.
    assert!(read(text.replace("vmc-tap0", "tap9")).is_ok());
}
