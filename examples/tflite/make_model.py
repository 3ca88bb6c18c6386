"""Build the tiny digits classifier used by the TFLite/LiteRT tests.

Writes, next to this script:

* ``digits.tflite`` - float32 TFLite model, one input of shape ``[-1, 8, 8, 1]`` (NHWC, dynamic
  batch; LiteRT names it ``serving_default_pixels:0``) and one output of shape ``[-1, 10]``
  holding raw logits (LiteRT names it ``StatefulPartitionedCall_1:0``).
* ``digits_reference.npz`` - ``pixels`` (4, 8, 8, 1) float32 inputs and the Keras model's
  ``logits`` (4, 10) on them, so another runtime can be checked against the same numbers.

Needs ``tensorflow`` (tested with tensorflow-cpu 2.21 / Keras 3). If scikit-learn is importable the
model is trained for a few epochs on its bundled ``load_digits`` data (no download); otherwise the
seeded random initial weights are kept. Run with: ``python examples/tflite/make_model.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

SEED = 0
OUT_DIR = Path(__file__).resolve().parent
TFLITE_PATH = OUT_DIR / "digits.tflite"
REFERENCE_PATH = OUT_DIR / "digits_reference.npz"


def load_data() -> tuple[np.ndarray, np.ndarray] | None:
    """Return sklearn's 8x8 digits as (N, 8, 8, 1) float32 in [0, 1] plus labels, or None."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        return None
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., np.newaxis]
    return x, digits.target.astype(np.int64)


def build_model() -> tf.keras.Model:
    """Conv2D(8, 3x3, relu, same) -> Flatten -> Dense(10) producing raw logits."""
    inputs = tf.keras.Input(shape=(8, 8, 1), dtype="float32", name="pixels")
    x = tf.keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv")(inputs)
    x = tf.keras.layers.Flatten(name="flatten")(x)
    logits = tf.keras.layers.Dense(10, name="logits")(x)
    return tf.keras.Model(inputs, logits, name="digits")


def main() -> None:
    # Seed Python, NumPy and TF so weights (and training, if any) are reproducible.
    tf.keras.utils.set_random_seed(SEED)
    tf.config.experimental.enable_op_determinism()

    model = build_model()
    data = load_data()
    if data is not None:
        x, y = data
        model.compile(
            optimizer=tf.keras.optimizers.Adam(1e-2),
            loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        model.fit(x, y, epochs=5, batch_size=64, shuffle=True, verbose=2)
        pixels = x[:4]
    else:
        print("scikit-learn not available: keeping seeded random weights")
        pixels = np.random.default_rng(SEED).random((4, 8, 8, 1), dtype=np.float32)

    # The Keras input has a None batch dimension, so the TFLite input gets shape_signature
    # [-1, 8, 8, 1].
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    TFLITE_PATH.write_bytes(converter.convert())  # float32, no quantization

    logits = model(pixels, training=False).numpy().astype(np.float32)
    np.savez(REFERENCE_PATH, pixels=pixels.astype(np.float32), logits=logits)
    print(f"wrote {TFLITE_PATH} ({TFLITE_PATH.stat().st_size} bytes) and {REFERENCE_PATH}")


if __name__ == "__main__":
    main()
