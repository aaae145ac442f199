//! CPU models: named sets of CPU features, expanded into the ABI as an explicit list.
//!
//! The named models are the x86-64 psABI micro-architecture levels. Each feature says
//! where CPUID reports it, so the runtime can mask the guest's CPUID to exactly the
//! ABI's list and a probe can name what a host lacks; and QEMU's name for it, for
//! lowering.

/// A CPUID register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reg {
    Eax,
    Ebx,
    Ecx,
    Edx,
}

/// One CPU feature and where CPUID reports it.
#[derive(Debug)]
pub struct CpuFeature {
    pub name: &'static str,
    pub leaf: u32,
    pub subleaf: u32,
    pub reg: Reg,
    pub bit: u8,
    /// QEMU's `-cpu` flag name.
    pub qemu: &'static str,
}

const fn f(name: &'static str, leaf: u32, subleaf: u32, reg: Reg, bit: u8, qemu: &'static str) -> CpuFeature {
    CpuFeature {
        name,
        leaf,
        subleaf,
        reg,
        bit,
        qemu,
    }
}

use Reg::{Ebx, Ecx, Edx};

/// Architectural features the vmc machine types give a guest besides its CPU model's
/// (the psABI levels assume an operating system already has them; see `machine.rs`): paging and its
/// extensions, the local APIC (x2APIC, TSC deadline), the TSC and MSRs, NX, SYSENTER,
/// and the bit that tells the guest it runs under a hypervisor.
pub const BASELINE: &[&str] = &[
    "apic",
    "clflush",
    "de",
    "hypervisor",
    "mca",
    "mce",
    "msr",
    "mtrr",
    "nx",
    "pae",
    "pat",
    "pge",
    "pse",
    "pse36",
    "sep",
    "tsc",
    "tsc-deadline",
    "vme",
    "x2apic",
];

/// Every CPU feature vmc names, sorted by name.
pub static FEATURES: &[CpuFeature] = &[
    f("apic", 1, 0, Edx, 9, "apic"),
    f("avx", 1, 0, Ecx, 28, "avx"),
    f("avx2", 7, 0, Ebx, 5, "avx2"),
    f("avx512bw", 7, 0, Ebx, 30, "avx512bw"),
    f("avx512cd", 7, 0, Ebx, 28, "avx512cd"),
    f("avx512dq", 7, 0, Ebx, 17, "avx512dq"),
    f("avx512f", 7, 0, Ebx, 16, "avx512f"),
    f("avx512vl", 7, 0, Ebx, 31, "avx512vl"),
    f("bmi1", 7, 0, Ebx, 3, "bmi1"),
    f("bmi2", 7, 0, Ebx, 8, "bmi2"),
    f("clflush", 1, 0, Edx, 19, "clflush"),
    f("cmov", 1, 0, Edx, 15, "cmov"),
    f("cx16", 1, 0, Ecx, 13, "cx16"),
    f("cx8", 1, 0, Edx, 8, "cx8"),
    f("de", 1, 0, Edx, 2, "de"),
    f("f16c", 1, 0, Ecx, 29, "f16c"),
    f("fma", 1, 0, Ecx, 12, "fma"),
    f("fpu", 1, 0, Edx, 0, "fpu"),
    f("fxsr", 1, 0, Edx, 24, "fxsr"),
    f("hypervisor", 1, 0, Ecx, 31, "hypervisor"),
    f("lahf-lm", 0x8000_0001, 0, Ecx, 0, "lahf-lm"),
    f("lm", 0x8000_0001, 0, Edx, 29, "lm"),
    f("lzcnt", 0x8000_0001, 0, Ecx, 5, "abm"),
    f("mca", 1, 0, Edx, 14, "mca"),
    f("mce", 1, 0, Edx, 7, "mce"),
    f("mmx", 1, 0, Edx, 23, "mmx"),
    f("movbe", 1, 0, Ecx, 22, "movbe"),
    f("msr", 1, 0, Edx, 5, "msr"),
    f("mtrr", 1, 0, Edx, 12, "mtrr"),
    f("nx", 0x8000_0001, 0, Edx, 20, "nx"),
    f("pae", 1, 0, Edx, 6, "pae"),
    f("pat", 1, 0, Edx, 16, "pat"),
    f("pge", 1, 0, Edx, 13, "pge"),
    f("popcnt", 1, 0, Ecx, 23, "popcnt"),
    f("pse", 1, 0, Edx, 3, "pse"),
    f("pse36", 1, 0, Edx, 17, "pse36"),
    f("sep", 1, 0, Edx, 11, "sep"),
    f("sse", 1, 0, Edx, 25, "sse"),
    f("sse2", 1, 0, Edx, 26, "sse2"),
    f("sse3", 1, 0, Ecx, 0, "pni"),
    f("sse4.1", 1, 0, Ecx, 19, "sse4.1"),
    f("sse4.2", 1, 0, Ecx, 20, "sse4.2"),
    f("ssse3", 1, 0, Ecx, 9, "ssse3"),
    f("syscall", 0x8000_0001, 0, Edx, 11, "syscall"),
    f("tsc", 1, 0, Edx, 4, "tsc"),
    f("tsc-deadline", 1, 0, Ecx, 24, "tsc-deadline"),
    f("vme", 1, 0, Edx, 1, "vme"),
    f("x2apic", 1, 0, Ecx, 21, "x2apic"),
    f("xsave", 1, 0, Ecx, 26, "xsave"),
];

