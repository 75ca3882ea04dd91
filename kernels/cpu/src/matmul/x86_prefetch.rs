//! Software prefetch of decode's weight stream (x86).
//!
//! A decode matmul (one activation row) reads every weight byte exactly once
//! and does little work per byte, so its speed is how many DRAM reads each
//! core keeps in flight. Two prefetch streams run ahead of the kernel over
//! the same sequence of blocks:
//!
//! - a near one into L1, [`NEAR_CODE_BYTES`] of codes ahead, which hides
//!   the L2 latency of the next blocks;
//! - a far one into L2, [`FAR_CODE_BYTES`] ahead, which keeps the DRAM
//!   reads in flight. The hardware prefetchers alone do not: they stop at
//!   every 4 KiB page and restart at every group's scale region. On a Zen 4
//!   core the far stream lifted one thread's Q4_0 decode matmul from 10–12
//!   to 18–27 GB/s at 1536 columns, and two threads' from 14–24 to
//!   27–37 GB/s (`kernel_bench`); farther than 8 KiB was slower again.
//!
//! Both streams run on past the end of a group into the groups stored after
//! it (a task owns consecutive groups). A prefetch past the end of the
//! matrix reads nothing it may not: prefetches never fault.

use std::arch::x86_64::*;

use crate::weights::{MinKind, Packing, QuantLayout, SubScale};

/// How far ahead the L1 stream runs, in code bytes of the group's rows.
const NEAR_CODE_BYTES: usize = 1 << 10;
/// How far ahead the L2 stream runs, in code bytes of the group's rows.
const FAR_CODE_BYTES: usize = 8 << 10;

/// A position `ahead` blocks past the kernel's, in the flattened sequence
/// of blocks of consecutive groups.
#[derive(Clone, Copy)]
pub(crate) struct Stream {
    group: *const u8,
    /// Bytes from one group to the next.
    stride: usize,
    nb: usize,
    b: usize,
}

impl Stream {
    fn new(group: *const u8, stride: usize, nb: usize, ahead: usize) -> Stream {
        let nb = nb.max(1);
        Stream {
            group: group.wrapping_add(ahead / nb * stride),
            stride,
            nb,
            b: ahead % nb,
        }
    }

    fn advance(&mut self) {
        self.b += 1;
        if self.b == self.nb {
            self.b = 0;
            self.group = self.group.wrapping_add(self.stride);
        }
    }
}

/// The near and far streams of one group's decode.
#[derive(Clone, Copy)]
pub(crate) struct Prefetch {
    near: Stream,
    far: Stream,
}

impl Prefetch {
    /// Streams for a kernel starting at block 0 of the group at `group`
    /// (groups `stride` bytes apart).
    pub(crate) fn new(l: &QuantLayout, group: *const u8, stride: usize) -> Prefetch {
        let blocks = |bytes: usize| (bytes / l.cb).max(1);
        Prefetch {
            near: Stream::new(group, stride, l.nb, blocks(NEAR_CODE_BYTES)),
            far: Stream::new(group, stride, l.nb, blocks(FAR_CODE_BYTES)),
        }
    }

    /// Prefetch the blocks both streams are at, then step them one block.
    ///
    /// # Safety
    /// The CPU supports SSE (every x86-64 does).
    #[inline(always)]
    pub(crate) unsafe fn step(&mut self, p: &Packing, l: &QuantLayout) {
        // SAFETY: prefetches never fault, whatever the address.
        unsafe {
            block::<_MM_HINT_T0>(p, l, self.near);
            block::<_MM_HINT_T1>(p, l, self.far);
        }
        self.near.advance();
        self.far.advance();
    }
}

/// Prefetch every line of block `s.b` of the group at `s.group`.
#[inline(always)]
unsafe fn block<const HINT: i32>(p: &Packing, l: &QuantLayout, s: Stream) {
    block_lines(p, l, s.b, |off| {
        // SAFETY: prefetches never fault.
        unsafe { _mm_prefetch::<HINT>(s.group.wrapping_add(off) as *const i8) }
    });
}

