//! One vCPU: its initial configuration, its entry state, and its run loop.

use std::sync::{Arc, Mutex};

use kvm_bindings::{kvm_fpu, kvm_regs, CpuId};
use kvm_ioctls::{VcpuExit, VcpuFd};

use super::control::{self, RunControl, StopReason};
use super::VmError;
use crate::boot::gdt::{self, CODE32_SELECTOR, CODE64_SELECTOR, DATA_SELECTOR, TSS_SELECTOR};
use crate::boot::{CpuMode, EntryState};
use crate::devices::bus::Bus;

const CR0_PE: u64 = 1 << 0;
const CR0_ET: u64 = 1 << 4;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
/// rflags with only the always-one bit: interrupts off.
const RFLAGS_RESERVED: u64 = 0x2;

const APIC_LVT_LINT0: usize = 0x350;
const APIC_LVT_LINT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0b100;
const APIC_MODE_EXTINT: u32 = 0b111;

const KVM_SYSTEM_EVENT_SHUTDOWN: u32 = 1;
const KVM_SYSTEM_EVENT_RESET: u32 = 2;

/// What a vCPU's exits were, counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ExitStats {
    /// Port reads.
    pub io_in: u64,
    /// Port writes.
    pub io_out: u64,
    /// MMIO reads.
    pub mmio_read: u64,
    /// MMIO writes.
    pub mmio_write: u64,
    /// Accesses (of any kind above) that no device claimed.
    pub unclaimed: u64,
    /// Every other exit (interrupted runs included).
    pub other: u64,
}

impl ExitStats {
    /// All exits.
    pub fn total(&self) -> u64 {
        self.io_in + self.io_out + self.mmio_read + self.mmio_write + self.other
    }

    pub(crate) fn add(&mut self, o: &ExitStats) {
        self.io_in += o.io_in;
        self.io_out += o.io_out;
        self.mmio_read += o.mmio_read;
        self.mmio_write += o.mmio_write;
        self.unclaimed += o.unclaimed;
        self.other += o.other;
    }
}

/// Per-vCPU setup common to every vCPU: CPUID (with its own APIC id), FPU, and the
/// local APIC's LINT pins (so the legacy PIC reaches vCPU 0 as on real boards).
pub(crate) fn configure(vcpu: &VcpuFd, id: u8, supported_cpuid: &CpuId, irqchip: bool) -> Result<(), VmError> {
    let mut cpuid = supported_cpuid.clone();
    for entry in cpuid.as_mut_slice() {
        match entry.function {
            1 => {
                entry.ebx = (entry.ebx & 0x00ff_ffff) | (u32::from(id) << 24);
                entry.ecx |= 1 << 31; // running under a hypervisor
            }
            0xb | 0x1f => entry.edx = u32::from(id),
            _ => {}
        }
    }
    vcpu.set_cpuid2(&cpuid)
        .map_err(|e| VmError::vcpu(id, "KVM_SET_CPUID2", e))?;

    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(|e| VmError::vcpu(id, "KVM_SET_FPU", e))?;

    if irqchip {
        let mut lapic = vcpu.get_lapic().map_err(|e| VmError::vcpu(id, "KVM_GET_LAPIC", e))?;
        set_lvt_mode(&mut lapic.regs, APIC_LVT_LINT0, APIC_MODE_EXTINT);
        set_lvt_mode(&mut lapic.regs, APIC_LVT_LINT1, APIC_MODE_NMI);
        vcpu.set_lapic(&lapic)
            .map_err(|e| VmError::vcpu(id, "KVM_SET_LAPIC", e))?;
    }
    Ok(())
}

fn set_lvt_mode(regs: &mut [libc::c_char; 1024], offset: usize, mode: u32) {
    let mut bytes = [0u8; 4];
    for (b, r) in bytes.iter_mut().zip(&regs[offset..offset + 4]) {
        *b = *r as u8;
    }
    let value = (u32::from_le_bytes(bytes) & !0x700) | (mode << 8);
    for (r, b) in regs[offset..offset + 4].iter_mut().zip(value.to_le_bytes()) {
        *r = b as libc::c_char;
    }
}

/// Puts the vCPU in the state `entry` describes.
pub(crate) fn set_entry_state(vcpu: &VcpuFd, id: u8, entry: &EntryState) -> Result<(), VmError> {
    let mut sregs = vcpu.get_sregs().map_err(|e| VmError::vcpu(id, "KVM_GET_SREGS", e))?;
    let data = gdt::segment(DATA_SELECTOR);
    sregs.cs = gdt::segment(match entry.mode {
        CpuMode::Protected32 => CODE32_SELECTOR,
        CpuMode::Long64 => CODE64_SELECTOR,
    });
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = gdt::segment(TSS_SELECTOR);
    sregs.gdt.base = entry.gdt_base;
    sregs.gdt.limit = (gdt::GDT.len() * 8 - 1) as u16;
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    match entry.mode {
        CpuMode::Protected32 => {
            sregs.cr0 = CR0_PE | CR0_ET;
            sregs.cr3 = 0;
            sregs.cr4 = 0;
            sregs.efer = 0;
        }
        CpuMode::Long64 => {
            sregs.cr0 = CR0_PE | CR0_ET | CR0_PG;
            sregs.cr3 = entry.cr3;
            sregs.cr4 = CR4_PAE;
            sregs.efer = EFER_LME | EFER_LMA;
        }
    }
    vcpu.set_sregs(&sregs)
        .map_err(|e| VmError::vcpu(id, "KVM_SET_SREGS", e))?;

    let regs = kvm_regs {
        rflags: RFLAGS_RESERVED,
        rip: entry.ip,
        rsp: entry.sp,
        rbx: entry.rbx,
        rsi: entry.rsi,
        ..Default::default()
    };
    vcpu.set_regs(&regs).map_err(|e| VmError::vcpu(id, "KVM_SET_REGS", e))
}

