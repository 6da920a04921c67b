"""Environments from one ``task=`` name: DMControl ``domain-task`` names or gymnasium ids, as TorchRL envs.

Every env the agent sees has a float ``observation`` vector, actions in [-1, 1] (``ActionScaling`` maps them to
the env's bounds) and the episode bookkeeping keys ``step_count``, ``is_init`` and ``episode_reward``
(``StepCounter``, ``InitTracker``, ``RewardSum``). DMControl tasks use action repeat 2, as in TD-MPC2: a
1000-step episode is 500 agent decisions, and each decision's reward is the sum over the repeated steps.

``obs="rgb"`` (DMControl only) replaces the state vector by TD-MPC2's pixels: a 64×64 render of the task camera
after each action-repeated step (TorchRL's ``PixelRenderTransform``, ``ToTensorImage``), the last 3 frames stacked on
channels (``CatFrames``, the first frame repeated after a reset): ``observation`` uint8 ``[9, 64, 64]``.
Rendering is headless (``render.configure_gl``: EGL, else OSMesa); state-based envs render only for videos.
dm_control 1.0.50 needs ``mujoco<4``.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torchrl.envs import (
    ActionScaling,
    CatFrames,
    CatTensors,
    Compose,
    DoubleToFloat,
    EnvBase,
    ExcludeTransform,
    FrameSkipTransform,
    InitTracker,
    RewardSum,
    SerialEnv,
    StepCounter,
    ToTensorImage,
    Transform,
    TransformedEnv,
)
from torchrl.record.recorder import PixelRenderTransform

from tdmpc2_trl.config.schema import OBS_TYPES, ConfigError
from tdmpc2_trl.envs.render import RenderableDMControlEnv, configure_gl
from tdmpc2_trl.networks.pixels import FRAME_STACK, PIXEL_SIZE, pixel_obs_shape

if TYPE_CHECKING:
    from gymnasium.envs.registration import EnvSpec

__all__ = ["KNOWN_DMC_TASKS", "OBS_TYPES", "EnvFactory", "TaskInfo", "make_env", "task_info"]  # noqa: F822 (module __getattr__)

DMC_ACTION_REPEAT = 2
DMC_PHYSICS_STEPS = 1000  # control steps of every DMControl suite episode, before action repeat
DMC_DOMAIN_ALIASES = {"cup": "ball_in_cup", "pointmass": "point_mass"}  # TD-MPC2's short domain names

# Episodic = an episode can end by termination, not only by the time limit. TD-MPC2 then learns a termination
# head and plans with it. Keys are gymnasium ids without their version suffix. DMControl tasks count as never
# terminating, as in TD-MPC2 (a termination the env does report still stops bootstrapping in the loss).
GYM_EPISODIC = frozenset(
    {
        "Hopper",
        "Walker2d",
        "Ant",
        "Humanoid",
        "InvertedPendulum",
        "InvertedDoublePendulum",  # unhealthy / fallen
        "MountainCarContinuous",
        "LunarLanderContinuous",
        "BipedalWalker",
        "BipedalWalkerHardcore",  # goal / crash
    }
)
GYM_CONTINUING = frozenset({"Pendulum", "HalfCheetah", "Swimmer", "Reacher", "Pusher", "HumanoidStandup"})
# An id in neither table is treated as episodic: a termination head on a task that never terminates only learns
# "never" (a little wasted compute), while ignoring real terminations would mislead the planner.
GYM_DEFAULT_EPISODIC = True
GYM_DEFAULT_EPISODE_STEPS = 1000  # for gymnasium ids registered without max_episode_steps (StepCounter truncates)


@dataclass(frozen=True)
class TaskInfo:
    """What the recipe needs to know about a task before building anything."""

    name: str  # the task as given
    family: str  # "dmc" | "gym"
    episode_length: int  # agent decisions per episode, after action repeat (TD-MPC2's discount reads it)
    episodic: bool  # episodes can terminate before the time limit
    obs_dim: int  # size of the state vector (obs="rgb": of the state the pixels replace)
    action_dim: int
    action_repeat: int = 1
    obs: str = "state"  # "state" | "rgb"

    @property
    def obs_shape(self) -> tuple[int, ...]:
        """The agent's observation shape: ``(obs_dim,)``, or ``(9, 64, 64)`` for stacked RGB frames."""
        return (self.obs_dim,) if self.obs == "state" else pixel_obs_shape()


