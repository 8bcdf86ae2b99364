"""The choices of the training-time augmentation, in one frozen dataclass (a default written
once): the reader, the trainer's flags and the benchmarks all build it."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  flip: bool = True
  rotate90: bool = True
  rotate_scale_probability: float = 0.5
  max_rotation_degrees: float = 15.0
  max_scale_delta: float = 0.1  # scale in [1 - d, 1 + d]
  max_intensity_scale_delta: float = 0.1  # image * [1 - d, 1 + d]
  max_intensity_shift: float = 0.1  # + [-d, d], in z-score units
  # Site augmentation (see `site_intensity`). Probabilities are per (example, modality),
  # the slice jitter's per example; values are drawn uniformly in the ranges (gamma
  # log-uniformly). Chosen to cover the other-site shift, not tuned by training.
  site_augmentation: bool = False
  curve_probability: float = 0.5
  gamma_range: tuple = (0.5, 2.0)  # on brain intensities rescaled from [min, max] to [0, 1]
  # Above the median: median + f * (x - median). Down to 0.1 because the moments are
  # restored afterwards: on the FLAIR tumour slices of 6 training cases, gamma 0.5 with
  # f = 0.4 took the tumour's median z-score from 2.36 to 1.61 only, f = 0.1 to 1.04 (the
  # weakest other site: about 1.0).
  bright_compression_range: tuple = (0.1, 1.0)
  bias_field_probability: float = 0.5
  bias_field_degree: int = 3  # polynomial in x, y on [-1, 1]
  max_bias_field_log: float = 0.3  # field = exp(a * p), max |p| = 1, a in [0, d]
  blur_probability: float = 0.2
  blur_sigma_range: tuple = (0.5, 1.5)  # Gaussian, pixels
  low_resolution_probability: float = 0.2
  low_resolution_factor_range: tuple = (1.0, 2.0)  # downsampled by f, upsampled back
  noise_probability: float = 0.2
  max_noise_std: float = 0.1  # about Gaussian, std in [0, d] x the brain's std
  slice_jitter_probability: float = 0.5
  max_slice_jitter: float = 0.05  # each context channel * [1 - d, 1 + d]
  # Faint edema (`faint_edema`, see `fade_edema`), per (example, modality): edema above the
  # brain's median keeps a share f of its distance to it, f uniform in the range. From the
  # median patient's edema contrast (3.1 normal-brain spreads, 15 CBICA patients) f =
  # 0.25-0.75 gives 0.8-2.3, which covers the faintest two (1.2); not tuned by training.
  faint_edema: bool = False
  faint_edema_probability: float = 0.3
  faint_edema_range: tuple = (0.25, 0.75)
  faint_edema_sigma: float = 1.5  # pixels: the fade tapers off across the edema's border
  clip: float = 5.0  # the normalization's clip (data_prep.preprocessing.CLIP_VALUE)


# Site augmentation with the defaults of `AugmentConfig`: each change on a fifth to a half
# of the (example, modality) pairs; gamma 0.5-2, bright half compressed to 0.1-1 of its
# spread, bias field up to exp(+-0.3), blur sigma 0.5-1.5 px, resolution down by up to 2,
# noise up to 0.1 brain std, context slices of half the examples scaled within +-5%.
SITE_AUGMENT = AugmentConfig(site_augmentation=True)
