/* Marks for callgrind, called from Python through ctypes (bench/instructions.py builds
 * this file into a shared library with the system's C compiler): start counting, reset
 * the counts, pause and resume them, write them out. Outside valgrind these do nothing. */
#include <valgrind/callgrind.h>

void sp_start(void) { CALLGRIND_START_INSTRUMENTATION; }
void sp_stop(void) { CALLGRIND_STOP_INSTRUMENTATION; }
void sp_zero(void) { CALLGRIND_ZERO_STATS; }
void sp_dump(const char *name) { CALLGRIND_DUMP_STATS_AT(name); }
void sp_toggle(void) { CALLGRIND_TOGGLE_COLLECT; }
