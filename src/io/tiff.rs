//! Multi-page TIFF and BigTIFF stacks: 8/16/32-bit grey, float, 1-bit, palette and RGB(A)
//! pages, little or big endian, strips or tiles, any compression the `tiff` crate decodes
//! (none, LZW, Deflate, PackBits, JPEG, …), with ImageJ, OME and resolution-tag voxel sizes.
//!
//! Opening walks the IFD chain once to read metadata and check that every page has the same
//! size and type and that its data lies inside the file; pixels are decoded per page on demand.
//! ImageJ's large-stack layout (one IFD, `images=N`, pages stored back to back) is read too.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tiff::decoder::{Decoder, DecodingResult, Limits};
use tiff::tags::Tag;
use tiff::{ColorType, TiffError};

use super::error::{IoError, describe_io};
use super::meta;
use super::options::{ColorToGray, OpenOptions, to_gray};
use crate::state::{DType, SliceData, SliceError, SliceIndex, SliceSource, VoxelSize};

/// TIFF `Compression` value of LZW.
const COMPRESSION_LZW: u16 = 5;

/// TIFF `SampleFormat` values.
const SAMPLE_UINT: u16 = 1;
const SAMPLE_INT: u16 = 2;
const SAMPLE_FLOAT: u16 = 3;

/// Pixel layout of a page; every page of a stack must have the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PageFormat {
    width: u32,
    height: u32,
    color: ColorType,
    sample_format: u16,
    planar: bool,
}

impl PageFormat {
    fn read<R: Read + Seek>(dec: &mut Decoder<R>) -> Result<Self, TiffError> {
        let (width, height) = dec.dimensions()?;
        let color = dec.colortype()?;
        let sample_format = match dec.find_tag(Tag::SampleFormat)? {
            Some(v) => v.into_u16_vec()?.first().copied().unwrap_or(SAMPLE_UINT),
            None => SAMPLE_UINT,
        };
        let planar = dec.find_tag_unsigned::<u16>(Tag::PlanarConfiguration)?.unwrap_or(1) == 2;
        Ok(Self { width, height, color, sample_format, planar })
    }

    /// The decoded sample type, or why the page is unsupported.
    fn dtype(&self) -> Result<DType, String> {
        let kind = match self.sample_format {
            SAMPLE_UINT => "unsigned integer",
            SAMPLE_INT => "signed integer",
            SAMPLE_FLOAT => "floating point",
            _ => "unknown-format",
        };
        let bits = self.bits().ok_or_else(|| format!("colour model {:?}", self.color))?;
        let is_color = matches!(self.color, ColorType::RGB(_) | ColorType::RGBA(_));
        if is_color && self.planar {
            return Err("separate-plane (planar) colour pages".into());
        }
        match (bits, self.sample_format) {
            (1 | 8, SAMPLE_UINT) => Ok(DType::U8),
            (16, SAMPLE_UINT) => Ok(DType::U16),
            (32, SAMPLE_UINT) if !is_color => Ok(DType::U32),
            (32, SAMPLE_FLOAT) if !is_color => Ok(DType::F32),
            _ => Err(format!("bit depth: {bits}-bit {kind} samples{}", if is_color { " in colour pages" } else { "" })),
        }
    }

    /// Bits per sample, for the colour models this reader handles.
    fn bits(&self) -> Option<u8> {
        match self.color {
            ColorType::Gray(b)
            | ColorType::GrayA(b)
            | ColorType::RGB(b)
            | ColorType::RGBA(b)
            | ColorType::Palette(b) => Some(b),
            _ => None,
        }
    }

    /// Interleaved samples per pixel.
    fn channels(&self) -> usize {
        match self.color {
            ColorType::GrayA(_) => 2,
            ColorType::RGB(_) => 3,
            ColorType::RGBA(_) => 4,
            _ => 1,
        }
    }

    /// Bytes of one uncompressed page (bit-packed pages counted at a byte per sample: an upper
    /// bound, as the size limit needs).
    /// Bytes of one decoded pixel (every channel).
    fn bytes_per_pixel(&self) -> u64 {
        u64::from(self.bits().unwrap_or(8)).div_ceil(8) * self.channels() as u64
    }
}

/// Turns a TIFF error into a short user-facing problem statement.
fn describe(e: &TiffError) -> String {
    match e {
        TiffError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            "truncated TIFF: the file ends before its data does".into()
        }
        TiffError::IoError(io) => describe_io(io),
        TiffError::FormatError(f) => format!("corrupt TIFF: {f}"),
        TiffError::UnsupportedError(u) => format!("unsupported TIFF feature: {u}"),
        TiffError::LimitsExceeded => "TIFF page larger than the slice size limit".into(),
        other => format!("cannot decode TIFF: {other}"),
    }
}

