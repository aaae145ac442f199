//! A TAP interface as a virtio-net backend: frames carry a 12-byte virtio-net header.
//!
//! This file knows the tun driver's ioctls and nothing of virtio queues: a virtio-net
//! device hands it guest buffers as iovecs and gets whole frames back.
//!
//! Lifetime of the interface. [`Tap::open_or_create`] attaches to the named TAP and tells
//! which of two cases applied:
//! - the interface already existed: it can only be a *persistent* TAP (an administrator
//!   made it, e.g. `ip tuntap add dev NAME mode tap vnet_hdr`), and it stays when the
//!   [`Tap`] is dropped;
//! - it did not exist: the kernel created it, non-persistent, and it is destroyed by the
//!   kernel when its last file descriptor closes, which is when the [`Tap`] is dropped
//!   (tun.c `tun_chr_close` -> `tun_detach` unregisters a non-persistent device). The fd is
//!   opened close-on-exec so that a child process cannot keep the interface alive.
//!
//! The kernel tells the two cases apart for us: a TAP without an attached fd exists only if
//! it is persistent, so `IFF_PERSIST` in `TUNGETIFF` after attaching means "was already
//! there". We never set persistence ourselves.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{IoSlice, IoSliceMut};
use std::ops::{BitOr, BitOrAssign};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::raw::{c_int, c_short, c_uint, c_ulong};
use std::os::unix::fs::OpenOptionsExt;

use vmc_compiler::TapOffload;
use vmm_sys_util::ioctl::{ioctl_with_mut_ref, ioctl_with_ref, ioctl_with_val};

use super::errno::Errno;

/// The tun driver's control device.
pub const TUN_PATH: &str = "/dev/net/tun";

/// Size of the virtio-net header in front of every frame: the virtio 1.0 header with
/// `num_buffers` (flags, gso_type, hdr_len, gso_size, csum_start, csum_offset, num_buffers).
pub const VNET_HDR_LEN: usize = 12;

/// Longest interface name the kernel takes (IFNAMSIZ 16, including the NUL).
pub const MAX_NAME_LEN: usize = vmc_compiler::limits::MAX_INTERFACE_NAME;

/// Definitions from Linux `include/uapi/linux/if_tun.h` and `if.h`.
mod uapi {
    use std::os::raw::{c_int, c_short, c_uint};

    pub const IFNAMSIZ: usize = 16;

    pub const IFF_TAP: c_short = 0x0002;
    pub const IFF_NO_PI: c_short = 0x1000;
    pub const IFF_VNET_HDR: c_short = 0x4000;
    // 0x8000 does not fit a positive c_short; the kernel reads the same 16 bits.
    pub const IFF_TUN_EXCL: c_short = 0x8000_u16 as c_short;
    pub const IFF_MULTI_QUEUE: c_short = 0x0100;
    pub const IFF_PERSIST: c_short = 0x0800;

    const TUNTAP: c_uint = b'T' as c_uint;
    vmm_sys_util::ioctl_iow_nr!(TUNSETIFF, TUNTAP, 202, c_int);
    vmm_sys_util::ioctl_ior_nr!(TUNGETFEATURES, TUNTAP, 207, c_uint);
    vmm_sys_util::ioctl_iow_nr!(TUNSETOFFLOAD, TUNTAP, 208, c_uint);
    vmm_sys_util::ioctl_ior_nr!(TUNGETIFF, TUNTAP, 210, c_uint);
    vmm_sys_util::ioctl_iow_nr!(TUNSETVNETHDRSZ, TUNTAP, 216, c_int);

    /// `struct ifreq` as the tun ioctls use it: a name, then `ifr_flags` at the start of
    /// the 24-byte union (40 bytes in all on 64-bit Linux).
    #[repr(C)]
    pub struct IfReq {
        pub name: [u8; IFNAMSIZ],
        pub flags: c_short,
        pub pad: [u8; 22],
    }

    const _: () = assert!(std::mem::size_of::<IfReq>() == 40);
}

