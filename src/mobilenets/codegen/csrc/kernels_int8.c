/* The integer kernels of the generated int8 C (mobilenets compile-c on a QDQ model): compile-c copies
 * everything after the BEGIN marker below into model.c, unchanged. This file also compiles on its own:
 *   cc -std=c99 -Wall -Wextra -Werror -c kernels_int8.c
 * No float anywhere: int8 activations and weights, int32 accumulators and biases, requantization by a
 * Q31 fixed-point multiplier and a power-of-two shift, rounded as TFLite's integer kernels round
 * (gemmlowp's SaturatingRoundingDoublingHighMul and RoundingDivideByPOT). */
#include <stdint.h>
#include <string.h>
/* MOBILENETS_KERNELS_BEGIN */
#if defined(__clang__)
/* Clang (the WebAssembly build) warns about unused static inline functions in the main file; a model
 * uses some of these kernels, as GCC knows without being told. */
#pragma clang diagnostic ignored "-Wunused-function"
#endif
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

/* 1x1 convolution (and the classifier): y[p][o] = requantize(bias[o] + sum_k x[p][k] * w[o][k]). The input
 * zero point is folded into the bias (no padding here). Weights come in panels of 16 output channels,
 * [c/4][16][4] (int8plan.pack_panels_int8), the layout of x86's vpdpbusd and Arm's sdot: four input
 * channels of one output channel per 32-bit lane. With AVX-512 VNNI the kernel multiplies four pixels
 * by a panel with vpdpbusd (unsigned x signed bytes: it reads x + 128 and starts from bias - wsum,
 * wsum = 128 * sum(w)); elsewhere plain loops that compilers vectorise over the 16 output channels. */
#if defined(__AVX512VNNI__) && defined(__AVX512BW__) && defined(__AVX512VL__) && !defined(MOBILENETS_NO_VECTOR_EXTENSIONS)
#include <immintrin.h>
#define Q_CONV1X1_AVX512 1
static inline __m512i q_load4(const int8_t *p) { /* four input bytes, +128, in every lane */
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_xor_si512(_mm512_set1_epi32(v), _mm512_set1_epi32((int32_t)0x80808080u));
}
/* q_requantize on 16 lanes, then + zero point, clamp and store: 64-bit products of the even and odd lanes,
 * one rounding shift each. Everything that depends only on the channel (the odd lanes' multipliers, the
 * rounding halves) is computed once per block of channels (q_requant_constants), not per pixel. */
typedef struct { __m512i mul_even, mul_odd, total_even, total_odd, half_even, half_odd, zero_y, lo, hi; } q_requant16;
static inline q_requant16 q_requant_constants(__m512i mult, __m512i shift, int zy, int low, int high) {
    q_requant16 r;
    const __m512i one = _mm512_set1_epi64(1), total = _mm512_sub_epi32(_mm512_set1_epi32(31), shift);
    r.mul_even = mult;
    r.mul_odd = _mm512_srli_epi64(mult, 32);
    r.total_even = _mm512_and_si512(total, _mm512_set1_epi64(0xFFFFFFFF));
    r.total_odd = _mm512_srli_epi64(total, 32);
    r.half_even = _mm512_sllv_epi64(one, _mm512_sub_epi64(r.total_even, one));
    r.half_odd = _mm512_sllv_epi64(one, _mm512_sub_epi64(r.total_odd, one));
    r.zero_y = _mm512_set1_epi32(zy);
    r.lo = _mm512_set1_epi32(low);
    r.hi = _mm512_set1_epi32(high);
    return r;
}
static inline __attribute__((always_inline)) void q_requant_store(int8_t *y, __mmask16 keep, __m512i acc,
                                                                  const q_requant16 *r) {
    const __m512i even = _mm512_add_epi64(_mm512_mul_epi32(acc, r->mul_even), r->half_even);
    const __m512i odd = _mm512_add_epi64(_mm512_mul_epi32(_mm512_srli_epi64(acc, 32), r->mul_odd), r->half_odd);
    /* the odd lanes' results (low halves of odd's 64-bit lanes) move up into the odd 32-bit lanes */
    __m512i v = _mm512_mask_shuffle_epi32(_mm512_srav_epi64(even, r->total_even), 0xAAAA,
                                          _mm512_srav_epi64(odd, r->total_odd), _MM_PERM_CDAB);
    v = _mm512_min_epi32(_mm512_max_epi32(_mm512_add_epi32(v, r->zero_y), r->lo), r->hi);
    _mm_mask_storeu_epi8(y, keep, _mm512_cvtepi32_epi8(v));
}
static inline __m512i q_shift16(const int8_t *shift, __mmask16 keep) {
    return _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(keep, shift));
}

