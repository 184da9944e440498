"""A `visionlab` command line that SIGKILLs itself partway, for the kill-and-resume tests.

    python -c DRIVER step N  <visionlab args>   # after the N-th optimiser step of the run
    python -c DRIVER save N  <visionlab args>   # with the N-th safetensors file half written

The kill is real (no Python cleanup runs). Under data-parallel training every rank runs the
driver, so all ranks die at the same step and none is left waiting on the others.
"""

DRIVER = r'''
import os, signal, sys
from visionlab.cli import main
from visionlab.training import checkpoint, run
mode, at = sys.argv[1], int(sys.argv[2])
count = [0]
if mode == "step":  # SIGKILL after the at-th optimiser step of the run
    real = run.train_one_epoch
    def train_one_epoch(*args, **kwargs):
        inner = kwargs.get("on_step")
        def on_step(*a):
            if inner:
                inner(*a)
            count[0] += 1
            if count[0] == at:
                os.kill(os.getpid(), signal.SIGKILL)
        kwargs["on_step"] = on_step
        return real(*args, **kwargs)
    run.train_one_epoch = train_one_epoch
else:  # "save": SIGKILL with the at-th safetensors file half written
    real_save = checkpoint.save_file
    def save_file(tensors, filename, metadata=None):
        count[0] += 1
        real_save(tensors, filename, metadata=metadata)
        if count[0] == at:
            with open(filename, "r+b") as f:
                f.truncate(os.path.getsize(filename) // 2)
            os.kill(os.getpid(), signal.SIGKILL)
    checkpoint.save_file = save_file
sys.exit(main(sys.argv[3:]))
'''
