"""pipeline.device: L4T parsing, the JetPack table, board facts, host description, docker.mk."""

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.version import Version

from pipeline import device
from pipeline.errors import JetquantError

REPO = Path(__file__).resolve().parents[1]

# First lines of /etc/nv_tegra_release as real Jetsons print them (GCIDs and dates copied from
# public logs); R36 files carry extra lines after the first.
R36_TAIL = ("# KERNEL_VARIANT: oot\nTARGET_USERSPACE_LIB_DIR=nvidia\n"
            "TARGET_USERSPACE_LIB_DIR_PATH=usr/lib/aarch64-linux-gnu/nvidia\n")
RELEASES = {
    "R32.5.0": "# R32 (release), REVISION: 5.0, GCID: 25531747, BOARD: t186ref, EABI: aarch64, "
               "DATE: Fri Jan 15 23:21:05 UTC 2021\n",
    "R32.7.1": "# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t210ref, EABI: aarch64, "
               "DATE: Sat Feb 19 17:05:08 UTC 2022\n",
    "R32.7.4": "# R32 (release), REVISION: 7.4, GCID: 33514132, BOARD: t210ref, EABI: aarch64, "
               "DATE: Fri Jun  9 04:25:08 UTC 2023\n",
    "R34.1.1": "# R34 (release), REVISION: 1.1, GCID: 30414990, BOARD: t186ref, EABI: aarch64, "
               "DATE: Tue May 17 04:20:55 UTC 2022\n",
    "R35.1.0": "# R35 (release), REVISION: 1.0, GCID: 31346300, BOARD: t186ref, EABI: aarch64, "
               "DATE: Thu Aug 25 18:41:45 UTC 2022\n",
    "R35.3.1": "# R35 (release), REVISION: 3.1, GCID: 32827747, BOARD: t186ref, EABI: aarch64, "
               "DATE: Sun Mar 19 15:19:21 UTC 2023\n",
    "R35.4.1": "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, "
               "DATE: Tue Aug  1 19:57:35 UTC 2023\n",
    "R36.2.0": "# R36 (release), REVISION: 2.0, GCID: 35084178, BOARD: generic, EABI: aarch64, "
               "DATE: Tue Dec 19 05:55:03 UTC 2023\n" + R36_TAIL,
    "R36.4.3": "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, "
               "DATE: Wed Jan  8 01:49:37 UTC 2025\n" + R36_TAIL,
    # JetPack 7 (Thor); the brief's "R38.0" and a later point release.
    "R38.0.0": "# R38 (release), REVISION: 0.0, GCID: 00000000, BOARD: generic, EABI: aarch64\n",
    "R39.2.0": "# R39 (release), REVISION: 2.0, GCID: 45755727, BOARD: generic, EABI: aarch64, "
               "DATE: Mon Jun  1 09:28:48 PM UTC 2026\n# KERNEL_VARIANT: oot\n",
}

# release -> (JetPack line, base image, Dockerfile, TensorRT, Python, build args)
SUPPORTED = {
    "R32.7.1": ("4.6.x", "nvcr.io/nvidia/l4t-base:r32.7.1", "docker/Dockerfile.jp46", "8.2.1",
                "3.6", ""),
    "R32.7.4": ("4.6.x", "nvcr.io/nvidia/l4t-base:r32.7.1", "docker/Dockerfile.jp46", "8.2.1",
                "3.6", ""),
    "R35.3.1": ("5.1.x", "nvcr.io/nvidia/l4t-jetpack:r35.4.1", "docker/Dockerfile.jp5", "8.5.2",
                "3.8", ""),
    "R35.4.1": ("5.1.x", "nvcr.io/nvidia/l4t-jetpack:r35.4.1", "docker/Dockerfile.jp5", "8.5.2",
                "3.8", ""),
    "R36.2.0": ("6.0", "nvcr.io/nvidia/l4t-jetpack:r36.3.0", "docker/Dockerfile.jp6", "8.6.2",
                "3.10", "--build-arg L4T_TAG=r36.3.0 --build-arg CUDA_PYTHON=12.2.1"),
    "R36.4.3": ("6.1/6.2", "nvcr.io/nvidia/l4t-jetpack:r36.4.0", "docker/Dockerfile.jp6", "10.3",
                "3.10", "--build-arg L4T_TAG=r36.4.0 --build-arg CUDA_PYTHON=12.6.2.post1"),
}
UNSUPPORTED = ["R32.5.0", "R34.1.1", "R35.1.0", "R38.0.0", "R39.2.0"]


