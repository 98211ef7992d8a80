"""Export: opset 13, dynamic batch, fixed names, ONNX Runtime agrees with PyTorch."""

import json
import logging

import numpy as np
import onnx

from pipeline.artifacts import sidecar_path
from pipeline.evaluate import ort_runner
from pipeline.export import OPSET, export


def test_graph_contract(tiny):
    model = onnx.load(tiny["onnx"])
    onnx.checker.check_model(model)
    assert OPSET == 13
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [13]
    inp, out = model.graph.input[0], model.graph.output[0]
    assert inp.name == "input" and out.name == "logits"
    assert inp.type.tensor_type.shape.dim[0].dim_param == "batch"
    meta = json.loads({p.key: p.value for p in model.metadata_props}["jetquant"])
    assert meta["classes"] == tiny["dataset"].classes


def test_check_against_pytorch_is_recorded(tiny):
    check = tiny["export"]["check"]
    assert check["agreement"] == 1.0
    assert check["images"] == len(tiny["dataset"].split("eval"))
    assert check["max_abs_diff"] < 1e-3


def test_dynamic_batch_runs(tiny):
    run = ort_runner(tiny["onnx"])
    for n in (1, 3):
        assert run(np.zeros((n, 3, 64, 64), np.float32)).shape == (n, 6)


def test_rerun_reuses_when_checkpoint_unchanged(tiny, caplog):
    caplog.set_level(logging.INFO, logger="jetquant")
    before = open(sidecar_path(tiny["onnx"])).read()
    record = export(tiny["checkpoint"], tiny["onnx"], tiny["dataset"])
    assert record["check"]["agreement"] == 1.0
    assert "reusing" in caplog.text
    assert open(sidecar_path(tiny["onnx"])).read() == before
