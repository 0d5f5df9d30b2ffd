"""The load overrides on the command line: `--data-input`, `--data-output`, `--layout`,
`--state in:out[@axis]` and `--extra name=value`, as `inspect` and `run` take them."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

import rnnedge
from rnnedge.cli.main import main

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
DTLN = str(FIXTURES / "thirdparty" / "dtln_model_1.onnx")


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def test_inspect_shows_what_an_incomplete_detection_found_and_the_fix() -> None:
    rc, out, _ = run_cli(["inspect", DTLN])
    assert rc == 0
    assert "streamable: no" in out and "state pairs: none" in out
    assert "same shape, not paired: input_3 / tf_op_layer_stack_2" in out
    assert "--state input_3:tf_op_layer_stack_2" in out
    rc, out, _ = run_cli(["inspect", DTLN, "--state", "input_3:tf_op_layer_stack_2@0", "--json"])
    info = json.loads(out)
    assert info["spec"]["streamable"] is True
    assert info["state_pairs"] == [
        {"input": "input_3", "output": "tf_op_layer_stack_2", "batch_axis": 0}
    ]
    assert info["detection"]["layout"] == "BTF"


def test_inspect_layout_and_data_input_flags() -> None:
    rc, out, _ = run_cli(
        [
            "inspect",
            str(FIXTURES / "foreign_fixed.onnx"),
            "--layout",
            "BTFC",
            "--state",
            "cache:cache_out@none",
            "--json",
        ]
    )
    info = json.loads(out)
    assert (info["spec"]["data_layout"], info["spec"]["seq_axis"]) == ("BTFC", 1)
    assert info["state_pairs"][0]["batch_axis"] is None
    rc, out, _ = run_cli(["inspect", str(FIXTURES / "foreign_fixed.onnx"), "--layout", "BT"])
    assert rc == 0 and "spec: incomplete" in out and "has 2 axes; the data input has rank 4" in out
    rc, out, _ = run_cli(["inspect", str(FIXTURES / "foreign_lstm.onnx"), "--data-input", "zz"])
    assert "data input 'zz' is not in the graph" in out


@pytest.mark.parametrize(
    ("argv", "why"),
    [
        (["--state", "h0:hn@x"], "the batch axis must be a whole number"),
        (["--state", "h0:hn@"], "is not input:output"),
        (["--state", "h0"], "is not input:output"),
    ],
)
def test_bad_override_flags_are_usage_errors(argv: list[str], why: str) -> None:
    rc, _, err = run_cli(["inspect", str(FIXTURES / "foreign_lstm.onnx"), *argv])
    assert rc == 2 and why in err


def test_run_takes_extra_inputs_at_their_declared_dtype(tmp_path: Path) -> None:
    model = FIXTURES / "foreign_extra_input.onnx"
    x = np.random.default_rng(0).standard_normal((6, 2)).astype(np.float32)
    csv = tmp_path / "series.csv"
    csv.write_text("a,b\n" + "".join(f"{r[0]!r},{r[1]!r}\n" for r in x.tolist()))
    rc, out, _ = run_cli(
        ["run", str(model), "--input", str(csv), "--extra", "gain=[2.0]", "--json"]
    )
    assert rc == 0
    with rnnedge.load(model) as m:
        want, _ = m.run(x[None], extra={"gain": np.array([2.0], np.float32)})
    got = np.array(
        [
            [v for k, v in row.items() if k not in ("step", "horizon")]
            for row in json.loads(out)["rows"]
        ],
        dtype=np.float32,
    )
    np.testing.assert_allclose(got, want[0], atol=1e-5)
    rc, _, err = run_cli(["run", str(model), "--input", str(csv), "--extra", "gain=2.0"])
    assert rc == 3 and "extra input 'gain' has shape () (rank 0); the graph declares (1,)" in err
    rc, _, err = run_cli(["run", str(model), "--input", str(csv), "--extra", "gain=two"])
    assert rc == 2 and "is not a JSON number or list" in err
    rc, _, err = run_cli(["run", str(model), "--input", str(csv)])
    assert rc == 3 and "--extra name=value" in err
