"""``python -m visionlab``: the same as the ``visionlab`` command."""
from .cli import run

run()
