//! Writing an ABI document: KDL (`vmc compile`, `vmc show`) and JSON (`vmc show --json`,
//! the stable machine interface). The `abi` block is written from [`Abi::fields`], the
//! same list the reader checks a document against.

use serde_json::{json, Map, Value as Json};

use crate::canonical::FORMAT;
use crate::document::{show_field, AbiDocument, Origin, Place};
use crate::kdlread::quote;

impl AbiDocument {
    /// `vmc show --json`.
    pub fn to_json(&self) -> Json {
        let origins: Map<String, Json> = self.origins.iter().map(|(k, o)| (k.clone(), origin_json(o))).collect();
        json!({
            "format": FORMAT,
            "hash": self.hash,
            "platform": self.platform,
            "abi": self.abi.to_json(),
            "requires": {
                "tap-offloads": self.requires.tap_offloads.iter().map(|o| o.name()).collect::<Vec<_>>(),
                "kvm-capabilities": self.requires.kvm_capabilities,
                "cpu-features": self.requires.cpu_features,
            },
            "host": {
                "name": self.host.name,
                "kernel": self.host.kernel,
                "initrd": self.host.initrd,
                "cmdline": self.host.cmdline,
                "taps": self.host.taps.iter().map(|(d, t)| json!({"device": d, "tap": t})).collect::<Vec<_>>(),
            },
            "origins": origins,
        })
    }

    /// The document as KDL text. Deterministic: the same document gives the same bytes.
    pub fn to_kdl(&self) -> String {
        let mut w = String::new();
        w += "// vmc ABI document, written by `vmc compile`. Every read recomputes the hash\n";
        w += "// over `abi` and refuses the document if it differs: edit the spec, not this file.\n";
        w += &format!("format {FORMAT}\n");
        w += &format!("hash {}\n", quote(&self.hash));
        w += &format!("platform {}\n", quote(&self.platform));
        w += "abi {\n";
        let mut open: Option<Place<'_>> = None;
        for field in self.abi.fields() {
            if open != Some(field.place) {
                if open.is_some_and(|p| p != Place::Top) {
                    w += "    }\n";
                }
                match field.place {
                    Place::Top => {}
                    Place::Cpu => w += "    cpu {\n",
                    Place::Device(id) => w += &format!("    device {} {{\n", quote(id)),
                }
                open = Some(field.place);
            }
            let indent = if field.place == Place::Top { "    " } else { "        " };
            w += &format!("{indent}{} {}\n", field.name, show_field(field.name, &field.value));
        }
        if open.is_some_and(|p| p != Place::Top) {
            w += "    }\n";
        }
        w += "}\n";
        w += "requires {\n";
        let offloads: Vec<String> = self
            .requires
            .tap_offloads
            .iter()
            .map(|o| o.name().to_string())
            .collect();
        if !offloads.is_empty() {
            w += &format!("    tap-offloads {}\n", list(&offloads));
        }
        let caps: Vec<String> = self.requires.kvm_capabilities.iter().cloned().collect();
        w += &format!("    kvm-capabilities {}\n", list(&caps));
        let features: Vec<String> = self.requires.cpu_features.iter().cloned().collect();
        w += &format!("    cpu-features {}\n", list(&features));
        w += "}\n";
        w += "host {\n";
        w += &format!("    name {}\n", quote(&self.host.name));
        for (key, value) in [
            ("kernel", &self.host.kernel),
            ("initrd", &self.host.initrd),
            ("cmdline", &self.host.cmdline),
        ] {
            if let Some(v) = value {
                w += &format!("    {key} {}\n", quote(v));
            }
        }
        for (device, tap) in &self.host.taps {
            w += &format!("    tap {} {}\n", quote(device), quote(tap));
        }
        w += "}\n";
        w += "origins {\n";
        for (path, _) in self.abi.values() {
            if let Some(o) = self.origins.get(&path) {
                w += &format!("    origin {} {}\n", quote(&path), origin_kdl(o));
            }
        }
        w += "}\n";
        w
    }
}

fn list(items: &[String]) -> String {
    items.iter().map(|s| quote(s)).collect::<Vec<_>>().join(" ")
}

fn origin_kdl(o: &Origin) -> String {
    match o {
        Origin::Spec { file, line, column } => {
            format!("spec={} line={line} column={column}", quote(file))
        }
        Origin::MachineType(m) => format!("machine-type={}", quote(m)),
        Origin::Platform(p) => format!("platform={}", quote(p)),
        Origin::Derived(from) => format!("derived={}", quote(from)),
    }
}

fn origin_json(o: &Origin) -> Json {
    match o {
        Origin::Spec { file, line, column } => {
            json!({"kind": "spec", "file": file, "line": line, "column": column})
        }
        Origin::MachineType(m) => json!({"kind": "machine-type", "name": m}),
        Origin::Platform(p) => json!({"kind": "platform", "name": p}),
        Origin::Derived(from) => json!({"kind": "derived", "from": from}),
    }
}
