"""Over real DDS, the node gives the same regions as the library on the same frames,
with a non-linear (saturating) member of the known-answer encoder family."""

from __future__ import annotations

import time

import pytest
from ros_harness import NodeProcess, Probe, stamp_of

from clip_perception.core.detect.detector import Detector
from clip_perception.testing import known_answer
from clip_perception.testing.scenes import hard_scene_set

pytestmark = pytest.mark.ros

T0 = 1_700_000_000_000_000_000
MEMBER = "concave"


def test_node_regions_equal_the_library_regions_with_a_saturating_encoder(ros_domain, tmp_path):
    scenes = hard_scene_set(3, seed=8, absent_fraction=0.0)
    library = Detector(known_answer.load(MEMBER))
    node = NodeProcess(ros_domain, tmp_path / "node.log", {"model": known_answer.spec(MEMBER)})
    probe = Probe(ros_domain)
    try:
        assert probe.wait_for_node(40), f"node never subscribed:\n{node.log()}"
        for i, scene in enumerate(scenes):
            expected = library.detect(scene.image, [scene.target]).targets[0]
            assert expected.present
            assert probe.command(f"find the {scene.target}", expect_targets=scene.target)
            stamp = T0 + i + 1
            before = len(probe.received["region"])

            def answered(stamp=stamp, before=before):
                return (any(stamp_of(m) == stamp for _, m in probe.received["debug_image"])
                        and len(probe.received["region"]) > before)

            end = time.monotonic() + 30
            while not answered() and time.monotonic() < end:
                probe.image(scene.image, stamp)
                probe.spin_until(answered, 1.5)
            assert answered(), f"no outputs for frame {i}:\n{node.log()}"
            msg = probe.latest("region")
            region = (msg.x_offset, msg.y_offset, msg.x_offset + msg.width,
                      msg.y_offset + msg.height)
            assert region == tuple(expected.box), (i, region, expected.box)
        assert node.alive()
    finally:
        probe.close()
        node.stop()
