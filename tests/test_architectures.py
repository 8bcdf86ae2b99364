"""The model family of `--architecture`: shapes under mixed precision, a two-replica training
step, .keras and .h5 round trips, the dispatcher's errors, and the trainer's wiring."""

import os
import re
import subprocess
import sys
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO_ROOT
from model import serializable  # noqa: F401  (custom objects for load_model)
from model import config as model_config
from model import losses
from model import unet
from training import saved_model
from training import trainer

# (architecture, deep_supervision): every builder, and U-Net++ with both outputs.
VARIANTS = [(name, False) for name in model_config.ARCHITECTURES] + [("unet_plus_plus", True)]
VARIANT_IDS = [name + ("_deep" if deep else "") for name, deep in VARIANTS]


def _tiny(architecture, deep_supervision=False, **overrides):
  fields = dict(
    image_size=32,
    depth=2,
    base_filters=4,
    dropout=0.0,
    architecture=architecture,
    deep_supervision=deep_supervision,
    transformer_heads=2,
  )
  return unet.UNetConfig(**{**fields, **overrides})


@pytest.fixture
def mixed_float16():
  previous = keras.mixed_precision.global_policy()
  keras.mixed_precision.set_global_policy("mixed_float16")
  yield
  keras.mixed_precision.set_global_policy(previous)


@pytest.mark.parametrize("architecture,deep_supervision", VARIANTS[:4], ids=VARIANT_IDS[:4])
def test_shapes_and_float32_output_under_mixed_float16(
  architecture, deep_supervision, mixed_float16
):
  for depth in (2, 3, 4, 5):
    for size in (32, 64):
      config = _tiny(architecture, image_size=size, depth=depth, num_outputs=3, channels=2)
      built = unet.build_model(config)
      out = built(np.zeros((1, size, size, 2), np.float32))
      assert out.shape == (1, size, size, 3) and out.dtype == "float32", (depth, size)
      assert np.all((np.asarray(out) >= 0) & (np.asarray(out) <= 1))
      assert built.get_layer("down0_conv1").compute_dtype == "float16"
      assert built.name == architecture


def test_each_architecture_has_its_own_layers():
  names = {
    arch: {layer.name for layer in unet.build_model(_tiny(arch)).layers}
    for arch in model_config.ARCHITECTURES
  }
  assert "attention1_gated" in names["attention_unet"]
  assert {"x0_1_concat", "x0_2_concat", "x1_1_concat"} <= names["unet_plus_plus"]
  assert {"position_embedding", "transformer1_attention"} <= names["trans_unet"]
  assert not any(n.startswith(("attention", "x0_", "transformer")) for n in names["unet"])
  deep = unet.build_model(_tiny("unet_plus_plus", deep_supervision=True))
  assert {"x0_1_probabilities", "x0_2_probabilities"} <= {layer.name for layer in deep.layers}


