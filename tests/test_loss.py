"""TDMPC2Loss and TDMPC2Update against hand computations on a tiny world model (CI-sized)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tensordict import TensorDict
from torch.nn import functional as F
from torchrl.objectives import two_hot_encode

from tdmpc2_trl.config.schema import ModelConfig
from tdmpc2_trl.learning.loss import TDMPC2Loss
from tdmpc2_trl.learning.update import TDMPC2Update, make_optimizers
from tdmpc2_trl.networks.math import symexp, symlog
from tdmpc2_trl.networks.world_model import WorldModel

OBS, ACT, B, H = 5, 2, 4, 3
GAMMA, RHO = 0.9, 0.5
SUPPORT = torch.linspace(-10, 10, 101)
HEADS = (2, 0)  # the "random" pair that the patched randperm yields first
pytestmark = pytest.mark.filterwarnings("ignore:No target network updater")


def tiny_cfg(**kw) -> ModelConfig:
    base = dict(latent_dim=16, enc_dim=32, mlp_dim=32, num_enc_layers=2, num_mlp_layers=2, num_q=3, horizon=H)
    return ModelConfig(**{**base, **kw})


def make_loss(seed: int = 0, episodic: bool = True, termination: str = "latent_action", **loss_kw) -> TDMPC2Loss:
    """A tiny world model with every parameter perturbed (the zero-init heads would hide mistakes)."""
    torch.manual_seed(seed)
    wm = WorldModel(tiny_cfg(termination=termination), OBS, ACT, episodic=episodic)
    with torch.no_grad():
        for p in wm.parameters():
            p.add_(0.3 * torch.randn(p.shape))
    loss = TDMPC2Loss(wm, GAMMA, rho=RHO, **loss_kw)
    with torch.no_grad():  # a target that differs from the online heads, so using the wrong one shows
        for t in loss.target_q_params.values(True, True):
            t.add_(0.1 * torch.randn(t.shape))
    return loss


def make_batch(seed: int = 1, horizon: int = H, terminated_at=((0, 1),)) -> TensorDict:
    g = torch.Generator().manual_seed(seed)
    terminated = torch.zeros(B, horizon, 1, dtype=torch.bool)
    for b, t in terminated_at:
        terminated[b, t] = True
    nxt = TensorDict(
        observation=torch.randn(B, horizon, OBS, generator=g),
        reward=2 * torch.randn(B, horizon, 1, generator=g),
        terminated=terminated,
        truncated=torch.zeros(B, horizon, 1, dtype=torch.bool),
        done=terminated.clone(),
        batch_size=[B, horizon],
    )
    return TensorDict(
        observation=torch.randn(B, horizon, OBS, generator=g),
        action=torch.rand(B, horizon, ACT, generator=g) * 2 - 1,
        next=nxt,
        batch_size=[B, horizon],
    )


@pytest.fixture
def fixed_noise(monkeypatch):
    """Deterministic policy samples (ε = 0) and head choice (``HEADS``)."""
    monkeypatch.setattr(torch, "randn_like", lambda x, **kw: torch.zeros_like(x, **kw))

    def randperm(n, **kw):
        rest = [i for i in range(n) if i not in HEADS]
        return torch.tensor([*HEADS, *rest], device=kw.get("device"))

    monkeypatch.setattr(torch, "randperm", randperm)


# ---------------------------------------------------------------- hand computations (time first, explicit loops)
def decode(logits: torch.Tensor) -> torch.Tensor:
    return symexp((logits.softmax(-1) * SUPPORT).sum(-1, keepdim=True))


def ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the cross-entropy to the two-hot of symlog(y) (TorchRL's encoder)."""
    return F.cross_entropy(logits, two_hot_encode(symlog(y.squeeze(-1)), SUPPORT))


def head(wm: WorldModel, z, a, q: int, params=None) -> torch.Tensor:
    return wm.q_logits(z, a, heads=torch.tensor([q]), params=params)[0]


