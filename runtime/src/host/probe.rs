//! What this host can do, measured rather than assumed.
//!
//! [`HostProbe::measure`] asks the kernel directly: `uname` for the release, real
//! `TUNSETOFFLOAD` calls on a throwaway TAP for the offloads, `KVM_CHECK_EXTENSION` and
//! `KVM_GET_SUPPORTED_CPUID` for KVM, `/proc/meminfo` for the RAM. A part that cannot be
//! measured (no root, no `/dev/kvm`) is an `Err` inside the result, and the other parts
//! are still measured: a probe never fails as a whole.
//!
//! Which CPU feature name is which CPUID bit is the compiler's knowledge; the probe keeps
//! CPUID raw and answers bit lookups.

use std::sync::atomic::{AtomicU32, Ordering};

use kvm_bindings::{KVM_CPUID_FLAG_SIGNIFCANT_INDEX, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::Kvm;

use super::errno::Errno;
use super::tap::{tun_features, Tap, TapError, TapOffloads, TunFeatures};

/// The KVM capabilities a runtime like ours relies on, by stable kebab-case name
/// (`KVM_CAP_*` numbers from Linux `include/uapi/linux/kvm.h`, via kvm-bindings).
pub const KVM_CAPABILITIES: &[(&str, u32)] = &[
    ("irqchip", kvm_bindings::KVM_CAP_IRQCHIP),
    ("user-memory", kvm_bindings::KVM_CAP_USER_MEMORY),
    ("set-tss-addr", kvm_bindings::KVM_CAP_SET_TSS_ADDR),
    ("ext-cpuid", kvm_bindings::KVM_CAP_EXT_CPUID),
    ("nr-vcpus", kvm_bindings::KVM_CAP_NR_VCPUS),
    ("nr-memslots", kvm_bindings::KVM_CAP_NR_MEMSLOTS),
    ("mp-state", kvm_bindings::KVM_CAP_MP_STATE),
    ("irq-routing", kvm_bindings::KVM_CAP_IRQ_ROUTING),
    ("irqfd", kvm_bindings::KVM_CAP_IRQFD),
    ("pit2", kvm_bindings::KVM_CAP_PIT2),
    ("pit-state2", kvm_bindings::KVM_CAP_PIT_STATE2),
    ("ioeventfd", kvm_bindings::KVM_CAP_IOEVENTFD),
    ("set-identity-map-addr", kvm_bindings::KVM_CAP_SET_IDENTITY_MAP_ADDR),
    ("adjust-clock", kvm_bindings::KVM_CAP_ADJUST_CLOCK),
    ("vcpu-events", kvm_bindings::KVM_CAP_VCPU_EVENTS),
    ("xsave", kvm_bindings::KVM_CAP_XSAVE),
    ("xcrs", kvm_bindings::KVM_CAP_XCRS),
    ("get-tsc-khz", kvm_bindings::KVM_CAP_GET_TSC_KHZ),
    ("max-vcpus", kvm_bindings::KVM_CAP_MAX_VCPUS),
    ("tsc-deadline-timer", kvm_bindings::KVM_CAP_TSC_DEADLINE_TIMER),
    ("readonly-mem", kvm_bindings::KVM_CAP_READONLY_MEM),
    ("split-irqchip", kvm_bindings::KVM_CAP_SPLIT_IRQCHIP),
    ("ioeventfd-any-length", kvm_bindings::KVM_CAP_IOEVENTFD_ANY_LENGTH),
    // The x2APIC *API* (32-bit APIC ids in KVM_SET_LAPIC). x2APIC itself needs no
    // capability: KVM emulates it and shows it in the supported CPUID (leaf 1, ecx bit 21).
    ("x2apic-api", kvm_bindings::KVM_CAP_X2APIC_API),
    ("immediate-exit", kvm_bindings::KVM_CAP_IMMEDIATE_EXIT),
];

/// The result of measuring this host. Each part is measured on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostProbe {
    pub kernel: Result<KernelRelease, ProbeError>,
    pub tap: Result<TapProbe, ProbeError>,
    pub kvm: Result<KvmProbe, ProbeError>,
    /// The host's RAM in bytes (`MemTotal`).
    pub memory: Result<u64, ProbeError>,
}

