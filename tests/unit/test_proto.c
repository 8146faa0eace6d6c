/* SPDX-License-Identifier: Apache-2.0 */
/* Wire protocol helpers: header layout, checksum, status mapping. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <cachenode/proto.h>
#include "cn_transport.h"

static void crc32c_known_vectors(void **state)
{
	uint8_t zeros[32] = {0}, ones[32];

	memset(ones, 0xff, sizeof(ones));
	/* RFC 3720 (iSCSI) appendix B.4 test vectors, and the classic check value. */
	assert_int_equal(cn_crc32c(0, "123456789", 9), 0xe3069283);
	assert_int_equal(cn_crc32c(0, zeros, 32), 0x8a9136aa);
	assert_int_equal(cn_crc32c(0, ones, 32), 0x62a8ab43);
	/* Incremental use gives the same result. */
	assert_int_equal(cn_crc32c(cn_crc32c(0, "1234", 4), "56789", 5), 0xe3069283);
}

static void header_layout_is_little_endian(void **state)
{
	struct cn_proto_hdr h;
	uint8_t b[CN_PROTO_HDR_LEN];

	cn_proto_hdr_init(&h, CN_OP_STORE, CN_F_RESPONSE, 0x0102030405060708ull, 0x11223344,
			  -3);
	cn_proto_hdr_encode(&h, b);
	assert_memory_equal(b, "CNKV", 4);
	assert_int_equal(b[4], CN_PROTO_VERSION);
	assert_int_equal(b[5], CN_OP_STORE);
	assert_int_equal(b[6], 0x01);
	assert_int_equal(b[7], 0x00);
	assert_int_equal(b[8], 0x08);
	assert_int_equal(b[15], 0x01);
	assert_int_equal(b[16], 0x44);
	assert_int_equal(b[19], 0x11);
	assert_int_equal(cn_get_le32(b + 20), (uint32_t)-3);
	assert_int_equal(cn_get_le32(b + 24), 0);
	assert_int_equal(cn_get_le32(b + 28), cn_crc32c(0, b, 28));
}

static void header_round_trip(void **state)
{
	struct cn_proto_hdr h, d;
	uint8_t b[CN_PROTO_HDR_LEN];

	cn_proto_hdr_init(&h, CN_OP_RETRIEVE, 0, 42, 4096, 0);
	cn_proto_hdr_encode(&h, b);
	assert_int_equal(cn_proto_hdr_decode(b, &d), CN_OK);
	assert_int_equal(d.opcode, CN_OP_RETRIEVE);
	assert_int_equal(d.req_id, 42);
	assert_int_equal(d.payload_len, 4096);
	assert_int_equal(d.status, 0);
}

static void header_rejects_damage(void **state)
{
	struct cn_proto_hdr h, d;
	uint8_t b[CN_PROTO_HDR_LEN], c[CN_PROTO_HDR_LEN];

	cn_proto_hdr_init(&h, CN_OP_PING, 0, 7, 0, 0);
	cn_proto_hdr_encode(&h, b);

	/* Any single flipped bit is caught (magic or checksum). */
	for (int i = 0; i < CN_PROTO_HDR_LEN * 8; i++) {
		memcpy(c, b, sizeof(c));
		c[i / 8] ^= (uint8_t)(1u << (i % 8));
		assert_int_equal(cn_proto_hdr_decode(c, &d), CN_E_PROTO);
	}
	/* A well-formed header of another version is told apart. */
	h.version = 2;
	cn_proto_hdr_encode(&h, c);
	assert_int_equal(cn_proto_hdr_decode(c, &d), CN_E_VERSION);
	/* Over the hard frame cap. */
	cn_proto_hdr_init(&h, CN_OP_STORE, 0, 7, CN_PROTO_MAX_FRAME + 1u, 0);
	cn_proto_hdr_encode(&h, c);
	assert_int_equal(cn_proto_hdr_decode(c, &d), CN_E_TOOBIG);
	/* Reserved must be zero. */
	cn_proto_hdr_init(&h, CN_OP_PING, 0, 7, 0, 0);
	h.reserved = 1;
	cn_proto_hdr_encode(&h, c);
	assert_int_equal(cn_proto_hdr_decode(c, &d), CN_E_PROTO);
}

static void status_errno_mapping(void **state)
{
	assert_int_equal(cn_status_to_errno(CN_E_NOSPC), ENOSPC);
	assert_int_equal(cn_status_to_errno(CN_E_NOENT), ENOENT);
	assert_int_equal(cn_status_to_errno(12345), EIO);
	assert_int_equal(cn_status_from_errno(-ENOSPC), CN_E_NOSPC);
	assert_int_equal(cn_status_from_errno(EEXIST), CN_E_EXIST);
	assert_int_equal(cn_status_from_errno(0), CN_OK);
	assert_int_equal(cn_status_from_errno(-ENOTTY), CN_E_INTERNAL);
	/* Every status maps to an errno that maps back to it. */
#define X(name, val, err, msg) assert_int_equal(cn_status_from_errno(cn_status_to_errno(val)), val);
	CN_STATUS_TABLE(X)
#undef X
	assert_string_equal(cn_status_name(CN_E_DUP), "CN_E_DUP");
	assert_string_equal(cn_status_name(999), "CN_E_UNKNOWN");
	assert_string_equal(cn_op_name(CN_OP_LOOKUP), "lookup");
	assert_string_equal(cn_op_name(200), "unknown");
}

static void hostport_parsing(void **state)
{
	char host[64];
	uint16_t port;

	assert_int_equal(cn_parse_hostport("127.0.0.1:7700", host, sizeof(host), &port), 0);
	assert_string_equal(host, "127.0.0.1");
	assert_int_equal(port, 7700);
	assert_int_equal(cn_parse_hostport("[::1]:0", host, sizeof(host), &port), 0);
	assert_string_equal(host, "::1");
	assert_int_equal(port, 0);
	assert_int_equal(cn_parse_hostport("localhost", host, sizeof(host), &port), -EINVAL);
	assert_int_equal(cn_parse_hostport(":7700", host, sizeof(host), &port), -EINVAL);
	assert_int_equal(cn_parse_hostport("h:70000", host, sizeof(host), &port), -EINVAL);
	assert_int_equal(cn_parse_hostport("h:7x", host, sizeof(host), &port), -EINVAL);
	assert_int_equal(cn_parse_hostport("::1:80", host, sizeof(host), &port), -EINVAL);
	assert_non_null(cn_transport_find("tcp"));
	assert_non_null(cn_transport_find("loopback"));
	assert_null(cn_transport_find("carrier-pigeon"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(crc32c_known_vectors),
		cmocka_unit_test(header_layout_is_little_endian),
		cmocka_unit_test(header_round_trip),
		cmocka_unit_test(header_rejects_damage),
		cmocka_unit_test(status_errno_mapping),
		cmocka_unit_test(hostport_parsing),
	};
	return cmocka_run_group_tests_name("proto", tests, NULL, NULL);
}
