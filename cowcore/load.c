/* SPDX-License-Identifier: MIT */
/*
 * Layer 3, the open sequence of a ucow image: geometry and table (meta.c), journal replay
 * after an unclean shutdown, the side log of a dead server, snapshot structures, then the
 * validation of everything together (every mapped chunk inside the data area, mapped once,
 * never over metadata) and the allocator's starting state. Every number read from the image
 * is checked before use. cow_check runs the same sequence in "count, do not fail" mode.
 */
#include <errno.h>
#include <stdio.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "array.h"
#include "compress.h"
#include "load.h"

/*
 * Nothing here is sized by a chunk number read from the image: mapped chunks are a sorted
 * list (at most one per table entry), metadata extents a sorted list of runs, and the free
 * space handed to the allocator is runs between them. A mapped chunk terabytes into a sparse
 * file costs what any other chunk costs.
 */
struct prun {			/* physical chunks [first, first + n) */
	uint64_t first, n;
};

struct pmap {			/* physical chunk p, mapped by table entry c; a compressed
				 * entry's stream: sectors [s, s + ns) of the file */
	uint64_t p, c, s, ns;
};

struct vstate {
	bool check_mode;
	struct cow_check_result *cr;
	uint64_t file_chunks;
	struct prun *ext;	/* metadata extents in the data area; sorted once collected */
	size_t next, ext_cap;
	uint64_t *plain;	/* chunks mapped by plain entries: sorted, each once */
	size_t nplain;
	struct pmap *packs;	/* compressed entries, sorted by chunk and stream; c =
				 * NO_ENTRY: dropped */
	size_t npacks, packs_cap;
	uint64_t max_used;
	int err;
	struct cow_image *img;
};
#define NO_ENTRY UINT64_MAX

/* Report a problem: at open it fails the open; in check mode it is counted. */
static int problem(struct cow_image *img, struct vstate *v, const char *fmt, uint64_t a,
		   uint64_t b)
{
	char msg[COW_ERRLEN];
	snprintf(msg, sizeof(msg), fmt, (unsigned long long)a, (unsigned long long)b);
	if (v->check_mode) {
		if (!v->cr->corruptions++)
			snprintf(v->cr->first_problem, COW_ERRLEN, "%s", msg);
		return 0;
	}
	img_set_err(img, "%s: corrupt image: %s", img->path, msg);
	return -EUCLEAN;
}

