//! Making each output module of a Nunchaku export from the natural `svdq-w4a4` file
//! (`crate::nunchaku`'s jobs): slicing, the permutations of `lowbit_layout::nunchaku`, the
//! TinyChat interleave and +1 of AdaLN modulation, and the fc2 bias fold.

use super::{AWQ_ZERO, Bias, FC2_SHIFT, Job};
use crate::Error;
use lowbit_dtype::Dtype;
use lowbit_dtype::f16::{bf16_to_fp32, fp32_to_bf16};
use lowbit_layout::nunchaku as nk;
use lowbit_safetensors::TensorEntry;
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The staged natural file: positioned reads of whole tensors.
pub(super) struct Natural {
    file: File,
    data_start: u64,
    index: HashMap<String, TensorEntry>,
    path: std::path::PathBuf,
}

impl Natural {
    pub(super) fn open(path: &Path, out: &Path) -> Result<Natural, Error> {
        let io = |e: io::Error| Error::Io { path: out.to_owned(), source: e };
        let file = File::open(path).map_err(io)?;
        crate::zstd_pack::lock(&file);
        let header = crate::zstd_pack::staged_header(&file, out)?;
        let data_start = header.data_start;
        let index = header.tensors.into_iter().map(|t| (t.name.clone(), t)).collect();
        Ok(Natural { file, data_start, index, path: out.to_owned() })
    }

    fn bytes(&self, name: &str) -> Result<Vec<u8>, Error> {
        let t = self.index.get(name).ok_or_else(|| Error::Layout {
            tensor: name.to_owned(),
            reason: "missing from the natural SVDQuant file lowbit just wrote".into(),
        })?;
        let mut b = vec![0u8; usize::try_from(t.data.end - t.data.start).unwrap_or(0)];
        self.file
            .read_exact_at(&mut b, self.data_start + t.data.start)
            .map_err(|e| Error::Io { path: self.path.clone(), source: e })?;
        Ok(b)
    }

    fn u16s(&self, name: &str) -> Result<Vec<u16>, Error> {
        Ok(self.bytes(name)?.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect())
    }

