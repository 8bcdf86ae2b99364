"""Takes patients out of a complete drop (they were re-converted with --overwrite).

The drop is rebuilt without them in a staging folder, then swapped in; if every
patient goes, the drop is retired whole. A run killed mid-swap is repaired by
`drops.recover`.
"""

import os

import tensorflow as tf

from data_prep import atomic
from data_prep import drops
from data_prep import shard_writer

_PATIENT_SPEC = {"patient_id": tf.io.FixedLenFeature([], tf.string)}


def remove_patients(output_dir, name, patient_ids, shard_bytes):
  """Rewrites drop `name` without `patient_ids` (or retires it when none would remain)."""
  drop_path = os.path.join(output_dir, name)
  manifest = drops.load_manifest(drop_path)
  kept = {pid: entry for pid, entry in manifest["patients"].items() if pid not in patient_ids}
  retired = drop_path + drops.RETIRED_SUFFIX
  if not kept:
    drops.mark_ours(drop_path)
    os.rename(drop_path, retired)
    drops.remove_ours(retired)
    return
  with drops.StagingFolder(output_dir, name + ".rewrite") as staging:
    writer = shard_writer.FoldShardWriter(staging.path, shard_bytes)
    for shard in manifest["shards"]:
      for record in tf.data.TFRecordDataset(os.path.join(drop_path, shard["file"])):
        patient_id = tf.io.parse_single_example(record, _PATIENT_SPEC)["patient_id"]
        patient_id = patient_id.numpy().decode("utf-8")
        if patient_id in kept:
          writer.write(shard["fold"], patient_id, record.numpy())
    manifest["shards"] = writer.close()
    manifest["patients"] = kept
    counts = manifest["counts"]
    counts["patients"] = len(kept)
    counts["slices"] = sum(entry["slices"] for entry in kept.values())
    counts["tumor_slices"] = sum(entry["tumor_slices"] for entry in kept.values())
    manifest["removed_patients"] = sorted(set(manifest.get("removed_patients", [])) | patient_ids)
    atomic.write_json(os.path.join(staging.path, drops.MANIFEST), manifest)
    errors_path = os.path.join(drop_path, drops.ERRORS)
    if os.path.exists(errors_path):
      with open(errors_path, "rb") as f:
        atomic.write_bytes(os.path.join(staging.path, drops.ERRORS), f.read())
    drops.mark_ours(drop_path)
    os.rename(drop_path, retired)
    staging.publish(drop_path)
  drops.remove_ours(retired)
