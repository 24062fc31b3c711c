//! Run-time compilation: NVRTC turns a module of `kernels/` into a CUBIN for one architecture,
//! cached on disk by (module, architecture, hash of the expanded source, options and NVRTC
//! version), so a second run loads it in microseconds. NVRTC is loaded at run time; without it
//! every function here returns [`Error::NoNvrtc`].
#![allow(unsafe_code, reason = "NVRTC's C API: program handles and output buffers")]

use crate::{Error, source};
use cudarc::nvrtc::{result, sys};
use sha2::{Digest, Sha256};
use std::ffi::{CStr, CString, c_char};
use std::path::PathBuf;

/// Options every module is compiled with (besides the architecture). IEEE division and square
/// root (NVRTC's defaults) are relied on by the activation quantizers; `-lineinfo` keeps source
/// lines for profilers.
const OPTIONS: [&str; 2] = ["-std=c++17", "-lineinfo"];

/// The architectures CI compiles every module for; the device's own comes from
/// [`crate::Gpu::arch`].
pub const CHECKED_ARCHS: [&str; 4] = ["sm_80", "sm_86", "sm_89", "sm_90a"];

/// Whether the NVRTC library can be loaded.
#[must_use]
pub fn nvrtc_available() -> bool {
    // SAFETY: only tries to open the shared library; nothing is called.
    unsafe { sys::is_culib_present() }
}

/// NVRTC's version, `(major, minor)`.
///
/// # Errors
/// [`Error::NoNvrtc`].
pub fn nvrtc_version() -> Result<(i32, i32), Error> {
    if !nvrtc_available() {
        return Err(Error::NoNvrtc);
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: two valid out-pointers.
    let rc = unsafe { sys::nvrtcVersion(&raw mut major, &raw mut minor) };
    rc.result().map_err(|e| Error::Nvrtc(format!("nvrtcVersion: {e:?}")))?;
    Ok((major, minor))
}

/// Compiles `module` for `arch` (`sm_90a`) to a CUBIN, without the cache.
///
/// # Errors
/// [`Error::NoNvrtc`], an unknown module, or [`Error::Compile`] with NVRTC's log.
pub fn compile(module: &str, arch: &str) -> Result<Vec<u8>, Error> {
    let src = source::expanded(module).map_err(Error::Nvrtc)?;
    compile_source(module, src, arch)
}

/// Compiles one self-contained source (`module` names it in errors).
fn compile_source(module: &str, src: String, arch: &str) -> Result<Vec<u8>, Error> {
    if !nvrtc_available() {
        return Err(Error::NoNvrtc);
    }
    let c_src = CString::new(src).map_err(|_| Error::Nvrtc(format!("`{module}` holds a NUL")))?;
    let c_name = CString::new(format!("{module}.cu")).unwrap_or_default();
    let prog = result::create_program(&c_src, Some(&c_name))
        .map_err(|e| Error::Nvrtc(format!("nvrtcCreateProgram: {e:?}")))?;
    let mut options: Vec<String> = OPTIONS.iter().map(|s| (*s).to_owned()).collect();
    options.push(format!("--gpu-architecture={arch}"));
    // SAFETY: `prog` was created above and is destroyed once, below; `c_src` outlives it.
    let compiled = unsafe { result::compile_program(prog, &options) };
    // SAFETY: as above.
    let log = unsafe { result::get_program_log(prog) }
        .map(|raw| {
            // SAFETY: NVRTC's log is NUL-terminated within the buffer it sized.
            let text = unsafe { CStr::from_ptr(raw.as_ptr()) };
            text.to_string_lossy().trim().to_owned()
        })
        .unwrap_or_default();
    let cubin = compiled
        .map_err(|e| Error::Compile {
            module: module.to_owned(),
            arch: arch.to_owned(),
            log: if log.is_empty() { format!("{e:?}") } else { log },
        })
        .and_then(|()| {
            let mut size = 0usize;
            // SAFETY: a compiled program and a valid out-pointer.
            unsafe { sys::nvrtcGetCUBINSize(prog, &raw mut size) }
                .result()
                .map_err(|e| Error::Nvrtc(format!("nvrtcGetCUBINSize: {e:?}")))?;
            let mut buf = vec![0u8; size];
            // SAFETY: `buf` holds the `size` bytes NVRTC asked for.
            unsafe { sys::nvrtcGetCUBIN(prog, buf.as_mut_ptr().cast::<c_char>()) }
                .result()
                .map_err(|e| Error::Nvrtc(format!("nvrtcGetCUBIN: {e:?}")))?;
            Ok(buf)
        });
    // SAFETY: created above, destroyed once.
    let _ = unsafe { result::destroy_program(prog) };
    cubin
}

/// The cache directory: `$LOWBIT_KERNEL_CACHE`, else `$XDG_CACHE_HOME/lowbit/kernels`, else
/// `$HOME/.cache/lowbit/kernels`; `None` when none is set.
#[must_use]
pub fn cache_dir() -> Option<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    var("LOWBIT_KERNEL_CACHE")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("lowbit/kernels")))
        .or_else(|| var("HOME").map(|d| d.join(".cache/lowbit/kernels")))
}

