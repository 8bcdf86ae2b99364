"""The flags that pick the model(s) to predict with, defined once for eval_main and predict_main.

Importing this module defines --model_dir, --model_path, --tta and --threshold. It imports
absl only, so a main parses its flags before TensorFlow loads.
"""

from absl import flags

MODEL_DIR = flags.DEFINE_list(
  "model_dir", None, "Training run folder(s) or a cross-validation folder; several are an ensemble."
)
MODEL_PATH = flags.DEFINE_list("model_path", None, "Model file(s) instead of --model_dir.")
TTA = flags.DEFINE_enum(
  "tta",
  "auto",
  ["auto", "true", "false"],
  "Average over the 8 flips and 90-degree rotations; auto: as recorded with the model.",
)

THRESHOLD = flags.DEFINE_float(
  "threshold",
  None,
  "Probability above which a voxel is tumour (each sigmoid output); default: as recorded "
  "with the model (chosen by its cross-validation), else 0.5.",
)
flags.register_validator(
  "threshold", lambda t: t is None or 0 < t < 1, "--threshold must lie strictly between 0 and 1"
)

flags.register_multi_flags_validator(
  ["model_dir", "model_path"],
  lambda f: bool(f["model_dir"] or f["model_path"]),
  "give --model_dir or --model_path",
)


def build_segmenter(batch_size):
  """The Segmenter the flags describe (raises inference.EvaluationError on a bad model)."""
  from evaluation import inference

  return inference.build_segmenter(
    MODEL_DIR.value or (),
    MODEL_PATH.value or (),
    tta=TTA.value,
    threshold=THRESHOLD.value,
    batch_size=batch_size,
  )
