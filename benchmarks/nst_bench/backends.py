"""One small class per feed-forward backend, all timed by the same harness on the same inputs.

Every backend answers :meth:`Backend.available` with ``(ok, reason)`` before anything heavy happens, so a
backend the machine lacks is *listed* as skipped with its reason instead of vanishing from the report.

Two views are timed (see ``docs/bench.md``):

``compute``
    the network alone, input already on the device in the layout the backend wants (PyTorch: float NCHW
    padded to a multiple of 4; ONNX Runtime on CUDA: the uint8 NHWC graph with its input and output bound
    on the GPU through IO binding; TensorRT: the engine with device buffers).
``e2e``
    host uint8 NHWC image in, host uint8 NHWC image out: upload, cast, layout, pad, network, clamp, round,
    download. This is what an application sees.

On a CPU the host is the device, so ONNX Runtime's two views coincide and only ``e2e`` is recorded for it.

torch, onnxruntime and tensorrt are imported inside methods: ``import nst_bench.backends`` is cheap.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .harness import DeviceTimer

log = logging.getLogger(__name__)

SIZE_MULTIPLE = 4  # TransformerNet downsamples twice by 2 (nst_train.model.SIZE_MULTIPLE)
VIEWS = ("compute", "e2e")


@dataclass(frozen=True)
class Workload:
    """One input shape: ``batch`` images of ``height`` x ``width`` RGB."""

    height: int
    width: int
    batch: int = 1

    @property
    def size(self) -> str:
        """``"HxW"``, the key results.json uses."""
        return f"{self.height}x{self.width}"

    @property
    def padded(self) -> tuple[int, int]:
        """Height and width rounded up to the multiple of 4 the network runs at."""
        return (-(-self.height // SIZE_MULTIPLE) * SIZE_MULTIPLE, -(-self.width // SIZE_MULTIPLE) * SIZE_MULTIPLE)

    def host_image(self, seed: int = 0) -> np.ndarray:
        """Deterministic uint8 NHWC input (content does not change the speed of these networks)."""
        rng = np.random.default_rng(seed)
        return rng.integers(0, 256, (self.batch, self.height, self.width, 3), dtype=np.uint8)


class ModelSource:
    """The network every backend times: a checkpoint, or a seeded random TransformerNet.

    The timed network need not be trained: the cost of a convolution does not depend on its weights. ONNX
    files are exported once into ``work_dir`` and shared by the ONNX Runtime and TensorRT backends.
    """

    def __init__(self, *, checkpoint: str | os.PathLike[str] | None = None, seed: int = 0,
                 work_dir: str | os.PathLike[str] | None = None) -> None:
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.seed = seed
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if work_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="nst-bench-")
            work_dir = self._tmp.name
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._onnx: dict[str, Path] = {}

    @property
    def description(self) -> str:
        if self.checkpoint is not None:
            return f"checkpoint {self.checkpoint}"
        return (f"randomly initialised TransformerNet (seed {self.seed}), norms perturbed and output scaled to "
                "span 0..255; speed does not depend on weights")

    def torch_net(self) -> Any:
        """A fresh CPU ``TransformerNet`` in eval mode."""
        from nst_train.samples import vivid_random_net

        if self.checkpoint is not None:
            from nst_train.checkpoint import load_checkpoint

            return load_checkpoint(self.checkpoint).model("cpu")
        # A fresh network's output sits near 0 (almost every pixel clamps to black), which the export's parity
        # gate refuses as degenerate: the project's random test network spans 0..255 like a trained one (the
        # cost of a convolution does not depend on its weights).
        return vivid_random_net(self.seed)

    def checkpoint_path(self) -> Path:
        if self.checkpoint is not None:
            return self.checkpoint
        path = self.work_dir / f"random-seed{self.seed}.pth"
        if not path.exists():
            from nst_train.checkpoint import CheckpointMetadata, save_checkpoint

            save_checkpoint(path, self.torch_net(), CheckpointMetadata(steps=0, source="nst-bench random init"))
        return path

    @property
    def onnx_input(self) -> bool:
        """``--checkpoint model.onnx``: an ONNX file to time as it is (an nst artifact) or imported (a foreign
        network, through nst-export's import); no PyTorch network exists for it."""
        return self.checkpoint is not None and self.checkpoint.suffix.lower() == ".onnx"

    def missing_precision(self, precision: str) -> str | None:
        """Why ``--checkpoint NAME.onnx`` cannot give this run the ``precision`` file (None: it can). An nst FP32
        file (and a foreign file, imported) gives FP32, FP16 and INT8; an FP16 or INT8 file only itself."""
        if not self.onnx_input:
            return None
        from nst_runtime.sidecar import read_sidecar, sidecar_path

        assert self.checkpoint is not None
        if not sidecar_path(self.checkpoint).is_file():
            return None  # a foreign file: imported to FP32 (+FP16), INT8 calibrated from that
        have = read_sidecar(self.checkpoint).precision
        if have in (precision, "fp32"):
            return None
        return (f"--checkpoint {self.checkpoint.name} is an {have.upper()} file; {precision.upper()} rows need "
                f"the {precision.upper()} file itself or the FP32 one (nst-bench makes FP16 and INT8 from it)")

    def _from_onnx_input(self, source: Path, precision: str) -> Path:
        """The ``precision`` file of the ONNX input, made once and cached per precision."""
        from nst_runtime.errors import BackendUnavailableError
        from nst_runtime.sidecar import read_sidecar, sidecar_path

        if precision in self._onnx:
            return self._onnx[precision]
        why = self.missing_precision(precision)
        if why is not None:
            raise BackendUnavailableError(why)
        if sidecar_path(source).is_file():  # an nst artifact: timed as it is; FP16 and INT8 from an FP32 one
            self._onnx.setdefault(read_sidecar(source).precision, source)
        else:
            from nst_export.foreign import onnx_from_foreign

            log.info("importing the foreign ONNX file %s", source)
            result = onnx_from_foreign(source, self.work_dir / "model.onnx",
                                       fp16_out=self.work_dir / "model.fp16.onnx")
            self._onnx["fp32"] = result.fp32
            if result.fp16 is not None:
                self._onnx["fp16"] = result.fp16
        if precision == "fp16" and "fp16" not in self._onnx:
            from nst_export.fp16 import fp16_onnx_from_onnx

            self._onnx["fp16"] = fp16_onnx_from_onnx(self._onnx["fp32"], self.work_dir / "model.fp16.onnx")
        if precision == "int8" and "int8" not in self._onnx:
            self._onnx["int8"] = self._int8(self._onnx["fp32"])
        return self._onnx[precision]

    def onnx_path(self, precision: str = "fp32") -> Path:
        """Export (once) the FP32 or FP16 ONNX with the uint8 NHWC contract."""
        if precision in self._onnx:
            return self._onnx[precision]
        if self.checkpoint is not None and self.onnx_input:
            return self._from_onnx_input(self.checkpoint, precision)
        from nst_export import onnx_export

        fp32 = self.work_dir / "model.onnx"
        if "fp32" not in self._onnx:
            log.info("exporting %s to ONNX", self.description)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the TorchScript exporter's tracer and constant-folding chatter
                onnx_export.onnx_from_checkpoint(self.checkpoint_path(), fp32)
            self._onnx["fp32"] = fp32
        if precision == "fp16":
            convert = _fp16_converter()
            if convert is None:
                from nst_runtime.errors import BackendUnavailableError

                raise BackendUnavailableError("nst_export has no fp16_onnx_from_onnx yet")
            self._onnx["fp16"] = Path(convert(fp32, self.work_dir / "model.fp16.onnx"))
        if precision == "int8":
            self._onnx["int8"] = self._int8(fp32)
        return self._onnx[precision]

    def _int8(self, fp32: Path) -> Path:
        """``model.int8.onnx``, calibrated on scikit-image's sample photos with nst's recipe. Timing only: the
        quality gate is run and recorded but not enforced (a random network is no measure of INT8 quality;
        tools/int8_quality.py and docs/export.md are)."""
        from nst_export.int8 import Int8Options, int8_onnx_from_onnx
        from nst_runtime.sidecar import read_sidecar

        photos = write_sample_photos(self.work_dir / "photos")
        log.info("quantizing %s to INT8 (calibration on %d sample photos)", self.description, len(photos))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = int8_onnx_from_onnx(fp32, self.work_dir / "model.int8.onnx", calibration_dir=photos[0].parent,
                                      checkpoint=None if self.onnx_input else self.checkpoint_path(),
                                      options=Int8Options(min_psnr_db=1e-3))
        self.int8_parity = read_sidecar(out).parity
        return out

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


SAMPLE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "retina")


