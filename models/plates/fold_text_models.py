#!/usr/bin/env python3
"""Rewrites PaddleOCR's PP-OCRv4 detector and recogniser (as RapidOCR ships them) into the same
functions with fewer operators, for ONNX Runtime on the CPU. Nothing is learned or
approximated: every rewrite is an identity of arithmetic, and the outputs differ from the
originals only by float rounding (checked here on random inputs, and by `evaluate.py` on the
photos).

paddle2onnx writes PP-LCNetV3's blocks as many elementwise operators around each convolution,
which ONNX Runtime neither fuses into the convolution nor runs in its blocked (NCHWc) layout:

1. A scalar affine step right after a convolution (the "learnable affine block": `conv * s +
   b`) becomes part of the convolution: weights times `s`, bias times `s` plus `b`.
2. Hard-swish, written `x * clip(x + 3, 0, 6) / 6` (four passes over the tensor), becomes
   `x * HardSigmoid(x)` with alpha 1/6 and beta 1/2 (two passes).
3. A scalar affine step right before a 1x1 convolution without padding (after an
   activation) becomes part of that convolution: weights times `s`, bias plus `b` times the
   sum of each output channel's weights. (Before a convolution with padding it would not be
   the same at the borders, where the padding is zero, not `b`; those are left.)
4. Before a convolution with padding, the scale of that step still goes into the weights and
   only the shift stays: `conv(x * s + b)` becomes `conv'(x + b / s)` with the weights times
   `s`, because the zero padding of `x * s + b` is `s` times the zero padding of `x + b / s`.
5. What is left of such steps (the shift before a padded convolution, and an affine step read
   by more than a convolution, as in the squeeze-and-excitation blocks) becomes a 1x1
   depthwise convolution with the step's scale as its weight and its shift as its bias. The
   arithmetic is the same; what changes is where ONNX Runtime runs it: a scalar Add or Mul
   leaves the blocked layout (a reorder out, the step, a reorder back in), a convolution stays
   in it. `x * sigmoid(1.702 * x)` is left alone: ONNX Runtime fuses it whole (QuickGelu).

    python3 models/plates/fold_text_models.py SRC_DET SRC_REC OUT_DIR

writes OUT_DIR/text_det.onnx and OUT_DIR/text_rec.onnx (see models/text_models.md).
"""

import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper


class Graph:
    """The graph's nodes with who produces and who consumes each value."""

    def __init__(self, model):
        self.model = model
        self.g = model.graph
        # Worked on as a list of our own copies: a node taken out of a protobuf list and put
        # back is another object, and references to it would go stale.
        self.nodes = [onnx.NodeProto.FromString(n.SerializeToString()) for n in self.g.node]
        self.refresh()

    def refresh(self):
        self.prod = {o: n for n in self.nodes for o in n.output}
        self.cons = {}
        for n in self.nodes:
            for i in n.input:
                self.cons.setdefault(i, []).append(n)
        self.graph_outputs = {o.name for o in self.g.output}

    def const(self, name):
        """The value of a constant input (an initializer or a Constant node), or None."""
        for i in self.g.initializer:
            if i.name == name:
                return numpy_helper.to_array(i)
        n = self.prod.get(name)
        if n is not None and n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
        return None

    def scalar(self, name):
        v = self.const(name)
        if v is None or v.size != 1:
            return None
        return float(v.reshape(-1)[0])

    def only_consumer(self, value):
        c = self.cons.get(value, [])
        if len(c) != 1 or value in self.graph_outputs:
            return None
        return c[0]

    def set_const(self, node, index, array, suffix):
        """Gives `node` a new constant input `index` (a new Constant node: the old one may be
        shared)."""
        name = f"{node.output[0]}_{suffix}"
        c = helper.make_node(
            "Constant",
            [],
            [name],
            value=numpy_helper.from_array(array.astype(np.float32), name),
        )
        self.nodes.insert(self.index(node), c)
        while len(node.input) <= index:
            node.input.append("")
        node.input[index] = name

    def index(self, node):
        return next(k for k, n in enumerate(self.nodes) if n is node)

    def remove(self, nodes):
        ids = {id(n) for n in nodes}
        self.nodes = [n for n in self.nodes if id(n) not in ids]
        self.refresh()

    def write_back(self):
        del self.g.node[:]
        self.g.node.extend(self.nodes)


def attrs(node):
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def conv_weights(gr, conv):
    w = gr.const(conv.input[1])
    if w is None:
        return None, None
    b = gr.const(conv.input[2]) if len(conv.input) > 2 and conv.input[2] else None
    if b is None:
        b = np.zeros(w.shape[0], np.float32)
    return w, b


