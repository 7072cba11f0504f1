"""Which config keys a step really reads: a recording view of the typed config.

`dvc repro` reruns a stage when one of the `params` that `dvc.yaml` lists for it changes,
so the list must hold every key the stage's step reads, and better nothing else (a wider
list reruns the stage for nothing). Reading is what the code does, so it is recorded, not
declared: `recording(cfg)` returns a copy of the config whose sections note each key read
from them (a leaf, such as `evaluate.labels`, or a whole section when the code takes all of
it, as `dataclasses.asdict` does), and the names of a mapping's entries when it is iterated
(`names`: the set of variants, not their fields).

Every stage script runs its step on such a view (`pipeline.cli.stage`) and checks what it
read against its `params` in `dvc.yaml` (`missing`): a key read and not listed is a result
that `dvc repro` would keep after that key changed. `tests/test_e2e.py` runs every stage
this way and also changes every leaf of `params.yaml` to see what `dvc status` says.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
_STATE = "_reads_state"  # (Reads, prefix) on a recording section


@dataclasses.dataclass
class Reads:
    """What a step read.

    Attributes:
        keys: Dotted keys read (a leaf, or a section taken whole).
        names: Mappings whose entry names were listed (iterated), e.g. `quantization.variants`.
    """

    keys: set[str] = dataclasses.field(default_factory=set)
    names: set[str] = dataclasses.field(default_factory=set)

    def as_json(self) -> dict[str, list[str]]:
        return {"keys": sorted(self.keys), "names": sorted(self.names)}


# Field metadata of a key whose value changes no stage's output: reading it is not a
# dependency (a variant's `name` is its key in the mapping; a worker count changes how fast).
NO_RERUN = {"rerun": False}

_CLASSES: dict[type, type] = {}
_PAUSED = contextvars.ContextVar("reads_paused", default=False)


@contextlib.contextmanager
def unrecorded() -> Any:
    """Reads that only check: the step either stops with an error or goes on as if it had
    not read them (`data.num_classes` against a user's model, say). Not dependencies."""
    token = _PAUSED.set(True)
    try:
        yield
    finally:
        _PAUSED.reset(token)


def _recorded() -> bool:
    return not _PAUSED.get()


def _recording_class(cls: type) -> type:
    """A subclass of the dataclass `cls` that records each field read (cached per class).
    A subclass, so that `isinstance`, `dataclasses.fields` and `asdict` work as before."""
    if cls not in _CLASSES:
        def __getattribute__(self: Any, name: str) -> Any:  # noqa: N807
            value = object.__getattribute__(self, name)
            # A copy made by dataclasses.replace has no state and records nothing: making it
            # read every field it kept from this one, so those are recorded already.
            state = object.__getattribute__(self, "__dict__").get(_STATE)
            if state is None or not _recorded():
                pass
            elif name == "__dict__":  # vars(section): all of it
                state[0].keys.add(state[1] or "*")
            elif (name in (fields := type(self).__dataclass_fields__) and not _is_view(value)
                  and fields[name].metadata.get("rerun", True)):
                state[0].keys.add(_join(state[1], name))
            return value

        def __reduce__(self: Any) -> Any:  # noqa: N807
            # Sent to another process (a worker) as the plain dataclass, every field read:
            # what the worker does with it is the step's dependency.
            values = {f.name: getattr(self, f.name) for f in dataclasses.fields(cls)}
            extra = {k: v for k, v in object.__getattribute__(self, "__dict__").items()
                     if k not in values and k != _STATE}
            return _plain, (cls, {**values, **extra})

        _CLASSES[cls] = type(cls.__name__, (cls,), {"__getattribute__": __getattribute__,
                                                    "__reduce__": __reduce__,
                                                    "__qualname__": cls.__qualname__,
                                                    "__module__": cls.__module__})
    return _CLASSES[cls]


def _plain(cls: type, attributes: Mapping[str, Any]) -> Any:
    """A recording view's dataclass rebuilt as the plain class (unpickling)."""
    obj = object.__new__(cls)
    for name, value in attributes.items():
        object.__setattr__(obj, name, value)
    return obj


class _RecordingDict(dict):
    """A mapping section (variants by name, NPU targets by name) that records reads: an
    entry's value (a leaf: its key; a section: what is read from it), or its names when
    iterated. Membership (`name in d`) records nothing: a per-variant stage exists only for
    the names there are."""

    _state: tuple[Reads, str] | None = None

    def _leaf(self, key: Any, value: Any) -> Any:
        if self._state is not None and not _is_view(value) and _recorded():
            self._state[0].keys.add(_join(self._state[1], key))
        return value

    def _listed(self) -> None:
        if self._state is not None and _recorded():
            self._state[0].names.add(self._state[1])

    def __getitem__(self, key: Any) -> Any:
        return self._leaf(key, super().__getitem__(key))

    def get(self, key: Any, default: Any = None) -> Any:
        return self._leaf(key, super().get(key, default)) if key in self else default

    def __iter__(self) -> Any:
        self._listed()
        return super().__iter__()

    def keys(self) -> Any:
        self._listed()
        return super().keys()

    def values(self) -> Any:
        self._listed()
        return [self[k] for k in super().keys()]

    def items(self) -> Any:
        self._listed()
        return [(k, self[k]) for k in super().keys()]

    def __len__(self) -> int:
        self._listed()
        return super().__len__()


def _is_view(value: Any) -> bool:
    return isinstance(value, _RecordingDict) or type(value) in _CLASSES.values()


def _join(prefix: str, name: Any) -> str:
    return f"{prefix}.{name}" if prefix else str(name)


def _view(value: Any, reads: Reads, prefix: str) -> Any:
    """`value` as a recording view under `prefix` (sections and mappings; leaves as they are)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        view = object.__new__(_recording_class(type(value)))
        for f in dataclasses.fields(value):
            object.__setattr__(view, f.name, _view(getattr(value, f.name), reads,
                                                   _join(prefix, f.name)))
        for name, extra in vars(value).items():  # set by __post_init__, not fields
            if name not in view.__dataclass_fields__:
                object.__setattr__(view, name, extra)
        object.__setattr__(view, _STATE, (reads, prefix))
        return view
    if isinstance(value, Mapping) and not isinstance(value, _RecordingDict):
        view = _RecordingDict({k: _view(v, reads, _join(prefix, k)) for k, v in value.items()})
        view._state = (reads, prefix)
        return view
    return value


def recording(cfg: Any) -> tuple[Any, Reads]:
    """A copy of the typed config (`pipeline.config.Config`) that records what is read from it.

    Returns:
        The view (use it as the config) and the `Reads` it fills.
    """
    reads = Reads()
    return _view(cfg, reads, ""), reads


def covers(param: str, key: str) -> bool:
    """Whether listing `param` in a stage's params reruns it when `key` changes (DVC compares
    a listed key's whole value: a section covers every key under it)."""
    return key == param or key.startswith(param + ".")


def missing(reads: Reads, params: Iterable[str], whole_file: bool = False) -> list[str]:
    """The keys read (and the mappings listed) that no listed param covers.

    Args:
        reads: What the step read.
        params: The stage's `params` in `dvc.yaml` (`${key}` already substituted).
        whole_file: The stage depends on `params.yaml` as a file (every key covered).
    """
    if whole_file:
        return []
    params = list(params)
    found = {k for k in reads.keys if not any(covers(p, k) for p in params)}
    found |= {f"{n} (its names)" for n in reads.names if not any(covers(p, n) for p in params)}
    return sorted(found)


def leaves(raw: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Every leaf of a config mapping by dotted key (a list is one leaf, as DVC compares it)."""
    out: dict[str, Any] = {}
    for k, v in raw.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(leaves(v, key + "."))
        else:
            out[key] = v
    return out


# --- the check each stage runs ----------------------------------------------------------------

ENV_STRICT = "LAB_STRICT_READS"  # "1": a stage that read an unlisted key fails (the tests)
ENV_RECORD = "LAB_READS_DIR"  # a folder: each stage writes what it read there (the tests)
PARAMS_YAML = "params.yaml"
VARIANTS = "quantization.variants"
# A stage that depends on every variant's folder reruns when the set of variants changes
# (a folder appears); one that lists the variants' names needs nothing more.
VARIANT_FOLDERS = "models/tflite"


def declared(dvc_yaml: Path, stage: str, variant: str | None = None
             ) -> tuple[list[str], list[str]]:
    """A stage's `params` and `deps` in `dvc.yaml`, with `${key}` set to `variant`."""
    import yaml

    entry = yaml.safe_load(dvc_yaml.read_text(encoding="utf-8"))["stages"][stage]
    body = entry.get("do", entry)

    def subst(items: list[Any]) -> list[str]:
        out = []
        for item in items:
            if isinstance(item, Mapping):  # `- file.yaml: [keys]`: only params.yaml here
                out += [str(k) for keys in item.values() for k in (keys or [])]
            else:
                out.append(str(item).replace("${key}", variant or "${key}"))
        return out

    return subst(body.get("params", [])), subst(body.get("deps", []))


def check(reads: Reads, dvc_yaml: Path, stage: str, variant: str | None = None,
          record_dir: str | None = None) -> list[str]:
    """Compare what a stage read with its entry in `dvc.yaml`; record it in `record_dir`.

    Returns:
        The keys read that its params do not cover (empty when `dvc repro` is right).
    """
    params, deps = declared(dvc_yaml, stage, variant)
    if VARIANT_FOLDERS in deps:
        reads = Reads(reads.keys, reads.names - {VARIANTS})
    gaps = missing(reads, params, whole_file=PARAMS_YAML in deps)
    if record_dir:
        from pipeline.io import write_json

        name = f"{stage}@{variant}" if variant else stage
        write_json(Path(record_dir) / f"{name}.json", {**reads.as_json(), "missing": gaps})
    return gaps


def enforce(read: Reads, dvc_yaml: Path, stage: str, variant: str | None = None) -> None:
    """Hold a stage to its entry in `dvc.yaml` (`check`): a config key its step read that its
    params do not list would let `dvc repro` keep its result after that key changed. Logged
    as an error; with `LAB_STRICT_READS=1` (the tests) the stage fails.

    Raises:
        RuntimeError: with `LAB_STRICT_READS=1`, naming the stage and the keys.
    """
    if not dvc_yaml.is_file():  # the package run outside its project
        return
    gaps = check(read, dvc_yaml, stage, variant, os.environ.get(ENV_RECORD))
    if gaps:
        message = (f"stage {stage}: its step read {', '.join(gaps)}, which dvc.yaml does not "
                   "list among its params: `dvc repro` would not rerun it when they change "
                   "(pipeline/dvcfile.py lists them)")
        if os.environ.get(ENV_STRICT) == "1":
            raise RuntimeError(message)
        log.error(message)
