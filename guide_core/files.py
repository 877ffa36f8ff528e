"""Files: the project's one SHA-256 of a file and of a module's state, human-readable sizes, and files written so
that a crash or a kill never leaves half of one behind."""
from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

HASH_CHUNK = 1 << 22  # 4 MiB reads: weights are hundreds of MB
BAR_MIN_SIZE = 4 << 20  # smaller files hash in a blink: no bar


def sha256_file(path: str | os.PathLike, progress: bool = False) -> str:
    """SHA-256 of a file, streamed; with ``progress`` a bar on stderr for files over 4 MiB."""
    from guide_core.progress import progress_bar

    path = Path(path)
    size = path.stat().st_size
    bar = progress_bar(size, f"hashing {path.name}", enabled=progress and size > BAR_MIN_SIZE, bytes_=True)
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while block := handle.read(HASH_CHUNK):
                digest.update(block)
                bar.update(len(block))
    finally:
        bar.close()
    return digest.hexdigest()


def human_size(size: int | None) -> str:
    """A byte count as people read it: ``512 B``, ``1.5 MB``, ``1.1 GB`` (``?`` when unknown)."""
    if size is None:
        return "?"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def state_fingerprint(module) -> str:
    """Fingerprint of a module's state (keys, shapes and float32 values): which model a delta or a cached w̄ belongs to.
    """
    import torch

    digest = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        digest.update(key.encode())
        digest.update(str(tuple(value.shape)).encode())
        digest.update(value.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` that becomes `path` only when the block finishes without an exception; on any
    exception (KeyboardInterrupt included) the temporary file is removed and `path` keeps what it held before.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write text (or bytes) to `path` atomically, flushed to disk before the rename."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data.encode() if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