def scalar_affine_after(gr, value):
    """`value * s + b` (Mul then Add, each by a scalar constant, nothing else reading the
    product): the two nodes, s and b."""
    mul = gr.only_consumer(value)
    if mul is None or mul.op_type != "Mul":
        return None
    other = [i for i in mul.input if i != value]
    if len(other) != 1 or gr.scalar(other[0]) is None:
        return None
    add = gr.only_consumer(mul.output[0])
    if add is None or add.op_type != "Add":
        return None
    other_b = [i for i in add.input if i != mul.output[0]]
    if len(other_b) != 1 or gr.scalar(other_b[0]) is None:
        return None
    return mul, add, gr.scalar(other[0]), gr.scalar(other_b[0])


def fold_affine_after_conv(gr):
    n = 0
    for conv in list(gr.nodes):
        if conv.op_type != "Conv":
            continue
        found = scalar_affine_after(gr, conv.output[0])
        if found is None:
            continue
        w, b = conv_weights(gr, conv)
        if w is None:
            continue
        mul, add, s, c = found
        gr.set_const(conv, 1, w * s, "w_folded")
        gr.set_const(conv, 2, b * s + c, "b_folded")
        out = add.output[0]
        gr.remove([mul, add])
        conv.output[0] = out
        gr.refresh()
        n += 1
    return n


def scalar_affine_before(gr, conv):
    """`x * s + c` (Mul then Add, each by a scalar constant) read by `conv` alone: the two
    nodes, `x`, `s` and `c`."""
    add = gr.prod.get(conv.input[0])
    if add is None or add.op_type != "Add" or gr.only_consumer(add.output[0]) is not conv:
        return None
    mul = next((gr.prod.get(i) for i in add.input if gr.scalar(i) is None), None)
    if mul is None or mul.op_type != "Mul" or gr.only_consumer(mul.output[0]) is not add:
        return None
    c = next((gr.scalar(i) for i in add.input if gr.scalar(i) is not None), None)
    s_in = [i for i in mul.input if gr.scalar(i) is not None]
    x_in = [i for i in mul.input if gr.scalar(i) is None]
    if c is None or len(s_in) != 1 or len(x_in) != 1:
        return None
    return mul, add, x_in[0], gr.scalar(s_in[0]), c


def fold_affine_before_1x1(gr):
    n = 0
    for conv in list(gr.nodes):
        if conv.op_type != "Conv":
            continue
        a = attrs(conv)
        w, b = conv_weights(gr, conv)
        if w is None or w.shape[2:] != (1, 1) or a.get("group", 1) != 1:
            continue
        # onnx gives string attributes as bytes.
        if any(p != 0 for p in a.get("pads", [])) or a.get("auto_pad", b"NOTSET") not in (
            b"NOTSET",
            b"VALID",
        ):
            continue
        found = scalar_affine_before(gr, conv)
        if found is None:
            continue
        mul, add, x, s, c = found
        gr.set_const(conv, 1, w * s, "w_prefolded")
        gr.set_const(conv, 2, b + c * w.sum(axis=(1, 2, 3)), "b_prefolded")
        conv.input[0] = x
        gr.remove([mul, add])
        n += 1
    return n


def fold_scale_before_padded(gr):
    n = 0
    for conv in list(gr.nodes):
        if conv.op_type != "Conv":
            continue
        w, b = conv_weights(gr, conv)
        if w is None:
            continue
        found = scalar_affine_before(gr, conv)
        if found is None or found[3] == 0.0:
            continue
        mul, add, x, s, c = found
        gr.set_const(conv, 1, w * s, "w_scaled")
        shift = f"{add.output[0]}_shift"
        gr.nodes.insert(
            gr.index(add),
            helper.make_node(
                "Constant",
                [],
                [shift],
                value=numpy_helper.from_array(np.array(c / s, np.float32), shift),
            ),
        )
        add.input[:] = [x, shift]
        gr.remove([mul])
        n += 1
    return n


def hard_swish(gr):
    n = 0
    for clip in list(gr.nodes):
        if clip.op_type != "Clip" or len(clip.input) < 3:
            continue
        add = gr.prod.get(clip.input[0])
        if add is None or add.op_type != "Add" or gr.only_consumer(add.output[0]) is not clip:
            continue
        xs = [i for i in add.input if gr.scalar(i) is None]
        threes = [gr.scalar(i) for i in add.input if gr.scalar(i) is not None]
        if len(xs) != 1 or threes != [3.0]:
            continue
        x = xs[0]
        if gr.scalar(clip.input[1]) != 0.0 or gr.scalar(clip.input[2]) != 6.0:
            continue
        mul = gr.only_consumer(clip.output[0])
        if mul is None or mul.op_type != "Mul" or set(mul.input) != {x, clip.output[0]}:
            continue
        div = gr.only_consumer(mul.output[0])
        if div is None or div.op_type != "Div" or div.input[0] != mul.output[0]:
            continue
        if gr.scalar(div.input[1]) != 6.0:
            continue
        gate = clip.output[0] + "_hardsigmoid"
        at = gr.index(div)
        new = [
            helper.make_node(
                "HardSigmoid", [x], [gate], alpha=1.0 / 6.0, beta=0.5, name=gate
            ),
            helper.make_node("Mul", [x, gate], [div.output[0]], name=div.output[0] + "_hswish"),
        ]
        for k, node in enumerate(new):
            gr.nodes.insert(at + k, node)
        gr.remove([add, clip, mul, div])
        n += 1
    return n


