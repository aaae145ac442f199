//! The one set of limits: what `vmc run` and `vmc lower` can carry out. The compiler
//! refuses anything outside them, and so does every reader of a document (a document is
//! valid only as the compiler writes it), so neither the runtime nor the lowering meets a
//! value it must refuse. The runtime and the lowering use these same definitions.

use crate::document::{Abi, HostBindings};

/// vCPUs per VM. x86 APIC ID 0xff is the broadcast address, so a VM has at most 255
/// addressable CPUs with IDs 0..=254, and the runtime numbers vCPUs with a `u8`.
pub const MAX_CPUS: u64 = 254;
/// Smallest guest memory: room for the boot structures and a small kernel at 1 MiB.
pub const MIN_MEMORY: u64 = 2 << 20;
/// Largest guest memory vmc builds.
pub const MAX_MEMORY: u64 = 1 << 40;
/// Guest memory is a whole number of these: QEMU rounds RAM up to 8 KiB, so a lowered
/// command line gives the guest exactly this size only when it is a multiple.
pub const MEMORY_GRANULE: u64 = 8192;
/// The kernel command line the guest gets (the spec's, plus one `virtio_mmio.device=`
/// per device), in bytes with its terminating NUL: the size of the area the runtime
/// reserves for it in guest memory.
pub const MAX_KERNEL_CMDLINE: usize = 0x10000;
/// A host path (kernel, initrd), in bytes: Linux's `PATH_MAX`, NUL included.
pub const MAX_PATH: usize = 4096;
/// A Linux interface name, in bytes: `IFNAMSIZ` less the NUL.
pub const MAX_INTERFACE_NAME: usize = 15;

/// Why `name` cannot be a TAP interface name, if it cannot.
///
/// Linux refuses empty names, `.` and `..`, and names with `/`, `:` or whitespace
/// (`dev_valid_name`); it *expands* a `%d` in a name given to `TUNSETIFF` (so the TAP
/// would be created under another name, and not found); and QEMU's `-netdev` option list
/// splits a value at `,`. Only printable ASCII is allowed, so that messages and shell
/// lines show the name as it is.
pub fn interface_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("an interface name is not empty".to_string());
    }
    if name.len() > MAX_INTERFACE_NAME {
        return Some(format!(
            "an interface name has at most {MAX_INTERFACE_NAME} bytes (Linux's IFNAMSIZ); this one has {}",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Some("`.` and `..` are not interface names".to_string());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !c.is_ascii_graphic() || matches!(c, '/' | ':' | '%' | ','))
    {
        return Some(format!(
            "an interface name is printable ASCII without spaces, `/`, `:`, `%` or `,`; it has {}",
            describe_char(c)
        ));
    }
    None
}

/// Why `path` cannot name a kernel or initrd, if it cannot: empty, longer than
/// `PATH_MAX`, or holding a control character (a NUL ends the path early in every
/// system call; the others make messages and shell lines name another file).
pub fn path_problem(path: &str) -> Option<String> {
    if path.is_empty() {
        return Some("a path is not empty".to_string());
    }
    if path.len() >= MAX_PATH {
        return Some(format!(
            "a path has fewer than {MAX_PATH} bytes (Linux's PATH_MAX); this one has {}",
            path.len()
        ));
    }
    path.chars()
        .find(|c| c.is_control())
        .map(|c| format!("a path holds no control characters; this one has {}", describe_char(c)))
}

/// Why `cmdline` cannot be (the spec's part of) a kernel command line, if it cannot:
/// the boot protocols pass it as one NUL-terminated line, so a NUL would cut it short
/// and other control characters would reach the kernel's parser unescaped.
pub fn cmdline_problem(cmdline: &str) -> Option<String> {
    cmdline.chars().find(|c| c.is_control()).map(|c| {
        format!(
            "a kernel command line is one line of printable text; this one has {}",
            describe_char(c)
        )
    })
}

/// The kernel command line the guest gets: the host binding's, then one
/// `virtio_mmio.device=SIZE@BASE:IRQ` per device at the placement the ABI fixes (the
/// syntax Linux and QEMU's microvm use).
pub fn kernel_cmdline(abi: &Abi, host: &HostBindings) -> String {
    let mut parts: Vec<String> = host.cmdline.iter().filter(|c| !c.is_empty()).cloned().collect();
    for d in &abi.devices {
        parts.push(format!(
            "virtio_mmio.device={}@{:#x}:{}",
            d.mmio_size, d.mmio_base, d.irq
        ));
    }
    parts.join(" ")
}

/// A character as a message shows it: printable ones quoted, others by code point.
fn describe_char(c: char) -> String {
    if c.is_control() || c.is_whitespace() {
        format!("U+{:04X}", c as u32)
    } else {
        format!("`{c}`")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_follow_linux_and_qemu() {
        for ok in ["vmc-tap0", "a", "tap.1_x", "123456789012345"] {
            assert_eq!(interface_name_problem(ok), None, "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "tap%d",
            "a/b",
            "a:b",
            "a b",
            "a,b",
            "a\tb",
            "é",
            "1234567890123456",
            "tap\0",
        ] {
            assert!(interface_name_problem(bad).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn paths_and_command_lines_refuse_control_characters() {
        assert_eq!(path_problem("/srv/guest/vmlinuz"), None);
        assert_eq!(path_problem("/srv/a b/é"), None);
        for bad in ["", "/a\0b", "/a\nb", "/a\u{1b}[2J", "/a\u{7f}"] {
            assert!(path_problem(bad).is_some(), "{bad:?}");
        }
        assert!(path_problem(&"a".repeat(MAX_PATH)).is_some());
        assert_eq!(cmdline_problem("console=ttyS0 quiet"), None);
        for bad in ["a\0b", "a\nb", "a\rb", "\u{1b}]0;x\u{7}"] {
            assert!(cmdline_problem(bad).unwrap().contains("U+"), "{bad:?}");
        }
    }
}