/* One panel's constants, kept in registers while its pixels pass. */
typedef struct { __m512i start; q_requant16 r; __mmask16 keep; int o0; } q_panel16;
static inline q_panel16 q_panel_constants(const int32_t *bias, const int32_t *wsum, const int32_t *mult,
                                          const int8_t *shift, int m, int panel, int zy, int low, int high) {
    q_panel16 q;
    q.o0 = panel * 16;
    const int width = m - q.o0 < 16 ? m - q.o0 : 16;
    q.keep = (__mmask16)((1u << width) - 1u);
    q.start = _mm512_sub_epi32(_mm512_loadu_si512(bias + q.o0), _mm512_loadu_si512(wsum + q.o0));
    q.r = q_requant_constants(_mm512_loadu_si512(mult + q.o0), q_shift16(shift + q.o0, q.keep), zy, low, high);
    return q;
}
/* PIXELS pixels x PANELS panels of 16 output channels (both constants once inlined): up to 8 x 2 = 16
 * accumulators stay in registers across the input channels, and each broadcast input word feeds
 * PANELS vpdpbusd, each weight load PIXELS of them (one of each per vpdpbusd with 4 x 1, the old
 * blocking, left the multiplier waiting on its own latency). */
static inline __attribute__((always_inline)) void q_block(const int8_t *x0, int c, int c4, const int8_t *w0,
                                                          const int8_t *w1, const q_panel16 *q0, const q_panel16 *q1,
                                                          const int pixels, const int panels, int8_t *y, int m) {
    __m512i acc[8][2];
    for (int i = 0; i < pixels; i++) {
        acc[i][0] = q0->start;
        if (panels == 2) acc[i][1] = q1->start;
    }
    for (int k = 0; k < c4; k++) {
        const __m512i wk0 = _mm512_loadu_si512(w0 + k * 64);
        const __m512i wk1 = panels == 2 ? _mm512_loadu_si512(w1 + k * 64) : wk0;
        for (int i = 0; i < pixels; i++) {
            const __m512i xk = q_load4(x0 + (long)i * c + 4 * k);
            acc[i][0] = _mm512_dpbusd_epi32(acc[i][0], xk, wk0);
            if (panels == 2) acc[i][1] = _mm512_dpbusd_epi32(acc[i][1], xk, wk1);
        }
    }
    for (int i = 0; i < pixels; i++) {
        q_requant_store(y + (long)i * m + q0->o0, q0->keep, acc[i][0], &q0->r);
        if (panels == 2) q_requant_store(y + (long)i * m + q1->o0, q1->keep, acc[i][1], &q1->r);
    }
}
#elif defined(__wasm_simd128__) && !defined(MOBILENETS_NO_VECTOR_EXTENSIONS)
/* WebAssembly SIMD128 (the web page's build): x and the weights widened to int16 and multiplied by
 * i32x4.dot_i16x8_s, which adds pairs: each 32-bit lane gathers two of an output channel's four inputs. */
#include <wasm_simd128.h>
#define Q_CONV1X1_WASM 1
#endif

