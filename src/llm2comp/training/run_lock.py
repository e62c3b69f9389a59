"""One run per output folder: `OUTPUT_DIR/llm2comp.lock`, held for as long as a stage runs.

Two runs writing one output folder would corrupt each other (each one's clean-up of stale
temporaries removes the other's checkpoint being written). A run therefore creates the lock file
with `O_CREAT | O_EXCL` (atomic: of two runs only one can create it), writing its pid, host and
start time into it, and removes it when it ends, by an exception (Ctrl-C included) too. A second
run stops at once with `OutputInUse`: "another run is using OUTPUT_DIR (pid N on HOST ...)".

A lock left by a run that was killed (SIGKILL, power loss) is stale when it names this host and a
pid that is not alive: it is taken over, under a short-lived `llm2comp.lock.takeover` guard so that
two runs never both take it. A lock naming another host cannot be checked from here: it is
refused, and the message says to delete it if no run is using the folder. In a multi-process run
only the main process (RANK 0) holds it. A process may take the lock it already holds again (a
stage inside a pipeline inside a command): it is released when the outermost holder ends. A
folder that taking the lock created is removed again if the run left it empty.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path

from ..atomic import ensure_writable_dir
from ..errors import OutputError, OutputInUse

LOCK_NAME = "llm2comp.lock"
_GUARD_SUFFIX = ".takeover"
_GUARD_STALE_S = 60.0  # a takeover takes milliseconds; a guard this old was left by a killed process
_held: dict[str, int] = {}  # lock path -> how many times this process holds it
_created: dict[str, list[Path]] = {}  # lock path -> the folders taking it created, deepest first


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    except OSError:
        return True
    return True


def _holder(path: Path) -> dict | None:
    """The lock's content, or None when it cannot be read as one (being written, or damaged)."""
    try:
        content = json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (OSError, ValueError):
        return None
    if not isinstance(content, dict) or not isinstance(content.get("pid"), int) or not content.get("host"):
        return None
    return content


def _is_stale(holder: dict) -> bool:
    return holder["host"] == socket.gethostname() and holder["pid"] != os.getpid() and not _alive(holder["pid"])


def _in_use(path: Path, holder: dict | None) -> OutputInUse:
    folder = path.parent
    if holder is None:
        return OutputInUse(f"another run may be using {folder}: its lock {path} cannot be read (being written, or "
                           f"damaged); if no run is using {folder}, delete {path}")
    since = f", since {holder['started']}" if holder.get("started") else ""
    message = f"another run is using {folder} (pid {holder['pid']} on {holder['host']}{since}): wait for it to end, " \
              "or choose another output_dir"
    if holder["host"] != socket.gethostname():
        message += f"; if no run is using it any more, delete {path}"
    return OutputInUse(message)


def _take_over(path: Path, stale: dict) -> None:
    """Remove the stale lock `stale`, unless another run replaced it meanwhile; one taker at a time."""
    guard = path.with_name(path.name + _GUARD_SUFFIX)
    try:
        fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        with contextlib.suppress(FileNotFoundError):
            if time.time() - guard.stat().st_mtime > _GUARD_STALE_S:
                guard.unlink()
                return
        raise OutputInUse(f"another run is starting in {path.parent} (it is taking over a stale lock); "
                          "wait for it, or choose another output_dir") from None
    try:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            if _holder(path) == stale:
                path.unlink()
    finally:
        with contextlib.suppress(FileNotFoundError):
            guard.unlink()


def acquire(folder: str | os.PathLike) -> Path:
    """Take `folder`'s lock (creating the folder), or raise `OutputInUse`; returns the lock's path."""
    folder = Path(folder).expanduser()
    path = Path(os.path.abspath(folder / LOCK_NAME))
    if _held.get(str(path)):
        _held[str(path)] += 1
        return path
    ensure_writable_dir(folder, "output_dir")  # a file there, or a read-only place: named before anything is made
    missing = [folder, *folder.parents]
    missing = missing[:next(i for i, path in enumerate(missing) if path.exists())]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"cannot create the output folder {folder}: {error.strerror or error}") from error
    content = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    for _ in range(5):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                holder = _holder(path)
            except FileNotFoundError:  # released meanwhile: try again
                continue
            if holder is None or not _is_stale(holder):
                if holder is not None and holder["pid"] == os.getpid() and holder["host"] == socket.gethostname():
                    path.unlink()  # left by this very process (a holder that was not released): ours again
                    continue
                raise _in_use(path, holder) from None
            _take_over(path, holder)
            continue
        except OSError as error:
            raise OutputError(f"cannot create the lock {path}: {error.strerror or error}") from error
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(content) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        _held[str(path)] = 1
        _created[str(path)] = missing
        return path
    raise OutputInUse(f"could not take the lock {path}: other runs keep taking it; choose another output_dir")


def release(path: Path) -> None:
    """Give the lock back (the outermost holder removes the file, when it is still this process's)."""
    key = str(path)
    if _held.get(key, 0) > 1:
        _held[key] -= 1
        return
    _held.pop(key, None)
    with contextlib.suppress(FileNotFoundError):
        holder = _holder(path)
        if holder is not None and holder["pid"] == os.getpid() and holder["host"] == socket.gethostname():
            path.unlink()
    for folder in _created.pop(key, []):  # a run that wrote nothing leaves nothing, not even its folder
        try:
            folder.rmdir()
        except OSError:
            break


def is_main_process() -> bool:
    """RANK 0 (or no launcher): the process that holds the lock and writes the outputs."""
    return int(os.environ.get("RANK", "0")) == 0


@contextlib.contextmanager
def holding_output_dir(folder: str | os.PathLike):
    """Hold `folder`'s lock for the block (main process only; other ranks pass through)."""
    if not is_main_process():
        yield None
        return
    path = acquire(folder)
    try:
        yield path
    finally:
        release(path)
