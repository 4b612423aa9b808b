"""One operation at a time on a path: a lock file beside the run folder, store or export it writes.

Two trainings into one run folder, two ``prepare`` into one store or two exports to one file would each
overwrite the other's files and leave a mix that neither wrote. ``exclusive(path)`` holds a lock for the
whole of such an operation::

    with exclusive(run_dir, what="training run"):
        ...

The lock is a hidden sibling file, ``<parent>/.<name>.lock``, rather than a file inside the folder: the
folder may not exist yet, may be replaced wholesale (a store is built aside and renamed into place), and
must not gain a file that a "folder is empty" or "folder is a store" check would see. The lock file is
created atomically (``O_CREAT | O_EXCL``) and holds JSON ``{pid, host, started, command}`` so that a
refusal can say who holds it.

A lock left by a process that died without releasing it (killed, or the machine lost power) is stale: its
pid no longer runs on this host (or now belongs to a process started later), or the file is still empty
seconds after it was created. A stale lock is reported on stderr in one line and taken over. Exactly one of
several processes that find the same stale lock takes it over: each must first create a second file named
after that lock file's identity (``.<name>.lock.takeover-<hash>``, removed again at once), which only one
can. A lock held on another host, or in another container (PID namespace) of this one, is never taken
over automatically, as there is no way to tell from here whether its process still runs; the message says
which file to delete when it does not.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shlex
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from yolol_tf.errors import UserError

# A process writes its record microseconds after creating the file; an empty or unreadable lock file this
# old was left by a process that died in between.
EMPTY_GRACE_S = 2.0
# How long to wait for another process that is taking over the same stale lock before saying it is held.
TAKEOVER_WAIT_S = 10.0
_POLL_S = 0.02

_held: set[Path] = set()  # locks this process holds: a second ``exclusive`` on one of them is refused


@dataclass(frozen=True)
class _Record:
    """What a lock file says about its holder, and the file's identity when it was read."""

    text: str
    identity: str
    pid: int | None = None
    host: str | None = None
    started: str | None = None
    command: str | None = None
    proc_start: str | None = None
    pid_namespace: str | None = None

    def elsewhere(self) -> bool:
        """Whether the holder runs where its pid means nothing here: another host or another container."""
        if self.host != socket.gethostname():
            return True
        ours = _pid_namespace()
        return self.pid_namespace is not None and ours is not None and self.pid_namespace != ours


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file of ``path``: ``.<name>.lock`` in its parent folder, symbolic links resolved.

    Resolving makes ``runs/a``, ``./runs/a`` and a link to it share one lock.

    Args:
        path: the folder or file the operation writes; it need not exist yet.
    """
    target = _target(path)
    return target.with_name(f".{target.name}.lock")


def _target(path: str | os.PathLike) -> Path:
    target = Path(path).expanduser().absolute().resolve()
    if not target.name:
        raise UserError(f"Cannot lock the root folder {target}; choose a folder inside it")
    return target


@contextlib.contextmanager
def exclusive(path: str | os.PathLike, what: str = "operation", command: str | None = None) -> Iterator[Path]:
    """Holds the lock of ``path`` for the body of the ``with`` block; releases it however the block ends.

    Args:
        path: the folder or file the operation writes; it need not exist yet (its parent folder is
            created, as the operation would create it anyway).
        what: what the operation is, for the message a second one gets ("training run", "export").
        command: what the holder runs, shown to a process refused by the lock; the command line by default.

    Yields:
        The lock file.

    Raises:
        UserError: when another process, on this host or another, or this same process already holds it.
    """
    target = _target(path)
    lock = lock_path(target)
    if lock in _held:
        raise UserError(f"{target} is already in use by this process (another {what}); wait for it to finish")
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{target}: cannot create the folder {lock.parent} ({e.strerror or e})") from None
    text = json.dumps(
        {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds"),
            "command": command if command is not None else shlex.join(sys.argv),
            "proc_start": _proc_start(os.getpid()),
            "pid_namespace": _pid_namespace(),
        }
    )
    _acquire(lock, target, text, what)
    _held.add(lock)
    try:
        yield lock
    finally:
        _held.discard(lock)
        _release(lock, text)


def _acquire(lock: Path, target: Path, text: str, what: str) -> None:
    """Creates ``lock`` holding ``text``, taking over a stale one."""
    waited_since: float | None = None
    while True:
        if _create(lock, text):
            return
        record = _read(lock)
        if record is None:  # released between our attempt and the read: try again
            continue
        stale = _stale_reason(record, lock)
        if stale is None:
            raise UserError(_held_message(target, lock, record, what))
        if stale == "":  # an empty file still within its grace period: its writer is about to fill it
            time.sleep(_POLL_S)
            continue
        if _take_over(lock, record, text, stale):
            return
        # Another process is taking over the same stale lock: wait for it to finish, then look again.
        waited_since = waited_since or time.monotonic()
        if time.monotonic() - waited_since > TAKEOVER_WAIT_S:
            raise UserError(
                f"{target}: another process started to take over the stale lock {lock} and has not finished "
                f"in {TAKEOVER_WAIT_S:g} s. If no other yolol-tf process is running, delete {lock} and "
                f"{_guard_path(lock, record)}"
            )
        time.sleep(_POLL_S)


def _create(lock: Path, text: str) -> bool:
    """Creates ``lock`` holding ``text``; False when it exists already."""
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    except OSError as e:
        raise UserError(f"{lock}: cannot create the lock file ({e.strerror or e})") from None
    try:
        os.write(fd, text.encode())
    except BaseException as e:
        os.close(fd)
        _unlink(lock)
        if isinstance(e, OSError):
            raise UserError(f"{lock}: cannot write the lock file ({e.strerror or e})") from None
        raise
    os.close(fd)  # closed while held: Windows cannot delete a file that is open
    return True


def _read(lock: Path) -> _Record | None:
    """The lock file's record, or None when it no longer exists; an unreadable record has no pid."""
    try:
        with open(lock, "rb") as f:
            stat = os.fstat(f.fileno())
            data = f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise UserError(f"{lock}: cannot read the lock file ({e.strerror or e})") from None
    text = data.decode("utf-8", "replace")
    identity = _identity(stat, data)
    try:
        fields = json.loads(text)
        pid = fields["pid"]
        if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
            raise ValueError(pid)
    except (ValueError, KeyError, TypeError):
        return _Record(text, identity)
    return _Record(
        text,
        identity,
        pid,
        str(fields.get("host")),
        str(fields.get("started")),
        str(fields.get("command")),
        fields.get("proc_start"),
        fields.get("pid_namespace"),
    )


