"""Which Jetson this is, and which JetPack line, container and TensorRT serve it.

The L4T release in ``/etc/nv_tegra_release`` decides everything device-side: the
container base image (its L4T major must match the host's), the TensorRT and CUDA
versions inside it, and its Python. That mapping lives in one data table,
:data:`JETPACK_LINES`; ``docker/docker.mk`` and the tests read it, so the
Dockerfiles and the table cannot drift apart.

Everything else here (board model, power mode, clocks, CPU flags, ``nvidia-smi``)
is best-effort description for reports: it returns ``None`` on a machine that is
not a Jetson, and never raises.

This module stays Python 3.6 compatible (JetPack 4.6) and imports neither torch
nor onnx. Every path and command can be overridden through arguments, for tests.
"""

import argparse
import collections
import glob
import json
import os
import platform
import re
import shutil
import subprocess
import sys

from packaging.version import Version

from .errors import JetquantError
from .log import get_logger

TEGRA_RELEASE = "/etc/nv_tegra_release"
DEVICE_TREE_MODEL = "/proc/device-tree/model"
CPUINFO = "/proc/cpuinfo"
DEVFREQ_GLOB = "/sys/class/devfreq/*"
CPUFREQ_GLOB = "/sys/devices/system/cpu/cpu[0-9]*/cpufreq"
NVPMODEL = ("nvpmodel", "-q")
NVIDIA_SMI = ("nvidia-smi", "--query-gpu=name,driver_version,memory.total",
              "--format=csv,noheader")
COMMAND_TIMEOUT_S = 10

LOG = get_logger("device")

JetPackLine = collections.namedtuple("JetPackLine", [
    "jetpack",      # JetPack release line, for people
    "l4t_label",    # the L4T releases it covers, for people
    "l4t_min",      # lowest L4T release covered (inclusive)
    "l4t_below",    # first L4T release no longer covered (exclusive)
    "tensorrt",     # TensorRT version in (or mounted into) the container
    "cuda",         # CUDA version in (or mounted into) the container
    "python",       # the container's python3
    "base_image",   # FROM line of the Dockerfile, after build args
    "dockerfile",   # path from the repository root
    "build_args",   # ("NAME=value", ...) passed to docker build
    "tag",          # tag of the jetquant image built from it
    "trt_from",     # "image" or "host" (mounted by --runtime nvidia)
])

# One row per JetPack line; the first row whose range holds the host's L4T wins.
# Sources for every value are listed in docker/README.md.
JETPACK_LINES = (
    JetPackLine("4.6.x", "R32.7.1 to R32.7.x", "32.7.1", "32.8", "8.2.1", "10.2", "3.6",
                "nvcr.io/nvidia/l4t-base:r32.7.1", "docker/Dockerfile.jp46", (),
                "jetquant:jp4.6", "host"),
    JetPackLine("5.1.x", "R35.2.1 to R35.x", "35.2.1", "36", "8.5.2", "11.4", "3.8",
                "nvcr.io/nvidia/l4t-jetpack:r35.4.1", "docker/Dockerfile.jp5", (),
                "jetquant:jp5.1", "image"),
    JetPackLine("6.0", "R36.2 to R36.3.x", "36.2", "36.4", "8.6.2", "12.2", "3.10",
                "nvcr.io/nvidia/l4t-jetpack:r36.3.0", "docker/Dockerfile.jp6",
                ("L4T_TAG=r36.3.0", "CUDA_PYTHON=12.2.1"), "jetquant:jp6.0", "image"),
    JetPackLine("6.1/6.2", "R36.4 to R36.x", "36.4", "37", "10.3", "12.6", "3.10",
                "nvcr.io/nvidia/l4t-jetpack:r36.4.0", "docker/Dockerfile.jp6",
                ("L4T_TAG=r36.4.0", "CUDA_PYTHON=12.6.2.post1"), "jetquant:jp6.1", "image"),
)

JetsonModel = collections.namedtuple("JetsonModel", [
    "marker",     # substring of /proc/device-tree/model
    "name",       # board family, for people
    "gpu_arch",   # CUDA compute capability
    "fast_int8",  # TensorRT's platform_has_fast_int8 on this GPU
    "dla",        # has Deep Learning Accelerator cores
])

