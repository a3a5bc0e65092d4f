"""How keras_mlp.onnx and keras_mlp_reference.npz were made: the TensorFlow/Keras path into Milepost.

TensorFlow is not a dependency of Milepost (nor of its tests), so the Keras model is exported
once, here, and the small ONNX file is checked in; tests/scoring_core/test_onnx.py compiles it
and compares with onnxruntime and with the predictions Keras itself made (the .npz). To serve a
Keras or TensorFlow model: export it with tf2onnx (as below, or ``python -m tf2onnx.convert
--saved-model DIR --output model.onnx``), then ``milepost models push model.onnx --name NAME``.

Run with TensorFlow 2.21 and tf2onnx 1.17 installed (``pip install tensorflow-cpu tf2onnx``)::

    python tests/scoring_core/data/make_keras_onnx.py
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent


def main() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf
    import tf2onnx

    tf.keras.utils.set_random_seed(7)
    rng = np.random.default_rng(7)
    X = rng.normal(size=(256, 6)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] * X[:, 2] > 0).astype(int) + (X[:, 3] > 1).astype(int)
    model = tf.keras.Sequential([
        tf.keras.Input((6,), name="features"),
        tf.keras.layers.Dense(12, activation="relu"),
        tf.keras.layers.Dense(8, activation="tanh"),
        tf.keras.layers.Dense(3, activation="softmax"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(X, y, epochs=5, verbose=0)
    spec = (tf.TensorSpec((None, 6), tf.float32, name="features"),)
    tf2onnx.convert.from_function(tf.function(lambda x: model(x)), input_signature=spec, opset=17,
                                  output_path=str(HERE / "keras_mlp.onnx"))
    probe = rng.normal(size=(16, 6)).astype(np.float32)
    np.savez(HERE / "keras_mlp_reference.npz", x=probe, keras=model.predict(probe, verbose=0))


if __name__ == "__main__":
    main()
