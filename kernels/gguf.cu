// GGUF blocks (formats/gguf.md, lowbit_dtype::blocks): W·A16 GEMMs straight from ggml's packed
// blocks. w[0] = the tensor's raw data: N rows, each K/QK blocks of `bytes` bytes (no padding
// between rows or blocks). Every block size used here is even and every multi-byte field sits
// at an even offset, so with w[0] 2-byte aligned all reads below are aligned 16-bit loads.
//
// Exact types (integer codes, exact in BF16) return the block's (or sub-block's) f32 scale as
// the factor; Q4_K, whose values d·sc·q − dmin·m are not, rounds them to BF16.
#include "gemm_a16.cuh"

// Eight bytes at p (2-byte aligned), little-endian, as two words.
__device__ __forceinline__ void gguf_load8(const u8* p, u32& lo, u32& hi) {
    const unsigned short* h = (const unsigned short*)p;
    lo = (u32)h[0] | ((u32)h[1] << 16);
    hi = (u32)h[2] | ((u32)h[3] << 16);
}

__device__ __forceinline__ u32 gguf_byte(u32 lo, u32 hi, int i) {
    return ((i < 4 ? lo : hi) >> (8 * (i & 3))) & 0xFFu;
}

// The block of row n holding element k, and k's position inside it.
template <int QK, int BYTES>
__device__ __forceinline__ const u8* gguf_block(const GemmArgs& a, int n, int k) {
    return a.w[0] + ((size_t)n * (a.k / QK) + k / QK) * BYTES;
}

// Q8_0 (34 bytes): d f16, then 32 int8 codes in order. W = q·d: factor d per 32.
struct Q8_0 {
    static constexpr int SCALE_K = 32;
    __device__ static float decode8(const GemmArgs& a, int n, int k, u32 out[4]) {
        const u8* blk = gguf_block<32, 34>(a, n, k);
        u32 lo, hi;
        gguf_load8(blk + 2 + (k & 31), lo, hi);
#pragma unroll
        for (int i = 0; i < 4; ++i)
            out[i] = pack_int_bf16x2((int)(i8)gguf_byte(lo, hi, 2 * i), (int)(i8)gguf_byte(lo, hi, 2 * i + 1));
        return f16_to_f32(*(const unsigned short*)blk);
    }
};

// Q4_0 (18 bytes): d f16, then 16 bytes; byte j holds element j (low nibble) and j+16 (high).
// W = (q − 8)·d: factor d per 32.
struct Q4_0 {
    static constexpr int SCALE_K = 32;
    __device__ static float decode8(const GemmArgs& a, int n, int k, u32 out[4]) {
        const u8* blk = gguf_block<32, 18>(a, n, k);
        const int p = k & 31;
        u32 lo, hi;
        gguf_load8(blk + 2 + (p & 15), lo, hi);
        const int shift = p < 16 ? 0 : 4;
#pragma unroll
        for (int i = 0; i < 4; ++i)
            out[i] = pack_int_bf16x2((int)((gguf_byte(lo, hi, 2 * i) >> shift) & 15u) - 8,
                                     (int)((gguf_byte(lo, hi, 2 * i + 1) >> shift) & 15u) - 8);
        return f16_to_f32(*(const unsigned short*)blk);
    }
};

// TQ2_0 (66 bytes): qs[64], then d f16. In 128-element half h, byte 32h + m holds elements
// 128h + m + 32l at bits 2l. W = (c − 1)·d (a code 3 gives 2·d, as ggml): factor d per 256.
struct TQ2_0 {
    static constexpr int SCALE_K = 256;
    __device__ static float decode8(const GemmArgs& a, int n, int k, u32 out[4]) {
        const u8* blk = gguf_block<256, 66>(a, n, k);
        const int e = k & 255, h = e >> 7, l = (e >> 5) & 3, m = e & 31;
        u32 lo, hi;
        gguf_load8(blk + 32 * h + m, lo, hi);
        const int shift = 2 * l;
#pragma unroll
        for (int i = 0; i < 4; ++i)
            out[i] = pack_int_bf16x2((int)((gguf_byte(lo, hi, 2 * i) >> shift) & 3u) - 1,
                                     (int)((gguf_byte(lo, hi, 2 * i + 1) >> shift) & 3u) - 1);
        return f16_to_f32(*(const unsigned short*)(blk + 64));
    }
};

