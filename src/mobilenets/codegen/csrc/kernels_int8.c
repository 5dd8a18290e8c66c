/* The integer kernels of the generated int8 C (mobilenets compile-c on a QDQ model): compile-c copies
 * everything after the BEGIN marker below into model.c, unchanged. This file also compiles on its own:
 *   cc -std=c99 -Wall -Wextra -Werror -c kernels_int8.c
 * No float anywhere: int8 activations and weights, int32 accumulators and biases, requantization by a
 * Q31 fixed-point multiplier and a power-of-two shift, rounded as TFLite's integer kernels round
 * (gemmlowp's SaturatingRoundingDoublingHighMul and RoundingDivideByPOT). */
#include <stdint.h>
#include <string.h>
/* MOBILENETS_KERNELS_BEGIN */
/* Activations are NHWC int8, batch 1. Real value = scale * (q - zero). */

/* acc * multiplier / 2^(31 - shift), rounded once to nearest (ties up): TFLite's
 * MultiplyByQuantizedMultiplier as built with TFLITE_SINGLE_ROUNDING (and CMSIS-NN's requantize). One
 * rounding, not gemmlowp's two, so the result is the float formula round(acc * scale) that ONNX Runtime
 * computes, but for exact ties. 64-bit product and shift: SMULL and a shift pair on Cortex-M. */
static inline int32_t q_requantize(int32_t acc, int32_t multiplier, int shift) {
    const int total = 31 - shift; /* 1 .. 62: the plan keeps shift in -31 .. 30 */
    return (int32_t)(((int64_t)acc * multiplier + ((int64_t)1 << (total - 1))) >> total);
}

static inline int8_t q_clamp(int32_t v, int low, int high) {
    return (int8_t)(v < low ? low : (v > high ? high : v));
}

/* 1x1 convolution (and the classifier): y[p][o] = requantize(bias[o] + sum_k x[p][k] * w[o][k]); the
 * input zero point is folded into the bias (no padding here), so the inner loop is a plain int8 dot
 * product that compilers vectorise (vpmaddwd / vpdpbusd on x86, SMLAD on Cortex-M4, MVE on M55). */
static inline void q_conv1x1(const int8_t *x, int pixels, int c, const int8_t *w, const int32_t *bias,
                      const int32_t *mult, const int8_t *shift, int m, int8_t *y, int zy, int low, int high) {
    for (int p = 0; p < pixels; p++) {
        const int8_t *xp = x + (long)p * c;
        int8_t *yp = y + (long)p * m;
        for (int o = 0; o < m; o++) {
            const int8_t *wo = w + (long)o * c;
            int32_t acc = bias[o];
            for (int k = 0; k < c; k++) acc += (int32_t)xp[k] * wo[k];
            yp[o] = q_clamp(zy + q_requantize(acc, mult[o], shift[o]), low, high);
        }
    }
}

/* Depthwise convolution, weights [kh][kw][c]; acc is a row of c int32 (the plan's scratch). Taps that
 * fall in the padding are skipped: they hold the zero point, whose (x - zx) is 0. */
static inline void q_depthwise(const int8_t *x, int h, int w, int c, const int8_t *wgt, const int32_t *bias,
                        const int32_t *mult, const int8_t *shift, int kh, int kw, int sh, int sw, int dh,
                        int dw, int pt, int pl, int ho, int wo, int8_t *y, int zx, int zy, int low, int high,
                        int32_t *acc) {
    for (int oy = 0; oy < ho; oy++)
        for (int ox = 0; ox < wo; ox++) {
            memcpy(acc, bias, sizeof(int32_t) * (size_t)c);
            for (int ky = 0; ky < kh; ky++) {
                const int iy = oy * sh - pt + ky * dh;
                if (iy < 0 || iy >= h) continue;
                for (int kx = 0; kx < kw; kx++) {
                    const int ix = ox * sw - pl + kx * dw;
                    if (ix < 0 || ix >= w) continue;
                    const int8_t *xp = x + ((long)iy * w + ix) * c;
                    const int8_t *wp = wgt + (ky * kw + kx) * c;
                    for (int ch = 0; ch < c; ch++) acc[ch] += ((int32_t)xp[ch] - zx) * wp[ch];
                }
            }
            int8_t *yp = y + ((long)oy * wo + ox) * c;
            for (int ch = 0; ch < c; ch++) yp[ch] = q_clamp(zy + q_requantize(acc[ch], mult[ch], shift[ch]), low, high);
        }
}

