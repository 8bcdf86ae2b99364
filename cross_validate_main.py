r"""K-fold cross-validation on converted real cases, scored at full resolution, resumable.

  python cross_validate_main.py --data_dir=tfrecords --output_dir=runs/cv \
      [--train_flagfile=configs/cpu.flags] [--folds=0,1,2,3,4] [--stress=all] \
      [--train_args=--site_augmentation,--seed=1]

For each fold k: trains `train_main.py --val_fold=k` into <output_dir>/fold<k> (skipped when
that fold finished training before), then scores fold k's patients on their source files
through the prediction path, without and with TTA and after each site-like perturbation
(skipped when scored before). Then it picks TTA, the threshold and the post-processing rule
on all patients (each kept only when it raises the mean and helps more patients than it
hurts), records them in <output_dir>/dataset.json (the ensemble's contract, under
"inference") and writes summary.json and summary.md. The folder is
then a fold ensemble: `predict_main.py --model_dir=<output_dir>`.
"""

import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # oneDNN also on AVX2 CPUs: docs/benchmarks.md

from absl import app
from absl import flags

_DATA_DIR = flags.DEFINE_string("data_dir", "tfrecords", "Folder holding converted drops.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where the fold runs and summary go.")
_TRAIN_FLAGFILE = flags.DEFINE_string("train_flagfile", "configs/cpu.flags", "Training preset.")
_TRAIN_ARGS = flags.DEFINE_list("train_args", [], "Extra train_main.py flags (comma-separated).")
_FOLDS = flags.DEFINE_list("folds", None, "Folds to run (default: every fold holding patients).")
_STRESS = flags.DEFINE_list(
  "stress",
  ["all"],
  "Site-like perturbations for the stress test ('all', or names; empty for none).",
)
_DESCRIPTION = flags.DEFINE_string(
  "description", None, "Title of summary.md (default: the training flags)."
)
_SCORE_ONLY = flags.DEFINE_bool("score_only", False, "Do not train; score folds already trained.")

flags.mark_flags_as_required(["output_dir"])


def _read_json(path):
  """A fold's record, or {} when the fold has none (trained elsewhere, or by hand)."""
  if not os.path.isfile(path):
    return {}
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def _train(fold, run_dir, train_args):
  """Trains one fold in its own process (a finished fold is skipped; a killed one resumes
  from its backup). Returns {"seconds", "epochs"}."""
  done = os.path.join(run_dir, "training.json")
  finished = _read_json(done)
  if finished:
    return finished
  os.makedirs(run_dir, exist_ok=True)
  command = [
    sys.executable,
    "-m",
    "train_main",
    f"--flagfile={_TRAIN_FLAGFILE.value}",
    f"--data_dir={_DATA_DIR.value}",
    f"--model_dir={run_dir}",
    f"--val_fold={fold}",
    "--tensorboard_images=0",
    *train_args,
  ]
  print(f"fold {fold}: training ({' '.join(command[1:])})", flush=True)
  start = time.time()
  with open(os.path.join(run_dir, "train.log"), "ab") as log:
    result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT)
  if result.returncode:
    sys.exit(
      f"error: fold {fold} training failed (exit {result.returncode}); see {run_dir}/train.log"
    )
  with open(os.path.join(run_dir, "history.csv"), encoding="utf-8") as f:
    epochs = max(0, len(f.read().strip().splitlines()) - 1)
  from data_prep import atomic
  from data_prep import machine

  info = {
    "seconds": round(time.time() - start, 1),  # this process alone, not earlier ones of a fold
    "epochs": epochs,
    "cpu": machine.cpu_model(),
    "command": command[1:],
  }
  atomic.write_json(done, info)
  return info


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  from data_prep import atomic
  from evaluation import cross_validation
  from evaluation import inference
  from input_pipeline import decode
  from input_pipeline import manifests
  from model import contract
  from training import callbacks

  stress = _STRESS.value
  if stress == ["all"]:
    from evaluation import site_shift

    stress = list(site_shift.PERTURBATIONS)
  try:
    layout = manifests.load_layout(_DATA_DIR.value)
  except manifests.DataError as error:
    sys.exit(f"error: {error}")
  present = sorted({p["fold"] for p in layout.patients.values()})
  folds = [int(f) for f in _FOLDS.value] if _FOLDS.value else present
  missing = sorted(set(folds) - set(present))
  if missing:
    sys.exit(f"error: --folds: fold {missing[0]} holds no patient (folds with patients: {present})")
  output_dir = _OUTPUT_DIR.value
  os.makedirs(output_dir, exist_ok=True)
  fold_dirs = [os.path.join(output_dir, f"fold{fold}") for fold in folds]
  fold_info, rows = {}, []
  try:
    for fold, run_dir in zip(folds, fold_dirs):
      if _SCORE_ONLY.value:
        info = _read_json(os.path.join(run_dir, "training.json"))
      else:
        info = _train(fold, run_dir, _TRAIN_ARGS.value)
      fold_rows = cross_validation.read_fold_scores(run_dir)
      if fold_rows is None:
        print(f"fold {fold}: scoring at full resolution", flush=True)
        members = inference.load_members([run_dir])
        fold_rows = cross_validation.score_fold(
          members, _DATA_DIR.value, fold, run_dir, stress=stress
        )
      rows += fold_rows
      fold_info[str(fold)] = {
        "patients": len({r["patient_id"] for r in fold_rows}),
        "seconds": info.get("seconds"),
        "cpu_seconds": (callbacks.total_cost(run_dir) or {}).get("cpu_seconds"),
        "epochs": info.get("epochs"),
      }
    task = inference.read_info(fold_dirs[0])["task"]
    regions = decode.REGION_NAMES[task]
    rules, tables = cross_validation.choose_rules(rows, fold_dirs, task)
    rows += cross_validation.apply_rule_rows(fold_dirs, rules, regions, task)
  except inference.EvaluationError as error:
    sys.exit(f"error: {error}")
  contract.write(
    output_dir,
    {
      **inference.read_info(fold_dirs[0]),
      "val_fold": None,
      "train_folds": None,
      "members": [os.path.basename(d) for d in fold_dirs],
      "inference": {
        **rules.to_json(),
        "chosen_by": "cross-validation in this folder",
        **tables,
      },
    },
  )
  description = _DESCRIPTION.value or " ".join(
    [f"--train_flagfile={_TRAIN_FLAGFILE.value}", *_TRAIN_ARGS.value, f"data {_DATA_DIR.value}"]
  )
  summaries = {
    region: cross_validation.summarize(rows, rules, region, fold_info, description)
    for region in regions
  }
  overview = cross_validation.regions_overview(summaries) if len(regions) > 1 else ""
  for region, summary in summaries.items():
    suffix = "" if region == regions[0] else f"_{region}"
    atomic.write_json(
      os.path.join(output_dir, f"summary{suffix}.json"),
      {**summary.json, "rows": rows if not suffix else None},
    )
    markdown = summary.markdown(preamble="" if suffix else overview)
    atomic.write_bytes(os.path.join(output_dir, f"summary{suffix}.md"), markdown.encode())
  print(open(os.path.join(output_dir, "summary.md"), encoding="utf-8").read())


def run():
  app.run(main)


if __name__ == "__main__":
  run()
