// The overlay shader: class masks over the slice. The mask texture holds, per pixel, a bit set
// of class slots (bit i = the class in slot i covers the pixel; classes may overlap). Each
// visible class is drawn in its colour at its opacity; overlapping classes composite in slot
// order. In outline mode only the boundary is drawn: a pixel is on the boundary of a class when
// the class covers it but not a pixel `outline width` screen pixels away, so the line keeps its
// on-screen width at every zoom.
//
// Output is premultiplied alpha (blend: one, one-minus-source-alpha).

@group(1) @binding(0) var mask: texture_2d_array<u32>;

// Class bits at image position `p`; nothing outside the image.
fn bits_at(p: vec2<f32>) -> u32 {
    if (!inside_image(p)) {
        return 0u;
    }
    let at = tile_texel(texel_clamped(p));
    return textureLoad(mask, at.texel, at.layer, 0).r;
}

@fragment
fn fs_overlay(in: VertexOut) -> @location(0) vec4<f32> {
    // Screen-pixel steps in image space; taken before any branch (derivatives need uniform
    // control flow).
    let width = f32(view.flags.z);
    let step_x = dpdx(in.image) * width;
    let step_y = dpdy(in.image) * width;

    let here = bits_at(in.image) & view.flags.w;
    var shown = here;
    if (view.flags.y == 1u) {
        let everywhere = bits_at(in.image + step_x) & bits_at(in.image - step_x)
            & bits_at(in.image + step_y) & bits_at(in.image - step_y);
        shown = here & ~everywhere;
    }
    if (shown == 0u) {
        // Nothing to blend: skip the framebuffer read-modify-write.
        discard;
    }
    // Composite the classes present, lowest slot first (visits set bits only).
    var rgb = vec3<f32>(0.0, 0.0, 0.0);
    var alpha = 0.0;
    var rest = shown;
    loop {
        if (rest == 0u) {
            break;
        }
        let c = view.class_color[firstTrailingBit(rest)];
        rest = rest & (rest - 1u);
        rgb = rgb * (1.0 - c.a) + c.rgb * c.a;
        alpha = alpha * (1.0 - c.a) + c.a;
    }
    return vec4<f32>(rgb, alpha);
}
