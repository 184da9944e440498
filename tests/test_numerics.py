"""Contracts of visionlab.numerics: no overflow or nan up to |x| = 1e4, the identities that define
the functions, gradients equal to central finite differences, agreement with torch, and the page.

Properties run under hypothesis with database=None (no .hypothesis folder in the repo) and few
enough examples that the file runs in seconds.
"""
import json
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as tF
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from visionlab.errors import UserError
from visionlab.numerics import (
    bce,
    bce_grad_p,
    bce_with_logits,
    bce_with_logits_grad,
    cross_entropy,
    entropy,
    kl_divergence,
    l2_gd_step,
    log_softmax,
    logsumexp,
    mse,
    mse_sigmoid_grad,
    naive_logsumexp,
    naive_softmax,
    sigmoid,
    softmax,
)

# Valid input must not make NumPy warn (overflow, divide by zero, invalid): the naive forms
# silence theirs on purpose, the stable ones have nothing to silence.
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

FAST = settings(max_examples=100, deadline=None, database=None)
BIG = 1e4  # the magnitude every stable function must survive


def floats(lo, hi):
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


def arrays(lo, hi, min_dims=1, max_dims=2):
    """float64 arrays, 1 to 2 dims, 1 to 8 per side, values in [lo, hi]."""
    shapes = hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=1, max_side=8)
    return hnp.arrays(np.float64, shapes, elements=floats(lo, hi))


def same_shape(lo1, hi1, lo2, hi2, max_side=8):
    """Two float64 arrays of one shape: (logits or probabilities, targets) pairs."""
    shapes = hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=max_side)
    return shapes.flatmap(lambda s: st.tuples(hnp.arrays(np.float64, s, elements=floats(lo1, hi1)),
                                              hnp.arrays(np.float64, s, elements=floats(lo2, hi2))))


def distributions(min_value=0.0):
    """(K,) probability vectors, K = 1..8; min_value = 0 allows exact zeros (0 log 0)."""
    raw = hnp.arrays(np.float64, st.integers(1, 8), elements=floats(min_value, 1.0))
    return raw.filter(lambda w: w.sum() > 1e-3).map(lambda w: w / w.sum())


def pairs_of_distributions():
    """(p, q) of one length: p may contain zeros, q is strictly positive."""
    return st.integers(1, 8).flatmap(lambda k: st.tuples(
        hnp.arrays(np.float64, k, elements=floats(0.0, 1.0)).filter(lambda w: w.sum() > 1e-3),
        hnp.arrays(np.float64, k, elements=floats(1e-6, 1.0)))).map(lambda t: (t[0] / t[0].sum(), t[1] / t[1].sum()))


# ---- no overflow, no nan at magnitude 1e4 -------------------------------------------------------

@FAST
@given(arrays(-BIG, BIG))
def test_softmax_family_is_finite_and_normalised_at_1e4(x):
    s, ls, lse = softmax(x), log_softmax(x), logsumexp(x)
    assert np.isfinite(s).all() and np.isfinite(ls).all() and np.isfinite(lse).all()
    assert s.dtype == ls.dtype == lse.dtype == np.float64
    np.testing.assert_allclose(s.sum(axis=-1), 1.0, rtol=0, atol=1e-12)
    assert (s >= 0).all() and (ls <= 0).all()
    m = x.max(axis=-1)
    assert (lse >= m).all()
    assert (lse <= m + np.log(x.shape[-1]) + 1e-9 * np.maximum(1, np.abs(m))).all()


def test_the_naive_forms_do_break_at_1e4():
    """The properties above are not vacuous: without the shift the same inputs give nan / inf."""
    assert np.isnan(naive_softmax([BIG, 0.0])).any()
    assert np.isnan(naive_softmax([-BIG, -BIG])).all()  # 0 / 0
    assert naive_logsumexp([BIG, 0.0]) == np.inf and naive_logsumexp([-BIG, -BIG]) == -np.inf
    np.testing.assert_allclose(softmax([BIG, 0.0]), [1.0, 0.0])
    np.testing.assert_allclose(softmax([-BIG, -BIG]), [0.5, 0.5])
    np.testing.assert_allclose(logsumexp([-BIG, -BIG]), -BIG + np.log(2), rtol=1e-15)


def test_masked_logits():
    """-inf logits (masked classes) get probability 0; a fully masked row has logsumexp -inf."""
    np.testing.assert_array_equal(logsumexp([[-np.inf, -np.inf], [0.0, -np.inf]]), [-np.inf, 0.0])
    np.testing.assert_array_equal(softmax([0.0, -np.inf]), [1.0, 0.0])
    np.testing.assert_array_equal(log_softmax([0.0, -np.inf]), [0.0, -np.inf])


