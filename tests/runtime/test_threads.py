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


def test_close_while_threads_stylize_is_a_usage_error_never_a_crash(vivid_onnx):
    """The Stylizer's thread-safety claim: a close() from another thread lets calls finish or fail with the
    closed-Stylizer UsageError, never an AttributeError or a backend's own error."""
    import threading

    import numpy as np
    from nst_runtime import Stylizer
    from nst_runtime.errors import UsageError

    s = Stylizer.open(vivid_onnx, device="cpu", backend="onnxruntime", intra_op_threads=1)
    outcomes: list[str] = []
    started = threading.Barrier(5)

    def work():
        started.wait()
        for _ in range(200):
            try:
                s.stylize(np.zeros((24, 24, 3), np.uint8))
                outcomes.append("ok")
            except UsageError as exc:
                outcomes.append("closed" if "closed" in str(exc) else f"usage: {exc}")
                return
            except Exception as exc:  # the bug this test guards against
                outcomes.append(f"{type(exc).__name__}: {exc}")
                return

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    started.wait()
    s.close()
    for t in threads:
        t.join(60)
    assert {o for o in outcomes if o != "ok"} <= {"closed"}
    assert outcomes.count("closed") == 4  # every thread saw the close
