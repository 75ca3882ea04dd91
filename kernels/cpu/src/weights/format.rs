//! The storage formats a weight matrix can have, and how each block format
//! is packed for the kernels.
//!
//! Every block format is described to the kernels by one [`Packing`]: the
//! kernels never decode a GGUF block themselves. Per 32-column block and
//! output row they see an unsigned integer code per weight (2-, 4- or 8-bit
//! code bytes, plus up to two high-bit planes), an integer offset, and per
//! sub-block an f32 scale (and minimum) built exactly from the block's f16
//! and small-integer fields. See `weights/mod.rs` for the byte layout.

/// Storage format of a weight matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum WeightFormat {
    /// IEEE f32.
    F32,
    /// IEEE f16.
    F16,
    /// bfloat16.
    BF16,
    /// FP8 E4M3 codes with one f32 scale per row: `x = scale·e4m3(q)`
    /// (see [`crate::weights::fp8`]; built by
    /// [`crate::weights::WeightMatrix::from_fp8`]).
    F8_E4M3,
    /// GGUF Q4_0: blocks of 32 as `d: f16, qs[16]`; `x = d·(q − 8)`.
    Q4_0,
    /// GGUF Q4_1: blocks of 32 as `d: f16, m: f16, qs[16]`; `x = d·q + m`.
    Q4_1,
    /// GGUF Q8_0: blocks of 32 as `d: f16, qs[32] i8`; `x = d·q`.
    Q8_0,
    /// GGUF Q5_0: blocks of 32 as `d: f16, qh: u32, qs[16]`; `x = d·(q − 16)`.
    Q5_0,
    /// GGUF Q5_1: blocks of 32 as `d, m: f16, qh: u32, qs[16]`; `x = d·q + m`.
    Q5_1,
    /// GGUF Q2_K: super-blocks of 256 (84 bytes); 2-bit codes, 4-bit scale
    /// and minimum per 16; `x = d·sc·q − dmin·m`.
    Q2_K,
    /// GGUF Q3_K: super-blocks of 256 (110 bytes); 3-bit codes, signed 6-bit
    /// scale per 16; `x = d·(sc − 32)·(q − 4)`.
    Q3_K,
    /// GGUF Q4_K: super-blocks of 256 (144 bytes); 4-bit codes, 6-bit scale
    /// and minimum per 32; `x = d·sc·q − dmin·m`.
    Q4_K,
    /// GGUF Q5_K: super-blocks of 256 (176 bytes); Q4_K with a fifth bit.
    Q5_K,
    /// GGUF Q6_K: super-blocks of 256 (210 bytes); 6-bit codes, int8 scale
    /// per 16; `x = d·sc·(q − 32)`.
    Q6_K,
    /// GGUF IQ4_NL: blocks of 32 as `d: f16, qs[16]`; `x = d·T[q]` with the
    /// non-linear table [`IQ4_VALUES`].
    IQ4_NL,
    /// GGUF IQ4_XS: super-blocks of 256 (136 bytes); IQ4_NL codes with a
    /// signed 6-bit scale per 32; `x = d·(ls − 32)·T[q]`.
    IQ4_XS,
    /// Unsigned `bits`-bit codes (2, 3, 4 or 8) in groups along a row, each
    /// group with a 16-bit scale (f16, or bf16 when `bf16_scales`) and an
    /// integer zero point: `x = s·(q − z)`. GPTQ, AWQ and compressed-tensors
    /// weights become this at load ([`crate::weights::WeightMatrix::from_int`]).
    Int {
        /// Bits per code.
        bits: u8,
        /// Scales are bf16 rather than f16.
        bf16_scales: bool,
    },
}

/// The IQ4_NL/IQ4_XS code table (llama.cpp's `kvalues_iq4nl`).
pub const IQ4_VALUES: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// [`IQ4_VALUES`] plus 128: the unsigned codes the kernels multiply (with
/// an offset of 128 corrected through the activation sums).
pub(crate) const IQ4_CODES: [u8; 16] = {
    let mut codes = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        codes[i] = (IQ4_VALUES[i] as i32 + 128) as u8;
        i += 1;
    }
    codes
};

/// How a block format's codes, scales and minimums are laid out for the
/// kernels (per 16-row group; see `weights/mod.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Packing {
    /// Bits per code byte entry: 2, 4 or 8 (code bytes per 32-block and
    /// group: 128, 256 or 512).
    pub code_bits: u32,
    /// High-bit planes (0–2), each adding bit `code_bits + p` to every code.
    pub planes: usize,
    /// IQ4 codes index [`IQ4_VALUES`]; the kernels look up `T[q] + 128`.
    pub lut: bool,
    /// Integer subtracted from every code (applied through the activation sums).
    pub offset: i32,
    /// Sub-blocks per 32-block that carry their own scale (1 or 2).
    pub subs: usize,
    /// What the per-sub-block scale bytes mean.
    pub sub_scale: SubScale,
    /// 32-blocks sharing one `d` (and `dmin`): 1, or 8 for super-blocks;
    /// 0 when the matrix sets it (integer groups).
    pub unit_blocks: usize,
    /// `d` is stored as bf16 rather than f16.
    pub d_bf16: bool,
    /// What the second f16 per unit (if any) means.
    pub min: MinKind,
}

