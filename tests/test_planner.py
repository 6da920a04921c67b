"""TD-MPC2's MPPI planner: known optimum, warm start, batching, termination mask, TorchRL wiring."""

import warnings

import pytest
import torch
from tensordict import TensorDict
from torchrl.collectors import Collector
from torchrl.envs import (
    ActionScaling,
    Compose,
    DoubleToFloat,
    ExplorationType,
    GymEnv,
    InitTracker,
    SerialEnv,
    StepCounter,
    TransformedEnv,
    set_exploration_type,
)

from tdmpc2_trl.config.presets import load_model_config
from tdmpc2_trl.networks.math import two_hot, two_hot_inv
from tdmpc2_trl.networks.world_model import WorldModel
from tdmpc2_trl.planning.planner import COMPILED_KEY, PARTS_KEY, PlannerNoise, TDMPC2Planner

OBS, ACT, LAT = 3, 2, 16
SMALL = dict(horizon=3, num_samples=64, num_pi_trajs=4, num_elites=8, iterations=3)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def tiny_world_model(preset: str = "8m-h10", episodic: bool = False, obs_dim: int = OBS) -> WorldModel:
    cfg = load_model_config(preset, latent_dim=LAT, enc_dim=16, mlp_dim=16, num_q=3)
    return WorldModel(cfg, obs_dim=obs_dim, action_dim=ACT, episodic=episodic)


def randomize_heads(wm: WorldModel) -> None:
    """Undo the zero init of the reward and Q output layers so that candidate values differ."""
    with torch.no_grad():
        wm.reward.module.net[-1].weight.normal_(0, 0.5)
        for name, p in wm.q_ensemble.params.flatten_keys(".").items():
            if name.endswith("weight") and p.dim() == 3 and p.shape[1] == wm.cfg.num_bins:
                p.normal_(0, 0.5)


def logits_of(value: torch.Tensor, wm: WorldModel) -> torch.Tensor:
    """Logits that two_hot_inv decodes back to ``value`` ``[..., 1]``."""
    return (two_hot(value, wm.bins) + 1e-12).log()


def test_known_optimum_deterministic():
    """Identity dynamics, reward -5·||a - a*||², zero Q: the planned action is a* (min_std lowered to 0.01)."""
    wm = tiny_world_model()
    target = torch.tensor([0.6, -0.3])
    wm.encode = lambda obs, task=None: torch.zeros(obs.shape[0], LAT)
    wm.next = lambda z, a, task=None: z
    wm.reward_logits = lambda z, a, task=None: logits_of(-5 * (a - target).pow(2).sum(-1, keepdim=True), wm)
    planner = TDMPC2Planner(wm, discount=0.99, horizon=3, iterations=8, min_std=0.01)
    td = TensorDict(observation=torch.randn(8, OBS), batch_size=[8])
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        planner(td)
    assert (td["action"] - target).abs().max() < 0.05
    assert (td["next", "planner_mean"] - target).abs().max() < 0.02


def test_warm_start_shift_and_zero_primer():
    wm = tiny_world_model()
    randomize_heads(wm)
    planner = TDMPC2Planner(wm, discount=0.9, **SMALL)
    seen = []
    original = planner.warm_start
    planner.warm_start = lambda *args: seen.append(original(*args)) or seen[-1]
    td = TensorDict(observation=torch.randn(2, OBS), planner_mean=torch.zeros(2, 3, ACT), batch_size=[2])
    planner(td)
    assert seen[-1].abs().max() == 0  # zero primer: TD-MPC2's t0
    prev = td["next", "planner_mean"]
    assert prev.abs().max() > 0
    planner(TensorDict(observation=torch.randn(2, OBS), planner_mean=prev, batch_size=[2]))
    torch.testing.assert_close(seen[-1][:, :-1], prev[:, 1:])
    assert seen[-1][:, -1].abs().max() == 0
    planner(TensorDict(observation=torch.randn(2, OBS), batch_size=[2]))  # no key: zeros
    assert seen[-1].abs().max() == 0


