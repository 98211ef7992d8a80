"""Command line: ``python -m pipeline <stage> [options]``.

Only parses arguments and calls the library; user errors (``JetquantError``)
are printed on one line and exit with status 2.
"""

import argparse
import signal
import sys

from .errors import JetquantError
from .log import get_logger, setup

log = get_logger("cli")

ARCHS = ["resnet50", "resnet18", "resnet34", "mobilenet_v3_large"]  # the baseline's first


def positive_int(text):
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("{!r} is not an integer".format(text)) from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1, got {}".format(value))
    return value


def non_negative_int(text):
    """argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError("{!r} is not an integer >= 0".format(text))
    return value


def batch_list(text):
    """argparse type: comma-separated batch sizes, each >= 1."""
    try:
        return [positive_int(part) for part in text.split(",") if part.strip()] or [1]
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError("batch sizes {!r}: {}".format(text, exc)) from None


def trt_version(text):
    """argparse type: a TensorRT version such as 8.2.1 or 10.3.0."""
    from packaging.version import InvalidVersion, Version

    try:
        Version(text)
    except InvalidVersion:
        raise argparse.ArgumentTypeError("{!r} is not a TensorRT version such as 10.3.0"
                                         .format(text)) from None
    return text


def _common(parser):
    parser.add_argument(
        "--data",
        help="folder of class folders, CSV manifest path,label,split, or "
        "'elpv' (default: ../shared/data/neu-det if present, else elpv)",
    )
    parser.add_argument("--arch", choices=ARCHS, help="architecture (default resnet50; with "
                        "--checkpoint: the checkpoint's own, and a different one is refused)")
    parser.add_argument(
        "--checkpoint",
        help="FP32 baseline checkpoint (default: "
        "checkpoints/<data>-<arch>.safetensors, trained if missing)",
    )
    parser.add_argument(
        "--allow-leakage",
        action="store_true",
        help="warn instead of failing when an image is in two splits",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="debug logging (and TensorRT's verbose log)"
    )


def _engine_args(parser):
    parser.add_argument(
        "--epochs",
        type=positive_int,
        default=12,
        help="training epochs if a baseline must be trained, and for both students in "
        "distill (default 12)",
    )
    parser.add_argument("--init", help="weights to fine-tune from when training")
    parser.add_argument(
        "--device",
        default="auto",
        choices=["auto", "cpu", "cuda"],
        help="training device (auto: cuda if available)",
    )
    parser.add_argument("--retrain", action="store_true", help="train the baseline again")
    parser.add_argument(
        "--calib-algo",
        default="entropy",
        choices=["entropy", "minmax", "percentile"],
        help="calibration algorithm (default entropy)",
    )
    parser.add_argument(
        "--calib-batch", type=positive_int, default=8, help="calibration batch size (default 8)"
    )
    parser.add_argument("--calib-cache", help="calibration cache to use (refused when stale)")
    parser.add_argument("--recalibrate", action="store_true", help="ignore an existing cache")
    parser.add_argument(
        "--pin",
        action="append",
        default=[],
        metavar="NAME_OR_PATTERN",
        help="also keep these ONNX nodes out of INT8 (FP16 on TensorRT); "
        "fnmatch patterns allowed; the first conv is always pinned",
    )
    parser.add_argument(
        "--trt-target",
        type=trt_version,
        default="10.3.0",
        help="TensorRT version the host-side "
        "calibration cache is written for (default 10.3.0, JetPack 6)",
    )
    parser.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "int8", "fp16", "fp32"],
        help="TensorRT engine precision (auto: INT8, or FP16 where the GPU has no fast INT8)",
    )
    parser.add_argument(
        "--route",
        default="auto",
        choices=["auto", "implicit", "explicit"],
        help="TensorRT INT8 route: implicit (calibrator; 8.2 to 10.x) or explicit "
        "(Q/DQ graph; the only one on TensorRT 11)",
    )


def _benchmark_args(parser):
    parser.add_argument("--report-dir", default="reports", help="output folder (default reports)")
    parser.add_argument("--iterations", type=positive_int, default=200,
                        help="timed batch-1 runs per model (default 200)")
    parser.add_argument("--warmup", type=non_negative_int, default=20,
                        help="untimed runs first, in every round (default 20)")
    parser.add_argument("--rounds", type=positive_int, default=3,
                        help="interleaved rounds the timed runs are split over, every model "
                        "once per round (default 3)")
    parser.add_argument("--batches", type=batch_list, default=[1, 8, 32],
                        help="throughput batch sizes (default 1,8,32)")
    parser.add_argument("--gates", help="JSON or TOML file of gate limits")
    parser.add_argument("--max-top1-drop", type=float, help="gate: points of top-1 INT8 may lose")
    parser.add_argument(
        "--max-class-recall-drop", type=float, help="gate: points of recall any class may lose"
    )
    parser.add_argument("--min-speedup", type=float, help="gate: INT8 p50 speed-up over FP32")


def get_parser():
    """Build the argument parser."""
    parser = argparse.ArgumentParser(
        prog="jetquant",
        description="INT8 engines for image classifiers, with proof they lost no accuracy.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train the FP32 baseline")
    _common(train)
    train.add_argument("--epochs", type=positive_int, default=12, help="epochs (default 12)")
    train.add_argument("--init", help="weights to fine-tune from")
    train.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    train.add_argument("--out", help="checkpoint to write")
    for name, text in (
        ("export", "checkpoint -> ONNX, checked against PyTorch"),
        ("calibrate", "entropy calibration on the calib split"),
        ("engine", "train if needed, export, calibrate, build"),
    ):
        stage = sub.add_parser(name, help=text)
        _common(stage)
        _engine_args(stage)
    bench = sub.add_parser("benchmark", help="latency and accuracy of every precision + report")
    _common(bench)
    _engine_args(bench)
    _benchmark_args(bench)
    distill = sub.add_parser(
        "distill",
        help="distil a small student from the FP32 baseline, "
        "quantize it, and compare with a label-only student",
    )
    _common(distill)
    _engine_args(distill)
    _benchmark_args(distill)
    distill.add_argument(
        "--student",
        default="resnet18",
        choices=ARCHS[1:],
        help="student architecture (default resnet18); distill's --max-top1-drop defaults to "
        "2 points, the student's budget against the teacher's FP32",
    )
    distill.add_argument(
        "--temperature", type=float, default=2.0, help="softmax temperature T (default 2)"
    )
    distill.add_argument(
        "--alpha",
        type=float,
        default=0.5,
        help="weight of the distillation term (1 - alpha on the labels; default 0.5)",
    )
    return parser


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None):
    """Entry point; returns the process exit status.

    SIGTERM is handled like Ctrl-C, so a stopped run kills its benchmark workers and
    removes its temporary files instead of leaving them behind.
    """
    args = get_parser().parse_args(argv)
    setup(args.verbose)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return _dispatch(args)
    except JetquantError as exc:
        print("jetquant: error: {}".format(exc), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("jetquant: interrupted", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


def _options(args):
    from .workflow import Options

    names = (
        "data",
        "arch",
        "checkpoint",
        "init",
        "retrain",
        "epochs",
        "device",
        "calib_algo",
        "calib_batch",
        "calib_cache",
        "recalibrate",
        "trt_target",
        "allow_leakage",
        "precision",
        "route",
    )
    values = {n: getattr(args, n) for n in names if hasattr(args, n)}
    values["pins"] = getattr(args, "pin", [])
    return Options(**values)


def _check_measure_args(args):
    """Refuse bad gate limits, rounds and report folder of benchmark/distill before any work."""
    import os

    from .gates import resolve_limits

    resolve_limits({"max_top1_drop": args.max_top1_drop,
                    "max_class_recall_drop": args.max_class_recall_drop,
                    "min_speedup": args.min_speedup}, args.gates)
    if args.rounds > args.iterations:
        raise JetquantError("--rounds {} is more than --iterations {}: every round needs at "
                            "least one timed run; lower --rounds or raise --iterations".format(
                                args.rounds, args.iterations))
    path = args.report_dir
    if os.path.exists(path) and not os.path.isdir(path):
        raise JetquantError("--report-dir {} is a file; give a folder (it is created if "
                            "missing)".format(path))
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise JetquantError("--report-dir {} cannot be created ({}); give a folder you can "
                            "write".format(path, exc.strerror)) from None


def _verdict(report):
    from .report import summary_table

    print(summary_table(report))
    return 0 if report["passed"] else 1


def _dispatch(args):
    if args.command == "train":
        from .data import load_dataset
        from .train import Recipe, train
        from .workflow import DEFAULT_ARCH, stem

        dataset = load_dataset(args.data, allow_leakage=args.allow_leakage)
        arch = args.arch or DEFAULT_ARCH
        out = args.out or "checkpoints/{}.safetensors".format(stem(dataset, arch))
        recipe = Recipe(epochs=args.epochs, device=args.device)
        train(dataset, out, arch=arch, recipe=recipe, init=args.init)
        return 0
    if args.command in ("export", "calibrate", "engine"):
        from .workflow import engine

        engine(_options(args), until=args.command)
        return 0
    if args.command == "benchmark":
        from .benchmark import run_benchmark

        _check_measure_args(args)
        return _verdict(run_benchmark(_options(args), args))
    if args.command == "distill":
        from .distill import run_distill

        _check_measure_args(args)
        return _verdict(run_distill(_options(args), args))
    raise JetquantError("unknown command " + args.command)
