"""TD-MPC2's MPPI planner as a TorchRL ``MPCPlannerBase``, batched over environments.

One planner call plans for every environment of the input at once: the ``B × num_samples`` candidate trajectories of
all ``B`` environments go through each network in a single forward. Per environment the maths is TD-MPC2's ``_plan``
(see DESIGN §4). The warm start (the previous call's plan mean) rides in the tensordict under ``"planner_mean"``:
``planner.primer()`` adds it to an env, zeroed at reset, so an episode start is exactly TD-MPC2's ``t0``.

All random draws of a call are made up front by a ``PlannerNoise`` (from the global RNG, or a given generator), with
batch-first shapes, so one batched call and ``B`` single-env calls can be fed identical draws (``noise.env(b)``); the
tests use that to check that batching does not change any environment's plan.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.data import Bounded, Composite, Unbounded
from torchrl.envs import TensorDictPrimer
from torchrl.envs.model_based import ModelBasedEnvBase
from torchrl.envs.utils import ExplorationType, exploration_type
from torchrl.modules.planners import MPCPlannerBase

from tdmpc2_trl.config.schema import COMPILE_SCOPES
from tdmpc2_trl.networks.bounds import ActionBounds
from tdmpc2_trl.networks.layers import eval_mode
from tdmpc2_trl.networks.math import two_hot_inv
from tdmpc2_trl.networks.world_model import WorldModel
from tdmpc2_trl.platform.compiling import compile_or_eager
from tdmpc2_trl.platform.precision import autocast

__all__ = ["TDMPC2Planner", "PlannerNoise", "is_exploring"]

MEAN_KEY = "planner_mean"
COMPILED_KEY = "_compiled_plan"
PARTS_KEY = "_compiled_parts"  # compile_scope="step": the compiled pieces, by method name


def is_exploring() -> bool:
    """True unless TorchRL's exploration type asks for a non-random action (DETERMINISTIC, MODE, MEAN, MEDIAN)."""
    return exploration_type() in (None, ExplorationType.RANDOM)


class PlannerNoise:
    """Every random draw of one planner call for ``batch`` environments, made up front, batch-first.

    Drawn from the global RNG, or from ``generator``. ``env(b)`` gives env ``b``'s share (with the same Q-head
    choice), so one batched call and ``batch`` single-env calls can be fed identical draws. Drawing everything before
    the call keeps the planning itself a pure function of tensors, which ``torch.compile`` turns into one graph.
    """

    def __init__(
        self,
        planner: TDMPC2Planner,
        batch: int,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        generator: torch.Generator | None = None,
    ) -> None:
        p, g, device = planner, generator, torch.device(device)
        H, A, N, P, I, K = p.horizon, p.action_dim, p.num_samples, p.num_pi_trajs, p.iterations, p.num_elites
        kw = dict(device=device, dtype=dtype, generator=g)
        self.draws: dict[str, torch.Tensor] = {
            "prior": torch.randn(batch, H, P, A, **kw),  # ε of the policy-prior trajectories, per step
            "candidates": torch.randn(batch, I, N - P, H, A, **kw),  # ε of the sampled candidates, per iteration
            "terminal": torch.randn(batch, I, N, A, **kw),  # ε of π(z_H) for the terminal Q, per iteration
            "gumbel": -torch.empty(batch, K, device=device, dtype=dtype).exponential_(generator=g).log(),
            "explore": torch.randn(batch, A, **kw),  # ε of the exploration noise
        }
        num_q = p.world_model.cfg.num_q  # the 2 Q heads averaged at each iteration, shared by all envs of the call
        # on ``device`` too: one generator serves every draw (a CUDA generator cannot drive a CPU randperm)
        heads = [torch.randperm(num_q, generator=g, device=device)[:2] for _ in range(I)]
        self.head_draws = torch.stack(heads) if I else torch.zeros(0, 2, dtype=torch.long, device=device)

    def env(self, b: int) -> PlannerNoise:
        """The draws of env ``b`` alone (batch 1), sharing the Q-head choice."""
        out = object.__new__(PlannerNoise)
        out.draws = {k: v[b : b + 1] for k, v in self.draws.items()}
        out.head_draws = self.head_draws
        return out

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """The draws in ``TDMPC2Planner._plan``'s argument order."""
        d = self.draws
        return d["prior"], d["candidates"], d["terminal"], self.head_draws, d["gumbel"], d["explore"]

    def terminal(self, i: int) -> torch.Tensor:
        return self.draws["terminal"][:, i]

    def heads(self, i: int) -> torch.Tensor:
        return self.head_draws[i]


