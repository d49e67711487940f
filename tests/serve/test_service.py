"""nst-serve on a real local Ray (2 CPUs, 2 replicas of the shared test network, requests over loopback HTTP):
exact results, concurrency, backpressure, errors, a killed replica, metrics, and the web page in Chromium.

The test network has random weights (see tests/conftest.py): these tests check the service, not style."""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from nst_runtime import Stylizer

pytest.importorskip("ray", reason="needs Ray (pip install 'nst[serve]')")

MAX_PIXELS = 1_000_000
MAX_BODY = 3_000_000


@pytest.fixture(scope="module")
def service(local_ray, onnx_fp32_path, free_port):
    from nst_serve import ServeConfig, models_from_args
    from nst_serve.server import deploy

    config = ServeConfig(models=models_from_args([onnx_fp32_path]), port=free_port(), replicas=2, max_batch=4,
                         max_queued=4, max_pixels=MAX_PIXELS, max_body_bytes=MAX_BODY, request_timeout_s=60)
    deployed = deploy(config, timeout_s=240)
    assert deployed.models == ("tiny",) and deployed.plan.replicas == 2
    yield deployed
    from ray import serve

    serve.shutdown()


@pytest.fixture(scope="module")
def local(service, onnx_fp32_path):
    """The in-process Stylizer, opened as the replicas open it (CPU backends round a few pixels differently
    with another thread count, so "the same result" means the same settings)."""
    with Stylizer.open(onnx_fp32_path, device="cpu", intra_op_threads=service.plan.threads) as stylizer:
        yield stylizer


def call(url: str, data: bytes | None = None, *, timeout: float = 90) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, {k.lower(): v for k, v in answer.headers.items()}, answer.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


def replica_actors(model: str = "tiny") -> set[str]:
    import ray

    return {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
            if a["name"].startswith("SERVE_REPLICA::") and f"#model-{model}#" in a["name"]}


def test_served_result_is_the_in_process_stylizer_result(service, local, make_photo, png, decode_image):
    url = service.url + "v1/stylize/tiny"
    rgba = np.dstack([make_photo(70, 90, seed=2), np.full((70, 90), 200, np.uint8)])
    for arr in (make_photo(64, 80, seed=1), rgba, make_photo(33, 47, seed=3)[..., 0]):
        status, headers, body = call(url, png(arr))
        assert status == 200 and headers["content-type"] == "image/png"
        np.testing.assert_array_equal(decode_image(body), local.stylize(arr))
    data = png(make_photo(96, 64, seed=4))
    status, headers, body = call(url + "?format=jpeg&quality=80", data)
    assert status == 200 and headers["content-type"] == "image/jpeg"
    assert body == local.stylize_bytes(data, format="jpeg", quality=80)
    status, headers, body = call(url + "?format=webp", data)
    assert headers["content-type"] == "image/webp" and body == local.stylize_bytes(data, format="webp")
    # the runtime's own steps around the network, as query parameters under their own names
    arr = make_photo(80, 96, seed=5)
    status, _, body = call(url + "?preserve-color=true&scale=0.5&strength=0.8", png(arr))
    assert status == 200
    np.testing.assert_array_equal(decode_image(body), local.stylize(arr, preserve_color=True, scale=0.5,
                                                                    strength=0.8))


def test_concurrent_clients_lose_nothing(service, local, make_photo, png, decode_image):
    url = service.url + "v1/stylize/tiny"
    # 3 sizes, so batches of same-size images form and different sizes never mix
    inputs = [make_photo(*size, seed=i) for i, size in enumerate([(64, 64), (48, 80), (64, 64), (96, 72)] * 3)]
    expected = [local.stylize(a) for a in inputs]

    def client(i: int) -> tuple[int, int, np.ndarray | None]:
        status, _, body = call(url, png(inputs[i]), timeout=120)
        return i, status, decode_image(body) if status == 200 else None

    start = time.monotonic()
    with ThreadPoolExecutor(6) as pool:  # 6 clients at once: within 2 replicas x 8 ongoing + 4 queued
        results = list(pool.map(client, range(len(inputs))))
    assert time.monotonic() - start < 150
    assert [status for _, status, _ in results] == [200] * len(inputs)
    for i, _, out in results:
        np.testing.assert_array_equal(out, expected[i])


