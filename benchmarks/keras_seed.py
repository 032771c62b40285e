"""The seed's own Keras model and recipe (../shared/seed/SEED.md), timed on real CIFAR-10 images.

Runs in a separate environment with TensorFlow (`make bench-keras` creates .venv-keras).
Reads images from a .npz written by keras_vs_torch.py (no pickles). Prints one JSON object.
"""

import argparse
import json
import os
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402
from tensorflow.keras.layers import BatchNormalization, Conv2D, Dense, Dropout, Flatten, MaxPooling2D  # noqa: E402
from tensorflow.keras.models import Sequential  # noqa: E402


def seed_model():
    # verbatim from SEED.md
    return Sequential([
        Conv2D(filters=64, kernel_size=(3, 3), activation='relu', padding='same', input_shape=(32, 32, 3)),
        BatchNormalization(),
        MaxPooling2D(pool_size=(2, 2)),

        Conv2D(filters=128, kernel_size=(3, 3), activation='relu', padding='same'),
        BatchNormalization(),
        MaxPooling2D(pool_size=(2, 2)),

        Conv2D(filters=256, kernel_size=(3, 3), activation='relu', padding='same'),
        BatchNormalization(),
        MaxPooling2D(pool_size=(2, 2)),

        Flatten(),
        Dense(256, activation='relu'),
        Dropout(0.5),
        Dense(128, activation='relu'),
        Dropout(0.5),
        Dense(10, activation='softmax')
    ])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--npz", required=True)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--train-images", type=int, default=6000)
    args = ap.parse_args()
    d = np.load(args.npz, allow_pickle=False)
    x = d["x"].astype("float32") / 255.0
    y = tf.keras.utils.to_categorical(d["y"], 10)
    model = seed_model()
    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate=0.001), loss="categorical_crossentropy",
                  metrics=["accuracy"])
    warm = 10 * args.batch_size
    model.fit(x[:warm], y[:warm], batch_size=args.batch_size, epochs=1, verbose=0)
    n = args.train_images
    t0 = time.perf_counter()
    model.fit(x[:n], y[:n], batch_size=args.batch_size, epochs=1, verbose=0, shuffle=True)
    train_s = time.perf_counter() - t0
    model.predict(x[:1000], batch_size=500, verbose=0)
    t0 = time.perf_counter()
    model.predict(x, batch_size=500, verbose=0)
    eval_s = time.perf_counter() - t0
    print(json.dumps({
        "system": f"Keras {getattr(tf.keras, '__version__', '?')} / TensorFlow {tf.__version__}",
        "trainable_params": int(sum(np.prod(v.shape) for v in model.trainable_weights)),
        "batch_size": args.batch_size,
        "train_images_per_s": round(n / train_s, 1),
        "eval_images_per_s": round(len(x) / eval_s, 1),
    }))


if __name__ == "__main__":
    main()
