"""The recipes reproduce their references (issue 14).

Each recipe's objective is checked against an implementation written here from the papers' and the reference
codes' formulas (not from nst's code), in float64: VGG forward pass from the raw convolution weights with the
weights' own preprocessing, feature MSE, Gram matrices normalised by C*H*W, their MSE, and the two total
variation forms. The pytorch-examples data pipeline is checked pixel for pixel against an independent
implementation of what torchvision's ``Resize`` does on PIL images (Pillow's antialiased bilinear filter in
fixed point, written out in numpy) and ``CenterCrop``. The VGG loss networks are RANDOMLY INITIALISED (no
ImageNet weights here): the formulas are exact, stylization quality is not judged.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

# ------------------------------------------------------------------ independent reference implementations

VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M"]
VGG19 = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512]
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # torchvision's ImageNet statistics, RGB
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)  # jcjohnson/pytorch-vgg README


def ref_features(img: torch.Tensor, convs: list[tuple[torch.Tensor, torch.Tensor]], cfg: list,
                 preprocessing: str) -> dict[str, torch.Tensor]:
    """Every reluB_K output of a VGG given as a list of (weight, bias), float64, from RGB [0, 255]."""
    x = img.double()
    if preprocessing == "caffe":  # BGR, [0, 255], minus the mean pixel, no std
        x = torch.stack([x[:, 2], x[:, 1], x[:, 0]], 1) - torch.tensor(CAFFE_BGR_MEAN).double().view(1, 3, 1, 1)
    else:  # RGB in [0, 1], standardised per channel
        mean, std = (torch.tensor(v).double().view(1, 3, 1, 1) for v in IMAGENET)
        x = (x / 255 - mean) / std
    out, block, k, c = {}, 1, 0, 0
    for v in cfg:
        if v == "M":
            x = F.max_pool2d(x, 2)
            block, k = block + 1, 0
            continue
        w, b = convs[c]
        c, k = c + 1, k + 1
        x = F.relu(F.conv2d(x, w.double(), b.double(), padding=1))
        out[f"relu{block}_{k}"] = x
    return out


def ref_gram(f: torch.Tensor) -> torch.Tensor:
    n, c, h, w = f.shape
    flat = f.reshape(n, c, h * w)
    return flat @ flat.transpose(1, 2) / (c * h * w)


def ref_objective(y, x, style, convs, cfg, preprocessing, *, content_layer, style_layers, wc, ws, wtv, tv_form):
    """Johnson et al. / Gatys et al.: wc * MSE(phi(y), phi(x)) + ws * sum_l MSE(G_l(y), G_l(s)) + wtv * TV(y)."""
    fy = ref_features(y, convs, cfg, preprocessing)
    fx = ref_features(x, convs, cfg, preprocessing)
    fs = ref_features(style, convs, cfg, preprocessing)
    a, b = fy[content_layer], fx[content_layer]
    content = wc * ((a - b) ** 2).sum() / a.numel()
    style_term = torch.zeros((), dtype=torch.float64)
    for layer in style_layers:
        gy, gs = ref_gram(fy[layer]), ref_gram(fs[layer])
        style_term = style_term + ((gy - gs) ** 2).sum() / gy.numel()  # gs broadcasts over the batch
    style_term = ws * style_term
    yd = y.double()
    if tv_form == "half-sum-sq":  # Torch7 TotalVariation/TVLoss: the (H-1)x(W-1) corner, summed over the batch
        dx = yd[..., :-1, :-1] - yd[..., :-1, 1:]
        dy = yd[..., :-1, :-1] - yd[..., 1:, :-1]
        tv = 0.5 * ((dx ** 2).sum() + (dy ** 2).sum())
    else:
        tv = (yd[..., 1:, :] - yd[..., :-1, :]).abs().mean() + (yd[..., :, 1:] - yd[..., :, :-1]).abs().mean()
    return content, style_term, wtv * tv


def _convs(vgg) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(m.weight.detach(), m.bias.detach()) for m in vgg.features if isinstance(m, torch.nn.Conv2d)]


# Pillow's antialiased resampling (libImaging/Resample.c), in numpy: what torchvision's Resize does on PIL images.
PRECISION_BITS = 32 - 8 - 2


def _coefficients(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(first source index, fixed-point weights) per output pixel of the bilinear (triangle) filter."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 1.0 * filterscale
    ksize = math.ceil(support) * 2 + 1
    starts = np.zeros(out_size, dtype=np.int64)
    weights = np.zeros((out_size, ksize), dtype=np.int64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size) - xmin
        ss = 1.0 / filterscale
        w = [max(0.0, 1.0 - abs((x + xmin - center + 0.5) * ss)) for x in range(xmax)]
        total = 0.0
        for v in w:  # summed in order, as the C loop does
            total += v
        w = np.array([v / total for v in w]) if total != 0.0 else np.array(w)
        fixed = np.where(w < 0, -0.5 + w * (1 << PRECISION_BITS), 0.5 + w * (1 << PRECISION_BITS))
        weights[xx, :xmax] = fixed.astype(np.int64)  # C's (int) cast truncates towards zero
        starts[xx] = xmin
    return starts, weights


def _resample_axis(img: np.ndarray, out_size: int, axis: int) -> np.ndarray:
    src = np.moveaxis(img.astype(np.int64), axis, 0)
    starts, weights = _coefficients(src.shape[0], out_size)
    out = np.empty((out_size, *src.shape[1:]), dtype=np.uint8)
    for i in range(out_size):
        acc = np.full(src.shape[1:], 1 << (PRECISION_BITS - 1), dtype=np.int64)
        for k in range(weights.shape[1]):
            if weights[i, k] and starts[i] + k < src.shape[0]:
                acc += src[starts[i] + k] * weights[i, k]
        out[i] = np.clip(acc >> PRECISION_BITS, 0, 255)
    return np.moveaxis(out, 0, axis)


def pil_bilinear(img: np.ndarray, width: int, height: int) -> list[np.ndarray]:
    """HxWx3 uint8 resized as Pillow's BILINEAR does: one pass per axis that changes, each rounding to uint8.

    Where both axes change, Pillow runs them in an order of its own choosing (horizontal first in its C code
    up to 12.x; the Pillow here also runs vertical first in some cases): both candidates are returned."""
    if width == img.shape[1]:
        return [_resample_axis(img, height, axis=0)]
    if height == img.shape[0]:
        return [_resample_axis(img, width, axis=1)]
    return [_resample_axis(_resample_axis(img, width, axis=1), height, axis=0),
            _resample_axis(_resample_axis(img, height, axis=0), width, axis=1)]


def torchvision_center_crop_uint8(img: np.ndarray, size: int) -> list[np.ndarray]:
    """Resize(size) then CenterCrop(size) of torchvision on a PIL image, done without PIL or torchvision (one
    candidate per order of the resize's two passes, see :func:`pil_bilinear`)."""
    h, w = img.shape[:2]
    if w <= h:
        new_w, new_h = size, size * h // w  # int(size * long / short)
    else:
        new_w, new_h = size * w // h, size
    resized = [img] if (new_w, new_h) == (w, h) else pil_bilinear(img, new_w, new_h)

    def offset(extra: int) -> int:  # int(round(extra / 2)) with Python's round: halves to even
        half, odd = divmod(extra, 2)
        return half + (1 if odd and half % 2 == 1 else 0)

    top, left = offset(new_h - size), offset(new_w - size)
    return [r[top:top + size, left:left + size] for r in resized]


def to_tensor_times_255(img: np.ndarray) -> torch.Tensor:
    """transforms.ToTensor() then mul(255): float32 / 255, then * 255 (float32 rounding both times)."""
    f = img.astype(np.float32) / np.float32(255)
    return torch.from_numpy((f * np.float32(255)).astype(np.float32)).permute(2, 0, 1)


# ------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, np.ndarray]:
    """Natural photos (scikit-image) at awkward sizes: wider, taller, odd, smaller than the crop."""
    from skimage import data

    astro, coffee, cat = data.astronaut(), data.coffee(), data.chelsea()
    return {"a_wide.png": coffee[::3, ::3], "b_tall.png": astro[:301, 100:297:2],
            "c_odd.png": cat[:237, :341], "d_small.png": astro[::12, ::12], "e_square.png": cat[:100, :100],
            # shorter side already the crop size: a one-pass resize
            "f_short32.png": astro[:32, 40:141], "g_short96.png": cat[50:146, :171]}


@pytest.fixture(scope="module")
def folder(tmp_path_factory, photos) -> Path:
    root = tmp_path_factory.mktemp("imagefolder")
    (root / "photos").mkdir()
    for name, arr in photos.items():
        Image.fromarray(np.ascontiguousarray(arr)).save(root / "photos" / name)
    return root


# ------------------------------------------------------------------ objectives

PAPER_VALUES = {
    # name: (preprocessing, content layer, style layers, content w, style w, tv w, tv form)
    "nst": ("torchvision", "relu2_2", ("relu1_2", "relu2_2", "relu3_3", "relu4_3"), 1e5, 1e10, 0.0, "mean-abs"),
    "pytorch-examples": ("torchvision", "relu2_2", ("relu1_2", "relu2_2", "relu3_3", "relu4_3"), 1e5, 1e10, 0.0,
                         "mean-abs"),
    "johnson2016": ("caffe", "relu2_2", ("relu1_2", "relu2_2", "relu3_3", "relu4_3"), 1.0, 5.0, 1e-6,
                    "half-sum-sq"),
}


@pytest.mark.parametrize("name", list(PAPER_VALUES))
def test_training_objective_is_the_papers_formula(name):
    from nst_train.losses import PerceptualObjective
    from nst_train.recipes import resolve_train_settings
    from nst_train.vgg import VGGFeatures

    pre, cl, sl, wc, ws, wtv, form = PAPER_VALUES[name]
    _, s = resolve_train_settings(name)
    assert (s.vgg_preprocessing, s.content_layer, s.style_layers, s.content_weight, s.style_weight,
            s.tv_weight, s.tv_form) == (pre, cl, sl, wc, ws, wtv, form)
    # a TV weight large enough to matter, so the form is tested where the recipe has none
    _, s = resolve_train_settings(name, {"tv_weight": 3.0})
    torch.manual_seed(0)
    vgg = VGGFeatures("vgg16", s.vgg_preprocessing).double().freeze()
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 32, 36, generator=gen, dtype=torch.float64) * 255
    y = torch.rand(2, 3, 32, 36, generator=gen, dtype=torch.float64) * 255
    style = torch.rand(1, 3, 40, 28, generator=gen, dtype=torch.float64) * 255
    terms = PerceptualObjective(vgg, s.loss_weights, style)(y, x)
    expected = ref_objective(y, x, style, _convs(vgg), VGG16, pre, content_layer=cl, style_layers=sl, wc=wc, ws=ws,
                             wtv=3.0, tv_form=form)
    for got, want in zip((terms.content, terms.style, terms.tv), expected, strict=True):
        assert got.dtype == torch.float64 and float(want) > 0
        assert float(got) == pytest.approx(float(want), rel=1e-12)


