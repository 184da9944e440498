"""visionlab: an image dataset in, a complete, reproducible classification study out."""
from .data import DataConfig, Dataset, load_dataset
from .errors import UserError

__version__ = "0.1.0"
__all__ = ["DataConfig", "Dataset", "UserError", "load_dataset", "__version__"]
