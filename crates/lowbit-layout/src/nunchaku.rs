//! Nunchaku's packed SVDQuant layouts (`formats/nunchaku.md`): the permutations that turn
//! lowbit's natural `svdq-w4a4` and `int4:g64` tensors into what Nunchaku's kernels read, and
//! back. Values never change: every function here moves bytes (or 16-bit values) only.
//!
//! - `qweight`: 128 (N) × 64 (K) tiles of 1024 little-endian u32 words, N-tile-major; inside a
//!   tile the words run over (n_pack 8, n_lane 8, k_lane 4, n_sub 2, k_sub 2), outermost first,
//!   and word (…) holds k = 64·k_tile + 32·k_sub + 8·k_lane + j, j = 0..8, in nibble j, for
//!   n = 128·n_tile + 16·n_pack + 8·n_sub + n_lane (the B fragment of `mma.m16n8k64`).
//! - per-channel vectors (`wscales`, `bias`, `smooth_factor`): in each block of 128, the value
//!   of channel 16a + 8b + 2c + d sits at 16a + 4c + 2b + d; `wscales` is stored
//!   `[N/128][K/64][128]`.
//! - low-rank factors: 16 × 16 blocks (block-major over the non-rank dimension), element
//!   (n = 8p + l, k = 8q + 2m + e) of a block at 32l + 8m + 4p + 2q + e (the A/B fragments of
//!   `mma.m16n8k16`); `proj_down` has n = rank, k = K, `proj_up` n = N, k = rank.
//! - AWQ W4A16 (`awq_*`): TinyChat's interleave, see [`awq_pack`].

/// Output channels per `qweight` tile and per permuted vector block.
pub const TILE_N: usize = 128;
/// Input channels per `qweight` tile.
pub const TILE_K: usize = 64;
/// K must be a multiple of this (Nunchaku's kernels unroll two tiles along K).
pub const K_MULTIPLE: usize = 128;
/// The rank of the low-rank branch must be a multiple of this.
pub const RANK_MULTIPLE: usize = 16;

/// Byte offset in the packed `qweight` of natural byte `(n, k/2)` (codes k, k + 1, k even).
#[must_use]
fn qweight_byte(n: usize, k: usize, k_tiles: usize) -> usize {
    let (nt, r) = (n / TILE_N, n % TILE_N);
    let (n_pack, n_sub, n_lane) = (r / 16, (r / 8) % 2, r % 8);
    let (kt, s) = (k / TILE_K, k % TILE_K);
    let (k_sub, k_lane, j) = (s / 32, (s / 8) % 4, s % 8);
    let word = ((((nt * k_tiles + kt) * 8 + n_pack) * 8 + n_lane) * 4 + k_lane) * 2 + n_sub;
    let word = word * 2 + k_sub;
    // Nibble j of the word: byte j / 2, low nibble for even j (as the natural layout has it).
    4 * word + j / 2
}

/// Packs a natural `qweight` (I8 `[N, K/2]`, low nibble = even k) into Nunchaku's tiles.
/// `N` must be a multiple of [`TILE_N`] and `K` of [`K_MULTIPLE`].
#[must_use]
pub fn pack_qweight(natural: &[u8], n: usize, k: usize) -> Vec<u8> {
    assert!(n.is_multiple_of(TILE_N) && k.is_multiple_of(K_MULTIPLE) && natural.len() == n * k / 2);
    let mut out = vec![0u8; natural.len()];
    for row in 0..n {
        for b in 0..k / 2 {
            out[qweight_byte(row, 2 * b, k / TILE_K)] = natural[row * k / 2 + b];
        }
    }
    out
}

/// The inverse of [`pack_qweight`].
#[must_use]
pub fn unpack_qweight(packed: &[u8], n: usize, k: usize) -> Vec<u8> {
    assert!(n.is_multiple_of(TILE_N) && k.is_multiple_of(K_MULTIPLE) && packed.len() == n * k / 2);
    let mut out = vec![0u8; packed.len()];
    for row in 0..n {
        for b in 0..k / 2 {
            out[row * k / 2 + b] = packed[qweight_byte(row, 2 * b, k / TILE_K)];
        }
    }
    out
}

