//! Spec bytes -> `vmc_compiler::compile`, for one of the built-in platforms (chosen by
//! the input's length, so that a seed spec stays intact).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmc_fuzz::{builtin, compile, source};

fuzz_target!(|data: &[u8]| {
    let Some(spec) = source("fuzz.kdl", data) else {
        return;
    };
    let registry = builtin();
    let platforms = registry.by_age();
    let platform = platforms[data.len() % platforms.len()];
    compile(&spec, platform, registry);
});
