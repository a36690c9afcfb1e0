"""Time the PyTorch reference ISDNet with the paper's FPS protocol at one size.

    python benchmarks/reference_fps.py --size 1958x1958 --warmup 3 --iters 10

Prints FPS, latency statistics and the peak host memory of the forward passes; the
official code measured 0.69 s (1024x1024) and 3.23 s (1958x1958) per forward on this
kind of 2-core machine. Warm-up and iteration counts default to the paper's (20 / 100).
"""

from __future__ import annotations

import argparse
import json

import torch

from isdnet_deploy.benchmark.machine import machine_info
from isdnet_deploy.benchmark.protocol import PAPER_ITERS, PAPER_WARMUP, Method, run_protocol
from isdnet_deploy.benchmark.report import format_table
from isdnet_deploy.model.checkpoint import build_model, load_model
from isdnet_deploy.profiles import parse_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1024x1024")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--warmup", type=int, default=PAPER_WARMUP)
    parser.add_argument("--iters", type=int, default=PAPER_ITERS)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    h, w = parse_size(args.size)
    model = load_model(args.checkpoint) if args.checkpoint else build_model()
    image = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    method = Method(name=f"pytorch-eager {h}x{w}", forward=lambda: model(image),
                    context=torch.no_grad)
    results = run_protocol([method], warmup=args.warmup, iters=args.iters)
    machine = machine_info({"torch": torch.get_num_threads()})
    print(format_table(results, machine))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"size": [h, w], "fps": results[0].fps,
                       "mean_ms": results[0].mean_ms,
                       "peak_host_mib": results[0].peak_host_mib}, f, indent=2)


if __name__ == "__main__":
    main()
