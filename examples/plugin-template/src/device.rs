//! The device: buffers are boxed byte vectors, and `execute` decodes each
//! operation with the SDK's typed views.

use kiln_plugin_abi::ops::{self, Accumulate, Op};
use kiln_plugin_abi::plugin::{DevicePlugin, PluginError, PluginResult, WeightDescRef};
use kiln_plugin_abi::*;

const SUPPORTED: [u32; 3] = [ops::OP_ADD, ops::OP_SILU_MUL, ops::OP_SCALE];

pub struct TemplateDevice;

/// The buffer behind a handle this device made.
fn memory<'a>(buf: KilnBuffer) -> PluginResult<&'a mut Vec<u8>> {
    if buf.0.is_null() {
        return Err(PluginError::invalid("null buffer"));
    }
    // SAFETY: every non-null handle the host passes was made by `alloc_buffer`.
    Ok(unsafe { &mut *(buf.0 as *mut Vec<u8>) })
}

fn read(t: &KilnTensor) -> PluginResult<Vec<f32>> {
    if t.dtype != KILN_F32 {
        return Err(PluginError::unsupported("only f32 tensors"));
    }
    let bytes = memory(t.buffer)?
        .get(t.offset as usize..(t.offset + t.byte_len()) as usize)
        .ok_or_else(|| PluginError::invalid("tensor outside its buffer"))?;
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

fn write(t: &KilnTensor, values: &[f32]) -> PluginResult<()> {
    let bytes = memory(t.buffer)?
        .get_mut(t.offset as usize..(t.offset + t.byte_len()) as usize)
        .ok_or_else(|| PluginError::invalid("tensor outside its buffer"))?;
    if bytes.len() != values.len() * 4 {
        return Err(PluginError::invalid("output size differs from the inputs"));
    }
    for (chunk, v) in bytes.chunks_exact_mut(4).zip(values) {
        chunk.copy_from_slice(&v.to_le_bytes());
    }
    Ok(())
}

impl DevicePlugin for TemplateDevice {
    fn memory_info(&self) -> PluginResult<(u64, u64)> {
        Ok((1 << 30, 1 << 30))
    }

    fn alloc_buffer(&mut self, bytes: u64) -> PluginResult<KilnBuffer> {
        let memory = vec![0u8; bytes as usize];
        Ok(KilnBuffer(Box::into_raw(Box::new(memory)) as *mut _))
    }

    fn free_buffer(&mut self, buf: KilnBuffer) {
        if !buf.0.is_null() {
            // SAFETY: made by `alloc_buffer`, freed once.
            drop(unsafe { Box::from_raw(buf.0 as *mut Vec<u8>) });
        }
    }

    fn write_buffer(&mut self, buf: KilnBuffer, offset: u64, data: &[u8]) -> PluginResult<()> {
        let start = offset as usize;
        memory(buf)?
            .get_mut(start..start + data.len())
            .ok_or_else(|| PluginError::invalid("write outside the buffer"))?
            .copy_from_slice(data);
        Ok(())
    }

    fn read_buffer(&mut self, buf: KilnBuffer, offset: u64, out: &mut [u8]) -> PluginResult<()> {
        let start = offset as usize;
        out.copy_from_slice(
            memory(buf)?
                .get(start..start + out.len())
                .ok_or_else(|| PluginError::invalid("read outside the buffer"))?,
        );
        Ok(())
    }

    fn copy_buffer(&mut self, copy: &KilnBufferCopy) -> PluginResult<()> {
        let (from, len) = (copy.src_offset as usize, copy.len as usize);
        let staging = memory(copy.src)?
            .get(from..from + len)
            .ok_or_else(|| PluginError::invalid("copy from outside the source"))?
            .to_vec();
        self.write_buffer(copy.dst, copy.dst_offset, &staging)
    }

    fn synchronize(&mut self) -> PluginResult<()> {
        Ok(())
    }

    fn prepare_weight(&mut self, desc: WeightDescRef<'_>) -> PluginResult<KilnWeight> {
        Err(PluginError::unsupported(format!(
            "weight {}: the template backend takes no weights",
            desc.name()
        )))
    }

    fn release_weight(&mut self, _weight: KilnWeight) {}

    fn supports(&self, query: &KilnSupportQuery) -> bool {
        SUPPORTED.contains(&query.opcode)
            && query.weight_format == KILN_WEIGHT_NONE
            && query.act_dtype == KILN_F32
    }

    fn execute(&mut self, operations: &[KilnOp]) -> PluginResult<()> {
        for op in operations {
            if !SUPPORTED.contains(&op.opcode) {
                return Err(PluginError::unsupported(format!(
                    "{} is not supported by the template backend",
                    ops::opcode_name(op.opcode)
                )));
            }
            match Op::decode(op)? {
                Op::Add(a) => {
                    let (x, y) = (read(&a.a)?, read(&a.b)?);
                    let sum: Vec<f32> = x.iter().zip(&y).map(|(p, q)| p + q).collect();
                    write(&a.out, &sum)?;
                }
                Op::SiluMul(s) => {
                    let (gate, up) = (read(&s.gate)?, read(&s.up)?);
                    let out: Vec<f32> = gate
                        .iter()
                        .zip(&up)
                        .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
                        .collect();
                    write(&s.out, &out)?;
                }
                Op::Scale(s) => {
                    let x = read(&s.x)?;
                    let mut out = match s.accumulate {
                        Accumulate::Add => read(&s.out)?,
                        Accumulate::Overwrite => vec![0.0; x.len()],
                    };
                    for (o, v) in out.iter_mut().zip(&x) {
                        *o += v * s.factor;
                    }
                    write(&s.out, &out)?;
                }
                _ => {
                    return Err(PluginError::internal(format!(
                        "{} is in SUPPORTED but has no implementation",
                        ops::opcode_name(op.opcode)
                    )));
                }
            }
        }
        Ok(())
    }
}
