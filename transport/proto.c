/* SPDX-License-Identifier: Apache-2.0 */
/* Wire protocol helpers: header encode/decode, CRC32C, status and opcode names. */
#include <errno.h>
#include <pthread.h>

#include <cachenode/proto.h>

/*
 * CRC32C, slicing-by-8 over a table built at first use. The header checksum
 * covers 28 bytes per frame, so a portable table version is plenty; it keeps
 * the client library free of CPU-feature dispatch.
 */
static uint32_t crc_tab[8][256];

static void crc32c_init_once(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = (c >> 1) ^ (0x82f63b78u & (0u - (c & 1u)));
		crc_tab[0][i] = c;
	}
	for (uint32_t i = 0; i < 256; i++)
		for (int t = 1; t < 8; t++)
			crc_tab[t][i] = (crc_tab[t - 1][i] >> 8) ^ crc_tab[0][crc_tab[t - 1][i] & 0xff];
}

uint32_t cn_crc32c(uint32_t crc, const void *buf, size_t len)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	const uint8_t *p = buf;

	pthread_once(&once, crc32c_init_once);
	crc = ~crc;
	while (len >= 8) {
		uint32_t lo = crc ^ cn_get_le32(p);
		uint32_t hi = cn_get_le32(p + 4);
		crc = crc_tab[7][lo & 0xff] ^ crc_tab[6][(lo >> 8) & 0xff] ^
		      crc_tab[5][(lo >> 16) & 0xff] ^ crc_tab[4][lo >> 24] ^
		      crc_tab[3][hi & 0xff] ^ crc_tab[2][(hi >> 8) & 0xff] ^
		      crc_tab[1][(hi >> 16) & 0xff] ^ crc_tab[0][hi >> 24];
		p += 8;
		len -= 8;
	}
	while (len--)
		crc = (crc >> 8) ^ crc_tab[0][(crc ^ *p++) & 0xff];
	return ~crc;
}

void cn_proto_hdr_init(struct cn_proto_hdr *h, uint8_t opcode, uint16_t flags, uint64_t req_id,
		       uint32_t payload_len, int32_t status)
{
	*h = (struct cn_proto_hdr){
		.magic = CN_PROTO_MAGIC,
		.version = CN_PROTO_VERSION,
		.opcode = opcode,
		.flags = flags,
		.req_id = req_id,
		.payload_len = payload_len,
		.status = status,
	};
}

void cn_proto_hdr_encode(const struct cn_proto_hdr *h, uint8_t out[CN_PROTO_HDR_LEN])
{
	cn_put_le32(out + 0, h->magic);
	out[4] = h->version;
	out[5] = h->opcode;
	cn_put_le16(out + 6, h->flags);
	cn_put_le64(out + 8, h->req_id);
	cn_put_le32(out + 16, h->payload_len);
	cn_put_le32(out + 20, (uint32_t)h->status);
	cn_put_le32(out + 24, h->reserved);
	cn_put_le32(out + 28, cn_crc32c(0, out, 28));
}

enum cn_status cn_proto_hdr_decode(const uint8_t in[CN_PROTO_HDR_LEN], struct cn_proto_hdr *h)
{
	h->magic = cn_get_le32(in + 0);
	h->version = in[4];
	h->opcode = in[5];
	h->flags = cn_get_le16(in + 6);
	h->req_id = cn_get_le64(in + 8);
	h->payload_len = cn_get_le32(in + 16);
	h->status = (int32_t)cn_get_le32(in + 20);
	h->reserved = cn_get_le32(in + 24);
	h->hdr_crc = cn_get_le32(in + 28);

	if (h->magic != CN_PROTO_MAGIC)
		return CN_E_PROTO;
	if (h->hdr_crc != cn_crc32c(0, in, 28))
		return CN_E_PROTO;
	if (h->version != CN_PROTO_VERSION)
		return CN_E_VERSION;
	if (h->reserved != 0)
		return CN_E_PROTO;
	if (h->payload_len > CN_PROTO_MAX_FRAME)
		return CN_E_TOOBIG;
	return CN_OK;
}

const char *cn_status_str(int32_t status)
{
	switch (status) {
#define X(name, val, err, msg)                                                                     \
	case val:                                                                                  \
		return msg;
		CN_STATUS_TABLE(X)
#undef X
	}
	return "unknown status";
}

const char *cn_status_name(int32_t status)
{
	switch (status) {
#define X(name, val, err, msg)                                                                     \
	case val:                                                                                  \
		return #name;
		CN_STATUS_TABLE(X)
#undef X
	}
	return "CN_E_UNKNOWN";
}

int cn_status_to_errno(int32_t status)
{
	switch (status) {
#define X(name, val, err, msg)                                                                     \
	case val:                                                                                  \
		return err;
		CN_STATUS_TABLE(X)
#undef X
	}
	return EIO;
}

enum cn_status cn_status_from_errno(int err)
{
	if (err < 0)
		err = -err;
	switch (err) {
	case 0:
		return CN_OK;
	case EINVAL:
		return CN_E_INVAL;
	case ENOENT:
		return CN_E_NOENT;
	case ENOSPC:
	case ENOMEM:
		return CN_E_NOSPC;
	case E2BIG:
	case EMSGSIZE:
		return CN_E_TOOBIG;
	case EPROTO:
	case EBADMSG:
		return CN_E_PROTO;
	case EALREADY:
		return CN_E_DUP;
	case EEXIST:
		return CN_E_EXIST;
	case EPROTONOSUPPORT:
		return CN_E_VERSION;
	case ENODEV:
		return CN_E_NODEV;
	case EOPNOTSUPP:
		return CN_E_OPCODE;
	case EBUSY:
	case EAGAIN:
		return CN_E_BUSY;
	case ESHUTDOWN:
		return CN_E_SHUTDOWN;
	default:
		return CN_E_INTERNAL;
	}
}

const char *cn_op_name(uint8_t op)
{
	switch (op) {
	case CN_OP_HELLO:
		return "hello";
	case CN_OP_PING:
		return "ping";
	case CN_OP_LOOKUP:
		return "lookup";
	case CN_OP_STORE:
		return "store";
	case CN_OP_RETRIEVE:
		return "retrieve";
	case CN_OP_DELETE:
		return "delete";
	case CN_OP_STATUS:
		return "status";
	case CN_OP_PREFETCH:
		return "prefetch";
	case CN_OP_GPU_REGISTER:
		return "gpu_register";
	case CN_OP_GPU_UNREGISTER:
		return "gpu_unregister";
	case CN_OP_ERROR:
		return "error";
	}
	return "unknown";
}
