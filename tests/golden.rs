//! Released machine types are frozen: every document in `tests/golden/` (written by an
//! earlier vmc) is read unchanged with the hash it was written with, its spec compiles
//! to the same hash, and an independent RFC 8785 implementation agrees with vmc's
//! canonical form. See `tests/golden/README.md`.

mod support;

use std::path::{Path, PathBuf};

use vmc_compiler::{AbiDocument, CompileInput, PlatformRegistry, SourceFile};

fn golden() -> PathBuf {
    support::repo().join("tests/golden")
}

/// (document file name, recorded hash) from `hashes.txt`.
fn recorded() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(golden().join("hashes.txt")).expect("tests/golden/hashes.txt");
    let out: Vec<(String, String)> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (file, hash) = l.split_once(' ').expect("`FILE HASH` per line");
            (file.to_string(), hash.to_string())
        })
        .collect();
    assert!(
        out.len() >= 50,
        "the golden set covers every spec, machine type and platform"
    );
    out
}

fn registry() -> PlatformRegistry {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(golden().join("platforms")).expect("tests/golden/platforms") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("platform file");
        files.push(SourceFile::new(
            format!("plat/{}", path.file_name().unwrap().to_string_lossy()),
            &text,
        ));
    }
    files.sort_by(|a, b| a.name().cmp(b.name()));
    PlatformRegistry::with_files(&files).expect("golden platforms")
}

fn read(file: &str) -> AbiDocument {
    let text = std::fs::read_to_string(golden().join("documents").join(file)).expect("golden document");
    AbiDocument::from_kdl(&SourceFile::new(file, &text))
        .unwrap_or_else(|p| panic!("{file} is no longer readable:\n{}", support::render(&p)))
}

#[test]
fn every_golden_document_is_read_with_its_recorded_hash() {
    for (file, hash) in recorded() {
        let doc = read(&file);
        assert_eq!(doc.hash, hash, "{file}");
        // Through the command line too: `vmc hash` recomputes and prints it.
        let out = support::vmc(&["hash", golden().join("documents").join(&file).to_str().unwrap()]);
        assert!(out.status.success(), "{file}: {}", support::stderr(&out));
        assert_eq!(support::stdout(&out).trim(), hash, "{file}");
    }
}

#[test]
fn every_golden_spec_compiles_to_the_recorded_hash() {
    let registry = registry();
    for (file, hash) in recorded() {
        let stem = file.strip_suffix(".abi").expect(".abi");
        let (spec, platform) = stem.rsplit_once('@').expect("SPEC@MACHINE@PLATFORM");
        let spec_name = format!("{spec}.kdl");
        let text = std::fs::read_to_string(golden().join("specs").join(&spec_name)).expect("golden spec");
        let doc = vmc_compiler::compile(&CompileInput {
            spec: &SourceFile::new(&spec_name, &text),
            platform: registry.lookup(platform).expect("golden platform"),
            registry: &registry,
            base_dir: Some(Path::new("/srv/specs")),
            host_cpu_features: None,
        })
        .unwrap_or_else(|p| {
            panic!(
                "{spec_name} for {platform} no longer compiles:\n{}",
                support::render(&p)
            )
        });
        assert_eq!(doc.hash, hash, "{spec_name} for {platform}");
        assert_eq!(doc.abi, read(&file).abi, "{spec_name} for {platform}");
        assert_eq!(doc.requires, read(&file).requires, "{spec_name} for {platform}");
    }
}

#[test]
fn an_independent_rfc8785_implementation_gives_the_same_hash() {
    for (file, hash) in recorded() {
        let out = support::vmc(&[
            "show",
            "--json",
            golden().join("documents").join(&file).to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{file}: {}", support::stderr(&out));
        let shown: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        let hashed = serde_json::json!({"abi": shown["abi"], "format": shown["format"]});
        let text = serde_json_canonicalizer::to_string(&hashed).expect("canonical JSON");
        let ours = format!("blake3:{}", blake3::hash(text.as_bytes()).to_hex());
        assert_eq!(ours, hash, "{file}");
    }
}
