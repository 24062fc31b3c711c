//! One test per error variant, plus a property test against the `safetensors` crate.

use super::{Safetensors, TensorEntry};
use crate::Error;
use lowbit_dtype::Dtype;
use proptest::prelude::*;

/// Builds a file from a header text and a data section.
fn file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

fn parse_err(header: &str, data: &[u8]) -> Error {
    Safetensors::parse(&file(header, data)).expect_err("the file is invalid")
}

const GOOD: &str = r#"{"__metadata__":{"format":"pt"},"b":{"dtype":"BF16","shape":[2,2],"data_offsets":[4,12]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;

#[test]
fn parses_a_good_file_in_offset_order() {
    let bytes = file(GOOD, &[1u8; 12]);
    let st = Safetensors::parse(&bytes).unwrap();
    let names: Vec<_> = st.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(st.tensors()[1].dtype, Dtype::BF16);
    assert_eq!(st.tensors()[1].shape, [2, 2]);
    assert_eq!(st.tensors()[1].numel(), 4);
    assert_eq!(st.bytes(&st.tensors()[1]).len(), 8);
    assert_eq!(st.metadata()["format"], "pt");
    assert_eq!(st.data_start(), 8 + GOOD.len() as u64);
}

#[test]
fn scalars_and_empty_tensors_are_fine() {
    let h = r#"{"s":{"dtype":"F32","shape":[],"data_offsets":[0,4]},"e":{"dtype":"F16","shape":[0,3],"data_offsets":[4,4]}}"#;
    let bytes = file(h, &[0; 4]);
    let st = Safetensors::parse(&bytes).unwrap();
    assert_eq!(st.tensors().len(), 2);
}

#[test]
fn too_short() {
    assert_eq!(Safetensors::parse(&[1, 2, 3]).unwrap_err(), Error::TooShort { len: 3 });
}

#[test]
fn header_too_large() {
    let mut bytes = (200_000_000u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    assert!(matches!(Safetensors::parse(&bytes).unwrap_err(), Error::HeaderTooLarge { .. }));
}

#[test]
fn header_past_end() {
    let mut bytes = (1000u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    assert_eq!(
        Safetensors::parse(&bytes).unwrap_err(),
        Error::HeaderPastEnd { header_len: 1000, available: 2 }
    );
}

#[test]
fn header_not_utf8() {
    let mut bytes = 3u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(&[b'{', 0xff, b'}']);
    assert_eq!(Safetensors::parse(&bytes).unwrap_err(), Error::HeaderNotUtf8 { offset: 1 });
}

#[test]
fn header_not_json() {
    assert!(matches!(parse_err("not json", &[]), Error::HeaderNotJson { .. }));
    assert!(matches!(parse_err("[1,2]", &[]), Error::HeaderNotJson { .. }));
}

#[test]
fn duplicate_tensor() {
    let h = r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}"#;
    assert_eq!(parse_err(h, &[0, 0]), Error::DuplicateTensor { name: "a".into() });
}

#[test]
fn bad_entry() {
    for h in [
        r#"{"a":5}"#,
        r#"{"a":{"shape":[1],"data_offsets":[0,1]}}"#,
        r#"{"a":{"dtype":7,"shape":[1],"data_offsets":[0,1]}}"#,
        r#"{"a":{"dtype":"U8","shape":[-1],"data_offsets":[0,1]}}"#,
        r#"{"a":{"dtype":"U8","shape":"1","data_offsets":[0,1]}}"#,
        r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0]}}"#,
        r#"{"a":{"dtype":"U8","shape":[1]}}"#,
    ] {
        let err = parse_err(h, &[0]);
        assert!(matches!(&err, Error::BadEntry { name, .. } if name == "a"), "{h}: {err}");
    }
}

#[test]
fn unknown_dtype() {
    let h = r#"{"w":{"dtype":"Q9","shape":[1],"data_offsets":[0,1]}}"#;
    assert_eq!(parse_err(h, &[0]), Error::UnknownDtype { name: "w".into(), dtype: "Q9".into() });
}

#[test]
fn shape_overflow() {
    let h = r#"{"w":{"dtype":"BF16","shape":[4294967296,4294967296],"data_offsets":[0,2]}}"#;
    assert!(matches!(parse_err(h, &[0, 0]), Error::ShapeOverflow { name, .. } if name == "w"));
    // The element count fits, the byte count does not.
    let h = r#"{"w":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,2]}}"#;
    assert!(matches!(parse_err(h, &[0, 0]), Error::ShapeOverflow { .. }));
}

#[test]
fn reversed_offsets() {
    let h = r#"{"w":{"dtype":"U8","shape":[0],"data_offsets":[2,1]}}"#;
    assert_eq!(
        parse_err(h, &[0, 0]),
        Error::ReversedOffsets { name: "w".into(), begin: 2, end: 1 }
    );
}

