"""rnnedge.modeling.data: loaders, synthetic series, normalization, windows, splits, real files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rnnedge.errors import InputError, ModelFileError
from rnnedge.modeling.data import (
    KINDS,
    Normalizer,
    Series,
    load_csv,
    load_sunspots,
    make_windows,
    split,
    synthetic,
    validate_finite,
)
from rnnedge.spec import Normalization


def write(tmp_path: Path, text: str, name: str = "data.csv") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


# --- bundled data -------------------------------------------------------------------------------


def test_sunspots_shape_and_known_values() -> None:
    s = load_sunspots()
    assert s.values.shape == (309, 1)
    assert s.values.dtype == np.float64
    assert s.columns == ("SUNACTIVITY",)
    assert "sunspots.csv" in s.source
    assert s.values[0, 0] == 5.0  # 1700
    assert s.values[1, 0] == 11.0  # 1701
    assert s.values[-1, 0] == 2.9  # 2008
    assert np.all(s.values >= 0)


def test_series_values_are_read_only_copies() -> None:
    raw = np.arange(6.0).reshape(3, 2)
    s = Series(raw, ("a", "b"), "test")
    raw[0, 0] = 99.0
    assert s.values[0, 0] == 0.0
    with pytest.raises(ValueError):
        s.values[0, 0] = 1.0


def test_series_rejects_wrong_number_of_column_names() -> None:
    with pytest.raises(InputError, match="2 feature column"):
        Series(np.zeros((3, 2)), ("a",), "test")


def test_data_module_does_not_import_heavy_packages() -> None:
    code = (
        "import sys, rnnedge.modeling.data; "
        "print(sorted(m for m in ('torch', 'onnx', 'pandas') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- synthetic ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_synthetic_is_deterministic_per_seed(kind: str) -> None:
    a = synthetic(300, features=2, kind=kind, seed=3)
    b = synthetic(300, features=2, kind=kind, seed=3)
    c = synthetic(300, features=2, kind=kind, seed=4)
    assert a.values.shape == (300, 2)
    assert a.columns == ("x0", "x1")
    assert kind in a.source
    np.testing.assert_array_equal(a.values, b.values)
    assert not np.allclose(a.values, c.values)
    assert np.all(np.isfinite(a.values))


def test_synthetic_kinds_differ_in_character() -> None:
    sine = synthetic(2000, kind="sine", noise=0.0).values[:, 0]
    ar = synthetic(2000, kind="ar", noise=0.0).values[:, 0]
    walk = synthetic(2000, kind="random_walk", noise=0.0).values[:, 0]
    # Sum of sines with amplitudes 1 and 0.5 stays within ±1.5.
    assert np.max(np.abs(sine)) <= 1.5 + 1e-9
    assert np.std(sine) > 0.5
    # A stable AR(2) stays bounded and mean-reverting: both halves have similar spread.
    assert np.std(ar[:1000]) == pytest.approx(np.std(ar[1000:]), rel=0.3)
    # Its increments are not white (AR structure): lag-1 autocorrelation is strong.
    assert np.corrcoef(ar[:-1], ar[1:])[0, 1] > 0.6
    # A random walk's increments are the unit-variance steps.
    assert np.std(np.diff(walk)) == pytest.approx(1.0, rel=0.1)
    assert not np.allclose(sine, ar)


def test_synthetic_sine_features_have_different_periods() -> None:
    v = synthetic(1000, features=2, kind="sine", noise=0.0).values
    spectra = np.abs(np.fft.rfft(v - v.mean(axis=0), axis=0))
    assert np.argmax(spectra[:, 0]) != np.argmax(spectra[:, 1])


def test_synthetic_noise_is_added() -> None:
    clean = synthetic(500, kind="sine", noise=0.0).values
    noisy = synthetic(500, kind="sine", noise=0.5).values
    assert np.std(noisy - clean) == pytest.approx(0.5, rel=0.15)


def test_synthetic_unknown_kind_lists_kinds() -> None:
    with pytest.raises(InputError, match="sawtooth") as e:
        synthetic(kind="sawtooth")
    for k in KINDS:
        assert k in str(e.value)


@pytest.mark.parametrize("length", [0, 1, -5])
def test_synthetic_too_short(length: int) -> None:
    with pytest.raises(InputError, match=">= 2"):
        synthetic(length)


# --- CSV ----------------------------------------------------------------------------------------


def test_csv_auto_columns_skip_non_numeric(tmp_path: Path) -> None:
    p = write(tmp_path, "date,temp,load,site\n2024-01-01,1.5,10,a\n2024-01-02,2.5,-3e1,b\n")
    s = load_csv(p)
    assert s.columns == ("temp", "load")
    np.testing.assert_array_equal(s.values, [[1.5, 10.0], [2.5, -30.0]])
    assert s.source == str(p)


def test_csv_explicit_columns_keep_requested_order(tmp_path: Path) -> None:
    p = write(tmp_path, "a,b,c\n1,2,3\n4,5,6\n7,8,9\n")
    s = load_csv(p, ["c", "a"])
    assert s.columns == ("c", "a")
    np.testing.assert_array_equal(s.values, [[3, 1], [6, 4], [9, 7]])


def test_csv_delimiter_quotes_and_blank_lines(tmp_path: Path) -> None:
    p = write(tmp_path, '"x";"label"\n1;"one; two"\n\n2;"three"\n\n')
    s = load_csv(p, delimiter=";")
    assert s.columns == ("x",)
    np.testing.assert_array_equal(s.values[:, 0], [1.0, 2.0])


def test_csv_missing_file_names_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    with pytest.raises(ModelFileError, match=r"nope\.csv"):
        load_csv(missing)


def test_csv_missing_column_lists_available(tmp_path: Path) -> None:
    p = write(tmp_path, "alpha,beta\n1,2\n")
    with pytest.raises(InputError, match="'gamma'") as e:
        load_csv(p, ["alpha", "gamma"])
    assert "alpha" in str(e.value) and "beta" in str(e.value)


def test_csv_non_numeric_cell_names_column_row_and_text(tmp_path: Path) -> None:
    p = write(tmp_path, "t,v\n0,1.0\n1,2.0\n2,oops\n3,4.0\n")
    with pytest.raises(InputError) as e:
        load_csv(p, ["v"])
    msg = str(e.value)
    assert "'v'" in msg
    assert "data row 3" in msg
    assert "line 4" in msg
    assert "'oops'" in msg


def test_csv_auto_choice_reports_gap_instead_of_dropping_column(tmp_path: Path) -> None:
    p = write(tmp_path, "t,v\n0,1.0\n1,\n2,3.0\n")
    with pytest.raises(InputError, match="missing") as e:
        load_csv(p)
    msg = str(e.value)
    assert "'v'" in msg and "data row 2 (file line 3)" in msg and "--nan-policy" in msg


def test_csv_empty_cell_in_requested_column(tmp_path: Path) -> None:
    p = write(tmp_path, "a,b\n1,2\n3,  \n")
    with pytest.raises(InputError, match=r"'b' is missing a value at data row 2.*--nan-policy"):
        load_csv(p, ["b"])


def test_csv_header_only(tmp_path: Path) -> None:
    p = write(tmp_path, "a,b\n")
    with pytest.raises(InputError, match="no data rows"):
        load_csv(p)


def test_csv_empty_file(tmp_path: Path) -> None:
    p = write(tmp_path, "")
    with pytest.raises(InputError, match="empty"):
        load_csv(p)


def test_csv_no_numeric_column(tmp_path: Path) -> None:
    p = write(tmp_path, "name,city\nann,oslo\n")
    with pytest.raises(InputError, match="no column is numeric"):
        load_csv(p)


def test_csv_typo_in_a_numeric_column_is_reported_not_dropped(tmp_path: Path) -> None:
    p = write(tmp_path, "date,a,b\n2020,1,2\n2021,3,x4\n2022,5,6\n")
    with pytest.raises(InputError, match=r"column 'b' has non-numeric value 'x4' at data row 2"):
        load_csv(p)


def test_csv_ragged_row(tmp_path: Path) -> None:
    p = write(tmp_path, "a,b\n1,2\n3\n")
    with pytest.raises(InputError, match="line 3 has 1 fields"):
        load_csv(p)


# --- normalizer ---------------------------------------------------------------------------------


def test_normalizer_standardizes_and_round_trips() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal([5.0, -2.0, 100.0], [2.0, 0.5, 30.0], size=(500, 3))
    n = Normalizer.fit(x, target_index=(2, 0))
    z = n.transform(x)
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(z.std(axis=0), 1.0, atol=1e-12)
    back = n.inverse_targets(z[:, [2, 0]])
    np.testing.assert_allclose(back, x[:, [2, 0]], rtol=1e-12)


def test_normalizer_keeps_float_dtype_and_works_on_windows() -> None:
    x = synthetic(200, features=2).values
    n = Normalizer.fit(x)
    w = np.stack([x[:10], x[10:20]]).astype(np.float32)  # (batch, time, F)
    z = n.transform(w)
    assert z.dtype == np.float32 and z.shape == (2, 10, 2)
    y = n.inverse_targets(z[..., :1])
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, w[..., :1], rtol=1e-5, atol=1e-5)


def test_normalizer_zero_std_becomes_one() -> None:
    x = np.column_stack([np.full(100, 0.1), np.arange(100.0)])
    n = Normalizer.fit(x)
    assert n.std[0] == 1.0
    z = n.transform(x)
    assert np.all(np.isfinite(z))
    np.testing.assert_allclose(z[:, 0], 0.0, atol=1e-12)


def test_normalizer_spec_round_trip() -> None:
    x = synthetic(100, features=3, kind="ar").values
    n = Normalizer.fit(x, target_index=(1,))
    spec = n.to_spec()
    assert isinstance(spec, Normalization)
    assert spec.target_index == (1,)
    assert spec.mean == pytest.approx(tuple(x.mean(axis=0)))
    m = Normalizer.from_spec(Normalization.from_dict(spec.__dict__))
    np.testing.assert_array_equal(m.transform(x), n.transform(x))
    assert m.target_index == (1,)


def test_normalizer_rejects_wrong_feature_count_and_bad_targets() -> None:
    n = Normalizer.fit(np.zeros((10, 2)) + np.arange(10.0)[:, None])
    with pytest.raises(InputError, match="expected 2 features"):
        n.transform(np.zeros((4, 3)))
    with pytest.raises(InputError, match="expected 1 target"):
        n.inverse_targets(np.zeros((4, 2)))
    with pytest.raises(InputError, match="target_index"):
        Normalizer.fit(np.zeros((10, 2)), target_index=(2,))
    with pytest.raises(InputError, match="std"):
        Normalizer.from_spec(Normalization((0.0,), (0.0,), (0,)))


def test_normalizer_fit_rejects_nan() -> None:
    x = np.ones((5, 2))
    x[3, 1] = np.nan
    with pytest.raises(InputError, match=r"\(3, 1\)"):
        Normalizer.fit(x)


# --- windows ------------------------------------------------------------------------------------


def test_windows_shapes_and_shift() -> None:
    v = np.arange(40.0).reshape(20, 2)
    x, y = make_windows(v, 5, target_index=(1,))
    assert x.shape == (15, 5, 2) and y.shape == (15, 5, 1)
    assert x.dtype == np.float32 and y.dtype == np.float32
    np.testing.assert_array_equal(x[0], v[0:5])
    np.testing.assert_array_equal(x[-1], v[14:19])
    # Y is X shifted one step ahead: Y[n, t] == X[n, t + 1] (target columns), last is the next.
    np.testing.assert_array_equal(y[:, :-1, 0], x[:, 1:, 1])
    np.testing.assert_array_equal(y[:, -1, 0], v[5:20, 1])


def test_windows_stride_and_multiple_targets() -> None:
    v = np.arange(33.0).reshape(11, 3)
    x, y = make_windows(v, 4, stride=3, target_index=(2, 0))
    starts = [0, 3, 6]  # 11 steps, window 4: starts 0..6
    assert x.shape == (3, 4, 3) and y.shape == (3, 4, 2)
    for n, i in enumerate(starts):
        np.testing.assert_array_equal(x[n], v[i : i + 4])
        np.testing.assert_array_equal(y[n], v[i + 1 : i + 5][:, [2, 0]])


def test_windows_exact_minimum_length() -> None:
    x, y = make_windows(np.arange(6.0), 5)
    assert x.shape == (1, 5, 1) and y.shape == (1, 5, 1)
    np.testing.assert_array_equal(y[0, :, 0], [1, 2, 3, 4, 5])


def test_windows_errors_give_lengths() -> None:
    with pytest.raises(InputError, match=r"length 5 .* window of 5.*6 steps"):
        make_windows(np.arange(5.0), 5)
    with pytest.raises(InputError, match="window 0"):
        make_windows(np.arange(5.0), 0)
    with pytest.raises(InputError, match="NaN at index"):
        make_windows(np.array([1.0, np.nan, 3.0, 4.0]), 2)


# --- split --------------------------------------------------------------------------------------


def test_split_is_chronological() -> None:
    v = np.arange(100.0).reshape(50, 2)
    train, val = split(v, 0.2)
    assert train.shape == (40, 2) and val.shape == (10, 2)
    np.testing.assert_array_equal(np.concatenate([train, val]), v)
    assert train[-1, 0] < val[0, 0]


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_split_rejects_fraction_out_of_range(fraction: float) -> None:
    with pytest.raises(InputError, match="val_fraction"):
        split(np.arange(100.0), fraction)


def test_split_rejects_too_short_parts() -> None:
    with pytest.raises(InputError, match=r"9 train and 1 validation"):
        split(np.arange(10.0), 0.1)
    with pytest.raises(InputError, match=">= 30"):
        split(np.arange(100.0), 0.2, min_len=30)


# --- validate_finite ----------------------------------------------------------------------------


def test_validate_finite_names_first_index() -> None:
    x = np.zeros((2, 20, 1), dtype=np.float32)
    x[0, 12, 0] = np.nan
    x[1, 3, 0] = np.inf
    with pytest.raises(InputError) as e:
        validate_finite(x, "x")
    msg = str(e.value)
    assert msg.startswith("x has NaN at index (0, 12, 0)")
    assert "clean or impute" in msg


def test_validate_finite_reports_inf_and_passes_clean_data() -> None:
    with pytest.raises(InputError, match=r"y has -Inf at index \(2,\)"):
        validate_finite(np.array([0.0, 1.0, -np.inf]), "y")
    validate_finite(np.arange(5), "ints")
    validate_finite(np.ones((3, 3)), "ones")


MACRO_LIKE = (
    "year,quarter,realgdp,unemp,infl\n"
    "1959.0,1.0,2710.3,5.8,0.0\n"
    "1959.0,2.0,2778.8,NA,2.34\n"
    "1959.0,3.0,2775.5,5.3,\n"
    "1959.0,4.0,2785.2,5.6,2.74\n"
    "1960.0,1.0,2847.7,5.2,0.27\n"
)


@pytest.mark.parametrize("token", ["", "NA", "n/a", "null", "NaN", "None"])
def test_every_missing_token_is_one_gap(tmp_path: Path, token: str) -> None:
    p = write(tmp_path, f"a,b\n1,2\n3,{token}\n5,6\n")
    with pytest.raises(InputError, match=r"'b' is missing a value at data row 2 \(file line 3\)"):
        load_csv(p)
    assert load_csv(p, nan_policy="ffill").values[:, 1].tolist() == [2, 2, 6]
    assert load_csv(p, nan_policy="zero").values[:, 1].tolist() == [2, 0, 6]
    assert load_csv(p, nan_policy="interpolate").values[:, 1].tolist() == [2, 4, 6]


def test_time_like_columns_are_labels_not_features(tmp_path: Path) -> None:
    p = write(tmp_path, MACRO_LIKE)
    s = load_csv(p, nan_policy="interpolate")
    assert s.columns == ("realgdp", "unemp", "infl")
    assert s.ignored == ("year", "quarter") and s.time_column == "year"
    assert s.time is not None and s.time[0] == "1959.0"
    assert s.values[1, 1] == pytest.approx(5.55)
    assert s.values[2, 2] == pytest.approx((2.34 + 2.74) / 2)


def test_integer_index_and_date_text_are_time_like(tmp_path: Path) -> None:
    p = write(tmp_path, "date,co2\n19580329,316.1\n19580405,317.3\n19580412,317.6\n")
    s = load_csv(p)
    assert s.columns == ("co2",) and s.time_column == "date"
    q = write(tmp_path, "when,v\n2020-01-01,1\n2020-01-02,2\n2020-01-03,3\n", "q.csv")
    assert load_csv(q).time == ("2020-01-01", "2020-01-02", "2020-01-03")
    rows = "".join(f"{i},{v}\n" for i, v in enumerate([5, 1, 4, 2, 8, 3, 9, 7, 6, 0, 2]))
    r = write(tmp_path, "n,v\n" + rows, "r.csv")
    s = load_csv(r)
    assert s.columns == ("v",) and s.time_column == "n" and s.ignored == ("n",)


def test_a_named_time_column_is_taken_when_asked(tmp_path: Path) -> None:
    p = write(tmp_path, MACRO_LIKE)
    s = load_csv(p, ["year", "realgdp"])
    assert s.columns == ("year", "realgdp")


def test_duplicated_header_names_are_refused(tmp_path: Path) -> None:
    p = write(tmp_path, "a,b,a\n1,2,3\n4,5,6\n")
    with pytest.raises(InputError, match=r"duplicated column names \['a'\]"):
        load_csv(p)


def test_interpolate_needs_one_value(tmp_path: Path) -> None:
    p = write(tmp_path, "a,b\n1,\n3,NA\n")
    with pytest.raises(InputError, match="no value at all"):
        load_csv(p, ["a", "b"], nan_policy="interpolate")
