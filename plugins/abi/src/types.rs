//! The `#[repr(C)]` tables and constants of the Kiln backend ABI.
//!
//! Rules every table follows:
//! - it starts with `struct_size` (bytes): entries are only ever appended, and
//!   a reader touches an entry only when `struct_size` says it exists;
//! - optional entries are `Option<fn>` (null in C) and say what happens when absent;
//! - every fallible call returns a [`KilnStatus`] and leaves a message for
//!   `last_error` on the calling thread;
//! - nothing unwinds across the boundary.

use std::ffi::{c_char, c_void};

/// Major version: the host refuses a plugin with another major.
pub const KILN_ABI_MAJOR: u32 = 1;
/// Minor version. Each minor only appends (see `README.md`, "Versioning"):
///
/// - 1.0: the tables; `OP_EMBEDDING` … `OP_CAST`; f32, f16 and bf16
///   weights; GGUF Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q6_K; GPTQ, AWQ and
///   INT8; a 32-byte `KilnSampleParams` (temperature … counter).
/// - 1.1: `OP_LINEAR`'s decode-rows hint (`i1`); `KilnSampleParams` grows
///   to 48 bytes (`repetition_penalty`, `adjust_start`, `adjust_count`,
///   `flags` with `KILN_SAMPLE_MASKED` and `KILN_SAMPLE_SKIP`) and
///   `OP_SAMPLE` takes `KilnLogitAdjust` entries (`t6`) and allowed-token
///   bitsets (`t7`, with `KILN_CAP_SAMPLE_MASK`); GGUF Q2_K, Q3_K, Q5_K,
///   IQ4_NL, IQ4_XS; `KILN_WEIGHT_INT_GROUPS`; `OP_LAYER_NORM`,
///   `OP_ACTIVATION`, `OP_SCALE`, `OP_SOFTCAP`; `KILN_WEIGHT_NONE`. The host
///   never asks a 1.0 plugin to sample on the device, since its parameter
///   rows have another size.
/// - 1.2: `OP_MOE` (fused mixture-of-experts feed-forward) and its routing
///   modes `MOE_ROUTING_SOFTMAX_TOPK`, `MOE_ROUTING_SOFTMAX_TOPK_RENORM`.
/// - 1.3: `KILN_WEIGHT_FP8_E4M3` (FP8 E4M3 codes with a scale per row).
pub const KILN_ABI_MINOR: u32 = 3;
/// `(major << 16) | minor`, what `kiln_plugin_abi_version` returns.
pub const KILN_ABI_VERSION: u32 = (KILN_ABI_MAJOR << 16) | KILN_ABI_MINOR;
/// The oldest version of the current major this host still loads: a plugin
/// built against it is read only as far as its tables' `struct_size` go.
pub const KILN_ABI_OLDEST_SUPPORTED: u32 = KILN_ABI_MAJOR << 16;

/// Name of the exported `extern "C" fn() -> u32` giving the plugin's ABI version.
pub const SYMBOL_ABI_VERSION: &str = "kiln_plugin_abi_version";
/// Name of the exported `extern "C" fn() -> i32` scoring the plugin on this machine (0: cannot run).
pub const SYMBOL_SCORE: &str = "kiln_backend_score";
/// Name of the exported `extern "C" fn(*const KilnHostApi) -> *const KilnBackendRegistration`.
pub const SYMBOL_INIT: &str = "kiln_backend_init";

/// Name of the optional exported `extern "C" fn() -> *const c_char` giving the
/// last failure's message (useful when `kiln_backend_init` returned null).
pub const SYMBOL_LAST_ERROR: &str = "kiln_backend_last_error";
/// Type of the optional `kiln_backend_last_error` symbol.
pub type KilnLastErrorFn = unsafe extern "C" fn() -> *const c_char;
/// Type of the exported `kiln_plugin_abi_version` symbol.
pub type KilnAbiVersionFn = unsafe extern "C" fn() -> u32;
/// Type of the exported `kiln_backend_score` symbol.
pub type KilnScoreFn = unsafe extern "C" fn() -> i32;
/// Type of the exported `kiln_backend_init` symbol: null on failure.
pub type KilnInitFn =
    unsafe extern "C" fn(host: *const KilnHostApi) -> *const KilnBackendRegistration;

