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
//!
//! A persistent TAP is left as it was found. The kernel keeps three things on the device
//! that vmc changes (measured on Linux 6.18; drivers/net/tun.c):
//! - its feature flags (`tun_flags`): `TUNSETIFF` on an existing device replaces the
//!   `TUN_FEATURES` bits (`IFF_NO_PI`, `IFF_ONE_QUEUE`, `IFF_VNET_HDR`, `IFF_NAPI`,
//!   `IFF_NAPI_FRAGS`) with the caller's, so attaching with `IFF_VNET_HDR` turns
//!   `vnet_hdr` on in `ip -d link show` for good;
//! - its vnet header size (`TUNSETVNETHDRSZ`; 10 bytes on a new TAP, vmc sets 12), kept for
//!   the next process that attaches;
//! - its offloads (`TUNSETOFFLOAD`): the driver's own mask, and the netdev's *wanted*
//!   features (what `ethtool -k` shows as `[requested on]`), whose offload bits the ioctl
//!   overwrites. A new TAP wants every offload and has none active.
//!
//! Before attaching to an existing TAP, [`Tap::open_or_create`] records the three (see
//! [`FoundState`]): the flags from `tun_flags` in a sysfs of the calling thread's own
//! network namespace (a detached mount made with `fsopen`, so it is right even where
//! `/sys` shows another namespace), the offloads with `ETHTOOL_GFEATURES` on a socket of
//! that namespace, and the header size with `TUNGETVNETHDRSZ` (attaching does not change
//! it). When the [`Tap`] is dropped it puts them back: the header size and the offloads
//! on its own fd (`TUNSETOFFLOAD` with the offloads that were active, then
//! `ETHTOOL_SFEATURES` for the wanted bits), then, once that fd is closed, the flags, by
//! attaching a second fd opened at the start with the flags found (only if they differ,
//! and only while an interface of that name still has the same index: a TAP deleted
//! meanwhile is not created again). The kernel's hidden offload mask can differ from
//! the one found only in bits that were not active, which nothing can observe.
//!
//! What cannot be put back: anything after SIGKILL (the kernel closes the fd; the TAP
//! keeps vmc's settings); and, without CAP_NET_ADMIN at drop time, the flags (unless the
//! TAP's owner is the caller) and the wanted offload bits.

use std::ffi::CString;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{IoSlice, IoSliceMut, Read};
use std::ops::{BitOr, BitOrAssign};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::raw::{c_char, c_int, c_short, c_uint, c_ulong, c_void};
use std::os::unix::fs::OpenOptionsExt;

use vmc_compiler::TapOffload;
use vmm_sys_util::ioctl::{ioctl_with_mut_ref, ioctl_with_ref, ioctl_with_val};

use super::errno::Errno;

/// The tun driver's control device.
pub const TUN_PATH: &str = "/dev/net/tun";

/// Size of the virtio-net header in front of every frame: the virtio 1.0 header with
/// `num_buffers` (flags, gso_type, hdr_len, gso_size, csum_start, csum_offset, num_buffers).
pub const VNET_HDR_LEN: usize = std::mem::size_of::<virtio_bindings::virtio_net::virtio_net_hdr_mrg_rxbuf>();

/// What vmc needs from Linux's `if_tun.h`, `ethtool.h` and `if.h` that libc does not
/// define; everything else (the `IFF_*` flags, the `TUN*` ioctls, `TUN_F_*`, `ifreq`,
/// the new mount API's constants) comes from libc.
mod uapi {
    use std::os::raw::c_int;

    /// The flags `TUNSETIFF` on an existing device replaces (tun.c `TUN_FEATURES`, which
    /// is not in the uapi header).
    pub const TUN_FEATURES: c_int = libc::IFF_NO_PI
        | libc::IFF_ONE_QUEUE
        | libc::IFF_VNET_HDR
        | libc::IFF_MULTI_QUEUE
        | libc::IFF_NAPI
        | libc::IFF_NAPI_FRAGS;

