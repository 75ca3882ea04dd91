//! Portable kernels: the reference definition of every output's arithmetic.

use std::ops::Range;

use half::{bf16, f16};

use super::{Cols, GROUP_ROWS, Store, WeightFormat, WeightMatrix};
use crate::quant::QuantizedActs;
use crate::weights::QuantLayout;

#[inline(always)]
fn f16_at(b: &[u8], off: usize) -> f32 {
    f16::from_le_bytes([b[off], b[off + 1]]).to_f32()
}

/// The integer offset subtracted per activation code sum.
#[inline(always)]
pub(crate) fn code_offset(fmt: WeightFormat) -> i32 {
    match fmt {
        WeightFormat::Q4_0 => 8,
        WeightFormat::Q8_0 => 128,
        _ => 0,
    }
}

/// Exact integer block product `Σ code·q` of lane `lane`, block `b`, activation row `t`.
#[inline(always)]
fn block_dot(
    fmt: WeightFormat,
    codes: &[u8],
    lane: usize,
    acts: &QuantizedActs,
    t: usize,
    b: usize,
) -> i32 {
    let base = b * 32;
    let mut dot = 0i32;
    if fmt == WeightFormat::Q8_0 {
        for c in 0..8 {
            for j in 0..4 {
                dot += codes[c * 64 + lane * 4 + j] as i32 * acts.code(t, base + 4 * c + j);
            }
        }
    } else {
        for c in 0..4 {
            for j in 0..4 {
                let byte = codes[c * 64 + lane * 4 + j];
                dot += (byte & 15) as i32 * acts.code(t, base + 4 * c + j)
                    + (byte >> 4) as i32 * acts.code(t, base + 16 + 4 * c + j);
            }
        }
    }
    dot
}

/// Group `g` of a quantized matrix against activation rows `rows`.
///
/// # Safety
/// The `(rows, group g)` tile of the output belongs to the caller.
pub(crate) unsafe fn quant_group(
    w: &WeightMatrix,
    g: usize,
    acts: &QuantizedActs,
    rows: Range<usize>,
    store: &Store,
) {
    let fmt = w.format();
    let QuantLayout {
        nb,
        cb,
        d_off,
        m_off,
    } = w.quant_layout();
    let group = w.group(g);
    let cols = Cols::of_group(w, g);
    let lanes = cols.lanes;
    let off = code_offset(fmt);
    for t in rows {
        let mut acc = [0f32; GROUP_ROWS];
        let mut accm = [0f32; GROUP_ROWS];
        for b in 0..nb {
            let i = t * nb + b;
            let codes = &group[b * cb..(b + 1) * cb];
            for lane in 0..lanes {
                let dint = block_dot(fmt, codes, lane, acts, t, b) - off * acts.sum[i];
                let dw = f16_at(group, d_off + b * 32 + lane * 2);
                acc[lane] = (dint as f32).mul_add(dw * acts.d[i], acc[lane]);
                if fmt == WeightFormat::Q4_1 {
                    let mw = f16_at(group, m_off + b * 32 + lane * 2);
                    accm[lane] = mw.mul_add(acts.sx[i], accm[lane]);
                }
            }
        }
        let mut ys = acc;
        if fmt == WeightFormat::Q4_1 {
            for (y, m) in ys.iter_mut().zip(accm) {
                *y += m;
            }
        }
        // SAFETY: the tile is the caller's.
        unsafe { store.put_lanes(t, cols, &ys) };
    }
}

/// Weight `(lane, i)` of a packed float group.
#[inline(always)]
fn float_at(fmt: WeightFormat, group: &[u8], i: usize, lane: usize) -> f32 {
    match fmt {
        WeightFormat::F32 => {
            let o = (i * GROUP_ROWS + lane) * 4;
            f32::from_le_bytes([group[o], group[o + 1], group[o + 2], group[o + 3]])
        }
        WeightFormat::F16 => f16_at(group, (i * GROUP_ROWS + lane) * 2),
        _ => {
            let o = (i * GROUP_ROWS + lane) * 2;
            bf16::from_le_bytes([group[o], group[o + 1]]).to_f32()
        }
    }
}

/// Groups `groups` of a float matrix against f32 activation rows `rows`.
///
/// # Safety
/// The `(rows, groups)` tile of the output belongs to the caller.
pub(crate) unsafe fn float_groups(
    w: &WeightMatrix,
    groups: Range<usize>,
    x: &[f32],
    rows: Range<usize>,
    store: &Store,
) {
    let (fmt, k) = (w.format(), w.cols());
    for g in groups {
        let group = w.group(g);
        let cols = Cols::of_group(w, g);
        for t in rows.clone() {
            let xr = &x[t * k..(t + 1) * k];
            let mut acc = [0f32; GROUP_ROWS];
            for (i, &xv) in xr.iter().enumerate() {
                for (lane, a) in acc.iter_mut().enumerate() {
                    *a = float_at(fmt, group, i, lane).mul_add(xv, *a);
                }
            }
            // SAFETY: the tile is the caller's.
            unsafe { store.put_lanes(t, cols, &acc) };
        }
    }
}