/// Status code returned by every fallible ABI call.
pub type KilnStatus = i32;
/// Success.
pub const KILN_OK: KilnStatus = 0;
/// The operation, format or dtype is not supported by this device.
pub const KILN_UNSUPPORTED: KilnStatus = 1;
/// The device ran out of memory.
pub const KILN_OUT_OF_MEMORY: KilnStatus = 2;
/// An argument was invalid (shapes, dtypes, handles).
pub const KILN_INVALID_ARGUMENT: KilnStatus = 3;
/// Any other failure (including a caught panic).
pub const KILN_INTERNAL: KilnStatus = 4;

/// Element type of a tensor.
pub type KilnDType = u32;
/// 32-bit IEEE float.
pub const KILN_F32: KilnDType = 0;
/// 16-bit IEEE float.
pub const KILN_F16: KilnDType = 1;
/// bfloat16.
pub const KILN_BF16: KilnDType = 2;
/// 32-bit signed integer.
pub const KILN_I32: KilnDType = 3;
/// 64-bit signed integer.
pub const KILN_I64: KilnDType = 4;
/// 8-bit unsigned integer (also: raw bytes).
pub const KILN_U8: KilnDType = 5;
/// 8-bit signed integer.
pub const KILN_I8: KilnDType = 6;

/// Bytes per element of a dtype (0 for unknown).
pub const fn dtype_size(dtype: KilnDType) -> u64 {
    match dtype {
        KILN_F32 | KILN_I32 => 4,
        KILN_F16 | KILN_BF16 => 2,
        KILN_I64 => 8,
        KILN_U8 | KILN_I8 => 1,
        _ => 0,
    }
}

/// Storage format of a weight matrix (its quantization scheme).
pub type KilnWeightFormat = u32;
/// Plain f32 `[rows, cols]`.
pub const KILN_WEIGHT_F32: KilnWeightFormat = 0;
/// Plain f16 `[rows, cols]`.
pub const KILN_WEIGHT_F16: KilnWeightFormat = 1;
/// Plain bf16 `[rows, cols]`.
pub const KILN_WEIGHT_BF16: KilnWeightFormat = 2;
/// GGUF Q4_0 blocks along `cols` (32 weights / 18 bytes).
pub const KILN_WEIGHT_GGUF_Q4_0: KilnWeightFormat = 10;
/// GGUF Q4_1 blocks along `cols` (32 weights / 20 bytes).
pub const KILN_WEIGHT_GGUF_Q4_1: KilnWeightFormat = 11;
/// GGUF Q8_0 blocks along `cols` (32 weights / 34 bytes).
pub const KILN_WEIGHT_GGUF_Q8_0: KilnWeightFormat = 12;
/// GGUF Q4_K super-blocks along `cols` (256 weights / 144 bytes).
pub const KILN_WEIGHT_GGUF_Q4_K: KilnWeightFormat = 13;
/// GGUF Q6_K super-blocks along `cols` (256 weights / 210 bytes).
pub const KILN_WEIGHT_GGUF_Q6_K: KilnWeightFormat = 14;
/// GGUF Q5_0 blocks along `cols`.
pub const KILN_WEIGHT_GGUF_Q5_0: KilnWeightFormat = 15;
/// GGUF Q5_1 blocks along `cols`.
pub const KILN_WEIGHT_GGUF_Q5_1: KilnWeightFormat = 16;
/// GGUF Q2_K super-blocks along `cols` (256 weights / 84 bytes).
pub const KILN_WEIGHT_GGUF_Q2_K: KilnWeightFormat = 17;
/// GGUF Q3_K super-blocks along `cols` (256 weights / 110 bytes).
pub const KILN_WEIGHT_GGUF_Q3_K: KilnWeightFormat = 18;
/// GGUF Q5_K super-blocks along `cols` (256 weights / 176 bytes).
pub const KILN_WEIGHT_GGUF_Q5_K: KilnWeightFormat = 19;
/// GGUF IQ4_NL blocks along `cols` (32 weights / 18 bytes).
pub const KILN_WEIGHT_GGUF_IQ4_NL: KilnWeightFormat = 30;
/// GGUF IQ4_XS super-blocks along `cols` (256 weights / 136 bytes).
pub const KILN_WEIGHT_GGUF_IQ4_XS: KilnWeightFormat = 31;
/// GPTQ (parts: qweight, qzeros, scales, g_idx; `bits`, `group_size`).
pub const KILN_WEIGHT_GPTQ: KilnWeightFormat = 20;
/// AWQ GEMM (parts: qweight, qzeros, scales; `bits`, `group_size`).
pub const KILN_WEIGHT_AWQ: KilnWeightFormat = 21;
/// Per-channel symmetric int8 weights (parts: weight i8 `[rows, cols]`, scales `[rows]`).
pub const KILN_WEIGHT_INT8: KilnWeightFormat = 22;
/// Integer codes in groups along a row, the form the host gives GPTQ, AWQ
/// and compressed-tensors weights to a backend that does not declare their
/// checkpoint formats: `W[r, c] = s[r, c / group_size]·(q[r, c] − z[r, c / group_size])`.
/// Parts: `KILN_PART_DATA` u8 codes `[rows, cols]` (one code below
/// `2^bits` per byte), `KILN_PART_SCALES` f16 or bf16 `[rows, cols / group_size]`,
/// `KILN_PART_ZEROS` u8 `[rows, cols / group_size]`, and optionally
/// `KILN_PART_GROUP_INDEX` i32 `[cols]`: the input feature each column holds
/// (act-order; the backend gathers activations to match). `group_size` is a
/// multiple of 32 dividing `cols`; `bits` is 2, 3, 4 or 8.
pub const KILN_WEIGHT_INT_GROUPS: KilnWeightFormat = 23;
/// FP8 E4M3 weights (`e4m3fn`: no infinities, `0x7F`/`0xFF` are NaN and
/// never appear) with one scale per output row:
/// `W[r, c] = s[r]·e4m3(q[r, c])`. Parts: `KILN_PART_DATA` u8 codes
/// `[rows, cols]`, `KILN_PART_SCALES` f32 `[rows]` (a per-tensor scale is
/// the same value on every row). Activations stay in the op's dtype.
pub const KILN_WEIGHT_FP8_E4M3: KilnWeightFormat = 24;

