//! The self-test guest's toolbox: a 32-bit assembler with a small runtime library
//! (serial output, number formatting, command-line parsing, MMIO access).
//!
//! Everything is plain integer code, port I/O and MMIO, because guest kernel-mode code
//! may be emulated instruction by instruction (see the README, "The self-test guest").
//! The library routines are emitted once, after the program, and called.
//!
//! Known gap of that emulation (measured under kvm_pvm): `iret` in protected mode is
//! an emulation failure, so interrupt handlers return with `popfd` + `ret 8` instead
//! (see `program::return_from_interrupt`). `hlt` blocks in the kernel when the
//! irqchip is in-kernel, so waiting is a bounded polling loop.
//!
//! Data (strings, variables, and routines that must sit at known addresses, such as
//! interrupt handlers) lives in a separate area whose addresses are known while the
//! code is written: 32-bit code cannot address a label RIP-relative.
//!
//! Register conventions for library routines (all preserve every register not named
//! as an output, and need a stack):
//!
//! | routine        | input                         | output                                  |
//! |----------------|-------------------------------|-----------------------------------------|
//! | `putc`         | `al` = byte                   |                                         |
//! | `print_str`    | `esi` = NUL-terminated string |                                         |
//! | `print_dec`    | `eax` = u32                   |                                         |
//! | `print_hex`    | `eax` = u32                   | prints `0x…`, no leading zeros          |
//! | `print_hex64`  | `edx:eax` = u64               | prints `0x…`, no leading zeros          |
//! | `find_token`   | `esi` = text, `edi` = key     | `eax`=1, `esi` just after the key in the next space-separated token starting with it; else `eax`=0 |
//! | `parse_num`    | `esi` = text                  | `eax` = decimal or `0x` hex number, `ecx` = digits read, `esi` advanced |
//! | `parse_hex`    | `esi` = text                  | `eax` = hex number (no prefix), `ecx` = digits read, `esi` advanced |
//! | `print_bits`   | `eax` = word, `ecx` = number of its bit 0 | prints ` <n>` for each set bit, ascending |
//! | `checksum`     | `esi` = buffer, `ecx` = length (< 64 KiB), `eax` = partial sum | `eax` = folded 16-bit ones' complement sum, not inverted |
//!
//! `checksum` sums little-endian 16-bit loads. The Internet checksum is defined over
//! big-endian words, but a ones' complement sum of byte-swapped words is the
//! byte-swapped sum, so a result stored back with a little-endian 16-bit store lands
//! in network order. Values added to `eax` up front (a pseudo-header's protocol and
//! length) must be in that same swapped form: the big-endian field as loaded.

use iced_x86::code_asm::*;

/// The debug-exit port.
pub const DEBUG_EXIT_PORT: u32 = 0xf4;
/// COM1 data port.
pub const COM1: u32 = 0x3f8;

// The ports the VMM decodes.
const _: () = assert!(DEBUG_EXIT_PORT as u64 == vmc_runtime::devices::debug_exit::DEBUG_EXIT_PORT);
const _: () = assert!(COM1 as u64 == vmc_runtime::devices::serial::COM1_PORT);
/// COM1 line status register.
const COM1_LSR: u32 = COM1 + 5;
/// LSR bit: transmitter holding register empty.
const LSR_THRE: u32 = 0x20;

/// Labels of the library routines.
struct Routines {
    putc: CodeLabel,
    print_str: CodeLabel,
    print_dec: CodeLabel,
    print_hex: CodeLabel,
    print_hex64: CodeLabel,
    put_nibbles: CodeLabel,
    find_token: CodeLabel,
    parse_num: CodeLabel,
    parse_hex: CodeLabel,
    print_bits: CodeLabel,
    checksum: CodeLabel,
}

/// A guest program under construction: code (then its library) at the load
/// address, data at a fixed offset after it. Data has absolute addresses known while
/// the code is written, because 32-bit code cannot address labels RIP-relative.
pub struct GuestAsm {
    a: CodeAssembler,
    lib: Routines,
    data_base: u32,
    data: Vec<u8>,
}

