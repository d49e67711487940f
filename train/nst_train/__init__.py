"""nst training stage: TransformerNet, VGG-16 perceptual losses, the training loop and the Gatys baseline."""

from .checkpoint import Checkpoint, CheckpointMetadata, load_checkpoint, save_checkpoint
from .gatys import GatysResult, IterationRecord, gatys_stylize
from .imageio import load_image_tensor, save_image_tensor
from .losses import LossWeights, gram_matrix, perceptual_loss, total_variation
from .model import ARCHITECTURE, TransformerNet, count_flops
from .samples import write_sample_content, write_sample_style

# the function ``train`` stays in ``nst_train.train``: exporting it here would shadow that submodule
from .train import TrainConfig, TrainResult
from .vgg import VGG16Features, load_vgg16

__all__ = [
    "ARCHITECTURE",
    "Checkpoint",
    "CheckpointMetadata",
    "GatysResult",
    "IterationRecord",
    "LossWeights",
    "TrainConfig",
    "TrainResult",
    "TransformerNet",
    "VGG16Features",
    "count_flops",
    "gatys_stylize",
    "gram_matrix",
    "load_checkpoint",
    "load_image_tensor",
    "load_vgg16",
    "perceptual_loss",
    "save_checkpoint",
    "save_image_tensor",
    "total_variation",
    "write_sample_content",
    "write_sample_style",
]
