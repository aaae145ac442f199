//! This host, measured, as a compiler [`Platform`] and [`Host`]: what `vmc probe` prints,
//! what the compiler compiles against when no platform is named, and what `vmc check` /
//! `vmc run` compare an ABI's `requires` with, knowing which parts were not measured.

use std::collections::BTreeSet;

use vmc_compiler::check::{Host, Part, Unmeasured};
use vmc_compiler::cpu::{self, Reg};
use vmc_compiler::platform::{KernelVersion, PlatformSource};
use vmc_compiler::{Platform, TapOffload};

use super::probe::{CpuidReg, HostProbe};

/// The name a probed host gets unless the caller chooses one.
pub const DEFAULT_NAME: &str = "host";

impl HostProbe {
    /// The measured host as a platform named `name`. What could not be measured counts
    /// as absent (a host without `/dev/kvm` has no KVM capabilities and can give a guest
    /// no CPU feature), and is listed in [`HostProbe::unmeasured`]: [`HostProbe::to_host`]
    /// keeps both.
    pub fn to_platform(&self, name: &str) -> Platform {
        let kernel = self
            .kernel
            .as_ref()
            .ok()
            .map(|k| KernelVersion {
                major: k.major,
                minor: k.minor,
            })
            .unwrap_or(KernelVersion { major: 0, minor: 0 });
        let tap_offloads: BTreeSet<TapOffload> = match &self.tap {
            Ok(tap) => match &tap.offloads {
                Ok(o) => o.accepted.iter().collect(),
                Err(_) => BTreeSet::new(),
            },
            Err(_) => BTreeSet::new(),
        };
        let (kvm_capabilities, cpu_features) = match &self.kvm {
            Ok(kvm) => (
                kvm.present().into_iter().map(str::to_string).collect(),
                cpu::FEATURES
                    .iter()
                    .filter(|f| kvm.has_cpuid_bit(f.leaf, f.subleaf, cpuid_reg(f.reg), u32::from(f.bit)))
                    .map(|f| f.name.to_string())
                    .collect(),
            ),
            Err(_) => (BTreeSet::new(), BTreeSet::new()),
        };
        let release = self
            .kernel
            .as_ref()
            .map(|k| k.release.clone())
            .unwrap_or_else(|_| "unknown".into());
        Platform {
            name: name.to_string(),
            description: format!("measured by vmc probe on Linux {release}"),
            kernel,
            inherits: None,
            tap_offloads,
            kvm_capabilities,
            cpu_features: Some(cpu_features),
            source: PlatformSource::File("<vmc probe>".to_string()),
        }
    }

    /// This host as the compiler's checks take it: the platform of [`HostProbe::to_platform`],
    /// the parts that could not be measured, and the RAM.
    pub fn to_host(&self, name: &str) -> Host {
        Host {
            platform: self.to_platform(name),
            unmeasured: self.unmeasured(),
            memory: self.memory.as_ref().ok().copied(),
        }
    }

    /// The parts of the platform that could not be measured, each with why (empty on a
    /// host measured in full). Without `/dev/kvm`, neither the KVM capabilities nor the
    /// CPU features a guest can be given are known; without a TAP, no offload.
    pub fn unmeasured(&self) -> Vec<Unmeasured> {
        let mut out = Vec::new();
        let mut push = |part, why: &dyn std::fmt::Display| {
            out.push(Unmeasured {
                part,
                why: why.to_string(),
            })
        };
        if let Err(e) = &self.kernel {
            push(Part::Kernel, e);
        }
        match &self.tap {
            Err(e) => push(Part::TapOffloads, e),
            Ok(tap) => {
                if let Err(e) = &tap.offloads {
                    push(Part::TapOffloads, e);
                }
            }
        }
        match &self.kvm {
            Err(e) => {
                push(Part::KvmCapabilities, e);
                push(Part::CpuFeatures, e);
            }
            Ok(kvm) => {
                if let Err(e) = &kvm.supported_cpuid {
                    push(Part::CpuFeatures, e);
                }
            }
        }
        out
    }
}

fn cpuid_reg(r: Reg) -> CpuidReg {
    match r {
        Reg::Eax => CpuidReg::Eax,
        Reg::Ebx => CpuidReg::Ebx,
        Reg::Ecx => CpuidReg::Ecx,
        Reg::Edx => CpuidReg::Edx,
    }
}