/// Error building the guest image.
#[derive(Debug, thiserror::Error)]
pub enum AsmError {
    /// iced-x86 refused an instruction (a generator bug).
    #[error(transparent)]
    Iced(#[from] IcedError),
    /// The code grew into the data area.
    #[error("the code is {code} bytes and overlaps the data at offset {data_offset:#x}")]
    CodeTooLarge {
        /// Code size.
        code: usize,
        /// Offset of the data area.
        data_offset: u32,
    },
}

impl GuestAsm {
    /// A new 32-bit program to be loaded at `load_addr`; data starts at
    /// `load_addr + data_offset`.
    pub fn new(load_addr: u32, data_offset: u32) -> Result<Self, IcedError> {
        let mut a = CodeAssembler::new(32)?;
        let lib = Routines {
            putc: a.create_label(),
            print_str: a.create_label(),
            print_dec: a.create_label(),
            print_hex: a.create_label(),
            print_hex64: a.create_label(),
            put_nibbles: a.create_label(),
            find_token: a.create_label(),
            parse_num: a.create_label(),
            parse_hex: a.create_label(),
            print_bits: a.create_label(),
            checksum: a.create_label(),
        };
        Ok(Self {
            a,
            lib,
            data_base: load_addr + data_offset,
            data: Vec::new(),
        })
    }

    /// The raw assembler, for program-specific code.
    pub fn asm(&mut self) -> &mut CodeAssembler {
        &mut self.a
    }

    /// A fresh label.
    pub fn label(&mut self) -> CodeLabel {
        self.a.create_label()
    }

    /// Binds `label` to the next instruction.
    pub fn bind(&mut self, label: &mut CodeLabel) -> Result<(), IcedError> {
        self.a.set_label(label)
    }

    /// The address of a copy of `bytes` in the data area (4-byte aligned).
    pub fn data(&mut self, bytes: &[u8]) -> u32 {
        while !self.data.len().is_multiple_of(4) {
            self.data.push(0);
        }
        let addr = self.data_base + self.data.len() as u32;
        self.data.extend_from_slice(bytes);
        addr
    }

    /// The address of a NUL-terminated copy of `text`.
    pub fn cstr(&mut self, text: &str) -> u32 {
        let mut bytes = text.as_bytes().to_vec();
        bytes.push(0);
        self.data(&bytes)
    }

    /// The address of a zero-initialised 32-bit variable.
    pub fn var32(&mut self) -> u32 {
        self.data(&[0; 4])
    }

    /// Assembles a self-contained routine (no calls into the library) into the data
    /// area and returns its address. For code whose address must be known while the
    /// program is written, such as interrupt handlers named in an IDT.
    pub fn routine_in_data(
        &mut self,
        build: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
    ) -> Result<u32, IcedError> {
        while !self.data.len().is_multiple_of(16) {
            self.data.push(0);
        }
        let addr = self.data_base + self.data.len() as u32;
        let mut a = CodeAssembler::new(32)?;
        build(&mut a)?;
        let bytes = a.assemble(u64::from(addr))?;
        self.data.extend_from_slice(&bytes);
        Ok(addr)
    }

    /// Prints `text`; preserves every register.
    pub fn print(&mut self, text: &str) -> Result<(), IcedError> {
        let s = self.cstr(text);
        self.a.push(esi)?;
        self.a.mov(esi, s)?;
        self.a.call(self.lib.print_str)?;
        self.a.pop(esi)
    }

    /// Prints the NUL-terminated string at `esi`.
    pub fn print_str_esi(&mut self) -> Result<(), IcedError> {
        self.a.call(self.lib.print_str)
    }

    /// Prints `eax` in decimal.
    pub fn print_dec_eax(&mut self) -> Result<(), IcedError> {
        self.a.call(self.lib.print_dec)
    }

    /// Prints `eax` in hex.
    pub fn print_hex_eax(&mut self) -> Result<(), IcedError> {
        self.a.call(self.lib.print_hex)
    }

    /// Prints `edx:eax` in hex.
    pub fn print_hex64_edx_eax(&mut self) -> Result<(), IcedError> {
        self.a.call(self.lib.print_hex64)
    }

