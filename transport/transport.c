/* SPDX-License-Identifier: Apache-2.0 */
/* Transport registry, address parsing and the transport metric table. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <stdio.h>

#include "cn_transport.h"
#ifdef CN_HAVE_VERBS
#include "cn_verbs.h"
#endif

const struct cn_metric_desc cn_transport_metric_desc[] = {CN_TRANSPORT_METRICS(CN_METRIC_DESC)};
const unsigned cn_transport_metric_count = 0 CN_TRANSPORT_METRICS(CN_METRIC_COUNT);
const struct cn_metric_desc cn_verbs_metric_desc[] = {CN_VERBS_METRICS(CN_METRIC_DESC)};
const unsigned cn_verbs_metric_count = 0 CN_VERBS_METRICS(CN_METRIC_COUNT);

const struct cn_transport_ops *cn_transport_find(const char *name)
{
	static const struct cn_transport_ops *const all[] = {
		&cn_tcp_ops, &cn_loopback_ops,
#ifdef CN_HAVE_VERBS
		&cn_verbs_ops,
#endif
	};

	if (name == NULL)
		return &cn_tcp_ops;
	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
		if (strcmp(all[i]->name, name) == 0)
			return all[i];
	return NULL;
}

int cn_parse_hostport(const char *addr, char *host, size_t hostlen, uint16_t *port)
{
	const char *colon, *h = addr;
	size_t hl;
	char *end;
	unsigned long p;

	if (addr == NULL || *addr == '\0')
		return -EINVAL;
	if (*addr == '[') {
		const char *rb = strchr(addr, ']');
		if (rb == NULL || rb[1] != ':')
			return -EINVAL;
		h = addr + 1;
		hl = (size_t)(rb - h);
		colon = rb + 1;
	} else {
		colon = strrchr(addr, ':');
		if (colon == NULL || strchr(addr, ':') != colon)
			return -EINVAL;
		hl = (size_t)(colon - addr);
	}
	if (hl == 0 || hl >= hostlen)
		return -EINVAL;
	errno = 0;
	p = strtoul(colon + 1, &end, 10);
	if (colon[1] == '\0' || *end != '\0' || errno != 0 || p > 65535)
		return -EINVAL;
	memcpy(host, h, hl);
	host[hl] = '\0';
	*port = (uint16_t)p;
	return 0;
}

const struct cn_transport_ops *cn_transport_pick(const char *choice, const char *rdma_dev,
						 char *why, size_t whylen)
{
	char reason[200] = "";

	if (choice == NULL)
		choice = "auto";
	if (why != NULL && whylen > 0)
		why[0] = '\0';
	if (strcmp(choice, "tcp") == 0)
		return &cn_tcp_ops;
	if (strcmp(choice, "verbs") != 0 && strcmp(choice, "auto") != 0) {
		if (why != NULL)
			snprintf(why, whylen, "unknown transport \"%s\" (auto, tcp or verbs)", choice);
		return NULL;
	}
#ifdef CN_HAVE_VERBS
	if (cn_verbs_available(rdma_dev, reason, sizeof(reason)) == 0)
		return &cn_verbs_ops;
#else
	(void)rdma_dev;
	snprintf(reason, sizeof(reason), "this build has no RDMA support (libibverbs/librdmacm)");
#endif
	if (why != NULL)
		snprintf(why, whylen, "%s", reason);
	return strcmp(choice, "auto") == 0 ? &cn_tcp_ops : NULL;
}
