"""Read the official TD-MPC2 checkpoints (nicklashansen/tdmpc2) into this project's networks.

The official ``agent.save`` writes ``{"model": state_dict}``; the released files of the first API keep the Q ensemble
as a flat parameter list (``_Qs.params.N`` with four tensors per normed layer, ``_target_Qs.params.N``), which the
official ``api_model_conversion`` renames to ``_Qs.params.<layer>.<name>``. Both are read here. Everything the
networks need is implied by the tensors: the model size (widths, depths, latent, number of Q heads, bins), the
observation and action sizes, the termination head (episodic tasks), and for a multitask file the task embedding and
action masks. What a file lacks (optimisers, RunningScale, replay buffer, step counter) starts fresh.

    python -m tdmpc2_trl.run.official_checkpoint OFFICIAL.pt --task walker-walk --out converted.pt

writes this project's checkpoint (the format of ``run/checkpoint.py``: ``recipes/eval.py`` and ``init_from=`` read it
like their own). ``recipes/eval.py checkpoint=OFFICIAL.pt task=...`` and ``init_from=OFFICIAL.pt`` convert on the fly.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tdmpc2_trl.config.presets import load_model_config
from tdmpc2_trl.config.schema import ConfigError, ModelConfig, TrainConfig
from tdmpc2_trl.networks.tasks import OFFICIAL_TASK_SETS, TaskEmbedding, TaskSet, TaskSpec, official_task_names
from tdmpc2_trl.run.finetune import TASK_SET_KEY, task_set_state

# the official task embedding's key: a key of the official state dict (a plain dict), not a TorchRL internal
TASK_EMBEDDING_KEY = "_task_emb.weight"

__all__ = [
    "OFFICIAL_MARK",
    "OfficialCheckpoint",
    "is_official",
    "read_official",
    "official_to_checkpoint",
    "to_official",
]

OFFICIAL_MARK = "official_source"  # set in a converted checkpoint: the file it came from
_OFFICIAL_PRESETS = ("1m", "5m", "19m", "48m", "317m")
_NORMED = ("weight", "bias", "ln.weight", "ln.bias")  # the official NormedLinear's tensors, in the old flat order
_LAYER_KEY = re.compile(r"^(\d+)\.(weight|bias|ln\.weight|ln\.bias)$")
# The official networks (state_dict prefixes), in the order this module maps them.
_NETS = {
    "encoder": "_encoder.state.",
    "dynamics": "_dynamics.",
    "reward": "_reward.",
    "termination": "_termination.",
    "policy": "_pi.",
    "qvalue": "_Qs.params.",
}


def is_official(state: Any) -> bool:
    """Whether a loaded file is an official TD-MPC2 checkpoint (``{"model": state_dict}`` or a bare state_dict)."""
    sd = state.get("model", state) if isinstance(state, Mapping) else None
    return isinstance(sd, Mapping) and any(isinstance(k, str) and k.startswith("_encoder.") for k in sd)


@dataclasses.dataclass
class OfficialCheckpoint:
    """What an official file implies: the model config, sizes, the task set (multitask) and the converted weights."""

    model: ModelConfig
    obs_dim: int  # a single-task model's observation size; a multitask model's padded size
    action_dim: int
    episodic: bool  # the file has the termination head
    task_set: TaskSet | None
    world_model: dict[str, torch.Tensor]  # this project's WorldModel state_dict
    source: str


def _layers(sd: Mapping[str, torch.Tensor], prefix: str, source: str) -> list[dict[str, torch.Tensor]]:
    """The layers of one official network in order: each a dict with ``weight``, ``bias`` and, for a normed layer,
    ``ln.weight``/``ln.bias``."""
    layers: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in sd.items():
        if key.startswith(prefix):
            m = _LAYER_KEY.match(key[len(prefix) :])
            if m is None:
                raise ConfigError(f"{source}: unexpected official key {key!r}")
            layers.setdefault(int(m.group(1)), {})[m.group(2)] = value
    return [layers[i] for i in sorted(layers)]


def _new_q_layout(sd: dict[str, Any]) -> dict[str, Any]:
    """The first API's flat Q keys (``_Qs.params.N``: four tensors per normed layer) as ``_Qs.params.<layer>.<name>``;
    its target copy (``_target_Qs``) is dropped (this project's target starts as a copy of the online heads)."""
    out = {}
    for key, value in sd.items():
        m = re.match(r"^_Qs\.params\.(\d+)$", key)
        if m:
            n = int(m.group(1))
            out[f"_Qs.params.{n // 4}.{_NORMED[n % 4]}"] = value
        elif not key.startswith("_target_Qs."):
            out[key] = value
    return out


def _dims(layers: list[dict[str, torch.Tensor]]) -> tuple[int, list[int]]:
    """``(input size, output sizes)`` of a stack of layers (the last dim of a weight is its input)."""
    return int(layers[0]["weight"].shape[-1]), [int(layer["weight"].shape[-2]) for layer in layers]


def _model_config(sd: Mapping[str, torch.Tensor], nets: dict[str, list], source: str) -> ModelConfig:
    """The ``ModelConfig`` the tensors imply, named after the official size whose widths and depths they have."""
    _, enc_out = _dims(nets["encoder"])
    _, dyn_out = _dims(nets["dynamics"])
    _, rew_out = _dims(nets["reward"])
    values = dict(
        latent_dim=enc_out[-1],
        enc_dim=enc_out[0],
        num_enc_layers=len(enc_out),
        mlp_dim=dyn_out[0],
        num_mlp_layers=len(dyn_out) - 1,
        num_q=int(nets["qvalue"][0]["weight"].shape[0]),
        num_bins=rew_out[-1],
    )
    if "log_std_min" in sd and "log_std_dif" in sd:
        low = float(sd["log_std_min"])
        values |= dict(log_std_min=low, log_std_max=low + float(sd["log_std_dif"]))
    if TASK_EMBEDDING_KEY in sd:
        values["task_dim"] = int(sd[TASK_EMBEDDING_KEY].shape[1])
    for name in _OFFICIAL_PRESETS:  # widths and depths decide; the latent size may differ (mt30 at 19m: 512)
        preset = load_model_config(name)
        if all(getattr(preset, k) == values[k] for k in ("enc_dim", "num_enc_layers", "mlp_dim", "num_q")):
            return load_model_config(name, **values)
    raise ConfigError(
        f"{source}: its networks (encoder {values['enc_dim']} x {values['num_enc_layers']}, MLPs "
        f"{values['mlp_dim']}, {values['num_q']} Q heads) match no official model size "
        f"({', '.join(_OFFICIAL_PRESETS)})"
    )


def _official_task_set(
    sd: Mapping[str, torch.Tensor], obs_dim: int, action_dim: int, tasks: Sequence[str] | None, source: str
) -> TaskSet:
    """The task set of a multitask file: ``tasks`` (names in task-id order) or, by the number of embedding rows,
    mt30/mt80; checked against the file's action masks and padded sizes."""
    num_tasks, task_dim = (int(d) for d in sd[TASK_EMBEDDING_KEY].shape)
    if not tasks:
        by_count = {len(official_task_names(n)): n for n in OFFICIAL_TASK_SETS}
        if num_tasks not in by_count:
            raise ConfigError(
                f"{source} is a multitask checkpoint of {num_tasks} tasks, neither mt30 nor mt80: "
                f"name them in task-id order (official_tasks=[...])"
            )
        tasks = official_task_names(by_count[num_tasks])
    if len(tasks) != num_tasks:
        raise ConfigError(f"{source} has {num_tasks} tasks, {len(tasks)} named")
    specs = tuple(_task_spec(name) for name in tasks)
    masks = sd.get("_action_masks")
    if masks is not None:
        file_dims = [int(d) for d in masks.sum(-1).tolist()]
        wrong = [(s.name, s.action_dim, d) for s, d in zip(specs, file_dims) if s.action_dim != d]
        if wrong:
            name, env_dim, file_dim = wrong[0]
            raise ConfigError(
                f"{source}: task {name!r} has {env_dim} action dims, the checkpoint's task "
                f"{tasks.index(name)} has {file_dim}"
            )
    task_set = TaskSet(specs, task_dim, obs_dim, action_dim)
    if (task_set.obs_dim, task_set.action_dim) != (obs_dim, action_dim):
        raise ConfigError(
            f"{source}: its tasks need observations/actions of {task_set.obs_dim}/{task_set.action_dim},"
            f" the checkpoint's networks take {obs_dim}/{action_dim}"
        )
    return task_set


def _task_spec(name: str) -> TaskSpec:
    """An official task's sizes from the official lists (no env needed), any other task's from its env."""
    from tdmpc2_trl.networks.tasks import official_task_spec

    spec = official_task_spec(name)
    if spec is not None:
        return spec
    from tdmpc2_trl.run.multitask import task_spec  # builds the env once

    return task_spec(name)


def _project_layers(module: nn.Module) -> list[nn.Module]:
    """A network's Linear and LayerNorm modules in forward order (how the official layers list their tensors)."""
    return [m for m in module.modules() if isinstance(m, (nn.Linear, nn.LayerNorm))]


def _official_tensors(layers: list[dict[str, torch.Tensor]]) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """``(kind, weight, bias)`` of each Linear and each LayerNorm, in forward order."""
    out = []
    for layer in layers:
        out.append(("linear", layer["weight"], layer["bias"]))
        if "ln.weight" in layer:
            out.append(("norm", layer["ln.weight"], layer["ln.bias"]))
    return out


def _convert(
    sd: Mapping[str, torch.Tensor],
    nets: dict[str, list],
    model_cfg: ModelConfig,
    obs_dim: int,
    action_dim: int,
    episodic: bool,
    task_set: TaskSet | None,
    source: str,
) -> dict[str, torch.Tensor]:
    """The project's ``WorldModel`` state_dict holding the official tensors (names mapped layer by layer)."""
    from tdmpc2_trl.networks.world_model import WorldModel, _unconditioned

    with torch.device("meta"):  # names and shapes only: no memory for a large model
        wm = WorldModel(model_cfg, obs_dim, action_dim, episodic=episodic, task_set=task_set)
    names = {id(p): n for n, p in wm.named_parameters()}
    out: dict[str, torch.Tensor] = {}
    for net, layers in nets.items():
        if net == "qvalue":
            continue
        module = getattr(wm, net)
        if module is None:
            raise ConfigError(f"{source}: it has a {net} head this model does not build")
        ours = _project_layers(_unconditioned(module.module))
        theirs = _official_tensors(layers)
        if len(ours) != len(theirs):
            raise ConfigError(f"{source}: its {net} has {len(theirs)} Linear/LayerNorm layers, this model {len(ours)}")
        for mod, (_, weight, bias) in zip(ours, theirs):
            for param, value in ((mod.weight, weight), (mod.bias, bias)):
                _put(out, names[id(param)], param, value, source)
    q_prefix = next(n for n, m in wm.named_modules() if m is wm.q_ensemble) + ".params."
    ensemble = wm.q_ensemble
    ours_q = [name for name, layer in ensemble._layers if isinstance(layer, (nn.Linear, nn.LayerNorm))]
    theirs_q = _official_tensors(nets["qvalue"])
    if len(ours_q) != len(theirs_q):
        raise ConfigError(f"{source}: its Q heads have {len(theirs_q)} layers, this model's {len(ours_q)}")
    for name, (_, weight, bias) in zip(ours_q, theirs_q):
        for which, value in (("weight", weight), ("bias", bias)):
            _put(out, f"{q_prefix}{name}.{which}", ensemble.params[name][which], value, source)
    if task_set is not None:
        emb = sd[TASK_EMBEDDING_KEY]
        _put(out, "tasks.embedding.weight", wm.tasks.embedding.weight, emb, source)
        buffers = TaskEmbedding(task_set).state_dict()  # masks, action counts, discounts: the task set's own
        out |= {f"tasks.{k}": v for k, v in buffers.items() if k != "embedding.weight"}
    missing = sorted(set(wm.state_dict()) - set(out))
    if missing:
        raise ConfigError(f"{source}: nothing in it for {missing[0]}")
    return out


def _put(out: dict[str, torch.Tensor], name: str, like: torch.Tensor, value: torch.Tensor, source: str) -> None:
    if tuple(like.shape) != tuple(value.shape):
        raise ConfigError(f"{source}: {name} should be {tuple(like.shape)}, the file's tensor is {tuple(value.shape)}")
    out[name] = value.detach().to(torch.float32).clone()


def read_official(
    state: Mapping[str, Any], source: str = "the checkpoint", tasks: Sequence[str] | None = None
) -> OfficialCheckpoint:
    """Map a loaded official file (``{"model": state_dict}``, either key layout) onto this project's networks.

    ``tasks``: a multitask file's task names in task-id order (default: mt30 or mt80, by its number of tasks).
    Any mismatch is a one-line ``ConfigError`` naming the file.
    """
    if isinstance(state, Mapping) and "world_model" in state:
        raise ConfigError(f"{source} is a tdmpc2-trl checkpoint already, not an official TD-MPC2 one")
    if not is_official(state):
        raise ConfigError(f"{source} is neither a tdmpc2-trl checkpoint nor an official TD-MPC2 one")
    sd = _new_q_layout(dict(state.get("model", state)))
    if any(k.startswith("_encoder.rgb.") for k in sd):
        raise ConfigError(f"{source} is an official pixel (rgb) checkpoint: only state-observation ones are read")
    nets = {net: _layers(sd, prefix, source) for net, prefix in _NETS.items()}
    for net in ("encoder", "dynamics", "reward", "policy", "qvalue"):
        if not nets[net]:
            raise ConfigError(f"{source}: no {_NETS[net]}* tensors, not an official TD-MPC2 state-model checkpoint")
    episodic = bool(nets["termination"])
    if not episodic:
        del nets["termination"]
    model_cfg = _model_config(sd, nets, source)
    in_dim, _ = _dims(nets["encoder"])
    action_dim = _dims(nets["policy"])[1][-1] // 2
    multitask = TASK_EMBEDDING_KEY in sd
    obs_dim = in_dim - (model_cfg.task_dim if multitask else 0)
    task_set = _official_task_set(sd, obs_dim, action_dim, tasks, source) if multitask else None
    weights = _convert(sd, nets, model_cfg, obs_dim, action_dim, episodic, task_set, source)
    return OfficialCheckpoint(model_cfg, obs_dim, action_dim, episodic, task_set, weights, source)


def official_converter(tasks: Sequence[str] | None = None) -> Callable[[Any, Path], dict[str, Any]]:
    """``load_checkpoint``'s ``convert`` for official TD-MPC2 files (``tasks``: a multitask file's task names)."""

    def convert(state: Any, path: Path) -> dict[str, Any]:
        return official_to_checkpoint(read_official(state, str(path), tasks))

    return convert


def official_to_checkpoint(official: OfficialCheckpoint, task: str | None = None) -> dict[str, Any]:
    """This project's checkpoint (``run/checkpoint.py``'s layout) of an official file's networks.

    ``task``: the task a single-task file was trained on (the file does not say; ``recipes/eval.py task=`` and the
    converter's ``--task`` give it). Step 0; no optimiser, RunningScale or buffer state (they start fresh).
    """
    names = official.task_set.names if official.task_set is not None else []
    cfg = TrainConfig(task=task or "", tasks=list(names), model=official.model)
    return {
        "step": 0,
        "burst_done": False,
        "config": dataclasses.asdict(cfg),
        "task": {"obs_dim": official.obs_dim, "action_dim": official.action_dim, "episodic": official.episodic},
        "world_model": official.world_model,
        TASK_SET_KEY: task_set_state(official.task_set) if official.task_set is not None else None,
        OFFICIAL_MARK: official.source,
    }


def to_official(world_model: nn.Module) -> dict[str, torch.Tensor]:
    """The official model's ``state_dict`` (new key layout) holding ``world_model``'s weights: what the official
    ``agent.save`` writes under ``"model"``, so the official code (and any tool built on its files) can load a network
    trained here. The inverse of ``read_official``, layer by layer in the same forward order; the official target Q
    copy gets the online weights (this project keeps its target in the loss, not in the world model).
    """
    from tdmpc2_trl.networks.world_model import _unconditioned

    cfg = world_model.cfg
    out: dict[str, torch.Tensor] = {
        "log_std_min": torch.tensor(float(cfg.log_std_min)),
        "log_std_dif": torch.tensor(float(cfg.log_std_max)) - torch.tensor(float(cfg.log_std_min)),
    }

    def put(prefix: str, layers: list[tuple[str, torch.Tensor, torch.Tensor]]) -> None:
        index = -1
        for kind, weight, bias in layers:  # a Linear opens official layer i; a LayerNorm after it is i.ln
            index += kind == "linear"
            name = f"{prefix}{index}." + ("" if kind == "linear" else "ln.")
            out[name + "weight"], out[name + "bias"] = weight.detach().clone(), bias.detach().clone()

    for net, prefix in _NETS.items():
        module = getattr(world_model, net, None)
        if net == "qvalue" or module is None:
            continue
        mods = _project_layers(_unconditioned(module.module))
        put(prefix, [("linear" if isinstance(m, nn.Linear) else "norm", m.weight, m.bias) for m in mods])
    ensemble = world_model.q_ensemble
    q_layers = [(n, m) for n, m in ensemble._layers if isinstance(m, (nn.Linear, nn.LayerNorm))]
    kinds = [("linear" if isinstance(m, nn.Linear) else "norm", n) for n, m in q_layers]
    put(_NETS["qvalue"], [(k, ensemble.params[n]["weight"], ensemble.params[n]["bias"]) for k, n in kinds])
    for key in [k for k in out if k.startswith(_NETS["qvalue"])]:
        layer = key[len(_NETS["qvalue"]) :]
        out["_detach_Qs_params." + layer] = out[key]
        out["_target_Qs_params." + layer] = out[key].clone()
    if world_model.tasks is not None:
        out[TASK_EMBEDDING_KEY] = world_model.tasks.embedding.weight.detach().clone()
        out["_action_masks"] = world_model.tasks.masks.detach().clone()
    return out


def fresh_state_note(source: str) -> str:
    """The one line a run prints when it starts from an official file."""
    return (
        f"{source}: official TD-MPC2 checkpoint read (networks only); the optimisers, RunningScale and replay "
        f"buffer start fresh"
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="Convert an official TD-MPC2 checkpoint into a tdmpc2-trl checkpoint, or (--to-official) the "
        "networks of a tdmpc2-trl checkpoint into an official one."
    )
    p.add_argument("checkpoint", help="the official file ({'model': state_dict}); with --to-official, this project's")
    p.add_argument("--out", required=True, help="the checkpoint to write")
    p.add_argument("--task", default=None, help="the task a single-task file was trained on (stored in the config)")
    p.add_argument(
        "--tasks",
        default=None,
        help="a multitask file's task names in task-id order, comma separated (default: mt30/mt80)",
    )
    p.add_argument(
        "--to-official",
        action="store_true",
        help="write the official {'model': state_dict} of this project's checkpoint (a file or a run directory)",
    )
    a = p.parse_args(argv)
    from tdmpc2_trl.platform.checkpoint import atomic_file, load_raw, save_checkpoint
    from tdmpc2_trl.run.entry import exit_code

    def convert() -> None:
        official = read_official(load_raw(Path(a.checkpoint)), a.checkpoint, a.tasks.split(",") if a.tasks else None)
        save_checkpoint(Path(a.out), official_to_checkpoint(official, a.task), keep=0)
        kind = f"multitask ({len(official.task_set)} tasks)" if official.task_set is not None else "single-task"
        print(
            f"wrote {a.out}: model {official.model.name}, {kind}, obs {official.obs_dim}, action "
            f"{official.action_dim}{', termination head' if official.episodic else ''}"
        )

    def convert_to_official() -> None:
        from tdmpc2_trl.run.load_agent import load_agent

        agent = load_agent(a.checkpoint, task=a.task)
        world_model = agent.planner.world_model
        if world_model.termination is not None and world_model.cfg.termination != "latent":
            raise ConfigError(
                f"{agent.path}: its termination head reads (latent, action) (termination={world_model.cfg.termination}"
                f"); the official model's reads the latent only, so the official code cannot load it"
            )
        sd = to_official(world_model)
        tasks = agent.task_set.names if agent.task_set is not None else None
        back = read_official({"model": sd}, str(agent.path), tasks)  # an official size, or the one-line mismatch
        with atomic_file(Path(a.out)) as f:
            torch.save({"model": sd}, f)
        print(f"wrote {a.out}: the official TD-MPC2 layout of {agent.path}'s networks (model {back.model.name})")

    return exit_code(convert_to_official if a.to_official else convert)


if __name__ == "__main__":
    sys.exit(main())
