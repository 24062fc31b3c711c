//! `lowbit convert --compress zstd` (`formats/zstd.md`): packs that the `zstandard` package
//! decompresses to exactly the plain file the same conversion writes, and parses frame by frame
//! from the spec; every command reading a pack as it reads the plain file (and a pack written by
//! `zstandard`, not by lowbit); the same bytes for any thread count; and each refusal with its
//! message and exit code: targets that write no single safetensors file, truncated packs,
//! crafted seek tables, frames that disagree with the header, damaged frame data.

use crate::support::{convert_ok, inspect_json, lowbit, run_python, safetensors_entries};
use serde_json::Value;
use std::path::{Path, PathBuf};

const FIXTURE: &str = "fixtures/flux-tiny-bfl.safetensors";
/// The targets the tests pack: each layout family, and BFL's FP8 with its per-row scales.
const TARGETS: [&str; 5] = ["int4", "ternary", "nf4", "fp8", "bfl:fp8"];

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// The fixture converted to `target` into `dir`, plain and packed: (plain, pack).
fn both(dir: &Path, target: &str) -> (PathBuf, PathBuf) {
    let stem = target.replace(':', "-");
    let plain = dir.join(format!("{stem}.safetensors"));
    let pack = dir.join(format!("{stem}.safetensors.zst"));
    convert_ok(Path::new(FIXTURE), &plain, &["--to", target]);
    convert_ok(Path::new(FIXTURE), &pack, &["--to", target, "--compress", "zstd"]);
    (plain, pack)
}

/// Runs `lowbit ARGS`, expects exit code `code`, returns stderr.
fn fails(args: &[&str], code: i32) -> String {
    let o = lowbit(args);
    let e = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(code), "{args:?}: {e}");
    assert_eq!(e.lines().count(), 1, "one line: {e}");
    e
}

/// `value` without the keys that name the file read (and, for a pack, its own sizes).
fn without_paths(mut value: Value) -> Value {
    if let Some(o) = value.as_object_mut() {
        for k in ["path", "files", "format", "zstd", "a", "file"] {
            o.remove(k);
        }
    }
    value
}

fn json_of(args: &[&str]) -> Value {
    let o = lowbit(args);
    assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("JSON")
}

/// The tensors of a safetensors file: name → (dtype, shape, bytes).
fn tensor_bytes(path: &Path) -> Vec<(String, String, Vec<u64>, Vec<u8>)> {
    let data = std::fs::read(path).unwrap();
    safetensors_entries(path)
        .into_iter()
        .map(|(name, e)| {
            let bytes = data[e.bytes.start as usize..e.bytes.end as usize].to_vec();
            (name, e.dtype, e.shape, bytes)
        })
        .collect()
}

#[test]
fn zstandard_restores_the_plain_file_frame_by_frame() {
    let dir = tempfile::tempdir().unwrap();
    for target in TARGETS {
        let (plain, pack) = both(dir.path(), target);
        let out = run_python("zstd_pack.py", &[Path::new("check"), &pack, &plain]);
        let v: Value = serde_json::from_str(&out).unwrap();
        let tensors = safetensors_entries(&plain).len() as u64;
        assert_eq!(v["tensors"], tensors, "{target}: {v}");
        assert_eq!(v["frames"], tensors + 1, "{target}: {v}");
        assert_eq!(v["checksummed_frames"], tensors + 1, "every frame checks its content: {v}");
        let plain_len = std::fs::metadata(&plain).unwrap().len();
        assert_eq!(v["plain_bytes"], plain_len);
        let pack_len = std::fs::metadata(&pack).unwrap().len();
        assert!(pack_len < plain_len, "{target}: {pack_len} ≥ {plain_len}");
        // The temporary plain file is gone.
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
    }
}

