//! Devices the guest reaches through the VM's buses, and the buses themselves.
//!
//! Nothing here knows the VM: a device that ends a run (the debug-exit port, the
//! i8042's reset line) calls what the VM gave it when it was built.
//!
//! - [`bus`]: the port I/O and MMIO buses, and [`bus::BusDevice`], all a vCPU sees of a
//!   device.
//! - [`serial`]: the 16550 UART at 0x3f8 (COM1, IRQ 4), the console.
//! - [`debug_exit`]: the debug-exit port 0xf4, how a test guest ends with an exit code.
//! - [`i8042`]: just enough of the keyboard controller for its reset line.
//! - [`virtio`]: the virtio-mmio transport and the virtio-net device over a TAP.

pub mod bus;
pub mod debug_exit;
pub mod i8042;
pub mod serial;
pub mod virtio;
