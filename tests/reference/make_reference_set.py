#!/usr/bin/env python3
"""Makes a reference fixture set for another SAM4EM configuration, laid out like
`../shared/fixtures/sam4em-micro` (its README says what each file holds), by running the original
SAM4EM code under PyTorch on the CPU in float32. The tests take everything from the set that
`SAM4EM_FIXTURES` names, so this is how they are shown to hold on a configuration other than the
published one (`.ci/extended`, part `fixtures`; README "Another reference configuration").

  python3 tests/reference/make_reference_set.py --sam4em .ref --config tests/reference/other-config.json \
      --shared ../shared --out target/reference-other

--sam4em is a checkout of Uzshah/SAM4EM (nothing of it is copied: its modules are imported, and
built with the configuration's sizes by ../shared/tools/sam4em_torch_reference.py). The recorded
tensors are the original modules' outputs, taken with forward hooks: the encoder's internals for
slice 0, the validation stream slice by slice (memory zeroed, slice 0 prompted with its ground
truth, batches of `stream.batch_size`), one training step (Dropout at p = 0, BatchNorm on batch
statistics, AdamW), an official-format SAM 2 checkpoint at these sizes with what the reference
loader takes from it, and the trainer checkpoint after the step. The B+ full-size blocks, the
position-embedding cases and the metric cases do not depend on the configuration and are copied
from the published set.

Every weight gets a random value (seeded by the configuration). A set is written only if it is
stable: the same computation on one thread with the input moved by 1e-7 (relative) must agree
with what was recorded within a quarter of the tests' tolerance, and the stream must predict
between 5 % and 95 % of the pixels positive (so thresholds are tested); otherwise the script
exits with an error and another seed is needed.

Needs torch, numpy, opencv-python-headless, safetensors and what the original code imports
(see ../shared/tools/sam4em_torch_reference.py).
"""
import argparse
import re
import json
import math
import os
import sys
import types

import numpy as np
import torch
import torch.nn as nn


def _shared_dir():
    for i, a in enumerate(sys.argv):
        if a == "--shared" and i + 1 < len(sys.argv):
            return sys.argv[i + 1]
    return os.environ.get("SAM4EM_SHARED", "../shared")


sys.path.insert(0, os.path.join(_shared_dir(), "tools"))
import sam4em_torch_reference as T  # noqa: E402  (import_original, build_model, build_sam)

import cv2  # noqa: E402
from safetensors.numpy import load_file, save_file  # noqa: E402


