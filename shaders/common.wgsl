// Shared by the slice, overlay and prediction shaders: the renderer prepends this file to each
// of them, so all three read the same per-view uniform block and draw the same quad.
//
// Coordinates: image space is in texels, (0, 0) at the top-left corner of texel (0, 0); the
// quad spans [0, width] x [0, height]. `ndc_from_image` maps image space to normalised device
// coordinates of the whole render target (the renderer computes it from the screen transform).
//
// Textures are 2D arrays: an image larger than the device's largest texture is cut into tiles
// of `tiling.xy` texels, `tiling.z` across, tile (column c, row r) in layer r * tiling.z + c
// (one layer when it fits). Every texel load goes through `tile_texel`, so filters read across
// tile borders as within a tile.

struct ViewParams {
    // ndc = image * ndc_from_image.xy + ndc_from_image.zw
    ndc_from_image: vec4<f32>,
    // x, y: image size in texels.
    image_size: vec4<f32>,
    // x: window low, y: window high (raw sample units), z: gamma, w: invert (0 or 1).
    window: vec4<f32>,
    // x: linear magnification (0 nearest, 1 linear), y: overlay outline mode (0 filled,
    // 1 outline), z: outline width in screen pixels, w: bit set of visible class slots.
    flags: vec4<u32>,
    // x: probability threshold, y: opacity, z: soft (1: alpha follows probability), w: for a
    // texture of bytes (v / 255) the byte cut, floor(threshold * 255) (foreground: v > cut),
    // else -1.
    prediction: vec4<f32>,
    // rgb: prediction tint (0..1), a: unused.
    prediction_tint: vec4<f32>,
    // x, y: tile size in texels, z: tiles across, w: unused.
    tiling: vec4<u32>,
    // Per class slot: rgb colour (0..1), a: opacity (0 hides the class).
    class_color: array<vec4<f32>, 16>,
};

@group(0) @binding(0) var<uniform> view: ViewParams;

struct VertexOut {
    @builtin(position) position: vec4<f32>,
    @location(0) image: vec2<f32>,
};

// A triangle strip of four vertices covering the image.
@vertex
fn vs_main(@builtin(vertex_index) index: u32) -> VertexOut {
    let corner = vec2<f32>(f32(index & 1u), f32(index >> 1u));
    let image = corner * view.image_size.xy;
    var out: VertexOut;
    out.position = vec4<f32>(image * view.ndc_from_image.xy + view.ndc_from_image.zw, 0.0, 1.0);
    out.image = image;
    return out;
}

// The texel under image position `p`, clamped to the image.
fn texel_clamped(p: vec2<f32>) -> vec2<i32> {
    let last = vec2<i32>(view.image_size.xy) - vec2<i32>(1, 1);
    return clamp(vec2<i32>(floor(p)), vec2<i32>(0, 0), last);
}

// Where image texel `t` lives: its array layer and its texel within that layer's tile.
struct TileTexel {
    texel: vec2<i32>,
    layer: i32,
};

fn tile_texel(t: vec2<i32>) -> TileTexel {
    let size = vec2<i32>(view.tiling.xy);
    let tile = t / size;
    var out: TileTexel;
    out.texel = t - tile * size;
    out.layer = tile.y * i32(view.tiling.z) + tile.x;
    return out;
}

// Whether image position `p` falls inside the image.
fn inside_image(p: vec2<f32>) -> bool {
    return all(p >= vec2<f32>(0.0, 0.0)) && all(p < view.image_size.xy);
}

// Bilinear interpolation at image position `p` (texel centres at +0.5): the four texels to
// load, clamped to the image, and the weights. Textures that are not filterable on every
// device (integer, 32-bit float) are interpolated this way from texel loads.
struct Bilinear {
    t00: vec2<i32>,
    t10: vec2<i32>,
    t01: vec2<i32>,
    t11: vec2<i32>,
    f: vec2<f32>,
};

fn bilinear(p: vec2<f32>) -> Bilinear {
    let q = p - vec2<f32>(0.5, 0.5);
    let base = floor(q);
    var b: Bilinear;
    b.f = q - base;
    b.t00 = texel_clamped(base + vec2<f32>(0.5, 0.5));
    b.t11 = texel_clamped(base + vec2<f32>(1.5, 1.5));
    b.t10 = vec2<i32>(b.t11.x, b.t00.y);
    b.t01 = vec2<i32>(b.t00.x, b.t11.y);
    return b;
}

// The interpolated value from the four loaded texels.
fn bilinear_mix(b: Bilinear, v00: f32, v10: f32, v01: f32, v11: f32) -> f32 {
    return mix(mix(v00, v10, b.f.x), mix(v01, v11, b.f.x), b.f.y);
}
