"""TorchRL compatibility: private TorchRL/tensordict internals are touched only in ``tdmpc2_trl/_compat.py``, and
each of its wrappers does what the package relies on, on the installed TorchRL (0.14.1 or the nightly).

The scan (``private_accesses``) reads the package and the recipes with ``ast`` and reports, outside
``_compat.py``:
- imports of private TorchRL/tensordict modules or names (``from torchrl.weight_update import _ray``);
- private attributes the project does not define itself: ``x._name`` (also ``self._name``), ``getattr(x, "_name")``
  and ``d["_name"]``; attributes reached from a non-TorchRL module (``torch._dynamo``) are out of its scope.
``test_no_private_overrides`` adds what a scan cannot see: a project class overriding a private member of a
TorchRL/tensordict base class (except LossModule's documented subclass hooks).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import textwrap
import warnings
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import torch
from tensordict import TensorDict, TensorDictParams
from torch import nn
from torchrl.collectors import BaseCollector
from torchrl.data import LazyMemmapStorage
from torchrl.envs import EnvBase
from torchrl.objectives import LossModule

import tdmpc2_trl
from tdmpc2_trl import _compat
from tdmpc2_trl.data.replay_buffer import add, make_replay_buffer, sample_batch
from tdmpc2_trl.envs.factory import make_env

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tdmpc2_trl"
COMPAT = PACKAGE / "_compat.py"
TORCHRL_PACKAGES = ("torchrl", "tensordict")
# TorchRL's documented subclass protocols: EnvBase (_reset, _step, _set_seed), Transform (_call, _reset, _step,
# _apply_transform, _inv_call, _inv_apply_transform) and LossModule (_AcceptedKeys, _forward_value_estimator_keys).
DOCUMENTED_HOOKS = {
    "_reset",
    "_step",
    "_set_seed",
    "_call",
    "_apply_transform",
    "_inv_call",
    "_inv_apply_transform",
    "_AcceptedKeys",
    "_forward_value_estimator_keys",
}
# attribute-name arguments of these calls, and the names that module registration calls define
NAME_ARG_CALLS = {"getattr", "hasattr", "setattr", "delattr"}
REGISTER_CALLS = {"register_buffer", "register_parameter", "register_module", "add_module"}


def is_private(name: str) -> bool:
    """``_name`` but not ``__dunder__``."""
    return name.startswith("_") and not name.startswith("__")


def scanned_files() -> list[Path]:
    """The package's and the recipes' Python files, ``_compat.py`` excepted."""
    files = sorted(PACKAGE.rglob("*.py")) + sorted((ROOT / "recipes").rglob("*.py"))
    return [f for f in files if f != COMPAT]


def bound_names(target: ast.expr) -> list[str]:
    """Names an assignment target binds: ``_a``, ``self._a`` / ``cls._a`` (not ``other._a``: that writes
    someone else's attribute) and ``d["_a"]`` (``self.__dict__["_a"]``)."""
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, ast.Subscript) and isinstance(target.slice, ast.Constant):
        return [str(target.slice.value)]
    if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id in ("self", "cls"):
        return [target.attr]
    if isinstance(target, (ast.Tuple, ast.List)):
        return [name for element in target.elts for name in bound_names(element)]
    if isinstance(target, ast.Starred):
        return bound_names(target.value)
    return []


def defined_private_names(trees: list[ast.AST]) -> set[str]:
    """Private names the project binds itself: defs, classes, assignments (``self._a = ...``, ``_a = ...``) and
    module registrations (``register_buffer("_a", ...)``)."""
    names: set[str] = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names.update(name for target in targets for name in bound_names(target))
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in REGISTER_CALLS
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                names.add(str(node.args[0].value))
    return {n for n in names if is_private(n)}


def foreign_modules(tree: ast.AST) -> set[str]:
    """Local names bound to modules other than TorchRL/tensordict and this package (``torch``, ``np``, ``nn``)."""
    bound: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] not in TORCHRL_PACKAGES:
                    bound.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] not in TORCHRL_PACKAGES:
                bound.update(alias.asname or alias.name for alias in node.names)
    return bound


