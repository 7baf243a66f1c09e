"""Build the offline installer bundle for one target: the agent's wheel, every
dependency as a wheel for that platform and CPython 3.11, the systemd unit, the
install script and a checksum manifest the script verifies.

    python bundle/build.py --arch aarch64 [--out dist]    (make bundle ARCH=aarch64)

Building needs the package index; installing needs no network (install.sh).
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# manylinux tags a Debian bookworm (glibc 2.36) or Raspberry Pi OS can run.
PLATFORMS = {arch: [f"manylinux_2_{v}_{arch}" for v in (28, 27, 17)] + [f"manylinux2014_{arch}"]
             for arch in ("x86_64", "aarch64")}


def build(arch: str, out: Path) -> Path:
    work = Path(tempfile.mkdtemp(prefix="edge-agent-bundle-"))
    try:
        wheels = work / "wheels"
        pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
        subprocess.run([*pip, "wheel", "--no-deps", "-w", str(wheels), str(REPO)], check=True)
        project = next(wheels.glob("edge_agent-*.whl"))
        version = project.name.split("-")[1]
        platforms = [arg for p in PLATFORMS[arch] for arg in ("--platform", p)]
        subprocess.run([*pip, "download", "--only-binary=:all:", *platforms, "--python-version",
                        "3.11", "--implementation", "cp", "-d", str(wheels), str(project)],
                       check=True)
        name = f"edge-agent-{version}-{arch}"
        stage = work / name
        stage.mkdir()
        shutil.move(str(wheels), stage / "wheels")
        shutil.copy(REPO / "bundle" / "install.sh", stage / "install.sh")
        (stage / "install.sh").chmod(0o755)
        shutil.copy(REPO / "systemd" / "edge-agent.service", stage / "edge-agent.service")
        files = sorted(p for p in stage.rglob("*") if p.is_file())
        (stage / "SHA256SUMS").write_text("".join(
            f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(stage)}\n"
            for p in files))
        out.mkdir(parents=True, exist_ok=True)
        bundle = out / f"{name}.tar.gz"
        with tarfile.open(bundle, "w:gz") as tar:
            tar.add(stage, arcname=name)
        return bundle
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=sorted(PLATFORMS), required=True)
    parser.add_argument("--out", type=Path, default=REPO / "dist")
    args = parser.parse_args()
    bundle = build(args.arch, args.out)
    print(f"{bundle} ({bundle.stat().st_size / 2**20:.1f} MB)")


if __name__ == "__main__":
    main()
