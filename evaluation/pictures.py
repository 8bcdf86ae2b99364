"""Overlays (grey MRI, green truth, red prediction, yellow overlap) and GIFs through a volume."""

import io

import numpy as np
from PIL import Image

from data_prep import atomic
from data_prep import overlays

TRUTH_COLOR = (40, 220, 40)
PREDICTION_COLOR = (230, 40, 40)
AGREEMENT_COLOR = (250, 230, 40)


def overlay_rgb(image, truth, prediction, scale=1):
  """One slice: grey MRI [H, W], green truth only, red prediction only, yellow both."""
  rgb = overlays.to_grey_rgb(image)
  truth = np.zeros(image.shape, bool) if truth is None else np.asarray(truth, bool)
  prediction = np.asarray(prediction, bool)
  rgb = overlays.blend(rgb, truth & ~prediction, TRUTH_COLOR)
  rgb = overlays.blend(rgb, prediction & ~truth, PREDICTION_COLOR)
  rgb = overlays.blend(rgb, truth & prediction, AGREEMENT_COLOR)
  if scale > 1:
    rgb = np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1)
  return rgb


def save_gif(path, frames, milliseconds_per_frame=100):
  """Writes RGB uint8 frames [H, W, 3] as a looping GIF, atomically."""
  pictures = [Image.fromarray(frame) for frame in frames]
  buffer = io.BytesIO()
  pictures[0].save(buffer, format="GIF", save_all=True, append_images=pictures[1:],
                   duration=milliseconds_per_frame, loop=0)
  atomic.write_bytes(path, buffer.getvalue())


def volume_gif(path, images, truth, prediction, scale=2):
  """GIF of every slice in order: images [S, H, W], truth (or None) and prediction [S, H, W]."""
  frames = [overlay_rgb(images[i], None if truth is None else truth[i], prediction[i], scale)
            for i in range(len(images))]
  save_gif(path, frames)
