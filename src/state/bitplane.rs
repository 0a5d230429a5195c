//! Dense bit-packed binary images and the raster algorithms of the proofreading tools: round
//! brush strokes, flood fill, lasso/polygon fill, connected-component delete (2D and across
//! slices), hole filling, exact signed distance and shape-based interpolation between slices.
//!
//! One bit per pixel, each row packed into whole `u64` words, so that every algorithm can work a
//! word (64 pixels) at a time and so that another module can convert to and from 64×64 tiles by
//! copying words. Depends on nothing else in this crate (only `std`).
//!
//! Conventions shared by all tools: pixel (x, y) covers the square [x, x+1)×[y, y+1) in
//! continuous pixel coordinates, so its centre is (x + 0.5, y + 0.5). Editing operations return
//! the bounding [`PixelBox`] of the pixels they actually changed (empty when nothing changed), so
//! callers can skip undo entries and re-upload only that region.

use std::collections::BTreeMap;

/// Half-open pixel rectangle [x0, x1) × [y0, y1).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct PixelBox {
    /// First column inside.
    pub x0: usize,
    /// First row inside.
    pub y0: usize,
    /// First column past the right edge.
    pub x1: usize,
    /// First row past the bottom edge.
    pub y1: usize,
}

impl PixelBox {
    /// True when the box holds no pixel (any inverted or zero-sized extent).
    pub fn is_empty(&self) -> bool {
        self.x0 >= self.x1 || self.y0 >= self.y1
    }

    /// Smallest box holding both; an empty operand is ignored, so an empty box is the identity
    /// when accumulating dirty regions.
    pub fn union(self, other: PixelBox) -> PixelBox {
        match (self.is_empty(), other.is_empty()) {
            (true, _) => other,
            (_, true) => self,
            _ => PixelBox {
                x0: self.x0.min(other.x0),
                y0: self.y0.min(other.y0),
                x1: self.x1.max(other.x1),
                y1: self.y1.max(other.y1),
            },
        }
    }

    /// Width in pixels (0 for an inverted box).
    pub fn width(&self) -> usize {
        self.x1.saturating_sub(self.x0)
    }

    /// Height in pixels (0 for an inverted box).
    pub fn height(&self) -> usize {
        self.y1.saturating_sub(self.y0)
    }

    /// The box of the pixels [x0, x1) on row y.
    fn row(y: usize, x0: usize, x1: usize) -> PixelBox {
        PixelBox { x0, y0: y, x1, y1: y + 1 }
    }
}

/// Which neighbours of a pixel count as connected to it.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Connectivity {
    /// Edge neighbours only (left, right, up, down): a diagonal gap does not connect.
    #[default]
    Four,
    /// Edge and corner neighbours: a diagonal gap connects.
    Eight,
}

/// A binary image, one bit per pixel, rows packed into u64 words (bit c of word k of row y =
/// pixel x = 64k + c).
///
/// Invariant: the bits past `width` in the last word of each row are always 0, so whole-word
/// operations (counting, comparing, OR-ing planes) need no masking.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct BitPlane {
    width: usize,
    height: usize,
    words_per_row: usize,
    words: Vec<u64>,
}

/// Bits [lo, hi) of a word, for 0 <= lo < hi <= 64.
fn bit_range(lo: usize, hi: usize) -> u64 {
    let upper = if hi >= 64 { u64::MAX } else { (1u64 << hi) - 1 };
    upper & (u64::MAX << lo)
}

/// Clips an inclusive range of whole pixel indices (held as integral floats) to 0..n and returns
/// it half-open; `None` when nothing of it is inside. NaN bounds give `None`.
fn clip_inclusive(first: f64, last: f64, n: usize) -> Option<(usize, usize)> {
    let max = n.checked_sub(1)? as f64;
    // Written with `!(a <= b)` style tests so that NaN falls on the `None` side.
    if !(first <= last && last >= 0.0 && first <= max) {
        return None;
    }
    // Float-to-int `as` saturates, and both values are within [0, max] here anyway.
    Some((first.max(0.0) as usize, last.min(max) as usize + 1))
}

/// Continuous x-interval, on the horizontal line y = `py`, of the points within `r` of segment
/// a–b (a capsule is convex, so its intersection with a line is one interval).
fn capsule_span(a: [f64; 2], b: [f64; 2], r: f64, py: f64) -> Option<(f64, f64)> {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    // The two end discs.
    for c in [a, b] {
        let dy = py - c[1];
        if dy.abs() <= r {
            let half = (r * r - dy * dy).max(0.0).sqrt();
            lo = lo.min(c[0] - half);
            hi = hi.max(c[0] + half);
        }
    }
    // The body: points whose projection falls on the segment and whose perpendicular distance
    // to its line is at most r. Each condition is an interval in x (or all / nothing).
    let d = [b[0] - a[0], b[1] - a[1]];
    let len2 = d[0] * d[0] + d[1] * d[1];
    if len2 > 0.0 {
        let len = len2.sqrt();
        let e = py - a[1];
        let (mut l, mut h) = (f64::NEG_INFINITY, f64::INFINITY);
        let mut inside = true;
        // |(x - ax)·dy - e·dx| <= r·len
        if d[1] != 0.0 {
            let u = (e * d[0] - r * len) / d[1];
            let v = (e * d[0] + r * len) / d[1];
            l = a[0] + u.min(v);
            h = a[0] + u.max(v);
        } else {
            inside &= (e * d[0]).abs() <= r * len;
        }
        // 0 <= (x - ax)·dx + e·dy <= len²
        if d[0] != 0.0 {
            let u = -e * d[1] / d[0];
            let v = (len2 - e * d[1]) / d[0];
            l = l.max(a[0] + u.min(v));
            h = h.min(a[0] + u.max(v));
        } else {
            let p = e * d[1];
            inside &= (0.0..=len2).contains(&p);
        }
        if inside && l <= h {
            lo = lo.min(l);
            hi = hi.max(h);
        }
    }
    (lo <= hi).then_some((lo, hi))
}

/// Inclusive range of pixel columns in row `y` whose half-open square contains a point of segment
/// a–b, as integral floats. This is the "thin pen" footprint that makes a tiny brush or a lasso
/// outline paint at least the pixels the pointer actually passed over.
fn segment_pixels_in_row(a: [f64; 2], b: [f64; 2], y: f64) -> Option<(f64, f64)> {
    let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
    if dy == 0.0 {
        if a[1].floor() != y {
            return None;
        }
        return Some((a[0].min(b[0]).floor(), a[0].max(b[0]).floor()));
    }
    // Parameters where the segment enters/leaves the row strip y <= py < y + 1; the end at
    // py = y + 1 is open because that line belongs to the next row.
    let t_top = (y - a[1]) / dy;
    let t_bottom = (y + 1.0 - a[1]) / dy;
    let (mut lo, mut lo_open, mut hi, mut hi_open) =
        if dy > 0.0 { (t_top, false, t_bottom, true) } else { (t_bottom, true, t_top, false) };
    if lo < 0.0 {
        (lo, lo_open) = (0.0, false);
    }
    if hi > 1.0 {
        (hi, hi_open) = (1.0, false);
    }
    if lo > hi || (lo == hi && (lo_open || hi_open)) {
        return None;
    }
    let (xa, xb) = (a[0] + lo * dx, a[0] + hi * dx);
    if xa == xb {
        return Some((xa.floor(), xa.floor()));
    }
    let (x_min, x_max, max_open) = if xa < xb { (xa, xb, hi_open) } else { (xb, xa, lo_open) };
    // An open right end at an integer x does not reach into pixel x.
    let last = if max_open { x_max.ceil() - 1.0 } else { x_max.floor() };
    Some((x_min.floor(), last.max(x_min.floor())))
}

/// Brush radius for a napari-style brush size in pixels: half the diameter. Together with the
/// stroke rule of [`BitPlane::stroke_segment`] (pixels whose centre is within the radius, plus
/// the pixels the pointer passes over) size 1 paints exactly the pixel under the pointer, size 3
/// a 3×3 block when centred on a pixel.
pub fn brush_radius_px(diameter_px: u32) -> f32 {
    diameter_px as f32 / 2.0
}

