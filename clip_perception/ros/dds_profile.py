"""Where the package's Fast DDS profile for large frames is, and an env that uses it.

``config/fastdds_large_frames.xml`` enlarges Fast DDS's shared-memory segment so
camera frames reach subscribers in other processes (see the file's comment).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

PACKAGE = "clip_perception"
PROFILE_NAME = "fastdds_large_frames.xml"
PROFILE_ENV_VARS = ("FASTRTPS_DEFAULT_PROFILES_FILE",  # Fast DDS 2.x (Humble, Jazzy)
                    "FASTDDS_DEFAULT_PROFILES_FILE")   # Fast DDS 3.x (Kilted on)


def _file_candidates() -> list[Path]:
    here = Path(__file__).resolve().parents[1]  # the clip_perception package
    # Source tree, `pip install -e .` and `colcon build --symlink-install`.
    found = [here.parent / "config" / PROFILE_NAME]
    if len(here.parents) > 3:
        # prefix/lib/pythonX.Y/site-packages/clip_perception -> prefix/share/clip_perception
        # (`colcon build` and `pip install .`, which install config/ as data_files).
        found.append(here.parents[3] / "share" / PACKAGE / "config" / PROFILE_NAME)
    return found


def _ament_candidate() -> Path | None:
    """The profile in the package's ament share directory, if the index knows the package."""
    try:
        from ament_index_python.packages import get_package_share_directory
        return Path(get_package_share_directory(PACKAGE)) / "config" / PROFILE_NAME
    except (ImportError, LookupError, OSError, ValueError):
        # not installed, package unknown, or AMENT_PREFIX_PATH unset
        return None


def large_frame_profile_path() -> str:
    """The absolute path of ``fastdds_large_frames.xml``.

    Looks next to this module's package first (so the profile matches the code
    that runs), then in the install prefix's share directory, then in the ament index.

    Raises:
        FileNotFoundError: when no copy of the profile is found.
    """
    candidates = _file_candidates()
    for path in candidates:
        if path.is_file():
            return str(path)
    ament = _ament_candidate()
    if ament is not None:
        if ament.is_file():
            return str(ament)
        candidates.append(ament)
    raise FileNotFoundError(
        f"{PROFILE_NAME} not found; looked in: " + ", ".join(str(p) for p in candidates))


def env_with_profile(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of ``env`` (default: ``os.environ``) that loads the large-frame profile.

    Sets both FASTRTPS_DEFAULT_PROFILES_FILE and FASTDDS_DEFAULT_PROFILES_FILE so
    Fast DDS 2.x and 3.x both read it.
    """
    result = dict(os.environ if env is None else env)
    path = large_frame_profile_path()
    for name in PROFILE_ENV_VARS:
        result[name] = path
    return result
