// FP8 layouts (formats/fp8.md).
//
// W8A16 (the shared weight-only GEMM of gemm_a16.cuh), stored in Scheme::stored order:
//   fp8, fp8:e5m2:      w[0] = codes F8 [N, K]; W = fp8 (exact in BF16, factor 1).
//   comfy:fp8[:e5m2]:   w[0] = codes F8 [N, K], w[1] = weight_scale F32 [] (0-dim),
//                       w[2] = comfy_quant marker (not read); W = bf16(fp8 · bf16(scale)),
//                       rounded to BF16 in the decoder (factor 1), as
//                       lowbit_layout::fp8::decode_comfy, whose output is BF16-valued: the
//                       weights are the decoder's, bit for bit.
//   bfl:fp8:            w[0] = codes E4M3 [N, K], w[1] = weight_scale F32 [N];
//                       W = fp8 · scale[n] in f32: codes exact, factor scale[n].
//
// W8A8 on FP8 tensor cores (sm_89+): `fp8_act_quant` turns BF16 activations into per-token
// E4M3 codes and scales, then `w8a8_*` multiplies codes by the stored weight codes
// (mma.sync m16n8k32, f32 accumulators) and applies every scale in the epilogue.
#include "gemm_a16.cuh"

// ---------------------------------------------------------------------------------------------
// W8A16 decoders.

// Eight FP8 codes of row n from k: one 8-byte aligned load (K % 8 == 0).
__device__ __forceinline__ uint2 fp8_codes8(const GemmArgs& a, int n, int k) {
    return *(const uint2*)(a.w[0] + (size_t)n * a.k + k);
}

template <bool E5M2>
__device__ __forceinline__ float fp8_to_f32(u32 c) {
    return E5M2 ? e5m2_to_f32((u8)c) : e4m3_to_f32((u8)c);
}

// Element i (0..8) of the eight codes.
__device__ __forceinline__ u32 fp8_byte(uint2 c, int i) {
    return ((i < 4 ? c.x : c.y) >> (8 * (i & 3))) & 0xFFu;
}

// Plain FP8 (and BFL's per-row variant, whose factor is its row scale): the values themselves,
// exact in BF16.
template <bool E5M2, bool ROW_SCALE>
struct Fp8Exact {
    static constexpr int SCALE_K = 0;
    __device__ static float decode8(const GemmArgs& a, int n, int k, u32 out[4]) {
        const uint2 c = fp8_codes8(a, n, k);
#pragma unroll
        for (int i = 0; i < 4; ++i)
            out[i] = pack_bf16x2(fp8_to_f32<E5M2>(fp8_byte(c, 2 * i)), fp8_to_f32<E5M2>(fp8_byte(c, 2 * i + 1)));
        return ROW_SCALE ? ((const float*)a.w[1])[n] : 1.f;
    }
};

// ComfyUI: bf16(fp8 · bf16(scale)). The product of an FP8 value and a BF16 value is exact in
// f32; only the final rounding to BF16 (nearest even) remains, as comfy-kitchen's
// dequantize_per_tensor_fp8 and the Rust decoder.
template <bool E5M2>
struct Fp8Comfy {
    static constexpr int SCALE_K = 0;
    __device__ static float decode8(const GemmArgs& a, int n, int k, u32 out[4]) {
        const float s = bf16_to_f32(f32_to_bf16(*(const float*)a.w[1]));
        const uint2 c = fp8_codes8(a, n, k);
#pragma unroll
        for (int i = 0; i < 4; ++i)
            out[i] = pack_bf16x2(__fmul_rn(fp8_to_f32<E5M2>(fp8_byte(c, 2 * i)), s),
                                 __fmul_rn(fp8_to_f32<E5M2>(fp8_byte(c, 2 * i + 1)), s));
        return 1.f;
    }
};

