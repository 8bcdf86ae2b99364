"""Site augmentation: intensities of patients from other sites, and fainter edema.

The training cases come from one institution, but at other sites the tumour stands out
less from normal brain after the z-score and intensities change more from slice to slice
(`site_intensity`). In the patients the models miss most, and at some sites, the edema is
no brighter than the bright end of normal brain (`fade_edema`). Both run after the
geometry, on float32 images that are 0 outside the brain, and keep them so.

Speed: each step is a small XLA function; the comments say which fusions were slower.
"""

from collections.abc import Sequence
import functools
import math

import tensorflow as tf

from data_prep.labels import EDEMA
from input_pipeline.augment_config import AugmentConfig
from input_pipeline.xla import compiled


# Site augmentation. Images are [B, M, K, H, W] here: statistics and draws are per
# (example, modality) and shared by the K context slices, and XLA's loops on CPU
# vectorize along a long last axis (a last axis of M = 1 to 4 channels ran about twice
# slower). Images stay 0 outside the brain between the steps, so brain sums are plain
# sums.

_BRAIN_AXES = (2, 3, 4)
_BIG = 1e9
_SMALLEST_NORMAL = 1.1754944e-38  # float32


def split_modalities(image: tf.Tensor, num_modalities: int) -> tf.Tensor:
  """[B, H, W, C] -> [B, M, K, H, W]; the channels are slice-major (offset, then modality)."""
  shape = tf.shape(image)
  x = tf.reshape(image, [shape[0], shape[1], shape[2], -1, num_modalities])
  return tf.transpose(x, [0, 4, 3, 1, 2])


def merge_modalities(x: tf.Tensor) -> tf.Tensor:
  """The inverse of `split_modalities`."""
  shape = tf.shape(x)
  x = tf.transpose(x, [0, 3, 4, 2, 1])
  return tf.reshape(x, [shape[0], shape[3], shape[4], shape[1] * shape[2]])


def sum_per_modality(values: tf.Tensor) -> tf.Tensor:
  """Sums of [B, M, K, H, W] over K, H, W as [B, M, 1, 1, 1], by a matrix-vector product:
  XLA on CPU ran a sum of an expression (x * x, x != 0) 2-3x slower than the product."""
  shape = tf.shape(values)
  rows = tf.reshape(values, [shape[0] * shape[1], -1])
  sums = tf.linalg.matvec(rows, tf.ones(tf.shape(rows)[1:]))
  return tf.reshape(sums, [shape[0], shape[1], 1, 1, 1])