def int8_unavailable() -> str | None:
    """Why an INT8 file cannot be made here (None: it can): the export stage, ORT's quantizer, sample photos."""
    import importlib.util

    for module, why in (("nst_export", "the export stage is not installed (pip install 'nst[export]')"),
                        ("onnxruntime.quantization", "onnxruntime has no quantization tools"),
                        ("skimage", "INT8 is calibrated on photos: scikit-image's sample photos are the bench's "
                                    "(pip install scikit-image)")):
        try:
            if importlib.util.find_spec(module) is None:
                return why
        except ModuleNotFoundError:
            return why
    return None


def write_sample_photos(folder: Path) -> list[Path]:
    """scikit-image's bundled sample photos as PNG files in ``folder`` (the bench's INT8 calibration set)."""
    import skimage.data
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in SAMPLE_PHOTOS:
        path = folder / f"{name}.png"
        if not path.exists():
            Image.fromarray(np.asarray(getattr(skimage.data, name)())[..., :3]).save(path)
        paths.append(path)
    return paths


def _fp16_converter() -> Callable[..., Any] | None:
    for module in ("nst_export.fp16", "nst_export"):
        try:
            mod = __import__(module, fromlist=["fp16_onnx_from_onnx"])
        except ImportError:
            continue
        fn = getattr(mod, "fp16_onnx_from_onnx", None)
        if fn is not None:
            return fn
    return None


