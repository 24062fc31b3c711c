// bitsandbytes NF4, blocksize 64 (formats/nf4.md): W4A16 GEMMs. Blocks run over the flat index
// e = n·K + k of the row-major weight, so a block may straddle two rows when K % 64 ≠ 0.
// Stored (Scheme::stored order):
//   nf4:    w[0] = codes U8 [ceil(N·K/2), 1] (element e in byte e/2, HIGH nibble when e is
//           even), w[1] = absmax F32 [B], w[2] = quant_map F32 [16], w[3] = quant-state JSON.
//   nf4:dq: w[0] = codes, w[1] = absmax codes U8 [B], w[2] = quant_map F32 [16],
//           w[3] = nested_absmax F32 [ceil(B/256)], w[4] = nested_quant_map F32 [256],
//           w[5] = quant-state JSON; the JSON's nested_offset (as f32) comes in a.alpha.
// W = quant_map[q] · absmax_b in f32, with absmax_b = nested_quant_map[c_b] ·
// nested_absmax[b/256] + offset under double quantization (each operation rounded, no FMA, as
// lowbit_layout::nf4::decode), rounded to BF16 (not exact: factor 1, SCALE_K = 0).
#include "gemm_a16.cuh"

template <bool DQ>
struct Nf4 {
    static constexpr int SCALE_K = 0;
    __device__ static float decode8(const GemmArgs& a, int n, int k, u32 out[4]) {
        // K % 8 == 0: e is a multiple of 8, so the eight elements share one block and start
        // a 4-byte aligned word; byte j holds e+2j (high nibble) and e+2j+1 (low nibble).
        const size_t e = (size_t)n * a.k + k;
        const size_t b = e / 64;
        float absmax;
        if (DQ) {
            const float nested = ((const float*)a.w[4])[a.w[1][b]];
            const float s = ((const float*)a.w[3])[b / 256];
            absmax = __fadd_rn(__fmul_rn(nested, s), a.alpha);
        } else {
            absmax = ((const float*)a.w[1])[b];
        }
        const float* code = (const float*)a.w[2];
        const u32 w = *(const u32*)(a.w[0] + e / 2);
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const float v0 = __fmul_rn(code[(w >> (8 * j + 4)) & 15u], absmax);
            const float v1 = __fmul_rn(code[(w >> (8 * j)) & 15u], absmax);
            out[j] = pack_bf16x2(v0, v1);
        }
        return 1.f;
    }
};

LOWBIT_GEMM_A16(nf4, Nf4<false>)
LOWBIT_GEMM_A16(nf4_dq, Nf4<true>)