/// 1-D squared Euclidean distance transform (Felzenszwalb & Huttenlocher, lower envelope of
/// parabolas): `d[q] = min_p (q - p)² + f[p]` over the sites p, i.e. the entries with `f >= 0`
/// (negative entries are not sites; with no site at all every output is `i64::MAX`). All in exact
/// integer arithmetic: the parabola intersections are kept as fractions `zn / zd` (zd > 0) and
/// compared by cross-multiplying, which is exact and avoids a division per pixel. `v`, `zn` and
/// `zd` are scratch of length n.
fn edt_1d(f: &[i64], d: &mut [i64], v: &mut [usize], zn: &mut [i64], zd: &mut [i64]) {
    // Number of parabolas on the envelope; parabola j rules from zn[j] / zd[j] (j > 0; the first
    // rules from -inf, and as the leftmost site it can never be removed).
    let mut m = 0usize;
    for (q, &fq) in f.iter().enumerate() {
        // Inside a run of zero sites only the run's ends matter: beyond the run an end is
        // nearer, and within it the answer is 0 (set below). Skipping them halves the work on
        // typical masks.
        let interior_zero = fq == 0 && q > 0 && f[q - 1] == 0 && f.get(q + 1) == Some(&0);
        if fq < 0 || interior_zero {
            continue;
        }
        let lifted = fq + (q * q) as i64;
        let (mut num, mut den) = (0, 1);
        while m > 0 {
            let p = v[m - 1];
            // Intersection of the parabolas of p and q: num / den.
            num = lifted - (f[p] + (p * p) as i64);
            den = 2 * (q - p) as i64;
            if m == 1 || num * zd[m - 1] > zn[m - 1] * den {
                break;
            }
            m -= 1;
        }
        v[m] = q;
        zn[m] = num;
        zd[m] = den;
        m += 1;
    }
    if m == 0 {
        d.fill(i64::MAX);
        return;
    }
    let mut k = 0;
    for (q, dq) in d.iter_mut().enumerate() {
        while k + 1 < m && zn[k + 1] < q as i64 * zd[k + 1] {
            k += 1;
        }
        let p = v[k];
        let off = q.abs_diff(p) as i64;
        *dq = if f[q] == 0 { 0 } else { off * off + f[p] };
    }
}

/// Runs `f` on every item on up to `threads` threads: named scoped helpers and the calling
/// thread take items in turn, so if a helper cannot be started the others (at least the
/// calling thread) simply do its share.
fn par_for_each<T: Send>(items: Vec<T>, threads: usize, f: impl Fn(T) + Sync) {
    if threads <= 1 || items.len() <= 1 {
        items.into_iter().for_each(f);
        return;
    }
    let slots: Vec<std::sync::Mutex<Option<T>>> = items.into_iter().map(|t| std::sync::Mutex::new(Some(t))).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let work = || {
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(slot) = slots.get(i) else { break };
            // A poisoned slot means another worker panicked; the scope re-raises that panic.
            if let Some(item) = slot.lock().ok().and_then(|mut s| s.take()) {
                f(item);
            }
        }
    };
    std::thread::scope(|scope| {
        for _ in 1..threads.min(slots.len()) {
            // A helper that cannot be spawned only leaves its share to the others: this
            // thread works through the queue too, so every item is done either way.
            let _ = std::thread::Builder::new().name("distance-transform".into()).spawn_scoped(scope, work);
        }
        work();
    });
}

impl BitPlane {
    /// An all-unset plane.
    pub fn new(width: usize, height: usize) -> Self {
        let words_per_row = width.div_ceil(64);
        Self { width, height, words_per_row, words: vec![0; words_per_row * height] }
    }

    /// Wraps row-major packed words (`words_per_row = width.div_ceil(64)` per row). Bits past
    /// `width` are cleared, so any tile-copying code may leave garbage there.
    ///
    /// # Panics
    /// When `words.len() != width.div_ceil(64) * height`.
    pub fn from_words(width: usize, height: usize, words: Vec<u64>) -> Self {
        let words_per_row = width.div_ceil(64);
        assert_eq!(
            words.len(),
            words_per_row * height,
            "{width}x{height} plane needs {} words",
            words_per_row * height
        );
        let mut plane = Self { width, height, words_per_row, words };
        plane.clear_tail_bits();
        plane
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// Words per row (`width.div_ceil(64)`); row y starts at word `y * words_per_row`.
    pub fn words_per_row(&self) -> usize {
        self.words_per_row
    }

    /// The packed rows: bit c of word `y * words_per_row + k` is pixel (64k + c, y).
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// Mutable packed rows, for bulk conversions. The caller must keep the bits past `width` in
    /// each row's last word at 0: every algorithm here relies on it.
    pub fn words_mut(&mut self) -> &mut [u64] {
        &mut self.words
    }

    /// Mask of the valid bits of word k of a row (all but the tail of the last word).
    fn valid_bits(&self, k: usize) -> u64 {
        let rem = self.width % 64;
        if k + 1 == self.words_per_row && rem != 0 { (1u64 << rem) - 1 } else { u64::MAX }
    }

    fn clear_tail_bits(&mut self) {
        if self.words_per_row == 0 {
            return;
        }
        let last = self.words_per_row - 1;
        let keep = self.valid_bits(last);
        for row in self.words.chunks_exact_mut(self.words_per_row) {
            row[last] &= keep;
        }
    }

    fn index(&self, x: usize, y: usize) -> (usize, u64) {
        assert!(x < self.width && y < self.height, "pixel ({x}, {y}) outside {}x{}", self.width, self.height);
        (y * self.words_per_row + x / 64, 1u64 << (x % 64))
    }

    /// Whether pixel (x, y) is set.
    ///
    /// # Panics
    /// When (x, y) is outside the plane.
    pub fn get(&self, x: usize, y: usize) -> bool {
        let (i, bit) = self.index(x, y);
        self.words[i] & bit != 0
    }

    /// Sets or clears pixel (x, y).
    ///
    /// # Panics
    /// When (x, y) is outside the plane.
    pub fn set(&mut self, x: usize, y: usize, value: bool) {
        let (i, bit) = self.index(x, y);
        if value {
            self.words[i] |= bit;
        } else {
            self.words[i] &= !bit;
        }
    }

    /// Number of set pixels.
    pub fn count_ones(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// True when no pixel is set.
    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|&w| w == 0)
    }

    /// Bounding box of the set pixels (empty box for an empty plane).
    pub fn bounds(&self) -> PixelBox {
        let mut out = PixelBox::default();
        if self.words_per_row == 0 {
            return out;
        }
        for (y, row) in self.words.chunks_exact(self.words_per_row).enumerate() {
            let Some(first) = row.iter().position(|&w| w != 0) else { continue };
            let last = row.iter().rposition(|&w| w != 0).unwrap_or(first);
            let x0 = first * 64 + row[first].trailing_zeros() as usize;
            let x1 = last * 64 + 64 - row[last].leading_zeros() as usize;
            out = out.union(PixelBox::row(y, x0, x1));
        }
        out
    }

    /// Sets row `y`'s pixels [x0, x1) to `value` with word masks; returns the column range
    /// [first, last) of the pixels that actually changed. Requires x1 <= width.
    fn set_span(&mut self, y: usize, x0: usize, x1: usize, value: bool) -> Option<(usize, usize)> {
        if x0 >= x1 {
            return None;
        }
        let base = y * self.words_per_row;
        let (k0, k1) = (x0 / 64, (x1 - 1) / 64);
        let mut changed: Option<(usize, usize)> = None;
        for k in k0..=k1 {
            let lo = if k == k0 { x0 % 64 } else { 0 };
            let hi = if k == k1 { (x1 - 1) % 64 + 1 } else { 64 };
            let m = bit_range(lo, hi);
            let old = self.words[base + k];
            let new = if value { old | m } else { old & !m };
            let diff = old ^ new;
            if diff != 0 {
                self.words[base + k] = new;
                let a = k * 64 + diff.trailing_zeros() as usize;
                let b = k * 64 + 64 - diff.leading_zeros() as usize;
                changed = Some(changed.map_or((a, b), |(f, _)| (f, b)));
            }
        }
        changed
    }

    /// Like [`Self::set_span`], returning the changed pixels as a box.
    fn paint_span(&mut self, y: usize, x0: usize, x1: usize, value: bool) -> PixelBox {
        self.set_span(y, x0, x1, value).map_or_else(PixelBox::default, |(a, b)| PixelBox::row(y, a, b))
    }

    /// Sets every pixel of `rect` (clipped to the plane) to `value`.
    pub fn fill_rect(&mut self, rect: PixelBox, value: bool) -> PixelBox {
        let (x1, y1) = (rect.x1.min(self.width), rect.y1.min(self.height));
        let mut out = PixelBox::default();
        for y in rect.y0..y1 {
            out = out.union(self.paint_span(y, rect.x0, x1, value));
        }
        out
    }

    /// Paints (`value = true`) or erases (`false`) a round brush of radius `radius_px` swept
    /// from `from` to `to`, in continuous pixel coordinates (points may lie outside the plane;
    /// the result is clipped).
    ///
    /// A pixel is covered when the distance from its centre (x + 0.5, y + 0.5) to the segment
    /// is <= `radius_px`, **or** when the segment itself passes through the pixel's half-open
    /// square [x, x+1)×[y, y+1). The second clause only matters for radii below √½ and
    /// guarantees that even a radius-0 brush paints every pixel the pointer passed over (a
    /// click paints at least the pixel containing it). `from == to` paints one disc. Use
    /// [`brush_radius_px`] to turn a brush size (diameter) into a radius. Negative radii act as
    /// 0; non-finite input paints nothing.
    ///
    /// Works row by row: the covered x-span of each row is computed analytically (capsule ∩
    /// row, union with the segment's own pixels) and set with word masks.
    pub fn stroke_segment(&mut self, from: [f32; 2], to: [f32; 2], radius_px: f32, value: bool) -> PixelBox {
        self.stroke_segment_scaled(from, to, radius_px, [1.0, 1.0], value)
    }

