//! Identity-mapped page tables for a 64-bit entry: the first 4 GiB with 2 MiB pages.
//!
//! Four GiB rather than one so that the MMIO hole (device window, APICs) is mapped too:
//! a 64-bit guest can reach its devices before it builds its own tables.

use super::layout::{PDPT_ADDR, PD_ADDR, PML4_ADDR};
use super::{write_bytes, BootError};
use vm_memory::GuestMemoryMmap;

const PRESENT_WRITABLE: u64 = 0x3;
const PAGE_SIZE_2M: u64 = 0x80;
const PAGE_DIRECTORIES: u64 = 4;

/// Writes PML4, PDPT and four page directories; returns the value for `cr3`.
pub fn write_identity_map(mem: &GuestMemoryMmap) -> Result<u64, BootError> {
    let mut pml4 = [0u64; 512];
    pml4[0] = PDPT_ADDR | PRESENT_WRITABLE;
    let mut pdpt = [0u64; 512];
    for (i, entry) in pdpt.iter_mut().take(PAGE_DIRECTORIES as usize).enumerate() {
        *entry = (PD_ADDR + i as u64 * 0x1000) | PRESENT_WRITABLE;
    }
    write_table(mem, PML4_ADDR, &pml4)?;
    write_table(mem, PDPT_ADDR, &pdpt)?;
    for dir in 0..PAGE_DIRECTORIES {
        let mut pd = [0u64; 512];
        for (i, entry) in pd.iter_mut().enumerate() {
            let addr = ((dir << 9) + i as u64) << 21;
            *entry = addr | PRESENT_WRITABLE | PAGE_SIZE_2M;
        }
        write_table(mem, PD_ADDR + dir * 0x1000, &pd)?;
    }
    Ok(PML4_ADDR)
}

fn write_table(mem: &GuestMemoryMmap, addr: u64, table: &[u64; 512]) -> Result<(), BootError> {
    let bytes: Vec<u8> = table.iter().flat_map(|e| e.to_le_bytes()).collect();
    write_bytes(mem, "the page tables", addr, &bytes)
}
