"""`edge-agent detect`: a recorded series through the agent's own kernels, offline."""

from __future__ import annotations

import csv
import datetime
import math
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.support import REPO


def detect(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_agent", "detect", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=False)


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def co_series(path: Path) -> Path:
    """Clean air, then 60 ppm CO from 08:10 to 08:20, 20 ppm to 08:21:40, then clean."""
    start = datetime.datetime(2026, 11, 26, 8, 0, 0)
    with path.open("w") as f:
        f.write("time,co\n")
        for k in range(1800):
            co = 60 if 600 <= k < 1200 else 20 if 1200 <= k < 1300 else 2
            f.write(f"{start + datetime.timedelta(seconds=k):%Y-%m-%d %H:%M:%S},{co}\n")
    return path


def machine_series(path: Path) -> Path:
    """A machine temperature read every 5 min, as in NAB's realKnownCause files: a daily
    cycle with noise, a clock that steps back an hour at row 2500, a failure (the
    temperature falls to 20) at rows 5000-5099."""
    rng = np.random.default_rng(3)
    t = datetime.datetime(2013, 12, 2, 21, 15)
    with path.open("w") as f:
        f.write("timestamp,value\n")
        for k in range(6000):
            t += datetime.timedelta(minutes=-60 if k == 2500 else 5)
            value = 20.0 if 5000 <= k < 5100 else (
                80.0 + 5.0 * math.sin(2 * math.pi * k / 288) + rng.normal(0.0, 0.5))
            f.write(f"{t:%Y-%m-%d %H:%M:%S},{value:.4f}\n")
    return path


def test_detect_without_config_scores_every_row(tmp_path: Path) -> None:
    """A series with a clock step back through the anomaly detector alone: every row
    scored, the failure flagged as it starts."""
    source, out = machine_series(tmp_path / "machine.csv"), tmp_path / "out.csv"
    result = detect(str(source), "-o", str(out))
    assert 0 == result.returncode, result.stderr
    written = rows(out)
    assert 6000 == len(written)
    assert ["time", "value", "value.score", "value.anomaly"] == list(written[0])
    assert all(0.0 <= float(r["value.score"]) <= 1.0 for r in written)
    flagged = {k for k, r in enumerate(written) if r["value.anomaly"] == "1"}
    assert flagged & set(range(5000, 5010))  # the failure, at once


def test_detect_with_a_site_applies_the_channel_rules(tmp_path: Path) -> None:
    """The confined-space rules of top.co: limits 17.2/34.4 ppm and the CO STEL."""
    out = tmp_path / "out.csv"
    result = detect(str(co_series(tmp_path / "co.csv")), "--config",
                    "config/confined_space.toml", "--channel", "top.co", "-o", str(out))
    assert 0 == result.returncode, result.stderr
    events = [(r["time"], r["events"]) for r in rows(out) if r["events"]]
    assert [("2026-11-26 08:10:00", "top.co:above:1 raised; top.co:above:2 raised"),
            ("2026-11-26 08:17:00", "top.co:stel raised"),
            ("2026-11-26 08:20:00", "top.co:above:2 returned_to_normal"),
            ("2026-11-26 08:21:40", "top.co:above:1 returned_to_normal")] == events
    last = rows(out)[-1]
    assert ("2", "") == (last["top.co.level"], last["top.co.faults"])  # the STEL holds


def test_detect_refuses_bad_input_with_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("time,co\n2026-11-26 08:00:00,2\n2026-11-26 08:00:01,lots\n")
    result = detect(str(bad), "-o", str(tmp_path / "o.csv"))
    assert (1, f"{bad}:3: co = 'lots' is not a number") == (result.returncode,
                                                          result.stderr.strip())
    result = detect(str(co_series(tmp_path / "co.csv")), "--config",
                    "config/confined_space.toml", "--channel", "top.c0", "-o",
                    str(tmp_path / "o.csv"))
    assert 1 == result.returncode
    assert "--channel top.c0: no such channel" in result.stderr
    assert "Traceback" not in result.stderr
