//! FLUX.1 names in Nunchaku's single-file SVDQuant checkpoints (`formats/nunchaku.md`): blocks
//! are `transformer_blocks.N` / `single_transformer_blocks.N` with Nunchaku's own layer names
//! (deepcompressor's `backend/nunchaku/convert.py`), and tensors outside the blocks carry
//! diffusers' names ([`crate::flux`]).

/// A double block's SVDQuant layers: (BFL module, Nunchaku module).
pub const DOUBLE_W4A4: [(&str, &str); 8] = [
    ("img_attn.qkv", "qkv_proj"),
    ("txt_attn.qkv", "qkv_proj_context"),
    ("img_attn.proj", "out_proj"),
    ("txt_attn.proj", "out_proj_context"),
    ("img_mlp.0", "mlp_fc1"),
    ("img_mlp.2", "mlp_fc2"),
    ("txt_mlp.0", "mlp_context_fc1"),
    ("txt_mlp.2", "mlp_context_fc2"),
];

/// A single block's SVDQuant layers: `linear1` is `qkv_proj` (the first 3·hidden rows) and
/// `mlp_fc1` (the rest); `linear2` is `out_proj` (the first hidden columns) and `mlp_fc2`.
pub const SINGLE_W4A4: [(&str, [&str; 2]); 2] =
    [("linear1", ["qkv_proj", "mlp_fc1"]), ("linear2", ["out_proj", "mlp_fc2"])];

/// The AdaLN modulation linears: (BFL module, Nunchaku module, modulation chunks).
pub const MODULATION: [(&str, &str, usize); 3] = [
    ("img_mod.lin", "norm1.linear", 6),
    ("txt_mod.lin", "norm1_context.linear", 6),
    ("modulation.lin", "norm.linear", 3),
];

/// The block prefixes: (BFL, Nunchaku, double).
const BLOCKS: [(&str, &str, bool); 2] = [
    ("double_blocks.", "transformer_blocks.", true),
    ("single_blocks.", "single_transformer_blocks.", false),
];

/// Splits `prefix.N.rest` for one of the [`BLOCKS`] prefixes on side `from` (0 BFL, 1 Nunchaku):
/// (the other side's `prefix.N`, double, rest).
fn convert_block(module: &str, from: usize) -> Option<(String, bool, &str)> {
    for b in BLOCKS {
        let (src, dst) = if from == 0 { (b.0, b.1) } else { (b.1, b.0) };
        if let Some(rest) = module.strip_prefix(src) {
            let (n, rest) = rest.split_once('.')?;
            n.parse::<u32>().ok()?;
            return Some((format!("{dst}{n}"), b.2, rest));
        }
    }
    None
}

/// `double_blocks.N.rest` → (`transformer_blocks.N`, true, `rest`); single blocks likewise.
#[must_use]
pub fn from_bfl_block(module: &str) -> Option<(String, bool, &str)> {
    convert_block(module, 0)
}

/// `transformer_blocks.N.rest` → (`double_blocks.N`, true, `rest`); single blocks likewise.
#[must_use]
pub fn to_bfl_block(module: &str) -> Option<(String, bool, &str)> {
    convert_block(module, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_map_both_ways() {
        let (b, double, rest) = from_bfl_block("double_blocks.12.img_attn.qkv").unwrap();
        assert_eq!((b.as_str(), double, rest), ("transformer_blocks.12", true, "img_attn.qkv"));
        let (b, double, rest) = to_bfl_block("single_transformer_blocks.3.mlp_fc2").unwrap();
        assert_eq!((b.as_str(), double, rest), ("single_blocks.3", false, "mlp_fc2"));
        assert!(from_bfl_block("double_blocks.x.img_mod.lin").is_none());
        assert!(to_bfl_block("x_embedder").is_none());
    }
}
