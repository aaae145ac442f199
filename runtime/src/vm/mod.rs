//! A KVM virtual machine built from plain parameters ([`VmConfig`]): guest memory,
//! the in-kernel interrupt controllers where the host has them, vCPUs, the PIO and
//! MMIO buses, and a run loop that ends with a [`StopReason`].
//!
//! ```no_run
//! use vmc_runtime::vm::{Vm, VmConfig};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut vm = Vm::new(&VmConfig::new(512 << 20, 1))?;
//! vm.add_legacy_devices(Box::new(std::io::stdout()))?;
//! let image = std::fs::read("guest.elf")?;
//! vm.load_kernel(&image, "console=ttyS0", None)?;
//! let outcome = vm.run()?;
//! std::process::exit(outcome.reason.exit_code());
//! # }
//! ```

pub mod control;
pub mod cpuid;
pub mod layout;
pub mod state;
mod vcpu;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::thread;

use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Cap, Kvm, VcpuFd, VmFd};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::signal::Killable;

pub use self::control::{
    install_stop_signal_handlers, PauseError, RunControl, SignalMark, StopReason, EXIT_CONSOLE_CLOSED, EXIT_TIMEOUT,
};
pub use self::layout::MemoryError;
pub use self::state::{StateError, VmHandle};
pub use self::vcpu::ExitStats;
use crate::boot::{self, BootError, EntryState, LoadedKernel};
use crate::devices::bus::{Bus, BusError, SharedDevice};
use crate::devices::debug_exit::{DebugExit, DEBUG_EXIT_PORT};
use crate::devices::i8042::{I8042, I8042_DATA_PORT, I8042_PORTS};
use crate::devices::serial::{SerialConsole, COM1_IRQ, COM1_PORT, UART_PORTS};
use crate::devices::virtio::net::Net;
use crate::devices::virtio::MmioTransport;
use crate::dirty::DirtyBitmap;

/// What the VM is made of: `vmc run` fills it in from the ABI document (memory, vCPUs,
/// CPUID masks); tests build it directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfig {
    /// Guest RAM in bytes (a multiple of 4 KiB, at least 2 MiB).
    pub memory_bytes: u64,
    /// Number of vCPUs (1..=254).
    pub vcpus: u8,
    /// Use the in-kernel irqchip and PIT when the host has them. Without them `hlt`
    /// exits to user space (and ends the VM), and only one vCPU is possible.
    pub irqchip: bool,
    /// Restrictions of KVM's supported CPUID, so the guest sees exactly the features its
    /// ABI lists (see [`cpuid`]); empty: KVM's supported CPUID as it is.
    pub cpuid_masks: Vec<cpuid::CpuidMask>,
}

impl VmConfig {
    /// `memory_bytes` of RAM, `vcpus` vCPUs, in-kernel irqchip if available.
    pub fn new(memory_bytes: u64, vcpus: u8) -> Self {
        Self {
            memory_bytes,
            vcpus,
            irqchip: true,
            cpuid_masks: Vec::new(),
        }
    }
}

/// Which optional KVM facilities this VM uses (each probed with KVM_CHECK_EXTENSION).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VmFeatures {
    /// In-kernel PIC + IOAPIC + LAPICs (KVM_CREATE_IRQCHIP).
    pub irqchip: bool,
    /// In-kernel PIT (KVM_CREATE_PIT2).
    pub pit: bool,
    /// Device interrupts through eventfds (KVM_IRQFD); needs the irqchip.
    pub irqfd: bool,
    /// Guest writes absorbed by eventfds (KVM_IOEVENTFD).
    pub ioeventfd: bool,
    /// `kvm_run.immediate_exit`, which the stop path relies on.
    pub immediate_exit: bool,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunOutcome {
    /// Why the VM stopped.
    pub reason: StopReason,
    /// All vCPUs' exits, summed.
    pub exits: ExitStats,
}

