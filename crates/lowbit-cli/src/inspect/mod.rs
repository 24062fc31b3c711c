//! `lowbit inspect`: a summary (architecture, totals, by type, by block, metadata), the
//! per-tensor table on request, JSON, and a depth plot.
//!
//! [`Report::build`] reads nothing but headers; the three renderings (`text`, `json`, `plot`) are
//! pure functions of the report.

mod plot;
mod text;

pub(crate) use text::TABLE_STYLE;

use crate::cli::InspectArgs;
use crate::output;
use anyhow::Context;
use lowbit_arch::{Block, Detection, block_of, detect};
use lowbit_checkpoint::gguf::{Value, type_id};
use lowbit_checkpoint::{Checkpoint, Layer, Metadata};
use serde::Serialize;
use std::cmp::Ordering;
use std::collections::BTreeMap;

/// Runs `lowbit inspect`.
pub(crate) fn run(args: &InspectArgs) -> anyhow::Result<()> {
    let ckpt = Checkpoint::open(&args.path)?;
    let layers = match ckpt.layers() {
        Ok(layers) => layers,
        // A layout no rule explains is still worth showing: its tensors as stored.
        Err(e @ lowbit_checkpoint::Error::UnknownLayout { .. }) => {
            output::note(&format!("note: {e}; showing the tensors as stored"));
            ckpt.tensors()
                .iter()
                .map(|t| Layer {
                    name: t.name.clone(),
                    shape: t.shape.clone(),
                    scheme: None,
                    stored: vec![t.name.clone()],
                })
                .collect()
        }
        Err(e) => return Err(e.into()),
    };
    let report = Report::build(&ckpt, &layers);
    if let Some(out) = &args.plot {
        let svg = plot::svg(&report)
            .with_context(|| format!("{}: cannot draw the plot", out.display()))?;
        output::write_atomic(out, svg.as_bytes())?;
        output::note(&format!("wrote the depth plot to {}", out.display()));
    }
    if args.json {
        let mut s = serde_json::to_string_pretty(&report)?;
        s.push('\n');
        output::print(&s)
    } else {
        output::print(&text::render(&report, args.tensors))
    }
}

/// Arrays up to this many elements appear whole in the JSON; longer ones are summarised.
const JSON_ARRAY_MAX: u64 = 64;
/// Elements shown at the head of a summarised array.
const JSON_ARRAY_HEAD: usize = 8;

/// A GGUF metadata value as typed JSON: numbers as numbers, strings as strings, arrays as arrays
/// (long ones as `{"type", "length", "head"}`). Non-finite floats, which JSON lacks, become
/// strings (`"NaN"`, `"inf"`).
fn json_value(ckpt: &Checkpoint, v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    let float = |f: f64| {
        serde_json::Number::from_f64(f).map_or_else(|| J::String(f.to_string()), J::Number)
    };
    match v {
        Value::U8(x) => J::from(*x),
        Value::I8(x) => J::from(*x),
        Value::U16(x) => J::from(*x),
        Value::I16(x) => J::from(*x),
        Value::U32(x) => J::from(*x),
        Value::I32(x) => J::from(*x),
        Value::U64(x) => J::from(*x),
        Value::I64(x) => J::from(*x),
        Value::F32(x) => float(f64::from(*x)),
        Value::F64(x) => float(*x),
        Value::Bool(x) => J::Bool(*x),
        Value::String(s) => J::String(s.clone()),
        Value::Array(a) => {
            let items = ckpt.array_items(a);
            if a.len() <= JSON_ARRAY_MAX {
                J::Array(items.map(|i| json_value(ckpt, &i)).collect())
            } else {
                let element = type_id::name(a.element_type()).unwrap_or("?");
                serde_json::json!({
                    "type": format!("array of {element}"),
                    "length": a.len(),
                    "head": items.take(JSON_ARRAY_HEAD).map(|i| json_value(ckpt, &i)).collect::<Vec<_>>(),
                })
            }
        }
    }
}

