"""Multitask world model: task embedding, padding, action masks, the official parameter counts."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict

from tdmpc2_trl.config.presets import load_model_config
from tdmpc2_trl.config.schema import ConfigError
from tdmpc2_trl.networks.math import discount_from_episode_length, gaussian_log_prob, tanh_log_det
from tdmpc2_trl.networks.tasks import (
    TaskSet,
    TaskSpec,
    official_model_overrides,
    official_task_names,
    official_task_set,
)
from tdmpc2_trl.networks.world_model import WorldModel

# Three tasks of different sizes: pendulum-like (3 obs, 1 action), reacher-like (6, 2), a 5-obs 3-action task.
SPECS = (TaskSpec("a", 3, 1, 200), TaskSpec("b", 6, 2, 500), TaskSpec("c", 5, 3, 1000))


@pytest.fixture(scope="module")
def model() -> WorldModel:
    torch.manual_seed(0)
    task_set = TaskSet(SPECS, task_dim=16)
    return WorldModel(load_model_config("1m"), task_set.obs_dim, task_set.action_dim, task_set=task_set)


def test_task_set_padding_masks_discounts():
    ts = TaskSet(SPECS, task_dim=16)
    assert (ts.obs_dim, ts.action_dim) == (6, 3)
    assert ts.action_masks().tolist() == [[1, 0, 0], [1, 1, 0], [1, 1, 1]]
    assert torch.allclose(ts.discounts(), torch.tensor([discount_from_episode_length(n) for n in (200, 500, 1000)]))
    assert ts.discounts().tolist() == pytest.approx([0.975, 0.99, 0.995])
    padded = ts.pad_observation(torch.tensor([[1.0, 2.0, 3.0]]))
    assert padded.tolist() == [[1.0, 2.0, 3.0, 0.0, 0.0, 0.0]]
    assert ts.index("c") == 2
    with pytest.raises(ConfigError, match="not in the task set"):
        ts.index("d")
    with pytest.raises(ConfigError, match="twice"):
        TaskSet((SPECS[0], SPECS[0]))


# Counted by instantiating the official TD-MPC2 WorldModel (nicklashansen/tdmpc2 e9f5932, common/world_model.py)
# with multitask=True, the task set's tasks, padded obs 24 (mt30) / 39 (mt80), action 6, and the official task_dim
# (96; 64 for mt30 at 5m/19m/48m) and the mt30-19m checkpoint's latent_dim 512 (common/parser.py).
OFFICIAL_COUNTS = {
    ("mt30", "1m"): 1_426_427,
    ("mt30", "5m"): 5_241_066,
    ("mt30", "19m"): 16_031_210,
    ("mt80", "1m"): 1_435_067,
    ("mt80", "5m"): 5_389_930,
}


@pytest.mark.parametrize("task_set,size", sorted(OFFICIAL_COUNTS))
def test_official_multitask_parameter_counts(task_set, size):
    ts = official_task_set(task_set, size)
    assert (ts.obs_dim, ts.action_dim) == ((24, 6) if task_set == "mt30" else (39, 6))
    overrides = official_model_overrides(task_set, size)
    with torch.device("meta"):
        model = WorldModel(load_model_config(size, **overrides), ts.obs_dim, ts.action_dim, task_set=ts)
    counts = model.parameter_counts()
    assert counts["total"] == OFFICIAL_COUNTS[task_set, size]
    assert counts["task_embedding"] == len(ts) * ts.task_dim


def test_official_task_lists():
    mt30, mt80 = official_task_names("mt30"), official_task_names("mt80")
    assert len(mt30) == 30 and len(mt80) == 80 and mt80[:30] == mt30 and len(set(mt80)) == 80
    assert mt30[:3] == ["walker-stand", "walker-walk", "walker-run"] and mt80[30] == "mw-assembly"
    with pytest.raises(ConfigError, match="unknown task set"):
        official_task_names("mt10")


def test_masked_action_dims_get_zero_action_zero_gradient_no_entropy(model):
    torch.manual_seed(1)
    task = torch.tensor([0, 1, 2, 0])
    z = torch.randn(4, model.cfg.latent_dim)
    action, loc, log_std, log_prob, scaled_entropy = model.pi(z, task)
    mask = model.tasks.mask(task)
    assert torch.equal(action * (1 - mask), torch.zeros_like(action))
    assert torch.equal(loc * (1 - mask), torch.zeros_like(loc))
    assert torch.equal(log_std * (1 - mask), torch.zeros_like(log_std))

    # Gradients: with tasks 0 and 1 only, dim 2 is switched off everywhere: the policy head's rows producing its
    # mean and log-std get none from any output; dim 1 (used by task 1) does.
    outputs = model.pi(z, torch.tensor([0, 1, 1, 0]))
    sum(out.sum() for out in (outputs[0], outputs[3], outputs[4])).backward()
    head = model.policy.module.net.head  # the official joint head: rows [:A] mean, [A:] log-std
    A = model.action_dim
    grad = head.weight.grad
    assert torch.equal(grad[2], torch.zeros_like(grad[2])) and torch.equal(grad[A + 2], torch.zeros_like(grad[2]))
    assert grad[1].abs().sum() > 0 and grad[A + 1].abs().sum() > 0
    model.zero_grad()

    # Entropy and log-prob by hand from each task's own dims only, scaled by its own action count.
    torch.manual_seed(1)
    torch.randn(4, model.cfg.latent_dim)  # z
    eps = torch.randn(4, A)  # the same draw as inside pi
    for row, t in enumerate(task.tolist()):
        n = SPECS[t].action_dim
        e, ls = eps[row, :n], log_std[row, :n].detach()
        pre_tanh = loc[row, :n].detach().atanh() + e * ls.exp()
        gauss = gaussian_log_prob(e, ls)
        assert torch.allclose(scaled_entropy[row].detach(), -n * gauss, atol=1e-5)
        assert torch.allclose(log_prob[row].detach(), gauss - tanh_log_det(pre_tanh), atol=1e-4)


def test_pi_sample_masks_the_noise(model):
    task = torch.tensor([0, 1])
    z = torch.randn(2, model.cfg.latent_dim)
    a = model.pi_sample(z, torch.randn(2, model.action_dim) * 10, task)
    assert a[0, 1:].abs().max() == 0 and a[1, 2] == 0
    assert a[1, :2].abs().min() > 0


def test_task_ids_condition_every_network():
    torch.manual_seed(2)
    task_set = TaskSet(SPECS, task_dim=16)
    model = WorldModel(load_model_config("1m"), task_set.obs_dim, task_set.action_dim, task_set=task_set)
    with torch.no_grad():  # the reward and Q output layers start at zero: give them weights
        for p in model.parameters():
            if not p.any():
                p.normal_(std=0.1)
    z = torch.randn(1, model.cfg.latent_dim).expand(3, -1)
    a = torch.zeros(3, model.action_dim)
    obs = torch.randn(1, model.obs_dim).expand(3, -1)
    task = torch.arange(3)
    with torch.no_grad():
        model.tasks.embedding.weight.normal_()  # well-separated embeddings (max_norm=1 renormalises on lookup)
        outputs = [
            model.encode(obs, task),
            model.next(z, a, task),
            model.reward_logits(z, a, task),
            model.q_logits(z, a, task=task)[0],
            model.pi(z, task)[1],
        ]
    for out in outputs:
        assert not torch.allclose(out[0], out[1]) and not torch.allclose(out[1], out[2])
    assert model.tasks(task).norm(dim=-1).max() <= 1 + 1e-5


def test_tensordict_modules_read_the_task_key(model):
    td = TensorDict({"observation": torch.randn(5, model.obs_dim), "task": torch.tensor([0, 1, 2, 1, 0])}, [5])
    model.encoder(td)
    td["action"] = torch.zeros(5, model.action_dim)
    model.dynamics(td)
    model.policy(td)
    assert torch.allclose(td["latent"], model.encode(td["observation"], td["task"]))
    assert td["next_latent"].shape == (5, model.cfg.latent_dim)
    assert td["action"][0, 1:].abs().max() == 0


def test_task_ids_required_exactly_for_multitask(model):
    single = WorldModel(load_model_config("1m"), 6, 3)
    with pytest.raises(ValueError, match="single-task"):
        single.encode(torch.zeros(1, 6), torch.zeros(1, dtype=torch.long))
    with pytest.raises(ValueError, match="needs task ids"):
        model.encode(torch.zeros(1, 6))
    with pytest.raises(ValueError, match="padded"):
        WorldModel(load_model_config("1m"), 5, 3, task_set=TaskSet(SPECS))


# ---------------------------------------------------------------- loss and planner

from tdmpc2_trl.learning.loss import TDMPC2Loss  # noqa: E402
from tdmpc2_trl.learning.update import TDMPC2Update, make_optimizers  # noqa: E402
from tdmpc2_trl.planning.planner import PlannerNoise, TDMPC2Planner  # noqa: E402

H = 3
GAMMAS = [0.975, 0.99, 0.995]  # TD-MPC2's rule for episodes of 200, 500 and 1000 decisions


def small_model(seed: int = 0) -> WorldModel:
    torch.manual_seed(seed)
    task_set = TaskSet(SPECS, task_dim=8)
    cfg = load_model_config("1m", latent_dim=16, enc_dim=16, mlp_dim=16)
    model = WorldModel(cfg, task_set.obs_dim, task_set.action_dim, task_set=task_set)
    with torch.no_grad():  # non-zero reward and Q outputs, so values differ between candidates and tasks
        for p in model.parameters():
            if not p.any():
                p.normal_(std=0.3)
    return model


def multitask_batch(task: torch.Tensor) -> TensorDict:
    B, ts = task.shape[0], TaskSet(SPECS)
    mask = ts.action_masks()[task].unsqueeze(1)
    td = TensorDict(
        {
            "observation": torch.randn(B, H, ts.obs_dim),
            "action": (torch.rand(B, H, ts.action_dim) * 2 - 1) * mask,
            "task": task.unsqueeze(1).expand(B, H),
            "next": {
                "observation": torch.randn(B, H, ts.obs_dim),
                "reward": torch.randn(B, H, 1),
                "terminated": torch.zeros(B, H, 1, dtype=torch.bool),
            },
        },
        [B, H],
    )
    td["next", "terminated"][0, 1] = True
    return td


def test_td_target_uses_each_task_discount():
    model = small_model().eval()
    loss = TDMPC2Loss(model, discount=0.5)  # a multitask model takes each task's own discount instead
    task = torch.tensor([0, 1, 2, 2])
    batch = multitask_batch(task)
    heads = torch.tensor([0, 1])
    next_z = model.encode(batch["next", "observation"], batch["task"])
    torch.manual_seed(3)
    target = loss._td_target_from_latents(
        next_z, batch["next", "reward"], batch["next", "terminated"], heads, batch["task"]
    )
    torch.manual_seed(3)
    with torch.no_grad():
        a = model.pi(next_z, batch["task"])[0]
        q = model.q_value(next_z, a, "min", params=loss.target_q_params, heads=heads, task=batch["task"])
    gamma = torch.tensor(GAMMAS)[task].view(-1, 1, 1)
    expected = batch["next", "reward"] + gamma * (~batch["next", "terminated"]).float() * q
    assert torch.allclose(target, expected, atol=1e-6)
    assert torch.equal(target[0, 1], batch["next", "reward"][0, 1])  # terminated: no bootstrap


def test_multitask_update_trains_the_embedding_and_masks_the_policy():
    model = small_model()
    loss = TDMPC2Loss(model, discount=0.99)
    wm_optim, pi_optim = make_optimizers(loss)
    update = TDMPC2Update(loss, wm_optim, pi_optim)
    batch = multitask_batch(torch.tensor([0, 1, 0, 1]))  # action dim 2 unused by both tasks
    before = model.tasks.embedding.weight.detach().clone()
    metrics = update(batch)
    assert torch.isfinite(metrics["total_loss"]) and torch.isfinite(metrics["loss_policy"])
    assert not torch.equal(model.tasks.embedding.weight[:2], before[:2])  # used rows move
    assert torch.equal(model.tasks.embedding.weight[2], before[2])  # task 2 is not in the batch
    out = loss(batch)
    pi_loss = out["loss_policy"]
    model.zero_grad()
    pi_loss.backward()
    head = model.policy.module.net.head
    assert torch.equal(head.weight.grad[2], torch.zeros_like(head.weight.grad[2]))
    assert torch.equal(head.weight.grad[model.action_dim + 2], torch.zeros_like(head.weight.grad[2]))


SMALL = dict(horizon=H, num_samples=32, num_pi_trajs=4, num_elites=6, iterations=3)


def test_batched_multitask_planning_equals_per_env_planning():
    model = small_model()
    planner = TDMPC2Planner(model, discount=0.99, **SMALL)
    task = torch.tensor([2, 0, 1, 0])
    obs = TaskSet(SPECS).pad_observation(torch.randn(4, 3))
    noise = PlannerNoise(planner, 4)
    prev = torch.randn(4, H, 3).clamp(-1, 1) * model.tasks.mask(task).unsqueeze(1)
    action, mean = planner.act(obs, prev, noise=noise, explore=True, task=task)
    for b in range(4):
        a_b, m_b = planner.act(obs[b : b + 1], prev[b : b + 1], noise=noise.env(b), explore=True, task=task[b : b + 1])
        assert torch.allclose(action[b], a_b[0], atol=1e-5) and torch.allclose(mean[b], m_b[0], atol=1e-5)
    unused = 1 - model.tasks.mask(task)
    assert torch.equal(action * unused, torch.zeros_like(action))  # exactly zero, exploration noise included
    assert torch.equal(mean * unused.unsqueeze(1), torch.zeros_like(mean))
    assert (action * (1 - unused)).abs().sum() > 0


def test_planner_discounts_each_task_with_its_own_gamma():
    """Reward 1 at every imagined step and Q = 0: each candidate's value is 1 + γ + γ² with its task's γ."""
    model = small_model()
    planner = TDMPC2Planner(model, discount=0.5, **SMALL)
    planner._step = lambda z, a, task=None: (z, torch.ones(z.shape[0], 1), None)
    model.q_logits = lambda z, a, heads=None, params=None, task=None: torch.zeros(2, z.shape[0], model.cfg.num_bins)
    task = torch.tensor([0, 1, 2])
    z = torch.zeros(3, model.cfg.latent_dim)
    value = planner.estimate_value(z, torch.zeros(3, 5, H, 3), task=task)
    expected = torch.tensor([sum(g**t for t in range(H)) for g in GAMMAS]).view(3, 1).expand(3, 5)
    assert torch.allclose(value, expected, atol=1e-5)


def test_planner_reads_the_task_key():
    model = small_model()
    planner = TDMPC2Planner(model, discount=0.99, **SMALL)
    assert "task" in planner.in_keys
    td = TensorDict({"observation": torch.randn(2, 6), "task": torch.tensor([0, 1])}, [2])
    planner(td)
    assert td["action"][0, 1:].abs().max() == 0 and td["action"][1, 2] == 0


def test_loss_ignores_what_a_batch_holds_in_unused_action_dims():
    model = small_model().eval()
    loss = TDMPC2Loss(model, discount=0.99)
    batch = multitask_batch(torch.tensor([0, 1, 2]))
    noisy = batch.clone()
    noisy["action"] = batch["action"] + (1 - model.tasks.mask(batch["task"])) * 0.7  # e.g. random seed actions
    torch.manual_seed(5)
    clean_out = loss.world_model_loss(batch)
    torch.manual_seed(5)
    noisy_out = loss.world_model_loss(noisy)
    for key in ("loss_consistency", "loss_reward", "loss_value"):
        assert torch.equal(clean_out[key], noisy_out[key])


# ---------------------------------------------------------------- fine-tuning from a multitask checkpoint

from tdmpc2_trl.run.finetune import finetune_task_set, load_pretrained  # noqa: E402


def test_finetune_keeps_known_task_rows_and_networks_and_starts_new_tasks_fresh():
    source = small_model(seed=1)
    with torch.no_grad():
        source.tasks.embedding.weight.normal_()
    pretrained = source.tasks.task_set
    new = finetune_task_set([TaskSpec("b", 6, 2, 500), TaskSpec("new", 4, 1, 100)], pretrained)
    assert (new.obs_dim, new.action_dim, new.task_dim) == (6, 3, 8)  # the checkpoint's sizes
    torch.manual_seed(7)
    target = WorldModel(source.cfg, new.obs_dim, new.action_dim, task_set=new)
    fresh_row = target.tasks.embedding.weight[1].clone()
    fresh = load_pretrained(target, source.state_dict(), pretrained)
    assert fresh == ["new"]
    assert torch.equal(target.tasks.embedding.weight[0], source.tasks.embedding.weight[1])  # "b" kept its row
    assert torch.equal(target.tasks.embedding.weight[1], fresh_row)
    assert torch.equal(target.tasks.masks, torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]]))
    assert torch.allclose(target.tasks.discounts, torch.tensor([0.99, 0.95]))
    z, a = torch.randn(2, 16), torch.zeros(2, 3)
    # the same task through both models: the same output
    assert torch.allclose(target.next(z, a, torch.tensor([0, 0])), source.next(z, a, torch.tensor([1, 1])))


def test_finetune_refuses_a_task_larger_than_the_checkpoint():
    pretrained = TaskSet(SPECS)
    with pytest.raises(ConfigError, match="exceed the checkpoint"):
        finetune_task_set([TaskSpec("huge", 40, 1, 100)], pretrained)


def test_summary_prints_the_official_multitask_count(capsys):
    from tdmpc2_trl.run.summary import main

    assert main(["model=1m", "tasks=mt80"]) == 0
    out = capsys.readouterr().out
    assert f"TOTAL TRAINABLE PARAMETERS: {OFFICIAL_COUNTS['mt80', '1m']:,}" in out and "80 tasks" in out
    assert main(["model=1m", "tasks=mt10"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
