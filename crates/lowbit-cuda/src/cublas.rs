//! cuBLAS BF16 GEMM, called from the same binary as the kernels: the benchmark's peer.
#![allow(unsafe_code, reason = "cuBLAS's C API takes raw device pointers")]

use crate::{Error, Gpu};
use cudarc::cublas::{CudaBlas, result, sys};
use cudarc::driver::CudaSlice;

/// A cuBLAS handle on the GPU's stream.
pub struct Blas(CudaBlas);

impl Blas {
    /// A handle bound to `gpu`'s stream.
    ///
    /// # Errors
    /// cuBLAS missing or failing to start.
    pub fn new(gpu: &Gpu) -> Result<Blas, Error> {
        // SAFETY: only tries to open the shared library.
        if !unsafe { sys::is_culib_present() } {
            return Err(Error::Driver("cuBLAS (libcublas) is not installed".into()));
        }
        CudaBlas::new(gpu.stream().clone())
            .map(Blas)
            .map_err(|e| Error::Driver(format!("cuBLAS: {e:?}")))
    }

    /// `y[m, n] = x[m, k] · w[n, k]ᵀ`, BF16 in and out, f32 accumulation (`CUBLAS_COMPUTE_32F`).
    ///
    /// # Errors
    /// Buffers too small, or cuBLAS failing.
    #[expect(clippy::too_many_arguments, reason = "a GEMM's operands")]
    pub fn gemm_bf16(
        &self,
        gpu: &Gpu,
        x: &CudaSlice<u16>,
        w: &CudaSlice<u16>,
        y: &mut CudaSlice<u16>,
        m: usize,
        n: usize,
        k: usize,
    ) -> Result<(), Error> {
        if x.len() < m * k || w.len() < n * k || y.len() < m * n {
            return Err(Error::Unsupported("cuBLAS buffers too small".into()));
        }
        let int = |v: usize| i32::try_from(v).map_err(|_| Error::Unsupported("too large".into()));
        let (mi, ni, ki) = (int(m)?, int(n)?, int(k)?);
        let (alpha, beta) = (1.0f32, 0.0f32);
        // Column-major: Yᵀ [n × m] = (W [k × n])ᵀ · Xᵀ [k × m].
        // SAFETY: the three buffers are live on this handle's stream and hold at least the
        // elements the shapes address (checked above); alpha and beta are host f32 as
        // CUBLAS_COMPUTE_32F expects.
        unsafe {
            result::gemm_ex(
                *self.0.handle(),
                sys::cublasOperation_t::CUBLAS_OP_T,
                sys::cublasOperation_t::CUBLAS_OP_N,
                ni,
                mi,
                ki,
                (&raw const alpha).cast(),
                gpu.ptr(w) as *const std::ffi::c_void,
                sys::cudaDataType::CUDA_R_16BF,
                ki,
                gpu.ptr(x) as *const std::ffi::c_void,
                sys::cudaDataType::CUDA_R_16BF,
                ki,
                (&raw const beta).cast(),
                gpu.ptr(y) as *mut std::ffi::c_void,
                sys::cudaDataType::CUDA_R_16BF,
                ni,
                sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| Error::Driver(format!("cublasGemmEx: {e:?}")))
    }
}
