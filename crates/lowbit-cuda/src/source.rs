//! The kernel sources of `kernels/`, embedded in the binary, with their `#include "…"` lines
//! replaced by the headers they name (NVRTC gets one self-contained string, no include path).

/// The shared headers, by the name a `#include "…"` line gives.
const HEADERS: [(&str, &str); 2] = [
    ("common.cuh", include_str!("../../../kernels/common.cuh")),
    ("gemm_a16.cuh", include_str!("../../../kernels/gemm_a16.cuh")),
];

/// Every module: its name (the `.cu` file's stem, the layout it serves) and source.
pub const MODULES: [(&str, &str); 7] = [
    ("int4", include_str!("../../../kernels/int4.cu")),
    ("ternary", include_str!("../../../kernels/ternary.cu")),
    ("bitnet", include_str!("../../../kernels/bitnet.cu")),
    ("nf4", include_str!("../../../kernels/nf4.cu")),
    ("fp8", include_str!("../../../kernels/fp8.cu")),
    ("gguf", include_str!("../../../kernels/gguf.cu")),
    ("svdq", include_str!("../../../kernels/svdq.cu")),
];

/// The source of module `name` with its includes expanded, each header once (`#pragma once`).
///
/// # Errors
/// An unknown module, or an include of a header that is not embedded.
pub fn expanded(name: &str) -> Result<String, String> {
    let (_, src) = MODULES
        .iter()
        .find(|(n, _)| *n == name)
        .ok_or_else(|| format!("no kernel module `{name}`"))?;
    let mut seen = Vec::new();
    let mut out = String::with_capacity(src.len() * 2);
    expand(name, src, &mut seen, &mut out)?;
    Ok(out)
}

fn expand<'a>(
    from: &str,
    src: &'a str,
    seen: &mut Vec<&'a str>,
    out: &mut String,
) -> Result<(), String> {
    for line in src.lines() {
        let include = line.trim_start().strip_prefix("#include").map(str::trim);
        match include.and_then(|i| i.strip_prefix('"')).and_then(|i| i.strip_suffix('"')) {
            Some(header) => {
                let (name, text) = HEADERS.iter().find(|(n, _)| *n == header).ok_or_else(|| {
                    format!("`{from}` includes `{header}`, which is not one of kernels/'s headers")
                })?;
                if !seen.contains(name) {
                    seen.push(name);
                    expand(name, text, seen, out)?;
                }
            }
            None if include.is_some() => {
                return Err(format!(
                    "`{from}` includes {}: kernels include only kernels/'s own headers",
                    include.unwrap_or_default()
                ));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{MODULES, expanded};

    #[test]
    fn every_module_expands_without_includes() {
        for (name, _) in MODULES {
            let src = expanded(name).unwrap();
            assert!(!src.contains("#include"), "{name}");
            assert!(src.contains("struct GemmArgs"), "{name} lacks common.cuh");
            assert_eq!(src.matches("struct GemmArgs {").count(), 1, "{name}: a header twice");
        }
        assert!(expanded("nope").is_err());
    }
}
