/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DPDK telemetry shim (see cn_tel_dpdk.h). This file holds the only mutable
 * global of the project: DPDK 22.11 gives callbacks no context, so the one
 * active registration lives here, guarded by a reader-writer lock. Callbacks
 * take it for reading (several clients may call at once); unregister takes
 * it for writing, which also waits for callbacks in flight.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <string.h>

#include <rte_telemetry.h>

#include "cn_tel_dpdk.h"

#define CMD_MAX_LEN  55	 /* DPDK: strlen(cmd) < 56 */
#define HELP_MAX_LEN 127 /* DPDK: strlen(help) < RTE_TEL_MAX_STRING_LEN */

static struct {
	pthread_rwlock_t lock;
	const struct cn_tel_cmd *cmds;
	unsigned n;
	void *ctx; /* NULL: nothing registered */
} reg = {
	.lock = PTHREAD_RWLOCK_INITIALIZER,
};

static bool name_ok(const char *s)
{
	size_t len;

	if (s == NULL || s[0] != '/')
		return false;
	len = strlen(s);
	if (len > CMD_MAX_LEN)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '/'))
			return false;
	}
	return true;
}

static int trampoline(const char *cmd, const char *params, struct rte_tel_data *d)
{
	int ret = -ENODEV;

	pthread_rwlock_rdlock(&reg.lock);
	if (reg.ctx != NULL) {
		ret = -ENOENT;
		for (unsigned i = 0; i < reg.n; i++) {
			if (strcmp(cmd, reg.cmds[i].name) == 0) {
				ret = reg.cmds[i].fn(reg.ctx, params, d);
				break;
			}
		}
	}
	pthread_rwlock_unlock(&reg.lock);
	return ret;
}

int cn_tel_dpdk_register(const struct cn_tel_cmd *cmds, unsigned n, void *ctx)
{
	int ret = 0;

	if (cmds == NULL || n == 0 || ctx == NULL)
		return -EINVAL;
	for (unsigned i = 0; i < n; i++) {
		if (!name_ok(cmds[i].name) || cmds[i].fn == NULL)
			return -EINVAL;
		if (cmds[i].help == NULL || strlen(cmds[i].help) > HELP_MAX_LEN)
			return -EINVAL;
	}

	pthread_rwlock_wrlock(&reg.lock);
	if (reg.ctx != NULL) {
		pthread_rwlock_unlock(&reg.lock);
		return -EBUSY;
	}
	reg.cmds = cmds;
	reg.n = n;
	reg.ctx = ctx;
	pthread_rwlock_unlock(&reg.lock);

	/* outside the lock: a client may call a command as soon as it exists */
	for (unsigned i = 0; i < n; i++) {
		ret = rte_telemetry_register_cmd(cmds[i].name, trampoline, cmds[i].help);
		if (ret < 0) {
			cn_tel_dpdk_unregister();
			break;
		}
	}
	return ret < 0 ? ret : 0;
}

void cn_tel_dpdk_unregister(void)
{
	pthread_rwlock_wrlock(&reg.lock);
	reg.ctx = NULL;
	reg.cmds = NULL;
	reg.n = 0;
	pthread_rwlock_unlock(&reg.lock);
}
