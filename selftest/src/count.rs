//! Count mode (`selftest.count`): the guest counts for ever, touching memory as it
//! goes, so that a snapshot/restore or a live migration of the VM shows whether the
//! guest carried on where it was: the console must read `selftest: count N` for
//! N = 1, 2, 3, … with no gap and no repeat.
//!
//! It runs after the probe and the virtio-net driver (whose transmit flow, and receive
//! step if asked for, run as usual first), instead of `selftest: pass`, and never exits
//! unless something was lost. Lines:
//!
//! ```text
//! selftest: counting, <P> pages at 0x400000, delay <D>[, watching device <base>]
//! selftest: count 1
//! selftest: count 2
//! …
//! ```
//!
//! Iteration N (N = 1, 2, …):
//!
//! 1. N is kept in memory (a variable in the image) and in `ebp`; the two must agree,
//!    else the memory under the guest changed.
//! 2. It touches page `(N - 1) mod P` of the region at [`COUNT_BASE`] (P =
//!    `selftest.count-pages`, default [`DEFAULT_PAGES`]): when N > P it first checks
//!    that the page still holds what iteration N - P wrote there, then writes N at the
//!    page's offset 0 and `!N` (bitwise not) at offset 4092. So every iteration
//!    dirties a page, P pages cycle, and the first and last word of each page are
//!    checked. A mismatch prints `selftest: count memory lost at N` and exits with
//!    [`EXIT_COUNT_MEMORY`].
//! 3. When a virtio-net device was driven to DRIVER_OK, it reads the device's Status
//!    register: DRIVER_OK must still be set and DEVICE_NEEDS_RESET and FAILED clear,
//!    else it prints `selftest: count device status <s> at N` and exits with
//!    [`EXIT_COUNT_DEVICE`].
//! 4. It prints `selftest: count N`, then busy-waits `selftest.count-delay` loop
//!    iterations (default [`DEFAULT_DELAY`]; two instructions each).
//!
//! A malformed key, or a region that is not all RAM in the guest's memory map, prints
//! `selftest: count bad …` and exits with [`EXIT_COUNT_ARGS`].

use iced_x86::code_asm::*;

use super::asm::GuestAsm;
use super::cmdline_keys as keys;
use vmc_runtime::devices::virtio::{mmio::reg, status};

/// First byte of the region count mode touches (4 MiB: above the image, and above
/// the network driver's rings and buffers, which end below 3 MiB).
pub const COUNT_BASE: u32 = 0x40_0000;
/// Default `selftest.count-pages=`: 256 pages, 1 MiB, 4 MiB to 5 MiB.
pub const DEFAULT_PAGES: u32 = 256;
/// Default `selftest.count-delay=`: busy-loop iterations between lines. Where guest
/// kernel code is emulated one iteration takes about 1 µs, and a line about 2.4 ms
/// with this delay (1.1 ms without: the serial port's exits); measured with
/// `vmc run specs/selftest-count.kdl`. Where it is not, the delay is negligible.
pub const DEFAULT_DELAY: u32 = 1000;
/// Bytes per page touched.
pub const PAGE_SIZE: u32 = 0x1000;
/// Most pages accepted: the region must end at or below 3 GiB (the end of low RAM in
/// vmc's memory map), which also keeps its end within 32 bits.
pub const MAX_PAGES: u32 = (0xc000_0000 - COUNT_BASE) / PAGE_SIZE;

/// Exit code when the memory count mode wrote is not what it reads back.
pub const EXIT_COUNT_MEMORY: u8 = 20;
/// Exit code when the network device lost DRIVER_OK (or needs a reset, or failed).
pub const EXIT_COUNT_DEVICE: u8 = 21;
/// Exit code for a malformed `selftest.count-*` key or a region that is not RAM.
pub const EXIT_COUNT_ARGS: u8 = 22;

// The region lies above the driver scratch area (2 MiB to 3 MiB), and the default
// fits a 64 MiB guest with room to spare.
const _: () = assert!(COUNT_BASE >= super::SCRATCH_ADDR + 0x10_0000);
const _: () = assert!(COUNT_BASE + DEFAULT_PAGES * PAGE_SIZE <= 64 << 20);

