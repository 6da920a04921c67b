"""The planner acts in the env's units (any Bounded action spec); the loss maps them back to [-1, 1]."""

import pytest
import torch
from tensordict import TensorDict
from torchrl.collectors import Collector
from torchrl.data import Bounded, Unbounded
from torchrl.envs import Compose, ExplorationType, GymEnv, InitTracker, TransformedEnv, set_exploration_type

from tdmpc2_trl.config.presets import load_model_config
from tdmpc2_trl.config.schema import ConfigError
from tdmpc2_trl.learning.loss import TDMPC2Loss
from tdmpc2_trl.networks.bounds import ActionBounds
from tdmpc2_trl.networks.math import two_hot
from tdmpc2_trl.networks.world_model import WorldModel
from tdmpc2_trl.planning.planner import PlannerNoise, TDMPC2Planner

SMALL = dict(horizon=3, num_samples=64, num_pi_trajs=4, num_elites=8, iterations=4)
LOW, HIGH = torch.tensor([-2.0, 0.0, -0.5]), torch.tensor([2.0, 3.0, 1.5])  # not ±1, not symmetric


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def tiny_world_model(obs_dim: int, action_dim: int, episodic: bool = False) -> WorldModel:
    cfg = load_model_config("1m", latent_dim=16, enc_dim=16, mlp_dim=16, num_q=2)
    return WorldModel(cfg, obs_dim=obs_dim, action_dim=action_dim, episodic=episodic)


def favour_max_action(wm: WorldModel) -> None:
    """Identity dynamics and reward = mean of the ([-1, 1]) action: the best action is +1 in every dim."""
    wm.next = lambda z, a, task=None: z
    wm.reward_logits = lambda z, a, task=None: (two_hot(a.mean(-1, keepdim=True), wm.bins) + 1e-12).log()


def expected_env_action(a: torch.Tensor) -> torch.Tensor:
    return LOW + (a + 1) / 2 * (HIGH - LOW)


def test_affine_map_is_exact_and_inverts():
    bounds = ActionBounds(Bounded(LOW, HIGH, (3,)), 3)
    a = torch.rand(1000, 3) * 2 - 1
    torch.testing.assert_close(bounds.to_env(a), expected_env_action(a), rtol=0, atol=1e-6)
    torch.testing.assert_close(bounds.to_unit(bounds.to_env(a)), a, rtol=0, atol=1e-6)
    ends = torch.stack([-torch.ones(3), torch.ones(3)])
    assert torch.equal(bounds.to_env(ends), torch.stack([LOW, HIGH]))  # the ends map exactly onto the bounds


def test_unit_spec_and_no_spec_leave_actions_untouched():
    a = torch.rand(50, 2) * 2 - 1
    for spec in (None, Bounded(-1.0, 1.0, (2,))):
        bounds = ActionBounds(spec, 2)
        assert bounds.identity and bounds.to_env(a) is a and bounds.to_unit(a) is a


def test_planner_act_returns_the_affine_map_of_its_plan():
    """Same draws, two planners (with and without the spec): env action = low + (a+1)/2·(high−low) of the ±1 one."""
    wm = tiny_world_model(obs_dim=5, action_dim=3)
    unit = TDMPC2Planner(wm, discount=0.9, **SMALL)
    env_units = TDMPC2Planner(wm, Bounded(LOW, HIGH, (3,)), discount=0.9, **SMALL)
    obs = torch.randn(6, 5)
    noise = PlannerNoise(unit, 6)
    for explore in (False, True):
        a, mean = unit.act(obs, noise=noise, explore=explore)
        env_a, env_mean = env_units.act(obs, noise=noise, explore=explore)
        assert a.abs().max() <= 1
        torch.testing.assert_close(env_a, expected_env_action(a), rtol=0, atol=1e-6)
        torch.testing.assert_close(env_mean, mean)  # the warm start stays in [-1, 1]
    assert env_units.action_spec.space.high.tolist() == HIGH.tolist()  # MPCPlannerBase's spec knows the bounds


def pendulum_planner(spec) -> TDMPC2Planner:
    wm = tiny_world_model(obs_dim=3, action_dim=1)
    favour_max_action(wm)
    return TDMPC2Planner(wm, spec, discount=0.9, min_std=0.01, **SMALL)


