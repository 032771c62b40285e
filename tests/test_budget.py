"""`--time-budget`: the speed measurement, the plan, and the re-plans while the run goes — fewer epochs on a slower
machine, more on a faster one — with the rest of the learning-rate decay laid from the current rate."""

from __future__ import annotations

import io
import json
import math
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from cifar10cnn import progress
from cifar10cnn.config import RunConfig
from cifar10cnn.training import engine, hooks
from cifar10cnn.training.budget import (
    PARTS,
    calibration_images,
    check_points,
    epoch_ends,
    epochs_of,
    final_eval_at_run_pace,
    final_eval_left,
    fit_steps,
    lay_plan,
    relay_schedule,
    replan,
    replan_line,
    steps_that_fit,
    up_pace,
)
from cifar10cnn.training.engine import train
from cifar10cnn.training.hooks import BudgetReplan, over_budget
from cifar10cnn.training.pick import PROBE_IMAGES, probe
from cifar10cnn.training.schedule import lr_factor, run_progress
from cifar10cnn.training.state import TrainState, schedule_steps, steps_per_epoch


def test_a_time_budget_keeps_a_warm_up_in_epochs_in_proportion():
    """seed-aug warms up 8 of its 40 epochs: a 2-epoch budget run warms up a fifth of its steps, not all of them."""
    budget = RunConfig.resolve("seed-aug", {"time_budget": 2.0})
    assert schedule_steps(budget, 2, 100) == {"total": 200, "warmup": 40}
    assert schedule_steps(RunConfig.resolve("seed-aug"), 2, 100) == {"total": 200, "warmup": 800}  # no budget: 8 epochs
    assert schedule_steps(RunConfig.resolve("resnet", {"time_budget": 5.0}), 6, 100)["warmup"] == 20  # 2 of 60


@pytest.mark.parametrize("batch, own, probe", [
    (32, (32, 96, 2048), (32, 32, 1024)), (128, (128, 384, 2560), (128, 128, 1024)),
    (1024, (128, 384, 3072), (128, 128, 1024)), (2000, (128, 384, 4000), (128, 128, 2000)),
    (100, (100, 300, 2000), (100, 100, 1000))])
def test_speed_measurements_time_whole_batches_of_the_recipe(batch, own, probe):
    """A partial batch is a shape the run never trains (at batch 2,000, fast-muon's run timed 3 batches and one of
    144). On a CPU the warm-up trains batches of at most 128 (one of 2,000 took 18 s of a probe); on CUDA the
    recipe's own."""
    assert calibration_images(batch, 45_000) == own and calibration_images(batch, 45_000, 1024) == probe
    for warm_bs, warm, timed in (own, probe):
        assert warm % warm_bs == 0 and timed % batch == 0 and warm_bs == min(batch, 128)
    assert calibration_images(128, 300) == (128, 300, 300)  # a tiny training split: all of it
    assert calibration_images(2000, 45_000, None, "cuda") == (2000, 2000, 4000)
    assert calibration_images(2000, 45_000, 1024, "cuda") == (2000, 2000, 2000)


def test_the_plan_is_checked_at_fractions_of_the_images_not_of_the_steps():
    """fast-muon trains 22.5 batches of 2,000 an epoch: 6 of its 23 steps are 12,000 of 45,000 images (26.7%), not
    6/23 (26.1%); a pace read from the steps made every in-epoch check 2.2% slower than the epoch ran."""
    assert steps_per_epoch(45_000, 2000) == 23
    assert check_points(23, 2000, 45_000) == {6: 12_000 / 45_000, 12: 24_000 / 45_000, 17: 34_000 / 45_000}
    assert check_points(44, 1024, 45_000) == {11: 11 * 1024 / 45_000, 22: 22 * 1024 / 45_000, 33: 33 * 1024 / 45_000}
    assert check_points(4, 25, 100) == {1: 0.25, 2: 0.5, 3: 0.75}  # whole batches: the steps' fractions
    assert check_points(steps_per_epoch(4001, 1000, 2), 1000, 4001) == {1: 0.25, 2: 0.5, 3: 0.75}  # 1 image dropped
    assert check_points(1, 128, 100) == {} and check_points(2, 64, 100) == {1: 0.64}
    # a plan that ends at the epoch's first quarter is checked at an eighth too (where a step falls between)
    assert check_points(44, 1024, 45_000, eighth=True) == {6: 6 * 1024 / 45_000, **check_points(44, 1024, 45_000)}
    assert check_points(4, 25, 100, eighth=True) == {1: 0.25, 2: 0.5, 3: 0.75}  # no step between 0 and a quarter


