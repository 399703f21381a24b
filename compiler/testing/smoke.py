"""Small Relax modules that prove the toolchain end to end (compile, link, run in Node and in the
browser), with their NumPy references. Used by `kiln smoke` and by the tests."""

from __future__ import annotations

import base64

import numpy as np

HIDDEN = 16
CLASSES = 8
VOCAB = 12


def dense_softmax_module():
    """main(x[n, HIDDEN], w[HIDDEN, CLASSES], b[CLASSES]) = softmax(x @ w + b), n symbolic."""
    from tvm import relax, tirx

    n = tirx.Var("n", "int64")
    x = relax.Var("x", relax.TensorType((n, HIDDEN), "float32"))
    w = relax.Var("w", relax.TensorType((HIDDEN, CLASSES), "float32"))
    b = relax.Var("b", relax.TensorType((CLASSES,), "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x, w, b]):
        with bb.dataflow():
            logits = bb.emit(relax.op.add(relax.op.matmul(x, w), b))
            probs = bb.emit_output(relax.op.nn.softmax(logits, axis=-1))
        bb.emit_func_output(probs)
    return bb.get()


def constant_weights(seed: int = 7) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "w": rng.standard_normal((HIDDEN, CLASSES)).astype("float32"),
        "b": rng.standard_normal((CLASSES,)).astype("float32"),
        "table": rng.standard_normal((VOCAB, HIDDEN)).astype("float32"),
    }


def embedded_constants_module(weights: dict[str, np.ndarray]):
    """The weights are baked into the executable as constants, so loading it exercises the
    tensor deserializer of the web runtime:
      main(x[n, HIDDEN])  = softmax(x @ w + b)
      lookup(ids[n] i32)  = table[ids] * 2
    """
    from tvm import relax, tirx

    n = tirx.Var("n", "int64")
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((n, HIDDEN), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            logits = relax.op.matmul(x, relax.const(weights["w"]))
            logits = bb.emit(relax.op.add(logits, relax.const(weights["b"])))
            probs = bb.emit_output(relax.op.nn.softmax(logits, axis=-1))
        bb.emit_func_output(probs)
    ids = relax.Var("ids", relax.TensorType((n,), "int32"))
    with bb.function("lookup", [ids]):
        with bb.dataflow():
            rows = bb.emit(relax.op.take(relax.const(weights["table"]), ids, axis=0))
            out = bb.emit_output(relax.op.multiply(rows, relax.const(np.float32(2.0))))
        bb.emit_func_output(out)
    return bb.get()


def softmax_reference(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    logits = x.astype("float64") @ w.astype("float64") + b
    logits -= logits.max(axis=-1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=-1, keepdims=True)


def tensor_arg(array: np.ndarray) -> dict:
    """One input in the harness request format (runtime_web/harness/run_function.mjs)."""
    data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    return {"shape": list(array.shape), "dtype": str(array.dtype), "base64": base64.b64encode(data.tobytes()).decode()}


def output_array(output: dict) -> np.ndarray:
    return np.asarray(output["data"], dtype=output["dtype"]).reshape(output["shape"])