def channels_of(model):
    """Each 4-D value's channel count where shape inference knows it (the spatial sides and the
    batch stay unknown: the models take any size)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    out = {}
    for v in inferred.graph.value_info:
        dims = v.type.tensor_type.shape.dim
        if len(dims) == 4 and dims[1].HasField("dim_value"):
            out[v.name] = dims[1].dim_value
    return out


def scalar_steps_as_depthwise(gr, channels):
    n = 0
    # An Add taken with the Mul before it is gone by the time the loop reaches it.
    taken = set()
    for node in list(gr.nodes):
        if node.op_type not in ("Mul", "Add") or id(node) in taken:
            continue
        xs = [i for i in node.input if gr.scalar(i) is None]
        ks = [gr.scalar(i) for i in node.input if gr.scalar(i) is not None]
        if len(xs) != 1 or len(ks) != 1 or xs[0] not in channels:
            continue
        # `x * sigmoid(1.702 * x)` stays as it is: ONNX Runtime fuses it whole (QuickGelu).
        if any(m.op_type == "Sigmoid" for m in gr.cons.get(node.output[0], [])):
            continue
        x, c = xs[0], channels[xs[0]]
        s, b, gone = (ks[0], 0.0, [node]) if node.op_type == "Mul" else (1.0, ks[0], [node])
        out = node.output[0]
        if node.op_type == "Mul":
            add = gr.only_consumer(out)
            if add is not None and add.op_type == "Add":
                bs = [gr.scalar(i) for i in add.input if i != out]
                if len(bs) == 1 and bs[0] is not None:
                    b, out = bs[0], add.output[0]
                    gone.append(add)
        name = out + "_depthwise"
        w, bias = f"{name}_w", f"{name}_b"
        at = gr.index(node)
        new = [
            helper.make_node("Constant", [], [w], value=numpy_helper.from_array(
                np.full((c, 1, 1, 1), s, np.float32), w)),
            helper.make_node("Constant", [], [bias], value=numpy_helper.from_array(
                np.full((c,), b, np.float32), bias)),
            helper.make_node("Conv", [x, w, bias], [out], group=c, kernel_shape=[1, 1],
                             name=name),
        ]
        for k, m in enumerate(new):
            gr.nodes.insert(at + k, m)
        taken.update(id(g) for g in gone)
        gr.remove(gone)
        n += 1
    return n


def drop_unused_constants(gr):
    used = {i for n in gr.nodes for i in n.input} | gr.graph_outputs
    dead = [n for n in gr.nodes if n.op_type == "Constant" and n.output[0] not in used]
    gr.remove(dead)
    return len(dead)


def rewrite(src, dst, shape):
    model = onnx.load(src)
    before = len(model.graph.node)
    gr = Graph(model)
    counts = {
        "affine after a convolution": fold_affine_after_conv(gr),
        "hard-swish": hard_swish(gr),
        "affine before a 1x1 convolution": fold_affine_before_1x1(gr),
        "scale before a padded convolution": fold_scale_before_padded(gr),
    }
    gr.write_back()
    counts["scalar steps as 1x1 depthwise convolutions"] = scalar_steps_as_depthwise(
        gr, channels_of(model))
    drop_unused_constants(gr)
    gr.write_back()
    onnx.checker.check_model(model)
    onnx.save(model, dst)
    # The same function: the outputs on random inputs in the models' range.
    so = ort.SessionOptions()
    so.log_severity_level = 3
    a = ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(dst, so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(7)
    worst = 0.0
    for _ in range(3):
        x = rng.uniform(-1, 1, shape).astype(np.float32)
        ya, yb = a.run(None, {"x": x})[0], b.run(None, {"x": x})[0]
        worst = max(worst, float(np.abs(ya - yb).max()))
    print(f"{dst}: {counts}; nodes {before} -> {len(model.graph.node)}; "
          f"largest output difference {worst:.2e}")
    if worst > 1e-4:
        sys.exit(f"{dst}: not the same function (difference {worst})")


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    det, rec, out = sys.argv[1:]
    rewrite(det, f"{out}/text_det.onnx", (1, 3, 544, 960))
    rewrite(rec, f"{out}/text_rec.onnx", (2, 3, 48, 320))


if __name__ == "__main__":
    main()