def brain_moments(x: tf.Tensor, count: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  """Mean and std [B, M, 1, 1, 1] of the brain pixels of each (example, modality), from x
  [B, M, K, H, W] that is 0 outside the brain and the brain's pixel `count`."""
  mean = sum_per_modality(x) / count
  mean_square = sum_per_modality(tf.square(x)) / count
  return mean, tf.sqrt(tf.maximum(mean_square - tf.square(mean), 0.0))


def brain_range(x: tf.Tensor, brain: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  """Min and max [B, M, 1, 1, 1] of the brain pixels of each (example, modality)."""
  low = tf.reduce_min(tf.where(brain, x, _BIG), _BRAIN_AXES, keepdims=True)
  high = tf.reduce_max(tf.where(brain, x, -_BIG), _BRAIN_AXES, keepdims=True)
  return low, tf.maximum(high, low)


def brain_median(
  x: tf.Tensor, brain: tf.Tensor, low: tf.Tensor, high: tf.Tensor, steps: int = 10
) -> tf.Tensor:
  """Median of the brain pixels per (example, modality), to (high - low) / 2**steps, by
  bisection on a count: XLA on CPU has no cheap median, and a sort per example would cost
  more than all the rest. Every fourth row and column suffice for a curve's pivot."""
  x, brain = x[..., ::4, ::4], tf.cast(brain[..., ::4, ::4], tf.float32)
  half = 0.5 * sum_per_modality(brain)
  for _ in range(steps):
    middle = 0.5 * (low + high)
    below = sum_per_modality(tf.where(x <= middle, brain, 0.0))
    low, high = tf.where(below >= half, low, middle), tf.where(below >= half, middle, high)
  return 0.5 * (low + high)


def intensity_curve(
  x: tf.Tensor, brain: tf.Tensor, gamma: tf.Tensor, compression: tf.Tensor
) -> tf.Tensor:
  """A monotone curve per (example, modality): gamma on the brain's [min, max] rescaled to
  [0, 1] and back, then values above the median pulled towards it by `compression`
  (continuous at the median, so still monotone). Gamma < 1 and compression < 1 lower the
  contrast of bright tumour against normal brain, as at other sites."""
  low, high = brain_range(x, brain)
  span = tf.maximum(high - low, 1e-6)
  # u ** gamma as exp(gamma log u) (0 for u = 0): XLA's pow on CPU took 3x as long.
  power = lambda u: tf.exp(gamma * tf.math.log(u))
  curve = lambda v: low + span * power(tf.clip_by_value((v - low) / span, 0.0, 1.0))
  median = curve(brain_median(x, brain, low, high))
  y = curve(x)
  y = tf.where(y > median, median + compression * (y - median), y)
  return tf.where(brain, y, 0.0)


def bias_field(
  height: int, width: int, coefficients: tf.Tensor, amplitude: tf.Tensor, degree: int
) -> tf.Tensor:
  """exp(amplitude * p) [B, M, 1, H, W], p = sum of coefficients [B, M, T] times the
  monomials x^i y^j (1 <= i + j <= degree) on [-1, 1]^2, scaled to max |p| = 1."""
  y, x = tf.meshgrid(tf.linspace(-1.0, 1.0, height), tf.linspace(-1.0, 1.0, width), indexing="ij")
  monomials = tf.stack(
    [x**i * y**j for i in range(degree + 1) for j in range(degree + 1 - i) if i + j > 0]
  )
  p = tf.einsum("bmt,thw->bmhw", coefficients, monomials)
  p /= tf.maximum(tf.reduce_max(tf.abs(p), [2, 3], keepdims=True), 1e-6)
  return tf.exp(amplitude[:, :, None, None] * p)[:, :, None]


def num_bias_field_terms(degree: int) -> int:
  return (degree + 1) * (degree + 2) // 2 - 1


def gaussian_taps(sigma: tf.Tensor, radius: int) -> tf.Tensor:
  """[..., 1, 2r+1] normalized Gaussian taps for each sigma [...]."""
  offsets = tf.range(-radius, radius + 1, dtype=tf.float32)
  taps = tf.exp(-0.5 * tf.square(offsets / sigma[..., None, None]))
  return taps / tf.reduce_sum(taps, -1, keepdims=True)


def _hat(z):
  return tf.maximum(1.0 - tf.abs(z), 0.0)


def low_resolution_taps(factor: tf.Tensor, length: int, radius: int) -> tf.Tensor:
  """[..., L, 2r+1] weights of row i + t in output row i (t = -r..r) for downsampling a
  length L by `factor` [...] and back: n = ceil(L / factor) samples (triangle filter,
  as data_prep's resize), then linear interpolation, i.e. the bands of
  linear_resize_matrix(n, L) @ linear_resize_matrix(L, n). Needs r >= ceil(2 factor) - 1."""
  size = tf.cast(length, tf.float32)
  count = tf.math.ceil(size / factor)[..., None]
  spacing = size / count
  rows = tf.range(size)
  position = (rows + 0.5) / spacing - 0.5  # in low-resolution samples
  inside = lambda h: tf.cast((h >= 0) & (h < size), tf.float32)

  def down(sample, h):
    """Weight of row h in the low-resolution sample, normalized over the rows inside."""
    centre = (sample + 0.5) * spacing - 0.5
    base = tf.floor(centre)
    total = tf.add_n(
      [_hat((base + q - centre) / spacing) * inside(base + q) for q in range(-radius, radius + 1)]
    )
    return _hat((h - centre) / spacing) * inside(h) / tf.maximum(total, 1e-6)

  samples = [tf.floor(position), tf.floor(position) + 1]
  up = [_hat(position - j) * tf.cast((j >= 0) & (j < count), tf.float32) for j in samples]
  up_total = up[0] + up[1]
  return tf.stack(
    [
      sum(u / up_total * down(j, rows + t) for u, j in zip(up, samples))
      for t in range(-radius, radius + 1)
    ],
    axis=-1,
  )


def compose_taps(outer: tf.Tensor, inner: tf.Tensor) -> tf.Tensor:
  """Taps [B, M, L, T1 + T2 - 1] of filtering with `inner` [B, M, 1, T2] (the same at every
  position) and then with `outer` [B, M, L, T1]: one pass instead of two."""
  size = outer.shape[-1]
  return tf.add_n(
    [tf.pad(outer[..., a : a + 1] * inner, [[0, 0]] * 3 + [[a, size - 1 - a]]) for a in range(size)]
  )


def filter_along(x: tf.Tensor, taps: tf.Tensor, axis: int) -> tf.Tensor:
  """sum over t of taps[..., t] * (x shifted by t - r) along `axis` (3 rows, 4 columns) of
  x [B, M, K, H, W], zero outside; taps [B, M, L or 1, 2r+1]."""
  radius = taps.shape[-1] // 2
  padding = [[0, 0]] * 5
  padding[axis] = [radius, radius]
  padded = tf.pad(x, padding)
  weights = tf.transpose(taps, [3, 0, 1, 2])[:, :, :, None]  # [T, B, M, 1, L]
  weights = weights[..., None] if axis == 3 else weights[..., None, :]
  begin, size = [0] * 5, [-1] * 5
  size[axis] = tf.shape(x)[axis]
  total = 0.0
  for t in range(2 * radius + 1):
    begin[axis] = t
    total += weights[t] * tf.slice(padded, begin, size)
  return total


def smooth_within_brain(
  x: tf.Tensor, brain: tf.Tensor, rows: tf.Tensor, columns: tf.Tensor
) -> tf.Tensor:
  """Filters brain pixels only, rows then columns (normalized convolution): the background
  neither leaks in as zeros at the brain's edge nor gets filled in."""
  return _smooth_columns(_smooth_rows(x, brain, rows), brain, columns)


def _smooth_rows(x, brain, rows):
  """The first pass of `smooth_within_brain`: brain intensities and mask filtered along
  rows, stacked on the context axis."""
  return filter_along(tf.concat([x, tf.cast(brain, tf.float32)], axis=2), rows, 3)


def _smooth_columns(rows_filtered, brain, columns):
  value, weight = tf.split(filter_along(rows_filtered, columns, 4), 2, axis=2)
  return tf.where(brain, value / tf.maximum(weight, 1e-6), 0.0)


def restandardize(
  x: tf.Tensor, count: tf.Tensor, mean: tf.Tensor, std: tf.Tensor, clip: float
) -> tf.Tensor:
  """Gives each (example, modality) back the brain mean and std it had before the site
  changes, clipped as the normalization clips.

  Why: the model only sees z-scored images. Another site's patient, z-scored, has the usual
  mean and spread but a differently shaped histogram (less tumour contrast). The changes
  here also shift and stretch the histogram (gamma moves the mean, a bias field widens it),
  which that z-score would undo; so only the shape is kept. The slice's own moments, not
  0 and 1: slices of a volume z-score have their own, and the scale and shift augmentation
  before this sets them on purpose. (Data normalized by median and IQR keep their range
  this way too, though not exactly their median and IQR.)
  """
  new_mean, new_std = brain_moments(x, count)
  x = (x - new_mean) * (std / tf.maximum(new_std, 1e-6)) + mean
  return tf.clip_by_value(x, -clip, clip)


def approximately_normal(shape: tf.Tensor | Sequence[int], seed: tf.Tensor) -> tf.Tensor:
  """Standard normal noise, approximately: the sum of four uniform random bytes, centred
  and scaled (Irwin-Hall: mean 0, std 1, cut at 3.5 std). XLA on CPU drew exact normal
  noise 6x slower, and tails do not matter for noise this small."""
  bits = tf.random.stateless_uniform(shape, seed, None, None, tf.uint32, alg="threefry")
  total = tf.add_n(
    [tf.bitwise.bitwise_and(tf.bitwise.right_shift(bits, shift), 255) for shift in (0, 8, 16, 24)]
  )
  return (tf.cast(total, tf.float32) - 510.0) / math.sqrt(4 * (256**2 - 1) / 12)


def draw_site_changes(
  seed: tf.Tensor,
  batch: int | tf.Tensor,
  config: AugmentConfig,
  num_modalities: int,
  num_context: int,
) -> dict[str, tf.Tensor]:
  """The random choices of `site_intensity` for a batch, in plain TF: XLA fuses a small
  draw into the loop that uses it and redraws it for every pixel (a few numbers then cost
  as much as a whole image). Everything is drawn whatever the config, so each change
  keeps its draws when others are switched off."""
  seeds = iter(tf.unstack(tf.random.experimental.stateless_split(seed, 16)))
  per_modality = [batch, num_modalities, 1, 1, 1]
  draw = lambda low, high, shape=per_modality: tf.random.stateless_uniform(
    shape, next(seeds), low, high
  )
  chance = lambda probability, shape=per_modality: draw(0.0, 1.0, shape) < probability
  return {
    "curve": chance(config.curve_probability),
    "gamma": tf.exp(draw(*map(math.log, config.gamma_range))),
    "compression": draw(*config.bright_compression_range),
    "bias_field": chance(config.bias_field_probability),
    "bias_coefficients": draw(
      -1.0, 1.0, [batch, num_modalities, num_bias_field_terms(config.bias_field_degree)]
    ),
    "bias_amplitude": draw(0.0, config.max_bias_field_log, [batch, num_modalities]),
    "blur": chance(config.blur_probability),
    "blur_sigma": draw(*config.blur_sigma_range, [batch, num_modalities]),
    "low_resolution": chance(config.low_resolution_probability),
    "low_resolution_factor": draw(*config.low_resolution_factor_range, [batch, num_modalities]),
    "noise": chance(config.noise_probability),
    "noise_std": draw(0.0, config.max_noise_std),  # x the brain's std
    "noise_seed": next(seeds),
    "slice_jitter": chance(config.slice_jitter_probability, [batch, 1, 1, 1, 1]),
    "slice_scale": 1.0
    + draw(
      -config.max_slice_jitter, config.max_slice_jitter, [batch, num_modalities, num_context, 1, 1]
    ),
  }


def _edema_fade(x, weight, apply, keep):
  """x [B, M, K, H, W] with the brain above its median pulled towards the median where
  `weight` [B, 1, 1, H, W] (the smoothed edema) is 1, keeping the share `keep` of the
  distance, on the (example, modality) pairs where `apply`."""
  brain = x != 0.0
  median = brain_median(x, brain, *brain_range(x, brain))
  faded = x - (1.0 - keep) * weight * tf.maximum(x - median, 0.0)
  faded = tf.where(brain, tf.where(faded == 0.0, _SMALLEST_NORMAL, faded), 0.0)
  return tf.where(apply, faded, x)


_compiled_edema_fade = compiled(_edema_fade)


def fade_edema(
  image: tf.Tensor, label: tf.Tensor, seed: tf.Tensor, config: AugmentConfig, num_modalities: int
) -> tf.Tensor:
  """Fainter edema for image float32 [B, H, W, C] (C: context slices of `num_modalities`
  modalities, slice-major) from its label map uint8 [B, H, W]: on a share
  `faint_edema_probability` of the (example, modality) pairs, brain intensities above the
  median, inside the edema (label 2), keep a share f of their distance to the median. The
  fade tapers off outside the edema's border (`faint_edema_sigma`), so no step at the border
  tells the model where the label is; the centre slice's edema stands for its context
  slices'. Voxels at or below the median, the core and the background do not change."""
  batch = tf.shape(image)[0]
  seeds = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  shape = [batch, num_modalities, 1, 1, 1]
  apply = tf.random.stateless_uniform(shape, seeds[0]) < config.faint_edema_probability
  keep = tf.random.stateless_uniform(shape, seeds[1], *config.faint_edema_range)
  edema = tf.cast(label == EDEMA, tf.float32)[:, None, None]
  sigma = config.faint_edema_sigma
  taps = tf.reshape(
    gaussian_taps(tf.constant(sigma), max(1, math.ceil(2.5 * sigma))), [1, 1, 1, -1]
  )
  # Twice the smoothed mask: 1 inside the edema up to its border, tapering off outside.
  weight = tf.minimum(2.0 * filter_along(filter_along(edema, taps, 3), taps, 4), 1.0)
  x = _compiled_edema_fade(split_modalities(image, num_modalities), weight, apply, keep)
  return tf.ensure_shape(merge_modalities(x), image.shape)  # site_intensity needs it known


def _delta(radius):
  """Taps that leave a row as it is."""
  return tf.one_hot(radius, 2 * radius + 1)


def smoothing_taps(
  changes: dict[str, tf.Tensor], config: AugmentConfig, length: int
) -> tf.Tensor | None:
  """Taps [B, M, L or 1, T] along an axis of `length` for blur then low resolution, each
  where drawn (identity elsewhere); None when both are off."""
  taps = None
  if config.blur_probability > 0:
    radius = max(1, math.ceil(2.5 * config.blur_sigma_range[1]))
    taps = tf.where(
      changes["blur"][..., 0], gaussian_taps(changes["blur_sigma"], radius), _delta(radius)
    )
  if config.low_resolution_probability > 0:
    radius = max(1, math.ceil(2 * config.low_resolution_factor_range[1]) - 1)
    low = tf.where(
      changes["low_resolution"][..., 0],
      low_resolution_taps(changes["low_resolution_factor"], length, radius),
      _delta(radius),
    )
    taps = low if taps is None else compose_taps(low, taps)
  return taps


def _site_contrast(x, changes, config):
  """The brain's mask, pixel count, mean and std; the intensity curve and the bias field
  where drawn. Returns those and x, and where it changed."""
  brain = x != 0.0
  count = tf.maximum(sum_per_modality(tf.cast(brain, tf.float32)), 1.0)
  mean, std = brain_moments(x, count)
  changed = tf.zeros_like(changes["curve"])
  if config.curve_probability > 0:
    curved = intensity_curve(x, brain, changes["gamma"], changes["compression"])
    x, changed = tf.where(changes["curve"], curved, x), changed | changes["curve"]
  if config.bias_field_probability > 0:
    field = bias_field(
      x.shape[3],
      x.shape[4],
      changes["bias_coefficients"],
      changes["bias_amplitude"],
      config.bias_field_degree,
    )
    x = tf.where(changes["bias_field"], x * field, x)
    changed |= changes["bias_field"]
  return x, brain, count, mean, std, changed


def _site_acquisition(x, brain, std, rows_filtered, columns, changes, config):
  """Blur, low resolution and noise, where drawn; returns x and where it changed.

  Args:
    rows_filtered, columns: `_smooth_rows(...)` and the column taps, or None.
  """
  changed = tf.zeros_like(changes["curve"])
  if columns is not None:
    smooth = _smooth_columns(rows_filtered, brain, columns)
    apply = changes["blur"] | changes["low_resolution"]
    x, changed = tf.where(apply, smooth, x), apply
  if config.noise_probability > 0:
    noise = approximately_normal(tf.shape(x), changes["noise_seed"])
    noisy = tf.where(brain, x + noise * (changes["noise_std"] * std), 0.0)
    x, changed = tf.where(changes["noise"], noisy, x), changed | changes["noise"]
  return x, changed


def _site_finish(x, brain, count, mean, std, changed, changes, config):
  """Moments back where changed, then the slice jitter; back to [B, H, W, C]."""
  x = tf.where(changed, restandardize(x, count, mean, std, config.clip), x)
  if config.slice_jitter_probability > 0:
    x = tf.where(changes["slice_jitter"], x * changes["slice_scale"], x)
  x = tf.where(brain, tf.where(x == 0.0, _SMALLEST_NORMAL, x), 0.0)  # brain = pixels != 0
  return merge_modalities(x)


@functools.lru_cache(maxsize=None)
def _compiled_site_steps(config, num_modalities):
  """The steps of `site_intensity`, each compiled on its own, so that every sum and every
  filter reads an image in memory: in one XLA function, XLA fused producers (the layout
  change, the row filter) into each of their consumers and recomputed them, and the
  whole took 1.6x as long."""
  return (
    compiled(functools.partial(split_modalities, num_modalities=num_modalities)),
    compiled(functools.partial(_site_contrast, config=config)),
    compiled(_smooth_rows),
    compiled(functools.partial(_site_acquisition, config=config)),
    compiled(functools.partial(_site_finish, config=config)),
  )


def site_intensity(
  image: tf.Tensor, changes: dict[str, tf.Tensor], config: AugmentConfig, num_modalities: int
) -> tf.Tensor:
  """Other-site intensities for image float32 [B, H, W, C], background 0 and kept 0.

  C is K context slices of `num_modalities` modalities, slice-major. Each (example,
  modality) gets, each with its probability in `config` and in this order: a monotone
  intensity curve, a smooth multiplicative bias field, Gaussian blur, a lower in-plane
  resolution, noise; then its brain mean and std back (`restandardize`). The draws are
  shared by the modality's context slices, which see the same site. Last comes a small
  scale per (example, channel): at other sites intensities change more from slice to
  slice. A change whose probability is 0 is left out of the graph.

  Args:
    changes: `draw_site_changes(...)`.
  """
  split, contrast, smooth_rows, acquisition, finish = _compiled_site_steps(config, num_modalities)
  x, brain, count, mean, std, changed = contrast(split(image), changes)
  # Taps are small but costly: computed here, not in XLA, which fused them into the
  # filter's loop and computed them again for every pixel (3x slower).
  rows, columns = (smoothing_taps(changes, config, length) for length in image.shape[1:3])
  rows_filtered = None if rows is None else smooth_rows(x, brain, rows)
  if rows is not None or config.noise_probability > 0:
    x, acquired = acquisition(x, brain, std, rows_filtered, columns, changes)
    changed |= acquired
  return finish(x, brain, count, mean, std, changed, changes)
