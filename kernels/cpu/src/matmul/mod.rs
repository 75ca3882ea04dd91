//! `out[n, m] (+)= x[n, k] · Wᵀ (+ bias)` for float and GGUF-quantized weights.
//!
//! Every output element has one canonical sequence of floating-point steps,
//! the same for every ISA, batch size, tiling and thread count (tests check
//! all of them bit for bit):
//!
//! - float weights: `acc = fma(w[j, i], x[i], acc)` for `i = 0..k` in order;
//!   FP8 E4M3 weights do the same with `w` the exact f16 form of each code
//!   (its value / 256), then `y = acc · s_j` with `s_j` the row's scale
//!   times 256 (see [`crate::weights::fp8`]);
//! - block weights: per block `b`, the exact integer `D_b = Σ code·q − c·S_b`
//!   (activation codes `q` from [`crate::quant`], offset `c` = 8 for Q4_0,
//!   128 for Q8_0, 0 for Q4_1), then `acc = fma(f32(D_b), d_w·d_x, acc)` and,
//!   for Q4_1, `acc_m = fma(m_w, d_x·S_b, acc_m)`; `y = acc (+ acc_m)`;
//! - then `y = y + bias[j]` and `out = out + y` when accumulating.
//!
//! Kernels interleave 16 weight rows per SIMD register (one row per lane, see
//! [`crate::weights`]) and, for `n > 1`, apply each unpacked weight vector to
//! several activation rows; work is split over output columns and activation
//! row tiles, never over `k`.

use std::cell::RefCell;
use std::ops::Range;

use crate::isa::{self, Isa, detect};
use crate::pool::ThreadPool;
use crate::quant::QuantizedActs;
pub use crate::weights::{GROUP_ROWS, WeightFormat, WeightMatrix};

mod scalar;
#[cfg(target_arch = "x86_64")]
mod x86_avx2;
#[cfg(target_arch = "x86_64")]
mod x86_avx512;
#[cfg(target_arch = "x86_64")]
mod x86_prefetch;

/// Operands of [`matmul`].
pub struct Matmul<'a> {
    /// `[n, k]` row-major input.
    pub x: &'a [f32],
    /// Input rows.
    pub n: usize,
    /// `[m, k]` weight.
    pub w: &'a WeightMatrix,
    /// `[m]` bias, added to every output row.
    pub bias: Option<&'a [f32]>,
    /// `[n, m]` row-major output.
    pub out: &'a mut [f32],
    /// Add the product into `out` (fusing a residual add) instead of overwriting it.
    pub accumulate: bool,
}

/// Where and how a kernel writes a `[rows, 16]` tile of results.
#[derive(Clone, Copy)]
pub(crate) struct Store {
    /// `[n, m]` output.
    out: *mut f32,
    /// Output columns (`m`).
    m: usize,
    /// The weight row whose result lands in output column 0 (nonzero when
    /// only a sub-range of the weight's rows is computed, see [`matmul_rows`]).
    col_base: usize,
    /// `[m]` bias or null.
    bias: *const f32,
    /// `out += y` instead of `out = y`.
    accumulate: bool,
}

// SAFETY: tasks write disjoint (row, column-group) tiles of `out`; `bias` is read-only.
unsafe impl Send for Store {}
unsafe impl Sync for Store {}

impl Store {
    /// Finish output `(t, j)` from the kernel's `y`: the canonical bias and accumulate steps.
    ///
    /// # Safety
    /// `t < n`, `j < m`, and the tile holding `(t, j)` belongs to the caller's task.
    #[inline(always)]
    pub(crate) unsafe fn put(&self, t: usize, j: usize, y: f32) {
        let c = j - self.col_base;
        // SAFETY: guaranteed by the caller.
        unsafe {
            let y = if self.bias.is_null() {
                y
            } else {
                y + *self.bias.add(c)
            };
            let o = self.out.add(t * self.m + c);
            *o = if self.accumulate { *o + y } else { y };
        }
    }

    /// Write lanes `0..cols.lanes` of `ys` to row `t`, columns `cols.col0..`.
    ///
    /// # Safety
    /// As for [`Store::put`] for every written column.
    #[inline(always)]
    pub(crate) unsafe fn put_lanes(&self, t: usize, cols: Cols, ys: &[f32]) {
        for (l, &y) in ys.iter().enumerate().take(cols.lanes) {
            // SAFETY: guaranteed by the caller.
            unsafe { self.put(t, cols.col0 + l, y) };
        }
    }
}

