"""yolol-tf: YOLO object-detection datasets to multi-label image classifiers.

The Python API mirrors the CLI: ``yolol_tf.data`` (prepare, load, demo data), ``yolol_tf.models``
(builders), ``yolol_tf.training.loop``, ``yolol_tf.inference.evaluate``, ``yolol_tf.inference.export``, ``yolol_tf.inference.predict`` and
``yolol_tf.tuning.search``. Submodules are imported lazily so that ``import yolol_tf`` stays cheap.
"""

__version__ = "0.1.0"
