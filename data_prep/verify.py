"""Checks every shard of every drop against its manifest, record by record.

Reading each record through `TFRecordDataset` checks its CRCs, so a truncated or
bit-flipped shard is found; every decoded slice is then checked for shape, dtype,
finite pixels, label values, fold and counts. Faults are returned as
`"<file>: <reason>"` lines; the caller decides the exit status.
"""

import collections
import dataclasses
import json
import os

import numpy as np
import tensorflow as tf

from data_prep import drops
from data_prep import folds
from data_prep import tfrecord_schema

_BATCH = 256
_REQUIRED_KEYS = (
  "schema_version",
  "image_size",
  "channels",
  "image_dtype",
  "num_folds",
  "patients",
  "shards",
)


@dataclasses.dataclass
class VerifyReport:
  drops: int = 0
  shards: int = 0
  examples: int = 0
  faults: list = dataclasses.field(default_factory=list)
  warnings: list = dataclasses.field(default_factory=list)


def verify(data_dir, drop_names=None):
  """Verifies the complete drops under `data_dir` (or only `drop_names`)."""
  report = VerifyReport()
  if not os.path.isdir(data_dir):
    report.faults.append(f"{data_dir}: no such folder")
    return report
  for entry in sorted(os.listdir(data_dir)):
    if drops.is_staging_name(entry):
      report.warnings.append(
        f"{os.path.join(data_dir, entry)}: unfinished conversion, ignored "
        "by readers (the next run of the converter clears it)"
      )
  found = drops.list_complete_drops(data_dir)
  if drop_names:
    missing = sorted(set(drop_names) - {name for name, _ in found})
    report.faults += [
      f"{os.path.join(data_dir, name)}: no complete drop of that name" for name in missing
    ]
    found = [(name, path) for name, path in found if name in drop_names]
  if not found:
    report.faults.append(f"{data_dir}: holds no complete drop (a folder with {drops.MANIFEST})")
    return report

  owners, layouts = {}, {}
  for name, path in found:
    manifest = _load_manifest(path, report)
    if manifest is None:
      continue
    report.drops += 1
    layouts[name] = (
      manifest["image_size"],
      manifest["channels"],
      manifest["image_dtype"],
      manifest["num_folds"],
    )
    for patient_id in manifest["patients"]:
      if patient_id in owners:
        report.faults.append(f"{path}: patient {patient_id} is also in drop {owners[patient_id]}")
      owners.setdefault(patient_id, name)
    _verify_drop(path, manifest, report)
  if len(set(layouts.values())) > 1:
    report.faults.append(
      f"{data_dir}: drops disagree on (image_size, channels, dtype, num_folds): {layouts}"
    )
  return report


def _load_manifest(drop_path, report):
  path = os.path.join(drop_path, drops.MANIFEST)
  try:
    manifest = drops.load_manifest(drop_path)
  except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
    report.faults.append(f"{path}: unreadable manifest ({error})")
    return None
  missing = [key for key in _REQUIRED_KEYS if key not in manifest]
  if missing:
    report.faults.append(f"{path}: manifest lacks {', '.join(missing)}")
    return None
  return manifest


def _verify_drop(drop_path, manifest, report):
  listed = {shard["file"] for shard in manifest["shards"]}
  on_disk = {name for name in os.listdir(drop_path) if name.endswith(".tfrecord")}
  for name in sorted(on_disk - listed):
    report.faults.append(f"{os.path.join(drop_path, name)}: shard not listed in the manifest")
  per_patient = collections.Counter()
  tumor_per_patient = collections.Counter()
  seen_keys = set()
  for shard in manifest["shards"]:
    path = os.path.join(drop_path, shard["file"])
    if not os.path.isfile(path):
      report.faults.append(f"{path}: shard listed in the manifest is missing")
      continue
    report.shards += 1
    size = os.path.getsize(path)
    if size != shard["bytes"]:
      report.faults.append(
        f"{path}: {size} bytes, manifest says {shard['bytes']} (truncated or appended to)"
      )
    counts = _verify_shard(path, shard, manifest, report, seen_keys, tumor_per_patient)
    if counts is None:
      continue
    if counts != collections.Counter(shard.get("patients", {})):
      report.faults.append(
        f"{path}: examples per patient {dict(counts)} differ from the manifest "
        f"{shard.get('patients')}"
      )
    if sum(counts.values()) != shard["examples"]:
      report.faults.append(
        f"{path}: {sum(counts.values())} examples, manifest says {shard['examples']}"
      )
    per_patient.update(counts)
  manifest_path = os.path.join(drop_path, drops.MANIFEST)
  for patient_id, entry in manifest["patients"].items():
    if per_patient[patient_id] != entry["slices"]:
      report.faults.append(
        f"{manifest_path}: {patient_id} has {per_patient[patient_id]} slices "
        f"in the shards, manifest says {entry['slices']}"
      )
    elif tumor_per_patient[patient_id] != entry["tumor_slices"]:
      report.faults.append(
        f"{manifest_path}: {patient_id} has {tumor_per_patient[patient_id]} "
        f"tumour slices in the shards, manifest says {entry['tumor_slices']}"
      )


