"""Inspection pictures: a grey slice with coloured regions blended on top, saved as PNG.

Pure numpy compositing plus `matplotlib.image.imsave`, so no figure machinery and
the same pixels every time.
"""

import io

import numpy as np

from data_prep import atomic

# Unified label -> RGB, for inspecting converted label maps.
LABEL_COLORS = {1: (255, 60, 60), 2: (60, 220, 60), 3: (255, 230, 40)}
_ALPHA = 0.5


def to_grey_rgb(image):
  """A normalized slice [H, W] as uint8 RGB, scaled over its brain range (background black)."""
  image = np.asarray(image, dtype=np.float32)
  brain = image != 0
  low, high = np.percentile(image[brain], (0.5, 99.5)) if brain.any() else (0.0, 1.0)
  scaled = np.clip((image - low) / max(high - low, 1e-6), 0.0, 1.0)
  scaled[~brain] = 0.0
  grey = (scaled * 255).astype(np.uint8)
  return np.stack([grey] * 3, axis=-1)


def blend(rgb, mask, color, alpha=_ALPHA):
  """Blends `color` into `rgb` where `mask` is true."""
  out = rgb.astype(np.float32)
  out[mask] = (1 - alpha) * out[mask] + alpha * np.asarray(color, dtype=np.float32)
  return out.astype(np.uint8)


def label_overlay(image, labels):
  """Grey slice with each tumour sub-region in its colour."""
  rgb = to_grey_rgb(image)
  for label, color in LABEL_COLORS.items():
    rgb = blend(rgb, labels == label, color)
  return rgb


def encode_png(rgb):
  import matplotlib

  matplotlib.use("Agg")
  from matplotlib import image as mpimg

  buffer = io.BytesIO()
  mpimg.imsave(buffer, rgb, format="png")
  return buffer.getvalue()


def save_png(path, rgb, scale=1):
  """Writes an RGB uint8 array as PNG atomically, optionally enlarged `scale` times."""
  if scale > 1:
    rgb = np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1)
  atomic.write_bytes(path, encode_png(rgb))


TRUTH_COLOR = (40, 220, 40)
PREDICTION_COLOR = (230, 40, 40)
AGREEMENT_COLOR = (250, 230, 40)


def overlay_rgb(image, truth, prediction, scale=1):
  """One slice: grey MRI [H, W], green truth only, red prediction only, yellow both."""
  rgb = to_grey_rgb(image)
  truth = np.zeros(image.shape, bool) if truth is None else np.asarray(truth, bool)
  prediction = np.asarray(prediction, bool)
  rgb = blend(rgb, truth & ~prediction, TRUTH_COLOR)
  rgb = blend(rgb, prediction & ~truth, PREDICTION_COLOR)
  rgb = blend(rgb, truth & prediction, AGREEMENT_COLOR)
  if scale > 1:
    rgb = np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1)
  return rgb
