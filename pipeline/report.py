"""Report stage: render the benchmark's report dict as report.json, report.md and report.html.

The HTML page is one self-contained file (inline CSS, plots as base64 PNG, no
external URL), so it can be mailed or archived as is. Plots need matplotlib,
imported lazily with the Agg backend; JSON and Markdown do not.

See :data:`SCHEMA` for the dict the benchmark stage produces.
"""

import base64
import html
import io
import os

from .artifacts import atomic_write, atomic_write_json
from .errors import JetquantError
from .log import get_logger

LOG = get_logger("report")

SCHEMA = """
report.json, schema 1. Fractions are in [0, 1]; the report shows them as % / points.

{
 "schema": 1, "created": ISO-8601 UTC, "tool": {"name": "jetquant", "version": str},
 "backend": str,            main backend, e.g. "onnxruntime 1.32.0 (CPUExecutionProvider)"
 "device": str,             e.g. "AMD EPYC 9xxx, 2 cores (avx512_vnni)"
 "environment": {str: value}, python/onnxruntime/torch/tensorrt/jetpack/l4t/power_mode/cpu_flags,
                            onnxruntime_session (graph optimisations, disabled passes, threads)
 "dataset": {"name", "source", "sha256", "split", "images", "classes": [str]},
 "baseline": str,           name of the FP32 baseline result
 "results": [{
   "name": str, "precision": "fp32"|"fp16"|"int8", "backend": str, "device": str,
   "role": "baseline"|"candidate"|"reference"|"accuracy-only",
   "model_path": str, "sha256": str, "size_bytes": int, "size_ratio": float (to FP32),
   "pinned_layers": [str],
   "latency_ms": null | {"min","mean","p50","p90","p99","std","cv","n","samples": [ms],
                         "rounds" (interleaved rounds the samples were pooled from; CPU)},
   "latency_split_ms": null | {"copy_in","compute","copy_out"},          (TensorRT only)
   "throughput": null | {"<batch>": images per second},
   "peak_rss_bytes": int | null,
   "top1": fraction, "per_class_recall": {class: fraction}, "per_class_precision": {class: ..},
   "confusion": [[int]] (row = true class, column = predicted),
   "vs_baseline": null (baseline) | {"agreement", "logit_cosine", "max_abs_diff",
       "top1_diff" (model - baseline, fraction), "top1_diff_ci95": [lo, hi] (fractions,
       Newcombe method 10), "mcnemar_p" (exact), "discordant": [b, c] (b = only model right,
       c = only baseline right), "recall_drop": {class: baseline - model, fraction},
       "speedup_p50": float | null}
 }],
 "gates": [{"name", "limit", "value", "passed", "detail", "model"?}],
 "passed": bool
}
"""

REQUIRED_TOP = (
    "schema",
    "created",
    "tool",
    "backend",
    "device",
    "environment",
    "dataset",
    "baseline",
    "results",
    "gates",
    "passed",
)
REQUIRED_RESULT = (
    "name",
    "precision",
    "backend",
    "device",
    "role",
    "top1",
    "per_class_recall",
    "confusion",
    "latency_ms",
    "vs_baseline",
)
REQUIRED_GATE = ("name", "limit", "value", "passed", "detail")
ROLES = ("baseline", "candidate", "reference", "accuracy-only")
UNITS = {
    "max_top1_drop": "points",
    "max_class_recall_drop": "points",
    "min_speedup": "x",
    "min_agreement": "fraction",
}


def _missing(mapping, keys, where):
    """Raise a JetquantError when ``mapping`` lacks one of ``keys``."""
    if not isinstance(mapping, dict):
        raise JetquantError(f"report {where} must be a JSON object")
    for key in keys:
        if key not in mapping:
            raise JetquantError(
                f"report {where} lacks required key '{key}'; rerun the benchmark stage"
            )


