//! One test per reader error, on files built by [`Layout`] and then damaged.

use crate::{Array, Error, Gguf, Layout, LayoutError, Value, type_id};
use lowbit_dtype::GgmlType;
use proptest::prelude::*;

fn kvs() -> Vec<(String, Value)> {
    vec![
        ("general.architecture".into(), Value::String("flux".into())),
        ("general.quantization_version".into(), Value::U32(2)),
        (
            "lowbit.list".into(),
            Value::Array(Array::new(type_id::I32, vec![Value::I32(1), Value::I32(-2)])),
        ),
    ]
}

fn tensors() -> Vec<(String, Vec<u64>, GgmlType)> {
    vec![
        ("a.weight".into(), vec![64, 3], GgmlType::Q8_0),
        ("b.weight".into(), vec![256, 2], GgmlType::Q4_K),
        ("c.bias".into(), vec![5], GgmlType::BF16),
    ]
}

/// A valid file: header plus zeroed data.
fn good() -> Vec<u8> {
    let layout = Layout::new(&kvs(), tensors(), 32).unwrap();
    let mut out = layout.header.clone();
    out.resize(out.len() + usize::try_from(layout.data_len).unwrap(), 0);
    out
}

fn with(
    kvs: &[(String, Value)],
    tensors: Vec<(String, Vec<u64>, GgmlType)>,
    extra: u64,
) -> Vec<u8> {
    let layout = Layout::new(kvs, tensors, 32).unwrap();
    let mut out = layout.header.clone();
    out.resize(out.len() + usize::try_from(layout.data_len + extra).unwrap(), 0);
    out
}

/// Offset of the first tensor info's offset field, found by searching for the name.
fn find(bytes: &[u8], needle: &[u8]) -> usize {
    bytes.windows(needle.len()).position(|w| w == needle).unwrap()
}

#[test]
fn reads_what_layout_writes() {
    let bytes = good();
    let g = Gguf::parse(&bytes).unwrap();
    assert_eq!(g.version(), 3);
    assert_eq!(g.alignment(), 32);
    assert_eq!(g.kvs()[..2], kvs()[..2]);
    let Value::Array(list) = &g.kvs()[2].1 else { panic!("lowbit.list is an array") };
    assert_eq!((list.element_type(), list.len(), list.stored_bytes()), (type_id::I32, 2, 8));
    assert_eq!(list.items(g.buffer()).collect::<Vec<_>>(), [Value::I32(1), Value::I32(-2)]);
    assert_eq!(g.get("general.architecture").and_then(Value::as_str), Some("flux"));
    let t = &g.tensors()[1];
    assert_eq!(t.name, "b.weight");
    assert_eq!(t.shape(), [2, 256]);
    assert_eq!(t.size, 2 * 144);
    assert_eq!(t.offset % 32, 0);
    assert_eq!(g.tensors()[2].size, 10, "BF16 is 2 bytes per element, not 2/128");
    assert_eq!(g.bytes(t).len(), 288);
    assert_eq!(g.data_start() % 32, 0);
}

#[test]
fn bad_magic() {
    assert_eq!(
        Gguf::parse(b"GGML\x03\0\0\0").unwrap_err(),
        Error::BadMagic { found: b"GGML".to_vec() }
    );
    assert_eq!(Gguf::parse(b"GG").unwrap_err(), Error::BadMagic { found: b"GG".to_vec() });
}

#[test]
fn big_endian_and_unsupported_versions() {
    let mut bytes = good();
    bytes[4..8].copy_from_slice(&3u32.to_be_bytes());
    assert_eq!(Gguf::parse(&bytes).unwrap_err(), Error::BigEndian);
    for v in [0u32, 1, 4, 0xffff] {
        bytes[4..8].copy_from_slice(&v.to_le_bytes());
        assert_eq!(Gguf::parse(&bytes).unwrap_err(), Error::UnsupportedVersion { version: v });
    }
}

