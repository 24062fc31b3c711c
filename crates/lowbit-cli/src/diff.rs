//! `lowbit diff A B`: per-tensor error of A against the reference B, and totals.
//!
//! Both sides are grouped into logical weights ([`Checkpoint::layers`]) and named in BFL naming
//! (a diffusers side's `to_q`/`to_k`/`to_v` rows are fused into `qkv`, and so on, through
//! `lowbit_arch::flux`), then decoded a chunk of rows at a time and compared in `f64`:
//! relative Frobenius error ‖A−B‖/‖B‖, max |A−B|, SNR = 10·log10(‖B‖²/‖A−B‖²) dB. Sums run in
//! element order on one thread, so the numbers do not depend on the chunk size.
//! Schema of `--json`: `formats/dequantize-diff.md`.

use crate::cli::DiffArgs;
use crate::dequantize::CHUNK_VALUES;
use crate::output;
use lowbit_arch::flux::{Split, bfl_to_diffusers, diffusers_to_bfl};
use lowbit_arch::{Naming, detect};
use lowbit_checkpoint::{Checkpoint, Layer};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::ops::Range;

/// A tensor in BFL naming made of dim-0 ranges of layers, concatenated.
pub(crate) struct View {
    pub(crate) shape: Vec<u64>,
    parts: Vec<(usize, Range<u64>)>,
}

/// One side of the comparison.
pub(crate) struct Side {
    ckpt: Checkpoint,
    layers: Vec<Layer>,
    /// BFL name → view, and the names in the side's order.
    pub(crate) views: BTreeMap<String, View>,
    order: Vec<String>,
}

impl Side {
    pub(crate) fn open(path: &std::path::Path) -> anyhow::Result<Side> {
        let ckpt = Checkpoint::open(path)?;
        let layers = ckpt.layers()?;
        let det = detect(layers.iter().map(|l| l.name.as_str()));
        let strip = |n: &str| n.strip_prefix(det.prefix.as_str()).unwrap_or(n).to_owned();
        let dim0 = |l: &Layer| l.shape.first().copied().unwrap_or(1);
        let mut views = BTreeMap::new();
        let mut order = Vec::new();
        let mut groups: BTreeMap<String, Vec<(usize, usize)>> = BTreeMap::new();
        for (i, l) in layers.iter().enumerate() {
            let name = strip(&l.name);
            let mapped =
                if det.naming == Some(Naming::Diffusers) { diffusers_to_bfl(&name) } else { None };
            let (bfl, part) = mapped.unwrap_or((name, usize::MAX));
            if part == usize::MAX {
                views.insert(
                    bfl.clone(),
                    View { shape: l.shape.clone(), parts: vec![(i, 0..dim0(l))] },
                );
            } else {
                let g = groups.entry(bfl.clone()).or_default();
                g.push((part, i));
                if g.len() > 1 {
                    continue;
                }
            }
            order.push(bfl);
        }
        for (bfl, mut parts) in groups {
            parts.sort_unstable();
            let needed = bfl_to_diffusers(&bfl).map(|m| (m.parts, m.split));
            let first = &layers[parts[0].1];
            let where_ = || format!("{}: tensor `{}`", ckpt.path().display(), first.name);
            let Some((needed, split)) = needed else {
                anyhow::bail!("{}: `{bfl}` has no diffusers mapping", where_());
            };
            let complete =
                parts.len() == needed.len() && parts.iter().enumerate().all(|(k, (i, _))| *i == k);
            if !complete {
                let found: Vec<&str> =
                    parts.iter().map(|(_, i)| layers[*i].name.as_str()).collect();
                anyhow::bail!(
                    "{}: `{bfl}` needs {} but the file has {}",
                    where_(),
                    needed.join(", "),
                    found.join(", ")
                );
            }
            let mut rows = 0u64;
            for (_, i) in &parts {
                let l = &layers[*i];
                if l.shape.is_empty() || l.shape[1..] != first.shape[1..] {
                    anyhow::bail!(
                        "{}: `{}` {:?} cannot be fused with `{}` {:?} into `{bfl}`",
                        where_(),
                        l.name,
                        l.shape,
                        first.name,
                        first.shape
                    );
                }
                rows += l.shape[0];
            }
            let mut shape = first.shape.clone();
            shape[0] = rows;
            let parts = if split == Split::SwapHalves {
                let (i, n) = (parts[0].1, rows);
                if n % 2 != 0 {
                    anyhow::bail!("{}: an odd first dimension cannot swap halves", where_());
                }
                // diffusers stores (scale, shift), BFL (shift, scale).
                vec![(i, n / 2..n), (i, 0..n / 2)]
            } else {
                parts.iter().map(|&(_, i)| (i, 0..layers[i].shape[0])).collect()
            };
            views.insert(bfl, View { shape, parts });
        }
        Ok(Side { ckpt, layers, views, order })
    }

