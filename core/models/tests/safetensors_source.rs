//! Safetensors checkpoints: single files, shards with an index, bad inputs.

mod common;

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use common::Scratch;
use kiln_models::weights::safetensors::SafetensorsSource;
use kiln_models::weights::{WeightDType, WeightSource};
use safetensors::Dtype;
use safetensors::tensor::TensorView as StView;

fn write(path: &Path, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(String, StView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.to_string(), StView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::tensor::serialize_to_file(views, None::<HashMap<String, String>>, path).unwrap();
}

fn index(dir: &Path, map: &[(&str, &str)]) {
    let weight_map: serde_json::Map<String, serde_json::Value> = map
        .iter()
        .map(|(t, f)| (t.to_string(), serde_json::json!(f)))
        .collect();
    let v = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": weight_map});
    std::fs::write(dir.join("model.safetensors.index.json"), v.to_string()).unwrap();
}

#[test]
fn single_file_views_are_zero_copy() {
    let dir = Scratch::new("st-single");
    let a: Vec<u8> = (0..24).collect();
    write(
        &dir.0.join("model.safetensors"),
        &[
            ("model.norm.weight", Dtype::BF16, vec![12], a.clone()),
            ("q.qweight", Dtype::I32, vec![2, 3], a.clone()),
            ("w.int8", Dtype::I8, vec![4, 2], vec![7; 8]),
        ],
    );
    for path in [dir.0.clone(), dir.0.join("model.safetensors")] {
        let st = SafetensorsSource::open(&path).unwrap();
        assert_eq!(
            st.tensor_names(),
            vec!["model.norm.weight", "q.qweight", "w.int8"]
        );
        let t = st.tensor("model.norm.weight").unwrap().unwrap();
        assert_eq!((t.dtype, t.shape.clone()), (WeightDType::BF16, vec![12]));
        assert_eq!(t.data.as_ref(), &a[..]);
        assert!(matches!(t.data, Cow::Borrowed(_)));
        assert_eq!(
            st.tensor("q.qweight").unwrap().unwrap().dtype,
            WeightDType::I32
        );
        assert!(st.tensor("absent").unwrap().is_none());
        assert_eq!(st.total_bytes(), 24 + 24 + 8);
    }
}

#[test]
fn shards_follow_the_index() {
    let dir = Scratch::new("st-shards");
    write(
        &dir.0.join("model-00001-of-00002.safetensors"),
        &[("a", Dtype::F32, vec![1], vec![0, 0, 128, 63])],
    );
    write(
        &dir.0.join("model-00002-of-00002.safetensors"),
        &[("b", Dtype::F16, vec![2], vec![0, 60, 0, 64])],
    );
    index(
        &dir.0,
        &[
            ("a", "model-00001-of-00002.safetensors"),
            ("b", "model-00002-of-00002.safetensors"),
        ],
    );
    let st = SafetensorsSource::open(&dir.0).unwrap();
    assert_eq!(st.tensor_names(), vec!["a", "b"]);
    assert_eq!(st.files().len(), 2);
    let a = st.tensor("a").unwrap().unwrap();
    assert_eq!(f32::from_le_bytes(a.data.as_ref().try_into().unwrap()), 1.0);

    index(
        &dir.0,
        &[
            ("a", "model-00002-of-00002.safetensors"),
            ("b", "model-00002-of-00002.safetensors"),
        ],
    );
    let e = SafetensorsSource::open(&dir.0).unwrap_err().to_string();
    assert!(e.contains("index.json") && e.contains("`a`"), "{e}");

    index(&dir.0, &[("a", "missing.safetensors")]);
    let e = SafetensorsSource::open(&dir.0).unwrap_err().to_string();
    assert!(e.contains("missing.safetensors"), "{e}");

    index(&dir.0, &[("a", "../escape.safetensors")]);
    let e = SafetensorsSource::open(&dir.0).unwrap_err().to_string();
    assert!(e.contains("same directory"), "{e}");

    std::fs::write(dir.0.join("model.safetensors.index.json"), "{").unwrap();
    let e = SafetensorsSource::open(&dir.0).unwrap_err().to_string();
    assert!(e.contains("invalid JSON"), "{e}");
}

#[test]
fn duplicate_tensors_bad_files_and_empty_dirs_are_errors() {
    let dir = Scratch::new("st-bad");
    write(
        &dir.0.join("s1.safetensors"),
        &[("a", Dtype::F32, vec![1], vec![0; 4])],
    );
    write(
        &dir.0.join("s2.safetensors"),
        &[("a", Dtype::F32, vec![1], vec![0; 4])],
    );
    index(&dir.0, &[("a", "s1.safetensors"), ("x", "s2.safetensors")]);
    let e = SafetensorsSource::open(&dir.0).unwrap_err().to_string();
    assert!(e.contains("more than one shard"), "{e}");

    let empty = Scratch::new("st-empty");
    let e = SafetensorsSource::open(&empty.0).unwrap_err().to_string();
    assert!(e.contains("model.safetensors"), "{e}");

    std::fs::write(
        empty.0.join("model.safetensors"),
        b"\x10\0\0\0\0\0\0\0{not json}      ",
    )
    .unwrap();
    let e = SafetensorsSource::open(&empty.0).unwrap_err().to_string();
    assert!(e.contains("not a valid safetensors file"), "{e}");

    write(
        &empty.0.join("model.safetensors"),
        &[("f8", Dtype::F8_E5M2, vec![2], vec![0; 2])],
    );
    let e = SafetensorsSource::open(&empty.0).unwrap_err().to_string();
    assert!(e.contains("`f8`") && e.contains("F8_E5M2"), "{e}");
}
