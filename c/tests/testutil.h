/* Helpers shared by the test programs of tests/test_c_library.py (header-only). */
#ifndef ISDNET_TESTUTIL_H
#define ISDNET_TESTUTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Reads a whole file; NULL (after a message) on error. */
static inline uint8_t *read_file(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", path);
        return NULL;
    }
    uint8_t *data = NULL;
    long n;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
        (data = malloc((size_t)n + 1)) != NULL && fread(data, 1, (size_t)n, f) != (size_t)n) {
        free(data);
        data = NULL;
    }
    fclose(f);
    if (!data)
        fprintf(stderr, "cannot read %s\n", path);
    else
        *size = (size_t)n;
    return data;
}

static inline int write_file(const char *path, const void *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, size, f) != size) {
        fprintf(stderr, "cannot write %s\n", path);
        if (f)
            fclose(f);
        return -1;
    }
    return fclose(f) == 0 ? 0 : -1;
}

/* A binary PPM as written by the tests ("P6\n<w> <h>\n255\n" + RGB rows). */
static inline uint8_t *read_ppm(const char *path, int *height, int *width)
{
    size_t size;
    uint8_t *data = read_file(path, &size);
    if (!data)
        return NULL;
    int w, h, consumed = 0;
    char header[65];
    memcpy(header, data, size < 64 ? size : 64);
    header[size < 64 ? size : 64] = '\0';
    if (sscanf(header, "P6 %d %d 255%n", &w, &h, &consumed) != 2 || consumed == 0 || w < 1 ||
        h < 1 || (size_t)consumed + 1 + (size_t)w * h * 3 != size) {
        fprintf(stderr, "%s is not a PPM written by the tests\n", path);
        free(data);
        return NULL;
    }
    uint8_t *pixels = malloc((size_t)w * h * 3);
    if (pixels)
        memcpy(pixels, data + consumed + 1, (size_t)w * h * 3);
    free(data);
    *height = h;
    *width = w;
    return pixels;
}

static inline int write_pgm(const char *path, const uint8_t *labels, int height, int width)
{
    char header[64];
    int n = snprintf(header, sizeof header, "P5\n%d %d\n255\n", width, height);
    size_t size = (size_t)n + (size_t)height * width;
    uint8_t *data = malloc(size);
    if (!data)
        return -1;
    memcpy(data, header, (size_t)n);
    memcpy(data + n, labels, (size_t)height * width);
    int rc = write_file(path, data, size);
    free(data);
    return rc;
}

/* Peak resident memory of this process so far (VmHWM of /proc/self/status), or -1. */
static inline long peak_rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    while (f && fgets(line, sizeof line, f)) {
        if (strncmp(line, "VmHWM:", 6) == 0)
            kib = strtol(line + 6, NULL, 10);
    }
    if (f)
        fclose(f);
    return kib;
}

#endif
