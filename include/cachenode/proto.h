/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cachenode wire protocol: frame header, opcodes, status codes, limits and
 * little-endian encoding helpers. docs/protocol.md is the prose version of
 * this file; the two must agree.
 *
 * Every message is a 32-byte header followed by payload_len payload bytes:
 *
 *   off size field
 *     0    4 magic        CN_PROTO_MAGIC ("CNKV" on the wire)
 *     4    1 version      CN_PROTO_VERSION
 *     5    1 opcode       enum cn_op
 *     6    2 flags        CN_F_*
 *     8    8 req_id       chosen by the requester, echoed in the reply
 *    16    4 payload_len  bytes after the header
 *    20    4 status       enum cn_status in replies, 0 in requests
 *    24    4 reserved     0
 *    28    4 hdr_crc      CRC32C (Castagnoli) of bytes 0..27
 *
 * This header is self-contained (no DPDK, no other project header) so that
 * engines can use it with the client library alone.
 */
#ifndef CACHENODE_PROTO_H
#define CACHENODE_PROTO_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CN_PROTO_MAGIC	 0x564b4e43u /* bytes 'C' 'N' 'K' 'V' */
#define CN_PROTO_VERSION 1
#define CN_PROTO_HDR_LEN 32
#define CN_KEY_LEN	 32

/* Limits. A node may announce smaller values in its HELLO reply. */
#define CN_PROTO_MAX_KEYS	1024u		  /* keys in one request */
#define CN_PROTO_MAX_CHUNK	(1024u << 20)	  /* hard cap on one chunk: 1 GiB */
#define CN_PROTO_MAX_FRAME	(2048u << 20)	  /* hard cap on payload_len: 2 GiB */
#define CN_PROTO_MAX_PING	4096u		  /* PING payload */
#define CN_PROTO_MAX_NAME	64u		  /* client / node name in HELLO */
#define CN_PROTO_MAX_ERRMSG	256u		  /* error message payload */
#define CN_PROTO_BATCH_HDR	8u		  /* u32 count + u32 reserved */
#define CN_PROTO_STORE_DESC	40u		  /* key[32] + u32 len + u32 reserved */
#define CN_PROTO_RETR_DESC	8u		  /* i32 status + u32 len */
#define CN_PROTO_RDMA_DESC	48u		  /* key[32] + u32 len/cap + u32 rkey + u64 addr */

/* Flags. */
#define CN_F_RESPONSE 0x0001u /* set on every reply */
#define CN_F_CLOSE    0x0002u /* reply: the node closes the connection after this frame */
#define CN_F_RDMA     0x0004u /* STORE/RETRIEVE request: payloads move by RDMA (verbs only) */
#define CN_F_GPU      0x0008u /* STORE/RETRIEVE request: payloads are in a GPU region */

#define CN_PROTO_GPU_REG_LEN	96u /* GPU_REGISTER: u32 dev, u32 0, u64 size, handle[64], bus_id[16] */
#define CN_PROTO_GPU_HANDLE_LEN 64u /* a CUDA IPC memory handle, opaque */

/*
 * A HELLO client name starting with this marks the connection as another
 * node's (its L2 tier): it is served from L1 only (no L2 fetch, lookup or
 * write-through), so requests between nodes never recurse.
 */
#define CN_PROTO_PEER_PREFIX "cn-peer:"

struct cn_key {
	uint8_t b[CN_KEY_LEN];
};

