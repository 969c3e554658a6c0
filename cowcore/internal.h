/* SPDX-License-Identifier: MIT */
/* Every cowcore internal header, for white-box unit tests only: no cowcore file includes
 * this one (each includes its own layer's header; see imgio.h for the layers). */
#ifndef COWCORE_INTERNAL_H
#define COWCORE_INTERNAL_H

#include "commit.h"
#include "compress.h"
#include "image.h"

#endif