def _export_stage_available(*, fp16: bool = False) -> tuple[bool, str]:
    """The ONNX (and TensorRT) backends time a file that ``nst_export`` writes from the checkpoint, so they need
    the export stage itself (torch, onnx, onnxscript; onnxconverter-common for FP16), not only their runtime."""
    modules = ["nst_export.onnx_export", "onnx", "onnxscript", *(["onnxconverter_common"] if fp16 else [])]
    for module in modules:
        try:
            __import__(module)
        except ImportError as exc:
            return False, (f"making the ONNX file needs the export stage, and {exc.name or module} cannot be "
                           "imported; pip install 'nst[export]'")
    return True, ""


def _cuda_available() -> tuple[bool, str]:
    try:
        import torch
    except ImportError:
        return False, "torch is not installed"
    if not torch.cuda.is_available():
        return False, f"no CUDA GPU visible to torch {torch.__version__} on this machine"
    return True, ""


# --- the backends -----------------------------------------------------------------------------------


class Backend:
    """Base: subclasses set the class attributes and implement ``_setup`` and the two views."""

    name: ClassVar[str] = ""
    views: tuple[str, ...] = VIEWS
    fp16: bool = False

    def __init__(self, *, device: str, source: ModelSource) -> None:
        self.device = device
        self.source = source
        self.workload: Workload | None = None

    @property
    def precision(self) -> str:
        return "fp16" if self.fp16 else "fp32"

    def available(self) -> tuple[bool, str]:
        """``(True, "")`` or ``(False, why not)``; cheap, imports at most the backend's library."""
        return True, ""

    def setup(self, workload: Workload) -> None:
        self.workload = workload
        self._setup(workload)

    def _setup(self, workload: Workload) -> None:
        raise NotImplementedError

    def step(self, view: str) -> Callable[[], object]:
        """The callable the harness times for ``view``."""
        raise NotImplementedError

    def sync(self) -> None:
        """Wait for queued device work (no-op on CPU)."""

    def device_timer(self, view: str) -> DeviceTimer | None:
        return None

    def reset_peak_memory(self) -> None:
        from .harness import reset_peak_host_memory

        reset_peak_host_memory()

    def peak_memory(self) -> tuple[float | None, str]:
        """(MiB, kind): peak device memory on GPU, peak resident set of the process on CPU."""
        from .harness import peak_host_memory_mb

        return peak_host_memory_mb(), "host_rss_peak"

    def close(self) -> None:
        """Release what :meth:`setup` allocated (called between workloads)."""

    def info(self) -> dict[str, Any]:
        return {}


