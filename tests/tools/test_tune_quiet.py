"""The tuner never makes things slower: quiet machine only, winners confirmed against ORT's
defaults, no parallel execution or spinning for batch 1, "no faster setting found" said.

Loads are injected (a scripted monitor, a no-op sleep) and times are scripted where a decision
is tested, so nothing here depends on how fast or busy the machine running the tests is.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from rnnedge.tools import tune
from rnnedge.tools.tune import MachineBusyError, QuietRule


class ScriptedLoad:
    """A `CpuLoad` stand-in: each block reports the next scripted load (the last repeats)."""

    def __init__(self, loads: Sequence[float | None]) -> None:
        self.loads = list(loads)
        self.blocks = 0

    def __call__(self) -> ScriptedLoad._Block:
        value = self.loads[min(self.blocks, len(self.loads) - 1)]
        self.blocks += 1
        return ScriptedLoad._Block(value)

    class _Block:
        def __init__(self, value: float | None) -> None:
            self.value = value
            self.other_cores: float | None = None

        def __enter__(self) -> ScriptedLoad._Block:
            return self

        def __exit__(self, *exc: object) -> None:
            self.other_cores = self.value


def _rule(loads: Sequence[float | None], readings: int = 3) -> tuple[QuietRule, ScriptedLoad]:
    monitor = ScriptedLoad(loads)
    return QuietRule(
        threshold=0.1, readings=readings, window_s=0.5, monitor=monitor, sleep=lambda s: None
    ), monitor


def _cands(batch: int = 8) -> list[dict[str, Any]]:
    return tune.candidates(batch, splittable=False, cores=2)


def _timer(first: dict[str, float], later: dict[str, Iterator[float]] | None = None):
    """Scripted p50s: a label's first call from `first`, later calls from `later`."""
    seen: set[str] = set()

    def timer(c: dict[str, Any], budget: float) -> float:
        label = c["label"]
        if label in seen and later and label in later:
            return next(later[label])
        seen.add(label)
        return first.get(label, 1.0)

    return timer


def _tune(rule: QuietRule, timer, batch: int = 8, rounds: int = 5) -> dict[str, Any]:
    return tune.tune_class(
        "bN-long", batch, _cands(batch), timer, rule=rule, budget_s=0.01, confirm_rounds=rounds
    )


# --- the quiet-machine rule -----------------------------------------------------------------
def test_a_machine_that_never_gets_quiet_is_refused_with_the_reason() -> None:
    rule, monitor = _rule([1.6], readings=4)
    timed: list[str] = []
    with pytest.raises(MachineBusyError) as info:
        _tune(rule, lambda c, b: timed.append(c["label"]) or 1.0)
    msg = str(info.value)
    assert "1.60 cores" in msg and "4 readings" in msg and "none was written" in msg
    assert timed == [] and monitor.blocks == 4  # waited its readings, measured nothing


def test_it_waits_for_quiet_then_measures() -> None:
    rule, monitor = _rule([1.2, 0.9, 0.02], readings=5)
    timed: list[str] = []
    result = _tune(rule, lambda c, b: timed.append(c["label"]) or 1.0)
    assert monitor.blocks == 4  # three readings (2 loud, 1 quiet), then the measured pass
    assert timed[0] == "ort-defaults" and result["adopted"] is False
    assert rule.seen[:3] == [1.2, 0.9, 0.02]


def test_load_that_arrives_while_measuring_is_retried_then_refused() -> None:
    # quiet reading, loud pass; quiet reading, loud pass again: refused
    rule, _ = _rule([0.0, 1.5, 0.0, 1.5])
    with pytest.raises(MachineBusyError, match="while it was being measured, twice"):
        _tune(rule, lambda c, b: 1.0)
    # a single disturbed pass is measured again and then used
    rule, monitor = _rule([0.0, 1.5, 0.0, 0.0])
    result = _tune(rule, lambda c, b: 1.0)
    assert result["chosen"] == "ort-defaults" and monitor.blocks >= 4


def test_unknown_load_does_not_block_tuning() -> None:
    rule, _ = _rule([None])  # no /proc/stat: nothing to wait for
    assert _tune(rule, lambda c, b: 1.0)["adopted"] is False


