//! Turning checkpoint tensors into device weights: finding a tensor by role,
//! reshaping what a family stores differently (fused rows, Conv1D
//! transposes, Gemma's `1 + w` norms), casting floats to the activation
//! dtype, and one function, [`Loader::prepare`], that hands a tensor to the
//! backend.

use std::borrow::Cow;

use kiln_plugin_abi::safe::{Device, Weight, WeightSpec};
use kiln_protocol::FormatBytes;

use super::DecoderError;
use super::dtype::{ActDType, weight_format};
use crate::names::{Part, Role, hf_name};
use crate::registry::Family;
use crate::weights::dequant::dequantize_view;
use crate::weights::fp8::Fp8Linear;
use crate::weights::quantize::QuantizeAtLoad;
use crate::weights::quantized::{QuantScheme, QuantizedLinears};
use crate::weights::{TensorView, WeightDType, WeightSource};

/// Progress of weight preparation, for progress bars.
pub trait LoadProgress {
    /// Called after each tensor with the bytes done so far and in total.
    fn advance(&mut self, done_bytes: u64, total_bytes: u64);
}

impl<F: FnMut(u64, u64)> LoadProgress for F {
    fn advance(&mut self, done_bytes: u64, total_bytes: u64) {
        self(done_bytes, total_bytes)
    }
}

/// Facts about the prepared weights, for start-up logs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WeightSummary {
    /// Bytes of checkpoint data uploaded.
    pub bytes: u64,
    /// Tensors uploaded.
    pub tensors: usize,
    /// Tensors and bytes of each storage type (or quantization scheme),
    /// in the order first seen.
    pub formats: Vec<FormatBytes>,
}

/// Which tensor: role, layer (for per-layer roles), weight or bias.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TensorRef {
    pub role: Role,
    pub layer: Option<usize>,
    pub part: Part,
}

impl TensorRef {
    pub fn global(role: Role) -> TensorRef {
        TensorRef {
            role,
            layer: None,
            part: Part::Weight,
        }
    }

    pub fn layer(role: Role, layer: usize) -> TensorRef {
        TensorRef {
            role,
            layer: Some(layer),
            part: Part::Weight,
        }
    }

    pub fn bias(self) -> TensorRef {
        TensorRef {
            part: Part::Bias,
            ..self
        }
    }
}

pub(crate) struct Loader<'a, 'p> {
    pub device: &'a Device,
    pub act: ActDType,
    pub family: Family,
    pub source: &'a dyn WeightSource,
    pub progress: Option<&'p mut dyn LoadProgress>,
    pub quantization: Option<QuantScheme>,
    pub quantize_at_load: Option<QuantizeAtLoad>,
    pub done: u64,
    pub total: u64,
    pub summary: WeightSummary,
}

fn f32_view<'a>(name: &str, shape: Vec<usize>, values: &[f32]) -> TensorView<'a> {
    TensorView {
        name: name.to_string(),
        dtype: WeightDType::F32,
        shape,
        data: Cow::Owned(values.iter().flat_map(|v| v.to_le_bytes()).collect()),
    }
}

