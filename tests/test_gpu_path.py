"""The CUDA path, checked without a GPU: device arguments, where storage and batches live, the precision choice, the
RNG states a checkpoint holds, the planner's generator use and the compile fallback (issue 33, findings 1-8).

CUDA's queries are stubbed (``fake_cuda``); a batch's journey to the model is checked with the ``meta`` device,
which any tensor can be moved to without a GPU.
"""

from __future__ import annotations

import subprocess
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from tensordict import TensorDict

from tdmpc2_trl.config.schema import CollectorConfig, ModelConfig
from tdmpc2_trl.data.offline_dataset import make_offline_buffer
from tdmpc2_trl.data.replay_buffer import add, make_replay_buffer, sample_batch
from tdmpc2_trl.learning import update as update_module
from tdmpc2_trl.learning.loss import TDMPC2Loss
from tdmpc2_trl.learning.update import TDMPC2Update, make_optimizers
from tdmpc2_trl.networks.world_model import WorldModel
from tdmpc2_trl.planning.planner import PlannerNoise, TDMPC2Planner
from tdmpc2_trl.platform.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from tdmpc2_trl.platform.compiling import EagerOnFailure
from tdmpc2_trl.platform.precision import bf16_is_fast
from tdmpc2_trl.run import collectors
from tdmpc2_trl.run.make import make_autocast_dtype

CPU, META, CUDA0 = torch.device("cpu"), torch.device("meta"), torch.device("cuda", 0)


@pytest.fixture
def fake_cuda(monkeypatch):
    """Two CUDA devices: 0 a V100 (compute capability 7.0, bf16 only emulated), 1 an A100 (8.0); current: 0."""
    caps = {0: (7, 0), 1: (8, 0)}
    current = {"index": 0}

    def index(device=None) -> int:
        if device is None:
            return current["index"]
        device = torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
        return current["index"] if device.index is None else device.index

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: current["index"])
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: caps[index(device)])
    # torch's own answer counts emulation as support unless asked not to (the trap of finding 5)
    monkeypatch.setattr(
        torch.cuda,
        "is_bf16_supported",
        lambda including_emulation=True: including_emulation or caps[current["index"]] >= (8, 0),
    )
    return current


def tiny_model() -> WorldModel:
    cfg = ModelConfig(latent_dim=16, enc_dim=32, mlp_dim=32, num_enc_layers=2, num_mlp_layers=2, num_q=5, horizon=3)
    return WorldModel(cfg, (3,), 2)


def transitions(num_envs: int, steps: int, traj: int = 0) -> list[TensorDict]:
    """``steps`` collector batches ``[num_envs, 1]`` of one trajectory per env (ids ``traj + env``)."""
    out = []
    for t in range(steps):
        obs = torch.full((num_envs, 1, 3), float(t))
        out.append(
            TensorDict(
                {
                    "observation": obs,
                    "action": torch.zeros(num_envs, 1, 2),
                    "collector": {"traj_ids": (traj + torch.arange(num_envs)).view(num_envs, 1)},
                    "next": {
                        "observation": obs + 1,
                        "reward": torch.ones(num_envs, 1, 1),
                        "terminated": torch.zeros(num_envs, 1, 1, dtype=torch.bool),
                    },
                },
                [num_envs, 1],
            )
        )
    return out


# ---- findings 1 and 4: the replay storage stays on the CPU; batches go to the model's device ----


@pytest.mark.parametrize("storage", ["memory", "memmap"])
def test_a_cuda_run_keeps_its_replay_storage_on_the_cpu(storage, fake_cuda, tmp_path):
    # before: memmap raised TorchRL's ValueError (a memmap storage cannot live on CUDA), and a memory storage was
    # allocated on the GPU at full capacity (74 KB per pixel transition)
    rb = make_replay_buffer(
        capacity=100, batch_size=2, horizon=3, storage=storage, scratch_dir=tmp_path, device=torch.device("cuda")
    )
    assert rb.storage.device == CPU
    assert rb.batch_device == CUDA0