impl HostProbe {
    /// Measures this host. Creates (and removes) one throwaway TAP in the calling thread's
    /// network namespace; needs CAP_NET_ADMIN for that part and access to `/dev/kvm` for
    /// the KVM part.
    pub fn measure() -> HostProbe {
        let probe = HostProbe {
            kernel: KernelRelease::measure(),
            tap: TapProbe::measure(),
            kvm: KvmProbe::measure(),
            memory: measure_memory(),
        };
        tracing::info!(
            kernel = ?probe.kernel.as_ref().map(|k| &k.release),
            tap = ?probe.tap.as_ref().map(|t| &t.offloads),
            kvm_capabilities = probe.kvm.as_ref().map_or(0, |k| k.capabilities.len()),
            "probed this host (the throwaway TAP above measured its offloads)"
        );
        probe
    }
}

/// Where Linux says how much RAM the host has.
const MEMINFO: &str = "/proc/meminfo";

/// The host's RAM in bytes: `MemTotal` of `/proc/meminfo`.
pub fn measure_memory() -> Result<u64, ProbeError> {
    use std::io::Read;
    let fail = |why: String| ProbeError::Meminfo(why);
    let mut text = String::new();
    // A /proc file states no size; it is a few KiB.
    std::fs::File::open(MEMINFO)
        .and_then(|f| f.take(1 << 20).read_to_string(&mut text))
        .map_err(|e| fail(e.to_string()))?;
    mem_total(&text).ok_or_else(|| fail("it has no `MemTotal: N kB` line".into()))
}

/// `MemTotal` of a `/proc/meminfo` text, in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find_map(|l| l.strip_prefix("MemTotal:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    kib.checked_mul(1024)
}

/// Why a part of the probe could not be measured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    #[error("uname failed with {0}")]
    Uname(Errno),
    #[error("kernel release {0:?} does not start with MAJOR.MINOR")]
    UnparsableRelease(String),
    #[error(transparent)]
    Tap(#[from] TapError),
    #[error("no free name for a throwaway probe TAP (tried {0})")]
    NoProbeTapName(String),
    #[error("cannot open /dev/kvm: {errno}: {hint}")]
    OpenKvm { errno: Errno, hint: &'static str },
    #[error("{ioctl} failed with {errno}")]
    KvmIoctl { ioctl: &'static str, errno: Errno },
    #[error("cannot read the RAM size from /proc/meminfo: {0}")]
    Meminfo(String),
}

/// The running kernel's release string and its version number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelRelease {
    /// As `uname -r` prints it, e.g. `6.18.44-fc-v669`.
    pub release: String,
    pub major: u32,
    pub minor: u32,
}

impl KernelRelease {
    /// The running kernel, from `uname`.
    pub fn measure() -> Result<KernelRelease, ProbeError> {
        // SAFETY: utsname is plain data; all zeroes is a valid value for uname to fill.
        let mut names: libc::utsname = unsafe { std::mem::zeroed() };
        // SAFETY: uname writes into the struct we own.
        if unsafe { libc::uname(&mut names) } != 0 {
            return Err(ProbeError::Uname(Errno::last()));
        }
        // SAFETY: the kernel NUL-terminates `release` inside its 65 bytes.
        let release = unsafe { std::ffi::CStr::from_ptr(names.release.as_ptr()) };
        KernelRelease::parse(&release.to_string_lossy())
    }

    /// Parses `MAJOR.MINOR[.anything]` (`6.18.44-fc-v669`, `6.2.0-rc1`, `6.18-rc3`).
    pub fn parse(release: &str) -> Result<KernelRelease, ProbeError> {
        let unparsable = || ProbeError::UnparsableRelease(release.to_string());
        let mut parts = release.splitn(3, '.');
        let major = parts.next().and_then(leading_number).ok_or_else(unparsable)?;
        let minor = parts.next().and_then(leading_number).ok_or_else(unparsable)?;
        Ok(KernelRelease {
            release: release.to_string(),
            major,
            minor,
        })
    }

    /// This kernel is `major.minor` or newer.
    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        (self.major, self.minor) >= (major, minor)
    }
}

fn leading_number(text: &str) -> Option<u32> {
    let digits = text.len() - text.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    text[..digits].parse().ok()
}

/// What the TAP driver offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapProbe {
    /// The `TUNSETIFF` flags the driver knows (`TUNGETFEATURES`, no privilege needed).
    pub driver_features: TunFeatures,
    /// The offloads a throwaway TAP (made with `IFF_VNET_HDR` and a 12-byte header)
    /// accepted; an error if it could not be made, typically for want of CAP_NET_ADMIN.
    pub offloads: Result<TapOffloadProbe, ProbeError>,
}

impl TapProbe {
    /// Measures the TAP driver; an error if `/dev/net/tun` does not open. Creates and
    /// removes a throwaway TAP in the calling thread's network namespace.
    pub fn measure() -> Result<TapProbe, ProbeError> {
        let driver_features = tun_features()?;
        Ok(TapProbe {
            driver_features,
            offloads: TapOffloadProbe::measure(),
        })
    }