    /// [`Self::stroke_segment`] with distances measured after scaling x by `scale[0]` and y by
    /// `scale[1]`: the brush is an ellipse `radius_px / scale` pixels across and down. In an
    /// orthogonal view, where one row (or column) is a slice `z_aspect` pixels thick, a scale
    /// of `z_aspect` along z keeps the brush round in the sample. The pixels the segment itself
    /// passes through are always painted. A scale that is not finite and positive paints
    /// nothing.
    pub fn stroke_segment_scaled(
        &mut self,
        from: [f32; 2],
        to: [f32; 2],
        radius_px: f32,
        scale: [f32; 2],
        value: bool,
    ) -> PixelBox {
        let mut out = PixelBox::default();
        let finite = from.iter().chain(&to).chain(&scale).all(|c| c.is_finite()) && radius_px.is_finite();
        if !finite || scale.iter().any(|&s| s <= 0.0) {
            return out;
        }
        let (a, b) = ([f64::from(from[0]), f64::from(from[1])], [f64::from(to[0]), f64::from(to[1])]);
        let (sx, sy) = (f64::from(scale[0]), f64::from(scale[1]));
        // The capsule lives in scaled space; the pen (the segment's own pixels) in pixels.
        let (a_s, b_s) = ([a[0] * sx, a[1] * sy], [b[0] * sx, b[1] * sy]);
        let r = f64::from(radius_px).max(0.0);
        let (y_min, y_max) = (a[1].min(b[1]), a[1].max(b[1]));
        // Rows whose centre line meets the capsule, and rows the segment itself crosses.
        let first = ((y_min * sy - r) / sy - 0.5).ceil().min(y_min.floor());
        let last = ((y_max * sy + r) / sy - 0.5).floor().max(y_max.floor());
        let Some((y0, y1)) = clip_inclusive(first, last, self.height) else { return out };
        for y in y0..y1 {
            let yf = y as f64;
            let capsule = capsule_span(a_s, b_s, r, (yf + 0.5) * sy)
                .map(|(l, h)| ((l / sx - 0.5).ceil(), (h / sx - 0.5).floor()));
            let pen = segment_pixels_in_row(a, b, yf);
            for (l, h) in [capsule, pen].into_iter().flatten() {
                if let Some((x0, x1)) = clip_inclusive(l, h, self.width) {
                    out = out.union(self.paint_span(y, x0, x1, value));
                }
            }
        }
        out
    }

    /// The "fillable" bits of word k of row y for a fill writing `value`: pixels that currently
    /// hold the opposite value (never the tail bits).
    fn fillable(&self, y: usize, k: usize, value: bool) -> u64 {
        let w = self.words[y * self.words_per_row + k];
        if value { !w & self.valid_bits(k) } else { w }
    }

    /// First fillable column in [x, hi) of row y.
    fn next_fillable(&self, y: usize, x: usize, hi: usize, value: bool) -> Option<usize> {
        if x >= hi {
            return None;
        }
        let mut k = x / 64;
        let mut bits = self.fillable(y, k, value) & (u64::MAX << (x % 64));
        loop {
            if bits != 0 {
                let pos = k * 64 + bits.trailing_zeros() as usize;
                return (pos < hi).then_some(pos);
            }
            k += 1;
            if k * 64 >= hi {
                return None;
            }
            bits = self.fillable(y, k, value);
        }
    }

    /// End (exclusive) of the fillable run of row y that contains column x.
    fn run_end(&self, y: usize, x: usize, value: bool) -> usize {
        let mut k = x / 64;
        let mut stop = !self.fillable(y, k, value) & (u64::MAX << (x % 64));
        loop {
            if stop != 0 {
                return (k * 64 + stop.trailing_zeros() as usize).min(self.width);
            }
            k += 1;
            if k >= self.words_per_row {
                return self.width;
            }
            stop = !self.fillable(y, k, value);
        }
    }

    /// Start of the fillable run of row y that contains column x.
    fn run_start(&self, y: usize, x: usize, value: bool) -> usize {
        let mut k = x / 64;
        let below = x % 64;
        let mut stop = if below == 0 { 0 } else { !self.fillable(y, k, value) & ((1u64 << below) - 1) };
        loop {
            if stop != 0 {
                return k * 64 + 64 - stop.leading_zeros() as usize;
            }
            if k == 0 {
                return 0;
            }
            k -= 1;
            stop = !self.fillable(y, k, value);
        }
    }

    /// Scanline flood fill. Each stack entry (y, lo, hi) means "every fillable pixel of row y in
    /// [lo, hi) is connected to the region": it is filled together with its whole run, and the
    /// run's neighbourhood in the rows above and below is queued. Filled pixels stop being
    /// fillable, which is what marks them visited.
    fn flood(&mut self, mut stack: Vec<(usize, usize, usize)>, value: bool, connectivity: Connectivity) -> PixelBox {
        let mut out = PixelBox::default();
        let diagonal = usize::from(connectivity == Connectivity::Eight);
        while let Some((y, lo, hi)) = stack.pop() {
            let mut x = lo;
            while x < hi {
                let Some(hit) = self.next_fillable(y, x, hi, value) else { break };
                let (start, end) = (self.run_start(y, hit, value), self.run_end(y, hit, value));
                self.set_span(y, start, end, value);
                out = out.union(PixelBox::row(y, start, end));
                let (a, b) = (start.saturating_sub(diagonal), (end + diagonal).min(self.width));
                if y > 0 {
                    stack.push((y - 1, a, b));
                }
                if y + 1 < self.height {
                    stack.push((y + 1, a, b));
                }
                // Column `end` is not fillable (or is past the edge).
                x = end + 1;
            }
        }
        out
    }

    /// Calls `f(x0, x1)` for every maximal run of set pixels [x0, x1) in row y.
    fn for_each_run(&self, y: usize, mut f: impl FnMut(usize, usize)) {
        let mut x = 0;
        while let Some(start) = self.next_fillable(y, x, self.width, false) {
            let end = self.run_end(y, start, false);
            f(start, end);
            x = end;
        }
    }

    /// Napari's fill bucket: sets to `value` the connected region of pixels holding the opposite
    /// of `value` that contains `seed` = [x, y]. Nothing changes (empty box) when the seed
    /// already holds `value` or lies outside the plane. `connectivity` is that of the region
    /// being filled: filling background with [`Connectivity::Four`] does not leak through a
    /// diagonal gap in a boundary, with [`Connectivity::Eight`] it does.
    ///
    /// Span based (runs found with trailing/leading-zero counts on words), with an explicit
    /// stack, so that filling a 16 Mpx plane costs a few passes over its words.
    pub fn flood_fill(&mut self, seed: [usize; 2], value: bool, connectivity: Connectivity) -> PixelBox {
        let [x, y] = seed;
        if x >= self.width || y >= self.height || self.get(x, y) == value {
            return PixelBox::default();
        }
        self.flood(vec![(y, x, x + 1)], value, connectivity)
    }

    /// The connected component of pixels equal to the seed's value (set or unset), as its own
    /// plane, with its bounding box. A seed outside the plane gives an empty plane and box.
    pub fn region(&self, seed: [usize; 2], connectivity: Connectivity) -> (BitPlane, PixelBox) {
        let mut out = BitPlane::new(self.width, self.height);
        let [x, y] = seed;
        if x >= self.width || y >= self.height {
            return (out, PixelBox::default());
        }
        let mut work = self.clone();
        let bounds = work.flood_fill(seed, !self.get(x, y), connectivity);
        // The component is exactly what the fill flipped.
        for ((o, w), s) in out.words.iter_mut().zip(&work.words).zip(&self.words) {
            *o = w ^ s;
        }
        (out, bounds)
    }

    /// Clears the set component containing `seed` = [x, y]; nothing when the seed is unset or
    /// outside.
    pub fn delete_component(&mut self, seed: [usize; 2], connectivity: Connectivity) -> PixelBox {
        self.flood_fill(seed, false, connectivity)
    }

    /// Classic binary hole filling: sets every unset pixel that is not 4-connected (through
    /// unset pixels) to the image border. Regions open to the border ("bays") stay unset.
    pub fn fill_holes(&mut self) -> PixelBox {
        let (w, h) = (self.width, self.height);
        if w == 0 || h == 0 {
            return PixelBox::default();
        }
        // Mark the background reachable from the border on a copy; whatever stays unset there
        // is a hole.
        let mut outside = self.clone();
        let mut seeds = vec![(0, 0, w), (h - 1, 0, w)];
        for y in 1..h.saturating_sub(1) {
            seeds.push((y, 0, 1));
            seeds.push((y, w - 1, w));
        }
        outside.flood(seeds, true, Connectivity::Four);
        let mut holes = outside;
        for k in 0..self.words_per_row {
            let valid = self.valid_bits(k);
            for y in 0..h {
                let i = y * self.words_per_row + k;
                holes.words[i] = !holes.words[i] & valid;
            }
        }
        for (s, hole) in self.words.iter_mut().zip(&holes.words) {
            *s |= hole;
        }
        holes.bounds()
    }

