//! From input tensors to *logical* tensors in BFL naming, and back to diffusers parts.
//!
//! A diffusers checkpoint's `to_q`/`to_k`/`to_v` become one `qkv` (their rows concatenated)
//! before any type rule runs, so that a mix is the same model in either naming; `--names
//! diffusers` splits logical tensors again at the end. Every rank and shape these steps rely on
//! is checked here, and every refusal names the file and the tensor.

use crate::Error;
use lowbit_arch::flux::{Split, bfl_to_diffusers, diffusers_to_bfl, split_rows};
use lowbit_arch::{Detection, Naming};
use lowbit_checkpoint::{Checkpoint, StorageType, Tensor};
use std::collections::BTreeMap;
use std::ops::Range;

/// A slice of one input tensor along its outermost dimension (rows of a matrix, elements of a
/// vector): fusing and splitting FLUX tensors always cuts there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// Input tensor name, as stored.
    pub tensor: String,
    /// Indices along dimension 0.
    pub dim0: Range<u64>,
}

/// A tensor in BFL naming made of input rows, before output naming and types.
pub(crate) struct Logical {
    pub(crate) name: String,
    pub(crate) shape: Vec<u64>,
    pub(crate) source: StorageType,
    pub(crate) parts: Vec<Part>,
}

fn shape_error(ckpt: &Checkpoint, t: &Tensor, reason: impl Into<String>) -> Error {
    Error::Shape {
        file: ckpt.file_of(t).to_owned(),
        tensor: t.name.clone(),
        shape: t.shape.clone(),
        reason: reason.into(),
    }
}

/// Length of dimension 0 (1 for a scalar, which is one whole part).
fn dim0(t: &Tensor) -> u64 {
    t.shape.first().copied().unwrap_or(1)
}

/// Checks what every input tensor must satisfy, whatever its role: elements to write.
fn check_input(ckpt: &Checkpoint, t: &Tensor) -> Result<(), Error> {
    if t.params == 0 {
        return Err(shape_error(
            ckpt,
            t,
            "it has no elements; an empty weight cannot be converted (is the checkpoint damaged?)",
        ));
    }
    Ok(())
}

/// Groups the input into logical BFL tensors (prefix stripped, diffusers parts fused).
pub(crate) fn logical(ckpt: &Checkpoint, det: &Detection) -> Result<Vec<Logical>, Error> {
    let strip = |n: &str| n.strip_prefix(det.prefix.as_str()).unwrap_or(n).to_owned();
    let whole = |t: &Tensor| Logical {
        name: strip(&t.name),
        shape: t.shape.clone(),
        source: t.ty,
        parts: vec![Part { tensor: t.name.clone(), dim0: 0..dim0(t) }],
    };
    for t in ckpt.tensors() {
        check_input(ckpt, t)?;
    }
    if det.naming != Some(Naming::Diffusers) {
        return Ok(ckpt.tensors().iter().map(whole).collect());
    }
    // Diffusers: collect the parts of each BFL tensor, then fuse them in part order.
    let mut groups: BTreeMap<String, Vec<(usize, &Tensor)>> = BTreeMap::new();
    let mut out = Vec::new();
    for t in ckpt.tensors() {
        match diffusers_to_bfl(&strip(&t.name)) {
            Some((bfl, i)) => groups.entry(bfl).or_default().push((i, t)),
            None => out.push(whole(t)),
        }
    }
    for (bfl, mut parts) in groups {
        parts.sort_by_key(|(i, _)| *i);
        out.push(fuse(ckpt, bfl, &parts)?);
    }
    Ok(out)
}

