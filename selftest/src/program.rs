//! What the self-test guest does, step by step. Each step is one function emitting
//! its part of the program; the virtio-net driver is one more step, in `net.rs`.

use iced_x86::code_asm::*;

use super::asm::GuestAsm;
use super::{cmdline_keys as keys, STACK_TOP};
use super::{count, net};
use vmc_runtime::boot::pvh::XEN_HVM_START_MAGIC;
use vmc_runtime::devices::virtio::mmio;

/// `hvm_start_info` field offsets.
const SI_CMDLINE_PADDR: i32 = 0x18;
const SI_MEMMAP_PADDR: i32 = 0x28;
const SI_MEMMAP_ENTRIES: i32 = 0x30;
/// At most this many memory-map entries are printed one by one.
const MAX_MEMMAP_LINES: u32 = 32;
/// virtio-mmio register offsets and the magic value ("virt"), as the device has them.
const VIRTIO_MMIO_MAGIC_VALUE: i32 = mmio::reg::MAGIC_VALUE as i32;
const VIRTIO_MMIO_DEVICE_ID: i32 = mmio::reg::DEVICE_ID as i32;
const VIRTIO_MMIO_MAGIC: u32 = mmio::MAGIC_VALUE;
/// virtio DeviceID of a network card.
const VIRTIO_ID_NET: u32 = vmc_runtime::devices::virtio::net::DEVICE_ID;

/// Exit code when the start_info magic is wrong.
pub const EXIT_BAD_START_INFO: u8 = 2;
/// Exit code when a CPU exception reaches the guest's IDT.
pub const EXIT_EXCEPTION: u8 = 4;

/// Legacy 8259 PIC ports and the vector base the guest programs.
const PIC_MASTER: u32 = 0x20;
const PIC_SLAVE: u32 = 0xa0;
const PIC_VECTOR_BASE: u32 = 0x20;
const PIC_EOI: u32 = 0x20;
/// COM1's IRQ line on the master PIC.
const COM1_IRQ: u32 = 4;
/// IDT entries: the exceptions and the 16 PIC vectors.
const IDT_ENTRIES: usize = 48;
/// How long to wait for the interrupt, in loop iterations.
const IRQ_WAIT_ITERATIONS: u32 = 100_000;

/// Variables of the program (32-bit, in the image).
struct Vars {
    /// Address of the command line, 0 if there is none.
    cmdline: u32,
    /// MMIO base of the first virtio-mmio device with DeviceID 1 (network), or 0.
    net_base: u32,
}

/// Emits the whole program.
pub fn emit(g: &mut GuestAsm) -> Result<(), IcedError> {
    let vars = Vars {
        cmdline: g.var32(),
        net_base: g.var32(),
    };
    entry(g)?;
    g.print("selftest: hello\n")?;
    report_cpuid(g)?;
    report_cmdline(g, &vars)?;
    report_memmap(g)?;
    probe_virtio_mmio(g, &vars)?;
    net::emit(g, vars.cmdline, vars.net_base)?;
    if_flag(g, &vars, keys::GARBAGE, poke_garbage)?;
    let net_base = vars.net_base;
    if_flag(g, &vars, keys::SCRIBBLE, |g| scribble(g, net_base))?;
    if_flag(g, &vars, keys::IRQ, check_serial_irq)?;
    count::emit(g, vars.cmdline, vars.net_base)?;
    g.print("selftest: pass\n")?;
    if_flag(g, &vars, keys::RESET, |g| {
        g.print("selftest: reset\n")?;
        g.asm().mov(al, 0xfeu32)?;
        g.asm().out(0x64u32, al)?;
        g.spin()
    })?;
    if_flag(g, &vars, keys::SPIN, |g| {
        g.print("selftest: spinning\n")?;
        g.spin()
    })?;
    if_flag(g, &vars, keys::TRIPLE_FAULT, |g| {
        g.print("selftest: triple fault\n")?;
        let empty_idt = g.data(&[0u8; 6]);
        let a = g.asm();
        a.lidt(ptr(empty_idt))?;
        a.ud2()?;
        g.spin()
    })?;
    if_flag(g, &vars, keys::HLT, |g| {
        g.print("selftest: halting\n")?;
        g.asm().hlt()?;
        g.spin()
    })?;
    exit_with_requested_code(g, &vars)
}