def _identity(stat: os.stat_result, data: bytes) -> str:
    """Tells one lock file from a later one at the same path: inode, modification time and contents."""
    digest = hashlib.sha256(data).hexdigest()[:16]
    return f"{stat.st_dev}-{stat.st_ino}-{stat.st_mtime_ns}-{digest}"


def _stale_reason(record: _Record, lock: Path) -> str | None:
    """Why ``record`` is stale; None when its holder may be alive; "" when it may still be being written."""
    if record.pid is None:
        try:
            age = time.time() - lock.stat().st_mtime
        except FileNotFoundError:
            return ""
        if age < EMPTY_GRACE_S:
            return ""
        return "the lock file is empty" if not record.text.strip() else "the lock file is unreadable"
    if record.elsewhere():
        return None
    if record.pid == os.getpid():
        # Not a lock this process holds (those are refused before): a previous process with the same pid
        # left it, as a restarted container's first process does.
        return f"pid {record.pid} is this process, which does not hold it"
    if not _pid_alive(record.pid):
        return f"pid {record.pid} is no longer running"
    if record.proc_start is not None and _proc_start(record.pid) not in (None, record.proc_start):
        return f"pid {record.pid} is now another process"
    return None


def _take_over(lock: Path, stale: _Record, text: str, reason: str) -> bool:
    """Replaces the stale lock with ours; False when another process takes it over or got there first."""
    guard = _guard_path(lock, stale)
    try:
        fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    except OSError as e:
        raise UserError(
            f"{guard}: cannot create the file that guards a lock takeover ({e.strerror or e})"
        ) from None
    os.close(fd)
    try:
        # Only the guard's holder removes this stale file, so it is still there unless a person deleted it.
        current = _read(lock)
        if current is None or current.identity != stale.identity:
            return _create(lock, text)
        _unlink(lock)
        holder = f"pid {stale.pid} on {stale.host}" if stale.pid is not None else "an unknown process"
        print(f"warning: {lock}: removed a stale lock of {holder} ({reason})", file=sys.stderr)
        return _create(lock, text)
    finally:
        _unlink(guard)


def _guard_path(lock: Path, record: _Record) -> Path:
    """The file whose creation entitles one process to take over the stale lock ``record``."""
    return lock.with_name(f"{lock.name}.takeover-{hashlib.sha256(record.identity.encode()).hexdigest()[:16]}")


def _release(lock: Path, text: str) -> None:
    """Deletes the lock file if it still holds our record (a person may have replaced it)."""
    # Compared by contents, not inode and time: a network file system may set the time after we close it.
    record = _read(lock)
    if record is not None and record.text == text:
        _unlink(lock)


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _held_message(target: Path, lock: Path, record: _Record, what: str) -> str:
    """Who holds the lock and what to do, for the process that is refused."""
    holder = f"pid {record.pid} on {record.host}, started {record.started}: {record.command}"
    if record.elsewhere():
        place = "another host" if record.host != socket.gethostname() else "another container of this host"
        return (
            f"{target} is in use by another {what} ({holder}). That process runs on {place}, so "
            f"yolol-tf cannot tell whether it is still running. Wait for it, or if it has stopped, delete {lock}"
        )
    return (
        f"{target} is in use by another {what} ({holder}). Wait for it to finish, or choose another path. "
        f"If that process is not a yolol-tf run, delete {lock}"
    )


def _pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this host (a process of another user counts)."""
    if sys.platform == "win32":
        return _pid_alive_windows(pid)
    try:
        os.kill(pid, 0)  # signal 0 delivers nothing: it only checks that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError as e:
        return e.errno != errno.ESRCH
    return True


def _pid_alive_windows(pid: int) -> bool:
    # os.kill on Windows terminates the process for any signal but CTRL_C and CTRL_BREAK: ask the kernel.
    import ctypes
    from ctypes import wintypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return ctypes.get_last_error() == 5  # ERROR_ACCESS_DENIED: it exists but belongs to another user
    try:
        code = wintypes.DWORD()
        if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
            return True
        return code.value == 259  # STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)


def _proc_start(pid: int) -> str | None:
    """When the process started, in clock ticks since boot (Linux); tells a reused pid from its holder."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
    except OSError:
        return None
    # Field 22, counted after the command name, which is in parentheses and may itself hold spaces.
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else None


def _pid_namespace() -> str | None:
    """This process's PID namespace (Linux): containers that share a hostname and a volume differ in it."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
