"""``isdnet-deploy samples``: write a synthetic image/mask set in a dataset's layout."""

from __future__ import annotations

from pathlib import Path

import click

from ..data.samples import generate_sample_set, sample_dirs
from ..fileio import check_writable_dir
from ..profiles import get_profile
from .common import SIZE


@click.command("samples")
@click.option("-o", "--output", "output", required=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write the sample set into (missing folders are created).")
@click.option("--profile", "profile_name", type=click.Choice(["deepglobe", "inria"]),
              default="deepglobe", show_default=True,
              help="Dataset whose classes and file naming the samples follow.")
@click.option("--count", type=click.IntRange(min=1), default=4, show_default=True,
              help="Number of image/mask pairs.")
@click.option("--size", type=SIZE, default="512x512", show_default=True,
              help="Image size HxW (both sides >= 32).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Random seed; the same seed writes the same files.")
def samples_command(output: Path, profile_name: str, count: int, size: tuple[int, int],
                    seed: int) -> None:
    """Write synthetic aerial-like images with exact masks (nothing is downloaded).

    They exercise pairing, inference and metrics end to end; a trained model will not
    score well on them.
    """
    profile = get_profile(profile_name)
    check_writable_dir(output)
    written = generate_sample_set(output, profile, count=count, size=size, seed=seed)
    images_dir, labels_dir = sample_dirs(output, profile)
    click.echo(f"wrote {len(written) // 2} {profile.name} image/mask pairs of "
               f"{size[0]}x{size[1]} (seed {seed})")
    click.echo(f"  images: {images_dir}")
    click.echo(f"  masks:  {labels_dir}")
