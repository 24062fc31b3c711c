//! Fuzzes `Checkpoint::open` on small directories: index files, shards, GGUF files and
//! diffusers-style `transformer/` folders, then reads a little of every tensor it accepts.
//!
//! The input is a tiny archive (see `fuzz/README.md`): one byte choosing what to open (the index
//! file, the directory, or a parent folder whose `transformer/` subfolder holds the files), then
//! records of a name byte, a little-endian `u16` length and that many bytes of content. Names
//! come from a fixed list that includes a path escaping the folder. The files are written to a
//! per-process scratch folder, under `/dev/shm` when it exists, cleared before each run.
//!
//! An accepted checkpoint must let every tensor be read: the first and last bytes with
//! `read_raw_at`, which must equal what `try_raw` borrows (a zstd pack's damaged frame may fail
//! there, with an error), and the first and last few elements with
//! `read_f32` (errors such as an undecodable type are fine; panics are not). Its packed layers
//! (`Checkpoint::layers`) must decode their first and last rows or fail with an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lowbit_checkpoint::{Checkpoint, StorageType};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The file names a record can choose, by its name byte modulo the length.
const NAMES: [&str; 8] = [
    "model.safetensors.index.json",
    "a.safetensors",
    "b.safetensors",
    "c.gguf",
    "../x.safetensors",
    "../a.safetensors",
    "other.safetensors.index.json",
    "d.sft",
];

/// This process's scratch folder; folders left by processes that have exited are removed.
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() { shm.to_owned() } else { std::env::temp_dir() };
        for e in std::fs::read_dir(&base).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("lowbit-fuzz-")
                && !Path::new("/proc").join(pid).exists()
            {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        base.join(format!("lowbit-fuzz-{}", std::process::id()))
    })
}

/// Writes the input's files and returns the path to open.
fn lay_out(data: &[u8]) -> Option<PathBuf> {
    let (&mode, mut rest) = data.split_first()?;
    let root = scratch();
    let _ = std::fs::remove_dir_all(root);
    let model = root.join("m");
    let dir = if mode % 3 == 2 { model.join("transformer") } else { model.clone() };
    std::fs::create_dir_all(&dir).ok()?;
    while let [name, l0, l1, tail @ ..] = rest {
        let len = usize::from(u16::from_le_bytes([*l0, *l1])).min(tail.len());
        std::fs::write(dir.join(NAMES[usize::from(*name) % NAMES.len()]), &tail[..len]).ok()?;
        rest = &tail[len..];
    }
    Some(if mode % 3 == 0 { dir.join(NAMES[0]) } else { model })
}

/// Element ranges to decode: the first and last few whole blocks, as far as the tensor goes.
fn ranges(params: u64, block: u64) -> [std::ops::Range<u64>; 2] {
    let n = params.min(4 * block.max(256)) / block * block;
    let last = (params - n) / block * block;
    [0..n, last..last + n]
}

fuzz_target!(|data: &[u8]| {
    let Some(path) = lay_out(data) else { return };
    let Ok(ckpt) = Checkpoint::open(&path) else { return };
    std::hint::black_box((ckpt.format(), format!("{:?}", ckpt.metadata()), ckpt.files().count()));
    for t in ckpt.tensors() {
        assert!(std::ptr::eq(ckpt.tensor(&t.name).expect("listed tensor is found"), t));
        std::hint::black_box((t.row_len(), t.n_rows(), t.bits_per_weight(), ckpt.file_of(t)));
        // A zstd pack's damaged frame is an error here, not a short slice.
        let Ok(raw) = ckpt.try_raw(t) else { continue };
        assert_eq!(raw.len() as u64, t.bytes, "`{}`", t.name);
        let n = raw.len().min(64);
        let mut buf = vec![0; n];
        for at in [0, raw.len() - n] {
            ckpt.read_raw_at(t, at as u64, &mut buf).expect("in-range raw read");
            assert_eq!(buf, raw[at..at + n], "`{}`: read_raw_at differs from raw", t.name);
        }
        let block = match t.ty {
            StorageType::Ggml(g) => g.block_size() as u64,
            StorageType::Dense(_) => 1,
        };
        for r in ranges(t.params, block) {
            let mut out = vec![0.0; (r.end - r.start) as usize];
            let _ = ckpt.read_f32(t, r, &mut out);
        }
    }
    let Ok(layers) = ckpt.layers() else { return };
    for l in &layers {
        let rows = l.n_rows();
        let len = l.row_len().min(1 << 16);
        if l.row_len() > len {
            continue;
        }
        let mut out = vec![0.0; len as usize];
        for r in [0, rows.saturating_sub(1)] {
            if r < rows {
                let _ = ckpt.read_layer_f32(l, r..r + 1, &mut out);
            }
        }
    }
});