    /// The driver supports `IFF_VNET_HDR`, and a TAP made with it and a 12-byte header
    /// worked here, when that could be tried.
    pub fn vnet_hdr(&self) -> bool {
        self.driver_features.vnet_hdr()
            && !matches!(
                self.offloads,
                Err(ProbeError::Tap(TapError::Ioctl {
                    ioctl: "TUNSETVNETHDRSZ",
                    ..
                }))
            )
    }
}

/// The offloads `TUNSETOFFLOAD` accepted, each found by a real call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapOffloadProbe {
    /// Every flag that was accepted in some set (`csum`, `tso4`, … `uso6`).
    pub accepted: TapOffloads,
    /// USO4 and USO6 were accepted only as a pair (Linux 6.2 to at least 6.18): a runtime
    /// can then enable USO on the TAP only if the guest takes both.
    pub uso_needs_both: bool,
}

static PROBE_TAP_SERIAL: AtomicU32 = AtomicU32::new(0);

impl TapOffloadProbe {
    fn measure() -> Result<TapOffloadProbe, ProbeError> {
        let tap = create_probe_tap()?;
        let result = TapOffloadProbe::measure_on(&tap);
        drop(tap); // created exclusively by us, so closing it removes the interface
        result
    }

    /// Tries each flag in the smallest set the kernel could accept it in. The rule in
    /// drivers/net/tun.c `set_offload`: with CSUM, TSO4/TSO6 are taken; TSO_ECN is taken only
    /// when TSO4 or TSO6 is in the same set; UFO is taken (and ignored since Linux 4.14);
    /// USO4 and USO6 are taken only both at once (Linux 6.2+). Without CSUM nothing is
    /// taken. Whatever flag is left over makes the call fail with EINVAL. So each flag is
    /// tried with CSUM and its partner, and alone first where a partner is needed, so that
    /// a kernel which relaxes the rule is measured as it is.
    fn measure_on(tap: &Tap) -> Result<TapOffloadProbe, ProbeError> {
        let accepts = |set: TapOffloads| -> Result<bool, ProbeError> {
            match tap.set_offload(set) {
                Ok(()) => Ok(true),
                Err(error) if error.errno() == Some(Errno(libc::EINVAL)) => Ok(false),
                Err(error) => Err(error.into()),
            }
        };

        let mut accepted = TapOffloads::NONE;
        let base = if accepts(TapOffloads::CSUM)? {
            accepted |= TapOffloads::CSUM;
            TapOffloads::CSUM
        } else {
            TapOffloads::NONE
        };
        for flag in [TapOffloads::TSO4, TapOffloads::TSO6, TapOffloads::UFO] {
            if accepts(base | flag)? {
                accepted |= flag;
            }
        }

        let tso = if accepted.contains(TapOffloads::TSO4) {
            TapOffloads::TSO4
        } else if accepted.contains(TapOffloads::TSO6) {
            TapOffloads::TSO6
        } else {
            TapOffloads::NONE
        };
        if accepts(base | tso | TapOffloads::TSO_ECN)? {
            accepted |= TapOffloads::TSO_ECN;
        }

        for flag in [TapOffloads::USO4, TapOffloads::USO6] {
            if accepts(base | flag)? {
                accepted |= flag;
            }
        }
        let pair = TapOffloads::USO4 | TapOffloads::USO6;
        let mut uso_needs_both = false;
        if !accepted.intersects(pair) && accepts(base | pair)? {
            accepted |= pair;
            uso_needs_both = true;
        }

        tap.set_offload(TapOffloads::NONE)?;
        Ok(TapOffloadProbe {
            accepted,
            uso_needs_both,
        })
    }
}

/// A TAP of a name nobody uses: `vmcp<pid>n<serial>`, created exclusively so that an
/// administrator's interface is never touched.
fn create_probe_tap() -> Result<Tap, ProbeError> {
    let mut tried = Vec::new();
    for _ in 0..8 {
        let serial = PROBE_TAP_SERIAL.fetch_add(1, Ordering::Relaxed) % 1000;
        let name = format!("vmcp{}n{serial}", std::process::id() % 10_000_000);
        match Tap::create_exclusive(&name) {
            Ok(tap) => return Ok(tap),
            Err(error) if error.errno() == Some(Errno(libc::EBUSY)) => tried.push(name),
            Err(error) => return Err(error.into()),
        }
    }
    Err(ProbeError::NoProbeTapName(tried.join(", ")))
}

