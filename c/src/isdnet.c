/* libisdnet's public functions: the model handle over an ONNX Runtime session, and
 * isd_predict(), the C twin of isdnet_deploy.runtime.Segmenter.predict(). */
#define _POSIX_C_SOURCE 200809L
#include "isdnet.h"

#include "internal.h"

#include <onnxruntime_c_api.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define METADATA_KEY "isdnet_deploy"
#define STR2(x) #x
#define STR(x) STR2(x)

const char *isd_version(void)
{
    return STR(ISD_VERSION_MAJOR) "." STR(ISD_VERSION_MINOR) "." STR(ISD_VERSION_PATCH);
}

struct isd_model {
    const OrtApi *api;
    OrtEnv *env;
    OrtSession *session;
    OrtMemoryInfo *memory;
    isd_contract contract;
    char *json;
};

/* Sets the error from an ONNX Runtime status (its first line) and releases the status. */
static int ort_fail(const OrtApi *api, OrtStatus *status, int code, const char *what,
                    const char *fix)
{
    const char *message = api->GetErrorMessage(status);
    char first[256];
    size_t n = 0;
    while (message && message[n] && message[n] != '\n' && n < sizeof first - 1) {
        first[n] = message[n];
        n++;
    }
    first[n] = '\0';
    api->ReleaseStatus(status);
    return isd__fail(code, "%s (%s)%s", what, first, fix);
}

static int check_file(const char *path)
{
    struct stat info;
    if (stat(path, &info) != 0) {
        if (errno == ENOENT || errno == ENOTDIR)
            return isd__fail(ISD_ERR_FILE, "file not found: %s; check the path", path);
        if (errno == EACCES)
            return isd__fail(ISD_ERR_FILE, "permission denied reading %s; check its "
                             "permissions", path);
        return isd__fail(ISD_ERR_FILE, "cannot read %s (errno %d); check the path", path, errno);
    }
    if (S_ISDIR(info.st_mode))
        return isd__fail(ISD_ERR_FILE, "%s is a directory, not an ONNX file", path);
    FILE *file = fopen(path, "rb");
    if (!file)
        return isd__fail(ISD_ERR_FILE, "cannot open %s for reading (errno %d); check its "
                         "permissions", path, errno);
    fclose(file);
    return 0;
}

/* The contract JSON from the model's metadata, copied into m->json. */
static int read_contract(isd_model *m, const char *path)
{
    const OrtApi *api = m->api;
    OrtModelMetadata *metadata = NULL;
    OrtAllocator *allocator = NULL;
    char *value = NULL;
    OrtStatus *status = api->SessionGetModelMetadata(m->session, &metadata);
    if (!status)
        status = api->GetAllocatorWithDefaultOptions(&allocator);
    if (!status)
        status = api->ModelMetadataLookupCustomMetadataMap(metadata, allocator, METADATA_KEY,
                                                           &value);
    if (metadata)
        api->ReleaseModelMetadata(metadata);
    if (status)
        return ort_fail(api, status, ISD_ERR_MODEL, "cannot read the model's metadata", "");
    if (!value)
        return isd__fail(ISD_ERR_CONTRACT,
                         "%s has no isdnet-deploy contract in its metadata (not exported by "
                         "isdnet-deploy); export it with 'isdnet-deploy export'", path);
    size_t length = strnlen(value, ISD_MAX_CONTRACT_BYTES + 1);
    int rc = 0;
    if (length > ISD_MAX_CONTRACT_BYTES) {
        rc = isd__fail(ISD_ERR_CONTRACT, "the contract of %s is larger than %u bytes; export "
                       "the model again with isdnet-deploy", path, ISD_MAX_CONTRACT_BYTES);
    } else if (!(m->json = malloc(length + 1))) {
        rc = isd__fail(ISD_ERR_MEMORY, "out of memory reading the contract of %s", path);
    } else {
        memcpy(m->json, value, length + 1);
        rc = isd__contract_parse(m->json, length, &m->contract);
    }
    allocator->Free(allocator, value);
    return rc;
}

