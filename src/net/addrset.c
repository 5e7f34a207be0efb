/* addrset.c -- comparing and printing sets of socket addresses (what a name resolves to) */
#include "net/addrset.h"

bool tt_addrset_contains(const tt_addr_t *set, size_t n, const tt_addr_t *a)
{
    for (size_t i = 0; i < n; i++)
        if (tt_addr_equal(&set[i], a)) return true;
    return false;
}

bool tt_addrset_same(const tt_addr_t *a, size_t na, const tt_addr_t *b, size_t nb)
{
    /* Sets of a few addresses: two inclusions, quadratic and allocation-free. */
    for (size_t i = 0; i < na; i++)
        if (!tt_addrset_contains(b, nb, &a[i])) return false;
    for (size_t i = 0; i < nb; i++)
        if (!tt_addrset_contains(a, na, &b[i])) return false;
    return true;
}

size_t tt_addrset_dedup(tt_addr_t *set, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (tt_addrset_contains(set, k, &set[i])) continue;
        if (k != i) set[k] = set[i];
        k++;
    }
    return k;
}

size_t tt_addrset_format(const tt_addr_t *set, size_t n, char *buf, size_t size)
{
    if (size == 0) return 0;
    buf[0] = '\0';
    size_t len = 0;
    if (n == 0) {
        snprintf(buf, size, "(none)");
        return strlen(buf);
    }
    for (size_t i = 0; i < n; i++) {
        char one[TT_ADDR_STRLEN];
        tt_addr_format(&set[i], one, sizeof(one));
        size_t need = strlen(one) + (i ? 2 : 0);
        if (len + need + 4 > size) { /* room for "..." and the NUL */
            snprintf(buf + len, size - len, "...");
            return strlen(buf);
        }
        len += (size_t)snprintf(buf + len, size - len, "%s%s", i ? ", " : "", one);
    }
    return len;
}
