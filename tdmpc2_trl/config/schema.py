"""The typed configuration: one dataclass per group, every default and every allowed range written once, here.

Hydra composes ``configs/config.yaml`` on top of ``TrainConfig`` (registered in its ``ConfigStore`` by
``tdmpc2_trl.config.compose``), so a value of the wrong type fails while composing; ``check`` then tests ranges and
choices (``field`` metadata: ``ge``, ``gt``, ``le``, ``choices``) and the rules across keys. Both errors are one line
that names the key and the allowed values. The model presets (``configs/model/*.yaml``) fill ``ModelConfig``, whose
defaults are the project's default network (preset ``8m-h10``).
"""

from __future__ import annotations

import dataclasses
import re
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints


class ConfigError(ValueError):
    """A user-facing configuration mistake; recipes print its message as a one-line error."""


# planner.compile_scope's values (the planner resolves "auto" from its horizon: planning/planner.py)
COMPILE_SCOPES = ("auto", "step", "iteration", "call")


def _f(default: Any, **rules: Any) -> Any:
    """A field with its default and its allowed values (``ge``, ``gt``, ``le``, ``choices``)."""
    return field(default=default, metadata=rules)


OBS_TYPES = ("state", "rgb")
PRECISIONS = ("auto", "fp32", "bf16")
LOGGER_BACKENDS = ("csv", "wandb", "tensorboard", "mlflow")
BACKENDS = ("local", "ray")


OLD_TERMINATION_NAMES = {"seed": "latent_action", "official": "latent"}


@dataclass
class ModelConfig:
    """Sizes and layer choices of the TD-MPC2 networks, and the planning horizon (= training slice length)."""

    name: str = "8m-h10"
    latent_dim: int = _f(512, ge=1)
    enc_dim: int = _f(512, ge=1)
    num_enc_layers: int = _f(4, ge=2)  # Linear layers in the encoder, its output layer included (TD-MPC2's meaning)
    encoder_final: str = _f("simnorm", choices=("simnorm", "ln_simnorm"))  # ln_simnorm: Linear → LayerNorm → SimNorm
    mlp_dim: int = _f(512, ge=1)
    num_mlp_layers: int = _f(3, ge=1)  # hidden blocks of dynamics, reward, Q heads and policy
    num_q: int = _f(5, ge=2)  # TD-MPC2 averages 2 randomly chosen heads
    q_dropout: float = _f(0.01, ge=0.0, le=0.99)
    simnorm_dim: int = _f(8, ge=1)
    num_bins: int = _f(101, ge=2)  # two-hot regression bins
    vmin: float = -10.0
    vmax: float = 10.0
    # latent_action: a ReLU MLP on (z, a), always built (the 8m-h10 networks); latent: a normed MLP on z, built for
    # episodic tasks only (the official presets)
    termination: str = _f("latent_action", choices=("latent_action", "latent"))
    policy_head: str = _f("split", choices=("split", "joint"))  # split: mean + log-std heads; joint: one Linear(·, 2A)
    log_std_min: float = -10.0
    log_std_max: float = 2.0
    horizon: int = _f(10, ge=1)  # MPPI planning horizon = training slice length
    task_dim: int = _f(96, ge=1)  # multitask only: the learned task embedding's size (TD-MPC2: 96)
    num_channels: int = _f(32, ge=1)  # conv channels of the pixel encoder (obs=rgb; TD-MPC2: 32)

    def check(self) -> None:
        if self.latent_dim % self.simnorm_dim:
            raise ConfigError(
                f"model.latent_dim={self.latent_dim} must be a multiple of model.simnorm_dim={self.simnorm_dim}"
            )
        _ordered("model.vmin", self.vmin, "model.vmax", self.vmax)
        _ordered("model.log_std_min", self.log_std_min, "model.log_std_max", self.log_std_max)

    def validate(self) -> None:
        """``ConfigError`` (one line) unless every setting is in range (what ``WorldModel`` checks first)."""
        check(self, "model.")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        """A checked ``ModelConfig`` from plain values (e.g. a checkpoint's ``config["model"]``)."""
        values = dict(values)
        # checkpoints written before the termination head's choices were renamed (seed → latent_action,
        # official → latent) still load
        values["termination"] = OLD_TERMINATION_NAMES.get(values.get("termination"), values.get("termination"))
        if values["termination"] is None:
            del values["termination"]
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(f"unknown model setting(s) {unknown}; known: {field_names(cls)}")
        out = cls(**values)
        out.validate()
        return out