    /// Lasso / polygon fill of the closed polygon through `points` (continuous pixel
    /// coordinates; the last point connects back to the first).
    ///
    /// Rule: a pixel is included when its centre is inside by the even-odd rule (crossings of
    /// the horizontal line through the centres, half-open so a centre exactly on the left edge
    /// of a span is in and on the right edge is out), **or** when the closed outline passes
    /// through the pixel's half-open square (the outline drawn with a radius-0 brush, see
    /// [`Self::stroke_segment`]). The second clause makes a thin lasso still paint the pixels
    /// it was drawn over. Fewer than 3 points, all points on one line (no area) or non-finite
    /// coordinates change nothing.
    pub fn fill_polygon(&mut self, points: &[[f32; 2]], value: bool) -> PixelBox {
        let mut out = PixelBox::default();
        let n = points.len();
        if n < 3 || !points.iter().flatten().all(|c| c.is_finite()) {
            return out;
        }
        let p: Vec<[f64; 2]> = points.iter().map(|q| [f64::from(q[0]), f64::from(q[1])]).collect();
        // Degenerate: all points on one line (a bowtie has zero signed area yet encloses pixels,
        // so collinearity is the test, not the area).
        let Some(q) = p.iter().find(|q| **q != p[0]) else { return out };
        let (ux, uy) = (q[0] - p[0][0], q[1] - p[0][1]);
        if p.iter().all(|r| ux * (r[1] - p[0][1]) == uy * (r[0] - p[0][0])) {
            return out;
        }
        // Non-horizontal edges with their lower-y end first, sorted by that y, for an active
        // edge list: each row only looks at the edges spanning it.
        let mut edges: Vec<([f64; 2], [f64; 2])> = (0..n)
            .filter_map(|i| {
                let (a, b) = (p[i], p[(i + 1) % n]);
                match a[1].partial_cmp(&b[1]) {
                    Some(std::cmp::Ordering::Less) => Some((a, b)),
                    Some(std::cmp::Ordering::Greater) => Some((b, a)),
                    _ => None,
                }
            })
            .collect();
        edges.sort_by(|e, f| e.0[1].total_cmp(&f.0[1]));
        let y_min = p.iter().map(|q| q[1]).fold(f64::INFINITY, f64::min);
        let y_max = p.iter().map(|q| q[1]).fold(f64::NEG_INFINITY, f64::max);
        // Rows whose centre line py = y + 0.5 lies in [y_min, y_max).
        if let Some((y0, y1)) = clip_inclusive((y_min - 0.5).ceil(), (y_max - 0.5).ceil() - 1.0, self.height) {
            let (mut next, mut active, mut xs) = (0usize, Vec::new(), Vec::new());
            for y in y0..y1 {
                let py = y as f64 + 0.5;
                while next < edges.len() && edges[next].0[1] <= py {
                    active.push(edges[next]);
                    next += 1;
                }
                active.retain(|e| e.1[1] > py);
                xs.clear();
                xs.extend(active.iter().map(|(a, b)| a[0] + (py - a[1]) * (b[0] - a[0]) / (b[1] - a[1])));
                xs.sort_by(f64::total_cmp);
                for pair in xs.chunks_exact(2) {
                    // Centres x + 0.5 in [left, right).
                    let (first, last) = ((pair[0] - 0.5).ceil(), (pair[1] - 0.5).ceil() - 1.0);
                    if let Some((x0, x1)) = clip_inclusive(first, last, self.width) {
                        out = out.union(self.paint_span(y, x0, x1, value));
                    }
                }
            }
        }
        for i in 0..n {
            out = out.union(self.stroke_segment(points[i], points[(i + 1) % n], 0.0, value));
        }
        out
    }

    /// Exact Euclidean signed distance, row-major, in pixels between pixel centres:
    /// for an unset pixel `d_set - 0.5`, for a set pixel `0.5 - d_unset`, where `d_set` /
    /// `d_unset` is the distance to the nearest set / unset pixel. So set pixels are <= -0.5,
    /// unset ones >= 0.5, `sdf < 0` reproduces the plane exactly, and the zero level lies half
    /// way between pixel centres, which makes linear blending of two fields symmetric. An empty
    /// plane gives `width + height` everywhere and a full one `-(width + height)`: larger in
    /// magnitude than any real distance, and finite so blends never produce NaN.
    ///
    /// Two passes (Felzenszwalb–Huttenlocher): per column, the distance to the nearest pixel of
    /// the opposite value; then per row a 1-D lower-envelope transform for each sign, in exact
    /// integer arithmetic. Planes of a megapixel or more spread both passes over a few scoped
    /// threads (std only), since interpolating 4096² slices is interactive.
    pub fn signed_distance(&self) -> Vec<f32> {
        let (w, h) = (self.width, self.height);
        let n = w * h;
        let ones = self.count_ones();
        let big = (w + h) as f32;
        if ones == 0 {
            return vec![big; n];
        }
        if ones == n as u64 {
            return vec![-big; n];
        }
        let threads = if n >= 1 << 20 { std::thread::available_parallelism().map_or(1, |t| t.get().min(8)) } else { 1 };
        let wpr = self.words_per_row;
        // Column pass, per block of 64 columns (one word per row), so blocks are independent:
        // g holds block after block, each row-major over its own columns.
        let mut g = vec![0u32; n];
        let blocks: Vec<(usize, &mut [u32])> = g.chunks_mut(64 * h).enumerate().collect();
        par_for_each(blocks, threads, |(b, gb)| self.column_distances(b, gb));
        // Row pass.
        let mut out = vec![0f32; n];
        let rows_per_item = (1 << 16) / w.max(1) + 1;
        let items: Vec<(usize, &mut [f32])> = out.chunks_mut(rows_per_item * w).enumerate().collect();
        par_for_each(items, threads, |(i, chunk)| {
            let (mut f_set, mut f_unset) = (vec![0i64; w], vec![0i64; w]);
            let (mut d_set, mut d_unset) = (vec![0i64; w], vec![0i64; w]);
            let (mut v, mut zn, mut zd) = (vec![0usize; w], vec![0i64; w], vec![0i64; w]);
            for (r, out_row) in chunk.chunks_exact_mut(w).enumerate() {
                let y = i * rows_per_item + r;
                let words = &self.words[y * wpr..(y + 1) * wpr];
                // Sites for "nearest set": set pixels at 0, unset ones at g² (none when their
                // column is all unset); the other way round for "nearest unset".
                for (b, &word) in words.iter().enumerate() {
                    let cw = (w - 64 * b).min(64);
                    let gs = &g[b * 64 * h + y * cw..b * 64 * h + (y + 1) * cw];
                    for (c, &gv) in gs.iter().enumerate() {
                        let g2 = if gv == u32::MAX { -1 } else { i64::from(gv) * i64::from(gv) };
                        let x = 64 * b + c;
                        (f_set[x], f_unset[x]) = if (word >> c) & 1 != 0 { (0, g2) } else { (g2, 0) };
                    }
                }
                edt_1d(&f_set, &mut d_set, &mut v, &mut zn, &mut zd);
                edt_1d(&f_unset, &mut d_unset, &mut v, &mut zn, &mut zd);
                // Both are finite here: the plane has set and unset pixels, and each row's
                // transform sees every column's nearest pixel of either value.
                for (x, o) in out_row.iter_mut().enumerate() {
                    *o = if f_set[x] == 0 {
                        (0.5 - (d_unset[x] as f64).sqrt()) as f32
                    } else {
                        ((d_set[x] as f64).sqrt() - 0.5) as f32
                    };
                }
            }
        });
        out
    }

    /// Column pass of [`Self::signed_distance`] for the 64-column block `b`: `gb` (row-major over
    /// the block's columns) receives the vertical distance to the nearest pixel of the opposite
    /// value in the same column, u32::MAX when the column holds one value only.
    fn column_distances(&self, b: usize, gb: &mut [u32]) {
        let (h, wpr) = (self.height, self.words_per_row);
        let cw = gb.len() / h;
        let word = |y: usize| self.words[y * wpr + b];
        gb[..cw].fill(u32::MAX);
        // Downwards: 1 below a change of value, else one more than the pixel above.
        for y in 1..h {
            let changed = word(y) ^ word(y - 1);
            let (above, here) = gb[(y - 1) * cw..(y + 1) * cw].split_at_mut(cw);
            for (c, (g, &a)) in here.iter_mut().zip(above.iter()).enumerate() {
                *g = if (changed >> c) & 1 != 0 { 1 } else { a.saturating_add(1) };
            }
        }
        // Upwards: the pixel below, one further, may be nearer. (Its value already mixes both
        // directions; the downward part is never the smaller one, so the min is exact.)
        for y in (0..h - 1).rev() {
            let changed = word(y) ^ word(y + 1);
            let (here, below) = gb[y * cw..(y + 2) * cw].split_at_mut(cw);
            for (c, (g, &d)) in here.iter_mut().zip(below.iter()).enumerate() {
                *g = if (changed >> c) & 1 != 0 { 1 } else { (*g).min(d.saturating_add(1)) };
            }
        }
    }