#[test]
fn truncated_anywhere_in_the_header() {
    let bytes = good();
    let header_end = find(&bytes, b"c.bias") + 6 + 4 + 8 + 4 + 8;
    for cut in 4..header_end {
        let err = Gguf::parse(&bytes[..cut]).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Truncated { .. }
                    | Error::StringPastEnd { .. }
                    | Error::TooManyKvs { .. }
                    | Error::TooManyTensors { .. }
            ),
            "cut at {cut}: {err}"
        );
    }
}

#[test]
fn truncated_data_is_out_of_bounds() {
    let bytes = good();
    let g = Gguf::parse(&bytes).unwrap();
    let last = &g.tensors()[2];
    let end = usize::try_from(g.data_start() + last.offset + last.size).unwrap();
    assert!(Gguf::parse(&bytes[..end]).is_ok(), "padding after the last tensor is optional");
    let err = Gguf::parse(&bytes[..end - 1]).unwrap_err();
    assert!(matches!(err, Error::OutOfBounds { ref name, .. } if name == "c.bias"), "{err}");
}

#[test]
fn absurd_counts() {
    let mut bytes = good();
    bytes[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(
        Gguf::parse(&bytes).unwrap_err(),
        Error::TooManyTensors { count: u64::MAX, .. }
    ));
    let mut bytes = good();
    bytes[16..24].copy_from_slice(&(1u64 << 40).to_le_bytes());
    assert!(matches!(Gguf::parse(&bytes).unwrap_err(), Error::TooManyKvs { .. }));
}

#[test]
fn string_past_end() {
    let mut bytes = good();
    // The first key's length field sits right after the counts.
    bytes[24..32].copy_from_slice(&1_000_000u64.to_le_bytes());
    assert!(matches!(
        Gguf::parse(&bytes).unwrap_err(),
        Error::StringPastEnd { len: 1_000_000, offset: 24, .. }
    ));
}

#[test]
fn invalid_utf8() {
    let mut bytes = good();
    let at = find(&bytes, b"general.architecture");
    bytes[at] = 0xff;
    assert!(matches!(Gguf::parse(&bytes).unwrap_err(), Error::InvalidUtf8 { .. }));
}

#[test]
fn array_too_long_and_bad_value_types() {
    let mut bytes = good();
    let at = find(&bytes, b"lowbit.list") + 11 + 4 + 4;
    bytes[at..at + 8].copy_from_slice(&(1u64 << 61).to_le_bytes());
    assert!(
        matches!(Gguf::parse(&bytes).unwrap_err(), Error::ArrayTooLong { ref key, .. } if key == "lowbit.list")
    );

    let mut bytes = good();
    let at = find(&bytes, b"lowbit.list") + 11;
    bytes[at..at + 4].copy_from_slice(&13u32.to_le_bytes());
    assert!(matches!(Gguf::parse(&bytes).unwrap_err(), Error::BadValueType { .. }));

    let nested = vec![(
        "nested".to_owned(),
        Value::Array(Array::new(
            type_id::ARRAY,
            vec![Value::Array(Array::new(type_id::U8, vec![]))],
        )),
    )];
    let err = Gguf::parse(&with(&nested, vec![], 0)).unwrap_err();
    assert!(matches!(err, Error::BadValueType { .. }), "{err}");
}

#[test]
fn duplicate_key_and_tensor() {
    let mut k = kvs();
    k.push(k[0].clone());
    assert!(matches!(
        Gguf::parse(&with(&k, tensors(), 0)).unwrap_err(),
        Error::DuplicateKey { .. }
    ));
    let mut t = tensors();
    t.push(t[0].clone());
    assert!(matches!(Gguf::parse(&with(&kvs(), t, 0)).unwrap_err(), Error::DuplicateTensor { .. }));
}

