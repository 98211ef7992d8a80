"""Every TensorRT name the trt_* modules use exists in the bindings of each claimed version.

Where the names come from: the TensorRT bindings wheels on PyPI
(``.ci/install-trt-bindings.sh DIR``, found through ``$JETQUANT_TRT_BINDINGS``,
default ``.cache/trt-bindings``) hold the compiled module
``tensorrt_bindings/tensorrt.so`` but not libnvinfer, so it cannot be imported
as it is. A subprocess reads the libraries it needs (``readelf -d``) and the
symbols it takes from them (``nm -D --undefined-only``, nine to twelve C entry
points such as ``createInferBuilder_INTERNAL``), compiles stub libraries with
those sonames whose functions return NULL, loads them, and imports the real
module. pybind11 registers every class, method, property and enum member at
import time without calling into libnvinfer, so ``dir()`` of each class is the
version's complete public API. No stub is ever called; nothing runs on a GPU.

Scanning the binary's strings instead is not reliable: the linker merges a
string into the tail of a longer one, so ``INT8`` lives only inside ``UINT8``,
``float16`` inside ``bfloat16`` (10.3) and ``set_output_type`` inside
``reset_output_type``, and none of them is a string of its own.

Which names the code uses is derived from the code (an AST scan of the four
modules): ``trt.X`` and ``trt.X.Y`` chains, keys given to ``has``/``member``,
attributes of variables named by ``trt_adapter.RECEIVERS`` (``config.set_flag``
-> ``IBuilderConfig.set_flag``, also as ``self.config``), and the methods a
subclass of a TensorRT class overrides. Names in ``trt_adapter.VERSIONED`` must
be present exactly in the versions declared; every other name in all of them.

TensorRT 8.2 has no wheel: its names are checked against the 8.6.1 bindings
(8.x only adds names), and everything that appeared after 8.2 must be declared
in VERSIONED and so feature-tested; a stand-in with the 8.6.1 names minus those
shows the adapter choosing the 8.2 paths (binding IO API, max_workspace_size).
"""

import ast
import json
import os
import shutil
import subprocess
import sys
import types

import pytest

from pipeline import trt_adapter as adapter
from pipeline.errors import JetquantError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULES = ["pipeline/trt_adapter.py", "pipeline/trt_build.py", "pipeline/trt_calibrator.py",
           "pipeline/trt_runtime.py"]
WHEEL_VERSIONS = ("8.6.1", "10.3.0", "11.4.0.106")
BINDINGS = os.environ.get("JETQUANT_TRT_BINDINGS", os.path.join(REPO, ".cache", "trt-bindings"))
TOOLS = ("cc", "nm", "readelf")

DUMP = r'''
import ctypes, json, os, subprocess, sys, tempfile
root = sys.argv[1]
so = os.path.join(root, "tensorrt_bindings", "tensorrt.so")
stubs = tempfile.mkdtemp(prefix="trt-stubs-")
dynamic = subprocess.check_output(["readelf", "-d", so], universal_newlines=True)
needed = [l.split("[")[1].split("]")[0] for l in dynamic.splitlines() if "(NEEDED)" in l]
undefined = subprocess.check_output(["nm", "-D", "--undefined-only", so], universal_newlines=True)
symbols = [l.split()[-1] for l in undefined.splitlines() if l.strip()]
symbols = [s for s in symbols if "@" not in s and not s.startswith(("Py", "_Py"))
           and s not in ("dlopen", "dlsym", "dlclose")]
source = os.path.join(stubs, "stub.c")
with open(source, "w") as handle:
    handle.write("".join("void *%s(void) { return 0; }\n" % s for s in symbols))
for lib in [n for n in needed if n.startswith("libnv")]:
    path = os.path.join(stubs, lib)
    subprocess.check_call(["cc", "-shared", "-fPIC", "-o", path, source, "-Wl,-soname," + lib])
    ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
sys.path.insert(0, root)
import tensorrt_bindings as trt
members = {n: sorted(dir(getattr(trt, n))) for n in dir(trt) if isinstance(getattr(trt, n), type)}
print(json.dumps({"version": trt.__version__, "module": sorted(dir(trt)), "members": members}))
'''


def _missing_setup():
    absent = [tool for tool in TOOLS if shutil.which(tool) is None]
    if absent:
        return "tools {} not found (apt install build-essential)".format(", ".join(absent))
    return None


