"""Images as they come: every mode, EXIF orientation, decoder restriction, bomb limit, atomic saving."""

from __future__ import annotations

import numpy as np
import pytest
from nst_runtime import ImageError, read_image, save_image
from nst_runtime.images import pil_to_planes
from PIL import Image


@pytest.fixture(scope="module")
def rgb(make_image):
    return make_image(20, 28, seed=7)


def test_rgba_keeps_alpha_and_stylizes_rgb(stylizer, rgb):
    alpha = np.random.default_rng(1).integers(0, 256, rgb.shape[:2], np.uint8)
    out = stylizer.stylize(Image.fromarray(np.dstack([rgb, alpha]), "RGBA"))
    assert out.mode == "RGBA"
    np.testing.assert_array_equal(np.asarray(out)[..., 3], alpha)
    np.testing.assert_array_equal(np.asarray(out)[..., :3], stylizer.stylize(rgb))


@pytest.mark.parametrize("mode", ["L", "1"])
def test_gray_modes_become_rgb(stylizer, rgb, mode):
    img = Image.fromarray(rgb).convert(mode)
    out = stylizer.stylize(img)
    gray = np.asarray(img.convert("L"))
    assert out.mode == "RGB" and out.size == img.size
    np.testing.assert_array_equal(np.asarray(out), stylizer.stylize(np.dstack([gray] * 3)))


def test_la_keeps_alpha(stylizer, rgb):
    img = Image.fromarray(rgb).convert("LA")
    out = stylizer.stylize(img)
    assert out.mode == "RGBA"
    np.testing.assert_array_equal(np.asarray(out)[..., 3], np.asarray(img)[..., 1])


def test_16bit_is_scaled_not_clipped(stylizer, rgb, tmp_path):
    gray8 = np.asarray(Image.fromarray(rgb).convert("L"))
    gray16 = gray8.astype(np.uint16) * 257  # 255 -> 65535: clipping would make every pixel 255
    path = tmp_path / "g16.png"
    Image.fromarray(gray16).save(path)
    img = read_image(path).frames[0]
    assert img.mode.startswith("I")
    planes, _ = pil_to_planes(img)
    np.testing.assert_array_equal(planes[..., 0], gray8)
    np.testing.assert_array_equal(np.asarray(stylizer.stylize(img)), stylizer.stylize(np.dstack([gray8] * 3)))


def test_palette_with_transparency_gets_alpha(stylizer, rgb, tmp_path):
    pal = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    index = np.asarray(pal)[0, 0]
    pal.info["transparency"] = int(index)
    out = stylizer.stylize(pal)
    assert out.mode == "RGBA"
    alpha = np.asarray(out)[..., 3]
    np.testing.assert_array_equal(alpha == 0, np.asarray(pal) == index)
    plain = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    assert stylizer.stylize(plain).mode == "RGB"


def test_cmyk_is_converted(stylizer, rgb):
    cmyk = Image.fromarray(rgb).convert("CMYK")
    out = stylizer.stylize(cmyk)
    assert out.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(out), stylizer.stylize(np.asarray(cmyk.convert("RGB"))))


def test_exif_orientation_is_applied(rgb, tmp_path):
    path = tmp_path / "rot.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    Image.fromarray(rgb).save(path, exif=exif, quality=95)
    img = read_image(path).frames[0]
    assert img.size == (rgb.shape[0], rgb.shape[1])  # width and height swapped


def test_formats_outside_the_list_are_refused(rgb, tmp_path):
    path = tmp_path / "x.png"  # a TGA in disguise: the suffix does not matter, the decoder list does
    Image.fromarray(rgb).save(path, format="TGA")
    with pytest.raises(ImageError, match="not an image in an accepted format"):
        read_image(path)
    assert read_image(path, formats=["TGA"]).frames[0].size == (28, 20)


def test_decompression_bomb_limit_is_checked_before_decoding(rgb, tmp_path):
    path = tmp_path / "big.png"
    Image.fromarray(rgb).save(path)
    with pytest.raises(ImageError, match="more than the limit of 100"):
        read_image(path, max_pixels=100)
    assert read_image(path, max_pixels=rgb.shape[0] * rgb.shape[1]).frames[0].size == (28, 20)


def test_truncated_file_is_an_image_error(rgb, tmp_path):
    path = tmp_path / "t.jpg"
    Image.fromarray(rgb).save(path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ImageError, match=r"t\.jpg"):
        read_image(path)


def test_animated_gif_keeps_every_frame_and_timing(stylizer, make_image, tmp_path):
    frames = [Image.fromarray(make_image(16, 16, seed=i)) for i in range(3)]
    src = tmp_path / "a.gif"
    frames[0].save(src, save_all=True, append_images=frames[1:], duration=[50, 80, 120], loop=0)
    dec = read_image(src, all_frames=True)
    assert len(dec.frames) == 3 and dec.durations == (50, 80, 120)
    out = [stylizer.stylize(f) for f in dec.frames]
    dst = save_image(out, tmp_path / "o.gif", durations=dec.durations, loop=dec.loop)
    again = read_image(dst, all_frames=True)
    assert len(again.frames) == 3 and again.durations == (50, 80, 120)
    assert read_image(src).frames[0].size == (16, 16)  # without all_frames: the first frame


def test_save_is_atomic_and_leaves_no_temp_files(rgb, tmp_path):
    save_image(Image.fromarray(rgb), tmp_path / "ok.png")
    with pytest.raises(KeyError):
        save_image(Image.fromarray(rgb), tmp_path / "bad.png", format="NOSUCHFORMAT")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.png"]
