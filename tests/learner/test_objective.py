import torch

from srum.learner.objective import weighted_ar_loss, weighted_flow_loss


def test_flow_loss_by_hand():
    # B=1, N=2 tokens, D=2 channels
    v = torch.tensor([[[1.0, 2.0], [0.0, 1.0]]])
    target = torch.tensor([[[0.0, 0.0], [0.0, 0.0]]])
    v_ref = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    w = torch.tensor([[0.5, 1.0]])
    out = weighted_flow_loss(v, target, v_ref, w, kl_coef=0.1)
    # token mse: (1 + 4) / 2 = 2.5 and (0 + 1) / 2 = 0.5; weighted mean (0.5 * 2.5 + 1 * 0.5) / 2 = 0.875
    assert torch.isclose(out["reward_term"], torch.tensor(0.875))
    # kl: squared diffs 0, 4, 0, 0 -> mean 1.0
    assert torch.isclose(out["kl_term"], torch.tensor(1.0))
    assert torch.isclose(out["total"], torch.tensor(0.875 + 0.1 * 1.0))


def test_zero_weight_tokens_get_no_reward_gradient():
    v = torch.randn(1, 3, 4, requires_grad=True)
    w = torch.tensor([[1.0, 0.0, 1.0]])
    weighted_flow_loss(v, torch.zeros(1, 3, 4), v.detach(), w, 0.0)["total"].backward()
    assert torch.all(v.grad[0, 1] == 0) and torch.any(v.grad[0, 0] != 0)


def test_ar_loss_by_hand():
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25]]]))
    ref = torch.log(torch.tensor([[[0.25, 0.5, 0.25]]]))
    out = weighted_ar_loss(logits, torch.tensor([[0]]), ref, torch.tensor([[2.0]]), kl_coef=1.0)
    assert torch.isclose(out["reward_term"], 2.0 * -torch.log(torch.tensor(0.5)))
    kl = 0.5 * torch.log(torch.tensor(2.0)) + 0.25 * torch.log(torch.tensor(0.5))  # KL(policy || ref)
    assert torch.isclose(out["kl_term"], kl)


def test_negative_weights_push_away_by_the_reflection_about_the_reference():
    # one token, D=2: target 0, reference 1 away; a weight of -1 regresses 2 v_ref - v onto the target
    v = torch.tensor([[[3.0, 1.0]]])
    v_ref = torch.tensor([[[1.0, 1.0]]])
    out = weighted_flow_loss(v, torch.zeros(1, 1, 2), v_ref, torch.tensor([[-1.0]]), kl_coef=0.0)
    # 2 v_ref - v = (-1, 1) -> mse (1 + 1) / 2 = 1
    assert torch.isclose(out["reward_term"], torch.tensor(1.0))


def test_negative_weights_cannot_diverge():
    """Gradient descent on a push-away term settles at v_ref + (v_ref - target) instead of running off."""
    v = torch.zeros(1, 1, 2, requires_grad=True)
    v_ref, target = torch.tensor([[[1.0, -1.0]]]), torch.tensor([[[0.5, 0.0]]])
    opt = torch.optim.SGD([v], lr=0.2)
    for _ in range(300):
        opt.zero_grad()
        weighted_flow_loss(v, target, v_ref, torch.tensor([[-1.0]]), kl_coef=0.0)["total"].backward()
        opt.step()
    assert torch.allclose(v.detach(), 2 * v_ref - target, atol=1e-4)


def test_nonnegative_weights_give_the_plain_weighted_loss():
    torch.manual_seed(0)
    v, target, v_ref = torch.randn(2, 3, 4), torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    w = torch.rand(2, 3)
    plain = (w * (v - target).pow(2).mean(-1)).mean()
    assert torch.equal(weighted_flow_loss(v, target, v_ref, w, 0.0)["reward_term"], plain)


def test_ar_negative_weight_pushes_with_a_pulls_gradient_down_to_the_margin():
    from srum.learner.objective import PUSH_MARGIN

    ref = torch.log(torch.tensor([[[0.98, 0.01, 0.01]]]))  # a near-certain token, like a background patch
    logits = ref.clone().requires_grad_(True)
    out = weighted_ar_loss(logits, torch.tensor([[0]]), ref, torch.tensor([[-2.0]]), kl_coef=0.0)
    assert torch.isclose(out["reward_term"], torch.tensor(2.0 * PUSH_MARGIN))  # 2 * (log p - (log p_ref - margin))
    out["total"].backward()
    pull = ref.clone().requires_grad_(True)
    weighted_ar_loss(pull, torch.tensor([[0]]), ref, torch.tensor([[2.0]]), kl_coef=0.0)["total"].backward()
    assert torch.allclose(logits.grad, -pull.grad)  # as strong as a pull, the other way (unlikelihood: 49x)
    below = torch.log(torch.tensor([[[0.3, 0.35, 0.35]]])).requires_grad_(True)  # already > margin below the ref
    out = weighted_ar_loss(below, torch.tensor([[0]]), ref, torch.tensor([[-2.0]]), kl_coef=0.0)
    out["total"].backward()
    assert out["reward_term"] == 0 and not below.grad.any()  # bounded: the push stops there
