"""Procedurally generated sample images, so that a demo or a test trains without downloading a data set.

Nothing binary is committed: every image is drawn from a seed. The content images are varied synthetic
"photos" (sky-and-ground scenes, shapes on gradients, smooth noise textures, patterned surfaces) so that a
network has something to learn from; the style image is a dense field of colourful brush-stroke-like lines
that follow a smooth flow, a strongly textured target for the Gram-matrix style loss.

They are good for smoke runs and tests only: a real model needs real photos (e.g. COCO) and a real painting.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .atomic import atomic_write

__all__ = ["make_vivid", "vivid_random_adain", "vivid_random_net", "write_sample_content", "write_sample_style"]


def _smooth_noise(rng: np.random.Generator, size: int, *, octaves: int = 4, base: int = 4) -> np.ndarray:
    """Multi-octave value noise in [0, 1], shape (size, size): random grids upsampled bicubically."""
    total = np.zeros((size, size), dtype=np.float32)
    amplitude, norm = 1.0, 0.0
    for octave in range(octaves):
        cells = base * 2**octave
        grid = rng.random((cells, cells), dtype=np.float32)
        layer = Image.fromarray(grid, mode="F").resize((size, size), Image.Resampling.BICUBIC)
        total += amplitude * np.asarray(layer, dtype=np.float32)
        norm += amplitude
        amplitude *= 0.5
    total /= norm
    lo, hi = float(total.min()), float(total.max())
    return (total - lo) / max(hi - lo, 1e-6)


def _random_colour(rng: np.random.Generator, *, vivid: bool = False) -> tuple[int, int, int]:
    hue = rng.random()
    sat = rng.uniform(0.6, 1.0) if vivid else rng.uniform(0.1, 0.8)
    val = rng.uniform(0.6, 1.0) if vivid else rng.uniform(0.2, 0.95)
    i = int(hue * 6) % 6
    f = hue * 6 - int(hue * 6)
    p, q, t = val * (1 - sat), val * (1 - f * sat), val * (1 - (1 - f) * sat)
    r, g, b = [(val, t, p), (q, val, p), (p, val, t), (p, q, val), (t, p, val), (val, p, q)][i]
    return int(r * 255), int(g * 255), int(b * 255)


def _gradient(rng: np.random.Generator, size: int) -> np.ndarray:
    """A linear two-colour gradient in a random direction, float32 (size, size, 3)."""
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    t = (np.cos(angle) * xx + np.sin(angle) * yy)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    a = np.array(_random_colour(rng), dtype=np.float32)
    b = np.array(_random_colour(rng), dtype=np.float32)
    return a * (1 - t[..., None]) + b * t[..., None]


def _scene(rng: np.random.Generator, size: int) -> Image.Image:
    """Sky gradient, a sun, noisy hills and a textured ground: a crude landscape photo."""
    sky_top = np.array(_random_colour(rng), dtype=np.float32)
    sky_bottom = np.array(_random_colour(rng), dtype=np.float32)
    t = np.linspace(0, 1, size, dtype=np.float32)[:, None, None]
    img = np.broadcast_to(sky_top * (1 - t) + sky_bottom * t, (size, size, 3)).copy()
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cx, cy, r = rng.uniform(0.1, 0.9) * size, rng.uniform(0.05, 0.4) * size, rng.uniform(0.05, 0.15) * size
    sun = np.clip(1.5 - np.hypot(xx - cx, yy - cy) / r, 0, 1)[..., None]
    img = img * (1 - sun) + np.array(_random_colour(rng, vivid=True), dtype=np.float32) * sun
    for layer in range(rng.integers(2, 4)):
        ridge = _smooth_noise(rng, size, octaves=3, base=2)[0] * size * 0.35 + size * (0.45 + 0.12 * layer)
        below = (yy >= ridge[None, :])[..., None]
        shade = _smooth_noise(rng, size, octaves=5, base=4)[..., None] * 0.5 + 0.5
        ground = np.array(_random_colour(rng), dtype=np.float32) * shade
        img = np.where(below, ground, img)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def _shapes(rng: np.random.Generator, size: int) -> Image.Image:
    """Filled ellipses, rectangles and polygons with outlines on a gradient, lightly blurred."""
    img = Image.fromarray(np.clip(_gradient(rng, size), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(6, 16))):
        x0, y0 = rng.uniform(-0.1, 0.9, 2) * size
        w, h = rng.uniform(0.08, 0.45, 2) * size
        box = (float(x0), float(y0), float(x0 + w), float(y0 + h))
        fill, outline = _random_colour(rng), _random_colour(rng)
        width = int(rng.integers(0, max(2, size // 64)))
        kind = rng.integers(0, 3)
        if kind == 0:
            draw.ellipse(box, fill=fill, outline=outline, width=width)
        elif kind == 1:
            draw.rectangle(box, fill=fill, outline=outline, width=width)
        else:
            pts = [(float(x), float(y)) for x, y in rng.uniform(0, 1, (int(rng.integers(3, 7)), 2)) * size]
            draw.polygon(pts, fill=fill, outline=outline)
    return img.filter(ImageFilter.GaussianBlur(radius=size / 256))


def _texture(rng: np.random.Generator, size: int) -> Image.Image:
    """Coloured smooth noise (clouds, marble) with fine grain on top."""
    channels = [_smooth_noise(rng, size, octaves=int(rng.integers(3, 7)), base=int(rng.integers(2, 6)))
                for _ in range(3)]
    img = np.stack(channels, axis=-1)
    if rng.random() < 0.5:  # marble veins
        img = 0.5 + 0.5 * np.sin(img * rng.uniform(6, 20))
    palette_lo = np.array(_random_colour(rng), dtype=np.float32)
    palette_hi = np.array(_random_colour(rng, vivid=True), dtype=np.float32)
    img = palette_lo * (1 - img) + palette_hi * img
    img += rng.normal(0, 6, img.shape).astype(np.float32)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def _pattern(rng: np.random.Generator, size: int) -> Image.Image:
    """Rotated stripes or checks with a shading gradient, like a fabric or tiled wall."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    angle = rng.uniform(0, math.pi)
    period = rng.uniform(0.03, 0.15) * size
    u = (np.cos(angle) * xx + np.sin(angle) * yy) / period
    v = (-np.sin(angle) * xx + np.cos(angle) * yy) / period
    mask = (np.floor(u) % 2 == 0) ^ ((np.floor(v) % 2 == 0) & (rng.random() < 0.5))
    a = np.array(_random_colour(rng), dtype=np.float32)
    b = np.array(_random_colour(rng), dtype=np.float32)
    img = np.where(mask[..., None], a, b)
    img = img * (0.6 + 0.4 * _gradient(rng, size) / 255.0)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.6))