/// Fuses the diffusers parts of one BFL tensor, checking that they can be fused.
fn fuse(ckpt: &Checkpoint, bfl: String, parts: &[(usize, &Tensor)]) -> Result<Logical, Error> {
    let Some(mapping) = bfl_to_diffusers(&bfl) else {
        // `diffusers_to_bfl` and `bfl_to_diffusers` read one table; a name one maps, the other
        // maps back. Should they ever disagree, say so instead of panicking.
        let t = parts[0].1;
        return Err(shape_error(ckpt, t, format!("`{bfl}` has no diffusers mapping")));
    };
    let first = parts[0].1;
    if parts.len() != mapping.parts.len() || parts.iter().enumerate().any(|(k, (i, _))| *i != k) {
        let found: Vec<&str> = parts.iter().map(|(_, t)| t.name.as_str()).collect();
        return Err(Error::IncompleteGroup {
            file: ckpt.file_of(first).to_owned(),
            tensor: bfl,
            needed: mapping.parts.join(", "),
            found: found.join(", "),
        });
    }
    for (_, t) in parts {
        if t.shape.is_empty() {
            let reason = format!("a scalar cannot be a block of rows of `{bfl}`");
            return Err(shape_error(ckpt, t, reason));
        }
    }
    for (_, t) in parts {
        if t.shape[1..] != first.shape[1..] || t.ty != first.ty {
            let describe = |t: &Tensor| format!("`{}` ({:?}, {})", t.name, t.shape, t.ty);
            return Err(Error::CannotFuse {
                file: ckpt.file_of(t).to_owned(),
                tensor: bfl,
                first: describe(first),
                other: describe(t),
            });
        }
    }
    // Each part has at least one element, so each dimension is at most the element count of a
    // tensor inside the file: the sum cannot overflow, but say so if it ever does.
    let rows = parts.iter().try_fold(0u64, |acc, (_, t)| acc.checked_add(t.shape[0]));
    let Some(rows) = rows else {
        return Err(shape_error(ckpt, first, format!("the rows of `{bfl}` overflow")));
    };
    let mut shape = first.shape.clone();
    shape[0] = rows;
    let parts: Vec<Part> = if mapping.split == Split::SwapHalves {
        let n = first.shape[0];
        if !n.is_multiple_of(2) {
            let reason = format!("an odd first dimension cannot swap halves into `{bfl}`");
            return Err(shape_error(ckpt, first, reason));
        }
        // diffusers stores (scale, shift); BFL (shift, scale): take the second half first.
        vec![
            Part { tensor: first.name.clone(), dim0: n / 2..n },
            Part { tensor: first.name.clone(), dim0: 0..n / 2 },
        ]
    } else {
        parts.iter().map(|(_, t)| Part { tensor: t.name.clone(), dim0: 0..t.shape[0] }).collect()
    };
    Ok(Logical { name: bfl, shape, source: first.ty, parts })
}

/// An error about a logical tensor, naming its first input tensor and that tensor's file.
fn logical_error(ckpt: &Checkpoint, l: &Logical, reason: impl Into<String>) -> Error {
    match l.parts.first().and_then(|p| ckpt.tensor(&p.tensor)) {
        Some(t) => shape_error(ckpt, t, reason),
        None => Error::Shape {
            file: ckpt.path().to_owned(),
            tensor: l.name.clone(),
            shape: l.shape.clone(),
            reason: reason.into(),
        },
    }
}

/// FLUX's width, needed to split `linear1`: the rows of `img_in.weight`, which must be a
/// non-empty matrix.
fn hidden_size(ckpt: &Checkpoint, logical: &[Logical]) -> Result<u64, Error> {
    let Some(img_in) = logical.iter().find(|l| l.name == "img_in.weight") else {
        return Err(Error::Shape {
            file: ckpt.path().to_owned(),
            tensor: "img_in.weight".into(),
            shape: Vec::new(),
            reason:
                "it is missing, and its rows (the model width) are needed to split fused tensors"
                    .into(),
        });
    };
    match img_in.shape.as_slice() {
        [rows, _] => Ok(*rows),
        _ => Err(logical_error(
            ckpt,
            img_in,
            "FLUX's img_in.weight must be a matrix: its rows give the model width",
        )),
    }
}

