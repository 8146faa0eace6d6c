/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The GPU tier on a real device (meson test --suite gpu). Exits 77 (meson's
 * SKIP) and prints the tier's reason when no device is usable.
 *
 * With a device:
 *   (a) pack/unpack kernels against the host reference on random block
 *       lists (4096 blocks; block sizes down to 4 bytes and not multiples of
 *       16; misaligned pointers for the 4-byte and byte paths), byte-exact;
 *   (b) regions from IPC handles exported by a forked child (IPC handles
 *       cannot be opened by the process that exported them): 1,000 chunks of
 *       4 KiB..256 KiB copied device -> host in batches on several cores'
 *       streams into a cudaHostRegister'ed 256 MiB buffer, compared; then
 *       host -> device into a second region, verified by the child; region
 *       refcounts, -ERANGE/-ENOENT/-EINVAL, a region closed while its batch
 *       is in flight, and the counters moving by exactly what was copied;
 *   (c) throughput of 256 x 1 MiB through cn_gpu_batch_submit against plain
 *       cudaMemcpyAsync on one stream, same run: printed, not asserted.
 *
 * The child is forked before this process makes any CUDA call (the driver
 * does not survive fork), and talks over two pipes.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "cn_gpu.h"

#define SKIP 77

#ifndef CN_HAVE_CUDA

/* Built without CUDA: the tier is absent by construction. */
int main(void)
{
	struct cn_gpu_cfg cfg = {.ncores = 1, .mode = "auto"};
	struct cn_gpu *g = NULL;

	if (cn_gpu_open(&cfg, &g))
		return 1;
	printf("SKIP: GPU tier absent: %s\n", cn_gpu_reason(g));
	cn_gpu_close(g);
	return SKIP;
}

#else /* CN_HAVE_CUDA */

#include <cuda_runtime_api.h>

#define MIB	    (1024u * 1024u)
#define NCHUNK	    1000u
#define CHUNK_MIN   (4u * 1024u)
#define CHUNK_MAX   (256u * 1024u)
#define HOST_LEN    (256u * MIB) /* > NCHUNK * CHUNK_MAX */
#define BW_CHUNK    MIB
#define BW_N	    256u
#define BW_PER_BATCH 32u
#define BW_REPS	    5
#define NCORES	    4u
#define DATA_SEED   0x5eedc0de12345678ull
#define LAYOUT_SEED 0x1a7007ull
#define WAIT_S	    30

