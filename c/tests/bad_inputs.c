/* Every bad input of issue 13 against the library: each must give its error code, one
 * non-empty line from isd_last_error(), no crash, and no byte written to the labels.
 *
 *   bad_inputs VALID.onnx CODE:NAME:PATH...
 *
 * Each CODE:NAME:PATH is a file isd_open() must refuse with error code CODE; then the bad
 * arguments of isd_predict() are tried on VALID.onnx. Prints "ok <case>: <message>" or
 * "FAIL <case>: <why>" per case; exit status is the number of failed cases. */
#include <isdnet.h>

#include "testutil.h"

#define H 48
#define W 40
#define LABELS_STRIDE (W + 8)
#define LABELS_BYTES (H * LABELS_STRIDE + 64)

static int failures;
static uint8_t labels[LABELS_BYTES];

static int one_line(const char *message)
{
    return message && message[0] && !strchr(message, '\n') && !strchr(message, '\r') &&
           strlen(message) < 1024;
}

static void check(const char *name, int rc, int expected)
{
    const char *message = isd_last_error();
    int untouched = 1;
    for (size_t i = 0; i < LABELS_BYTES; i++)
        untouched &= labels[i] == 0xEE;
    if (rc != expected) {
        printf("FAIL %s: code %d, expected %d (%s)\n", name, rc, expected, message);
    } else if (!one_line(message)) {
        printf("FAIL %s: the message is not one non-empty line\n", name);
    } else if (!untouched) {
        printf("FAIL %s: labels were written\n", name);
    } else {
        printf("ok %s: %s\n", name, message);
        return;
    }
    failures++;
}

static void check_open(const char *name, const char *path, int expected)
{
    isd_model *model = (isd_model *)&failures; /* must come back NULL */
    int rc = isd_open(path, &model);
    if (model != NULL) {
        printf("FAIL %s: *model is not NULL after a failed open\n", name);
        failures++;
        if (rc == ISD_OK)
            isd_close(model);
        return;
    }
    check(name, rc, expected);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bad_inputs VALID.onnx CODE:NAME:PATH...\n");
        return 2;
    }
    memset(labels, 0xEE, sizeof labels);
    for (int i = 2; i < argc; i++) {
        char *name = strchr(argv[i], ':');
        char *path = name ? strchr(name + 1, ':') : NULL;
        if (!path) {
            fprintf(stderr, "bad case %s\n", argv[i]);
            return 2;
        }
        *name++ = '\0';
        *path++ = '\0';
        check_open(name, path, atoi(argv[i]));
    }
    check_open("NULL path", NULL, ISD_ERR_ARGUMENT);
    check("NULL model pointer", isd_open(argv[1], NULL), ISD_ERR_ARGUMENT);

    isd_model *model = NULL;
    if (isd_open(argv[1], &model) != ISD_OK) {
        printf("FAIL open the valid model: %s\n", isd_last_error());
        return failures + 1;
    }
    static uint8_t pixels[2 * H * (3 * W + 16)];
    for (size_t i = 0; i < sizeof pixels; i++)
        pixels[i] = (uint8_t)(i * 7);
    size_t stride = 3 * W;
    check("NULL model", isd_predict(NULL, pixels, H, W, stride, ISD_RGB, labels, LABELS_STRIDE),
          ISD_ERR_ARGUMENT);
    check("NULL pixels", isd_predict(model, NULL, H, W, stride, ISD_RGB, labels, LABELS_STRIDE),
          ISD_ERR_ARGUMENT);
    check("NULL labels", isd_predict(model, pixels, H, W, stride, ISD_RGB, NULL, LABELS_STRIDE),
          ISD_ERR_ARGUMENT);
    check("height 0", isd_predict(model, pixels, 0, W, stride, ISD_RGB, labels, LABELS_STRIDE),
          ISD_ERR_ARGUMENT);
    check("width -1", isd_predict(model, pixels, H, -1, stride, ISD_RGB, labels, LABELS_STRIDE),
          ISD_ERR_ARGUMENT);
    check("height below the contract minimum",
          isd_predict(model, pixels, 20, W, stride, ISD_RGB, labels, LABELS_STRIDE),
          ISD_ERR_ARGUMENT);
    check("width below the contract minimum",
          isd_predict(model, pixels, H, 30, stride, ISD_RGB, labels, LABELS_STRIDE),
          ISD_ERR_ARGUMENT);
    check("height above ISD_MAX_SIDE",
          isd_predict(model, pixels, ISD_MAX_SIDE + 1, W, stride, ISD_RGB, labels, LABELS_STRIDE),
          ISD_ERR_ARGUMENT);
    check("row_stride below 3 x width",
          isd_predict(model, pixels, H, W, 3 * W - 1, ISD_RGB, labels, LABELS_STRIDE),
          ISD_ERR_ARGUMENT);
    check("labels_row_stride below width",
          isd_predict(model, pixels, H, W, stride, ISD_RGB, labels, W - 1), ISD_ERR_ARGUMENT);
    check("unknown channel_order",
          isd_predict(model, pixels, H, W, stride, 2, labels, LABELS_STRIDE), ISD_ERR_ARGUMENT);
    check("channel_order -1",
          isd_predict(model, pixels, H, W, stride, -1, labels, LABELS_STRIDE), ISD_ERR_ARGUMENT);
    uint8_t rgb[3] = {1, 2, 3};
    check("isd_class_color out of range", isd_class_color(model, isd_num_classes(model), rgb),
          ISD_ERR_ARGUMENT);
    if (rgb[0] != 1 || rgb[1] != 2 || rgb[2] != 3) {
        printf("FAIL isd_class_color wrote on error\n");
        failures++;
    }
    if (isd_class_name(model, -1) != NULL || isd_class_name(model, 256) != NULL ||
        isd_num_classes(NULL) != -1 || isd_contract_json(NULL) != NULL) {
        printf("FAIL accessors accept bad arguments\n");
        failures++;
    }
    /* The valid call still works after all that and writes only the labels. */
    if (isd_predict(model, pixels, H, W, stride, ISD_RGB, labels, LABELS_STRIDE) != ISD_OK) {
        printf("FAIL valid call after bad ones: %s\n", isd_last_error());
        failures++;
    } else {
        for (size_t i = 0; i < LABELS_BYTES; i++) {
            int inside = i < (size_t)H * LABELS_STRIDE && i % LABELS_STRIDE < W;
            if (!inside && labels[i] != 0xEE) {
                printf("FAIL the valid call wrote outside its labels\n");
                failures++;
                break;
            }
        }
        printf("ok valid call after the bad ones\n");
    }
    isd_close(model);
    isd_close(NULL);
    return failures;
}