/// Where each slice's pixels are.
enum PageAccess {
    /// Slice z is the IFD with this index (reduced-resolution pages are skipped).
    Ifds(Vec<usize>),
    /// ImageJ large-stack layout: slice z's raw, uncompressed bytes start at
    /// `offset + z * slice_bytes`.
    Contiguous { offset: u64, slice_bytes: u64, big_endian: bool },
}

/// A TIFF file opened as a stack.
pub(crate) struct TiffSource<R: Read + Seek> {
    path: PathBuf,
    decoder: Mutex<Decoder<R>>,
    access: PageAccess,
    format: PageFormat,
    color: ColorToGray,
    /// LZW-compressed pages, which may need [`decode_lzw_page`].
    lzw: bool,
}

/// Metadata gathered while opening a TIFF.
pub(crate) struct TiffInfo {
    pub width: usize,
    pub height: usize,
    pub depth: usize,
    pub dtype: DType,
    pub voxel_size: Option<VoxelSize>,
    pub format: String,
}

fn limits(opts: &OpenOptions) -> Limits {
    let mut l = Limits::default();
    let max = usize::try_from(opts.max_slice_bytes).unwrap_or(usize::MAX);
    l.decoding_buffer_size = max;
    l.intermediate_buffer_size = max;
    // OME-XML descriptions of long series can be megabytes long.
    l.ifd_value_size = 64 << 20;
    l
}

fn compression_name(code: Option<u16>) -> String {
    match code.unwrap_or(1) {
        1 => "uncompressed".into(),
        5 => "LZW".into(),
        8 | 32946 => "Deflate".into(),
        32773 => "PackBits".into(),
        6 | 7 => "JPEG".into(),
        50000 => "Zstd".into(),
        other => format!("compression {other}"),
    }
}

/// Where a page's strips or tiles are in the file.
struct ChunkExtents {
    tiled: bool,
    offsets: Vec<u64>,
    lengths: Vec<u64>,
}

/// Reads the page's chunk offsets and sizes and checks they lie inside the file.
fn check_chunks<R: Read + Seek>(dec: &mut Decoder<R>, page: usize, file_len: u64) -> Result<ChunkExtents, String> {
    let tiled = dec.find_tag(Tag::TileOffsets).map_err(|e| describe(&e))?.is_some();
    let (off_tag, len_tag) =
        if tiled { (Tag::TileOffsets, Tag::TileByteCounts) } else { (Tag::StripOffsets, Tag::StripByteCounts) };
    let offsets = dec.get_tag_u64_vec(off_tag).map_err(|e| describe(&e))?;
    let lengths = dec.get_tag_u64_vec(len_tag).map_err(|e| describe(&e))?;
    if offsets.len() != lengths.len() {
        return Err(format!(
            "corrupt TIFF: page {page} has {} data offsets but {} sizes",
            offsets.len(),
            lengths.len()
        ));
    }
    for (o, l) in offsets.iter().zip(&lengths) {
        let end = o.checked_add(*l).unwrap_or(u64::MAX);
        if end > file_len {
            return Err(format!(
                "truncated TIFF: page {page} data ends at byte {end} but the file has {file_len} bytes"
            ));
        }
    }
    Ok(ChunkExtents { tiled, offsets, lengths })
}

