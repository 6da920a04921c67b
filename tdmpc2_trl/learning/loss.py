"""The TD-MPC2 objective as a TorchRL ``LossModule``: world-model terms and the policy-prior term.

A batch is a replay sample reshaped to ``[B, H]`` (batch first, time second)::

    observation [B, H, D], action [B, H, A],
    ("next", "observation") [B, H, D], ("next", "reward") [B, H, 1], ("next", "terminated") [B, H, 1]

``("next", "done")`` and ``("next", "truncated")`` are ignored on purpose: the slice sampler marks every slice end as
done/truncated, and TD-MPC2 bootstraps through everything but a true termination.

The Q ensemble is registered TorchRL's way (``convert_to_functional``): ``qvalue_network_params`` holds the very
``Parameter`` objects of ``world_model.q_ensemble`` (so the planner sees every update) and
``target_qvalue_network_params`` a detached clone that only ``SoftUpdate`` moves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from tensordict import TensorDict, TensorDictBase, TensorDictParams
from tensordict.utils import NestedKey
from torch import nn
from torch.nn import functional as F
from torchrl.objectives import LossModule

from tdmpc2_trl import _compat
from tdmpc2_trl.networks.bounds import ActionBounds
from tdmpc2_trl.networks.layers import eval_mode
from tdmpc2_trl.networks.math import RunningScale, soft_ce, two_hot_inv
from tdmpc2_trl.networks.world_model import QEnsemble, WorldModel
from tdmpc2_trl.platform.compiling import compile_or_eager

__all__ = ["TDMPC2Loss", "rho_weights"]


def rho_weights(rho: float, steps: int, device: torch.device | None = None) -> torch.Tensor:
    """``[1, ρ, ρ², …]`` of length ``steps``: TD-MPC2's temporal weighting of the unrolled losses."""
    return torch.pow(torch.full((steps,), rho, device=device), torch.arange(steps, device=device))