/* Whether graph input (or output) `index` is named `name` and holds `type` elements. */
static int io_matches(isd_model *m, int output, size_t index, const char *name,
                      ONNXTensorElementDataType type, int *matches)
{
    const OrtApi *api = m->api;
    OrtAllocator *allocator = NULL;
    char *actual = NULL;
    OrtTypeInfo *info = NULL;
    const OrtTensorTypeAndShapeInfo *tensor = NULL;
    ONNXTensorElementDataType element = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
    OrtStatus *status = api->GetAllocatorWithDefaultOptions(&allocator);
    if (!status)
        status = output ? api->SessionGetOutputName(m->session, index, allocator, &actual)
                        : api->SessionGetInputName(m->session, index, allocator, &actual);
    if (!status)
        status = output ? api->SessionGetOutputTypeInfo(m->session, index, &info)
                        : api->SessionGetInputTypeInfo(m->session, index, &info);
    if (!status)
        status = api->CastTypeInfoToTensorInfo(info, &tensor);
    if (!status && tensor)
        status = api->GetTensorElementType(tensor, &element);
    *matches = actual && strcmp(actual, name) == 0 && element == type;
    if (info)
        api->ReleaseTypeInfo(info);
    if (actual)
        allocator->Free(allocator, actual);
    if (status)
        return ort_fail(api, status, ISD_ERR_MODEL, "cannot read the graph's inputs", "");
    return 0;
}

/* The graph must have the inputs and output its contract declares. */
static int check_graph(isd_model *m)
{
    const isd_contract *c = &m->contract;
    size_t inputs = 0, outputs = 0;
    OrtStatus *status = m->api->SessionGetInputCount(m->session, &inputs);
    if (!status)
        status = m->api->SessionGetOutputCount(m->session, &outputs);
    if (status)
        return ort_fail(m->api, status, ISD_ERR_MODEL, "cannot read the graph's inputs", "");
    int ok = inputs == (size_t)(c->resize_in_graph ? 2 : 1) && outputs >= 1, matches = 0;
    ONNXTensorElementDataType image = c->uint8_input ? ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8
                                                     : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
    ONNXTensorElementDataType out = !c->labels_output ? ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT
                                    : c->labels_int32 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32
                                                      : ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8;
    int rc = 0;
    if (ok && !(rc = io_matches(m, 0, 0, "image", image, &matches)))
        ok = matches;
    if (ok && c->resize_in_graph &&
        !(rc = io_matches(m, 0, 1, "output_size", ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32, &matches)))
        ok = matches;
    if (ok && !(rc = io_matches(m, 1, 0, c->labels_output ? "labels" : "logits", out, &matches)))
        ok = matches;
    if (rc)
        return rc;
    if (!ok)
        return isd__fail(ISD_ERR_CONTRACT, "the graph's inputs or outputs differ from its "
                         "isdnet-deploy contract (edited after export?); export the model again");
    return 0;
}

void isd_close(isd_model *model)
{
    if (!model)
        return;
    const OrtApi *api = model->api;
    if (model->memory)
        api->ReleaseMemoryInfo(model->memory);
    if (model->session)
        api->ReleaseSession(model->session);
    if (model->env)
        api->ReleaseEnv(model->env);
    isd__contract_free(&model->contract);
    free(model->json);
    free(model);
}

int isd_open_threads(const char *path, int intra_op_threads, isd_model **model)
{
    if (!model)
        return isd__fail(ISD_ERR_ARGUMENT, "isd_open: model is NULL; pass the address of an "
                         "isd_model pointer");
    *model = NULL;
    if (!path)
        return isd__fail(ISD_ERR_ARGUMENT, "isd_open: path is NULL; pass the ONNX file's path");
    if (intra_op_threads < 0 || intra_op_threads > 1024)
        return isd__fail(ISD_ERR_ARGUMENT, "isd_open: %d threads is out of range; use 0 "
                         "(ONNX Runtime's default) to 1024", intra_op_threads);
    int rc = check_file(path);
    if (rc)
        return rc;
    const OrtApiBase *base = OrtGetApiBase();
    const OrtApi *api = base ? base->GetApi(ORT_API_VERSION) : NULL;
    if (!api)
        return isd__fail(ISD_ERR_UNSUPPORTED,
                         "the ONNX Runtime library loaded (%s) lacks C API version %d, which "
                         "libisdnet was built for; use ONNX Runtime 1.%d or newer",
                         base ? base->GetVersionString() : "unknown", ORT_API_VERSION,
                         ORT_API_VERSION);
    isd_model *m = calloc(1, sizeof *m);
    if (!m)
        return isd__fail(ISD_ERR_MEMORY, "out of memory opening %s", path);
    m->api = api;
    OrtSessionOptions *options = NULL;
    OrtStatus *status = api->CreateEnv(ORT_LOGGING_LEVEL_FATAL, "isdnet", &m->env);
    if (!status)
        status = api->CreateSessionOptions(&options);
    if (!status && intra_op_threads > 0)
        status = api->SetIntraOpNumThreads(options, intra_op_threads);
    /* The Python runtime's settings (runtime/onnxruntime_backend.py). */
    if (!status)
        status = api->SetSessionGraphOptimizationLevel(options, ORT_ENABLE_ALL);
    if (!status)
        status = api->DisableMemPattern(options);
    if (!status)
        status = api->SetSessionLogSeverityLevel(options, ORT_LOGGING_LEVEL_FATAL);
    if (status) {
        rc = ort_fail(api, status, ISD_ERR_RUNTIME, "cannot set up ONNX Runtime", "");
    } else if ((status = api->CreateSession(m->env, path, options, &m->session))) {
        char what[1200];
        snprintf(what, sizeof what, "%s could not be opened by ONNX Runtime: the file is "
                 "truncated, corrupt or not ONNX", path);
        rc = ort_fail(api, status, ISD_ERR_MODEL, what, "");
    } else if (!(rc = read_contract(m, path)) && !(rc = check_graph(m)) &&
               (status = api->CreateCpuMemoryInfo(OrtArenaAllocator, OrtMemTypeDefault,
                                                  &m->memory))) {
        rc = ort_fail(api, status, ISD_ERR_RUNTIME, "cannot set up ONNX Runtime", "");
    }
    if (options)
        api->ReleaseSessionOptions(options);
    if (rc) {
        isd_close(m);
        return rc;
    }
    *model = m;
    return 0;
}

