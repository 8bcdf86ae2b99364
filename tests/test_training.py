"""train_main.py end to end: outputs, resume after a kill, two workers, flags, benchmark."""

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from conftest import REPO_ROOT
from model import serializable  # noqa: F401  (custom objects for load_model)
from data_prep import convert
from data_prep import folds
from data_prep import machine
from data_prep import patient_conversion
from data_prep import synthetic

TINY_FLAGS = [
  "--base_filters=4",
  "--depth=2",
  "--batch_size=8",
  "--tensorboard_images=2",
  "--shuffle_buffer=64",
]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("train")
  numbers = list(range(1, 7))
  assert any(folds.fold_of(f"BraTS20_Training_{n:03d}", 5) == 0 for n in numbers)
  synthetic.generate(
    str(root / "source"), num_patients=len(numbers), fmt="nifti", seed=2, num_slices=16
  )
  convert.convert(
    str(root / "source"),
    str(root / "tfrecords"),
    progress=False,
    options=patient_conversion.ConversionOptions(image_size=32),
  )
  return str(root / "tfrecords")


def _train_command(data_dir, model_dir, *extra):
  return [
    sys.executable,
    os.path.join(REPO_ROOT, "train_main.py"),
    f"--data_dir={data_dir}",
    f"--model_dir={model_dir}",
    *TINY_FLAGS,
    *extra,
  ]


def _run(command, env=None, timeout=300):
  return subprocess.run(
    command,
    cwd=REPO_ROOT,
    capture_output=True,
    text=True,
    timeout=timeout,
    env=dict(os.environ, PYTHONPATH=REPO_ROOT, **(env or {})),
  )


def test_training_writes_every_output_and_the_models_agree(data_dir, tmp_path):
  model_dir = tmp_path / "run"
  result = _run(_train_command(data_dir, model_dir, "--epochs=2", "--steps_per_epoch=3"))
  assert result.returncode == 0, result.stderr[-3000:]
  for name in (
    "best_model.keras",
    "best_model.h5",
    "flags.txt",
    "history.csv",
    "training_curves.png",
  ):
    assert (model_dir / name).is_file(), name
  events = [
    f for _, _, files in os.walk(model_dir / "tensorboard") for f in files if "tfevents" in f
  ]
  assert len(events) >= 3  # train, validation, validation_images
  with open(model_dir / "history.csv") as f:
    rows = f.read().strip().splitlines()
  assert rows[0].split(",")[0] == "epoch" and len(rows) == 3 and "val_dice" in rows[0]
  assert f"--model_dir={model_dir}" in (model_dir / "flags.txt").read_text()
  keras_model = keras.models.load_model(model_dir / "best_model.keras")
  h5_model = keras.models.load_model(model_dir / "best_model.h5", compile=False)
  x = np.random.default_rng(0).normal(size=(3, *keras_model.input_shape[1:])).astype(np.float32)
  np.testing.assert_allclose(
    keras_model.predict(x, verbose=0), h5_model.predict(x, verbose=0), atol=1e-6
  )
  assert keras_model.optimizer is not None  # the .keras checkpoint keeps the optimizer


def test_a_killed_run_resumes_from_backup(data_dir, tmp_path):
  model_dir = tmp_path / "run"
  command = _train_command(
    data_dir, model_dir, "--epochs=6", "--steps_per_epoch=4", "--tensorboard_images=0"
  )
  process = subprocess.Popen(
    command,
    cwd=REPO_ROOT,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
    env=dict(os.environ, PYTHONPATH=REPO_ROOT),
  )
  metadata = model_dir / "backup" / "training_metadata.json"
  deadline = time.time() + 240
  while time.time() < deadline:
    if metadata.exists():
      try:
        if json.loads(metadata.read_text())["epoch"] >= 2:
          break
      except (json.JSONDecodeError, KeyError):
        pass
    time.sleep(0.1)
  process.send_signal(signal.SIGKILL)
  process.wait()
  resumed_from = json.loads(metadata.read_text())["epoch"]
  assert 2 <= resumed_from < 6
  result = _run(command)
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"Epoch {resumed_from + 1}/6" in result.stdout and "Epoch 1/6" not in result.stdout
  from training import curves

  assert curves.read_history(model_dir / "history.csv")["epoch"] == [1, 2, 3, 4, 5, 6]
  assert (model_dir / "best_model.h5").is_file()
  assert not (model_dir / "backup").exists()  # deleted after a finished run
  # the cost of the epochs of both processes adds up, one entry per epoch
  from training import callbacks

  cost = callbacks.read_epoch_cost(model_dir)
  assert sorted(cost, key=int) == [str(e) for e in range(6)]
  assert all(e["cpu_seconds"] > 0 and e["wall_seconds"] > 0 for e in cost.values())
  assert callbacks.total_cost(model_dir)["epochs"] == 6


