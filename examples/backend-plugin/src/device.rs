//! The example device: buffers and weights kept in tables behind opaque
//! handles, and one method per operation that reads its operands, calls
//! [`crate::kernels`] and writes the results back.

use std::collections::HashMap;

use half::{bf16, f16};
use kiln_plugin_abi::ops::*;
use kiln_plugin_abi::plugin::{DevicePlugin, PluginError, PluginResult, WeightDescRef};
use kiln_plugin_abi::*;

use crate::kernels::{self, AttentionShape, Matrix, RopeShape, RopeStyle, RopeTables, Sequence};

/// The operations this device runs: everything a Llama decoder queues except
/// [`OP_SAMPLE`] (without it, the engine samples on the host).
pub const SUPPORTED_OPS: [u32; 12] = [
    OP_EMBEDDING,
    OP_RMS_NORM,
    OP_ADD_RMS_NORM,
    OP_LINEAR,
    OP_ROPE,
    OP_SILU_MUL,
    OP_ADD,
    OP_KV_WRITE,
    OP_ATTENTION,
    OP_GATHER_ROWS,
    OP_COPY_BLOCKS,
    OP_CAST,
];

/// Objects of one kind behind handles. The host sees a handle as an opaque
/// pointer; here it is a key into a map (0, the null handle, is never issued).
struct Handles<T> {
    items: HashMap<usize, T>,
    next: usize,
}

impl<T> Handles<T> {
    fn new() -> Self {
        Handles {
            items: HashMap::new(),
            next: 1,
        }
    }

    fn insert(&mut self, item: T) -> *mut std::ffi::c_void {
        let key = self.next;
        self.next += 1;
        self.items.insert(key, item);
        std::ptr::without_provenance_mut(key)
    }

    fn remove(&mut self, handle: *mut std::ffi::c_void) -> Option<T> {
        self.items.remove(&handle.addr())
    }

    fn get(&self, handle: *mut std::ffi::c_void) -> PluginResult<&T> {
        self.items
            .get(&handle.addr())
            .ok_or_else(|| PluginError::invalid("unknown or released handle"))
    }

    fn get_mut(&mut self, handle: *mut std::ffi::c_void) -> PluginResult<&mut T> {
        self.items
            .get_mut(&handle.addr())
            .ok_or_else(|| PluginError::invalid("unknown or released handle"))
    }
}

/// The example device: host memory, f32 activations, one thread.
pub struct ExampleDevice {
    buffers: Handles<Vec<u8>>,
    weights: Handles<Matrix>,
}

impl Default for ExampleDevice {
    fn default() -> Self {
        ExampleDevice::new()
    }
}

/// `(available, total)` host memory in bytes, from `/proc/meminfo` where
/// there is one, else a guess of 8 GiB.
pub fn host_memory() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse::<u64>().ok())
            .map(|kib| kib * 1024)
    };
    match (field("MemAvailable:"), field("MemTotal:")) {
        (Some(free), Some(total)) => (free, total),
        _ => (8 << 30, 8 << 30),
    }
}

// ---- Reading and writing tensors ------------------------------------------

