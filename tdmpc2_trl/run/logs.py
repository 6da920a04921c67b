"""Run logs: ``eval.csv`` and ``train.csv`` in the run directory, always; one of TorchRL's loggers on top
(``logger.backend``: wandb, tensorboard or mlflow, through ``torchrl.record.loggers.get_logger``), with the
evaluation videos (``videos/*.mp4``, written by ``video.write_video``) when they are recorded.

The CSV tables are written here, not by TorchRL's ``CSVLogger`` (torchrl 0.14/0.15), which lacks three things the
runs need: one table per log (it writes one file per scalar, while ``tdmpc2_trl.results.plot``, the tests and users
read ``eval.csv`` as ``step,episode_reward`` and ``train.csv`` as one row per episode), dropping the rows after a
resumed checkpoint's step (``rewind``), and a failed write that leaves no half row and names the file. Videos are
mp4 files already encoded by ``video.write_video`` (PyAV); they go to wandb as files, since ``WandbLogger.log_video``
takes frames and re-encodes them with moviepy.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from contextlib import suppress
from pathlib import Path
from typing import Any

from tdmpc2_trl.config.schema import LoggerConfig
from tdmpc2_trl.platform.checkpoint import atomic_file, named_os_error
from tdmpc2_trl.platform.extras import require

# the package each backend imports, and the project's pip extra that installs it
BACKEND_PACKAGES = {
    "wandb": ("wandb", "wandb"),
    "tensorboard": ("tensorboard", "tensorboard"),
    "mlflow": ("mlflow", "mlflow"),
}


class CSVTable:
    """Append rows to a CSV file. Columns come from the existing header or the first row; a row with new
    columns rewrites the (small) file once with the widened header."""

    def __init__(self, path: Path, columns: list[str] | None = None) -> None:
        self.path = Path(path)
        self.columns: list[str] = list(columns or [])
        if self.path.is_file() and self.path.stat().st_size > 0:
            with open(self.path, newline="") as f:
                self.columns = next(csv.reader(f))

    def append(self, row: Mapping[str, Any]) -> None:
        """Append one row (with the header if the file is new). A failed write raises an ``OSError`` naming the
        file and takes the partial row back out, so the file never holds half a row."""
        added = [k for k in row if k not in self.columns]
        if added:
            self._widen(added)
        new_file = not self.path.is_file() or self.path.stat().st_size == 0
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=self.columns)
        if new_file:
            writer.writeheader()
        writer.writerow({k: _fmt(row.get(k, "")) for k in self.columns})
        size = self.path.stat().st_size if self.path.is_file() else None
        try:
            with open(self.path, "a", newline="") as f:
                f.write(text.getvalue())
        except OSError as err:
            self._truncate(size)
            raise named_os_error(err, self.path) from None

    def _truncate(self, size: int | None) -> None:
        """Back to ``size`` bytes (``None``: the file did not exist), as far as the file system still allows."""
        with suppress(OSError):
            if size is None:
                self.path.unlink(missing_ok=True)
            else:
                with open(self.path, "r+b") as f:
                    f.truncate(size)

    def keep_until(self, step: int) -> int:
        """Drop the rows logged after ``step`` (a run resumed from an older checkpoint logs them again);
        returns how many were dropped."""
        rows = self._rows()
        kept = [r for r in rows if float(r.get("step") or 0) <= step]
        if len(kept) < len(rows):
            self._rewrite(kept)
        return len(rows) - len(kept)

    def _rows(self) -> list[dict[str, str]]:
        if not self.path.is_file() or self.path.stat().st_size == 0:
            return []
        with open(self.path, newline="") as f:
            return list(csv.DictReader(f))

    def _rewrite(self, rows: list[Mapping[str, Any]]) -> None:
        """Replace the file atomically with the header and ``rows``."""
        with atomic_file(self.path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns)
            writer.writeheader()
            writer.writerows(rows)

    def _widen(self, added: list[str]) -> None:
        rows = self._rows()
        self.columns = self.columns + added
        self._rewrite(rows)


def _fmt(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else value


def make_backend(cfg: LoggerConfig, run_dir: Path, config: Mapping[str, Any]):
    """The TorchRL logger of ``cfg.backend`` (``None`` for ``csv``), writing under ``run_dir``; a backend whose
    package is missing is a one-line ``ConfigError`` naming the pip extra."""
    if cfg.backend == "csv":
        return None
    package, extra = BACKEND_PACKAGES[cfg.backend]
    require(package, extra, f"logger.backend={cfg.backend}")
    from torchrl.record.loggers import get_logger

    kwargs: dict[str, Any] = {}
    if cfg.backend == "wandb":
        kwargs["wandb_kwargs"] = dict(
            offline=cfg.wandb_mode == "offline",
            project=cfg.project,
            entity=cfg.entity,
            config=dict(config),
            log_env_packages=False,
        )
    return get_logger(cfg.backend, logger_name=str(run_dir), experiment_name=Path(run_dir).name, **kwargs)


class RunLogger:
    """``log_eval(step, episode_reward)`` → eval.csv; ``log_train(step, metrics)`` → train.csv; both → the backend.

    >>> import tempfile
    >>> from tdmpc2_trl.config.schema import LoggerConfig
    >>> run_dir = Path(tempfile.mkdtemp())
    >>> log = RunLogger(run_dir, {}, LoggerConfig(backend="csv"))
    >>> log.log_eval(1000, -812.5)
    >>> (run_dir / "eval.csv").read_text().splitlines()
    ['step,episode_reward', '1000,-812.5']
    """

    def __init__(self, run_dir: Path, config: Mapping[str, Any], logger: LoggerConfig | None = None) -> None:
        """CSV tables in ``run_dir``; the backend of ``logger`` on top (``config``: the run's, for its record)."""
        self.run_dir = Path(run_dir)
        self.eval_table = CSVTable(self.run_dir / "eval.csv", ["step", "episode_reward"])
        self.train_table = CSVTable(self.run_dir / "train.csv", ["step"])
        self.backend_name = logger.backend if logger is not None else "csv"
        self.backend = make_backend(logger, self.run_dir, config) if logger is not None else None

    def log_eval(self, step: int, episode_reward: float, task: str | None = None, **extra: float) -> None:
        """One evaluation; a multitask run logs one row per task (eval.csv's ``task`` column)."""
        row = {"step": step, "episode_reward": episode_reward}
        self.eval_table.append(row if task is None else {**row, "task": task})
        prefix = "eval/" if task is None else f"eval/{task}/"
        self._backend(
            {f"{prefix}episode_reward": episode_reward, **{f"{prefix}{k}": v for k, v in extra.items()}}, step
        )

    def log_train(self, step: int, metrics: Mapping[str, float]) -> None:
        self.train_table.append({"step": step, **metrics})
        self._backend({f"train/{k}": v for k, v in metrics.items()}, step)

    def rewind(self, step: int) -> None:
        """A run resumed at ``step``: forget the eval/train rows a crashed process logged after that step."""
        for table in (self.eval_table, self.train_table):
            table.keep_until(step)

    def log_video(self, step: int, path: Path) -> None:
        """An mp4 already written to ``path`` (in the run directory) → wandb as ``eval/video`` (the other backends
        keep it in the run directory only)."""
        if self.backend_name == "wandb":
            import wandb

            self.backend.experiment.log({"eval/video": wandb.Video(str(path), format="mp4")}, step=step)

    def _backend(self, values: Mapping[str, float], step: int) -> None:
        if self.backend is not None:
            for name, value in values.items():
                self.backend.log_scalar(name, float(value), step=step)

    def close(self) -> None:
        if self.backend_name == "wandb":
            import wandb

            wandb.finish()
        elif self.backend is not None and hasattr(self.backend.experiment, "flush"):
            self.backend.experiment.flush()  # tensorboard's writer buffers its events
