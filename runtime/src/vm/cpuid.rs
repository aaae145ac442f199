//! The guest's CPUID: what KVM supports, with the features the ABI does not list
//! cleared, so a guest sees the same CPU model on every host that accepts the ABI.

use kvm_bindings::CpuId;

/// One CPUID feature bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuidBit {
    pub leaf: u32,
    pub subleaf: u32,
    /// 0 = EAX, 1 = EBX, 2 = ECX, 3 = EDX.
    pub reg: u8,
    pub bit: u8,
}

/// Clears every bit of `hidden` in the entries that answer its leaf and subleaf.
pub fn hide(cpuid: &mut CpuId, hidden: &[CpuidBit]) {
    for entry in cpuid.as_mut_slice() {
        let indexed = entry.flags & kvm_bindings::KVM_CPUID_FLAG_SIGNIFCANT_INDEX != 0;
        for h in hidden {
            if entry.function != h.leaf || (indexed && entry.index != h.subleaf) || h.bit >= 32 {
                continue;
            }
            let mask = !(1u32 << h.bit);
            match h.reg {
                0 => entry.eax &= mask,
                1 => entry.ebx &= mask,
                2 => entry.ecx &= mask,
                3 => entry.edx &= mask,
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
    fn hides_only_the_named_bits_of_the_named_leaf() {
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
        hide(
            &mut cpuid,
            &[
                CpuidBit {
                    leaf: 1,
                    subleaf: 0,
                    reg: 2,
                    bit: 0,
                },
                CpuidBit {
                    leaf: 7,
                    subleaf: 0,
                    reg: 1,
                    bit: 16,
                },
            ],
        );
        let e = cpuid.as_slice();
        assert_eq!(e[0].ecx, 0xffff_fffe);
        assert_eq!(e[0].edx, 0xffff_ffff);
        assert_eq!(e[1].ebx, 0xfffe_ffff);
        assert_eq!(e[2].ebx, 0xffff_ffff, "subleaf 1 untouched");
    }
}
