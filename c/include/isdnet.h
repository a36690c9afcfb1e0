/*
 * libisdnet: ISDNet segmentation from C, over ONNX Runtime's C API.
 *
 * Runs an ONNX artifact written by `isdnet-deploy export` with the I/O contract stored in
 * it (metadata key "isdnet_deploy"): the profile's test scale (OpenCV's bilinear resize of
 * the 8-bit image, reproduced to the bit), normalisation, the network, and the bilinear
 * resize of the logits back to the image's size before the argmax. The labels equal
 * `isdnet_deploy.runtime.load(path).predict(image, color=...)` byte for byte, for the
 * default export (float input, logits output) and the embedding export
 * (`--input uint8 --output-kind labels`).
 *
 * Supported artifacts: pyramid in the graph (the default; `--pyramid external` artifacts are
 * refused at open), float32 NCHW or uint8 NHWC input, float32 logits or uint8/int32 labels,
 * at most 256 classes. Labels-output artifacts exported before the logits were resized in
 * the graph (contract field "output_resize" absent or "none") are refused when their test
 * scale is not 1: their labels would need a nearest-neighbour resize that the C library does
 * not reproduce; export them again.
 *
 * Errors: every function that can fail returns 0 on success or one of the ISD_ERR_* codes,
 * and leaves a one-line message, naming the problem and the fix, for isd_last_error() in
 * the calling thread. Nothing is written to caller buffers on error.
 *
 * Threads: the library keeps no global state (only each thread's last error message). An
 * isd_model is immutable once opened: every function may be called on one model from
 * several threads at once, except isd_close(), which must be the last call on it.
 */
#ifndef ISDNET_H
#define ISDNET_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define ISD_API __attribute__((visibility("default")))
#else
#define ISD_API
#endif

#define ISD_VERSION_MAJOR 0
#define ISD_VERSION_MINOR 1
#define ISD_VERSION_PATCH 0

/* Channel order of the pixels given to isd_predict(). */
#define ISD_RGB 0
#define ISD_BGR 1

/* Error codes (0 is success). */
#define ISD_OK 0
#define ISD_ERR_ARGUMENT 1    /* a NULL pointer, a size, stride or channel order out of range */
#define ISD_ERR_FILE 2        /* the model file is missing, a directory or unreadable */
#define ISD_ERR_MODEL 3       /* ONNX Runtime cannot load it: truncated, corrupt, not ONNX */
#define ISD_ERR_CONTRACT 4    /* no isdnet-deploy contract, or one that is malformed */
#define ISD_ERR_UNSUPPORTED 5 /* a valid artifact of a kind this library does not run */
#define ISD_ERR_MEMORY 6      /* out of memory */
#define ISD_ERR_RUNTIME 7     /* ONNX Runtime failed while running the model */

/* Largest image side isd_predict() accepts (bounds every buffer it allocates). */
#define ISD_MAX_SIDE 32768
/* Largest image side of an artifact that resizes its logits in the graph (exported with
 * --output-kind labels, the default --output-resize graph): its exact integer resampling
 * is proven int32-safe up to this side. Tile larger images. */
#define ISD_MAX_GRAPH_RESIZE_SIDE 16384

typedef struct isd_model isd_model;

/*
 * Opens the ONNX artifact at `path` (ONNX Runtime on the CPU, its default thread count) and
 * reads its contract. On success *model is a new handle that the caller owns and releases
 * with isd_close(); on error *model is NULL and the code says why (ISD_ERR_FILE,
 * ISD_ERR_MODEL, ISD_ERR_CONTRACT, ISD_ERR_UNSUPPORTED, ISD_ERR_MEMORY, ISD_ERR_ARGUMENT
 * for a NULL argument). Opening takes a second or more (ONNX Runtime optimises the graph):
 * open once, predict many times. Thread-safe.
 */
ISD_API int isd_open(const char *path, isd_model **model);

/*
 * As isd_open(), with `intra_op_threads` threads for ONNX Runtime's operators (0: its
 * default, one per physical core; at most 1024).
 */
ISD_API int isd_open_threads(const char *path, int intra_op_threads, isd_model **model);

/*
 * The message of the calling thread's last error: one line naming the problem and the fix,
 * or "" when no call of this thread has failed yet. The text belongs to the library and
 * stays valid until the thread's next failing call.
 */
ISD_API const char *isd_last_error(void);

/* Number of classes (1..256) of the model's contract, or -1 for a NULL model. */
ISD_API int isd_num_classes(const isd_model *model);

/*
 * Name of class `index` (0-based) as the contract lists it, UTF-8; owned by the model and
 * valid until isd_close(). NULL for a NULL model or an index out of range.
 */
ISD_API const char *isd_class_name(const isd_model *model, int index);

/*
 * Overlay colour of class `index`, written to rgb[0..2]: the contract's palette, or, for
 * classes it has no colour for, the same generated colours as `isdnet-deploy infer
 * --overlay`. Returns 0, or ISD_ERR_ARGUMENT (nothing written) for a NULL argument or an
 * index out of range.
 */
ISD_API int isd_class_color(const isd_model *model, int index, uint8_t rgb[3]);

/*
 * The contract as stored in the model (JSON, UTF-8); owned by the model and valid until
 * isd_close(). NULL for a NULL model.
 */
ISD_API const char *isd_contract_json(const isd_model *model);

/*
 * The profile's test scale (e.g. 0.8 for DeepGlobe): isd_predict() resizes an HxW image
 * to (int)(H * scale + 0.5) x (int)(W * scale + 0.5) before the network. -1 for NULL.
 */
ISD_API double isd_test_scale(const isd_model *model);

/*
 * Whether isd_predict() accepts an image of height x width: 0 if so, else ISD_ERR_ARGUMENT
 * with the reason (a side <= 0 or above ISD_MAX_SIDE, or above ISD_MAX_GRAPH_RESIZE_SIDE for
 * an artifact that resizes in the graph, a network size below the contract's minimum, or
 * another size than a static artifact's). Cheap; thread-safe.
 */
ISD_API int isd_check_size(const isd_model *model, int height, int width);

/*
 * Segments one image: `pixels` holds `height` rows of `width` 8-bit pixels, three channels
 * each in `channel_order` (ISD_RGB or ISD_BGR), row r starting at pixels + r * row_stride
 * (row_stride >= 3 * width, in bytes). Writes height rows of width class ids (0 ..
 * classes - 1) to labels, row r at labels + r * labels_row_stride (>= width); bytes between
 * rows are left alone. The pixels are only read; they and the labels must not overlap.
 *
 * Returns 0, or ISD_ERR_ARGUMENT (NULL model/pixels/labels, a size isd_check_size()
 * refuses, a stride too small, an unknown channel order), ISD_ERR_MEMORY or
 * ISD_ERR_RUNTIME; on error nothing is written to labels. Buffers are allocated per call,
 * so one model may predict in several threads at once. The model's pre- and
 * post-processing run in the calling thread; ONNX Runtime uses its own thread pool.
 */
ISD_API int isd_predict(isd_model *model, const uint8_t *pixels, int height, int width,
                        size_t row_stride, int channel_order,
                        uint8_t *labels, size_t labels_row_stride);

/* Releases the model and everything it owns. NULL is fine. Not concurrently with other
 * calls on the same model. */
ISD_API void isd_close(isd_model *model);

/* The library's version, "MAJOR.MINOR.PATCH". */
ISD_API const char *isd_version(void);

#ifdef __cplusplus
}
#endif

#endif /* ISDNET_H */