// Q6_K (210 bytes): ql[128], qh[64], scales int8[16], d f16. Element 128h + 32g + l (l < 32):
// low four bits in ql[64h + 32·(g&1) + l] (nibble g>>1), high two bits in qh[32h + l] at bit
// 2g, scale scales[e/16]. ggml computes (d·sc)·(q − 32): the codes go exact, the factor is
// d·sc in f32, per 16.
struct Q6_K {
    static constexpr int SCALE_K = 16;
    __device__ static float decode8(const GemmArgs& a, int n, int k, u32 out[4]) {
        const u8* blk = gguf_block<256, 210>(a, n, k);
        const int e = k & 255, h = e >> 7, g = (e >> 5) & 3, l = e & 31;
        u32 qlo, qhi, hlo, hhi;
        gguf_load8(blk + 64 * h + 32 * (g & 1) + l, qlo, qhi);
        gguf_load8(blk + 128 + 32 * h + l, hlo, hhi);
        const int ls = 4 * (g >> 1), hs = 2 * g;
        int q[8];
#pragma unroll
        for (int i = 0; i < 8; ++i)
            q[i] = (int)(((gguf_byte(qlo, qhi, i) >> ls) & 15u) | (((gguf_byte(hlo, hhi, i) >> hs) & 3u) << 4)) - 32;
#pragma unroll
        for (int i = 0; i < 4; ++i) out[i] = pack_int_bf16x2(q[2 * i], q[2 * i + 1]);
        const float d = f16_to_f32(*(const unsigned short*)(blk + 208));
        const float sc = (float)(int)(i8)blk[192 + (e >> 4)];
        return __fmul_rn(d, sc);
    }
};

// Q4_K (144 bytes): d f16, dmin f16, scales[12] (six-bit scales and mins, ggml's
// get_scale_min_k4), qs[128]: byte l of chunk c holds element 64c + l (low nibble) and
// 64c + 32 + l (high nibble). W = (d·sc)·q − (dmin·m) in f32 as ggml, rounded to BF16.
struct Q4_K {
    static constexpr int SCALE_K = 0;
    __device__ static float decode8(const GemmArgs& a, int n, int k, u32 out[4]) {
        const u8* blk = gguf_block<256, 144>(a, n, k);
        const int e = k & 255, c = e >> 6, hiw = (e >> 5) & 1, l = e & 31;
        const int j = 2 * c + hiw;
        const u8* s = blk + 4;
        u32 sc, m;
        if (j < 4) {
            sc = s[j] & 63u;
            m = s[j + 4] & 63u;
        } else {
            sc = (s[j + 4] & 0xFu) | ((u32)(s[j - 4] >> 6) << 4);
            m = (u32)(s[j + 4] >> 4) | ((u32)(s[j] >> 6) << 4);
        }
        const float d = f16_to_f32(*(const unsigned short*)blk);
        const float dmin = f16_to_f32(*(const unsigned short*)(blk + 2));
        const float d1 = __fmul_rn(d, (float)sc), m1 = __fmul_rn(dmin, (float)m);
        u32 lo, hi;
        gguf_load8(blk + 16 + 32 * c + l, lo, hi);
        const int shift = 4 * hiw;
        float v[8];
#pragma unroll
        for (int i = 0; i < 8; ++i)
            v[i] = __fsub_rn(__fmul_rn(d1, (float)((gguf_byte(lo, hi, i) >> shift) & 15u)), m1);
#pragma unroll
        for (int i = 0; i < 4; ++i) out[i] = pack_bf16x2(v[2 * i], v[2 * i + 1]);
        return 1.f;
    }
};

LOWBIT_GEMM_A16(q8_0, Q8_0)
LOWBIT_GEMM_A16(q4_0, Q4_0)
LOWBIT_GEMM_A16(tq2_0, TQ2_0)
LOWBIT_GEMM_A16(q6_k, Q6_K)
LOWBIT_GEMM_A16(q4_k, Q4_K)
