/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Keys: SHA-256 (FIPS 180-4), and the text forms of a key (64 hex digits, or
 * any other string hashed to 32 bytes).
 *
 * The hash is a plain, portable implementation: keys are hashed once per
 * request on the client, never on the data path of the node, so there is no
 * need for SHA-NI or table tricks.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cachenode/client.h>

struct sha256_ctx {
	uint32_t h[8];
	uint64_t total; /* bytes hashed so far */
	uint8_t block[64];
	size_t fill; /* bytes waiting in block[] */
};

static const uint32_t sha256_k[64] = {
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
	0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
	0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
	0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
	0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
	0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
	0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
	0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
	0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
	0xc67178f2,
};

static inline uint32_t ror32(uint32_t x, unsigned n)
{
	return (x >> n) | (x << (32 - n));
}

static inline uint32_t get_be32(const uint8_t *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static inline void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static void sha256_init(struct sha256_ctx *ctx)
{
	static const uint32_t iv[8] = {
		0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
		0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
	};

	memcpy(ctx->h, iv, sizeof(iv));
	ctx->total = 0;
	ctx->fill = 0;
}

/* FIPS 180-4 section 6.2.2: one 512-bit block. */
static void sha256_block(uint32_t h[8], const uint8_t *p)
{
	uint32_t w[64];
	uint32_t a, b, c, d, e, f, g, hh;

	for (int t = 0; t < 16; t++)
		w[t] = get_be32(p + 4 * t);
	for (int t = 16; t < 64; t++) {
		uint32_t s0 = ror32(w[t - 15], 7) ^ ror32(w[t - 15], 18) ^ (w[t - 15] >> 3);
		uint32_t s1 = ror32(w[t - 2], 17) ^ ror32(w[t - 2], 19) ^ (w[t - 2] >> 10);

		w[t] = w[t - 16] + s0 + w[t - 7] + s1;
	}

	a = h[0];
	b = h[1];
	c = h[2];
	d = h[3];
	e = h[4];
	f = h[5];
	g = h[6];
	hh = h[7];
	for (int t = 0; t < 64; t++) {
		uint32_t s1 = ror32(e, 6) ^ ror32(e, 11) ^ ror32(e, 25);
		uint32_t ch = (e & f) ^ (~e & g);
		uint32_t t1 = hh + s1 + ch + sha256_k[t] + w[t];
		uint32_t s0 = ror32(a, 2) ^ ror32(a, 13) ^ ror32(a, 22);
		uint32_t maj = (a & b) ^ (a & c) ^ (b & c);
		uint32_t t2 = s0 + maj;

		hh = g;
		g = f;
		f = e;
		e = d + t1;
		d = c;
		c = b;
		b = a;
		a = t1 + t2;
	}
	h[0] += a;
	h[1] += b;
	h[2] += c;
	h[3] += d;
	h[4] += e;
	h[5] += f;
	h[6] += g;
	h[7] += hh;
}

static void sha256_update(struct sha256_ctx *ctx, const uint8_t *p, size_t len)
{
	ctx->total += len;
	if (ctx->fill > 0) {
		size_t n = sizeof(ctx->block) - ctx->fill;

		if (n > len)
			n = len;
		memcpy(ctx->block + ctx->fill, p, n);
		ctx->fill += n;
		p += n;
		len -= n;
		if (ctx->fill < sizeof(ctx->block))
			return;
		sha256_block(ctx->h, ctx->block);
		ctx->fill = 0;
	}
	while (len >= sizeof(ctx->block)) {
		sha256_block(ctx->h, p);
		p += sizeof(ctx->block);
		len -= sizeof(ctx->block);
	}
	memcpy(ctx->block, p, len);
	ctx->fill = len;
}

/* Padding (section 5.1.1): 0x80, zeros, the message length in bits, big-endian. */
static void sha256_final(struct sha256_ctx *ctx, uint8_t out[32])
{
	uint64_t bits = ctx->total * 8;

	ctx->block[ctx->fill++] = 0x80;
	if (ctx->fill > 56) {
		memset(ctx->block + ctx->fill, 0, sizeof(ctx->block) - ctx->fill);
		sha256_block(ctx->h, ctx->block);
		ctx->fill = 0;
	}
	memset(ctx->block + ctx->fill, 0, 56 - ctx->fill);
	put_be32(ctx->block + 56, (uint32_t)(bits >> 32));
	put_be32(ctx->block + 60, (uint32_t)bits);
	sha256_block(ctx->h, ctx->block);
	for (int i = 0; i < 8; i++)
		put_be32(out + 4 * i, ctx->h[i]);
}

void cn_sha256(const void *data, size_t len, uint8_t out[32])
{
	struct sha256_ctx ctx;

	sha256_init(&ctx);
	if (len > 0)
		sha256_update(&ctx, data, len);
	sha256_final(&ctx, out);
}

static int hex_val(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

/*
 * Exactly 2 * CN_KEY_LEN hex digits (either case) are the key itself, so that
 * cn_key_format() output parses back to the same key; anything else is a name
 * and is hashed, so "my-prompt-chunk-7" is a usable key on the command line.
 */
int cn_key_parse(const char *text, struct cn_key *out)
{
	size_t len;

	if (text == NULL || out == NULL)
		return -EINVAL;
	len = strlen(text);
	if (len == 0)
		return -EINVAL;
	if (len == 2 * CN_KEY_LEN) {
		struct cn_key k;
		size_t i;

		for (i = 0; i < CN_KEY_LEN; i++) {
			int hi = hex_val(text[2 * i]);
			int lo = hex_val(text[2 * i + 1]);

			if (hi < 0 || lo < 0)
				break;
			k.b[i] = (uint8_t)(hi << 4 | lo);
		}
		if (i == CN_KEY_LEN) {
			*out = k;
			return 0;
		}
	}
	cn_sha256(text, len, out->b);
	return 0;
}

void cn_key_format(const struct cn_key *key, char out[2 * CN_KEY_LEN + 1])
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < CN_KEY_LEN; i++) {
		out[2 * i] = digits[key->b[i] >> 4];
		out[2 * i + 1] = digits[key->b[i] & 0xf];
	}
	out[2 * CN_KEY_LEN] = '\0';
}