    /// Looks for `key` from `esi` on (see the module table).
    pub fn find_token(&mut self, key: u32) -> Result<(), IcedError> {
        self.a.mov(edi, key)?;
        self.a.call(self.lib.find_token)
    }

    /// Parses a number at `esi` (see the module table).
    pub fn parse_num(&mut self) -> Result<(), IcedError> {
        self.a.call(self.lib.parse_num)
    }

    /// Parses hex digits (no prefix) at `esi` (see the module table).
    pub fn parse_hex(&mut self) -> Result<(), IcedError> {
        self.a.call(self.lib.parse_hex)
    }

    /// Prints ` <n>` for every set bit of `eax`, numbering its bit 0 as `ecx`.
    pub fn print_bits(&mut self) -> Result<(), IcedError> {
        self.a.call(self.lib.print_bits)
    }

    /// `eax` = folded ones' complement sum of `ecx` bytes at `esi`, starting from `eax`
    /// (see the module docs for the byte order).
    pub fn checksum(&mut self) -> Result<(), IcedError> {
        self.a.call(self.lib.checksum)
    }

    /// Stores the low 16 bits of `eax` big-endian (network order) at `base + offset`.
    pub fn store_be16(&mut self, base: AsmRegister32, offset: i32) -> Result<(), IcedError> {
        self.a.mov(byte_ptr(base + offset), ah)?;
        self.a.mov(byte_ptr(base + offset + 1), al)
    }

    /// `dst = [base + offset]`, one 32-bit MMIO read.
    pub fn mmio_read32(&mut self, dst: AsmRegister32, base: AsmRegister32, offset: i32) -> Result<(), IcedError> {
        self.a.mov(dst, dword_ptr(base + offset))
    }

    /// `[base + offset] = value`, one 32-bit MMIO write.
    pub fn mmio_write32(&mut self, base: AsmRegister32, offset: i32, value: AsmRegister32) -> Result<(), IcedError> {
        self.a.mov(dword_ptr(base + offset), value)
    }

    /// Ends the VM with `code` through the debug-exit port; never returns (if the
    /// port is ignored, it spins).
    pub fn exit(&mut self, code: u8) -> Result<(), IcedError> {
        self.a.mov(al, u32::from(code))?;
        self.a.out(DEBUG_EXIT_PORT, al)?;
        self.spin()
    }

    /// Loops forever (without `hlt`, which would block in the kernel's irqchip).
    pub fn spin(&mut self) -> Result<(), IcedError> {
        let mut top = self.label();
        self.bind(&mut top)?;
        self.a.jmp(top)
    }

    /// Emits the library and assembles code and data into one image for `load_addr`.
    pub fn assemble(mut self, load_addr: u32) -> Result<Vec<u8>, AsmError> {
        self.emit_library()?;
        let mut image = self.a.assemble(u64::from(load_addr))?;
        let data_offset = self.data_base - load_addr;
        if image.len() > data_offset as usize {
            return Err(AsmError::CodeTooLarge {
                code: image.len(),
                data_offset,
            });
        }
        image.resize(data_offset as usize, 0);
        image.extend_from_slice(&self.data);
        Ok(image)
    }

    fn emit_library(&mut self) -> Result<(), IcedError> {
        self.emit_putc()?;
        self.emit_print_str()?;
        self.emit_print_dec()?;
        self.emit_put_nibbles()?;
        self.emit_print_hex()?;
        self.emit_print_hex64()?;
        self.emit_find_token()?;
        self.emit_parse_num()?;
        self.emit_parse_hex()?;
        self.emit_print_bits()?;
        self.emit_checksum()
    }

    fn emit_putc(&mut self) -> Result<(), IcedError> {
        let mut entry = self.lib.putc;
        let mut wait = self.label();
        let a = &mut self.a;
        a.set_label(&mut entry)?;
        a.push(edx)?;
        a.push(eax)?;
        a.mov(dx, COM1_LSR)?;
        a.set_label(&mut wait)?;
        a.in_(al, dx)?;
        a.test(al, LSR_THRE)?;
        a.jz(wait)?;
        a.pop(eax)?;
        a.mov(dx, COM1)?;
        a.out(dx, al)?;
        a.pop(edx)?;
        a.ret()
    }

