/* SPDX-License-Identifier: Apache-2.0 */
/*
 * GPU tier: copies between an inference engine's device memory (L0) and the
 * node's L1 slabs, on CUDA copy engines.
 *
 * This header exposes no CUDA type, so everything that includes it builds
 * without the CUDA toolkit. Two implementations sit behind it:
 *   - gpu_cuda.c (meson -Dcuda=auto|enabled and /usr/local/cuda found): the
 *     CUDA runtime, linked statically (libcudart_static), so a node binary
 *     runs on a host without the toolkit and finds the driver at run time;
 *   - gpu_none.c (CUDA not built): the tier is always absent.
 * Either way, when no device is usable cn_gpu_open() still succeeds and the
 * tier is *absent*: cn_gpu_present() is false, cn_gpu_reason() says why (the
 * CUDA runtime's own words, e.g. "cudaGetDeviceCount: cudaErrorNoDevice: no
 * CUDA-capable device is detected"), and every GPU call fails with -ENODEV.
 * Nothing else in the node depends on the tier being present.
 *
 * Device memory reaches the node in two ways:
 *   - regions: a co-located engine exports an allocation as a CUDA IPC
 *     handle (cn_gpu_ipc_export(), 64 opaque bytes) and the client library
 *     sends it to the node (GPU_REGISTER); the node maps it once per
 *     process and device (cn_gpu_region_open(), refcounted: two sessions
 *     registering one allocation share the mapping) and addresses chunks as
 *     (region, offset, length);
 *   - in-process device pointers (client library side): cn_gpu_copy_sync()
 *     copies between a device pointer and host memory.
 *
 * Copies: a batch (struct cn_gpu_batch) of chunk copies in one direction is
 * queued on a stream of its own (core, device, direction), in order, and
 * completes as a whole: the tier calls @done from a CUDA runtime thread
 * once every copy of the batch finished (or failed). @done must not call
 * CUDA; the node's @done posts the batch to its worker through the
 * transport's wake path, so no worker ever waits on a copy. L1 slabs are
 * host memory pinned with cn_gpu_host_register() (cudaHostRegister of the
 * whole pool), so each chunk copy is one DMA by a copy engine.
 *
 * Paged KV layout: cn_gpu_pack() gathers fixed-size blocks scattered in a
 * device buffer (a list of block ids) into one contiguous device chunk and
 * cn_gpu_unpack() scatters one back (a CUDA kernel, gather.cu), so a chunk
 * is one DMA instead of one per block. cn_gpu_pack_ref()/unpack_ref() are
 * the same on host memory: the reference the kernel is tested against.
 *
 * GPUDirect RDMA: cn_gpu_dmabuf() gives a dma-buf fd for a device range
 * (cuMemGetHandleForAddressRange, reached through the runtime's driver entry
 * point so the driver library is not linked); the verbs layer registers it
 * with ibv_reg_dmabuf_mr, else tries ibv_reg_mr on the device pointer
 * (peer-memory module), else stages through host memory. cn_gpu_set_rdma_mode()
 * records which, and why, for the status tree.
 *
 * Threads: every function may be called from any thread. Regions and the
 * stream table are guarded by a mutex (registration is rare; copies take it
 * only to find their stream); @core (< cfg.ncores) picks a stream slot and
 * has one submitting thread at a time; counters are per device atomics.
 */
#ifndef CN_GPU_H
#define CN_GPU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cn_metrics.h"

#define CN_GPU_IPC_HANDLE_LEN 64u /* sizeof(cudaIpcMemHandle_t) */
#define CN_GPU_MAX_DEVICES    16u
#define CN_GPU_REASON_LEN     256u
#define CN_GPU_BUS_ID_LEN     16u /* "0000:3b:00.0" and its NUL */

struct cn_gpu;

struct cn_gpu_cfg {
	unsigned ncores;   /* counter and stream slots, 1..CN_MAX_CORES */
	const char *mode;  /* "auto" (use a device when there is one) or "off" */
};

