//! Frozen expectations: the expanded ABI of every spec in `specs/` for every built-in
//! platform (or the errors, where a spec asks for what a platform lacks), and each
//! machine type's full default table. A released machine type never changes: if one of
//! its snapshots changes, add a new machine type instead.

mod support;

use vmc_compiler::{machine, PlatformRegistry};

fn settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path("../snapshots");
    s.set_prepend_module_to_snapshot(false);
    s.set_omit_expression(true);
    s
}

#[test]
fn every_spec_for_every_builtin_platform() {
    let registry = PlatformRegistry::builtin();
    let specs = support::example_specs();
    assert!(specs.len() >= 3, "specs/ holds the example specs");
    let mut compiled = 0;
    for (stem, text) in &specs {
        for platform in registry.names() {
            let name = format!("{stem}@{platform}");
            let rendered = match support::compile_named(&format!("specs/{stem}.kdl"), text, platform, &registry) {
                Ok(doc) => {
                    compiled += 1;
                    doc.to_kdl()
                }
                Err(problems) => format!("compile error:\n{}", support::render(&problems)),
            };
            settings().bind(|| insta::assert_snapshot!(name, rendered));
        }
    }
    assert!(compiled > 0);
}

#[test]
fn every_machine_type_default_table() {
    for name in machine::names() {
        let m = machine::resolve(name).unwrap();
        settings().bind(|| insta::assert_snapshot!(format!("machine@{name}"), machine::default_table(&m)));
    }
}