def private_imports(node: ast.AST) -> list[str]:
    """Private TorchRL/tensordict modules or names an import statement reaches, as dotted paths."""
    if isinstance(node, ast.Import):
        paths = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        paths = [f"{node.module}.{alias.name}" for alias in node.names]
    else:
        return []
    return [p for p in paths if p.split(".")[0] in TORCHRL_PACKAGES and any(map(is_private, p.split(".")))]


def root_name(node: ast.expr) -> str | None:
    """``a`` for ``a.b.c`` / ``a[0].b``; ``None`` when the chain starts at a call or a literal."""
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def accessed_private_names(tree: ast.AST, foreign: set[str]) -> list[tuple[int, str]]:
    """``(line, name)`` of private attributes read or written in ``tree``, except those reached from a
    foreign module."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and is_private(node.attr) and root_name(node.value) not in foreign:
            found.append((node.lineno, node.attr))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in NAME_ARG_CALLS
            and len(node.args) > 1
            and isinstance(node.args[1], ast.Constant)
        ):
            found.append((node.lineno, str(node.args[1].value)))
        elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            found.append((node.lineno, str(node.slice.value)))
    return sorted((line, name) for line, name in found if is_private(name))


def private_accesses(sources: dict[str, str]) -> list[str]:
    """``"file:line: what"`` for every private TorchRL/tensordict access in ``sources`` (name -> code)."""
    trees = {name: ast.parse(code) for name, code in sources.items()}
    own = defined_private_names(list(trees.values()))
    problems = []
    for name, tree in trees.items():
        found = [(node.lineno, f"imports {path}") for node in ast.walk(tree) for path in private_imports(node)]
        found += [
            (line, f"uses {attr}")
            for line, attr in accessed_private_names(tree, foreign_modules(tree))
            if attr not in own
        ]
        problems += [f"{name}:{line}: {what}" for line, what in sorted(found)]
    return problems


def test_private_internals_are_touched_only_in_compat():
    sources = {str(f.relative_to(ROOT)): f.read_text() for f in scanned_files()}
    assert "tdmpc2_trl/data/replay_buffer.py" in sources and "recipes/train.py" in sources
    problems = private_accesses(sources)
    assert not problems, "private TorchRL/tensordict internals outside _compat.py:\n" + "\n".join(problems)


def test_compat_itself_is_what_the_scan_catches():
    # the scan is not vacuous: the wrappers' own bodies would all be reported outside _compat.py
    problems = " ".join(private_accesses({"_compat.py": COMPAT.read_text()}))
    for name in (
        "_init",
        "_is_full",
        "_set_last_cursor",
        "_cursor",
        "_storage",
        "weight_update._ray",
        "_DIST_TIMEOUT",
        "_weight_sync_schemes",
        "_envs",
        "_env",
        "_modules",
    ):
        assert name in problems


def test_scan_reports_each_kind_of_access():
    bad = {
        "a.py": "import tensordict._td\n"
        "from torchrl.weight_update import _ray\n"
        "from torchrl.envs.utils import _terminated_or_truncated\n"
        "storage._init(x)\n"
        "ray_sync._DIST_TIMEOUT = 1\n"
        "self._writer.cursor = 1\n"
        "getattr(env, '_envs', None)\n"
        "state['_storage']\n"
    }
    problems = private_accesses(bad)
    assert [p.split(": ", 1)[1] for p in problems] == [
        "imports tensordict._td",
        "imports torchrl.weight_update._ray",
        "imports torchrl.envs.utils._terminated_or_truncated",
        "uses _init",
        "uses _DIST_TIMEOUT",
        "uses _writer",
        "uses _envs",
        "uses _storage",
    ]
    assert problems[3].startswith("a.py:4:")


def test_scan_allows_own_privates_and_foreign_modules():
    fine = {
        "a.py": "import torch\nfrom torch import nn\nfrom . import envs\n"
        "class A:\n    def __init__(self):\n        self._cache = None\n"
        "    def _step(self):\n        return self._cache, self.__class__\n"
        "def f(a):\n    torch._dynamo.reset(); nn._reduction; a._step(); envs._helper()\n"
        "    return getattr(a, '_cache'), {'_k': 1}['_k']\n",
        "b.py": "def _helper():\n    _k = 1\n    return _k\n",
    }
    assert private_accesses(fine) == []


def torchrl_subclasses() -> list[type]:
    """Classes defined in this package (``_compat`` excepted) with a TorchRL/tensordict base class; a module
    whose optional third-party dependency is not installed is left to the source scan."""
    found = []
    for info in pkgutil.walk_packages(tdmpc2_trl.__path__, "tdmpc2_trl."):
        if info.name == "tdmpc2_trl._compat":
            continue
        try:
            module = importlib.import_module(info.name)
        except ModuleNotFoundError as err:
            if (err.name or "").split(".")[0] in (*TORCHRL_PACKAGES, "tdmpc2_trl"):
                raise
            continue
        for cls in vars(module).values():
            if (
                inspect.isclass(cls)
                and cls.__module__ == info.name
                and any(base.__module__.split(".")[0] in TORCHRL_PACKAGES for base in cls.__mro__[1:])
            ):
                found.append(cls)
    return found


def class_body_names(cls: type) -> set[str]:
    """Names the class statement itself defines (methods, nested classes, class attributes), not those its
    metaclass or ``__init_subclass__`` add (``_abc_impl``)."""
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    names = {node.name for node in body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    for node in body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            names.update(
                n for t in (node.targets if isinstance(node, ast.Assign) else [node.target]) for n in bound_names(t)
            )
    return names


def test_no_private_overrides():
    classes = torchrl_subclasses()
    assert {"SliceReplayBuffer", "TDMPC2Loss", "TDMPC2Planner"} <= {c.__name__ for c in classes}
    problems = []
    for cls in classes:
        bases = [b for b in cls.__mro__[1:] if b.__module__.split(".")[0] in TORCHRL_PACKAGES]
        for name in class_body_names(cls):
            if is_private(name) and name not in DOCUMENTED_HOOKS and any(hasattr(b, name) for b in bases):
                problems.append(f"{cls.__module__}.{cls.__name__}.{name}")
    assert not problems, f"overrides of private TorchRL members outside _compat.py: {problems}"


# ---- the wrappers ----


def trajectory(t0: int, length: int, traj: int = 0) -> TensorDict:
    """``length`` consecutive steps of one env starting at step ``t0`` (a ``[length]`` batch)."""
    steps = torch.arange(t0, t0 + length)
    return TensorDict(
        {
            "observation": steps.float().unsqueeze(-1),
            "action": torch.zeros(length, 1),
            "step_count": steps.unsqueeze(-1),
            ("collector", "traj_ids"): torch.full((length,), traj),
            ("next", "observation"): (steps + 1).float().unsqueeze(-1),
            ("next", "reward"): torch.zeros(length, 1),
            ("next", "done"): torch.zeros(length, 1, dtype=torch.bool),
            ("next", "terminated"): torch.zeros(length, 1, dtype=torch.bool),
        },
        batch_size=[length],
    )


def test_no_index_writeback_lets_num_envs_by_one_batches_in():
    rb = make_replay_buffer(capacity=20, batch_size=2, horizon=2)
    batch = torch.stack([trajectory(0, 1, traj=0), trajectory(0, 1, traj=1)])  # [num_envs=2, T=1]
    for _ in range(3):
        rb.extend(batch)
    assert len(rb) == 6 and "index" not in batch.keys()


def test_allocate_storage_puts_memory_maps_in_scratch_dir(tmp_path):
    storage = LazyMemmapStorage(10, scratch_dir=str(tmp_path), ndim=2)
    _compat.allocate_storage(storage, trajectory(0, 1).unsqueeze(0))
    assert storage.initialized and (tmp_path / "observation.memmap").exists()


def test_saved_storage_reads_a_buffer_state_dict():
    rb = make_replay_buffer(capacity=10, batch_size=2, horizon=2)
    assert _compat.saved_storage(rb.state_dict()) is None
    add(rb, trajectory(0, 4))
    saved = _compat.saved_storage(rb.state_dict())
    assert saved.shape[1] == 1 and (saved[:4, 0]["step_count"].squeeze(-1) == torch.arange(4)).all()


def test_restore_last_cursor_keeps_slices_off_the_overwrite_point():
    rb = make_replay_buffer(capacity=6, batch_size=32, horizon=3)
    add(rb, trajectory(0, 9))  # one trajectory longer than the buffer: rows hold steps 6 7 8 3 4 5
    rb2 = make_replay_buffer(capacity=6, batch_size=32, horizon=3)
    rb2.load_state_dict(rb.state_dict())  # calls restore_last_cursor
    for _ in range(5):
        assert (sample_batch(rb2)["step_count"].squeeze(-1).diff(dim=1) == 1).all()


def test_raise_ray_weight_sync_timeout_never_lowers_it(monkeypatch):
    ray_sync = importlib.import_module("torchrl.weight_update._ray")
    monkeypatch.setattr(ray_sync, "_DIST_TIMEOUT", timedelta(seconds=60))
    _compat.raise_ray_weight_sync_timeout(timedelta(minutes=10))
    assert ray_sync._DIST_TIMEOUT == timedelta(minutes=10)
    _compat.raise_ray_weight_sync_timeout(timedelta(seconds=1))
    assert ray_sync._DIST_TIMEOUT == timedelta(minutes=10)


def test_shutdown_weight_sync_stops_each_scheme():
    assert "_weight_sync_schemes" in vars(BaseCollector)  # the attribute the wrapper reads still exists upstream
    stopped = []
    schemes = {k: SimpleNamespace(shutdown=lambda k=k: stopped.append(k)) for k in ("policy", "critic")}
    _compat.shutdown_weight_sync(SimpleNamespace(_weight_sync_schemes=schemes))
    _compat.shutdown_weight_sync(SimpleNamespace(_weight_sync_schemes=None))
    assert stopped == ["policy", "critic"]


def test_env_accessors_reach_the_copies_and_the_gym_env():
    env = make_env("Pendulum-v1", seed=0, num_envs=2)  # TransformedEnv over a SerialEnv of GymEnvs
    env.reset()  # starts the SerialEnv: its copies exist from then on
    try:
        copies = _compat.batched_env_copies(env.base_env)
        assert len(copies) == 2 and all(isinstance(c, EnvBase) for c in copies)
        gym_env = _compat.wrapped_env(copies[0])
        assert type(gym_env.unwrapped).__name__ == "PendulumEnv"
        assert gym_env is not _compat.wrapped_env(copies[1])
    finally:
        env.close()


def test_target_params_reads_the_target_without_warning():
    class Loss(LossModule):
        qvalue_network_params: TensorDictParams
        target_qvalue_network_params: TensorDictParams

        def __init__(self) -> None:
            super().__init__()
            self.convert_to_functional(nn.Linear(2, 2), "qvalue_network", create_target_params=True)

    loss = Loss()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        target = _compat.target_params(loss, "target_qvalue_network_params")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert target is loss.target_qvalue_network_params
    assert (target["weight"] == loss.qvalue_network_params["weight"]).all()
    assert target["weight"].data_ptr() != loss.qvalue_network_params["weight"].data_ptr()


def test_trajectory_bounds_follow_the_ring_in_time_order():
    rb = make_replay_buffer(capacity=6, batch_size=30, horizon=3, episode_end_slices=True)
    add(rb, trajectory(0, 4))
    add(rb, trajectory(4, 5))  # one trajectory of 9 steps in 6 rows: rows hold steps 6 7 8 3 4 5
    first, lengths = _compat.trajectory_bounds(rb.sampler, rb.storage)
    # one piece in time order, from the oldest row (3) on and around the ring: steps 3..8
    assert list(zip(first[:, 0].tolist(), lengths.tolist())) == [(3, 6)]
    for _ in range(5):
        batch = sample_batch(rb)
        steps, mask = batch["step_count"].squeeze(-1), batch["collector", "mask"]
        assert (steps.diff(dim=1)[mask[:, 1:]] == 1).all() and (steps.diff(dim=1)[~mask[:, 1:]] == 0).all()
