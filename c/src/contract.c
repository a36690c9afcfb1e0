/* The artifact contract (isdnet_deploy/contract.py), read and checked before anything is
 * sized from it. */
#include "internal.h"
#include "isdnet.h"
#include "json.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define FORMAT "isdnet-deploy/1"
#define MAX_CLASSES 256
#define MAX_NAME_BYTES 4096
#define MAX_SIDE_IN_CONTRACT 65536

typedef struct {
    const json_doc *doc;
    const json_value *root;
} reader;

static int bad(const char *what)
{
    return isd__fail(ISD_ERR_CONTRACT, "the artifact's isdnet-deploy contract is malformed (%s); "
                     "export the model again with isdnet-deploy", what);
}

static const json_value *member(const reader *r, const char *key)
{
    return json_member(r->doc, r->root, key);
}

static const char *string_member(const reader *r, const char *key, const char *fallback)
{
    const json_value *v = member(r, key);
    if (!v || v->type == JSON_NULL)
        return fallback;
    return json_string(r->doc, v);
}

/* An integral JSON number within [low, high]. */
static int integer(const json_value *v, int low, int high, int *out)
{
    if (!v || v->type != JSON_NUMBER || v->number != floor(v->number) || v->number < low ||
        v->number > high)
        return -1;
    *out = (int)v->number;
    return 0;
}

static int three_floats(const reader *r, const char *key, float out[3], int nonzero)
{
    const json_value *v = member(r, key);
    if (!v || v->type != JSON_ARRAY || v->count != 3)
        return bad(key);
    for (size_t i = 0; i < 3; i++) {
        const json_value *e = json_element(r->doc, v, i);
        if (e->type != JSON_NUMBER || !isfinite(e->number) || fabs(e->number) > 1e6 ||
            (nonzero && e->number == 0.0))
            return bad(key);
        out[i] = (float)e->number; /* np.asarray(values, np.float32) rounds the same way */
    }
    return 0;
}

/* The spec named `name` in the array `list` ("inputs" or "outputs"), or NULL. */
static const json_value *tensor(const reader *r, const char *list, const char *name)
{
    const json_value *specs = member(r, list);
    for (size_t i = 0; specs && i < specs->count; i++) {
        const json_value *spec = json_element(r->doc, specs, i);
        const char *n = json_string(r->doc, json_member(r->doc, spec, "name"));
        if (n && strcmp(n, name) == 0)
            return spec;
    }
    return NULL;
}

static int has_dtype(const reader *r, const json_value *spec, const char *dtype)
{
    const char *d = json_string(r->doc, json_member(r->doc, spec, "dtype"));
    return d && strcmp(d, dtype) == 0;
}

static int read_io(const reader *r, isd_contract *c)
{
    const char *input_kind = string_member(r, "input_kind", "float");
    const char *output_kind = string_member(r, "output_kind", "logits");
    const char *pyramid = string_member(r, "pyramid", "graph");
    const char *output_resize = string_member(r, "output_resize", "none");
    if (!input_kind || !output_kind || !pyramid || !output_resize)
        return bad("a kind is not a string");
    if (strcmp(pyramid, "graph") != 0)
        return isd__fail(ISD_ERR_UNSUPPORTED,
                         "this artifact takes its Laplacian pyramid as a second input "
                         "(pyramid '%s'), which the C library does not compute; export it "
                         "with --pyramid graph (the default)", pyramid);
    if (strcmp(input_kind, "float") != 0 && strcmp(input_kind, "uint8") != 0)
        return bad("input_kind");
    if (strcmp(output_kind, "logits") != 0 && strcmp(output_kind, "labels") != 0)
        return bad("output_kind");
    if (strcmp(output_resize, "none") != 0 && strcmp(output_resize, "graph") != 0)
        return bad("output_resize");
    c->uint8_input = strcmp(input_kind, "uint8") == 0;
    c->labels_output = strcmp(output_kind, "labels") == 0;
    c->resize_in_graph = strcmp(output_resize, "graph") == 0;
    if (c->resize_in_graph && !c->labels_output)
        return bad("output_resize 'graph' without a labels output");

    const json_value *inputs = member(r, "inputs");
    const json_value *outputs = member(r, "outputs");
    if (!inputs || inputs->type != JSON_ARRAY || !outputs || outputs->type != JSON_ARRAY)
        return bad("inputs or outputs");
    for (size_t i = 0; i < inputs->count; i++) {
        const char *n = json_string(r->doc, json_member(r->doc, json_element(r->doc, inputs, i),
                                                         "name"));
        if (!n)
            return bad("an input has no name");
        if (strcmp(n, "image") != 0 && !(c->resize_in_graph && strcmp(n, "output_size") == 0))
            return isd__fail(ISD_ERR_UNSUPPORTED,
                             "this artifact takes an input '%s' the C library does not "
                             "provide; export it with isdnet-deploy's defaults for the pyramid", n);
    }
    const json_value *image = tensor(r, "inputs", "image");
    if (!image || !has_dtype(r, image, c->uint8_input ? "uint8" : "float32"))
        return bad("input 'image' is missing or has the wrong dtype");
    if (c->resize_in_graph) {
        const json_value *size = tensor(r, "inputs", "output_size");
        if (!size || !has_dtype(r, size, "int32"))
            return bad("input 'output_size' is missing or not int32");
    }
    const json_value *out = tensor(r, "outputs", c->labels_output ? "labels" : "logits");
    if (!out)
        return bad("the output is missing");
    if (c->labels_output) {
        c->labels_int32 = has_dtype(r, out, "int32");
        if (!c->labels_int32 && !has_dtype(r, out, "uint8"))
            return bad("labels dtype");
    } else if (!has_dtype(r, out, "float32")) {
        return bad("logits dtype");
    }
    return 0;
}

