"""Training engine contracts: outputs, resume equality, determinism, NaN stop, OOM fallback,
safe checkpoints, config errors. All on the embedded digits data, a few epochs, CPU."""
import json
import pickle
import sys

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from visionlab.cli import main
from visionlab.errors import UserError
from visionlab.evaluation import load_record
from visionlab.training import checkpoint, make_config, train
from visionlab.training import run as run_module

FAST = dict(data="digits", model="cnn2", epochs=2, batch_size=64, lr=3e-3, device="cpu", precision="fp32")


def config(tmp_path, name="run", **overrides):
    return make_config({**FAST, "out": str(tmp_path / name), **overrides})


def weights(path):
    return load_file(str(path / "model.safetensors"))


def test_train_writes_every_output(tmp_path):
    result = train(config(tmp_path))
    out = tmp_path / "run"
    for name in ("config.yaml", "metrics.jsonl", "metrics.json", "model.safetensors", "predictions.npz",
                 "checkpoint.safetensors", "confusion_matrix.png", "curves.png", "predictions.png"):
        assert (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("model", "augment", "epochs", "params", "train_seconds", "train_images_per_second", "val_accuracy",
                "test_accuracy", "test_macro_f1", "test_weighted_f1", "classes", "confusion_matrix"):
        assert key in metrics, key
    assert metrics["epochs"] == 2 and metrics["classes"] == [str(i) for i in range(10)]
    assert (metrics["batch_size"], metrics["lr"]) == (64, 3e-3)
    assert metrics["test_accuracy"] > 0.6  # cnn2 learns digits in two epochs; chance is 0.1
    cm = np.array(metrics["confusion_matrix"])
    assert cm.shape == (10, 10) and cm.sum() == 180 and np.trace(cm) / 180 == pytest.approx(metrics["test_accuracy"])
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in lines] == [1, 2]
    assert {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "images_per_second"} <= set(lines[0])
    record = load_record(out / "predictions.npz")
    assert record["logits"].shape == (180, 10) and record["features"].shape[0] == 180
    assert record["train_centroids"].shape == (10, record["features"].shape[1])
    assert (record["logits"].argmax(1) == record["labels"]).mean() == pytest.approx(metrics["test_accuracy"])
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["model"] == "cnn2" and resolved["epochs"] == 2
    assert result["out"] == str(out)


def test_same_seed_is_bit_identical_and_other_seed_differs(tmp_path):
    train(config(tmp_path, "a", deterministic=True))
    train(config(tmp_path, "b", deterministic=True))
    train(config(tmp_path, "c", deterministic=True, seed=1))
    a, b, c = weights(tmp_path / "a"), weights(tmp_path / "b"), weights(tmp_path / "c")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


