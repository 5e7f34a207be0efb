/* fuzz_h1_response.c -- libFuzzer target for the HTTP/1 response parser, the chunked decoder as a proxy uses
 * it for responses (content and trailer collection) and the Keep-Alive hint parser
 *
 * Besides "never crash", it checks the contract: the input parsed whole and parsed as a prefix followed by
 * the whole (with last_len) agree; every view lies inside the buffer; a head has exactly one framing; the
 * content after the head (or the whole input when there is no head) decodes to the same bytes, the same
 * trailer section and the same verdict whether fed in one piece, two pieces or one byte at a time; a trailer
 * section the decoder accepted is valid field lines; Keep-Alive values never read past their view.
 */
#include "http/h1_parse.h"

#include "core/err.h"

#include <stdlib.h>
#include <strings.h>

#define assert(x) TT_BUG_ON(!(x))

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool inside(tt_str_t v, const char *buf, size_t len)
{
    return v.n == 0 || (v.p >= buf && v.p + v.n <= buf + len);
}

static bool is_tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* What a parsed head must look like, whatever the input. */
static void check_head(const tt_h1_response_t *r, int rc, const char *buf, size_t len)
{
    assert(rc >= 4 && (size_t)rc <= len);
    assert(memcmp(buf + rc - 4, "\r\n\r\n", 4) == 0);
    assert(r->error == TT_H1_OK);
    assert(r->status >= 100 && r->status <= 599);
    assert(r->minor_version == 0 || r->minor_version == 1);
    assert(inside(r->reason, buf, (size_t)rc));
    for (size_t i = 0; i < r->reason.n; i++) assert(r->reason.p[i] != '\r' && r->reason.p[i] != '\n');
    /* exactly one framing */
    assert((r->chunked ? 1 : 0) + (r->close_delimited ? 1 : 0) + (r->content_length >= 0 ? 1 : 0) == 1);
    assert((r->conn_tokens & ~(TT_H1_CONN_CLOSE | TT_H1_CONN_KEEP_ALIVE | TT_H1_CONN_UPGRADE)) == 0);
    assert(r->nfields <= TT_H1_MAX_FIELDS);
    assert(r->keep_alive >= -1 && r->keep_alive < (int)r->nfields);
    if (r->keep_alive >= 0) {
        tt_str_t n = r->fields[r->keep_alive].name;
        assert(n.n == 10 && strncasecmp(n.p, "keep-alive", 10) == 0);
    }
    for (size_t i = 0; i < r->nfields; i++) {
        tt_str_t n = r->fields[i].name, v = r->fields[i].value;
        assert(n.n > 0 && inside(n, buf, (size_t)rc) && inside(v, buf, (size_t)rc));
        for (size_t k = 0; k < n.n; k++) assert(is_tchar((unsigned char)n.p[k]));
        for (size_t k = 0; k < v.n; k++) assert(v.p[k] != '\r' && v.p[k] != '\n' && v.p[k] != '\0');
        if (v.n > 0) assert(v.p[0] != ' ' && v.p[0] != '\t' && v.p[v.n - 1] != ' ' && v.p[v.n - 1] != '\t');
    }
}

static void assert_same_head(const tt_h1_response_t *a, const tt_h1_response_t *b)
{
    assert(a->status == b->status && a->minor_version == b->minor_version);
    assert(a->reason.p == b->reason.p && a->reason.n == b->reason.n);
    assert(a->content_length == b->content_length && a->chunked == b->chunked);
    assert(a->close_delimited == b->close_delimited && a->conn_tokens == b->conn_tokens);
    assert(a->keep_alive == b->keep_alive && a->nfields == b->nfields);
    for (size_t i = 0; i < a->nfields; i++) {
        assert(a->fields[i].name.p == b->fields[i].name.p && a->fields[i].name.n == b->fields[i].name.n);
        assert(a->fields[i].value.p == b->fields[i].value.p && a->fields[i].value.n == b->fields[i].value.n);
    }
}

