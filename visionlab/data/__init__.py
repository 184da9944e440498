"""The data layer: any supported source -> train/val/test uint8 arrays, decoded once and cached."""
from .dataset import DataConfig, Dataset, Split, load_dataset
from .downloads import BUILTIN

__all__ = ["BUILTIN", "DataConfig", "Dataset", "Split", "load_dataset"]
