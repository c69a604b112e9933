/* Thread stress from C: 8 threads x N cycles of wrap / export / import /
 * retain / free, half of the handles freed by another thread, in three
 * waves of threads (each wave's threads exit and the next wave's take
 * over their per-thread counters and free the handles they left). After
 * each wave dlb_live_tensor_count() is exactly the number of handles left
 * in the mailboxes; at the end it is 0 and every release callback ran
 * exactly once. Usage: stress [cycles per thread] (default 100000). */
#include "dlbridge.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#define THREADS 8
#define RING 4096

static float data[64];
static atomic_long released;
static long cycles;

/* One mailbox per thread: a ring of handles that its left neighbour fills. */
typedef struct {
  pthread_mutex_t lock;
  dlb_tensor *slots[RING];
  int head, count;
} mailbox;
static mailbox boxes[THREADS];

static void release(void *ctx) {
  if (ctx == (void *)data) atomic_fetch_add(&released, 1);
}

static int post(mailbox *b, dlb_tensor *t) {
  int ok;
  pthread_mutex_lock(&b->lock);
  ok = b->count < RING;
  if (ok) {
    b->slots[(b->head + b->count) % RING] = t;
    b->count++;
  }
  pthread_mutex_unlock(&b->lock);
  return ok;
}

static void drain(mailbox *b) {
  pthread_mutex_lock(&b->lock);
  while (b->count > 0) {
    dlb_tensor_free(b->slots[b->head]);
    b->head = (b->head + 1) % RING;
    b->count--;
  }
  pthread_mutex_unlock(&b->lock);
}

static void *work(void *arg) {
  long me = (long)arg, i;
  DLDevice cpu = {kDLCPU, 0};
  DLDataType f32 = {kDLFloat, 32, 1};
  int64_t shape[2] = {8, 8};
  for (i = 0; i < cycles; i++) {
    dlb_tensor *t = NULL, *back = NULL, *extra;
    DLManagedTensorVersioned *mt = NULL;
    if (dlb_tensor_wrap(data, cpu, f32, 2, shape, NULL, 0, 0, release, data, &t) != DLB_OK ||
        dlb_tensor_to_dlpack_versioned(t, &mt) != DLB_OK || dlb_tensor_from_dlpack_versioned(mt, &back) != DLB_OK) {
      fprintf(stderr, "call failed: %s\n", dlb_last_error_message());
      exit(1);
    }
    extra = dlb_tensor_retain(back);
    dlb_tensor_free(back);
    dlb_tensor_free(i % 2 ? extra : t);
    if (!post(&boxes[(me + 1) % THREADS], i % 2 ? t : extra)) dlb_tensor_free(i % 2 ? t : extra);
    drain(&boxes[me]);
  }
  return NULL;
}

#define WAVES 3

int main(int argc, char **argv) {
  pthread_t threads[THREADS];
  long i, wave, waiting;
  cycles = argc > 1 ? atol(argv[1]) : 100000;
  for (i = 0; i < THREADS; i++) pthread_mutex_init(&boxes[i].lock, NULL);
  for (wave = 0; wave < WAVES; wave++) {
    for (i = 0; i < THREADS; i++) pthread_create(&threads[i], NULL, work, (void *)i);
    for (i = 0; i < THREADS; i++) pthread_join(threads[i], NULL);
    for (i = 0, waiting = 0; i < THREADS; i++) waiting += boxes[i].count;
    if (dlb_live_tensor_count() != (size_t)waiting) {
      printf("c_tests/stress: 0 passed, 1 failed (after wave %ld: %zu live, %ld handles held)\n", wave,
             dlb_live_tensor_count(), waiting);
      return 1;
    }
  }
  for (i = 0; i < THREADS; i++) {
    drain(&boxes[i]);
    pthread_mutex_destroy(&boxes[i].lock);
  }
  if (dlb_live_tensor_count() != 0 || atomic_load(&released) != WAVES * THREADS * cycles) {
    printf("c_tests/stress: 0 passed, 1 failed (%zu live, %ld releases for %ld wraps)\n", dlb_live_tensor_count(),
           atomic_load(&released), WAVES * THREADS * cycles);
    return 1;
  }
  printf("c_tests/stress (%d waves of %d threads x %ld cycles): 1 passed, 0 failed\n", WAVES, THREADS, cycles);
  return 0;
}
