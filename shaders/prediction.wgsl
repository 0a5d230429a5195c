// The prediction layer: a model's foreground probability per pixel (0..1), tinted where it
// is above the threshold. Hard mode paints every such pixel at the layer opacity; soft mode
// scales the opacity by the probability, so confident pixels stand out from marginal ones.
// Probabilities are linearly interpolated when magnification is linear.
//
// Output is premultiplied alpha (blend: one, one-minus-source-alpha).

@group(1) @binding(0) var probability: texture_2d_array<f32>;

fn load_probability(t: vec2<i32>) -> f32 {
    let at = tile_texel(t);
    return textureLoad(probability, at.texel, at.layer, 0).r;
}

@fragment
fn fs_prediction(in: VertexOut) -> @location(0) vec4<f32> {
    var p: f32;
    if (view.flags.x == 0u) {
        p = load_probability(texel_clamped(in.image));
    } else {
        let b = bilinear(in.image);
        p = bilinear_mix(b, load_probability(b.t00), load_probability(b.t10), load_probability(b.t01), load_probability(b.t11));
    }
    // Foreground is above the threshold, as everywhere (state::probability_cut); bytes by the
    // byte rule, so the GPU's rounding of v / 255 cannot move a pixel across it.
    let above = select(p > view.prediction.x, round(p * 255.0) > view.prediction.w, view.prediction.w >= 0.0);
    if (!above) {
        discard;
    }
    let alpha = view.prediction.y * select(1.0, clamp(p, 0.0, 1.0), view.prediction.z > 0.5);
    return vec4<f32>(view.prediction_tint.rgb * alpha, alpha);
}