/// What KVM offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvmProbe {
    /// `KVM_GET_API_VERSION` (12 on every Linux since 2.6.22).
    pub api_version: i32,
    /// One entry per row of [`KVM_CAPABILITIES`], in that order.
    pub capabilities: Vec<KvmCapability>,
    /// `KVM_GET_SUPPORTED_CPUID`, raw.
    pub supported_cpuid: Result<SupportedCpuid, ProbeError>,
}

/// One `KVM_CHECK_EXTENSION` answer: 0 is absent; some capabilities answer a count
/// (`nr-vcpus`, `max-vcpus`, `nr-memslots`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvmCapability {
    pub name: &'static str,
    pub number: u32,
    pub value: i32,
}

impl KvmProbe {
    /// Measures KVM; an error if `/dev/kvm` does not open.
    pub fn measure() -> Result<KvmProbe, ProbeError> {
        let kvm = Kvm::new().map_err(|error| {
            let errno = Errno(error.errno());
            ProbeError::OpenKvm {
                errno,
                hint: open_kvm_hint(errno),
            }
        })?;
        let capabilities = KVM_CAPABILITIES
            .iter()
            .map(|&(name, number)| KvmCapability {
                name,
                number,
                value: kvm.check_extension_raw(number.into()),
            })
            .collect();
        let supported_cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map(|cpuid| SupportedCpuid {
                entries: cpuid.as_slice().iter().map(CpuidEntry::from).collect(),
            })
            .map_err(|error| ProbeError::KvmIoctl {
                ioctl: "KVM_GET_SUPPORTED_CPUID",
                errno: Errno(error.errno()),
            });
        Ok(KvmProbe {
            api_version: kvm.get_api_version(),
            capabilities,
            supported_cpuid,
        })
    }

    /// The capability of that name is present (answered non-zero).
    pub fn has(&self, name: &str) -> bool {
        self.capability(name).is_some_and(|value| value > 0)
    }

    /// The `KVM_CHECK_EXTENSION` answer for a capability of [`KVM_CAPABILITIES`].
    pub fn capability(&self, name: &str) -> Option<i32> {
        self.capabilities
            .iter()
            .find(|capability| capability.name == name)
            .map(|capability| capability.value)
    }

    /// Names of the present capabilities, in table order.
    pub fn present(&self) -> Vec<&'static str> {
        self.capabilities
            .iter()
            .filter(|capability| capability.value > 0)
            .map(|capability| capability.name)
            .collect()
    }

    /// KVM can offer the guest this CPUID bit; false if CPUID could not be read.
    pub fn has_cpuid_bit(&self, leaf: u32, subleaf: u32, reg: CpuidReg, bit: u32) -> bool {
        self.supported_cpuid
            .as_ref()
            .is_ok_and(|cpuid| cpuid.has_cpuid_bit(leaf, subleaf, reg, bit))
    }
}

fn open_kvm_hint(errno: Errno) -> &'static str {
    let kvm_module_loaded = std::path::Path::new("/sys/module/kvm").exists();
    match errno.0 {
        libc::ENOENT if kvm_module_loaded => "the kvm module is loaded but /dev/kvm is missing",
        libc::ENOENT => "the kvm module is not loaded (modprobe kvm_intel or kvm_amd)",
        libc::ENODEV | libc::ENXIO => "kvm has no backend (kvm_intel/kvm_amd not loaded, or virtualization is off)",
        libc::EACCES | libc::EPERM => "no permission on /dev/kvm (join the kvm group, or run as root)",
        _ => "unexpected error",
    }
}

/// A CPUID register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CpuidReg {
    Eax,
    Ebx,
    Ecx,
    Edx,
}

/// One entry of `KVM_GET_SUPPORTED_CPUID`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuidEntry {
    pub function: u32,
    pub index: u32,
    /// `KVM_CPUID_FLAG_*`; when the significant-index flag is clear, `index` is ignored.
    pub flags: u32,
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

impl CpuidEntry {
    /// This entry answers CPUID `leaf`.`subleaf`.
    pub fn matches(&self, leaf: u32, subleaf: u32) -> bool {
        self.function == leaf && (self.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX == 0 || self.index == subleaf)
    }

    pub fn reg(&self, reg: CpuidReg) -> u32 {
        match reg {
            CpuidReg::Eax => self.eax,
            CpuidReg::Ebx => self.ebx,
            CpuidReg::Ecx => self.ecx,
            CpuidReg::Edx => self.edx,
        }
    }
}