/* Any other ungrouped convolution (the stem), weights [m][kh][kw][c]. */
static inline void q_conv(const int8_t *x, int h, int w, int c, const int8_t *wgt, const int32_t *bias,
                   const int32_t *mult, const int8_t *shift, int m, int kh, int kw, int sh, int sw, int dh,
                   int dw, int pt, int pl, int ho, int wo, int8_t *y, int zx, int zy, int low, int high) {
    for (int oy = 0; oy < ho; oy++)
        for (int ox = 0; ox < wo; ox++)
            for (int o = 0; o < m; o++) {
                int32_t acc = bias[o];
                for (int ky = 0; ky < kh; ky++) {
                    const int iy = oy * sh - pt + ky * dh;
                    if (iy < 0 || iy >= h) continue;
                    for (int kx = 0; kx < kw; kx++) {
                        const int ix = ox * sw - pl + kx * dw;
                        if (ix < 0 || ix >= w) continue;
                        const int8_t *xp = x + ((long)iy * w + ix) * c;
                        const int8_t *wp = wgt + (((long)o * kh + ky) * kw + kx) * c;
                        for (int ch = 0; ch < c; ch++) acc += ((int32_t)xp[ch] - zx) * wp[ch];
                    }
                }
                y[((long)oy * wo + ox) * m + o] = q_clamp(zy + q_requantize(acc, mult[o], shift[o]), low, high);
            }
}

/* An elementwise op of one int8 tensor (h-swish, h-sigmoid, ReLU, a requantization): its 256 values. */
static inline void q_table(const int8_t *x, const int8_t *table, int n, int8_t *y) {
    for (int i = 0; i < n; i++) y[i] = table[(uint8_t)(x[i] + 128)];
}

/* Residual add: y = zy + ((a - za) * ma + (b - zb) * mb) / 2^total, one rounding; ma / 2^total and
 * mb / 2^total are the input scales over the output scale. */
static inline void q_add(const int8_t *a, const int8_t *b, int n, int za, int zb, int32_t ma, int32_t mb,
                         int total, int zy, int low, int high, int8_t *y) {
    const int64_t half = (int64_t)1 << (total - 1);
    for (int i = 0; i < n; i++) {
        const int64_t acc = (int64_t)((int32_t)a[i] - za) * ma + (int64_t)((int32_t)b[i] - zb) * mb;
        y[i] = q_clamp(zy + (int32_t)((acc + half) >> total), low, high);
    }
}

/* Product of two int8 tensors of one shape, or (channels > 0) of a map and a per-channel vector: the
 * squeeze-and-excite gate. */
static inline void q_mul(const int8_t *a, const int8_t *b, int n, int channels, int za, int zb, int32_t m, int s,
                  int zy, int low, int high, int8_t *y) {
    for (int i = 0; i < n; i++) {
        const int32_t vb = (int32_t)b[channels ? i % channels : i] - zb;
        y[i] = q_clamp(zy + q_requantize(((int32_t)a[i] - za) * vb, m, s), low, high);
    }
}

/* Mean over H and W of each channel; acc is a row of c int32. */
static inline void q_mean(const int8_t *x, int hw, int c, int zx, int32_t m, int s, int zy, int8_t *y, int32_t *acc) {
    for (int ch = 0; ch < c; ch++) acc[ch] = 0;
    for (int p = 0; p < hw; p++)
        for (int ch = 0; ch < c; ch++) acc[ch] += (int32_t)x[(long)p * c + ch] - zx;
    for (int ch = 0; ch < c; ch++) y[ch] = q_clamp(zy + q_requantize(acc[ch], m, s), -128, 127);
}
