//! COM1: a 16550 UART (vm-superio's `Serial`) at port 0x3f8, IRQ 4, whose output
//! goes to any `Write` (stdout for `vmc run`, a [`CaptureBuffer`] in tests).
//!
//! Its interrupt is an eventfd; the VM registers it as an irqfd on GSI 4 when the
//! in-kernel irqchip exists, so raising the line needs no exit to user space.

use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use vm_superio::serial::SerialState;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::devices::bus::BusDevice;

/// COM1's first port.
pub const COM1_PORT: u64 = 0x3f8;
/// Number of ports a 16550 decodes.
pub const UART_PORTS: u64 = 8;
/// COM1's interrupt line (GSI).
pub const COM1_IRQ: u32 = 4;

/// Raises the UART's interrupt by signalling an eventfd.
#[derive(Debug)]
pub struct EventFdTrigger(EventFd);

impl Trigger for EventFdTrigger {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        match self.0.write(1) {
            // A saturated counter still means "pending".
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            other => other,
        }
    }
}

/// The console UART.
pub struct SerialConsole {
    uart: Serial<EventFdTrigger, vm_superio::serial::NoEvents, Box<dyn Write + Send>>,
}

impl SerialConsole {
    /// A UART whose transmitted bytes go to `out`.
    pub fn new(out: Box<dyn Write + Send>) -> io::Result<Self> {
        let irq = EventFdTrigger(EventFd::new(EFD_NONBLOCK)?);
        Ok(Self {
            uart: Serial::new(irq, out),
        })
    }

    /// The interrupt eventfd (to register as an irqfd).
    pub fn irq_eventfd(&self) -> &EventFd {
        &self.uart.interrupt_evt().0
    }
}

/// The 16550's receive FIFO holds 64 bytes (vm-superio's too).
const UART_FIFO_SIZE: usize = 64;

/// The UART's registers and receive FIFO, for snapshots and migration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SerialSnapshot {
    pub baud_divisor_low: u8,
    pub baud_divisor_high: u8,
    pub interrupt_enable: u8,
    pub interrupt_identification: u8,
    pub line_control: u8,
    pub line_status: u8,
    pub modem_control: u8,
    pub modem_status: u8,
    pub scratch: u8,
    pub in_buffer: Vec<u8>,
}

impl SerialConsole {
    /// The UART's state.
    pub fn snapshot(&self) -> SerialSnapshot {
        let s = self.uart.state();
        SerialSnapshot {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer,
        }
    }

    /// Puts the UART in a saved state; its output and interrupt stay this console's.
    /// Refused (the UART unchanged) when the receive FIFO would overflow.
    pub fn restore(&mut self, s: &SerialSnapshot) -> Result<(), String> {
        let state = SerialState {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer.clone(),
        };
        if s.in_buffer.len() > UART_FIFO_SIZE {
            return Err(format!(
                "serial port state: {} bytes waiting, more than its FIFO holds",
                s.in_buffer.len()
            ));
        }
        // The same eventfd (registered as the irqfd), through a second descriptor.
        let irq = self
            .uart
            .interrupt_evt()
            .0
            .try_clone()
            .map_err(|e| format!("interrupt eventfd: {e}"))?;
        let out = std::mem::replace(self.uart.writer_mut(), Box::new(io::sink()));
        match Serial::from_state(&state, EventFdTrigger(irq), vm_superio::serial::NoEvents, out) {
            Ok(uart) => {
                self.uart = uart;
                Ok(())
            }
            // Only raising the restored interrupt can fail here (the FIFO was checked):
            // the eventfd is broken, and the console with it.
            Err(e) => Err(format!("serial port state: {e:?}")),
        }
    }
}

impl BusDevice for SerialConsole {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        // A UART register is one byte wide; wider reads see the register then 0xff.
        data.fill(0xff);
        if let (Some(first), Ok(reg)) = (data.first_mut(), u8::try_from(offset)) {
            *first = self.uart.read(reg);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let (Some(&value), Ok(reg)) = (data.first(), u8::try_from(offset)) {
            // Output that cannot be written is dropped, never fatal.
            let _ = self.uart.write(reg, value);
        }
    }
}

/// A `Write` that keeps everything written, shareable between the UART and a test.
#[derive(Debug, Clone, Default)]
pub struct CaptureBuffer(Arc<Mutex<Vec<u8>>>);

impl CaptureBuffer {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Everything written so far.
    pub fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Everything written so far, as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes()).into_owned()
    }
}

impl Write for CaptureBuffer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_written_to_thr_reach_the_output() {
        let out = CaptureBuffer::new();
        let mut uart = SerialConsole::new(Box::new(out.clone())).unwrap();
        for b in b"hi\n" {
            uart.write(0, &[*b]);
        }
        assert_eq!(out.text(), "hi\n");
    }

    #[test]
    fn line_status_reports_an_empty_transmitter() {
        let mut uart = SerialConsole::new(Box::new(io::sink())).unwrap();
        let mut lsr = [0u8];
        uart.read(5, &mut lsr);
        assert_eq!(lsr[0] & 0x20, 0x20, "THRE set");
    }

    #[test]
    fn odd_widths_and_offsets_do_not_panic() {
        let mut uart = SerialConsole::new(Box::new(io::sink())).unwrap();
        let mut wide = [0u8; 8];
        uart.read(0x1234, &mut wide);
        uart.write(u64::MAX, &[1, 2, 3, 4]);
        uart.write(3, &[]);
        uart.read(3, &mut []);
    }

    #[test]
    fn enabling_the_thr_interrupt_signals_the_eventfd() {
        let mut uart = SerialConsole::new(Box::new(io::sink())).unwrap();
        uart.write(1, &[0x02]); // IER: THR empty interrupt
        uart.write(0, b"x");
        assert!(uart.irq_eventfd().read().unwrap() >= 1);
    }
}