/// PVH entry: 32-bit protected mode, paging off, `ebx` = start_info. Sets up a
/// stack and checks the start_info magic. `ebx` keeps start_info from here on.
fn entry(g: &mut GuestAsm) -> Result<(), IcedError> {
    let mut ok = g.label();
    let a = g.asm();
    a.cli()?;
    a.cld()?;
    a.mov(esp, STACK_TOP)?;
    a.cmp(dword_ptr(ebx), XEN_HVM_START_MAGIC)?;
    a.je(ok)?;
    g.print("selftest: fail bad start_info magic\n")?;
    g.exit(EXIT_BAD_START_INFO)?;
    g.bind(&mut ok)?;
    g.asm().nop()
}

/// `selftest: cmdline <text>`; remembers the command line's address (0 if none).
/// The CPUID leaves that hold feature flags, and the registers of each that do:
/// `selftest: cpuid <leaf> <reg> <value> ...`, so a test can compare what the guest
/// sees with the ABI's CPU features.
const CPUID_FEATURE_LEAVES: &[(u32, &[&str])] = &[
    (1, &["ecx", "edx"]),
    (7, &["ebx", "ecx", "edx"]),
    (0x8000_0001, &["ecx", "edx"]),
];

fn report_cpuid(g: &mut GuestAsm) -> Result<(), IcedError> {
    for &(leaf, regs) in CPUID_FEATURE_LEAVES {
        // CPUID overwrites ebx, which holds the start_info address: keep everything.
        let a = g.asm();
        a.pushad()?;
        a.mov(eax, leaf)?;
        a.xor(ecx, ecx)?;
        a.cpuid()?;
        a.push(edx)?;
        a.push(ecx)?;
        a.push(ebx)?;
        g.print(&format!("selftest: cpuid {leaf:#x}"))?;
        for name in ["ebx", "ecx", "edx"] {
            g.asm().pop(eax)?;
            if regs.contains(&name) {
                g.print(&format!(" {name} "))?;
                g.print_hex_eax()?;
            }
        }
        g.print("\n")?;
        g.asm().popad()?;
    }
    Ok(())
}

fn report_cmdline(g: &mut GuestAsm, vars: &Vars) -> Result<(), IcedError> {
    let mut none = g.label();
    let mut done = g.label();
    g.print("selftest: cmdline ")?;
    let a = g.asm();
    a.mov(esi, dword_ptr(ebx + SI_CMDLINE_PADDR))?;
    // A command line above 4 GiB is out of reach of 32-bit code.
    a.cmp(dword_ptr(ebx + SI_CMDLINE_PADDR + 4), 0u32)?;
    a.jne(none)?;
    a.test(esi, esi)?;
    a.jz(none)?;
    a.mov(dword_ptr(vars.cmdline), esi)?;
    g.print_str_esi()?;
    g.asm().jmp(done)?;
    g.bind(&mut none)?;
    g.asm().mov(dword_ptr(vars.cmdline), 0u32)?;
    g.bind(&mut done)?;
    g.print("\n")
}

/// `selftest: memmap <n> entries`, then one line per entry.
fn report_memmap(g: &mut GuestAsm) -> Result<(), IcedError> {
    let mut capped = g.label();
    let mut next = g.label();
    let mut done = g.label();
    g.print("selftest: memmap ")?;
    g.asm().mov(eax, dword_ptr(ebx + SI_MEMMAP_ENTRIES))?;
    g.print_dec_eax()?;
    g.print(" entries\n")?;
    let a = g.asm();
    a.mov(ecx, eax)?;
    a.cmp(ecx, MAX_MEMMAP_LINES)?;
    a.jbe(capped)?;
    a.mov(ecx, MAX_MEMMAP_LINES)?;
    g.bind(&mut capped)?;
    g.asm().mov(edi, dword_ptr(ebx + SI_MEMMAP_PADDR))?;
    g.bind(&mut next)?;
    g.asm().test(ecx, ecx)?;
    g.asm().jz(done)?;
    g.print("selftest: memmap entry ")?;
    g.asm().mov(eax, dword_ptr(edi))?;
    g.asm().mov(edx, dword_ptr(edi + 4))?;
    g.print_hex64_edx_eax()?;
    g.print(" size ")?;
    g.asm().mov(eax, dword_ptr(edi + 8))?;
    g.asm().mov(edx, dword_ptr(edi + 12))?;
    g.print_hex64_edx_eax()?;
    g.print(" type ")?;
    g.asm().mov(eax, dword_ptr(edi + 16))?;
    g.print_dec_eax()?;
    g.print("\n")?;
    g.asm().add(edi, 24)?;
    g.asm().dec(ecx)?;
    g.asm().jmp(next)?;
    g.bind(&mut done)?;
    g.asm().nop()
}

