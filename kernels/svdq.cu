// SVDQuant (formats/svdq.md): stored w[0] = qweight I8 [N, K/2] (int4 g64 codes, even k in the
// low nibble), w[1] = wscales BF16 [K/64, N], w[2] = smooth_factor BF16 [K], w[3] = proj_down
// BF16 [K, R], w[4] = proj_up BF16 [N, R].
//
// W4A4 runs four kernels:
// 1. `svdq_prep_w4a4` reads X once per token: x / λ quantized to int4 per group of 64 (scale
//    absmax/7 floored at 1e-10, round half to even, clamp ±7: IEEE f32 division exactly as
//    `lowbit_layout::svdq::quantize_token`, so the codes are the reference's);
// 2. `svdq_lora_partial` and `svdq_lora_reduce`: the low-rank down-projection L = X · proj_down
//    (unsmoothed X, f32), split over the channels so that a single token still fills the GPU;
// 3. `svdq_w4a4`: int8 tensor cores (mma m16n8k32 s8: int4 values are exact in int8), one exact
//    int32 sum per 64-group, scaled by the token's and the row's group scales into f32; the
//    epilogue adds L · proj_upᵀ and the bias.
// W4A16 runs `svdq_prep_w4a16` (x / λ rounded to BF16), the same L, and then int4.cu's
// `int4_g64` with L and proj_up in its epilogue.
#include "common.cuh"

#define SVDQ_G 64

// One block of 256 threads per token. Outputs: codes int8 [M, K] in `a.y` (scratch) and
// scales f32 [M, K/64] in `a.ascale` (scratch) for W4A4; x / λ BF16 [M, K] in `a.y` for W4A16.
template <bool ACT4>
__device__ __forceinline__ void svdq_prep(const GemmArgs& a) {
    const int m = blockIdx.x, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const bf16_t* x = a.x + (size_t)m * a.k;
    const bf16_t* smooth = (const bf16_t*)a.w[2];
    const int groups = a.k / SVDQ_G;
    for (int g = warp; g < groups; g += 8) {
        const int k0 = g * SVDQ_G + 2 * lane;
        const float v0 = __fdiv_rn(bf16_to_f32(x[k0]), bf16_to_f32(smooth[k0]));
        const float v1 = __fdiv_rn(bf16_to_f32(x[k0 + 1]), bf16_to_f32(smooth[k0 + 1]));
        if (ACT4) {
            float amax = fmaxf(fabsf(v0), fabsf(v1));
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
            const float scale = __fdiv_rn(fmaxf(amax, 1e-10f), 7.0f);
            const float q0 = fminf(fmaxf(rintf(__fdiv_rn(v0, scale)), -7.f), 7.f);
            const float q1 = fminf(fmaxf(rintf(__fdiv_rn(v1, scale)), -7.f), 7.f);
            i8* codes = (i8*)a.y + (size_t)m * a.k;
            codes[k0] = (i8)(int)q0;
            codes[k0 + 1] = (i8)(int)q1;
            if (lane == 0) ((float*)a.ascale)[(size_t)m * groups + g] = scale;
        } else {
            *(u32*)(a.y + (size_t)m * a.k + k0) = pack_bf16x2(v0, v1);
        }
    }
}

extern "C" __global__ void __launch_bounds__(256) svdq_prep_w4a4(const GemmArgs a) { svdq_prep<true>(a); }
extern "C" __global__ void __launch_bounds__(256) svdq_prep_w4a16(const GemmArgs a) { svdq_prep<false>(a); }

// L = X · proj_down in two deterministic steps, so that few tokens still spread over the GPU:
// `svdq_lora_partial`, grid (ceil(K / 256), M): block (c, m) sums its 256 channels of token m
// into `a.scratch[(m · C + c) · R + j]` (lane j of each 32-wide slice of the rank, warps split
// the channels, a fixed order); `svdq_lora_reduce`, grid M: L[m, j] = Σ_c partial, c in order.
#define SVDQ_LORA_K 256
extern "C" __global__ void __launch_bounds__(256) svdq_lora_partial(const GemmArgs a) {
    const int c = blockIdx.x, m = blockIdx.y, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const bf16_t* x = a.x + (size_t)m * a.k;
    const bf16_t* down = (const bf16_t*)a.w[3];
    const int k0 = c * SVDQ_LORA_K + warp * 32, k1 = min(k0 + 32, a.k);
    __shared__ float part[8][32];
    for (int j0 = 0; j0 < a.r; j0 += 32) {
        const int j = j0 + lane;
        float s = 0.f;
        if (j < a.r) {
#pragma unroll 8
            for (int k = k0; k < k1; ++k) s += bf16_to_f32(x[k]) * bf16_to_f32(down[(size_t)k * a.r + j]);
        }
        part[warp][lane] = s;
        __syncthreads();
        if (warp == 0 && j < a.r) {
            float t = 0.f;
#pragma unroll
            for (int w = 0; w < 8; ++w) t += part[w][lane];
            a.scratch[((size_t)m * gridDim.x + c) * a.r + j] = t;
        }
        __syncthreads();
    }
}

extern "C" __global__ void __launch_bounds__(128) svdq_lora_reduce(const GemmArgs a) {
    const int m = blockIdx.x, chunks = (a.k + SVDQ_LORA_K - 1) / SVDQ_LORA_K;
    for (int j = threadIdx.x; j < a.r; j += blockDim.x) {
        float t = 0.f;
        for (int c = 0; c < chunks; ++c) t += a.scratch[((size_t)m * chunks + c) * a.r + j];
        ((float*)a.lora)[(size_t)m * a.r + j] = t;
    }
}