/// The per-sub-block scale byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SubScale {
    /// None: the sub-block scale is `d`.
    None,
    /// Unsigned (Q4_K/Q5_K 6-bit scales): `d·sc`.
    U8,
    /// Signed (Q6_K, Q3_K and IQ4_XS after their −32 shift): `d·sc`.
    I8,
    /// Q2_K's byte: scale in the low nibble (`d·(b & 15)`), minimum in the
    /// high nibble (`dmin·(b >> 4)`).
    Q2K,
}

/// The minimum term of a format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MinKind {
    /// No minimum.
    None,
    /// `+m` per block (an f16 per unit): Q4_1, Q5_1.
    Add,
    /// `−dmin·m` with a 6-bit `m` byte per sub-block: Q4_K, Q5_K.
    SubBytes,
    /// `−dmin·(b >> 4)` from the Q2_K scale byte.
    SubQ2K,
    /// `−d·z` with an integer zero point byte per unit (integer groups).
    Zero,
}

impl WeightFormat {
    /// Every format.
    pub const ALL: [WeightFormat; 16] = [
        WeightFormat::F32,
        WeightFormat::F16,
        WeightFormat::BF16,
        WeightFormat::Q4_0,
        WeightFormat::Q4_1,
        WeightFormat::Q8_0,
        WeightFormat::Q5_0,
        WeightFormat::Q5_1,
        WeightFormat::Q2_K,
        WeightFormat::Q3_K,
        WeightFormat::Q4_K,
        WeightFormat::Q5_K,
        WeightFormat::Q6_K,
        WeightFormat::IQ4_NL,
        WeightFormat::IQ4_XS,
        WeightFormat::F8_E4M3,
    ];

