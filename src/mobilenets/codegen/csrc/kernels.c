/* The float kernels of the generated C (mobilenets compile-c): compile-c copies everything after the
 * BEGIN marker below into model.c, unchanged. This file also compiles on its own, as the tests do:
 *   cc -std=c99 -Wall -Wextra -Werror -c kernels.c
 * The includes above the marker are the ones model.c already has. */
#include <math.h>
#include <stdint.h>
#include <string.h>
/* MOBILENETS_KERNELS_BEGIN */
#if defined(__clang__)
/* Clang (the WebAssembly build) warns about unused static inline functions in the main file; a model
 * uses some of these kernels, as GCC knows without being told. */
#pragma clang diagnostic ignored "-Wunused-function"
#endif
/* Kernels: activations are NHWC, batch 1. All static inline: a model uses some of them, and -Wall
 * does not warn about the inline ones it leaves unused. */
/* With GCC / Clang the hot kernels use vector extensions (8 floats = one AVX register, two SSE / NEON
 * registers); any other C99 compiler, or -DMOBILENETS_NO_VECTOR_EXTENSIONS, gets the plain loops. */
#if defined(__GNUC__) && !defined(MOBILENETS_NO_VECTOR_EXTENSIONS)
#define MOBILENETS_VECTORS 1
typedef float v8 __attribute__((vector_size(32)));
typedef float v8u __attribute__((vector_size(32), aligned(4)));  /* unaligned loads and stores */
#define LOAD(p) (*(const v8u *)(p))
#define STORE(p, v) (*(v8u *)(p) = (v))
#if !defined(__clang__)
/* GCC warns that a 32-byte vector changes the calling convention when AVX is off (-Wpsabi); these
 * kernels are static and inlined, so no vector ever crosses a call boundary that another unit sees. */
#pragma GCC diagnostic ignored "-Wpsabi"
#endif
#endif

/* Activations fused into the convolutions' stores: 0 none, 1 ReLU, 2 clip(lo, hi), 3 h-swish. */
static inline float act_s(float v, int act, float lo, float hi) {
    if (act == 1) return v > 0.f ? v : 0.f;
    if (act == 2) { v = v < lo ? lo : v; return v > hi ? hi : v; }
    if (act == 3) { float g = v * (1.f / 6.f) + 0.5f; g = g < 0.f ? 0.f : g; g = g > 1.f ? 1.f : g; return v * g; }
    return v;
}
#ifdef MOBILENETS_VECTORS
typedef int v8i __attribute__((vector_size(32)));
/* Always inlined: an out-of-line copy (GCC's partial inlining at -O2 makes "act_v.part.0") would pass
 * vectors by value, which without AVX GCC refuses under -Werror (-Wpsabi), whatever the pragma says. */
#define VECTOR_INLINE static inline __attribute__((always_inline))
#if defined(__AVX__)
/* One vmaxps / vminps (same result as the portable form below, NaN included: the second operand); GCC
 * does not turn the masks into them, and ReLU6 after each FMA block paid four instructions per clamp. */
#include <immintrin.h>
VECTOR_INLINE v8 vmax(v8 a, v8 b) { return (v8)_mm256_max_ps((__m256)a, (__m256)b); }
VECTOR_INLINE v8 vmin(v8 a, v8 b) { return (v8)_mm256_min_ps((__m256)a, (__m256)b); }
#else
VECTOR_INLINE v8 vmax(v8 a, v8 b) { v8i m = a > b; return (v8)(((v8i)a & m) | ((v8i)b & ~m)); }
VECTOR_INLINE v8 vmin(v8 a, v8 b) { v8i m = a < b; return (v8)(((v8i)a & m) | ((v8i)b & ~m)); }
#endif
VECTOR_INLINE v8 splat(float v) { v8 r = {v, v, v, v, v, v, v, v}; return r; }
VECTOR_INLINE v8 act_v(v8 v, int act, float lo, float hi) {
    if (act == 1) return vmax(v, splat(0.f));
    if (act == 2) return vmin(vmax(v, splat(lo)), splat(hi));
    if (act == 3) return v * vmin(vmax(v * (1.f / 6.f) + 0.5f, splat(0.f)), splat(1.f));
    return v;
}
#define ST(p, v) STORE((p), act_v((v), act, lo, hi))
#endif

