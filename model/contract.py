"""`<model_dir>/dataset.json`: the one contract between training and everything after it.

The trainer writes it beside `best_model.keras`; prediction, evaluation and cross-validation
read every choice about a model's input and output from it, never from their own defaults:
the task and its outputs, how a source volume becomes network input (the preprocessing
recipe: modalities, normalization, crop, context slices, image size), the threshold its
training metrics used, the label scheme of the masks written, the folds it trained and was
validated on, and, under "inference", the rules (TTA, threshold, post-processing) that a
cross-validation chose. It is plain JSON, so
it also documents a model for someone who never runs this project.

It sits below both training and evaluation (they import it, never each other).
"""

import json
import os

from data_prep import atomic
from data_prep import preprocessing
from input_pipeline import decode

DATASET_INFO = "dataset.json"
THRESHOLD = 0.5  # on each sigmoid output
# How masks are written: whole_tumor 1 = tumour; regions the BraTS label values, nested
# (2 edema, 1 necrotic and non-enhancing core, 4 enhancing, or 3 when the source case
# follows the BraTS 2023 naming: prediction writes a case's mask in that case's own scheme).
LABEL_SCHEME = "brats"


class ContractError(ValueError):
  """An unreadable or foreign dataset.json: printed as one line naming the file."""


def training_info(*, task, layout, val_fold, train_folds, checkpoint):
  """The contract of a model trained on `layout` (an `input_pipeline.manifests.DataLayout`)."""
  return {
    "task": task,
    "region_names": list(decode.REGION_NAMES[task]),
    "image_size": layout.image_size,
    "channels": layout.channels,
    "modalities": list(layout.modalities),
    "preprocessing": layout.preprocessing,
    "normalization_by_drop": layout.normalization,
    "threshold": THRESHOLD,
    "label_scheme": LABEL_SCHEME,
    "val_fold": val_fold,
    "train_folds": train_folds,
    "checkpoint": checkpoint,
  }


def shapes_fit(model_shape, wanted):
  """Whether a model's input or output shape (batch first) fits `wanted`: equal, except that
  None (a model trained on patches takes slices of any size) fits any size."""
  return len(model_shape) == len(wanted) and all(
    a is None or b is None or a == b for a, b in zip(model_shape[1:], wanted[1:])
  )


def write(model_dir, info):
  atomic.write_json(os.path.join(model_dir, DATASET_INFO), info)


def read(model_dir):
  """The contract in `model_dir`, or None when there is none (a bare model file)."""
  path = os.path.join(model_dir, DATASET_INFO)
  if not os.path.isfile(path):
    return None
  try:
    with open(path, encoding="utf-8") as f:
      info = json.load(f)
  except (OSError, ValueError) as error:
    raise ContractError(f"{path}: not a readable dataset.json ({error})") from None
  if not isinstance(info, dict) or info.get("task") not in decode.TASKS:
    raise ContractError(f"{path}: no task of {decode.TASKS}; not a dataset.json of this project")
  try:
    recipe(info)
  except (KeyError, TypeError, ValueError) as error:
    raise ContractError(
      f"{path}: no usable preprocessing recipe ({type(error).__name__}: "
      f"{error}); not a dataset.json this project wrote"
    ) from None
  return info


def recipe(info):
  """How the model's input was prepared (`preprocessing.Recipe`)."""
  if "preprocessing" in info:
    return preprocessing.Recipe.from_json(info["preprocessing"])
  # dataset.json from before the recipe: whole slices, modalities as listed
  return preprocessing.Recipe.before_recipes(info["image_size"], info["modalities"])