@pytest.mark.parametrize("explore", [False, True])
def test_batch_matches_separate_calls(explore):
    """With the same recorded draws, one call over B envs equals B single-env calls (Q heads are shared per call)."""
    wm = tiny_world_model(episodic=True)
    randomize_heads(wm)
    planner = TDMPC2Planner(wm, discount=0.9, **SMALL)
    B = 3
    obs, prev = torch.randn(B, OBS), torch.rand(B, 3, ACT) * 2 - 1
    noise = PlannerNoise(planner, B, generator=torch.Generator().manual_seed(1))
    action, mean = planner.act(obs, prev, noise, explore=explore)
    for b in range(B):
        a_b, m_b = planner.act(obs[b : b + 1], prev[b : b + 1], noise.env(b), explore=explore)
        torch.testing.assert_close(a_b, action[b : b + 1], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(m_b, mean[b : b + 1], atol=1e-5, rtol=1e-5)
    again = planner.act(obs, prev, noise, explore=explore)[0]
    torch.testing.assert_close(again, action)  # recorded noise makes a call repeatable


def reference_plan(
    planner: TDMPC2Planner, obs: torch.Tensor, prev_mean: torch.Tensor, noise: PlannerNoise, explore: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """TD-MPC2's ``_plan`` for ONE env, transcribed step by step (actions ``[H, N, A]``), fed ``noise``'s draws."""
    wm, d = planner.world_model, noise.draws
    H, N, P, K, A = planner.horizon, planner.num_samples, planner.num_pi_trajs, planner.num_elites, planner.action_dim

    def pi(z, eps):
        mu, log_std = wm.policy.module.mean_and_log_std(z)
        return torch.tanh(mu + eps * log_std.exp())

    def estimate_value(z, actions, i):
        G, discount, termination = 0, 1, torch.zeros(N, 1)
        for t in range(H):
            reward = two_hot_inv(wm.reward_logits(z, actions[t]), wm.bins)
            z_prev, z = z, wm.next(z, actions[t])
            G = G + discount * (1 - termination) * reward
            discount = discount * planner.discount
            if wm.episodic:
                logit = wm.termination_logit(z_prev if wm.termination_uses_action else z, actions[t])
                termination = torch.clip(termination + (torch.sigmoid(logit) > 0.5).float(), max=1.0)
        q = two_hot_inv(wm.q_logits(z, pi(z, d["terminal"][0, i]), heads=noise.heads(i)), wm.bins).mean(0)
        return G + discount * (1 - termination) * q

    z = wm.encode(obs)
    pi_actions, _z = torch.empty(H, P, A), z.repeat(P, 1)
    for t in range(H - 1):
        pi_actions[t] = pi(_z, d["prior"][0, t])
        _z = wm.next(_z, pi_actions[t])
    pi_actions[-1] = pi(_z, d["prior"][0, H - 1])
    z = z.repeat(N, 1)
    mean, std = torch.zeros(H, A), torch.full((H, A), planner.max_std)
    mean[:-1] = prev_mean[1:]
    actions = torch.empty(H, N, A)
    actions[:, :P] = pi_actions
    for i in range(planner.iterations):
        r = d["candidates"][0, i].transpose(0, 1)  # [H, N-P, A]
        actions[:, P:] = (mean.unsqueeze(1) + std.unsqueeze(1) * r).clamp(-1, 1)
        value = estimate_value(z, actions, i).nan_to_num(0)
        elite_idxs = torch.topk(value.squeeze(1), K, dim=0).indices
        elite_value, elite_actions = value[elite_idxs], actions[:, elite_idxs]
        score = torch.exp(planner.temperature * (elite_value - elite_value.max(0).values))
        score = score / score.sum(0)
        mean = (score.unsqueeze(0) * elite_actions).sum(dim=1) / (score.sum(0) + 1e-9)
        std = (
            (score.unsqueeze(0) * (elite_actions - mean.unsqueeze(1)) ** 2).sum(dim=1) / (score.sum(0) + 1e-9)
        ).sqrt()
        std = std.clamp(planner.min_std, planner.max_std)
    a = elite_actions[0, (score.squeeze(1).log() + d["gumbel"][0]).argmax(0)]
    if explore:
        a = (a + std[0] * d["explore"][0]).clamp(-1, 1)
    return a.clamp(-1, 1), mean


@pytest.mark.parametrize("preset,explore", [("8m-h10", True), ("1m", False)])
def test_matches_transcribed_official_plan(preset, explore):
    """Batched planner == a line-by-line transcription of TD-MPC2's per-env ``_plan`` under the same draws."""
    wm = tiny_world_model(preset, episodic=True)
    randomize_heads(wm)
    with torch.no_grad():  # make about half of the imagined transitions terminate
        last = (wm.termination.module.net if preset == "8m-h10" else wm.termination.module)[-1]
        last.weight.normal_(0, 3)
        z, a = wm.encode(torch.randn(256, OBS)), torch.rand(256, ACT) * 2 - 1
        last.bias.sub_(wm.termination_logit(z if wm.termination_uses_action else wm.next(z, a), a).median())
    planner = TDMPC2Planner(wm, discount=0.9, **SMALL)
    B = 3
    obs, prev = torch.randn(B, OBS), torch.rand(B, 3, ACT) * 2 - 1
    noise = PlannerNoise(planner, B, generator=torch.Generator().manual_seed(2))
    action, mean = planner.act(obs, prev, noise, explore=explore)
    wm.eval()
    with torch.no_grad():
        for b in range(B):
            a_ref, m_ref = reference_plan(planner, obs[b : b + 1], prev[b], noise.env(b), explore)
            torch.testing.assert_close(action[b], a_ref.squeeze(0), atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(mean[b], m_ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("uses_action", [True, False])
def test_termination_mask_stops_accumulation(uses_action):
    """Reward 1 per step, Q = 5; termination on the transition from t=1: value = 1 + γ, later terms ignored."""
    gamma, H = 0.9, 4
    wm = tiny_world_model(episodic=True)
    wm.termination_uses_action = uses_action  # seed head sees z_t, the official one z_{t+1}
    step = torch.zeros(LAT)
    step[0] = 1.0
    wm.next = lambda z, a, task=None: z + step  # latent 0 counts the steps taken
    wm.reward_logits = lambda z, a, task=None: logits_of(torch.ones(*z.shape[:-1], 1), wm)
    threshold = 1 if uses_action else 2
    wm.termination_logit = lambda z, a, task=None: (z[..., :1] >= threshold).float() * 20 - 10
    wm.q_logits = lambda z, a, heads=None, params=None, task=None: logits_of(torch.full((2, *z.shape[:-1], 1), 5.0), wm)
    planner = TDMPC2Planner(wm, discount=gamma, horizon=H, num_samples=8, num_pi_trajs=2, num_elites=4)
    z, actions = torch.zeros(2, LAT), torch.zeros(2, 5, H, ACT)
    value = planner.estimate_value(z, actions)
    torch.testing.assert_close(value, torch.full((2, 5), 1 + gamma), atol=1e-4, rtol=1e-4)
    wm.episodic = False
    value = planner.estimate_value(z, actions)
    expected = sum(gamma**t for t in range(H)) + gamma**H * 5
    torch.testing.assert_close(value, torch.full((2, 5), expected), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "preset,mpc,pi_trajs", [("8m-h10", True, 4), ("1m", True, 4), ("8m-h10", True, 0), ("8m-h10", False, 4)]
)
def test_actions_in_bounds_and_shapes(preset, mpc, pi_trajs):
    wm = tiny_world_model(preset, episodic=True)
    randomize_heads(wm)
    with torch.no_grad():
        wm.policy.module.net[0].weight.mul_(100)  # a wide policy prior reaches the bounds
    planner = TDMPC2Planner(wm, discount=0.9, mpc=mpc, **{**SMALL, "num_pi_trajs": pi_trajs})
    td = TensorDict(observation=torch.randn(2, 5, OBS) * 10, batch_size=[2, 5])
    for kind in (ExplorationType.RANDOM, ExplorationType.DETERMINISTIC):
        with set_exploration_type(kind):
            planner(td)
        assert td["action"].shape == (2, 5, ACT) and td["next", "planner_mean"].shape == (2, 5, 3, ACT)
        assert td["action"].abs().max() <= 1 and td["next", "planner_mean"].abs().max() <= 1
    assert wm.training  # the planner restores the caller's mode


def test_policy_only_deterministic_is_the_mean_action():
    wm = tiny_world_model()
    planner = TDMPC2Planner(wm, discount=0.9, mpc=False, **SMALL)
    obs = torch.randn(3, OBS)
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        action = planner(TensorDict(observation=obs, batch_size=[3]))["action"]
    with torch.no_grad():
        torch.testing.assert_close(action, wm.pi(wm.encode(obs))[1])


def test_collector_over_serial_env_carries_the_plan_mean():
    wm = tiny_world_model(obs_dim=3)
    randomize_heads(wm)
    planner = TDMPC2Planner(wm, discount=0.9, **SMALL)
    starts = []
    original = planner.warm_start
    planner.warm_start = lambda *args: starts.append(original(*args)) or starts[-1]

    def make_env():
        return TransformedEnv(GymEnv("Pendulum-v1"), ActionScaling())

    env = TransformedEnv(
        SerialEnv(2, make_env), Compose(DoubleToFloat(), StepCounter(max_steps=4), InitTracker(), planner.primer())
    )
    env.set_seed(0)
    T = 10
    collector = Collector(env, planner, frames_per_batch=2 * T, total_frames=2 * T)
    data = next(iter(collector))
    collector.shutdown()
    assert data.shape == (2, T)
    assert data["action"].abs().max() <= 1
    mean, next_mean, is_init = data["planner_mean"], data["next", "planner_mean"], data["is_init"].squeeze(-1)
    assert mean.shape == next_mean.shape == (2, T, 3, ACT)
    assert is_init.sum() == 2 * 3  # episodes of 4 steps: resets at t = 0, 4, 8
    assert mean[is_init].abs().max() == 0  # zeroed on reset
    carried = ~is_init[:, 1:]
    torch.testing.assert_close(mean[:, 1:][carried], next_mean[:, :-1][carried])
    assert next_mean.abs().max() > 0
    warm = torch.stack(starts[-T:], 1)  # [2, T, H, A]: what the planner started from at each step
    torch.testing.assert_close(warm[:, :, :-1], mean[:, :, 1:])  # it read the carried mean (zeros after a reset)


def test_planner_pickles_for_worker_processes():
    """Multi-process collectors pickle the policy; a compiled plan (compile_plan=True) is left behind."""
    import pickle

    wm = tiny_world_model()
    planner = TDMPC2Planner(wm, discount=0.9, compile_plan=True, **SMALL)
    planner.__dict__[COMPILED_KEY] = lambda *args: None  # stands in for torch.compile's (unpicklable) wrapper
    planner.__dict__[PARTS_KEY] = {"_advance": lambda *args: None}  # compile_scope="step"'s compiled pieces
    clone = pickle.loads(pickle.dumps(planner))
    assert COMPILED_KEY not in clone.__dict__ and COMPILED_KEY in planner.__dict__
    assert PARTS_KEY not in clone.__dict__
    assert set(clone.state_dict()) == {f"world_model.{k}" for k in wm.state_dict()}


def broken(*args):
    """Stands in for a compiled graph whose compile fails."""
    raise RuntimeError("no C++ compiler\ndetails")


def _plan_inputs(planner: TDMPC2Planner, batch: int, explore: bool = True) -> tuple:
    """``_plan``'s arguments: observations, a previous plan and one call's recorded draws."""
    noise = PlannerNoise(planner, batch, generator=torch.Generator().manual_seed(1))
    prev = torch.rand(batch, planner.horizon, ACT) * 2 - 1
    return (torch.randn(batch, OBS), prev, *noise.tensors(), explore)


@torch.no_grad()
def test_compiled_plan_equals_eager():
    """compile_plan=True: the whole call compiled (encoder, prior, MPPI iterations, elites, action) plans as eager."""
    wm = tiny_world_model("1m", episodic=True)
    randomize_heads(wm)
    wm.eval()
    planner = TDMPC2Planner(wm, discount=0.9, compile_plan=True, compile_scope="call", **SMALL)
    args = _plan_inputs(planner, batch=2)
    compiled = planner._plan_fn()
    (action, mean), (action_eager, mean_eager) = compiled(*args), planner._plan(*args)
    torch.testing.assert_close(action, action_eager, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(mean, mean_eager, rtol=1e-4, atol=1e-4)
    assert planner._plan_fn() is compiled


@torch.no_grad()
def test_a_plan_compiled_per_iteration_equals_eager_and_falls_back_per_graph():
    """compile_scope="iteration": the set-up and one MPPI iteration, two graphs, plan as eager; a graph that fails to
    compile runs eagerly with one warning naming it, the other stays compiled."""
    wm = tiny_world_model("1m", episodic=True)
    randomize_heads(wm)
    wm.eval()
    planner = TDMPC2Planner(wm, discount=0.9, compile_plan=True, compile_scope="iteration", **SMALL)
    args = _plan_inputs(planner, batch=2)
    fn = planner._plan_fn()
    (action, mean), (action_eager, mean_eager) = fn(*args), planner._plan(*args)
    torch.testing.assert_close(action, action_eager, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(mean, mean_eager, rtol=1e-4, atol=1e-4)
    assert fn.iterate.seen_shapes and fn.start.compiled is not planner._start  # compiled, not fallen back

    fn.iterate.compiled, fn.iterate.seen_shapes = broken, set()
    with pytest.warns(RuntimeWarning, match="torch.compile of the planner \\(one MPPI iteration\\) failed"):
        again = fn(*args)
    torch.testing.assert_close(again, planner._plan(*args), rtol=1e-4, atol=1e-4)
    assert fn.iterate.compiled == planner._iterate and fn.start.compiled is not planner._start


@torch.no_grad()
def test_a_plan_compiled_per_step_equals_eager_and_falls_back_per_piece():
    """compile_scope="step": each imagined step, the terminal value and the refit are graphs of their own, called
    from the Python loops; the plan is eager's, and a piece that fails to compile runs eagerly with one warning
    naming it while the others stay compiled."""
    wm = tiny_world_model("1m", episodic=True)
    randomize_heads(wm)
    wm.eval()
    planner = TDMPC2Planner(wm, discount=0.9, compile_plan=True, compile_scope="step", **SMALL)
    args = _plan_inputs(planner, batch=2)
    fn = planner._plan_fn()
    (action, mean) = fn(*args)
    parts = planner.__dict__[PARTS_KEY]
    assert set(parts) == {"_advance", "_advance_pi", "_terminal_value", "_refit"}
    assert all(part.seen_shapes and part.compiled is not part.eager for part in parts.values())
    planner.compile_plan = False
    action_eager, mean_eager = planner._plan_fn()(*args)
    assert PARTS_KEY not in planner.__dict__  # compile_plan=False: eager pieces again
    torch.testing.assert_close(action, action_eager, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(mean, mean_eager, rtol=1e-4, atol=1e-4)

    planner.compile_plan = True
    planner._plan_fn()(*args)
    parts = planner.__dict__[PARTS_KEY]

    parts["_refit"].compiled, parts["_refit"].seen_shapes = broken, set()
    with pytest.warns(RuntimeWarning, match="torch.compile of the planner \\(the elites' refit\\) failed"):
        again = planner._plan_fn()(*args)
    torch.testing.assert_close(again, (action_eager, mean_eager), rtol=1e-4, atol=1e-4)
    assert parts["_refit"].compiled == planner._refit and parts["_advance"].compiled is not planner._advance


def test_the_automatic_compile_scope_is_one_iteration_at_short_horizons_and_a_step_beyond():
    wm = tiny_world_model()
    small = {k: v for k, v in SMALL.items() if k != "horizon"}
    scope = {h: TDMPC2Planner(wm, discount=0.9, horizon=h, **small).compile_scope for h in (1, 3, 5, 6, 10)}
    assert scope == {1: "iteration", 3: "iteration", 5: "iteration", 6: "step", 10: "step"}
    assert TDMPC2Planner(wm, discount=0.9, compile_scope="call", **SMALL).compile_scope == "call"
    with pytest.raises(ValueError, match="compile_scope must be one of auto, step, iteration, call"):
        TDMPC2Planner(wm, discount=0.9, compile_scope="layer", **SMALL)


@torch.no_grad()
def test_compile_failure_falls_back_to_eager_with_one_warning():
    wm = tiny_world_model()
    randomize_heads(wm)
    wm.eval()  # no Q dropout: eager calls are repeatable
    planner = TDMPC2Planner(wm, discount=0.9, compile_plan=True, compile_scope="call", **SMALL)
    fn = planner._plan_fn()

    fn.compiled = broken
    args = _plan_inputs(planner, batch=2)
    with pytest.warns(RuntimeWarning, match="torch.compile of the planner failed .*no C\\+\\+ compiler"):
        out = fn(*args)
    torch.testing.assert_close(out, planner._plan(*args))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # eager from now on: no second warning
        torch.testing.assert_close(fn(*args), out)
