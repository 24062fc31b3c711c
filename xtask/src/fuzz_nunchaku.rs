//! Seeds for `checkpoint_open` in Nunchaku's layouts (`formats/nunchaku.md`): small files that
//! `Checkpoint::open` reads through its relay (`lowbit-checkpoint/src/relay.rs`), each under the
//! fuzz input's 64 KiB file limit: a Nunchaku single file (an fc2 with its shifted bias, a single
//! block's `qkv_proj` and `mlp_fc1` to join, AdaLN in TinyChat's layout with its zero points)
//! and a `nunchaku_lite` file (one module). Values are arbitrary but valid, so the happy path is
//! the seed and the fuzzer's mutations find the error paths.

use lowbit_dtype::Dtype;
use lowbit_dtype::f16::{bf16_to_fp32, fp32_to_bf16};
use lowbit_safetensors::Layout;

/// A tensor: name, dtype, shape, bytes.
type T = (String, Dtype, Vec<u64>, Vec<u8>);

/// `len` bytes of the one seeded generator's stream.
fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = lowbit_fixtures::rng::Rng::new(seed);
    (0..len).map(|_| (rng.next_u64() >> 56) as u8).collect()
}

/// `len` BF16 values in [0.5, 1): valid scales, smoothing factors and factors.
fn bf16s(len: usize, seed: u64) -> Vec<u8> {
    bytes(len, seed).iter().flat_map(|b| (0x3F00u16 | u16::from(*b & 0x7F)).to_le_bytes()).collect()
}

/// One SVDQuant module `[n, k]` of rank 16 under `m`, `lite` naming its tensors diffusers' way.
fn w4a4(m: &str, n: u64, k: u64, lite: bool, seed: u64) -> Vec<T> {
    let (smooth, down, up) = if lite {
        ("smooth_factor", "proj_down", "proj_up")
    } else {
        ("smooth", "lora_down", "lora_up")
    };
    let u = |v: u64| usize::try_from(v).unwrap_or(0);
    let mut v = vec![
        (format!("{m}.qweight"), Dtype::I8, vec![n, k / 2], bytes(u(n * k / 2), seed)),
        (format!("{m}.wscales"), Dtype::BF16, vec![k / 64, n], bf16s(u(k / 64 * n), seed + 1)),
        (format!("{m}.bias"), Dtype::BF16, vec![n], bf16s(u(n), seed + 2)),
        // One smoothing for every module: a single block's two parts share their input's.
        (format!("{m}.{smooth}"), Dtype::BF16, vec![k], bf16s(u(k), 3)),
        (format!("{m}.{down}"), Dtype::BF16, vec![k, 16], bf16s(u(k * 16), seed + 4)),
        (format!("{m}.{up}"), Dtype::BF16, vec![n, 16], bf16s(u(n * 16), seed + 5)),
    ];
    if !lite {
        v.push((format!("{m}.smooth_orig"), Dtype::BF16, vec![k], bf16s(u(k), 3)));
    }
    v
}

/// TinyChat W4A16 AdaLN `[n, k]` under `m`: codes 0..14, zero points −bf16(7·scale).
fn awq(m: &str, n: u64, k: u64) -> Vec<T> {
    let u = |v: u64| usize::try_from(v).unwrap_or(0);
    let codes: Vec<u8> = bytes(u(n * k / 2), 9).iter().map(|b| (b & 0x77) | 0x11).collect();
    let scales = bf16s(u(k / 64 * n), 10);
    let zeros: Vec<u8> = scales
        .chunks_exact(2)
        .flat_map(|c| {
            let s = bf16_to_fp32(u16::from_le_bytes([c[0], c[1]]));
            (fp32_to_bf16(7.0 * s) ^ 0x8000).to_le_bytes()
        })
        .collect();
    vec![
        (format!("{m}.qweight"), Dtype::I32, vec![n / 4, k / 2], codes),
        (format!("{m}.wscales"), Dtype::BF16, vec![k / 64, n], scales),
        (format!("{m}.wzeros"), Dtype::BF16, vec![k / 64, n], zeros),
        (format!("{m}.bias"), Dtype::BF16, vec![n], bf16s(u(n), 11)),
    ]
}

fn file(tensors: &[T]) -> anyhow::Result<Vec<u8>> {
    let meta = [("format".to_owned(), "pt".to_owned())];
    let layout =
        Layout::new(&meta, tensors.iter().map(|(n, d, s, _)| (n.as_str(), *d, s.as_slice())))?;
    let mut out = layout.header;
    for t in tensors {
        out.extend_from_slice(&t.3);
    }
    Ok(out)
}

/// (name, bytes) of each seed file.
pub(crate) fn seeds() -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut single = w4a4("transformer_blocks.0.mlp_fc2", 128, 128, false, 1);
    single.extend(w4a4("single_transformer_blocks.0.qkv_proj", 128, 128, false, 20));
    single.extend(w4a4("single_transformer_blocks.0.mlp_fc1", 128, 128, false, 40));
    single.extend(awq("transformer_blocks.0.norm1.linear", 24, 64));
    single.push(("x_embedder.weight".into(), Dtype::BF16, vec![4, 4], bf16s(16, 60)));
    let lite = w4a4("transformer_blocks.0.attn.to_q", 128, 128, true, 70);
    Ok(vec![
        ("nunchaku.safetensors".into(), file(&single)?),
        ("nunchaku-lite.safetensors".into(), file(&lite)?),
    ])
}

#[cfg(test)]
mod tests {
    /// The seeds take the happy path: they open, and every layer decodes, with the single
    /// block's two parts joined into one `linear1`.
    #[test]
    fn seeds_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        for (name, bytes) in super::seeds().unwrap() {
            assert!(bytes.len() < 65_536, "{name}: {} bytes", bytes.len());
            let p = dir.path().join(&name);
            std::fs::write(&p, &bytes).unwrap();
            let c = lowbit_checkpoint::Checkpoint::open(&p).unwrap();
            let layers = c.layers().unwrap();
            for l in &layers {
                let mut out = vec![0f32; usize::try_from(l.params()).unwrap()];
                c.read_layer_f32(l, 0..l.n_rows(), &mut out).unwrap();
                assert!(out.iter().all(|v| v.is_finite()), "{name}: {}", l.name);
            }
            if name == "nunchaku.safetensors" {
                assert!(layers.iter().any(|l| l.name == "single_blocks.0.linear1.weight"));
            }
        }
    }
}
