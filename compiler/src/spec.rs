//! The spec language (KDL 2.0): what the user wants, as little as they like.
//!
//! ```kdl
//! vm "web-1" {
//!     machine "microvm-1.0"            // optional: newest if left out
//!     cpus 2
//!     cpu-model "x86-64-v2"            // optional
//!     memory "512MiB"
//!     boot {
//!         kernel "guest/vmlinuz"
//!         initrd "guest/initrd.img"    // optional
//!         cmdline "console=ttyS0"
//!     }
//!     net "net0" {
//!         tap "vmc-tap0"
//!         mac "52:54:00:12:34:56"      // optional
//!         host-uso #true               // any property may be set; the rest get defaults
//!     }
//! }
//! ```
//!
//! Parsing checks shape and types and keeps every span; expansion (`expand.rs`) checks
//! meaning against the machine type and platform.

use std::collections::HashMap;

use kdl::KdlValue;
use miette::SourceSpan;

use crate::diagnostic::{choices_help, suggestion_or, Collector, Problem, Problems, SourceFile};
use crate::kdlread::{self, NodeReader, Spanned};
use crate::schema::{self, Property, Value, ValueKind};

/// A parsed spec.
#[derive(Debug, Clone)]
pub struct Spec {
    pub source: SourceFile,
    pub name: Spanned<String>,
    pub machine: Option<Spanned<String>>,
    pub cpus: Option<Spanned<u64>>,
    pub cpu_model: Option<Spanned<String>>,
    pub memory: Option<Spanned<u64>>,
    pub boot: Option<BootSpec>,
    pub nets: Vec<NetSpec>,
}

#[derive(Debug, Clone, Default)]
pub struct BootSpec {
    pub kernel: Option<Spanned<String>>,
    pub initrd: Option<Spanned<String>>,
    pub cmdline: Option<Spanned<String>>,
}

