/* addrset.h -- sets of socket addresses: what a name resolves to, compared as sets (order and repeats ignored)
 *
 * A resolver answers with the same addresses in another order from one query to the next (DNS round-robin rotates
 * them); only a change of the set itself means an address came or went. Pure functions over caller-owned arrays of
 * tt_addr_t: no allocation, no I/O, any thread.
 */
#ifndef TT_NET_ADDRSET_H
#define TT_NET_ADDRSET_H

#include "net/addr.h"

/** True when `a` is one of the `n` addresses of `set`. */
bool tt_addrset_contains(const tt_addr_t *set, size_t n, const tt_addr_t *a);
/** True when `a` (`na` addresses) and `b` (`nb`) hold the same addresses, whatever their order and repeats. */
bool tt_addrset_same(const tt_addr_t *a, size_t na, const tt_addr_t *b, size_t nb);
/** Removes repeated addresses from `set` in place, keeping the first of each in order; returns the new count. */
size_t tt_addrset_dedup(tt_addr_t *set, size_t n);
/** Writes `set` as "1.2.3.4:80, [::1]:80" ("(none)" when empty) into `buf` (`size` bytes, cut with "..." when too
 *  short); returns the length written. */
size_t tt_addrset_format(const tt_addr_t *set, size_t n, char *buf, size_t size);

#endif