/// The outputs of a logical tensor in diffusers naming: (name, parts, shape) per diffusers
/// tensor, or the tensor itself when it has no diffusers counterpart.
pub(crate) type Output = (String, Vec<Part>, Vec<u64>);

/// Splits `l` into its diffusers tensors, checking the rows against the model width.
pub(crate) fn to_diffusers(
    ckpt: &Checkpoint,
    logical: &[Logical],
    l: &Logical,
    hidden: &mut Option<u64>,
) -> Result<Vec<Output>, Error> {
    let Some(m) = bfl_to_diffusers(&l.name) else {
        return Ok(vec![(l.name.clone(), l.parts.clone(), l.shape.clone())]);
    };
    if m.split == Split::Whole {
        // A rename: any shape goes through.
        return Ok(m.parts.into_iter().map(|n| (n, l.parts.clone(), l.shape.clone())).collect());
    }
    let Some(&rows) = l.shape.first() else {
        let reason = format!("a scalar cannot be split into {}", m.parts.join(", "));
        return Err(logical_error(ckpt, l, reason));
    };
    let mut width = 0;
    if m.split == Split::QkvMlp {
        width = match *hidden {
            Some(h) => h,
            None => *hidden.insert(hidden_size(ckpt, logical)?),
        };
        // linear1's weight reads the hidden state: its rows have the width img_in.weight gives.
        if let [_, cols] = l.shape[..]
            && cols != width
        {
            let reason = format!(
                "its rows must have the model width {width} (img_in.weight's rows), not {cols}"
            );
            return Err(logical_error(ckpt, l, reason));
        }
    }
    if m.split == Split::SwapHalves && !rows.is_multiple_of(2) {
        return Err(logical_error(ckpt, l, "an odd first dimension cannot swap halves"));
    }
    let Some(ranges) = split_rows(m.split, rows, width) else {
        let reason = match m.split {
            Split::QkvMlp => format!(
                "{rows} rows do not split into {} (three blocks of the width {width}, then the rest)",
                m.parts.join(", ")
            ),
            _ => format!("{rows} rows do not split evenly into {}", m.parts.join(", ")),
        };
        return Err(logical_error(ckpt, l, reason));
    };
    let mut outs = Vec::new();
    for (name, r) in m.parts.iter().zip(ranges) {
        let ranges = if m.split == Split::SwapHalves {
            // Undo the BFL swap: diffusers wants (scale, shift).
            vec![rows / 2..rows, 0..rows / 2]
        } else {
            vec![r.clone()]
        };
        let parts = ranges.into_iter().flat_map(|r| select(&l.parts, r)).collect();
        let mut shape = l.shape.clone();
        shape[0] = r.end - r.start;
        outs.push((name.clone(), parts, shape));
    }
    Ok(outs)
}

/// The parts covering indices `r` along dimension 0 of a tensor made of `parts`.
fn select(parts: &[Part], r: Range<u64>) -> Vec<Part> {
    let mut out = Vec::new();
    let mut start = 0u64;
    for p in parts {
        let len = p.dim0.end - p.dim0.start;
        let end = start.saturating_add(len);
        let (a, b) = (r.start.max(start), r.end.min(end));
        if a < b {
            out.push(Part {
                tensor: p.tensor.clone(),
                dim0: p.dim0.start + (a - start)..p.dim0.start + (b - start),
            });
        }
        start = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{Part, select};

    #[test]
    fn select_spans_parts() {
        let parts = vec![
            Part { tensor: "a".into(), dim0: 0..4 },
            Part { tensor: "b".into(), dim0: 10..16 },
        ];
        assert_eq!(
            select(&parts, 2..7),
            vec![
                Part { tensor: "a".into(), dim0: 2..4 },
                Part { tensor: "b".into(), dim0: 10..13 }
            ]
        );
        assert_eq!(select(&parts, 4..10), vec![Part { tensor: "b".into(), dim0: 10..16 }]);
    }
}