/* With AVX-512 (32 registers of 16 floats) the 1x1 and depthwise kernels also use 16-float vectors and a
 * wider register block; the target macros choose, so one generated file is fast on AVX2 and AVX-512. */
#if defined(MOBILENETS_VECTORS) && defined(__AVX512F__)
#define MOBILENETS_WIDE 1
typedef float v16 __attribute__((vector_size(64)));
typedef float v16u __attribute__((vector_size(64), aligned(4)));
#define LOAD16(p) (*(const v16u *)(p))
#define STORE16(p, v) (*(v16u *)(p) = (v))
VECTOR_INLINE v16 splat16(float v) { v16 r = {v, v, v, v, v, v, v, v, v, v, v, v, v, v, v, v}; return r; }
VECTOR_INLINE v16 vmax16(v16 a, v16 b) { return (v16)_mm512_max_ps((__m512)a, (__m512)b); }
VECTOR_INLINE v16 vmin16(v16 a, v16 b) { return (v16)_mm512_min_ps((__m512)a, (__m512)b); }
VECTOR_INLINE v16 act_v16(v16 v, int act, float lo, float hi) {
    if (act == 1) return vmax16(v, splat16(0.f));
    if (act == 2) return vmin16(vmax16(v, splat16(lo)), splat16(hi));
    if (act == 3) return v * vmin16(vmax16(v * (1.f / 6.f) + 0.5f, splat16(0.f)), splat16(1.f));
    return v;
}
#define ST16(p, v) STORE16((p), act_v16((v), act, lo, hi))
/* PIXELS pixels x two panels of 16 output channels (constants once inlined): 12 x 2 = 24 accumulators,
 * two weight vectors and a broadcast in 32 registers, the BLIS-style blocking for AVX-512; each weight
 * load feeds PIXELS FMAs and each broadcast two. */
static inline __attribute__((always_inline)) void conv1x1_wide(const float *restrict x0, int cin,
    const float *restrict w0, const float *restrict w1, const float *restrict b, const int pixels,
    float *restrict yp, int cout, int act, float lo, float hi) {
    v16 a0[12], a1[12];
    const v16 b0 = LOAD16(b), b1 = LOAD16(b + 16);
    for (int r = 0; r < pixels; r++) { a0[r] = b0; a1[r] = b1; }
    for (int i = 0; i < cin; i++) {
        const v16 u = LOAD16(w0 + (size_t)i * 16), v = LOAD16(w1 + (size_t)i * 16);
        for (int r = 0; r < pixels; r++) {
            const float s = x0[(size_t)r * cin + i];
            a0[r] += s * u;
            a1[r] += s * v;
        }
    }
    for (int r = 0; r < pixels; r++) { ST16(yp + (size_t)r * cout, a0[r]); ST16(yp + (size_t)r * cout + 16, a1[r]); }
}
#endif

#ifndef TILE_FLOATS
#define TILE_FLOATS 65536 /* 256 KiB */
#endif
/* 1x1 convolution = (pixels x cin) . (cin x cout). The weights come packed in column panels, each
 * [cin][width] and contiguous (widths 16, 16, ..., then 8, then the rest; see _pack_panels), so a panel
 * streams through the cache in order. Pixels go in tiles whose rows stay in L2 while every panel passes
 * over them; the vector path is a register micro-kernel: 6 pixels x 16 output channels of accumulators
 * live in registers for the whole loop over input channels (one broadcast and two FMAs per pixel and
 * input channel), the register blocking of GotoBLAS / BLIS for 16 AVX registers. */