#[test]
fn alignment_key() {
    for bad in [Value::U32(0), Value::U32(24), Value::U64(32), Value::String("32".into())] {
        let mut k = kvs();
        k.push(("general.alignment".into(), bad));
        let err = Gguf::parse(&with(&k, vec![], 0)).unwrap_err();
        assert!(matches!(err, Error::BadAlignment { .. }), "{err}");
    }
    let mut k = kvs();
    k.push(("general.alignment".into(), Value::U32(64)));
    let layout = Layout::new(&k, tensors(), 64).unwrap();
    let mut bytes = layout.header.clone();
    bytes.resize(bytes.len() + usize::try_from(layout.data_len).unwrap(), 0);
    let g = Gguf::parse(&bytes).unwrap();
    assert_eq!(g.alignment(), 64);
    assert_eq!(g.data_start() % 64, 0);
}

#[test]
fn tensor_info_errors() {
    let at = |bytes: &[u8]| find(bytes, b"a.weight") + 8;
    let mut bytes = good();
    let p = at(&bytes);
    bytes[p..p + 4].copy_from_slice(&5u32.to_le_bytes());
    assert!(matches!(Gguf::parse(&bytes).unwrap_err(), Error::BadDimCount { n_dims: 5, .. }));

    let mut bytes = good();
    let p = at(&bytes) + 4 + 16;
    bytes[p..p + 4].copy_from_slice(&4u32.to_le_bytes());
    assert!(matches!(Gguf::parse(&bytes).unwrap_err(), Error::UnknownType { id: 4, .. }));

    let mut bytes = good();
    let p = at(&bytes) + 4;
    bytes[p..p + 8].copy_from_slice(&48u64.to_le_bytes());
    assert!(matches!(
        Gguf::parse(&bytes).unwrap_err(),
        Error::NotBlockMultiple { ne0: 48, block: 32, .. }
    ));

    let mut bytes = good();
    let p = at(&bytes) + 4 + 8;
    bytes[p..p + 8].copy_from_slice(&(1u64 << 62).to_le_bytes());
    assert!(matches!(Gguf::parse(&bytes).unwrap_err(), Error::ShapeOverflow { .. }));

    let mut bytes = good();
    let p = at(&bytes) + 4 + 16 + 4;
    bytes[p..p + 8].copy_from_slice(&8u64.to_le_bytes());
    assert!(matches!(Gguf::parse(&bytes).unwrap_err(), Error::Misaligned { offset: 8, .. }));
}

#[test]
fn overlapping_tensors() {
    let mut bytes = good();
    // Point b.weight at a.weight's offset (0).
    let p = find(&bytes, b"b.weight") + 8 + 4 + 16 + 4;
    bytes[p..p + 8].copy_from_slice(&0u64.to_le_bytes());
    let err = Gguf::parse(&bytes).unwrap_err();
    assert!(matches!(err, Error::Overlap { .. }), "{err}");
}

proptest! {
    #[test]
    fn damaged_files_never_panic(flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6)) {
        let mut bytes = good();
        for (at, v) in flips {
            let i = at.index(bytes.len());
            bytes[i] = v;
        }
        let _ = Gguf::parse(&bytes);
    }

    #[test]
    fn layout_round_trips(dims in prop::collection::vec(prop::collection::vec(1u64..4, 0..3), 0..5), ty_i in 0usize..6) {
        let ty = [GgmlType::F32, GgmlType::BF16, GgmlType::Q8_0, GgmlType::Q4_K, GgmlType::TQ1_0, GgmlType::I8][ty_i];
        let tensors: Vec<_> = dims
            .into_iter()
            .enumerate()
            .map(|(i, rest)| {
                let mut d = vec![ty.block_size() as u64 * 2];
                d.extend(rest);
                (format!("t{i}"), d, ty)
            })
            .collect();
        let bytes = with(&kvs(), tensors.clone(), 0);
        let g = Gguf::parse(&bytes).unwrap();
        prop_assert_eq!(g.tensors().len(), tensors.len());
        for (t, (name, dims, ty)) in g.tensors().iter().zip(tensors) {
            prop_assert_eq!(&t.name, &name);
            prop_assert_eq!(&t.dims, &dims);
            prop_assert_eq!(t.ty, ty);
        }
    }
}