def hand_world_model_loss(loss: TDMPC2Loss, batch: TensorDict) -> dict[str, torch.Tensor]:
    wm = loss.world_model
    obs, act = batch["observation"].transpose(0, 1), batch["action"].transpose(0, 1)
    next_obs = batch["next", "observation"].transpose(0, 1)
    rew, term = batch["next", "reward"].transpose(0, 1), batch["next", "terminated"].transpose(0, 1).float()
    horizon, num_q = act.shape[0], wm.cfg.num_q
    target = loss.target_q_params
    with torch.no_grad():
        next_z = [wm.encode(next_obs[t]) for t in range(horizon)]
        td = []
        for t in range(horizon):
            a_pi = torch.tanh(wm.policy.module.mean_and_log_std(next_z[t])[0])
            q = torch.minimum(*[decode(head(wm, next_z[t], a_pi, h, target)) for h in HEADS])
            td.append(rew[t] + GAMMA * (1 - term[t]) * q)
    zs = [wm.encode(obs[0])]
    consistency = reward = value = termination = 0.0
    for t in range(horizon):
        zs.append(wm.next(zs[t], act[t]))
        consistency = consistency + RHO**t * F.mse_loss(zs[t + 1], next_z[t])
        reward = reward + RHO**t * ce(wm.reward_logits(zs[t], act[t]), rew[t])
        for q in range(num_q):
            value = value + RHO**t * ce(head(wm, zs[t], act[t], q), td[t])
    if wm.episodic:
        for t in range(horizon):
            logit = (
                wm.termination_logit(zs[t], act[t])
                if wm.termination_uses_action
                else wm.termination_logit(zs[t + 1], act[t])
            )
            p = torch.sigmoid(logit)
            termination = termination - (term[t] * p.log() + (1 - term[t]) * (1 - p).log()).mean() / horizon
    return {
        "loss_consistency": 20.0 * consistency / horizon,
        "loss_reward": 0.1 * reward / horizon,
        "loss_value": 0.1 * value / (horizon * num_q),
        "loss_termination": 1.0 * torch.as_tensor(termination),
        "td": torch.stack(td, 1),
        "latents": torch.stack(zs, 1),
    }


