/* test_klp_state3.c - the same version 2 patch under another name, for a
 * cumulative patch replacing a compatible one. */
#define CONSOLE_LOGLEVEL_STATE_VERSION 2
#include "test_klp_state.c"
