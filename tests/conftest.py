"""Shared fixtures: the repo root, the real BraTS cases (skipped when absent), CLI runners."""

import os
import shutil
import subprocess
import sys

import pytest

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # as the mains do: docs/benchmarks.md

import tensorflow as tf  # pylint: disable=wrong-import-position

# Two logical CPU devices for MirroredStrategy tests; must happen before TensorFlow starts.
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0],
    [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])

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
  result = subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
  if check and result.returncode != 0:
    raise AssertionError(f"{module} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
  return result