class TorchBackend(Backend):
    """PyTorch eager (FP32), CUDA FP16 channels_last, or ``torch.compile`` (CUDA)."""

    name = "torch"

    def __init__(self, *, device: str, source: ModelSource, fp16: bool = False, compile: bool = False) -> None:
        super().__init__(device=device, source=source)
        self.fp16 = fp16
        self.compile = compile
        self._net: Any = None
        self._compute_input: Any = None
        self._host: np.ndarray | None = None

    @property
    def label(self) -> str:
        return "torch-compile" if self.compile else "torch-fp16" if self.fp16 else "torch"

    def available(self) -> tuple[bool, str]:
        if self.source.onnx_input:
            return False, "--checkpoint is an ONNX file: there is no PyTorch network to time (the ONNX backends " \
                          "time it)"
        try:
            import torch  # noqa: F401
        except ImportError:
            return False, "torch is not installed"
        if self.device == "cuda":
            return _cuda_available()
        if self.fp16:
            return False, "torch-fp16 (channels_last) is a CUDA backend; run with --device cuda on a GPU"
        if self.compile:
            return False, "torch-compile is timed on CUDA only (inductor on CPU needs a C++ toolchain and " \
                          "minutes of compilation per shape); run with --device cuda on a GPU"
        return True, ""

    def _setup(self, workload: Workload) -> None:
        import torch

        torch.backends.cudnn.benchmark = True
        net = self.source.torch_net().to(self.device)
        dtype = torch.float16 if self.fp16 else torch.float32
        self._fmt = torch.channels_last if self.fp16 or self.compile else torch.contiguous_format
        net = net.to(dtype=dtype, memory_format=self._fmt)
        if self.compile:
            # A fresh compile per shape: without the reset, dynamo's per-code-object recompile limit would
            # silently fall back to eager after a few sizes.
            torch._dynamo.reset()
            net = torch.compile(net, mode="max-autotune-no-cudagraphs", dynamic=False)
        self._net = net
        self._dtype = dtype
        ph, pw = workload.padded
        gen = torch.Generator().manual_seed(0)
        x = torch.rand((workload.batch, 3, ph, pw), generator=gen) * 255.0
        self._compute_input = x.to(self.device, dtype=dtype).contiguous(memory_format=self._fmt)
        self._host = workload.host_image()

    def _compute(self) -> object:
        import torch

        with torch.inference_mode():
            return self._net(self._compute_input)

    def _e2e(self) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        assert self._host is not None and self.workload is not None
        h, w = self.workload.height, self.workload.width
        ph, pw = self.workload.padded
        with torch.inference_mode():
            t = torch.from_numpy(self._host).to(self.device)
            x = t.permute(0, 3, 1, 2).to(self._dtype)
            if (ph, pw) != (h, w):
                x = F.pad(x, (0, pw - w, 0, ph - h), mode="reflect")
            x = x.contiguous(memory_format=self._fmt)
            y = self._net(x)[:, :, :h, :w].clamp(0.0, 255.0).round().to(torch.uint8)
            return y.permute(0, 2, 3, 1).cpu().numpy()  # .cpu() waits for the device

    def step(self, view: str) -> Callable[[], object]:
        return self._compute if view == "compute" else self._e2e

    def sync(self) -> None:
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()

    def device_timer(self, view: str) -> DeviceTimer | None:
        if self.device != "cuda" or view != "compute":
            return None
        import torch

        def timer(fn: Callable[[], object]) -> float:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return float(start.elapsed_time(end))

        return timer

    def reset_peak_memory(self) -> None:
        if self.device == "cuda":
            import torch

            torch.cuda.reset_peak_memory_stats()
        else:
            super().reset_peak_memory()

    def peak_memory(self) -> tuple[float | None, str]:
        if self.device == "cuda":
            import torch

            return torch.cuda.max_memory_allocated() / 2**20, "device_allocated_peak"
        return super().peak_memory()

    def close(self) -> None:
        self._net = self._compute_input = self._host = None
        if self.device == "cuda":
            import torch

            torch.cuda.empty_cache()

    def info(self) -> dict[str, Any]:
        import torch

        return {"torch": torch.__version__, "threads": torch.get_num_threads(),
                "memory_format": "channels_last" if (self.fp16 or self.compile) else "contiguous"}


