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
    Integer { min: u64, max: u64, zero_means_off: bool },
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
#[derive(Debug, Clone)]
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
    /// The virtio name of `feature_bit`: the spec's `VIRTIO_NET_F_*`, `VIRTIO_F_*` or
    /// `VIRTIO_RING_F_*` name without its prefix (`HOST_USO`, `RING_INDIRECT_DESC`), as
    /// `diff` and `explain` print it.
    pub virtio: Option<&'static str>,
    /// Features that must be on when this one is: each inner list is "one of these"
    /// (virtio spec, "Feature bit requirements").
    pub requires: &'static [&'static [&'static str]],
    /// TAP offloads the host must accept when the property is on. For a feature by which
    /// the guest receives offloaded frames (see [`is_guest_receive_offload`]), they are also
    /// what the runtime turns on at the TAP (`TUNSETOFFLOAD`) when the guest negotiates it.
    pub tap_offloads: &'static [TapOffload],
    pub support: Support,
    /// The machine type that introduced the property. Documents of older machine types
    /// do not have it, so adding a row never changes a released machine type's table,
    /// documents or hashes (QEMU's `hw_compat_*` discipline, read the other way).
    pub since: &'static str,
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

use TapOffload as T;
use Value::{Bool, Integer};

const NOT_IMPL_CTRL: Support = Support::NotImplemented("vmc's virtio-net has no control virtqueue");
const NOT_IMPL_MQ: Support = Support::NotImplemented("vmc's virtio-net has exactly one receive and one transmit queue");
const NOT_IMPL_LEGACY: Support = Support::NotImplemented(
    "a legacy (pre-virtio-1.0) feature bit; vmc devices are virtio 1.x only, where any descriptor layout is implied",
);

/// A boolean property offering one feature bit, implemented, with no requirements.
const fn flag(
    name: &'static str,
    qemu: &'static str,
    bit: u32,
    virtio: &'static str,
    default: bool,
    doc: &'static str,
) -> Property {
    value(
        name,
        qemu,
        ValueKind::Bool,
        Some(Bool(default)),
        Some(bit),
        Some(virtio),
        doc,
    )
}

/// A property of any kind, implemented, with no requirements.
const fn value(
    name: &'static str,
    qemu: &'static str,
    kind: ValueKind,
    default: Option<Value>,
    feature_bit: Option<u32>,
    virtio: Option<&'static str>,
    doc: &'static str,
) -> Property {
    Property {
        name,
        qemu,
        kind,
        default,
        platform_default: None,
        feature_bit,
        virtio,
        requires: &[],
        tap_offloads: &[],
        support: Support::Implemented,
        since: FIRST_MACHINE_TYPE,
        doc,
    }
}

/// The machine type every property of the first release belongs to.
const FIRST_MACHINE_TYPE: &str = "microvm-1.0";

impl Property {
    const fn requires(self, requires: &'static [&'static [&'static str]]) -> Property {
        Property { requires, ..self }
    }

    const fn offloads(self, tap_offloads: &'static [TapOffload]) -> Property {
        Property { tap_offloads, ..self }
    }

    /// The default comes from the platform: on exactly when its TAP has `offloads`.
    const fn platform_default(self, offloads: &'static [TapOffload]) -> Property {
        Property {
            default: None,
            platform_default: Some(offloads),
            ..self
        }
    }

    const fn not_implemented(self, support: Support) -> Property {
        Property { support, ..self }
    }

    /// The property arrives with machine type `machine` (a new row always does: the
    /// released machine types are frozen).
    pub const fn since(self, machine: &'static str) -> Property {
        Property { since: machine, ..self }
    }
}

/// Every virtio-net property, in the order documents list them.
pub static VIRTIO_NET: &[Property] = &[
    value(
        "mac",
        "mac",
        ValueKind::Mac,
        None,
        Some(5),
        Some("MAC"),
        "the device's Ethernet address (derived from the VM name and device id when left out)",
    ),
    flag(
        "csum",
        "csum",
        0,
        "CSUM",
        true,
        "the device accepts frames with a partial checksum (guest transmit)",
    ),
    flag(
        "guest-csum",
        "guest_csum",
        1,
        "GUEST_CSUM",
        true,
        "the guest accepts frames with a partial checksum (guest receive)",
    )
    .offloads(&[T::Csum]),
    flag(
        "ctrl-guest-offloads",
        "ctrl_guest_offloads",
        2,
        "CTRL_GUEST_OFFLOADS",
        false,
        "the guest may change its receive offloads through the control queue",
    )
    .requires(&[&["ctrl-vq"]])
    .not_implemented(NOT_IMPL_CTRL),
    value(
        "host-mtu",
        "host_mtu",
        ValueKind::Integer {
            min: 68,
            max: 65535,
            zero_means_off: true,
        },
        Some(Integer(0)),
        Some(3),
        Some("MTU"),
        "the MTU the device advises the guest to use; 0 offers no MTU",
    ),
    flag("gso", "gso", 6, "GSO", false, "legacy \"any GSO type\" bit").not_implemented(NOT_IMPL_LEGACY),
    flag(
        "guest-tso4",
        "guest_tso4",
        7,
        "GUEST_TSO4",
        true,
        "the guest receives TCPv4 segmentation-offloaded frames",
    )
    .requires(&[&["guest-csum"]])
    .offloads(&[T::Tso4]),
    flag(
        "guest-tso6",
        "guest_tso6",
        8,
        "GUEST_TSO6",
        true,
        "the guest receives TCPv6 segmentation-offloaded frames",
    )
    .requires(&[&["guest-csum"]])
    .offloads(&[T::Tso6]),
    flag(
        "guest-ecn",
        "guest_ecn",
        9,
        "GUEST_ECN",
        true,
        "the guest receives TSO frames with ECN",
    )
    .requires(&[&["guest-tso4", "guest-tso6"]])
    .offloads(&[T::TsoEcn]),
    flag(
        "guest-ufo",
        "guest_ufo",
        10,
        "GUEST_UFO",
        true,
        "the guest receives UDP fragmentation-offloaded frames",
    )
    .requires(&[&["guest-csum"]])
    .offloads(&[T::Ufo]),
    flag(
        "host-tso4",
        "host_tso4",
        11,
        "HOST_TSO4",
        true,
        "the device accepts TCPv4 segmentation-offloaded frames from the guest",
    )
    .requires(&[&["csum"]])
    .offloads(&[T::Tso4]),
    flag(
        "host-tso6",
        "host_tso6",
        12,
        "HOST_TSO6",
        true,
        "the device accepts TCPv6 segmentation-offloaded frames from the guest",
    )
    .requires(&[&["csum"]])
    .offloads(&[T::Tso6]),
    flag(
        "host-ecn",
        "host_ecn",
        13,
        "HOST_ECN",
        true,
        "the device accepts TSO frames with ECN from the guest",
    )
    .requires(&[&["host-tso4", "host-tso6"]])
    .offloads(&[T::TsoEcn]),
    flag(
        "host-ufo",
        "host_ufo",
        14,
        "HOST_UFO",
        true,
        "the device accepts UDP fragmentation-offloaded frames from the guest",
    )
    .requires(&[&["csum"]])
    .offloads(&[T::Ufo]),
    flag(
        "mrg-rxbuf",
        "mrg_rxbuf",
        15,
        "MRG_RXBUF",
        true,
        "the device may merge several receive buffers for one frame",
    ),
    flag(
        "status",
        "status",
        16,
        "STATUS",
        true,
        "the device reports link status in its configuration space",
    ),
    flag("ctrl-vq", "ctrl_vq", 17, "CTRL_VQ", false, "a control virtqueue").not_implemented(NOT_IMPL_CTRL),
    flag(
        "ctrl-rx",
        "ctrl_rx",
        18,
        "CTRL_RX",
        false,
        "receive-mode control (promiscuous, all-multicast) through the control queue",
    )
    .requires(&[&["ctrl-vq"]])
    .not_implemented(NOT_IMPL_CTRL),
    flag(
        "ctrl-vlan",
        "ctrl_vlan",
        19,
        "CTRL_VLAN",
        false,
        "VLAN filtering through the control queue",
    )
    .requires(&[&["ctrl-vq"]])
    .not_implemented(NOT_IMPL_CTRL),
    flag(
        "ctrl-rx-extra",
        "ctrl_rx_extra",
        20,
        "CTRL_RX_EXTRA",
        false,
        "extra receive-mode control through the control queue",
    )
    .requires(&[&["ctrl-rx"]])
    .not_implemented(NOT_IMPL_CTRL),
    flag(
        "guest-announce",
        "guest_announce",
        21,
        "GUEST_ANNOUNCE",
        false,
        "the guest sends gratuitous packets when asked (after migration)",
    )
    .requires(&[&["ctrl-vq"]])
    .not_implemented(NOT_IMPL_CTRL),
    flag("mq", "mq", 22, "MQ", false, "several receive/transmit queue pairs")
        .requires(&[&["ctrl-vq"]])
        .not_implemented(NOT_IMPL_MQ),
    flag(
        "ctrl-mac-addr",
        "ctrl_mac_addr",
        23,
        "CTRL_MAC_ADDR",
        false,
        "the guest may set the MAC address through the control queue",
    )
    .requires(&[&["ctrl-vq"]])
    .not_implemented(NOT_IMPL_CTRL),
    flag(
        "guest-uso4",
        "guest_uso4",
        54,
        "GUEST_USO4",
        false,
        "the guest receives UDPv4 segmentation-offloaded (USO) frames",
    )
    .requires(&[&["guest-csum"]])
    .offloads(&[T::Uso4, T::Uso6])
    .platform_default(&[T::Uso4, T::Uso6]),
    flag(
        "guest-uso6",
        "guest_uso6",
        55,
        "GUEST_USO6",
        false,
        "the guest receives UDPv6 segmentation-offloaded (USO) frames",
    )
    .requires(&[&["guest-csum"]])
    .offloads(&[T::Uso4, T::Uso6])
    .platform_default(&[T::Uso4, T::Uso6]),
    flag(
        "host-uso",
        "host_uso",
        56,
        "HOST_USO",
        false,
        "the device accepts UDP segmentation-offloaded (USO) frames from the guest",
    )
    .requires(&[&["csum"]])
    .offloads(&[T::Uso4, T::Uso6])
    .platform_default(&[T::Uso4, T::Uso6]),
    flag(
        "hash",
        "hash",
        57,
        "HASH_REPORT",
        false,
        "the device reports a hash of each received frame",
    )
    .not_implemented(Support::NotImplemented(
        "vmc's virtio-net does not report receive hashes",
    )),
    flag("rss", "rss", 60, "RSS", false, "receive-side scaling across queues")
        .requires(&[&["ctrl-vq"]])
        .not_implemented(NOT_IMPL_MQ),
    value(
        "rx-queue-size",
        "rx_queue_size",
        ValueKind::QueueSize { min: 256, max: 1024 },
        Some(Integer(256)),
        None,
        None,
        "the receive virtqueue's maximum size",
    ),
    // QEMU caps a TAP-backed device's transmit queue at 256; a larger value would be
    // lowered to something QEMU silently shrinks.
    value(
        "tx-queue-size",
        "tx_queue_size",
        ValueKind::QueueSize { min: 256, max: 256 },
        Some(Integer(256)),
        None,
        None,
        "the transmit virtqueue's maximum size",
    ),
    flag(
        "notify-on-empty",
        "notify_on_empty",
        24,
        "NOTIFY_ON_EMPTY",
        false,
        "legacy: notify when the available ring runs empty",
    )
    .not_implemented(NOT_IMPL_LEGACY),
    flag(
        "any-layout",
        "any_layout",
        27,
        "ANY_LAYOUT",
        false,
        "legacy: any descriptor layout (implied by virtio 1.x)",
    )
    .not_implemented(NOT_IMPL_LEGACY),
    flag(
        "indirect-desc",
        "indirect_desc",
        28,
        "RING_INDIRECT_DESC",
        true,
        "indirect descriptor tables",
    ),
    flag(
        "event-idx",
        "event_idx",
        29,
        "RING_EVENT_IDX",
        true,
        "used/available event index notification suppression",
    ),
    flag("packed", "packed", 34, "RING_PACKED", false, "packed virtqueue layout")
        .not_implemented(Support::NotImplemented("vmc's virtqueues are split rings only")),
    flag(
        "queue-reset",
        "queue_reset",
        40,
        "RING_RESET",
        false,
        "the guest may reset one virtqueue",
    )
    .not_implemented(Support::NotImplemented(
        "vmc's virtio-mmio transport cannot reset one queue",
    )),
];

/// VIRTIO_F_VERSION_1: every vmc device is a virtio 1.x device; not a property.
pub const VERSION_1: u32 = 32;

/// Looks a property up by its KDL name.
pub fn property(name: &str) -> Option<&'static Property> {
    VIRTIO_NET.iter().find(|p| p.name == name)
}

/// The rows code reads by identity rather than by name (the runtime builds its device
/// from them). A name without a row fails the build.
pub static MAC: &Property = row("mac");
pub static HOST_MTU: &Property = row("host-mtu");
pub static RX_QUEUE_SIZE: &Property = row("rx-queue-size");
pub static TX_QUEUE_SIZE: &Property = row("tx-queue-size");

/// [`property`] at compile time.
const fn row(name: &str) -> &'static Property {
    let mut i = 0;
    while i < VIRTIO_NET.len() {
        if same_str(VIRTIO_NET[i].name, name) {
            return &VIRTIO_NET[i];
        }
        i += 1;
    }
    panic!("no virtio-net property of that name")
}

