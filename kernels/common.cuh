// Shared device helpers for every kernel in kernels/: BF16 and FP8 conversions, tensor-core
// instructions (mma.sync, ldmatrix) and the argument block every GEMM takes.
//
// No CUDA header is included: kernels are compiled by NVRTC with no include path, so the same
// source builds anywhere NVRTC runs (CI compiles every kernel for sm_80, 86, 89 and 90a).
// BF16 values travel as raw 16-bit patterns (`bf16_t`).
#pragma once

typedef unsigned short bf16_t;
typedef unsigned int u32;
typedef unsigned char u8;
typedef signed char i8;
typedef unsigned long long u64;

// The argument block of every GEMM `Y[M, N] = X[M, K] · W[N, K]ᵀ (+ lora · upᵀ) (+ bias)`.
// Mirrored by `lowbit_cuda::GemmArgs` (`#[repr(C)]`): keep the two in the same order.
struct GemmArgs {
    const bf16_t* x;        // [M, K] BF16 activations (for W4A4/W8A8: the prepared codes)
    bf16_t* y;              // [M, N] BF16 output
    const u8* w[6];         // the layout's stored tensors, in `Scheme::stored` order
    const bf16_t* bias;     // [N] or null
    const float* lora;      // [M, R] f32 down-projection of X, or null
    const bf16_t* up;       // [N, R] BF16 up-projection, or null
    const float* ascale;    // per-token (or per-token-group) activation scales, or null
    float* scratch;         // a preparation step's partial results, or null
    int m, n, k, r;
    int group;              // reserved (0): kernels take their group size from their name
    int flags;              // reserved (0)
    float alpha;            // a layout scalar: NF4 double quantization's nested offset
    int pad;
};

__device__ __forceinline__ float bf16_to_f32(bf16_t v) {
    return __uint_as_float(((u32)v) << 16);
}

// Round to nearest even (NaN stays NaN).
__device__ __forceinline__ bf16_t f32_to_bf16(float f) {
    unsigned short r;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(f));
    return r;
}

// Two f32 to two BF16 in one u32: `lo` in the low half.
__device__ __forceinline__ u32 pack_bf16x2(float lo, float hi) {
    u32 r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

// A small integer (|v| ≤ 256) as BF16: exact.
__device__ __forceinline__ bf16_t int_to_bf16(int v) {
    return f32_to_bf16((float)v);
}

__device__ __forceinline__ u32 pack_int_bf16x2(int lo, int hi) {
    return pack_bf16x2((float)lo, (float)hi);
}

// float8_e4m3fn (no infinities; 0x7F/0xFF are NaN) to f32, exactly.
__device__ __forceinline__ float e4m3_to_f32(u8 c) {
    u32 s = (u32)(c & 0x80) << 24;
    u32 e = (c >> 3) & 0xF;
    u32 m = c & 0x7;
    float v;
    if (e == 0xF && m == 0x7) {
        v = __uint_as_float(0x7FC00000u);
    } else if (e == 0) {
        v = (float)m * 0.001953125f;  // m · 2^-9
    } else {
        v = __uint_as_float(((e + 120) << 23) | (m << 20));
    }
    return __uint_as_float(__float_as_uint(v) | s);
}

// float8_e5m2 to f32, exactly (infinities and NaN kept).
__device__ __forceinline__ float e5m2_to_f32(u8 c) {
    u32 s = (u32)(c & 0x80) << 24;
    u32 e = (c >> 2) & 0x1F;
    u32 m = c & 0x3;
    float v;
    if (e == 0x1F) {
        v = m ? __uint_as_float(0x7FC00000u) : __uint_as_float(0x7F800000u);
    } else if (e == 0) {
        v = (float)m * 1.52587890625e-05f;  // m · 2^-16
    } else {
        v = __uint_as_float(((e + 112) << 23) | (m << 21));
    }
    return __uint_as_float(__float_as_uint(v) | s);
}

// IEEE half bits to f32, exactly (GGUF's f16 scales).
__device__ __forceinline__ float f16_to_f32(unsigned short h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

// Unaligned-safe little-endian loads from byte pointers.
__device__ __forceinline__ unsigned short load_u16(const u8* p) {
    return (unsigned short)(p[0] | (p[1] << 8));
}
__device__ __forceinline__ u32 load_u32(const u8* p) {
    return (u32)p[0] | ((u32)p[1] << 8) | ((u32)p[2] << 16) | ((u32)p[3] << 24);
}

__device__ __forceinline__ u32 smem_addr(const void* p) {
    return (u32)__cvta_generic_to_shared(p);
}

// Four 8×8 b16 matrices from shared memory; lane l gives the address of row l % 8 of matrix l / 8.
__device__ __forceinline__ void ldmatrix_x4(u32 r[4], const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}

// D += A · B, BF16 inputs, f32 accumulators (m16n8k16).
__device__ __forceinline__ void mma_bf16(float d[4], const u32 a[4], u32 b0, u32 b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// D += A · B, int8 inputs, int32 accumulators (m16n8k32): exact.
__device__ __forceinline__ void mma_s8(int d[4], const u32 a[4], u32 b0, u32 b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};"
        : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// 16-byte asynchronous global → shared copy, zero-filled when `valid` is false.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
    int n = valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(smem_addr(smem)),
                 "l"(gmem), "r"(n));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;" ::"n"(N));
}
