/* SPDX-License-Identifier: Apache-2.0 */
/* The registry's data format: URL, keys, the record codec, the liveness rule. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cn_reg_record.h"

const struct cn_reg_field_desc cn_reg_field_desc[] = {
#define X(n, t, sz, req, h)                                                                        \
	{#n, CN_REG_T_##t, offsetof(struct cn_reg_record, n),                                      \
	 sizeof(((struct cn_reg_record *)0)->n), req, h},
	CN_REG_FIELDS(X)
#undef X
};

const unsigned cn_reg_field_count = sizeof(cn_reg_field_desc) / sizeof(cn_reg_field_desc[0]);

static int why_fail(char *why, size_t whylen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int why_fail(char *why, size_t whylen, const char *fmt, ...)
{
	va_list ap;

	if (why != NULL && whylen > 0) {
		va_start(ap, fmt);
		vsnprintf(why, whylen, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

bool cn_reg_name_valid(const char *s)
{
	size_t n = 0;

	if (s == NULL)
		return false;
	for (; s[n]; n++)
		if (!isalnum((unsigned char)s[n]) && s[n] != '-' && s[n] != '_' && s[n] != '.')
			return false;
	return n >= 1 && n <= CN_REG_NAME_MAX;
}

int cn_reg_key_node(char *out, size_t len, const char *cluster, const char *node_id)
{
	return snprintf(out, len, "cachenode:%s:node:%s", cluster, node_id);
}

int cn_reg_key_nodes(char *out, size_t len, const char *cluster)
{
	return snprintf(out, len, "cachenode:%s:nodes", cluster);
}

int cn_reg_key_events(char *out, size_t len, const char *cluster)
{
	return snprintf(out, len, "cachenode:%s:events", cluster);
}

/* ---- URL ---- */

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = tolower(c);
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* [s, s + n) percent-decoded into @out (size @len); -EINVAL for a bad escape or overflow. */
static int pct_decode(const char *s, size_t n, char *out, size_t len)
{
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		int c = (unsigned char)s[i];

		if (c == '%') {
			if (i + 2 >= n || hexval(s[i + 1]) < 0 || hexval(s[i + 2]) < 0)
				return -EINVAL;
			c = hexval(s[i + 1]) * 16 + hexval(s[i + 2]);
			i += 2;
			if (c == 0)
				return -EINVAL;
		}
		if (o + 1 >= len)
			return -EINVAL;
		out[o++] = (char)c;
	}
	out[o] = '\0';
	return 0;
}

int cn_reg_url_parse(const char *s, struct cn_reg_url *u, char *why, size_t whylen)
{
	const char *p, *at, *hp, *hend, *slash, *colon;
	size_t hl;

	memset(u, 0, sizeof(*u));
	u->port = 6379;
	if (s == NULL || strncmp(s, "redis://", 8) != 0)
		return why_fail(why, whylen, "expected redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]");
	p = s + 8;
	slash = strchr(p, '/');
	at = memrchr(p, '@', slash ? (size_t)(slash - p) : strlen(p));
	if (at != NULL) {
		colon = memchr(p, ':', (size_t)(at - p));
		if (colon == NULL)
			return why_fail(why, whylen, "credentials must be :PASSWORD or USER:PASSWORD");
		if (pct_decode(p, (size_t)(colon - p), u->user, sizeof(u->user)) < 0 ||
		    pct_decode(colon + 1, (size_t)(at - colon - 1), u->password,
			       sizeof(u->password)) < 0)
			return why_fail(why, whylen, "bad user or password (too long, or a bad %%-escape)");
		if (u->password[0] == '\0')
			return why_fail(why, whylen, "empty password");
		p = at + 1;
	}
	hp = p;
	hl = slash ? (size_t)(slash - hp) : strlen(hp);
	if (hl == 0)
		return why_fail(why, whylen, "no host");
	if (hp[0] == '[') {
		hend = memchr(hp, ']', hl);
		if (hend == NULL || hend == hp + 1 || (size_t)(hend - hp - 1) >= sizeof(u->host))
			return why_fail(why, whylen, "bad [IPv6] host");
		memcpy(u->host, hp + 1, (size_t)(hend - hp - 1));
		hend++;
	} else {
		hend = memchr(hp, ':', hl);
		if (hend == NULL)
			hend = hp + hl;
		if (hend == hp || (size_t)(hend - hp) >= sizeof(u->host))
			return why_fail(why, whylen, "bad host");
		memcpy(u->host, hp, (size_t)(hend - hp));
	}
	for (const char *c = u->host; *c; c++)
		if (!isalnum((unsigned char)*c) && !strchr("-._:", *c))
			return why_fail(why, whylen, "bad character in host '%s'", u->host);
	if (hend < hp + hl) {
		char *end;
		unsigned long port;

		if (*hend != ':' || !isdigit((unsigned char)hend[1]))
			return why_fail(why, whylen, "bad port");
		port = strtoul(hend + 1, &end, 10);
		if (end != hp + hl || port == 0 || port > 65535)
			return why_fail(why, whylen, "bad port (1..65535)");
		u->port = (uint16_t)port;
	}
	if (slash != NULL && slash[1] != '\0') {
		char *end;
		unsigned long db;

		if (!isdigit((unsigned char)slash[1]))
			return why_fail(why, whylen, "bad db number");
		db = strtoul(slash + 1, &end, 10);
		if (*end != '\0' || db > 65535)
			return why_fail(why, whylen, "bad db number (0..65535)");
		u->db = (unsigned)db;
	}
	snprintf(u->redacted, sizeof(u->redacted), "redis://%s%s%s:%u/%u",
		 strchr(u->host, ':') ? "[" : "", u->host, strchr(u->host, ':') ? "]" : "",
		 u->port, u->db);
	return 0;
}

