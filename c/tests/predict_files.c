/* Segments PPM images with one model handle, as tests/test_c_library.py asks.
 *
 *   predict_files MODEL rgb|bgr PAD OUT_PREFIX IMAGE.ppm...
 *
 * Each image is passed with channel order rgb or bgr (its channels swapped in memory) and
 * rows padded by PAD bytes (filled with junk); labels are written with rows padded by
 * PAD + 1 bytes, and every byte between label rows and after the last must come back
 * untouched. Labels go to OUT_PREFIX<i>.pgm. Exit status 0, or 1 with a message. */
#include <isdnet.h>

#include "testutil.h"

#define GUARD 0x5A
#define GUARD_TAIL 64

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: predict_files MODEL rgb|bgr PAD OUT_PREFIX IMAGE.ppm...\n");
        return 2;
    }
    int bgr = strcmp(argv[2], "bgr") == 0;
    size_t pad = (size_t)atoi(argv[3]);
    isd_model *model = NULL;
    if (isd_open(argv[1], &model) != ISD_OK) {
        fprintf(stderr, "isd_open: %s\n", isd_last_error());
        return 1;
    }
    int rc = 0;
    for (int i = 5; i < argc && rc == 0; i++) {
        int h, w;
        uint8_t *rgb = read_ppm(argv[i], &h, &w);
        if (!rgb) {
            rc = 1;
            break;
        }
        size_t stride = (size_t)w * 3 + pad, labels_stride = (size_t)w + pad + 1;
        uint8_t *pixels = malloc((size_t)h * stride);
        uint8_t *labels = malloc((size_t)h * labels_stride + GUARD_TAIL);
        uint8_t *packed = malloc((size_t)h * w);
        if (!pixels || !labels || !packed)
            return 1;
        for (int y = 0; y < h; y++) {
            uint8_t *row = pixels + (size_t)y * stride;
            for (int x = 0; x < w; x++) {
                const uint8_t *p = rgb + ((size_t)y * w + x) * 3;
                row[3 * x + 0] = bgr ? p[2] : p[0];
                row[3 * x + 1] = p[1];
                row[3 * x + 2] = bgr ? p[0] : p[2];
            }
            for (size_t k = (size_t)w * 3; k < stride; k++)
                row[k] = (uint8_t)(37 * k + y); /* junk the library must not read */
        }
        memset(labels, GUARD, (size_t)h * labels_stride + GUARD_TAIL);
        if (isd_predict(model, pixels, h, w, stride, bgr ? ISD_BGR : ISD_RGB, labels,
                        labels_stride) != ISD_OK) {
            fprintf(stderr, "isd_predict %s: %s\n", argv[i], isd_last_error());
            rc = 1;
        }
        for (int y = 0; rc == 0 && y < h; y++) {
            memcpy(packed + (size_t)y * w, labels + (size_t)y * labels_stride, (size_t)w);
            for (size_t k = (size_t)w; k < labels_stride; k++) {
                if (labels[(size_t)y * labels_stride + k] != GUARD) {
                    fprintf(stderr, "%s: a byte between label rows was written\n", argv[i]);
                    rc = 1;
                }
            }
        }
        for (size_t k = 0; rc == 0 && k < GUARD_TAIL; k++) {
            if (labels[(size_t)h * labels_stride + k] != GUARD) {
                fprintf(stderr, "%s: a byte after the labels was written\n", argv[i]);
                rc = 1;
            }
        }
        if (rc == 0) {
            char path[4096];
            snprintf(path, sizeof path, "%s%d.pgm", argv[4], i - 5);
            rc = write_pgm(path, packed, h, w) ? 1 : 0;
        }
        free(rgb);
        free(pixels);
        free(labels);
        free(packed);
    }
    isd_close(model);
    return rc;
}
