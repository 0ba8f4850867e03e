"""Generated RGB-D scenes with known geometry, intrinsics and 3D ground truth.

The colour image is a :func:`~clip_perception.testing.scenes.make_scene`
table-top scene. Depth is registered to it (same size): a back plane at 2.3
to 3.0 m, tilted up to ~10 degrees, and each block a fronto-parallel face at
its own depth, 0.4 to 2.0 m. Sensor effects: depth noise growing with the
square of the distance (as structured-light and stereo sensors do), 16UC1's
millimetre quantisation when encoded so, missing readings (zeros) scattered
over the frame, and "flying pixels" on the blocks' edges with depths between
the block and the plane.

The truth for a block is the centre of its visible face: the back-projection
of the mean pixel centre of the face at the face's depth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.spatial.camera_model import PinholeCamera
from .scenes import Scene, make_scene

NEAR, FAR = 0.4, 2.0


@dataclass
class RgbdScene:
    scene: Scene
    depth: np.ndarray              # metres, float32 (H, W); 0 = no reading
    camera: PinholeCamera
    depths: dict[str, float]       # colour -> face depth (m)
    truth: np.ndarray | None       # the target's visible-face centre (m), None if absent

    @property
    def image(self) -> np.ndarray:
        return self.scene.image

    @property
    def target(self) -> str:
        return self.scene.target

    @property
    def target_box(self):
        return self.scene.target_box


def random_camera(rng: np.random.Generator, width: int = 640, height: int = 480
                  ) -> PinholeCamera:
    """Intrinsics of a typical RGB-D camera (horizontal field of view 55 to 75 degrees)."""
    hfov = np.radians(rng.uniform(55.0, 75.0))
    fx = width / 2.0 / np.tan(hfov / 2.0)
    fy = fx * rng.uniform(0.98, 1.02)
    return PinholeCamera(fx, fy, width / 2.0 - 0.5 + rng.uniform(-8, 8),
                         height / 2.0 - 0.5 + rng.uniform(-6, 6), width, height)


def face_centre(box, z: float, camera: PinholeCamera) -> np.ndarray:
    """The centre of a fronto-parallel face covering ``box`` (pixel edges) at depth ``z``."""
    x0, y0, x1, y1 = box
    return camera.backproject((x0 + x1 - 1) / 2.0, (y0 + y1 - 1) / 2.0, z)


def make_rgbd_scene(rng: np.random.Generator, width: int = 640, height: int = 480,
                    target_colour: str = "red", present: bool = True,
                    distractors: int = 1, size_range: tuple[int, int] = (60, 140),
                    camera: PinholeCamera | None = None, noise: bool = True,
                    holes: float = 0.03, flying: float = 0.5) -> RgbdScene:
    """One RGB-D scene; see the module docstring."""
    scene = make_scene(rng, width, height, target_colour, present, size_range, distractors)
    camera = camera or random_camera(rng, width, height)
    vs, us = np.mgrid[0:height, 0:width].astype(np.float64)
    rx, ry = camera.ray(us, vs)
    d0 = rng.uniform(2.3, 3.0)
    nx, ny = rng.uniform(-0.15, 0.15, size=2)
    depth = d0 / (1.0 + nx * rx + ny * ry)      # plane n.p = d0, n = (nx, ny, 1)
    depths: dict[str, float] = {}
    for obj in scene.objects:
        z = float(rng.uniform(NEAR, FAR))
        depths[obj.colour] = z
        x0, y0, x1, y1 = obj.box
        if flying:  # mixed pixels on the face's one-pixel border
            ring = np.zeros((height, width), bool)
            ring[max(y0 - 1, 0):y1 + 1, max(x0 - 1, 0):x1 + 1] = True
            ring[y0 + 1:y1 - 1, x0 + 1:x1 - 1] = False
            pick = ring & (rng.random((height, width)) < flying)
            mix = rng.random((height, width))
            depth = np.where(pick, mix * z + (1 - mix) * depth, depth)
            depth[y0 + 1:y1 - 1, x0 + 1:x1 - 1] = z
        else:
            depth[y0:y1, x0:x1] = z
    if noise:
        depth = depth + rng.normal(0.0, 1.0, depth.shape) * 0.0015 * depth ** 2
    if holes:
        depth[rng.random(depth.shape) < holes] = 0.0
    truth = None
    if scene.target_box is not None:
        truth = face_centre(scene.target_box, depths[target_colour], camera)
    return RgbdScene(scene, depth.astype(np.float32), camera, depths, truth)


def approaching_sequence(frames: int, seed: int = 0, camera: PinholeCamera | None = None,
                         width: int = 640, height: int = 480) -> list[RgbdScene]:
    """A 16 cm red block sliding right and coming closer (1.4 m to 0.5 m) past a blue one
    at 1.2 m, in front of a back plane at 2.6 m: one camera, known geometry per frame."""
    from .scenes import SceneObject, background, paint

    rng = np.random.default_rng(seed)
    camera = camera or PinholeCamera(525.0, 525.0, width / 2 - 0.5, height / 2 - 0.5,
                                     width, height)
    base = background(rng, width, height)
    vs, us = np.mgrid[0:height, 0:width].astype(np.float64)
    rx, ry = camera.ray(us, vs)
    plane = 2.6 / (1.0 + 0.05 * rx - 0.08 * ry)
    out = []
    for i in range(frames):
        f = i / max(frames - 1, 1)
        z_red = 1.4 - 0.9 * f
        side = int(round(0.16 * camera.fx / z_red))
        x0 = int(40 + 380 * f)
        red = (x0, 250, x0 + side, min(250 + side, height))
        blue = (470, 60, 570, 150)
        image = base.copy()
        depth = plane.copy()
        for box, colour, z in ((blue, "blue", 1.2), (red, "red", z_red)):
            paint(image, box, colour, rng)
            depth[box[1]:box[3], box[0]:box[2]] = z
        depth = depth + rng.normal(0.0, 1.0, depth.shape) * 0.0015 * depth ** 2
        depth[rng.random(depth.shape) < 0.02] = 0.0
        scene = Scene(image, "red block", red,
                      [SceneObject("red", red), SceneObject("blue", blue)])
        out.append(RgbdScene(scene, depth.astype(np.float32), camera,
                             {"red": z_red, "blue": 1.2}, face_centre(red, z_red, camera)))
    return out
