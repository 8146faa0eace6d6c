/* SPDX-License-Identifier: Apache-2.0 */
/* cachenode-status --redis: the cluster as the registry sees it (tools/status_registry.c). */
#ifndef CN_STATUS_REGISTRY_H
#define CN_STATUS_REGISTRY_H

#include <stdbool.h>

struct status_reg_opts {
	const char *url;     /* redis://... */
	const char *cluster; /* cn_reg_name_valid() */
	bool json;
	bool color;
	int timeout_ms;
};

/*
 * status_registry - read every node of @o->cluster straight from Redis and
 * print it (a table, or JSON with @o->json). Returns the exit status: 0 every
 * node in the set is live and healthy, 1 a node is dead or unhealthy (or none
 * is registered), 2 a bad URL or cluster name, 3 Redis unreachable or
 * refusing.
 */
int status_registry(const struct status_reg_opts *o);

#endif