GATYS_PAPER = {
    "johnson2016-baseline": ("vgg16", VGG16, "torchvision", "relu2_2", ("relu1_2", "relu2_2", "relu3_3", "relu4_3"),
                             1e5, 1e10, 0.0, "mean-abs"),
    # Gatys et al. 2016 layers; jcjohnson/neural-style's weights 5 / 100 / 1e-3 and its TVLoss
    "gatys2016": ("vgg19", VGG19, "caffe", "relu4_2", ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"),
                  5.0, 100.0, 1e-3, "half-sum-sq"),
}


@pytest.mark.parametrize("name", list(GATYS_PAPER))
def test_gatys_objective_is_the_papers_formula(name):
    from nst_train.gatys import gatys_stylize
    from nst_train.recipes import resolve_gatys_settings
    from nst_train.vgg import VGGFeatures

    arch, cfg, pre, cl, sl, wc, ws, wtv, form = GATYS_PAPER[name]
    _, s = resolve_gatys_settings(name)
    assert (s.vgg_arch, s.vgg_preprocessing, s.content_layer, s.style_layers, s.content_weight, s.style_weight,
            s.tv_weight, s.tv_form, s.optimizer) == (arch, pre, cl, sl, wc, ws, wtv, form, "lbfgs")
    torch.manual_seed(0)
    vgg = VGGFeatures(arch, pre, s.deepest_layer).double().freeze()
    gen = torch.Generator().manual_seed(2)
    content = torch.rand(1, 3, 32, 36, generator=gen, dtype=torch.float64) * 255
    style = torch.rand(1, 3, 36, 32, generator=gen, dtype=torch.float64) * 255
    init = torch.rand(1, 3, 32, 36, generator=torch.Generator().manual_seed(5), dtype=torch.float64) * 255
    # init="noise" draws uniform [0, 255) noise from the seed: the first iteration evaluates exactly that image
    result = gatys_stylize(content, style, vgg=vgg, iterations=1, init="noise", seed=5, weights=s.loss_weights,
                           progress=False)
    c, st, tv = ref_objective(init, content, style, _convs(vgg), cfg, pre, content_layer=cl, style_layers=sl,
                              wc=wc, ws=ws, wtv=wtv, tv_form=form)
    first = result.history[0]
    assert first.content == pytest.approx(float(c), rel=1e-12)
    assert first.style == pytest.approx(float(st), rel=1e-12)
    assert first.tv == pytest.approx(float(tv), rel=1e-12) and (first.tv > 0) == (wtv > 0)


