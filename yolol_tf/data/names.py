"""Checking a dataset's class names: one distinct, printable name per class id.

A class name travels from data.yaml or classes.txt into the store, ``labels.json``, the ``labels.txt``
beside every export (one name a line) and prediction output. Two classes with one name are merged by
whoever reads the labels back; an empty name or one with a line break shifts every later line of
``labels.txt``. Such names are refused where they are read, naming the file and line.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from yolol_tf.errors import UserError

# Control characters (tab, newline, escape, DEL, C1) and the Unicode line and paragraph separators, which
# Python's str.splitlines and many editors treat as line breaks.
_BAD_CATEGORIES = {"Cc": "a control character", "Zl": "a line separator", "Zp": "a paragraph separator"}


def check_names(
    names: Sequence[Any], source: str | os.PathLike, lines: Sequence[int | None] | None = None
) -> list[str]:
    """Checks class names and returns them as strings.

    Args:
        names: the names by class id, as read (YAML may give numbers, booleans or nothing).
        source: the file they come from (data.yaml, classes.txt), for the message.
        lines: the 1-based line of each name in ``source``, where known.

    Returns:
        The names as strings.

    Raises:
        UserError: for an empty or whitespace-only name, one holding a control character or line break,
            a YAML value that is not a single name, or a name given twice (compared without surrounding
            whitespace, which readers of ``labels.txt`` strip). The message names the file, the line and
            the value.
    """
    result: list[str] = []
    first: dict[str, int] = {}
    for i, value in enumerate(names):
        line = lines[i] if lines is not None and i < len(lines) else None
        where = f"{source}:{line}" if line else f"{source}"
        name = _as_name(value, i, where)
        key = name.strip()
        if not key:
            raise UserError(
                f"{where}: class {i} has an empty name; give every class a name (leaving one out would shift "
                f"the ids of every later class). Received: {value!r}"
            )
        bad = next((c for c in name if unicodedata.category(c) in _BAD_CATEGORIES), None)
        if bad is not None:
            what = _BAD_CATEGORIES[unicodedata.category(bad)]
            raise UserError(
                f"{where}: the name of class {i} holds {what} ({bad!r}); names must be one printable line. "
                f"Received: {name!r}"
            )
        if key in first:
            j = first[key]
            at = f" (line {lines[j]})" if lines is not None and j < len(lines) and lines[j] else ""
            raise UserError(
                f"{where}: class {i} has the same name as class {j}{at}; each class needs its own name, or "
                f"the two would be merged. Received: {name!r}"
            )
        first[key] = i
        result.append(name)
    return result


def _as_name(value: Any, class_id: int, where: str) -> str:
    """A YAML value as a class name; None (an empty entry) becomes "" and is refused by the caller."""
    if value is None:
        return ""
    if isinstance(value, bool):
        # YAML 1.1 reads unquoted yes/no/on/off/true/false as booleans: the class would be named "True".
        raise UserError(
            f"{where}: the name of class {class_id} reads as the boolean {value}; YAML turns unquoted yes, no, "
            f"on, off, true and false into booleans. Quote the name. Received: {value!r}"
        )
    if isinstance(value, (list, dict)):
        raise UserError(f"{where}: the name of class {class_id} must be one name. Received: {value!r}")
    return str(value)


def yaml_name_lines(path: str | os.PathLike, count: int) -> list[int | None]:
    """The 1-based line of each class name under ``names:`` in a data.yaml, by class id.

    Args:
        path: the data.yaml.
        count: how many names there are.

    Returns:
        One line per class id, None where it cannot be told (the file changed, or an unusual form).
    """
    unknown: list[int | None] = [None] * count
    try:
        with Path(path).open(encoding="utf-8") as f:
            root = yaml.compose(f, Loader=yaml.SafeLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return unknown  # the caller read this file already: a second read failing only loses line numbers
    if not isinstance(root, yaml.MappingNode):
        return unknown
    node = next((v for k, v in root.value if isinstance(k, yaml.ScalarNode) and k.value == "names"), None)
    if isinstance(node, yaml.SequenceNode):
        found = [item.start_mark.line + 1 for item in node.value]
        return [*found[:count], *unknown[len(found) :]]
    if isinstance(node, yaml.MappingNode):
        by_id: dict[int, int] = {}
        for k, v in node.value:
            try:
                by_id[int(k.value)] = v.start_mark.line + 1
            except (TypeError, ValueError):
                continue
        return [by_id.get(i) for i in range(count)]
    return unknown
