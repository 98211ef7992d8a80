"""QA gates: the pass/fail limits an INT8 candidate must meet against the FP32 baseline.

Defaults, and why a QA engineer would sign them off:

- ``max_top1_drop`` = 1.0 percentage point. MLPerf accepts INT8 at >= 99 % of
  FP32 accuracy; for a ~96 % classifier that is about one point, and
  published ResNet50 PTQ loses about 0.1 point, so 1.0 leaves room for noise
  without hiding a broken calibration.
- ``max_class_recall_drop`` = 2.0 points for any single class. A defect
  classifier can keep its overall top-1 while one defect type quietly gets
  missed more often; this gate bounds the missed-defect rate per class. It is
  looser than the top-1 gate because each class has only ~1/6 of the images.
- ``min_speedup`` = 2.5: INT8 p50 latency at batch 1 must be at least 2.5x
  faster than the FP32 model on the same backend and device. Below that the
  INT8 route is not worth its accuracy risk (TensorRT INT8 on tensor cores and
  VNNI CPUs both usually reach 3x or more).
- ``min_agreement`` is off by default. Two models that are each 96 % right can
  disagree on up to 8 % of images with identical accuracy, so a sensible limit
  depends on the baseline's accuracy; the per-class recall gate already
  catches errors that move between classes. Turn it on (e.g. 0.98) when the
  baseline top-1 is 98 % or better.

Limits come from :data:`DEFAULTS`, then a JSON (always) or TOML (Python 3.11+)
config file, then explicit overrides (the CLI flags), later ones winning. A
limit of ``None`` (JSON ``null``, or the string ``"off"``) disables a gate.
"""

import json
import math

from .errors import JetquantError

DEFAULTS = {
    "max_top1_drop": 1.0,
    "max_class_recall_drop": 2.0,
    "min_speedup": 2.5,
    "min_agreement": None,
}

UNITS = {
    "max_top1_drop": "points",
    "max_class_recall_drop": "points",
    "min_speedup": "x",
    "min_agreement": "fraction",
}

# Comparisons are made after rounding, so that 96.3 - 95.3 counts as exactly 1.0 point.
DIGITS = 6


def _check_limit(name, value, source):
    """Return a validated limit (float or None) or raise naming ``source`` and ``name``."""
    if name not in DEFAULTS:
        raise JetquantError(
            "{}: unknown gate '{}'; known gates are {}".format(
                source, name, ", ".join(sorted(DEFAULTS))
            )
        )
    if value is None or (isinstance(value, str) and value.strip().lower() == "off"):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise JetquantError(
            f"{source}: gate '{name}' has non-numeric limit {value!r}; give a number or \"off\""
        )
    value = float(value)
    if not math.isfinite(value):
        raise JetquantError(f"{source}: gate '{name}' limit must be finite")
    _check_range(name, value, source)
    return value


def _check_range(name, value, source):
    """Refuse limits that cannot be meant: negative drops, speedup <= 0, agreement > 1."""
    if name.startswith("max_") and value < 0:
        raise JetquantError(
            f"{source}: gate '{name}' = {value} is negative; drops are percentage points >= 0"
        )
    if name == "min_speedup" and value <= 0:
        raise JetquantError(f"{source}: gate 'min_speedup' must be > 0 (a ratio)")
    if name == "min_agreement" and not 0 < value <= 1:
        raise JetquantError(
            f"{source}: gate 'min_agreement' = {value} must be a fraction in (0, 1], e.g. 0.98"
        )


def _parse_config(path):
    """Return the raw mapping in a JSON or TOML gate config file."""
    try:
        with open(str(path), "rb") as handle:
            raw = handle.read()
    except OSError as exc:
        raise JetquantError(f"gate config {path} cannot be read: {exc}") from exc
    if str(path).lower().endswith(".toml"):
        return _parse_toml(path, raw)
    try:
        return json.loads(raw.decode("utf-8"))
    except ValueError as exc:
        raise JetquantError(f"gate config {path} is not valid JSON: {exc}") from exc


def _parse_toml(path, raw):
    """Parse TOML with tomllib (Python 3.11+), or explain how to proceed without it."""
    try:
        import tomllib  # novermin (guarded: Python 3.11+ only)
    except ImportError:
        raise JetquantError(
            f"gate config {path} is TOML, which needs Python 3.11+; use a .json file"
        ) from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise JetquantError(f"gate config {path} is not valid TOML: {exc}") from exc


def load_config(path):
    """Read gate limits from a JSON or TOML file.

    The file holds either the limits at top level or under a ``gates`` table,
    e.g. ``{"gates": {"max_top1_drop": 0.5, "min_agreement": 0.98}}``.

    Args:
        path: ``.json`` or ``.toml`` file.

    Returns:
        dict of the limits the file sets (only those).

    Raises:
        JetquantError: unreadable file, unknown gate name or non-numeric limit
            (the message names the file and the key).
    """
    data = _parse_config(path)
    if isinstance(data, dict) and isinstance(data.get("gates"), dict):
        data = data["gates"]
    if not isinstance(data, dict):
        raise JetquantError(f"gate config {path} must hold a mapping of gate name to limit")
    return {name: _check_limit(name, value, f"gate config {path}") for name, value in data.items()}


def resolve_limits(overrides=None, config_path=None):
    """Combine defaults, an optional config file and explicit overrides.

    Args:
        overrides: dict of gate name to limit from the command line; a value of
            ``None`` here means "not given" and keeps the earlier value (use
            ``"off"`` to disable a gate).
        config_path: optional JSON/TOML file read by :func:`load_config`.

    Returns:
        dict with every gate name and its limit (float) or None (disabled).
    """
    limits = dict(DEFAULTS)
    if config_path:
        limits.update(load_config(config_path))
    for name, value in (overrides or {}).items():
        if value is None:
            continue
        limits[name] = _check_limit(name, value, "--" + name.replace("_", "-"))
    return limits


