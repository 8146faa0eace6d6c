/* SPDX-License-Identifier: Apache-2.0 */
/* Transport registry, address parsing and the transport metric table. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cn_transport.h"

const struct cn_metric_desc cn_transport_metric_desc[] = {CN_TRANSPORT_METRICS(CN_METRIC_DESC)};
const unsigned cn_transport_metric_count = 0 CN_TRANSPORT_METRICS(CN_METRIC_COUNT);

const struct cn_transport_ops *cn_transport_find(const char *name)
{
	static const struct cn_transport_ops *const all[] = {&cn_tcp_ops, &cn_loopback_ops};

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
