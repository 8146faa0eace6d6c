/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libcachenode internals shared with the project's own tests (not installed).
 */
#ifndef CN_CLIENT_INTERNAL_H
#define CN_CLIENT_INTERNAL_H

#include <cachenode/client.h>

/* From transport/cn_transport.h; only pointers are passed here. */
struct cn_transport_ops;
struct cn_tconn;

/**
 * cn_client_open - make a client of an already connected transport
 * connection and exchange HELLO. cn_client_connect() is this after
 * ops->connect(); the engine unit tests call it with the loopback transport.
 * @ops: the transport that made @tc (its sendv/recv/close are used).
 * @tc: the connection; owned by the client from this call on, whatever the
 * result (closed by cn_client_close(), or at once on failure).
 * @opts: NULL for defaults (opts->transport is ignored here).
 * @out: receives the client, owned by the caller (cn_client_close()).
 * Returns 0, or -errno. On failure other than -ENOMEM *out is still set: to
 * a closed client that only carries the error message (cn_client_errmsg());
 * the caller closes it like any other. On -ENOMEM *out is NULL.
 */
int cn_client_open(const struct cn_transport_ops *ops, struct cn_tconn *tc,
		   const struct cn_client_opts *opts, struct cn_client **out);

#endif /* CN_CLIENT_INTERNAL_H */
