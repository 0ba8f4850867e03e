"""`python -m clip_perception.evaluate`: localization quality report.

An entry point only: the code is in :mod:`clip_perception.tools.evaluate`.
"""

import sys

from clip_perception.tools.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
