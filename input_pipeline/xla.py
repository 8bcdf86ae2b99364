"""How the augmentation's steps are compiled (XLA), shared by augment.py and site_augment.py."""

import tensorflow as tf


def compiled(fn):
  """`fn` as one XLA function (no autograph: these are straight-line tensor code)."""
  return tf.function(fn, jit_compile=True, autograph=False)