/// Offloads a TAP may use on the frames it hands us, set with `TUNSETOFFLOAD`: a set of
/// the compiler's [`TapOffload`]s, held as the kernel's `TUN_F_*` bits (each offload's
/// bit is [`TapOffload::tun_flag`]; its name is [`TapOffload::name`]).
///
/// The kernel's rule (drivers/net/tun.c, `set_offload`): every offload needs `CSUM`;
/// `TSO_ECN` only counts together with `TSO4` or `TSO6`; `UFO` is accepted and ignored
/// since Linux 4.14; `USO4` and `USO6` (Linux 6.2+) are accepted only as a pair. Any
/// flag left over is rejected with `EINVAL`, which is how a probe learns what exists.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TapOffloads(u32);

impl TapOffloads {
    pub const NONE: TapOffloads = TapOffloads(0);
    /// `TUN_F_CSUM`: we accept frames whose checksum is still to be completed.
    pub const CSUM: TapOffloads = TapOffloads::of(TapOffload::Csum);
    pub const TSO4: TapOffloads = TapOffloads::of(TapOffload::Tso4);
    pub const TSO6: TapOffloads = TapOffloads::of(TapOffload::Tso6);
    pub const TSO_ECN: TapOffloads = TapOffloads::of(TapOffload::TsoEcn);
    pub const UFO: TapOffloads = TapOffloads::of(TapOffload::Ufo);
    pub const USO4: TapOffloads = TapOffloads::of(TapOffload::Uso4);
    pub const USO6: TapOffloads = TapOffloads::of(TapOffload::Uso6);

    const ALL_BITS: u32 = {
        let mut bits = 0;
        let mut i = 0;
        while i < TapOffload::ALL.len() {
            bits |= TapOffload::ALL[i].tun_flag();
            i += 1;
        }
        bits
    };

    /// The set holding `offload` alone.
    pub const fn of(offload: TapOffload) -> TapOffloads {
        TapOffloads(offload.tun_flag())
    }

    pub const fn bits(self) -> u32 {
        self.0
    }

    /// `None` if `bits` holds a flag this type does not know.
    pub const fn from_bits(bits: u32) -> Option<TapOffloads> {
        if bits & !Self::ALL_BITS == 0 {
            Some(TapOffloads(bits))
        } else {
            None
        }
    }

    /// The flag of that name (`"uso4"`), if any.
    pub fn from_name(name: &str) -> Option<TapOffloads> {
        TapOffload::from_name(name).map(TapOffloads::of)
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// All flags of `other` are set in `self`.
    pub const fn contains(self, other: TapOffloads) -> bool {
        self.0 & other.0 == other.0
    }

    /// Some flag of `other` is set in `self`.
    pub const fn intersects(self, other: TapOffloads) -> bool {
        self.0 & other.0 != 0
    }

    pub const fn union(self, other: TapOffloads) -> TapOffloads {
        TapOffloads(self.0 | other.0)
    }

    /// The flags of `self` that are not in `other`.
    pub const fn difference(self, other: TapOffloads) -> TapOffloads {
        TapOffloads(self.0 & !other.0)
    }

    /// The offloads in the set, in bit order.
    pub fn iter(self) -> impl Iterator<Item = TapOffload> {
        TapOffload::ALL
            .into_iter()
            .filter(move |o| self.contains(TapOffloads::of(*o)))
    }

    /// The names of the set flags, in bit order.
    pub fn names(self) -> Vec<&'static str> {
        self.iter().map(TapOffload::name).collect()
    }
}

impl From<TapOffload> for TapOffloads {
    fn from(offload: TapOffload) -> TapOffloads {
        TapOffloads::of(offload)
    }
}

impl FromIterator<TapOffload> for TapOffloads {
    fn from_iter<I: IntoIterator<Item = TapOffload>>(offloads: I) -> TapOffloads {
        offloads
            .into_iter()
            .fold(TapOffloads::NONE, |set, o| set | TapOffloads::of(o))
    }
}

impl BitOr for TapOffloads {
    type Output = TapOffloads;
    fn bitor(self, other: TapOffloads) -> TapOffloads {
        self.union(other)
    }
}

impl BitOrAssign for TapOffloads {
    fn bitor_assign(&mut self, other: TapOffloads) {
        *self = self.union(other);
    }
}