@settings(max_examples=200, deadline=None)
@given(images=st.integers(1, 100_000), batch=st.integers(1, 4096), world=st.sampled_from([1, 2, 3, 8]))
def test_every_check_is_inside_the_epoch_at_the_images_trained_by_then(images, batch, world):
    n = steps_per_epoch(images, batch, world)
    points = check_points(n, batch, images, eighth=images % 2 == 0)
    assert all(0 < k < n and 0 < f < 1 and f == k * batch / min(n * batch, images) for k, f in points.items())
    assert list(points.values()) == sorted(points.values())


def test_a_run_may_end_at_a_quarter_half_or_three_quarters_of_an_epoch():
    assert epoch_ends(44) == [11, 22, 33, 44] and epoch_ends(23) == [6, 12, 17, 23]  # fast; fast-muon
    assert epoch_ends(2) == [1, 2] and epoch_ends(1) == [1]  # tiny epochs: no part smaller than a step
    assert epochs_of(396, 44) == 9 and isinstance(epochs_of(396, 44), int) and epochs_of(374, 44) == 8.5
    assert epochs_of(190, 23) == 8.26  # optimizer steps over steps per epoch


def test_steps_that_fit_end_at_the_latest_part_of_an_epoch_that_fits():
    """An epoch of 40 steps trains in 8 s and validates in 2 s; every epoch the run reaches is validated."""
    assert steps_that_fit(25.0, 80, 2, 40, 8.0, 2.0) == 80 + 80 + 10  # two more epochs (20 s), a quarter (2 + 2)
    assert steps_that_fit(23.0, 80, 2, 40, 8.0, 2.0) == 160  # 2 + 2 s more do not fit in 3
    assert steps_that_fit(6.0, 100, 2, 40, 8.0, 2.0) == 120  # from half-way: the rest of the epoch (4 + 2 s)
    assert steps_that_fit(5.0, 100, 2, 40, 8.0, 2.0) == 110  # or only its next quarter (2 + 2 s)
    assert steps_that_fit(3.0, 100, 2, 40, 8.0, 2.0) == 100  # nothing more fits: the run ends where it is
    assert steps_that_fit(-3.0, 0, 0, 40, 8.0, 2.0) == 0


def test_the_plan_uses_the_budget_up_to_a_quarter_of_an_epoch():
    """fast at 60 minutes on a 2-core AMD EPYC: whole epochs left 291 s unused; now the last epoch takes most of it."""
    steps, planned_s = fit_steps(3600.0, 148.0, 338.0, 9.0, 130.0, 44)  # 9 epochs of 347 s, 199 s left
    assert steps == 9 * 44 + 22 and planned_s == pytest.approx(148 + 9.5 * 338 + 10 * 9 + 130)
    assert fit_steps(60.0, 0.0, 80.0, 5.0, 10.0, 40) == (20, 0.0 + 40 + 5 + 10)  # half an epoch, not one
    steps, planned_s = fit_steps(60.0, 50.0, 80.0, 5.0, 10.0, 40)  # not even a quarter: a quarter anyway
    assert steps == 10 and planned_s > 60


def factors(cfg, st: TrainState, steps) -> list[float]:
    return [lr_factor(cfg.schedule, s, st.schedule_total, st.schedule_warmup, cfg.lr_start_factor,
                      cfg.lr_end_factor, st.schedule_anchor) for s in steps]


def progresses(st: TrainState, steps) -> list[float]:
    return [run_progress(s, st.schedule_total, st.progress_anchor) for s in steps]


@settings(max_examples=200, deadline=None)
@given(recipe=st.sampled_from(["fast", "seed-aug", "resnet"]), n=st.integers(1, 60), planned=st.integers(1, 12),
       replans=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(1, 12 * PARTS)), min_size=1, max_size=4))
