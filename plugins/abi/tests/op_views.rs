//! Each operation's view reads back what its builder wrote, and refuses
//! operations with missing operands or out-of-range parameters.

use kiln_plugin_abi::ops::{self, Accumulate, Op, OpDecodeError};
use kiln_plugin_abi::{KILN_F32, KilnBuffer, KilnOp, KilnTensor, KilnWeight};

fn tensor(tag: usize) -> KilnTensor {
    KilnTensor {
        buffer: KilnBuffer(tag as *mut _),
        offset: 0,
        dtype: KILN_F32,
        rank: 2,
        dims: [2, 4, 0, 0],
    }
}

fn weight(tag: usize) -> KilnWeight {
    KilnWeight(tag as *mut _)
}

fn attention() -> ops::Attention {
    ops::Attention {
        q: tensor(1),
        k_cache: tensor(2),
        v_cache: tensor(3),
        block_tables: tensor(4),
        seq_lens: tensor(5),
        query_start_loc: tensor(6),
        out: tensor(7),
        scale: 0.125,
        softcap: 0.0,
        num_heads: 8,
        num_kv_heads: 2,
        head_dim: 64,
        block_size: 16,
        sliding_window: 0,
        max_query_len: 3,
        max_seq_len: 40,
    }
}

#[test]
fn attention_round_trips_through_its_slots() {
    let op = attention().encode();
    let back = ops::Attention::decode(&op).unwrap();
    assert_eq!(back.out.buffer, tensor(7).buffer);
    assert_eq!(
        (
            back.num_heads,
            back.num_kv_heads,
            back.head_dim,
            back.block_size
        ),
        (8, 2, 64, 16)
    );
    assert_eq!((back.max_query_len, back.max_seq_len), (3, 40));
    assert!(matches!(Op::decode(&op), Ok(Op::Attention(_))));
}

#[test]
fn a_negative_sliding_window_means_none() {
    let mut op = attention().encode();
    op.iparams[4] = -1;
    assert_eq!(ops::Attention::decode(&op).unwrap().sliding_window, 0);
}

#[test]
fn kv_heads_must_divide_heads() {
    let mut a = attention();
    a.num_kv_heads = 3;
    let err = ops::Attention::decode(&a.encode()).unwrap_err();
    assert!(err.to_string().contains("kv heads"), "{err}");
}

#[test]
fn a_missing_required_operand_is_named() {
    let mut op = ops::linear(ops::Linear {
        x: tensor(1),
        weight: weight(9),
        bias: KilnWeight::NULL,
        out: tensor(2),
        accumulate: Accumulate::Add,
        decode_rows: 3,
    });
    let l = ops::Linear::decode(&op).unwrap();
    assert_eq!(l.accumulate, Accumulate::Add);
    assert_eq!(l.decode_rows, 3);
    assert!(l.bias.is_null());
    op.weights[0] = KilnWeight::NULL;
    let err = ops::Linear::decode(&op).unwrap_err();
    assert!(err.to_string().contains("weight"), "{err}");
}

#[test]
fn a_view_refuses_another_operation() {
    let op = ops::add(tensor(1), tensor(2), tensor(3));
    assert!(matches!(
        ops::SiluMul::decode(&op),
        Err(OpDecodeError::WrongOpcode { .. })
    ));
}

#[test]
fn unknown_opcodes_and_parameters_are_refused() {
    assert!(matches!(
        Op::decode(&KilnOp::new(999)),
        Err(OpDecodeError::UnknownOpcode(999))
    ));
    let bad_kind = ops::activation(42, tensor(1), KilnTensor::NONE, tensor(2));
    assert!(ops::Activation::decode(&bad_kind).is_err());
    let bad_cap = ops::softcap(tensor(1), 0.0, tensor(2));
    assert!(ops::Softcap::decode(&bad_cap).is_err());
    let mut rope = ops::rope(ops::Rope {
        q: tensor(1),
        k: KilnTensor::NONE,
        positions: tensor(2),
        cos: tensor(3),
        sin: tensor(4),
        head_dim: 64,
        rotary_dim: 32,
        style: ops::ROPE_NEOX,
    });
    assert!(ops::Rope::decode(&rope).is_ok());
    rope.iparams[1] = 128;
    assert!(ops::Rope::decode(&rope).is_err());
}

#[test]
fn sample_reads_no_top_logprobs_without_their_tensors() {
    let op = ops::sample(ops::Sample {
        logits: tensor(1),
        params: tensor(2),
        out_ids: tensor(3),
        out_logprobs: tensor(4),
        out_top_ids: KilnTensor::NONE,
        out_top_logprobs: KilnTensor::NONE,
        adjustments: KilnTensor::NONE,
        allowed: KilnTensor::NONE,
        num_top: 5,
    });
    assert_eq!(ops::Sample::decode(&op).unwrap().num_top, 0);
}