def test_a_full_queue_answers_503_with_retry_after_and_recovers(service, local, make_photo, png, decode_image):
    url = service.url + "v1/stylize/tiny"
    arr = make_photo(256, 256, seed=7)
    data, expected = png(arr), local.stylize(arr)
    # 2 replicas x 8 ongoing + 4 queued = 20 accepted at most; 48 at once must overflow
    with ThreadPoolExecutor(48) as pool:
        answers = list(pool.map(lambda _: call(url, data, timeout=120), range(48)))
    statuses = [a[0] for a in answers]
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(503) >= 1 and statuses.count(200) >= 1
    for status, headers, body in answers:
        if status == 503:
            assert int(headers["retry-after"]) >= 1
            assert json.loads(body)["code"] == 1 and "retry" in json.loads(body)["error"]
        else:
            np.testing.assert_array_equal(decode_image(body), expected)
    status, _, body = call(url, data)  # the queue drained: served again
    assert status == 200
    np.testing.assert_array_equal(decode_image(body), expected)


def test_bad_requests_get_json_errors_and_never_take_a_replica_down(service, make_photo, png):
    url = service.url + "v1/stylize/tiny"
    before = replica_actors()
    good = png(make_photo(40, 40))
    big_flat = png(np.zeros((1100, 1000, 3), np.uint8))  # 1.1 MP, over the 1 MP limit; compresses small
    cases = [
        (url, b"this is not an image", 400, 4, "not an image"),
        (url, good[: len(good) // 2], 400, 4, "corrupt or truncated"),
        (url, big_flat, 413, 4, "more than the limit of 1000000"),
        (url, b"\0" * (MAX_BODY + 1), 413, 4, "larger than the limit"),
        (service.url + "v1/stylize/nope", good, 404, 2, "no model 'nope'; this server has: tiny"),
        (url + "?quality=500", good, 400, 2, "quality='500'"),
        (url + "?sharpen=1", good, 400, 2, "unknown query parameter 'sharpen'"),
    ]
    for target, body, status, code, message in cases:
        got_status, headers, got = call(target, body)
        assert got_status == status, (target, got[:200])
        assert headers["content-type"] == "application/json"
        answer = json.loads(got)
        assert answer["code"] == code and message in answer["error"] and "\n" not in answer["error"]
    status, _, _ = call(url, good)
    assert status == 200
    assert replica_actors() == before  # same replicas: none restarted


def test_models_health_page_and_metrics(service):
    from nst_serve.server import metrics_url

    status, _, body = call(service.url + "v1/models")
    (model,) = json.loads(body)["models"]
    assert status == 200 and model["name"] == "tiny" and model["precision"] == "fp32" and model["file"] == "tiny.onnx"
    assert model["contract"]["input"]["dtype"] == "uint8" and model["contract"]["input"]["layout"] == "NHWC"
    assert model["max_pixels"] == MAX_PIXELS
    status, _, body = call(service.url + "healthz")
    assert status == 200 and json.loads(body) == {"status": "ok", "running_replicas": {"tiny": 2}}
    status, headers, body = call(service.url)
    assert status == 200 and headers["content-type"].startswith("text/html") and b'id="model"' in body
    deadline, text = time.monotonic() + 30, ""
    while time.monotonic() < deadline:  # Ray exports metrics once a second here
        text = urllib.request.urlopen(metrics_url(), timeout=10).read().decode()
        if 'nst_stylize_latency_ms_count{' in text and "ray_serve_num_http_requests" in text:
            break
        time.sleep(1)
    latency = [line for line in text.splitlines() if line.startswith("ray_nst_stylize_latency_ms_count{")]
    assert latency and all('model="tiny"' in line for line in latency)
    assert sum(float(line.rsplit(" ", 1)[1]) for line in latency) >= 1
    assert "ray_serve_num_http_requests" in text
    status, _, body = call(service.url + "metrics")  # the same exposition through the service
    assert status == 200 and b"nst_stylize_latency_ms" in body


def test_a_killed_replica_comes_back_and_the_service_stays_healthy(service, local, make_photo, png, decode_image):
    import ray

    url = service.url + "v1/stylize/tiny"
    arr = make_photo(64, 64, seed=9)
    data, expected = png(arr), local.stylize(arr)
    before = replica_actors()
    assert len(before) == 2
    answers, health, stop = [], [], threading.Event()

    def load() -> None:
        while not stop.is_set():
            answers.append(call(url, data, timeout=60))

    def watch() -> None:
        while not stop.is_set():
            health.append(call(service.url + "healthz", timeout=10)[0])
            time.sleep(0.2)

    threads = [threading.Thread(target=load) for _ in range(3)] + [threading.Thread(target=watch)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        victim = sorted(before)[0]
        ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            now = replica_actors()
            if len(now) == 2 and victim not in now:
                running = json.loads(call(service.url + "healthz")[2])["running_replicas"]["tiny"]
                if running == 2:
                    break
            time.sleep(0.5)
        else:
            pytest.fail(f"no replacement replica within 120 s: {replica_actors()}")
        time.sleep(1.0)  # keep the load on the replaced set for a moment
    finally:
        stop.set()
        for t in threads:
            t.join(120)
    statuses = [a[0] for a in answers]
    # the gateway sends a request whose replica died once more, to a live one: nothing is lost
    assert statuses and set(statuses) == {200}, statuses
    for _, _, body in answers:
        np.testing.assert_array_equal(decode_image(body), expected)
    assert health and set(health) == {200}, health  # one replica stayed ready throughout


@pytest.mark.skipif(not os.path.exists("/usr/bin/chromium"), reason="needs Debian's chromium (.ci/run installs it)")
def test_the_web_page_in_chromium(service, local, make_photo, png, decode_image, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs playwright")
    photo = tmp_path / "beach.png"
    arr = make_photo(80, 120, seed=11)
    photo.write_bytes(png(arr))
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"not a picture at all")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page()
            page.goto(service.url)
            page.wait_for_selector("body[data-ready='1']", timeout=30_000)
            assert page.locator("#model option").all_inner_texts() == ["tiny (fp32, " + _backend(service) + ")"]
            page.select_option("#model", "tiny")
            page.set_input_files("#file", str(photo))
            page.click("#go")
            page.wait_for_selector("#after:not([hidden])", timeout=60_000)
            assert page.locator("#error").inner_text() == ""
            with page.expect_download() as info:
                page.click("#download")
            download = info.value
            assert download.suggested_filename == "beach.tiny.png"
            np.testing.assert_array_equal(decode_image(open(download.path(), "rb").read()), local.stylize(arr))
            # the image shown is the stylized one, at its size
            size = page.evaluate("() => [document.getElementById('result').naturalWidth, "
                                 "document.getElementById('result').naturalHeight]")
            assert size == [120, 80]
            page.set_input_files("#file", str(bad))
            page.click("#go")
            page.wait_for_function("document.getElementById('error').textContent.length > 0", timeout=60_000)
            error = page.locator("#error").inner_text()
            assert "not an image in an accepted format" in error and "(code 4)" in error
        finally:
            browser.close()


def _backend(service) -> str:
    return json.loads(call(service.url + "v1/models")[2])["models"][0]["backend"]


def test_a_multipart_upload_is_served_like_a_raw_body(service, local, make_photo, png, decode_image):
    """The form an any-style (AdaIN) model takes (fields image and style) goes through the gateway: its photo
    is stylized exactly as a raw body; a style on this one-style network and a bad form are one-line 400s."""
    url = service.url + "v1/stylize/tiny"
    photo = make_photo(36, 44, seed=9)
    boundary = "nstTestBoundary"

    def form(*fields):
        body = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{n}"; filename="{n}.png"\r\n'
                        f"Content-Type: image/png\r\n\r\n".encode() + data + b"\r\n" for n, data in fields)
        return body + f"--{boundary}--\r\n".encode()

    def post(body):
        request = urllib.request.Request(url, data=body, method="POST",
                                         headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        try:
            with urllib.request.urlopen(request, timeout=90) as answer:
                return answer.status, answer.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    status, body = post(form(("image", png(photo))))
    assert status == 200
    np.testing.assert_array_equal(decode_image(body), local.stylize(photo))
    status, body = post(form(("image", png(photo)), ("style", png(make_photo(20, 20, seed=3)))))
    assert status == 400 and "holds one style" in json.loads(body)["error"]
    status, body = post(form(("photo", png(photo))))
    assert status == 400 and "form field 'photo'" in json.loads(body)["error"]