/* ---- record ---- */

static const struct cn_reg_field_desc *find_field(const char *name)
{
	for (unsigned i = 0; i < cn_reg_field_count; i++)
		if (strcmp(cn_reg_field_desc[i].name, name) == 0)
			return &cn_reg_field_desc[i];
	return NULL;
}

static bool printable(const char *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)v[i] < 0x20 || (unsigned char)v[i] >= 0x7f)
			return false;
	return true;
}

/* One value into its field; -EINVAL with the reason. */
static int set_field(struct cn_reg_record *r, const struct cn_reg_field_desc *d, const char *v,
		     size_t n, char *why, size_t whylen)
{
	char *dst = (char *)r + d->off, num[64], *end;

	if (n > CN_REG_MAX_VALUE || !printable(v, n))
		return why_fail(why, whylen, "field %s: not printable text of at most %d bytes",
				d->name, CN_REG_MAX_VALUE);
	switch (d->type) {
	case CN_REG_T_STR:
		if (n >= d->size)
			return why_fail(why, whylen, "field %s: longer than %zu bytes", d->name,
					d->size - 1);
		memcpy(dst, v, n);
		dst[n] = '\0';
		return 0;
	case CN_REG_T_U64: {
		unsigned long long x;

		if (n == 0 || n >= 21 || strspn(v, "0123456789") < n)
			return why_fail(why, whylen, "field %s: not a number", d->name);
		memcpy(num, v, n);
		num[n] = '\0';
		errno = 0;
		x = strtoull(num, &end, 10);
		if (errno != 0 || *end != '\0')
			return why_fail(why, whylen, "field %s: not a number", d->name);
		memcpy(dst, &(uint64_t){x}, sizeof(uint64_t));
		return 0;
	}
	case CN_REG_T_RATE: {
		double x;

		if (n == 0 || n >= sizeof(num) || strspn(v, "0123456789.eE+-") < n)
			return why_fail(why, whylen, "field %s: not a number from 0 to 1", d->name);
		memcpy(num, v, n);
		num[n] = '\0';
		x = strtod(num, &end);
		if (*end != '\0' || !isfinite(x) || x < 0 || x > 1)
			return why_fail(why, whylen, "field %s: not a number from 0 to 1", d->name);
		memcpy(dst, &x, sizeof(x));
		return 0;
	}
	case CN_REG_T_HEALTH:
		if (n == 7 && memcmp(v, "healthy", 7) == 0)
			*(bool *)dst = true;
		else if (n == 9 && memcmp(v, "unhealthy", 9) == 0)
			*(bool *)dst = false;
		else
			return why_fail(why, whylen, "field %s: not healthy or unhealthy", d->name);
		return 0;
	}
	return why_fail(why, whylen, "field %s: unknown type", d->name);
}

