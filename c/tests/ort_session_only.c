/* The baseline of the C library's added memory (benchmarks/c_vs_python.py): ONNX Runtime
 * alone, with libisdnet's session settings, running the model once on an input of the
 * network's size (every byte 1). No libisdnet, no pre- or post-processing.
 *
 *   ort_session_only MODEL NET_HEIGHT NET_WIDTH
 *
 * Prints "peak_rss_kib N" (VmHWM of /proc/self/status) at the end. */
#include <onnxruntime_c_api.h>

#include "testutil.h"

static const OrtApi *api;

static int check(OrtStatus *status)
{
    if (!status)
        return 0;
    fprintf(stderr, "onnxruntime: %s\n", api->GetErrorMessage(status));
    api->ReleaseStatus(status);
    exit(1);
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: ort_session_only MODEL NET_HEIGHT NET_WIDTH\n");
        return 2;
    }
    int64_t h = atoi(argv[2]), w = atoi(argv[3]);
    api = OrtGetApiBase()->GetApi(ORT_API_VERSION);
    OrtEnv *env;
    OrtSessionOptions *options;
    OrtSession *session;
    check(api->CreateEnv(ORT_LOGGING_LEVEL_FATAL, "baseline", &env));
    check(api->CreateSessionOptions(&options));
    check(api->SetSessionGraphOptimizationLevel(options, ORT_ENABLE_ALL));
    check(api->DisableMemPattern(options));
    check(api->CreateSession(env, argv[1], options, &session));

    size_t inputs;
    OrtTypeInfo *info;
    const OrtTensorTypeAndShapeInfo *tensor;
    ONNXTensorElementDataType type;
    check(api->SessionGetInputCount(session, &inputs));
    check(api->SessionGetInputTypeInfo(session, 0, &info));
    check(api->CastTypeInfoToTensorInfo(info, &tensor));
    check(api->GetTensorElementType(tensor, &type));
    api->ReleaseTypeInfo(info);
    int bytes = type == ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8;
    size_t size = (size_t)(3 * h * w) * (bytes ? 1 : sizeof(float));
    /* Written, as a real input is, so that its pages count in the resident memory. */
    void *data = malloc(size);
    if (!data)
        return 1;
    memset(data, 1, size);
    int64_t nchw[4] = {1, 3, h, w}, nhwc[4] = {1, h, w, 3}, two[1] = {2};
    int32_t output_size[2] = {(int32_t)h, (int32_t)w};
    OrtMemoryInfo *memory;
    OrtValue *values[2] = {NULL, NULL}, *output = NULL;
    check(api->CreateCpuMemoryInfo(OrtArenaAllocator, OrtMemTypeDefault, &memory));
    check(api->CreateTensorWithDataAsOrtValue(memory, data, size, bytes ? nhwc : nchw, 4, type,
                                              &values[0]));
    if (inputs == 2)
        check(api->CreateTensorWithDataAsOrtValue(memory, output_size, sizeof output_size, two,
                                                  1, ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32,
                                                  &values[1]));
    const char *names[2] = {"image", "output_size"};
    OrtAllocator *allocator;
    char *output_name;
    check(api->GetAllocatorWithDefaultOptions(&allocator));
    check(api->SessionGetOutputName(session, 0, allocator, &output_name));
    const char *outputs[1] = {output_name};
    check(api->Run(session, NULL, names, (const OrtValue *const *)values, inputs, outputs, 1,
                   &output));
    api->ReleaseValue(output);
    for (size_t i = 0; i < inputs; i++)
        api->ReleaseValue(values[i]);
    allocator->Free(allocator, output_name);
    api->ReleaseMemoryInfo(memory);
    api->ReleaseSession(session);
    api->ReleaseSessionOptions(options);
    api->ReleaseEnv(env);
    free(data);
    printf("peak_rss_kib %ld\n", peak_rss_kib());
    return 0;
}
