//! The virtio-mmio transport as a guest driver sees it, through the `BusDevice`
//! interface, with real guest memory: identification, feature negotiation of exactly the
//! offered word, the status state machine, queue setup, notifications, reset, and what
//! happens to writes that make no sense. The device behind it here is a stand-in that
//! records what the transport hands it; `virtio_net` covers the network device.

#[path = "virtio_driver.rs"]
mod driver;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use driver::{guest_memory, reg, CountingInterrupt, Driver};
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmc_runtime::devices::bus::BusDevice;
use vmc_runtime::devices::virtio::{
    status, ActivateError, EventFdInterrupt, MmioTransport, VirtioDevice, VirtioInterrupt, MMIO_SIZE,
};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

const VERSION_1: u64 = 1 << 32;
const EVENT_IDX: u64 = 1 << 29;
/// A word with a few device bits, VERSION_1 and EVENT_IDX.
const OFFERED: u64 = VERSION_1 | EVENT_IDX | 0b101;

/// What the stand-in device was told.
#[derive(Default)]
struct Record {
    activations: AtomicU64,
    resets: AtomicU64,
    features: AtomicU64,
    event_idx: Mutex<Vec<bool>>,
    interrupt: Mutex<Option<Arc<VirtioInterrupt>>>,
}

struct StandIn {
    features: u64,
    sizes: [u16; 2],
    events: Vec<EventFd>,
    record: Arc<Record>,
}

impl VirtioDevice for StandIn {
    fn device_id(&self) -> u32 {
        42
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
            *byte = 0xc0u8.wrapping_add((offset as u8).wrapping_add(i as u8));
        }
    }
    fn activate(
        &mut self,
        _mem: GuestMemoryMmap,
        features: u64,
        queues: Vec<Queue>,
        interrupt: Arc<VirtioInterrupt>,
    ) -> Result<(), ActivateError> {
        self.record.activations.fetch_add(1, Ordering::SeqCst);
        self.record.features.store(features, Ordering::SeqCst);
        *self.record.event_idx.lock().unwrap() = queues.iter().map(|q| q.event_idx_enabled()).collect();
        *self.record.interrupt.lock().unwrap() = Some(interrupt);
        Ok(())
    }
    fn reset(&mut self) {
        self.record.resets.fetch_add(1, Ordering::SeqCst);
    }
}

struct Setup {
    driver: Driver<StandIn>,
    record: Arc<Record>,
    irq: Arc<CountingInterrupt>,
}

fn setup() -> Setup {
    let record = Arc::new(Record::default());
    let device = StandIn {
        features: OFFERED,
        sizes: [256, 64],
        events: (0..2).map(|_| EventFd::new(EFD_NONBLOCK).unwrap()).collect(),
        record: record.clone(),
    };
    let mem = guest_memory();
    let irq = Arc::new(CountingInterrupt::default());
    let transport = MmioTransport::new(device, mem.clone(), irq.clone()).expect("transport");
    Setup {
        driver: Driver::new(mem, transport),
        record,
        irq,
    }
}

#[test]
fn identifies_as_a_virtio_mmio_version_2_device_of_its_kind() {
    let Setup { mut driver, .. } = setup();
    assert_eq!(MMIO_SIZE, 0x200);
    assert_eq!(driver.read(reg::MAGIC_VALUE), 0x7472_6976);
    assert_eq!(driver.read(reg::VERSION), 2);
    assert_eq!(driver.read(reg::DEVICE_ID), 42);
    assert_eq!(driver.read(reg::VENDOR_ID), 0x554d_4551);
    for (queue, max) in [(0, 256), (1, 64), (2, 0), (0xffff_ffff, 0)] {
        driver.write(reg::QUEUE_SEL, queue);
        assert_eq!(driver.read(reg::QUEUE_NUM_MAX), max, "queue {queue}");
    }
    assert_eq!(driver.read(reg::CONFIG_GENERATION), 0);
    let mut config = [0u8; 2];
    driver.transport.read(reg::CONFIG + 4, &mut config);
    assert_eq!(config, [0xc4, 0xc5], "config space reads reach the device");
    assert_eq!(driver.transport.stats().ignored_accesses, 0);
}

