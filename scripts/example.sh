#!/usr/bin/env bash
# The main job: compile an example spec for two host platforms and show what differs.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
vmc=target/release/vmc
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

echo "== vmc compile specs/web.kdl for linux-5.15 and linux-6.9"
$vmc compile specs/web.kdl --platform linux-5.15 -o "$out/web-5.15.abi"
$vmc compile specs/web.kdl --platform linux-6.9 -o "$out/web-6.9.abi"
echo
echo "== vmc diff (guest-visible differences; exit status 1 means they differ)"
$vmc diff "$out/web-5.15.abi" "$out/web-6.9.abi" || test $? -eq 1
echo
echo "== vmc explain host-uso"
$vmc explain "$out/web-6.9.abi" host-uso
