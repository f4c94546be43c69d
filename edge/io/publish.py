"""Writing outputs so that nothing is lost and nothing is misreported.

Every file or folder a command produces (videos, PNG frame folders, reports, manifests,
models) goes through here:

* ``check_output`` runs before any work: an output that names an input, an existing output
  without ``--overwrite``, a folder that cannot be written or a full disk is one line, so a
  long run or evaluation never ends in a traceback with its results lost;
* ``atomic_write_bytes`` / ``atomic_write_json`` write small files to a temporary name in the
  same folder and rename it, so a reader never sees half a file;
* ``partial_path`` names the temporary file or folder that a streamed output (a video, a
  folder of frames, a report folder) grows under, and ``publish`` / ``publish_folder`` put it
  in place once it is complete. A kill (even SIGKILL) or a power loss leaves the final name
  untouched; only a hidden ``.NAME.partial-PID`` stays behind.

Failures raise ``OutputError`` (exit code 4) naming the path and the cause in words.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable

from edge_seg.errors import OutputError, UserError

_CAUSES = {
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large for this file system",
    errno.EISDIR: "is a directory",
    errno.ENOTDIR: "a parent is not a folder",
    errno.EROFS: "read-only file system",
    errno.ENOENT: "folder does not exist",
    errno.EIO: "input/output error",
}


CACHE_ENV = "EDGE_SEG_CACHE"


def cache_dir(*parts: str) -> Path:
    """The user's cache folder for edge-seg (``$EDGE_SEG_CACHE``, else the XDG cache home):
    things that are costly to make and safe to lose, such as the rendered demo clip."""
    base = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "edge-seg")
    return Path(base, *parts)


def cause(error: OSError) -> str:
    """An OSError in words, without Python's decoration."""
    return _CAUSES.get(error.errno) or (error.strerror or str(error)).lower()


def output_error(label: str, error: OSError) -> OutputError:
    return OutputError(f"{label}: cannot write ({cause(error)})")


def _label(path, option: str | None) -> str:
    return f"{option} {path}" if option else str(path)


def _read_umask() -> int:
    # os.umask can only be read by setting it: do it once, at import, not while other
    # threads may be creating files
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def atomic_write_bytes(path: str | os.PathLike, data: bytes, option: str | None = None) -> None:
    """Write to a temporary file in the same folder, then rename: never a half file.
    An OSError becomes one line naming the path (``option`` prefixes it)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise output_error(_label(path, option), e) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual file mode
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise output_error(_label(path, option), e) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | os.PathLike, obj, option: str | None = None) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, default=jsonable) + "\n").encode(), option)


def jsonable(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# -- streamed outputs: grown under a partial name, published when complete ----------------
def partial_path(path: str | os.PathLike) -> Path:
    """The hidden name beside ``path`` that a video or folder is written under until it is
    complete. A video keeps its extension (the encoder picks the container from it)."""
    path = Path(path)
    return path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")


def publish(tmp: str | os.PathLike, path: str | os.PathLike, option: str | None = None) -> None:
    """Rename a finished temporary file onto its final name (replacing an old output).
    Its data reaches the disk first, so a power loss cannot publish an empty file."""
    try:
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except OSError as e:
        raise output_error(_label(path, option), e) from None


def publish_folder(tmp: str | os.PathLike, path: str | os.PathLike, option: str | None = None) -> None:
    """Put a finished temporary folder in place of ``path``. An old folder (already cleared
    for replacement by ``check_output``) is moved aside first and removed last, so at every
    moment the final name holds either the old output or the complete new one."""
    tmp, path = Path(tmp), Path(path)
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    try:
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
    except OSError as e:
        if old.exists() and not path.exists():
            os.replace(old, path)
        raise output_error(_label(path, option), e) from None
    shutil.rmtree(old, ignore_errors=True)


def discard(tmp: str | os.PathLike | None) -> None:
    """Remove a temporary file or folder of an output that failed or was abandoned."""
    if tmp is None:
        return
    tmp = Path(tmp)
    if tmp.is_dir() and not tmp.is_symlink():
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.unlink(missing_ok=True)


# -- checks before the work starts ----------------------------------------------------------
def _same_or_inside(inner: Path, outer: Path) -> bool:
    try:
        inner, outer = inner.resolve(), outer.resolve()
    except OSError:
        return False
    return inner == outer or outer in inner.parents


def _existing_ancestor(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_writable_folder(folder: Path, label: str, need: int = 1) -> None:
    """Can a file be created in ``folder`` (or its nearest existing ancestor, which the
    write creates the rest of), with at least ``need`` bytes free? Tried for real: a
    permission check alone says yes to root on a read-only mount."""
    base = _existing_ancestor(folder)
    if not base.is_dir():
        raise OutputError(f"{label}: cannot write ({base} is not a folder)")
    try:
        fd, probe = tempfile.mkstemp(dir=base, prefix=".edge-seg-probe-")
        os.close(fd)
        os.unlink(probe)
        st = os.statvfs(base)
    except OSError as e:
        raise output_error(label, e) from None
    free = st.f_bavail * st.f_frsize
    if free < need:
        raise OutputError(f"{label}: cannot write (no space left on the device: "
                          f"{free / 1e6:.1f} MB free in {base})")


def check_output(path: str | os.PathLike, option: str, *, inputs: Iterable = (),
                 overwrite: bool | None = None, folder: bool = False, need: int = 1) -> Path:
    """Check an output before the work starts; returns the path.

    ``inputs``: paths the command reads (source, model, dataset root); an output that is
    one of them, or a folder holding one, is refused. ``overwrite``: None when the command
    has no ``--overwrite`` (an old output is then replaced when the new one is complete);
    False refuses an existing file or non-empty folder. ``folder``: the output is a folder
    (frames, report). ``need``: bytes that must be free."""
    path = Path(path).expanduser()
    label = _label(path, option)
    for given in inputs:
        if not given:
            continue
        given = Path(given).expanduser()
        if not given.exists():
            continue
        if _same_or_inside(path, given) and _same_or_inside(given, path):
            raise UserError(f"{label}: that is an input of this command; choose another name")
        if _same_or_inside(path, given):
            raise UserError(f"{label}: lies inside the input folder {given}; write outside it")
        if folder and _same_or_inside(given, path):
            raise UserError(f"{label}: the folder holds an input ({given}); choose another folder")
    if folder:
        if path.exists() and not path.is_dir():
            raise UserError(f"{label}: exists and is not a folder")
        if path.is_dir() and any(path.iterdir()) and overwrite is False:
            raise UserError(f"{label}: folder is not empty; pass --overwrite to replace its "
                            f"contents, or choose a new folder")
    else:
        if path.is_dir():
            raise OutputError(f"{label}: cannot write (is a directory)")
        if path.exists() and overwrite is False:
            raise UserError(f"{label}: already exists; pass --overwrite to replace it, or "
                            f"choose another name")
    check_writable_folder(path if folder else path.parent, label, need)
    return path
