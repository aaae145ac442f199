//! Throughput mode of the self-test guest (`selftest.blast=<B>`) in a real KVM VM: the
//! guest sends B bytes of UDP payload through a real virtio-net device on a TAP in a
//! network namespace the test makes, and a socket in the namespace counts and checks
//! every datagram. With HOST_USO the bytes cross the TAP in frames of up to 64
//! segments; without it, one frame per datagram. A device that stops returning
//! buffers, or returns one it was never given, ends the guest with its exit code.
//!
//! The real-device tests need root and /dev/kvm, the fake-device ones /dev/kvm: each is
//! skipped with a reason by hand without them, failed under CI (`CI=true`).

#[path = "../../runtime/tests/common/mod.rs"]
mod common;

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{require, test_name, NetNs};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmc_runtime::devices::bus::BusDevice;
use vmc_runtime::devices::serial::CaptureBuffer;
use vmc_runtime::devices::virtio::net::{feature, feature_word, Net, NetConfig, NetStats};
use vmc_runtime::devices::virtio::{mmio, Interrupt, InterruptReason, MmioTransport, MMIO_SIZE};
use vmc_runtime::host::Tap;
use vmc_runtime::vm::{RunOutcome, StopReason, Vm, VmConfig};
use vmc_selftest::{EXIT_NET_ARGS, EXIT_NET_BLAST_STALL, EXIT_NET_DEVICE};

const MIB: u64 = 1 << 20;
const BASE: u64 = 0xfeb0_0e00;
const TAP: &str = "vmc-blast0";
/// The guest's defaults: it sends from 10.0.2.15:5000 to 02:00:00:00:00:01,
/// 10.0.2.2:5001.
const HOST_MAC: &str = "02:00:00:00:00:01";
const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
const VERSION_1: u32 = 32;
/// What most of the blast moves: 4 MiB, small enough for a test on a shared machine
/// (where every guest instruction may be emulated), big enough to go round the
/// transmit ring (128 frames in flight) many times without USO.
const VOLUME: u32 = 4 << 20;
/// How long a VM may take; a blast of 4 MiB takes about a second where guest code is
/// emulated.
const DEADLINE: Duration = Duration::from_secs(120);
/// The receiving socket's buffer (SO_RCVBUFFORCE): far above what 4 MiB of datagrams
/// take even if the receiver fell behind completely, so none is dropped for want of
/// room and the test can ask for every byte.
const RCVBUF: libc::c_int = 128 << 20;

/// Interrupts go nowhere: the guest polls.
struct NoInterrupt;

impl Interrupt for NoInterrupt {
    fn trigger(&self, _reason: InterruptReason) {}
}

/// What a guest run left.
struct Run {
    outcome: RunOutcome,
    serial: String,
    elapsed: Duration,
}