# ---------------------------------------------------------------- task names


def _import_dmc_suite():
    """dm_control's suite module; its import probes GLFW, which warns on a headless machine (harmless here).

    The GL backend is chosen first (``configure_gl``): dm_control reads ``MUJOCO_GL`` once, when it is imported.
    """
    configure_gl()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*DISPLAY environment variable is missing")
        from dm_control import suite
    return suite


@functools.cache
def _dmc_tasks() -> tuple[str, ...]:
    return tuple(sorted(f"{domain}-{name}" for domain, name in _import_dmc_suite().ALL_TASKS))


def __getattr__(name: str):
    # KNOWN_DMC_TASKS is computed on first use: listing the suite imports dm_control and MuJoCo
    if name == "KNOWN_DMC_TASKS":
        return _dmc_tasks()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _split_dmc(task: str) -> tuple[str, str] | None:
    """``"cartpole-swingup"`` → ``("cartpole", "swingup")``; ``None`` if the name is not a DMControl task.

    Accepts TD-MPC2's spellings: ``cup-catch``, ``pointmass-easy``, dashes inside the task (``finger-turn-hard``).
    """
    if not re.fullmatch(r"[a-z0-9_]+-[a-z0-9_-]+", task):
        return None
    domain, name = task.split("-", 1)
    domain = DMC_DOMAIN_ALIASES.get(domain, domain)
    name = name.replace("-", "_")
    return (domain, name) if f"{domain}-{name}" in _dmc_tasks() else None