/*
 * Opcodes. Payloads (all integers little-endian):
 *
 * HELLO    req: u16 ver_min, u16 ver_max, u16 name_len, u16 0, name
 *          rep: u16 version, u16 node_id_len, u32 max_keys, u32 max_chunk,
 *               u32 0, u64 max_frame, u64 l1_capacity, node_id
 * PING     req: up to CN_PROTO_MAX_PING bytes; rep: the same bytes
 * LOOKUP   req: u32 n, u32 0, key[n]
 *          rep: u32 n, u32 prefix, u8 tier[n] (enum cn_tier; 0 from the
 *               first absent key on: prefix semantics)
 * STORE    req: u32 n, u32 0, n x {key[32], u32 len, u32 0}, then the n
 *               payloads back to back in the same order
 *          rep: u32 n, u32 0, i32 status[n]
 * RETRIEVE req: u32 n, u32 0, key[n]
 *          rep: u32 n, u32 0, n x {i32 status, u32 len}, then the payloads
 *               of the keys with status CN_OK, back to back, in order
 * STORE with CN_F_RDMA (verbs transport only):
 *          req: u32 n, u32 0, n x {key[32], u32 len, u32 rkey, u64 addr};
 *               no payload follows: the node RDMA-READs each chunk from
 *               [addr, addr + len) of the requester's memory (rkey)
 *          rep: as STORE
 * RETRIEVE with CN_F_RDMA (verbs transport only):
 *          req: u32 n, u32 0, n x {key[32], u32 cap, u32 rkey, u64 addr}
 *          rep: u32 n, u32 0, n x {i32 status, u32 len}, no payload: each
 *               CN_OK chunk was RDMA-written to [addr, addr + len) before
 *               the reply was sent; a chunk larger than cap gets
 *               CN_E_TOOBIG with its len, and nothing is written
 * STORE / RETRIEVE with CN_F_GPU (any transport; the node needs a GPU):
 *          req: u32 n, u32 0, n x {key[32], u32 len/cap, u32 region, u64 off}:
 *               the chunk lives at [off, off + len) of a region the same
 *               connection registered (GPU_REGISTER); the node copies it
 *               device -> L1 (STORE) or L1 -> device (RETRIEVE) on a copy
 *               engine and replies when the copies completed
 *          rep: as STORE / as RETRIEVE with CN_F_RDMA (no payload)
 *          a node without a usable GPU answers CN_E_NODEV with the reason;
 *          an unknown region or a range outside it is CN_E_INVAL for the
 *          whole request, nothing stored or written
 * GPU_REGISTER req: u32 dev, u32 0, u64 size, handle[64] (cudaIpcMemHandle_t
 *               of an allocation on device dev, size bytes from its base),
 *               char bus_id[16] (the device's PCI bus id, NUL-padded; when
 *               set it names the device, whatever the node's ordinals)
 *          rep: u32 region (> 0), u32 0; the region belongs to the connection
 *               and is released when it closes (or by GPU_UNREGISTER)
 * GPU_UNREGISTER req: u32 region, u32 0; rep: empty
 * DELETE   req: u32 n, u32 0, key[n]
 *          rep: u32 n, u32 0, i32 status[n]
 * PREFETCH req: u32 n, u32 0, key[n]
 *          rep: u32 n, u32 0, i32 status[n]: CN_OK when the key is in this
 *               node's L1 now (it was, or it was fetched from its owner
 *               peer for the request), CN_E_NOENT when no tier has it
 * STATUS   req: empty; rep: a JSON document (UTF-8, not NUL-terminated)
 * ERROR    rep only, then the node closes the connection (CN_F_CLOSE set):
 *          sent with the request's req_id (0 if the magic was wrong) when the
 *          header is unusable (magic, checksum, version, reserved bits, a
 *          reply flag) or a payload length is over what that opcode may carry
 *          (frame cap, PING > 4096, STATUS with a payload, HELLO name, a key
 *          batch longer than 8 + 32 * max_keys): the node will not read it.
 *
 * A request-level error (a well-framed request that is wrong: unknown opcode,
 * key count 0 or not matching the frame, zero-length or oversize chunk,
 * duplicate keys, lengths not adding up) is a reply with the request's
 * opcode, status != CN_OK and the message as payload; the rest of the
 * request's payload is skipped and the connection stays open.
 */
enum cn_op {
	CN_OP_HELLO = 1,
	CN_OP_PING = 2,
	CN_OP_LOOKUP = 3,
	CN_OP_STORE = 4,
	CN_OP_RETRIEVE = 5,
	CN_OP_DELETE = 6,
	CN_OP_STATUS = 7,
	CN_OP_PREFETCH = 8,
	CN_OP_GPU_REGISTER = 9,
	CN_OP_GPU_UNREGISTER = 10,
	CN_OP_ERROR = 127,
};

/* Where a key lives, in LOOKUP replies. */
enum cn_tier {
	CN_TIER_NONE = 0,
	CN_TIER_L1 = 1,
	CN_TIER_L2 = 2,
	CN_TIER_GPU = 3,
};

