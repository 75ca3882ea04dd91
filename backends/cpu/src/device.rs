//! The CPU device: host-memory buffers, prepared weights and op dispatch.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::sync::atomic::{AtomicU64, Ordering};

use kiln_kernels_cpu::activation::{self, Activation};
use kiln_kernels_cpu::attention::{self, AttentionBatch, AttentionShape, KvCache, KvCacheMut};
use kiln_kernels_cpu::matmul::{Matmul, WeightFormat, WeightMatrix, matmul};
use kiln_kernels_cpu::moe::{self, Moe, MoeShape, SharedExpert};
use kiln_kernels_cpu::ops::{self, RopeShape, RopeStyle};
use kiln_kernels_cpu::pool::ThreadPool;
use kiln_kernels_cpu::weights::IntParts;
use kiln_plugin_abi::ops::{
    self as abi, ACT_GELU, ACT_GELU_TANH, ACT_RELU, ACT_SILU, Op, opcode_name,
};
use kiln_plugin_abi::plugin::{DevicePlugin, PluginError, PluginResult, WeightDescRef};
use kiln_plugin_abi::*;

const ALIGN: usize = 64;

/// A host buffer: large ones are anonymous memory maps (zero pages until
/// written, so a multi-GiB KV cache costs nothing until used), small ones
/// 64-byte aligned heap blocks.
struct HostBuf {
    ptr: *mut u8,
    bytes: usize,
    map: Option<memmap2::MmapMut>,
}

/// Buffers from this size on are memory maps.
const MAP_FROM: usize = 1 << 20;

impl HostBuf {
    fn alloc(bytes: u64) -> PluginResult<HostBuf> {
        let bytes =
            usize::try_from(bytes).map_err(|_| PluginError::out_of_memory("buffer too large"))?;
        if bytes >= MAP_FROM {
            let mut map = memmap2::MmapMut::map_anon(bytes).map_err(|e| {
                PluginError::out_of_memory(format!(
                    "cannot map {} MiB of host memory: {e}",
                    bytes >> 20
                ))
            })?;
            return Ok(HostBuf {
                ptr: map.as_mut_ptr(),
                bytes,
                map: Some(map),
            });
        }
        let layout = Layout::from_size_align(bytes.max(1), ALIGN)
            .map_err(|_| PluginError::out_of_memory(format!("cannot allocate {bytes} bytes")))?;
        // SAFETY: non-zero size, valid alignment.
        let ptr = unsafe { alloc_zeroed(layout) };
        if ptr.is_null() {
            return Err(PluginError::out_of_memory(format!(
                "cannot allocate {} MiB of host memory",
                bytes >> 20
            )));
        }
        Ok(HostBuf {
            ptr,
            bytes,
            map: None,
        })
    }
}

impl Drop for HostBuf {
    fn drop(&mut self) {
        if self.map.is_some() {
            return; // unmapped when `map` drops
        }
        // SAFETY: allocated in `alloc` with this layout.
        unsafe {
            dealloc(
                self.ptr,
                Layout::from_size_align_unchecked(self.bytes.max(1), ALIGN),
            )
        };
    }
}

enum CpuWeight {
    Matrix(WeightMatrix),
    Vector(Vec<f32>),
}

impl CpuWeight {
    /// Bytes this weight holds in memory.
    fn bytes(&self) -> usize {
        match self {
            CpuWeight::Matrix(m) => m.bytes(),
            CpuWeight::Vector(v) => v.len() * 4,
        }
    }
}

/// Bytes held by every live weight of every CPU device in this process.
static HELD_WEIGHT_BYTES: AtomicU64 = AtomicU64::new(0);

/// Bytes of weight memory the CPU backend holds right now, across devices:
/// the packed matrices (with their group padding) and the f32 vectors.
pub fn held_weight_bytes() -> u64 {
    HELD_WEIGHT_BYTES.load(Ordering::Relaxed)
}

/// A device whose operations run on its own thread pool, over host memory.
pub struct CpuDevice {
    pool: ThreadPool,
}

// SAFETY: raw buffer pointers are owned by the device's handles; the host
// serializes calls into a device.
unsafe impl Send for CpuDevice {}

