//! The i8042 keyboard controller, reduced to what a guest uses to reboot: vm-superio's
//! `I8042Device`, which knows only command 0xfe (pulse the reset line) written to port
//! 0x64. The reset line is what the VM wired to it: vmc ends the VM instead of
//! rebooting (`StopReason::Reset`). The controller reports no data and no keyboard:
//! every read is 0.

use std::convert::Infallible;

use vm_superio::{I8042Device, Trigger};

use crate::devices::bus::BusDevice;

/// The controller's data port; it decodes 0x60..=0x64.
pub const I8042_DATA_PORT: u64 = 0x60;
/// Number of ports decoded from [`I8042_DATA_PORT`].
pub const I8042_PORTS: u64 = 5;

/// The reset line: what a pulse does.
struct ResetLine(Box<dyn Fn() + Send>);

impl std::fmt::Debug for ResetLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResetLine")
    }
}

impl Trigger for ResetLine {
    type E = Infallible;

    fn trigger(&self) -> Result<(), Infallible> {
        (self.0)();
        Ok(())
    }
}

/// The keyboard controller on the port bus.
#[derive(Debug)]
pub struct I8042 {
    device: I8042Device<ResetLine>,
}

impl I8042 {
    /// A controller whose reset line, when the guest pulses it, calls `reset`.
    pub fn new(reset: impl Fn() + Send + 'static) -> Self {
        Self {
            device: I8042Device::new(ResetLine(Box::new(reset))),
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        // Status 0: output buffer empty, input buffer empty; data 0.
        let value = self.device.read(offset as u8);
        data.fill(value);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        // The bus hands offsets 0..I8042_PORTS; a wider access is its first byte.
        if let Some(&value) = data.first() {
            let Ok(()) = self.device.write(offset as u8, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    #[test]
    fn only_0xfe_on_the_command_port_pulls_the_reset_line() {
        let pulses = Arc::new(AtomicUsize::new(0));
        let counter = pulses.clone();
        let mut i8042 = I8042::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        let mut status = [0xff; 2];
        i8042.read(4, &mut status);
        assert_eq!(status, [0, 0]);
        i8042.write(0, &[0xfe]);
        i8042.write(4, &[0xfd]);
        i8042.write(4, &[]);
        assert_eq!(pulses.load(Ordering::SeqCst), 0);
        i8042.write(4, &[0xfe, 0x00]);
        assert_eq!(pulses.load(Ordering::SeqCst), 1);
    }
}
