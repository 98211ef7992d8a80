"""Tests for pipeline.gates: defaults, config files and gate evaluation."""

import json

import pytest

from pipeline import gates
from pipeline.errors import JetquantError

ORT = "onnxruntime 1.32.0 (CPUExecutionProvider)"
CPU = "AMD EPYC 9xxx, 2 cores"
TRT = "TensorRT 10.3.0"
ORIN = "Jetson Orin Nano 8GB"
CLASSES = ["crazing", "inclusion", "patches"]


def _result(name, precision, role, top1, recall, p50=None, backend=ORT, device=CPU, agree=None):
    return {
        "name": name,
        "precision": precision,
        "role": role,
        "backend": backend,
        "device": device,
        "top1": top1,
        "per_class_recall": dict(zip(CLASSES, recall)),
        "latency_ms": None if p50 is None else {"p50": p50, "p90": p50 * 1.1, "p99": p50 * 1.3},
        "vs_baseline": None if agree is None else {"agreement": agree},
    }


def make_report():
    """FP32 baseline 96.3 %, INT8 candidate 96.0 % and 3.0x faster, class 'patches' -1.0 pt."""
    return {
        "baseline": "fp32-ort",
        "results": [
            _result("fp32-torch", "fp32", "reference", 0.963, [0.99, 0.95, 0.95]),
            _result("fp32-ort", "fp32", "baseline", 0.963, [0.99, 0.95, 0.95], p50=42.0),
            _result(
                "int8-cpu", "int8", "candidate", 0.960, [0.99, 0.95, 0.94], p50=14.0, agree=0.985
            ),
            _result("int8-qdq", "int8", "accuracy-only", 0.958, [0.98, 0.95, 0.94]),
        ],
    }


def _by_name(rows):
    return {row["name"]: row for row in rows}


def test_defaults_are_the_documented_qa_limits():
    assert gates.DEFAULTS == {
        "max_top1_drop": 1.0,
        "max_class_recall_drop": 2.0,
        "min_speedup": 2.5,
        "min_agreement": None,
    }


def test_default_gates_pass_on_a_good_candidate():
    rows = gates.evaluate(make_report(), gates.resolve_limits())
    assert [r["name"] for r in rows] == ["max_top1_drop", "max_class_recall_drop", "min_speedup"]
    assert all(r["passed"] for r in rows) and gates.all_passed(rows)
    got = _by_name(rows)
    assert got["max_top1_drop"]["value"] == pytest.approx(0.3)
    assert got["max_class_recall_drop"]["value"] == pytest.approx(1.0)
    assert "patches" in got["max_class_recall_drop"]["detail"]
    assert got["min_speedup"]["value"] == pytest.approx(3.0)
    assert "fp32-ort" in got["min_speedup"]["detail"]
    assert {r["model"] for r in rows} == {"int8-cpu"}


def test_tighter_limits_than_measured_fail():
    limits = gates.resolve_limits(
        {
            "max_top1_drop": 0.2,
            "max_class_recall_drop": 0.5,
            "min_speedup": 3.5,
            "min_agreement": 0.99,
        }
    )
    rows = _by_name(gates.evaluate(make_report(), limits))
    assert not any(r["passed"] for r in rows.values())
    assert rows["min_agreement"]["value"] == pytest.approx(0.985)
    assert not gates.all_passed(list(rows.values()))


def test_drop_exactly_at_the_limit_passes_despite_float_error():
    report = make_report()
    report["results"][2]["top1"] = 0.953  # 0.963 - 0.953 = 0.01000000000000001
    row = _by_name(gates.evaluate(report, gates.resolve_limits()))["max_top1_drop"]
    assert row["value"] == 1.0 and row["passed"]


def test_speedup_compares_with_fp32_on_the_same_backend():
    report = make_report()
    report["results"] += [
        _result(
            "fp32-trt",
            "fp32",
            "reference",
            0.963,
            [0.99, 0.95, 0.95],
            p50=20.0,
            backend=TRT,
            device=ORIN,
        ),
        _result(
            "int8-trt",
            "int8",
            "candidate",
            0.961,
            [0.99, 0.95, 0.95],
            p50=5.0,
            backend=TRT,
            device=ORIN,
        ),
    ]
    rows = [r for r in gates.evaluate(report, gates.resolve_limits()) if r["name"] == "min_speedup"]
    got = {r["model"]: r for r in rows}
    assert got["int8-trt"]["value"] == pytest.approx(4.0)  # 20 / 5, not 42 / 5
    assert "fp32-trt" in got["int8-trt"]["detail"]
    assert got["int8-cpu"]["value"] == pytest.approx(3.0)


