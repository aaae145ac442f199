//! Count mode of the self-test guest (`selftest.count`) in a real KVM VM: the lines go
//! 1, 2, 3, … with no gap and no repeat, the pages it touches hold what it wrote, and
//! it notices memory or a device that changed under it.

#[path = "../../runtime/tests/common/mod.rs"]
mod common;

use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::{require, NetNs};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmc_runtime::devices::bus::BusDevice;
use vmc_runtime::devices::serial::CaptureBuffer;
use vmc_runtime::devices::virtio::net::{feature, feature_word, Net, NetConfig};
use vmc_runtime::devices::virtio::{mmio::reg, Interrupt, InterruptReason, MmioTransport, MMIO_SIZE};
use vmc_runtime::host::Tap;
use vmc_runtime::vm::{RunControl, RunOutcome, StopReason, Vm, VmConfig, VmError};
use vmc_selftest::{
    COUNT_BASE, COUNT_DEFAULT_DELAY, COUNT_DEFAULT_PAGES, COUNT_PAGE_SIZE, EXIT_COUNT_DEVICE, EXIT_COUNT_MEMORY,
};

const MIB: u64 = 1 << 20;
/// How long a test waits for the guest to reach a line (it takes milliseconds).
const DEADLINE: Duration = Duration::from_secs(60);

/// A count-mode guest running on its own thread.
struct Counting {
    serial: CaptureBuffer,
    control: Arc<RunControl>,
    memory: GuestMemoryMmap,
    runner: JoinHandle<Result<RunOutcome, VmError>>,
}

impl Counting {
    fn start(mut vm: Vm, cmdline: &str) -> Counting {
        let serial = CaptureBuffer::new();
        vm.add_legacy_devices(Box::new(serial.clone())).unwrap();
        let image = vmc_selftest::build_image().unwrap();
        vm.load_kernel(&image, cmdline, None).unwrap();
        let control = vm.control();
        let memory = vm.memory().clone();
        let runner = thread::spawn(move || vm.run());
        Counting {
            serial,
            control,
            memory,
            runner,
        }
    }

    /// Waits until the guest printed `selftest: count <n>` (true), or ended, or the
    /// deadline passed (false).
    fn wait_for_count(&self, n: u32) -> bool {
        let line = format!("selftest: count {n}\n");
        let deadline = Instant::now() + DEADLINE;
        while Instant::now() < deadline && !self.runner.is_finished() {
            if self.serial.text().contains(&line) {
                return true;
            }
            thread::sleep(Duration::from_millis(2));
        }
        self.serial.text().contains(&line)
    }

    /// Waits for the guest to end by itself (stopping it after the deadline).
    fn wait_for_end(self) -> (StopReason, String) {
        let deadline = Instant::now() + DEADLINE;
        while Instant::now() < deadline && !self.runner.is_finished() {
            thread::sleep(Duration::from_millis(2));
        }
        self.stop()
    }

    /// Stops the VM from this thread; why it stopped and its whole console output.
    fn stop(self) -> (StopReason, String) {
        self.control.request_stop(StopReason::Stopped);
        let outcome = self.runner.join().unwrap().unwrap();
        (outcome.reason, self.serial.text())
    }
}

fn read_u32(memory: &GuestMemoryMmap, addr: u32) -> u32 {
    memory.read_obj::<u32>(GuestAddress(u64::from(addr))).unwrap()
}

/// The numbers of the complete `selftest: count N` lines, in order (not the lines
/// reporting a loss).
fn counts(text: &str) -> Vec<u32> {
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    complete
        .lines()
        .filter_map(|l| l.strip_prefix("selftest: count ")?.parse().ok())
        .collect()
}

/// Asserts the lines are exactly 1..=K for some K >= `at_least`, and returns K.
fn assert_continuous(text: &str, at_least: u32) -> u32 {
    let counts = counts(text);
    let last = counts.len() as u32;
    assert!(last >= at_least, "only {last} lines:\n{text}");
    assert!(counts.iter().copied().eq(1..=last), "a gap or a repeat:\n{text}");
    last
}