    fn emit_print_str(&mut self) -> Result<(), IcedError> {
        let mut entry = self.lib.print_str;
        let putc = self.lib.putc;
        let mut next = self.label();
        let mut done = self.label();
        let a = &mut self.a;
        a.set_label(&mut entry)?;
        a.push(esi)?;
        a.push(eax)?;
        a.set_label(&mut next)?;
        a.mov(al, byte_ptr(esi))?;
        a.test(al, al)?;
        a.jz(done)?;
        a.call(putc)?;
        a.inc(esi)?;
        a.jmp(next)?;
        a.set_label(&mut done)?;
        a.pop(eax)?;
        a.pop(esi)?;
        a.ret()
    }

    fn emit_print_dec(&mut self) -> Result<(), IcedError> {
        let mut entry = self.lib.print_dec;
        let putc = self.lib.putc;
        let mut divide = self.label();
        let mut emit = self.label();
        let a = &mut self.a;
        a.set_label(&mut entry)?;
        a.pushad()?;
        a.xor(ecx, ecx)?;
        a.mov(ebx, 10u32)?;
        // Push the digits least significant first, then pop them in order.
        a.set_label(&mut divide)?;
        a.xor(edx, edx)?;
        a.div(ebx)?;
        a.push(edx)?;
        a.inc(ecx)?;
        a.test(eax, eax)?;
        a.jnz(divide)?;
        a.set_label(&mut emit)?;
        a.pop(eax)?;
        a.add(al, b'0' as u32)?;
        a.call(putc)?;
        a.dec(ecx)?;
        a.jnz(emit)?;
        a.popad()?;
        a.ret()
    }

    /// `put_nibbles`: prints the low `ecx` (1..=8) hex digits of `eax`, zero-padded.
    fn emit_put_nibbles(&mut self) -> Result<(), IcedError> {
        let mut entry = self.lib.put_nibbles;
        let putc = self.lib.putc;
        let mut next = self.label();
        let mut is_digit = self.label();
        let a = &mut self.a;
        a.set_label(&mut entry)?;
        a.pushad()?;
        a.mov(ebx, eax)?;
        a.set_label(&mut next)?;
        a.dec(ecx)?;
        a.mov(eax, ebx)?;
        a.push(ecx)?;
        a.shl(ecx, 2)?;
        a.shr(eax, cl)?;
        a.pop(ecx)?;
        a.and(eax, 0xfu32)?;
        a.add(al, b'0' as u32)?;
        a.cmp(al, b'9' as u32)?;
        a.jbe(is_digit)?;
        a.add(al, (b'a' - b'9' - 1) as u32)?;
        a.set_label(&mut is_digit)?;
        a.call(putc)?;
        a.test(ecx, ecx)?;
        a.jnz(next)?;
        a.popad()?;
        a.ret()
    }

    /// Emits: `ecx` = number of significant hex digits of `eax` (at least 1).
    fn emit_count_nibbles(&mut self) -> Result<(), IcedError> {
        let mut more = self.label();
        let mut done = self.label();
        let a = &mut self.a;
        a.mov(ecx, 1u32)?;
        a.mov(edx, eax)?;
        a.set_label(&mut more)?;
        a.shr(edx, 4)?;
        a.jz(done)?;
        a.inc(ecx)?;
        a.jmp(more)?;
        a.set_label(&mut done)?;
        Ok(())
    }

    fn emit_print_hex(&mut self) -> Result<(), IcedError> {
        let mut entry = self.lib.print_hex;
        let put_nibbles = self.lib.put_nibbles;
        let prefix = self.cstr("0x");
        let print_str = self.lib.print_str;
        self.a.set_label(&mut entry)?;
        self.a.pushad()?;
        self.a.mov(esi, prefix)?;
        self.a.call(print_str)?;
        self.emit_count_nibbles()?;
        self.a.call(put_nibbles)?;
        self.a.popad()?;
        self.a.ret()
    }

