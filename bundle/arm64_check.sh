#!/bin/sh
# make arm64-check: the aarch64 bundle installed and run on Debian bookworm arm64, in a
# root filesystem built by debootstrap and run under qemu-user-static (as root).
#
# 1. the binfmt handler for aarch64 is registered here (a CI machine has no systemd);
# 2. debootstrap builds the root filesystem from this machine's apt mirror;
# 3. the aarch64 bundle is installed inside it in a network namespace without any
#    interface up, after a connection attempt there has failed;
# 4. inside it: the first start finds every kernel in the numba cache that the install
#    filled, every example config validates, the kernel/twin equality tests and the
#    SIGKILL-and-restart test pass, a short demo delivers every sample, and
#    bench/startup_memory.py times the start to the first published sample.
# The figures (bundle and installed size, times) are printed as it goes.
set -eu

repo=$(cd "$(dirname "$0")/.." && pwd)
work=${ARM64_WORK:-/tmp/edge-agent-arm64}
rootfs=$work/rootfs
python=${PYTHON:-$repo/.venv/bin/python}
mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
mirror=${mirror:-http://deb.debian.org/debian}

say() { echo "arm64-check: $*"; }
since() { echo $(( $(date +%s) - $1 )); }

missing=""
command -v debootstrap >/dev/null || missing="$missing debootstrap"
command -v qemu-aarch64-static >/dev/null || missing="$missing qemu-user-static"
if [ -n "$missing" ]; then
    apt-get update || say "apt-get update failed; trying the cached package lists"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing
fi
mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] \
    || cat /usr/lib/binfmt.d/qemu-aarch64.conf > /proc/sys/fs/binfmt_misc/register

mkdir -p "$work"
if [ ! -x "$rootfs/usr/bin/python3" ]; then
    t=$(date +%s)
    rm -rf "$rootfs"
    debootstrap --arch=arm64 --variant=minbase \
        --include=python3,python3-venv,mosquitto,socat,procps bookworm "$rootfs" "$mirror" \
        > "$work/debootstrap.log"
    say "debootstrap of bookworm arm64: $(since "$t") s"
fi

t=$(date +%s)
bundle=$("$python" "$repo/bundle/build.py" --arch aarch64 --out "$work/dist" | cut -d' ' -f1)
say "bundle $(basename "$bundle"): $(du -m "$bundle" | cut -f1) MB, built in $(since "$t") s"
# What the tests need beyond the agent's own dependencies, as aarch64 wheels.
"$python" -m pip --disable-pip-version-check --quiet download --only-binary=:all: \
    --platform manylinux_2_28_aarch64 --platform manylinux_2_17_aarch64 \
    --platform manylinux2014_aarch64 --python-version 3.11 --implementation cp \
    -d "$work/test-wheels" pytest pytest-timeout hypothesis cryptography

rm -rf "$rootfs/check" "$rootfs/stage"
mkdir -p "$rootfs/check"
tar xzf "$bundle" -C "$rootfs/check"
cp -r "$work/test-wheels" "$repo/tests" "$repo/bench" "$repo/config" "$repo/pyproject.toml" \
    "$rootfs/check/"
# Mounted afresh: a mount left behind by an interrupted run may not be the one we need.
umount -R "$rootfs/dev" 2>/dev/null || true
umount "$rootfs/proc" 2>/dev/null || true
mount -t proc proc "$rootfs/proc"
mount --rbind /dev "$rootfs/dev"  # with /dev/pts: socat makes the demo's serial ptys
mount --make-rslave "$rootfs/dev"
trap 'umount -R "$rootfs/dev" 2>/dev/null; umount "$rootfs/proc" 2>/dev/null; true' EXIT
inside() { chroot "$rootfs" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    NUMBA_CACHE_DIR=/stage/var/cache/edge-agent/numba "$@"; }
inside test -r /proc/self/statm || { say "/proc is not mounted in the root filesystem"; exit 1; }
[ "$(inside uname -m)" = aarch64 ] || { say "the root filesystem does not run as aarch64"; exit 1; }

t=$(date +%s)
unshare -n chroot "$rootfs" /usr/bin/env -i PATH=/usr/bin:/bin sh -c '
    python3 -c "
import socket
try:
    socket.create_connection((\"151.101.0.223\", 443), timeout=3)
except OSError:
    pass
else:
    raise SystemExit(\"the network is reachable\")
" && mkdir -p /stage && sh /check/edge-agent-*/install.sh --root /stage'
say "offline install under emulation: $(since "$t") s, $(du -sm "$rootfs/stage/opt" | cut -f1) MB"

venv=/stage/opt/edge-agent/venv
# The interpreter the unit's edge-agent runs with (pip wrote it into the script): the
# probe and the tests import the agent from where the service does, and so use its cache.
agent_python=$(head -1 "$rootfs$venv/bin/edge-agent" | cut -c3-)
probe="import json; from edge_agent import health; from edge_agent.alarms import engine
engine._warm_up(); print(json.dumps(health.numba_cache()))"
cached=$(inside sh -c "cd / && $agent_python -c '$probe'")
case $cached in
    *'"warm": true'*) say "the first start loads every kernel from the cache install.sh filled" ;;
    *) say "the first start compiles its kernels: the installed cache is not used ($cached)"
       exit 1 ;;
esac

for example in "$rootfs"/check/config/*.toml; do
    case $example in *skeleton*) continue ;; esac
    inside "$venv/bin/edge-agent" config validate "/check/config/$(basename "$example")" >/dev/null
done
say "every example config validates"

inside "$venv/bin/pip" --disable-pip-version-check --quiet install --no-index \
    --find-links /check/test-wheels pytest pytest-timeout hypothesis cryptography
t=$(date +%s)
inside sh -c "cd /check && $agent_python -m pytest -q -p no:cacheprovider -o addopts= \
    tests/unit/test_core.py tests/unit/test_rules.py tests/unit/test_jit_fallback.py \
    tests/integration/test_pipeline.py::test_kill_9_loses_nothing_committed"
say "kernel/twin equality and SIGKILL-and-restart tests: passed in $(since "$t") s"

t=$(date +%s)
inside sh -c "cd /check && $venv/bin/edge-agent demo --seconds 20" > "$work/demo.log"
grep -q "every polled sample reached the broker" "$work/demo.log" \
    || { cat "$work/demo.log"; say "the demo lost samples"; exit 1; }
say "demo under emulation: every sample delivered ($(since "$t") s)"

inside sh -c "cd /check && $agent_python -m bench.startup_memory --runs 3 --hold 15 \
    --timeout 300" > "$work/startup.log"
say "start to first published sample and memory under emulation (bench/startup_memory.py):"
grep -v '^{' "$work/startup.log" | sed 's/^/    /'
