"""nst training stage: TransformerNet, VGG-16 perceptual losses, the training loop and the Gatys baseline."""

from .checkpoint import Checkpoint, CheckpointMetadata, load_checkpoint, save_checkpoint
from .losses import LossWeights, gram_matrix, perceptual_loss, total_variation
from .model import ARCHITECTURE, TransformerNet, count_flops
from .vgg import VGG16Features, load_vgg16

__all__ = [
    "ARCHITECTURE",
    "Checkpoint",
    "CheckpointMetadata",
    "LossWeights",
    "TransformerNet",
    "VGG16Features",
    "count_flops",
    "gram_matrix",
    "load_checkpoint",
    "load_vgg16",
    "perceptual_loss",
    "save_checkpoint",
    "total_variation",
]