def test_a_replan_lays_the_rest_of_the_decay_from_the_current_rate(recipe, n, planned, replans):
    """However often the run's length is re-planned (up or down), past the warm-up the learning rate never jumps,
    never rises, and still ends at the schedule's end value at the new last step; the run's progress (Lookahead's
    averaging strength) never jumps, never falls, and reaches 1 at the new last step."""
    cfg = RunConfig.resolve(recipe, {"time_budget": 10.0})
    sched = schedule_steps(cfg, planned, n)
    state = TrainState(planned, sched["total"], sched["warmup"])
    step, lrs, progress = 0, [], []
    for where, quarters in replans:
        target = min(state.schedule_total, step + round(where * (state.schedule_total - step)))
        lrs += factors(cfg, state, range(step, target))
        progress += progresses(state, range(step, target))
        step = target
        end = max(round(quarters * n / PARTS), step + 1)  # a new end with steps left (or a run ends where it is)
        before, progress_before = factors(cfg, state, [step])[0], progresses(state, [step])[0]
        warm = step < state.schedule_warmup
        relay_schedule(cfg, state, step, end, n)
        assert state.schedule_total == state.end_step(n) == end and state.last_epoch == math.ceil(end / n)
        if not warm:  # past the warm-up: the same rate at the step of the re-plan
            assert factors(cfg, state, [step])[0] == pytest.approx(before)
        assert progresses(state, [step])[0] == pytest.approx(progress_before)
    lrs += factors(cfg, state, range(step, state.schedule_total))
    progress += progresses(state, range(step, state.schedule_total + 1))
    decay = lrs[state.schedule_warmup:]
    assert all(b <= a + 1e-12 for a, b in zip(decay, decay[1:], strict=False))  # never rises after the warm-up
    if state.schedule_total > state.schedule_warmup:
        end = factors(cfg, state, [state.schedule_total])[0]
        assert end == pytest.approx(cfg.lr_end_factor if cfg.schedule != "constant" else 1.0)
    assert all(b >= a - 1e-12 for a, b in zip(progress, progress[1:], strict=False))
    assert progress[-1] == pytest.approx(1.0)


def test_without_a_replan_the_run_progress_is_step_over_total_exactly():
    """Lookahead's ρ reads run_progress: without a re-plan it is the `min(1, step/total)` it always was, bit for
    bit (runs without a time budget, and budget runs that keep their plan, give the same weights)."""
    for total in (1, 7, 49, 490, 4410):
        for step in range(1, total + 3):
            assert run_progress(step, total) == min(1.0, step / total)


def replan_run(cfg, planned: int, clock: list, history: list, budget: dict | None = None):
    sched = schedule_steps(cfg, planned, 40)
    state = TrainState(planned, sched["total"], sched["warmup"], epoch=len(history),
                       budget=budget or {"final_eval_s": 5.0}, history=history)
    return state, SimpleNamespace(cfg=cfg, state=state, clock=lambda: clock[0], steps_per_epoch=40)


def test_a_plan_of_one_quarter_is_checked_at_an_eighth_and_may_end_there():
    """A plan of a quarter of an epoch (made when not even that fits) is checked half-way to its end: a machine
    slower than measured ends the run at that check (the budget's 1-minute runs on a 2-core AMD EPYC: 0.12 epochs
    in 73 s where the quarter was planned at 97 s); a faster one extends it (test_the_plan_is_checked_...)."""
    cfg = RunConfig.resolve("seed-aug", {"time_budget": 1.0})
    laid = schedule_steps(cfg, 1, 40)
    state = TrainState(1, 10, round(laid["warmup"] / 4), budget={"final_eval_s": 5.0})
    record = replan(cfg, state, 50.0, 80.0, 2.0, 40, steps_done=5)  # 5 s left: 5 steps more take 10 + 2
    assert record == {"after_epoch": 0.12, "epochs": 0.12, "was": 0.25} and state.end_step(40) == 5
    assert replan_line(record).endswith("the run ends here") and state.last_epoch == 1


def test_a_checkpoint_from_before_last_epoch_was_named_resumes_with_its_schedule():
    cfg = RunConfig.resolve("fast", {})
    laid = []

    def schedule_of(epochs):
        laid.append(epochs)
        return schedule_steps(cfg, epochs, 40)

    # written before the schedule was saved and before `planned_epochs` was renamed: the schedule is laid from it
    old = TrainState.from_dict({"planned_epochs": 10, "epoch": 3, "history": [], "unknown": 1}, schedule_of)
    assert (old.last_epoch, old.epoch, old.schedule_total, old.schedule_warmup) == (10, 3, 400, round(0.23 * 400))
    assert laid == [10]
    # written before the rename, with its schedule (a time budget's 4.5 epochs): the saved schedule is kept
    saved = {"planned_epochs": 5, "schedule_total": 180, "schedule_warmup": 80, "epoch": 2}
    assert TrainState.from_dict(saved, schedule_of).plan() == (5, 180, 80, None, None) and laid == [10]
    assert TrainState.from_dict({**saved, "last_epoch": 4}, schedule_of).last_epoch == 4  # both: the new name