#[test]
fn every_command_reads_a_pack_as_the_plain_file() {
    let dir = tempfile::tempdir().unwrap();
    for target in TARGETS {
        let (plain, pack) = both(dir.path(), target);
        let (p, z) = (s(&plain), s(&pack));

        let packed = inspect_json(&pack);
        assert_eq!(packed["format"], "safetensors-zstd");
        let info = &packed["zstd"];
        assert_eq!(info["compressed_bytes"], std::fs::metadata(&pack).unwrap().len());
        assert_eq!(info["raw_bytes"], std::fs::metadata(&plain).unwrap().len());
        assert_eq!(info["frames"], packed["stored_tensors"].as_u64().unwrap() + 1);
        assert_eq!(without_paths(packed), without_paths(inspect_json(&plain)), "{target}");

        let (dq_plain, dq_pack) =
            (dir.path().join("dq-plain.safetensors"), dir.path().join("dq-pack.safetensors"));
        for (input, out) in [(p, &dq_plain), (z, &dq_pack)] {
            let o = lowbit(&["dequantize", input, "-o", s(out), "--dtype", "f32"]);
            assert!(o.status.success(), "{target}: {}", String::from_utf8_lossy(&o.stderr));
        }
        assert_eq!(tensor_bytes(&dq_pack), tensor_bytes(&dq_plain), "{target}");

        let diff = |a: &str| without_paths(json_of(&["diff", a, FIXTURE, "--json"]));
        assert_eq!(diff(z), diff(p), "{target}");

        let validate = |f: &str| {
            let args = ["validate", f, "--device", "cpu", "--reference", FIXTURE, "--json"];
            without_paths(json_of(&args))
        };
        let checks = validate(z);
        assert!(checks["checks"].as_array().is_some_and(|c| !c.is_empty()), "{checks}");
        assert_eq!(checks, validate(p), "{target}");
    }
}

#[test]
fn a_pack_written_by_zstandard_reads_and_converts_as_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let pack = dir.path().join("flux-tiny-bfl.safetensors.zst");
    let fixture = crate::support::root().join(FIXTURE);
    run_python("zstd_pack.py", &[Path::new("write"), &fixture, &pack]);
    assert_eq!(without_paths(inspect_json(&pack)), without_paths(inspect_json(Path::new(FIXTURE))));
    let (a, b) = (dir.path().join("a.gguf"), dir.path().join("b.gguf"));
    convert_ok(&pack, &a, &["--to", "gguf:q8_0"]);
    convert_ok(Path::new(FIXTURE), &b, &["--to", "gguf:q8_0"]);
    // The files differ only in `lowbit.source` (the input's name): compare every tensor.
    let (fa, fb) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    let (ga, gb) = (lowbit_gguf::Gguf::parse(&fa).unwrap(), lowbit_gguf::Gguf::parse(&fb).unwrap());
    assert_eq!(ga.tensors().len(), 52);
    for (ta, tb) in ga.tensors().iter().zip(gb.tensors()) {
        assert_eq!((&ta.name, ta.ty, &ta.dims), (&tb.name, tb.ty, &tb.dims));
        let at = |g: &lowbit_gguf::Gguf<'_>, f: &[u8], t: &lowbit_gguf::TensorInfo| {
            let start = (g.data_start() + t.offset) as usize;
            f[start..start + t.size as usize].to_vec()
        };
        assert_eq!(at(&ga, &fa, ta), at(&gb, &fb, tb), "{}", ta.name);
    }
    // And back to a pack: lowbit's writer on a pack input.
    let repack = dir.path().join("re.safetensors.zst");
    convert_ok(&pack, &repack, &["--to", "int4", "--compress", "zstd:3"]);
    assert_eq!(inspect_json(&repack)["zstd"]["frames"], 66);
}

#[test]
fn the_same_bytes_for_any_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    // Leftovers of killed runs for the first output: its temporary pack, and the temporary
    // plain file and that file's own temporary file. The next run removes them.
    let leftovers = [
        ".t1.safetensors.zst.lowbit-dead01.partial",
        "..t1.safetensors.zst.lowbit-dead02.partial.lowbit-dead03.partial",
    ];
    for l in leftovers {
        std::fs::write(dir.path().join(l), b"x").unwrap();
    }
    let mut packs = Vec::new();
    for threads in ["1", "2"] {
        let out = dir.path().join(format!("t{threads}.safetensors.zst"));
        let args = ["--to", "ternary", "--compress", "zstd", "--threads", threads];
        convert_ok(Path::new(FIXTURE), &out, &args);
        packs.push(std::fs::read(&out).unwrap());
    }
    assert_eq!(packs[0], packs[1]);
    for l in leftovers {
        assert!(!dir.path().join(l).exists(), "{l} is removed");
    }
    // Another level: other bytes, the same file inside.
    let fast = dir.path().join("fast.safetensors.zst");
    convert_ok(Path::new(FIXTURE), &fast, &["--to", "ternary", "--compress", "zstd:1"]);
    assert_ne!(std::fs::read(&fast).unwrap(), packs[0]);
    let a = zstd::stream::decode_all(&packs[0][..]).unwrap();
    assert_eq!(zstd::stream::decode_all(&std::fs::read(&fast).unwrap()[..]).unwrap(), a);
}

