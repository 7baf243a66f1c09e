"""Jobs: a whole day's work on a site as a timeline of steps, replayed through the real
daemon by the tests (tests/integration/test_jobs.py) on a clock they move forward.

A job file (simulators/jobs/*.toml) gives the site's additions to the test site (its
spaces, relays and actions), then the steps in order. Each step happens ``at_min``
minutes after the job starts and may set readings of the gas detector, stop or start
the agent, and send one command, through the CLI or the platform; then it names what
must follow: the exit code or the reply, the events that reach the platform
("class:transition" or "class:transition:key"), the state of the relay outputs.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

JOBS = Path(__file__).with_name("jobs")


@dataclass(frozen=True)
class Command:
    name: str  # the platform's command name: entry-test, ack-alarm, ...
    via: Literal["cli", "platform"]
    fields: dict[str, Any]  # the command's fields: space, key, by, note, ...


@dataclass(frozen=True)
class Step:
    at_min: float
    say: str
    set: dict[str, float] = field(default_factory=dict)  # detector value -> reading
    agent: Literal["kill", "start"] | None = None
    command: Command | None = None
    exit: int = 0  # a CLI command's exit code
    reply: dict[str, Any] = field(default_factory=dict)  # a platform reply: ok, code, result
    events: list[str] = field(default_factory=list)
    outputs: dict[str, int] = field(default_factory=dict)  # relay output -> 0 or 1


@dataclass(frozen=True)
class Job:
    name: str
    description: str
    site: str  # TOML appended to the test site
    step_min: float  # the clock moves at most this far between two polls
    steps: list[Step]


def load_job(name: str) -> Job:
    document = tomllib.loads((JOBS / f"{name}.toml").read_text(encoding="utf-8"))
    steps = []
    for table in document.pop("steps"):
        command = table.pop("command", None)
        if command is not None:
            command = Command(command.pop("name"), command.pop("via"), command)
        steps.append(Step(**table, command=command))
    times = [s.at_min for s in steps]
    if times != sorted(times):
        raise ValueError(f"{name}: steps out of order: {times}")
    return Job(name, document["description"], document["site"], document.get("step_min", 20),
               steps)