_KINDS: tuple[Callable[[np.random.Generator, int], Image.Image], ...] = (_scene, _shapes, _texture, _pattern)


def _save(img: Image.Image, path: Path) -> Path:
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: unknown image extension {path.suffix!r}; use .png or .jpg")
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    with atomic_write(path) as f:
        f.write(buf.getvalue())
    return path


def write_sample_content(directory: str | os.PathLike[str], *, count: int = 8, size: int = 256,
                         seed: int = 0, extension: str = ".jpg") -> list[Path]:
    """Write ``count`` synthetic content images of ``size`` x ``size`` to ``directory`` and return their paths.

    The four kinds (scene, shapes, texture, pattern) alternate; every image has its own random stream, so
    ``count=16`` starts with the same 8 images as ``count=8``.
    """
    if count < 1 or size < 8:
        raise ValueError(f"expected count >= 1 and size >= 8, got count={count}, size={size}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        rng = np.random.default_rng([seed, i])
        img = _KINDS[i % len(_KINDS)](rng, size)
        paths.append(_save(img, directory / f"sample_{i:03d}{extension}"))
    return paths


def write_sample_style(path: str | os.PathLike[str], *, size: int = 256, seed: int = 0) -> Path:
    """Write a colourful brush-stroke texture of ``size`` x ``size`` to ``path`` (format from the suffix)."""
    if size < 8:
        raise ValueError(f"expected size >= 8, got {size}")
    rng = np.random.default_rng([seed, 1_000_003])
    base = _smooth_noise(rng, size, octaves=3, base=3)
    img = Image.fromarray(
        np.clip(np.array(_random_colour(rng), np.float32) * (0.5 + 0.5 * base[..., None]), 0, 255).astype(np.uint8)
    )
    flow = _smooth_noise(rng, size, octaves=2, base=2) * 4 * math.pi  # stroke direction field
    palette = [_random_colour(rng, vivid=True) for _ in range(6)]
    draw = ImageDraw.Draw(img)
    step = max(2.0, size / 64)
    for _ in range(size * size // 90):
        x, y = rng.uniform(0, size, 2)
        colour = np.array(palette[int(rng.integers(len(palette)))], dtype=np.float32)
        colour = tuple(int(c) for c in np.clip(colour + rng.normal(0, 25, 3), 0, 255))
        pts = [(float(x), float(y))]
        for _ in range(int(rng.integers(3, 9))):
            a = flow[int(y) % size, int(x) % size]
            x, y = x + math.cos(a) * step, y + math.sin(a) * step
            pts.append((float(x), float(y)))
        draw.line(pts, fill=colour, width=int(rng.integers(max(2, size // 96), max(3, size // 28))), joint="curve")
    img = img.filter(ImageFilter.UnsharpMask(radius=2, percent=80))
    return _save(img, Path(path))


# ------------------------------------------------------------------------------------------ random test networks
def make_vivid(net: Any, *, generator: Any = None) -> Any:
    """Make a randomly initialised TransformerNet (any family, one style or several) look like a trained one,
    in place, and return it in eval mode.

    Random init leaves every InstanceNorm affine at (1, 0) and the output near 0 (almost every uint8 pixel clamps
    to black), which would let parity, tiling and speed checks pass whatever the code does, and which the
    export's parity gate refuses as degenerate. So every norm parameter (the conditional norms' rows too) gets
    noise of 0.3 and the last convolution is scaled so the output spans 0..255 (mean about 128). Draws from
    ``generator`` (None: torch's global generator). The network is NOT trained: tests and timing only.
    """
    import torch

    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.split(".")[-2].startswith("in"):
                p.add_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * 0.3)
        net.deconv3.conv2d.weight.mul_(180.0)
        net.deconv3.conv2d.bias.mul_(180.0).add_(127.5)
    return net.eval()


def vivid_random_net(seed: int = 0, *, arch: str = "johnson2016", **shape: Any) -> Any:
    """The project's random test network: ``torch.manual_seed(seed)``, the ``arch`` family with ``shape``
    overrides (``channels``, ``res_blocks``, ``styles``), then :func:`make_vivid`. The same seed gives the same
    weights everywhere (the tests' shared network, nst-bench's random network, tools' measurements)."""
    import torch

    from .registry import create_model

    torch.manual_seed(seed)
    return make_vivid(create_model(arch, **shape))


def vivid_random_adain(seed: int = 0) -> Any:
    """The project's random AdaIN network: He-initialised so its activations have a trained VGG's scale (PyTorch's
    default init shrinks them layer by layer, and a random decoder then outputs a flat colour, which the parity
    gate rightly refuses), the last layer set so the output spans 0..255. Random VGG-19: tests and timing only."""
    import warnings

    import torch

    from .adain import AdaINDecoder, AdaINNet
    from .vgg import load_vgg

    g = torch.Generator().manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random-weights warning: this network is random by design
        net = AdaINNet(load_vgg("vgg19", "random", last_layer="relu4_1"), AdaINDecoder()).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu", generator=g)
                m.bias.zero_()
        x, s = torch.rand(2, 3, 64, 64, generator=g) * 255, torch.rand(1, 3, 64, 64, generator=g) * 255
        last = net.decoder.layers[-1]
        raw = net(x, *net.style_stats(s))
        mean, std = raw.mean(dim=(0, 2, 3)), raw.std(dim=(0, 2, 3))
        last.weight.mul_((60.0 / std).view(-1, 1, 1, 1))
        last.bias.copy_(127.5 - mean * 60.0 / std)
    return net