    // include/uapi/linux/ethtool.h
    pub const ETHTOOL_GSTRINGS: u32 = 0x1b;
    pub const ETHTOOL_GSSET_INFO: u32 = 0x37;
    pub const ETHTOOL_GFEATURES: u32 = 0x3a;
    pub const ETHTOOL_SFEATURES: u32 = 0x3b;
    pub const ETH_SS_FEATURES: u32 = 4;
    pub const ETH_GSTRING_LEN: usize = 32;

    // include/uapi/linux/if_tun.h, Linux 6.17: newer than libc's copy.
    pub const TUN_F_UDP_TUNNEL_GSO: u32 = 0x80;
    pub const TUN_F_UDP_TUNNEL_GSO_CSUM: u32 = 0x100;
    pub const TUN_F_UDP_TUNNEL: u32 = TUN_F_UDP_TUNNEL_GSO | TUN_F_UDP_TUNNEL_GSO_CSUM;

    /// A netdev feature a TAP's offloads turn on (tun.c `TUN_USER_FEATURES`), by its
    /// ethtool name, with the `TUN_F_*` bits of `TUNSETOFFLOAD` that enable it. The
    /// feature bit numbers are the kernel's private business; the names are its ABI.
    pub const TAP_FEATURES: [(&str, u32); 7] = [
        ("tx-checksum-ip-generic", libc::TUN_F_CSUM),     // NETIF_F_HW_CSUM
        ("tx-tcp-segmentation", libc::TUN_F_TSO4),        // NETIF_F_TSO
        ("tx-tcp6-segmentation", libc::TUN_F_TSO6),       // NETIF_F_TSO6
        ("tx-tcp-ecn-segmentation", libc::TUN_F_TSO_ECN), // NETIF_F_TSO_ECN
        ("tx-udp-segmentation", libc::TUN_F_USO4 | libc::TUN_F_USO6), // NETIF_F_GSO_UDP_L4
        ("tx-udp_tnl-segmentation", TUN_F_UDP_TUNNEL_GSO), // NETIF_F_GSO_UDP_TUNNEL
        ("tx-udp_tnl-csum-segmentation", TUN_F_UDP_TUNNEL_GSO_CSUM), // NETIF_F_GSO_UDP_TUNNEL_CSUM
    ];
}

/// An `ifreq` for interface `name`, its union zeroed.
fn ifreq(name: [c_char; libc::IFNAMSIZ]) -> libc::ifreq {
    // SAFETY: `ifreq` is plain data (bytes, ints, a pointer) for which all zeroes is valid.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    request.ifr_name = name;
    request
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
        self.0 & libc::IFF_VNET_HDR as u32 != 0
    }

    pub fn multi_queue(self) -> bool {
        self.0 & libc::IFF_MULTI_QUEUE as u32 != 0
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
/// header, without blocking. A persistent TAP is put back as it was found when this is
/// dropped (see the module docs).
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
    ifindex: u32,
    created_by_us: bool,
    /// Declared after `file`, so dropped after it: the flags are put back once our fd is
    /// closed (a single-queue TAP takes one fd at a time).
    restore: Option<Restore>,
}

/// What vmc changes on a persistent TAP, as it was before vmc attached; `None` where it
/// could not be read (then it is not put back).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundState {
    /// The `TUNSETIFF` feature flags of `tun_flags` (`IFF_NO_PI`, `IFF_ONE_QUEUE`,
    /// `IFF_VNET_HDR`, `IFF_NAPI`, `IFF_NAPI_FRAGS`; `IFF_MULTI_QUEUE` is never changed).
    pub flags: Option<u16>,
    /// The vnet header size, `TUNGETVNETHDRSZ`.
    pub vnet_hdr_len: Option<i32>,
    /// The TAP's offload features, wanted and active.
    pub offloads: Option<Vec<TapFeature>>,
}

