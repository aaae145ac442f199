//! vmc's compiler: a KDL VM spec plus a host platform in, a fully expanded, hashed
//! guest-ABI document out.
//!
//! Pure: no file, network or host access. The caller reads files and probes hosts, and
//! hands the compiler text and platform values.
//!
//! * [`schema`]: the virtio-net property table every pass is driven by.
//! * [`machine`]: versioned machine types (defaults, as deltas).
//! * [`platform`]: what a host kernel provides; built-in and third-party platform files.
//! * [`cpu`]: CPU models and features.
//! * [`spec`] → [`expand`] → [`document`]: parsing, expansion with provenance, the ABI
//!   document; [`canonical`]: the hashed encoding.
//! * [`diff`], [`explain`]: reading documents for people and tools.
//! * [`check`]: whether a host can run a document; [`kube`]: the same as Kubernetes node
//!   labels and a pod's node affinity.
//! * [`kdlread`], [`jsonread`]: reading input safely, refusing repeated nodes and keys.

// Problems carry their source and span; they are built once per error, on the cold path.
#![allow(clippy::result_large_err)]

pub mod canonical;
pub mod check;
pub mod cpu;
pub mod diagnostic;
pub mod diff;
pub mod document;
pub mod expand;
pub mod explain;
pub mod jsonread;
pub mod kdlread;
pub mod kube;
pub mod limits;
pub mod lower;
pub mod machine;
pub mod platform;
pub mod reader;
pub mod schema;
pub mod spec;
pub mod writer;

pub use diagnostic::{Problem, Problems, SourceFile};
pub use document::{Abi, AbiDocument, NetDevice, Origin};
pub use expand::{compile, CompileInput};
pub use platform::{Platform, PlatformRegistry, TapOffload};