fn kernel_format(format: KilnWeightFormat) -> PluginResult<WeightFormat> {
    Ok(match format {
        KILN_WEIGHT_F32 => WeightFormat::F32,
        KILN_WEIGHT_F16 => WeightFormat::F16,
        KILN_WEIGHT_BF16 => WeightFormat::BF16,
        KILN_WEIGHT_GGUF_Q4_0 => WeightFormat::Q4_0,
        KILN_WEIGHT_GGUF_Q4_1 => WeightFormat::Q4_1,
        KILN_WEIGHT_GGUF_Q8_0 => WeightFormat::Q8_0,
        KILN_WEIGHT_GGUF_Q5_0 => WeightFormat::Q5_0,
        KILN_WEIGHT_GGUF_Q5_1 => WeightFormat::Q5_1,
        KILN_WEIGHT_GGUF_Q2_K => WeightFormat::Q2_K,
        KILN_WEIGHT_GGUF_Q3_K => WeightFormat::Q3_K,
        KILN_WEIGHT_GGUF_Q4_K => WeightFormat::Q4_K,
        KILN_WEIGHT_GGUF_Q5_K => WeightFormat::Q5_K,
        KILN_WEIGHT_GGUF_Q6_K => WeightFormat::Q6_K,
        KILN_WEIGHT_GGUF_IQ4_NL => WeightFormat::IQ4_NL,
        KILN_WEIGHT_GGUF_IQ4_XS => WeightFormat::IQ4_XS,
        other => {
            return Err(PluginError::unsupported(format!(
                "weight format {other} is not supported by the CPU backend yet"
            )));
        }
    })
}

fn activation_kind(kind: i64) -> PluginResult<Activation> {
    Ok(match kind {
        ACT_SILU => Activation::Silu,
        ACT_GELU_TANH => Activation::GeluTanh,
        ACT_GELU => Activation::Gelu,
        ACT_RELU => Activation::Relu,
        other => {
            return Err(PluginError::unsupported(format!(
                "activation kind {other} is not supported by the CPU backend"
            )));
        }
    })
}