/// Everything `inspect` shows. Field names and order are the JSON schema in
/// `formats/inspect-json.md`; keep them stable.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) path: String,
    pub(crate) format: &'static str,
    pub(crate) architecture: &'static str,
    pub(crate) naming: Option<&'static str>,
    pub(crate) total_params: u64,
    pub(crate) total_bytes: u64,
    pub(crate) bits_per_weight: f64,
    pub(crate) tensors: Vec<TensorRow>,
    /// Tensors in the file(s); more than `tensors` when packed layouts store companions.
    pub(crate) stored_tensors: u64,
    pub(crate) files: Vec<String>,
    pub(crate) prefix: String,
    pub(crate) by_type: Vec<Group>,
    pub(crate) by_block: Vec<Group>,
    pub(crate) metadata: BTreeMap<String, serde_json::Value>,
    /// A zstd pack's sizes (formats/zstd.md); absent for other formats.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) zstd: Option<ZstdPack>,
}

/// What `inspect` shows of a zstd pack: read from its seek table, nothing decompressed.
#[derive(Debug, Serialize)]
pub(crate) struct ZstdPack {
    /// The pack's size.
    pub(crate) compressed_bytes: u64,
    /// The safetensors file it holds.
    pub(crate) raw_bytes: u64,
    /// zstd frames: the header's and one per stored tensor.
    pub(crate) frames: u64,
}

/// One logical weight: a dense tensor, or all the tensors of a packed layout.
#[derive(Debug, Serialize)]
pub(crate) struct TensorRow {
    pub(crate) name: String,
    pub(crate) shape: Vec<u64>,
    /// The scheme of a packed layout (`nf4:dq`), else the storage type (`BF16`, `Q4_K`).
    #[serde(rename = "type")]
    pub(crate) ty: String,
    pub(crate) params: u64,
    /// Bytes of every stored tensor.
    pub(crate) bytes: u64,
    pub(crate) bits_per_weight: f64,
    pub(crate) block: String,
    /// The scheme (`comfy:fp8`, `fp8` for a plain FP8 matrix), or null.
    pub(crate) scheme: Option<String>,
    /// The stored tensors, in the scheme's order (the tensor itself when dense).
    pub(crate) stored: Vec<String>,
    #[serde(skip)]
    pub(crate) block_key: Block,
}

/// Totals over a set of tensors sharing a type or a block.
#[derive(Debug, Serialize, Default)]
pub(crate) struct Group {
    pub(crate) name: String,
    pub(crate) tensors: u64,
    pub(crate) params: u64,
    pub(crate) bytes: u64,
    pub(crate) bits_per_weight: f64,
    pub(crate) share_of_bytes: f64,
}

fn bpw(bytes: u64, params: u64) -> f64 {
    if params == 0 { 0.0 } else { bytes as f64 * 8.0 / params as f64 }
}

/// Compares names so that `blocks.2` sorts before `blocks.10`.
fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    while let (Some(&x), Some(&y)) = (a.first(), b.first()) {
        if x.is_ascii_digit() && y.is_ascii_digit() {
            let da = a.iter().take_while(|c| c.is_ascii_digit()).count();
            let db = b.iter().take_while(|c| c.is_ascii_digit()).count();
            let (na, nb) = (&a[..da], &b[..db]);
            let na = &na[na.iter().take_while(|&&c| c == b'0').count()..];
            let nb = &nb[nb.iter().take_while(|&&c| c == b'0').count()..];
            let ord = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb)).then(da.cmp(&db));
            if ord != Ordering::Equal {
                return ord;
            }
            a = &a[da..];
            b = &b[db..];
        } else {
            if x != y {
                return x.cmp(&y);
            }
            a = &a[1..];
            b = &b[1..];
        }
    }
    a.len().cmp(&b.len())
}

