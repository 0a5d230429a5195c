"""Writes the small TIFF fixtures in tests/data/tiff with tifffile, an independent TIFF writer.

Run from this folder: `python3 make_tiff_fixtures.py` (needs `pip install tifffile imagecodecs
numpy`). Every stack is 3 slices of 40 x 24 px whose values follow the formulas below, which
the Rust tests recompute; nothing in the tests depends on this script beyond its output.
"""
import numpy as np
import tifffile

Z, H, W = 3, 24, 40
z, y, x = np.meshgrid(np.arange(Z), np.arange(H), np.arange(W), indexing="ij")
u8 = ((x * 7 + y * 13 + z * 29) % 256).astype(np.uint8)
u16 = ((x * 257 + y * 1031 + z * 4099) % 65536).astype(np.uint16)
f32 = (x * 0.5 - y * 0.25 + z * 10.125).astype(np.float32)

out = "tiff/"
for dtype, data in (("u8", u8), ("u16", u16), ("f32", f32)):
    for order, bo in (("le", "<"), ("be", ">")):
        for comp in ("none", "lzw", "deflate", "packbits"):
            if dtype == "f32" and comp == "packbits":
                continue
            for layout in ("strips", "tiles"):
                kw = dict(byteorder=bo, photometric="minisblack")
                if comp != "none":
                    kw["compression"] = {"deflate": "zlib"}.get(comp, comp)
                if layout == "tiles":
                    kw["tile"] = (16, 16)
                else:
                    kw["rowsperstrip"] = 5
                tifffile.imwrite(f"{out}{dtype}_{order}_{comp}_{layout}.tif", data, **kw)

# LZW with the horizontal predictor, as ImageJ/Fiji and libtiff often write.
tifffile.imwrite(out + "u16_le_lzw_predictor.tif", u16, compression="lzw", predictor=True, photometric="minisblack")

# ImageJ metadata: 4.6 nm pixels (written as pixels per micron), 50 nm spacing.
tifffile.imwrite(out + "imagej_u8.tif", u8, imagej=True, resolution=(1 / 0.0046, 1 / 0.0046),
                 metadata={"spacing": 0.05, "unit": "um", "axes": "ZYX"})
# ImageJ's layout for stacks over 4 GiB: one IFD, the other pages stored right after it.
tifffile.imwrite(out + "imagej_u16_contiguous.tif", u16, imagej=True, truncate=True, byteorder=">",
                 metadata={"axes": "ZYX"})
# OME-XML metadata, BigTIFF container.
tifffile.imwrite(out + "ome_u16_bigtiff.ome.tif", u16, ome=True, bigtiff=True, photometric="minisblack",
                 metadata={"axes": "ZYX", "PhysicalSizeX": 0.008, "PhysicalSizeY": 0.008,
                           "PhysicalSizeZ": 30, "PhysicalSizeZUnit": "nm"})
# Resolution tags only, in centimetres: 5 nm pixels.
tifffile.imwrite(out + "u8_resolution_cm.tif", u8, photometric="minisblack", resolution=(2e6, 2e6),
                 resolutionunit="CENTIMETER")
# A reduced-resolution thumbnail page after the slices, which must be skipped.
with tifffile.TiffWriter(out + "u8_with_thumbnail.tif") as tw:
    for k in range(Z):
        tw.write(u8[k], photometric="minisblack")
    tw.write(u8[0, ::2, ::2], photometric="minisblack", subfiletype=1)
# 1-bit masks.
tifffile.imwrite(out + "bilevel.tif", (u8 > 127), photometric="minisblack")
# Colour (RGB) pages with R = G = B = the u8 formula, and a mask lit only in blue.
tifffile.imwrite(out + "rgb8.tif", np.stack([u8, u8, u8], axis=-1), photometric="rgb")
blue = np.zeros((Z, H, W, 3), np.uint8)
blue[..., 2] = (u8 > 127) * 1
tifffile.imwrite(out + "rgb8_blue_mask.tif", blue, photometric="rgb")
# Unsupported: signed 16-bit and 64-bit float.
tifffile.imwrite(out + "i16.tif", u16.astype(np.int16), photometric="minisblack")
tifffile.imwrite(out + "f64.tif", f32.astype(np.float64), photometric="minisblack")
# Pages of different sizes.
with tifffile.TiffWriter(out + "mixed_sizes.tif") as tw:
    tw.write(u8[0], photometric="minisblack")
    tw.write(u8[1, :20, :30], photometric="minisblack")
