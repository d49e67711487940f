"""Regenerate tests/export/data/trt_names_<VERSION>.txt: the identifiers in TensorRT's Python bindings.

No GPU and no TensorRT install is needed: ``pip download`` fetches the bindings wheel
(``tensorrt-cu<CUDA>-bindings==<VERSION>``), the compiled module inside it is scanned for printable strings
(what ``strings -n 3`` does), and every string that is a whole Python identifier is kept. pybind11 registers
each class, method, property and enum member under its name as such a string, so the set contains every
attribute name of the ``tensorrt`` module and its objects (plus harmless extras: C++ symbol fragments,
docstring-free words). Docstrings are skipped (they mention removed names such as ``BuilderFlag.FP16``).

The linker merges a string that is the tail of another (``Builder`` is stored inside ``IExprBuilder``), so
the test treats a name as present when it is a suffix of a stored identifier; see tests/export/test_trt_api.py.

    python tools/trt_names.py 10.16.1.11 12
    python tools/trt_names.py 11.4.0.106 13

The same wheels are what ../shared/tools/trt-api-reference dumps in full.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

IDENT = re.compile(rb"[A-Za-z_][A-Za-z0-9_]*")
PRINTABLE = re.compile(rb"[\x20-\x7e]{3,}")
DEST = Path(__file__).resolve().parent.parent / "tests" / "export" / "data"


def identifiers(blob: bytes) -> set[str]:
    """Printable NUL-separated runs of at least 3 bytes that are whole identifiers (no C++ mangled names)."""
    names = set()
    for run in PRINTABLE.findall(blob):
        if IDENT.fullmatch(run) and not run.startswith(b"_Z"):
            names.add(run.decode("ascii"))
    return names


def download_bindings(version: str, cuda: str, into: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
           "--python-version", "3.12", "--platform", "manylinux_2_28_x86_64", "--platform",
           "manylinux_2_17_x86_64", "-d", str(into), f"tensorrt-cu{cuda}-bindings=={version}"]
    subprocess.run(cmd, check=True)
    wheels = sorted(into.glob("*.whl"))
    if not wheels:
        raise SystemExit(f"no bindings wheel for TensorRT {version} (CUDA {cuda})")
    return wheels[0]


def names_from_wheel(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as zf:
        modules = [n for n in zf.namelist() if re.search(r"/tensorrt[^/]*\.so$", n)]
        if not modules:
            raise SystemExit(f"{wheel.name}: no tensorrt*.so inside")
        return identifiers(zf.read(modules[0]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("version", help="TensorRT version, e.g. 11.4.0.106")
    p.add_argument("cuda", help="CUDA major version of the wheel, e.g. 13")
    p.add_argument("--wheel", type=Path, help="use this bindings wheel instead of downloading it")
    p.add_argument("--dest", type=Path, default=DEST)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel or download_bindings(args.version, args.cuda, Path(tmp))
        names = names_from_wheel(wheel)
    args.dest.mkdir(parents=True, exist_ok=True)
    out = args.dest / f"trt_names_{args.version}.txt"
    header = (f"# identifiers in the tensorrt Python bindings {args.version} (tensorrt-cu{args.cuda}-bindings), "
              "one per line; made by tools/trt_names.py\n")
    out.write_text(header + "\n".join(sorted(names)) + "\n")
    print(f"{out}: {len(names)} names")
    return 0


if __name__ == "__main__":
    sys.exit(main())