impl<'a> Loader<'a, '_> {
    fn name(&self, t: TensorRef) -> String {
        hf_name(self.family, t.role, t.layer, t.part)
            .unwrap_or_else(|| format!("{:?} of layer {:?}", t.role, t.layer))
    }

    /// The tensor, or `None` when the checkpoint (or the family) has none.
    pub fn find(&self, t: TensorRef) -> Result<Option<TensorView<'a>>, DecoderError> {
        let Some(name) = hf_name(self.family, t.role, t.layer, t.part) else {
            return Ok(None);
        };
        let source: &'a dyn WeightSource = self.source;
        Ok(source.tensor(&name)?)
    }

    /// The tensor, which must exist.
    pub fn view(&self, t: TensorRef) -> Result<TensorView<'a>, DecoderError> {
        self.find(t)?
            .ok_or_else(|| DecoderError::MissingTensor(self.name(t)))
    }

    /// A `[rows, cols]` matrix as stored (quantized Linear weights of a
    /// GPTQ/AWQ/compressed-tensors checkpoint in their integer form).
    pub fn matrix(
        &mut self,
        t: TensorRef,
        rows: usize,
        cols: usize,
    ) -> Result<Weight, DecoderError> {
        if let Some(weight) = self.quantized(t, rows, cols)? {
            return Ok(weight);
        }
        let view = self.view(t)?;
        match self.quantize_at_load {
            Some(QuantizeAtLoad::Int8) if is_linear(t.role) => {
                self.prepare(to_q8_0(view, cols), &[rows, cols])
            }
            Some(QuantizeAtLoad::Fp8) if is_linear(t.role) => {
                self.prepare_as_fp8(view, &[rows, cols])
            }
            _ => self.prepare(view, &[rows, cols]),
        }
    }

    /// [`Loader::prepare`], with a 16/32-bit float `[rows, cols]` matrix
    /// quantized to FP8 E4M3 first (`--quantization fp8`); other views
    /// (already quantized) as they are.
    pub fn prepare_as_fp8(
        &mut self,
        view: TensorView<'a>,
        shape: &[usize; 2],
    ) -> Result<Weight, DecoderError> {
        let float = matches!(
            view.dtype,
            WeightDType::F32 | WeightDType::F16 | WeightDType::BF16
        );
        let values = match (float && view.shape == shape).then(|| dequantize_view(&view)) {
            Some(Some(values)) => values,
            _ => return self.prepare(view, shape),
        };
        let linear = Fp8Linear::quantize(&values, shape[0], shape[1]);
        let weight = linear.prepare(self.device, &view.name).map_err(|e| {
            if e.is_unsupported() {
                DecoderError::UnsupportedScheme {
                    name: view.name.clone(),
                    scheme: "FP8 E4M3 (--quantization fp8)".into(),
                    backend: self.device.backend().name(),
                }
            } else {
                DecoderError::Backend(e)
            }
        })?;
        self.account_bytes(view.data.len() as u64, WeightDType::F8_E4M3.name());
        Ok(weight)
    }

    /// The Linear `t` of a quantized checkpoint, when the checkpoint stores
    /// it quantized (embeddings, norms and ignored layers stay floats).
    fn quantized(
        &mut self,
        t: TensorRef,
        rows: usize,
        cols: usize,
    ) -> Result<Option<Weight>, DecoderError> {
        let (Some(scheme), Some(name)) = (
            self.quantization.clone(),
            hf_name(self.family, t.role, t.layer, t.part),
        ) else {
            return Ok(None);
        };
        let linears = QuantizedLinears::new(self.source, scheme.clone());
        let Some(linear) = linears.linear(&name, rows, cols)? else {
            return Ok(None);
        };
        let weight = linear.prepare(self.device, &name).map_err(|e| {
            if e.is_unsupported() {
                DecoderError::UnsupportedScheme {
                    name: name.clone(),
                    scheme: scheme.label(),
                    backend: self.device.backend().name(),
                }
            } else {
                DecoderError::Backend(e)
            }
        })?;
        self.account_bytes(linear.checkpoint_bytes(), &scheme.label());
        Ok(Some(weight))
    }

    /// A `[rows, cols]` matrix stored transposed (`[cols, rows]`, GPT-2's Conv1D).
    pub fn transposed(
        &mut self,
        t: TensorRef,
        rows: usize,
        cols: usize,
    ) -> Result<Weight, DecoderError> {
        let view = self.view(t)?;
        let view = transpose(view, rows, cols)?;
        self.prepare(view, &[rows, cols])
    }

    /// A `[len]` vector plus `offset` on every value (Gemma's `1 + w`).
    pub fn vector(
        &mut self,
        t: TensorRef,
        len: usize,
        offset: f32,
    ) -> Result<Weight, DecoderError> {
        let view = self.view(t)?;
        let view = if offset != 0.0 {
            let values = dequantize_view(&view).ok_or_else(|| DecoderError::BadShape {
                name: view.name.clone(),
                actual: view.shape.clone(),
                expected: vec![len],
            })?;
            let shifted: Vec<f32> = values.iter().map(|v| v + offset).collect();
            f32_view(&view.name, view.shape.clone(), &shifted)
        } else {
            view
        };
        self.prepare(view, &[len])
    }

    /// `view` (`[rows, cols]`) with the first row of the tensor `first_of`
    /// added to each of its rows, as f32 (an encoder's token-type-0 row
    /// folded into its positions).
    pub fn add_first_row(
        &self,
        view: TensorView<'a>,
        first_of: TensorRef,
        cols: usize,
    ) -> Result<TensorView<'a>, DecoderError> {
        let extra = self.view(first_of)?;
        let bad = |v: &TensorView<'_>| DecoderError::BadShape {
            name: v.name.clone(),
            actual: v.shape.clone(),
            expected: vec![v.shape.first().copied().unwrap_or(0), cols],
        };
        let row = match dequantize_view(&extra) {
            Some(values) if extra.shape.len() == 2 && extra.shape[1] == cols => {
                values[..cols].to_vec()
            }
            _ => return Err(bad(&extra)),
        };
        let mut values = match dequantize_view(&view) {
            Some(values) if view.shape.len() == 2 && view.shape[1] == cols => values,
            _ => return Err(bad(&view)),
        };
        for chunk in values.chunks_mut(cols) {
            chunk.iter_mut().zip(&row).for_each(|(v, r)| *v += r);
        }
        Ok(f32_view(&view.name, view.shape.clone(), &values))
    }

    /// A bias when the checkpoint has it (`required`: it must).
    pub fn bias(
        &mut self,
        t: TensorRef,
        len: usize,
        required: bool,
    ) -> Result<Option<Weight>, DecoderError> {
        let t = t.bias();
        match (self.find(t)?, required) {
            (Some(view), _) => self.prepare(view, &[len]).map(Some),
            (None, true) => Err(DecoderError::MissingTensor(self.name(t))),
            (None, false) => Ok(None),
        }
    }

    /// Float matrices are stored in the activation dtype when it is 16-bit,
    /// as `--dtype` asks (and as transformers does); vectors and quantized
    /// weights keep their checkpoint form.
    fn cast_floats(&self, view: TensorView<'a>, shape: &[usize]) -> TensorView<'a> {
        let target = match self.act {
            ActDType::F16 => WeightDType::F16,
            ActDType::BF16 => WeightDType::BF16,
            ActDType::F32 => return view,
        };
        let float = matches!(
            view.dtype,
            WeightDType::F32 | WeightDType::F16 | WeightDType::BF16
        );
        if shape.len() == 1 && float && view.dtype != target {
            return Self::round_vector(view, target);
        }
        if shape.len() != 2 || !float || view.dtype == target {
            return view;
        }
        let Some(values) = dequantize_view(&view) else {
            return view;
        };
        let data: Vec<u8> = match target {
            WeightDType::F16 => values
                .iter()
                .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                .collect(),
            _ => values
                .iter()
                .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
                .collect(),
        };
        TensorView {
            dtype: target,
            data: Cow::Owned(data),
            ..view
        }
    }

    /// Vectors (norm scales, biases) stay f32 on the device, but with the
    /// values the 16-bit checkpoint form would hold, as the reference does.
    fn round_vector(view: TensorView<'a>, target: WeightDType) -> TensorView<'a> {
        let Some(values) = dequantize_view(&view) else {
            return view;
        };
        let round = |v: f32| match target {
            WeightDType::F16 => half::f16::from_f32(v).to_f32(),
            _ => half::bf16::from_f32(v).to_f32(),
        };
        let rounded: Vec<f32> = values.iter().map(|v| round(*v)).collect();
        f32_view(&view.name, view.shape.clone(), &rounded)
    }

    /// Hand one tensor to the backend; `shape` is `[rows, cols]` or `[len]`.
    /// Every weight of every family passes through here.
    pub fn prepare(
        &mut self,
        view: TensorView<'a>,
        shape: &[usize],
    ) -> Result<Weight, DecoderError> {
        let name = view.name.clone();
        let view = self.cast_floats(view, shape);
        if view.shape != shape {
            return Err(DecoderError::BadShape {
                name,
                actual: view.shape.clone(),
                expected: shape.to_vec(),
            });
        }
        let unsupported = |dtype| DecoderError::UnsupportedFormat {
            name: name.clone(),
            dtype,
            backend: self.device.backend().name(),
        };
        let format = weight_format(view.dtype).ok_or_else(|| unsupported(view.dtype))?;
        let (rows, cols) = match shape {
            [n] => (1, *n as u64),
            [r, c] => (*r as u64, *c as u64),
            _ => {
                return Err(DecoderError::BadShape {
                    name,
                    actual: view.shape.clone(),
                    expected: vec![0, 0],
                });
            }
        };
        let weight = self
            .device
            .prepare_weight(&WeightSpec::single(&name, format, rows, cols, &view.data))
            .map_err(|e| match e.is_unsupported() {
                true => unsupported(view.dtype),
                false => DecoderError::Backend(e),
            })?;
        self.account(&view);
        if let Cow::Borrowed(bytes) = &view.data {
            self.source.release(bytes);
        }
        Ok(weight)
    }

    fn account(&mut self, view: &TensorView<'_>) {
        self.account_bytes(view.data.len() as u64, view.dtype.name());
    }

    /// Count `bytes` of checkpoint data prepared as one tensor of format `key`.
    fn account_bytes(&mut self, bytes: u64, key: &str) {
        self.done += bytes;
        self.summary.bytes += bytes;
        self.summary.tensors += 1;
        FormatBytes::tally(&mut self.summary.formats, key, bytes);
        if let Some(p) = self.progress.as_deref_mut() {
            p.advance(self.done, self.total);
        }
    }
}

/// The projections of attention and MLP blocks (what `--quantization int8`
/// and `fp8` quantize; vLLM likewise leaves embeddings and the LM head alone).
fn is_linear(role: Role) -> bool {
    matches!(
        role,
        Role::Q
            | Role::K
            | Role::V
            | Role::Qkv
            | Role::O
            | Role::Gate
            | Role::Up
            | Role::GateUp
            | Role::Down
    )
}

/// A float matrix as Q8_0 blocks; other views (already quantized, or rows
/// that are not whole blocks of 32) as they are.
pub(crate) fn to_q8_0(view: TensorView<'_>, cols: usize) -> TensorView<'_> {
    let float = matches!(
        view.dtype,
        WeightDType::F32 | WeightDType::F16 | WeightDType::BF16
    );
    if !float || !cols.is_multiple_of(32) {
        return view;
    }
    let Some(values) = dequantize_view(&view) else {
        return view;
    };
    TensorView {
        dtype: WeightDType::Q8_0,
        data: Cow::Owned(crate::weights::quantize::q8_0_blocks(&values)),
        ..view
    }
}

/// Rows `rows` of a matrix (or elements of a vector), in that order: whole
/// rows of whatever storage type, so quantized blocks stay intact.
pub(crate) fn select_rows<'a>(
    view: &TensorView<'a>,
    rows: &[usize],
) -> Result<TensorView<'a>, DecoderError> {
    let total = view.shape.first().copied().unwrap_or(0);
    let bad = || DecoderError::BadShape {
        name: view.name.clone(),
        actual: view.shape.clone(),
        expected: vec![rows.len()],
    };
    if total == 0 || !view.data.len().is_multiple_of(total) {
        return Err(bad());
    }
    if view.shape.len() == 1 {
        // A vector: one "row" per element only for plain numbers.
        let size = view.dtype.type_size();
        if view.dtype.block_size() != 1 {
            return Err(bad());
        }
        let mut data = Vec::with_capacity(rows.len() * size);
        for &r in rows {
            data.extend_from_slice(view.data.get(r * size..(r + 1) * size).ok_or_else(bad)?);
        }
        return Ok(TensorView {
            name: view.name.clone(),
            dtype: view.dtype,
            shape: vec![rows.len()],
            data: Cow::Owned(data),
        });
    }
    let row_bytes = view.data.len() / total;
    let mut data = Vec::with_capacity(rows.len() * row_bytes);
    for &r in rows {
        data.extend_from_slice(
            view.data
                .get(r * row_bytes..(r + 1) * row_bytes)
                .ok_or_else(bad)?,
        );
    }
    let mut shape = view.shape.clone();
    shape[0] = rows.len();
    Ok(TensorView {
        name: view.name.clone(),
        dtype: view.dtype,
        shape,
        data: Cow::Owned(data),
    })
}

/// A Conv1D weight `[cols, rows]` as a `[rows, cols]` f32 matrix.
pub(crate) fn transpose<'a>(
    view: TensorView<'a>,
    rows: usize,
    cols: usize,
) -> Result<TensorView<'a>, DecoderError> {
    let bad = |v: &TensorView<'_>| DecoderError::BadShape {
        name: v.name.clone(),
        actual: v.shape.clone(),
        expected: vec![cols, rows],
    };
    if view.shape != [cols, rows] {
        return Err(bad(&view));
    }
    let values = dequantize_view(&view).ok_or_else(|| bad(&view))?;
    let mut out = vec![0f32; rows * cols];
    for (c, row) in values.chunks_exact(rows).enumerate() {
        for (r, &v) in row.iter().enumerate() {
            out[r * cols + c] = v;
        }
    }
    Ok(f32_view(&view.name, vec![rows, cols], &out))
}
