//! Document bytes -> `AbiDocument::from_kdl`; an accepted document must be a fixed point.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmc_compiler::AbiDocument;
use vmc_fuzz::{ok, round_trip, source};

fuzz_target!(|data: &[u8]| {
    let Some(text) = source("fuzz.abi", data) else {
        return;
    };
    if let Some(doc) = ok(AbiDocument::from_kdl(&text)) {
        round_trip(&doc);
    }
});
