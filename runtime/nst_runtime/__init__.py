"""nst lean runtime: run exported style networks (ONNX files, TensorRT engines) without torch.

Importing this package loads numpy and Pillow only; onnxruntime, tensorrt, cuda-python and PyAV are
imported when a backend or video is first used::

    from PIL import Image
    from nst_runtime import Stylizer

    with Stylizer.open("candy.onnx") as stylizer:
        stylizer.stylize(Image.open("photo.jpg")).save("photo.candy.png")
"""

from .errors import (
    BackendUnavailableError,
    BatchError,
    ImageError,
    MediaError,
    ModelFileError,
    NstError,
    UsageError,
    WriteError,
)
from .images import read_image, save_image
from .sidecar import Sidecar, read_sidecar
from .stylizer import Stylizer

__all__ = [
    "BackendUnavailableError",
    "BatchError",
    "ImageError",
    "MediaError",
    "ModelFileError",
    "NstError",
    "Sidecar",
    "Stylizer",
    "UsageError",
    "WriteError",
    "read_image",
    "read_sidecar",
    "save_image",
]
