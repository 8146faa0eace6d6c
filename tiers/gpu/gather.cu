// SPDX-License-Identifier: Apache-2.0
//
// Paged KV layout: gather (pack) fixed-size blocks scattered in a device
// buffer into one contiguous chunk, and scatter (unpack) one back.
//
// The grid is (offset, block index): blockIdx.y walks the block list (with a
// stride when there are more than 65535 blocks) and blockIdx.x/threadIdx.x
// walk the words of one block, so a large block is copied by many threads
// and small blocks still fill the device through the y dimension. Words are
// 16 bytes (uint4) when the block size and both pointers allow it, else 4
// bytes, else single bytes (misaligned pointers).
#include <cstddef>
#include <cstdint>

#include <cuda_runtime.h>

#include "gpu_internal.h"

namespace {

constexpr unsigned kThreads = 256;
constexpr unsigned kMaxGridX = 64;    // thread blocks per KV block: 64 * 256 words
constexpr unsigned kMaxGridY = 65535; // hardware limit of gridDim.y

// dst[i] = base[ids[i]] for every block i, one word of type T per thread step.
template <typename T, bool kPack>
__global__ void move_blocks(T *packed, T *paged, const uint32_t *ids, uint32_t n, uint32_t words)
{
	for (uint32_t b = blockIdx.y; b < n; b += gridDim.y) {
		T *p = packed + (size_t)b * words;
		T *q = paged + (size_t)ids[b] * words;
		for (uint32_t w = blockIdx.x * blockDim.x + threadIdx.x; w < words;
		     w += gridDim.x * blockDim.x) {
			if (kPack)
				p[w] = q[w];
			else
				q[w] = p[w];
		}
	}
}

template <typename T, bool kPack>
cudaError_t launch_as(void *packed, void *paged, const uint32_t *ids, uint32_t n, uint32_t block,
		      cudaStream_t s)
{
	uint32_t words = block / sizeof(T);
	unsigned gx = (words + kThreads - 1) / kThreads;
	dim3 grid(gx < kMaxGridX ? gx : kMaxGridX, n < kMaxGridY ? n : kMaxGridY);

	move_blocks<T, kPack><<<grid, kThreads, 0, s>>>(static_cast<T *>(packed),
							static_cast<T *>(paged), ids, n, words);
	return cudaGetLastError();
}

bool aligned(const void *p, uint32_t block, size_t a)
{
	return reinterpret_cast<uintptr_t>(p) % a == 0 && block % a == 0;
}

template <bool kPack>
int launch(void *packed, void *paged, const uint32_t *ids, uint32_t n, uint32_t block,
	   void *stream)
{
	cudaStream_t s = static_cast<cudaStream_t>(stream);

	if (n == 0 || block == 0)
		return cudaSuccess;
	if (aligned(packed, block, 16) && aligned(paged, block, 16))
		return launch_as<uint4, kPack>(packed, paged, ids, n, block, s);
	if (aligned(packed, block, 4) && aligned(paged, block, 4))
		return launch_as<uint32_t, kPack>(packed, paged, ids, n, block, s);
	return launch_as<uint8_t, kPack>(packed, paged, ids, n, block, s);
}

} // namespace

extern "C" int cn_gpu_pack_launch(void *dst, const void *base, const uint32_t *dev_ids, uint32_t n,
				  uint32_t block, void *stream)
{
	return launch<true>(dst, const_cast<void *>(base), dev_ids, n, block, stream);
}

extern "C" int cn_gpu_unpack_launch(void *base, const void *src, const uint32_t *dev_ids,
				    uint32_t n, uint32_t block, void *stream)
{
	return launch<false>(const_cast<void *>(src), base, dev_ids, n, block, stream);
}
