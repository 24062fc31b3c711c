//! Reading Nunchaku's SVDQuant files (`formats/nunchaku.md`): a Nunchaku single file or a
//! diffusers `nunchaku_lite` weights file is read as the lowbit `svdq-w4a4` file it would have
//! been converted from, so every command reads it as it reads lowbit's own.
//!
//! Opening reads the header only and plans the natural file: its names (BFL for a Nunchaku
//! file, whose single blocks' split layers join again; the lite file's own diffusers names),
//! its tensors, `lowbit.schemes`. Each natural layer is made on first access by the inverse
//! permutations of `lowbit_layout::nunchaku` (`relay/make.rs`) into an unlinked temporary file,
//! as a zstd pack's frames are (`crate::pack`), so `inspect` reads nothing but the header.
//!
//! Biases become what a layer computing with signed activations needs to give Nunchaku's
//! output: the +1 folded into AdaLN's scale chunks is taken out again, and Nunchaku's fc2
//! layers (unsigned activations shifted by 0.171875) get the shift's effect added back.

mod make;

use crate::source::{Scratch, Source};
use crate::{Error, StorageType, Tensor};
use lowbit_arch::nunchaku::{DOUBLE_W4A4, MODULATION, SINGLE_W4A4, to_bfl_block};
use lowbit_dtype::Dtype;
use lowbit_safetensors::{Header, Layout};
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::OnceLock;

/// Which of the two files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavor {
    /// Nunchaku's single file (legacy names, `lora_down`, AdaLN interleaved with +1).
    Nunchaku,
    /// diffusers' `nunchaku_lite` (diffusers names, `proj_down`, AdaLN in natural order).
    Lite,
}

/// Which file it is, from the header: `None` for every other file (lowbit's own natural
/// SVDQuant files carry `lowbit.schemes`).
pub(crate) fn recognise(tensors: &[Tensor], meta: &BTreeMap<String, String>) -> Option<Flavor> {
    if meta.contains_key(crate::layers::SCHEMES_KEY) {
        return None;
    }
    let names: std::collections::HashSet<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
    let has = |m: &str, suffix: &str| names.contains(format!("{m}.{suffix}").as_str());
    tensors.iter().find_map(|t| {
        let m = t.name.strip_suffix(".qweight")?;
        if has(m, "lora_down") {
            Some(Flavor::Nunchaku)
        } else if has(m, "proj_down") && has(m, "smooth_factor") {
            Some(Flavor::Lite)
        } else {
            None
        }
    })
}

/// A stored tensor of the source file: where its bytes are, and its shape.
#[derive(Debug, Clone)]
pub(crate) struct Src {
    pub(crate) at: u64,
    pub(crate) len: u64,
    pub(crate) shape: Vec<u64>,
}

/// One SVDQuant module of the source file.
#[derive(Debug, Clone)]
pub(crate) struct W4a4Src {
    pub(crate) n: usize,
    pub(crate) k: usize,
    pub(crate) rank: usize,
    /// qweight, wscales, smooth, down, up, bias (`None`: zeros).
    pub(crate) qweight: Src,
    pub(crate) wscales: Src,
    pub(crate) smooth: Src,
    pub(crate) down: Src,
    pub(crate) up: Src,
    pub(crate) bias: Option<Src>,
    /// Nunchaku's fc2: unsigned activations shifted by 0.171875.
    pub(crate) shifted: bool,
}

/// The source modules of one natural layer: SVDQuant parts (with their index), or AdaLN's job.
type Modules = (Vec<(usize, W4a4Src)>, Option<Job>);

/// How one natural layer (or dense tensor) is made.
#[derive(Debug, Clone)]
pub(crate) enum Job {
    /// SVDQuant parts stacked along N (`rows`) or side by side along K; `shared`: they share
    /// the factor the join keeps (`make::shared`).
    W4a4 { parts: Vec<W4a4Src>, rows: bool, shared: bool },
    /// TinyChat W4A16 as `int4:g64`; `splits` undoes Nunchaku's interleave and +1.
    Awq {
        qweight: Src,
        wscales: Src,
        wzeros: Src,
        bias: Option<Src>,
        n: usize,
        k: usize,
        splits: Option<usize>,
    },
    /// A dense tensor, its two halves of rows traded when `swap`.
    Dense { src: Src, swap: bool },
}

