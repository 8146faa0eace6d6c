/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The raw RDMA benchmark (tools/rdma_bench.c) as a function, so that both
 * cachenode-rdma-bench and `cachenode-bench --raw` run it. Built only when
 * the build has libibverbs and librdmacm (CN_HAVE_VERBS).
 */
#ifndef CN_RDMA_BENCH_H
#define CN_RDMA_BENCH_H

/**
 * cn_rdma_bench_main - run the raw benchmark with command line @argv
 * (argv[0] is the program name, as for main(); the options are documented
 * by --help). It parses with getopt_long(), so optind must be at its start
 * value (no earlier getopt() in the process). Prints to stdout / stderr.
 * Returns the exit status: 0 ok, 1 failure, 2 usage, 77 no usable RDMA device.
 */
int cn_rdma_bench_main(int argc, char **argv);

#endif /* CN_RDMA_BENCH_H */
