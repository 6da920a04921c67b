"""Print every network of a preset and its trainable parameter count.

python -m tdmpc2_trl.run.summary model=8m-h10 obs_dim=18 action_dim=4
python -m tdmpc2_trl.run.summary model=5m obs=rgb action_dim=1     # pixel observations (9, 64, 64): conv encoder
python -m tdmpc2_trl.run.summary model=5m tasks=mt30               # an official multitask model (mt30 or mt80)
python -m tdmpc2_trl.run.summary model=1m 'tasks=[Pendulum-v1,cartpole-swingup,reacher-easy]' task_dim=96
"""

from __future__ import annotations

import sys

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import ListConfig, OmegaConf

from tdmpc2_trl.config.presets import config_dir
from tdmpc2_trl.config.schema import ConfigError, ModelConfig
from tdmpc2_trl.networks.pixels import pixel_obs_shape
from tdmpc2_trl.networks.tasks import TaskSet, official_model_overrides, official_task_set
from tdmpc2_trl.networks.world_model import WorldModel
from tdmpc2_trl.run.multitask import task_spec

_TITLES = {
    "task_embedding": "TASK EMBEDDING: task id -> embedding, appended to every network's input (max norm 1)",
    "encoder": "ENCODER: observation -> latent",
    "dynamics": "DYNAMICS: (latent, action) -> next latent",
    "reward": "REWARD: (latent, action) -> reward logits",
    "termination": "TERMINATION: termination logit",
    "qvalue": "Q ENSEMBLE: (latent, action) -> Q logits of every head (a target copy lives in the loss)",
    "policy": "POLICY: latent -> squashed Gaussian action",
}


def format_summary(model: WorldModel) -> str:
    counts = model.parameter_counts()
    obs = f"obs shape {model.obs_shape}" if model.pixels else f"obs dim {model.obs_dim}"
    lines = [f"TD-MPC2 model '{model.cfg.name}': {obs}, action dim {model.action_dim}", ""]
    if model.tasks is not None:
        ts = model.tasks.task_set
        lines[0] += f", {len(ts)} tasks (padded sizes), task_dim {ts.task_dim}"
    titles = {k: v for k, v in _TITLES.items() if k in counts}
    for i, (name, title) in enumerate(titles.items(), 1):
        module = model.tasks if name == "task_embedding" else getattr(model, name)
        lines.append(f"{i}. {title}")
        text = repr(module.embedding) if name == "task_embedding" else repr(module.module) if module else None
        lines.append(text or "  (not built: task is not episodic)")
        lines.append(f"   Trainable Parameters: {counts[name]:,}")
        lines.append("")
    lines += [
        "PARAMETER SUMMARY:",
        f"  World Model (Encoder + Dynamics + Reward + Termination + Q): {counts['world_model']:,}",
        f"  Policy Network: {counts['policy']:,}",
        "  Target Q Network: 0 (not trained)",
        *(
            [f"  (the world model includes the task embedding: {counts['task_embedding']:,})"]
            if "task_embedding" in counts
            else []
        ),
        f"  TOTAL TRAINABLE PARAMETERS: {counts['total']:,}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
            cfg = compose(config_name="summary", overrides=argv)
        model_values = OmegaConf.to_container(cfg.model, resolve=True)
        if cfg.obs not in ("state", "rgb"):
            raise ConfigError(f"obs={cfg.obs!r} must be state or rgb")
        if cfg.tasks is not None:
            task_set = _task_set(cfg.tasks, model_values["name"], cfg.task_dim)
            if isinstance(cfg.tasks, str):
                model_values |= official_model_overrides(cfg.tasks, model_values["name"])
            model = WorldModel(
                ModelConfig.from_dict(model_values),
                task_set.obs_dim,
                task_set.action_dim,
                episodic=bool(cfg.episodic),
                task_set=task_set,
            )
        else:
            obs_shape = pixel_obs_shape() if cfg.obs == "rgb" else int(cfg.obs_dim)
            model = WorldModel(
                ModelConfig.from_dict(model_values), obs_shape, int(cfg.action_dim), episodic=bool(cfg.episodic)
            )
    except (HydraException, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_summary(model))
    return 0


def _task_set(tasks: str | ListConfig, model: str, task_dim: int | None) -> TaskSet:
    """``mt30``/``mt80`` (the official sizes and task_dim), or a list of task names (sizes from their envs)."""
    if isinstance(tasks, str):
        official = official_task_set(tasks, model)
        return official if task_dim is None else TaskSet(official.tasks, int(task_dim))
    specs = tuple(task_spec(str(name)) for name in tasks)
    return TaskSet(specs, 96 if task_dim is None else int(task_dim))


if __name__ == "__main__":
    sys.exit(main())
