//! What the user asked for: a target (`gguf:q4_k_m`) and per-tensor rules (`REGEX=TYPE`), from the
//! command line or a TOML recipe file (format in `formats/recipe.md`).

use crate::Error;
pub use crate::nunchaku::Export;
use lowbit_dtype::GgmlType;
use lowbit_layout::Scheme;
use regex::Regex;
use std::fmt::Write;
use std::path::Path;

/// A named mix: a base type plus ComfyUI-GGUF's per-layer bumps for FLUX.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mix {
    /// Q3_K, with fused `attn.qkv` in Q4_K.
    Q3KM,
    /// Q4_K, with fused `attn.qkv` in Q5_K.
    Q4KM,
    /// Q5_K, with fused `attn.qkv` in Q6_K.
    Q5KM,
}

/// The `--to` target: a GGUF type (or mix), or a packed safetensors scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A GGUF file.
    Gguf {
        /// Type of the bulk of the weights.
        base: GgmlType,
        /// A named mix, if one was asked for.
        mix: Option<Mix>,
    },
    /// A safetensors file (or, for diffusers-named NF4, a diffusers model folder).
    Packed(Scheme),
}

/// A rule's type: a ggml type (GGUF targets), a dense type or a scheme (packed targets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleType {
    /// A ggml type, in a GGUF target.
    Ggml(GgmlType),
    /// Dense F32, F16 or BF16, in a packed target.
    Dense(GgmlType),
    /// A packed scheme.
    Scheme(Scheme),
}

impl RuleType {
    /// The name as a recipe writes it.
    #[must_use]
    pub fn name(&self) -> String {
        match self {
            RuleType::Ggml(t) | RuleType::Dense(t) => t.name().to_lowercase(),
            RuleType::Scheme(s) => s.to_string(),
        }
    }
}

/// Which schemes can share a file: lowbit's own layouts mix freely; an ecosystem layout is
/// loaded by a runtime that knows only it.
fn family(s: Scheme) -> &'static str {
    match s {
        Scheme::Ternary { .. } | Scheme::Int4 { .. } | Scheme::Fp8 { .. } | Scheme::Svdq { .. } => {
            "lowbit"
        }
        Scheme::Bitnet => "bitnet",
        Scheme::Nf4 { .. } => "nf4",
        // Their runtimes read each layer's format (ComfyUI's marker, diffusers' weight_scale_2).
        Scheme::ComfyFp8 { .. } | Scheme::ComfyNvfp4 => "comfy",
        Scheme::BflFp8 | Scheme::BflNvfp4 => "bfl",
        // One global `quantization_config`: uint4 with or without SVD, never both.
        Scheme::Sdnq { rank: 0 } => "sdnq:uint4",
        Scheme::Sdnq { .. } => "sdnq:uint4-svd",
    }
}

/// Types a target or rule may name.
pub(crate) const WRITABLE: [GgmlType; 15] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::TQ1_0,
    GgmlType::TQ2_0,
];

/// The named mixes, as written after `gguf:`.
const MIXES: [&str; 3] = ["q3_k_m", "q4_k_m", "q5_k_m"];

fn type_names() -> Vec<String> {
    WRITABLE.iter().map(|t| t.name().to_lowercase()).collect()
}

/// The unknown-name error, with the closest valid name when it is close enough to be a typo.
pub(crate) fn unknown(what: &'static str, given: &str, choices: Vec<String>) -> Error {
    // Underscores are the usual slip (`q4km`, `q8-0`): compare without them first.
    let bare = |s: &str| s.to_ascii_lowercase().replace(['_', '-'], "");
    let lower = given.to_ascii_lowercase();
    let suggestion = choices
        .iter()
        .map(|c| {
            let d = (strsim::levenshtein(&bare(given), &bare(c)), strsim::levenshtein(&lower, c));
            (d, c)
        })
        .filter(|((d, _), c)| *d <= 2 && *d < c.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.clone());
    Error::UnknownType { what, given: given.to_owned(), suggestion, choices: choices.join(" ") }
}