def _verify_shard(path, shard, manifest, report, seen_keys, tumor_per_patient):
  """Checks every record of one shard: Counter(patient -> examples), or None if unreadable."""
  size, channels = manifest["image_size"], manifest["channels"]
  dtype = np.dtype(manifest["image_dtype"]).newbyteorder("<")
  image_bytes = size * size * channels * dtype.itemsize
  patients = manifest["patients"]
  known_slices = {pid: set(entry.get("slice_indices", [])) for pid, entry in patients.items()}
  counts = collections.Counter()
  dataset = tf.data.TFRecordDataset(path).batch(_BATCH).map(tfrecord_schema.parse_batch)
  record = 0
  try:
    for batch in dataset:
      batch = {key: value.numpy() for key, value in batch.items()}
      for i in range(len(batch["patient_id"])):
        fault = _check_example(
          {key: value[i] for key, value in batch.items()},
          shard,
          patients,
          known_slices,
          size,
          channels,
          dtype,
          image_bytes,
          manifest["num_folds"],
          seen_keys,
          counts,
          tumor_per_patient,
        )
        if fault:
          report.faults.append(f"{path}: record {record}: {fault}")
          return None
        record += 1
        report.examples += 1
  except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as error:
    reason = error.message.splitlines()[0] if error.message else type(error).__name__
    report.faults.append(f"{path}: corrupted after record {record} ({reason})")
    return None
  return counts


def _check_example(
  example,
  shard,
  patients,
  known_slices,
  size,
  channels,
  dtype,
  image_bytes,
  num_folds,
  seen_keys,
  counts,
  tumor_per_patient,
):
  """Returns a fault description for one parsed example, or None."""
  patient_id = example["patient_id"].decode("utf-8")
  slice_index = int(example["slice_index"])
  key = (patient_id, slice_index)
  if key in seen_keys:
    return f"{patient_id}/{slice_index} appears twice"
  seen_keys.add(key)
  if patient_id not in patients:
    return f"patient {patient_id} is not in the manifest"
  shape = (int(example["height"]), int(example["width"]), int(example["channels"]))
  if shape != (size, size, channels):
    return f"shape {shape}, manifest says {(size, size, channels)}"
  if len(example["image"]) != image_bytes:
    return f"image has {len(example['image'])} bytes, expected {image_bytes} ({dtype.name})"
  if len(example["label"]) != size * size:
    return f"label has {len(example['label'])} bytes, expected {size * size}"
  image = np.frombuffer(example["image"], dtype=dtype)
  if not np.all(np.isfinite(image)):
    return "image holds NaN or infinite values"
  label = np.frombuffer(example["label"], dtype=np.uint8)
  if label.max() >= tfrecord_schema.NUM_LABELS:
    return f"label value {int(label.max())} outside the unified map 0..3"
  has_tumor = int(label.max() > 0)
  if int(example["has_tumor"]) != has_tumor:
    return f"has_tumor={int(example['has_tumor'])} but the label map says {has_tumor}"
  fold = int(example["fold"])
  expected_fold = folds.fold_of(patient_id, num_folds)
  if not fold == shard["fold"] == patients[patient_id]["fold"] == expected_fold:
    return (
      f"fold {fold}, shard fold {shard['fold']}, manifest fold "
      f"{patients[patient_id]['fold']}, hash fold {expected_fold} disagree"
    )
  if known_slices[patient_id] and slice_index not in known_slices[patient_id]:
    return f"slice {slice_index} of {patient_id} is not in the manifest"
  counts[patient_id] += 1
  tumor_per_patient[patient_id] += has_tumor
  return None
