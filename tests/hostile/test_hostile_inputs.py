"""Issue 12's hostile-input test: over a thousand generated inputs, none may escape.

For every case: a documented rnnedge error (API: an `RnnEdgeError`; CLI: exit 2-9 with exactly
one line on stderr and no traceback) or a correct result (finite, right shape, equal to the
reference run where the input means the same numbers); no hang; nothing left behind; no input
or existing output destroyed; a refused stream call leaves the stream as it was; a malicious
pickle never runs. Cases come from a seed (RNNEDGE_FUZZ_SEED, default 0) and run one at a time
in a worker process (see `worker.py`); each family is one test whose failure lists every
failing case with its input and what escaped. `python -m tests.hostile.report` prints the
family x outcome table.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from tests.hostile import artifacts as artifacts_mod
from tests.hostile.cases import FAMILIES, fuzz_seed, generate
from tests.hostile.worker import Worker, run_family

pytestmark = pytest.mark.torch

MIN_CASES = 1000


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> artifacts_mod.Artifacts:
    return artifacts_mod.build(tmp_path_factory.mktemp("hostile-artifacts"))


@pytest.fixture(scope="session")
def worker(
    artifacts: artifacts_mod.Artifacts, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Worker]:
    w = Worker(artifacts, tmp_path_factory.mktemp("hostile-cases"), fuzz_seed())
    yield w
    w.close()


def test_at_least_a_thousand_cases_from_the_seed(artifacts: artifacts_mod.Artifacts) -> None:
    counts = {family: len(generate(family, artifacts)) for family in FAMILIES}
    assert sum(counts.values()) - counts["controls"] >= MIN_CASES, counts
    assert all(n > 0 for n in counts.values()), counts
    again = [c.id + c.summary for c in generate("cli_args", artifacts)]
    assert again == [c.id + c.summary for c in generate("cli_args", artifacts)]


@pytest.mark.parametrize("family", FAMILIES)
def test_hostile_family(family: str, artifacts: artifacts_mod.Artifacts, worker: Worker) -> None:
    outcomes = run_family(family, artifacts, worker)
    failed = [o for o in outcomes if not o.ok]
    marker_files = list(Path(worker.root).rglob("MARKER"))
    assert not marker_files, f"pickled code ran: {marker_files}"
    assert artifacts_mod.tree_hashes(artifacts.folder) == artifacts.hashes, (
        "a shared artifact was changed"
    )
    if failed:
        lines = [o.describe() for o in failed]
        kinds: dict[str, int] = {}
        for o in failed:
            for p in o.problems:
                kinds[p.signature] = kinds.get(p.signature, 0) + 1
        summary = "\n".join(
            f"  {n:4d} x {sig}" for sig, n in sorted(kinds.items(), key=lambda kv: -kv[1])
        )
        pytest.fail(
            f"{len(failed)} of {len(outcomes)} {family} cases escaped "
            f"(seed {worker.seed}):\n{summary}\n" + "\n".join(lines),
            pytrace=False,
        )
