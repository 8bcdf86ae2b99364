"""What the analysis scripts share: reading a cross-validation's summary (or pooling several),
finding its stored probabilities, printing Dice per patient as a Markdown table."""

import json
import os

import numpy as np


def run_name(run):
  """A run's name as the tables print it: `runs/cv_a/` and `docs/results/cv_a.json` -> `cv_a`;
  pooled runs `a+b` -> `cv_a+cv_b`."""
  return "+".join(
    os.path.basename(os.path.normpath(part)).removesuffix(".json") for part in run.split("+")
  )


def _load_one(run):
  path = run if run.endswith(".json") else os.path.join(run, "summary.json")
  if not os.path.isfile(path):
    raise SystemExit(f"error: {path}: not found (has that cross-validation finished?)")
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def load_summary(run):
  """A run's summary; `a+b` pools the summaries of runs of one recipe on different folds (e.g.
  folds 4, 0, 3 and folds 1, 2), each patient scored under its own run's rules."""
  parts = [_load_one(part) for part in run.split("+")]
  if len(parts) == 1:
    return parts[0]
  folds = [fold for part in parts for fold in part["folds"]]
  patients = [p["patient_id"] for part in parts for p in part["per_patient"]]
  if len(set(folds)) < len(folds) or len(set(patients)) < len(patients):
    raise SystemExit(f"error: {run}: the pooled runs share a fold or a patient")
  return {
    "region": parts[0]["region"],
    "rules": [part["rules"] for part in parts],
    "cpu": " / ".join(dict.fromkeys(part.get("cpu", "n/a") for part in parts)),
    "folds": {fold: info for part in parts for fold, info in part["folds"].items()},
    "per_patient": [p for part in parts for p in part["per_patient"]],
    "rows": [row for part in parts for row in part["rows"]],
  }


def by_region(summary, patients=None, key="dice", variant="final"):
  """{region: {patient: Dice (or `key`, e.g. hd95_mm) of the `variant`'s masks (default: the
  final ones)}} over the regions a run scored, for `patients` (default: all)."""
  table = {}
  for row in summary["rows"]:
    if row["variant"] == variant and (patients is None or row["patient_id"] in patients):
      table.setdefault(row["region"], {})[row["patient_id"]] = row[key]
  return table


def stored_probabilities(run, variant):
  """{(fold dir, patient id): path} of one run's stored probabilities."""
  from evaluation import cross_validation  # pulls in TensorFlow: only where probabilities are read

  return {
    (fold_dir, patient): path
    for fold_dir in sorted(d for d in os.listdir(run) if d.startswith("fold"))
    for patient, path in cross_validation.stored_probabilities(
      os.path.join(run, fold_dir), variant
    ).items()
  }


def print_dice_table(columns, rows):
  """Prints {patient: [Dice per column]} with mean, median and worst rows; returns the array."""
  table = np.array(list(rows.values()))
  print("| patient | " + " | ".join(columns) + " |")
  print("|---" * (len(columns) + 1) + "|")
  for patient, values in rows.items():
    print(f"| {patient} | " + " | ".join(f"{v:.3f}" for v in values) + " |")
  for label, values in (
    ("mean", table.mean(0)),
    ("median", np.median(table, 0)),
    ("worst", table.min(0)),
  ):
    print(f"| **{label}** | " + " | ".join(f"{v:.4f}" for v in values) + " |")
  return table
