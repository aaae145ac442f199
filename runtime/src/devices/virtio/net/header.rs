//! The virtio-net header in front of every frame (virtio 1.x §5.1.6, Linux
//! `include/uapi/linux/virtio_net.h`), and the checks a transmitted one must pass.
//!
//! With VERSION_1 the header is always the 12-byte `virtio_net_hdr_mrg_rxbuf`, whether
//! or not MRG_RXBUF is negotiated; it is also what the TAP reads and writes.

use std::mem::offset_of;

use virtio_bindings::virtio_net::{
    virtio_net_hdr_mrg_rxbuf, VIRTIO_NET_HDR_F_DATA_VALID, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_F_RSC_INFO,
    VIRTIO_NET_HDR_GSO_ECN, VIRTIO_NET_HDR_GSO_NONE, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6,
    VIRTIO_NET_HDR_GSO_UDP, VIRTIO_NET_HDR_GSO_UDP_L4,
};

use super::feature::*;
use crate::devices::virtio::features::has;

/// Length of the header: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset,
/// num_buffers (`virtio_net_hdr_mrg_rxbuf`; the TAP is set to the same length).
pub use crate::host::VNET_HDR_LEN as HDR_LEN;

/// Offset of `num_buffers` in the header.
pub const NUM_BUFFERS_OFFSET: usize = offset_of!(virtio_net_hdr_mrg_rxbuf, num_buffers);

// The header's flags and GSO types are bytes; the bindings give them as u32.

/// `flags`: the device must complete the checksum at csum_start + csum_offset.
pub const F_NEEDS_CSUM: u8 = VIRTIO_NET_HDR_F_NEEDS_CSUM as u8;
/// `flags`: the checksum is known good (device to driver only).
pub const F_DATA_VALID: u8 = VIRTIO_NET_HDR_F_DATA_VALID as u8;
/// `flags`: RSC information in the header (device to driver only).
pub const F_RSC_INFO: u8 = VIRTIO_NET_HDR_F_RSC_INFO as u8;

pub const GSO_NONE: u8 = VIRTIO_NET_HDR_GSO_NONE as u8;
pub const GSO_TCPV4: u8 = VIRTIO_NET_HDR_GSO_TCPV4 as u8;
pub const GSO_UDP: u8 = VIRTIO_NET_HDR_GSO_UDP as u8;
pub const GSO_TCPV6: u8 = VIRTIO_NET_HDR_GSO_TCPV6 as u8;
/// UDP segmentation (USO), Linux 6.2+.
pub const GSO_UDP_L4: u8 = VIRTIO_NET_HDR_GSO_UDP_L4 as u8;
/// Flag in `gso_type`: TSO with ECN (the CWR bit) set.
pub const GSO_ECN: u8 = VIRTIO_NET_HDR_GSO_ECN as u8;

/// A decoded virtio-net header (little-endian fields, virtio 1.x).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VnetHeader {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
    pub num_buffers: u16,
}

impl VnetHeader {
    pub fn from_bytes(bytes: &[u8; HDR_LEN]) -> VnetHeader {
        let le16 = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
        VnetHeader {
            flags: bytes[0],
            gso_type: bytes[1],
            hdr_len: le16(2),
            gso_size: le16(4),
            csum_start: le16(6),
            csum_offset: le16(8),
            num_buffers: le16(10),
        }
    }