/// One netdev feature a TAP's offloads decide, as `ethtool -k` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TapFeature {
    /// The ethtool name (`tx-udp-segmentation`).
    pub name: &'static str,
    /// Requested (`ethtool -K`, or `TUNSETOFFLOAD`).
    pub wanted: bool,
    /// In effect.
    pub active: bool,
}

/// The means to put a persistent TAP back, made before vmc changed it.
#[derive(Debug)]
struct Restore {
    found: FoundState,
    name: String,
    ifindex: u32,
    /// A second `/dev/net/tun` fd, not attached, opened in the TAP's namespace.
    spare: File,
    /// A socket in the TAP's namespace, for the ethtool and interface-index ioctls.
    control: OwnedFd,
    /// Each of `found.offloads`: its feature bit number on this kernel.
    feature_bits: Vec<u32>,
    /// Set once vmc attached to the TAP: before that there is nothing to put back.
    armed: bool,
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
        // Before TUNSETIFF changes anything: what an existing interface looks like.
        let look = if exclusive { None } else { Restore::look(name) };

        let mut flags = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR;
        if exclusive {
            flags |= libc::IFF_TUN_EXCL;
        }
        let mut request = ifreq(ifname);
        // IFF_TUN_EXCL (0x8000) does not fit a positive c_short; the kernel reads the same
        // 16 bits.
        request.ifr_ifru.ifru_flags = flags as u16 as c_short;
        // SAFETY: TUNSETIFF reads and writes a `struct ifreq`, and `request` lives across
        // the call.
        let ret = unsafe { ioctl_with_mut_ref(&file, libc::TUNSETIFF as c_ulong, &mut request) };
        if ret < 0 {
            return Err(ioctl_error("TUNSETIFF", name, Errno::last(), exclusive));
        }