impl fmt::Display for TapOffloads {
    /// `csum|uso4|uso6`, or `none`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        f.write_str(&self.names().join("|"))
    }
}

impl fmt::Debug for TapOffloads {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TapOffloads({self})")
    }
}

/// The `TUNSETIFF` flags the tun driver knows (`TUNGETFEATURES`; needs no privilege).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TunFeatures(pub u32);

impl fmt::Debug for TunFeatures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TunFeatures({:#06x})", self.0)
    }
}

impl TunFeatures {
    pub fn vnet_hdr(self) -> bool {
        self.0 & uapi::IFF_VNET_HDR as u32 != 0
    }

    pub fn multi_queue(self) -> bool {
        self.0 & uapi::IFF_MULTI_QUEUE as u32 != 0
    }
}

/// Why a TAP operation failed: which step, which errno, and the likely cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TapError {
    #[error("invalid TAP name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    #[error("cannot open {TUN_PATH}: {errno}: {hint}")]
    OpenTun { errno: Errno, hint: &'static str },
    #[error("{ioctl} failed with {errno}: {hint}")]
    DriverIoctl {
        ioctl: &'static str,
        errno: Errno,
        hint: &'static str,
    },
    #[error("{ioctl} on TAP {name:?} failed with {errno}{}", hint_suffix(.hint))]
    Ioctl {
        ioctl: &'static str,
        name: String,
        errno: Errno,
        hint: Option<&'static str>,
    },
    #[error("cannot find the interface index of TAP {name:?}: {errno}")]
    IfIndex { name: String, errno: Errno },
    #[error("{op} of a frame on TAP {name:?} failed with {errno}")]
    Io {
        op: &'static str,
        name: String,
        errno: Errno,
    },
}

impl TapError {
    /// The errno behind the failure, if a system call failed.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            TapError::InvalidName { .. } => None,
            TapError::OpenTun { errno, .. }
            | TapError::DriverIoctl { errno, .. }
            | TapError::Ioctl { errno, .. }
            | TapError::IfIndex { errno, .. }
            | TapError::Io { errno, .. } => Some(*errno),
        }
    }
}

fn hint_suffix(hint: &Option<&'static str>) -> String {
    match hint {
        Some(hint) => format!(": {hint}"),
        None => String::new(),
    }
}

fn open_tun_hint(errno: Errno) -> &'static str {
    match errno.0 {
        libc::ENOENT => "the tun module is not loaded (modprobe tun), or the device node is missing",
        libc::ENODEV | libc::ENXIO => "the tun module is not loaded (modprobe tun)",
        libc::EACCES | libc::EPERM => "no permission on /dev/net/tun (run as root)",
        _ => "unexpected error",
    }
}

fn ioctl_hint(ioctl: &str, errno: Errno, exclusive: bool) -> Option<&'static str> {
    Some(match (ioctl, errno.0) {
        ("TUNSETIFF", libc::EPERM) => "needs CAP_NET_ADMIN (run as root)",
        ("TUNSETIFF", libc::EBUSY) if exclusive => "an interface of that name already exists",
        ("TUNSETIFF", libc::EBUSY) => "the TAP is already attached to another process",
        ("TUNSETIFF", libc::EINVAL) => "an interface of that name exists but is not a single-queue TAP",
        ("TUNSETOFFLOAD", libc::EINVAL) => {
            "the kernel rejects this offload set (every offload needs csum; uso4 and uso6 \
             only as a pair, Linux 6.2+; tso-ecn needs tso4 or tso6)"
        }
        (_, libc::EBADFD) => "the TAP is not attached",
        _ => return None,
    })
}

/// An attached TAP interface; frames are read and written with a 12-byte virtio-net
/// header, without blocking.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
    ifindex: u32,
    created_by_us: bool,
}

impl Tap {
    /// Attaches to the TAP `name` in the calling thread's network namespace, creating it if
    /// it does not exist; see the module docs for which case keeps the interface at drop.
    pub fn open_or_create(name: &str) -> Result<Tap, TapError> {
        Tap::attach(name, false)
    }

    /// Creates a new TAP `name`; fails with `EBUSY` if any interface of that name exists.
    /// The interface is removed when the [`Tap`] is dropped.
    pub fn create_exclusive(name: &str) -> Result<Tap, TapError> {
        Tap::attach(name, true)
    }

