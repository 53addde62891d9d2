"""ONNX import errors: one clear nnforge error for unsupported ops (all of them listed), damaged
or truncated files, graph inputs whose shapes don't fit, unsafe external data, bad metadata."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import nnforge as nf
from nnforge.cli import main
from nnforge.errors import ConfigError, ModelFileError, NNForgeError, ShapeError
from nnforge.onnx import GraphModule, graph_to_model, import_model, load, to_module
from nnforge.runtime import InferenceSession

FIXTURES = Path(__file__).parent / "fixtures" / "onnx"
F32 = np.float32


def _save(path: Path, nodes: list, x_shape: list, inits: dict | None = None, opset: int = 17,
          y_shape: list | None = None, domains: tuple[str, ...] = (),
          props: dict[str, str] | None = None) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape or ["N", 2])
    tensors = [numpy_helper.from_array(np.asarray(v), k) for k, v in (inits or {}).items()]
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in domains]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], tensors),
                              opset_imports=opsets,
                              ir_version=helper.find_min_ir_version_for(opsets[:1]))
    if props:
        helper.set_model_props(model, props)
    onnx.save(model, str(path))
    return path


def test_every_unsupported_op_is_listed_in_one_error(tmp_path, capsys) -> None:
    nodes = [helper.make_node("Hardmax", ["x"], ["a"], name="hs1"),
             helper.make_node("Relu", ["a"], ["b"], name="ok"),
             helper.make_node("FusedMatMul", ["b", "b"], ["c"], name="fm", domain="com.microsoft"),
             helper.make_node("MaxPool", ["c"], ["d", "i"], name="pool", kernel_shape=[2, 2]),
             # the indices are read (unread ones are dropped, like Dropout's mask)
             helper.make_node("Einsum", ["d", "i"], ["y"], name="sum", equation="ij,ij->ij")]
    path = _save(tmp_path / "bad.onnx", nodes, ["N", 2], domains=("com.microsoft",))
    with pytest.raises(ConfigError) as err:
        load(path)
    msg = str(err.value)
    for part in ("Hardmax (node 'hs1')", "com.microsoft.FusedMatMul (node 'fm')",
                 "MaxPool (node 'pool') with an Indices output", "Einsum (node 'sum')"):
        assert part in msg
    assert "4 operator(s)" in msg and "'ok'" not in msg
    with pytest.raises(ConfigError, match="Hardmax"):
        InferenceSession(path)
    assert main(["import", str(path), "-o", str(tmp_path / "bad.nnf")]) == 1
    err_line = capsys.readouterr().err
    assert err_line.count("\n") == 1 and "Einsum (node 'sum')" in err_line
    assert not (tmp_path / "bad.nnf").exists()


def test_variants_onnx_runtime_reads_otherwise_are_refused_by_node(tmp_path) -> None:
    """auto_pad SAME with dilations, or with negative padding: nnforge computed the spec's
    answer where ONNX Runtime refuses (Conv) or shifts the windows (pools); max errors 4.6
    (MaxPool) and 7.7 (AveragePool) on standard-normal inputs. Now refused by node."""
    pool = helper.make_node("MaxPool", ["x"], ["a"], name="pool", auto_pad="SAME_LOWER",
                            kernel_shape=[2, 2], dilations=[1, 2], strides=[3, 3])
    avg = helper.make_node("AveragePool", ["a"], ["y"], name="avg", auto_pad="SAME_UPPER",
                           kernel_shape=[2, 2], dilations=[2, 1])
    path = _save(tmp_path / "dil.onnx", [pool, avg], ["N", 1, 6, 8], opset=19,
                 y_shape=["N", 1, 2, 3])
    with pytest.raises(ConfigError, match=r"2 operator\(s\)") as err:
        load(path)
    for part in ("MaxPool (node 'pool') with auto_pad=SAME_LOWER and dilations [1, 2]",
                 "AveragePool (node 'avg') with auto_pad=SAME_UPPER and dilations [2, 1]",
                 "expected explicit pads"):
        assert part in str(err.value)
    # kernel 1, stride 3 on 8 rows: 3 windows need -1 rows of padding (fine), on 9 rows -2
    for rows, ok in ((8, True), (9, False)):
        node = helper.make_node("AveragePool", ["x"], ["y"], name="skip", auto_pad="SAME_UPPER",
                                kernel_shape=[1, 1], strides=[3, 3], count_include_pad=1)
        path = _save(tmp_path / f"neg{rows}.onnx", [node], ["N", 1, rows, 7], opset=19,
                     y_shape=["N", 1, 3, 3])
        if ok:
            assert load(path).nodes[0].attrs["pads"] == [0, 0, 0, 0]
            continue
        with pytest.raises(ConfigError, match=r"AveragePool skip: auto_pad=SAME_UPPER with "
                                              r"kernel \[1, 1\], strides \[3, 3\] on input "
                                              r"\(9, 7\) asks for negative padding \(-2\)"):
            load(path)


def test_unsupported_cast_names_the_type_and_the_unnamed_node(tmp_path) -> None:
    nodes = [helper.make_node("Cast", ["x"], ["h"], to=TensorProto.BFLOAT16),
             helper.make_node("Cast", ["h"], ["y"], to=TensorProto.FLOAT)]
    path = _save(tmp_path / "bf16.onnx", nodes, ["N", 2])
    with pytest.raises(ConfigError, match=r"Cast \(node 'Cast_0'\) to BFLOAT16 \(ONNX type 16; "
                                          r"nnforge holds FLOAT, UINT8, .*DOUBLE"):
        load(path)


def test_dilated_ceil_mode_pool_that_cannot_be_reexported(tmp_path) -> None:
    """Rows: the last window would start past the input (dropped, but ONNX keeps it);
    columns: the dilated overhang needs an end pad as long as the kernel, which ONNX Runtime
    refuses. Neither form is right, so graph_to_model says so (ORT's own error before)."""
    node = helper.make_node("MaxPool", ["x"], ["y"], name="mp", kernel_shape=[1, 2],
                            strides=[2, 2], dilations=[1, 2], pads=[0, 0, 0, 1], ceil_mode=1)
    graph = load(_save(tmp_path / "mp.onnx", [node], ["N", 1, 6, 9], y_shape=["N", 1, 3, 5]))
    x = np.random.default_rng(0).standard_normal((2, 1, 6, 9)).astype(F32)
    assert InferenceSession(graph).run(x).shape == (2, 1, 3, 5)
    with pytest.raises(ConfigError, match=r"MaxPool 'mp': ceil_mode with dilations \[1, 2\] on "
                                          r"input \(6, 9\) needs end pads \[0, 2\], not shorter "
                                          r"than the kernel \[1, 2\], which ONNX Runtime "
                                          r"refuses"):
        graph_to_model(graph)


@pytest.mark.parametrize("cut", [0.5, 0.9, 0.02])
def test_truncated_file_is_one_model_file_error(tmp_path, cut: float) -> None:
    data = (FIXTURES / "cnn_bn_classic.onnx").read_bytes()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[:int(len(data) * cut)])
    with pytest.raises(ModelFileError, match="truncated"):
        load(path)
    with pytest.raises(ModelFileError):
        InferenceSession(path)