/// A vCPU ready to run on its own thread.
pub(crate) struct VcpuRunner {
    pub(crate) id: u8,
    /// Held while the vCPU runs; free while it is parked, for its state to be saved
    /// or restored.
    pub(crate) vcpu: Arc<Mutex<VcpuFd>>,
    pub(crate) pio: Arc<Bus>,
    pub(crate) mmio: Arc<Bus>,
    pub(crate) control: Arc<RunControl>,
}

impl VcpuRunner {
    /// Runs until the VM stops; returns this vCPU's exit counts.
    pub(crate) fn run(self) -> Result<ExitStats, VmError> {
        // However this thread ends (a stop, an error, even a panic), the VM stops
        // and the thread in `Vm::run` is woken to join everyone.
        struct EndGuard(Arc<RunControl>);
        impl Drop for EndGuard {
            fn drop(&mut self) {
                control::set_immediate_exit_target(std::ptr::null_mut());
                self.0.begin_stop();
                self.0.wake();
            }
        }
        let _guard = EndGuard(self.control.clone());
        crate::confine::enter(crate::confine::Role::Vcpu).map_err(|e| VmError::Host {
            what: "seccomp filter of a vCPU thread",
            source: std::io::Error::other(e.to_string()),
        })?;
        let vcpu = self.vcpu.clone();
        let mut stats = ExitStats::default();
        loop {
            let mut fd = vcpu.lock().unwrap_or_else(|p| p.into_inner());
            let immediate_exit = std::ptr::addr_of_mut!(fd.get_kvm_run().immediate_exit);
            control::set_immediate_exit_target(immediate_exit);
            // SAFETY: `immediate_exit` points into this vCPU's mapped kvm_run.
            unsafe { std::ptr::write_volatile(immediate_exit, 0) };
            self.run_loop(&mut fd, &mut stats)?;
            if self.control.is_stopping() {
                return Ok(stats);
            }
            // A pause: finish the exit in flight (KVM completes an I/O instruction only
            // on the next KVM_RUN, which immediate_exit turns into an at-once EINTR), so
            // that the state read while parked is consistent; then park unlocked.
            // SAFETY: as above.
            unsafe { std::ptr::write_volatile(immediate_exit, 1) };
            match fd.run() {
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {}
                Err(e) => return Err(VmError::vcpu(self.id, "KVM_RUN", e)),
                Ok(_) => {}
            }
            control::set_immediate_exit_target(std::ptr::null_mut());
            drop(fd);
            self.control.park();
        }
    }

    /// Runs the vCPU until the VM stops or a pause is requested.
    fn run_loop(&self, vcpu: &mut VcpuFd, stats: &mut ExitStats) -> Result<(), VmError> {
        let id = self.id;
        while !self.control.is_stopping() && !self.control.pause_requested() {
            let exit = match vcpu.run() {
                Ok(exit) => exit,
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    stats.other += 1;
                    continue;
                }
                Err(e) => return Err(VmError::vcpu(id, "KVM_RUN", e)),
            };
            match exit {
                VcpuExit::IoIn(port, data) => {
                    stats.io_in += 1;
                    if !self.pio.read(u64::from(port), data) {
                        // An empty ISA port floats high.
                        data.fill(0xff);
                        stats.unclaimed += 1;
                    }
                }
                VcpuExit::IoOut(port, data) => {
                    stats.io_out += 1;
                    if !self.pio.write(u64::from(port), data) {
                        stats.unclaimed += 1;
                    }
                }
                VcpuExit::MmioRead(addr, data) => {
                    stats.mmio_read += 1;
                    if !self.mmio.read(addr, data) {
                        // Unassigned MMIO reads as zero (as in QEMU).
                        data.fill(0);
                        stats.unclaimed += 1;
                    }
                }
                VcpuExit::MmioWrite(addr, data) => {
                    stats.mmio_write += 1;
                    if !self.mmio.write(addr, data) {
                        stats.unclaimed += 1;
                    }
                }
                other => {
                    stats.other += 1;
                    match stop_reason(id, other) {
                        Ok(Some(reason)) => self.control.request_stop(reason),
                        Ok(None) => {}
                        Err(e) => {
                            let rip = vcpu.get_regs().ok().map(|r| r.rip);
                            return Err(e.at_rip(rip));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// What an exit other than I/O means: keep going (`None`), stop, or fail.
fn stop_reason(id: u8, exit: VcpuExit<'_>) -> Result<Option<StopReason>, VmError> {
    match exit {
        VcpuExit::Intr | VcpuExit::IrqWindowOpen => Ok(None),
        VcpuExit::Hlt => Ok(Some(StopReason::Halted)),
        VcpuExit::Shutdown => Ok(Some(StopReason::Shutdown)),
        VcpuExit::SystemEvent(KVM_SYSTEM_EVENT_RESET, _) => Ok(Some(StopReason::Reset)),
        VcpuExit::SystemEvent(KVM_SYSTEM_EVENT_SHUTDOWN, _) => Ok(Some(StopReason::Shutdown)),
        VcpuExit::FailEntry(reason, _) => Err(VmError::EntryFailed {
            vcpu: id,
            reason,
            rip: None,
        }),
        other => Err(VmError::UnexpectedExit {
            vcpu: id,
            exit: format!("{other:?}"),
            rip: None,
        }),
    }
}
