#!/bin/sh
# Install or upgrade edge-agent from this bundle, with no network access.
#
#   sudo ./install.sh               install, or upgrade in place (config and buffer kept)
#   ./install.sh --root DIR         stage everything under DIR (an image build, a test):
#                                   no user is created, systemctl is not run
#   --python PATH                   the Python 3.11 to build the virtualenv from
#                                   (default Debian's /usr/bin/python3)
#
# Each version gets a virtualenv of its own, /opt/edge-agent/versions/<version>, and
# /opt/edge-agent/venv points at the one in use (the unit runs venv/bin/edge-agent).
# The link moves to a new version only once it is installed, its kernels compiled into
# the numba cache and it runs; if a step after that fails, the link goes back to the
# previous version. The config (/etc/edge-agent) and the buffer (/var/lib/edge-agent)
# are never touched.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=""
python=/usr/bin/python3
while [ $# -gt 0 ]; do
    case $1 in
        --root) root=$(cd "$2" && pwd); shift 2 ;;
        --python) python=$2; shift 2 ;;
        *) echo "unknown option $1 (options: --root DIR, --python PATH)" >&2; exit 2 ;;
    esac
done

cd "$here"
if ! sha256sum --check --quiet --strict SHA256SUMS; then
    echo "error: the bundle is damaged or was changed (a checksum above does not match);" \
         "copy it again and compare its sha256 with the one published" >&2
    exit 1
fi

wheel=$(ls "$here"/wheels/edge_agent-*.whl)
version=$(basename "$wheel" | cut -d- -f2)
prefix="$root/opt/edge-agent"
target="$prefix/versions/$version"
cache="$root/var/cache/edge-agent/numba"
previous=$(readlink "$prefix/venv" 2>/dev/null || true)

switch() {  # point venv at versions/$1, atomically
    ln -sfn "$1" "$prefix/venv.switch"
    mv -T "$prefix/venv.switch" "$prefix/venv"
}

rollback() {
    if [ -n "$previous" ]; then
        switch "$previous"
        echo "error: $1; back to $previous" >&2
    else
        echo "error: $1" >&2
    fi
    exit 1
}

if [ "$previous" = "versions/$version" ]; then
    echo "edge-agent $version is the version in use: nothing to install"
    exit 0
fi
started=$(date +%s)
mkdir -p "$prefix/versions" "$cache"
rm -rf "$target"
"$python" -m venv "$target"
"$target/bin/pip" install --quiet --no-index --find-links "$here/wheels" "$wheel"
# Compiled now, by the interpreter this version's edge-agent runs with (pip writes it
# into the script: versions/<version>/bin/python, also when the unit starts it through
# the venv link), so the first start is fast. numba keys its cache on the path the
# sources were imported from, so each version has cache entries of its own. A
# read-only install would otherwise make every start compile (FIELD_NOTES.md §8).
NUMBA_CACHE_DIR="$cache" "$target/bin/python" -c \
    "from edge_agent.alarms import engine; engine._warm_up()"
"$target/bin/edge-agent" version >/dev/null

switch "versions/$version"
if [ -n "$root" ]; then
    "$prefix/venv/bin/edge-agent" install --root "$root" >/dev/null \
        || rollback "edge-agent install failed"
else
    "$prefix/venv/bin/edge-agent" install || rollback "edge-agent install failed"
    chown -R edge-agent:edge-agent "$cache"
fi
# An upgrade must take the config that is there.
if [ -n "$previous" ] && [ -f "$root/etc/edge-agent/site.toml" ]; then
    "$prefix/venv/bin/edge-agent" config validate "$root/etc/edge-agent/site.toml" >/dev/null \
        || rollback "the new version refuses /etc/edge-agent/site.toml"
fi
if [ -z "$root" ] && [ -n "$previous" ] && systemctl is-active --quiet edge-agent; then
    systemctl restart edge-agent || rollback "the service did not restart"
fi
echo "edge-agent $version installed in $(( $(date +%s) - started )) s" \
     "($(du -sm "$target" | cut -f1) MB; numba cache $(du -sm "$cache" | cut -f1) MB)"