def test_not_onnx_and_missing_files(tmp_path) -> None:
    (tmp_path / "empty.onnx").write_bytes(b"")
    (tmp_path / "text.onnx").write_text("hello, I am not a model\n" * 20)
    for name in ("empty.onnx", "text.onnx", "missing.onnx"):
        with pytest.raises(ModelFileError):
            load(tmp_path / name)


def test_onnx_and_nnf_files_swapped_say_which_is_which(tmp_path, capsys) -> None:
    onnx_path = tmp_path / "model.onnx"
    shutil.copy(FIXTURES / "cnn_bn_classic.onnx", onnx_path)
    nnf_path = tmp_path / "model.nnf"
    nf.save(nf.nn.Sequential(nf.nn.Linear(3, 2)), nnf_path)
    # it said "not a zip archive" with no hint
    with pytest.raises(ModelFileError, match=r"not a zip archive\); it looks like an ONNX model: "
                       r"run it with nnforge.InferenceSession\('.*model.onnx'\), or convert it "
                       r"with nnforge.onnx.to_module or 'nnforge import'"):
        nf.load(onnx_path)
    renamed = tmp_path / "model.bin"  # the protobuf's first byte tells without the extension
    shutil.copy(onnx_path, renamed)
    with pytest.raises(ModelFileError, match="looks like an ONNX model"):
        nf.load(renamed)
    # it said "Wire format was corrupt"
    with pytest.raises(ModelFileError, match=r"is an nnforge model file \(a zip archive\), not "
                       r"an ONNX model: .*'nnforge import' takes .onnx files"):
        load(nnf_path)
    assert main(["import", str(nnf_path), "-o", str(tmp_path / "out.nnf")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is an nnforge model file (a zip archive)" in err


def test_a_zip_directory_that_disagrees_with_its_entries_is_damaged(tmp_path) -> None:
    path = tmp_path / "model.nnf"
    nf.save(nf.nn.Sequential(nf.nn.Linear(3, 2)), path)
    data = path.read_bytes()
    first = data.find(b"PK\x01\x02") + 46  # the first directory entry's name
    path.write_bytes(data[:first] + b"X" + data[first + 1:])
    # it said "not an nnforge model file (it has no manifest.json)"
    with pytest.raises(ModelFileError, match=r"entry 'Xanifest.json' of .* is damaged \(its "
                       r"local header names 'manifest.json'\)"):
        nf.load(path)


def external_matmul(location: str) -> onnx.ModelProto:
    """x (N, 2) @ a (2, 2) weight stored as external data at `location` (16 bytes at 0)."""
    w = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[2, 2])
    w.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", "16")):
        w.external_data.append(onnx.StringStringEntryProto(key=k, value=v))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])
    return helper.make_model(helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])],
                                               "g", [x], [y], [w]),
                             opset_imports=[helper.make_opsetid("", 17)], ir_version=8)