    fn emit_print_hex64(&mut self) -> Result<(), IcedError> {
        let mut entry = self.lib.print_hex64;
        let print_hex = self.lib.print_hex;
        let put_nibbles = self.lib.put_nibbles;
        let prefix = self.cstr("0x");
        let print_str = self.lib.print_str;
        let mut high = self.label();
        let mut done = self.label();
        self.a.set_label(&mut entry)?;
        self.a.pushad()?;
        self.a.test(edx, edx)?;
        self.a.jnz(high)?;
        self.a.call(print_hex)?;
        self.a.jmp(done)?;
        // High half significant: it without leading zeros, then all 8 low digits.
        self.a.set_label(&mut high)?;
        self.a.mov(ebx, eax)?;
        self.a.mov(esi, prefix)?;
        self.a.call(print_str)?;
        self.a.mov(eax, edx)?;
        self.emit_count_nibbles()?;
        self.a.call(put_nibbles)?;
        self.a.mov(eax, ebx)?;
        self.a.mov(ecx, 8u32)?;
        self.a.call(put_nibbles)?;
        self.a.set_label(&mut done)?;
        self.a.popad()?;
        self.a.ret()
    }

    fn emit_find_token(&mut self) -> Result<(), IcedError> {
        let mut entry = self.lib.find_token;
        let mut token_start = self.label();
        let mut check = self.label();
        let mut compare = self.label();
        let mut found = self.label();
        let mut skip = self.label();
        let mut not_found = self.label();
        let mut out = self.label();
        let a = &mut self.a;
        a.set_label(&mut entry)?;
        a.push(ecx)?;
        a.push(edx)?;
        // Skip separating spaces.
        a.set_label(&mut token_start)?;
        a.mov(al, byte_ptr(esi))?;
        a.cmp(al, b' ' as u32)?;
        a.jne(check)?;
        a.inc(esi)?;
        a.jmp(token_start)?;
        a.set_label(&mut check)?;
        a.test(al, al)?;
        a.jz(not_found)?;
        a.xor(ecx, ecx)?;
        // Does the token start with the key?
        a.set_label(&mut compare)?;
        a.mov(dl, byte_ptr(edi + ecx))?;
        a.test(dl, dl)?;
        a.jz(found)?;
        a.cmp(byte_ptr(esi + ecx), dl)?;
        a.jne(skip)?;
        a.inc(ecx)?;
        a.jmp(compare)?;
        a.set_label(&mut found)?;
        a.add(esi, ecx)?;
        a.mov(eax, 1u32)?;
        a.jmp(out)?;
        // No: move to the end of this token.
        a.set_label(&mut skip)?;
        a.mov(al, byte_ptr(esi))?;
        a.test(al, al)?;
        a.jz(not_found)?;
        a.cmp(al, b' ' as u32)?;
        a.je(token_start)?;
        a.inc(esi)?;
        a.jmp(skip)?;
        a.set_label(&mut not_found)?;
        a.xor(eax, eax)?;
        a.set_label(&mut out)?;
        a.pop(edx)?;
        a.pop(ecx)?;
        a.ret()
    }

    fn emit_parse_num(&mut self) -> Result<(), IcedError> {
        let mut entry = self.lib.parse_num;
        let parse_hex = self.lib.parse_hex;
        let mut decimal = self.label();
        let mut end = self.label();
        let a = &mut self.a;
        a.set_label(&mut entry)?;
        a.push(ebx)?;
        a.push(edx)?;
        a.xor(eax, eax)?;
        a.xor(ecx, ecx)?;
        a.cmp(byte_ptr(esi), b'0' as u32)?;
        a.jne(decimal)?;
        a.movzx(edx, byte_ptr(esi + 1))?;
        a.or(edx, 0x20u32)?;
        a.cmp(edx, b'x' as u32)?;
        a.jne(decimal)?;
        a.add(esi, 2)?;
        a.call(parse_hex)?;
        a.jmp(end)?;
        a.set_label(&mut decimal)?;
        a.movzx(edx, byte_ptr(esi))?;
        a.lea(ebx, ptr(edx - b'0' as i32))?;
        a.cmp(ebx, 9u32)?;
        a.ja(end)?;
        a.imul_3(eax, eax, 10)?;
        a.add(eax, ebx)?;
        a.inc(esi)?;
        a.inc(ecx)?;
        a.jmp(decimal)?;
        a.set_label(&mut end)?;
        a.pop(edx)?;
        a.pop(ebx)?;
        a.ret()
    }

