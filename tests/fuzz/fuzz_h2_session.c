/* fuzz_h2_session.c -- libFuzzer target: feeds bytes to tether's HTTP/2 server connection
 *
 * The input (after the client connection preface, which is prepended) is written to one end of a
 * socketpair whose other end is adopted by the real h2 connection code of an inline worker; the loop then
 * runs until the connection closes or a bounded number of turns pass. Requests get 404 (no routes), which
 * exercises streams, HPACK, flow control, DATA, RST_STREAM, PING, SETTINGS, GOAWAY and the close paths.
 */
#include "core/err.h"
#include "http/h2_conn.h"
#include "http/worker.h"

#include <sys/socket.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static tt_server_t *srv;
static tt_listen_policy_t policy;
static tt_listener_conf_t listener;
static tt_router_t router;

static void setup(void)
{
    policy.ka = (tt_ka_policy_t){.idle_timeout_ms = 5000, .max_requests = 1000, .max_lifetime_ms = 0};
    policy.header_timeout_ms = policy.body_timeout_ms = policy.send_timeout_ms = 5000;
    policy.keepalive_header = true;
    policy.max_body_bytes = 1 << 20;
    policy.limits = tt_h1_default_limits;
    policy.h2 = (tt_h2_policy_t){.enabled = true,
                                 .max_concurrent_streams = 100,
                                 .initial_window = 65535,
                                 .header_table_size = 4096,
                                 .ping_timeout_ms = 15000,
                                 .reset_burst = 200,
                                 .reset_rate = 33};
    const char *why;
    if (tt_addr_parse("127.0.0.1:0", false, &listener.addr, &why) != 0) tt_fatal("addr");
    listener.policy = &policy;
    tt_server_conf_t sc = {.inline_worker = true,
                           .workers = 1,
                           .max_connections = 100,
                           .drain_timeout_ms = 100,
                           .backlog = 16,
                           .listeners = &listener,
                           .nlisteners = 1,
                           .router = &router,
                           .access_log_fd = -1,
                           .name = "fuzz"};
    char err[256];
    srv = tt_server_new(&sc, err, sizeof(err));
    if (srv == NULL) tt_fatal("server: %s", err);
}

static void noop(tt_io_t *io, uint32_t ev)
{
    (void)io;
    (void)ev;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    if (srv == NULL) setup();
    tt_loop_t *loop = tt_server_loop(srv, 0);
    tt_worker_t *w = tt_container_of(tt_server_shards(srv, &(size_t){0})[0], tt_worker_t, metrics);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) return 0;
    tt_io_t io = {.cb = noop, .fd = sv[0]};
    tt_io_start(loop, &io, TT_EV_READ | TT_EV_WRITE | TT_EV_EDGE);
    w->nconns++;
    tt_gauge_add(&w->metrics.conn_open, 1);
    tt_addr_t peer = listener.addr;
    tt__wgen_ref(w->cur); /* the connection's use of its generation, which adopt takes over */
    tt__h2_conn_adopt(&w->cur->ls[0], &io, &tt_transport_tcp, &peer, 1, tt_loop_now(loop), preface,
                      sizeof(preface) - 1);
    size_t off = 0;
    char sink[65536];
    for (int turn = 0; turn < 64; turn++) {
        if (off < size) {
            ssize_t n = write(sv[1], data + off, size - off);
            if (n > 0) off += (size_t)n;
        } else if (off == size) {
            shutdown(sv[1], SHUT_WR); /* the peer is done: the connection ends */
            off++;
        }
        tt_loop_run_once(loop, 0);
        while (read(sv[1], sink, sizeof(sink)) > 0) {
        }
        if (w->nconns == 0) break;
    }
    close(sv[1]);
    /* whatever state it is in, the connection must close cleanly when its peer is gone */
    for (int turn = 0; turn < 16 && w->nconns > 0; turn++) tt_loop_run_once(loop, 0);
    TT_BUG_ON(w->nconns != 0);
    return 0;
}
