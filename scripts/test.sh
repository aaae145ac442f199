#!/usr/bin/env bash
# Runs every test of the project, installing what the tests need first.
# Tests that need root, /dev/kvm or /dev/net/tun skip with a message when run by hand
# without them; with CI=true they fail instead.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
# Python with venv, for kubernetes-validate (below).
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        echo "installing: ${need_apt[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
    else
        echo "missing ${need_apt[*]} (install as root); tests that need them will say so" >&2
    fi
fi

# QEMU 10, the outside reference for the lowering tests.
scripts/install-qemu.sh || echo "QEMU 10 is not installed: the QEMU tests will say so (and fail under CI=true)" >&2

# kubernetes-validate, which checks the manifests in deploy/kubernetes/ against
# Kubernetes' published JSON schemas (it carries them: no network when it runs), in a
# virtual environment under target/ (tests/kubernetes.rs finds it there).
kubernetes_validate=target/kubernetes-validate
if ! "$kubernetes_validate/bin/kubernetes-validate" --version >/dev/null 2>&1; then
    echo "installing kubernetes-validate into $kubernetes_validate"
    { python3 -m venv "$kubernetes_validate" &&
        "$kubernetes_validate/bin/pip" install --quiet --disable-pip-version-check 'kubernetes-validate==1.37.0'; } ||
        echo "kubernetes-validate is not installed: the manifest test will say so (and fail under CI=true)" >&2
fi

# Every crate at its pinned version and checksum (Cargo.pins; see scripts/lock).
scripts/lock --check

# The Linux test guest (tests/linux_guest.rs): built once, then cached; the tests run the
# same script and find it cached.
scripts/linux-guest >/dev/null || echo "the Linux guest could not be built: tests/linux_guest.rs will say so" >&2

# Formatting and lints are part of the tests.
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked --quiet -- -D warnings

# A short fuzz pass over every target (see README, "Fuzzing"): fails on any crash.
timeout -k 30 1800 scripts/fuzz all 20

# insta: never write snapshots in a test run; a mismatch fails.
export INSTA_UPDATE=no
cargo build --workspace --all-targets --locked
cargo test --workspace --locked