def test_external_data_truncated_missing_or_outside(tmp_path) -> None:
    for f in FIXTURES.glob("mlp_dynamo.onnx*"):
        shutil.copy(f, tmp_path / f.name)
    data = tmp_path / "mlp_dynamo.onnx.data"
    full = data.read_bytes()
    data.write_bytes(full[:-8])
    with pytest.raises(ModelFileError, match="truncated"):
        load(tmp_path / "mlp_dynamo.onnx")
    data.unlink()
    with pytest.raises(ModelFileError):
        load(tmp_path / "mlp_dynamo.onnx")

    (tmp_path / "secret.bin").write_bytes(b"\0" * 64)
    inner = tmp_path / "inner"
    inner.mkdir()
    onnx.save(external_matmul("../secret.bin"), str(inner / "m.onnx"))
    with pytest.raises(ModelFileError, match="secret.bin"):
        load(inner / "m.onnx")


def test_graph_inputs_that_do_not_fit(tmp_path) -> None:
    w = np.ones((4, 3), F32)
    path = _save(tmp_path / "gemm.onnx", [helper.make_node("Gemm", ["x", "w"], ["y"])],
                 ["N", 5], {"w": w}, y_shape=["N", 3])
    with pytest.raises(ShapeError, match=r"graph inputs \(x: float32\[N,5\]\) do not fit.*"
                                         r"inner dimension 4, found 5"):
        load(path)
    conv = _save(tmp_path / "conv.onnx", [helper.make_node("Conv", ["x", "w"], ["y"])],
                 ["N", 3, 8, 8], {"w": np.ones((2, 1, 3, 3), F32)}, y_shape=["N", 2, 6, 6])
    with pytest.raises(ShapeError, match="input channels 1, found 3"):
        InferenceSession(conv)
    ok = _save(tmp_path / "ok.onnx", [helper.make_node("Gemm", ["x", "w"], ["y"])],
               ["N", 4], {"w": w}, y_shape=["N", 3])
    session = InferenceSession(ok)
    with pytest.raises(ShapeError, match=r"expected input of shape \(N, 4\), found \(2, 5\)"):
        session.run(np.zeros((2, 5), F32))


def test_graphs_the_runtime_cannot_compile(tmp_path) -> None:
    old = _save(tmp_path / "old.onnx", [helper.make_node("Relu", ["x"], ["y"])], ["N", 2],
                opset=11)
    with pytest.raises(ConfigError, match="opset 11; expected opset 13 or later"):
        load(old)
    # Reshape to (x.shape[1] + x.shape[0], x.shape[1] * x.shape[0]): two dims known only at
    # run time that are no input dims (x.shape[1], x.shape[0] alone are read at run time)
    chain = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "one"], ["a"]),
             helper.make_node("Gather", ["s", "zero"], ["b"]),
             helper.make_node("Add", ["a", "b"], ["sum"]),
             helper.make_node("Mul", ["a", "b"], ["prod"]),
             helper.make_node("Concat", ["sum", "prod"], ["t"], axis=0),
             helper.make_node("Reshape", ["x", "t"], ["y"], name="swap")]
    swap = _save(tmp_path / "swap.onnx", chain, ["N", "M"],
                 {"one": np.array([1]), "zero": np.array([0])}, y_shape=["M", "N"])
    with pytest.raises(ConfigError, match="Reshape swap: its target shape .* run time; "
                                          "expected every such dim to be a dim of a graph"):
        load(swap)
    conv = _save(tmp_path / "w.onnx", [helper.make_node("Reshape", ["x", "s"], ["w"]),
                                       helper.make_node("Conv", ["x", "w"], ["y"], name="c")],
                 [1, 1, 3, 3], {"s": np.array([1, 1, 3, 3])}, y_shape=[1, 1, 1, 1])
    with pytest.raises(ConfigError, match="expected constant weights.*Conv 'c'"):
        load(conv)


