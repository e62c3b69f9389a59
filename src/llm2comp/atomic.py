"""Atomic writes: readers see the old version or the new one, never half of either.

A write goes to a hidden temporary beside its target (`.NAME.tmp-XXXX/` for a folder,
`.NAME.XXXXXXXX` for a file) and is renamed into place. A process killed mid-write leaves that
temporary behind; the next write of the same target removes it (`remove_stale_temporaries`), and
training removes its own in `checkpoints/` when it starts. Written files and folders get the modes
that an ordinary `open()` / `mkdir()` would give under the process umask (0644 / 0755 by default),
or, when a file replaces an existing one, that file's mode.

A folder never replaces a file, nor the folder the process works in; what may replace an existing
folder is decided by the caller (a model folder: `models/saving.py`), which can also keep some of
its files (`atomic_directory(path, keep=...)`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path

from .errors import OutputError


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def remove_stale_temporaries(folder: str | os.PathLike, name_pattern: str) -> list[Path]:
    """Remove the hidden temporaries that killed atomic writes of targets named `name_pattern` (a regex,
    e.g. `re.escape("model")` or `r"step-\\d+"`) left in `folder`; returns what was removed.

    A write killed between its two renames leaves the target missing and its previous version in
    `.NAME.old-XXXX/NAME`: that version is put back first. Call it only where no other process is
    writing the same targets.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    pattern = re.compile(rf"^\.({name_pattern})\.(tmp-|old-)?[a-z0-9_]{{8}}$")
    stale = [(path, match.group(1), match.group(2)) for path in folder.iterdir()
             if (match := pattern.match(path.name))]
    for path, name, kind in stale:
        previous = path / name
        if kind == "old-" and not (folder / name).exists() and previous.exists():
            os.replace(previous, folder / name)
    for path, _, _ in stale:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    return [path for path, _, _ in stale]


def _probe_location(path: Path, what: str, verb: str) -> None:
    """Find the nearest existing folder on the way to `path` and prove a file can be written there."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"cannot {verb} {what} {path}: {existing} on its way is a file; choose another location")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise OutputError(f"cannot {verb} {what} {path} ({existing}: {error.strerror or error})") from error


def ensure_writable_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Check, without creating anything, that a folder `path` can be created (if needed) and written.

    The nearest existing folder on the way is probed with a temporary file (permission bits do not
    tell the whole story: read-only mounts, quotas). Raises `OutputError` naming the path when it, or
    a parent, is a file, or when nothing can be written there; call it before any expensive work
    whose result would otherwise be lost.
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise OutputError(f"{what} {path} is a file, not a folder; choose another location")
    _probe_location(path, what, "create" if not path.exists() else "write to")
    return path


def ensure_writable_file(path: str | os.PathLike, what: str = "output file") -> Path:
    """Check, before the work that produces it, that the file `path` can be written (atomically) later."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise OutputError(f"{what} {path} is a folder; give a file name")
    _probe_location(path.parent, f"{what} {path} in", "write")
    return path


def _inside(folder: Path, path: Path) -> bool:
    """`path` is `folder` or lies somewhere below it (both resolved)."""
    return path == folder or folder in path.parents


def check_not_working_folder(path: Path) -> None:
    """Refuse to replace the folder this process works in (or one holding it): after the swap its
    working folder would be a deleted one (and renaming "." fails with EBUSY)."""
    try:
        cwd = Path.cwd().resolve()
    except FileNotFoundError:
        return
    if path.exists() and _inside(path.resolve(), cwd):
        raise OutputError(f"cannot replace {path}: it is the current working folder of this process (or holds it); "
                          "change to another folder first (os.chdir), or write to another path")


@contextlib.contextmanager
def _interrupts_deferred():
    """Hold back Ctrl-C (SIGINT) for the few instructions of a two-rename swap, then deliver it."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda number, frame: received.append(number))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            raise KeyboardInterrupt


def _carry_over(old: Path, new: Path, wanted) -> None:
    """Put every file of `old` whose relative path `wanted` accepts into `new`, unless `new` has that path.

    Files are hard-linked (no data copied; the originals stay where they are until the swap), or
    copied where links are not possible; symbolic links are recreated, not followed. Empty folders
    that are wanted are recreated.
    """
    for root, dirs, files in os.walk(old):
        here = Path(root)
        if here != old and not dirs and not files:  # an empty folder
            rel = here.relative_to(old).as_posix()
            target = new / rel
            if wanted(rel) and not os.path.lexists(target) and _free(new, target.parent):
                target.mkdir(parents=True)
            continue
        for name in files + [name for name in dirs if (here / name).is_symlink()]:
            source = here / name
            rel = source.relative_to(old).as_posix()
            target = new / rel
            if not wanted(rel) or os.path.lexists(target) or not _free(new, target.parent):
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(source, target, follow_symlinks=False)
            except OSError:
                shutil.copy2(source, target, follow_symlinks=False)


def _free(root: Path, folder: Path) -> bool:
    """No file (or link) of `root`'s new content stands where the folder `folder` has to be."""
    while folder != root:
        if os.path.lexists(folder) and (folder.is_symlink() or not folder.is_dir()):
            return False
        folder = folder.parent
    return True


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, *, keep=None):
    """Yield a temporary folder beside `path`; on success it replaces `path` in one rename.

    A folder only ever replaces a folder: an existing *file* at `path` is refused (`OutputError`), as
    is the folder this process works in. `keep(relative_path) -> bool` (optional) names the files of
    the folder being replaced that go on into the new one (hard-linked before the swap, so they are
    never absent), unless the new folder has a file of that name. Deciding whether a folder may be
    replaced at all is the caller's business (`models/saving.py` for model folders).
    On error the temporary folder is removed and `path` is left untouched.
    """
    path = Path(os.path.abspath(Path(path).expanduser()))  # "." and "x/.." get their real name
    if os.path.lexists(path) and not path.is_dir():
        raise OutputError(f"cannot write the folder {path}: a file of that name exists; remove it or choose "
                          "another path")
    check_not_working_folder(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path.parent, re.escape(path.name))
    except OSError as error:
        raise OutputError(f"cannot write {path}: {error.strerror or error}") from error
    tmp = None
    try:
        try:
            with _interrupts_deferred():  # a Ctrl-C here arrives once `tmp` is known, so it is removed below
                tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
        except OSError as error:
            raise OutputError(f"cannot write {path}: {error.strerror or error}") from error
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if keep is not None and path.is_dir() and not path.is_symlink():
            _carry_over(path, tmp, keep)
        if path.exists() or path.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            with _interrupts_deferred():
                os.replace(path, old / path.name)
                os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp is not None:
            with _interrupts_deferred():  # a Ctrl-C during the clean-up waits for it to finish
                shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` through a temporary file and one rename; `OutputError` names the path."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path.parent, re.escape(path.name))
        mode = stat.S_IMODE(path.stat().st_mode) if path.is_file() else 0o666 & ~_umask()
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as error:
        raise OutputError(f"cannot write {path}: {error.strerror or error}") from error
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(error, OSError):
            raise OutputError(f"cannot write {path}: {error.strerror or error}") from error
        raise
