//! The schemes, their names, and which tensors each stores for one weight.

use lowbit_dtype::Dtype;
use std::fmt;

/// One scale per output channel (row) or one for the whole tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScaleGranularity {
    /// One scale per output channel (row of `[N, K]`).
    Channel,
    /// One scale for the whole tensor.
    Tensor,
}

/// Which 8-bit float.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fp8Format {
    /// `float8_e4m3fn`: largest finite 448, no infinities.
    E4M3,
    /// `float8_e5m2`: largest finite 57344.
    E5M2,
}

impl Fp8Format {
    /// The safetensors dtype.
    #[must_use]
    pub fn dtype(self) -> Dtype {
        match self {
            Fp8Format::E4M3 => Dtype::F8E4M3,
            Fp8Format::E5M2 => Dtype::F8E5M2,
        }
    }

    /// torch's name (`float8_e4m3fn`), as ComfyUI's marker writes it.
    #[must_use]
    pub fn torch_name(self) -> &'static str {
        match self {
            Fp8Format::E4M3 => "float8_e4m3fn",
            Fp8Format::E5M2 => "float8_e5m2",
        }
    }

    /// Largest finite value.
    #[must_use]
    pub fn max(self) -> f32 {
        match self {
            Fp8Format::E4M3 => 448.0,
            Fp8Format::E5M2 => 57344.0,
        }
    }
}

/// How one weight `[N, K]` is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// lowbit's ternary (`formats/ternary.md`): codes `q+1` packed 4 per byte along K, BF16
    /// absmean scales.
    Ternary {
        /// Per channel (default) or per tensor.
        scale: ScaleGranularity,
    },
    /// Hugging Face BitNet packing (`formats/bitnet.md`): `[N/4, K]`, row quarters, `1/γ`.
    Bitnet,
    /// Group-wise int4 (`formats/int4.md`): `[N, K/2]`, scales `[K/g, N]`.
    Int4 {
        /// Elements per group along K (32, 64 or 128).
        group: u32,
        /// Scale and zero point instead of a symmetric scale.
        asym: bool,
    },
    /// bitsandbytes NF4, blocksize 64 (`formats/nf4.md`).
    Nf4 {
        /// bitsandbytes' double quantization of the absmax.
        double_quant: bool,
    },
    /// Plain FP8, no scale, as diffusers' layerwise casting stores weights (`formats/fp8.md`).
    Fp8 {
        /// E4M3 or E5M2.
        format: Fp8Format,
    },
    /// ComfyUI's per-layer FP8: per-tensor `weight_scale` and a `comfy_quant` marker.
    ComfyFp8 {
        /// E4M3 or E5M2.
        format: Fp8Format,
    },
    /// BFL's `fp8r`: E4M3 with one FP32 scale per row, as diffusers' `bfl` quantizer loads.
    BflFp8,
    /// ComfyUI's NVFP4 (`formats/nvfp4.md`): E2M1 high nibble first, swizzled E4M3 block
    /// scales of 16, a per-tensor `weight_scale_2` and a `comfy_quant` marker.
    ComfyNvfp4,
    /// BFL's `nvfp4` (the ModelOpt layout diffusers' `bfl` quantizer loads): E2M1 low nibble
    /// first, row-major E4M3 block scales of 16, `weight_scale_2` and `input_scale`.
    BflNvfp4,
    /// SVDQuant (`formats/svdq.md`): smoothing, a low-rank branch and an int4 g64 residual,
    /// in comfy-kitchen's natural layout.
    Svdq {
        /// Activations int4 per token (W4A4) or kept (W4A16).
        act4: bool,
        /// Rank of the low-rank branch.
        rank: u16,
        /// Timestep groups (ViDiT-Q): one λ and one residual per group.
        groups: u16,
    },
    /// SDNQ's `uint4` (`formats/sdnq.md`): flat nibbles, F32 scale and zero point per group,
    /// for diffusers' `sdnq` quantizer; `rank` > 0 adds the BF16 low-rank branch.
    Sdnq {
        /// Rank of the low-rank branch; 0 for none.
        rank: u16,
    },
}