/* Per-device counters (one struct per device, atomically added). */
#define CN_GPU_DEV_METRICS(X)                                                              \
	X(d2h_copies, COUNTER, "chunk copies device -> L1 (STORE from GPU)")                 \
	X(d2h_bytes, COUNTER, "bytes copied device -> L1")                                   \
	X(h2d_copies, COUNTER, "chunk copies L1 -> device (RETRIEVE to GPU)")                \
	X(h2d_bytes, COUNTER, "bytes copied L1 -> device")                                   \
	X(batches, COUNTER, "copy batches submitted (one request's chunks in one direction)") \
	X(copy_errors, COUNTER, "batches that failed on the device (the request's chunks are discarded)") \
	X(regions_open, GAUGE, "IPC regions mapped now")                                     \
	X(region_opens, COUNTER, "IPC handles mapped (cudaIpcOpenMemHandle)")                \
	X(region_errors, COUNTER, "IPC handles refused (bad handle, wrong device)")          \
	X(kernel_launches, COUNTER, "gather/scatter kernels launched")

struct cn_gpu_dev_stats {
	CN_GPU_DEV_METRICS(CN_METRIC_FIELD)
};

extern const struct cn_metric_desc cn_gpu_dev_metric_desc[];
extern const unsigned cn_gpu_dev_metric_count;

/* Device facts for the status tree. */
struct cn_gpu_dev_info {
	int ordinal;
	char name[96];
	char pci_bus_id[32];
	uint64_t mem_total;
	int cc_major, cc_minor;
	int copy_engines; /* asyncEngineCount */
};

/* The tier as the status tree shows it. */
struct cn_gpu_info {
	bool built;	  /* compiled with CUDA */
	bool present;	  /* a usable device; false: reason says why */
	char reason[CN_GPU_REASON_LEN];
	int runtime_version, driver_version; /* 0 when unknown */
	unsigned ndev;
	bool host_registered;	   /* L1 pool pinned with cudaHostRegister */
	char host_reason[CN_GPU_REASON_LEN]; /* why not, when it is not */
	char rdma_mode[16];	   /* "dmabuf", "peer-memory", "staging", "none" */
	char rdma_reason[CN_GPU_REASON_LEN];
	struct cn_gpu_dev_info dev[CN_GPU_MAX_DEVICES];
};

/**
 * cn_gpu_open - probe CUDA and make the tier (present or absent).
 * Returns 0 (even with no device: see cn_gpu_present), -EINVAL for a bad
 * cfg (unknown mode, ncores out of range), -ENOMEM. *out is owned by the
 * caller until cn_gpu_close().
 */
int cn_gpu_open(const struct cn_gpu_cfg *cfg, struct cn_gpu **out);

/** cn_gpu_close - unregister host memory, unmap regions, destroy streams; NULL ok. */
void cn_gpu_close(struct cn_gpu *g);

/** cn_gpu_present - true when at least one device is usable. */
bool cn_gpu_present(const struct cn_gpu *g);

/** cn_gpu_reason - why the tier is absent ("" when present). Lives as long as @g. */
const char *cn_gpu_reason(const struct cn_gpu *g);

/** cn_gpu_get_info - a snapshot for the status tree. */
void cn_gpu_get_info(const struct cn_gpu *g, struct cn_gpu_info *out);

/** cn_gpu_dev_stats - device @dev's counters (read with CN_STAT_GET); NULL if out of range. */
const struct cn_gpu_dev_stats *cn_gpu_dev_stats(const struct cn_gpu *g, unsigned dev);

/**
 * cn_gpu_host_register - pin [base, base+len) for DMA on every device
 * (cudaHostRegister, portable). Once per range. 0, -ENODEV (absent),
 * -EIO (CUDA refused: the reason is kept for cn_gpu_get_info; copies then
 * still work, through the driver's staging, slower).
 */
int cn_gpu_host_register(struct cn_gpu *g, void *base, size_t len);

/* ---- regions (node side) ---- */

/**
 * cn_gpu_region_open - map an IPC handle of device @dev's memory, @size
 * bytes from the handle's allocation base, and return the tier's region id
 * in *id (> 0). A handle already mapped is shared (refcount; with the same
 * @size, another is -EINVAL). 0, -ENODEV (absent, or @dev is not a device
 * here), -EINVAL (bad handle or size: the CUDA error goes to @err), -ENOMEM.
 */
