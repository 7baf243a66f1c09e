"""The offline installer bundle, built for this machine's architecture and installed
with no network at all (a network namespace without interfaces), staged under a
temporary root; a damaged bundle is refused, and a failed upgrade rolls back."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.support import REPO

ARCH = platform.machine()
NO_NETWORK = ("import socket\n"
              "try:\n"
              "    socket.create_connection(('151.101.0.223', 443), timeout=3)\n"
              "except OSError:\n"
              "    pass\n"
              "else:\n"
              "    raise SystemExit('the network is reachable')\n")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundle, built once, unpacked into a folder."""
    out = tmp_path_factory.mktemp("dist")
    built = subprocess.run([sys.executable, str(REPO / "bundle" / "build.py"), "--arch", ARCH,
                            "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr
    archive = next(out.glob(f"edge-agent-*-{ARCH}.tar.gz"))
    with tarfile.open(archive) as tar:
        tar.extractall(out, filter="data")
    return next(p for p in out.iterdir() if p.is_dir())


def install(bundle: Path, root: Path) -> subprocess.CompletedProcess[str]:
    """install.sh in a network namespace of its own, which has no interface up."""
    script = f"python3 -c \"{NO_NETWORK}\" && sh {bundle / 'install.sh'} --root {root} " \
             f"--python {sys._base_executable}"
    return subprocess.run(["unshare", "-n", "sh", "-c", script], capture_output=True,
                          text=True, timeout=900)


def test_offline_install_then_a_failed_upgrade_rolls_back(
        bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "root"
    root.mkdir()
    first = install(bundle, root)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "installed in" in first.stdout
    archive = next(bundle.parent.glob("*.tar.gz"))
    with capsys.disabled():  # the figures in CI's output
        print(f"\n{archive.name}: {archive.stat().st_size / 2**20:.1f} MB; offline install: "
              f"{first.stdout.strip().splitlines()[-1]}")
    agent = root / "opt" / "edge-agent" / "venv" / "bin" / "edge-agent"
    for example in sorted((REPO / "config").glob("*.toml")):
        checked = subprocess.run([str(agent), "config", "validate", str(example)],
                                 capture_output=True, text=True)
        assert checked.returncode == 0 or "skeleton" in example.name, checked.stderr
    assert (root / "etc" / "systemd" / "system" / "edge-agent.service").is_file()
    # The unit runs the agent through the link that upgrades and rollbacks move, and its
    # first start loads every kernel from the cache that install.sh filled.
    unit = (root / "etc" / "systemd" / "system" / "edge-agent.service").read_text()
    assert f"ExecStart={agent} run " in unit
    python = agent.read_text().splitlines()[0].removeprefix("#!")  # what pip wrote there
    started = subprocess.run(
        [python, "-c", "import json; from edge_agent import health; "
         "from edge_agent.alarms import engine; engine._warm_up(); "
         "print(json.dumps(health.numba_cache()))"],
        capture_output=True, text=True, cwd=tmp_path,  # not the repo: the installed package
        env={**os.environ, "NUMBA_CACHE_DIR": str(root / "var" / "cache" / "edge-agent" /
                                                  "numba")})
    assert started.returncode == 0, started.stderr
    assert json.loads(started.stdout)["warm"], started.stdout  # loaded, none compiled

    # An upgrade that the config refuses goes back to the version before it. The
    # version in use is moved aside so the same bundle counts as a newer one.
    versions = root / "opt" / "edge-agent" / "versions"
    (versions / bundle.name.split("-")[2]).rename(versions / "0.0.0")
    (root / "opt" / "edge-agent" / "venv").unlink()
    (root / "opt" / "edge-agent" / "venv").symlink_to("versions/0.0.0")
    (root / "etc" / "edge-agent" / "site.toml").write_text("gateway_id = 'broken'\n")
    upgrade = install(bundle, root)
    assert upgrade.returncode == 1
    assert "the new version refuses" in upgrade.stderr
    assert "back to versions/0.0.0" in upgrade.stderr
    assert (root / "opt" / "edge-agent" / "venv").readlink() == Path("versions/0.0.0")
    assert f"ExecStart={agent} run " in (root / "etc" / "systemd" / "system" /
                                         "edge-agent.service").read_text()


def test_a_damaged_bundle_is_refused_before_anything_changes(bundle: Path,
                                                             tmp_path: Path) -> None:
    damaged = tmp_path / "bundle"
    subprocess.run(["cp", "-a", str(bundle), str(damaged)], check=True)
    (damaged / "edge-agent.service").write_text("[Service]\nExecStart=/bin/sh -c 'evil'\n")
    root = tmp_path / "root"
    root.mkdir()
    refused = install(damaged, root)
    assert refused.returncode == 1
    assert "the bundle is damaged or was changed" in refused.stderr
    assert list(root.iterdir()) == []
