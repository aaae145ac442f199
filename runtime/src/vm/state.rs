//! A running VM's state, for snapshots and live migration: pausing it, reading and
//! writing every vCPU's, the in-kernel interrupt controllers', the clock's and the
//! devices' state, and tracking which guest pages changed.
//!
//! [`VmHandle`] is taken from a [`Vm`](super::Vm) before it runs and used from another
//! thread (the control socket's) while `Vm::run` waits. The state is plain data
//! ([`MachineState`]); `crate::migration` gives it its versioned encoding.
//!
//! Guest pages change in two ways: vCPUs write them, which KVM's dirty log records
//! (`KVM_MEM_LOG_DIRTY_PAGES`), and devices write them from vmc's own threads (a
//! received frame, a used ring), which KVM cannot see: those writes are recorded in a
//! [`DirtyBitmap`] the devices share.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kvm_bindings::{
    kvm_clock_data, kvm_debugregs, kvm_fpu, kvm_irqchip, kvm_lapic_state, kvm_mp_state, kvm_msr_entry, kvm_pit_state2,
    kvm_regs, kvm_sregs, kvm_userspace_memory_region, kvm_vcpu_events, kvm_xcrs, kvm_xsave, Msrs, KVM_IRQCHIP_IOAPIC,
    KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, KVM_MEM_LOG_DIRTY_PAGES,
};
use kvm_ioctls::{VcpuFd, VmFd};
use serde::{Deserialize, Serialize};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use super::control::{PauseError, RunControl};
use super::VmFeatures;
use crate::devices::serial::{SerialConsole, SerialSnapshot};
use crate::devices::virtio::net::Net;
use crate::devices::virtio::{MmioTransport, TransportSnapshot};
use crate::dirty::{DirtyBitmap, PAGE_SIZE};

/// How long a pause may take before it is given up (the vCPUs resume).
const PAUSE_LIMIT: Duration = Duration::from_secs(5);

/// Why a VM's state could not be read, written or tracked.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot pause the VM: {0}")]
    Pause(#[from] PauseError),
    #[error("vCPU {vcpu}: {ioctl} failed: {source}")]
    Vcpu {
        vcpu: usize,
        ioctl: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("{ioctl} failed: {source}")]
    Kvm {
        ioctl: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("vCPU {vcpu}: KVM took {set} of its {count} MSRs; it refused MSR {index:#x}")]
    MsrRefused {
        vcpu: usize,
        set: usize,
        count: usize,
        index: u32,
    },
    #[error("the state does not fit this VM: {0}")]
    Mismatch(String),
    #[error("device `{device}`: {why}")]
    Device { device: String, why: String },
}

/// The legacy FPU/SSE state (`kvm_fpu`, which kvm-bindings does not serialize).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FpuState {
    pub fpr: [[u8; 16]; 8],
    pub fcw: u16,
    pub fsw: u16,
    pub ftwx: u8,
    pub last_opcode: u16,
    pub last_ip: u64,
    pub last_dp: u64,
    pub xmm: [[u8; 16]; 16],
    pub mxcsr: u32,
}

impl From<&kvm_fpu> for FpuState {
    fn from(f: &kvm_fpu) -> Self {
        FpuState {
            fpr: f.fpr,
            fcw: f.fcw,
            fsw: f.fsw,
            ftwx: f.ftwx,
            last_opcode: f.last_opcode,
            last_ip: f.last_ip,
            last_dp: f.last_dp,
            xmm: f.xmm,
            mxcsr: f.mxcsr,
        }
    }
}

impl From<&FpuState> for kvm_fpu {
    fn from(f: &FpuState) -> Self {
        kvm_fpu {
            fpr: f.fpr,
            fcw: f.fcw,
            fsw: f.fsw,
            ftwx: f.ftwx,
            last_opcode: f.last_opcode,
            last_ip: f.last_ip,
            last_dp: f.last_dp,
            xmm: f.xmm,
            mxcsr: f.mxcsr,
            ..Default::default()
        }
    }
}