/// One task: activation rows × weight groups.
#[derive(Debug, Clone)]
pub(crate) struct Tile {
    /// Activation rows.
    pub rows: Range<usize>,
    /// 16-row weight groups.
    pub groups: Range<usize>,
}

/// Activation rows swept per weight group before moving to the next group.
const ROW_BLOCK: usize = 64;

/// Target duration of one task, in nanoseconds (tasks this small still
/// amortize a dispatch of well under a microsecond).
const TASK_NS: usize = 3_000;

/// Split the `n × groups` output into `(column tasks, row tasks)` for
/// `threads` threads, from a rough single-core cost: ~40 multiply-adds and
/// ~12 weight bytes per nanosecond.
fn plan(n: usize, groups: usize, k: usize, weight_bytes: usize, threads: usize) -> (usize, usize) {
    let est_ns = n * groups * GROUP_ROWS * k.max(1) / 40 + weight_bytes / 12;
    let want = (est_ns / TASK_NS).clamp(1, 4 * threads);
    if threads == 1 || want == 1 || groups == 0 {
        return (1, 1);
    }
    // Prefer splitting columns (each task then streams only its own weights)
    // into equal chunks; split rows only when there are too few groups.
    let per = groups.div_ceil(want.min(groups));
    let col_tasks = groups.div_ceil(per);
    let row_tasks = (want / col_tasks).clamp(1, n.div_ceil(8).max(1));
    (col_tasks, row_tasks)
}