/// Parses a type name a rule may use (`q8_0`, `BF16`, `int4:g128`; case-insensitive).
///
/// # Errors
/// When the name is neither a type nor a scheme lowbit writes.
pub(crate) fn parse_type(name: &str) -> Result<RuleType, Error> {
    if let Some(t) = GgmlType::from_name(name).filter(|t| WRITABLE.contains(t)) {
        return Ok(RuleType::Ggml(t));
    }
    if let Some(s) = Scheme::parse(name) {
        return Ok(RuleType::Scheme(s));
    }
    let mut choices = type_names();
    choices.extend(Scheme::NAMES.map(String::from));
    Err(unknown("tensor type", name, choices))
}

impl Target {
    /// Parses `gguf:TYPE` (the `gguf:` prefix is optional for ggml type names) or a packed
    /// scheme (`ternary`, `int4:g128:asym`, `nf4`, `comfy:fp8`, …).
    ///
    /// # Errors
    /// An unknown format or type.
    pub fn parse(s: &str) -> Result<Target, Error> {
        if let Some(scheme) = Scheme::parse(s) {
            return Ok(Target::Packed(scheme));
        }
        let (format, ty) = s.split_once(':').unwrap_or(("gguf", s));
        if !format.eq_ignore_ascii_case("gguf") {
            if ["ternary", "bitnet", "int4", "nf4", "fp8", "comfy", "bfl"]
                .contains(&format.to_ascii_lowercase().as_str())
            {
                return Err(unknown("target", s, Scheme::NAMES.map(String::from).to_vec()));
            }
            return Err(Error::UnknownFormat { given: s.to_owned(), format: format.to_owned() });
        }
        let mix = match ty.to_ascii_lowercase().as_str() {
            "q3_k_m" => Some((GgmlType::Q3_K, Mix::Q3KM)),
            "q4_k_m" => Some((GgmlType::Q4_K, Mix::Q4KM)),
            "q5_k_m" => Some((GgmlType::Q5_K, Mix::Q5KM)),
            _ => None,
        };
        if let Some((base, mix)) = mix {
            return Ok(Target::Gguf { base, mix: Some(mix) });
        }
        let base = GgmlType::from_name(ty).filter(|t| WRITABLE.contains(t)).ok_or_else(|| {
            let mut choices = type_names();
            choices.extend(MIXES.map(String::from));
            if !s.contains(':') {
                choices.extend(Scheme::NAMES.map(String::from));
            }
            unknown("target type", ty, choices)
        })?;
        Ok(Target::Gguf { base, mix: None })
    }

    /// The GGUF base type (`None` for packed targets).
    #[must_use]
    pub fn ggml(&self) -> Option<GgmlType> {
        match self {
            Target::Gguf { base, .. } => Some(*base),
            Target::Packed(_) => None,
        }
    }