/// One vCPU, as KVM holds it.
#[derive(Serialize, Deserialize)]
pub struct VcpuState {
    pub regs: kvm_regs,
    pub sregs: kvm_sregs,
    pub fpu: FpuState,
    /// `None` where the host has no XSAVE (the FPU state above then holds everything).
    pub xsave: Option<kvm_xsave>,
    pub xcrs: Option<kvm_xcrs>,
    pub debugregs: kvm_debugregs,
    pub lapic: Option<kvm_lapic_state>,
    /// Every MSR KVM could read, as (index, value).
    pub msrs: Vec<(u32, u64)>,
    pub mp_state: kvm_mp_state,
    pub events: kvm_vcpu_events,
}

/// The in-kernel PIC pair and IOAPIC.
#[derive(Serialize, Deserialize)]
pub struct IrqchipState {
    pub pic_master: kvm_irqchip,
    pub pic_slave: kvm_irqchip,
    pub ioapic: kvm_irqchip,
}

/// Everything of a paused VM but its memory.
#[derive(Serialize, Deserialize)]
pub struct MachineState {
    pub vcpus: Vec<VcpuState>,
    pub irqchip: Option<IrqchipState>,
    pub pit: Option<kvm_pit_state2>,
    pub clock: kvm_clock_data,
    pub serial: Option<SerialSnapshot>,
    /// Each virtio-net device, by its id in the ABI.
    pub net: Vec<(String, TransportSnapshot)>,
}