/// No weight: the `weight_format` of a [`KilnSupportQuery`] for an
/// operation without a weight operand.
pub const KILN_WEIGHT_NONE: KilnWeightFormat = u32::MAX;

/// Role of one part of a weight.
pub type KilnPartRole = u32;
/// The main data (raw blocks, packed ints or plain values).
pub const KILN_PART_DATA: KilnPartRole = 0;
/// Dequantization scales, per row or per group (shape and dtype per format).
pub const KILN_PART_SCALES: KilnPartRole = 1;
/// Zero points, one per scale (packed in GPTQ/AWQ `qzeros`, u8 in
/// [`KILN_WEIGHT_INT_GROUPS`]).
pub const KILN_PART_ZEROS: KilnPartRole = 2;
/// Group index per input channel (GPTQ act-order).
pub const KILN_PART_GROUP_INDEX: KilnPartRole = 3;

/// What hardware a device is (`KILN_DEVICE_*`); the host picks defaults
/// from it, such as f32 activations on a CPU.
pub type KilnDeviceKind = u32;
/// The host's own processor (buffers usually in host memory, see
/// [`KILN_CAP_HOST_MEMORY`]).
pub const KILN_DEVICE_CPU: KilnDeviceKind = 0;
/// A discrete or integrated GPU.
pub const KILN_DEVICE_GPU: KilnDeviceKind = 1;
/// Another accelerator.
pub const KILN_DEVICE_ACCELERATOR: KilnDeviceKind = 2;

/// Capability bit: `OP_SAMPLE` honours [`KILN_SAMPLE_MASKED`] rows and their
/// allowed-token bitset (structured outputs drawn on the device).
pub const KILN_CAP_SAMPLE_MASK: u64 = 1 << 5;

/// [`KilnSampleParams::flags`] bit: the row draws only tokens whose bit is set
/// in its row of `OP_SAMPLE`'s allowed-token bitset (needs [`KILN_CAP_SAMPLE_MASK`]).
pub const KILN_SAMPLE_MASKED: u32 = 1 << 0;
/// [`KilnSampleParams::flags`] bit: the row is not drawn; its outputs are
/// left as they are (a backend may ignore this bit and draw it anyway).
pub const KILN_SAMPLE_SKIP: u32 = 1 << 1;

/// Capability bit: the device implements `graph_begin/graph_end/graph_launch`.
pub const KILN_CAP_GRAPHS: u64 = 1 << 0;
/// Capability bit: the device implements [`crate::ops::OP_SAMPLE`].
pub const KILN_CAP_DEVICE_SAMPLING: u64 = 1 << 1;
/// Capability bit: f16 activations.
pub const KILN_CAP_F16: u64 = 1 << 2;
/// Capability bit: bf16 activations.
pub const KILN_CAP_BF16: u64 = 1 << 3;
/// Capability bit: buffers live in host memory (reads and writes are plain copies).
pub const KILN_CAP_HOST_MEMORY: u64 = 1 << 4;

