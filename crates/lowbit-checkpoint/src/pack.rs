//! Reading a zstd pack (`formats/zstd.md`): a safetensors file stored as one zstd frame for the
//! header and one per tensor, with the zstd seekable format's seek table at the end.
//!
//! Opening reads the seek table, decompresses frame 0 (at most 100 MB, checked before anything
//! is decompressed) and checks everything `lowbit_safetensors::SeekTable::check` checks, so a
//! truncated or crafted pack is refused by `Checkpoint::open` naming the frame and its tensor.
//! Tensor data is decompressed lazily, each frame once (a `OnceLock` per frame), into an
//! unlinked temporary file in `$TMPDIR` laid out as the decompressed safetensors file; every
//! reader path (positioned reads, the memory map behind `Checkpoint::raw`) then reads that file,
//! so memory stays at one 1 MiB buffer per decompressing thread whatever the pack's size.
//! `inspect` decompresses only frame 0 and the small marker tensors it reads.

use crate::Error;
use crate::source::{Scratch, Source};
use lowbit_safetensors::{Header, PackError, SeekTable};
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::OnceLock;
use zstd::stream::raw::{Decoder, InBuffer, Operation, OutBuffer};

/// Bytes decompressed per step (and written to the temporary file per write).
const CHUNK: usize = 1 << 20;

/// What `inspect` shows about a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackInfo {
    /// Size of the pack.
    pub compressed_bytes: u64,
    /// Size of the safetensors file it holds.
    pub raw_bytes: u64,
    /// zstd frames: the header's and one per tensor.
    pub frames: usize,
}

/// The decompressed data of a pack: its frames, and the temporary file they decompress into.
#[derive(Debug)]
pub(crate) struct Unpacked {
    table: SeekTable,
    /// What each frame holds, for messages: `the header`, `tensor `name``.
    what: Vec<String>,
    scratch: OnceLock<Result<Scratch, String>>,
    /// One per frame: whether it has been decompressed into the scratch file.
    ready: Vec<OnceLock<Result<(), String>>>,
}

/// Decompresses the one zstd frame of `src_len` bytes that `read(offset, buf)` reads, which must
/// decompress to exactly `raw` bytes and end exactly at its end, handing the output to
/// `sink(offset, bytes)`; one chunk of input and one of output in memory at a time.
fn decode_frame(
    src_len: u64,
    mut read: impl FnMut(u64, &mut [u8]) -> io::Result<()>,
    raw: u64,
    mut sink: impl FnMut(u64, &[u8]) -> io::Result<()>,
) -> Result<(), String> {
    let mut dec = Decoder::new().map_err(|e| format!("cannot be decompressed: {e}"))?;
    #[expect(clippy::cast_possible_truncation, reason = "at most CHUNK")]
    let (mut inbuf, mut outbuf) = (
        vec![0u8; src_len.clamp(1, CHUNK as u64) as usize],
        vec![0u8; raw.clamp(1, CHUNK as u64) as usize],
    );
    let (mut read_pos, mut done) = (0u64, 0u64);
    loop {
        #[expect(clippy::cast_possible_truncation, reason = "at most CHUNK")]
        let n_in = (src_len - read_pos).min(CHUNK as u64) as usize;
        read(read_pos, &mut inbuf[..n_in]).map_err(|e| format!("cannot be read: {e}"))?;
        read_pos += n_in as u64;
        let mut input = InBuffer::around(&inbuf[..n_in]);
        let finished = loop {
            let mut out = OutBuffer::around(&mut outbuf[..]);
            let hint = dec
                .run(&mut input, &mut out)
                .map_err(|e| format!("holds damaged zstd data: {e}"))?;
            let n = out.pos();
            if done + n as u64 > raw {
                return Err(format!("decompresses to more than the {raw} bytes it declares"));
            }
            sink(done, &outbuf[..n]).map_err(|e| {
                format!(
                    "cannot be decompressed into a temporary file in {} (set TMPDIR to a folder with room): {e}",
                    std::env::temp_dir().display()
                )
            })?;
            done += n as u64;
            if hint == 0 {
                break true;
            }
            if input.pos() == n_in && n < outbuf.len() {
                break false;
            }
        };
        if finished {
            let stray = (n_in - input.pos()) as u64 + (src_len - read_pos);
            if stray > 0 {
                return Err(format!("has {stray} stray bytes after its zstd frame"));
            }
            break;
        }
        if read_pos == src_len {
            return Err("ends before its zstd frame does: the pack is truncated or damaged".into());
        }
    }
    if done != raw {
        return Err(format!("decompresses to {done} bytes, not the {raw} it declares"));
    }
    Ok(())
}