impl Report {
    pub(crate) fn build(ckpt: &Checkpoint, layers: &[Layer]) -> Report {
        // Layer names: a packed weight is detected by its logical name (SVDQuant stores none).
        let det: Detection = detect(layers.iter().map(|l| l.name.as_str()));
        let mut tensors: Vec<TensorRow> = layers
            .iter()
            .map(|l| {
                let block_key = block_of(&l.name, &det);
                let stored = l.stored.iter().filter_map(|n| ckpt.tensor(n));
                let bytes = stored.clone().map(|t| t.bytes).sum();
                let ty = match (l.is_packed(), l.scheme, stored.clone().next()) {
                    (true, Some(s), _) => s.to_string(),
                    (_, _, Some(t)) => t.ty.name().to_owned(),
                    _ => String::new(),
                };
                let params = l.params();
                TensorRow {
                    name: l.name.clone(),
                    shape: l.shape.clone(),
                    ty,
                    params,
                    bytes,
                    bits_per_weight: bpw(bytes, params),
                    block: block_key.to_string(),
                    scheme: l.scheme.map(|s| s.to_string()),
                    stored: l.stored.clone(),
                    block_key,
                }
            })
            .collect();
        tensors.sort_by(|a, b| {
            a.block_key.cmp(&b.block_key).then_with(|| natural_cmp(&a.name, &b.name))
        });

        let total_params = tensors.iter().map(|t| t.params).sum();
        let total_bytes = tensors.iter().map(|t| t.bytes).sum();
        let group = |key: &dyn Fn(&TensorRow) -> String| {
            let mut out: Vec<Group> = Vec::new();
            let mut index: BTreeMap<String, usize> = BTreeMap::new();
            for t in &tensors {
                let k = key(t);
                let i = *index.entry(k.clone()).or_insert_with(|| {
                    out.push(Group { name: k, ..Group::default() });
                    out.len() - 1
                });
                let g = &mut out[i];
                g.tensors += 1;
                g.params += t.params;
                g.bytes += t.bytes;
            }
            for g in &mut out {
                g.bits_per_weight = bpw(g.bytes, g.params);
                g.share_of_bytes =
                    if total_bytes == 0 { 0.0 } else { g.bytes as f64 / total_bytes as f64 };
            }
            out
        };
        let mut by_type = group(&|t| t.ty.clone());
        by_type.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.name.cmp(&b.name)));
        let by_block = group(&|t| t.block.clone());

        let metadata = match ckpt.metadata() {
            Metadata::Safetensors(m) => {
                m.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect()
            }
            Metadata::Gguf { version, alignment, kvs } => {
                let mut m: BTreeMap<String, serde_json::Value> =
                    kvs.iter().map(|(k, v)| (k.clone(), json_value(ckpt, v))).collect();
                m.insert("gguf.version".into(), (*version).into());
                m.insert("gguf.alignment".into(), (*alignment).into());
                m
            }
        };
        Report {
            path: ckpt.path().display().to_string(),
            format: ckpt.format().as_str(),
            architecture: det.architecture.as_str(),
            naming: det.naming.map(|n| n.as_str()),
            total_params,
            total_bytes,
            bits_per_weight: bpw(total_bytes, total_params),
            stored_tensors: ckpt.tensors().len() as u64,
            files: ckpt.files().map(|p| p.display().to_string()).collect(),
            prefix: det.prefix,
            by_type,
            by_block,
            metadata,
            tensors,
            zstd: ckpt.pack_info().map(|p| ZstdPack {
                compressed_bytes: p.compressed_bytes,
                raw_bytes: p.raw_bytes,
                frames: p.frames as u64,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::natural_cmp;
    use std::cmp::Ordering;

    #[test]
    fn natural_order() {
        assert_eq!(natural_cmp("blocks.2.w", "blocks.10.w"), Ordering::Less);
        assert_eq!(natural_cmp("blocks.10", "blocks.9"), Ordering::Greater);
        assert_eq!(natural_cmp("a.b", "a.b"), Ordering::Equal);
        assert_eq!(natural_cmp("a", "a.b"), Ordering::Less);
        assert_eq!(natural_cmp("x01", "x1"), Ordering::Greater, "ties on value break on width");
    }
}