const fn same_str(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
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

/// The virtio name of a feature bit, for diffs and explanations: the schema row's
/// `virtio` name, or `VERSION_1`.
pub fn feature_name(bit: u32) -> Option<&'static str> {
    if bit == VERSION_1 {
        return Some("VERSION_1");
    }
    VIRTIO_NET
        .iter()
        .find(|p| p.feature_bit == Some(bit))
        .and_then(|p| p.virtio)
}

/// Whether the property's feature lets the guest receive offloaded frames: a virtio
/// `GUEST_*` feature (the driver receives; `HOST_*` ones are what the device receives)
/// that needs TAP offloads. Those offloads are what the TAP must then hand the device
/// (`TUNSETOFFLOAD` tells the kernel what the reader of the TAP can take).
pub fn is_guest_receive_offload(p: &Property) -> bool {
    !p.tap_offloads.is_empty() && p.virtio.is_some_and(|name| name.starts_with("GUEST_"))
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
        assert_eq!(
            bits.len(),
            VIRTIO_NET.iter().filter(|p| p.feature_bit.is_some()).count()
        );
        assert!(!bits.contains(&VERSION_1), "VERSION_1 is not a property");
        let mut virtio: Vec<_> = VIRTIO_NET.iter().filter_map(|p| p.virtio).collect();
        virtio.push("VERSION_1");
        virtio.sort_unstable();
        virtio.dedup();
        assert_eq!(virtio.len(), bits.len() + 1);
    }

    #[test]
    fn a_property_has_a_virtio_name_exactly_when_it_has_a_feature_bit() {
        for p in VIRTIO_NET {
            assert_eq!(p.feature_bit.is_some(), p.virtio.is_some(), "{}", p.name);
            if let (Some(bit), Some(name)) = (p.feature_bit, p.virtio) {
                assert_eq!(feature_name(bit), Some(name));
                assert!(
                    name.bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'),
                    "{name}"
                );
            }
        }
        assert_eq!(feature_name(VERSION_1), Some("VERSION_1"));
        assert_eq!(feature_name(4), None);
        assert_eq!(feature_name(64), None);
    }

    #[test]
    fn guest_receive_offloads_are_the_guest_rows_with_tap_offloads() {
        let receive: Vec<_> = VIRTIO_NET
            .iter()
            .filter(|p| is_guest_receive_offload(p))
            .map(|p| p.name)
            .collect();
        assert_eq!(
            receive,
            [
                "guest-csum",
                "guest-tso4",
                "guest-tso6",
                "guest-ecn",
                "guest-ufo",
                "guest-uso4",
                "guest-uso6"
            ]
        );
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
    fn typed_rows_are_the_rows_of_their_names() {
        for (row, name) in [
            (MAC, "mac"),
            (HOST_MTU, "host-mtu"),
            (RX_QUEUE_SIZE, "rx-queue-size"),
            (TX_QUEUE_SIZE, "tx-queue-size"),
        ] {
            assert!(std::ptr::eq(row, property(name).unwrap()), "{name}");
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
