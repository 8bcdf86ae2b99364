"""Shared fixtures: the repo root, the real BraTS cases (skipped when absent), CLI runners."""

import datetime
import os
import shutil
import subprocess
import sys

import pytest

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # as the mains do: docs/benchmarks.md

from data_prep import worker_threads  # pylint: disable=wrong-import-position

# numpy computes as the converter's workers do: the resize's float sums depend on the number
# of BLAS threads, so an in-process conversion matches a pooled one bit for bit only so.
os.environ.update(worker_threads.VARIABLES)

import tensorflow as tf  # pylint: disable=wrong-import-position

from data_prep import convert  # pylint: disable=wrong-import-position
from data_prep import patient_conversion  # pylint: disable=wrong-import-position
from data_prep import preprocessing  # pylint: disable=wrong-import-position
from data_prep import synthetic  # pylint: disable=wrong-import-position

# Two logical CPU devices for MirroredStrategy tests; must happen before TensorFlow starts.
tf.config.set_logical_device_configuration(
  tf.config.list_physical_devices("CPU")[0],
  [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()],
)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REAL_DATA = os.path.join(REPO_ROOT, "..", "shared", "data", "brats2018")


@pytest.fixture
def real_cases(tmp_path):
  """A folder with two real BraTS 2018 cases (copied), or a skip when ../shared is absent."""
  if not os.path.isdir(REAL_DATA):
    pytest.skip("../shared/data/brats2018 is absent (real BraTS cases live only beside the repo)")
  folder = tmp_path / "real"
  folder.mkdir()
  for case in ("Brats18_CBICA_AMH_1", "Brats18_CBICA_AQO_1"):
    shutil.copytree(os.path.join(REAL_DATA, case), folder / case)
  return folder


def run_module(module, *args, check=False, timeout=600):
  """Runs `python -m module args` from the repo root; returns the CompletedProcess."""
  env = dict(os.environ, PYTHONPATH=REPO_ROOT)
  result = subprocess.run(
    [sys.executable, "-m", module, *map(str, args)],
    cwd=REPO_ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=timeout,
  )
  if check and result.returncode != 0:
    raise AssertionError(f"{module} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
  return result


# Flags of the tiny model the end-to-end tests train (seconds per epoch on 2 cores).
# Input channels of a drop converted with the defaults (tiny_drop and the tests' own drops).
DEFAULT_CHANNELS = preprocessing.Recipe().channels

TINY_TRAINING = {
  "base_filters": 4,
  "depth": 2,
  "batch_size": 8,
  "shuffle_buffer": 64,
  "tensorboard_images": 0,
}
TINY_TRAIN_FLAGS = tuple(f"--{name}={value}" for name, value in TINY_TRAINING.items())


def run_script(script, *args, timeout=300):
  """Runs `python script args` (a path below the repo root) from the repo root."""
  return subprocess.run(
    [sys.executable, os.path.join(REPO_ROOT, script), *map(str, args)],
    cwd=REPO_ROOT,
    capture_output=True,
    text=True,
    timeout=timeout,
    env=dict(os.environ, PYTHONPATH=REPO_ROOT),
  )


def synthetic_drop(root, num_patients, seed, modalities=preprocessing.Recipe.modalities):
  """Writes synthetic NIfTI patients of 16 slices to root/nifti and converts them at 32x32
  to root/tfrecords; returns the latter."""
  synthetic.generate(
    str(root / "nifti"), num_patients=num_patients, fmt="nifti", seed=seed, num_slices=16
  )
  convert.convert(
    str(root / "nifti"),
    str(root / "tfrecords"),
    progress=False,
    options=patient_conversion.ConversionOptions(image_size=32, modalities=modalities),
  )
  return root / "tfrecords"


@pytest.fixture(scope="session")
def tiny_drop(tmp_path_factory):
  """A converted folder of six synthetic NIfTI patients of 16 slices at 32x32."""
  return synthetic_drop(tmp_path_factory.mktemp("tiny_drop"), num_patients=6, seed=2)


@pytest.fixture(scope="session")
def tiny_run(tiny_drop, tmp_path_factory):
  """(run folder, UTC time just before, CompletedProcess) of train_main.py on tiny_drop: two
  epochs of six steps, long enough for the model to differ from a fresh one. Read only."""
  run_dir = tmp_path_factory.mktemp("tiny_run") / "run"
  started = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
  result = run_script(
    "train_main.py",
    f"--data_dir={tiny_drop}",
    f"--model_dir={run_dir}",
    *TINY_TRAIN_FLAGS,
    "--epochs=2",
    "--steps_per_epoch=6",
    "--learning_rate=3e-3",
  )
  assert result.returncode == 0, result.stderr[-3000:]
  return run_dir, started, result