# ---------------------------------------------------------------- each term by hand
@pytest.mark.parametrize("episodic,termination", [(True, "latent_action"), (True, "latent"), (False, "latent_action")])
def test_world_model_terms_match_hand_computation(fixed_noise, episodic, termination):
    loss = make_loss(episodic=episodic, termination=termination)
    loss.eval()  # dropout off so both sides see the same Q heads
    batch = make_batch()
    out = loss.world_model_loss(batch)
    ref = hand_world_model_loss(loss, batch)
    for key in ("loss_consistency", "loss_reward", "loss_value", "loss_termination"):
        torch.testing.assert_close(out[key], ref[key], rtol=1e-5, atol=1e-6, msg=key)
    torch.testing.assert_close(loss.td_target(batch), ref["td"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["latents"], ref["latents"].detach(), rtol=1e-5, atol=1e-6)
    assert out["latents"].shape == (B, H + 1, 16) and not out["latents"].requires_grad
    if not episodic:
        assert out["loss_termination"].item() == 0.0
    else:
        assert out["loss_termination"].item() > 0.0


def test_policy_loss_matches_hand_computation(fixed_noise):
    loss = make_loss(scale_tau=0.5, entropy_coef=0.1)
    loss.eval()
    wm = loss.world_model
    last = str(max(int(k) for k in loss.q_params.keys()))
    with torch.no_grad():  # widen Q so that the P95−P5 range exceeds 1 and the scale moves
        loss.q_params[last, "weight"].mul_(20.0)
    latents = torch.softmax(3 * torch.randn(16, H + 1, 2, 8), -1).flatten(-2)
    out = loss.policy_loss(latents)

    with torch.no_grad():
        total, scale = 0.0, None
        for t in range(H + 1):
            z = latents[:, t]
            mean, log_std = wm.policy.module.mean_and_log_std(z)
            a = torch.tanh(mean)
            entropy = -ACT * (-log_std - 0.5 * math.log(2 * math.pi)).sum(-1, keepdim=True)
            q = (decode(head(wm, z, a, HEADS[0])) + decode(head(wm, z, a, HEADS[1]))) / 2
            if t == 0:
                p5, p95 = np.percentile(q.squeeze(-1).numpy(), [5, 95])
                scale = 1.0 + 0.5 * (max(p95 - p5, 1.0) - 1.0)
            total = total + RHO**t * (-(0.1 * entropy + q / scale)).mean()
        expected = total / (H + 1)
    assert scale > 1.0
    torch.testing.assert_close(loss.scale.value, torch.tensor(scale, dtype=torch.float32), rtol=1e-5, atol=0)
    torch.testing.assert_close(out["loss_policy"], expected.float(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["q_scale"], loss.scale.value)


def test_value_loss_uses_dropout_in_train_mode_but_target_does_not(fixed_noise):
    loss = make_loss()
    loss.train()
    batch = make_batch()
    torch.manual_seed(0)
    a = loss.world_model_loss(batch)
    b = loss.world_model_loss(batch)
    assert a["loss_value"].item() != b["loss_value"].item()  # fresh dropout masks on the online heads
    torch.testing.assert_close(a["loss_consistency"], b["loss_consistency"])
    torch.testing.assert_close(loss.td_target(batch), loss.td_target(batch))  # TD-MPC2: targets in eval mode
    assert loss.world_model.q_ensemble.training  # and the mode is restored


# ---------------------------------------------------------------- bootstrapping flags
def test_terminated_removes_bootstrap_truncated_and_done_do_not(fixed_noise):
    loss = make_loss()
    base = make_batch(terminated_at=())
    td_base = loss.td_target(base)
    reward = base["next", "reward"]
    assert not torch.allclose(td_base, reward)  # Q contributes, so the masking is visible

    terminated = base.clone()
    terminated["next", "terminated"][0, 1] = True
    td_term = loss.td_target(terminated)
    torch.testing.assert_close(td_term[0, 1], reward[0, 1], rtol=0, atol=0)
    keep = torch.ones(B, H, dtype=torch.bool)
    keep[0, 1] = False
    torch.testing.assert_close(td_term[keep], td_base[keep], rtol=0, atol=0)

    cut = base.clone()  # the slice sampler marks every slice end as truncated/done
    cut["next", "truncated"][:] = True
    cut["next", "done"][:] = True
    torch.testing.assert_close(loss.td_target(cut), td_base, rtol=0, atol=0)


# ---------------------------------------------------------------- registration, optimisers, isolation
def test_q_parameters_are_shared_and_target_is_a_buffer_copy():
    loss = make_loss()
    wm = loss.world_model
    online = list(loss.q_params.values(True, True))
    ensemble = list(wm.q_ensemble.params.values(True, True))
    assert len(online) == len(ensemble) and all(p is q for p, q in zip(online, ensemble))
    targets = list(loss.target_q_params.values(True, True))
    assert all(not t.requires_grad for t in targets)
    ids = {id(p) for p in loss.parameters()}
    assert not ids & {id(t) for t in targets}
    assert len(ids) == len({id(p) for p in wm.parameters()})  # nothing extra, nothing counted twice
    state = loss.state_dict()
    assert "scale.value" in state and any(k.startswith("target_qvalue_network_params.params") for k in state)


def test_optimisers_partition_parameters_and_scale_encoder_lr():
    loss = make_loss()
    wm_optim, pi_optim = make_optimizers(loss, lr=1e-3, enc_lr_scale=0.3)
    wm_ids = [id(p) for g in wm_optim.param_groups for p in g["params"]]
    pi_ids = [id(p) for g in pi_optim.param_groups for p in g["params"]]
    assert len(wm_ids) == len(set(wm_ids)) and len(pi_ids) == len(set(pi_ids))
    assert set(pi_ids) == {id(p) for p in loss.world_model.policy.parameters()}
    assert set(wm_ids) | set(pi_ids) == {id(p) for p in loss.parameters()} and not set(wm_ids) & set(pi_ids)
    assert not set(wm_ids) & {id(t) for t in loss.target_q_params.values(True, True)}
    enc = {id(p) for p in loss.world_model.encoder.parameters()}
    for g in wm_optim.param_groups:
        assert g["lr"] == pytest.approx(3e-4 if {id(p) for p in g["params"]} == enc else 1e-3)
    assert pi_optim.param_groups[0]["eps"] == 1e-5 and wm_optim.param_groups[0]["eps"] == 1e-8


def snapshot(loss: TDMPC2Loss) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in loss.state_dict().items()}


def changed(before: dict[str, torch.Tensor], loss: TDMPC2Loss) -> set[str]:
    return {k for k, v in loss.state_dict().items() if not torch.equal(v, before[k])}


def test_backward_of_each_objective_reaches_only_its_own_parameters():
    loss = make_loss()
    wm_out = loss.world_model_loss(make_batch())
    sum(v for k, v in wm_out.items() if k.startswith("loss_")).backward()
    for name, p in loss.named_parameters():
        assert (p.grad is None) == (".policy." in name), name
    loss.zero_grad(set_to_none=True)
    loss.policy_loss(wm_out["latents"])["loss_policy"].backward()
    for name, p in loss.named_parameters():
        assert (p.grad is not None) == (".policy." in name), name
    assert all(t.grad is None for t in loss.target_q_params.values(True, True))


def test_optimiser_steps_are_isolated_and_leave_the_target_alone():
    loss = make_loss()
    updater = TDMPC2Update(loss, *make_optimizers(loss, lr=1e-3))
    batch = make_batch()

    before = snapshot(loss)
    wm_out, stepped = updater.world_model_step(batch)
    assert stepped
    moved = changed(before, loss)
    assert moved and not any(".policy." in k for k in moved)
    assert not any(k.startswith("target_") or k.startswith("scale.") for k in moved)
    assert all(p.grad is None for p in loss.world_model.policy.parameters())

    before = snapshot(loss)
    updater.policy_step(wm_out["latents"])
    moved = changed(before, loss) - {"scale.value"}
    assert moved and all(k.startswith("world_model.policy.") for k in moved)
    assert all(p.grad is None for n, p in loss.named_parameters() if ".policy." not in n)


def test_soft_update_lerps_target_by_tau_exactly():
    tau = 0.01
    loss = make_loss()
    updater = TDMPC2Update(loss, *make_optimizers(loss), tau=tau)  # SoftUpdate.init_ copies online → target
    online = list(loss.q_params.values(True, True))
    targets = list(loss.target_q_params.values(True, True))
    assert all(torch.equal(t, p) for t, p in zip(targets, online))
    start = [t.clone() for t in targets]
    updater(make_batch())
    for t, t0, p in zip(targets, start, online):
        torch.testing.assert_close(t, torch.lerp(t0, p.detach(), tau), rtol=0, atol=1e-7)
    assert any(not torch.equal(t, t0) for t, t0 in zip(targets, start))


# ---------------------------------------------------------------- the whole update
def test_total_loss_decreases_on_a_fixed_batch():
    torch.manual_seed(0)
    wm = WorldModel(tiny_cfg(), OBS, ACT, episodic=True)
    loss = TDMPC2Loss(wm, GAMMA)
    updater = TDMPC2Update(loss, *make_optimizers(loss, lr=3e-3))
    batch = make_batch(horizon=5)
    history = [updater(batch)["total_loss"].item() for _ in range(50)]
    assert all(math.isfinite(x) for x in history)
    assert history[-1] < 0.5 * history[0], history


def test_update_metrics_keys_and_forward():
    loss = make_loss()
    updater = TDMPC2Update(loss, *make_optimizers(loss))
    metrics = updater(make_batch())
    for key in (
        "loss_consistency",
        "loss_reward",
        "loss_value",
        "loss_termination",
        "loss_policy",
        "total_loss",
        "grad_norm",
        "pi_grad_norm",
        "q_scale",
        "td_target_mean",
        "entropy",
    ):
        assert key in metrics.keys() and metrics[key].shape == () and not metrics[key].requires_grad
    assert "latents" not in metrics.keys()
    out = loss(make_batch())
    assert set(loss.out_keys) <= set(out.keys())
    restored = TDMPC2Update(loss, *make_optimizers(loss))
    restored.load_state_dict(updater.state_dict())


def test_set_keys_reads_renamed_entries(fixed_noise):
    loss = make_loss()
    batch = make_batch()
    expected = loss.td_target(batch)
    renamed = batch.rename_key_("observation", "pixels_state")
    renamed.rename_key_(("next", "observation"), ("next", "pixels_state"))
    renamed.rename_key_(("next", "terminated"), ("next", "end"))
    loss.set_keys(observation="pixels_state", terminated="end")
    assert ("next", "end") in loss.in_keys
    torch.testing.assert_close(loss.td_target(renamed), expected)


def test_non_finite_batch_skips_the_update_and_persistent_faults_stop():
    from tdmpc2_trl.learning.update import NonFiniteUpdateError

    loss = make_loss()
    updater = TDMPC2Update(loss, *make_optimizers(loss, lr=1e-3), max_consecutive_skips=2)
    good = make_batch()
    updater(good)
    bad = good.clone()
    bad["observation"][0, 0, 0] = float("nan")
    before = snapshot(loss)
    adam_state = {k: v.clone() for k, v in updater.wm_optim.state[updater._wm_params[0]].items()}
    metrics = updater(bad)
    assert changed(before, loss) == set()  # no parameter, no target, no RunningScale moved
    for k, v in updater.wm_optim.state[updater._wm_params[0]].items():
        torch.testing.assert_close(v, adam_state[k])  # Adam's moments untouched too
    assert metrics["skipped_updates"].item() == 1 and updater.consecutive_skips == 1
    updater(good)  # a good batch resets the consecutive count
    assert updater.consecutive_skips == 0 and updater.skipped_updates == 1
    updater(bad)
    updater(bad)
    with pytest.raises(NonFiniteUpdateError, match="3 consecutive updates"):
        updater(bad)


# ---------------------------------------------------------------- compiled terms
def _terms_and_grads(loss: TDMPC2Loss, batch: TensorDict, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    loss.zero_grad(set_to_none=True)
    wm_out = loss.world_model_loss(batch)
    sum(v for k, v in wm_out.items() if k.startswith("loss_")).backward()
    pi_out = loss.policy_loss(wm_out["latents"])
    pi_out["loss_policy"].backward()
    out = {k: v.detach().clone() for k, v in {**wm_out.to_dict(), **pi_out.to_dict()}.items()}
    out.update({f"grad.{n}": p.grad.clone() for n, p in loss.named_parameters() if p.grad is not None})
    return out


def test_compiled_terms_equal_eager_terms_and_gradients():
    """compile_terms(): same loss values and gradients as eager for the same random draws.

    Inductor's own RNG differs from eager's; ``fallback_random`` makes it call ATen's random ops in order, and
    with Q dropout off the draws (π's noise, the head pairs) are then the same.
    """
    torch.manual_seed(0)
    loss = TDMPC2Loss(WorldModel(tiny_cfg(q_dropout=0.0), OBS, ACT, episodic=True), GAMMA)
    batch = make_batch()
    loss.scale.value.fill_(5.0)  # above the tiny model's Q range: the policy step lerps it down
    eager = _terms_and_grads(loss, batch, seed=5)
    loss.scale.value.fill_(5.0)
    loss.compile_terms()
    with torch._inductor.config.patch(fallback_random=True):
        compiled = _terms_and_grads(loss, batch, seed=5)
    assert eager["q_scale"] < 5.0  # RunningScale moved, and (below) moved the same way when compiled
    # one latent-step graph serves every step of the rollout: compiling does not grow with the horizon
    assert len(loss._terms_fns["next_latent"].seen_shapes) == 1 and batch["action"].shape[-2] > 1
    assert eager.keys() == compiled.keys()
    for key in eager:
        torch.testing.assert_close(compiled[key], eager[key], rtol=1e-4, atol=1e-5, msg=key)
    assert loss.compile_terms(False)._terms_fns["next_latent"] == loss._next_latent


# ---------------------------------------------------------------- slices padded past an episode's end
def with_mask(batch: TensorDict, mask: torch.Tensor) -> TensorDict:
    out = batch.clone()
    out.set(("collector", "mask"), mask)
    return out


def objective(batch: TensorDict) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Every loss term of a fresh ``make_loss()(batch)`` (the policy term updates RunningScale) and the gradient
    of their sum, per parameter."""
    loss = make_loss()
    loss.eval()
    out = loss(batch)
    terms = {k: v for k, v in out.items() if k.startswith("loss_")}
    sum(terms.values()).backward()
    grads = {n: p.grad.clone() for n, p in loss.world_model.named_parameters() if p.grad is not None}
    return terms, grads


def test_an_all_real_mask_is_the_unmasked_loss(fixed_noise):
    batch = make_batch()
    plain, plain_grads = objective(batch)
    masked, masked_grads = objective(with_mask(batch, torch.ones(B, H, dtype=torch.bool)))
    for key in plain:
        torch.testing.assert_close(masked[key], plain[key], rtol=0, atol=0, msg=key)
    for name in plain_grads:
        # The same sums, accumulated in another order by autograd: in fp32 an element may then differ by a few
        # ulps of the largest terms it sums, not of itself (seen: 3e-8 on an element of a tensor whose largest is
        # 7e-2, on an AMX CPU whose kernels block the sums differently), so the absolute bound scales with the tensor.
        scale = plain_grads[name].abs().max().item()
        torch.testing.assert_close(masked_grads[name], plain_grads[name], rtol=1e-5, atol=1e-5 * scale, msg=name)


def test_padded_steps_weigh_nothing(fixed_noise):
    """What lies past an episode's end (the padded steps) changes no loss term and no gradient; the mask does."""
    mask = torch.ones(B, H, dtype=torch.bool)
    mask[0, 1:] = False  # slice 0: one real step; slice 2: two
    mask[2, 2:] = False
    batch = with_mask(make_batch(terminated_at=((0, 0), (2, 1))), mask)
    other = batch.clone()
    g = torch.Generator().manual_seed(5)
    pad = ~mask
    for key in ("action", ("next", "observation"), ("next", "reward")):
        value = other.get(key).clone()
        value[pad] = 3 * torch.randn(value[pad].shape, generator=g)
        other.set(key, value)
    flipped = other.get(("next", "terminated")).clone()
    flipped[pad] = ~flipped[pad]
    other.set(("next", "terminated"), flipped)
    terms, grads = objective(batch)
    other_terms, other_grads = objective(other)
    for key in terms:
        torch.testing.assert_close(other_terms[key], terms[key], rtol=1e-6, atol=1e-7, msg=key)
    for name in grads:
        torch.testing.assert_close(other_grads[name], grads[name], rtol=1e-5, atol=1e-7, msg=name)
    unmasked, _ = objective(other.exclude(("collector", "mask")))
    for key in ("loss_consistency", "loss_reward", "loss_value", "loss_termination", "loss_policy"):
        assert not torch.allclose(unmasked[key], terms[key]), key