/// Opaque handle to a device buffer.
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KilnBuffer(pub *mut c_void);

/// Opaque handle to a prepared weight.
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KilnWeight(pub *mut c_void);

/// Opaque handle to a captured graph.
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KilnGraph(pub *mut c_void);

impl KilnBuffer {
    /// The null handle.
    pub const NULL: KilnBuffer = KilnBuffer(std::ptr::null_mut());
}
impl KilnWeight {
    /// The null handle (an absent optional weight).
    pub const NULL: KilnWeight = KilnWeight(std::ptr::null_mut());
    /// True for the null handle.
    pub fn is_null(self) -> bool {
        self.0.is_null()
    }
}

/// What the host offers a plugin.
#[repr(C)]
pub struct KilnHostApi {
    /// Size of this struct in bytes.
    pub struct_size: u32,
    /// The host's [`KILN_ABI_VERSION`].
    pub abi_version: u32,
    /// Log a message through the host's logger. `level`: 1 error, 2 warn, 3 info, 4 debug, 5 trace.
    /// `target` and `msg` are NUL-terminated UTF-8. May be null (then plugins stay silent).
    pub log: Option<unsafe extern "C" fn(level: i32, target: *const c_char, msg: *const c_char)>,
}

/// Static facts about one device.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct KilnDeviceInfo {
    /// Size of this struct in bytes.
    pub struct_size: u32,
    /// [`KILN_DEVICE_CPU`], [`KILN_DEVICE_GPU`] or [`KILN_DEVICE_ACCELERATOR`].
    pub kind: KilnDeviceKind,
    /// Total memory in bytes.
    pub memory_total: u64,
    /// Free memory in bytes at query time.
    pub memory_free: u64,
    /// `KILN_CAP_*` bits.
    pub capabilities: u64,
    /// Compute capability as `major * 10 + minor` for GPUs, else 0.
    pub compute_capability: u32,
    /// Threads (CPU) or streaming multiprocessors (GPU).
    pub parallelism: u32,
    /// NUL-terminated short name, e.g. `cpu0`, `cuda0`.
    pub name: [u8; 64],
    /// NUL-terminated description, e.g. the CPU model and ISA, or the GPU name.
    pub description: [u8; 256],
}

/// One device opened by the host: a handle plus its table.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct KilnDevice {
    /// Plugin-owned state.
    pub handle: *mut c_void,
    /// The device's functions.
    pub vtable: *const KilnDeviceVtable,
}

/// What `kiln_backend_init` returns. Static for the life of the process.
#[repr(C)]
pub struct KilnBackendRegistration {
    /// Size of this struct in bytes.
    pub struct_size: u32,
    /// The plugin's [`KILN_ABI_VERSION`].
    pub abi_version: u32,
    /// NUL-terminated backend name (`cpu`, `cuda`, ...).
    pub name: *const c_char,
    /// Number of devices this backend can open.
    pub device_count: unsafe extern "C" fn() -> u32,
    /// Fill `out` for device `index`.
    pub device_info: unsafe extern "C" fn(index: u32, out: *mut KilnDeviceInfo) -> KilnStatus,
    /// Open device `index` with NUL-terminated JSON parameters (`{}` for defaults;
    /// e.g. `{"threads": 2}` for the CPU backend).
    pub open_device: unsafe extern "C" fn(
        index: u32,
        params_json: *const c_char,
        out: *mut KilnDevice,
    ) -> KilnStatus,
    /// NUL-terminated message of the last failure on the calling thread, or null.
    /// Valid until the next call into this plugin on the same thread.
    pub last_error: unsafe extern "C" fn() -> *const c_char,
    /// Look up an extension function by NUL-terminated name; null when absent. Optional.
    pub get_proc_address: Option<unsafe extern "C" fn(name: *const c_char) -> *const c_void>,
}