@pytest.mark.parametrize("architecture", model_config.ARCHITECTURES)
def test_one_step_under_mirrored_strategy_on_two_cpus(architecture):
  """Every trainable weight that can learn gets a gradient through both replicas. SGD, no batch
  norm and one transformer block keep the distributed graph small (Adam and batch norm triple
  its tracing time on 2 cores)."""
  keras.utils.set_random_seed(0)
  x = np.random.default_rng(0).normal(size=(4, 32, 32, 1)).astype(np.float32)
  y = (x > 1).astype(np.float32)
  # Reduction through one device rather than collectives: collective keys restart with each
  # strategy object and collide between strategies made in one process (tests/test_model.py).
  strategy = tf.distribute.MirroredStrategy(
    ["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice()
  )
  with strategy.scope():
    built = unet.build_model(_tiny(architecture, norm_layer="none", transformer_layers=1))
    built.compile(optimizer=keras.optimizers.SGD(0.1), loss=losses.get_loss("bce"))
  before = [w.numpy().copy() for w in built.trainable_weights]
  history = built.fit(tf.data.Dataset.from_tensors((x, y)), epochs=1, verbose=0)
  assert np.isfinite(history.history["loss"][0])
  unchanged = [
    w.path for w, b in zip(built.trainable_weights, before) if np.array_equal(w.numpy(), b)
  ]
  # A key bias adds q.b to every logit of a query alike, so softmax cancels it: its gradient is 0.
  assert all(path.endswith("attention/key/bias") for path in unchanged), unchanged


@pytest.mark.parametrize("architecture,deep_supervision", VARIANTS, ids=VARIANT_IDS)
def test_keras_h5_and_saved_model_give_the_same_outputs(architecture, deep_supervision, tmp_path):
  keras.utils.set_random_seed(1)
  built = unet.build_model(_tiny(architecture, deep_supervision, dropout=0.1))
  x = np.random.default_rng(2).normal(size=(2, 32, 32, 1)).astype(np.float32)
  expected = _reloads_with_the_same_outputs(built, x, tmp_path)
  # every run ends with a SavedModel export (training/saved_model.py), so each family must export
  saved_model.export(built, str(tmp_path / "saved_model"))
  serve = tf.saved_model.load(str(tmp_path / "saved_model")).signatures["serving_default"]
  np.testing.assert_allclose(
    serve(image=tf.constant(x))["probabilities"].numpy(), expected, atol=1e-5, err_msg="saved_model"
  )


def test_unknown_architecture_names_the_valid_ones():
  with pytest.raises(ValueError, match="architecture must be one of") as error:
    unet.build_model(unet.UNetConfig(architecture="resnet"))
  assert all(name in str(error.value) for name in model_config.ARCHITECTURES)


def test_the_trainer_builds_the_configured_architecture():
  layout = types.SimpleNamespace(image_size=32, channels=1)
  common = dict(data_dir="unused", model_dir="unused", depth=2, base_filters=4, dropout=0.0)
  attention = trainer.build_model(
    trainer.TrainConfig(architecture="attention_unet", **common), layout
  )
  assert attention.name == "attention_unet" and attention.get_layer("attention0_gated")
  trans = trainer.build_model(
    trainer.TrainConfig(
      architecture="trans_unet", transformer_layers=3, transformer_heads=2, **common
    ),
    layout,
  )
  assert trans.get_layer("transformer2_attention").num_heads == 2
  assert trainer.build_model(trainer.TrainConfig(**common), layout).name == "unet"


def test_the_architecture_flag_lists_exactly_the_builders():
  """An unknown value fails at flag parsing (before TensorFlow starts) naming the choices,
  which are the builders' names."""
  result = subprocess.run(
    [
      sys.executable,
      os.path.join(REPO_ROOT, "train_main.py"),
      "--model_dir=unused",
      "--architecture=resnet",
    ],
    cwd=REPO_ROOT,
    capture_output=True,
    text=True,
    timeout=60,
    env=dict(os.environ, PYTHONPATH=REPO_ROOT),
  )
  assert result.returncode != 0
  choices = re.search(r"one of <([^>]*)>", result.stderr)
  assert choices and choices.group(1).split("|") == list(model_config.ARCHITECTURES), result.stderr


@pytest.mark.parametrize("architecture", model_config.ARCHITECTURES)
def test_instance_norm_under_mixed_float16(architecture, mixed_float16):
  built = unet.build_model(_tiny(architecture, norm_layer="instance"))
  out = np.asarray(built(100 * np.ones((1, 32, 32, 1), np.float32)))
  assert out.dtype == np.float32 and np.all(np.isfinite(out))
  assert built.get_layer("down0_in1").compute_dtype == "float16"


@pytest.mark.parametrize("architecture", model_config.ARCHITECTURES)
def test_instance_norm_round_trips_through_keras_and_h5(architecture, tmp_path):
  keras.utils.set_random_seed(1)
  built = unet.build_model(_tiny(architecture, norm_layer="instance"))
  assert any(isinstance(layer, keras.layers.GroupNormalization) for layer in built.layers)
  assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in built.layers)
  x = np.random.default_rng(2).normal(size=(2, 32, 32, 1)).astype(np.float32)
  _reloads_with_the_same_outputs(built, x, tmp_path)


def _reloads_with_the_same_outputs(built, x, tmp_path):
  """Saves `built` as .keras and .h5, checks each reloads to the same layers and outputs on
  `x`, and returns the outputs."""
  expected = np.asarray(built(x))
  for name in ("model.keras", "model.h5"):
    built.save(tmp_path / name)
    restored = keras.models.load_model(tmp_path / name)
    np.testing.assert_allclose(np.asarray(restored(x)), expected, atol=1e-5, err_msg=name)
    assert [layer.name for layer in restored.layers] == [layer.name for layer in built.layers]
  return expected


@pytest.mark.parametrize("norm_layer,invariant", [("instance", True), ("batch", False)])
def test_only_instance_norm_makes_the_unet_blind_to_an_intensity_scale(norm_layer, invariant):
  """Why instance norm is a site-robustness lever: the first convolution has no bias, so an
  input scaled by a constant (another scanner's gain) reaches the first norm layer scaled
  and leaves it unchanged, and all after it is the same; batch norm at test time
  normalizes with the training data's fixed statistics."""
  keras.utils.set_random_seed(3)
  built = unet.build_model(_tiny("unet", norm_layer=norm_layer))
  x = np.random.default_rng(4).normal(size=(2, 32, 32, 1)).astype(np.float32)
  plain, scaled = np.asarray(built(x)), np.asarray(built(3.0 * x))
  assert np.allclose(plain, scaled, atol=1e-4) == invariant
