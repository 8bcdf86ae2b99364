"""Maps every release's label scheme onto the project's unified label map, once, at the edge.

Unified map (DESIGN.md): 0 background, 1 necrotic/non-enhancing core, 2 edema,
3 enhancing tumour. BraTS 2018-2021 call enhancing 4; 2023 calls it 3; the Kaggle
h5 release stores three one-hot channels.
"""

import numpy as np

from data_prep.errors import BadInputError

BACKGROUND, NECROTIC_CORE, EDEMA, ENHANCING = 0, 1, 2, 3
UNIFIED_LABELS = (BACKGROUND, NECROTIC_CORE, EDEMA, ENHANCING)
LABEL_NAMES = {0: "background", 1: "necrotic_core", 2: "edema", 3: "enhancing"}

# What a model is trained to segment (the BraTS regions, each a union of unified labels:
# whole tumour {1, 2, 3}, tumour core {1, 3}, enhancing tumour {3}).
REGION_NAMES = {
  "whole_tumor": ("whole_tumor",),
  "regions": ("whole_tumor", "tumor_core", "enhancing_tumor"),
}
TASKS = tuple(REGION_NAMES)

# Source scheme name -> {source label: unified label}.
SCHEMES = {
  "brats2018": {0: 0, 1: 1, 2: 2, 4: 3},  # 2018-2021 releases
  "brats2023": {0: 0, 1: 1, 2: 2, 3: 3},  # GLI 2023
}


def unify_labels(seg, scheme, path):
  """Returns the unified uint8 label map of `seg`; a label outside `scheme` is bad input."""
  mapping = SCHEMES[scheme]
  seg = np.asarray(seg)
  if seg.dtype.kind == "f":
    if not np.all(np.isfinite(seg)) or np.any(seg != np.round(seg)):
      raise BadInputError(path, "segmentation holds non-integer values")
  present = np.unique(seg).astype(np.int64)
  unknown = sorted(set(present.tolist()) - set(mapping))
  if unknown:
    raise BadInputError(path, f"labels {unknown} are outside the {scheme} scheme {sorted(mapping)}")
  lookup = np.zeros(max(mapping) + 1, dtype=np.uint8)
  for source, unified in mapping.items():
    lookup[source] = unified
  return lookup[seg.astype(np.int64)]


def unify_onehot_mask(mask, path):
  """Kaggle h5 `mask` [H, W, 3] one-hot (NCR/NET, edema, enhancing) -> unified label map [H, W]."""
  mask = np.asarray(mask)
  if mask.dtype.kind not in "biu" or mask.min() < 0 or mask.max() > 1:
    raise BadInputError(path, "mask values outside {0, 1}")
  # Elementwise arithmetic on the three planes: a reduction over the last axis is ~10x slower.
  core, edema, enhancing = (mask[..., channel].astype(np.uint8) for channel in range(3))
  if np.any(core + edema + enhancing > 1):
    raise BadInputError(path, "mask channels overlap (a pixel in two tumour regions)")
  return core * NECROTIC_CORE + edema * EDEMA + enhancing * ENHANCING