#[derive(Debug, Clone)]
pub struct NetSpec {
    pub id: Spanned<String>,
    pub span: SourceSpan,
    pub tap: Option<Spanned<String>>,
    /// Properties the spec sets, in the order written.
    pub properties: Vec<(&'static Property, Spanned<Value>)>,
}

const VM_NODES: &[&str] = &["machine", "cpus", "cpu-model", "memory", "boot", "net"];
const BOOT_NODES: &[&str] = &["kernel", "initrd", "cmdline"];

/// Parses a spec, reporting every problem found (the first [`kdlread::MAX_PROBLEMS`]).
pub fn parse(source: &SourceFile) -> Result<Spec, Problems> {
    parse_all(source).map_err(kdlread::at_most)
}

fn parse_all(source: &SourceFile) -> Result<Spec, Problems> {
    let doc = kdlread::parse(source, "a VM spec (`vm \"NAME\" { ... }`)")?;
    if let Some(p) = another_document(source, doc.nodes()) {
        return Err(p.into());
    }
    let mut problems = Collector::default();
    let mut vms = Vec::new();
    for node in doc.nodes() {
        let r = NodeReader::new(source, node);
        if r.name() == "vm" {
            vms.push(r);
        } else {
            problems.push(
                r.problem(
                    "vmc::spec::unknown-node",
                    format!("unknown top-level node `{}`", r.name()),
                )
                .label("unknown")
                .help(choices_help(r.name(), &["vm"], "a spec holds exactly one")),
            );
        }
    }
    let vm = match vms.as_slice() {
        [one] => one,
        [] => {
            problems.push(
                Problem::new("vmc::spec::no-vm", format!("{} has no `vm` node", source.name()))
                    .help("write `vm \"NAME\" { ... }`"),
            );
            return Err(problems.into_problems());
        }
        [_, second, ..] => {
            problems.push(
                second
                    .problem("vmc::spec::two-vms", "a spec describes exactly one VM")
                    .label("second `vm`")
                    .help("put each VM in a spec file of its own"),
            );
            return Err(problems.into_problems());
        }
    };
    let name = problems.ok(vm_name(vm).and_then(|n| check_name(source, n, "VM name", 64)));
    let mut spec = Spec {
        source: source.clone(),
        name: name.unwrap_or_else(|| Spanned::new(String::new(), vm.node.span())),
        machine: None,
        cpus: None,
        cpu_model: None,
        memory: None,
        boot: None,
        nets: Vec::new(),
    };
    let mut seen = HashMap::new();
    let mut net_ids: HashMap<String, SourceSpan> = HashMap::new();
    // Finding a line and column reads the text up to it: only the problems shown do.
    let mut located = 0;
    for child in vm.children() {
        let c = NodeReader::new(source, child);
        if c.name() != "net" {
            if let Some(dup) = duplicate(&mut seen, c.name(), child.span(), source, &mut located) {
                problems.push(dup);
                continue;
            }
        }
        match c.name() {
            "machine" => spec.machine = problems.ok(c.no_children().and_then(|_| c.string())),
            "cpus" => spec.cpus = problems.ok(c.no_children().and_then(|_| c.unsigned())),
            "cpu-model" => spec.cpu_model = problems.ok(c.no_children().and_then(|_| c.string())),
            "memory" => spec.memory = problems.ok(c.no_children().and_then(|_| memory(&c))),
            "boot" => spec.boot = parse_boot(&c, &mut problems, &mut located),
            "net" => {
                if let Some(net) = parse_net(&c, &mut problems, &mut located) {
                    if let Some(first) = net_ids.get(&net.id.value) {
                        let mut p = Problem::new(
                            "vmc::spec::duplicate-device",
                            format!("device id `{}` is used twice", net.id.value),
                        )
                        .at(source, net.id.span)
                        .label("second use");
                        located += 1;
                        if located <= kdlread::MAX_PROBLEMS {
                            let (line, col) = source.line_column(first.offset());
                            p = p.help(format!(
                                "the first is at line {line}, column {col}; give each device its own id"
                            ));
                        }
                        problems.push(p);
                    } else {
                        net_ids.insert(net.id.value.clone(), net.id.span);
                        spec.nets.push(net);
                    }
                }
            }
            other => problems.push(
                c.problem("vmc::spec::unknown-node", format!("unknown VM setting `{other}`"))
                    .label("unknown")
                    .help(choices_help(other, VM_NODES, "a `vm` block holds")),
            ),
        }
    }
    problems.finish(spec)
}

/// A setting seen before in its block, as a problem; `located` counts the problems
/// given a line and column (only the first [`kdlread::MAX_PROBLEMS`] are shown).
fn duplicate<'a>(
    seen: &mut HashMap<&'a str, SourceSpan>,
    name: &'a str,
    span: SourceSpan,
    source: &SourceFile,
    located: &mut usize,
) -> Option<Problem> {
    if let Some(first) = seen.get(name) {
        let p = Problem::new("vmc::spec::duplicate-setting", format!("`{name}` is set twice"))
            .at(source, span)
            .label("second setting");
        *located += 1;
        if *located > kdlread::MAX_PROBLEMS {
            return Some(p);
        }
        let (line, col) = source.line_column(first.offset());
        return Some(p.help(format!("keep one: the first is at line {line}, column {col}")));
    }
    seen.insert(name, span);
    None
}

/// The problem code of a document of another kind given as a spec.
pub const NOT_A_SPEC: &str = "vmc::spec::not-a-spec";

/// An ABI document or a platform document given where a spec belongs, named as such.
fn another_document(source: &SourceFile, nodes: &[kdl::KdlNode]) -> Option<Problem> {
    let has = |name: &str| nodes.iter().any(|n| n.name().value() == name);
    if has("vm") {
        return None;
    }
    let name = source.name();
    if has("abi") || has("hash") {
        Some(
            Problem::new(
                NOT_A_SPEC,
                format!("{name} is an ABI document (already compiled), not a VM spec"),
            )
            .help(format!(
                "`vmc show {name}` prints it, `vmc run {name}` runs it (a file named *.kdl is read as a spec: \
                     name a document *.abi); to compile again, give the spec it was compiled from"
            )),
        )
    } else if has("platform") {
        Some(
            Problem::new(NOT_A_SPEC, format!("{name} is a platform document, not a VM spec"))
                .help("put platform files in a directory given with `--platform-path DIR`; probe files go to `vmc place` and `vmc compile --pool`"),
        )
    } else {
        None
    }
}