/// Opens a TIFF from any seekable reader. `path` is used in messages; `file_len` bounds the
/// data offsets; `bigtiff` only affects the format description.
pub(crate) fn open<R: Read + Seek + Send>(
    reader: R,
    path: &Path,
    file_len: u64,
    bigtiff: bool,
    opts: &OpenOptions,
) -> Result<(TiffInfo, TiffSource<R>), IoError> {
    let err = |p: String| IoError::read(path, p);
    let mut dec = Decoder::new(reader).map_err(|e| err(describe(&e)))?.with_limits(limits(opts));
    let big_endian = matches!(dec.byte_order(), tiff::tags::ByteOrder::BigEndian);
    let format = PageFormat::read(&mut dec).map_err(|e| err(describe(&e)))?;
    let dtype = format.dtype().map_err(|what| IoError::unsupported(path, what))?;
    if format.width == 0 || format.height == 0 {
        return Err(err(format!("corrupt TIFF: page 0 is {}x{} px", format.width, format.height)));
    }
    let slice_bytes =
        opts.check_slice(path, u64::from(format.width), u64::from(format.height), format.bytes_per_pixel())?;
    let compression = dec.find_tag_unsigned::<u16>(Tag::Compression).ok().flatten();
    let tiled = dec.find_tag(Tag::TileWidth).ok().flatten().is_some();
    // A description that is not valid text is ignored: it only carries optional metadata.
    let description = dec.get_tag_ascii_string(Tag::ImageDescription).ok();
    let resolution = read_resolution(&mut dec);
    let ChunkExtents { offsets: offsets0, lengths: lengths0, .. } = check_chunks(&mut dec, 0, file_len).map_err(err)?;

    let mut pages = vec![0usize];
    let mut ifd = 0usize;
    while dec.more_images() {
        dec.next_image().map_err(|e| err(format!("{} (after page {ifd})", describe(&e))))?;
        ifd += 1;
        // Bit 0 of NewSubfileType marks a reduced-resolution copy (a thumbnail or pyramid level).
        let subfile = dec.find_tag_unsigned::<u32>(Tag::NewSubfileType).ok().flatten().unwrap_or(0);
        if subfile & 1 != 0 {
            continue;
        }
        let f = PageFormat::read(&mut dec).map_err(|e| err(format!("{} (page {ifd})", describe(&e))))?;
        if f != format {
            return Err(IoError::mismatch(
                path,
                format!(
                    "page {ifd} is {}x{} px {:?} where page 0 is {}x{} px {:?}; all pages of a stack must match",
                    f.width, f.height, f.color, format.width, format.height, format.color
                ),
            ));
        }
        check_chunks(&mut dec, ifd, file_len).map_err(err)?;
        pages.push(ifd);
    }

    let ij = description.as_deref().and_then(meta::parse_imagej);
    let ome = match description.as_deref().and_then(meta::parse_ome) {
        Some(Ok(m)) => Some(m),
        // Broken OME-XML loses the voxel size, not the image.
        Some(Err(e)) => {
            tracing::warn!("ignoring OME metadata of {}: {e}", path.display());
            None
        }
        None => None,
    };
    if let Some(c) = ij.as_ref().and_then(|m| m.channels).filter(|&c| c > 1) {
        return Err(IoError::unsupported(
            path,
            format!("ImageJ hyperstack with {c} channels (save one channel per file)"),
        ));
    }
    if let Some(c) = ome.as_ref().map(|m| m.size_c).filter(|&c| c > 1) {
        return Err(IoError::unsupported(path, format!("OME-TIFF with {c} channels (save one channel per file)")));
    }

    let mut layout = "";
    let access = match ij.as_ref().and_then(|m| m.images) {
        // ImageJ writes stacks over 4 GiB with a single IFD; the other pages follow the first
        // one's pixels back to back.
        Some(n) if n > 1 && pages.len() == 1 && compression.unwrap_or(1) == 1 => {
            let contiguous = offsets0.windows(2).zip(&lengths0).all(|(w, l)| w[0].checked_add(*l) == Some(w[1]));
            if !contiguous || lengths0.iter().try_fold(0u64, |a, &l| a.checked_add(l)) != Some(slice_bytes) {
                return Err(IoError::unsupported(path, "ImageJ large-stack layout with non-contiguous strips"));
            }
            let end =
                u64::try_from(n).ok().and_then(|n| n.checked_mul(slice_bytes)).and_then(|b| b.checked_add(offsets0[0]));
            match end {
                Some(end) if end <= file_len => {}
                _ => {
                    return Err(err(format!(
                        "truncated TIFF: ImageJ says {n} images of {slice_bytes} bytes but the file has {file_len} bytes"
                    )));
                }
            }
            layout = ", ImageJ large-stack layout";
            PageAccess::Contiguous { offset: offsets0[0], slice_bytes, big_endian }
        }
        _ => PageAccess::Ifds(pages),
    };
    let depth = match &access {
        PageAccess::Ifds(p) => p.len(),
        PageAccess::Contiguous { .. } => ij.as_ref().and_then(|m| m.images).unwrap_or(1),
    };

    let voxel_size = ome.as_ref().and_then(|m| m.voxel_size).or_else(|| {
        let unit_nm = ij.as_ref().and_then(|m| m.unit.as_deref()).and_then(meta::nm_per_unit);
        let (xres, yres, unit) = resolution?;
        let x_nm = meta::pixel_size_nm(xres, unit, unit_nm)?;
        let y_nm = meta::pixel_size_nm(yres, unit, unit_nm).unwrap_or(x_nm);
        let z_nm = ij.as_ref().and_then(|m| Some(m.spacing? * unit_nm?));
        Some(VoxelSize { x_nm, y_nm, z_nm })
    });

    let kind = match (bigtiff, depth) {
        (true, _) => "BigTIFF",
        (false, 1) => "TIFF",
        (false, _) => "multi-page TIFF",
    };
    let meta_kind = if ome.is_some() {
        ", OME"
    } else if ij.is_some() {
        ", ImageJ"
    } else {
        ""
    };
    let description = format!(
        "{kind} ({}-endian, {}, {}{meta_kind}{layout})",
        if big_endian { "big" } else { "little" },
        compression_name(compression),
        if tiled { "tiles" } else { "strips" },
    );
    let info = TiffInfo {
        width: format.width as usize,
        height: format.height as usize,
        depth,
        dtype,
        voxel_size,
        format: description,
    };
    let source = TiffSource {
        path: path.to_owned(),
        decoder: Mutex::new(dec),
        access,
        format,
        color: opts.color,
        lzw: compression == Some(COMPRESSION_LZW),
    };
    Ok((info, source))
}

