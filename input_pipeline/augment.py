"""Training-time augmentation on whole batches, identical for image and label map.

Geometry is applied to the image and the label map together, before targets are
derived, so they cannot drift apart:
- flips and 90-degree rotations: one of the 8 symmetries of the square per batch;
- small rotation and scaling: a per-example angle and scale, applied to a batch with
  `rotate_scale_probability`. The batch's symmetry is folded into the same matrix, so a
  rotated batch is resampled once: bilinear for images, nearest for label maps, zero
  outside the slice.
Intensity scale and shift are per example and touch brain pixels only (background
stays 0). Randomness is stateless, drawn from a per-batch seed, so a seeded pipeline
is reproducible.

Speed (this is the costliest step of the reader on CPU): each path is a small XLA
function with no control flow, chosen per batch by ordinary TF control flow, because
XLA conditionals inside tf.data ran several times slower than separate functions. XLA
fuses symmetry, cast to float32 and intensity into one loop (Eigen needs a pass per op;
a reversal along the width is its slowest), and the resampler is plain gathers from the
input batch: XLA compiles them into one loop, several times faster on CPU than
`ImageProjectiveTransformV3` (which XLA cannot compile).
"""

import dataclasses
import math

import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  flip: bool = True
  rotate90: bool = True
  rotate_scale_probability: float = 0.5
  max_rotation_degrees: float = 15.0
  max_scale_delta: float = 0.1  # scale in [1 - d, 1 + d]
  max_intensity_scale_delta: float = 0.1  # image * [1 - d, 1 + d]
  max_intensity_shift: float = 0.1  # + [-d, d], in z-score units


NUM_SYMMETRIES = 8


def symmetric(x, index):
  """Symmetry `index` (0-7) of the square applied to x [B, H, W, ...]: bit 0 flips
  columns, bit 1 flips rows, bit 2 transposes, in that order."""
  if index & 1:
    x = tf.reverse(x, [2])
  if index & 2:
    x = tf.reverse(x, [1])
  if index & 4:
    x = tf.transpose(x, [0, 2, 1] + list(range(3, x.shape.rank)))
  return x


def symmetry_matrix(index):
  """The [2, 2] map from output to input coordinates (x, y about the centre) of
  `symmetric(., index)`; `index` may be a tensor."""
  index = tf.convert_to_tensor(index, tf.int32)
  c, r, t = (tf.cast(tf.bitwise.bitwise_and(tf.bitwise.right_shift(index, bit), 1), tf.float32)
             for bit in range(3))
  transpose = tf.stack([[1 - t, t], [t, 1 - t]])
  flip_rows = tf.linalg.diag(tf.stack([1.0, 1 - 2 * r]))
  flip_columns = tf.linalg.diag(tf.stack([1 - 2 * c, 1.0]))
  return flip_columns @ flip_rows @ transpose


def rotation_scale_matrices(seed, batch, config):
  """[B, 2, 2] maps from output to input coordinates: rotation by a random angle and
  scaling by a random factor, about the centre."""
  angle_seed, scale_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  angle = tf.random.stateless_uniform([batch], angle_seed, -1.0, 1.0) * math.radians(
      config.max_rotation_degrees)
  scale = 1.0 + tf.random.stateless_uniform([batch], scale_seed, -1.0, 1.0) * config.max_scale_delta
  cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
  return tf.reshape(tf.stack([cos, -sin, sin, cos], axis=1), [batch, 2, 2])


def _source_coordinates(shape, matrices):
  """Input (x, y) [B, H, W] read by each output pixel: input = M @ (output - centre) + centre."""
  height, width = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
  centre_x, centre_y = (width - 1) / 2, (height - 1) / 2
  y, x = tf.meshgrid(tf.range(height) - centre_y, tf.range(width) - centre_x, indexing="ij")
  m = matrices[:, :, :, None, None]
  return m[:, 0, 0] * x + m[:, 0, 1] * y + centre_x, m[:, 1, 0] * x + m[:, 1, 1] * y + centre_y


def _pixel_index(shape, row, column):
  """Flat index of (row, column) in a [B, H, W] batch (clipped), and whether it is inside."""
  height, width = shape[1], shape[2]
  inside = (column >= 0) & (column < width) & (row >= 0) & (row < height)
  index = ((tf.range(shape[0]) * height * width)[:, None, None]
           + tf.clip_by_value(row, 0, height - 1) * width + tf.clip_by_value(column, 0, width - 1))
  return index, inside


