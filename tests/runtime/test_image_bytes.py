"""Bytes in, bytes out (issue 15 item 7): ``read_image`` takes encoded bytes and binary file objects with the same
decoders, limits and errors as files; ``Stylizer.stylize_bytes`` returns what ``nst-stylize`` would write."""

from __future__ import annotations

import io

import numpy as np
import pytest
from nst_runtime import ImageError, UsageError, read_image, save_image
from nst_runtime.errors import ImageTooLargeError
from nst_runtime.images import encode_image
from PIL import Image


def _encoded(arr: np.ndarray, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **params)
    return buf.getvalue()


class _Unseekable(io.RawIOBase):
    """A stream like a socket or pipe: read() only."""

    def __init__(self, data: bytes) -> None:
        self._inner = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readinto(self, b) -> int:
        chunk = self._inner.read(len(b))
        b[: len(chunk)] = chunk
        return len(chunk)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_bytes_and_file_objects_decode_like_the_file(tmp_path, make_image, fmt):
    data = _encoded(make_image(40, 56, seed=3), fmt)
    path = tmp_path / f"x.{fmt.lower()}"
    path.write_bytes(data)
    expected = np.asarray(read_image(path).frames[0])
    with open(path, "rb") as handle:
        sources = [data, bytearray(data), memoryview(data), io.BytesIO(data), _Unseekable(data), handle]
        for source in sources:
            got = read_image(source)
            assert got.format == fmt
            np.testing.assert_array_equal(np.asarray(got.frames[0]), expected)


def test_bytes_keep_exif_orientation(make_image):
    arr = make_image(20, 30, seed=1)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", exif=exif.tobytes())
    assert read_image(buf.getvalue()).frames[0].size == (20, 30)


def test_bytes_errors_are_the_file_errors_with_a_name(make_image):
    with pytest.raises(ImageError, match="image data: the file is empty"):
        read_image(b"")
    with pytest.raises(ImageError, match=r"upload\.png: not an image in an accepted format"):
        read_image(b"\x89PNG\r\n garbage", name="upload.png")
    png = _encoded(make_image(64, 64), "PNG")
    with pytest.raises(ImageError, match="corrupt or truncated"):
        read_image(png[: len(png) // 2])
    with pytest.raises(ImageTooLargeError, match="64x64 = 4096 pixels, more than the limit of 4000") as info:
        read_image(png, max_pixels=4000)
    assert isinstance(info.value, ImageError) and info.value.exit_code == 4
    with pytest.raises(UsageError, match="expected an image file path, bytes or a binary file object"):
        read_image(12345)  # type: ignore[arg-type]


def test_the_too_large_error_is_its_own_kind_for_files_too(tmp_path, make_image):
    path = tmp_path / "big.png"
    Image.fromarray(make_image(64, 64)).save(path)
    with pytest.raises(ImageTooLargeError, match=r"big\.png: 64x64"):
        read_image(path, max_pixels=100)
    Image.fromarray(make_image(8, 8)).save(tmp_path / "small.png")
    read_image(tmp_path / "small.png", max_pixels=100)  # under the limit: no error


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_encode_image_is_what_save_image_writes(tmp_path, make_image, fmt):
    img = Image.fromarray(make_image(33, 47, seed=2))
    path = save_image(img, tmp_path / "out.bin", format=fmt, quality=80)
    assert encode_image(img, format=fmt, quality=80) == path.read_bytes()


def test_stylize_bytes_matches_stylize_on_the_decoded_file(stylizer, tmp_path, make_image):
    arr = make_image(48, 64, seed=5)
    data = _encoded(arr, "PNG")
    out = stylizer.stylize_bytes(data)
    assert out[:8] == b"\x89PNG\r\n\x1a\n"  # PNG in, PNG out by default
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(out))), stylizer.stylize(arr))
    # the result is the file nst-stylize's writer makes from the same stylized pixels
    expected = save_image(Image.fromarray(stylizer.stylize(arr)), tmp_path / "ref.png").read_bytes()
    assert out == expected


def test_stylize_bytes_formats_quality_and_alpha(stylizer, make_image):
    arr = make_image(40, 40, seed=6)
    jpeg_in = _encoded(arr, "JPEG", quality=95)
    assert Image.open(io.BytesIO(stylizer.stylize_bytes(jpeg_in))).format == "JPEG"  # the input's format
    webp = stylizer.stylize_bytes(jpeg_in, format="webp", quality=50)
    assert Image.open(io.BytesIO(webp)).format == "WEBP"
    low = stylizer.stylize_bytes(jpeg_in, format="jpeg", quality=10)
    high = stylizer.stylize_bytes(jpeg_in, format="jpeg", quality=95)
    assert len(low) < len(high)
    rgba = np.dstack([arr, np.linspace(0, 255, 40 * 40).reshape(40, 40).astype(np.uint8)])
    out = Image.open(io.BytesIO(stylizer.stylize_bytes(_encoded(rgba, "PNG"), format="png")))
    assert out.mode == "RGBA"
    np.testing.assert_array_equal(np.asarray(out)[..., 3], rgba[..., 3])


def test_stylize_bytes_stylizes_every_frame_of_an_animation(stylizer, make_image):
    frames = [Image.fromarray(make_image(32, 32, seed=s)) for s in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, format="PNG", save_all=True, append_images=frames[1:], duration=[40, 50, 60], loop=0)
    out = Image.open(io.BytesIO(stylizer.stylize_bytes(buf.getvalue())))
    assert out.format == "PNG" and out.n_frames == 3
    for i in range(3):
        out.seek(i)
        np.testing.assert_array_equal(np.asarray(out.convert("RGB")), stylizer.stylize(np.asarray(frames[i])))


def test_stylize_bytes_refuses_like_the_cli(stylizer, make_image):
    data = _encoded(make_image(32, 32), "PNG")
    with pytest.raises(ImageError, match="not an image"):
        stylizer.stylize_bytes(b"GIF89a not really")
    with pytest.raises(ImageTooLargeError):
        stylizer.stylize_bytes(data, max_pixels=100)
    with pytest.raises(UsageError, match="quality 101"):
        stylizer.stylize_bytes(data, quality=101)
    with pytest.raises(UsageError, match="'heic'"):
        stylizer.stylize_bytes(data, format="heic")