def validate_schema(report):
    """Check that a report dict carries every key the renderers rely on.

    Args:
        report: the report dict.

    Raises:
        JetquantError: naming the first missing key (with its path), an unknown
            role, a baseline name with no result, or ``passed`` true while a gate failed.
    """
    _missing(report, REQUIRED_TOP, "(top level)")
    if report["schema"] != 1:
        raise JetquantError("report schema {} is not 1; regenerate it".format(report["schema"]))
    for key in ("results", "gates"):
        if not isinstance(report[key], list):
            raise JetquantError(f"report '{key}' must be a list; rerun the benchmark stage")
    names = []
    for i, result in enumerate(report["results"]):
        _missing(result, REQUIRED_RESULT, f"results[{i}]")
        if result["role"] not in ROLES:
            raise JetquantError(
                "report results[{}] ({}) has role '{}'; expected one of {}".format(
                    i, result["name"], result["role"], ", ".join(ROLES)
                )
            )
        names.append(result["name"])
    if report["baseline"] not in names:
        raise JetquantError(
            "report baseline '{}' is not among the results ({})".format(
                report["baseline"], ", ".join(names)
            )
        )
    for i, gate in enumerate(report["gates"]):
        _missing(gate, REQUIRED_GATE, f"gates[{i}]")
    if report["passed"] and not all(g["passed"] for g in report["gates"]):
        raise JetquantError("report says passed although a gate failed; recompute 'passed'")


# ---------------------------------------------------------------- numbers and words


def _f(value, spec="{:.2f}", missing="-"):
    """Format a number, or ``missing`` when it is None."""
    return missing if value is None else spec.format(value)


def _baseline(report):
    """Return the FP32 baseline result."""
    return next(r for r in report["results"] if r["name"] == report["baseline"])


def worst_recall_drop(result, baseline):
    """Return (drop in points, class) of the class whose recall fell most, or (None, None)."""
    if result is baseline:
        return None, None
    mine = result.get("per_class_recall") or {}
    ref = baseline.get("per_class_recall") or {}
    drops = {
        k: (ref[k] - mine[k]) * 100.0 for k in ref if mine.get(k) is not None and ref[k] is not None
    }
    if not drops:
        return None, None
    worst = max(sorted(drops), key=lambda k: drops[k])
    return drops[worst], worst


def _batches(report):
    """Sorted batch sizes that appear in any result's throughput."""
    sizes = set()
    for result in report["results"]:
        sizes.update(int(b) for b in (result.get("throughput") or {}))
    return sorted(sizes)


def _row(result, baseline, batches):
    """One summary row of display strings for a result."""
    lat = result.get("latency_ms") or {}
    thr = result.get("throughput") or {}
    drop, cls = worst_recall_drop(result, baseline)
    size = result.get("size_bytes")
    agree = (result.get("vs_baseline") or {}).get("agreement")
    rss = result.get("peak_rss_bytes")
    row = [
        result["name"],
        result["role"],
        result["precision"].upper(),
        _f(lat.get("p50")),
        _f(lat.get("p90")),
        _f(lat.get("p99")),
    ]
    row += [_f(thr.get(str(b)), "{:.1f}") for b in batches]
    row += [
        _f(result["top1"] * 100, "{:.2f}"),
        _drop_text(drop, cls),
        _f(None if size is None else size / 1e6, "{:.1f}"),
        _f(result.get("size_ratio"), "{:.2f}"),
        _f(None if agree is None else agree * 100, "{:.2f}"),
        _f(None if rss is None else rss / 1e6, "{:.0f}"),
    ]
    return row


def _drop_text(drop, cls):
    """'1.00 (crazing)' for a recall drop; the class is named only when recall fell."""
    if drop is None:
        return "-"
    return f"{drop:.2f} ({cls})" if drop > 0 else f"{drop:.2f}"


def _header(batches):
    """Column titles of the summary table."""
    return (
        ["result", "role", "precision", "p50 ms", "p90 ms", "p99 ms"]
        + [f"img/s b{b}" for b in batches]
        + [
            "top-1 %",
            "worst recall drop (pts, class)",
            "size MB",
            "size / FP32",
            "agreement %",
            "peak RSS MB",
        ]
    )


def summary_rows(report):
    """Return (header, rows) of the summary table as display strings."""
    base = _baseline(report)
    batches = _batches(report)
    return _header(batches), [_row(r, base, batches) for r in report["results"]]


def _p_text(p):
    """Format a p-value with its relation sign: '= 0.62', '= 0.004', '< 0.001'."""
    if p is None:
        return "not computed"
    if p < 0.001:
        return "< 0.001"
    return f"= {p:.3f}" if p < 0.01 else f"= {p:.2f}"