    fn emit_parse_hex(&mut self) -> Result<(), IcedError> {
        let mut entry = self.lib.parse_hex;
        let mut next = self.label();
        let mut digit = self.label();
        let mut end = self.label();
        let a = &mut self.a;
        a.set_label(&mut entry)?;
        a.push(ebx)?;
        a.push(edx)?;
        a.xor(eax, eax)?;
        a.xor(ecx, ecx)?;
        a.set_label(&mut next)?;
        a.movzx(edx, byte_ptr(esi))?;
        a.lea(ebx, ptr(edx - b'0' as i32))?;
        a.cmp(ebx, 9u32)?;
        a.jbe(digit)?;
        a.or(edx, 0x20u32)?; // lower case
        a.lea(ebx, ptr(edx - b'a' as i32))?;
        a.cmp(ebx, 5u32)?;
        a.ja(end)?;
        a.add(ebx, 10u32)?;
        a.set_label(&mut digit)?;
        a.shl(eax, 4)?;
        a.or(eax, ebx)?;
        a.inc(esi)?;
        a.inc(ecx)?;
        a.jmp(next)?;
        a.set_label(&mut end)?;
        a.pop(edx)?;
        a.pop(ebx)?;
        a.ret()
    }

    fn emit_print_bits(&mut self) -> Result<(), IcedError> {
        let mut entry = self.lib.print_bits;
        let putc = self.lib.putc;
        let print_dec = self.lib.print_dec;
        let mut next = self.label();
        let mut clear = self.label();
        let mut done = self.label();
        let a = &mut self.a;
        a.set_label(&mut entry)?;
        a.pushad()?;
        a.mov(edx, eax)?;
        a.mov(ebx, ecx)?;
        a.set_label(&mut next)?;
        a.test(edx, edx)?; // no bits left: stop early
        a.jz(done)?;
        a.test(edx, 1u32)?;
        a.jz(clear)?;
        a.mov(al, b' ' as u32)?;
        a.call(putc)?;
        a.mov(eax, ebx)?;
        a.call(print_dec)?;
        a.set_label(&mut clear)?;
        a.shr(edx, 1)?;
        a.inc(ebx)?;
        a.jmp(next)?;
        a.set_label(&mut done)?;
        a.popad()?;
        a.ret()
    }

    /// A 32-bit accumulator of 16-bit words cannot overflow below 64 KiB of input
    /// (32768 words of at most 0xffff, plus a small start value), so no `adc` chain.
    fn emit_checksum(&mut self) -> Result<(), IcedError> {
        let mut entry = self.lib.checksum;
        let mut words = self.label();
        let mut tail = self.label();
        let mut fold = self.label();
        let mut done = self.label();
        let a = &mut self.a;
        a.set_label(&mut entry)?;
        a.push(ecx)?;
        a.push(edx)?;
        a.push(esi)?;
        a.set_label(&mut words)?;
        a.cmp(ecx, 2u32)?;
        a.jb(tail)?;
        a.movzx(edx, word_ptr(esi))?;
        a.add(eax, edx)?;
        a.add(esi, 2)?;
        a.sub(ecx, 2)?;
        a.jmp(words)?;
        // An odd last byte counts as a word padded with a zero byte after it.
        a.set_label(&mut tail)?;
        a.test(ecx, ecx)?;
        a.jz(fold)?;
        a.movzx(edx, byte_ptr(esi))?;
        a.add(eax, edx)?;
        a.set_label(&mut fold)?;
        a.mov(edx, eax)?;
        a.shr(edx, 16)?;
        a.jz(done)?;
        a.and(eax, 0xffffu32)?;
        a.add(eax, edx)?;
        a.jmp(fold)?;
        a.set_label(&mut done)?;
        a.pop(esi)?;
        a.pop(edx)?;
        a.pop(ecx)?;
        a.ret()
    }
}