static inline void conv1x1(const float *restrict x, int pixels, int cin, const float *restrict w,
                           const float *restrict b, int cout, float *restrict y, int act, float lo, float hi) {
    /* Pixels in tiles of TILE_FLOATS input values (kept in L2 while every panel passes over them): each
     * tile reads all the weights once, so a late layer (few pixels, 1024 channels, megabytes of weights)
     * wants its pixels in as few tiles as L2 allows. */
    int tile = (TILE_FLOATS / (cin > 0 ? cin : 1)) / 12 * 12;
    if (tile < 12) tile = 12;
    for (int t0 = 0; t0 < pixels; t0 += tile) {
        const int t1 = t0 + tile < pixels ? t0 + tile : pixels;
        for (int o0 = 0; o0 < cout;) {
            const int width = cout - o0 >= 16 ? 16 : (cout - o0 >= 8 ? 8 : cout - o0);
            const float *panel = w + (size_t)o0 * cin;
            int p0 = t0;
#ifdef MOBILENETS_WIDE
            if (width == 16 && cout - o0 >= 32) { /* two 16-wide panels at once */
                const float *panel2 = panel + (size_t)16 * cin;
                float *yp = y + (size_t)p0 * cout + o0;
                for (; p0 + 12 <= t1; p0 += 12, yp += (size_t)12 * cout)
                    conv1x1_wide(x + (size_t)p0 * cin, cin, panel, panel2, b + o0, 12, yp, cout, act, lo, hi);
                for (; p0 < t1; p0++, yp += cout)
                    conv1x1_wide(x + (size_t)p0 * cin, cin, panel, panel2, b + o0, 1, yp, cout, act, lo, hi);
                o0 += 32;
                continue;
            }
#endif
#ifdef MOBILENETS_VECTORS
            if (width == 16) {
                for (; p0 + 6 <= t1; p0 += 6) {
                    const float *x0 = x + (size_t)p0 * cin;
                    const v8 bl = LOAD(b + o0), bh = LOAD(b + o0 + 8);
                    v8 a0l = bl, a0h = bh, a1l = bl, a1h = bh, a2l = bl, a2h = bh, a3l = bl, a3h = bh, a4l = bl, a4h = bh, a5l = bl, a5h = bh;
                    const float *wi = panel;
                    for (int i = 0; i < cin; i++, wi += 16) {
                        const v8 wl = LOAD(wi), wh = LOAD(wi + 8);
                        float s;
                        s = x0[i]; a0l += s * wl; a0h += s * wh;
                        s = x0[cin + i]; a1l += s * wl; a1h += s * wh;
                        s = x0[2 * cin + i]; a2l += s * wl; a2h += s * wh;
                        s = x0[3 * cin + i]; a3l += s * wl; a3h += s * wh;
                        s = x0[4 * cin + i]; a4l += s * wl; a4h += s * wh;
                        s = x0[5 * cin + i]; a5l += s * wl; a5h += s * wh;
                    }
                    float *yp = y + (size_t)p0 * cout + o0;
                    ST(yp, a0l); ST(yp + 8, a0h); yp += cout;
                    ST(yp, a1l); ST(yp + 8, a1h); yp += cout;
                    ST(yp, a2l); ST(yp + 8, a2h); yp += cout;
                    ST(yp, a3l); ST(yp + 8, a3h); yp += cout;
                    ST(yp, a4l); ST(yp + 8, a4h); yp += cout;
                    ST(yp, a5l); ST(yp + 8, a5h);
                }
                for (; p0 < t1; p0++) {
                    const float *x0 = x + (size_t)p0 * cin;
                    v8 al = LOAD(b + o0), ah = LOAD(b + o0 + 8);
                    const float *wi = panel;
                    for (int i = 0; i < cin; i++, wi += 16) { al += x0[i] * LOAD(wi); ah += x0[i] * LOAD(wi + 8); }
                    float *yp = y + (size_t)p0 * cout + o0;
                    ST(yp, al); ST(yp + 8, ah);
                }
            } else if (width == 8) {
                for (; p0 + 6 <= t1; p0 += 6) {
                    const float *x0 = x + (size_t)p0 * cin;
                    const v8 bv = LOAD(b + o0);
                    v8 a0 = bv, a1 = bv, a2 = bv, a3 = bv, a4 = bv, a5 = bv;
                    const float *wi = panel;
                    for (int i = 0; i < cin; i++, wi += 8) {
                        const v8 wv = LOAD(wi);
                        a0 += x0[i] * wv; a1 += x0[cin + i] * wv; a2 += x0[2 * cin + i] * wv;
                        a3 += x0[3 * cin + i] * wv; a4 += x0[4 * cin + i] * wv; a5 += x0[5 * cin + i] * wv;
                    }
                    float *yp = y + (size_t)p0 * cout + o0;
                    ST(yp, a0); ST(yp + cout, a1); ST(yp + 2 * cout, a2);
                    ST(yp + 3 * cout, a3); ST(yp + 4 * cout, a4); ST(yp + 5 * cout, a5);
                }
                for (; p0 < t1; p0++) {
                    const float *x0 = x + (size_t)p0 * cin;
                    v8 acc = LOAD(b + o0);
                    for (int i = 0; i < cin; i++) acc += x0[i] * LOAD(panel + (size_t)i * 8);
                    ST(y + (size_t)p0 * cout + o0, acc);
                }
            }
#endif
            for (; p0 < t1; p0++) { /* the portable path, and the last < 8 output channels */
                const float *xp = x + (size_t)p0 * cin;
                float *yp = y + (size_t)p0 * cout + o0;
                for (int o = 0; o < width; o++) yp[o] = b[o0 + o];
                for (int i = 0; i < cin; i++) {
                    const float a = xp[i];
                    const float *wi = panel + (size_t)i * width;
                    for (int o = 0; o < width; o++) yp[o] += a * wi[o];
                }
                for (int o = 0; o < width; o++) yp[o] = act_s(yp[o], act, lo, hi);
            }
            o0 += width;
        }
    }
}

