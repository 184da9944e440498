"""Studies: one command from a dataset to a comparative HTML report."""
from .config import StudyConfig, default_experiments, load_study
from .runner import run_study

__all__ = ["StudyConfig", "default_experiments", "load_study", "run_study"]
