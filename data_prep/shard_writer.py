"""Writes serialized examples into per-fold TFRecord shards sized by bytes.

The total number of shards of a fold is known only at the end, so shards are written
under provisional names and renamed to `fold-<k>-<i:05d>-of-<n:05d>.tfrecord` by
`close()`; all of this happens inside the drop's staging folder.
"""

import collections
import os

import tensorflow as tf

from data_prep.shard_plan import RECORD_OVERHEAD_BYTES


def shard_name(fold, index, count):
  return f"fold-{fold}-{index:05d}-of-{count:05d}.tfrecord"


class _OpenShard:
  def __init__(self, path, fold):
    self.path = path
    self.fold = fold
    self.writer = tf.io.TFRecordWriter(path)
    self.examples = 0
    self.bytes = 0
    self.patients = collections.Counter()

  def write(self, patient_id, record):
    self.writer.write(record)
    self.examples += 1
    self.bytes += len(record) + RECORD_OVERHEAD_BYTES
    self.patients[patient_id] += 1


class FoldShardWriter:
  """Appends examples to the current shard of their fold; starts a new one past `shard_bytes`."""

  def __init__(self, directory, shard_bytes):
    self.directory = directory
    self.shard_bytes = shard_bytes
    self._open = {}  # fold -> _OpenShard
    self._closed = collections.defaultdict(list)  # fold -> [_OpenShard]

  def write(self, fold, patient_id, record):
    shard = self._open.get(fold)
    if shard is not None and shard.bytes >= self.shard_bytes:
      self._finish(fold)
      shard = None
    if shard is None:
      index = len(self._closed[fold])
      shard = _OpenShard(os.path.join(self.directory, f".fold-{fold}-{index:05d}.partial"), fold)
      self._open[fold] = shard
    shard.write(patient_id, record)

  def _finish(self, fold):
    shard = self._open.pop(fold)
    shard.writer.close()
    self._closed[fold].append(shard)

  def close(self):
    """Closes every shard, gives it its final name; returns the manifest's shard list."""
    for fold in list(self._open):
      self._finish(fold)
    entries = []
    for fold in sorted(self._closed):
      shards = self._closed[fold]
      for index, shard in enumerate(shards):
        name = shard_name(fold, index, len(shards))
        os.replace(shard.path, os.path.join(self.directory, name))
        size = os.path.getsize(os.path.join(self.directory, name))
        if size != shard.bytes:
          raise IOError(f"{name}: wrote {size} bytes, expected {shard.bytes}")
        entries.append(
          {
            "file": name,
            "fold": fold,
            "examples": shard.examples,
            "bytes": size,
            "patients": dict(sorted(shard.patients.items())),
          }
        )
    return entries
