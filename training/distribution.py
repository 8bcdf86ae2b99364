"""Strategy and precision choice: the same command uses one CPU, every local GPU, or
several machines (TF_CONFIG), unchanged.

`make_strategy` must be the first TensorFlow call of a process when it creates a
MultiWorkerMirroredStrategy (its collective ops are configured at context creation).
"""

import json
import os
import tempfile

import tensorflow as tf

from training.config import STRATEGIES


def make_strategy(name, devices=None):
  """Returns a `tf.distribute.Strategy` for `name` (see STRATEGIES)."""
  if name == "multi_worker":
    if "TF_CONFIG" not in os.environ:
      raise ValueError("--strategy=multi_worker needs the TF_CONFIG environment variable")
    return tf.distribute.MultiWorkerMirroredStrategy()
  if name == "mirrored":
    return tf.distribute.MirroredStrategy(devices or None)
  gpus = tf.config.list_logical_devices("GPU")
  if name == "auto" and len(gpus) > 1:
    return tf.distribute.MirroredStrategy()
  if name in ("auto", "default"):
    return tf.distribute.get_strategy()
  raise ValueError(f"unknown strategy {name!r}; expected one of {STRATEGIES}")


def split_cpu(count):
  """Makes `count` logical CPU devices (/cpu:0.../cpu:N-1) before TensorFlow starts."""
  cpu = tf.config.list_physical_devices("CPU")[0]
  tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
  )


def resolve_precision(name):
  """'auto' -> mixed_float16 on GPUs with tensor cores (compute capability >= 7.0), else float32.

  On CPUs without AMX mixed precision is 2-5x slower than float32, so it is never chosen
  automatically there.
  """
  if name != "auto":
    return name
  for gpu in tf.config.list_physical_devices("GPU"):
    capability = tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0))
    if capability >= (7, 0):
      return "mixed_float16"
  return "float32"


def uses_gpu():
  return bool(tf.config.list_logical_devices("GPU"))


def task_info():
  """(task_type, task_id) from TF_CONFIG, or (None, None) outside multi-worker runs."""
  config = json.loads(os.environ.get("TF_CONFIG", "{}"))
  task = config.get("task", {})
  return task.get("type"), task.get("index")


def is_chief():
  """The chief writes the final outputs: task 'chief', or worker 0 when there is no chief."""
  task_type, task_id = task_info()
  if task_type is None:
    return True
  cluster = json.loads(os.environ["TF_CONFIG"]).get("cluster", {})
  return task_type == "chief" or (task_type == "worker" and task_id == 0 and "chief" not in cluster)


def write_dir(model_dir):
  """`model_dir` on the chief; a private temporary folder on other workers, whose callbacks
  write too (every worker must run them for the collectives to line up)."""
  if is_chief():
    return model_dir
  task_type, task_id = task_info()
  return tempfile.mkdtemp(prefix=f"brats-unet-{task_type}-{task_id}-")