    /// Name as GGUF spells it.
    pub fn name(self) -> &'static str {
        match self {
            WeightFormat::F32 => "F32",
            WeightFormat::F16 => "F16",
            WeightFormat::BF16 => "BF16",
            WeightFormat::F8_E4M3 => "F8_E4M3",
            WeightFormat::Q4_0 => "Q4_0",
            WeightFormat::Q4_1 => "Q4_1",
            WeightFormat::Q8_0 => "Q8_0",
            WeightFormat::Q5_0 => "Q5_0",
            WeightFormat::Q5_1 => "Q5_1",
            WeightFormat::Q2_K => "Q2_K",
            WeightFormat::Q3_K => "Q3_K",
            WeightFormat::Q4_K => "Q4_K",
            WeightFormat::Q5_K => "Q5_K",
            WeightFormat::Q6_K => "Q6_K",
            WeightFormat::IQ4_NL => "IQ4_NL",
            WeightFormat::IQ4_XS => "IQ4_XS",
            WeightFormat::Int { bits: 2, .. } => "INT2",
            WeightFormat::Int { bits: 3, .. } => "INT3",
            WeightFormat::Int { bits: 4, .. } => "INT4",
            WeightFormat::Int { .. } => "INT8",
        }
    }

    /// True for the block formats (FP8 is a float format: its kernels
    /// multiply f32 activations by widened weights, like f16's).
    pub fn is_quantized(self) -> bool {
        !self.is_float()
    }

    /// True for the formats the float kernels run.
    pub(crate) fn is_float(self) -> bool {
        matches!(
            self,
            WeightFormat::F32 | WeightFormat::F16 | WeightFormat::BF16 | WeightFormat::F8_E4M3
        )
    }

    /// Weights per source block (1 for float formats, 32 or 256 otherwise).
    pub fn block_size(self) -> usize {
        match self {
            WeightFormat::F32 | WeightFormat::F16 | WeightFormat::BF16 | WeightFormat::F8_E4M3 => 1,
            WeightFormat::Q2_K
            | WeightFormat::Q3_K
            | WeightFormat::Q4_K
            | WeightFormat::Q5_K
            | WeightFormat::Q6_K
            | WeightFormat::IQ4_XS => 256,
            _ => 32,
        }
    }

    /// True for the integer-group format, which has no GGUF block bytes.
    pub fn is_int_groups(self) -> bool {
        matches!(self, WeightFormat::Int { .. })
    }

    /// Source bytes per block (per element for float formats).
    pub fn block_bytes(self) -> usize {
        match self {
            WeightFormat::F32 => 4,
            WeightFormat::F16 | WeightFormat::BF16 => 2,
            WeightFormat::F8_E4M3 => 1,
            WeightFormat::Q4_0 | WeightFormat::IQ4_NL => 18,
            WeightFormat::Q4_1 => 20,
            WeightFormat::Q5_0 => 22,
            WeightFormat::Q5_1 => 24,
            WeightFormat::Q8_0 => 34,
            WeightFormat::Q2_K => 84,
            WeightFormat::Q3_K => 110,
            WeightFormat::Q4_K => 144,
            WeightFormat::Q5_K => 176,
            WeightFormat::Q6_K => 210,
            WeightFormat::IQ4_XS => 136,
            WeightFormat::Int { .. } => 0,
        }
    }

    /// Source bytes of one row of `cols` weights; `None` when `cols` is not a
    /// whole number of blocks.
    pub fn row_bytes(self, cols: usize) -> Option<usize> {
        if self.is_int_groups() {
            return None;
        }
        cols.is_multiple_of(self.block_size())
            .then(|| cols / self.block_size() * self.block_bytes())
    }

    /// Byte offsets of the f16 scale fields inside a source block (`d`,
    /// then `m`/`dmin` where the format has one).
    pub fn f16_fields(self) -> &'static [usize] {
        match self {
            WeightFormat::F32
            | WeightFormat::F16
            | WeightFormat::BF16
            | WeightFormat::F8_E4M3
            | WeightFormat::Int { .. } => &[],
            WeightFormat::Q4_1 | WeightFormat::Q5_1 | WeightFormat::Q4_K | WeightFormat::Q5_K => {
                &[0, 2]
            }
            WeightFormat::Q2_K => &[80, 82],
            WeightFormat::Q3_K => &[108],
            WeightFormat::Q6_K => &[208],
            _ => &[0],
        }
    }

    /// Bytes of per-row scales after a packed group's elements (FP8: 16 f32).
    pub(crate) fn row_scale_bytes(self) -> usize {
        if self == WeightFormat::F8_E4M3 { 64 } else { 0 }
    }

    /// Bytes per element (float formats).
    pub(crate) fn elem_bytes(self) -> usize {
        match self {
            WeightFormat::F32 => 4,
            WeightFormat::F8_E4M3 => 1,
            _ => 2,
        }
    }

    /// The kernels' view of a block format (`None` for float formats).
    /// Inlined so that kernels specialized on a constant format fold it.
    #[inline(always)]
    pub(crate) fn packing(self) -> Option<Packing> {
        let legacy = |code_bits, planes, offset, min| Packing {
            code_bits,
            planes,
            lut: false,
            offset,
            subs: 1,
            sub_scale: SubScale::None,
            unit_blocks: 1,
            d_bf16: false,
            min,
        };
        let k = |code_bits, planes, offset, subs, sub_scale, min| Packing {
            code_bits,
            planes,
            lut: false,
            offset,
            subs,
            sub_scale,
            unit_blocks: 8,
            d_bf16: false,
            min,
        };
        Some(match self {
            WeightFormat::F32 | WeightFormat::F16 | WeightFormat::BF16 | WeightFormat::F8_E4M3 => {
                return None;
            }
            WeightFormat::Q4_0 => legacy(4, 0, 8, MinKind::None),
            WeightFormat::Q4_1 => legacy(4, 0, 0, MinKind::Add),
            WeightFormat::Q8_0 => legacy(8, 0, 128, MinKind::None),
            WeightFormat::Q5_0 => legacy(4, 1, 16, MinKind::None),
            WeightFormat::Q5_1 => legacy(4, 1, 0, MinKind::Add),
            WeightFormat::IQ4_NL => Packing {
                lut: true,
                ..legacy(4, 0, 128, MinKind::None)
            },
            WeightFormat::Q2_K => k(2, 0, 0, 2, SubScale::Q2K, MinKind::SubQ2K),
            WeightFormat::Q3_K => k(2, 1, 4, 2, SubScale::I8, MinKind::None),
            WeightFormat::Q4_K => k(4, 0, 0, 1, SubScale::U8, MinKind::SubBytes),
            WeightFormat::Q5_K => k(4, 1, 0, 1, SubScale::U8, MinKind::SubBytes),
            WeightFormat::Q6_K => k(4, 2, 32, 2, SubScale::I8, MinKind::None),
            WeightFormat::IQ4_XS => Packing {
                lut: true,
                ..k(4, 0, 128, 1, SubScale::I8, MinKind::None)
            },
            WeightFormat::Int { bits, bf16_scales } => Packing {
                code_bits: if bits == 3 { 2 } else { bits as u32 },
                planes: usize::from(bits == 3),
                unit_blocks: 0,
                d_bf16: bf16_scales,
                ..legacy(4, 0, 0, MinKind::Zero)
            },
        })
    }
}

impl Packing {
    /// Code bytes per 32-block and 16-row group.
    pub(crate) fn code_bytes(&self) -> usize {
        16 * 32 * self.code_bits as usize / 8
    }

    /// True when the sub-blocks are 16 weights (two per 32-block).
    pub(crate) fn sub16(&self) -> bool {
        self.subs == 2
    }

    /// True when the format has a second f16 per unit (`m` or `dmin`).
    pub(crate) fn has_unit_min(&self) -> bool {
        matches!(self.min, MinKind::Add | MinKind::SubBytes | MinKind::SubQ2K)
    }
}
