//! The depth plot: bits per weight of every block, in forward order, with each weight matrix as
//! a dot.
//!
//! Comparing two mixes (say Q4_K_M against Q4_K_S) is a matter of opening both pictures: blocks
//! kept at higher precision stand out as steps in the line.

use super::Report;
use plotters::prelude::*;
use std::collections::BTreeMap;

const WIDTH: u32 = 1400;
const HEIGHT: u32 = 560;

/// Draws the plot as SVG text.
pub(crate) fn svg(r: &Report) -> anyhow::Result<String> {
    let blocks = &r.by_block;
    let n = blocks.len().max(1);
    // Dots are weight matrices only: F32 biases and norms (32 bits) would flatten the scale.
    let matrices = || r.tensors.iter().filter(|t| t.shape.len() >= 2);
    let y_max = matrices()
        .map(|t| t.bits_per_weight)
        .chain(blocks.iter().map(|b| b.bits_per_weight))
        .fold(1.0f64, f64::max)
        * 1.1;
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE)?;
        let title = format!(
            "{} — {} ({}), {:.2} bits/weight overall",
            std::path::Path::new(&r.path)
                .file_name()
                .map_or(r.path.clone(), |f| f.to_string_lossy().into_owned()),
            r.architecture,
            r.format,
            r.bits_per_weight
        );
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(50)
            .y_label_area_size(60)
            .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0f64..y_max)?;
        let (labels, legend) = short_labels(r);
        let widest = labels.iter().map(String::len).max().unwrap_or(1);
        // About 7 px per character at size 12, with a gap; show every `step`-th label.
        let step =
            (n * (widest * 7 + 10)).div_ceil(usize::try_from(WIDTH).unwrap_or(1400) - 100).max(1);
        let label = |x: &f64| {
            let i = x.round();
            if (x - i).abs() > 1e-6 || i < 0.0 {
                return String::new();
            }
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "checked above"
            )]
            let i = i as usize;
            if i.is_multiple_of(step) {
                labels.get(i).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        };
        chart
            .configure_mesh()
            .x_labels(n + 1)
            .x_label_formatter(&label)
            .x_label_style(("sans-serif", 12).into_font())
            .x_desc(format!("block, input to output{legend}"))
            .y_desc("bits per weight")
            .disable_x_mesh()
            .draw()?;

        let index_of: std::collections::HashMap<&str, usize> =
            blocks.iter().enumerate().map(|(i, b)| (b.name.as_str(), i)).collect();
        chart
            .draw_series(matrices().filter_map(|t| {
                let x = *index_of.get(t.block.as_str())? as f64;
                Some(Circle::new((x, t.bits_per_weight), 2, RGBColor(150, 150, 150).filled()))
            }))?
            .label("weight matrix")
            .legend(|(x, y)| Circle::new((x, y), 3, RGBColor(150, 150, 150).filled()));
        let line: Vec<(f64, f64)> =
            blocks.iter().enumerate().map(|(i, b)| (i as f64, b.bits_per_weight)).collect();
        chart
            .draw_series(LineSeries::new(line.clone(), BLUE.stroke_width(2)))?
            .label("block (bytes-weighted)")
            .legend(|(x, y)| PathElement::new(vec![(x - 8, y), (x + 8, y)], BLUE.stroke_width(2)));
        chart.draw_series(line.into_iter().map(|p| Circle::new(p, 3, BLUE.filled())))?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
    }
    Ok(out)
}

/// Labels for the x axis: numbered blocks shortened to the initials of their group and their
/// number (`double_blocks.7` → `d7`), with a legend for the abbreviations.
fn short_labels(r: &Report) -> (Vec<String>, String) {
    let mut legend = BTreeMap::new();
    let labels = r
        .by_block
        .iter()
        .map(|b| match b.name.rsplit_once('.') {
            Some((group, n)) if n.parse::<u32>().is_ok() => {
                let short: String = group
                    .rsplit('.')
                    .next()
                    .unwrap_or(group)
                    .split('_')
                    .filter(|w| *w != "blocks" && !w.is_empty())
                    .filter_map(|w| w.chars().next())
                    .collect();
                let short = if short.is_empty() { "b".to_owned() } else { short };
                legend.insert(short.clone(), group.to_owned());
                format!("{short}{n}")
            }
            _ => b.name.clone(),
        })
        .collect();
    let legend = if legend.is_empty() {
        String::new()
    } else {
        let parts: Vec<String> = legend.iter().map(|(s, g)| format!("{s}N = {g}.N")).collect();
        format!(" ({})", parts.join(", "))
    };
    (labels, legend)
}
