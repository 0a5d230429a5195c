#!/usr/bin/env python3
"""PyTorch's side of `sam4em bench ops --python …`: times the same operations at the same shapes
as `src/bench/ops.rs`, one run per request, so that the CLI can interleave the two sides
run by run on the same machine.

Protocol (one JSON object per line): this script first prints {"torch": version, "threads": n};
then for every request line {"op": ..., shape fields ..., "backward": bool} on stdin it runs the
case once and prints {"ms": milliseconds}. Inputs are made once per case (not timed). The
backward pass is that of sum(y * g), with g = ones, for every input and parameter, as on our side.

Needs `torch` (fp32 on the CPU, its default thread count).
"""
import json
import sys
import time

import torch
import torch.nn.functional as F


def prepare(req):
    """The case's function and its leaf tensors (inputs and parameters)."""
    op, back = req["op"], req["backward"]
    leaves = []

    def t(*shape):
        x = torch.randn(*shape, requires_grad=back)
        leaves.append(x)
        return x

    return make(op, req, t), leaves


def make(op, req, t):
    if op == "gelu":
        x = t(req["rows"], req["cols"])
        return lambda: F.gelu(x)
    if op == "layer_norm":
        d = req["dim"]
        x, w, b = t(req["rows"], d), t(d), t(d)
        return lambda: F.layer_norm(x, (d,), w, b, 1e-6)
    if op == "linear":
        x, w, b = t(req["rows"], req["d_in"]), t(req["d_out"], req["d_in"]), t(req["d_out"])
        return lambda: F.linear(x, w, b)
    if op == "attention":
        shape = (req["batch"], req["heads"], req["tokens"], req["head_dim"])
        q, k, v = t(*shape), t(*shape), t(*shape)
        # What SAM 2's Hiera and mask decoder call.
        return lambda: F.scaled_dot_product_attention(q, k, v)
    if op == "conv3x3":
        c, s = req["channels"], req["side"]
        x, w, b = t(1, c, s, s), t(c, c, 3, 3), t(c)
        return lambda: F.conv2d(x, w, b, padding=1)
    raise SystemExit(f"unknown op {op!r}")


def main():
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads()}), flush=True)
    prepared = {}
    for line in sys.stdin:
        req = json.loads(line)
        key = json.dumps(req, sort_keys=True)
        if key not in prepared:
            run, leaves = prepare(req)
            with torch.no_grad():
                g = torch.ones_like(run())
            prepared[key] = (run, leaves, g)
        run, leaves, g = prepared[key]
        if req["backward"]:
            for x in leaves:  # fresh gradients each run, as ours are
                x.grad = None
            start = time.perf_counter()
            (run() * g).sum().backward()
        else:
            with torch.inference_mode():
                start = time.perf_counter()
                run()
        print(json.dumps({"ms": (time.perf_counter() - start) * 1e3}), flush=True)


if __name__ == "__main__":
    main()