#[test]
fn size_mismatch() {
    let h = r#"{"w":{"dtype":"BF16","shape":[3],"data_offsets":[0,4]}}"#;
    assert_eq!(
        parse_err(h, &[0; 4]),
        Error::SizeMismatch {
            name: "w".into(),
            dtype: Dtype::BF16,
            shape: vec![3],
            expected: 6,
            actual: 4
        }
    );
}

#[test]
fn out_of_bounds() {
    let h = r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#;
    assert_eq!(
        parse_err(h, &[0; 10]),
        Error::OutOfBounds { name: "w".into(), begin: 0, end: 16, data_len: 10 }
    );
}

#[test]
fn overlap() {
    let h = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#;
    assert_eq!(
        parse_err(h, &[0; 12]),
        Error::Overlap { name: "b".into(), begin: 4, end: 12, other: "a".into(), other_end: 8 }
    );
}

#[test]
fn hole_and_trailing_bytes() {
    let h = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#;
    assert_eq!(parse_err(h, &[0; 12]), Error::Hole { offset: 4, len: 4 });
    let h = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
    assert_eq!(parse_err(h, &[0; 6]), Error::Hole { offset: 4, len: 2 });
}

#[test]
fn bad_metadata() {
    assert!(matches!(parse_err(r#"{"__metadata__":[1]}"#, &[]), Error::BadMetadata { .. }));
    assert!(matches!(parse_err(r#"{"__metadata__":{"k":1}}"#, &[]), Error::BadMetadata { .. }));
}

fn arb_tensors() -> impl Strategy<Value = Vec<(String, Dtype, Vec<usize>)>> {
    let dtype = prop::sample::select(Dtype::ALL.to_vec());
    let shape = prop::collection::vec(0usize..5, 0..4);
    prop::collection::btree_map("[a-z.]{1,12}", (dtype, shape), 0..6)
        .prop_map(|m| m.into_iter().map(|(n, (d, s))| (n, d, s)).collect())
}

fn to_crate_dtype(d: Dtype) -> safetensors::Dtype {
    use safetensors::Dtype as S;
    match d {
        Dtype::Bool => S::BOOL,
        Dtype::U8 => S::U8,
        Dtype::I8 => S::I8,
        Dtype::U16 => S::U16,
        Dtype::I16 => S::I16,
        Dtype::U32 => S::U32,
        Dtype::I32 => S::I32,
        Dtype::U64 => S::U64,
        Dtype::I64 => S::I64,
        Dtype::F8E4M3 => S::F8_E4M3,
        Dtype::F8E5M2 => S::F8_E5M2,
        Dtype::F8E8M0 => S::F8_E8M0,
        Dtype::F16 => S::F16,
        Dtype::BF16 => S::BF16,
        Dtype::F32 => S::F32,
        Dtype::F64 => S::F64,
    }
}

fn serialize_with_crate(tensors: &[(String, Dtype, Vec<usize>)]) -> Vec<u8> {
    let datas: Vec<Vec<u8>> = tensors
        .iter()
        .enumerate()
        .map(|(i, (_, d, s))| vec![i as u8; s.iter().product::<usize>() * d.size()])
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .zip(&datas)
        .map(|((n, d, s), data)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(to_crate_dtype(*d), s.clone(), data).unwrap(),
            )
        })
        .collect();
    safetensors::serialize(views, None).unwrap()
}

proptest! {
    #[test]
    fn agrees_with_the_safetensors_crate_on_its_own_files(tensors in arb_tensors()) {
        let bytes = serialize_with_crate(&tensors);
        let ours = Safetensors::parse(&bytes).unwrap();
        let theirs = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        prop_assert_eq!(ours.tensors().len(), theirs.len());
        for t in ours.tensors() {
            let view = theirs.tensor(&t.name).unwrap();
            let shape: Vec<u64> = view.shape().iter().map(|&d| d as u64).collect();
            prop_assert_eq!(&shape, &t.shape);
            prop_assert_eq!(view.dtype().to_string(), t.dtype.name());
            prop_assert_eq!(view.data(), ours.bytes(t));
        }
    }

    #[test]
    fn never_panics_and_accepts_what_the_crate_accepts(
        tensors in arb_tensors(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = serialize_with_crate(&tensors);
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        let ours = Safetensors::parse(&bytes);
        let theirs = safetensors::SafeTensors::deserialize(&bytes);
        if let Ok(theirs) = theirs {
            // The crate knows dtypes we do not (F4, F6_*, C64); only compare when all are ours.
            let all_known = theirs.tensors().iter().all(|(_, v)| Dtype::from_name(&v.dtype().to_string()).is_some());
            if all_known {
                let ours = ours.unwrap();
                prop_assert_eq!(ours.tensors().len(), theirs.len());
            }
        }
    }
}

#[test]
fn entry_numel() {
    let e = TensorEntry { name: "x".into(), dtype: Dtype::F32, shape: vec![2, 3], data: 0..24 };
    assert_eq!(e.numel(), 6);
}
