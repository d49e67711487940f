"""What the fuzz harnesses share: atheris when installed, hypothesis-driven byte fuzzing otherwise."""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def atheris_or_none():
    try:
        import atheris
    except ImportError:
        return None
    return atheris


def seconds_arg(argv: list[str], default: float) -> float:
    return float(argv[argv.index("--seconds") + 1]) if "--seconds" in argv else default


def atheris_main(atheris, check: Callable[[bytes], None], seeds: list[bytes], argv: list[str]) -> int:
    """libFuzzer over ``check``; the seeds go into a corpus folder unless the caller names its own."""
    args = [a for a in argv if not a.startswith("--")]
    if not any(Path(a).is_dir() for a in args[1:]):
        corpus = Path(tempfile.mkdtemp(prefix="nst-corpus-"))
        for i, seed in enumerate(seeds):
            (corpus / f"seed{i}").write_bytes(seed)
        args.append(str(corpus))
    atheris.Setup(args, check)
    atheris.Fuzz()
    return 0


def hypothesis_fuzz(check: Callable[[bytes], None], seeds: list[bytes], *, seconds: float) -> int:
    """Feed ``check`` mutated seeds (bit flips, byte overwrites, truncations, splices, random bytes) until
    ``seconds`` have passed. Exceptions propagate (with the failing input shrunk by hypothesis)."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    deadline = time.monotonic() + seconds

    @st.composite
    def mutated(draw) -> bytes:
        if draw(st.integers(0, 9)) == 0:
            return draw(st.binary(max_size=512))
        data = bytearray(draw(st.sampled_from(seeds)))
        for _ in range(draw(st.integers(1, 8))):
            op = draw(st.integers(0, 3))
            if not data:
                break
            pos = draw(st.integers(0, len(data) - 1))
            if op == 0:
                data[pos] ^= 1 << draw(st.integers(0, 7))
            elif op == 1:
                data[pos:pos + 4] = draw(st.binary(min_size=1, max_size=4))
            elif op == 2:
                del data[pos:]
                data = data or bytearray(b"\0")
            else:
                other = draw(st.sampled_from(seeds))
                data[pos:] = other[draw(st.integers(0, max(0, len(other) - 1))):]
        return bytes(data)

    runs = [0]

    @settings(max_examples=100, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(mutated())
    def fuzz(data: bytes) -> None:
        runs[0] += 1
        check(data)

    started = time.monotonic()
    try:
        while time.monotonic() < deadline:  # batches of 100 fresh examples until the time is up
            fuzz()
    finally:
        print(f"hypothesis byte fuzzing: {runs[0]} inputs in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return 0
