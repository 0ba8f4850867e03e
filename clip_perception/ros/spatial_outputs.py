"""The stamped outputs: ``result`` (JSON) always; ``target_pose``, ``markers`` and
``detections_3d`` when depth is on; ``collision_objects`` (moveit_msgs/CollisionObject,
where installed) with depth and tracks.

With tracks (:mod:`clip_perception.core.track`), ``target_pose`` is the first
target's filtered position and covariance while it is ``stable`` (on frames
that gave it a 3D position), markers are
per track, and each track's planning-scene object is added when it becomes
stable, moved when it moves and removed when it ends
(:mod:`~clip_perception.ros.scene_objects`).

:class:`SpatialOutputs` sits beside :class:`~clip_perception.ros.outputs.Outputs`
and publishes on the loop's publisher thread. Every message carries the
colour frame's header. A found target without a valid 3D position gets no
pose; the reason is counted (``no_3d_<reason>`` in ``/diagnostics``) and
logged, throttled per reason.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from geometry_msgs.msg import PoseWithCovarianceStamped
from std_msgs.msg import String
from visualization_msgs.msg import MarkerArray

from ..core.runtime.inference_loop import Result
from ..core.runtime.log_throttle import ProblemLog
from ..core.spatial.locate3d import DepthInvalid, Position3D, locate_targets
from ..core.track.tracking_stage import result_document
from .messages import stamp_ns, vision_msgs
from .outputs import RELIABLE
from .scene_objects import collision_object, moveit_msgs
from .spatial_messages import (
    MarkerTracker,
    detection3d_array,
    result_string,
    target_pose,
)


class SpatialOutputs:
    """Publishers of the stamped result and, with ``use_depth``, the 3D outputs."""

    def __init__(self, node, values: dict, problems: ProblemLog, use_depth: bool,
                 camera_state=lambda: (None, None), prefix: str = ""):
        self.node = node
        self._camera_state = camera_state
        self.values = values
        self.use_depth = use_depth
        self._problems = problems
        self.counts: Counter[str] = Counter()
        pub = node.create_lifecycle_publisher
        self.pubs = {"result": pub(String, prefix + "result", RELIABLE)}
        if use_depth:
            self.pubs["target_pose"] = pub(PoseWithCovarianceStamped, prefix + "target_pose",
                                           RELIABLE)
            self.pubs["markers"] = pub(MarkerArray, prefix + "markers", RELIABLE)
            if vision_msgs is not None:
                self.pubs["detections_3d"] = pub(vision_msgs.Detection3DArray,
                                                 prefix + "detections_3d", RELIABLE)
            if moveit_msgs is not None:
                self.pubs["collision_objects"] = pub(moveit_msgs.CollisionObject,
                                                     prefix + "collision_objects", RELIABLE)
            self.counts.update(poses_published=0)
        self._markers = MarkerTracker()

    def publish(self, result: Result) -> None:
        header, detection, frame = result.header, result.detection, result.frame
        tracks = result.tracks
        located = None
        if self.use_depth:
            located = tracks.located if tracks is not None else None
            if located is None:
                low, high = self.values["depth_range"]
                camera, camera_problem = getattr(frame, "camera", None), None
                if camera is None:
                    camera, camera_problem = self._camera_state()
                located = locate_targets(detection, getattr(frame, "depth", None), camera,
                                         (low, high), getattr(frame, "missing", None) or
                                         camera_problem)
            self._count_problems(detection, located)
            pose = self._pose(located, tracks)
            if pose is not None:
                self.pubs["target_pose"].publish(target_pose(pose, header))
                self.counts["poses_published"] += 1
            keys = None if tracks is None else [
                next((s.track.id for s in tracks.targets
                      if s.phrase == t.phrase and s.track is not None), None)
                for t in detection.targets]
            self.pubs["markers"].publish(self._markers.markers(detection, located, header,
                                                               keys))
            if "detections_3d" in self.pubs:
                self.pubs["detections_3d"].publish(detection3d_array(detection, located, header))
            if "collision_objects" in self.pubs and tracks is not None:
                for event in tracks.events:
                    self.pubs["collision_objects"].publish(collision_object(event, header))
                    self.counts[f"collision_objects_{event.kind}"] += 1
        self.pubs["result"].publish(result_string(
            result_document(stamp_ns(header), header.frame_id, detection, tracks, located)))

    @staticmethod
    def _pose(located, tracks) -> Position3D | None:
        """The first target's pose: its track's filtered one while stable, else the frame's;
        none when this frame gave the target no 3D position (no depth, no camera_info)."""
        first = located[0] if located else None
        if not isinstance(first, Position3D):
            return None
        if tracks is not None:
            state = tracks.targets[0] if tracks.targets else None
            track = state.track if state is not None else None
            if state is None or not state.stable or track is None or track.point is None:
                return None
            return Position3D(np.asarray(track.point), np.asarray(track.covariance).reshape(3, 3),
                              np.asarray(track.size or (0.0, 0.0, 0.0)), 0, 0)
        return first

    def _count_problems(self, detection, located) -> None:
        for target, loc in zip(detection.targets, located):
            if isinstance(loc, DepthInvalid):
                self.counts[f"no_3d_{loc.reason}"] += 1
                self._problems.report(f"depth/{loc.reason}",
                                      f"no 3D position for {target.phrase}: {loc.detail}")

    def destroy(self) -> None:
        for pub in self.pubs.values():
            self.node.destroy_lifecycle_publisher(pub)
        self.pubs = {}