/// `XResolution`, `YResolution` (pixels per unit) and `ResolutionUnit` of the current page.
fn read_resolution<R: Read + Seek>(dec: &mut Decoder<R>) -> Option<(f64, f64, u16)> {
    use tiff::decoder::ifd::Value;
    // The tags are RATIONAL by the spec; some writers use FLOAT or DOUBLE.
    let as_f64 = |v: Value| match v {
        Value::Rational(n, d) if d != 0 => Some(f64::from(n) / f64::from(d)),
        Value::Float(f) => Some(f64::from(f)),
        Value::Double(f) => Some(f),
        _ => None,
    };
    let x = as_f64(dec.find_tag(Tag::XResolution).ok()??)?;
    let y = dec.find_tag(Tag::YResolution).ok().flatten().and_then(as_f64).unwrap_or(x);

    // TIFF's default ResolutionUnit is the inch.
    let unit = dec.find_tag_unsigned::<u16>(Tag::ResolutionUnit).ok().flatten().unwrap_or(2);
    Some((x, y, unit))
}

impl<R: Read + Seek + Send> TiffSource<R> {
    fn decode_page(&self, z: SliceIndex) -> Result<SliceData, String> {
        let mut dec = self.decoder.lock().unwrap_or_else(|e| e.into_inner());
        match &self.access {
            PageAccess::Ifds(pages) => {
                dec.seek_to_image(pages[z.0]).map_err(|e| describe(&e))?;
                let result = match dec.read_image() {
                    Ok(r) => r,
                    // tiff 0.11.3 rejects some valid LZW chunks (image-rs/image-tiff#395);
                    // decode those ourselves and report the crate's error if that fails too.
                    Err(e) if self.lzw => decode_lzw_page(&mut dec, &self.format).map_err(|_| describe(&e))?,
                    Err(e) => return Err(describe(&e)),
                };
                convert(result, &self.format, self.color)
            }
            PageAccess::Contiguous { offset, slice_bytes, big_endian } => {
                let mut bytes = vec![0u8; *slice_bytes as usize];
                let r = dec.inner();
                r.seek(SeekFrom::Start(offset + z.0 as u64 * slice_bytes)).map_err(|e| describe_io(&e))?;
                r.read_exact(&mut bytes).map_err(|e| describe_io(&e))?;
                raw_to_slice(&bytes, &self.format, *big_endian)
            }
        }
    }
}

impl<R: Read + Seek + Send> SliceSource for TiffSource<R> {
    fn decode(&self, z: SliceIndex) -> Result<SliceData, SliceError> {
        self.decode_page(z).map_err(|problem| SliceError { slice: z, problem, path: self.path.clone() })
    }
}

