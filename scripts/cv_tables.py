"""What the analysis scripts share: finding a cross-validation's stored probabilities and
printing Dice per patient as a Markdown table."""

import os

import numpy as np


def run_name(run):
  """A run's name as the tables print it: `runs/cv_a/` and `docs/results/cv_a.json` -> `cv_a`;
  pooled runs `a+b` -> `cv_a+cv_b`."""
  return "+".join(
    os.path.basename(os.path.normpath(part)).removesuffix(".json") for part in run.split("+")
  )


def stored_probabilities(run, variant):
  """{(fold dir, patient id): path} of one run's stored probabilities."""
  paths = {}
  suffix = f"_{variant}.npz"
  for fold_dir in sorted(d for d in os.listdir(run) if d.startswith("fold")):
    directory = os.path.join(run, fold_dir, "cv_probabilities")
    if os.path.isdir(directory):
      for name in os.listdir(directory):
        if name.endswith(suffix):
          paths[(fold_dir, name[: -len(suffix)])] = os.path.join(directory, name)
  return paths


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