int isd_open(const char *path, isd_model **model)
{
    return isd_open_threads(path, 0, model);
}

int isd_num_classes(const isd_model *model)
{
    return model ? model->contract.num_classes : -1;
}

const char *isd_class_name(const isd_model *model, int index)
{
    if (!model || index < 0 || index >= model->contract.num_classes)
        return NULL;
    return model->contract.classes[index];
}

int isd_class_color(const isd_model *model, int index, uint8_t rgb[3])
{
    if (!model || !rgb)
        return isd__fail(ISD_ERR_ARGUMENT, "isd_class_color: %s is NULL",
                         model ? "rgb" : "model");
    if (index < 0 || index >= model->contract.num_classes)
        return isd__fail(ISD_ERR_ARGUMENT, "isd_class_color: class %d does not exist; the model "
                         "has classes 0..%d", index, model->contract.num_classes - 1);
    memcpy(rgb, model->contract.palette[index], 3);
    return 0;
}

const char *isd_contract_json(const isd_model *model)
{
    return model ? model->json : NULL;
}

double isd_test_scale(const isd_model *model)
{
    return model ? model->contract.test_scale : -1.0;
}

/* runtime.preprocess.scaled_size: int(side * scale + 0.5), unless the scale is 1. */
static void network_size(const isd_contract *c, int height, int width, int *nh, int *nw)
{
    *nh = height;
    *nw = width;
    if (c->test_scale != 1.0) {
        *nh = (int)(height * c->test_scale + 0.5);
        *nw = (int)(width * c->test_scale + 0.5);
    }
}

int isd_check_size(const isd_model *model, int height, int width)
{
    if (!model)
        return isd__fail(ISD_ERR_ARGUMENT, "model is NULL; open one with isd_open()");
    if (height <= 0 || width <= 0 || height > ISD_MAX_SIDE || width > ISD_MAX_SIDE)
        return isd__fail(ISD_ERR_ARGUMENT, "image size %dx%d is out of range; height and width "
                         "must be 1..%d", height, width, ISD_MAX_SIDE);
    const isd_contract *c = &model->contract;
    if (c->resize_in_graph &&
        (height > ISD_MAX_GRAPH_RESIZE_SIDE || width > ISD_MAX_GRAPH_RESIZE_SIDE))
        return isd__fail(ISD_ERR_ARGUMENT, "image size %dx%d is above %d, the largest side this "
                         "artifact resizes its labels to in the graph; tile the image",
                         height, width, ISD_MAX_GRAPH_RESIZE_SIDE);
    int nh, nw;
    network_size(c, height, width, &nh, &nw);
    if (nh < c->min_size || nw < c->min_size)
        return isd__fail(ISD_ERR_ARGUMENT, "image is %dx%d (%dx%d after the test scale %g), "
                         "below the model's minimum of %dx%d; upscale or pad it", height, width,
                         nh, nw, c->test_scale, c->min_size, c->min_size);
    if (c->fixed_height && (nh != c->fixed_height || nw != c->fixed_width))
        return isd__fail(ISD_ERR_ARGUMENT, "this artifact was exported for %dx%d only, the input "
                         "is %dx%d after the test scale; export with --dynamic or use tiled "
                         "inference", c->fixed_height, c->fixed_width, nh, nw);
    if (c->resize_in_graph && (height > 2 * nh || width > 2 * nw || height < nh || width < nw))
        return isd__fail(ISD_ERR_ARGUMENT, "labels %dx%d are not between the network input's "
                         "%dx%d and twice it; this artifact resizes its logits by at most 2x",
                         height, width, nh, nw);
    return 0;
}

