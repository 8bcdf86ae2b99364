"""Finds the shards to read from the drops' manifests, so the reader never guesses.

Uses `tf.io.gfile`, so `--data_dir` may be local or `gs://`. A drop is complete when its
folder holds `manifest.json` and carries no staging suffix (data_prep/drops.py).
"""

from collections.abc import Sequence
import dataclasses
import json
import os

import tensorflow as tf

from data_prep import drops as drops_lib
from data_prep import preprocessing

_MANIFEST = drops_lib.MANIFEST


class DataError(ValueError):
  """The data folder cannot give what was asked for (printed as one line)."""


@dataclasses.dataclass(frozen=True)
class Shard:
  path: str
  fold: int
  examples: int


@dataclasses.dataclass(frozen=True)
class DataLayout:
  """What every selected drop agrees on, plus the shards of the chosen folds."""

  image_size: int
  channels: int
  image_dtype: str
  num_folds: int
  modalities: tuple
  shards: tuple  # of Shard
  patients: dict  # patient_id -> {"fold", "slices", "tumor_slices", "drop", ...}
  normalization: dict = dataclasses.field(default_factory=dict)  # drop -> manifest entry
  preprocessing: dict = dataclasses.field(default_factory=dict)  # the drops' shared Recipe JSON

  @property
  def num_examples(self) -> int:
    return sum(shard.examples for shard in self.shards)

  @property
  def tumor_fraction(self) -> float:
    slices = sum(p["slices"] for p in self.patients.values())
    return sum(p["tumor_slices"] for p in self.patients.values()) / max(slices, 1)


_join = os.path.join  # POSIX joining is right for local paths and gs:// URLs alike


def complete_drops(data_dir: str) -> list[tuple[str, str]]:
  """Sorted [(name, path)] of complete drops under `data_dir`."""
  if not tf.io.gfile.isdir(data_dir):
    raise DataError(f"{data_dir}: no such data folder")
  found = []
  for entry in sorted(tf.io.gfile.listdir(data_dir)):
    name = entry.rstrip("/")
    if name.startswith(".") or drops_lib.is_staging_name(name):
      continue
    path = _join(data_dir, name)
    if tf.io.gfile.exists(_join(path, _MANIFEST)):
      found.append((name, path))
  return found


def _load(path):
  with tf.io.gfile.GFile(_join(path, _MANIFEST), "r") as f:
    try:
      return json.load(f)
    except json.JSONDecodeError as error:
      raise DataError(f"{_join(path, _MANIFEST)}: unreadable manifest ({error})") from None


def load_layout(
  data_dir: str, folds: Sequence[int] | None = None, drops: Sequence[str] | None = None
) -> DataLayout:
  """Reads the manifests of `drops` (default: every complete drop) and lists the shards.

  Args:
    data_dir: folder holding drops.
    folds: fold numbers to read, or None for every fold.
    drops: drop names, or None for all.
  Raises:
    DataError: no drop, unknown drop, drops that disagree on the layout, or an empty fold.
  """
  available = complete_drops(data_dir)
  if not available:
    raise DataError(f"{data_dir}: holds no complete drop (convert one with data_prep.convert_main)")
  if drops:
    unknown = sorted(set(drops) - {name for name, _ in available})
    if unknown:
      raise DataError(
        f"{data_dir}: no complete drop named {', '.join(unknown)} "
        f"(found: {', '.join(name for name, _ in available)})"
      )
    available = [(name, path) for name, path in available if name in drops]

  layout_keys = (
    "image_size",
    "channels",
    "image_dtype",
    "num_folds",
    "modalities",
    "preprocessing",
  )
  reference, shards, patients, normalization = None, [], {}, {}
  for name, path in available:
    manifest = _load(path)
    normalization[name] = {
      "source_format": manifest.get("source", {}).get("format"),
      **manifest.get("normalization", {}),
    }
    manifest["preprocessing"] = _recipe_json(manifest)
    layout = tuple(_hashable(manifest[k]) for k in layout_keys)
    if reference is None:
      reference = (name, layout, manifest["preprocessing"])
    elif layout != reference[1]:
      raise DataError(
        f"{path}: drop layout {dict(zip(layout_keys, layout))} differs from drop "
        f"{reference[0]} {dict(zip(layout_keys, reference[1]))}; pass --drops"
      )
    for patient_id, entry in manifest["patients"].items():
      if folds is None or entry["fold"] in folds:
        patients[patient_id] = dict(entry, drop=name)
    for shard in manifest["shards"]:
      if folds is None or shard["fold"] in folds:
        shards.append(Shard(_join(path, shard["file"]), shard["fold"], shard["examples"]))
  image_size, channels, image_dtype, num_folds, modalities, _ = reference[1]
  recipe = reference[2]
  for fold in sorted(folds or []):
    if not 0 <= fold < num_folds:
      raise DataError(f"{data_dir}: fold {fold} does not exist (the drops have {num_folds} folds)")
    if not any(shard.fold == fold for shard in shards):
      raise DataError(
        f"{data_dir}: fold {fold} is empty in drops {', '.join(name for name, _ in available)}"
      )
  if not shards:
    raise DataError(f"{data_dir}: no shard matches folds {folds}")
  return DataLayout(
    image_size,
    channels,
    image_dtype,
    num_folds,
    tuple(modalities),
    tuple(sorted(shards, key=lambda s: s.path)),
    patients,
    normalization,
    recipe,
  )


def _recipe_json(manifest):
  """The drop's preprocessing recipe (drops from before crops and context: the old rule)."""
  if "preprocessing" in manifest:
    return preprocessing.Recipe.from_json(manifest["preprocessing"]).to_json()
  return preprocessing.Recipe.before_recipes(
    manifest["image_size"], manifest["modalities"]
  ).to_json()


def _hashable(value):
  if isinstance(value, dict):
    return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
  return tuple(value) if isinstance(value, list) else value
