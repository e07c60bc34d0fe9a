"""Cache location, atomic `.npz` writes and a dependency-free progress bar."""

import fnmatch
import glob
import hashlib
import os
import sys
import tempfile
import time
import warnings

import numpy as np

from keras_meta._warnings import KerasMetaWarning

# A temporary of `atomic_save_npz` not modified for this long is debris of a killed
# write. A live write only exists for the final serialisation (seconds, the build
# itself runs in memory) and touches its file continuously, so an hour leaves a
# wide margin for slow disks while debris never outlives the next call by more.
STALE_TEMPORARY_SECONDS = 3600.0
# `atomic_save_npz` names its temporary ".<name>.<random>.tmp" next to <name>.
_TEMPORARY_PREFIX = ".%s."


class CacheWarning(KerasMetaWarning):
    """A dataset cache could not be written or read back; the data is returned (or rebuilt)."""


def default_cache_dir():
    """`$KERAS_META_HOME/datasets`, or `~/.keras_meta/datasets` when unset."""
    home = os.environ.get("KERAS_META_HOME")
    if not home:
        home = os.path.join(os.path.expanduser("~"), ".keras_meta")
    return os.path.join(home, "datasets")


def write_npz(file, arrays):
    """Serialises `arrays` into the open binary `file` (a seam for tests)."""
    # Compressed: the glyph images are mostly background, 58 MB shrink to 9 MB,
    # and inflating costs about as much as reading the raw bytes would.
    np.savez_compressed(file, **arrays)


def atomic_save_npz(path, arrays):
    """Writes `arrays` to `path` so that readers see the whole file or none of it.

    The data goes to a temporary file in the destination directory (same file
    system, so the rename is atomic), is flushed to disk, then renamed over `path`.
    An exception or interruption removes the temporary file and leaves any previous
    `path` untouched.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    name = os.path.basename(path)
    remove_stale_temporaries(directory, glob.escape(name))
    fd, tmp_path = tempfile.mkstemp(prefix=_TEMPORARY_PREFIX % name, suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as file:
            write_npz(file, arrays)
            file.flush()
            os.fsync(file.fileno())
        # mkstemp creates owner-only files; a cache is ordinary shared data.
        os.chmod(tmp_path, 0o644)
        os.replace(tmp_path, path)
    except BaseException:
        # BaseException: Ctrl-C during a long build must not leave debris either.
        try:
            os.unlink(tmp_path)
        except FileNotFoundError:
            pass
        raise


def save_cache(path, arrays):
    """`atomic_save_npz` for a cache: a failed write warns instead of raising.

    A cache only saves time, so a home that is read-only, full, or not a
    directory must not cost the caller the data it has just built.

    Returns:
        Whether `path` was written.

    Warns:
        CacheWarning: If the file system refused the write (any `OSError`).
    """
    try:
        atomic_save_npz(path, arrays)
    except OSError as error:
        warnings.warn(
            f"Could not write the dataset cache {path!r} ({type(error).__name__}: {error}); "
            "returning the data uncached, it will be built again next time. Set "
            "KERAS_META_HOME (or pass cache_dir=) to a writable directory to keep it.",
            CacheWarning,
            stacklevel=3,
        )
        return False
    return True


def remove_stale_temporaries(directory, pattern, max_age=STALE_TEMPORARY_SECONDS):
    """Deletes `atomic_save_npz` temporaries of files matching `pattern` in `directory`.

    Only temporaries unmodified for `max_age` seconds go (see
    `STALE_TEMPORARY_SECONDS`); a concurrent writer's fresh one is left alone.
    Best effort: a missing or read-only directory, or a file removed by another
    process meanwhile, is not an error.

    Args:
        directory: Directory to sweep.
        pattern: `fnmatch` pattern of the destination file names, e.g. `"glyphs-v*.npz"`.
        max_age: Seconds since the last modification after which a temporary is stale.
    """
    temporary = (_TEMPORARY_PREFIX % pattern) + "*.tmp"
    cutoff = time.time() - max_age
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    for entry in entries:
        try:
            if (
                fnmatch.fnmatchcase(entry.name, temporary)
                and entry.is_file(follow_symlinks=False)
                and entry.stat(follow_symlinks=False).st_mtime < cutoff
            ):
                os.unlink(entry.path)
        except OSError:
            pass


def checksum(*arrays):
    """SHA-256 hex digest over the dtype, shape and bytes of `arrays`."""
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


class Progress:
    """A one-line progress bar on stderr; silent when `verbose` is 0.

    On a terminal the line redraws in place about ten times a second; in a log
    file (not a TTY) a plain line is written every few seconds instead.
    """

    def __init__(self, total, label, verbose=1, width=30, stream=None):
        self.total = max(int(total), 1)
        self.label = label
        self.verbose = verbose
        self.width = width
        self.stream = sys.stderr if stream is None else stream
        isatty = getattr(self.stream, "isatty", None)
        self.interactive = bool(isatty and isatty())
        self.interval = 0.1 if self.interactive else 5.0
        self.start = time.monotonic()
        self._last_draw = self.start
        self._finished = False

    def update(self, done):
        if not self.verbose or self._finished:
            return
        now = time.monotonic()
        finished = done >= self.total
        if not finished and now - self._last_draw < self.interval:
            return
        self._last_draw = now
        self._finished = finished
        filled = min(self.width, int(self.width * done / self.total))
        bar = ("=" * filled + ">" + "." * self.width)[: self.width]
        line = f"{self.label}: {done}/{self.total} [{bar}] {now - self.start:.0f}s"
        if self.interactive:
            self.stream.write("\r" + line + ("\n" if finished else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
