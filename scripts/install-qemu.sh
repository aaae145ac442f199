#!/usr/bin/env bash
# Installs QEMU 10 (Debian's qemu-system-x86 from <codename>-backports), the outside
# reference the QEMU tests compare vmc's ABI with. Does nothing when
# `qemu-system-x86_64 --version` already reports 10 or newer.
#
# The backports suite is added from the mirror this machine already uses (the `URIs:` of
# a deb822 file in /etc/apt/sources.list.d/, or a classic `deb` line), so no archive host
# is named here. Idempotent: run it as often as you like. Needs root to install.
set -euo pipefail

want_major=10

installed_major() {
    command -v qemu-system-x86_64 >/dev/null 2>&1 || return 1
    # "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-1~bpo12+1)"
    qemu-system-x86_64 --version | sed -n '1s/.*version \([0-9][0-9]*\)\..*/\1/p'
}

major=$(installed_major || true)
if [ -n "$major" ] && [ "$major" -ge "$want_major" ]; then
    echo "install-qemu: $(qemu-system-x86_64 --version | head -n1): nothing to do"
    exit 0
fi
echo "install-qemu: qemu-system-x86_64 ${major:+is version $major, }needs QEMU >= $want_major"

if [ "$(id -u)" != 0 ]; then
    echo "install-qemu: run as root to install qemu-system-x86 from backports" >&2
    exit 1
fi

# shellcheck disable=SC1091
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
if [ -z "$codename" ]; then
    echo "install-qemu: /etc/os-release has no VERSION_CODENAME; cannot pick a backports suite" >&2
    exit 1
fi
suite="$codename-backports"
list_dir=/etc/apt/sources.list.d
ours="$list_dir/vmc-backports.sources"

# The mirror of the main archive: the URI of the first entry that carries the plain
# release suite (`bookworm`, not `bookworm-security`).
find_mirror() {
    local f
    # deb822: a stanza's `URIs:` and `Suites:` lines.
    for f in "$list_dir"/*.sources; do
        [ -e "$f" ] && [ "$f" != "$ours" ] || continue
        awk -v want="$codename" '
            function flush() {
                if (uri != "") { n = split(suites, s, /[ \t]+/); for (i = 1; i <= n; i++) if (s[i] == want) { print uri; found = 1; exit } }
                uri = ""; suites = ""
            }
            /^[ \t]*$/ { flush(); next }
            /^URIs:/ { sub(/^URIs:[ \t]*/, ""); split($0, u, /[ \t]+/); uri = u[1] }
            /^Suites:/ { sub(/^Suites:[ \t]*/, ""); suites = $0 }
            END { if (!found) flush() }
        ' "$f"
    done
    # classic one-line format: `deb [options] URI SUITE COMPONENT...`
    for f in /etc/apt/sources.list "$list_dir"/*.list; do
        [ -e "$f" ] || continue
        awk -v want="$codename" '
            $1 == "deb" {
                i = 2
                if ($i ~ /^\[/) { while ($i !~ /\]$/ && i < NF) i++; i++ }
                if ($(i + 1) == want) { print $i; exit }
            }
        ' "$f"
    done
}

if grep -rqsE "(^|[ \t])$suite([ \t]|$)" /etc/apt/sources.list "$list_dir"/*.sources "$list_dir"/*.list 2>/dev/null; then
    echo "install-qemu: apt already has $suite"
else
    mirror=$(find_mirror | head -n1)
    if [ -z "$mirror" ]; then
        echo "install-qemu: no apt source for suite $codename found in /etc/apt; cannot derive a backports source" >&2
        exit 1
    fi
    echo "install-qemu: adding $suite from the configured mirror ($ours)"
    keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    {
        echo "# Added by vmc scripts/install-qemu.sh: QEMU 10 for the QEMU reference tests."
        echo "Types: deb"
        echo "URIs: $mirror"
        echo "Suites: $suite"
        echo "Components: main"
        if [ -e "$keyring" ]; then echo "Signed-By: $keyring"; fi
    } >"$ours"
fi

echo "install-qemu: apt-get update"
apt-get update -qq
echo "install-qemu: apt-get install -t $suite qemu-system-x86"
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends -t "$suite" qemu-system-x86

major=$(installed_major || true)
if [ -z "$major" ] || [ "$major" -lt "$want_major" ]; then
    echo "install-qemu: installed, but qemu-system-x86_64 reports version '${major:-none}', not >= $want_major" >&2
    exit 1
fi
echo "install-qemu: $(qemu-system-x86_64 --version | head -n1)"
