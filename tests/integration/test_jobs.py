"""Whole jobs (simulators/jobs/) replayed through the real daemon: simulated devices
over Modbus, a real mosquitto, the CLI and the platform's commands, on a clock that
the test moves forward (EDGE_AGENT_CLOCK_SHIFT_FILE), so the 30-minute, 60-minute,
2-hour and 24-hour rules run in seconds. Every step's events, replies and relay
outputs are asserted, and the timeline as it ran is printed (pytest -s)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from edge_agent.demo.broker import Mosquitto
from edge_agent.demo.platform import PlatformSubscriber
from simulators import ModbusTcpSimulator, SimulatedDevice
from simulators.job import Command, Job, Step, load_job
from tests.integration.test_cli import edge_agent
from tests.support import SITE, AgentProcess, CommandClient, ShiftedClock, wait_until

MINUTE_MS = 60_000


class JobRun:
    """One job, step by step, against one agent process (killed and restarted as the
    job says) and the platform's view of what it published.
    """

    def __init__(self, job: Job, tmp_path: Path, field: ModbusTcpSimulator, broker: Mosquitto,
                 platform: PlatformSubscriber, detector: SimulatedDevice,
                 relays: SimulatedDevice) -> None:
        self.job, self.detector, self.relays, self.platform = job, detector, relays, platform
        self.config = tmp_path / "site.toml"
        self.config.write_text(SITE.format(modbus_port=field.port, broker_port=broker.port,
                                           buffer=tmp_path / "buffer.db", interval=0.2)
                               + job.site)
        self.clock = ShiftedClock(tmp_path / "clock")
        self.view = platform.gateways["gw-test"]
        self.commander = CommandClient(broker.port)
        self.agent: AgentProcess | None = None
        self.minute = 0.0
        self.start_ms = 0
        self.timeline: list[str] = []

    def run(self) -> None:
        try:
            self._start_agent()
            self.start_ms = self.clock.now_ms()
            for step in self.job.steps:
                seen = len(self.view.events), len(self.view.entries)  # on the way included
                self._advance_to(step.at_min)
                self._step(step, seen)
        finally:
            self.commander.close()
            if self.agent is not None:
                self.agent.kill()

    # --- time and the agent ---------------------------------------------------

    def _advance_to(self, minute: float) -> None:
        """Move the clock in steps of at most ``step_min``, with a poll after each, so
        the space stays watched (one jump if the agent is down)."""
        while self.minute < minute:
            dt = minute - self.minute if self.agent is None else min(
                self.job.step_min, minute - self.minute)
            self.clock.advance(dt * 60)
            self.minute += dt
            if self.agent is not None:
                self._polled()

    def _polled(self) -> None:
        since = self.clock.now_ms()
        assert self.platform.wait_for(lambda: self.view.latest.get("gas1.o2", {}).get(
            "ts", 0) >= since, 20), f"no poll after minute {self.minute}: {self._log()}"

    def _start_agent(self) -> None:
        before = self.view.status.get("started")
        self.agent = AgentProcess(self.config, env=self.clock.env).start()
        assert self.platform.wait_for(lambda: self.view.status.get("state") == "online"
                                      and self.view.status["started"] != before, 30), self._log()
        self._polled()

    def _log(self) -> str:
        return self.agent.log[-4000:] if self.agent else ""

    # --- one step ---------------------------------------------------------------

    def _step(self, step: Step, seen: tuple[int, int]) -> None:
        if step.agent == "kill":
            assert self.agent is not None
            self.agent.kill()
            self.agent = None
        elif step.agent == "start":
            self._start_agent()
        for name, value in step.set.items():
            self.detector.pin(name, value)
        for name, value in step.set.items():
            assert self.platform.wait_for(lambda n=name, v=value: self.view.latest[
                f"gas1.{n}"]["v"] == v, 10), f"gas1.{name} never read {value}"
        if step.command is not None:
            self._command(step)
        new = self._expect_events(step, seen)
        for output, value in step.outputs.items():
            wait_until(lambda o=output, v=value: self.relays.outputs.get(o, 0) == v, 10,
                       f"{output} = {value} at minute {step.at_min:g} ({step.say})")
        self._note(step, new)

    def _command(self, step: Step) -> None:
        command = step.command
        assert command is not None
        if command.via == "cli":
            result = edge_agent(*_cli_args(command), "-c", str(self.config))
            assert step.exit == result.returncode, (step.say, result.stdout, result.stderr)
            return
        reply = self.commander.call(command.name, **command.fields)
        for key, wanted in step.reply.items():
            got = (reply["ok"] if key == "ok" else reply["error"]["code"] if key == "code"
                   else reply["result"][key])
            assert wanted == got, (step.say, reply)

    def _expect_events(self, step: Step, seen: tuple[int, int]) -> list[dict]:
        def new() -> list[dict]:
            return self.view.events[seen[0]:] + self.view.entries[seen[1]:]

        def missing() -> list[str]:
            names = [_name(e) for e in new()]
            out = []
            for wanted in step.events:
                match = next((n for n in names if n == wanted or n.startswith(wanted + ":")),
                             None)
                if match is None:
                    out.append(wanted)
                else:
                    names.remove(match)
            return out

        assert self.platform.wait_for(lambda: not missing(), 15), (
            f"minute {step.at_min:g} ({step.say}): missing {missing()}; got "
            f"{[_name(e) for e in new()]}\n{self._log()}")
        return new()

    def _note(self, step: Step, events: list[dict]) -> None:
        self.timeline.append(f"{_clock(step.at_min * MINUTE_MS)}  {step.say}")
        for event in sorted(events, key=lambda e: e["ts"]):
            self.timeline.append(f"    {_clock(event['ts'] - self.start_ms)}  {_name(event)}"
                                 f"{_detail(event)}")


def _cli_args(command: Command) -> list[str]:
    f = dict(command.fields)
    by = ["--by", f.pop("by")]
    if command.name.startswith("entry-"):
        return ["entry", command.name.removeprefix("entry-"), f.pop("space"), *by]
    verb = command.name.removesuffix("-alarm")
    extra = [arg for k, v in f.items() if k != "key" for arg in (f"--{k}", v)]
    return ["alarms", verb, f["key"], *by, *extra]


def _name(event: dict) -> str:
    return f"{event['class']}:{event['transition']}:{event['key']}"


def _detail(event: dict) -> str:
    keys = ("by", "passed", "escalation", "state", "cause")
    shown = {k: event[k] for k in keys if event.get(k) is not None}
    return f"  {json.dumps(shown, ensure_ascii=False)}" if shown else ""


def _clock(ms: int) -> str:
    minutes = ms / MINUTE_MS
    return f"T+{int(minutes // 60):02d}:{minutes % 60:05.2f}"


@pytest.mark.parametrize("name", ["confined_space_job", "lithium_night"])
def test_job_runs_as_the_standards_say(
        name: str, tmp_path: Path, field: ModbusTcpSimulator, broker: Mosquitto,
        platform: PlatformSubscriber, gas_detector: SimulatedDevice,
        relays: SimulatedDevice) -> None:
    run = JobRun(load_job(name), tmp_path, field, broker, platform, gas_detector, relays)
    started = time.monotonic()
    run.run()
    print(f"\n{name}: {len(run.job.steps)} steps, {run.minute:g} min of site time in "
          f"{time.monotonic() - started:.0f} s\n" + "\n".join(run.timeline))
