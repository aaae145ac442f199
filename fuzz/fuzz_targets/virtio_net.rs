//! The virtio-net device's transmit and receive paths over arbitrary descriptor tables,
//! headers and frames in real guest memory, with a real TAP (root; see `vmc_fuzz::net`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmc_fuzz::net::{run, NetInput};

fuzz_target!(|input: NetInput| {
    run(&input);
});