/// A node as an example shows it: its name and its string key (or `otherwise`).
fn head_of(r: &NodeReader<'_>, otherwise: &str) -> String {
    match r.node.entries().iter().find(|e| e.name().is_none()).map(|e| e.value()) {
        Some(KdlValue::String(key)) => format!("{} {}", r.name(), kdlread::quote(key)),
        _ => format!("{} {otherwise}", r.name()),
    }
}

/// The `vm` node's name, its settings being in its block.
fn vm_name(vm: &NodeReader<'_>) -> Result<Spanned<String>, Problem> {
    vm.settings_in_block(&head_of(vm, "\"NAME\""))?;
    if vm.node.entries().is_empty() {
        return Err(vm
            .problem("vmc::kdl::arity", "the `vm` has no name")
            .label("no name")
            .help(
            "write `vm \"NAME\" { ... }`: the name is used in messages, and derives the MACs and TAP names left out",
        ));
    }
    vm.string()
}

/// A name that appears in messages, derivations and interface names: printable and short.
pub(crate) fn check_name(
    source: &SourceFile,
    name: Spanned<String>,
    what: &str,
    max: usize,
) -> Result<Spanned<String>, Problem> {
    let ok = !name.value.is_empty()
        && name.value.len() <= max
        && name
            .value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(name)
    } else {
        Err(
            Problem::new("vmc::spec::name", format!("`{}` is not a valid {what}", name.value))
                .at(source, name.span)
                .label("invalid name")
                .help(format!("use 1 to {max} ASCII letters, digits, `-`, `_` or `.`")),
        )
    }
}

/// `memory "512MiB"`, `memory "1GiB"` or `memory 536870912` (bytes).
fn memory(c: &NodeReader<'_>) -> Result<Spanned<u64>, Problem> {
    let entry = c.single()?;
    match entry.value() {
        KdlValue::String(text) => parse_size(text).map(|v| Spanned::new(v, entry.span())).map_err(|why| {
            Problem::new("vmc::spec::memory", why.message)
                .at(c.source, entry.span())
                .label("invalid size")
                .help(why.help.unwrap_or_else(|| {
                    "write a whole number of a binary unit, such as \"512MiB\" or \"2GiB\", or a number of bytes"
                        .to_string()
                }))
        }),
        KdlValue::Float(f) => Err(Problem::new(
            "vmc::spec::memory",
            format!("`memory` is a whole number of bytes or a size string, not the number {f}"),
        )
        .at(c.source, entry.span())
        .label("not a whole number")
        .help(match size_in_units(*f, 0) {
            Some(size) => format!("write `memory \"{size}\"`"),
            None => "write a size such as \"512MiB\" or \"2GiB\" (a size with a unit is a string)".to_string(),
        })),
        _ => c.unsigned_of(entry),
    }
}

/// Why a size was refused, and what to write instead when that is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizeError {
    pub message: String,
    pub help: Option<String>,
}

const UNITS: [(&str, u32); 5] = [("B", 0), ("KiB", 10), ("MiB", 20), ("GiB", 30), ("TiB", 40)];

/// `value` × 2^`shift` bytes, in the largest binary unit of which it is a whole
/// number (`0.5` GiB is `512MiB`), if it is a whole number of bytes.
fn size_in_units(value: f64, shift: u32) -> Option<String> {
    let bytes = value * (1u64 << shift) as f64;
    if !((1.0..1.8e19).contains(&bytes) && bytes.fract() == 0.0) {
        return None;
    }
    let bytes = bytes as u64;
    UNITS
        .iter()
        .rev()
        .find(|(_, s)| bytes.is_multiple_of(1u64 << s))
        .map(|(unit, s)| format!("{}{unit}", bytes >> s))
}