def test_bad_metadata(tmp_path) -> None:
    relu = [helper.make_node("Relu", ["x"], ["y"])]
    with pytest.raises(ModelFileError, match="metadata 'task' must be one of"):
        load(_save(tmp_path / "a.onnx", relu, ["N", 2], props={"task": '"clustering"'}))
    with pytest.raises(ModelFileError, match="metadata 'labels' must be JSON"):
        load(_save(tmp_path / "b.onnx", relu, ["N", 2], props={"labels": "[a, b"}))
    plain = load(_save(tmp_path / "c.onnx", relu, ["N", 2], props={"task": "binary"}))
    assert plain.manifest["task"] == "binary"  # a bare string written by another tool


def test_graph_module_refuses_bad_configs_and_training(tmp_path) -> None:
    path = _save(tmp_path / "m.onnx", [helper.make_node("Relu", ["x"], ["y"])], ["N", 2])
    module = to_module(path)
    spec = module.get_config()["graph"]
    assert isinstance(GraphModule(spec), GraphModule)
    bad_op = dict(spec, nodes=[dict(spec["nodes"][0], op="System")])
    bad_edge = dict(spec, nodes=[dict(spec["nodes"][0], inputs=["nowhere"])])
    huge = dict(spec, weights=[{"name": "w", "key": "w_w", "shape": [2**40], "dtype": "float32"}])
    for bad in (bad_op, bad_edge, huge, {"nodes": 3}, "graph"):
        with pytest.raises(ConfigError):
            GraphModule(bad)
    module.train()
    with pytest.raises(ConfigError, match="cannot be trained"):
        module(np.zeros((1, 2), F32))
    dyn = _save(tmp_path / "dyn.onnx", [helper.make_node("Relu", ["x"], ["y"])], ["N", "C"],
                y_shape=["N", "C"])
    with pytest.raises(NNForgeError, match="expected --input-shape"):
        import_model(dyn, tmp_path / "dyn.nnf")
    assert main(["import", str(tmp_path / "dyn.onnx"), "-o", str(tmp_path / "dyn.nnf"),
                 "--input-shape", "3"]) == 0
    assert nf.load(tmp_path / "dyn.nnf")(np.array([[-1.0, 2.0, -3.0]], F32)).data.tolist() == \
        [[0.0, 2.0, 0.0]]


def test_cli_usage(capsys) -> None:
    assert main(["import", "m.onnx"]) == 2  # no -o
    assert "required" in capsys.readouterr().err
    assert main(["export", "--help"]) == 0
    assert "--include-preprocessing" in capsys.readouterr().out
    assert main(["export", "missing.nnf", "-o", "x.onnx"]) == 1
    assert "missing.nnf" in capsys.readouterr().err


def test_fixed_batch_that_cannot_be_freed_says_how_to_reexport(tmp_path) -> None:
    """A graph whose batch size is fixed at 5 and that needs it (a (5, 2) constant, a
    softmax across rows) keeps it; other batch sizes are refused with the way out."""
    plus = _save(tmp_path / "plus.onnx", [helper.make_node("Add", ["x", "c"], ["y"])], [5, 2],
                 {"c": np.arange(10, dtype=F32).reshape(5, 2)}, y_shape=[5, 2])
    rows = _save(tmp_path / "rows.onnx", [helper.make_node("Softmax", ["x"], ["y"], axis=0)],
                 [5, 2], y_shape=[5, 2])
    x = np.linspace(-1, 1, 10, dtype=F32).reshape(5, 2)
    hint = (r"the batch size is fixed at 5 in the file; re-export it with torch\.onnx\.export"
            r"\(\.\.\., dynamic_axes=\{'x': \{0: 'batch'\}\}\).*dynamic_shapes.*")
    for path, why, want in ((plus, "running it on 2 rows and on 1 fails", x + np.arange(10,
                             dtype=F32).reshape(5, 2)),
                            (rows, "its output 'y' for a row depends on the other rows",
                             np.exp(x) / np.exp(x).sum(0))):
        session = InferenceSession(path)
        assert session.input_shape == (2,) and session.graph.inputs[0].shape == (5, 2)
        np.testing.assert_allclose(session.run(x), want, rtol=1e-6)
        with pytest.raises(ShapeError, match=rf"expected input of shape \(5, 2\), found \(2, "
                                             rf"2\); {hint}\(nnforge cannot free it: {why}"):
            session.run(x[:2])
        with pytest.raises(ConfigError, match=rf"cannot become a \.nnf model, which takes any "
                                              rf"number of rows: {hint}{why}"):
            import_model(path, tmp_path / "m.nnf")