impl std::fmt::Debug for MachineState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MachineState")
            .field("vcpus", &self.vcpus.len())
            .field("irqchip", &self.irqchip.is_some())
            .field("net", &self.net.iter().map(|(id, _)| id).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// A guest memory range: its start and length in bytes.
pub type Range = (u64, u64);

/// Sorted page numbers turned into ranges of consecutive pages, each at most `max_len`
/// bytes.
pub fn page_ranges(mut pages: Vec<u64>, max_len: u64) -> Vec<Range> {
    pages.sort_unstable();
    pages.dedup();
    let mut ranges: Vec<Range> = Vec::new();
    for page in pages {
        let addr = page * PAGE_SIZE;
        match ranges.last_mut() {
            Some((start, len)) if *start + *len == addr && *len + PAGE_SIZE <= max_len => *len += PAGE_SIZE,
            _ => ranges.push((addr, PAGE_SIZE)),
        }
    }
    ranges
}

/// A handle on a built VM for another thread: pause and resume it, save and restore its
/// state, track dirty pages. Cheap to clone.
#[derive(Clone)]
pub struct VmHandle {
    pub(crate) vcpus: Vec<Arc<Mutex<VcpuFd>>>,
    pub(crate) fd: Arc<VmFd>,
    pub(crate) memory: GuestMemoryMmap,
    pub(crate) control: Arc<RunControl>,
    pub(crate) features: VmFeatures,
    pub(crate) msr_indices: Arc<[u32]>,
    pub(crate) serial: Option<Arc<Mutex<SerialConsole>>>,
    pub(crate) net: Vec<(String, Arc<Mutex<MmioTransport<Net>>>)>,
    pub(crate) dirty: Arc<DirtyBitmap>,
}

impl std::fmt::Debug for VmHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmHandle")
            .field("vcpus", &self.vcpus.len())
            .field("net", &self.net.iter().map(|(id, _)| id).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl VmHandle {
    /// Guest memory.
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.memory
    }

    /// The VM's stop control.
    pub fn control(&self) -> &Arc<RunControl> {
        &self.control
    }

    /// Bytes of guest RAM.
    pub fn memory_bytes(&self) -> u64 {
        self.memory.iter().map(|r| r.len()).sum()
    }

    /// Parks every vCPU (pending I/O completed), then stops each device's worker; the
    /// guest's memory and state hold still until [`VmHandle::resume`]. A frame a device
    /// had read from its TAP but not yet delivered is dropped, as a wire may drop one.
    pub fn pause(&self) -> Result<(), StateError> {
        self.control.pause_vcpus(self.vcpus.len(), PAUSE_LIMIT)?;
        for (_, transport) in &self.net {
            lock(transport).pause();
        }
        Ok(())
    }

    /// Restarts the devices, then the vCPUs.
    pub fn resume(&self) -> Result<(), StateError> {
        let mut failed = None;
        for (id, transport) in &self.net {
            if let Err(why) = lock(transport).resume() {
                failed.get_or_insert(StateError::Device {
                    device: id.clone(),
                    why,
                });
            }
        }
        self.control.resume_vcpus();
        failed.map_or(Ok(()), Err)
    }

    /// The state of a paused VM (see [`VmHandle::pause`]) or of one not yet started.
    pub fn save(&self) -> Result<MachineState, StateError> {
        let mut vcpus = Vec::with_capacity(self.vcpus.len());
        for (id, vcpu) in self.vcpus.iter().enumerate() {
            vcpus.push(self.save_vcpu(id, &lock(vcpu))?);
        }
        let kvm = |ioctl| move |source| StateError::Kvm { ioctl, source };
        let irqchip = if self.features.irqchip {
            let chip = |id| -> Result<kvm_irqchip, StateError> {
                let mut chip = kvm_irqchip {
                    chip_id: id,
                    ..Default::default()
                };
                self.fd.get_irqchip(&mut chip).map_err(kvm("KVM_GET_IRQCHIP"))?;
                Ok(chip)
            };
            Some(IrqchipState {
                pic_master: chip(KVM_IRQCHIP_PIC_MASTER)?,
                pic_slave: chip(KVM_IRQCHIP_PIC_SLAVE)?,
                ioapic: chip(KVM_IRQCHIP_IOAPIC)?,
            })
        } else {
            None
        };
        let pit = if self.features.pit {
            Some(self.fd.get_pit2().map_err(kvm("KVM_GET_PIT2"))?)
        } else {
            None
        };
        let clock = self.fd.get_clock().map_err(kvm("KVM_GET_CLOCK"))?;
        let serial = self.serial.as_ref().map(|s| lock(s).snapshot());
        let mut net = Vec::new();
        for (id, transport) in &self.net {
            let snapshot = lock(transport).snapshot().map_err(|why| StateError::Device {
                device: id.clone(),
                why,
            })?;
            net.push((id.clone(), snapshot));
        }
        Ok(MachineState {
            vcpus,
            irqchip,
            pit,
            clock,
            serial,
            net,
        })
    }

    fn save_vcpu(&self, id: usize, vcpu: &VcpuFd) -> Result<VcpuState, StateError> {
        let err = |ioctl| {
            move |source| StateError::Vcpu {
                vcpu: id,
                ioctl,
                source,
            }
        };
        // KVM's advice: the MP state first (it may flush pending APIC events), the
        // events last.
        let mp_state = vcpu.get_mp_state().map_err(err("KVM_GET_MP_STATE"))?;
        let regs = vcpu.get_regs().map_err(err("KVM_GET_REGS"))?;
        let sregs = vcpu.get_sregs().map_err(err("KVM_GET_SREGS"))?;
        let fpu = FpuState::from(&vcpu.get_fpu().map_err(err("KVM_GET_FPU"))?);
        let xsave = vcpu.get_xsave().ok();
        let xcrs = vcpu.get_xcrs().ok();
        let debugregs = vcpu.get_debug_regs().map_err(err("KVM_GET_DEBUGREGS"))?;
        let lapic = if self.features.irqchip {
            Some(vcpu.get_lapic().map_err(err("KVM_GET_LAPIC"))?)
        } else {
            None
        };
        let msrs = self.save_msrs(id, vcpu)?;
        let events = vcpu.get_vcpu_events().map_err(err("KVM_GET_VCPU_EVENTS"))?;
        Ok(VcpuState {
            regs,
            sregs,
            fpu,
            xsave,
            xcrs,
            debugregs,
            lapic,
            msrs,
            mp_state,
            events,
        })
    }

    /// Every MSR of the index list KVM can read for this vCPU. `KVM_GET_MSRS` stops at
    /// the first it cannot read: that one is skipped and the rest asked again.
    fn save_msrs(&self, id: usize, vcpu: &VcpuFd) -> Result<Vec<(u32, u64)>, StateError> {
        let mut out = Vec::new();
        let mut rest: &[u32] = &self.msr_indices;
        while !rest.is_empty() {
            let batch = &rest[..rest.len().min(kvm_bindings::KVM_MAX_MSR_ENTRIES)];
            let entries: Vec<kvm_msr_entry> = batch
                .iter()
                .map(|&index| kvm_msr_entry {
                    index,
                    ..Default::default()
                })
                .collect();
            let mut msrs =
                Msrs::from_entries(&entries).map_err(|e| StateError::Mismatch(format!("MSR list: {e:?}")))?;
            let read = vcpu.get_msrs(&mut msrs).map_err(|source| StateError::Vcpu {
                vcpu: id,
                ioctl: "KVM_GET_MSRS",
                source,
            })?;
            out.extend(msrs.as_slice()[..read].iter().map(|e| (e.index, e.data)));
            // Skip the one that could not be read.
            rest = &rest[(read + 1).min(rest.len())..];
        }
        Ok(out)
    }

    /// Puts a VM that has not run yet in `state`: its memory must already hold the
    /// guest's pages (devices check their rings against it).
    pub fn restore(&self, state: &MachineState) -> Result<(), StateError> {
        if state.vcpus.len() != self.vcpus.len() {
            return Err(StateError::Mismatch(format!(
                "it has {} vCPUs, the VM {}",
                state.vcpus.len(),
                self.vcpus.len()
            )));
        }
        if state.irqchip.is_some() != self.features.irqchip || state.pit.is_some() != self.features.pit {
            return Err(StateError::Mismatch(
                "its interrupt controllers and timer are not this VM's".into(),
            ));
        }
        let mut ids: Vec<&String> = state.net.iter().map(|(id, _)| id).collect();
        let mut ours: Vec<&String> = self.net.iter().map(|(id, _)| id).collect();
        ids.sort();
        ours.sort();
        if ids != ours || state.serial.is_some() != self.serial.is_some() {
            return Err(StateError::Mismatch(format!(
                "its devices {ids:?} are not this VM's {ours:?}"
            )));
        }
        let kvm = |ioctl| move |source| StateError::Kvm { ioctl, source };
        // The interrupt controllers before the vCPUs, whose local APICs they feed.
        if let Some(chips) = &state.irqchip {
            for chip in [&chips.pic_master, &chips.pic_slave, &chips.ioapic] {
                self.fd.set_irqchip(chip).map_err(kvm("KVM_SET_IRQCHIP"))?;
            }
        }
        if let Some(pit) = &state.pit {
            self.fd.set_pit2(pit).map_err(kvm("KVM_SET_PIT2"))?;
        }
        for (id, (vcpu, saved)) in self.vcpus.iter().zip(&state.vcpus).enumerate() {
            restore_vcpu(id, &lock(vcpu), saved)?;
        }
        // Only the value: the flags KVM reports (TSC_STABLE, REALTIME, ...) are not
        // for setting.
        let clock = kvm_clock_data {
            clock: state.clock.clock,
            ..Default::default()
        };
        self.fd.set_clock(&clock).map_err(kvm("KVM_SET_CLOCK"))?;
        if let (Some(serial), Some(saved)) = (&self.serial, &state.serial) {
            lock(serial).restore(saved).map_err(|why| StateError::Device {
                device: "serial".into(),
                why,
            })?;
        }
        for (id, transport) in &self.net {
            let Some((_, saved)) = state.net.iter().find(|(i, _)| i == id) else {
                continue;
            };
            lock(transport).restore(saved).map_err(|why| StateError::Device {
                device: id.clone(),
                why,
            })?;
        }
        Ok(())
    }

    /// Starts or stops KVM's dirty log on every memory slot. Starting also clears what
    /// the devices marked, so both count from now.
    pub fn log_dirty_pages(&self, on: bool) -> Result<(), StateError> {
        for (slot, region) in self.memory.iter().enumerate() {
            let mem_region = kvm_userspace_memory_region {
                slot: slot as u32,
                flags: if on { KVM_MEM_LOG_DIRTY_PAGES } else { 0 },
                guest_phys_addr: region.start_addr().0,
                memory_size: region.len(),
                userspace_addr: region.as_ptr() as u64,
            };
            // SAFETY: the same live mapping the slot was created with; only its flags
            // change.
            unsafe { self.fd.set_user_memory_region(mem_region) }.map_err(|source| StateError::Kvm {
                ioctl: "KVM_SET_USER_MEMORY_REGION (dirty log)",
                source,
            })?;
        }
        if on {
            self.dirty.take();
        }
        Ok(())
    }

    /// The pages written since the last call (or since the dirty log started), by the
    /// vCPUs (KVM's log) and by the devices, as page numbers.
    pub fn take_dirty_pages(&self) -> Result<Vec<u64>, StateError> {
        let mut pages = self.dirty.take();
        for (slot, region) in self.memory.iter().enumerate() {
            let bitmap = self
                .fd
                .get_dirty_log(slot as u32, region.len() as usize)
                .map_err(|source| StateError::Kvm {
                    ioctl: "KVM_GET_DIRTY_LOG",
                    source,
                })?;
            let base = region.start_addr().0 / PAGE_SIZE;
            for (i, word) in bitmap.iter().enumerate() {
                let mut bits = *word;
                while bits != 0 {
                    pages.push(base + i as u64 * 64 + u64::from(bits.trailing_zeros()));
                    bits &= bits - 1;
                }
            }
        }
        Ok(pages)
    }

    /// Every page of guest RAM, as page numbers.
    pub fn all_pages(&self) -> Vec<u64> {
        self.memory
            .iter()
            .flat_map(|r| {
                let first = r.start_addr().0 / PAGE_SIZE;
                first..first + r.len() / PAGE_SIZE
            })
            .collect()
    }
}

/// Writes one vCPU's state, in the order KVM needs: the MSRs (the APIC base among them)
/// before the registers and the local APIC, the MP state and the pending events last.
fn restore_vcpu(id: usize, vcpu: &VcpuFd, s: &VcpuState) -> Result<(), StateError> {
    let err = |ioctl| {
        move |source| StateError::Vcpu {
            vcpu: id,
            ioctl,
            source,
        }
    };
    let entries: Vec<kvm_msr_entry> = s
        .msrs
        .iter()
        .map(|&(index, data)| kvm_msr_entry {
            index,
            data,
            ..Default::default()
        })
        .collect();
    for chunk in entries.chunks(kvm_bindings::KVM_MAX_MSR_ENTRIES) {
        let msrs = Msrs::from_entries(chunk).map_err(|e| StateError::Mismatch(format!("MSR list: {e:?}")))?;
        let set = vcpu.set_msrs(&msrs).map_err(err("KVM_SET_MSRS"))?;
        if set < chunk.len() {
            return Err(StateError::MsrRefused {
                vcpu: id,
                set,
                count: chunk.len(),
                index: chunk[set].index,
            });
        }
    }
    vcpu.set_sregs(&s.sregs).map_err(err("KVM_SET_SREGS"))?;
    vcpu.set_regs(&s.regs).map_err(err("KVM_SET_REGS"))?;
    vcpu.set_fpu(&kvm_fpu::from(&s.fpu)).map_err(err("KVM_SET_FPU"))?;
    if let Some(xsave) = &s.xsave {
        // SAFETY: a kvm_xsave as KVM_GET_XSAVE filled it (no larger state follows it).
        unsafe { vcpu.set_xsave(xsave) }.map_err(err("KVM_SET_XSAVE"))?;
    }
    if let Some(xcrs) = &s.xcrs {
        vcpu.set_xcrs(xcrs).map_err(err("KVM_SET_XCRS"))?;
    }
    vcpu.set_debug_regs(&s.debugregs).map_err(err("KVM_SET_DEBUGREGS"))?;
    if let Some(lapic) = &s.lapic {
        vcpu.set_lapic(lapic).map_err(err("KVM_SET_LAPIC"))?;
    }
    vcpu.set_mp_state(s.mp_state).map_err(err("KVM_SET_MP_STATE"))?;
    vcpu.set_vcpu_events(&s.events).map_err(err("KVM_SET_VCPU_EVENTS"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_become_bounded_runs() {
        assert_eq!(
            page_ranges(vec![5, 1, 2, 3, 2, 9], 2 * PAGE_SIZE),
            vec![(0x1000, 0x2000), (0x3000, 0x1000), (0x5000, 0x1000), (0x9000, 0x1000)]
        );
    }
}
