#!/usr/bin/env python3
"""The original SAM4EM's side of `sam4em bench model --reference DIR --python PY`: times the
original PyTorch code one run per request, so that the CLI can interleave it with ours run by
run on the same machine.

The model is built by `sam4em_torch_reference.py` (the shared reference tool, `--tool`), which
imports the original code from a checkout of the public Uzshah/SAM4EM repository (`--sam4em`;
nothing of it is copied into this project), with random weights. `--config` is the model
configuration as `sam4em bench model` runs it (our configuration's JSON has the reference's
layout); without it, the tool's own: SAM4EM-B+ at 512² with LoRA rank 100.

Protocol (one JSON object per line): this script first prints
{"torch": version, "threads": n, "device": name, "params_total": n, "params_trainable": n};
then for each request line on stdin it runs the figure once and prints {"ms": milliseconds}:
  {"figure": "trunk_neck"}   SAM 2's image encoder (Hiera trunk + FPN neck), batch 1, no grad
  {"figure": "encoder"}      trunk + neck + fusion head, batch 1, no grad
  {"figure": "full"}         the whole forward (encoder, memory, both decoders), batch 1, no grad
  {"figure": "train", "slices": n}
                             one training step of n slices as the reference tool times it
                             (AdamW lr 5e-4, BCE + Dice on both stages, fp32); the reply also
                             has "peak_rss_gib" (the process's peak so far) on the CPU, or
                             "peak_mem_gib" on CUDA.

Needs what the reference tool needs (its docstring lists the packages).
"""
import argparse
import importlib.util
import json
import resource
import sys
import time

import torch


def load_tool(path):
    spec = importlib.util.spec_from_file_location("sam4em_torch_reference", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tool", required=True, help="sam4em_torch_reference.py")
    ap.add_argument("--sam4em", required=True, help="checkout of Uzshah/SAM4EM")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--config", help="model configuration (JSON); default: the tool's B+")
    a = ap.parse_args()
    tool = load_tool(a.tool)
    dev = torch.device(a.device)
    R = tool.import_original(a.sam4em)
    torch.manual_seed(0)
    cfg = json.loads(a.config) if a.config else tool.BPLUS
    model = tool.build_model(R, cfg)
    header = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu",
        "image_size": cfg["image_size"],
        "params_total": sum(p.numel() for p in model.parameters()),
        "params_trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
    model = model.to(dev)
    sam = model.sam
    S = cfg["image_size"]
    x = torch.randn(1, 3, S, S, device=dev)
    prev = (torch.rand(1, S, S, device=dev) > 0.5).float()

    def encoder():
        out = sam.image_encoder(x)
        f, p = out["backbone_fpn"], out["vision_pos_enc"]
        return sam.fpn(f[0] + p[0], f[1] + p[1], f[2] + p[2])

    inference = {
        "trunk_neck": lambda: sam.image_encoder(x),
        "encoder": encoder,
        "full": lambda: sam(x, previous_mask=prev),
    }
    training = {}  # slices -> (step function, optimiser); made on first use, as the tool does

    def train_step(n):
        if n not in training:
            opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-4)
            xs = torch.randn(n, 3, S, S, device=dev)
            y = (torch.rand(n, S, S, device=dev) > 0.8).long()
            bce, dice = torch.nn.BCEWithLogitsLoss(), R.DiceLoss()

            def step():
                l1, l2 = sam(xs, previous_mask=y[0:1].float())
                t = y.unsqueeze(1).float()
                loss = 0.5 * (0.5 * bce(l1, t) + 0.5 * dice(l1, y.float())) + \
                    0.5 * (0.5 * bce(l2, t) + 0.5 * dice(l2, y.float()))
                loss.backward()
                opt.step()
                opt.zero_grad()

            training[n] = step
        return training[n]

    print(json.dumps(header), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        figure = req["figure"]
        reply = {}
        if figure == "train":
            model.train()
            fn = train_step(int(req["slices"]))
            t0 = time.perf_counter()
            fn()
            tool.sync(dev)
            reply["ms"] = 1000 * (time.perf_counter() - t0)
            if dev.type == "cuda":
                reply["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
            else:
                reply["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        elif figure in inference:
            model.eval()
            with torch.no_grad():
                t0 = time.perf_counter()
                inference[figure]()
                tool.sync(dev)
                reply["ms"] = 1000 * (time.perf_counter() - t0)
        else:
            raise SystemExit(f"unknown figure {figure!r}")
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