int cn_gpu_region_open(struct cn_gpu *g, int dev, const uint8_t handle[CN_GPU_IPC_HANDLE_LEN],
		       uint64_t size, uint32_t *id, char *err, size_t errlen);

/**
 * cn_gpu_dev_by_bus_id - the node's ordinal of the device at PCI bus id
 * @bus_id ("0000:3b:00.0", any case), so a client whose CUDA numbers
 * devices differently (CUDA_VISIBLE_DEVICES) still names the right one.
 * The ordinal, or -ENODEV (absent, or no such device here).
 */
int cn_gpu_dev_by_bus_id(const struct cn_gpu *g, const char *bus_id);

/** cn_gpu_region_close - drop one reference to region @id; 0 or -ENOENT. */
int cn_gpu_region_close(struct cn_gpu *g, uint32_t id);

/** cn_gpu_region_size - the region's size, or 0 when @id is not open. */
uint64_t cn_gpu_region_size(struct cn_gpu *g, uint32_t id);

/* ---- copy batches (node side) ---- */

enum cn_gpu_dir {
	CN_GPU_D2H = 0, /* device region -> host (STORE from GPU) */
	CN_GPU_H2D = 1, /* host -> device region (RETRIEVE to GPU) */
};

struct cn_gpu_copy {
	void *host;	 /* L1 slab bytes (pinned) */
	uint64_t off;	 /* offset in the region */
	uint32_t len;
};

struct cn_gpu_batch;

/*
 * Called once per submitted batch, from a CUDA runtime thread, when all
 * its copies are done. @status: 0 or -EIO (a copy failed on the device).
 * Must not call CUDA or block.
 */
typedef void (*cn_gpu_done_fn)(struct cn_gpu_batch *b, int status, void *arg);

/**
 * cn_gpu_batch_submit - queue @n copies between region @region and host
 * memory on core @core's stream for the region's device, then a completion
 * that calls @done(@b, status, @arg). Every copy is checked first (offset +
 * len within the region): a bad one fails the whole batch with -ERANGE
 * before anything is queued. On success *out (owned by the tier until
 * cn_gpu_batch_free) is the batch, and @done is called exactly once.
 * On -EIO nothing of the batch is left pending. 0, -ENODEV, -EINVAL (@core
 * out of range, no @done or @out), -ENOENT (no such region), -ERANGE, -EIO,
 * -ENOMEM. Counted at cn_gpu_batch_free(): copies and bytes of a batch that
 * succeeded, copy_errors for one that did not.
 */
int cn_gpu_batch_submit(struct cn_gpu *g, unsigned core, uint32_t region, enum cn_gpu_dir dir,
			const struct cn_gpu_copy *c, uint32_t n, cn_gpu_done_fn done, void *arg,
			struct cn_gpu_batch **out);

/** cn_gpu_batch_free - after @done ran: account the batch and free it. */
void cn_gpu_batch_free(struct cn_gpu *g, struct cn_gpu_batch *b);

/*
 * Copy throughput, per device and direction: a histogram of the GB/s of
 * each successful batch (its bytes over the time from submit to its
 * completion callback, so queueing behind earlier batches on the stream
 * counts). Bucket i holds batches of at most cn_gpu_tput_le[i] GB/s
 * (0.0625 .. 256, doubling; the last bound is +inf); sum_mbps is the sum of
 * the batches' MB/s (for a mean). Counted in cn_gpu_batch_free().
 */
#define CN_GPU_TPUT_BUCKETS 14u
extern const double cn_gpu_tput_le[CN_GPU_TPUT_BUCKETS];

struct cn_gpu_tput {
	uint64_t bucket[CN_GPU_TPUT_BUCKETS];
	uint64_t count;
	uint64_t sum_mbps;
};

/** cn_gpu_tput_get - a snapshot of device @dev's histogram for @dir: 0, or -ENOENT (no such device). */
int cn_gpu_tput_get(const struct cn_gpu *g, unsigned dev, enum cn_gpu_dir dir,
		    struct cn_gpu_tput *out);

