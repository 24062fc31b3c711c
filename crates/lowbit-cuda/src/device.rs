//! The GPU: context, stream, modules compiled for its architecture, buffers, timing.
#![allow(unsafe_code, reason = "the CUDA driver API: raw device pointers and kernel launches")]

use crate::{Error, compile};
use cudarc::driver::sys::{self, CUdevice_attribute as Attr};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr, DeviceRepr,
    LaunchConfig, PushKernelArg, ValidAsZeroBits,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// One CUDA device (the first), with one stream.
pub struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    arch: String,
    name: String,
    sms: u32,
    modules: Mutex<HashMap<String, Arc<CudaModule>>>,
}

fn driver(what: &str) -> impl Fn(cudarc::driver::DriverError) -> Error + '_ {
    move |e| Error::Driver(format!("{what}: {e}"))
}

impl Gpu {
    /// Opens device 0, or says why there is none (no driver library, no device).
    ///
    /// # Errors
    /// [`Error::NoDevice`] with the reason; [`Error::Driver`] when the device fails to start.
    pub fn open() -> Result<Gpu, Error> {
        // SAFETY: only tries to open the shared library.
        if !unsafe { sys::is_culib_present() } {
            return Err(Error::NoDevice(
                "the CUDA driver library (libcuda) is not installed".into(),
            ));
        }
        cudarc::driver::result::init()
            .map_err(|e| Error::NoDevice(format!("the CUDA driver did not start: {e}")))?;
        let count = cudarc::driver::result::device::get_count()
            .map_err(|e| Error::NoDevice(format!("cannot count devices: {e}")))?;
        if count < 1 {
            return Err(Error::NoDevice("the driver reports no device".into()));
        }
        let ctx = CudaContext::new(0).map_err(driver("creating a context on device 0"))?;
        // One stream, used in order: the per-buffer events cudarc would record are not needed.
        // SAFETY: every buffer of this context is used on `stream` only.
        unsafe { ctx.disable_event_tracking() };
        let attr = |a| ctx.attribute(a).map_err(driver("reading a device attribute"));
        let (major, minor) = (
            attr(Attr::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?,
            attr(Attr::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?,
        );
        let sms = u32::try_from(attr(Attr::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?).unwrap_or(1);
        let name = ctx.name().map_err(driver("reading the device name"))?;
        let stream = ctx.default_stream();
        Ok(Gpu {
            ctx,
            stream,
            arch: arch_name(major, minor),
            name,
            sms,
            modules: Mutex::new(HashMap::new()),
        })
    }

    /// The NVRTC architecture kernels are compiled for (`sm_90a` on Hopper).
    #[must_use]
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// The device's name (`NVIDIA H200`).
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of multiprocessors.
    #[must_use]
    pub fn sms(&self) -> u32 {
        self.sms
    }

    /// The stream every operation runs on.
    #[must_use]
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Loads (compiling or from the cache) `module` and returns its kernel `kernel`.
    ///
    /// # Errors
    /// Compilation ([`Error::Compile`] carries NVRTC's log) or loading.
    pub fn function(&self, module: &str, kernel: &str) -> Result<CudaFunction, Error> {
        let loaded = {
            let mut modules =
                self.modules.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(m) = modules.get(module) {
                m.clone()
            } else {
                let (cubin, _) = compile::cubin(module, &self.arch)?;
                let m = self
                    .ctx
                    .load_module(cudarc::nvrtc::Ptx::from_binary(cubin))
                    .map_err(driver("loading a compiled module"))?;
                modules.insert(module.to_owned(), m.clone());
                m
            }
        };
        loaded
            .load_function(kernel)
            .map_err(|e| Error::Driver(format!("module `{module}` has no kernel `{kernel}`: {e}")))
    }

    /// Copies `data` to a new device buffer.
    ///
    /// # Errors
    /// Out of device memory, or a driver error.
    pub fn upload<T: DeviceRepr>(&self, data: &[T]) -> Result<CudaSlice<T>, Error> {
        self.stream.clone_htod(data).map_err(driver("copying to the device"))
    }

    /// A zeroed device buffer of `len` elements.
    ///
    /// # Errors
    /// Out of device memory, or a driver error.
    pub fn zeros<T: DeviceRepr + ValidAsZeroBits>(
        &self,
        len: usize,
    ) -> Result<CudaSlice<T>, Error> {
        self.stream.alloc_zeros(len.max(1)).map_err(driver("allocating device memory"))
    }

    /// Fills a buffer's bytes with `byte` (0xFF poisons BF16 outputs with NaN).
    ///
    /// # Errors
    /// A driver error.
    pub fn fill<T: DeviceRepr>(&self, buf: &mut CudaSlice<T>, byte: u8) -> Result<(), Error> {
        let bytes = buf.len() * size_of::<T>();
        let ptr = self.ptr(buf);
        // SAFETY: `ptr` is the start of `buf`, which holds `bytes` bytes.
        unsafe {
            cudarc::driver::result::memset_d8_async(ptr, byte, bytes, self.stream.cu_stream())
        }
        .map_err(driver("filling device memory"))
    }

    /// Copies a device buffer back.
    ///
    /// # Errors
    /// A driver error (a kernel that faulted reports here).
    pub fn download<T: DeviceRepr + Default + Clone>(
        &self,
        buf: &CudaSlice<T>,
    ) -> Result<Vec<T>, Error> {
        self.stream.clone_dtoh(buf).map_err(driver("copying from the device"))
    }

    /// Waits for everything queued.
    ///
    /// # Errors
    /// A driver error, such as a kernel fault.
    pub fn sync(&self) -> Result<(), Error> {
        self.stream.synchronize().map_err(driver("waiting for the device"))
    }

    /// A buffer's device address (event tracking is off: no guard to keep).
    pub(crate) fn ptr<T>(&self, buf: &CudaSlice<T>) -> u64 {
        let (p, _guard) = buf.device_ptr(&self.stream);
        p
    }

    /// Launches `f` with one by-value argument block.
    pub(crate) fn launch<A: DeviceRepr>(
        &self,
        f: &CudaFunction,
        grid: (u32, u32, u32),
        block: u32,
        args: &A,
    ) -> Result<(), Error> {
        let cfg = LaunchConfig { grid_dim: grid, block_dim: (block, 1, 1), shared_mem_bytes: 0 };
        let mut b = self.stream.launch_builder(f);
        b.arg(args);
        // SAFETY: every kernel of kernels/ takes exactly one `GemmArgs` by value, whose pointers
        // the callers in this crate fill from live buffers of this context sized for M, N, K.
        unsafe { b.launch(cfg) }.map_err(driver("launching a kernel"))?;
        Ok(())
    }

    /// Milliseconds `f` takes on the device: `warmup` runs, then the median of `reps` timed
    /// runs (device events around each).
    ///
    /// # Errors
    /// Whatever `f` or the events report.
    pub fn time(
        &self,
        warmup: usize,
        reps: usize,
        mut f: impl FnMut() -> Result<(), Error>,
    ) -> Result<f64, Error> {
        for _ in 0..warmup {
            f()?;
        }
        let timing = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
        let mut times = Vec::with_capacity(reps);
        for _ in 0..reps.max(1) {
            let start = self.ctx.new_event(timing).map_err(driver("creating an event"))?;
            let end = self.ctx.new_event(timing).map_err(driver("creating an event"))?;
            start.record(&self.stream).map_err(driver("recording an event"))?;
            f()?;
            end.record(&self.stream).map_err(driver("recording an event"))?;
            end.synchronize().map_err(driver("waiting for an event"))?;
            times.push(f64::from(start.elapsed_ms(&end).map_err(driver("reading an event"))?));
        }
        times.sort_by(f64::total_cmp);
        Ok(times[times.len() / 2])
    }
}

/// NVRTC's name for a compute capability: the architecture-specific `a` variant on Hopper
/// (`sm_90a`), the plain one elsewhere.
fn arch_name(major: i32, minor: i32) -> String {
    if (major, minor) == (9, 0) { "sm_90a".into() } else { format!("sm_{major}{minor}") }
}

#[cfg(test)]
mod tests {
    #[test]
    fn arch_names() {
        assert_eq!(super::arch_name(9, 0), "sm_90a");
        assert_eq!(super::arch_name(8, 6), "sm_86");
    }
}
