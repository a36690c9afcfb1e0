/* Two threads predicting on one model handle at the same time must get the labels one
 * thread gets alone.
 *
 *   threads MODEL A.ppm B.ppm ROUNDS
 *
 * Thread 0 segments A, thread 1 segments B, ROUNDS times each, started together; exit
 * status 0 when every result equals the single-threaded one. */
#define _POSIX_C_SOURCE 200809L
#include <isdnet.h>

#include <pthread.h>

#include "testutil.h"

typedef struct {
    isd_model *model;
    const uint8_t *pixels;
    int height, width, rounds;
    const uint8_t *expected;
    pthread_barrier_t *start;
    int failures;
    char error[512];
} job;

static void *work(void *arg)
{
    job *j = arg;
    uint8_t *labels = malloc((size_t)j->height * j->width);
    if (!labels) {
        j->failures = j->rounds;
        return NULL;
    }
    pthread_barrier_wait(j->start);
    for (int r = 0; r < j->rounds; r++) {
        if (isd_predict(j->model, j->pixels, j->height, j->width, (size_t)j->width * 3, ISD_RGB,
                        labels, (size_t)j->width) != ISD_OK) {
            snprintf(j->error, sizeof j->error, "%s", isd_last_error());
            j->failures++;
        } else if (memcmp(labels, j->expected, (size_t)j->height * j->width) != 0) {
            j->failures++;
        }
    }
    free(labels);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: threads MODEL A.ppm B.ppm ROUNDS\n");
        return 2;
    }
    isd_model *model = NULL;
    if (isd_open(argv[1], &model) != ISD_OK) {
        fprintf(stderr, "isd_open: %s\n", isd_last_error());
        return 1;
    }
    job jobs[2];
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, 2);
    for (int i = 0; i < 2; i++) {
        job *j = &jobs[i];
        memset(j, 0, sizeof *j);
        j->model = model;
        j->rounds = atoi(argv[4]);
        j->start = &start;
        j->pixels = read_ppm(argv[2 + i], &j->height, &j->width);
        uint8_t *expected = j->pixels ? malloc((size_t)j->height * j->width) : NULL;
        if (!expected || isd_predict(model, j->pixels, j->height, j->width,
                                     (size_t)j->width * 3, ISD_RGB, expected,
                                     (size_t)j->width) != ISD_OK) {
            fprintf(stderr, "single-threaded prediction failed: %s\n", isd_last_error());
            return 1;
        }
        j->expected = expected;
    }
    pthread_t threads[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&threads[i], NULL, work, &jobs[i]);
    int failures = 0;
    for (int i = 0; i < 2; i++) {
        pthread_join(threads[i], NULL);
        failures += jobs[i].failures;
        if (jobs[i].failures)
            fprintf(stderr, "thread %d: %d of %d results differ (%s)\n", i, jobs[i].failures,
                    jobs[i].rounds, jobs[i].error);
        free((void *)jobs[i].pixels);
        free((void *)jobs[i].expected);
    }
    pthread_barrier_destroy(&start);
    isd_close(model);
    printf("%d concurrent predictions, %d differ\n", jobs[0].rounds + jobs[1].rounds, failures);
    return failures ? 1 : 0;
}
