"""``python -m clip_perception.serve``: host an encoder on Triton Inference Server.

Any encoder the node can load (a CLIP name, a checkpoint path or
``module:factory``) is served as three models (see :mod:`..core.triton_protocol`): a
detect model that runs the whole detector on a frame (the node's default: one
request per frame), an image model that takes a uint8 frame and its window boxes
and returns one embedding per window, cropping on the server's device, and a text
model. The detect and image models batch requests dynamically. Binds to 127.0.0.1
unless ``--host`` says otherwise.

It exports the model repository (:mod:`.model_repository`) and runs it on the
``tritonserver`` binary and Triton's own Python backend that the
``nvidia-pytriton`` wheel carries, as NVIDIA's container would
(:mod:`.backend_server`). The models import from ``serve``'s own path:
``PYTHONPATH``, a sourced workspace and the current directory.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from ..core.remote import triton_protocol as protocol
from .environment import ensure_server_environment


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m clip_perception.serve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="ViT-B/32",
                   help="CLIP name, checkpoint path or module:factory (as the node's model)")
    p.add_argument("--name", default="clip",
                   help="served name: models NAME_detect, NAME_image and NAME_text; nodes use "
                        "model:=triton://HOST:GRPC_PORT/NAME (default: clip)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--precision", default="auto", help="auto, fp32, fp16 or bf16")
    p.add_argument("--download-root", default=None, help="where named CLIP weights are kept")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1, this machine only; "
                        "0.0.0.0 serves the network)")
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--metrics-port", type=int, default=8002)
    p.add_argument("--instances", type=int, default=1,
                   help="model instances, each running requests concurrently (a process, a "
                        "copy of the weights and a frame cache each)")
    p.add_argument("--max-batch", type=int, default=8,
                   help="most frames one dynamic batch of the image model holds")
    p.add_argument("--max-queue-delay-us", type=int, default=0,
                   help="how long a request may wait for others to fill a batch (microseconds; "
                        "default 0: requests that queue while the model is busy are still "
                        "batched, and a lone request does not wait)")
    p.add_argument("--frame-cache-frames", type=int, default=protocol.CACHE_FRAMES,
                   help="recent frames the image model keeps, so that a detector's later "
                        "passes over a frame send only its id (per instance, shared by all "
                        f"clients; default {protocol.CACHE_FRAMES})")
    p.add_argument("--frame-cache-mb", type=float, default=protocol.CACHE_MB,
                   help=f"most memory those frames take (MB; default {protocol.CACHE_MB})")
    p.add_argument("--verbose", action="store_true", help="print Triton's own log")
    p.add_argument("--export-repository", metavar="DIR", default=None,
                   help="write a Triton model repository (Python backend) serving this encoder "
                        "to DIR, for NVIDIA's Triton container, and exit")
    args = p.parse_args(argv)
    if args.instances < 1 or args.max_batch < 1 or args.max_queue_delay_us < 0:
        p.error("--instances and --max-batch must be >= 1, --max-queue-delay-us >= 0")
    if args.frame_cache_frames < 0 or args.frame_cache_mb < 0:
        p.error("--frame-cache-frames and --frame-cache-mb must be >= 0")
    return args


def _stop_on_sigterm() -> None:
    """SIGTERM stops the server as Ctrl-C does, so tritonserver is stopped and the
    workspace removed (by default a Python process dies on SIGTERM without either)."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)  # --help and bad flags answer before any re-exec
    if args.export_repository:
        from .model_repository import write_repository

        for path in write_repository(args.export_repository, args.model, args.name,
                                     args.device, args.instances, args.max_batch,
                                     args.max_queue_delay_us, args.precision,
                                     args.download_root, args.frame_cache_frames,
                                     args.frame_cache_mb):
            print(path)
        return 0
    ensure_server_environment(argv)
    _stop_on_sigterm()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    from .backend_server import serve_repository

    return serve_repository(args)
