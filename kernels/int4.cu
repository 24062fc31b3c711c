// Group-wise int4 (formats/int4.md): W4A16 GEMMs. Stored: w[0] = codes I8 [N, K/2] (even k in
// the low nibble, two's complement), w[1] = scales BF16 [K/G, N], w[2] = zero points BF16
// [K/G, N] (asymmetric only).
#include "gemm_a16.cuh"

// Eight codes of row n from k (k % 8 == 0): one 32-bit word, nibble i = element k+i.
__device__ __forceinline__ u32 int4_word(const GemmArgs& a, int n, int k) {
    return *(const u32*)(a.w[0] + ((size_t)n * a.k + k) / 2);
}

__device__ __forceinline__ int int4_code(u32 word, int i) {
    return ((int)(word << (28 - 4 * i))) >> 28;
}

// Symmetric: codes exact in BF16, the group scale folded on the f32 partial sums.
template <int G>
struct Int4Sym {
    static constexpr int SCALE_K = G;
    __device__ static float decode8(const GemmArgs& a, int n, int k, u32 out[4]) {
        const u32 w = int4_word(a, n, k);
#pragma unroll
        for (int i = 0; i < 4; ++i) out[i] = pack_int_bf16x2(int4_code(w, 2 * i), int4_code(w, 2 * i + 1));
        return bf16_to_f32(((const bf16_t*)a.w[1])[(size_t)(k / G) * a.n + n]);
    }
};

// Asymmetric: c · S + Z is not exact in BF16; decoded in f32 (multiply, then add) and rounded.
template <int G>
struct Int4Asym {
    static constexpr int SCALE_K = 0;
    __device__ static float decode8(const GemmArgs& a, int n, int k, u32 out[4]) {
        const u32 w = int4_word(a, n, k);
        const size_t g = (size_t)(k / G) * a.n + n;
        const float s = bf16_to_f32(((const bf16_t*)a.w[1])[g]);
        const float z = bf16_to_f32(((const bf16_t*)a.w[2])[g]);
#pragma unroll
        for (int i = 0; i < 4; ++i)
            out[i] = pack_bf16x2(__fadd_rn(__fmul_rn((float)int4_code(w, 2 * i), s), z),
                                 __fadd_rn(__fmul_rn((float)int4_code(w, 2 * i + 1), s), z));
        return 1.f;
    }
};

LOWBIT_GEMM_A16(int4_g32, Int4Sym<32>)
LOWBIT_GEMM_A16(int4_g64, Int4Sym<64>)
LOWBIT_GEMM_A16(int4_g128, Int4Sym<128>)
LOWBIT_GEMM_A16(int4_g32_asym, Int4Asym<32>)
LOWBIT_GEMM_A16(int4_g64_asym, Int4Asym<64>)
LOWBIT_GEMM_A16(int4_g128_asym, Int4Asym<128>)