/* Buffers and ONNX Runtime values of one isd_predict() call. */
typedef struct {
    uint8_t *rgb;
    float *planes;
    OrtValue *inputs[2];
    OrtValue *output;
} call;

static void end_call(const OrtApi *api, call *k)
{
    for (int i = 0; i < 2; i++) {
        if (k->inputs[i])
            api->ReleaseValue(k->inputs[i]);
    }
    if (k->output)
        api->ReleaseValue(k->output);
    free(k->rgb);
    free(k->planes);
}

/* The network's input for the image: test scale, channel order, normalisation. */
static int make_inputs(isd_model *m, call *k, const uint8_t *pixels, int height, int width,
                       size_t row_stride, int swap, int nh, int nw, int32_t output_size[2])
{
    const isd_contract *c = &m->contract;
    const OrtApi *api = m->api;
    size_t count = (size_t)nh * nw;
    if (!(k->rgb = malloc(count * 3)))
        return isd__fail(ISD_ERR_MEMORY, "out of memory for a %dx%d image", nh, nw);
    if (nh != height || nw != width) {
        if (isd__resize_rgb8(pixels, height, width, row_stride, swap, k->rgb, nh, nw))
            return isd__fail(ISD_ERR_MEMORY, "out of memory resizing a %dx%d image", height,
                             width);
    } else {
        isd__copy_rgb8(pixels, height, width, row_stride, swap, k->rgb);
    }
    OrtStatus *status;
    if (c->uint8_input) {
        int64_t shape[4] = {1, nh, nw, 3};
        status = api->CreateTensorWithDataAsOrtValue(m->memory, k->rgb, count * 3, shape, 4,
                                                     ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8,
                                                     &k->inputs[0]);
    } else {
        if (!(k->planes = malloc(count * 3 * sizeof *k->planes)))
            return isd__fail(ISD_ERR_MEMORY, "out of memory for a %dx%d image", nh, nw);
        isd__normalise(k->rgb, nh, nw, c->mean, c->std, k->planes);
        int64_t shape[4] = {1, 3, nh, nw};
        status = api->CreateTensorWithDataAsOrtValue(m->memory, k->planes,
                                                     count * 3 * sizeof *k->planes, shape, 4,
                                                     ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT,
                                                     &k->inputs[0]);
    }
    if (!status && c->resize_in_graph) {
        int64_t shape[1] = {2};
        status = api->CreateTensorWithDataAsOrtValue(m->memory, output_size,
                                                     2 * sizeof *output_size, shape, 1,
                                                     ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32,
                                                     &k->inputs[1]);
    }
    if (status)
        return ort_fail(api, status, ISD_ERR_RUNTIME, "cannot create the input tensors", "");
    return 0;
}

/* The output's element type and shape must be what the contract promises. */
static int check_output(isd_model *m, OrtValue *output, const int64_t *expected, size_t rank,
                        ONNXTensorElementDataType type)
{
    const OrtApi *api = m->api;
    OrtTensorTypeAndShapeInfo *info = NULL;
    ONNXTensorElementDataType element = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
    size_t dims = 0;
    int64_t shape[4] = {0, 0, 0, 0};
    OrtStatus *status = api->GetTensorTypeAndShape(output, &info);
    if (!status)
        status = api->GetTensorElementType(info, &element);
    if (!status)
        status = api->GetDimensionsCount(info, &dims);
    if (!status && dims == rank)
        status = api->GetDimensions(info, shape, rank);
    if (info)
        api->ReleaseTensorTypeAndShapeInfo(info);
    if (status)
        return ort_fail(api, status, ISD_ERR_RUNTIME, "cannot read the model's output", "");
    if (element != type || dims != rank || memcmp(shape, expected, rank * sizeof *shape) != 0)
        return isd__fail(ISD_ERR_RUNTIME, "the model's output is not the %zu-d tensor its "
                         "contract promises (shape or type differs); export the model again",
                         rank);
    return 0;
}

/* Labels of a labels-output artifact into the caller's buffer; int32 ids are checked to fit
 * a byte before anything is written. */
