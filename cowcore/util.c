/* SPDX-License-Identifier: MIT */
/* Layer 0: small public helpers with no image behind them (format names, sizes). */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cowcore.h"

const char *cow_fmt_name(int fmt)
{
	return fmt == COW_FMT_RAW ? "raw" : fmt == COW_FMT_UCOW ? "ucow" :
	       fmt == COW_FMT_QCOW2 ? "qcow2" : "none";
}

int cow_fmt_parse(const char *name)
{
	if (!strcmp(name, "raw"))
		return COW_FMT_RAW;
	if (!strcmp(name, "ucow"))
		return COW_FMT_UCOW;
	if (!strcmp(name, "qcow2"))
		return COW_FMT_QCOW2;
	return -EINVAL;
}

int cow_parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;
	int shift = 0;
	if (!s || !*s || *s == '-' || *s == '+' || *s == ' ')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s)
		return errno == ERANGE ? -ERANGE : -EINVAL;
	switch (*end) {
	case 0: break;
	case 'b': case 'B': shift = 0; end++; break;
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	case 't': case 'T': shift = 40; end++; break;
	case 'p': case 'P': shift = 50; end++; break;
	default: return -EINVAL;
	}
	if (*end)
		return -EINVAL;
	if (shift && v > (UINT64_MAX >> shift))
		return -ERANGE;
	*out = (uint64_t)v << shift;
	return 0;
}

bool cow_name_is_uri(const char *name)
{
	static const char *const schemes[] = { "nbd", "nbds", "nbd+unix", "nbds+unix",
					       "nbd+vsock", "nbds+vsock", "nbd+ssh", "nbds+ssh" };
	const char *colon = strstr(name, "://");
	if (!colon)
		return false;
	for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++)
		if (strlen(schemes[i]) == (size_t)(colon - name) &&
		    !strncmp(name, schemes[i], (size_t)(colon - name)))
			return true;
	return false;
}

int cow_backing_path(const char *image, const char *name, char *out, size_t outlen)
{
	const char *slash = strrchr(image, '/');
	int n;
	if (name[0] == '/' || !slash || cow_name_is_uri(name))	/* a URI: never a file */
		n = snprintf(out, outlen, "%s", name);
	else
		n = snprintf(out, outlen, "%.*s/%s", slash == image ? 0 : (int)(slash - image),
			     image, name);
	return n < 0 || (size_t)n >= outlen ? -ENAMETOOLONG : 0;
}