def test_a_slower_machine_makes_the_budget_replan_and_the_schedule_end_earlier():
    cfg = RunConfig.resolve("fast", {"time_budget": 1.0})
    assert schedule_steps(cfg, 10, 40) == {"total": 400, "warmup": round(0.23 * 400)}
    clock = [30.0]
    state, run = replan_run(cfg, 10, clock, [{"seconds": 10.0}, {"seconds": 10.0}])
    BudgetReplan().on_epoch_end(run, {})  # 60 − 30 − 5 = 25 s left: 2.5 more 10-s epochs fit
    assert state.last_epoch == 5 and state.schedule_total == state.end_step(40) == 4 * 40 + 20
    # 80 steps done, still in the 92-step warm-up: it ends now (the new run's share, 41, has passed)
    assert state.schedule_warmup == 2 * 40 and state.schedule_anchor is None
    assert state.budget["replanned"] == [{"after_epoch": 2, "epochs": 4.5, "was": 10}]
    # the re-planned schedule is saved with the state: a resumed run continues exactly this schedule
    again = TrainState.from_dict(json.loads(json.dumps(state.to_dict())), lambda e: schedule_steps(cfg, e, 40))
    assert again.plan() == state.plan() and state.progress_anchor == [80, pytest.approx(80 / 400)]
    clock[0] = 29.0
    BudgetReplan().on_epoch_end(run, {})  # still fits (a quarter more does not): no change
    assert state.schedule_total == 180 and len(state.budget["replanned"]) == 1
    clock[0] = 31.0
    BudgetReplan().on_epoch_end(run, {})  # 24 s: the half epoch no longer fits, a quarter does
    assert state.last_epoch == 5 and state.schedule_total == 170 and state.budget["replanned"][-1]["epochs"] == 4.25
    clock[0] = 58.0
    BudgetReplan().on_epoch_end(run, {})  # nothing fits any more: the run ends after this epoch
    assert state.last_epoch == 2 and state.end_step(40) == 80 and state.finished
    assert replan_line(state.budget["replanned"][-1]).endswith("the run ends after this epoch")
    assert "laid from the current learning rate" in replan_line(state.budget["replanned"][0])
    assert replan_line({"after_epoch": 2.26, "epochs": 2.26, "was": 3}).endswith("the run ends here")
    assert "— 1 epoch now fits (at epoch 0.25, 1.25 planned)" in replan_line({"after_epoch": 0.25, "epochs": 1,
                                                                               "was": 1.25})


def test_a_faster_machine_makes_the_budget_plan_more_epochs_from_the_current_rate():
    cfg = RunConfig.resolve("fast", {"time_budget": 2.0})
    clock = [40.0]
    state, run = replan_run(cfg, 3, clock, [{"seconds": 10.0}, {"seconds": 10.0}])
    before = factors(cfg, state, [80])[0]
    BudgetReplan().on_epoch_end(run, {})  # 120 − 40 − 5 = 75 s: 7.5 more epochs of 10 s, 7 of 10.5 (the margin)
    assert state.last_epoch == 9 and state.budget["replanned"] == [{"after_epoch": 2, "epochs": 9, "was": 3}]
    assert state.schedule_anchor[0] == 80 and factors(cfg, state, [80])[0] == pytest.approx(before)
    assert state.progress_anchor == [80, pytest.approx(80 / (3 * 40))]  # Lookahead's averaging goes on from 2/3
    assert progresses(state, [80, 9 * 40]) == [pytest.approx(2 / 3), 1.0]
    assert factors(cfg, state, [9 * 40])[0] == pytest.approx(cfg.lr_end_factor)
    clock[0] = 51.0  # 64 s left: 6.25 epochs of 10 s, but 6 of 10.5: a 5% margin before adding a quarter
    state2, run2 = replan_run(cfg, 8, clock, [{"seconds": 10.0}, {"seconds": 10.0}])
    BudgetReplan().on_epoch_end(run2, {})
    assert state2.last_epoch == 8 and "replanned" not in state2.budget
    # after the last planned epoch the schedule has ended: a faster machine adds no epochs at its last rate
    state3, run3 = replan_run(cfg, 2, [10.0], [{"seconds": 10.0}, {"seconds": 10.0}])
    BudgetReplan().on_epoch_end(run3, {})
    assert state3.last_epoch == 2 and state3.finished


