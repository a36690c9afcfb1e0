/* isdnet-segment: segment a binary PPM image with libisdnet.
 *
 *   isdnet-segment MODEL.onnx IMAGE.ppm LABELS.pgm
 *
 * Writes the class id of every pixel as an 8-bit PGM of the image's size and prints how
 * many pixels each class got, with the contract's class names. Exit status 0 on success,
 * 1 with one line on stderr otherwise; LABELS.pgm only appears once it is complete. */
#define _POSIX_C_SOURCE 200809L
#include <isdnet.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(const char *message, const char *detail)
{
    fprintf(stderr, "isdnet-segment: %s%s\n", message, detail ? detail : "");
    return 1;
}

/* Next header number of a PNM file, skipping white space and comments. */
static int pnm_number(FILE *file, long *value)
{
    int c = fgetc(file);
    while (c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '#') {
        if (c == '#') {
            while (c != '\n' && c != EOF)
                c = fgetc(file);
        }
        c = fgetc(file);
    }
    if (c < '0' || c > '9')
        return -1;
    *value = 0;
    while (c >= '0' && c <= '9') {
        if (*value > 1000000)
            return -1;
        *value = *value * 10 + (c - '0');
        c = fgetc(file);
    }
    /* Exactly one white-space byte ends the header's last number. */
    return (c == ' ' || c == '\t' || c == '\r' || c == '\n') ? 0 : -1;
}

/* Reads a binary (P6) 8-bit PPM; returns the pixels (RGB, rows of 3 * width bytes). */
static uint8_t *read_ppm(const char *path, int *height, int *width)
{
    FILE *file = fopen(path, "rb");
    if (!file) {
        fail("cannot open ", path);
        return NULL;
    }
    long w, h, maxval;
    uint8_t *pixels = NULL;
    if (fgetc(file) != 'P' || fgetc(file) != '6' || pnm_number(file, &w) ||
        pnm_number(file, &h) || pnm_number(file, &maxval) || maxval != 255) {
        fail("not a binary 8-bit PPM (P6, maxval 255): ", path);
    } else if (w < 1 || h < 1 || w > ISD_MAX_SIDE || h > ISD_MAX_SIDE) {
        fail("image size out of range in ", path);
    } else if (!(pixels = malloc((size_t)w * h * 3))) {
        fail("out of memory reading ", path);
    } else if (fread(pixels, 1, (size_t)w * h * 3, file) != (size_t)w * h * 3) {
        fail("truncated PPM: ", path);
        free(pixels);
        pixels = NULL;
    }
    fclose(file);
    *height = (int)h;
    *width = (int)w;
    return pixels;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: isdnet-segment MODEL.onnx IMAGE.ppm LABELS.pgm\n");
        return 2;
    }
    const char *model_path = argv[1], *image_path = argv[2], *out_path = argv[3];
    size_t tmp_size = strlen(out_path) + 8;
    char *tmp_path = malloc(tmp_size);
    if (!tmp_path)
        return fail("out of memory", NULL);
    snprintf(tmp_path, tmp_size, "%s.part", out_path);
    /* The output's folder must be writable before any work starts. */
    FILE *out = fopen(tmp_path, "wb");
    if (!out) {
        free(tmp_path);
        return fail("cannot write next to ", out_path);
    }

    int status = 1, height = 0, width = 0;
    isd_model *model = NULL;
    uint8_t *labels = NULL;
    uint8_t *pixels = read_ppm(image_path, &height, &width);
    if (pixels && isd_open(model_path, &model) != ISD_OK) {
        fail(isd_last_error(), NULL);
    } else if (pixels && !(labels = malloc((size_t)height * width))) {
        fail("out of memory", NULL);
    } else if (pixels && isd_predict(model, pixels, height, width, (size_t)width * 3, ISD_RGB,
                                     labels, (size_t)width) != ISD_OK) {
        fail(isd_last_error(), NULL);
    } else if (pixels) {
        fprintf(out, "P5\n%d %d\n255\n", width, height);
        if (fwrite(labels, 1, (size_t)height * width, out) != (size_t)height * width ||
            fflush(out) != 0) {
            fail("cannot write ", out_path);
        } else {
            status = 0;
        }
    }
    if (fclose(out) != 0 && status == 0)
        status = fail("cannot write ", out_path);
    if (status == 0 && rename(tmp_path, out_path) != 0)
        status = fail("cannot rename the finished file to ", out_path);
    if (status != 0)
        remove(tmp_path);

    if (status == 0) {
        size_t counts[256] = {0};
        size_t total = (size_t)height * width;
        for (size_t i = 0; i < total; i++)
            counts[labels[i]]++;
        printf("%s: %dx%d -> %s\n", image_path, height, width, out_path);
        for (int k = 0; k < isd_num_classes(model); k++) {
            printf("%3d %-20s %10zu px %6.2f %%\n", k, isd_class_name(model, k), counts[k],
                   100.0 * (double)counts[k] / (double)total);
        }
    }
    isd_close(model);
    free(labels);
    free(pixels);
    free(tmp_path);
    return status;
}