static int cmp_prun(const void *a, const void *b)
{
	const struct prun *x = a, *y = b;
	return x->first < y->first ? -1 : x->first > y->first;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static bool in_sorted(const uint64_t *v, size_t n, uint64_t x)
{
	return n && bsearch(&x, v, n, sizeof(*v), cmp_u64);
}

static int cmp_pmap(const void *a, const void *b)
{
	const struct pmap *x = a, *y = b;
	if (x->p != y->p)
		return x->p < y->p ? -1 : 1;
	if (x->s != y->s)		/* streams in order */
		return x->s < y->s ? -1 : 1;
	return x->c < y->c ? -1 : x->c > y->c;
}

/* Whether chunk p lies in a metadata extent (v->ext sorted). */
static bool in_extent(const struct vstate *v, uint64_t p)
{
	size_t lo = 0, hi = v->next;
	while (lo < hi) {	/* the first extent starting after p */
		size_t mid = lo + (hi - lo) / 2;
		if (v->ext[mid].first <= p)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo && p - v->ext[lo - 1].first < v->ext[lo - 1].n;
}

/* Collect a metadata extent of the data area (snap_extents); outside the data area or past
 * the end of the file is corrupt. */
static void collect_extent(void *arg, uint64_t off, uint64_t size)
{
	struct vstate *v = arg;
	struct cow_image *img = v->img;
	uint64_t first = off >> img->chunk_shift;
	uint64_t n = (size >> img->chunk_shift) + !!(size & (img->chunk_size - 1));
	if (v->err || !n)
		return;
	if (first < img->data_pcn || first >= v->file_chunks || n > v->file_chunks - first) {
		v->err = problem(img, v, "metadata extent at chunk %llu (+%llu) is outside the "
				 "data area", first, n);
		return;
	}
	if (ARRAY_ROOM(v->ext, v->ext_cap, v->next)) {
		v->err = -ENOMEM;
		return;
	}
	v->ext[v->next++] = (struct prun){ first, n };
}

/* Metadata extents: none over another (sorted once, neighbours compared), none over a chunk
 * a snapshot references. */
static int check_extents(struct cow_image *img, struct vstate *v)
{
	uint64_t end = 0;
	int r;
	if (v->next)
		qsort(v->ext, v->next, sizeof(*v->ext), cmp_prun);
	for (size_t i = 0; i < v->next; i++) {
		if (i && v->ext[i].first < end &&
		    (r = problem(img, v, "chunk %llu is used by two structures (%llu)",
				 v->ext[i].first, v->ext[i].first)))
			return r;
		if (v->ext[i].first + v->ext[i].n > end)
			end = v->ext[i].first + v->ext[i].n;
	}
	if (end && end - 1 > v->max_used)
		v->max_used = end - 1;
	for (uint64_t p = 0; p < img->rc_len; p++)
		if (img->rc[p] && in_extent(v, p) &&
		    (r = problem(img, v, "chunk %llu is used by two structures (%llu)", p, p)))
			return r;
	return 0;
}

/*
 * A chunk mapped by two plain entries (v->plain sorted): the lowest entry keeps it, the
 * others are dropped (a problem each). The list keeps each chunk once. Repeats are found in
 * the sorted list; only then is the table walked again, to know which entries they are.
 */
static int drop_repeats(struct cow_image *img, struct vstate *v)
{
	uint64_t *rep = NULL;
	size_t nrep = 0, cap = 0, k = 0;
	uint8_t *seen = NULL;
	int r = 0;
	for (size_t i = 0; i < v->nplain; i++) {
		if (k && v->plain[i] == v->plain[k - 1]) {
			if (nrep && rep[nrep - 1] == v->plain[i])
				continue;
			if (ARRAY_ROOM(rep, cap, nrep)) {
				r = -ENOMEM;
				goto out;
			}
			rep[nrep++] = v->plain[i];
			continue;
		}
		v->plain[k++] = v->plain[i];
	}
	v->nplain = k;
	if (!nrep)
		goto out;
	if (!(seen = calloc(nrep, 1))) {
		r = -ENOMEM;
		goto out;
	}
	for (uint64_t c = 0; c < img->nr_chunks && !r; c++) {
		uint64_t e = img->table[c], p = ent_pcn(img, e);
		if (!p || (e & UCOW_E_COMPRESSED))
			continue;
		uint64_t *at = bsearch(&p, rep, nrep, sizeof(*rep), cmp_u64);
		if (!at)
			continue;
		if (!seen[at - rep]) {
			seen[at - rep] = 1;
			continue;
		}
		if (!(r = problem(img, v, "chunk %llu is mapped twice (again by entry %llu)", p, c)))
			img->table[c] = 0;
	}
out:
	free(seen);
	free(rep);
	return r;
}

static int validate_table(struct cow_image *img, struct vstate *v)
{
	uint64_t max_used = v->max_used;
	bool sorted = true;
	int r;
	/* 8 bytes per plain mapping, sorted only if the table is not in allocation order: a
	 * fully mapped 1 TiB image (1M chunks) needs 8 MiB here, not the 32 MiB of
	 * (chunk, entry, stream) records and a merge sort's copy of them */
	v->plain = malloc((img->nr_chunks ? img->nr_chunks : 1) * sizeof(*v->plain));
	if (!v->plain)
		return -ENOMEM;
	for (uint64_t c = 0; c < img->nr_chunks; c++) {
		uint64_t e = img->table[c] &= ~UCOW_E_SHARED;	/* derived from refcounts below */
		uint64_t p = ent_pcn(img, e);
		if ((e & UCOW_E_COMPRESSED) && !ent_ok(img, e)) {
			if ((r = problem(img, v, "table entry %llu is not a valid compressed "
					 "entry (0x%llx)", c, e)))
				return r;
			img->table[c] = 0;
			continue;
		}
		if (!(e & UCOW_E_COMPRESSED) && (e & (UCOW_E_RESERVED | UCOW_E_BUSY))) {
			if ((r = problem(img, v, "table entry %llu has reserved bits set (0x%llx)",
					 c, e)))
				return r;
			img->table[c] = 0;
			continue;
		}
		if ((e & UCOW_E_ZERO) && p) {
			if ((r = problem(img, v, "table entry %llu is both zero and mapped (0x%llx)",
					 c, e)))
				return r;
			img->table[c] = 0;
			continue;
		}
		if (!p)
			continue;
		if (p < img->data_pcn || p >= v->file_chunks) {
			if ((r = problem(img, v, "table entry %llu points to chunk %llu, outside the "
					 "data area of the file", c, p)))
				return r;
			img->table[c] = 0;
			continue;
		}
		if (in_extent(v, p)) {
			if ((r = problem(img, v, "chunk %llu holds metadata but entry %llu maps it",
					 p, c)))
				return r;
			img->table[c] = 0;
			continue;
		}
		if (e & UCOW_E_COMPRESSED) {
			if (ARRAY_ROOM(v->packs, v->packs_cap, v->npacks))
				return -ENOMEM;
			v->packs[v->npacks++] = (struct pmap){ p, c, ucow_e_coff(e) >> 9,
							       ucow_e_clen(e) >> 9 };
			continue;
		}
		if (v->nplain && p < v->plain[v->nplain - 1])
			sorted = false;
		v->plain[v->nplain++] = p;
		if (rc_shared(img, p))
			img->table[c] |= UCOW_E_SHARED;
	}
	if (!sorted)
		qsort(v->plain, v->nplain, sizeof(*v->plain), cmp_u64);
	r = drop_repeats(img, v);
	if (r)
		return r;
	if (v->nplain && v->plain[v->nplain - 1] > max_used)
		max_used = v->plain[v->nplain - 1];
	/* compressed streams share a pack without overlapping, and never a plain chunk */
	if (v->npacks)
		qsort(v->packs, v->npacks, sizeof(*v->packs), cmp_pmap);
	size_t last = SIZE_MAX;		/* the last stream kept */
	for (size_t i = 0; i < v->npacks; i++) {
		uint64_t p = v->packs[i].p, c = v->packs[i].c;
		bool plain = in_sorted(v->plain, v->nplain, p);
		if (plain || (last != SIZE_MAX && p == v->packs[last].p &&
			      v->packs[i].s < v->packs[last].s + v->packs[last].ns)) {
			if ((r = problem(img, v, plain ? "chunk %llu is mapped twice (again by "
					 "entry %llu)" : "chunk %llu holds overlapping compressed "
					 "chunks (again entry %llu)", p, c)))
				return r;
			img->table[c] = 0;
			v->packs[i].c = NO_ENTRY;
			continue;
		}
		last = i;
		img->table[c] |= UCOW_E_SHARED;		/* C1 (compress.c) */
		if ((r = comp_add_pack(img, p)))
			return r;
		if (p > max_used)
			max_used = p;
	}
	for (uint64_t p = 0; p < img->rc_len; p++)
		if (img->rc[p] && p > max_used)
			max_used = p;
	img->next_pcn = max_used ? max_used + 1 : img->data_pcn;
	return 0;
}

/* UNDER entries (under.c U1): a parent snapshot whose frozen copy maps another plain chunk
 * at the same index, an own chunk no snapshot references. A bad one loses its underlay. */
static int validate_under(struct cow_image *img, struct vstate *v)
{
	for (uint64_t c = 0; c < img->nr_chunks; c++) {
		uint64_t e = img->table[c];
		const char *why = NULL;
		char fmt[160];
		if (!ucow_e_under(e))
			continue;
		int r = under_validate(img, c, e, &why);
		if (r && !why && !v->check_mode)
			return r;	/* no memory, a failed read, a corrupt frozen copy */
		if (!r)
			continue;
		snprintf(fmt, sizeof(fmt), "table entry %%llu %s (0x%%llx)",
			 why ? why : "has an underlay that cannot be read");
		if ((r = problem(img, v, fmt, c, e)))
			return r;
		img->table[c] = e & ~UCOW_E_UNDER;
	}
	return 0;
}

static int add_used(struct prun **u, size_t *n, size_t *cap, uint64_t first, uint64_t len)
{
	if (*n && (*u)[*n - 1].first + (*u)[*n - 1].n == first) {
		(*u)[*n - 1].n += len;
		return 0;
	}
	if (ARRAY_ROOM(*u, *cap, *n))
		return -ENOMEM;
	(*u)[(*n)++] = (struct prun){ first, len };
	return 0;
}

/* The allocator's free space: the runs of the data area below next_pcn that no mapping,
 * metadata extent or snapshot reference uses. */
static int init_free(struct cow_image *img, struct vstate *v)
{
	struct prun *u = NULL;
	size_t n = 0, cap = 0;
	uint64_t cur = img->data_pcn;
	int r = 0;
	for (size_t i = 0; !r && i < v->next; i++)
		r = add_used(&u, &n, &cap, v->ext[i].first, v->ext[i].n);
	for (size_t i = 0; !r && i < v->nplain; i++)
		r = add_used(&u, &n, &cap, v->plain[i], 1);
	for (size_t i = 0; !r && i < v->npacks; i++)
		if (v->packs[i].c != NO_ENTRY && (!n || u[n - 1].first + u[n - 1].n != v->packs[i].p + 1))
			r = add_used(&u, &n, &cap, v->packs[i].p, 1);	/* a pack once */
	for (uint64_t p = 0; !r && p < img->rc_len; p++)
		if (img->rc[p])
			r = add_used(&u, &n, &cap, p, 1);
	if (!r && n)
		qsort(u, n, sizeof(*u), cmp_prun);
	for (size_t i = 0; !r && i < n; i++) {
		if (u[i].first > cur)
			r = alloc_add_free_run(img, cur, u[i].first - cur);
		if (u[i].first + u[i].n > cur)
			cur = u[i].first + u[i].n;
	}
	if (!r && cur < img->next_pcn)
		r = alloc_add_free_run(img, cur, img->next_pcn - cur);
	free(u);
	return r;
}

int img_load_meta(struct cow_image *img, bool check_mode, struct cow_check_result *cr)
{
	struct ucow_hdr *h = &img->hdr;
	struct stat st;
	struct vstate v = { .check_mode = check_mode, .cr = cr, .img = img };
	uint64_t nrec = 0;
	int r;

	meta_geometry(img);
	jnl_init(img);
	if (fstat(img->fd, &st) < 0)
		return -errno;
	v.file_chunks = (uint64_t)st.st_size >> img->chunk_shift;
	if (((uint64_t)st.st_size & (h->chunk_size - 1)))
		v.file_chunks++;	/* a last chunk written only in part */
	img->file_pcns = (uint64_t)st.st_size >> img->chunk_shift;
	r = meta_load_table(img);
	if (r)
		return r;
	for (uint64_t c = img->nr_chunks; c < h->table_size / 8; c++)
		if (img->table[c] && (r = problem(img, &v, "table padding entry %llu is not zero"
						  " (0x%llx)", c, img->table[c])))
			goto out;
	/* bitmaps: only the groups that hold a mapped chunk (a 1 TiB empty image reads none) */
	r = meta_load_mapped_groups(img);
	if (r)
		goto out;
	if (h->flags & UCOW_FLAG_DIRTY) {
		r = jnl_replay(img, &nrec);
		if (r && !check_mode)
			goto out;
		if (r && check_mode && !cr->corruptions++)
			snprintf(cr->first_problem, COW_ERRLEN, "%s", img->err);
		/* a dead server's acknowledged mappings (sidelog.c L3); checkpointed below */
		if (!r && img->sidelog_fd >= 0 && !check_mode &&
		    (r = sidelog_fold(img, h->generation, &nrec)))
			goto out;
	}
	r = snap_load(img, (uint64_t)st.st_size);
	if (r) {
		if (!check_mode)
			goto out;
		if (!cr->corruptions++)
			snprintf(cr->first_problem, COW_ERRLEN, "%s", img->err);
		r = 0;
	}
	snap_extents(img, collect_extent, &v);
	r = v.err;
	if (!r)
		r = check_extents(img, &v);
	if (!r)
		r = validate_table(img, &v);
	if (!r)
		r = validate_under(img, &v);
	if (!r)
		r = init_free(img, &v);
	if (r)
		goto out;
	/* a replayed journal is folded into the table at once, so it starts empty (check -r
	 * opens read-write in check mode: it writes only once it knows what to repair) */
	if (nrec && !img->read_only && !check_mode)
		r = jnl_checkpoint(img);
	/* an unclean shutdown's writes never mapped; packs whose streams were all replaced
	 * while a snapshot still held them (compress.c) */
	if (!r && (h->flags & UCOW_FLAG_DIRTY || h->incompat & UCOW_INCOMPAT_COMPRESSED) &&
	    !img->read_only && !check_mode)
		alloc_reclaim_unclean(img, (uint64_t)st.st_size);
out:
	free(v.ext);
	free(v.plain);
	free(v.packs);
	return r;
}

void img_unload_meta(struct cow_image *img)
{
	jnl_free(img);
	meta_free(img);
	for (uint64_t i = img->rec_base; i < img->rec_added; i++)
		free(img->recs[i - img->rec_base].bm);
	free(img->recs);
	free(img->free_pcns);
	free(img->free_runs);
	free(img->quar);
	free(img->reclaim);
	under_drop(img);
	free(img->snaps);
	free(img->rc);
	free(img->packs);
	img->packs = NULL;
	img->npacks = img->packs_cap = 0;
	img->recs = NULL;
	img->free_pcns = NULL;
	img->free_runs = NULL;
	img->nruns = img->runs_cap = 0;
	img->quar = NULL;
	img->reclaim = NULL;
	img->snaps = NULL;
	img->rc = NULL;
	img->rec_base = img->rec_added = 0;
}
