// The prediction layer: a model's foreground probability per pixel (0..1), tinted where it
// reaches the threshold. Hard mode paints every such pixel at the layer opacity; soft mode
// scales the opacity by the probability, so confident pixels stand out from marginal ones.
// Probabilities are linearly interpolated when magnification is linear.
//
// Output is premultiplied alpha (blend: one, one-minus-source-alpha).

@group(1) @binding(0) var probability: texture_2d<f32>;

fn load_probability(t: vec2<i32>) -> f32 {
    return textureLoad(probability, t, 0).r;
}

@fragment
fn fs_prediction(in: VertexOut) -> @location(0) vec4<f32> {
    var p: f32;
    if (view.flags.x == 0u) {
        p = load_probability(texel_clamped(in.image));
    } else {
        let q = in.image - vec2<f32>(0.5, 0.5);
        let base = floor(q);
        let f = q - base;
        let t00 = texel_clamped(base + vec2<f32>(0.5, 0.5));
        let t11 = texel_clamped(base + vec2<f32>(1.5, 1.5));
        let top = mix(load_probability(t00), load_probability(vec2<i32>(t11.x, t00.y)), f.x);
        let bottom = mix(load_probability(vec2<i32>(t00.x, t11.y)), load_probability(t11), f.x);
        p = mix(top, bottom, f.y);
    }
    if (p < view.prediction.x) {
        discard;
    }
    let alpha = view.prediction.y * select(1.0, clamp(p, 0.0, 1.0), view.prediction.z > 0.5);
    return vec4<f32>(view.prediction_tint.rgb * alpha, alpha);
}