def _skip_or_fail(reason):
    if os.environ.get("CI"):
        pytest.fail(reason + " (CI must run .ci/install-trt-bindings.sh first)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def dumps():
    """{version: API dump} for every installed bindings wheel."""
    problem = _missing_setup()
    if problem:
        _skip_or_fail(problem)
    out = {}
    for version in WHEEL_VERSIONS:
        root = os.path.join(BINDINGS, version)
        if not os.path.isfile(os.path.join(root, "tensorrt_bindings", "tensorrt.so")):
            _skip_or_fail("TensorRT {} bindings not installed in {}: run "
                          ".ci/install-trt-bindings.sh {}".format(version, BINDINGS, BINDINGS))
        result = subprocess.run([sys.executable, "-c", DUMP, root], capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        out[version] = json.loads(result.stdout)
        assert out[version]["version"] == version
    return out


def present(dump, key):
    """True when the dumped bindings have ``key`` (module name or Owner.member)."""
    owner, _, name = key.partition(".")
    if not name:
        return owner in dump["module"]
    return name in dump["members"].get(owner, ())


def _chain(node):
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return parts[::-1]
    return None


def _receiver(node, receivers):
    if isinstance(node, ast.Name):
        return receivers.get(node.id)
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and \
            node.value.id == "self":
        return receivers.get(node.attr)
    return None


def _literal_key(call):
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    if name not in ("has", "member") or len(call.args) < 2:
        return None
    arg = call.args[1]
    return arg.value if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else None


def _overrides(node):
    keys = []
    for base in node.bases:
        chain = _chain(base)
        if chain and chain[0] == "trt" and len(chain) == 2:
            keys.extend("{}.{}".format(chain[1], item.name) for item in node.body
                        if isinstance(item, ast.FunctionDef) and not item.name.startswith("_"))
    return keys


def used_names(source, receivers=adapter.RECEIVERS, where="<source>"):
    """{TensorRT key: [file:line, ...]} for every TensorRT name ``source`` uses."""
    found = {}

    def add(key, node):
        found.setdefault(key, []).append("{}:{}".format(where, getattr(node, "lineno", "?")))

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute):
            chain = _chain(node)
            if chain and chain[0] == "trt" and len(chain) >= 2:
                add(".".join(chain[1:3]), node)
            owner = _receiver(node.value, receivers)
            if owner:
                add("{}.{}".format(owner, node.attr), node)
        elif isinstance(node, ast.Call) and _literal_key(node):
            add(_literal_key(node), node)
        elif isinstance(node, ast.ClassDef):
            for key in _overrides(node):
                add(key, node)
    return found


def code_names():
    """The TensorRT names the four trt_* modules use."""
    found = {}
    for rel in MODULES:
        with open(os.path.join(REPO, rel)) as handle:
            for key, lines in used_names(handle.read(), where=rel).items():
                found.setdefault(key, []).extend(lines)
    return found


def check(used, dump, version, versioned=adapter.VERSIONED):
    """Problems, one line each: names missing where claimed, or present where declared absent."""
    problems = []
    for key in sorted(used):
        claimed = adapter.declared_in(key, version, versioned)
        if claimed and not present(dump, key):
            problems.append("{} is used ({}) but TensorRT {} has no such name".format(
                key, used[key][0], version))
        if not claimed and present(dump, key):
            problems.append("{} is declared absent from TensorRT {} but is there: fix "
                            "VERSIONED".format(key, version))
    return problems


def test_scan_finds_the_names_the_adapter_uses():
    used = code_names()
    for key in ("Builder.build_serialized_network", "IBuilderConfig.set_memory_pool_limit",
                "IBuilderConfig.max_workspace_size", "ICudaEngine.create_engine_inspector",
                "EngineInspector.get_engine_information", "LayerInformationFormat.JSON",
                "ProfilingVerbosity.DETAILED", "IInt8EntropyCalibrator2.get_batch",
                "IInt8EntropyCalibrator2.read_calibration_cache", "ILayer.precision",
                "IExecutionContext.execute_async_v3", "IExecutionContext.execute_async_v2",
                "OnnxParser.num_errors", "ParserError.desc", "float16", "Logger.VERBOSE"):
        assert key in used, key
    assert len(used) > 60


@pytest.mark.parametrize("version", WHEEL_VERSIONS)
def test_every_used_name_exists_where_claimed(dumps, version):
    problems = check(code_names(), dumps[version], version)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("version", WHEEL_VERSIONS)
def test_versioned_table_matches_the_bindings(dumps, version):
    wrong = ["{}: declared {}, bindings {}".format(key, adapter.declared_in(key, version),
                                                   present(dumps[version], key))
             for key in sorted(adapter.VERSIONED)
             if adapter.declared_in(key, version) != present(dumps[version], key)]
    assert not wrong, "\n".join(wrong)


def _feature_test_calls(source):
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            name = getattr(node.func, "attr", getattr(node.func, "id", None))
            if name in ("has", "member") and len(node.args) >= 2:
                yield node


def test_every_feature_test_names_its_key_literally():
    # A key built at run time ("BuilderFlag." + name) would hide the name from the scan.
    dynamic = []
    for rel in MODULES:
        with open(os.path.join(REPO, rel)) as handle:
            dynamic.extend("{}:{}".format(rel, call.lineno)
                           for call in _feature_test_calls(handle.read())
                           if not _literal_key(call))
    assert not dynamic, dynamic


def test_every_versioned_entry_is_used_by_the_code():
    unused = sorted(set(adapter.VERSIONED) - set(code_names()))
    assert not unused, "VERSIONED lists names no code uses: {}".format(unused)


def test_checker_catches_a_misspelt_or_undeclared_name(dumps):
    source = ("def f(trt, config, builder):\n"
              "    config.set_memory_pool_limt(trt.MemoryPoolType.WORKSPACE, 1)\n"
              "    config.set_flag(trt.BuilderFlag.FP61)\n"
              "    return trt.IInt8MinMaxCalibrator, builder.build_serialized_network\n")
    used = used_names(source)
    for version in WHEEL_VERSIONS:
        text = "\n".join(check(used, dumps[version], version))
        assert "IBuilderConfig.set_memory_pool_limt is used (<source>:2)" in text
        assert "BuilderFlag.FP61 is used (<source>:3)" in text
        assert ("IInt8MinMaxCalibrator" in text) == (version == "11.4.0.106")
        assert "build_serialized_network" not in text


def test_checker_catches_a_wrong_versioned_claim(dumps):
    used = {"IBuilderConfig.max_workspace_size": ["<source>:1"]}
    wrong = {"IBuilderConfig.max_workspace_size": (None, None)}
    problems = check(used, dumps["10.3.0"], "10.3.0", versioned=wrong)
    assert problems == ["IBuilderConfig.max_workspace_size is used (<source>:1) but TensorRT "
                        "10.3.0 has no such name"]


class _Member(object):
    def __init__(self, key):
        self.key = key

    def __int__(self):
        return 3


def stand_in(dump, drop=()):
    """A module with exactly the dumped names (minus ``drop``); members are inert objects.

    A stand-in for TensorRT's Python module, not TensorRT: it answers feature tests only.
    """
    module = types.SimpleNamespace(__version__=dump["version"])
    for name in dump["module"]:
        if name.startswith("__") or name in drop:
            continue
        attrs = {m: _Member(name + "." + m) for m in dump["members"].get(name, ())
                 if not m.startswith("__") and name + "." + m not in drop}
        setattr(module, name, type(str(name), (object,), attrs))
    return module


def names_after_82():
    """VERSIONED keys that appeared after 8.2 (absent from a TensorRT 8.2 install)."""
    return [k for k, (since, _) in adapter.VERSIONED.items()
            if since is not None and adapter.Version(since) > adapter.Version("8.2")]


def test_tensorrt_82_needs_only_names_of_the_8x_bindings(dumps):
    used = code_names()
    version = "8.2.1"
    needed = [k for k in used if adapter.declared_in(k, version)]
    missing = [k for k in needed if not present(dumps["8.6.1"], k)]
    assert not missing, missing
    assert "ICudaEngine.num_io_tensors" not in needed
    assert "IBuilderConfig.set_memory_pool_limit" not in needed


def test_adapter_takes_the_82_paths_without_the_newer_names(dumps):
    dump = dict(dumps["8.6.1"], version="8.2.1.8")
    caps = adapter.Capabilities(stand_in(dump, drop=names_after_82()))
    assert (caps.io_api, caps.workspace_api) == ("binding", "attribute")
    assert caps.routes == ("implicit", "explicit")
    assert caps.constraint_flag == "OBEY_PRECISION_CONSTRAINTS"
    assert not caps.strongly_typed


@pytest.mark.parametrize("version,routes,io_api,strong,flag", [
    ("8.6.1", ("implicit", "explicit"), "tensor", False, "OBEY_PRECISION_CONSTRAINTS"),
    ("10.3.0", ("implicit", "explicit"), "tensor", True, "OBEY_PRECISION_CONSTRAINTS"),
    ("11.4.0.106", ("explicit",), "tensor", True, None),
])
def test_capabilities_follow_the_real_bindings(dumps, version, routes, io_api, strong, flag):
    caps = adapter.Capabilities(stand_in(dumps[version]))
    assert (caps.routes, caps.io_api, caps.strongly_typed, caps.constraint_flag) == \
        (routes, io_api, strong, flag)
    assert caps.workspace_api == "pool"


def test_tensorrt_11_paths_need_none_of_the_removed_names(dumps):
    trt = stand_in(dumps["11.4.0.106"])
    assert adapter.platform_has_fast_int8(trt, builder=None) is None
    for call in (lambda: adapter.set_precision_flags(trt, None, fp16=True),
                 lambda: adapter.attach_calibrator(trt, None, None, None),
                 lambda: adapter.obey_precision_pins(trt, None)):
        with pytest.raises(JetquantError, match="TensorRT 11.4.0.106"):
            call()
