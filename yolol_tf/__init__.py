"""yolol-tf: YOLO object-detection datasets to multi-label image classifiers.

The Python API mirrors the CLI: ``yolol_tf.data`` (prepare, load, demo data), ``yolol_tf.models``
(builders), ``yolol_tf.train``, ``yolol_tf.evaluate``, ``yolol_tf.export``, ``yolol_tf.predict`` and
``yolol_tf.tune``. Submodules are imported lazily so that ``import yolol_tf`` stays cheap.
"""

__version__ = "0.1.0"