class OrtBackend(Backend):
    """ONNX Runtime on the exported uint8 NHWC graph: CPU provider, or CUDA provider (FP32 / FP16 ONNX)."""

    name = "ort"

    def __init__(self, *, device: str, source: ModelSource, fp16: bool = False, int8: bool = False) -> None:
        super().__init__(device=device, source=source)
        self.fp16 = fp16
        self.int8 = int8
        self._session: Any = None
        self._host: np.ndarray | None = None
        self._binding: Any = None
        # On a CPU the host is the device: the two views are the same call.
        self.views = VIEWS if device == "cuda" else ("e2e",)

    @property
    def label(self) -> str:
        return "ort-fp16" if self.fp16 else "ort-int8" if self.int8 else "ort"

    @property
    def precision(self) -> str:
        return "int8" if self.int8 else super().precision

    @property
    def provider(self) -> str:
        return "CUDAExecutionProvider" if self.device == "cuda" else "CPUExecutionProvider"

    def available(self) -> tuple[bool, str]:
        try:
            import onnxruntime as ort
        except ImportError:
            return False, "onnxruntime is not installed (pip install 'nst[runtime]')"
        if self.provider not in ort.get_available_providers():
            return False, (f"onnxruntime {ort.__version__} has no {self.provider} (available: "
                           f"{', '.join(ort.get_available_providers())}); install onnxruntime-gpu on a GPU machine")
        if self.fp16 and self.device != "cuda":
            return False, "ort-fp16 targets ONNX Runtime's CUDA provider; run with --device cuda on a GPU"
        if self.fp16 and _fp16_converter() is None:
            return False, "nst_export.fp16_onnx_from_onnx is not available in this checkout"
        if self.int8:
            if self.device != "cpu":
                return False, "ort-int8 is timed on the CPU (on GPUs INT8 is TensorRT's); run with --device cpu"
            why = int8_unavailable()
            if why:
                return False, why
        return _export_stage_available(fp16=self.fp16)

    def _setup(self, workload: Workload) -> None:
        import onnxruntime as ort

        if self._session is None:
            path = self.source.onnx_path("fp16" if self.fp16 else "int8" if self.int8 else "fp32")
            opts = ort.SessionOptions()
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            opts.log_severity_level = 3
            self._session = ort.InferenceSession(str(path), sess_options=opts, providers=[self.provider])
            self._in = self._session.get_inputs()[0].name
            self._out = self._session.get_outputs()[0].name
        self._host = workload.host_image()
        if self.device == "cuda":
            binding = self._session.io_binding()
            x = ort.OrtValue.ortvalue_from_numpy(self._host, "cuda", 0)
            binding.bind_ortvalue_input(self._in, x)
            binding.bind_output(self._out, "cuda", 0)
            self._binding, self._device_input = binding, x

    def _compute(self) -> object:
        self._session.run_with_iobinding(self._binding)
        return None

    def _e2e(self) -> np.ndarray:
        return self._session.run([self._out], {self._in: self._host})[0]

    def step(self, view: str) -> Callable[[], object]:
        return self._compute if view == "compute" else self._e2e

    def peak_memory(self) -> tuple[float | None, str]:
        if self.device == "cuda":
            return None, "not_measured"  # ORT's arena is not visible through torch's allocator
        return super().peak_memory()

    def close(self) -> None:
        self._binding = self._host = None

    def info(self) -> dict[str, Any]:
        import onnxruntime as ort

        return {"onnxruntime": ort.__version__, "provider": self.provider,
                "session_options": "onnxruntime defaults (memory arena on)"}