def resample_image(image, matrices):
  """Bilinear samples of image [B,H,W,C] at input = M @ output; zero outside; float32."""
  shape = tf.shape(image)
  pixels = tf.reshape(image, [-1, shape[3]])
  source_x, source_y = _source_coordinates(shape, matrices)
  floor_x, floor_y = tf.floor(source_x), tf.floor(source_y)
  fraction_x, fraction_y = (source_x - floor_x)[..., None], (source_y - floor_y)[..., None]
  x0, y0 = tf.cast(floor_x, tf.int32), tf.cast(floor_y, tf.int32)

  def tap(row, column):
    index, inside = _pixel_index(shape, row, column)
    return tf.where(inside[..., None], tf.cast(tf.gather(pixels, index), tf.float32), 0.0)

  top = (1 - fraction_x) * tap(y0, x0) + fraction_x * tap(y0, x0 + 1)
  bottom = (1 - fraction_x) * tap(y0 + 1, x0) + fraction_x * tap(y0 + 1, x0 + 1)
  return (1 - fraction_y) * top + fraction_y * bottom


def resample_label(label, matrices):
  """Nearest samples of label map [B,H,W] at input = M @ output; zero outside."""
  shape = tf.shape(label)
  source_x, source_y = _source_coordinates(shape, matrices)
  index, inside = _pixel_index(shape, tf.cast(tf.floor(source_y + 0.5), tf.int32),
                               tf.cast(tf.floor(source_x + 0.5), tf.int32))
  return tf.where(inside, tf.gather(tf.reshape(label, [-1]), index), tf.zeros([], label.dtype))


def shift_intensity(image, scale, shift):
  """Brain pixels (non-zero) * scale + shift; background stays 0."""
  return tf.where(image != 0.0, image * scale + shift, 0.0)


def _compiled(fn):
  return tf.function(fn, jit_compile=True, autograph=False)


_symmetric_images = [_compiled(lambda image, scale, shift, index=index: shift_intensity(
    tf.cast(symmetric(image, index), tf.float32), scale, shift)) for index in range(NUM_SYMMETRIES)]
_symmetric_labels = [_compiled(lambda label, index=index: symmetric(label, index))
                     for index in range(NUM_SYMMETRIES)]
_resampled_image = _compiled(lambda image, matrices, scale, shift: shift_intensity(
    resample_image(image, matrices), scale, shift))
_resampled_label = _compiled(resample_label)


def augment_batch(image, label, seed, config=AugmentConfig()):
  """Augments image [B,H,W,C] (any float dtype) and label map uint8 [B,H,W] with the same
  geometry; returns image float32 and label uint8.

  Args:
    seed: int64 [2] stateless seed for this batch.
  """
  seeds = tf.random.experimental.stateless_split(seed, 5)
  bits = tf.random.stateless_uniform([3], seeds[0], 0, 2, dtype=tf.int32)
  bits *= tf.constant([int(config.flip), int(config.flip), int(config.rotate90)])
  index = bits[0] + 2 * bits[1] + 4 * bits[2]

  batch, channels = tf.shape(image)[0], tf.shape(image)[3]
  scale = 1.0 + config.max_intensity_scale_delta * tf.random.stateless_uniform(
      [batch, 1, 1, channels], seeds[1], -1.0, 1.0)
  shift = config.max_intensity_shift * tf.random.stateless_uniform(
      [batch, 1, 1, channels], seeds[2], -1.0, 1.0)

  def symmetry_only():
    return (tf.switch_case(index, [lambda fn=fn: fn(image, scale, shift)
                                   for fn in _symmetric_images]),
            tf.switch_case(index, [lambda fn=fn: fn(label) for fn in _symmetric_labels]))

  def symmetry_rotate_scale():
    matrices = symmetry_matrix(index) @ rotation_scale_matrices(seeds[3], batch, config)
    return _resampled_image(image, matrices, scale, shift), _resampled_label(label, matrices)

  if config.rotate_scale_probability <= 0:
    return symmetry_only()
  apply = tf.random.stateless_uniform([], seeds[4]) < config.rotate_scale_probability
  return tf.cond(apply, symmetry_rotate_scale, symmetry_only)