#[test]
fn offers_exactly_the_feature_word_it_was_built_with() {
    let Setup { mut driver, .. } = setup();
    assert_eq!(driver.device_features(), OFFERED);
    driver.write(reg::DEVICE_FEATURES_SEL, 2);
    assert_eq!(driver.read(reg::DEVICE_FEATURES), 0, "no bits beyond 63");
}

#[test]
fn a_driver_accepting_one_bit_more_than_offered_does_not_get_features_ok() {
    let Setup { mut driver, record, .. } = setup();
    assert!(!driver.negotiate(OFFERED | 0b10));
    assert_eq!(
        driver.status(),
        status::ACKNOWLEDGE | status::DRIVER,
        "FEATURES_OK does not stick; the rest does"
    );
    assert_eq!(driver.transport.stats().features_rejected, 1);
    // Nor can the driver go on to DRIVER_OK.
    driver.write(reg::STATUS, status::ACKNOWLEDGE | status::DRIVER | status::DRIVER_OK);
    assert_eq!(driver.status() & status::DRIVER_OK, 0);
    assert_eq!(record.activations.load(Ordering::SeqCst), 0);

    // A subset of the offer is fine, and so is the whole offer.
    assert!(driver.negotiate(VERSION_1 | 0b1));
    assert!(driver.negotiate(OFFERED));
    assert_eq!(driver.transport.driver_features(), OFFERED);
}

#[test]
fn a_driver_that_does_not_accept_version_1_does_not_get_features_ok() {
    let Setup { mut driver, .. } = setup();
    assert!(!driver.negotiate(OFFERED & !VERSION_1));
    assert_eq!(driver.transport.stats().features_rejected, 1);
}

#[test]
fn driver_ok_hands_the_device_its_queues_and_negotiated_features() {
    let Setup { mut driver, record, .. } = setup();
    driver.bring_up(VERSION_1 | EVENT_IDX, &[128, 64]);
    assert_eq!(
        driver.status(),
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK
    );
    assert_eq!(record.activations.load(Ordering::SeqCst), 1);
    assert_eq!(record.features.load(Ordering::SeqCst), VERSION_1 | EVENT_IDX);
    assert_eq!(*record.event_idx.lock().unwrap(), [true, true]);
    driver.write(reg::QUEUE_SEL, 0);
    assert_eq!(driver.read(reg::QUEUE_READY), 1);
    assert_eq!(driver.read(reg::QUEUE_DESC_LOW) as u64, driver.queues[0].desc);

    // Queue setup is closed once DRIVER_OK is set.
    let ignored = driver.transport.stats().ignored_accesses;
    driver.write(reg::QUEUE_NUM, 32);
    driver.write(reg::QUEUE_DESC_LOW, 0x1000);
    assert_eq!(driver.read(reg::QUEUE_DESC_LOW) as u64, driver.queues[0].desc);
    assert_eq!(driver.transport.stats().ignored_accesses, ignored + 2);
}

#[test]
fn writing_status_zero_resets_the_device_and_the_transport() {
    let Setup { mut driver, record, .. } = setup();
    driver.bring_up(VERSION_1, &[128, 64]);
    let interrupt = record.interrupt.lock().unwrap().clone().unwrap();
    interrupt.signal_needs_reset();
    assert_ne!(driver.read(reg::INTERRUPT_STATUS), 0);
    let resets = driver.transport.stats().resets;

    driver.write(reg::STATUS, 0);
    assert_eq!(driver.status(), 0, "NEEDS_RESET cleared too");
    assert_eq!(driver.read(reg::INTERRUPT_STATUS), 0);
    assert!(record.resets.load(Ordering::SeqCst) >= 1);
    assert_eq!(driver.transport.stats().resets, resets + 1);
    for queue in 0..2 {
        driver.write(reg::QUEUE_SEL, queue);
        assert_eq!(driver.read(reg::QUEUE_READY), 0);
        assert_eq!(driver.read(reg::QUEUE_DESC_LOW), 0);
    }
    // And it comes up again.
    driver.bring_up(VERSION_1, &[256, 64]);
    assert_eq!(record.activations.load(Ordering::SeqCst), 2);
}

