//! The Intel MultiProcessor Specification (version 1.4) tables a machine type's firmware
//! offers: the processors, the I/O APIC and how the ISA interrupts reach it.
//!
//! Without them Linux looks for the floating pointer in three places, mapping and
//! unmapping the remaining search window at every 16-byte step; under a software-assisted
//! nested KVM each of those mappings costs exits, and the fruitless search of the BIOS
//! area took 2.3 s of a 40 s boot. With the pointer in the first KiB of the EBDA, the
//! second place Linux looks, it is found at once (and the guest learns its interrupt
//! routing from the table instead of falling back to virtual-wire mode).
//!
//! Layout: the 16-byte floating pointer at [`EBDA_START`]; the configuration table (a
//! 44-byte header, then its entries) at [`CONFIG_TABLE_ADDR`] in the BIOS area, which the
//! memory map leaves out of RAM. Every value is fixed by the vCPU count alone, so the
//! tables are the same on every host.

use vm_memory::GuestMemoryMmap;

use super::{write_bytes, BootError};
use crate::vm::layout::EBDA_START;

/// Where the configuration table goes: the start of the BIOS area (0xf0000–0xfffff), out
/// of the RAM the guest is given, and large enough for the most vCPUs vmc runs.
pub const CONFIG_TABLE_ADDR: u64 = 0xf_0000;
/// The local APICs' and the I/O APIC's addresses (the architectural defaults, which KVM's
/// in-kernel irqchip uses).
pub const LOCAL_APIC_ADDR: u32 = 0xfee0_0000;
pub const IO_APIC_ADDR: u32 = 0xfec0_0000;
/// The ISA interrupts routed to the I/O APIC: all sixteen but the PIC cascade (2). KVM's
/// default routing connects GSI `n` to I/O APIC pin `n`, and every device vmc places
/// (COM1 on 4, virtio-mmio slots on 5–12) is among them.
pub const ISA_IRQS: [u8; 15] = [0, 1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

const SPEC_REVISION: u8 = 4;
/// Local APIC and I/O APIC versions as KVM's in-kernel ones report them.
const LOCAL_APIC_VERSION: u8 = 0x14;
const IO_APIC_VERSION: u8 = 0x11;
/// The CPU signature and feature flags of the processor entries: family 6 with an FPU
/// and a local APIC. Fixed, not the host's, so the table is host-independent; Linux reads
/// the real ones from CPUID.
const CPU_SIGNATURE: u32 = 0x600;
const CPU_FEATURES: u32 = 1 << 0 | 1 << 9;

const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IO_APIC: u8 = 2;
const ENTRY_IO_INTERRUPT: u8 = 3;
const ENTRY_LOCAL_INTERRUPT: u8 = 4;
const INT_VECTORED: u8 = 0;
const INT_NMI: u8 = 1;
const INT_EXTINT: u8 = 3;
const PROCESSOR_ENABLED: u8 = 1;
const PROCESSOR_BOOT: u8 = 2;
/// A local interrupt entry's destination "every local APIC".
const ALL_LOCAL_APICS: u8 = 0xff;

/// The tables for `vcpus` processors, as `(address, bytes)` pairs: the floating pointer
/// and the configuration table.
pub fn tables(vcpus: u8) -> [(u64, Vec<u8>); 2] {
    // The I/O APIC's id follows the processors' (local APIC ids 0..vcpus).
    let io_apic_id = vcpus;
    let mut entries = Vec::new();
    let mut count: u16 = 0;
    let mut entry = |bytes: &[u8]| {
        entries.extend_from_slice(bytes);
        count += 1;
    };
    for id in 0..vcpus {
        let flags = PROCESSOR_ENABLED | if id == 0 { PROCESSOR_BOOT } else { 0 };
        let mut e = vec![ENTRY_PROCESSOR, id, LOCAL_APIC_VERSION, flags];
        e.extend_from_slice(&CPU_SIGNATURE.to_le_bytes());
        e.extend_from_slice(&CPU_FEATURES.to_le_bytes());
        e.extend_from_slice(&[0; 8]);
        entry(&e);
    }
    entry(&[ENTRY_BUS, 0, b'I', b'S', b'A', b' ', b' ', b' ']);
    let mut e = vec![ENTRY_IO_APIC, io_apic_id, IO_APIC_VERSION, 1];
    e.extend_from_slice(&IO_APIC_ADDR.to_le_bytes());
    entry(&e);
    for irq in ISA_IRQS {
        // Flags 0: polarity and trigger conform to the bus (ISA: edge, active high).
        entry(&[ENTRY_IO_INTERRUPT, INT_VECTORED, 0, 0, 0, irq, io_apic_id, irq]);
    }
    // LINT0 takes the PIC's interrupts (ExtINT) and LINT1 the NMI, as on a PC.
    entry(&[ENTRY_LOCAL_INTERRUPT, INT_EXTINT, 0, 0, 0, 0, ALL_LOCAL_APICS, 0]);
    entry(&[ENTRY_LOCAL_INTERRUPT, INT_NMI, 0, 0, 0, 0, ALL_LOCAL_APICS, 1]);

    let mut config = Vec::with_capacity(44 + entries.len());
    config.extend_from_slice(b"PCMP");
    let length = u16::try_from(44 + entries.len()).expect("254 vCPUs fit in a u16 length");
    config.extend_from_slice(&length.to_le_bytes());
    config.push(SPEC_REVISION);
    config.push(0); // checksum, below
    config.extend_from_slice(b"VMC     "); // OEM id
    config.extend_from_slice(b"MICROVM     "); // product id
    config.extend_from_slice(&0u32.to_le_bytes()); // no OEM table
    config.extend_from_slice(&0u16.to_le_bytes());
    config.extend_from_slice(&count.to_le_bytes());
    config.extend_from_slice(&LOCAL_APIC_ADDR.to_le_bytes());
    config.extend_from_slice(&[0, 0, 0, 0]); // no extended table, its checksum, reserved
    config.extend_from_slice(&entries);
    config[7] = checksum(&config);

    let mut pointer = Vec::with_capacity(16);
    pointer.extend_from_slice(b"_MP_");
    pointer.extend_from_slice(&(CONFIG_TABLE_ADDR as u32).to_le_bytes());
    pointer.push(1); // length in 16-byte units
    pointer.push(SPEC_REVISION);
    pointer.push(0); // checksum, below
    pointer.extend_from_slice(&[0; 5]); // configuration table present; no IMCR
    pointer[10] = checksum(&pointer);
    [(EBDA_START, pointer), (CONFIG_TABLE_ADDR, config)]
}

/// Writes the tables for `vcpus` processors into guest memory.
pub fn write(mem: &GuestMemoryMmap, vcpus: u8) -> Result<(), BootError> {
    for (addr, bytes) in tables(vcpus) {
        write_bytes(mem, "the MP table", addr, &bytes)?;
    }
    Ok(())
}

/// The byte that makes `bytes` sum to zero (mod 256) once stored in its checksum field.
fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |sum, b| sum.wrapping_sub(*b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b))
    }

    fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_le_bytes([b[at], b[at + 1]])
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    /// Walks the configuration table as a guest does: entry sizes by type.
    fn entries(config: &[u8]) -> Vec<&[u8]> {
        let mut out = Vec::new();
        let mut at = 44;
        for _ in 0..u16_at(config, 34) {
            let len = if config[at] == ENTRY_PROCESSOR { 20 } else { 8 };
            out.push(&config[at..at + len]);
            at += len;
        }
        assert_eq!(at, config.len(), "the entries fill the table exactly");
        out
    }

    #[test]
    fn the_floating_pointer_is_where_linux_looks_and_checks_out() {
        let [(at, pointer), (config_at, _)] = tables(1);
        // Linux scans 639–640 KiB, the last KiB of base memory, in 16-byte steps.
        assert_eq!(at, 639 * 1024);
        assert_eq!(at % 16, 0);
        assert_eq!(&pointer[..4], b"_MP_");
        assert_eq!(pointer.len(), 16);
        assert_eq!(pointer[8], 1);
        assert_eq!(pointer[9], 4);
        assert_eq!(sum(&pointer), 0);
        assert_eq!(u64::from(u32_at(&pointer, 4)), config_at);
        assert_eq!(pointer[11], 0, "a configuration table, not a default configuration");
    }

    #[test]
    fn the_configuration_table_names_every_cpu_the_io_apic_and_the_isa_interrupts() {
        for vcpus in [1u8, 2, 254] {
            let [_, (_, config)] = tables(vcpus);
            assert_eq!(&config[..4], b"PCMP");
            assert_eq!(usize::from(u16_at(&config, 4)), config.len());
            assert_eq!(config[6], 4);
            assert_eq!(sum(&config), 0, "checksum");
            assert_eq!(u32_at(&config, 36), LOCAL_APIC_ADDR);
            let entries = entries(&config);
            let cpus: Vec<_> = entries.iter().filter(|e| e[0] == ENTRY_PROCESSOR).collect();
            assert_eq!(cpus.len(), usize::from(vcpus));
            for (id, e) in cpus.iter().enumerate() {
                assert_eq!(usize::from(e[1]), id);
                assert_eq!(e[3] & PROCESSOR_ENABLED, PROCESSOR_ENABLED);
                assert_eq!(e[3] & PROCESSOR_BOOT != 0, id == 0, "only vCPU 0 boots");
            }
            let io_apics: Vec<_> = entries.iter().filter(|e| e[0] == ENTRY_IO_APIC).collect();
            assert_eq!(io_apics.len(), 1);
            assert_eq!(io_apics[0][1], vcpus, "the I/O APIC id is after the CPUs'");
            assert_eq!(u32_at(io_apics[0], 4), IO_APIC_ADDR);
            let routed: Vec<(u8, u8, u8)> = entries
                .iter()
                .filter(|e| e[0] == ENTRY_IO_INTERRUPT)
                .map(|e| (e[5], e[6], e[7]))
                .collect();
            let expected: Vec<(u8, u8, u8)> = ISA_IRQS.iter().map(|&i| (i, vcpus, i)).collect();
            assert_eq!(routed, expected, "ISA IRQ n on I/O APIC pin n");
            let local: Vec<(u8, u8)> = entries
                .iter()
                .filter(|e| e[0] == ENTRY_LOCAL_INTERRUPT)
                .map(|e| (e[1], e[7]))
                .collect();
            assert_eq!(local, [(INT_EXTINT, 0), (INT_NMI, 1)]);
        }
    }

    #[test]
    fn every_device_irq_a_machine_type_places_is_routed() {
        for name in vmc_compiler::machine::names() {
            let m = vmc_compiler::machine::resolve(name).unwrap();
            for slot in 0..m.mmio.slots as usize {
                let (_, irq) = m.mmio.place(slot).unwrap();
                assert!(ISA_IRQS.contains(&(irq as u8)), "{name}: IRQ {irq}");
            }
        }
        assert!(ISA_IRQS.contains(&(crate::devices::serial::COM1_IRQ as u8)));
    }

    #[test]
    fn the_tables_fit_their_places() {
        let [(at, pointer), (config_at, config)] = tables(254);
        assert!(at + pointer.len() as u64 <= 0xa_0000, "the pointer stays in the EBDA");
        assert!(
            config_at + config.len() as u64 <= 0x10_0000,
            "the table stays in the BIOS area"
        );
        let memory = crate::vm::layout::create_guest_memory(2 << 20).unwrap();
        write(&memory, 254).unwrap();
        let map = super::super::memory_map(&memory);
        for (addr, bytes) in tables(254) {
            let end = addr + bytes.len() as u64;
            assert!(
                map.iter().all(|r| end <= r.addr || addr >= r.addr + r.size),
                "{addr:#x}: the memory map must not give the tables' bytes to the guest as RAM"
            );
        }
    }
}
