"""The streaming tf.data reader: shards on disk -> (image, target) batches for training or eval.

Files are listed from the manifests, shuffled with the seed and sharded per input
pipeline, then read with a parallel interleave, shuffled, batched, parsed in batches
(`parse_example` + `decode_raw`), augmented and prefetched. Nothing is loaded into memory
beyond the shuffle buffer and prefetched batches.
"""

from collections.abc import Callable, Sequence
import random
from typing import Any

from absl import logging
import tensorflow as tf

from data_prep import tfrecord_schema
from input_pipeline import augment as augment_lib
from input_pipeline import decode
from input_pipeline import geometry
from input_pipeline import manifests

_READ_BUFFER_BYTES = 4 << 20
SHUFFLE_BUFFER = 4096  # examples
CYCLE_LENGTH = 8  # files read at once in training
_SELECT_BATCH = 256  # records examined together when rebalancing tumour slices
_HAS_TUMOR_SPEC = {"has_tumor": tfrecord_schema.FEATURES["has_tumor"]}


def keep_probabilities(base_fraction: float, target_fraction: float) -> tuple[float, float]:
  """(p_keep_tumour, p_keep_tumour_free) that turn `base_fraction` into `target_fraction`.

  Drops only from the over-represented kind, so each record is still read once.
  """
  if not 0.0 <= target_fraction <= 1.0:
    raise ValueError(f"tumor_fraction must lie in [0, 1], got {target_fraction}")
  if base_fraction <= 0.0 or base_fraction >= 1.0:
    return 1.0, 1.0  # only one kind exists: nothing to rebalance
  if target_fraction >= base_fraction:
    if target_fraction == 1.0:
      return 1.0, 0.0
    return 1.0, base_fraction * (1 - target_fraction) / ((1 - base_fraction) * target_fraction)
  return target_fraction * (1 - base_fraction) / ((1 - target_fraction) * base_fraction), 1.0


def shard_files(
  files: Sequence[str], input_context: tf.distribute.InputContext | None, seed: int
) -> tuple[list[str], bool]:
  """The files of this input pipeline: a seeded shuffle (the same on every worker), then
  every n-th file. Returns (files, record_level) where record_level means too few files."""
  files = sorted(files)
  random.Random(seed).shuffle(files)
  if input_context is None or input_context.num_input_pipelines <= 1:
    return files, False
  count, index = input_context.num_input_pipelines, input_context.input_pipeline_id
  if len(files) < count:
    logging.warning(
      "%d files for %d input pipelines: every pipeline reads every file and keeps "
      "every %d-th record (write smaller shards to avoid the wasted reads)",
      len(files),
      count,
      count,
    )
    return files, True
  return files[index::count], False


def build_dataset(
  data_dir: str,
  *,
  folds: Sequence[int] | None = None,
  drops: Sequence[str] | None = None,
  task: str = "whole_tumor",
  global_batch_size: int = 64,
  training: bool = True,
  input_context: tf.distribute.InputContext | None = None,
  augment: bool | None = None,
  augment_config: augment_lib.AugmentConfig = augment_lib.AugmentConfig(),
  tumor_fraction: float | None = None,
  seed: int = 0,
  deterministic: bool = False,
  shuffle_buffer: int = SHUFFLE_BUFFER,
  cycle_length: int = CYCLE_LENGTH,
  with_metadata: bool = False,
  repeat: bool | None = None,
  patch_size: int = 0,
) -> tf.data.Dataset:
  """Builds the training or evaluation dataset.

  Args:
    data_dir: folder with drops (local or gs://).
    folds: folds to read (None: all).
    drops: drop names (None: every complete drop).
    task: "whole_tumor" (targets [B,H,W,1]) or "regions" (WT, TC, ET: [B,H,W,3]).
    global_batch_size: batch over all replicas; each pipeline batches its replica's share.
    training: shuffle, repeat, drop the last partial batch, augment by default.
    input_context: a `tf.distribute.InputContext` (from `distribute_datasets_from_function`).
    augment: override the default (on for training, off for evaluation).
    tumor_fraction: fraction of tumour slices wanted in training batches (None: as stored).
    seed: seeds file order, shuffling, rebalancing and augmentation.
    deterministic: same batches on every run with the same seed (slower).
    with_metadata: yield dicts with image, target, patient_id, slice_index (evaluation).
    repeat: override the default (forever for training, once for evaluation).
    patch_size: training only: a random patch_size x patch_size window of each augmented
      slice (0: whole slices, as `--patch_size`). Evaluation always reads whole slices.
  Returns:
    A `tf.data.Dataset` of (image float32 [B,H,W,C], target float32 [B,H,W,K]), or dicts.
  """
  if task not in decode.TASKS:
    raise ValueError(f"unknown task {task!r}; expected one of {decode.TASKS}")
  layout = manifests.load_layout(data_dir, folds, drops)
  augment = training if augment is None else augment
  repeat = training if repeat is None else repeat
  batch_size = (
    input_context.get_per_replica_batch_size(global_batch_size)
    if input_context
    else global_batch_size
  )

  files, record_level = shard_files([s.path for s in layout.shards], input_context, seed)
  if not training:
    files = sorted(files)  # evaluation keeps each patient's slices together and in order
  dataset = tf.data.Dataset.from_tensor_slices(files)
  if training:
    dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
  if repeat:
    dataset = dataset.repeat()
  dataset = interleave_records(
    dataset,
    cycle_length=min(cycle_length, len(files)) if training else 1,
    deterministic=deterministic,
  )
  if record_level:
    dataset = dataset.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
  if training and tumor_fraction is not None:
    dataset = _rebalance(dataset, layout.tumor_fraction, tumor_fraction, seed)
  if training and shuffle_buffer > 1:
    dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
  dataset = dataset.batch(batch_size, drop_remainder=training)

  if patch_size and not (training and 0 < patch_size <= layout.image_size):
    raise ValueError(
      f"patch_size {patch_size}: windows are cut for training only, of at most the stored "
      f"{layout.image_size}px"
    )
  to_pair = training_pair_fn(
    task,
    augment_config if augment else None,
    num_modalities=len(layout.modalities),
    patch_size=patch_size,
  )

  def to_outputs(serialized, batch_seed=None):
    example = decode.decode_batch(
      serialized,
      image_size=layout.image_size,
      channels=layout.channels,
      image_dtype=layout.image_dtype,
      with_metadata=with_metadata,
    )
    image, target = to_pair(example["image"], example["label"], batch_seed)
    if with_metadata:
      return {
        "image": image,
        "target": target,
        "patient_id": example["patient_id"],
        "slice_index": example["slice_index"],
      }
    return image, target

  if augment or patch_size:
    dataset = tf.data.Dataset.zip(dataset, _seeds(seed + 1))
  dataset = dataset.map(
    to_outputs, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic or not training
  )
  if repeat:
    # Already endless, but say so: tf.distribute picks its end-of-data handling from the
    # cardinality, which must be the same (infinite) on every worker whatever its files.
    dataset = dataset.repeat()
  dataset = dataset.prefetch(tf.data.AUTOTUNE)
  return dataset.with_options(_options(deterministic or not training, input_context))