    /// The file extension the output must have.
    #[must_use]
    pub fn extension(&self) -> &'static str {
        match self {
            Target::Gguf { .. } => "gguf",
            Target::Packed(_) => "safetensors",
        }
    }

    /// Resolves a rule's type against this target: GGUF targets take ggml types; packed
    /// targets take dense F32/F16/BF16 or a scheme of the same family (a bare scheme name
    /// takes the target's own options).
    ///
    /// # Errors
    /// A type this target's file cannot hold.
    pub fn resolve(&self, ty: RuleType, given: &str) -> Result<RuleType, Error> {
        let refuse = |why: String| Error::RuleType { given: given.to_owned(), why };
        match (self, ty) {
            (Target::Gguf { .. }, RuleType::Ggml(t)) => Ok(RuleType::Ggml(t)),
            (Target::Gguf { .. }, _) => {
                Err(refuse(format!("the target {} holds ggml types only", self.name())))
            }
            (Target::Packed(_), RuleType::Ggml(t) | RuleType::Dense(t))
                if matches!(t, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) =>
            {
                Ok(RuleType::Dense(t))
            }
            (Target::Packed(_), RuleType::Ggml(_) | RuleType::Dense(_)) => Err(refuse(format!(
                "the target {} holds its own schemes, bf16, f16 or f32",
                self.name()
            ))),
            (Target::Packed(base), RuleType::Scheme(s)) => {
                if family(*base) != family(s) {
                    return Err(refuse(format!(
                        "{s} cannot share a file with {base}: runtimes load one layout per file"
                    )));
                }
                if matches!(base, Scheme::Sdnq { .. }) && *base != s {
                    return Err(refuse(format!(
                        "{s} cannot share a file with {base}: sdnq's quantization_config is one for the whole model"
                    )));
                }
                let bare = !given.contains(':');
                let same_kind = std::mem::discriminant(base) == std::mem::discriminant(&s);
                Ok(RuleType::Scheme(if bare && same_kind { *base } else { s }))
            }
        }
    }

    /// The name as a recipe writes it (`gguf:q4_k_m`, `int4:g64`).
    #[must_use]
    pub fn name(&self) -> String {
        match self {
            Target::Gguf { mix: Some(Mix::Q3KM), .. } => "gguf:q3_k_m".into(),
            Target::Gguf { mix: Some(Mix::Q4KM), .. } => "gguf:q4_k_m".into(),
            Target::Gguf { mix: Some(Mix::Q5KM), .. } => "gguf:q5_k_m".into(),
            Target::Gguf { base, mix: None } => format!("gguf:{}", base.name().to_lowercase()),
            Target::Packed(s) => s.to_string(),
        }
    }

    /// `general.file_type`: llama.cpp's `LLAMA_FTYPE_*` value for this target.
    #[must_use]
    pub fn file_type(&self) -> u32 {
        let Target::Gguf { base, mix } = *self else { return 1024 };
        match (base, mix) {
            (_, Some(Mix::Q3KM)) => 12,
            (_, Some(Mix::Q4KM)) => 15,
            (_, Some(Mix::Q5KM)) => 17,
            (GgmlType::F32, _) => 0,
            (GgmlType::F16, _) => 1,
            (GgmlType::Q4_0, _) => 2,
            (GgmlType::Q4_1, _) => 3,
            (GgmlType::Q8_0, _) => 7,
            (GgmlType::Q5_0, _) => 8,
            (GgmlType::Q5_1, _) => 9,
            (GgmlType::Q2_K, _) => 10,
            (GgmlType::Q3_K, _) => 11,
            (GgmlType::Q4_K, _) => 14,
            (GgmlType::Q5_K, _) => 16,
            (GgmlType::Q6_K, _) => 18,
            (GgmlType::BF16, _) => 32,
            (GgmlType::TQ1_0, _) => 36,
            (GgmlType::TQ2_0, _) => 37,
            _ => 1024,
        }
    }

    /// The mix's choice for a weight, by its BFL name; `None` when the mix leaves it at the base.
    /// ComfyUI-GGUF's patch bumps fused `attn.qkv` weights one step; its other rules (`to_v`,
    /// `ffn_down`) never match BFL FLUX names.
    #[must_use]
    pub fn mix_type(&self, bfl_name: &str) -> Option<GgmlType> {
        if !bfl_name.ends_with("attn.qkv.weight") {
            return None;
        }
        let Target::Gguf { mix, .. } = self else { return None };
        match (*mix)? {
            Mix::Q3KM => Some(GgmlType::Q4_K),
            Mix::Q4KM => Some(GgmlType::Q5_K),
            Mix::Q5KM => Some(GgmlType::Q6_K),
        }
    }
}

/// One `REGEX=TYPE` rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Matched against the whole output tensor name (anchored).
    pub pattern: Regex,
    /// The pattern as written.
    pub source: String,
    /// The type as written.
    pub ty_source: String,
    /// Type for matching tensors (resolved against the target by [`Recipe::build`]).
    pub ty: RuleType,
}

impl Rule {
    /// Parses `REGEX=TYPE`; the regex must match the whole tensor name.
    ///
    /// # Errors
    /// A missing `=`, a bad regex, or an unknown type.
    pub fn parse(s: &str) -> Result<Rule, Error> {
        let (pattern, ty) =
            s.rsplit_once('=').ok_or_else(|| Error::RuleSyntax { rule: s.to_owned() })?;
        Rule::new(pattern, ty)
    }

    pub(crate) fn new(pattern: &str, ty: &str) -> Result<Rule, Error> {
        let re = Regex::new(&format!("^(?:{pattern})$")).map_err(|e| Error::BadRegex {
            pattern: pattern.to_owned(),
            message: regex_message(&e),
        })?;
        Ok(Rule {
            pattern: re,
            source: pattern.to_owned(),
            ty: parse_type(ty)?,
            ty_source: ty.to_owned(),
        })
    }
}