/// `hvm_start_info` memory map fields (as in `program.rs`).
const SI_MEMMAP_PADDR: i32 = 0x28;
const SI_MEMMAP_ENTRIES: i32 = 0x30;
/// e820 type of usable RAM.
const E820_RAM: u32 = 1;

const STATUS: i32 = reg::STATUS as i32;
const STATUS_BAD: u32 = status::DEVICE_NEEDS_RESET | status::FAILED;

/// Count mode's variables (addresses in the guest's data area).
struct Count {
    cmdline: u32,
    net_base: u32,
    pages: u32,
    delay: u32,
    /// The count so far (the last N touched).
    count: u32,
    /// Index of the page the next iteration touches.
    next_page: u32,
    region_end: u32,
}

/// Emits count mode: nothing happens unless the command line has the token
/// `selftest.count` exactly; then it never returns. `cmdline` and `net_base` are the
/// program's variables (command line address, network device's MMIO base or 0, the
/// device driven to DRIVER_OK when not 0). Expects `ebx` = start_info.
pub fn emit(g: &mut GuestAsm, cmdline: u32, net_base: u32) -> Result<(), IcedError> {
    let c = Count {
        cmdline,
        net_base,
        pages: g.data(&DEFAULT_PAGES.to_le_bytes()),
        delay: g.data(&DEFAULT_DELAY.to_le_bytes()),
        count: g.var32(),
        next_page: g.var32(),
        region_end: g.var32(),
    };
    let mut skip = g.label();
    if_not_exact_token(g, cmdline, keys::COUNT, skip)?;
    key_u32(g, &c, keys::COUNT_PAGES, c.pages)?;
    key_u32(g, &c, keys::COUNT_DELAY, c.delay)?;
    check_region(g, &c)?;
    announce(g, &c)?;
    count_loop(g, &c)?;
    g.bind(&mut skip)?;
    g.asm().nop()
}

/// Jumps to `absent` unless the command line has a token that is exactly `token`
/// (`find_token` matches prefixes, and `selftest.count-pages=` starts with
/// `selftest.count`).
fn if_not_exact_token(g: &mut GuestAsm, cmdline: u32, token: &str, absent: CodeLabel) -> Result<(), IcedError> {
    let key = g.cstr(token);
    let mut again = g.label();
    let mut rest = g.label();
    let mut found = g.label();
    g.asm().mov(esi, dword_ptr(cmdline))?;
    g.asm().test(esi, esi)?;
    g.asm().jz(absent)?;
    g.bind(&mut again)?;
    g.find_token(key)?;
    let a = g.asm();
    a.test(eax, eax)?;
    a.jz(absent)?;
    a.mov(al, byte_ptr(esi))?;
    a.cmp(al, b' ' as u32)?;
    a.je(found)?;
    a.test(al, al)?;
    a.jz(found)?;
    // A longer token: skip the rest of it and look on.
    a.set_label(&mut rest)?;
    a.mov(al, byte_ptr(esi))?;
    a.test(al, al)?;
    a.jz(absent)?;
    a.cmp(al, b' ' as u32)?;
    a.je(again)?;
    a.inc(esi)?;
    a.jmp(rest)?;
    a.set_label(&mut found)?;
    a.nop()
}

/// `key<number>` (decimal or 0x hex, ending the token) into `var` when present;
/// anything else after the key prints `selftest: count bad <key>` and exits.
fn key_u32(g: &mut GuestAsm, c: &Count, key: &str, var: u32) -> Result<(), IcedError> {
    let key_addr = g.cstr(key);
    let mut absent = g.label();
    let mut ok = g.label();
    g.asm().mov(esi, dword_ptr(c.cmdline))?;
    g.find_token(key_addr)?;
    g.asm().test(eax, eax)?;
    g.asm().jz(absent)?;
    g.parse_num()?;
    let mut bad = g.label();
    let a = g.asm();
    a.test(ecx, ecx)?;
    a.jz(bad)?;
    a.mov(dl, byte_ptr(esi))?;
    a.test(dl, dl)?;
    a.jz(ok)?;
    a.cmp(dl, b' ' as u32)?;
    a.je(ok)?;
    g.bind(&mut bad)?;
    g.print(&format!("selftest: count bad {key}\n"))?;
    g.exit(EXIT_COUNT_ARGS)?;
    g.bind(&mut ok)?;
    g.asm().mov(dword_ptr(var), eax)?;
    g.bind(&mut absent)?;
    g.asm().nop()
}

