//! A checkpoint file's bytes: memory-mapped for headers and zero-copy access, plus positioned
//! reads for streaming tensor data.
//!
//! Streaming reads use `pread` into small buffers rather than the mapping: pages touched through
//! a mapping count toward the process's resident memory until the kernel reclaims them, so a
//! conversion reading a 24 GB checkpoint through the map would look (and, under memory limits,
//! act) like a 24 GB process. `pread` goes through the page cache without that.
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
    /// Device and inode, from the open file itself (not the path, which may change).
    pub(crate) id: (u64, u64),
    file: std::fs::File,
    bytes: Bytes,
    /// For a zstd pack: its frames and the decompressed tensors; reads go there.
    pub(crate) pack: Option<crate::pack::Unpacked>,
    /// For a Nunchaku file: the natural file it is read as (`crate::relay`); reads go there.
    pub(crate) relaid: Option<crate::relay::Relaid>,
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
        let meta = file.metadata().map_err(&io)?;
        if !meta.is_file() {
            return Err(Error::NotACheckpoint {
                path: path.to_owned(),
                reason: "not a regular file".into(),
            });
        }
        let len = meta.len();
        let id = (
            std::os::unix::fs::MetadataExt::dev(&meta),
            std::os::unix::fs::MetadataExt::ino(&meta),
        );
        let bytes = if len < MAP_THRESHOLD {
            // At most the length seen above, even if the file grows meanwhile.
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut std::io::Read::take(&file, len), &mut v)
                .map_err(&io)?;
            Bytes::Owned(v)
        } else {
            // SAFETY: the map is read-only and private to this process. lowbit never writes to its
            // inputs; if another process truncates the file while it is mapped, reads of the lost
            // pages fault (SIGBUS), which is the documented limit of every mmap-based reader,
            // the `safetensors` Python package's included.
            Bytes::Mapped(unsafe { Mmap::map(&file) }.map_err(io)?)
        };
        Ok(Source { path: path.to_owned(), id, file, bytes, pack: None, relaid: None })
    }

    /// Reads `buf.len()` bytes at `offset` without going through the mapping; in a zstd pack,
    /// `offset` is in the decompressed file.
    pub(crate) fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        if let Some(r) = &self.relaid {
            return r.read_at(self, offset, buf);
        }
        match &self.pack {
            Some(p) => p.read_at(self, offset, buf),
            None => self.read_stored_at(offset, buf),
        }
    }

    /// Reads `buf.len()` bytes of the file as stored (a zstd pack's compressed bytes) at
    /// `offset`, without going through the mapping.
    pub(crate) fn read_stored_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        match &self.bytes {
            Bytes::Owned(v) => {
                let src = usize::try_from(offset)
                    .ok()
                    .and_then(|start| Some(start..start.checked_add(buf.len())?))
                    .and_then(|range| v.get(range))
                    .ok_or(std::io::ErrorKind::UnexpectedEof)?;
                buf.copy_from_slice(src);
                Ok(())
            }
            Bytes::Mapped(_) => std::os::unix::fs::FileExt::read_exact_at(&self.file, buf, offset),
        }
    }

    /// The file's bytes as stored (a zstd pack's compressed bytes).
    pub(crate) fn bytes(&self) -> &[u8] {
        match &self.bytes {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }

    /// Bytes `offset..offset + len` of the file (in a zstd pack, of the decompressed file,
    /// decompressing the frames they lie in first); `Ok(None)` when out of range.
    pub(crate) fn slice(&self, offset: u64, len: u64) -> Result<Option<&[u8]>, String> {
        if let Some(r) = &self.relaid {
            return r.slice(self, offset, len);
        }
        if let Some(p) = &self.pack {
            return p.slice(self, offset, len);
        }
        let range = usize::try_from(offset)
            .ok()
            .and_then(|start| Some(start..start.checked_add(usize::try_from(len).ok()?)?));
        Ok(range.and_then(|r| self.bytes().get(r)))
    }
}

/// Maps a temporary file this process made and writes only through positioned writes, to
/// regions no slice of the map covers yet (`crate::pack`).
pub(crate) fn map_scratch(file: &std::fs::File) -> std::io::Result<Mmap> {
    // SAFETY: the file is unlinked and private to this process, so no other process can change
    // or truncate it. This process writes each region once, before any slice of that region is
    // handed out (a `OnceLock` per frame orders the write before every read), and never writes
    // a region again; the shared mapping sees those writes through the page cache.
    unsafe { Mmap::map(file) }
}

/// An unlinked temporary file in `$TMPDIR`, `len` bytes long (sparse) and mapped, holding
/// `head` at its start: where a zstd pack's frames are decompressed (`crate::pack`) and a
/// Nunchaku file's layers re-laid (`crate::relay`), each region written once before it is read.
#[derive(Debug)]
pub(crate) struct Scratch {
    pub(crate) file: std::fs::File,
    pub(crate) map: Mmap,
}

impl Scratch {
    /// Makes the file; the error says where and what for (`what`: the tensors it holds).
    pub(crate) fn new(len: u64, head: &[u8], what: &str) -> Result<Scratch, String> {
        let dir = std::env::temp_dir();
        let fail = |e: std::io::Error| {
            format!(
                "cannot make a temporary file in {} for the {what} (set TMPDIR to a folder with room): {e}",
                dir.display()
            )
        };
        let file = tempfile::tempfile().map_err(fail)?;
        file.set_len(len).map_err(fail)?;
        std::os::unix::fs::FileExt::write_all_at(&file, head, 0).map_err(fail)?;
        let map = map_scratch(&file).map_err(fail)?;
        Ok(Scratch { file, map })
    }

    /// Bytes `offset..offset + len` of the map (`None` past its end).
    pub(crate) fn get(&self, offset: u64, len: u64) -> Option<&[u8]> {
        let start = usize::try_from(offset).ok()?;
        self.map.get(start..start.checked_add(usize::try_from(len).ok()?)?)
    }
}
