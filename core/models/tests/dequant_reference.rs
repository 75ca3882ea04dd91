//! The reference dequantizer against gguf-py, bit for bit, on seeded random
//! blocks of every supported block type (fixture made by
//! `fixtures/make_dequant_fixture.py`).

use kiln_models::weights::WeightDType;
use kiln_models::weights::dequant::{SUPPORTED, dequantize, supports};

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn dtype_named(name: &str) -> WeightDType {
    WeightDType::ALL
        .into_iter()
        .find(|d| d.name() == name)
        .unwrap_or_else(|| panic!("unknown type {name}"))
}

#[test]
fn matches_gguf_py_bit_for_bit() {
    let fixture: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/dequant_blocks.json")).expect("fixture");
    let cases = fixture.as_object().unwrap();
    for (name, case) in cases {
        let dtype = dtype_named(name);
        let bytes = hex(case["bytes"].as_str().unwrap());
        let want: Vec<u32> = case["values_f32_bits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let got = dequantize(dtype, &bytes, want.len()).unwrap_or_else(|| panic!("{name}"));
        let got: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
        let first_diff = got.iter().zip(&want).position(|(a, b)| a != b);
        assert_eq!(first_diff, None, "{name}: first differing value");
        assert_eq!(got.len(), want.len());
    }
    // Every supported block type is covered by the fixture.
    for d in SUPPORTED.iter().filter(|d| d.is_quantized()) {
        assert!(cases.contains_key(d.name()), "{d} missing from the fixture");
        assert!(supports(*d));
    }
}
