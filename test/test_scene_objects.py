"""Planning-scene collision objects from track events, against a moveit_msgs stand-in
(moveit_msgs is not installable from PyPI; the real one is checked where installed)."""

from __future__ import annotations

import types

import numpy as np
import pytest
from std_msgs.msg import Header

from clip_perception.core.track.hysteresis import HysteresisConfig
from clip_perception.core.track.tracker import Observation, TrackConfig, Tracker
from clip_perception.ros.scene_objects import collision_object


class _CollisionObject:
    """moveit_msgs/CollisionObject's fields and operation constants (Humble and later)."""

    ADD, REMOVE, APPEND, MOVE = 0, 1, 2, 3

    def __init__(self):
        self.header = None
        self.id = ""
        self.pose = None
        self.primitives = []
        self.primitive_poses = []
        self.operation = self.ADD


class _SolidPrimitive:
    BOX, SPHERE = 1, 2

    def __init__(self):
        self.type = 0
        self.dimensions = []


STANDIN = types.SimpleNamespace(CollisionObject=_CollisionObject)


def _events():
    tracker = Tracker(TrackConfig(memory=1.0, hysteresis=HysteresisConfig(2, 3, 3)))
    out = []
    for i, z in enumerate((1.0, 1.0, 1.2)):
        o = Observation((300, 200, 380, 280), 0.9, None, np.array([0.1, 0.0, z]),
                        np.eye(3) * 0.01**2, np.array([0.08, 0.08, 0.03]))
        out += tracker.update(0.5 * i, {"red block": [o]}, ["red block"]).events
    out += tracker.update(3.0, {}, ["red block"]).events
    return out


def test_a_track_is_added_when_stable_moved_and_removed_with_its_id():
    header = Header(frame_id="camera_color_optical_frame")
    events = _events()
    assert [e.kind for e in events] == ["add", "move", "remove"]
    msgs = [collision_object(e, header, STANDIN, _SolidPrimitive) for e in events]
    add, move, remove = msgs
    assert add.id == move.id == remove.id == events[0].track.id
    assert add.operation == _CollisionObject.ADD and add.header.frame_id == header.frame_id
    assert add.primitives[0].type == _SolidPrimitive.BOX
    assert add.primitives[0].dimensions == pytest.approx([0.08, 0.08, 0.03])
    assert add.primitive_poses[0].orientation.w == 1.0
    assert (add.pose.position.x, add.pose.position.z) == pytest.approx((0.1, 1.0), abs=1e-6)
    assert move.operation == _CollisionObject.MOVE and move.primitives == []
    assert 1.0 < move.pose.position.z <= 1.2, "moved to the filtered position"
    assert remove.operation == _CollisionObject.REMOVE


def test_no_collision_object_without_moveit_msgs():
    import clip_perception.ros.scene_objects as scene_objects

    if scene_objects.moveit_msgs is None:
        assert collision_object(_events()[0], Header()) is None
    else:  # a MoveIt install: the real message
        msg = collision_object(_events()[0], Header())
        assert isinstance(msg, scene_objects.moveit_msgs.CollisionObject)
