"""Train ISDNet on the synthetic DeepGlobe-like task, for measuring reduced-precision accuracy.

    python benchmarks/train_synthetic.py -o /tmp/isdnet_synthetic.pth            # CPU, ~10 min
    python benchmarks/train_synthetic.py -o /tmp/isdnet_synthetic.pth --device cuda

Why: INT8 and FP16 argmax agreement only means something for a network with trained
decision margins. A random-weight ISDNet is chaotic (rounding just the input image flips
7.5% of its labels), so its agreement says nothing about the quantizer, and no official
checkpoint can be downloaded here. A few hundred steps on ``data.samples.synthetic_pair``
images give a model whose labels follow image content and whose errors sit on region
borders, as a trained model's do. It is not a substitute for the real weights: quantize
those with real calibration images before deploying.

The checkpoint is written in the official mmseg layout (``state_dict`` + ``meta``), so
every command of the toolkit loads it like an official one.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from isdnet_deploy.contract import Contract
from isdnet_deploy.data.samples import synthetic_pair
from isdnet_deploy.fileio import atomic_output
from isdnet_deploy.metrics.segmentation import ConfusionAccumulator, scores
from isdnet_deploy.model.checkpoint import build_model
from isdnet_deploy.profiles import get_profile
from isdnet_deploy.runtime.preprocess import normalise
from isdnet_deploy.runtime.torch_backend import reference_contract

# Held-out images use seeds from a range the training pool never draws from.
VAL_SEED = 10_000


def to_input(images: np.ndarray, contract: Contract) -> torch.Tensor:
    """N x H x W x 3 uint8 RGB -> N x 3 x H x W float, normalised as at inference."""
    return torch.from_numpy(normalise(images, contract)).permute(0, 3, 1, 2).contiguous()


def make_pool(profile: str, count: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    pairs = [synthetic_pair(profile, size, size, [seed, i])
             for i in tqdm(range(count), desc="generating", unit="image")]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def random_batch(images: np.ndarray, labels: np.ndarray, batch: int, crop: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    picks = rng.integers(len(images), size=batch)
    top = rng.integers(images.shape[1] - crop + 1, size=batch)
    left = rng.integers(images.shape[2] - crop + 1, size=batch)
    xs, ys = [], []
    for i, t, l_ in zip(picks, top, left, strict=True):
        x, y = images[i, t:t + crop, l_:l_ + crop], labels[i, t:t + crop, l_:l_ + crop]
        if rng.random() < 0.5:
            x, y = x[:, ::-1], y[:, ::-1]
        if rng.random() < 0.5:
            x, y = x[::-1], y[::-1]
        xs.append(x)
        ys.append(y)
    return np.ascontiguousarray(np.stack(xs)), np.ascontiguousarray(np.stack(ys))


@torch.no_grad()
def evaluate(model: torch.nn.Module, profile: str, count: int, size: int,
             device: str) -> dict:
    spec = get_profile(profile)
    contract = reference_contract(spec.num_classes, profile=profile)
    confusion = ConfusionAccumulator(spec.num_classes, ignore_index=None)
    model.eval()
    for i in range(count):
        image, labels = synthetic_pair(profile, size, size, [VAL_SEED, i])
        x = to_input(image[None], contract).to(device)
        pred = model(x).argmax(1)[0].cpu().numpy()
        confusion.update(pred, labels)
    result = scores(confusion.matrix, list(spec.classes))
    matrix = confusion.matrix
    result["pixel_accuracy"] = float(np.trace(matrix)) / max(int(matrix.sum()), 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", required=True, help="checkpoint to write (.pth)")
    parser.add_argument("--profile", default="deepglobe")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--pool", type=int, default=48, help="training images generated")
    parser.add_argument("--pool-size", type=int, default=512)
    parser.add_argument("--val", type=int, default=4, help="held-out images for mIoU")
    parser.add_argument("--val-size", type=int, default=512)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device} asked for, but torch sees no CUDA GPU; use "
                     "--device cpu")

    spec = get_profile(args.profile)
    contract = reference_contract(spec.num_classes, profile=args.profile)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    images, labels = make_pool(args.profile, args.pool, args.pool_size, args.seed)
    model = build_model(spec.num_classes, seed=args.seed).to(args.device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: 0.5 * (1 + math.cos(math.pi * min(step / args.steps, 1.0))))
    start = time.perf_counter()
    model.train()
    bar = tqdm(range(args.steps), desc="training", unit="step")
    for _ in bar:
        x, y = random_batch(images, labels, args.batch, args.crop, rng)
        inputs = to_input(x, contract).to(args.device)
        target = torch.from_numpy(y).long().to(args.device)
        loss = F.cross_entropy(model(inputs), target)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    train_s = time.perf_counter() - start
    result = evaluate(model, args.profile, args.val, args.val_size, args.device)
    meta = {"CLASSES": list(spec.classes), "PALETTE": [list(c) for c in spec.palette],
            "isdnet_deploy": {"trained_on": f"synthetic {args.profile}-like images "
                                            "(isdnet_deploy.data.samples.synthetic_pair)",
                              "steps": args.steps, "batch": args.batch, "crop": args.crop,
                              "seed": args.seed, "device": args.device,
                              "train_seconds": round(train_s, 1),
                              "val_miou": result["miou"],
                              "val_pixel_accuracy": result["pixel_accuracy"]}}
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_output(args.output) as tmp:
        torch.save({"state_dict": state, "meta": meta}, tmp)
    print(json.dumps(meta["isdnet_deploy"], indent=2))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
