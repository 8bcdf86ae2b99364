r"""Segments new patients into NIfTI masks on their source grid.

  python predict_main.py --model_dir=runs/x --input=CASE_DIR_OR_H5_DIR --output_dir=D

--input is one NIfTI case folder (2018-2021 or 2023 naming), a folder of case folders,
or a folder of Kaggle h5 slices. Writes <case>_pred.nii.gz (the source's affine and
header; 1 = tumour for whole_tumor, BraTS labels for regions) and <case>_pred.gif. A
case with a segmentation also gets its Dice at full resolution printed.

--model_dir takes one run, several (comma-separated) or a cross-validation folder (its
fold*/ runs): an ensemble averages their probabilities. TTA and post-processing follow the
rules recorded in the model's dataset.json (chosen by cross-validation) unless flags say.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # oneDNN also on AVX2 CPUs: docs/benchmarks.md

from absl import app
from absl import flags

from evaluation import model_flags

flags.adopt_module_key_flags(model_flags)

_SAVE_PROBABILITIES = flags.DEFINE_bool(
  "save_probabilities",
  False,
  "Also write "
  "<case>_prob.nii.gz and, for TTA or ensembles, "
  "<case>_uncertainty.nii.gz (std of the members).",
)
_INPUT = flags.DEFINE_string("input", None, "Case folder, folder of cases, or Kaggle h5 folder.")
_INPUT_FORMAT = flags.DEFINE_enum("input_format", "auto", ["auto", "h5", "nifti"], "Source format.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where the masks and GIFs go.")
_GIF = flags.DEFINE_bool("gif", True, "Write <case>_pred.gif.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Slices per prediction batch.")
_STRICT = flags.DEFINE_bool("strict", False, "Stop with exit status 1 at the first bad case.")

flags.mark_flags_as_required(["input", "output_dir"])
flags.register_validator("input", lambda p: p is None or os.path.exists(p), "--input must exist")
flags.register_validator("batch_size", lambda n: n >= 1, "--batch_size must be at least 1")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  from data_prep.errors import BadInputError
  from evaluation import inference
  from evaluation import predict

  def report(result):
    dice = (
      ""
      if result.dice is None
      else "  Dice " + ", ".join(f"{region} {value:.3f}" for region, value in result.dice.items())
    )
    print(
      f"{result.case_id}: {result.tumor_voxels} tumour voxels -> {result.output_path}{dice}",
      flush=True,
    )

  try:
    segmenter = model_flags.build_segmenter(_BATCH_SIZE.value)
    print(f"{len(segmenter.members)} model(s), {segmenter.rules.describe()}", flush=True)
    results, bad = predict.predict_all(
      segmenter,
      _INPUT.value,
      _OUTPUT_DIR.value,
      input_format=_INPUT_FORMAT.value,
      gif=_GIF.value,
      save_probabilities=_SAVE_PROBABILITIES.value,
      strict=_STRICT.value,
      on_result=report,
    )
  except inference.EvaluationError as error:
    sys.exit(f"error: {error}")
  except BadInputError as error:
    sys.exit(f"{'stopped (--strict) at bad input' if _STRICT.value else 'error'}: {error}")
  if bad:
    print(f"{len(bad)} bad inputs:", file=sys.stderr)
    for error in bad:
      print(f"  {error}", file=sys.stderr)
  scored = [r.dice["whole_tumor"] for r in results if r.dice]
  mean = (
    f", mean whole-tumour Dice {sum(scored) / len(scored):.3f} over {len(scored)}" if scored else ""
  )
  print(f"predicted {len(results)} cases, {len(bad)} bad{mean} -> {_OUTPUT_DIR.value}")
  if not results:
    sys.exit("error: nothing could be predicted")


def run():
  app.run(main)


if __name__ == "__main__":
  run()
