"""visionlab's optimisers and schedules against torch.optim, step by step."""
from __future__ import annotations

import pytest
import torch

from visionlab.errors import UserError
from visionlab.training.optim import Lookahead, make_optimizer, make_scheduler


def _net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(64, 3))


def _reference(model, name: str, lr: float, weight_decay: float, schedule: str, total: int):
    params = list(model.parameters())
    if name == "adam":
        opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    elif name == "adamw":
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    sched = {"onecycle": lambda: torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, pct_start=0.25),
             "cosine": lambda: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total),
             "step": lambda: torch.optim.lr_scheduler.MultiStepLR(opt, [int(total * 0.5), int(total * 0.75)], 0.1),
             "none": lambda: None}[schedule]()
    return opt, sched


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
@pytest.mark.parametrize("schedule", ["onecycle", "cosine", "step", "none"])
def test_matches_torch_optim(name, schedule):
    total, lr, wd = 12, 0.01, 0.05
    ours_model, ref_model = _net(), _net()
    opt = make_optimizer(ours_model, name, lr, wd, momentum=0.9)
    sched = make_scheduler(opt, schedule, lr, total)
    ref_opt, ref_sched = _reference(ref_model, name, lr, wd, schedule, total)
    x, y = torch.randn(8, 1, 6, 6), torch.randint(0, 3, (8,))
    for step in range(total):
        for model, o in ((ours_model, opt), (ref_model, ref_opt)):
            o.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            o.step()
        for s in (sched, ref_sched):
            if s is not None:
                s.step()
        assert opt.param_groups[0]["lr"] == pytest.approx(ref_opt.param_groups[0]["lr"], rel=1e-9, abs=1e-15), step
        for a, b in zip(ours_model.parameters(), ref_model.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    moved = sum((a - b).abs().sum() for a, b in zip(ours_model.parameters(), _net().parameters()))
    assert moved > 0


def test_state_dict_round_trip_continues_identically():
    """Save after 3 steps, load into fresh objects, take 3 more: the same as 6 uninterrupted."""
    x, y = torch.randn(8, 1, 6, 6), torch.randint(0, 3, (8,))

    def run(model, opt, sched, steps):
        for _ in range(steps):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            sched.step()

    straight = _net()
    opt = make_optimizer(straight, "adam", 0.01, 0.0, 0.9)
    run(straight, opt, make_scheduler(opt, "onecycle", 0.01, 6), 6)

    first = _net()
    opt = make_optimizer(first, "adam", 0.01, 0.0, 0.9)
    sched = make_scheduler(opt, "onecycle", 0.01, 6)
    run(first, opt, sched, 3)
    saved_opt, saved_sched, saved_model = opt.state_dict(), sched.state_dict(), first.state_dict()
    resumed = _net(seed=1)
    resumed.load_state_dict(saved_model)
    opt = make_optimizer(resumed, "adam", 0.01, 0.0, 0.9)
    sched = make_scheduler(opt, "onecycle", 0.01, 6)
    opt.load_state_dict(saved_opt)
    sched.load_state_dict(saved_sched)
    run(resumed, opt, sched, 3)
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_frozen_parameters_are_left_alone():
    model = _net()
    model[0].requires_grad_(False)
    before = model[0].weight.clone()
    opt = make_optimizer(model, "adam", 0.1, 0.0, 0.9)
    torch.nn.functional.cross_entropy(model(torch.randn(4, 1, 6, 6)), torch.tensor([0, 1, 2, 0])).backward()
    opt.step()
    assert torch.equal(model[0].weight, before)
    model.requires_grad_(False)
    with pytest.raises(UserError, match="frozen"):
        make_optimizer(model, "adam", 0.1, 0.0, 0.9)


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(UserError, match="adam, adamw, sgd"):
        make_optimizer(_net(), "rmsprop", 0.1, 0.0, 0.9)
    with pytest.raises(UserError, match="onecycle"):
        make_scheduler(make_optimizer(_net(), "adam", 0.1, 0.0, 0.9), "linear", 0.1, 10)


def test_loaded_state_takes_the_parameters_memory_layout():
    """A channels_last conv's Adam state comes back from a checkpoint in the default layout."""
    x, y = torch.randn(8, 1, 6, 6).contiguous(memory_format=torch.channels_last), torch.randint(0, 3, (8,))
    models = [_net().to(memory_format=torch.channels_last) for _ in range(2)]
    opts = [make_optimizer(m, "adam", 0.01, 0.0, 0.9) for m in models]
    for m, o in zip(models, opts):
        torch.nn.functional.cross_entropy(m(x), y).backward()
        o.step()
    saved = opts[0].state_dict()
    saved["state"] = {i: {k: v.contiguous() for k, v in s.items()} for i, s in saved["state"].items()}
    opts[1].load_state_dict(saved)
    for m, o in zip(models, opts):
        o.zero_grad()
        torch.nn.functional.cross_entropy(m(x), y).backward()
        o.step()
    for a, b in zip(*(m.parameters() for m in models)):
        assert torch.equal(a, b)


def test_triangle_is_airbenchs_schedule_and_leaves_momentum_alone():
    """0.2 x lr at the start, lr at 23% of the steps, 0.07 x lr at the end, linear between
    (airbench94's ``triangle(total, start=0.2, end=0.07, peak=0.23)``), momentum as set."""
    total, lr = 100, 2.0
    opt = make_optimizer(_net(), "sgd", lr, 0.0, momentum=0.85)
    sched = make_scheduler(opt, "triangle", lr, total)
    rates = [opt.param_groups[0]["lr"]]
    for _ in range(total):
        sched.step()
        rates.append(opt.param_groups[0]["lr"])
        assert opt.param_groups[0]["momentum"] == 0.85
    assert rates[0] == pytest.approx(0.4) and rates[23] == pytest.approx(2.0) and rates[100] == pytest.approx(0.14)
    assert rates[10] == pytest.approx(0.4 + 1.6 * 10 / 23) and rates[60] == pytest.approx(2.0 - 1.86 * 37 / 77)
    assert max(rates) == rates[23]


def test_lookahead_averages_every_fifth_step_from_30_percent():
    """The weights after each step equal a hand-kept EMA with airbench's rho; before 30% of the
    steps, and between the fifth steps, the model moves alone; end_epoch leaves model == average."""
    total = 40
    model = _net()
    look = Lookahead(model, total)
    look.sync(0)
    assert look.first == 15  # ceil(0.3 * 40) = 12, rounded up to a multiple of 5
    ema = None
    for step in range(1, total + 1):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))  # an arbitrary optimiser step
        expected = [p.detach().clone() for p in model.parameters()]
        if step >= 15 and step % 5 == 0:
            if ema is None:
                ema = [e.clone() for e in expected]
            else:
                rho = 0.95 ** 5 * (step / total) ** 3
                ema = [e + (1 - rho) * (x - e) for e, x in zip(ema, expected)]
                expected = [e.clone() for e in ema]
        look.after_step()
        for p, e in zip(model.parameters(), expected):
            torch.testing.assert_close(p, e, rtol=1e-6, atol=1e-6)
    with torch.no_grad():
        model[0].weight.add_(1.0)
    look.end_epoch()
    for p, e in zip(model.parameters(), ema):
        torch.testing.assert_close(p, e, rtol=1e-6, atol=1e-6)


def test_lookahead_sync_restarts_from_the_model_at_an_epoch_boundary():
    model = _net()
    look = Lookahead(model, 40)
    look.sync(10)
    assert look.ema is None and look.step == 10
    look.sync(20)
    assert look.ema is not None and all(torch.equal(e, p) for e, p in zip(look.ema, model.parameters()))
