"""The files and folders a command writes: made and tried before the work (a place that cannot
be written is one error line, not a traceback at the end), and, where a command is stopped,
what of them it had written."""
from __future__ import annotations

import glob
from pathlib import Path

from .errors import ConfigError, EtemError


#: the options that name a file or folder a command writes
_OUTPUTS = ("output", "overlay", "out", "movie")


def _what_was_saved(args, started: float) -> str:
    """For the line a stopped command ends with: where what it did is (its outputs written since
    it started: a run file is closed and marked interrupted), or that nothing was written (a
    stop before the first frame)."""
    named = [getattr(args, k) for k in _OUTPUTS if isinstance(getattr(args, k, None), Path)]
    resume = getattr(args, "resume", None)
    if isinstance(resume, (str, Path)):
        named.append(Path(resume))
    if not named:
        return ""

    def fresh(p: Path) -> bool:
        return p.exists() and p.stat().st_mtime >= started - 1

    written = [str(p) for p in named if fresh(p)]
    # a name that stands for several files (etem train -o NAME: NAME.json, NAME.safetensors and
    # its checkpoint NAME.ckpt.*): those written since the command started
    written += [str(q) for p in named if not p.exists() and p.parent.is_dir()
                for q in sorted(p.parent.glob(glob.escape(p.name) + ".*")) if fresh(q)]
    if any(w.endswith(".ckpt.json") for w in written):
        return f"; the last checkpoint is in {', '.join(w for w in written if '.ckpt.' in w)}: --resume goes on from it"
    return f"; what was processed is saved in {', '.join(written)}" if written else "; nothing was written yet"


#: (command, option) of the outputs that are folders the command writes its files into
_FOLDER_OUTPUTS = {("export", "out"), ("demo", "out"), ("batch", "out"), ("evaluate", "output")}


def _make_output_folders(args) -> None:
    """Create the folders the command's outputs go in (``-o runs/today/run.h5`` where
    ``runs/today`` is new) and check that they can be written, before any work."""
    from .h5io import make_folder_for

    for name in _OUTPUTS:
        path = getattr(args, name, None)
        if not isinstance(path, Path) or str(path) == "-":
            continue
        if path.parent != Path(""):
            make_folder_for(path)
        # (a bundle's name: etem train writes NAME.safetensors and NAME.json beside it)
        _check_writable(path, folder=(args.command, name) in _FOLDER_OUTPUTS, stem=args.command == "train")


def _check_writable(path: Path, *, folder: bool, stem: bool = False) -> None:
    """Raise a ConfigError, ``cannot write PATH: why``, where the output ``path`` (a file, or with
    ``folder`` a folder of files) cannot be written: a file can be made where it goes (tried with
    a temporary file, which the permission bits alone do not tell for root, or on /sys or /proc)."""
    import os
    import tempfile

    if path.is_dir() and not (folder or stem):
        raise ConfigError(f"cannot write {path}: it is a folder; name a file")
    if path.exists() and not path.is_dir() and folder:
        raise ConfigError(f"cannot write {path}: it is a file; name a folder")
    where = path if folder and path.is_dir() else path.parent
    if not os.access(where, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write {path}: permission denied in {where}; choose a folder you can write to")
    try:
        with tempfile.TemporaryFile(dir=where, prefix=".etem-"):
            pass
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {_why_not(exc, where)}") from None
    if path.is_file() and not os.access(path, os.W_OK):
        raise ConfigError(f"cannot write {path}: the file is read-only")


def _why_not(exc: OSError, folder: Path) -> str:
    """Why a file cannot be written in ``folder``, in a few words."""
    import errno

    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied in {folder}; choose a folder you can write to"
    if exc.errno == errno.EROFS:
        return f"{folder} is on a read-only file system; choose another folder"
    if exc.errno == errno.ENOSPC:
        return f"no space left on the disk of {folder}"
    if exc.errno == errno.ENOENT and folder.is_dir():
        return f"{folder} does not take new files; choose another folder"
    return f"{(exc.strerror or str(exc)).lower()} ({folder})"


def _written(path: Path):
    """A context that turns an OSError while writing ``path`` into ``cannot write PATH: why``."""
    import contextlib

    @contextlib.contextmanager
    def guard():
        try:
            yield
        except EtemError:
            raise
        except OSError as exc:
            target = Path(exc.filename) if exc.filename else path
            raise ConfigError(f"cannot write {target}: {_why_not(exc, target.parent)}") from None

    return guard()
