/* SPDX-License-Identifier: MIT */
/*
 * cowcore internals, layer 5: raw images on an NBD server (nbd.c), the backing images whose
 * names are network URIs. Below: commit.h. The request engine (engine.c) sends such an
 * image's reads here; image.c opens and frees it.
 */
#ifndef COWCORE_NBD_H
#define COWCORE_NBD_H

#include "commit.h"

/*
 * Whether uri may be connected to: a name cow_name_is_uri accepts, printable ASCII without
 * blanks, the scheme nbd, nbds, nbd+unix or nbds+unix (vsock and ssh, which runs a
 * command, are refused). 0, or -EINVAL / -EPROTONOSUPPORT with why (COW_ERRLEN bytes) set
 * to a reason without the URI in it.
 */
int nbd_uri_check(const char *uri, char *why);
/* nbds:// (TLS over TCP): 0 when libnbd has a CA certificate to check the server with (its
 * path in where), else -ENOKEY with the path it looked for last; 0 for other URIs. */
int nbd_tls_ca(const char *uri, char *where, size_t wlen);

/*
 * img (img->path the URI, img->open_flags, img->net_timeout_ms set; fd -1): connect once,
 * read and check what the server says (size, block sizes), and make img a raw image of
 * the export's size. The connection is kept for the first context. 0, or -errno with err
 * (COW_ERRLEN) one line naming the URI. nbd_src_free undoes it (also after a failure).
 */
int nbd_src_open(struct cow_image *img, char *err);
void nbd_src_free(struct cow_image *img);

/* ctx on an image with img->nbd: its connection (made when a read needs it). 0/-errno */
int nbd_ctx_init(struct cow_ctx *ctx);
void nbd_ctx_fini(struct cow_ctx *ctx);

/*
 * A read of req (already checked against the size) from ctx's connection: one reference
 * on req per command, dropped when it completes (the data, or -EIO after the timeout).
 * Completions run from the backend's loop (a COW_IO_POLL on the connection) or, when no
 * network is needed, at once.
 */
void nbd_read(struct cow_ctx *ctx, struct cow_req *req);

#endif
