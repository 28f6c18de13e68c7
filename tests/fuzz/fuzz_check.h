/*
 * fuzz_check: CHECK(cond) for the fuzz drivers. A broken promise: say
 * which, then crash so libFuzzer keeps the input.
 */
#ifndef SY_FUZZ_CHECK_H
#define SY_FUZZ_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);   \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

#endif