    fn attach(name: &str, exclusive: bool) -> Result<Tap, TapError> {
        let ifname = validated_name(name)?;
        let file = open_tun()?;

        let mut flags = uapi::IFF_TAP | uapi::IFF_NO_PI | uapi::IFF_VNET_HDR;
        if exclusive {
            flags |= uapi::IFF_TUN_EXCL;
        }
        let mut request = uapi::IfReq {
            name: ifname,
            flags,
            pad: [0; 22],
        };
        // SAFETY: TUNSETIFF reads and writes a `struct ifreq`, which `IfReq` lays out, and
        // `request` lives across the call.
        let ret = unsafe { ioctl_with_mut_ref(&file, uapi::TUNSETIFF(), &mut request) };
        if ret < 0 {
            return Err(ioctl_error("TUNSETIFF", name, Errno::last(), exclusive));
        }

        let mut tap = Tap {
            file,
            name: name.to_string(),
            ifindex: 0,
            created_by_us: true,
        };
        // From here on, an early return drops `tap`, which removes a TAP we created.
        tap.created_by_us = tap.interface_flags()? & uapi::IFF_PERSIST == 0;
        tap.set_vnet_hdr_len(VNET_HDR_LEN)?;
        tap.ifindex = interface_index(name)?;
        Ok(tap)
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The interface index, in the network namespace the TAP was attached in.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// True if this call created the interface (it goes away with this [`Tap`]); false if it
    /// was a persistent TAP that already existed (it stays).
    pub fn created_by_us(&self) -> bool {
        self.created_by_us
    }

    /// Sets the offloads the TAP may use on frames it hands us (what the guest may
    /// receive). The set replaces the previous one.
    pub fn set_offload(&self, offloads: TapOffloads) -> Result<(), TapError> {
        // SAFETY: TUNSETOFFLOAD takes its argument by value and touches no memory of ours.
        let ret = unsafe { ioctl_with_val(&self.file, uapi::TUNSETOFFLOAD(), offloads.bits() as c_ulong) };
        if ret < 0 {
            return Err(ioctl_error("TUNSETOFFLOAD", &self.name, Errno::last(), false));
        }
        Ok(())
    }

    fn set_vnet_hdr_len(&self, len: usize) -> Result<(), TapError> {
        let len = len as c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int from the pointer, which is valid.
        let ret = unsafe { ioctl_with_ref(&self.file, uapi::TUNSETVNETHDRSZ(), &len) };
        if ret < 0 {
            return Err(ioctl_error("TUNSETVNETHDRSZ", &self.name, Errno::last(), false));
        }
        Ok(())
    }

    fn interface_flags(&self) -> Result<c_short, TapError> {
        let mut request = uapi::IfReq {
            name: [0; uapi::IFNAMSIZ],
            flags: 0,
            pad: [0; 22],
        };
        // SAFETY: TUNGETIFF writes a `struct ifreq` into `request`, which is large enough.
        let ret = unsafe { ioctl_with_mut_ref(&self.file, uapi::TUNGETIFF(), &mut request) };
        if ret < 0 {
            return Err(ioctl_error("TUNGETIFF", &self.name, Errno::last(), false));
        }
        Ok(request.flags)
    }

    /// Reads one frame (virtio-net header first) into `buffers`. `Ok(None)` means no frame
    /// is waiting. The buffers should hold `VNET_HDR_LEN` + 65550 bytes: the kernel does
    /// not split a frame over two reads.
    ///
    /// The TAP writes the first 10 header bytes; `num_buffers` (bytes 10..12) is left as
    /// it was in the buffer, for the device to fill.
    pub fn read_frame(&self, buffers: &mut [IoSliceMut<'_>]) -> Result<Option<usize>, TapError> {
        // SAFETY: `IoSliceMut` is ABI-compatible with `struct iovec`, and each one borrows
        // writable memory for the duration of this call.
        unsafe {
            self.read_frame_raw(std::slice::from_raw_parts(
                buffers.as_ptr().cast::<libc::iovec>(),
                buffers.len(),
            ))
        }
    }

    /// Like [`Tap::read_frame`] for buffers given as raw iovecs (guest memory).
    ///
    /// # Safety
    /// Every iovec must describe memory that is valid for writes for the whole call.
    pub unsafe fn read_frame_raw(&self, iovecs: &[libc::iovec]) -> Result<Option<usize>, TapError> {
        loop {
            // SAFETY: the caller guarantees the iovecs; the count comes from the slice.
            let ret = unsafe { libc::readv(self.as_raw_fd(), iovecs.as_ptr(), iov_count(iovecs)) };
            if ret >= 0 {
                return Ok(Some(ret as usize));
            }
            match Errno::last() {
                Errno(libc::EINTR) => continue,
                Errno(libc::EAGAIN) => return Ok(None),
                errno => return Err(self.io_error("readv", errno)),
            }
        }
    }

    /// Writes one frame (virtio-net header first) gathered from `buffers`. `Ok(None)` means
    /// the TAP cannot take it now; try again later.
    pub fn write_frame(&self, buffers: &[IoSlice<'_>]) -> Result<Option<usize>, TapError> {
        // SAFETY: `IoSlice` is ABI-compatible with `struct iovec`, and each one borrows
        // readable memory for the duration of this call.
        unsafe {
            self.write_frame_raw(std::slice::from_raw_parts(
                buffers.as_ptr().cast::<libc::iovec>(),
                buffers.len(),
            ))
        }
    }

    /// Like [`Tap::write_frame`] for buffers given as raw iovecs (guest memory).
    ///
    /// # Safety
    /// Every iovec must describe memory that is valid for reads for the whole call.
    pub unsafe fn write_frame_raw(&self, iovecs: &[libc::iovec]) -> Result<Option<usize>, TapError> {
        loop {
            // SAFETY: the caller guarantees the iovecs; the count comes from the slice.
            let ret = unsafe { libc::writev(self.as_raw_fd(), iovecs.as_ptr(), iov_count(iovecs)) };
            if ret >= 0 {
                return Ok(Some(ret as usize));
            }
            match Errno::last() {
                Errno(libc::EINTR) => continue,
                Errno(libc::EAGAIN) => return Ok(None),
                errno => return Err(self.io_error("writev", errno)),
            }
        }
    }

    fn io_error(&self, op: &'static str, errno: Errno) -> TapError {
        TapError::Io {
            op,
            name: self.name.clone(),
            errno,
        }
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

impl AsFd for Tap {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// The `TUNSETIFF` flags this host's tun driver knows, asked on an unattached fd.
pub fn tun_features() -> Result<TunFeatures, TapError> {
    let file = open_tun()?;
    let mut features: c_uint = 0;
    // SAFETY: TUNGETFEATURES writes one unsigned int into `features`.
    let ret = unsafe { ioctl_with_mut_ref(&file, uapi::TUNGETFEATURES(), &mut features) };
    if ret < 0 {
        let errno = Errno::last();
        return Err(TapError::DriverIoctl {
            ioctl: "TUNGETFEATURES",
            errno,
            hint: "the tun driver does not answer TUNGETFEATURES",
        });
    }
    Ok(TunFeatures(features))
}

fn open_tun() -> Result<File, TapError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        // Close-on-exec: a child must not inherit the fd and keep our TAP alive.
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(TUN_PATH)
        .map_err(|error| {
            let errno = Errno::from(error);
            TapError::OpenTun {
                errno,
                hint: open_tun_hint(errno),
            }
        })
}

fn ioctl_error(ioctl: &'static str, name: &str, errno: Errno, exclusive: bool) -> TapError {
    TapError::Ioctl {
        ioctl,
        name: name.to_string(),
        errno,
        hint: ioctl_hint(ioctl, errno, exclusive),
    }
}

/// The name, NUL-padded for `ifreq`, if the compiler's rule for TAP names allows it (the
/// kernel's `dev_valid_name`, and no `%`, which `TUNSETIFF` would expand into another name).
fn validated_name(name: &str) -> Result<[u8; uapi::IFNAMSIZ], TapError> {
    if let Some(reason) = vmc_compiler::limits::interface_name_problem(name) {
        return Err(TapError::InvalidName {
            name: name.to_string(),
            reason,
        });
    }
    let mut ifname = [0u8; uapi::IFNAMSIZ];
    ifname[..name.len()].copy_from_slice(name.as_bytes());
    Ok(ifname)
}

fn interface_index(name: &str) -> Result<u32, TapError> {
    let ifname = validated_name(name)?;
    // SAFETY: `ifname` is NUL-terminated (at most 15 bytes of name in 16).
    let index = unsafe { libc::if_nametoindex(ifname.as_ptr().cast()) };
    if index == 0 {
        return Err(TapError::IfIndex {
            name: name.to_string(),
            errno: Errno::last(),
        });
    }
    Ok(index)
}

fn iov_count(iovecs: &[libc::iovec]) -> c_int {
    // More than IOV_MAX iovecs is rejected by the kernel with EINVAL; saturating keeps it so.
    c_int::try_from(iovecs.len()).unwrap_or(c_int::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_kernel_headers() {
        // _IOW('T', 202, int) and friends, as the kernel computes them on x86-64.
        assert_eq!(uapi::TUNSETIFF(), 0x4004_54ca);
        assert_eq!(uapi::TUNGETFEATURES(), 0x8004_54cf);
        assert_eq!(uapi::TUNSETOFFLOAD(), 0x4004_54d0);
        assert_eq!(uapi::TUNGETIFF(), 0x8004_54d2);
        assert_eq!(uapi::TUNSETVNETHDRSZ(), 0x4004_54d8);
    }

    #[test]
    fn offload_flags_have_the_if_tun_h_values_and_stable_names() {
        let values: Vec<(&str, u32)> = TapOffload::ALL
            .iter()
            .map(|o| (o.name(), TapOffloads::of(*o).bits()))
            .collect();
        assert_eq!(
            values,
            [
                ("csum", 0x01),
                ("tso4", 0x02),
                ("tso6", 0x04),
                ("tso-ecn", 0x08),
                ("ufo", 0x10),
                ("uso4", 0x20),
                ("uso6", 0x40),
            ]
        );
        let uso = TapOffloads::CSUM | TapOffloads::USO4 | TapOffloads::USO6;
        assert_eq!(uso.to_string(), "csum|uso4|uso6");
        assert_eq!(TapOffloads::from_name("tso-ecn"), Some(TapOffloads::TSO_ECN));
        assert_eq!(TapOffloads::from_bits(0x80), None);
        assert!(uso.contains(TapOffloads::USO4 | TapOffloads::CSUM));
        assert!(!uso.contains(TapOffloads::TSO4));
    }

    #[test]
    fn offload_sets_are_sets_of_the_compilers_offloads() {
        let all = TapOffloads::from_bits(0x7f).unwrap();
        assert!(all.iter().eq(TapOffload::ALL));
        let uso: TapOffloads = [TapOffload::Uso6, TapOffload::Uso4].into_iter().collect();
        assert_eq!(uso, TapOffloads::USO4 | TapOffloads::USO6);
        assert_eq!(uso.iter().collect::<TapOffloads>(), uso);
        assert_eq!(all.difference(uso).union(uso), all);
        assert_eq!(TapOffloads::from(TapOffload::TsoEcn), TapOffloads::TSO_ECN);
    }

    #[test]
    fn names_the_kernel_would_refuse_are_refused_before_any_syscall() {
        for bad in ["", "sixteen-chars-xx", "a/b", "a:b", "a b", ".", ".."] {
            assert!(
                matches!(Tap::open_or_create(bad), Err(TapError::InvalidName { .. })),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn offload_rejection_names_the_ioctl_the_errno_and_the_rule() {
        let error = ioctl_error("TUNSETOFFLOAD", "vmc0", Errno(libc::EINVAL), false);
        let message = error.to_string();
        assert!(message.starts_with("TUNSETOFFLOAD on TAP \"vmc0\" failed with EINVAL"));
        assert!(message.contains("every offload needs csum"));
        let error = ioctl_error("TUNSETIFF", "vmc0", Errno(libc::EPERM), false);
        assert!(error.to_string().ends_with("needs CAP_NET_ADMIN (run as root)"));
    }
}