def derived(cfg):
    h = cfg["hiera"]
    chans = T.hiera_channels(h)
    ends = list(np.cumsum(h["stages"]) - 1)
    d = cfg["neck"]["d_model"]
    return {"backbone_channel_list": chans, "feature_grid": cfg["image_size"] // 4,
            "skip_connect_channels": [d // 4, d // 8], "trunk_stage_ends": [int(e) for e in ends]}


def randomise(model, gen):
    """Every parameter and buffer gets a non-trivial random value (memory zeroed, the memory's
    position encoding kept: it is a fixed function of the sizes)."""
    sd = model.state_dict()
    with torch.no_grad():
        for k, v in sd.items():
            if not v.is_floating_point():
                continue
            last = k.split(".")[-1]
            shape = v.shape
            if k.endswith("mem.memory"):
                v.zero_()
            elif k.endswith("mem.positional_encoding"):
                pass
            elif last == "running_mean":
                v.copy_(0.1 * torch.randn(shape, generator=gen))
            elif last == "running_var":
                v.copy_(0.5 + torch.rand(shape, generator=gen))
            elif "pos_embed" in last:
                v.copy_(0.05 * torch.randn(shape, generator=gen))
            elif is_embedding(k):
                v.copy_(torch.randn(shape, generator=gen))
            elif re.search(r"output_hypernetworks_mlps\.\d+\.layers\.(\d+)\.", k) and \
                    int(re.search(r"layers\.(\d+)\.", k).group(1)) == last_layer(sd, k):
                # the mask head's last layer scaled up so the logits straddle the threshold
                v.copy_(HYPER_SCALE * torch.randn(shape, generator=gen))
            elif v.ndim == 1 and last == "bias" and re.search(r"(skip_connect|mask_downscaling|output_upscaling)\.[03]\.bias$", k):
                # a convolution feeding a LayerNorm2d over few channels: spread its channels apart,
                # or a pixel whose channels nearly agree makes the norm amplify rounding noise
                v.copy_(0.3 * torch.randn(shape, generator=gen))
            elif v.ndim == 1 and last == "bias":
                v.copy_(0.05 * torch.randn(shape, generator=gen))
            elif v.ndim == 1:
                v.copy_(1.0 + 0.1 * torch.randn(shape, generator=gen))  # norm scales
            elif ".fpn." in "." + k and v.ndim == 4:
                pass  # the fusion head's own initialisation (Kaiming normal, fan out) is random already
            else:
                fan_in = int(np.prod(shape[1:]))
                if "output_upscaling" in k:  # ConvTranspose2d weight: (in, out, kh, kw)
                    fan_in = shape[0]
                bound = 1.0 / math.sqrt(fan_in)
                scale = 0.2 if "linear_b_" in k else 1.0
                v.copy_(scale * (2 * torch.rand(shape, generator=gen) - 1) * bound)


# The mask heads' last layer: large enough that the logits straddle the threshold.
HYPER_SCALE = 2.5
EMBEDDINGS = ("iou_token", "mask_tokens", "no_mask_embed", "not_a_point_embed", "obj_score_token")


def is_embedding(k):
    parts = k.split(".")
    return (len(parts) >= 2 and parts[-2] in EMBEDDINGS) or "point_embeddings." in k or k.endswith("gaussian_matrix")


def last_layer(sd, k):
    prefix = k[: k.index("layers.") + len("layers.")]
    return max(int(x[len(prefix):].split(".")[0]) for x in sd if x.startswith(prefix))


def zero_dropout(model):
    for m in model.modules():
        if isinstance(m, (nn.Dropout, nn.Dropout2d)):
            m.p = 0.0


def load_inputs(cfg, data_dir):
    d = cfg["data"]
    y, x, h, w = d["crop"]
    S = cfg["image_size"]
    raw, rawl, res, lab = [], [], [], []
    for z in d["z"]:
        im = cv2.imread(os.path.join(data_dir, d["images"].format(z=z)), cv2.IMREAD_UNCHANGED)
        lb = cv2.imread(os.path.join(data_dir, d["labels"].format(z=z)), cv2.IMREAD_UNCHANGED)
        im, lb = im[y:y + h, x:x + w], lb[y:y + h, x:x + w]
        raw.append(im)
        rawl.append(lb)
        res.append(cv2.resize(im, (S, S), interpolation=cv2.INTER_LINEAR))
        lab.append(cv2.resize((lb > 0).astype(np.uint8), (S, S), interpolation=cv2.INTER_NEAREST))
    raw, rawl, res, lab = map(np.stack, (raw, rawl, res, lab))
    x1 = (res.astype(np.float32) / 255.0 - 0.485) / 0.229
    inp = np.repeat(x1[:, None], 3, axis=1).astype(np.float32)
    return {"raw_u8": raw, "raw_labels_u8": rawl, "resized_u8": res, "labels": lab, "input": inp}


def make_trainer_self(R, model, cfg):
    lo = cfg["loss"]
    args = types.SimpleNamespace(dice_parm=lo["dice_parm"], double_mask=True, mask1_parm=lo["mask1_parm"],
                                 use_two_mask=cfg["stream"]["use_two_mask"],
                                 threshold=cfg["stream"]["cross_batch_threshold"])
    return types.SimpleNamespace(model=model, device=torch.device("cpu"), args=args,
                                 bce_loss=nn.BCEWithLogitsLoss(), dice_loss=R.DiceLoss(lo["dice_smooth"]))


def batches(n, b):
    return [list(range(s, min(s + b, n))) for s in range(0, n, b)]


def np32(t):
    return t.detach().float().contiguous().numpy().copy()


def stability(R, cfg, weights0, inputs, ref):
    torch.set_num_threads(1)
    m = T.build_model(R, cfg)
    m.load_state_dict(weights0)
    zero_dropout(m)
    x_all = torch.from_numpy(inputs["input"]) * (1 + 1e-7)
    labels = torch.from_numpy(inputs["labels"]).long()
    B = cfg["stream"]["batch_size"]
    thr = cfg["stream"]["cross_batch_threshold"]
    got = {}
    m.eval()
    m.sam.mem.memory.zero_()
    prev = None
    with torch.no_grad():
        for idx in batches(x_all.shape[0], B):
            mask = labels[idx][0].unsqueeze(0) if prev is None else prev[-1]
            l1, l2 = m(x_all[idx], previous_mask=mask)
            for j, t in enumerate(idx):
                got[f"stream.{t}.logits1"] = l1[j:j + 1]
                got[f"stream.{t}.logits2"] = l2[j:j + 1]
            prev = (torch.sigmoid(l1) > thr).float()
    m.train()
    m.sam.mem.memory.zero_()
    idx = batches(x_all.shape[0], B)[0]
    l1, l2 = m(x_all[idx], previous_mask=labels[idx][0].unsqueeze(0))
    got["train.logits1"], got["train.logits2"] = l1, l2
    torch.set_num_threads(2)
    worst = 0.0
    for k, v in got.items():
        r = ref[k].astype(np.float64)
        v = v.detach().double().numpy().reshape(r.shape)
        worst = max(worst, float((np.abs(v - r) / (1e-4 + 1e-4 * np.abs(r))).max()))
    return worst


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sam4em", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--shared", default=os.environ.get("SAM4EM_SHARED", "../shared"))
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    a.published = os.path.join(a.shared, "fixtures", "sam4em-micro")
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(2)
    cfg = json.load(open(a.config))
    cfg["derived"] = derived(cfg)
    a.data = os.path.join(a.shared, "data", cfg["data"]["set"])
    os.makedirs(a.out, exist_ok=True)
    R = T.import_original(a.sam4em)
    gen = torch.Generator().manual_seed(cfg["seed"])
    torch.manual_seed(cfg["seed"])
    model = T.build_model(R, cfg)
    randomise(model, gen)
    zero_dropout(model)
    sam = model.sam
    g, d = cfg["image_size"] // 4, cfg["neck"]["d_model"]
    ref = {}
    exp = {"source": f"Uzshah/SAM4EM, run on the CPU in float32 with torch {torch.__version__} "
                     "(tests/reference/make_reference_set.py)"}

    # --- inputs and weights -------------------------------------------------------------------
    inputs = load_inputs(cfg, a.data)
    save_file(inputs, os.path.join(a.out, "inputs.safetensors"))
    weights0 = {k: v.detach().clone() for k, v in model.state_dict().items()}
    save_file({k: v.contiguous().numpy() for k, v in weights0.items()}, os.path.join(a.out, "weights.safetensors"))
    exp["param_counts"] = {"total": sum(p.numel() for p in model.parameters()),
                           "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)}
    x_all = torch.from_numpy(inputs["input"])
    labels = torch.from_numpy(inputs["labels"]).long()
    N = x_all.shape[0]

    # --- encoder internals of slice 0 ---------------------------------------------------------
    trunk = sam.image_encoder.trunk
    ref["encoder.pos_embed"] = np32(trunk._get_pos_embed((g, g)))
    hooks, rec = [], {}

    def keep(name, fn):
        def hook(_m, _i, out):
            rec.setdefault(name, fn(out))
        return hook

    hooks.append(trunk.patch_embed.register_forward_hook(keep("patch_embed", lambda o: np32(o[0:1]))))
    for i, blk in enumerate(trunk.blocks):
        hooks.append(blk.register_forward_hook(keep(f"block.{i}", lambda o: np32(o[0:1]))))
    hooks.append(trunk.register_forward_hook(keep("trunk", lambda o: [np32(t[0:1]) for t in o])))
    hooks.append(sam.image_encoder.neck.register_forward_hook(
        keep("neck", lambda o: ([np32(t[0:1]) for t in o[0]], [np32(t[0:1]) for t in o[1]]))))

    # --- the validation stream ------------------------------------------------------------------
    model.eval()
    sam.mem.memory.zero_()
    fused, per_slice = [], []
    cur = {}

    def fpn_hook(_m, _i, out):
        fused.append(np32(out))
    hooks.append(sam.fpn.register_forward_hook(fpn_hook))

    def pe_hook(_m, _a, kw, out):
        cur["prompt"] = (kw["masks"].detach() > 0.5).to(torch.uint8).numpy().copy()
        cur["dense"] = np32(out[1])
    hooks.append(sam.prompt_encoder.register_forward_hook(pe_hook, with_kwargs=True))

    def mem_hook(_m, _i, out):
        cur["enhanced"] = np32(out)
        cur["memory_after_slot0"] = np32(sam.mem.memory[0:1])
    hooks.append(sam.mem.register_forward_hook(mem_hook))

    def tr_hook(_m, _i, out):
        cur["decoder1.tokens"] = np32(out[0])
        cur["decoder1.keys"] = np32(out[1])
    hooks.append(sam.mask_decoder.transformer.register_forward_hook(tr_hook))

    def dec1_hook(_m, _i, out):
        cur["logits1"] = np32(out[0])
        cur["upscaled1"] = np32(out[3])
    hooks.append(sam.mask_decoder.register_forward_hook(dec1_hook))

    def dec2_hook(_m, _i, out):
        cur["logits2"] = np32(out[0])
        per_slice.append(dict(cur))
        cur.clear()
    hooks.append(sam.mask_decoder2.register_forward_hook(dec2_hook))

    trainer = make_trainer_self(R, model, cfg)
    process_batch = R.process_batch
    losses, preds = [], []
    outputs = None
    B = cfg["stream"]["batch_size"]
    thr = cfg["stream"]["cross_batch_threshold"]
    with torch.no_grad():
        for idx in batches(N, B):
            inp = {"image": x_all[idx], "label": labels[idx]}
            outputs, loss = process_batch(trainer, inp, outputs)
            losses.append(loss.item())
            outputs = (torch.sigmoid(outputs) > thr).float()
            preds.append(outputs.to(torch.uint8))
    for h in hooks:
        h.remove()
    assert len(per_slice) == N, len(per_slice)
    for t, s in enumerate(per_slice):
        for k in ("prompt", "dense", "enhanced", "memory_after_slot0", "logits1", "logits2"):
            ref[f"stream.{t}.{k}"] = s[k]
        if t == 0:
            for k in ("upscaled1", "decoder1.tokens", "decoder1.keys"):
                ref[f"stream.0.{k}"] = s[k]
    fused = np.concatenate(fused, axis=0)
    for t in range(N):
        ref[f"encoder.fused.{t}"] = fused[t:t + 1]
    pred = torch.cat(preds, 0).numpy()  # (N,1,S,S)
    ref["stream.pred"] = pred
    ref["decoder.image_pe"] = np32(sam.prompt_encoder.get_dense_pe())
    ref["encoder.slice0.patch_embed"] = rec["patch_embed"]
    for i in range(len(trunk.blocks)):
        ref[f"encoder.slice0.block.{i}"] = rec[f"block.{i}"]
    for k, t in enumerate(rec["trunk"]):
        ref[f"encoder.slice0.trunk.{k}"] = t
    for k, t in enumerate(rec["neck"][0]):
        ref[f"encoder.slice0.neck.{k}"] = t
    for k, t in enumerate(rec["neck"][1]):
        ref[f"encoder.neck_pos.{k}"] = t
    exp["eval"] = {"batch_losses": losses,
                   "note": f"model.eval(), memory zeroed, then the reference validation loop: process_batch per batch of consecutive slices, sigmoid > {thr}"}
    p = pred[:, 0].astype(bool)
    gt = inputs["labels"].astype(bool)
    inter = (p & gt).sum((1, 2)).astype(np.float64)
    union = (p | gt).sum((1, 2)).astype(np.float64)
    iou = [float(v) for v in inter / union]
    dice = [float(v) for v in 2 * inter / (p.sum((1, 2)) + gt.sum((1, 2)))]
    exp["metrics"] = {"per_slice_iou": iou, "per_slice_dice": dice, "mean_iou": float(np.mean(iou)),
                      "mean_dice": float(np.mean(dice)),
                      "volume_iou": float((p & gt).sum() / (p | gt).sum()),
                      "volume_dice": float(2 * (p & gt).sum() / (p.sum() + gt.sum())), "threshold": thr}

    # --- one training step ----------------------------------------------------------------------
    model.train()
    sam.mem.memory.zero_()
    oc = cfg["optimizer"]
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=oc["lr"],
                            betas=tuple(oc["betas"]), eps=oc["eps"], weight_decay=oc["weight_decay"])
    idx = batches(N, B)[0]
    inp = {"image": x_all[idx], "label": labels[idx]}
    cap = {}
    real_forward = model.forward

    def capture_forward(*args, **kw):
        l1, l2 = real_forward(*args, **kw)
        cap["l1"], cap["l2"] = l1, l2
        return l1, l2
    model.forward = capture_forward
    _, loss = process_batch(trainer, inp, None)
    model.forward = real_forward
    lab = inp["label"]
    comps = {"l1_bce": trainer.bce_loss(cap["l1"], lab.unsqueeze(1).float()).item(),
             "l1_dice": trainer.dice_loss(cap["l1"], lab.float()).item(),
             "l2_bce": trainer.bce_loss(cap["l2"], lab.unsqueeze(1).float()).item(),
             "l2_dice": trainer.dice_loss(cap["l2"], lab.float()).item()}
    ref["train.logits1"] = np32(cap["l1"])
    ref["train.logits2"] = np32(cap["l2"])
    loss.backward()
    named = [(k, q) for k, q in model.named_parameters() if q.requires_grad]
    grad_none = [k for k, q in named if q.grad is None]
    grad_present = [k for k, q in named if q.grad is not None]
    for k, q in named:
        if q.grad is not None:
            ref[f"train.grad.{k}"] = np32(q.grad)
    opt.step()
    for k, q in named:
        ref[f"train.after_step.{k}"] = np32(q)
    for k, v in model.state_dict().items():
        if k.endswith("running_mean") or k.endswith("running_var"):
            ref[f"train.after_step.{k}"] = np32(v)
    ref["train.memory_after"] = np32(sam.mem.memory)
    exp["train_step"] = {"batch": idx, "loss": loss.item(), "components": comps, "grad_none": grad_none,
                         "grad_present": grad_present,
                         "note": "model.train() with every Dropout/Dropout2d at p = 0; BatchNorm in training mode (batch statistics, running stats updated with momentum 0.1); memory zeroed first; prompt of slice 0 = its ground truth; one AdamW step over all trainable parameters (those with grad None are left unchanged, as PyTorch does)."}
    opt.zero_grad()
    torch.save({"model_state_dict": model.state_dict(), "optimizer_state_dict": opt.state_dict(), "epoch": 0,
                "scheduler_state_dict": {"last_epoch": 0}}, os.path.join(a.out, "sam4em-trainer.pth"))

    # --- an official-format SAM 2 checkpoint for this configuration -----------------------------
    bare = T.build_sam(R, cfg)  # the bare module: qkv not wrapped
    randomise(bare, torch.Generator().manual_seed(cfg["seed"] + 1))
    dc = cfg["decoder"]
    official_dec = R.MaskDecoder(num_multimask_outputs=3,
                                 transformer=R.TwoWayTransformer(depth=dc["depth"], embedding_dim=d,
                                                                 mlp_dim=dc["mlp_dim"], num_heads=dc["num_heads"],
                                                                 attention_downsample_rate=dc["attention_downsample_rate"]),
                                 transformer_dim=d, iou_head_depth=dc["iou_head_depth"],
                                 iou_head_hidden_dim=dc["iou_head_hidden_dim"])
    randomise(official_dec, torch.Generator().manual_seed(cfg["seed"] + 2))
    og = torch.Generator().manual_seed(cfg["seed"] + 3)
    ck = {}
    for k, v in bare.state_dict().items():
        if k.startswith("image_encoder."):
            ck[k] = v.clone()
    for k, v in bare.prompt_encoder.state_dict().items():
        ck[f"sam_prompt_encoder.{k}"] = v.clone()
    for k, v in official_dec.state_dict().items():
        if not k.startswith("skip_connect."):  # SAM 2's decoder has no skip connection (SAM4EM's own)
            ck[f"sam_mask_decoder.{k}"] = v.clone()
    # what an official SAM 2 checkpoint carries besides (a few of each kind)
    mem = cfg["memory"]["memory_dim"]
    extra = {"sam_mask_decoder.conv_s0.weight": (d // 8, d, 1, 1), "sam_mask_decoder.conv_s1.weight": (d // 4, d, 1, 1),
             "sam_mask_decoder.obj_score_token.weight": (1, d),
             "sam_mask_decoder.pred_obj_score_head.layers.0.weight": (d, d),
             "memory_attention.layers.0.self_attn.q_proj.weight": (d, d),
             "memory_encoder.mask_downsampler.encoder.0.weight": (4, 1, 3, 3),
             "maskmem_tpos_enc": (7, 1, 1, mem), "no_mem_embed": (1, 1, d), "obj_ptr_proj.layers.0.weight": (d, d)}
    for k, shape in extra.items():
        ck[k] = torch.randn(shape, generator=og)
    torch.save({"model": ck}, os.path.join(a.out, "sam2-micro.pt"))
    sam_keys = bare.state_dict()
    new_sd = R.load_from_sam2(bare, ck)
    loaded = {}
    # which SAM4EM keys the reference sets, and from which checkpoint key
    upd = {}
    for key in ck:
        if "sam_mask_decoder." in key:
            upd[key.replace("sam_mask_decoder", "mask_decoder2")] = key
            upd[key] = key
        if "sam_prompt_encoder." in key:
            upd[key] = key
            upd[key.replace("sam_prompt_encoder", "prompt_encoder2")] = key
        else:
            upd.setdefault(key, key)
    for k, src in upd.items():
        if k in sam_keys and all(x not in k for x in ["mask_tokens", "output_hypernetworks_mlps", "iou_prediction_head"]):
            loaded[k] = src
            assert torch.equal(new_sd[k], ck[src]), k
    ignored = sorted(set(ck) - set(loaded.values()))
    exp["sam2_micro_checkpoint"] = {
        "file": "sam2-micro.pt",
        "reference_loader": "build_sam.load_from_sam2 (faithful mode); keys are those of the bare Sam module, i.e. without the 'sam.' prefix and with attn.qkv not yet wrapped",
        "loaded": dict(sorted(loaded.items())), "ignored": ignored,
        "note": "mask_tokens, output_hypernetworks_mlps and iou_prediction_head are excluded by the reference; the stage-1 prompt encoder and decoder get nothing (the loading bug)"}

    # --- configuration-independent parts, from the published set ------------------------------
    pub = json.load(open(os.path.join(a.published, "expected.json")))
    for k in ("metric_cases", "full_size_blocks", "pos_embed_cases"):
        exp[k] = pub[k]
    pref = load_file(os.path.join(a.published, "reference.safetensors"))
    for k, v in pref.items():
        if k.startswith("bplus.") or k.startswith("pos_embed."):
            ref[k] = v
    save_file({k: np.ascontiguousarray(v) for k, v in ref.items()}, os.path.join(a.out, "reference.safetensors"))
    json.dump(exp, open(os.path.join(a.out, "expected.json"), "w"), indent=1)
    json.dump(cfg, open(os.path.join(a.out, "config.json"), "w"), indent=1)
    # --- stability: the same computation with one thread and the input moved by 1e-7 relative
    # must agree with what was recorded well inside the tests' tolerance (1e-4 + 1e-4·|ref|);
    # otherwise some value sits at an ill-conditioned point and a faithful port could miss it.
    worst = stability(R, cfg, weights0, inputs, ref)
    print("stability: worst |diff| / tolerance", worst)
    if worst > 0.25:
        sys.exit(f"unstable set (worst {worst:.3g} of the tolerance): try another seed")
    positive = float(pred.mean())
    print("stream: fraction of pixels predicted positive", positive)
    if not 0.05 < positive < 0.95:
        sys.exit(f"the stream predicts {positive:.3f} of the pixels positive: thresholds would not be tested; try another seed")
    print("wrote", a.out, "tensors", len(ref), "eval losses", losses, "train loss", loss.item(), "metrics", exp["metrics"])


if __name__ == "__main__":
    main()