/// Parses `512MiB`, `2 GiB`, `4096`, `1TiB`: a whole number of bytes or of a binary unit.
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let fail = |message: String, help: Option<String>| Err(SizeError { message, help });
    let t = text.trim();
    if t.starts_with('-') {
        return fail(
            format!("`{text}` is negative; a size is a whole number of a unit, such as \"512MiB\""),
            None,
        );
    }
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, rest) = t.split_at(split);
    if digits.is_empty() {
        return fail(format!("`{text}` is not a size: it must start with a number"), None);
    }
    // A fraction or a decimal: say so, and what it is in whole units when it is whole bytes.
    if let Some(fraction) = rest.strip_prefix(['.', ',']) {
        let decimals = fraction.find(|c: char| !c.is_ascii_digit()).unwrap_or(fraction.len());
        let unit = fraction[decimals..].trim();
        let value: Option<f64> = format!("{digits}.{}", &fraction[..decimals]).parse().ok();
        let exact = UNITS
            .iter()
            .find(|(u, _)| *u == unit || (unit.is_empty() && *u == "B"))
            .and_then(|(_, shift)| size_in_units(value?, *shift));
        return fail(
            format!("`{text}` is not a whole number: sizes are whole numbers of a unit, such as \"512MiB\""),
            Some(match exact {
                Some(size) => format!("write \"{size}\""),
                None => {
                    "write it in a smaller unit, as a whole number (\"1536MiB\" rather than \"1.5GiB\")".to_string()
                }
            }),
        );
    }
    let unit = rest.trim();
    let shift = match UNITS.iter().find(|(u, _)| *u == unit) {
        Some((_, shift)) => *shift,
        None if unit.is_empty() => 0,
        None => {
            let ambiguous = ["K", "KB", "k", "kB", "M", "MB", "G", "GB", "T", "TB"];
            if ambiguous.contains(&unit) {
                return fail(
                    format!("`{text}` is ambiguous: vmc takes binary units only (KiB, MiB, GiB, TiB)"),
                    Some(format!(
                        "write \"{digits}{}iB\" if that is meant",
                        &unit[..1].to_uppercase()
                    )),
                );
            }
            let cased = UNITS.iter().find(|(u, _)| u.eq_ignore_ascii_case(unit));
            return fail(
                format!("`{unit}` is not a size unit (use B, KiB, MiB, GiB or TiB)"),
                cased.map(|(u, _)| format!("units are written exactly so: \"{digits}{u}\"")),
            );
        }
    };
    let too_large = || SizeError {
        message: format!("`{text}` is too large (over 16 EiB)"),
        help: None,
    };
    let n: u64 = digits.parse().map_err(|_| too_large())?;
    n.checked_mul(1u64 << shift).ok_or_else(too_large)
}

fn parse_boot(c: &NodeReader<'_>, problems: &mut Collector, located: &mut usize) -> Option<BootSpec> {
    if let Err(p) = c.settings_in_block("boot").and_then(|_| c.arguments()).and_then(|a| {
        if a.is_empty() {
            Ok(())
        } else {
            Err(c
                .problem("vmc::kdl::arity", "`boot` takes no value, only a `{ ... }` block")
                .help("write `boot { kernel \"PATH\" }`"))
        }
    }) {
        problems.push(p);
    }
    let mut boot = BootSpec::default();
    let mut seen = HashMap::new();
    for child in c.children() {
        let b = NodeReader::new(c.source, child);
        if let Some(dup) = duplicate(&mut seen, b.name(), child.span(), c.source, located) {
            problems.push(dup);
            continue;
        }
        let value = problems.ok(b.no_children().and_then(|_| b.string()));
        match b.name() {
            "kernel" => boot.kernel = value.and_then(|v| problems.ok(non_empty(c.source, v, "kernel path"))),
            "initrd" => boot.initrd = value.and_then(|v| problems.ok(non_empty(c.source, v, "initrd path"))),
            "cmdline" => boot.cmdline = value,
            other => problems.push(
                b.problem("vmc::spec::unknown-node", format!("unknown boot setting `{other}`"))
                    .label("unknown")
                    .help(choices_help(other, BOOT_NODES, "a `boot` block holds")),
            ),
        }
    }
    Some(boot)
}

