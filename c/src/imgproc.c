/* Pre- and post-processing, each the exact arithmetic of the Python runtime.
 *
 * Build with -ffp-contract=off (CMakeLists.txt): every product below is rounded to float32
 * on its own, as NumPy rounds it; a fused multiply-add would change the last bit. */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* --- OpenCV's bilinear resize of 8-bit images ------------------------------------------- */

/* OpenCV's fixed-point weights: INTER_RESIZE_COEF_BITS = 11. */
#define COEF_SCALE 2048

typedef struct {
    int first;    /* first source pixel (the second is first + 1, clamped) */
    short w0, w1; /* fixed-point weights */
} fixed_tap;

/* cv::resize's source position and weights for output pixel d: its scale is
 * 1 / (dst / src) in double, the position (d + 0.5) * scale - 0.5 is rounded to float, and
 * the weights are float products rounded to the nearest integer (half to even). Columns
 * clamp the position to the image; rows keep the weights and clamp the two rows read. */
static void fixed_taps(int src, int dst, int clamp, fixed_tap *taps)
{
    double scale = 1.0 / ((double)dst / (double)src);
    for (int d = 0; d < dst; d++) {
        float f = (float)((d + 0.5) * scale - 0.5);
        int s = (int)floorf(f);
        f -= (float)s;
        if (clamp && s < 0) {
            f = 0.0f;
            s = 0;
        }
        if (clamp && s >= src - 1) {
            f = 0.0f;
            s = src - 1;
        }
        taps[d].first = s;
        taps[d].w0 = (short)lrintf((1.0f - f) * (float)COEF_SCALE);
        taps[d].w1 = (short)lrintf(f * (float)COEF_SCALE);
    }
}

/* One source row resized horizontally: 3 values per output pixel, scaled by 2048. */
static void resize_row(const uint8_t *row, int sw, int swap, const fixed_tap *cols, int dw,
                       int *out)
{
    int c0 = swap ? 2 : 0, c2 = swap ? 0 : 2;
    for (int x = 0; x < dw; x++) {
        const uint8_t *a = row + 3 * cols[x].first;
        const uint8_t *b = cols[x].first + 1 < sw ? a + 3 : a;
        int w0 = cols[x].w0, w1 = cols[x].w1;
        out[3 * x + 0] = a[c0] * w0 + b[c0] * w1;
        out[3 * x + 1] = a[1] * w0 + b[1] * w1;
        out[3 * x + 2] = a[c2] * w0 + b[c2] * w1;
    }
}

static int clamp_row(int y, int h)
{
    return y < 0 ? 0 : y >= h ? h - 1 : y;
}

int isd__resize_rgb8(const uint8_t *src, int sh, int sw, size_t stride, int swap,
                     uint8_t *dst, int dh, int dw)
{
    fixed_tap *cols = malloc((size_t)dw * sizeof *cols);
    fixed_tap *rows = malloc((size_t)dh * sizeof *rows);
    int *buffer = malloc(2 * (size_t)dw * 3 * sizeof *buffer);
    if (!cols || !rows || !buffer) {
        free(cols);
        free(rows);
        free(buffer);
        return -1;
    }
    fixed_taps(sw, dw, 1, cols);
    fixed_taps(sh, dh, 0, rows);
    int *line[2] = {buffer, buffer + (size_t)dw * 3};
    int held[2] = {-1, -1}; /* source row in each line buffer */
    size_t n = (size_t)dw * 3;
    for (int y = 0; y < dh; y++) {
        int r0 = clamp_row(rows[y].first, sh), r1 = clamp_row(rows[y].first + 1, sh);
        int s0 = held[0] == r0 ? 0 : held[1] == r0 ? 1 : -1;
        if (s0 < 0) {
            s0 = held[0] == r1 ? 1 : 0; /* keep r1 if it is there */
            resize_row(src + (size_t)r0 * stride, sw, swap, cols, dw, line[s0]);
            held[s0] = r0;
        }
        int s1 = held[0] == r1 ? 0 : held[1] == r1 ? 1 : -1;
        if (s1 < 0) {
            s1 = 1 - s0;
            resize_row(src + (size_t)r1 * stride, sw, swap, cols, dw, line[s1]);
            held[s1] = r1;
        }
        const int *use[2] = {line[s0], line[s1]};
        /* OpenCV's SIMD vertical pass, which it applies to every pixel: each row's value
         * scaled down by 16, multiplied by its weight keeping the high 16 bits, the sum
         * rounded from 4 fractional bits. */
        int b0 = rows[y].w0, b1 = rows[y].w1;
        uint8_t *out = dst + (size_t)y * n;
        for (size_t i = 0; i < n; i++) {
            int v = (((use[0][i] >> 4) * b0) >> 16) + (((use[1][i] >> 4) * b1) >> 16);
            v = (v + 2) >> 2;
            out[i] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
        }
    }
    free(cols);
    free(rows);
    free(buffer);
    return 0;
}