/// One stored tensor of a scheme: its name is the weight's module path, a dot, and `suffix`
/// (`double_blocks.0.img_mlp.0` + `.` + `weight_scale`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Name relative to the module path.
    pub suffix: &'static str,
    /// Element type.
    pub dtype: Dtype,
    /// Shape in torch order.
    pub shape: Vec<u64>,
}

impl Stored {
    /// Bytes of data.
    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.shape.iter().product::<u64>() * self.dtype.size() as u64
    }
}

/// Why a scheme cannot store a weight of some shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unfit(pub String);

impl fmt::Display for Unfit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// bitsandbytes' NF4 block size.
pub const NF4_BLOCK: u64 = 64;
/// bitsandbytes' nested block size (absmax values per nested block).
pub const NF4_NESTED_BLOCK: u64 = 256;

impl Scheme {
    /// Every scheme name [`Scheme::parse`] accepts, for messages.
    pub const NAMES: [&'static str; 18] = [
        "ternary",
        "ternary:tensor",
        "bitnet",
        "int4",
        "int4:asym",
        "nf4",
        "nf4:dq",
        "fp8",
        "fp8:e5m2",
        "comfy:fp8",
        "comfy:fp8:e5m2",
        "bfl:fp8",
        "comfy:nvfp4",
        "bfl:nvfp4",
        "svdq-w4a4",
        "svdq-w4a16",
        "sdnq:uint4",
        "sdnq:uint4-svd",
    ];

    /// Parses a canonical name (`int4:g128:asym`, `ternary:tensor`, `comfy:fp8`); see
    /// [`fmt::Display`] for the inverse. Options may come in any order.
    #[must_use]
    pub fn parse(s: &str) -> Option<Scheme> {
        let lower = s.to_ascii_lowercase();
        let mut parts = lower.split(':');
        let head = parts.next()?;
        let opts: Vec<&str> = parts.collect();
        let only = |allowed: &[&str]| opts.iter().all(|o| allowed.contains(o));
        let fp8_format = |opts: &[&str]| {
            if opts.contains(&"e5m2") { Fp8Format::E5M2 } else { Fp8Format::E4M3 }
        };
        Some(match head {
            "ternary" if only(&["channel", "tensor"]) && opts.len() <= 1 => Scheme::Ternary {
                scale: if opts.contains(&"tensor") {
                    ScaleGranularity::Tensor
                } else {
                    ScaleGranularity::Channel
                },
            },
            "bitnet" if opts.is_empty() => Scheme::Bitnet,
            "int4" => {
                let mut group = 64;
                let mut asym = false;
                for o in &opts {
                    match *o {
                        "asym" => asym = true,
                        "sym" => asym = false,
                        g => group = g.strip_prefix('g')?.parse().ok()?,
                    }
                }
                if ![32, 64, 128].contains(&group) {
                    return None;
                }
                Scheme::Int4 { group, asym }
            }
            "nf4" if only(&["dq"]) && opts.len() <= 1 => {
                Scheme::Nf4 { double_quant: opts.contains(&"dq") }
            }
            "fp8" if only(&["e4m3", "e5m2"]) && opts.len() <= 1 => {
                Scheme::Fp8 { format: fp8_format(&opts) }
            }
            "comfy" if opts == ["nvfp4"] => Scheme::ComfyNvfp4,
            "comfy" if opts.first() == Some(&"fp8") && opts.len() <= 2 => {
                let rest = &opts[1..];
                if !rest.iter().all(|o| ["e4m3", "e5m2"].contains(o)) {
                    return None;
                }
                Scheme::ComfyFp8 { format: fp8_format(rest) }
            }
            "bfl" if opts == ["fp8"] => Scheme::BflFp8,
            "bfl" if opts == ["nvfp4"] => Scheme::BflNvfp4,
            "svdq-w4a4" | "svdq-w4a16" => {
                let (mut rank, mut groups) = (32u16, 1u16);
                for o in &opts {
                    if let Some(r) = o.strip_prefix('r') {
                        rank = r.parse().ok()?;
                    } else {
                        groups = o.strip_prefix('t')?.parse().ok()?;
                    }
                }
                let ranks = 1..=crate::svdq::MAX_RANK;
                if !ranks.contains(&rank) || !(1..=crate::svdq::MAX_GROUPS).contains(&groups) {
                    return None;
                }
                Scheme::Svdq { act4: head == "svdq-w4a4", rank, groups }
            }
            "sdnq" if opts.first() == Some(&"uint4") && opts.len() == 1 => Scheme::Sdnq { rank: 0 },
            "sdnq" if opts.first() == Some(&"uint4-svd") && opts.len() <= 2 => {
                let rank = match opts.get(1) {
                    Some(o) => o.strip_prefix('r')?.parse().ok()?,
                    None => 32,
                };
                if !(1..=crate::sdnq::MAX_RANK).contains(&rank) {
                    return None;
                }
                Scheme::Sdnq { rank }
            }
            _ => return None,
        })
    }

