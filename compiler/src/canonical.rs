//! The canonical encoding of `abi` and its hash.
//!
//! The hash is `blake3:` followed by the 64 lowercase hex digits of the BLAKE3 hash of
//! the canonical JSON text of the object
//!
//! ```json
//! {"abi": <the "abi" object of `vmc show --json`>, "format": 1}
//! ```
//!
//! Canonical JSON here means: no whitespace; object keys sorted by their bytes (all
//! keys are ASCII); integers in plain decimal (there are no floats); `true`/`false`;
//! strings in double quotes with `"` and `\` escaped by a backslash, `\b \f \n \r \t`
//! for those control characters, `\u00XX` (lowercase hex) for the other characters
//! below U+0020, and every other character as raw UTF-8. (This coincides with RFC 8785
//! for the values an ABI holds.) So any tool can check a hash from `vmc show --json`
//! alone: take `abi`, wrap it with `format`, serialise canonically, BLAKE3 it.
//!
//! Everything guest-visible is in `abi` and nothing else is: the platform name, TAP
//! names, paths, the VM name and origins are outside it.

use std::collections::BTreeMap;

use serde_json::{json, Value as Json};

use crate::document::{Abi, AbiDocument, HostBindings, Origin, Requirements};

/// The ABI document format. Part of what is hashed.
pub const FORMAT: u64 = 1;

impl AbiDocument {
    /// Builds a document from its parts, computing `requires` and the hash.
    pub fn new(platform: String, abi: Abi, host: HostBindings, origins: BTreeMap<String, Origin>) -> AbiDocument {
        AbiDocument {
            hash: hash(&abi),
            requires: Requirements::of(&abi),
            platform,
            abi,
            host,
            origins,
        }
    }
}

/// `blake3:<64 hex>` of the canonical encoding of `abi`.
pub fn hash(abi: &Abi) -> String {
    format!("blake3:{}", blake3::hash(encode(abi).as_bytes()).to_hex())
}

/// The exact bytes that are hashed.
pub fn encode(abi: &Abi) -> String {
    let mut out = String::new();
    write(&json!({"format": FORMAT, "abi": abi.to_json()}), &mut out);
    out
}

/// Canonical JSON text of any value (sorted keys, no whitespace).
pub fn write(value: &Json, out: &mut String) {
    match value {
        Json::Null => out.push_str("null"),
        Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Json::Number(n) => out.push_str(&n.to_string()),
        Json::String(s) => write_string(s, out),
        Json::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(item, out);
            }
            out.push(']');
        }
        Json::Object(map) => {
            // Sort explicitly: serde_json's map keeps insertion order when another crate
            // in the build enables its `preserve_order` feature.
            let mut entries: Vec<(&String, &Json)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(k, out);
                out.push(':');
                write(v, out);
            }
            out.push('}');
        }
    }
}

fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_and_escapes_minimally() {
        let mut out = String::new();
        write(&json!({"b": [1, true, null], "a": "x\"\\\n\u{1}é"}), &mut out);
        assert_eq!(out, r#"{"a":"x\"\\\n\u0001é","b":[1,true,null]}"#);
    }
}
