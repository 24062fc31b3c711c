//! `cargo xtask gpu-data --out DIR [--seed N]`: `DIR/odd.safetensors`, a small BF16 checkpoint
//! whose weights have the shapes that reach the GEMM kernels' edges, for `lowbit validate` on a
//! GPU.
//!
//! Every N is off the 64-row tile, every K a multiple of 64 but not of 128 (so a 128-wide K
//! tile or a group of 128 has a remainder), except `odd.d`'s K = 768 = 3·256, which GGUF's
//! K-quants (256-element blocks) accept. Values are realistic and non-zero
//! (`lowbit_fixtures::realistic`, through `flux_dev`'s writer), a function of the seed (and of
//! the CPU's `matrixmultiply` kernel, as `realistic` says).

use anyhow::{Context, bail};
use std::path::PathBuf;

/// The checkpoint's file name.
pub(crate) const FILE: &str = "odd.safetensors";
/// Default seed.
const SEED: u64 = 1_580_000_002;

/// The weights: name stem, `[N, K]`, and whether it has a bias.
const WEIGHTS: [(&str, [u64; 2], bool); 4] = [
    ("odd.a", [200, 192], true),
    ("odd.b", [72, 320], false),
    ("odd.c", [136, 4160], true),
    ("odd.d", [264, 768], false),
];

/// The file's tensors in order: each weight followed by its bias, if any.
pub(crate) fn tensors() -> Vec<(String, Vec<u64>)> {
    let mut out = Vec::new();
    for (stem, [n, k], bias) in WEIGHTS {
        out.push((format!("{stem}.weight"), vec![n, k]));
        if bias {
            out.push((format!("{stem}.bias"), vec![n]));
        }
    }
    out
}

/// `cargo xtask gpu-data --out DIR [--seed N]`.
pub(crate) fn run(args: &[&str]) -> anyhow::Result<()> {
    const USAGE: &str = "usage: cargo xtask gpu-data --out DIR [--seed N]";
    let (mut out, mut seed) = (None, SEED);
    let mut it = args.iter();
    while let Some(&a) = it.next() {
        let mut value = || it.next().copied().with_context(|| format!("{a} needs a value"));
        match a {
            "--out" => out = Some(PathBuf::from(value()?)),
            "--seed" => seed = value()?.parse().context("--seed")?,
            _ => bail!("unknown argument {a}; {USAGE}"),
        }
    }
    let out = out.with_context(|| format!("--out DIR is required; {USAGE}"))?;
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let path = out.join(FILE);
    let tensors = tensors();
    let layout = crate::flux_dev::bf16_layout(&tensors)?;
    crate::flux_dev::write_bf16(&tensors, seed, &layout, &path, None)?;
    println!(
        "wrote {} ({} bytes, seed {seed}):",
        path.display(),
        layout.header.len() as u64 + layout.data_len
    );
    for (name, shape) in &tensors {
        println!("  {name:<14} BF16 {shape:?}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{FILE, tensors};
    use crate::flux_dev::{bf16_layout, write_bf16};

    fn write(dir: &std::path::Path, seed: u64) -> Vec<u8> {
        let path = dir.join(FILE);
        let t = tensors();
        write_bf16(&t, seed, &bf16_layout(&t).unwrap(), &path, None).unwrap();
        std::fs::read(path).unwrap()
    }

    #[test]
    fn odd_file_has_its_shapes_and_depends_on_the_seed_only() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (write(dir.path(), 7), write(dir.path(), 7), write(dir.path(), 8));
        assert_eq!(a, b);
        assert_ne!(a, c);
        let st = safetensors::SafeTensors::deserialize(&a).unwrap();
        for (name, shape) in tensors() {
            let t = st.tensor(&name).unwrap();
            assert_eq!(t.dtype(), safetensors::Dtype::BF16, "{name}");
            let shape: Vec<usize> = shape.iter().map(|&d| usize::try_from(d).unwrap()).collect();
            assert_eq!(t.shape(), shape.as_slice(), "{name}");
            let zeros = t.data().chunks_exact(2).filter(|b| b[0] == 0 && b[1] & 0x7f == 0).count();
            assert!(zeros * 100 < t.data().len() / 2, "{name}: {zeros} zeros");
            if let [n, k] = shape[..] {
                assert!(n % 64 != 0 && k % 64 == 0, "{name}");
                assert!(k % 128 != 0 || k % 256 == 0, "{name}");
            }
        }
        assert_eq!(st.len(), tensors().len());
    }
}