#[test]
fn a_queue_outside_guest_memory_at_driver_ok_means_needs_reset() {
    let Setup {
        mut driver,
        record,
        irq,
    } = setup();
    assert!(driver.negotiate(VERSION_1));
    driver.setup_queues(&[128, 64]);
    driver.write(reg::QUEUE_SEL, 1);
    driver.write(reg::QUEUE_READY, 0);
    driver.write(reg::QUEUE_DEVICE_HIGH, 0x10); // used ring at 64 GiB: no memory there
    driver.write(reg::QUEUE_READY, 1);
    driver.driver_ok();

    assert_ne!(driver.status() & status::DEVICE_NEEDS_RESET, 0);
    assert_eq!(record.activations.load(Ordering::SeqCst), 0);
    assert_eq!(irq.config(), 1, "a configuration-change interrupt tells the driver");
    assert_eq!(driver.read(reg::INTERRUPT_STATUS), 2);
    assert!(driver.transport.last_error().unwrap().contains("queue 1"));
    driver.write(reg::INTERRUPT_ACK, 2);
    assert_eq!(driver.read(reg::INTERRUPT_STATUS), 0);

    // A driver's read-modify-write of Status carries NEEDS_RESET back; that is no error.
    let s = driver.status();
    driver.write(reg::STATUS, s | status::FAILED);
    assert_ne!(driver.status() & status::FAILED, 0);

    driver.bring_up(VERSION_1, &[128, 64]);
    assert_eq!(record.activations.load(Ordering::SeqCst), 1);
}

#[test]
fn queue_notify_signals_the_queue_eventfd() {
    let Setup { mut driver, .. } = setup();
    driver.bring_up(VERSION_1, &[128, 64]);
    driver.notify(1);
    driver.notify(1);
    let events: Vec<_> = driver
        .transport
        .queue_notify_events()
        .map(|(index, event)| (index, event.read().ok()))
        .collect();
    assert_eq!(events, [(0, None), (1, Some(2))]);
}

#[test]
fn writes_that_make_no_sense_change_nothing_and_are_counted() {
    let Setup { mut driver, record, .. } = setup();
    let ignored = |driver: &Driver<StandIn>| driver.transport.stats().ignored_accesses;

    // Before DRIVER: features cannot be written; before FEATURES_OK: no queue setup.
    driver.write(reg::DRIVER_FEATURES, 1);
    driver.write(reg::QUEUE_NUM, 16);
    driver.write(reg::QUEUE_READY, 1);
    assert_eq!(ignored(&driver), 3);
    // Skipping a step: DRIVER without ACKNOWLEDGE, DRIVER_OK before FEATURES_OK.
    driver.write(reg::STATUS, status::DRIVER);
    driver.write(reg::STATUS, status::ACKNOWLEDGE | status::DRIVER | status::DRIVER_OK);
    assert_eq!(driver.status(), 0);
    assert_eq!(ignored(&driver), 5);

    assert!(driver.negotiate(VERSION_1));
    let before = ignored(&driver);
    let cases: &[(u64, &[u8])] = &[
        (reg::MAGIC_VALUE, &[0, 0, 0, 0]),            // read-only register
        (reg::QUEUE_NUM, &[16]),                      // 1-byte access to a register
        (reg::QUEUE_NUM, &[16, 0]),                   // 2-byte access
        (reg::QUEUE_NUM, &[16, 0, 0, 0, 0, 0, 0, 0]), // 8-byte access
        (reg::QUEUE_NUM + 1, &[16, 0, 0, 0]),         // unaligned
        (0x0a8, &[1, 0, 0, 0]),                       // no register there
        (reg::QUEUE_NUM, &[3, 0, 0, 0]),              // not a power of two
        (reg::QUEUE_NUM, &[0, 2, 0, 0]),              // 512 > QueueNumMax 256
        (reg::QUEUE_NUM, &[0, 0, 0, 0]),              // zero
        (reg::QUEUE_READY, &[2, 0, 0, 0]),            // neither 0 nor 1
        (reg::QUEUE_NOTIFY, &[7, 0, 0, 0]),           // no queue 7
        (reg::STATUS, &[1, 0, 0, 0]),                 // clearing DRIVER and FEATURES_OK
        (reg::STATUS, &[0x0b, 0x01, 0, 0]),           // unknown status bit
        (reg::DRIVER_FEATURES, &[0, 0, 0, 0]),        // after FEATURES_OK
        (reg::CONFIG, &[1, 2, 3, 4]),                 // read-only configuration
    ];
    for (i, (offset, data)) in cases.iter().enumerate() {
        driver.transport.write(*offset, data);
        assert_eq!(
            ignored(&driver),
            before + i as u64 + 1,
            "case {i}: {offset:#x} {data:?}"
        );
    }
    driver.write(reg::QUEUE_SEL, 9);
    driver.write(reg::QUEUE_NUM, 16);
    assert_eq!(ignored(&driver), before + cases.len() as u64 + 1, "no queue 9");

    let mut wide = [0xaau8; 2];
    driver.transport.read(reg::STATUS, &mut wide);
    assert_eq!(wide, [0, 0], "a 2-byte register read reads nothing");
    assert_eq!(
        driver.status(),
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK
    );
    driver.write(reg::QUEUE_SEL, 0);
    assert_eq!(driver.read(reg::QUEUE_READY), 0);
    assert_eq!(record.activations.load(Ordering::SeqCst), 0);
}