class OpenVinoBackend(Backend):
    """Raw OpenVINO on the same ONNX file (FP32, or the INT8 QDQ file): ``compile_model`` with the latency hint
    and f32 precision (as nst's runner), one infer request, uint8 NHWC host arrays in and out. CPU only."""

    name = "openvino"

    def __init__(self, *, device: str, source: ModelSource, int8: bool = False) -> None:
        super().__init__(device=device, source=source)
        self.int8 = int8
        self.views = ("e2e",)
        self._compiled: Any = None
        self._request: Any = None
        self._host: np.ndarray | None = None

    @property
    def label(self) -> str:
        return "openvino-int8" if self.int8 else "openvino"

    @property
    def precision(self) -> str:
        return "int8" if self.int8 else "fp32"

    def available(self) -> tuple[bool, str]:
        if self.device != "cpu":
            return False, f"{self.label} is timed on the CPU; run with --device cpu"
        import importlib.util

        if importlib.util.find_spec("openvino") is None:
            return False, "openvino is not installed (pip install 'nst[openvino]')"
        if self.int8:
            why = int8_unavailable()
            if why:
                return False, why
        return _export_stage_available()

    def _setup(self, workload: Workload) -> None:
        if self._compiled is None:
            from nst_runtime.openvino_backend import shared_core

            path = self.source.onnx_path("int8" if self.int8 else "fp32")
            # the process's one Core: Cores released out of order break Ctrl-C (see shared_core)
            self._compiled = shared_core().compile_model(
                str(path), "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"})
            self._request = self._compiled.create_infer_request()
            self._output = self._compiled.output(0)
        self._host = workload.host_image()

    def _e2e(self) -> np.ndarray:
        self._request.infer({0: self._host}, share_inputs=True)
        return np.array(self._request.get_tensor(self._output).data, copy=True)

    def step(self, view: str) -> Callable[[], object]:
        return self._e2e

    def close(self) -> None:
        self._host = None

    def info(self) -> dict[str, Any]:
        import openvino as ov

        return {"openvino": ov.__version__, "hint": "LATENCY", "inference_precision": "f32"}