impl Run {
    fn line(&self, prefix: &str) -> &str {
        self.serial
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` line in:\n{}", self.serial))
    }
}

/// Boots the self-test guest in `vm` with `cmdline`; stops it after [`DEADLINE`].
fn boot(mut vm: Vm, cmdline: &str) -> Run {
    let serial = CaptureBuffer::new();
    vm.add_legacy_devices(Box::new(serial.clone())).unwrap();
    let image = vmc_selftest::build_image().unwrap();
    vm.load_kernel(&image, cmdline, None).unwrap();
    let control = vm.control();
    let started = Instant::now();
    let runner = thread::spawn(move || vm.run());
    while !runner.is_finished() && started.elapsed() < DEADLINE {
        thread::sleep(Duration::from_millis(5));
    }
    let elapsed = started.elapsed();
    if !runner.is_finished() {
        control.request_stop(StopReason::Stopped);
    }
    let outcome = runner.join().unwrap().unwrap();
    Run {
        outcome,
        serial: serial.text(),
        elapsed,
    }
}

/// What the receiving socket saw.
#[derive(Debug, Default)]
struct Received {
    datagrams: u64,
    bytes: u64,
    /// The first datagram that was not what the guest's scheme says, and why.
    wrong: Option<String>,
    /// Time from the first datagram to the last.
    span: Duration,
}

/// The datagram the guest sends `i`-th (from 0) in a blast of `volume` bytes in
/// datagrams of `mss`: byte j is (64 i + j) mod 256.
fn expected_datagram(i: u64, mss: u64, volume: u64) -> Vec<u8> {
    let len = mss.min(volume - i * mss);
    (0..len).map(|j| ((64 * i + j) % 256) as u8).collect()
}

/// A socket bound at 10.0.2.2:5001 in the namespace, counting and checking datagrams
/// on its own thread until `volume` bytes came, or the guest is done and nothing came
/// for 2 s.
struct Receiver {
    done: Arc<AtomicBool>,
    thread: thread::JoinHandle<Received>,
}

impl Receiver {
    fn start(ns: &NetNs, volume: u64, mss: u64) -> Receiver {
        let socket = ns.run(|| UdpSocket::bind("10.0.2.2:5001").expect("bind the receiver"));
        set_rcvbuf(&socket, RCVBUF);
        socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let guest_done = done.clone();
        let thread = thread::spawn(move || {
            let mut got = Received::default();
            let mut buf = vec![0u8; 65536];
            let mut first = None;
            let mut last = Instant::now();
            while got.bytes < volume {
                match socket.recv(&mut buf) {
                    Ok(len) => {
                        last = Instant::now();
                        first.get_or_insert(last);
                        if got.wrong.is_none() {
                            if got.bytes + len as u64 > volume {
                                got.wrong = Some(format!("datagram {} goes past the volume", got.datagrams));
                            } else if buf[..len] != expected_datagram(got.datagrams, mss, volume)[..] {
                                got.wrong = Some(format!(
                                    "datagram {} ({len} bytes, starting {:?}) is not the guest's",
                                    got.datagrams,
                                    &buf[..len.min(4)]
                                ));
                            }
                        }
                        got.datagrams += 1;
                        got.bytes += len as u64;
                    }
                    Err(_) if guest_done.load(Ordering::Relaxed) && last.elapsed() > Duration::from_secs(2) => break,
                    Err(_) => {}
                }
            }
            got.span = first.map_or(Duration::ZERO, |first| last - first);
            got
        });
        Receiver { done, thread }
    }

    fn finish(self) -> Received {
        self.done.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

fn set_rcvbuf(socket: &UdpSocket, bytes: libc::c_int) {
    // SAFETY: setsockopt reads one int from a valid pointer, on a socket we own.
    let ret = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(ret, 0, "SO_RCVBUFFORCE: {}", std::io::Error::last_os_error());
}

/// One blast through a real device on a TAP.
struct Blast {
    run: Run,
    received: Received,
    tap_frames: u64,
    stats: NetStats,
}

/// Offers `features` (VERSION_1, CSUM and MAC always) and blasts `volume` bytes with
/// `extra` on the command line.
/// The test has required `common::kvm()` and `common::root()`.
fn blast(test: &str, extra_features: &[u32], volume: u32, mss: u32) -> Blast {
    let ns = NetNs::create();
    ns.guest_link(TAP, HOST_MAC, "10.0.2.2/24", "10.0.2.15", "52:54:00:12:34:56");
    let tap = ns
        .run(|| Tap::open_or_create(TAP))
        .unwrap_or_else(|error| panic!("TAP: {error}"));
    let mut features = vec![VERSION_1, feature::CSUM, feature::GUEST_CSUM, feature::MAC];
    features.extend_from_slice(extra_features);
    let config = NetConfig {
        features: feature_word(&features),
        mac: GUEST_MAC,
        mtu: 0,
        rx_queue_size: 256,
        tx_queue_size: 256,
    };
    let mut vm = Vm::new(&VmConfig::new(64 * MIB, 1)).unwrap();
    let net = Net::new(config, tap).unwrap();
    let counters = net.counters();
    let transport = MmioTransport::new(net, vm.memory().clone(), Arc::new(NoInterrupt)).unwrap();
    vm.add_mmio_device(BASE, MMIO_SIZE, Arc::new(Mutex::new(transport)))
        .unwrap();

    let receiver = Receiver::start(&ns, u64::from(volume), u64::from(mss));
    let tap_before = ns.counter(TAP, "rx_packets");
    let run = boot(
        vm,
        &format!("virtio_mmio.device=512@{BASE:#x}:5 selftest.mss={mss} selftest.blast={volume}"),
    );
    let received = receiver.finish();
    let tap_frames = ns.counter(TAP, "rx_packets") - tap_before;
    let stats = counters.snapshot();
    eprintln!(
        "{test}: {volume} bytes, guest {:?} boot to exit, {} exits ({:?}); receiver {} datagrams in {:?} \
         ({:.1} MB/s); {tap_frames} frames through the TAP",
        run.elapsed,
        run.outcome.exits.total(),
        run.outcome.exits,
        received.datagrams,
        received.span,
        received.bytes as f64 / received.span.as_secs_f64().max(1e-9) / 1e6,
    );
    Blast {
        run,
        received,
        tap_frames,
        stats,
    }
}

/// Checks what every blast must show: the guest's line and exit, every datagram in
/// order with the right bytes, `frames` frames through the TAP and the device.
fn assert_blast(b: &Blast, volume: u32, mss: u32, spf: u32, frames: u32) {
    let serial = &b.run.serial;
    assert_eq!(b.run.outcome.reason, StopReason::DebugExit(0), "{serial}");
    let segments = volume.div_ceil(mss);
    assert_eq!(
        b.run.line("selftest: blast start"),
        format!("selftest: blast start, {spf} segments of {mss} bytes per frame, 128 frames in flight")
    );
    assert!(
        serial.contains(&format!(
            "selftest: blast {volume} bytes, {frames} frames, {segments} segments\n"
        )),
        "{serial}"
    );
    assert!(
        !serial.contains("selftest: tx "),
        "the ordinary flow is not sent:\n{serial}"
    );
    assert!(serial.ends_with("selftest: pass\n"), "{serial}");
    // UDP may drop under load, but not here: the socket's buffer holds the whole volume.
    assert_eq!(b.received.wrong, None, "{:?}", b.received);
    assert_eq!(
        (b.received.datagrams, b.received.bytes),
        (u64::from(segments), u64::from(volume)),
        "every datagram arrives"
    );
    assert_eq!(b.tap_frames, u64::from(frames), "frames through the TAP");
    assert_eq!(b.stats.tx_frames, u64::from(frames), "{}", b.stats);
    let dropped = b.stats.tx_dropped_short
        + b.stats.tx_dropped_oversize
        + b.stats.tx_dropped_bad_flags
        + b.stats.tx_dropped_bad_gso
        + b.stats.tx_dropped_bad_csum
        + b.stats.tx_dropped_tap
        + b.stats.bad_descriptors;
    assert_eq!(dropped, 0, "{}", b.stats);
}

#[test]
fn with_uso_the_blast_crosses_the_tap_in_frames_of_64_segments() {
    let test = test_name!();
    require!(common::kvm());
    require!(common::root());
    let b = blast(test, &[feature::HOST_USO], VOLUME, 1000);
    // 4195 datagrams (the last of 304 bytes) in 65 frames of 64 and one of 35.
    assert_blast(&b, VOLUME, 1000, 64, 66);
    assert!(b.run.line("selftest: negotiated").ends_with(" 56"), "{}", b.run.serial);
}

#[test]
fn without_uso_the_blast_sends_one_frame_per_datagram() {
    let test = test_name!();
    require!(common::kvm());
    require!(common::root());
    let b = blast(test, &[], VOLUME, 1000);
    assert_blast(&b, VOLUME, 1000, 1, 4195);
}

#[test]
fn a_last_uso_frame_of_one_segment_goes_out_as_a_plain_frame() {
    let test = test_name!();
    // mss 1472: 44 segments per frame (64,768 bytes); three such frames and one byte.
    let volume = 3 * 44 * 1472 + 1;
    require!(common::kvm());
    require!(common::root());
    let b = blast(test, &[feature::HOST_USO], volume, 1472);
    assert_blast(&b, volume, 1472, 44, 4);
    // The plain last frame went through the device's checks (no GSO with one segment).
    assert_eq!(b.stats.tx_dropped_bad_gso, 0);
}

/// A virtio-mmio network device that negotiates (VERSION_1, CSUM, HOST_USO; queues of
/// 256) and then never uses a transmit buffer, or, with `bad_id`, answers the first
/// transmit notification with a used entry naming descriptor 1, which heads no chain.
struct StuckNet {
    mem: GuestMemoryMmap,
    bad_id: bool,
    features_sel: u32,
    queue_sel: u32,
    used_ring: [u64; 2],
    status: u32,
    tx_notifies: u32,
}

impl StuckNet {
    const FEATURES: u64 = (1 << feature::CSUM) | (1 << VERSION_1) | (1 << feature::HOST_USO);
}

impl BusDevice for StuckNet {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        use mmio::reg;
        let value = match offset {
            reg::MAGIC_VALUE => mmio::MAGIC_VALUE,
            reg::VERSION => 2,
            reg::DEVICE_ID => 1,
            reg::DEVICE_FEATURES => (Self::FEATURES >> (32 * self.features_sel.min(1))) as u32,
            reg::QUEUE_NUM_MAX => 256,
            reg::STATUS => self.status,
            _ => 0,
        };
        let bytes = value.to_le_bytes();
        let n = data.len().min(4);
        data[..n].copy_from_slice(&bytes[..n]);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        use mmio::reg;
        let mut bytes = [0u8; 4];
        let n = data.len().min(4);
        bytes[..n].copy_from_slice(&data[..n]);
        let value = u32::from_le_bytes(bytes);
        match offset {
            reg::DEVICE_FEATURES_SEL => self.features_sel = value,
            reg::QUEUE_SEL => self.queue_sel = value.min(1),
            reg::QUEUE_DEVICE_LOW => self.used_ring[self.queue_sel as usize] = u64::from(value),
            reg::STATUS => self.status = value,
            reg::QUEUE_NOTIFY if value == 1 => {
                self.tx_notifies += 1;
                if self.bad_id && self.tx_notifies == 1 {
                    let used = self.used_ring[1];
                    // ring[0] = { id 1, len 0 }, then idx = 1.
                    self.mem.write_obj(1u32, GuestAddress(used + 4)).unwrap();
                    self.mem.write_obj(0u32, GuestAddress(used + 8)).unwrap();
                    self.mem.write_obj(1u16, GuestAddress(used + 2)).unwrap();
                }
            }
            _ => {}
        }
    }
}

fn boot_stuck(bad_id: bool, cmdline: &str) -> (Run, Arc<Mutex<StuckNet>>) {
    let mut vm = Vm::new(&VmConfig::new(64 * MIB, 1)).unwrap();
    let device = Arc::new(Mutex::new(StuckNet {
        mem: vm.memory().clone(),
        bad_id,
        features_sel: 0,
        queue_sel: 0,
        used_ring: [0; 2],
        status: 0,
        tx_notifies: 0,
    }));
    vm.add_mmio_device(BASE, MMIO_SIZE, device.clone()).unwrap();
    let run = boot(vm, &format!("virtio_mmio.device=512@{BASE:#x}:5 {cmdline}"));
    (run, device)
}

const STATUS_FAILED: u32 = 0x80;

#[test]
fn a_device_that_stops_returning_buffers_ends_the_blast_with_its_exit_code() {
    let test = test_name!();
    require!(common::kvm());
    // 16 MiB in 263 USO frames: the first 128 are posted, and never come back.
    let (run, device) = boot_stuck(false, "selftest.blast=16777216");
    assert_eq!(
        run.outcome.reason,
        StopReason::DebugExit(EXIT_NET_BLAST_STALL),
        "{}",
        run.serial
    );
    assert!(
        run.serial
            .ends_with("selftest: blast stalled, 0 of 263 frames used, 128 in flight\n"),
        "{}",
        run.serial
    );
    let device = device.lock().unwrap();
    assert_eq!(device.tx_notifies, 1, "one notification for the first batch");
    assert_ne!(device.status & STATUS_FAILED, 0, "the driver set FAILED");
    // 2^34 TSC ticks: at least 3.4 s on a TSC of 5 GHz or less.
    eprintln!("{test}: gave up after {:?}", run.elapsed);
    assert!(run.elapsed >= Duration::from_secs(3), "{:?}", run.elapsed);
}

#[test]
fn a_used_entry_naming_no_chain_ends_the_blast_as_a_broken_device() {
    require!(common::kvm());
    let (run, device) = boot_stuck(true, "selftest.blast=16777216");
    assert_eq!(
        run.outcome.reason,
        StopReason::DebugExit(EXIT_NET_DEVICE),
        "{}",
        run.serial
    );
    assert!(
        run.serial
            .ends_with("selftest: net bad used entry in the transmit queue\n"),
        "{}",
        run.serial
    );
    assert_ne!(device.lock().unwrap().status & STATUS_FAILED, 0);
}

#[test]
fn a_volume_outside_1_byte_to_1_gib_is_refused() {
    require!(common::kvm());
    for value in [
        "0",
        "1073741825",
        "0x40000001",
        "4294967297",
        "21474836480",
        "0x100000001",
        "",
        "12k",
    ] {
        let (run, device) = boot_stuck(false, &format!("selftest.blast={value}"));
        assert_eq!(
            run.outcome.reason,
            StopReason::DebugExit(EXIT_NET_ARGS),
            "{value}: {}",
            run.serial
        );
        assert!(
            run.serial.ends_with("selftest: net bad selftest.blast=\n"),
            "{value}: {}",
            run.serial
        );
        assert_eq!(device.lock().unwrap().status, 0, "{value}: the device was not touched");
    }
}