#[test]
fn random_register_traffic_never_panics_and_a_reset_recovers() {
    let Setup { mut driver, record, .. } = setup();
    // A fixed-seed generator: the same traffic on every run.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..200_000 {
        let r = next();
        let offset = (r >> 8) % (MMIO_SIZE + 0x10);
        let width = [1usize, 2, 4, 8][(r & 3) as usize];
        let value = next().to_le_bytes();
        if r & 4 == 0 {
            driver.transport.write(offset, &value[..width]);
        } else {
            let mut data = [0u8; 8];
            driver.transport.read(offset, &mut data[..width]);
        }
    }
    assert!(driver.transport.stats().ignored_accesses > 0);
    let before = record.activations.load(Ordering::SeqCst);
    driver.bring_up(VERSION_1 | EVENT_IDX, &[256, 64]);
    assert_eq!(record.activations.load(Ordering::SeqCst), before + 1);
}

#[test]
fn a_device_without_version_1_or_with_a_bad_queue_size_is_refused() {
    let make = |features: u64, sizes: [u16; 2]| {
        let device = StandIn {
            features,
            sizes,
            events: (0..2).map(|_| EventFd::new(EFD_NONBLOCK).unwrap()).collect(),
            record: Arc::default(),
        };
        MmioTransport::new(device, guest_memory(), Arc::new(CountingInterrupt::default())).map(|_| ())
    };
    assert!(make(OFFERED & !VERSION_1, [256, 256]).is_err());
    assert!(make(OFFERED, [256, 100]).is_err());
    assert!(make(OFFERED, [256, 256]).is_ok());
}

#[test]
fn an_eventfd_interrupt_is_signalled_for_the_guest() {
    let device = StandIn {
        features: OFFERED,
        sizes: [16, 16],
        events: (0..2).map(|_| EventFd::new(EFD_NONBLOCK).unwrap()).collect(),
        record: Arc::default(),
    };
    let mem = guest_memory();
    let irq = Arc::new(EventFdInterrupt::new().unwrap());
    let transport = MmioTransport::new(device, mem.clone(), irq.clone()).unwrap();
    let mut driver = Driver::new(mem, transport);
    assert!(irq.eventfd().read().is_err(), "nothing pending yet");
    assert!(driver.negotiate(VERSION_1));
    driver.setup_queues(&[16, 16]);
    driver.write(reg::QUEUE_SEL, 0);
    driver.write(reg::QUEUE_READY, 0); // DRIVER_OK with a queue not ready
    driver.driver_ok();
    assert_ne!(driver.status() & status::DEVICE_NEEDS_RESET, 0);
    assert_eq!(irq.eventfd().read().unwrap(), 1);
}