typedef Fp8Exact<false, false> Fp8E4M3;
typedef Fp8Exact<true, false> Fp8E5M2;
typedef Fp8Exact<false, true> Fp8Bfl;
LOWBIT_GEMM_A16(fp8_e4m3, Fp8E4M3)
LOWBIT_GEMM_A16(fp8_e5m2, Fp8E5M2)
LOWBIT_GEMM_A16(comfy_fp8_e4m3, Fp8Comfy<false>)
LOWBIT_GEMM_A16(comfy_fp8_e5m2, Fp8Comfy<true>)
LOWBIT_GEMM_A16(bfl_fp8, Fp8Bfl)

// ---------------------------------------------------------------------------------------------
// W8A8: per-token activation quantization.

// f32 → float8_e4m3fn, round to nearest even, saturating: |x| ≥ 448 (±Inf included) gives ±448
// (0x7E), NaN gives 0x7F with the sign. Bit-exact with `cvt.rn.satfinite.e4m3x2.f32`; the
// software path for sm_80/86, where that instruction does not exist.
__device__ __forceinline__ u32 f32_to_e4m3_soft(float x) {
    const u32 bits = __float_as_uint(x);
    const u32 sign = (bits >> 24) & 0x80u;
    const u32 abs = bits & 0x7FFFFFFFu;
    if (abs > 0x7F800000u) return sign | 0x7Fu;   // NaN
    if (abs >= 0x43E00000u) return sign | 0x7Eu;  // ≥ 448, ±Inf: saturate
    if (abs < 0x3C800000u) {
        // Below 2^-6: subnormal codes m · 2^-9 (m = 8 is the smallest normal, code 0x08).
        // |x| · 2^9 is exact; the conversion rounds to nearest even.
        return sign | (u32)__float2int_rn(__uint_as_float(abs) * 512.0f);
    }
    // Normal: keep 3 mantissa bits, rounding the 20 dropped ones to nearest even (a carry
    // moves into the exponent), then rebias 127 → 7. Below 448 the result stays ≤ 0x7E.
    const u32 r = (abs + 0x7FFFFu + ((abs >> 20) & 1u)) >> 20;
    return sign | (r - (120u << 3));
}

// Two f32 to two E4M3 codes in a 16-bit word (`lo` in the low byte).
__device__ __forceinline__ u32 f32x2_to_e4m3x2(float lo, float hi) {
#if __CUDA_ARCH__ >= 890
    unsigned short r;
    asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(r) : "f"(hi), "f"(lo));
    return r;
#else
    return f32_to_e4m3_soft(lo) | (f32_to_e4m3_soft(hi) << 8);
#endif
}

#define LOWBIT_ACT_THREADS 256

// One block per token row m (grid = M blocks of 256 threads). Reads a.x [M, K] BF16; writes
// codes to (u8*)a.y [M, K] and the scale to ((float*)a.ascale)[m]:
//   amax = max |x| (f32; NaN ignored), s = amax / 448 (IEEE division), s = 1 when amax == 0,
//   code = e4m3_rne_satfinite(x / s) (IEEE division, then round to nearest even, saturating).
// Any K. Runs on every architecture (software encoder below sm_89).
extern "C" __global__ void __launch_bounds__(LOWBIT_ACT_THREADS) fp8_act_quant(const GemmArgs a) {
    const int m = blockIdx.x;
    if (m >= a.m) return;
    const int tid = threadIdx.x;
    const bf16_t* x = a.x + (size_t)m * a.k;
    u8* y = (u8*)a.y + (size_t)m * a.k;
    float amax = 0.f;
    for (int i = tid; i < a.k; i += LOWBIT_ACT_THREADS) amax = fmaxf(amax, fabsf(bf16_to_f32(x[i])));
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xFFFFFFFFu, amax, o));
    __shared__ float red[LOWBIT_ACT_THREADS / 32];
    if ((tid & 31) == 0) red[tid >> 5] = amax;
    __syncthreads();
    amax = red[0];