    /// Whether the scheme can store a weight `[n, k]`; `Err` says why not (the planner then
    /// falls back to source precision and reports it).
    ///
    /// # Errors
    /// The shape the scheme's packing does not divide.
    pub fn fits(&self, n: u64, k: u64) -> Result<(), Unfit> {
        let unfit = |s: String| Err(Unfit(s));
        match *self {
            Scheme::Ternary { .. } if !k.is_multiple_of(4) => {
                unfit(format!("row length {k} is not a multiple of 4 (four codes per byte)"))
            }
            Scheme::Bitnet if !n.is_multiple_of(4) => {
                unfit(format!("{n} rows are not a multiple of 4 (BitNet packs row quarters)"))
            }
            Scheme::Int4 { group, .. } if !k.is_multiple_of(u64::from(group)) => {
                unfit(format!("row length {k} is not a multiple of the group size {group}"))
            }
            Scheme::BflNvfp4 | Scheme::ComfyNvfp4 if !k.is_multiple_of(crate::nvfp4::BLOCK) => {
                unfit(format!("row length {k} is not a multiple of the NVFP4 block 16"))
            }
            Scheme::ComfyNvfp4 if !n.is_multiple_of(crate::nvfp4::BLOCK) => unfit(format!(
                "{n} rows are not a multiple of 16 (ComfyUI pads them, and a padded file no longer states the weight's shape)"
            )),
            Scheme::Svdq { .. } if !k.is_multiple_of(crate::svdq::GROUP) => {
                unfit(format!("row length {k} is not a multiple of the group size 64"))
            }
            Scheme::Svdq { rank, .. } if u64::from(rank) > n.min(k) => {
                unfit(format!("rank {rank} exceeds the weight's shape [{n}, {k}]"))
            }
            Scheme::Sdnq { .. } if n.checked_mul(k).is_none_or(|e| e % 2 != 0) => {
                unfit(format!("[{n}, {k}] has an odd number of elements (two codes per byte)"))
            }
            Scheme::Sdnq { rank } if u64::from(rank) > n.min(k) => {
                unfit(format!("rank {rank} exceeds the weight's shape [{n}, {k}]"))
            }
            _ => Ok(()),
        }
    }

