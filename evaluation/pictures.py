"""GIFs through a volume, each frame a `data_prep.overlays.overlay_rgb` (grey MRI, green truth,
red prediction, yellow overlap)."""

from collections.abc import Iterable
import io

import numpy as np
from PIL import Image

from data_prep import atomic
from data_prep import overlays


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
  path: str, images: np.ndarray, truth: np.ndarray | None, prediction: np.ndarray, scale: int = 2
) -> None:
  """GIF of every slice in order: images [S, H, W], truth (or None) and prediction [S, H, W]."""
  frames = [
    overlays.overlay_rgb(images[i], None if truth is None else truth[i], prediction[i], scale)
    for i in range(len(images))
  ]
  save_gif(path, frames)