/// Where channel `r` (0..128) of a vector block is stored.
#[must_use]
pub fn vector_slot(r: usize) -> usize {
    let (a, b, c, d) = (r / 16, (r / 8) % 2, (r / 2) % 4, r % 2);
    16 * a + 4 * c + 2 * b + d
}

/// Permutes a per-channel vector (length a multiple of [`TILE_N`]) block by block.
#[must_use]
pub fn pack_vector<T: Copy + Default>(v: &[T]) -> Vec<T> {
    assert!(v.len().is_multiple_of(TILE_N));
    let mut out = vec![T::default(); v.len()];
    for (i, x) in v.iter().enumerate() {
        out[i - i % TILE_N + vector_slot(i % TILE_N)] = *x;
    }
    out
}

/// The inverse of [`pack_vector`].
#[must_use]
pub fn unpack_vector<T: Copy + Default>(v: &[T]) -> Vec<T> {
    assert!(v.len().is_multiple_of(TILE_N));
    let mut out = vec![T::default(); v.len()];
    for (i, x) in out.iter_mut().enumerate() {
        *x = v[i - i % TILE_N + vector_slot(i % TILE_N)];
    }
    out
}

/// Packs group scales stored `[G, N]` (lowbit's `wscales`) as `[N/128][G][128]`, each block of
/// 128 permuted as [`pack_vector`].
#[must_use]
pub fn pack_wscales<T: Copy + Default>(s: &[T], groups: usize, n: usize) -> Vec<T> {
    assert!(n.is_multiple_of(TILE_N) && s.len() == groups * n);
    let mut out = vec![T::default(); s.len()];
    for g in 0..groups {
        for c in 0..n {
            let (nt, r) = (c / TILE_N, c % TILE_N);
            out[(nt * groups + g) * TILE_N + vector_slot(r)] = s[g * n + c];
        }
    }
    out
}

/// The inverse of [`pack_wscales`].
#[must_use]
pub fn unpack_wscales<T: Copy + Default>(p: &[T], groups: usize, n: usize) -> Vec<T> {
    assert!(n.is_multiple_of(TILE_N) && p.len() == groups * n);
    let mut out = vec![T::default(); p.len()];
    for g in 0..groups {
        for c in 0..n {
            let (nt, r) = (c / TILE_N, c % TILE_N);
            out[g * n + c] = p[(nt * groups + g) * TILE_N + vector_slot(r)];
        }
    }
    out
}

/// Position of element (`a`, `j`) of a `[A, r]` low-rank factor (`a` over K for `proj_down`,
/// over N for `proj_up`; `j` over the rank) in fragment order: 16 × 16 blocks ordered
/// (a-block, j-block), and inside a block `n` and `k` as the module doc says.
fn lowrank_slot(a: usize, j: usize, rank: usize, down: bool) -> usize {
    // The block's n and k: proj_down blocks are (rank, K), proj_up blocks (N, rank).
    let (outer, inner) = (a / 16, j / 16);
    let (n, k) = if down { (j % 16, a % 16) } else { (a % 16, j % 16) };
    let (p, l) = (n / 8, n % 8);
    let (q, m, e) = (k / 8, (k / 2) % 4, k % 2);
    (outer * (rank / 16) + inner) * 256 + 32 * l + 8 * m + 4 * p + 2 * q + e
}

/// Packs `proj_down` (lowbit: `[K, r]`, row-major) into Nunchaku's `[K, r]` fragment order.
#[must_use]
pub fn pack_down(d: &[u16], k: usize, rank: usize) -> Vec<u16> {
    assert!(k.is_multiple_of(16) && rank.is_multiple_of(RANK_MULTIPLE) && d.len() == k * rank);
    let mut out = vec![0u16; d.len()];
    for kk in 0..k {
        for j in 0..rank {
            out[lowrank_slot(kk, j, rank, true)] = d[kk * rank + j];
        }
    }
    out
}

/// Packs `proj_up` (`[N, r]`) into Nunchaku's `[N, r]` fragment order.
#[must_use]
pub fn pack_up(u: &[u16], n: usize, rank: usize) -> Vec<u16> {
    assert!(n.is_multiple_of(16) && rank.is_multiple_of(RANK_MULTIPLE) && u.len() == n * rank);
    let mut out = vec![0u16; u.len()];
    for nn in 0..n {
        for j in 0..rank {
            out[lowrank_slot(nn, j, rank, false)] = u[nn * rank + j];
        }
    }
    out
}

