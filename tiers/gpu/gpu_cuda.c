/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cn_gpu.h on the CUDA runtime (libcudart_static). The only C file that sees
 * CUDA types; gather.cu holds the kernels.
 *
 * State: the device list and per-device counters are fixed at open. The
 * mutex guards the region table, stream creation, the registered host
 * ranges and the mutable parts of info (host_*, rdma_*). CUDA calls that
 * may take long (cudaIpcOpenMemHandle, cudaIpcCloseMemHandle,
 * cudaHostRegister) run outside the mutex: the driver refcounts IPC
 * mappings per context, so two opens of one handle racing each other only
 * cost one extra open/close pair.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cuda_runtime_api.h>
#include <cudaTypedefs.h> /* PFN_cu* for the driver entry points (includes cuda.h) */

#include "cn_gpu.h"
#include "gpu_internal.h"

_Static_assert(sizeof(cudaIpcMemHandle_t) == CN_GPU_IPC_HANDLE_LEN, "IPC handle size");

/* The ABI version of driver entry points we ask for (cudaTypedefs.h names them). */
#define DRIVER_API_VERSION 12000

/* Per-device counters: added from any thread, so atomics, a cache line each. */
struct dev_slot {
	struct cn_gpu_dev_stats st;
	struct cn_gpu_tput tput[2]; /* by enum cn_gpu_dir; atomic adds; count derived on read */
} CN_CACHE_ALIGNED;

#define DEV_ADD(g, d, f, v) __atomic_fetch_add(&(g)->dev[d].st.f, (uint64_t)(v), __ATOMIC_RELAXED)
#define DEV_SUB(g, d, f, v) __atomic_fetch_sub(&(g)->dev[d].st.f, (uint64_t)(v), __ATOMIC_RELAXED)

/*
 * A mapped IPC handle. Findable by id and by handle while refs > 0; the
 * mapping lives until refs and inflight are both 0, so a session closing
 * its region while a batch still copies does not unmap under the copy.
 */
struct region {
	uint32_t id;
	int dev;
	uint8_t handle[CN_GPU_IPC_HANDLE_LEN];
	void *ptr;
	uint64_t size;
	unsigned refs;	   /* region_open minus region_close */
	unsigned inflight; /* batches submitted and not yet freed */
};

struct host_range {
	void *base;
	size_t len;
};

struct cn_gpu {
	unsigned ncores;
	unsigned ndev; /* 0 when absent */
	pthread_mutex_t mu;
	struct cn_gpu_info info;
	struct dev_slot dev[CN_GPU_MAX_DEVICES];
	cudaStream_t *streams; /* [core][dev][dir], created on first use, then read lock-free */
	struct region **regions;
	unsigned nregions, cap_regions;
	uint32_t next_id;
	struct host_range *hosts;
	unsigned nhosts;
	/* the driver's allocation bounds, to check a region's size; NULL: not checked */
	PFN_cuMemGetAddressRange_v3020 get_range;
};

struct cn_gpu_batch {
	struct region *r; /* holds one inflight reference */
	cn_gpu_done_fn done;
	void *arg;
	int status; /* written by the callback before done() */
	enum cn_gpu_dir dir;
	uint32_t n;
	uint64_t bytes;
	uint64_t t_submit, t_done; /* CLOCK_MONOTONIC ns: queued, completion callback */
};