def _find(report, name):
    """Return the result called ``name``, or None."""
    for result in report.get("results") or []:
        if result.get("name") == name:
            return result
    return None


def _gate(name, limit, value, detail, model):
    """Build one gate row; a value of None fails the gate."""
    if value is None:
        passed = False
    else:
        value = round(float(value), DIGITS)
        passed = value <= limit if name.startswith("max_") else value >= limit
    return {
        "name": name,
        "limit": limit,
        "value": value,
        "passed": bool(passed),
        "detail": detail,
        "model": model,
    }


def _top1_drop(cand, base):
    """(value in points, detail) for the top-1 drop of ``cand`` against ``base``."""
    if cand.get("top1") is None or base.get("top1") is None:
        return None, "{}: top-1 missing for {} or {}".format(
            cand["name"], cand["name"], base["name"]
        )
    drop = (base["top1"] - cand["top1"]) * 100.0
    return drop, "{} top-1 {:.2f} % vs {} {:.2f} %".format(
        cand["name"], cand["top1"] * 100, base["name"], base["top1"] * 100
    )


def _recall_drop(cand, base):
    """(worst drop in points, detail naming the class) of ``cand`` against ``base``."""
    c_rec = cand.get("per_class_recall") or {}
    b_rec = base.get("per_class_recall") or {}
    if not b_rec or set(c_rec) != set(b_rec):
        return None, "{}: per-class recall missing or its classes differ from {}".format(
            cand["name"], base["name"]
        )
    drops = {
        k: (b_rec[k] - c_rec[k]) * 100.0
        for k in b_rec
        if b_rec[k] is not None and c_rec[k] is not None
    }
    if not drops:
        return None, "{}: no class has a recall in both models".format(cand["name"])
    worst = max(sorted(drops), key=lambda k: drops[k])
    return drops[worst], "{}: worst class '{}' recall {:.2f} % vs {} {:.2f} %".format(
        cand["name"], worst, c_rec[worst] * 100, base["name"], b_rec[worst] * 100
    )


def _fp32_same_backend(report, cand):
    """Return the timed FP32 result on the candidate's backend and device, or None."""
    options = [
        r
        for r in report.get("results") or []
        if r.get("precision") == "fp32"
        and r.get("latency_ms")
        and r.get("backend") == cand.get("backend")
        and r.get("device") == cand.get("device")
    ]
    options.sort(key=lambda r: r.get("name") != report.get("baseline"))
    return options[0] if options else None


def _speedup(report, cand):
    """(p50 speedup of ``cand`` over FP32 on its backend, detail)."""
    ref = _fp32_same_backend(report, cand)
    lat = cand.get("latency_ms") or {}
    if not lat.get("p50"):
        return None, "{}: no batch-1 latency measured".format(cand["name"])
    if ref is None:
        return None, "{}: no timed FP32 result on {} / {} to compare with".format(
            cand["name"], cand.get("backend"), cand.get("device")
        )
    ratio = ref["latency_ms"]["p50"] / lat["p50"]
    return ratio, "{} p50 {:.2f} ms vs {} {:.2f} ms (batch 1)".format(
        cand["name"], lat["p50"], ref["name"], ref["latency_ms"]["p50"]
    )


def _agreement(cand, base):
    """(top-1 agreement of ``cand`` with the baseline, detail)."""
    value = (cand.get("vs_baseline") or {}).get("agreement")
    if value is None:
        return None, "{}: agreement with {} not measured".format(cand["name"], base["name"])
    return value, "{} predicts the same class as {} on {:.2f} % of images".format(
        cand["name"], base["name"], value * 100
    )


def _measure(name, report, cand, base):
    """Dispatch one gate's measurement."""
    if name == "max_top1_drop":
        return _top1_drop(cand, base)
    if name == "max_class_recall_drop":
        return _recall_drop(cand, base)
    if name == "min_speedup":
        return _speedup(report, cand)
    return _agreement(cand, base)


def evaluate(report, limits):
    """Apply the enabled gates to every candidate result against the FP32 baseline.

    A gate whose value cannot be computed (no candidate, no baseline, no
    latency) fails and says why: a missing measurement never passes.

    Args:
        report: the report dict (schema in :mod:`pipeline.report`).
        limits: dict from :func:`resolve_limits`; None disables a gate.

    Returns:
        list of dicts ``{"name", "limit", "value", "passed", "detail", "model"}``.
    """
    enabled = [(n, limits[n]) for n in DEFAULTS if limits.get(n) is not None]
    for name in limits:
        if name not in DEFAULTS:
            _check_limit(name, limits[name], "gate limits")
    base = _find(report, report.get("baseline"))
    cands = [r for r in report.get("results") or [] if r.get("role") == "candidate"]
    if base is None or not cands:
        why = (
            "baseline result '{}' missing".format(report.get("baseline"))
            if base is None
            else "no candidate (INT8) result in the report"
        )
        return [_gate(n, lim, None, why, None) for n, lim in enabled]
    rows = []
    for cand in cands:
        for name, limit in enabled:
            value, detail = _measure(name, report, cand, base)
            rows.append(_gate(name, limit, value, detail, cand["name"]))
    return rows


def all_passed(gates):
    """True when every gate row passed (and there is at least one)."""
    return bool(gates) and all(g["passed"] for g in gates)