/** cn_gpu_tput_bucket - the bucket of @bytes moved in @ns (0 ns: the last bucket). */
unsigned cn_gpu_tput_bucket(uint64_t bytes, uint64_t ns);

/** cn_gpu_tput_quantile - the bound (GB/s) of the bucket that holds quantile @q (0..1); 0 if empty. */
double cn_gpu_tput_quantile(const struct cn_gpu_tput *t, double q);

/**
 * cn_gpu_sync - wait until every batch submitted so far has completed (and
 * its @done has returned). For shutdown: after it, no @done call is left
 * pending. NULL or absent: returns at once.
 */
void cn_gpu_sync(struct cn_gpu *g);

/* ---- helpers for the client library (an engine's own process) ---- */

/**
 * cn_gpu_runtime_probe - can this process use CUDA? 0 and the device count
 * in *ndev, or -ENODEV with the runtime's reason in @err.
 */
int cn_gpu_runtime_probe(int *ndev, char *err, size_t errlen);

/**
 * cn_gpu_ptr_device - the device whose memory @p is, or -1 for host memory
 * (or when CUDA is not usable here). For the client library's
 * store/retrieve, which accept device pointers of their own process.
 */
int cn_gpu_ptr_device(const void *p);

/**
 * cn_gpu_ipc_export - the IPC handle of the device allocation that starts
 * at @base (cudaIpcGetMemHandle; @base must be what cudaMalloc returned),
 * and its device in *dev. 0, -ENODEV, -EINVAL (the CUDA error in @err).
 */
int cn_gpu_ipc_export(void *base, uint8_t handle[CN_GPU_IPC_HANDLE_LEN], int *dev, char *err,
		      size_t errlen);

/**
 * cn_gpu_bus_id - the PCI bus id of this process's device @dev
 * (cudaDeviceGetPCIBusId) into @out. 0, or -ENODEV.
 */
int cn_gpu_bus_id(int dev, char out[CN_GPU_BUS_ID_LEN]);

/**
 * cn_gpu_copy_sync - copy @len bytes between any two of host and device
 * memory of this process and wait (cudaMemcpy, direction inferred).
 * 0, -ENODEV, -EIO.
 */
int cn_gpu_copy_sync(void *dst, const void *src, size_t len);

/* ---- paged KV layout ---- */

/**
 * cn_gpu_pack - gather blocks @ids[0..n) of @block bytes each from the
 * device buffer @base into the contiguous device chunk @dst (n * block
 * bytes), on the current device's default stream, and wait. cn_gpu_unpack
 * does the reverse. @ids is host memory; ids are not bounds-checked against
 * the buffer (the caller's layout). @block must be a multiple of 4.
 * 0, -ENODEV, -EINVAL, -EIO.
 */
int cn_gpu_pack(struct cn_gpu *g, void *dst, const void *base, const uint32_t *ids, uint32_t n,
		uint32_t block);
int cn_gpu_unpack(struct cn_gpu *g, void *base, const void *src, const uint32_t *ids, uint32_t n,
		  uint32_t block);

/** The same on host memory: the reference the kernels are checked against. */
void cn_gpu_pack_ref(void *dst, const void *base, const uint32_t *ids, uint32_t n, uint32_t block);
void cn_gpu_unpack_ref(void *base, const void *src, const uint32_t *ids, uint32_t n,
		       uint32_t block);

/* ---- GPUDirect RDMA ---- */

/**
 * cn_gpu_dmabuf - a dma-buf fd (caller closes) for device range [p, p+len)
 * and the offset of @p in it, for ibv_reg_dmabuf_mr. 0, -ENODEV,
 * -EOPNOTSUPP (driver without dma-buf export: the reason in @err).
 */
int cn_gpu_dmabuf(const void *p, size_t len, int *fd, uint64_t *offset, char *err, size_t errlen);

/** cn_gpu_set_rdma_mode - record the GPUDirect mode ("dmabuf", ...) and why. */
void cn_gpu_set_rdma_mode(struct cn_gpu *g, const char *mode, const char *reason);

#endif /* CN_GPU_H */