@pytest.mark.parametrize("settings,killed", [
    (dict(epochs=3, deterministic=True, augment="light"), 2),
    # airbench's recipe: lookahead averaging (from step 17 of 60 here, every 5), triangle lr,
    # alternating flips and mirrored borders; killed in epoch 3, long after the average began
    (dict(epochs=3, deterministic=True, augment=["crop:1", "reflect", "flip:alternate"], optimizer="sgd",
          momentum=0.85, lr=0.05, schedule="triangle", lookahead=True), 3),
], ids=["adam-onecycle", "airbench-recipe"])
def test_resume_after_interruption_equals_uninterrupted_run(tmp_path, monkeypatch, settings, killed):
    train(config(tmp_path, "full", **settings))
    calls = {"n": 0}
    real = run_module.train_one_epoch

    def dies_in_second_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == killed:
            raise KeyboardInterrupt  # as if killed mid-epoch
        return real(*args, **kwargs)

    monkeypatch.setattr(run_module, "train_one_epoch", dies_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(config(tmp_path, "cut", **settings))
    monkeypatch.setattr(run_module, "train_one_epoch", real)
    assert not (tmp_path / "cut" / "metrics.json").exists()
    train(make_config(yaml.safe_load((tmp_path / "cut" / "config.yaml").read_text())), resume=True)
    full, cut = weights(tmp_path / "full"), weights(tmp_path / "cut")
    assert all(torch.equal(full[k], cut[k]) for k in full)
    m_full = json.loads((tmp_path / "full" / "metrics.json").read_text())
    m_cut = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    assert m_full["test_accuracy"] == m_cut["test_accuracy"]
    assert m_full["confusion_matrix"] == m_cut["confusion_matrix"]
    epochs = [json.loads(l)["epoch"] for l in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]


def test_nan_loss_stops_quickly_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    steps = {"n": 0}
    real_make_loss = run_module.make_loss

    def poisoned(weights, smoothing):
        loss_fn = real_make_loss(weights, smoothing)

        def fn(logits, labels):
            steps["n"] += 1
            loss = loss_fn(logits, labels)
            return loss * float("nan") if steps["n"] >= 30 else loss  # epoch 2 (23 steps an epoch)

        return fn

    monkeypatch.setattr(run_module, "make_loss", poisoned)
    with pytest.raises(UserError, match="loss became nan"):
        train(config(tmp_path, epochs=4, checkpoint_interval=0))
    assert steps["n"] <= 30 + run_module.train_one_epoch.__globals__["CHECK_EVERY"] + 1
    out = tmp_path / "run"
    tensors, meta = checkpoint.read(out / "checkpoint.safetensors")
    assert meta["epoch"] == 1  # the last good epoch
    assert all(torch.isfinite(v).all() for v in weights(out).values() if v.is_floating_point())
    assert all(torch.isfinite(v).all() for k, v in tensors.items() if k.startswith("model.") and v.is_floating_point())


def test_out_of_memory_splits_batches_and_finishes(tmp_path, monkeypatch, caplog):
    real = run_module.train_one_epoch

    def oom_when_large(*args, **kwargs):
        if kwargs["accumulate"] == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*args, **kwargs)

    monkeypatch.setattr(run_module, "train_one_epoch", oom_when_large)
    import logging

    logging.getLogger("visionlab").propagate = True
    with caplog.at_level("WARNING"):
        result = train(config(tmp_path))
    assert result["epochs"] == 2
    assert "out of memory at batch size 64" in caplog.text


def test_existing_run_is_never_overwritten(tmp_path):
    train(config(tmp_path, epochs=1))
    before = (tmp_path / "run" / "model.safetensors").read_bytes()
    with pytest.raises(UserError, match="already holds a run"):
        train(config(tmp_path, epochs=1))
    assert (tmp_path / "run" / "model.safetensors").read_bytes() == before


@pytest.mark.parametrize("content", [b"", b"\x00" * 10, pickle.dumps({"a": 1})])
def test_bad_checkpoint_is_a_clear_error(tmp_path, content):
    path = tmp_path / "checkpoint.safetensors"
    path.write_bytes(content)
    with pytest.raises(UserError, match=str(path)):
        checkpoint.read(path)


