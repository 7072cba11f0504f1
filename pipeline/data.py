"""The prepared dataset: train / validation / test splits, stored once by the prepare stage
and read lazily by every other stage, and the calibration draw (no TensorFlow).

The store is a folder (`Layout.dataset`) with one `.npy` file per split and array and a
`meta.json`:
- `x_<split>.npy`: the pixels in the source's own dtype (uint8 for 8-bit images), shape
  `(n, height, width, channels)`;
- `y_<split>.npy`: int64 labels `(n,)`;
- `i_<split>.npy`: each sample's position in the source (the source's own order; a source
  with its own test split numbers its test samples after its training samples), so which
  sample went where can be checked;
- `meta.json`: `divide_by` (pixels are divided by it when read, giving [0, 1] float32), the
  model's input range (`input_range`: `multiply` and `add`, per channel or one for all,
  applied after that: `x * multiply + add`; from `data.scale`/`data.offset` or
  `data.normalize`), the number of classes, the sample shape, and each split's size.

Reading never loads a split whole: `Images` reads the rows asked for with positioned reads
(`x[a:b]`, `x[indices]`), so a stage's memory follows what it uses (one sample for the
benchmark, the calibration samples for quantization, one batch at a time for evaluation and
training), not the size of the data set. Where the splits come from is `pipeline.sources`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.io import atomic_dir, write_json

SPLITS = ("train", "val", "test")
META = "meta.json"
IDENTITY = {"multiply": 1.0, "add": 0.0, "describe": "[0, 1]"}  # pixels / divide_by, as is


def input_range(scale: float = 1.0, offset: float = 0.0,
                normalize: dict[str, list[float]] | None = None) -> dict[str, Any]:
    """The affine map from [0, 1] pixels to the model's input range, for the store's meta.

    `scale` and `offset`: `x * scale + offset` ([-1, 1]: 2 and -1; 0..255: 255 and 0).
    `normalize`: per-channel `{"mean": [...], "std": [...]}` of [0, 1] pixels:
    `(x - mean) / std`.

    Returns:
        `multiply`, `add` (a number, or a list per channel) and `describe` (one line).
    """
    if normalize:
        mean = [float(m) for m in normalize["mean"]]
        std = [float(s) for s in normalize["std"]]
        return {"multiply": [1 / s for s in std], "add": [-m / s for m, s in zip(mean, std)],
                "describe": f"(x - {mean}) / {std} of [0, 1] pixels, per channel"}
    if scale == 1.0 and offset == 0.0:
        return dict(IDENTITY)
    return {"multiply": float(scale), "add": float(offset),
            "describe": f"[{offset:g}, {offset + scale:g}] ([0, 1] pixels x {scale:g} "
                        f"{'+' if offset >= 0 else '-'} {abs(offset):g})"}


class Images:
    """One split's images, stored as a `.npy` file in the source's dtype and read on demand.

    `x[a:b]`, `x[i]` and `x[indices]` return float32 arrays divided by `divide_by`; only
    those rows are read from disk. `np.asarray(x)` reads everything (for small data).

    Args:
        path: The `.npy` file (C order, written by `write_split`).
        divide_by: Pixels are divided by it when read (255 for 8-bit images).
        multiply, add: The model's input range, applied after: `x * multiply + add` (one
            value, or one per channel).
    """

    def __init__(self, path: str | Path, divide_by: float = 1.0,
                 multiply: Any = 1.0, add: Any = 0.0) -> None:
        self.path = Path(path)
        self.divide_by = float(divide_by)
        self.multiply = np.asarray(multiply, np.float32)
        self.add = np.asarray(add, np.float32)
        self._affine = bool(np.any(self.multiply != 1) or np.any(self.add != 0))
        with self.path.open("rb") as f:
            major, _ = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if major == 1
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(f)
            self._offset = f.tell()
        if fortran:
            raise ValueError(f"{self.path}: Fortran-ordered arrays are not supported")
        self.stored_dtype = np.dtype(dtype)
        self.shape: tuple[int, ...] = tuple(int(d) for d in shape)
        self._row = int(np.prod(self.shape[1:], dtype=np.int64)) * self.stored_dtype.itemsize

    dtype = np.dtype(np.float32)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def _scaled(self, raw: np.ndarray) -> np.ndarray:
        out = raw.astype(np.float32)
        if self.divide_by != 1.0:
            out /= np.float32(self.divide_by)
        if self._affine:  # the model's own input range, applied once, here
            out *= self.multiply
            out += self.add
        return out

    def _read_rows(self, fd: int, start: int, count: int) -> np.ndarray:
        nbytes = count * self._row
        buf = bytearray(nbytes)
        view, done = memoryview(buf), 0
        while done < nbytes:  # pread may return less than asked
            got = os.preadv(fd, [view[done:]], self._offset + start * self._row + done)
            if got <= 0:
                raise OSError(f"{self.path}: unexpected end of file")
            done += got
        return np.frombuffer(buf, self.stored_dtype).reshape(count, *self.shape[1:])

    def __getitem__(self, key: Any) -> np.ndarray:
        n = len(self)
        with _opened(self.path) as fd:
            if isinstance(key, (int, np.integer)):
                i = int(key) + (n if key < 0 else 0)
                if not 0 <= i < n:
                    raise IndexError(f"index {key} out of range for {n} samples")
                return self._scaled(self._read_rows(fd, i, 1))[0]
            if isinstance(key, slice):
                start, stop, step = key.indices(n)
                if step == 1:
                    return self._scaled(self._read_rows(fd, start, max(0, stop - start)))
                key = np.arange(start, stop, step)
            idx = np.asarray(key)
            if idx.dtype == bool:
                idx = np.flatnonzero(idx)
            idx = np.where(idx < 0, idx + n, idx).astype(np.int64)
            if idx.size and (idx.min() < 0 or idx.max() >= n):
                raise IndexError(f"indices out of range for {n} samples")
            rows = np.empty((len(idx), *self.shape[1:]), self.stored_dtype)
            for j, i in enumerate(idx):  # one positioned read per row asked for
                rows[j] = self._read_rows(fd, int(i), 1)[0]
            return self._scaled(rows)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        """Consecutive batches, each read when it is asked for."""
        for start in range(0, len(self), batch_size):
            yield self[start:start + batch_size]


@contextlib.contextmanager
def _opened(path: Path) -> Iterator[int]:
    fd = os.open(path, os.O_RDONLY)
    try:
        yield fd
    finally:
        os.close(fd)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Train / validation / test splits of one image classification task.

    The images are `Images` when loaded from the store, or plain float32 arrays (tests,
    slices); both index alike.
    """

    x_train: Any
    y_train: np.ndarray
    x_val: Any
    y_val: np.ndarray
    x_test: Any
    y_test: np.ndarray
    num_classes: int
    labelled: bool = True  # False: an image folder without class folders (labels all 0)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample, e.g. `(8, 8, 1)`."""
        return tuple(self.x_train.shape[1:])