@dataclass
class PlannerConfig:
    """TD-MPC2's MPPI (``TDMPC2Planner``)."""

    mpc: bool = True  # false: act with the policy prior only
    num_samples: int = _f(512, ge=2)
    num_pi_trajs: int = _f(24, ge=0)
    num_elites: int = _f(64, ge=1)
    iterations: int = _f(6, ge=1)
    # added to iterations; null: 2 for an official preset at action dim >= 20 (TD-MPC2), else 0 (run/resolve.py)
    extra_iterations: int | None = _f(None, ge=0)
    temperature: float = _f(0.5, gt=0.0)
    min_std: float = _f(0.05, gt=0.0)
    max_std: float = _f(2.0, gt=0.0)
    compile: bool = True  # torch.compile the planner (at its first planned step; docs/performance.md, "Compiling")
    # step: each imagined step, the terminal value and the refit compiled on their own, the loops in Python;
    # iteration: the set-up and one MPPI iteration; call: the whole call as one graph; auto: iteration up to a
    # horizon of 5, step beyond (planning/planner.py; docs/performance.md, "Compiling")
    compile_scope: str = _f("auto", choices=COMPILE_SCOPES)

    def check(self) -> None:
        if self.num_pi_trajs >= self.num_samples:
            raise ConfigError(
                f"planner.num_pi_trajs={self.num_pi_trajs} must be below "
                f"planner.num_samples={self.num_samples} (some candidates must be sampled)"
            )
        if self.num_elites > self.num_samples:
            raise ConfigError(
                f"planner.num_elites={self.num_elites} must be at most planner.num_samples={self.num_samples}"
            )
        _ordered("planner.min_std", self.min_std, "planner.max_std", self.max_std)


@dataclass
class LossConfig:
    """``TDMPC2Loss``: discount, loss weights, target-Q and RunningScale rate."""

    discount: float | None = _f(None, gt=0.0, le=1.0)  # null: TD-MPC2's rule from the episode length
    rho: float = _f(0.5, gt=0.0, le=1.0)  # weight ρ^t of step t of the slice
    consistency_coef: float = _f(20.0, ge=0.0)
    reward_coef: float = _f(0.1, ge=0.0)
    value_coef: float = _f(0.1, ge=0.0)
    termination_coef: float = _f(1.0, ge=0.0)
    entropy_coef: float = _f(1e-4, ge=0.0)
    tau: float = _f(0.01, gt=0.0, le=1.0)  # target-Q soft update and RunningScale rate
    aug_pad: int = _f(3, ge=0)  # obs=rgb: random shift by up to ±aug_pad pixels (TD-MPC2: 3, DrQ-v2: 4)


@dataclass
class OptimConfig:
    """Both Adams and the update schedule."""

    lr: float = _f(3e-4, gt=0.0)
    enc_lr_scale: float | None = _f(None, gt=0.0)  # null: 0.3 for the official presets (TD-MPC2), else 1.0
    grad_clip_norm: float = _f(20.0, gt=0.0)
    utd_ratio: float = _f(1.0, gt=0.0)  # updates per env step after the seed steps
    compile: bool = True  # torch.compile the world-model and policy losses (forward + backward), minutes at first


@dataclass
class BufferConfig:
    """The replay buffer (``data.make_replay_buffer``)."""

    batch_size: int = _f(256, ge=1)  # slices per update
    size: int | None = _f(None, ge=1)  # null: min(1_000_000, steps)
    storage: str = _f("memory", choices=("memory", "memmap"))  # memmap: memory-mapped in the run directory
    # true: slices may also start in an episode's last horizon-1 steps, padded and masked past its end, so that
    # Q(encode(obs)) is trained on every state; false: TD-MPC2's sampling; null: true for episodic tasks (they
    # terminate) and false otherwise (results/README.md, "Hopper-v5: the Q function did not see terminations")
    episode_end_slices: bool | None = None


@dataclass
class CollectorConfig:
    """Data collection (README "Scaling up"): each worker steps ``num_envs`` envs."""

    workers: int = _f(1, ge=1)  # 1: in the training process; K > 1: K processes (or Ray actors)
    backend: str = _f("local", choices=BACKENDS)  # ray: TorchRL's RayCollector (pip install -e .[ray])
    ray_address: str | None = None  # backend=ray: host:port or auto of a running cluster (null: a new one)
    seed_steps: int | None = _f(None, ge=0)  # random steps first; null: max(1000, 5 * episode length)


@dataclass
class LoggerConfig:
    """The run's own ``eval.csv`` and ``train.csv`` always; ``backend`` adds one of TorchRL's loggers on top."""

    # csv: the run's CSV tables only; wandb | tensorboard | mlflow: also that TorchRL logger (its pip extra)
    backend: str = _f("csv", choices=LOGGER_BACKENDS)
    wandb_mode: str = _f("offline", choices=("offline", "online"))  # online needs `wandb login`
    project: str = "tdmpc2-trl"
    entity: str | None = None


