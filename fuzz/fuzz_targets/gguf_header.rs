//! Fuzzes the GGUF header parser with arbitrary file bytes.
//!
//! Any input may be rejected, but none may panic. When a header is accepted, every accessor is
//! used: each metadata value is rendered and converted (arrays element by element), each key is
//! looked up again, and each tensor's bytes are borrowed. The invariants the parser promises are
//! checked too: aligned data, tensor sizes that match the ggml block table, and shapes that are
//! the dimensions reversed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lowbit_gguf::{Gguf, Value};

fn touch(v: &Value, buf: &[u8]) {
    std::hint::black_box((v.to_string(), v.type_id(), v.as_u64(), v.as_str()));
    if let Value::Array(a) = v {
        let mut n = 0u64;
        for item in a.items(buf) {
            assert_eq!(item.type_id(), a.element_type(), "array element of another type");
            touch(&item, buf);
            n += 1;
        }
        assert_eq!(n, a.len(), "a validated array decodes to all its elements");
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(g) = Gguf::parse(data) else { return };
    std::hint::black_box(g.version());
    assert!(g.alignment().is_power_of_two());
    assert_eq!(g.data_start() % g.alignment(), 0, "data section not aligned");
    for (key, value) in g.kvs() {
        touch(value, g.buffer());
        assert!(std::ptr::eq(g.get(key).expect("listed key is found"), value), "`{key}`");
    }
    for t in g.tensors() {
        assert_eq!(g.bytes(t).len() as u64, t.size, "`{}`", t.name);
        assert_eq!(t.offset % g.alignment(), 0, "`{}` misaligned", t.name);
        let shape = t.shape();
        assert!(shape.iter().rev().eq(t.dims.iter()), "`{}`", t.name);
        let row = t.ty.row_bytes(t.dims[0]).expect("accepted rows are whole blocks");
        let size = t.dims[1..].iter().try_fold(row, |a, &d| a.checked_mul(d));
        assert_eq!(size, Some(t.size), "`{}` size against the block table", t.name);
        std::hint::black_box(t.numel());
    }
});
