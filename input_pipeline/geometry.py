"""Geometry of the training-time augmentation, for a batch of images and label maps alike:
the 8 symmetries of the square (which test-time augmentation undoes) and a small rotation and
scaling, resampled by plain gathers that XLA compiles into one loop, several times faster
on CPU than `ImageProjectiveTransformV3` (which XLA cannot compile)."""

import math

import tensorflow as tf

from input_pipeline.augment_config import AugmentConfig


NUM_SYMMETRIES = 8


def symmetric(x: tf.Tensor, index: int) -> tf.Tensor:
  """Symmetry `index` (0-7) of the square applied to x [B, H, W, ...]: bit 0 flips
  columns, bit 1 flips rows, bit 2 transposes, in that order."""
  if index & 1:
    x = tf.reverse(x, [2])
  if index & 2:
    x = tf.reverse(x, [1])
  if index & 4:
    x = tf.transpose(x, [0, 2, 1] + list(range(3, x.shape.rank)))
  return x


def random_patches(
  image: tf.Tensor, label: tf.Tensor, size: int, seed: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
  """A `size` x `size` window of each example of image [B, H, W, C] and label map [B, H, W],
  the same window for both, placed uniformly at random per example (seed: int64 [2])."""
  batch, height, width = tf.shape(image)[0], tf.shape(image)[1], tf.shape(image)[2]
  corner = tf.random.stateless_uniform([batch, 2], seed, 0, 2**30, dtype=tf.int32)
  top = corner[:, 0] % (height - size + 1)
  left = corner[:, 1] % (width - size + 1)
  rows = top[:, None] + tf.range(size)[None]  # [B, size]
  columns = left[:, None] + tf.range(size)[None]

  def crop(x):
    return tf.gather(tf.gather(x, rows, axis=1, batch_dims=1), columns, axis=2, batch_dims=1)

  return crop(image), crop(label)


def symmetry_matrix(index: int | tf.Tensor) -> tf.Tensor:
  """The [2, 2] map from output to input coordinates (x, y about the centre) of
  `symmetric(., index)`; `index` may be a tensor."""
  index = tf.convert_to_tensor(index, tf.int32)
  c, r, t = (
    tf.cast(tf.bitwise.bitwise_and(tf.bitwise.right_shift(index, bit), 1), tf.float32)
    for bit in range(3)
  )
  transpose = tf.stack([[1 - t, t], [t, 1 - t]])
  flip_rows = tf.linalg.diag(tf.stack([1.0, 1 - 2 * r]))
  flip_columns = tf.linalg.diag(tf.stack([1 - 2 * c, 1.0]))
  return flip_columns @ flip_rows @ transpose


def rotation_scale_matrices(
  seed: tf.Tensor, batch: int | tf.Tensor, config: AugmentConfig
) -> tf.Tensor:
  """[B, 2, 2] maps from output to input coordinates: rotation by a random angle and
  scaling by a random factor, about the centre."""
  angle_seed, scale_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  angle = tf.random.stateless_uniform([batch], angle_seed, -1.0, 1.0) * math.radians(
    config.max_rotation_degrees
  )
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
  index = (
    (tf.range(shape[0]) * height * width)[:, None, None]
    + tf.clip_by_value(row, 0, height - 1) * width
    + tf.clip_by_value(column, 0, width - 1)
  )
  return index, inside


def resample_image(image: tf.Tensor, matrices: tf.Tensor) -> tf.Tensor:
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


def resample_label(label: tf.Tensor, matrices: tf.Tensor) -> tf.Tensor:
  """Nearest samples of label map [B,H,W] at input = M @ output; zero outside."""
  shape = tf.shape(label)
  source_x, source_y = _source_coordinates(shape, matrices)
  index, inside = _pixel_index(
    shape, tf.cast(tf.floor(source_y + 0.5), tf.int32), tf.cast(tf.floor(source_x + 0.5), tf.int32)
  )
  return tf.where(inside, tf.gather(tf.reshape(label, [-1]), index), tf.zeros([], label.dtype))