static inline void q_conv1x1_pixels(const int8_t *x, int pixels, int c, const int8_t *w, const int32_t *bias,
                             const int32_t *wsum, const int32_t *mult, const int8_t *shift, int m, int8_t *y,
                             int zy, int low, int high) {
    const int c4 = (c + 3) / 4, panels = (m + 15) / 16;
#ifdef Q_CONV1X1_AVX512
    for (int panel = 0; panel < panels; panel += 2) {
        const int8_t *w0 = w + (long)panel * c4 * 64, *w1 = w0 + (long)c4 * 64;
        const q_panel16 q0 = q_panel_constants(bias, wsum, mult, shift, m, panel, zy, low, high);
        if (panel + 1 < panels) {
            const q_panel16 q1 = q_panel_constants(bias, wsum, mult, shift, m, panel + 1, zy, low, high);
            int p = 0;
            for (; p + 8 <= pixels; p += 8)
                q_block(x + (long)p * c, c, c4, w0, w1, &q0, &q1, 8, 2, y + (long)p * m, m);
            for (; p < pixels; p++)
                q_block(x + (long)p * c, c, c4, w0, w1, &q0, &q1, 1, 2, y + (long)p * m, m);
        } else {
            int p = 0;
            for (; p + 8 <= pixels; p += 8)
                q_block(x + (long)p * c, c, c4, w0, w0, &q0, &q0, 8, 1, y + (long)p * m, m);
            for (; p < pixels; p++)
                q_block(x + (long)p * c, c, c4, w0, w0, &q0, &q0, 1, 1, y + (long)p * m, m);
        }
    }
#elif defined(Q_CONV1X1_WASM)
    (void)wsum;
    for (int p = 0; p < pixels; p += 2) {
        const int two = p + 1 < pixels; /* two pixels share each widened weight vector */
        const int8_t *xp = x + (long)p * c, *xq = two ? xp + c : xp;
        for (int panel = 0; panel < panels; panel++) {
            const int8_t *wp = w + (long)panel * c4 * 64;
            v128_t acc[16];
            for (int j = 0; j < 16; j++) acc[j] = wasm_i32x4_splat(0);
            for (int k = 0; k < c4; k++, wp += 64) {
                /* x[4k..4k+3] as int16 twice; each weight vector: 4 output channels x 4 inputs */
                const v128_t xk = wasm_i16x8_extend_low_i8x16(wasm_v128_load32_splat(xp + 4 * k));
                const v128_t xl = wasm_i16x8_extend_low_i8x16(wasm_v128_load32_splat(xq + 4 * k));
                for (int j = 0; j < 4; j++) {
                    const v128_t wj = wasm_v128_load(wp + 16 * j);
                    const v128_t lo = wasm_i16x8_extend_low_i8x16(wj), hi = wasm_i16x8_extend_high_i8x16(wj);
                    acc[2 * j] = wasm_i32x4_add(acc[2 * j], wasm_i32x4_dot_i16x8(xk, lo));
                    acc[2 * j + 1] = wasm_i32x4_add(acc[2 * j + 1], wasm_i32x4_dot_i16x8(xk, hi));
                    acc[8 + 2 * j] = wasm_i32x4_add(acc[8 + 2 * j], wasm_i32x4_dot_i16x8(xl, lo));
                    acc[9 + 2 * j] = wasm_i32x4_add(acc[9 + 2 * j], wasm_i32x4_dot_i16x8(xl, hi));
                }
            }
            const int width = m - panel * 16 < 16 ? m - panel * 16 : 16;
            for (int q = 0; q <= two; q++) {
                /* each accumulator holds two output channels' two half sums: add the halves */
                int32_t sums[16];
                for (int j = 0; j < 4; j++) {
                    const v128_t a = acc[8 * q + 2 * j], b = acc[8 * q + 2 * j + 1];
                    wasm_v128_store(sums + 4 * j, wasm_i32x4_add(wasm_i32x4_shuffle(a, b, 0, 2, 4, 6), wasm_i32x4_shuffle(a, b, 1, 3, 5, 7)));
                }
                int8_t *yp = y + (long)(p + q) * m;
                for (int j = 0; j < width; j++) {
                    const int o = panel * 16 + j;
                    yp[o] = q_clamp(zy + q_requantize(bias[o] + sums[j], mult[o], shift[o]), low, high);
                }
            }
        }
    }
#else
    (void)wsum;
    for (int p = 0; p < pixels; p++) {
        const int8_t *xp = x + (long)p * c;
        int8_t *yp = y + (long)p * m;
        for (int panel = 0; panel < panels; panel++) {
            const int8_t *wp = w + (long)panel * c4 * 64;
            int32_t acc[16];
            for (int j = 0; j < 16; j++) acc[j] = bias[panel * 16 + j];
            for (int k = 0; k < c4; k++)
                for (int t = 0; t < 4 && 4 * k + t < c; t++) {
                    const int32_t xv = xp[4 * k + t];
                    for (int j = 0; j < 16; j++) acc[j] += xv * wp[(k * 16 + j) * 4 + t];
                }
            const int width = m - panel * 16 < 16 ? m - panel * 16 : 16;
            for (int j = 0; j < width; j++) {
                const int o = panel * 16 + j;
                yp[o] = q_clamp(zy + q_requantize(acc[j], mult[o], shift[o]), low, high);
            }
        }
    }
#endif
}