def test_tune_refuses_and_writes_nothing_on_a_busy_machine(tmp_path: Path) -> None:
    """The whole `tune` on a real file: refused before any tuning file can exist."""
    pytest.importorskip("torch")
    import torch

    import rnnedge
    from rnnedge.modeling.models import ModelConfig, SequenceModel
    from rnnedge.runtime.tuned import tuning_path

    model = SequenceModel(ModelConfig(cell="lstm", input_size=1, hidden_size=4)).eval()
    path = tmp_path / "m.onnx"
    rnnedge.export(model, torch.randn(1, 4, 1), path)
    rule, _ = _rule([2.0], readings=2)
    with pytest.raises(MachineBusyError):
        tune.tune(path, [(1, 1)], budget_s=0.001, rule=rule)
    assert not tuning_path(path).exists()
    # quiet: it measures for real and says what it decided, whatever the timings were
    rule, _ = _rule([0.0])
    result = tune.tune(path, [(1, 1), (1, 64)], budget_s=0.002, confirm_rounds=2, rule=rule)
    assert set(result["classes"]) == {"b1-short", "b1-long"}
    for entry in result["classes"].values():
        assert isinstance(entry["adopted"], bool) and entry["reason"]
        assert tune.allowed({"label": entry["chosen"], "settings": entry["settings"]}, 1)
    adopted = [e for e in result["classes"].values() if e["adopted"]]
    assert (result["summary"] == tune.NO_FASTER) == (not adopted)
    assert result["quiet"]["threshold_cores"] == 0.1


# --- confirmation against ORT's defaults ----------------------------------------------------
def test_a_first_pass_winner_that_does_not_confirm_is_not_adopted() -> None:
    rule, _ = _rule([0.0])
    best = "t1-all-seq-spin0"
    timer = _timer(
        {"ort-defaults": 1.0, best: 0.5},  # 2× in the first pass (a lucky burst)
        {"ort-defaults": iter([1.0] * 5), best: iter([0.99, 1.0, 0.97, 1.01, 0.98])},
    )
    result = _tune(rule, timer)
    assert result["adopted"] is False and result["chosen"] == "ort-defaults"
    assert result["settings"] == {} and result["reason"].startswith(tune.NO_FASTER)
    assert result["confirm"]["candidate"] == best and len(result["confirm"]["defaults_p50_s"]) == 5


def test_a_confirmed_winner_is_adopted() -> None:
    rule, _ = _rule([0.0])
    best = "t1-basic-seq-spin0"
    timer = _timer(
        {"ort-defaults": 1.0, best: 0.6},
        {"ort-defaults": iter([1.0] * 5), best: iter([0.7, 0.72, 0.69, 0.8, 0.71])},
    )
    result = _tune(rule, timer)
    assert result["adopted"] is True and result["chosen"] == best
    assert result["speedup_vs_defaults"] == pytest.approx(1.0 / 0.71)


def test_defaults_winning_the_first_pass_say_no_faster_setting_found() -> None:
    rule, _ = _rule([0.0])
    result = _tune(rule, _timer({"ort-defaults": 0.5}))  # every other candidate: 1.0
    assert result["adopted"] is False and "confirm" not in result
    assert result["reason"].startswith("no faster setting found")


@pytest.mark.parametrize(
    ("defaults", "cand", "adopt"),
    [
        ([1.0] * 5, [0.9] * 5, True),
        ([1.0] * 5, [0.96] * 5, False),  # under the 5 % margin
        ([1.0] * 4, [0.5, 0.5, 1.2, 1.2], False),  # faster in only half the rounds
        ([1.0] * 3, [0.8, 0.85, 1.1], True),
    ],
)
def test_decide(defaults: list[float], cand: list[float], adopt: bool) -> None:
    assert tune.decide(defaults, cand)[0] is adopt


# --- batch 1: no parallel execution, no spinning --------------------------------------------
def test_batch_one_candidates_hold_no_parallel_mode_or_spinning() -> None:
    b1 = tune.candidates(1, splittable=True, cores=2)
    assert b1[0]["label"] == "ort-defaults"
    for c in b1[1:]:
        assert c["settings"]["execution_mode"] == "sequential"
        assert c["settings"]["config"][tune.SPIN] == "0"
        assert tune.allowed(c, 1)
    assert len(b1) == 1 + 2 * 2  # threads {1, 2} × levels {basic, all}
    bn = tune.candidates(8, splittable=False, cores=2)
    assert any(c["settings"].get("execution_mode") == "parallel" for c in bn)
    assert any(not tune.allowed(c, 1) for c in bn)


def test_batch_one_never_gets_spinning_even_when_it_measures_fastest() -> None:
    rule, _ = _rule([0.0])
    fast = {c["label"]: 0.1 for c in _cands(8) if not tune.allowed(c, 1)}
    assert fast  # parallel and spinning candidates exist for batch 8 ...
    result = tune.tune_class(
        "b1-long",
        1,
        _cands(8),
        _timer({"ort-defaults": 1.0, **fast}),
        rule=rule,
        budget_s=0.01,
        confirm_rounds=3,
    )
    # ... but for batch 1 they are never measured, let alone chosen
    assert not set(result["first_pass_p50_s"]) & set(fast)
    assert result["chosen"] == "ort-defaults"