class StylizerBackend(Backend):
    """What an nst user gets: ``nst_runtime.Stylizer.open(file)`` (backend auto) and ``stylize`` on host numpy
    images, FP32 file or INT8 file. Next to the raw engines' rows it shows the runtime's overhead and whether
    ``auto`` picked the fastest engine."""

    name = "nst"

    def __init__(self, *, device: str, source: ModelSource, int8: bool = False) -> None:
        super().__init__(device=device, source=source)
        self.int8 = int8
        self.views = ("e2e",)
        self._stylizer: Any = None
        self._images: list[np.ndarray] = []

    @property
    def label(self) -> str:
        return "nst-int8" if self.int8 else "nst"

    @property
    def precision(self) -> str:
        return "int8" if self.int8 else "fp32"

    def available(self) -> tuple[bool, str]:
        if self.int8:
            if self.device != "cpu":
                return False, "nst-int8 is timed on the CPU; run with --device cpu"
            why = int8_unavailable()
            if why:
                return False, why
        if self.device == "cuda":
            from nst_runtime.backends import choose_backend
            from nst_runtime.errors import NstError

            try:
                choose_backend("onnx", device="cuda")
            except NstError as exc:
                return False, str(exc)
        return _export_stage_available()

    def _setup(self, workload: Workload) -> None:
        if self._stylizer is None:
            from nst_runtime import Stylizer

            path = self.source.onnx_path("int8" if self.int8 else "fp32")
            self._stylizer = Stylizer.open(path, device=self.device)
        self._images = list(workload.host_image())

    def _e2e(self) -> object:
        if len(self._images) == 1:
            return self._stylizer.stylize(self._images[0])
        return self._stylizer.stylize_batch(self._images, batch_size=len(self._images))

    def step(self, view: str) -> Callable[[], object]:
        return self._e2e

    def close(self) -> None:
        self._images = []
        if self._stylizer is not None:
            self._runtime_backend = self._stylizer.backend
            self._stylizer.close()
            self._stylizer = None

    def info(self) -> dict[str, Any]:
        return {"runtime_backend": self._stylizer.backend if self._stylizer is not None
                else getattr(self, "_runtime_backend", None)}