#[test]
fn what_cannot_be_packed_is_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.safetensors.zst");
    let o = s(&out);
    for dry in [false, true] {
        let with = |extra: &[&'static str]| -> Vec<&str> {
            let mut v = vec!["convert", FIXTURE, "-o", o];
            v.extend_from_slice(extra);
            if dry {
                v.push("--dry-run");
            }
            v
        };
        let e = fails(&with(&["--to", "gguf:q4_k_m", "--compress", "zstd"]), 2);
        assert!(e.contains("--compress zstd: zstd packs hold safetensors files, and the target gguf:q4_k_m writes GGUF"), "{e}");
        let e = fails(&with(&["--to", "nf4", "--names", "diffusers", "--compress", "zstd"]), 2);
        assert!(e.contains("diffusers model folder"), "{e}");
        let e = fails(&with(&["--to", "int4", "--compress", "gzip"]), 2);
        assert!(e.contains("--compress gzip: the one method is zstd"), "{e}");
        let e = fails(&with(&["--to", "int4", "--compress", "zstd:23"]), 2);
        assert!(e.contains("LEVEL is a zstd level from 1 to 22"), "{e}");
        let plain_name = dir.path().join("x.safetensors");
        let mut args = with(&["--to", "int4", "--compress", "zstd"]);
        args[3] = s(&plain_name);
        let e = fails(&args, 2);
        assert!(e.contains("does not end in .safetensors.zst"), "{e}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing written");
    // A dry run says what it plans.
    let o =
        lowbit(&["convert", FIXTURE, "-o", o, "--to", "int4", "--compress", "zstd", "--dry-run"]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("zstd pack at level 3"));
}

/// The seek table of a pack: (offset of the table, [(compressed, raw)]).
fn seek_table(pack: &[u8]) -> (usize, Vec<(u32, u32)>) {
    let u32_at = |at: usize| u32::from_le_bytes(pack[at..at + 4].try_into().unwrap());
    let n = u32_at(pack.len() - 9) as usize;
    let start = pack.len() - 9 - 8 * n - 8;
    (start, (0..n).map(|i| (u32_at(start + 8 + 8 * i), u32_at(start + 12 + 8 * i))).collect())
}