#ifdef MOBILENETS_VECTORS
/* Border handling for the blocked kernels: output columns [*lo, *hi) read only input columns inside the
 * image; for output row oh, kernel rows [*lo, *hi) fall inside it. */
static inline void inner_columns(int w, int kw, int sw, int dw, int pl, int wo, int *lo, int *hi) {
    int first = (pl + sw - 1) / sw, last = w - 1 - (kw - 1) * dw + pl;
    last = last < 0 ? 0 : last / sw + 1;
    if (last > wo) last = wo;
    *lo = first > last ? last : first;
    *hi = last;
}
static inline void inner_rows(int oh, int h, int kh, int sh, int dh, int pt, int *lo, int *hi) {
    int first = 0, end = kh;
    while (first < kh && oh * sh - pt + first * dh < 0) first++;
    while (end > first && oh * sh - pt + (end - 1) * dh >= h) end--;
    *lo = first;
    *hi = end;
}
#endif

/* Depthwise, weights [kh][kw][c]. One output pixel, every channel: accumulators stay in registers
 * across the taps that fall inside the image (the border pixels, and the portable path). */
static inline void depthwise_pixel(const float *restrict x, int h, int w, int c, const float *restrict k,
                                   const float *restrict b, int kh, int kw, int sh, int sw, int dh, int dw,
                                   int pt, int pl, int oh, int ow, float *restrict yp, int act, float lo, float hi) {
    int c0 = 0;
#ifdef MOBILENETS_VECTORS
    for (; c0 + 8 <= c; c0 += 8) {
        v8 acc = LOAD(b + c0);
        for (int i = 0; i < kh; i++) {
            const int ih = oh * sh - pt + i * dh;
            if (ih < 0 || ih >= h) continue;
            for (int j = 0; j < kw; j++) {
                const int iw = ow * sw - pl + j * dw;
                if (iw < 0 || iw >= w) continue;
                acc += LOAD(x + ((size_t)ih * w + iw) * c + c0) * LOAD(k + ((size_t)i * kw + j) * c + c0);
            }
        }
        ST(yp + c0, acc);
    }
#endif
    for (; c0 < c; c0++) {
        float acc = b[c0];
        for (int i = 0; i < kh; i++) {
            const int ih = oh * sh - pt + i * dh;
            if (ih < 0 || ih >= h) continue;
            for (int j = 0; j < kw; j++) {
                const int iw = ow * sw - pl + j * dw;
                if (iw < 0 || iw >= w) continue;
                acc += x[((size_t)ih * w + iw) * c + c0] * k[((size_t)i * kw + j) * c + c0];
            }
        }
        yp[c0] = act_s(acc, act, lo, hi);
    }
}

#ifdef MOBILENETS_VECTORS
/* 4 neighbouring output pixels x every channel, 8 channels at a time, all taps inside the image; xr points
 * at the input pixel under tap (0, 0) of the first output pixel. Always inlined so that kw and dw are
 * constants. Each weight vector is loaded once for 4 pixels (1.25 loads per FMA instead of 2), and 4
 * accumulators leave the registers for the row pointers. */
