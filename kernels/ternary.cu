// lowbit ternary (formats/ternary.md): weight-only GEMMs over 2-bit codes. Stored: w[0] =
// codes U8 [N, K/4] (element k of row n in bits 2·(k mod 4) of byte n·K/4 + k/4, code q+1),
// w[1] = scales BF16 [N] (`ternary`) or [1] (`ternary:tensor`). W = (c − 1) · s: the codes are
// exact in BF16, the row's scale is the factor folded once on the f32 sum (SCALE_K = 0).
#include "gemm_a16.cuh"

// Code c (0, 1, 2) to q = c − 1; an invalid 3 gives 0, as the Rust decoder's table (which
// rejects the file before it decodes anything).
__device__ __forceinline__ int ternary_q(u32 c) {
    return (int)(c == 2u) - (int)(c == 0u);
}

// Eight codes of row n from k (k % 8 == 0, so K % 8 == 0 makes the two bytes 2-byte aligned):
// a 16-bit word, bits 2i..2i+1 = element k+i.
template <bool PER_TENSOR>
struct Ternary {
    static constexpr int SCALE_K = 0;
    __device__ static float decode8(const GemmArgs& a, int n, int k, u32 out[4]) {
        const u32 w = *(const unsigned short*)(a.w[0] + ((size_t)n * a.k + k) / 4);
#pragma unroll
        for (int i = 0; i < 4; ++i)
            out[i] = pack_int_bf16x2(ternary_q((w >> (4 * i)) & 3u), ternary_q((w >> (4 * i + 2)) & 3u));
        return bf16_to_f32(((const bf16_t*)a.w[1])[PER_TENSOR ? 0 : n]);
    }
};

LOWBIT_GEMM_A16(ternary_channel, Ternary<false>)
LOWBIT_GEMM_A16(ternary_tensor, Ternary<true>)
