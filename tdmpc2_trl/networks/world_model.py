"""The TD-MPC2 networks (each a TensorDict module) and the ``WorldModel`` container built from a config.

Keys (all networks read and write a TensorDict with these names):
  encoder:     observation                 -> latent
  dynamics:    (latent, action)            -> next_latent
  reward:      (latent, action)            -> reward_logits                 [..., num_bins]
  termination: (latent, action) or latent  -> termination_logit             [..., 1]
  qvalue:      (latent, action)            -> state_action_value_logits     [..., num_q, num_bins]
  policy:      latent                      -> action, loc, log_std, action_log_prob, scaled_entropy

A multitask model (``task_set=``, see ``multitask.py``) also reads ``"task"`` (task ids) in every network, and every
tensor method takes ``task=`` ids.

The planner and the loss call the plain tensor methods of ``WorldModel`` (``encode``, ``next``, ``pi``, …) on their
hot paths so no TensorDict bookkeeping runs inside the MPPI or the unrolled loss loops.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModule
from torch import nn
from torch.nn import functional as F

from tdmpc2_trl.config.schema import ModelConfig
from tdmpc2_trl.networks.dropout import dropout
from tdmpc2_trl.networks.layers import (
    Linear,
    bias_after_matmul,
    count_parameters,
    last_linear,
    mlp,
    normed_blocks,
    relu_mlp,
    weight_init,
    zero_,
)
from tdmpc2_trl.networks.math import (
    Bins,
    gaussian_log_prob,
    gaussian_log_prob_terms,
    squashed_log_std,
    tanh_log_det,
    tanh_log_det_terms,
    two_hot_inv,
)
from tdmpc2_trl.networks.pixels import PixelEncoder
from tdmpc2_trl.networks.tasks import TaskEmbedding, TaskSet


class StateActionNet(nn.Module):
    """An MLP applied to ``cat(latent, action)``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([z, a], dim=-1))


class QEnsemble(nn.Module):
    """``num_q`` Q heads with stacked parameters (a ``TensorDictParams`` of leading dim ``num_q``).

    ``forward(z, a)`` returns logits ``[num_q, ..., num_bins]`` (heads first). ``heads`` evaluates a subset only;
    ``params`` swaps in other stacked parameters (the loss's target copy) without touching the online ones.

    The heads run as batched matmuls over the stacked weights, layer by layer, rather than ``vmap`` of one head:
    under vmap LayerNorm, Mish and dropout decompose into many small elementwise ops (and ``to_module`` inside vmap
    does not compile); here each layer is one ``matmul`` and ATen's native LayerNorm/Mish kernels. Dropout draws its
    mask from ``dropout.dropout_mask`` (exactly Bernoulli(p), ~1/100 of ``F.dropout``'s random draws at p = 0.01).
    """

    def __init__(self, heads: list[nn.Module]) -> None:
        super().__init__()
        self.num_q = len(heads)
        self.params = TensorDict.from_modules(*heads, as_module=True)
        # A parameter-less copy of one head: its layer sequence drives the batched forward.
        self.__dict__["_skeleton"] = copy.deepcopy(heads[0]).to("meta")
        self._layers = [(str(i), layer) for i, layer in enumerate(self._skeleton)]

    def forward(
        self,
        z: torch.Tensor,
        a: torch.Tensor,
        heads: torch.Tensor | None = None,
        params: TensorDictBase | None = None,
    ) -> torch.Tensor:
        params = self.params if params is None else params
        if heads is not None:
            params = params[heads]
        x = torch.cat([z, a], dim=-1)
        batch_shape = x.shape[:-1]
        x = x.reshape(1, -1, x.shape[-1])  # [1, N, in]: broadcast against the heads in the first matmul
        for name, layer in self._layers:
            if isinstance(layer, nn.Linear):
                p = params[name]
                x = x.expand(p["weight"].shape[0], -1, -1)
                if bias_after_matmul():  # planning: faster as bmm + add (nn.bias_after_matmul)
                    x = torch.bmm(x, p["weight"].transpose(-1, -2)) + p["bias"].unsqueeze(-2)
                else:
                    x = torch.baddbmm(p["bias"].unsqueeze(-2), x, p["weight"].transpose(-1, -2))
            elif isinstance(layer, nn.LayerNorm):
                p = params[name]
                x = F.layer_norm(x, layer.normalized_shape, eps=layer.eps)
                x = torch.addcmul(p["bias"].unsqueeze(-2), x, p["weight"].unsqueeze(-2))
            elif isinstance(layer, nn.Dropout):
                x = dropout(x, layer.p, self.training)
            else:  # parameter-free activations (Mish)
                x = layer(x)
        return x.reshape(x.shape[0], *batch_shape, x.shape[-1])

    def __repr__(self) -> str:  # show the head's layers, not the stacked parameter tensors
        head = repr(self._skeleton).replace("\n", "\n  ")
        return f"QEnsemble(\n  (heads): {self.num_q} x {head}\n)"


