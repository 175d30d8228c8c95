/* SPDX-License-Identifier: MIT */
/*
 * The control API: HTTP/1.1 with JSON bodies on a Unix socket (libmicrohttpd, one thread of
 * its own), driving a struct vmm. docs/api.md lists the endpoints.
 */
#ifndef YUN_VMM_API_API_H
#define YUN_VMM_API_API_H

struct vmm;
struct api_server;

/* Listen on path (a stale socket file there is replaced). Logs and returns -errno. */
int api_server_start(const char *path, struct vmm *m, struct api_server **out);
/* Stop serving and remove the socket file. */
void api_server_stop(struct api_server *s);

#endif
