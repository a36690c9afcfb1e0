/* Declarations shared by the library's source files; none of them is exported. */
#ifndef ISDNET_INTERNAL_H
#define ISDNET_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define ISD_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define ISD_PRINTF(a, b)
#endif

/* Formats the calling thread's last error message (newlines become spaces, long messages
 * are cut) and returns `code`. */
int isd__fail(int code, const char *format, ...) ISD_PRINTF(2, 3);

/* The artifact's contract, as far as the C library needs it. */
typedef struct {
    int uint8_input;     /* "image" is uint8 1xHxWx3 RGB bytes; else float32 1x3xHxW */
    int labels_output;   /* the output is "labels" HxW; else "logits" 1xCxHxW float32 */
    int labels_int32;    /* labels are int32 (else uint8) */
    int resize_in_graph; /* output_resize "graph": input "output_size" int32 [2] */
    int fixed_height;    /* static artifacts: the only network input size; 0 when dynamic */
    int fixed_width;
    int min_size;        /* smallest network input side */
    float mean[3];       /* normalisation of float-input artifacts, RGB, as float32 */
    float std[3];
    double test_scale;
    int num_classes;     /* 1..256 */
    char **classes;      /* num_classes names, each NUL-terminated */
    uint8_t (*palette)[3]; /* num_classes colours: the contract's, then generated ones */
} isd_contract;

/* Largest contract text read (they are a few KiB); bounds the parser's memory. */
#define ISD_MAX_CONTRACT_BYTES (256u * 1024u)

/* Parses and checks the contract JSON. Returns 0, or an ISD_ERR_* code with the message
 * set; `contract` is then empty. */
int isd__contract_parse(const char *json, size_t length, isd_contract *contract);
void isd__contract_free(isd_contract *contract);

/* The colour `isdnet-deploy infer --overlay` gives class `index` when the contract's
 * palette has none (runtime.batch.palette_of): golden-ratio hues, saturation 0.75, value
 * 0.95, rounded half to even. */
void isd__generated_color(int index, uint8_t rgb[3]);

/* OpenCV's cv::resize(..., INTER_LINEAR) of an 8-bit, 3-channel image, to the bit (as
 * OpenCV 5 computes it; checked against cv2 by tests/test_c_library.py). Reads sh rows of
 * sw pixels at src + y * stride; `swap` exchanges channels 0 and 2 (BGR -> RGB). Writes
 * dh x dw x 3 contiguous bytes to dst. Returns 0, or -1 when out of memory (dst is then
 * untouched). */
int isd__resize_rgb8(const uint8_t *src, int sh, int sw, size_t stride, int swap,
                     uint8_t *dst, int dh, int dw);

/* Copies an h x w x 3 image (row stride `stride`, channels swapped when `swap`) to
 * contiguous RGB bytes. */
void isd__copy_rgb8(const uint8_t *src, int h, int w, size_t stride, int swap, uint8_t *dst);

/* Contiguous h x w RGB bytes -> 3 x h x w float32 planes of (x - mean) / std, computed in
 * float32 as NumPy does. */
void isd__normalise(const uint8_t *rgb, int h, int w, const float mean[3], const float std[3],
                    float *planes);

/* Class scores (classes x h x w float32) -> H x W labels written at labels + y * stride:
 * the logits are resized bilinearly to H x W first when the sizes differ, in the exact
 * arithmetic of runtime.preprocess.logits_to_labels, then the first class with the
 * highest score wins (NaN never does). Returns 0, or -1 when out of memory (labels are
 * then untouched). */
int isd__logits_to_labels(const float *scores, int classes, int h, int w,
                          uint8_t *labels, int H, int W, size_t stride);

#endif
