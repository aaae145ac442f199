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

/// Parses a spec, reporting every problem found.
pub fn parse(source: &SourceFile) -> Result<Spec, Problems> {
    let doc = kdlread::parse(source, "a VM spec (`vm \"NAME\" { ... }`)")?;
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
    let name = problems.ok(vm.string().and_then(|n| check_name(source, n, "VM name", 64)));
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
    let mut seen: Vec<(&str, SourceSpan)> = Vec::new();
    for child in vm.children() {
        let c = NodeReader::new(source, child);
        if c.name() != "net" {
            if let Some(dup) = duplicate(&mut seen, c.name(), child.span(), source) {
                problems.push(dup);
                continue;
            }
        }
        match c.name() {
            "machine" => spec.machine = problems.ok(c.no_children().and_then(|_| c.string())),
            "cpus" => spec.cpus = problems.ok(c.no_children().and_then(|_| c.unsigned())),
            "cpu-model" => spec.cpu_model = problems.ok(c.no_children().and_then(|_| c.string())),
            "memory" => spec.memory = problems.ok(c.no_children().and_then(|_| memory(&c))),
            "boot" => spec.boot = parse_boot(&c, &mut problems),
            "net" => {
                if let Some(net) = parse_net(&c, &mut problems) {
                    if let Some(first) = spec.nets.iter().find(|n| n.id.value == net.id.value) {
                        let (line, col) = source.line_column(first.id.span.offset());
                        problems.push(
                            Problem::new(
                                "vmc::spec::duplicate-device",
                                format!("device id `{}` is used twice", net.id.value),
                            )
                            .at(source, net.id.span)
                            .label("second use")
                            .help(format!(
                                "the first is at line {line}, column {col}; give each device its own id"
                            )),
                        );
                    } else {
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

fn duplicate<'a>(
    seen: &mut Vec<(&'a str, SourceSpan)>,
    name: &'a str,
    span: SourceSpan,
    source: &SourceFile,
) -> Option<Problem> {
    if let Some((_, first)) = seen.iter().find(|(n, _)| *n == name) {
        let (line, col) = source.line_column(first.offset());
        return Some(
            Problem::new("vmc::spec::duplicate-setting", format!("`{name}` is set twice"))
                .at(source, span)
                .label("second setting")
                .help(format!("keep one: the first is at line {line}, column {col}")),
        );
    }
    seen.push((name, span));
    None
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
            Problem::new("vmc::spec::memory", why)
                .at(c.source, entry.span())
                .label("invalid size")
                .help("write a size such as \"512MiB\", \"2GiB\", or a number of bytes")
        }),
        _ => c.unsigned_of(entry),
    }
}

/// Parses `512MiB`, `2 GiB`, `4096`, `1TiB`; binary units only.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    if digits.is_empty() {
        return Err(format!("`{text}` is not a size: it must start with a number"));
    }
    let shift = match unit.trim() {
        "" | "B" => 0,
        "KiB" => 10,
        "MiB" => 20,
        "GiB" => 30,
        "TiB" => 40,
        "K" | "KB" | "k" | "kB" | "M" | "MB" | "G" | "GB" | "T" | "TB" => {
            return Err(format!(
                "`{text}` is ambiguous: vmc takes binary units only (KiB, MiB, GiB, TiB)"
            ))
        }
        other => return Err(format!("`{other}` is not a size unit (use B, KiB, MiB, GiB or TiB)")),
    };
    let n: u64 = digits.parse().map_err(|_| format!("`{text}` is too large"))?;
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("`{text}` is too large (over 16 EiB)"))
}

fn parse_boot(c: &NodeReader<'_>, problems: &mut Collector) -> Option<BootSpec> {
    if let Err(p) = c.arguments().and_then(|a| {
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
    let mut seen = Vec::new();
    for child in c.children() {
        let b = NodeReader::new(c.source, child);
        if let Some(dup) = duplicate(&mut seen, b.name(), child.span(), c.source) {
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

fn parse_net(c: &NodeReader<'_>, problems: &mut Collector) -> Option<NetSpec> {
    let id = problems.ok(c.string().and_then(|id| check_name(c.source, id, "device id", 32)))?;
    let mut net = NetSpec {
        id,
        span: c.node.span(),
        tap: None,
        properties: Vec::new(),
    };
    let mut seen = Vec::new();
    for child in c.children() {
        let n = NodeReader::new(c.source, child);
        if let Some(dup) = duplicate(&mut seen, n.name(), child.span(), c.source) {
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
            return Err(Problem::new(
                "vmc::spec::type",
                format!(
                    "`{}` expects {}, found {}",
                    property.name,
                    kind.describe(),
                    kdlread::kind_of(other)
                ),
            )
            .at(n.source, entry.span())
            .label("wrong type"))
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
        assert!(parse_size("1GB").unwrap_err().contains("binary units"));
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("99999999999TiB").unwrap_err().contains("too large"));
        assert!(parse_size("99999999999999999999999").unwrap_err().contains("too large"));
        assert!(parse_size("-1MiB").is_err());
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