void isd__copy_rgb8(const uint8_t *src, int h, int w, size_t stride, int swap, uint8_t *dst)
{
    for (int y = 0; y < h; y++) {
        const uint8_t *row = src + (size_t)y * stride;
        uint8_t *out = dst + (size_t)y * w * 3;
        if (!swap) {
            memcpy(out, row, (size_t)w * 3);
            continue;
        }
        for (int x = 0; x < w; x++) {
            out[3 * x + 0] = row[3 * x + 2];
            out[3 * x + 1] = row[3 * x + 1];
            out[3 * x + 2] = row[3 * x + 0];
        }
    }
}

void isd__normalise(const uint8_t *rgb, int h, int w, const float mean[3], const float std[3],
                    float *planes)
{
    size_t n = (size_t)h * w;
    for (int c = 0; c < 3; c++) {
        float *plane = planes + (size_t)c * n;
        for (size_t i = 0; i < n; i++)
            plane[i] = ((float)rgb[3 * i + c] - mean[c]) / std[c];
    }
}

/* --- logits -> labels -------------------------------------------------------------------- */

typedef struct {
    int first, second;
    float w0, w1;
} linear_tap;

/* pyramid.opencv_ops.bilinear_taps: PyTorch's position (i + 0.5) * float32(in / out) - 0.5,
 * exact in double and rounded once to float32, clamped at 0; weights in float32. */
static void linear_taps(int in, int out, linear_tap *taps)
{
    double scale = (double)((float)in / (float)out);
    for (int i = 0; i < out; i++) {
        float source = (float)(((double)i + 0.5) * scale - 0.5);
        if (source < 0.0f)
            source = 0.0f;
        int first = (int)floorf(source);
        if (first > in - 1)
            first = in - 1;
        taps[i].first = first;
        taps[i].second = first + 1 < in ? first + 1 : in - 1;
        taps[i].w1 = source - (float)first;
        taps[i].w0 = 1.0f - taps[i].w1;
    }
}

/* Column-interpolated source rows, two per class (the two rows an output row reads). */
typedef struct {
    const float *scores;
    int h, w, W;
    const linear_tap *cols;
    float *rows; /* classes x 2 x W */
    int *held;   /* classes x 2: source row in each slot, -1 when empty */
} row_cache;

static void interpolate_columns(const row_cache *cache, int k, int r, float *out)
{
    const float *src = cache->scores + ((size_t)k * cache->h + r) * cache->w;
    for (int x = 0; x < cache->W; x++) {
        const linear_tap *t = &cache->cols[x];
        float a = src[t->first] * t->w0;
        float b = src[t->second] * t->w1;
        out[x] = a + b;
    }
}

