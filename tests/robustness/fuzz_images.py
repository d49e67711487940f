"""Fuzz harness for the image loader (``nst_runtime.images.read_image`` + ``pil_to_planes``).

Any exception other than nst's own :class:`~nst_runtime.errors.NstError` is a finding.

    python tests/robustness/fuzz_images.py -max_total_time=600            # atheris (libFuzzer), 10 minutes
    python tests/robustness/fuzz_images.py -runs=100000 corpus_dir/       # keep a corpus between runs

Without atheris installed, the same entry point runs hypothesis-driven byte fuzzing (mutations of the seed
files) for ``--seconds`` (default 60). ``tests/robustness/test_fuzz_harnesses.py`` runs both briefly in CI.
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
from pathlib import Path

#: the loader refuses anything larger; small enough that each input decodes in milliseconds
FUZZ_MAX_PIXELS = 1 << 18
_SUFFIXES = (".png", ".jpg", ".gif", ".webp", ".bmp", ".tif", ".ppm")
_DIR = Path(tempfile.mkdtemp(prefix="nst-fuzz-img-"))


def seeds() -> list[bytes]:
    """Small valid files of every accepted format (and a few variations) to start mutating from."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (9, 7, 3), dtype=np.uint8))
    out = []
    for fmt, img, params in (("PNG", rgb, {}), ("PNG", rgb.convert("LA"), {}), ("PNG", rgb.convert("P"),
                             {"transparency": 0}), ("JPEG", rgb, {}), ("JPEG", rgb.convert("CMYK"), {}),
                             ("BMP", rgb, {}), ("TIFF", rgb, {}), ("PPM", rgb, {}), ("WEBP", rgb, {"lossless": True}),
                             ("PNG", Image.fromarray(rng.integers(0, 65535, (5, 4), dtype=np.uint16)), {})):
        buf = io.BytesIO()
        img.save(buf, format=fmt, **params)
        out.append(buf.getvalue())
    for fmt in ("GIF", "WEBP", "PNG"):
        buf = io.BytesIO()
        frames = [rgb, rgb.rotate(90, expand=False)]
        frames[0].save(buf, format=fmt, save_all=True, append_images=frames[1:], duration=[30, 60])
        out.append(buf.getvalue())
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    rgb.save(buf, format="JPEG", exif=exif.tobytes())
    out.append(buf.getvalue())
    return out


def check(data: bytes) -> None:
    """One input: decode it as a file; NstError is the expected way to fail, anything else propagates."""
    import numpy as np
    from nst_runtime.errors import NstError
    from nst_runtime.images import pil_to_planes, read_image

    suffix = _SUFFIXES[data[0] % len(_SUFFIXES)] if data else ".png"
    path = _DIR / f"input{suffix}"
    path.write_bytes(data[1:])
    try:
        decoded = read_image(path, max_pixels=FUZZ_MAX_PIXELS, all_frames=True)
        for frame in decoded.frames:
            rgb, alpha = pil_to_planes(frame)
            assert rgb.shape[:2] == (frame.size[1], frame.size[0]) and rgb.dtype == np.uint8
            assert alpha is None or alpha.shape == rgb.shape[:2]
    except NstError:
        pass


def run_hypothesis(seconds: float) -> int:
    """Byte fuzzing without atheris: hypothesis mutates the seeds (flips, truncations, splices)."""
    from fuzz_common import hypothesis_fuzz

    return hypothesis_fuzz(check, seeds(), seconds=seconds)


def main(argv: list[str]) -> int:
    from fuzz_common import atheris_main, atheris_or_none, seconds_arg

    atheris = atheris_or_none()
    if atheris is None or "--hypothesis" in argv:
        return run_hypothesis(seconds_arg(argv, 60.0))
    if "PIL" in sys.modules:  # instrumentation only reaches modules imported inside the block
        print("fuzz_images: PIL was imported before instrumentation; coverage will be partial", file=sys.stderr)
    with atheris.instrument_imports(include=["nst_runtime", "PIL"]):
        import nst_runtime.images  # noqa: F401
        import PIL.Image  # noqa: F401
        from PIL import (  # noqa: F401  the plugins are imported lazily on first open otherwise
            BmpImagePlugin,
            GifImagePlugin,
            JpegImagePlugin,
            PngImagePlugin,
            PpmImagePlugin,
            TiffImagePlugin,
            WebPImagePlugin,
        )
    return atheris_main(atheris, check, seeds(), argv)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    sys.exit(main(sys.argv))
