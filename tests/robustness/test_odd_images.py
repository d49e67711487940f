"""Images as they come: every mode, size and orientation gives a correct, same-size, upright output."""

from __future__ import annotations

import io

import numpy as np
import pytest
from nst_runtime.images import read_image
from PIL import Image


def _roundtrip(img: Image.Image, fmt: str, **params) -> io.BytesIO:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **params)
    buf.seek(0)
    return buf


@pytest.mark.parametrize("size", [(1, 1), (1, 7), (7, 1), (3, 5), (9, 13), (33, 17)])
def test_any_size_same_size_out(stylizer, make_image, size):
    h, w = size
    rgb = make_image(h, w)
    out = stylizer.stylize(rgb)
    assert out.shape == (h, w, 3) and out.dtype == np.uint8
    pil = stylizer.stylize(Image.fromarray(rgb))
    assert pil.size == (w, h) and np.array_equal(np.asarray(pil), out)


def test_16bit_gray_is_scaled_not_clipped(stylizer, tmp_path):
    """I;16 PNG: 0..65535 maps onto 0..255 (Pillow's own convert would clip everything above 255 to white)."""
    ramp = (np.linspace(0, 65535, 24 * 16).reshape(24, 16)).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    frame = read_image(tmp_path / "g16.png").frames[0]
    assert frame.mode.startswith("I")
    out = stylizer.stylize(frame)
    expected = stylizer.stylize(np.repeat(((ramp.astype(np.int64) * 255 + 32767) // 65535).astype(np.uint8)[..., None],
                                          3, axis=2))
    assert out.size == (16, 24) and np.array_equal(np.asarray(out), expected)


def test_16bit_rgb_png(stylizer, tmp_path, make_image):
    """48-bit RGB PNG (Pillow reads it as 8-bit RGB); if this Pillow can write one, the output matches the
    8-bit image it stands for."""
    rgb8 = make_image(12, 20)
    rgb16 = rgb8.astype(np.uint16) * 257
    path = tmp_path / "rgb48.png"
    try:
        Image.fromarray(rgb16, "RGB;16").save(path)  # not every Pillow can build this mode
    except (ValueError, TypeError, KeyError, OSError):
        _write_png48(path, rgb16)
    frame = read_image(path).frames[0]
    out = np.asarray(stylizer.stylize(frame))
    assert out.shape == (12, 20, 3)
    assert np.array_equal(out, stylizer.stylize(rgb8))


def _write_png48(path, rgb16: np.ndarray) -> None:
    import struct
    import zlib

    h, w, _ = rgb16.shape
    raw = b"".join(b"\0" + rgb16[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_cmyk_jpeg(stylizer, tmp_path, make_image):
    rgb = make_image(16, 24)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    frame = read_image(tmp_path / "c.jpg").frames[0]
    assert frame.mode == "CMYK"
    out = stylizer.stylize(frame)
    assert out.mode == "RGB" and out.size == (24, 16)
    assert np.array_equal(np.asarray(out), np.asarray(stylizer.stylize(frame.convert("RGB"))))


def test_palette_with_transparency_keeps_alpha(stylizer, tmp_path):
    img = Image.new("P", (10, 6), 0)
    img.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    img.paste(1, (0, 0, 5, 6))
    img.info["transparency"] = 0
    img.save(tmp_path / "p.png", transparency=0)
    out = stylizer.stylize(read_image(tmp_path / "p.png").frames[0])
    alpha = np.asarray(out)[..., 3]
    assert out.mode == "RGBA" and out.size == (10, 6)
    assert (alpha[:, :5] == 255).all() and (alpha[:, 5:] == 0).all()


def test_gray_with_alpha(stylizer, make_image):
    gray = make_image(9, 11)[..., 0]
    alpha = np.tile(np.arange(11, dtype=np.uint8) * 20, (9, 1))
    out = stylizer.stylize(Image.fromarray(np.stack([gray, alpha], -1), "LA"))
    assert out.mode == "RGBA" and out.size == (11, 9)
    assert np.array_equal(np.asarray(out)[..., 3], alpha)
    assert np.array_equal(np.asarray(out)[..., :3], stylizer.stylize(np.repeat(gray[..., None], 3, axis=2)))


# EXIF orientation n: how the stored pixels must be transformed to display upright
_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
            5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}


@pytest.mark.parametrize("orientation", range(2, 9))
def test_exif_orientation_output_is_upright(stylizer, vivid_onnx, make_image, tmp_path, orientation):
    """An asymmetric image stored sideways with an EXIF tag: the CLI's output equals stylizing the image
    transposed by hand (what a viewer shows), and is upright-sized."""
    from nst_runtime.cli import main

    stored = Image.fromarray(make_image(12, 20))  # 20 wide, 12 high as stored
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(tmp_path / "o.png", exif=exif.tobytes())
    upright = stored.transpose(_UPRIGHT[orientation])
    assert main([str(vivid_onnx), str(tmp_path / "o.png"), "-o", str(tmp_path / "out.png"), "--device", "cpu",
                 "-q"]) == 0
    got = Image.open(tmp_path / "out.png")
    assert got.size == upright.size
    assert np.array_equal(np.asarray(got), np.asarray(stylizer.stylize(upright)))


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animation_every_frame_stylized_with_timing(stylizer, vivid_onnx, make_image, tmp_path, fmt):
    """docs/runtime.md: the CLI stylizes every frame and writes an animation of the same format, frame
    durations and loop count."""
    from nst_runtime.cli import main

    frames = [Image.fromarray(make_image(10, 14, seed=i)) for i in range(3)]
    src = tmp_path / f"a.{fmt.lower()}"
    params = {"lossless": True} if fmt == "WEBP" else {}
    frames[0].save(src, format=fmt, save_all=True, append_images=frames[1:], duration=[40, 80, 120], loop=2,
                   **params)
    assert main([str(vivid_onnx), str(src), "-o", str(tmp_path / "out"), "--device", "cpu", "-q"]) == 0
    out = Image.open(tmp_path / "out" / src.name)
    assert out.format == fmt and out.n_frames == 3 and out.size == (14, 10)
    assert out.info.get("loop") == 2
    decoded = read_image(src, all_frames=True)
    expected = [np.asarray(stylizer.stylize(f).convert("RGB")).astype(int) for f in decoded.frames]
    durations = []
    for i in range(3):
        out.seek(i)
        out.load()  # WebP reports a frame's duration once it is decoded
        durations.append(out.info.get("duration"))
        got = np.asarray(out.convert("RGB")).astype(int)
        # lossy (WebP q95, GIF palette) on a tiny noisy image: frame i is nearest to stylized input frame i
        dist = [np.abs(got - e).mean() for e in expected]
        assert int(np.argmin(dist)) == i, dist
    assert durations == [40, 80, 120]


def test_read_image_first_frame_only_by_default(make_image, tmp_path):
    frames = [Image.fromarray(make_image(6, 6, seed=i)) for i in range(4)]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    assert len(read_image(tmp_path / "a.gif").frames) == 1
    assert len(read_image(tmp_path / "a.gif", all_frames=True).frames) == 4
