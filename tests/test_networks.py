"""Seed-exact and official-preset networks: parameter counts, layer order, keys, init."""

import pytest
import torch
from tensordict import TensorDict
from torch import nn

from tdmpc2_trl import ConfigError, WorldModel
from tdmpc2_trl.config.presets import load_model_config, preset_names
from tdmpc2_trl.networks.layers import Linear, SimNorm, bias_after_matmul
from tdmpc2_trl.networks.math import two_hot_inv
from tdmpc2_trl.run.summary import main as summary_main

SEED_COUNTS = {
    "encoder": 800_768,
    "dynamics": 1_056_768,
    "reward": 844_901,
    "termination": 527_873,
    "qvalue": 4_224_505,
    "policy": 795_144,
    "world_model": 7_454_815,
    "total": 8_249_959,
}
OFFICIAL_TOTALS = {"1m": 1_208_503, "5m": 4_949_862, "19m": 18_037_862, "48m": 47_165_286, "317m": 312_472_533}


def test_presets_exist():
    assert set(preset_names()) == {"8m-h10", *OFFICIAL_TOTALS}


def test_seed_counts_exact():
    wm = WorldModel(load_model_config("8m-h10"), obs_dim=18, action_dim=4)
    assert wm.parameter_counts() == SEED_COUNTS


@pytest.mark.parametrize("name", ["1m", "5m", "19m", "48m"])
def test_official_counts(name):
    wm = WorldModel(load_model_config(name), obs_dim=18, action_dim=4)
    assert wm.termination is None
    assert wm.parameter_counts()["total"] == OFFICIAL_TOTALS[name]


def test_official_317m_count_without_allocating():
    with torch.device("meta"):
        wm = WorldModel(load_model_config("317m"), obs_dim=18, action_dim=4)
    assert wm.parameter_counts()["total"] == OFFICIAL_TOTALS["317m"]


def test_seed_layer_order():
    wm = WorldModel(load_model_config("8m-h10"), obs_dim=18, action_dim=4)
    kinds = [type(m).__name__ for m in wm.encoder.module]
    assert kinds == ["Linear", "LayerNorm", "Mish"] * 3 + ["Linear", "SimNorm"]
    dyn = [type(m).__name__ for m in wm.dynamics.module.net]
    assert dyn == ["Linear", "LayerNorm", "Mish"] * 3 + ["Linear", "LayerNorm", "SimNorm"]
    term = [type(m).__name__ for m in wm.termination.module.net]
    assert term == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]
    head = [type(m).__name__ for m in wm.q_ensemble._skeleton]
    assert head == ["Linear", "Dropout", "LayerNorm", "Mish"] + ["Linear", "LayerNorm", "Mish"] * 2 + ["Linear"]


def test_episodic_official_preset_builds_latent_only_termination():
    wm = WorldModel(load_model_config("1m"), obs_dim=18, action_dim=4, episodic=True)
    assert wm.termination.in_keys == ["latent"]
    assert wm.termination_logit(torch.randn(2, 128), torch.zeros(2, 4)).shape == (2, 1)


def test_init_zero_reward_and_q_and_truncated_normal():
    wm = WorldModel(load_model_config("8m-h10"), obs_dim=18, action_dim=4)
    z, a = torch.randn(6, 512), torch.rand(6, 4) * 2 - 1
    assert two_hot_inv(wm.reward_logits(z, a), wm.bins).abs().max() < 1e-5
    wm.eval()
    assert two_hot_inv(wm.q_logits(z, a), wm.bins).abs().max() < 1e-5
    first = wm.encoder.module[0]
    assert first.bias.abs().max() == 0
    # TD-MPC2 calls trunc_normal_(std=0.02) with the default bounds [-2, 2], i.e. effectively a plain normal
    assert 0.019 < first.weight.std().item() < 0.021 and abs(first.weight.mean().item()) < 1e-3


def test_tensordict_keys_and_shapes():
    wm = WorldModel(load_model_config("1m"), obs_dim=5, action_dim=2, episodic=True)
    td = TensorDict(observation=torch.randn(3, 7, 5), batch_size=[3, 7])
    wm.encoder(td)
    td["action"] = torch.zeros(3, 7, 2)
    for net in (wm.dynamics, wm.reward, wm.termination, wm.qvalue):
        net(td)
    assert td["latent"].shape == (3, 7, 128)
    assert td["next_latent"].shape == (3, 7, 128)
    assert td["reward_logits"].shape == (3, 7, 101)
    assert td["termination_logit"].shape == (3, 7, 1)
    assert td["state_action_value_logits"].shape == (3, 7, 2, 101)
    out = wm.policy(td.select("latent"))
    assert out["action"].shape == (3, 7, 2) and out["scaled_entropy"].shape == (3, 7, 1)
    assert out["action"].abs().max() <= 1
    # latents are SimNorm outputs: groups of 8 sum to 1
    torch.testing.assert_close(td["latent"].view(3, 7, 16, 8).sum(-1), torch.ones(3, 7, 16))


