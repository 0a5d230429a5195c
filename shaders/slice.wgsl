// The slice shader: raw EM samples (8/16/32-bit integers or 32-bit floats, uploaded as they
// are) -> window/level -> gamma -> invert -> grey. Magnification is nearest or bilinear,
// computed here from texel loads because integer and 32-bit float textures are not filterable
// on every device.
//
// Two entry points share the maths: `fs_uint` reads an unsigned-integer texture (u8, u16, u32
// data), `fs_float` a float one (f32 data). Each pipeline binds only the texture its entry
// point reads.

@group(1) @binding(0) var image_uint: texture_2d_array<u32>;
@group(1) @binding(1) var image_float: texture_2d_array<f32>;

fn load_uint(t: vec2<i32>) -> f32 {
    let at = tile_texel(t);
    return f32(textureLoad(image_uint, at.texel, at.layer, 0).r);
}

fn load_float(t: vec2<i32>) -> f32 {
    let at = tile_texel(t);
    return textureLoad(image_float, at.texel, at.layer, 0).r;
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

@fragment
fn fs_uint(in: VertexOut) -> @location(0) vec4<f32> {
    if (view.flags.x == 0u) {
        return grey(load_uint(texel_clamped(in.image)));
    }
    let b = bilinear(in.image);
    return grey(bilinear_mix(b, load_uint(b.t00), load_uint(b.t10), load_uint(b.t01), load_uint(b.t11)));
}

@fragment
fn fs_float(in: VertexOut) -> @location(0) vec4<f32> {
    if (view.flags.x == 0u) {
        return grey(load_float(texel_clamped(in.image)));
    }
    let b = bilinear(in.image);
    return grey(bilinear_mix(b, load_float(b.t00), load_float(b.t10), load_float(b.t01), load_float(b.t11)));
}