def test_missing_measurements_fail_never_pass():
    report = make_report()
    report["results"][2]["latency_ms"] = None
    rows = _by_name(gates.evaluate(report, gates.resolve_limits({"min_agreement": 0.9})))
    assert rows["min_speedup"]["passed"] is False
    assert rows["min_speedup"]["value"] is None
    assert "no batch-1 latency" in rows["min_speedup"]["detail"]

    report["results"][2]["vs_baseline"] = None
    rows = _by_name(gates.evaluate(report, gates.resolve_limits({"min_agreement": 0.9})))
    assert rows["min_agreement"]["passed"] is False


def test_no_candidate_fails_every_enabled_gate():
    report = make_report()
    report["results"] = [r for r in report["results"] if r["role"] != "candidate"]
    rows = gates.evaluate(report, gates.resolve_limits())
    assert len(rows) == 3
    assert all(not r["passed"] and "no candidate" in r["detail"] for r in rows)
    assert not gates.all_passed(rows)


def test_no_same_backend_fp32_fails_speedup():
    report = make_report()
    report["results"][1]["latency_ms"] = None
    row = _by_name(gates.evaluate(report, gates.resolve_limits()))["min_speedup"]
    assert not row["passed"] and "no timed FP32" in row["detail"]


def test_json_config_with_gates_table(tmp_path):
    path = tmp_path / "gates.json"
    path.write_text(
        json.dumps({"gates": {"max_top1_drop": 0.5, "min_agreement": 0.98, "min_speedup": None}})
    )
    limits = gates.resolve_limits(config_path=str(path))
    assert limits == {
        "max_top1_drop": 0.5,
        "max_class_recall_drop": 2.0,
        "min_speedup": None,
        "min_agreement": 0.98,
    }


def test_flags_override_the_config_file(tmp_path):
    path = tmp_path / "gates.json"
    path.write_text(json.dumps({"max_top1_drop": 0.5, "min_speedup": 3}))
    limits = gates.resolve_limits(
        {"max_top1_drop": 0.8, "min_speedup": None}, config_path=str(path)
    )
    assert limits["max_top1_drop"] == 0.8
    assert limits["min_speedup"] == 3.0  # None on the command line means "not given"


def test_toml_config(tmp_path):
    pytest.importorskip("tomllib", reason="TOML configs need Python 3.11+")
    path = tmp_path / "gates.toml"
    path.write_text('[gates]\nmax_class_recall_drop = 1.5\nmin_speedup = "off"\n')
    limits = gates.resolve_limits(config_path=str(path))
    assert limits["max_class_recall_drop"] == 1.5 and limits["min_speedup"] is None


@pytest.mark.parametrize(
    "content,match",
    [
        ({"gates": {"max_top1_dorp": 1}}, "unknown gate 'max_top1_dorp'"),
        ({"gates": {"min_speedup": "fast"}}, "'min_speedup' has non-numeric"),
        ({"max_top1_drop": True}, "'max_top1_drop' has non-numeric"),
        ({"max_top1_drop": -1}, "negative"),
        ({"min_agreement": 98}, "fraction"),
        ([1, 2], "mapping"),
    ],
)
def test_bad_config_names_the_file_and_key(tmp_path, content, match):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(content))
    with pytest.raises(JetquantError, match=match) as err:
        gates.load_config(str(path))
    assert str(path) in str(err.value)


def test_unreadable_and_invalid_config(tmp_path):
    with pytest.raises(JetquantError, match="cannot be read"):
        gates.load_config(str(tmp_path / "missing.json"))
    path = tmp_path / "broken.json"
    path.write_text("{max_top1_drop: 1}")
    with pytest.raises(JetquantError, match="not valid JSON"):
        gates.load_config(str(path))


def test_bad_flag_is_named():
    with pytest.raises(JetquantError, match="--min-speedup"):
        gates.resolve_limits({"min_speedup": "x2"})
    with pytest.raises(JetquantError, match="unknown gate 'speed'"):
        gates.resolve_limits({"speed": 3})