class TensorRTBackend(Backend):
    """A TensorRT engine built by ``nst_export.engine_from_onnx`` from the (FP16) ONNX, one profile per shape.

    Device buffers are torch CUDA tensors (torch is a bench dependency anyway), addressed with
    ``set_tensor_address`` and run with ``execute_async_v3``: the TensorRT 10.x / 11.x API.
    """

    name = "trt"

    def __init__(self, *, device: str, source: ModelSource, fp16: bool = False) -> None:
        super().__init__(device=device, source=source)
        self.fp16 = fp16
        self._engine: Any = None
        self._context: Any = None

    @property
    def label(self) -> str:
        return "trt-fp16" if self.fp16 else "trt"

    def available(self) -> tuple[bool, str]:
        if self.device != "cuda":
            return False, "TensorRT needs a CUDA GPU; run with --device cuda on a GPU machine"
        ok, why = _cuda_available()
        if not ok:
            return ok, why
        try:
            import tensorrt  # noqa: F401
        except ImportError:
            return False, "the tensorrt Python package is not installed (`import tensorrt` fails)"
        if _engine_builder() is None:
            return False, "nst_export.engine_from_onnx is not available in this checkout"
        if self.fp16 and _fp16_converter() is None:
            return False, "nst_export.fp16_onnx_from_onnx is not available in this checkout"
        return _export_stage_available(fp16=self.fp16)

    def _setup(self, workload: Workload) -> None:
        import tensorrt as trt
        import torch

        onnx = self.source.onnx_path("fp16" if self.fp16 else "fp32")
        shape = (workload.batch, workload.height, workload.width)
        engine_path = self.source.work_dir / f"model.{self.label}.{workload.batch}x{workload.size}.engine"
        from nst_runtime.sidecar import ShapeProfile

        build = _engine_builder()
        assert build is not None
        # One profile fixed to the measured shape: the best case TensorRT can do for it. A timing cache shared
        # across shapes keeps the rebuilds short.
        build(onnx, engine_path, profile=ShapeProfile(min=shape, opt=shape, max=shape),
              timing_cache=self.source.work_dir / "timing.cache")
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
        self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        self._in = next(n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self._out = next(n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        nhwc = (workload.batch, workload.height, workload.width, 3)
        self._context.set_input_shape(self._in, nhwc)
        self._host = torch.from_numpy(workload.host_image())
        self._host_out = torch.empty(nhwc, dtype=torch.uint8)
        self._dev_in = self._host.to("cuda")
        self._dev_out = torch.empty(nhwc, dtype=torch.uint8, device="cuda")
        self._context.set_tensor_address(self._in, self._dev_in.data_ptr())
        self._context.set_tensor_address(self._out, self._dev_out.data_ptr())
        self._stream = torch.cuda.Stream()

    def _compute(self) -> object:
        self._context.execute_async_v3(self._stream.cuda_stream)
        return None

    def _e2e(self) -> object:
        import torch

        with torch.cuda.stream(self._stream):
            self._dev_in.copy_(self._host)
            self._context.execute_async_v3(self._stream.cuda_stream)
            self._host_out.copy_(self._dev_out)
        self._stream.synchronize()
        return self._host_out

    def step(self, view: str) -> Callable[[], object]:
        return self._compute if view == "compute" else self._e2e

    def sync(self) -> None:
        self._stream.synchronize()

    def device_timer(self, view: str) -> DeviceTimer | None:
        if view != "compute":
            return None
        import torch

        def timer(fn: Callable[[], object]) -> float:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record(self._stream)
            fn()
            end.record(self._stream)
            end.synchronize()
            return float(start.elapsed_time(end))

        return timer

    def peak_memory(self) -> tuple[float | None, str]:
        if self._engine is None:
            return None, "not_measured"
        size = getattr(self._engine, "device_memory_size_v2", None) or getattr(self._engine, "device_memory_size", 0)
        return float(size) / 2**20, "engine_activation_memory"

    def close(self) -> None:
        self._context = self._engine = None

    def info(self) -> dict[str, Any]:
        import tensorrt as trt

        return {"tensorrt": trt.__version__}


def _engine_builder() -> Callable[..., Any] | None:
    for module in ("nst_export.tensorrt_engine", "nst_export"):
        try:
            mod = __import__(module, fromlist=["engine_from_onnx"])
        except ImportError:
            continue
        fn = getattr(mod, "engine_from_onnx", None)
        if fn is not None:
            return fn
    return None


#: every feed-forward backend name the CLI accepts, in report order; "gatys" is handled by nst_bench.gatys
FEED_FORWARD = ("torch", "torch-fp16", "torch-compile", "ort", "ort-fp16", "ort-int8", "openvino", "openvino-int8",
                "nst", "nst-int8", "trt", "trt-fp16")


def make_backend(name: str, *, device: str, source: ModelSource) -> Backend:
    """The backend called ``name`` (one of :data:`FEED_FORWARD`)."""
    factories: dict[str, Callable[[], Backend]] = {
        "torch": lambda: TorchBackend(device=device, source=source),
        "torch-fp16": lambda: TorchBackend(device=device, source=source, fp16=True),
        "torch-compile": lambda: TorchBackend(device=device, source=source, compile=True),
        "ort": lambda: OrtBackend(device=device, source=source),
        "ort-fp16": lambda: OrtBackend(device=device, source=source, fp16=True),
        "ort-int8": lambda: OrtBackend(device=device, source=source, int8=True),
        "openvino": lambda: OpenVinoBackend(device=device, source=source),
        "openvino-int8": lambda: OpenVinoBackend(device=device, source=source, int8=True),
        "nst": lambda: StylizerBackend(device=device, source=source),
        "nst-int8": lambda: StylizerBackend(device=device, source=source, int8=True),
        "trt": lambda: TensorRTBackend(device=device, source=source),
        "trt-fp16": lambda: TensorRTBackend(device=device, source=source, fp16=True),
    }
    if name not in factories:
        from nst_runtime.errors import UsageError

        raise UsageError(f"unknown backend {name!r}; choose from {', '.join((*FEED_FORWARD, 'gatys'))}.")
    return factories[name]()