def comparison_sentence(result, baseline):
    """One plain sentence: the top-1 difference, its 95 % CI and the McNemar p.

    Args:
        result: a non-baseline result with ``vs_baseline``.
        baseline: the FP32 baseline result.

    Returns:
        str, e.g. "int8-cpu (INT8) top-1 is 0.3 points below the FP32 baseline
        fp32-ort (95 % CI -1.0 to +0.4; McNemar exact p = 0.62)."
    """
    vs = result.get("vs_baseline") or {}
    diff = vs.get("top1_diff")
    if diff is None:
        diff = result["top1"] - baseline["top1"]
    points = diff * 100.0
    if round(points, 1) == 0:
        how = "equals the top-1 of"
    else:
        how = "is {:.1f} points {}".format(abs(points), "above" if points > 0 else "below")
    ci = vs.get("top1_diff_ci95")
    ci_text = "95 % CI not computed"
    if ci:
        ci_text = f"95 % CI {ci[0] * 100:+.1f} to {ci[1] * 100:+.1f}"
    return "{} ({}) top-1 {} the FP32 baseline {} ({}; McNemar exact p {}).".format(
        result["name"],
        result["precision"].upper(),
        how,
        baseline["name"],
        ci_text,
        _p_text(vs.get("mcnemar_p")),
    )


HOW_TO_READ = (
    "How to read this: the interval is the range of top-1 differences (in points) "
    "consistent with these images; if it contains 0 and p >= 0.05, this evaluation "
    "set cannot tell the two models apart, and its lower end is the largest loss not "
    "ruled out."
)


def _gate_value(gate):
    """Format a gate's limit and value with units."""
    unit = UNITS.get(gate["name"], "")
    spec = {"points": "{:.2f} pts", "x": "{:.2f}x", "fraction": "{:.4f}"}.get(unit, "{}")
    return _f(gate["limit"], spec, "off"), _f(gate["value"], spec, "not measured")


def _gate_rows(report):
    """Gate rows as display strings: verdict, gate, model, limit, value, detail."""
    rows = []
    for gate in report["gates"]:
        limit, value = _gate_value(gate)
        rows.append(
            [
                "PASS" if gate["passed"] else "FAIL",
                gate["name"],
                gate.get("model") or "-",
                limit,
                value,
                gate.get("detail") or "",
            ]
        )
    return rows


def verdict(report):
    """'PASS' or 'FAIL' for the whole report."""
    return "PASS" if report["passed"] else "FAIL"


def banner(report):
    """One line naming which backend and device produced the figures, and what they are not."""
    backend = report["backend"]
    env = report.get("environment") or {}
    lower = backend.lower()
    text = "Measured with {} on {}".format(backend, report["device"])
    if "stand-in" in lower or "standin" in lower or "stub" in lower:
        return text + ": a TensorRT stand-in that checks wiring only; not TensorRT figures"
    if "tensorrt" in lower and (env.get("jetpack") or env.get("l4t")):
        return text + ": Jetson figures (JetPack {}, L4T {}, power mode {})".format(
            env.get("jetpack") or "?", env.get("l4t") or "?", env.get("power_mode") or "unknown"
        )
    if "tensorrt" in lower:
        return text + ": TensorRT on a non-Jetson machine; not Jetson figures"
    return text + ": not Jetson figures"


def _noisy(report, limit=0.1):
    """Names and cv of results whose batch-1 latency varied by more than ``limit``."""
    out = []
    for result in report["results"]:
        cv = (result.get("latency_ms") or {}).get("cv")
        if cv is not None and cv > limit:
            out.append("{} (cv {:.2f})".format(result["name"], cv))
    return out


def _flat(mapping, prefix=""):
    """Flatten nested dicts into ("a.b", value) pairs."""
    for key, value in sorted(mapping.items()):
        if isinstance(value, dict):
            yield from _flat(value, prefix + key + ".")
        else:
            yield prefix + key, value


def _env_rows(report):
    """Environment as (key, text) pairs, nested keys dotted, lists joined, None shown as n/a."""
    rows = []
    for key, value in _flat(report.get("environment") or {}):
        if isinstance(value, (list, tuple)):
            value = ", ".join(str(v) for v in value)
        rows.append((key, "n/a" if value is None else str(value)))
    return rows


def comparison_rows(report):
    """Rows for the extra paired comparisons (e.g. distilled vs label-only student)."""
    rows = []
    for c in report.get("comparisons") or []:
        lo, hi = c["top1_diff_ci95"]
        rows.append([c["label"], "{} - {}".format(c["a"], c["b"]),
                     "{:+.2f}".format(100 * c["top1_diff"]),
                     "{:+.2f} to {:+.2f}".format(100 * lo, 100 * hi), _p_text(c["mcnemar_p"]),
                     "-" if c.get("speedup_p50") is None else "{:.2f}x".format(c["speedup_p50"])])
    return rows


