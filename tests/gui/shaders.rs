//! Every WGSL shader parses and validates with naga (the front end wgpu uses), on the CPU,
//! and has the entry points the renderer binds.

use sam4em::render::shaders;

#[test]
fn every_shader_validates_with_naga() {
    for (name, source, fragment_entries) in shaders::ALL {
        let module = naga::front::wgsl::parse_str(source)
            .unwrap_or_else(|e| panic!("{name}.wgsl: {}", e.emit_to_string(source)));
        let mut validator =
            naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::empty());
        validator
            .validate(&module)
            .unwrap_or_else(|e| panic!("{name}.wgsl does not validate: {}", e.emit_to_string(source)));
        let entries: Vec<(&str, naga::ShaderStage)> =
            module.entry_points.iter().map(|e| (e.name.as_str(), e.stage)).collect();
        assert!(entries.contains(&("vs_main", naga::ShaderStage::Vertex)), "{name}: no vs_main in {entries:?}");
        for f in fragment_entries {
            assert!(
                entries.contains(&(f, naga::ShaderStage::Fragment)),
                "{name}: no fragment entry {f} in {entries:?}"
            );
        }
    }
}

#[test]
fn shaders_live_in_the_shaders_folder() {
    // The renderer compiles the files in `shaders/` (include_str!), not copies.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    for file in ["common.wgsl", "slice.wgsl", "overlay.wgsl", "prediction.wgsl"] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        let in_binary = shaders::ALL.iter().any(|(_, src, _)| src.contains(text.trim()));
        assert!(in_binary, "{file} is not what the renderer compiles");
    }
    assert_eq!(shaders::COMMON, std::fs::read_to_string(dir.join("common.wgsl")).unwrap());
}

#[test]
fn a_broken_shader_is_caught() {
    // The check above can fail: a type error must not validate.
    let broken = format!(
        "{}\n@fragment fn fs_bad(in: VertexOut) -> @location(0) vec4<f32> {{ return in.image; }}",
        shaders::COMMON
    );
    let module = naga::front::wgsl::parse_str(&broken);
    let valid = module.ok().and_then(|m| {
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::empty())
            .validate(&m)
            .ok()
    });
    assert!(valid.is_none());
}
