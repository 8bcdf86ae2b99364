"""Callbacks of a training run: checkpoint, early stopping, LR on plateau, backup, history,
the cost of each epoch, TensorBoard with validation overlays."""

import json
import os
import resource
import time

import keras
import numpy as np
import tensorflow as tf

from data_prep import atomic
from data_prep.overlays import overlay_rgb
from model.contract import THRESHOLD


class WorkerBackupAndRestore(keras.callbacks.BackupAndRestore):
  """BackupAndRestore that restores from the chief's `backup_dir` but, on other workers,
  writes its own backups to `write_dir` (so only the chief's are ever read back)."""

  def __init__(self, backup_dir, write_dir):
    super().__init__(backup_dir, double_checkpoint=True)
    self._write = keras.callbacks.BackupAndRestore(write_dir, double_checkpoint=True)

  def set_model(self, model):
    super().set_model(model)
    self._write.set_model(model)

  def on_epoch_end(self, epoch, logs=None):
    self._write.on_epoch_end(epoch, logs)

  def on_train_end(self, logs=None):
    self._write.on_train_end(logs)


class ValidationImages(keras.callbacks.Callback):
  """Writes overlays of a fixed validation batch to TensorBoard after every epoch."""

  def __init__(self, log_dir, images, targets, max_images=4):
    super().__init__()
    self.images = images[:max_images]
    self.targets = targets[:max_images]
    self.writer = tf.summary.create_file_writer(os.path.join(log_dir, "validation_images"))

  def on_epoch_end(self, epoch, logs=None):
    probabilities = np.asarray(self.model(self.images, training=False))
    pictures = [
      overlay_rgb(image[..., 0], target[..., 0] > THRESHOLD, probability[..., 0] > THRESHOLD)
      for image, target, probability in zip(self.images, self.targets, probabilities)
    ]
    with self.writer.as_default():
      tf.summary.image(
        "validation/green_truth_red_prediction",
        np.stack(pictures),
        step=epoch,
        max_outputs=len(pictures),
      )
    self.writer.flush()


BACKUP = "backup"
EPOCH_COST = "epoch_cost.json"


def _cpu_seconds():
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


class EpochCost(keras.callbacks.Callback):
  """Wall and CPU seconds of every epoch (training and validation) in `epoch_cost.json`.

  What a run cost on a shared machine is its CPU time: a pause (SIGSTOP) or another job on
  the same cores stretches the wall time but barely the CPU time. The file is rewritten
  atomically each epoch and kept across resumes, so a run killed and resumed still adds up
  (an epoch repeated after a resume counts its last attempt).
  """

  def __init__(self, path):
    super().__init__()
    self.path = path

  def on_train_begin(self, logs=None):
    self._epochs = _read_epochs(self.path) or {}  # a resumed run's earlier epochs

  def on_epoch_begin(self, epoch, logs=None):
    self._start = time.perf_counter(), _cpu_seconds()

  def on_epoch_end(self, epoch, logs=None):
    wall, cpu = time.perf_counter() - self._start[0], _cpu_seconds() - self._start[1]
    self._epochs[str(epoch)] = {"wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1)}
    atomic.write_json(self.path, {"epochs": self._epochs})


def _read_epochs(path):
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)["epochs"]
  except (OSError, ValueError, KeyError):
    return None


def read_epoch_cost(model_dir):
  """{epoch: {"wall_seconds", "cpu_seconds"}} of a run, or None when it has no record."""
  return _read_epochs(os.path.join(model_dir, EPOCH_COST))


def total_cost(model_dir):
  """{"wall_seconds", "cpu_seconds", "epochs"} summed over a run's epochs, or None."""
  epochs = read_epoch_cost(model_dir)
  if not epochs:
    return None
  return {
    "wall_seconds": round(sum(e["wall_seconds"] for e in epochs.values()), 1),
    "cpu_seconds": round(sum(e["cpu_seconds"] for e in epochs.values()), 1),
    "epochs": len(epochs),
  }


def has_backup(model_dir):
  """Whether BackupAndRestore will restore weights when this run starts (a killed run)."""
  weights = os.path.join(model_dir, BACKUP, "latest.weights.h5")
  return os.path.exists(weights) or os.path.exists(weights + ".bkp")


def build_callbacks(
  *,
  model_dir,
  write_dir,
  monitor,
  early_stopping_patience,
  reduce_lr_patience,
  save_best_only=True,
  validation_batch=None,
  is_chief=True,
):
  """The callbacks of a run; non-chief workers write everything under `write_dir`."""
  backup = (
    keras.callbacks.BackupAndRestore(os.path.join(model_dir, BACKUP), double_checkpoint=True)
    if is_chief
    else WorkerBackupAndRestore(os.path.join(model_dir, BACKUP), os.path.join(write_dir, BACKUP))
  )
  # BackupAndRestore goes last: when it records "epoch N done", the history row and the
  # checkpoint of epoch N are already written, so a run killed at any moment resumes cleanly.
  # With save_best_only=False the checkpoint holds the last epoch's weights: a model chosen
  # by its Dice on the validation fold would make that fold's score optimistic.
  callbacks = [
    keras.callbacks.ModelCheckpoint(
      os.path.join(write_dir, "best_model.keras"),
      monitor=monitor,
      mode="max",
      save_best_only=save_best_only,
    ),
    keras.callbacks.CSVLogger(os.path.join(write_dir, "history.csv"), append=True),
    EpochCost(os.path.join(write_dir, EPOCH_COST)),
    keras.callbacks.TensorBoard(os.path.join(write_dir, "tensorboard"), update_freq="epoch"),
  ]
  if reduce_lr_patience > 0:
    callbacks.insert(
      1,
      keras.callbacks.ReduceLROnPlateau(
        monitor=monitor, mode="max", factor=0.5, patience=reduce_lr_patience, min_lr=1e-6
      ),
    )
  if early_stopping_patience > 0:
    callbacks.append(
      keras.callbacks.EarlyStopping(monitor=monitor, mode="max", patience=early_stopping_patience)
    )
  if validation_batch is not None and is_chief:
    callbacks.append(ValidationImages(os.path.join(write_dir, "tensorboard"), *validation_batch))
  return callbacks + [backup]
