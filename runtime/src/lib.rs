//! vmc's runtime: measures the host, and executes an ABI document on KVM.
//!
//! The runtime depends on the compiler's ABI types, never the other way round.

pub mod boot;
pub mod confine;
pub mod devices;
pub mod dirty;
pub mod host;
pub mod migration;
pub mod run;
pub mod vm;
