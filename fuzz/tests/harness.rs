//! The virtio-net harness reaches what it is meant to: a well-formed input sends a
//! frame to the TAP and receives one from it (root; skipped otherwise).

#[path = "../../tests/support/skip.rs"]
mod skip;

use skip::require;
use vmc_fuzz::net::{run_with_stats, NetInput, RxChain, RxFrame, TxHeader, TxPacket};

fn udp_frame() -> Vec<u8> {
    let mut frame = vec![0x52, 0x54, 0, 0x12, 0x34, 0x56, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00];
    let mut ip = vec![0x45, 0, 0, 28, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
    let sum = ip
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum::<u32>();
    let check = !(((sum & 0xffff) + (sum >> 16)) as u16);
    ip[10..12].copy_from_slice(&check.to_be_bytes());
    frame.extend_from_slice(&ip);
    frame.extend_from_slice(&[0x9c, 0x40, 0x1e, 0x6c, 0, 8, 0, 0]);
    frame
}

#[test]
fn a_well_formed_input_sends_and_receives_a_frame() {
    require!(if skip::effective_uid() == 0 { Ok(()) } else { Err("needs root") });
    let input = NetInput {
        offered: !0,
        driver: !0,
        raw_features: false,
        mtu: 1500,
        max_log: [7, 7],
        size_log: [7, 7],
        tx: vec![TxPacket {
            header: TxHeader::Plain,
            frame: udp_frame(),
            grow_to: None,
            splits: vec![12],
            indirect: false,
        }],
        rx_chains: vec![RxChain {
            lens: vec![2048],
            indirect: false,
        }],
        rx_frames: vec![RxFrame {
            vnet: [0; 10],
            frame: udp_frame(),
            grow_to: None,
            chain: None,
        }],
        corruptions: vec![],
    };
    let stats = run_with_stats(&input).expect("the device ran");
    assert_eq!((stats.tx_frames, stats.rx_frames), (1, 1), "{stats:?}");
}
