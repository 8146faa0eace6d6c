/* SPDX-License-Identifier: Apache-2.0 */
/*
 * EAL set-up for unit tests: no hugepages, no PCI, no shared config, no
 * telemetry socket, a file prefix unique to the test process so tests can run
 * in parallel.
 */
#ifndef CN_TEST_EAL_H
#define CN_TEST_EAL_H

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <rte_eal.h>
#include <rte_errno.h>

/* --no-shconf still leaves an empty <runtime>/dpdk/<prefix> directory: remove it at exit. */
static char cn_test_eal_dir[4096];

static inline void cn_test_eal_rmdir(void)
{
	if (cn_test_eal_dir[0])
		rmdir(cn_test_eal_dir);
}

static inline int cn_test_eal_init(const char *name)
{
	char prefix[64];
	snprintf(prefix, sizeof(prefix), "--file-prefix=cntest_%s_%d", name, (int)getpid());
	char *argv[] = {
		(char *)name, "--no-huge", "--no-pci", "--no-shconf", "--no-telemetry",
		"-m", "512", "--log-level=lib.eal:error", prefix, "-l", "0", NULL,
	};
	int argc = (int)(sizeof(argv) / sizeof(argv[0])) - 1;
	int r = rte_eal_init(argc, argv);
	if (r < 0) {
		fprintf(stderr, "%s: rte_eal_init: %s\n", name, rte_strerror(rte_errno));
		return -rte_errno;
	}
	snprintf(cn_test_eal_dir, sizeof(cn_test_eal_dir), "%s", rte_eal_get_runtime_dir());
	atexit(cn_test_eal_rmdir);
	return 0;
}

#endif /* CN_TEST_EAL_H */