/// A natural layer: its job and the byte range of its tensors in the natural file.
#[derive(Debug)]
pub(crate) struct Group {
    pub(crate) job: Job,
    pub(crate) what: String,
    pub(crate) range: Range<u64>,
}

/// The natural file of a Nunchaku file: its header, and its layers made on first access.
#[derive(Debug)]
pub(crate) struct Relaid {
    header: Vec<u8>,
    len: u64,
    groups: Vec<Group>,
    scratch: OnceLock<Result<Scratch, String>>,
    ready: Vec<OnceLock<Result<(), String>>>,
}

/// The natural name of a source module, and for a single block's split layer which part.
fn natural_module(flavor: Flavor, m: &str) -> Option<(String, usize)> {
    if flavor == Flavor::Lite {
        return Some((m.to_owned(), 0));
    }
    let (block, double, rest) = to_bfl_block(m)?;
    if let Some((bfl, _, _)) = MODULATION.iter().find(|(_, n, _)| *n == rest) {
        return Some((format!("{block}.{bfl}"), 0));
    }
    if double {
        let (bfl, _) = DOUBLE_W4A4.iter().find(|(_, n)| *n == rest)?;
        return Some((format!("{block}.{bfl}"), 0));
    }
    SINGLE_W4A4.iter().find_map(|(bfl, parts)| {
        let i = parts.iter().position(|p| *p == rest)?;
        Some((format!("{block}.{bfl}"), i))
    })
}

/// The natural (BFL) name of a dense tensor of a Nunchaku file, and whether its halves trade.
fn dense_name(flavor: Flavor, name: &str) -> (String, bool) {
    if flavor == Flavor::Lite {
        return (name.to_owned(), false);
    }
    // Nunchaku's block norms drop diffusers' `attn.` (`transformer_blocks.0.norm_q.weight`).
    let diffusers = ["norm_q", "norm_k", "norm_added_q", "norm_added_k"]
        .iter()
        .find_map(|n| {
            let (block, rest) = name.split_once(&format!(".{n}."))?;
            Some(format!("{block}.attn.{n}.{rest}"))
        })
        .unwrap_or_else(|| name.to_owned());
    match lowbit_arch::flux::diffusers_to_bfl(&diffusers) {
        Some((bfl, 0)) => {
            let swap = lowbit_arch::flux::bfl_to_diffusers(&bfl)
                .is_some_and(|m| m.split == lowbit_arch::flux::Split::SwapHalves);
            (bfl, swap)
        }
        _ => (name.to_owned(), false),
    }
}

