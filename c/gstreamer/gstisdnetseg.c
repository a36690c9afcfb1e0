/* isdnetseg: a GStreamer element that segments every video frame with libisdnet.
 *
 *   ... ! video/x-raw,format=RGB ! isdnetseg model=model.onnx [output=overlay alpha=0.5] ! ...
 *
 * Sink: RGB or BGR frames (any size the artifact's contract admits; libisdnet's
 * isd_check_size() decides when the caps arrive). Source, by the `output` property:
 *   labels  (default) GRAY8 frames of the same size holding each pixel's class id: exactly
 *           the labels of isdnet_deploy.runtime.load(model).predict(frame, color=...);
 *   overlay frames of the input's format blended with the contract's palette, equal to
 *           what `isdnet-deploy infer --overlay` writes for the same alpha (see blend()).
 * The artifact is opened when the element starts (READY -> PAUSED) and closed when it
 * stops; a missing or unusable artifact makes the state change fail with an element
 * error naming the file and the reason. One libisdnet handle serves the streaming thread;
 * libisdnet keeps no global state, so several elements may run in one process.
 *
 * Debug category "isdnetseg": INFO when the model opens and closes (with the frame count and
 * mean time per frame), DEBUG for every frame with its time in isd_predict().
 */
#include <isdnet.h>

#include <gst/gst.h>
#include <gst/video/gstvideofilter.h>
#include <gst/video/video.h>

#include <string.h>

GST_DEBUG_CATEGORY_STATIC(isdnetseg_debug);
#define GST_CAT_DEFAULT isdnetseg_debug

typedef enum {
    ISDNET_OUTPUT_LABELS,
    ISDNET_OUTPUT_OVERLAY,
} IsdnetOutput;

enum { PROP_0, PROP_MODEL, PROP_OUTPUT, PROP_ALPHA, PROP_THREADS };

#define DEFAULT_OUTPUT ISDNET_OUTPUT_LABELS
#define DEFAULT_ALPHA 0.5 /* what `isdnet-deploy infer --overlay` uses */
#define DEFAULT_THREADS 0

/* The project's ignore index: `infer --overlay` leaves pixels of this class unblended.
 * Only a 256-class model can output it. */
#define IGNORE_CLASS 255

#define SIZES "width = (int) [ 1, " G_STRINGIFY(ISD_MAX_SIDE) " ], height = (int) [ 1, " \
    G_STRINGIFY(ISD_MAX_SIDE) " ], framerate = (fraction) [ 0/1, MAX ]"

static GstStaticPadTemplate sink_template = GST_STATIC_PAD_TEMPLATE(
    "sink", GST_PAD_SINK, GST_PAD_ALWAYS,
    GST_STATIC_CAPS("video/x-raw, format = (string) { RGB, BGR }, " SIZES));

static GstStaticPadTemplate src_template = GST_STATIC_PAD_TEMPLATE(
    "src", GST_PAD_SRC, GST_PAD_ALWAYS,
    GST_STATIC_CAPS("video/x-raw, format = (string) { GRAY8, RGB, BGR }, " SIZES));

#define GST_TYPE_ISDNET_SEG (gst_isdnet_seg_get_type())
G_DECLARE_FINAL_TYPE(GstIsdnetSeg, gst_isdnet_seg, GST, ISDNET_SEG, GstVideoFilter)

struct _GstIsdnetSeg {
    GstVideoFilter parent;

    /* Properties, read and written under the object lock. model, output and threads are
     * only changed while the element is stopped (`started` FALSE). */
    gchar *model_path;
    IsdnetOutput output;
    gdouble alpha;
    gint threads;
    gboolean started;

    /* Owned by the element between start() and stop(). */
    isd_model *model;
    guint8 palette[256][3]; /* RGB colour of each class (isd_class_color) */
    guint8 *labels;          /* overlay: one frame's class ids, labels_width per row */
    gint labels_width, labels_height;
    gint refused_width, refused_height; /* the size whose error was posted, else 0 */
    guint64 frames;
    gint64 predict_us;
};

G_DEFINE_TYPE(GstIsdnetSeg, gst_isdnet_seg, GST_TYPE_VIDEO_FILTER)

