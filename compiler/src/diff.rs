//! Guest-visible differences between two ABI documents.

use serde_json::Value as Json;

use crate::document::{show_json, AbiDocument, Origin};
use crate::schema::feature_name;

/// One value that differs; `None` on a side where the value does not exist (a device
/// only one document has).
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    pub path: String,
    pub a: Option<(Json, Option<Origin>)>,
    pub b: Option<(Json, Option<Origin>)>,
}

/// Every guest-visible value that differs, in document order (A's, then B's extras).
pub fn diff(a: &AbiDocument, b: &AbiDocument) -> Vec<Difference> {
    let sourced = |doc: &AbiDocument| -> Vec<(String, (Json, Option<Origin>))> {
        doc.sourced_fields()
            .into_iter()
            .map(|(f, origin)| (f.path(), (f.value, origin.cloned())))
            .collect()
    };
    let (va, vb) = (sourced(a), sourced(b));
    let side = |values: &[(String, (Json, Option<Origin>))], path: &str| {
        values.iter().find(|(p, _)| p == path).map(|(_, v)| v.clone())
    };
    let mut out = Vec::new();
    for (path, _) in va
        .iter()
        .chain(vb.iter().filter(|(p, _)| !va.iter().any(|(q, _)| q == p)))
    {
        let (x, y) = (side(&va, path), side(&vb, path));
        if x.as_ref().map(|s| &s.0) != y.as_ref().map(|s| &s.0) {
            out.push(Difference {
                path: path.clone(),
                a: x,
                b: y,
            });
        }
    }
    out
}

impl Difference {
    /// One line for people: `path: A (origin) -> B (origin)`, and for feature-bit lists
    /// the bits added and removed, by name.
    pub fn render(&self) -> String {
        let side = |s: &Option<(Json, Option<Origin>)>| match s {
            None => "(absent)".to_string(),
            Some((v, Some(o))) => format!("{} ({o})", show_json(v)),
            Some((v, None)) => show_json(v),
        };
        if self.path.ends_with(".device-features") && self.a.is_some() && self.b.is_some() {
            let bits = |s: &Option<(Json, Option<Origin>)>| -> Vec<u64> {
                s.as_ref()
                    .and_then(|(v, _)| v.as_array().cloned())
                    .unwrap_or_default()
                    .iter()
                    .filter_map(Json::as_u64)
                    .collect()
            };
            let (x, y) = (bits(&self.a), bits(&self.b));
            let name = |b: &u64| {
                let n = u32::try_from(*b).ok().and_then(feature_name).unwrap_or("?");
                format!("{b} {n}")
            };
            let added: Vec<String> = y
                .iter()
                .filter(|b| !x.contains(b))
                .map(|b| format!("+{}", name(b)))
                .collect();
            let removed: Vec<String> = x
                .iter()
                .filter(|b| !y.contains(b))
                .map(|b| format!("-{}", name(b)))
                .collect();
            let changes: Vec<String> = removed.into_iter().chain(added).collect();
            return format!("{}: {}", self.path, changes.join(", "));
        }
        format!("{}: {} -> {}", self.path, side(&self.a), side(&self.b))
    }
}
