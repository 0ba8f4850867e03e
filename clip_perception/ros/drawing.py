"""Draw the detection result on a copy of the frame, for the debug image."""

from __future__ import annotations

import cv2
import numpy as np

from ..core.detect.results import Detection

FOUND = (40, 220, 60)
MISSING = (230, 60, 60)
WINDOW = (250, 200, 40)


def annotate(rgb: np.ndarray, detection: Detection) -> np.ndarray:
    """An RGB copy of ``rgb`` with each target's region, label and score drawn.

    Found targets get a solid box; a missing target shows its best window in
    a thin box, so one can see where the model looked.
    """
    out = np.ascontiguousarray(rgb).copy()
    scale = max(0.4, min(out.shape[:2]) / 800)
    thickness = max(1, int(round(2 * scale)))
    for target in detection.targets:
        x0, y0, x1, y1 = target.box
        colour = FOUND if target.present else MISSING
        cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), colour,
                      thickness if target.present else 1)
        if target.present and target.best_window != target.box:
            wx0, wy0, wx1, wy1 = target.best_window
            cv2.rectangle(out, (wx0, wy0), (wx1 - 1, wy1 - 1), WINDOW, 1)
        label = f"{target.phrase} {target.score:.2f}"
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        ty = y0 - 4 if y0 - th - base - 4 >= 0 else min(out.shape[0] - 1, y1 + th + 4)
        cv2.rectangle(out, (x0, ty - th - base), (x0 + tw, ty + base // 2), colour, -1)
        cv2.putText(out, label, (x0, ty - base // 2), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (255, 255, 255), thickness, cv2.LINE_AA)
    return out