/// The inverse of [`pack_down`] (`down`) or [`pack_up`].
#[must_use]
pub fn unpack_lowrank(p: &[u16], rows: usize, rank: usize, down: bool) -> Vec<u16> {
    assert!(
        rows.is_multiple_of(16) && rank.is_multiple_of(RANK_MULTIPLE) && p.len() == rows * rank
    );
    let mut out = vec![0u16; p.len()];
    for a in 0..rows {
        for j in 0..rank {
            out[a * rank + j] = p[lowrank_slot(a, j, rank, down)];
        }
    }
    out
}

/// Groups of 64 along K that TinyChat's W4A16 kernels read for `k` input channels: the real
/// ones, then zero groups up to a multiple of 16 (whole int32 packs of 8 groups, an even
/// number of packs).
#[must_use]
pub fn awq_groups(k: usize) -> usize {
    (k / 64).div_ceil(16) * 16
}

/// Byte of the packed AWQ `qweight` (`[N/4, K/2]` as int32) holding code (n, k), and whether
/// it is the high nibble. Each int16 word holds k = j, j + 8, j + 16, j + 24 of a 32-run in
/// nibbles 0–3; 16 words cover 64 K values; four rows' 64-runs are stored one after the other.
fn awq_nibble(n: usize, k: usize, k_len: usize) -> (usize, bool) {
    let (rows4, r) = (n / 4, n % 4);
    let (chunk, s) = (k / 64, k % 64);
    let word = (((rows4 * (k_len / 64) + chunk) * 4 + r) * 16) + (s / 32) * 8 + s % 8;
    let p = (s % 32) / 8;
    (2 * word + p / 2, p % 2 == 1)
}

/// Packs signed natural codes (I8 `[N, K/2]`, low nibble = even k) into TinyChat's W4A16
/// layout as unsigned codes `c + zero`. `N` must be a multiple of 4 and `K` of 64.
#[must_use]
pub fn awq_pack(natural: &[u8], n: usize, k: usize, zero: i8) -> Vec<u8> {
    assert!(n.is_multiple_of(4) && k.is_multiple_of(64) && natural.len() == n * k / 2);
    let mut out = vec![0u8; natural.len()];
    for row in 0..n {
        for kk in 0..k {
            let byte = natural[(row * k + kk) / 2];
            let nib = if kk % 2 == 0 { byte & 0xF } else { byte >> 4 };
            let signed = ((nib << 4) as i8) >> 4;
            let q = (signed.wrapping_add(zero) as u8) & 0xF;
            let (at, high) = awq_nibble(row, kk, k);
            out[at] |= if high { q << 4 } else { q };
        }
    }
    out
}

