/* uri.c -- authority syntax, absolute-form targets and dot-segment removal (RFC 3986, RFC 9112 3.2); pure */
#include "http/uri.h"

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static bool is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* unreserved (RFC 3986 2.3) */
static bool is_unreserved(char c)
{
    return is_alpha(c) || is_digit(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

/* sub-delims (RFC 3986 2.2) except ',', which would make a Host look like a list (RFC 9110 5.6.1) */
static bool is_host_delim(char c)
{
    return c == '!' || c == '$' || c == '&' || c == '\'' || c == '(' || c == ')' || c == '*' || c == '+' || c == ';' ||
           c == '=';
}

/* reg-name = *( unreserved / pct-encoded / sub-delims ), non-empty for http (RFC 9110 4.2.1). */
static bool reg_name_valid(const char *p, size_t n)
{
    if (n == 0) return false;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '%') {
            if (i + 2 >= n) return false;
            if (hexval(p[i + 1]) < 0 || hexval(p[i + 2]) < 0) return false;
            i += 2;
        } else if (!is_unreserved(p[i]) && !is_host_delim(p[i])) {
            return false;
        }
    }
    return true;
}

/* IP-literal = "[" IPv6address "]" (RFC 3986 3.2.2), checked for its alphabet: hex digits, ':' and '.' for an
 * embedded IPv4 address; at least one ':'. IPvFuture and zone identifiers are not accepted. */
static bool ip_literal_valid(const char *p, size_t n)
{
    if (n < 4 || p[0] != '[' || p[n - 1] != ']') return false;
    bool colon = false;
    for (size_t i = 1; i + 1 < n; i++) {
        if (p[i] == ':')
            colon = true;
        else if (hexval(p[i]) < 0 && p[i] != '.')
            return false;
    }
    return colon;
}

bool tt_uri_authority_valid(tt_str_t a, bool need_port)
{
    size_t host_n;
    if (a.n > 0 && a.p[0] == '[') {
        const char *close = memchr(a.p, ']', a.n);
        if (close == NULL) return false;
        host_n = (size_t)(close - a.p) + 1;
        if (!ip_literal_valid(a.p, host_n)) return false;
        if (host_n < a.n && a.p[host_n] != ':') return false;
    } else {
        const char *colon = memchr(a.p, ':', a.n);
        host_n = colon ? (size_t)(colon - a.p) : a.n;
        if (!reg_name_valid(a.p, host_n)) return false;
    }
    if (host_n == a.n) return !need_port;
    /* port = *DIGIT after the ':' */
    const char *port = a.p + host_n + 1;
    size_t port_n = a.n - host_n - 1;
    if (port_n == 0) return !need_port;
    if (port_n > 5) return false;
    uint32_t v = 0;
    for (size_t i = 0; i < port_n; i++) {
        if (!is_digit(port[i])) return false;
        v = v * 10 + (uint32_t)(port[i] - '0');
    }
    return v <= 65535;
}

bool tt_uri_split_absolute(tt_str_t t, tt_str_t *authority, tt_str_t *rest)
{
    /* scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ); only the two HTTP schemes are served */
    size_t i = 0;
    while (i < t.n &&
           (is_alpha(t.p[i]) || (i > 0 && (is_digit(t.p[i]) || t.p[i] == '+' || t.p[i] == '-' || t.p[i] == '.'))))
        i++;
    tt_str_t scheme = tt_str(t.p, i);
    if (!tt_str_ieq(scheme, TT_LIT("http")) && !tt_str_ieq(scheme, TT_LIT("https"))) return false;
    if (t.n - i < 3 || memcmp(t.p + i, "://", 3) != 0) return false;
    const char *a = t.p + i + 3, *end = t.p + t.n, *ae = a;
    while (ae < end && *ae != '/' && *ae != '?' && *ae != '#') ae++;
    *authority = tt_str(a, (size_t)(ae - a));
    if (memchr(a, '@', (size_t)(ae - a)) != NULL) return false; /* userinfo (RFC 9110 4.2.4) */
    if (!tt_uri_authority_valid(*authority, false)) return false;
    *rest = tt_str(ae, (size_t)(end - ae));
    return true;
}

bool tt_uri_path_is_normal(tt_str_t path)
{
    for (size_t i = 0; i < path.n; i++) {
        char c = path.p[i];
        if (c == '%' || c == '\\') return false;
        if (c == '.' && i > 0 && path.p[i - 1] == '/') return false;
    }
    return true;
}

/* A dot-segment: "." or ".." once decoded (the caller decoded %2E already). */
static int dot_kind(const char *s, size_t n)
{
    if (n == 1 && s[0] == '.') return 1;
    if (n == 2 && s[0] == '.' && s[1] == '.') return 2;
    return 0;
}

/* True when the decoded segment `s[0..n)`, cut at "%2F", "%5C" and '\\' (separators to some servers), has a
 * dot-segment among several parts. */
static bool hides_dot_segment(const char *s, size_t n)
{
    size_t start = 0;
    bool cut = false, dot = false;
    for (size_t i = 0; i <= n; i++) {
        size_t sep = 0;
        if (i == n)
            sep = 1;
        else if (s[i] == '\\')
            sep = 1;
        else if (s[i] == '%' && i + 2 < n &&
                 ((s[i + 1] == '2' && tt_lower(s[i + 2]) == 'f') || (s[i + 1] == '5' && tt_lower(s[i + 2]) == 'c')))
            sep = 3;
        if (sep == 0) continue;
        if (i < n) cut = true;
        if (dot_kind(s + start, i - start)) dot = true;
        start = i + sep;
        i += sep - 1;
    }
    return cut && dot;
}

int tt_uri_normalize_path(tt_str_t path, char *out)
{
    if (path.n == 0 || path.p[0] != '/') return TT_BAD;
    size_t o = 0, i = 0;
    bool ends_dot = false;
    while (i < path.n) {
        i++; /* the '/' */
        size_t seg = o;
        out[o++] = '/';
        for (; i < path.n && path.p[i] != '/'; i++) {
            char c = path.p[i];
            if (c != '%') {
                out[o++] = c;
                continue;
            }
            if (i + 2 >= path.n) return TT_BAD;
            int hi = hexval(path.p[i + 1]), lo = hexval(path.p[i + 2]);
            if (hi < 0 || lo < 0 || (hi | lo) == 0) return TT_BAD; /* a bad escape, or NUL */
            char d = (char)(hi * 16 + lo);
            if (is_unreserved(d)) {
                out[o++] = d;
            } else {
                memcpy(out + o, path.p + i, 3);
                o += 3;
            }
            i += 2;
        }
        const char *s = out + seg + 1;
        size_t n = o - seg - 1;
        int dot = dot_kind(s, n);
        ends_dot = dot != 0;
        if (dot == 0) {
            if (hides_dot_segment(s, n)) return TT_BAD;
            continue;
        }
        o = seg; /* drop the segment itself */
        if (dot == 2) {
            if (o == 0) return TT_BAD; /* above the root */
            while (o > 0 && out[o - 1] != '/') o--;
            o--; /* and the one before it, with its '/' */
        }
    }
    if (ends_dot || o == 0) out[o++] = '/';
    return (int)o;
}
