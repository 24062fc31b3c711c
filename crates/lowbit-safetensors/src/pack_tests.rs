//! One test per [`PackError`] a reader can meet, on packs built with the `zstd` crate (the zstd
//! project's own library) and damaged one field at a time; and the frame-header parser against
//! that library's reading of the same frames.

use super::{FOOTER_LEN, PackError, SeekTable, Span, frame_content_size};
use crate::Header;

/// A safetensors file with tensors `a` (4 bytes) and `b` (3 bytes).
fn plain() -> (Vec<u8>, usize) {
    let json = br#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[3],"data_offsets":[4,7]}}"#;
    let mut f = (json.len() as u64).to_le_bytes().to_vec();
    f.extend_from_slice(json);
    let header_end = f.len();
    f.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7]);
    (f, header_end)
}

/// A pack of the given frames' contents (one zstd frame each) and its seek table.
fn pack_of(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut sizes = Vec::new();
    for p in parts {
        let frame = zstd::bulk::compress(p, 3).unwrap();
        sizes.push((frame.len() as u32, p.len() as u32));
        out.extend_from_slice(&frame);
    }
    out.extend_from_slice(&SeekTable::encode(&sizes).unwrap());
    out
}

fn good() -> Vec<u8> {
    let (f, h) = plain();
    pack_of(&[&f[..h], &f[h..h + 4], &f[h + 4..]])
}

fn check(pack: &[u8]) -> Result<(), PackError> {
    let table = SeekTable::parse(pack)?;
    let first = table.header_frame()?;
    let (f, h) = plain();
    assert_eq!(first.raw as usize, h);
    let header = Header::parse(&f[..h], table.raw_len()).unwrap();
    table.check(pack, &header)
}

/// The offset of the footer's number of frames.
fn footer(pack: &[u8]) -> usize {
    pack.len() - FOOTER_LEN as usize
}

#[test]
fn a_good_pack_parses_and_decompresses_to_the_file() {
    let pack = good();
    check(&pack).unwrap();
    let t = SeekTable::parse(&pack).unwrap();
    assert_eq!(t.frames.len(), 3);
    assert!(!t.checksums);
    let (f, h) = plain();
    assert_eq!(t.raw_len(), f.len() as u64);
    assert_eq!(t.frames[1].raw_offset, h as u64);
    assert_eq!(t.frame_at(h as u64 + 5), Some(2));
    assert_eq!(t.frame_at(f.len() as u64), None);
    // The zstd library reads the whole pack as the file: frames concatenate, the seek table is
    // a skippable frame it passes over.
    assert_eq!(zstd::stream::decode_all(&pack[..]).unwrap(), f);
    assert_eq!(SeekTable::recognise(&pack), (true, true));
}

#[test]
fn frame_content_size_agrees_with_the_zstd_library() {
    // Sizes around each width of the content size field (1, 2, 4 bytes), and levels that pick
    // single-segment and windowed frames.
    for n in [0usize, 1, 255, 256, 300, 65_791, 65_792, 70_000, 300_000] {
        let data: Vec<u8> = (0..n).map(|i| (i * 7 % 251) as u8).collect();
        for level in [1, 19] {
            let frame = zstd::bulk::compress(&data, level).unwrap();
            let theirs = zstd::zstd_safe::get_frame_content_size(&frame).unwrap();
            assert_eq!(frame_content_size(&frame), Ok(theirs), "{n} bytes at level {level}");
            assert_eq!(theirs, Some(n as u64));
        }
    }
    // A frame written by a streaming encoder that was not told the size declares none.
    let mut enc = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
    std::io::Write::write_all(&mut enc, &[7u8; 1000]).unwrap();
    let frame = enc.finish().unwrap();
    assert_eq!(zstd::zstd_safe::get_frame_content_size(&frame).unwrap(), None);
    assert_eq!(frame_content_size(&frame), Ok(None));
}

#[test]
fn too_short() {
    assert_eq!(SeekTable::parse(&[0; 16]).unwrap_err(), PackError::TooShort { len: 16 });
}

#[test]
fn truncated_pack_has_no_seek_table() {
    let pack = good();
    let e = SeekTable::parse(&pack[..pack.len() - 3]).unwrap_err();
    assert!(matches!(e, PackError::NoSeekTable { .. }), "{e}");
    assert!(e.to_string().contains("truncated"), "{e}");
}

#[test]
fn reserved_bits() {
    let mut pack = good();
    let at = pack.len() - 5;
    pack[at] = 0x04;
    assert_eq!(SeekTable::parse(&pack).unwrap_err(), PackError::ReservedBits { descriptor: 4 });
}