    /// Decodes dim-0 rows `range` of `view` into `out`.
    pub(crate) fn read(
        &self,
        view: &View,
        range: Range<u64>,
        out: &mut [f32],
        tmp: &mut Vec<f32>,
    ) -> anyhow::Result<()> {
        let mut off = 0u64; // view dim-0 offset of the current part
        let mut pos = 0usize; // values written to `out`
        for (i, r) in &view.parts {
            let len = r.end - r.start;
            let (lo, hi) = (range.start.max(off), range.end.min(off + len));
            off += len;
            if lo >= hi {
                continue;
            }
            let layer = &self.layers[*i];
            self.ckpt.prepare_layer(layer)?;
            let (s, e) = (r.start + lo - (off - len), r.start + hi - (off - len));
            if layer.shape.len() >= 2 {
                let inner: u64 = layer.shape[1..layer.shape.len() - 1].iter().product();
                let n = usize::try_from((e - s) * layer.shape[1..].iter().product::<u64>())?;
                self.ckpt.read_layer_f32(layer, s * inner..e * inner, &mut out[pos..pos + n])?;
                pos += n;
            } else {
                // A vector or scalar is one row: read it whole, keep the part asked for.
                tmp.resize(usize::try_from(layer.params())?, 0.0);
                self.ckpt.read_layer_f32(layer, 0..1, tmp)?;
                let (s, e) = (usize::try_from(s)?, usize::try_from(e)?);
                out[pos..pos + e - s].copy_from_slice(&tmp[s..e]);
                pos += e - s;
            }
        }
        Ok(())
    }
}

/// Sums of one comparison, in `f64`.
#[derive(Debug, Default, Clone, Copy)]
struct Sums {
    params: u64,
    sq_error: f64,
    sq_reference: f64,
    max_abs_error: f64,
    nonfinite: u64,
}

impl Sums {
    fn add(&mut self, a: &[f32], b: &[f32]) {
        for (&x, &y) in a.iter().zip(b) {
            if !x.is_finite() || !y.is_finite() {
                self.nonfinite += 1;
                continue;
            }
            let d = f64::from(x) - f64::from(y);
            self.sq_error += d * d;
            self.sq_reference += f64::from(y) * f64::from(y);
            self.max_abs_error = self.max_abs_error.max(d.abs());
        }
        self.params += a.len() as u64;
    }

    fn merge(&mut self, o: &Sums) {
        self.params += o.params;
        self.sq_error += o.sq_error;
        self.sq_reference += o.sq_reference;
        self.max_abs_error = self.max_abs_error.max(o.max_abs_error);
        self.nonfinite += o.nonfinite;
    }

    /// ‖A−B‖/‖B‖: 0 when both are zero, ∞ when only B is.
    fn rel_error(&self) -> f64 {
        match (self.sq_error == 0.0, self.sq_reference == 0.0) {
            (true, _) => 0.0,
            (false, true) => f64::INFINITY,
            (false, false) => (self.sq_error / self.sq_reference).sqrt(),
        }
    }

    /// 10·log10(‖B‖²/‖A−B‖²): ∞ when A equals B.
    fn snr_db(&self) -> f64 {
        if self.sq_error == 0.0 {
            f64::INFINITY
        } else {
            10.0 * (self.sq_reference / self.sq_error).log10()
        }
    }

    fn json(&self) -> Value {
        json!({
            "params": self.params,
            "rel_error": number(self.rel_error()),
            "max_abs_error": number(self.max_abs_error),
            "snr_db": number(self.snr_db()),
            "sq_error": number(self.sq_error),
            "sq_reference": number(self.sq_reference),
            "nonfinite": self.nonfinite,
        })
    }
}

/// A float as JSON: a number, or `"inf"`, `"-inf"`, `"NaN"` (as `inspect --json` does).
fn number(f: f64) -> Value {
    serde_json::Number::from_f64(f).map_or_else(|| Value::String(format!("{f}")), Value::Number)
}

#[derive(Serialize)]
struct Row {
    name: String,
    shape: Vec<u64>,
    #[serde(flatten)]
    metrics: Value,
}

