/* fuzz_h1_parse.c -- libFuzzer target for the HTTP/1 request parser and the chunked decoder
 *
 * Besides "never crash", it checks the parser's contract: the input parsed whole and parsed as a prefix
 * followed by the whole (with last_len) agree, a refusal on its reason too; every view lies inside the buffer; a
 * complete head is followed by chunked content fed to the decoder in two pieces, agreeing with one piece.
 */
#include "http/h1_parse.h"

#include "core/err.h"

#define assert(x) TT_BUG_ON(!(x))

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_views(const tt_h1_request_t *r, const char *buf, size_t len)
{
    for (size_t i = 0; i < r->nfields; i++) {
        assert(r->fields[i].name.p >= buf && r->fields[i].name.p + r->fields[i].name.n <= buf + len);
        assert(r->fields[i].value.p >= buf && r->fields[i].value.p + r->fields[i].value.n <= buf + len);
    }
    assert(r->target.p >= buf && r->target.p + r->target.n <= buf + len);
}

static void decode_all(const char *p, size_t n, size_t split, uint64_t *total, int *result)
{
    tt_h1_chunked_t d;
    tt_h1_chunked_init(&d);
    size_t off = 0;
    *total = 0;
    *result = 0;
    const size_t ends[2] = {split, n};
    for (int part = 0; part < 2; part++) {
        while (off < ends[part] && !d.done) {
            tt_str_t data;
            int64_t r = tt_h1_chunked_decode(&d, p + off, ends[part] - off, &data);
            if (r < 0) {
                *result = -1;
                return;
            }
            if (r == 0) break;
            *total += data.n;
            off += (size_t)r;
        }
    }
    *result = d.done ? 1 : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    /* The first byte chooses the split point; the rest is the stream. */
    size_t split = data[0];
    const char *buf = (const char *)data + 1;
    size_t len = size - 1;
    if (split > len) split = len;

    static tt_h1_request_t whole, part;
    int rw = tt_h1_parse_request(buf, len, 0, &tt_h1_default_limits, &whole);
    int rp = tt_h1_parse_request(buf, split, 0, &tt_h1_default_limits, &part);
    if (rp == TT_INCOMPLETE) {
        rp = tt_h1_parse_request(buf, len, split, &tt_h1_default_limits, &part);
        assert(rp == rw);
        assert(rw != TT_BAD || part.error == whole.error); /* for the same reason (and status) */
    } else if (rp >= 0) {
        assert(rw == rp); /* a complete head in the prefix is the same head in the whole */
    } else {
        assert(rw == TT_BAD && part.error == whole.error); /* a prefix refused means the whole is, likewise */
    }
    if (rw >= 0) {
        check_views(&whole, buf, len);
        assert(whole.nfields == part.nfields && whole.content_length == part.content_length);
        if (whole.chunked) {
            uint64_t t1, t2;
            int r1, r2;
            size_t rest = len - (size_t)rw, s = split % (rest + 1);
            decode_all(buf + rw, rest, rest, &t1, &r1);
            decode_all(buf + rw, rest, s, &t2, &r2);
            assert(r1 == r2 && (r1 < 0 || t1 == t2));
        }
    }
    return 0;
}