/// Arrays are validated when parsed and decoded only on demand, so a header holding millions of
/// elements costs no per-element memory; every element type decodes back to what was written.
#[test]
fn arrays_are_lazy_and_decode_every_type() {
    let n = 3_000_000;
    let strings = vec![Value::String("héllo".into()), Value::String(String::new())];
    let mut k = vec![(
        "big".to_owned(),
        Value::Array(Array::new(type_id::U8, (0..n).map(|i| Value::U8((i % 251) as u8)).collect())),
    )];
    let samples = [
        Value::U8(7),
        Value::I8(-7),
        Value::U16(700),
        Value::I16(-700),
        Value::U32(70_000),
        Value::I32(-70_000),
        Value::F32(1.5),
        Value::Bool(true),
        Value::U64(1 << 40),
        Value::I64(-(1 << 40)),
        Value::F64(-2.25),
    ];
    for v in &samples {
        k.push((
            format!("a.{}", v.type_name()),
            Value::Array(Array::new(v.type_id(), vec![v.clone(); 3])),
        ));
    }
    k.push(("a.string".into(), Value::Array(Array::new(type_id::STRING, strings.clone()))));
    let bytes = with(&k, vec![], 0);
    let g = Gguf::parse(&bytes).unwrap();
    let Value::Array(big) = &g.kvs()[0].1 else { panic!("an array") };
    assert_eq!((big.len(), big.stored_bytes()), (n as u64, n as u64));
    assert_eq!(big.items(g.buffer()).nth(300), Some(Value::U8((300 % 251) as u8)));
    assert_eq!(big.items(g.buffer()).count(), n);
    for (i, v) in samples.iter().enumerate() {
        let Value::Array(a) = &g.kvs()[i + 1].1 else { panic!("an array") };
        assert_eq!(
            a.items(g.buffer()).collect::<Vec<_>>(),
            vec![v.clone(); 3],
            "{}",
            v.type_name()
        );
    }
    let Value::Array(a) = &g.kvs()[samples.len() + 1].1 else { panic!("an array") };
    assert_eq!(a.items(g.buffer()).collect::<Vec<_>>(), strings);
    // An array read from a file cannot be written back without its buffer.
    let again = Layout::new(g.kvs(), vec![], 32).unwrap_err();
    assert_eq!(again, LayoutError::StoredArray { key: "big".into() });
}

#[test]
fn array_elements_are_validated() {
    // A string element whose length runs past the end, and one that is not UTF-8.
    let k = vec![(
        "s".to_owned(),
        Value::Array(Array::new(type_id::STRING, vec![Value::String("abcd".into())])),
    )];
    let good = with(&k, vec![], 0);
    let at = find(&good, b"abcd") - 8;
    let mut bytes = good.clone();
    bytes[at..at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    assert!(matches!(Gguf::parse(&bytes).unwrap_err(), Error::StringPastEnd { .. }));
    let mut bytes = good;
    bytes[at + 8] = 0xff;
    assert!(matches!(Gguf::parse(&bytes).unwrap_err(), Error::InvalidUtf8 { .. }));
    // An unknown element type.
    let k = vec![("u".to_owned(), Value::Array(Array::new(type_id::U8, vec![Value::U8(1)])))];
    let mut bytes = with(&k, vec![], 0);
    let at = find(&bytes, b"u\x09\x00\x00\x00") + 1 + 4;
    bytes[at..at + 4].copy_from_slice(&13u32.to_le_bytes());
    let err = Gguf::parse(&bytes).unwrap_err();
    assert!(
        matches!(err, Error::BadValueType { ref reason, .. } if reason.contains("13")),
        "{err}"
    );
}
