//! The i8042 keyboard controller, reduced to what a guest uses to reboot: writing
//! command 0xfe (pulse the reset line) to port 0x64. vmc ends the VM instead of
//! rebooting ([`StopReason::Reset`]). The controller reports no data and no keyboard.

use std::sync::Arc;

use crate::vm::{BusDevice, RunControl, StopReason};

/// The controller's data port; it decodes 0x60..=0x64.
pub const I8042_DATA_PORT: u64 = 0x60;
/// Number of ports decoded from [`I8042_DATA_PORT`].
pub const I8042_PORTS: u64 = 5;
/// Offset of the command/status port (0x64).
const COMMAND_OFFSET: u64 = 4;
/// The "pulse reset line" command.
pub const CMD_RESET_CPU: u8 = 0xfe;

/// The reset line of the keyboard controller.
#[derive(Debug)]
pub struct I8042 {
    control: Arc<RunControl>,
}

impl I8042 {
    /// A controller whose reset line stops the VM behind `control`.
    pub fn new(control: Arc<RunControl>) -> Self {
        Self { control }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        // Status 0: output buffer empty, input buffer empty; data 0.
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset == COMMAND_OFFSET && data.first() == Some(&CMD_RESET_CPU) {
            self.control.request_stop(StopReason::Reset);
        }
    }
}