    /// The tensors stored for a weight `[n, k]` whose source element type is `source`, in file
    /// order. `nested_offset` is NF4 double quantization's offset (the mean absmax), which the
    /// length of the quant-state JSON depends on; other schemes ignore it.
    #[must_use]
    pub fn stored(&self, n: u64, k: u64, source: Dtype, nested_offset: Option<f32>) -> Vec<Stored> {
        let s = |suffix, dtype, shape: &[u64]| Stored { suffix, dtype, shape: shape.to_vec() };
        match *self {
            Scheme::Ternary { scale } => {
                let scales = match scale {
                    ScaleGranularity::Channel => n,
                    ScaleGranularity::Tensor => 1,
                };
                vec![s("weight", Dtype::U8, &[n, k / 4]), s("weight_scale", Dtype::BF16, &[scales])]
            }
            Scheme::Bitnet => {
                vec![s("weight", Dtype::U8, &[n / 4, k]), s("weight_scale", Dtype::BF16, &[1])]
            }
            Scheme::Int4 { group, asym } => {
                let g = k / u64::from(group);
                let mut v = vec![
                    s("weight", Dtype::I8, &[n, k / 2]),
                    s("weight_scale", Dtype::BF16, &[g, n]),
                ];
                if asym {
                    v.push(s("weight_zero", Dtype::BF16, &[g, n]));
                }
                v
            }
            Scheme::Nf4 { double_quant } => {
                let numel = n * k;
                let blocks = numel.div_ceil(NF4_BLOCK);
                let json = crate::nf4::quant_state_json(
                    [n, k],
                    source,
                    if double_quant { Some(nested_offset.unwrap_or(0.0)) } else { None },
                );
                let mut v = vec![s("weight", Dtype::U8, &[numel.div_ceil(2), 1])];
                if double_quant {
                    v.push(s("weight.absmax", Dtype::U8, &[blocks]));
                    v.push(s("weight.quant_map", Dtype::F32, &[16]));
                    v.push(s(
                        "weight.nested_absmax",
                        Dtype::F32,
                        &[blocks.div_ceil(NF4_NESTED_BLOCK)],
                    ));
                    v.push(s("weight.nested_quant_map", Dtype::F32, &[256]));
                } else {
                    v.push(s("weight.absmax", Dtype::F32, &[blocks]));
                    v.push(s("weight.quant_map", Dtype::F32, &[16]));
                }
                v.push(s("weight.quant_state.bitsandbytes__nf4", Dtype::U8, &[json.len() as u64]));
                v
            }
            Scheme::Fp8 { format } => vec![s("weight", format.dtype(), &[n, k])],
            Scheme::ComfyFp8 { format } => vec![
                s("weight", format.dtype(), &[n, k]),
                s("weight_scale", Dtype::F32, &[]),
                s("comfy_quant", Dtype::U8, &[crate::fp8::comfy_marker(format).len() as u64]),
            ],
            Scheme::BflFp8 => {
                vec![s("weight", Dtype::F8E4M3, &[n, k]), s("weight_scale", Dtype::F32, &[n])]
            }
            Scheme::ComfyNvfp4 => vec![
                s("weight", Dtype::U8, &[n, k / 2]),
                s("weight_scale", Dtype::F8E4M3, &crate::nvfp4::swizzled_shape(n, k)),
                s("weight_scale_2", Dtype::F32, &[]),
                s("comfy_quant", Dtype::U8, &[crate::nvfp4::comfy_marker().len() as u64]),
            ],
            Scheme::BflNvfp4 => vec![
                s("weight", Dtype::U8, &[n, k / 2]),
                s("weight_scale", Dtype::F8E4M3, &[n, k / crate::nvfp4::BLOCK]),
                s("weight_scale_2", Dtype::F32, &[]),
                s("input_scale", Dtype::F32, &[]),
            ],
            Scheme::Svdq { rank, groups, .. } => {
                let r = u64::from(rank);
                let shapes: [(Dtype, Vec<u64>); 5] = [
                    (Dtype::I8, vec![n, k / 2]),
                    (Dtype::BF16, vec![k / crate::svdq::GROUP, n]),
                    (Dtype::BF16, vec![k]),
                    (Dtype::BF16, vec![k, r]),
                    (Dtype::BF16, vec![n, r]),
                ];
                crate::svdq::SUFFIXES
                    .iter()
                    .zip(shapes)
                    .map(|(suffix, (dtype, mut shape))| {
                        if groups > 1 {
                            shape.insert(0, u64::from(groups));
                        }
                        Stored { suffix, dtype, shape }
                    })
                    .collect()
            }
            Scheme::Sdnq { rank } => crate::sdnq::stored(n, k, rank),
        }
    }