def _weighting(mask: torch.Tensor | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """Zero a ``[..., B, T, C]`` per-step loss where ``mask [B, T]`` is False (identity without a mask)."""
    if mask is None:
        return lambda x: x
    weight = mask.unsqueeze(-1)
    return lambda x: x * weight.to(x.dtype)


def _per_step_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean over every dim except the time dim (``-2``): ``[..., T, C] -> [T]``."""
    return x.transpose(-2, 0).reshape(x.shape[-2], -1).mean(-1)


class TDMPC2Loss(LossModule):
    """TD-MPC2's losses (Hansen et al. 2024) on a ``WorldModel``.

    Args:
        world_model: the networks; kept as a submodule, so ``parameters()`` and ``state_dict()`` cover them.
        discount: γ of the TD target.

    Keyword Args:
        rho: temporal weight ρ of the unrolled terms (0.5).
        consistency_coef, reward_coef, value_coef, termination_coef: loss weights (20, 0.1, 0.1, 1).
        entropy_coef: weight of the policy's scaled entropy bonus (1e-4).
        scale_tau: lerp rate of the ``RunningScale`` that normalises Q in the policy loss (0.01).
        augment: applied to the observations the world-model loss encodes (``obs_0`` and every next observation),
            e.g. ``pixels.RandomShift`` for pixel observations; ``None`` (state observations): none. Planning and
            ``td_target`` see the raw observations.
        action_spec: the env's ``Bounded`` action spec when the batches hold actions in the env's units (the
            planner given the same spec acts in them): the loss maps them back to the world model's [-1, 1].
            ``None`` (default): the actions already are in [-1, 1] (e.g. behind TorchRL's ``ActionScaling``).

    ``world_model_loss(batch)`` returns the weighted ``loss_*`` terms (their sum is the world-model objective),
    diagnostics and the detached rollout ``latents [B, H+1, L]``; ``policy_loss(latents)`` returns ``loss_policy``;
    ``forward(batch)`` returns both (summing every ``loss_*`` key and one backward gives the right gradients, since
    the policy term sees detached latents and frozen Q parameters).

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from tdmpc2_trl import WorldModel, load_model_config
        >>> cfg = load_model_config("1m", latent_dim=16, enc_dim=32, mlp_dim=32)  # a tiny 1m
        >>> world_model = WorldModel(cfg, obs_dim=3, action_dim=1)
        >>> from tdmpc2_trl import TDMPC2Loss
        >>> loss = TDMPC2Loss(world_model, discount=0.99)
        >>> B, H = 4, 3
        >>> batch = TensorDict(observation=torch.randn(B, H, 3), action=torch.rand(B, H, 1) * 2 - 1,
        ...                    next=TensorDict(observation=torch.randn(B, H, 3), reward=torch.randn(B, H, 1),
        ...                                    terminated=torch.zeros(B, H, 1, dtype=torch.bool), batch_size=[B, H]),
        ...                    batch_size=[B, H])
        >>> terms = loss(batch)
        >>> sorted(k for k in terms.keys() if k.startswith("loss_"))
        ['loss_consistency', 'loss_policy', 'loss_reward', 'loss_termination', 'loss_value']
    """

    @dataclass
    class _AcceptedKeys:
        """Configurable input keys (``set_keys(...)``); reward and terminated are read under ``"next"``.

        Attributes:
            observation: observation key, also read as ``("next", observation)``. Defaults to ``"observation"``.
            action: action key. Defaults to ``"action"``.
            reward: reward key under ``"next"``. Defaults to ``"reward"``.
            terminated: termination flag under ``"next"`` (the only flag that stops bootstrapping).
                Defaults to ``"terminated"``.
            task: task ids ``[B, H]`` of a multitask world model's batches. Defaults to ``"task"``.
            mask: the real (True) and padded (False) steps ``[B, H]`` of slices padded past an episode's end
                (``data.EpisodeEndSliceSampler``); padded steps weigh 0. Defaults to ``("collector", "mask")``.
        """

        observation: NestedKey = "observation"
        action: NestedKey = "action"
        reward: NestedKey = "reward"
        terminated: NestedKey = "terminated"
        task: NestedKey = "task"
        mask: NestedKey = ("collector", "mask")

    default_keys = _AcceptedKeys
    tensor_keys: _AcceptedKeys

    world_model: WorldModel
    qvalue_network: QEnsemble
    qvalue_network_params: TensorDictParams
    target_qvalue_network_params: TensorDictParams
    scale: RunningScale
    augment: nn.Module | None

    def __init__(
        self,
        world_model: WorldModel,
        discount: float,
        *,
        rho: float = 0.5,
        consistency_coef: float = 20.0,
        reward_coef: float = 0.1,
        value_coef: float = 0.1,
        termination_coef: float = 1.0,
        entropy_coef: float = 1e-4,
        scale_tau: float = 0.01,
        augment: nn.Module | None = None,
        action_spec=None,
    ) -> None:
        super().__init__()
        self._in_keys: list[NestedKey] | None = None
        self.world_model = world_model
        self.convert_to_functional(world_model.q_ensemble, "qvalue_network", create_target_params=True)
        self.scale = RunningScale(scale_tau)
        self.discount = float(discount)
        self.rho = float(rho)
        self.consistency_coef, self.reward_coef = float(consistency_coef), float(reward_coef)
        self.value_coef, self.termination_coef = float(value_coef), float(termination_coef)
        self.entropy_coef = float(entropy_coef)
        self.augment = augment
        self.bounds = ActionBounds(action_spec, world_model.action_dim).to(next(world_model.parameters()).device)
        self.__dict__["_compiled_terms"] = None

    # ---- compilation ----
    def compile_terms(self, enabled: bool = True) -> TDMPC2Loss:
        """Run the losses' pieces through ``torch.compile``; eager again with ``enabled=False``.

        Each piece is a forward graph and a backward graph, every LayerNorm/Mish/softmax/cast fused between the
        matmuls: the TD target, the first latent, one latent step (the same graph at every step of the rollout,
        so compiling does not grow with the horizon), the world-model terms from the latents, and the policy
        terms (docs/performance.md, "Compiling"). The random choices that inductor cannot lower well (the Q-head
        pairs) are drawn outside the graphs, so the compiled pieces compute the same function of the same draws.
        A piece that fails to compile warns once and runs eagerly. The compiled callables are not pickled.
        """
        hint = "optim.compile=false silences this"
        device = next(self.world_model.parameters()).device
        self.__dict__["_compiled_terms"] = (
            {
                name: compile_or_eager(fn, f"the {label}", hint, device)
                for name, (fn, label) in self._pieces_named().items()
            }
            if enabled
            else None
        )
        return self

    def _pieces_named(self) -> dict[str, tuple[Callable, str]]:
        return {
            "td_target": (self._td_target_and_latents, "world-model loss (its TD target)"),
            "first_latent": (self._first_latent, "world-model loss (its first latent)"),
            "next_latent": (self._next_latent, "world-model loss (one latent step)"),
            "latent_terms": (self._latent_terms, "world-model loss (its terms)"),
            "policy": (self._policy_terms, "policy loss"),
        }

    @property
    def _terms_fns(self) -> dict[str, Callable]:
        """The pieces by name: compiled (``compile_terms``) or the plain methods."""
        compiled = self.__dict__.get("_compiled_terms")
        return compiled or {name: fn for name, (fn, _) in self._pieces_named().items()}

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_compiled_terms"] = None
        return state

    # ---- TorchRL key plumbing ----
    def _forward_value_estimator_keys(self, **kwargs) -> None:
        self._in_keys = None  # TD-MPC2 computes its own TD target: no value estimator to forward keys to

    def make_value_estimator(self, value_type=None, **hyperparams):
        raise NotImplementedError("TDMPC2Loss computes TD-MPC2's own one-step TD target; it has no value estimator")

    @property
    def in_keys(self) -> list[NestedKey]:
        if self._in_keys is None:
            k = self.tensor_keys
            self._in_keys = [
                k.observation,
                k.action,
                ("next", k.observation),
                ("next", k.reward),
                ("next", k.terminated),
            ] + ([k.task] if self.world_model.multitask else [])
        return self._in_keys

    @property
    def out_keys(self) -> list[str]:
        return ["loss_consistency", "loss_reward", "loss_value", "loss_termination", "loss_policy"]

    # ---- parameters the planner and the optimisers need ----
    @property
    def q_params(self) -> TensorDictBase:
        """The online stacked Q parameters ``[num_q]`` (the world model's own ``Parameter`` objects)."""
        return self.qvalue_network_params["params"]

    @property
    def target_q_params(self) -> TensorDictBase:
        """The target copy ``[num_q]``, moved only by ``SoftUpdate``.

        Read from ``_modules`` directly: ``LossModule.__getattr__`` warns on every access made before a target
        updater exists, which includes building the optimisers and the ``SoftUpdate`` itself.
        """
        return _compat.target_params(self, "target_qvalue_network_params")["params"]

    # ---- the objective ----
    def _read(self, batch: TensorDictBase) -> tuple[torch.Tensor, ...]:
        """Observation, action in [-1, 1] (mapped from the env's units), next observation, reward, terminated, and a
        multitask batch's task ids ``[B, H]`` (``None`` for a single-task model; its actions are masked by them)."""
        k = self.tensor_keys
        action = self.bounds.to_unit(batch.get(k.action))
        task = None
        if self.world_model.multitask:
            task = batch.get(k.task)
            task = (task.squeeze(-1) if task.ndim == action.ndim else task).long()
            action = action * self.world_model.tasks.mask(task)  # e.g. random seed actions in unused dims
        return (
            batch.get(k.observation),
            action,
            batch.get(("next", k.observation)),
            batch.get(("next", k.reward)),
            batch.get(("next", k.terminated)),
            task,
        )

    def discount_of(self, task: torch.Tensor | None) -> torch.Tensor | float:
        """γ: the loss's, or for a multitask model each sample's task's (``[*task.shape, 1]``)."""
        return self.discount if task is None else self.world_model.tasks.discounts[task].unsqueeze(-1)

    @torch.no_grad()
    def _td_target_from_latents(
        self,
        next_z: torch.Tensor,
        reward: torch.Tensor,
        terminated: torch.Tensor,
        heads: torch.Tensor,
        task: torch.Tensor | None = None,
    ) -> torch.Tensor:
        wm = self.world_model
        action = wm.pi(next_z, task)[0]
        # TD-MPC2 computes targets with the model in eval mode (its update ends with model.eval()): no dropout.
        with eval_mode(wm.q_ensemble):
            q = wm.q_value(next_z, action, "min", params=self.target_q_params, heads=heads, task=task)
        return reward + self.discount_of(task) * (1 - terminated.to(q.dtype)) * q

    @torch.no_grad()
    def td_target(self, batch: TensorDictBase) -> torch.Tensor:
        """``r + γ·(1 − terminated)·min2 Q_target(z', π(z'))`` with ``z' = encode(next obs)``: ``[B, H, 1]``."""
        _, _, next_obs, reward, terminated, task = self._read(batch)
        heads = self.world_model.random_heads(next_obs.device)
        return self._td_target_from_latents(self.world_model.encode(next_obs, task), reward, terminated, heads, task)

    def _rollout(self, z: torch.Tensor, action: torch.Tensor, task: torch.Tensor | None = None) -> torch.Tensor:
        """Latents ``z_0..z_H`` ``[B, H+1, L]`` from ``z_0 [B, L]`` and the actions ``[B, H, A]``."""
        step, zs = self._terms_fns["next_latent"], [z]
        for t, a in enumerate(action.unbind(-2)):
            zs.append(step(zs[-1], a, None if task is None else task[..., t]))
        return torch.stack(zs, dim=-2)

    def _next_latent(self, z: torch.Tensor, action: torch.Tensor, task: torch.Tensor | None = None) -> torch.Tensor:
        return self.world_model.next(z, action, task)

    def _first_latent(self, obs: torch.Tensor, task: torch.Tensor | None = None) -> torch.Tensor:
        return self.world_model.encode(obs, task)

    def _td_target_and_latents(
        self,
        next_obs: torch.Tensor,
        reward: torch.Tensor,
        terminated: torch.Tensor,
        heads: torch.Tensor,
        task: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(TD target [B, H, 1], encoded next observations [B, H, L])``, without gradients."""
        with torch.no_grad():
            next_z = self.world_model.encode(next_obs, task)
            return self._td_target_from_latents(next_z, reward, terminated, heads, task), next_z

    def world_model_loss(self, batch: TensorDictBase) -> TensorDictBase:
        """Consistency, reward, value and termination terms (coefficients applied) plus diagnostics and latents
        (and, multitask, ``latent_task``: the latents' task ids, for ``policy_loss``)."""
        obs, action, next_obs, reward, terminated, task = self._read(batch)
        heads = self.world_model.random_heads(obs.device)
        mask = batch.get(self.tensor_keys.mask, None)  # [B, H]: False past an episode's end
        out = TensorDict(self._world_model_terms(obs, action, next_obs, reward, terminated, heads, task, mask))
        if task is not None:  # the latents z_0..z_H: the slice's ids, the last one repeated
            out.set("latent_task", torch.cat([task, task[..., -1:]], -1))
        if mask is not None:  # z_t is real when step t-1 is; z_0 always
            out.set("latent_mask", torch.cat([torch.ones_like(mask[..., :1]), mask], -1))
        return out

    def _world_model_terms(
        self,
        obs: torch.Tensor,
        action: torch.Tensor,
        next_obs: torch.Tensor,
        reward: torch.Tensor,
        terminated: torch.Tensor,
        td_heads: torch.Tensor,
        task: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """``world_model_loss`` on plain tensors; ``td_heads``: the 2 target Q heads of the TD target; ``mask``
        ``[B, H]``: the real steps (padded ones weigh 0, the normalisation stays that of a full batch)."""
        wm, pieces = self.world_model, self._terms_fns
        obs_0 = obs.select(obs.ndim - len(wm.obs_shape) - 1, 0)  # the first step of each slice
        if self.augment is not None:
            obs_0, next_obs = self.augment(obs_0), self.augment(next_obs)
        td_target, next_z = pieces["td_target"](next_obs, reward, terminated, td_heads, task)
        zs = self._rollout(pieces["first_latent"](obs_0, None if task is None else task[..., 0]), action, task)
        return pieces["latent_terms"](zs, next_z, td_target, action, reward, terminated, task, mask)

    def _latent_terms(
        self,
        zs: torch.Tensor,
        next_z: torch.Tensor,
        td_target: torch.Tensor,
        action: torch.Tensor,
        reward: torch.Tensor,
        terminated: torch.Tensor,
        task: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """The world-model terms and diagnostics from the rollout's latents ``zs`` ``[B, H+1, L]``, the encoded next
        observations and the TD target."""
        wm, horizon = self.world_model, action.shape[-2]
        real = _weighting(mask)
        z, z_next = zs[..., :-1, :], zs[..., 1:, :]
        w = rho_weights(self.rho, horizon, zs.device)

        consistency = (w * _per_step_mean(real((z_next - next_z).pow(2)))).sum() / horizon
        reward_logits = wm.reward_logits(z, action, task)
        reward_loss = (w * _per_step_mean(real(soft_ce(reward_logits, reward, wm.bins)))).sum() / horizon
        q_logits = wm.q_logits(z, action, task=task)  # [num_q, B, H, bins], every head, online params
        # Σ_q Σ_t ρ^t·mean_B CE / (H·num_q) = Σ_t ρ^t·mean_{q,B} CE / H
        value = (w * _per_step_mean(real(soft_ce(q_logits, td_target, wm.bins)))).sum() / horizon
        termination = self._termination_loss(z, z_next, action, terminated, task, mask)

        return dict(
            loss_consistency=self.consistency_coef * consistency,
            loss_reward=self.reward_coef * reward_loss,
            loss_value=self.value_coef * value,
            loss_termination=self.termination_coef * termination,
            consistency=consistency.detach(),
            reward_ce=reward_loss.detach(),
            value_ce=value.detach(),
            termination_bce=termination.detach(),
            td_target_mean=td_target.mean(),
            td_target_std=td_target.std(),
            q_mean=two_hot_inv(q_logits.detach(), wm.bins).mean(),
            reward_mean=reward.mean(),
            reward_pred_mean=two_hot_inv(reward_logits.detach(), wm.bins).mean(),
            terminated_frac=terminated.float().mean(),
            latents=zs.detach(),
        )

    def _termination_loss(
        self,
        z: torch.Tensor,
        z_next: torch.Tensor,
        action: torch.Tensor,
        terminated: torch.Tensor,
        task: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """BCE-with-logits of the predicted transition's termination (padded steps weigh 0); zero for non-episodic
        tasks.

        The seed head reads ``(z_t, a_t)``, the official one ``z_{t+1}``; both predict ``terminated_t``.
        """
        wm = self.world_model
        if not wm.episodic:
            return torch.zeros((), device=z.device, dtype=z.dtype)
        logits = wm.termination_logit(z if wm.termination_uses_action else z_next, action, task)
        target = terminated.to(logits.dtype)
        if mask is None:
            return F.binary_cross_entropy_with_logits(logits, target)
        return _weighting(mask)(F.binary_cross_entropy_with_logits(logits, target, reduction="none")).mean()

    def policy_loss(
        self, latents: torch.Tensor, task: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> TensorDictBase:
        """TD-MPC2's policy objective on detached latents ``[..., T, L]`` with the Q ensemble frozen (``task``:
        a multitask model's ids ``[..., T]``; ``mask``: the real latents ``[..., T]``, ``latent_mask``).

        Updates the ``RunningScale`` with the t=0 Q values, then
        ``loss = mean_t ρ^t · mean(−(entropy_coef · scaled_entropy + Q / scale))``.
        """
        heads = self.world_model.random_heads(latents.device)
        return TensorDict(self._terms_fns["policy"](latents.detach(), heads, task, mask))

    def _policy_terms(
        self, z: torch.Tensor, heads: torch.Tensor, task: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """``policy_loss`` on a plain tensor; ``heads``: the 2 Q heads averaged."""
        action, _, log_std, log_prob, scaled_entropy = self.world_model.pi(z, task)
        # grads reach the action only
        q = self.world_model.q_value(z, action, "avg", params=self.q_params.detach(), heads=heads, task=task)
        self.scale.update(q[..., 0, :])
        q_scaled = self.scale(q)
        per_step = _per_step_mean(_weighting(mask)(-(self.entropy_coef * scaled_entropy + q_scaled)))
        loss = (rho_weights(self.rho, per_step.shape[0], z.device) * per_step).mean()
        return dict(
            loss_policy=loss,
            entropy=-log_prob.detach().mean(),
            scaled_entropy=scaled_entropy.detach().mean(),
            q_scale=self.scale.value.detach().clone(),
            q_pi_mean=q.detach().mean(),
            pi_log_std=log_std.detach().mean(),
        )

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Both objectives; the policy term runs on this batch's detached rollout latents."""
        out = self.world_model_loss(tensordict)
        return out.update(
            self.policy_loss(out.get("latents"), out.get("latent_task", None), out.get("latent_mask", None))
        )
