"""Optimisers (adam, adamw, sgd), learning-rate schedules (onecycle, cosine, step, triangle) and
airbench's lookahead averaging of the weights, small.

Why not ``torch.optim``: its ``Optimizer`` imports ``torch._dynamo`` (and with it inductor) on
first use, for its compile hooks, which costs 1.3-2 s per process on this CPU; that is a sixth
of a whole two-epoch MNIST run, and visionlab never compiles the optimiser step. The updates
here call the same fused ATen kernels that ``torch.optim.Adam/AdamW/SGD(fused=True)`` call
(``torch._fused_adam_``, ``_fused_adamw_``, ``_fused_sgd_``: one kernel for all parameters),
so the arithmetic is PyTorch's; the schedules are the closed forms of ``OneCycleLR``,
``CosineAnnealingLR`` and ``MultiStepLR``. tests/test_optim.py checks both against
``torch.optim`` step by step.

The state layout is ``torch.optim``'s (``state_dict()`` -> {"state": {i: {...}}, "param_groups":
[...]}), so checkpoint.py stores it unchanged. ``param_groups[0]["lr"]`` is the current rate.
"""
from __future__ import annotations

import math

import torch

from ..errors import UserError

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("onecycle", "cosine", "step", "triangle", "none")
TRIANGLE = ((0.0, 0.2), (0.23, 1.0), (1.0, 0.07))  # (fraction of steps, lr multiplier): airbench94's schedule


class Optimizer:
    """One parameter group; ``step()`` applies the update to every parameter that has a gradient."""

    slots: tuple[str, ...] = ()  # per-parameter state tensors, created on the first step

    def __init__(self, params, **group):
        params = list(params)
        if not params:
            raise UserError("every parameter is frozen: nothing to train (check freeze:)")
        self.param_groups = [{**group, "params": params}]  # torch's layout: GradScaler reads it
        self.state: dict[int, dict[str, torch.Tensor]] = {}

    @property
    def group(self) -> dict:
        return self.param_groups[0]

    @property
    def params(self) -> list[torch.Tensor]:
        return self.param_groups[0]["params"]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    def _slot(self, i: int, p: torch.Tensor) -> dict[str, torch.Tensor]:
        if i not in self.state:
            self.state[i] = {"step": torch.zeros((), dtype=torch.float32, device=p.device),
                             **{name: torch.zeros_like(p, memory_format=torch.preserve_format) for name in self.slots}}
        return self.state[i]

    @torch.no_grad()
    def step(self) -> None:
        live = [(i, p) for i, p in enumerate(self.params) if p.grad is not None]
        by_device: dict[tuple, list] = {}  # the fused kernels take one device and dtype per call
        for i, p in live:
            by_device.setdefault((p.device, p.dtype), []).append((i, p))
        for items in by_device.values():
            states = [self._slot(i, p) for i, p in items]
            self._update([p for _, p in items], [p.grad for _, p in items], states)

    def _update(self, params, grads, states) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {"state": {i: dict(s) for i, s in self.state.items()},
                "param_groups": [{**{k: v for k, v in self.group.items() if k != "params"},
                                  "params": list(range(len(self.params)))}]}

    def load_state_dict(self, state: dict) -> None:
        groups = state["param_groups"]
        if len(groups) != 1 or len(groups[0]["params"]) != len(self.params):
            raise UserError("the checkpoint's optimiser state is for a different set of parameters")
        self.param_groups[0].update({k: v for k, v in groups[0].items() if k != "params"})
        self.state = {}
        for key, entries in state["state"].items():
            i = int(key)
            p = self.params[i]
            # copied into tensors laid out like the parameter: the fused kernels walk parameter,
            # gradient and state as one flat buffer, and a checkpoint stores channels_last
            # weights' state in the default layout
            self.state[i] = {name: (torch.tensor(float(value), device=p.device) if name == "step" else
                                    torch.empty_like(p, memory_format=torch.preserve_format).copy_(value))
                             for name, value in entries.items()}