def test_truncated_checkpoint_refused_on_resume(tmp_path, capsys):
    train(config(tmp_path, epochs=1))
    state = tmp_path / "run" / "checkpoint.safetensors"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    capsys.readouterr()  # the set-up run's own log lines
    assert main(["train", "--resume", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert str(state) in err and err.count("\n") == 1


def test_resume_without_checkpoint(tmp_path, capsys):
    assert main(["train", "--resume", "--out", str(tmp_path / "nothing")]) == 2
    assert "nothing to resume" in capsys.readouterr().err


@pytest.mark.parametrize("values, message", [
    ({"epochs": "five"}, "epochs"),
    ({"optimizer": "lion"}, "adam"),
    ({"no_such_key": 1}, "unknown key 'no_such_key'"),
    ({"lr": -1}, "lr"),
    ({"lr": "fast"}, "a number > 0, or auto"),
    ({"batch_size": 0}, "batch_size"),
    ({"batch_size": 1.5}, "whole number of images"),
    ({"checkpoint_interval": -1}, "seconds >= 0"),
    ({"checkpoint_interval": "soon"}, "checkpoint_interval"),
])
def test_config_errors_name_the_key(values, message):
    with pytest.raises(UserError, match=message):
        make_config({**FAST, **values})


@pytest.mark.parametrize("values, images, pixels, batch_size, lr", [
    ({}, 25_599, 28 * 28, 128, 2e-3),
    ({}, 25_600, 28 * 28, 256, 4e-3),  # 100 steps an epoch of 256
    ({}, 51_199, 28 * 28, 256, 4e-3),
    ({}, 51_200, 28 * 28, 512, 8e-3),  # lenet on small images: 100 steps an epoch of 512
    ({"model": "mlp"}, 60_000, 32 * 32, 512, 8e-3),
    ({"model": "mlp"}, 60_000, 32 * 33, 256, 4e-3),  # larger images stay at 256
    ({"model": "cnn"}, 60_000, 28 * 28, 256, 4e-3),  # and every other network
    ({"model": "resnet18"}, 1_000_000, 8 * 8, 256, 4e-3),
    ({"batch_size": 64}, 60_000, 28 * 28, 64, 2e-3),  # never below 2e-3
    ({"batch_size": 384}, 10, 28 * 28, 384, 6e-3),  # linear in the batch
    ({"batch_size": 2048}, 10, 28 * 28, 2048, 8e-3),  # at most 4x
    ({"lr": 0.01}, 60_000, 28 * 28, 512, 0.01),
    ({"batch_size": 32, "lr": 0.1}, 60_000, 28 * 28, 32, 0.1),
])
def test_auto_batch_size_and_lr_follow_the_training_split(values, images, pixels, batch_size, lr):
    cfg = make_config(values)
    cfg.resolve_auto(images, pixels)
    assert cfg.batch_size == batch_size and cfg.lr == pytest.approx(lr)


def test_a_run_records_the_batch_size_and_lr_it_used(tmp_path, caplog):
    caplog.set_level("INFO")
    train(make_config({"data": "digits", "model": "mlp", "hidden": [16], "epochs": 1, "device": "cpu",
                       "out": str(tmp_path / "r")}))
    resolved = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert (resolved["batch_size"], resolved["lr"]) == (128, 0.002)  # digits: 1,437 training images
    assert "batch size 128, lr 0.002 (batch_size and lr auto, for 1,437 training images)" in caplog.text


def test_yaml_config_and_flag_override(tmp_path, capsys):
    cfg = tmp_path / "train.yaml"
    cfg.write_text("model: mlp\nepochs: 1\nbatch_size: 64\ndevice: cpu\nprecision: fp32\nhidden: [32]\n")
    assert main(["train", "--config", str(cfg), "--epochs", "2", "--out", str(tmp_path / "r")]) == 0
    resolved = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert resolved["model"] == "mlp" and resolved["epochs"] == 2 and resolved["hidden"] == [32]
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: lenet\nepoch: 3\n")
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "r2")]) == 2
    assert "unknown key 'epoch'" in capsys.readouterr().err


