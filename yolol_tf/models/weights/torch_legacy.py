"""PyTorch's legacy (pre-1.6, non-zip) serialisation of a state dict, read with numpy alone.

A legacy ``.pth`` file is five things back to back: three small pickles (a magic number, the protocol
version, and ``sys_info``: byte order and type sizes), the pickled state dict, whose tensors refer by key
to storages kept out of the pickle, a pickled list of those keys, and then each storage's data in that
order (an int64 element count, then the raw little-endian elements).

Unpickling runs whatever callables a file names, so the file is read with a restricted unpickler: the
only globals it resolves are tensor storage types (``torch.FloatStorage`` ...), ``torch._utils.
_rebuild_tensor_v2`` and ``collections.OrderedDict``, each replaced by a stand-in that records what it is
given; PyTorch itself is never imported. Any other global (``os.system``, ``builtins.eval``, a model
class) is refused with a :class:`UserError` naming it, before it can run.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from yolol_tf.errors import UserError

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C  # torch/serialization.py
PROTOCOL_VERSION = 1001
# The storage types a state dict of weights uses, and their element types (little-endian).
STORAGES = {
    "FloatStorage": "<f4",
    "DoubleStorage": "<f8",
    "HalfStorage": "<f2",
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Reads a state dict saved by ``torch.save`` in the legacy format, without PyTorch.

    Args:
        path: the ``.pth`` file.

    Returns:
        ``{parameter name: array}`` in the file's order, each array a copy in its tensor's shape.
    """
    path = Path(path)
    if zipfile.is_zipfile(path):
        raise UserError(f"{path} is a PyTorch 1.6+ zip checkpoint; only the legacy (pre-1.6) format is read")
    try:
        with open(path, "rb") as file:
            return _read(file)
    except _Refused as refused:
        raise UserError(
            f"{path}: refusing to load {refused}: a checkpoint of weights needs only tensor storages, "
            f"torch._utils._rebuild_tensor_v2 and collections.OrderedDict, and any other global may run code"
        ) from None
    except (OSError, EOFError, ValueError, TypeError, KeyError, IndexError, struct.error,
            pickle.UnpicklingError) as error:  # fmt: skip
        problem = f"{type(error).__name__}: {error}"
        raise UserError(f"{path} is not a legacy PyTorch state dict ({problem})") from None


class _Refused(pickle.UnpicklingError):
    """A global the restricted unpickler will not resolve (its text: ``module.name``)."""


@dataclass(frozen=True)
class _StorageType:
    """Stands in for ``torch.FloatStorage`` and the like: only its element type matters."""

    name: str

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(STORAGES[self.name])


@dataclass
class _Storage:
    key: str
    dtype: np.dtype
    size: int
    data: np.ndarray | None = None


@dataclass(frozen=True)
class _TensorRef:
    """What ``_rebuild_tensor_v2`` was asked to build: a view of a storage, filled in once data is read."""

    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]

    def array(self) -> np.ndarray:
        data = self.storage.data
        assert data is not None
        if any(s < 0 for s in self.shape) or any(s < 0 for s in self.strides) or self.offset < 0:
            raise ValueError(f"negative shape, stride or offset in storage {self.storage.key}")
        last = self.offset + sum((n - 1) * s for n, s in zip(self.shape, self.strides, strict=True) if n > 0)
        if 0 not in self.shape and last >= data.size:
            raise ValueError(f"a tensor reaches past the end of storage {self.storage.key}")
        if 0 in self.shape:
            return np.zeros(self.shape, data.dtype)
        view = np.lib.stride_tricks.as_strided(
            data[self.offset :], self.shape, tuple(s * data.itemsize for s in self.strides), writeable=False
        )
        return np.array(view)


def _rebuild_tensor_v2(storage, offset, shape, strides, requires_grad=False, hooks=None, metadata=None):
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("_rebuild_tensor_v2 was given something other than a storage")
    if not all(isinstance(v, int) for v in (offset, *shape, *strides)) or len(shape) != len(strides):
        raise pickle.UnpicklingError("_rebuild_tensor_v2 was given a malformed shape or stride")
    return _TensorRef(storage, int(offset), tuple(shape), tuple(strides))


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals a legacy state dict needs; any other one is refused, never imported."""

    def __init__(self, file: io.BufferedIOBase):
        super().__init__(file)
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in STORAGES:
            return _StorageType(name)
        raise _Refused(f"{module}.{name}")

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r:.80}")
        storage_type, key, _location, size = pid[1:5]
        if not isinstance(storage_type, _StorageType) or not isinstance(size, int):
            raise pickle.UnpicklingError(f"unexpected storage {pid!r:.80}")
        if len(pid) > 5 and pid[5] is not None:
            raise pickle.UnpicklingError("storage views (torch < 0.4) are not supported")
        key = str(key)
        if key not in self.storages:
            self.storages[key] = _Storage(key, storage_type.dtype, size)
        return self.storages[key]


def _load_plain(file: io.BufferedIOBase) -> Any:
    """A pickle that may hold no globals and no storages at all (the magic number, version, sys_info)."""
    unpickler = _RestrictedUnpickler(file)
    value = unpickler.load()
    if unpickler.storages:
        raise pickle.UnpicklingError("unexpected storage in the file's header")
    return value


def _read(file: io.BufferedIOBase) -> dict[str, np.ndarray]:
    if _load_plain(file) != MAGIC_NUMBER:
        raise ValueError("no PyTorch magic number")
    version = _load_plain(file)
    if version != PROTOCOL_VERSION:
        raise ValueError(f"protocol version {version}, expected {PROTOCOL_VERSION}")
    sys_info = _load_plain(file)
    if not isinstance(sys_info, dict) or not sys_info.get("little_endian", False):
        raise ValueError("written on a big-endian machine")
    unpickler = _RestrictedUnpickler(file)
    state = unpickler.load()
    if not isinstance(state, dict) or not all(isinstance(v, _TensorRef) for v in state.values()):
        raise ValueError("the pickle is not a dict of tensors")
    keys = _load_plain(file)
    if not isinstance(keys, list) or set(map(str, keys)) != set(unpickler.storages):
        raise ValueError("the storage keys after the pickle do not match the tensors in it")
    for key in keys:
        storage = unpickler.storages[str(key)]
        (count,) = struct.unpack("<q", file.read(8))
        if count != storage.size:
            raise ValueError(f"storage {key} holds {count} elements, the pickle says {storage.size}")
        raw = file.read(count * storage.dtype.itemsize)
        if len(raw) != count * storage.dtype.itemsize:
            raise EOFError(f"the file ends inside storage {key}")
        storage.data = np.frombuffer(raw, storage.dtype)
    return {str(name): ref.array() for name, ref in state.items()}