        let mut tap = Tap {
            file,
            name: name.to_string(),
            ifindex: 0,
            created_by_us: true,
            restore: None,
        };
        // From here on, an early return drops `tap`, which removes a TAP we created and
        // puts back one we found.
        tap.created_by_us = tap.interface_flags()? & libc::IFF_PERSIST as c_short == 0;
        let ifindex = interface_index(name);
        if let (false, Some(mut restore), Ok(ifindex)) = (tap.created_by_us, look, &ifindex) {
            // The same interface as before TUNSETIFF, not one made in between.
            if restore.ifindex == *ifindex {
                restore.found.vnet_hdr_len = tap.vnet_hdr_len().ok();
                restore.armed = true;
                tap.restore = Some(restore);
            }
        }
        tap.set_vnet_hdr_len(VNET_HDR_LEN)?;
        tap.ifindex = ifindex?;
        tracing::info!(
            tap = name,
            created = tap.created_by_us,
            found = ?tap.found_state(),
            "TAP {}",
            if tap.created_by_us { "created (it goes away with the VM)" } else { "opened (it is left as found)" }
        );
        Ok(tap)
    }

    /// What the TAP was like before vmc attached, if it already existed and could be
    /// read; `None` for a TAP vmc created.
    pub fn found_state(&self) -> Option<&FoundState> {
        self.restore.as_ref().map(|r| &r.found)
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
        let ret = unsafe { ioctl_with_val(&self.file, libc::TUNSETOFFLOAD as c_ulong, offloads.bits() as c_ulong) };
        if ret < 0 {
            return Err(ioctl_error("TUNSETOFFLOAD", &self.name, Errno::last(), false));
        }
        Ok(())
    }

    fn set_vnet_hdr_len(&self, len: usize) -> Result<(), TapError> {
        let len = len as c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int from the pointer, which is valid.
        let ret = unsafe { ioctl_with_ref(&self.file, libc::TUNSETVNETHDRSZ as c_ulong, &len) };
        if ret < 0 {
            return Err(ioctl_error("TUNSETVNETHDRSZ", &self.name, Errno::last(), false));
        }
        Ok(())
    }

    fn vnet_hdr_len(&self) -> Result<i32, TapError> {
        let mut len: c_int = 0;
        // SAFETY: TUNGETVNETHDRSZ writes one int into `len`.
        let ret = unsafe { ioctl_with_mut_ref(&self.file, libc::TUNGETVNETHDRSZ as c_ulong, &mut len) };
        if ret < 0 {
            return Err(ioctl_error("TUNGETVNETHDRSZ", &self.name, Errno::last(), false));
        }
        Ok(len)
    }

    fn interface_flags(&self) -> Result<c_short, TapError> {
        let mut request = ifreq([0; libc::IFNAMSIZ]);
        // SAFETY: TUNGETIFF writes a `struct ifreq` into `request`, which is large enough.
        let ret = unsafe { ioctl_with_mut_ref(&self.file, libc::TUNGETIFF as c_ulong, &mut request) };
        if ret < 0 {
            return Err(ioctl_error("TUNGETIFF", &self.name, Errno::last(), false));
        }
        // SAFETY: the union is plain data, and TUNGETIFF wrote `ifr_flags`.
        Ok(unsafe { request.ifr_ifru.ifru_flags })
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

impl Drop for Tap {
    /// Puts a persistent TAP's header size and offloads back on our fd; the flags follow
    /// when `restore` is dropped, after `file`.
    fn drop(&mut self) {
        if let Some(restore) = &self.restore {
            restore.before_close(&self.file);
        }
    }
}

impl Restore {
    /// Records an existing interface `name` in the calling thread's namespace; `None` if
    /// there is none (or no socket or tun fd could be had to put it back).
    fn look(name: &str) -> Option<Restore> {
        let control = control_socket()?;
        let ifindex = ifindex_via(&control, name)?;
        let spare = open_tun().ok()?;
        let (offloads, feature_bits) = match read_features(&control, name) {
            Some((features, bits)) => (Some(features), bits),
            None => (None, Vec::new()),
        };
        let flags = read_tun_flags(name, ifindex).map(|f| f & uapi::TUN_FEATURES as u16);
        Some(Restore {
            found: FoundState {
                flags,
                vnet_hdr_len: None,
                offloads,
            },
            name: name.to_string(),
            ifindex,
            spare,
            control,
            feature_bits,
            armed: false,
        })
    }

    /// Header size and offloads, on the fd still attached. Best effort: a TAP deleted
    /// meanwhile answers EBADFD, and there is nothing left to put back.
    fn before_close(&self, file: &File) {
        if let Some(len) = self.found.vnet_hdr_len.filter(|&len| len != VNET_HDR_LEN as i32) {
            // SAFETY: TUNSETVNETHDRSZ reads one int from a valid pointer.
            unsafe { ioctl_with_ref(file, libc::TUNSETVNETHDRSZ as c_ulong, &len) };
        }
        let Some(features) = &self.found.offloads else {
            return;
        };
        // The driver's mask must hold what was active; what was wanted but not active
        // stays out of it. The kernel takes nothing without CSUM, and the UDP tunnel
        // offloads only with TSO: a bit added for that alone is not wanted, so not active.
        let mut offloads = features
            .iter()
            .filter(|f| f.active)
            .filter_map(|f| uapi::TAP_FEATURES.iter().find(|(n, _)| *n == f.name))
            .fold(0, |bits, (_, tun_f)| bits | tun_f);
        if offloads != 0 {
            offloads |= libc::TUN_F_CSUM;
        }
        if offloads & uapi::TUN_F_UDP_TUNNEL != 0 && offloads & (libc::TUN_F_TSO4 | libc::TUN_F_TSO6) == 0 {
            offloads |= libc::TUN_F_TSO4;
        }
        // SAFETY: TUNSETOFFLOAD takes its argument by value.
        unsafe { ioctl_with_val(file, libc::TUNSETOFFLOAD as c_ulong, offloads as c_ulong) };
        // TUNSETOFFLOAD rewrote the wanted offload bits; the ones found go back.
        let mut words = vec![
            (0u32, 0u32);
            self.feature_bits
                .iter()
                .map(|b| *b as usize / 32 + 1)
                .max()
                .unwrap_or(0)
        ];
        for (feature, bit) in features.iter().zip(&self.feature_bits) {
            let word = &mut words[*bit as usize / 32];
            word.0 |= 1 << (bit % 32);
            if feature.wanted {
                word.1 |= 1 << (bit % 32);
            }
        }
        set_features(&self.control, &self.name, &words);
    }
}

impl Drop for Restore {
    /// The flags, by attaching the spare fd with the flags found, then closing it.
    fn drop(&mut self) {
        let Some(flags) = self.found.flags.filter(|_| self.armed) else {
            return;
        };
        let attached = (libc::IFF_NO_PI | libc::IFF_VNET_HDR) as u16;
        if flags == attached {
            return;
        }
        // Not if the TAP was deleted (TUNSETIFF would create one) or replaced.
        if ifindex_via(&self.control, &self.name) != Some(self.ifindex) {
            return;
        }
        let Ok(name) = validated_name(&self.name) else {
            return;
        };
        let mut request = ifreq(name);
        request.ifr_ifru.ifru_flags = libc::IFF_TAP as c_short | flags as c_short;
        // Our fd is closed, but a child forked meanwhile by another thread holds a copy
        // until it execs (close-on-exec), and with it the TAP's one queue: EBUSY for a
        // moment. Bounded: half a second at most.
        for _ in 0..500 {
            // SAFETY: TUNSETIFF reads and writes a `struct ifreq`.
            let ret = unsafe { ioctl_with_mut_ref(&self.spare, libc::TUNSETIFF as c_ulong, &mut request) };
            if ret == 0 || Errno::last() != Errno(libc::EBUSY) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        // `spare` closes after this: the persistent TAP stays, with the flags found.
    }
}

/// A datagram socket in the calling thread's network namespace, for interface ioctls.
fn control_socket() -> Option<OwnedFd> {
    for family in [libc::AF_INET, libc::AF_UNIX] {
        // SAFETY: socket takes no pointers; a non-negative result is a new fd we own.
        let fd = unsafe { libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd >= 0 {
            // SAFETY: `fd` was just opened and is owned by nothing else.
            return Some(unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }
    None
}

/// The index of interface `name` in the socket's namespace (`SIOCGIFINDEX`).
fn ifindex_via(socket: &OwnedFd, name: &str) -> Option<u32> {
    let mut request = ifreq(validated_name(name).ok()?);
    // SAFETY: SIOCGIFINDEX reads the name and writes an int into the union.
    let ret = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFINDEX, &mut request) };
    if ret < 0 {
        return None;
    }
    // SAFETY: the union is plain data, and SIOCGIFINDEX wrote `ifr_ifindex`.
    let index = unsafe { request.ifr_ifru.ifru_ifindex };
    u32::try_from(index).ok().filter(|&i| i != 0)
}

/// `SIOCETHTOOL` with `data` as the command buffer.
fn ethtool(socket: &OwnedFd, name: &str, data: *mut c_void) -> bool {
    let Ok(name) = validated_name(name) else {
        return false;
    };
    let mut request = ifreq(name);
    request.ifr_ifru.ifru_data = data.cast();
    // SAFETY: the kernel reads the ifreq, then the command buffer `data` points to,
    // which the callers size for the command.
    unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCETHTOOL, &mut request) >= 0 }
}

/// The netdev feature names, in bit order (`ETH_SS_FEATURES` strings).
fn feature_names(socket: &OwnedFd, name: &str) -> Option<Vec<String>> {
    // struct ethtool_sset_info: cmd, reserved, sset_mask (u64), then one u32 per set.
    let mut info = [0u32; 5];
    info[0] = uapi::ETHTOOL_GSSET_INFO;
    info[2] = 1 << uapi::ETH_SS_FEATURES;
    if !ethtool(socket, name, info.as_mut_ptr().cast()) || info[2] & (1 << uapi::ETH_SS_FEATURES) == 0 {
        return None;
    }
    let count = info[4] as usize;
    if count == 0 || count > 4096 {
        return None;
    }
    // struct ethtool_gstrings: cmd, string_set, len, then len * 32 bytes.
    let mut buffer = vec![0u32; 3 + count * uapi::ETH_GSTRING_LEN / 4];
    buffer[0] = uapi::ETHTOOL_GSTRINGS;
    buffer[1] = uapi::ETH_SS_FEATURES;
    buffer[2] = count as u32;
    if !ethtool(socket, name, buffer.as_mut_ptr().cast()) {
        return None;
    }
    let bytes: Vec<u8> = buffer[3..].iter().flat_map(|w| w.to_ne_bytes()).collect();
    let names = bytes
        .chunks(uapi::ETH_GSTRING_LEN)
        .take((buffer[2] as usize).min(count))
        .map(|chunk| {
            let end = chunk.iter().position(|&b| b == 0).unwrap_or(chunk.len());
            String::from_utf8_lossy(&chunk[..end]).into_owned()
        })
        .collect();
    Some(names)
}

/// The TAP offload features interface `name` has, and their bit numbers.
fn read_features(socket: &OwnedFd, name: &str) -> Option<(Vec<TapFeature>, Vec<u32>)> {
    let names = feature_names(socket, name)?;
    let words = names.len().div_ceil(32);
    // struct ethtool_gfeatures: cmd, size, then per word available, requested, active,
    // never_changed.
    let mut buffer = vec![0u32; 2 + 4 * words];
    buffer[0] = uapi::ETHTOOL_GFEATURES;
    buffer[1] = words as u32;
    if !ethtool(socket, name, buffer.as_mut_ptr().cast()) {
        return None;
    }
    let bit = |block: usize, index: usize| buffer[2 + 4 * (index / 32) + block] & (1 << (index % 32)) != 0;
    let mut features = Vec::new();
    let mut bits = Vec::new();
    for (feature, _) in uapi::TAP_FEATURES {
        let Some(index) = names.iter().position(|n| n == feature) else {
            continue;
        };
        // A feature the device cannot change is not one its offloads decide.
        if !bit(0, index) {
            continue;
        }
        features.push(TapFeature {
            name: feature,
            wanted: bit(1, index),
            active: bit(2, index),
        });
        bits.push(index as u32);
    }
    Some((features, bits))
}

/// `ETHTOOL_SFEATURES`: for each word, (valid, requested).
fn set_features(socket: &OwnedFd, name: &str, words: &[(u32, u32)]) -> bool {
    if words.is_empty() {
        return true;
    }
    let mut buffer = vec![uapi::ETHTOOL_SFEATURES, words.len() as u32];
    for (valid, requested) in words {
        buffer.extend([*valid, *requested]);
    }
    ethtool(socket, name, buffer.as_mut_ptr().cast())
}

/// The offload features of TAP `name` in the calling thread's network namespace, wanted
/// and active, as `ethtool -k` shows them: one per feature a TAP's offloads decide.
pub fn tap_offload_features(name: &str) -> Result<Vec<TapFeature>, TapError> {
    validated_name(name)?;
    let socket = control_socket().ok_or_else(|| TapError::IfIndex {
        name: name.to_string(),
        errno: Errno::last(),
    })?;
    read_features(&socket, name)
        .map(|(features, _)| features)
        .ok_or_else(|| ioctl_error("SIOCETHTOOL", name, Errno::last(), false))
}

/// `tun_flags` of interface `name` (index `ifindex`) in the calling thread's network
/// namespace: from a sysfs mounted for that namespace and attached nowhere, or, where
/// mounting is not allowed, from `/sys` if it shows the same interface index.
fn read_tun_flags(name: &str, ifindex: u32) -> Option<u16> {
    let attribute = |root: &OwnedFd, file: &str| -> Option<String> {
        let path = CString::new(format!("class/net/{name}/{file}")).ok()?;
        // SAFETY: a NUL-terminated path relative to a directory fd we own.
        let fd = unsafe { libc::openat(root.as_raw_fd(), path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            return None;
        }
        // SAFETY: a new fd, owned by nothing else.
        let mut file = unsafe { File::from_raw_fd(fd) };
        let mut text = String::new();
        file.by_ref().take(64).read_to_string(&mut text).ok()?;
        Some(text.trim().to_string())
    };
    let parse = |text: String| u16::from_str_radix(text.strip_prefix("0x")?, 16).ok();
    if let Some(root) = namespace_sysfs() {
        return attribute(&root, "tun_flags").and_then(parse);
    }
    let root: OwnedFd = File::open("/sys").ok()?.into();
    let same = attribute(&root, "ifindex").is_some_and(|i| i == ifindex.to_string());
    same.then(|| attribute(&root, "tun_flags")).flatten().and_then(parse)
}

/// A read-only sysfs of the calling thread's network namespace, mounted nowhere (the new
/// mount API: `fsopen`, `fsconfig`, `fsmount`); gone when the fd closes. Needs
/// CAP_SYS_ADMIN and Linux 5.2.
fn namespace_sysfs() -> Option<OwnedFd> {
    let own = |fd: libc::c_long| -> Option<OwnedFd> {
        let fd = RawFd::try_from(fd).ok().filter(|&fd| fd >= 0)?;
        // SAFETY: a new fd returned by the kernel, owned by nothing else.
        Some(unsafe { OwnedFd::from_raw_fd(fd) })
    };
    // SAFETY: fsopen reads a NUL-terminated name.
    let context = own(unsafe { libc::syscall(libc::SYS_fsopen, c"sysfs".as_ptr(), libc::FSOPEN_CLOEXEC) })?;
    let null = std::ptr::null::<libc::c_char>();
    // SAFETY: FSCONFIG_CMD_CREATE takes no key or value.
    let created = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            context.as_raw_fd(),
            libc::FSCONFIG_CMD_CREATE,
            null,
            null,
            0,
        )
    };
    if created < 0 {
        return None;
    }
    // SAFETY: fsmount takes the context fd and two flag words.
    own(unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            context.as_raw_fd(),
            libc::FSMOUNT_CLOEXEC,
            libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV | libc::MOUNT_ATTR_NOEXEC,
        )
    })
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
    let ret = unsafe { ioctl_with_mut_ref(&file, libc::TUNGETFEATURES as c_ulong, &mut features) };
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
fn validated_name(name: &str) -> Result<[c_char; libc::IFNAMSIZ], TapError> {
    if let Some(reason) = vmc_compiler::limits::interface_name_problem(name) {
        return Err(TapError::InvalidName {
            name: name.to_string(),
            reason,
        });
    }
    let mut ifname = [0; libc::IFNAMSIZ];
    for (to, from) in ifname.iter_mut().zip(name.as_bytes()) {
        *to = *from as c_char;
    }
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
        assert_eq!(libc::TUNSETIFF as c_ulong, 0x4004_54ca);
        assert_eq!(libc::TUNGETFEATURES as c_ulong, 0x8004_54cf);
        assert_eq!(libc::TUNSETOFFLOAD as c_ulong, 0x4004_54d0);
        assert_eq!(libc::TUNGETIFF as c_ulong, 0x8004_54d2);
        assert_eq!(libc::TUNSETVNETHDRSZ as c_ulong, 0x4004_54d8);
        assert_eq!(libc::TUNGETVNETHDRSZ as c_ulong, 0x8004_54d7);
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
        // The compiler knows the bits without libc; libc has them from if_tun.h.
        let libc_bits = [
            libc::TUN_F_CSUM,
            libc::TUN_F_TSO4,
            libc::TUN_F_TSO6,
            libc::TUN_F_TSO_ECN,
            libc::TUN_F_UFO,
            libc::TUN_F_USO4,
            libc::TUN_F_USO6,
        ];
        assert!(values.iter().map(|(_, bits)| *bits).eq(libc_bits));
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