impl Relaid {
    /// Plans the natural file of `src` (whose header gave `tensors` and `meta`).
    ///
    /// # Errors
    /// [`Error::Layout`] for a module whose tensors disagree (dtypes, shapes, missing parts).
    pub(crate) fn plan(
        src: &Source,
        flavor: Flavor,
        tensors: &[Tensor],
        meta: &BTreeMap<String, String>,
    ) -> Result<(Relaid, Header), Error> {
        let bad = |tensor: &str, reason: String| Error::Layout {
            path: src.path.clone(),
            tensor: tensor.to_owned(),
            reason,
        };
        let by: HashMap<&str, &Tensor> = tensors.iter().map(|t| (t.name.as_str(), t)).collect();
        let get = |name: &str, dtype: Dtype, shape: &[u64]| -> Result<Src, Error> {
            let t = by.get(name).ok_or_else(|| bad(name, "missing".into()))?;
            if t.ty != StorageType::Dense(dtype) || t.shape != shape {
                return Err(bad(
                    name,
                    format!("{} {:?}, expected {dtype} {shape:?}", t.ty, t.shape),
                ));
            }
            Ok(Src { at: t.offset, len: t.bytes, shape: t.shape.clone() })
        };
        let (smooth_key, down_key, up_key) = match flavor {
            Flavor::Nunchaku => ("smooth", "lora_down", "lora_up"),
            Flavor::Lite => ("smooth_factor", "proj_down", "proj_up"),
        };
        let mut claimed: std::collections::HashSet<String> = std::collections::HashSet::new();
        // Natural layers in the order of their first source module.
        let mut order: Vec<String> = Vec::new();
        let mut layers: HashMap<String, Modules> = HashMap::new();
        for t in tensors {
            let Some(m) = t.name.strip_suffix(".qweight") else { continue };
            let Some((natural, part)) = natural_module(flavor, m) else {
                return Err(bad(&t.name, "not a layer of Nunchaku's FLUX model".into()));
            };
            let bias = |n: u64| -> Result<Option<Src>, Error> {
                let name = format!("{m}.bias");
                if by.contains_key(name.as_str()) {
                    get(&name, Dtype::BF16, &[n]).map(Some)
                } else {
                    Ok(None)
                }
            };
            let entry = layers.entry(natural.clone()).or_insert_with(|| {
                order.push(natural.clone());
                (Vec::new(), None)
            });
            let [d0, d1] = t.shape[..] else {
                return Err(bad(&t.name, format!("shape {:?}, expected two dimensions", t.shape)));
            };
            for s in [
                "qweight",
                "wscales",
                "wzeros",
                "bias",
                smooth_key,
                "smooth_orig",
                down_key,
                up_key,
            ] {
                claimed.insert(format!("{m}.{s}"));
            }
            if t.ty == StorageType::Dense(Dtype::I32) {
                let (n, k) = (d0 * 4, d1 * 2);
                let splits = match flavor {
                    Flavor::Nunchaku => {
                        MODULATION.iter().find(|(_, nm, _)| m.ends_with(nm)).map(|x| x.2)
                    }
                    Flavor::Lite => None,
                };
                let groups = by
                    .get(format!("{m}.wscales").as_str())
                    .map_or(0, |s| s.shape.first().copied().unwrap_or(0));
                if n == 0
                    || k == 0
                    || k % 64 != 0
                    || groups < k / 64
                    || groups > k / 64 + 16
                    || splits.is_some_and(|s| n % s as u64 != 0)
                {
                    return Err(bad(
                        &t.name,
                        format!("TinyChat W4A16 [{n}, {k}] with {groups} group rows"),
                    ));
                }
                let job = Job::Awq {
                    qweight: get(&t.name, Dtype::I32, &[d0, d1])?,
                    wscales: get(&format!("{m}.wscales"), Dtype::BF16, &[groups, n])?,
                    wzeros: get(&format!("{m}.wzeros"), Dtype::BF16, &[groups, n])?,
                    bias: bias(n)?,
                    n: usize::try_from(n).unwrap_or(0),
                    k: usize::try_from(k).unwrap_or(0),
                    splits,
                };
                entry.1 = Some(job);
                continue;
            }
            let (n, k) = (d0, d1 * 2);
            let r = by
                .get(format!("{m}.{down_key}").as_str())
                .and_then(|d| d.shape.get(1).copied())
                .unwrap_or(0);
            if n == 0
                || k == 0
                || n % 128 != 0
                || k % 128 != 0
                || r == 0
                || !r.is_multiple_of(16)
                || r > 1024
            {
                return Err(bad(
                    &t.name,
                    format!(
                        "SVDQuant [{n}, {k}] rank {r}: N and K must be multiples of 128, the rank of 16"
                    ),
                ));
            }
            let extra = ["wtscale", "wcscales"]
                .iter()
                .find(|s| by.contains_key(format!("{m}.{s}").as_str()));
            if let Some(s) = extra {
                return Err(bad(
                    &format!("{m}.{s}"),
                    "NVFP4 Nunchaku files are not a layout lowbit reads; INT4 ones are".into(),
                ));
            }
            let w = W4a4Src {
                n: usize::try_from(n).unwrap_or(0),
                k: usize::try_from(k).unwrap_or(0),
                rank: usize::try_from(r).unwrap_or(0),
                qweight: get(&t.name, Dtype::I8, &[n, k / 2])?,
                wscales: get(&format!("{m}.wscales"), Dtype::BF16, &[k / 64, n])?,
                smooth: get(&format!("{m}.{smooth_key}"), Dtype::BF16, &[k])?,
                down: get(&format!("{m}.{down_key}"), Dtype::BF16, &[k, r])?,
                up: get(&format!("{m}.{up_key}"), Dtype::BF16, &[n, r])?,
                bias: bias(n)?,
                shifted: flavor == Flavor::Nunchaku
                    && (m.ends_with(".mlp_fc2") || m.ends_with(".mlp_context_fc2")),
            };
            entry.0.push((part, w));
        }
        let mut jobs: Vec<(String, Job)> = Vec::new();
        for natural in order {
            let (mut parts, awq) = layers.remove(&natural).unwrap_or_default();
            if let Some(job) = awq {
                jobs.push((natural, job));
                continue;
            }
            parts.sort_by_key(|(i, _)| *i);
            let single = natural.starts_with("single_blocks.") && flavor == Flavor::Nunchaku;
            let rows = natural.ends_with(".linear1");
            if single && (parts.len() != 2 || parts[0].0 != 0 || parts[1].0 != 1) {
                return Err(bad(
                    &natural,
                    "a single block's layer needs both of its Nunchaku parts".into(),
                ));
            }
            let parts: Vec<W4a4Src> = parts.into_iter().map(|(_, w)| w).collect();
            if parts.len() == 2
                && ((rows && parts[0].k != parts[1].k) || (!rows && parts[0].n != parts[1].n))
            {
                return Err(bad(&natural, "its two Nunchaku parts do not fit together".into()));
            }
            let shared = make::shared(src, &parts, rows).map_err(|e| bad(&natural, e))?;
            jobs.push((natural, Job::W4a4 { parts, rows, shared }));
        }
        let mut naming_jobs = Vec::new();
        for t in tensors.iter().filter(|t| !claimed.contains(&t.name)) {
            let (name, swap) = dense_name(flavor, &t.name);
            let src = Src { at: t.offset, len: t.bytes, shape: t.shape.clone() };
            let StorageType::Dense(dtype) = t.ty else { continue };
            naming_jobs.push((name, dtype, Job::Dense { src, swap }));
        }
        make::layout(src, flavor, jobs, naming_jobs, meta)
    }