/// The cache key of `module` for `arch`: 16 hex digits of SHA-256 over the expanded source, the
/// options and NVRTC's version.
///
/// # Errors
/// As [`compile`].
pub fn cache_key(module: &str, arch: &str) -> Result<String, Error> {
    let (major, minor) = nvrtc_version()?;
    let src = source::expanded(module).map_err(Error::Nvrtc)?;
    let mut h = Sha256::new();
    h.update(src.as_bytes());
    h.update(format!("\0{arch}\0{}\0nvrtc {major}.{minor}", OPTIONS.join(" ")).as_bytes());
    let digest = h.finalize();
    Ok(digest.iter().take(8).map(|b| format!("{b:02x}")).collect())
}

/// The CUBIN of `module` for `arch`, from the cache when present and valid (an ELF image),
/// else compiled and stored there (atomically; a cache that cannot be written is skipped).
/// Returns whether it came from the cache.
///
/// # Errors
/// As [`compile`].
pub fn cubin(module: &str, arch: &str) -> Result<(Vec<u8>, bool), Error> {
    let key = cache_key(module, arch)?;
    let path = cache_dir().map(|d| d.join(format!("{module}-{arch}-{key}.cubin")));
    if let Some(bytes) = path.as_ref().and_then(|p| std::fs::read(p).ok())
        && bytes.starts_with(b"\x7fELF")
    {
        return Ok((bytes, true));
    }
    let bytes = compile(module, arch)?;
    if let Some(p) = &path {
        // A cache is an optimisation: failing to write it never fails the run.
        let _ = store(p, &bytes);
    }
    Ok((bytes, false))
}

fn store(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = lowbit_convert::AtomicFile::create(path)?;
    f.file_mut().write_all(bytes)?;
    f.commit()
}

#[cfg(test)]
mod tests {
    use super::{CHECKED_ARCHS, compile, compile_source, nvrtc_available};
    use crate::source::MODULES;

    /// Every module compiles for every architecture CI checks. NVRTC runs without a GPU:
    /// `cargo xtask ci` unpacks the pinned `nvidia-cuda-nvrtc` wheel and points
    /// `LD_LIBRARY_PATH` at it.
    #[test]
    fn every_module_compiles_for_every_checked_arch() {
        assert!(
            nvrtc_available(),
            "NVRTC cannot be loaded: run the tests through `cargo xtask ci`, or put \
             target/nvrtc/nvidia/cu13/lib (unpacked from the pinned nvidia-cuda-nvrtc wheel) on \
             LD_LIBRARY_PATH"
        );
        // One thread per module: NVRTC compiles separate programs concurrently.
        let failures: Vec<String> = std::thread::scope(|s| {
            let jobs: Vec<_> = MODULES
                .iter()
                .map(|(module, _)| {
                    s.spawn(move || {
                        let mut bad = Vec::new();
                        for arch in CHECKED_ARCHS {
                            match compile(module, arch) {
                                Ok(c) if c.starts_with(b"\x7fELF") => {}
                                Ok(_) => bad.push(format!("{module} {arch}: not an ELF image")),
                                Err(e) => bad.push(e.to_string()),
                            }
                        }
                        bad
                    })
                })
                .collect();
            jobs.into_iter().flat_map(|j| j.join().unwrap_or_default()).collect()
        });
        assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    }

    #[test]
    fn a_compile_error_carries_the_log() {
        assert!(nvrtc_available(), "NVRTC cannot be loaded (see the test above)");
        let src = "extern \"C\" __global__ void k(int* p) { p[0] = undeclared_name; }".to_owned();
        let e = compile_source("broken", src, "sm_90a").unwrap_err().to_string();
        assert!(e.contains("kernels/broken.cu") && e.contains("undeclared_name"), "{e}");
    }

    #[test]
    fn an_unknown_module_is_refused_before_nvrtc() {
        let e = compile("no-such-module", "sm_90a").unwrap_err();
        assert!(e.to_string().contains("no kernel module"), "{e}");
    }
}