/// The functions of an open device. A device is used by one thread at a time.
#[repr(C)]
pub struct KilnDeviceVtable {
    /// Size of this struct in bytes.
    pub struct_size: u32,
    /// Close the device; every buffer, weight and graph must have been released.
    pub close: unsafe extern "C" fn(dev: *mut c_void),
    /// Current free and total memory in bytes.
    pub memory_info:
        unsafe extern "C" fn(dev: *mut c_void, free: *mut u64, total: *mut u64) -> KilnStatus,
    /// Allocate `bytes` of device memory, zero-filled.
    pub alloc_buffer:
        unsafe extern "C" fn(dev: *mut c_void, bytes: u64, out: *mut KilnBuffer) -> KilnStatus,
    /// Free a buffer from `alloc_buffer`; the handle is dead afterwards.
    /// Returns no status: the host treats the buffer as gone either way.
    pub free_buffer: unsafe extern "C" fn(dev: *mut c_void, buf: KilnBuffer),
    /// Copy `len` bytes from host memory into the buffer at `offset` (host → device).
    pub write_buffer: unsafe extern "C" fn(
        dev: *mut c_void,
        buf: KilnBuffer,
        offset: u64,
        src: *const u8,
        len: u64,
    ) -> KilnStatus,
    /// Copy `len` bytes from the buffer at `offset` into host memory (device → host; synchronizes).
    pub read_buffer: unsafe extern "C" fn(
        dev: *mut c_void,
        buf: KilnBuffer,
        offset: u64,
        dst: *mut u8,
        len: u64,
    ) -> KilnStatus,
    /// Copy between buffers on the device.
    pub copy_buffer:
        unsafe extern "C" fn(dev: *mut c_void, copy: *const KilnBufferCopy) -> KilnStatus,
    /// Wait until all queued work is done.
    pub synchronize: unsafe extern "C" fn(dev: *mut c_void) -> KilnStatus,
    /// Upload and prepare a weight (repacking or dequantizing as the device prefers).
    /// The host memory in `desc` may be released after the call returns.
    pub prepare_weight: unsafe extern "C" fn(
        dev: *mut c_void,
        desc: *const KilnWeightDesc,
        out: *mut KilnWeight,
    ) -> KilnStatus,
    /// Release a prepared weight.
    pub release_weight: unsafe extern "C" fn(dev: *mut c_void, weight: KilnWeight),
    /// 1 when the device can run the query (an opcode with a weight format and
    /// activation dtype), else 0.
    pub supports: unsafe extern "C" fn(dev: *mut c_void, query: *const KilnSupportQuery) -> i32,
    /// Queue `n` operations in order (see [`crate::ops`]). Work may run
    /// asynchronously; `read_buffer` and `synchronize` wait for it.
    pub execute: unsafe extern "C" fn(dev: *mut c_void, ops: *const KilnOp, n: u64) -> KilnStatus,
    /// Start capturing the operations queued next into a graph. Optional:
    /// null means the device has no graphs (the host runs eagerly).
    pub graph_begin: Option<unsafe extern "C" fn(dev: *mut c_void) -> KilnStatus>,
    /// Stop capturing and return the graph. Optional (with `graph_begin`).
    pub graph_end:
        Option<unsafe extern "C" fn(dev: *mut c_void, out: *mut KilnGraph) -> KilnStatus>,
    /// Replay a captured graph (same buffers, current contents). Optional.
    pub graph_launch:
        Option<unsafe extern "C" fn(dev: *mut c_void, graph: KilnGraph) -> KilnStatus>,
    /// Destroy a captured graph. Optional.
    pub graph_destroy: Option<unsafe extern "C" fn(dev: *mut c_void, graph: KilnGraph)>,
}

/// A device-to-device copy.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct KilnBufferCopy {
    /// Source buffer.
    pub src: KilnBuffer,
    /// Byte offset in the source.
    pub src_offset: u64,
    /// Destination buffer.
    pub dst: KilnBuffer,
    /// Byte offset in the destination.
    pub dst_offset: u64,
    /// Bytes to copy.
    pub len: u64,
}

/// One part of a weight (see `KILN_PART_*`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct KilnWeightPart {
    /// What this part is.
    pub role: KilnPartRole,
    /// Element type of `data` (`KILN_U8` for raw GGUF blocks).
    pub dtype: KilnDType,
    /// Number of dimensions used in `dims`.
    pub rank: u32,
    /// Shape, outermost first.
    pub dims: [u64; 4],
    /// Host pointer to the bytes.
    pub data: *const u8,
    /// Byte length.
    pub len: u64,
}

