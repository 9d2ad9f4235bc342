"""EAT: adversarially robust deep metric learning with Ensemble Adversarial Training."""

from .checkpoint import CheckpointError, EmbeddingModel, load_model, save_checkpoint

__all__ = ["CheckpointError", "EmbeddingModel", "load_model", "save_checkpoint"]
__version__ = "0.1.0"
