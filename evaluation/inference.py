"""From a source case to full-resolution masks: the one path shared by predict and eval.

A case is prepared by the training data's own recipe (read from the model's dataset.json),
predicted by one model or an ensemble, optionally averaged over the 8 flips and 90-degree
rotations (test-time augmentation), pasted back into the source grid, thresholded and
post-processed. `eval_main.py` scores exactly the masks `predict_main.py` writes because
both call `Segmenter.segment`.
"""

from collections.abc import Sequence
import dataclasses
import json
import os
from typing import TYPE_CHECKING, Any

import numpy as np

from data_prep import preprocessing
from data_prep.errors import BadInputError
from evaluation import postprocess
from input_pipeline import geometry
from input_pipeline import decode
from model import contract
from training import model_files

if TYPE_CHECKING:
  import keras
  import tensorflow as tf

THRESHOLD = contract.THRESHOLD
MODEL_FILE = model_files.BEST_MODEL
# Where folders from before the contract recorded the inference rules.
LEGACY_INFERENCE_RULES = "inference.json"
DEFAULT_TTA = True  # docs/accuracy.md: the ablation table that chose it


class EvaluationError(ValueError):
  """Missing model, mismatched ensemble members, empty fold: printed as one line."""


def load_model(path: str) -> "keras.Model":
  """The uncompiled Keras model in a file or run folder (one-line errors)."""
  try:
    return model_files.load(path)
  except model_files.ModelFileError as error:
    raise EvaluationError(str(error)) from None


def task_of(model: "keras.Model") -> str:
  outputs = model.output_shape[-1]
  for task in decode.TASKS:
    if decode.num_targets(task) == outputs:
      return task
  raise EvaluationError(f"the model has {outputs} outputs; expected 1 (whole_tumor) or 3 (regions)")


def read_info(model_dir: str) -> dict[str, Any] | None:
  """The model's contract (dataset.json), None for a bare model; one-line errors."""
  try:
    return contract.read(model_dir)
  except contract.ContractError as error:
    raise EvaluationError(str(error)) from None


def info_for(model: "keras.Model", folder: str) -> dict[str, Any] | None:
  """The contract in `folder` of `model` beside it (None when there is none); refused in one
  line when it records another task than the model's outputs."""
  info = read_info(folder)
  if info is not None and task_of(model) != info["task"]:
    raise EvaluationError(
      f"{os.path.join(folder, contract.DATASET_INFO)}: records task {info['task']} "
      f"({decode.num_targets(info['task'])} outputs), but the model beside it has "
      f"{model.output_shape[-1]}; this dataset.json belongs to another model"
    )
  return info


def default_info(model: "keras.Model", path: str) -> dict[str, Any]:
  """For a bare model file: FLAIR whole slices, the converter's old rule (a model taking
  other channels is then refused by `Segmenter` in one line)."""
  if model.input_shape[1] is None:
    raise EvaluationError(
      f"{path}: takes slices of any size (trained on "
      f"patches), so how to prepare them is known only from the {contract.DATASET_INFO} "
      "its training wrote beside it; keep the two together"
    )
  recipe = preprocessing.Recipe.before_recipes(model.input_shape[1])
  return {"task": task_of(model), "preprocessing": recipe.to_json(), "val_fold": None}


def member_dirs(model_dir: str) -> list[str]:
  """A run folder is one member; a cross-validation folder (fold*/ runs inside) is several."""
  if os.path.isfile(os.path.join(model_dir, MODEL_FILE)):
    return [model_dir]
  folds = sorted(
    d
    for d in (os.listdir(model_dir) if os.path.isdir(model_dir) else [])
    if d.startswith("fold") and os.path.isfile(os.path.join(model_dir, d, MODEL_FILE))
  )
  if not folds and model_files.is_saved_model(model_dir):
    load_model(model_dir)  # refused in one line saying what a SavedModel is for
  if not folds:
    raise EvaluationError(
      f"{model_dir}: no trained model there ({MODEL_FILE}, or fold*/ runs of a cross-validation)"
    )
  return [os.path.join(model_dir, d) for d in folds]


@dataclasses.dataclass
class Member:
  path: str
  model: object
  info: dict


def load_members(model_dirs: Sequence[str] = (), model_paths: Sequence[str] = ()) -> list[Member]:
  """Loads every member of an ensemble and refuses, in one line, members that disagree on
  the task or on how the input was prepared."""
  members = []
  for model_dir in model_dirs:
    for run_dir in member_dirs(model_dir):
      model = load_model(os.path.join(run_dir, MODEL_FILE))
      members.append(
        Member(run_dir, model, info_for(model, run_dir) or default_info(model, run_dir))
      )
  for path in model_paths:
    model = load_model(path)
    members.append(
      Member(path, model, info_for(model, os.path.dirname(path)) or default_info(model, path))
    )
  if not members:
    raise EvaluationError("no model given")
  first = members[0]
  for member in members[1:]:
    for key, describe in (
      ("task", lambda i: i["task"]),
      ("preprocessing", lambda i: contract.recipe(i).to_json()),
    ):
      if describe(member.info) != describe(first.info):
        raise EvaluationError(
          f"{member.path}: trained with {key} {describe(member.info)}, but "
          f"{first.path} with {describe(first.info)}; an ensemble needs one"
        )
  return members