#[test]
fn damaged_packs_are_refused_naming_the_file_and_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let (_, pack) = both(dir.path(), "int4");
    let bytes = std::fs::read(&pack).unwrap();
    let (table, frames) = seek_table(&bytes);
    let damaged = |name: &str, f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = bytes.clone();
        f(&mut b);
        let p = dir.path().join(name);
        std::fs::write(&p, b).unwrap();
        p
    };
    let all_fail = |p: &Path, code: i32, want: &str| {
        let out = dir.path().join("out.safetensors");
        for args in [
            vec!["inspect", s(p)],
            vec!["dequantize", s(p), "-o", s(&out)],
            vec!["diff", s(p), FIXTURE],
            vec!["validate", s(p), "--device", "cpu"],
        ] {
            let e = fails(&args, code);
            assert!(e.starts_with(&format!("error: {}: ", p.display())), "{e}");
            assert!(e.contains(want), "{args:?}: {e}");
        }
    };

    let truncated = damaged("truncated.safetensors.zst", &|b| b.truncate(b.len() / 2));
    all_fail(
        &truncated,
        1,
        "without a seek table at its end: not a lowbit zstd pack, or one cut short",
    );

    let count = damaged("count.safetensors.zst", &|b| {
        let at = b.len() - 9;
        b[at..at + 4].copy_from_slice(&0x4000_0000u32.to_le_bytes());
    });
    all_fail(&count, 1, "the seek table lists 1073741824 frames");

    // Frame 1 (`img_in.bias`, 512 bytes) one byte longer and frame 2 one shorter in the table:
    // the frames still tile the file, but disagree with the header.
    let sizes = damaged("sizes.safetensors.zst", &|b| {
        for (i, delta) in [(1usize, 1i64), (2, -1)] {
            let at = table + 8 + 8 * i + 4;
            let v = i64::from(frames[i].1) + delta;
            b[at..at + 4].copy_from_slice(&u32::try_from(v).unwrap().to_le_bytes());
        }
    });
    all_fail(
        &sizes,
        1,
        "tensor `img_in.bias`: frame 1 decompresses to 513 bytes but the header gives the tensor 512",
    );

    // A byte flipped inside the frame of a quantized weight: found when its data is read.
    let names: Vec<String> = {
        let mut t: Vec<_> =
            safetensors_entries(&dir.path().join("int4.safetensors")).into_iter().collect();
        t.sort_by_key(|(_, e)| e.bytes.start);
        t.into_iter().map(|(n, _)| n).collect()
    };
    let i = 1 + names.iter().position(|n| n == "double_blocks.0.img_attn.qkv.weight").unwrap();
    let at: usize =
        frames[..i].iter().map(|f| f.0 as usize).sum::<usize>() + frames[i].0 as usize / 2;
    let flipped = damaged("flipped.safetensors.zst", &|b| b[at] ^= 0x55);
    assert!(lowbit(&["inspect", s(&flipped)]).status.success(), "inspect reads headers only");
    let out = dir.path().join("out.safetensors");
    for args in [
        vec!["dequantize", s(&flipped), "-o", s(&out)],
        vec!["diff", s(&flipped), FIXTURE],
        vec!["validate", s(&flipped), "--device", "cpu"],
    ] {
        let e = fails(&args, 1);
        assert!(
            e.contains("tensor `double_blocks.0.img_attn.qkv.weight`: zstd frame"),
            "{args:?}: {e}"
        );
        assert!(e.contains("damaged zstd data"), "{args:?}: {e}");
    }
    assert!(!out.exists());
}

#[test]
fn no_room_for_the_decompressed_tensors_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let pack = dir.path().join("t.safetensors.zst");
    convert_ok(Path::new(FIXTURE), &pack, &["--to", "ternary", "--compress", "zstd"]);
    let out = dir.path().join("d.safetensors");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_lowbit"))
        .args(["dequantize", s(&pack), "-o", s(&out)])
        .env("TMPDIR", dir.path().join("missing"))
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains("cannot make a temporary file in"), "{e}");
    assert!(e.contains("set TMPDIR to a folder with room"), "{e}");
    assert!(!out.exists());
}

#[test]
fn a_tensor_too_large_for_one_frame_is_refused_before_any_weight_is_read() {
    // A sparse 8.6 GB BF16 file (headers only on disk) whose one weight is 4.3 GB in FP8.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("big.safetensors");
    let (n, k) = (65_536u64, 65_537u64);
    let json = format!(
        r#"{{"big.weight":{{"dtype":"BF16","shape":[{n},{k}],"data_offsets":[0,{}]}}}}"#,
        2 * n * k
    );
    let mut head = (json.len() as u64).to_le_bytes().to_vec();
    head.extend_from_slice(json.as_bytes());
    std::fs::write(&input, &head).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&input).unwrap();
    f.set_len(head.len() as u64 + 2 * n * k).unwrap();
    let out = dir.path().join("big.safetensors.zst");
    for dry in [true, false] {
        let mut args =
            vec!["convert", s(&input), "-o", s(&out), "--to", "fp8", "--compress", "zstd"];
        if dry {
            args.push("--dry-run");
        }
        let e = fails(&args, 1);
        assert!(
            e.contains("tensor `big.weight` is 4295032832 bytes; a zstd pack holds each tensor in one frame of at most 4294967295 bytes"),
            "{e}"
        );
    }
    assert!(!out.exists());
}