    /// Bytes stored for a weight `[n, k]` (all its tensors).
    #[must_use]
    pub fn stored_bytes(&self, n: u64, k: u64, source: Dtype) -> u64 {
        self.stored(n, k, source, Some(0.0)).iter().map(Stored::bytes).sum()
    }

    /// Decodes rows `rows` of a stored weight `[n, k]` into `out` (`rows.len() · k` values);
    /// `stored` holds the bytes of [`Scheme::stored`]'s tensors, in that order.
    ///
    /// # Errors
    /// Stored tensors that disagree with the scheme (lengths, codes, markers).
    pub fn decode(
        &self,
        stored: &[&[u8]],
        n: u64,
        k: u64,
        rows: std::ops::Range<u64>,
        out: &mut [f32],
    ) -> Result<(), crate::Error> {
        match *self {
            Scheme::Ternary { scale } => crate::ternary::decode(stored, scale, n, k, rows, out),
            Scheme::Bitnet => crate::bitnet::decode(stored, n, k, rows, out),
            Scheme::Int4 { group, asym } => {
                crate::int4::decode(stored, group, asym, n, k, rows, out)
            }
            Scheme::Nf4 { double_quant } => {
                crate::nf4::decode(stored, double_quant, n, k, rows, out)
            }
            Scheme::Fp8 { format } => crate::fp8::decode_plain(stored, format, n, k, rows, out),
            Scheme::ComfyFp8 { format } => {
                crate::fp8::decode_comfy(stored, format, n, k, rows, out)
            }
            Scheme::BflFp8 => crate::fp8::decode_bfl(stored, n, k, rows, out),
            Scheme::ComfyNvfp4 => crate::nvfp4::decode_comfy(stored, n, k, rows, out),
            Scheme::BflNvfp4 => crate::nvfp4::decode_bfl(stored, n, k, rows, out),
            Scheme::Svdq { rank, groups, .. } => {
                crate::svdq::decode(stored, rank, groups, n, k, rows, out)
            }
            Scheme::Sdnq { rank } => crate::sdnq::decode(stored, rank, n, k, rows, out),
        }
    }