def test_vgg19_layers_are_torchvisions_indices():
    from nst_train.vgg import VGGFeatures, layer_index

    # torchvision's vgg19().features: conv4_2 at 21 (relu4_2 at 22), relu5_1 at 29; VGG-16's relu4_3 at 22
    assert (layer_index("vgg19", "conv4_2"), layer_index("vgg19", "relu4_2"), layer_index("vgg19", "relu5_1")) == \
        (21, 22, 29)
    assert layer_index("vgg16", "relu4_3") == 22 and layer_index("vgg19", "relu4_4") == 26
    net = VGGFeatures("vgg19", "caffe", "relu5_1")
    assert sum(isinstance(m, torch.nn.Conv2d) for m in net.features) == 13  # up to conv5_1 of 16
    assert len(VGGFeatures("vgg19", "caffe", "relu5_4").features) == 36  # all 16 convolutions, last pool cut


# ------------------------------------------------------------------ the pytorch-examples data pipeline

@pytest.mark.parametrize("size", [32, 96])
def test_pytorch_examples_pipeline_is_torchvisions_pixel_for_pixel(folder, photos, size):
    from nst_train.data import ImagePipeline, images_to_float, load_crop
    from nst_train.recipes import resolve_train_settings

    _, s = resolve_train_settings("pytorch-examples")
    pipeline = ImagePipeline(image_size=size, content_resize=s.content_resize, resample=s.resample,
                             jpeg_draft=s.jpeg_draft, exif_orientation=s.exif_orientation)
    single_pass = 0
    for name, arr in photos.items():
        ours = images_to_float(load_crop(folder / "photos" / name, image_size=size, rng=None, pipeline=pipeline),
                               s.to_float)
        candidates = [to_tensor_times_255(c) for c in torchvision_center_crop_uint8(np.ascontiguousarray(arr), size)]
        assert all(c.shape == ours.shape == (3, size, size) for c in candidates), name
        differing = [int((ours != c).sum()) for c in candidates]
        assert 0 in differing, f"{name}: {differing} values differ"
        single_pass += len(candidates) == 1
    assert single_pass >= 1  # sizes where the resize is one pass: no choice of order, exact