#pragma unroll
    for (int w = 1; w < LOWBIT_ACT_THREADS / 32; ++w) amax = fmaxf(amax, red[w]);
    const float s = amax == 0.f ? 1.f : __fdiv_rn(amax, 448.f);
    if (tid == 0) ((float*)a.ascale)[m] = s;
    const int pairs = a.k >> 1;
    for (int p = tid; p < pairs; p += LOWBIT_ACT_THREADS) {
        const u32 c = f32x2_to_e4m3x2(__fdiv_rn(bf16_to_f32(x[2 * p]), s),
                                      __fdiv_rn(bf16_to_f32(x[2 * p + 1]), s));
        y[2 * p] = (u8)c;
        y[2 * p + 1] = (u8)(c >> 8);
    }
    if ((a.k & 1) && tid == 0) {
        const float v = __fdiv_rn(bf16_to_f32(x[a.k - 1]), s);
        y[a.k - 1] = (u8)f32x2_to_e4m3x2(v, 0.f);
    }
}

// ---------------------------------------------------------------------------------------------
// W8A8 GEMM: Y[M, N] = (X8 · W8ᵀ) · ascale[m] · wscale (+ bias[n]), BF16 out.
//
// a.x: E4M3 codes [M, K] (from fp8_act_quant), a.ascale: f32 [M], a.w[0]: weight codes [N, K]
// (E4M3, or E5M2 for the e5m2 layouts), a.w[1]: the layout's scale (see the kernels below).
// Tiles as gemm_a16.cuh: 64 × 64 outputs per block of 4 warps (each 32 × 32), K in steps of
// 128 bytes, double-buffered with cp.async for both operands; K % 16 == 0 (16-byte chunks past
// K are zero-filled), any M and N. Each 128-wide K tile is summed by the tensor cores into a
// fresh f32 fragment and then added to the main accumulators on the CUDA cores, so the FP8
// units' accumulation precision only ever sees 128 products.

#define LOWBIT_W8A8_THREADS 128

enum { W8A8_NO_SCALE = 0, W8A8_TENSOR_SCALE = 1, W8A8_ROW_SCALE = 2 };

