#!/usr/bin/env bash
# The main job: compile an example spec and run it.
#
# 1. Compile specs/web.kdl for two host platforms and show what differs (USO).
# 2. Generate vmc's self-test guest, compile specs/selftest.kdl for this host and run
#    it on KVM with its virtio-net device on a TAP, inside a network namespace made
#    for the run (needs root and /dev/kvm).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/lock
cargo build --release --quiet --locked
vmc=$PWD/target/release/vmc
out=$(mktemp -d)
ns=vmc-example-$$
cleanup() {
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "$out"
}
trap cleanup EXIT

echo "== vmc compile specs/web.kdl for linux-5.15 and linux-6.9"
$vmc compile specs/web.kdl --platform linux-5.15 -o "$out/web-5.15.abi"
$vmc compile specs/web.kdl --platform linux-6.9 -o "$out/web-6.9.abi"
echo
echo "== vmc diff (guest-visible differences; exit status 1 means they differ)"
$vmc diff "$out/web-5.15.abi" "$out/web-6.9.abi" || test $? -eq 1
echo
echo "== vmc explain host-uso"
$vmc explain "$out/web-6.9.abi" host-uso
echo

if [ "$(id -u)" != 0 ] || [ ! -e /dev/kvm ]; then
    echo "== skipping the run: it needs root and /dev/kvm (a TAP and a KVM VM)"
    exit 0
fi
echo "== vmc selftest-guest, then vmc run specs/selftest.kdl (inside network namespace $ns)"
$vmc selftest-guest -o specs/guest/selftest.elf
$vmc compile specs/selftest.kdl -o "$out/selftest.abi"
$vmc check "$out/selftest.abi"
# The guest's side of the link: a TAP in the namespace, up and addressed as the guest
# expects (10.0.2.2, MAC 02:00:00:00:00:01), so its UDP flow arrives.
ip netns add "$ns"
ip -n "$ns" tuntap add dev vmc-st0 mode tap vnet_hdr
ip -n "$ns" link set vmc-st0 address 02:00:00:00:00:01 up
ip -n "$ns" addr add 10.0.2.2/24 dev vmc-st0
ip netns exec "$ns" "$vmc" run "$out/selftest.abi" --stats
echo "== frames the host received from the guest on vmc-st0: $(ip netns exec "$ns" cat /sys/class/net/vmc-st0/statistics/rx_packets)"
