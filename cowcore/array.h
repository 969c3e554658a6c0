/* SPDX-License-Identifier: MIT */
/* cowcore internals, layer 0: the one way cowcore grows an array. */
#ifndef COWCORE_ARRAY_H
#define COWCORE_ARRAY_H

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

/*
 * Room for element n of the array *arr of *cap elements of elem bytes: when n == *cap the
 * capacity doubles (from 64). 0, or -ENOMEM with the array left as it was.
 */
static inline int array_room(void **arr, size_t *cap, size_t n, size_t elem)
{
	size_t ncap;
	void *p;
	if (n < *cap)
		return 0;
	ncap = *cap ? *cap * 2 : 64;
	if (ncap < *cap || ncap > SIZE_MAX / elem || !(p = realloc(*arr, ncap * elem)))
		return -ENOMEM;
	*arr = p;
	*cap = ncap;
	return 0;
}
#define ARRAY_ROOM(arr, cap, n) array_room((void **)&(arr), &(cap), (n), sizeof(*(arr)))

#endif