    /// Plane of the pixels where `(1 - t)·fa + t·fb < 0`.
    fn threshold_blend(width: usize, height: usize, fa: &[f32], fb: &[f32], t: f32) -> BitPlane {
        let mut out = BitPlane::new(width, height);
        for y in 0..height {
            for x in 0..width {
                let i = y * width + x;
                if (1.0 - t) * fa[i] + t * fb[i] < 0.0 {
                    out.words[y * out.words_per_row + x / 64] |= 1u64 << (x % 64);
                }
            }
        }
        out
    }

    /// The two signed-distance fields blended by interpolation. A uniform (empty or full) plane
    /// facing a non-uniform one gets a constant field scaled to the other shape, so the shape
    /// erodes or grows evenly and is gone (or covers the plane) at the midpoint rather than
    /// right next to the non-uniform end; see [`interpolate`].
    fn interpolation_fields(a: &BitPlane, b: &BitPlane) -> (Vec<f32>, Vec<f32>) {
        assert_eq!((a.width, a.height), (b.width, b.height), "interpolated planes differ in size");
        let (mut fa, mut fb) = (a.signed_distance(), b.signed_distance());
        let area = (a.width * a.height) as u64;
        let uniform = |p: &BitPlane| {
            let c = p.count_ones();
            (c == 0 || c == area).then_some(c == 0)
        };
        let rescale = |field: &mut Vec<f32>, empty: bool, other: &[f32]| {
            *field = if empty {
                // Deepest interior point of the other shape: it disappears exactly at t = 0.5.
                vec![-other.iter().copied().fold(0.0, f32::min); other.len()]
            } else {
                // Farthest exterior point: covered for every t > 0.5.
                vec![-other.iter().copied().fold(0.0, f32::max); other.len()]
            };
        };
        match (uniform(a), uniform(b)) {
            (Some(empty), None) => rescale(&mut fa, empty, &fb),
            (None, Some(empty)) => rescale(&mut fb, empty, &fa),
            _ => {}
        }
        (fa, fb)
    }

    /// The union of the set components of `self` that contain at least one pixel of `seeds`
    /// (which must be a subset of `self`).
    fn components_touching(&self, seeds: &BitPlane, connectivity: Connectivity) -> BitPlane {
        let mut stack = Vec::new();
        for y in 0..seeds.height {
            seeds.for_each_run(y, |x0, x1| stack.push((y, x0, x1)));
        }
        let mut work = self.clone();
        work.flood(stack, false, connectivity);
        for (w, s) in work.words.iter_mut().zip(&self.words) {
            *w ^= s;
        }
        work
    }
}

/// Shape-based interpolation between two slices' masks: set where
/// `(1 - t)·sdf_a + t·sdf_b < 0` with the fields of [`BitPlane::signed_distance`]. `t = 0` gives
/// exactly `a`, `t = 1` exactly `b`. When exactly one side is empty, the other shape erodes
/// uniformly and vanishes at `t = 0.5` (the object ends half way between the slices); when
/// exactly one side is full, the other grows and covers the plane for `t > 0.5`.
///
/// # Panics
/// When the planes differ in size.
pub fn interpolate(a: &BitPlane, b: &BitPlane, t: f32) -> BitPlane {
    let (fa, fb) = BitPlane::interpolation_fields(a, b);
    BitPlane::threshold_blend(a.width, a.height, &fa, &fb, t)
}

/// The `n_between` evenly spaced interpolations strictly between `a` and `b`
/// (t = k / (n_between + 1) for k = 1..=n_between), computing both distance fields once.
///
/// # Panics
/// When the planes differ in size.
pub fn interpolate_many(a: &BitPlane, b: &BitPlane, n_between: usize) -> Vec<BitPlane> {
    if n_between == 0 {
        return Vec::new();
    }
    let (fa, fb) = BitPlane::interpolation_fields(a, b);
    let steps = (n_between + 1) as f32;
    (1..=n_between).map(|k| BitPlane::threshold_blend(a.width, a.height, &fa, &fb, k as f32 / steps)).collect()
}

/// The 3-D connected component through the seed (click-to-delete across slices).
///
/// `slice_mask(z)` returns the current mask of slice z (`None` when the slice has none); it
/// is called at most once per slice, and only for slices the component reaches or borders.
/// Starting from the 2-D component (with `connectivity`) of the set seed pixel
/// [x, y, z], the component spreads to slice z ± 1 through pixels set at the same (x, y)
/// (face connectivity between slices), takes the full 2-D components of those pixels there,
/// and repeats until nothing grows; it may go back and forth between slices. Returns, in
/// increasing z, every touched slice with the plane of its pixels in the component; empty
/// when the seed is outside or unset.
///
/// # Panics
/// When a slice's mask differs in size from the seed slice's.
pub fn component_3d(
    slice_mask: &mut dyn FnMut(usize) -> Option<BitPlane>,
    depth: usize,
    seed: [usize; 3],
    connectivity: Connectivity,
) -> Vec<(usize, BitPlane)> {
    let [sx, sy, sz] = seed;
    if sz >= depth {
        return Vec::new();
    }
    let Some(first) = slice_mask(sz) else { return Vec::new() };
    if sx >= first.width || sy >= first.height || !first.get(sx, sy) {
        return Vec::new();
    }
    let (w, h) = (first.width, first.height);
    let mut masks: BTreeMap<usize, Option<BitPlane>> = BTreeMap::new();
    let mut comp: BTreeMap<usize, BitPlane> = BTreeMap::new();
    comp.insert(sz, first.region([sx, sy], connectivity).0);
    masks.insert(sz, Some(first));
    let mut todo = vec![sz];
    while let Some(z) = todo.pop() {
        for nz in [z.checked_sub(1), Some(z + 1).filter(|&n| n < depth)].into_iter().flatten() {
            let Some(mask) = masks.entry(nz).or_insert_with(|| slice_mask(nz)).as_ref() else { continue };
            assert_eq!((mask.width, mask.height), (w, h), "slice {nz} mask differs in size from slice {sz}");
            // New overlap: set on slice nz, in the component on z, not yet in it on nz.
            let mut seeds = mask.clone();
            let here = comp.get(&nz);
            for (i, s) in seeds.words.iter_mut().enumerate() {
                *s &= comp[&z].words[i] & !here.map_or(0, |c| c.words[i]);
            }
            if seeds.is_empty() {
                continue;
            }
            let grown = mask.components_touching(&seeds, connectivity);
            let entry = comp.entry(nz).or_insert_with(|| BitPlane::new(w, h));
            for (c, g) in entry.words.iter_mut().zip(&grown.words) {
                *c |= g;
            }
            todo.push(nz);
        }
    }
    comp.into_iter().collect()
}

#[cfg(test)]
mod scaled_brush_tests {
    use super::*;

