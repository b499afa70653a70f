"""The on-disk cache of built engines: ONNX graphs, TensorRT plans, AOTInductor packages.

Building an engine takes from a second (an ONNX export) to minutes (a TensorRT plan), so what
was built is kept, one folder per entry::

    <root>/<kind>/<label>-<key hash>/
        entry.json        the full key, the artifact's name, size and sha256
        model.onnx        the artifact (or model.plan ...)

The key says everything the artifact depends on: the model (sha256 of its weights and card),
the device (GPU name and compute capability), the library versions and the input-shape profile.
An entry whose key differs (a foreign or stale one), whose artifact is missing or does not match
its sha256 (a corrupt one), or that its engine cannot load, is rebuilt with a log message; it
never stops a run. Entries are written into a temporary folder and renamed into place, so two
processes building the same entry at once do not see each other's half-written files.
Everything in the cache is JSON or the libraries' own binary formats: no pickle.

The root is, first found: the ``cache_dir`` engine option, the environment variable
``ETEM_CACHE_DIR``, the user cache folder (``platformdirs``, e.g. ``~/.cache/etem-tracker`` on
Linux), else ``~/.cache/etem-tracker``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

__all__ = ["CACHE_FORMAT", "KINDS", "CacheEntry", "EngineCache", "default_cache_dir", "model_digest", "key_digest"]

log = logging.getLogger("etem.engine.cache")

#: Value of ``entry.json``'s ``"format"`` field.
CACHE_FORMAT = "etem-engine-cache/1"
ENV_VAR = "ETEM_CACHE_DIR"
_APP = "etem-tracker"
_ENTRY = "entry.json"
#: The kinds of artifact kept (one sub-folder each); only these are listed and cleared.
KINDS = ("onnx", "tensorrt", "aoti")
_FOLDER = re.compile(r"^[A-Za-z0-9_.-]+-[0-9a-f]{16}$")
_PART = re.compile(r"^\..*\.part$")

T = TypeVar("T")


def default_cache_dir(override: str | os.PathLike | None = None) -> Path:
    """The cache root: ``override``, else ``$ETEM_CACHE_DIR``, else the user cache folder."""
    if override is not None and str(override) != "":
        return Path(override).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    try:
        from platformdirs import user_cache_dir
    except ImportError:
        return Path.home() / ".cache" / _APP
    return Path(user_cache_dir(_APP, appauthor=False))


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def key_digest(key: Mapping[str, Any]) -> str:
    """sha256 of a cache key (a JSON-able mapping), in hex."""
    return hashlib.sha256(_canonical(dict(key))).hexdigest()


def model_digest(model: nn.Module, card: Mapping[str, Any]) -> str:
    """sha256 of a network's weights (every state-dict tensor) and its model card, in hex.

    The weights are hashed as they are in memory, so a network that was never saved gets a
    digest too; the card's own ``sha256`` field (of the weights file) adds nothing but is kept.
    """
    digest = hashlib.sha256()
    digest.update(_canonical({k: card[k] for k in sorted(card)}))
    for name, tensor in model.state_dict().items():
        t = tensor.detach().to("cpu").contiguous()
        digest.update(_canonical([name, str(t.dtype), list(t.shape)]))
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _safe_label(label: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_." else "_" for c in label)
    return keep.strip("._")[:48] or "model"


@dataclass(frozen=True)
class CacheEntry:
    """One cached artifact: where it is, what it was built from, whether it came from the cache."""

    path: Path  # the artifact file
    kind: str
    key: dict[str, Any]
    size: int
    created: float  # seconds since the epoch
    hit: bool = False  # found in the cache (True) or just built (False)

    @property
    def folder(self) -> Path:
        return self.path.parent


class EngineCache:
    """Built engines on disk, keyed by what they were built from.

    Parameters
    ----------
    root
        The cache folder; None: :func:`default_cache_dir`.
    """

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = default_cache_dir(root)

    def __repr__(self) -> str:
        return f"EngineCache({str(self.root)!r})"

    def folder_for(self, kind: str, label: str, key: Mapping[str, Any]) -> Path:
        """The folder of the entry with this key (it need not exist)."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(map(repr, KINDS))}; got {kind!r}.")
        return self.root / kind / f"{_safe_label(label)}-{key_digest(key)[:16]}"

    # --- reading ----------------------------------------------------------------------------

    def _read(self, folder: Path, key: Mapping[str, Any] | None) -> CacheEntry:
        """The entry in ``folder``; ValueError saying why it is unusable."""
        try:
            meta = json.loads((folder / _ENTRY).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ValueError(f"it has no {_ENTRY}") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"its {_ENTRY} is unreadable ({exc})") from None
        if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT:
            raise ValueError(f"its {_ENTRY} is not of format {CACHE_FORMAT!r}")
        if key is not None and meta.get("key") != _roundtrip(key):
            raise ValueError("it was built from something else (its key differs)")
        name = meta.get("artifact")
        if not isinstance(name, str) or "/" in name or os.sep in name or name in ("", ".", ".."):
            raise ValueError(f"its {_ENTRY} names no artifact")
        path = folder / name
        if not path.is_file():
            raise ValueError(f"its artifact {name} is missing")
        size = path.stat().st_size
        if size != meta.get("size") or _file_sha256(path) != meta.get("sha256"):
            raise ValueError(f"its artifact {name} does not match its recorded size and sha256 "
                             "(truncated or corrupt)")
        return CacheEntry(path=path, kind=str(meta.get("kind")), key=meta.get("key") or {}, size=size,
                          created=float(meta.get("created", 0.0)), hit=True)

    def lookup(self, kind: str, label: str, key: Mapping[str, Any]) -> CacheEntry | None:
        """The valid entry with this key, or None (an invalid one is logged and removed)."""
        folder = self.folder_for(kind, label, key)
        if not folder.exists():
            return None
        try:
            return self._read(folder, key)
        except ValueError as exc:
            log.warning("cached %s engine %s is unusable: %s; rebuilding it", kind, folder, exc)
            self._discard(folder)
            return None

    # --- writing ----------------------------------------------------------------------------

    def store(self, kind: str, label: str, key: Mapping[str, Any], artifact: str,
              build: Callable[[Path], None]) -> CacheEntry:
        """Build an artifact into the cache: ``build(path)`` writes the file ``path``.

        The entry appears whole or not at all; if another process stored the same entry
        meanwhile, its entry is kept and returned.
        """
        folder = self.folder_for(kind, label, key)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".part", dir=folder.parent))
        try:
            path = tmp / artifact
            build(path)
            if not path.is_file():
                raise RuntimeError(f"building the {kind} engine wrote no {artifact}")
            meta = {"format": CACHE_FORMAT, "kind": kind, "label": label, "key": _roundtrip(key),
                    "artifact": artifact, "size": path.stat().st_size, "sha256": _file_sha256(path),
                    "created": time.time()}
            (tmp / _ENTRY).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
            if folder.exists():
                self._discard(folder)
            try:
                os.rename(tmp, folder)
            except OSError:
                # Another process put the same entry in place first: use it if it is sound.
                try:
                    return self._read(folder, key)
                except ValueError:
                    raise RuntimeError(f"cannot write the engine cache entry {folder}") from None
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        entry = self._read(folder, key)
        return CacheEntry(entry.path, entry.kind, entry.key, entry.size, entry.created, hit=False)

    def load_or_build(self, kind: str, label: str, key: Mapping[str, Any], artifact: str,
                      build: Callable[[Path], None], load: Callable[[Path], T]) -> tuple[T, CacheEntry]:
        """``load`` the cached artifact, building (or rebuilding) it first where needed.

        An entry that ``load`` fails on is logged, removed and rebuilt once; an error of the
        rebuilt one propagates.
        """
        entry = self.lookup(kind, label, key)
        if entry is not None:
            try:
                return load(entry.path), entry
            except Exception as exc:  # noqa: BLE001 - any failure to load means: rebuild
                log.warning("cached %s engine %s cannot be loaded (%s: %s); rebuilding it",
                            kind, entry.folder, type(exc).__name__, exc)
                self._discard(entry.folder)
        log.info("building the %s engine for %s into %s", kind, label, self.folder_for(kind, label, key))
        entry = self.store(kind, label, key, artifact, build)
        return load(entry.path), entry

    # --- listing and clearing ---------------------------------------------------------------

    def _kind_dirs(self, kind: str | None) -> list[Path]:
        if kind is not None and kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(map(repr, KINDS))}; got {kind!r}.")
        return [self.root / k for k in ((kind,) if kind else KINDS) if (self.root / k).is_dir()]

    def entries(self, kind: str | None = None) -> list[CacheEntry]:
        """The sound entries (of one kind, or all), oldest first; unusable ones are left out."""
        found = []
        for kdir in self._kind_dirs(kind):
            for folder in sorted(kdir.iterdir()):
                if not (folder.is_dir() and _FOLDER.match(folder.name)):
                    continue
                try:
                    found.append(self._read(folder, None))
                except ValueError:
                    continue
        return sorted(found, key=lambda e: e.created)

    def clear(self, kind: str | None = None) -> int:
        """Remove every entry (of one kind, or all); the number of entry folders removed.

        Only folders named like entries (and left-over temporary ones) are touched, so a cache
        root pointed at a folder with other contents loses nothing else.
        """
        n = 0
        for kdir in self._kind_dirs(kind):
            for folder in kdir.iterdir():
                if not folder.is_dir():
                    continue
                if _FOLDER.match(folder.name):
                    shutil.rmtree(folder, ignore_errors=True)
                    n += 1
                elif _PART.match(folder.name):
                    shutil.rmtree(folder, ignore_errors=True)
            if not any(kdir.iterdir()):
                kdir.rmdir()
        return n

    def _discard(self, folder: Path) -> None:
        """Remove an entry folder, renaming it aside first so that no reader sees it half gone."""
        trash = folder.with_name(f".{folder.name}.{os.getpid()}.{time.monotonic_ns()}.part")
        try:
            os.rename(folder, trash)
        except FileNotFoundError:
            return
        except OSError:
            trash = folder
        shutil.rmtree(trash, ignore_errors=True)


def _roundtrip(key: Mapping[str, Any]) -> dict[str, Any]:
    """``key`` as it reads back from JSON (tuples become lists), for comparison with a stored one."""
    return json.loads(_canonical(dict(key)))