/// 1 <= pages <= [`MAX_PAGES`], and the region lies inside one RAM entry of the
/// memory map (so no write lands outside RAM, where a read-back would look like lost
/// memory). Stores the region's end.
fn check_region(g: &mut GuestAsm, c: &Count) -> Result<(), IcedError> {
    let mut bad_pages = g.label();
    let mut next = g.label();
    let mut skip = g.label();
    let mut not_ram = g.label();
    let mut ram = g.label();
    let a = g.asm();
    a.mov(eax, dword_ptr(c.pages))?;
    a.test(eax, eax)?;
    a.jz(bad_pages)?;
    a.cmp(eax, MAX_PAGES)?;
    a.ja(bad_pages)?;
    a.shl(eax, 12)?;
    a.add(eax, COUNT_BASE)?;
    a.mov(dword_ptr(c.region_end), eax)?;
    a.mov(ecx, dword_ptr(ebx + SI_MEMMAP_ENTRIES))?;
    a.mov(esi, dword_ptr(ebx + SI_MEMMAP_PADDR))?;
    a.set_label(&mut next)?;
    a.test(ecx, ecx)?;
    a.jz(not_ram)?;
    a.cmp(dword_ptr(esi + 16), E820_RAM)?;
    a.jne(skip)?;
    a.cmp(dword_ptr(esi + 4), 0u32)?; // starts above 4 GiB
    a.jne(skip)?;
    a.cmp(dword_ptr(esi), COUNT_BASE)?;
    a.ja(skip)?;
    // The entry's end as 64 bits: at or above 4 GiB covers any region.
    a.mov(eax, dword_ptr(esi))?;
    a.xor(edx, edx)?;
    a.add(eax, dword_ptr(esi + 8))?;
    a.adc(edx, dword_ptr(esi + 12))?;
    a.jnz(ram)?;
    a.cmp(eax, dword_ptr(c.region_end))?;
    a.jae(ram)?;
    a.set_label(&mut skip)?;
    a.add(esi, 24)?;
    a.dec(ecx)?;
    a.jmp(next)?;

    g.bind(&mut bad_pages)?;
    g.print(&format!(
        "selftest: count bad {}: need 1 to {MAX_PAGES}\n",
        keys::COUNT_PAGES
    ))?;
    g.exit(EXIT_COUNT_ARGS)?;
    g.bind(&mut not_ram)?;
    g.print(&format!("selftest: count bad region: {COUNT_BASE:#x} to "))?;
    g.asm().mov(eax, dword_ptr(c.region_end))?;
    g.print_hex_eax()?;
    g.print(" is not RAM\n")?;
    g.exit(EXIT_COUNT_ARGS)?;
    g.bind(&mut ram)?;
    g.asm().nop()
}

/// `selftest: counting, <P> pages at <base>, delay <D>[, watching device <base>]`.
fn announce(g: &mut GuestAsm, c: &Count) -> Result<(), IcedError> {
    let mut no_device = g.label();
    g.print("selftest: counting, ")?;
    g.asm().mov(eax, dword_ptr(c.pages))?;
    g.print_dec_eax()?;
    g.print(&format!(" pages at {COUNT_BASE:#x}, delay "))?;
    g.asm().mov(eax, dword_ptr(c.delay))?;
    g.print_dec_eax()?;
    g.asm().mov(eax, dword_ptr(c.net_base))?;
    g.asm().test(eax, eax)?;
    g.asm().jz(no_device)?;
    g.print(", watching device ")?;
    g.print_hex_eax()?;
    g.bind(&mut no_device)?;
    g.print("\n")
}