/// For each `virtio_mmio.device=<size>@<base>[:<irq>]` on the command line:
/// `selftest: mmio <base> magic ok device <id>` or `selftest: mmio <base> absent`.
/// Remembers the first network device (DeviceID 1) for the driver step.
fn probe_virtio_mmio(g: &mut GuestAsm, vars: &Vars) -> Result<(), IcedError> {
    let key = g.cstr(keys::VIRTIO_MMIO_DEVICE);
    let mut next = g.label();
    let mut absent = g.label();
    let mut malformed = g.label();
    let mut not_net = g.label();
    let mut done = g.label();
    g.asm().mov(dword_ptr(vars.net_base), 0u32)?;
    g.asm().mov(esi, dword_ptr(vars.cmdline))?;
    g.asm().test(esi, esi)?;
    g.asm().jz(done)?;
    g.bind(&mut next)?;
    g.find_token(key)?;
    g.asm().test(eax, eax)?;
    g.asm().jz(done)?;
    g.parse_num()?; // size
    g.asm().test(ecx, ecx)?;
    g.asm().jz(malformed)?;
    g.asm().cmp(byte_ptr(esi), b'@' as u32)?;
    g.asm().jne(malformed)?;
    g.asm().inc(esi)?;
    g.parse_num()?; // base
    g.asm().test(ecx, ecx)?;
    g.asm().jz(malformed)?;
    g.asm().mov(edi, eax)?;
    g.print("selftest: mmio ")?;
    g.print_hex_eax()?;
    g.mmio_read32(edx, edi, VIRTIO_MMIO_MAGIC_VALUE)?;
    g.asm().cmp(edx, VIRTIO_MMIO_MAGIC)?;
    g.asm().jne(absent)?;
    g.print(" magic ok device ")?;
    g.mmio_read32(eax, edi, VIRTIO_MMIO_DEVICE_ID)?;
    g.print_dec_eax()?;
    g.print("\n")?;
    g.asm().cmp(eax, VIRTIO_ID_NET)?;
    g.asm().jne(not_net)?;
    g.asm().cmp(dword_ptr(vars.net_base), 0u32)?;
    g.asm().jne(not_net)?;
    g.asm().mov(dword_ptr(vars.net_base), edi)?;
    g.bind(&mut not_net)?;
    g.asm().jmp(next)?;
    g.bind(&mut absent)?;
    g.print(" absent\n")?;
    g.asm().jmp(next)?;
    g.bind(&mut malformed)?;
    g.print("selftest: mmio malformed\n")?;
    g.asm().jmp(next)?;
    g.bind(&mut done)?;
    g.asm().nop()
}

/// Writes and reads where no device is: ports and MMIO, several widths. The VMM
/// must shrug this off. Prints `selftest: garbage done`.
fn poke_garbage(g: &mut GuestAsm) -> Result<(), IcedError> {
    let a = g.asm();
    a.mov(eax, 0xdead_beefu32)?;
    for port in [0x80u32, 0x3ff, 0xcf8, 0xfff0] {
        a.mov(dx, port)?;
        a.out(dx, al)?;
        a.out(dx, ax)?;
        a.out(dx, eax)?;
        a.in_(eax, dx)?;
        a.in_(al, dx)?;
    }
    for addr in [0xd000_0000u32, 0xfeb0_0000, 0xfeb0_0ffc, 0xfebf_f000] {
        g.asm().mov(edi, addr)?;
        g.mmio_write32(edi, 0, eax)?;
        g.asm().mov(byte_ptr(edi + 1), 0x5au32)?;
        g.mmio_read32(eax, edi, 0)?;
        g.asm().mov(al, byte_ptr(edi + 3))?;
    }
    g.print("selftest: garbage done\n")
}

