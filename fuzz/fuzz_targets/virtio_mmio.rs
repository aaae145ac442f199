//! Sequences of virtio-mmio register reads and writes against the transport, in any
//! order, width and offset. The device behind it offers what the input says, and once
//! activated serves its queues as a device would (every available chain walked and
//! returned), so whatever the transport accepted as a queue is used.
#![no_main]

use std::sync::Arc;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmc_runtime::devices::virtio::features::{bit, VERSION_1};
use vmc_runtime::devices::virtio::mmio::reg;
use vmc_runtime::devices::virtio::{
    status, ActivateError, Interrupt, InterruptReason, MmioTransport, VirtioDevice, VirtioInterrupt, MMIO_SIZE,
};
use vmc_runtime::devices::bus::BusDevice;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

const MEM_SIZE: usize = 64 << 10;

struct NoInterrupt;

impl Interrupt for NoInterrupt {
    fn trigger(&self, _reason: InterruptReason) {}
}

struct StandIn {
    features: u64,
    sizes: Vec<u16>,
    events: Vec<EventFd>,
    config: Vec<u8>,
    fail_activation: bool,
}

impl VirtioDevice for StandIn {
    fn device_id(&self) -> u32 {
        1
    }
    fn offered_features(&self) -> u64 {
        self.features
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &self.sizes
    }
    fn queue_events(&self) -> &[EventFd] {
        &self.events
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = offset
                .checked_add(i as u64)
                .and_then(|at| usize::try_from(at).ok())
                .and_then(|at| self.config.get(at))
                .copied()
                .unwrap_or(0);
        }
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) -> bool {
        let Some(end) = offset.checked_add(data.len() as u64) else {
            return false;
        };
        if end > self.config.len() as u64 {
            return false;
        }
        self.config[offset as usize..end as usize].copy_from_slice(data);
        true
    }
    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        _features: u64,
        queues: Vec<Queue>,
        _interrupt: Arc<VirtioInterrupt>,
    ) -> Result<(), ActivateError> {
        if self.fail_activation {
            return Err(ActivateError::QueueCount {
                expected: 0,
                got: queues.len(),
            });
        }
        for mut queue in queues {
            serve(&mut queue, &mem);
        }
        Ok(())
    }
    fn reset(&mut self) {}
}

/// Walks and returns every available chain, bounded as the real device is.
fn serve(queue: &mut Queue, mem: &GuestMemoryMmap) {
    for _ in 0..2 * usize::from(queue.size()) {
        let Ok(mut available) = queue.iter(mem) else {
            return;
        };
        let Some(chain) = available.next() else {
            return;
        };
        let head = chain.head_index();
        let len: u32 = chain
            .take(usize::from(u16::MAX))
            .map(|d| d.len())
            .fold(0, u32::wrapping_add);
        if queue.add_used(mem, head, len).is_err() {
            return;
        }
    }
    let _ = queue.needs_notification(mem);
}

/// A register (any offset, or one the transport knows) accessed with any width.
#[derive(Arbitrary, Debug)]
enum Offset {
    Known(u8),
    Config(u8),
    Any(u64),
}

impl Offset {
    fn get(&self) -> u64 {
        const KNOWN: [u64; 24] = [
            reg::MAGIC_VALUE,
            reg::VERSION,
            reg::DEVICE_ID,
            reg::VENDOR_ID,
            reg::DEVICE_FEATURES,
            reg::DEVICE_FEATURES_SEL,
            reg::DRIVER_FEATURES,
            reg::DRIVER_FEATURES_SEL,
            reg::QUEUE_SEL,
            reg::QUEUE_NUM_MAX,
            reg::QUEUE_NUM,
            reg::QUEUE_READY,
            reg::QUEUE_NOTIFY,
            reg::INTERRUPT_STATUS,
            reg::INTERRUPT_ACK,
            reg::STATUS,
            reg::QUEUE_DESC_LOW,
            reg::QUEUE_DESC_HIGH,
            reg::QUEUE_DRIVER_LOW,
            reg::QUEUE_DRIVER_HIGH,
            reg::QUEUE_DEVICE_LOW,
            reg::QUEUE_DEVICE_HIGH,
            reg::CONFIG_GENERATION,
            reg::CONFIG,
        ];
        match self {
            Offset::Known(i) => KNOWN[usize::from(*i) % KNOWN.len()],
            Offset::Config(i) => reg::CONFIG + u64::from(*i),
            Offset::Any(offset) => *offset,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    Read {
        at: Offset,
        width: u8,
    },
    Write {
        at: Offset,
        value: u32,
    },
    WriteBytes {
        at: Offset,
        bytes: Vec<u8>,
    },
    /// The usual driver steps, to get past the state machine more often.
    Status(u8),
    Memory {
        at: u16,
        bytes: Vec<u8>,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    features: u64,
    sizes: Vec<u16>,
    config: Vec<u8>,
    fail_activation: bool,
    ops: Vec<Op>,
}

fuzz_target!(|input: Input| {
    let sizes: Vec<u16> = input.sizes.iter().take(8).copied().collect();
    let events = match sizes
        .iter()
        .map(|_| EventFd::new(EFD_NONBLOCK))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(events) => events,
        Err(e) => panic!("eventfd: {e}"),
    };
    let device = StandIn {
        features: input.features | bit(VERSION_1),
        sizes,
        events,
        config: input.config.iter().take(256).copied().collect(),
        fail_activation: input.fail_activation,
    };
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).expect("guest memory");
    let Ok(mut transport) = MmioTransport::new(device, mem.clone(), Arc::new(NoInterrupt)) else {
        return;
    };
    for op in input.ops.iter().take(256) {
        match op {
            Op::Read { at, width } => {
                let mut data = vec![0xa5u8; usize::from(*width % 9)];
                let at = at.get();
                transport.read(at, &mut data);
                if at == reg::MAGIC_VALUE && data.len() == 4 {
                    assert_eq!(data, b"virt", "MagicValue");
                }
            }
            Op::Write { at, value } => transport.write(at.get(), &value.to_le_bytes()),
            Op::WriteBytes { at, bytes } => transport.write(at.get(), &bytes[..bytes.len().min(16)]),
            Op::Status(step) => {
                let steps = [
                    0,
                    status::ACKNOWLEDGE,
                    status::ACKNOWLEDGE | status::DRIVER,
                    status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
                    status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK,
                    status::FAILED,
                ];
                let value = steps[usize::from(*step) % steps.len()];
                transport.write(reg::STATUS, &value.to_le_bytes());
                if value == 0 {
                    assert_eq!(transport.status(), 0, "Status after a reset");
                }
            }
            Op::Memory { at, bytes } => {
                let _ = mem.write_slice(&bytes[..bytes.len().min(256)], GuestAddress(u64::from(*at)));
            }
        }
    }
    // Every offset in the register block, read, must answer without panicking.
    for offset in (0..MMIO_SIZE).step_by(4) {
        let mut data = [0u8; 4];
        transport.read(offset, &mut data);
    }
});
