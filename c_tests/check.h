/* A minimal test harness: CHECK records a failure and goes on; each test is
 * a function run by RUN; main ends with "N passed, N failed". */
#ifndef DLB_CHECK_H
#define DLB_CHECK_H

#include <stdio.h>
#include <string.h>

static int checks_failed_in_test;
static int tests_passed;
static int tests_failed;

#define CHECK(cond)                                                        \
  do {                                                                     \
    if (!(cond)) {                                                         \
      fprintf(stderr, "  %s:%d: CHECK failed: %s\n", __FILE__, __LINE__,   \
              #cond);                                                      \
      checks_failed_in_test++;                                             \
    }                                                                      \
  } while (0)

/* The call returns `want`, and on failure leaves a message that names
 * `needle` (pass "" to only require a non-empty message). */
#define CHECK_STATUS(call, want, needle)                                      \
  do {                                                                        \
    dlb_status got_ = (call);                                                 \
    if (got_ != (want)) {                                                     \
      fprintf(stderr, "  %s:%d: %s returned %s, wanted %s (%s)\n", __FILE__,  \
              __LINE__, #call, dlb_status_name(got_), dlb_status_name(want),  \
              dlb_last_error_message());                                      \
      checks_failed_in_test++;                                                \
    } else if ((want) != DLB_OK &&                                            \
               (dlb_last_error_message()[0] == '\0' ||                        \
                strstr(dlb_last_error_message(), (needle)) == NULL)) {        \
      fprintf(stderr, "  %s:%d: message \"%s\" does not mention \"%s\"\n",    \
              __FILE__, __LINE__, dlb_last_error_message(), (needle));        \
      checks_failed_in_test++;                                                \
    }                                                                         \
  } while (0)

#define RUN(test)                                                    \
  do {                                                               \
    checks_failed_in_test = 0;                                       \
    test();                                                          \
    if (checks_failed_in_test == 0) {                                \
      tests_passed++;                                                \
      printf("ok     %s\n", #test);                                  \
    } else {                                                         \
      tests_failed++;                                                \
      printf("FAILED %s (%d checks)\n", #test, checks_failed_in_test); \
    }                                                                \
  } while (0)

#endif
