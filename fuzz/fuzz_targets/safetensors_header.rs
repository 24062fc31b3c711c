//! Fuzzes the safetensors header parser with arbitrary file bytes.
//!
//! Any input may be rejected, but none may panic. When a header is accepted, every accessor is
//! used and the invariants the parser promises are checked, so that an inconsistent header that
//! slips through panics here instead of later in a reader: tensors come in ascending offset
//! order, tile the data section with no hole or overlap, and each tensor's bytes are exactly
//! its element count times the dtype size.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lowbit_safetensors::Safetensors;

fuzz_target!(|data: &[u8]| {
    let Ok(st) = Safetensors::parse(data) else { return };
    let mut end = 0;
    for t in st.tensors() {
        assert_eq!(
            t.data.start, end,
            "`{}` does not start where the previous tensor ended",
            t.name
        );
        end = t.data.end;
        let bytes = st.bytes(t);
        assert_eq!(bytes.len() as u64, t.data.end - t.data.start);
        assert_eq!(t.numel() * t.dtype.size() as u64, bytes.len() as u64, "`{}`", t.name);
    }
    assert_eq!(st.data_start() + end, data.len() as u64, "trailing bytes after the last tensor");
    for (k, v) in st.metadata() {
        std::hint::black_box((k.len(), v.len()));
    }
});