/// Writes arbitrary values (the offset times a large odd number, so every register
/// sees a different one) to every 32-bit register of the network device's slot, single
/// bytes into its configuration space, and every COM1 port; reads each back.
fn scribble(g: &mut GuestAsm, net_base: u32) -> Result<(), IcedError> {
    let mut no_device = g.label();
    let mut next = g.label();
    let mut next_byte = g.label();
    let a = g.asm();
    a.mov(edi, dword_ptr(net_base))?;
    a.test(edi, edi)?;
    a.jz(no_device)?;
    a.xor(ecx, ecx)?;
    g.bind(&mut next)?;
    let a = g.asm();
    a.imul_3(eax, ecx, 0x9e37_79b9u32 as i32)?;
    a.mov(dword_ptr(edi + ecx), eax)?;
    a.mov(eax, dword_ptr(edi + ecx))?;
    a.add(ecx, 4)?;
    a.cmp(ecx, 0x200)?;
    a.jb(next)?;
    a.mov(ecx, 0x100)?;
    g.bind(&mut next_byte)?;
    let a = g.asm();
    a.imul_3(eax, ecx, 0x6bu32 as i32)?;
    a.mov(byte_ptr(edi + ecx), al)?;
    a.mov(al, byte_ptr(edi + ecx))?;
    a.inc(ecx)?;
    a.cmp(ecx, 0x200)?;
    a.jb(next_byte)?;
    g.bind(&mut no_device)?;
    let a = g.asm();
    // COM1 last: its line control and divisor change under the console, which still
    // prints (vm-superio writes every byte it is given).
    for (i, port) in (super::asm::COM1..super::asm::COM1 + 8).enumerate() {
        a.mov(dx, port)?;
        a.mov(al, (0x35 * i as u32 + 0x11) & 0xff)?;
        a.out(dx, al)?;
        a.in_(al, dx)?;
    }
    // Back to 8 data bits, divisor latch off, so the rest prints as before.
    a.mov(dx, super::asm::COM1 + 3)?;
    a.mov(al, 0x03u32)?;
    a.out(dx, al)?;
    g.print("selftest: scribble done\n")
}

/// Enables COM1's "transmitter empty" interrupt through the legacy PIC and checks
/// that it arrives: `selftest: irq serial ok`, or `selftest: irq serial none` when
/// nothing came within a bounded wait. The handlers live at fixed addresses so the
/// IDT can be built ahead of time; their code segment is patched in from `cs` at run
/// time, so this works whatever GDT the loader left.
fn check_serial_irq(g: &mut GuestAsm) -> Result<(), IcedError> {
    let counter = g.var32();
    let com1_iir = super::asm::COM1 + 2;
    let on_exception = g.routine_in_data(|a| {
        a.mov(al, u32::from(EXIT_EXCEPTION))?;
        a.out(super::asm::DEBUG_EXIT_PORT, al)?;
        let mut spin = a.create_label();
        a.set_label(&mut spin)?;
        a.jmp(spin)
    })?;
    let on_com1 = g.routine_in_data(|a| {
        a.push(eax)?;
        a.push(edx)?;
        a.inc(dword_ptr(counter))?;
        a.mov(dx, com1_iir)?; // reading IIR acknowledges the THRE interrupt
        a.in_(al, dx)?;
        a.mov(al, PIC_EOI)?;
        a.out(PIC_MASTER, al)?;
        a.pop(edx)?;
        a.pop(eax)?;
        return_from_interrupt(a)
    })?;
    let on_other_irq = g.routine_in_data(|a| {
        a.push(eax)?;
        a.mov(al, PIC_EOI)?;
        a.out(PIC_SLAVE, al)?;
        a.out(PIC_MASTER, al)?;
        a.pop(eax)?;
        return_from_interrupt(a)
    })?;
    let mut idt = Vec::with_capacity(IDT_ENTRIES * 8);
    for vector in 0..IDT_ENTRIES as u32 {
        let handler = match vector {
            v if v == PIC_VECTOR_BASE + COM1_IRQ => on_com1,
            v if v >= PIC_VECTOR_BASE => on_other_irq,
            _ => on_exception,
        };
        // 32-bit interrupt gate, present, DPL 0; selector filled in at run time.
        idt.extend_from_slice(&(handler as u16).to_le_bytes());
        idt.extend_from_slice(&0u16.to_le_bytes());
        idt.extend_from_slice(&[0, 0x8e]);
        idt.extend_from_slice(&((handler >> 16) as u16).to_le_bytes());
    }
    let idt_addr = g.data(&idt);
    let mut idtr = ((IDT_ENTRIES * 8 - 1) as u16).to_le_bytes().to_vec();
    idtr.extend_from_slice(&idt_addr.to_le_bytes());
    let idtr_addr = g.data(&idtr);

    let mut patch = g.label();
    let mut wait = g.label();
    let mut arrived = g.label();
    let mut done = g.label();
    let a = g.asm();
    a.pushad()?;
    a.mov(eax, cs)?;
    a.mov(edi, idt_addr + 2)?;
    a.mov(ecx, IDT_ENTRIES as u32)?;
    a.set_label(&mut patch)?;
    a.mov(word_ptr(edi), ax)?;
    a.add(edi, 8)?;
    a.dec(ecx)?;
    a.jnz(patch)?;
    a.lidt(ptr(idtr_addr))?;
    // 8259 pair: edge-triggered, cascaded, vectors 0x20/0x28, only COM1 unmasked.
    for (port, value) in [
        (PIC_MASTER, 0x11),
        (PIC_MASTER + 1, PIC_VECTOR_BASE),
        (PIC_MASTER + 1, 0x04),
        (PIC_MASTER + 1, 0x01),
        (PIC_MASTER + 1, 0xff & !(1 << COM1_IRQ)),
        (PIC_SLAVE, 0x11),
        (PIC_SLAVE + 1, PIC_VECTOR_BASE + 8),
        (PIC_SLAVE + 1, 0x02),
        (PIC_SLAVE + 1, 0x01),
        (PIC_SLAVE + 1, 0xff),
    ] {
        a.mov(al, value)?;
        a.out(port, al)?;
    }
    a.mov(dword_ptr(counter), 0u32)?;
    a.mov(dx, super::asm::COM1 + 4)?; // MCR: DTR, RTS, OUT2 (the IRQ gate on PCs)
    a.mov(al, 0x0bu32)?;
    a.out(dx, al)?;
    a.sti()?;
    a.mov(dx, super::asm::COM1 + 1)?; // IER: transmitter empty
    a.mov(al, 0x02u32)?;
    a.out(dx, al)?;
    a.mov(ecx, IRQ_WAIT_ITERATIONS)?;
    a.set_label(&mut wait)?;
    a.cmp(dword_ptr(counter), 0u32)?;
    a.jne(arrived)?;
    a.dec(ecx)?;
    a.jnz(wait)?;
    a.cli()?;
    g.print(
        "selftest: irq serial none
",
    )?;
    g.asm().jmp(done)?;
    g.bind(&mut arrived)?;
    g.asm().cli()?;
    g.print(
        "selftest: irq serial ok
",
    )?;
    g.bind(&mut done)?;
    let a = g.asm();
    a.mov(dx, super::asm::COM1 + 1)?;
    a.xor(al, al)?;
    a.out(dx, al)?;
    a.popad()
}

