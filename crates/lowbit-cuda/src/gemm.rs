//! Which kernels serve a stored weight, and running them: `Y = X · Wᵀ (+ bias)` on the device.
#![allow(unsafe_code, reason = "GemmArgs crosses to the device as a plain C struct")]

use crate::{Error, Gpu};
use cudarc::driver::{CudaSlice, DeviceRepr};
use lowbit_dtype::{Dtype, GgmlType};
use lowbit_layout::gemm::{Activation, Weight};
use lowbit_layout::{Fp8Format, ScaleGranularity, Scheme};

/// The argument block every kernel of `kernels/` takes by value: `struct GemmArgs` of
/// `kernels/common.cuh`, field for field (device addresses as `u64`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct GemmArgs {
    /// `[M, K]` BF16 activations (or the prepared codes).
    pub x: u64,
    /// `[M, N]` BF16 output (or a preparation kernel's scratch).
    pub y: u64,
    /// The stored tensors, in `Scheme::stored` order.
    pub w: [u64; 6],
    /// `[N]` BF16 bias, or 0.
    pub bias: u64,
    /// `[M, R]` f32 low-rank down-projection of X, or 0.
    pub lora: u64,
    /// `[N, R]` BF16 up-projection, or 0.
    pub up: u64,
    /// Activation scales (per token or per token group), or 0.
    pub ascale: u64,
    /// A preparation step's partial results, or 0.
    pub scratch: u64,
    /// Tokens.
    pub m: i32,
    /// Output channels.
    pub n: i32,
    /// Input channels.
    pub k: i32,
    /// Rank of the low-rank branch.
    pub r: i32,
    /// The layout's group size, where a kernel reads it.
    pub group: i32,
    /// Layout options, where a kernel reads them.
    pub flags: i32,
    /// A layout scalar (NF4's nested offset).
    pub alpha: f32,
    /// Padding to a multiple of 8 bytes.
    pub pad: i32,
}

const _: () = assert!(size_of::<GemmArgs>() == 136);