/* The address: HOST:PORT or [V6]:PORT with a port 1..65535. */
static bool address_valid(const char *a)
{
	const char *colon = strrchr(a, ':');
	char *end;
	unsigned long port;

	if (colon == NULL || colon == a || !isdigit((unsigned char)colon[1]))
		return false;
	port = strtoul(colon + 1, &end, 10);
	if (*end != '\0' || port == 0 || port > 65535)
		return false;
	if (a[0] == '[')
		return colon[-1] == ']' && colon - a > 2;
	return memchr(a, ':', (size_t)(colon - a)) == NULL; /* one colon outside brackets */
}

int cn_reg_record_parse(const char *const *names, const char *const *vals, const size_t *lens,
			size_t n, const char *key_cluster, const char *key_id,
			struct cn_reg_record *out, char *why, size_t whylen)
{
	bool seen[CN_REG_MAX_FIELDS] = {false};
	int r = 0;

	memset(out, 0, sizeof(*out));
	if (n == 0)
		return why_fail(why, whylen, "no record");
	if (n > CN_REG_MAX_FIELDS)
		return why_fail(why, whylen, "%zu fields (at most %d)", n, CN_REG_MAX_FIELDS);
	for (size_t i = 0; i < n; i++) {
		const struct cn_reg_field_desc *d = find_field(names[i]);
		size_t vl = lens ? lens[i] : strlen(vals[i]);

		if (d == NULL)
			continue; /* a newer writer's field */
		seen[d - cn_reg_field_desc] = true;
		if (r == 0)
			r = set_field(out, d, vals[i], vl, why, whylen);
	}
	for (unsigned i = 0; r == 0 && i < cn_reg_field_count; i++)
		if (cn_reg_field_desc[i].required && !seen[i])
			r = why_fail(why, whylen, "no field %s", cn_reg_field_desc[i].name);
	if (r == 0 && !cn_reg_name_valid(out->node_id))
		r = why_fail(why, whylen, "field node_id: not a node id");
	if (r == 0 && key_id != NULL && strcmp(out->node_id, key_id) != 0)
		r = why_fail(why, whylen, "node_id '%s' under the key of '%s'", out->node_id, key_id);
	if (r == 0 && key_cluster != NULL && strcmp(out->cluster, key_cluster) != 0)
		r = why_fail(why, whylen, "cluster '%s' under a key of cluster '%s'", out->cluster,
			     key_cluster);
	if (r == 0 && !address_valid(out->address))
		r = why_fail(why, whylen, "field address: not HOST:PORT");
	if (r == 0 && strcmp(out->transport, "tcp") != 0 && strcmp(out->transport, "verbs") != 0)
		r = why_fail(why, whylen, "field transport: not tcp or verbs");
	if (r == 0 && (out->heartbeat_ms == 0 || out->heartbeat_ms > 3600000))
		r = why_fail(why, whylen, "field heartbeat_ms: not 1..3600000");
	return r;
}

int cn_reg_record_format(const struct cn_reg_record *r, const char **names, const char **vals,
			 char *buf, size_t buflen)
{
	size_t used = 0;

	for (unsigned i = 0; i < cn_reg_field_count; i++) {
		const struct cn_reg_field_desc *d = &cn_reg_field_desc[i];
		const char *src = (const char *)r + d->off;
		char *dst = buf + used;
		size_t room = buflen - used;
		int n;

		switch (d->type) {
		case CN_REG_T_STR:
			n = snprintf(dst, room, "%s", src);
			break;
		case CN_REG_T_U64:
			n = snprintf(dst, room, "%llu", (unsigned long long)*(const uint64_t *)src);
			break;
		case CN_REG_T_RATE:
			n = snprintf(dst, room, "%.4f", *(const double *)src);
			break;
		default:
			n = snprintf(dst, room, "%s", *(const bool *)src ? "healthy" : "unhealthy");
			break;
		}
		if (n < 0 || (size_t)n >= room)
			return -ENOSPC;
		names[i] = d->name;
		vals[i] = dst;
		used += (size_t)n + 1;
	}
	return (int)cn_reg_field_count;
}

uint64_t cn_reg_record_age_ms(const struct cn_reg_record *r, uint64_t now_ms)
{
	return now_ms > r->updated_at ? now_ms - r->updated_at : 0;
}

bool cn_reg_record_live(const struct cn_reg_record *r, uint64_t now_ms)
{
	return cn_reg_record_age_ms(r, now_ms) < CN_REG_TTL_BEATS * r->heartbeat_ms;
}