/* Keep-Alive parameters from a copy of exactly `v.n` bytes, so that reading past the view is caught. */
static void check_hint(tt_str_t v)
{
    char *copy = malloc(v.n ? v.n : 1);
    assert(copy != NULL);
    if (v.n) memcpy(copy, v.p, v.n);
    uint64_t t = 12345;
    int64_t m = -12345;
    int found = tt_h1_keepalive_hint(tt_str(copy, v.n), &t, &m);
    assert(found >= 0 && found <= 3);
    if (found & 1)
        assert(t % 1000 == 0); /* whole seconds */
    else
        assert(t == 12345);
    if (found & 2)
        assert(m >= 0);
    else
        assert(m == -12345);
    free(copy);
}

/* The outcome of decoding chunked content. */
typedef struct {
    int result; /* -1 refused, 0 needs more, 1 done */
    tt_h1_error_t error;
    size_t consumed; /* bytes consumed in all */
    size_t ndata;
    size_t ntrailer;
    char *data;    /* the content bytes */
    char *trailer; /* the bytes consumed while tt_h1_chunked_in_trailer() held */
} decoded_t;

/* Decodes `p[0..n)` fed in pieces ending at each of `ends[]` (the last is n). */
static void decode(const char *p, size_t n, const size_t *ends, size_t nends, decoded_t *out)
{
    tt_h1_chunked_t d;
    tt_h1_chunked_init(&d);
    memset(out, 0, sizeof(*out));
    out->data = malloc(n + 1);
    out->trailer = malloc(n + 1);
    assert(out->data != NULL && out->trailer != NULL);
    size_t off = 0;
    for (size_t e = 0; e < nends && !d.done; e++) {
        while (off < ends[e] && !d.done) {
            tt_str_t data;
            bool in_trailer = tt_h1_chunked_in_trailer(&d);
            size_t avail = ends[e] - off;
            int64_t r = tt_h1_chunked_decode(&d, p + off, avail, &data);
            if (r < 0) {
                assert(r == TT_BAD && d.error != TT_H1_OK);
                out->result = -1;
                out->error = d.error;
                out->consumed = off;
                return;
            }
            assert((uint64_t)r <= avail);
            /* no progress only when finished: a caller waiting for more bytes would wait forever */
            assert(r > 0 || d.done);
            assert(data.n <= (size_t)r && (data.n == 0 || (data.p >= p + off && data.p + data.n <= p + off + r)));
            if (in_trailer) {
                assert(data.n == 0);
                memcpy(out->trailer + out->ntrailer, p + off, (size_t)r);
                out->ntrailer += (size_t)r;
            }
            memcpy(out->data + out->ndata, data.p, data.n);
            out->ndata += data.n;
            off += (size_t)r;
        }
    }
    out->result = d.done ? 1 : 0;
    out->consumed = off;
    if (d.done) assert(!tt_h1_chunked_in_trailer(&d));
}

static void decoded_free(decoded_t *d)
{
    free(d->data);
    free(d->trailer);
}

static void assert_same_decoding(const decoded_t *a, const decoded_t *b)
{
    assert(a->result == b->result);
    if (a->result < 0) {
        assert(a->error == b->error);
        return;
    }
    assert(a->consumed == b->consumed);
    assert(a->ndata == b->ndata && memcmp(a->data, b->data, a->ndata) == 0);
    assert(a->ntrailer == b->ntrailer && memcmp(a->trailer, b->trailer, a->ntrailer) == 0);
}

