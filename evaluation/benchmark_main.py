r"""Prediction speed: seconds per volume, with and without TTA, and where the time goes.

  python -m evaluation.benchmark_main --model_dir=runs/x --input=CASES [--max_cases=5]

For each case (after one warm-up case) it times the steps of predict_main.py one at a time:
reading, preprocessing, the network without TTA, the network with 8-fold TTA, and the rest
(pasting back into the source grid, threshold and post-processing, writing the NIfTI).
Prints one JSON line per case and a summary line with the median and p95 of each, and the
ratios that matter: TTA network time over plain network time, and the rest of predict over
the plain network time.
"""

import dataclasses
import json
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # oneDNN also on AVX2 CPUs: docs/benchmarks.md

from absl import app
from absl import flags
import numpy as np

_MODEL_DIR = flags.DEFINE_list("model_dir", None, "Run folder(s) or a cross-validation folder.")
_INPUT = flags.DEFINE_string("input", None, "NIfTI case folder(s) to predict.")
_MAX_CASES = flags.DEFINE_integer("max_cases", 5, "Cases timed (after one warm-up case).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Slices per prediction batch.")

flags.mark_flags_as_required(["model_dir", "input"])


def _timed(fn):
  start = time.perf_counter()
  result = fn()
  return result, time.perf_counter() - start


def time_case(plain, tta, source, output_dir):
  """Seconds of each step of predicting one case."""
  from data_prep import readers
  from evaluation import predict

  recipe = plain.recipe
  volume, read = _timed(
    lambda: readers.read_patient(source, recipe.modalities, require_labels=False)
  )
  slices, prepare = _timed(lambda: recipe.preprocess(volume.image, None, source.format))
  _, network = _timed(lambda: plain.network_probabilities(slices.images))
  (mean, _), network_tta = _timed(lambda: tta.network_probabilities(slices.images))

  def rest():
    predict.write_label_map(
      os.path.join(output_dir, f"{source.patient_id}_pred.nii.gz"),
      volume,
      plain.on_source_grid(volume.image, slices, mean).masks,
      plain.task,
      source.label_scheme,
    )

  _, rest_seconds = _timed(rest)
  return {
    "read": read,
    "preprocess": prepare,
    "network": network,
    "network_tta": network_tta,
    "paste_threshold_write": rest_seconds,
    "total": read + prepare + network + rest_seconds,
    "total_tta": read + prepare + network_tta + rest_seconds,
    "slices": int(len(slices.slice_indices)),
  }


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  from data_prep import sources
  from evaluation import inference
  from data_prep import machine

  members = inference.load_members(_MODEL_DIR.value)
  rules = inference.read_rules(_MODEL_DIR.value[0])
  plain, tta = (
    inference.Segmenter(
      members, dataclasses.replace(rules, tta=use_tta), batch_size=_BATCH_SIZE.value
    )
    for use_tta in (False, True)
  )
  found, _ = sources.discover(_INPUT.value)
  if len(found) < 2:
    raise app.UsageError(f"{_INPUT.value}: need at least 2 cases (one is the warm-up)")
  cases = found[: _MAX_CASES.value + 1]
  rows = []
  with tempfile.TemporaryDirectory() as output_dir:
    time_case(plain, tta, cases[0], output_dir)  # warm-up: graph tracing, first allocations
    for source in cases[1:]:
      row = {
        k: round(v, 4) if isinstance(v, float) else v
        for k, v in time_case(plain, tta, source, output_dir).items()
      }
      rows.append(row)
      print(json.dumps({"benchmark": "predict_case", "case": source.patient_id, **row}), flush=True)
  summary = {
    "benchmark": "predict_summary",
    "cases": len(rows),
    "members": len(members),
    "cpu": machine.cpu_model(),
    "batch_size": _BATCH_SIZE.value,
  }
  for key in (
    "total",
    "total_tta",
    "network",
    "network_tta",
    "read",
    "preprocess",
    "paste_threshold_write",
  ):
    values = np.array([row[key] for row in rows])
    summary[f"{key}_median_s"] = round(float(np.median(values)), 3)
    summary[f"{key}_p95_s"] = round(float(np.percentile(values, 95)), 3)
  network = np.array([row["network"] for row in rows])
  summary["tta_over_network"] = round(
    float(np.median(np.array([row["network_tta"] for row in rows]) / network)), 3
  )
  summary["rest_over_network"] = round(
    float(
      np.median(
        np.array([row["read"] + row["preprocess"] + row["paste_threshold_write"] for row in rows])
        / network
      )
    ),
    3,
  )
  print(json.dumps(summary), flush=True)


def run():
  app.run(main)


if __name__ == "__main__":
  run()