class SplitWriter:
    """Writes one split's pixels row by row into `x_<split>.npy` (no memory map, so nothing
    of the data stays in the writer's memory), and its labels at the end."""

    def __init__(self, folder: Path, split: str, count: int, sample_shape: tuple[int, ...],
                 dtype: Any) -> None:
        self.folder, self.split, self.count = folder, split, count
        self.dtype = np.dtype(dtype)
        self.sample_shape = tuple(sample_shape)
        self._file = (folder / f"x_{split}.npy").open("wb")
        np.lib.format.write_array_header_1_0(self._file, {
            "descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
            "shape": (count, *self.sample_shape)})
        self.written = 0

    def write(self, rows: np.ndarray) -> None:
        """Append rows `(m, *sample_shape)` in the split's dtype."""
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.shape[1:] != self.sample_shape:
            raise ValueError(f"rows of shape {rows.shape[1:]}, expected {self.sample_shape}")
        self._file.write(rows.tobytes())
        self.written += len(rows)

    def close(self, labels: np.ndarray, origin: np.ndarray) -> None:
        """Finish the split with its labels and each sample's position in the source."""
        self._file.close()
        if not self.written == self.count == len(labels) == len(origin):
            raise ValueError(f"split {self.split}: wrote {self.written} images, "
                             f"{len(labels)} labels and {len(origin)} positions, expected "
                             f"{self.count}")
        np.save(self.folder / f"y_{self.split}.npy", np.asarray(labels, dtype=np.int64))
        np.save(self.folder / f"i_{self.split}.npy", np.asarray(origin, dtype=np.int64))


@contextlib.contextmanager
def writer(path: str | Path, *, num_classes: int, sample_shape: tuple[int, ...],
           dtype: Any, divide_by: float, source: str, counts: dict[str, int],
           input_range: dict[str, Any] | None = None,
           labelled: bool = True) -> Iterator[dict[str, SplitWriter]]:
    """Write a store folder atomically: yields one `SplitWriter` per split; the folder
    replaces `path` only if the block completes (`close` each writer with its labels)."""
    with atomic_dir(path) as tmp:
        writers = {s: SplitWriter(tmp, s, counts[s], sample_shape, dtype) for s in SPLITS}
        try:
            yield writers
        finally:
            for w in writers.values():
                w._file.close()  # noqa: SLF001 (idempotent; labels are written by close())
        write_json(tmp / META, {
            "num_classes": int(num_classes), "sample_shape": list(sample_shape),
            "dtype": np.dtype(dtype).name, "divide_by": float(divide_by), "source": source,
            "input_range": input_range or IDENTITY, "labelled": bool(labelled),
            "splits": {s: int(counts[s]) for s in SPLITS}})


