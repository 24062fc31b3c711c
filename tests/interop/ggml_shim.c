// Stand-ins for the four functions of ggml.c that ggml-quants.c calls, so that ggml's quantizers
// can be compiled on their own into the reference library of tests/interop/ggml_ref.py.
//
// This file is lowbit's own code, not ggml's. ggml.c is not compiled: it brings the whole tensor
// library (graphs, threads, backends) along, and the quantizers need none of it. What they do
// need is:
//
//   ggml_abort      GGML_ASSERT and GGML_ABORT land here: print the message and abort.
//   ggml_type_size  bytes per block,
//   ggml_row_size   bytes per row (type size times blocks per row),
//   ggml_type_name  the type's name, used in error messages only.
//
// F16 and BF16 are converted by ggml.c's row loops, not by ggml-quants.c. The four
// `lowbit_ref_*_row` functions at the end repeat those loops (one line each) over ggml's own
// conversions from ggml-impl.h, so the dense types, too, are checked against ggml's code.
//
// Sizes come from ggml's own block structs (ggml-common.h), so they cannot drift from the code
// that fills the blocks. Only the types lowbit quantizes are listed; any other type aborts with
// its id, which tells the next person to add a row here.

#define GGML_COMMON_DECL_C
#include "ggml-common.h"

#include "ggml.h"
#include "ggml-impl.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

struct shim_type {
    const char * name;
    int64_t      blck_size;  // elements per block
    size_t       type_size;  // bytes per block
};

static const struct shim_type SHIM_TYPES[GGML_TYPE_COUNT] = {
    [GGML_TYPE_F32]   = { "f32",   1,     sizeof(float)        },
    [GGML_TYPE_F16]   = { "f16",   1,     sizeof(ggml_fp16_t)  },
    [GGML_TYPE_BF16]  = { "bf16",  1,     sizeof(ggml_bf16_t)  },
    [GGML_TYPE_Q4_0]  = { "q4_0",  QK4_0, sizeof(block_q4_0)   },
    [GGML_TYPE_Q4_1]  = { "q4_1",  QK4_1, sizeof(block_q4_1)   },
    [GGML_TYPE_Q5_0]  = { "q5_0",  QK5_0, sizeof(block_q5_0)   },
    [GGML_TYPE_Q5_1]  = { "q5_1",  QK5_1, sizeof(block_q5_1)   },
    [GGML_TYPE_Q8_0]  = { "q8_0",  QK8_0, sizeof(block_q8_0)   },
    [GGML_TYPE_Q2_K]  = { "q2_K",  QK_K,  sizeof(block_q2_K)   },
    [GGML_TYPE_Q3_K]  = { "q3_K",  QK_K,  sizeof(block_q3_K)   },
    [GGML_TYPE_Q4_K]  = { "q4_K",  QK_K,  sizeof(block_q4_K)   },
    [GGML_TYPE_Q5_K]  = { "q5_K",  QK_K,  sizeof(block_q5_K)   },
    [GGML_TYPE_Q6_K]  = { "q6_K",  QK_K,  sizeof(block_q6_K)   },
    [GGML_TYPE_TQ1_0] = { "tq1_0", QK_K,  sizeof(block_tq1_0)  },
    [GGML_TYPE_TQ2_0] = { "tq2_0", QK_K,  sizeof(block_tq2_0)  },
};

void ggml_abort(const char * file, int line, const char * fmt, ...) {
    fflush(stdout);
    fprintf(stderr, "%s:%d: ", file, line);
    va_list args;
    va_start(args, fmt);
    vfprintf(stderr, fmt, args);
    va_end(args);
    fputc('\n', stderr);
    abort();
}

static const struct shim_type * shim_type(enum ggml_type type) {
    if ((int) type < 0 || type >= GGML_TYPE_COUNT || SHIM_TYPES[type].name == NULL) {
        ggml_abort(__FILE__, __LINE__, "ggml_shim.c: type %d is not in the shim's table", (int) type);
    }
    return &SHIM_TYPES[type];
}

size_t ggml_type_size(enum ggml_type type) {
    return shim_type(type)->type_size;
}

size_t ggml_row_size(enum ggml_type type, int64_t ne) {
    const struct shim_type * t = shim_type(type);
    if (ne % t->blck_size != 0) {
        ggml_abort(__FILE__, __LINE__, "ggml_row_size: %lld elements are not whole %s blocks",
                   (long long) ne, t->name);
    }
    return t->type_size * (size_t) (ne / t->blck_size);
}

const char * ggml_type_name(enum ggml_type type) {
    return (int) type >= 0 && type < GGML_TYPE_COUNT && SHIM_TYPES[type].name != NULL
               ? SHIM_TYPES[type].name
               : "unknown";
}

// ggml.c's ggml_fp32_to_fp16_row. Built without -march flags, GGML_FP32_TO_FP16 is ggml's
// portable ggml_compute_fp32_to_fp16 (round to nearest even, NaN to a quiet NaN).
void lowbit_ref_fp32_to_fp16_row(const float * x, ggml_fp16_t * y, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        y[i] = GGML_FP32_TO_FP16(x[i]);
    }
}

// ggml.c's ggml_fp16_to_fp32_row.
void lowbit_ref_fp16_to_fp32_row(const ggml_fp16_t * x, float * y, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        y[i] = GGML_FP16_TO_FP32(x[i]);
    }
}

// ggml.c's ggml_fp32_to_bf16_row_ref, which ggml_quantize_chunk calls for BF16.
void lowbit_ref_fp32_to_bf16_row(const float * x, ggml_bf16_t * y, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        y[i] = ggml_compute_fp32_to_bf16(x[i]);
    }
}

// ggml.c's ggml_bf16_to_fp32_row.
void lowbit_ref_bf16_to_fp32_row(const ggml_bf16_t * x, float * y, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        y[i] = GGML_BF16_TO_FP32(x[i]);
    }
}