def test_imagefolder_order_and_rules(tmp_path, caplog):
    from nst_runtime.errors import UsageError
    from nst_train.data import find_images

    root = tmp_path / "ds"
    files = ["b/2.png", "b/10.JPG", "a/z.jpg", "a/sub/x.webp", "a-b/k.png", "a.c/m.bmp", "a/notes.txt"]
    for f in files:
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        (root / f).write_bytes(b"")
    (root / "loose.jpg").write_bytes(b"")
    got = [p.relative_to(root).as_posix() for p in find_images(root, "imagefolder")]
    # ImageFolder: classes sorted by name; inside each, sorted(os.walk(class)) and sorted file names; the
    # extension test is case-insensitive; files directly in the root belong to no class
    assert got == ["a/z.jpg", "a/sub/x.webp", "a-b/k.png", "a.c/m.bmp", "b/10.JPG", "b/2.png"]
    assert any("not part of an ImageFolder" in r.getMessage() for r in caplog.records)
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "1.jpg").write_bytes(b"")
    with pytest.raises(UsageError, match=r"ImageFolder.*subfolders.*Pass the parent folder"):
        find_images(flat, "imagefolder")


def test_file_order_keeps_the_last_partial_batch(folder):
    from nst_train.data import ContentImages, EpochSampler, build_loader, find_images

    ds = ContentImages(find_images(folder, "imagefolder"), image_size=32)
    sampler = EpochSampler(ds, num_replicas=1, rank=0, seed=9, batch_size=2, shuffle=False, drop_last=False)
    assert len(ds) == 7 and sampler.batches_per_epoch == 4
    sampler.set_position(1, 0)
    assert [i for _, i in sampler] == list(range(7))  # file order in every epoch, as a plain DataLoader
    sampler.set_position(0, 3)
    assert [i for _, i in sampler] == [6]
    sampler.set_position(0, 0)
    sizes = [len(b) for b, _ in build_loader(ds, sampler, batch_size=2, num_workers=0)]
    assert sizes == [2, 2, 2, 1]