/// A weight matrix `[rows, cols]` (rows = output features, cols = input
/// features) in some format. Vectors (norm scales, biases) are `[1, len]`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct KilnWeightDesc {
    /// Size of this struct in bytes.
    pub struct_size: u32,
    /// `KILN_WEIGHT_*`.
    pub format: KilnWeightFormat,
    /// Bits per quantized value (GPTQ/AWQ), else 0.
    pub bits: u32,
    /// Quantization group size along `cols` (GPTQ/AWQ), else 0.
    pub group_size: u32,
    /// Format-specific flags (`KILN_WEIGHT_FLAG_*`).
    pub flags: u32,
    /// Output features.
    pub rows: u64,
    /// Input features.
    pub cols: u64,
    /// `n_parts` parts in host memory, valid only during `prepare_weight`.
    pub parts: *const KilnWeightPart,
    /// Number of parts.
    pub n_parts: u32,
    /// NUL-terminated tensor name for error messages (may be null).
    pub name: *const c_char,
}

/// Weight flag: asymmetric quantization with zero points.
pub const KILN_WEIGHT_FLAG_HAS_ZEROS: u32 = 1 << 0;
/// Weight flag: GPTQ act-order (group index not monotone).
pub const KILN_WEIGHT_FLAG_ACT_ORDER: u32 = 1 << 1;
/// Weight flag: GPTQ v1 zero-point convention (stored zero = zero − 1).
pub const KILN_WEIGHT_FLAG_GPTQ_V1_ZEROS: u32 = 1 << 2;

/// A question to `supports`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct KilnSupportQuery {
    /// An `OP_*` opcode.
    pub opcode: u32,
    /// The weight format involved, or [`KILN_WEIGHT_NONE`].
    pub weight_format: KilnWeightFormat,
    /// The activation dtype.
    pub act_dtype: KilnDType,
}

/// A view of a buffer: contiguous, row-major, up to 4 dimensions.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct KilnTensor {
    /// The buffer (null for an absent optional tensor).
    pub buffer: KilnBuffer,
    /// Byte offset of the first element.
    pub offset: u64,
    /// Element type.
    pub dtype: KilnDType,
    /// Number of dimensions used in `dims`.
    pub rank: u32,
    /// Shape, outermost first.
    pub dims: [u64; 4],
}

impl KilnTensor {
    /// An absent optional tensor.
    pub const NONE: KilnTensor = KilnTensor {
        buffer: KilnBuffer::NULL,
        offset: 0,
        dtype: KILN_F32,
        rank: 0,
        dims: [0; 4],
    };

    /// True for [`KilnTensor::NONE`].
    pub fn is_none(&self) -> bool {
        self.buffer.0.is_null()
    }

    /// Number of elements.
    pub fn numel(&self) -> u64 {
        self.dims[..self.rank as usize].iter().product()
    }

    /// Size in bytes.
    pub fn byte_len(&self) -> u64 {
        self.numel() * dtype_size(self.dtype)
    }
}

/// Tensor slots per operation.
pub const KILN_OP_MAX_TENSORS: usize = 8;

/// One operation: an opcode plus fixed slots whose meaning each opcode documents
/// (see [`crate::ops`]). Unused slots are [`KilnTensor::NONE`], [`KilnWeight::NULL`] or 0.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct KilnOp {
    /// An `OP_*` code.
    pub opcode: u32,
    /// Reserved, 0.
    pub flags: u32,
    /// Tensor operands.
    pub tensors: [KilnTensor; KILN_OP_MAX_TENSORS],
    /// Weight operands.
    pub weights: [KilnWeight; 2],
    /// Float parameters.
    pub fparams: [f32; 4],
    /// Integer parameters.
    pub iparams: [i64; 8],
}

impl KilnOp {
    /// An operation with every slot empty.
    pub fn new(opcode: u32) -> Self {
        KilnOp {
            opcode,
            flags: 0,
            tensors: [KilnTensor::NONE; KILN_OP_MAX_TENSORS],
            weights: [KilnWeight::NULL; 2],
            fparams: [0.0; 4],
            iparams: [0; 8],
        }
    }
}

