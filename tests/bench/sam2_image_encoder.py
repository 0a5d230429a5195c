#!/usr/bin/env python3
"""Times the official `sam2` PyTorch image encoder (Hiera trunk + FPN neck) per slice, for
`sam4em bench model --python …`, which runs this script in the same session on the same machine
and prints the ratio. Random weights (timing does not depend on them); fp32, batch 1.

Needs `torch` and `sam2` (PyPI). Prints one JSON object: {"encoder_ms": median, ...}.
"""
import argparse
import json
import statistics
import time

import torch
from sam2.modeling.backbones.hieradet import Hiera
from sam2.modeling.backbones.image_encoder import FpnNeck, ImageEncoder
from sam2.modeling.position_encoding import PositionEmbeddingSine

SIZES = {
    "tiny": dict(embed_dim=96, num_heads=1, stages=(1, 2, 7, 2), global_att_blocks=(5, 7, 9),
                 window_pos_embed_bkg_spatial_size=(7, 7)),
    "small": dict(embed_dim=96, num_heads=1, stages=(1, 2, 11, 2), global_att_blocks=(7, 10, 13),
                  window_pos_embed_bkg_spatial_size=(7, 7)),
    "base_plus": dict(embed_dim=112, num_heads=2),
    "large": dict(embed_dim=144, num_heads=2, stages=(2, 6, 36, 4), global_att_blocks=(23, 33, 43),
                  window_spec=(8, 4, 16, 8), window_pos_embed_bkg_spatial_size=(7, 7)),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="base_plus", choices=sorted(SIZES))
    ap.add_argument("--image-size", type=int, default=512)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    trunk = Hiera(**SIZES[a.size])
    dims = [int(trunk.channel_list[i]) for i in range(4)]
    neck = FpnNeck(
        position_encoding=PositionEmbeddingSine(num_pos_feats=256, normalize=True, temperature=10000),
        d_model=256, backbone_channel_list=dims, fpn_top_down_levels=[2, 3], fpn_interp_model="nearest",
    )
    enc = ImageEncoder(trunk=trunk, neck=neck, scalp=1).eval().to(a.device)
    x = torch.randn(1, 3, a.image_size, a.image_size, device=a.device)
    sync = (lambda: torch.cuda.synchronize()) if a.device.startswith("cuda") else (lambda: None)
    times = []
    with torch.inference_mode():
        enc(x)
        sync()
        for _ in range(a.runs):
            t = time.perf_counter()
            enc(x)
            sync()
            times.append((time.perf_counter() - t) * 1e3)
    print(json.dumps({"encoder_ms": statistics.median(times), "runs": a.runs, "threads": torch.get_num_threads(),
                      "torch": torch.__version__, "device": a.device}))


if __name__ == "__main__":
    main()