// SAFETY: `#[repr(C)]`, only integers and floats, the same layout as the C struct (asserted
// size; fields in the same order with the same widths).
unsafe impl DeviceRepr for GemmArgs {}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Path {
    /// A weight-only GEMM of `gemm_a16.cuh`.
    A16 { module: &'static str, kernel: &'static str },
    /// FP8 activations per token, FP8 tensor cores.
    W8A8 { kernel: &'static str },
    /// SVDQuant: preparation, then the int8 tensor-core GEMM (W4A4) or `int4_g64` (W4A16).
    Svdq { act4: bool, rank: u16 },
}

/// One kernel for one stored weight.
#[derive(Debug, Clone, PartialEq)]
pub struct Kernel {
    /// What runs (`int4_g64 W4A16`), for tables.
    pub label: String,
    /// How the CPU reference treats the activations for this kernel.
    pub activation: Activation,
    /// Largest relative error against the BF16-rounded reference that passes
    /// (`formats/gemm.md`).
    pub tolerance: f64,
    /// Whether every operand reaches the tensor cores unrounded (else the weight or the
    /// smoothed activation is rounded to BF16 first).
    pub exact: bool,
    /// Lowest compute capability (80 = sm_80).
    pub min_arch: u32,
    path: Path,
    alpha: f32,
}

/// Tolerance of kernels whose operands are exact: only f32 summation order and the BF16
/// output's rounding differ from the reference.
pub const EXACT_TOLERANCE: f64 = 1e-3;
/// Tolerance of kernels that round an operand to BF16 (relative 2⁻⁹ per element).
pub const ROUNDED_TOLERANCE: f64 = 1e-2;

fn a16(module: &'static str, kernel: &'static str, exact: bool) -> Kernel {
    Kernel {
        label: format!("{kernel} W·A16"),
        activation: Activation::Bf16,
        tolerance: if exact { EXACT_TOLERANCE } else { ROUNDED_TOLERANCE },
        exact,
        min_arch: 80,
        path: Path::A16 { module, kernel },
        alpha: 0.0,
    }
}

fn w8a8(kernel: &'static str) -> Kernel {
    Kernel {
        label: format!("{kernel} W8A8"),
        activation: Activation::Fp8PerToken,
        tolerance: EXACT_TOLERANCE,
        exact: true,
        min_arch: 89,
        path: Path::W8A8 { kernel },
        alpha: 0.0,
    }
}

/// The kernels that serve `w` (`[n, k]`): one, or two for FP8 (W8A16 and W8A8).
///
/// # Errors
/// [`Error::Unsupported`] for a storage no kernel reads or a shape the kernels cannot take.
pub fn kernels_for(w: &Weight<'_>, n: u64, k: u64) -> Result<Vec<Kernel>, Error> {
    let unsupported = |why: String| Err(Error::Unsupported(why));
    if n == 0 || k == 0 || n > i32::MAX as u64 || k > i32::MAX as u64 {
        return unsupported(format!("shape [{n}, {k}] is outside what the kernels index"));
    }
    if !k.is_multiple_of(8) {
        return unsupported(format!("K = {k} is not a multiple of 8, which the GPU kernels need"));
    }
    // `exact`: false for ComfyUI, whose decoder rounds q · scale to BF16 (`formats/fp8.md`):
    // the weight-only kernel rounds the same way, and W8A8, which keeps the scale out of the
    // product, differs from that rounded weight by up to 2⁻⁹ per element.
    let fp8 = |format: Fp8Format, plain: [&'static str; 2], q: [&'static str; 2], exact: bool| {
        let i = usize::from(format == Fp8Format::E5M2);
        let mut v = vec![a16("fp8", plain[i], exact)];
        if k.is_multiple_of(16) {
            let mut w = w8a8(q[i]);
            if !exact {
                w.exact = false;
                w.tolerance = ROUNDED_TOLERANCE;
            }
            v.push(w);
        }
        v
    };
    let plain_fp8 = |f| fp8(f, ["fp8_e4m3", "fp8_e5m2"], ["w8a8_e4m3", "w8a8_e5m2"], true);
    let need = |multiple: u64, what: &str| {
        if k.is_multiple_of(multiple) {
            Ok(())
        } else {
            Err(Error::Unsupported(format!("{what} needs K a multiple of {multiple}, not {k}")))
        }
    };
    Ok(match w {
        Weight::Packed { scheme, stored } => match *scheme {
            Scheme::Ternary { scale: ScaleGranularity::Channel } => {
                vec![a16("ternary", "ternary_channel", true)]
            }
            Scheme::Ternary { scale: ScaleGranularity::Tensor } => {
                vec![a16("ternary", "ternary_tensor", true)]
            }
            Scheme::Bitnet => vec![a16("bitnet", "bitnet", true)],
            Scheme::Int4 { group, asym } => {
                need(u64::from(group), "int4")?;
                let kernel = match (group, asym) {
                    (32, false) => "int4_g32",
                    (64, false) => "int4_g64",
                    (128, false) => "int4_g128",
                    (32, true) => "int4_g32_asym",
                    (64, true) => "int4_g64_asym",
                    (128, true) => "int4_g128_asym",
                    _ => return unsupported(format!("int4 group {group} has no kernel")),
                };
                vec![a16("int4", kernel, !asym)]
            }
            Scheme::Nf4 { double_quant } => {
                let json = stored.last().copied().unwrap_or_default();
                let offset = lowbit_layout::nf4::parse_state(json, n, k, double_quant)
                    .map_err(|e| Error::Unsupported(format!("nf4 quant state: {e}")))?;
                let mut kern = a16("nf4", if double_quant { "nf4_dq" } else { "nf4" }, false);
                kern.alpha = offset;
                vec![kern]
            }
            Scheme::Fp8 { format } => plain_fp8(format),
            Scheme::ComfyFp8 { format } => fp8(
                format,
                ["comfy_fp8_e4m3", "comfy_fp8_e5m2"],
                ["w8a8_comfy_e4m3", "w8a8_comfy_e5m2"],
                false,
            ),
            Scheme::BflFp8 => fp8(Fp8Format::E4M3, ["bfl_fp8"; 2], ["w8a8_bfl"; 2], true),
            Scheme::ComfyNvfp4 | Scheme::BflNvfp4 => {
                return unsupported("NVFP4 has no kernel yet".into());
            }
            Scheme::Sdnq { .. } => return unsupported("SDNQ has no kernel yet".into()),
            Scheme::Svdq { act4, rank, .. } => {
                need(64, "SVDQuant")?;
                vec![Kernel {
                    label: if act4 { "svdq_w4a4 W4A4" } else { "svdq int4_g64 W4A16" }.into(),
                    activation: Activation::Bf16,
                    tolerance: if act4 { EXACT_TOLERANCE } else { ROUNDED_TOLERANCE },
                    exact: act4,
                    min_arch: 80,
                    path: Path::Svdq { act4, rank },
                    alpha: 0.0,
                }]
            }
        },
        Weight::Ggml { ty, .. } => match ty {
            GgmlType::Q8_0 => vec![a16("gguf", "q8_0", true)],
            GgmlType::Q4_0 => vec![a16("gguf", "q4_0", true)],
            GgmlType::Q6_K => vec![a16("gguf", "q6_k", true)],
            GgmlType::TQ2_0 => vec![a16("gguf", "tq2_0", true)],
            GgmlType::Q4_K => vec![a16("gguf", "q4_k", false)],
            other => return unsupported(format!("GGUF {other} has no kernel yet")),
        },
        Weight::Dense { dtype: Dtype::F8E4M3, .. } => plain_fp8(Fp8Format::E4M3),
        Weight::Dense { dtype: Dtype::F8E5M2, .. } => plain_fp8(Fp8Format::E5M2),
        Weight::Dense { dtype, .. } => {
            return unsupported(format!("dense {dtype}: nothing quantized to check"));
        }
    })
}

/// A weight's stored tensors on the device (timestep group 0 of an SVDQuant layer).
pub struct DeviceWeight {
    tensors: Vec<CudaSlice<u8>>,
    n: u64,
    k: u64,
}

impl DeviceWeight {
    /// Copies `w` (`[n, k]`) to the device.
    ///
    /// # Errors
    /// Out of device memory; more stored tensors than kernels take.
    pub fn upload(gpu: &Gpu, w: &Weight<'_>, n: u64, k: u64) -> Result<DeviceWeight, Error> {
        let parts: Vec<&[u8]> = match w {
            Weight::Packed { scheme: Scheme::Svdq { groups, .. }, stored } => {
                let g = usize::from((*groups).max(1));
                stored.iter().map(|b| &b[..b.len() / g]).collect()
            }
            Weight::Packed { stored, .. } => stored.to_vec(),
            Weight::Ggml { bytes, .. } | Weight::Dense { bytes, .. } => vec![bytes],
        };
        if parts.len() > 6 {
            return Err(Error::Unsupported(format!(
                "{} stored tensors; kernels take 6",
                parts.len()
            )));
        }
        let tensors = parts
            .iter()
            .map(|b| if b.is_empty() { gpu.zeros(1) } else { gpu.upload(b) })
            .collect::<Result<_, _>>()?;
        Ok(DeviceWeight { tensors, n, k })
    }
}

/// Device memory a kernel's preparation step writes (activation codes, their scales, the
/// low-rank down-projection), sized for `m` tokens.
pub struct Scratch {
    codes: CudaSlice<u8>,
    ascale: CudaSlice<f32>,
    lora: CudaSlice<f32>,
    /// Per-chunk partial sums of the low-rank down-projection.
    partial: CudaSlice<f32>,
}

/// Channels per partial sum of SVDQuant's down-projection (`SVDQ_LORA_K` in `kernels/svdq.cu`).
const LORA_CHUNK: usize = 256;

impl Scratch {
    /// Scratch for `m` tokens of `k` channels and rank `r`.
    ///
    /// # Errors
    /// Out of device memory.
    pub fn new(gpu: &Gpu, m: usize, k: usize, r: usize) -> Result<Scratch, Error> {
        Ok(Scratch {
            codes: gpu.zeros(m * k * 2)?,
            ascale: gpu.zeros(m * k.div_ceil(64).max(1))?,
            lora: gpu.zeros(m * r.max(1))?,
            partial: gpu.zeros(m * k.div_ceil(LORA_CHUNK) * r.max(1))?,
        })
    }
}

/// Up to this many tokens, weight-only layouts run their `_gemv` kernel
/// (`LOWBIT_GEMV_TOKENS` in `kernels/gemm_a16.cuh`).
const GEMV_TOKENS: usize = 16;

fn dims(v: u64) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

impl Gpu {
    /// `y[m, n] = x[m, k] · Wᵀ (+ bias)` through `kernel`; queued on the stream (call
    /// [`Gpu::sync`] or download `y` to wait).
    ///
    /// # Errors
    /// Buffers too small for `m`, compilation, launch.
    #[expect(clippy::too_many_arguments, reason = "a GEMM's operands")]
    pub fn gemm(
        &self,
        kernel: &Kernel,
        w: &DeviceWeight,
        x: &CudaSlice<u16>,
        m: usize,
        bias: Option<&CudaSlice<u16>>,
        y: &mut CudaSlice<u16>,
        scratch: &mut Scratch,
    ) -> Result<(), Error> {
        let (n, k) = (w.n as usize, w.k as usize);
        if m == 0 || x.len() < m * k || y.len() < m * n || bias.is_some_and(|b| b.len() < n) {
            return Err(Error::Unsupported(format!(
                "buffers too small for a [{m}, {k}] × [{n}, {k}]ᵀ product"
            )));
        }
        let mut args = GemmArgs {
            x: self.ptr(x),
            y: self.ptr(y),
            bias: bias.map_or(0, |b| self.ptr(b)),
            m: dims(m as u64),
            n: dims(w.n),
            k: dims(w.k),
            alpha: kernel.alpha,
            ..GemmArgs::default()
        };
        for (slot, t) in args.w.iter_mut().zip(&w.tensors) {
            *slot = self.ptr(t);
        }
        // Block tiles: 64 tokens × 64 outputs (4 warps) for the weight-only and W8A8 GEMMs,
        // 64 × 128 (8 warps, two pipeline stages) for SVDQuant's W4A4. (The weight-only GEMM
        // in the W4A4 kernel's shape measured 15–20 % slower on the H200: see kernels/README.md.)
        let tiles = (n.div_ceil(64) as u32, m.div_ceil(64) as u32, 1);
        let tiles_w4a4 = (n.div_ceil(128) as u32, m.div_ceil(64) as u32, 1);
        let rows = (m as u32, 1, 1);
        // Weight-only products: few tokens stream the weight once without tensor cores.
        let a16 = |module: &str, kernel: &str, args: &GemmArgs| {
            if m <= GEMV_TOKENS {
                let grid = (n.div_ceil(8) as u32, m.div_ceil(GEMV_TOKENS) as u32, 1);
                self.launch(&self.function(module, &format!("{kernel}_gemv"))?, grid, 256, args)
            } else {
                self.launch(&self.function(module, kernel)?, tiles, 128, args)
            }
        };
        match kernel.path {
            Path::A16 { module, kernel } => a16(module, kernel, &args)?,
            Path::W8A8 { kernel } => {
                let mut prep = args;
                prep.y = self.ptr(&scratch.codes);
                prep.ascale = self.ptr(&scratch.ascale);
                self.launch(&self.function("fp8", "fp8_act_quant")?, rows, 256, &prep)?;
                args.x = prep.y;
                args.ascale = prep.ascale;
                self.launch(&self.function("fp8", kernel)?, tiles, 128, &args)?;
            }
            Path::Svdq { act4, rank } => {
                let r = usize::from(rank);
                let chunks = k.div_ceil(LORA_CHUNK);
                if scratch.lora.len() < m * r
                    || scratch.codes.len() < m * k * 2
                    || scratch.partial.len() < m * chunks * r
                {
                    return Err(Error::Unsupported("scratch too small for this layer".into()));
                }
                let mut prep = args;
                prep.r = i32::from(rank);
                prep.y = self.ptr(&scratch.codes);
                prep.ascale = self.ptr(&scratch.ascale);
                prep.lora = self.ptr(&scratch.lora);
                prep.scratch = self.ptr(&scratch.partial);
                let which = if act4 { "svdq_prep_w4a4" } else { "svdq_prep_w4a16" };
                self.launch(&self.function("svdq", which)?, rows, 256, &prep)?;
                let split = (chunks as u32, m as u32, 1);
                self.launch(&self.function("svdq", "svdq_lora_partial")?, split, 256, &prep)?;
                self.launch(&self.function("svdq", "svdq_lora_reduce")?, rows, 128, &prep)?;
                args.x = prep.y;
                args.ascale = prep.ascale;
                args.lora = prep.lora;
                args.r = prep.r;
                if act4 {
                    self.launch(&self.function("svdq", "svdq_w4a4")?, tiles_w4a4, 256, &args)?;
                } else {
                    args.up = args.w[4];
                    a16("int4", "int4_g64", &args)?;
                }
            }
        }
        Ok(())
    }
}

impl Kernel {
    /// The rank of the kernel's low-rank branch (0 without one), for sizing [`Scratch`].
    #[must_use]
    pub fn rank(&self) -> usize {
        match self.path {
            Path::Svdq { rank, .. } => usize::from(rank),
            _ => 0,
        }
    }
}