impl Unpacked {
    /// Reads and checks the seek table and frame 0 of the pack `src`; returns the frames and the
    /// safetensors header, checked against them.
    pub(crate) fn open(src: &Source) -> Result<(Unpacked, Header), Error> {
        let packed = src.bytes();
        let bad = |source: PackError| Error::Pack { path: src.path.clone(), source };
        let table = SeekTable::parse(packed).map_err(bad)?;
        let first = table.header_frame().map_err(bad)?;
        // Grown as output arrives (never sized by the untrusted number), at most 100 MB + 8.
        let mut prefix = Vec::new();
        let read = |at: u64, buf: &mut [u8]| src.read_stored_at(first.offset + at, buf);
        decode_frame(first.compressed, read, first.raw, |_, b| {
            prefix.extend_from_slice(b);
            Ok(())
        })
        .map_err(|reason| bad(PackError::Frame { index: 0, what: "the header".into(), reason }))?;
        let header = Header::parse(&prefix, table.raw_len())
            .map_err(|source| Error::Safetensors { path: src.path.clone(), source })?;
        table.check(packed, &header).map_err(bad)?;
        let what = std::iter::once("the header".to_owned())
            .chain(header.tensors.iter().map(|t| format!("tensor `{}`", t.name)))
            .collect();
        let ready = (0..table.frames.len()).map(|_| OnceLock::new()).collect();
        Ok((Unpacked { table, what, scratch: OnceLock::new(), ready }, header))
    }

    pub(crate) fn info(&self, compressed_bytes: u64) -> PackInfo {
        PackInfo {
            compressed_bytes,
            raw_bytes: self.table.raw_len(),
            frames: self.table.frames.len(),
        }
    }

    /// The temporary file, created (sparse, the decompressed file's length) on first use.
    fn scratch(&self) -> Result<&Scratch, String> {
        let made = self
            .scratch
            .get_or_init(|| Scratch::new(self.table.raw_len(), &[], "decompressed tensors"));
        made.as_ref().map_err(Clone::clone)
    }

    /// Decompresses, once, every frame holding bytes of `offset..offset + len`, reading the
    /// pack `src` with positioned reads (not through its map, whose pages would count as this
    /// process's memory).
    fn ensure(&self, src: &Source, offset: u64, len: u64) -> Result<&Scratch, String> {
        let scratch = self.scratch()?;
        let end = offset.saturating_add(len);
        let mut i = if len == 0 {
            self.table.frames.len()
        } else {
            self.table.frame_at(offset).unwrap_or(usize::MAX)
        };
        while let Some(&f) = self.table.frames.get(i).filter(|f| f.raw_offset < end) {
            self.ready[i]
                .get_or_init(|| {
                    let read = |at: u64, buf: &mut [u8]| src.read_stored_at(f.offset + at, buf);
                    decode_frame(f.compressed, read, f.raw, |at, b| {
                        scratch.file.write_all_at(b, f.raw_offset + at)
                    })
                })
                .as_ref()
                .map_err(|e| format!("{}: zstd frame {i} {e}", self.what[i]))?;
            i += 1;
        }
        Ok(scratch)
    }

    /// Bytes `offset..offset + len` of the decompressed file; `Ok(None)` when out of range.
    pub(crate) fn slice<'a>(
        &'a self,
        src: &Source,
        offset: u64,
        len: u64,
    ) -> Result<Option<&'a [u8]>, String> {
        if offset.checked_add(len).is_none_or(|end| end > self.table.raw_len()) {
            return Ok(None);
        }
        if len == 0 {
            return Ok(Some(&[]));
        }
        let scratch = self.ensure(src, offset, len)?;
        Ok(scratch.get(offset, len))
    }

    /// Reads `buf.len()` bytes at `offset` of the decompressed file with a positioned read.
    pub(crate) fn read_at(&self, src: &Source, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let len = buf.len() as u64;
        if offset.checked_add(len).is_none_or(|end| end > self.table.raw_len()) {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let scratch = self.ensure(src, offset, len).map_err(io::Error::other)?;
        scratch.file.read_exact_at(buf, offset)
    }
}

#[cfg(test)]
mod tests {
    use super::decode_frame;
    use crate::{Checkpoint, Format};
    use lowbit_safetensors::SeekTable;