static inline __attribute__((always_inline)) void depthwise_4(
    const float *restrict xr, int w, int c, const float *restrict k, const float *restrict b, int i_lo, int i_hi,
    int dh, const int kw, const int dw, int sw, float *restrict yp, int act, float lo, float hi) {
    const size_t step = (size_t)sw * c, row = (size_t)dh * w * c;
    int c0 = 0;
    for (; c0 + 8 <= c; c0 += 8) {
        v8 a0 = LOAD(b + c0), a1 = a0, a2 = a0, a3 = a0;
        for (int i = i_lo; i < i_hi; i++) {
            const float *q0 = xr + i * row + c0, *q1 = q0 + step, *q2 = q1 + step, *q3 = q2 + step;
            const float *ki = k + (size_t)i * kw * c + c0;
            for (int j = 0; j < kw; j++) {
                const size_t at = (size_t)j * dw * c;
                const v8 kv = LOAD(ki + (size_t)j * c);
                a0 += LOAD(q0 + at) * kv; a1 += LOAD(q1 + at) * kv; a2 += LOAD(q2 + at) * kv; a3 += LOAD(q3 + at) * kv;
            }
        }
        ST(yp + c0, a0); ST(yp + c + c0, a1); ST(yp + 2 * c + c0, a2); ST(yp + 3 * c + c0, a3);
    }
}
#endif

/* Depthwise convolution. Inside the image (every tap of a row in bounds) the vector path computes 4
 * neighbouring output pixels at once (depthwise_4); the border pixels go through depthwise_pixel. */
static inline void depthwise(const float *restrict x, int h, int w, int c, const float *restrict k,
                             const float *restrict b, int m, int kh, int kw, int sh, int sw, int dh, int dw, int pt, int pl,
                             int ho, int wo, float *restrict y, int act, float lo, float hi) {
    (void)m;
#ifdef MOBILENETS_VECTORS
    int inner_lo, inner_hi;
    inner_columns(w, kw, sw, dw, pl, wo, &inner_lo, &inner_hi);
#endif
    for (int oh = 0; oh < ho; oh++) {
        int ow = 0;
#ifdef MOBILENETS_VECTORS
        if (c % 8 == 0) {
            for (; ow < inner_lo; ow++)
                depthwise_pixel(x, h, w, c, k, b, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, y + ((size_t)oh * wo + ow) * c, act, lo, hi);
            int i_lo, i_hi;
            inner_rows(oh, h, kh, sh, dh, pt, &i_lo, &i_hi);
            for (; ow + 4 <= inner_hi; ow += 4) {
                float *yp = y + ((size_t)oh * wo + ow) * c;
                const float *xr = x + ((size_t)(oh * sh - pt) * w + (ow * sw - pl)) * c;
                /* A constant kernel width lets the compiler unroll the taps and keep the pointers in registers. */
                if (kw == 3 && dw == 1) depthwise_4(xr, w, c, k, b, i_lo, i_hi, dh, 3, 1, sw, yp, act, lo, hi);
                else if (kw == 5 && dw == 1) depthwise_4(xr, w, c, k, b, i_lo, i_hi, dh, 5, 1, sw, yp, act, lo, hi);
                else depthwise_4(xr, w, c, k, b, i_lo, i_hi, dh, kw, dw, sw, yp, act, lo, hi);
            }
        }
#endif
        for (; ow < wo; ow++)
            depthwise_pixel(x, h, w, c, k, b, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, y + ((size_t)oh * wo + ow) * c, act, lo, hi);
    }
}

