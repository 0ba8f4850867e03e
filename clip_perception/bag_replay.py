"""`python -m clip_perception.bag_replay`: rosbag player for machines without the ros2 CLI.

An entry point only: the code is in :mod:`clip_perception.tools.bag_replay`.
"""

import sys

from clip_perception.tools.bag_replay import main

if __name__ == "__main__":
    sys.exit(main())