// The W4A4 GEMM: `a.x` holds the int8 codes [M, K] of `svdq_prep_w4a4`, `a.ascale` their
// scales, `a.lora` L. 64 × 128 outputs per block of 8 warps (2 × 4, each 32 × 32), one 64-group
// per K step, two shared-memory stages (the next group's codes arrive by cp.async and its
// weight nibbles are loaded into registers while the tensor cores work); K % 64 == 0 (the
// layout's own constraint).
extern "C" __global__ void __launch_bounds__(256) svdq_w4a4(const GemmArgs a) {
    constexpr int BM = 64, BN = 128, BK = SVDQ_G, LD = BK + 16;  // bytes per row
    __shared__ __align__(16) i8 As[2][BM * LD];
    __shared__ __align__(16) i8 Bs[2][BN * LD];
    __shared__ float Sa[2][BM], Sw[2][BN];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wm = (warp >> 2) * 32, wn = (warp & 3) * 32;
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    const i8* codes = (const i8*)a.x;
    const int groups = a.k / SVDQ_G;
    float acc[2][4][4];
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;
    // A: 64 rows × 4 chunks of 16 codes = one cp.async per thread; its scale.
    auto load_a = [&](int stage, int g) {
        const int r = tid >> 2, kc = (tid & 3) * 16;
        const bool ok = m0 + r < a.m;
        cp_async16(&As[stage][r * LD + kc], ok ? codes + (size_t)(m0 + r) * a.k + g * BK + kc : codes, ok);
        cp_async_commit();
        if (tid < BM) Sa[stage][tid] = m0 + tid < a.m ? a.ascale[(size_t)(m0 + tid) * groups + g] : 0.f;
    };
    // B: 128 rows × 8 chunks of 8 codes (4 bytes of nibbles each) = 4 words per thread.
    auto load_b = [&](int g, u32 w[4], float& sw) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int c = tid + i * 256, r = c >> 3, kc = (c & 7) * 8;
            w[i] = n0 + r < a.n ? *(const u32*)(a.w[0] + ((size_t)(n0 + r) * a.k + g * BK + kc) / 2) : 0u;
        }
        sw = 0.f;
        if (tid < BN && n0 + tid < a.n) sw = bf16_to_f32(((const bf16_t*)a.w[1])[(size_t)g * a.n + n0 + tid]);
    };
    auto store_b = [&](int stage, const u32 w[4], float sw) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int c = tid + i * 256, r = c >> 3, kc = (c & 7) * 8;
            u32 lo = 0u, hi = 0u;
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                lo |= ((u32)(((int)(w[i] << (28 - 4 * e))) >> 28) & 0xffu) << (8 * e);
                hi |= ((u32)(((int)(w[i] << (12 - 4 * e))) >> 28) & 0xffu) << (8 * e);
            }
            *(uint2*)&Bs[stage][r * LD + kc] = make_uint2(lo, hi);
        }
        if (tid < BN) Sw[stage][tid] = sw;
    };
    {
        u32 w[4];
        float sw;
        load_a(0, 0);
        load_b(0, w, sw);
        store_b(0, w, sw);
        cp_async_wait<0>();
        __syncthreads();
    }
    for (int g = 0; g < groups; ++g) {
        const int cur = g & 1;
        const bool more = g + 1 < groups;
        u32 w[4];
        float sw;
        if (more) {
            load_a(cur ^ 1, g + 1);
            load_b(g + 1, w, sw);
        }
        int part[2][4][4];
#pragma unroll
        for (int i = 0; i < 2; ++i)
#pragma unroll
            for (int j = 0; j < 4; ++j)
#pragma unroll
                for (int e = 0; e < 4; ++e) part[i][j][e] = 0;
#pragma unroll
        for (int ks = 0; ks < BK / 32; ++ks) {
            u32 af[2][4], bfr[4][2];
#pragma unroll
            for (int i = 0; i < 2; ++i)
                ldmatrix_x4(af[i], &As[cur][(wm + i * 16 + (lane & 15)) * LD + ks * 32 + (lane >> 4) * 16]);
#pragma unroll
            for (int j = 0; j < 2; ++j) {
                u32 r[4];
                const int l8 = lane >> 3;
                ldmatrix_x4(r, &Bs[cur][(wn + j * 16 + (l8 >> 1) * 8 + (lane & 7)) * LD + ks * 32 + (l8 & 1) * 16]);
                bfr[2 * j][0] = r[0];
                bfr[2 * j][1] = r[1];
                bfr[2 * j + 1][0] = r[2];
                bfr[2 * j + 1][1] = r[3];
            }
#pragma unroll
            for (int i = 0; i < 2; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) mma_s8(part[i][j], af[i], bfr[j][0], bfr[j][1]);
        }
#pragma unroll
        for (int i = 0; i < 2; ++i)
#pragma unroll
            for (int j = 0; j < 4; ++j)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int r = wm + i * 16 + (lane >> 2) + (e >> 1) * 8;
                    const int c = wn + j * 8 + 2 * (lane & 3) + (e & 1);
                    acc[i][j][e] += (float)part[i][j][e] * Sa[cur][r] * Sw[cur][c];
                }
        if (more) store_b(cur ^ 1, w, sw);
        cp_async_wait<0>();
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
                const float* l = a.lora + (size_t)row * a.r;
                const bf16_t* u = (const bf16_t*)a.w[4] + (size_t)col * a.r;
                float s = 0.f;
                for (int t = 0; t < a.r; ++t) s += l[t] * bf16_to_f32(u[t]);
                v += s;
                if (a.bias) v += bf16_to_f32(a.bias[col]);
                a.y[(size_t)row * a.n + col] = f32_to_bf16(v);
            }
}