/// The regex crate's explanation on one line: its multi-line report ends with the reason.
fn regex_message(e: &regex::Error) -> String {
    match e {
        regex::Error::Syntax(text) => {
            let last = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or(text).trim();
            last.strip_prefix("error: ").unwrap_or(last).to_owned()
        }
        other => other.to_string().lines().collect::<Vec<_>>().join(" "),
    }
}

/// The presets: name, and a recipe file one can print and edit.
pub const PRESETS: [(&str, &str); 4] = [
    ("flux-ternary", include_str!("../presets/flux-ternary.toml")),
    ("flux-int4", include_str!("../presets/flux-int4.toml")),
    ("flux-nf4", include_str!("../presets/flux-nf4.toml")),
    ("flux-fp8", include_str!("../presets/flux-fp8.toml")),
];

/// A preset's recipe text.
///
/// # Errors
/// An unknown name (with the nearest one).
pub fn preset(name: &str) -> Result<&'static str, Error> {
    PRESETS
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, text)| *text)
        .ok_or_else(|| unknown("preset", name, PRESETS.map(|(n, _)| n.to_owned()).to_vec()))
}

/// Command-line options that refine a packed target's scheme.
#[derive(Debug, Clone, Default)]
pub struct SchemeOptions {
    /// `--scale channel|tensor` (ternary).
    pub scale: Option<lowbit_layout::ScaleGranularity>,
    /// `--group N` (int4).
    pub group: Option<u32>,
    /// `--asym` (int4).
    pub asym: bool,
    /// `--nf4-double-quant`.
    pub double_quant: bool,
    /// `--fp8 e4m3|e5m2` (fp8, comfy:fp8).
    pub fp8: Option<lowbit_layout::Fp8Format>,
    /// `--rank R` (svdq).
    pub rank: Option<u16>,
    /// `--timestep-groups G` (svdq).
    pub timestep_groups: Option<u16>,
}

impl Target {
    /// Applies command-line scheme options.
    ///
    /// # Errors
    /// An option that does not apply to the target, or a group size int4 does not support.
    pub fn with_options(self, o: &SchemeOptions) -> Result<Target, Error> {
        let mismatch =
            |option: &str| Error::OptionMismatch { option: option.to_owned(), target: self.name() };
        let mut t = self;
        if let Some(scale) = o.scale {
            match &mut t {
                Target::Packed(Scheme::Ternary { scale: s }) => *s = scale,
                _ => return Err(mismatch("--scale")),
            }
        }
        if let Some(group) = o.group {
            match &mut t {
                Target::Packed(Scheme::Int4 { group: g, .. }) if [32, 64, 128].contains(&group) => {
                    *g = group;
                }
                Target::Packed(Scheme::Int4 { .. }) => {
                    return Err(mismatch(&format!("--group {group} (32, 64 or 128)")));
                }
                _ => return Err(mismatch("--group")),
            }
        }
        if o.asym {
            match &mut t {
                Target::Packed(Scheme::Int4 { asym, .. }) => *asym = true,
                _ => return Err(mismatch("--asym")),
            }
        }
        if o.double_quant {
            match &mut t {
                Target::Packed(Scheme::Nf4 { double_quant }) => *double_quant = true,
                _ => return Err(mismatch("--nf4-double-quant")),
            }
        }
        if let Some(f) = o.fp8 {
            match &mut t {
                Target::Packed(Scheme::Fp8 { format } | Scheme::ComfyFp8 { format }) => {
                    *format = f;
                }
                _ => return Err(mismatch("--fp8")),
            }
        }
        if let Some(r) = o.rank {
            match &mut t {
                Target::Packed(Scheme::Svdq { rank, .. })
                    if (1..=lowbit_layout::svdq::MAX_RANK).contains(&r) =>
                {
                    *rank = r;
                }
                Target::Packed(Scheme::Svdq { .. }) => {
                    return Err(mismatch(&format!(
                        "--rank {r} (1 to {})",
                        lowbit_layout::svdq::MAX_RANK
                    )));
                }
                _ => return Err(mismatch("--rank")),
            }
        }
        if let Some(g) = o.timestep_groups {
            match &mut t {
                Target::Packed(Scheme::Svdq { groups, .. })
                    if (1..=lowbit_layout::svdq::MAX_GROUPS).contains(&g) =>
                {
                    *groups = g;
                }
                Target::Packed(Scheme::Svdq { .. }) => {
                    return Err(mismatch(&format!(
                        "--timestep-groups {g} (1 to {})",
                        lowbit_layout::svdq::MAX_GROUPS
                    )));
                }
                _ => return Err(mismatch("--timestep-groups")),
            }
        }
        Ok(t)
    }
}

