//! Portable kernels: the reference definition of every output's arithmetic.

use std::ops::Range;

use half::{bf16, f16};

use super::{Cols, GROUP_ROWS, Store, WeightFormat, WeightMatrix};
use crate::quant::QuantizedActs;
use crate::weights::fp8::e4m3_f16_bits;
use crate::weights::{IQ4_CODES, MinKind, block_codes, sub_factors};

#[inline(always)]
fn f16_at(b: &[u8], off: usize) -> f32 {
    f16::from_le_bytes([b[off], b[off + 1]]).to_f32()
}

/// The integer offset subtracted per activation code sum.
#[inline(always)]
pub(crate) fn code_offset(fmt: WeightFormat) -> i32 {
    fmt.packing().map_or(0, |p| p.offset)
}

/// Group `g` of a quantized matrix against activation rows `rows`: the
/// canonical arithmetic of every block format. Per 32-block `b` and
/// sub-block `s` (one of 32 weights, or two of 16):
/// `D = Σ code·q − offset·Σq` exactly in integers, then
/// `acc = fma(f32(D), scale·d_x, acc)` and, with a minimum,
/// `acc_m = fma(min, d_x·Σq, acc_m)`; finally `y = acc (+ acc_m)`.
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
    let p = w.packing();
    let l = w.quant_layout();
    let nb = l.nb;
    let group = w.group(g);
    let cols = Cols::of_group(w, g);
    let lanes = cols.lanes;
    let sub_len = 32 / p.subs;
    for t in rows {
        let mut acc = [0f32; GROUP_ROWS];
        let mut accm = [0f32; GROUP_ROWS];
        for b in 0..nb {
            let i = t * nb + b;
            for lane in 0..lanes {
                let codes = block_codes(&p, &l, group, b, lane);
                for s in 0..p.subs {
                    let mut dot = 0i32;
                    for k in s * sub_len..(s + 1) * sub_len {
                        let u = if p.lut {
                            IQ4_CODES[codes[k] as usize] as i32
                        } else {
                            codes[k] as i32
                        };
                        dot += u * acts.code(t, b * 32 + k);
                    }
                    let (sum, sx) = if p.sub16() {
                        (acts.sum16[2 * i + s], acts.sx16[2 * i + s])
                    } else {
                        (acts.sum[i], acts.sx[i])
                    };
                    let dint = dot - p.offset * sum;
                    let f = sub_factors(&p, &l, group, b, s, lane);
                    acc[lane] = (dint as f32).mul_add(f.scale * acts.d[i], acc[lane]);
                    if p.min != MinKind::None {
                        accm[lane] = f.min.mul_add(sx, accm[lane]);
                    }
                }
            }
        }
        let mut ys = acc;
        if p.min != MinKind::None {
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
        WeightFormat::F8_E4M3 => {
            f16::from_bits(e4m3_f16_bits(group[i * GROUP_ROWS + lane])).to_f32()
        }
        _ => {
            let o = (i * GROUP_ROWS + lane) * 2;
            bf16::from_le_bytes([group[o], group[o + 1]]).to_f32()
        }
    }
}

/// Groups `groups` of a float matrix against f32 activation rows `rows`:
/// `acc = fma(w, x, acc)` along the row, then for FP8 `y = acc·scale`
/// (the f16 form of a code and the folded row scale, see
/// [`crate::weights::fp8`]).
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
            if fmt == WeightFormat::F8_E4M3 {
                let at = w.row_scale_offset();
                for (lane, a) in acc.iter_mut().enumerate() {
                    let s = &group[at + lane * 4..][..4];
                    *a *= f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
                }
            }
            // SAFETY: the tile is the caller's.
            unsafe { store.put_lanes(t, cols, &acc) };
        }
    }
}
