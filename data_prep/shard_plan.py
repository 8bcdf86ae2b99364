"""Which shard each example goes to: the rule of `FoldShardWriter`, as a pure function.

Examples of a fold go, in order, into the current shard until it holds `shard_bytes` or
more; then a new shard starts. The Beam runner plans with this before any file is written,
so its shards match the local runner's, name for name and byte for byte.
"""

RECORD_OVERHEAD_BYTES = 16  # TFRecord framing: length (8) and two CRCs (4 + 4)


def plan_shards(record_sizes, shard_bytes):
  """Assigns shard indices.

  Args:
    record_sizes: {fold: [(patient_id, [serialized example sizes, in order]), ...]} with
      patients in conversion order.
    shard_bytes: the target shard size.
  Returns:
    ({(patient_id, example_number): (fold, shard_index)}, {fold: number_of_shards}).
  """
  assignment, counts = {}, {}
  for fold, patients in record_sizes.items():
    index, filled, examples_in_shard = 0, 0, 0
    for patient_id, sizes in patients:
      for number, size in enumerate(sizes):
        if examples_in_shard and filled >= shard_bytes:
          index, filled, examples_in_shard = index + 1, 0, 0
        assignment[(patient_id, number)] = (fold, index)
        filled += size + RECORD_OVERHEAD_BYTES
        examples_in_shard += 1
    counts[fold] = index + 1
  return assignment, counts