def training_pair_fn(
  task: str,
  augment_config: augment_lib.AugmentConfig | None = None,
  num_modalities: int | None = None,
  patch_size: int = 0,
) -> Callable[..., tuple[tf.Tensor, tf.Tensor]]:
  """(image in the stored dtype, label uint8, seed) -> (image float32, target float32);
  the seed is used only with `augment_config` or `patch_size`. Channels are 2.5D context
  slices of `num_modalities` modalities (None: one slice), so intensity changes follow the
  modality. Patches are cut after the augmentation, which so sees the whole slice (its
  rotations bring in no empty corners, its site intensities read the whole brain)."""

  def pair(image, label, seed=None):
    if augment_config is None:
      image = tf.cast(image, tf.float32)
    else:
      image, label = augment_lib.augment_batch(
        image, label, seed, augment_config, num_modalities=num_modalities
      )
    if patch_size:
      patch_seed = tf.random.experimental.stateless_fold_in(seed, 3)  # augmentation's unchanged
      image, label = geometry.random_patches(image, label, patch_size, patch_seed)
    return image, decode.targets_from_labels(label, task)

  return pair


def interleave_records(
  files: tf.data.Dataset, cycle_length: int, deterministic: bool
) -> tf.data.Dataset:
  """Reads `cycle_length` files at once (in parallel when more than one)."""
  read = lambda path: tf.data.TFRecordDataset(path, buffer_size=_READ_BUFFER_BYTES)
  if cycle_length <= 1:
    return files.flat_map(read)
  return files.interleave(
    read,
    cycle_length=cycle_length,
    block_length=1,
    num_parallel_calls=tf.data.AUTOTUNE,
    deterministic=deterministic,
  )


def _seeds(seed):
  """An endless stream of int64 [2] stateless seeds."""
  return tf.data.Dataset.random(seed=seed).batch(2)


def _rebalance(records, base_fraction, target_fraction, seed):
  """Drops records of the over-represented kind so tumour slices make `target_fraction`."""
  keep_tumor, keep_free = keep_probabilities(base_fraction, target_fraction)
  logging.info(
    "rebalancing: %.2f of slices have tumour; keeping tumour slices with p=%.3f, "
    "tumour-free with p=%.3f for %.2f",
    base_fraction,
    keep_tumor,
    keep_free,
    target_fraction,
  )

  def select(serialized, batch_seed):
    has_tumor = tf.io.parse_example(serialized, _HAS_TUMOR_SPEC)["has_tumor"] > 0
    draw = tf.random.stateless_uniform(tf.shape(serialized), batch_seed)
    keep = tf.where(has_tumor, draw < keep_tumor, draw < keep_free)
    return tf.boolean_mask(serialized, keep)

  batches = tf.data.Dataset.zip(records.batch(_SELECT_BATCH), _seeds(seed + 2))
  return batches.map(select, num_parallel_calls=tf.data.AUTOTUNE).unbatch()


def _options(deterministic, input_context):
  options = tf.data.Options()
  options.deterministic = deterministic
  options.autotune.enabled = True
  options.experimental_optimization.map_parallelization = True
  options.experimental_optimization.parallel_batch = True
  # Parallelism comes from the parallel map and interleave; ops inside them run on their
  # own thread, which saves the thread-pool hand-offs and wake-ups that otherwise cost a
  # tenth of the reader's time on 2 cores (perf).
  options.threading.max_intra_op_parallelism = 1
  if input_context is not None:
    # Files are already sharded per input pipeline above; tf.distribute must not shard again.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
  return options


def dataset_fn(
  data_dir: str, **kwargs: Any
) -> Callable[[tf.distribute.InputContext], tf.data.Dataset]:
  """For `strategy.distribute_datasets_from_function`: input_context -> dataset."""
  return lambda input_context: build_dataset(data_dir, input_context=input_context, **kwargs)
