"""What reacts to a run's epochs: one small interface, one class per reaction.

    class MyLogger(Hook):
        def on_epoch_end(self, run, row): print(row["val_accuracy"])

    train(cfg, out, hooks=[MyLogger()])

`run` is the engine's `Run` (config, run folder, parts, loop state, clock); `row` is the epoch's history
row (HISTORY_FIELDS). A hook may raise to stop the run after an epoch: the checkpoint is written before
the hooks passed to `train` run, so the run stays resumable. The engine's own hooks, in order:
HistoryFile → ConsoleLine → BudgetReplan (with --time-budget) → Checkpoint → ReplaceOld (with --overwrite)
→ TensorBoard (with --tensorboard).
"""

from __future__ import annotations

from ..errors import UserError
from ..fileio import atomic_write_json, atomic_write_text, csv_text
from ..progress import console
from ..runs import HISTORY_FIELDS, checkpoint_path, replace_run
from .budget import final_eval_left, replan, replan_line
from .checkpoint import save_checkpoint
from .state import Run


class Hook:
    """Override any of these; each is called by the engine at that point of every run."""

    def on_train_start(self, run: Run) -> None:
        """After the parts are built and the state is new or resumed, before the first epoch."""

    def on_epoch_end(self, run: Run, row: dict) -> None:
        """After each epoch: the state (run.state) already holds it, best weights are saved."""

    def on_train_end(self, run: Run, metrics: dict) -> None:
        """After metrics.json is written."""


class HistoryFile(Hook):
    """history.csv, rewritten atomically after every epoch."""

    def on_epoch_end(self, run: Run, row: dict) -> None:
        atomic_write_text(run.out / "history.csv", csv_text(run.state.history, HISTORY_FIELDS))


class ConsoleLine(Hook):
    """One line per epoch: losses, accuracies, the honest train-in-eval-mode accuracy, speed, best marker."""

    def on_epoch_end(self, run: Run, row: dict) -> None:
        val = (f"val loss {row['val_loss']:.4f} acc {row['val_accuracy']:.2%}" if row["val_loss"] != ""
               else "no validation")
        if row["train_eval_accuracy"] != "":  # the honest gap: training images evaluated like validation
            val += f"  train (eval mode) acc {row['train_eval_accuracy']:.2%}"
        best = "  *best" if run.improved and row["val_loss"] != "" else ""
        console.print(f"epoch {row['epoch']:3d}/{run.state.last_epoch}  train loss {row['train_loss']:.4f} "
                      f"acc {row['train_accuracy']:.2%}  {val}  {row['images_per_s']:,.0f} img/s  "
                      f"{row['seconds']:.1f}s{best}")


class Checkpoint(Hook):
    """checkpoint/last.safetensors: model, optimizer, extra modules and the loop state, atomically."""

    def on_epoch_end(self, run: Run, row: dict) -> None:
        p = run.parts
        save_checkpoint(checkpoint_path(run.out), p.model, p.optimizer, run.state.to_dict(), p.extra)


def epoch_seconds(history: list[dict]) -> float:
    """What the next epoch will cost: the slowest of the last two (the first may include warm-up)."""
    return max(row["seconds"] for row in history[-2:])


class BudgetReplan(Hook):
    """--time-budget: after an epoch, if less or more fits than planned (the machine runs slower or faster than
    measured at the start; the slower of the last two epochs counts), re-plan and lay the rest of the schedule from
    the current learning rate to the new end (budget.replan), so it still anneals by the end. Runs before
    Checkpoint, so a resumed run continues the re-planned schedule."""

    def on_epoch_end(self, run: Run, row: dict) -> None:
        record = replan(run.cfg, run.state, run.clock(), epoch_seconds(run.state.history), 0.0,
                        run.steps_per_epoch, steps_done=0)
        if record is not None:
            console.print(replan_line(record))


def over_budget(run: Run) -> bool:
    """Would the next epoch (its planned share: the last may end part of the way) pass the time budget, final
    evaluation included (at the run's own evaluation pace: budget.final_eval_left)?"""
    st, n = run.state, run.steps_per_epoch
    share = min(n, st.end_step(n) - st.epoch * n) / n
    return run.clock() + share * epoch_seconds(st.history) + final_eval_left(st.budget) > run.cfg.time_budget * 60


class TensorBoard(Hook):
    """Live scalars for TensorBoard in RUN/tensorboard: loss and accuracy (train, validation, train in eval mode),
    the schedule's learning rate and images/s per epoch, and the test figures at the end.
    `tensorboard --logdir RUN/tensorboard` (or a folder of runs) shows them while the run trains."""

    TAGS = {"train_loss": "loss/train", "val_loss": "loss/val", "train_eval_loss": "loss/train_eval",
            "train_accuracy": "accuracy/train", "val_accuracy": "accuracy/val",
            "train_eval_accuracy": "accuracy/train_eval", "lr": "lr", "images_per_s": "speed/images_per_s",
            "seconds": "speed/epoch_seconds"}

    def __init__(self) -> None:
        self.writer = None

    def on_train_start(self, run: Run) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError("--tensorboard needs the tensorboard extra: pip install 'cifar10cnn[tensorboard]'"
                            ) from None
        self.writer = SummaryWriter(log_dir=str(run.out / "tensorboard"), purge_step=run.state.epoch + 1)

    def on_epoch_end(self, run: Run, row: dict) -> None:
        for key, tag in self.TAGS.items():
            if row.get(key, "") != "":
                self.writer.add_scalar(tag, float(row[key]), row["epoch"])
        self.writer.flush()

    def on_train_end(self, run: Run, metrics: dict) -> None:
        for key in ("test_accuracy", "test_accuracy_tta"):
            if metrics.get(key) is not None:
                self.writer.add_scalar(f"test/{key}", metrics[key], run.state.epoch)
        self.writer.close()


def replace_old(run: Run) -> None:
    """train --overwrite: the new run (built in a staging folder) takes the old run's place."""
    if run.replaces is not None:
        replace_run(run.replaces, run.out)
        console.print(f"replaced the previous run in {run.replaces}", markup=False)
        run.out, run.replaces = run.replaces, None


class ReplaceOld(Hook):
    """--overwrite: once the new run has its first checkpoint (Checkpoint runs before this), it replaces the old."""

    def on_epoch_end(self, run: Run, row: dict) -> None:
        replace_old(run)


class RecordPick(Hook):
    """recipe_pick.json in the run folder: why `--time-budget` without `--recipe` chose the run's recipe (pick.py)."""

    def __init__(self, picked: dict) -> None:
        self.picked = picked

    def on_train_start(self, run: Run) -> None:
        atomic_write_json(run.out / "recipe_pick.json", self.picked)
