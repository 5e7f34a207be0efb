/* fuzz_cli_url.c -- libFuzzer target for the URL argument of `tether probe` and `tether bench`
 *
 * The input (up to 8 KiB, NUL-terminated) goes to tt_cli_url_parse. It must never crash, and a URL it accepts
 * must keep the promises the commands rely on when they put its parts on the wire: a host, a port, an
 * origin-form target starting with '/', no byte in host, authority or target that could end a field or
 * request line (CR, LF, space, control bytes), and a request head from tt_cli_url_request that is one
 * request line, Host, User-Agent and the empty line. Nothing is resolved.
 */
#include "cmd/cli_url.h"

#include "core/err.h"

#include <string.h>

#define assert(x) TT_BUG_ON(!(x))

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_visible(const char *s)
{
    for (; *s; s++) assert((unsigned char)*s > 0x20 && (unsigned char)*s < 0x7f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char in[8193];
    if (size >= sizeof(in)) return 0;
    memcpy(in, data, size);
    in[size] = '\0';
    tt_cli_url_t u;
    const char *why = NULL;
    if (tt_cli_url_parse(in, &u, &why) != 0) {
        assert(why != NULL && why[0] != '\0');
        return 0;
    }
    assert(u.host[0] != '\0' && u.port != 0 && u.authority[0] != '\0' && u.target[0] == '/');
    check_visible(u.host);
    check_visible(u.authority);
    check_visible(u.target);
    static char head[4096];
    size_t n = tt_cli_url_request(&u, "GET", NULL, 1, "fuzz", NULL, head, sizeof(head));
    if (n == 0) return 0; /* did not fit: the caller reports it */
    assert(n < sizeof(head) && n >= 4 && memcmp(head + n - 4, "\r\n\r\n", 4) == 0);
    size_t lines = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        if (head[i] == '\n') assert(i > 0 && head[i - 1] == '\r');
        if (head[i] == '\r') {
            assert(head[i + 1] == '\n');
            lines++;
        }
    }
    assert(lines == 4); /* request-line, Host, User-Agent, the empty line */
    return 0;
}