# Checked in order, first match wins: the Orin rows come before "Jetson Nano"
# only for clarity ("Jetson Orin Nano" does not contain "Jetson Nano").
# Limitation: dla says whether the family has DLA cores, not how many (the Orin NX 8GB
# has one, the 16GB two); the model string does not tell them apart.
JETSON_MODELS = (
    JetsonModel("Jetson AGX Orin", "Jetson AGX Orin", "8.7", True, True),
    JetsonModel("Jetson Orin NX", "Jetson Orin NX", "8.7", True, True),
    JetsonModel("Jetson Orin Nano", "Jetson Orin Nano", "8.7", True, False),
    JetsonModel("Jetson Xavier NX", "Jetson Xavier NX", "7.2", True, True),
    JetsonModel("Jetson-AGX", "Jetson AGX Xavier", "7.2", True, True),
    JetsonModel("Jetson AGX Xavier", "Jetson AGX Xavier", "7.2", True, True),
    JetsonModel("Jetson Nano", "Jetson Nano", "5.3", False, False),
    JetsonModel("Jetson TX2", "Jetson TX2", "6.2", False, False),
    JetsonModel("quill", "Jetson TX2", "6.2", False, False),
    JetsonModel("Jetson TX1", "Jetson TX1", "5.3", False, False),
)

# CPU features that decide how fast INT8 runs on the CPU route (ONNX Runtime).
X86_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16",
             "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")
ARM_FLAGS = ("asimd", "asimdhp", "asimddp", "fphp", "i8mm", "bf16", "sve")
ARM_CPU_PARTS = {
    ("0x41", "0xd07"): "ARM Cortex-A57",
    ("0x41", "0xd42"): "ARM Cortex-A78AE",
    ("0x4e", "0x004"): "NVIDIA Carmel",
}
GPU_DEVFREQ = re.compile(r"\.(gpu|gm20b|gp10b|gv11b|ga10b)$")
RELEASE_LINE = re.compile(r"^#\s*R(\d+)\s*\(release\),\s*REVISION:\s*(\d+(?:\.\d+)*)")


def read_text(path):
    """Return a file's text, or ``None`` when it does not exist or cannot be read."""
    try:
        with open(str(path), "r", errors="replace") as handle:
            return handle.read()
    except OSError:
        return None


def parse_tegra_release(text, source=TEGRA_RELEASE):
    """Parse the first line of ``/etc/nv_tegra_release`` into ``(major, revision)``.

    Args:
        text: the file's contents, e.g. ``"# R32 (release), REVISION: 7.1, GCID: ..."``.
        source: where the text came from, named in the error message.

    Returns:
        ``(32, "7.1")`` for the example above.

    Raises:
        JetquantError: the text is empty or not in L4T's format.
    """
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if not lines:
        raise JetquantError(f"{source} is empty; it should start with a line like "
                            "'# R36 (release), REVISION: 4.3, ...'; reinstall the "
                            "nvidia-l4t-core package")
    match = RELEASE_LINE.match(lines[0])
    if match is None:
        first = lines[0][:80]
        raise JetquantError(f"{source} is not recognised as an L4T release file: first line "
                            f"{first!r}; expected '# R<major> (release), REVISION: "
                            "<minor>.<patch>, ...'")
    return int(match.group(1)), match.group(2)


def l4t_version(text, source=TEGRA_RELEASE):
    """Return the L4T release in ``text`` as a :class:`packaging.version.Version` (``32.7.1``)."""
    major, revision = parse_tegra_release(text, source)
    return Version(f"{major}.{revision}")


def read_l4t(path=TEGRA_RELEASE):
    """Return this host's L4T release, or ``None`` when ``path`` is missing (not a Jetson).

    Raises:
        JetquantError: the file exists but is empty or malformed.
    """
    text = read_text(path)
    if text is None:
        return None
    return l4t_version(text, str(path))


def supported_lines():
    """Return a one-line summary of the supported L4T releases, for messages."""
    return "; ".join(f"JetPack {row.jetpack} = L4T {row.l4t_label}"
                     for row in JETPACK_LINES)


