"""Stopping tasks that swallow a cancellation (CPython 3.11's asyncio.wait_for race)."""

import asyncio
import sys

from edge_agent.tasks import cancel_and_wait


async def _answer_and_cancel_together() -> bool:
    """True when a cancel that lands as wait_for's future completes is lost."""
    answer = asyncio.get_running_loop().create_future()
    waiting = asyncio.create_task(asyncio.wait_for(answer, 5))
    await asyncio.sleep(0)  # the task is now inside wait_for
    answer.set_result("registers")
    waiting.cancel()
    try:
        await waiting
    except asyncio.CancelledError:
        return False
    return True


def test_wait_for_loses_a_cancel_before_python_3_12() -> None:
    # The reason cancel_and_wait exists (checked on 3.11.2, 3.11.7, 3.12.1 and 3.13.0).
    assert asyncio.run(_answer_and_cancel_together()) == (sys.version_info < (3, 12))


def test_cancel_and_wait_ends_a_task_that_swallowed_the_cancel() -> None:
    cancels = 0

    async def poller() -> None:  # what a bus task does after wait_for lost the cancel
        nonlocal cancels
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancels += 1
                if cancels == 1:
                    continue
                raise

    async def scenario() -> None:
        tasks = [asyncio.create_task(poller()), asyncio.create_task(asyncio.sleep(3600))]
        await asyncio.sleep(0)
        await asyncio.wait_for(cancel_and_wait(tasks, retry_s=0.05), 5)
        assert all(t.cancelled() for t in tasks)

    asyncio.run(scenario())
    assert cancels == 2