@pytest.mark.parametrize("storage", ["memory", "memmap"])
def test_replay_batches_are_moved_to_the_model_device(storage, tmp_path):
    rb = make_replay_buffer(capacity=100, batch_size=4, horizon=3, storage=storage, scratch_dir=tmp_path, device=META)
    for data in transitions(2, 10):
        add(rb, data)
    assert rb.storage[:].device == CPU
    batch = sample_batch(rb)
    assert batch.shape == (4, 3) and batch.device == META
    assert batch["observation"].device == META and batch["next", "terminated"].device == META


def test_a_batch_for_a_gpu_is_pinned_and_copied_without_blocking(fake_cuda, monkeypatch):
    rb = make_replay_buffer(capacity=100, batch_size=4, horizon=3, device=torch.device("cuda"))
    for data in transitions(2, 10):
        add(rb, data)
    calls = []
    monkeypatch.setattr(TensorDict, "pin_memory", lambda self, *a, **k: calls.append("pin_memory") or self)
    monkeypatch.setattr(TensorDict, "to", lambda self, *a, **k: calls.append(("to", *a, k)) or self)
    sample_batch(rb)
    assert calls == ["pin_memory", ("to", CUDA0, {"non_blocking": True})]


# ---- finding 2: offline batches reach the model's device; the update autocasts on the model's device ----


def test_offline_batches_are_moved_to_the_model_device(tmp_path):
    n = 12
    data = TensorDict(
        {
            "observation": torch.arange(n, dtype=torch.float32).view(n, 1).expand(n, 3).clone(),
            "action": torch.zeros(n, 2),
            "task": torch.zeros(n, dtype=torch.long),
            "episode": torch.arange(n) // 6,
            "next": {
                "observation": torch.zeros(n, 3),
                "reward": torch.zeros(n, 1),
                "terminated": torch.zeros(n, 1, dtype=torch.bool),
            },
        },
        [n],
    ).memmap_(prefix=tmp_path / "data")
    buffer = make_offline_buffer(data, batch_size=4, horizon=3, device=META)
    batch = sample_batch(buffer)
    assert batch.shape == (4, 3) and batch.device == META and batch["observation"].device == META


class _Stop(Exception):
    pass


def test_the_update_autocasts_on_the_device_of_the_model_not_of_the_batch(monkeypatch):
    # before: the device came from the batch, so an unmoved CPU batch turned autocast off for a CUDA model
    seen = []

    def spy(device, dtype):
        seen.append(torch.device(device))
        raise _Stop

    monkeypatch.setattr(update_module, "autocast", spy)
    wm = tiny_model()
    loss = TDMPC2Loss(wm, 0.99)
    updater = TDMPC2Update(loss, *make_optimizers(loss), autocast_dtype=torch.bfloat16)
    with pytest.raises(_Stop):
        updater(TensorDict({"observation": torch.zeros(4, 3, 3)}, [4, 3]).to(META))
    assert seen == [CPU]


# ---- finding 3: a resume rebuilds the storage on the CPU and keeps sending batches to the model's device ----


def test_a_resumed_buffer_stores_on_the_cpu_and_samples_onto_the_model_device(tmp_path):
    rb = make_replay_buffer(capacity=100, batch_size=4, horizon=3, device=META)
    for data in transitions(2, 10):
        add(rb, data)
    path = save_checkpoint(tmp_path / "step_000000020.pt", {"world_model": {}, "replay_buffer": rb.state_dict()})
    state = load_checkpoint(path)  # map_location="cpu", as every resume
    resumed = make_replay_buffer(capacity=100, batch_size=4, horizon=3, device=META)
    resumed.load_state_dict(state["replay_buffer"])
    for data in transitions(2, 4, traj=2):  # the first write after the resume
        add(resumed, data)
    assert len(resumed) == 28 and resumed.storage[:]["observation"].device == CPU
    assert sample_batch(resumed).device == META