#[test]
fn a_huge_frame_count_is_refused_before_any_allocation() {
    let mut pack = good();
    let at = footer(&pack);
    pack[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let e = SeekTable::parse(&pack).unwrap_err();
    assert!(matches!(e, PackError::TableTooLarge { frames: u32::MAX, .. }), "{e}");
}

#[test]
fn not_skippable() {
    let mut pack = good();
    // One frame fewer: the table now starts 8 bytes into the real one.
    let at = footer(&pack);
    pack[at..at + 4].copy_from_slice(&2u32.to_le_bytes());
    assert!(matches!(SeekTable::parse(&pack).unwrap_err(), PackError::NotSkippable { .. }));
}

#[test]
fn table_size() {
    let mut pack = good();
    let start = pack.len() - (8 + 3 * 8 + 9);
    pack[start + 4] ^= 1;
    let e = SeekTable::parse(&pack).unwrap_err();
    assert_eq!(e, PackError::TableSize { declared: 32, expected: 33 });
}

#[test]
fn no_frames() {
    let table = SeekTable::encode(&[]).unwrap();
    assert_eq!(SeekTable::parse(&table).unwrap_err(), PackError::NoFrames);
}

#[test]
fn frames_length() {
    let mut pack = good();
    let start = pack.len() - (8 + 3 * 8 + 9);
    // Frame 1's compressed size one byte too large.
    let at = start + 8 + 8;
    let v = u32::from_le_bytes(pack[at..at + 4].try_into().unwrap()) + 1;
    pack[at..at + 4].copy_from_slice(&v.to_le_bytes());
    let e = SeekTable::parse(&pack).unwrap_err();
    assert!(matches!(e, PackError::FramesLength { .. }), "{e}");
}

#[test]
fn header_frame_size() {
    let t = SeekTable {
        frames: vec![Span { offset: 0, compressed: 9, raw_offset: 0, raw: 200_000_000 }],
        checksums: false,
        table_len: 25,
    };
    assert!(matches!(t.header_frame().unwrap_err(), PackError::HeaderFrameSize { .. }));
}

#[test]
fn header_frame_length() {
    // Frame 0 also holds the first data byte.
    let (f, h) = plain();
    let pack = pack_of(&[&f[..=h], &f[h + 1..h + 4], &f[h + 4..]]);
    let table = SeekTable::parse(&pack).unwrap();
    let header = Header::parse(&f[..=h], table.raw_len()).unwrap();
    let e = table.check(&pack, &header).unwrap_err();
    assert_eq!(e, PackError::HeaderFrameLength { frame: h as u64 + 1, header: h as u64 });
}

#[test]
fn frame_count() {
    let (f, h) = plain();
    let pack = pack_of(&[&f[..h], &f[h..]]);
    assert_eq!(check(&pack).unwrap_err(), PackError::FrameCount { frames: 1, tensors: 2 });
}

#[test]
fn frame_size_disagrees_with_the_header() {
    let (f, h) = plain();
    let pack = pack_of(&[&f[..h], &f[h..h + 3], &f[h + 3..]]);
    let e = check(&pack).unwrap_err();
    assert_eq!(e, PackError::FrameSize { index: 1, tensor: "a".into(), frame: 3, bytes: 4 });
    assert!(e.to_string().starts_with("tensor `a`: frame 1"), "{e}");
}

#[test]
fn frame_header_disagrees_with_the_seek_table() {
    // Swap tensor frames so that the seek table's sizes are right but frame 1 declares 3 bytes.
    let (f, h) = plain();
    let (a, b) = (&f[h..h + 4], &f[h + 4..]);
    let fa = zstd::bulk::compress(a, 3).unwrap();
    let fb = zstd::bulk::compress(b, 3).unwrap();
    let f0 = zstd::bulk::compress(&f[..h], 3).unwrap();
    let mut pack = [f0.clone(), fb.clone(), fa.clone()].concat();
    let sizes = [(f0.len() as u32, h as u32), (fb.len() as u32, 4), (fa.len() as u32, 3)];
    pack.extend_from_slice(&SeekTable::encode(&sizes).unwrap());
    let e = check(&pack).unwrap_err();
    assert!(matches!(&e, PackError::Frame { index: 1, what, .. } if what == "tensor `a`"), "{e}");
    assert!(e.to_string().contains("declares 3 decompressed bytes"), "{e}");
}

#[test]
fn a_frame_that_is_not_zstd() {
    let (f, h) = plain();
    let f0 = zstd::bulk::compress(&f[..h], 3).unwrap();
    let raw = &f[h..];
    let mut pack = [&f0[..], raw, raw].concat();
    let sizes = [(f0.len() as u32, h as u32), (4, 4), (3, 3)];
    // Stored uncompressed: 4 + 3 bytes of the 7 given.
    pack.truncate(f0.len() + 7);
    pack.extend_from_slice(&SeekTable::encode(&sizes).unwrap());
    let e = check(&pack).unwrap_err();
    assert!(e.to_string().contains("not a zstd frame"), "{e}");
    assert!(matches!(e, PackError::Frame { index: 1, .. }), "{e}");
}

#[test]
fn frame_content_size_errors() {
    assert!(frame_content_size(&[0x28, 0xB5, 0x2F, 0xFD]).is_err());
    assert!(frame_content_size(&[0x28, 0xB5, 0x2F, 0xFD, 0x08, 0, 0]).is_err());
    assert!(frame_content_size(&[0x28, 0xB5, 0x2F, 0xFD, 0xC0, 0, 0]).is_err());
}

#[test]
fn writer_errors_name_the_limit() {
    // A table of 2^32 frames cannot be built in a test; the messages say what the limit is.
    assert!(SeekTable::encode(&[(1, 1); 3]).is_ok());
    let e = PackError::TooManyFrames { frames: 1 << 33 };
    assert!(e.to_string().contains("8589934592 frames"));
    let e = PackError::TensorTooLarge { tensor: "w".into(), bytes: 1 << 32 };
    assert!(e.to_string().contains("at most 4294967295 bytes"), "{e}");
}

#[test]
fn the_table_alone_parses_as_the_whole_pack() {
    let pack = good();
    let footer: [u8; 9] = pack[footer(&pack)..].try_into().unwrap();
    let n = SeekTable::table_len(footer) as usize;
    assert_eq!(n, 8 + 3 * 8 + 9);
    let whole = SeekTable::parse(&pack).unwrap();
    let tail = &pack[pack.len() - n..];
    assert_eq!(SeekTable::parse_tail(tail, pack.len() as u64).unwrap(), whole);
    let short = SeekTable::parse_tail(&tail[1..], pack.len() as u64).unwrap_err();
    assert_eq!(short, PackError::TooShort { len: n as u64 - 1 });
}