def test_epochs_are_added_only_at_the_pace_of_the_slowest_epoch_so_far():
    """Epoch times vary by ±8% on a busy VM: a plan raised whenever the last two epochs ran fast went up and down
    ten times in one run (`resnet` at 60 min). An epoch is added only if it fits at the slowest epoch's pace
    (after the first, which may include warm-up), with the 5% margin; taking one away is unchanged."""
    cfg = RunConfig.resolve("fast", {"time_budget": 2.0})
    assert up_pace([{"seconds": 30.0}, {"seconds": 10.0}, {"seconds": 10.0}], 10.0) == pytest.approx(1.05)
    assert up_pace([{"seconds": 10.0}, {"seconds": 12.0}, {"seconds": 10.0}], 10.0) == pytest.approx(1.26)
    assert up_pace([], 10.0) == up_pace([{"seconds": 8.0}], 10.0) == pytest.approx(1.05)
    fast_again = [{"seconds": 10.0}, {"seconds": 12.0}, {"seconds": 10.0}, {"seconds": 10.0}]
    clock = [40.0]  # 75 s left: 7.5 more epochs of 10 s (7 of 10.5 with the margin), but 5.75 of 12.6
    state, run = replan_run(cfg, 8, clock, fast_again)
    BudgetReplan().on_epoch_end(run, {})
    assert state.budget["replanned"][-1]["epochs"] == 9.75  # 4 done + 5.75
    state, run = replan_run(cfg, 8, clock, [{"seconds": 10.0}] * 4)
    BudgetReplan().on_epoch_end(run, {})
    assert state.last_epoch == 11  # 4 done + 7 at 10.5 s
    clock[0] = 60.0  # 55 s left: 5.5 of 10 s fit, fewer than the 7 planned: down at once, whatever the slowest
    BudgetReplan().on_epoch_end(run, {})
    assert state.budget["replanned"][-1]["epochs"] == 9.5 and state.last_epoch == 10


def test_the_final_test_pass_is_re_estimated_from_the_runs_own_validation():
    """The measurement's evaluation pace may be wrong (on a 2-core Zen 4 it kept 78.9 s for a 45.6-s test pass):
    after an epoch the run scales the forward passes of the estimate by its own validation's seconds against the
    measured ones; the fixed 5 s of loading and writing stay; it never falls below half the measured estimate."""
    budget = {"validation_s": 4.0, "final_eval_s": 45.0}  # 40 s of forward passes + 5
    assert final_eval_at_run_pace(budget, 2.0) == 25.0  # evaluation ran twice as fast
    assert final_eval_at_run_pace(budget, 6.0) == 65.0  # half as fast again: more time kept, without a ceiling
    assert final_eval_at_run_pace(budget, 0.4) == 25.0  # ten times as fast reads as twice (the floor)
    assert final_eval_at_run_pace(budget, 4.0) == 45.0
    # nothing to compare: no validation in the run (--final) or in the measurement, or a plan saved before it
    assert final_eval_at_run_pace(budget, 0.0) is None
    assert final_eval_at_run_pace({"validation_s": 0.0, "final_eval_s": 45.0}, 2.0) is None
    assert final_eval_at_run_pace({"final_eval_s": 45.0}, 2.0) is None
    assert final_eval_left(budget) == 45.0 and final_eval_left({**budget, "final_eval_s_at_run_pace": 25.0}) == 25.0