/* The 1x1 step. With block > 0 the output overwrites the input (both start at y == x: the plan's in-place
 * step, the peak holds the larger of the two tensors instead of both): blocks of `block` pixels are made
 * in the scratch `tmp` and copied into place, front to back when the output pixel is no wider than the
 * input pixel (m <= c: its bytes cover input pixels already read) and back to front otherwise (they
 * cover input pixels at or after its own, already read when going backwards). */
static inline void q_conv1x1(const int8_t *x, int pixels, int c, const int8_t *w, const int32_t *bias,
                             const int32_t *wsum, const int32_t *mult, const int8_t *shift, int m, int8_t *y,
                             int zy, int low, int high, int8_t *tmp, int block) {
    if (block <= 0) {
        q_conv1x1_pixels(x, pixels, c, w, bias, wsum, mult, shift, m, y, zy, low, high);
        return;
    }
    const int blocks = (pixels + block - 1) / block;
    for (int i = 0; i < blocks; i++) {
        const int p = (m <= c ? i : blocks - 1 - i) * block, n = pixels - p < block ? pixels - p : block;
        q_conv1x1_pixels(x + (long)p * c, n, c, w, bias, wsum, mult, shift, m, tmp, zy, low, high);
        memcpy(y + (long)p * m, tmp, (size_t)n * (size_t)m);
    }
}

/* Output rows [oy0, oy1) of a depthwise convolution, weights [kh][kw][c]; row oy goes to dst + (oy % modulo)
 * rows (modulo = ho: the output itself; otherwise a ring of rows). acc is a row of c int32 (the plan's
 * scratch). Taps that fall in the padding are skipped: they hold the zero point, whose (x - zx) is 0. */
static inline void q_depthwise_rows_plain(const int8_t *x, int h, int w, int c, const int8_t *wgt, const int32_t *bias,
                                          const int32_t *mult, const int8_t *shift, int kh, int kw, int sh, int sw,
                                          int dh, int dw, int pt, int pl, int oy0, int oy1, int wo, int8_t *dst,
                                          int modulo, int zx, int zy, int low, int high, int32_t *acc) {
    const long row = (long)wo * c;
    for (int oy = oy0; oy < oy1; oy++)
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
            int8_t *yp = dst + (long)(oy % modulo) * row + (long)ox * c;
            for (int ch = 0; ch < c; ch++) yp[ch] = q_clamp(zy + q_requantize(acc[ch], mult[ch], shift[ch]), low, high);
        }
}

