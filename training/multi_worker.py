"""A workaround for multi-worker `fit` in Keras 3.15 (keras-team/keras#20585,
tensorflow/tensorflow#72388).

Under MultiWorkerMirroredStrategy, stock Keras fails in two places:
1. `_maybe_symbolic_build` all-reduces the whole first (x, y) batch across workers just to
   learn its shapes; here it takes this worker's first replica's batch instead (shapes are
   the same on every replica).
2. `reduce_per_replica` reduces per-replica scalar logs (loss, metrics) with
   `strategy.reduce("MEAN", v, axis=0)`, which fails on rank-0 values; here scalars are
   reduced with `axis=None`.
`apply()` patches both, only for multi-worker strategies; other strategies take the
original code paths. The patch replaces private Keras functions, so it is refused (one line,
at import) on Keras versions it was not tested on.
"""

from absl import logging
import keras
import tensorflow as tf

TESTED_KERAS_VERSIONS = ("3.15",)  # major.minor


def check_keras_version(version: str) -> None:
  """Raises ValueError unless `version` is one the patch was tested on."""
  if ".".join(version.split(".")[:2]) not in TESTED_KERAS_VERSIONS:
    raise ValueError(
      f"--strategy=multi_worker: Keras {version} is installed, but the multi-worker patch "
      f"(training/multi_worker.py, keras-team/keras#20585) was tested on Keras "
      f"{', '.join(TESTED_KERAS_VERSIONS)} only; install keras=={TESTED_KERAS_VERSIONS[-1]}.*"
    )


check_keras_version(keras.version())

from keras.src import tree  # noqa: E402  (private modules: only on a tested version)
from keras.src.backend.tensorflow import trainer as tf_trainer  # noqa: E402

_original_reduce_per_replica = tf_trainer.reduce_per_replica
_original_maybe_symbolic_build = tf_trainer.TensorFlowTrainer._maybe_symbolic_build


def _rank(value):
  if tf_trainer._is_per_replica_instance(value):
    return value.values[0].shape.rank
  return value.shape.rank


def reduce_per_replica(values, strategy, reduction):
  if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(strategy):

    def reduce_one(value):
      axis = None if _rank(value) == 0 else 0
      return strategy.reduce("MEAN", value, axis=axis)

    return tree.map_structure(reduce_one, values)
  return _original_reduce_per_replica(values, strategy, reduction)


def _maybe_symbolic_build(self, iterator=None, data_batch=None):
  strategy = self._distribute_strategy
  if strategy is None or not tf_trainer._collective_all_reduce_multi_worker(strategy):
    return _original_maybe_symbolic_build(self, iterator=iterator, data_batch=data_batch)
  if iterator is not None:
    for _, _, step_iterator in iterator:
      batch = next(step_iterator)
      data_batch = tree.map_structure(
        lambda v: (
          strategy.experimental_local_results(v)[0]
          if isinstance(v, tf.distribute.DistributedValues)
          else v
        ),
        batch,
      )
      break
  with strategy.scope():
    self._symbolic_build(data_batch=data_batch)


def apply() -> None:
  """Installs the workaround (idempotent)."""
  if tf_trainer.reduce_per_replica is not reduce_per_replica:
    logging.info("patching Keras multi-worker fit (keras-team/keras#20585)")
    tf_trainer.reduce_per_replica = reduce_per_replica
    tf_trainer.TensorFlowTrainer._maybe_symbolic_build = _maybe_symbolic_build
