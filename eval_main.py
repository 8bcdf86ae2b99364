r"""Scores a trained model per patient on converted folds, and draws overlays and GIFs.

  python eval_main.py --data_dir=tfrecords --model_dir=runs/x [--fold=N (default: the fold
      the model was validated on; -1: every fold)] [--output_dir=runs/x/eval] [--overlays]
      [--gif=selected|all|none] [--save_predictions] [--tta] [--stress=all]

Each patient is scored on its source files at full resolution, on exactly the mask
predict_main.py writes (same recipe, TTA, ensemble and post-processing); when the source
files are gone, on the stored grid (said so). Writes metrics.json, per_patient.csv,
stress.csv (with --stress), overlays/ (worst, median and best patients) and
gifs/<patient>.gif into --output_dir, and prints a short summary.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # oneDNN also on AVX2 CPUs: docs/benchmarks.md

from absl import app
from absl import flags

from evaluation import model_flags

flags.adopt_module_key_flags(model_flags)

_DATA_DIR = flags.DEFINE_string("data_dir", "tfrecords", "Folder holding converted drops.")
_DROPS = flags.DEFINE_list("drops", None, "Drops to evaluate (default: every complete drop).")
_FOLD = flags.DEFINE_integer(
  "fold", None, "Fold to score (default: the model's validation fold); -1 scores every fold."
)
_STRESS = flags.DEFINE_list(
  "stress",
  [],
  "Also score each patient after these site-like "
  "perturbations of its source volume ('all' for every one).",
)
_GRID = flags.DEFINE_enum(
  "grid",
  "auto",
  ["auto", "source", "stored"],
  "Score on the source grid (auto: when the source files are there) or on the stored slices.",
)
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Default: <model_dir>/eval.")
_OVERLAYS = flags.DEFINE_bool(
  "overlays", True, "Overlay PNGs of the worst, median and best patients."
)
_GIF = flags.DEFINE_enum(
  "gif",
  "selected",
  ["selected", "all", "none"],
  "GIFs through the volume of the worst, median and best patients, of every patient, or none.",
)
_GIF_SCALE = flags.DEFINE_integer("gif_scale", 2, "GIF frames are the slice size times this.")
_SAVE_PREDICTIONS = flags.DEFINE_bool(
  "save_predictions", False, "Also write predictions/<patient_id>.npz."
)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Slices per prediction batch.")

flags.register_validator("gif_scale", lambda n: 1 <= n <= 8, "--gif_scale must lie in 1..8")
flags.register_validator(
  "fold", lambda n: n is None or n >= -1, "--fold must be -1 or a fold number"
)
flags.register_validator("batch_size", lambda n: n >= 1, "--batch_size must be at least 1")
flags.register_validator(
  "data_dir", lambda p: "://" in p or os.path.isdir(p), "--data_dir must be an existing folder"
)
flags.register_multi_flags_validator(
  ["model_dir", "output_dir"],
  lambda f: bool(f["model_dir"] or f["output_dir"]),
  "give --output_dir when there is no --model_dir",
)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  from evaluation import evaluate

  output_dir = _OUTPUT_DIR.value or os.path.join(model_flags.MODEL_DIR.value[0], "eval")
  stress = _STRESS.value
  if stress:
    from evaluation import site_shift

    stress = list(site_shift.PERTURBATIONS) if stress == ["all"] else stress
    unknown = sorted(set(stress) - set(site_shift.PERTURBATIONS))
    if unknown:
      sys.exit(
        f"error: --stress: unknown perturbation {', '.join(unknown)} (known: "
        f"{', '.join(site_shift.PERTURBATIONS)}, all)"
      )
  try:
    segmenter = model_flags.build_segmenter(_BATCH_SIZE.value)
    folds = _folds_to_score(segmenter)
    metrics = evaluate.evaluate(
      segmenter,
      _DATA_DIR.value,
      folds=folds,
      drops=_DROPS.value,
      output_dir=output_dir,
      overlays=_OVERLAYS.value,
      gif=_GIF.value,
      save_predictions=_SAVE_PREDICTIONS.value,
      batch_size=_BATCH_SIZE.value,
      gif_scale=_GIF_SCALE.value,
      stress=stress,
      grid=_GRID.value,
    )
  except evaluate.EvaluationError as error:
    sys.exit(f"error: {error}")
  print(evaluate.summary_text(metrics))
  print(f"wrote {output_dir}/report.html, metrics.json, per_patient.csv, overlays/, gifs/")


def _folds_to_score(segmenter):
  """--fold, else the fold each member was validated on; warns when a member trained on it."""
  from absl import logging

  validated = {member.info.get("val_fold") for member in segmenter.members}
  if _FOLD.value is None:
    if len(validated) == 1 and None not in validated:
      return [validated.pop()]
    logging.warning("the models record no single validation fold: scoring fold 0")
    return [0]
  if _FOLD.value < 0:
    return None
  for member in segmenter.members:
    if "train_folds" not in member.info:
      continue  # a model from before dataset.json recorded its folds
    trained = member.info["train_folds"]  # None: every fold
    if trained is None or _FOLD.value in trained:
      logging.warning(
        "%s trained on fold %d: its scores there are not a validation", member.path, _FOLD.value
      )
  return [_FOLD.value]


def run():
  app.run(main)


if __name__ == "__main__":
  run()
