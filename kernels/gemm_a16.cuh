// The weight-only GEMM every "W·A16" layout shares: `Y = X · Wᵀ (+ lora · upᵀ) (+ bias)`, X and
// Y BF16, W decoded from its packed bytes into shared memory tile by tile (never to device
// memory), BF16 tensor-core products (mma.sync m16n8k16) accumulated in f32.
//
// A layout plugs in a decoder:
//
//     struct D {
//         // k-extent of one factor (a multiple of 16), or 0: one factor per row, folded once.
//         static constexpr int SCALE_K = 64;
//         // W[n, k .. k+8) as four BF16 pairs (out[i] holds element k+2i in its low half),
//         // returning the factor that multiplies them (1.0f when the values are final).
//         // 0 ≤ n < N, k % 8 == 0, k + 8 ≤ K.
//         __device__ static float decode8(const GemmArgs& a, int n, int k, u32 out[4]);
//     };
//
// Values that are exact in BF16 (int4 codes, ternary codes, FP8 values, ggml's integer quants)
// go through the tensor cores unrounded, and the factor (the group's scale) multiplies the f32
// partial sum of its SCALE_K-group: the only roundings are the f32 sums and the BF16 output.
// Decoders whose values are not exact in BF16 (NF4, asymmetric int4, Q4_K) round them and
// return 1.
//
// Tiles: 64 × 64 outputs per block of 4 warps (each 32 × 32), K in steps of 64; any M and N;
// K a multiple of 8 (the host refuses other K).
#pragma once
#include "common.cuh"

#define LOWBIT_A16_THREADS 128

template <class D>
__device__ __forceinline__ void gemm_a16(const GemmArgs& a) {
    constexpr int BM = 64, BN = 64, BK = 64, LD = BK + 8;
    __shared__ __align__(16) bf16_t As[BM * LD];
    __shared__ __align__(16) bf16_t Bs[BN * LD];
    __shared__ float Fs[BN][BK / 16];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wm = (warp >> 1) * 32, wn = (warp & 1) * 32;
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    float acc[2][4][4], part[2][4][4];
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[i][j][e] = part[i][j][e] = 0.f;
    const int steps = (a.k + 15) / 16;
    for (int k0 = 0; k0 < a.k; k0 += BK) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int c = tid + i * LOWBIT_A16_THREADS, r = c >> 3, kc = (c & 7) * 8;
            const int gm = m0 + r, gk = k0 + kc;
            const bool ok = gm < a.m && gk < a.k;
            const bf16_t* src = ok ? a.x + (size_t)gm * a.k + gk : a.x;
            cp_async16(&As[r * LD + kc], src, ok);
        }
        cp_async_commit();
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int c = tid + i * LOWBIT_A16_THREADS, r = c >> 3, kc = (c & 7) * 8;
            const int gn = n0 + r, gk = k0 + kc;
            u32 v[4] = {0u, 0u, 0u, 0u};
            float f = 0.f;
            if (gn < a.n && gk < a.k) f = D::decode8(a, gn, gk, v);
            *(uint4*)&Bs[r * LD + kc] = make_uint4(v[0], v[1], v[2], v[3]);
            if ((kc & 15) == 0) Fs[r][kc >> 4] = f;
        }
        cp_async_wait<0>();
        __syncthreads();
