//! A checkpoint file's bytes: memory-mapped, or read whole when tiny.
#![allow(unsafe_code, reason = "memory-mapping a file is unsafe; this module is the one place")]

use crate::Error;
use memmap2::Mmap;
use std::path::{Path, PathBuf};

/// Files below this size are read into memory instead of mapped (an empty file cannot be mapped).
const MAP_THRESHOLD: u64 = 64 * 1024;

/// One open file.
#[derive(Debug)]
pub(crate) struct Source {
    pub(crate) path: PathBuf,
    bytes: Bytes,
}

#[derive(Debug)]
enum Bytes {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl Source {
    pub(crate) fn open(path: &Path) -> Result<Source, Error> {
        let io = |source| Error::Io { path: path.to_owned(), source };
        let file = std::fs::File::open(path).map_err(&io)?;
        let len = file.metadata().map_err(&io)?.len();
        let bytes = if len < MAP_THRESHOLD {
            Bytes::Owned(std::fs::read(path).map_err(&io)?)
        } else {
            // SAFETY: the map is read-only and private to this process. lowbit never writes to its
            // inputs; if another process truncates the file while it is mapped, reads of the lost
            // pages fault (SIGBUS), which is the documented limit of every mmap-based reader,
            // the `safetensors` Python package's included.
            Bytes::Mapped(unsafe { Mmap::map(&file) }.map_err(io)?)
        };
        Ok(Source { path: path.to_owned(), bytes })
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        match &self.bytes {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}
