/* forward.h -- what a proxy passes on: the request head it sends upstream, the response fields and the trailers
 * it sends back (RFC 9110 7.6 and 6.5.1, RFC 9113 8.2.3, RFC 7239)
 *
 * Pure functions over a request or response that was already parsed and checked; they write into a tt_buf_t of the
 * caller's worker. docs/security.md lists the rules and where they differ from nginx.
 */
#ifndef TT_HANDLERS_FORWARD_H
#define TT_HANDLERS_FORWARD_H

#include "core/buf.h"
#include "handlers/proxy.h"
#include "handlers/rules.h"

/**
 * Appends the HTTP/1.1 request head for `rq` (its head, path and query are read: call during handle()) going to
 * upstream `uc`: the request-line with the normalized path; Host first, always (uc->host, else the request's
 * authority -- the absolute-form target's, RFC 9112 3.2.2 -- else the server's name), so no Connection option can
 * remove it; the end-to-end fields in order, without the hop-by-hop ones and those the Connection field names
 * (RFC 9110 7.6.1); an HTTP/2 request's cookie fields joined with "; " into one (RFC 9113 8.2.3); X-Request-Id with
 * rq->request_id when it has one (the client's X-Request-Id fields are then dropped: it is theirs when kept); Via with
 * the protocol version received ("1.0", "1.1" or "2", RFC 9110 7.6.3); X-Forwarded-For and X-Real-IP, replaced when the
 * peer is not in uc->trusted and appended to (X-Real-IP: the nearest untrusted address) when it is;
 * X-Forwarded-Proto and X-Forwarded-Host, tether's own unless a trusted peer sent them; Forwarded (RFC 7239, values
 * quoted and escaped) when uc->forwarded, after a trusted peer's; then the framing: Transfer-Encoding: chunked when
 * `chunked_up`, else Content-Length when the request has one (or is a POST, PUT or PATCH). Owning worker only.
 */
void tt_forward_request_head(const tt_req_t *rq, const tt_upstream_conf_t *uc, bool chunked_up, tt_buf_t *b,
                             tt_bufpool_t *bufs);

/** What a route changes in the forwarded messages (rules.h); every view valid during the call. */
typedef struct tt_forward_route {
    tt_str_t target;                   /* request-target for the upstream (tt_rules_target()); empty: path and query */
    const tt_route_rules_t *rules;     /* NULL: none */
    tt_rules_vars_t vars;              /* for $host, $remote_addr, $scheme in rule values */
    const tt_redirect_map_t *redirect; /* response: Location/Refresh rewrite of 3xx and 201; NULL: off */
    tt_str_t upgrade; /* request: not empty when it asks to switch protocols (RFC 9110 7.8) and may: "Upgrade:
                         `upgrade`" and "Connection: Upgrade" are added (the client's own Upgrade and Connection are
                         dropped as usual); an HTTP/2 extended CONNECT (RFC 8441 5) becomes a GET */
    tt_str_t ws_key;  /* with `upgrade`: when not empty, the Sec-WebSocket-Key unless the client sent one (RFC 8441 5:
                         an HTTP/2 client sends none) */
} tt_forward_route_t;

/**
 * tt_forward_request_head() with route `fr` (NULL: none): the request-line carries fr->target; fields named by a
 * request_set_header or request_remove_header rule are dropped, the ones tether writes itself included (Via,
 * X-Forwarded-*, X-Real-IP, Forwarded), and the set and add rules are appended before the framing; a
 * request_set_header Host replaces the Host value. Owning worker only.
 */
void tt_forward_request_head_routed(const tt_req_t *rq, const tt_upstream_conf_t *uc, const tt_forward_route_t *fr,
                                    bool chunked_up, tt_buf_t *b, tt_bufpool_t *bufs);

/** True for a status whose Location and Refresh fields a route's redirect map rewrites (fr->redirect): 3xx and 201
 *  (RFC 9110 10.2.2, 15.4; nginx's proxy_redirect reads the same). Pure. */
static inline bool tt_forward_status_redirects(int status)
{
    return (status >= 300 && status < 400) || status == 201;
}

/**
 * tt_forward_response_fields() with route `fr` (NULL: none): fields named by a response_set_header or
 * response_remove_header rule are dropped (Via included), a 3xx or 201 response's Location and Refresh pointing at
 * the upstream are rewritten by fr->redirect (tt_rules_redirect), and the set and add rules are appended.
 */
void tt_forward_response_fields_routed(const tt_h1_response_t *res, const tt_forward_route_t *fr, tt_buf_t *b,
                                       tt_bufpool_t *bufs);

/**
 * The fields of a 101 response `res` that pass to the client: tt_forward_response_fields(), then its Upgrade field(s)
 * and "Connection: Upgrade" (RFC 9110 7.8, 15.2.2). Owning worker only.
 */
void tt_forward_upgrade_response_fields(const tt_h1_response_t *res, tt_buf_t *b, tt_bufpool_t *bufs);

/**
 * Appends the fields of upstream response `res` that pass to the client, each "Name: value\r\n": all but the
 * hop-by-hop ones, those its Connection field names, the framing tether redoes (Content-Length,
 * Transfer-Encoding) and Date and Server (the client connection's own), then "Via: 1.0 tether", "Via: 1.1
 * tether" or "Via: 2 tether" (the protocol received: res->major_version 2 for a response from an HTTP/2 server). Owning
 * worker only.
 */
void tt_forward_response_fields(const tt_h1_response_t *res, tt_buf_t *b, tt_bufpool_t *bufs);

/**
 * True when a trailer field named `name` may be forwarded (RFC 9110 6.5.1): not framing (Content-Length,
 * Transfer-Encoding, Trailer, TE and the other hop-by-hop fields), routing (Host), request modifiers (controls
 * and conditionals), authentication (Authorization, cookies and the like), response control data (Cache-Control,
 * Age, Expires, Date, Location, Retry-After, Vary) or how to process the content (Content-Encoding, -Type,
 * -Range), nor a forwarding field tether writes itself.
 */
bool tt_forward_trailer_allowed(tt_str_t name);

/**
 * Appends the trailer field lines of `in` ("Name: value" lines, each ending in CRLF or LF, as a chunked decoder or an
 * HTTP/2 stream collected them) that tt_forward_trailer_allowed(), each as "Name: value\r\n". Owning worker only.
 */
void tt_forward_trailers(tt_str_t in, tt_buf_t *out, tt_bufpool_t *bufs);

#endif
