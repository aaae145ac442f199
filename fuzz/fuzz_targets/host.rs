//! Probe file bytes, read both as KDL and as JSON -> `PlatformRegistry::load_host`; an
//! accepted host compiles a small spec, as `vmc compile --pool` would.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmc_compiler::SourceFile;
use vmc_fuzz::{builtin, compile, ok, source, SMALL_SPEC};

fuzz_target!(|data: &[u8]| {
    let registry = builtin();
    for name in ["host.kdl", "host.json"] {
        let Some(file) = source(name, data) else {
            return;
        };
        if let Some(host) = ok(registry.load_host(&file)) {
            compile(&SourceFile::new("small.kdl", SMALL_SPEC), &host, registry);
        }
    }
});