/// The endless loop (see the module docs). `ebp` is N; the library preserves it.
fn count_loop(g: &mut GuestAsm, c: &Count) -> Result<(), IcedError> {
    let mut top = g.label();
    let mut fresh = g.label();
    let mut wrapped = g.label();
    let mut device_ok = g.label();
    let mut paced = g.label();
    let mut delay = g.label();
    let mut lost = g.label();
    let mut device_lost = g.label();
    let a = g.asm();
    a.xor(ebp, ebp)?;
    a.mov(dword_ptr(c.count), 0u32)?;
    a.mov(dword_ptr(c.next_page), 0u32)?;

    a.set_label(&mut top)?;
    // 1. The count, in memory and in a register.
    a.inc(ebp)?;
    a.mov(eax, dword_ptr(c.count))?;
    a.inc(eax)?;
    a.cmp(eax, ebp)?;
    a.jne(lost)?;
    a.mov(dword_ptr(c.count), ebp)?;
    // 2. The page: check what iteration N - P left, then write N and !N.
    a.mov(edi, dword_ptr(c.next_page))?;
    a.shl(edi, 12)?;
    a.add(edi, COUNT_BASE)?;
    a.cmp(ebp, dword_ptr(c.pages))?;
    a.jbe(fresh)?;
    a.mov(eax, ebp)?;
    a.sub(eax, dword_ptr(c.pages))?;
    a.cmp(dword_ptr(edi), eax)?;
    a.jne(lost)?;
    a.not(eax)?;
    a.cmp(dword_ptr(edi + (PAGE_SIZE as i32 - 4)), eax)?;
    a.jne(lost)?;
    a.set_label(&mut fresh)?;
    a.mov(dword_ptr(edi), ebp)?;
    a.mov(eax, ebp)?;
    a.not(eax)?;
    a.mov(dword_ptr(edi + (PAGE_SIZE as i32 - 4)), eax)?;
    a.mov(eax, dword_ptr(c.next_page))?;
    a.inc(eax)?;
    a.cmp(eax, dword_ptr(c.pages))?;
    a.jb(wrapped)?;
    a.xor(eax, eax)?;
    a.set_label(&mut wrapped)?;
    a.mov(dword_ptr(c.next_page), eax)?;
    // 3. The device, if there is one.
    a.mov(edi, dword_ptr(c.net_base))?;
    a.test(edi, edi)?;
    a.jz(device_ok)?;
    a.mov(eax, dword_ptr(edi + STATUS))?;
    a.test(eax, status::DRIVER_OK)?;
    a.jz(device_lost)?;
    a.test(eax, STATUS_BAD)?;
    a.jnz(device_lost)?;
    a.set_label(&mut device_ok)?;
    // 4. The line, then the pause.
    g.print("selftest: count ")?;
    g.asm().mov(eax, ebp)?;
    g.print_dec_eax()?;
    g.print("\n")?;
    let a = g.asm();
    a.mov(ecx, dword_ptr(c.delay))?;
    a.test(ecx, ecx)?;
    a.jz(paced)?;
    a.set_label(&mut delay)?;
    a.dec(ecx)?;
    a.jnz(delay)?;
    a.set_label(&mut paced)?;
    a.jmp(top)?;

    g.bind(&mut lost)?;
    g.print("selftest: count memory lost at ")?;
    g.asm().mov(eax, ebp)?;
    g.print_dec_eax()?;
    g.print("\n")?;
    g.exit(EXIT_COUNT_MEMORY)?;

    g.bind(&mut device_lost)?;
    g.print("selftest: count device status ")?;
    g.print_hex_eax()?;
    g.print(" at ")?;
    g.asm().mov(eax, ebp)?;
    g.print_dec_eax()?;
    g.print("\n")?;
    g.exit(EXIT_COUNT_DEVICE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_region_lies_between_the_net_buffers_and_64_mib() {
        assert_eq!(COUNT_BASE, 4 << 20);
        assert_eq!(COUNT_BASE + DEFAULT_PAGES * PAGE_SIZE, 5 << 20);
        assert!(u64::from(COUNT_BASE) + u64::from(MAX_PAGES) * u64::from(PAGE_SIZE) <= 3 << 30);
    }

    #[test]
    fn the_exit_codes_are_distinct_from_the_others() {
        let others = [
            super::super::EXIT_BAD_START_INFO,
            super::super::EXIT_EXCEPTION,
            super::super::EXIT_NET_ARGS,
            super::super::EXIT_NET_DEVICE,
            super::super::EXIT_NET_FEATURES,
            super::super::EXIT_NET_TX_TIMEOUT,
            super::super::EXIT_NET_RX_TIMEOUT,
        ];
        for code in [EXIT_COUNT_MEMORY, EXIT_COUNT_DEVICE, EXIT_COUNT_ARGS] {
            assert!(!others.contains(&code), "{code}");
        }
    }
}