fn non_empty(source: &SourceFile, v: Spanned<String>, what: &str) -> Result<Spanned<String>, Problem> {
    if v.value.is_empty() {
        Err(Problem::new("vmc::spec::empty", format!("the {what} is empty"))
            .at(source, v.span)
            .label("empty"))
    } else {
        Ok(v)
    }
}

fn parse_net(c: &NodeReader<'_>, problems: &mut Collector, located: &mut usize) -> Option<NetSpec> {
    let id = problems.ok(c
        .settings_in_block(&head_of(c, "\"net0\""))
        .and_then(|_| c.string())
        .and_then(|id| check_name(c.source, id, "device id", 32)))?;
    let mut net = NetSpec {
        id,
        span: c.node.span(),
        tap: None,
        properties: Vec::new(),
    };
    let mut seen = HashMap::new();
    for child in c.children() {
        let n = NodeReader::new(c.source, child);
        if let Some(dup) = duplicate(&mut seen, n.name(), child.span(), c.source, located) {
            problems.push(dup);
            continue;
        }
        if problems.ok(n.no_children()).is_none() {
            continue;
        }
        if n.name() == "tap" {
            // Checked in expansion, with the other limits of the host bindings.
            net.tap = problems.ok(n.string());
            continue;
        }
        let Some(property) = schema::property(n.name()) else {
            let known: Vec<&str> = std::iter::once("tap")
                .chain(schema::VIRTIO_NET.iter().map(|p| p.name))
                .collect();
            problems.push(
                n.problem(
                    "vmc::spec::unknown-property",
                    format!("unknown virtio-net property `{}`", n.name()),
                )
                .label("unknown property")
                .help(suggestion_or(
                    n.name(),
                    known,
                    "`vmc properties` lists every virtio-net property; a `net` block also holds `tap`",
                )),
            );
            continue;
        };
        if let Some(value) = problems.ok(property_value(&n, property)) {
            net.properties.push((property, value));
        }
    }
    Some(net)
}