    pub fn to_bytes(&self) -> [u8; HDR_LEN] {
        let mut bytes = [0u8; HDR_LEN];
        bytes[0] = self.flags;
        bytes[1] = self.gso_type;
        bytes[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        bytes[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        bytes[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        bytes[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        bytes[10..12].copy_from_slice(&self.num_buffers.to_le_bytes());
        bytes
    }
}

/// Why a transmitted header is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxHeaderError {
    /// A flag the driver may not set (DATA_VALID, RSC_INFO, unknown bits).
    Flags,
    /// A GSO type that was not negotiated or does not exist, ECN without HOST_ECN, or a
    /// GSO type with gso_size 0.
    Gso,
    /// NEEDS_CSUM without CSUM negotiated, or a checksum position outside the frame.
    Csum,
}

impl VnetHeader {
    /// Checks a header the driver wrote in front of a frame of `frame_len` bytes against
    /// what was negotiated (virtio 1.x §5.1.6.2.1 "Driver Requirements: Packet
    /// Transmission"). The kernel checks again; this keeps a guest from reaching the
    /// host stack with an offload it was never given.
    pub fn validate_tx(&self, negotiated: u64, frame_len: usize) -> Result<(), TxHeaderError> {
        if self.flags & !F_NEEDS_CSUM != 0 {
            return Err(TxHeaderError::Flags);
        }
        if self.flags & F_NEEDS_CSUM != 0 {
            if !has(negotiated, CSUM) {
                return Err(TxHeaderError::Csum);
            }
            // The 16-bit checksum field must lie inside the frame.
            let end = usize::from(self.csum_start) + usize::from(self.csum_offset) + 2;
            if end > frame_len {
                return Err(TxHeaderError::Csum);
            }
        }
        let ecn = self.gso_type & GSO_ECN != 0;
        let needed = match self.gso_type & !GSO_ECN {
            GSO_NONE if !ecn => return Ok(()),
            GSO_TCPV4 => HOST_TSO4,
            GSO_TCPV6 => HOST_TSO6,
            GSO_UDP if !ecn => HOST_UFO,
            GSO_UDP_L4 if !ecn => HOST_USO,
            _ => return Err(TxHeaderError::Gso),
        };
        if !has(negotiated, needed) || (ecn && !has(negotiated, HOST_ECN)) || self.gso_size == 0 {
            return Err(TxHeaderError::Gso);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::features::bit;

    fn uso(gso_size: u16) -> VnetHeader {
        VnetHeader {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_UDP_L4,
            hdr_len: 42,
            gso_size,
            csum_start: 34,
            csum_offset: 6,
            num_buffers: 0,
        }
    }

    #[test]
    fn header_bytes_round_trip_little_endian() {
        let header = uso(1000);
        let bytes = header.to_bytes();
        assert_eq!(bytes, [1, 5, 42, 0, 0xe8, 0x03, 34, 0, 6, 0, 0, 0]);
        assert_eq!(VnetHeader::from_bytes(&bytes), header);
    }

    #[test]
    fn a_uso_frame_needs_host_uso_and_csum_and_a_segment_size() {
        let both = bit(HOST_USO) | bit(CSUM);
        assert_eq!(uso(1000).validate_tx(both, 3042), Ok(()));
        assert_eq!(uso(1000).validate_tx(bit(CSUM), 3042), Err(TxHeaderError::Gso));
        assert_eq!(uso(1000).validate_tx(bit(HOST_USO), 3042), Err(TxHeaderError::Csum));
        assert_eq!(uso(0).validate_tx(both, 3042), Err(TxHeaderError::Gso));
        assert_eq!(uso(1000).validate_tx(both, 41), Err(TxHeaderError::Csum));
    }

    #[test]
    fn tso_and_ecn_need_their_own_bits() {
        let tso4 = VnetHeader {
            gso_type: GSO_TCPV4,
            gso_size: 1448,
            ..VnetHeader::default()
        };
        assert_eq!(tso4.validate_tx(bit(HOST_TSO6), 100), Err(TxHeaderError::Gso));
        assert_eq!(tso4.validate_tx(bit(HOST_TSO4), 100), Ok(()));
        let ecn = VnetHeader {
            gso_type: GSO_TCPV4 | GSO_ECN,
            ..tso4
        };
        assert_eq!(ecn.validate_tx(bit(HOST_TSO4), 100), Err(TxHeaderError::Gso));
        assert_eq!(ecn.validate_tx(bit(HOST_TSO4) | bit(HOST_ECN), 100), Ok(()));
        let none_ecn = VnetHeader {
            gso_type: GSO_ECN,
            ..VnetHeader::default()
        };
        assert_eq!(none_ecn.validate_tx(!0, 100), Err(TxHeaderError::Gso));
    }

    #[test]
    fn device_only_and_unknown_flags_are_refused() {
        for flags in [F_DATA_VALID, F_RSC_INFO, 0x80] {
            let header = VnetHeader {
                flags,
                ..VnetHeader::default()
            };
            assert_eq!(header.validate_tx(!0, 100), Err(TxHeaderError::Flags));
        }
    }
}
