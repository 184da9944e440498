"""The training engine: typed config, on-device batches and augmentation, an explicit loop,
atomic safetensors checkpoints and resume."""
from .config import TrainConfig, load_config, make_config
from .run import train

__all__ = ["TrainConfig", "load_config", "make_config", "train"]