/// A `KILN_WEIGHT_INT_GROUPS` weight from its parts.
fn int_groups(desc: &WeightDescRef<'_>) -> PluginResult<WeightMatrix> {
    let d = desc.desc;
    let name = desc.name();
    let part = |role, what: &str| desc.required_part(role, what);
    let (_, codes) = part(KILN_PART_DATA, "code")?;
    let (scale_part, scale_bytes) = part(KILN_PART_SCALES, "scale")?;
    let (_, zeros) = part(KILN_PART_ZEROS, "zero-point")?;
    let bf16_scales = match scale_part.dtype {
        KILN_F16 => false,
        KILN_BF16 => true,
        other => {
            return Err(PluginError::invalid(format!(
                "weight {name}: scales of dtype {other} (f16 or bf16 expected)"
            )));
        }
    };
    let scales: Vec<u16> = scale_bytes
        .chunks_exact(2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .collect();
    let perm: Option<Vec<u32>> = desc.part(KILN_PART_GROUP_INDEX).map(|(_, b)| {
        b.chunks_exact(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect()
    });
    let u8_of = |v: u32, what: &str| {
        u8::try_from(v).map_err(|_| PluginError::invalid(format!("weight {name}: {what} {v}")))
    };
    WeightMatrix::from_int(IntParts {
        bits: u8_of(d.bits, "bits")?,
        bf16_scales,
        rows: d.rows as usize,
        cols: d.cols as usize,
        group: d.group_size as usize,
        codes,
        scales: &scales,
        zeros,
        perm: perm.as_deref(),
    })
    .map_err(|e| PluginError::invalid(format!("weight {name}: {e}")))
}

/// A `KILN_WEIGHT_FP8_E4M3` weight from its parts.
fn fp8_e4m3(desc: &WeightDescRef<'_>) -> PluginResult<WeightMatrix> {
    let d = desc.desc;
    let name = desc.name();
    let part = |role, what: &str| desc.required_part(role, what);
    let (_, codes) = part(KILN_PART_DATA, "code")?;
    let (scale_part, scale_bytes) = part(KILN_PART_SCALES, "scale")?;
    if scale_part.dtype != KILN_F32 {
        return Err(PluginError::invalid(format!(
            "weight {name}: FP8 row scales of dtype {} (f32 expected)",
            scale_part.dtype
        )));
    }
    let scales: Vec<f32> = scale_bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    WeightMatrix::from_fp8(d.rows as usize, d.cols as usize, codes, &scales)
        .map_err(|e| PluginError::invalid(format!("weight {name}: {e}")))
}

/// Base pointer of a tensor, checked against its buffer.
fn base(t: &KilnTensor) -> PluginResult<*mut u8> {
    if t.is_none() {
        return Err(PluginError::invalid("missing tensor operand"));
    }
    // SAFETY: the host passes live buffer handles of this device.
    let buf = unsafe { &*(t.buffer.0 as *const HostBuf) };
    let end = t.offset.checked_add(t.byte_len());
    if end.is_none_or(|e| e > buf.bytes as u64) {
        return Err(PluginError::invalid(format!(
            "tensor of {} bytes at offset {} exceeds its {}-byte buffer",
            t.byte_len(),
            t.offset,
            buf.bytes
        )));
    }
    // SAFETY: in bounds per the check above.
    Ok(unsafe { buf.ptr.add(t.offset as usize) })
}

fn f32s<'a>(t: &KilnTensor) -> PluginResult<&'a [f32]> {
    if t.dtype != KILN_F32 {
        return Err(PluginError::unsupported(
            "the CPU backend computes in f32 (use --dtype float32)",
        ));
    }
    // SAFETY: bounds checked in `base`; buffers are 64-byte aligned and offsets multiples of 4.
    Ok(unsafe { std::slice::from_raw_parts(base(t)? as *const f32, t.numel() as usize) })
}

fn f32s_mut<'a>(t: &KilnTensor) -> PluginResult<&'a mut [f32]> {
    if t.dtype != KILN_F32 {
        return Err(PluginError::unsupported(
            "the CPU backend computes in f32 (use --dtype float32)",
        ));
    }
    // SAFETY: as in `f32s`; callers never hold another view of the same bytes.
    Ok(unsafe { std::slice::from_raw_parts_mut(base(t)? as *mut f32, t.numel() as usize) })
}

fn i32s<'a>(t: &KilnTensor) -> PluginResult<&'a [i32]> {
    if t.dtype != KILN_I32 {
        return Err(PluginError::invalid("index tensors must be i32"));
    }
    // SAFETY: bounds checked in `base`.
    Ok(unsafe { std::slice::from_raw_parts(base(t)? as *const i32, t.numel() as usize) })
}

fn i32s_mut<'a>(t: &KilnTensor) -> PluginResult<&'a mut [i32]> {
    if t.dtype != KILN_I32 {
        return Err(PluginError::invalid("index outputs must be i32"));
    }
    // SAFETY: bounds checked in `base`; callers never hold another view of the same bytes.
    Ok(unsafe { std::slice::from_raw_parts_mut(base(t)? as *mut i32, t.numel() as usize) })
}

fn raw_bytes<'a>(t: &KilnTensor) -> PluginResult<&'a [u8]> {
    // SAFETY: bounds checked in `base`.
    Ok(unsafe { std::slice::from_raw_parts(base(t)? as *const u8, t.byte_len() as usize) })
}

fn kv<'a>(t: &KilnTensor) -> PluginResult<KvCache<'a>> {
    let p = base(t)?;
    let n = t.numel() as usize;
    // SAFETY: bounds checked in `base`.
    Ok(match t.dtype {
        KILN_F32 => KvCache::F32(unsafe { std::slice::from_raw_parts(p as *const f32, n) }),
        KILN_F16 => KvCache::F16(unsafe { std::slice::from_raw_parts(p as *const u16, n) }),
        other => return Err(PluginError::unsupported(format!("KV cache dtype {other}"))),
    })
}

fn kv_mut<'a>(t: &KilnTensor) -> PluginResult<KvCacheMut<'a>> {
    let p = base(t)?;
    let n = t.numel() as usize;
    // SAFETY: bounds checked in `base`; keys and values live in separate buffers.
    Ok(match t.dtype {
        KILN_F32 => KvCacheMut::F32(unsafe { std::slice::from_raw_parts_mut(p as *mut f32, n) }),
        KILN_F16 => KvCacheMut::F16(unsafe { std::slice::from_raw_parts_mut(p as *mut u16, n) }),
        other => return Err(PluginError::unsupported(format!("KV cache dtype {other}"))),
    })
}

fn same_memory(a: &KilnTensor, b: &KilnTensor) -> bool {
    a.buffer == b.buffer && a.offset == b.offset
}

fn overlaps(a: &KilnTensor, b: &KilnTensor) -> bool {
    a.buffer == b.buffer && a.offset < b.offset + b.byte_len() && b.offset < a.offset + a.byte_len()
}

/// # Safety
/// `w` must be null or a live weight handle of this device.
unsafe fn weight<'a>(w: KilnWeight) -> PluginResult<&'a CpuWeight> {
    if w.is_null() {
        return Err(PluginError::invalid("missing weight operand"));
    }
    // SAFETY: guaranteed by the caller.
    Ok(unsafe { &*(w.0 as *const CpuWeight) })
}

fn matrix<'a>(w: KilnWeight) -> PluginResult<&'a WeightMatrix> {
    // SAFETY: the host passes weight handles of this device.
    match unsafe { weight(w) }? {
        CpuWeight::Matrix(m) => Ok(m),
        CpuWeight::Vector(_) => Err(PluginError::invalid("a vector weight was used as a matrix")),
    }
}

fn vector<'a>(w: KilnWeight) -> PluginResult<&'a [f32]> {
    // SAFETY: the host passes weight handles of this device.
    match unsafe { weight(w) }? {
        CpuWeight::Vector(v) => Ok(v),
        CpuWeight::Matrix(_) => Err(PluginError::invalid("a matrix weight was used as a vector")),
    }
}

impl CpuDevice {
    /// A device with `threads` compute threads.
    pub fn new(threads: usize) -> CpuDevice {
        CpuDevice {
            pool: ThreadPool::new(threads),
        }
    }

    fn op(&self, op: &KilnOp) -> PluginResult<()> {
        match Op::decode(op)? {
            Op::Embedding(e) => {
                ops::embedding(matrix(e.table)?, i32s(&e.ids)?, f32s_mut(&e.out)?);
            }
            Op::RmsNorm(n) => self.rms_norm(&n)?,
            Op::AddRmsNorm(n) => {
                let h = n.x.dims[1] as usize;
                ops::add_rms_norm(
                    &self.pool,
                    f32s(&n.x)?,
                    f32s_mut(&n.residual)?,
                    vector(n.gamma)?,
                    n.eps,
                    f32s_mut(&n.out)?,
                    h,
                );
            }
            Op::Linear(l) => self.linear(&l)?,
            Op::Rope(r) => self.rope(&r)?,
            Op::SiluMul(s) => {
                if !same_memory(&s.out, &s.gate) {
                    f32s_mut(&s.out)?.copy_from_slice(f32s(&s.gate)?);
                }
                ops::silu_mul(f32s_mut(&s.out)?, f32s(&s.up)?);
            }
            Op::Add(a) => {
                if same_memory(&a.out, &a.b) {
                    ops::add_assign(f32s_mut(&a.out)?, f32s(&a.a)?);
                } else {
                    if !same_memory(&a.out, &a.a) {
                        f32s_mut(&a.out)?.copy_from_slice(f32s(&a.a)?);
                    }
                    ops::add_assign(f32s_mut(&a.out)?, f32s(&a.b)?);
                }
            }
            Op::KvWrite(w) => {
                let kv_dim = w.k.dims[1] as usize;
                attention::kv_write(
                    f32s(&w.k)?,
                    f32s(&w.v)?,
                    kv_mut(&w.k_cache)?,
                    kv_mut(&w.v_cache)?,
                    i32s(&w.slot_mapping)?,
                    kv_dim,
                );
            }
            Op::Attention(a) => self.attention(&a)?,
            Op::GatherRows(g) => {
                let cols = g.x.dims[1] as usize;
                let (x, out) = (f32s(&g.x)?, f32s_mut(&g.out)?);
                let rows = g.x.dims[0] as usize;
                for (r, &i) in i32s(&g.indices)?.iter().enumerate() {
                    let i = i as usize;
                    if i >= rows {
                        return Err(PluginError::invalid(format!(
                            "gather index {i} outside {rows} rows"
                        )));
                    }
                    out[r * cols..(r + 1) * cols].copy_from_slice(&x[i * cols..(i + 1) * cols]);
                }
            }
            Op::CopyBlocks(c) => self.copy_blocks(&c)?,
            Op::Sample(s) => self.sample(&s)?,
            Op::LayerNorm(n) => self.layer_norm(&n)?,
            Op::Activation(a) => {
                let kind = activation_kind(a.kind)?;
                if !same_memory(&a.out, &a.x) {
                    f32s_mut(&a.out)?.copy_from_slice(f32s(&a.x)?);
                }
                if a.up.is_none() {
                    activation::activate(kind, f32s_mut(&a.out)?);
                } else {
                    activation::activate_mul(kind, f32s_mut(&a.out)?, f32s(&a.up)?);
                }
            }
            Op::Scale(s) => {
                if s.accumulate == abi::Accumulate::Add {
                    activation::scale_add(f32s_mut(&s.out)?, f32s(&s.x)?, s.factor);
                } else {
                    if !same_memory(&s.out, &s.x) {
                        f32s_mut(&s.out)?.copy_from_slice(f32s(&s.x)?);
                    }
                    activation::scale(f32s_mut(&s.out)?, s.factor);
                }
            }
            Op::Softcap(s) => {
                if !same_memory(&s.out, &s.x) {
                    f32s_mut(&s.out)?.copy_from_slice(f32s(&s.x)?);
                }
                activation::softcap(f32s_mut(&s.out)?, s.cap);
            }
            Op::Moe(m) => self.moe(&m)?,
            Op::Cast(c) => {
                if c.input.dtype != KILN_F32 || c.out.dtype != KILN_F32 {
                    return Err(PluginError::unsupported("the CPU backend casts only f32"));
                }
                if !same_memory(&c.input, &c.out) {
                    f32s_mut(&c.out)?.copy_from_slice(f32s(&c.input)?);
                }
            }
        }
        Ok(())
    }

    fn rms_norm(&self, n: &abi::RmsNorm) -> PluginResult<()> {
        let (x, out) = (&n.x, &n.out);
        let h = x.dims[1] as usize;
        let gamma = vector(n.gamma)?;
        if overlaps(x, out) {
            let copy = f32s(x)?.to_vec();
            ops::rms_norm(&self.pool, &copy, gamma, n.eps, f32s_mut(out)?, h);
        } else {
            ops::rms_norm(&self.pool, f32s(x)?, gamma, n.eps, f32s_mut(out)?, h);
        }
        Ok(())
    }

    fn layer_norm(&self, n: &abi::LayerNorm) -> PluginResult<()> {
        let (x, out) = (&n.x, &n.out);
        let h = x.dims[1] as usize;
        let gamma = vector(n.gamma)?;
        let beta = if n.beta.is_null() {
            None
        } else {
            Some(vector(n.beta)?)
        };
        let copy;
        let xs = if overlaps(x, out) {
            copy = f32s(x)?.to_vec();
            &copy[..]
        } else {
            f32s(x)?
        };
        kiln_kernels_cpu::layer_norm::layer_norm(
            &self.pool,
            xs,
            gamma,
            beta,
            n.eps,
            f32s_mut(out)?,
            h,
        );
        Ok(())
    }

    fn moe(&self, m: &abi::Moe) -> PluginResult<()> {
        let (gate_up, down) = (matrix(m.gate_up)?, matrix(m.down)?);
        let dims = m
            .expert_dims(
                (gate_up.rows() as u64, gate_up.cols() as u64),
                (down.rows() as u64, down.cols() as u64),
            )
            .map_err(|e| PluginError::invalid(e.to_string()))?;
        let shape = MoeShape {
            num_experts: m.num_experts as usize,
            top_k: m.top_k as usize,
            hidden: dims.hidden as usize,
            intermediate: dims.intermediate as usize,
            activation: activation_kind(m.activation)?,
            renormalize: m.routing == abi::MOE_ROUTING_SOFTMAX_TOPK_RENORM,
        };
        // Inputs that share memory with the output are read from copies.
        let input = |t: &KilnTensor| -> PluginResult<std::borrow::Cow<'_, [f32]>> {
            Ok(if overlaps(t, &m.out) {
                std::borrow::Cow::Owned(f32s(t)?.to_vec())
            } else {
                std::borrow::Cow::Borrowed(f32s(t)?)
            })
        };
        let (x, router_logits) = (input(&m.x)?, input(&m.router_logits)?);
        let shared_out = if m.shared_out.is_none() {
            None
        } else {
            Some(input(&m.shared_out)?)
        };
        let shared_gate = if m.shared_gate.is_none() {
            None
        } else {
            Some(input(&m.shared_gate)?)
        };
        let shared = shared_out.as_deref().map(|out| SharedExpert {
            out,
            gate: shared_gate.as_deref(),
        });
        moe::moe(
            &self.pool,
            Moe {
                shape,
                n: m.rows() as usize,
                decode_rows: m.decode_rows as usize,
                x: &x,
                router_logits: &router_logits,
                gate_up,
                down,
                shared,
                out: f32s_mut(&m.out)?,
                accumulate: m.accumulate == abi::Accumulate::Add,
            },
        )
        .map_err(|e| PluginError::invalid(e.to_string()))
    }

    fn linear(&self, l: &abi::Linear) -> PluginResult<()> {
        let (x, out) = (&l.x, &l.out);
        let w = matrix(l.weight)?;
        let bias = if l.bias.is_null() {
            None
        } else {
            Some(vector(l.bias)?)
        };
        let n = x.dims[0] as usize;
        if x.dims[1] as usize != w.cols()
            || out.dims[1] as usize != w.rows()
            || out.dims[0] as usize != n
        {
            return Err(PluginError::invalid(format!(
                "linear: x [{}, {}], W [{}, {}], out [{}, {}] do not fit",
                x.dims[0],
                x.dims[1],
                w.rows(),
                w.cols(),
                out.dims[0],
                out.dims[1]
            )));
        }
        let copy;
        let xs = if overlaps(x, out) {
            copy = f32s(x)?.to_vec();
            &copy[..]
        } else {
            f32s(x)?
        };
        matmul(
            &self.pool,
            Matmul {
                x: xs,
                n,
                w,
                bias,
                out: f32s_mut(out)?,
                accumulate: l.accumulate == abi::Accumulate::Add,
            },
        );
        Ok(())
    }

    fn rope(&self, r: &abi::Rope) -> PluginResult<()> {
        let shape = RopeShape {
            head_dim: r.head_dim as usize,
            rotary_dim: r.rotary_dim as usize,
            style: if r.style == abi::ROPE_INTERLEAVED {
                RopeStyle::Interleaved
            } else {
                RopeStyle::Neox
            },
        };
        let (positions, cos, sin) = (i32s(&r.positions)?, f32s(&r.cos)?, f32s(&r.sin)?);
        let max_pos = r.cos.dims[0] as i64;
        if let Some(p) = positions
            .iter()
            .find(|&&p| p < 0 || i64::from(p) >= max_pos)
        {
            return Err(PluginError::invalid(format!(
                "position {p} outside the RoPE table of {max_pos}"
            )));
        }
        ops::rope(f32s_mut(&r.q)?, positions, cos, sin, shape);
        if !r.k.is_none() {
            ops::rope(f32s_mut(&r.k)?, positions, cos, sin, shape);
        }
        Ok(())
    }

    fn attention(&self, a: &abi::Attention) -> PluginResult<()> {
        let shape = AttentionShape {
            heads: a.num_heads as usize,
            kv_heads: a.num_kv_heads as usize,
            head_dim: a.head_dim as usize,
            block_size: a.block_size as usize,
            window: a.sliding_window as usize,
            scale: a.scale,
            softcap: a.softcap,
        };
        let batch = AttentionBatch {
            q: f32s(&a.q)?,
            block_tables: i32s(&a.block_tables)?,
            max_blocks: a.block_tables.dims[1] as usize,
            seq_lens: i32s(&a.seq_lens)?,
            query_start_loc: i32s(&a.query_start_loc)?,
        };
        // Every entry is a block of the cache, placeholders for blocks freed
        // behind a sliding window included (the kernel never reads those).
        let blocks = a.k_cache.dims[0] as i64;
        if batch
            .block_tables
            .iter()
            .any(|&b| b < 0 || i64::from(b) >= blocks)
        {
            return Err(PluginError::invalid(
                "attention: block table entry outside the cache",
            ));
        }
        attention::paged_attention(
            &self.pool,
            &shape,
            &batch,
            kv(&a.k_cache)?,
            kv(&a.v_cache)?,
            f32s_mut(&a.out)?,
        );
        Ok(())
    }

    fn sample(&self, s: &abi::Sample) -> PluginResult<()> {
        let (m, vocab) = (s.logits.dims[0] as usize, s.logits.dims[1] as usize);
        let logits = f32s_mut(&s.logits)?;
        let params: Vec<KilnSampleParams> = raw_bytes(&s.params)?
            .chunks_exact(KilnSampleParams::SIZE)
            .filter_map(KilnSampleParams::from_bytes)
            .collect();
        let adjust: Vec<KilnLogitAdjust> = if s.adjustments.is_none() {
            Vec::new()
        } else {
            raw_bytes(&s.adjustments)?
                .chunks_exact(KilnLogitAdjust::SIZE)
                .filter_map(KilnLogitAdjust::from_bytes)
                .collect()
        };
        if params.len() < m {
            return Err(PluginError::invalid(format!(
                "sample: {} parameter rows for {m} logits rows",
                params.len()
            )));
        }
        let ids = i32s_mut(&s.out_ids)?;
        let lps = f32s_mut(&s.out_logprobs)?;
        let n = s.num_top as usize;
        let (mut top_ids, mut top_lps) = if n > 0 {
            (i32s_mut(&s.out_top_ids)?, f32s_mut(&s.out_top_logprobs)?)
        } else {
            (&mut [][..], &mut [][..])
        };
        let (allowed, words) = if s.allowed.is_none() {
            (&[][..], 0)
        } else {
            (i32s(&s.allowed)?, s.allowed.dims[1] as usize)
        };
        for (r, p) in params.iter().take(m).enumerate() {
            let (start, count) = (p.adjust_start as usize, p.adjust_count as usize);
            let row_adjust = adjust.get(start..start + count).ok_or_else(|| {
                PluginError::invalid(format!(
                    "sample: row {r} adjustments {start}+{count} outside {} entries",
                    adjust.len()
                ))
            })?;
            let (ni, nl) = (n.min(top_ids.len()), n.min(top_lps.len()));
            let (row_top_ids, rest_ids) = std::mem::take(&mut top_ids).split_at_mut(ni);
            let (row_top_lps, rest_lps) = std::mem::take(&mut top_lps).split_at_mut(nl);
            top_ids = rest_ids;
            top_lps = rest_lps;
            if p.flags & KILN_SAMPLE_SKIP != 0 {
                continue;
            }
            let row_allowed = if p.flags & KILN_SAMPLE_MASKED != 0 {
                Some(allowed.get(r * words..(r + 1) * words).ok_or_else(|| {
                    PluginError::invalid(format!(
                        "sample: row {r} is masked but the bitset has {} words",
                        allowed.len()
                    ))
                })?)
            } else {
                None
            };
            crate::sample::sample_row(
                &mut logits[r * vocab..(r + 1) * vocab],
                p,
                crate::sample::RowEdits {
                    adjust: row_adjust,
                    allowed: row_allowed,
                },
                crate::sample::RowOut {
                    id: &mut ids[r],
                    logprob: &mut lps[r],
                    top_ids: row_top_ids,
                    top_logprobs: row_top_lps,
                },
            );
        }
        Ok(())
    }

    fn copy_blocks(&self, c: &abi::CopyBlocks) -> PluginResult<()> {
        let pairs = i32s(&c.pairs)?;
        for cache in [&c.k_cache, &c.v_cache] {
            let block_bytes =
                (cache.dims[1] * cache.dims[2] * cache.dims[3] * dtype_size(cache.dtype)) as usize;
            let blocks = cache.dims[0] as usize;
            let p = base(cache)?;
            for pair in pairs.chunks_exact(2) {
                let (src, dst) = (pair[0] as usize, pair[1] as usize);
                if src >= blocks || dst >= blocks {
                    return Err(PluginError::invalid("copy_blocks: block outside the cache"));
                }
                // SAFETY: both blocks are inside the cache and distinct or identical.
                unsafe {
                    std::ptr::copy(
                        p.add(src * block_bytes),
                        p.add(dst * block_bytes),
                        block_bytes,
                    )
                };
            }
        }
        Ok(())
    }
}

impl DevicePlugin for CpuDevice {
    fn memory_info(&self) -> PluginResult<(u64, u64)> {
        Ok(crate::memory())
    }

    fn alloc_buffer(&mut self, bytes: u64) -> PluginResult<KilnBuffer> {
        let buf = HostBuf::alloc(bytes)?;
        Ok(KilnBuffer(Box::into_raw(Box::new(buf)) as *mut _))
    }

    fn free_buffer(&mut self, buf: KilnBuffer) {
        if !buf.0.is_null() {
            // SAFETY: created by `alloc_buffer`, freed once.
            drop(unsafe { Box::from_raw(buf.0 as *mut HostBuf) });
        }
    }

    fn write_buffer(&mut self, buf: KilnBuffer, offset: u64, data: &[u8]) -> PluginResult<()> {
        // SAFETY: a live handle of this device.
        let b = unsafe { &*(buf.0 as *const HostBuf) };
        if offset as usize + data.len() > b.bytes {
            return Err(PluginError::invalid("write outside the buffer"));
        }
        // SAFETY: in bounds.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), b.ptr.add(offset as usize), data.len())
        };
        Ok(())
    }

    fn read_buffer(&mut self, buf: KilnBuffer, offset: u64, out: &mut [u8]) -> PluginResult<()> {
        // SAFETY: a live handle of this device.
        let b = unsafe { &*(buf.0 as *const HostBuf) };
        if offset as usize + out.len() > b.bytes {
            return Err(PluginError::invalid("read outside the buffer"));
        }
        // SAFETY: in bounds.
        unsafe {
            std::ptr::copy_nonoverlapping(b.ptr.add(offset as usize), out.as_mut_ptr(), out.len())
        };
        Ok(())
    }

    fn copy_buffer(&mut self, copy: &KilnBufferCopy) -> PluginResult<()> {
        // SAFETY: live handles of this device; the host checked the ranges.
        unsafe {
            let (s, d) = (
                &*(copy.src.0 as *const HostBuf),
                &*(copy.dst.0 as *const HostBuf),
            );
            if copy.src_offset + copy.len > s.bytes as u64
                || copy.dst_offset + copy.len > d.bytes as u64
            {
                return Err(PluginError::invalid("copy outside a buffer"));
            }
            std::ptr::copy(
                s.ptr.add(copy.src_offset as usize),
                d.ptr.add(copy.dst_offset as usize),
                copy.len as usize,
            );
        }
        Ok(())
    }

    fn synchronize(&mut self) -> PluginResult<()> {
        Ok(())
    }

    fn prepare_weight(&mut self, desc: WeightDescRef<'_>) -> PluginResult<KilnWeight> {
        let parted = match desc.desc.format {
            KILN_WEIGHT_INT_GROUPS => Some(int_groups(&desc)?),
            KILN_WEIGHT_FP8_E4M3 => Some(fp8_e4m3(&desc)?),
            _ => None,
        };
        if let Some(matrix) = parted {
            HELD_WEIGHT_BYTES.fetch_add(matrix.bytes() as u64, Ordering::Relaxed);
            let weight = CpuWeight::Matrix(matrix);
            return Ok(KilnWeight(Box::into_raw(Box::new(weight)) as *mut _));
        }
        let d = desc.desc;
        let (_, bytes) = desc
            .part(KILN_PART_DATA)
            .ok_or_else(|| PluginError::invalid(format!("weight {} has no data", desc.name())))?;
        let format = kernel_format(d.format)?;
        let (rows, cols) = (d.rows as usize, d.cols as usize);
        let matrix = WeightMatrix::from_raw(format, rows, cols, bytes)
            .map_err(|e| PluginError::invalid(format!("weight {}: {e}", desc.name())))?;
        let weight = if rows == 1 {
            let mut v = vec![0f32; cols];
            matrix.dequantize_row(0, &mut v);
            CpuWeight::Vector(v)
        } else {
            CpuWeight::Matrix(matrix)
        };
        HELD_WEIGHT_BYTES.fetch_add(weight.bytes() as u64, Ordering::Relaxed);
        Ok(KilnWeight(Box::into_raw(Box::new(weight)) as *mut _))
    }

    fn release_weight(&mut self, weight: KilnWeight) {
        if !weight.is_null() {
            // SAFETY: created by `prepare_weight`, released once.
            let weight = unsafe { Box::from_raw(weight.0 as *mut CpuWeight) };
            HELD_WEIGHT_BYTES.fetch_sub(weight.bytes() as u64, Ordering::Relaxed);
        }
    }

    fn supports(&self, query: &KilnSupportQuery) -> bool {
        let weight_ok = query.weight_format == KILN_WEIGHT_NONE
            || query.weight_format == KILN_WEIGHT_INT_GROUPS
            || query.weight_format == KILN_WEIGHT_FP8_E4M3
            || kernel_format(query.weight_format).is_ok();
        query.act_dtype == KILN_F32 && weight_ok && opcode_name(query.opcode) != "unknown"
    }

    fn execute(&mut self, ops: &[KilnOp]) -> PluginResult<()> {
        for op in ops {
            self.op(op).map_err(|e| PluginError {
                message: format!("{}: {}", opcode_name(op.opcode), e.message),
                ..e
            })?;
        }
        Ok(())
    }
}