/// Errors creating or running a VM. Guest behaviour is never one of them: a guest
/// can only make the VM stop (see [`StopReason`]) or fail to enter.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// /dev/kvm could not be opened.
    #[error("cannot open /dev/kvm: {0}")]
    OpenKvm(#[source] kvm_ioctls::Error),
    /// The KVM API version is not 12.
    #[error("unsupported KVM API version {0} (12 expected)")]
    KvmApiVersion(i32),
    /// The host lacks a capability vmc needs.
    #[error("the host's KVM lacks {0}")]
    MissingCapability(&'static str),
    /// A VM-level ioctl failed.
    #[error("{ioctl} failed: {source}")]
    Kvm {
        /// Which ioctl.
        ioctl: &'static str,
        /// The errno.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// A vCPU ioctl failed.
    #[error("vCPU {vcpu}: {ioctl} failed: {source}")]
    Vcpu {
        /// vCPU index.
        vcpu: u8,
        /// Which ioctl.
        ioctl: &'static str,
        /// The errno.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// The configuration is impossible.
    #[error("invalid VM configuration: {0}")]
    InvalidConfig(String),
    /// Guest memory could not be created.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// A device could not be placed on a bus.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The kernel could not be loaded.
    #[error(transparent)]
    Boot(#[from] BootError),
    /// A host resource (eventfd, thread, signal handler) could not be set up.
    #[error("{what}: {source}")]
    Host {
        /// What was being set up.
        what: &'static str,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// `run` was called twice.
    #[error("the VM has already run")]
    AlreadyRan,
    /// KVM could not enter the guest (bad vCPU state).
    #[error("vCPU {vcpu}: KVM could not enter the guest (hardware reason {reason:#x}, rip {rip:?})")]
    EntryFailed {
        /// vCPU index.
        vcpu: u8,
        /// `hardware_entry_failure_reason`.
        reason: u64,
        /// Guest rip, if it could be read.
        rip: Option<u64>,
    },
    /// KVM returned an exit vmc cannot handle (e.g. an emulation failure).
    #[error("vCPU {vcpu}: unexpected exit {exit} (rip {rip:?})")]
    UnexpectedExit {
        /// vCPU index.
        vcpu: u8,
        /// The exit, as KVM reported it.
        exit: String,
        /// Guest rip, if it could be read.
        rip: Option<u64>,
    },
    /// A vCPU thread panicked (a bug in vmc).
    #[error("vCPU {0} thread panicked")]
    VcpuPanicked(u8),
}

impl VmError {
    fn kvm(ioctl: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
        move |source| VmError::Kvm { ioctl, source }
    }

    pub(crate) fn vcpu(vcpu: u8, ioctl: &'static str, source: kvm_ioctls::Error) -> VmError {
        VmError::Vcpu { vcpu, ioctl, source }
    }

    fn host(what: &'static str) -> impl FnOnce(std::io::Error) -> VmError {
        move |source| VmError::Host { what, source }
    }

    pub(crate) fn at_rip(mut self, at: Option<u64>) -> VmError {
        if let VmError::EntryFailed { rip, .. } | VmError::UnexpectedExit { rip, .. } = &mut self {
            *rip = at;
        }
        self
    }
}

/// A KVM virtual machine.
pub struct Vm {
    // Field order is drop order: vCPUs and the VM fd go before the memory they map
    // (a `VmHandle` keeps a clone of the memory for as long as it keeps them).
    vcpus: Vec<Arc<Mutex<VcpuFd>>>,
    fd: Arc<VmFd>,
    /// The MSRs KVM can save and restore for a vCPU (`KVM_GET_MSR_INDEX_LIST`).
    msr_indices: Vec<u32>,
    ran: bool,
    _kvm: Kvm,
    memory: GuestMemoryMmap,
    pio: Bus,
    mmio: Bus,
    control: Arc<RunControl>,
    features: VmFeatures,
    entry: Option<EntryState>,
    /// The vCPUs were given a saved state ([`Vm::restore`]) instead of an entry.
    restored: bool,
    serial: Option<Arc<Mutex<SerialConsole>>>,
    net: Vec<(String, Arc<Mutex<MmioTransport<Net>>>)>,
    /// Guest pages the devices wrote, for live migration.
    dirty: Arc<DirtyBitmap>,
    /// Stop signals after this mark stop the run; `None`: those from `run` on.
    signals_since: Option<SignalMark>,
    /// How long `run` may run the guest.
    time_limit: Option<std::time::Duration>,
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vm")
            .field("vcpus", &self.vcpus.len())
            .field("features", &self.features)
            .field("pio", &self.pio)
            .field("mmio", &self.mmio)
            .finish_non_exhaustive()
    }
}

impl Vm {
    /// Creates the VM: memory, interrupt controllers, vCPUs (not yet running).
    pub fn new(config: &VmConfig) -> Result<Vm, VmError> {
        if config.vcpus == 0 || u64::from(config.vcpus) > vmc_compiler::limits::MAX_CPUS {
            return Err(VmError::InvalidConfig(format!(
                "{} vCPUs (1 to {} are possible)",
                config.vcpus,
                vmc_compiler::limits::MAX_CPUS
            )));
        }
        let kvm = Kvm::new().map_err(VmError::OpenKvm)?;
        let version = kvm.get_api_version();
        if version != 12 {
            return Err(VmError::KvmApiVersion(version));
        }
        let fd = kvm.create_vm().map_err(VmError::kvm("KVM_CREATE_VM"))?;
        for (cap, name) in [
            (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
            (Cap::SetTssAddr, "KVM_CAP_SET_TSS_ADDR"),
        ] {
            if !fd.check_extension(cap) {
                return Err(VmError::MissingCapability(name));
            }
        }

        let memory = layout::create_guest_memory(config.memory_bytes)?;
        for (slot, region) in memory.iter().enumerate() {
            let mem_region = kvm_userspace_memory_region {
                slot: slot as u32,
                flags: 0,
                guest_phys_addr: region.start_addr().0,
                memory_size: region.len(),
                userspace_addr: region.as_ptr() as u64,
            };
            // SAFETY: the region is a live mapping of `memory_size` bytes owned by
            // `memory`, which the Vm keeps until after the VM fd is closed.
            unsafe { fd.set_user_memory_region(mem_region) }.map_err(VmError::kvm("KVM_SET_USER_MEMORY_REGION"))?;
        }

        if fd.check_extension(Cap::SetIdentityMapAddr) {
            fd.set_identity_map_address(layout::KVM_IDENTITY_MAP_ADDR)
                .map_err(VmError::kvm("KVM_SET_IDENTITY_MAP_ADDR"))?;
        }
        fd.set_tss_address(layout::KVM_TSS_ADDR as usize)
            .map_err(VmError::kvm("KVM_SET_TSS_ADDR"))?;

        let mut features = VmFeatures {
            ioeventfd: fd.check_extension(Cap::Ioeventfd),
            immediate_exit: fd.check_extension(Cap::ImmediateExit),
            ..Default::default()
        };
        if config.irqchip && fd.check_extension(Cap::Irqchip) {
            fd.create_irq_chip().map_err(VmError::kvm("KVM_CREATE_IRQCHIP"))?;
            features.irqchip = true;
            features.irqfd = fd.check_extension(Cap::Irqfd);
            if fd.check_extension(Cap::Pit2) {
                let pit = kvm_pit_config {
                    flags: kvm_bindings::KVM_PIT_SPEAKER_DUMMY,
                    ..Default::default()
                };
                fd.create_pit2(pit).map_err(VmError::kvm("KVM_CREATE_PIT2"))?;
                features.pit = true;
            }
        }
        if config.vcpus > 1 && !features.irqchip {
            // Without a local APIC the other vCPUs would run from the reset vector.
            return Err(VmError::InvalidConfig(
                "more than one vCPU needs the in-kernel irqchip".into(),
            ));
        }

        let mut cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(VmError::kvm("KVM_GET_SUPPORTED_CPUID"))?;
        cpuid::restrict(&mut cpuid, &config.cpuid_masks);
        let mut vcpus = Vec::with_capacity(usize::from(config.vcpus));
        for id in 0..config.vcpus {
            let vcpu = fd
                .create_vcpu(u64::from(id))
                .map_err(|e| VmError::vcpu(id, "KVM_CREATE_VCPU", e))?;
            vcpu::configure(&vcpu, id, &cpuid, features.irqchip)?;
            vcpus.push(Arc::new(Mutex::new(vcpu)));
        }
        // Without the list (an old or limited KVM) a snapshot simply holds no MSRs.
        let msr_indices = kvm
            .get_msr_index_list()
            .map(|list| list.as_slice().to_vec())
            .unwrap_or_default();

        let control = Arc::new(RunControl::new().map_err(VmError::host("stop eventfd"))?);
        let memory_end = memory.iter().map(|r| r.start_addr().0 + r.len()).max().unwrap_or(0);
        Ok(Vm {
            restored: false,
            serial: None,
            net: Vec::new(),
            dirty: Arc::new(DirtyBitmap::new(memory_end)),
            vcpus,
            fd: Arc::new(fd),
            msr_indices,
            ran: false,
            _kvm: kvm,
            memory,
            pio: Bus::new(),
            mmio: Bus::new(),
            control,
            features,
            entry: None,
            signals_since: None,
            time_limit: None,
        })
    }

    /// Guest memory.
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.memory
    }

    /// The KVM VM fd, for devices that register irqfds or ioeventfds.
    pub fn vm_fd(&self) -> &VmFd {
        &self.fd
    }

    /// Which optional KVM facilities this VM uses.
    pub fn features(&self) -> VmFeatures {
        self.features
    }

    /// Makes [`Vm::run`] honour the stop signals received after `mark` (by default, only
    /// those from the call on), so that one that came while the VM was being built is
    /// not lost: the run then ends with [`StopReason::Signal`] before any vCPU starts.
    pub fn stop_on_signals_since(&mut self, mark: SignalMark) {
        self.signals_since = Some(mark);
    }

    /// Makes [`Vm::run`] stop the guest with [`StopReason::Timeout`] once it ran this
    /// long.
    pub fn set_time_limit(&mut self, limit: Option<std::time::Duration>) {
        self.time_limit = limit;
    }

    /// The VM's stop control; [`RunControl::request_stop`] ends a run from any thread.
    pub fn control(&self) -> Arc<RunControl> {
        self.control.clone()
    }

    /// Maps a device on the port I/O bus.
    pub fn add_pio_device(&mut self, base: u64, len: u64, device: SharedDevice) -> Result<(), VmError> {
        Ok(self.pio.insert(base, len, device)?)
    }

    /// Maps a device on the MMIO bus.
    pub fn add_mmio_device(&mut self, base: u64, len: u64, device: SharedDevice) -> Result<(), VmError> {
        Ok(self.mmio.insert(base, len, device)?)
    }

    /// Adds COM1 (output to `console`, interrupt through an irqfd on GSI 4 when the
    /// irqchip exists), the debug-exit port and the i8042 reset line, wired to stop the
    /// VM ([`StopReason::DebugExit`], [`StopReason::Reset`]).
    pub fn add_legacy_devices(&mut self, console: Box<dyn Write + Send>) -> Result<Arc<Mutex<SerialConsole>>, VmError> {
        let serial = SerialConsole::new(console).map_err(VmError::host("serial eventfd"))?;
        if self.features.irqfd {
            self.fd
                .register_irqfd(serial.irq_eventfd(), COM1_IRQ)
                .map_err(VmError::kvm("KVM_IRQFD"))?;
        }
        let serial = Arc::new(Mutex::new(serial));
        self.add_pio_device(COM1_PORT, UART_PORTS, serial.clone())?;
        self.serial = Some(serial.clone());
        let control = self.control.clone();
        let debug_exit = DebugExit::new(move |code| control.request_stop(StopReason::DebugExit(code)));
        self.add_pio_device(DEBUG_EXIT_PORT, 1, Arc::new(Mutex::new(debug_exit)))?;
        let control = self.control.clone();
        let i8042 = I8042::new(move || control.request_stop(StopReason::Reset));
        self.add_pio_device(I8042_DATA_PORT, I8042_PORTS, Arc::new(Mutex::new(i8042)))?;
        Ok(serial)
    }

    /// Maps a virtio-net device's transport on the MMIO bus and keeps it for the VM's
    /// state (snapshots, migration) under its ABI id.
    pub fn add_net_device(
        &mut self,
        id: &str,
        base: u64,
        len: u64,
        transport: Arc<Mutex<MmioTransport<Net>>>,
    ) -> Result<(), VmError> {
        self.add_mmio_device(base, len, transport.clone())?;
        self.net.push((id.to_string(), transport));
        Ok(())
    }

    /// Where devices record the guest pages they write (see [`DirtyBitmap`]).
    pub fn dirty_bitmap(&self) -> Arc<DirtyBitmap> {
        self.dirty.clone()
    }

    /// A handle for another thread: pause, resume, save and restore the VM's state.
    pub fn handle(&self) -> VmHandle {
        VmHandle {
            vcpus: self.vcpus.clone(),
            fd: self.fd.clone(),
            memory: self.memory.clone(),
            control: self.control.clone(),
            features: self.features,
            msr_indices: self.msr_indices.clone().into(),
            serial: self.serial.clone(),
            net: self.net.clone(),
            dirty: self.dirty.clone(),
        }
    }

    /// Puts the VM, not yet run, in a saved state (its memory already filled): `run`
    /// then continues the guest where the state was taken instead of booting it.
    pub fn restore(&mut self, saved: &state::MachineState) -> Result<(), state::StateError> {
        if self.ran {
            return Err(state::StateError::Mismatch("the VM has already run".into()));
        }
        let handle = self.handle();
        handle.restore(saved)?;
        // The devices that were running run again (their workers start now; the vCPUs
        // start with `run`).
        handle.resume()?;
        self.restored = true;
        Ok(())
    }

    /// Loads a kernel (PVH ELF or bzImage, see [`boot::load_kernel`]) and points
    /// vCPU 0 at its entry.
    pub fn load_kernel(&mut self, image: &[u8], cmdline: &str, initrd: Option<&[u8]>) -> Result<LoadedKernel, VmError> {
        let loaded = boot::load_kernel(&self.memory, image, cmdline, initrd)?;
        self.set_entry(&loaded.entry)?;
        Ok(loaded)
    }

    /// Puts vCPU 0 in `entry`'s state (the others wait for INIT/SIPI).
    pub fn set_entry(&mut self, entry: &EntryState) -> Result<(), VmError> {
        if self.ran {
            return Err(VmError::AlreadyRan);
        }
        let bsp = self.vcpus.first().ok_or(VmError::AlreadyRan)?;
        vcpu::set_entry_state(&bsp.lock().unwrap_or_else(|p| p.into_inner()), 0, entry)?;
        self.entry = Some(*entry);
        Ok(())
    }

    /// Runs the vCPUs until the guest or the host stops the VM, then joins them.
    /// Guest memory stays readable afterwards; a VM runs only once.
    pub fn run(&mut self) -> Result<RunOutcome, VmError> {
        if self.ran {
            return Err(VmError::AlreadyRan);
        }
        if self.entry.is_none() && !self.restored {
            return Err(VmError::InvalidConfig(
                "no entry state: load a kernel or restore a state first".into(),
            ));
        }
        self.ran = true;
        if !self.features.immediate_exit {
            return Err(VmError::MissingCapability("KVM_CAP_IMMEDIATE_EXIT"));
        }
        control::install_kick_handler().map_err(VmError::host("vCPU kick signal handler"))?;
        let since = self.signals_since.unwrap_or_else(SignalMark::now);
        let signals = control::SignalRegistration::new(&self.control, since);
        // A stop asked for before the run (a signal while the VM was being built)
        // ends it here: no vCPU enters the guest.
        if let Some(signal) = signals.pending_signal() {
            self.control.request_stop(StopReason::Signal(signal));
        }
        let vcpus = if self.control.is_stopping() {
            Vec::new()
        } else {
            self.vcpus.clone()
        };
        let pio = Arc::new(std::mem::take(&mut self.pio));
        let mmio = Arc::new(std::mem::take(&mut self.mmio));

        let mut threads = Vec::new();
        let mut spawn_error = None;
        for (id, vcpu) in vcpus.into_iter().enumerate() {
            let runner = vcpu::VcpuRunner {
                id: id as u8,
                vcpu,
                pio: pio.clone(),
                mmio: mmio.clone(),
                control: self.control.clone(),
            };
            match thread::Builder::new()
                .name(format!("vcpu{id}"))
                .spawn(move || runner.run())
            {
                Ok(handle) => threads.push(handle),
                Err(e) => {
                    spawn_error = Some(VmError::Host {
                        what: "vCPU thread",
                        source: e,
                    });
                    self.control.begin_stop();
                    break;
                }
            }
        }

        {
            use std::os::unix::thread::JoinHandleExt;
            self.control
                .set_vcpu_threads(threads.iter().map(|h| h.as_pthread_t()).collect());
        }
        let deadline = self.time_limit.map(|limit| std::time::Instant::now() + limit);
        // This thread only waits and takes the VM down from here: its own filter.
        if let Err(e) = crate::confine::enter(crate::confine::Role::Main) {
            spawn_error.get_or_insert(VmError::Host {
                what: "seccomp filter of the main thread",
                source: std::io::Error::other(e.to_string()),
            });
            self.control.begin_stop();
        }
        if spawn_error.is_none() {
            self.control.wait(&signals, deadline);
        }
        self.control.begin_stop();
        // No pause may kick a thread once it can be joined.
        self.control.set_vcpu_threads(Vec::new());
        for handle in &threads {
            // A thread that already finished is still joinable, so the handle is valid.
            let _ = handle.kill(control::kick_signal());
        }

        let mut exits = ExitStats::default();
        let mut first_error = spawn_error;
        for (id, handle) in threads.into_iter().enumerate() {
            match handle.join() {
                Ok(Ok(stats)) => exits.add(&stats),
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(_) => {
                    first_error.get_or_insert(VmError::VcpuPanicked(id as u8));
                }
            }
        }
        drop(signals);
        match first_error {
            Some(e) => Err(e),
            None => Ok(RunOutcome {
                reason: self.control.reason().unwrap_or(StopReason::Stopped),
                exits,
            }),
        }
    }
}
