/* 2x2, stride-2 max-pooling of channels-last (N, H, W, C) tensors, forward and backward, for
 * visionlab/models/maxpool.py (which says why it exists and how it is built and loaded).
 *
 * The forward writes the pooled values and, for each of them, which of its window's four inputs
 * it came from as one byte (0: top left, 1: top right, 2: bottom left, 3: bottom right), where
 * PyTorch keeps an int64 index. The choice follows PyTorch's rule, (v > max || isnan(v)) in
 * that scan order: a tie keeps the first, a NaN wins. The backward writes every input gradient
 * once, the routed value or zero, where PyTorch zero-fills the gradient and then scatters into it.
 * Both are bit-identical to torch.nn.functional.max_pool2d(x, 2) and its gradient.
 *
 * bf16 values are compared as floats (exact: a bf16 is a float's upper 16 bits) and stored back
 * as their bits (a NaN keeps its payload, which PyTorch's kernels keep in some paths and
 * canonicalise in others); the backward only moves bits, so it works on unsigned integers of the same width.
 * Odd H or W: the last row or column is not pooled (floor mode) and gets a zero gradient.
 * threads: the OpenMP team size, torch.get_num_threads() from the caller.
 */
#include <stdint.h>
#include <string.h>

static inline float bf16_load(uint16_t v) { uint32_t u = (uint32_t)v << 16; float f; memcpy(&f, &u, 4); return f; }
static inline uint16_t bf16_store(float f) { uint32_t u; memcpy(&u, &f, 4); return (uint16_t)(u >> 16); }
static inline float f32_load(float v) { return v; }
static inline float f32_store(float f) { return f; }

#define TAKE(v, m) (((v) > (m)) | ((v) != (v)))

/* NAME_forward(x, y, code, ...) and NAME_backward(grad_y, code, grad_x, ...) for element type T
 * (U: the unsigned integer of T's width), T read as a float by LOAD and written back by STORE. */
#define MAXPOOL2X2(NAME, T, U, LOAD, STORE)                                                            \
void NAME##_forward(const T *restrict x, T *restrict y, uint8_t *restrict code, int64_t n, int64_t h, \
                    int64_t w, int64_t c, int threads) {                                              \
    const int64_t oh = h / 2, ow = w / 2;                                                             \
    _Pragma("omp parallel for collapse(2) schedule(static) num_threads(threads)")                     \
    for (int64_t b = 0; b < n; b++)                                                                   \
        for (int64_t i = 0; i < oh; i++) {                                                            \
            const T *top = x + ((b * h + 2 * i) * w) * c, *bottom = top + w * c;                      \
            const int64_t out = ((b * oh + i) * ow) * c;                                              \
            for (int64_t j = 0; j < ow; j++) {                                                        \
                const T *p0 = top + 2 * j * c, *p1 = p0 + c, *p2 = bottom + 2 * j * c, *p3 = p2 + c;  \
                T *restrict yj = y + out + j * c;                                                     \
                uint8_t *restrict cj = code + out + j * c;                                            \
                _Pragma("omp simd")                                                                   \
                for (int64_t k = 0; k < c; k++) {                                                     \
                    float m = LOAD(p0[k]), v;                                                         \
                    int32_t at = 0, take;                                                             \
                    v = LOAD(p1[k]); take = TAKE(v, m); m = take ? v : m; at = take ? 1 : at;         \
                    v = LOAD(p2[k]); take = TAKE(v, m); m = take ? v : m; at = take ? 2 : at;         \
                    v = LOAD(p3[k]); take = TAKE(v, m); m = take ? v : m; at = take ? 3 : at;         \
                    yj[k] = STORE(m);                                                                 \
                    cj[k] = (uint8_t)at;                                                              \
                }                                                                                     \
            }                                                                                         \
        }                                                                                             \
}                                                                                                     \
void NAME##_backward(const U *restrict gy, const uint8_t *restrict code, U *restrict gx, int64_t n,  \
                     int64_t h, int64_t w, int64_t c, int threads) {                                  \
    const int64_t oh = h / 2, ow = w / 2;                                                             \
    _Pragma("omp parallel for collapse(2) schedule(static) num_threads(threads)")                     \
    for (int64_t b = 0; b < n; b++)                                                                   \
        for (int64_t i = 0; i < oh; i++) {                                                            \
            U *top = gx + ((b * h + 2 * i) * w) * c, *bottom = top + w * c;                           \
            const int64_t out = ((b * oh + i) * ow) * c;                                              \
            for (int64_t j = 0; j < ow; j++) {                                                        \
                U *restrict p0 = top + 2 * j * c, *restrict p1 = p0 + c;                              \
                U *restrict p2 = bottom + 2 * j * c, *restrict p3 = p2 + c;                           \
                const U *restrict gj = gy + out + j * c;                                              \
                const uint8_t *restrict cj = code + out + j * c;                                      \
                _Pragma("omp simd")                                                                   \
                for (int64_t k = 0; k < c; k++) {                                                     \
                    const U g = gj[k], at = cj[k];                                                    \
                    p0[k] = at == 0 ? g : 0;                                                          \
                    p1[k] = at == 1 ? g : 0;                                                          \
                    p2[k] = at == 2 ? g : 0;                                                          \
                    p3[k] = at == 3 ? g : 0;                                                          \
                }                                                                                     \
            }                                                                                         \
            if (w & 1) { /* the unpooled last column */                                               \
                memset(top + 2 * ow * c, 0, c * sizeof(U));                                           \
                memset(bottom + 2 * ow * c, 0, c * sizeof(U));                                        \
            }                                                                                         \
            if ((h & 1) && i == oh - 1) /* the unpooled last row */                                   \
                memset(bottom + w * c, 0, w * c * sizeof(U));                                         \
        }                                                                                             \
}

MAXPOOL2X2(maxpool2x2_bf16, uint16_t, uint16_t, bf16_load, bf16_store)
MAXPOOL2X2(maxpool2x2_f32, float, uint32_t, f32_load, f32_store)