def test_evaluate_and_predict_commands(tmp_path, capsys):
    from conftest import write_image

    train(config(tmp_path))
    run = tmp_path / "run"
    capsys.readouterr()
    assert main(["evaluate", str(run), "--json", "--device", "cpu"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    original = json.loads((run / "metrics.json").read_text())
    assert evaluated["test_accuracy"] == pytest.approx(original["test_accuracy"])
    from sklearn.datasets import load_digits

    digits = load_digits()
    img = np.rint(digits.images[0] * 255 / 16).astype(np.uint8)
    path = write_image(tmp_path / "zero.png", img)
    assert main(["predict", str(run), str(path), "--json", "--top-k", "3", "--device", "cpu"]) == 0
    predicted = json.loads(capsys.readouterr().out)
    top = predicted[0]["top"]
    assert len(top) == 3 and sum(t["probability"] for t in top) <= 1.0001
    assert top[0]["probability"] >= top[1]["probability"]
    assert main(["predict", str(run), str(tmp_path / "missing.png")]) == 2


def test_evaluate_on_dataset_with_other_class_count_is_an_error(tmp_path, class_folder, capsys):
    train(config(tmp_path, epochs=1))
    assert main(["evaluate", str(tmp_path / "run"), "--data", str(class_folder)]) == 2
    assert "classes" in capsys.readouterr().err


def test_test_set_lacking_a_class_still_evaluates():
    from visionlab.evaluation import classification_metrics

    logits = np.eye(3, dtype=np.float32)[[0, 1, 1, 0]]
    metrics = classification_metrics(logits, np.array([0, 1, 1, 0]), ["a", "b", "c"])
    assert metrics["test_accuracy"] == 1.0
    assert metrics["per_class"]["c"]["support"] == 0
    assert np.array(metrics["confusion_matrix"]).shape == (3, 3)


def test_wandb_offline_run_needs_no_account_or_network(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_API_KEY", "")  # no account
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    train(config(tmp_path, epochs=1, wandb="offline"))
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert list(runs[0].glob("*.wandb")), "the offline run file that `wandb sync` uploads"
    assert (tmp_path / "run" / "wandb_id").read_text().strip() in runs[0].name


def test_tensorboard_events_written(tmp_path):
    train(config(tmp_path, epochs=1, tensorboard=True))
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def test_finite_watch_reports_a_nan_without_waiting_on_the_device(device):
    """CPU: at once. GPU: the verdict is read at the next check (no host sync in the step)."""
    from visionlab.training.loop import FiniteWatch

    watch = FiniteWatch(torch.device(device))
    assert watch.still_finite(torch.tensor(1.0, device=device))
    bad = torch.tensor(float("nan"), device=device)
    if device == "cuda":
        assert watch.still_finite(bad)  # submitted, answered next time
        assert not watch.still_finite(torch.tensor(1.0, device=device))
    else:
        assert not watch.still_finite(bad)


@pytest.fixture
def clocks(monkeypatch):
    """The thread tuner's clocks, moved by the test: {"wall": seconds, "cpu": process CPU seconds,
    or None for a shared CPU where the process gets one core's worth (CPU time = wall time)}.
    torch's thread count is restored afterwards."""
    from visionlab.training import loop

    now = {"wall": 0.0, "cpu": None}
    monkeypatch.setattr(loop.time, "perf_counter", lambda: now["wall"])
    monkeypatch.setattr(loop.time, "process_time", lambda: now["wall"] if now["cpu"] is None else now["cpu"])
    before = torch.get_num_threads()
    yield now
    torch.set_num_threads(before)


@pytest.mark.parametrize("slow_threads", [1, 2])
def test_thread_tuner_keeps_the_faster_thread_count(clocks, slow_threads):
    """First epoch: steps timed on all threads and on one; the faster count stays for the epoch.
    Later epochs look at one thread again only when all-thread steps have slowed down."""
    from visionlab.training import loop

    cost = {1: 0.01, 2: 0.01}
    cost[slow_threads] = 0.1

    def epoch(tuner, steps=40):
        tuner.start_epoch(steps)
        assert torch.get_num_threads() == 2
        for _ in range(steps):
            clocks["wall"] += cost[torch.get_num_threads()]  # this step's duration
            tuner.after_step()

    tuner = loop.ThreadTuner(2)
    epoch(tuner)
    assert tuner.done and torch.get_num_threads() == (1 if slow_threads == 2 else 2)
    assert len(tuner.times[1]) == len(tuner.times[2]) == loop.ThreadTuner.PROBE
    epoch(tuner)  # one thread is looked at again only when two are slower than one has been
    assert len(tuner.times[1]) == (0 if slow_threads == 1 else loop.ThreadTuner.PROBE)
    assert torch.get_num_threads() == (1 if slow_threads == 2 else 2)
    cost[1], cost[2] = 0.02, 0.5  # now the machine is busy: two threads crawl
    epoch(tuner)
    assert torch.get_num_threads() == 1 and len(tuner.times[1]) == loop.ThreadTuner.PROBE
    epoch(tuner, steps=10)  # too short to probe: all threads, no switching
    assert torch.get_num_threads() == 2 and tuner.times == {2: [], 1: []}


@pytest.mark.parametrize("share", [0.8, 0.9])
def test_thread_tuner_keeps_all_threads_that_had_the_cores(clocks, share):
    """Where the process got nearly all its threads' CPU time over the timed steps (SHARE of
    threads x wall), no other work held a core: all threads stay, one thread is never timed.
    Below that, one thread is timed as before."""
    from visionlab.training import loop

    clocks["cpu"] = 0.0
    tuner = loop.ThreadTuner(2)
    for epoch in range(2):
        tuner.start_epoch(40)
        for _ in range(40):
            two = torch.get_num_threads() == 2
            clocks["wall"] += 0.01 if two else 0.015
            clocks["cpu"] += share * 2 * 0.01 if two else 0.015
            tuner.after_step()
        assert tuner.done and torch.get_num_threads() == 2
        looked = share < loop.ThreadTuner.SHARE and epoch == 0  # later epochs: two beat one before
        assert len(tuner.times[1]) == (loop.ThreadTuner.PROBE if looked else 0)


def test_thread_tuner_looks_again_past_slow_first_steps(clocks):
    """A run's first all-thread steps are slow while it warms up: where one thread then looks
    faster, all threads are timed once more, and kept when they are now the faster."""
    from visionlab.training import loop

    tuner = loop.ThreadTuner(2)
    tuner.start_epoch(40)
    for step in range(40):
        two = 0.06 if step < 8 else 0.005  # start-up, then the real all-thread speed
        clocks["wall"] += two if torch.get_num_threads() == 2 else 0.008
        tuner.after_step()
    assert tuner.done and torch.get_num_threads() == 2
    assert tuner.times[2] == pytest.approx([0.005] * loop.ThreadTuner.PROBE)  # the second look
    assert len(tuner.times[1]) == loop.ThreadTuner.PROBE


@pytest.mark.parametrize("optimizer,schedule", [("sgd", "triangle"), ("adam", "onecycle")])
def test_training_steps_never_read_values_back_from_the_device(monkeypatch, optimizer, schedule):
    """The GPU fast path's rule (no host synchronisation inside the step), checked on CPU: in an
    epoch nothing turns a tensor into a Python value except the NaN watch every CHECK_EVERY steps
    (on a GPU it reads a pinned copy one check late, without waiting) and the epoch's totals at
    the end. Every optimiser, schedule, lookahead and augmentation step is on the path."""
    from visionlab.models import ModelOptions, build_model
    from visionlab.training.augment import parse_augment
    from visionlab.training.loop import CHECK_EVERY, DeviceSplit, Engine, autocast_for, make_loss, train_one_epoch
    from visionlab.training.optim import Lookahead, make_optimizer, make_scheduler

    cpu, steps = torch.device("cpu"), 40
    model = build_model("cnn2", 10, 3, (12, 12), ModelOptions(batch_norm=True))
    data = DeviceSplit(torch.randint(0, 255, (16 * steps, 12, 12, 3), dtype=torch.uint8),
                       torch.randint(0, 10, (16 * steps,)))
    engine = Engine(cpu, torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1), autocast_for(cpu, "bf16"), True)
    opt = make_optimizer(model, optimizer, 0.01, 1e-4, 0.9)
    lookahead = Lookahead(model, steps)
    lookahead.sync(0)
    reads = []
    for name in ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "numpy"):
        def spy(self, *args, _real=getattr(torch.Tensor, name), _name=name, **kwargs):
            reads.append(_name)
            return _real(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, spy)
    train_one_epoch(model, data, engine, make_loss(None, 0.1), opt, make_scheduler(opt, schedule, 0.01, steps),
                    batch_size=16, augment=parse_augment(["crop:2", "reflect", "flip:alternate", "jitter", "erase"], True),
                    generator=torch.Generator().manual_seed(0), grad_clip=1.0, lookahead=lookahead, epoch=1)
    assert sorted(reads) == sorted(["__bool__"] * -(-steps // CHECK_EVERY) + ["tolist"])


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("channels_last", [True, False])
def test_prepare_normalises_each_channel_with_or_without_augmentation(channels, channels_last):
    """Engine.prepare's rows of factors equal (x / 255 - mean) / std channel by channel, in the
    layout asked for, for a batch straight from the bytes, an augmented one and an empty one."""
    from visionlab.training.augment import parse_augment
    from visionlab.training.loop import Engine, autocast_for

    cpu, gen = torch.device("cpu"), torch.Generator().manual_seed(0)
    mean, std = torch.rand(1, channels, 1, 1, generator=gen), torch.rand(1, channels, 1, 1, generator=gen) + 0.2
    engine = Engine(cpu, mean, std, autocast_for(cpu, "fp32"), channels_last)
    images = torch.randint(0, 256, (6, 5, 7, channels), dtype=torch.uint8, generator=gen)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    unit = images.permute(0, 3, 1, 2).double() / 255
    x = engine.prepare(images)
    assert x.dtype == torch.float32 and x.is_contiguous(memory_format=layout)
    torch.testing.assert_close(x.double(), (unit - mean.double()) / std.double(), rtol=0, atol=1e-6)
    augment = parse_augment(["crop:2", "flip", "jitter"], True)
    x = engine.prepare(images, augment, torch.Generator().manual_seed(1))
    expected = augment(unit.float(), torch.Generator().manual_seed(1)).double()
    assert x.is_contiguous(memory_format=layout)
    torch.testing.assert_close(x.double(), (expected - mean.double()) / std.double(), rtol=0, atol=1e-5)
    assert engine.prepare(images[:0]).shape == (0, channels, 5, 7)


def test_cadence_writes_after_the_interval_or_twenty_writes_worth_of_training():
    now = [0.0]
    every_epoch, five_seconds, auto = (checkpoint.Cadence(i, clock=lambda: now[0]) for i in (0.0, 5.0, "auto"))
    assert every_epoch.due()
    with auto.writing():
        now[0] += 0.5  # a write that took 0.5 s
    with five_seconds.writing():
        pass
    now[0] += 4.9
    assert not five_seconds.due() and not auto.due()
    now[0] += 0.1
    assert five_seconds.due() and not auto.due()  # auto waits 20 x 0.5 s
    now[0] += 5.0
    assert auto.due()


def _cadence_script(monkeypatch, due_after: set[int]):
    """Cadence.due answers True only after the listed epochs; returns the epochs of state writes."""
    asked, written = [0], []
    real_save = checkpoint.save_training_state

    def due(self):
        asked[0] += 1
        return asked[0] in due_after

    def save(path, model, optimizer, scheduler, rng, meta):
        written.append(meta["epoch"])
        real_save(path, model, optimizer, scheduler, rng, meta)

    monkeypatch.setattr(checkpoint.Cadence, "due", due)
    monkeypatch.setattr(checkpoint, "save_training_state", save)
    return written


def test_skipped_checkpoints_keep_the_best_weights_and_every_metrics_line(tmp_path, monkeypatch):
    settings = dict(epochs=5, deterministic=True, lr=0.01)
    reference = train(config(tmp_path, "every", checkpoint_interval=0, **settings))
    written = _cadence_script(monkeypatch, due_after={2})
    result = train(config(tmp_path, "auto", **settings))
    assert written == [0, 2, 5]  # epoch 0, the one due, and the last, always
    lines = [json.loads(l) for l in (tmp_path / "auto" / "metrics.jsonl").read_text().splitlines()]
    assert [l["epoch"] for l in lines] == [1, 2, 3, 4, 5]
    a, b = weights(tmp_path / "every"), weights(tmp_path / "auto")  # the best epoch's, held until written
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert result["test_accuracy"] == reference["test_accuracy"]


def test_interrupted_between_checkpoints_resumes_from_the_last_and_equals_uninterrupted(tmp_path, monkeypatch):
    settings = dict(epochs=5, deterministic=True, lr=0.01)
    train(config(tmp_path, "full", checkpoint_interval=0, **settings))
    written = _cadence_script(monkeypatch, due_after={2})
    calls = {"n": 0}
    real = run_module.train_one_epoch

    def dies_in_fourth_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(run_module, "train_one_epoch", dies_in_fourth_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(config(tmp_path, "cut", **settings))
    assert written == [0, 2]  # epoch 3 finished but was not written: it is redone
    lines = [json.loads(l) for l in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    best_epoch = max(lines, key=lambda l: l["val_accuracy"])["epoch"]  # the first of equals, as training picks
    assert checkpoint.read(tmp_path / "cut" / "model.safetensors")[1]["epoch"] == best_epoch  # on disk at the stop
    monkeypatch.setattr(run_module, "train_one_epoch", real)
    train(make_config(yaml.safe_load((tmp_path / "cut" / "config.yaml").read_text())), resume=True)
    full, cut = weights(tmp_path / "full"), weights(tmp_path / "cut")
    assert all(torch.equal(full[k], cut[k]) for k in full)
    epochs = [json.loads(l)["epoch"] for l in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3, 4, 5]


def test_out_of_memory_after_skipped_checkpoints_goes_back_to_the_last_one(tmp_path, monkeypatch):
    written = _cadence_script(monkeypatch, due_after={1})
    real = run_module.train_one_epoch
    calls = {"n": 0}

    def oom_in_third_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*args, **kwargs)

    monkeypatch.setattr(run_module, "train_one_epoch", oom_in_third_epoch)
    result = train(config(tmp_path, epochs=4))
    assert calls["n"] == 6  # epochs 1, 2, the failed 3rd, then 2, 3, 4 again from the epoch-1 checkpoint
    assert written[:2] == [0, 1] and written[-1] == 4
    epochs = [json.loads(l)["epoch"] for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3, 4] and result["epochs"] == 4


def test_inference_batch_defaults_by_device():
    """eval_batch_size unset: 2^18 pixels per inference step on a CPU, at most 256 images (larger
    batches outgrow its caches), 2^20 on a GPU, at most 1024 (memory); a value set is kept."""
    from visionlab.training.config import TrainConfig
    from visionlab.training.loop import eval_batch

    assert TrainConfig(data="digits").eval_batch_size is None
    assert eval_batch(None, torch.device("cpu")) == 256
    assert eval_batch(None, torch.device("cpu"), 28 * 28) == 256 and eval_batch(None, torch.device("cpu"), 8 * 8) == 256
    assert eval_batch(None, torch.device("cpu"), 128 * 128) == 16 and eval_batch(None, torch.device("cpu"), 64 * 64) == 64
    assert eval_batch(None, torch.device("cpu"), 1024 * 1024) == 1
    assert eval_batch(None, torch.device("cuda"), 32 * 32) == 1024 and eval_batch(None, torch.device("cuda"), 28 * 28) == 1024
    assert eval_batch(None, torch.device("cuda"), 128 * 128) == 64 and eval_batch(None, torch.device("cuda"), 224 * 224) == 20
    assert eval_batch(2000, torch.device("cpu"), 128 * 128) == 2000


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc and ru_minflt")
def test_freed_buffers_stay_for_the_next_step():
    """After keep_freed_memory, a 64 MB buffer (over glibc's largest mmap threshold, as the cnn's
    first activation at 128 px is) freed and allocated again is not page-faulted in afresh."""
    import resource

    from visionlab.training.run import keep_freed_memory

    keep_freed_memory()
    faults = []
    for _ in range(3):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        buffer = torch.empty(64 << 20, dtype=torch.uint8)
        buffer.fill_(1)  # touch every page
        del buffer
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    assert faults[-1] < 1000, faults  # 16,384 pages when it comes fresh from mmap each time
