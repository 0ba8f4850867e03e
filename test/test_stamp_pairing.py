"""Colour/depth pairing: the ROS-free pairer and the message_filters path.

The shared behaviours run against the ROS-free pairer, against a stand-in with
message_filters' algorithm, and against the real message_filters where it is
installed (a ROS install; not pip-installable, so skipped here with that reason)."""

from __future__ import annotations

import itertools
import sys
import threading
import types

import pytest
from builtin_interfaces.msg import Time

from clip_perception.core.spatial.stamp_pairing import StampPairer
from clip_perception.ros.depth_pairing import MessageFiltersPairer, make_pairer

MS = 1_000_000


class Msg:
    """A message with a header stamp, as message_filters reads it."""

    def __init__(self, name: str, stamp_ns: int):
        self.name = name
        sec, nanosec = divmod(stamp_ns, 10**9)
        self.header = types.SimpleNamespace(stamp=Time(sec=sec, nanosec=nanosec))
        self.stamp_ns = stamp_ns

    def __repr__(self) -> str:
        return self.name


def fake_message_filters():
    """message_filters' Python SimpleFilter and ApproximateTimeSynchronizer, same algorithm
    (rolling ROS 2 message_filters/__init__.py), with float-second stamps."""

    class SimpleFilter:
        def __init__(self):
            self.callbacks = {}

        def registerCallback(self, cb, *args):
            self.callbacks[len(self.callbacks)] = (cb, args)

        def signalMessage(self, *msg):
            for cb, args in list(self.callbacks.values()):
                cb(*(msg + args))

    class ApproximateTimeSynchronizer(SimpleFilter):
        def __init__(self, fs, queue_size, slop, allow_headerless=False):
            super().__init__()
            self.queue_size, self.slop = queue_size, slop
            self.queues = [{} for _ in fs]
            self.lock = threading.Lock()
            for i, f in enumerate(fs):
                f.registerCallback(self.add, self.queues[i], i)

        def add(self, msg, my_queue, my_queue_index=None):
            stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
            with self.lock:
                my_queue[stamp] = msg
                while len(my_queue) > self.queue_size:
                    del my_queue[min(my_queue)]
                search = self.queues[:my_queue_index] + self.queues[my_queue_index + 1:]
                stamps = []
                for queue in search:
                    near = sorted((abs(s - stamp), s) for s in queue
                                   if abs(s - stamp) <= self.slop)
                    if not near:
                        return
                    stamps.append([s for _, s in near])
                for vv in itertools.product(*stamps):
                    vv = list(vv)
                    vv.insert(my_queue_index, stamp)
                    qt = list(zip(self.queues, vv))
                    if max(vv) - min(vv) < self.slop and all(t in q for q, t in qt):
                        msgs = [q[t] for q, t in qt]
                        for q, t in qt:
                            del q[t]
                        break
                else:
                    return
            self.signalMessage(*msgs)

    return types.SimpleNamespace(SimpleFilter=SimpleFilter,
                                 ApproximateTimeSynchronizer=ApproximateTimeSynchronizer)


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def real_message_filters():
    """The installed message_filters module, or None."""
    try:
        import message_filters
    except ImportError:
        return None
    return message_filters


def pairers():
    """Every implementation, each with a fake clock and a list of its outputs."""
    out = []
    for kind in ("core", "message_filters", "real_message_filters"):
        got, clock = [], Clock()
        def on_pair(colour, depth, got=got):
            got.append((colour.name, None if depth is None else depth.name))
        marks = ()
        if kind == "core":
            p = StampPairer(on_pair, 50 * MS, queue_size=5, max_wait=0.5, clock=clock)
        elif kind == "message_filters":
            p = MessageFiltersPairer(on_pair, 50 * MS, queue_size=5, max_wait=0.5, clock=clock,
                                     message_filters=fake_message_filters())
        elif (module := real_message_filters()) is not None:
            p = MessageFiltersPairer(on_pair, 50 * MS, queue_size=5, max_wait=0.5, clock=clock,
                                     message_filters=module)
        else:
            p, marks = None, pytest.mark.skip(
                reason="message_filters is not installed (it comes with a ROS install, not "
                       "from PyPI); the stand-in with its algorithm runs instead")
        out.append(pytest.param(p, got, clock, id=kind, marks=marks))
    return out


def feed(p, kind, name, stamp_ms):
    msg = Msg(name, stamp_ms * MS)
    (p.add_colour if kind == "c" else p.add_depth)(msg.stamp_ns, msg)