class Adam(Optimizer):
    """Adam (``decoupled=False``: L2 added to the gradient) or AdamW (decoupled weight decay)."""

    slots = ("exp_avg", "exp_avg_sq")

    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                 decoupled: bool = False):
        super().__init__(params, lr=lr, betas=list(betas), eps=eps, weight_decay=weight_decay)
        self.kernel = torch._fused_adamw_ if decoupled else torch._fused_adam_

    def _update(self, params, grads, states) -> None:
        g = self.group
        steps = [s["step"] for s in states]
        torch._foreach_add_(steps, 1)  # the kernel reads the incremented step for bias correction
        self.kernel(params, grads, [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states], [], steps,
                    lr=g["lr"], beta1=g["betas"][0], beta2=g["betas"][1], weight_decay=g["weight_decay"],
                    eps=g["eps"], amsgrad=False, maximize=False)


class SGD(Optimizer):
    """SGD with (Nesterov) momentum; with momentum 0, plain SGD."""

    def __init__(self, params, lr: float, momentum: float = 0.9, nesterov: bool = True, weight_decay: float = 0.0):
        super().__init__(params, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0,
                         weight_decay=weight_decay)
        self.slots = ("momentum_buffer",) if momentum > 0 else ()

    def _update(self, params, grads, states) -> None:
        g = self.group
        torch._foreach_add_([s["step"] for s in states], 1)
        buffers = [s["momentum_buffer"] for s in states] if g["momentum"] > 0 else []
        # is_first_step=False always: on a first step torch's kernel sets the buffer to the
        # gradient, which is what momentum * 0 + (1 - dampening) * gradient gives with the zero
        # buffers here and no dampening; asking the device's step count would stall every step
        torch._fused_sgd_(params, grads, buffers, weight_decay=g["weight_decay"], momentum=g["momentum"], lr=g["lr"],
                          dampening=0.0, nesterov=g["nesterov"], maximize=False, is_first_step=False)


def make_optimizer(model, name: str, lr: float, weight_decay: float, momentum: float) -> Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if name in ("adam", "adamw"):
        return Adam(params, lr=lr, weight_decay=weight_decay, decoupled=name == "adamw")
    if name == "sgd":
        return SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise UserError(f"Invalid optimizer {name}. Only {', '.join(OPTIMIZERS)} are supported.")


class Schedule:
    """Sets the optimiser's lr (and, for one-cycle, Adam's beta1 or SGD's momentum) from the step count.

    ``step()`` after each optimiser step, as with torch's schedulers; ``last_epoch`` counts them.
    """

    def __init__(self, optimizer: Optimizer, rule, momentum_rule=None):
        self.optimizer, self.rule, self.momentum_rule = optimizer, rule, momentum_rule
        self.last_epoch = 0
        self._apply()

    def _apply(self) -> None:
        group = self.optimizer.group
        group["lr"] = self.rule(self.last_epoch)
        if self.momentum_rule is not None:
            m = self.momentum_rule(self.last_epoch)
            if "betas" in group:
                group["betas"] = [m, group["betas"][1]]
            else:
                group["momentum"] = m

    def step(self) -> None:
        self.last_epoch += 1
        self._apply()

    def state_dict(self) -> dict:
        return {"last_epoch": self.last_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.last_epoch = int(state["last_epoch"])
        self._apply()


def _cos(start: float, end: float, fraction: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * fraction) + 1)


def one_cycle(max_value: float, total_steps: int, pct_start: float, div_factor: float = 25.0,
              final_div_factor: float = 1e4):
    """torch's OneCycleLR (cosine, two phases): warm up to max_value, then anneal far below the start."""
    initial = max_value / div_factor
    minimum = initial / final_div_factor
    peak = float(pct_start * total_steps) - 1
    end = total_steps - 1

    def rule(t: int) -> float:
        if t <= peak and peak > 0:
            return _cos(initial, max_value, t / peak)
        return _cos(max_value, minimum, (t - peak) / (end - peak))

    def momentum(t: int, low: float = 0.85, high: float = 0.95) -> float:
        return _cos(high, low, t / peak) if t <= peak and peak > 0 else _cos(low, high, (t - peak) / (end - peak))

    return rule, momentum