#ifdef Q_CONV1X1_AVX512
/* sum + the taps of one output pixel inside the image, sixteen channels (see q_depthwise_rows). */
static inline __attribute__((always_inline)) __m512i q_taps(const int8_t *xp, long down, long right,
                                                            const __m512i *taps, __mmask16 keep, __m512i sum,
                                                            const int kh, const int kw) {
    for (int ky = 0; ky < kh; ky++)
        for (int kx = 0; kx < kw; kx++)
            sum = _mm512_dpwssd_epi32(sum, _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(keep, xp + ky * down + kx * right)),
                                      taps[ky * kw + kx]);
    return sum;
}
#endif

/* The same, sixteen channels at a time with AVX-512 where the target has it. */
static inline void q_depthwise_rows(const int8_t *x, int h, int w, int c, const int8_t *wgt, const int32_t *bias,
                                    const int32_t *mult, const int8_t *shift, int kh, int kw, int sh, int sw, int dh,
                                    int dw, int pt, int pl, int oy0, int oy1, int wo, int8_t *dst, int modulo,
                                    int zx, int zy, int low, int high, int32_t *acc) {
#ifdef Q_CONV1X1_AVX512
    const long row = (long)wo * c;
    /* Sixteen channels at a time in one register of int32 sums (no accumulator row in memory), with the
     * taps prepared once per block of rows: each weight as an int32 lane whose upper 16 bits are 0, so
     * that vpdpwssd of it with the sign-extended input adds x * w in one instruction. Inside the image
     * the zero point is folded into the bias (bias - zx * sum(w)); at the borders the taps that fall
     * outside are skipped and x - zx (an int16 too) is multiplied instead. */
    if (kh * kw > 49) { /* beyond 7 x 7: the plain loops (no MobileNet has such a depthwise kernel) */
        q_depthwise_rows_plain(x, h, w, c, wgt, bias, mult, shift, kh, kw, sh, sw, dh, dw, pt, pl, oy0, oy1, wo, dst,
                               modulo, zx, zy, low, high, acc);
        return;
    }
    const __m512i low16 = _mm512_set1_epi32(0xFFFF), zero_x = _mm512_set1_epi32(zx);
    int inner_lo = (pl + sw - 1) / sw, inner_hi = w - 1 - (kw - 1) * dw + pl; /* columns with every tap inside */
    inner_hi = inner_hi < 0 ? 0 : inner_hi / sw + 1;
    if (inner_hi > wo) inner_hi = wo;
    if (inner_lo > inner_hi) inner_lo = inner_hi;
    __m512i taps[49];
    const int ntaps = kh * kw;
    for (int c0 = 0; c0 < c; c0 += 16) {
        const __mmask16 keep = (__mmask16)((1u << (c - c0 < 16 ? c - c0 : 16)) - 1u);
        const __m512i bias_border = _mm512_maskz_loadu_epi32(keep, bias + c0);
        __m512i bias_inner = bias_border;
        for (int t = 0; t < ntaps; t++) {
            const __m512i wt = _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(keep, wgt + t * c + c0));
            taps[t] = _mm512_and_si512(wt, low16);
            bias_inner = _mm512_sub_epi32(bias_inner, _mm512_mullo_epi32(wt, zero_x));
        }
        const q_requant16 r = q_requant_constants(_mm512_maskz_loadu_epi32(keep, mult + c0), q_shift16(shift + c0, keep),
                                                  zy, low, high);
        for (int oy = oy0; oy < oy1; oy++) {
            const int y0 = oy * sh - pt;
            const int rows_inside = y0 >= 0 && y0 + (kh - 1) * dh < h;
            int8_t *yrow = dst + (long)(oy % modulo) * row;
            for (int ox = 0; ox < wo; ox++) {
                const int x0 = ox * sw - pl;
                __m512i sum;
                if (rows_inside && ox >= inner_lo && ox < inner_hi) {
                    const int8_t *xp = x + ((long)y0 * w + x0) * c + c0;
                    const long down = (long)dh * w * c, right = (long)dw * c;
                    /* constant kernel sizes let the compiler unroll the taps */
                    if (kh == 3 && kw == 3) sum = q_taps(xp, down, right, taps, keep, bias_inner, 3, 3);
                    else if (kh == 5 && kw == 5) sum = q_taps(xp, down, right, taps, keep, bias_inner, 5, 5);
                    else sum = q_taps(xp, down, right, taps, keep, bias_inner, kh, kw);
                } else {
                    sum = bias_border;
                    for (int ky = 0; ky < kh; ky++) {
                        const int iy = y0 + ky * dh;
                        if (iy < 0 || iy >= h) continue;
                        for (int kx = 0; kx < kw; kx++) {
                            const int ix = x0 + kx * dw;
                            if (ix < 0 || ix >= w) continue;
                            /* x - zx is within +-255: an int16 for vpdpwssd too */
                            const __m512i xv = _mm512_sub_epi32(
                                _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(keep, x + ((long)iy * w + ix) * c + c0)), zero_x);
                            sum = _mm512_dpwssd_epi32(sum, xv, taps[ky * kw + kx]);
                        }
                    }
                }
                q_requant_store(yrow + (long)ox * c + c0, keep, sum, &r);
            }
        }
    }
