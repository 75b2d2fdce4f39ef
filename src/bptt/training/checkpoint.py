"""Checkpoints: a nested dict of arrays and JSON values in one ``.npz`` file, written atomically.

A checkpoint is a tree: dicts whose leaves are ndarrays or JSON values (numbers, strings,
bools, None, lists of them). The arrays go into the npz under their '/'-joined paths; all the
other leaves go into one JSON document stored beside them, with the format version. Loading
never unpickles anything.

Writing goes to a temporary file in the same folder, is flushed to disk, then renamed over
the target: a crash at any point leaves either the previous checkpoint or the new one, whole.
"""

import json
import os
import zipfile

import numpy as np

FORMAT = 1
META = "__meta__"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not belong to what is asked of it."""


def _flatten(tree, prefix, arrays):
    """Split ``tree`` into arrays (collected in ``arrays`` by path) and the JSON rest."""
    if isinstance(tree, np.ndarray):
        arrays[prefix] = tree
        return {"__array__": prefix}
    if isinstance(tree, dict):
        for key in tree:
            if not isinstance(key, str) or "/" in key:
                raise TypeError(f"checkpoint keys must be strings without '/' but got {key!r} in {prefix or 'the root'}")
        return {key: _flatten(value, f"{prefix}/{key}" if prefix else key, arrays) for key, value in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_flatten(value, f"{prefix}/{i}", arrays) for i, value in enumerate(tree)]
    if isinstance(tree, np.generic):
        return tree.item()
    if tree is None or isinstance(tree, (bool, int, float, str)):
        return tree
    raise TypeError(f"cannot store {type(tree).__name__} at {prefix} in a checkpoint")


def _unflatten(meta, arrays):
    if isinstance(meta, dict):
        if set(meta) == {"__array__"}:
            return arrays[meta["__array__"]]
        return {key: _unflatten(value, arrays) for key, value in meta.items()}
    if isinstance(meta, list):
        return [_unflatten(value, arrays) for value in meta]
    return meta


def save_checkpoint(path, tree):
    """Write ``tree`` to ``path`` (an ``.npz``) atomically; the previous file stays intact
    until the new one is complete, and no temporary file stays behind.

    Raises OSError where the system refuses the write (a full disk, a file too large, a
    read-only or missing folder), naming ``path`` where the system named no file."""
    arrays = {}
    meta = {"format": FORMAT, "tree": _flatten(tree, "", arrays)}
    if META in arrays:
        raise TypeError(f"{META} is reserved in checkpoints")
    directory = os.path.dirname(os.path.abspath(path))
    temporary = os.path.join(directory, f".{os.path.basename(path)}.partial")
    try:
        with open(temporary, "wb") as handle:
            np.savez(handle, **{META: np.array(json.dumps(meta))}, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as error:
        if error.filename is None and error.errno is not None:  # a write to the open file: "File too large"
            raise OSError(error.errno, error.strerror, os.fspath(path)) from error
        raise
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def load_checkpoint(path):
    """The tree saved at ``path``. Raises :class:`CheckpointError` naming the file and the
    problem: missing, truncated or corrupt, not a bptt checkpoint, or from a newer format."""
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint at {path}")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path} is truncated or corrupt: not a complete npz archive")
    try:
        with np.load(path, allow_pickle=False) as archive:
            if META not in archive.files:
                raise CheckpointError(f"{path} is not a bptt checkpoint (no {META} entry)")
            meta = json.loads(str(archive[META]))
            arrays = {name: archive[name] for name in archive.files if name != META}
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, KeyError) as error:
        raise CheckpointError(f"{path} is truncated or corrupt ({type(error).__name__}: {error})") from error
    if not isinstance(meta, dict) or "tree" not in meta:
        raise CheckpointError(f"{path} is not a bptt checkpoint (its {META} entry is not one)")
    version = meta.get("format")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{path} is not a bptt checkpoint (format {version!r})")
    if version > FORMAT:
        raise CheckpointError(
            f"{path} has checkpoint format {version!r}, newer than this bptt reads ({FORMAT}); upgrade bptt"
        )
    try:
        return _unflatten(meta["tree"], arrays)
    except KeyError as error:
        raise CheckpointError(f"{path} is corrupt: array {error} is missing") from error