def symmetric(x: "np.ndarray | tf.Tensor", index: int) -> np.ndarray:
  """The reader's `geometry.symmetric` on numpy or tensor input, as numpy."""
  import tensorflow as tf

  return np.asarray(geometry.symmetric(tf.convert_to_tensor(x), index))


def inverse_symmetric(x: "np.ndarray | tf.Tensor", index: int) -> "tf.Tensor":
  """Undoes `geometry.symmetric(., index)`: its steps in reverse order."""
  import tensorflow as tf

  x = tf.convert_to_tensor(x)
  if index & 4:
    x = tf.transpose(x, [0, 2, 1] + list(range(3, x.shape.rank)))
  if index & 2:
    x = tf.reverse(x, [1])
  if index & 1:
    x = tf.reverse(x, [2])
  return x


def check_threshold(threshold: float) -> float:
  """A threshold on sigmoid outputs: 0 or 1 would mark every voxel or none."""
  if not 0.0 < threshold < 1.0:
    raise ValueError(f"threshold must be in (0, 1), got {threshold}")
  return threshold


@dataclasses.dataclass(frozen=True)
class InferenceRules:
  """How probabilities become the masks written: TTA, the threshold on each sigmoid output,
  then post-processing."""

  tta: bool = DEFAULT_TTA
  postprocessing: postprocess.PostProcessing = postprocess.PostProcessing()
  threshold: float = THRESHOLD

  def __post_init__(self):
    check_threshold(self.threshold)

  def to_json(self) -> dict[str, Any]:
    return {
      "tta": self.tta,
      "threshold": self.threshold,
      "postprocessing": self.postprocessing.to_json(),
    }

  def describe(self) -> str:
    """One line for logs and tables."""
    return postprocess.describe_inference(self.tta, self.threshold, self.postprocessing)


def read_rules(model_dir: str) -> InferenceRules:
  """The rules recorded in a run's or a cross-validation folder's contract (dataset.json,
  under "inference"; inference.json in older folders); defaults when none."""
  path = os.path.join(model_dir, contract.DATASET_INFO)
  entry = (read_info(model_dir) or {}).get("inference")
  legacy = os.path.join(model_dir, LEGACY_INFERENCE_RULES)
  if entry is None and os.path.isfile(legacy):
    path = legacy
    try:
      with open(legacy, encoding="utf-8") as f:
        entry = json.load(f)
    except (OSError, ValueError) as error:
      raise EvaluationError(f"{legacy}: not readable JSON ({error})") from None
  if entry is None:
    return InferenceRules()
  try:
    return InferenceRules(
      bool(entry.get("tta", DEFAULT_TTA)),
      postprocess.PostProcessing.from_json(entry.get("postprocessing")),
      float(entry.get("threshold", THRESHOLD)),  # folders from before the threshold rule
    )
  except (AttributeError, TypeError, ValueError) as error:
    raise EvaluationError(f"{path}: unusable inference rules ({error})") from None


@dataclasses.dataclass
class CaseSegmentation:
  """One case on its source grid (slices first, in the order of the volume's stack)."""

  probability: np.ndarray  # float32 [S, H, W, K], mean over members and symmetries
  masks: np.ndarray  # bool [S, H, W, K], thresholded, post-processed, nested (ET in TC in WT)
  spread: np.ndarray | None  # float32 [S, H, W, K]: std over members and symmetries
  network_probability: np.ndarray  # float32 [S', size, size, K] for the kept slices
  slices: preprocessing.PreprocessedSlices