/// Decodes uncompressed, single-sample raw page bytes in the file's byte order.
fn raw_to_slice(bytes: &[u8], format: &PageFormat, big_endian: bool) -> Result<SliceData, String> {
    fn words<const N: usize, T>(
        bytes: &[u8],
        be: bool,
        from_be: fn([u8; N]) -> T,
        from_le: fn([u8; N]) -> T,
    ) -> Vec<T> {
        bytes
            .chunks_exact(N)
            .map(|c| {
                let a: [u8; N] = c.try_into().expect("chunks_exact");
                if be { from_be(a) } else { from_le(a) }
            })
            .collect()
    }
    Ok(match (format.dtype()?, format.color) {
        (DType::U8, ColorType::Gray(8) | ColorType::Palette(8)) => SliceData::U8(bytes.to_vec()),
        (DType::U16, ColorType::Gray(16) | ColorType::Palette(16)) => {
            SliceData::U16(words(bytes, big_endian, u16::from_be_bytes, u16::from_le_bytes))
        }
        (DType::U32, _) => SliceData::U32(words(bytes, big_endian, u32::from_be_bytes, u32::from_le_bytes)),
        (DType::F32, _) => SliceData::F32(words(bytes, big_endian, f32::from_be_bytes, f32::from_le_bytes)),
        (_, c) => {
            return Err(format!("ImageJ large-stack layout with {c:?} pages is not supported"));
        }
    })
}

/// Converts a decoded page to the stack's sample type.
fn convert(result: DecodingResult, format: &PageFormat, mode: ColorToGray) -> Result<SliceData, String> {
    let (w, h) = (format.width as usize, format.height as usize);
    let channels = format.channels();
    let data = match (result, format.color) {
        (DecodingResult::U8(bits), ColorType::Gray(1)) => {
            // Rows of 1-bit pixels are padded to whole bytes, most significant bit first.
            let row_bytes = w.div_ceil(8);
            if bits.len() < row_bytes * h {
                return Err(format!("1-bit page decoded to {} bytes, expected {}", bits.len(), row_bytes * h));
            }
            let mut out = Vec::with_capacity(w * h);
            for row in bits.chunks_exact(row_bytes).take(h) {
                out.extend((0..w).map(|x| if row[x / 8] & (0x80 >> (x % 8)) != 0 { 255 } else { 0 }));
            }
            SliceData::U8(out)
        }
        (DecodingResult::U8(v), _) => SliceData::U8(to_gray(v, channels, mode, |x| x as u8)),
        (DecodingResult::U16(v), _) => SliceData::U16(to_gray(v, channels, mode, |x| x as u16)),
        (DecodingResult::U32(v), _) if channels == 1 => SliceData::U32(v),
        (DecodingResult::F32(v), _) if channels == 1 => SliceData::F32(v),
        (other, c) => {
            let kind = match other {
                DecodingResult::I8(_) | DecodingResult::I16(_) | DecodingResult::I32(_) | DecodingResult::I64(_) => {
                    "signed"
                }
                _ => "other",
            };
            return Err(format!("page decoded to {kind} samples for {c:?}, which this program does not read"));
        }
    };
    if data.len() != w * h {
        return Err(format!("page decoded to {} samples, expected {w}x{h}", data.len()));
    }
    Ok(data)
}