#else
    q_depthwise_rows_plain(x, h, w, c, wgt, bias, mult, shift, kh, kw, sh, sw, dh, dw, pt, pl, oy0, oy1, wo, dst, modulo, zx,
                           zy, low, high, acc);
#endif
}

/* Depthwise convolution. With ring_rows > 0 the output overwrites the input (y == x, the plan's in-place
 * step: the peak holds one tensor instead of two). Each output row is made in a ring of ring_rows rows
 * (the scratch `ring`) and copied to its place once no later output row reads the input bytes there;
 * the plan sizes the ring by running this same schedule (int8plan.ring_rows). */
static inline void q_depthwise(const int8_t *x, int h, int w, int c, const int8_t *wgt, const int32_t *bias,
                               const int32_t *mult, const int8_t *shift, int kh, int kw, int sh, int sw, int dh,
                               int dw, int pt, int pl, int ho, int wo, int8_t *y, int zx, int zy, int low, int high,
                               int32_t *acc, int8_t *ring, int ring_rows) {
    if (ring_rows <= 0) {
        q_depthwise_rows(x, h, w, c, wgt, bias, mult, shift, kh, kw, sh, sw, dh, dw, pt, pl, 0, ho, wo, y, ho,
                         zx, zy, low, high, acc);
        return;
    }
    const long row = (long)wo * c;
    int done = 0; /* output rows already in place */
    for (int oy = 0; oy < ho; oy++) {
        q_depthwise_rows(x, h, w, c, wgt, bias, mult, shift, kh, kw, sh, sw, dh, dw, pt, pl, oy, oy + 1, wo, ring,
                         ring_rows, zx, zy, low, high, acc);
        const long first_read = oy + 1 < ho ? (long)(oy + 1) * sh - pt : (long)h; /* the first input row a later output row reads */
        for (; done <= oy && (long)(done + 1) * row <= first_read * w * c; done++)
            memcpy(y + done * row, ring + (long)(done % ring_rows) * row, (size_t)row);
    }
}

/* Any other ungrouped convolution (the stem): each output row's patches ([ky][kx][c] per pixel, the
 * padding filled with the input zero point, which the folded bias cancels) are gathered into rows, a
 * scratch of wo * kh * kw * c bytes plus slack, and multiplied as a 1x1 convolution. */
