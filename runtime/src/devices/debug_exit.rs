//! The debug-exit port: a guest ends the VM with an exit code by writing it to port
//! 0xf4 (the port QEMU's isa-debug-exit uses by default).
//!
//! Convention: the low byte written is the code, and `vmc run` exits with it as is
//! (QEMU would exit with `(code << 1) | 1`). Reads return 0xff like an empty port.

use std::sync::Arc;

use crate::vm::{BusDevice, RunControl, StopReason};

/// The debug-exit port.
pub const DEBUG_EXIT_PORT: u64 = 0xf4;

/// Stops the VM with [`StopReason::DebugExit`] on any write.
#[derive(Debug)]
pub struct DebugExit {
    control: Arc<RunControl>,
}

impl DebugExit {
    /// A debug-exit port that stops the VM behind `control`.
    pub fn new(control: Arc<RunControl>) -> Self {
        Self { control }
    }
}

impl BusDevice for DebugExit {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        if let Some(&code) = data.first() {
            self.control.request_stop(StopReason::DebugExit(code));
        }
    }
}
