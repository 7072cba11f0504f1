"""Check a device's outputs against the golden ones: the outputs the device's runtime gave
the samples in `golden/inputs.*` (the same integers the device feeds its input tensor):
TFLite Micro's where it runs the model (`golden/expected.npy`; `expected_litert.npy`:
LiteRT's built-in kernels, beside them), else LiteRT's. An integer model must match bit for
bit, a float model within the tolerance `golden/golden.json` states.

    python check.py device_outputs.txt   # one line per golden sample, in order: the output
                                         # tensor's values as the device read them, spaced
    python check.py device_outputs.npy   # or the same as an array (samples, outputs)

Exit status 0 when every sample matches, 1 otherwise (one line per sample that does not).
Needs numpy only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

GOLDEN = Path(__file__).resolve().parent / "golden"


def read_dump(path: Path, dtype: np.dtype) -> np.ndarray:
    if path.suffix == ".npy":
        return np.load(path)
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    return np.array(rows, dtype=np.float64 if dtype.kind == "f" else np.int64)


def check(dump: np.ndarray, golden: Path = GOLDEN) -> list[str]:
    """The mismatches of `dump` `(samples, outputs)` against the golden outputs."""
    facts = json.loads((golden / "golden.json").read_text())
    expected = np.load(golden / "expected.npy")
    litert = np.load(golden / "expected_litert.npy")
    if dump.shape != expected.shape:
        return [f"the dump holds {dump.shape} values; expected {expected.shape} "
                "(samples, outputs)"]
    problems = []
    for i, (got, want, other) in enumerate(zip(dump, expected, litert)):
        if facts["exact"]:
            bad = np.flatnonzero(got.astype(np.int64) != want.astype(np.int64))
            if len(bad):
                problems.append(f"sample {i}: {len(bad)} of {len(want)} outputs differ from "
                                f"the expected ({facts['reference']}), first at {bad[0]}: "
                                f"{got[bad[0]]} != {want[bad[0]]} (LiteRT built-in: "
                                f"{other[bad[0]]})")
        else:
            diff = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))
            if diff > facts["tolerance"]:
                problems.append(f"sample {i}: largest difference {diff:.3g} > tolerance "
                                f"{facts['tolerance']:g}")
    return problems


def main() -> None:
    if len(sys.argv) != 2 or not Path(sys.argv[1]).is_file():
        sys.exit(__doc__.split("\n\n")[1])
    dtype = np.dtype(json.loads((GOLDEN / "golden.json").read_text())["output_dtype"])
    problems = check(read_dump(Path(sys.argv[1]), dtype))
    for line in problems:
        print(line)
    samples = len(np.load(GOLDEN / "expected.npy"))
    print(f"{samples - len(problems)} of {samples} samples match" if not problems or
          not problems[0].startswith("the dump") else "no sample checked")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
