/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DPDK telemetry command shim.
 *
 * DPDK 22.11's telemetry callbacks get no context argument
 * (rte_telemetry_register_cmd_arg arrived in 24.11), so this module keeps the
 * one registration the process may have: a table of commands and the context
 * they run against. Every command is registered with the same trampoline,
 * which finds the command's row by name and calls fn(ctx, params, d).
 *
 * Callbacks run on DPDK telemetry's threads (one per connected client), not
 * on lcores: a fn must read shared state with relaxed loads or snapshots.
 */
#ifndef CN_TEL_DPDK_H
#define CN_TEL_DPDK_H

#include <rte_telemetry.h>

struct cn_tel_cmd {
	const char *name; /* "/cachenode/stats": '/' first, [A-Za-z0-9_/], <= 55 chars */
	const char *help; /* < 128 chars */
	/*
	 * Fill @d (rte_tel_data_start_dict() ...). @params is the text after the
	 * first ',' of the request, or NULL when there is none. Return 0, or
	 * < 0 for an error (the client then gets {"<cmd>": null}).
	 */
	int (*fn)(void *ctx, const char *params, struct rte_tel_data *d);
};

/**
 * cn_tel_dpdk_register - register @n commands of @cmds, run against @ctx.
 * @cmds: the table; it must stay valid until cn_tel_dpdk_unregister()
 *   returns (a static const array is the usual choice). Not copied.
 * @ctx: handed to every fn; must not be NULL. Not owned.
 *
 * Validates the whole table first (names, help, fn), so a bad row registers
 * nothing. Works before or after rte_eal_init() and with --no-telemetry (the
 * commands then exist but nobody can call them).
 *
 * Return: 0; -EINVAL for a bad table or NULL ctx; -EBUSY if a registration is
 * already active; another -errno from rte_telemetry_register_cmd() (then the
 * rows registered before the failure answer -ENODEV, as after unregister).
 */
int cn_tel_dpdk_register(const struct cn_tel_cmd *cmds, unsigned n, void *ctx);

/**
 * cn_tel_dpdk_unregister - detach the table and the context.
 *
 * DPDK 22.11 cannot unregister a command: the names stay listed in "/" and a
 * late call returns -ENODEV (the client sees null). Waits for callbacks in
 * flight, so @ctx may be freed as soon as this returns. A new
 * cn_tel_dpdk_register() may follow; names it shares with the old table are
 * then listed twice by DPDK (22.11 does not check for duplicates), harmlessly.
 */
void cn_tel_dpdk_unregister(void);

#endif /* CN_TEL_DPDK_H */
