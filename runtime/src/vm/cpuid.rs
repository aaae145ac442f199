//! The guest's CPUID: what KVM supports, restricted so that the feature registers hold
//! exactly the ABI's CPU features, and the XSAVE leaf only the state those features use.
//! So a guest sees the same CPU on every host that accepts its ABI.

use kvm_bindings::CpuId;

/// Which bits of one CPUID register the guest may see (the rest are cleared).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuidMask {
    pub leaf: u32,
    pub subleaf: u32,
    /// 0 = EAX, 1 = EBX, 2 = ECX, 3 = EDX.
    pub reg: u8,
    pub allowed: u32,
}

/// Clears, in every entry answering a mask's leaf and subleaf, the bits it does not allow.
pub fn restrict(cpuid: &mut CpuId, masks: &[CpuidMask]) {
    for entry in cpuid.as_mut_slice() {
        let indexed = entry.flags & kvm_bindings::KVM_CPUID_FLAG_SIGNIFCANT_INDEX != 0;
        for m in masks {
            if entry.function != m.leaf || (indexed && entry.index != m.subleaf) {
                continue;
            }
            match m.reg {
                0 => entry.eax &= m.allowed,
                1 => entry.ebx &= m.allowed,
                2 => entry.ecx &= m.allowed,
                3 => entry.edx &= m.allowed,
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::kvm_cpuid_entry2;

    #[test]
    fn keeps_only_the_allowed_bits_of_the_named_leaf() {
        let entries = [
            kvm_cpuid_entry2 {
                function: 1,
                ecx: 0xffff_ffff,
                edx: 0xffff_ffff,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 7,
                index: 0,
                flags: kvm_bindings::KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
                ebx: 0xffff_ffff,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 7,
                index: 1,
                flags: kvm_bindings::KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
                ebx: 0xffff_ffff,
                ..Default::default()
            },
        ];
        let mut cpuid = CpuId::from_entries(&entries).unwrap();
        restrict(
            &mut cpuid,
            &[
                CpuidMask {
                    leaf: 1,
                    subleaf: 0,
                    reg: 2,
                    allowed: 0x1,
                },
                CpuidMask {
                    leaf: 7,
                    subleaf: 0,
                    reg: 1,
                    allowed: 0x0001_0020,
                },
            ],
        );
        let e = cpuid.as_slice();
        assert_eq!(e[0].ecx, 0x1);
        assert_eq!(e[0].edx, 0xffff_ffff, "no mask for EDX");
        assert_eq!(e[1].ebx, 0x0001_0020);
        assert_eq!(e[2].ebx, 0xffff_ffff, "subleaf 1 untouched");
    }
}