def jetpack_line(version, source=TEGRA_RELEASE):
    """Return the :class:`JetPackLine` row that serves an L4T release.

    Args:
        version: an L4T release (``Version`` or text such as ``"36.4.3"``).
        source: where the version came from, named in the error message.

    Raises:
        JetquantError: no supported JetPack line covers this release.
    """
    version = Version(str(version))
    for row in JETPACK_LINES:
        if Version(row.l4t_min) <= version < Version(row.l4t_below):
            return row
    raise JetquantError(f"L4T R{version} (from {source}) is not supported by jetquant's "
                        f"device images; supported: {supported_lines()}. Fix: flash or upgrade "
                        "the Jetson to one of these JetPack releases, or use the CPU route "
                        "(ONNX Runtime) instead")


def host_line(path=TEGRA_RELEASE):
    """Return the :class:`JetPackLine` row for the Jetson this runs on.

    Raises:
        JetquantError: this is not a Jetson, or its L4T release is not supported.
    """
    version = read_l4t(path)
    if version is None:
        raise JetquantError(f"{path} is missing, so this is not a Jetson (or L4T is not "
                            "installed); build and run the device image on the Jetson itself")
    return jetpack_line(version, str(path))


def jetson_model(path=DEVICE_TREE_MODEL):
    """Describe the Jetson board from its device-tree model string.

    Returns:
        ``None`` when ``path`` is missing (not a Jetson); otherwise a dict with the raw
        ``model`` string, ``known``, ``name``, ``gpu_arch``, ``fast_int8`` and ``dla``
        (the last four ``None`` for a board missing from :data:`JETSON_MODELS`).
    """
    text = read_text(path)
    if text is None:
        return None
    model = text.replace("\x00", "").strip()
    for row in JETSON_MODELS:
        if row.marker in model:
            return {"model": model, "known": True, "name": row.name,
                    "gpu_arch": row.gpu_arch, "fast_int8": row.fast_int8, "dla": row.dla}
    LOG.debug("board %r is not in the Jetson model table", model)
    return {"model": model, "known": False, "name": None, "gpu_arch": None,
            "fast_int8": None, "dla": None}