# ---- finding 5: bf16 only where the asked device runs it natively; TF32 for fp32 matmuls on CUDA ----


def test_auto_precision_is_bf16_only_on_a_device_with_native_bf16(fake_cuda):
    assert not bf16_is_fast(torch.device("cuda", 0))  # V100-class: bf16 emulated, slower than fp32
    assert bf16_is_fast(torch.device("cuda", 1))  # asked for device 1 while device 0 is current
    assert not bf16_is_fast(torch.device("cuda"))  # "cuda": the current device
    fake_cuda["index"] = 1
    assert bf16_is_fast(torch.device("cuda"))
    assert make_autocast_dtype("auto", torch.device("cuda", 0)) is None
    assert make_autocast_dtype("auto", torch.device("cuda", 1)) is torch.bfloat16


def test_fp32_matmuls_use_tf32_on_cuda_only(fake_cuda):
    matmul = torch.backends.cuda.matmul
    before = matmul.fp32_precision
    try:
        matmul.fp32_precision = "ieee"
        make_autocast_dtype("fp32", CPU)
        assert matmul.fp32_precision == "ieee"
        assert make_autocast_dtype("fp32", torch.device("cuda", 0)) is None
        assert matmul.fp32_precision == "tf32"
    finally:
        matmul.fp32_precision = before


# ---- finding 6: a checkpoint holds every CUDA generator's state and a resume restores them ----


def test_a_checkpoint_holds_and_restores_the_cuda_rng_state_of_every_device(monkeypatch, tmp_path):
    states = [torch.arange(16, dtype=torch.uint8), torch.arange(16, 32, dtype=torch.uint8)]
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)  # a GPU run has used CUDA
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [s.clone() for s in states])
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: restored.append((device, state)))
    path = save_checkpoint(tmp_path / "step_000000001.pt", {"world_model": {}, "rng": rng_state()})
    saved = load_checkpoint(path)["rng"]  # weights_only: the states must be plain tensors
    assert len(saved["cuda"]) == 2 and all(torch.equal(a, b) for a, b in zip(saved["cuda"], states))
    set_rng_state(saved)
    assert [d for d, _ in restored] == [0, 1] and all(torch.equal(s, states[d]) for d, s in restored)
    # a machine with fewer GPUs restores those it has
    restored.clear()
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    set_rng_state(saved)
    assert [d for d, _ in restored] == [0]


def test_a_gpu_checkpoints_rng_is_ignored_where_there_is_no_gpu(monkeypatch):
    state = rng_state()
    assert state["cuda"] == []  # this machine has no GPU
    expected = torch.rand(3)
    torch.set_rng_state(state["torch"])
    set_rng_state({**state, "cuda": [torch.zeros(16, dtype=torch.uint8)]})  # e.g. evaluating a GPU run on a CPU
    assert torch.equal(torch.rand(3), expected)


# ---- finding 7: every draw of the planner's noise comes from one generator, on the noise's device ----


