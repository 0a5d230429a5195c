//! The [`Volume`]: one EM stack, whatever file format it came from, with a lazy slice cache.
//!
//! Opening a stack reads metadata only (see `crate::io::stack`); slices are decoded on demand by
//! a [`SliceSource`] and kept in a least-recently-used cache bounded by a byte budget, so a stack
//! far larger than memory still browses with bounded memory.
//!
//! Pure Rust: this module must not depend on any other module of the crate.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use lru::LruCache;

/// Index of a slice along z, counted from 0 in file order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct SliceIndex(pub usize);

impl std::fmt::Display for SliceIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Sample type of a stack, after decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    /// 8-bit unsigned integers.
    U8,
    /// 16-bit unsigned integers.
    U16,
    /// 32-bit unsigned integers (label maps).
    U32,
    /// 32-bit IEEE floats.
    F32,
}

impl DType {
    /// Bytes one sample takes in memory.
    pub fn size_bytes(self) -> usize {
        match self {
            DType::U8 => 1,
            DType::U16 => 2,
            DType::U32 | DType::F32 => 4,
        }
    }

    /// Short lowercase name, as printed by `sam4em info` (`uint8`, `uint16`, `uint32`, `float32`).
    pub fn name(self) -> &'static str {
        match self {
            DType::U8 => "uint8",
            DType::U16 => "uint16",
            DType::U32 => "uint32",
            DType::F32 => "float32",
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Physical size of one voxel, in nanometres.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct VoxelSize {
    /// Pixel width along x, nm.
    pub x_nm: f64,
    /// Pixel height along y, nm.
    pub y_nm: f64,
    /// Slice spacing along z, nm. `None` when the file states only the in-plane size.
    pub z_nm: Option<f64>,
}

impl std::fmt::Display for VoxelSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} x {}", trim_float(self.x_nm), trim_float(self.y_nm))?;
        match self.z_nm {
            Some(z) => write!(f, " x {} nm", trim_float(z)),
            None => write!(f, " nm (z spacing unknown)"),
        }
    }
}

/// Formats a float with at most 4 decimals and no trailing zeros (`4.6`, `5`, `0.0125`).
fn trim_float(v: f64) -> String {
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_owned()
}

/// Decoded samples of one slice, row-major, `width * height` long.
#[derive(Debug, Clone, PartialEq)]
pub enum SliceData {
    /// 8-bit samples.
    U8(Vec<u8>),
    /// 16-bit samples.
    U16(Vec<u16>),
    /// 32-bit unsigned samples.
    U32(Vec<u32>),
    /// 32-bit float samples.
    F32(Vec<f32>),
}

impl SliceData {
    /// The sample type.
    pub fn dtype(&self) -> DType {
        match self {
            SliceData::U8(_) => DType::U8,
            SliceData::U16(_) => DType::U16,
            SliceData::U32(_) => DType::U32,
            SliceData::F32(_) => DType::F32,
        }
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        match self {
            SliceData::U8(v) => v.len(),
            SliceData::U16(v) => v.len(),
            SliceData::U32(v) => v.len(),
            SliceData::F32(v) => v.len(),
        }
    }

    /// True when there are no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held in memory.
    pub fn size_bytes(&self) -> usize {
        self.len() * self.dtype().size_bytes()
    }

    /// Sample `i` as `f64` (exact for every supported type).
    pub fn value_f64(&self, i: usize) -> f64 {
        match self {
            SliceData::U8(v) => f64::from(v[i]),
            SliceData::U16(v) => f64::from(v[i]),
            SliceData::U32(v) => f64::from(v[i]),
            SliceData::F32(v) => f64::from(v[i]),
        }
    }

    /// True where sample `i` is non-zero (and not NaN): the foreground test of binary masks.
    pub fn is_nonzero(&self, i: usize) -> bool {
        match self {
            SliceData::U8(v) => v[i] != 0,
            SliceData::U16(v) => v[i] != 0,
            SliceData::U32(v) => v[i] != 0,
            SliceData::F32(v) => v[i] != 0.0 && !v[i].is_nan(),
        }
    }
}

/// One decoded slice.
#[derive(Debug, Clone, PartialEq)]
pub struct Slice {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Samples, row-major.
    pub data: SliceData,
}