/// Checks what the region holds after the guest printed `last` lines cycling over
/// `pages` pages: each page, the first and last word written by the last iteration n
/// <= `last` that touched it (n and !n), or by iteration `last + 1` if the guest
/// touched its page and was stopped before printing; zero if never touched. The page
/// after the region is untouched.
fn check_pages(memory: &GuestMemoryMmap, pages: u32, last: u32) {
    for page in 0..=pages {
        let addr = COUNT_BASE + page * COUNT_PAGE_SIZE;
        let words = (read_u32(memory, addr), read_u32(memory, addr + COUNT_PAGE_SIZE - 4));
        let latest = (page < last.min(pages)).then(|| last - (last - 1 - page) % pages);
        let want = if page == last % pages && words.0 == last + 1 {
            Some(last + 1)
        } else {
            latest
        };
        let want = want.map_or((0, 0), |n| (n, !n));
        assert_eq!(words, want, "page {page} at {addr:#x}, after {last} lines");
    }
}

#[test]
fn count_mode_counts_without_gap_or_repeat_and_touches_one_page_per_line() {
    require!(common::kvm());
    let run = Counting::start(Vm::new(&VmConfig::new(64 * MIB, 1)).unwrap(), "selftest.count");
    let started = Instant::now();
    assert!(run.wait_for_count(1), "{}", run.serial.text());
    let first = started.elapsed();
    assert!(run.wait_for_count(20), "{}", run.serial.text());
    let twenty = started.elapsed();
    let memory = run.memory.clone();
    let (reason, text) = run.stop();
    // Measurements for the log, never asserted.
    eprintln!(
        "count mode: line 1 after {first:?}, lines 1 to 20 in {:?} ({:.0} lines/s)",
        twenty - first,
        19.0 / (twenty - first).as_secs_f64()
    );
    assert_eq!(reason, StopReason::Stopped);
    assert!(
        text.contains(&format!(
            "selftest: counting, {COUNT_DEFAULT_PAGES} pages at {COUNT_BASE:#x}, delay {COUNT_DEFAULT_DELAY}\n"
        )),
        "{text}"
    );
    assert!(!text.contains("selftest: pass"), "{text}");
    let last = assert_continuous(&text, 20);
    check_pages(&memory, COUNT_DEFAULT_PAGES, last);
}

#[test]
fn count_mode_cycles_through_few_pages_and_checks_them_each_round() {
    require!(common::kvm());
    const PAGES: u32 = 8;
    let run = Counting::start(
        Vm::new(&VmConfig::new(64 * MIB, 1)).unwrap(),
        &format!("selftest.count-delay=0 selftest.count-pages={PAGES} selftest.count"),
    );
    // Five rounds: the guest has checked each page four times.
    assert!(run.wait_for_count(5 * PAGES), "{}", run.serial.text());
    let memory = run.memory.clone();
    let (reason, text) = run.stop();
    assert_eq!(reason, StopReason::Stopped);
    assert!(
        text.contains(&format!("selftest: counting, {PAGES} pages at 0x400000, delay 0\n")),
        "{text}"
    );
    let last = assert_continuous(&text, 5 * PAGES);
    check_pages(&memory, PAGES, last);
}