static GType isdnet_output_get_type(void)
{
    static GType type = 0;
    static const GEnumValue values[] = {
        {ISDNET_OUTPUT_LABELS, "GRAY8 frames of class ids (the frame's size)", "labels"},
        {ISDNET_OUTPUT_OVERLAY, "the frame blended with the contract's class colours",
         "overlay"},
        {0, NULL, NULL},
    };
    if (g_once_init_enter(&type)) {
        GType registered = g_enum_register_static("GstIsdnetSegOutput", values);
        g_once_init_leave(&type, registered);
    }
    return type;
}

static void gst_isdnet_seg_set_property(GObject *object, guint id, const GValue *value,
                                        GParamSpec *pspec)
{
    GstIsdnetSeg *self = GST_ISDNET_SEG(object);
    GST_OBJECT_LOCK(self);
    if (self->started && id != PROP_ALPHA) {
        GST_OBJECT_UNLOCK(self);
        GST_WARNING_OBJECT(self, "'%s' can only be changed while the element is stopped "
                           "(NULL or READY); ignored", g_param_spec_get_name(pspec));
        return;
    }
    switch (id) {
    case PROP_MODEL:
        g_free(self->model_path);
        self->model_path = g_value_dup_string(value);
        break;
    case PROP_OUTPUT:
        self->output = (IsdnetOutput)g_value_get_enum(value);
        break;
    case PROP_ALPHA:
        self->alpha = g_value_get_double(value);
        break;
    case PROP_THREADS:
        self->threads = g_value_get_int(value);
        break;
    default:
        G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec);
        break;
    }
    GST_OBJECT_UNLOCK(self);
}

static void gst_isdnet_seg_get_property(GObject *object, guint id, GValue *value,
                                        GParamSpec *pspec)
{
    GstIsdnetSeg *self = GST_ISDNET_SEG(object);
    GST_OBJECT_LOCK(self);
    switch (id) {
    case PROP_MODEL:
        g_value_set_string(value, self->model_path);
        break;
    case PROP_OUTPUT:
        g_value_set_enum(value, self->output);
        break;
    case PROP_ALPHA:
        g_value_set_double(value, self->alpha);
        break;
    case PROP_THREADS:
        g_value_set_int(value, self->threads);
        break;
    default:
        G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec);
        break;
    }
    GST_OBJECT_UNLOCK(self);
}

static void release_labels(GstIsdnetSeg *self)
{
    g_free(self->labels);
    self->labels = NULL;
    self->labels_width = self->labels_height = 0;
}

/* Opens the artifact: the state change READY -> PAUSED fails, with an element error naming
 * the file and libisdnet's reason, when it cannot be used. */
static gboolean gst_isdnet_seg_start(GstBaseTransform *trans)
{
    GstIsdnetSeg *self = GST_ISDNET_SEG(trans);
    GST_OBJECT_LOCK(self);
    gchar *path = g_strdup(self->model_path);
    gint threads = self->threads;
    GST_OBJECT_UNLOCK(self);

    if (!path || !*path) {
        GST_ELEMENT_ERROR(self, RESOURCE, NOT_FOUND,
                          ("No model given: set the 'model' property to an ONNX artifact "
                           "written by isdnet-deploy export (model=FILE.onnx)."), (NULL));
        g_free(path);
        return FALSE;
    }
    isd_model *model = NULL;
    gint64 start = g_get_monotonic_time();
    int rc = isd_open_threads(path, threads, &model);
    if (rc != ISD_OK) {
        const char *why = isd_last_error();
        /* libisdnet's file errors name the path; its other errors get it prepended. */
        if (strstr(why, path))
            GST_ELEMENT_ERROR(self, RESOURCE, OPEN_READ, ("Cannot use the model: %s", why),
                              ("isd_open_threads returned %d", rc));
        else
            GST_ELEMENT_ERROR(self, RESOURCE, OPEN_READ, ("Cannot use the model %s: %s", path,
                                                          why),
                              ("isd_open_threads returned %d", rc));
        g_free(path);
        return FALSE;
    }
    int classes = isd_num_classes(model);
    for (int k = 0; k < classes; k++)
        isd_class_color(model, k, self->palette[k]);
    GST_INFO_OBJECT(self, "opened %s in %.0f ms: %d classes, test scale %g, %d threads", path,
                    (double)(g_get_monotonic_time() - start) / 1000.0, classes,
                    isd_test_scale(model), threads);
    g_free(path);

    self->model = model;
    self->refused_width = self->refused_height = 0;
    self->frames = 0;
    self->predict_us = 0;
    GST_OBJECT_LOCK(self);
    self->started = TRUE;
    GST_OBJECT_UNLOCK(self);
    return TRUE;
}

