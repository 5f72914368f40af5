/* test_klp_state2.c - version 2 of the system state patch: it takes the
 * state over from an installed patch instead of changing it again. */
#define CONSOLE_LOGLEVEL_STATE_VERSION 2
#include "test_klp_state.c"
