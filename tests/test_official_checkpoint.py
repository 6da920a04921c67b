"""Official TD-MPC2 checkpoints (``run/official_checkpoint.py``): state dicts in the official key layout, built here
from a project model by a hand-written key map (the official names and shapes are facts of its format: a
``NormedLinear`` layer ``i`` holds ``i.weight``, ``i.bias``, ``i.ln.weight``, ``i.ln.bias``; the Q heads are stacked
under ``_Qs.params``; the first API kept them as a flat list ``_Qs.params.N``), read back, and compared with the
same weights loaded the project's way: every network's output and the planned action."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.nn import functional as F

from tdmpc2_trl.config.presets import load_model_config
from tdmpc2_trl.config.schema import ConfigError, ModelConfig, TrainConfig
from tdmpc2_trl.networks.tasks import TaskSet, official_task_spec
from tdmpc2_trl.networks.world_model import WorldModel
from tdmpc2_trl.planning.planner import PlannerNoise, TDMPC2Planner
from tdmpc2_trl.platform.checkpoint import load_checkpoint, save_checkpoint
from tdmpc2_trl.run import official_checkpoint as oc
from tdmpc2_trl.run.finetune import checkpoint_task_set

MT3 = ["walker-stand", "cartpole-swingup", "reacher-easy"]  # official task names: 24/6, 5/1, 6/2
SMALL = dict(horizon=3, num_samples=32, num_pi_trajs=4, num_elites=8, iterations=2)

# project Sequential index -> official layer index, per network of an official preset with 2 hidden blocks
# (Linear, [Dropout,] LayerNorm, Mish per block; the last layer Linear [LayerNorm, SimNorm])
NORMED = {0: "0.weight", 1: "0.ln.weight", 3: "1.weight", 4: "1.ln.weight", 6: "2.weight", 7: "2.ln.weight"}
Q_LAYERS = {0: "0.weight", 2: "0.ln.weight", 4: "1.weight", 5: "1.ln.weight", 7: "2.weight"}


def project_prefixes(multitask: bool) -> dict[str, str]:
    """Where each official network's tensors live in the project's state_dict."""
    if multitask:  # every network behind the task conditioning (``.net``)
        return {
            "_encoder.state.": "encoder.module.net.",
            "_dynamics.": "dynamics.module.net.net.",
            "_reward.": "reward.module.net.net.",
            "_termination.": "termination.module.net.",
            "_pi.": "policy.module.net.net.",
            "_Qs.params.": "qvalue.module.net.ensemble.params.",
        }
    return {
        "_encoder.state.": "encoder.module.",
        "_dynamics.": "dynamics.module.net.",
        "_reward.": "reward.module.net.",
        "_termination.": "termination.module.",
        "_pi.": "policy.module.net.",
        "_Qs.params.": "qvalue.module.ensemble.params.",
    }


def to_official(wm: WorldModel) -> dict[str, torch.Tensor]:
    """The official ``agent.save`` state_dict of ``wm``'s weights (new API: ``_Qs.params.<layer>.<name>``)."""
    own = wm.state_dict()
    out: dict[str, torch.Tensor] = {
        "log_std_min": torch.tensor(wm.cfg.log_std_min),
        "log_std_dif": torch.tensor(wm.cfg.log_std_max - wm.cfg.log_std_min),
    }
    for official, project in project_prefixes(wm.multitask).items():
        index = Q_LAYERS if official == "_Qs.params." else NORMED
        for i, name in index.items():
            for which in ("weight", "bias"):
                key = f"{project}{i}.{which}"
                if key in own:
                    out[official + name.replace("weight", which)] = own[key].clone()
    head = "policy.module.net.head." if wm.multitask else "policy.module.head."
    for which in ("weight", "bias"):  # the policy's last layer is the joint head
        out[f"_pi.2.{which}"] = own[head + which].clone()
    if wm.multitask:
        out["_task_emb.weight"] = own["tasks.embedding.weight"].clone()
        out["_action_masks"] = own["tasks.masks"].clone()
    for key, value in list(out.items()):  # the online Q copy the official model also saves
        if key.startswith("_Qs.params."):
            out["_detach_Qs_params." + key[len("_Qs.params.") :]] = value
            out["_target_Qs_params." + key[len("_Qs.params.") :]] = value + 1  # its target: never read
    return out