/// Decodes the current page when it is LZW-compressed, reading and expanding each strip or tile
/// with `weezl` directly. Handles 8/16/32-bit samples, either byte order and the horizontal
/// predictor; anything else is left to the `tiff` crate's error.
fn decode_lzw_page<R: Read + Seek>(dec: &mut Decoder<R>, format: &PageFormat) -> Result<DecodingResult, String> {
    let (w, h) = (format.width as usize, format.height as usize);
    let (channels, bits) = (format.channels(), format.bits().ok_or("colour model")?);
    if !matches!(bits, 8 | 16 | 32) || format.planar {
        return Err("layout".into());
    }
    let sample_bytes = usize::from(bits / 8);
    let pixel_bytes = channels * sample_bytes;
    let predictor = dec.find_tag_unsigned::<u16>(Tag::Predictor).map_err(|e| describe(&e))?.unwrap_or(1);
    if predictor > 2 || (predictor == 2 && format.sample_format == SAMPLE_FLOAT) {
        return Err("predictor".into());
    }
    // The page passed the extent check when the stack was opened.
    let ChunkExtents { tiled, offsets, lengths } = check_chunks(dec, 0, u64::MAX)?;
    let (chunk_w, chunk_h) = if tiled {
        let tw = dec.get_tag_u32(Tag::TileWidth).map_err(|e| describe(&e))? as usize;
        let th = dec.get_tag_u32(Tag::TileLength).map_err(|e| describe(&e))? as usize;
        (tw, th)
    } else {
        let rows = dec.find_tag_unsigned::<u32>(Tag::RowsPerStrip).map_err(|e| describe(&e))?.map_or(h, |r| r as usize);
        (w, rows.clamp(1, h))
    };
    // Tiles may overhang small images, but a chunk far larger than the image is corrupt and
    // would only make us allocate without bound.
    let chunk_bytes = chunk_w.saturating_mul(chunk_h).saturating_mul(pixel_bytes);
    if chunk_w == 0 || chunk_h == 0 || chunk_bytes > (w * h * pixel_bytes).saturating_mul(4).max(16 << 20) {
        return Err("chunk size".into());
    }

    let across = w.div_ceil(chunk_w);
    let needed = across * h.div_ceil(chunk_h);
    if offsets.len() < needed {
        return Err("chunk count".into());
    }
    let swap = dec.byte_order() != tiff::tags::ByteOrder::native();
    let mut image = vec![0u8; w * h * pixel_bytes];
    let mut packed = Vec::new();
    for i in 0..needed {
        let (x0, y0) = ((i % across) * chunk_w, (i / across) * chunk_h);
        // Strips hold only the rows left; tiles are always whole (padded at the edges).
        let rows = if tiled { chunk_h } else { chunk_h.min(h - y0) };
        let row_bytes = chunk_w * pixel_bytes;
        packed.resize(usize::try_from(lengths[i]).map_err(|e| e.to_string())?, 0);
        let r = dec.inner();
        r.seek(SeekFrom::Start(offsets[i])).map_err(|e| describe_io(&e))?;
        r.read_exact(&mut packed).map_err(|e| describe_io(&e))?;
        let mut chunk = vec![0u8; rows * row_bytes];
        let mut lzw = weezl::decode::Decoder::with_tiff_size_switch(weezl::BitOrder::Msb, 8);
        let (mut read, mut written) = (0, 0);
        while written < chunk.len() {
            let res = lzw.decode_bytes(&packed[read..], &mut chunk[written..]);
            read += res.consumed_in;
            written += res.consumed_out;
            match res.status {
                Ok(weezl::LzwStatus::Ok) => {}
                Ok(_) => break,
                Err(e) => return Err(e.to_string()),
            }
        }
        if written < chunk.len() {
            return Err(format!("LZW chunk {i} holds {written} of {} bytes", chunk.len()));
        }
        if swap {
            for s in chunk.chunks_exact_mut(sample_bytes) {
                s.reverse();
            }
        }
        if predictor == 2 {
            for row in chunk.chunks_exact_mut(row_bytes) {
                undo_horizontal_predictor(row, sample_bytes, channels);
            }
        }
        for (r, row) in chunk.chunks_exact(row_bytes).enumerate().take(h.saturating_sub(y0)) {
            let cols = chunk_w.min(w - x0);
            let dst = ((y0 + r) * w + x0) * pixel_bytes;
            image[dst..dst + cols * pixel_bytes].copy_from_slice(&row[..cols * pixel_bytes]);
        }
    }
    fn words<const N: usize, T>(bytes: &[u8], from: fn([u8; N]) -> T) -> Vec<T> {
        bytes.chunks_exact(N).map(|c| from(c.try_into().expect("chunks_exact"))).collect()
    }
    Ok(match (sample_bytes, format.sample_format) {
        (1, _) => DecodingResult::U8(image),
        (2, _) => DecodingResult::U16(words(&image, u16::from_ne_bytes)),
        (4, SAMPLE_FLOAT) => DecodingResult::F32(words(&image, f32::from_ne_bytes)),
        _ => DecodingResult::U32(words(&image, u32::from_ne_bytes)),
    })
}

/// Undoes TIFF predictor 2 on one row of native-endian integer samples: each sample was stored
/// as the difference to the same channel of the pixel before it.
fn undo_horizontal_predictor(row: &mut [u8], sample_bytes: usize, channels: usize) {
    let stride = sample_bytes * channels;
    for i in stride..row.len() / sample_bytes * sample_bytes {
        if i % sample_bytes != 0 {
            continue;
        }
        let j = i - stride;
        match sample_bytes {
            1 => row[i] = row[i].wrapping_add(row[j]),
            2 => {
                let v = u16::from_ne_bytes([row[i], row[i + 1]]).wrapping_add(u16::from_ne_bytes([row[j], row[j + 1]]));
                row[i..i + 2].copy_from_slice(&v.to_ne_bytes());
            }
            _ => {
                let a = u32::from_ne_bytes(row[i..i + 4].try_into().expect("4 bytes"));
                let b = u32::from_ne_bytes(row[j..j + 4].try_into().expect("4 bytes"));
                row[i..i + 4].copy_from_slice(&a.wrapping_add(b).to_ne_bytes());
            }
        }
    }
}