def _free_ports(count):
  sockets = [socket.socket() for _ in range(count)]
  for s in sockets:
    s.bind(("127.0.0.1", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


def test_two_workers_train_one_short_epoch(data_dir, tmp_path):
  ports = _free_ports(2)
  cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
  model_dir = tmp_path / "run"
  processes = []
  for index in range(2):
    env = dict(
      os.environ,
      PYTHONPATH=REPO_ROOT,
      TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
    )
    processes.append(
      subprocess.Popen(
        _train_command(
          data_dir, model_dir, "--strategy=multi_worker", "--epochs=1", "--steps_per_epoch=3"
        ),
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
      )
    )
  outputs = [p.communicate(timeout=300) for p in processes]
  for process, (stdout, stderr) in zip(processes, outputs):
    assert process.returncode == 0, stderr[-3000:]
    assert "trained:" in stdout
  losses = [
    [line for line in out.splitlines() if "3/3" in line][0].split("loss: ")[1].split()[0]
    for out, _ in outputs
  ]
  assert losses[0] == losses[1]  # one model, reduced over both workers
  assert (model_dir / "best_model.h5").is_file() and (model_dir / "history.csv").is_file()
  leftovers = [n for n in os.listdir(model_dir) if n.startswith("brats-unet-worker")]
  assert not leftovers


def test_validation_runs_on_the_chosen_epochs_only(data_dir, tmp_path):
  model_dir = tmp_path / "run"
  result = _run(
    _train_command(
      data_dir,
      model_dir,
      "--epochs=4",
      "--steps_per_epoch=2",
      "--validate_every=3",
      "--checkpoint=last",
      "--early_stopping_patience=0",
      "--lr_schedule=cosine",
      "--tensorboard_images=0",
    )
  )
  assert result.returncode == 0, result.stderr[-3000:]
  from training import curves

  val_dice = curves.read_history(model_dir / "history.csv")["val_dice"]
  validated = [epoch for epoch, value in enumerate(val_dice, 1) if not math.isnan(value)]
  assert validated == [1, 3, 4]  # every third, the first and the last
  assert (model_dir / "training_curves.png").is_file()


@pytest.mark.parametrize(
  "flag,message",
  [
    ("--batch_size=0", "--batch_size must be at least 1"),
    ("--task=brain", "--task"),
    ("--mixed_precision=fp8", "--mixed_precision"),
    ("--data_dir=/nonexistent", "--data_dir must be an existing folder"),
    ("--deep_supervision", "--deep_supervision needs --architecture=unet_plus_plus"),
    ("--loss=bce --region_weights=1,1,2", "--loss=bce has none"),
    ("--transformer_heads=2", "shape --architecture=trans_unet only, not unet"),
    ("--validate_every=0", "--validate_every must be at least 1"),
    ("--patch_size=16 --architecture=trans_unet", "--patch_size needs a fully convolutional"),
  ],
)
def test_invalid_flags_fail_in_one_line(data_dir, tmp_path, flag, message):
  command = _train_command(data_dir, tmp_path / "run") + flag.split()
  result = _run(command, timeout=60)
  assert result.returncode != 0
  assert message in result.stderr and "Traceback" not in result.stderr
  assert not (tmp_path / "run").exists()  # failed before anything was written


def test_indivisible_batch_is_a_one_line_error(data_dir, tmp_path):
  result = _run(
    _train_command(
      data_dir,
      tmp_path / "run",
      "--strategy=mirrored",
      "--devices=/cpu:0,/cpu:1",
      "--logical_cpus=2",
      "--batch_size=7",
      "--epochs=1",
    )
  )
  assert result.returncode == 1
  assert "must divide by the 2 replicas" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
  "flags,message",
  [
    (["--task=regions"], "--task=regions needs FLAIR, T1ce and T2 (the drops hold flair)"),
    (["--region_weights=1,2"], "--region_weights needs 1 weights for --task=whole_tumor"),
    (["--region_weights=1,-2"], "--region_weights must be positive numbers"),
    (["--depth=6"], "--depth=6 needs slices whose size divides by 64; the drops in"),
    (["--patch_size=48"], "--patch_size=48 must be at most the 32px slices stored in"),
    (["--patch_size=18"], "and divide by 2**depth = 4"),
    (
      ["--validate_every=2", "--checkpoint=last", "--lr_schedule=cosine"],
      "--validate_every=2 leaves epochs without validation, but --early_stopping_patience>0",
    ),
  ],
)
def test_a_task_the_drops_cannot_teach_is_refused_in_one_line(data_dir, tmp_path, flags, message):
  result = _run(_train_command(data_dir, tmp_path / "run", "--epochs=1", *flags))
  assert result.returncode == 1
  assert message in result.stderr and "Traceback" not in result.stderr
  assert not (tmp_path / "run").exists()  # refused before anything was written


@pytest.mark.parametrize(
  "augmentation",
  [
    [],
    ["--site_augmentation", "--site_curve_probability=1", "--faint_edema_augmentation"],
    ["--patch_size=16"],
  ],
)
def test_benchmark_prints_json_with_both_rates(data_dir, tmp_path, augmentation):
  result = _run(_train_command(data_dir, tmp_path / "run", "--benchmark_steps=3", *augmentation))
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.loads(result.stdout.strip().splitlines()[-1])
  assert summary["benchmark"] == "train_summary"
  assert summary["pipeline_images_per_sec"] > 0 and summary["in_memory_images_per_sec"] > 0
  assert summary["precision"] == "float32" and summary["replicas"] == 1
  assert summary["global_batch_size"] == 8
  assert summary["cpu"] == machine.cpu_model()  # timings name the CPU they ran on


def test_the_multi_worker_patch_refuses_untested_keras_versions():
  from training import multi_worker

  multi_worker.check_keras_version(keras.version())  # the installed one is a tested one
  multi_worker.check_keras_version("3.15.9")
  for version in ("3.16.0", "4.0.1", "3.1.5"):
    with pytest.raises(ValueError, match=f"Keras {version} is installed, but the multi-worker"):
      multi_worker.check_keras_version(version)