def triangle(lr: float, total_steps: int):
    """Piecewise-linear lr through the ``TRIANGLE`` points (airbench94's ``triangle``, as a closed form)."""
    xs = [int(fraction * total_steps) for fraction, _ in TRIANGLE]
    ys = [lr * multiplier for _, multiplier in TRIANGLE]

    def rule(t: int) -> float:
        t = min(max(t, 0), total_steps)
        for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
            if t <= x1 and x1 > x0:
                return y0 + (y1 - y0) * (t - x0) / (x1 - x0)
        return ys[-1]

    return rule


def make_scheduler(optimizer: Optimizer, name: str, lr: float, total_steps: int) -> Schedule | None:
    if name == "onecycle":
        rule, momentum = one_cycle(lr, max(total_steps, 2), pct_start=0.25)
        cycles = "betas" in optimizer.group or optimizer.group.get("momentum", 0) > 0
        return Schedule(optimizer, rule, momentum if cycles else None)  # as torch: momentum 0.95 -> 0.85 -> 0.95
    if name == "cosine":
        total = max(total_steps, 1)
        return Schedule(optimizer, lambda t: _cos(lr, 0.0, min(t, total) / total))
    if name == "step":  # x0.1 at 50% and 75% of training
        milestones = [int(total_steps * 0.5), int(total_steps * 0.75)]
        return Schedule(optimizer, lambda t: lr * 0.1 ** sum(t >= m for m in milestones))
    if name == "triangle":  # airbench94: linear 0.2 -> 1 x lr over the first 23% of steps, then -> 0.07;
        return Schedule(optimizer, triangle(lr, max(total_steps, 1)))  # momentum stays as set
    if name == "none":
        return None
    raise UserError(f"Invalid schedule {name}. Only {', '.join(SCHEDULES)} are supported.")


class Lookahead:
    """airbench94's lookahead: an exponential moving average of the weights that the weights
    are pulled back onto, for the last 70% of training.

    From ``START`` of the way through training, every ``EVERY`` steps the average moves towards
    the model, ema = rho * ema + (1 - rho) * model, and the model is set to it. rho = BASE **
    EVERY * (step / total) ** POWER grows from about 0.02 to 0.77: the weights move freely at
    first and are averaged strongly at the end. Batch-norm statistics are averaged too (every
    float entry of the state dict, as airbench). ``end_epoch`` leaves the model equal to the
    average, so at an epoch boundary the average is the model itself: a checkpoint needs no
    copy of it, and ``sync`` rebuilds it on resume.
    """

    EVERY, BASE, POWER, START = 5, 0.95, 3.0, 0.3

    def __init__(self, model: torch.nn.Module, total_steps: int):
        self.total = max(total_steps, 1)
        self.tensors = [t for t in model.state_dict().values() if t.is_floating_point()]  # live views
        first = math.ceil(self.START * self.total)
        self.first = first + (-first) % self.EVERY  # the first step at which the average exists
        self.step, self.ema = 0, None

    def sync(self, step: int) -> None:
        """Set the step count (a start, a resume or a redone epoch); the average, if it exists by
        then, is the model's current weights (true at every epoch boundary)."""
        self.step = step
        self.ema = [t.detach().clone() for t in self.tensors] if step >= self.first else None

    @torch.no_grad()
    def after_step(self) -> None:
        self.step += 1
        if self.step < self.first or self.step % self.EVERY:
            return
        if self.ema is None:
            self.ema = [t.detach().clone() for t in self.tensors]
            return
        rho = self.BASE ** self.EVERY * (self.step / self.total) ** self.POWER
        torch._foreach_lerp_(self.ema, self.tensors, 1.0 - rho)
        torch._foreach_copy_(self.tensors, self.ema)

    @torch.no_grad()
    def end_epoch(self) -> None:
        if self.ema is not None:
            torch._foreach_copy_(self.tensors, self.ema)