static gboolean gst_isdnet_seg_stop(GstBaseTransform *trans)
{
    GstIsdnetSeg *self = GST_ISDNET_SEG(trans);
    if (self->model) {
        GST_INFO_OBJECT(self, "closing the model after %" G_GUINT64_FORMAT " frames (%.1f ms "
                        "per frame in isd_predict)", self->frames,
                        self->frames ? (double)self->predict_us / 1000.0 / (double)self->frames
                                     : 0.0);
        isd_close(self->model);
        self->model = NULL;
    }
    release_labels(self);
    GST_OBJECT_LOCK(self);
    self->started = FALSE;
    GST_OBJECT_UNLOCK(self);
    return TRUE;
}

/* A GValue list of format names. */
static void set_formats(GstStructure *s, const char *const *formats, guint count)
{
    GValue list = G_VALUE_INIT, item = G_VALUE_INIT;
    g_value_init(&list, GST_TYPE_LIST);
    g_value_init(&item, G_TYPE_STRING);
    for (guint i = 0; i < count; i++) {
        g_value_set_static_string(&item, formats[i]);
        gst_value_list_append_value(&list, &item);
    }
    gst_structure_take_value(s, "format", &list);
    g_value_unset(&item);
}

/* overlay: the same caps both ways. labels: RGB/BGR on the sink side, GRAY8 of the same
 * size and rate on the source side (colour fields dropped: they describe RGB). */
static GstCaps *gst_isdnet_seg_transform_caps(GstBaseTransform *trans, GstPadDirection direction,
                                              GstCaps *caps, GstCaps *filter)
{
    GstIsdnetSeg *self = GST_ISDNET_SEG(trans);
    static const char *const colour[] = {"RGB", "BGR"}, *const gray[] = {"GRAY8"};
    GST_OBJECT_LOCK(self);
    IsdnetOutput output = self->output;
    GST_OBJECT_UNLOCK(self);

    GstCaps *result = gst_caps_new_empty();
    for (guint i = 0; i < gst_caps_get_size(caps); i++) {
        GstStructure *s = gst_structure_copy(gst_caps_get_structure(caps, i));
        GstCapsFeatures *features = gst_caps_get_features(caps, i);
        if (output == ISDNET_OUTPUT_LABELS) {
            if (direction == GST_PAD_SINK)
                set_formats(s, gray, G_N_ELEMENTS(gray));
            else
                set_formats(s, colour, G_N_ELEMENTS(colour));
            gst_structure_remove_fields(s, "colorimetry", "chroma-site", NULL);
        }
        result = gst_caps_merge_structure_full(result, s,
                                               features ? gst_caps_features_copy(features) : NULL);
    }
    if (filter) {
        GstCaps *both = gst_caps_intersect_full(filter, result, GST_CAPS_INTERSECT_FIRST);
        gst_caps_unref(result);
        result = both;
    }
    GST_DEBUG_OBJECT(self, "%s caps %" GST_PTR_FORMAT " -> %" GST_PTR_FORMAT,
                     direction == GST_PAD_SINK ? "sink" : "src", (void *)caps, (void *)result);
    return result;
}

/* The frame size is checked against the contract here, once per caps: a size the artifact
 * does not admit is an element error naming it. */
