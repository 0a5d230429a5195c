//! Voxel-size metadata in TIFF files: ImageJ's `ImageDescription`, OME-XML, and the plain
//! resolution tags.

use crate::state::VoxelSize;

/// Nanometres in one `unit`, for the unit spellings ImageJ, OME and microscopes write.
/// `None` for `pixel` or anything unknown.
pub fn nm_per_unit(unit: &str) -> Option<f64> {
    let u = unit.trim().trim_matches('"').to_ascii_lowercase();
    Some(match u.as_str() {
        "nm" | "nanometer" | "nanometre" | "nanometers" | "nanometres" => 1.0,
        "um" | "µm" | "μm" | "\\u00b5m" | "micron" | "microns" | "micrometer" | "micrometre" | "micrometers"
        | "micrometres" => 1_000.0,
        "mm" | "millimeter" | "millimetre" => 1e6,
        "cm" | "centimeter" | "centimetre" => 1e7,
        "m" | "meter" | "metre" => 1e9,
        "a" | "å" | "\\u00c5" | "angstrom" | "ångström" => 0.1,
        "pm" | "picometer" | "picometre" => 1e-3,
        _ => return None,
    })
}

/// What ImageJ writes into the first page's `ImageDescription`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageJMeta {
    /// `images=`: total number of images (pages), which can exceed the IFD count in ImageJ's
    /// large-file layout.
    pub images: Option<usize>,
    /// `channels=`.
    pub channels: Option<usize>,
    /// `slices=`.
    pub slices: Option<usize>,
    /// `frames=`.
    pub frames: Option<usize>,
    /// `unit=`.
    pub unit: Option<String>,
    /// `spacing=`: z step in `unit`.
    pub spacing: Option<f64>,
}

/// Parses an ImageJ description (`ImageJ=1.54f\nimages=20\nunit=micron\nspacing=0.05\n…`).
/// `None` when the text is not one.
pub fn parse_imagej(description: &str) -> Option<ImageJMeta> {
    if !description.starts_with("ImageJ=") {
        return None;
    }
    let mut m = ImageJMeta::default();
    for line in description.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim();
        match k.trim() {
            "images" => m.images = v.parse().ok(),
            "channels" => m.channels = v.parse().ok(),
            "slices" => m.slices = v.parse().ok(),
            "frames" => m.frames = v.parse().ok(),
            "unit" => m.unit = Some(v.to_owned()),
            "spacing" => m.spacing = v.parse().ok().filter(|s: &f64| s.is_finite() && *s > 0.0),
            _ => {}
        }
    }
    Some(m)
}

/// What an OME-XML description says about the first image.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OmeMeta {
    /// Voxel size, when the physical sizes are present.
    pub voxel_size: Option<VoxelSize>,
    /// `SizeC`.
    pub size_c: usize,
}

/// Parses OME-XML from an `ImageDescription`. `None` when the text is not OME-XML;
/// `Err` with the parser's message when it is but cannot be parsed.
pub fn parse_ome(description: &str) -> Option<Result<OmeMeta, String>> {
    let start = description.find("<OME")?;
    let xml = &description[description[..start].rfind("<?xml").unwrap_or(start)..];
    Some(parse_ome_xml(xml))
}

fn parse_ome_xml(xml: &str) -> Result<OmeMeta, String> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| format!("malformed OME-XML: {e}"))?;
    let pixels = doc
        .descendants()
        .find(|n| n.has_tag_name("Image"))
        .and_then(|img| img.children().find(|n| n.has_tag_name("Pixels")))
        .ok_or("OME-XML without an Image/Pixels element")?;
    // OME's default unit for physical sizes is the micrometre.
    let size = |axis: &str| -> Option<f64> {
        let v: f64 = pixels.attribute(format!("PhysicalSize{axis}").as_str())?.parse().ok()?;
        let unit = pixels.attribute(format!("PhysicalSize{axis}Unit").as_str()).unwrap_or("µm");
        let nm = v * nm_per_unit(unit)?;
        (nm.is_finite() && nm > 0.0).then_some(nm)
    };
    let voxel_size = match (size("X"), size("Y")) {
        (Some(x_nm), y) => Some(VoxelSize { x_nm, y_nm: y.unwrap_or(x_nm), z_nm: size("Z") }),
        _ => None,
    };
    let size_c = pixels.attribute("SizeC").and_then(|v| v.parse().ok()).unwrap_or(1);
    Ok(OmeMeta { voxel_size, size_c })
}

/// TIFF `ResolutionUnit` values.
const RESUNIT_NONE: u16 = 1;
const RESUNIT_INCH: u16 = 2;
const RESUNIT_CM: u16 = 3;

/// Pixel size in nm from `XResolution` (pixels per unit) and `ResolutionUnit`.
///
/// `unit_none_nm` is how many nm ImageJ's own unit is, for files whose `ResolutionUnit` is
/// "none" (ImageJ stores pixels per `unit=`). Per-inch values below 25 400 px/inch (pixels
/// larger than 1 µm) are taken as a screen DPI left by some writer, not a physical size: EM
/// pixels are nanometres wide.
pub fn pixel_size_nm(pixels_per_unit: f64, resolution_unit: u16, unit_none_nm: Option<f64>) -> Option<f64> {
    if !(pixels_per_unit.is_finite() && pixels_per_unit > 0.0) {
        return None;
    }
    let nm = match resolution_unit {
        RESUNIT_CM => 1e7 / pixels_per_unit,
        RESUNIT_INCH if pixels_per_unit >= 25_400.0 => 2.54e7 / pixels_per_unit,
        RESUNIT_NONE => unit_none_nm? / pixels_per_unit,
        _ => return None,
    };
    (nm.is_finite() && nm > 0.0).then_some(nm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imagej_description() {
        let m = parse_imagej("ImageJ=1.54f\nimages=20\nslices=20\nunit=\\u00B5m\nspacing=0.05\nloop=false\n").unwrap();
        assert_eq!(m.images, Some(20));
        assert_eq!(m.spacing, Some(0.05));
        assert_eq!(nm_per_unit(m.unit.as_deref().unwrap()), Some(1000.0));
        assert!(parse_imagej("OME").is_none());
    }

    #[test]
    fn ome_description() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?><OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06"><Image ID="Image:0"><Pixels ID="Pixels:0" DimensionOrder="XYZCT" Type="uint16" SizeX="64" SizeY="48" SizeZ="3" SizeC="1" SizeT="1" PhysicalSizeX="0.008" PhysicalSizeY="0.008" PhysicalSizeZ="30" PhysicalSizeZUnit="nm"/></Image></OME>"#;
        let m = parse_ome(xml).unwrap().unwrap();
        let v = m.voxel_size.unwrap();
        assert!((v.x_nm - 8.0).abs() < 1e-9 && (v.y_nm - 8.0).abs() < 1e-9);
        assert_eq!(v.z_nm, Some(30.0));
        assert!(parse_ome("<OME><broken").unwrap().is_err());
    }

    #[test]
    fn resolution_tags() {
        assert_eq!(pixel_size_nm(2e6, RESUNIT_CM, None), Some(5.0));
        assert_eq!(pixel_size_nm(72.0, RESUNIT_INCH, None), None);
        assert_eq!(pixel_size_nm(200.0, RESUNIT_NONE, Some(1000.0)), Some(5.0));
        assert_eq!(pixel_size_nm(200.0, RESUNIT_NONE, None), None);
    }
}
