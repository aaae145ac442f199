//! vmc's runtime: measures the host, and executes an ABI document on KVM.
//!
//! The runtime depends on the compiler's ABI types, never the other way round.

pub mod host;
