r"""Exports a trained run's best_model.keras as a SavedModel (for TF Serving), e.g. for runs
trained before train_main.py exported one itself.

  python -m training.export_main --model_dir=runs/x [--output_dir=runs/x/saved_model]

--model_dir may also name a .keras or .h5 file. A missing or broken model fails in one line.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # oneDNN also on AVX2 CPUs: docs/benchmarks.md

from absl import app
from absl import flags

_MODEL_DIR = flags.DEFINE_string(
  "model_dir", None, "Training run folder (its best_model.keras) or a .keras / .h5 model file."
)
_OUTPUT_DIR = flags.DEFINE_string(
  "output_dir", None, "Where the SavedModel goes (default: saved_model/ beside the model file)."
)
flags.mark_flags_as_required(["model_dir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  from training import model_files
  from training import saved_model  # TensorFlow loads only once the path is known to exist

  try:
    path = saved_model.export_run(_MODEL_DIR.value, _OUTPUT_DIR.value)
  except (model_files.ModelFileError, saved_model.ExportError) as error:
    sys.exit(f"error: {error}")
  except OSError as error:  # e.g. a read-only destination
    sys.exit(f"error: {error.filename or _OUTPUT_DIR.value}: {error.strerror or error}")
  print(
    f"exported: {path} (signature serving_default: {saved_model.INPUT_NAME} float32 "
    f"[N, H, W, C] -> {saved_model.OUTPUT_NAME} float32 [N, H, W, K])"
  )


def run():
  app.run(main)


if __name__ == "__main__":
  run()