#pragma unroll
        for (int ks = 0; ks < BK / 16; ++ks) {
            const int step = (k0 >> 4) + ks;
            if (step >= steps) break;
            u32 af[2][4], bfr[4][2];
#pragma unroll
            for (int i = 0; i < 2; ++i)
                ldmatrix_x4(af[i], &As[(wm + i * 16 + (lane & 15)) * LD + ks * 16 + (lane >> 4) * 8]);
#pragma unroll
            for (int j = 0; j < 2; ++j) {
                u32 r[4];
                const int l8 = lane >> 3;
                ldmatrix_x4(r, &Bs[(wn + j * 16 + (l8 >> 1) * 8 + (lane & 7)) * LD + ks * 16 + (l8 & 1) * 8]);
                bfr[2 * j][0] = r[0];
                bfr[2 * j][1] = r[1];
                bfr[2 * j + 1][0] = r[2];
                bfr[2 * j + 1][1] = r[3];
            }
#pragma unroll
            for (int i = 0; i < 2; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) mma_bf16(part[i][j], af[i], bfr[j][0], bfr[j][1]);
            const bool fold =
                step + 1 == steps || (D::SCALE_K > 0 && ((step + 1) * 16) % D::SCALE_K == 0);
            if (fold) {
#pragma unroll
                for (int j = 0; j < 4; ++j) {
                    const int col = wn + j * 8 + 2 * (lane & 3);
                    const float f0 = Fs[col][ks], f1 = Fs[col + 1][ks];
#pragma unroll
                    for (int i = 0; i < 2; ++i) {
                        acc[i][j][0] += part[i][j][0] * f0;
                        acc[i][j][1] += part[i][j][1] * f1;
                        acc[i][j][2] += part[i][j][2] * f0;
                        acc[i][j][3] += part[i][j][3] * f1;
#pragma unroll
                        for (int e = 0; e < 4; ++e) part[i][j][e] = 0.f;
                    }
                }
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int row = m0 + wm + i * 16 + (lane >> 2) + (e >> 1) * 8;
                const int col = n0 + wn + j * 8 + 2 * (lane & 3) + (e & 1);
                if (row >= a.m || col >= a.n) continue;
                float v = acc[i][j][e];
                if (a.lora) {
                    const float* l = a.lora + (size_t)row * a.r;
                    const bf16_t* u = a.up + (size_t)col * a.r;
                    float s = 0.f;
                    for (int t = 0; t < a.r; ++t) s += l[t] * bf16_to_f32(u[t]);
                    v += s;
                }
                if (a.bias) v += bf16_to_f32(a.bias[col]);
                a.y[(size_t)row * a.n + col] = f32_to_bf16(v);
            }
}

// Few tokens (M ≤ LOWBIT_GEMV_TOKENS): the product is bound by reading the weight once, so
// no tensor cores: each warp streams one weight row (lanes take 8 consecutive elements, 256
// per step, coalesced), decodes it and dots it with every token's activations, in f32 (the
// factor multiplies each 8-element partial: one group). Blocks of 8 warps = 8 output rows;
// grid (ceil(N / 8), ceil(M / 16)).
#define LOWBIT_GEMV_TOKENS 16

template <class D>
__device__ __forceinline__ void gemv_a16(const GemmArgs& a) {
    const int lane = threadIdx.x & 31, n = blockIdx.x * 8 + (threadIdx.x >> 5);
    const int m0 = blockIdx.y * LOWBIT_GEMV_TOKENS;
    const int mt = min(LOWBIT_GEMV_TOKENS, a.m - m0);
    if (n >= a.n) return;
    float acc[LOWBIT_GEMV_TOKENS];
#pragma unroll
    for (int t = 0; t < LOWBIT_GEMV_TOKENS; ++t) acc[t] = 0.f;
#pragma unroll 4
    for (int k = lane * 8; k < a.k; k += 256) {
        u32 w[4];
        const float f = D::decode8(a, n, k, w);
        float wf[8];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            wf[2 * i] = __uint_as_float(w[i] << 16);
            wf[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
        }
#pragma unroll
        for (int t = 0; t < LOWBIT_GEMV_TOKENS; ++t) {
            if (t >= mt) break;
            const uint4 xv = *(const uint4*)(a.x + (size_t)(m0 + t) * a.k + k);
            const u32 xs[4] = {xv.x, xv.y, xv.z, xv.w};
            float d = 0.f;
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                d += __uint_as_float(xs[i] << 16) * wf[2 * i];
                d += __uint_as_float(xs[i] & 0xffff0000u) * wf[2 * i + 1];
            }
            acc[t] += d * f;
        }
    }
#pragma unroll
    for (int t = 0; t < LOWBIT_GEMV_TOKENS; ++t) {
        if (t >= mt) break;
        float v = acc[t];
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (lane == 0) {
            const int row = m0 + t;
            if (a.lora) {
                const float* l = a.lora + (size_t)row * a.r;
                const bf16_t* u = a.up + (size_t)n * a.r;
                float s = 0.f;
                for (int j = 0; j < a.r; ++j) s += l[j] * bf16_to_f32(u[j]);
                v += s;
            }
            if (a.bias) v += bf16_to_f32(a.bias[n]);
            a.y[(size_t)row * a.n + n] = f32_to_bf16(v);
        }
    }
}

// Defines `name` (the tiled tensor-core GEMM) and `name##_gemv` (few tokens) for a decoder.
#define LOWBIT_GEMM_A16(name, Decoder)                                          \
    extern "C" __global__ void __launch_bounds__(LOWBIT_A16_THREADS)            \
        name(const GemmArgs a) {                                                 \
        gemm_a16<Decoder>(a);                                                    \
    }                                                                            \
    extern "C" __global__ void __launch_bounds__(256) name##_gemv(const GemmArgs a) { \
        gemv_a16<Decoder>(a);                                                    \
    }
