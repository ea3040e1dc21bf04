"""DPO / MODPO / SPO losses against hand-computed numbers, their reductions to DPO, gradients and bad input."""

import math

import pytest
import torch

from rcs_ray.train import loss_inputs, losses
from rcs_ray.train.losses import LOSSES, dpo_loss, get_loss, modpo_loss, spo_loss

pytestmark = pytest.mark.unit


def softplus(x: float) -> float:
    """-log sigmoid(-x) = log(1 + e^x): the loss of a pair whose logit is -x."""
    return math.log1p(math.exp(x))


def t(*values, grad=False, dtype=torch.float32):
    return torch.tensor(values, dtype=dtype, requires_grad=grad)


# One pair: log pi - log ref = +1 on the chosen, -1 on the rejected.
PC, PR, RC, RR = t(-1.0), t(-3.0), t(-2.0), t(-2.0)


# ----------------------------------------------------------------------------------------------- DPO
def test_dpo_hand_computed_single_pair():
    loss, metrics = dpo_loss(PC, PR, RC, RR, beta=0.5)
    # logit = 0.5 * (1 - (-1)) = 1.0 -> loss = log(1 + e^-1)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-1.0)), abs=1e-7)
    assert loss.item() == pytest.approx(0.3132616875, abs=1e-7)
    assert metrics == pytest.approx(
        {
            "rewards/chosen": 0.5,
            "rewards/rejected": -0.5,
            "rewards/margins": 1.0,
            "rewards/accuracy": 1.0,
            "logps/chosen": -1.0,
            "logps/rejected": -3.0,
        }
    )
    assert all(type(v) is float for v in metrics.values())


def test_dpo_batch_mean_and_metrics():
    # pair 0: logit 1.0 (as above); pair 1: policy == ref -> logit 0 -> loss log 2, reward tie (not accurate)
    loss, metrics = dpo_loss(t(-1.0, -5.0), t(-3.0, -6.0), t(-2.0, -5.0), t(-2.0, -6.0), beta=0.5)
    assert loss.item() == pytest.approx((math.log1p(math.exp(-1.0)) + math.log(2.0)) / 2, abs=1e-7)
    assert metrics["rewards/chosen"] == pytest.approx(0.25)
    assert metrics["rewards/rejected"] == pytest.approx(-0.25)
    assert metrics["rewards/margins"] == pytest.approx(0.5)
    assert metrics["rewards/accuracy"] == pytest.approx(0.5)
    assert metrics["logps/chosen"] == pytest.approx(-3.0)
    assert metrics["logps/rejected"] == pytest.approx(-4.5)


def test_dpo_gradient_signs():
    pc, pr = t(-1.0, grad=True), t(-3.0, grad=True)
    loss, _ = dpo_loss(pc, pr, RC, RR, beta=0.5)
    loss.backward()
    # d loss / d pc = -beta * sigmoid(-logit) < 0: raising the chosen log-prob lowers the loss
    assert pc.grad.item() == pytest.approx(-0.5 / (1 + math.e), abs=1e-7)
    assert pr.grad.item() == pytest.approx(0.5 / (1 + math.e), abs=1e-7)
    with torch.no_grad():
        assert dpo_loss(pc + 0.1, pr, RC, RR, beta=0.5)[0] < loss


def test_dpo_is_stable_for_large_logits():
    loss_good, _ = dpo_loss(t(0.0), t(-1e4), t(0.0), t(0.0), beta=1.0)
    loss_bad, _ = dpo_loss(t(-1e4), t(0.0), t(0.0), t(0.0), beta=1.0)
    assert loss_good.item() == pytest.approx(0.0, abs=1e-6)
    assert loss_bad.item() == pytest.approx(1e4, rel=1e-6)


def test_half_precision_inputs_are_upcast_and_keep_the_gradient():
    pc = t(-1.0, grad=True, dtype=torch.bfloat16)
    loss, _ = dpo_loss(pc, PR.bfloat16(), RC.bfloat16(), RR.bfloat16(), beta=0.5)
    assert loss.dtype == torch.float32
    loss.backward()
    assert pc.grad is not None and pc.grad.item() < 0