static gboolean gst_isdnet_seg_set_info(GstVideoFilter *filter, GstCaps *incaps,
                                        GstVideoInfo *in_info, GstCaps *outcaps,
                                        GstVideoInfo *out_info)
{
    GstIsdnetSeg *self = GST_ISDNET_SEG(filter);
    (void)incaps;
    (void)outcaps;
    gint width = GST_VIDEO_INFO_WIDTH(in_info), height = GST_VIDEO_INFO_HEIGHT(in_info);
    if (!self->model) {
        GST_ELEMENT_ERROR(self, CORE, NEGOTIATION, ("Caps arrived before the model was opened."),
                          (NULL));
        return FALSE;
    }
    if (isd_check_size(self->model, height, width) != ISD_OK) {
        /* GstBaseTransform offers refused caps again (on the next buffer, on reconfigure):
         * the error is posted once, as several error messages confuse applications (and
         * can leave gst-launch-1.0 waiting). */
        if (width != self->refused_width || height != self->refused_height)
            GST_ELEMENT_ERROR(self, STREAM, FORMAT,
                              ("Frames of width %d and height %d cannot be segmented by this "
                               "model: %s", width, height, isd_last_error()), (NULL));
        self->refused_width = width;
        self->refused_height = height;
        return FALSE;
    }
    if (GST_VIDEO_INFO_WIDTH(out_info) != width || GST_VIDEO_INFO_HEIGHT(out_info) != height) {
        GST_ELEMENT_ERROR(self, CORE, NEGOTIATION,
                          ("Output caps %dx%d differ from the input's %dx%d.",
                           GST_VIDEO_INFO_WIDTH(out_info), GST_VIDEO_INFO_HEIGHT(out_info),
                           width, height), (NULL));
        return FALSE;
    }
    release_labels(self);
    if (GST_VIDEO_INFO_FORMAT(out_info) != GST_VIDEO_FORMAT_GRAY8) {
        /* Bounded by isd_check_size: both sides are at most ISD_MAX_SIDE. */
        self->labels = g_try_malloc((gsize)width * (gsize)height);
        if (!self->labels) {
            GST_ELEMENT_ERROR(self, RESOURCE, NO_SPACE_LEFT,
                              ("Out of memory for the labels of a %dx%d frame.", width, height),
                              (NULL));
            return FALSE;
        }
        self->labels_width = width;
        self->labels_height = height;
    }
    GST_INFO_OBJECT(self, "%dx%d %s frames -> %s", width, height,
                    gst_video_format_to_string(GST_VIDEO_INFO_FORMAT(in_info)),
                    gst_video_format_to_string(GST_VIDEO_INFO_FORMAT(out_info)));
    return TRUE;
}

/* out = the pixel blended with its class colour, exactly as isdnet_deploy.data.images.overlay
 * computes it with NumPy in float32: (float)(1 - alpha) * pixel + (float)alpha * colour,
 * each product and sum rounded to float32 (the C is compiled with -ffp-contract=off), plus
 * 0.5, clipped to 255 and truncated. Pixels of class IGNORE_CLASS are copied unchanged. */
static void blend(const GstIsdnetSeg *self, gdouble alpha, const GstVideoFrame *in,
                  GstVideoFrame *out)
{
    gint width = GST_VIDEO_FRAME_WIDTH(in), height = GST_VIDEO_FRAME_HEIGHT(in);
    gboolean bgr = GST_VIDEO_FRAME_FORMAT(in) == GST_VIDEO_FORMAT_BGR;
    const float keep = (float)(1.0 - alpha), take = (float)alpha;
    float kept[256], colour[256][3];
    for (int v = 0; v < 256; v++) {
        kept[v] = keep * (float)v;
        for (int c = 0; c < 3; c++)
            colour[v][c] = take * (float)self->palette[v][bgr ? 2 - c : c];
    }
    const guint8 *src = GST_VIDEO_FRAME_PLANE_DATA(in, 0);
    guint8 *dst = GST_VIDEO_FRAME_PLANE_DATA(out, 0);
    gint src_stride = GST_VIDEO_FRAME_PLANE_STRIDE(in, 0);
    gint dst_stride = GST_VIDEO_FRAME_PLANE_STRIDE(out, 0);
    for (gint y = 0; y < height; y++) {
        const guint8 *p = src + (gsize)y * (gsize)src_stride;
        const guint8 *k = self->labels + (gsize)y * (gsize)self->labels_width;
        guint8 *o = dst + (gsize)y * (gsize)dst_stride;
        for (gint x = 0; x < width; x++, p += 3, o += 3) {
            if (k[x] == IGNORE_CLASS) {
                o[0] = p[0];
                o[1] = p[1];
                o[2] = p[2];
                continue;
            }
            for (int c = 0; c < 3; c++) {
                float sum = kept[p[c]] + colour[k[x]][c];
                sum = sum + 0.5f;
                o[c] = sum >= 255.0f ? 255 : (guint8)sum;
            }
        }
    }
}