def test_policy_scaled_entropy_identity():
    torch.manual_seed(0)  # fixed weights: with saturated tanh the log(1 - tanh² + 1e-6) term is ill-conditioned
    wm = WorldModel(load_model_config("5m"), obs_dim=5, action_dim=3)
    z = torch.randn(4, 512)
    mean, log_std = wm.policy.module.mean_and_log_std(z)
    torch.manual_seed(1)
    action, loc, log_std2, log_prob, scaled_entropy = wm.pi(z)
    torch.manual_seed(1)
    eps = torch.randn_like(mean)
    u = mean + eps * log_std.exp()
    gauss = torch.distributions.Normal(mean, log_std.exp()).log_prob(u).sum(-1, keepdim=True)
    torch.testing.assert_close(action, torch.tanh(u))
    torch.testing.assert_close(loc, torch.tanh(mean))
    torch.testing.assert_close(scaled_entropy, -3 * gauss)
    torch.testing.assert_close(log_prob, gauss - torch.log(1 - torch.tanh(u) ** 2 + 1e-6).sum(-1, keepdim=True))
    assert ((log_std2 >= -10) & (log_std2 <= 2)).all()


def test_q_value_uses_two_heads_min_and_avg():
    wm = WorldModel(load_model_config("1m"), obs_dim=5, action_dim=2)
    wm.eval()
    # give the two heads distinct outputs: bias of the last layer puts all mass on one bin per head
    with torch.no_grad():
        last = wm.q_ensemble.params["7"]
        last["bias"].zero_()
        last["bias"][0, 60] = 50.0  # symlog 2.0 -> symexp = e^2 - 1
        last["bias"][1, 40] = 50.0  # symlog -2.0
    z, a = torch.randn(3, 128), torch.zeros(3, 2)
    lo = -torch.expm1(torch.tensor(2.0))
    torch.testing.assert_close(wm.q_value(z, a, "min"), torch.full((3, 1), lo.item()), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(wm.q_value(z, a, "avg"), torch.zeros(3, 1), rtol=1e-4, atol=1e-4)
    assert wm.q_logits(z, a).shape == (2, 3, 101)


def test_q_heads_are_independent_modules():
    wm = WorldModel(load_model_config("8m-h10"), obs_dim=18, action_dim=4)
    w = wm.q_ensemble.params["0", "weight"]
    assert w.shape == (5, 512, 516) and isinstance(w, nn.Parameter)
    assert not torch.equal(w[0], w[1])  # separately initialised heads


def test_simnorm_rejects_bad_dim_and_config_errors():
    with pytest.raises(ValueError):
        SimNorm(8)(torch.randn(2, 12))
    with pytest.raises(ConfigError):
        load_model_config("nope")
    with pytest.raises(ConfigError):
        load_model_config("8m-h10", latent_dim=100)
    with pytest.raises(ConfigError):
        load_model_config("8m-h10", not_a_key=1)


def test_summary_command_prints_seed_counts(capsys):
    assert summary_main(["model=8m-h10", "obs_dim=18", "action_dim=4"]) == 0
    out = capsys.readouterr().out
    for n in SEED_COUNTS.values():
        assert f"{n:,}" in out
    assert summary_main(["model=nope"]) == 2


def test_q_ensemble_matches_each_head_and_subsets():
    from tdmpc2_trl.networks.layers import mlp
    from tdmpc2_trl.networks.world_model import QEnsemble

    torch.manual_seed(0)
    heads = [mlp(10, [16, 16], 7, dropout=0.5) for _ in range(3)]
    for h in heads:  # non-trivial LayerNorm affine parameters
        for m in h.modules():
            if isinstance(m, nn.LayerNorm):
                nn.init.normal_(m.weight)
                nn.init.normal_(m.bias)
    ens = QEnsemble(heads).eval()
    z, a = torch.randn(4, 5, 8), torch.randn(4, 5, 2)
    out = ens(z, a)
    assert out.shape == (3, 4, 5, 7)
    for i, h in enumerate(heads):
        torch.testing.assert_close(out[i], h.eval()(torch.cat([z, a], -1)))
    torch.testing.assert_close(ens(z, a, heads=torch.tensor([2, 0])), out[[2, 0]])
    # train mode: dropout differs between heads and calls, eval mode is deterministic
    ens.train()
    assert not torch.equal(ens(z, a), ens(z, a))


def test_linear_adds_bias_after_the_matmul_only_when_compiled_without_grad():
    """The planner's Linear layers: the same state_dict as nn.Linear, the same output in every mode."""
    torch.manual_seed(0)
    layer, plain = Linear(6, 5), nn.Linear(6, 5)
    plain.load_state_dict(layer.state_dict())
    assert list(layer.state_dict()) == ["weight", "bias"]
    x = torch.randn(7, 6)
    seen = []

    def run(inp):
        seen.append(bias_after_matmul())
        return layer(inp)

    compiled = torch.compile(run, dynamic=False)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), plain(x))
    torch.testing.assert_close(compiled(x.requires_grad_()), plain(x))
    assert seen == [True, False] and not bias_after_matmul()  # traced once per grad mode; False outside compile