impl Slice {
    /// Sample at (x, y) as `f64`.
    pub fn value_at(&self, x: usize, y: usize) -> f64 {
        self.data.value_f64(y * self.width + x)
    }
}

/// What is known about a stack without decoding any slice.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct VolumeInfo {
    /// The file or folder that was opened.
    pub path: PathBuf,
    /// Human-readable container description, e.g. `multi-page TIFF (big-endian, LZW, strips)`.
    pub format: String,
    /// Slice width in pixels.
    pub width: usize,
    /// Slice height in pixels.
    pub height: usize,
    /// Number of slices.
    pub depth: usize,
    /// Sample type after decoding.
    pub dtype: DType,
    /// Voxel size from the file's metadata, when it has any.
    pub voxel_size: Option<VoxelSize>,
    /// Bytes the stack takes on disk (all files).
    pub size_on_disk_bytes: u64,
}

impl VolumeInfo {
    /// Bytes one decoded slice takes in memory.
    pub fn slice_size_bytes(&self) -> usize {
        self.width * self.height * self.dtype.size_bytes()
    }
}

/// A failure to decode one slice, as reported by a [`SliceSource`].
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot read slice {slice}: {problem}: {}", path.display())]
pub struct SliceError {
    /// The slice that failed.
    pub slice: SliceIndex,
    /// What went wrong.
    pub problem: String,
    /// The file that holds the slice.
    pub path: PathBuf,
}

/// Decodes slices of one stack on demand. Implemented by each file format in `crate::io`.
pub trait SliceSource: Send + Sync {
    /// Decodes slice `z` (`z < depth`); the result must match the volume's width, height and
    /// dtype.
    fn decode(&self, z: SliceIndex) -> Result<SliceData, SliceError>;
}

/// Byte budget of the slice cache when the caller does not choose one: 1 GiB.
pub const DEFAULT_CACHE_BUDGET_BYTES: usize = 1 << 30;

/// An opened stack: metadata plus lazily decoded, cached slices. Cheap to share across threads
/// (`&Volume` is `Sync`).
pub struct Volume {
    info: VolumeInfo,
    source: Box<dyn SliceSource>,
    cache: Mutex<SliceCache>,
}

impl std::fmt::Debug for Volume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Volume").field("info", &self.info).finish_non_exhaustive()
    }
}

struct SliceCache {
    slices: LruCache<SliceIndex, Arc<Slice>>,
    budget_bytes: usize,
    held_bytes: usize,
    peak_bytes: usize,
    decodes: u64,
}

/// Counters describing the slice cache, for tests and the status bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// Bytes of decoded slices held now.
    pub held_bytes: usize,
    /// Most bytes ever held at once.
    pub peak_bytes: usize,
    /// The budget.
    pub budget_bytes: usize,
    /// Slices decoded so far (cache misses).
    pub decodes: u64,
    /// Slices held now.
    pub slices: usize,
}

impl Volume {
    /// Wraps a source. `cache_budget_bytes` bounds the decoded slices kept in memory; the most
    /// recently used slice is always kept, even when it alone exceeds the budget.
    pub fn new(info: VolumeInfo, source: Box<dyn SliceSource>, cache_budget_bytes: usize) -> Self {
        Self {
            info,
            source,
            cache: Mutex::new(SliceCache {
                slices: LruCache::unbounded(),
                budget_bytes: cache_budget_bytes,
                held_bytes: 0,
                peak_bytes: 0,
                decodes: 0,
            }),
        }
    }

    /// Metadata.
    pub fn info(&self) -> &VolumeInfo {
        &self.info
    }

    /// Slice width in pixels.
    pub fn width(&self) -> usize {
        self.info.width
    }

    /// Slice height in pixels.
    pub fn height(&self) -> usize {
        self.info.height
    }

    /// Number of slices.
    pub fn depth(&self) -> usize {
        self.info.depth
    }

    /// Path of the file or folder that was opened.
    pub fn path(&self) -> &Path {
        &self.info.path
    }

