"""Overlays and GIFs of a prediction: grey MRI, green truth, red prediction, yellow overlap
(`data_prep.overlays.overlay_rgb`). A regions model gets one labelled panel per region side
by side, each on the sequence where that region shows: the whole tumour on FLAIR (edema),
the core and the enhancing tumour on T1ce (the enhancing rim)."""

from collections.abc import Iterable, Sequence
import io

import numpy as np
from PIL import Image
from PIL import ImageDraw
from PIL import ImageFont

from data_prep import atomic
from data_prep import overlays
from data_prep.labels import REGION_NAMES

# The sequence each region is drawn on, and the short name its panel carries.
_BACKGROUND = {"whole_tumor": "flair", "tumor_core": "t1ce", "enhancing_tumor": "t1ce"}
_SHORT_NAME = {"whole_tumor": "WT", "tumor_core": "TC", "enhancing_tumor": "ET"}


def background_modalities(modalities: Sequence[str], task: str) -> list[int]:
  """Index into `modalities` of each region's background (the first modality when the
  region's own sequence was not converted)."""
  return [
    modalities.index(_BACKGROUND[r]) if _BACKGROUND[r] in modalities else 0
    for r in REGION_NAMES[task]
  ]


def region_panels(
  images: np.ndarray,
  truth: np.ndarray | None,
  prediction: np.ndarray,
  task: str,
  scale: int = 1,
) -> np.ndarray:
  """One slice as RGB: images [H, W, K] (each region's background), truth (or None) and
  prediction [H, W, K] region masks; a panel per region, named when there are several."""
  regions = REGION_NAMES[task]
  panels = []
  for k, region in enumerate(regions):
    rgb = overlays.overlay_rgb(
      images[..., k], None if truth is None else truth[..., k], prediction[..., k], scale
    )
    if len(regions) > 1:
      picture = Image.fromarray(rgb)
      font = ImageFont.load_default(size=max(10, rgb.shape[0] // 16))
      ImageDraw.Draw(picture).text((6, 4), _SHORT_NAME[region], fill=(255, 255, 255), font=font)
      rgb = np.asarray(picture)
    panels.append(rgb)
  return np.concatenate(panels, axis=1)


def save_gif(path: str, frames: Iterable[np.ndarray], milliseconds_per_frame: int = 100) -> None:
  """Writes RGB uint8 frames [H, W, 3] as a looping GIF, atomically."""
  pictures = [Image.fromarray(frame) for frame in frames]
  buffer = io.BytesIO()
  pictures[0].save(
    buffer,
    format="GIF",
    save_all=True,
    append_images=pictures[1:],
    duration=milliseconds_per_frame,
    loop=0,
  )
  atomic.write_bytes(path, buffer.getvalue())


def volume_gif(
  path: str,
  images: np.ndarray,
  truth: np.ndarray | None,
  prediction: np.ndarray,
  task: str,
  scale: int = 2,
) -> None:
  """GIF of every slice in order: images, truth (or None) and prediction [S, H, W, K], as
  `region_panels` draws them."""
  frames = [
    region_panels(images[i], None if truth is None else truth[i], prediction[i], task, scale)
    for i in range(len(images))
  ]
  save_gif(path, frames)
