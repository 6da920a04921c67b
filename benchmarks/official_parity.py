#!/usr/bin/env python
"""Real official TD-MPC2 checkpoints, read by this project, against the official agent itself (outside CI).

    bash ../shared/bench-official/setup.sh OFFICIAL_GIT_DIR /tmp/official      # the official sources, CPU-patched
    OFFICIAL_SRC=/tmp/official/cpu_src python benchmarks/official_parity.py [--cases 1m,5m,1m-episodic,1m-mt3]

For each case the official code builds its agent, updates it on random batches (so no layer keeps its initial
values) and saves it with its own ``agent.save``; this project reads the file (``run/official_checkpoint.py``) and
compares, in fp32 on the same inputs: encoder, dynamics, reward logits, termination logit (episodic), all Q heads'
logits, π's action for the same ε, and the planned action of one MPPI call fed the official call's own random
draws (recorded while the official agent plans). Prints one line per case and quantity with the largest absolute
difference and the largest official value, and exits 1 if a difference exceeds ``--atol`` (1e-5) times
max(1, that value): fp32 keeps about 7 significant digits, so trained networks with logits of 10 or more are held to
the same relative precision as untrained ones.

``--load FILE`` (one case): the official agent loads FILE with its own ``agent.load`` instead of the random updates,
for example a network trained here and written in the official layout
(``python -m tdmpc2_trl.run.official_checkpoint RUN_DIR --to-official --out FILE``); ``--save OUT`` then writes it
again with the official ``agent.save``: a file the official code itself wrote, for ``init_from=`` or evaluation.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BENCH = os.path.join(ROOT, "..", "shared", "bench-official")
sys.path.insert(0, ROOT)

# (model size, obs dim, action dim, episodic, multitask task names)
CASES = {
    "1m": ("1m", 5, 2, False, None),
    "5m": ("5m", 18, 4, False, None),
    "1m-episodic": ("1m", 17, 6, True, None),
    "1m-mt3": ("1m", None, None, False, ["walker-stand", "cartpole-swingup", "reacher-easy"]),
    "1m-pendulum": ("1m", 3, 1, False, None),  # Pendulum-v1's sizes
}


class DrawRecorder:
    """Records every random draw the official ``_plan`` makes (``randn``, ``randn_like``, ``randperm``,
    ``exponential_``), in call order, by wrapping those torch functions."""

    def __init__(self, torch):
        self.torch, self.draws = torch, []

    def __enter__(self):
        t = self.torch
        self.saved = (t.randn, t.randn_like, t.randperm, t.Tensor.exponential_)
        randn, randn_like, randperm, exponential_ = self.saved

        def rec(kind, fn):
            def wrapped(*args, **kwargs):
                out = fn(*args, **kwargs)
                self.draws.append((kind, out.clone()))
                return out

            return wrapped

        t.randn, t.randn_like, t.randperm = rec("randn", randn), rec("randn", randn_like), rec("perm", randperm)
        t.Tensor.exponential_ = rec("exp", exponential_)
        return self

    def __exit__(self, *exc):
        t = self.torch
        t.randn, t.randn_like, t.randperm, t.Tensor.exponential_ = self.saved


def official_agent(case, bo, TDMPC2, torch, load=None):
    size, obs_dim, action_dim, episodic, tasks = CASES[case]
    if tasks:
        from tdmpc2_trl.networks.tasks import official_task_spec

        specs = [official_task_spec(t) for t in tasks]
        obs_dim, action_dim = max(s.obs_dim for s in specs), max(s.action_dim for s in specs)
    args = bo.parse_args(
        [
            "--what",
            "update",
            "--model",
            size,
            "--obs-dim",
            str(obs_dim),
            "--action-dim",
            str(action_dim),
            "--batch",
            "32",
            "--no-compile",
        ]
    )
    _, cfg = bo.make_cfg(args)
    cfg.episodic = episodic
    if tasks:
        cfg.multitask, cfg.tasks, cfg.task_dim = True, tasks, 96
        cfg.action_dims = [s.action_dim for s in specs]
        cfg.episode_lengths = [s.episode_length for s in specs]
    torch.manual_seed(0)
    agent = TDMPC2(cfg)
    batch = bo.FixedBatch(cfg, torch.device("cpu"))
    if tasks:  # the official multitask update samples task ids with the batch
        obs, action, reward, terminated, _ = batch.sample()
        task = torch.randint(len(tasks), (obs.shape[1],))
        batch.sample = lambda: (obs, action, reward, terminated, task)
    if load:  # the official loader: its key conversion, then a strict load_state_dict
        agent.load(load)
        return agent, cfg, tasks
    for _ in range(3):
        agent.update(batch)
    return agent, cfg, tasks


def gap(official, ours) -> tuple[float, float]:
    """The largest absolute difference and the largest absolute official value."""
    return float((official - ours).abs().max()), float(official.abs().max())


def compare(case: str, atol: float, load: str | None = None, save: str | None = None) -> bool:
    import torch

    sys.path.insert(0, BENCH)
    import bench_official as bo  # noqa: E402  (puts OFFICIAL_SRC on sys.path)
    from tdmpc2 import TDMPC2  # noqa: E402

    from tdmpc2_trl.config.schema import ModelConfig, PlannerConfig
    from tdmpc2_trl.networks.world_model import WorldModel
    from tdmpc2_trl.platform.checkpoint import load_checkpoint
    from tdmpc2_trl.run.finetune import checkpoint_task_set
    from tdmpc2_trl.run.make import make_planner
    from tdmpc2_trl.run.official_checkpoint import official_converter

    agent, cfg, tasks = official_agent(case, bo, TDMPC2, torch, load)
    if save:
        agent.save(save)
        print(f"{case}: wrote {save} with the official agent.save")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"official-{case}.pt")
        agent.save(path)
        state = load_checkpoint(path, convert=official_converter(tasks))
    task_set = checkpoint_task_set(state) if tasks else None
    meta = state["task"]
    model_cfg = ModelConfig.from_dict(state["config"]["model"])
    wm = WorldModel(
        model_cfg,
        meta["obs_dim"],
        meta["action_dim"],
        episodic=meta["episodic"],
        task_set=task_set,
    )
    wm.load_state_dict(state["world_model"])
    wm.eval()
    agent.model.eval()
    m = agent.model
    torch.manual_seed(1)
    B, A = 64, cfg.action_dim
    obs = torch.randn(B, meta["obs_dim"])
    a = torch.rand(B, A) * 2 - 1
    task = torch.randint(len(tasks), (B,)) if tasks else None
    if tasks:
        a = a * m._action_masks[task]
    diffs = {}
    with torch.no_grad():
        z_off, z = m.encode(obs, task), wm.encode(obs, task)
        diffs["encoder"] = gap(z_off, z)
        diffs["dynamics"] = gap(m.next(z_off, a, task), wm.next(z, a, task))
        diffs["reward"] = gap(m.reward(z_off, a, task), wm.reward_logits(z, a, task))
        if meta["episodic"]:
            t_off = m.termination(z_off, task, unnormalized=True)
            diffs["termination"] = gap(t_off, wm.termination_logit(z, a, task))
        q_off = m.Q(z_off, a, task, return_type="all")
        diffs["Q (all heads)"] = gap(q_off, wm.q_logits(z, a, task=task))
        rec = DrawRecorder(torch)
        with rec:
            act_off, info = m.pi(z_off, task)
        eps = rec.draws[0][1]
        diffs["pi action"] = gap(act_off, wm.pi_sample(z, eps, task))
        diffs["pi mean"] = gap(info["mean"], wm.pi(z, task)[1])

        # One MPPI call: the official agent's own draws, replayed into this project's planner.
        one_obs, one_task = obs[:1], (task[:1] if tasks else None)
        agent._prev_mean.zero_()
        with DrawRecorder(torch) as rec:
            a_off = agent._plan(one_obs, t0=True, eval_mode=True, task=one_task)
        # a multitask planner discounts each task with its own (from the task set), as the official agent
        planner = make_planner(
            PlannerConfig(compile=False),
            wm,
            None,
            float(torch.as_tensor(agent.discount).reshape(-1)[0]),
            horizon=model_cfg.horizon,
        )
        noise = replayed_noise(planner, rec.draws, torch)
        a_ours, _ = planner.act(one_obs, None, noise, explore=False, task=one_task)
        diffs["planned action"] = gap(a_off.reshape(-1), a_ours.reshape(-1))
    ok = True
    for name, (d, scale) in diffs.items():
        good = d <= atol * max(1.0, scale)  # fp32: a relative bound once the values exceed 1 (trained Q logits)
        ok &= good
        print(
            f"{case:12s} {name:16s} max |official - ours| = {d:.2e} (largest |official| {scale:.3g}) "
            f"{'ok' if good else 'FAIL'}"
        )
    return ok


def replayed_noise(planner, draws, torch):
    """A ``PlannerNoise`` holding the official call's draws in this planner's layout (batch 1)."""
    from tdmpc2_trl.planning.planner import PlannerNoise

    H, P, I = planner.horizon, planner.num_pi_trajs, planner.iterations
    it = iter(draws)
    prior = [next(it)[1] for _ in range(H)]  # π's ε of the prior trajectories, one per step ([P, A])
    candidates, terminal, heads = [], [], []
    for _ in range(I):
        candidates.append(next(it)[1].transpose(0, 1))  # [H, N-P, A] -> [N-P, H, A]
        terminal.append(next(it)[1])  # π(z_H)'s ε, [N, A]
        heads.append(next(it)[1][:2])  # the two Q heads averaged
    exp = next(it)[1]
    noise = object.__new__(PlannerNoise)
    noise.draws = {
        "prior": torch.stack(prior).unsqueeze(0),
        "candidates": torch.stack(candidates).unsqueeze(0),
        "terminal": torch.stack(terminal).unsqueeze(0),
        "gumbel": -exp.log().unsqueeze(0),
        "explore": torch.zeros(1, planner.action_dim),
    }
    noise.head_draws = torch.stack(heads)
    assert P == prior[0].shape[0]
    return noise


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--atol", type=float, default=1e-5)
    p.add_argument("--load", default=None, help="an official-layout file for the official agent to load (one case)")
    p.add_argument("--save", default=None, help="write the official agent's checkpoint here (one case)")
    a = p.parse_args()
    if (a.load or a.save) and "," in a.cases:
        print("error: --load and --save take one case (--cases NAME)", file=sys.stderr)
        return 2
    if not os.environ.get("OFFICIAL_SRC"):
        print(
            "error: set OFFICIAL_SRC to the official sources (../shared/bench-official/setup.sh makes them)",
            file=sys.stderr,
        )
        return 2
    import torch

    torch.set_num_threads(1)
    ok = all([compare(case, a.atol, a.load, a.save) for case in a.cases.split(",")])
    print("all within" if ok else "some differ beyond", f"atol={a.atol} x max(1, |official|)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