/* Rows r0 and r1 of class k, column-interpolated. */
static void cached_rows(row_cache *cache, int k, int r0, int r1, const float **p0,
                        const float **p1)
{
    int *held = cache->held + 2 * k;
    float *slots = cache->rows + (size_t)2 * k * cache->W;
    int s0 = held[0] == r0 ? 0 : held[1] == r0 ? 1 : -1;
    if (s0 < 0) {
        s0 = held[0] == r1 ? 1 : 0; /* keep r1 if it is there */
        interpolate_columns(cache, k, r0, slots + (size_t)s0 * cache->W);
        held[s0] = r0;
    }
    int s1 = held[0] == r1 ? 0 : held[1] == r1 ? 1 : -1;
    if (s1 < 0) {
        s1 = 1 - s0;
        interpolate_columns(cache, k, r1, slots + (size_t)s1 * cache->W);
        held[s1] = r1;
    }
    *p0 = slots + (size_t)s0 * cache->W;
    *p1 = slots + (size_t)s1 * cache->W;
}

/* Running argmax over classes: the first class with the highest score; NaN never wins. */
static void argmax_step(int k, const float *v, float *best, uint8_t *labels, int W)
{
    if (k == 0) {
        for (int x = 0; x < W; x++) {
            best[x] = isnan(v[x]) ? -INFINITY : v[x];
            labels[x] = 0;
        }
        return;
    }
    for (int x = 0; x < W; x++) {
        if (v[x] > best[x]) {
            best[x] = v[x];
            labels[x] = (uint8_t)k;
        }
    }
}

int isd__logits_to_labels(const float *scores, int classes, int h, int w,
                          uint8_t *labels, int H, int W, size_t stride)
{
    int resize = H != h || W != w;
    float *best = malloc((size_t)W * sizeof *best);
    float *value = malloc((size_t)W * sizeof *value);
    linear_tap *cols = resize ? malloc((size_t)W * sizeof *cols) : NULL;
    linear_tap *rows = resize ? malloc((size_t)H * sizeof *rows) : NULL;
    float *cache_rows = resize ? malloc((size_t)classes * 2 * W * sizeof *cache_rows) : NULL;
    int *held = resize ? malloc((size_t)classes * 2 * sizeof *held) : NULL;
    int status = -1;
    if (!best || !value || (resize && (!cols || !rows || !cache_rows || !held)))
        goto done;
    row_cache cache = {scores, h, w, W, cols, cache_rows, held};
    if (resize) {
        linear_taps(w, W, cols);
        linear_taps(h, H, rows);
        for (int i = 0; i < 2 * classes; i++)
            held[i] = -1;
    }
    for (int y = 0; y < H; y++) {
        uint8_t *out = labels + (size_t)y * stride;
        for (int k = 0; k < classes; k++) {
            const float *v;
            if (resize) {
                const float *p0, *p1;
                cached_rows(&cache, k, rows[y].first, rows[y].second, &p0, &p1);
                float w0 = rows[y].w0, w1 = rows[y].w1;
                for (int x = 0; x < W; x++) {
                    float a = p0[x] * w0;
                    float b = p1[x] * w1;
                    value[x] = a + b;
                }
                v = value;
            } else {
                v = scores + ((size_t)k * h + y) * w;
            }
            argmax_step(k, v, best, out, W);
        }
    }
    status = 0;
done: /* one release path for success and allocation failure */
    free(best);
    free(value);
    free(cols);
    free(rows);
    free(cache_rows);
    free(held);
    return status;
}

/* --- colours ----------------------------------------------------------------------------- */

/* Python's colorsys.hsv_to_rgb, in the same double arithmetic. */
static void hsv_to_rgb(double h, double s, double v, double rgb[3])
{
    int i = (int)(h * 6.0);
    double f = (h * 6.0) - i;
    double p = v * (1.0 - s), q = v * (1.0 - s * f), t = v * (1.0 - s * (1.0 - f));
    double table[6][3] = {{v, t, p}, {q, v, p}, {p, v, t}, {p, q, v}, {t, p, v}, {v, p, q}};
    for (int c = 0; c < 3; c++)
        rgb[c] = table[i % 6][c];
}

void isd__generated_color(int index, uint8_t rgb[3])
{
    double value[3];
    hsv_to_rgb(fmod(index * 0.618034, 1.0), 0.75, 0.95, value);
    for (int c = 0; c < 3; c++)
        rgb[c] = (uint8_t)nearbyint(255.0 * value[c]);
}
