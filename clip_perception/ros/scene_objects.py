"""Planning-scene objects: moveit_msgs/CollisionObject per stable track (where installed).

:func:`collision_object` turns a tracking event into a CollisionObject: ``id``
is the track id; ``add`` when a track becomes stable with a 3D position,
``move`` when its filtered position moves, ``remove`` when the track ends.
The shape is a box primitive sized from the region at the object's depth and
the depth spread of its visible face, centred at the filtered position; the
orientation is unknown (identity), as for ``target_pose``. ``msgs`` defaults
to ``moveit_msgs.msg``; :data:`moveit_msgs` is None where it is not installed.
"""

from __future__ import annotations

from geometry_msgs.msg import Pose

try:  # present on a ROS install with MoveIt; absent in the pip-only environment
    import moveit_msgs.msg as moveit_msgs
except ImportError:  # pragma: no cover - depends on the machine
    moveit_msgs = None

try:
    from shape_msgs.msg import SolidPrimitive
except ImportError:  # pragma: no cover - comes with moveit_msgs
    SolidPrimitive = None

MIN_SIDE = 0.01  # m: the smallest side of a published box


def collision_object(event, header, msgs=None, primitive=None):
    """The CollisionObject for one :class:`~clip_perception.core.track.tracker.SceneEvent`
    (None when moveit_msgs is not installed)."""
    msgs = msgs or moveit_msgs
    primitive = primitive or SolidPrimitive
    if msgs is None or primitive is None:
        return None
    track = event.track
    obj = msgs.CollisionObject()
    obj.header = header
    obj.id = track.id
    if event.kind == "remove":
        obj.operation = msgs.CollisionObject.REMOVE
        return obj
    obj.operation = msgs.CollisionObject.ADD if event.kind == "add" \
        else msgs.CollisionObject.MOVE
    pose = Pose()
    pose.position.x, pose.position.y, pose.position.z = (float(v) for v in track.point)
    pose.orientation.w = 1.0
    obj.pose = pose
    if event.kind == "add":
        shape = primitive()
        shape.type = primitive.BOX
        size = track.size or (MIN_SIDE, MIN_SIDE, MIN_SIDE)
        shape.dimensions = [float(max(v, MIN_SIDE)) for v in size]
        obj.primitives = [shape]
        centre = Pose()
        centre.orientation.w = 1.0
        obj.primitive_poses = [centre]  # relative to ``pose``
    return obj
