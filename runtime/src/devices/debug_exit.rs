//! The debug-exit port: a guest ends the VM with an exit code by writing it to port
//! 0xf4 (the port QEMU's isa-debug-exit uses by default).
//!
//! Convention: the low byte written is the code, and `vmc run` exits with it as is
//! (QEMU would exit with `(code << 1) | 1`). Reads return 0xff like an empty port.

use crate::devices::bus::BusDevice;

/// The debug-exit port.
pub const DEBUG_EXIT_PORT: u64 = 0xf4;

/// Hands the code of any write to what the VM wired to it, which stops the VM with
/// `StopReason::DebugExit`.
pub struct DebugExit {
    exit: Box<dyn Fn(u8) + Send>,
}

impl std::fmt::Debug for DebugExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DebugExit").finish_non_exhaustive()
    }
}

impl DebugExit {
    /// A debug-exit port that calls `exit` with the code of each write.
    pub fn new(exit: impl Fn(u8) + Send + 'static) -> Self {
        Self { exit: Box::new(exit) }
    }
}

impl BusDevice for DebugExit {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        if let Some(&code) = data.first() {
            (self.exit)(code);
        }
    }
}
