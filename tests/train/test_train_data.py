"""Sample generation and the input pipeline: crops, skipping bad files, resumable and distributed order."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from nst_runtime.errors import UsageError
from nst_train.data import ContentImages, EpochSampler, build_loader, find_images, scan_images
from nst_train.imageio import load_image_tensor, save_image_tensor
from nst_train.samples import write_sample_content, write_sample_style
from PIL import Image


def test_samples_are_varied_and_deterministic(tmp_path):
    paths = write_sample_content(tmp_path / "a", count=8, size=64, seed=5)
    again = write_sample_content(tmp_path / "b", count=8, size=64, seed=5)
    assert len(paths) == 8 and all(p.is_file() for p in paths)
    imgs = [np.asarray(Image.open(p), dtype=np.float32) for p in paths]
    assert all(im.shape == (64, 64, 3) for im in imgs)
    assert all(im.std() > 5 for im in imgs)  # none is flat
    for i in range(8):
        for j in range(i + 1, 8):
            assert np.abs(imgs[i] - imgs[j]).mean() > 10  # all differ
    assert [p.read_bytes() for p in paths] == [p.read_bytes() for p in again]
    other = np.asarray(Image.open(write_sample_content(tmp_path / "c", count=1, size=64, seed=6)[0]))
    assert np.abs(other.astype(np.float32) - imgs[0]).mean() > 5


def test_sample_style_is_colourful_texture(tmp_path):
    path = write_sample_style(tmp_path / "style.png", size=96, seed=1)
    img = np.asarray(Image.open(path), dtype=np.float32)
    assert img.shape == (96, 96, 3)
    assert img.std(axis=(0, 1)).min() > 20  # every channel varies
    # high-frequency energy: a texture, not a smooth gradient
    assert np.abs(np.diff(img, axis=1)).mean() > 8
    saturation = img.max(axis=2) - img.min(axis=2)
    assert saturation.mean() > 40


def test_crops_have_size_dtype_and_depend_on_epoch(tmp_path):
    wide = np.random.default_rng(0).integers(0, 256, (40, 96, 3), dtype=np.uint8)
    Image.fromarray(wide).save(tmp_path / "wide.png")
    ds = ContentImages([tmp_path / "wide.png"], image_size=32, seed=0)
    a, fails = ds[(0, 0)]
    assert a.shape == (3, 32, 32) and a.dtype == torch.uint8 and fails == 0
    assert torch.equal(a, ds[(0, 0)][0])  # deterministic
    crops = {ds[(e, 0)][0].numpy().tobytes() for e in range(8)}
    assert len(crops) > 2  # the random crop moves between epochs


def test_unreadable_and_small_images_are_skipped_with_a_count(tmp_path):
    root = tmp_path / "content"
    write_sample_content(root / "nested" / "deeper", count=3, size=48)
    (root / "broken.jpg").write_bytes(b"not a jpeg at all")
    (root / "empty.png").write_bytes(b"")
    Image.new("RGB", (10, 40), "red").save(root / "tiny.png")
    (root / "notes.txt").write_text("not an image extension: not even looked at")
    paths = find_images(root)
    assert len(paths) == 6
    report = scan_images(paths, min_side=16)
    assert len(report.usable) == 3 and len(report.unreadable) == 2 and len(report.too_small) == 1
    assert report.skipped == 3


def test_trainer_logs_the_skip_count(tmp_path, samples, caplog, tiny_config):
    from nst_train.train import train

    root = tmp_path / "content"
    write_sample_content(root, count=4, size=48)
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    Image.new("RGB", (8, 8)).save(root / "small.png")
    with caplog.at_level(logging.INFO, logger="nst_train"):
        result = train(tiny_config(tmp_path / "m.pth", content_dir=root, steps=1))
    assert result.skipped_images == 2
    assert any("skipped 2 of 6 content images: 1 unreadable, 1 with a side under 16 px" in r.getMessage()
               for r in caplog.records)


def test_truncated_image_is_replaced_and_counted(tmp_path):
    root = tmp_path / "c"
    paths = write_sample_content(root, count=3, size=48)
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[: len(data) // 3])  # header intact: passes the scan, fails to decode
    assert len(scan_images(paths, min_side=16).usable) == 3
    ds = ContentImages(paths, image_size=32, seed=0)
    img, fails = ds[(0, 1)]
    assert fails == 1
    assert torch.equal(img, ds[(0, 2)][0])  # replaced by the next readable image


def test_no_images_is_a_usage_error(tmp_path, tiny_config):
    from nst_train.train import train

    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no usable content images"):
        train(tiny_config(tmp_path / "m.pth", content_dir=tmp_path / "empty"))
    with pytest.raises(UsageError, match="content directory not found"):
        find_images(tmp_path / "missing")


def _order(sampler: EpochSampler, epoch: int, batch: int = 0) -> list[tuple[int, int]]:
    sampler.set_position(epoch, batch)
    return list(sampler)


def test_sampler_order_is_seeded_per_epoch_and_resumable(samples):
    ds = ContentImages(find_images(samples / "content"), image_size=32)
    s = EpochSampler(ds, num_replicas=1, rank=0, seed=3, batch_size=2)
    e0, e1 = _order(s, 0), _order(s, 1)
    assert sorted(i for _, i in e0) == list(range(6)) and all(e == 0 for e, _ in e0)
    assert [i for _, i in e0] != [i for _, i in e1]
    assert _order(s, 0) == e0
    assert _order(s, 0, batch=2) == e0[4:]  # resume after two batches
    assert len(s) == 2
    other_seed = EpochSampler(ds, num_replicas=1, rank=0, seed=4, batch_size=2)
    assert _order(other_seed, 0) != e0


def test_distributed_sampler_partitions_the_epoch(samples):
    ds = ContentImages(find_images(samples / "content"), image_size=32)
    ranks = [EpochSampler(ds, num_replicas=2, rank=r, seed=0, batch_size=1) for r in range(2)]
    parts = [[i for _, i in _order(s, 2)] for s in ranks]
    assert len(parts[0]) == len(parts[1]) == 3
    assert sorted(parts[0] + parts[1]) == list(range(6))


def test_loader_with_workers_gives_the_same_batches(samples):
    ds = ContentImages(find_images(samples / "content"), image_size=32, seed=1)

    def batches(workers: int) -> list[torch.Tensor]:
        s = EpochSampler(ds, num_replicas=1, rank=0, seed=1, batch_size=2)
        s.set_position(1, 1)
        loader = build_loader(ds, s, batch_size=2, num_workers=workers)
        return [b for b, _ in loader]

    serial, parallel = batches(0), batches(2)
    assert len(serial) == 2 and serial[0].shape == (2, 3, 32, 32)
    assert all(torch.equal(a, b) for a, b in zip(serial, parallel, strict=True))


def test_image_tensor_round_trip(tmp_path):
    t = torch.rand(1, 3, 20, 30) * 255
    path = save_image_tensor(t, tmp_path / "x.png")
    back = load_image_tensor(path, size=None)
    assert back.shape == (1, 3, 20, 30) and back.dtype == torch.float32
    assert float((back - t).abs().max()) <= 0.5 + 1e-4  # rounding only
    small = load_image_tensor(path, size=10)
    assert small.shape == (1, 3, 10, 15)
