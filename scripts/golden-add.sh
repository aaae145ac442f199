#!/usr/bin/env bash
# Adds golden documents (tests/golden/) for spec x machine x platform combinations that
# have none yet, with the vmc built from this checkout. Existing files are never touched:
# a released machine type's documents are frozen.
#
#     scripts/golden-add.sh microvm-1.2     # pin every example spec to a new machine type
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: $0 MACHINE-TYPE..." >&2; exit 2; }
scripts/lock
cargo build --quiet --locked
vmc="$PWD/target/debug/vmc"
golden="$PWD/tests/golden"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The documents name /srv/specs in their host paths, whatever the checkout's location.
mkdir -p /srv/specs/plat
cp "$golden"/platforms/*.kdl /srv/specs/plat/
for machine in "$@"; do
    for spec in specs/*.kdl; do
        stem=$(basename "$spec" .kdl)
        pinned="$golden/specs/$stem@$machine.kdl"
        if [ ! -e "$pinned" ]; then
            if grep -qE '^\s*machine ' "$spec"; then
                sed -E "s/^(\s*)machine \"[^\"]*\"/\1machine \"$machine\"/" "$spec" >"$pinned"
            else
                sed -E "/^vm /a\\    machine \"$machine\"" "$spec" >"$pinned"
            fi
        fi
        cp "$pinned" /srv/specs/
        for platform in $("$vmc" platforms --platform-path /srv/specs/plat | awk '{print $1}'); do
            out="$golden/documents/$stem@$machine@$platform.abi"
            [ -e "$out" ] && continue
            if (cd /srv/specs && "$vmc" compile "$stem@$machine.kdl" --platform-path plat --platform "$platform" -o "$out" >/dev/null 2>"$work/err"); then
                echo "$stem@$machine@$platform.abi $("$vmc" hash "$out")" >>"$golden/hashes.txt"
                echo "added $out"
            else
                echo "skipped $stem@$machine@$platform: $(head -1 "$work/err")"
            fi
        done
    done
done
