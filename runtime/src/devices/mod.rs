//! Devices the guest reaches through the VM's buses.
//!
//! - [`serial`]: the 16550 UART at 0x3f8 (COM1, IRQ 4), the console.
//! - [`debug_exit`]: the debug-exit port 0xf4, how a test guest ends with an exit code.
//! - [`i8042`]: just enough of the keyboard controller for its reset line.
//! - [`virtio`]: the virtio-mmio transport and the virtio-net device over a TAP.

pub mod debug_exit;
pub mod i8042;
pub mod serial;
pub mod virtio;