class _SpecEnv(ModelBasedEnvBase):
    """A spec-only, batch-unlocked env: what ``MPCPlannerBase`` needs for its keys and action spec. Never stepped."""

    def __init__(self, obs_shape: tuple[int, ...], bounds: ActionBounds, device: torch.device | str = "cpu") -> None:
        super().__init__(TensorDictModule(nn.Identity(), ["observation"], ["observation"]), device=device)
        self.observation_spec = Composite(observation=Unbounded(obs_shape, device=device))
        self.action_spec = Bounded(bounds.low.to(device), bounds.high.to(device), bounds.low.shape, device=device)
        self.reward_spec = Unbounded((1,), device=device)

    def _reset(self, tensordict: TensorDictBase, **kwargs) -> TensorDictBase:
        raise RuntimeError("the planner's spec env only carries specs; it cannot be reset or stepped")


def _rows(task: torch.Tensor | None, per_env: int) -> torch.Tensor | None:
    """Per-row task ids of env-major rows (``per_env`` rows per env), or ``None`` for a single-task model."""
    return None if task is None else task.repeat_interleave(per_env)


_COMPILE_HINT = "planner.compile=false silences this"  # the compile-failure warning's advice
# compile_scope="auto" compiles one MPPI iteration up to this horizon and a step at a time beyond it. The iteration's
# graph unrolls the horizon: at the official presets' 3 it compiles in 30 s and plans 14-17 % faster than a step at a
# time; at 8m-h10's 10 it took 96 s cold (before the C++ wrapper), the step graphs 31 s (docs/performance.md,
# "Compiling").
ITERATION_SCOPE_MAX_HORIZON = 5
# compile_scope="step": the methods compiled each on its own, and what the compile notices call them
_PARTS = {
    "_advance_pi": "a policy-prior step",
    "_advance": "an imagined step",
    "_terminal_value": "the terminal value",
    "_refit": "the elites' refit",
}
_PRIOR_KEYS = ("actions", "G", "discount", "alive", "z")  # what the policy prior's rollout hands each iteration


class CompiledPlan:
    """``TDMPC2Planner._plan`` with its set-up and its MPPI iteration compiled as two graphs.

    The iteration is the same function at every step of the loop, so it is traced and compiled once and called
    ``iterations`` times: compiling costs about what two of the call's seven rollouts cost, not all of them
    (docs/performance.md, "Compiling"). Each graph falls back to eager on its own if it fails to compile.
    """

    def __init__(self, planner: TDMPC2Planner) -> None:
        self.planner = planner
        device = next(planner.world_model.parameters()).device
        self.start = compile_or_eager(planner._start, "the planner (its set-up)", _COMPILE_HINT, device)
        self.iterate = compile_or_eager(planner._iterate, "the planner (one MPPI iteration)", _COMPILE_HINT, device)

    def __call__(self, *args) -> tuple[torch.Tensor, torch.Tensor]:
        return self.planner._plan_with(self.start, self.iterate, *args)


