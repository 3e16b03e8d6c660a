"""fmnist.apps.batcher: concurrent one-item predictions coalesced into batches, with a fake NumPy model."""

import asyncio
import threading

import numpy as np
import pytest

from fmnist.apps.batcher import MicroBatcher, Overloaded

TIMEOUT_S = 10  # bounds every test; the waits involved are milliseconds


class FakeModel:
    """Doubles its input; records each batch's size; can be held mid-batch to let a queue build up."""

    def __init__(self) -> None:
        self.batch_sizes: list[int] = []
        self.running = threading.Event()  # set while a batch is inside __call__
        self.release = threading.Event()
        self.release.set()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.running.set()
        self.release.wait(TIMEOUT_S)
        self.batch_sizes.append(len(batch))
        return batch * 2


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, TIMEOUT_S))


async def until(condition) -> None:
    """Yield to the event loop until `condition()` holds."""
    while not condition():
        await asyncio.sleep(0.001)


def test_concurrent_calls_share_batches_and_each_caller_gets_its_own_row():
    model = FakeModel()

    async def main():
        async with MicroBatcher(model, max_batch=4, wait_s=0.05) as batcher:
            return await asyncio.gather(*(batcher.predict(np.array([i, 10 * i])) for i in range(10)))

    answers = run(main())
    assert [a.tolist() for a in answers] == [[2 * i, 20 * i] for i in range(10)]
    assert model.batch_sizes == [4, 4, 2]


def test_a_lone_call_is_predicted_on_its_own_after_the_wait():
    model = FakeModel()

    async def main():
        async with MicroBatcher(model, max_batch=8, wait_s=0.01) as batcher:
            return await batcher.predict(np.array([3]))

    assert run(main()).tolist() == [6]
    assert model.batch_sizes == [1]


def test_a_full_batch_goes_without_waiting_for_the_wait():
    model = FakeModel()

    async def main():
        async with MicroBatcher(model, max_batch=3, wait_s=3600) as batcher:  # an hour: only a full batch can go
            return await asyncio.gather(*(batcher.predict(np.array([i])) for i in range(3)))

    assert [a.tolist() for a in run(main())] == [[0], [2], [4]]
    assert model.batch_sizes == [3]


def test_with_nothing_more_coming_a_lone_call_goes_without_waiting():
    model = FakeModel()

    async def main():
        async with MicroBatcher(model, max_batch=8, wait_s=3600, coming=lambda: 0) as batcher:
            return await batcher.predict(np.array([3]))

    assert run(main()).tolist() == [6]
    assert model.batch_sizes == [1]


def test_a_batch_waits_for_the_items_on_their_way_then_goes_when_the_last_arrives():
    model, on_their_way = FakeModel(), [2]

    async def main():
        async with MicroBatcher(model, max_batch=8, wait_s=3600, coming=lambda: on_their_way[0]) as batcher:
            first = asyncio.ensure_future(batcher.predict(np.array([1])))
            answers = [first]
            for i in (2, 3):  # two more arrive, one at a time; the batch goes with the last
                await asyncio.sleep(0.01)
                assert not first.done()  # still waiting for company
                on_their_way[0] -= 1
                answers.append(asyncio.ensure_future(batcher.predict(np.array([i]))))
            return await asyncio.gather(*answers)

    assert [a.tolist() for a in run(main())] == [[2], [4], [6]]
    assert model.batch_sizes == [3]


def test_a_full_queue_refuses_with_overloaded_and_serves_the_queued_ones():
    model = FakeModel()
    model.release.clear()

    async def main():
        async with MicroBatcher(model, max_batch=1, wait_s=0, max_queue=2) as batcher:
            held = asyncio.ensure_future(batcher.predict(np.array([1])))
            await until(model.running.is_set)  # in the model, no longer queued
            queued = [asyncio.ensure_future(batcher.predict(np.array([i]))) for i in (2, 3)]
            await until(lambda: batcher.queued == 2)
            with pytest.raises(Overloaded, match="2 requests are already waiting"):
                await batcher.predict(np.array([4]))
            model.release.set()
            return await asyncio.gather(held, *queued)

    assert [a.tolist() for a in run(main())] == [[2], [4], [6]]


def test_an_error_reaches_every_caller_of_its_batch_and_the_batcher_goes_on():
    calls = []

    def flaky(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        if len(calls) == 1:
            raise FloatingPointError("the model broke")
        return batch + 1

    async def main():
        async with MicroBatcher(flaky, max_batch=2, wait_s=0.05) as batcher:
            failed = await asyncio.gather(*(batcher.predict(np.array([i])) for i in range(2)), return_exceptions=True)
            return failed, await batcher.predict(np.array([5]))

    failed, later = run(main())
    assert [type(f) for f in failed] == [FloatingPointError, FloatingPointError]
    assert later.tolist() == [6]


def test_a_wrong_number_of_rows_is_an_error_not_a_mix_up():
    async def main():
        async with MicroBatcher(lambda batch: batch[:1], max_batch=2, wait_s=0.05) as batcher:
            return await asyncio.gather(*(batcher.predict(np.array([i])) for i in range(2)), return_exceptions=True)

    assert all(isinstance(e, ValueError) and "1 rows for 2 items" in str(e) for e in run(main()))


def test_a_caller_that_gave_up_is_left_out_of_the_batch():
    model = FakeModel()

    async def main():
        async with MicroBatcher(model, max_batch=8, wait_s=0.05) as batcher:
            gave_up = asyncio.ensure_future(batcher.predict(np.array([1])))
            kept = asyncio.ensure_future(batcher.predict(np.array([2])))
            await until(lambda: batcher.queued == 2)
            gave_up.cancel()
            return await kept

    assert run(main()).tolist() == [4]
    assert model.batch_sizes == [1]


def test_it_must_run_inside_async_with_and_checks_its_settings():
    with pytest.raises(RuntimeError, match="async with"):
        run(MicroBatcher(FakeModel()).predict(np.array([1])))
    with pytest.raises(ValueError, match="max_batch >= 1"):
        MicroBatcher(FakeModel(), max_batch=0)


def test_leaving_cancels_what_still_waits():
    async def main():
        async with MicroBatcher(FakeModel(), max_batch=8, wait_s=3600) as batcher:
            waiting = asyncio.ensure_future(batcher.predict(np.array([1])))
            await until(lambda: batcher.queued == 1)
        await asyncio.sleep(0)
        return waiting

    assert run(main()).cancelled()