    fn cache(&self) -> MutexGuard<'_, SliceCache> {
        // A panic while holding the lock leaves the cache consistent (every mutation is a
        // single step), so a poisoned lock is safe to reuse.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Slice `z`, from the cache or decoded now. Decoding happens outside the cache lock, so
    /// cached slices stay available to other threads meanwhile.
    ///
    /// # Panics
    /// When `z` is out of range: callers index within `depth()`.
    pub fn slice(&self, z: SliceIndex) -> Result<Arc<Slice>, SliceError> {
        assert!(z.0 < self.info.depth, "slice {z} out of range 0..{}", self.info.depth);
        if let Some(s) = self.cache().slices.get(&z) {
            return Ok(Arc::clone(s));
        }
        let data = self.source.decode(z)?;
        let expected = self.info.width * self.info.height;
        if data.len() != expected || data.dtype() != self.info.dtype {
            return Err(SliceError {
                slice: z,
                problem: format!(
                    "decoded {} {} samples where the stack has {} {}",
                    data.len(),
                    data.dtype(),
                    expected,
                    self.info.dtype
                ),
                path: self.info.path.clone(),
            });
        }
        let slice = Arc::new(Slice { width: self.info.width, height: self.info.height, data });
        let mut cache = self.cache();
        cache.decodes += 1;
        let bytes = slice.data.size_bytes();
        if let Some(old) = cache.slices.put(z, Arc::clone(&slice)) {
            // Another thread decoded the same slice meanwhile.
            cache.held_bytes -= old.data.size_bytes();
        }
        cache.held_bytes += bytes;
        while cache.held_bytes > cache.budget_bytes && cache.slices.len() > 1 {
            if let Some((_, evicted)) = cache.slices.pop_lru() {
                cache.held_bytes -= evicted.data.size_bytes();
            }
        }
        cache.peak_bytes = cache.peak_bytes.max(cache.held_bytes);
        Ok(slice)
    }

    /// Slice `z` if it is in the cache; never decodes (the UI thread uses this so it never
    /// waits on I/O).
    pub fn cached(&self, z: SliceIndex) -> Option<Arc<Slice>> {
        self.cache().slices.get(&z).cloned()
    }

    /// Cache counters.
    pub fn cache_stats(&self) -> CacheStats {
        let c = self.cache();
        CacheStats {
            held_bytes: c.held_bytes,
            peak_bytes: c.peak_bytes,
            budget_bytes: c.budget_bytes,
            decodes: c.decodes,
            slices: c.slices.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    struct Ramp {
        calls: AtomicU64,
    }

    impl SliceSource for Ramp {
        fn decode(&self, z: SliceIndex) -> Result<SliceData, SliceError> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            Ok(SliceData::U16((0..16u16).map(|i| i + z.0 as u16).collect()))
        }
    }

    fn volume(budget: usize) -> Volume {
        let info = VolumeInfo {
            path: "ramp".into(),
            format: "test".into(),
            width: 4,
            height: 4,
            depth: 10,
            dtype: DType::U16,
            voxel_size: None,
            size_on_disk_bytes: 0,
        };
        Volume::new(info, Box::new(Ramp { calls: AtomicU64::new(0) }), budget)
    }

    #[test]
    fn cache_respects_byte_budget_and_reuses_hits() {
        let v = volume(3 * 32);
        for z in 0..10 {
            let s = v.slice(SliceIndex(z)).unwrap();
            assert_eq!(s.value_at(1, 0), 1.0 + z as f64);
        }
        let st = v.cache_stats();
        assert_eq!(st.decodes, 10);
        assert_eq!(st.slices, 3);
        assert!(st.peak_bytes <= 3 * 32, "{st:?}");
        // The three most recent slices are hits.
        for z in 7..10 {
            v.slice(SliceIndex(z)).unwrap();
        }
        assert_eq!(v.cache_stats().decodes, 10);
        v.slice(SliceIndex(0)).unwrap();
        assert_eq!(v.cache_stats().decodes, 11);
    }

    #[test]
    fn most_recent_slice_kept_even_over_budget() {
        let v = volume(8);
        v.slice(SliceIndex(2)).unwrap();
        v.slice(SliceIndex(2)).unwrap();
        assert_eq!(v.cache_stats().decodes, 1);
        assert_eq!(v.cache_stats().slices, 1);
    }

    #[test]
    fn voxel_size_display() {
        let v = VoxelSize { x_nm: 4.6, y_nm: 4.6, z_nm: Some(50.0) };
        assert_eq!(v.to_string(), "4.6 x 4.6 x 50 nm");
    }
}