@FAST
@given(same_shape(-BIG, BIG, 0.0, 1.0))
def test_binary_losses_finite_and_nonnegative_at_1e4(zy):
    z, y = zy
    loss = bce_with_logits(z, y, reduction="none")
    assert loss.shape == z.shape and np.isfinite(loss).all() and (loss >= 0).all()
    p = sigmoid(z)
    assert np.isfinite(p).all() and ((p >= 0) & (p <= 1)).all()
    clipped = bce(p, y, reduction="none")
    cap = -np.log1p(-(1 - 1e-12))  # 1 - 1e-12 rounds, so the top clip costs 27.63104, a bit over -log(1e-12)
    assert np.isfinite(clipped).all() and (clipped >= 0).all() and (clipped <= cap).all()
    assert np.isfinite(bce_with_logits_grad(z, y)).all() and np.isfinite(mse_sigmoid_grad(z, y)).all()


def test_bce_with_logits_on_confident_mistakes_is_the_logit():
    """Far out, the loss of a wrong label grows like |z| (no cap, no inf); of a right one, like 0."""
    np.testing.assert_allclose(bce_with_logits([-BIG, BIG], [1.0, 0.0], reduction="none"), [BIG, BIG])
    np.testing.assert_allclose(bce_with_logits([BIG, -BIG], [1.0, 0.0], reduction="none"), [0.0, 0.0], atol=1e-300)
    np.testing.assert_array_equal(sigmoid([-BIG, 0.0, BIG]), [0.0, 0.5, 1.0])


# ---- identities ---------------------------------------------------------------------------------