impl From<&kvm_bindings::kvm_cpuid_entry2> for CpuidEntry {
    fn from(entry: &kvm_bindings::kvm_cpuid_entry2) -> CpuidEntry {
        CpuidEntry {
            function: entry.function,
            index: entry.index,
            flags: entry.flags,
            eax: entry.eax,
            ebx: entry.ebx,
            ecx: entry.ecx,
            edx: entry.edx,
        }
    }
}

/// The CPUID KVM can offer a guest, as KVM reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupportedCpuid {
    pub entries: Vec<CpuidEntry>,
}

impl SupportedCpuid {
    /// The entry answering `leaf`.`subleaf`, if KVM reported one.
    pub fn entry(&self, leaf: u32, subleaf: u32) -> Option<&CpuidEntry> {
        self.entries.iter().find(|entry| entry.matches(leaf, subleaf))
    }

    /// Bit `bit` (0..32) of `reg` in `leaf`.`subleaf` is set; false for an absent leaf.
    pub fn has_cpuid_bit(&self, leaf: u32, subleaf: u32, reg: CpuidReg, bit: u32) -> bool {
        bit < 32
            && self
                .entry(leaf, subleaf)
                .is_some_and(|entry| entry.reg(reg) & (1 << bit) != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_release_parses_major_and_minor() {
        for (release, major, minor) in [
            ("6.18.44-fc-v669", 6, 18),
            ("6.2.0-rc1", 6, 2),
            ("6.18-rc3", 6, 18),
            ("5.15.0-91-generic", 5, 15),
        ] {
            let parsed = KernelRelease::parse(release).unwrap();
            assert_eq!((parsed.major, parsed.minor), (major, minor), "{release}");
        }
        assert!(KernelRelease::parse("6.18.1").unwrap().at_least(6, 2));
        assert!(!KernelRelease::parse("5.15.1").unwrap().at_least(6, 2));
        for bad in ["", "six", "6", "6.x"] {
            assert!(KernelRelease::parse(bad).is_err(), "{bad:?}");
        }
    }

    fn entry(function: u32, index: u32, flags: u32, ecx: u32) -> CpuidEntry {
        CpuidEntry {
            function,
            index,
            flags,
            eax: 0,
            ebx: 0,
            ecx,
            edx: 0,
        }
    }

    #[test]
    fn cpuid_lookup_honours_the_significant_index_flag() {
        let cpuid = SupportedCpuid {
            entries: vec![
                entry(1, 0, 0, 1 << 21),
                entry(7, 0, KVM_CPUID_FLAG_SIGNIFCANT_INDEX, 1 << 3),
                entry(7, 1, KVM_CPUID_FLAG_SIGNIFCANT_INDEX, 1 << 4),
            ],
        };
        // Leaf 1 ignores the subleaf.
        assert!(cpuid.has_cpuid_bit(1, 5, CpuidReg::Ecx, 21));
        assert!(!cpuid.has_cpuid_bit(1, 0, CpuidReg::Ecx, 20));
        assert!(!cpuid.has_cpuid_bit(1, 0, CpuidReg::Edx, 21));
        // Leaf 7 does not.
        assert!(cpuid.has_cpuid_bit(7, 0, CpuidReg::Ecx, 3));
        assert!(!cpuid.has_cpuid_bit(7, 0, CpuidReg::Ecx, 4));
        assert!(cpuid.has_cpuid_bit(7, 1, CpuidReg::Ecx, 4));
        assert!(!cpuid.has_cpuid_bit(7, 2, CpuidReg::Ecx, 4));
        // Absent leaves and impossible bits are simply absent.
        assert!(!cpuid.has_cpuid_bit(0x8000_0001, 0, CpuidReg::Ecx, 0));
        assert!(!cpuid.has_cpuid_bit(1, 0, CpuidReg::Ecx, 32));
    }

    #[test]
    fn mem_total_is_read_in_bytes() {
        let meminfo = "MemTotal:       24684084 kB\nMemFree:         1000 kB\n";
        assert_eq!(mem_total(meminfo), Some(24_684_084 * 1024));
        assert_eq!(mem_total("MemFree: 1 kB\n"), None);
        assert_eq!(mem_total("MemTotal: lots\n"), None);
        assert!(measure_memory().unwrap() > 0);
    }

    #[test]
    fn capability_names_are_unique_kebab_case() {
        let mut names: Vec<&str> = KVM_CAPABILITIES.iter().map(|(name, _)| *name).collect();
        assert!(names.iter().all(|name| name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')));
        names.sort();
        names.dedup();
        assert_eq!(names.len(), KVM_CAPABILITIES.len());
    }
}
