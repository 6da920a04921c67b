"""The TD-MPC2 networks (each a TensorDict module) and the ``WorldModel`` container built from a config.

Keys (all networks read and write a TensorDict with these names):
  encoder:     observation                 -> latent
  dynamics:    (latent, action)            -> next_latent
  reward:      (latent, action)            -> reward_logits                 [..., num_bins]
  termination: (latent, action) or latent  -> termination_logit             [..., 1]
  qvalue:      (latent, action)            -> state_action_value_logits     [..., num_q, num_bins]
  policy:      latent                      -> action, loc, log_std, action_log_prob, scaled_entropy

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

from .config import ModelConfig
from .dropout import dropout
from .math import Bins, gaussian_log_prob, squashed_log_std, tanh_log_det, two_hot_inv
from .nn import count_parameters, last_linear, mlp, normed_blocks, relu_mlp, weight_init, zero_
from .pixels import PixelEncoder


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
                x = torch.baddbmm(p["bias"].unsqueeze(-2), x.expand(p["weight"].shape[0], -1, -1),
                                  p["weight"].transpose(-1, -2))
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

    def __init__(self, net: nn.Module, mlp_dim: int, action_dim: int, split_heads: bool,
                 log_std_min: float = -10.0, log_std_max: float = 2.0) -> None:
        super().__init__()
        self.net = net
        if split_heads:  # the seed's layout
            self.mean_head = nn.Linear(mlp_dim, action_dim)
            self.log_std_head = nn.Linear(mlp_dim, action_dim)
        else:  # the official layout: one Linear(mlp, 2A), chunked
            self.head = nn.Linear(mlp_dim, 2 * action_dim)
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

    def sample(self, z: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """The action ``tanh(mean + std·ε)`` for a given ``ε`` (the planner records its noise)."""
        return torch.tanh(self.pre_tanh_sample(*self.mean_and_log_std(z), eps))

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Returns ``(action, loc, log_std, log_prob, scaled_entropy)``; ``action = tanh(mean + std·ε)``."""
        mean, log_std = self.mean_and_log_std(z)
        eps = torch.randn_like(mean)
        pre_tanh = self.pre_tanh_sample(mean, log_std, eps)
        gauss_log_prob = gaussian_log_prob(eps, log_std)
        log_prob = gauss_log_prob - tanh_log_det(pre_tanh)
        scaled_entropy = -self.action_dim * gauss_log_prob
        return torch.tanh(pre_tanh), torch.tanh(mean), log_std, log_prob, scaled_entropy