static GstFlowReturn gst_isdnet_seg_transform_frame(GstVideoFilter *filter, GstVideoFrame *in,
                                                    GstVideoFrame *out)
{
    GstIsdnetSeg *self = GST_ISDNET_SEG(filter);
    gint width = GST_VIDEO_FRAME_WIDTH(in), height = GST_VIDEO_FRAME_HEIGHT(in);
    gint stride = GST_VIDEO_FRAME_PLANE_STRIDE(in, 0);
    gint out_stride = GST_VIDEO_FRAME_PLANE_STRIDE(out, 0);
    gboolean labels_out = GST_VIDEO_FRAME_FORMAT(out) == GST_VIDEO_FORMAT_GRAY8;
    int order = GST_VIDEO_FRAME_FORMAT(in) == GST_VIDEO_FORMAT_BGR ? ISD_BGR : ISD_RGB;
    if (stride < 3 * width || out_stride < (labels_out ? width : 3 * width)) {
        GST_ELEMENT_ERROR(self, STREAM, FORMAT,
                          ("Row strides %d (input) and %d (output) are too small or negative "
                           "for %d-pixel rows; flipped or packed layouts are not supported.",
                           stride, out_stride, width), (NULL));
        return GST_FLOW_ERROR;
    }
    guint8 *labels = labels_out ? GST_VIDEO_FRAME_PLANE_DATA(out, 0) : self->labels;
    gsize labels_stride = labels_out ? (gsize)out_stride : (gsize)self->labels_width;
    if (!labels_out && (self->labels_width != width || self->labels_height != height)) {
        GST_ELEMENT_ERROR(self, CORE, NEGOTIATION, ("A %dx%d frame arrived with caps for %dx%d.",
                          width, height, self->labels_width, self->labels_height), (NULL));
        return GST_FLOW_NOT_NEGOTIATED;
    }

    gint64 start = g_get_monotonic_time();
    int rc = isd_predict(self->model, GST_VIDEO_FRAME_PLANE_DATA(in, 0), height, width,
                         (size_t)stride, order, labels, labels_stride);
    gint64 spent = g_get_monotonic_time() - start;
    if (rc != ISD_OK) {
        GST_ELEMENT_ERROR(self, STREAM, FAILED, ("Segmenting a %dx%d frame failed: %s", width,
                                                 height, isd_last_error()),
                          ("isd_predict returned %d", rc));
        return GST_FLOW_ERROR;
    }
    if (!labels_out) {
        GST_OBJECT_LOCK(self);
        gdouble alpha = self->alpha;
        GST_OBJECT_UNLOCK(self);
        blend(self, alpha, in, out);
    }
    /* The bytes that pad each output row (GStreamer aligns rows to 4 bytes) are zeroed, so
     * that no stale memory of the buffer pool goes downstream (into files, for instance). */
    gsize used = (gsize)width * (labels_out ? 1 : 3);
    if ((gsize)out_stride > used) {
        guint8 *rows = GST_VIDEO_FRAME_PLANE_DATA(out, 0);
        for (gint y = 0; y < height; y++)
            memset(rows + (gsize)y * (gsize)out_stride + used, 0, (gsize)out_stride - used);
    }
    self->frames++;
    self->predict_us += spent;
    GST_DEBUG_OBJECT(self, "frame %" G_GUINT64_FORMAT " done: %dx%d, %.1f ms in isd_predict",
                     self->frames, width, height, (double)spent / 1000.0);
    return GST_FLOW_OK;
}

static void gst_isdnet_seg_finalize(GObject *object)
{
    GstIsdnetSeg *self = GST_ISDNET_SEG(object);
    g_free(self->model_path);
    /* stop() has run unless the element never started. */
    isd_close(self->model);
    g_free(self->labels);
    G_OBJECT_CLASS(gst_isdnet_seg_parent_class)->finalize(object);
}