COMPARISON_HEADER = ["comparison", "a - b", "top-1 diff (pts)", "95 % CI (pts)", "McNemar p",
                     "speed-up of a (p50)"]


def _dataset_text(report):
    """One line describing the evaluation data."""
    ds = report["dataset"]
    return "{} ({} split, {} images, {} classes; sha256 {})".format(
        ds.get("name"),
        ds.get("split"),
        ds.get("images"),
        len(ds.get("classes") or []),
        str(ds.get("sha256"))[:16],
    )


def _notes(report):
    """Extra facts per result: pinned layers, TensorRT latency split, peak memory."""
    notes = []
    for r in report["results"]:
        if r.get("pinned_layers"):
            notes.append(
                "{}: pinned layers kept out of INT8: {}".format(
                    r["name"], ", ".join(r["pinned_layers"])
                )
            )
        split = r.get("latency_split_ms")
        if split:
            notes.append(
                "{}: batch-1 latency split copy-in {} / compute {} / copy-out {} ms".format(
                    r["name"],
                    _f(split.get("copy_in")),
                    _f(split.get("compute")),
                    _f(split.get("copy_out")),
                )
            )
    noisy = _noisy(report)
    if noisy:
        notes.append(
            "Noisy latency: {}; lock the clocks (jetson_clocks on Jetson) and rerun.".format(
                ", ".join(noisy)
            )
        )
    return notes


# ---------------------------------------------------------------- plain text and Markdown


def _aligned(header, rows, right_from=None):
    """Lay out rows in columns padded to their widest cell; numbers right-aligned."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]

    def pad(i, cell, width):
        right = right_from is not None and i >= right_from
        return str(cell).rjust(width) if right else str(cell).ljust(width)

    lines = [
        "  ".join(pad(i, c, w) for i, (c, w) in enumerate(zip(line, widths))).rstrip()
        for line in [header] + rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def summary_table(report):
    """Plain-text summary the CLI prints: results table, gates and the overall verdict.

    Args:
        report: the report dict.

    Returns:
        str with aligned columns, no trailing newline.
    """
    validate_schema(report)
    header, rows = summary_rows(report)
    keep = [i for i, h in enumerate(header) if h not in ("role", "size / FP32", "peak RSS MB")]
    short = [[row[i] for i in keep] for row in rows]
    parts = [banner(report), "", _aligned([header[i] for i in keep], short, right_from=2), ""]
    if report["gates"]:
        parts.append(
            _aligned(["gate", "name", "model", "limit", "value", "detail"], _gate_rows(report))
        )
        parts.append("")
    parts.append(f"overall: {verdict(report)}")
    return "\n".join(parts)


def _md_table(header, rows):
    """A Markdown table; pipes inside cells are escaped."""

    def cell(text):
        return str(text).replace("|", "\\|")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown(report):
    """Return report.md's text."""
    base = _baseline(report)
    header, rows = summary_rows(report)
    backends = [[r["name"], r["backend"], r["device"]] for r in report["results"]]
    out = [
        f"# jetquant report: {verdict(report)}",
        "",
        f"**{banner(report)}**",
        "",
        "Created {} by {} {}. Evaluation data: {}.".format(
            report["created"],
            report["tool"].get("name"),
            report["tool"].get("version"),
            _dataset_text(report),
        ),
        "",
        "## Results",
        "",
        _md_table(header, rows),
        "",
        _md_table(["result", "backend", "device"], backends),
        "",
        "## Gates",
        "",
    ]
    out += [
        _md_table(["verdict", "gate", "model", "limit", "value", "detail"], _gate_rows(report))
        if report["gates"]
        else "No gates were evaluated."
    ]
    out += ["", f"Overall: **{verdict(report)}**", "", "## Accuracy against FP32", ""]
    out += ["- " + comparison_sentence(r, base) for r in report["results"] if r is not base]
    out += ["", HOW_TO_READ, ""]
    if report.get("comparisons"):
        out += ["## Comparisons", "", _md_table(COMPARISON_HEADER, comparison_rows(report)), ""]
    out += _md_notes(report)
    out += ["## Environment", "", _md_table(["key", "value"], _env_rows(report)), ""]
    return "\n".join(out)