/* A full convolution (the stem), weights [kh][kw][c][m]. One output pixel, every output channel. */
static inline void conv_pixel(const float *restrict x, int h, int w, int c, const float *restrict k,
                              const float *restrict b, int m, int kh, int kw, int sh, int sw, int dh, int dw, int pt,
                              int pl, int oh, int ow, float *restrict yp, int act, float lo, float hi) {
    int o0 = 0;
#ifdef MOBILENETS_VECTORS
    for (; o0 + 16 <= m; o0 += 16) { /* 16 outputs in two registers across every tap and channel */
        v8 vlo = LOAD(b + o0), vhi = LOAD(b + o0 + 8);
        for (int i = 0; i < kh; i++) {
            const int ih = oh * sh - pt + i * dh;
            if (ih < 0 || ih >= h) continue;
            for (int j = 0; j < kw; j++) {
                const int iw = ow * sw - pl + j * dw;
                if (iw < 0 || iw >= w) continue;
                const float *xp = x + ((size_t)ih * w + iw) * c;
                const float *kp = k + ((size_t)i * kw + j) * c * m + o0;
                for (int ci = 0; ci < c; ci++) {
                    vlo += xp[ci] * LOAD(kp + (size_t)ci * m);
                    vhi += xp[ci] * LOAD(kp + (size_t)ci * m + 8);
                }
            }
        }
        ST(yp + o0, vlo);
        ST(yp + o0 + 8, vhi);
    }
#endif
    for (int o = o0; o < m; o++) yp[o] = b[o];
    if (o0 == m) return;
    for (int i = 0; i < kh; i++) {
        const int ih = oh * sh - pt + i * dh;
        if (ih < 0 || ih >= h) continue;
        for (int j = 0; j < kw; j++) {
            const int iw = ow * sw - pl + j * dw;
            if (iw < 0 || iw >= w) continue;
            const float *xp = x + ((size_t)ih * w + iw) * c;
            for (int ci = 0; ci < c; ci++) {
                const float a = xp[ci];
                const float *kp = k + (((size_t)i * kw + j) * c + ci) * m;
                for (int o = o0; o < m; o++) yp[o] += a * kp[o];
            }
        }
    }
    for (int o = o0; o < m; o++) yp[o] = act_s(yp[o], act, lo, hi);
}

/* Inside the image the vector path computes 4 neighbouring output pixels x 16 output channels: each
 * weight vector is loaded once for 4 pixels and 8 accumulators stay in registers across every tap and
 * input channel; the border pixels go through conv_pixel. */
static inline void conv_general(const float *restrict x, int h, int w, int c, const float *restrict k /* [kh][kw][c][m] */,
                                const float *restrict b, int m, int kh, int kw, int sh, int sw, int dh, int dw, int pt, int pl,
                                int ho, int wo, float *restrict y, int act, float lo, float hi) {
#ifdef MOBILENETS_VECTORS
    int inner_lo, inner_hi;
    inner_columns(w, kw, sw, dw, pl, wo, &inner_lo, &inner_hi);
#endif
    for (int oh = 0; oh < ho; oh++) {
        int ow = 0;
#ifdef MOBILENETS_VECTORS
        if (m % 16 == 0) {
            for (; ow < inner_lo; ow++)
                conv_pixel(x, h, w, c, k, b, m, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, y + ((size_t)oh * wo + ow) * m, act, lo, hi);
            int i_lo, i_hi;
            inner_rows(oh, h, kh, sh, dh, pt, &i_lo, &i_hi);
            const size_t step = (size_t)sw * c;
            for (; ow + 4 <= inner_hi; ow += 4) {
                float *yp = y + ((size_t)oh * wo + ow) * m;
                for (int o0 = 0; o0 < m; o0 += 16) {
                    v8 a0l = LOAD(b + o0), a0h = LOAD(b + o0 + 8);
                    v8 a1l = a0l, a1h = a0h, a2l = a0l, a2h = a0h, a3l = a0l, a3h = a0h;
                    for (int i = i_lo; i < i_hi; i++) {
                        const float *xi = x + ((size_t)(oh * sh - pt + i * dh) * w + (ow * sw - pl)) * c;
                        for (int j = 0; j < kw; j++) {
                            const float *q = xi + (size_t)j * dw * c;
                            const float *kp = k + ((size_t)i * kw + j) * c * m + o0;
                            for (int ci = 0; ci < c; ci++, kp += m) {
                                const v8 wl = LOAD(kp), wh = LOAD(kp + 8);
                                float s;
                                s = q[ci]; a0l += s * wl; a0h += s * wh;
                                s = q[step + ci]; a1l += s * wl; a1h += s * wh;
                                s = q[2 * step + ci]; a2l += s * wl; a2h += s * wh;
                                s = q[3 * step + ci]; a3l += s * wl; a3h += s * wh;
                            }
                        }
                    }
                    ST(yp + o0, a0l); ST(yp + o0 + 8, a0h);
                    ST(yp + m + o0, a1l); ST(yp + m + o0 + 8, a1h);
                    ST(yp + 2 * m + o0, a2l); ST(yp + 2 * m + o0 + 8, a2h);
                    ST(yp + 3 * m + o0, a3l); ST(yp + 3 * m + o0 + 8, a3h);
                }
            }
        }
#endif
        for (; ow < wo; ow++)
            conv_pixel(x, h, w, c, k, b, m, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, y + ((size_t)oh * wo + ow) * m, act, lo, hi);
    }
}

