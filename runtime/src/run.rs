//! `vmc run`: execute exactly an ABI document, or refuse before creating anything.
//!
//! Order matters: the document was already hash-checked when read; here the host is
//! probed and compared with the document's `requires` (the same check as `vmc check`),
//! and only then are guest memory, vCPUs, TAPs and devices created.

use std::io::Write;
use std::time::{Duration, Instant};

use vmc_compiler::check::{self, Assessment, Host, Verdict};
use vmc_compiler::schema::{self, Property};
use vmc_compiler::{cpu, AbiDocument};

use std::sync::{Arc, Mutex};

use kvm_ioctls::IoEventAddress;

use crate::devices::virtio::mmio::TransportError;
use crate::devices::virtio::net::{Net, NetConfig, NetCounters, NetError};
use crate::devices::virtio::{EventFdInterrupt, MmioTransport, MMIO_SIZE, QUEUE_NOTIFY_OFFSET};
use crate::host::files::{self, ReadError};
use crate::host::tap::{Tap, TapError};
use crate::vm::cpuid::CpuidMask;
use crate::vm::{ExitStats, RunOutcome, SignalMark, StopReason, Vm, VmConfig, VmError};

/// Why `vmc run` did not run the VM (or could not finish running it).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The host lacks capabilities the ABI needs; nothing was created.
    #[error("this host cannot run this ABI; nothing was started\n{}", check::render_assessment(.0, "this host"))]
    Refused(Assessment),
    /// Capabilities the ABI needs are in parts of the host that could not be measured
    /// (no access to /dev/kvm or /dev/net/tun); nothing was created.
    #[error(
        "cannot tell whether this host can run this ABI: what it needs was not measured; nothing was started\n{}",
        check::render_assessment(.0, "this host")
    )]
    Unmeasured(Assessment),
    /// The document names no kernel.
    #[error("the document's `host` section names no kernel: add `boot {{ kernel \"PATH\" }}` to the spec")]
    NoKernel,
    /// A boot file could not be read (it is not a regular file, or cannot be opened).
    #[error("cannot read the {what} {path}: {source}")]
    ReadBootFile {
        what: &'static str,
        path: String,
        #[source]
        source: ReadError,
    },
    /// A boot file is larger than the guest's memory, so it cannot be loaded; it was not read.
    #[error("cannot read the {what} {path}: it is {size} bytes, more than the guest's memory ({memory} bytes)")]
    BootFileTooLarge {
        what: &'static str,
        path: String,
        size: u64,
        memory: u64,
    },
    /// The ABI holds a value this runtime cannot build.
    #[error("this runtime cannot build the ABI: {0}")]
    Unsupported(String),
    /// A device could not be built or attached.
    #[error("device `{device}`: {source}")]
    Device {
        device: String,
        #[source]
        source: DeviceError,
    },
    #[error(transparent)]
    Vm(#[from] VmError),
    /// The snapshot could not be restored; nothing ran.
    #[error(transparent)]
    Restore(#[from] crate::migration::snapshot::SnapshotError),
    /// The incoming migration failed or was refused; nothing ran.
    #[error(transparent)]
    Incoming(#[from] crate::migration::transfer::MigrationError),
    /// Confinement (seccomp, dropping root) could not be set up; nothing ran.
    #[error(transparent)]
    Confine(#[from] crate::confine::ConfineError),
    /// The control socket could not be created; nothing ran.
    #[error("cannot create the control socket {path}: {source}")]
    ApiSocket {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Why a device of the document could not be built or attached to the VM.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// A property's value does not fit the device's register.
    #[error("{property} is out of range")]
    OutOfRange { property: &'static str },
    /// The device's configuration is one it cannot honour.
    #[error(transparent)]
    Config(#[from] NetError),
    /// The document's host section names no TAP for the device.
    #[error("the document's host section names no TAP for it")]
    NoTap,
    /// The TAP could not be opened or created.
    #[error(transparent)]
    Tap(#[from] TapError),
    /// The virtio-mmio transport refused the device.
    #[error("virtio-mmio transport: {0}")]
    Transport(#[from] TransportError),
    /// The device's slot in the document is smaller than the transport's registers.
    #[error("its slot of {size:#x} bytes is smaller than the transport's registers")]
    SlotTooSmall { size: u64 },
    /// KVM lacks the in-kernel irqchip with irqfd that virtio interrupts go through.
    #[error("virtio devices need KVM's in-kernel irqchip with irqfd, which this host lacks")]
    NoIrqfd,
    /// The interrupt's eventfd could not be created.
    #[error("interrupt eventfd: {0}")]
    InterruptEventFd(#[source] std::io::Error),
    /// `KVM_IRQFD` failed.
    #[error("KVM_IRQFD on IRQ {irq}: {source}")]
    Irqfd {
        irq: u32,
        #[source]
        source: kvm_ioctls::Error,
    },
    /// `KVM_IOEVENTFD` failed for a queue's notification address.
    #[error("KVM_IOEVENTFD for queue {queue}: {source}")]
    Ioeventfd {
        queue: u32,
        #[source]
        source: kvm_ioctls::Error,
    },
}

/// How the guest starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Start {
    /// From its kernel, as the document says.
    #[default]
    Boot,
    /// Where a snapshot file stopped it.
    Restore(std::path::PathBuf),
    /// Where a live migration from another host leaves it (waits for the source).
    Incoming(crate::migration::transfer::Address),
}

/// What `vmc run` does besides running the document.
#[derive(Default)]
pub struct RunOptions {
    pub start: Start,
    /// The seccomp filters of vmc's threads (see [`crate::confine`]).
    pub seccomp: crate::confine::SeccompMode,
    /// Drop to this user and group once the VM is built.
    pub user: Option<(u32, u32)>,
    /// Stop the guest with [`StopReason::Timeout`] after this long.
    pub timeout: Option<Duration>,
    /// Serve the control socket here (see [`crate::migration::api`]).
    pub api_sock: Option<std::path::PathBuf>,
    /// Told of each step worth a line on the terminal ("waiting for a migration on …").
    pub progress: Option<Progress>,
}

/// Where `vmc run` reports its steps, and its devices what went wrong with their
/// backends (a TAP deleted under the VM).
pub type Progress = Arc<dyn Fn(&str) + Send + Sync>;

/// What happened during a run, for the exit status and for `--stats`.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub outcome: RunOutcome,
    /// Each virtio-net device's counters at the end, by device id.
    pub net: Vec<(String, String)>,
    /// From the start of [`run`] to the guest's first byte on the console.
    pub first_output: Option<Duration>,
    /// From the start of [`run`] to the end of the run.
    pub total: Duration,
    /// Bytes of guest RAM resident at the end: the pages the guest (or a restore)
    /// touched, part of the process's RSS but not vmc's own.
    pub guest_resident: u64,
}

/// Whether `host` can run `doc` (the same check as `vmc check`): refused when it lacks a
/// capability `doc` needs, or when one is in a part of the host not measured.
pub fn preflight(doc: &AbiDocument, host: &Host) -> Result<(), RunError> {
    let assessment = check::assess(doc, host);
    match assessment.verdict() {
        Verdict::CanRun => Ok(()),
        Verdict::CannotRun => Err(RunError::Refused(assessment)),
        Verdict::CannotTell => Err(RunError::Unmeasured(assessment)),
    }
}

/// The CPUID restrictions that give the guest exactly the ABI's CPU features: each
/// feature register holds the ABI's bits and no others, and the XSAVE leaf offers only
/// the state components those features use (x87 and SSE; AVX; the AVX-512 ones), and
/// the power management leaf no invariant TSC.
pub fn cpuid_masks(doc: &AbiDocument) -> Vec<CpuidMask> {
    let features = || doc.abi.cpu.features.iter().map(String::as_str);
    let reg_index = |r: cpu::Reg| match r {
        cpu::Reg::Eax => 0,
        cpu::Reg::Ebx => 1,
        cpu::Reg::Ecx => 2,
        cpu::Reg::Edx => 3,
    };
    let mut masks: Vec<CpuidMask> = cpu::FEATURE_REGISTERS
        .iter()
        .map(|&(leaf, subleaf, reg)| CpuidMask {
            leaf,
            subleaf,
            reg: reg_index(reg),
            allowed: cpu::register_mask(leaf, subleaf, reg, features()),
        })
        .collect();
    let has = |name: &str| features().any(|f| f == name);
    let mut xcr0 = 0b11; // x87, SSE
    if has("avx") {
        xcr0 |= 1 << 2;
    }
    if has("avx512f") {
        xcr0 |= 0b111 << 5; // opmask, ZMM_Hi256, Hi16_ZMM
    }
    masks.push(CpuidMask {
        leaf: 0xd,
        subleaf: 0,
        reg: 0,
        allowed: xcr0,
    });
    masks.push(CpuidMask {
        leaf: 0xd,
        subleaf: 0,
        reg: 3,
        allowed: 0,
    });
    // No ABI feature lives in the advanced power management leaf, and its invariant-TSC
    // bit would make Linux prefer the raw TSC over kvm-clock: the host's TSC frequency
    // would become the guest's clock, which breaks on a host with another frequency.
    masks.push(CpuidMask {
        leaf: 0x8000_0007,
        subleaf: 0,
        reg: 3,
        allowed: 0,
    });
    masks
}

/// The kernel command line: the host binding's, then one `virtio_mmio.device=` per
/// device (see [`vmc_compiler::limits::kernel_cmdline`]).
pub fn kernel_cmdline(doc: &AbiDocument) -> String {
    vmc_compiler::limits::kernel_cmdline(&doc.abi, &doc.host)
}

/// Builds the VM the document describes and runs it to the end. `host` is this host,
/// measured; `console` receives the guest's serial output.
///
/// A stop signal (SIGINT, SIGTERM) counts from the moment the process installed its
/// handlers ([`crate::vm::install_stop_signal_handlers`], which `vmc run` does first):
/// one received while the VM is being built ends the run between two steps, before any
/// vCPU enters the guest, with [`StopReason::Signal`]; what was built (a TAP included)
/// is taken down on the way out. One run per process: a process that runs several VMs
/// uses [`Vm`] and [`Vm::stop_on_signals_since`] itself.
pub fn run(doc: &AbiDocument, host: &Host, console: Box<dyn Write + Send>) -> Result<RunReport, RunError> {
    run_since(doc, host, console, SignalMark::START)
}

/// [`run`], honouring only the stop signals received after `mark`.
pub fn run_since(
    doc: &AbiDocument,
    host: &Host,
    console: Box<dyn Write + Send>,
    mark: SignalMark,
) -> Result<RunReport, RunError> {
    run_with(doc, host, console, mark, &RunOptions::default())
}

/// [`run_since`], starting as `options` say: booted, restored from a snapshot, or
/// received from another host; with a control socket if asked.
pub fn run_with(
    doc: &AbiDocument,
    host: &Host,
    console: Box<dyn Write + Send>,
    mark: SignalMark,
    options: &RunOptions,
) -> Result<RunReport, RunError> {
    let start = Instant::now();
    let stopped = |net: &[(String, Arc<NetCounters>)]| -> Option<RunReport> {
        let signal = mark.pending()?;
        Some(RunReport {
            outcome: RunOutcome {
                reason: StopReason::Signal(signal),
                exits: ExitStats::default(),
            },
            net: net
                .iter()
                .map(|(id, c)| (id.clone(), c.snapshot().to_string()))
                .collect(),
            first_output: None,
            total: start.elapsed(),
            guest_resident: 0,
        })
    };
    if let Some(report) = stopped(&[]) {
        return Ok(report);
    }
    preflight(doc, host)?;
    tracing::info!(
        abi = %doc.hash,
        host_platform = %host.platform.name,
        kernel = %host.platform.kernel,
        "this host can run the document (the same check as `vmc check`)"
    );
    // A guest that continues from a saved state needs no kernel.
    let boot_files = if options.start == Start::Boot {
        let kernel_path = doc.host.kernel.as_ref().ok_or(RunError::NoKernel)?;
        // Neither can be larger than the guest's memory: that bounds what is read.
        let kernel = read_boot_file("kernel", kernel_path, doc.abi.memory)?;
        if let Some(report) = stopped(&[]) {
            return Ok(report);
        }
        let initrd = doc
            .host
            .initrd
            .as_ref()
            .map(|p| read_boot_file("initrd", p, doc.abi.memory))
            .transpose()?;
        if let Some(report) = stopped(&[]) {
            return Ok(report);
        }
        Some((kernel, initrd))
    } else {
        None
    };
    let vcpus = u8::try_from(doc.abi.cpu.count)
        .ok()
        .filter(|&n| u64::from(n) <= vmc_compiler::limits::MAX_CPUS)
        .ok_or_else(|| {
            RunError::Unsupported(format!(
                "{} vCPUs (at most {})",
                doc.abi.cpu.count,
                vmc_compiler::limits::MAX_CPUS
            ))
        })?;
    // The reader accepts only documents of a known machine type; a runtime older than
    // the document's machine type cannot know what its firmware offers.
    let machine = vmc_compiler::machine::resolve(&doc.abi.machine)
        .ok_or_else(|| RunError::Unsupported(format!("machine type {}", doc.abi.machine)))?;
    let config = VmConfig {
        cpuid_masks: cpuid_masks(doc),
        ..VmConfig::new(doc.abi.memory, vcpus)
    };
    let mut vm = Vm::new(&config)?;
    vm.stop_on_signals_since(mark);
    if let Some(report) = stopped(&[]) {
        return Ok(report);
    }
    let first_output = FirstByte::new(console, start, vm.control());
    let first_output_at = first_output.seen.clone();
    vm.add_legacy_devices(Box::new(first_output))?;
    let mut counters = Vec::new();
    for device in &doc.abi.devices {
        counters.push((
            device.id.clone(),
            attach_net(&mut vm, doc, device, options.progress.clone())?,
        ));
        if let Some(report) = stopped(&counters) {
            return Ok(report);
        }
    }
    let say = |line: &str| {
        if let Some(progress) = &options.progress {
            progress(line);
        }
    };
    match (&options.start, boot_files) {
        (Start::Boot, Some((kernel, initrd))) => {
            vm.load_kernel(&kernel, &kernel_cmdline(doc), initrd.as_deref())?;
            // The firmware's tables; a restored or incoming guest has them in its memory.
            if machine.mp_table {
                crate::boot::mptable::write(vm.memory(), vcpus).map_err(VmError::from)?;
            }
        }
        (Start::Restore(path), _) => {
            crate::migration::snapshot::restore(&mut vm, doc, path)?;
            say(&format!("restored {} ({})", path.display(), doc.hash));
        }
        (Start::Incoming(address), _) => {
            let incoming = crate::migration::transfer::Incoming::bind(address)?;
            say(&format!("waiting for a migration on {address} ({})", doc.hash));
            match crate::migration::transfer::receive(&mut vm, doc, &incoming, mark) {
                Ok(received) => say(&format!(
                    "migration received in {:.1} ms; the guest runs here now",
                    received.elapsed.as_secs_f64() * 1e3
                )),
                Err(crate::migration::transfer::MigrationError::Signal(_)) => {
                    if let Some(report) = stopped(&counters) {
                        return Ok(report);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        (Start::Boot, None) => return Err(RunError::NoKernel),
    }
    // Every filter is compiled before the first thread takes one.
    crate::confine::configure(options.seccomp)?;
    let api = match &options.api_sock {
        Some(path) => Some(
            crate::migration::api::ApiServer::bind(path, options.user).map_err(|source| RunError::ApiSocket {
                path: path.display().to_string(),
                source,
            })?,
        ),
        None => None,
    };
    // Everything that needs root is open: /dev/kvm, the TAPs, the control socket.
    if let Some((uid, gid)) = options.user {
        crate::confine::drop_privileges(uid, gid)?;
        say(&format!("running as user {uid}, group {gid}, without capabilities"));
    }
    let _api = match api {
        Some(bound) => Some(bound.serve(vm.handle(), doc.clone()).map_err(|source| {
            RunError::ApiSocket {
                path: options
                    .api_sock
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                source,
            }
        })?),
        None => None,
    };
    vm.set_time_limit(options.timeout);
    // The last look before the vCPUs start is Vm::run's own, with the same mark.
    let outcome = vm.run()?;
    tracing::info!(reason = ?outcome.reason, exits = outcome.exits.total(), "the VM stopped");
    let guest_resident = crate::vm::layout::resident_bytes(vm.memory());
    let first_output = *first_output_at.lock().unwrap_or_else(|e| e.into_inner());
    Ok(RunReport {
        outcome,
        net: counters
            .into_iter()
            .map(|(id, c)| (id, c.snapshot().to_string()))
            .collect(),
        first_output,
        total: start.elapsed(),
        guest_resident,
    })
}

/// Builds one virtio-net device exactly as the ABI says and maps it at its slot:
/// interrupts through an irqfd on its IRQ, queue notifications through ioeventfds when
/// the host has them (else through the MMIO exit, which signals the same eventfds).
fn attach_net(
    vm: &mut Vm,
    doc: &AbiDocument,
    device: &vmc_compiler::NetDevice,
    progress: Option<Progress>,
) -> Result<Arc<NetCounters>, RunError> {
    let fail = |source: DeviceError| RunError::Device {
        device: device.id.clone(),
        source,
    };
    let u16_value = |property: &Property| {
        let value = device.value(property).and_then(|v| v.as_integer()).unwrap_or(0);
        u16::try_from(value).map_err(|_| {
            fail(DeviceError::OutOfRange {
                property: property.name,
            })
        })
    };
    let config = NetConfig {
        features: device.feature_word(),
        mac: device.mac(),
        mtu: u16_value(schema::HOST_MTU)?,
        rx_queue_size: u16_value(schema::RX_QUEUE_SIZE)?,
        tx_queue_size: u16_value(schema::TX_QUEUE_SIZE)?,
    };
    if !vm.features().irqfd {
        return Err(fail(DeviceError::NoIrqfd));
    }
    let tap_name = doc.host.tap(&device.id).ok_or_else(|| fail(DeviceError::NoTap))?;
    let tap = Tap::open_or_create(tap_name).map_err(|e| fail(e.into()))?;
    let mut net = Net::new(config, tap).map_err(|e| fail(e.into()))?;
    net.track_writes(vm.dirty_bitmap());
    if let Some(progress) = progress {
        let id = device.id.clone();
        net.set_notice(Arc::new(move |line: &str| progress(&format!("{id}: {line}"))));
    }
    let counters = net.counters();
    let irq = Arc::new(EventFdInterrupt::new().map_err(|e| fail(DeviceError::InterruptEventFd(e)))?);
    vm.vm_fd().register_irqfd(irq.eventfd(), device.irq).map_err(|source| {
        fail(DeviceError::Irqfd {
            irq: device.irq,
            source,
        })
    })?;
    let transport = MmioTransport::new(net, vm.memory().clone(), irq).map_err(|e| fail(e.into()))?;
    if vm.features().ioeventfd {
        let notify = IoEventAddress::Mmio(device.mmio_base + QUEUE_NOTIFY_OFFSET);
        for (queue, event) in transport.queue_notify_events() {
            vm.vm_fd()
                .register_ioevent(event, &notify, queue)
                .map_err(|source| fail(DeviceError::Ioeventfd { queue, source }))?;
        }
    }
    if device.mmio_size < MMIO_SIZE {
        return Err(fail(DeviceError::SlotTooSmall { size: device.mmio_size }));
    }
    vm.add_net_device(
        &device.id,
        device.mmio_base,
        device.mmio_size,
        Arc::new(Mutex::new(transport)),
    )?;
    Ok(counters)
}

/// Reads a kernel or initrd through [`files::read_regular`]: a regular file of at most
/// `memory` bytes, or a refusal naming it.
fn read_boot_file(what: &'static str, path: &str, memory: u64) -> Result<Vec<u8>, RunError> {
    let path_text = path.to_string();
    match files::read_regular(std::path::Path::new(path), memory) {
        Ok(input) => Ok(input.bytes),
        Err(ReadError::TooLarge { size, .. }) => Err(RunError::BootFileTooLarge {
            what,
            path: path_text,
            size,
            memory,
        }),
        Err(source) => Err(RunError::ReadBootFile {
            what,
            path: path_text,
            source,
        }),
    }
}

/// A console writer that notes when the guest first wrote to it, and stops the VM when
/// the console's reader goes away (a closed pipe: `vmc run … | head`), as any program
/// writing to a closed pipe stops.
struct FirstByte {
    out: Box<dyn Write + Send>,
    start: Instant,
    seen: std::sync::Arc<std::sync::Mutex<Option<Duration>>>,
    control: Arc<crate::vm::RunControl>,
}

impl FirstByte {
    fn new(out: Box<dyn Write + Send>, start: Instant, control: Arc<crate::vm::RunControl>) -> FirstByte {
        FirstByte {
            out,
            start,
            seen: Default::default(),
            control,
        }
    }
}

impl Write for FirstByte {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if !buf.is_empty() {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            seen.get_or_insert_with(|| self.start.elapsed());
        }
        let written = self.out.write(buf);
        self.closed(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let flushed = self.out.flush();
        self.closed(flushed)
    }
}

impl FirstByte {
    /// Stops the VM if the console's reader is gone.
    fn closed<T>(&self, result: std::io::Result<T>) -> std::io::Result<T> {
        if result
            .as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
        {
            self.control.request_stop(StopReason::ConsoleClosed);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_error_keeps_its_kind_and_its_message() {
        let tap = TapError::InvalidName {
            name: "a/b".into(),
            reason: "no slash".into(),
        };
        let error = RunError::Device {
            device: "net0".into(),
            source: DeviceError::Tap(tap.clone()),
        };
        assert_eq!(error.to_string(), format!("device `net0`: {tap}"));
        assert!(matches!(
            error,
            RunError::Device {
                source: DeviceError::Tap(TapError::InvalidName { .. }),
                ..
            }
        ));
        let error = RunError::Device {
            device: "net0".into(),
            source: DeviceError::SlotTooSmall { size: 0x100 },
        };
        assert_eq!(
            error.to_string(),
            "device `net0`: its slot of 0x100 bytes is smaller than the transport's registers"
        );
    }
}
