"""``HOST:PORT`` addresses of the processes that work together: training workers and tuning chiefs.

One parser for ``--workers``, ``TF_CONFIG``, ``--chief`` and ``--worker``: a host name, an IPv4 address
or a bracketed IPv6 address, a colon and a port in 1..65535.
"""

from __future__ import annotations

import re
from typing import Any

from yolol_tf.errors import UserError

_ADDRESS = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+):(\d{1,5})$")


def parse_address(address: Any, where: str) -> tuple[str, int]:
    """(host, port) of ``"HOST:PORT"``; a UserError naming ``where`` (a flag or a file) when it is not one.

    Args:
        address: the text to parse.
        where: what it came from, for the message, e.g. "--chief" or 'TF_CONFIG cluster "worker"'.
    """
    match = _ADDRESS.match(address.strip()) if isinstance(address, str) else None
    if match is None or not 0 < int(match.group(2)) < 65536:
        raise UserError(
            f"{where}: each address must be HOST:PORT with a port in 1..65535, e.g. 10.0.0.5:8000. "
            f"Received: {address!r}"
        )
    return match.group(1).strip("[]"), int(match.group(2))