# ----------------------------------------------------------------------------------------------- MODPO
def test_modpo_hand_computed():
    # beta (log pi - log ref): chosen 0.5, rejected -0.5; margins (K-1 = 1): chosen 0.2, rejected 0.6; w = (.5, .5)
    # r_w = (0.5 - 0.5 * 0.2) / 0.5 = 0.8 ; r_l = (-0.5 - 0.5 * 0.6) / 0.5 = -1.6 ; logit 2.4
    loss, metrics = modpo_loss(PC, PR, RC, RR, t([0.2]), t([0.6]), (0.5, 0.5), beta=0.5)
    assert loss.item() == pytest.approx(softplus(-2.4), abs=1e-7)
    assert metrics["rewards/chosen"] == pytest.approx(0.8)
    assert metrics["rewards/rejected"] == pytest.approx(-1.6)
    assert metrics["rewards/margins"] == pytest.approx(2.4)
    assert metrics["rewards/margin_term"] == pytest.approx((0.1 - 0.3) / 0.5)


def test_modpo_hand_computed_three_objectives_tensor_weights():
    # K = 3, w = (0.5, 0.25, 0.25); margins chosen (1, 2), rejected (3, 0): w_{1:}.(m_w - m_l) = 0.25*(-2) + 0.25*2 = 0
    # -> logit = (0.5 - (-0.5)) / 0.5 = 2.0
    loss, _ = modpo_loss(PC, PR, RC, RR, t([1.0, 2.0]), t([3.0, 0.0]), torch.tensor([0.5, 0.25, 0.25]), beta=0.5)
    assert loss.item() == pytest.approx(softplus(-2.0), abs=1e-7)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_modpo_reduces_to_dpo_with_zero_margins_and_unit_weight(k):
    pc, pr, rc, rr = t(-1.0, -4.0, -2.5), t(-3.0, -1.0, -2.0), t(-2.0, -3.0, -2.5), t(-2.0, -1.5, -1.0)
    zeros = torch.zeros(3, k - 1)
    weights = [1.0] + [0.3] * (k - 1)
    m_loss, m_metrics = modpo_loss(pc, pr, rc, rr, zeros, zeros, weights, beta=0.2)
    d_loss, d_metrics = dpo_loss(pc, pr, rc, rr, beta=0.2)
    assert m_loss.item() == pytest.approx(d_loss.item(), abs=1e-7)
    assert {k_: v for k_, v in m_metrics.items() if k_ in d_metrics} == pytest.approx(d_metrics)


def test_modpo_weight0_rescales_beta():
    # zero margins, w0 = 2: r = beta (log pi - log ref) / 2, i.e. DPO with beta / 2
    zeros = torch.zeros(1, 1)
    m_loss, _ = modpo_loss(PC, PR, RC, RR, zeros, zeros, [2.0, 1.0], beta=0.5)
    assert m_loss.item() == pytest.approx(dpo_loss(PC, PR, RC, RR, beta=0.25)[0].item(), abs=1e-7)


def test_modpo_margin_in_favour_of_chosen_raises_the_loss():
    # a chosen response the other objectives already prefer earns less credit on the trained objective
    base, _ = modpo_loss(PC, PR, RC, RR, t([0.0]), t([0.0]), [0.5, 0.5], beta=0.5)
    favoured, _ = modpo_loss(PC, PR, RC, RR, t([1.0]), t([0.0]), [0.5, 0.5], beta=0.5)
    assert favoured > base


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(weights=[0.5]), r"weights: expected 2 entries"),
        (dict(weights=[0.5, 0.3, 0.2]), r"weights: expected 2 entries"),
        (dict(weights=[0.0, 1.0]), r"weights\[0\].*> 0"),
        (dict(weights=[-1.0, 1.0]), r"weights\[0\].*> 0"),
        (dict(weights=[float("nan"), 1.0]), r"weights: non-finite"),
        (dict(weights="ab"), r"weights:"),
        (dict(chosen_margin_rewards=torch.tensor([0.2])), r"chosen_margin_rewards: expected shape \(1, M\)"),
        (dict(rejected_margin_rewards=torch.tensor([[0.6, 0.1]])), r"rejected_margin_rewards: shape \(1, 2\) differs"),
        (dict(chosen_margin_rewards=torch.tensor([[float("nan")]])), r"chosen_margin_rewards: non-finite"),
        (dict(beta=0.0), r"beta"),
    ],
)
def test_modpo_rejects_bad_input(kwargs, match):
    args = dict(
        policy_chosen_logps=PC,
        policy_rejected_logps=PR,
        ref_chosen_logps=RC,
        ref_rejected_logps=RR,
        chosen_margin_rewards=t([0.2]),
        rejected_margin_rewards=t([0.6]),
        weights=[0.5, 0.5],
        beta=0.5,
    )
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        modpo_loss(**args)


