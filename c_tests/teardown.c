/* dlbridge called while thread-local storage is being destroyed: from a
 * pthread key destructor (after the thread's TLS destructors ran) and from
 * an atexit handler (after the main thread's), each on a thread that failed
 * before, so dlbridge's per-thread message existed and is gone. Each call
 * must return its status and a message, never abort. Also built as C++ with
 * a static object whose destructor does the same (TEARDOWN_CXX). The
 * Makefile checks every "survived" line is printed and the exit code is 0. */
#define _POSIX_C_SOURCE 200809L
#include "dlbridge.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

static void fail_and_report(const char *where) {
  DLDevice cpu = {kDLCPU, 0};
  DLDataType f32 = {kDLFloat, 32, 1};
  dlb_tensor *out = NULL;
  dlb_status s = dlb_tensor_new(cpu, f32, -1, NULL, &out);
  const char *message = dlb_last_error_message();
  printf("%s %s: %s, \"%s\"\n", s == DLB_ERR_INVALID_NDIM && message && message[0] && !out ? "survived" : "WRONG",
         where, dlb_status_name(s), message ? message : "(null)");
  fflush(stdout);
}

static pthread_key_t key;
static void key_destructor(void *value) {
  (void)value;
  fail_and_report("pthread key destructor");
}

static void *thread_body(void *arg) {
  (void)arg;
  fail_and_report("worker thread");
  pthread_setspecific(key, (void *)1);
  return NULL;
}

static void at_exit(void) { fail_and_report("atexit handler"); }

#ifdef TEARDOWN_CXX
struct StaticObject {
  ~StaticObject() { fail_and_report("C++ static destructor"); }
};
static StaticObject static_object;
#endif

int main(void) {
  pthread_t thread;
  fail_and_report("main thread");
  atexit(at_exit);
  pthread_key_create(&key, key_destructor);
  pthread_create(&thread, NULL, thread_body, NULL);
  pthread_join(thread, NULL);
  return 0;
}
