// Hugging Face BitNet packing (formats/bitnet.md): W1.58A16 GEMM. Stored: w[0] = codes U8
// [N/4, K] (packed row r, column k holds logical rows i·N/4 + r, i = 0..3, in bits 2i..2i+1;
// code q+1), w[1] = weight_scale BF16 [1] holding 1/γ. The Rust decoder computes W = q / s in
// f32, i.e. ±(1/s) rounded once (q ∈ {−1, 0, +1}); here the codes go through the tensor cores
// exactly and the factor is that same f32 quotient 1/s (`__fdiv_rn`, IEEE), so the decoded
// weights are bit-identical to the decoder's: q · (1/s) = q / s for every code.
#include "gemm_a16.cuh"

__device__ __forceinline__ int bitnet_q(u32 c) {
    return (int)(c == 2u) - (int)(c == 0u);  // 0, 1, 2 → −1, 0, +1; an invalid 3 → 0
}

struct Bitnet {
    static constexpr int SCALE_K = 0;
    __device__ static float decode8(const GemmArgs& a, int n, int k, u32 out[4]) {
        const int quarter = a.n >> 2;  // N % 4 == 0 (the host refuses other N)
        const int i = n / quarter, r = n - i * quarter;
        // Eight bytes of packed row r from column k: 8-byte aligned as K % 8 == 0.
        const uint2 b = *(const uint2*)(a.w[0] + (size_t)r * a.k + k);
        const u32 shift = 2 * i;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const u32 word = j < 2 ? b.x : b.y;
            const u32 lo = (word >> (16 * (j & 1) + shift)) & 3u;
            const u32 hi = (word >> (16 * (j & 1) + 8 + shift)) & 3u;
            out[j] = pack_int_bf16x2(bitnet_q(lo), bitnet_q(hi));
        }
        return __fdiv_rn(1.0f, bf16_to_f32(*(const bf16_t*)a.w[1]));
    }
};

LOWBIT_GEMM_A16(bitnet, Bitnet)
