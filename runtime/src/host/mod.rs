//! The host side of the runtime: what this machine can do, and its TAP backend.
//!
//! - [`probe`]: [`HostProbe::measure`] measures the running kernel (release, TAP offloads
//!   by real `TUNSETOFFLOAD` calls, KVM API version, capabilities and supported CPUID).
//!   It reports facts; comparing them with an ABI's `requires` is the caller's job, and
//!   mapping them to the compiler's platform type too.
//! - [`tap`]: [`Tap`], a TAP interface carrying frames with a 12-byte virtio-net header,
//!   its offloads ([`TapOffloads`], a set of the compiler's `TapOffload`) and
//!   non-blocking scatter/gather frame I/O. It knows nothing of virtio queues.
//! - [`files`]: reading the files vmc is handed (regular files only, bounded, never
//!   blocking) and writing outputs (atomically, never through a planted link).
//!
//! Nothing here panics on what the host answers: every failure is a value naming the
//! system call, the errno, and the likely cause.

pub mod errno;
pub mod files;
pub mod platform;
pub mod probe;
pub mod tap;

pub use errno::Errno;
pub use probe::{
    CpuidEntry, CpuidReg, HostProbe, KernelRelease, KvmCapability, KvmProbe, ProbeError, SupportedCpuid,
    TapOffloadProbe, TapProbe, KVM_CAPABILITIES,
};
pub use tap::{tap_offload_features, FoundState, Tap, TapError, TapFeature, TapOffloads, TunFeatures, VNET_HDR_LEN};
