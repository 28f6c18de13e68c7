/*
 * end: the table of end causes (see end.h). The texts are those of the
 * access log's "reason" field; a detail is appended where the cause has one.
 */
#include "end.h"

#include <stdio.h>

struct end_row {
	const char *label;
	const char *text; /* "%s" marks where the detail goes */
	enum end_side side;
};

static const struct end_row END_TABLE[END_CAUSES] = {
    [END_CLIENT_EOF] = {"client_eof", "client EOF", END_BY_CLIENT},
    [END_BACKEND_EOF] = {"backend_eof", "backend EOF", END_BY_BACKEND},
    [END_CLIENT_ERROR] = {"client_error", "error: %s", END_BY_CLIENT},
    [END_BACKEND_ERROR] = {"backend_error", "error: %s", END_BY_BACKEND},
    [END_IDLE_TIMEOUT] = {"idle_timeout", "idle timeout", END_BY_PROXY},
    [END_LIFETIME] = {"lifetime_limit", "lifetime limit", END_BY_PROXY},
    [END_CLIENT_CLOSE] = {"client_close", "client close %s", END_BY_CLIENT},
    [END_CLIENT_NO_CLOSE] = {"client_eof_without_close", "client EOF without close frame",
			     END_BY_CLIENT},
    [END_CLIENT_CONN_ERROR] = {"client_connection_error", "client connection error", END_BY_CLIENT},
    [END_BACKEND_CONN_ERROR] = {"backend_connection_error", "backend connection error",
				END_BY_BACKEND},
    [END_PROTOCOL_ERROR] = {"protocol_error", "%s", END_BY_PROXY},
    [END_PING_TIMEOUT] = {"ping_timeout", "ping timeout", END_BY_PROXY},
    [END_SHUTDOWN] = {"shutdown", "shutdown", END_BY_PROXY},
    [END_ROUTE_REMOVED] = {"route_removed", "route removed", END_BY_PROXY},
    [END_SERVER_DOWN] = {"server_down", "server down", END_BY_PROXY},
    [END_CLIENT_CLOSED] = {"client_closed", "client closed", END_BY_CLIENT},
    [END_KEEPALIVE_TIMEOUT] = {"keepalive_timeout", "keep-alive timeout", END_BY_PROXY},
    [END_TLS_HANDSHAKE] = {"tls_handshake_failed", "TLS handshake failed", END_BY_CLIENT},
    [END_TLS_TIMEOUT] = {"tls_handshake_timeout", "TLS handshake timeout", END_BY_PROXY},
    [END_SEND_TIMEOUT] = {"send_timeout", "send timeout: client is not reading", END_BY_PROXY},
    [END_RESPONSE_DONE] = {"response_delivered", "response delivered", END_BY_PROXY},
    [END_LINGER_DONE] = {"linger_done", "linger done", END_BY_PROXY},
    [END_BACKEND_TIMEOUT] = {"backend_timeout", "backend stalled", END_BY_BACKEND},
    [END_BACKEND_CUT] = {"backend_cut", "backend closed in the middle of the response body",
			 END_BY_BACKEND},
    [END_BAD_RESPONSE_BODY] = {"bad_response_body", "malformed response body", END_BY_BACKEND},
    [END_BACKEND_FAILED] = {"backend_failed", "backend connection error during the response",
			    END_BY_BACKEND},
    [END_BAD_REQUEST_BODY] = {"bad_request_body", "malformed request body", END_BY_CLIENT},
    [END_CLIENT_CUT] = {"client_cut", "client closed during the request body", END_BY_CLIENT},
    [END_INTERNAL] = {"internal", "%s", END_BY_PROXY},
};

static const char *const SIDE_NAMES[] = {"client", "backend", "proxy"};

const char *end_label(enum end_cause c)
{
	return END_TABLE[c].label;
}

const char *end_side_str(enum end_cause c)
{
	return SIDE_NAMES[END_TABLE[c].side];
}

void end_text(enum end_cause c, const char *detail, char *out, size_t cap)
{
	const char *fmt = END_TABLE[c].text;
	const char *mark = fmt;
	while (*mark && !(mark[0] == '%' && mark[1] == 's'))
		mark++;
	if (*mark == '\0') /* no room for a detail: the text alone */
		snprintf(out, cap, "%s", fmt);
	else
		snprintf(out, cap, "%.*s%s%s", (int)(mark - fmt), fmt, detail ? detail : "",
			 mark + 2);
}
