"""The prefetch iterator: same items in order, the producer's error raised in the consumer,
and no thread left reading after the consumer stops."""

import threading
import time

import pytest

from fatlib.core.prefetch import Prefetched


def test_yields_every_item_in_order():
    assert list(Prefetched(range(100), depth=3)) == list(range(100))


def test_makes_items_ahead_of_the_consumer():
    made = []

    def items():
        for i in range(5):
            made.append(i)
            yield i

    ahead = Prefetched(items(), depth=2)
    assert next(ahead) == 0
    deadline = time.monotonic() + 5
    while len(made) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert made == [0, 1, 2, 3]  # one taken, two queued, one made and waiting for room
    assert list(ahead) == [1, 2, 3, 4]


def test_the_producers_error_is_raised_in_the_consumer_after_the_items_before_it():
    def items():
        yield 1
        raise OSError("disk gone")

    ahead = Prefetched(items())
    assert next(ahead) == 1
    with pytest.raises(OSError, match="disk gone"):
        next(ahead)


def test_closing_stops_the_producer():
    def endless():
        i = 0
        while True:
            i += 1
            yield i

    with Prefetched(endless(), depth=2) as ahead:
        assert next(ahead) == 1
    assert not any(t.name == "fatlib-prefetch" and t.is_alive() for t in threading.enumerate())


def test_depth_must_be_positive():
    with pytest.raises(ValueError, match="depth"):
        Prefetched([], depth=0)


def test_next_after_the_end_stops_again():
    ahead = Prefetched([1])
    assert list(ahead) == [1]
    with pytest.raises(StopIteration):
        next(ahead)


def test_closing_does_not_wait_forever_for_a_producer_stuck_in_its_source():
    release = threading.Event()

    def stuck():
        yield 1
        release.wait(30)  # a read that does not return
        yield 2

    ahead = Prefetched(stuck(), close_timeout=0.2)
    assert next(ahead) == 1
    started = time.monotonic()
    ahead.close()
    assert time.monotonic() - started < 5
    release.set()