/// Per-row sampling parameters for [`crate::ops::OP_SAMPLE`] (device-side sampling).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct KilnSampleParams {
    /// Temperature; 0 means greedy.
    pub temperature: f32,
    /// Top-k (0: off).
    pub top_k: i32,
    /// Top-p (1: off).
    pub top_p: f32,
    /// Min-p (0: off).
    pub min_p: f32,
    /// Seed of this row's random stream.
    pub seed: u64,
    /// Counter: how many draws the stream has made (the device derives the
    /// random number from `(seed, counter)`, so results do not depend on the batch).
    pub counter: u64,
    /// HF-style repetition penalty for adjustments with `repeat` set (1: off).
    pub repetition_penalty: f32,
    /// First entry of this row's [`KilnLogitAdjust`] run in the adjustments tensor.
    pub adjust_start: u32,
    /// Entries of this row's run (0: none).
    pub adjust_count: u32,
    /// `KILN_SAMPLE_*` bits (0: a plain draw).
    pub flags: u32,
}

impl KilnSampleParams {
    /// Size in bytes (the struct has no padding).
    pub const SIZE: usize = 48;

    /// The struct's bytes in native (little-endian) layout.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[0..4].copy_from_slice(&self.temperature.to_le_bytes());
        b[4..8].copy_from_slice(&self.top_k.to_le_bytes());
        b[8..12].copy_from_slice(&self.top_p.to_le_bytes());
        b[12..16].copy_from_slice(&self.min_p.to_le_bytes());
        b[16..24].copy_from_slice(&self.seed.to_le_bytes());
        b[24..32].copy_from_slice(&self.counter.to_le_bytes());
        b[32..36].copy_from_slice(&self.repetition_penalty.to_le_bytes());
        b[36..40].copy_from_slice(&self.adjust_start.to_le_bytes());
        b[40..44].copy_from_slice(&self.adjust_count.to_le_bytes());
        b[44..48].copy_from_slice(&self.flags.to_le_bytes());
        b
    }

    /// Parse [`to_bytes`](Self::to_bytes) output (`None` when too short).
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        let b: &[u8; Self::SIZE] = b.get(..Self::SIZE)?.try_into().ok()?;
        let f = |i: usize| f32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let q = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        Some(KilnSampleParams {
            temperature: f(0),
            top_k: u(4) as i32,
            top_p: f(8),
            min_p: f(12),
            seed: q(16),
            counter: q(24),
            repetition_penalty: f(32),
            adjust_start: u(36),
            adjust_count: u(40),
            flags: u(44),
        })
    }
}

const _: () = assert!(std::mem::size_of::<KilnSampleParams>() == KilnSampleParams::SIZE);
const _: () = assert!(std::mem::size_of::<KilnLogitAdjust>() == KilnLogitAdjust::SIZE);

impl KilnLogitAdjust {
    /// Size in bytes.
    pub const SIZE: usize = 16;

    /// The struct's bytes in native (little-endian) layout.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[0..4].copy_from_slice(&self.token.to_le_bytes());
        b[4..8].copy_from_slice(&self.add_before.to_le_bytes());
        b[8..12].copy_from_slice(&self.repeat.to_le_bytes());
        b[12..16].copy_from_slice(&self.add_after.to_le_bytes());
        b
    }

    /// Parse [`to_bytes`](Self::to_bytes) output (`None` when too short).
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        let b = b.get(..Self::SIZE)?;
        let w = |i: usize| [b[i], b[i + 1], b[i + 2], b[i + 3]];
        Some(KilnLogitAdjust {
            token: i32::from_le_bytes(w(0)),
            add_before: f32::from_le_bytes(w(4)),
            repeat: i32::from_le_bytes(w(8)),
            add_after: f32::from_le_bytes(w(12)),
        })
    }
}

/// One token's logit adjustment for [`crate::ops::OP_SAMPLE`]: `x += add_before`;
/// then, when `repeat` is 1, `x = x > 0 ? x / penalty : x * penalty`; then
/// `x += add_after`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct KilnLogitAdjust {
    /// Token id (each at most once per row).
    pub token: i32,
    /// Added first (logit bias; `-inf` masks the token).
    pub add_before: f32,
    /// 1 when the repetition penalty applies to the token.
    pub repeat: i32,
    /// Added last (presence and frequency penalties).
    pub add_after: f32,
}

// SAFETY: handles are plain addresses owned by the plugin; the host moves them
// between threads but uses a device from one thread at a time (documented above).
unsafe impl Send for KilnBuffer {}
unsafe impl Sync for KilnBuffer {}
unsafe impl Send for KilnWeight {}
unsafe impl Sync for KilnWeight {}
unsafe impl Send for KilnGraph {}
unsafe impl Sync for KilnGraph {}