static int read_sizes(const reader *r, isd_contract *c)
{
    const json_value *dynamic = member(r, "dynamic");
    if (dynamic && dynamic->type != JSON_TRUE && dynamic->type != JSON_FALSE)
        return bad("dynamic");
    if (dynamic && dynamic->type == JSON_FALSE) {
        const json_value *fixed = member(r, "fixed_size");
        if (!fixed || fixed->type != JSON_ARRAY || fixed->count != 2 ||
            integer(json_element(r->doc, fixed, 0), 1, MAX_SIDE_IN_CONTRACT, &c->fixed_height) ||
            integer(json_element(r->doc, fixed, 1), 1, MAX_SIDE_IN_CONTRACT, &c->fixed_width))
            return bad("fixed_size");
    }
    const json_value *min_size = member(r, "min_size");
    c->min_size = 32;
    if (min_size && integer(min_size, 1, MAX_SIDE_IN_CONTRACT, &c->min_size))
        return bad("min_size");
    const json_value *scale = member(r, "test_scale");
    c->test_scale = 1.0;
    if (scale) {
        if (scale->type != JSON_NUMBER || !(scale->number > 0.0 && scale->number <= 16.0))
            return bad("test_scale");
        c->test_scale = scale->number;
    }
    if (c->labels_output && !c->resize_in_graph && c->test_scale != 1.0)
        return isd__fail(ISD_ERR_UNSUPPORTED,
                         "this labels-output artifact returns labels at the size the network "
                         "saw (test scale %g) and leaves their resize to the runtime; export it "
                         "again with this isdnet-deploy, which resizes the logits in the graph "
                         "(--output-resize graph, the default for --output-kind labels)",
                         c->test_scale);
    return 0;
}

static int read_classes(const reader *r, isd_contract *c)
{
    const json_value *classes = member(r, "classes");
    if (!classes || classes->type != JSON_ARRAY || classes->count == 0)
        return bad("no classes");
    if (classes->count > MAX_CLASSES)
        return isd__fail(ISD_ERR_UNSUPPORTED,
                         "this artifact has %zu classes; the C library writes 8-bit labels, "
                         "at most %d classes", classes->count, MAX_CLASSES);
    c->num_classes = (int)classes->count;
    c->classes = calloc((size_t)c->num_classes, sizeof *c->classes);
    c->palette = calloc((size_t)c->num_classes, sizeof *c->palette);
    if (!c->classes || !c->palette)
        return isd__fail(ISD_ERR_MEMORY, "out of memory reading the contract");
    for (int i = 0; i < c->num_classes; i++) {
        const char *name = json_string(r->doc, json_element(r->doc, classes, (size_t)i));
        if (!name || strlen(name) > MAX_NAME_BYTES)
            return bad("a class name is not a string of at most 4096 bytes");
        c->classes[i] = malloc(strlen(name) + 1);
        if (!c->classes[i])
            return isd__fail(ISD_ERR_MEMORY, "out of memory reading the contract");
        strcpy(c->classes[i], name);
    }
    const json_value *palette = member(r, "palette");
    size_t given = 0;
    if (palette && palette->type != JSON_NULL) {
        if (palette->type != JSON_ARRAY)
            return bad("palette");
        given = palette->count;
    }
    for (int i = 0; i < c->num_classes; i++) {
        if ((size_t)i >= given) {
            isd__generated_color(i, c->palette[i]);
            continue;
        }
        const json_value *colour = json_element(r->doc, palette, (size_t)i);
        if (colour->type != JSON_ARRAY || colour->count != 3)
            return bad("a palette entry is not [r, g, b]");
        for (size_t k = 0; k < 3; k++) {
            int value;
            if (integer(json_element(r->doc, colour, k), 0, 255, &value))
                return bad("a palette value is not an integer 0..255");
            c->palette[i][k] = (uint8_t)value;
        }
    }
    return 0;
}

int isd__contract_parse(const char *json, size_t length, isd_contract *contract)
{
    memset(contract, 0, sizeof *contract);
    if (length > ISD_MAX_CONTRACT_BYTES)
        return isd__fail(ISD_ERR_CONTRACT, "the artifact's contract is %zu bytes, more than the "
                         "%u a contract can need; export the model again with isdnet-deploy",
                         length, ISD_MAX_CONTRACT_BYTES);
    json_doc doc;
    char why[128];
    if (json_parse(json, length, &doc, why, sizeof why))
        return isd__fail(ISD_ERR_CONTRACT, "the artifact's contract is not valid JSON (%s); "
                         "export the model again with isdnet-deploy", why);
    reader r = {&doc, json_root(&doc)};
    int rc;
    const char *format = string_member(&r, "format", NULL);
    if (r.root->type != JSON_OBJECT)
        rc = bad("not a JSON object");
    else if (!format || strcmp(format, FORMAT) != 0)
        rc = isd__fail(ISD_ERR_CONTRACT, "the artifact's contract has format '%.40s', this "
                       "library reads '" FORMAT "'; export the model again with isdnet-deploy",
                       format ? format : "(none)");
    else if ((rc = read_io(&r, contract)) == 0 && (rc = read_sizes(&r, contract)) == 0 &&
             (rc = three_floats(&r, "mean", contract->mean, 0)) == 0 &&
             (rc = three_floats(&r, "std", contract->std, 1)) == 0)
        rc = read_classes(&r, contract);
    json_free(&doc);
    if (rc)
        isd__contract_free(contract);
    return rc;
}

void isd__contract_free(isd_contract *contract)
{
    for (int i = 0; contract->classes && i < contract->num_classes; i++)
        free(contract->classes[i]);
    free(contract->classes);
    free(contract->palette);
    memset(contract, 0, sizeof *contract);
}
