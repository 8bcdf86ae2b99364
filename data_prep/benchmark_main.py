r"""Measures conversion throughput for several worker counts on the same source, in one run.

  python -m data_prep.benchmark_main --input=D [--workers=1,2] [--image_size=128]

Prints one JSON object per line, the last a summary with the ratio of each worker
count to the first. Each run writes a fresh drop into a temporary folder, deleted after.
"""

import json
import os
import shutil
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app
from absl import flags

from data_prep import convert
from data_prep import drops
from data_prep import machine
from data_prep import patient_conversion

_INPUT = flags.DEFINE_string("input", None, "Source folder (Kaggle h5 slices or NIfTI cases).")
_WORKERS = flags.DEFINE_list("workers", ["1", "2"], "Worker counts to compare.")
_IMAGE_SIZE = flags.DEFINE_integer(
  "image_size", patient_conversion.ConversionOptions.image_size, "Stored slice size."
)
_BEAM_PIPELINE_OPTIONS = flags.DEFINE_string(
  "beam_pipeline_options",
  None,
  "If set, also convert with --runner=beam and these "
  "comma-separated options, e.g. --runner=DirectRunner,--direct_num_workers=2,"
  "--direct_running_mode=multi_processing.",
)
_SCRATCH = flags.DEFINE_string("scratch_dir", None, "Where the temporary drops go (default: /tmp).")

flags.mark_flags_as_required(["input"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  options = patient_conversion.ConversionOptions(image_size=_IMAGE_SIZE.value)
  results = []
  runs = [("local", int(w), None) for w in _WORKERS.value]
  if _BEAM_PIPELINE_OPTIONS.value:
    runs.append(("beam", None, [o for o in _BEAM_PIPELINE_OPTIONS.value.split(",") if o]))
  for runner, workers, beam_options in runs:
    scratch = tempfile.mkdtemp(prefix="convert-bench-", dir=_SCRATCH.value)
    try:
      report = convert.convert(
        _INPUT.value,
        scratch,
        options=options,
        workers=workers or 1,
        progress=False,
        runner=runner,
        beam_options=beam_options,
      )
      manifest = drops.load_manifest(report.drop_path)
      shard_bytes = sum(shard["bytes"] for shard in manifest["shards"])
    finally:
      shutil.rmtree(scratch)
    line = {
      "benchmark": "convert",
      "runner": runner,
      "workers": workers,
      "beam_options": beam_options,
      "patients": report.patients,
      "slices": report.slices,
      "seconds": round(report.seconds, 2),
      "slices_per_sec": round(report.slices / report.seconds, 1),
      "bytes_per_slice": round(shard_bytes / report.slices),
      "image_size": _IMAGE_SIZE.value,
      "image_dtype": options.image_dtype,
      "bad_inputs": len(report.bad),
      "stage_seconds": report.stages,
    }
    results.append(line)
    print(json.dumps(line), flush=True)
  base = results[0]["slices_per_sec"]
  print(
    json.dumps(
      {
        "benchmark": "convert_summary",
        "input": os.path.abspath(_INPUT.value),
        "slices_per_sec": {_label(r): r["slices_per_sec"] for r in results},
        "speedup_vs_first": {_label(r): round(r["slices_per_sec"] / base, 2) for r in results},
        "bytes_per_slice": results[0]["bytes_per_slice"],
        "cpus": os.cpu_count(),
        "cpu": machine.cpu_model(),
      }
    )
  )


def _label(result):
  return f"local_{result['workers']}" if result["runner"] == "local" else "beam"


def run():
  app.run(main)


if __name__ == "__main__":
  run()