/// The CPUID registers that hold feature flags: the guest sees exactly the ABI's
/// features there, and nothing else (see the runtime's CPUID setup).
pub const FEATURE_REGISTERS: &[(u32, u32, Reg)] = &[
    (1, 0, Reg::Ecx),
    (1, 0, Reg::Edx),
    (7, 0, Reg::Ebx),
    (7, 0, Reg::Ecx),
    (7, 0, Reg::Edx),
    (0x8000_0001, 0, Reg::Ecx),
    (0x8000_0001, 0, Reg::Edx),
];

/// The bits of one feature register that `features` turn on.
pub fn register_mask<'a>(leaf: u32, subleaf: u32, reg: Reg, features: impl IntoIterator<Item = &'a str>) -> u32 {
    features
        .into_iter()
        .filter_map(feature)
        .filter(|f| f.leaf == leaf && f.subleaf == subleaf && f.reg == reg)
        .fold(0, |mask, f| mask | (1 << f.bit))
}

pub fn feature(name: &str) -> Option<&'static CpuFeature> {
    FEATURES.iter().find(|f| f.name == name)
}

/// A named CPU model.
#[derive(Debug)]
pub struct CpuModel {
    pub name: &'static str,
    /// The model this one extends.
    pub base: Option<&'static str>,
    /// Features added to the base.
    pub adds: &'static [&'static str],
    pub doc: &'static str,
}

/// The psABI levels, each a delta on the one before.
pub static MODELS: &[CpuModel] = &[
    CpuModel {
        name: "x86-64-v1",
        base: None,
        adds: &["cmov", "cx8", "fpu", "fxsr", "lm", "mmx", "sse", "sse2", "syscall"],
        doc: "the x86-64 baseline",
    },
    CpuModel {
        name: "x86-64-v2",
        base: Some("x86-64-v1"),
        adds: &["cx16", "lahf-lm", "popcnt", "sse3", "sse4.1", "sse4.2", "ssse3"],
        doc: "x86-64 psABI level 2 (Nehalem and later)",
    },
    CpuModel {
        name: "x86-64-v3",
        base: Some("x86-64-v2"),
        adds: &["avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "lzcnt", "movbe", "xsave"],
        doc: "x86-64 psABI level 3 (Haswell and later)",
    },
    CpuModel {
        name: "x86-64-v4",
        base: Some("x86-64-v3"),
        adds: &["avx512bw", "avx512cd", "avx512dq", "avx512f", "avx512vl"],
        doc: "x86-64 psABI level 4 (AVX-512)",
    },
];

/// The model that takes the probed host's features: not one of [`MODELS`], and not
/// migratable.
pub const HOST_MODEL: &str = "host";

pub fn model(name: &str) -> Option<&'static CpuModel> {
    MODELS.iter().find(|m| m.name == name)
}

/// The model's full feature list, sorted.
pub fn expand(model: &CpuModel) -> Vec<&'static str> {
    let mut features: Vec<&'static str> = model.adds.to_vec();
    if let Some(base) = model.base.and_then(self::model) {
        features.extend(expand(base));
    }
    features.sort_unstable();
    features.dedup();
    features
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_are_sorted_unique_and_known() {
        let names: Vec<_> = FEATURES.iter().map(|f| f.name).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(names, sorted);
        for m in MODELS {
            for name in m.adds {
                assert!(feature(name).is_some(), "{} names unknown {name}", m.name);
            }
            if let Some(base) = m.base {
                assert!(model(base).is_some());
            }
        }
    }

    #[test]
    fn the_baseline_names_known_features_outside_every_model() {
        for name in BASELINE {
            assert!(feature(name).is_some(), "{name}");
            assert!(
                !expand(model("x86-64-v4").unwrap()).contains(name),
                "{name} is a model feature"
            );
        }
    }

    #[test]
    fn register_masks_collect_the_named_bits() {
        assert_eq!(register_mask(1, 0, Reg::Ecx, ["sse3", "x2apic", "avx2"]), 1 | (1 << 21));
        assert_eq!(register_mask(7, 0, Reg::Ebx, ["avx2", "sse3"]), 1 << 5);
        let mut covered = 0;
        for &(leaf, subleaf, reg) in FEATURE_REGISTERS {
            covered += FEATURES
                .iter()
                .filter(|f| f.leaf == leaf && f.subleaf == subleaf && f.reg == reg)
                .count();
        }
        assert_eq!(covered, FEATURES.len(), "every feature lives in a feature register");
    }

    #[test]
    fn each_level_contains_the_one_below() {
        for pair in MODELS.windows(2) {
            let lower = expand(&pair[0]);
            let upper = expand(&pair[1]);
            assert!(lower.iter().all(|f| upper.contains(f)));
            assert!(upper.len() > lower.len());
        }
        assert!(expand(model("x86-64-v4").unwrap()).contains(&"avx512f"));
        assert!(!expand(model("x86-64-v3").unwrap()).contains(&"avx512f"));
    }
}