    /// Assembles the planned file from its header and groups.
    pub(crate) fn new(header: Vec<u8>, len: u64, groups: Vec<Group>) -> Relaid {
        let ready = (0..groups.len()).map(|_| OnceLock::new()).collect();
        Relaid { header, len, groups, scratch: OnceLock::new(), ready }
    }

    /// The temporary file, created (sparse) on first use, with the header written.
    fn scratch(&self) -> Result<&Scratch, String> {
        let made =
            self.scratch.get_or_init(|| Scratch::new(self.len, &self.header, "re-laid tensors"));
        made.as_ref().map_err(Clone::clone)
    }

    /// Makes, once, every layer holding bytes of `offset..offset + len`.
    fn ensure(&self, src: &Source, offset: u64, len: u64) -> Result<&Scratch, String> {
        let scratch = self.scratch()?;
        let end = offset.saturating_add(len);
        let first = self.groups.partition_point(|g| g.range.end <= offset);
        for (i, g) in
            self.groups.iter().enumerate().skip(first).take_while(|(_, g)| g.range.start < end)
        {
            self.ready[i]
                .get_or_init(|| {
                    let bytes = make::produce(&g.job, src)?;
                    scratch.file.write_all_at(&bytes, g.range.start).map_err(|e| e.to_string())
                })
                .as_ref()
                .map_err(|e| format!("{}: {e}", g.what))?;
        }
        Ok(scratch)
    }

    /// Bytes `offset..offset + len` of the natural file; `Ok(None)` when out of range.
    pub(crate) fn slice<'a>(
        &'a self,
        src: &Source,
        offset: u64,
        len: u64,
    ) -> Result<Option<&'a [u8]>, String> {
        if offset.checked_add(len).is_none_or(|end| end > self.len) {
            return Ok(None);
        }
        if len == 0 {
            return Ok(Some(&[]));
        }
        if offset + len <= self.header.len() as u64 {
            #[expect(clippy::cast_possible_truncation, reason = "within the header")]
            return Ok(self.header.get(offset as usize..(offset + len) as usize));
        }
        let scratch = self.ensure(src, offset, len)?;
        Ok(scratch.get(offset, len))
    }

    /// Reads `buf.len()` bytes at `offset` of the natural file.
    pub(crate) fn read_at(&self, src: &Source, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let len = buf.len() as u64;
        match self.slice(src, offset, len).map_err(io::Error::other)? {
            Some(b) => {
                buf.copy_from_slice(b);
                Ok(())
            }
            None => Err(io::ErrorKind::UnexpectedEof.into()),
        }
    }
}

/// Plans a [`Layout`] of natural tensors (name, dtype, shape) with `meta`.
pub(crate) fn natural_layout(
    meta: &[(String, String)],
    tensors: &[(String, Dtype, Vec<u64>)],
) -> Result<Layout, String> {
    Layout::new(meta, tensors.iter().map(|(n, d, s)| (n.as_str(), *d, s.as_slice())))
        .map_err(|e| e.to_string())
}
