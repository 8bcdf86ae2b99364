"""Training-time augmentation on whole batches, identical for image and label map.

Geometry is applied to the image and the label map together, before targets are
derived, so they cannot drift apart:
- flips and 90-degree rotations: one of the 8 symmetries of the square per batch;
- small rotation and scaling: a per-example angle and scale, applied to a batch with
  `rotate_scale_probability`. The batch's symmetry is folded into the same matrix, so a
  rotated batch is resampled once: bilinear for images, nearest for label maps, zero
  outside the slice.
Intensity scale and shift are per (example, modality) and touch brain pixels only
(background stays 0); with 2.5D context, a modality's context channels share them.
Randomness is stateless, drawn from a per-batch seed, so a seeded pipeline is reproducible.

After the geometry come, when the config asks for them, fainter edema
(`faint_edema`) and then other sites' intensities (`site_augmentation`): see
`site_augment`. The geometry itself is in `geometry`, the choices in `augment_config`.

Speed (this is the costliest step of the reader on CPU): each path is a small XLA
function with no control flow, chosen per batch by ordinary TF control flow, because
XLA conditionals inside tf.data ran several times slower than separate functions. XLA
fuses symmetry, cast to float32 and intensity into one loop (Eigen needs a pass per op;
a reversal along the width is its slowest), and the resampler's gathers into another.
"""

import tensorflow as tf

from input_pipeline import geometry
from input_pipeline import site_augment
from input_pipeline.augment_config import AugmentConfig
from input_pipeline.geometry import NUM_SYMMETRIES
from input_pipeline.xla import compiled


def shift_intensity(
  image: tf.Tensor, scale: tf.Tensor | float, shift: tf.Tensor | float
) -> tf.Tensor:
  """Brain pixels (non-zero) * scale + shift; background stays 0."""
  return tf.where(image != 0.0, image * scale + shift, 0.0)


_symmetric_images = [
  compiled(
    lambda image, scale, shift, index=index: shift_intensity(
      tf.cast(geometry.symmetric(image, index), tf.float32), scale, shift
    )
  )
  for index in range(NUM_SYMMETRIES)
]
_symmetric_labels = [
  compiled(lambda label, index=index: geometry.symmetric(label, index))
  for index in range(NUM_SYMMETRIES)
]
_resampled_image = compiled(
  lambda image, matrices, scale, shift: shift_intensity(
    geometry.resample_image(image, matrices), scale, shift
  )
)
_resampled_label = compiled(geometry.resample_label)


def augment_batch(
  image: tf.Tensor,
  label: tf.Tensor,
  seed: tf.Tensor,
  config: AugmentConfig = AugmentConfig(),
  num_modalities: int | None = None,
) -> tuple[tf.Tensor, tf.Tensor]:
  """Augments image [B,H,W,C] (any float dtype) and label map uint8 [B,H,W] with the same
  geometry, then intensities (site-like ones with `config.site_augmentation`); returns
  image float32 and label uint8.

  Args:
    seed: int64 [2] stateless seed for this batch.
    num_modalities: M when the C channels are K context slices of M modalities,
      slice-major; intensity draws are per (example, modality). None: C modalities.
  """
  seeds = tf.random.experimental.stateless_split(seed, 5)
  bits = tf.random.stateless_uniform([3], seeds[0], 0, 2, dtype=tf.int32)
  bits *= tf.constant([int(config.flip), int(config.flip), int(config.rotate90)])
  index = bits[0] + 2 * bits[1] + 4 * bits[2]

  batch, channels = tf.shape(image)[0], tf.shape(image)[3]
  modalities = _num_modalities(image, num_modalities)
  scale = 1.0 + config.max_intensity_scale_delta * tf.random.stateless_uniform(
    [batch, 1, 1, modalities], seeds[1], -1.0, 1.0
  )
  shift = config.max_intensity_shift * tf.random.stateless_uniform(
    [batch, 1, 1, modalities], seeds[2], -1.0, 1.0
  )
  scale, shift = (tf.tile(x, [1, 1, 1, channels // modalities]) for x in (scale, shift))

  def symmetry_only():
    return (
      tf.switch_case(index, [lambda fn=fn: fn(image, scale, shift) for fn in _symmetric_images]),
      tf.switch_case(index, [lambda fn=fn: fn(label) for fn in _symmetric_labels]),
    )

  def symmetry_rotate_scale():
    matrices = geometry.symmetry_matrix(index) @ geometry.rotation_scale_matrices(
      seeds[3], batch, config
    )
    return _resampled_image(image, matrices, scale, shift), _resampled_label(label, matrices)

  if config.rotate_scale_probability <= 0:
    image, label = symmetry_only()
  else:
    apply = tf.random.stateless_uniform([], seeds[4]) < config.rotate_scale_probability
    image, label = tf.cond(apply, symmetry_rotate_scale, symmetry_only)
  if config.faint_edema and config.faint_edema_probability > 0:
    if not isinstance(modalities, int):
      raise ValueError("faint-edema augmentation needs the channels known when tracing")
    image = site_augment.fade_edema(
      image, label, tf.random.experimental.stateless_fold_in(seed, 2), config, modalities
    )
  if config.site_augmentation:
    if not (isinstance(modalities, int) and image.shape[1:].is_fully_defined()):
      raise ValueError("site augmentation needs height, width and channels known when tracing")
    site_seed = tf.random.experimental.stateless_fold_in(seed, 1)  # geometry's draws unchanged
    changes = site_augment.draw_site_changes(
      site_seed, batch, config, modalities, image.shape[3] // modalities
    )
    image = site_augment.site_intensity(image, changes, config, modalities)
  return image, label


def _num_modalities(image, num_modalities):
  """M: `num_modalities`, checked against the channels, or every channel its own modality."""
  channels = image.shape[3]
  if num_modalities is None:
    return channels if channels is not None else tf.shape(image)[3]
  if channels is not None and channels % num_modalities:
    raise ValueError(f"{channels} channels are not context slices of {num_modalities} modalities")
  return num_modalities