class Policy(nn.Module):
    """TD-MPC2's squashed Gaussian policy prior.

    Written by hand rather than with TorchRL's ``TanhNormal``: TD-MPC2 bounds ``log_std`` with a tanh to
    [log_std_min, log_std_max] and its entropy bonus is the pre-tanh Gaussian log-prob scaled by the action
    dimension, neither of which ``TanhNormal`` exposes.
    """

    def __init__(
        self,
        net: nn.Module,
        mlp_dim: int,
        action_dim: int,
        split_heads: bool,
        log_std_min: float = -10.0,
        log_std_max: float = 2.0,
    ) -> None:
        super().__init__()
        self.net = net
        if split_heads:  # the seed's layout
            self.mean_head = Linear(mlp_dim, action_dim)
            self.log_std_head = Linear(mlp_dim, action_dim)
        else:  # the official layout: one Linear(mlp, 2A), chunked
            self.head = Linear(mlp_dim, 2 * action_dim)
        self.split_heads = split_heads
        self.action_dim = action_dim
        self.log_std_min, self.log_std_max = log_std_min, log_std_max

    def mean_and_log_std(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.net(z)
        if self.split_heads:
            mean, raw = self.mean_head(h), self.log_std_head(h)
        else:
            mean, raw = self.head(h).chunk(2, dim=-1)
        mean, raw = mean.float(), raw.float()  # fp32 even under bf16 autocast
        return mean, squashed_log_std(raw, self.log_std_min, self.log_std_max)

    @staticmethod
    def pre_tanh_sample(mean: torch.Tensor, log_std: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """``mean + std·ε``: the Gaussian sample that ``tanh`` squashes into the action."""
        return mean + eps * log_std.exp()

    def masked_mean_and_log_std(self, z: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``mean_and_log_std``, zero on the dimensions a multitask action ``mask`` switches off (TD-MPC2)."""
        mean, log_std = self.mean_and_log_std(z)
        return (mean, log_std) if mask is None else (mean * mask, log_std * mask)

    def sample(self, z: torch.Tensor, eps: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The action ``tanh(mean + std·ε)`` for a given ``ε`` (the planner records its noise)."""
        eps = eps if mask is None else eps * mask
        return torch.tanh(self.pre_tanh_sample(*self.masked_mean_and_log_std(z, mask), eps))

    def forward(self, z: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """Returns ``(action, loc, log_std, log_prob, scaled_entropy)``; ``action = tanh(mean + std·ε)``.

        With a multitask action ``mask`` ``[..., A]`` the switched-off dimensions get action 0, no gradient and no
        share of the log-prob, and the entropy is scaled by the task's own action count. (The official code keeps
        a constant ``-log(2π)/2`` per switched-off dimension in its log-prob; it has no gradient.)
        """
        mean, log_std = self.masked_mean_and_log_std(z, mask)
        eps = torch.randn_like(mean)
        if mask is not None:
            eps = eps * mask
        pre_tanh = self.pre_tanh_sample(mean, log_std, eps)
        if mask is None:
            gauss_log_prob = gaussian_log_prob(eps, log_std)
            log_prob = gauss_log_prob - tanh_log_det(pre_tanh)
            scaled_entropy = -self.action_dim * gauss_log_prob
        else:
            gauss_log_prob = masked_sum(gaussian_log_prob_terms(eps, log_std), mask)
            log_prob = gauss_log_prob - masked_sum(tanh_log_det_terms(pre_tanh), mask)
            scaled_entropy = -mask.sum(-1, keepdim=True) * gauss_log_prob
        return torch.tanh(pre_tanh), torch.tanh(mean), log_std, log_prob, scaled_entropy


def masked_sum(terms: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``Σ terms·mask`` over the last dim (keepdim)."""
    return (terms * mask).sum(-1, keepdim=True)


class WorldModel(nn.Module):
    """Every TD-MPC2 network for one task, built from a ``ModelConfig`` and the env's obs/action sizes.

    ``obs_dim`` is a state vector's size, or a pixel observation's ``(C, H, W)`` shape: then the encoder is TD-MPC2's
    conv encoder (``pixels.PixelEncoder``, ``cfg.num_channels`` channels) instead of the MLP.

    Attributes ``encoder``, ``dynamics``, ``reward``, ``termination`` (or ``None``), ``qvalue`` and ``policy`` are
    ``TensorDictModule``s (keys in the module docstring). The target Q copy lives in the loss (TorchRL style).

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from tdmpc2_trl import WorldModel, load_model_config
        >>> cfg = load_model_config("1m", latent_dim=16, enc_dim=32, mlp_dim=32)  # a tiny 1m
        >>> world_model = WorldModel(cfg, obs_dim=3, action_dim=1)
        >>> td = world_model.encoder(TensorDict(observation=torch.zeros(2, 3), batch_size=[2]))
        >>> td["latent"].shape  # SimNorm: groups of 8 that each sum to 1
        torch.Size([2, 16])
        >>> bool(torch.allclose(td["latent"].view(2, 2, 8).sum(-1), torch.ones(2, 2)))
        True
    """

    def __init__(
        self,
        cfg: ModelConfig,
        obs_dim: int | Sequence[int],
        action_dim: int,
        episodic: bool = False,
        task_set: TaskSet | None = None,
    ) -> None:
        super().__init__()
        cfg.validate()
        self.obs_shape = tuple(int(d) for d in obs_dim) if isinstance(obs_dim, Sequence) else (int(obs_dim),)
        self.pixels = len(self.obs_shape) == 3
        self.obs_dim = math.prod(self.obs_shape)  # values per observation
        self.cfg, self.action_dim, self.episodic = cfg, action_dim, episodic
        self.bins = Bins(cfg.num_bins, cfg.vmin, cfg.vmax)
        self.tasks: TaskEmbedding | None = None
        if task_set is not None:
            if self.pixels:
                raise ValueError("multitask world models take state observations only (as TD-MPC2)")
            if (self.obs_dim, action_dim) != (task_set.obs_dim, task_set.action_dim):
                raise ValueError(
                    f"obs/action dims ({self.obs_dim}, {action_dim}) must be the task set's padded "
                    f"sizes ({task_set.obs_dim}, {task_set.action_dim})"
                )
            self.tasks = TaskEmbedding(task_set)
        T = task_set.task_dim if task_set is not None else 0  # the task embedding joins every network's input
        L, M, A = cfg.latent_dim, cfg.mlp_dim, action_dim
        hidden = [M] * cfg.num_mlp_layers
        sim = cfg.simnorm_dim

        if self.pixels:
            encoder: nn.Module = PixelEncoder(self.obs_shape, cfg.num_channels, L, sim)
        elif len(self.obs_shape) == 1:
            encoder = mlp(
                self.obs_dim + T, [cfg.enc_dim] * (cfg.num_enc_layers - 1), L, final=cfg.encoder_final, simnorm_dim=sim
            )
        else:
            raise ValueError(f"observations must be vectors or (C, H, W) images, got shape {self.obs_shape}")
        dynamics = StateActionNet(mlp(L + T + A, hidden, L, final="ln_simnorm", simnorm_dim=sim))
        reward = StateActionNet(mlp(L + T + A, hidden, cfg.num_bins))
        q_heads = [mlp(L + T + A, hidden, cfg.num_bins, dropout=cfg.q_dropout) for _ in range(cfg.num_q)]
        policy = Policy(
            nn.Sequential(*normed_blocks(L + T, hidden)),
            M,
            A,
            cfg.policy_head == "split",
            cfg.log_std_min,
            cfg.log_std_max,
        )
        termination: nn.Module | None = None
        self.termination_uses_action = cfg.termination == "latent_action"
        if cfg.termination == "latent_action":
            termination = StateActionNet(relu_mlp(L + T + A, [M, M], 1))
        elif episodic:
            termination = mlp(L + T, hidden, 1)

        for net in (encoder, dynamics, reward, policy, termination, *q_heads):
            if net is not None:
                net.apply(weight_init)
        zero_([last_linear(reward).weight] + [last_linear(h).weight for h in q_heads])

        def td_module(net: nn.Module, in_keys: list[str], out_keys: list[str], masked: bool = False):
            if self.tasks is not None:  # multitask: also reads the task ids, conditions the first input on them
                net, in_keys = _TaskConditioned(net, self.tasks, masked), [*in_keys, "task"]
            return TensorDictModule(net, in_keys, out_keys)

        self.encoder = td_module(encoder, ["observation"], ["latent"])
        self.dynamics = td_module(dynamics, ["latent", "action"], ["next_latent"])
        self.reward = td_module(reward, ["latent", "action"], ["reward_logits"])
        self.qvalue = td_module(_HeadsLast(QEnsemble(q_heads)), ["latent", "action"], ["state_action_value_logits"])
        self.policy = td_module(
            policy, ["latent"], ["action", "loc", "log_std", "action_log_prob", "scaled_entropy"], masked=True
        )
        self.termination = None
        if termination is not None:
            in_keys = ["latent", "action"] if self.termination_uses_action else ["latent"]
            self.termination = td_module(termination, in_keys, ["termination_logit"])

    # ---- plain tensor API (hot paths) ----
    # Every method takes ``task`` ids (``[*B]``, long) for a multitask model and none for a single-task one.
    @property
    def multitask(self) -> bool:
        return self.tasks is not None

    @property
    def q_ensemble(self) -> QEnsemble:
        return _unconditioned(self.qvalue.module).ensemble

    def _net(self, module: TensorDictModule, task: torch.Tensor | None) -> nn.Module:
        """The network behind ``module``, checked against the task ids given (multitask ⇔ ``task`` given)."""
        if (task is None) == self.multitask:
            raise ValueError(
                "a multitask world model needs task ids (task=...)"
                if self.multitask
                else "task ids given to a single-task world model"
            )
        return module.module

    def _cond(self, x: torch.Tensor, task: torch.Tensor | None) -> torch.Tensor:
        """``x``, with the task embedding appended for a multitask model."""
        return x if task is None else self.tasks.condition(x, task)

    def encode(self, obs: torch.Tensor, task: torch.Tensor | None = None) -> torch.Tensor:
        net = self._net(self.encoder, task)
        return net(obs) if task is None else net(obs, task)

    def next(self, z: torch.Tensor, a: torch.Tensor, task: torch.Tensor | None = None) -> torch.Tensor:
        net = self._net(self.dynamics, task)
        return net(z, a) if task is None else net(z, a, task)

    # Head outputs are cast to fp32: under bf16 autocast the last Linear returns bf16, and softmax/two-hot
    # decoding and the losses are computed in fp32 (``.float()`` is free when they already are).
    def reward_logits(self, z: torch.Tensor, a: torch.Tensor, task: torch.Tensor | None = None) -> torch.Tensor:
        net = self._net(self.reward, task)
        return (net(z, a) if task is None else net(z, a, task)).float()

    def termination_logit(self, z: torch.Tensor, a: torch.Tensor, task: torch.Tensor | None = None) -> torch.Tensor:
        if self.termination is None:
            raise RuntimeError("this world model has no termination head (non-episodic task, official preset)")
        inputs = (z, a) if self.termination_uses_action else (z,)
        net = self._net(self.termination, task)
        return (net(*inputs) if task is None else net(*inputs, task)).float()

    def pi(self, z: torch.Tensor, task: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        net = self._net(self.policy, task)
        return net(z) if task is None else net(z, task)

    def pi_sample(self, z: torch.Tensor, eps: torch.Tensor, task: torch.Tensor | None = None) -> torch.Tensor:
        """π's action ``tanh(μ + σ·ε)`` for a given ``ε`` (masked for a multitask model)."""
        policy: Policy = _unconditioned(self._net(self.policy, task))
        mask = None if task is None else self.tasks.mask(task)
        return policy.sample(self._cond(z, task), eps, mask)

    def q_logits(self, z, a, heads=None, params=None, task: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of the chosen heads (all by default), heads first: ``[num_heads, ..., num_bins]``."""
        self._net(self.qvalue, task)
        return self.q_ensemble(self._cond(z, task), a, heads=heads, params=params).float()

    def random_heads(self, device: torch.device | None = None) -> torch.Tensor:
        """TD-MPC2's choice of 2 distinct Q heads (``randperm(num_q)[:2]``)."""
        return torch.randperm(self.cfg.num_q, device=device)[:2]

    def q_value(
        self,
        z: torch.Tensor,
        a: torch.Tensor,
        reduce: str = "avg",
        params=None,
        heads: torch.Tensor | None = None,
        task: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """TD-MPC2's ``Q(z, a, 'min'|'avg')``: decode 2 randomly chosen heads (only those are evaluated).

        ``heads`` gives the choice (``random_heads()``); compiled callers draw it outside the graph (inductor's
        lowering of ``randperm(2)[:2]`` fails).
        """
        heads = self.random_heads(z.device) if heads is None else heads
        q = two_hot_inv(self.q_logits(z, a, heads=heads, params=params, task=task), self.bins)
        if reduce == "min":
            return q.min(0).values
        if reduce == "avg":
            return q.mean(0)
        raise ValueError(f"reduce must be 'min' or 'avg', got {reduce!r}")

    # ---- summary ----
    def parameter_counts(self) -> dict[str, int]:
        """Trainable parameters per network (and the task embedding of a multitask model), the world-model sum (all
        but the policy) and the total."""
        counts = {"task_embedding": count_parameters(self.tasks)} if self.tasks is not None else {}
        counts |= {
            "encoder": count_parameters(self.encoder),
            "dynamics": count_parameters(self.dynamics),
            "reward": count_parameters(self.reward),
            "termination": count_parameters(self.termination) if self.termination is not None else 0,
            "qvalue": count_parameters(self.qvalue),
            "policy": count_parameters(self.policy),
        }
        counts["world_model"] = sum(v for k, v in counts.items() if k != "policy")
        counts["total"] = counts["world_model"] + counts["policy"]
        return counts


class _TaskConditioned(nn.Module):
    """A multitask model's TensorDict-facing view of a network: its last input is the task ids; the first input gets
    the task embedding appended (and the policy gets the task's action mask). The embedding is shared, not owned."""

    def __init__(self, net: nn.Module, tasks: TaskEmbedding, masked: bool = False) -> None:
        super().__init__()
        self.net, self.masked = net, masked
        self.__dict__["tasks"] = tasks  # registered once, on the world model

    def forward(self, x: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        *inputs, task = rest
        x = self.tasks.condition(x, task)
        if self.masked:
            return self.net(x, *inputs, mask=self.tasks.mask(task))
        return self.net(x, *inputs)


def _unconditioned(module: nn.Module) -> nn.Module:
    return module.net if isinstance(module, _TaskConditioned) else module


class _HeadsLast(nn.Module):
    """TensorDict-facing view of the ensemble: moves the head dim next to the bins, ``[..., num_q, num_bins]``."""

    def __init__(self, ensemble: QEnsemble) -> None:
        super().__init__()
        self.ensemble = ensemble

    def forward(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return self.ensemble(z, a).movedim(0, -2)
