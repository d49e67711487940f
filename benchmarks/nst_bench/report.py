"""Write a results document as ``results.json``, ``results.md`` (Markdown tables) and ``results.png``."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .gatys import TABLE_ITERATIONS

log = logging.getLogger(__name__)


def device_description(doc: dict[str, Any]) -> str:
    """``"NVIDIA H100 80GB HBM3 (driver 570.1)"`` or ``"CPU: AMD EPYC, 2 cores (no GPU)"``."""
    m = doc["machine"]
    cpu = f"{m['cpu_model']}, {m['cpu_cores']} cores"
    if doc.get("config", {}).get("device") == "cuda" and m.get("gpu"):
        g = m["gpu"]
        return f"GPU: {g['name']} (driver {g.get('driver')}, CUDA {g.get('cuda_runtime')}); host CPU {cpu}"
    return f"CPU: {cpu}" + ("" if m.get("gpu") else " (no GPU)")


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        if x == 0:
            return "0"
        if abs(x) >= 100:
            return f"{x:,.0f}"
        return f"{x:.{digits}g}"
    return str(x)


def _size_label(rec: dict[str, Any]) -> str:
    return f"{rec['height']}×{rec['width']}"


def _pixels(rec: dict[str, Any]) -> int:
    return int(rec["height"]) * int(rec["width"])


def markdown(doc: dict[str, Any]) -> str:
    """The Markdown report: feed-forward table, Gatys table (Johnson et al. Table 1 shape), skipped, notes."""
    m = doc["machine"]
    libs = m.get("libraries", {})
    lines = [
        "# nst-bench results",
        "",
        f"- **Measured on:** {device_description(doc)}",
        f"- **When:** {doc.get('created_at')} (benchmark wall time {doc.get('wall_s')} s; load average "
        f"at start {m.get('loadavg_start')}, at end {m.get('loadavg_end')})",
        "- **Libraries:** " + ", ".join(f"{k} {v}" for k, v in libs.items() if v),
    ]
    peak = m.get("cpu_peak") or {}
    sgemm, sgemm_end = m.get("cpu_sgemm") or {}, m.get("cpu_sgemm_end") or {}
    on_cpu = doc.get("config", {}).get("device") == "cpu"
    if on_cpu and sgemm.get("fp32_tflops"):
        end = (f"; at the end of the run {sgemm_end['fp32_tflops'] * 1000:.1f} GFLOP/s (load "
               f"{sgemm_end.get('loadavg_1m')})" if sgemm_end.get("fp32_tflops") else "")
        lines.append(f"- **Peak used for % of peak (measured in this run):** SGEMM "
                     f"{sgemm['fp32_tflops'] * 1000:.1f} GFLOP/s at the start (load {sgemm.get('loadavg_1m')}): "
                     f"{sgemm['method']}{end}. INT8 rows count the FP32 network's FLOPs against the same roof.")
    if on_cpu and peak.get("fp32_tflops"):
        used = " (not used: the measured SGEMM peak is)" if sgemm.get("fp32_tflops") else " (used for % of peak)"
        lines.append(f"- **Nominal CPU peak (estimate){used}:** {peak['fp32_tflops']:.3f} TFLOP/s FP32 = "
                     f"{peak['formula']}")
    lines += [
        "",
        "Sizes are height × width. *compute*: the network alone, input already on the device; *e2e*: host "
        "uint8 image in, host uint8 image out. p90/p99 come from `reps` samples: with few repetitions (large "
        "sizes on a CPU) they are close to the maximum and mean little. TFLOP/s counts 2 × MACs of every "
        "convolution (`nst_train.model.count_flops`). *load 1m*: the machine's 1-minute load average when "
        "the measurement ended; above the core count, other work was competing for the CPU.",
        "",
        "## Feed-forward backends",
        "",
        "| backend | view | size | batch | median ms | p90 ms | p99 ms | images/s | TFLOP/s | % of peak "
        "| peak mem MiB | reps | load 1m |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    ff = [r for r in doc["results"] if r["backend"] != "gatys"]
    ff.sort(key=lambda r: (_pixels(r), r["batch"], r["backend"], r["view"]))
    for r in ff:
        frac = r.get("fraction_of_peak")
        lines.append(
            f"| {r['backend']} | {r['view']} | {_size_label(r)} | {r['batch']} | {_fmt(r['median_ms'])} | "
            f"{_fmt(r['p90_ms'])} | {_fmt(r['p99_ms'])} | {_fmt(r['images_per_s'])} | "
            f"{_fmt(r.get('achieved_tflops'))} | {_fmt(frac * 100 if frac is not None else None)} | "
            f"{_fmt(r.get('peak_memory_mb'))} | {r.get('reps')} | {_fmt(r.get('loadavg_1m'))} |"
        )
    gatys = sorted((r for r in doc["results"] if r["backend"] == "gatys"), key=_pixels)
    if gatys:
        best = _best_feed_forward(ff)
        lines += [
            "",
            "## Gatys et al. optimization vs feed-forward (the shape of Johnson et al. 2016, Table 1)",
            "",
            "Seconds for 100/300/500 L-BFGS iterations (one iteration = one VGG-16 forward + backward). The "
            "speed-up columns divide them by the fastest batch-1 end-to-end feed-forward time at that size.",
            "",
            "| size | Gatys 100 it s | Gatys 300 it s | Gatys 500 it s | ms / iteration | timed iterations "
            "| fastest feed-forward (e2e) | its s | speed-up ×100 it | ×300 it | ×500 it |",
            "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
        ]
        for g in gatys:
            f = best.get(g["size"])
            sp = f.get("speedup_vs_gatys", {}) if f else {}
            lines.append(
                f"| {_size_label(g)} | " + " | ".join(_fmt(g.get(f"seconds_{n}")) for n in TABLE_ITERATIONS)
                + f" | {_fmt(g['median_ms'])} | {g['measured_iterations']}"
                + ("" if not g.get("extrapolated") else " (× N extrapolated)")
                + f" | {f['backend'] if f else '–'} | {_fmt(f['median_ms'] / 1000.0) if f else '–'} | "
                + " | ".join(_fmt(sp.get(str(n))) for n in TABLE_ITERATIONS) + " |"
            )
    if doc.get("skipped"):
        lines += ["", "## Skipped", "", "| backend | what | reason |", "|---|---|---|"]
        for s in doc["skipped"]:
            what = " ".join(f"{k} {s[k]}" for k in ("size", "batch", "view") if k in s) or "all"
            lines.append(f"| {s['backend']} | {what} | {s['reason']} |")
    if doc.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in doc["notes"]]
    return "\n".join(lines) + "\n"


def summary_table(doc: dict[str, Any]) -> str:
    """A compact table for the README: batch-1 end-to-end median ms per size and backend, plus Gatys."""
    ff = [r for r in doc["results"] if r["backend"] != "gatys" and r["batch"] == 1 and r["view"] == "e2e"]
    gatys = {r["size"]: r for r in doc["results"] if r["backend"] == "gatys"}
    backends = list(dict.fromkeys(r["backend"] for r in ff))
    sizes = sorted({(_pixels(r), r["size"], _size_label(r)) for r in [*ff, *gatys.values()]})
    head = ["size (H×W)", *[f"{b} e2e ms" for b in backends]]
    if gatys:
        head += ["Gatys 300 it, s", "speed-up vs Gatys 300 it"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    best = _best_feed_forward(ff)
    for _, size, label in sizes:
        row = [label]
        for b in backends:
            rec = next((r for r in ff if r["backend"] == b and r["size"] == size), None)
            row.append(_fmt(rec["median_ms"]) if rec else "–")
        if gatys:
            g = gatys.get(size)
            f = best.get(size)
            row.append(_fmt(g["seconds_300"]) + (" (extrap.)" if g and g.get("extrapolated") else "") if g else "–")
            sp = (f or {}).get("speedup_vs_gatys", {}).get("300")
            row.append(f"{_fmt(sp)}× ({f['backend']})" if sp and f else "–")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def _best_feed_forward(ff: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    best: dict[str, dict[str, Any]] = {}
    for r in ff:
        if r["batch"] != 1 or r["view"] != "e2e":
            continue
        if r["size"] not in best or r["median_ms"] < best[r["size"]]["median_ms"]:
            best[r["size"]] = r
    return best


def plot(doc: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Latency (log) against megapixels (log), one line per backend and view at batch 1, Gatys included."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=110)
    series: dict[str, list[tuple[float, float]]] = {}
    for r in doc["results"]:
        if r["batch"] != 1:
            continue
        mp = _pixels(r) / 1e6
        if r["backend"] == "gatys":
            for n in (100, 500):
                if r.get(f"seconds_{n}"):
                    series.setdefault(f"gatys {n} it" + (" (extrap.)" if r.get("extrapolated") else ""),
                                      []).append((mp, r[f"seconds_{n}"] * 1000.0))
        else:
            series.setdefault(f"{r['backend']} {r['view']}", []).append((mp, r["median_ms"]))
    for label, pts in sorted(series.items()):
        pts.sort()
        style = "--" if label.startswith("gatys") else "-"
        ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker="o", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("megapixels per image (256² = 0.066, 1920×1080 = 2.07, 3840×2160 = 8.29)")
    ax.set_ylabel("median latency per batch-1 call, ms (log)")
    ax.set_title(f"nst-bench — {device_description(doc)}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    if series:
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def merge_into(existing: str | os.PathLike[str], new: dict[str, Any]) -> dict[str, Any]:
    """``new`` merged into the results document at ``existing`` (if any): for every backend ``new`` ran or
    skipped, its old records and skip entries are replaced; everything else is kept. Both runs must be on
    the same device kind; the machine block of the older run is kept with the newer one beside it."""
    path = Path(existing)
    if not path.is_file():
        return new
    old = json.loads(path.read_text(encoding="utf-8"))
    if old.get("config", {}).get("device") != new.get("config", {}).get("device"):
        from nst_runtime.errors import UsageError

        raise UsageError(f"{path}: was measured on {old.get('config', {}).get('device')}, this run on "
                         f"{new.get('config', {}).get('device')}; use another --out instead of --append.")
    touched = {r["backend"] for r in new["results"]} | {s["backend"] for s in new["skipped"]}
    merged = dict(old)
    merged["results"] = [r for r in old["results"] if r["backend"] not in touched] + new["results"]
    # Speed-ups pair feed-forward records with Gatys records, either of which may have just changed.
    from .run import attach_speedups

    for r in merged["results"]:
        r.pop("speedup_vs_gatys", None)
    attach_speedups(merged["results"])
    merged["skipped"] = [s for s in old.get("skipped", []) if s["backend"] not in touched] + new["skipped"]
    merged["notes"] = list(dict.fromkeys([*old.get("notes", []), *new.get("notes", []),
                                          f"Backends {', '.join(sorted(touched))} re-measured by a later run "
                                          f"at {new.get('created_at')} (wall {new.get('wall_s')} s)."]))
    merged["wall_s"] = round(float(old.get("wall_s") or 0) + float(new.get("wall_s") or 0), 1)
    merged.setdefault("appended_runs", []).append({"created_at": new.get("created_at"),
                                                   "config": new.get("config"),
                                                   "loadavg": [new["machine"].get("loadavg_start"),
                                                               new["machine"].get("loadavg_end")]})
    return merged


def write_reports(doc: dict[str, Any], out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write results.json, results.md and results.png into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "md": out / "results.md", "png": out / "results.png"}
    paths["json"].write_text(json.dumps(doc, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")
    paths["md"].write_text(markdown(doc), encoding="utf-8")
    plot(doc, paths["png"])
    return paths
