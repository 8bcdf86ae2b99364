r"""Scores a trained model per patient on converted folds, and draws overlays and GIFs.

  python eval_main.py --data_dir=tfrecords --model_dir=runs/x [--fold=0 (-1: every fold)]
      [--output_dir=runs/x/eval] [--overlays] [--gif=selected|all|none] [--save_predictions]

Writes metrics.json, per_patient.csv, overlays/ (worst, median and best patients) and
gifs/<patient>.gif into --output_dir, and prints a short summary.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app
from absl import flags

_DATA_DIR = flags.DEFINE_string("data_dir", "tfrecords", "Folder holding converted drops.")
_DROPS = flags.DEFINE_list("drops", None, "Drops to evaluate (default: every complete drop).")
_MODEL_DIR = flags.DEFINE_string("model_dir", None, "Training run folder (best_model.keras).")
_MODEL_PATH = flags.DEFINE_string("model_path", None, "A model file instead of --model_dir.")
_FOLD = flags.DEFINE_integer("fold", 0, "Fold to score; -1 scores every fold.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Default: <model_dir>/eval.")
_OVERLAYS = flags.DEFINE_bool("overlays", True, "Overlay PNGs of the worst, median and best "
                              "patients.")
_GIF = flags.DEFINE_enum("gif", "selected", ["selected", "all", "none"], "GIFs through the volume "
                         "of the worst, median and best patients, of every patient, or none.")
_GIF_SCALE = flags.DEFINE_integer("gif_scale", 2, "GIF frames are the slice size times this.")
_SAVE_PREDICTIONS = flags.DEFINE_bool("save_predictions", False, "Also write "
                                      "predictions/<patient_id>.npz.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Slices per prediction batch.")

flags.register_validator("gif_scale", lambda n: 1 <= n <= 8, "--gif_scale must lie in 1..8")
flags.register_validator("fold", lambda n: n >= -1, "--fold must be -1 or a fold number")
flags.register_validator("batch_size", lambda n: n >= 1, "--batch_size must be at least 1")
flags.register_validator("data_dir", lambda p: "://" in p or os.path.isdir(p),
                         "--data_dir must be an existing folder")
flags.register_multi_flags_validator(
    ["model_dir", "model_path"], lambda f: bool(f["model_dir"] or f["model_path"]),
    "give --model_dir or --model_path")
flags.register_multi_flags_validator(
    ["model_dir", "output_dir"], lambda f: bool(f["model_dir"] or f["output_dir"]),
    "give --output_dir when there is no --model_dir")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  from evaluation import evaluate
  output_dir = _OUTPUT_DIR.value or os.path.join(_MODEL_DIR.value, "eval")
  try:
    model = evaluate.load_model(_MODEL_DIR.value, _MODEL_PATH.value)
    metrics = evaluate.evaluate(
        model, _DATA_DIR.value, folds=None if _FOLD.value < 0 else [_FOLD.value],
        drops=_DROPS.value, output_dir=output_dir, overlays=_OVERLAYS.value, gif=_GIF.value,
        save_predictions=_SAVE_PREDICTIONS.value, batch_size=_BATCH_SIZE.value,
        gif_scale=_GIF_SCALE.value)
  except evaluate.EvaluationError as error:
    sys.exit(f"error: {error}")
  print(evaluate.summary_text(metrics))
  print(f"wrote {output_dir}/metrics.json, per_patient.csv, overlays/, gifs/")


def run():
  app.run(main)


if __name__ == "__main__":
  run()