/* A trailer section the decoder accepted is field lines and the empty line: the head parser agrees. */
static void check_trailer(const decoded_t *d)
{
    if (d->result != 1) return;
    assert(d->ntrailer >= 2 && memcmp(d->trailer + d->ntrailer - 2, "\r\n", 2) == 0);
    static const char status[] = "HTTP/1.1 200 OK\r\n";
    size_t n = sizeof(status) - 1 + d->ntrailer;
    char *h = malloc(n);
    assert(h != NULL);
    memcpy(h, status, sizeof(status) - 1);
    memcpy(h + sizeof(status) - 1, d->trailer, d->ntrailer);
    static tt_h1_response_t r;
    int rc = tt_h1_parse_response(h, n, 0, &tt_h1_default_limits, &r);
    /* refusals for what the fields say (semantics) or how many there are are fine; syntax is not */
    assert(rc == (int)n || (rc == TT_BAD && (r.error == TT_H1_E_CONTENT_LENGTH || r.error == TT_H1_E_CL_AND_TE ||
                                             r.error == TT_H1_E_TOO_MANY_FIELDS)));
    if (rc == (int)n)
        for (size_t i = 0; i < r.nfields; i++) check_hint(r.fields[i].value);
    free(h);
}

static void check_chunked(const char *p, size_t n, size_t split)
{
    decoded_t one, two;
    const size_t whole[1] = {n}, halves[2] = {split % (n + 1), n};
    decode(p, n, whole, 1, &one);
    decode(p, n, halves, 2, &two);
    assert_same_decoding(&one, &two);
    if (n <= 2048) {
        size_t *ends = malloc((n + 1) * sizeof(*ends));
        assert(ends != NULL);
        for (size_t i = 0; i <= n; i++) ends[i] = i;
        decoded_t bytes;
        decode(p, n, ends, n + 1, &bytes);
        assert_same_decoding(&one, &bytes);
        decoded_free(&bytes);
        free(ends);
    }
    check_trailer(&one);
    decoded_free(&one);
    decoded_free(&two);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    /* The first byte chooses the split point; the rest is the stream. */
    size_t split = data[0];
    const char *buf = (const char *)data + 1;
    size_t len = size - 1;
    if (split > len) split = len;

    static tt_h1_response_t whole, part;
    int rw = tt_h1_parse_response(buf, len, 0, &tt_h1_default_limits, &whole);
    assert(rw == TT_INCOMPLETE || rw == TT_BAD || (rw > 0 && (size_t)rw <= len));
    if (rw == TT_BAD) assert(whole.error != TT_H1_OK);
    int rp = tt_h1_parse_response(buf, split, 0, &tt_h1_default_limits, &part);
    if (rp == TT_INCOMPLETE) {
        rp = tt_h1_parse_response(buf, len, split, &tt_h1_default_limits, &part);
        assert(rp == rw);
        if (rw == TT_BAD) assert(part.error == whole.error);
        if (rw >= 0) assert_same_head(&whole, &part);
    } else if (rp >= 0) {
        assert(rw == rp); /* a complete head in the prefix is the same head in the whole */
        assert_same_head(&whole, &part);
    } else {
        assert(rw == TT_BAD); /* a prefix refused means the whole is refused */
    }
    /* one byte at a time, passing the previous length, for small inputs */
    if (len <= 1024) {
        size_t last = 0;
        int rc = TT_INCOMPLETE;
        for (size_t n = 0; n <= len && rc == TT_INCOMPLETE; n++) {
            rc = tt_h1_parse_response(buf, n, last, &tt_h1_default_limits, &part);
            last = n;
        }
        if (rw == TT_INCOMPLETE)
            assert(rc == TT_INCOMPLETE);
        else if (rw >= 0)
            assert(rc == rw);
        else
            assert(rc == TT_BAD);
    }
    if (rw >= 0) {
        check_head(&whole, rw, buf, len);
        for (size_t i = 0; i < whole.nfields; i++) check_hint(whole.fields[i].value);
        /* the content after the head, decoded as a proxy would (every response, to exercise the decoder) */
        size_t rest = len - (size_t)rw;
        check_chunked(buf + rw, rest, split);
    } else {
        check_chunked(buf, len, split);
    }
    check_hint(tt_str(buf, len));
    return 0;
}