def write(tmp_path, text, name="nv_tegra_release"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("release", sorted(SUPPORTED))
def test_supported_release_picks_its_image(tmp_path, release):
    row = device.host_line(write(tmp_path, RELEASES[release]))
    jetpack, image, dockerfile, tensorrt, python, build_args = SUPPORTED[release]
    assert (row.jetpack, row.base_image, row.dockerfile) == (jetpack, image, dockerfile)
    assert (row.tensorrt, row.python) == (tensorrt, python)
    assert " ".join("--build-arg " + arg for arg in row.build_args) == build_args


@pytest.mark.parametrize("release", sorted(SUPPORTED) + UNSUPPORTED)
def test_release_line_parses_to_its_version(release):
    assert device.l4t_version(RELEASES[release]) == Version(release[1:])


def test_parse_gives_major_and_revision():
    assert device.parse_tegra_release(RELEASES["R36.4.3"]) == (36, "4.3")
    assert device.parse_tegra_release(RELEASES["R32.7.1"]) == (32, "7.1")


@pytest.mark.parametrize("release", UNSUPPORTED)
def test_unsupported_release_is_refused_with_the_fix(tmp_path, release):
    path = write(tmp_path, RELEASES[release])
    with pytest.raises(JetquantError) as caught:
        device.host_line(path)
    message = str(caught.value)
    assert "L4T " + release + " " in message
    assert path in message
    for label in ("R32.7.1", "R35.2.1", "R36.2", "R36.4"):
        assert label in message
    assert "Fix: flash or upgrade" in message


@pytest.mark.parametrize("text, problem", [
    ("", "is empty"),
    ("\n\n", "is empty"),
    ("hello world\n", "not recognised as an L4T release file"),
    ("R32 REVISION 7.1\n", "not recognised as an L4T release file"),
])
def test_garbage_release_file_is_refused(tmp_path, text, problem):
    path = write(tmp_path, text)
    with pytest.raises(JetquantError, match=problem) as caught:
        device.host_line(path)
    assert path in str(caught.value)


def test_missing_release_file_means_not_a_jetson(tmp_path):
    missing = str(tmp_path / "absent")
    assert device.read_l4t(missing) is None
    with pytest.raises(JetquantError, match="is missing, so this is not a Jetson"):
        device.host_line(missing)


def test_table_ranges_do_not_overlap():
    rows = sorted(device.JETPACK_LINES, key=lambda r: Version(r.l4t_min))
    for low, high in zip(rows, rows[1:]):
        assert Version(low.l4t_below) <= Version(high.l4t_min)
    assert all(Version(r.l4t_min) < Version(r.l4t_below) for r in rows)


@pytest.mark.parametrize("model, name, fast_int8, dla", [
    ("NVIDIA Jetson Nano Developer Kit\x00", "Jetson Nano", False, False),
    ("NVIDIA Jetson Nano 2GB Developer Kit", "Jetson Nano", False, False),
    ("NVIDIA Jetson Orin Nano Developer Kit", "Jetson Orin Nano", True, False),
    ("NVIDIA Jetson Orin NX Engineering Reference Developer Kit Super", "Jetson Orin NX",
     True, True),
    ("NVIDIA Jetson AGX Orin Developer Kit", "Jetson AGX Orin", True, True),
    ("NVIDIA Jetson Xavier NX Developer Kit", "Jetson Xavier NX", True, True),
    ("Jetson-AGX", "Jetson AGX Xavier", True, True),
    ("quill", "Jetson TX2", False, False),
])
def test_board_model_gives_int8_and_dla(tmp_path, model, name, fast_int8, dla):
    info = device.jetson_model(write(tmp_path, model, "model"))
    assert info["model"] == model.rstrip("\x00")
    assert (info["known"], info["name"], info["fast_int8"], info["dla"]) == (
        True, name, fast_int8, dla)


def test_unknown_board_is_reported_not_guessed(tmp_path):
    info = device.jetson_model(write(tmp_path, "NVIDIA Jetson Thor Developer Kit", "model"))
    assert info["known"] is False
    assert info["fast_int8"] is None and info["dla"] is None


def test_no_device_tree_means_no_board(tmp_path):
    assert device.jetson_model(str(tmp_path / "absent")) is None


@pytest.mark.parametrize("output, expected", [
    ("NV Power Mode: MAXN\n0\n", {"name": "MAXN", "id": 0}),
    ("NVPM WARN: fan mode is not set!\nNV Power Mode: 5W\n1\n", {"name": "5W", "id": 1}),
    ("NV Power Mode: MAXN_SUPER\n2\n", {"name": "MAXN_SUPER", "id": 2}),
    ("nothing useful\n", None),
])
def test_power_mode_parses_nvpmodel(output, expected):
    assert device.power_mode(("printf", output.replace("%", "%%"))) == expected


def test_power_mode_without_nvpmodel_is_none():
    assert device.power_mode(("jetquant-no-such-nvpmodel", "-q")) is None


def test_failing_command_is_none():
    assert device.power_mode(("false",)) is None
    assert device.gpu_info(("false",)) is None


def test_gpu_info_parses_nvidia_smi_csv():
    out = "NVIDIA H200, 570.86.15, 143771 MiB\\n"
    assert device.gpu_info(("printf", out)) == [
        {"name": "NVIDIA H200", "driver": "570.86.15", "memory": "143771 MiB"}]


def test_clocks_read_gpu_and_cpu_frequencies(tmp_path):
    gpu = tmp_path / "devfreq" / "57000000.gpu"
    gpu.mkdir(parents=True)
    (gpu / "cur_freq").write_text("921600000\n")
    (gpu / "max_freq").write_text("921600000\n")
    (tmp_path / "devfreq" / "6000000.emc").mkdir()
    for index, cur in enumerate((1428000, 102000)):
        cpu = tmp_path / "cpu{}".format(index) / "cpufreq"
        cpu.mkdir(parents=True)
        (cpu / "scaling_cur_freq").write_text("{}\n".format(cur))
        (cpu / "cpuinfo_max_freq").write_text("1479000\n")
    info = device.clocks(str(tmp_path / "devfreq" / "*"), str(tmp_path / "cpu*" / "cpufreq"))
    assert info == {"gpu_cur_hz": 921600000, "gpu_max_hz": 921600000,
                    "cpu_cur_hz": 1428000000, "cpu_max_hz": 1479000000}


def test_clocks_absent_is_none(tmp_path):
    assert device.clocks(str(tmp_path / "x" / "*"), str(tmp_path / "y" / "*")) is None


def test_cpu_info_on_an_orin(tmp_path):
    text = ("processor\t: 0\nBogoMIPS\t: 62.50\nFeatures\t: fp asimd evtstrm aes pmull sha1 "
            "sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp uscat ilrcpc "
            "flagm\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU part\t: 0xd42\n")
    info = device.cpu_info(write(tmp_path, text, "cpuinfo"))
    assert info["model"] == "ARM Cortex-A78AE"
    assert info["flags"] == ["asimd", "asimdhp", "asimddp", "fphp"]


def test_cpu_info_on_an_x86_server(tmp_path):
    text = "model name\t: AMD EPYC 9654\nflags\t\t: fpu sse2 avx2 fma avx512f avx512_vnni\n"
    info = device.cpu_info(write(tmp_path, text, "cpuinfo"))
    assert info["model"] == "AMD EPYC 9654"
    assert info["flags"] == ["avx2", "fma", "avx512f", "avx512_vnni"]


def test_describe_host_here_has_no_jetson_and_no_gpu():
    host = device.describe_host()
    json.dumps(host)
    assert host["machine"] == platform.machine()
    assert host["python"] == platform.python_version()
    if not Path(device.TEGRA_RELEASE).exists():
        assert host["l4t"] is None and host["jetson"] is None and host["power_mode"] is None
    if shutil.which("nvidia-smi") is None:
        assert host["gpus"] is None
    assert set(host["cpu"]["flags"]) <= set(device.X86_FLAGS + device.ARM_FLAGS)


def test_describe_host_reports_an_unsupported_jetson_without_raising(tmp_path):
    host = device.describe_host(tegra_release=write(tmp_path, RELEASES["R32.5.0"]),
                                model_path=write(tmp_path, "NVIDIA Jetson Nano Developer Kit",
                                                 "model"),
                                nvpmodel=("printf", "NV Power Mode: MAXN\\n0\\n"))
    assert host["l4t"]["supported"] is False
    assert host["l4t"]["l4t"] == "32.5.0"
    assert "not supported" in host["l4t"]["problem"]
    assert host["jetson"]["fast_int8"] is False
    assert host["power_mode"] == {"name": "MAXN", "id": 0}


def test_describe_host_reports_a_supported_jetson(tmp_path):
    host = device.describe_host(tegra_release=write(tmp_path, RELEASES["R36.4.3"]))
    assert host["l4t"]["l4t"] == "36.4.3"
    assert host["l4t"]["jetpack"] == "6.1/6.2"
    assert host["l4t"]["tensorrt"] == "10.3"


@pytest.mark.parametrize("command, expected", [
    ("image", "jetquant:jp4.6"),
    ("dockerfile", "docker/Dockerfile.jp46"),
    ("base", "nvcr.io/nvidia/l4t-base:r32.7.1"),
    ("build-args", ""),
])
def test_cli_prints_one_plain_value(tmp_path, capsys, command, expected):
    path = write(tmp_path, RELEASES["R32.7.4"])
    assert device.main([command, "--tegra-release", path]) == 0
    assert capsys.readouterr().out == expected + "\n"


def test_cli_error_is_one_line_and_status_2(tmp_path, capsys):
    path = write(tmp_path, RELEASES["R34.1.1"])
    assert device.main(["image", "--tegra-release", path]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith("jetquant: error: L4T R34.1.1 ")


# docker.mk ---------------------------------------------------------------------------------

FAKE_DOCKER = """#!/bin/sh
printf '%s\\n' "$*" >> "$FAKE_DOCKER_LOG"
case "$1" in
  info) exit "${FAKE_DOCKER_INFO_RC:-0}" ;;
  build) tar -tf - > "$FAKE_DOCKER_LOG.context" ;;
esac
"""


def make(target, cwd=REPO, env=None, **variables):
    """Run one docker.mk target; return (exit status, stripped output lines)."""
    args = ["make", "--no-print-directory", "-f", "docker/docker.mk", target,
            "PY=" + sys.executable] + ["{}={}".format(k, v) for k, v in variables.items()]
    done = subprocess.run(args, cwd=str(cwd), capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, **(env or {})), check=False)
    return done.returncode, (done.stdout + done.stderr).strip().splitlines()


def fake_docker(tmp_path, info_rc=0):
    script = tmp_path / "docker"
    script.write_text(FAKE_DOCKER)
    script.chmod(0o755)
    log = tmp_path / "docker.log"
    return str(script), {"FAKE_DOCKER_LOG": str(log), "FAKE_DOCKER_INFO_RC": str(info_rc)}, log


def checkout_copy(tmp_path):
    """A minimal repository root: the package, docker/, and the lead's two files."""
    root = tmp_path / "repo"
    shutil.copytree(str(REPO / "pipeline"), str(root / "pipeline"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(str(REPO / "docker"), str(root / "docker"))
    (root / "Makefile").write_text("include docker/docker.mk\n")
    (root / "pyproject.toml").write_text("")
    return root


@pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")
@pytest.mark.parametrize("target", ["docker", "docker-engine"])
def test_docker_targets_stop_with_one_line_without_l4t(tmp_path, target):
    status, lines = make(target, TEGRA_RELEASE=str(tmp_path / "absent"))
    assert status != 0
    assert len(lines) == 1
    assert "needs a Jetson" in lines[0] and "absent is missing" in lines[0]


@pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")
def test_docker_target_on_this_machine_stops_at_the_l4t_check():
    """The brief's exact command: no /etc/nv_tegra_release here, so docker is never called."""
    if Path(device.TEGRA_RELEASE).exists():
        pytest.skip("this machine has L4T")
    status, lines = make("docker")
    assert status != 0
    assert len(lines) == 1 and "/etc/nv_tegra_release is missing" in lines[0]


@pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")
def test_docker_target_without_docker_cli_stops_with_one_line(tmp_path):
    status, lines = make("docker", TEGRA_RELEASE=write(tmp_path, RELEASES["R36.4.3"]),
                         DOCKER=str(tmp_path / "no-docker"))
    assert status != 0
    assert len(lines) == 1 and "needs the docker CLI" in lines[0]


@pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")
def test_docker_target_without_engine_stops_with_one_line(tmp_path):
    docker, env, _ = fake_docker(tmp_path, info_rc=1)
    status, lines = make("docker", env=env, TEGRA_RELEASE=write(tmp_path, RELEASES["R36.4.3"]),
                         DOCKER=docker)
    assert status != 0
    assert len(lines) == 1 and "needs a running docker engine" in lines[0]


@pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")
def test_docker_target_builds_the_tabled_image(tmp_path):
    docker, env, log = fake_docker(tmp_path)
    root = checkout_copy(tmp_path)
    status, lines = make("docker", cwd=root, env=env, DOCKER=docker,
                         TEGRA_RELEASE=write(tmp_path, RELEASES["R36.2.0"]))
    assert status == 0, lines
    assert log.read_text().splitlines()[-1] == (
        "build -f docker/Dockerfile.jp6 --build-arg L4T_TAG=r36.3.0 "
        "--build-arg CUDA_PYTHON=12.2.1 -t jetquant:jp6.0 -")
    context = set(Path(str(log) + ".context").read_text().split())
    assert {"Makefile", "pyproject.toml", "pipeline/device.py", "docker/Dockerfile.jp6"} <= context
    assert not any("__pycache__" in name for name in context)


@pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")
def test_docker_engine_needs_data(tmp_path):
    docker, env, _ = fake_docker(tmp_path)
    status, lines = make("docker-engine", env=env, DOCKER=docker,
                         TEGRA_RELEASE=write(tmp_path, RELEASES["R32.7.1"]))
    assert status != 0
    assert len(lines) == 1 and "needs DATA=" in lines[0]


@pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")
def test_docker_engine_runs_make_engine_on_the_gpu(tmp_path):
    docker, env, log = fake_docker(tmp_path)
    root = checkout_copy(tmp_path)
    data = tmp_path / "defects"
    data.mkdir()
    status, lines = make("docker-engine", cwd=root, env=env, DOCKER=docker, DATA=str(data),
                         TEGRA_RELEASE=write(tmp_path, RELEASES["R32.7.1"]))
    assert status == 0, lines
    run = log.read_text().splitlines()[-1]
    assert run.startswith("run --rm --runtime nvidia ")
    assert "-v {}:/data:ro".format(data) in run
    assert "-v {}:/opt/jetquant/engines".format(root / "engines") in run
    assert run.endswith("jetquant:jp4.6 make engine PY=python3 STAMP= DATA=/data")
