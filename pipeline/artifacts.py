"""Atomic writes, content hashes and the JSON sidecars that key every artifact.

Every file the pipeline writes goes through :func:`atomic_write` (write to a
temporary file in the same folder, fsync, rename), so an interrupted run never
leaves a half-written model, cache or report behind.

This module stays Python 3.6 compatible: the device-side route imports it.
"""

import hashlib
import json
import os
import tempfile

from .errors import JetquantError

CHUNK = 1 << 20


def sha256_file(path):
    """Return the hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(str(path), "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_json(obj):
    """Return the hex sha256 of an object's canonical JSON form."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def atomic_write(path, data):
    """Write bytes (or text) to ``path`` atomically: all of it or nothing.

    Args:
        path: destination file; its folder is created if missing.
        data: ``bytes`` or ``str`` (written as UTF-8).
    """
    path = str(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # like open(): mkstemp's 0600 would hide reports
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path, obj):
    """Write ``obj`` as indented JSON, atomically."""
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path, what):
    """Read a JSON file, or raise a :class:`JetquantError` naming ``what`` it was."""
    try:
        with open(str(path), "r") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise JetquantError("{} not found: {}".format(what, path)) from None
    except ValueError as exc:
        raise JetquantError(
            "{} {} is not valid JSON ({}); delete it and rerun".format(what, path, exc)
        ) from None


def sidecar_path(path):
    """Return the sidecar JSON path that describes an artifact."""
    return str(path) + ".json"


def write_sidecar(path, key, extra=None):
    """Write an artifact's sidecar: the key that produced it plus its own hash and size."""
    record = {"key": key, "sha256": sha256_file(path), "size_bytes": os.path.getsize(str(path))}
    record.update(extra or {})
    atomic_write_json(sidecar_path(path), record)
    return record


def is_fresh(path, key):
    """True when ``path`` exists, is intact, and its sidecar was written for ``key``.

    Reuse is decided by content: the key (hashes of every input and option) must
    match and the file's bytes must still hash to what the sidecar recorded.
    """
    side = sidecar_path(path)
    if not (os.path.isfile(str(path)) and os.path.isfile(side)):
        return False
    try:
        with open(side, "r") as handle:
            record = json.load(handle)
    except ValueError:
        return False
    return record.get("key") == key and record.get("sha256") == sha256_file(path)


def describe(path):
    """Return 'PATH (N.N MB)' (or kB for small files) for log lines."""
    size = os.path.getsize(str(path))
    if size < 1e6:
        return "{} ({:.1f} kB)".format(path, size / 1e3)
    return "{} ({:.1f} MB)".format(path, size / 1e6)