class TDMPC2Planner(MPCPlannerBase):
    """TD-MPC2's MPPI over a ``WorldModel``, batched over the environments of the input tensordict.

    Reads ``"observation"`` ``[*B, *obs_shape]`` and ``"planner_mean"`` ``[*B, H, A]`` (zeros when absent), writes
    ``"action"`` ``[*B, A]`` in the env's units and ``("next", "planner_mean")``, the warm start of the next call.
    ``action_spec``: the env's ``Bounded`` action spec (per-dimension low/high); the world model plans in [-1, 1]
    and the action it picks is mapped affinely onto ``[low, high]`` (``bounds.ActionBounds``; ``None``: [-1, 1]).
    Anything but finite bounds is a one-line ``ConfigError``. Train the loss with the same spec
    (``TDMPC2Loss(..., action_spec=...)``) so that it maps the replayed actions back to [-1, 1].
    ``mpc=False`` acts with the policy prior alone. Exploration noise is added unless TorchRL's exploration type is a
    deterministic one. ``compile_plan=True`` runs the planner through ``torch.compile``, at the grain
    ``compile_scope`` names: ``"step"`` compiles the loops' bodies, each on its own (``_PARTS``: a
    policy-prior step, an imagined step, the terminal value, the elites' refit) and runs the loops in Python; every
    LayerNorm/Mish/softmax/cast between the matmuls is still fused, and what is compiled no longer grows with the
    horizon and the iterations. ``"iteration"`` compiles the set-up and one MPPI iteration (``CompiledPlan``),
    ``"call"`` the whole call as one graph; ``"auto"`` (default): ``"iteration"`` up to a horizon of
    ``ITERATION_SCOPE_MAX_HORIZON``, ``"step"`` beyond. One graph per input shape; the first call compiles. Compile
    seconds and per-call times of each: docs/performance.md, "Compiling". Where compilation fails (no C++ compiler,
    no Triton) it warns once per graph and runs that part eagerly.

    ``MPCPlannerBase`` registers its spec env twice; that env holds no parameters here, so the planner's state_dict is
    the world model's. Checkpoint the world model itself (the loss and the planner share it).

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from tdmpc2_trl import WorldModel, load_model_config
        >>> cfg = load_model_config("1m", latent_dim=16, enc_dim=32, mlp_dim=32)  # a tiny 1m
        >>> world_model = WorldModel(cfg, obs_dim=3, action_dim=1)
        >>> from tdmpc2_trl import TDMPC2Planner
        >>> planner = TDMPC2Planner(world_model, discount=0.99, horizon=3, num_samples=32, num_pi_trajs=4,
        ...                         num_elites=8, iterations=2)
        >>> out = planner(TensorDict(observation=torch.zeros(2, 3), batch_size=[2]))  # two envs, one call
        >>> out["action"].shape, out["next", "planner_mean"].shape  # the action, and the next call's warm start
        (torch.Size([2, 1]), torch.Size([2, 3, 1]))
        >>> bool(out["action"].abs().max() <= 1)
        True
    """

    def __init__(
        self,
        world_model: WorldModel,
        action_spec=None,
        *,
        discount: float,
        horizon: int = 10,
        num_samples: int = 512,
        num_pi_trajs: int = 24,
        num_elites: int = 64,
        iterations: int = 6,
        temperature: float = 0.5,
        min_std: float = 0.05,
        max_std: float = 2.0,
        mpc: bool = True,
        compile_plan: bool = False,
        compile_scope: str = "auto",
        autocast_dtype: torch.dtype | None = None,
    ) -> None:
        action_dim = world_model.action_dim
        bounds = ActionBounds(action_spec, action_dim)
        if not 0 <= num_pi_trajs < num_samples or not 0 < num_elites <= num_samples:
            raise ValueError(
                f"need 0 <= num_pi_trajs ({num_pi_trajs}) < num_samples ({num_samples}) and "
                f"0 < num_elites ({num_elites}) <= num_samples"
            )
        if compile_scope not in COMPILE_SCOPES:
            raise ValueError(f"compile_scope must be one of {', '.join(COMPILE_SCOPES)}, not {compile_scope!r}")
        if horizon < 1 or iterations < 1:
            raise ValueError(f"horizon ({horizon}) and iterations ({iterations}) must be positive")
        device = next(world_model.parameters()).device
        super().__init__(_SpecEnv(world_model.obs_shape, bounds, device))
        self.bounds = bounds.to(device)  # [-1, 1] → the env's units, applied to every returned action
        self.in_keys = ["observation", MEAN_KEY]  # declared so that collectors ship the warm start to the policy
        if world_model.multitask:
            self.in_keys.append("task")
        self.out_keys = ["action", ("next", MEAN_KEY)]
        self.world_model = world_model
        self.action_dim, self.discount, self.horizon = action_dim, float(discount), horizon
        self.num_samples, self.num_pi_trajs, self.num_elites = num_samples, num_pi_trajs, num_elites
        self.iterations, self.temperature = iterations, temperature
        self.min_std, self.max_std, self.mpc = min_std, max_std, mpc
        self.compile_plan = compile_plan  # torch.compile _plan, lazily on first use
        if compile_scope == "auto":
            compile_scope = "iteration" if horizon <= ITERATION_SCOPE_MAX_HORIZON else "step"
        self.compile_scope = compile_scope  # step: the loops' bodies; iteration: CompiledPlan; call: one graph
        self.autocast_dtype = autocast_dtype  # bf16: matmuls under autocast (see precision.py); None: fp32

    # ---- TorchRL plumbing ----
    def primer(self, device: torch.device | str | None = None) -> TensorDictPrimer:
        """The env transform that adds ``"planner_mean"`` ``[H, A]``, zero at every (partial) reset, on ``device``
        (the env's; default: the planner's)."""
        spec = Unbounded((self.horizon, self.action_dim), device=self.env.device if device is None else device)
        return TensorDictPrimer({MEAN_KEY: spec}, default_value=0.0, expand_specs=True)

    def planning(self, td: TensorDictBase) -> torch.Tensor:
        """``MPCPlannerBase``'s hook: the action only (``forward`` also writes the next warm start)."""
        return self._act_td(td)[0]

    def forward(
        self, tensordict: TensorDictBase, tensordict_out: TensorDictBase | None = None, **kwargs
    ) -> TensorDictBase:
        action, mean = self._act_td(tensordict)
        out = tensordict if tensordict_out is None else tensordict_out
        out.set("action", action)
        out.set(("next", MEAN_KEY), mean)
        return out

    def _act_td(self, td: TensorDictBase) -> tuple[torch.Tensor, torch.Tensor]:
        obs = td.get("observation")
        obs_ndim = len(self.world_model.obs_shape)
        batch = obs.shape[: obs.ndim - obs_ndim]
        prev = td.get(MEAN_KEY, None)
        prev = None if prev is None else prev.reshape(-1, self.horizon, self.action_dim)
        task = td.get("task").reshape(-1) if self.world_model.multitask else None
        action, mean = self.act(obs.reshape(-1, *obs.shape[obs.ndim - obs_ndim :]), prev, task=task)
        return action.reshape(*batch, self.action_dim), mean.reshape(*batch, self.horizon, self.action_dim)

    # ---- tensor API ----
    @torch.no_grad()
    def act(
        self,
        obs: torch.Tensor,
        prev_mean: torch.Tensor | None = None,
        noise: PlannerNoise | None = None,
        explore: bool | None = None,
        task: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Plan for ``obs`` ``[B, *obs_shape]``; returns ``(action [B, A] in the env's units, plan mean [B, H, A]
        in [-1, 1])``.

        ``explore`` defaults to ``is_exploring()``; ``noise`` to fresh draws from the global RNG. A multitask world
        model plans each env for its own task (``task`` ids ``[B]``): its action mask (unused dimensions are 0)
        and its discount; envs of different tasks share one batched call.
        """
        explore = is_exploring() if explore is None else explore
        with eval_mode(self.world_model), autocast(obs.device, self.autocast_dtype):
            if not self.mpc:
                action, mean = self._policy_action(self.world_model.encode(obs, task), explore, task)
            else:
                batch = obs.shape[0]
                noise = PlannerNoise(self, batch, obs.device) if noise is None else noise
                if prev_mean is None:  # no previous plan: TD-MPC2's t0, the same as a zero primer
                    prev_mean = torch.zeros(batch, self.horizon, self.action_dim, device=obs.device)
                action, mean = self._plan_fn()(obs, prev_mean, *noise.tensors(), explore, task)
        return self.bounds.to_env(action), mean  # outside the compiled graph: a multiply-add, a clamp

    def _policy_action(
        self, z: torch.Tensor, explore: bool, task: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        action, loc = self.world_model.pi(z, task)[:2]
        mean = z.new_zeros(z.shape[0], self.horizon, self.action_dim)
        return (action if explore else loc), mean

    def warm_start(self, prev_mean: torch.Tensor | None, batch: int, like: torch.Tensor) -> torch.Tensor:
        """The initial mean ``[B, H, A]``: the previous plan shifted one step, zero at the end (and at t0)."""
        mean = like.new_zeros(batch, self.horizon, self.action_dim)
        if prev_mean is not None:
            mean[:, :-1] = prev_mean[:, 1:]
        return mean

    def _plan(self, *args) -> tuple[torch.Tensor, torch.Tensor]:
        """One MPPI call from its observations and all its draws (``_plan_with``'s arguments after the two
        functions): a pure function, the one ``compile_scope="call"`` compiles whole."""
        return self._plan_with(self._start, self._iterate, *args)

    def _plan_with(
        self,
        start: Callable,
        iterate: Callable,
        obs: torch.Tensor,
        prev_mean: torch.Tensor,
        prior_eps: torch.Tensor,
        candidate_eps: torch.Tensor,
        terminal_eps: torch.Tensor,
        heads: torch.Tensor,
        gumbel: torch.Tensor,
        explore_eps: torch.Tensor,
        explore: bool,
        task: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The call as a set-up (``start``) and ``iterations`` calls of one MPPI iteration (``iterate``): compiled,
        each is a graph of its own, the iteration's graph built once and reused (docs/performance.md, "Compiling")."""
        z_samples, mean, std, mask, *prior = start(obs, prev_mean, prior_eps, task)
        for i in range(self.iterations):
            mean, std, elite_actions, score = iterate(
                z_samples, mean, std, candidate_eps[:, i], terminal_eps[:, i], heads[i], mask, task, *prior
            )
        B = obs.shape[0]
        choice = (score.log() + gumbel).argmax(1)
        action = elite_actions[torch.arange(B, device=mean.device), choice, 0]
        if explore:
            action = action + std[:, 0] * explore_eps
        return action.clamp(-1, 1), mean

    def _start(
        self, obs: torch.Tensor, prev_mean: torch.Tensor, prior_eps: torch.Tensor, task: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | None, ...]:
        """Encode, roll the policy prior (once per call), repeat the latents for the samples, warm-start the mean:
        ``(z_samples, mean, std, mask, *prior)`` (``prior``: its actions, G, discount, alive and z_H, or nothing)."""
        z = self.world_model.encode(obs, task)
        B, N, P = z.shape[0], self.num_samples, self.num_pi_trajs
        z_samples = z.repeat_interleave(N - P, dim=0)  # [B*(N-P), L], row b*(N-P)+n is env b
        mask = None if task is None else self.world_model.tasks.mask(task).unsqueeze(1)  # [B, 1, A]
        mean = self.warm_start(prev_mean, B, z)
        std = torch.full_like(mean, self.max_std)
        if not P:
            return z_samples, mean, std, mask
        prior = self._policy_prior(z, prior_eps, task)
        return z_samples, mean, std, mask, *(prior[k] for k in _PRIOR_KEYS)

    def _iterate(
        self,
        z_samples: torch.Tensor,
        mean: torch.Tensor,
        std: torch.Tensor,
        candidate_eps: torch.Tensor,
        terminal_eps: torch.Tensor,
        heads: torch.Tensor,
        mask: torch.Tensor | None,
        task: torch.Tensor | None,
        *prior: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One MPPI iteration: sample around ``(mean, std)``, value every candidate, refit on the elites:
        ``(mean, std, elite actions, scores)``."""
        sampled = (mean.unsqueeze(1) + std.unsqueeze(1) * candidate_eps).clamp(-1, 1)
        if mask is not None:  # a task's unused action dimensions are 0 (TD-MPC2)
            sampled = sampled * mask.unsqueeze(1)
        prior_ret = dict(zip(_PRIOR_KEYS, prior, strict=True)) if prior else None
        value = self._value(z_samples, sampled, prior_ret, terminal_eps, heads, task)
        actions = sampled if prior_ret is None else torch.cat([prior_ret["actions"], sampled], 1)
        mean, std, elite_actions, score = self._part("_refit")(actions, value)
        if mask is not None:
            mean, std = mean * mask, std * mask
        return mean, std, elite_actions, score

    def _plan_fn(self) -> Callable:
        """``_plan``, or with ``compile_plan=True`` its compiled form (built on first use; kept out of pickles and
        state_dicts)."""
        if not self.compile_plan:
            self.__dict__.pop(PARTS_KEY, None)
            return self._plan
        if self.compile_scope == "step":
            if PARTS_KEY not in self.__dict__:
                device = next(self.world_model.parameters()).device
                self.__dict__[PARTS_KEY] = {
                    name: compile_or_eager(getattr(self, name), f"the planner ({label})", _COMPILE_HINT, device)
                    for name, label in _PARTS.items()
                }
            return self._plan
        self.__dict__.pop(PARTS_KEY, None)  # traced into the iteration's or the call's graph as plain methods
        fn = self.__dict__.get(COMPILED_KEY)
        if fn is None:
            device = next(self.world_model.parameters()).device
            whole = self.compile_scope == "call"
            fn = compile_or_eager(self._plan, "the planner", _COMPILE_HINT, device) if whole else CompiledPlan(self)
            self.__dict__[COMPILED_KEY] = fn
        return fn

    def _part(self, name: str) -> Callable:
        """Method ``name`` of ``_PARTS``, compiled on its own under ``compile_scope="step"`` (traced into the
        enclosing graph under the other scopes, eager without compiling)."""
        parts = self.__dict__.get(PARTS_KEY)
        return getattr(self, name) if parts is None else parts[name]

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.pop(COMPILED_KEY, None)
        state.pop(PARTS_KEY, None)
        return state

    # ---- imagined rollouts ----
    # A multitask model's rollouts carry ``task`` ids per row (``_rows``: each env's id repeated over its rows).
    def _step(
        self, z: torch.Tensor, a: torch.Tensor, task: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """One imagined transition: ``(next z, reward [.., 1], terminated [.., 1] or None)``."""
        wm = self.world_model
        reward = two_hot_inv(wm.reward_logits(z, a, task), wm.bins)
        z_next = wm.next(z, a, task)
        term = None
        if wm.episodic:  # seed head: termination of (z_t, a_t); official head: of the reached z_{t+1}
            logit = wm.termination_logit(z if wm.termination_uses_action else z_next, a, task)
            term = logit > 0  # sigmoid(logit) > 0.5
        return z_next, reward, term

    def _pi_sample(self, z: torch.Tensor, eps: torch.Tensor, task: torch.Tensor | None = None) -> torch.Tensor:
        """π's sampled action ``tanh(μ + σ·ε)`` with the given ε."""
        return self.world_model.pi_sample(z, eps, task)

    def _new_return(self, batch: int, like: torch.Tensor, task: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Accumulators of ``batch`` rollouts, with each row's discount γ (its task's for a multitask model)."""
        ones = like.new_ones(batch, 1)
        gamma = self.discount if task is None else self.world_model.tasks.discounts[task].unsqueeze(-1).to(like.dtype)
        return {"G": like.new_zeros(batch, 1), "alive": ones, "discount": ones.clone(), "gamma": gamma}

    def _advance(
        self,
        z: torch.Tensor,
        a: torch.Tensor,
        G: torch.Tensor,
        discount: torch.Tensor,
        alive: torch.Tensor,
        gamma: float | torch.Tensor,
        task: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One imagined transition folded into the return, ``G += γ^t (1 - term) r`` and then this transition's
        termination (TD-MPC2's order): ``(z', G, discount, alive)``."""
        z_next, reward, term = self._step(z, a, task)
        G = G + discount * alive * reward
        discount = discount * gamma
        if term is not None:
            alive = alive * (~term).to(alive.dtype)
        return z_next, G, discount, alive

    def _advance_pi(
        self,
        z: torch.Tensor,
        eps: torch.Tensor,
        G: torch.Tensor,
        discount: torch.Tensor,
        alive: torch.Tensor,
        gamma: float | torch.Tensor,
        task: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """``_advance`` with π's sampled action ``tanh(μ + σ·ε)``: ``(a, z', G, discount, alive)``."""
        a = self._pi_sample(z, eps, task)
        return (a, *self._advance(z, a, G, discount, alive, gamma, task))

    def _policy_prior(
        self, z: torch.Tensor, eps: torch.Tensor, task: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Roll ``num_pi_trajs`` sampled-π trajectories per env (``eps`` ``[B, H, P, A]``): their actions
        ``[B, P, H, A]`` and partial returns."""
        B, P, A = z.shape[0], self.num_pi_trajs, self.action_dim
        zp, rows = z.repeat_interleave(P, dim=0), _rows(task, P)
        ret = self._new_return(B * P, z, rows)
        advance_pi, state = self._part("_advance_pi"), (ret["G"], ret["discount"], ret["alive"])
        actions = []
        for t in range(self.horizon):
            a, zp, *state = advance_pi(zp, eps[:, t].reshape(B * P, A), *state, ret["gamma"], rows)
            actions.append(a)
        G, discount, alive = state
        actions = torch.stack(actions, 1).view(B, P, self.horizon, A)
        return {"actions": actions, "G": G, "discount": discount, "alive": alive, "z": zp}

    def _rollout(
        self, z: torch.Tensor, actions: torch.Tensor, task: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Roll ``actions`` ``[M, H, A]`` from ``z`` ``[M, L]``: ``G``, ``discount`` (γ^H), ``alive``, ``z`` (z_H)."""
        ret = self._new_return(z.shape[0], z, task)
        advance, G, discount, alive = self._part("_advance"), ret["G"], ret["discount"], ret["alive"]
        for t in range(actions.shape[1]):
            z, G, discount, alive = advance(z, actions[:, t], G, discount, alive, ret["gamma"], task)
        return {"G": G, "discount": discount, "alive": alive, "z": z}

    def _bootstrap(
        self,
        ret: dict[str, torch.Tensor],
        batch: int,
        eps: torch.Tensor,
        heads: torch.Tensor,
        task: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Values ``[B, N]``: ``G + γ^H (1 - term) avg2 Q(z_H, π(z_H))``, NaN → 0 (rows of ``ret`` are env-major;
        ``task``: the envs' ids ``[B]``)."""
        z_H = ret["z"]
        rows = _rows(task, z_H.shape[0] // batch)
        eps = eps[:, : z_H.shape[0] // batch].reshape(z_H.shape[0], self.action_dim)
        value = self._part("_terminal_value")(z_H, ret["G"], ret["discount"], ret["alive"], eps, heads, rows)
        return value.view(batch, -1)

    def _terminal_value(
        self,
        z_H: torch.Tensor,
        G: torch.Tensor,
        discount: torch.Tensor,
        alive: torch.Tensor,
        eps: torch.Tensor,
        heads: torch.Tensor,
        task: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Per row ``G + γ^H (1 - term) avg2 Q(z_H, π(z_H))`` (π sampled with ``eps``), NaN → 0: ``[M, 1]``."""
        wm = self.world_model
        a_H = self._pi_sample(z_H, eps, task)
        q = two_hot_inv(wm.q_logits(z_H, a_H, heads=heads, task=task), wm.bins).mean(0)
        return (G + discount * alive * q).nan_to_num(0)

    def estimate_value(
        self,
        z: torch.Tensor,
        actions: torch.Tensor,
        noise: PlannerNoise | None = None,
        i: int = 0,
        task: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """TD-MPC2's ``_estimate_value`` for latents ``[B, L]`` and actions ``[B, N, H, A]`` (N ≤ num_samples).

        The planner itself splits this between the policy prior (rolled once per call) and the sampled candidates.
        """
        B, N, H, A = actions.shape
        noise = PlannerNoise(self, B, z.device, z.dtype) if noise is None else noise
        with torch.no_grad(), eval_mode(self.world_model):
            ret = self._rollout(z.repeat_interleave(N, dim=0), actions.reshape(B * N, H, A), _rows(task, N))
            return self._bootstrap(ret, B, noise.terminal(i), noise.heads(i), task)

    def _value(
        self,
        z: torch.Tensor,
        sampled: torch.Tensor,
        prior: dict[str, torch.Tensor] | None,
        eps: torch.Tensor,
        heads: torch.Tensor,
        task: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Values ``[B, N]`` of the prior (slots ``:P``, already rolled) and the sampled ``[B, N-P, H, A]`` ones."""
        B, M, H, A = sampled.shape
        ret = self._rollout(z, sampled.reshape(B * M, H, A), _rows(task, M))
        if prior is None:
            return self._bootstrap(ret, B, eps, heads, task)
        P = self.num_pi_trajs
        merged = {
            k: torch.cat([prior[k].view(B, P, -1), ret[k].view(B, M, -1)], 1).view(B * (P + M), -1)
            for k in ("G", "discount", "alive", "z")
        }
        return self._bootstrap(merged, B, eps, heads, task)

    # ---- MPPI update ----
    def _refit(
        self, actions: torch.Tensor, value: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``_elites`` then ``_update``: ``(mean, std, elite actions, scores)``."""
        elite_actions, score = self._elites(actions, value)
        return (*self._update(elite_actions, score), elite_actions, score)

    def _elites(self, actions: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Top ``num_elites`` actions ``[B, K, H, A]`` and their scores ``softmax(τ(v - max v))`` ``[B, K]``."""
        elite_value, idx = value.topk(self.num_elites, dim=1)
        B, _, H, A = actions.shape
        elite_actions = actions.gather(1, idx.view(B, -1, 1, 1).expand(-1, -1, H, A))
        score = torch.softmax(self.temperature * (elite_value - elite_value.max(1, keepdim=True).values), dim=1)
        return elite_actions, score

    def _update(self, elite_actions: torch.Tensor, score: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Score-weighted mean and std ``[B, H, A]`` of the elites (std clamped to [min_std, max_std])."""
        w = score.view(*score.shape, 1, 1)
        denom = score.sum(1).view(-1, 1, 1) + 1e-9
        mean = (w * elite_actions).sum(1) / denom
        var = (w * (elite_actions - mean.unsqueeze(1)).pow(2)).sum(1) / denom
        return mean, var.sqrt().clamp(self.min_std, self.max_std)