# ------------------------------------------------------------------ --init and the step-1 losses

def _save_random_vgg(path: Path) -> Path:
    from nst_train.vgg import VGGFeatures

    torch.manual_seed(123)
    torch.save(VGGFeatures("vgg16").state_dict(), path)
    return path


def test_init_round_trip_and_step_one_losses_match_the_reference_formulas(tmp_path, folder, photos):
    """A miniature of issue 14's "done when": from the same initial weights, step 1's losses are those of the
    papers' formulas on torchvision's data pipeline (both implemented independently above)."""
    from nst_train.checkpoint import load_checkpoint
    from nst_train.data import ImagePipeline, load_crop
    from nst_train.model import TransformerNet
    from nst_train.train import TrainConfig, train

    torch.manual_seed(77)
    start = TransformerNet()
    state = dict(start.state_dict())
    # an old pytorch/examples file: plain state dict, InstanceNorm running stats included
    state["in1.running_mean"] = torch.zeros(32)
    state["in1.running_var"] = torch.ones(32)
    init = tmp_path / "their.pth"
    torch.save(state, init)
    vgg_path = _save_random_vgg(tmp_path / "vgg_random.pth")
    style = tmp_path / "style.png"
    Image.fromarray(np.ascontiguousarray(photos["c_odd.png"][::2, ::3])).save(style)

    records = []
    size = 32
    cfg = TrainConfig(style=style, content_dir=folder, out=tmp_path / "m.pth", recipe="pytorch-examples",
                      init=init, vgg_weights=vgg_path, image_size=size, batch_size=2, steps=1, lr=1e-12,
                      device="cpu", num_workers=0, log_every=1, checkpoint_every=0, preview_every=0,
                      preview_count=0, progress=False)
    result = train(cfg, callback=records.append)
    # round trip: after one step of lr 1e-12 the weights are the initial ones
    for k, v in start.state_dict().items():
        torch.testing.assert_close(result.model.state_dict()[k], v, rtol=0, atol=1e-9)
    meta = load_checkpoint(result.checkpoint).metadata
    assert meta.init is not None and meta.init["path"] == str(init) and len(meta.init["sha256"]) == 64
    assert meta.recipe == "pytorch-examples" and meta.training["shuffle"] is False

    # the first batch: the first two files of the ImageFolder order, through torchvision's pipeline
    names = sorted(photos)[:2]
    crops = []
    for n in names:
        loaded = load_crop(folder / "photos" / n, image_size=size, rng=None,
                           pipeline=ImagePipeline(size, "center-crop", "bilinear", False, False))
        # of the two orders Pillow may run the resize's passes in, the one it ran (both computed above)
        match = [c for c in torchvision_center_crop_uint8(np.ascontiguousarray(photos[n]), size)
                 if np.array_equal(c, loaded.permute(1, 2, 0).numpy())]
        assert match, n
        crops.append(to_tensor_times_255(match[0]))
    x = torch.stack(crops).double()
    style_t = to_tensor_times_255(np.asarray(Image.open(style).convert("RGB"))).unsqueeze(0).double()  # original size
    with torch.no_grad():
        y = start.double()(x)
    vgg_state = torch.load(vgg_path, weights_only=True)
    convs = [(vgg_state[f"features.{i}.weight"], vgg_state[f"features.{i}.bias"])
             for i in (0, 2, 5, 7, 10, 12, 14, 17, 19, 21)]
    c, s, _ = ref_objective(y, x, style_t, convs, VGG16, "torchvision", content_layer="relu2_2",
                            style_layers=("relu1_2", "relu2_2", "relu3_3", "relu4_3"), wc=1e5, ws=1e10, wtv=0.0,
                            tv_form="mean-abs")
    assert records[0].content == pytest.approx(float(c), rel=1e-4)
    assert records[0].style == pytest.approx(float(s), rel=1e-4)