/// The group offsets of the lines block `b` needs first: its codes and
/// high-bit planes, and each scale line that the block is the first of its
/// region to reach into. A sweep over the blocks visits every line of the
/// group once, except that a line shared by two regions is visited by both
/// (each when its own region first needs it).
#[inline(always)]
fn block_lines(p: &Packing, l: &QuantLayout, b: usize, mut line: impl FnMut(usize)) {
    for c in (0..l.cb).step_by(64) {
        line(b * l.cb + c);
    }
    for pl in 0..p.planes {
        line(l.plane_off + (b * p.planes + pl) * 64);
    }
    // Entries of a region are contiguous: fetch a line with the first entry
    // that reaches into it.
    let mut entry = |start: usize, size: usize, i: usize| {
        let (first, last) = (start + i * size, start + (i + 1) * size - 1);
        let before = if i == 0 { usize::MAX } else { (first - 1) / 64 };
        if first / 64 != before {
            line(first / 64 * 64);
        }
        if last / 64 != first / 64 {
            line(last / 64 * 64);
        }
    };
    if p.sub_scale != SubScale::None {
        entry(l.sc_off, 16 * p.subs, b);
    }
    if p.min == MinKind::SubBytes {
        entry(l.mn_off, 16, b);
    }
    let unit_blocks = l.unit_blocks.max(1);
    if b.is_multiple_of(unit_blocks) {
        let unit = b / unit_blocks;
        entry(l.d_off, 32, unit);
        if p.has_unit_min() {
            entry(l.m_off, 32, unit);
        }
        if p.min == MinKind::Zero {
            entry(l.zp_off, 16, unit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matmul::{WeightFormat, WeightMatrix};

    #[test]
    fn a_sweep_fetches_every_line_of_a_group() {
        let formats = WeightFormat::ALL
            .into_iter()
            .chain([2u8, 3, 4, 8].map(|bits| WeightFormat::Int {
                bits,
                bf16_scales: false,
            }));
        for fmt in formats.filter(|f| f.packing().is_some()) {
            for cols in [256, 768, 2560] {
                let w = match fmt {
                    WeightFormat::Int { bits, .. } => {
                        let codes = vec![0u8; 16 * cols];
                        let scales = vec![0u16; 16 * (cols / 128)];
                        let zeros = vec![0u8; 16 * (cols / 128)];
                        WeightMatrix::from_int(crate::weights::IntParts {
                            bits,
                            bf16_scales: false,
                            rows: 16,
                            cols,
                            group: 128,
                            codes: &codes,
                            scales: &scales,
                            zeros: &zeros,
                            perm: None,
                        })
                        .expect("int weight")
                    }
                    _ => {
                        let raw = vec![0u8; 16 * fmt.row_bytes(cols).expect("whole blocks")];
                        WeightMatrix::from_raw(fmt, 16, cols, &raw).expect("weight")
                    }
                };
                let (p, l) = (w.packing(), w.quant_layout());
                let mut seen = vec![0u32; l.end.div_ceil(64)];
                for b in 0..l.nb {
                    block_lines(&p, &l, b, |off| {
                        assert_eq!(off % 64, 0, "{fmt:?}");
                        seen[off / 64] += 1;
                    });
                }
                assert!(seen.iter().all(|&n| n >= 1), "{fmt:?} {cols}: {seen:?}");
                // At most one repeat per boundary between the 7 parts.
                let repeats: u32 = seen.iter().map(|&n| n - 1).sum();
                assert!(repeats <= 6, "{fmt:?} {cols}: {seen:?}");
            }
        }
    }

    #[test]
    fn streams_run_on_into_the_next_groups() {
        let base = std::ptr::null::<u8>();
        let mut s = Stream::new(base, 1000, 3, 7);
        assert_eq!((s.group as usize, s.b), (2000, 1));
        s.advance();
        s.advance();
        assert_eq!((s.group as usize, s.b), (3000, 0));
    }
}
