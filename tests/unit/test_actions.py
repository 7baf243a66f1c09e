"""Which alarm and entry events hold which outputs: raises, escalations, evacuations,
shelving. The relay writes are recorded here; tests/integration/test_actions.py drives
a real relay module over Modbus."""

from __future__ import annotations

import asyncio

from edge_agent.actions import Actions
from edge_agent.config import Action
from edge_agent.records import Event

KEY = "gas1.co:above:1"


def action(name: str, when: str, **extra: object) -> Action:
    return Action(name=name, when=[when], device="relays", output=name, **extra)


def event(transition: str, key: str = KEY, cls: str = "alarm", **details: object) -> Event:
    return Event(0, cls, transition, "id1", key, details)  # type: ignore[arg-type]


def outputs(specs: list[Action], *steps: list[Event] | set[str], **kwargs: object
            ) -> list[dict[str, bool]]:
    """The outputs' states after each step: events to follow, or a set to suppress."""
    async def run() -> list[dict[str, bool]]:
        async def write(device: str, output: str, on: bool) -> None:
            pass

        actions = Actions(specs, write, lambda *_: None, **kwargs)  # type: ignore[arg-type]
        states = []
        for step in steps:
            if isinstance(step, set):
                actions.suppress(step)
            else:
                actions.follow(step)
            states.append(actions.state())
        await actions.close()
        return states
    return asyncio.run(run())


def test_a_healthy_output_drops_on_a_fault_an_inhibit_and_the_stop() -> None:
    specs = [action("healthy", "*:comm_lost", healthy=True)]

    async def run() -> list[bool]:
        writes = []

        async def write(device: str, output: str, on: bool) -> None:
            writes.append(on)

        actions = Actions(specs, write, lambda *_: None)
        states = [actions.state()["healthy"]]
        actions.follow([event("raised", "gas1:comm_lost", "fault")])
        states.append(actions.state()["healthy"])
        actions.follow([event("returned_to_normal", "gas1:comm_lost", "fault")])
        states.append(actions.state()["healthy"])  # no ack needed
        actions.suppress({"gas2.co:above:1"})
        states.append(actions.state()["healthy"])
        actions.suppress(set())
        actions.assert_all()
        await actions.stop()
        states.append(actions.state()["healthy"])
        assert writes[-1] is False  # written before stop returned
        await actions.close()
        return states
    assert [True, False, True, False, False] == asyncio.run(run())


def test_an_escalation_output_waits_for_its_escalation() -> None:
    specs = [action("sounder", "gas1.co:*"), action("siren", "gas1.co:*", escalation=2)]
    assert [{"sounder": True, "siren": False}, {"sounder": True, "siren": False},
            {"sounder": True, "siren": True}, {"sounder": False, "siren": False}] == outputs(
        specs, [event("raised")], [event("escalated", escalation=1)],
        [event("escalated", escalation=2)],
        [event("acknowledged"), event("returned_to_normal")])


def test_a_shelved_alarm_holds_no_output_until_unshelved() -> None:
    specs = [action("sounder", "gas1.co:*")]
    assert [{"sounder": False}, {"sounder": False}, {"sounder": True}] == outputs(
        specs, {KEY}, [event("raised")], set())


def test_an_evacuation_holds_until_the_entry_resumes_without_an_ack() -> None:
    specs = [action("beacon", "space:manhole-3")]
    space = "space:manhole-3"
    assert [{"beacon": False}, {"beacon": True}, {"beacon": True}, {"beacon": False}] == outputs(
        specs, [event("started", space, "entry")], [event("evacuate", space, "entry")],
        [event("record", space, "entry")], [event("resumed", space, "entry")])
    assert [{"beacon": True}, {"beacon": False}] == outputs(
        specs, [event("record", space, "entry")], [event("ended", space, "entry")],
        evacuating={space: "s1"})  # restored after a restart


def test_a_silenceable_sounder_stops_on_the_ack_and_sounds_again_on_a_new_alarm() -> None:
    specs = [action("sounder", "gas1.co:*", release="acknowledged"),
             action("fan", "gas1.co:*", release="cleared")]
    assert [{"sounder": True, "fan": True}, {"sounder": False, "fan": True},
            {"sounder": True, "fan": True}, {"sounder": True, "fan": False}] == outputs(
        specs, [event("raised")], [event("acknowledged")],
        [event("raised", "gas1.co:above:2")], [event("returned_to_normal"),
                                                event("returned_to_normal", "gas1.co:above:2")])
    assert [{"sounder": False}, {"sounder": True}] == outputs(  # re-sounds if still there
        specs[:1], [event("raised"), event("acknowledged")], [event("realarmed")])
