"""The command line: user errors are one line on stderr and exit status 2."""

import os
import subprocess
import sys

from conftest import ROOT


def _run(*args):
    return subprocess.run([sys.executable, "-m", "pipeline"] + list(args), cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _error_lines(proc):
    return [line for line in proc.stderr.splitlines() if "jetquant: error:" in line
            or "Traceback" in line]


def test_corrupt_jpeg_in_class_folder_is_one_line(class_folders):
    bad = class_folders / "good" / "truncated.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF" + b"\x00" * 20)
    proc = _run("engine", "--data", str(class_folders))
    assert proc.returncode == 2
    lines = _error_lines(proc)
    assert len(lines) == 1 and str(bad) in lines[0]
    assert "Traceback" not in proc.stderr


def test_contradicting_checkpoint_options_are_refused(tiny):
    proc = _run("export", "--data", tiny["manifest"], "--checkpoint", tiny["checkpoint"],
                "--arch", "resnet50")
    assert proc.returncode == 2
    assert "contradicts --checkpoint" in _error_lines(proc)[0]
    proc = _run("export", "--data", tiny["manifest"], "--checkpoint", tiny["checkpoint"],
                "--init", "x.pt")
    assert proc.returncode == 2 and "--init/--retrain" in proc.stderr
    other = str(tiny["work"] / "other.safetensors")
    from pipeline.model import build, save_checkpoint

    meta = {"arch": "resnet18", "classes": ["a", "b"], "preprocess": tiny["export"]["preprocess"]}
    save_checkpoint(other, build("resnet18", 2), meta)
    proc = _run("export", "--data", tiny["manifest"], "--checkpoint", other)
    assert proc.returncode == 2
    assert "classes" in _error_lines(proc)[0]


def test_invalid_values_fail_before_any_work(tmp_path):
    cases = [("train", "--epochs", "0"), ("engine", "--calib-batch", "0"),
             ("engine", "--trt-target", "banana"), ("benchmark", "--batches", "1,x"),
             ("benchmark", "--iterations", "0"), ("engine", "--arch", "vgg")]
    for case in cases:
        proc = _run(*case)
        assert proc.returncode == 2, case
        assert "Traceback" not in proc.stderr and "error:" in proc.stderr, case
    report_file = tmp_path / "afile"
    report_file.write_text("x")
    proc = _run("benchmark", "--report-dir", str(report_file))
    assert proc.returncode == 2 and "is a file" in proc.stderr
    proc = _run("engine", "--route", "implicit", "--trt-target", "11.4")
    assert proc.returncode == 2 and "--route explicit" in proc.stderr
    proc = _run("engine", "--route", "explicit", "--precision", "fp16")
    assert proc.returncode == 2 and "drop --route" in proc.stderr


def test_missing_data_and_bad_option():
    proc = _run("engine", "--data", "/nonexistent")
    assert proc.returncode == 2 and "not found" in proc.stderr
    proc = _run("engine", "--calib-algo", "magic")
    assert proc.returncode == 2 and "invalid choice" in proc.stderr


def test_help_lists_stages():
    proc = _run("--help")
    assert proc.returncode == 0
    for stage in ("train", "export", "calibrate", "engine", "benchmark"):
        assert stage in proc.stdout
    assert os.path.isfile(os.path.join(ROOT, "Makefile"))


def test_report_options_that_cannot_work_fail_before_measuring(tmp_path):
    from pipeline.cli import main

    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    missing = str(tmp_path / "no-data")
    assert main(["benchmark", "--data", missing, "--report-dir", str(blocker / "sub")]) == 2
    assert main(["benchmark", "--data", missing, "--iterations", "5", "--rounds", "6",
                 "--report-dir", str(tmp_path / "r")]) == 2
    assert blocker.read_text() == "not a folder"


def test_rounds_and_unwritable_report_dir_messages_name_the_option(tmp_path):
    proc = _run("benchmark", "--data", str(tmp_path / "none"), "--iterations", "5",
                "--rounds", "6", "--report-dir", str(tmp_path / "r"))
    lines = _error_lines(proc)
    assert proc.returncode == 2 and len(lines) == 1 and "--rounds 6" in lines[0]
    (tmp_path / "f").write_text("")
    proc = _run("benchmark", "--data", str(tmp_path / "none"), "--report-dir",
                str(tmp_path / "f" / "sub"))
    lines = _error_lines(proc)
    assert proc.returncode == 2 and len(lines) == 1 and "cannot be created" in lines[0]


def test_sigterm_is_an_interrupt_that_unwinds(monkeypatch, capsys):
    import signal
    import time

    from pipeline import cli

    unwound = []

    def dispatch(args):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        finally:
            unwound.append(True)  # a finally block (temp folder, worker) still runs
        return 0

    monkeypatch.setattr(cli, "_dispatch", dispatch)
    before = signal.getsignal(signal.SIGTERM)
    assert cli.main(["benchmark", "--data", "x"]) == 130
    assert unwound == [True] and "interrupted" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is before


def test_cli_architectures_are_the_models_the_package_builds():
    from pipeline.cli import ARCHS
    from pipeline.model import ARCHITECTURES
    from pipeline.workflow import DEFAULT_ARCH

    assert sorted(ARCHS) == sorted(ARCHITECTURES) and ARCHS[0] == DEFAULT_ARCH
