"""One Stylizer, many threads: results identical to a serial run."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np


def test_8_threads_x_20_images_equal_serial(stylizer, make_image):
    rng = np.random.default_rng(0)
    sizes = [(int(rng.integers(8, 28)), int(rng.integers(8, 28))) for _ in range(20)]
    images = [make_image(h, w, seed=i) for i, (h, w) in enumerate(sizes)]
    serial = [stylizer.stylize(x) for x in images]

    def worker(t: int) -> list[np.ndarray]:
        order = list(range(20))[t:] + list(range(20))[:t]  # every thread starts elsewhere
        got = {i: stylizer.stylize(images[i]) for i in order}
        return [got[i] for i in range(20)]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(worker, range(8)))
    for per_thread in results:
        for a, b in zip(per_thread, serial, strict=True):
            np.testing.assert_array_equal(a, b)