static void gst_isdnet_seg_class_init(GstIsdnetSegClass *klass)
{
    GObjectClass *object_class = G_OBJECT_CLASS(klass);
    GstElementClass *element_class = GST_ELEMENT_CLASS(klass);
    GstBaseTransformClass *transform_class = GST_BASE_TRANSFORM_CLASS(klass);
    GstVideoFilterClass *filter_class = GST_VIDEO_FILTER_CLASS(klass);

    object_class->set_property = gst_isdnet_seg_set_property;
    object_class->get_property = gst_isdnet_seg_get_property;
    object_class->finalize = gst_isdnet_seg_finalize;

    g_object_class_install_property(
        object_class, PROP_MODEL,
        g_param_spec_string("model", "Model",
                            "ONNX artifact written by isdnet-deploy export (required); opened "
                            "when the element starts, closed when it stops",
                            NULL,
                            G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
                                GST_PARAM_MUTABLE_READY));
    g_object_class_install_property(
        object_class, PROP_OUTPUT,
        g_param_spec_enum("output", "Output",
                          "labels: GRAY8 class ids at the frame's size; overlay: the frame "
                          "(same format) blended with the class colours",
                          isdnet_output_get_type(), DEFAULT_OUTPUT,
                          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
                              GST_PARAM_MUTABLE_READY));
    g_object_class_install_property(
        object_class, PROP_ALPHA,
        g_param_spec_double("alpha", "Alpha",
                            "Weight of the class colour in output=overlay (0: the frame, 1: "
                            "the colours); 0.5 is what isdnet-deploy infer --overlay uses",
                            0.0, 1.0, DEFAULT_ALPHA,
                            G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
                                GST_PARAM_MUTABLE_PLAYING));
    g_object_class_install_property(
        object_class, PROP_THREADS,
        g_param_spec_int("threads", "Threads",
                         "ONNX Runtime intra-op threads (0: its default, one per physical "
                         "core)",
                         0, 1024, DEFAULT_THREADS,
                         G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
                             GST_PARAM_MUTABLE_READY));

    gst_element_class_set_static_metadata(
        element_class, "ISDNet segmentation", "Filter/Analyzer/Video",
        "Segments every frame with an isdnet-deploy ONNX artifact (libisdnet): class ids "
        "as GRAY8 frames, or the frame overlaid with the class colours",
        "isdnet-deploy");
    gst_element_class_add_static_pad_template(element_class, &sink_template);
    gst_element_class_add_static_pad_template(element_class, &src_template);

    transform_class->start = GST_DEBUG_FUNCPTR(gst_isdnet_seg_start);
    transform_class->stop = GST_DEBUG_FUNCPTR(gst_isdnet_seg_stop);
    transform_class->transform_caps = GST_DEBUG_FUNCPTR(gst_isdnet_seg_transform_caps);
    filter_class->set_info = GST_DEBUG_FUNCPTR(gst_isdnet_seg_set_info);
    filter_class->transform_frame = GST_DEBUG_FUNCPTR(gst_isdnet_seg_transform_frame);

    gst_type_mark_as_plugin_api(isdnet_output_get_type(), 0);
}

static void gst_isdnet_seg_init(GstIsdnetSeg *self)
{
    self->output = DEFAULT_OUTPUT;
    self->alpha = DEFAULT_ALPHA;
    self->threads = DEFAULT_THREADS;
}

static gboolean plugin_init(GstPlugin *plugin)
{
    GST_DEBUG_CATEGORY_INIT(isdnetseg_debug, "isdnetseg", 0,
                            "ISDNet segmentation with libisdnet");
    return gst_element_register(plugin, "isdnetseg", GST_RANK_NONE, GST_TYPE_ISDNET_SEG);
}

/* GST_PLUGIN_DEFINE records PACKAGE as the plugin's source module. "Apache 2.0" is the
 * project's licence; GStreamer lists it since 1.22 (older versions load the plugin and log
 * an unknown licence). */
#define PACKAGE "isdnet-deploy"
GST_PLUGIN_DEFINE(GST_VERSION_MAJOR, GST_VERSION_MINOR, isdnet,
                  "ISDNet segmentation over libisdnet (isdnet-deploy artifacts)", plugin_init,
                  ISDNET_VERSION, "Apache 2.0", "isdnet-deploy", "isdnet-deploy")
