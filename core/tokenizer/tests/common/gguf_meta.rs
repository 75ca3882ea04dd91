//! Just enough of the GGUF format to read a file's tokenizer metadata in
//! tests (the header and key/values; tensors are never touched), so that
//! these tests depend on nothing but the file.

use std::collections::HashMap;
use std::io::{BufReader, Read};
use std::path::Path;

use kiln_tokenizer::GgufTokenizerSpec;

/// A metadata value.
#[derive(Debug, Clone)]
pub enum Meta {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    Array(Vec<Meta>),
}

struct Reader<R>(R);

impl<R: Read> Reader<R> {
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut b = [0u8; N];
        self.0.read_exact(&mut b).expect("truncated GGUF header");
        b
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.bytes())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.bytes())
    }
    fn string(&mut self) -> String {
        let len = self.u64() as usize;
        let mut b = vec![0u8; len];
        self.0.read_exact(&mut b).expect("truncated GGUF string");
        String::from_utf8(b).expect("GGUF strings are UTF-8")
    }
    fn value(&mut self, ty: u32) -> Meta {
        match ty {
            0 => Meta::Int(self.bytes::<1>()[0] as i64),
            1 => Meta::Int(self.bytes::<1>()[0] as i8 as i64),
            2 => Meta::Int(u16::from_le_bytes(self.bytes()) as i64),
            3 => Meta::Int(i16::from_le_bytes(self.bytes()) as i64),
            4 => Meta::Int(self.u32() as i64),
            5 => Meta::Int(i32::from_le_bytes(self.bytes()) as i64),
            6 => Meta::Float(f32::from_le_bytes(self.bytes()) as f64),
            7 => Meta::Bool(self.bytes::<1>()[0] != 0),
            8 => Meta::Str(self.string()),
            9 => {
                let elem = self.u32();
                let n = self.u64();
                Meta::Array((0..n).map(|_| self.value(elem)).collect())
            }
            10 => Meta::Int(self.u64() as i64),
            11 => Meta::Int(i64::from_le_bytes(self.bytes())),
            12 => Meta::Float(f64::from_le_bytes(self.bytes())),
            other => panic!("unknown GGUF value type {other}"),
        }
    }
}

/// Every key/value of the file's header.
pub fn read_metadata(path: &Path) -> HashMap<String, Meta> {
    let file = std::fs::File::open(path).expect("open GGUF");
    let mut r = Reader(BufReader::with_capacity(1 << 20, file));
    assert_eq!(&r.bytes::<4>(), b"GGUF", "not a GGUF file");
    let version = r.u32();
    assert!(version >= 2, "GGUF version {version}");
    let _tensors = r.u64();
    let kvs = r.u64();
    (0..kvs)
        .map(|_| {
            let key = r.string();
            let ty = r.u32();
            (key, r.value(ty))
        })
        .collect()
}

/// The tokenizer spec the metadata describes.
pub fn tokenizer_spec(md: &HashMap<String, Meta>) -> GgufTokenizerSpec {
    let get = |k: &str| md.get(&format!("tokenizer.{k}"));
    let string = |k: &str| match get(k) {
        Some(Meta::Str(s)) => Some(s.clone()),
        _ => None,
    };
    let id = |k: &str| match get(k) {
        Some(Meta::Int(i)) => Some(*i as u32),
        _ => None,
    };
    let flag = |k: &str| match get(k) {
        Some(Meta::Bool(b)) => Some(*b),
        _ => None,
    };
    let array = |k: &str| match get(k) {
        Some(Meta::Array(a)) => a.clone(),
        _ => Vec::new(),
    };
    let strings = |k: &str| {
        array(k)
            .into_iter()
            .map(|m| match m {
                Meta::Str(s) => s,
                other => panic!("{k}: {other:?} is not a string"),
            })
            .collect::<Vec<_>>()
    };
    let scores = match get("ggml.scores") {
        Some(Meta::Array(a)) => Some(
            a.iter()
                .map(|m| match m {
                    Meta::Float(f) => *f as f32,
                    other => panic!("score {other:?}"),
                })
                .collect(),
        ),
        _ => None,
    };
    GgufTokenizerSpec {
        model: string("ggml.model").expect("tokenizer.ggml.model"),
        pre: string("ggml.pre"),
        tokens: strings("ggml.tokens"),
        token_types: array("ggml.token_type")
            .into_iter()
            .map(|m| match m {
                Meta::Int(i) => i as i32,
                other => panic!("token type {other:?}"),
            })
            .collect(),
        merges: strings("ggml.merges"),
        scores,
        bos_token_id: id("ggml.bos_token_id"),
        eos_token_id: id("ggml.eos_token_id"),
        unknown_token_id: id("ggml.unknown_token_id"),
        padding_token_id: id("ggml.padding_token_id"),
        cls_token_id: id("ggml.cls_token_id"),
        separator_token_id: id("ggml.seperator_token_id"),
        normalizer_lowercase: flag("ggml.normalizer.lowercase"),
        normalizer_strip_accents: flag("ggml.normalizer.strip_accents"),
        add_bos_token: flag("ggml.add_bos_token"),
        add_eos_token: flag("ggml.add_eos_token"),
        add_space_prefix: flag("ggml.add_space_prefix"),
        chat_template: string("chat_template"),
    }
}