/* Wire status codes: stable numbers, independent of the host's errno values. */
#define CN_STATUS_TABLE(X)                                                                   \
	X(CN_OK, 0, 0, "ok")                                                                 \
	X(CN_E_INVAL, 1, EINVAL, "invalid request")                                          \
	X(CN_E_NOENT, 2, ENOENT, "no such key")                                              \
	X(CN_E_NOSPC, 3, ENOSPC, "no space in the cache (pool full or all chunks pinned)")  \
	X(CN_E_TOOBIG, 4, E2BIG, "over a protocol or node limit")                            \
	X(CN_E_PROTO, 5, EPROTO, "malformed frame")                                          \
	X(CN_E_DUP, 6, EALREADY, "duplicate key in batch")                                   \
	X(CN_E_EXIST, 7, EEXIST, "key already stored (payload ignored, stored copy kept)")  \
	X(CN_E_VERSION, 8, EPROTONOSUPPORT, "protocol version not supported")                \
	X(CN_E_OPCODE, 9, EOPNOTSUPP, "unknown opcode")                                      \
	X(CN_E_BUSY, 10, EBUSY, "node busy")                                                 \
	X(CN_E_SHUTDOWN, 11, ESHUTDOWN, "node shutting down")                                \
	X(CN_E_INTERNAL, 12, EIO, "internal error")                                          \
	X(CN_E_NODEV, 13, ENODEV, "no usable GPU on the node")

enum cn_status {
#define X(name, val, err, msg) name = val,
	CN_STATUS_TABLE(X)
#undef X
};

/* Decoded header (host order). */
struct cn_proto_hdr {
	uint32_t magic;
	uint8_t version;
	uint8_t opcode;
	uint16_t flags;
	uint64_t req_id;
	uint32_t payload_len;
	int32_t status;
	uint32_t reserved;
	uint32_t hdr_crc;
};

/* Little-endian field access on unaligned byte buffers. */
static inline void cn_put_le16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static inline void cn_put_le32(uint8_t *p, uint32_t v)
{
	cn_put_le16(p, (uint16_t)v);
	cn_put_le16(p + 2, (uint16_t)(v >> 16));
}

static inline void cn_put_le64(uint8_t *p, uint64_t v)
{
	cn_put_le32(p, (uint32_t)v);
	cn_put_le32(p + 4, (uint32_t)(v >> 32));
}

static inline uint16_t cn_get_le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

static inline uint32_t cn_get_le32(const uint8_t *p)
{
	return (uint32_t)cn_get_le16(p) | ((uint32_t)cn_get_le16(p + 2) << 16);
}

static inline uint64_t cn_get_le64(const uint8_t *p)
{
	return (uint64_t)cn_get_le32(p) | ((uint64_t)cn_get_le32(p + 4) << 32);
}

/**
 * cn_crc32c - CRC32C (Castagnoli, reflected, init/xorout 0xffffffff).
 * @crc: 0 for a new computation, or a previous result to continue.
 * Returns the checksum. cn_crc32c(0, "123456789", 9) == 0xe3069283.
 */
uint32_t cn_crc32c(uint32_t crc, const void *buf, size_t len);

/**
 * cn_proto_hdr_encode - write @h to @out, computing hdr_crc (h->hdr_crc is
 * ignored). magic/version are taken from @h as given.
 */
void cn_proto_hdr_encode(const struct cn_proto_hdr *h, uint8_t out[CN_PROTO_HDR_LEN]);

/**
 * cn_proto_hdr_init - fill @h for a new frame of this protocol version.
 */
void cn_proto_hdr_init(struct cn_proto_hdr *h, uint8_t opcode, uint16_t flags, uint64_t req_id,
		       uint32_t payload_len, int32_t status);

/**
 * cn_proto_hdr_decode - parse and check a header.
 * Returns CN_OK, CN_E_PROTO (bad magic, bad checksum, non-zero reserved),
 * CN_E_VERSION (good header of another version) or CN_E_TOOBIG
 * (payload_len over CN_PROTO_MAX_FRAME). @h is filled in every case where the
 * magic matched, so the caller can echo req_id.
 */
enum cn_status cn_proto_hdr_decode(const uint8_t in[CN_PROTO_HDR_LEN], struct cn_proto_hdr *h);

/** cn_status_str - a short English description; never NULL. */
const char *cn_status_str(int32_t status);

/** cn_status_name - "CN_E_NOSPC" etc.; "CN_E_UNKNOWN" for other values. */
const char *cn_status_name(int32_t status);

/** cn_status_to_errno - the positive errno for a status (EIO for unknown ones). */
int cn_status_to_errno(int32_t status);

/** cn_status_from_errno - the status for a positive or negative errno. */
enum cn_status cn_status_from_errno(int err);

/** cn_op_name - "store" etc.; "unknown" for other values. */
const char *cn_op_name(uint8_t op);

#ifdef __cplusplus
}
#endif

#endif /* CACHENODE_PROTO_H */
