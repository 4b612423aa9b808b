"""The data layer: YOLO datasets to crop stores, stores to tf.data, Sign-MNIST and the demo dataset.

Names are resolved lazily (PEP 562), so ``import yolol_tf.data`` loads neither TensorFlow nor OpenCV;
``yolol-tf --help`` stays fast.

    DataSettings(data, val, size, context, min_visible, min_box, mode)   shared by every stage
    prepare(data, out=None, *, size=None, ...) -> Path      YOLO dataset -> store (data/store.py)
    load(store, split, batch_size=32, *, training=False, augment=0.0, ...) -> tf.data.Dataset
    read_info(store) -> DatasetInfo
    load_sign_mnist(csv_path, batch_size=32, ...) -> (tf.data.Dataset, DatasetInfo)
    open_data(data | settings, *, size=None, ...) -> DataSource  what train/evaluate/tune call
    demo_data(out, *, seed=0) -> Path; demo_data_path() -> Path
    read_image(path) -> np.ndarray; letterbox(image, size) -> np.ndarray
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from yolol_tf.lazy import lazy_attributes

_EXPORTS = {
    "prepare": "yolol_tf.data.store",
    "load": "yolol_tf.data.pipeline",
    "augment_batch": "yolol_tf.data.pipeline",
    "read_info": "yolol_tf.data.info",
    "DatasetInfo": "yolol_tf.data.info",
    "load_sign_mnist": "yolol_tf.data.sign_mnist",
    "DataSource": "yolol_tf.data.source",
    "DataSettings": "yolol_tf.data.settings",
    "open_data": "yolol_tf.data.source",
    "demo_data": "yolol_tf.data.demo",
    "demo_data_path": "yolol_tf.data.demo",
    "read_image": "yolol_tf.data.images",
    "letterbox": "yolol_tf.data.images",
}

__all__ = [
    "DataSettings",
    "DataSource",
    "DatasetInfo",
    "augment_batch",
    "demo_data",
    "demo_data_path",
    "letterbox",
    "load",
    "load_sign_mnist",
    "open_data",
    "prepare",
    "read_image",
    "read_info",
]

if TYPE_CHECKING:
    from yolol_tf.data.demo import demo_data, demo_data_path
    from yolol_tf.data.images import letterbox, read_image
    from yolol_tf.data.info import DatasetInfo, read_info
    from yolol_tf.data.pipeline import augment_batch, load
    from yolol_tf.data.settings import DataSettings
    from yolol_tf.data.sign_mnist import load_sign_mnist
    from yolol_tf.data.source import DataSource, open_data
    from yolol_tf.data.store import prepare


__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS)
