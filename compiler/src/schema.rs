//! The virtio-net property schema: one table, one row per property.
//!
//! Expansion, validation, the canonical encoding, `explain`, `diff` and lowering are
//! generic passes over [`VIRTIO_NET`]. Adding a property is adding a row here (and, if
//! a machine type changes its default, a delta in `machine.rs`).
//!
//! Feature bit numbers are the virtio 1.x ones (virtio spec, "Feature bits" of the
//! network device and "Reserved Feature Bits"); property names are QEMU's
//! virtio-net-device property names in kebab-case.

use crate::platform::TapOffload;

/// The type and range of a property's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// `#true` / `#false`.
    Bool,
    /// An unsigned integer in `min..=max`; `0` is also allowed when `zero_means_off`.
    Integer {
        min: u64,
        max: u64,
        zero_means_off: bool,
    },
    /// A virtqueue size: a power of two in `min..=max`.
    QueueSize { min: u64, max: u64 },
    /// A unicast Ethernet address, `"52:54:00:12:34:56"`.
    Mac,
}

/// A property value, as it appears in an ABI document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Value {
    Bool(bool),
    Integer(u64),
    Mac([u8; 6]),
}

impl Value {
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_integer(&self) -> Option<u64> {
        match self {
            Value::Integer(n) => Some(*n),
            _ => None,
        }
    }

    /// Whether the value turns its feature on: `#true`, or a non-zero integer.
    pub fn is_on(&self) -> bool {
        match self {
            Value::Bool(b) => *b,
            Value::Integer(n) => *n != 0,
            Value::Mac(_) => true,
        }
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Bool(b) => write!(f, "#{b}"),
            Value::Integer(n) => write!(f, "{n}"),
            Value::Mac(m) => write!(f, "\"{}\"", format_mac(m)),
        }
    }
}

pub fn format_mac(m: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

/// Why a value is rejected, as one sentence (the caller adds the span and the property).
pub fn parse_mac(text: &str) -> Result<[u8; 6], String> {
    let parts: Vec<&str> = text.split(':').collect();
    if parts.len() != 6 {
        return Err(format!(
            "`{text}` is not a MAC address: expected six hexadecimal octets separated by `:`"
        ));
    }
    let mut mac = [0u8; 6];
    for (i, part) in parts.iter().enumerate() {
        if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "`{text}` is not a MAC address: octet {} (`{part}`) is not two hexadecimal digits",
                i + 1
            ));
        }
        mac[i] = u8::from_str_radix(part, 16).map_err(|e| e.to_string())?;
    }
    if mac[0] & 0x01 != 0 {
        return Err(format!(
            "`{text}` is a multicast address (the low bit of the first octet is set); a NIC needs a unicast MAC"
        ));
    }
    if mac == [0; 6] {
        return Err("`00:00:00:00:00:00` is not a usable MAC address".to_string());
    }
    Ok(mac)
}

impl ValueKind {
    /// Checks a value against the kind; `Err` is one sentence saying what is wrong.
    pub fn check(&self, value: &Value) -> Result<(), String> {
        match (self, value) {
            (ValueKind::Bool, Value::Bool(_)) | (ValueKind::Mac, Value::Mac(_)) => Ok(()),
            (
                ValueKind::Integer {
                    min,
                    max,
                    zero_means_off,
                },
                Value::Integer(n),
            ) => {
                if (*n == 0 && *zero_means_off) || (min..=max).contains(&n) {
                    Ok(())
                } else if *zero_means_off {
                    Err(format!("{n} is out of range: expected 0 (off) or {min}..={max}"))
                } else {
                    Err(format!("{n} is out of range: expected {min}..={max}"))
                }
            }
            (ValueKind::QueueSize { min, max }, Value::Integer(n)) => {
                if !n.is_power_of_two() {
                    Err(format!("{n} is not a power of two (a virtqueue size must be)"))
                } else if !(min..=max).contains(&n) {
                    Err(format!("{n} is out of range: expected a power of two in {min}..={max}"))
                } else {
                    Ok(())
                }
            }
            (kind, _) => Err(format!("expected {}", kind.describe())),
        }
    }