#define CUDA_OK(call)                                                                              \
	do {                                                                                       \
		cudaError_t e_ = (call);                                                           \
		if (e_ != cudaSuccess)                                                             \
			fail_msg("%s: %s: %s", #call, cudaGetErrorName(e_), cudaGetErrorString(e_)); \
	} while (0)

static uint64_t splitmix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/* The bytes the child puts in its source region, a function of the position only. */
static void fill_pattern(uint8_t *p, size_t len, uint64_t seed)
{
	size_t i = 0;

	for (; i + 8 <= len; i += 8) {
		uint64_t w = splitmix(seed ^ (i / 8));
		memcpy(p + i, &w, 8);
	}
	for (; i < len; i++)
		p[i] = (uint8_t)splitmix(seed ^ (i / 8 + (1ull << 60)));
}

/* The 1,000 chunks: random sizes, back to back (unaligned offsets on purpose). */
struct layout {
	uint64_t off[NCHUNK];
	uint32_t len[NCHUNK];
	uint64_t total;
};

static void make_layout(struct layout *l)
{
	uint64_t x = LAYOUT_SEED, off = 0;

	for (unsigned i = 0; i < NCHUNK; i++) {
		x = splitmix(x);
		l->off[i] = off;
		l->len[i] = CHUNK_MIN + (uint32_t)(x % (CHUNK_MAX - CHUNK_MIN + 1));
		off += l->len[i];
	}
	l->total = off;
}

/* ---- the child: owns the device allocations the parent maps ---- */

struct hello {
	int32_t rc; /* 0, or why says what failed */
	int32_t dev;
	char why[256];
	uint8_t h_src[CN_GPU_IPC_HANDLE_LEN], h_dst[CN_GPU_IPC_HANDLE_LEN],
		h_bw[CN_GPU_IPC_HANDLE_LEN];
	uint64_t src_size, dst_size, bw_size;
};

enum { CMD_VERIFY = 1, CMD_QUIT = 2 };

struct reply {
	int32_t rc; /* 0: the dst region holds the pattern */
	char why[256];
};

static int full_read(int fd, void *p, size_t len)
{
	for (size_t got = 0; got < len;) {
		ssize_t r = read(fd, (char *)p + got, len - got);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		got += (size_t)r;
	}
	return 0;
}

static int full_write(int fd, const void *p, size_t len)
{
	for (size_t put = 0; put < len;) {
		ssize_t r = write(fd, (const char *)p + put, len - put);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		put += (size_t)r;
	}
	return 0;
}

#define CHILD_CHECK(call, what)                                                                    \
	do {                                                                                       \
		cudaError_t e_ = (call);                                                           \
		if (e_ != cudaSuccess) {                                                           \
			snprintf(h.why, sizeof(h.why), "child: %s: %s", what,                      \
				 cudaGetErrorString(e_));                                          \
			h.rc = -EIO;                                                               \
			goto out;                                                                  \
		}                                                                                  \
	} while (0)

static int child_main(int rd, int wr)
{
	static struct layout l;
	struct hello h = {.rc = 0};
	void *src = NULL, *dst = NULL, *bw = NULL;
	uint8_t *pat = NULL, *back = NULL;
	int n = 0, dev2 = -1, cmd;

	make_layout(&l);
	if (cudaGetDeviceCount(&n) != cudaSuccess || n < 1) {
		snprintf(h.why, sizeof(h.why), "child: no CUDA device");
		h.rc = -ENODEV;
		goto out;
	}
	CHILD_CHECK(cudaSetDevice(0), "cudaSetDevice");
	h.src_size = h.dst_size = l.total;
	h.bw_size = (uint64_t)BW_N * BW_CHUNK;
	pat = malloc(l.total);
	back = malloc(l.total);
	if (!pat || !back) {
		snprintf(h.why, sizeof(h.why), "child: out of memory");
		h.rc = -ENOMEM;
		goto out;
	}
	fill_pattern(pat, l.total, DATA_SEED);
	CHILD_CHECK(cudaMalloc(&src, h.src_size), "cudaMalloc src");
	CHILD_CHECK(cudaMalloc(&dst, h.dst_size), "cudaMalloc dst");
	CHILD_CHECK(cudaMalloc(&bw, h.bw_size), "cudaMalloc bw");
	CHILD_CHECK(cudaMemcpy(src, pat, l.total, cudaMemcpyHostToDevice), "fill src");
	CHILD_CHECK(cudaMemset(dst, 0, h.dst_size), "clear dst");
	CHILD_CHECK(cudaMemset(bw, 0x5a, h.bw_size), "fill bw");
	CHILD_CHECK(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
	/* the tier's own export, as an engine's client library would use it */
	if (cn_gpu_ipc_export(src, h.h_src, &h.dev, h.why, sizeof(h.why)) ||
	    cn_gpu_ipc_export(dst, h.h_dst, &dev2, h.why, sizeof(h.why)) ||
	    cn_gpu_ipc_export(bw, h.h_bw, &dev2, h.why, sizeof(h.why))) {
		h.rc = -EIO;
		goto out;
	}
	if (h.dev != 0 || dev2 != 0 || cn_gpu_ptr_device(src) != 0 || cn_gpu_ptr_device(pat) != -1) {
		snprintf(h.why, sizeof(h.why), "child: ipc_export/ptr_device gave the wrong device");
		h.rc = -EIO;
	}
out:
	if (full_write(wr, &h, sizeof(h)))
		return 2;
	while (h.rc == 0 && full_read(rd, &cmd, sizeof(cmd)) == 0 && cmd == CMD_VERIFY) {
		struct reply r = {.rc = 0};
		cudaError_t e = cudaMemcpy(back, dst, l.total, cudaMemcpyDeviceToHost);

		if (e != cudaSuccess) {
			r.rc = -EIO;
			snprintf(r.why, sizeof(r.why), "child: read dst: %s", cudaGetErrorString(e));
		} else {
			for (unsigned i = 0; i < NCHUNK && r.rc == 0; i++) {
				if (memcmp(back + l.off[i], pat + l.off[i], l.len[i])) {
					r.rc = -EILSEQ;
					snprintf(r.why, sizeof(r.why), "child: chunk %u differs", i);
				}
			}
		}
		if (full_write(wr, &r, sizeof(r)))
			return 2;
	}
	cudaFree(src);
	cudaFree(dst);
	cudaFree(bw);
	free(pat);
	free(back);
	return h.rc == 0 ? 0 : 3;
}

/* ---- the parent ---- */

struct waiter {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	unsigned ndone, nfail;
	struct cn_gpu_batch *b[NCHUNK];
};

static struct ctx {
	struct cn_gpu *g;
	int to_child, from_child;
	pid_t child;
	struct hello h;
	struct layout l;
	uint8_t *host; /* HOST_LEN, host-registered */
	uint8_t *want; /* the child's pattern */
	uint32_t src, dst, bw; /* region ids */
	struct waiter w;
} C;

/* The tier's completion: from a CUDA thread, no CUDA, no blocking. */
static void on_done(struct cn_gpu_batch *b, int status, void *arg)
{
	struct waiter *w = arg;

	pthread_mutex_lock(&w->mu);
	if (w->ndone < NCHUNK)
		w->b[w->ndone] = b;
	w->ndone++;
	if (status)
		w->nfail++;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

static void waiter_reset(struct waiter *w)
{
	pthread_mutex_lock(&w->mu);
	w->ndone = 0;
	w->nfail = 0;
	pthread_mutex_unlock(&w->mu);
}

/* Wait for @n completions, free the batches; the number that failed. */
static unsigned waiter_wait(struct waiter *w, unsigned n)
{
	struct timespec until;
	unsigned nfail;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += WAIT_S;
	pthread_mutex_lock(&w->mu);
	while (w->ndone < n) {
		if (pthread_cond_timedwait(&w->cv, &w->mu, &until) == ETIMEDOUT)
			break;
	}
	if (w->ndone != n) {
		unsigned got = w->ndone;

		pthread_mutex_unlock(&w->mu);
		fail_msg("%u of %u batches completed in %d s", got, n, WAIT_S);
	}
	nfail = w->nfail;
	pthread_mutex_unlock(&w->mu);
	for (unsigned i = 0; i < n; i++)
		cn_gpu_batch_free(C.g, w->b[i]);
	return nfail;
}

static double now_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static uint64_t stat_of(unsigned dev, size_t field_off)
{
	const struct cn_gpu_dev_stats *s = cn_gpu_dev_stats(C.g, dev);

	assert_non_null(s);
	return __atomic_load_n((const uint64_t *)((const char *)s + field_off), __ATOMIC_RELAXED);
}

#define STAT(f) stat_of(0, offsetof(struct cn_gpu_dev_stats, f))

/* Submit @n copies in batches of @per on cores 0..@ncores-1 round robin; the batch count. */
static unsigned submit_all(uint32_t region, enum cn_gpu_dir dir, const struct cn_gpu_copy *c,
			   unsigned n, unsigned per, unsigned ncores)
{
	unsigned nb = 0;

	for (unsigned i = 0; i < n; i += per, nb++) {
		struct cn_gpu_batch *b = NULL;
		unsigned k = n - i < per ? n - i : per;

		assert_int_equal(cn_gpu_batch_submit(C.g, nb % ncores, region, dir, c + i, k, on_done,
						     &C.w, &b),
				 0);
		assert_non_null(b);
	}
	return nb;
}

/* ---- (a) pack/unpack ---- */

static void check_pack_unpack(uint32_t block, size_t mis_packed, size_t mis_paged)
{
	const uint32_t n = 4096, pool = 2 * n;
	size_t plen = (size_t)pool * block, clen = (size_t)n * block;
	uint8_t *h_paged = malloc(plen + mis_paged), *h_packed = malloc(clen + mis_packed);
	uint8_t *want = malloc(plen > clen ? plen : clen), *got = malloc(plen > clen ? plen : clen);
	uint32_t *ids = malloc(n * sizeof(*ids)), *perm = malloc(pool * sizeof(*perm));
	uint8_t *d_paged = NULL, *d_packed = NULL;
	uint64_t launches = STAT(kernel_launches);
	uint64_t x = splitmix(block);

	assert_true(h_paged && h_packed && want && got && ids && perm);
	CUDA_OK(cudaMalloc((void **)&d_paged, plen + mis_paged));
	CUDA_OK(cudaMalloc((void **)&d_packed, clen + mis_packed));

	/* pack: random ids, repeats allowed */
	fill_pattern(h_paged, plen, x);
	CUDA_OK(cudaMemcpy(d_paged + mis_paged, h_paged, plen, cudaMemcpyHostToDevice));
	for (uint32_t i = 0; i < n; i++)
		ids[i] = (uint32_t)((x = splitmix(x)) % pool);
	CUDA_OK(cudaMemset(d_packed, 0, clen + mis_packed));
	assert_int_equal(cn_gpu_pack(C.g, d_packed + mis_packed, d_paged + mis_paged, ids, n, block),
			 0);
	CUDA_OK(cudaMemcpy(got, d_packed + mis_packed, clen, cudaMemcpyDeviceToHost));
	cn_gpu_pack_ref(want, h_paged, ids, n, block);
	assert_memory_equal(got, want, clen);

	/* unpack: distinct ids (a permutation's prefix), the other blocks untouched */
	for (uint32_t i = 0; i < pool; i++)
		perm[i] = i;
	for (uint32_t i = pool - 1; i > 0; i--) {
		uint32_t j = (uint32_t)((x = splitmix(x)) % (i + 1)), t = perm[i];

		perm[i] = perm[j];
		perm[j] = t;
	}
	fill_pattern(h_packed, clen, x);
	CUDA_OK(cudaMemcpy(d_packed + mis_packed, h_packed, clen, cudaMemcpyHostToDevice));
	memcpy(want, h_paged, plen);
	assert_int_equal(
		cn_gpu_unpack(C.g, d_paged + mis_paged, d_packed + mis_packed, perm, n, block), 0);
	CUDA_OK(cudaMemcpy(got, d_paged + mis_paged, plen, cudaMemcpyDeviceToHost));
	cn_gpu_unpack_ref(want, h_packed, perm, n, block);
	assert_memory_equal(got, want, plen);

	assert_int_equal(STAT(kernel_launches), launches + 2);
	CUDA_OK(cudaFree(d_paged));
	CUDA_OK(cudaFree(d_packed));
	free(h_paged);
	free(h_packed);
	free(want);
	free(got);
	free(ids);
	free(perm);
}

static void pack_unpack_vs_ref(void **state)
{
	static const uint32_t blocks[] = {4, 12, 52, 256, 4100, 16384};

	for (size_t i = 0; i < sizeof(blocks) / sizeof(blocks[0]); i++) {
		printf("# pack/unpack: 4096 blocks of %u bytes\n", blocks[i]);
		check_pack_unpack(blocks[i], 0, 0);
	}
	printf("# pack/unpack: misaligned pointers (4-byte and byte paths)\n");
	check_pack_unpack(64, 4, 0);
	check_pack_unpack(64, 0, 2);
}

static void pack_unpack_args(void **state)
{
	uint32_t ids[1] = {0};
	void *d = NULL;

	CUDA_OK(cudaMalloc(&d, 4096));
	assert_int_equal(cn_gpu_pack(C.g, d, (char *)d + 2048, ids, 1, 6), -EINVAL);
	assert_int_equal(cn_gpu_pack(C.g, d, (char *)d + 2048, ids, 1, 0), -EINVAL);
	assert_int_equal(cn_gpu_unpack(C.g, d, (char *)d + 2048, NULL, 1, 16), -EINVAL);
	assert_int_equal(cn_gpu_pack(C.g, d, (char *)d + 2048, ids, 0, 16), 0);
	CUDA_OK(cudaFree(d));
}

/* ---- helpers of the client library, in this process ---- */

static void process_helpers(void **state)
{
	char err[CN_GPU_REASON_LEN] = "";
	uint8_t host[8192], back[8192];
	uint64_t off = 0;
	int ndev = 0, fd = -1, rc;
	uint8_t *d = NULL;

	assert_int_equal(cn_gpu_runtime_probe(&ndev, err, sizeof(err)), 0);
	assert_true(ndev >= 1);
	CUDA_OK(cudaMalloc((void **)&d, 4u * MIB));
	assert_int_equal(cn_gpu_ptr_device(d), 0);
	assert_int_equal(cn_gpu_ptr_device(d + 100), 0);
	assert_int_equal(cn_gpu_ptr_device(host), -1);
	fill_pattern(host, sizeof(host), 77);
	assert_int_equal(cn_gpu_copy_sync(d + 1, host, sizeof(host)), 0);
	memset(back, 0, sizeof(back));
	assert_int_equal(cn_gpu_copy_sync(back, d + 1, sizeof(back)), 0);
	assert_memory_equal(back, host, sizeof(back));

	rc = cn_gpu_dmabuf(d + 100, 5000, &fd, &off, err, sizeof(err));
	if (rc == 0) {
		printf("# dmabuf: fd %d, offset %llu\n", fd, (unsigned long long)off);
		assert_true(fd >= 0);
		assert_int_equal(off, ((uintptr_t)(d + 100)) % (uintptr_t)sysconf(_SC_PAGESIZE));
		close(fd);
	} else {
		printf("# dmabuf: not available here: %s\n", err);
		assert_int_equal(rc, -EOPNOTSUPP);
		assert_true(strlen(err) > 0);
	}
	CUDA_OK(cudaFree(d));
}

/* ---- (b) regions and batches ---- */

static void regions_refcount_and_refusals(void **state)
{
	uint8_t bogus[CN_GPU_IPC_HANDLE_LEN];
	char err[CN_GPU_REASON_LEN];
	uint64_t opens = STAT(region_opens), errors = STAT(region_errors);
	uint32_t id2 = 0, bad = 0;
	struct cn_gpu_copy c;
	struct cn_gpu_batch *b;

	assert_int_equal(cn_gpu_region_open(C.g, C.h.dev, C.h.h_src, C.h.src_size, &C.src, err,
					    sizeof(err)),
			 0);
	assert_true(C.src > 0);
	assert_int_equal(cn_gpu_region_size(C.g, C.src), C.h.src_size);
	/* the same allocation registered again (a second session) shares the mapping */
	assert_int_equal(cn_gpu_region_open(C.g, C.h.dev, C.h.h_src, C.h.src_size, &id2, err,
					    sizeof(err)),
			 0);
	assert_int_equal(id2, C.src);
	assert_int_equal(STAT(region_opens), opens + 1);
	assert_int_equal(STAT(regions_open), 1);
	/* ... but not with another size */
	assert_int_equal(cn_gpu_region_open(C.g, C.h.dev, C.h.h_src, C.h.src_size - 1, &bad, err,
					    sizeof(err)),
			 -EINVAL);
	assert_int_equal(cn_gpu_region_close(C.g, id2), 0);
	assert_int_equal(cn_gpu_region_size(C.g, C.src), C.h.src_size);

	assert_int_equal(cn_gpu_region_open(C.g, C.h.dev, C.h.h_dst, C.h.dst_size, &C.dst, err,
					    sizeof(err)),
			 0);
	assert_int_not_equal(C.dst, C.src);
	assert_int_equal(STAT(regions_open), 2);

	/* refusals: garbage handle, size past the allocation, size 0, no such device */
	fill_pattern(bogus, sizeof(bogus), 1);
	err[0] = '\0';
	assert_int_equal(cn_gpu_region_open(C.g, C.h.dev, bogus, 4096, &bad, err, sizeof(err)),
			 -EINVAL);
	printf("# bogus handle: %s\n", err);
	assert_true(strlen(err) > 0);
	err[0] = '\0';
	assert_int_equal(cn_gpu_region_open(C.g, C.h.dev, C.h.h_bw, C.h.bw_size * 2, &bad, err,
					    sizeof(err)),
			 -EINVAL);
	printf("# oversized region: %s\n", err);
	assert_int_equal(cn_gpu_region_open(C.g, C.h.dev, C.h.h_bw, 0, &bad, err, sizeof(err)),
			 -EINVAL);
	assert_int_equal(cn_gpu_region_open(C.g, CN_GPU_MAX_DEVICES, C.h.h_bw, 4096, &bad, err,
					    sizeof(err)),
			 -ENODEV);
	assert_int_equal(STAT(region_errors), errors + 4);
	assert_int_equal(STAT(regions_open), 2);

	/* batch refusals: nothing queued, done never called */
	waiter_reset(&C.w);
	c = (struct cn_gpu_copy){.host = C.host, .off = C.h.src_size - 10, .len = 11};
	assert_int_equal(cn_gpu_batch_submit(C.g, 0, C.src, CN_GPU_D2H, &c, 1, on_done, &C.w, &b),
			 -ERANGE);
	c = (struct cn_gpu_copy){.host = C.host, .off = UINT64_MAX - 5, .len = 11};
	assert_int_equal(cn_gpu_batch_submit(C.g, 0, C.src, CN_GPU_D2H, &c, 1, on_done, &C.w, &b),
			 -ERANGE);
	c = (struct cn_gpu_copy){.host = C.host, .off = 0, .len = 11};
	assert_int_equal(cn_gpu_batch_submit(C.g, 0, 9999, CN_GPU_D2H, &c, 1, on_done, &C.w, &b),
			 -ENOENT);
	assert_int_equal(cn_gpu_batch_submit(C.g, NCORES, C.src, CN_GPU_D2H, &c, 1, on_done, &C.w,
					     &b),
			 -EINVAL);
	assert_int_equal(cn_gpu_region_close(C.g, 9999), -ENOENT);
	usleep(100000);
	assert_int_equal(C.w.ndone, 0);
}

static void d2h_then_h2d(void **state)
{
	static struct cn_gpu_copy c[NCHUNK];
	uint64_t batches = STAT(batches), d2h = STAT(d2h_copies), d2hb = STAT(d2h_bytes);
	uint64_t h2d = STAT(h2d_copies), h2db = STAT(h2d_bytes);
	unsigned nb;
	int cmd = CMD_VERIFY;
	struct reply r;
	double t;

	/* device -> host: batches of 64 over all cores' streams, into the chunks' own offsets */
	memset(C.host, 0, HOST_LEN);
	for (unsigned i = 0; i < NCHUNK; i++)
		c[i] = (struct cn_gpu_copy){.host = C.host + C.l.off[i], .off = C.l.off[i],
					    .len = C.l.len[i]};
	waiter_reset(&C.w);
	t = now_s();
	nb = submit_all(C.src, CN_GPU_D2H, c, NCHUNK, 64, NCORES);
	assert_int_equal(waiter_wait(&C.w, nb), 0);
	printf("# d2h: %u chunks, %llu bytes in %u batches, %.1f ms\n", NCHUNK,
	       (unsigned long long)C.l.total, nb, (now_s() - t) * 1e3);
	for (unsigned i = 0; i < NCHUNK; i++) {
		if (memcmp(C.host + C.l.off[i], C.want + C.l.off[i], C.l.len[i]))
			fail_msg("d2h chunk %u (off %llu len %u) differs", i,
				 (unsigned long long)C.l.off[i], C.l.len[i]);
	}
	assert_int_equal(STAT(batches), batches + nb);
	assert_int_equal(STAT(d2h_copies), d2h + NCHUNK);
	assert_int_equal(STAT(d2h_bytes), d2hb + C.l.total);

	/* host -> device into the child's second region, in reverse order, batches of 7 */
	for (unsigned i = 0; i < NCHUNK; i++) {
		unsigned k = NCHUNK - 1 - i;

		c[i] = (struct cn_gpu_copy){.host = C.host + C.l.off[k], .off = C.l.off[k],
					    .len = C.l.len[k]};
	}
	waiter_reset(&C.w);
	nb = submit_all(C.dst, CN_GPU_H2D, c, NCHUNK, 7, NCORES);
	assert_int_equal(waiter_wait(&C.w, nb), 0);
	assert_int_equal(STAT(h2d_copies), h2d + NCHUNK);
	assert_int_equal(STAT(h2d_bytes), h2db + C.l.total);
	assert_int_equal(STAT(copy_errors), 0);

	assert_int_equal(full_write(C.to_child, &cmd, sizeof(cmd)), 0);
	assert_int_equal(full_read(C.from_child, &r, sizeof(r)), 0);
	if (r.rc)
		fail_msg("the child sees other bytes in its region: %s", r.why);
}

/* A session closes its region while a batch still copies: the mapping outlives it. */
static void close_with_batch_in_flight(void **state)
{
	static struct cn_gpu_copy c[64];
	char err[CN_GPU_REASON_LEN];
	uint64_t gauge = STAT(regions_open);
	uint32_t id = 0;
	struct cn_gpu_batch *b = NULL;

	assert_int_equal(cn_gpu_region_open(C.g, C.h.dev, C.h.h_bw, C.h.bw_size, &id, err,
					    sizeof(err)),
			 0);
	assert_int_equal(STAT(regions_open), gauge + 1);
	for (unsigned i = 0; i < 64; i++)
		c[i] = (struct cn_gpu_copy){.host = C.host + (size_t)i * MIB,
					    .off = (uint64_t)i * MIB, .len = MIB};
	memset(C.host, 0, 64u * MIB);
	waiter_reset(&C.w);
	assert_int_equal(cn_gpu_batch_submit(C.g, 1, id, CN_GPU_D2H, c, 64, on_done, &C.w, &b), 0);
	assert_int_equal(cn_gpu_region_close(C.g, id), 0);
	assert_int_equal(cn_gpu_region_size(C.g, id), 0); /* gone for new work ... */
	assert_int_equal(waiter_wait(&C.w, 1), 0);	   /* ... the batch finished */
	for (size_t i = 0; i < 64u * MIB; i++) {
		if (C.host[i] != 0x5a)
			fail_msg("byte %zu is 0x%02x, not 0x5a", i, C.host[i]);
	}
	assert_int_equal(STAT(regions_open), gauge); /* unmapped by the last batch_free */
}

/* ---- (c) throughput ---- */

static double tier_pass(uint32_t region, enum cn_gpu_dir dir)
{
	static struct cn_gpu_copy c[BW_N];
	double t;
	unsigned nb;

	for (unsigned i = 0; i < BW_N; i++)
		c[i] = (struct cn_gpu_copy){.host = C.host + (size_t)i * BW_CHUNK,
					    .off = (uint64_t)i * BW_CHUNK, .len = BW_CHUNK};
	waiter_reset(&C.w);
	t = now_s();
	nb = submit_all(region, dir, c, BW_N, BW_PER_BATCH, 1);
	assert_int_equal(waiter_wait(&C.w, nb), 0);
	return now_s() - t;
}

static double plain_pass(uint8_t *d, cudaStream_t s, enum cn_gpu_dir dir)
{
	double t = now_s();

	for (unsigned i = 0; i < BW_N; i++) {
		uint8_t *h = C.host + (size_t)i * BW_CHUNK, *dd = d + (size_t)i * BW_CHUNK;

		if (dir == CN_GPU_D2H)
			CUDA_OK(cudaMemcpyAsync(h, dd, BW_CHUNK, cudaMemcpyDeviceToHost, s));
		else
			CUDA_OK(cudaMemcpyAsync(dd, h, BW_CHUNK, cudaMemcpyHostToDevice, s));
	}
	CUDA_OK(cudaStreamSynchronize(s));
	return now_s() - t;
}

static void throughput(void **state)
{
	const double bytes = (double)BW_N * BW_CHUNK;
	char err[CN_GPU_REASON_LEN];
	cudaStream_t s = NULL;
	uint8_t *d = NULL;
	uint32_t id = 0;

	assert_int_equal(cn_gpu_region_open(C.g, C.h.dev, C.h.h_bw, C.h.bw_size, &id, err,
					    sizeof(err)),
			 0);
	CUDA_OK(cudaSetDevice(C.h.dev));
	CUDA_OK(cudaMalloc((void **)&d, (size_t)BW_N * BW_CHUNK));
	CUDA_OK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
	for (int dir = CN_GPU_D2H; dir <= CN_GPU_H2D; dir++) {
		double best_tier = 1e9, best_plain = 1e9;

		tier_pass(id, (enum cn_gpu_dir)dir); /* warm up both */
		plain_pass(d, s, (enum cn_gpu_dir)dir);
		for (int rep = 0; rep < BW_REPS; rep++) {
			double a = tier_pass(id, (enum cn_gpu_dir)dir);
			double b = plain_pass(d, s, (enum cn_gpu_dir)dir);

			best_tier = a < best_tier ? a : best_tier;
			best_plain = b < best_plain ? b : best_plain;
		}
		printf("# bench %s %u x %u KiB (best of %d): cn_gpu_batch_submit %.2f GB/s "
		       "(%u-chunk batches, one stream), cudaMemcpyAsync %.2f GB/s, ratio %.3f\n",
		       dir == CN_GPU_D2H ? "d2h" : "h2d", BW_N, BW_CHUNK / 1024u, BW_REPS,
		       bytes / best_tier / 1e9, BW_PER_BATCH, bytes / best_plain / 1e9,
		       best_plain / best_tier);
	}
	CUDA_OK(cudaStreamDestroy(s));
	CUDA_OK(cudaFree(d));
	assert_int_equal(cn_gpu_region_close(C.g, id), 0);
}

static void info_and_close_regions(void **state)
{
	struct cn_gpu_info in;

	cn_gpu_get_info(C.g, &in);
	assert_true(in.built);
	assert_true(in.present);
	assert_string_equal(in.reason, "");
	assert_true(in.ndev >= 1);
	assert_true(in.host_registered);
	assert_true(in.runtime_version > 0 && in.driver_version > 0);
	printf("# device 0: %s, %s, cc %d.%d, %llu MiB, %d copy engines; runtime %d driver %d\n",
	       in.dev[0].name, in.dev[0].pci_bus_id, in.dev[0].cc_major, in.dev[0].cc_minor,
	       (unsigned long long)(in.dev[0].mem_total / MIB), in.dev[0].copy_engines,
	       in.runtime_version, in.driver_version);
	assert_int_equal(cn_gpu_region_close(C.g, C.src), 0);
	assert_int_equal(cn_gpu_region_close(C.g, C.dst), 0);
	assert_int_equal(cn_gpu_region_close(C.g, C.src), -ENOENT);
	assert_int_equal(STAT(regions_open), 0);
}

/* Fork the child before anything here touches CUDA. */
static int spawn_child(void)
{
	int p2c[2], c2p[2];

	if (pipe(p2c) || pipe(c2p))
		return -1;
	C.child = fork();
	if (C.child < 0)
		return -1;
	if (C.child == 0) {
		close(p2c[1]);
		close(c2p[0]);
		_exit(child_main(p2c[0], c2p[1]));
	}
	close(p2c[0]);
	close(c2p[1]);
	C.to_child = p2c[1];
	C.from_child = c2p[0];
	return 0;
}

static int end_child(void)
{
	int cmd = CMD_QUIT, st = 0;

	(void)full_write(C.to_child, &cmd, sizeof(cmd));
	close(C.to_child);
	close(C.from_child);
	if (waitpid(C.child, &st, 0) < 0)
		return -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(pack_unpack_args),
		cmocka_unit_test(pack_unpack_vs_ref),
		cmocka_unit_test(process_helpers),
		cmocka_unit_test(regions_refcount_and_refusals),
		cmocka_unit_test(d2h_then_h2d),
		cmocka_unit_test(close_with_batch_in_flight),
		cmocka_unit_test(throughput),
		cmocka_unit_test(info_and_close_regions),
	};
	struct cn_gpu_cfg cfg = {.ncores = NCORES, .mode = "auto"};
	int rc, crc;

	signal(SIGPIPE, SIG_IGN); /* a child that gave up must not kill us with our last word */
	if (spawn_child()) {
		perror("fork");
		return 1;
	}
	if (cn_gpu_open(&cfg, &C.g)) {
		end_child();
		return 1;
	}
	if (!cn_gpu_present(C.g)) {
		printf("SKIP: GPU tier absent: %s\n", cn_gpu_reason(C.g));
		cn_gpu_close(C.g);
		end_child();
		return SKIP;
	}
	if (full_read(C.from_child, &C.h, sizeof(C.h)) || C.h.rc) {
		printf("the IPC exporter child failed: %s\n", C.h.why);
		cn_gpu_close(C.g);
		end_child();
		return 1;
	}
	pthread_mutex_init(&C.w.mu, NULL);
	pthread_cond_init(&C.w.cv, NULL);
	make_layout(&C.l);
	C.want = malloc(C.l.total);
	C.host = malloc(HOST_LEN);
	if (!C.want || !C.host) {
		end_child();
		return 1;
	}
	fill_pattern(C.want, C.l.total, DATA_SEED);
	rc = cn_gpu_host_register(C.g, C.host, HOST_LEN);
	if (rc) {
		struct cn_gpu_info in;

		cn_gpu_get_info(C.g, &in);
		printf("cn_gpu_host_register: %d: %s\n", rc, in.host_reason);
		end_child();
		return 1;
	}

	rc = cmocka_run_group_tests(tests, NULL, NULL);

	cn_gpu_close(C.g); /* unregisters C.host */
	crc = end_child();
	if (crc)
		printf("child exited with %d\n", crc);
	free(C.host);
	free(C.want);
	return rc || crc ? 1 : 0;
}

#endif /* CN_HAVE_CUDA */