/// The inverse of [`awq_pack`]: natural signed codes.
#[must_use]
pub fn awq_unpack(packed: &[u8], n: usize, k: usize, zero: i8) -> Vec<u8> {
    assert!(n.is_multiple_of(4) && k.is_multiple_of(64) && packed.len() == n * k / 2);
    let mut out = vec![0u8; packed.len()];
    for row in 0..n {
        for kk in 0..k {
            let (at, high) = awq_nibble(row, kk, k);
            let q = if high { packed[at] >> 4 } else { packed[at] & 0xF };
            let c = ((q as i8).wrapping_sub(zero) as u8) & 0xF;
            out[(row * k + kk) / 2] |= if kk % 2 == 0 { c } else { c << 4 };
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A few positions worked out by hand from the formulas in the module doc.
    #[test]
    fn positions_by_hand() {
        // n = 0, k = 0..2: tile 0, word 0, nibbles 0 and 1: byte 0.
        assert_eq!(qweight_byte(0, 0, 2), 0);
        // k = 8: k_lane 1 → word (((0·8 + 0)·4 + 1)·2 + 0)·2 + 0 = 4: byte 16.
        assert_eq!(qweight_byte(0, 8, 2), 16);
        // k = 32: k_sub 1 → word 1: byte 4; k = 38: nibble 6 → byte 4 + 3.
        assert_eq!((qweight_byte(0, 32, 2), qweight_byte(0, 38, 2)), (4, 7));
        // n = 8: n_sub 1 → word 2: byte 8; n = 1: n_lane 1 → word 16: byte 64.
        assert_eq!((qweight_byte(8, 0, 2), qweight_byte(1, 0, 2)), (8, 64));
        // n = 16: n_pack 1 → word 8·4·2·2 = 128; k = 64: the next K tile, 1024 words on.
        assert_eq!((qweight_byte(16, 0, 2), qweight_byte(0, 64, 2)), (512, 4096));
        // The second N tile starts after K/64 tiles of 4096 bytes.
        assert_eq!(qweight_byte(128, 0, 2), 8192);
        // Vector blocks: 16a + 8b + 2c + d → 16a + 4c + 2b + d.
        let slots: Vec<usize> = (0..16).map(vector_slot).collect();
        assert_eq!(slots, [0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15]);
        assert_eq!(vector_slot(127), 127);
        // Low-rank: element (n = 8p + l, k = 8q + 2m + e) at 32l + 8m + 4p + 2q + e.
        assert_eq!(lowrank_slot(0, 1, 16, false), 1); // up: n 0, k 1 → e 1
        assert_eq!(lowrank_slot(1, 0, 16, false), 32); // up: n 1 → l 1
        assert_eq!(lowrank_slot(8, 8, 16, false), 4 + 2); // up: p 1, q 1
        assert_eq!(lowrank_slot(2, 3, 16, true), 3 * 32 + 8); // down: n = rank 3, k = 2 → m 1
        assert_eq!(lowrank_slot(16, 0, 32, true), 2 * 256); // down: the next K block, 2 rank blocks on
        // AWQ: (n, k) = (1, 0): row 1 of the first 4-row group, int16 word 16: byte 32.
        assert_eq!(awq_nibble(1, 0, 64), (32, false));
        // k = 8: nibble 1 of word 0; k = 16: nibble 2 (byte 1); k = 32: word 8.
        assert_eq!(awq_nibble(0, 8, 64), (0, true));
        assert_eq!(awq_nibble(0, 16, 64), (1, false));
        assert_eq!(awq_nibble(0, 32, 64), (16, false));
        assert_eq!(awq_groups(256), 16);
        assert_eq!(awq_groups(3072), 48);
    }

    fn bytes(len: usize, seed: u64) -> Vec<u8> {
        let mut rng = lowbit_fixtures::rng::Rng::new(seed);
        (0..len).map(|_| (rng.next_u64() >> 56) as u8).collect()
    }

    /// Every packing is a permutation: its inverse restores the input, and no two inputs land
    /// on the same slot.
    #[test]
    fn packings_round_trip() {
        let (n, k, r) = (256, 384, 32);
        let w = bytes(n * k / 2, 1);
        let p = pack_qweight(&w, n, k);
        assert_ne!(p, w);
        assert_eq!(unpack_qweight(&p, n, k), w);
        let v: Vec<u16> = (0..n as u16).collect();
        assert_eq!(unpack_vector(&pack_vector(&v)), v);
        let s: Vec<u16> = (0..(k / 64 * n) as u16).collect();
        assert_eq!(unpack_wscales(&pack_wscales(&s, k / 64, n), k / 64, n), s);
        let d: Vec<u16> = (0..(k * r) as u16).collect();
        let mut seen = pack_down(&d, k, r);
        assert_eq!(unpack_lowrank(&seen, k, r, true), d);
        seen.sort_unstable();
        assert_eq!(seen, d, "a permutation");
        let u: Vec<u16> = (0..(n * r) as u16).collect();
        assert_eq!(unpack_lowrank(&pack_up(&u, n, r), n, r, false), u);
        // AWQ: signed codes −7..7 (as lowbit writes) survive the unsigned shift.
        let c: Vec<u8> = bytes(n * k / 2, 2)
            .iter()
            .map(|b| {
                let lo = (b & 15) % 15;
                let hi = (b >> 4) % 15;
                ((lo + 9) & 15) | (((hi + 9) & 15) << 4)
            })
            .collect();
        assert_eq!(awq_unpack(&awq_pack(&c, n, k, 7), n, k, 7), c);
    }
}