def _unknown_task(task: str) -> ConfigError:
    close = difflib.get_close_matches(task, _dmc_tasks(), n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return ConfigError(
        f"unknown task {task!r}{hint}: use a DMControl task ({', '.join(_dmc_tasks())}) or any registered "
        f"gymnasium id with continuous actions (e.g. Pendulum-v1, Hopper-v5, HalfCheetah-v5)"
    )


def _import_task_module(module: str, env_id: str) -> None:
    """Import the module of ``module:EnvId`` (which registers the env); ``ConfigError`` naming the module and its
    import error. Anything the module raises counts: a syntax error or a failing import inside it as well."""
    try:
        importlib.import_module(module)
    except Exception as err:
        first = str(err).splitlines()[0] if str(err) else ""
        # the module itself not found (not an import inside it): the usual cause is a folder missing from the path
        missing = isinstance(err, ModuleNotFoundError) and f"{module}.".startswith(f"{err.name}.")
        raise ConfigError(
            f"task '{module}:{env_id}': cannot import module {module!r} ({type(err).__name__}"
            f"{': ' + first if first else ''})"
            f"{'; put its folder on PYTHONPATH' if missing else ''}"
        ) from None


def _gym_spec(task: str) -> EnvSpec:
    """The gymnasium registry entry of ``task``; ``ConfigError`` if it is not registered.

    ``module:EnvId`` (gymnasium's own syntax) imports ``module`` first, so a user's env can register itself.
    """
    import gymnasium as gym

    if ":" in task:
        module, task = task.split(":", 1)
        _import_task_module(module, task)
    try:
        return gym.spec(task)
    except Exception:  # gymnasium raises NameNotFound / VersionNotFound / NamespaceNotFound / Error
        raise _unknown_task(task) from None


def _gym_episodic(task: str) -> bool:
    base = task.split("/")[-1].split("-v")[0]
    if base in GYM_EPISODIC:
        return True
    if base in GYM_CONTINUING:
        return False
    return GYM_DEFAULT_EPISODIC


# ---------------------------------------------------------------- single envs


def _raw_dmc_env(domain: str, name: str) -> EnvBase:
    _import_dmc_suite()  # GL backend and quiet GLFW probe before torchrl imports dm_control
    return RenderableDMControlEnv(domain, name)


def _raw_gym_env(task: str, render: bool = False) -> EnvBase:
    from torchrl.envs import GymEnv

    _gym_spec(task)
    kwargs = {}
    if render:  # frames for videos: gymnasium's own renderer (MuJoCo tasks use MUJOCO_GL too)
        configure_gl()
        kwargs["render_mode"] = "rgb_array"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # gymnasium's notices for older versions of an id
            return GymEnv(task, **kwargs)
    except ImportError as err:  # e.g. box2d or mujoco missing (gymnasium's DependencyNotInstalled is one)
        raise ConfigError(f"task {task!r} needs a package that is not installed: {err}") from None


def _check_continuous(task: str, env: EnvBase) -> None:
    spec = env.action_spec
    if not spec.dtype.is_floating_point:
        raise ConfigError(f"task {task!r} has discrete actions; TD-MPC2 needs continuous (Box) actions")
    space = getattr(spec, "space", None)
    low, high = getattr(space, "low", None), getattr(space, "high", None)
    if low is None or not (torch.isfinite(low).all() and torch.isfinite(high).all()):
        raise ConfigError(f"task {task!r} has unbounded actions; TD-MPC2 needs a bounded action range")


def _observation_transforms(task: str, env: EnvBase) -> list[Transform]:
    """Concatenate a dict of vector observations into ``observation`` (DMControl; gymnasium Dict spaces)."""
    keys = [k for k, spec in env.observation_spec.items(True, True) if k != "pixels"]
    if any(len(env.observation_spec[k].shape) != 1 for k in keys):
        raise ConfigError(f"task {task!r} has non-vector observations; tdmpc2-trl supports state vectors only")
    if keys == ["observation"]:
        return []
    return [CatTensors(keys, "observation", del_keys=True)]


def _check_obs(task: str, obs: str) -> None:
    if obs not in OBS_TYPES:
        raise ConfigError(f"obs={obs!r} must be one of {', '.join(OBS_TYPES)}")
    if obs == "rgb" and _split_dmc(task) is None:
        raise ConfigError(f"obs=rgb needs a DMControl task (e.g. cartpole-swingup), got {task!r}")


def _pixel_transforms(env: EnvBase) -> list[Transform]:
    """TD-MPC2's pixels (after action repeat): render, HWC → CHW uint8, drop the state, stack the last 3 frames."""
    state_keys = [k for k in env.observation_spec.keys(True, True) if k != "observation"]
    return [
        PixelRenderTransform(out_keys=["pixels"], height=PIXEL_SIZE, width=PIXEL_SIZE),
        ToTensorImage(from_int=False, dtype=torch.uint8, in_keys=["pixels"], out_keys=["observation"]),
        ExcludeTransform(*state_keys, "pixels"),
        CatFrames(N=FRAME_STACK, dim=-3, in_keys=["observation"]),
    ]


def _single_env(task: str, seed: int | None = None, obs: str = "state", render: bool = False) -> TransformedEnv:
    """One env with a float ``observation`` vector (or stacked uint8 frames), actions in [-1, 1] and (DMControl)
    action repeat. ``render=True`` lets a gymnasium env render frames for videos (DMControl envs always can).

    Order matters: ``FrameSkipTransform`` replays the action through the transforms *before* it, so
    ``ActionScaling`` sits after it (an action is rescaled once, then repeated) and so do the pixel transforms
    (one render per agent step).
    """
    _check_obs(task, obs)
    dmc = _split_dmc(task)
    env = _raw_dmc_env(*dmc) if dmc is not None else _raw_gym_env(task, render)
    try:
        _check_continuous(task, env)
        transforms = (_observation_transforms(task, env) if obs == "state" else []) + [DoubleToFloat()]
    except ConfigError:
        env.close()
        raise
    if dmc is not None:
        transforms.append(FrameSkipTransform(DMC_ACTION_REPEAT))
    transforms.append(ActionScaling())
    if obs == "rgb":
        transforms += _pixel_transforms(env)
    env = TransformedEnv(env, Compose(*transforms))
    if seed is not None:
        env.set_seed(seed)
    return env


# ---------------------------------------------------------------- public API


@functools.cache
def task_info(task: str, obs: str = "state") -> TaskInfo:
    """Episode length, episodic flag and sizes of a task (builds one state-based env once to read its specs)."""
    if obs != "state":
        info = task_info(task)  # unknown names fail here first
        _check_obs(task, obs)
        return dataclasses.replace(info, obs=obs)
    dmc = _split_dmc(task)
    env = _single_env(task)
    try:
        obs_dim = int(env.observation_spec["observation"].shape[-1])
        action_dim = int(env.action_spec.shape[-1])
    finally:
        env.close()
    if dmc is not None:
        return TaskInfo(
            task, "dmc", DMC_PHYSICS_STEPS // DMC_ACTION_REPEAT, False, obs_dim, action_dim, DMC_ACTION_REPEAT
        )
    length = _gym_spec(task).max_episode_steps or GYM_DEFAULT_EPISODE_STEPS
    return TaskInfo(task, "gym", int(length), _gym_episodic(task), obs_dim, action_dim, 1)


def make_env(
    task: str,
    *,
    seed: int = 0,
    num_envs: int = 1,
    device: torch.device | str = "cpu",
    transforms: Sequence[Transform] = (),
    obs: str = "state",
    render: bool = False,
) -> TransformedEnv:
    """The agent's env, batch size ``[]`` for one copy or ``[num_envs]`` for a ``SerialEnv`` of copies.

    Copy ``i`` is seeded with ``seed + i``. The bookkeeping transforms and ``transforms`` wrap the whole batch
    (they handle partial resets per env); the obs/action transforms live inside each copy. ``obs``: ``"state"``
    or ``"rgb"`` (stacked frames, DMControl); ``render``: gymnasium envs can render frames for videos.

    Examples:
        >>> from tdmpc2_trl import make_env
        >>> env = make_env("Pendulum-v1", seed=0, num_envs=2)  # two copies, seeded 0 and 1
        >>> env.batch_size, env.observation_spec["observation"].shape, env.action_spec.shape
        (torch.Size([2]), torch.Size([2, 3]), torch.Size([2, 1]))
        >>> bool((env.action_spec.space.high == 1).all())  # the agent acts in [-1, 1]; ActionScaling maps it
        True
    """
    if num_envs < 1:
        raise ConfigError(f"num_envs={num_envs} must be >= 1")
    info = task_info(task, obs)
    bookkeeping = [StepCounter(max_steps=info.episode_length), InitTracker(), RewardSum(), *transforms]
    if num_envs == 1:
        env = _single_env(task, seed, obs, render)  # one flat Compose: no nested TransformedEnv
        for transform in bookkeeping:
            env.append_transform(transform)
        return env.to(torch.device(device))
    copies = [functools.partial(_single_env, task, seed + i, obs, render) for i in range(num_envs)]
    return TransformedEnv(SerialEnv(num_envs, copies), Compose(*bookkeeping), device=torch.device(device))


@dataclass(frozen=True)
class EnvFactory:
    """The one way the agent's envs are built (TorchRL's ``create_env_fn``): a picklable callable that makes
    ``num_envs`` copies of ``task`` (copy ``i`` seeded ``seed + i``) with a clone of each of ``transforms``
    appended. The training collector (and each of its workers), the evaluation env and ``recipes/eval.py`` call one.
    ``render``: gymnasium envs render frames for videos. ``replace(...)`` gives a variant (another seed, more envs).
    """

    task: str
    obs: str = "state"
    seed: int = 0
    num_envs: int = 1
    device: str = "cpu"
    transforms: tuple[Transform, ...] = ()
    render: bool = False

    def __call__(self) -> TransformedEnv:
        return make_env(
            self.task,
            seed=self.seed,
            num_envs=self.num_envs,
            device=self.device,
            obs=self.obs,
            transforms=[t.clone() for t in self.transforms],
            render=self.render,
        )

    def replace(self, **changes) -> EnvFactory:
        return dataclasses.replace(self, **changes)
