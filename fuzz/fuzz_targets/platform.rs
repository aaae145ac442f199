//! Platform file bytes -> `PlatformRegistry::with_files` (beside the built-in ones, as
//! `--platform-path` reads them); every platform of an accepted registry compiles a
//! small spec.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmc_compiler::{PlatformRegistry, SourceFile};
use vmc_fuzz::{compile, ok, source, SMALL_SPEC};

fuzz_target!(|data: &[u8]| {
    let Some(file) = source("fuzz.kdl", data) else {
        return;
    };
    let Some(registry) = ok(PlatformRegistry::with_files(&[file])) else {
        return;
    };
    let spec = SourceFile::new("small.kdl", SMALL_SPEC);
    for platform in registry.by_age() {
        compile(&spec, platform, &registry);
    }
});
