"""Cache location, atomic `.npz` writes and a dependency-free progress bar."""

import hashlib
import os
import sys
import tempfile
import time

import numpy as np


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
    fd, tmp_path = tempfile.mkstemp(
        prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory
    )
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
