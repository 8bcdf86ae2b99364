"""Draws training_curves.png from the run's own history.csv (never from anything else)."""

import csv
import io
import math

from data_prep import atomic


def read_history(path):
  """history.csv -> {column: [floats]}; epochs repeated after a resume keep the last value."""
  with open(path, encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
  by_epoch = {int(row["epoch"]): row for row in rows}
  epochs = sorted(by_epoch)
  columns = [c for c in (rows[0].keys() if rows else []) if c != "epoch"]
  history = {"epoch": [e + 1 for e in epochs]}
  for column in columns:
    history[column] = [_number(by_epoch[e][column]) for e in epochs]
  return history


def _number(text):
  """CSVLogger writes 'NA' for a value an epoch did not have."""
  try:
    return float(text)
  except (TypeError, ValueError):
    return float("nan")


def plot_history(history_path, output_path):
  """Loss and Dice per epoch, training and validation, as a PNG."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from matplotlib import ticker

  history = read_history(history_path)
  figure, axes = plt.subplots(1, 2, figsize=(10, 4))
  for axis, metric in zip(axes, ("loss", "dice")):
    for prefix, style in (("", "-"), ("val_", "--")):
      if prefix + metric in history:
        # Epochs without validation (--validate_every) have NaN there: drawn without gaps.
        points = [
          (epoch, value)
          for epoch, value in zip(history["epoch"], history[prefix + metric])
          if not math.isnan(value)
        ]
        axis.plot(
          [epoch for epoch, _ in points],
          [value for _, value in points],
          style,
          marker="o",
          markersize=3,
          label=("validation " if prefix else "training ") + metric,
        )
    axis.set_xlabel("epoch")
    axis.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))  # no epoch 1.5
    axis.set_title(metric)
    axis.grid(alpha=0.3)
    axis.legend()
  figure.tight_layout()
  buffer = io.BytesIO()
  figure.savefig(buffer, format="png", dpi=100)
  plt.close(figure)
  atomic.write_bytes(output_path, buffer.getvalue())