class WorldModel(nn.Module):
    """Every TD-MPC2 network for one task, built from a ``ModelConfig`` and the env's obs/action sizes.

    ``obs_dim`` is a state vector's size, or a pixel observation's ``(C, H, W)`` shape: then the encoder is TD-MPC2's
    conv encoder (``pixels.PixelEncoder``, ``cfg.num_channels`` channels) instead of the MLP.

    Attributes ``encoder``, ``dynamics``, ``reward``, ``termination`` (or ``None``), ``qvalue`` and ``policy`` are
    ``TensorDictModule``s (keys in the module docstring). The target Q copy lives in the loss (TorchRL style).
    """

    def __init__(self, cfg: ModelConfig, obs_dim: int | Sequence[int], action_dim: int,
                 episodic: bool = False) -> None:
        super().__init__()
        cfg.validate()
        self.obs_shape = tuple(int(d) for d in obs_dim) if isinstance(obs_dim, Sequence) else (int(obs_dim),)
        self.pixels = len(self.obs_shape) == 3
        self.obs_dim = math.prod(self.obs_shape)  # values per observation
        self.cfg, self.action_dim, self.episodic = cfg, action_dim, episodic
        self.bins = Bins(cfg.num_bins, cfg.vmin, cfg.vmax)
        L, M, A = cfg.latent_dim, cfg.mlp_dim, action_dim
        hidden = [M] * cfg.num_mlp_layers
        sim = cfg.simnorm_dim

        if self.pixels:
            encoder: nn.Module = PixelEncoder(self.obs_shape, cfg.num_channels, L, sim)
        elif len(self.obs_shape) == 1:
            encoder = mlp(self.obs_dim, [cfg.enc_dim] * (cfg.num_enc_layers - 1), L, final=cfg.encoder_final,
                          simnorm_dim=sim)
        else:
            raise ValueError(f"observations must be vectors or (C, H, W) images, got shape {self.obs_shape}")
        dynamics = StateActionNet(mlp(L + A, hidden, L, final="ln_simnorm", simnorm_dim=sim))
        reward = StateActionNet(mlp(L + A, hidden, cfg.num_bins))
        q_heads = [mlp(L + A, hidden, cfg.num_bins, dropout=cfg.q_dropout) for _ in range(cfg.num_q)]
        policy = Policy(nn.Sequential(*normed_blocks(L, hidden)), M, A, cfg.policy_head == "split",
                        cfg.log_std_min, cfg.log_std_max)
        termination: nn.Module | None = None
        self.termination_uses_action = cfg.termination == "seed"
        if cfg.termination == "seed":
            termination = StateActionNet(relu_mlp(L + A, [M, M], 1))
        elif episodic:
            termination = mlp(L, hidden, 1)

        for net in (encoder, dynamics, reward, policy, termination, *q_heads):
            if net is not None:
                net.apply(weight_init)
        zero_([last_linear(reward).weight] + [last_linear(h).weight for h in q_heads])

        self.encoder = TensorDictModule(encoder, ["observation"], ["latent"])
        self.dynamics = TensorDictModule(dynamics, ["latent", "action"], ["next_latent"])
        self.reward = TensorDictModule(reward, ["latent", "action"], ["reward_logits"])
        self.qvalue = TensorDictModule(_HeadsLast(QEnsemble(q_heads)), ["latent", "action"],
                                       ["state_action_value_logits"])
        self.policy = TensorDictModule(
            policy, ["latent"], ["action", "loc", "log_std", "action_log_prob", "scaled_entropy"])
        self.termination = None
        if termination is not None:
            in_keys = ["latent", "action"] if self.termination_uses_action else ["latent"]
            self.termination = TensorDictModule(termination, in_keys, ["termination_logit"])

    # ---- plain tensor API (hot paths) ----
    @property
    def q_ensemble(self) -> QEnsemble:
        return self.qvalue.module.ensemble

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        return self.encoder.module(obs)

    def next(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return self.dynamics.module(z, a)

    # Head outputs are cast to fp32: under bf16 autocast the last Linear returns bf16, and softmax/two-hot
    # decoding and the losses are computed in fp32 (``.float()`` is free when they already are).
    def reward_logits(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return self.reward.module(z, a).float()

    def termination_logit(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        if self.termination is None:
            raise RuntimeError("this world model has no termination head (non-episodic task, official preset)")
        net = self.termination.module
        return (net(z, a) if self.termination_uses_action else net(z)).float()

    def pi(self, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.policy.module(z)

    def q_logits(self, z, a, heads=None, params=None) -> torch.Tensor:
        """Logits of the chosen heads (all by default), heads first: ``[num_heads, ..., num_bins]``."""
        return self.q_ensemble(z, a, heads=heads, params=params).float()

    def random_heads(self, device: torch.device | None = None) -> torch.Tensor:
        """TD-MPC2's choice of 2 distinct Q heads (``randperm(num_q)[:2]``)."""
        return torch.randperm(self.cfg.num_q, device=device)[:2]

    def q_value(self, z: torch.Tensor, a: torch.Tensor, reduce: str = "avg", params=None,
                heads: torch.Tensor | None = None) -> torch.Tensor:
        """TD-MPC2's ``Q(z, a, 'min'|'avg')``: decode 2 randomly chosen heads (only those are evaluated).

        ``heads`` gives the choice (``random_heads()``); compiled callers draw it outside the graph (inductor's
        lowering of ``randperm(2)[:2]`` fails).
        """
        heads = self.random_heads(z.device) if heads is None else heads
        q = two_hot_inv(self.q_logits(z, a, heads=heads, params=params), self.bins)
        if reduce == "min":
            return q.min(0).values
        if reduce == "avg":
            return q.mean(0)
        raise ValueError(f"reduce must be 'min' or 'avg', got {reduce!r}")

    # ---- summary ----
    def parameter_counts(self) -> dict[str, int]:
        """Trainable parameters per network, the world-model sum (all but the policy) and the total."""
        counts = {
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


class _HeadsLast(nn.Module):
    """TensorDict-facing view of the ensemble: moves the head dim next to the bins, ``[..., num_q, num_bins]``."""

    def __init__(self, ensemble: QEnsemble) -> None:
        super().__init__()
        self.ensemble = ensemble

    def forward(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return self.ensemble(z, a).movedim(0, -2)
