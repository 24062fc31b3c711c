//! Architecture and naming detection from tensor names.

use std::fmt;

/// The model family a checkpoint holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Architecture {
    /// FLUX.1 (dev, schnell and fine-tunes sharing their transformer).
    Flux,
    /// Anything lowbit does not recognise yet.
    Unknown,
}

impl Architecture {
    /// Lower-case name used in JSON and GGUF (`"flux"`, `"unknown"`).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Architecture::Flux => "flux",
            Architecture::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Architecture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The tensor naming convention of a recognised architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Naming {
    /// Black Forest Labs' original names (`double_blocks.0.img_attn.qkv.weight`), as in the
    /// released `flux1-dev.safetensors`, ComfyUI and GGUF files.
    Bfl,
    /// diffusers' names (`transformer_blocks.0.attn.to_q.weight`).
    Diffusers,
}

impl Naming {
    /// Lower-case name used in JSON (`"bfl"`, `"diffusers"`).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Naming::Bfl => "bfl",
            Naming::Diffusers => "diffusers",
        }
    }
}

impl fmt::Display for Naming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What [`detect`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detection {
    /// The model family.
    pub architecture: Architecture,
    /// The naming, for a recognised family.
    pub naming: Option<Naming>,
    /// A prefix every model tensor carries, such as `model.diffusion_model.` (empty if none).
    pub prefix: String,
    /// Number of double-stream (joint) blocks found.
    pub double_blocks: usize,
    /// Number of single-stream blocks found.
    pub single_blocks: usize,
}

/// BFL key that marks FLUX (ComfyUI-GGUF and diffusers test for this block's attention).
const BFL_MARKER: &str = "double_blocks.0.img_attn.qkv.weight";
/// ComfyUI-GGUF's marker; present in every BFL FLUX file together with the one above.
const BFL_MARKER_2: &str = "double_blocks.0.img_attn.proj.weight";
const DIFFUSERS_MARKERS: [&str; 2] = [
    "single_transformer_blocks.0.attn.to_q.weight",
    "time_text_embed.timestep_embedder.linear_1.weight",
];
const DIFFUSERS_DOUBLE: &str = "transformer_blocks.0.attn.add_q_proj.weight";

/// Detects the architecture and naming from tensor names alone.
pub fn detect<'a>(names: impl IntoIterator<Item = &'a str>) -> Detection {
    let names: Vec<&str> = names.into_iter().collect();
    let find_prefix = |marker: &str| {
        names.iter().find_map(|n| {
            n.strip_suffix(marker).filter(|p| p.is_empty() || p.ends_with('.')).map(str::to_owned)
        })
    };
    let bfl = find_prefix(BFL_MARKER).or_else(|| find_prefix(BFL_MARKER_2));
    if let Some(prefix) = bfl {
        return Detection {
            architecture: Architecture::Flux,
            naming: Some(Naming::Bfl),
            double_blocks: count_blocks(&names, &format!("{prefix}double_blocks.")),
            single_blocks: count_blocks(&names, &format!("{prefix}single_blocks.")),
            prefix,
        };
    }
    if let Some(prefix) = find_prefix(DIFFUSERS_DOUBLE)
        && DIFFUSERS_MARKERS.iter().all(|m| names.contains(&format!("{prefix}{m}").as_str()))
    {
        return Detection {
            architecture: Architecture::Flux,
            naming: Some(Naming::Diffusers),
            double_blocks: count_blocks(&names, &format!("{prefix}transformer_blocks.")),
            single_blocks: count_blocks(&names, &format!("{prefix}single_transformer_blocks.")),
            prefix,
        };
    }
    Detection {
        architecture: Architecture::Unknown,
        naming: None,
        prefix: String::new(),
        double_blocks: 0,
        single_blocks: 0,
    }
}

/// One more than the largest `N` in `{group}N.…` names, so gaps still count.
fn count_blocks(names: &[&str], group: &str) -> usize {
    names
        .iter()
        .filter_map(|n| n.strip_prefix(group))
        .filter_map(|rest| rest.split('.').next()?.parse::<usize>().ok())
        .max()
        .map_or(0, |m| m + 1)
}

#[cfg(test)]
mod tests {
    use super::{Architecture, Naming, detect};

    #[test]
    fn bfl_with_and_without_prefix() {
        let names = [
            "double_blocks.0.img_attn.qkv.weight",
            "double_blocks.18.img_attn.qkv.weight",
            "single_blocks.37.linear1.weight",
            "img_in.weight",
        ];
        let d = detect(names);
        assert_eq!(
            (d.architecture, d.naming, d.prefix.as_str()),
            (Architecture::Flux, Some(Naming::Bfl), "")
        );
        assert_eq!((d.double_blocks, d.single_blocks), (19, 38));

        let prefixed: Vec<String> =
            names.iter().map(|n| format!("model.diffusion_model.{n}")).collect();
        let d = detect(prefixed.iter().map(String::as_str));
        assert_eq!(d.prefix, "model.diffusion_model.");
        assert_eq!(d.naming, Some(Naming::Bfl));
        assert_eq!((d.double_blocks, d.single_blocks), (19, 38));
    }

    #[test]
    fn diffusers() {
        let names = [
            "transformer_blocks.0.attn.add_q_proj.weight",
            "transformer_blocks.1.attn.to_q.weight",
            "single_transformer_blocks.0.attn.to_q.weight",
            "single_transformer_blocks.2.proj_out.weight",
            "time_text_embed.timestep_embedder.linear_1.weight",
        ];
        let d = detect(names);
        assert_eq!((d.architecture, d.naming), (Architecture::Flux, Some(Naming::Diffusers)));
        assert_eq!((d.double_blocks, d.single_blocks), (2, 3));
    }

    #[test]
    fn lookalikes_are_unknown() {
        // SD3 in diffusers naming has joint blocks with add_q_proj but no single blocks.
        let sd3 = [
            "transformer_blocks.0.attn.add_q_proj.weight",
            "pos_embed.proj.weight",
            "context_embedder.weight",
        ];
        assert_eq!(detect(sd3).architecture, Architecture::Unknown);
        // A suffix match must start at a component boundary.
        assert_eq!(
            detect(["xdouble_blocks.0.img_attn.qkv.weight"]).architecture,
            Architecture::Unknown
        );
        assert_eq!(detect(["input_blocks.0.0.weight"]).naming, None);
    }
}