    /// Decodes `frame` expecting `raw` bytes; the bytes or the error.
    fn decode(frame: &[u8], raw: u64) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        let read = |at: u64, buf: &mut [u8]| {
            let at = usize::try_from(at).unwrap();
            buf.copy_from_slice(&frame[at..at + buf.len()]);
            Ok(())
        };
        decode_frame(frame.len() as u64, read, raw, |at, b| {
            assert_eq!(at, out.len() as u64);
            out.extend_from_slice(b);
            Ok(())
        })?;
        Ok(out)
    }

    fn frame(data: &[u8]) -> Vec<u8> {
        let mut c = zstd::bulk::Compressor::new(3).unwrap();
        c.set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true)).unwrap();
        c.compress(data).unwrap()
    }

    #[test]
    fn a_frame_decodes_across_chunks() {
        // Incompressible (xorshift): the frame spans three 1 MiB input chunks too.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let data: Vec<u8> = (0..3_000_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        let f = frame(&data);
        assert!(f.len() > 2 << 20, "{}", f.len());
        assert_eq!(decode(&f, data.len() as u64).unwrap(), data);
        assert_eq!(decode(&frame(&[]), 0).unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn each_way_a_frame_can_be_wrong() {
        let data = vec![7u8; 5000];
        let f = frame(&data);
        let e = decode(&f[..f.len() - 3], 5000).unwrap_err();
        assert!(e.contains("ends before its zstd frame does"), "{e}");
        let e = decode(&[&f[..], &[0u8; 5]].concat(), 5000).unwrap_err();
        assert!(e.contains("5 stray bytes"), "{e}");
        let e = decode(&f, 4999).unwrap_err();
        assert!(e.contains("more than the 4999 bytes"), "{e}");
        // A frame without a declared size that holds fewer bytes than the table says.
        let mut enc = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
        std::io::Write::write_all(&mut enc, &data).unwrap();
        let unsized_frame = enc.finish().unwrap();
        let e = decode(&unsized_frame, 6000).unwrap_err();
        assert!(e.contains("decompresses to 5000 bytes, not the 6000"), "{e}");
        let mut damaged = frame(&(0..5000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>());
        let at = damaged.len() - 2;
        damaged[at] ^= 1; // in the checksum
        let e = decode(&damaged, 5000).unwrap_err();
        assert!(e.contains("damaged zstd data"), "{e}");
    }

    #[test]
    fn a_pack_reads_as_its_file_and_decompresses_only_what_is_read() {
        let json = br#"{"__metadata__":{"k":"v"},"a":{"dtype":"U8","shape":[3],"data_offsets":[0,3]},"e":{"dtype":"U8","shape":[0],"data_offsets":[3,3]},"b":{"dtype":"BF16","shape":[2],"data_offsets":[3,7]}}"#;
        let mut plain = (json.len() as u64).to_le_bytes().to_vec();
        plain.extend_from_slice(json);
        let h = plain.len();
        plain.extend_from_slice(&[1, 2, 3, 0x80, 0x3f, 0x40, 0x40]);
        // Data order: a, e (empty, at 3), b.
        let spans = [(0, h), (h, h + 3), (h + 3, h + 3), (h + 3, h + 7)];
        let mut pack = Vec::new();
        let mut sizes = Vec::new();
        for (s, e) in spans {
            let f = frame(&plain[s..e]);
            sizes.push((f.len() as u32, (e - s) as u32));
            pack.extend_from_slice(&f);
        }
        pack.extend_from_slice(&SeekTable::encode(&sizes).unwrap());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.safetensors.zst");
        std::fs::write(&path, &pack).unwrap();
        let plain_path = dir.path().join("p.safetensors");
        std::fs::write(&plain_path, &plain).unwrap();

        let (z, p) = (Checkpoint::open(&path).unwrap(), Checkpoint::open(&plain_path).unwrap());
        assert_eq!(z.format(), Format::SafetensorsZstd);
        assert_eq!(z.tensors(), p.tensors());
        assert_eq!(z.metadata(), p.metadata());
        let unpacked = z.source(z.tensor("a").unwrap()).pack.as_ref().unwrap();
        assert!(unpacked.scratch.get().is_none(), "opening decompresses no data frame");
        let info = z.pack_info().unwrap();
        assert_eq!(
            (info.compressed_bytes, info.raw_bytes, info.frames),
            (pack.len() as u64, plain.len() as u64, 4)
        );
        let b = z.tensor("b").unwrap();
        let mut buf = [0u8; 2];
        z.read_raw_at(b, 2, &mut buf).unwrap();
        assert_eq!(buf, [0x40, 0x40]);
        assert!(unpacked.ready[3].get().is_some() && unpacked.ready[1].get().is_none());
        for t in p.tensors() {
            assert_eq!(z.try_raw(z.tensor(&t.name).unwrap()).unwrap(), p.raw(t), "{}", t.name);
        }
        let mut v = [0f32; 2];
        z.read_f32(b, 0..2, &mut v).unwrap();
        assert_eq!(v, [1.0, 3.0]);
    }
}
