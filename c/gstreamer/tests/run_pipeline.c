/* run_pipeline: plays a pipeline written as for gst-launch-1.0 until its end or its first
 * error, for tests/test_gstreamer.py.
 *
 *   run_pipeline TIMEOUT_SECONDS 'videotestsrc num-buffers=2 ! ... ! fakesink'
 *
 * Exit status 0 at end of stream; 1 after printing the first error as
 *   ERROR from PATH: MESSAGE
 *   DEBUG: DEBUG INFO
 * 2 when the description does not parse or link; 3 when nothing ended it in time.
 *
 * Why not gst-launch-1.0: version 1.22 handles errors in a bus sync handler that quits its
 * main loop, and an error posted by a streaming thread before that loop runs (a caps
 * refusal right after PAUSED, for instance) is lost, so gst-launch-1.0 then waits forever
 * (seen here in about half of the runs of a not-negotiated pipeline). Popping the bus
 * cannot miss a message. */
#include <gst/gst.h>

#include <stdlib.h>

static int finish(GstElement *pipeline, int status)
{
    gst_element_set_state(pipeline, GST_STATE_NULL);
    gst_object_unref(pipeline);
    gst_deinit();
    return status;
}

int main(int argc, char **argv)
{
    gst_init(&argc, &argv);
    if (argc != 3 || atoi(argv[1]) <= 0) {
        g_printerr("usage: run_pipeline TIMEOUT_SECONDS 'PIPELINE DESCRIPTION'\n");
        return 2;
    }
    GError *error = NULL;
    GstElement *pipeline = gst_parse_launch(argv[2], &error);
    if (!pipeline || error) {
        g_printerr("PARSE ERROR: %s\n", error ? error->message : "no pipeline");
        g_clear_error(&error);
        if (pipeline)
            gst_object_unref(pipeline);
        return 2;
    }
    GstBus *bus = gst_element_get_bus(pipeline);
    GstStateChangeReturn change = gst_element_set_state(pipeline, GST_STATE_PLAYING);
    /* A failed state change has posted its error already. */
    GstClockTime wait = change == GST_STATE_CHANGE_FAILURE ? 0 : atoi(argv[1]) * GST_SECOND;
    GstMessage *message =
        gst_bus_timed_pop_filtered(bus, wait, GST_MESSAGE_ERROR | GST_MESSAGE_EOS);
    gst_object_unref(bus);
    if (!message && change == GST_STATE_CHANGE_FAILURE) {
        g_printerr("ERROR: the state change failed without an error message\n");
        return finish(pipeline, 1);
    }
    if (!message) {
        g_printerr("TIMEOUT: no end of stream or error in %s s\n", argv[1]);
        return finish(pipeline, 3);
    }
    int status = 0;
    if (GST_MESSAGE_TYPE(message) == GST_MESSAGE_ERROR) {
        gchar *debug = NULL, *path = gst_object_get_path_string(GST_MESSAGE_SRC(message));
        gst_message_parse_error(message, &error, &debug);
        g_printerr("ERROR from %s: %s\nDEBUG: %s\n", path, error->message,
                   debug ? debug : "");
        g_clear_error(&error);
        g_free(debug);
        g_free(path);
        status = 1;
    } else {
        g_print("EOS\n");
    }
    gst_message_unref(message);
    return finish(pipeline, status);
}
