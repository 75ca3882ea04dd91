//! A mapped GGUF gives back the resident pages of a tensor the loader is
//! done with, and the bytes read the same afterwards. Its own test binary,
//! so that no other test's allocations move the process's resident size
//! while it is measured.

mod common;

use common::Scratch;
use kiln_models::weights::gguf::{GgufFile, GgufValue, GgufWriter};
use kiln_models::weights::{WeightDType, WeightSource};

/// Resident bytes of this process (`/proc/self/statm`, field 2, in pages of 4 KiB).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[test]
fn released_tensor_pages_leave_the_resident_set_and_read_back_unchanged() {
    const MIB: usize = 1 << 20;
    let dir = Scratch::new("mapped-release");
    let path = dir.0.join("big.gguf");
    let values: Vec<u8> = (0..64 * MIB).map(|i| (i % 251) as u8).collect();
    let mut w = GgufWriter::new();
    w.metadata("general.architecture", GgufValue::String("llama".into()))
        .tensor(
            "token_embd.weight",
            WeightDType::F32,
            &[4096, (values.len() / 4 / 4096) as u64],
            values.clone(),
        );
    w.write(&path).expect("write gguf");

    let file = GgufFile::open(&path).expect("open gguf");
    let name = "model.embed_tokens.weight";
    let view = file.tensor(name).expect("read").expect("tensor exists");
    assert_eq!(&view.data[..], &values[..]);
    let Some(touched) = resident_bytes() else {
        // Not Linux: the bytes must still read back unchanged.
        file.release(&view.data);
        assert_eq!(&view.data[..], &values[..]);
        return;
    };
    file.release(&view.data);
    let released = resident_bytes().expect("statm");
    assert!(
        touched.saturating_sub(released) >= 48 * MIB as u64,
        "resident bytes went from {touched} to {released}; releasing 64 MiB of mapped tensor should drop most of it"
    );
    // Reading again faults the file's bytes back in.
    assert_eq!(&view.data[..], &values[..]);
    // Bytes that are not in the map (here, the test's own copy) are ignored.
    file.release(&values);
    assert_eq!(values[12345], (12345 % 251) as u8);
}