    /// A dense vector (a bias) as f32, whatever its float dtype.
    fn f32s(&self, name: &str) -> Result<Vec<f32>, Error> {
        let dtype = self.index.get(name).map(|t| t.dtype);
        let b = self.bytes(name)?;
        Ok(match dtype {
            Some(Dtype::F32) => {
                b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
            }
            Some(Dtype::F16) => b
                .chunks_exact(2)
                .map(|c| lowbit_dtype::f16::fp16_to_fp32(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
            _ => {
                b.chunks_exact(2).map(|c| bf16_to_fp32(u16::from_le_bytes([c[0], c[1]]))).collect()
            }
        })
    }
}

fn le16(v: &[u16]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The bytes of every tensor of `job`, in [`specs`] order.
pub(super) fn produce(job: &Job, nat: &Natural, lite: bool) -> Result<Vec<Vec<u8>>, Error> {
    match job {
        Job::W4a4 { src, n, k, rank, parts } => {
            let (n, k, r) = (*n, *k, *rank);
            let codes = nat.bytes(&format!("{src}.qweight"))?;
            let scales = nat.u16s(&format!("{src}.wscales"))?;
            let smooth = nat.u16s(&format!("{src}.smooth_factor"))?;
            let down = nat.u16s(&format!("{src}.proj_down"))?;
            let up = nat.u16s(&format!("{src}.proj_up"))?;
            let bias = nat.f32s(&format!("{src}.bias"))?;
            let mut v = Vec::new();
            for p in parts {
                let (pn, pk) = (p.rows.len(), p.cols.len());
                let mut c = Vec::with_capacity(pn * pk / 2);
                for row in p.rows.clone() {
                    c.extend_from_slice(&codes[row * k / 2 + p.cols.start / 2..][..pk / 2]);
                }
                let mut s = Vec::with_capacity(pk / 64 * pn);
                for g in p.cols.start / 64..p.cols.end / 64 {
                    s.extend_from_slice(&scales[g * n + p.rows.start..g * n + p.rows.end]);
                }
                let sm = &smooth[p.cols.clone()];
                let d = &down[p.cols.start * r..p.cols.end * r];
                let u = &up[p.rows.start * r..p.rows.end * r];
                let b: Vec<u16> = match p.bias {
                    Bias::Source => bias[p.rows.clone()].iter().map(|&x| fp32_to_bf16(x)).collect(),
                    Bias::Zero => vec![0; pn],
                    Bias::Shifted => {
                        // Nunchaku computes R·(x + 0.171875)/λ + (x·down)·upᵀ + bias: with
                        // bias = b − 0.171875·Σ_k R[n, k]/λ_k it computes the natural layer.
                        let lam: Vec<f64> =
                            sm.iter().map(|&x| f64::from(bf16_to_fp32(x))).collect();
                        (0..pn)
                            .map(|i| {
                                let mut rsum = 0f64;
                                for kk in 0..pk {
                                    let byte = c[(i * pk + kk) / 2];
                                    let nib = if kk % 2 == 0 { byte & 15 } else { byte >> 4 };
                                    let code = f64::from(((nib << 4) as i8) >> 4);
                                    let scale = f64::from(bf16_to_fp32(s[(kk / 64) * pn + i]));
                                    rsum += code * scale / lam[kk];
                                }
                                let row = p.rows.start + i;
                                #[expect(
                                    clippy::cast_possible_truncation,
                                    reason = "rounded to the stored BF16"
                                )]
                                fp32_to_bf16((f64::from(bias[row]) - FC2_SHIFT * rsum) as f32)
                            })
                            .collect()
                    }
                };
                let packed_smooth = le16(&nk::pack_vector(sm));
                v.push(nk::pack_qweight(&c, pn, pk));
                v.push(le16(&nk::pack_wscales(&s, pk / 64, pn)));
                v.push(le16(&nk::pack_vector(&b)));
                if !lite {
                    v.push(packed_smooth.clone());
                }
                v.push(packed_smooth);
                v.push(le16(&nk::pack_down(d, pk, r)));
                v.push(le16(&nk::pack_up(u, pn, r)));
            }
            Ok(v)
        }
        Job::Awq { src, n, k, splits, .. } => {
            let (n, k) = (*n, *k);
            let codes = nat.bytes(&format!("{src}.weight"))?;
            let scales = nat.u16s(&format!("{src}.weight_scale"))?;
            let bias = nat.f32s(&format!("{src}.bias"))?;
            let s = splits.unwrap_or(1);
            // New row i·S + j is old row j·(N/S) + i.
            let old = |new: usize| (new % s) * (n / s) + new / s;
            let mut c = Vec::with_capacity(codes.len());
            for row in 0..n {
                c.extend_from_slice(&codes[old(row) * k / 2..][..k / 2]);
            }
            let groups = k / 64;
            let mut ws = Vec::with_capacity(groups * n);
            let mut wz = Vec::with_capacity(groups * n);
            for g in 0..groups {
                for col in 0..n {
                    let sc = scales[g * n + old(col)];
                    ws.push(sc);
                    // 7·s is exact in f32; one rounding to BF16, then the (exact) negation.
                    wz.push(fp32_to_bf16(7.0 * bf16_to_fp32(sc)) ^ 0x8000);
                }
            }
            let b: Vec<u16> = (0..n)
                .map(|row| {
                    let x = bias[old(row)];
                    let j = row % s;
                    let plus = splits.is_some() && (j == 1 || j == s - 2);
                    fp32_to_bf16(if plus { bf16_to_fp32(fp32_to_bf16(x)) + 1.0 } else { x })
                })
                .collect();
            Ok(vec![nk::awq_pack(&c, n, k, AWQ_ZERO), le16(&ws), le16(&wz), le16(&b)])
        }
        Job::Dense { src, swap, .. } => {
            let b = nat.bytes(src)?;
            if !swap {
                return Ok(vec![b]);
            }
            let half = b.len() / 2;
            Ok(vec![[&b[half..], &b[..half]].concat()])
        }
    }
}
