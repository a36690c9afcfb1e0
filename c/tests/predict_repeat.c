/* Opens a model, segments one synthetic image N times, closes: the program valgrind runs
 * (tests/test_c_library.py) and the C side of benchmarks/c_vs_python.py.
 *
 *   predict_repeat MODEL HEIGHT WIDTH N [THREADS]
 *
 * Prints the milliseconds of each isd_predict() call on one line, then "peak_rss_kib N"
 * (VmHWM of /proc/self/status). */
#define _POSIX_C_SOURCE 200809L
#include <isdnet.h>

#include <time.h>

#include "testutil.h"

int main(int argc, char **argv)
{
    if (argc != 5 && argc != 6) {
        fprintf(stderr, "usage: predict_repeat MODEL HEIGHT WIDTH N [THREADS]\n");
        return 2;
    }
    int h = atoi(argv[2]), w = atoi(argv[3]), n = atoi(argv[4]);
    int threads = argc == 6 ? atoi(argv[5]) : 0;
    if (h < 1 || w < 1 || h > ISD_MAX_SIDE || w > ISD_MAX_SIDE || n < 0)
        return 2;
    uint8_t *pixels = malloc((size_t)h * w * 3);
    uint8_t *labels = malloc((size_t)h * w);
    if (!pixels || !labels)
        return 1;
    /* A smooth gradient with some texture: deterministic and image-like. */
    for (int y = 0; y < h; y++) {
        for (int x = 0; x < w; x++) {
            uint8_t *p = pixels + ((size_t)y * w + x) * 3;
            p[0] = (uint8_t)(255 * x / w);
            p[1] = (uint8_t)(255 * y / h);
            p[2] = (uint8_t)((x * y / 7 + x / 3) & 0xFF);
        }
    }
    isd_model *model = NULL;
    if (isd_open_threads(argv[1], threads, &model) != ISD_OK) {
        fprintf(stderr, "isd_open: %s\n", isd_last_error());
        return 1;
    }
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        if (isd_predict(model, pixels, h, w, (size_t)w * 3, ISD_RGB, labels, (size_t)w)) {
            fprintf(stderr, "isd_predict: %s\n", isd_last_error());
            rc = 1;
        }
        clock_gettime(CLOCK_MONOTONIC, &b);
        printf("%s%.3f", i ? " " : "",
               (double)(b.tv_sec - a.tv_sec) * 1e3 + (double)(b.tv_nsec - a.tv_nsec) / 1e6);
    }
    printf("\npeak_rss_kib %ld\n", peak_rss_kib());
    isd_close(model);
    free(pixels);
    free(labels);
    return rc;
}
