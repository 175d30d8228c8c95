/* SPDX-License-Identifier: MIT */
/*
 * Firecracker's pre-boot endpoints (PUT /boot-source, /machine-config, /drives/ID,
 * /network-interfaces/ID, /vsock) as changes to yun-vmm's configuration. Each function checks
 * a Firecracker body field by field and changes the configuration's JSON (config.h's format:
 * the command line's options), which vmm_edit_config() then parses and checks as it does any
 * configuration; so a VM configured the Firecracker way is one the command line or
 * `PUT /vm/config` could describe, and the messages are theirs.
 */
#ifndef YUN_VMM_API_FIRECRACKER_H
#define YUN_VMM_API_FIRECRACKER_H

#include <stdbool.h>
#include <stddef.h>

#include "vmm/config.h"

/* One request: what the edit functions below take as their argument. */
struct fc_request {
	const char *id; /* the drive's or interface's id in the path */
	const struct json_t *body;
	bool patch; /* PATCH: the body's fields are all optional */
};

/* vmm_config_edit_fn's: (configuration JSON, struct fc_request *, message buffer). */
int fc_boot_source(struct json_t *cfg, void *req, char *err, size_t errlen);
int fc_machine_config(struct json_t *cfg, void *req, char *err, size_t errlen);
int fc_drive(struct json_t *cfg, void *req, char *err, size_t errlen);
int fc_network_interface(struct json_t *cfg, void *req, char *err, size_t errlen);
int fc_vsock(struct json_t *cfg, void *req, char *err, size_t errlen);

/* GET /machine-config: Firecracker's MachineConfiguration of a configuration. */
struct json_t *fc_machine_config_json(const struct vm_config *cfg);

#endif