/// Reads and checks one property's value against its schema row.
pub(crate) fn property_value(n: &NodeReader<'_>, property: &'static Property) -> Result<Spanned<Value>, Problem> {
    let entry = n.single()?;
    let value = match (property.kind, entry.value()) {
        (ValueKind::Bool, KdlValue::Bool(b)) => Value::Bool(*b),
        (ValueKind::Integer { .. } | ValueKind::QueueSize { .. }, KdlValue::Integer(_)) => {
            Value::Integer(n.unsigned_of(entry)?.value)
        }
        (ValueKind::Mac, KdlValue::String(text)) => Value::Mac(schema::parse_mac(text).map_err(|why| {
            Problem::new("vmc::spec::mac", why)
                .at(n.source, entry.span())
                .label("invalid MAC")
                .help("write a unicast address such as \"52:54:00:12:34:56\", or leave `mac` out to derive one")
        })?),
        (kind, other) => {
            let written = n.written(entry);
            let problem = Problem::new(
                "vmc::spec::type",
                format!(
                    "`{}` expects {}, found {} `{written}`",
                    property.name,
                    kind.describe(),
                    kdlread::kind_of(other)
                ),
            )
            .at(n.source, entry.span())
            .label("wrong type");
            let name = property.name;
            return Err(match (kind, other) {
                (ValueKind::Bool, _) => problem.help(kdlread::boolean_help(name, other)),
                (ValueKind::Integer { .. } | ValueKind::QueueSize { .. }, KdlValue::String(s)) => {
                    match s.trim().parse::<u64>() {
                        Ok(v) => problem.help(format!("write it without quotes: `{name} {v}`")),
                        Err(_) => problem,
                    }
                }
                (ValueKind::Integer { .. } | ValueKind::QueueSize { .. }, KdlValue::Float(_)) => {
                    problem.help("write a whole number, without a decimal point")
                }
                (ValueKind::Mac, KdlValue::Integer(_) | KdlValue::Float(_)) => {
                    problem.help(format!("a MAC is a string: write `{name} \"52:54:00:12:34:56\"`"))
                }
                _ => problem,
            });
        }
    };
    property.kind.check(&value).map_err(|why| {
        Problem::new("vmc::spec::range", format!("`{}`: {why}", property.name))
            .at(n.source, entry.span())
            .label("out of range")
    })?;
    Ok(Spanned::new(value, entry.span()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_units_and_refuse_overflow() {
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("2 GiB"), Ok(2 << 30));
        assert!(parse_size("1GB").unwrap_err().message.contains("binary units"));
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("99999999999TiB").unwrap_err().message.contains("too large"));
        assert!(parse_size("99999999999999999999999")
            .unwrap_err()
            .message
            .contains("too large"));
        assert!(parse_size("-1MiB").unwrap_err().message.contains("negative"));
    }

    #[test]
    fn a_fractional_size_says_sizes_are_whole_and_what_to_write() {
        for (text, help) in [
            ("0.5GiB", "write \"512MiB\""),
            ("1.5GiB", "write \"1536MiB\""),
            ("1,5 GiB", "write \"1536MiB\""),
            ("0.25KiB", "write \"256B\""),
            ("2.0GiB", "write \"2GiB\""),
            ("0.3GiB", "smaller unit"),
            ("1.5", "smaller unit"),
        ] {
            let e = parse_size(text).unwrap_err();
            assert!(e.message.contains("sizes are whole numbers of a unit"), "{text}: {e:?}");
            assert!(e.help.as_deref().unwrap().contains(help), "{text}: {e:?}");
        }
        assert_eq!(
            parse_size("512mib").unwrap_err().help.as_deref(),
            Some("units are written exactly so: \"512MiB\"")
        );
        assert_eq!(
            parse_size("2G").unwrap_err().help.as_deref(),
            Some("write \"2GiB\" if that is meant")
        );
    }

    fn problems(text: &str) -> Problems {
        parse(&SourceFile::new("t.kdl", text)).unwrap_err()
    }

    #[test]
    fn shape_errors_are_reported_with_their_class() {
        assert!(problems("vm \"a\" { cpuz 2 }").has("vmc::spec::unknown-node"));
        assert!(problems("vm \"a\" { net \"n\" { host-usoo #true } }").has("vmc::spec::unknown-property"));
        assert!(problems("vm \"a\" { net \"n\" { host-uso 1 } }").has("vmc::spec::type"));
        assert!(problems("vm \"a\" { net \"n\" { rx-queue-size 300 } }").has("vmc::spec::range"));
        assert!(problems("vm \"a\" { net \"n\" { mac \"01:00:5e:00:00:01\" } }").has("vmc::spec::mac"));
        assert!(problems("vm \"a\" { net \"n\"; net \"n\" }").has("vmc::spec::duplicate-device"));
        assert!(problems("vm \"a\" { cpus 1; cpus 2 }").has("vmc::spec::duplicate-setting"));
        assert!(problems("vm \"a\" { memory -5 }").has("vmc::kdl::value"));
        assert!(problems("vm \"a\" { memory \"1GB\" }").has("vmc::spec::memory"));
        assert!(problems("vm \"a\"\nvm \"b\"").has("vmc::spec::two-vms"));
        assert!(problems("machine \"x\"").has("vmc::spec::no-vm"));
        assert!(problems("vm \"a b\"").has("vmc::spec::name"));
    }

    fn first(text: &str) -> Problem {
        problems(text).0.remove(0)
    }

    #[test]
    fn another_kind_of_document_is_named_with_what_reads_it() {
        let abi = first("format 1\nhash \"blake3:00\"\nabi { memory 1 }");
        assert_eq!(abi.code, NOT_A_SPEC);
        assert_eq!(
            abi.message,
            "t.kdl is an ABI document (already compiled), not a VM spec"
        );
        assert!(abi
            .help
            .unwrap()
            .starts_with("`vmc show t.kdl` prints it, `vmc run t.kdl` runs it"));
        let platform = first("format 1\nplatform \"p\" { kernel \"6.1\" }");
        assert_eq!(platform.message, "t.kdl is a platform document, not a VM spec");
        assert!(platform.help.unwrap().contains("--platform-path"));
    }

    #[test]
    fn a_setting_written_as_a_property_is_shown_in_its_block() {
        for (text, help) in [
            ("vm \"a\" memory=\"1GiB\" { }", "write `vm \"a\" { memory \"1GiB\" }`"),
            (
                "vm \"a\" { net \"n\" host-uso=#true }",
                "write `net \"n\" { host-uso #true }`",
            ),
            ("vm \"a\" { boot kernel=\"k\" }", "write `boot { kernel \"k\" }`"),
        ] {
            let p = first(text);
            assert!(
                p.message.contains("is a property, but the settings of"),
                "{text}: {p:?}"
            );
            assert_eq!(p.help.as_deref(), Some(help), "{text}");
        }
        assert_eq!(first("vm { cpus 1 }").message, "the `vm` has no name");
    }

    #[test]
    fn a_value_of_the_wrong_type_says_how_to_write_it() {
        for (text, message, help) in [
            (
                "vm \"a\" { cpus 2.0 }",
                "`cpus` takes a whole number, not `2.0`",
                "`cpus 2`",
            ),
            (
                "vm \"a\" { cpus 2.5 }",
                "`cpus` takes a whole number, not `2.5`",
                "without a decimal point",
            ),
            (
                "vm \"a\" { cpus \"2\" }",
                "`cpus` expects a number, found the string `\"2\"`",
                "without quotes: `cpus 2`",
            ),
            ("vm \"a\" { cpus -2 }", "`cpus` must not be negative", "from 0 up"),
            ("vm \"a\" { memory 0.5 }", "not the number 0.5", "\"512MiB\""),
            (
                "vm \"a\" { memory \"0.5GiB\" }",
                "sizes are whole numbers of a unit",
                "write \"512MiB\"",
            ),
            (
                "vm \"a\" { machine 1.0 }",
                "`machine` expects a string, found a floating-point number `1.0`",
                "quote it",
            ),
            (
                "vm \"a\" { net \"n\" { host-uso \"true\" } }",
                "found a string `\"true\"`",
                "write `host-uso #true`",
            ),
            (
                "vm \"a\" { net \"n\" { host-uso 0 } }",
                "found an integer `0`",
                "write `host-uso #false`",
            ),
            (
                "vm \"a\" { net \"n\" { rx-queue-size \"512\" } }",
                "found a string",
                "`rx-queue-size 512`",
            ),
            (
                "vm \"a\" { net \"n\" { mac 5 } }",
                "found an integer `5`",
                "a MAC is a string",
            ),
        ] {
            let p = first(text);
            assert!(p.message.contains(message), "{text}: {p:?}");
            assert!(p.help.as_deref().unwrap_or_default().contains(help), "{text}: {p:?}");
        }
    }

    #[test]
    fn a_flood_of_problems_is_cut_short() {
        let text = format!("vm \"a\" {{\n{}}}", "cpuz 1\n".repeat(5000));
        let p = problems(&text);
        assert_eq!(p.0.len(), kdlread::MAX_PROBLEMS + 1);
        assert_eq!(
            p.0.last().unwrap().message,
            format!(
                "... and {} more problems like these, not shown (vmc shows the first 50)",
                5000 - 50
            )
        );
        let p = problems(&"vm \"a\"\n".repeat(3));
        assert!(p.has("vmc::spec::two-vms"));
    }

    #[test]
    fn every_problem_in_a_spec_is_reported_at_once() {
        let p = problems("vm \"a\" { cpuz 2; net \"n\" { host-usoo #true; rx-queue-size 3 } }");
        assert_eq!(p.0.len(), 3, "{p:?}");
    }

    #[test]
    fn did_you_mean_names_the_close_property() {
        let p = problems("vm \"a\" { net \"n\" { host-usoo #true } }");
        assert_eq!(p.0[0].help.as_deref(), Some("did you mean `host-uso`?"));
        let p = problems("vm \"a\" { memroy \"1GiB\" }");
        assert!(p.0[0]
            .help
            .as_deref()
            .unwrap()
            .starts_with("did you mean `memory`? a `vm` block holds: machine,"));
    }
}