class Segmenter:
  """Members (one model or an ensemble) plus the inference rules recorded with them."""

  def __init__(
    self,
    members: Sequence[Member],
    rules: InferenceRules = InferenceRules(tta=False),
    *,
    batch_size: int = 32,
  ) -> None:
    self.members = members
    self.info = members[0].info
    self.task = self.info["task"]
    self.recipe = contract.recipe(self.info)
    self.rules = rules
    self.batch_size = batch_size
    for member in members:
      expected = (self.recipe.image_size, self.recipe.image_size, self.recipe.channels)
      if not contract.shapes_fit(member.model.input_shape, (None, *expected)):
        raise EvaluationError(
          f"{member.path}: the model takes {member.model.input_shape[1:]} "
          f"but its recipe prepares {expected}"
        )

  def _predict(self, model, images):
    return np.concatenate(
      [
        np.asarray(model.predict_on_batch(images[i : i + self.batch_size]), np.float32)
        for i in range(0, len(images), self.batch_size)
      ]
    )

  def _views(self, images):
    """Each member's probabilities [N, size, size, K] for each view (identity first; with TTA
    the 8 symmetries, transformed back), as {(member, symmetry): probability}."""
    symmetries = range(geometry.NUM_SYMMETRIES) if self.rules.tta else (0,)
    views = {}
    for m, member in enumerate(self.members):
      for index in symmetries:
        view = images if index == 0 else symmetric(images, index)
        probability = self._predict(member.model, view)
        views[m, index] = (
          probability if index == 0 else np.asarray(inverse_symmetric(probability, index))
        )
    return views

  @staticmethod
  def _mean_and_spread(probabilities):
    stack = np.stack(probabilities)
    return stack.mean(axis=0), (stack.std(axis=0) if len(stack) > 1 else None)

  def network_probabilities(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(mean, std or None) over members and, with TTA, the 8 symmetries: [N, size, size, K]."""
    return self._mean_and_spread(list(self._views(images).values()))

  def on_source_grid(self, image, slices, mean, spread=None) -> CaseSegmentation:
    """Network probabilities [S', size, size, K] pasted back onto the volume's grid, then
    thresholded and post-processed by the rules."""
    height, width = image.shape[1:3]

    def paste(values):
      full = np.zeros(image.shape[:3] + (values.shape[-1],), np.float32)
      full[slices.slice_indices] = preprocessing.paste_back(values, slices.crop, height, width)
      return full

    probability = paste(mean)
    masks = region_masks(probability, self.task, self.rules.postprocessing, self.rules.threshold)
    return CaseSegmentation(
      probability, masks, None if spread is None else paste(spread), mean, slices
    )

  def segment(
    self, image: np.ndarray, labels: np.ndarray | None, source_format: str
  ) -> CaseSegmentation | None:
    """Segments one volume image [S, H, W, C] (raw intensities, slices first)."""
    slices = self.recipe.preprocess(image, labels, source_format)
    if not len(slices.slice_indices):
      return None
    return self.on_source_grid(image, slices, *self.network_probabilities(slices.images))

  def segment_with_and_without_tta(
    self, image: np.ndarray, source_format: str
  ) -> tuple[CaseSegmentation | None, CaseSegmentation | None]:
    """(without TTA, with TTA) from one preparation and one pass per view: the identity view
    of each member is the prediction without TTA. Needs a Segmenter with `tta`."""
    if not self.rules.tta:
      raise ValueError("segment_with_and_without_tta needs rules with TTA on")
    slices = self.recipe.preprocess(image, None, source_format)
    if not len(slices.slice_indices):
      return None, None
    views = self._views(slices.images)
    identity = [p for (_, index), p in views.items() if index == 0]
    return (
      self.on_source_grid(image, slices, *self._mean_and_spread(identity)),
      self.on_source_grid(image, slices, *self._mean_and_spread(list(views.values()))),
    )


def build_segmenter(
  model_dirs: Sequence[str] = (),
  model_paths: Sequence[str] = (),
  *,
  tta: bool | str = "auto",
  threshold: float | None = None,
  batch_size: int = 32,
) -> Segmenter:
  """Members plus the rules recorded with the first model folder (flags may override TTA and
  the threshold)."""
  members = load_members(model_dirs, model_paths)
  rules = read_rules(model_dirs[0]) if model_dirs else InferenceRules()
  if threshold is not None:
    try:
      rules = dataclasses.replace(rules, threshold=threshold)
    except ValueError as error:
      raise EvaluationError(f"--threshold: {error}") from None
  if tta != "auto":
    rules = dataclasses.replace(rules, tta=tta in (True, "true"))
  return Segmenter(members, rules, batch_size=batch_size)


def region_masks(
  probability: np.ndarray,
  task: str,
  postprocessing: postprocess.PostProcessing,
  threshold: float = THRESHOLD,
) -> np.ndarray:
  """Thresholded, post-processed masks [S, H, W, K]; for regions nested as BraTS labels are
  (ET inside TC inside WT), since a label map can hold nothing else."""
  masks = probability > threshold
  masks[..., 0] = postprocessing.apply(masks[..., 0])
  for k in range(1, masks.shape[-1]):
    masks[..., k] &= masks[..., k - 1]
  if task == "regions":
    masks[..., 2] = postprocessing.apply_enhancing(masks[..., 2])
  return masks


def label_map(masks: np.ndarray, task: str, scheme: str) -> np.ndarray:
  """Nested region masks [S, H, W, K] -> uint8 labels: 1 tumour (whole_tumor); BraTS labels
  for regions (2 edema, 1 necrotic core, 4 enhancing, or 3 in the 2023 scheme)."""
  labels = np.zeros(masks.shape[:3], np.uint8)
  if task == "whole_tumor":
    labels[masks[..., 0]] = 1
    return labels
  labels[masks[..., 0]] = 2
  labels[masks[..., 1]] = 1
  labels[masks[..., 2]] = 3 if scheme == "brats2023" else 4
  return labels


def truth_masks(unified: np.ndarray, task: str) -> np.ndarray:
  """The unified label map [S, H, W] as region masks [S, H, W, K]."""
  regions = [unified > 0]
  if task == "regions":
    regions += [np.isin(unified, (1, 3)), unified == 3]
  return np.stack(regions, axis=-1)


def require_brain(segmentation: CaseSegmentation | None, path: str) -> CaseSegmentation:
  if segmentation is None:
    raise BadInputError(path, "no slice contains brain")
  return segmentation