def test_seed_gives_pytorch_examples_initial_weights(tmp_path, folder, photos):
    """pytorch/examples seeds, then builds the TransformerNet first: the same seed gives the same start here."""
    from nst_train.model import TransformerNet
    from nst_train.train import TrainConfig, train

    style = tmp_path / "style.png"
    Image.fromarray(np.ascontiguousarray(photos["e_square.png"])).save(style)
    cfg = TrainConfig(style=style, content_dir=folder, out=tmp_path / "m.pth", recipe="pytorch-examples",
                      vgg_weights="random", image_size=32, batch_size=2, steps=1, lr=1e-12, seed=42, device="cpu",
                      num_workers=0, checkpoint_every=0, preview_every=0, preview_count=0, progress=False)
    result = train(cfg)
    torch.manual_seed(42)
    expected = TransformerNet().state_dict()
    for k, v in expected.items():
        torch.testing.assert_close(result.model.state_dict()[k], v, rtol=0, atol=1e-9)


def test_options_override_the_recipe_and_are_recorded():
    from nst_runtime.errors import UsageError
    from nst_train.recipes import resolve_train_settings

    _, s = resolve_train_settings("johnson2016", {"steps": 10, "tv_weight": 1e-4, "vgg_weights": "imagenet"})
    assert s.steps == 10 and s.epochs is None and s.tv_weight == 1e-4
    assert s.vgg_weights == "imagenet" and s.vgg_preprocessing == "torchvision"  # named weights bring theirs
    assert s.content_weight == 1.0 and s.tv_form == "half-sum-sq"  # the rest stays the recipe's
    _, s = resolve_train_settings("johnson2016", {"epochs": 1})
    assert s.epochs == 1 and s.steps is None
    with pytest.raises(UsageError, match="unknown training setting"):
        resolve_train_settings("nst", {"learning_rate": 1})
    with pytest.raises(UsageError, match=r"--recipe 'nope'.*pytorch-examples"):
        resolve_train_settings("nope")
    with pytest.raises(UsageError, match="deeper than relu4_3"):
        resolve_train_settings("nst", {"content_layer": "relu5_1"})


def test_docs_table_is_the_recipes_own(request):
    from nst_train.recipes import recipes_markdown

    docs = Path(request.config.rootpath) / "docs" / "train.md"
    assert recipes_markdown() in docs.read_text(), "docs/train.md's recipe table differs from nst_train.recipes"
