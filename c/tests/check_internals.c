/* The library's internals (no ONNX Runtime) on cases written by tests/test_c_library.py,
 * which compares the results with cv2, the Python runtime and Python's json.
 *
 *   check_internals resize CASES OUT   cases: int32 sh sw stride swap dh dw, then
 *                                      sh * stride bytes; out: dh * dw * 3 bytes per case
 *   check_internals labels CASES OUT   cases: int32 classes h w H W, then classes*h*w
 *                                      float32; out: H * W labels per case
 *   check_internals colors N           prints "r g b" of the generated colours 0..N-1
 *   check_internals contract FILE      parses FILE as a contract; prints what the library
 *                                      keeps of it as JSON, or "error CODE: message"
 */
#include "internal.h"
#include "isdnet.h"
#include "testutil.h"

static int32_t take_int(const uint8_t **p)
{
    int32_t v;
    memcpy(&v, *p, sizeof v);
    *p += sizeof v;
    return v;
}

static int run_resize(const uint8_t *p, const uint8_t *end, FILE *out)
{
    while (p < end) {
        int32_t sh = take_int(&p), sw = take_int(&p), stride = take_int(&p), swap = take_int(&p);
        int32_t dh = take_int(&p), dw = take_int(&p);
        uint8_t *dst = malloc((size_t)dh * dw * 3);
        if (!dst || isd__resize_rgb8(p, sh, sw, (size_t)stride, swap, dst, dh, dw))
            return 1;
        fwrite(dst, 1, (size_t)dh * dw * 3, out);
        free(dst);
        p += (size_t)sh * stride;
    }
    return 0;
}

static int run_labels(const uint8_t *p, const uint8_t *end, FILE *out)
{
    while (p < end) {
        int32_t classes = take_int(&p), h = take_int(&p), w = take_int(&p);
        int32_t H = take_int(&p), W = take_int(&p);
        size_t n = (size_t)classes * h * w;
        float *scores = malloc(n * sizeof *scores);
        /* Labels written with a row stride of W + 3 and guard bytes, which must survive. */
        size_t stride = (size_t)W + 3;
        uint8_t *labels = malloc((size_t)H * stride + 16);
        if (!scores || !labels)
            return 1;
        memcpy(scores, p, n * sizeof *scores);
        p += n * sizeof *scores;
        memset(labels, 0xAB, (size_t)H * stride + 16);
        if (isd__logits_to_labels(scores, classes, h, w, labels, H, W, stride))
            return 1;
        for (int32_t y = 0; y < H; y++) {
            fwrite(labels + (size_t)y * stride, 1, (size_t)W, out);
            for (size_t x = (size_t)W; x < stride; x++) {
                if (labels[(size_t)y * stride + x] != 0xAB) {
                    fprintf(stderr, "a byte between label rows was written\n");
                    return 1;
                }
            }
        }
        for (size_t i = (size_t)H * stride; i < (size_t)H * stride + 16; i++) {
            if (labels[i] != 0xAB) {
                fprintf(stderr, "a byte after the labels was written\n");
                return 1;
            }
        }
        free(scores);
        free(labels);
    }
    return 0;
}

/* A string as a JSON string literal (the names are UTF-8; only ASCII is escaped). */
static void print_string(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

static int run_contract(const char *path)
{
    size_t size;
    uint8_t *text = read_file(path, &size);
    if (!text)
        return 1;
    isd_contract c;
    int rc = isd__contract_parse((const char *)text, size, &c);
    free(text);
    if (rc) {
        printf("error %d: %s\n", rc, isd_last_error());
        return 3;
    }
    printf("{\"uint8_input\": %d, \"labels_output\": %d, \"labels_int32\": %d, "
           "\"resize_in_graph\": %d, \"fixed_size\": [%d, %d], \"min_size\": %d, "
           "\"mean\": [%.9g, %.9g, %.9g], \"std\": [%.9g, %.9g, %.9g], "
           "\"test_scale\": %.17g, \"classes\": [",
           c.uint8_input, c.labels_output, c.labels_int32, c.resize_in_graph, c.fixed_height,
           c.fixed_width, c.min_size, c.mean[0], c.mean[1], c.mean[2], c.std[0], c.std[1],
           c.std[2], c.test_scale);
    for (int k = 0; k < c.num_classes; k++) {
        printf(k ? ", " : "");
        print_string(c.classes[k]);
    }
    printf("], \"palette\": [");
    for (int k = 0; k < c.num_classes; k++)
        printf("%s[%d, %d, %d]", k ? ", " : "", c.palette[k][0], c.palette[k][1],
               c.palette[k][2]);
    printf("]}\n");
    isd__contract_free(&c);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "contract") == 0)
        return run_contract(argv[2]);
    if (argc == 3 && strcmp(argv[1], "colors") == 0) {
        for (int i = 0; i < atoi(argv[2]); i++) {
            uint8_t rgb[3];
            isd__generated_color(i, rgb);
            printf("%d %d %d\n", rgb[0], rgb[1], rgb[2]);
        }
        return 0;
    }
    if (argc != 4) {
        fprintf(stderr, "usage: check_internals resize|labels CASES OUT | colors N | "
                        "contract FILE\n");
        return 2;
    }
    size_t size;
    uint8_t *cases = read_file(argv[2], &size);
    FILE *out = fopen(argv[3], "wb");
    if (!cases || !out)
        return 1;
    int rc = strcmp(argv[1], "resize") == 0   ? run_resize(cases, cases + size, out)
             : strcmp(argv[1], "labels") == 0 ? run_labels(cases, cases + size, out)
                                              : 2;
    free(cases);
    if (fclose(out) != 0)
        rc = 1;
    return rc;
}
