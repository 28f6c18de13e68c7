/*
 * end: why a connection, an exchange or a tunnel ended. One enum with stable
 * labels (for counters and, later, metrics) and the text the logs have
 * always carried, so every module reports an end the same way:
 * (cause, detail), where detail is an optional specific (an errno text, a
 * close code) that goes into the log line but never into a label.
 */
#ifndef SY_END_H
#define SY_END_H

#include <stddef.h>

enum end_side { END_BY_CLIENT, END_BY_BACKEND, END_BY_PROXY };

enum end_cause {
	/* tunnels and terminated WebSockets */
	END_CLIENT_EOF,		/* both directions done, the client's EOF came first */
	END_BACKEND_EOF,	/* ... the backend's */
	END_CLIENT_ERROR,	/* a socket error on the client side (detail: strerror) */
	END_BACKEND_ERROR,	/* ... on the backend side */
	END_IDLE_TIMEOUT,	/* timeouts.tunnel_idle */
	END_LIFETIME,		/* timeouts.tunnel_max */
	END_CLIENT_CLOSE,	/* the client's WebSocket close frame (detail: its code) */
	END_CLIENT_NO_CLOSE,	/* the client's EOF without a close frame */
	END_CLIENT_CONN_ERROR,	/* the client's connection failed (no detail) */
	END_BACKEND_CONN_ERROR, /* the bridge backend's connection failed */
	END_PROTOCOL_ERROR,	/* the client broke RFC 6455 (detail: what and the code) */
	END_PING_TIMEOUT,	/* no pong to our ping */
	/* any session */
	END_SHUTDOWN,	       /* SIGTERM's grace is over, or SIGQUIT */
	END_ROUTE_REMOVED,     /* a reload removed the route (on_remove) */
	END_SERVER_DOWN,       /* the tunnel's server went down (on_down = "close") */
	END_CLIENT_CLOSED,     /* the client closed an idle connection */
	END_KEEPALIVE_TIMEOUT, /* timeouts.keepalive between requests */
	END_TLS_HANDSHAKE,     /* the client's TLS handshake failed */
	END_TLS_TIMEOUT,       /* ... did not finish within timeouts.header */
	END_SEND_TIMEOUT,      /* timeouts.send: the client is not reading */
	END_RESPONSE_DONE,     /* the last response was delivered (Connection: close, errors) */
	END_LINGER_DONE,       /* ... and the client did not close within the drain time */
	END_BACKEND_CUT,       /* the backend closed in the middle of the response body */
	END_BAD_RESPONSE_BODY, /* the response body's framing was broken */
	END_BACKEND_FAILED,    /* the backend connection failed during the response */
	END_BACKEND_TIMEOUT,   /* the backend stopped reading the request or sending the body */
	END_BAD_REQUEST_BODY,  /* the request body's framing was broken */
	END_CLIENT_CUT,	       /* the client closed in the middle of the request body */
	END_INTERNAL,	       /* out of memory and the like (detail: what) */
	END_CAUSES
};

/* Stable snake_case label, e.g. "client_eof". */
const char *end_label(enum end_cause c);
/* "client", "backend" or "proxy": who ended it. */
const char *end_side_str(enum end_cause c);
/* The log text: "client EOF", "error: Connection reset by peer", "client close 1000". */
void end_text(enum end_cause c, const char *detail, char *out, size_t cap);

#endif
