"""Multitask world model: task embedding, padding, action masks, the official parameter counts."""
from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict

from tdmpc2_trl.config import ConfigError
from tdmpc2_trl.math import discount_from_episode_length, gaussian_log_prob, tanh_log_det
from tdmpc2_trl.modules import WorldModel
from tdmpc2_trl.multitask import TaskSet, TaskSpec, official_task_set
from tdmpc2_trl.presets import load_model_config

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
OFFICIAL_COUNTS = {("mt30", "1m"): 1_426_427, ("mt30", "5m"): 5_241_066, ("mt30", "19m"): 16_031_210,
                   ("mt80", "1m"): 1_435_067, ("mt80", "5m"): 5_389_930}


@pytest.mark.parametrize("task_set,size", sorted(OFFICIAL_COUNTS))
def test_official_multitask_parameter_counts(task_set, size):
    ts = official_task_set(task_set, size)
    assert (ts.obs_dim, ts.action_dim) == ((24, 6) if task_set == "mt30" else (39, 6))
    overrides = {"latent_dim": 512} if (task_set, size) == ("mt30", "19m") else {}
    with torch.device("meta"):
        model = WorldModel(load_model_config(size, **overrides), ts.obs_dim, ts.action_dim, task_set=ts)
    counts = model.parameter_counts()
    assert counts["total"] == OFFICIAL_COUNTS[task_set, size]
    assert counts["task_embedding"] == len(ts) * ts.task_dim


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
        outputs = [model.encode(obs, task), model.next(z, a, task), model.reward_logits(z, a, task),
                   model.q_logits(z, a, task=task)[0], model.pi(z, task)[1]]
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