thread_local! {
    static ACTS: RefCell<QuantizedActs> = RefCell::new(QuantizedActs::new());
    /// Activations gathered into an act-order matrix's column order.
    static GATHERED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Run a matmul with the process's ISA ([`detect`]).
pub fn matmul(pool: &ThreadPool, a: Matmul<'_>) {
    matmul_with(pool, detect(), a)
}

/// Run a matmul with the kernels of `isa` (capped to what this CPU supports).
///
/// Panics if `x`, `out` or `bias` are shorter than the shapes require.
pub fn matmul_with(pool: &ThreadPool, isa: Isa, a: Matmul<'_>) {
    let rows = 0..a.w.rows();
    matmul_rows_with(pool, isa, a, rows)
}

/// [`matmul`] against weight rows `rows` only, as if they were the whole
/// matrix: `out` is `[n, rows.len()]` and `bias` (if any) `[rows.len()]`.
/// Each output element gets exactly the bits the full matmul gives it, so a
/// stack of matrices (mixture-of-experts weights) can be prepared once and
/// multiplied one member at a time.
///
/// Panics unless `rows` starts on a [`GROUP_ROWS`] boundary and ends on one
/// or at the matrix's last row.
pub fn matmul_rows(pool: &ThreadPool, a: Matmul<'_>, rows: Range<usize>) {
    matmul_rows_with(pool, detect(), a, rows)
}

/// [`matmul_rows`] with the kernels of `isa` (capped to what this CPU supports).
pub fn matmul_rows_with(pool: &ThreadPool, isa: Isa, a: Matmul<'_>, rows: Range<usize>) {
    let isa = isa::clamp(isa);
    let total = a.w.rows();
    assert!(
        rows.start <= rows.end
            && rows.end <= total
            && rows.start.is_multiple_of(GROUP_ROWS)
            && (rows.end.is_multiple_of(GROUP_ROWS) || rows.end == total),
        "matmul: weight rows {rows:?} of {total} do not fall on {GROUP_ROWS}-row group boundaries"
    );
    let (n, m, k) = (a.n, rows.len(), a.w.cols());
    assert!(
        a.x.len() >= n * k,
        "matmul: x has {} values, [{n}, {k}] needs {}",
        a.x.len(),
        n * k
    );
    assert!(
        a.out.len() >= n * m,
        "matmul: out has {} values, [{n}, {m}] needs {}",
        a.out.len(),
        n * m
    );
    if let Some(b) = a.bias {
        assert!(
            b.len() >= m,
            "matmul: bias has {} values, needs {m}",
            b.len()
        );
    }
    if n == 0 || m == 0 {
        return;
    }
    let store = Store {
        out: a.out.as_mut_ptr(),
        m,
        col_base: rows.start,
        bias: a.bias.map_or(std::ptr::null(), |b| b.as_ptr()),
        accumulate: a.accumulate,
    };
    let w = a.w;
    let first_group = rows.start / GROUP_ROWS;
    let end_group = if rows.end == total {
        w.groups()
    } else {
        rows.end / GROUP_ROWS
    };
    let groups = end_group - first_group;
    let streamed = w.source_bytes() * m / total.max(1);
    let (col_tasks, row_tasks) = plan(n, groups, k, streamed, pool.threads());
    let tile = |i: usize| {
        let own = crate::pool::chunk(groups, col_tasks, i % col_tasks);
        Tile {
            rows: crate::pool::chunk(n, row_tasks, i / col_tasks),
            groups: first_group + own.start..first_group + own.end,
        }
    };
    let tasks = col_tasks * row_tasks;
    if w.format().is_quantized() {
        ACTS.with(|cell| {
            let mut acts = cell.borrow_mut();
            match w.perm() {
                None => acts.quantize(pool, isa, &a.x[..n * k], k),
                Some(perm) => GATHERED.with(|g| {
                    let mut g = g.borrow_mut();
                    g.clear();
                    for row in a.x[..n * k].chunks_exact(k) {
                        g.extend(perm.iter().map(|&i| row[i as usize]));
                    }
                    acts.quantize(pool, isa, &g, k);
                }),
            }
            let acts = &*acts;
            pool.run(tasks, &|i| quant_tile(isa, w, acts, &tile(i), &store));
        });
    } else {
        let x = a.x;
        pool.run(tasks, &|i| float_tile(isa, w, x, &tile(i), &store));
    }
}

/// Quantized weights against quantized activations over one task's tile.
fn quant_tile(isa: Isa, w: &WeightMatrix, acts: &QuantizedActs, tile: &Tile, store: &Store) {
    for r0 in tile.rows.clone().step_by(ROW_BLOCK) {
        let rows = r0..(r0 + ROW_BLOCK).min(tile.rows.end);
        for g in tile.groups.clone() {
            match isa {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `isa` is supported by this CPU (clamped in `matmul_with`);
                // the tile is this task's own.
                Isa::Avx512Vnni => unsafe {
                    x86_avx512::quant_group(w, g, acts, rows.clone(), store)
                },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as above.
                Isa::Avx2 => unsafe { x86_avx2::quant_group(w, g, acts, rows.clone(), store) },
                // SAFETY: the tile is this task's own.
                _ => unsafe { scalar::quant_group(w, g, acts, rows.clone(), store) },
            }
        }
    }
}

/// Float weights against f32 activations over one task's tile.
fn float_tile(isa: Isa, w: &WeightMatrix, x: &[f32], tile: &Tile, store: &Store) {
    for r0 in tile.rows.clone().step_by(ROW_BLOCK) {
        let rows = r0..(r0 + ROW_BLOCK).min(tile.rows.end);
        match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `isa` is supported by this CPU; the tile is this task's own.
            Isa::Avx512Vnni => unsafe {
                x86_avx512::float_groups(w, tile.groups.clone(), x, rows, store)
            },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            Isa::Avx2 => unsafe { x86_avx2::float_groups(w, tile.groups.clone(), x, rows, store) },
            // SAFETY: the tile is this task's own.
            _ => unsafe { scalar::float_groups(w, tile.groups.clone(), x, rows, store) },
        }
    }
}

/// Output columns `col0..col0 + lanes` of a group or half group.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cols {
    pub col0: usize,
    pub lanes: usize,
}

impl Cols {
    /// The columns of group `g` that exist (the last group may be partial).
    #[inline(always)]
    pub(crate) fn of_group(w: &WeightMatrix, g: usize) -> Cols {
        Cols {
            col0: g * GROUP_ROWS,
            lanes: (w.rows() - g * GROUP_ROWS).min(GROUP_ROWS),
        }
    }

    /// Half `h` (8 lanes) of a group's columns; `None` when it is empty.
    #[inline(always)]
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) fn half(self, h: usize) -> Option<Cols> {
        let lanes = self.lanes.saturating_sub(8 * h).min(8);
        (lanes > 0).then_some(Cols {
            col0: self.col0 + 8 * h,
            lanes,
        })
    }
}
