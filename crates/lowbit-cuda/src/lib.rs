//! Fused GEMMs for every lowbit layout on CUDA, checked against the CPU reference
//! (`lowbit_layout::gemm`).
//!
//! The kernels are CUDA C++ in `kernels/` (one `.cu` per layout, named after it), embedded in
//! the binary ([`source`]) and compiled at run time by NVRTC for the device's architecture,
//! cached on disk ([`compile`]). The driver, NVRTC and cuBLAS are loaded at run time
//! (cudarc's dynamic loading), so this crate builds and its CPU tests run without CUDA;
//! [`Gpu::open`] then says there is no device.
//!
//! [`kernels_for`] says which kernels serve a stored weight (FP8 has two: W8A16 and W8A8), with
//! each kernel's tolerance; [`Gpu::gemm`] runs one on device buffers; [`cublas`] is the BF16
//! peer the benchmark compares with.
//!
//! **Architecture Invariant:** the CPU reference is the truth. Nothing here decides whether a
//! result is right except by comparing with `lowbit_layout::gemm::reference` on the same bytes.

pub mod compile;
pub mod cublas;
mod device;
mod gemm;
pub mod source;

pub use device::Gpu;
pub use gemm::{
    DeviceWeight, EXACT_TOLERANCE, GemmArgs, Kernel, ROUNDED_TOLERANCE, Scratch, kernels_for,
};

/// What went wrong on the device side.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No usable CUDA device (the reason says which part is missing).
    #[error("no CUDA device: {0}")]
    NoDevice(String),
    /// The NVRTC library is not installed.
    #[error("NVRTC (libnvrtc) is not installed: kernels cannot be compiled")]
    NoNvrtc,
    /// NVRTC rejected a module; `log` is the compiler's output.
    #[error("NVRTC could not compile kernels/{module}.cu for {arch}:\n{log}")]
    Compile {
        /// The module (`int4`).
        module: String,
        /// The target architecture (`sm_90a`).
        arch: String,
        /// NVRTC's log.
        log: String,
    },
    /// Another NVRTC failure.
    #[error("NVRTC: {0}")]
    Nvrtc(String),
    /// A CUDA driver or cuBLAS call failed.
    #[error("CUDA: {0}")]
    Driver(String),
    /// A weight no kernel serves, or a shape the kernel cannot take.
    #[error("{0}")]
    Unsupported(String),
}
