"""`python -m clip_perception.demo`: the demo (`make demo`).

An entry point only: the code is in :mod:`clip_perception.tools.demo`.
"""

import sys

from clip_perception.tools.demo import main

if __name__ == "__main__":
    sys.exit(main())
