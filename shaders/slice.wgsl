// The slice shader: raw EM samples (8/16/32-bit integers or 32-bit floats, uploaded as they
// are) -> window/level -> gamma -> invert -> grey. Magnification is nearest or bilinear,
// computed here from texel loads because integer and 32-bit float textures are not filterable
// on every device.
//
// Two entry points share the maths: `fs_uint` reads an unsigned-integer texture (u8, u16, u32
// data), `fs_float` a float one (f32 data). Each pipeline binds only the texture its entry
// point reads.

@group(1) @binding(0) var image_uint: texture_2d<u32>;
@group(1) @binding(1) var image_float: texture_2d<f32>;

fn load_uint(t: vec2<i32>) -> f32 {
    return f32(textureLoad(image_uint, t, 0).r);
}

fn load_float(t: vec2<i32>) -> f32 {
    return textureLoad(image_float, t, 0).r;
}

// Maps a raw sample to display grey in 0..1.
fn grey(raw: f32) -> vec4<f32> {
    let low = view.window.x;
    let high = view.window.y;
    // A zero-width window is a threshold at `low`.
    var v = select(step(low, raw), clamp((raw - low) / (high - low), 0.0, 1.0), high > low);
    v = pow(v, view.window.z);
    if (view.window.w > 0.5) {
        v = 1.0 - v;
    }
    return vec4<f32>(v, v, v, 1.0);
}

// Bilinear weights and the four texels around image position `p` (texel centres at +0.5).
struct Bilinear {
    t00: vec2<i32>,
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
    return b;
}

@fragment
fn fs_uint(in: VertexOut) -> @location(0) vec4<f32> {
    if (view.flags.x == 0u) {
        return grey(load_uint(texel_clamped(in.image)));
    }
    let b = bilinear(in.image);
    let top = mix(load_uint(b.t00), load_uint(vec2<i32>(b.t11.x, b.t00.y)), b.f.x);
    let bottom = mix(load_uint(vec2<i32>(b.t00.x, b.t11.y)), load_uint(b.t11), b.f.x);
    return grey(mix(top, bottom, b.f.y));
}

@fragment
fn fs_float(in: VertexOut) -> @location(0) vec4<f32> {
    if (view.flags.x == 0u) {
        return grey(load_float(texel_clamped(in.image)));
    }
    let b = bilinear(in.image);
    let top = mix(load_float(b.t00), load_float(vec2<i32>(b.t11.x, b.t00.y)), b.f.x);
    let bottom = mix(load_float(vec2<i32>(b.t00.x, b.t11.y)), load_float(b.t11), b.f.x);
    return grey(mix(top, bottom, b.f.y));
}
