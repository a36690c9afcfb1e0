"""``isdnet-deploy demo``: the README's main job, on a machine with nothing but the install."""

from __future__ import annotations

import time
from pathlib import Path

import click
import numpy as np

from ..profiles import get_profile, parse_size


@click.command("demo")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None,
              help="Official ISDNet .pth; without it, random weights (loudly warned).")
@click.option("--profile", default="deepglobe", show_default=True,
              help="deepglobe, inria or cityscapes.")
@click.option("--size", default="1024x1024", show_default=True,
              help="HxW of the generated test image.")
@click.option("-o", "--output", type=click.Path(file_okay=False), default="runs/demo",
              show_default=True, help="Folder for the results.")
def demo_command(checkpoint: str | None, profile: str, size: str, output: str) -> None:
    """Build the reference model, segment a generated image and time it.

    Example: isdnet-deploy demo --size 512x512
    """
    import torch

    from ..model.checkpoint import build_model, load_model, smooth_random_images

    prof = get_profile(profile)
    h, w = parse_size(size)
    if checkpoint:
        model = load_model(checkpoint)
    else:
        click.secho("WARNING: no --checkpoint given: using RANDOM weights; predictions are "
                    "meaningless, timings are real.", fg="yellow", err=True)
        model = build_model(prof.num_classes)
    generator = torch.Generator().manual_seed(0)
    image = torch.nn.functional.interpolate(smooth_random_images(1, max(h, w), generator),
                                            size=(h, w), mode="bilinear")
    with torch.no_grad():
        model(image)  # warm-up
        start = time.perf_counter()
        logits = model(image)
        elapsed = time.perf_counter() - start
    labels = logits.argmax(1)[0].numpy().astype(np.uint8)
    counts = np.bincount(labels.ravel(), minlength=model.num_classes)
    click.echo(f"reference ISDNet ({model.num_classes} classes) on a {h}x{w} image: "
               f"{elapsed * 1000:.0f} ms per forward ({1 / elapsed:.2f} FPS), "
               f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    names = prof.classes if len(prof.classes) == model.num_classes else range(len(counts))
    click.echo("class shares: " + ", ".join(
        f"{n} {c / labels.size:.1%}" for n, c in zip(names, counts, strict=False)))
    Path(output).mkdir(parents=True, exist_ok=True)