def _md_notes(report):
    """Markdown lines for the notes section (empty when there is nothing to say)."""
    notes = _notes(report)
    if not notes:
        return []
    return ["## Notes", ""] + ["- " + n for n in notes] + [""]


# ---------------------------------------------------------------- plots


def _figure(width, height):
    """Return a matplotlib Figure drawn by the Agg canvas (no pyplot, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _png(fig):
    """Return a figure as base64 PNG text."""
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _horizontal():
    """Keyword for a horizontal box plot: ``orientation`` from matplotlib 3.10, else ``vert``."""
    import matplotlib
    from packaging.version import Version

    if Version(matplotlib.__version__) >= Version("3.10"):
        return {"orientation": "horizontal"}
    return {"vert": False}


def plot_latency(report):
    """Box plot of the raw batch-1 latency samples per result; None without samples."""
    timed = [r for r in report["results"] if (r.get("latency_ms") or {}).get("samples")]
    if not timed:
        return None
    fig = _figure(8, 0.6 * len(timed) + 1.4)
    ax = fig.add_subplot(1, 1, 1)
    data = [r["latency_ms"]["samples"] for r in timed]
    ax.boxplot(data, whis=(1, 99), flierprops={"markersize": 2}, **_horizontal())
    ax.set_yticks(range(1, len(timed) + 1))
    ax.set_yticklabels(["{} ({})".format(r["name"], r["precision"].upper()) for r in timed])
    ax.invert_yaxis()
    ax.set_xlim(left=0)
    ax.set_xlabel("batch-1 latency, ms (box: p25-p75, line: p50, whiskers: data within p1-p99)")
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def plot_accuracy(report):
    """Grouped bars: top-1 and each class's recall, one bar per result."""
    classes = list(report["dataset"].get("classes") or [])
    results = [r for r in report["results"] if r.get("per_class_recall")]
    groups = ["top-1"] + classes
    fig = _figure(max(8, 1.2 * len(groups)), 3.8)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / max(1, len(results))
    low = 100.0
    for i, r in enumerate(results):
        values = [r["top1"] * 100] + [100 * (r["per_class_recall"].get(c) or 0) for c in classes]
        low = min(low, min(values))
        xs = [g + (i - (len(results) - 1) / 2.0) * width for g in range(len(groups))]
        ax.bar(xs, values, width, label=r["name"])
    bottom = max(0.0, 5 * int(low // 5) - 5)
    ax.set_ylim(bottom, 100.5)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, rotation=20, ha="right")
    ax.set_ylabel(f"% (axis starts at {bottom:.0f})")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(
        fontsize=8,
        ncol=max(1, len(results)),
        loc="lower center",
        bbox_to_anchor=(0.5, 1.0),
        frameon=False,
    )
    return _png(fig)


def plot_confusion(result, classes):
    """Confusion matrix of one result, counts written in the cells."""
    matrix = result["confusion"]
    n = len(matrix)
    labels = list(classes)[:n] if classes else [str(i) for i in range(n)]
    fig = _figure(4.4, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(matrix, cmap="Blues")
    peak = max(max(row) for row in matrix) or 1
    for i in range(n):
        for j in range(n):
            colour = "white" if matrix[i][j] > peak / 2 else "black"
            ax.text(j, i, str(matrix[i][j]), ha="center", va="center", fontsize=8, color=colour)
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=7)
    ax.set_yticklabels(labels, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("{} ({})".format(result["name"], result["precision"].upper()), fontsize=9)
    return _png(fig)


def plots(report):
    """Return [(title, base64 PNG)] for every plot the HTML page shows."""
    out = []
    latency = plot_latency(report)
    if latency:
        out.append(("Batch-1 latency distribution", latency))
    out.append(("Top-1 and per-class recall", plot_accuracy(report)))
    classes = report["dataset"].get("classes") or []
    for r in report["results"]:
        if r.get("confusion"):
            out.append(("Confusion matrix: " + r["name"], plot_confusion(r, classes)))
    return out


# ---------------------------------------------------------------- HTML

CSS = """
body{font-family:sans-serif;margin:24px;color:#222;max-width:1150px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:12px;margin:8px 0}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f0f0f0}td.num{text-align:right;font-variant-numeric:tabular-nums}
td:first-child{white-space:nowrap}
.banner{padding:10px 14px;background:#fff4d6;border:1px solid #e0b84c;font-weight:bold}
.pass{background:#d9f2d9}.fail{background:#f8d0d0}
.verdict{display:inline-block;padding:4px 12px;font-weight:bold;border:1px solid #888}
.grid{display:flex;flex-wrap:wrap;gap:8px}.grid img{width:360px}
figure{margin:6px 0}figcaption{font-size:12px;color:#555}
"""


def _e(text):
    """HTML-escape any value."""
    return html.escape(str(text))


def _html_table(header, rows, numeric_from=None, classes=None):
    """An HTML table; columns from ``numeric_from`` on are right-aligned."""
    out = ["<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>"]
    for k, row in enumerate(rows):
        cls = f' class="{classes[k]}"' if classes else ""
        cells = []
        for i, cell in enumerate(row):
            num = numeric_from is not None and i >= numeric_from
            cells.append("<td{}>{}</td>".format(' class="num"' if num else "", _e(cell)))
        out.append("<tr{}>{}</tr>".format(cls, "".join(cells)))
    return "\n".join(out + ["</table>"])


def _html_gates(report):
    """The gates table coloured by pass/fail, plus the overall verdict."""
    rows = _gate_rows(report)
    if not rows:
        return "<p>No gates were evaluated.</p>"
    colours = ["pass" if row[0] == "PASS" else "fail" for row in rows]
    cls = "pass" if report["passed"] else "fail"
    table = _html_table(
        ["verdict", "gate", "model", "limit", "value", "detail"], rows, classes=colours
    )
    return table + f'\n<p class="verdict {cls}">Overall: {verdict(report)}</p>'


def _html_figures(report):
    """Every plot as an inline <img>; confusion matrices side by side."""
    parts, grid = [], []
    for title, data in plots(report):
        tag = (
            '<figure><img alt="{0}" src="data:image/png;base64,{1}"><figcaption>{0}'
            "</figcaption></figure>".format(_e(title), data)
        )
        (grid if title.startswith("Confusion") else parts).append(tag)
    return "\n".join(parts + ['<div class="grid">'] + grid + ["</div>"])


def html_page(report):
    """Return report.html's text: one self-contained page."""
    base = _baseline(report)
    header, rows = summary_rows(report)
    backends = [[r["name"], r["backend"], r["device"]] for r in report["results"]]
    sentences = "".join(
        f"<li>{_e(comparison_sentence(r, base))}</li>" for r in report["results"] if r is not base
    )
    notes = "".join(f"<li>{_e(n)}</li>" for n in _notes(report))
    body = [
        f"<h1>jetquant report: {verdict(report)}</h1>",
        f'<p class="banner">{_e(banner(report))}</p>',
        "<p>Created {} by {} {}. Evaluation data: {}.</p>".format(
            _e(report["created"]),
            _e(report["tool"].get("name")),
            _e(report["tool"].get("version")),
            _e(_dataset_text(report)),
        ),
        "<h2>Results</h2>",
        _html_table(header, rows, numeric_from=3),
        _html_table(["result", "backend", "device"], backends),
        "<h2>Gates</h2>",
        _html_gates(report),
        f"<h2>Accuracy against FP32</h2><ul>{sentences}</ul><p>{_e(HOW_TO_READ)}</p>",
        "<h2>Comparisons</h2>" + _html_table(COMPARISON_HEADER, comparison_rows(report))
        if report.get("comparisons")
        else "",
        "<h2>Plots</h2>",
        _html_figures(report),
        f"<h2>Notes</h2><ul>{notes}</ul>" if notes else "",
        "<h2>Environment</h2>",
        _html_table(["key", "value"], _env_rows(report)),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>jetquant report</title><style>{}</style></head><body>\n{}\n</body></html>\n"
    ).format(CSS, "\n".join(body))


def write_reports(report, out_dir):
    """Validate the report dict and write report.json, report.md and report.html.

    Args:
        report: the report dict (see :data:`SCHEMA`).
        out_dir: folder to write into (created if missing).

    Returns:
        dict mapping "json", "md", "html" to the written paths.
    """
    validate_schema(report)
    paths = {kind: os.path.join(str(out_dir), "report." + kind) for kind in ("json", "md", "html")}
    atomic_write_json(paths["json"], report)
    atomic_write(paths["md"], markdown(report))
    atomic_write(paths["html"], html_page(report))
    for kind in ("json", "md", "html"):
        LOG.info("wrote %s (%.1f kB)", paths[kind], os.path.getsize(paths[kind]) / 1e3)
    return paths
