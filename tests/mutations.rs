//! User input never panics the compiler or the document reader: thousands of mutated
//! specs, platform files and ABI documents (bytes deleted, duplicated, replaced with KDL
//! punctuation) are each either accepted or refused with problems, never a panic.

#[path = "../runtime/tests/common/mod.rs"]
mod common;
mod support;

use common::XorShift;

use std::panic::{catch_unwind, AssertUnwindSafe};

use vmc_compiler::{kdlread, AbiDocument, PlatformRegistry};

const PIECES: &[&str] = &[
    "{",
    "}",
    "\"",
    ";",
    "#true",
    "#null",
    "-1",
    "0x",
    "99999999999999999999999",
    "\\",
    "/*",
    "//",
    "=",
    "(t)",
    "\n",
    "é",
    "\u{0}",
    "net",
    "mac",
    "1.5",
    "#\"",
    "/-",
];

fn mutate(text: &str, rng: &mut XorShift) -> Vec<u8> {
    let mut bytes = text.as_bytes().to_vec();
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(bytes.len() + 1);
        match rng.below(3) {
            0 if at < bytes.len() => {
                let len = 1 + rng.below(8).min(bytes.len() - at - 1);
                bytes.drain(at..at + len);
            }
            1 => {
                let piece = PIECES[rng.below(PIECES.len())];
                bytes.splice(at..at, piece.bytes());
            }
            _ if at < bytes.len() => bytes[at] = rng.next() as u8,
            _ => {}
        }
    }
    bytes
}

/// Runs `check` on many mutations of `text`; a panic fails the test naming the input.
fn never_panics(name: &str, text: &str, rounds: usize, check: impl Fn(&[u8])) {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15 ^ text.len() as u64);
    for round in 0..rounds {
        let input = mutate(text, &mut rng);
        if catch_unwind(AssertUnwindSafe(|| check(&input))).is_err() {
            panic!(
                "{name}, round {round}: panicked on\n{}",
                String::from_utf8_lossy(&input)
            );
        }
    }
}

#[test]
fn mutated_specs_compile_or_are_refused() {
    let registry = PlatformRegistry::builtin();
    for (stem, text) in support::example_specs() {
        never_panics(&stem, &text, 300, |bytes| {
            if let Ok(source) = kdlread::source_from_bytes("m.kdl", bytes) {
                let _ = support::compile_named("m.kdl", source.text(), "linux-6.9", &registry);
            }
        });
    }
}

#[test]
fn mutated_documents_are_read_or_refused() {
    let text = support::compile_text(
        &std::fs::read_to_string(support::repo().join("specs/router.kdl")).unwrap(),
        "linux-6.9",
    )
    .unwrap()
    .to_kdl();
    never_panics("router.abi", &text, 500, |bytes| {
        if let Ok(source) = kdlread::source_from_bytes("m.abi", bytes) {
            let _ = AbiDocument::from_kdl(&source);
        }
    });
}

#[test]
fn mutated_platform_files_load_or_are_refused() {
    let kdl = std::fs::read_to_string(support::repo().join("specs/platforms/acme-9.kdl")).unwrap();
    let json = std::fs::read_to_string(support::repo().join("tests/hosts/new-6.9.json")).unwrap();
    let registry = PlatformRegistry::builtin();
    for (name, text) in [("acme-9.kdl", kdl), ("new-6.9.json", json)] {
        never_panics(name, &text, 400, |bytes| {
            if let Ok(source) = kdlread::source_from_bytes(name, bytes) {
                let _ = PlatformRegistry::with_files(std::slice::from_ref(&source));
                let _ = registry.load_host(&source);
            }
        });
    }
}