#[test]
fn every_view_round_trips() {
    let (a, b, c) = (tensor(1), tensor(2), tensor(3));
    let all = [
        ops::embedding(a, weight(5), b),
        ops::rms_norm(a, weight(5), 1e-6, b),
        ops::silu_mul(a, b, c),
        ops::add(a, b, c),
        ops::gather_rows(a, b, c),
        ops::copy_blocks(a, b, c),
        ops::cast(a, b),
        ops::activation(ops::ACT_GELU, a, KilnTensor::NONE, b),
        ops::scale(a, 2.0, b, Accumulate::Overwrite),
        ops::softcap(a, 30.0, b),
        attention().encode(),
    ];
    for op in all {
        let decoded = Op::decode(&op).unwrap_or_else(|e| panic!("{e}"));
        let again = decoded.encode();
        assert_eq!(again.opcode, op.opcode);
        assert_eq!(again.iparams, op.iparams);
        assert_eq!(again.fparams, op.fparams);
        for (x, y) in again.tensors.iter().zip(&op.tensors) {
            assert_eq!(x.buffer, y.buffer);
        }
    }
}

fn matrix(tag: usize, rows: u64, cols: u64) -> KilnTensor {
    KilnTensor {
        dims: [rows, cols, 0, 0],
        ..tensor(tag)
    }
}

fn moe() -> ops::Moe {
    ops::Moe {
        x: matrix(1, 3, 64),
        router_logits: matrix(2, 3, 8),
        out: matrix(3, 3, 64),
        shared_out: matrix(4, 3, 64),
        shared_gate: matrix(5, 3, 1),
        gate_up: weight(6),
        down: weight(7),
        num_experts: 8,
        top_k: 2,
        decode_rows: 1,
        activation: ops::ACT_SILU,
        routing: ops::MOE_ROUTING_SOFTMAX_TOPK_RENORM,
        accumulate: Accumulate::Add,
    }
}

#[test]
fn moe_round_trips_through_its_slots() {
    let op = ops::moe(moe());
    assert_eq!(op.opcode, ops::OP_MOE);
    assert_eq!(ops::opcode_name(op.opcode), "moe");
    let back = ops::Moe::decode(&op).unwrap();
    assert_eq!((back.num_experts, back.top_k, back.decode_rows), (8, 2, 1));
    assert_eq!(back.routing, ops::MOE_ROUTING_SOFTMAX_TOPK_RENORM);
    assert_eq!(back.accumulate, Accumulate::Add);
    assert_eq!((back.rows(), back.hidden()), (3, 64));
    assert_eq!(back.shared_gate.buffer, tensor(5).buffer);
    assert!(matches!(Op::decode(&op), Ok(Op::Moe(_))));
    let again = Op::decode(&op).unwrap().encode();
    assert_eq!(again.iparams, op.iparams);
}

#[test]
fn moe_refuses_bad_parameters_and_disagreeing_shapes() {
    let refused = |m: ops::Moe, needle: &str| {
        let err = ops::Moe::decode(&m.encode()).unwrap_err().to_string();
        assert!(err.contains(needle), "{err} lacks {needle}");
    };
    refused(ops::Moe { top_k: 9, ..moe() }, "top_k 9 exceeds");
    refused(ops::Moe { top_k: 0, ..moe() }, "top_k");
    refused(
        ops::Moe {
            routing: 7,
            ..moe()
        },
        "routing mode 7",
    );
    refused(
        ops::Moe {
            activation: 9,
            ..moe()
        },
        "activation kind 9",
    );
    refused(
        ops::Moe {
            decode_rows: 4,
            ..moe()
        },
        "decode_rows 4",
    );
    refused(
        ops::Moe {
            router_logits: matrix(2, 3, 7),
            ..moe()
        },
        "router_logits must be [n, E]",
    );
    refused(
        ops::Moe {
            out: matrix(3, 2, 64),
            ..moe()
        },
        "out must be [n, h]",
    );
    refused(
        ops::Moe {
            shared_out: KilnTensor::NONE,
            ..moe()
        },
        "without shared_out",
    );
    let unscaled = ops::Moe {
        shared_gate: KilnTensor::NONE,
        ..moe()
    };
    assert!(ops::Moe::decode(&unscaled.encode()).is_ok());
}

#[test]
fn moe_expert_sizes_come_from_the_stacked_weights() {
    let m = moe();
    let dims = m.expert_dims((8 * 2 * 32, 64), (8 * 64, 32)).unwrap();
    assert_eq!((dims.hidden, dims.intermediate), (64, 32));
    let err = m
        .expert_dims((8 * 2 * 32 + 1, 64), (8 * 64, 32))
        .unwrap_err();
    assert!(err.to_string().contains("2·E = 16"), "{err}");
    let err = m
        .expert_dims((8 * 2 * 32, 64), (8 * 64 + 3, 32))
        .unwrap_err();
    assert!(err.to_string().contains("E = 8"), "{err}");
    let err = m.expert_dims((8 * 2 * 32, 64), (8 * 64, 31)).unwrap_err();
    assert!(err.to_string().contains("intermediate size of 32"), "{err}");
    let err = m.expert_dims((8 * 2 * 32, 48), (8 * 64, 32)).unwrap_err();
    assert!(err.to_string().contains("hidden sizes disagree"), "{err}");
}