fn f32_from(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn f32_to(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Values of a float tensor in any of the three float dtypes, as f32.
fn floats_from(dtype: KilnDType, bytes: &[u8]) -> PluginResult<Vec<f32>> {
    let pairs = bytes.chunks_exact(2).map(|c| [c[0], c[1]]);
    Ok(match dtype {
        KILN_F32 => f32_from(bytes),
        KILN_F16 => pairs.map(|b| f16::from_le_bytes(b).to_f32()).collect(),
        KILN_BF16 => pairs.map(|b| bf16::from_le_bytes(b).to_f32()).collect(),
        other => {
            return Err(PluginError::unsupported(format!(
                "cannot read dtype {other} as floats"
            )));
        }
    })
}

/// f32 values encoded in a float dtype.
fn floats_to(dtype: KilnDType, values: &[f32]) -> PluginResult<Vec<u8>> {
    Ok(match dtype {
        KILN_F32 => f32_to(values),
        KILN_F16 => values
            .iter()
            .flat_map(|v| f16::from_f32(*v).to_le_bytes())
            .collect(),
        KILN_BF16 => values
            .iter()
            .flat_map(|v| bf16::from_f32(*v).to_le_bytes())
            .collect(),
        other => {
            return Err(PluginError::unsupported(format!(
                "cannot write floats as dtype {other}"
            )));
        }
    })
}

/// Number of elements of `t`, without overflow.
fn numel(t: &KilnTensor) -> PluginResult<usize> {
    if t.rank > 4 {
        return Err(PluginError::invalid(format!(
            "a tensor of rank {} (at most 4)",
            t.rank
        )));
    }
    t.dims[..t.rank as usize]
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(usize::try_from(d).ok()?))
        .ok_or_else(|| PluginError::invalid("tensor dimensions overflow"))
}

/// Dimension `i` of `t` (1 past its rank).
fn dim(t: &KilnTensor, i: usize) -> usize {
    if i < t.rank as usize {
        t.dims[i] as usize
    } else {
        1
    }
}

fn require_f32(t: &KilnTensor) -> PluginResult<()> {
    if t.dtype == KILN_F32 {
        Ok(())
    } else {
        Err(PluginError::unsupported(format!(
            "the example backend computes in f32, not dtype {} (use --dtype float32)",
            t.dtype
        )))
    }
}

fn check_len(what: &str, len: usize, expected: usize) -> PluginResult<()> {
    if len == expected {
        Ok(())
    } else {
        Err(PluginError::invalid(format!(
            "{what} has {len} elements, expected {expected}"
        )))
    }
}

/// An i32 index as a `usize` below `limit`.
fn index(what: &str, i: i32, limit: usize) -> PluginResult<usize> {
    usize::try_from(i)
        .ok()
        .filter(|&i| i < limit)
        .ok_or_else(|| PluginError::invalid(format!("{what} {i} outside 0..{limit}")))
}

// ---- Weights ----------------------------------------------------------------

fn format_name(format: KilnWeightFormat) -> String {
    match format {
        KILN_WEIGHT_GGUF_Q4_0 => "GGUF Q4_0".into(),
        KILN_WEIGHT_GGUF_Q4_1 => "GGUF Q4_1".into(),
        KILN_WEIGHT_GGUF_Q8_0 => "GGUF Q8_0".into(),
        KILN_WEIGHT_GGUF_Q4_K => "GGUF Q4_K".into(),
        KILN_WEIGHT_GGUF_Q6_K => "GGUF Q6_K".into(),
        KILN_WEIGHT_GGUF_Q5_0 => "GGUF Q5_0".into(),
        KILN_WEIGHT_GGUF_Q5_1 => "GGUF Q5_1".into(),
        KILN_WEIGHT_GGUF_Q2_K => "GGUF Q2_K".into(),
        KILN_WEIGHT_GGUF_Q3_K => "GGUF Q3_K".into(),
        KILN_WEIGHT_GGUF_Q5_K => "GGUF Q5_K".into(),
        KILN_WEIGHT_GGUF_IQ4_NL => "GGUF IQ4_NL".into(),
        KILN_WEIGHT_GGUF_IQ4_XS => "GGUF IQ4_XS".into(),
        KILN_WEIGHT_GPTQ => "GPTQ".into(),
        KILN_WEIGHT_AWQ => "AWQ".into(),
        KILN_WEIGHT_INT8 => "int8".into(),
        other => format!("format {other}"),
    }
}

/// The element type of an unquantized float weight format; `None` for the
/// quantized formats this device does not run.
fn float_format(format: KilnWeightFormat) -> Option<KilnDType> {
    match format {
        KILN_WEIGHT_F32 => Some(KILN_F32),
        KILN_WEIGHT_F16 => Some(KILN_F16),
        KILN_WEIGHT_BF16 => Some(KILN_BF16),
        _ => None,
    }
}

/// Decode a weight's data part into an f32 [`Matrix`].
fn decode_weight(desc: WeightDescRef<'_>) -> PluginResult<Matrix> {
    let d = desc.desc;
    let dtype = float_format(d.format).ok_or_else(|| {
        PluginError::unsupported(format!(
            "weight `{}` is quantized ({}); the example backend runs only f32, f16 and bf16 \
             weights: use an unquantized checkpoint or the cpu backend",
            desc.name(),
            format_name(d.format)
        ))
    })?;
    let (_, bytes) = desc.part(KILN_PART_DATA).ok_or_else(|| {
        PluginError::invalid(format!("weight `{}` has no data part", desc.name()))
    })?;
    let (rows, cols) = (d.rows as usize, d.cols as usize);
    let expected = rows
        .checked_mul(cols)
        .and_then(|n| n.checked_mul(dtype_size(dtype) as usize));
    if expected != Some(bytes.len()) {
        return Err(PluginError::invalid(format!(
            "weight `{}` [{rows}, {cols}] has {} bytes of data",
            desc.name(),
            bytes.len()
        )));
    }
    Ok(Matrix {
        rows,
        cols,
        values: floats_from(dtype, bytes)?,
    })
}

impl ExampleDevice {
    /// A device with no buffers or weights.
    pub fn new() -> ExampleDevice {
        ExampleDevice {
            buffers: Handles::new(),
            weights: Handles::new(),
        }
    }

    /// The bytes a tensor views, checked against its buffer.
    fn bytes(&self, t: &KilnTensor) -> PluginResult<&[u8]> {
        let range = self.range(t)?;
        Ok(&self.buffers.get(t.buffer.0)?[range])
    }

    fn bytes_mut(&mut self, t: &KilnTensor) -> PluginResult<&mut [u8]> {
        let range = self.range(t)?;
        Ok(&mut self.buffers.get_mut(t.buffer.0)?[range])
    }

    fn range(&self, t: &KilnTensor) -> PluginResult<std::ops::Range<usize>> {
        if t.is_none() {
            return Err(PluginError::invalid("a required tensor operand is missing"));
        }
        let len = numel(t)?
            .checked_mul(dtype_size(t.dtype) as usize)
            .ok_or_else(|| PluginError::invalid("tensor size overflows"))?;
        let start =
            usize::try_from(t.offset).map_err(|_| PluginError::invalid("offset overflows"))?;
        let buffer_len = self.buffers.get(t.buffer.0)?.len();
        match start.checked_add(len) {
            Some(end) if end <= buffer_len => Ok(start..end),
            _ => Err(PluginError::invalid(format!(
                "a tensor of {len} bytes at offset {start} exceeds its {buffer_len}-byte buffer"
            ))),
        }
    }

    /// An f32 tensor's values.
    fn read_f32(&self, t: &KilnTensor) -> PluginResult<Vec<f32>> {
        require_f32(t)?;
        Ok(f32_from(self.bytes(t)?))
    }

    /// An i32 tensor's values.
    fn read_i32(&self, t: &KilnTensor) -> PluginResult<Vec<i32>> {
        if t.dtype != KILN_I32 {
            return Err(PluginError::invalid("index tensors must be i32"));
        }
        let bytes = self.bytes(t)?;
        Ok(bytes
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    /// Overwrite an f32 tensor with `values` (exactly its size).
    fn write_f32(&mut self, t: &KilnTensor, values: &[f32]) -> PluginResult<()> {
        require_f32(t)?;
        check_len("an output", values.len(), numel(t)?)?;
        self.bytes_mut(t)?.copy_from_slice(&f32_to(values));
        Ok(())
    }

    fn matrix(&self, w: KilnWeight) -> PluginResult<&Matrix> {
        if w.is_null() {
            return Err(PluginError::invalid("a required weight operand is missing"));
        }
        self.weights.get(w.0)
    }

    /// A `[1, n]` weight (norm scale, bias) as a vector of `n`.
    fn vector(&self, w: KilnWeight, n: usize) -> PluginResult<&[f32]> {
        let m = self.matrix(w)?;
        check_len("a vector weight", m.values.len(), n)?;
        Ok(&m.values)
    }

    // ---- Operations (operands decoded by the views in `kiln_plugin_abi::ops`) --

    fn run(&mut self, op: &KilnOp) -> PluginResult<()> {
        if !SUPPORTED_OPS.contains(&op.opcode) {
            return Err(PluginError::unsupported(format!(
                "operation {} ({}) is not supported by the example backend",
                opcode_name(op.opcode),
                op.opcode
            )));
        }
        match Op::decode(op)? {
            Op::Embedding(e) => self.embedding(&e),
            Op::RmsNorm(n) => self.rms_norm(&n),
            Op::AddRmsNorm(n) => self.add_rms_norm(&n),
            Op::Linear(l) => self.linear(&l),
            Op::Rope(r) => self.rope(&r),
            Op::SiluMul(s) => self.elementwise([s.gate, s.up, s.out], kernels::silu_mul),
            Op::Add(a) => self.elementwise([a.a, a.b, a.out], kernels::add),
            Op::KvWrite(w) => self.kv_write(&w),
            Op::Attention(a) => self.attention(&a),
            Op::GatherRows(g) => self.gather_rows(&g),
            Op::CopyBlocks(c) => self.copy_blocks(&c),
            Op::Cast(c) => self.cast(&c),
            _ => Err(PluginError::internal(format!(
                "{} is in SUPPORTED_OPS but has no implementation",
                opcode_name(op.opcode)
            ))),
        }
    }

    fn embedding(&mut self, e: &Embedding) -> PluginResult<()> {
        let ids = self.read_i32(&e.ids)?;
        let table = self.matrix(e.table)?;
        let mut out = Vec::with_capacity(ids.len() * table.cols);
        for &id in &ids {
            out.extend_from_slice(table.row(index("token id", id, table.rows)?));
        }
        self.write_f32(&e.out, &out)
    }

    fn rms_norm(&mut self, n: &RmsNorm) -> PluginResult<()> {
        let x = self.read_f32(&n.x)?;
        let gamma = self.vector(n.gamma, dim(&n.x, 1))?;
        let mut out = vec![0.0; x.len()];
        kernels::rms_norm(&x, gamma, n.eps, &mut out);
        self.write_f32(&n.out, &out)
    }

    fn add_rms_norm(&mut self, n: &AddRmsNorm) -> PluginResult<()> {
        let xs = self.read_f32(&n.x)?;
        let mut res = self.read_f32(&n.residual)?;
        check_len("the residual", res.len(), xs.len())?;
        let gamma = self.vector(n.gamma, dim(&n.x, 1))?;
        let mut normed = vec![0.0; xs.len()];
        kernels::add_rms_norm(&xs, &mut res, gamma, n.eps, &mut normed);
        self.write_f32(&n.residual, &res)?;
        self.write_f32(&n.out, &normed)
    }

    /// `decode_rows` is a hint this device does not need.
    fn linear(&mut self, l: &Linear) -> PluginResult<()> {
        let (x_t, out_t) = (&l.x, &l.out);
        let x = self.read_f32(x_t)?;
        let w = self.matrix(l.weight)?;
        let n = dim(x_t, 0);
        if dim(x_t, 1) != w.cols || dim(out_t, 1) != w.rows || dim(out_t, 0) != n {
            return Err(PluginError::invalid(format!(
                "x [{n}, {}], W [{}, {}] and out [{}, {}] do not fit",
                dim(x_t, 1),
                w.rows,
                w.cols,
                dim(out_t, 0),
                dim(out_t, 1)
            )));
        }
        let bias = if l.bias.is_null() {
            None
        } else {
            Some(self.vector(l.bias, w.rows)?)
        };
        let mut out = match l.accumulate {
            Accumulate::Add => self.read_f32(out_t)?,
            Accumulate::Overwrite => vec![0.0; n * w.rows],
        };
        kernels::linear(&x, w, bias, &mut out, l.accumulate);
        self.write_f32(out_t, &out)
    }

    fn rope(&mut self, r: &Rope) -> PluginResult<()> {
        let shape = RopeShape {
            head_dim: r.head_dim as usize,
            rotary_dim: r.rotary_dim as usize,
            style: if r.style == ROPE_INTERLEAVED {
                RopeStyle::Interleaved
            } else {
                RopeStyle::Neox
            },
        };
        let half = shape.rotary_dim / 2;
        if dim(&r.cos, 1) != half {
            return Err(PluginError::invalid(format!(
                "rotary dims {} and tables of width {} do not fit",
                shape.rotary_dim,
                dim(&r.cos, 1)
            )));
        }
        let (cos, sin) = (self.read_f32(&r.cos)?, self.read_f32(&r.sin)?);
        check_len("the sine table", sin.len(), cos.len())?;
        let max_pos = dim(&r.cos, 0);
        let positions = self.read_i32(&r.positions)?;
        let positions = positions
            .iter()
            .map(|&p| index("position", p, max_pos))
            .collect::<PluginResult<Vec<_>>>()?;
        let tables = RopeTables {
            cos: &cos,
            sin: &sin,
        };
        let targets = if r.k.is_none() {
            vec![r.q]
        } else {
            vec![r.q, r.k]
        };
        for target in &targets {
            if !dim(target, 1).is_multiple_of(shape.head_dim) || dim(target, 0) != positions.len() {
                return Err(PluginError::invalid(
                    "rows are not whole heads, one per position",
                ));
            }
            let mut x = self.read_f32(target)?;
            kernels::rope(&mut x, &positions, tables, shape);
            self.write_f32(target, &x)?;
        }
        Ok(())
    }

    /// `out = f(a, b)` element-wise (silu_mul, add); `out` may alias an input.
    fn elementwise(
        &mut self,
        [a, b, out]: [KilnTensor; 3],
        f: fn(&[f32], &[f32], &mut [f32]),
    ) -> PluginResult<()> {
        let (a, b) = (self.read_f32(&a)?, self.read_f32(&b)?);
        check_len("the second operand", b.len(), a.len())?;
        let mut result = vec![0.0; a.len()];
        f(&a, &b, &mut result);
        self.write_f32(&out, &result)
    }

    fn kv_write(&mut self, w: &KvWrite) -> PluginResult<()> {
        let slots = self.read_i32(&w.slot_mapping)?;
        for (rows, cache) in [(&w.k, &w.k_cache), (&w.v, &w.v_cache)] {
            let values = self.read_f32(rows)?;
            require_f32(cache)?;
            let width = dim(cache, 2) * dim(cache, 3);
            let capacity = dim(cache, 0) * dim(cache, 1);
            check_len("the key/value rows", values.len(), slots.len() * width)?;
            let bytes = self.bytes_mut(cache)?;
            for (row, &slot) in values.chunks_exact(width.max(1)).zip(&slots) {
                if slot < 0 {
                    continue;
                }
                let at = index("KV slot", slot, capacity)? * width * 4;
                bytes[at..at + width * 4].copy_from_slice(&f32_to(row));
            }
        }
        Ok(())
    }

    /// The keys (or values) of positions `from..len` of one sequence,
    /// `[len − from, kv_dim]`, read through its block table from a cache
    /// `[blocks, block_size, kv_heads, hd]`. Blocks before `from` are never
    /// touched: with a sliding window they may be another sequence's now.
    fn gather_context(
        &self,
        cache: &KilnTensor,
        table: &[i32],
        from: usize,
        len: usize,
    ) -> PluginResult<Vec<f32>> {
        require_f32(cache)?;
        let (blocks, block_size) = (dim(cache, 0), dim(cache, 1));
        let width = dim(cache, 2) * dim(cache, 3);
        let bytes = self.bytes(cache)?;
        let mut out = Vec::with_capacity(len.saturating_sub(from) * width);
        for p in from..len {
            let entry = table
                .get(p / block_size)
                .ok_or_else(|| PluginError::invalid("a sequence is longer than its block table"))?;
            let block = index("block", *entry, blocks)?;
            let at = (block * block_size + p % block_size) * width * 4;
            out.extend(f32_from(&bytes[at..at + width * 4]));
        }
        Ok(out)
    }

    fn attention(&mut self, a: &Attention) -> PluginResult<()> {
        let shape = AttentionShape {
            heads: a.num_heads as usize,
            kv_heads: a.num_kv_heads as usize,
            head_dim: a.head_dim as usize,
            scale: a.scale,
            softcap: a.softcap,
            window: a.sliding_window as usize,
        };
        let block_size = a.block_size as usize;
        let width = shape.heads * shape.head_dim;
        let (k_cache, v_cache) = (&a.k_cache, &a.v_cache);
        let fits = k_cache.rank == 4
            && k_cache.dims[1..] == [block_size, shape.kv_heads, shape.head_dim].map(|d| d as u64)
            && (k_cache.rank, k_cache.dims) == (v_cache.rank, v_cache.dims)
            && dim(&a.q, 1) == width
            && a.out.dims == a.q.dims;
        if !fits {
            return Err(PluginError::invalid(
                "the heads, head_dim and block size do not fit the queries, cache or output",
            ));
        }
        let q = self.read_f32(&a.q)?;
        let tables = self.read_i32(&a.block_tables)?;
        let (seq_lens, starts) = (
            self.read_i32(&a.seq_lens)?,
            self.read_i32(&a.query_start_loc)?,
        );
        let max_blocks = dim(&a.block_tables, 1);
        check_len("the query start offsets", starts.len(), seq_lens.len() + 1)?;
        check_len(
            "the block tables",
            tables.len(),
            seq_lens.len() * max_blocks,
        )?;
        let mut out = vec![0.0; q.len()];
        for (s, &seq_len) in seq_lens.iter().enumerate() {
            let rows = index("query start", starts[s], q.len() / width.max(1) + 1)?
                ..index("query end", starts[s + 1], q.len() / width.max(1) + 1)?;
            let context = usize::try_from(seq_len).unwrap_or(0);
            if rows.start > rows.end || context < rows.len() {
                return Err(PluginError::invalid(format!(
                    "sequence {s}: rows {rows:?} do not fit its context of {seq_len}"
                )));
            }
            let table = &tables[s * max_blocks..(s + 1) * max_blocks];
            let first_pos = context - rows.len();
            let keys_from = shape.first_key(first_pos);
            let keys = self.gather_context(k_cache, table, keys_from, context)?;
            let values = self.gather_context(v_cache, table, keys_from, context)?;
            let seq = Sequence {
                queries: &q[rows.start * width..rows.end * width],
                first_pos,
                keys_from,
                keys: &keys,
                values: &values,
            };
            kernels::attention(&seq, &shape, &mut out[rows.start * width..rows.end * width]);
        }
        self.write_f32(&a.out, &out)
    }

    fn gather_rows(&mut self, g: &GatherRows) -> PluginResult<()> {
        let x = self.read_f32(&g.x)?;
        let (rows, h) = (dim(&g.x, 0), dim(&g.x, 1));
        let mut out = Vec::new();
        for &i in &self.read_i32(&g.indices)? {
            let r = index("row", i, rows)?;
            out.extend_from_slice(&x[r * h..(r + 1) * h]);
        }
        self.write_f32(&g.out, &out)
    }

    fn copy_blocks(&mut self, c: &CopyBlocks) -> PluginResult<()> {
        let pairs = self.read_i32(&c.pairs)?;
        for cache in [&c.k_cache, &c.v_cache] {
            let blocks = dim(cache, 0);
            let block_bytes = numel(cache)? / blocks.max(1) * dtype_size(cache.dtype) as usize;
            let bytes = self.bytes_mut(cache)?;
            for pair in pairs.chunks_exact(2) {
                let src = index("source block", pair[0], blocks)? * block_bytes;
                let dst = index("destination block", pair[1], blocks)? * block_bytes;
                bytes.copy_within(src..src + block_bytes, dst);
            }
        }
        Ok(())
    }

    /// Any of f32, f16 and bf16 to any other.
    fn cast(&mut self, c: &Cast) -> PluginResult<()> {
        check_len("the cast output", numel(&c.out)?, numel(&c.input)?)?;
        let values = floats_from(c.input.dtype, self.bytes(&c.input)?)?;
        let bytes = floats_to(c.out.dtype, &values)?;
        self.bytes_mut(&c.out)?.copy_from_slice(&bytes);
        Ok(())
    }
}

impl DevicePlugin for ExampleDevice {
    fn memory_info(&self) -> PluginResult<(u64, u64)> {
        Ok(host_memory())
    }

    fn alloc_buffer(&mut self, bytes: u64) -> PluginResult<KilnBuffer> {
        let oom =
            || PluginError::out_of_memory(format!("cannot allocate {bytes} bytes of host memory"));
        let len = usize::try_from(bytes).map_err(|_| oom())?;
        let mut memory = Vec::new();
        memory.try_reserve_exact(len).map_err(|_| oom())?;
        memory.resize(len, 0u8);
        Ok(KilnBuffer(self.buffers.insert(memory)))
    }

    fn free_buffer(&mut self, buf: KilnBuffer) {
        self.buffers.remove(buf.0);
    }

    fn write_buffer(&mut self, buf: KilnBuffer, offset: u64, data: &[u8]) -> PluginResult<()> {
        let memory = self.buffers.get_mut(buf.0)?;
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let target = start
            .checked_add(data.len())
            .and_then(|end| memory.get_mut(start..end))
            .ok_or_else(|| PluginError::invalid("write outside the buffer"))?;
        target.copy_from_slice(data);
        Ok(())
    }

    fn read_buffer(&mut self, buf: KilnBuffer, offset: u64, out: &mut [u8]) -> PluginResult<()> {
        let memory = self.buffers.get(buf.0)?;
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let source = start
            .checked_add(out.len())
            .and_then(|end| memory.get(start..end))
            .ok_or_else(|| PluginError::invalid("read outside the buffer"))?;
        out.copy_from_slice(source);
        Ok(())
    }

    fn copy_buffer(&mut self, copy: &KilnBufferCopy) -> PluginResult<()> {
        let memory = self.buffers.get(copy.src.0)?;
        let start = usize::try_from(copy.src_offset).unwrap_or(usize::MAX);
        let len = usize::try_from(copy.len).unwrap_or(usize::MAX);
        let staging = start
            .checked_add(len)
            .and_then(|end| memory.get(start..end))
            .ok_or_else(|| PluginError::invalid("copy from outside the source buffer"))?
            .to_vec();
        self.write_buffer(copy.dst, copy.dst_offset, &staging)
    }

    fn synchronize(&mut self) -> PluginResult<()> {
        // Every operation finished before `execute` returned.
        Ok(())
    }

    fn prepare_weight(&mut self, desc: WeightDescRef<'_>) -> PluginResult<KilnWeight> {
        let matrix = decode_weight(desc)?;
        Ok(KilnWeight(self.weights.insert(matrix)))
    }

    fn release_weight(&mut self, weight: KilnWeight) {
        self.weights.remove(weight.0);
    }

    fn supports(&self, query: &KilnSupportQuery) -> bool {
        let weight_ok =
            query.weight_format == KILN_WEIGHT_NONE || float_format(query.weight_format).is_some();
        SUPPORTED_OPS.contains(&query.opcode) && weight_ok && query.act_dtype == KILN_F32
    }

    fn execute(&mut self, ops: &[KilnOp]) -> PluginResult<()> {
        for op in ops {
            self.run(op).map_err(|e| PluginError {
                message: format!("{}: {}", opcode_name(op.opcode), e.message),
                ..e
            })?;
        }
        Ok(())
    }
}