static inline void q_conv(const int8_t *x, int h, int w, int c, const int8_t *wgt, const int32_t *bias,
                          const int32_t *mult, const int8_t *shift, const int32_t *wsum, int m, int kh, int kw,
                          int sh, int sw, int dh, int dw, int pt, int pl, int ho, int wo, int8_t *y, int zx,
                          int zy, int low, int high, int8_t *rows) {
    const int patch = kh * kw * c;
    for (int oy = 0; oy < ho; oy++) {
        int8_t *r = rows;
        for (int ox = 0; ox < wo; ox++)
            for (int ky = 0; ky < kh; ky++) {
                const int iy = oy * sh - pt + ky * dh, ix0 = ox * sw - pl;
                if (dw == 1 && iy >= 0 && iy < h && ix0 >= 0 && ix0 + kw <= w) {
                    /* a row of taps inside the image is one run of bytes; the stem's usual 3 x 3 x 3 is
                     * spelled out so that the copy is inlined */
                    if (kw * c == 9) memcpy(r, x + ((long)iy * w + ix0) * c, 9);
                    else memcpy(r, x + ((long)iy * w + ix0) * c, (size_t)(kw * c));
                    r += kw * c;
                    continue;
                }
                for (int kx = 0; kx < kw; kx++, r += c) {
                    const int ix = ix0 + kx * dw;
                    if (iy < 0 || iy >= h || ix < 0 || ix >= w) memset(r, zx, (size_t)c);
                    else memcpy(r, x + ((long)iy * w + ix) * c, (size_t)c);
                }
            }
        q_conv1x1_pixels(rows, wo, patch, wgt, bias, wsum, mult, shift, m, y + (long)oy * wo * m, zy, low, high);
    }
}

/* An elementwise op of one int8 tensor (h-swish, h-sigmoid, ReLU, a requantization): its 256 values. */
static inline void q_table(const int8_t *x, const int8_t *table, int n, int8_t *y) {
    int i = 0;
#if defined(Q_CONV1X1_AVX512) && defined(__AVX512VBMI__)
    /* 64 lookups per instruction pair: vpermi2b picks from 128 entries by the low 7 bits, and the index's
     * top bit chooses between the table's two halves. */
    const __m512i t0 = _mm512_loadu_si512(table), t1 = _mm512_loadu_si512(table + 64);
    const __m512i t2 = _mm512_loadu_si512(table + 128), t3 = _mm512_loadu_si512(table + 192);
    for (; i + 64 <= n; i += 64) {
        const __m512i index = _mm512_xor_si512(_mm512_loadu_si512(x + i), _mm512_set1_epi8((char)0x80));
        const __m512i low_half = _mm512_permutex2var_epi8(t0, index, t1);
        const __m512i high_half = _mm512_permutex2var_epi8(t2, index, t3);
        _mm512_storeu_si512(y + i, _mm512_mask_blend_epi8(_mm512_movepi8_mask(index), low_half, high_half));
    }
#endif
    for (; i < n; i++) y[i] = table[(uint8_t)(x[i] + 128)];
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
    int i = 0;
#ifdef Q_CONV1X1_AVX512
    if (channels) { /* the SE gate: per pixel, sixteen channels at a time */
        const __m512i zero_a = _mm512_set1_epi32(za), zero_b = _mm512_set1_epi32(zb), low16 = _mm512_set1_epi32(0xFFFF);
        const q_requant16 r = q_requant_constants(_mm512_set1_epi32(m), _mm512_set1_epi32(s), zy, low, high);
        for (; i < n; i += channels)
            for (int c0 = 0; c0 < channels; c0 += 16) {
                const __mmask16 keep = (__mmask16)((1u << (channels - c0 < 16 ? channels - c0 : 16)) - 1u);
                /* a - za and b - zb are within +-255: int16 products by vpmaddwd, b's upper half zeroed */
                const __m512i va = _mm512_sub_epi32(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(keep, a + i + c0)), zero_a);
                const __m512i vb = _mm512_sub_epi32(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(keep, b + c0)), zero_b);
                q_requant_store(y + i + c0, keep, _mm512_madd_epi16(va, _mm512_and_si512(vb, low16)), &r);
            }
    }
#endif
    for (; i < n; i++) {
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