@FAST
@given(arrays(-BIG, BIG))
def test_log_softmax_is_log_of_softmax_where_finite(x):
    s = softmax(x)
    ok = s > 1e-300  # below that log(softmax) is -inf or a subnormal's log; log_softmax is still exact
    with np.errstate(divide="ignore"):
        np.testing.assert_allclose(log_softmax(x)[ok], np.log(s)[ok], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(np.exp(log_softmax(x)), s, rtol=1e-9, atol=1e-300)


@FAST
@given(arrays(-BIG, BIG), floats(-BIG, BIG))
def test_logsumexp_and_softmax_shift_invariance(x, c):
    np.testing.assert_allclose(logsumexp(x + c), logsumexp(x) + c, rtol=0, atol=1e-8)
    np.testing.assert_allclose(softmax(x + c), softmax(x), rtol=0, atol=1e-6)


@FAST
@given(arrays(-BIG, BIG, min_dims=2, max_dims=2))
def test_axis_argument_matches_transpose(x):
    np.testing.assert_allclose(logsumexp(x, axis=0), logsumexp(x.T, axis=-1))
    np.testing.assert_allclose(softmax(x, axis=0), softmax(x.T).T)
    assert logsumexp(x, keepdims=True).shape == (x.shape[0], 1)


@FAST
@given(pairs_of_distributions())
def test_cross_entropy_is_entropy_plus_kl(pq):
    p, q = pq
    ce, h, kl = cross_entropy(p, q), entropy(p), kl_divergence(p, q)
    assert np.isfinite([ce, h, kl]).all()
    np.testing.assert_allclose(ce, h + kl, rtol=1e-9, atol=1e-12)
    assert kl >= -1e-12 and h >= -1e-12  # Gibbs' inequality; H >= 0
    assert h <= np.log(len(p)) + 1e-9


@FAST
@given(distributions())
def test_kl_of_a_distribution_with_itself_is_zero_and_0log0_is_0(p):
    assert abs(kl_divergence(p, p)) < 1e-12
    np.testing.assert_allclose(cross_entropy(p, p), entropy(p), rtol=1e-12, atol=1e-15)
    assert np.isfinite(entropy(p))


def test_information_quantities_on_known_values():
    np.testing.assert_allclose(entropy([0.5, 0.5, 0.0]), np.log(2))
    np.testing.assert_allclose(entropy([[1.0, 0.0], [0.25, 0.75]]), [0.0, -(0.25 * np.log(0.25) + 0.75 * np.log(0.75))])
    np.testing.assert_allclose(kl_divergence([1.0, 0.0], [0.5, 0.5]), np.log(2))
    with np.errstate(all="raise"):  # the infinite cases are results, not warnings
        assert kl_divergence([0.5, 0.5], [1.0, 0.0]) == np.inf
        assert cross_entropy([0.5, 0.5], [1.0, 0.0]) == np.inf


@FAST
@given(same_shape(-15.0, 15.0, 0.0, 1.0))
def test_bce_with_logits_equals_bce_of_sigmoid_for_moderate_logits(zy):
    z, y = zy
    np.testing.assert_allclose(bce_with_logits(z, y, reduction="none"), bce(sigmoid(z), y, reduction="none"),
                               rtol=1e-7, atol=1e-8)


@FAST
@given(arrays(-BIG, BIG))
def test_sigmoid_symmetry(z):
    np.testing.assert_allclose(sigmoid(z) + sigmoid(-z), 1.0, rtol=0, atol=1e-15)


def test_reductions():
    p, y = np.array([0.2, 0.9, 0.5]), np.array([0.0, 1.0, 1.0])
    per = (p - y) ** 2
    np.testing.assert_allclose(mse(p, y), per.mean())
    np.testing.assert_allclose(mse(p, y, reduction="sum"), per.sum())
    np.testing.assert_allclose(mse(p, y, reduction="none"), per)
    np.testing.assert_allclose(bce(p, y), np.mean([-np.log(0.8), -np.log(0.9), -np.log(0.5)]))
    with pytest.raises(ValueError, match="mean, sum, none"):
        bce_with_logits(p, y, reduction="average")


# ---- gradients against central finite differences -----------------------------------------------

H = 1e-6  # step; the error is O(H^2 f''') + O(eps_machine f / H), both below 1e-6 here


def central_difference(f, x):
    """Per-element d f / d x of an elementwise f: (f(x + H) - f(x - H)) / 2H."""
    return (f(x + H) - f(x - H)) / (2 * H)


@FAST
@given(same_shape(-10.0, 10.0, 0.0, 1.0))
def test_bce_with_logits_grad_matches_finite_differences(zy):
    z, y = zy
    numeric = central_difference(lambda t: bce_with_logits(t, y, reduction="none"), z)
    np.testing.assert_allclose(bce_with_logits_grad(z, y), numeric, rtol=1e-5, atol=1e-7)


@FAST
@given(same_shape(-10.0, 10.0, 0.0, 1.0))
def test_mse_through_sigmoid_grad_matches_finite_differences(zy):
    z, y = zy
    numeric = central_difference(lambda t: mse(sigmoid(t), y, reduction="none"), z)
    np.testing.assert_allclose(mse_sigmoid_grad(z, y), numeric, rtol=1e-5, atol=1e-7)


@FAST
@given(same_shape(0.01, 0.99, 0.0, 1.0))
def test_bce_grad_p_matches_finite_differences(py):
    p, y = py
    numeric = central_difference(lambda t: bce(t, y, reduction="none"), p)
    np.testing.assert_allclose(bce_grad_p(p, y), numeric, rtol=1e-5, atol=1e-6)


def test_bce_grad_p_is_zero_where_clipped_and_mse_grad_vanishes_when_confidently_wrong():
    np.testing.assert_array_equal(bce_grad_p([0.0, 1.0], [1.0, 0.0], eps=1e-6), [0.0, 0.0])
    assert abs(mse_sigmoid_grad(-20.0, 1.0)) < 1e-8  # p = 2e-9 for a positive: MSE barely moves it
    np.testing.assert_allclose(bce_with_logits_grad(-20.0, 1.0), -1.0, atol=1e-8)  # BCE pushes at full strength


def test_l2_step_on_a_known_example_and_as_descent_on_the_penalised_loss():
    w, g = np.array([1.0, -2.0, 0.0]), np.array([0.5, 0.5, -1.0])
    new = l2_gd_step(w, g, lr=0.1, weight_decay=0.01)
    np.testing.assert_allclose(new, [1 - 0.1 * (0.5 + 0.01), -2 - 0.1 * (0.5 - 0.02), 0.1], rtol=1e-15)
    np.testing.assert_allclose(l2_gd_step(w, np.zeros(3), lr=0.5, weight_decay=0.2), w * (1 - 0.5 * 0.2))
    # The step is plain gradient descent on loss(w) + (wd / 2) ||w||^2, here with loss(w) = g . w
    # (whose gradient is g), differentiated by autograd. (torch.optim.SGD(weight_decay=wd) takes the
    # same step, but its first call imports torch._dynamo: seconds, for no extra coverage.)
    wt = torch.tensor(w, requires_grad=True)
    (torch.tensor(g) @ wt + 0.01 / 2 * (wt ** 2).sum()).backward()
    np.testing.assert_allclose(new, (wt - 0.1 * wt.grad).detach().numpy(), rtol=1e-15)


# ---- agreement with torch -----------------------------------------------------------------------

@pytest.mark.parametrize("scale", [1.0, 30.0, 1e3, BIG])
@pytest.mark.parametrize("seed", [0, 1])
def test_softmax_family_agrees_with_torch(scale, seed):
    x = np.random.default_rng(seed).normal(size=(16, 10)) * scale  # (N, K)
    t = torch.from_numpy(x)
    np.testing.assert_allclose(softmax(x), torch.softmax(t, dim=-1).numpy(), rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(log_softmax(x), torch.log_softmax(t, dim=-1).numpy(), rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(logsumexp(x), torch.logsumexp(t, dim=-1).numpy(), rtol=1e-12)
    np.testing.assert_allclose(logsumexp(x, axis=0), torch.logsumexp(t, dim=0).numpy(), rtol=1e-12)


@pytest.mark.parametrize("scale", [1.0, 30.0, BIG])
def test_binary_losses_and_gradient_agree_with_torch(scale):
    rng = np.random.default_rng(2)
    z, y = rng.normal(size=64) * scale, rng.random(64)  # soft targets
    zt = torch.tensor(z, requires_grad=True)
    expected = tF.binary_cross_entropy_with_logits(zt, torch.from_numpy(y), reduction="sum")
    expected.backward()
    np.testing.assert_allclose(bce_with_logits(z, y, reduction="sum"), expected.item(), rtol=1e-12)
    np.testing.assert_allclose(bce_with_logits_grad(z, y), zt.grad.numpy(), rtol=1e-12, atol=1e-15)
    p = rng.uniform(0.001, 0.999, 64)
    pt = torch.tensor(p, requires_grad=True)
    tF.binary_cross_entropy(pt, torch.from_numpy(y)).backward()  # torch clamps log at -100 instead
    np.testing.assert_allclose(bce(p, y), tF.binary_cross_entropy(pt, torch.from_numpy(y)).item(), rtol=1e-12)
    np.testing.assert_allclose(bce_grad_p(p, y) / 64, pt.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(mse(p, y), tF.mse_loss(torch.from_numpy(p), torch.from_numpy(y)).item(), rtol=1e-12)


def test_kl_agrees_with_torch():
    rng = np.random.default_rng(3)
    p, q = rng.dirichlet(np.ones(6), size=20), rng.dirichlet(np.ones(6), size=20)  # (N, K)
    p[:, 0] = 0.0  # torch.kl_div also takes 0 log 0 = 0
    p /= p.sum(axis=1, keepdims=True)
    expected = tF.kl_div(torch.from_numpy(np.log(q)), torch.from_numpy(p), reduction="none").sum(-1)
    np.testing.assert_allclose(kl_divergence(p, q), expected.numpy(), rtol=1e-12, atol=1e-15)


# ---- the page and the command -------------------------------------------------------------------

def test_numerics_command_writes_the_page(tmp_path, capsys):
    import argparse

    from visionlab.numerics.command import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["numerics", "--out", str(tmp_path / "page")])
    assert args.func(args) == 0
    html_path = tmp_path / "page" / "numerics.html"
    assert capsys.readouterr().out == f"numerics: {html_path}\n"

    html = html_path.read_text(encoding="utf-8")
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    names = ["grad_bce_vs_mse", "softmax_overflow", "logsumexp", "ce_identity"]
    assert len(images) == len(names)
    for name, data in zip(names, images):
        png = (tmp_path / "page" / f"{name}.png").read_bytes()
        assert png.startswith(b"\x89PNG") and __import__("base64").b64decode(data) == png
    assert html.count("<figcaption>") == len(names) and "src=\"http" not in html

    record = json.loads((tmp_path / "page" / "numerics.json").read_text())  # strict JSON: nan is null
    grad = record["grad_bce_vs_mse"]
    p, g_bce, g_mse = (np.array(grad[k]) for k in ("p", "grad_bce", "grad_mse"))
    np.testing.assert_allclose(g_bce, 1 - p, atol=1e-12)
    assert g_mse[p < 0.01].max() < 0.02 < g_bce[p < 0.01].min()  # the plotted claim
    soft = record["softmax_overflow"]
    assert soft["stable_all_finite"] and 709 < soft["naive_first_nonfinite_scale"] < 1e3
    assert None in soft["naive"][-1] and None not in soft["stable"][-1]
    assert record["logsumexp"]["naive_neg_inf_count"] > 0 and record["logsumexp"]["naive_pos_inf_count"] > 0
    assert record["logsumexp"]["stable_max_error"] < 1e-9
    assert record["logsumexp"]["naive_max_finite_error"] > 0.1  # the subnormal spike the caption describes
    assert record["ce_identity"]["max_abs_gap"] < 1e-9 and record["ce_identity"]["p_zero_entries"] > 0


def test_numerics_command_on_an_unwritable_out_is_a_user_error(tmp_path):
    from visionlab.numerics.command import run

    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="cannot write there") as info:
        run(type("Args", (), {"out": str(blocker / "page")})())
    assert "\n" not in str(info.value)