def save(ds: Dataset, path: str | Path, divide_by: float = 1.0, source: str = "arrays",
         origins: dict[str, np.ndarray] | None = None, batch: int = 1024,
         input_range: dict[str, Any] | None = None) -> Path:
    """Write in-memory splits (raw pixels, divided by `divide_by` when read) to a store.

    Args:
        origins: Each split's positions in the source; default: train, val and test
            numbered one after the other.
        input_range: `{"multiply", "add", "describe"}` (`input_range`); default: [0, 1].
    """
    first = np.asarray(ds.x_train[:1])
    counts = {s: len(getattr(ds, f"y_{s}")) for s in SPLITS}
    if origins is None:
        starts = np.cumsum([0] + [counts[s] for s in SPLITS])
        origins = {s: np.arange(starts[i], starts[i + 1]) for i, s in enumerate(SPLITS)}
    with writer(path, num_classes=ds.num_classes, sample_shape=tuple(first.shape[1:]),
                dtype=first.dtype, divide_by=divide_by, source=source,
                counts=counts, input_range=input_range) as writers:
        for s in SPLITS:
            x = getattr(ds, f"x_{s}")
            for start in range(0, len(x), batch):
                writers[s].write(np.asarray(x[start:start + batch]))
            writers[s].close(getattr(ds, f"y_{s}"), origins[s])
    return Path(path)


def load(path: str | Path) -> Dataset:
    """Open a store written by the prepare stage; nothing but the labels is read yet.

    Raises:
        FileNotFoundError: if the store is missing.
    """
    path = Path(path)
    if not (path / META).is_file():
        raise FileNotFoundError(f"prepared dataset {path} does not exist; run the prepare stage")
    meta = json.loads((path / META).read_text(encoding="utf-8"))
    arrays: dict[str, Any] = {}
    scaling = meta.get("input_range", IDENTITY)
    for s in SPLITS:
        arrays[f"x_{s}"] = Images(path / f"x_{s}.npy", meta["divide_by"],
                                  scaling["multiply"], scaling["add"])
        arrays[f"y_{s}"] = np.load(path / f"y_{s}.npy")
    return Dataset(num_classes=int(meta["num_classes"]), labelled=meta.get("labelled", True),
                   **arrays)


def origins(path: str | Path) -> dict[str, np.ndarray]:
    """Each split's positions in the source (`i_<split>.npy`)."""
    return {s: np.load(Path(path) / f"i_{s}.npy") for s in SPLITS}


def calibration_indices(n: int, count: int, seed: int) -> np.ndarray:
    """Which training samples calibrate, sorted: a seeded draw of `count` of `n`.

    Raises:
        ValueError: if `count` is not between 1 and `n`.
    """
    if not 1 <= count <= n:
        raise ValueError(f"quantization.calibration_samples must be between 1 and the "
                         f"training split's size ({n}), got {count}")
    return np.sort(np.random.default_rng(seed).permutation(n)[:count])


def calibration_samples(ds: Dataset, count: int, seed: int) -> np.ndarray:
    """The representative samples for calibration, from the training split only (only those
    rows are read)."""
    return ds.x_train[calibration_indices(len(ds.x_train), count, seed)]


def content_digest(path: str | Path, chunk: int = 1 << 20) -> str:
    """The store's content digest as DVC computes it for a tracked folder (the `md5` of
    `data/prepared` in `dvc.lock`): `<md5 of the sorted [{"md5", "relpath"}] JSON>.dir`, 36
    characters. The same for the same bytes, with or without DVC, so runs on different data
    are told apart.
    """
    import hashlib

    root = Path(path)
    entries = []
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        md5 = hashlib.md5()
        with file.open("rb") as f:
            while block := f.read(chunk):
                md5.update(block)
        entries.append({"md5": md5.hexdigest(), "relpath": file.relative_to(root).as_posix()})
    entries.sort(key=lambda e: e["relpath"])
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode("utf-8")).hexdigest() + ".dir"


def meta(path: str | Path) -> dict[str, Any]:
    """The store's `meta.json`: source, dtype, shapes, each split's size."""
    return json.loads((Path(path) / META).read_text(encoding="utf-8"))
