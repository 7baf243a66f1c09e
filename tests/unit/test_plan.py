"""Read plans: contiguous registers merge into one request, nothing else does."""

from __future__ import annotations

from edge_agent.acquisition import plan_device
from edge_agent.config import Device
from edge_agent.profiles import Profile, ProfileLibrary


def profile(*registers: dict) -> Profile:
    return Profile(name="p", vendor="v", model="m", follows="f", source="s",
                   registers=list(registers))


DEVICE = Device(name="d", bus="b", unit_id=1, profile="p")


def test_plan_generic_4gas_is_one_read() -> None:
    plan = plan_device(DEVICE, ProfileLibrary().get("generic_4gas"))
    assert [("holding", 0, 8)] == [(b.function, b.address, b.count) for b in plan.blocks]


def test_plan_splits_on_gaps_functions_and_the_125_register_limit() -> None:
    plan = plan_device(DEVICE, profile(
        {"name": "a", "address": 0}, {"name": "b", "address": 1, "type": "float32"},
        {"name": "c", "address": 10}, {"name": "d", "address": 0, "function": "input"},
        {"name": "e", "address": 11}, {"name": "f", "address": 135, "type": "uint32"},
        *({"name": f"r{i}", "address": 12 + i} for i in range(123))))
    assert [("holding", 0, 3), ("holding", 10, 125), ("holding", 135, 2), ("input", 0, 1)] \
        == [(b.function, b.address, b.count) for b in plan.blocks]


def test_plan_block_decodes_each_register_from_its_offset() -> None:
    plan = plan_device(DEVICE, profile({"name": "a", "address": 5, "scale": 0.1},
                                       {"name": "b", "address": 6, "type": "int32",
                                        "word_order": "CDAB"}))
    assert {"a": 209, "b": 70000} == plan.blocks[0].raw([209, 70000 & 0xFFFF, 1])