def test_planner_noise_draws_the_q_heads_on_its_own_device(monkeypatch):
    planner = TDMPC2Planner(
        tiny_model(), discount=0.99, horizon=3, num_samples=16, num_pi_trajs=2, num_elites=4, iterations=2
    )
    real, calls = torch.randperm, []

    def spy(*args, **kwargs):
        calls.append(kwargs.get("device"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "randperm", spy)
    # before: the Q heads were drawn on the CPU (with the CUDA generator, if one was given) and copied over
    noise = PlannerNoise(planner, 2, device=META)
    assert calls == [META, META] and noise.head_draws.device == META
    calls.clear()
    g = torch.Generator().manual_seed(0)
    first = PlannerNoise(planner, 2, generator=g).head_draws
    g.manual_seed(0)
    assert torch.equal(PlannerNoise(planner, 2, generator=g).head_draws, first)
    assert calls == [CPU] * 4


# ---- finding 8: the compile fallback hides compile failures only, never an out-of-memory or a device error ----


def test_out_of_memory_in_a_compiled_call_is_raised_and_compilation_kept():
    eager_calls = []

    def compiled(x):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    fn = EagerOnFailure(compiled, lambda x: eager_calls.append(x), "the planner")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(torch.OutOfMemoryError, match="Tried to allocate 2.00 GiB"):
            fn(torch.zeros(2))
    assert not caught and not eager_calls and fn.compiled is compiled


def test_out_of_memory_wrapped_by_the_compiler_is_raised():
    def compiled(x):
        try:
            raise torch.OutOfMemoryError("CUDA out of memory while autotuning")
        except torch.OutOfMemoryError as err:
            raise RuntimeError("backend 'inductor' raised an error") from err

    fn = EagerOnFailure(compiled, lambda x: x, "the update")
    with pytest.raises(RuntimeError, match="backend 'inductor' raised"):
        fn(torch.zeros(2))
    assert fn.compiled is compiled


def test_an_error_that_eager_also_raises_is_not_reported_as_a_compile_failure():
    message = "Expected all tensors to be on the same device, but found at least two devices, cuda:0 and cpu!"

    def fails(x):
        raise RuntimeError(message)

    fn = EagerOnFailure(fails, fails, "the planner")
    fn.compiled = lambda x: fails(x)  # a distinct compiled callable, failing as the function itself does
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(RuntimeError, match="same device"):
            fn(torch.zeros(2))
    assert not [w for w in caught if "compile" in str(w.message)]


def test_a_genuine_compile_failure_still_falls_back_to_eager():
    def compiled(x):
        raise ImportError("no C++ compiler")

    fn = EagerOnFailure(compiled, lambda x: x + 1, "the planner")
    with pytest.warns(RuntimeWarning, match=r"torch.compile of the planner failed \(ImportError: no C\+\+ compiler"):
        assert fn(torch.zeros(1)).item() == 1
    assert fn(torch.zeros(1)).item() == 1  # eager from then on, without a second warning


# ---- performance: envs step on the CPU, the policy on the run device, batches are stored on the CPU ----


class _Recorder:
    """Stands in for a TorchRL collector class and keeps its keyword arguments."""

    kwargs: dict = {}

    def __init__(self, *args, **kwargs) -> None:
        type(self).kwargs = kwargs

    def shutdown(self) -> None:
        pass


@pytest.mark.parametrize("workers", [1, 2])
def test_the_collector_gets_cpu_envs_and_storage_and_a_policy_on_the_run_device(workers, monkeypatch):
    monkeypatch.setattr(collectors, "Collector", _Recorder)
    monkeypatch.setattr(collectors, "_MultiSyncCollector", _Recorder)
    monkeypatch.setattr(collectors.atexit, "register", lambda fn: None)
    collectors.make_collector(
        SimpleNamespace(num_envs=2),
        CollectorConfig(workers=workers),
        object(),
        total_frames=10,
        init_random_frames=0,
        device=CUDA0,
    )
    kw = _Recorder.kwargs
    assert (kw["env_device"], kw["policy_device"], kw["storing_device"]) == (CPU, CUDA0, CPU)
    assert "device" not in kw


def test_a_cpu_collector_accepts_the_device_arguments():
    from tdmpc2_trl.envs.factory import EnvFactory

    planner = TDMPC2Planner(
        tiny_model(), discount=0.99, horizon=3, num_samples=16, num_pi_trajs=2, num_elites=4, iterations=1
    )
    env = EnvFactory("Pendulum-v1", "state", 0, 2, "cpu", (planner.primer(CPU),))
    collector = collectors.make_collector(
        env, CollectorConfig(), planner, total_frames=4, init_random_frames=0, device=CPU
    )
    try:
        assert (collector.env_device, collector.policy_device, collector.storing_device) == (CPU, CPU, CPU)
        batch = next(iter(collector))
        assert batch.device == CPU and batch.shape == (2, 1)
    finally:
        collector.shutdown()


def test_the_gpu_check_script_is_valid_bash():
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
