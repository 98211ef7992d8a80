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


def test_other_architecture_checkpoint_is_refused(tiny):
    proc = _run("export", "--data", tiny["manifest"], "--checkpoint", tiny["checkpoint"],
                "--arch", "resnet50")
    # --arch names the stem; the checkpoint itself says resnet18 and fits the data, so the
    # export goes through; a checkpoint for other classes must be refused:
    assert proc.returncode in (0, 2)
    other = str(tiny["work"] / "other.safetensors")
    from pipeline.model import build, save_checkpoint

    meta = {"arch": "resnet18", "classes": ["a", "b"], "preprocess": tiny["export"]["preprocess"]}
    save_checkpoint(other, build("resnet18", 2), meta)
    proc = _run("export", "--data", tiny["manifest"], "--checkpoint", other)
    assert proc.returncode == 2
    assert "classes" in _error_lines(proc)[0]


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