/// Runs `lowbit diff`.
pub(crate) fn run(args: &DiffArgs) -> anyhow::Result<()> {
    let a = Side::open(&args.a)?;
    let b = Side::open(&args.b)?;
    // Shapes first: a mismatch is refused before any data is read.
    let mut common = Vec::new();
    for name in &b.order {
        let Some(va) = a.views.get(name) else { continue };
        let vb = &b.views[name];
        if va.shape != vb.shape {
            anyhow::bail!(
                "{}: tensor `{name}` has shape {:?}, but {:?} in {}",
                args.a.display(),
                va.shape,
                vb.shape,
                args.b.display()
            );
        }
        common.push((name, va, vb));
    }
    let mut rows = Vec::with_capacity(common.len());
    let mut total = Sums::default();
    let (mut ba, mut bb, mut ta, mut tb) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (name, va, vb) in common {
        let mut sums = Sums::default();
        let dim0 = va.shape.first().copied().unwrap_or(1);
        let inner: u64 = va.shape.iter().skip(1).product();
        // Vectors and scalars are one row: one chunk.
        let step = if va.shape.len() >= 2 { (CHUNK_VALUES / inner.max(1)).max(1) } else { dim0 };
        let mut row = 0;
        while row < dim0 {
            let end = row.saturating_add(step).min(dim0);
            let n = usize::try_from((end - row) * inner)?;
            ba.resize(n, 0.0);
            bb.resize(n, 0.0);
            // The two sides decode at the same time (A's error first when both fail).
            let (ra, rb) = rayon::join(
                || a.read(va, row..end, &mut ba, &mut ta),
                || b.read(vb, row..end, &mut bb, &mut tb),
            );
            ra?;
            rb?;
            // Fixed blocks summed in parallel and merged in order: the same sums for any
            // thread count.
            use rayon::prelude::*;
            let parts: Vec<Sums> = ba
                .par_chunks(1 << 16)
                .zip(bb.par_chunks(1 << 16))
                .map(|(x, y)| {
                    let mut s = Sums::default();
                    s.add(x, y);
                    s
                })
                .collect();
            for p in &parts {
                sums.merge(p);
            }
            row = end;
        }
        total.merge(&sums);
        rows.push((name.clone(), va.shape.clone(), sums));
    }
    let only = |x: &Side, y: &Side| -> Vec<String> {
        x.order.iter().filter(|n| !y.views.contains_key(*n)).cloned().collect()
    };
    let (only_a, only_b) = (only(&a, &b), only(&b, &a));
    if args.json {
        let tensors: Vec<Row> = rows
            .iter()
            .map(|(name, shape, s)| Row {
                name: name.clone(),
                shape: shape.clone(),
                metrics: s.json(),
            })
            .collect();
        let mut t = total.json();
        t["tensors"] = rows.len().into();
        let report = json!({
            "a": args.a.display().to_string(),
            "b": args.b.display().to_string(),
            "reference": "b",
            "tensors": tensors,
            "only_in_a": only_a,
            "only_in_b": only_b,
            "total": t,
        });
        let mut s = serde_json::to_string_pretty(&report)?;
        s.push('\n');
        return output::print(&s);
    }
    output::print(&render(args, &rows, &total, &only_a, &only_b))
}

fn render(
    args: &DiffArgs,
    rows: &[(String, Vec<u64>, Sums)],
    total: &Sums,
    only_a: &[String],
    only_b: &[String],
) -> String {
    let fmt_snr =
        |s: f64| if s.is_infinite() && s > 0.0 { "∞".to_owned() } else { format!("{s:.2}") };
    let mut t = comfy_table::Table::new();
    t.load_style(crate::inspect::TABLE_STYLE);
    t.set_header(vec!["tensor", "shape", "params", "rel error", "max abs error", "SNR dB"]);
    for i in 2..6 {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(comfy_table::CellAlignment::Right);
        }
    }
    for (name, shape, s) in rows {
        let shape = shape.iter().map(u64::to_string).collect::<Vec<_>>().join("×");
        t.add_row(vec![
            name.clone(),
            if shape.is_empty() { "scalar".into() } else { shape },
            s.params.to_string(),
            format!("{:.3e}", s.rel_error()),
            format!("{:.3e}", s.max_abs_error),
            fmt_snr(s.snr_db()),
        ]);
    }
    let mut out =
        format!("A  {}\nB  {} (reference)\n\n{t}\n\n", args.a.display(), args.b.display());
    for (side, names) in [("A", only_a), ("B", only_b)] {
        if !names.is_empty() {
            let _ = writeln!(out, "only in {side} ({}): {}", names.len(), names.join(", "));
        }
    }
    let _ = writeln!(
        out,
        "total: {} tensors, {} parameters, rel error {:.3e}, max abs error {:.3e}, SNR {} dB{}",
        rows.len(),
        total.params,
        total.rel_error(),
        total.max_abs_error,
        fmt_snr(total.snr_db()),
        if total.nonfinite == 0 {
            String::new()
        } else {
            format!(", {} non-finite pairs skipped", total.nonfinite)
        }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::Sums;

    #[test]
    fn metrics() {
        let mut s = Sums::default();
        s.add(&[1.0, 2.0, f32::NAN], &[1.0, 2.0, 0.0]);
        assert_eq!((s.rel_error(), s.snr_db(), s.nonfinite, s.params), (0.0, f64::INFINITY, 1, 3));
        let mut s = Sums::default();
        s.add(&[3.0, 0.0], &[4.0, 0.0]);
        assert!((s.rel_error() - 0.25).abs() < 1e-15);
        assert!((s.snr_db() - 10.0 * 16f64.log10()).abs() < 1e-12);
        assert_eq!(s.max_abs_error, 1.0);
        let mut z = Sums::default();
        z.add(&[1.0], &[0.0]);
        assert_eq!((z.rel_error(), z.snr_db()), (f64::INFINITY, f64::NEG_INFINITY));
    }
}