@pytest.mark.parametrize("p,got,clock", pairers())
def test_pairs_the_nearest_depth_within_tolerance_in_either_arrival_order(p, got, clock):
    feed(p, "d", "d0", 1000)
    feed(p, "d", "d1", 1030)
    feed(p, "c", "c0", 1025)      # d1 is 5 ms away, d0 25 ms
    assert got == [("c0", "d1")]
    feed(p, "c", "c1", 2000)      # colour first, depth later
    assert got[-1] == ("c0", "d1")
    feed(p, "d", "d2", 2040)
    assert got[-1] == ("c1", "d2")
    assert p.pending() == 0


@pytest.mark.parametrize("p,got,clock", pairers())
def test_a_colour_frame_outside_the_tolerance_is_handed_on_without_depth(p, got, clock):
    feed(p, "c", "c0", 1000)
    feed(p, "d", "d0", 1080)      # newer than 1000 + 50 ms: c0 can no longer pair
    assert got == [("c0", None)]
    feed(p, "d", "dold", 1900)
    feed(p, "c", "c1", 2000)      # the only depth is 100 ms older: c1 waits...
    assert got == [("c0", None)]
    clock.t = 0.6                 # ... until max_wait
    p.poll()
    assert got == [("c0", None), ("c1", None)]
    assert p.unpaired == 2 and p.paired == 0


@pytest.mark.parametrize("p,got,clock", pairers())
def test_each_depth_frame_is_used_once(p, got, clock):
    feed(p, "d", "d0", 1000)
    feed(p, "c", "c0", 1010)
    feed(p, "c", "c1", 1020)      # d0 is taken; c1 waits for another depth
    assert got == [("c0", "d0")]
    feed(p, "d", "d1", 1060)
    assert got == [("c0", "d0"), ("c1", "d1")]


@pytest.mark.parametrize("p,got,clock", pairers())
def test_a_full_queue_hands_on_its_oldest_colour_frame(p, got, clock):
    for i in range(7):
        feed(p, "c", f"c{i}", 1000 + 100 * i)
    assert got == [("c0", None), ("c1", None)]


@pytest.mark.parametrize("p,got,clock", pairers())
def test_a_late_pair_for_a_released_frame_is_not_emitted_twice(p, got, clock):
    feed(p, "c", "c0", 1000)
    clock.t = 1.0
    p.poll()
    feed(p, "d", "d0", 1010)      # the synchronizer would pair it now
    assert got == [("c0", None)]
    assert p.pending() == 0


def test_make_pairer_uses_message_filters_only_where_it_imports(monkeypatch):
    monkeypatch.setitem(sys.modules, "message_filters", None)  # import fails
    assert type(make_pairer(lambda c, d: None, 50 * MS)) is StampPairer
    monkeypatch.setitem(sys.modules, "message_filters", fake_message_filters())
    assert isinstance(make_pairer(lambda c, d: None, 50 * MS), MessageFiltersPairer)


@pytest.mark.parametrize("stamp_ms", [0, 1000])
@pytest.mark.parametrize("kind", [x.id for x in pairers()])
def test_colour_frames_with_equal_stamps_are_each_handed_on_once(kind, stamp_ms):
    """Drivers that stamp 0, or repeat a stamp: no colour frame is lost, none twice."""
    fresh = next(x for x in pairers() if x.id == kind)   # one pairer per stamp
    if fresh.marks:
        pytest.skip(fresh.marks[0].kwargs["reason"])
    p, got, clock = fresh.values
    feed(p, "c", "c0", stamp_ms)
    feed(p, "c", "c1", stamp_ms)
    feed(p, "c", "c2", stamp_ms)
    feed(p, "d", "d0", stamp_ms)
    clock.t = 1.0
    p.poll()
    assert sorted(name for name, _ in got) == ["c0", "c1", "c2"], got
    assert [d for _, d in got].count("d0") == 1
    assert p.pending() == 0
    feed(p, "c", "c3", stamp_ms + 2000)   # the pairer goes on working
    feed(p, "d", "d1", stamp_ms + 2000)
    assert got[-1] == ("c3", "d1") and p.pending() == 0


@pytest.mark.parametrize("p,got,clock", pairers())
def test_equal_depth_stamps_lose_no_colour_frame(p, got, clock):
    """message_filters' own queue keeps one depth frame per stamp; the core pairer keeps
    both. Either way every colour frame comes out once."""
    feed(p, "d", "d0", 1000)
    feed(p, "d", "d1", 1000)
    feed(p, "c", "c0", 1000)
    feed(p, "c", "c1", 1000)
    clock.t = 1.0
    p.poll()
    assert sorted(c for c, _ in got) == ["c0", "c1"], got
    if isinstance(p, StampPairer) and not isinstance(p, MessageFiltersPairer):
        assert sorted(d for _, d in got) == ["d0", "d1"], got
