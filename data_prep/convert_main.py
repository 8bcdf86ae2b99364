r"""Converts a BraTS drop (Kaggle h5 slices or NIfTI cases) into sharded TFRecords.

  python -m data_prep.convert_main --input=D --output_dir=tfrecords [--drop=NAME]
      [--workers=N] [--image_size=128] [--num_folds=5] [--overlays=N] [--strict] [--overwrite]

Exit status: 0 when something was converted (or everything was converted before),
1 with --strict at the first bad input, or when nothing could be converted.
"""

import os
import sys
import time

from data_prep import worker_threads  # no numpy: its limits must be set before numpy loads

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.update(worker_threads.VARIABLES)

from absl import app
from absl import flags
from absl import logging

from data_prep import convert
from data_prep import drops
from data_prep import patient_conversion
from data_prep import preprocessing
from data_prep import sources
from data_prep import storage
from data_prep.errors import BadInputError

_INPUT = flags.DEFINE_string(
  "input", None, "Source folder: Kaggle h5 slices or NIfTI case folders."
)
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "tfrecords", "Dataset folder that holds the drops.")
_DROP = flags.DEFINE_string(
  "drop",
  None,
  "Name of the new drop (default: the input folder's name; "
  "-2, -3... appended when that drop exists).",
)
_O = patient_conversion.ConversionOptions  # the flags' defaults are the options'

_INPUT_FORMAT = flags.DEFINE_enum(
  "input_format",
  "auto",
  ["auto", "h5", "nifti"],
  "Source format; auto detects it from the file names.",
)
_WORKERS = flags.DEFINE_integer("workers", os.cpu_count() or 1, "Worker processes.")
_IMAGE_SIZE = flags.DEFINE_integer(
  "image_size", _O.image_size, "Stored slices are image_size x image_size."
)
_NUM_FOLDS = flags.DEFINE_integer(
  "num_folds", _O.num_folds, "Patients are hashed into this many folds."
)
_MODALITIES = flags.DEFINE_list(
  "modalities",
  list(_O.modalities),
  f"Channels to store, in order, from {list(sources.MODALITIES)}.",
)
_IMAGE_DTYPE = flags.DEFINE_enum(
  "image_dtype",
  _O.image_dtype,
  ["float16", "float32"],
  "Stored pixel type (normalized values fit float16).",
)
_NORMALIZATION = flags.DEFINE_enum(
  "normalization",
  _O.normalization_scope,
  ["auto", "volume", "slice"],
  "z-score scope over brain voxels: auto = per volume for NIfTI, per slice for Kaggle h5 "
  "(its slices were z-scored one by one).",
)
_INTENSITY = flags.DEFINE_enum(
  "intensity_normalization",
  _O.normalization,
  list(preprocessing.NORMALIZATION_METHODS),
  "zscore_brain: mean and std of brain voxels; robust_brain: median and IQR (not pulled by "
  "the tumour).",
)
_CROP = flags.DEFINE_enum(
  "crop",
  _O.crop,
  list(preprocessing.CROPS),
  "brain: a square around the brain of the whole volume is resized to "
  "--image_size (more brain per pixel); none: the whole slice.",
)
_CONTEXT_SLICES = flags.DEFINE_integer(
  "context_slices",
  _O.context_slices,
  "2.5D: neighbouring slices on each side stored as extra channels (edge slices repeated).",
)
_SHARD_MB = flags.DEFINE_float(
  "shard_mb", convert.DEFAULT_SHARD_BYTES / 2**20, "Target shard size in MiB."
)
_OVERLAYS = flags.DEFINE_integer(
  "overlays", 0, "Inspection PNGs to save (one tumour slice per patient)."
)
_STRICT = flags.DEFINE_bool("strict", False, "Stop with exit status 1 at the first bad input.")
_OVERWRITE = flags.DEFINE_bool(
  "overwrite", False, "Re-convert patients already in a drop (and take them out of the older drop)."
)
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar on stderr.")
_RUNNER = flags.DEFINE_enum(
  "runner",
  "local",
  ["local", "beam"],
  "local: a process pool of --workers; beam: Apache Beam (pip install '.[beam]').",
)
_BEAM_PIPELINE_OPTIONS = flags.DEFINE_string(
  "beam_pipeline_options",
  "",
  "Comma-separated Beam options, e.g. "
  "'--runner=DirectRunner,--direct_num_workers=2,--direct_running_mode=multi_processing'.",
)