    pub fn describe(&self) -> &'static str {
        match self {
            ValueKind::Bool => "a boolean (#true or #false)",
            ValueKind::Integer { .. } => "an integer",
            ValueKind::QueueSize { .. } => "an integer (a power of two)",
            ValueKind::Mac => "a MAC address string such as \"52:54:00:12:34:56\"",
        }
    }
}

/// Whether vmc's runtime implements what the property turns on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    Implemented,
    /// Stays off in every machine type; asking for it is an error giving this reason.
    NotImplemented(&'static str),
}

/// One virtio-net property.
#[derive(Debug)]
pub struct Property {
    /// The KDL name (QEMU's name in kebab-case).
    pub name: &'static str,
    /// QEMU's property name on `virtio-net-device`, for lowering.
    pub qemu: &'static str,
    pub kind: ValueKind,
    /// The default in the first machine type (`microvm-1.0`); later machine types
    /// override some defaults as deltas. `None` when the value is derived per VM (`mac`)
    /// or comes from the platform.
    pub default: Option<Value>,
    /// When set, the default comes from the platform: on exactly when the platform's
    /// TAP has all of these offloads.
    pub platform_default: Option<&'static [TapOffload]>,
    /// The virtio feature bit this property offers when on.
    pub feature_bit: Option<u32>,
    /// Features that must be on when this one is: each inner list is "one of these"
    /// (virtio spec, "Feature bit requirements").
    pub requires: &'static [&'static [&'static str]],
    /// TAP offloads the host must accept when the property is on.
    pub tap_offloads: &'static [TapOffload],
    pub support: Support,
    /// One line for `explain` and `--help`.
    pub doc: &'static str,
}

/// A property is identified by its name: there is one row per name.
impl PartialEq for Property {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for Property {}

impl Property {
    pub fn is_transport(&self) -> bool {
        matches!(self.feature_bit, Some(bit) if (24..=41).contains(&bit))
    }
}

use TapOffload as T;
use Value::{Bool, Integer};

const NOT_IMPL_CTRL: Support =
    Support::NotImplemented("vmc's virtio-net has no control virtqueue");
const NOT_IMPL_MQ: Support =
    Support::NotImplemented("vmc's virtio-net has exactly one receive and one transmit queue");
const NOT_IMPL_LEGACY: Support = Support::NotImplemented(
    "a legacy (pre-virtio-1.0) feature bit; vmc devices are virtio 1.x only, where any descriptor layout is implied",
);

/// Every virtio-net property, in the order documents list them.
pub static VIRTIO_NET: &[Property] = &[
    Property {
        name: "mac",
        qemu: "mac",
        kind: ValueKind::Mac,
        default: None,
        platform_default: None,
        feature_bit: Some(5),
        requires: &[],
        tap_offloads: &[],
        support: Support::Implemented,
        doc: "the device's Ethernet address (derived from the VM name and device id when left out)",
    },
    Property {
        name: "csum",
        qemu: "csum",
        kind: ValueKind::Bool,
        default: Some(Bool(true)),
        platform_default: None,
        feature_bit: Some(0),
        requires: &[],
        tap_offloads: &[],
        support: Support::Implemented,
        doc: "the device accepts frames with a partial checksum (guest transmit)",
    },
    Property {
        name: "guest-csum",
        qemu: "guest_csum",
        kind: ValueKind::Bool,
        default: Some(Bool(true)),
        platform_default: None,
        feature_bit: Some(1),
        requires: &[],
        tap_offloads: &[T::Csum],
        support: Support::Implemented,
        doc: "the guest accepts frames with a partial checksum (guest receive)",
    },
    Property {
        name: "ctrl-guest-offloads",
        qemu: "ctrl_guest_offloads",
        kind: ValueKind::Bool,
        default: Some(Bool(false)),
        platform_default: None,
        feature_bit: Some(2),
        requires: &[&["ctrl-vq"]],
        tap_offloads: &[],
        support: NOT_IMPL_CTRL,
        doc: "the guest may change its receive offloads through the control queue",
    },
    Property {
        name: "host-mtu",
        qemu: "host_mtu",
        kind: ValueKind::Integer {
            min: 68,
            max: 65535,
            zero_means_off: true,
        },
        default: Some(Integer(0)),
        platform_default: None,
        feature_bit: Some(3),
        requires: &[],
        tap_offloads: &[],
        support: Support::Implemented,
        doc: "the MTU the device advises the guest to use; 0 offers no MTU",
    },
    Property {
        name: "gso",
        qemu: "gso",
        kind: ValueKind::Bool,
        default: Some(Bool(false)),
        platform_default: None,
        feature_bit: Some(6),
        requires: &[],
        tap_offloads: &[],
        support: NOT_IMPL_LEGACY,
        doc: "legacy \"any GSO type\" bit",
    },
    Property {
        name: "guest-tso4",
        qemu: "guest_tso4",
        kind: ValueKind::Bool,
        default: Some(Bool(true)),
        platform_default: None,
        feature_bit: Some(7),
        requires: &[&["guest-csum"]],
        tap_offloads: &[T::Tso4],
        support: Support::Implemented,
        doc: "the guest receives TCPv4 segmentation-offloaded frames",
    },
    Property {
        name: "guest-tso6",
        qemu: "guest_tso6",
        kind: ValueKind::Bool,
        default: Some(Bool(true)),
        platform_default: None,
        feature_bit: Some(8),
        requires: &[&["guest-csum"]],
        tap_offloads: &[T::Tso6],
        support: Support::Implemented,
        doc: "the guest receives TCPv6 segmentation-offloaded frames",
    },
    Property {
        name: "guest-ecn",
        qemu: "guest_ecn",
        kind: ValueKind::Bool,
        default: Some(Bool(true)),
        platform_default: None,
        feature_bit: Some(9),
        requires: &[&["guest-tso4", "guest-tso6"]],
        tap_offloads: &[T::TsoEcn],
        support: Support::Implemented,
        doc: "the guest receives TSO frames with ECN",
    },
    Property {
        name: "guest-ufo",
        qemu: "guest_ufo",
        kind: ValueKind::Bool,
        default: Some(Bool(true)),
        platform_default: None,
        feature_bit: Some(10),
        requires: &[&["guest-csum"]],
        tap_offloads: &[T::Ufo],
        support: Support::Implemented,
        doc: "the guest receives UDP fragmentation-offloaded frames",
    },
    Property {
        name: "host-tso4",
        qemu: "host_tso4",
        kind: ValueKind::Bool,
        default: Some(Bool(true)),
        platform_default: None,
        feature_bit: Some(11),
        requires: &[&["csum"]],
        tap_offloads: &[T::Tso4],
        support: Support::Implemented,
        doc: "the device accepts TCPv4 segmentation-offloaded frames from the guest",
    },
    Property {
        name: "host-tso6",
        qemu: "host_tso6",
        kind: ValueKind::Bool,
        default: Some(Bool(true)),
        platform_default: None,
        feature_bit: Some(12),
        requires: &[&["csum"]],
        tap_offloads: &[T::Tso6],
        support: Support::Implemented,
        doc: "the device accepts TCPv6 segmentation-offloaded frames from the guest",
    },
    Property {
        name: "host-ecn",
        qemu: "host_ecn",
        kind: ValueKind::Bool,
        default: Some(Bool(true)),
        platform_default: None,
        feature_bit: Some(13),
        requires: &[&["host-tso4", "host-tso6"]],
        tap_offloads: &[T::TsoEcn],
        support: Support::Implemented,
        doc: "the device accepts TSO frames with ECN from the guest",
    },
    Property {
        name: "host-ufo",
        qemu: "host_ufo",
        kind: ValueKind::Bool,
        default: Some(Bool(true)),
        platform_default: None,
        feature_bit: Some(14),
        requires: &[&["csum"]],
        tap_offloads: &[T::Ufo],
        support: Support::Implemented,
        doc: "the device accepts UDP fragmentation-offloaded frames from the guest",
    },
    Property {
        name: "mrg-rxbuf",
        qemu: "mrg_rxbuf",
        kind: ValueKind::Bool,
        default: Some(Bool(true)),
        platform_default: None,
        feature_bit: Some(15),
        requires: &[],
        tap_offloads: &[],
        support: Support::Implemented,
        doc: "the device may merge several receive buffers for one frame",
    },
    Property {
        name: "status",
        qemu: "status",
        kind: ValueKind::Bool,
        default: Some(Bool(true)),
        platform_default: None,
        feature_bit: Some(16),
        requires: &[],
        tap_offloads: &[],
        support: Support::Implemented,
        doc: "the device reports link status in its configuration space",
    },
    Property {
        name: "ctrl-vq",
        qemu: "ctrl_vq",
        kind: ValueKind::Bool,
        default: Some(Bool(false)),
        platform_default: None,
        feature_bit: Some(17),
        requires: &[],
        tap_offloads: &[],
        support: NOT_IMPL_CTRL,
        doc: "a control virtqueue",
    },
    Property {
        name: "ctrl-rx",
        qemu: "ctrl_rx",
        kind: ValueKind::Bool,
        default: Some(Bool(false)),
        platform_default: None,
        feature_bit: Some(18),
        requires: &[&["ctrl-vq"]],
        tap_offloads: &[],
        support: NOT_IMPL_CTRL,
        doc: "receive-mode control (promiscuous, all-multicast) through the control queue",
    },
    Property {
        name: "ctrl-vlan",
        qemu: "ctrl_vlan",
        kind: ValueKind::Bool,
        default: Some(Bool(false)),
        platform_default: None,
        feature_bit: Some(19),
        requires: &[&["ctrl-vq"]],
        tap_offloads: &[],
        support: NOT_IMPL_CTRL,
        doc: "VLAN filtering through the control queue",
    },
    Property {
        name: "ctrl-rx-extra",
        qemu: "ctrl_rx_extra",
        kind: ValueKind::Bool,
        default: Some(Bool(false)),
        platform_default: None,
        feature_bit: Some(20),
        requires: &[&["ctrl-rx"]],
        tap_offloads: &[],
        support: NOT_IMPL_CTRL,
        doc: "extra receive-mode control through the control queue",
    },
    Property {
        name: "guest-announce",
        qemu: "guest_announce",
        kind: ValueKind::Bool,
        default: Some(Bool(false)),
        platform_default: None,
        feature_bit: Some(21),
        requires: &[&["ctrl-vq"]],
        tap_offloads: &[],
        support: NOT_IMPL_CTRL,
        doc: "the guest sends gratuitous packets when asked (after migration)",
    },
    Property {
        name: "mq",
        qemu: "mq",
        kind: ValueKind::Bool,
        default: Some(Bool(false)),
        platform_default: None,
        feature_bit: Some(22),
        requires: &[&["ctrl-vq"]],
        tap_offloads: &[],
        support: NOT_IMPL_MQ,
        doc: "several receive/transmit queue pairs",
    },
    Property {
        name: "ctrl-mac-addr",
        qemu: "ctrl_mac_addr",
        kind: ValueKind::Bool,
        default: Some(Bool(false)),
        platform_default: None,
        feature_bit: Some(23),
        requires: &[&["ctrl-vq"]],
        tap_offloads: &[],
        support: NOT_IMPL_CTRL,
        doc: "the guest may set the MAC address through the control queue",
    },
    Property {
        name: "guest-uso4",
        qemu: "guest_uso4",
        kind: ValueKind::Bool,
        default: None,
        platform_default: Some(&[T::Uso4, T::Uso6]),
        feature_bit: Some(54),
        requires: &[&["guest-csum"]],
        tap_offloads: &[T::Uso4, T::Uso6],
        support: Support::Implemented,
        doc: "the guest receives UDPv4 segmentation-offloaded (USO) frames",
    },
    Property {
        name: "guest-uso6",
        qemu: "guest_uso6",
        kind: ValueKind::Bool,
        default: None,
        platform_default: Some(&[T::Uso4, T::Uso6]),
        feature_bit: Some(55),
        requires: &[&["guest-csum"]],
        tap_offloads: &[T::Uso4, T::Uso6],
        support: Support::Implemented,
        doc: "the guest receives UDPv6 segmentation-offloaded (USO) frames",
    },
    Property {
        name: "host-uso",
        qemu: "host_uso",
        kind: ValueKind::Bool,
        default: None,
        platform_default: Some(&[T::Uso4, T::Uso6]),
        feature_bit: Some(56),
        requires: &[&["csum"]],
        tap_offloads: &[T::Uso4, T::Uso6],
        support: Support::Implemented,
        doc: "the device accepts UDP segmentation-offloaded (USO) frames from the guest",
    },
    Property {
        name: "hash",
        qemu: "hash",
        kind: ValueKind::Bool,
        default: Some(Bool(false)),
        platform_default: None,
        feature_bit: Some(57),
        requires: &[],
        tap_offloads: &[],
        support: Support::NotImplemented("vmc's virtio-net does not report receive hashes"),
        doc: "the device reports a hash of each received frame",
    },
    Property {
        name: "rss",
        qemu: "rss",
        kind: ValueKind::Bool,
        default: Some(Bool(false)),
        platform_default: None,
        feature_bit: Some(60),
        requires: &[&["ctrl-vq"]],
        tap_offloads: &[],
        support: NOT_IMPL_MQ,
        doc: "receive-side scaling across queues",
    },
    Property {
        name: "rx-queue-size",
        qemu: "rx_queue_size",
        kind: ValueKind::QueueSize { min: 256, max: 1024 },
        default: Some(Integer(256)),
        platform_default: None,
        feature_bit: None,
        requires: &[],
        tap_offloads: &[],
        support: Support::Implemented,
        doc: "the receive virtqueue's maximum size",
    },
    Property {
        name: "tx-queue-size",
        qemu: "tx_queue_size",
        // QEMU caps a TAP-backed device's transmit queue at 256; a larger value would
        // be lowered to something QEMU silently shrinks.
        kind: ValueKind::QueueSize { min: 256, max: 256 },
        default: Some(Integer(256)),
        platform_default: None,
        feature_bit: None,
        requires: &[],
        tap_offloads: &[],
        support: Support::Implemented,
        doc: "the transmit virtqueue's maximum size",
    },
    Property {
        name: "notify-on-empty",
        qemu: "notify_on_empty",
        kind: ValueKind::Bool,
        default: Some(Bool(false)),
        platform_default: None,
        feature_bit: Some(24),
        requires: &[],
        tap_offloads: &[],
        support: NOT_IMPL_LEGACY,
        doc: "legacy: notify when the available ring runs empty",
    },
    Property {
        name: "any-layout",
        qemu: "any_layout",
        kind: ValueKind::Bool,
        default: Some(Bool(false)),
        platform_default: None,
        feature_bit: Some(27),
        requires: &[],
        tap_offloads: &[],
        support: NOT_IMPL_LEGACY,
        doc: "legacy: any descriptor layout (implied by virtio 1.x)",
    },
    Property {
        name: "indirect-desc",
        qemu: "indirect_desc",
        kind: ValueKind::Bool,
        default: Some(Bool(true)),
        platform_default: None,
        feature_bit: Some(28),
        requires: &[],
        tap_offloads: &[],
        support: Support::Implemented,
        doc: "indirect descriptor tables",
    },
    Property {
        name: "event-idx",
        qemu: "event_idx",
        kind: ValueKind::Bool,
        default: Some(Bool(true)),
        platform_default: None,
        feature_bit: Some(29),
        requires: &[],
        tap_offloads: &[],
        support: Support::Implemented,
        doc: "used/available event index notification suppression",
    },
    Property {
        name: "packed",
        qemu: "packed",
        kind: ValueKind::Bool,
        default: Some(Bool(false)),
        platform_default: None,
        feature_bit: Some(34),
        requires: &[],
        tap_offloads: &[],
        support: Support::NotImplemented("vmc's virtqueues are split rings only"),
        doc: "packed virtqueue layout",
    },
    Property {
        name: "queue-reset",
        qemu: "queue_reset",
        kind: ValueKind::Bool,
        default: Some(Bool(false)),
        platform_default: None,
        feature_bit: Some(40),
        requires: &[],
        tap_offloads: &[],
        support: Support::NotImplemented("vmc's virtio-mmio transport cannot reset one queue"),
        doc: "the guest may reset one virtqueue",
    },
];

/// VIRTIO_F_VERSION_1: every vmc device is a virtio 1.x device; not a property.
pub const VERSION_1: u32 = 32;

/// Looks a property up by its KDL name.
pub fn property(name: &str) -> Option<&'static Property> {
    VIRTIO_NET.iter().find(|p| p.name == name)
}

/// The feature bits a device with these property values offers, sorted.
///
/// `values` must hold one value per schema row, in schema order.
pub fn device_features(values: &[(&'static Property, Value)]) -> Vec<u32> {
    let mut bits: Vec<u32> = values
        .iter()
        .filter(|(_, value)| value.is_on())
        .filter_map(|(p, _)| p.feature_bit)
        .chain(std::iter::once(VERSION_1))
        .collect();
    bits.sort_unstable();
    bits.dedup();
    bits
}

/// The virtio name of a feature bit, for diffs and explanations.
pub fn feature_name(bit: u32) -> Option<&'static str> {
    Some(match bit {
        0 => "CSUM",
        1 => "GUEST_CSUM",
        2 => "CTRL_GUEST_OFFLOADS",
        3 => "MTU",
        5 => "MAC",
        6 => "GSO",
        7 => "GUEST_TSO4",
        8 => "GUEST_TSO6",
        9 => "GUEST_ECN",
        10 => "GUEST_UFO",
        11 => "HOST_TSO4",
        12 => "HOST_TSO6",
        13 => "HOST_ECN",
        14 => "HOST_UFO",
        15 => "MRG_RXBUF",
        16 => "STATUS",
        17 => "CTRL_VQ",
        18 => "CTRL_RX",
        19 => "CTRL_VLAN",
        20 => "CTRL_RX_EXTRA",
        21 => "GUEST_ANNOUNCE",
        22 => "MQ",
        23 => "CTRL_MAC_ADDR",
        24 => "NOTIFY_ON_EMPTY",
        27 => "ANY_LAYOUT",
        28 => "RING_INDIRECT_DESC",
        29 => "RING_EVENT_IDX",
        32 => "VERSION_1",
        34 => "RING_PACKED",
        40 => "RING_RESET",
        54 => "GUEST_USO4",
        55 => "GUEST_USO6",
        56 => "HOST_USO",
        57 => "HASH_REPORT",
        60 => "RSS",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_bits_are_unique() {
        let mut names: Vec<_> = VIRTIO_NET.iter().map(|p| p.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), VIRTIO_NET.len());
        let mut bits: Vec<_> = VIRTIO_NET.iter().filter_map(|p| p.feature_bit).collect();
        bits.sort_unstable();
        bits.dedup();
        assert_eq!(bits.len(), VIRTIO_NET.iter().filter(|p| p.feature_bit.is_some()).count());
    }

    #[test]
    fn every_requirement_names_a_property_and_every_bit_has_a_name() {
        for p in VIRTIO_NET {
            for any_of in p.requires {
                for name in *any_of {
                    assert!(property(name).is_some(), "{} requires unknown {name}", p.name);
                }
            }
            if let Some(bit) = p.feature_bit {
                assert!(feature_name(bit).is_some(), "bit {bit} has no name");
            }
        }
    }

    #[test]
    fn defaults_satisfy_their_kind_and_unimplemented_features_default_off() {
        for p in VIRTIO_NET {
            if let Some(default) = p.default {
                assert_eq!(p.kind.check(&default), Ok(()), "{}", p.name);
                if matches!(p.support, Support::NotImplemented(_)) {
                    assert!(!default.is_on(), "{} is unimplemented but on", p.name);
                }
            }
        }
    }

    #[test]
    fn mac_parsing_rejects_multicast_and_malformed() {
        assert_eq!(parse_mac("52:54:00:12:34:56"), Ok([0x52, 0x54, 0, 0x12, 0x34, 0x56]));
        assert!(parse_mac("01:00:5e:00:00:01").unwrap_err().contains("multicast"));
        assert!(parse_mac("52:54:00:12:34").is_err());
        assert!(parse_mac("52:54:00:12:34:5g").is_err());
        assert!(parse_mac("52:54:00:12:34:567").is_err());
        assert!(parse_mac("00:00:00:00:00:00").is_err());
    }

    #[test]
    fn queue_sizes_must_be_powers_of_two_in_range() {
        let kind = property("rx-queue-size").unwrap().kind;
        assert!(kind.check(&Value::Integer(512)).is_ok());
        assert!(kind.check(&Value::Integer(300)).unwrap_err().contains("power of two"));
        assert!(kind.check(&Value::Integer(2048)).unwrap_err().contains("out of range"));
        assert!(kind.check(&Value::Bool(true)).is_err());
    }
}
