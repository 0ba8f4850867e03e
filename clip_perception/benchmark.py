"""`python -m clip_perception.benchmark`: speed benchmark.

An entry point only: the code is in :mod:`clip_perception.tools.benchmark`.
"""

import sys

from clip_perception.tools.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
