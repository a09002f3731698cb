/* SPDX-License-Identifier: MIT */
/*
 * The Prometheus exposition of a state root: the counters obs/metrics.h keeps, every VM's live
 * sample (report/stats.h), the VM states and the pool's gauges.
 */
#ifndef AGENTVM_METRICS_RENDER_H
#define AGENTVM_METRICS_RENDER_H

#include <stdio.h>

#include "base/error.h"
#include "obs/metrics.h"

/* The whole exposition text for this state root into f. 0 or -errno (err filled). */
int metrics_render(FILE *f, const struct metrics_pool *pool, struct avm_error *err);

#endif