# ----------------------------------------------------------------------------------------------- SPO
def test_spo_hand_computed():
    # stage 3: beta log-ratio difference = 0.5 - (-0.5) = 1.0 (ref = stage-2 policy)
    # earlier implicit rewards r_1, r_2: chosen (0.4, 0.1), rejected (0.2, 0.3); alphas (0.5, 2.0)
    # sum_j alpha_j (r_j(y_w) - r_j(y_l)) = 0.5 * 0.2 + 2.0 * (-0.2) = -0.3  -> logit = 1.0 + 0.3 = 1.3
    loss, metrics = spo_loss(PC, PR, RC, RR, t([0.4, 0.1]), t([0.2, 0.3]), alphas=[0.5, 2.0], beta=0.5)
    assert loss.item() == pytest.approx(softplus(-1.3), abs=1e-7)
    assert metrics["rewards/margin_term"] == pytest.approx(-0.3)
    assert metrics["rewards/chosen"] == pytest.approx(0.5 - (0.5 * 0.4 + 2.0 * 0.1))
    assert metrics["rewards/rejected"] == pytest.approx(-0.5 - (0.5 * 0.2 + 2.0 * 0.3))
    assert metrics["rewards/margins"] == pytest.approx(1.3)


def test_spo_scalar_alpha_is_broadcast():
    a, _ = spo_loss(PC, PR, RC, RR, t([0.4, 0.1]), t([0.2, 0.3]), alphas=0.5, beta=0.5)
    b, _ = spo_loss(PC, PR, RC, RR, t([0.4, 0.1]), t([0.2, 0.3]), alphas=[0.5, 0.5], beta=0.5)
    assert a.item() == pytest.approx(b.item())
    assert a.item() == pytest.approx(softplus(-1.0), abs=1e-7)  # 0.5 * (0.2 - 0.2) = 0 -> logit 1.0


@pytest.mark.parametrize("prev", ["none", "zeros", "zero_alpha", "no_columns"])
def test_spo_reduces_to_dpo(prev):
    pc, pr, rc, rr = t(-1.0, -4.0), t(-3.0, -1.0), t(-2.0, -3.0), t(-2.0, -1.5)
    kwargs = {
        "none": {},
        "zeros": dict(
            prev_chosen_implicit=torch.zeros(2, 2), prev_rejected_implicit=torch.zeros(2, 2), alphas=[1.0, 3.0]
        ),
        "zero_alpha": dict(
            prev_chosen_implicit=torch.ones(2, 1), prev_rejected_implicit=-torch.ones(2, 1), alphas=[0.0]
        ),
        "no_columns": dict(prev_chosen_implicit=torch.zeros(2, 0), prev_rejected_implicit=torch.zeros(2, 0)),
    }
    s_loss, s_metrics = spo_loss(pc, pr, rc, rr, beta=0.3, **kwargs[prev])
    d_loss, d_metrics = dpo_loss(pc, pr, rc, rr, beta=0.3)
    assert s_loss.item() == pytest.approx(d_loss.item(), abs=1e-7)
    assert {k: v for k, v in s_metrics.items() if k in d_metrics} == pytest.approx(d_metrics)
    assert s_metrics["rewards/margin_term"] == pytest.approx(0.0)


def test_spo_weights_pairs_that_agree_with_earlier_stages_more():
    # Two pairs with the same stage-k log-ratios; pair 0's chosen also won the earlier stage, pair 1's lost it.
    pc = t(-1.0, -1.0, grad=True)
    loss, _ = spo_loss(
        pc, t(-3.0, -3.0), t(-2.0, -2.0), t(-2.0, -2.0), t([1.0], [-1.0]), t([0.0], [0.0]), alphas=[1.0], beta=0.5
    )
    loss.backward()
    assert pc.grad[0] < pc.grad[1] < 0  # both pushed up, the earlier-stage-consistent pair harder


