"""yolol-tf: YOLO object-detection datasets to multi-label image classifiers.

The Python API mirrors the CLI: ``yolol_tf.data`` (prepare, load, demo data), ``yolol_tf.models``
(the model registry and builders), ``yolol_tf.training``, ``yolol_tf.inference`` (evaluate, export,
predict) and ``yolol_tf.tuning``. Submodules are imported lazily so that ``import yolol_tf`` stays cheap:
it loads no Keras.

Importing the package registers our custom layers (``yolol_tf>BatchNormalization``) with Keras, so plain
``keras.models.load_model("best.keras")`` works after ``import yolol_tf``: at once if Keras is already
imported, else right after the ``keras`` module is first imported, by whoever imports it.
"""

from __future__ import annotations

import importlib
import sys

__version__ = "0.1.0"

_LAYERS = "yolol_tf.models.layers"


def _register_layers() -> None:
    try:
        importlib.import_module(_LAYERS)
    except ImportError:  # Keras without TensorFlow: our layers cannot exist, and Keras itself still works
        pass


class _AfterKeras:
    """A ``sys.meta_path`` finder that finds nothing itself: it has the ``keras`` module, once it has
    executed, import our layers (a post-import hook), and then leaves ``sys.meta_path``."""

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> object:
        if fullname != "keras":
            return None
        # Ask the finders after this one. TensorFlow also looks Keras up without importing it, so this
        # stays in place until a spec's module really executes.
        for finder in sys.meta_path[sys.meta_path.index(self) + 1 :]:
            spec = finder.find_spec(fullname, path, target) if hasattr(finder, "find_spec") else None
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        exec_keras = loader.exec_module

        def exec_module(module: object) -> None:
            del loader.exec_module  # the loader's own method again
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            exec_keras(module)
            _register_layers()

        loader.exec_module = exec_module
        return spec


if "keras" in sys.modules:
    _register_layers()
elif not any(isinstance(finder, _AfterKeras) for finder in sys.meta_path):
    sys.meta_path.insert(0, _AfterKeras())