#ifdef MOBILENETS_VECTORS
#define VECTOR_LOOP(n, body_vector, body_scalar) \
    int i = 0; for (; i + 8 <= (n); i += 8) { body_vector } for (; i < (n); i++) { body_scalar }
#else
#define VECTOR_LOOP(n, body_vector, body_scalar) int i = 0; for (; i < (n); i++) { body_scalar }
#endif
static inline void relu(const float *x, float *y, int n) {
    VECTOR_LOOP(n, STORE(y + i, vmax(LOAD(x + i), splat(0.f)));, y[i] = x[i] > 0.f ? x[i] : 0.f;)
}
static inline void clip(const float *x, float *y, int n, float lo, float hi) {
    VECTOR_LOOP(n, STORE(y + i, vmin(vmax(LOAD(x + i), splat(lo)), splat(hi)));,
                { float v = x[i] < lo ? lo : x[i]; y[i] = v > hi ? hi : v; })
}
static inline void hard_sigmoid(const float *x, float *y, int n, float alpha, float beta) {
    VECTOR_LOOP(n, STORE(y + i, vmin(vmax(LOAD(x + i) * alpha + beta, splat(0.f)), splat(1.f)));,
                { float v = alpha * x[i] + beta; v = v < 0.f ? 0.f : v; y[i] = v > 1.f ? 1.f : v; })
}
static inline void hard_swish(const float *x, float *y, int n) {
    VECTOR_LOOP(n, { const v8 v = LOAD(x + i); STORE(y + i, v * vmin(vmax(v * (1.f / 6.f) + 0.5f, splat(0.f)), splat(1.f))); },
                { float v = x[i] * (1.f / 6.f) + 0.5f; v = v < 0.f ? 0.f : v; v = v > 1.f ? 1.f : v; y[i] = x[i] * v; })
}
static inline void channel_mul(const float *x, const float *s, int pixels, int c, float *y) {
    for (int p = 0; p < pixels; p++) for (int ch = 0; ch < c; ch++) y[p * c + ch] = x[p * c + ch] * s[ch];
}
static inline void channel_add(const float *x, const float *s, int pixels, int c, float *y) {
    for (int p = 0; p < pixels; p++) for (int ch = 0; ch < c; ch++) y[p * c + ch] = x[p * c + ch] + s[ch];
}
/* Flatten of a spatial tensor: ONNX means NCHW order, the arena holds NHWC. */
static inline void to_nchw(const float *restrict x, int pixels, int c, float *restrict y) {
    for (int p = 0; p < pixels; p++) for (int ch = 0; ch < c; ch++) y[(size_t)ch * pixels + p] = x[(size_t)p * c + ch];
}
static inline void spatial_mean(const float *x, int pixels, int c, float *y) {
    float sum[4096];
    for (int ch = 0; ch < c; ch++) sum[ch] = 0.f;
    for (int p = 0; p < pixels; p++) for (int ch = 0; ch < c; ch++) sum[ch] += x[p * c + ch];
    for (int ch = 0; ch < c; ch++) y[ch] = sum[ch] / (float)pixels;
}
static inline void gemm(const float *x, int n_in, const float *restrict w /* [in][out] */, const float *b, int n_out,
                        float *restrict y) {
    /* y = b + sum_i x[i] * w[i]: row updates, four weight rows per pass over y (a classifier's weights
     * come from memory, and four streams keep the prefetchers busier than one; measured 1.3x). */
    for (int o = 0; o < n_out; o++) y[o] = b[o];
    int i = 0;
    for (; i + 4 <= n_in; i += 4) {
        const float a0 = x[i], a1 = x[i + 1], a2 = x[i + 2], a3 = x[i + 3];
        const float *w0 = w + (size_t)i * n_out, *w1 = w0 + n_out, *w2 = w1 + n_out, *w3 = w2 + n_out;
        for (int o = 0; o < n_out; o++) y[o] += a0 * w0[o] + a1 * w1[o] + a2 * w2[o] + a3 * w3[o];
    }
    for (; i < n_in; i++) {
        const float a = x[i];
        const float *wi = w + (size_t)i * n_out;
        for (int o = 0; o < n_out; o++) y[o] += a * wi[o];
    }
}