static uint64_t now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static void say(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void say(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/*
 * "<what>: <cudaErrorName>: <description>" into err, and clear the error the
 * runtime keeps for cudaGetLastError() (a later unrelated check must not see it).
 */
static void cuda_say(char *err, size_t errlen, const char *what, cudaError_t e)
{
	say(err, errlen, "%s: %s: %s", what, cudaGetErrorName(e), cudaGetErrorString(e));
	(void)cudaGetLastError();
}

/* 0 and the device count, or -ENODEV and why (no driver, no device). */
static int runtime_ndev(int *ndev, char *err, size_t errlen)
{
	cudaError_t e = cudaGetDeviceCount(ndev);

	if (e != cudaSuccess) {
		*ndev = 0;
		cuda_say(err, errlen, "cudaGetDeviceCount", e);
		return -ENODEV;
	}
	if (*ndev <= 0) {
		say(err, errlen, "no CUDA device");
		return -ENODEV;
	}
	return 0;
}

/* A driver function by name, without linking libcuda. 0, or -EOPNOTSUPP and why. */
static int driver_fn(const char *sym, void **fn, char *err, size_t errlen)
{
	enum cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
	cudaError_t e;

	*fn = NULL;
	e = cudaGetDriverEntryPointByVersion(sym, fn, DRIVER_API_VERSION, cudaEnableDefault, &q);
	if (e != cudaSuccess) {
		char what[96];

		snprintf(what, sizeof(what), "cudaGetDriverEntryPointByVersion(%s)", sym);
		cuda_say(err, errlen, what, e);
		return -EOPNOTSUPP;
	}
	if (q != cudaDriverEntryPointSuccess || !*fn) {
		say(err, errlen, "driver has no %s (%s)", sym,
		    q == cudaDriverEntryPointVersionNotSufficent ? "driver too old"
								 : "symbol not found");
		*fn = NULL;
		return -EOPNOTSUPP;
	}
	return 0;
}

/* A CUresult in words, through the driver's own cuGetErrorName when it can be reached. */
static void cu_say(char *err, size_t errlen, const char *what, CUresult r)
{
	PFN_cuGetErrorName_v6000 name_fn = NULL;
	const char *name = NULL;
	char ignored[8];

	if (driver_fn("cuGetErrorName", (void **)&name_fn, ignored, sizeof(ignored)) == 0 &&
	    name_fn(r, &name) != CUDA_SUCCESS)
		name = NULL;
	say(err, errlen, "%s: %s (CUresult %d)", what, name ? name : "error", (int)r);
}

int cn_gpu_open(const struct cn_gpu_cfg *cfg, struct cn_gpu **out)
{
	struct cn_gpu_info *in;
	struct cn_gpu *g;
	int off = 0, n = 0;
	int rc;

	if (!out)
		return -EINVAL;
	rc = cn_gpu_cfg_check(cfg, &off);
	if (rc)
		return rc;
	g = calloc(1, sizeof(*g));
	if (!g)
		return -ENOMEM;
	pthread_mutex_init(&g->mu, NULL);
	g->ncores = cfg->ncores;
	g->next_id = 1;
	in = &g->info;
	in->built = true;
	snprintf(in->rdma_mode, sizeof(in->rdma_mode), "none");
	snprintf(in->rdma_reason, sizeof(in->rdma_reason), "not probed");
	snprintf(in->host_reason, sizeof(in->host_reason), "not registered");
	if (cudaRuntimeGetVersion(&in->runtime_version) != cudaSuccess)
		in->runtime_version = 0;
	if (cudaDriverGetVersion(&in->driver_version) != cudaSuccess) /* 0 without a driver */
		in->driver_version = 0;
	(void)cudaGetLastError();

	if (off) {
		snprintf(in->reason, sizeof(in->reason), "%s", CN_GPU_OFF_REASON);
		goto absent;
	}
	if (runtime_ndev(&n, in->reason, sizeof(in->reason)))
		goto absent;
	if ((unsigned)n > CN_GPU_MAX_DEVICES)
		n = CN_GPU_MAX_DEVICES;
	for (int d = 0; d < n; d++) {
		struct cn_gpu_dev_info *di = &in->dev[d];
		struct cudaDeviceProp prop;
		char what[64];
		cudaError_t e;

		e = cudaGetDeviceProperties(&prop, d);
		if (e != cudaSuccess) {
			snprintf(what, sizeof(what), "cudaGetDeviceProperties(%d)", d);
			cuda_say(in->reason, sizeof(in->reason), what, e);
			goto absent;
		}
		e = cudaDeviceGetPCIBusId(di->pci_bus_id, sizeof(di->pci_bus_id), d);
		if (e != cudaSuccess) {
			snprintf(what, sizeof(what), "cudaDeviceGetPCIBusId(%d)", d);
			cuda_say(in->reason, sizeof(in->reason), what, e);
			goto absent;
		}
		/* Make the context now: the first copy should not pay for it, and a device
		 * that cannot get one (exclusive mode, out of memory) is not usable. */
		e = cudaSetDevice(d);
		if (e == cudaSuccess)
			e = cudaFree(NULL);
		if (e != cudaSuccess) {
			snprintf(what, sizeof(what), "device %d: context", d);
			cuda_say(in->reason, sizeof(in->reason), what, e);
			goto absent;
		}
		di->ordinal = d;
		snprintf(di->name, sizeof(di->name), "%.*s", (int)sizeof(di->name) - 1, prop.name);
		di->mem_total = prop.totalGlobalMem;
		di->cc_major = prop.major;
		di->cc_minor = prop.minor;
		di->copy_engines = prop.asyncEngineCount;
	}
	g->streams = calloc((size_t)g->ncores * (size_t)n * 2, sizeof(*g->streams));
	if (!g->streams) {
		cn_gpu_close(g);
		return -ENOMEM;
	}
	{
		char ignored[8];

		if (driver_fn("cuMemGetAddressRange", (void **)&g->get_range, ignored,
			      sizeof(ignored)))
			g->get_range = NULL;
	}
	g->ndev = (unsigned)n;
	in->ndev = (unsigned)n;
	in->present = true;
	in->reason[0] = '\0';
	*out = g;
	return 0;

absent:
	memset(in->dev, 0, sizeof(in->dev));
	snprintf(in->host_reason, sizeof(in->host_reason), "%s", in->reason);
	*out = g;
	return 0;
}

void cn_gpu_sync(struct cn_gpu *g)
{
	size_t ns;

	if (!g || !g->streams || !g->info.present)
		return;
	ns = (size_t)g->ncores * g->ndev * 2;
	for (size_t i = 0; i < ns; i++) {
		cudaStream_t s = __atomic_load_n(&g->streams[i], __ATOMIC_ACQUIRE);

		if (!s)
			continue;
		/* waits for the stream's callbacks too: every done() has returned after it */
		(void)cudaSetDevice((int)((i / 2) % g->ndev));
		if (cudaStreamSynchronize(s) != cudaSuccess)
			(void)cudaGetLastError();
	}
}

void cn_gpu_close(struct cn_gpu *g)
{
	if (!g)
		return;
	if (g->streams) {
		size_t ns = (size_t)g->ncores * g->ndev * 2;

		for (size_t i = 0; i < ns; i++) {
			if (!g->streams[i])
				continue;
			(void)cudaSetDevice((int)((i / 2) % g->ndev));
			(void)cudaStreamSynchronize(g->streams[i]);
			(void)cudaStreamDestroy(g->streams[i]);
		}
	}
	for (unsigned i = 0; i < g->nregions; i++) {
		(void)cudaSetDevice(g->regions[i]->dev);
		(void)cudaIpcCloseMemHandle(g->regions[i]->ptr);
		free(g->regions[i]);
	}
	for (unsigned i = 0; i < g->nhosts; i++)
		(void)cudaHostUnregister(g->hosts[i].base);
	if (g->info.present)
		(void)cudaGetLastError();
	free(g->streams);
	free(g->regions);
	free(g->hosts);
	pthread_mutex_destroy(&g->mu);
	free(g);
}

bool cn_gpu_present(const struct cn_gpu *g)
{
	return g && g->info.present;
}

const char *cn_gpu_reason(const struct cn_gpu *g)
{
	return g->info.reason;
}

void cn_gpu_get_info(const struct cn_gpu *g, struct cn_gpu_info *out)
{
	pthread_mutex_t *mu = (pthread_mutex_t *)&g->mu; /* the lock is not the state */

	pthread_mutex_lock(mu);
	*out = g->info;
	pthread_mutex_unlock(mu);
}

const struct cn_gpu_dev_stats *cn_gpu_dev_stats(const struct cn_gpu *g, unsigned dev)
{
	return g && dev < g->ndev ? &g->dev[dev].st : NULL;
}

int cn_gpu_tput_get(const struct cn_gpu *g, unsigned dev, enum cn_gpu_dir dir,
		    struct cn_gpu_tput *out)
{
	const struct cn_gpu_tput *t;

	if (!g || dev >= g->ndev || (dir != CN_GPU_D2H && dir != CN_GPU_H2D) || !out)
		return -ENOENT;
	t = &g->dev[dev].tput[dir];
	for (unsigned i = 0; i < CN_GPU_TPUT_BUCKETS; i++)
		out->bucket[i] = __atomic_load_n(&t->bucket[i], __ATOMIC_RELAXED);
	out->sum_mbps = __atomic_load_n(&t->sum_mbps, __ATOMIC_RELAXED);
	out->count = 0;
	for (unsigned i = 0; i < CN_GPU_TPUT_BUCKETS; i++)
		out->count += out->bucket[i]; /* consistent with the buckets read */
	return 0;
}

int cn_gpu_host_register(struct cn_gpu *g, void *base, size_t len)
{
	struct host_range *h;
	cudaError_t e;

	if (!g->info.present)
		return -ENODEV;
	if (!base || !len)
		return -EINVAL;
	/* Pinning a whole pool takes a while: outside the mutex. */
	e = cudaHostRegister(base, len, cudaHostRegisterPortable);
	pthread_mutex_lock(&g->mu);
	if (e != cudaSuccess) {
		cuda_say(g->info.host_reason, sizeof(g->info.host_reason), "cudaHostRegister", e);
		pthread_mutex_unlock(&g->mu);
		return -EIO;
	}
	h = realloc(g->hosts, (g->nhosts + 1) * sizeof(*h));
	if (!h) {
		pthread_mutex_unlock(&g->mu);
		(void)cudaHostUnregister(base);
		return -ENOMEM;
	}
	g->hosts = h;
	g->hosts[g->nhosts++] = (struct host_range){base, len};
	g->info.host_registered = true;
	g->info.host_reason[0] = '\0';
	pthread_mutex_unlock(&g->mu);
	return 0;
}

/* ---- regions ---- */

/* Under mu. Only regions some session still holds (refs > 0). */
static struct region *region_by_id(struct cn_gpu *g, uint32_t id)
{
	for (unsigned i = 0; i < g->nregions; i++)
		if (g->regions[i]->id == id && g->regions[i]->refs > 0)
			return g->regions[i];
	return NULL;
}

static struct region *region_by_handle(struct cn_gpu *g, int dev, const uint8_t *handle)
{
	for (unsigned i = 0; i < g->nregions; i++) {
		struct region *r = g->regions[i];

		if (r->refs > 0 && r->dev == dev && memcmp(r->handle, handle, sizeof(r->handle)) == 0)
			return r;
	}
	return NULL;
}

/* Under mu: an id not in the table (> 0). */
static uint32_t region_new_id(struct cn_gpu *g)
{
	for (;;) {
		uint32_t id = g->next_id++;
		bool used = false;

		if (id == 0)
			continue;
		for (unsigned i = 0; i < g->nregions && !used; i++)
			used = g->regions[i]->id == id;
		if (!used)
			return id;
	}
}

/* Unmap a region nobody holds any more (outside mu: it is out of the table). */
static void region_unmap(struct cn_gpu *g, struct region *r)
{
	(void)cudaSetDevice(r->dev);
	if (cudaIpcCloseMemHandle(r->ptr) != cudaSuccess)
		(void)cudaGetLastError();
	DEV_SUB(g, r->dev, regions_open, 1);
	free(r);
}

/*
 * Under mu: drop a session reference (batch false) or a batch's (batch
 * true). True when it was the last: the region is out of the table and the
 * caller unmaps it (region_unmap) after unlocking.
 */
static bool region_unref_locked(struct cn_gpu *g, struct region *r, bool batch)
{
	if (batch)
		r->inflight--;
	else
		r->refs--;
	if (r->refs || r->inflight)
		return false;
	for (unsigned i = 0; i < g->nregions; i++) {
		if (g->regions[i] == r) {
			g->regions[i] = g->regions[--g->nregions];
			break;
		}
	}
	return true;
}

/* A batch is done with its region. */
static void region_put_batch(struct cn_gpu *g, struct region *r)
{
	bool last;

	pthread_mutex_lock(&g->mu);
	last = region_unref_locked(g, r, true);
	pthread_mutex_unlock(&g->mu);
	if (last)
		region_unmap(g, r);
}

/*
 * Under mu: share an existing mapping of (dev, handle). 1 (shared, *id set),
 * 0 (none), -EINVAL (mapped with another size).
 */
static int region_share(struct cn_gpu *g, int dev, const uint8_t *handle, uint64_t size,
			uint32_t *id, char *err, size_t errlen)
{
	struct region *r = region_by_handle(g, dev, handle);

	if (!r)
		return 0;
	if (r->size != size) {
		say(err, errlen, "handle already mapped as region %u of %llu bytes, not %llu",
		    r->id, (unsigned long long)r->size, (unsigned long long)size);
		return -EINVAL;
	}
	r->refs++;
	*id = r->id;
	return 1;
}

/* Under mu: put @r in the table with a fresh id. 0 or -ENOMEM. */
static int region_insert(struct cn_gpu *g, struct region *r)
{
	if (g->nregions == g->cap_regions) {
		unsigned cap = g->cap_regions ? g->cap_regions * 2 : 16;
		struct region **grown = realloc(g->regions, cap * sizeof(*grown));

		if (!grown)
			return -ENOMEM;
		g->regions = grown;
		g->cap_regions = cap;
	}
	r->id = region_new_id(g);
	g->regions[g->nregions++] = r;
	return 0;
}

int cn_gpu_region_open(struct cn_gpu *g, int dev, const uint8_t handle[CN_GPU_IPC_HANDLE_LEN],
		       uint64_t size, uint32_t *id, char *err, size_t errlen)
{
	struct region *r = NULL;
	cudaIpcMemHandle_t h;
	void *p = NULL;
	cudaError_t e;
	int rc;

	if (!g->info.present) {
		say(err, errlen, "%s", g->info.reason);
		return -ENODEV;
	}
	if (dev < 0 || (unsigned)dev >= g->ndev) {
		say(err, errlen, "device %d is not a device here (%u devices)", dev, g->ndev);
		return -ENODEV;
	}
	if (!handle || !id)
		return -EINVAL;
	if (size == 0) {
		say(err, errlen, "region size 0");
		DEV_ADD(g, dev, region_errors, 1);
		return -EINVAL;
	}
	pthread_mutex_lock(&g->mu);
	rc = region_share(g, dev, handle, size, id, err, errlen);
	pthread_mutex_unlock(&g->mu);
	if (rc == 1)
		return 0;
	if (rc < 0)
		goto refused;

	/* Map outside the mutex: copies on other cores keep going meanwhile. */
	memcpy(&h, handle, sizeof(h));
	e = cudaSetDevice(dev);
	if (e == cudaSuccess)
		e = cudaIpcOpenMemHandle(&p, h, cudaIpcMemLazyEnablePeerAccess);
	if (e != cudaSuccess) {
		cuda_say(err, errlen, "cudaIpcOpenMemHandle", e);
		rc = -EINVAL;
		goto refused;
	}
	if (g->get_range) {
		CUdeviceptr base = 0, dp = (CUdeviceptr)(uintptr_t)p;
		size_t asize = 0;

		/* A size past the allocation would let a copy fault on the device, which
		 * poisons this process's context for every session: refuse it here. */
		if (g->get_range(&base, &asize, dp) == CUDA_SUCCESS && dp >= base &&
		    size > asize - (dp - base)) {
			say(err, errlen, "region size %llu is past the allocation (%llu bytes)",
			    (unsigned long long)size, (unsigned long long)(asize - (dp - base)));
			rc = -EINVAL;
			goto unmap;
		}
	}
	r = calloc(1, sizeof(*r));
	if (!r) {
		rc = -ENOMEM;
		goto unmap;
	}
	r->dev = dev;
	memcpy(r->handle, handle, sizeof(r->handle));
	r->ptr = p;
	r->size = size;
	r->refs = 1;

	pthread_mutex_lock(&g->mu);
	/* Another session may have mapped the same handle meanwhile: share theirs. */
	rc = region_share(g, dev, handle, size, id, err, errlen);
	if (rc == 0) {
		rc = region_insert(g, r);
		if (rc == 0) {
			*id = r->id;
			/* before anyone can find it to close it: the gauge never dips */
			DEV_ADD(g, dev, regions_open, 1);
		}
	}
	pthread_mutex_unlock(&g->mu);
	if (rc == 0) {
		DEV_ADD(g, dev, region_opens, 1);
		return 0;
	}
	free(r);
unmap:
	/* The driver counts opens of a handle per context: give ours back (when we
	 * shared another session's mapping, theirs stays). */
	(void)cudaIpcCloseMemHandle(p);
	(void)cudaGetLastError();
	if (rc == 1)
		return 0;
refused:
	if (rc == -EINVAL)
		DEV_ADD(g, dev, region_errors, 1);
	return rc;
}

int cn_gpu_region_close(struct cn_gpu *g, uint32_t id)
{
	struct region *r;
	bool last;

	/* Lookup and drop under one lock: a repeated close finds nothing (-ENOENT). */
	pthread_mutex_lock(&g->mu);
	r = region_by_id(g, id);
	last = r && region_unref_locked(g, r, false);
	pthread_mutex_unlock(&g->mu);
	if (!r)
		return -ENOENT;
	if (last)
		region_unmap(g, r);
	return 0;
}

uint64_t cn_gpu_region_size(struct cn_gpu *g, uint32_t id)
{
	struct region *r;
	uint64_t size;

	pthread_mutex_lock(&g->mu);
	r = region_by_id(g, id);
	size = r ? r->size : 0;
	pthread_mutex_unlock(&g->mu);
	return size;
}

/* ---- copy batches ---- */

/* Core @core's stream for (dev, dir), made on first use; the caller has set @dev current. */
static int stream_get(struct cn_gpu *g, unsigned core, int dev, enum cn_gpu_dir dir,
		      cudaStream_t *out)
{
	size_t i = ((size_t)core * g->ndev + (size_t)dev) * 2 + (size_t)dir;
	cudaStream_t s = __atomic_load_n(&g->streams[i], __ATOMIC_ACQUIRE);
	cudaError_t e = cudaSuccess;

	if (!s) {
		pthread_mutex_lock(&g->mu);
		s = g->streams[i];
		if (!s) {
			e = cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
			if (e == cudaSuccess)
				__atomic_store_n(&g->streams[i], s, __ATOMIC_RELEASE);
			else
				(void)cudaGetLastError();
		}
		pthread_mutex_unlock(&g->mu);
	}
	*out = s;
	return e == cudaSuccess ? 0 : -EIO;
}

/* The stream's callback: after every copy of the batch, or with the device's error. */
static void CUDART_CB batch_done(cudaStream_t s, cudaError_t e, void *arg)
{
	struct cn_gpu_batch *b = arg;

	b->status = e == cudaSuccess ? 0 : -EIO;
	b->t_done = now_ns();
	b->done(b, b->status, b->arg);
}

int cn_gpu_batch_submit(struct cn_gpu *g, unsigned core, uint32_t region, enum cn_gpu_dir dir,
			const struct cn_gpu_copy *c, uint32_t n, cn_gpu_done_fn done, void *arg,
			struct cn_gpu_batch **out)
{
	enum cudaMemcpyKind kind = dir == CN_GPU_D2H ? cudaMemcpyDeviceToHost
						      : cudaMemcpyHostToDevice;
	struct cn_gpu_batch *b;
	cudaStream_t s = NULL;
	struct region *r;
	uint64_t bytes = 0;
	cudaError_t e;
	int dev;

	if (out)
		*out = NULL;
	if (!g->info.present)
		return -ENODEV;
	if (!out || !done || (n && !c) || core >= g->ncores ||
	    (dir != CN_GPU_D2H && dir != CN_GPU_H2D))
		return -EINVAL;
	b = malloc(sizeof(*b));
	if (!b)
		return -ENOMEM;

	pthread_mutex_lock(&g->mu);
	r = region_by_id(g, region);
	if (!r) {
		pthread_mutex_unlock(&g->mu);
		free(b);
		return -ENOENT;
	}
	for (uint32_t i = 0; i < n; i++) {
		if (c[i].off > r->size || c[i].len > r->size - c[i].off ||
		    (!c[i].host && c[i].len)) {
			pthread_mutex_unlock(&g->mu);
			free(b);
			return -ERANGE;
		}
		bytes += c[i].len;
	}
	r->inflight++; /* the mapping stays until cn_gpu_batch_free */
	pthread_mutex_unlock(&g->mu);

	dev = r->dev;
	*b = (struct cn_gpu_batch){.r = r, .done = done, .arg = arg, .dir = dir, .n = n,
				   .bytes = bytes, .t_submit = now_ns()};
	if (cudaSetDevice(dev) != cudaSuccess || stream_get(g, core, dev, dir, &s))
		goto fail_none_queued;
	for (uint32_t i = 0; i < n; i++) {
		char *d = (char *)r->ptr + c[i].off;

		if (dir == CN_GPU_D2H)
			e = cudaMemcpyAsync(c[i].host, d, c[i].len, kind, s);
		else
			e = cudaMemcpyAsync(d, c[i].host, c[i].len, kind, s);
		if (e != cudaSuccess)
			goto fail_drain;
	}
	*out = b;
	/* From here b belongs to the callback (and then to the caller): do not touch it. */
	e = cudaStreamAddCallback(s, batch_done, b, 0);
	if (e != cudaSuccess) {
		*out = NULL;
		goto fail_drain;
	}
	DEV_ADD(g, dev, batches, 1);
	return 0;

fail_drain:
	/* Some copies may be queued, and no completion will tell about them: wait
	 * for them, so the caller gets an error with nothing left pending on its
	 * memory, and done is never called. */
	(void)cudaGetLastError();
	(void)cudaStreamSynchronize(s);
fail_none_queued:
	(void)cudaGetLastError();
	region_put_batch(g, r);
	free(b);
	return -EIO;
}

void cn_gpu_batch_free(struct cn_gpu *g, struct cn_gpu_batch *b)
{
	int dev;

	if (!g || !b)
		return;
	dev = b->r->dev;
	if (b->status) {
		DEV_ADD(g, dev, copy_errors, 1);
	} else if (b->dir == CN_GPU_D2H) {
		DEV_ADD(g, dev, d2h_copies, b->n);
		DEV_ADD(g, dev, d2h_bytes, b->bytes);
	} else {
		DEV_ADD(g, dev, h2d_copies, b->n);
		DEV_ADD(g, dev, h2d_bytes, b->bytes);
	}
	if (b->status == 0 && b->bytes > 0) {
		struct cn_gpu_tput *t = &g->dev[dev].tput[b->dir];
		uint64_t ns = b->t_done > b->t_submit ? b->t_done - b->t_submit : 0;

		__atomic_fetch_add(&t->bucket[cn_gpu_tput_bucket(b->bytes, ns)], 1, __ATOMIC_RELAXED);
		__atomic_fetch_add(&t->sum_mbps, ns ? b->bytes * 1000 / ns : 0, __ATOMIC_RELAXED);
	}
	region_put_batch(g, b->r);
	free(b);
}

/* ---- helpers for the client library ---- */

int cn_gpu_runtime_probe(int *ndev, char *err, size_t errlen)
{
	int n = 0;
	int rc = runtime_ndev(&n, err, errlen);

	if (ndev)
		*ndev = n;
	return rc;
}

int cn_gpu_ptr_device(const void *p)
{
	struct cudaPointerAttributes a;
	cudaError_t e;

	if (!p)
		return -1;
	e = cudaPointerGetAttributes(&a, p);
	if (e != cudaSuccess) {
		(void)cudaGetLastError();
		return -1;
	}
	return a.type == cudaMemoryTypeDevice ? a.device : -1;
}

int cn_gpu_bus_id(int dev, char out[CN_GPU_BUS_ID_LEN])
{
	int n;

	if (runtime_ndev(&n, NULL, 0) || dev < 0 || dev >= n)
		return -ENODEV;
	if (cudaDeviceGetPCIBusId(out, CN_GPU_BUS_ID_LEN, dev) != cudaSuccess) {
		(void)cudaGetLastError();
		return -ENODEV;
	}
	return 0;
}

int cn_gpu_ipc_export(void *base, uint8_t handle[CN_GPU_IPC_HANDLE_LEN], int *dev, char *err,
		      size_t errlen)
{
	struct cudaPointerAttributes a;
	cudaIpcMemHandle_t h;
	int n, cur = -1;
	cudaError_t e;

	if (runtime_ndev(&n, err, errlen))
		return -ENODEV;
	if (!base || !handle || !dev) {
		say(err, errlen, "NULL argument");
		return -EINVAL;
	}
	e = cudaPointerGetAttributes(&a, base);
	if (e != cudaSuccess) {
		cuda_say(err, errlen, "cudaPointerGetAttributes", e);
		return -EINVAL;
	}
	if (a.type != cudaMemoryTypeDevice) {
		say(err, errlen, "%p is not device memory", base);
		return -EINVAL;
	}
	/* The handle is the pointer's device's: make it current, then put the caller's back. */
	if (cudaGetDevice(&cur) != cudaSuccess)
		cur = -1;
	e = cudaSetDevice(a.device);
	if (e == cudaSuccess)
		e = cudaIpcGetMemHandle(&h, base);
	if (cur >= 0 && cur != a.device)
		(void)cudaSetDevice(cur);
	if (e != cudaSuccess) {
		cuda_say(err, errlen, "cudaIpcGetMemHandle", e);
		return -EINVAL;
	}
	memcpy(handle, &h, sizeof(h));
	*dev = a.device;
	return 0;
}

int cn_gpu_copy_sync(void *dst, const void *src, size_t len)
{
	int n;
	char ignored[8];

	if (runtime_ndev(&n, ignored, sizeof(ignored)))
		return -ENODEV;
	if (len == 0)
		return 0;
	if (!dst || !src)
		return -EINVAL;
	if (cudaMemcpy(dst, src, len, cudaMemcpyDefault) != cudaSuccess) {
		(void)cudaGetLastError();
		return -EIO;
	}
	return 0;
}

/* ---- paged KV layout ---- */

/* Copy the ids to the device, launch, wait. */
static int run_kernel(struct cn_gpu *g, bool pack, void *packed, void *paged, const uint32_t *ids,
		      uint32_t n, uint32_t block)
{
	uint32_t *dids = NULL;
	cudaError_t e;
	int dev = -1;

	if (!g || !g->info.present)
		return -ENODEV;
	if (block == 0 || block % 4 || (n && (!packed || !paged || !ids)))
		return -EINVAL;
	if (n == 0)
		return 0;
	e = cudaGetDevice(&dev);
	if (e == cudaSuccess)
		e = cudaMalloc((void **)&dids, (size_t)n * sizeof(*dids));
	if (e != cudaSuccess)
		goto out;
	e = cudaMemcpy(dids, ids, (size_t)n * sizeof(*dids), cudaMemcpyHostToDevice);
	if (e != cudaSuccess)
		goto out;
	e = (cudaError_t)(pack ? cn_gpu_pack_launch(packed, paged, dids, n, block, NULL)
			       : cn_gpu_unpack_launch(paged, packed, dids, n, block, NULL));
	if (e != cudaSuccess)
		goto out;
	if ((unsigned)dev < g->ndev)
		DEV_ADD(g, dev, kernel_launches, 1);
	e = cudaStreamSynchronize(NULL);
out:
	if (dids && cudaFree(dids) != cudaSuccess && e == cudaSuccess)
		e = cudaErrorUnknown;
	if (e != cudaSuccess) {
		(void)cudaGetLastError();
		return -EIO;
	}
	return 0;
}

int cn_gpu_pack(struct cn_gpu *g, void *dst, const void *base, const uint32_t *ids, uint32_t n,
		uint32_t block)
{
	return run_kernel(g, true, dst, (void *)base, ids, n, block);
}

int cn_gpu_unpack(struct cn_gpu *g, void *base, const void *src, const uint32_t *ids, uint32_t n,
		  uint32_t block)
{
	return run_kernel(g, false, (void *)src, base, ids, n, block);
}

/* ---- GPUDirect RDMA ---- */

int cn_gpu_dmabuf(const void *p, size_t len, int *fd, uint64_t *offset, char *err, size_t errlen)
{
	PFN_cuMemGetHandleForAddressRange_v11070 get_handle = NULL;
	uintptr_t start, end, pg;
	int n, h = -1;
	long psz;
	CUresult r;

	if (runtime_ndev(&n, err, errlen))
		return -ENODEV;
	if (!p || !len || !fd || !offset) {
		say(err, errlen, "NULL pointer or empty range");
		return -EINVAL;
	}
	if (driver_fn("cuMemGetHandleForAddressRange", (void **)&get_handle, err, errlen))
		return -EOPNOTSUPP;
	/* The driver wants the address and the size aligned to the host page size:
	 * hand out the enclosing pages and say where @p is in them. */
	psz = sysconf(_SC_PAGESIZE);
	pg = psz > 0 ? (uintptr_t)psz : 4096u;
	start = (uintptr_t)p & ~(pg - 1);
	if (len > UINTPTR_MAX - (uintptr_t)p - (pg - 1)) {
		say(err, errlen, "range wraps the address space");
		return -EINVAL;
	}
	end = ((uintptr_t)p + len + pg - 1) & ~(pg - 1);
	r = get_handle(&h, (CUdeviceptr)start, end - start, CU_MEM_RANGE_HANDLE_TYPE_DMA_BUF_FD, 0);
	if (r != CUDA_SUCCESS || h < 0) {
		cu_say(err, errlen, "cuMemGetHandleForAddressRange(DMA_BUF_FD)", r);
		return -EOPNOTSUPP;
	}
	*fd = h;
	*offset = (uint64_t)((uintptr_t)p - start);
	return 0;
}

void cn_gpu_set_rdma_mode(struct cn_gpu *g, const char *mode, const char *reason)
{
	pthread_mutex_lock(&g->mu);
	snprintf(g->info.rdma_mode, sizeof(g->info.rdma_mode), "%s", mode ? mode : "none");
	snprintf(g->info.rdma_reason, sizeof(g->info.rdma_reason), "%s", reason ? reason : "");
	pthread_mutex_unlock(&g->mu);
}