def test_the_replans_and_the_stop_keep_the_runs_own_final_test_estimate():
    """budget.replan and hooks.over_budget subtract the run-pace estimate once there is one: with 45 s kept for the
    test pass, 1 more 10-s epoch fits in the 2 minutes after 55 s, with 25 s, 3 do (with the 5% margin: 10.5 s)."""
    cfg = RunConfig.resolve("fast", {"time_budget": 2.0})
    history = [{"seconds": 10.0}, {"seconds": 10.0}]
    measured = {"validation_s": 4.0, "final_eval_s": 45.0}
    state, run = replan_run(cfg, 3, [55.0], list(history), dict(measured))
    BudgetReplan().on_epoch_end(run, {})  # 120 − 55 − 45 = 20 s: 2 more epochs, not 1 as planned
    assert state.budget["replanned"] == [{"after_epoch": 2, "epochs": 3.75, "was": 3}]
    state, run = replan_run(cfg, 3, [55.0], list(history), {**measured, "final_eval_s_at_run_pace": 25.0})
    BudgetReplan().on_epoch_end(run, {})  # 40 s: 3.75 epochs of 10.5
    assert state.budget["replanned"] == [{"after_epoch": 2, "epochs": 5.75, "was": 3}]
    state, run = replan_run(cfg, 5, [70.0], list(history), dict(measured))
    assert over_budget(run)  # 70 + 10 + 45 > 120
    state.budget["final_eval_s_at_run_pace"] = 25.0
    assert not over_budget(run)  # 70 + 10 + 25 ≤ 120


def test_a_budget_run_keeps_its_own_final_test_estimate(data, tmp_path, monkeypatch):
    """A measurement that read the evaluation 100× too slow (10 s for 100 validation images): after the first epoch
    the run keeps its own estimate of the test pass, at the floor of half the measured one, in metrics.json."""
    monkeypatch.setattr(engine, "replan", lambda *a, **k: None)
    monkeypatch.setattr(hooks, "replan", lambda *a, **k: None)
    cfg = RunConfig.resolve("seed-aug", {"time_budget": 2.0, "subset": 300, "val_size": 100, "batch_size": 20})
    speed = {"train_images_per_s": 300 / 40, "eval_images_per_s": 10.0, "estimated_epoch_s": 50.0,
             "validation_s": 10.0, "final_eval_s": 45.0, "measured_by": "a misread probe"}
    _, m = train(cfg, tmp_path / "run", data=data, test=False, speed=speed)
    b = m["budget"]
    assert b["final_eval_s"] == 45.0 and b["final_eval_s_at_run_pace"] == 25.0
    # 120 s − 45 for the test: an epoch of 40 + 10 s and a quarter more (15 steps an epoch: 19 steps)
    assert b["planned_epochs"] == b["epochs_run"] == 1.27 and m["epochs"] == 2 and not b["stopped_by_budget"]


def test_a_speed_measurement_keeps_each_timed_step(data):
    """Where a misread comes from: the measurement keeps its warm-up's seconds and each timed step's (one slow step,
    or all of them), and the plan keeps them in metrics.json."""
    cfg = RunConfig.resolve("seed-aug", {"time_budget": 1.0, "subset": 300, "val_size": 100, "batch_size": 20})
    speed = probe(cfg, data)
    n_train = speed["steps_per_epoch"] * 20  # the 300 images: fewer than PROBE_IMAGES, so all of them are timed
    assert calibration_images(20, n_train, PROBE_IMAGES)[2] == n_train
    assert len(speed["step_s"]) == speed["steps_per_epoch"] == 15 and min(speed["step_s"]) > 0
    assert sum(speed["step_s"]) <= n_train / speed["train_images_per_s"] + 1e-9  # inside the timed span
    assert 0 < speed["warmup_s"] < speed["measure_s"]
    plan = lay_plan(cfg, speed, speed["measure_s"], speed["steps_per_epoch"])
    assert plan["speed_step_s"] == [round(s, 3) for s in speed["step_s"]]
    assert plan["speed_warmup_s"] == round(speed["warmup_s"], 2)


