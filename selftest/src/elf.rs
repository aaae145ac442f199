//! A minimal ELF64 writer for PVH images: one PT_LOAD segment and one PT_NOTE holding
//! `XEN_ELFNOTE_PHYS32_ENTRY`, exactly what a PVH loader reads from a Linux vmlinux.

use vmc_runtime::boot::pvh::XEN_ELFNOTE_PHYS32_ENTRY;

const EHDR_SIZE: usize = 64;
const PHDR_SIZE: usize = 56;
const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const PF_X: u32 = 1;
const PF_W: u32 = 2;
const PF_R: u32 = 4;
const ET_EXEC: u16 = 2;
const EM_X86_64: u16 = 62;
/// File offset of the loaded segment; page-aligned, as linkers do.
const SEGMENT_OFFSET: usize = 0x1000;

/// Builds an ELF64 executable whose single segment `image` is loaded at `load_addr`
/// (with `bss` zero bytes after it) and whose PVH entry is `entry`.
pub fn pvh_elf(load_addr: u32, entry: u32, image: &[u8], bss: u64) -> Vec<u8> {
    let note = xen_entry_note(entry);
    let note_offset = EHDR_SIZE + 2 * PHDR_SIZE;
    let mut out = Vec::with_capacity(SEGMENT_OFFSET + image.len());

    // ELF header.
    out.extend_from_slice(b"\x7fELF");
    out.extend_from_slice(&[2, 1, 1, 0]); // ELFCLASS64, little-endian, version 1, SysV
    out.extend_from_slice(&[0; 8]);
    put16(&mut out, ET_EXEC);
    put16(&mut out, EM_X86_64);
    put32(&mut out, 1);
    put64(&mut out, u64::from(entry));
    put64(&mut out, EHDR_SIZE as u64); // e_phoff
    put64(&mut out, 0); // e_shoff
    put32(&mut out, 0); // e_flags
    put16(&mut out, EHDR_SIZE as u16);
    put16(&mut out, PHDR_SIZE as u16);
    put16(&mut out, 2); // e_phnum
    put16(&mut out, 64); // e_shentsize
    put16(&mut out, 0); // e_shnum
    put16(&mut out, 0); // e_shstrndx

    // PT_LOAD: the image, read/write/execute (the guest keeps its variables inline).
    put_phdr(
        &mut out,
        PT_LOAD,
        PF_R | PF_W | PF_X,
        SEGMENT_OFFSET as u64,
        u64::from(load_addr),
        image.len() as u64,
        image.len() as u64 + bss,
        0x1000,
    );
    // PT_NOTE: the PVH entry.
    put_phdr(
        &mut out,
        PT_NOTE,
        PF_R,
        note_offset as u64,
        0,
        note.len() as u64,
        note.len() as u64,
        4,
    );
    out.extend_from_slice(&note);
    out.resize(SEGMENT_OFFSET, 0);
    out.extend_from_slice(image);
    out
}

/// The note `"Xen"`, type 18, descriptor = the 32-bit entry address.
fn xen_entry_note(entry: u32) -> Vec<u8> {
    let mut note = Vec::new();
    put32(&mut note, 4); // namesz, "Xen\0"
    put32(&mut note, 4); // descsz
    put32(&mut note, XEN_ELFNOTE_PHYS32_ENTRY);
    note.extend_from_slice(b"Xen\0");
    put32(&mut note, entry);
    note
}

#[allow(clippy::too_many_arguments)]
fn put_phdr(out: &mut Vec<u8>, kind: u32, flags: u32, offset: u64, addr: u64, filesz: u64, memsz: u64, align: u64) {
    put32(out, kind);
    put32(out, flags);
    put64(out, offset);
    put64(out, addr); // p_vaddr
    put64(out, addr); // p_paddr: where a PVH loader puts it
    put64(out, filesz);
    put64(out, memsz);
    put64(out, align);
}

fn put16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u16_at(b: &[u8], o: usize) -> u16 {
        u16::from_le_bytes(b[o..o + 2].try_into().unwrap())
    }
    fn u32_at(b: &[u8], o: usize) -> u32 {
        u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
    }
    fn u64_at(b: &[u8], o: usize) -> u64 {
        u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
    }

    #[test]
    fn headers_describe_the_segment_and_the_note() {
        let elf = pvh_elf(0x10_0000, 0x10_0010, &[0x90; 32], 0x100);
        assert_eq!(&elf[..4], b"\x7fELF");
        assert_eq!(elf[4], 2, "ELFCLASS64");
        assert_eq!(u16_at(&elf, 0x12), EM_X86_64);
        assert_eq!(u64_at(&elf, 0x18), 0x10_0010, "e_entry");
        assert_eq!(u16_at(&elf, 0x38), 2, "e_phnum");

        let load = EHDR_SIZE;
        assert_eq!(u32_at(&elf, load), PT_LOAD);
        assert_eq!(u64_at(&elf, load + 0x18), 0x10_0000, "p_paddr");
        assert_eq!(u64_at(&elf, load + 0x20), 32, "p_filesz");
        assert_eq!(u64_at(&elf, load + 0x28), 32 + 0x100, "p_memsz");
        let offset = u64_at(&elf, load + 8) as usize;
        assert_eq!(&elf[offset..], &[0x90; 32]);

        let note = EHDR_SIZE + PHDR_SIZE;
        assert_eq!(u32_at(&elf, note), PT_NOTE);
        let n = u64_at(&elf, note + 8) as usize;
        assert_eq!(u32_at(&elf, n + 8), 18, "XEN_ELFNOTE_PHYS32_ENTRY");
        assert_eq!(&elf[n + 12..n + 16], b"Xen\0");
        assert_eq!(u32_at(&elf, n + 16), 0x10_0010);
    }
}
