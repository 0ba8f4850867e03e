"""`python -m clip_perception.serve`: host an encoder on Triton Inference Server.

An entry point only: the code is in :mod:`clip_perception.serving.triton_server`.
"""

import sys

from clip_perception.serving.triton_server import main

if __name__ == "__main__":
    sys.exit(main())