static int copy_labels(const isd_contract *c, const void *data, int height, int width,
                       uint8_t *labels, size_t stride)
{
    size_t count = (size_t)height * width;
    if (c->labels_int32) {
        const int32_t *ids = data;
        for (size_t i = 0; i < count; i++) {
            if (ids[i] < 0 || ids[i] > 255)
                return isd__fail(ISD_ERR_RUNTIME, "the artifact returned class id %ld, which "
                                 "does not fit 8-bit labels; export it again",
                                 (long)ids[i]);
        }
        for (int y = 0; y < height; y++) {
            for (int x = 0; x < width; x++)
                labels[(size_t)y * stride + x] = (uint8_t)ids[(size_t)y * width + x];
        }
        return 0;
    }
    for (int y = 0; y < height; y++)
        memcpy(labels + (size_t)y * stride, (const uint8_t *)data + (size_t)y * width,
               (size_t)width);
    return 0;
}

int isd_predict(isd_model *model, const uint8_t *pixels, int height, int width,
                size_t row_stride, int channel_order, uint8_t *labels, size_t labels_row_stride)
{
    if (!model)
        return isd__fail(ISD_ERR_ARGUMENT, "isd_predict: model is NULL; open one with "
                         "isd_open()");
    if (!pixels)
        return isd__fail(ISD_ERR_ARGUMENT, "isd_predict: pixels is NULL; pass the image");
    if (!labels)
        return isd__fail(ISD_ERR_ARGUMENT, "isd_predict: labels is NULL; pass a buffer of "
                         "height rows of labels_row_stride bytes");
    if (channel_order != ISD_RGB && channel_order != ISD_BGR)
        return isd__fail(ISD_ERR_ARGUMENT, "isd_predict: unknown channel_order %d; use ISD_RGB "
                         "(%d) or ISD_BGR (%d)", channel_order, ISD_RGB, ISD_BGR);
    int rc = isd_check_size(model, height, width);
    if (rc)
        return rc;
    if (row_stride < 3 * (size_t)width || row_stride > SIZE_MAX / (size_t)height)
        return isd__fail(ISD_ERR_ARGUMENT, "isd_predict: row_stride %zu is out of range; give "
                         "the bytes from one image row to the next, at least 3 x width = %zu",
                         row_stride, 3 * (size_t)width);
    if (labels_row_stride < (size_t)width || labels_row_stride > SIZE_MAX / (size_t)height)
        return isd__fail(ISD_ERR_ARGUMENT, "isd_predict: labels_row_stride %zu is out of range; "
                         "give the bytes from one labels row to the next, at least width = %d",
                         labels_row_stride, width);

    const isd_contract *c = &model->contract;
    const OrtApi *api = model->api;
    int nh, nw;
    network_size(c, height, width, &nh, &nw);
    int32_t output_size[2] = {height, width};
    call k = {NULL, NULL, {NULL, NULL}, NULL};
    rc = make_inputs(model, &k, pixels, height, width, row_stride, channel_order == ISD_BGR, nh,
                     nw, output_size);
    if (!rc) {
        const char *input_names[2] = {"image", "output_size"};
        const char *output_name = c->labels_output ? "labels" : "logits";
        OrtStatus *status = api->Run(model->session, NULL, input_names,
                                     (const OrtValue *const *)k.inputs,
                                     c->resize_in_graph ? 2 : 1, &output_name, 1, &k.output);
        if (status) {
            char what[160];
            snprintf(what, sizeof what, "ONNX Runtime failed on this %dx%d image", height, width);
            rc = ort_fail(api, status, ISD_ERR_RUNTIME, what,
                          "; if it ran out of memory, use a smaller image");
        }
    }
    void *data = NULL;
    if (!rc) {
        int64_t logits_shape[4] = {1, c->num_classes, nh, nw};
        int64_t labels_shape[2] = {height, width};
        rc = c->labels_output
                 ? check_output(model, k.output, labels_shape, 2,
                                c->labels_int32 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32
                                                : ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8)
                 : check_output(model, k.output, logits_shape, 4,
                                ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
    }
    if (!rc) {
        OrtStatus *status = api->GetTensorMutableData(k.output, &data);
        if (status)
            rc = ort_fail(api, status, ISD_ERR_RUNTIME, "cannot read the model's output", "");
    }
    if (!rc && c->labels_output) {
        rc = copy_labels(c, data, height, width, labels, labels_row_stride);
    } else if (!rc && isd__logits_to_labels(data, c->num_classes, nh, nw, labels, height, width,
                                            labels_row_stride)) {
        rc = isd__fail(ISD_ERR_MEMORY, "out of memory resizing the scores of a %dx%d image",
                       height, width);
    }
    end_call(api, &k);
    return rc;
}
