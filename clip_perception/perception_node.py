"""`python -m clip_perception.perception_node`: the ROS 2 node, as `ros2 run` starts it.

An entry point only: the code is in :mod:`clip_perception.ros.node`.
"""

import sys

from clip_perception.ros.node import main

if __name__ == "__main__":
    sys.exit(main())