#if __CUDA_ARCH__ >= 890
template <bool E5M2>
__device__ __forceinline__ void mma_fp8(float d[4], const u32 a[4], u32 b0, u32 b1) {
    if (E5M2) {
        asm volatile(
            "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e5m2.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
            "{%8,%9}, {%0,%1,%2,%3};"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    } else {
        asm volatile(
            "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
            "{%8,%9}, {%0,%1,%2,%3};"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
}
#endif

template <bool E5M2, int SCALE>
__device__ __forceinline__ void gemm_w8a8(const GemmArgs& a) {
#if __CUDA_ARCH__ >= 890
    constexpr int BM = 64, BN = 64, BK = 128, LD = BK + 16;  // bytes; 144-byte rows: no conflicts
    __shared__ __align__(16) u8 As[2][BM * LD];
    __shared__ __align__(16) u8 Bs[2][BN * LD];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wm = (warp >> 1) * 32, wn = (warp & 1) * 32;
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    const u8* X = (const u8*)a.x;
    const u8* W = a.w[0];
    float acc[2][4][4];
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;

    // One K tile of both operands into stage `st`: 64 rows × 128 bytes each, 16-byte chunks.
    auto load = [&](int st, int k0) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int c = tid + i * LOWBIT_W8A8_THREADS, r = c >> 3, kc = (c & 7) * 16;
            const int gk = k0 + kc;
            const int gm = m0 + r, gn = n0 + r;
            const bool oka = gm < a.m && gk < a.k, okb = gn < a.n && gk < a.k;
            cp_async16(&As[st][r * LD + kc], oka ? X + (size_t)gm * a.k + gk : X, oka);
            cp_async16(&Bs[st][r * LD + kc], okb ? W + (size_t)gn * a.k + gk : W, okb);
        }
        cp_async_commit();
    };

    const int tiles = (a.k + BK - 1) / BK;
    load(0, 0);
    for (int t = 0; t < tiles; ++t) {
        const int st = t & 1, k0 = t * BK;
        if (t + 1 < tiles) {
            load(st ^ 1, k0 + BK);
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        float part[2][4][4];
#pragma unroll
        for (int i = 0; i < 2; ++i)
#pragma unroll
            for (int j = 0; j < 4; ++j)
#pragma unroll
                for (int e = 0; e < 4; ++e) part[i][j][e] = 0.f;
#pragma unroll
        for (int ks = 0; ks < BK / 32; ++ks) {
            if (k0 + ks * 32 >= a.k) break;
            u32 af[2][4], bfr[4][2];
#pragma unroll
            for (int i = 0; i < 2; ++i)
                ldmatrix_x4(af[i], &As[st][(wm + i * 16 + (lane & 15)) * LD + ks * 32 + (lane >> 4) * 16]);
#pragma unroll
            for (int j = 0; j < 2; ++j) {
                u32 r[4];
                const int l8 = lane >> 3;
                ldmatrix_x4(r, &Bs[st][(wn + j * 16 + (l8 >> 1) * 8 + (lane & 7)) * LD + ks * 32 + (l8 & 1) * 16]);
                bfr[2 * j][0] = r[0];
                bfr[2 * j][1] = r[1];
                bfr[2 * j + 1][0] = r[2];
                bfr[2 * j + 1][1] = r[3];
            }
#pragma unroll
            for (int i = 0; i < 2; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) mma_fp8<E5M2>(part[i][j], af[i], bfr[j][0], bfr[j][1]);
        }
#pragma unroll
        for (int i = 0; i < 2; ++i)
#pragma unroll
            for (int j = 0; j < 4; ++j)
#pragma unroll
                for (int e = 0; e < 4; ++e) acc[i][j][e] = __fadd_rn(acc[i][j][e], part[i][j][e]);
        __syncthreads();  // stage st is refilled by the next iteration's load
    }

    float ts = 1.f;
    if (SCALE == W8A8_TENSOR_SCALE) ts = bf16_to_f32(f32_to_bf16(*(const float*)a.w[1]));
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int row = m0 + wm + i * 16 + (lane >> 2) + (e >> 1) * 8;
                const int col = n0 + wn + j * 8 + 2 * (lane & 3) + (e & 1);
                if (row >= a.m || col >= a.n) continue;
                float v = __fmul_rn(acc[i][j][e], a.ascale[row]);
                if (SCALE == W8A8_TENSOR_SCALE) v = __fmul_rn(v, ts);
                if (SCALE == W8A8_ROW_SCALE) v = __fmul_rn(v, ((const float*)a.w[1])[col]);
                if (a.bias) v = __fadd_rn(v, bf16_to_f32(a.bias[col]));
                a.y[(size_t)row * a.n + col] = f32_to_bf16(v);
            }
#else
    asm volatile("trap;");
#endif
}

#define LOWBIT_GEMM_W8A8(name, E5M2, SCALE)                                     \
    extern "C" __global__ void __launch_bounds__(LOWBIT_W8A8_THREADS)           \
        name(const GemmArgs a) {                                                 \
        gemm_w8a8<E5M2, SCALE>(a);                                               \
    }

// fp8 / fp8:e5m2: no weight scale. comfy:fp8[:e5m2]: bf16(w[1]), the F32 scalar rounded to
// BF16 as the decoder rounds it (a lowbit-written scale is already a BF16 value); the decoder
// also rounds each product q · bf16(scale) to BF16, which an FP8 product cannot: W8A8 uses the
// unrounded q · bf16(scale). bfl:fp8: w[1][n].
LOWBIT_GEMM_W8A8(w8a8_e4m3, false, W8A8_NO_SCALE)
LOWBIT_GEMM_W8A8(w8a8_e5m2, true, W8A8_NO_SCALE)
LOWBIT_GEMM_W8A8(w8a8_comfy_e4m3, false, W8A8_TENSOR_SCALE)
LOWBIT_GEMM_W8A8(w8a8_comfy_e5m2, true, W8A8_TENSOR_SCALE)
LOWBIT_GEMM_W8A8(w8a8_bfl, false, W8A8_ROW_SCALE)
