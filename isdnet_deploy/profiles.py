"""Dataset profiles: classes, palettes, normalisation and test sizes in one place.

Everything here is plain data (no torch) so the embedded runtime can use it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import IsdnetError

# mmsegmentation's ImageNet statistics on 0..255 RGB, used by every official ISDNet config.
MEAN_RGB = (123.675, 116.28, 103.53)
STD_RGB = (58.395, 57.12, 57.375)
IGNORE_INDEX = 255
# The deep branch downsamples the quarter-size image by 8 (1/32 overall); below this an
# input has no spatial extent left in the deep feature.
MIN_SIZE = 32
# The largest side a dynamic export admits: its index arithmetic is proven int32-safe (and
# exact) up to here (export/exact_index.py, export/portability.py); tile larger images.
MAX_SIZE = 16384


@dataclass(frozen=True)
class Profile:
    name: str
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    image_size: tuple[int, int]  # (H, W) of the dataset's images
    test_scale: float
    mean: tuple[float, float, float] = MEAN_RGB
    std: tuple[float, float, float] = STD_RGB
    # Classes left out of the paper's mIoU (DeepGlobe leaves out 'unknown').
    miou_excludes: tuple[str, ...] = field(default=())

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def test_size(self) -> tuple[int, int]:
        """The size the paper feeds the network: image size x test scale, rounded."""
        h, w = self.image_size
        return (int(h * self.test_scale + 0.5), int(w * self.test_scale + 0.5))


DEEPGLOBE = Profile(
    name="deepglobe",
    classes=("unknown", "urban", "agriculture", "rangeland", "forest", "water", "barren"),
    palette=((0, 0, 0), (0, 255, 255), (255, 255, 0), (255, 0, 255), (0, 255, 0),
             (0, 0, 255), (255, 255, 255)),
    image_size=(2448, 2448),
    test_scale=0.8,
    miou_excludes=("unknown",),
)

INRIA = Profile(
    name="inria",
    classes=("background", "building"),
    palette=((0, 0, 0), (255, 255, 255)),
    image_size=(5000, 5000),
    test_scale=0.8,
)

CITYSCAPES = Profile(
    name="cityscapes",
    classes=("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
             "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car",
             "truck", "bus", "train", "motorcycle", "bicycle"),
    palette=((128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
             (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
             (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70),
             (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32)),
    image_size=(1024, 2048),
    test_scale=1.0,
)

PROFILES: dict[str, Profile] = {p.name: p for p in (DEEPGLOBE, INRIA, CITYSCAPES)}
DEFAULT_PROFILE = "deepglobe"


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name.lower()]
    except KeyError:
        raise IsdnetError(
            f"unknown profile {name!r}; choose one of: {', '.join(PROFILES)}") from None


def profile_for_classes(num_classes: int) -> Profile | None:
    """The profile a checkpoint most likely belongs to, judged by its class count."""
    matches = [p for p in PROFILES.values() if p.num_classes == num_classes]
    return matches[0] if len(matches) == 1 else None


def parse_size(text: str) -> tuple[int, int]:
    """'1958x1958' or '1958' -> (H, W)."""
    parts = text.lower().replace(",", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise IsdnetError(f"size {text!r} is not HxW (e.g. 1958x1958)") from None
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or min(values) < MIN_SIZE:
        raise IsdnetError(f"size {text!r} must be HxW with both sides >= {MIN_SIZE}")
    return values[0], values[1]