flags.mark_flags_as_required(["input"])
flags.register_validator(
  "input",
  lambda p: p is None or storage.is_remote(p) or os.path.isdir(p),
  "--input must be an existing folder (or an object-storage prefix, with --runner=beam)",
)
flags.register_validator("workers", lambda n: n >= 1, "--workers must be at least 1")
flags.register_validator(
  "image_size",
  lambda n: 16 <= n <= 1024 and n % 16 == 0,
  "--image_size must be a multiple of 16 between 16 and 1024",
)
flags.register_validator("num_folds", lambda n: n >= 2, "--num_folds must be at least 2")
flags.register_validator(
  "context_slices", lambda n: 0 <= n <= 5, "--context_slices must lie in 0..5"
)
flags.register_validator("overlays", lambda n: n >= 0, "--overlays must be >= 0")
flags.register_validator("shard_mb", lambda n: n > 0, "--shard_mb must be positive")
flags.register_validator(
  "modalities",
  lambda ms: bool(ms) and len(set(ms)) == len(ms) and set(ms) <= set(sources.MODALITIES),
  f"--modalities must be distinct names from {list(sources.MODALITIES)}",
)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  options = patient_conversion.ConversionOptions(
    image_size=_IMAGE_SIZE.value,
    modalities=tuple(_MODALITIES.value),
    image_dtype=_IMAGE_DTYPE.value,
    num_folds=_NUM_FOLDS.value,
    normalization_scope=_NORMALIZATION.value,
    normalization=_INTENSITY.value,
    crop=_CROP.value,
    context_slices=_CONTEXT_SLICES.value,
  )
  try:
    report = convert.convert(
      _INPUT.value,
      _OUTPUT_DIR.value,
      options=options,
      drop=_DROP.value,
      input_format=_INPUT_FORMAT.value,
      workers=_WORKERS.value,
      num_overlays=_OVERLAYS.value,
      strict=_STRICT.value,
      overwrite=_OVERWRITE.value,
      shard_bytes=int(_SHARD_MB.value * (1 << 20)),
      progress=_PROGRESS.value,
      runner=_RUNNER.value,
      beam_options=[o for o in _BEAM_PIPELINE_OPTIONS.value.split(",") if o],
    )
  except convert.StrictModeError as error:
    sys.exit(f"stopped (--strict) at bad input: {error}")
  except (BadInputError, drops.DropError) as error:
    sys.exit(f"error: {error}")
  except ImportError as error:
    sys.exit(f"error: --runner=beam needs Apache Beam: pip install '.[beam]' ({error})")

  if report.skipped:
    logging.info(
      "skipped %d patients already converted: %s", len(report.skipped), ", ".join(report.skipped)
    )
    print(
      f"skipped {len(report.skipped)} patients already in a drop under {_OUTPUT_DIR.value} "
      "(--overwrite re-converts them)",
      file=sys.stderr,
    )
  for old_drop, patient_ids in report.superseded.items():
    print(f"took {len(patient_ids)} re-converted patients out of drop {old_drop}", file=sys.stderr)
  if report.bad:
    print(f"{len(report.bad)} bad inputs:", file=sys.stderr)
    for error in report.bad:
      print(f"  {error}", file=sys.stderr)
  if report.stages:
    start_up = report.started - _process_started()
    print(f"{report.time_split()}; Python start-up and imports before that {start_up:.1f} s")
  print(report.summary())
  if report.nothing_done:
    sys.exit("error: nothing could be converted")


def _process_started():
  """When this process started, from Linux's /proc; now elsewhere (start-up then reads 0)."""
  try:
    with open("/proc/self/stat") as f:
      start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime") as f:
      uptime = float(f.read().split()[0])
  except (OSError, ValueError, IndexError):
    return time.time()
  return time.time() - uptime + start_ticks / os.sysconf("SC_CLK_TCK")


def run():
  app.run(main)


if __name__ == "__main__":
  run()