/// Returns from an interrupt to the same privilege level without `iret`.
///
/// KVM's instruction emulator handles `iret` only in real mode, and on hosts where
/// guest kernel code is emulated (kvm_pvm) a protected-mode `iret` ends the VM with
/// an emulation failure (measured). The frame is `eip, cs, eflags`; restoring
/// `eflags` and then a near `ret 8` does the same for a handler that interrupted
/// code in its own segment.
fn return_from_interrupt(a: &mut CodeAssembler) -> Result<(), IcedError> {
    a.push(dword_ptr(esp + 8))?;
    a.popfd()?;
    a.ret_1(8)
}

/// Emits `body` to run only when the command line has the token `flag`.
fn if_flag(
    g: &mut GuestAsm,
    vars: &Vars,
    flag: &str,
    body: impl FnOnce(&mut GuestAsm) -> Result<(), IcedError>,
) -> Result<(), IcedError> {
    let key = g.cstr(flag);
    let mut skip = g.label();
    g.asm().mov(esi, dword_ptr(vars.cmdline))?;
    g.asm().test(esi, esi)?;
    g.asm().jz(skip)?;
    g.find_token(key)?;
    g.asm().test(eax, eax)?;
    g.asm().jz(skip)?;
    body(g)?;
    g.bind(&mut skip)?;
    g.asm().nop()
}

/// Exits with the code from `selftest.exit=<n>` (default 0).
fn exit_with_requested_code(g: &mut GuestAsm, vars: &Vars) -> Result<(), IcedError> {
    let key = g.cstr(keys::EXIT_CODE);
    let mut exit = g.label();
    g.asm().xor(eax, eax)?;
    g.asm().mov(esi, dword_ptr(vars.cmdline))?;
    g.asm().test(esi, esi)?;
    g.asm().jz(exit)?;
    g.find_token(key)?;
    g.asm().test(eax, eax)?;
    g.asm().jz(exit)?;
    g.parse_num()?;
    g.bind(&mut exit)?;
    g.asm().out(super::asm::DEBUG_EXIT_PORT, al)?;
    g.spin()
}