def test_spo_gradient_signs():
    pc, pr = t(-1.0, grad=True), t(-3.0, grad=True)
    loss, _ = spo_loss(pc, pr, RC, RR, t([0.4]), t([0.2]), alphas=[1.0], beta=0.5)
    loss.backward()
    assert pc.grad.item() < 0 < pr.grad.item()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(prev_rejected_implicit=None), r"prev_chosen_implicit: given without its partner"),
        (dict(prev_chosen_implicit=None), r"prev_rejected_implicit: given without its partner"),
        (dict(alphas=None), r"alphas: required for 2"),
        (dict(alphas=[1.0]), r"alphas: expected 2 entries"),
        (dict(alphas=[1.0, -0.5]), r"alphas: expected coefficients >= 0"),
        (dict(alphas=[1.0, float("inf")]), r"alphas: non-finite"),
        (dict(prev_chosen_implicit=torch.tensor([0.4, 0.1])), r"prev_chosen_implicit: expected shape \(1, M\)"),
        (dict(prev_rejected_implicit=torch.tensor([[0.2]])), r"prev_rejected_implicit: shape \(1, 1\) differs"),
        (dict(prev_rejected_implicit=torch.tensor([[0.2, float("nan")]])), r"prev_rejected_implicit: non-finite"),
        (dict(beta=-1.0), r"beta"),
    ],
)
def test_spo_rejects_bad_input(kwargs, match):
    args = dict(
        policy_chosen_logps=PC,
        policy_rejected_logps=PR,
        ref_chosen_logps=RC,
        ref_rejected_logps=RR,
        prev_chosen_implicit=t([0.4, 0.1]),
        prev_rejected_implicit=t([0.2, 0.3]),
        alphas=[0.5, 2.0],
        beta=0.5,
    )
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        spo_loss(**args)


# ----------------------------------------------------------------------------------------------- shared checks
@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize(
    "which", ["policy_chosen_logps", "policy_rejected_logps", "ref_chosen_logps", "ref_rejected_logps"]
)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_every_loss_rejects_non_finite_log_probs(name, which, bad):
    args = dict(
        policy_chosen_logps=t(-1.0, -2.0),
        policy_rejected_logps=t(-3.0, -2.0),
        ref_chosen_logps=t(-2.0, -2.0),
        ref_rejected_logps=t(-2.0, -2.0),
    )
    args[which] = t(-1.0, bad)
    if name == "modpo":
        args.update(
            chosen_margin_rewards=torch.zeros(2, 1), rejected_margin_rewards=torch.zeros(2, 1), weights=[1.0, 1.0]
        )
    with pytest.raises(ValueError, match=rf"^{which}: non-finite value .* at index 1$"):
        get_loss(name)(**args)


@pytest.mark.parametrize(
    "args, match",
    [
        ((t([-1.0]), PR, RC, RR), r"policy_chosen_logps: expected a non-empty tensor of shape \(B,\)"),
        ((torch.zeros(0), PR, RC, RR), r"policy_chosen_logps: expected a non-empty"),
        ((PC, t(-3.0, -3.0), RC, RR), r"policy_rejected_logps: expected shape \(1,\)"),
        ((PC, PR, [-2.0], RR), r"ref_chosen_logps: expected a torch.Tensor"),
        ((PC, PR, RC, torch.tensor([-2])), r"ref_rejected_logps: expected a floating tensor"),
    ],
)
def test_dpo_rejects_bad_shapes_and_types(args, match):
    with pytest.raises(ValueError, match=match):
        dpo_loss(*args)


@pytest.mark.parametrize("beta", [0.0, -0.1, float("nan"), float("inf"), "x", None])
def test_bad_beta(beta):
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(PC, PR, RC, RR, beta=beta)


def test_registry_and_get_loss():
    assert set(LOSSES) == {"dpo", "modpo", "spo"}
    assert get_loss("dpo") is dpo_loss and get_loss("modpo") is modpo_loss and get_loss("spo") is spo_loss
    with pytest.raises(ValueError, match=r"unknown loss 'ipo'; expected one of \['dpo', 'modpo', 'spo'\]"):
        get_loss("ipo")
    with pytest.raises(ValueError, match="unknown loss"):
        get_loss(None)


def _imports(module):
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(module))
    imported = {n.names[0].name for n in ast.walk(tree) if isinstance(n, ast.Import)}
    imported |= {
        n.module + ("." + n.names[0].name if n.module == "rcs_ray" else "")
        for n in ast.walk(tree)
        if isinstance(n, ast.ImportFrom) and n.module
    }
    return {m if m.startswith("rcs_ray") else m.split(".")[0] for m in imported}


def test_losses_module_imports_torch_only():
    from rcs_ray import registry

    # torch, its checked inputs (torch only), and the registry of loss entries (the standard library only)
    allowed = {"__future__", "math", "typing", "torch", "rcs_ray.registry", "rcs_ray.train.loss_inputs"}
    assert _imports(losses) <= allowed
    assert _imports(loss_inputs) <= {"__future__", "math", "typing", "torch"}
    assert _imports(registry) <= {"__future__", "importlib", "re", "dataclasses", "typing"}
