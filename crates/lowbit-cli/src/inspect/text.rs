//! The human-readable rendering: summary, per-tensor table, totals by type and by block.

use super::{Group, Report};
use comfy_table::{CellAlignment, ContentArrangement, LineStyle, Table, TableStyle};
use std::fmt::Write;

/// Bytes in decimal units, as checkpoint sizes are quoted (`23.8 GB`).
fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 { format!("{b} B") } else { format!("{v:.2} {}", UNITS[u]) }
}

/// Parameter counts with a scale suffix (`11.90 B`, `3.2 M`).
fn human_params(p: u64) -> String {
    match p {
        p if p >= 1_000_000_000 => format!("{:.2} B", p as f64 / 1e9),
        p if p >= 1_000_000 => format!("{:.2} M", p as f64 / 1e6),
        p if p >= 10_000 => format!("{:.1} k", p as f64 / 1e3),
        p => p.to_string(),
    }
}

/// No borders, one rule under the header.
pub(crate) const TABLE_STYLE: TableStyle =
    TableStyle::new().header_separator(LineStyle::none().fill('─').junction('─'));

fn table(header: &[&str], right: &[usize]) -> Table {
    let mut t = Table::new();
    t.load_style(TABLE_STYLE).set_content_arrangement(ContentArrangement::Disabled);
    t.set_header(header.to_vec());
    for &i in right {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    t
}

fn group_table(title: &str, groups: &[Group]) -> Table {
    let mut t =
        table(&[title, "tensors", "params", "bytes", "bits/weight", "share"], &[1, 2, 3, 4, 5]);
    for g in groups {
        t.add_row(vec![
            g.name.clone(),
            g.tensors.to_string(),
            human_params(g.params),
            human_bytes(g.bytes),
            format!("{:.3}", g.bits_per_weight),
            format!("{:.1}%", g.share_of_bytes * 100.0),
        ]);
    }
    t
}

/// One line of a metadata value: JSON with long strings and arrays cut short.
fn short(v: &serde_json::Value) -> String {
    const MAX: usize = 72;
    let text = match v {
        serde_json::Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    };
    if text.chars().count() <= MAX {
        text
    } else {
        format!("{}… ({} chars)", text.chars().take(MAX).collect::<String>(), text.chars().count())
    }
}

/// Renders the report as text: the summary first (what the file is, totals, by type, by block,
/// metadata), then, when asked, every tensor.
pub(crate) fn render(r: &Report, with_tensors: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "path          {}", r.path);
    let files =
        if r.files.len() == 1 { String::new() } else { format!(" ({} files)", r.files.len()) };
    let _ = writeln!(out, "format        {}{files}", r.format);
    if let Some(z) = &r.zstd {
        let _ = writeln!(
            out,
            "zstd pack     {} holding {} of safetensors ({:.1}% smaller), {} frames",
            human_bytes(z.compressed_bytes),
            human_bytes(z.raw_bytes),
            (1.0 - z.compressed_bytes as f64 / z.raw_bytes.max(1) as f64) * 100.0,
            z.frames
        );
    }
    let naming = r.naming.map_or(String::new(), |n| format!(", {n} naming"));
    let prefix =
        if r.prefix.is_empty() { String::new() } else { format!(", prefix `{}`", r.prefix) };
    let _ = writeln!(out, "architecture  {}{naming}{prefix}", r.architecture);
    let stored = r.tensors.len() as u64;
    let packed = if r.stored_tensors == stored {
        String::new()
    } else {
        format!(" (in {} stored tensors)", r.stored_tensors)
    };
    let _ = writeln!(
        out,
        "total         {} tensors{packed}, {} parameters, {} ({} bytes), {:.3} bits/weight\n",
        r.tensors.len(),
        human_params(r.total_params),
        human_bytes(r.total_bytes),
        r.total_bytes,
        r.bits_per_weight
    );
    let _ = writeln!(out, "{}\n", group_table("type", &r.by_type));
    let _ = writeln!(out, "{}\n", group_table("block", &r.by_block));
    if !r.metadata.is_empty() {
        let mut meta = table(&["metadata", "value"], &[]);
        for (k, v) in &r.metadata {
            meta.add_row(vec![k.clone(), short(v)]);
        }
        let _ = writeln!(out, "{meta}\n");
    }
    if with_tensors {
        let mut tensors =
            table(&["tensor", "shape", "type", "params", "bytes", "bits/weight"], &[3, 4, 5]);
        for t in &r.tensors {
            let shape = t.shape.iter().map(u64::to_string).collect::<Vec<_>>().join("×");
            tensors.add_row(vec![
                t.name.clone(),
                if shape.is_empty() { "scalar".into() } else { shape },
                t.ty.clone(),
                t.params.to_string(),
                t.bytes.to_string(),
                format!("{:.3}", t.bits_per_weight),
            ]);
        }
        let _ = writeln!(out, "{tensors}");
    } else {
        let _ = writeln!(out, "{} tensors: --tensors lists them", r.tensors.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{human_bytes, human_params};

    #[test]
    fn units() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(23_802_816_640), "23.80 GB");
        assert_eq!(human_params(11_901_408_320), "11.90 B");
        assert_eq!(human_params(3_170_000), "3.17 M");
        assert_eq!(human_params(128), "128");
    }
}