#[test]
fn count_mode_ends_with_its_exit_code_when_its_pages_change_under_it() {
    require!(common::kvm());
    const PAGES: u32 = 4;
    let run = Counting::start(
        Vm::new(&VmConfig::new(64 * MIB, 1)).unwrap(),
        &format!("selftest.count selftest.count-pages={PAGES}"),
    );
    assert!(run.wait_for_count(10), "{}", run.serial.text());
    // What a restore that lost guest memory would look like.
    for page in 0..PAGES {
        run.memory
            .write_slice(&[0; 4096], GuestAddress(u64::from(COUNT_BASE + page * COUNT_PAGE_SIZE)))
            .unwrap();
    }
    let zeroed_after = counts(&run.serial.text()).len() as u32;
    let (reason, text) = run.wait_for_end();
    assert_eq!(reason, StopReason::DebugExit(EXIT_COUNT_MEMORY), "{text}");
    let last = assert_continuous(&text, 10);
    assert!(
        text.ends_with(&format!("selftest: count memory lost at {}\n", last + 1)),
        "{text}"
    );
    // Within a round of the pages: the line being printed while they were zeroed, then
    // at most one line per page.
    assert!(
        last <= zeroed_after + 1 + PAGES,
        "zeroed after line {zeroed_after}, noticed only after line {last}:\n{text}"
    );
}

#[test]
fn count_mode_rejects_a_region_beyond_ram() {
    require!(common::kvm());
    // 16 MiB of RAM: 4 MiB + 4096 pages (16 MiB) ends beyond it.
    let run = Counting::start(
        Vm::new(&VmConfig::new(16 * MIB, 1)).unwrap(),
        "selftest.count selftest.count-pages=4096",
    );
    let (reason, text) = run.wait_for_end();
    assert_eq!(reason, StopReason::DebugExit(vmc_selftest::EXIT_COUNT_ARGS), "{text}");
    assert!(
        text.ends_with("selftest: count bad region: 0x400000 to 0x1400000 is not RAM\n"),
        "{text}"
    );
    assert!(counts(&text).is_empty());
}

/// Interrupts go nowhere: the guest polls.
struct NoInterrupt;

impl Interrupt for NoInterrupt {
    fn trigger(&self, _reason: InterruptReason) {}
}

#[test]
fn count_mode_watches_the_network_device_and_ends_when_it_loses_driver_ok() {
    require!(common::kvm());
    require!(common::root());
    const BASE: u64 = 0xfeb0_0e00;
    let ns = NetNs::create();
    let tap = ns
        .run(|| Tap::open_or_create("vmc-cnt0"))
        .unwrap_or_else(|error| panic!("TAP: {error}"));
    ns.ip(&["link", "set", "vmc-cnt0", "up"]);
    let config = NetConfig {
        features: feature_word(&[32, feature::MAC, feature::STATUS]),
        mac: [0x52, 0x54, 0, 0x12, 0x34, 0x56],
        mtu: 0,
        rx_queue_size: 256,
        tx_queue_size: 256,
    };
    let mut vm = Vm::new(&VmConfig::new(64 * MIB, 1)).unwrap();
    let transport = MmioTransport::new(
        Net::new(config, tap).unwrap(),
        vm.memory().clone(),
        Arc::new(NoInterrupt),
    )
    .unwrap();
    let transport = Arc::new(Mutex::new(transport));
    vm.add_mmio_device(BASE, MMIO_SIZE, transport.clone()).unwrap();
    let run = Counting::start(vm, &format!("selftest.count virtio_mmio.device=512@{BASE:#x}:5"));
    assert!(run.wait_for_count(10), "{}", run.serial.text());
    // What a restore that lost the device's state would look like: a reset device.
    transport.lock().unwrap().write(reg::STATUS, &0u32.to_le_bytes());
    let (reason, text) = run.wait_for_end();
    assert_eq!(reason, StopReason::DebugExit(EXIT_COUNT_DEVICE), "{text}");
    assert!(text.contains("selftest: tx 3 frames, 3 segments"), "{text}");
    assert!(
        text.contains(&format!(
            "selftest: counting, {COUNT_DEFAULT_PAGES} pages at 0x400000, delay "
        )) && text.contains(&format!(", watching device {BASE:#x}\n")),
        "{text}"
    );
    let last = assert_continuous(&text, 10);
    assert!(
        text.ends_with(&format!("selftest: count device status 0x0 at {}\n", last + 1)),
        "{text}"
    );
}