/// Everything that decides the output types.
#[derive(Debug, Clone)]
pub struct Recipe {
    /// Target (for an export, the packed target whose values it re-lays).
    pub target: Target,
    /// The runtime file the target's values are re-laid into, if any.
    pub export: Option<Export>,
    /// Rules in order; the last one that matches a tensor wins.
    pub rules: Vec<Rule>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RecipeFile {
    to: Option<String>,
    #[serde(default)]
    rules: Vec<RuleEntry>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleEntry {
    #[serde(rename = "match")]
    pattern: String,
    #[serde(rename = "type")]
    ty: String,
}

impl Recipe {
    /// Builds a recipe from an optional TOML file (its path, for messages, and its text) and
    /// command-line values. The command line's `--to` replaces the file's `to`; its rules come
    /// after the file's, so they win.
    ///
    /// # Errors
    /// Bad TOML, unknown keys, types or regexes, or no target at all.
    pub fn build(
        file: Option<(&Path, &str)>,
        to: Option<&str>,
        cli_rules: &[String],
    ) -> Result<Recipe, Error> {
        Recipe::build_with(file, to, cli_rules, &SchemeOptions::default())
    }

    /// [`Recipe::build`] with scheme options applied to the target before rules are resolved.
    ///
    /// # Errors
    /// As [`Recipe::build`], and options that do not apply to the target.
    pub fn build_with(
        file: Option<(&Path, &str)>,
        to: Option<&str>,
        cli_rules: &[String],
        options: &SchemeOptions,
    ) -> Result<Recipe, Error> {
        let file: RecipeFile = match file {
            Some((path, text)) => toml::from_str(text).map_err(|e| Error::RecipeFile {
                path: path.to_owned(),
                message: e
                    .to_string()
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .collect::<Vec<_>>()
                    .join(" "),
            })?,
            None => RecipeFile { to: None, rules: Vec::new() },
        };
        let to = to.or(file.to.as_deref()).ok_or(Error::NoTarget)?;
        let export = Export::parse(to)?;
        let target = match export {
            Some(e) => e.base(),
            None => Target::parse(to)?,
        }
        .with_options(options)?;
        let mut rules = Vec::new();
        for r in &file.rules {
            rules.push(Rule::new(&r.pattern, &r.ty)?);
        }
        for r in cli_rules {
            rules.push(Rule::parse(r)?);
        }
        for r in &mut rules {
            let given = r.ty_source.clone();
            r.ty = target.resolve(r.ty, &given)?;
        }
        Ok(Recipe { target, export, rules })
    }

    /// The recipe as TOML, in the format [`Recipe::build`] reads: stored in the output as
    /// `lowbit.recipe` so a file can be reproduced.
    #[must_use]
    pub fn to_toml(&self) -> String {
        let mut s = format!("to = \"{}\"\n", self.target_name());
        for r in &self.rules {
            let _ = write!(
                s,
                "\n[[rules]]\nmatch = {}\ntype = \"{}\"\n",
                toml::Value::String(r.source.clone()),
                r.ty.name()
            );
        }
        s
    }

    /// The target as `--to` writes it: the export's name, or the packed or GGUF target's.
    #[must_use]
    pub fn target_name(&self) -> String {
        self.export.map_or_else(|| self.target.name(), |e| e.name().to_owned())
    }

    /// The last rule matching `name`, with its index.
    #[must_use]
    pub fn rule_for(&self, name: &str) -> Option<(usize, &Rule)> {
        self.rules.iter().enumerate().rev().find(|(_, r)| r.pattern.is_match(name))
    }
}

#[cfg(test)]
mod tests {
    use super::{Mix, Recipe, Rule, RuleType, Target};
    use lowbit_dtype::GgmlType;
    use std::path::Path;

    #[test]
    fn targets() {
        assert_eq!(
            Target::parse("gguf:q8_0").unwrap(),
            Target::Gguf { base: GgmlType::Q8_0, mix: None }
        );
        assert_eq!(
            Target::parse("Q4_K_M").unwrap(),
            Target::Gguf { base: GgmlType::Q4_K, mix: Some(Mix::Q4KM) }
        );
        let e = Target::parse("gguf:q4_2").unwrap_err().to_string();
        assert!(e.contains("q4_k_m") && e.contains("did you mean `q4_0`?"), "{e}");
        let e = Target::parse("gguf:q8-0").unwrap_err().to_string();
        assert!(e.contains("did you mean `q8_0`?"), "{e}");
        let e = Target::parse("gguf:q4km").unwrap_err().to_string();
        assert!(e.contains("did you mean `q4_k_m`?"), "{e}");
        let e = Target::parse("gguf:zzzzzz").unwrap_err().to_string();
        assert!(!e.contains("did you mean"), "nothing is close: {e}");
        assert!(Target::parse("gguf:iq4_xs").is_err(), "types lowbit cannot write are refused");
        assert!(Target::parse("onnx:q8_0").is_err());
        assert_eq!(Target::parse("gguf:q4_k_m").unwrap().file_type(), 15);
        assert_eq!(Target::parse("gguf:bf16").unwrap().file_type(), 32);
    }

    #[test]
    fn mixes_bump_fused_qkv_only() {
        let t = Target::parse("gguf:q4_k_m").unwrap();
        assert_eq!(t.mix_type("double_blocks.3.img_attn.qkv.weight"), Some(GgmlType::Q5_K));
        assert_eq!(t.mix_type("double_blocks.3.img_attn.qkv.bias"), None);
        assert_eq!(t.mix_type("single_blocks.0.linear1.weight"), None);
        assert_eq!(
            Target::parse("gguf:q4_k").unwrap().mix_type("double_blocks.3.img_attn.qkv.weight"),
            None
        );
    }

    #[test]
    fn rules_and_recipe_files() {
        let r = Rule::parse(r"double_blocks\.0\..*=bf16").unwrap();
        assert!(r.pattern.is_match("double_blocks.0.img_attn.qkv.weight"));
        assert!(!r.pattern.is_match("xdouble_blocks.0.img_attn.qkv.weight"), "anchored");
        assert!(Rule::parse("no-equals").is_err());
        assert!(Rule::parse("(=q8_0").is_err());
        assert!(Rule::parse("a=q9_9").is_err());

        let file = "to = \"gguf:q4_k\"\n[[rules]]\nmatch = 'single_blocks\\..*'\ntype = \"q8_0\"\n";
        let path = Path::new("r.toml");
        let recipe =
            Recipe::build(Some((path, file)), None, &["single_blocks\\.0\\..*=q6_k".into()])
                .unwrap();
        assert_eq!(recipe.target.ggml(), Some(GgmlType::Q4_K));
        assert_eq!(
            recipe.rule_for("single_blocks.0.linear1.weight").unwrap().1.ty,
            RuleType::Ggml(GgmlType::Q6_K)
        );
        assert_eq!(
            recipe.rule_for("single_blocks.1.linear1.weight").unwrap().1.ty,
            RuleType::Ggml(GgmlType::Q8_0)
        );
        let again = Recipe::build(Some((path, &recipe.to_toml())), None, &[]).unwrap();
        assert_eq!(again.to_toml(), recipe.to_toml(), "to_toml round-trips");
        let e = Recipe::build(Some((path, "to = 3")), None, &[]).unwrap_err().to_string();
        assert!(e.starts_with("r.toml: ") && !e.contains('\n'), "{e}");
        assert!(Recipe::build(Some((path, "bogus = 1")), None, &[]).is_err());
        assert!(matches!(Recipe::build(None, None, &[]), Err(crate::Error::NoTarget)));
        let e = Rule::parse("(=q8_0").unwrap_err().to_string();
        assert_eq!(e, "bad regex `(` in a tensor type rule: unclosed group");
    }
}