    #[test]
    fn a_scaled_brush_is_an_ellipse_and_scale_one_is_the_plain_brush() {
        // Radius 3 px across; rows 3 px thick (scale 3 down): one row above and below.
        let mut p = BitPlane::new(11, 7);
        p.stroke_segment_scaled([5.5, 3.5], [5.5, 3.5], 3.0, [1.0, 3.0], true);
        let rows: Vec<String> =
            (0..7).map(|y| (0..11).map(|x| if p.get(x, y) { '#' } else { '.' }).collect()).collect();
        assert_eq!(
            rows,
            ["...........", "...........", ".....#.....", "..#######..", ".....#.....", "...........", "..........."]
        );
        // Columns 2 px thick across: radius 3 → 1 column either side, 3 rows either side.
        let mut q = BitPlane::new(7, 9);
        q.stroke_segment_scaled([3.5, 4.5], [3.5, 4.5], 3.0, [2.0, 1.0], true);
        let widths: Vec<u64> = (0..9).map(|y| (0..7).filter(|&x| q.get(x, y)).count() as u64).collect();
        assert_eq!(widths, [0, 1, 3, 3, 3, 3, 3, 1, 0]);
        // Scale 1 is exactly the plain brush.
        let (mut u, mut v) = (BitPlane::new(40, 30), BitPlane::new(40, 30));
        u.stroke_segment([3.2, 4.7], [31.9, 22.1], 4.5, true);
        v.stroke_segment_scaled([3.2, 4.7], [31.9, 22.1], 4.5, [1.0, 1.0], true);
        assert_eq!(u, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plane(rows: &[&str]) -> BitPlane {
        let (w, h) = (rows.first().map_or(0, |r| r.len()), rows.len());
        let mut p = BitPlane::new(w, h);
        for (y, row) in rows.iter().enumerate() {
            assert_eq!(row.len(), w, "ragged ASCII plane");
            for (x, c) in row.chars().enumerate() {
                p.set(x, y, c == '#');
            }
        }
        p
    }

    fn ascii(p: &BitPlane) -> Vec<String> {
        (0..p.height()).map(|y| (0..p.width()).map(|x| if p.get(x, y) { '#' } else { '.' }).collect()).collect()
    }

    fn assert_tail_clear(p: &BitPlane) {
        if p.words_per_row() == 0 {
            return;
        }
        let last = p.words_per_row() - 1;
        let keep = p.valid_bits(last);
        for row in p.words().chunks_exact(p.words_per_row()) {
            assert_eq!(row[last] & !keep, 0, "tail bits set");
        }
    }

    fn bx(x0: usize, y0: usize, x1: usize, y1: usize) -> PixelBox {
        PixelBox { x0, y0, x1, y1 }
    }

    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            self.0 >> 33
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    fn random_plane(rng: &mut Lcg, w: usize, h: usize, percent: u64) -> BitPlane {
        let mut p = BitPlane::new(w, h);
        for y in 0..h {
            for x in 0..w {
                p.set(x, y, rng.next() % 100 < percent);
            }
        }
        p
    }

    /// Bounding box of the pixels that differ between two planes.
    fn diff_box(a: &BitPlane, b: &BitPlane) -> PixelBox {
        let mut d = a.clone();
        for (x, y) in d.words.iter_mut().zip(&b.words) {
            *x ^= y;
        }
        d.bounds()
    }

    #[test]
    fn layout_accessors_and_counts() {
        let mut p = BitPlane::new(130, 3);
        assert_eq!(p.words_per_row(), 3);
        assert_eq!(p.words().len(), 9);
        assert!(p.is_empty());
        p.set(65, 1, true);
        p.set(129, 2, true);
        assert_eq!(p.words()[3 + 1], 1 << 1);
        assert_eq!(p.words()[6 + 2], 1 << 1);
        assert!(p.get(65, 1) && !p.get(64, 1));
        assert_eq!(p.count_ones(), 2);
        assert_eq!(p.bounds(), bx(65, 1, 130, 3));
        p.set(65, 1, false);
        assert_eq!(p.count_ones(), 1);
        let q = BitPlane::from_words(70, 2, vec![u64::MAX, u64::MAX, 0, 1 << 63]);
        assert_eq!(q.count_ones(), 70);
        assert_tail_clear(&q);
        assert_eq!(BitPlane::new(0, 5).signed_distance().len(), 0);
    }

    #[test]
    fn pixel_box_union_and_extent() {
        let e = PixelBox::default();
        assert!(e.is_empty());
        assert_eq!(e.union(bx(1, 2, 3, 5)), bx(1, 2, 3, 5));
        assert_eq!(bx(1, 2, 3, 5).union(e), bx(1, 2, 3, 5));
        let u = bx(1, 2, 3, 5).union(bx(0, 4, 2, 9));
        assert_eq!(u, bx(0, 2, 3, 9));
        assert_eq!((u.width(), u.height()), (3, 7));
        assert_eq!(bx(5, 0, 2, 1).width(), 0);
    }

    #[test]
    fn fill_rect_across_words_reports_changes() {
        let mut p = BitPlane::new(130, 70);
        assert_eq!(p.fill_rect(bx(60, 10, 200, 12), true), bx(60, 10, 130, 12));
        assert_eq!(p.count_ones(), 2 * 70);
        assert_tail_clear(&p);
        assert_eq!(p.fill_rect(bx(60, 10, 130, 12), true), PixelBox::default());
        assert_eq!(p.fill_rect(bx(0, 11, 100, 40), false), bx(60, 11, 100, 12));
        assert_eq!(p.count_ones(), 70 + 30);
    }

    #[test]
    fn brush_discs_by_diameter() {
        let disc = |d: u32, c: [f32; 2]| {
            let mut p = BitPlane::new(7, 7);
            p.stroke_segment(c, c, brush_radius_px(d), true);
            ascii(&p)
        };
        let one = [".......", ".......", ".......", "...#...", ".......", ".......", "......."];
        assert_eq!(disc(1, [3.5, 3.5]), one);
        // Off-centre click: still exactly the containing pixel.
        assert_eq!(disc(1, [3.1, 3.9]), one);
        assert_eq!(disc(0, [3.99, 3.0]), one);
        assert_eq!(disc(2, [3.5, 3.5]), [".......", ".......", "...#...", "..###..", "...#...", ".......", "......."]);
        assert_eq!(disc(3, [3.5, 3.5]), [".......", ".......", "..###..", "..###..", "..###..", ".......", "......."]);
        assert_eq!(disc(4, [3.5, 3.5]), [".......", "...#...", "..###..", ".#####.", "..###..", "...#...", "......."]);
        assert_eq!(disc(5, [3.5, 3.5]), [".......", "..###..", ".#####.", ".#####.", ".#####.", "..###..", "......."]);
        let mut p = BitPlane::new(7, 7);
        assert_eq!(p.stroke_segment([3.5, 3.5], [3.5, 3.5], 1.5, true), bx(2, 2, 5, 5));
    }

    #[test]
    fn segment_capsule_and_erase() {
        let mut p = BitPlane::new(8, 5);
        let b = p.stroke_segment([1.5, 2.5], [5.5, 2.5], 1.0, true);
        assert_eq!(ascii(&p), ["........", ".#####..", "#######.", ".#####..", "........"]);
        assert_eq!(b, bx(0, 1, 7, 4));
        // Thin diagonal pen: exactly the pixels passed over.
        let mut q = BitPlane::new(5, 4);
        q.stroke_segment([0.2, 0.5], [4.2, 2.5], 0.0, true);
        assert_eq!(ascii(&q), ["##...", ".###.", "...##", "....."]);
        // Erase a vertical capsule through the painted one.
        let b = p.stroke_segment([3.5, -3.0], [3.5, 9.0], 0.5, false);
        assert_eq!(ascii(&p), ["........", ".##.##..", "###.###.", ".##.##..", "........"]);
        assert_eq!(b, bx(3, 1, 4, 4));
        // Erasing where nothing is set changes nothing.
        assert_eq!(p.stroke_segment([3.5, 0.5], [3.5, 4.5], 0.5, false), PixelBox::default());
        assert_eq!(p.stroke_segment([f32::NAN, 0.5], [3.5, 4.5], 2.0, true), PixelBox::default());
    }

    #[test]
    fn strokes_clip_at_borders() {
        let mut p = BitPlane::new(6, 4);
        assert_eq!(p.stroke_segment([-3.0, 1.5], [9.0, 1.5], 1.0, true), bx(0, 0, 6, 3));
        assert_eq!(ascii(&p), ["######", "######", "######", "......"]);
        let mut p = BitPlane::new(6, 5);
        assert_eq!(p.stroke_segment([-0.5, 2.5], [-0.5, 2.5], 1.5, true), bx(0, 1, 1, 4));
        assert_eq!(ascii(&p), ["......", "#.....", "#.....", "#.....", "......"]);
        assert_eq!(p.stroke_segment([-10.0, -10.0], [-3.0, -20.0], 2.0, true), PixelBox::default());
        assert_eq!(p.stroke_segment([20.0, 1.0], [30.0, 4.0], 3.0, true), PixelBox::default());
        // Wide plane, stroke over the right border and across word boundaries.
        let mut w = BitPlane::new(130, 70);
        w.stroke_segment([10.0, 35.0], [200.0, 35.0], 20.0, true);
        assert_tail_clear(&w);
        assert!(w.get(129, 35) && w.get(10, 15) && !w.get(10, 14) && w.get(63, 54) && !w.get(63, 55));
        // Row 35: the end disc reaches past the left border; row 15 (centre 19.5 above the
        // axis): the disc's chord starts at 10 - sqrt(400 - 19.5²) = 5.56, first centre 6.5.
        assert_eq!((0..130).filter(|&x| w.get(x, 35)).count(), 130);
        assert_eq!((0..130).filter(|&x| w.get(x, 15)).count(), 124);
        assert_eq!((0..70).filter(|&y| w.get(129, y)).count(), 40);
    }

    #[test]
    fn flood_fill_ring_four_and_eight() {
        let ring = [".......", ".####..", ".#..#..", ".#..#..", ".###...", "......."];
        let mut p = plane(&ring);
        assert_eq!(p.flood_fill([2, 2], true, Connectivity::Four), bx(2, 2, 4, 4));
        assert_eq!(ascii(&p), [".......", ".####..", ".####..", ".####..", ".###...", "......."]);
        let mut p = plane(&ring);
        assert_eq!(p.flood_fill([2, 2], true, Connectivity::Eight), bx(0, 0, 7, 6));
        assert_eq!(p.count_ones(), 42);
        // Seed already holding the value, or outside: nothing.
        let mut p = plane(&ring);
        assert_eq!(p.flood_fill([1, 1], true, Connectivity::Four), PixelBox::default());
        assert_eq!(p.flood_fill([9, 1], true, Connectivity::Four), PixelBox::default());
        assert_eq!(ascii(&p), ring);
        // Erasing fill removes the ring (value = false fills set pixels).
        assert_eq!(p.flood_fill([1, 1], false, Connectivity::Four), bx(1, 1, 5, 5));
        assert!(p.is_empty());
    }

    #[test]
    fn flood_fill_whole_wide_plane() {
        let mut p = BitPlane::new(130, 70);
        assert_eq!(p.flood_fill([129, 69], true, Connectivity::Four), bx(0, 0, 130, 70));
        assert_eq!(p.count_ones(), 130 * 70);
        assert_tail_clear(&p);
        let mut p = BitPlane::new(128, 3);
        p.flood_fill([127, 0], true, Connectivity::Eight);
        assert_eq!(p.count_ones(), 128 * 3);
    }

    fn naive_fill(p: &BitPlane, seed: [usize; 2], value: bool, c: Connectivity) -> BitPlane {
        let mut out = p.clone();
        if out.get(seed[0], seed[1]) == value {
            return out;
        }
        let mut queue = vec![seed];
        out.set(seed[0], seed[1], value);
        while let Some([x, y]) = queue.pop() {
            for dy in -1i64..=1 {
                for dx in -1i64..=1 {
                    if (dx == 0 && dy == 0) || (c == Connectivity::Four && dx != 0 && dy != 0) {
                        continue;
                    }
                    let (nx, ny) = (x as i64 + dx, y as i64 + dy);
                    if nx < 0 || ny < 0 || nx >= p.width() as i64 || ny >= p.height() as i64 {
                        continue;
                    }
                    let (nx, ny) = (nx as usize, ny as usize);
                    if out.get(nx, ny) != value {
                        out.set(nx, ny, value);
                        queue.push([nx, ny]);
                    }
                }
            }
        }
        out
    }

    #[test]
    fn flood_fill_matches_naive_bfs() {
        let mut rng = Lcg(7);
        for &(w, h) in &[(7, 5), (64, 3), (65, 9), (1, 40), (130, 70), (200, 150)] {
            for percent in [30, 45, 60] {
                for c in [Connectivity::Four, Connectivity::Eight] {
                    for value in [true, false] {
                        let p = random_plane(&mut rng, w, h, percent);
                        let seed = [rng.below(w), rng.below(h)];
                        let expected = naive_fill(&p, seed, value, c);
                        let mut got = p.clone();
                        let b = got.flood_fill(seed, value, c);
                        assert_eq!(got, expected, "{w}x{h} {percent}% {c:?} {value}");
                        assert_eq!(b, diff_box(&p, &expected));
                        assert_tail_clear(&got);
                        let (comp, rb) = p.region(seed, c);
                        if p.get(seed[0], seed[1]) != value {
                            assert_eq!(rb, b);
                            assert_eq!(comp.count_ones(), got.count_ones().abs_diff(p.count_ones()));
                        } else {
                            assert!(b.is_empty() && comp.get(seed[0], seed[1]));
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn region_and_delete_component_four_vs_eight() {
        let rows = ["##....", "##....", "..##..", "..##.#", "......"];
        let p = plane(&rows);
        let (comp, b) = p.region([0, 0], Connectivity::Four);
        assert_eq!(ascii(&comp), ["##....", "##....", "......", "......", "......"]);
        assert_eq!(b, bx(0, 0, 2, 2));
        let (comp, _) = p.region([0, 0], Connectivity::Eight);
        assert_eq!(ascii(&comp), ["##....", "##....", "..##..", "..##..", "......"]);
        // Region of unset pixels works too.
        let (bg, b) = p.region([5, 4], Connectivity::Four);
        assert_eq!(bg.count_ones(), 30 - 9);
        assert_eq!(b, bx(0, 0, 6, 5));
        let mut q = p.clone();
        assert_eq!(q.delete_component([3, 3], Connectivity::Four), bx(2, 2, 4, 4));
        assert_eq!(ascii(&q), ["##....", "##....", "......", ".....#", "......"]);
        let mut q = p.clone();
        assert_eq!(q.delete_component([3, 3], Connectivity::Eight), bx(0, 0, 4, 4));
        assert_eq!(ascii(&q), ["......", "......", "......", ".....#", "......"]);
        assert_eq!(q.delete_component([0, 4], Connectivity::Eight), PixelBox::default());
        assert_eq!(ascii(&q), ["......", "......", "......", ".....#", "......"]);
    }

    #[test]
    fn fill_holes_keeps_bays() {
        let mut p =
            plane(&["..........", ".#####....", ".#...#.##.", ".#.#.#.#..", ".#...#.##.", ".####.....", ".........."]);
        assert_eq!(p.fill_holes(), bx(2, 2, 5, 5));
        assert_eq!(
            ascii(&p),
            ["..........", ".#####....", ".#####.##.", ".#####.#..", ".#####.##.", ".####.....", ".........."]
        );
        assert_eq!(p.fill_holes(), PixelBox::default());
        // Wide plane: a ring across word boundaries, plus a bay on the right border.
        let mut w = BitPlane::new(130, 70);
        w.fill_rect(bx(50, 10, 80, 40), true);
        w.fill_rect(bx(52, 12, 78, 38), false);
        w.fill_rect(bx(100, 50, 130, 60), true);
        w.fill_rect(bx(110, 52, 130, 58), false);
        assert_eq!(w.fill_holes(), bx(52, 12, 78, 38));
        assert_eq!(w.count_ones(), 30 * 30 + 30 * 10 - 20 * 6);
        assert_tail_clear(&w);
        assert_eq!(BitPlane::new(0, 0).fill_holes(), PixelBox::default());
    }

    #[test]
    fn polygon_square_triangle_bowtie() {
        let mut p = BitPlane::new(6, 6);
        let b = p.fill_polygon(&[[1.5, 1.5], [4.5, 1.5], [4.5, 4.5], [1.5, 4.5]], true);
        assert_eq!(ascii(&p), ["......", ".####.", ".####.", ".####.", ".####.", "......"]);
        assert_eq!(b, bx(1, 1, 5, 5));
        // Vertices on pixel corners: the outline runs along the left/top edges of the pixels
        // right of and below it, so those pixels are included too (half-open pixels).
        let mut p = BitPlane::new(7, 6);
        p.fill_polygon(&[[1.0, 1.0], [5.0, 1.0], [5.0, 4.0], [1.0, 4.0]], true);
        assert_eq!(ascii(&p), [".......", ".#####.", ".#####.", ".#####.", ".#####.", "......."]);
        let mut p = BitPlane::new(8, 5);
        p.fill_polygon(&[[0.5, 0.5], [6.5, 0.5], [0.5, 3.5]], true);
        assert_eq!(ascii(&p), ["#######.", "######..", "####....", "##......", "........"]);
        let mut p = BitPlane::new(8, 5);
        p.fill_polygon(&[[0.5, 0.5], [6.5, 4.5], [6.5, 0.5], [0.5, 4.5]], true);
        assert_eq!(ascii(&p), ["##...##.", "###.###.", "#######.", "###.###.", "##...##."]);
        // Erase with a polygon.
        assert_eq!(p.fill_polygon(&[[-1.0, -1.0], [20.0, -1.0], [20.0, 0.9], [-1.0, 0.9]], false), bx(0, 0, 7, 1));
        assert_eq!(ascii(&p)[0], "........");
    }

    #[test]
    fn polygon_even_odd_star_thin_and_degenerate() {
        let mut p = BitPlane::new(52, 52);
        let star: Vec<[f32; 2]> = (0..5)
            .map(|i| {
                let a = std::f32::consts::TAU * (i * 2 % 5) as f32 / 5.0 - std::f32::consts::FRAC_PI_2;
                [25.5 + 20.0 * a.cos(), 25.5 + 20.0 * a.sin()]
            })
            .collect();
        p.fill_polygon(&star, true);
        // The pentagon in the middle is wound twice: even-odd leaves it unset.
        assert!(!p.get(25, 25) && !p.get(25, 28));
        // The tips are inside once.
        assert!(p.get(25, 10) && p.get(35, 37) && p.get(13, 21));
        // A thin lasso still paints the pixels it was drawn over.
        let mut p = BitPlane::new(7, 3);
        assert_eq!(p.fill_polygon(&[[1.2, 1.2], [5.3, 1.3], [1.2, 1.25]], true), bx(1, 1, 6, 2));
        assert_eq!(ascii(&p), [".......", ".#####.", "......."]);
        let mut p = BitPlane::new(7, 3);
        assert_eq!(p.fill_polygon(&[[0.5, 0.5], [6.5, 2.5]], true), PixelBox::default());
        assert_eq!(p.fill_polygon(&[[0.5, 0.5], [3.5, 1.5], [6.5, 2.5]], true), PixelBox::default());
        assert_eq!(p.fill_polygon(&[[0.5, 0.5], [f32::INFINITY, 1.5], [6.5, 2.5]], true), PixelBox::default());
        assert!(p.is_empty());
        // Wide plane polygon over the right border.
        let mut w = BitPlane::new(130, 70);
        w.fill_polygon(&[[60.0, 5.0], [300.0, 5.0], [300.0, 65.0], [60.0, 65.0]], true);
        assert_tail_clear(&w);
        assert_eq!(w.count_ones(), 70 * 61);
    }

    fn naive_sdf(p: &BitPlane) -> Vec<f32> {
        let (w, h) = (p.width(), p.height());
        let mut out = Vec::new();
        for y in 0..h {
            for x in 0..w {
                let v = p.get(x, y);
                let mut best = f64::INFINITY;
                for qy in 0..h {
                    for qx in 0..w {
                        if p.get(qx, qy) != v {
                            let (dx, dy) = (qx as f64 - x as f64, qy as f64 - y as f64);
                            best = best.min((dx * dx + dy * dy).sqrt());
                        }
                    }
                }
                out.push(if v { (0.5 - best) as f32 } else { (best - 0.5) as f32 });
            }
        }
        out
    }

    #[test]
    fn signed_distance_exact_and_thresholds_back() {
        let p = plane(&[".....", ".....", "..#..", ".....", "....."]);
        let d = p.signed_distance();
        assert_eq!(d[2 * 5 + 2], -0.5);
        assert_eq!(d[2 * 5 + 4], 1.5);
        assert!((d[4 * 5 + 4] - (8f32.sqrt() - 0.5)).abs() < 1e-6);
        let mut rng = Lcg(99);
        for &(w, h, percent) in
            &[(9, 7, 20), (16, 16, 50), (20, 3, 80), (1, 12, 50), (33, 21, 5), (70, 6, 40), (129, 3, 10)]
        {
            let p = random_plane(&mut rng, w, h, percent);
            let d = p.signed_distance();
            if !p.is_empty() && p.count_ones() != (w * h) as u64 {
                let n = naive_sdf(&p);
                for (a, b) in d.iter().zip(&n) {
                    assert!((a - b).abs() < 1e-5, "{a} vs {b}");
                }
            }
        }
        for &(w, h, percent) in &[(130, 70, 50), (200, 150, 3), (64, 64, 97), (10, 10, 0), (10, 10, 100)] {
            let p = random_plane(&mut rng, w, h, percent);
            let d = p.signed_distance();
            let back = BitPlane::threshold_blend(w, h, &d, &d, 0.0);
            assert_eq!(back, p);
            assert_tail_clear(&back);
        }
        assert_eq!(BitPlane::new(4, 3).signed_distance(), vec![7.0; 12]);
        let mut full = BitPlane::new(4, 3);
        full.fill_rect(bx(0, 0, 4, 3), true);
        assert_eq!(full.signed_distance(), vec![-7.0; 12]);
    }

    fn square(n: usize, lo: usize, hi: usize) -> BitPlane {
        let mut p = BitPlane::new(n, n);
        p.fill_rect(bx(lo, lo, hi, hi), true);
        p
    }

    #[test]
    fn interpolate_squares() {
        let (small, big) = (square(12, 5, 7), square(12, 1, 11));
        assert_eq!(interpolate(&small, &big, 0.5), square(12, 3, 9));
        assert_eq!(interpolate(&small, &big, 0.0), small);
        assert_eq!(interpolate(&small, &big, 1.0), big);
        assert_eq!(interpolate_many(&small, &big, 1), vec![square(12, 3, 9)]);
        let many = interpolate_many(&small, &big, 3);
        assert_eq!(many.len(), 3);
        assert!(many.windows(2).all(|w| w[0].count_ones() <= w[1].count_ones()));
        assert!(interpolate_many(&small, &big, 0).is_empty());
        // Wide planes: ends reproduce exactly, tail bits stay clear.
        let mut rng = Lcg(3);
        let (a, b) = (random_plane(&mut rng, 130, 70, 40), random_plane(&mut rng, 130, 70, 60));
        assert_eq!(interpolate(&a, &b, 0.0), a);
        assert_eq!(interpolate(&a, &b, 1.0), b);
        assert_tail_clear(&interpolate(&a, &b, 0.5));
    }

    #[test]
    fn interpolate_with_uniform_side() {
        let (big, empty) = (square(12, 1, 11), BitPlane::new(12, 12));
        assert_eq!(interpolate(&big, &empty, 0.0), big);
        assert_eq!(interpolate(&big, &empty, 1.0), empty);
        let quarter = interpolate(&big, &empty, 0.25);
        assert!(!quarter.is_empty() && quarter.count_ones() < big.count_ones());
        assert_eq!(interpolate(&big, &empty, 0.5), empty);
        assert_eq!(interpolate(&empty, &big, 0.5), empty);
        assert!(!interpolate(&empty, &big, 0.6).is_empty());
        let full = square(12, 0, 12);
        assert_eq!(interpolate(&big, &full, 0.6), full);
        let small = square(12, 5, 7);
        assert_eq!(interpolate(&small, &full, 0.6), full);
        let grown = interpolate(&small, &full, 0.25);
        assert!(grown.count_ones() > small.count_ones() && grown != full);
        assert_eq!(interpolate(&empty, &full, 0.4), empty);
        assert_eq!(interpolate(&empty, &full, 0.6), full);
    }

    #[test]
    fn component_3d_goes_back_and_forth() {
        let slices = [
            // A at left, B at right, F unrelated.
            plane(&["##....##", "##......", "......##", "...#..##"]),
            // C under A, D under B, separate from each other.
            plane(&["........", ".#......", ".#....#.", "......#."]),
            // E bridges C and D.
            plane(&["........", "........", ".######.", "........"]),
            plane(&["#.......", "........", "........", "........"]),
        ];
        let mut calls = Vec::new();
        let result = component_3d(
            &mut |z| {
                calls.push(z);
                (z != 4).then(|| slices[z].clone())
            },
            5,
            [0, 0, 0],
            Connectivity::Four,
        );
        let zs: Vec<usize> = result.iter().map(|(z, _)| *z).collect();
        assert_eq!(zs, [0, 1, 2]);
        assert_eq!(ascii(&result[0].1), ["##......", "##......", "......##", "......##"]);
        assert_eq!(ascii(&result[1].1), ["........", ".#......", ".#....#.", "......#."]);
        assert_eq!(ascii(&result[2].1), ["........", "........", ".######.", "........"]);
        calls.sort_unstable();
        assert_eq!(calls, [0, 1, 2, 3]);
        // Seed on an unset pixel, outside the stack or on a slice without mask: nothing.
        assert!(component_3d(&mut |z| Some(slices[z].clone()), 4, [3, 0, 0], Connectivity::Four).is_empty());
        assert!(component_3d(&mut |z| Some(slices[z].clone()), 4, [0, 0, 4], Connectivity::Four).is_empty());
        assert!(component_3d(&mut |_| None, 4, [0, 0, 0], Connectivity::Four).is_empty());
        // F at (3, 3) touches nothing even diagonally, so 8-connectivity gives the same parts.
        let eight = component_3d(&mut |z| Some(slices[z].clone()), 4, [0, 0, 0], Connectivity::Eight);
        assert_eq!(eight, result);
    }

    #[test]
    fn component_3d_on_word_boundaries() {
        // Widths that are and are not multiples of 64, with runs ending on the right border.
        for w in [64, 128, 130] {
            let mut s0 = BitPlane::new(w, 3);
            s0.fill_rect(bx(w - 10, 0, w, 1), true);
            s0.fill_rect(bx(w - 5, 2, w, 3), true);
            let mut s1 = BitPlane::new(w, 3);
            s1.fill_rect(bx(w - 1, 0, w, 3), true);
            s1.fill_rect(bx(0, 2, w, 3), true);
            let slices = [s0.clone(), s1.clone()];
            let parts = component_3d(&mut |z| Some(slices[z].clone()), 2, [w - 1, 0, 0], Connectivity::Four);
            assert_eq!(parts.len(), 2);
            assert_eq!(parts[0].1, s0, "width {w}");
            assert_eq!(parts[1].1, s1, "width {w}");
            parts.iter().for_each(|(_, p)| assert_tail_clear(p));
        }
    }

    #[test]
    fn every_op_keeps_tail_bits_clear() {
        let mut p = BitPlane::new(130, 70);
        p.stroke_segment([100.0, 10.0], [400.0, 60.0], 6.0, true);
        assert_tail_clear(&p);
        p.fill_polygon(&[[90.0, 20.0], [500.0, 30.0], [120.0, 69.0]], true);
        assert_tail_clear(&p);
        p.stroke_segment([0.0, 40.0], [200.0, 40.0], 0.0, true);
        assert_tail_clear(&p);
        p.fill_holes();
        assert_tail_clear(&p);
        p.flood_fill([0, 0], true, Connectivity::Eight);
        assert_tail_clear(&p);
        assert!(p.get(0, 0) && p.get(129, 0) && !p.get(0, 69));
        p.fill_polygon(&[[60.0, -5.0], [300.0, -5.0], [300.0, 30.0]], false);
        p.flood_fill([0, 69], false, Connectivity::Four);
        assert_tail_clear(&p);
        p.fill_rect(bx(0, 0, 1000, 1000), true);
        assert_tail_clear(&p);
        assert_tail_clear(&p.region([129, 0], Connectivity::Four).0);
        assert_tail_clear(&interpolate(&p, &BitPlane::new(130, 70), 0.3));
    }
}
