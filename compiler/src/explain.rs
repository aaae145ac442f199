//! Each value of an ABI document and where it came from.

use crate::diagnostic::{suggestion_or, Problem};
use crate::document::{show_json, AbiDocument};
use crate::schema;

/// Lines `path = value  (origin)`, for every value whose path matches `filter`
/// (a whole path such as `devices.net0.host-uso`, a prefix such as `cpu`, or a last
/// component such as `host-uso`, which matches it on every device).
pub fn explain(doc: &AbiDocument, filter: Option<&str>) -> Result<String, Problem> {
    let values: Vec<(String, _, _)> = doc
        .sourced_fields()
        .into_iter()
        .map(|(f, origin)| (f.path(), f.value, origin))
        .collect();
    let matches = |path: &str| match filter {
        None => true,
        Some(f) => path == f || path.ends_with(&format!(".{f}")) || path.starts_with(&format!("{f}.")),
    };
    let selected: Vec<_> = values.iter().filter(|(p, _, _)| matches(p)).collect();
    if selected.is_empty() {
        let f = filter.unwrap_or_default();
        let mut known: Vec<&str> = values.iter().map(|(p, _, _)| p.as_str()).collect();
        known.extend(values.iter().filter_map(|(p, _, _)| p.rsplit('.').next()));
        return Err(
            Problem::new("vmc::explain::unknown", format!("the document has no value `{f}`")).help(suggestion_or(
                f,
                known,
                "run `vmc explain FILE` to list every value",
            )),
        );
    }
    let width = selected.iter().map(|(p, _, _)| p.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (path, value, origin) in &selected {
        let origin = origin.map_or_else(|| "origin not recorded".to_string(), ToString::to_string);
        out += &format!("{path:width$} = {}\n{:width$}   from {origin}\n", show_json(value), "");
    }
    if let Some(p) = filter.and_then(|f| schema::property(f.rsplit('.').next().unwrap_or(f))) {
        out += "\n";
        out += &describe(p);
    }
    Ok(out)
}

/// A property's schema row, for people: what it does, its values, its feature bit and
/// what it needs.
pub fn describe(p: &schema::Property) -> String {
    let mut out = format!("{}: {}\n", p.name, p.doc);
    let kind = match p.kind {
        schema::ValueKind::Bool => "#true or #false".to_string(),
        schema::ValueKind::Integer {
            min,
            max,
            zero_means_off: true,
        } => format!("0 (off) or {min}..={max}"),
        schema::ValueKind::Integer { min, max, .. } => format!("{min}..={max}"),
        schema::ValueKind::QueueSize { min, max } => format!("a power of two in {min}..={max}"),
        schema::ValueKind::Mac => "a unicast MAC address".to_string(),
    };
    out += &format!("  values: {kind}; QEMU property `{}`\n", p.qemu);
    if let Some(bit) = p.feature_bit {
        out += &format!(
            "  virtio feature bit {bit} ({})\n",
            schema::feature_name(bit).unwrap_or("?")
        );
    }
    for group in p.requires {
        out += &format!("  requires {}\n", group.join(" or "));
    }
    if !p.tap_offloads.is_empty() {
        let names: Vec<_> = p.tap_offloads.iter().map(|o| o.name()).collect();
        out += &format!("  needs TAP offload {}\n", names.join("+"));
    }
    if p.platform_default.is_some() {
        out += "  default: decided by the platform\n";
    }
    if let schema::Support::NotImplemented(why) = p.support {
        out += &format!("  not implemented: {why}\n");
    }
    out
}