def to_first_api(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same weights in the released files' first layout: ``_Qs.params.N`` (4 per normed layer, then the last
    layer's weight and bias), ``_target_Qs.params.N``."""
    out = {k: v for k, v in sd.items() if "Qs" not in k}
    flat = [f"{layer}.{name}" for layer in range(2) for name in oc._NORMED] + ["2.weight", "2.bias"]
    for n, key in enumerate(flat):
        out[f"_Qs.params.{n}"] = sd[f"_Qs.params.{key}"]
        out[f"_target_Qs.params.{n}"] = sd[f"_target_Qs_params.{key}"]
    return out


def randomized(wm: WorldModel) -> WorldModel:
    """Every weight random (the zero-initialised reward/Q output layers included), so each tensor matters."""
    torch.manual_seed(3)
    with torch.no_grad():
        for p in wm.parameters():
            p.normal_(0, 0.3)
    return wm


def single_task_model(episodic: bool = True) -> WorldModel:
    return randomized(WorldModel(load_model_config("1m"), 5, 2, episodic=episodic))


def multitask_model() -> WorldModel:
    task_set = TaskSet(tuple(official_task_spec(t) for t in MT3), task_dim=96)
    return randomized(WorldModel(load_model_config("1m"), task_set.obs_dim, task_set.action_dim, task_set=task_set))


def read_into_model(sd: dict, tasks=None) -> tuple[WorldModel, oc.OfficialCheckpoint]:
    official = oc.read_official({"model": sd}, "test.pt", tasks)
    wm = WorldModel(
        official.model, official.obs_dim, official.action_dim, episodic=official.episodic, task_set=official.task_set
    )
    wm.load_state_dict(official.world_model)
    return wm, official


def assert_same_networks_and_plan(ours: WorldModel, theirs: WorldModel, task: torch.Tensor | None) -> None:
    torch.manual_seed(0)
    B = 6 if task is None else task.shape[0]
    obs = torch.randn(B, ours.obs_dim)
    a = torch.rand(B, ours.action_dim) * 2 - 1
    eps = torch.randn(B, ours.action_dim)
    with torch.no_grad():
        for wm in (ours, theirs):
            wm.eval()
        z = ours.encode(obs, task)
        torch.testing.assert_close(theirs.encode(obs, task), z, rtol=0, atol=0)
        pairs = [
            (
                m.next(z, a, task),
                m.reward_logits(z, a, task),
                m.q_logits(z, a, task=task),
                m.pi(z, task)[1:3],
                m.pi_sample(z, eps, task),
            )
            for m in (ours, theirs)
        ]
        torch.testing.assert_close(pairs[1], pairs[0], rtol=0, atol=0)
        if ours.termination is not None:
            torch.testing.assert_close(
                theirs.termination_logit(z, a, task), ours.termination_logit(z, a, task), rtol=0, atol=0
            )
    planners = [TDMPC2Planner(m, discount=0.99, **SMALL) for m in (ours, theirs)]
    noise = PlannerNoise(planners[0], B, generator=torch.Generator().manual_seed(1))
    prev = torch.rand(B, 3, ours.action_dim) * 2 - 1
    actions = [p.act(obs, prev, noise, explore=False, task=task) for p in planners]
    torch.testing.assert_close(actions[1], actions[0], rtol=0, atol=0)


@pytest.mark.parametrize("episodic", [True, False])
def test_single_task_file_gives_the_same_networks_and_plan(episodic):
    ours = single_task_model(episodic)
    theirs, official = read_into_model(to_official(ours))
    assert (official.model.name, official.obs_dim, official.action_dim, official.episodic) == ("1m", 5, 2, episodic)
    assert official.task_set is None
    assert_same_networks_and_plan(ours, theirs, None)


@pytest.mark.parametrize("model", ["single-task episodic", "single-task", "multitask"])
def test_the_writer_gives_the_official_layout_built_here(model):
    ours = multitask_model() if model == "multitask" else single_task_model(episodic=model == "single-task episodic")
    expected, written = to_official(ours), oc.to_official(ours)
    assert sorted(written) == sorted(expected)
    for key in expected:  # the writer's target Q copy is the online one (the hand-built: + 1)
        want = expected[key.replace("_target_Qs_params.", "_Qs.params.")]
        torch.testing.assert_close(written[key], want, rtol=0, atol=0, msg=key)
    theirs, _ = read_into_model(written, MT3 if model == "multitask" else None)
    assert_same_networks_and_plan(ours, theirs, torch.tensor([2, 0]) if model == "multitask" else None)


def test_to_official_cli_writes_back_the_file_it_converted(tmp_path, capsys):
    ours = randomized(WorldModel(load_model_config("1m"), 3, 1, episodic=False))  # Pendulum-v1's sizes
    src, ckpt, back = tmp_path / "official.pt", tmp_path / "converted.pt", tmp_path / "back.pt"
    torch.save({"model": to_official(ours)}, src)
    assert oc.main([str(src), "--out", str(ckpt), "--task", "Pendulum-v1"]) == 0
    assert oc.main([str(ckpt), "--to-official", "--out", str(back)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"wrote {back}: the official TD-MPC2 layout of {ckpt}'s networks (model 1m)"
    )
    written = torch.load(back, weights_only=True)["model"]
    assert sorted(written) == sorted(to_official(ours))
    for key, value in to_official(ours).items():
        if not key.startswith("_target_Qs_params."):
            torch.testing.assert_close(written[key], value, rtol=0, atol=0, msg=key)


def test_to_official_refuses_a_termination_head_that_reads_the_action(tmp_path, capsys):
    cfg = dataclasses.replace(load_model_config("1m"), termination="latent_action")
    wm = WorldModel(cfg, 11, 3, episodic=True)  # Hopper-v5's sizes; an episodic task
    ckpt = tmp_path / "ours.pt"
    config = dataclasses.asdict(TrainConfig(task="Hopper-v5", model=cfg))
    state = {"step": 0, "config": config, "task": {"obs_dim": 11, "action_dim": 3, "episodic": True}}
    save_checkpoint(ckpt, state | {"world_model": wm.state_dict()}, keep=0)
    assert oc.main([str(ckpt), "--to-official", "--out", str(tmp_path / "x.pt")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {ckpt}: its termination head reads (latent, action) (termination=latent_action); the official "
        f"model's reads the latent only, so the official code cannot load it"
    )
    assert not (tmp_path / "x.pt").exists()


def test_first_api_layout_reads_the_same_weights():
    sd = to_official(single_task_model())
    new, _ = read_into_model(sd)
    old, _ = read_into_model(to_first_api(sd))
    for key, value in new.state_dict().items():
        assert torch.equal(old.state_dict()[key], value), key


def test_encoder_matches_the_official_layers_computed_by_hand():
    """Independent of the project's modules: Linear → LayerNorm → Mish, then Linear → LayerNorm → SimNorm(8)."""
    sd = to_official(single_task_model())
    wm, _ = read_into_model(sd)
    x = torch.randn(4, 5)
    h = F.mish(
        F.layer_norm(
            F.linear(x, sd["_encoder.state.0.weight"], sd["_encoder.state.0.bias"]),
            (256,),
            sd["_encoder.state.0.ln.weight"],
            sd["_encoder.state.0.ln.bias"],
        )
    )
    h = F.layer_norm(
        F.linear(h, sd["_encoder.state.1.weight"], sd["_encoder.state.1.bias"]),
        (128,),
        sd["_encoder.state.1.ln.weight"],
        sd["_encoder.state.1.ln.bias"],
    )
    expected = torch.softmax(h.view(4, 16, 8), -1).view(4, 128)
    with torch.no_grad():
        torch.testing.assert_close(wm.encode(x), expected, rtol=1e-5, atol=1e-6)


def test_multitask_file_gives_the_same_networks_and_plan():
    ours = multitask_model()
    theirs, official = read_into_model(to_official(ours), MT3)
    assert official.task_set.names == MT3 and (official.obs_dim, official.action_dim) == (24, 6)
    assert official.task_set.task_dim == 96
    assert_same_networks_and_plan(ours, theirs, torch.tensor([0, 1, 2, 1, 0]))


def test_mt30_task_list_is_implied_by_30_embedding_rows():
    sd = to_official(multitask_model())
    sd["_task_emb.weight"] = torch.zeros(30, 96)
    sd["_action_masks"] = torch.zeros(30, 6)
    for i, name in enumerate(oc.official_task_names("mt30")):
        sd["_action_masks"][i, : official_task_spec(name).action_dim] = 1
    official = oc.read_official({"model": sd}, "mt30.pt")
    assert official.task_set.names[:3] == ["walker-stand", "walker-walk", "walker-run"]
    assert len(official.task_set) == 30 and official.task_set.obs_dim == 24


def test_converted_checkpoint_loads_through_load_checkpoint(tmp_path, capsys):
    ours = multitask_model()
    src = tmp_path / "official.pt"
    torch.save({"model": to_official(ours)}, src)
    out = tmp_path / "converted.pt"
    assert oc.main([str(src), "--out", str(out), "--tasks", ",".join(MT3)]) == 0
    assert capsys.readouterr().out.strip() == (f"wrote {out}: model 1m, multitask (3 tasks), obs 24, action 6")
    state = load_checkpoint(out)
    assert state["step"] == 0 and state[oc.OFFICIAL_MARK] == str(src)
    assert "replay_buffer" not in state and "updater" not in state
    wm = WorldModel(ModelConfig.from_dict(state["config"]["model"]), 24, 6, task_set=checkpoint_task_set(state))
    wm.load_state_dict(state["world_model"])
    assert_same_networks_and_plan(ours, wm, torch.tensor([2, 0]))


def test_bad_inputs_are_one_line_errors(tmp_path, capsys):
    sd = to_official(single_task_model())
    with pytest.raises(ConfigError, match=r"^x\.pt is neither a tdmpc2-trl checkpoint nor an official TD-MPC2 one$"):
        oc.read_official({"state": {"w": torch.zeros(1)}}, "x.pt")
    wide = {k: v for k, v in sd.items()}
    wide["_encoder.state.0.weight"] = torch.zeros(300, 5)
    wide["_encoder.state.0.bias"] = torch.zeros(300)
    with pytest.raises(ConfigError, match=r"encoder 300 x 2, MLPs 384, 2 Q heads\) match no official model size"):
        oc.read_official({"model": wide}, "w.pt")
    broken = dict(sd)
    broken["_encoder.state.0.ln.weight"] = torch.zeros(7)
    with pytest.raises(ConfigError, match=r"encoder.module.1.weight should be \(256,\), the file's tensor is \(7,\)"):
        oc.read_official({"model": broken}, "b.pt")
    mt = to_official(multitask_model())
    with pytest.raises(ConfigError, match="multitask checkpoint of 3 tasks, neither mt30 nor mt80"):
        oc.read_official({"model": mt}, "m.pt")
    with pytest.raises(
        ConfigError, match=r"^m\.pt: task 'cartpole-swingup' has 1 action dims, the checkpoint's task 0 has 6$"
    ):
        oc.read_official({"model": mt}, "m.pt", ["cartpole-swingup", "walker-stand", "reacher-easy"])
    src = tmp_path / "junk.pt"
    torch.save({"hello": 1}, src)
    assert oc.main([str(src), "--out", str(tmp_path / "o.pt")]) == 2
    assert capsys.readouterr().err == f"error: {src} is neither a tdmpc2-trl checkpoint nor an official TD-MPC2 one\n"


@pytest.fixture(scope="module")
def pendulum_official(tmp_path_factory) -> tuple[WorldModel, object]:
    """An official-layout 1m file for Pendulum-v1's sizes (3 observations, 1 action)."""
    torch.manual_seed(5)
    wm = randomized(WorldModel(load_model_config("1m"), 3, 1))
    path = tmp_path_factory.mktemp("official") / "pendulum-1m.pt"
    torch.save({"model": to_official(wm)}, path)
    return wm, path


def test_eval_recipe_evaluates_an_official_single_task_file(pendulum_official, load_recipe, capsys):
    _, path = pendulum_official
    recipe = load_recipe("eval")
    args = [f"checkpoint={path}", "episodes=1", "mpc=false", "device=cpu"]
    result = recipe.run(recipe.load_config("eval", [*args, "task=Pendulum-v1"]))
    assert result["task"] == "Pendulum-v1" and result["step"] == 0 and result["episodes"] == 1
    assert -2000 < result["mean_return"] <= 0
    assert capsys.readouterr().out.splitlines()[0] == (
        f"{path}: official TD-MPC2 checkpoint read (networks only); the "
        f"optimisers, RunningScale and replay buffer start fresh"
    )
    with pytest.raises(
        ConfigError,
        match=r"official single-task checkpoint, which does not name its task: give "
        r"task=NAME$",
    ):
        recipe.run(recipe.load_config("eval", args))
    with pytest.raises(
        ConfigError,
        match=r"^task MountainCarContinuous-v0 has 2 observations and 1 actions; the "
        r"checkpoint's networks take 3 and 1$",
    ):
        recipe.run(recipe.load_config("eval", [*args, "task=MountainCarContinuous-v0"]))


def test_init_from_an_official_single_task_file_starts_from_its_networks(pendulum_official, tmp_path, capsys):
    from tdmpc2_trl.config.compose import load_config
    from tdmpc2_trl.run.finetune import load_single_task_pretrained

    wm, path = pendulum_official
    fresh = WorldModel(load_model_config("1m"), 3, 1)
    line = load_single_task_pretrained(fresh, str(path))
    assert line.endswith(
        "official TD-MPC2 checkpoint read (networks only); the optimisers, RunningScale and replay buffer start fresh"
    )
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in wm.state_dict().items())
    with pytest.raises(ConfigError, match=r"do not fit this model .*use the checkpoint's model preset"):
        load_single_task_pretrained(WorldModel(load_model_config("5m"), 3, 1), str(path))
    with pytest.raises(ConfigError, match="give tasks"):  # a run directory still needs tasks=[...]
        load_config("config", ["model=1m", f"init_from={tmp_path}"])
    cfg = load_config("config", ["model=1m", f"init_from={path}"])  # a file: a single-task run
    assert cfg.init_from == str(path) and cfg.tasks == []


def test_eval_recipe_evaluates_one_task_of_an_official_multitask_file(tmp_path, load_recipe, capsys):
    from tdmpc2_trl.networks.tasks import TaskSpec

    task_set = TaskSet((TaskSpec("Pendulum-v1", 3, 1, 200), TaskSpec("Reacher-v5", 10, 2, 50)), task_dim=96)
    wm = randomized(WorldModel(load_model_config("1m"), 10, 2, task_set=task_set))
    path = tmp_path / "official-mt2.pt"
    torch.save({"model": to_official(wm)}, path)
    recipe = load_recipe("eval")
    args = [f"checkpoint={path}", "episodes=1", "mpc=false", "device=cpu", "official_tasks=[Pendulum-v1,Reacher-v5]"]
    result = recipe.run(recipe.load_config("eval", [*args, "task=Pendulum-v1"]))
    assert result["task"] == ["Pendulum-v1"] and result["episodes"] == 1
    assert list(result["task_mean_returns"]) == ["Pendulum-v1"] and -2000 < result["mean_return"] <= 0
    with pytest.raises(ConfigError, match=r"^task 'Hopper-v5' is not in the task set \['Pendulum-v1', 'Reacher-v5'\]$"):
        recipe.run(recipe.load_config("eval", [*args, "task=Hopper-v5"]))
    with pytest.raises(ConfigError, match="multitask checkpoint of 2 tasks, neither mt30 nor mt80: name them"):
        recipe.run(recipe.load_config("eval", [f"checkpoint={path}", "episodes=1", "mpc=false"]))