def run_command(command, timeout=COMMAND_TIMEOUT_S):
    """Run a command and return its stdout, or ``None`` if it is absent, fails or hangs."""
    if shutil.which(command[0]) is None:
        return None
    try:
        # Python 3.6 (JetPack 4.6) has neither capture_output= nor text=.
        done = subprocess.run(list(command), stdout=subprocess.PIPE,  # noqa: UP022
                              stderr=subprocess.PIPE, universal_newlines=True,  # noqa: UP021
                              timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        LOG.debug("%s failed: %s", command[0], exc)
        return None
    if done.returncode != 0:
        LOG.debug("%s exited %d: %s", command[0], done.returncode, done.stderr.strip()[:200])
        return None
    return done.stdout


def power_mode(command=NVPMODEL):
    """Return the nvpmodel power mode, e.g. ``{"name": "MAXN", "id": 0}``, or ``None``."""
    out = run_command(command)
    if out is None:
        return None
    name = re.search(r"Power Mode:\s*(\S+)", out)
    if name is None:
        return None
    mode_id = re.search(r"^\s*(\d+)\s*$", out[name.end():], re.MULTILINE)
    return {"name": name.group(1), "id": int(mode_id.group(1)) if mode_id else None}


def _read_int(path):
    text = read_text(path)
    try:
        return int(text.strip()) if text else None
    except ValueError:
        return None


def clocks(devfreq_glob=DEVFREQ_GLOB, cpufreq_glob=CPUFREQ_GLOB):
    """Return current and maximum GPU and CPU clocks (Hz), or ``None`` if none are readable.

    Locked clocks (``sudo jetson_clocks``) show as current == maximum.
    """
    info = {}
    for folder in sorted(glob.glob(devfreq_glob)):
        if GPU_DEVFREQ.search(os.path.basename(folder)):
            info["gpu_cur_hz"] = _read_int(os.path.join(folder, "cur_freq"))
            info["gpu_max_hz"] = _read_int(os.path.join(folder, "max_freq"))
            break
    cpus = sorted(glob.glob(cpufreq_glob))
    if cpus:
        info["cpu_cur_hz"] = _fastest_khz_as_hz(cpus, "scaling_cur_freq")
        info["cpu_max_hz"] = _fastest_khz_as_hz(cpus, "cpuinfo_max_freq")
    return info or None


def _fastest_khz_as_hz(folders, name):
    values = [_read_int(os.path.join(folder, name)) for folder in folders]
    values = [value for value in values if value]
    return max(values) * 1000 if values else None


def cpu_info(path=CPUINFO):
    """Return the CPU model and the INT8-relevant flags it has, from ``/proc/cpuinfo``."""
    fields = {}
    for line in (read_text(path) or "").splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    model = fields.get("model name") or ARM_CPU_PARTS.get(
        (fields.get("CPU implementer"), fields.get("CPU part")))
    present = set((fields.get("flags") or fields.get("Features") or "").split())
    interest = X86_FLAGS + ARM_FLAGS
    return {"model": model, "count": os.cpu_count(),
            "flags": [flag for flag in interest if flag in present]}


def gpu_info(command=NVIDIA_SMI):
    """Return the GPUs ``nvidia-smi`` lists (name, driver, memory), or ``None``."""
    out = run_command(command)
    if not out or not out.strip():
        return None
    gpus = []
    for line in out.strip().splitlines():
        parts = [part.strip() for part in line.split(",")]
        parts += [None] * (3 - len(parts))
        gpus.append({"name": parts[0], "driver": parts[1], "memory": parts[2]})
    return gpus


def l4t_summary(path=TEGRA_RELEASE):
    """Describe the host's L4T release and JetPack line without raising.

    Returns:
        ``None`` on a machine that is not a Jetson; otherwise a dict with ``l4t`` and
        ``supported``, plus the JetPack line's fields or the ``problem`` text.
    """
    try:
        version = read_l4t(path)
    except JetquantError as exc:
        return {"l4t": None, "supported": False, "problem": str(exc)}
    if version is None:
        return None
    try:
        row = jetpack_line(version, str(path))
    except JetquantError as exc:
        return {"l4t": str(version), "supported": False, "problem": str(exc)}
    summary = {"l4t": str(version), "supported": True}
    summary.update(row._asdict())
    summary["build_args"] = list(row.build_args)
    return summary


def describe_host(tegra_release=TEGRA_RELEASE, model_path=DEVICE_TREE_MODEL, cpuinfo=CPUINFO,
                  nvpmodel=NVPMODEL, nvidia_smi=NVIDIA_SMI, devfreq_glob=DEVFREQ_GLOB,
                  cpufreq_glob=CPUFREQ_GLOB):
    """Describe the machine for reports: OS, CPU, GPU, and the Jetson details if any.

    Never raises on a machine that is not a Jetson: the Jetson-only keys are ``None``.

    Returns:
        A JSON-serialisable dict with ``machine``, ``system``, ``python``, ``cpu``,
        ``gpus``, ``l4t``, ``jetson``, ``power_mode`` and ``clocks``.
    """
    return {
        "machine": platform.machine(),
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "cpu": cpu_info(cpuinfo),
        "gpus": gpu_info(nvidia_smi),
        "l4t": l4t_summary(tegra_release),
        "jetson": jetson_model(model_path),
        "power_mode": power_mode(nvpmodel),
        "clocks": clocks(devfreq_glob, cpufreq_glob),
    }


def _answer(command, tegra_release):
    if command == "info":
        return json.dumps(describe_host(tegra_release=tegra_release), indent=2, sort_keys=True)
    row = host_line(tegra_release)
    if command == "image":
        return row.tag
    if command == "dockerfile":
        return row.dockerfile
    if command == "base":
        return row.base_image
    return " ".join("--build-arg " + arg for arg in row.build_args)


def get_parser():
    """Return the parser of the small ``python -m pipeline.device`` CLI used by docker.mk."""
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.device",
        description="Print the device image settings for this Jetson, one plain value.")
    parser.add_argument("command", choices=("image", "dockerfile", "base", "build-args", "info"),
                        help="image: tag to build; dockerfile: its path; base: its base image; "
                             "build-args: docker build arguments; info: host description (JSON)")
    parser.add_argument("--tegra-release", default=TEGRA_RELEASE,
                        help="L4T release file to read (default: %(default)s)")
    return parser


def main(argv=None):
    """Print one plain value for ``docker/docker.mk``; return the exit status."""
    args = get_parser().parse_args(argv)
    try:
        answer = _answer(args.command, args.tegra_release)
    except JetquantError as exc:
        sys.stderr.write(f"jetquant: error: {exc}\n")
        return 2
    sys.stdout.write(answer + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
