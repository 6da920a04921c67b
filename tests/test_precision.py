"""bf16 autocast: resolution of ``precision=``, fp32 outputs, planning and learning preserved."""

import math

import pytest
import torch
from tensordict import TensorDict
from torchrl.envs import ExplorationType, set_exploration_type

from tdmpc2_trl.config.schema import ConfigError, ModelConfig
from tdmpc2_trl.learning.loss import TDMPC2Loss
from tdmpc2_trl.learning.update import TDMPC2Update, make_optimizers
from tdmpc2_trl.networks.math import soft_ce, two_hot_inv
from tdmpc2_trl.networks.world_model import WorldModel
from tdmpc2_trl.planning.planner import TDMPC2Planner
from tdmpc2_trl.platform.precision import autocast, resolve_precision

BF16 = torch.bfloat16
OBS, ACT = 3, 2
pytestmark = pytest.mark.filterwarnings("ignore:No target network updater")


def tiny_cfg() -> ModelConfig:
    return ModelConfig(latent_dim=16, enc_dim=32, mlp_dim=32, num_enc_layers=2, num_mlp_layers=2, num_q=3, horizon=3)


def test_resolve_precision():
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) is None
    assert resolve_precision("bf16", cpu) is BF16
    assert resolve_precision("auto", cpu) in (None, BF16)
    with pytest.raises(ConfigError, match="precision='fp16' is not one of auto, fp32, bf16"):
        resolve_precision("fp16", cpu)


def test_networks_return_fp32_under_autocast():
    torch.manual_seed(0)
    wm = WorldModel(tiny_cfg(), OBS, ACT, episodic=True)
    obs, a = torch.randn(4, OBS), torch.rand(4, ACT) * 2 - 1
    with autocast(torch.device("cpu"), BF16):
        z = wm.encode(obs)
        outs = [z, wm.next(z, a), wm.reward_logits(z, a), wm.termination_logit(z, a), wm.q_logits(z, a), *wm.pi(z)[:4]]
    assert all(t.dtype == torch.float32 for t in outs)
    torch.testing.assert_close(outs[0], wm.encode(obs), atol=2e-2, rtol=0)  # bf16 has ~3 significant digits
    logits = torch.randn(64, wm.cfg.num_bins) * 3
    with autocast(torch.device("cpu"), BF16):  # decoding stays fp32 (no bf16 matmul inside)
        decoded = two_hot_inv(logits, wm.bins)
    torch.testing.assert_close(decoded, two_hot_inv(logits, wm.bins), atol=0, rtol=0)


def test_bf16_planner_finds_a_learned_optimum_like_fp32():
    """Fit the reward head to r = -5·||a - a*||², then plan: bf16 and fp32 both find a* (and agree)."""
    torch.manual_seed(0)
    wm = WorldModel(tiny_cfg(), OBS, ACT)
    target = torch.tensor([0.6, -0.3])
    opt = torch.optim.Adam(wm.reward.parameters(), lr=3e-3)
    for _ in range(400):
        with torch.no_grad():
            z = wm.encode(torch.randn(256, OBS))
            z = torch.cat([z, wm.next(z, torch.rand(256, ACT) * 2 - 1)])  # latents as seen along rollouts
        a = torch.rand(512, ACT) * 2 - 1
        r = -5 * (a - target).pow(2).sum(-1, keepdim=True)
        opt.zero_grad()
        soft_ce(wm.reward_logits(z, a), r, wm.bins).mean().backward()
        opt.step()
    obs = torch.randn(8, OBS)
    actions = {}
    for name, dtype in (("fp32", None), ("bf16", BF16)):
        torch.manual_seed(1)
        planner = TDMPC2Planner(wm, discount=0.9, horizon=3, iterations=8, min_std=0.01, autocast_dtype=dtype)
        with set_exploration_type(ExplorationType.DETERMINISTIC):
            actions[name] = planner(TensorDict(observation=obs, batch_size=[8]))["action"]
        assert actions[name].dtype == torch.float32
        assert (actions[name] - target).abs().max() < 0.1, (name, actions[name])
    assert (actions["bf16"] - actions["fp32"]).abs().mean() < 0.05


def test_bf16_update_keeps_fp32_state_and_reduces_the_loss():
    torch.manual_seed(0)
    wm = WorldModel(tiny_cfg(), OBS, ACT, episodic=True)
    loss = TDMPC2Loss(wm, 0.9)
    updater = TDMPC2Update(loss, *make_optimizers(loss, lr=3e-3), autocast_dtype=BF16)
    g = torch.Generator().manual_seed(1)
    B, H = 16, 4
    nxt = TensorDict(
        observation=torch.randn(B, H, OBS, generator=g),
        reward=2 * torch.randn(B, H, 1, generator=g),
        terminated=torch.zeros(B, H, 1, dtype=torch.bool),
        batch_size=[B, H],
    )
    batch = TensorDict(
        observation=torch.randn(B, H, OBS, generator=g),
        action=torch.rand(B, H, ACT, generator=g) * 2 - 1,
        next=nxt,
        batch_size=[B, H],
    )
    history = [updater(batch)["total_loss"].item() for _ in range(50)]
    assert all(math.isfinite(x) for x in history)
    assert history[-1] < 0.5 * history[0], history
    assert updater.skipped_updates == 0
    assert all(p.dtype == torch.float32 for p in loss.parameters())
    for state in updater.wm_optim.state.values():
        assert state["exp_avg"].dtype == torch.float32