@pytest.mark.parametrize("speed, planned, checked_at", [(12.5, 0.53, 0.27), (6.25, 0.27, 0.13), (1e6, None, 0.27)])
def test_the_plan_is_checked_during_an_epoch(data, tmp_path, speed, planned, checked_at):
    """A speed measured before the run (as the recipe picker's probe is) that read the machine wrong (far too
    slow: half an epoch planned, or only its first quarter; far too fast: dozens) is corrected during the first
    epoch, from that epoch's own pace: a quarter of the way into it, or at an eighth when the plan ends at the
    quarter (a check there comes too late to extend it: the schedule has annealed). The run plans from the speed
    it is given: it does not measure again."""
    cfg = RunConfig.resolve("seed-aug", {"time_budget": 0.3, "subset": 300, "val_size": 100, "batch_size": 20})
    misread = {"train_images_per_s": speed, "eval_images_per_s": 1000.0, "estimated_epoch_s": 300 / speed + 0.1,
               "validation_s": 0.1, "final_eval_s": 1.0, "measured_by": "a misread probe"}
    out, m = train(cfg, tmp_path / "run", data=data, test=False, speed=misread)
    # 15 steps an epoch of 24 s: 8 of them (12.9 s) fit in 17, 11 do not; of 48 s: 4 fit (12.9 s), 8 do not
    assert m["budget"]["planned_epochs"] == planned if planned else m["budget"]["planned_epochs"] > 20
    b = m["budget"]
    planned = b["planned_epochs"]
    assert b["speed_measured_by"] == "a misread probe" and b["train_images_per_s"] == round(speed, 1)
    assert b["speed_step_s"] is None and b["speed_warmup_s"] is None  # a speed given, not measured step by step
    first = m["budget"]["replanned"][0]  # at step 4 of 15 (80 of 300 images), or 2 (40)
    assert first["was"] == planned and first["after_epoch"] == checked_at
    assert (first["epochs"] > planned) == (planned < 1) and math.ceil(m["budget"]["epochs_run"]) == m["epochs"]
    rows = [r.split(",") for r in (out / "history.csv").read_text().splitlines()]
    lrs = [float(r[rows[0].index("lr")]) for r in rows[1:]]
    if planned < 1:  # the run trains the epochs that fit and the rate falls from the first check on
        assert m["epochs"] > 1 and all(b < a for a, b in zip(lrs, lrs[1:], strict=False))
    assert m["wall_seconds"] <= cfg.time_budget * 60 * 2


def test_a_plan_that_ends_half_way_into_an_epoch_trains_exactly_that(data, tmp_path, monkeypatch):
    """A plan of 1.5 epochs (no re-plan: this machine's real pace would move the end) trains one epoch and the
    first half of the next, validates both, and its learning-rate schedule ends at the last step it trains."""
    monkeypatch.setattr(engine, "replan", lambda *a, **k: None)
    monkeypatch.setattr(hooks, "replan", lambda *a, **k: None)
    trained, real = [], engine.train_one_epoch

    def counting(*args, **kwargs):
        tr = real(*args, **kwargs)
        trained.append(tr["images"])
        return tr

    monkeypatch.setattr(engine, "train_one_epoch", counting)
    cfg = RunConfig.resolve("seed-aug", {"time_budget": 10.0, "subset": 300, "val_size": 100, "batch_size": 20})
    # 300 training images: 15 steps an epoch of 300 s; ~499 s left after the 100-s test pass: one epoch and 8 steps
    # (160 s) fit, 11 (220 s) do not
    speed = {"train_images_per_s": 300 / 300, "eval_images_per_s": 1000.0, "estimated_epoch_s": 300.0,
             "validation_s": 0.0, "final_eval_s": 100.0, "measured_by": "a slow probe"}
    out, m = train(cfg, tmp_path / "run", data=data, test=False, speed=speed)
    b = m["budget"]
    assert (b["planned_epochs"], b["planned_steps"], b["epochs_run"], m["epochs"]) == (1.53, 23, 1.53, 2)
    assert trained == [300, 160] and "replanned" not in b
    rows = [r.split(",") for r in (out / "history.csv").read_text().splitlines()]
    assert len(rows) == 3 and all(r[rows[0].index("val_accuracy")] for r in rows[1:])  # both epochs validated
    sched = schedule_steps(cfg, 1, 23)  # the schedule laid over the 23 steps
    last = cfg.lr * lr_factor(cfg.schedule, 22, 23, sched["warmup"], cfg.lr_start_factor, cfg.lr_end_factor)
    assert float(rows[-1][rows[0].index("lr")]) == pytest.approx(last, rel=1e-4)


def test_the_progress_bar_follows_a_replan_that_moves_the_end_of_the_epoch(monkeypatch):
    """The bar of an epoch planned to end half-way takes the whole epoch's label and images when a re-plan
    extends it (engine.train_epoch hands the bar the plan as it stands after every batch)."""
    out = io.StringIO()
    monkeypatch.setattr(progress, "err_console", Console(file=out, force_terminal=True, width=150))
    monkeypatch.setattr(progress, "_bars", True)
    with progress.image_progress("epoch 2/2 (its first 50%)", 100) as advance:
        advance(50)
        advance(30, "epoch 2/2", 200)
        advance(20)
    last = [line for line in out.getvalue().splitlines() if "100/200" in line]
    assert last and "epoch 2/2" in last[-1] and "its first" not in last[-1]
