"""Shared test settings (quiet TensorFlow, a private cache, a fixed seed, the ``large`` marker) and the shared
fixtures: what a test works on (data, models, run folders, settings) and how it runs yolol-tf.

The fixtures are session-scoped so that module-scoped fixtures can use them; each returns a plain function
of ``tests/support/`` (documented there), and a factory writes into the folder it is given. Test modules
import from ``tests.support`` only constants (class names, the YOLO layouts) and, where they start processes
themselves, ``tests.support.processes`` (test_distribute also trains with its worker's own code, to compare).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
# No bfloat16 speed probe before each "auto" training on a CPU with bfloat16: float32, as on other machines.
os.environ.setdefault("YOLOL_TF_BF16_PROBE", "off")
# The demo dataset and default stores are cached per test process, never in the user's ~/.cache.
if "YOLOL_TF_CACHE" not in os.environ:
    os.environ["YOLOL_TF_CACHE"] = tempfile.mkdtemp(prefix="yolol-tf-test-cache-")
    atexit.register(shutil.rmtree, os.environ["YOLOL_TF_CACHE"], True)

import pytest  # noqa: E402

from tests.support import configs, data, models, processes  # noqa: E402


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-large", action="store_true", help="also run tests marked large (slow)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-large"):
        return
    skip = pytest.mark.skip(reason="large: run with --run-large")
    for item in items:
        if "large" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed() -> None:
    import random

    import numpy as np

    random.seed(0)
    np.random.seed(0)


# --- data ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def make_crops():
    """``make_crops(n, *, pattern="centre", size=32, num_classes=3, seed=0, labels=None)``: uint8 crops and
    float32 multi-hot labels; patterns "centre" (learnable), "channel" (read by the "colour" model),
    "random" (the top-left pixel numbers the crop)."""
    return data.crops


@pytest.fixture(scope="session")
def make_store():
    """``make_store(root, samples=None, names=None, *, pattern, counts, size, num_classes, seed,
    records_per_shard)``: a crop store written by hand, of the given samples or of drawn crops."""
    return data.write_store


@pytest.fixture(scope="session")
def sign_mnist_csv():
    """``sign_mnist_csv(path, labels, *, seed=0, bars=False, header=None)``: a Sign-MNIST CSV, one row per
    label; with ``bars`` a tiny model learns the labels."""
    return data.write_sign_mnist


@pytest.fixture(scope="session")
def make_yolo_dataset():
    """``make_yolo_dataset(root, layout="ultralytics", images=None)``: the tiny YOLO dataset
    ``tests.support.data.IMAGES`` in one of ``LAYOUTS``; returns what to pass to prepare."""
    return data.write_yolo_dataset


# --- models and run folders -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def make_tiny_model():
    """``make_tiny_model(num_classes=3, input_shape=(32, 32, 3), *, body="conv", extra_layer=None, seed=0)``:
    an uncompiled tiny classifier; bodies "conv" (learns, exports), "colour" (reads "channel" crops
    untrained), "vector" (feature vectors, synchronized BN)."""
    return models.tiny_model


@pytest.fixture(scope="session")
def train_briefly():
    """``train_briefly(model, *, steps=60, seed=0)``: the model fitted briefly on "centre" crops."""
    return models.train_briefly


@pytest.fixture(scope="session")
def make_run():
    """``make_run(root, model, data, *, val, names, thresholds, activation, size)``: a run folder as training
    leaves it (best.keras, labels.json, config.yaml)."""
    return models.write_run


@pytest.fixture(scope="session")
def random_batch():
    """``random_batch(shape, num_classes, batch=4, seed=0)``: float32 raw pixels and multi-hot labels."""
    return models.random_batch


@pytest.fixture(scope="session")
def losses_over_steps():
    """``losses_over_steps(model, images, labels, steps=4, learning_rate=1e-3)``: each eager step's loss."""
    return models.losses_over_steps


# --- settings ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_train_config():
    """``tiny_train_config(data, out, **overrides)``: a TrainConfig for a tiny cnn, one epoch at 32 px."""
    return configs.train_config


@pytest.fixture(scope="session")
def tiny_tune_config():
    """``tiny_tune_config(out, **overrides)``: a TuneConfig for a 2-trial search of a tiny cnn at 32 px."""
    return configs.tune_config


# --- running yolol-tf -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def cli():
    """``cli(*args)``: ``yolol-tf ARGS`` run in this process; its exit status."""
    return processes.cli


@pytest.fixture(scope="session")
def run_cli():
    """``run_cli(*args, cwd=None, timeout=300)``: ``yolol-tf ARGS`` run in a child process."""
    return processes.run_cli


@pytest.fixture(scope="session")
def run_python():
    """``run_python(*argv, cwd=ROOT, env=None, timeout=300)``: ``python ARGV`` in a fresh interpreter."""
    return processes.run_python
