"""lowbit's zstd packs (formats/zstd.md) through the `zstandard` package alone.

usage: zstd_pack.py check PACK PLAIN
       zstd_pack.py write PLAIN PACK

`check` reads a lowbit zstd pack and checks it against the plain safetensors file the same
conversion writes without --compress:

1. The whole pack, decompressed as one stream across frames (the seek table is a skippable
   frame, which zstd decoders pass over), must be PLAIN byte for byte.
2. The seek table, parsed here from the zstd seekable format's spec (skippable frame
   0x184D2A5E, entries of compressed and decompressed u32 sizes, footer: frame count u32,
   descriptor byte, magic 0x8F92EAB1), must tile the file; each frame, decompressed on its own,
   must be its slice of PLAIN and declare that size in its own header.
3. Frame 0 must hold exactly the 8-byte length and the JSON header; frames 1.. one tensor each,
   in data-offset order (from PLAIN's JSON header, parsed here).

Prints one JSON object with what it found; exits non-zero on the first mismatch.

`write` packs a safetensors file as the spec says, with this package's compressor (level 3,
content size and checksum in every frame), for lowbit to read a pack it did not write.
"""

import hashlib
import io
import json
import struct
import sys

import zstandard

SKIPPABLE_MAGIC = 0x184D2A5E
SEEKABLE_MAGIC = 0x8F92EAB1


def fail(message):
    print(f"zstd_pack.py: {message}", file=sys.stderr)
    sys.exit(1)


def write(plain_path, pack_path):
    plain = open(plain_path, "rb").read()
    data_start = 8 + struct.unpack("<Q", plain[:8])[0]
    header = json.loads(plain[8:data_start])
    spans = [(0, data_start)] + sorted(
        (data_start + v["data_offsets"][0], data_start + v["data_offsets"][1])
        for k, v in header.items()
        if k != "__metadata__"
    )
    compressor = zstandard.ZstdCompressor(level=3, write_content_size=True, write_checksum=True)
    out, entries = bytearray(), bytearray()
    for begin, end in spans:
        frame = compressor.compress(plain[begin:end])
        out += frame
        entries += struct.pack("<II", len(frame), end - begin)
    out += struct.pack("<II", SKIPPABLE_MAGIC, len(entries) + 9) + entries
    out += struct.pack("<IBI", len(spans), 0, SEEKABLE_MAGIC)
    open(pack_path, "wb").write(out)
    print(json.dumps({"frames": len(spans), "pack_bytes": len(out)}))


def check(pack_path, plain_path):
    pack = open(pack_path, "rb").read()
    plain = open(plain_path, "rb").read()

    # 1. One stream across every frame.
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(pack), read_across_frames=True)
    streamed = reader.read()
    if streamed != plain:
        fail(f"streaming decompression gives {len(streamed)} bytes that differ from the plain file's {len(plain)}")

    # 2. The seek table, by the spec.
    n_frames, descriptor, magic = struct.unpack("<IBI", pack[-9:])
    if magic != SEEKABLE_MAGIC:
        fail(f"last four bytes {magic:#x} are not the seekable magic")
    if descriptor & 0x7C:
        fail(f"reserved descriptor bits set: {descriptor:#x}")
    entry = 12 if descriptor & 0x80 else 8
    table_len = 8 + n_frames * entry + 9
    start = len(pack) - table_len
    skippable, frame_size = struct.unpack("<II", pack[start : start + 8])
    if skippable != SKIPPABLE_MAGIC or frame_size != table_len - 8:
        fail(f"seek table frame header {skippable:#x} {frame_size} is wrong")
    frames = []
    offset = raw_offset = 0
    for i in range(n_frames):
        c, r = struct.unpack("<II", pack[start + 8 + i * entry : start + 16 + i * entry])
        frames.append((offset, c, raw_offset, r))
        offset += c
        raw_offset += r
    if offset != start or raw_offset != len(plain):
        fail(f"frames cover {offset} compressed / {raw_offset} raw bytes, not {start} / {len(plain)}")
    checksummed = 0
    for i, (off, c, roff, r) in enumerate(frames):
        frame = pack[off : off + c]
        params = zstandard.get_frame_parameters(frame)
        if params.content_size != r:
            fail(f"frame {i} declares {params.content_size} bytes, the seek table {r}")
        checksummed += bool(params.has_checksum)
        if zstandard.ZstdDecompressor().decompress(frame) != plain[roff : roff + r]:
            fail(f"frame {i} does not decompress to bytes {roff}..{roff + r} of the plain file")

    # 3. Frame 0 is the header, then one frame per tensor in data order.
    header_len = struct.unpack("<Q", plain[:8])[0]
    data_start = 8 + header_len
    if frames[0][3] != data_start:
        fail(f"frame 0 holds {frames[0][3]} bytes, the header {data_start}")
    header = json.loads(plain[8:data_start])
    tensors = sorted(
        (v["data_offsets"][0], v["data_offsets"][1], k)
        for k, v in header.items()
        if k != "__metadata__"
    )
    if len(tensors) != len(frames) - 1:
        fail(f"{len(frames) - 1} data frames for {len(tensors)} tensors")
    for (begin, end, name), (_, _, roff, r) in zip(tensors, frames[1:]):
        if roff != data_start + begin or r != end - begin:
            fail(f"tensor {name} is not alone in its frame")

    print(
        json.dumps(
            {
                "zstandard": zstandard.__version__,
                "frames": len(frames),
                "tensors": len(tensors),
                "checksummed_frames": checksummed,
                "pack_bytes": len(pack),
                "plain_bytes": len(plain),
                "sha256": hashlib.sha256(streamed).hexdigest(),
            }
        )
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["write"]:
        write(sys.argv[2], sys.argv[3])
    elif sys.argv[1:2] == ["check"]:
        check(sys.argv[2], sys.argv[3])
    else:
        fail(__doc__)