def test_plain_gym_pendulum_planner_finds_max_torque():
    """A plain GymEnv (torque in [-2, 2]) and its own spec: the planner finds the optimum, torque +2."""
    env = GymEnv("Pendulum-v1")
    env.set_seed(0)
    planner = pendulum_planner(env.action_spec)
    obs = env.reset()["observation"].unsqueeze(0)
    action, _ = planner.act(obs, explore=False)
    assert 1.9 <= action.item() <= 2.0
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        rollout = TransformedEnv(env, planner.primer()).rollout(5, policy=planner)
    assert rollout["action"].min() >= 1.9 and rollout["action"].max() <= 2.0
    # without the spec the same planner is stuck at the world model's +1: half of the torque range unreachable
    capped = pendulum_planner(None)
    assert capped.act(obs, explore=False)[0].item() <= 1.0


def test_collector_with_plain_gym_env_explores_the_whole_range():
    env = TransformedEnv(GymEnv("Pendulum-v1"), Compose(InitTracker(), pendulum_planner(None).primer()))
    env.set_seed(0)
    planner = pendulum_planner(env.action_spec)
    collector = Collector(env, planner, frames_per_batch=20, total_frames=20)
    data = next(iter(collector))
    collector.shutdown()
    action = data["action"]
    assert action.shape == (20, 1)
    assert action.max() > 1.5 and action.min() >= -2.0 and action.max() <= 2.0
    assert data["next", "reward"].isfinite().all()  # the env accepted every action


def loss_batch(B: int = 4, H: int = 3, obs_dim: int = 5) -> TensorDict:
    return TensorDict(
        {
            "observation": torch.randn(B, H, obs_dim),
            "action": torch.rand(B, H, 3) * 2 - 1,
            ("next", "observation"): torch.randn(B, H, obs_dim),
            ("next", "reward"): torch.randn(B, H, 1),
            ("next", "terminated"): torch.zeros(B, H, 1, dtype=torch.bool),
        },
        batch_size=[B, H],
    )


def test_loss_on_env_unit_actions_with_the_spec_equals_loss_on_unit_actions():
    wm = tiny_world_model(obs_dim=5, action_dim=3, episodic=True)
    with torch.no_grad():  # non-zero reward and Q outputs, so that the action matters to every term
        for p in wm.parameters():
            p.add_(0.3 * torch.randn_like(p))
    unit_batch = loss_batch()
    env_batch = unit_batch.clone().set("action", expected_env_action(unit_batch["action"]))

    def losses(action_spec, batch: TensorDict) -> dict[str, float]:
        loss = TDMPC2Loss(wm, 0.9, action_spec=action_spec).eval()
        torch.manual_seed(1)  # same Q-head draws
        out = loss(batch)
        return {k: v for k, v in out.items() if k.startswith("loss_")}

    reference = losses(None, unit_batch)
    mapped = losses(Bounded(LOW, HIGH, (3,)), env_batch)
    for key, value in reference.items():
        torch.testing.assert_close(mapped[key], value, rtol=1e-5, atol=1e-6)
    unmapped = losses(None, env_batch)  # env units fed as if they were [-1, 1]: a different objective
    assert not torch.allclose(unmapped["loss_reward"], reference["loss_reward"])


@pytest.mark.parametrize(
    "spec, needle",
    [
        (Unbounded((1,)), "UnboundedContinuous"),
        (Bounded(-float("inf"), float("inf"), (1,)), "non-finite bounds"),
        (Bounded(0, 3, (1,), dtype=torch.int64), "continuous actions"),
        (Bounded(-2.0, 2.0, (2,)), "shape (2,)"),
    ],
)
def test_bad_action_spec_is_a_one_line_error(spec, needle: str):
    wm = tiny_world_model(obs_dim=3, action_dim=1)
    for build in (
        lambda: TDMPC2Planner(wm, spec, discount=0.9, **SMALL),
        lambda: TDMPC2Loss(wm, 0.9, action_spec=spec),
    ):
        with pytest.raises(ConfigError) as err:
            build()
        assert needle in str(err.value) and "\n" not in str(err.value)


@pytest.mark.slow
def test_compiled_planner_acts_in_env_units():
    """compile_plan=True: the whole-call graph still compiles, and its action is mapped like the eager one."""
    planner = pendulum_planner(Bounded(-2.0, 2.0, (1,)))
    eager = pendulum_planner(Bounded(-2.0, 2.0, (1,)))
    eager.world_model = planner.world_model
    planner.compile_plan = True
    obs = torch.randn(2, 3)
    noise = PlannerNoise(planner, 2)
    compiled_action, _ = planner.act(obs, noise=noise, explore=False)
    eager_action, _ = eager.act(obs, noise=noise, explore=False)
    torch.testing.assert_close(compiled_action, eager_action, rtol=1e-4, atol=1e-4)
    assert compiled_action.min() >= 1.9
