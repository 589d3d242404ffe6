"""Write the TensorFlow-made NLRN fixtures under tests/data/nlrn_tf_fixture/ (run under TensorFlow).

This script is the only place TensorFlow is used, and it is not part of the package: it builds a
TINY NLRN as a TF1-style graph with ``tf.compat.v1.layers`` (3 recurrent states, 8 features), with
the variable layout and creation order of the official code bases, gives every variable random
values, and writes

* ``v0/``: a ``tf.train.Saver`` checkpoint like Ding-Liu/NLRN_v0 ``train.py`` writes it:
  variables under ``model/``, correlation propagation, input in [0, 255], the graph's output is
  the residual; Adam slots and ``global_step`` included, as in a training checkpoint.
* ``later/``: a SavedModel like Ding-Liu/NLRN's estimator export: no scope, no correlation
  propagation, input in [0, 1], output ``clip(input + residual, 0, 1)``.

and, for each, ``expected.npz`` with every stored tensor as TensorFlow itself reads it back
(``tf.train.load_checkpoint``) and the graph's output on a fixed input. The tests
(tests/models/test_nlrn_convert.py) need no TensorFlow: they read these files with restorekit's
own reader and compare.

Run it in a separate environment, never in the project's venv::

    python3 -m venv /work/venv-tf
    /work/venv-tf/bin/pip install tensorflow-cpu numpy tf-keras
    TF_USE_LEGACY_KERAS=1 /work/venv-tf/bin/python tools/make_nlrn_tf_fixture.py

``tf-keras`` with ``TF_USE_LEGACY_KERAS=1`` brings back ``tf.compat.v1.layers`` (Keras 3 removed
it), whose unnamed layers get the same ``batch_normalization_<k>`` names, per variable scope, as
TF 1.x gave the official models.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # plain float32 kernels for the reference

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf1 = tf.compat.v1

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "nlrn_tf_fixture"
STEPS = 3  # three states, so propagated correlation accumulates over two hand-overs
FEATURES = 8
NL_FEATURES = 4
PATCH = 11
BATCH = 2


def _non_local(x, corr, reuse):
    """Embedded-Gaussian non-local module over the whole patch; returns (output, scores)."""
    theta = tf1.layers.conv2d(x, NL_FEATURES, 1, name="non_local_theta", reuse=reuse)
    phi = tf1.layers.conv2d(x, NL_FEATURES, 1, name="non_local_phi", reuse=reuse)
    g = tf1.layers.conv2d(x, FEATURES, 1, name="non_local_g", reuse=reuse)
    shape = tf.shape(x)
    tokens = shape[1] * shape[2]
    theta = tf.reshape(theta, [shape[0], tokens, NL_FEATURES])
    phi = tf.reshape(phi, [shape[0], tokens, NL_FEATURES])
    g = tf.reshape(g, [shape[0], tokens, FEATURES])
    scores = tf.matmul(theta, phi, transpose_b=True)
    if corr is not None:
        scores = scores + corr
    mixed = tf.matmul(tf.nn.softmax(scores, axis=-1), g)
    return x + tf.reshape(mixed, shape), scores


def _state(h, y, corr, reuse):
    """One recurrent state; its three batch-norms are new layers every time (not reused)."""
    t = tf.nn.relu(tf1.layers.batch_normalization(h, training=False))
    t, scores = _non_local(t, corr, reuse)
    t = tf1.layers.batch_normalization(t, training=False)
    t = tf1.layers.conv2d(t, FEATURES, 3, padding="same", name="RB1_a", reuse=reuse)
    t = tf.nn.relu(tf1.layers.batch_normalization(t, training=False))
    t = tf1.layers.conv2d(t, FEATURES, 3, padding="same", name="RB1_b", reuse=reuse)
    return t + y, scores


def _network(x, corr_propagation):
    """The tiny NLRN; returns the residual (before any add or clip)."""
    t = tf1.layers.batch_normalization(x, training=False)
    y = tf1.layers.conv2d(t, FEATURES, 3, padding="same", name="conv1")
    h, corr = y, None
    with tf1.variable_scope("rnn"):
        for step in range(STEPS):
            h, scores = _state(h, y, corr, reuse=step > 0)
            corr = scores if corr_propagation else None
    t = tf.nn.relu(tf1.layers.batch_normalization(h, training=False))
    return tf1.layers.conv2d(t, 1, 3, padding="same", name="conv_end")


def _randomize(sess, rng, input_mean, input_std):
    """Give every model variable a random value (g non-zero, BN statistics non-trivial)."""
    for var in tf1.global_variables():
        name, shape = var.op.name, var.shape.as_list()
        leaf = name.rsplit("/", 1)[-1]
        if leaf == "kernel":
            fan_in = int(np.prod(shape[:-1]))
            value = rng.normal(0.0, 1.0 / np.sqrt(fan_in), shape)
        elif leaf in ("bias", "beta"):
            value = rng.normal(0.0, 0.1, shape)
        elif leaf == "gamma":
            value = rng.uniform(0.5, 1.5, shape)
        elif leaf == "moving_mean":
            value = (
                rng.normal(input_mean, input_std / 4, shape)
                if shape == [1]
                else rng.normal(0.0, 0.2, shape)
            )
        elif leaf == "moving_variance":
            value = rng.uniform(0.5, 2.0, shape) * (input_std**2 if shape == [1] else 1.0)
        else:
            continue  # optimizer slots and counters keep TF's initial values
        sess.run(var.assign(value.astype(var.dtype.as_numpy_dtype)))


def _expected(prefix: str, x: np.ndarray, out: np.ndarray, path: Path) -> None:
    reader = tf.train.load_checkpoint(prefix)
    names = sorted(reader.get_variable_to_shape_map())
    arrays = {f"var{i}": reader.get_tensor(n) for i, n in enumerate(names)}
    np.savez_compressed(path, names=np.array(names), input=x, output=out, **arrays)


def make_v0(rng: np.random.Generator) -> None:
    target = OUT / "v0"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    x = rng.uniform(0.0, 255.0, (BATCH, PATCH, PATCH, 1)).astype(np.float32)
    with tf.Graph().as_default():
        inputs = tf1.placeholder(tf.float32, [None, None, None, 1])
        with tf1.variable_scope("model"):
            residual = _network(inputs, corr_propagation=True)
        step = tf1.train.get_or_create_global_step()
        loss = tf.reduce_mean(tf.square(residual))
        with tf1.variable_scope("solver"):
            tf1.train.AdamOptimizer(1e-3).minimize(loss, global_step=step)  # creates the slots
        with tf1.Session() as sess:
            sess.run(tf1.global_variables_initializer())
            _randomize(sess, rng, 120.0, 60.0)
            out = sess.run(residual, {inputs: x})
            prefix = tf1.train.Saver(save_relative_paths=True).save(
                sess, str(target / "nlrn-data"), global_step=1234
            )
    for meta in target.glob("*.meta"):
        meta.unlink()  # the graph definition is not needed and is the largest file
    _expected(prefix, x, out, target / "expected.npz")


def make_later(rng: np.random.Generator) -> None:
    target = OUT / "later"
    shutil.rmtree(target, ignore_errors=True)
    x = rng.uniform(0.0, 1.0, (BATCH, PATCH, PATCH, 1)).astype(np.float32)
    with tf.Graph().as_default():
        inputs = tf1.placeholder(tf.float32, [None, None, None, 1], name="input_tensor")
        output = tf.clip_by_value(_network(inputs, corr_propagation=False) + inputs, 0.0, 1.0)
        tf1.train.get_or_create_global_step()
        with tf1.Session() as sess:
            sess.run(tf1.global_variables_initializer())
            _randomize(sess, rng, 0.45, 0.25)
            out = sess.run(output, {inputs: x})
            builder = tf1.saved_model.Builder(str(target / "saved_model"))
            signature = tf1.saved_model.predict_signature_def(
                {"inputs": inputs}, {"output": output}
            )
            builder.add_meta_graph_and_variables(
                sess, [tf1.saved_model.SERVING], signature_def_map={"serving_default": signature}
            )
            builder.save()
    # The graph (saved_model.pb, ~200 KB) is not needed to read the variables; drop it to keep
    # the fixture small.
    (target / "saved_model" / "saved_model.pb").unlink()
    _expected(
        str(target / "saved_model" / "variables" / "variables"), x, out, target / "expected.npz"
    )


def main() -> int:
    tf1.disable_eager_execution()
    rng = np.random.default_rng(20181203)
    make_v0(rng)
    make_later(rng)
    for path in sorted(OUT.rglob("*")):
        if path.is_file():
            print(f"{path.stat().st_size:>8}  {path.relative_to(OUT)}")
    print("tensorflow", tf.__version__)
    return 0


if __name__ == "__main__":
    sys.exit(main())
