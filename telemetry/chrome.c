/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Chrome trace-event JSON sink: one complete ("ph":"X") event per span, plus
 * process_name / thread_name metadata ("ph":"M"), in the JSON object format
 * ({"traceEvents":[...]}) that chrome://tracing and ui.perfetto.dev load.
 * The file is valid JSON once close() has run; before that it is a prefix.
 *
 * Times: "ts" and "dur" are microseconds with ns resolution, converted from
 * TSC with rte_get_tsc_hz(). "ts" counts from the start of the first span
 * written. Perfetto rejects negative timestamps, and a span that completes
 * later (another core's ring, or a long op) may have started before that
 * first span: such a span is clipped to start at 0 and its args carry
 * "clipped_ns" with the part cut off. Numbers are printed with integer
 * arithmetic, so the output does not depend on the C locale.
 *
 * Runs on the drain thread only. stdio is fully buffered (1 MiB); a failed
 * write or flush returns -errno, which the drain counts as a subscriber error.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <rte_log.h>

#include "cn_tel.h"

#define CHROME_BUF (1u << 20)

struct chrome_sink {
	FILE *f;
	char *buf;
	char *path;
	uint64_t hz;
	uint64_t t0;
	bool have_t0;
	int pid;
	uint64_t named[65536 / 64]; /* bitmap: thread_name written for core */
};

static int io_err(void)
{
	return errno != 0 ? -errno : -EIO;
}

/* JSON string body (without the quotes). */
static void put_json_str(FILE *f, const char *s)
{
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c < 0x20)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
	}
}

static uint64_t tsc_to_ns(uint64_t d, uint64_t hz)
{
	return (d / hz) * UINT64_C(1000000000) + (d % hz) * UINT64_C(1000000000) / hz;
}

static int chrome_span(void *arg, const struct cn_tel_span *sp)
{
	struct chrome_sink *s = arg;
	uint64_t ts_ns, dur_ns, clipped = 0, start = sp->start_tsc;
	char opbuf[16];
	const char *op;

	if (!s->have_t0) {
		s->t0 = sp->start_tsc;
		s->have_t0 = true;
	}
	if (start < s->t0) {
		clipped = tsc_to_ns(s->t0 - start, s->hz);
		start = s->t0;
	}
	ts_ns = tsc_to_ns(start - s->t0, s->hz);
	dur_ns = sp->end_tsc > start ? tsc_to_ns(sp->end_tsc - start, s->hz) : 0;
	if (sp->op < CN_TEL_OP_MAX) {
		op = cn_tel_op_names[sp->op];
	} else {
		snprintf(opbuf, sizeof(opbuf), "op%u", (unsigned)sp->op);
		op = opbuf;
	}

	errno = 0;
	if (!(s->named[sp->core / 64] & (UINT64_C(1) << (sp->core % 64)))) {
		s->named[sp->core / 64] |= UINT64_C(1) << (sp->core % 64);
		if (fprintf(s->f,
			    ",\n{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":%d,\"tid\":%u,"
			    "\"args\":{\"name\":\"core %u\"}}",
			    s->pid, (unsigned)sp->core, (unsigned)sp->core) < 0)
			return io_err();
	}
	if (fprintf(s->f,
		    ",\n{\"name\":\"%s\",\"cat\":\"cachenode\",\"ph\":\"X\","
		    "\"ts\":%" PRIu64 ".%03u,\"dur\":%" PRIu64 ".%03u,\"pid\":%d,\"tid\":%u,"
		    "\"args\":{\"session\":%" PRIu64 ",\"keys\":%u,\"bytes\":%" PRIu64
		    ",\"status\":%d,\"tier\":%u",
		    op, ts_ns / 1000, (unsigned)(ts_ns % 1000), dur_ns / 1000,
		    (unsigned)(dur_ns % 1000), s->pid, (unsigned)sp->core, sp->session, sp->keys,
		    sp->bytes, sp->status, (unsigned)sp->tier) < 0)
		return io_err();
	if (clipped != 0 && fprintf(s->f, ",\"clipped_ns\":%" PRIu64, clipped) < 0)
		return io_err();
	if (fputs("}}", s->f) == EOF)
		return io_err();
	return 0;
}

static int chrome_flush(void *arg)
{
	struct chrome_sink *s = arg;

	errno = 0;
	return fflush(s->f) == 0 ? 0 : io_err();
}

static void chrome_free(struct chrome_sink *s)
{
	free(s->path);
	free(s->buf);
	free(s);
}

/* Terminates the JSON, closes the file and frees the sink. Errors are logged. */
static void chrome_close(void *arg)
{
	struct chrome_sink *s = arg;
	int bad;

	errno = 0;
	bad = fputs("\n]}\n", s->f) == EOF;
	bad |= fflush(s->f) != 0;
	if (bad)
		RTE_LOG(WARNING, USER1, "cachenode: chrome trace %s: write failed: %s\n", s->path,
			strerror(errno != 0 ? errno : EIO));
	if (fclose(s->f) != 0 && !bad)
		RTE_LOG(WARNING, USER1, "cachenode: chrome trace %s: close failed: %s\n", s->path,
			strerror(errno));
	chrome_free(s);
}

static const struct cn_tel_sub_ops chrome_ops = {
	.name = "chrome",
	.span = chrome_span,
	.flush = chrome_flush,
	.close = chrome_close,
};

/*
 * Creates (truncates) @path and writes the header. On success *ops and *arg
 * are ready for cn_tel_subscribe(), which takes ownership of *arg; a sink
 * that is never subscribed must be released with (*ops)->close(*arg).
 */
int cn_tel_chrome_sink_create(const char *path, const char *process_name,
			      const struct cn_tel_sub_ops **ops, void **arg)
{
	struct chrome_sink *s;
	int ret;

	if (path == NULL || ops == NULL || arg == NULL)
		return -EINVAL;
	if (process_name == NULL)
		process_name = "cachenode";
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		return -ENOMEM;
	s->hz = rte_get_tsc_hz();
	if (s->hz == 0) {
		ret = -ENODEV; /* EAL not initialised */
		goto free_sink;
	}
	s->pid = (int)getpid();
	s->path = strdup(path);
	s->buf = malloc(CHROME_BUF);
	if (s->path == NULL || s->buf == NULL) {
		ret = -ENOMEM;
		goto free_sink;
	}
	s->f = fopen(path, "w");
	if (s->f == NULL) {
		ret = -errno;
		goto free_sink;
	}
	setvbuf(s->f, s->buf, _IOFBF, CHROME_BUF);
	errno = 0;
	fprintf(s->f, "{\"traceEvents\":[\n{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":%d,"
		      "\"tid\":0,\"args\":{\"name\":\"", s->pid);
	put_json_str(s->f, process_name);
	fputs("\"}}", s->f);
	if (ferror(s->f) || fflush(s->f) != 0) {
		ret = io_err();
		goto close_file;
	}
	*ops = &chrome_ops;
	*arg = s;
	return 0;

close_file:
	fclose(s->f);
	unlink(path);
free_sink:
	chrome_free(s);
	return ret;
}
