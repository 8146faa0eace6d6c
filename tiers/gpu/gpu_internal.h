/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Private to tiers/gpu: what gpu_cuda.c, gpu_none.c, gpu_common.c and
 * gather.cu share. The kernel launchers are C-linkage functions of gather.cu
 * that take only plain types, so gather.cu is the one C++ translation unit.
 */
#ifndef CN_GPU_INTERNAL_H
#define CN_GPU_INTERNAL_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CN_GPU_OFF_REASON "disabled by --gpu off"

/* 0, or -EINVAL for a cfg cn_gpu_open() refuses; *off says mode "off". */
struct cn_gpu_cfg;
int cn_gpu_cfg_check(const struct cn_gpu_cfg *cfg, int *off);

/*
 * Launch the gather (pack) or scatter (unpack) kernel on @stream (a
 * cudaStream_t, 0 for the default stream): @n blocks of @block bytes,
 * @dev_ids in device memory. Does not wait. Returns the cudaError_t of the
 * launch as an int (0: launched).
 */
int cn_gpu_pack_launch(void *dst, const void *base, const uint32_t *dev_ids, uint32_t n,
		       uint32_t block, void *stream);
int cn_gpu_unpack_launch(void *base, const void *src, const uint32_t *dev_ids, uint32_t n,
			 uint32_t block, void *stream);

#ifdef __cplusplus
}
#endif

#endif /* CN_GPU_INTERNAL_H */