    /// Whether writing needs a first pass over the whole weight (a per-tensor statistic).
    #[must_use]
    pub fn needs_stats(&self) -> bool {
        matches!(
            self,
            Scheme::Ternary { scale: ScaleGranularity::Tensor }
                | Scheme::Bitnet
                | Scheme::ComfyFp8 { .. }
                | Scheme::ComfyNvfp4
                | Scheme::BflNvfp4
                | Scheme::Nf4 { double_quant: true }
        )
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scheme::Ternary { scale: ScaleGranularity::Channel } => f.write_str("ternary"),
            Scheme::Ternary { scale: ScaleGranularity::Tensor } => f.write_str("ternary:tensor"),
            Scheme::Bitnet => f.write_str("bitnet"),
            Scheme::Int4 { group, asym } => {
                write!(f, "int4:g{group}{}", if *asym { ":asym" } else { "" })
            }
            Scheme::Nf4 { double_quant } => {
                f.write_str(if *double_quant { "nf4:dq" } else { "nf4" })
            }
            Scheme::Fp8 { format: Fp8Format::E4M3 } => f.write_str("fp8"),
            Scheme::Fp8 { format: Fp8Format::E5M2 } => f.write_str("fp8:e5m2"),
            Scheme::ComfyFp8 { format: Fp8Format::E4M3 } => f.write_str("comfy:fp8"),
            Scheme::ComfyFp8 { format: Fp8Format::E5M2 } => f.write_str("comfy:fp8:e5m2"),
            Scheme::BflFp8 => f.write_str("bfl:fp8"),
            Scheme::ComfyNvfp4 => f.write_str("comfy:nvfp4"),
            Scheme::BflNvfp4 => f.write_str("bfl:nvfp4"),
            Scheme::Svdq { act4, rank, groups } => {
                f.write_str(if *act4 { "svdq-w4a4" } else { "svdq-w4a16" })?;
                if *rank != 32 {
                    write!(f, ":r{rank}")?;
                }
                if *groups != 1 {
                    write!(f, ":t{groups}")?;
                }
                Ok(())
            }
            Scheme::Sdnq { rank: 0 } => f.write_str("sdnq:uint4"),
            Scheme::Sdnq { rank: 32 } => f.write_str("sdnq:uint4-svd"),
            Scheme::Sdnq { rank } => write!(f, "sdnq:uint4-svd:r{rank}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Fp8Format, ScaleGranularity, Scheme};

    #[test]
    fn names_round_trip() {
        let all = [
            Scheme::Ternary { scale: ScaleGranularity::Channel },
            Scheme::Ternary { scale: ScaleGranularity::Tensor },
            Scheme::Bitnet,
            Scheme::Int4 { group: 32, asym: false },
            Scheme::Int4 { group: 128, asym: true },
            Scheme::Nf4 { double_quant: false },
            Scheme::Nf4 { double_quant: true },
            Scheme::Fp8 { format: Fp8Format::E4M3 },
            Scheme::Fp8 { format: Fp8Format::E5M2 },
            Scheme::ComfyFp8 { format: Fp8Format::E4M3 },
            Scheme::ComfyFp8 { format: Fp8Format::E5M2 },
            Scheme::BflFp8,
            Scheme::ComfyNvfp4,
            Scheme::BflNvfp4,
            Scheme::Svdq { act4: true, rank: 32, groups: 1 },
            Scheme::Svdq { act4: false, rank: 16, groups: 4 },
            Scheme::Sdnq { rank: 0 },
            Scheme::Sdnq { rank: 32 },
            Scheme::Sdnq { rank: 8 },
        ];
        for s in all {
            assert_eq!(Scheme::parse(&s.to_string()), Some(s), "{s}");
        }
        for name in Scheme::NAMES {
            assert!(Scheme::parse(name).is_some(), "{name}");
        }
        assert_eq!(Scheme::parse("int4"), Some(Scheme::Int4 { group: 64, asym: false }));
        assert_eq!(Scheme::parse("int4:asym:g32"), Some(Scheme::Int4 { group: 32, asym: true }));
        for bad in [
            "int4:g48",
            "int4:x",
            "ternary:row",
            "bfl:fp8:e5m2",
            "bfl:nvfp4:e4m3",
            "comfy:nvfp4:e5m2",
            "nvfp4",
            "comfy",
            "fp8:e4m3:e5m2",
            "svdq-w4a4:r0",
            "svdq-w4a8",
            "svdq-w4a4:x",
            "sdnq",
            "sdnq:uint4:r8",
            "sdnq:uint4-svd:r0",
            "sdnq:int4",
        ] {
            assert_eq!(Scheme::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn fits() {
        let t = Scheme::Ternary { scale: ScaleGranularity::Channel };
        assert!(t.fits(3, 8).is_ok() && t.fits(3, 6).is_err());
        assert!(Scheme::Bitnet.fits(8, 3).is_ok() && Scheme::Bitnet.fits(6, 4).is_err());
        let i = Scheme::Int4 { group: 64, asym: false };
        assert!(i.fits(1, 128).is_ok() && i.fits(1, 96).is_err());
        assert!(Scheme::Nf4 { double_quant: true }.fits(3, 33).is_ok());
        assert!(Scheme::BflNvfp4.fits(3, 32).is_ok() && Scheme::BflNvfp4.fits(16, 24).is_err());
        let c = Scheme::ComfyNvfp4;
        assert!(c.fits(48, 80).is_ok() && c.fits(40, 32).is_err() && c.fits(16, 8).is_err());
    }
}