@dataclass
class EvalConfig:
    """Periodic evaluation: deterministic episodes, one batched rollout."""

    freq: int = _f(5000, ge=0)  # env steps between evaluations (0: only the final one)
    episodes: int = _f(5, ge=1)
    save_video: bool = False  # mp4 of the first episode of every evaluation: <run dir>/videos/ (and wandb)
    video_size: int = _f(256, ge=16)  # frame size (DMControl renders; gymnasium envs use their own size)


@dataclass
class RunConfig:
    """What every training run has (online ``TrainConfig`` and offline ``OfflineConfig``): seed, device, threads,
    checkpoints, resume, and the network, planner, loss, optimiser, buffer, logger and evaluation groups."""

    seed: int = _f(1, ge=0)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = _f("auto", choices=PRECISIONS)  # auto: bf16 matmuls where they are faster
    threads: int | None = _f(None, ge=1)  # CPU threads for torch (null: torch's default)
    checkpoint_freq: int = _f(10_000, ge=0)  # steps between checkpoints (also at the end and on a signal)
    resume: str | None = None  # a run directory or checkpoint file to continue from
    progress: bool = True  # the progress bar (phase, counter, time left); false: the phase and evaluation lines only
    model: ModelConfig = field(default_factory=ModelConfig)
    planner: PlannerConfig = field(default_factory=PlannerConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    buffer: BufferConfig = field(default_factory=BufferConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def check(self) -> None:
        _check_device(self.device)


@dataclass
class TrainConfig(RunConfig):
    """``recipes/train.py``'s whole configuration (``configs/config.yaml`` picks the model preset)."""

    task: str = "Pendulum-v1"  # DMControl `domain-task`, a gymnasium id, or `module:EnvId` (your own env)
    # multitask: one agent for these tasks (README "Multitask"): num_envs envs of each, all planned in one batched
    # call; `task` is then unused. Empty: the single task `task`.
    tasks: list[str] = field(default_factory=list)
    # start from this checkpoint's networks: a multitask one (or run dir) with tasks=[...], a single-task file
    # without; official TD-MPC2 files too (docs/official-checkpoints-and-deployment.md)
    init_from: str | None = None
    obs: str = _f("state", choices=OBS_TYPES)  # rgb: DMControl pixels, 3 stacked 64x64 frames
    steps: int = _f(10_000, ge=1)  # env steps in total (over all envs)
    num_envs: int = _f(1, ge=1)  # envs planned for together in one batched planner call (per task: multitask)
    collector: CollectorConfig = field(default_factory=CollectorConfig)
    plot: bool = True  # at the end: learning_curve.png (and .md) of eval.csv in the run directory

    def check(self) -> None:
        super().check()
        if len(set(self.tasks)) != len(self.tasks):
            raise ConfigError(f"tasks={self.tasks}: a task appears twice")
        if self.tasks and self.obs != "state":
            raise ConfigError(f"tasks=[...] takes state observations only (obs={self.obs})")
        seed_steps = self.collector.seed_steps
        if seed_steps is not None and seed_steps < self.model.horizon:
            raise ConfigError(
                f"collector.seed_steps={seed_steps}: the first update needs a slice of "
                f"model.horizon={self.model.horizon} stored steps; null takes TD-MPC2's "
                f"max(1000, 5 × episode length)"
            )
        if self.init_from and not Path(self.init_from).exists():
            raise ConfigError(f"init_from={self.init_from}: no such file or directory")
        if self.init_from and not self.tasks and not Path(self.init_from).is_file():
            raise ConfigError(
                "init_from=DIR starts a multitask run: give tasks=[...] (a single task: tasks=[name]); "
                "a single-task run starts from a single-task checkpoint file"
            )
        if self.tasks:
            _no_discount(self.loss)
            if self.eval.save_video:
                raise ConfigError("eval.save_video=true records single-task runs only (not tasks=[...]) for now")


@dataclass
class OfflineConfig(RunConfig):
    """``recipes/train_offline.py``: updates on a dataset's slices (``tdmpc2_trl.data.offline_dataset``), evaluating
    every task online. ``steps``, ``eval.freq`` and ``checkpoint_freq`` count updates; ``eval.episodes`` is per task."""

    dataset: str = "???"  # a dataset directory (python -m tdmpc2_trl.data.offline_dataset export/import-official)
    tasks: list[str] = field(default_factory=list)  # the dataset's tasks in its order (checked); empty: the dataset's
    steps: int = _f(100_000, ge=1)  # updates

    def check(self) -> None:
        super().check()
        _no_discount(self.loss)


def _no_discount(loss: LossConfig) -> None:
    if loss.discount is not None:
        raise ConfigError(
            f"loss.discount={loss.discount}: a multitask agent discounts each task with its own "
            f"(TD-MPC2's rule from its episode length); leave loss.discount null"
        )


@dataclass
class EvalAppConfig:
    """``recipes/eval.py``: a checkpoint's planner on fresh episodes; ``null`` keeps the trained setting."""

    checkpoint: str = "???"  # a checkpoint file or a run directory (its newest readable checkpoint), or an official
    # TD-MPC2 checkpoint (docs/official-checkpoints-and-deployment.md)
    # the task to evaluate: a single-task official checkpoint's (required: the file does not name it), or one task
    # of a multitask checkpoint (null: all of them)
    task: str | None = None
    official_tasks: list[str] = field(default_factory=list)  # an official multitask file's tasks, in task-id order
    # (empty: mt30 or mt80, by its number of tasks)
    episodes: int = _f(10, ge=1)
    seed: int = _f(0, ge=0)
    device: str = "auto"
    mpc: bool | None = None  # false: act with the policy prior only
    precision: str | None = _f(None, choices=PRECISIONS)
    compile: bool | None = None
    save_video: bool = False  # mp4 of the first episode: <run dir>/videos/checkpoint_step_*.mp4
    video_size: int = _f(256, ge=16)

    def check(self) -> None:
        _check_device(self.device)


# Keys of the flat layout used before the groups, and where they live now (for the "unknown key" error).
MOVED = {
    "horizon": "model.horizon",
    "discount": "loss.discount",
    "rho": "loss.rho",
    "tau": "loss.tau",
    "aug_pad": "loss.aug_pad",
    "consistency_coef": "loss.consistency_coef",
    "reward_coef": "loss.reward_coef",
    "value_coef": "loss.value_coef",
    "termination_coef": "loss.termination_coef",
    "entropy_coef": "loss.entropy_coef",
    "lr": "optim.lr",
    "enc_lr_scale": "optim.enc_lr_scale",
    "grad_clip_norm": "optim.grad_clip_norm",
    "utd_ratio": "optim.utd_ratio",
    "compile_update": "optim.compile",
    "batch_size": "buffer.batch_size",
    "buffer_size": "buffer.size",
    "buffer_storage": "buffer.storage",
    "seed_steps": "collector.seed_steps",
    "eval_freq": "eval.freq",
    "eval_episodes": "eval.episodes",
    "save_video": "eval.save_video",
    "video_size": "eval.video_size",
    "logger.wandb": "logger.backend",  # logger.wandb=true is now logger.backend=wandb
}


def check(cfg: Any, prefix: str = "") -> None:
    """Every field's range and choices, then each group's own rules (``check()``), recursively."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            check(value, f"{prefix}{f.name}.")
        elif value is not None and not _allowed(value, f.metadata):
            raise ConfigError(f"{prefix}{f.name}={value!r}: must be {describe(type(cfg), f.name)}")
    if hasattr(cfg, "check"):
        cfg.check()


def describe(cls: type, name: str) -> str:
    """The allowed values of field ``name`` of dataclass ``cls``, in words (e.g. "an integer >= 1 or null")."""
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    hint = get_type_hints(cls)[name]
    optional = get_origin(hint) in (Union, types.UnionType) and type(None) in get_args(hint)
    base = next(a for a in get_args(hint) if a is not type(None)) if optional else hint
    rules = f.metadata
    if "choices" in rules:
        text = "one of " + ", ".join(rules["choices"])
    else:
        text = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(base, str(base))
        bounds = [f"{op} {rules[key]}" for key, op in (("ge", ">="), ("gt", ">"), ("le", "<=")) if key in rules]
        text += " " + " and ".join(bounds) if bounds else ""
    return text + (" or null" if optional else "")


def field_names(cls: type, prefix: str = "") -> list[str]:
    """Every key of ``cls``, groups expanded (``planner.num_samples``, …); a subclass's own keys first."""
    names, own = [], set(cls.__dict__.get("__annotations__", {}))
    fields = dataclasses.fields(cls)
    for f in [f for f in fields if f.name in own] + [f for f in fields if f.name not in own]:
        kind = get_type_hints(cls)[f.name]
        names += field_names(kind, f"{prefix}{f.name}.") if dataclasses.is_dataclass(kind) else [prefix + f.name]
    return names


def _allowed(value: Any, rules: dict[str, Any]) -> bool:
    if "choices" in rules and value not in rules["choices"]:
        return False
    return (
        ("ge" not in rules or value >= rules["ge"])
        and ("gt" not in rules or value > rules["gt"])
        and ("le" not in rules or value <= rules["le"])
    )


def _check_device(device: str) -> None:
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", device):
        raise ConfigError(f"device={device!r}: must be auto, cpu, cuda, cuda:N or mps")


def _ordered(low_key: str, low: float, high_key: str, high: float) -> None:
    if not low < high:
        raise ConfigError(f"{low_key}={low} must be below {high_key}={high}")
